//! appmgrd end to end, as root, on a private dbus-daemon with a system-bus-like policy:
//! the CLI through the daemon (same output and exit codes as the local path), progress
//! signals, access control, concurrent clients, SIGKILL mid-install, the health window,
//! the per-app bus policy, and the committed introspection XML. Each test is skipped (with
//! the reason) when not root. The CLI binaries are not this crate's: `cargo test
//! --workspace` builds them, or `cargo build -p appmgr-cli -p appmgr-sandbox --bins` first.
use appmgr_testkit::*;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod harness;
use harness::{appmgrd_bin, Daemon, BUS_NAME};

/// An Env whose commands run locally (`--direct`), with runtime and app v1 installed.
fn setup(id: &str, policy: &str) -> Env {
    // Each test calls require_root! first: here it would fail instead of skipping.
    assert!(
        is_root(),
        "appmgrd tests need root: start the test with require_root!"
    );
    let e = Env::new();
    fs::create_dir_all(e.cfg.join("policies.d")).unwrap();
    fs::write(
        e.cfg.join("policies.d/50-test.toml"),
        policy.replace("@ID@", id),
    )
    .unwrap();
    fs::write(e.cfg.join("group"), "root:x:0:\nappmgrops:x:4242:\n").unwrap();
    fs::write(
        e.cfg.join("appmgr.toml"),
        "operator-group = \"appmgrops\"\n",
    )
    .unwrap();
    e.ok(&["--direct", "install", s(&e.runtime_bundle("1.0.0"))]);
    e
}

/// A service app bundle: `script` becomes /app/bin/hello.
fn service_bundle(e: &Env, id: &str, version: &str, script: &str, service: &str) -> PathBuf {
    let root = e.p(&format!("svc-{id}-{version}"));
    fs::create_dir_all(root.join("bin")).unwrap();
    fs::write(root.join("bin/hello"), script).unwrap();
    fs::set_permissions(root.join("bin/hello"), fs::Permissions::from_mode(0o755)).unwrap();
    let m = format!(
        "{}{service}",
        app_manifest(version).replace("org.example.Hello", id)
    );
    e.bundle(&m, &root, &format!("svc-{id}-{version}.bundle"))
}

fn same_output(e: &Env, args: &[&str]) {
    let via = e.run(args);
    let mut direct_args = vec!["--direct"];
    direct_args.extend_from_slice(args);
    let local = e.run(&direct_args);
    assert_eq!(
        via.code, local.code,
        "{args:?}: {}{} vs {}{}",
        via.stdout, via.stderr, local.stdout, local.stderr
    );
    assert_eq!(via.stdout, local.stdout, "{args:?}");
    assert_eq!(via.stderr, local.stderr, "{args:?}");
}

#[test]
fn cli_through_daemon_matches_local_path_and_reports_progress() {
    require_root!("runs appmgrd on a private dbus-daemon in its own mount namespace");
    let id = "org.example.DaemonRt";
    let e = setup(id, "");
    let app_v1 = e.bundle(
        &app_manifest("1.0.0").replace("org.example.Hello", id),
        &mk_tree(&e, "t1", 2_000_000),
        "a1.bundle",
    );
    let app_v2 = e.bundle(
        &app_manifest("2.0.0").replace("org.example.Hello", id),
        &mk_tree(&e, "t2", 2_000_000),
        "a2.bundle",
    );
    let d = Daemon::start(&e);
    // Install through the daemon on a terminal (a pty from script(1)): the progress bar
    // is drawn from the daemon's InstallProgress signals.
    let cmdline = format!(
        "{} --state-dir {} --config-dir {} install {}",
        bin(),
        s(&e.state),
        s(&e.cfg),
        s(&app_v1)
    );
    let out = Command::new("script")
        .args(["-qec", &cmdline, "/dev/null"])
        .env("APPMGR_OPS", binary("appmgr-ops"))
        .output()
        .unwrap();
    let tty = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{tty}");
    for phase in ["verifying", "importing", "committing"] {
        assert!(
            tty.contains(phase),
            "no {phase} progress on the terminal: {tty:?}"
        );
    }
    assert!(tty.contains("100%"), "{tty:?}");
    assert!(tty.contains(&format!("installed app/{id}")), "{tty:?}");
    // The install really went through appmgrd (its journal/stderr line) ...
    assert!(
        d.log().contains(&format!("installed app/{id}")),
        "{}",
        d.log()
    );
    // ... and reads give the same bytes and codes on both paths.
    for args in [
        vec!["list"],
        vec!["--json", "list"],
        vec!["info", id],
        vec!["--json", "info", id],
        vec!["permissions", id],
        vec!["--json", "permissions", id],
        vec!["info", "org.example.Absent"],
        vec!["--json", "info", "org.example.Absent"],
        vec!["info", "not an id!"],
        vec!["fsck"],
    ] {
        same_output(&e, &args);
    }
    // appmgrd's List answers from memory between changes: a change made by a local
    // `--direct` CLI (not through the daemon) shows up at once all the same.
    let listed = |e: &Env| -> Vec<String> {
        e.ok(&["--json", "list"])
            .json()
            .as_array()
            .unwrap()
            .iter()
            .map(|j| j["id"].as_str().unwrap().to_string())
            .collect()
    };
    assert!(!listed(&e).contains(&"org.example.Side".to_string()));
    let side = e.bundle(
        &app_manifest("1.0.0").replace("org.example.Hello", "org.example.Side"),
        &mk_tree(&e, "side", 1000),
        "side.bundle",
    );
    e.ok(&["--direct", "install", s(&side)]);
    assert!(listed(&e).contains(&"org.example.Side".to_string()));
    e.ok(&["--direct", "remove", "org.example.Side"]);
    assert!(!listed(&e).contains(&"org.example.Side".to_string()));
    // Update, refused downgrade (exit 6, nothing changed), rollback, remove.
    let r = e.ok(&["--json", "install", s(&app_v2)]);
    assert_eq!(r.json()["action"], "updated");
    assert_eq!(e.ok(&["--json", "info", id]).json()["version"], "2.0.0");
    assert_eq!(r.json()["previous-version"], "1.0.0");
    let before = e.snapshot();
    let msg = e.fails(&["install", s(&app_v1)], 6);
    assert!(msg.contains("downgrade") || msg.contains("lower"), "{msg}");
    assert_eq!(
        before,
        e.snapshot(),
        "a refused install changed the state dir"
    );
    // A tampered bundle: exit 3, nothing changed.
    let mut bytes = fs::read(&app_v2).unwrap();
    let n = bytes.len();
    bytes[n / 2] ^= 1;
    fs::write(e.p("bad.bundle"), &bytes).unwrap();
    e.fails(&["install", s(&e.p("bad.bundle"))], 3);
    assert_eq!(before, e.snapshot());
    // A missing bundle file is not found, as on the local path; nothing changed.
    let msg = e.fails(&["install", s(&e.p("absent.bundle"))], 5);
    assert!(msg.contains("absent.bundle"), "{msg}");
    assert_eq!(before, e.snapshot());
    let r = e.ok(&["--json", "rollback", id]);
    assert_eq!(r.json()["version"], "1.0.0");
    e.ok(&["remove", id]);
    e.fails(&["info", id], 5);
    e.fsck_clean();
    // Without the daemon the same commands work locally.
    drop(d);
    e.ok(&["install", s(&app_v2)]);
    e.fails(&["status"], 1);
}

fn mk_tree(e: &Env, name: &str, bytes: usize) -> PathBuf {
    let root = e.p(name);
    fs::create_dir_all(root.join("bin")).unwrap();
    fs::write(root.join("bin/hello"), "#!/usr/bin/sh\necho hi\n").unwrap();
    fs::set_permissions(root.join("bin/hello"), fs::Permissions::from_mode(0o755)).unwrap();
    fs::create_dir_all(root.join("share")).unwrap();
    let seed = name
        .bytes()
        .fold(7u64, |h, b| h.wrapping_mul(31).wrapping_add(b as u64));
    let data = noise(seed, bytes);
    for i in 0..8 {
        fs::write(
            root.join(format!("share/blob{i}")),
            &data[i * bytes / 8..(i + 1) * bytes / 8],
        )
        .unwrap();
    }
    root
}

fn as_user(e: &Env, uid: u32, groups: &str, args: &[&str]) -> Run {
    let mut c = Command::new("setpriv");
    c.arg(format!("--reuid={uid}"))
        .arg(format!("--regid={uid}"));
    if groups.is_empty() {
        c.arg("--clear-groups");
    } else {
        c.arg(format!("--groups={groups}"));
    }
    c.arg(bin())
        .args(["--state-dir", s(&e.state), "--config-dir", s(&e.cfg)])
        .args(args)
        .env("APPMGR_OPS", binary("appmgr-ops"));
    let o = c.output().unwrap();
    Run {
        code: o.status.code().unwrap_or(137),
        stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
    }
}

#[test]
fn unprivileged_callers_are_denied_and_change_nothing() {
    require_root!("runs appmgrd on a private dbus-daemon in its own mount namespace");
    let id = "org.example.DaemonAcl";
    let e = setup(id, "");
    let v1 = e.bundle(
        &app_manifest("1.0.0").replace("org.example.Hello", id),
        &mk_tree(&e, "acl1", 10_000),
        "acl1.bundle",
    );
    let v2 = e.bundle(
        &app_manifest("2.0.0").replace("org.example.Hello", id),
        &mk_tree(&e, "acl2", 10_000),
        "acl2.bundle",
    );
    e.ok(&["--direct", "install", s(&v1)]);
    fs::set_permissions(&v2, fs::Permissions::from_mode(0o644)).unwrap();
    let _d = Daemon::start(&e);
    let before = e.snapshot();
    // Reads are for everyone.
    let r = as_user(&e, 65534, "", &["list"]);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    assert!(r.stdout.contains(id));
    // Every mutation is refused with exit 7 and AccessDenied, and nothing changes.
    for args in [
        vec!["install", s(&v2)],
        vec!["install", "--allow-downgrade", s(&v2)],
        vec!["remove", id],
        vec!["rollback", id],
        vec!["start", id],
        vec!["stop", id],
        vec!["kill", id],
        vec!["fsck"],
    ] {
        let r = as_user(&e, 65534, "", &args);
        assert_eq!(r.code, 7, "{args:?}: {}{}", r.stdout, r.stderr);
        assert!(
            r.stderr.contains("may not change apps"),
            "{args:?}: {}",
            r.stderr
        );
        assert_eq!(before, e.snapshot(), "{args:?} changed the state dir");
    }
    assert_eq!(e.app_state_of(id), Some(("1.0.0".into(), None)));
    // A member of the operator group may.
    let r = as_user(&e, 65534, "4242", &["--json", "install", s(&v2)]);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    assert_eq!(
        e.app_state_of(id),
        Some(("2.0.0".into(), Some("1.0.0".into())))
    );
}

#[test]
fn ten_clients_install_and_remove_concurrently() {
    require_root!("runs appmgrd on a private dbus-daemon in its own mount namespace");
    let e = setup("org.example.Unused", "");
    let shared = [
        e.bundle(
            &app_manifest("1.0.0").replace("org.example.Hello", "org.example.Shared"),
            &mk_tree(&e, "s1", 200_000),
            "s1.bundle",
        ),
        e.bundle(
            &app_manifest("2.0.0").replace("org.example.Hello", "org.example.Shared"),
            &mk_tree(&e, "s2", 200_000),
            "s2.bundle",
        ),
    ];
    let own: Vec<PathBuf> = (0..10)
        .map(|i| {
            let id = format!("org.example.Client{i}");
            e.bundle(
                &app_manifest("1.0.0").replace("org.example.Hello", &id),
                &mk_tree(&e, &format!("c{i}"), 100_000),
                &format!("c{i}.bundle"),
            )
        })
        .collect();
    let _d = Daemon::start(&e);
    std::thread::scope(|sc| {
        for (i, b) in own.iter().enumerate() {
            let e = &e;
            let shared = &shared;
            sc.spawn(move || {
                for round in 0..3 {
                    e.ok(&["install", s(b)]);
                    e.ok(&["install", "--allow-downgrade", s(&shared[(i + round) % 2])]);
                    e.ok(&["remove", &format!("org.example.Client{i}")]);
                }
            });
        }
    });
    let r = e.ok(&["--json", "list"]);
    let ids: Vec<String> = r
        .json()
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        ids,
        ["org.example.Shared", "org.example.Platform"],
        "{ids:?}"
    );
    e.fsck_clean();
    assert!(e.app_state_of("org.example.Shared").is_some());
}

#[test]
fn sigkill_of_appmgrd_mid_install_leaves_old_or_new() {
    require_root!("runs appmgrd on a private dbus-daemon in its own mount namespace");
    let id = "org.example.DaemonKill";
    let e = setup(id, "");
    let v1 = e.bundle(
        &app_manifest("1.0.0").replace("org.example.Hello", id),
        &mk_tree(&e, "k1", 1_000_000),
        "k1.bundle",
    );
    let v2 = e.bundle(
        &app_manifest("2.0.0").replace("org.example.Hello", id),
        &mk_tree(&e, "k2", 40_000_000),
        "k2.bundle",
    );
    e.ok(&["--direct", "install", s(&v1)]);
    let mut d = Daemon::start(&e);
    let mut outcomes = std::collections::BTreeSet::new();
    for (round, delay_ms) in [5u64, 60, 150, 400, 2000].into_iter().enumerate() {
        let cli = e
            .cmd(&["install", s(&v2)])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(delay_ms));
        d.kill9();
        let out = cli.wait_with_output().unwrap();
        // The CLI's call either completed or failed cleanly with a one-line error.
        if !out.status.success() {
            let err = String::from_utf8_lossy(&out.stderr);
            assert_eq!(err.lines().count(), 1, "{err}");
        }
        d.spawn();
        let state = e.app_state_of(id).expect("the app is installed");
        assert!(
            state == ("1.0.0".into(), None) || state == ("2.0.0".into(), Some("1.0.0".into())),
            "round {round}: {state:?}"
        );
        outcomes.insert(state.0.clone());
        e.fsck_clean();
        if state.0 == "2.0.0" {
            e.ok(&["--direct", "rollback", id]);
            e.ok(&["--direct", "install", "--allow-downgrade", s(&v1)]);
            // Back to exactly one deployment of v1 for the next round.
            e.ok(&["--direct", "remove", id]);
            e.ok(&["--direct", "install", "--allow-downgrade", s(&v1)]);
        }
    }
    assert!(
        outcomes.contains("1.0.0"),
        "no kill ever interrupted the install: {outcomes:?}"
    );
}

const SERVICE_POLICY: &str = "[[rule]]\napps = [\"@ID@\"]\nservice = { autostart = true, restart = \"on-failure\", restart-delay-ms = 100, restart-delay-max-ms = 400, health-crashes = 2, health-timeout = 3 }\n";

fn wait_for(what: &str, secs: u64, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn status(e: &Env, id: &str) -> serde_json::Value {
    let r = e.run(&["--json", "status", id]);
    if r.code != 0 {
        return serde_json::Value::Null;
    }
    r.json()
}

#[test]
fn health_window_rolls_back_a_crashing_update() {
    require_root!("runs appmgrd on a private dbus-daemon in its own mount namespace");
    let id = "org.example.DaemonHealth";
    let e = setup(id, SERVICE_POLICY);
    let good = service_bundle(
        &e,
        id,
        "1.0.0",
        "#!/usr/bin/sh\necho up\nexec busybox sleep 1000\n",
        "\n[service]\nready = \"started\"\n",
    );
    let broken = service_bundle(
        &e,
        id,
        "2.0.0",
        "#!/usr/bin/sh\necho broken >&2\nexit 3\n",
        "\n[service]\nready = \"started\"\n",
    );
    e.ok(&["--direct", "install", s(&good)]);
    let _d = Daemon::start(&e);
    // Autostarted at daemon start.
    wait_for("autostart", 20, || status(&e, id)["state"] == "running");
    assert_eq!(status(&e, id)["version"], "1.0.0");
    let pid = status(&e, id)["pid"].as_u64().unwrap();
    assert!(Path::new(&format!("/proc/{pid}")).exists());
    // The broken update is installed, crashes twice in its window and is rolled back.
    e.ok(&["install", s(&broken)]);
    wait_for("the automatic rollback", 30, || {
        let st = status(&e, id);
        st["last-rollback"].is_object() && st["state"] == "running"
    });
    let st = status(&e, id);
    assert_eq!(st["version"], "1.0.0", "{st}");
    assert_eq!(st["last-rollback"]["from-version"], "2.0.0");
    assert_eq!(st["last-rollback"]["to-version"], "1.0.0");
    assert!(
        st["last-rollback"]["reason"]
            .as_str()
            .unwrap()
            .contains("crash"),
        "{st}"
    );
    assert_eq!(e.app_state_of(id).unwrap().0, "1.0.0");
    let rec: serde_json::Value = serde_json::from_slice(
        &fs::read(e.state.join(format!("daemon/health/{id}.json"))).unwrap(),
    )
    .unwrap();
    assert_eq!(rec["from-version"], "2.0.0");
    // The signed device report tells the backend the update was rolled back.
    let app = e.report_app(id);
    assert_eq!(app["version"], "1.0.0", "{app}");
    assert_eq!(app["last_update"]["outcome"], "rolled-back", "{app}");
    assert_eq!(app["last_update"]["failed_version"], "2.0.0", "{app}");
    // The app's output went to its log (no journald on the test host).
    let log = fs::read_to_string(e.state.join(format!("daemon/logs/{id}.log"))).unwrap_or_default();
    assert!(log.contains("broken") && log.contains("up"), "{log}");
    // Stop: the service ends and is not restarted.
    let r = e.ok(&["--json", "stop", id]);
    assert_eq!(r.json()["state"], "stopped");
    assert!(
        !Path::new(&format!("/proc/{}", st["pid"].as_u64().unwrap())).exists() || {
            std::thread::sleep(Duration::from_millis(500));
            !Path::new(&format!("/proc/{}", st["pid"].as_u64().unwrap())).exists()
        }
    );
}

#[test]
fn health_window_rolls_back_an_update_that_never_gets_ready() {
    require_root!("runs appmgrd on a private dbus-daemon in its own mount namespace");
    let id = "org.example.DaemonReady";
    let e = setup(id, SERVICE_POLICY);
    let good = service_bundle(
        &e,
        id,
        "1.0.0",
        "#!/usr/bin/sh\nexec busybox sleep 1000\n",
        "\n[service]\nready = \"started\"\n",
    );
    // Claims sd_notify readiness, never sends READY=1.
    let silent = service_bundle(
        &e,
        id,
        "2.0.0",
        "#!/usr/bin/sh\nexec busybox sleep 1000\n",
        "\n[service]\nready = \"notify\"\n",
    );
    e.ok(&["--direct", "install", s(&good)]);
    let _d = Daemon::start(&e);
    wait_for("autostart", 20, || status(&e, id)["state"] == "running");
    e.ok(&["install", s(&silent)]);
    wait_for("the automatic rollback", 30, || {
        status(&e, id)["last-rollback"].is_object()
    });
    let st = status(&e, id);
    assert!(
        st["last-rollback"]["reason"]
            .as_str()
            .unwrap()
            .contains("READY=1"),
        "{st}"
    );
    assert_eq!(e.app_state_of(id).unwrap().0, "1.0.0");
    wait_for("v1 running again", 20, || {
        status(&e, id)["state"] == "running" && status(&e, id)["version"] == "1.0.0"
    });
}

#[test]
fn install_wait_returns_the_health_windows_verdict() {
    require_root!("runs appmgrd on a private dbus-daemon in its own mount namespace");
    let id = "org.example.DaemonWait";
    let e = setup(id, SERVICE_POLICY);
    let started = "\n[service]\nready = \"started\"\n";
    let sleeper = "#!/usr/bin/sh\nexec busybox sleep 1000\n";
    let v1 = service_bundle(&e, id, "1.0.0", sleeper, started);
    let v2 = service_bundle(&e, id, "2.0.0", sleeper, started);
    let broken = service_bundle(&e, id, "3.0.0", "#!/usr/bin/sh\nexit 7\n", started);
    let silent = service_bundle(
        &e,
        id,
        "4.0.0",
        sleeper,
        "\n[service]\nready = \"notify\"\n",
    );
    e.ok(&["--direct", "install", s(&v1)]);
    // Without appmgrd there is no health window to wait for: refused, nothing changed.
    let before = store_snapshot(&e);
    let err = e.fails(&["--direct", "install", "--wait", s(&v2)], 1);
    assert!(
        err.contains("--wait") && err.contains("supervisor"),
        "{err}"
    );
    assert_eq!(store_snapshot(&e), before);
    let r = e.run(&["install", "--wait-timeout", "5", s(&v2)]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("--wait"), "{}", r.stderr);
    assert_eq!(store_snapshot(&e), before);

    let _d = Daemon::start(&e);
    wait_for("autostart", 20, || status(&e, id)["state"] == "running");
    // A good update: the reply comes when its window (health-timeout 3 s) has passed.
    let t = Instant::now();
    let r = e.ok(&["--json", "install", "--wait", s(&v2)]);
    let waited = t.elapsed();
    let j = r.json();
    assert_eq!(j["health"]["verdict"], "healthy", "{j}");
    assert_eq!(j["health"]["version"], "2.0.0", "{j}");
    assert!(waited >= Duration::from_secs(3), "{waited:?}");
    let st = status(&e, id);
    assert!(st["health-window"].is_null(), "the window is closed: {st}");
    assert_eq!(st["version"], "2.0.0", "{st}");

    // A broken update: exit 8 once it is rolled back and 2.0.0 runs again.
    let r = e.run(&["--json", "install", "--wait", s(&broken)]);
    assert_eq!(r.code, 8, "{}{}", r.stdout, r.stderr);
    assert!(
        r.stderr.contains("3.0.0") && r.stderr.contains("rolled") && r.stderr.contains("crash"),
        "{}",
        r.stderr
    );
    assert!(
        r.stderr.contains("\"class\":\"RolledBack\""),
        "{}",
        r.stderr
    );
    assert_eq!(e.app_state_of(id).unwrap().0, "2.0.0");
    let st = status(&e, id);
    assert_eq!(st["version"], "2.0.0", "{st}");
    assert_eq!(st["state"], "running", "{st}");
    assert_eq!(st["last-rollback"]["from-version"], "3.0.0", "{st}");

    // A bounded wait: no READY=1 within 1 s is no verdict yet (exit 1); the window stays
    // open and rolls the update back later.
    let t = Instant::now();
    let err = e.fails(&["install", "--wait", "--wait-timeout", "1", s(&silent)], 1);
    assert!(t.elapsed() < Duration::from_secs(20), "{:?}", t.elapsed());
    assert!(err.contains("no verdict within 1 s"), "{err}");
    wait_for("the later rollback", 30, || {
        status(&e, id)["last-rollback"]["from-version"] == "4.0.0"
    });
    assert_eq!(e.app_state_of(id).unwrap().0, "2.0.0");

    // An app that is not a service has no window: the install's answer says so, exit 0.
    let plain = e.run(&["--json", "install", "--wait", s(&e.runtime_bundle("1.1.0"))]);
    assert_eq!(plain.code, 0, "{}{}", plain.stdout, plain.stderr);
    assert_eq!(
        plain.json()["health"]["verdict"],
        "none",
        "{}",
        plain.stdout
    );
}

#[test]
fn inhibitors_defer_installs_and_restarts_and_keep_the_download() {
    require_root!("runs appmgrd on a private dbus-daemon in its own mount namespace");
    let id = "org.example.DaemonInhibit";
    let e = setup(id, SERVICE_POLICY);
    let inhibit_dir = e.dir.path().join("inhibit");
    fs::write(
        e.cfg.join("appmgr.toml"),
        format!(
            "operator-group = \"appmgrops\"\ninhibit-dir = \"{}\"\n",
            inhibit_dir.display()
        ),
    )
    .unwrap();
    let started = "\n[service]\nready = \"started\"\n";
    let sleeper = "#!/usr/bin/sh\nexec busybox sleep 1000\n";
    // 1.0.0 and 2.0.0 share a large file: the deferred download of 2.0.0 takes it from the
    // installed 1.0.0 (its zstd frame, made locally) and keeps the whole bundle.
    let data = noise(0x2545_f491_4f6c_dd1d, 256 * 1024);
    for v in ["1.0.0", "2.0.0"] {
        let share = e.p(&format!("svc-{id}-{v}")).join("share");
        fs::create_dir_all(&share).unwrap();
        fs::write(share.join("data"), &data).unwrap();
    }
    let v1 = service_bundle(&e, id, "1.0.0", sleeper, started);
    let v2 = service_bundle(&e, id, "2.0.0", sleeper, started);
    let v3 = service_bundle(&e, id, "3.0.0", sleeper, started);
    let reg = Registry::start(e.dir.path());
    let url = reg.url("fleet/inhibit");
    e.ok(&["publish", s(&v2), &url]);
    e.ok(&["remote", "add", "fleet", &url]);
    e.ok(&["--direct", "install", s(&v1)]);
    e.ok(&["inhibit", "vehicle-moving", "--reason", "speed 42 km/h"]);
    assert_eq!(
        fs::read_to_string(inhibit_dir.join("vehicle-moving")).unwrap(),
        "speed 42 km/h\n"
    );
    // Without appmgrd nothing can be queued: refused, nothing changed.
    let before = store_snapshot(&e);
    let err = e.fails(&["--direct", "install", s(&v3)], 6);
    assert!(err.contains("vehicle-moving (speed 42 km/h)"), "{err}");
    assert_eq!(store_snapshot(&e), before);

    let d = Daemon::start(&e);
    wait_for("autostart", 20, || status(&e, id)["state"] == "running");
    let pid = status(&e, id)["pid"].clone();
    // (The running service has its data directory now.)
    let before = store_snapshot(&e);
    // A remote install is downloaded and verified, queued, and answered exit 9.
    let r = e.run(&["install", &format!("fleet:{id}@2.0.0")]);
    assert_eq!(r.code, 9, "{}{}", r.stdout, r.stderr);
    assert!(
        r.stderr.contains("deferred") && r.stderr.contains("vehicle-moving"),
        "{}",
        r.stderr
    );
    assert!(
        r.stderr.contains("1 files from the installed version"),
        "{}",
        r.stderr
    );
    // The registry goes away: the queued install needs nothing more from it.
    drop(reg);
    // A file install with --wait is queued too; its client waits.
    let waiting = e
        .cmd(&["--json", "install", "--wait", s(&v3)])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for("two queued installs", 30, || {
        e.ok(&["--json", "inhibitors"]).json()["queued"]
            .as_array()
            .is_some_and(|q| q.len() == 2)
    });
    let q = e.ok(&["--json", "inhibitors"]).json();
    assert_eq!(q["queued"][0]["version"], "2.0.0", "{q}");
    assert_eq!(q["queued"][1]["version"], "3.0.0", "{q}");
    assert_eq!(q["inhibitors"][0]["name"], "vehicle-moving", "{q}");
    // Nothing was installed and the service was not restarted.
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(store_snapshot(&e), before);
    assert_eq!(status(&e, id)["pid"], pid);
    assert_eq!(status(&e, id)["version"], "1.0.0");
    // Cleared: the queue runs in order, from the kept files, and the waiting client gets
    // the install and its health verdict.
    let r = e.ok(&["uninhibit", "vehicle-moving"]);
    assert!(r.stdout.contains("no inhibitor left"), "{}", r.stdout);
    let out = waiting.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let j: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(j["health"]["verdict"], "healthy", "{j}");
    assert_eq!(j["version"], "3.0.0", "{j}");
    assert_eq!(
        e.app_state_of(id),
        Some(("3.0.0".into(), Some("2.0.0".into())))
    );
    assert!(d.log().contains("2.0.0 deferred"), "{}", d.log());
    let q = e.ok(&["--json", "inhibitors"]).json();
    assert_eq!(q["queued"], serde_json::json!([]), "{q}");
    assert_eq!(status(&e, id)["version"], "3.0.0");
    // The TUF-less remote recorded no release; a bad inhibitor name changes nothing.
    let r = e.run(&["inhibit", "../x"]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(!e.dir.path().join("x").exists());
    e.fails(&["uninhibit", "vehicle-moving"], 5);
}

#[test]
fn per_app_bus_policy_lets_an_app_reach_granted_names_only() {
    require_root!("runs appmgrd on a private dbus-daemon in its own mount namespace");
    let talker = "org.example.BusTalker";
    let mute = "org.example.BusMute";
    let policy = format!(
        "[[rule]]\napps = [\"{talker}\"]\ngrant = {{ dbus-talk = [\"org.appmgr.Manager1\"] }}\n"
    );
    let e = setup("unused", &policy);
    let t = e.bundle(
        &format!(
            "{}\n[permissions]\ndbus-talk = [\"org.appmgr.Manager1\"]\n",
            app_manifest("1.0.0").replace("org.example.Hello", talker)
        ),
        &mk_tree(&e, "bt", 1000),
        "bt.bundle",
    );
    let m = e.bundle(
        &app_manifest("1.0.0").replace("org.example.Hello", mute),
        &mk_tree(&e, "bm", 1000),
        "bm.bundle",
    );
    e.ok(&["--direct", "install", s(&t)]);
    e.ok(&["--direct", "install", s(&m)]);
    let d = Daemon::start(&e);
    let uid = |id: &str| {
        e.ok(&["--json", "info", id]).json()["uid"]
            .as_u64()
            .unwrap()
    };
    let file = fs::read_to_string(d.policy_dir.join("appmgr-apps.conf"))
        .unwrap_or_else(|e| panic!("no bus policy written ({e}): {}", d.log()));
    assert!(
        file.contains(&format!("user=\"{}\"", uid(talker))),
        "{file}"
    );
    assert!(file.contains(&format!("user=\"{}\"", uid(mute))), "{file}");
    let ping = |u: u64| {
        Command::new("setpriv")
            .arg(format!("--reuid={u}"))
            .arg(format!("--regid={u}"))
            .arg("--clear-groups")
            .arg("dbus-send")
            .arg(format!("--bus={}", d.address))
            .args([
                "--print-reply",
                "--dest=org.appmgr.Manager1",
                "/org/appmgr/Manager1",
                "org.freedesktop.DBus.Peer.Ping",
            ])
            .output()
            .unwrap()
    };
    let ok = ping(uid(talker));
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let no = ping(uid(mute));
    assert!(!no.status.success());
    assert!(
        String::from_utf8_lossy(&no.stderr).contains("AccessDenied"),
        "{}",
        String::from_utf8_lossy(&no.stderr)
    );
    // An ordinary user (no app uid) is not affected by the app rules.
    assert!(ping(65534).status.success());
}

/// The interface as served equals the committed XML (`APPMGR_UPDATE_INTROSPECTION=1`
/// rewrites the file after a deliberate API change).
#[test]
fn introspection_matches_the_committed_xml() {
    require_root!("runs appmgrd on a private dbus-daemon in its own mount namespace");
    let e = setup("unused", "");
    let d = Daemon::start(&e);
    let out = Command::new("dbus-send")
        .arg(format!("--bus={}", d.address))
        .args([
            "--print-reply=literal",
            "--dest=org.appmgr.Manager1",
            "/org/appmgr/Manager1",
            "org.freedesktop.DBus.Introspectable.Introspect",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let xml = String::from_utf8_lossy(&out.stdout);
    let start = xml
        .find("<interface name=\"org.appmgr.Manager1\">")
        .expect("interface in introspection");
    let end = start + xml[start..].find("</interface>").unwrap() + "</interface>".len();
    let served: String = xml[start..end]
        .lines()
        .map(|l| l.trim_end())
        .collect::<Vec<_>>()
        .join("\n")
        + "\n";
    let path = repo_root().join("appmgr/daemon/dbus/org.appmgr.Manager1.xml");
    if std::env::var_os("APPMGR_UPDATE_INTROSPECTION").is_some() {
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(&path, &served).unwrap();
    }
    let committed = fs::read_to_string(&path).unwrap_or_default();
    if committed != served {
        let first = committed
            .lines()
            .zip(served.lines())
            .position(|(a, b)| a != b)
            .unwrap_or(committed.lines().count().min(served.lines().count()));
        panic!(
            "the D-Bus API differs from {} at line {}: committed {:?}, served {:?}; \
             review, then rerun with APPMGR_UPDATE_INTROSPECTION=1",
            path.display(),
            first + 1,
            committed.lines().nth(first),
            served.lines().nth(first)
        );
    }
}

fn sha256_hex(p: &Path) -> String {
    let out = Command::new("sha256sum").arg(p).output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

/// The store part of the state dir (appmgrd's own run files left out).
fn store_snapshot(e: &Env) -> std::collections::BTreeMap<String, String> {
    e.snapshot()
        .into_iter()
        .filter(|(k, _)| !k.starts_with("daemon"))
        .collect()
}

#[test]
fn preinstall_installs_factory_bundles_once() {
    require_root!("runs appmgrd on a private dbus-daemon in its own mount namespace");
    let id = "org.example.Factory";
    let e = Env::new();
    let rt = e.runtime_bundle("1.0.0");
    let app = e.bundle(
        &app_manifest("1.2.0").replace("org.example.Hello", id),
        &mk_tree(&e, "f1", 10_000),
        "f.bundle",
    );
    let other = e.bundle(
        &app_manifest("1.0.0").replace("org.example.Hello", "org.example.Tampered"),
        &mk_tree(&e, "f2", 10_000),
        "o.bundle",
    );
    let dir = e.cfg.join("preinstall.d");
    fs::create_dir_all(&dir).unwrap();
    let entry = |b: &Path, id: &str, kind: &str, v: &str, sha: &str| {
        format!("bundle = \"{}\"\nid = \"{id}\"\nkind = \"{kind}\"\nversion = \"{v}\"\nsha256 = \"{sha}\"\n", b.display())
    };
    fs::write(
        dir.join("10-platform.toml"),
        entry(
            &rt,
            "org.example.Platform",
            "runtime",
            "1.0.0",
            &sha256_hex(&rt),
        ),
    )
    .unwrap();
    fs::write(
        dir.join("20-factory.toml"),
        entry(&app, id, "app", "1.2.0", &sha256_hex(&app)),
    )
    .unwrap();
    // The file on disk is not the one the image was built with.
    fs::write(
        dir.join("30-tampered.toml"),
        entry(
            &other,
            "org.example.Tampered",
            "app",
            "1.0.0",
            &"0".repeat(64),
        ),
    )
    .unwrap();
    fs::write(dir.join("40-broken.toml"), "bundle = 1\n").unwrap();
    let mut d = Daemon::start(&e);
    assert_eq!(e.app_state_of(id), Some(("1.2.0".into(), None)));
    assert_eq!(e.app_state_of("org.example.Tampered"), None);
    let log = d.log();
    assert!(
        log.contains("30-tampered.toml") && log.contains("sha256"),
        "{log}"
    );
    assert!(log.contains("40-broken.toml"), "{log}");
    e.fsck_clean();
    // A restart changes nothing in the store: present entries are skipped.
    let before = store_snapshot(&e);
    d.terminate();
    d.spawn();
    assert_eq!(before, store_snapshot(&e));
    assert!(d.log().matches("is installed").count() >= 2, "{}", d.log());
    // InstallPath: appmgrd opens the file itself (absolute paths only).
    let v2 = e.bundle(
        &app_manifest("1.3.0").replace("org.example.Hello", id),
        &mk_tree(&e, "f3", 10_000),
        "f3.bundle",
    );
    let call = |path: &str| {
        Command::new("busctl")
            .arg(format!("--address={}", d.address))
            .args([
                "call",
                BUS_NAME,
                "/org/appmgr/Manager1",
                BUS_NAME,
                "InstallPath",
                "sa{sv}",
                path,
                "0",
            ])
            .output()
            .unwrap()
    };
    let rel = call("f3.bundle");
    assert!(!rel.status.success());
    assert!(
        String::from_utf8_lossy(&rel.stderr).contains("absolute"),
        "{}",
        String::from_utf8_lossy(&rel.stderr)
    );
    let ok = call(s(&v2));
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert_eq!(
        e.app_state_of(id),
        Some(("1.3.0".into(), Some("1.2.0".into())))
    );
}

#[test]
fn services_come_back_after_appmgrd_is_killed() {
    require_root!("runs appmgrd on a private dbus-daemon in its own mount namespace");
    let id = "org.example.DaemonCrash";
    let e = setup(id, SERVICE_POLICY);
    let svc = service_bundle(
        &e,
        id,
        "1.0.0",
        "#!/usr/bin/sh\nexec busybox sleep 1000\n",
        "\n[service]\nready = \"started\"\n",
    );
    e.ok(&["--direct", "install", s(&svc)]);
    let mut d = Daemon::start(&e);
    wait_for("autostart", 20, || status(&e, id)["state"] == "running");
    let old = status(&e, id)["pid"].as_u64().unwrap();
    d.kill9();
    // The orphaned instance still runs; a new appmgrd stops it and starts one it owns.
    assert!(Path::new(&format!("/proc/{old}")).exists());
    d.spawn();
    wait_for("restart by the new appmgrd", 20, || {
        status(&e, id)["state"] == "running"
    });
    let new = status(&e, id)["pid"].as_u64().unwrap();
    assert_ne!(old, new);
    wait_for("the leftover to end", 10, || {
        fs::read_to_string(format!("/proc/{old}/stat")).map_or(true, |st| st.contains(") Z "))
    });
    harness::ps_entry(&e, &[], id);
    assert!(d.log().contains("leftover"), "{}", d.log());
}

/// `setpriv` to `uid` (and its own gid) with the supplementary `groups` ("" for none).
fn setpriv(uid: u32, groups: &str) -> Command {
    let mut c = Command::new("setpriv");
    c.arg(format!("--reuid={uid}"))
        .arg(format!("--regid={uid}"));
    if groups.is_empty() {
        c.arg("--clear-groups");
    } else {
        c.arg(format!("--groups={groups}"));
    }
    c
}

/// Whether some process holds a lock on `lock` (an exclusive one cannot be taken).
fn lock_is_held(lock: &Path) -> bool {
    !Command::new("flock")
        .args(["-n", "-x", s(lock), "true"])
        .status()
        .unwrap()
        .success()
}

#[test]
fn daemon_files_are_root_only_and_no_user_can_stall_appmgrd() {
    require_root!("runs appmgrd on a private dbus-daemon in its own mount namespace");
    let e = setup("org.example.Unused", "");
    fs::set_permissions(e.dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
    // What an older appmgrd left: a directory and a lock every user could open, and a
    // user holding a shared lock on it.
    let ddir = e.state.join("daemon");
    let lock = ddir.join("lock");
    fs::create_dir_all(&ddir).unwrap();
    fs::set_permissions(&ddir, fs::Permissions::from_mode(0o755)).unwrap();
    fs::write(&lock, "").unwrap();
    fs::set_permissions(&lock, fs::Permissions::from_mode(0o644)).unwrap();
    let mut holder = setpriv(65534, "")
        .args(["flock", "-o", "-s", s(&lock), "sleep", "120"])
        .spawn()
        .unwrap();
    wait_for("the user's lock", 10, || lock_is_held(&lock));
    // appmgrd starts all the same: it repairs the directory and replaces the lock.
    let mut d = Daemon::start(&e);
    use std::os::unix::fs::MetadataExt;
    let m = fs::symlink_metadata(&ddir).unwrap();
    assert!(m.is_dir());
    assert_eq!((m.uid(), m.mode() & 0o7777), (0, 0o700));
    let m = fs::symlink_metadata(&lock).unwrap();
    assert!(m.is_file());
    assert_eq!((m.uid(), m.mode() & 0o7777), (0, 0o600));
    let _ = holder.kill();
    let _ = holder.wait();
    // No other user can open the directory or the lock (EACCES), so none can hold it.
    for script in [
        "exec 3<\"$1/lock\"",
        "ls \"$1\"",
        "flock -n -s \"$1/lock\" true",
    ] {
        let o = setpriv(65534, "")
            .args(["sh", "-c", script, "sh", s(&ddir)])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "{script}: a user got in");
        assert!(err.contains("Permission denied"), "{script}: {err}");
    }
    // A restart is not stalled, and users still reach the daemon (the address is
    // public): a mutation is refused by appmgrd itself.
    d.terminate();
    d.spawn();
    let r = as_user(&e, 65534, "", &["fsck"]);
    assert_eq!(r.code, 7, "{}{}", r.stdout, r.stderr);
    assert!(r.stderr.contains("may not change apps"), "{}", r.stderr);
}

/// appmgrd once, on a bus that does not exist: it gets as far as its own files.
fn appmgrd_once(e: &Env) -> Run {
    let mut c = Command::new(appmgrd_bin());
    c.args(["--state-dir", s(&e.state), "--config-dir", s(&e.cfg)])
        .args(["--bus-address", &format!("unix:path={}", s(&e.p("no-bus")))])
        .args(["--bus-policy-file", "none", "--system-bus-socket", "none"])
        .args(["--group-file", s(&e.cfg.join("group"))])
        .args(["--userdb-dir", s(&e.p("userdb"))])
        .env_remove("NOTIFY_SOCKET");
    run_bounded(c, Duration::from_secs(30)).0
}

#[test]
fn appmgrd_refuses_daemon_files_another_user_could_reach() {
    require_root!("runs appmgrd on a private dbus-daemon in its own mount namespace");
    let e = setup("org.example.Unused", "");
    let ddir = e.state.join("daemon");
    // A directory a user owns: refused, nothing written into it.
    fs::create_dir_all(&ddir).unwrap();
    std::os::unix::fs::chown(&ddir, Some(65534), Some(65534)).unwrap();
    let before = e.snapshot();
    let r = appmgrd_once(&e);
    assert_ne!(r.code, 0);
    assert!(r.stderr.contains("owned by uid 65534"), "{}", r.stderr);
    assert_eq!(before, e.snapshot(), "appmgrd wrote to a user's directory");
    // A symbolic link: not followed.
    fs::remove_dir(&ddir).unwrap();
    let elsewhere = e.p("elsewhere");
    fs::create_dir_all(&elsewhere).unwrap();
    std::os::unix::fs::symlink(&elsewhere, &ddir).unwrap();
    let before = e.snapshot();
    let r = appmgrd_once(&e);
    assert_ne!(r.code, 0);
    assert!(r.stderr.contains("symbolic link"), "{}", r.stderr);
    assert_eq!(before, e.snapshot());
    assert_eq!(fs::read_dir(&elsewhere).unwrap().count(), 0);
    // A state directory every user may write to.
    fs::remove_file(&ddir).unwrap();
    fs::set_permissions(&e.state, fs::Permissions::from_mode(0o777)).unwrap();
    let before = e.snapshot();
    let r = appmgrd_once(&e);
    assert_ne!(r.code, 0);
    assert!(r.stderr.contains("another user may write"), "{}", r.stderr);
    assert_eq!(before, e.snapshot());
    assert!(!ddir.exists());
}

#[test]
fn stale_address_or_held_lock_never_hangs_the_cli() {
    require_root!("runs appmgrd on a private dbus-daemon in its own mount namespace");
    let id = "org.example.DaemonStale";
    let e = setup(id, "");
    let app = e.bundle(
        &app_manifest("1.0.0").replace("org.example.Hello", id),
        &mk_tree(&e, "st1", 1000),
        "st1.bundle",
    );
    // An address whose daemon is gone and a free lock: the local path, at once.
    let addr = e.state.join("daemon.bus-address");
    fs::write(&addr, format!("unix:path={}", s(&e.p("gone.sock")))).unwrap();
    let t = Instant::now();
    same_output(&e, &["list"]);
    e.fails(&["status"], 1);
    // (Well below one connect timeout per command: nothing waited.)
    assert!(t.elapsed() < Duration::from_secs(8), "{:?}", t.elapsed());
    // A bus that accepts but never answers, and the lock held by a process that does
    // not serve: every command ends within the bound, in one line, changing nothing.
    let _hung = std::os::unix::net::UnixListener::bind(e.p("hung.sock")).unwrap();
    fs::write(&addr, format!("unix:path={}", s(&e.p("hung.sock")))).unwrap();
    let ddir = e.state.join("daemon");
    fs::create_dir_all(&ddir).unwrap();
    fs::set_permissions(&ddir, fs::Permissions::from_mode(0o700)).unwrap();
    let lock = ddir.join("lock");
    fs::write(&lock, "").unwrap();
    let mut holder = Command::new("flock")
        .args(["-o", "-x", s(&lock), "sleep", "120"])
        .spawn()
        .unwrap();
    wait_for("the lock", 10, || lock_is_held(&lock));
    let before = e.snapshot();
    for args in [vec!["list"], vec!["install", s(&app)], vec!["status"]] {
        let mut c = e.cmd(&args);
        c.env("APPMGR_DAEMON_WAIT", "1");
        let (r, took) = run_bounded(c, Duration::from_secs(40));
        assert!(took < Duration::from_secs(15), "{args:?} waited {took:?}");
        assert_eq!(r.code, 1, "{args:?}: {}{}", r.stdout, r.stderr);
        assert_eq!(
            r.stderr.trim_end().lines().count(),
            1,
            "{args:?}: {}",
            r.stderr
        );
        assert!(r.stderr.contains("no daemon answers"), "{}", r.stderr);
        assert_eq!(before, e.snapshot(), "{args:?} changed the state dir");
    }
    // The same without an address (a daemon that never came up).
    fs::remove_file(&addr).unwrap();
    let mut c = e.cmd(&["list"]);
    c.env("APPMGR_DAEMON_WAIT", "1");
    let (r, took) = run_bounded(c, Duration::from_secs(40));
    assert!(took < Duration::from_secs(10), "waited {took:?}");
    assert_eq!(r.code, 1, "{}{}", r.stdout, r.stderr);
    assert_eq!(r.stderr.trim_end().lines().count(), 1, "{}", r.stderr);
    let _ = holder.kill();
    let _ = holder.wait();
    // The lock released: the local path again.
    e.ok(&["install", s(&app)]);
    assert_eq!(e.app_state_of(id), Some(("1.0.0".into(), None)));
}

/// `gdbus call` of a Manager1 method on the private bus, as `uid` with `groups` (root
/// when `uid` is 0).
fn gdbus(d: &Daemon, uid: u32, groups: &str, method: &str, args: &[&str]) -> Command {
    let mut c = if uid == 0 {
        Command::new("gdbus")
    } else {
        let mut c = setpriv(uid, groups);
        c.arg("gdbus");
        c
    };
    c.args(["call", "--address", &d.address, "--dest", BUS_NAME])
        .args(["--object-path", "/org/appmgr/Manager1", "--timeout", "20"])
        .arg("--method")
        .arg(format!("{BUS_NAME}.{method}"))
        .args(args);
    c
}

#[test]
fn install_path_opens_with_the_callers_rights_and_never_blocks() {
    require_root!("runs appmgrd on a private dbus-daemon in its own mount namespace");
    use std::os::unix::fs::OpenOptionsExt;
    let id = "org.example.DaemonPath";
    let e = setup(id, "");
    let app = e.bundle(
        &app_manifest("1.0.0").replace("org.example.Hello", id),
        &mk_tree(&e, "ip1", 1000),
        "ip1.bundle",
    );
    fs::set_permissions(&app, fs::Permissions::from_mode(0o644)).unwrap();
    let d = Daemon::start(&e);
    // A root-only file (no bundle): none of its bytes may appear in a reply.
    let secret = e.p("secret");
    fs::write(&secret, "TOPSECRET-7f3a9c\n".repeat(64)).unwrap();
    fs::set_permissions(&secret, fs::Permissions::from_mode(0o600)).unwrap();
    let link = e.p("link");
    std::os::unix::fs::symlink(&secret, &link).unwrap();
    let fifo = e.p("fifo");
    assert!(Command::new("mkfifo")
        .args(["-m", "0666", s(&fifo)])
        .status()
        .unwrap()
        .success());
    let path_arg = |p: &Path| format!("'{}'", p.display());
    let install_path = |p: &Path| {
        let c = gdbus(
            &d,
            65534,
            "4242",
            "InstallPath",
            &[&path_arg(p), "@a{sv} {}"],
        );
        run_bounded(c, Duration::from_secs(30))
    };
    let before = e.snapshot();
    let missing = e.p("missing.bundle");
    for (p, class) in [
        (&secret, "AccessDenied"),
        (&link, "InvalidArgs"),
        (&missing, "NotFound"),
    ] {
        let (r, _) = install_path(p);
        assert_ne!(r.code, 0, "{}: {}", p.display(), r.stdout);
        assert!(
            r.stderr.contains(&format!("org.appmgr.Error.{class}")),
            "{}: {}",
            p.display(),
            r.stderr
        );
        assert!(
            !r.stderr.contains("TOPSECRET") && !r.stdout.contains("TOPSECRET"),
            "{}: the file's bytes leaked: {}",
            p.display(),
            r.stderr
        );
        assert_eq!(
            before,
            e.snapshot(),
            "{} changed the state dir",
            p.display()
        );
    }
    assert!(!d.log().contains("TOPSECRET"), "{}", d.log());
    // A FIFO is refused at once, and while that request is in flight another client's
    // List is answered.
    let fifo_call = gdbus(
        &d,
        65534,
        "4242",
        "InstallPath",
        &[&path_arg(&fifo), "@a{sv} {}"],
    );
    let pending = std::thread::spawn(move || run_bounded(fifo_call, Duration::from_secs(10)));
    let (list, list_took) = run_bounded(gdbus(&d, 65534, "", "List", &[]), Duration::from_secs(10));
    // Whatever happened, nobody stays blocked on the FIFO once the test is over.
    let _ = fs::OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(&fifo);
    let (r, took) = pending.join().unwrap();
    assert!(
        took < Duration::from_secs(2),
        "the FIFO took {took:?}: {}",
        r.stderr
    );
    assert_ne!(r.code, 0);
    assert!(r.stderr.contains("not a regular file"), "{}", r.stderr);
    assert_eq!(list.code, 0, "{}", list.stderr);
    assert!(
        list_took < Duration::from_secs(4),
        "List took {list_took:?}"
    );
    assert_eq!(before, e.snapshot());
    // A bundle the operator may read installs.
    let (r, _) = install_path(&app);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    assert_eq!(e.app_state_of(id), Some(("1.0.0".into(), None)));
}

#[test]
fn service_log_files_are_capped_and_keep_the_newest_lines() {
    require_root!("runs appmgrd on a private dbus-daemon in its own mount namespace");
    let id = "org.example.DaemonLogCap";
    let e = setup(id, SERVICE_POLICY);
    // The default cap, 1M (`service-log-max` in appmgr.toml). About 4.5 MB of output as fast as the shell writes, on stdout and stderr, then idle.
    let svc = service_bundle(
        &e,
        id,
        "1.0.0",
        "#!/usr/bin/sh\ni=0\nwhile [ $i -lt 50000 ]; do\n  echo \"line $i of a service that logs far too much\"\n  echo \"err $i\" >&2\n  i=$((i+1))\ndone\necho last-line\nexec busybox sleep 1000\n",
        "\n[service]\nready = \"started\"\n",
    );
    e.ok(&["--direct", "install", s(&svc)]);
    let _d = Daemon::start(&e);
    let logs = e.state.join("daemon/logs");
    let cur = logs.join(format!("{id}.log"));
    wait_for("the last line in the log", 60, || {
        fs::read_to_string(&cur).is_ok_and(|t| t.contains("last-line\n"))
    });
    let cap = 1u64 << 20;
    let mut total = 0;
    for f in fs::read_dir(&logs).unwrap().flatten() {
        let name = f.file_name().to_string_lossy().to_string();
        if !name.starts_with(id) {
            continue;
        }
        let len = f.metadata().unwrap().len();
        assert!(len <= cap, "{name}: {len} bytes over the {cap}-byte cap");
        total += len;
        assert!(
            name == format!("{id}.log") || name == format!("{id}.log.1"),
            "{name}"
        );
    }
    assert!(total <= 2 * cap, "{total}");
    assert!(total > cap, "rotation kept no old file: {total}");
    // The newest output is what is kept; the oldest is gone.
    let text = fs::read_to_string(&cur).unwrap();
    assert!(
        text.contains("line 49999 of a service"),
        "{}",
        &text[text.len() - 200..]
    );
    let old = fs::read_to_string(logs.join(format!("{id}.log.1"))).unwrap();
    assert!(!old.contains("line 0 of a service") && !text.contains("line 0 of a service"));
    // Whole lines in both files.
    assert!(text.ends_with('\n') && old.ends_with('\n'));
    assert_eq!(status(&e, id)["state"], "running");
}

#[test]
fn a_bad_service_log_max_is_refused_naming_the_key() {
    require_root!("runs appmgrd on a private dbus-daemon in its own mount namespace");
    let id = "org.example.DaemonLogCapBad";
    let e = setup(id, SERVICE_POLICY);
    fs::write(e.cfg.join("appmgr.toml"), "service-log-max = \"4Q\"\n").unwrap();
    let r = appmgrd_once(&e);
    assert_ne!(r.code, 0);
    assert!(
        r.stderr.contains("appmgr.toml") && r.stderr.contains("4Q"),
        "{}",
        r.stderr
    );
    assert!(!e.state.join("daemon/logs").exists());
}

#[test]
fn a_launch_the_launcher_refuses_fails_start_with_policy_refused() {
    require_root!("runs appmgrd on a private dbus-daemon in its own mount namespace");
    let id = "org.example.DaemonRefusedLaunch";
    let policy = SERVICE_POLICY.replace("autostart = true", "autostart = false");
    let e = setup(id, &policy);
    let b = service_bundle(
        &e,
        id,
        "1.0.0",
        "#!/usr/bin/sh\nexec busybox sleep 1000\n",
        "\n[service]\nready = \"started\"\n",
    );
    e.ok(&["--direct", "install", s(&b)]);
    // The app's HOME replaced by a symlink to a directory outside: the launcher refuses
    // (exit 4) before anything is created or chowned there.
    let outside = e.p("outside");
    fs::create_dir_all(&outside).unwrap();
    let data = e.state.join("data").join(id);
    let _ = fs::remove_dir_all(&data);
    fs::create_dir_all(data.parent().unwrap()).unwrap();
    std::os::unix::fs::symlink(&outside, &data).unwrap();
    let _d = Daemon::start(&e);
    let msg = e.fails(&["start", id], 4);
    assert!(
        msg.contains("refusing to launch") && msg.contains("symlink"),
        "{msg}"
    );
    let r = e.run(&["--json", "start", id]);
    assert_eq!(r.code, 4, "{}{}", r.stdout, r.stderr);
    assert!(r.stderr.contains("\"PolicyRefused\""), "{}", r.stderr);
    assert_eq!(fs::read_dir(&outside).unwrap().count(), 0);
    let m = fs::metadata(&outside).unwrap();
    assert_eq!(
        std::os::unix::fs::MetadataExt::uid(&m),
        0,
        "the outside directory was chowned"
    );
    assert_ne!(status(&e, id)["state"], "running");
}

#[test]
fn remote_installs_go_through_appmgrd() {
    require_root!("runs appmgrd on a private dbus-daemon in its own mount namespace");
    let id = "org.example.DaemonRemote";
    let e = setup(id, "");
    let reg = Registry::start(e.dir.path());
    let url = reg.url("fleet/apps");
    for (v, tree) in [("1.0.0", "r1"), ("2.0.0", "r2")] {
        let b = e.bundle(
            &app_manifest(v).replace("org.example.Hello", id),
            &mk_tree(&e, tree, 200_000),
            &format!("{tree}.bundle"),
        );
        e.ok(&["publish", s(&b), &url]);
    }
    e.ok(&["remote", "add", "fleet", &url]);
    let d = Daemon::start(&e);
    // Only root and operators may install or update from a remote; a refused caller
    // changes nothing, and a bad source or option is named.
    let before = e.snapshot();
    for (uid, groups, method, args, class) in [
        (
            65534,
            "",
            "InstallRemote",
            vec![format!("'fleet:{id}'"), "@a{sv} {}".to_string()],
            "AccessDenied",
        ),
        (
            65534,
            "",
            "Update",
            vec!["@as []".to_string(), "@a{sv} {}".to_string()],
            "AccessDenied",
        ),
        (
            0,
            "",
            "InstallRemote",
            vec![format!("'fleet:{id}'"), "{'speed': <1>}".to_string()],
            "InvalidArgs",
        ),
        (
            0,
            "",
            "InstallRemote",
            vec!["'nowhere:x'".to_string(), "@a{sv} {}".to_string()],
            "InvalidArgs",
        ),
        // Listing a remote goes to the network and keeps TUF state: root and operators.
        (
            65534,
            "",
            "RemoteLs",
            vec!["'fleet'".to_string()],
            "AccessDenied",
        ),
        (0, "", "RemoteLs", vec!["'../x'".to_string()], "InvalidArgs"),
        (0, "", "RemoteLs", vec!["'nowhere'".to_string()], "NotFound"),
    ] {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (r, _) = run_bounded(
            gdbus(&d, uid, groups, method, &args),
            Duration::from_secs(30),
        );
        assert_ne!(r.code, 0, "{method} {args:?}: {}", r.stdout);
        assert!(
            r.stderr.contains(&format!("org.appmgr.Error.{class}")),
            "{method} {args:?}: {}",
            r.stderr
        );
        assert_eq!(
            before,
            e.snapshot(),
            "{method} {args:?} changed the state dir"
        );
    }
    // What a remote offers, and the remotes, over D-Bus: the same JSON as the CLI's.
    let (r, _) = run_bounded(
        gdbus(&d, 0, "", "RemoteLs", &["'fleet'"]),
        Duration::from_secs(30),
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    let cli = e.ok(&["--json", "remote", "ls", "fleet"]).json();
    let offers = cli["offers"].as_array().unwrap();
    assert_eq!(offers.len(), 2, "{cli}");
    for o in offers {
        let digest = o["digest"].as_str().unwrap();
        assert!(r.stdout.contains(digest), "{} lacks {digest}", r.stdout);
    }
    let (r, _) = run_bounded(
        gdbus(&d, 65534, "", "RemoteList", &[]),
        Duration::from_secs(30),
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stdout.contains(&url), "{}", r.stdout);
    e.ok(&["install", &format!("fleet:{id}@1.0.0")]);
    assert_eq!(e.app_state_of(id), Some(("1.0.0".into(), None)));
    assert!(
        d.log().contains(&format!("installed app/{id}")),
        "{}",
        d.log()
    );
    let out = e.ok(&["--json", "install", &format!("fleet:{id}")]).json();
    assert_eq!(out["action"], "updated");
    assert_eq!(
        e.app_state_of(id),
        Some(("2.0.0".into(), Some("1.0.0".into())))
    );
    assert!(
        d.log().contains(&format!("updated app/{id}")),
        "{}",
        d.log()
    );
    // Refusals are the same through appmgrd as on the local path, and change nothing.
    let before = e.snapshot();
    same_output(&e, &["install", &format!("fleet:{id}@9.9.9")]);
    same_output(&e, &["install", &format!("fleet:{id}@1.0.0")]);
    assert_eq!(before, e.snapshot());
    // update: one InstallRemote per newer version, through appmgrd.
    let b3 = e.bundle(
        &app_manifest("3.0.0").replace("org.example.Hello", id),
        &mk_tree(&e, "r3", 200_000),
        "r3.bundle",
    );
    e.ok(&["publish", s(&b3), &url]);
    // With --wait each install carries its health verdict (this app is no service).
    let out = e.ok(&["--json", "update", "--wait", id]).json();
    assert_eq!(out["updated"][0]["remote"], "fleet", "{out}");
    assert_eq!(out["updated"][0]["health"]["verdict"], "none", "{out}");
    assert_eq!(out["updated"][0]["health"]["why"], "not a service", "{out}");
    assert_eq!(
        e.app_state_of(id),
        Some(("3.0.0".into(), Some("2.0.0".into())))
    );
    assert!(d.log().contains("from 2.0.0 to 3.0.0"), "{}", d.log());
}
