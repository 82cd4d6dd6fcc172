//! The front end serves a command line only as the full CLI would read it: every form it
//! accepts is compared with what clap makes of the same arguments (`appmgr_cli::args`).
use appmgr_cli::args::{Cli, Command};
use appmgr_run::{parse, Invocation};
use clap::Parser;
use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::path::PathBuf;

fn os(v: &[&str]) -> Vec<OsString> {
    v.iter().map(OsString::from).collect()
}

/// The process's own environment, which clap reads too.
fn env(k: &str) -> Option<OsString> {
    std::env::var_os(k)
}

/// What the full CLI makes of `argv`, when it is a `run` it would launch.
fn clap_run(argv: &[OsString]) -> Option<Invocation> {
    let mut full = vec![OsString::from("appmgr")];
    full.extend(argv.iter().cloned());
    let cli = Cli::try_parse_from(full).ok()?;
    match cli.command {
        Command::Run {
            id,
            args,
            print_plan: false,
        } if !cli.global.json => Some(Invocation {
            state_dir: cli.global.state_dir,
            config_dir: cli.global.config_dir,
            id,
            args,
        }),
        _ => None,
    }
}

#[test]
fn the_plain_forms_are_served_as_the_cli_reads_them() {
    let served: &[&[&str]] = &[
        &["run", "org.example.App"],
        &[
            "run",
            "org.example.App",
            "--",
            "a",
            "--b",
            "-c",
            "--",
            "run",
        ],
        &[
            "--state-dir",
            "/s",
            "--config-dir",
            "/c",
            "run",
            "org.example.App",
        ],
        &["--state-dir=/s", "run", "org.example.App", "--"],
        &["run", "--config-dir", "/c", "org.example.App", "--", "x"],
        &[
            "run",
            "org.example.App",
            "--state-dir=/s",
            "--",
            "--state-dir=/t",
        ],
        &[
            "--config-dir=/c",
            "run",
            "--state-dir",
            "/s",
            "org.example.App",
        ],
        &["run", "org.example.App", "--", ""],
    ];
    for argv in served {
        let argv = os(argv);
        let ours = parse(&argv, env);
        assert!(ours.is_some(), "{argv:?} is not served");
        assert_eq!(ours, clap_run(&argv), "{argv:?}");
    }
}

#[test]
fn every_other_command_line_goes_to_the_full_cli() {
    let refused: &[&[&str]] = &[
        &[],
        &["list"],
        &["install", "run"],
        &["run"],
        &["run", "--print-plan", "org.example.App"],
        &["run", "org.example.App", "--print-plan"],
        &["--json", "run", "org.example.App"],
        &["run", "org.example.App", "--direct"],
        &["run", "org.example.App", "extra"],
        &["run", "--", "org.example.App"],
        &["run", "-h"],
        &["--help"],
        &["-V"],
        &["run", "-x"],
        &["run", "-"],
        &[
            "--state-dir",
            "/a",
            "--state-dir",
            "/b",
            "run",
            "org.example.App",
        ],
        &["--state-dir=", "run", "org.example.App"],
        &["--state-dir", "--config-dir", "run", "org.example.App"],
        &["--state-dir"],
        &["run", "org.example.App", "--state-dir"],
        &["--state", "/a", "run", "org.example.App"],
        &["--state-dir-x=/a", "run", "org.example.App"],
        &["help", "run"],
    ];
    for argv in refused {
        assert_eq!(parse(&os(argv), env), None, "{argv:?}");
    }
    // Not UTF-8, in the id, in a directory or in the app's arguments.
    let bad = OsString::from_vec(vec![b'a', 0xff]);
    for argv in [
        vec![OsString::from("run"), bad.clone()],
        vec!["--state-dir".into(), bad.clone(), "run".into(), "x".into()],
        vec!["run".into(), "x".into(), "--".into(), bad],
    ] {
        assert_eq!(parse(&argv, env), None, "{argv:?}");
    }
}

#[test]
fn directories_come_from_the_options_then_the_environment_then_the_defaults() {
    let argv = os(&["run", "org.example.App"]);
    let none = |_: &str| None;
    let p = parse(&argv, none).unwrap();
    assert_eq!(p.state_dir, PathBuf::from("/var/lib/appmgr"));
    assert_eq!(p.config_dir, PathBuf::from("/etc/appmgr"));
    let set = |k: &str| match k {
        "APPMGR_STATE_DIR" => Some(OsString::from("/env/state")),
        "APPMGR_CONFIG_DIR" => Some(OsString::from("/env/config")),
        _ => None,
    };
    let p = parse(&argv, set).unwrap();
    assert_eq!(p.state_dir, PathBuf::from("/env/state"));
    assert_eq!(p.config_dir, PathBuf::from("/env/config"));
    let p = parse(&os(&["--state-dir", "/opt", "run", "org.example.App"]), set).unwrap();
    assert_eq!(p.state_dir, PathBuf::from("/opt"));
    assert_eq!(p.config_dir, PathBuf::from("/env/config"));
    // An empty variable is the full CLI's to judge.
    let empty = |k: &str| (k == "APPMGR_STATE_DIR").then(OsString::new);
    assert_eq!(parse(&argv, empty), None);
}
