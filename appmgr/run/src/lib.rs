//! `appmgr run`'s fast path. On a device this program is `/usr/bin/appmgr`: for the one
//! command whose speed is the product's (`appmgr run ID [-- ARGS]`, an app started by a
//! script, a unit or a person) it loads the kept launch plan, makes the app's cgroups and
//! execs the launcher itself, without loading the full CLI (a 7 MB executable with the
//! D-Bus client, the daemons and the argument parser for forty commands). Everything else
//! is the full CLI's: [`parse`] accepts only the plain forms of `run`, and any other
//! command line, a launch without a current kept plan (the full CLI derives one from
//! policy, manifests and board, code this program does not carry, and keeps it), any
//! failure before the launcher is exec'd and any launch that must first bring the bus
//! policy into place is handed to the full CLI unchanged ([`cli_binary`]),
//! which decides, reports and exits as it always does. So this program has no output or
//! exit code of its own but the app's, and `appmgr`'s behaviour is the full CLI's.

use std::ffi::OsString;
use std::path::PathBuf;

/// A `run` command line this program serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invocation {
    pub state_dir: PathBuf,
    pub config_dir: PathBuf,
    pub id: String,
    pub args: Vec<String>,
}

/// The global options of the full CLI this program understands: (name, environment
/// variable, default).
const DIRS: [(&str, &str, &str); 2] = [
    ("--state-dir", "APPMGR_STATE_DIR", "/var/lib/appmgr"),
    ("--config-dir", "APPMGR_CONFIG_DIR", "/etc/appmgr"),
];

/// The `run` invocation that `argv` (without the program name) spells, with `env` for the
/// environment, if it is one of the plain forms
/// `[--state-dir[=]DIR] [--config-dir[=]DIR] run ID [-- ARGS…]` (the directory options
/// also after `run`, before `--`). `None` for every other command line, and for any form
/// the full CLI might read differently or refuse (help, version, `--json`, `--direct`,
/// `--print-plan`, an option twice, a value that is empty or starts with `-`, anything
/// not UTF-8): the full CLI takes those.
pub fn parse(argv: &[OsString], env: impl Fn(&str) -> Option<OsString>) -> Option<Invocation> {
    let mut dirs: [Option<PathBuf>; 2] = [None, None];
    let mut run = false;
    let mut id: Option<String> = None;
    let mut args = Vec::new();
    let mut it = argv.iter();
    while let Some(a) = it.next() {
        let a = a.to_str()?;
        if a == "--" {
            // Only after `run ID`: the rest is the app's, verbatim.
            id.as_ref()?;
            for rest in it.by_ref() {
                args.push(rest.to_str()?.to_string());
            }
            break;
        }
        if a.starts_with('-') {
            let (name, inline) = match a.split_once('=') {
                Some((n, v)) => (n, Some(v)),
                None => (a, None),
            };
            let slot = DIRS.iter().position(|(n, _, _)| *n == name)?;
            let value = match inline {
                Some(v) => v,
                None => it.next()?.to_str()?,
            };
            if value.is_empty() || value.starts_with('-') || dirs[slot].is_some() {
                return None;
            }
            dirs[slot] = Some(PathBuf::from(value));
        } else if !run {
            if a != "run" {
                return None;
            }
            run = true;
        } else if id.is_none() {
            id = Some(a.to_string());
        } else {
            // A second positional before `--`: the CLI refuses it.
            return None;
        }
    }
    let id = id?;
    let [state, config] = dirs;
    let dir = |given: Option<PathBuf>, (_, var, default): (&str, &str, &str)| match given {
        Some(d) => Some(d),
        None => match env(var) {
            // An empty variable: left to the full CLI.
            Some(v) if v.is_empty() => None,
            Some(v) => Some(PathBuf::from(v)),
            None => Some(PathBuf::from(default)),
        },
    };
    Some(Invocation {
        state_dir: dir(state, DIRS[0])?,
        config_dir: dir(config, DIRS[1])?,
        id,
        args,
    })
}

/// The full CLI, found as the helper binaries are ([`appmgr_core::paths::helper_binary`]):
/// `$APPMGR_CLI` if set, else `appmgr` next to this executable (resolved through
/// symlinks: on a device `/usr/bin/appmgr` → `/usr/libexec/appmgr/appmgr-run` finds
/// `/usr/libexec/appmgr/appmgr`; in a cargo target dir it is the sibling of
/// `appmgr-run`), else `/usr/libexec/appmgr/appmgr`. `appmgr` next to this executable
/// that is this very file (a copy installed under that name) is skipped.
pub fn cli_binary() -> PathBuf {
    let found = appmgr_core::paths::helper_binary("appmgr", "APPMGR_CLI");
    if std::env::var_os("APPMGR_CLI").is_none() && is_this_program(&found) {
        return std::path::Path::new(appmgr_core::paths::LIBEXEC_DIR).join("appmgr");
    }
    found
}

/// Whether `path` is this running executable (both resolved through symlinks).
pub fn is_this_program(path: &std::path::Path) -> bool {
    let me = std::env::current_exe().and_then(|e| e.canonicalize());
    matches!((me, path.canonicalize()), (Ok(me), Ok(p)) if me == p)
}
