//! The front end against the full CLI, as root on the host: what it serves ends exactly as
//! `appmgr run` does (the app's output, exit status, the not-provided lines), and what it
//! does not serve reaches the full CLI unchanged. A wrapper in `$APPMGR_CLI` records every
//! hand-over, so each case proves which program answered.
use appmgr_testkit::*;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

const SCRIPT: &str = r#"#!/usr/bin/sh
case "$1" in
  exit) exit "$2" ;;
  signal) kill -"$2" $$ ;;
  args) shift; for a in "$@"; do echo "arg:$a"; done ;;
  *) echo "usage" ; exit 2 ;;
esac
"#;

struct Front {
    env: Env,
    id: String,
    /// Where the wrapper in `$APPMGR_CLI` appends a line per hand-over.
    log: PathBuf,
    wrapper: PathBuf,
}

impl Front {
    /// A state dir with the runtime and app `id` (the script above, requesting and granted
    /// the wayland socket, which no test host has) installed, and the recording wrapper
    /// around the full CLI.
    fn new(id: &str) -> Front {
        let env = Env::new();
        fs::create_dir_all(env.cfg.join("policies.d")).unwrap();
        fs::write(
            env.cfg.join("policies.d/50-test.toml"),
            format!("[[rule]]\napps = [\"{id}\"]\ngrant = {{ sockets = [\"wayland\"] }}\n"),
        )
        .unwrap();
        env.ok(&["install", s(&env.runtime_bundle("1.0.0"))]);
        env.install_script_app(id, SCRIPT, "[permissions]\nsockets = [\"wayland\"]\n");
        let log = env.p("handed-over");
        let wrapper = env.p("cli-wrapper");
        fs::write(
            &wrapper,
            format!(
                "#!/bin/sh\necho \"$*\" >> '{}'\nexec '{}' \"$@\"\n",
                log.display(),
                bin()
            ),
        )
        .unwrap();
        fs::set_permissions(&wrapper, fs::Permissions::from_mode(0o755)).unwrap();
        Front {
            env,
            id: id.to_string(),
            log,
            wrapper,
        }
    }

    fn dirs(&self) -> Vec<String> {
        let e = &self.env;
        ["--state-dir", s(&e.state), "--config-dir", s(&e.cfg)]
            .map(String::from)
            .to_vec()
    }

    /// `appmgr-run ARGS` (after the directory options): its outcome, and the hand-overs
    /// to the full CLI it made.
    fn front(&self, args: &[&str]) -> (Run, Vec<String>) {
        let _ = fs::remove_file(&self.log);
        let o = Command::new(binary("appmgr-run"))
            .args(self.dirs())
            .args(args)
            .env("APPMGR_CLI", &self.wrapper)
            .env_remove("APPMGR_STATE_DIR")
            .env_remove("APPMGR_CONFIG_DIR")
            .output()
            .unwrap();
        let handed = fs::read_to_string(&self.log).unwrap_or_default();
        (
            Run {
                code: o.status.code().unwrap_or(-1),
                stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
                stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
            },
            handed.lines().map(String::from).collect(),
        )
    }

    /// The same through the full CLI alone.
    fn cli(&self, args: &[&str]) -> Run {
        self.env.run(args)
    }

    /// Front and CLI end alike; whether the front handed the command over.
    fn same(&self, args: &[&str]) -> bool {
        let (f, handed) = self.front(args);
        let c = self.cli(args);
        assert_eq!(
            (f.code, &f.stdout, &f.stderr),
            (c.code, &c.stdout, &c.stderr),
            "{args:?}"
        );
        !handed.is_empty()
    }

    fn cgroup_gone(&self) {
        for root in [
            "/sys/fs/cgroup",
            "/sys/fs/cgroup/memory",
            "/sys/fs/cgroup/pids",
        ] {
            let d = Path::new(root).join(format!("appmgr.slice/app-{}.scope", self.id));
            assert!(!d.exists(), "{} left behind", d.display());
        }
    }
}

#[test]
fn a_launch_is_served_and_ends_as_appmgr_run_does() {
    require_root!("namespaces, cgroups");
    let f = Front::new("org.example.FrontServes");
    let id = f.id.clone();
    let served = |args: &[&str]| assert!(!f.same(args), "{args:?} was handed over");
    served(&["run", &id, "--", "args", "a b", "--state-dir", "", "--"]);
    served(&["run", &id, "--", "exit", "7"]);
    served(&["run", &id, "--", "signal", "TERM"]);
    // The grant's socket is not there: the same line before the app starts.
    let (r, _) = f.front(&["run", &id, "--", "exit", "0"]);
    assert!(
        r.stderr.starts_with(&format!(
            "appmgr: {id}: sockets wayland not provided on this host"
        )),
        "{}",
        r.stderr
    );
    let (r, handed) = f.front(&["run", &id, "--", "args", "x"]);
    assert_eq!((r.code, r.stdout.as_str()), (0, "arg:x\n"));
    assert!(handed.is_empty());
    // Without a kept plan the full CLI derives one (and keeps it): the next launch is the
    // front end's again.
    let kept = f.env.state.join(format!("plans/{id}.plan"));
    fs::remove_file(&kept).unwrap();
    let (r, handed) = f.front(&["run", &id, "--", "args", "y"]);
    assert_eq!((r.code, r.stdout.as_str(), handed.len()), (0, "arg:y\n", 1));
    assert!(kept.exists(), "the full CLI kept no plan");
    let (r, handed) = f.front(&["run", &id, "--", "args", "z"]);
    assert_eq!((r.code, r.stdout.as_str(), handed.len()), (0, "arg:z\n", 0));
    f.cgroup_gone();
}

#[test]
fn everything_else_reaches_the_full_cli_unchanged() {
    require_root!("namespaces, cgroups");
    let f = Front::new("org.example.FrontHandsOver");
    let id = f.id.clone();
    let handed = |args: &[&str]| assert!(f.same(args), "{args:?} was not handed over");
    // Other commands, and the forms of `run` the front does not read.
    handed(&["list"]);
    handed(&["--json", "permissions", &id]);
    handed(&["run", "--print-plan", &id]);
    handed(&["--json", "run", &id, "--", "exit", "3"]);
    handed(&["run", &id, "stray"]);
    handed(&["run"]);
    // A launch that fails before the launcher: the CLI runs it again and reports it, and
    // nothing is left of the front's attempt.
    handed(&["run", "org.example.NotInstalled"]);
    handed(&["--json", "run", "org.example.NotInstalled"]);
    // The policy no longer grants the socket the app requests: its launch is refused.
    fs::write(
        f.env.cfg.join("policies.d/50-test.toml"),
        format!("[[rule]]\napps = [\"{id}\"]\n"),
    )
    .unwrap();
    let before = f.env.snapshot();
    let (r, handed) = f.front(&["run", &id, "--", "exit", "0"]);
    assert_ne!(r.code, 0, "{}", r.stderr);
    assert_eq!(handed.len(), 1, "{handed:?}");
    assert_eq!(
        f.env.snapshot(),
        before,
        "the refused launch changed the state dir"
    );
    f.cgroup_gone();
}

#[test]
fn the_full_cli_is_never_the_front_itself() {
    // `list` is handed over at once: no state dir is read.
    let o = Command::new(binary("appmgr-run"))
        .arg("list")
        .env("APPMGR_CLI", binary("appmgr-run"))
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("is this front end, not the full CLI"), "{err}");
}
