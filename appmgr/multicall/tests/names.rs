//! The installed `appmgr` executable runs the program named by the link it is run through:
//! each answers with its own name, usage and exit codes.
use appmgr_testkit::{binary, MULTICALL_NAMES};
use std::process::Command;

fn run(name: &str, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(binary(name)).args(args).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn each_name_runs_its_own_program() {
    let version = env!("CARGO_PKG_VERSION");
    // Every name the test kit links (as the installed layout does) must be one the
    // executable dispatches: an unknown name would answer as the CLI.
    for &name in MULTICALL_NAMES {
        let link = binary(name);
        assert_eq!(
            std::fs::read_link(&link).unwrap(),
            std::path::Path::new("appmgr"),
            "{name} is not the link the installed layout has"
        );
        assert_eq!(
            run(name, &["--version"]),
            (0, format!("{name} {version}\n"), String::new())
        );
        let (code, out, _) = run(name, &["--help"]);
        assert_eq!(code, 0);
        assert!(out.starts_with(&format!("usage: {name} ")), "{out}");
        // A usage error names the program and changes nothing (no daemon starts).
        let (code, out, err) = run(name, &["--no-such-option"]);
        assert_eq!((code, out.as_str()), (2, ""));
        assert!(
            err.starts_with(&format!(
                "{name}: unknown argument \"--no-such-option\"\nusage: {name} "
            )),
            "{err}"
        );
        let (code, _, err) = run(name, &["--state-dir"]);
        assert_eq!(code, 2);
        assert!(
            err.starts_with(&format!("{name}: --state-dir needs a value\n")),
            "{err}"
        );
    }
    // The CLI under its own name.
    let (code, out, _) = run("appmgr", &["--version"]);
    assert_eq!((code, out), (0, format!("appmgr {version}\n")));
}
