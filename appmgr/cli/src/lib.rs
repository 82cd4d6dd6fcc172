//! The `appmgr` command line: argument parsing, output (text or `--json`) and the mapping
//! of every library error to one stderr line and a documented exit code
//! (`appmgr_types::ErrorClass`). The commands themselves are thin: they call the
//! `bundle`, `store` and `policy` crates.
//!
//! Output contract: data goes to stdout (a JSON document with `--json`); errors go to
//! stderr as one line `appmgr: MESSAGE`, and with `--json` also as a second stderr line
//! holding `{"error": {"code": N, "class": "...", "message": "..."}}`.

mod args;
pub mod client;
mod cmd_apps;
mod cmd_bundle;
mod cmd_store;
mod config;
mod error;

pub use args::{Cli, Command, Global};
pub use error::{CliError, CliResult};

use appmgr_types::ErrorClass;
use clap::Parser;
use std::ffi::OsString;

/// What a command produced: text for people and a JSON value for `--json`.
pub struct Output {
    pub text: String,
    pub json: serde_json::Value,
}

impl Output {
    pub fn new(text: impl Into<String>, json: serde_json::Value) -> Self {
        Output {
            text: text.into(),
            json,
        }
    }
}

/// The store commands: they need libostree, so the lean `appmgr` binary hands them to
/// `appmgr-ops` (same arguments, same output, same exit codes).
fn is_store_command(c: &args::Command) -> bool {
    use args::Command::*;
    matches!(
        c,
        Install { .. } | List | Info { .. } | Remove { .. } | Rollback { .. } | Fsck
    )
}

/// The name of the binary that runs store commands.
pub const OPS_NAME: &str = "appmgr-ops";

/// `appmgr`: handles every command that does not need libostree itself (run,
/// permissions, ps, kill, reload, key, trust, bundle) and execs `appmgr-ops` for the
/// store commands. Keeping libostree and GLib out of this binary saves their dynamic
/// linking (about 20 ms) on every `appmgr run`.
pub fn main_lean<I: IntoIterator<Item = OsString>>(args: I) -> i32 {
    let argv: Vec<OsString> = args.into_iter().collect();
    let cli = match Cli::try_parse_from(&argv) {
        Ok(c) => c,
        Err(e) => return parse_failed(&e, &argv),
    };
    let via_daemon = || {
        client::is_routed(&cli.command)
            && !cli.global.direct
            && client::daemon_maybe_running(&cli.global.state_dir)
    };
    if is_store_command(&cli.command) || via_daemon() {
        // appmgr-ops holds the D-Bus client as well: the lean binary stays lean.
        let json = cli.global.json;
        let err = exec_ops(&argv);
        return report(&err, json);
    }
    main_parsed(cli, run_lean)
}

/// Replaces the process with `appmgr-ops` (from `$APPMGR_OPS`, next to this executable,
/// or `/usr/libexec/appmgr`). Returns only on failure.
fn exec_ops(argv: &[OsString]) -> CliError {
    use std::os::unix::process::CommandExt;
    let path = std::env::var_os("APPMGR_OPS")
        .map(std::path::PathBuf::from)
        .or_else(|| {
            let exe = std::env::current_exe().ok()?.canonicalize().ok()?;
            let p = exe.parent()?.join(OPS_NAME);
            p.exists().then_some(p)
        })
        .unwrap_or_else(|| std::path::Path::new("/usr/libexec/appmgr").join(OPS_NAME));
    let e = std::process::Command::new(&path).args(&argv[1..]).exec();
    CliError::new(
        appmgr_types::ErrorClass::Other,
        format!("cannot run {}: {e}", path.display()),
    )
}

/// Runs `appmgr` with `args` and returns the exit code (every command in-process: what
/// `appmgr-ops` runs).
pub fn main_with_args<I: IntoIterator<Item = OsString>>(args: I) -> i32 {
    let argv: Vec<OsString> = args.into_iter().collect();
    let cli = match Cli::try_parse_from(&argv) {
        Ok(c) => c,
        Err(e) => return parse_failed(&e, &argv),
    };
    main_parsed(cli, run)
}

/// A command line clap did not accept. `--help` and `--version` print to stdout, exit 0.
/// A usage error is exit 2: clap's own text, or with `--json` (wherever it appears) the
/// one line and the JSON object every other error has.
fn parse_failed(e: &clap::Error, argv: &[OsString]) -> i32 {
    if !e.use_stderr() {
        let _ = e.print();
        return 0;
    }
    if !wants_json(argv) && !daemon_protocol() {
        let _ = e.print();
        return ErrorClass::Usage.exit_code();
    }
    let err = CliError::new(ErrorClass::Usage, usage_line(e));
    report(&err, true)
}

/// The first line of clap's message without its `error: ` tag, e.g. "the following
/// required arguments were not provided: <FILE>" (the missing argument is on the next
/// line of clap's text, so it is joined in).
fn usage_line(e: &clap::Error) -> String {
    let rendered = e.to_string();
    let mut lines = rendered
        .lines()
        .map(str::trim)
        .take_while(|l| !l.starts_with("Usage:") && !l.starts_with("For more information"))
        .filter(|l| !l.is_empty() && !l.starts_with("tip:"));
    let first = lines.next().unwrap_or("invalid command line");
    let first = first.strip_prefix("error: ").unwrap_or(first);
    let rest: Vec<&str> = lines.collect();
    if rest.is_empty() {
        first.to_string()
    } else {
        format!("{first} {}", rest.join(" "))
    }
}

/// Whether `--json` was given before a `--` (the arguments after it are the app's).
fn wants_json(argv: &[OsString]) -> bool {
    argv.iter()
        .skip(1)
        .take_while(|a| *a != "--")
        .any(|a| a == "--json")
}

fn main_parsed(cli: Cli, dispatch: fn(Cli) -> CliResult<Output>) -> i32 {
    let json = cli.global.json;
    if client::is_routed(&cli.command)
        && !cli.global.direct
        && client::daemon_maybe_running(&cli.global.state_dir)
    {
        // `None`: the address was stale and nobody holds the lock; the local path.
        if let Some(r) = client::call(&cli.global, &cli.command) {
            return match r {
                Ok(out) => {
                    print_output(&out, json);
                    0
                }
                Err(e) => report(&e, json),
            };
        }
    }
    // `run` exits with the app's status, not with an Output.
    if let args::Command::Run {
        id,
        args,
        print_plan,
    } = &cli.command
    {
        return match cmd_apps::run(&cli.global, id, args.clone(), *print_plan) {
            Ok(code) => code,
            Err(e) => report(&e, json),
        };
    }
    match dispatch(cli) {
        Ok(out) => {
            print_output(&out, json);
            0
        }
        Err(e) => report(&e, json),
    }
}

/// appmgrd runs store mutations in `appmgr-ops` (so the daemon links no libostree) with
/// `APPMGR_REPLY=daemon`: the output is then one JSON object `{"text", "json"}` on
/// stdout, and an error one JSON object `{"error": {...}}` on stderr.
fn daemon_protocol() -> bool {
    std::env::var_os("APPMGR_REPLY").is_some_and(|v| v == "daemon")
}

/// Prints a command's output: the JSON document with `--json`, else the text.
pub(crate) fn print_output(out: &Output, json: bool) {
    if daemon_protocol() {
        let both = serde_json::json!({"text": out.text, "json": out.json});
        print_stdout(&format!("{both}\n"));
        return;
    }
    if json {
        print_stdout(&format!(
            "{}\n",
            serde_json::to_string_pretty(&out.json).unwrap_or_default()
        ));
    } else if !out.text.is_empty() {
        print_stdout(&out.text);
        if !out.text.ends_with('\n') {
            print_stdout("\n");
        }
    }
}

/// Writes to stdout; a closed pipe (`appmgr list | head`) is not an error worth a panic.
pub(crate) fn print_stdout(s: &str) {
    use std::io::Write;
    let _ = std::io::stdout().lock().write_all(s.as_bytes());
}

/// Prints an error (one line, plus a JSON object with `--json`) and returns its code.
fn report(e: &CliError, json: bool) -> i32 {
    if daemon_protocol() {
        let obj = serde_json::json!({"error": {
            "code": e.class.exit_code(),
            "class": e.class.name(),
            "message": e.message,
        }});
        eprintln!("{obj}");
        return e.class.exit_code();
    }
    eprintln!("appmgr: {}", e.message);
    if json {
        let obj = serde_json::json!({"error": {
            "code": e.class.exit_code(),
            "class": e.class.name(),
            "message": e.message,
        }});
        eprintln!("{obj}");
    }
    e.class.exit_code()
}

/// Dispatches one parsed command line, store commands included (`appmgr-ops`).
pub fn run(cli: Cli) -> CliResult<Output> {
    use args::Command::*;
    let g = &cli.global;
    match &cli.command {
        Install {
            file,
            allow_downgrade,
            name,
        } => cmd_store::install(g, file, *allow_downgrade, name.as_deref()),
        List => cmd_store::list(g),
        Info { id } => cmd_store::info(g, id),
        Remove { id } => cmd_store::remove(g, id),
        Rollback { id } => cmd_store::rollback(g, id),
        Fsck => cmd_store::fsck(g),
        _ => run_lean(cli),
    }
}

/// Dispatches the commands that need no libostree. Store commands never get here in the
/// lean binary (they are handed to `appmgr-ops` first).
fn run_lean(cli: Cli) -> CliResult<Output> {
    use args::Command::*;
    let g = &cli.global;
    match cli.command {
        Key(c) => cmd_bundle::key(g, c),
        Trust(c) => cmd_bundle::trust(g, c),
        Bundle(c) => cmd_bundle::bundle(g, c),
        Permissions { id } => cmd_apps::permissions(g, &id),
        Ps => cmd_apps::ps(g),
        Kill { id } => cmd_apps::kill(g, &id),
        Reload { id } => cmd_apps::reload(g, id.as_deref()),
        Start { .. } | Stop { .. } | Status { .. } => Err(CliError::new(
            appmgr_types::ErrorClass::Other,
            format!(
                "appmgrd does not serve {} (or --direct was given): start, stop and status \
                 need the supervisor; `appmgr run` runs an app in the foreground",
                g.state_dir.display()
            ),
        )),
        Install { .. } | List | Info { .. } | Remove { .. } | Rollback { .. } | Fsck => {
            Err(CliError::new(
                appmgr_types::ErrorClass::Other,
                "store commands run in appmgr-ops",
            ))
        }
        Run { .. } => unreachable!("run is dispatched before"),
    }
}

/// The command implementations appmgrd runs on behalf of its D-Bus callers: the same
/// functions the CLI's local path runs, so both paths produce the same output.
pub mod ops {
    pub use crate::cmd_apps::{
        data_dir, hierarchy, kill, permissions, prepare_launch, ps, resolve_view, AppGrant, Launch,
        LaunchCtx,
    };
    pub use crate::cmd_store::{
        fsck_report, info, install_from, list, open_store, remove, rollback, Progress,
    };
    pub use crate::config::HostConfig;
}
