//! The `appmgr` command line: argument parsing, output (text or `--json`) and the mapping
//! of every error to one stderr line and a documented exit code
//! (`appmgr_types::ErrorClass`). The use cases themselves live in `appmgr-core`; the
//! commands here call them and render what they return.
//!
//! Output contract: data goes to stdout (a JSON document with `--json`); errors go to
//! stderr as one line `appmgr: MESSAGE`, and with `--json` also as a second stderr line
//! holding `{"error": {"code": N, "class": "...", "message": "..."}}`.

pub mod args;
pub mod client;
mod cmd_bundle;
mod local;
pub mod worker;

pub use appmgr_core::paths::OPS_NAME;
pub use appmgr_core::{Error as CliError, Output};
pub use args::{Cli, Command, Global};

/// The result of a command.
pub type CliResult<T> = Result<T, CliError>;

use appmgr_types::ErrorClass;
use clap::Parser;
use std::ffi::OsString;

/// The store commands: they need libostree, so the lean `appmgr` binary hands them to
/// `appmgr-ops` (same arguments, same output, same exit codes).
fn is_store_command(c: &args::Command) -> bool {
    c.route().store
}

/// `appmgr`: handles every command that does not need libostree itself (run,
/// permissions, ps, kill, reload, key, trust, bundle, board), sends the routed commands to
/// appmgrd when it serves the state directory, and execs `appmgr-ops` for the store
/// commands it runs locally. Keeping libostree and GLib out of this executable saves their
/// dynamic linking (about 20 ms) on every `appmgr run`.
pub fn main_lean<I: IntoIterator<Item = OsString>>(args: I) -> i32 {
    let argv: Vec<OsString> = args.into_iter().collect();
    let cli = match Cli::try_parse_from(&argv) {
        Ok(c) => c,
        Err(e) => return parse_failed(&e, &argv),
    };
    main_parsed(cli, |cli| {
        if is_store_command(&cli.command) {
            // Reached only on the local path: appmgrd did not take the command.
            Err(exec_ops(&argv))
        } else {
            run_lean(cli)
        }
    })
}

/// Replaces the process with `appmgr-ops` (from `$APPMGR_OPS`, next to this executable,
/// or `/usr/libexec/appmgr`). Returns only on failure.
fn exec_ops(argv: &[OsString]) -> CliError {
    use std::os::unix::process::CommandExt;
    let path = appmgr_core::paths::ops_binary();
    let e = std::process::Command::new(&path).args(&argv[1..]).exec();
    CliError::new(
        appmgr_types::ErrorClass::Other,
        format!("cannot run {}: {e}", path.display()),
    )
}

/// What `appmgr-ops` says to any command but a store command.
const OPS_ONLY_STORE: &str = "appmgr-ops runs the store commands only (install, list, info, \
                              remove, rollback, fsck): run this command with appmgr";

/// `appmgr-ops`: runs a store command (install, list, info, remove, rollback, fsck)
/// in-process, on the local path, and returns the exit code. `appmgr` execs it with its
/// own arguments once it has found that no appmgrd takes the command; this executable
/// holds no D-Bus client, so while appmgrd holds the state directory's lock it refuses
/// (the command belongs to appmgrd) instead of going around the daemon. Every other
/// command is a usage error naming `appmgr`.
pub fn main_ops<I: IntoIterator<Item = OsString>>(args: I) -> i32 {
    let argv: Vec<OsString> = args.into_iter().collect();
    let cli = match Cli::try_parse_from(&argv) {
        Ok(c) => c,
        Err(e) => return parse_failed(&e, &argv),
    };
    let json = cli.global.json;
    if !is_store_command(&cli.command) {
        return report(&CliError::new(ErrorClass::Usage, OPS_ONLY_STORE), json);
    }
    if client::is_routed(&cli.command)
        && !cli.global.direct
        && client::lock_held(&cli.global.state_dir)
    {
        let err = CliError::new(
            ErrorClass::Other,
            format!(
                "appmgrd serves {}: run the command with appmgr, which sends it to appmgrd \
                 (appmgr-ops runs store commands locally only)",
                cli.global.state_dir.display()
            ),
        );
        return report(&err, json);
    }
    match run_store(cli) {
        Ok(out) => {
            print_output(&out, json);
            0
        }
        Err(e) => report(&e, json),
    }
}

/// A command line clap did not accept. `--help` and `--version` print to stdout, exit 0.
/// A usage error is exit 2: clap's own text, or with `--json` (wherever it appears) the
/// one line and the JSON object every other error has.
fn parse_failed(e: &clap::Error, argv: &[OsString]) -> i32 {
    if !e.use_stderr() {
        let _ = e.print();
        return 0;
    }
    if !wants_json(argv) {
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

fn main_parsed(cli: Cli, dispatch: impl FnOnce(Cli) -> CliResult<Output>) -> i32 {
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
        return match local::run(&cli.global, id, args.clone(), *print_plan) {
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

/// Prints a command's output: the JSON document with `--json`, else the text.
pub(crate) fn print_output(out: &Output, json: bool) {
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

/// Prints an error (one line, plus a JSON object with `--json`) and returns its code. What
/// the command found before it failed (fsck's findings) is printed first, as output.
fn report(e: &CliError, json: bool) -> i32 {
    if let Some(out) = &e.output {
        print_output(out, json);
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

/// Runs one store command in-process (`appmgr-ops`). Nothing else is dispatched here, so
/// that the code of the other commands is not linked into appmgr-ops.
fn run_store(cli: Cli) -> CliResult<Output> {
    use appmgr_core::records;
    use appmgr_storeops as store_ops;
    use args::Command::*;
    let g = &cli.global;
    let ctx = g.ctx();
    match &cli.command {
        Install { wait, .. } | Update { wait, .. } if wait.wait => Err(CliError::new(
            ErrorClass::Other,
            format!(
                "appmgrd does not serve {} (or --direct was given): --wait returns the \
                 verdict of appmgrd's health window, which needs the supervisor",
                g.state_dir.display()
            ),
        )),
        Install {
            file,
            allow_downgrade,
            name,
            ..
        } => {
            appmgr_core::inhibit::refuse_if_inhibited(&ctx)?;
            local::install(g, file, *allow_downgrade, name.as_deref())
        }
        Update { ids, .. } => {
            appmgr_core::inhibit::refuse_if_inhibited(&ctx)?;
            store_ops::update(&ctx, ids, &mut |_| {}).map(|(o, _)| o)
        }
        List => records::list(&ctx),
        Info { id } => records::info(&ctx, id),
        Remove { id } => store_ops::remove(&ctx, id).map(|d| d.output),
        Rollback { id } => store_ops::rollback(&ctx, id).map(|d| d.output),
        Fsck => store_ops::fsck(&ctx),
        Remote(args::RemoteCmd::Add {
            name,
            url,
            root,
            access,
        }) => appmgr_core::remotes::add(&ctx, name, url, root.as_deref(), &access.files()),
        Remote(args::RemoteCmd::Ls { name }) => appmgr_core::remotes::ls(&ctx, name),
        Publish {
            file,
            target,
            access,
            tuf_root,
            tuf_keys,
            release,
            expires,
        } => {
            let tuf = match tuf_root {
                Some(root) => Some(appmgr_core::remote_tuf::TufPublish {
                    root: root.clone(),
                    keys: tuf_keys.clone(),
                    release: *release,
                    expires: appmgr_core::remote_tuf::parse_duration(expires)?,
                }),
                None => None,
            };
            appmgr_core::remotes::publish(file, target, tuf.as_ref(), &access.files())
        }
        Tuf(args::TufCmd::Root {
            out,
            version,
            expires,
            keys,
            thresholds,
            sign,
        }) => appmgr_core::remote_tuf::new_root(
            out,
            *version,
            appmgr_core::remote_tuf::parse_duration(expires)?,
            keys,
            thresholds,
            sign,
        ),
        _ => Err(CliError::new(ErrorClass::Usage, OPS_ONLY_STORE)),
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
        Board(args::BoardCmd::Show) => appmgr_core::board::show(&g.ctx()),
        Sbom {
            query: Some(args::SbomCmd::Query { package, below }),
            ..
        } => appmgr_core::sbom::query(&g.ctx(), &package, below.as_deref()),
        Sbom {
            query: None,
            id: Some(id),
        } => appmgr_core::sbom::show(&g.ctx(), &id),
        Sbom {
            query: None,
            id: None,
        } => unreachable!("clap requires an ID or a subcommand"),
        Permissions { id } => appmgr_core::apps::permissions(&g.ctx(), &id),
        Ps => appmgr_core::apps::ps(&g.ctx()),
        Report {
            verify: Some(file),
            key: Some(key),
        } => appmgr_core::report::verify(&file, &key),
        Report { .. } => appmgr_core::report::report(&g.ctx()),
        Hold { id, reason } => appmgr_core::holds::hold(&g.ctx(), &id, reason.as_deref()),
        Unhold { id } => appmgr_core::holds::unhold(&g.ctx(), &id),
        Inhibit { name, reason } => {
            appmgr_core::inhibit::inhibit(&g.ctx(), &name, reason.as_deref())
        }
        Uninhibit { name } => appmgr_core::inhibit::uninhibit(&g.ctx(), &name),
        Inhibitors => appmgr_core::inhibit::list(&g.ctx()),
        Kill { id } => appmgr_core::apps::kill(&g.ctx(), &id),
        Reload { id } => appmgr_core::apps::reload(&g.ctx(), id.as_deref()),
        Remote(args::RemoteCmd::List) => appmgr_core::remotes::list(&g.ctx()),
        Remote(args::RemoteCmd::Remove { name }) => appmgr_core::remotes::remove(&g.ctx(), &name),
        Start { .. } | Stop { .. } | Status { .. } => Err(CliError::new(
            appmgr_types::ErrorClass::Other,
            format!(
                "appmgrd does not serve {} (or --direct was given): start, stop and status \
                 need the supervisor; `appmgr run` runs an app in the foreground",
                g.state_dir.display()
            ),
        )),
        Install { .. }
        | Update { .. }
        | Publish { .. }
        | Tuf(_)
        | Remote(args::RemoteCmd::Add { .. } | args::RemoteCmd::Ls { .. })
        | List
        | Info { .. }
        | Remove { .. }
        | Rollback { .. }
        | Fsck => Err(CliError::new(
            appmgr_types::ErrorClass::Other,
            "store commands run in appmgr-ops",
        )),
        Run { .. } => unreachable!("run is dispatched before"),
    }
}
