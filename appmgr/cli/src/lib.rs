//! The `appmgr` command line: argument parsing, output (text or `--json`) and the mapping
//! of every library error to one stderr line and a documented exit code
//! (`appmgr_types::ErrorClass`). The commands themselves are thin: they call the
//! `bundle`, `store` and `policy` crates.
//!
//! Output contract: data goes to stdout (a JSON document with `--json`); errors go to
//! stderr as one line `appmgr: MESSAGE`, and with `--json` also as a second stderr line
//! holding `{"error": {"code": N, "class": "...", "message": "..."}}`.

mod args;
mod cmd_apps;
mod cmd_bundle;
mod cmd_store;
mod config;
mod error;

pub use args::Cli;
pub use error::{CliError, CliResult};

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

/// Runs `appmgr` with `args` and returns the exit code.
pub fn main_with_args<I: IntoIterator<Item = OsString>>(args: I) -> i32 {
    let cli = match Cli::try_parse_from(args) {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() { 2 } else { 0 };
            let _ = e.print();
            return code;
        }
    };
    let json = cli.global.json;
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
    match run(cli) {
        Ok(out) => {
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&out.json).unwrap_or_default()
                );
            } else if !out.text.is_empty() {
                print!("{}", out.text);
                if !out.text.ends_with('\n') {
                    println!();
                }
            }
            0
        }
        Err(e) => report(&e, json),
    }
}

/// Writes to stdout; a closed pipe (`appmgr list | head`) is not an error worth a panic.
pub(crate) fn print_stdout(s: &str) {
    use std::io::Write;
    let _ = std::io::stdout().lock().write_all(s.as_bytes());
}

/// Prints an error (one line, plus a JSON object with `--json`) and returns its code.
fn report(e: &CliError, json: bool) -> i32 {
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

/// Dispatches one parsed command line.
pub fn run(cli: Cli) -> CliResult<Output> {
    use args::Command::*;
    let g = &cli.global;
    match cli.command {
        Key(c) => cmd_bundle::key(g, c),
        Trust(c) => cmd_bundle::trust(g, c),
        Bundle(c) => cmd_bundle::bundle(g, c),
        Install {
            file,
            allow_downgrade,
        } => cmd_store::install(g, &file, allow_downgrade),
        List => cmd_store::list(g),
        Info { id } => cmd_store::info(g, &id),
        Remove { id } => cmd_store::remove(g, &id),
        Rollback { id } => cmd_store::rollback(g, &id),
        Fsck => cmd_store::fsck(g),
        Permissions { id } => cmd_apps::permissions(g, &id),
        Ps => cmd_apps::ps(g),
        Kill { id } => cmd_apps::kill(g, &id),
        Reload { id } => cmd_apps::reload(g, id.as_deref()),
        Run { .. } => unreachable!("run is dispatched before"),
    }
}
