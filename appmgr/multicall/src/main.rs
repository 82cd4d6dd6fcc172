//! `appmgr`, `appmgrd` and `appmgr-portald`: one executable, three programs, chosen by the
//! name it was run as (the last component of `argv[0]`, as busybox does). The installed
//! layout (docs/architecture.md) makes `appmgrd` and `appmgr-portald` symlinks to
//! `appmgr`; any other name runs the CLI.
//!
//! The three share their Rust code and dependencies (zbus, tokio, serde, the policy and
//! plan code) instead of linking them three times; none of them links libostree, which
//! only `appmgr-ops` does. Each program still runs alone in its process: nothing of the
//! others starts.

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;

/// The programs this executable holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Program {
    Cli,
    Daemon,
    Portal,
}

/// The program `argv0` names: its last path component, exactly.
fn program(argv0: Option<&OsStr>) -> Program {
    let name = argv0
        .map(|a| a.as_bytes())
        .map(|b| b.rsplit(|&c| c == b'/').next().unwrap_or(b))
        .unwrap_or_default();
    match name {
        b"appmgrd" => Program::Daemon,
        b"appmgr-portald" => Program::Portal,
        _ => Program::Cli,
    }
}

fn main() {
    let argv: Vec<OsString> = std::env::args_os().collect();
    let code = match program(argv.first().map(OsString::as_os_str)) {
        Program::Cli => appmgr_cli::main_lean(argv),
        Program::Daemon => appmgr_daemon::cmdline::main(utf8_args("appmgrd", argv)),
        Program::Portal => appmgr_portals::cmdline::main(utf8_args("appmgr-portald", argv)),
    };
    std::process::exit(code);
}

/// The daemons take UTF-8 arguments only (paths and bus addresses in their options); a
/// non-UTF-8 argument is a usage error, not a panic.
fn utf8_args(prog: &str, argv: Vec<OsString>) -> Vec<String> {
    match argv.into_iter().map(OsString::into_string).collect() {
        Ok(v) => v,
        Err(bad) => {
            eprintln!("{prog}: argument {bad:?} is not valid UTF-8");
            std::process::exit(2);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_name_run_as_picks_the_program() {
        let p = |s: &str| program(Some(OsStr::new(s)));
        assert_eq!(p("appmgrd"), Program::Daemon);
        assert_eq!(p("/usr/libexec/appmgr/appmgrd"), Program::Daemon);
        assert_eq!(p("appmgr-portald"), Program::Portal);
        assert_eq!(p("/usr/libexec/appmgr/appmgr-portald"), Program::Portal);
        assert_eq!(p("/usr/bin/appmgr"), Program::Cli);
        assert_eq!(p("appmgr"), Program::Cli);
        // Only the exact last component counts: a directory of that name, a prefix or a
        // suffix does not make the CLI a daemon.
        assert_eq!(p("/opt/appmgrd/appmgr"), Program::Cli);
        assert_eq!(p("appmgrd-old"), Program::Cli);
        assert_eq!(p("xappmgr-portald"), Program::Cli);
        assert_eq!(p("appmgrd/"), Program::Cli);
        assert_eq!(p(""), Program::Cli);
        assert_eq!(program(None), Program::Cli);
    }
}
