//! `appmgr-ops` is the store half of `appmgr`: it runs the store commands locally and
//! nothing else, and never goes around a running appmgrd (it holds no D-Bus client; the
//! `appmgr` executable routes).
use appmgr_testkit::*;
use std::fs;
use std::process::Command;

fn ops(e: &Env, args: &[&str]) -> Run {
    let out = Command::new(binary("appmgr-ops"))
        .args(["--state-dir", s(&e.state), "--config-dir", s(&e.cfg)])
        .args(args)
        .env_remove("APPMGR_STATE_DIR")
        .env_remove("APPMGR_CONFIG_DIR")
        .output()
        .unwrap();
    Run {
        code: out.status.code().unwrap_or(128 + 9),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

#[test]
fn appmgr_ops_refuses_every_command_but_the_store_commands() {
    let e = Env::new();
    let before = e.snapshot();
    let key = e.p("other");
    for args in [
        vec!["key", "generate", "--out", s(&key)],
        vec!["run", "org.example.Hello"],
        vec!["ps"],
        vec!["board", "show"],
    ] {
        let r = ops(&e, &args);
        assert_eq!(r.code, 2, "appmgr-ops {args:?}: {}{}", r.stdout, r.stderr);
        assert_eq!(
            r.stderr.trim_end(),
            "appmgr: appmgr-ops runs the store commands only (install, list, info, remove, \
             rollback, fsck): run this command with appmgr",
            "appmgr-ops {args:?}"
        );
        assert!(r.stdout.is_empty(), "{}", r.stdout);
    }
    assert!(!e.p("other.key").exists() && !e.p("other.pub").exists());
    assert_eq!(before, e.snapshot());
    // The JSON form of the refusal, as for every other error.
    let r = ops(&e, &["--json", "ps"]);
    assert_eq!(r.code, 2);
    let err: serde_json::Value = serde_json::from_str(r.stderr.lines().nth(1).unwrap()).unwrap();
    assert_eq!(err["error"]["class"], "InvalidArgs");
    assert_eq!(err["error"]["code"], 2);
}

#[test]
fn appmgr_ops_does_not_install_around_a_running_appmgrd() {
    require_root!("installs apps (uids, ownership)");
    let e = Env::new();
    let rt = e.runtime_bundle("1.0.0");
    e.ok(&["install", s(&rt)]);
    let app = e.app_bundle("1.0.0");
    // What appmgrd holds while it runs: an exclusive lock on STATE/daemon/lock.
    let dir = e.state.join("daemon");
    fs::create_dir_all(&dir).unwrap();
    let lock = fs::File::create(dir.join("lock")).unwrap();
    lock.lock().unwrap();
    let before = e.snapshot();
    let r = ops(&e, &["install", s(&app)]);
    assert_eq!(r.code, 1, "{}{}", r.stdout, r.stderr);
    assert_eq!(
        r.stderr.trim_end(),
        format!(
            "appmgr: appmgrd serves {}: run the command with appmgr, which sends it to \
             appmgrd (appmgr-ops runs store commands locally only)",
            e.state.display()
        )
    );
    assert_eq!(before, e.snapshot(), "a refused install changed the state");
    // The daemon gone (appmgr itself would wait for it), nothing is installed, and the
    // same install succeeds: the refusal was the lock's, not the bundle's.
    drop(lock);
    assert_eq!(e.app_state(), None);
    let r = ops(&e, &["install", s(&app)]);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    assert_eq!(e.app_state(), Some(("1.0.0".into(), None)));
}
