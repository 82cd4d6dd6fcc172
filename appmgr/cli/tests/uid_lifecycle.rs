//! The uid of an app ID across remove and reinstall, end to end with the real sandbox: a
//! removed app's uid goes to no other app, a reinstall gets it back and reads the HOME it
//! wrote before the remove, a remove is refused while the app runs, and an exhausted
//! `uid-range` is a clean refusal.
use appmgr_testkit::*;
use std::fs;
use std::path::PathBuf;
use std::time::{Duration, Instant};

const SCRIPT: &str = r#"#!/usr/bin/sh
case "$1" in
  write) echo "$2" > "$HOME/secret" && id -u ;;
  read) cat "$HOME/secret" && id -u ;;
  sleep) echo started; sleep "$2" ;;
  *) echo "usage" ; exit 2 ;;
esac
"#;

const POLICY: &str =
    "[[rule]]\napps = [\"ID\"]\nresources = { memory-max = \"32M\", pids-max = 32 }\n";

/// A runtime and the bundle of app `id` (not installed yet). Each test uses its own IDs:
/// cgroups are host-wide, and tests run in parallel.
fn env_with_runtime() -> Env {
    let e = Env::new();
    e.ok(&["install", s(&e.runtime_bundle("1.0.0"))]);
    e
}

fn app_bundle(e: &Env, id: &str) -> PathBuf {
    let root = e.p("uidapp");
    if !root.exists() {
        fs::create_dir_all(root.join("bin")).unwrap();
        fs::write(root.join("bin/hello"), SCRIPT).unwrap();
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(root.join("bin/hello"), fs::Permissions::from_mode(0o755)).unwrap();
    }
    e.bundle(
        &app_manifest("1.0.0").replace("org.example.Hello", id),
        &root,
        &format!("{id}.bundle"),
    )
}

fn allow(e: &Env, ids: &[&str]) {
    fs::create_dir_all(e.cfg.join("policies.d")).unwrap();
    let rules: String = ids.iter().map(|id| POLICY.replace("ID", id)).collect();
    fs::write(e.cfg.join("policies.d/50-test.toml"), rules).unwrap();
}

fn uid(e: &Env, id: &str) -> u64 {
    e.ok(&["--json", "info", id]).json()["uid"]
        .as_u64()
        .unwrap()
}

#[test]
fn reinstalled_app_gets_its_uid_back_and_reads_its_home() {
    require_root!("namespaces, cgroups");
    let a = "org.example.UidReinstalledA";
    let b = "org.example.UidReinstalledB";
    let e = env_with_runtime();
    allow(&e, &[a, b]);
    let (ba, bb) = (app_bundle(&e, a), app_bundle(&e, b));
    e.ok(&["install", s(&ba)]);
    let ua = uid(&e, a);
    let r = e.ok(&["run", a, "--", "write", "a-secret"]);
    assert_eq!(r.stdout, format!("{ua}\n"));

    let out = e.ok(&["remove", a]).stdout;
    assert!(out.contains(&format!("uid {ua}")), "{out}");
    let home = e.state.join("data").join(a);
    assert!(home.join("secret").exists(), "HOME is kept at remove");

    e.ok(&["install", s(&bb)]);
    let ub = uid(&e, b);
    assert_ne!(ub, ua, "the removed app's uid went to another app");
    // B, running as its own uid, cannot open A's HOME even from the host side.
    use std::os::unix::fs::MetadataExt;
    assert_eq!(fs::metadata(&home).unwrap().uid() as u64, ua);

    e.ok(&["install", s(&ba)]);
    assert_eq!(uid(&e, a), ua, "a reinstall gets its uid back");
    let r = e.ok(&["run", a, "--", "read"]);
    assert_eq!(r.stdout, format!("a-secret\n{ua}\n"));
    let r = e.ok(&["run", b, "--", "write", "b-secret"]);
    assert_eq!(r.stdout, format!("{ub}\n"));
    e.fsck_clean();
}

#[test]
fn remove_is_refused_while_the_app_runs() {
    require_root!("namespaces, cgroups");
    let id = "org.example.UidRemoveWhileRunning";
    let e = env_with_runtime();
    allow(&e, &[id]);
    e.ok(&["install", s(&app_bundle(&e, id))]);
    let mut child = e
        .cmd(&["run", id, "--", "sleep", "30"])
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let t = Instant::now();
    while !e.ok(&["--json", "ps"]).stdout.contains(id) {
        assert!(t.elapsed() < Duration::from_secs(10), "app did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    let before = e.snapshot();
    let msg = e.fails(&["remove", id], 6);
    assert!(msg.contains("running") && msg.contains(id), "{msg}");
    assert_eq!(
        e.snapshot(),
        before,
        "a refused remove changed the state dir"
    );
    assert_eq!(e.app_state_of(id), Some(("1.0.0".into(), None)));

    e.ok(&["kill", id]);
    assert!(!child.wait().unwrap().success());
    // Once stopped (the launcher removes the cgroup as it exits), the remove goes through.
    let t = Instant::now();
    loop {
        let r = e.run(&["remove", id]);
        if r.code == 0 {
            break;
        }
        assert_eq!(r.code, 6, "{}", r.stderr);
        assert!(t.elapsed() < Duration::from_secs(10), "{}", r.stderr);
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(e.app_state_of(id), None);
    e.fsck_clean();
}

#[test]
fn exhausted_uid_range_is_refused_and_writes_nothing() {
    require_root!("installs write root-owned files");
    let e = env_with_runtime();
    fs::create_dir_all(&e.cfg).unwrap();
    fs::write(e.cfg.join("appmgr.toml"), "uid-range = \"70000-70001\"\n").unwrap();
    let ids = [
        "org.example.UidExhaustA",
        "org.example.UidExhaustB",
        "org.example.UidExhaustC",
    ];
    let bundles: Vec<PathBuf> = ids.iter().map(|id| app_bundle(&e, id)).collect();
    e.ok(&["install", s(&bundles[0])]);
    e.ok(&["install", s(&bundles[1])]);
    assert_eq!((uid(&e, ids[0]), uid(&e, ids[1])), (70000, 70001));
    // Removing does not give a uid back to the pool.
    e.ok(&["remove", ids[1]]);
    let before = e.snapshot();
    let msg = e.fails(&["install", s(&bundles[2])], 1);
    assert!(
        msg.contains(ids[2]) && msg.contains("uid-range 70000-70001"),
        "{msg}"
    );
    assert_eq!(
        e.snapshot(),
        before,
        "a refused install changed the state dir"
    );
    // The app that owns the uid comes back with it.
    e.ok(&["install", s(&bundles[1])]);
    assert_eq!(uid(&e, ids[1]), 70001);
    e.fsck_clean();
}
