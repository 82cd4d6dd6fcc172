//! Every refused install leaves the store exactly as it was: same files in the state dir,
//! old version current and intact, fsck clean.
use appmgr_testkit::*;
use std::fs;

#[test]
fn corrupted_truncated_and_foreign_bundles() {
    require_root!("installs write root-owned files");
    let e = Env::with_demo_app();
    let good = fs::read(e.app_bundle("2.0.0")).unwrap();
    let bad = e.p("bad.bundle");
    // Flipped bytes in manifest, signature, payload and trailer regions.
    for off in [
        40usize,
        700,
        1100,
        2000,
        good.len() / 2,
        good.len() - 600,
        good.len() - 1,
    ] {
        let mut b = good.clone();
        b[off] ^= 0x80;
        fs::write(&bad, &b).unwrap();
        e.assert_refused_keeps_v1(&["install", s(&bad)], 3, "bad.bundle");
    }
    for n in [0usize, 100, 1536, good.len() / 2, good.len() - 1] {
        fs::write(&bad, &good[..n]).unwrap();
        e.assert_refused_keeps_v1(&["install", s(&bad)], 3, "bad.bundle");
    }
    fs::write(
        &bad,
        (0..50_000u32)
            .map(|i| (i * 7919 % 251) as u8)
            .collect::<Vec<_>>(),
    )
    .unwrap();
    e.assert_refused_keeps_v1(&["install", s(&bad)], 3, "bad.bundle");
}

#[test]
fn missing_bundle_file_is_not_found() {
    require_root!("installs write root-owned files");
    let e = Env::with_demo_app();
    // Exit 5, one line naming the path.
    let missing = e.p("does-not-exist.bundle");
    e.assert_refused_keeps_v1(&["install", s(&missing)], 5, s(&missing));
    // An empty stdin is a bad bundle, not a missing one.
    let before = e.snapshot();
    let r = e.run(&["install", "-"]);
    assert!(r.code != 0 && r.code != 5, "{}: {}", r.code, r.stderr);
    assert_eq!(before, e.snapshot());
}

/// The other architecture than this host's, for a bundle that cannot be installed here.
fn foreign_arch() -> &'static str {
    if arch() == "aarch64" {
        "x86_64"
    } else {
        "aarch64"
    }
}

#[test]
fn bundle_for_another_arch_is_refused_before_anything_is_written() {
    require_root!("installs write root-owned files");
    let e = Env::with_demo_app();
    let other = foreign_arch();
    // The app and its runtime reference carry the foreign arch.
    let manifest = app_manifest("2.0.0").replace(arch(), other);
    assert!(
        manifest.contains(&format!("arch = \"{other}\"")),
        "{manifest}"
    );
    fs::create_dir_all(e.p("foreign/bin")).unwrap();
    fs::write(e.p("foreign/bin/hello"), "#!/usr/bin/sh\n").unwrap();
    let app = e.bundle(&manifest, &e.p("foreign"), "foreign-app.bundle");
    let want = format!(
        "bundle org.example.Hello is for {other}, this host is {}",
        arch()
    );
    e.assert_refused_keeps_v1(&["install", s(&app)], 6, &want);
    let rt = e.bundle(
        &runtime_manifest("2.0.0").replace(arch(), other),
        &e.p("foreign"),
        "foreign-rt.bundle",
    );
    e.assert_refused_keeps_v1(&["install", s(&rt)], 6, other);
    // A fresh state dir stays as it was (nothing staged, no object, ref or record).
    let fresh = Env::new();
    let before = fresh.snapshot();
    let rt = fresh.bundle(
        &runtime_manifest("2.0.0").replace(arch(), other),
        &e.p("foreign"),
        "foreign-rt.bundle",
    );
    let msg = fresh.fails(&["install", s(&rt)], 6);
    assert!(msg.contains(other) && msg.contains(arch()), "{msg}");
    assert_eq!(before, fresh.snapshot());
}

/// `--json` anywhere before `--`: a usage error is exit 2 with the one line and the JSON
/// object on the next line, and changes nothing.
#[test]
fn usage_errors_are_json_with_json() {
    require_root!("installs write root-owned files");
    let e = Env::with_demo_app();
    let bundle = e.app_bundle("2.0.0");
    for args in [
        vec!["--json", "install"],
        vec!["install", "--json"],
        vec!["--json", "install", "--no-such-flag", s(&bundle)],
        vec!["install", s(&bundle), "--json", "--no-such-flag"],
        vec!["--json", "list", "extra"],
        vec!["--json", "no-such-command"],
        vec!["--json", "run", "org.example.Hello", "--bogus"],
    ] {
        let before = e.snapshot();
        let r = e.run(&args);
        assert_eq!(r.code, 2, "{args:?}: {}{}", r.stdout, r.stderr);
        let lines: Vec<&str> = r.stderr.lines().collect();
        assert_eq!(lines.len(), 2, "{args:?}: {:?}", r.stderr);
        let msg = lines[0]
            .strip_prefix("appmgr: ")
            .unwrap_or_else(|| panic!("{args:?}: {}", lines[0]));
        assert!(!msg.is_empty() && !msg.starts_with("error"), "{msg}");
        let j: serde_json::Value = serde_json::from_str(lines[1])
            .unwrap_or_else(|err| panic!("{args:?}: not JSON ({err}): {}", lines[1]));
        assert_eq!(j["error"]["code"], 2, "{j}");
        assert_eq!(j["error"]["class"], "InvalidArgs", "{j}");
        assert_eq!(j["error"]["message"], msg, "{j}");
        assert!(r.stdout.is_empty(), "{}", r.stdout);
        assert_eq!(before, e.snapshot(), "{args:?} changed the state dir");
    }
    // The missing argument and the unknown flag are named.
    assert!(e.run(&["--json", "install"]).stderr.contains("<FILE>"));
    assert!(e
        .run(&["--json", "install", "--no-such-flag", s(&bundle)])
        .stderr
        .contains("--no-such-flag"));
    // After `--` the arguments are the app's: `--json` there is not ours.
    let r = e.run(&["run", "org.example.Hello", "--bogus", "--", "--json"]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(!r.stderr.contains("{\"error\""), "{}", r.stderr);
    // --help and --version are unchanged: stdout, exit 0.
    for args in [
        vec!["--json", "--help"],
        vec!["install", "--help", "--json"],
        vec!["--json", "--version"],
    ] {
        let r = e.run(&args);
        assert_eq!(r.code, 0, "{args:?}: {}", r.stderr);
        assert!(!r.stdout.is_empty() && r.stderr.is_empty(), "{args:?}");
    }
    e.fsck_clean();
}

#[test]
fn untrusted_and_out_of_scope_signers() {
    require_root!("installs write root-owned files");
    let e = Env::with_demo_app();
    let v2 = e.app_bundle("2.0.0");
    // Signed by a key that is not trusted.
    let other = Env::new();
    let foreign = other.app_bundle("2.0.0");
    e.assert_refused_keeps_v1(&["install", s(&foreign)], 3, "trusted");
    // Key scoped to other IDs.
    e.ok(&[
        "trust",
        "add",
        s(&e.p("vendor.pub")),
        "--scope",
        "com.other.*",
    ]);
    e.assert_refused_keeps_v1(&["install", s(&v2)], 3, "org.example.Hello");
    // Key removed.
    e.ok(&["trust", "remove", "vendor"]);
    e.assert_refused_keeps_v1(&["install", s(&v2)], 3, "trusted");
}

#[test]
fn downgrade_and_policy_excess() {
    require_root!("installs write root-owned files");
    let e = Env::with_demo_app();
    e.ok(&["install", s(&e.app_bundle("2.0.0"))]);
    e.ok(&["rollback", "org.example.Hello"]);
    // now current 1.0.0, previous 2.0.0: installing 1.5.0 is a downgrade below 2.0.0
    let mid = e.app_bundle("1.5.0");
    let before = e.snapshot();
    let msg = e.fails(&["install", s(&mid)], 6);
    assert!(msg.contains("2.0.0"), "{msg}");
    assert_eq!(before, e.snapshot());
    e.fsck_clean();
}

#[test]
fn update_requesting_more_than_policy_grants_is_refused() {
    require_root!("installs write root-owned files");
    let e = Env::with_demo_app();
    // No policy files: nothing is granted, so an update asking for the network is refused
    // with the excess named and exit 4.
    let greedy = e.app_bundle_with(
        "2.0.0",
        "\n[permissions]\nnetwork = true\ndevices = [\"camera\"]\n",
    );
    e.assert_refused_keeps_v1(&["install", s(&greedy)], 4, "network");
    let msg = e.fails(&["install", s(&greedy)], 4);
    assert!(msg.contains("camera"), "{msg}");
    // A policy granting network (but not camera) still refuses, naming only camera.
    fs::create_dir_all(e.cfg.join("policies.d")).unwrap();
    fs::write(
        e.cfg.join("policies.d/50-net.toml"),
        "[[rule]]\napps = [\"org.example.*\"]\ngrant = { network = true }\n",
    )
    .unwrap();
    let msg = e.fails(&["install", s(&greedy)], 4);
    assert!(
        msg.contains("camera") && !msg.contains("network=true"),
        "{msg}"
    );
    // With on-excess = "drop" it installs and reports what was dropped.
    fs::write(
        e.cfg.join("policies.d/50-net.toml"),
        "[[rule]]\napps = [\"org.example.*\"]\ngrant = { network = true }\non-excess = \"drop\"\n",
    )
    .unwrap();
    let r = e.ok(&["--json", "install", s(&greedy)]);
    assert!(
        r.json()["dropped"].to_string().contains("camera"),
        "{}",
        r.stdout
    );
    // A broken policy file refuses (fail closed) and names file and line.
    fs::write(
        e.cfg.join("policies.d/60-bad.toml"),
        "[[rule]]\napps = [\"x.y\"]\nbogus = 1\n",
    )
    .unwrap();
    let msg = e.fails(&["install", s(&e.app_bundle("3.0.0"))], 4);
    assert!(msg.contains("60-bad.toml"), "{msg}");
}

#[test]
fn bad_manifests_are_refused_at_create() {
    let e = Env::new();
    let root = e.p("t");
    fs::create_dir_all(&root).unwrap();
    for (what, m) in [
        (
            "unknown key",
            format!("{}bogus = 1\n", app_manifest("1.0.0")),
        ),
        (
            "dup key",
            format!("{}id = \"org.x.Y\"\n", app_manifest("1.0.0")),
        ),
        (
            "slash id",
            app_manifest("1.0.0").replace("org.example.Hello", "org/../Hello"),
        ),
        (
            "dotdot arch",
            app_manifest("1.0.0").replace(&format!("arch = \"{}\"", arch()), "arch = \"..\""),
        ),
        (
            "wrong type",
            app_manifest("1.0.0").replace("\"1.0.0\"", "1"),
        ),
        (
            "nul",
            app_manifest("1.0.0").replace("\"hello\"", "\"he\\u0000llo\""),
        ),
    ] {
        let mp = e.p("bad.toml");
        fs::write(&mp, m).unwrap();
        let out = e.p("never.bundle");
        let r = e.run(&[
            "bundle",
            "create",
            "--manifest",
            s(&mp),
            "--root",
            s(&root),
            "--key",
            s(&e.key),
            "--out",
            s(&out),
        ]);
        assert_eq!(r.code, 3, "{what}: {}", r.stderr);
        assert!(r.stderr.contains("bad.toml"), "{what}: {}", r.stderr);
        assert!(!out.exists());
    }
    let mp = e.p("bad.toml");
    fs::write(&mp, b"id = \"\xff\"\n").unwrap();
    let r = e.run(&[
        "bundle",
        "create",
        "--manifest",
        s(&mp),
        "--root",
        s(&root),
        "--key",
        s(&e.key),
        "--out",
        s(&e.p("x")),
    ]);
    assert_eq!(r.code, 3, "{}", r.stderr);
    assert!(r.stderr.contains("UTF-8"), "{}", r.stderr);
}

#[test]
fn concurrent_operations_are_serialized() {
    require_root!("installs write root-owned files");
    let e = Env::with_demo_app();
    let bundles: Vec<_> = ["2.0.0", "3.0.0", "4.0.0", "5.0.0"]
        .iter()
        .map(|v| e.app_bundle(v))
        .collect();
    let mut children = Vec::new();
    for b in &bundles {
        children.push(
            e.cmd(&["install", "--allow-downgrade", s(b)])
                .spawn()
                .unwrap(),
        );
        children.push(
            e.cmd(&["--json", "list"])
                .stdout(std::process::Stdio::null())
                .spawn()
                .unwrap(),
        );
    }
    for mut c in children {
        assert!(c.wait().unwrap().success());
    }
    let (cur, prev) = e.app_state().unwrap();
    assert!(["2.0.0", "3.0.0", "4.0.0", "5.0.0"].contains(&cur.as_str()));
    assert!(prev.is_some());
    e.fsck_clean();
}

#[test]
fn a_held_store_lock_ends_in_a_bounded_one_line_error() {
    require_root!("installs write root-owned files");
    use std::process::{Command, Stdio};
    use std::time::{Duration, Instant};
    let e = Env::new();
    e.ok(&["install", e.runtime_bundle("1.0.0").to_str().unwrap()]);
    let lock = e.state.join("lock");
    let mut holder = Command::new("flock")
        .args(["-o", "-x", lock.to_str().unwrap(), "sleep", "120"])
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while Command::new("flock")
        .args(["-n", "-x", lock.to_str().unwrap(), "true"])
        .status()
        .unwrap()
        .success()
    {
        assert!(Instant::now() < deadline, "the lock was not taken");
        std::thread::sleep(Duration::from_millis(50));
    }
    let before = e.snapshot();
    let t = Instant::now();
    let mut c = e.cmd(&["--direct", "remove", "org.example.Platform"]);
    c.env("APPMGR_LOCK_WAIT", "1").stdin(Stdio::null());
    let mut child = c
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    while child.try_wait().unwrap().is_none() && t.elapsed() < Duration::from_secs(30) {
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let o = child.wait_with_output().unwrap();
    let took = t.elapsed();
    let _ = holder.kill();
    let _ = holder.wait();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(took < Duration::from_secs(10), "waited {took:?}");
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(err.contains("held by another process"), "{err}");
    assert_eq!(
        before,
        e.snapshot(),
        "a refused remove changed the state dir"
    );
}
