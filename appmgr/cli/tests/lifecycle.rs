//! Install, update, rollback, remove through the real binary, with the JSON contract.
use appmgr_testkit::*;

#[test]
fn install_update_rollback_remove() {
    require_root!("installs write root-owned files");
    let e = Env::new();
    let rt = e.runtime_bundle("1.0.0");
    let v1 = e.app_bundle("1.0.0");
    let v2 = e.app_bundle("2.0.0");

    // An app whose runtime is missing is refused, naming the runtime; nothing written.
    e.ok(&["fsck"]); // creates the empty store (list only reads records)
    let before = e.snapshot();
    let msg = e.fails(&["install", s(&v1)], 5);
    assert!(msg.contains("runtime/org.example.Platform"), "{msg}");
    assert_eq!(before, e.snapshot());

    e.ok(&["install", s(&rt)]);
    let r = e.ok(&["--json", "install", s(&v1)]);
    let j = r.json();
    for k in ["id", "kind", "version", "arch", "branch"] {
        assert!(j.get(k).is_some(), "install --json lacks {k}: {j}");
    }
    assert_eq!(j["version"], "1.0.0");
    assert_eq!(e.app_state(), Some(("1.0.0".into(), None)));
    let uid1 = e.ok(&["--json", "info", "org.example.Hello"]).json()["uid"].clone();
    assert!(uid1.as_u64().is_some(), "apps get a uid: {uid1}");

    // Update: installing a newer version; the old one is kept as previous.
    let r = e.ok(&["install", s(&v2)]);
    assert!(
        r.stdout.contains("updated app/org.example.Hello/")
            && r.stdout.contains("from 1.0.0 to 2.0.0"),
        "{}",
        r.stdout
    );
    assert_eq!(e.app_state(), Some(("2.0.0".into(), Some("1.0.0".into()))));
    let info = e.ok(&["--json", "info", "org.example.Hello"]).json();
    assert_eq!(info["previous-version"], "1.0.0");
    assert_eq!(info["uid"], uid1, "uid is stable across updates");
    let files = std::path::PathBuf::from(info["deployment"].as_str().unwrap());
    assert_eq!(
        std::fs::read_to_string(files.join("share/version")).unwrap(),
        "2.0.0"
    );

    // Deployed files are root-owned, not writable by others, no setuid.
    use std::os::unix::fs::MetadataExt;
    for f in ["bin/hello", "share/data"] {
        let m = std::fs::metadata(files.join(f)).unwrap();
        assert_eq!((m.uid(), m.gid()), (0, 0));
        assert_eq!(m.mode() & 0o7022, 0, "{f} mode {:o}", m.mode());
    }

    // list --json carries the contract fields for apps and runtimes.
    let list = e.ok(&["--json", "list"]).json();
    let arr = list.as_array().unwrap();
    assert_eq!(arr.len(), 2);
    for o in arr {
        for k in ["id", "kind", "version", "arch", "branch"] {
            assert!(o.get(k).is_some(), "list entry lacks {k}: {o}");
        }
    }

    // Rollback swaps current and previous; a second rollback rolls forward.
    e.ok(&["rollback", "org.example.Hello"]);
    assert_eq!(e.app_state(), Some(("1.0.0".into(), Some("2.0.0".into()))));
    e.ok(&["rollback", "org.example.Hello"]);
    assert_eq!(e.app_state(), Some(("2.0.0".into(), Some("1.0.0".into()))));

    // The runtime cannot be removed while the app uses it; nothing changes.
    let before = e.snapshot();
    let msg = e.fails(&["remove", "org.example.Platform"], 6);
    assert!(msg.contains("org.example.Hello"), "{msg}");
    assert_eq!(before, e.snapshot());

    e.ok(&["remove", "org.example.Hello"]);
    assert_eq!(e.app_state(), None);
    e.fails(&["info", "org.example.Hello"], 5);
    e.fails(&["remove", "org.example.Hello"], 5);
    e.ok(&["remove", "org.example.Platform"]);
    assert_eq!(e.ok(&["--json", "list"]).json(), serde_json::json!([]));
    e.fsck_clean();
}

#[test]
fn downgrade_refused_even_after_remove_unless_allowed() {
    require_root!("installs write root-owned files");
    let e = Env::new();
    e.ok(&["install", s(&e.runtime_bundle("1.0.0"))]);
    let v1 = e.app_bundle("1.0.0");
    e.ok(&["install", s(&e.app_bundle("2.0.0"))]);
    let before = e.snapshot();
    let msg = e.fails(&["install", s(&v1)], 6);
    assert!(msg.contains("2.0.0") && msg.contains("1.0.0"), "{msg}");
    assert_eq!(before, e.snapshot());
    e.ok(&["remove", "org.example.Hello"]);
    let before = e.snapshot();
    e.fails(&["install", s(&v1)], 6);
    assert_eq!(before, e.snapshot());
    e.ok(&["install", "--allow-downgrade", s(&v1)]);
    assert_eq!(e.app_state(), Some(("1.0.0".into(), None)));
    e.fsck_clean();
}

#[test]
fn shared_files_are_stored_once() {
    require_root!("installs write root-owned files");
    let e = Env::new();
    e.ok(&["install", s(&e.runtime_bundle("1.0.0"))]);
    e.ok(&["install", s(&e.app_bundle("1.0.0"))]);
    e.ok(&["install", s(&e.app_bundle("2.0.0"))]);
    let info = e.ok(&["--json", "info", "org.example.Hello"]).json();
    use std::os::unix::fs::MetadataExt;
    let cur = std::path::PathBuf::from(info["deployment"].as_str().unwrap());
    let prev = std::path::PathBuf::from(info["previous"]["deployment"].as_str().unwrap());
    let a = std::fs::metadata(cur.join("share/data")).unwrap();
    let b = std::fs::metadata(prev.join("share/data")).unwrap();
    assert_eq!(
        (a.dev(), a.ino()),
        (b.dev(), b.ino()),
        "identical file must be one inode"
    );
    let c = std::fs::metadata(cur.join("share/version")).unwrap();
    let d = std::fs::metadata(prev.join("share/version")).unwrap();
    assert_ne!(c.ino(), d.ino());
}

#[test]
fn key_trust_and_bundle_commands() {
    let e = Env::new();
    let list = e.ok(&["--json", "trust", "list"]).json();
    assert_eq!(list[0]["name"], "vendor");
    let fp = list[0]["fingerprint"].as_str().unwrap().to_string();
    // Secret key is 0600.
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&e.key).unwrap().permissions().mode() & 0o777,
        0o600
    );
    // key generate refuses to overwrite.
    e.fails(&["key", "generate", "--out", s(&e.p("vendor"))], 6);
    let b = e.app_bundle("1.0.0");
    let ins = e.ok(&["--json", "bundle", "inspect", s(&b)]).json();
    assert_eq!(ins["id"], "org.example.Hello");
    assert_eq!(ins["signature-checked"], false);
    let v = e.ok(&["--json", "bundle", "verify", s(&b)]).json();
    assert_eq!(v["signed-by"], "vendor");
    // Scope the key to other IDs: verify and install refuse.
    e.ok(&[
        "trust",
        "add",
        s(&e.p("vendor.pub")),
        "--scope",
        "com.other.*",
    ]);
    let msg = e.fails(&["bundle", "verify", s(&b)], 3);
    assert!(msg.contains("scope"), "{msg}");
    e.ok(&["trust", "remove", &fp]);
    e.fails(&["bundle", "verify", s(&b)], 3);
    e.fails(&["trust", "remove", "vendor"], 5);
    // Bad scope glob is a usage error.
    e.fails(
        &["trust", "add", s(&e.p("vendor.pub")), "--scope", "a/b"],
        2,
    );
    // --json errors carry a JSON object too.
    let r = e.run(&["--json", "bundle", "verify", s(&b)]);
    assert_eq!(r.code, 3);
    let last = r.stderr.lines().last().unwrap();
    let obj: serde_json::Value = serde_json::from_str(last).unwrap();
    assert_eq!(obj["error"]["code"], 3);
}

#[test]
fn bundle_from_build_system_tar() {
    let e = Env::new();
    let root = e.p("tree");
    std::fs::create_dir_all(root.join("bin")).unwrap();
    std::fs::write(root.join("bin/hello"), "x").unwrap();
    let tarp = e.p("tree.tar");
    assert!(std::process::Command::new("tar")
        .args(["-C", s(&root), "-cf", s(&tarp), "."])
        .status()
        .unwrap()
        .success());
    let m = e.p("m.toml");
    std::fs::write(&m, app_manifest("1.0.0")).unwrap();
    let out = e.p("fromtar.bundle");
    e.ok(&[
        "bundle",
        "create",
        "--manifest",
        s(&m),
        "--payload",
        s(&tarp),
        "--key",
        s(&e.key),
        "--out",
        s(&out),
    ]);
    e.ok(&["bundle", "verify", s(&out)]);
    // Usage errors exit 2.
    assert_eq!(
        e.run(&[
            "bundle",
            "create",
            "--manifest",
            s(&m),
            "--key",
            s(&e.key),
            "--out",
            s(&out)
        ])
        .code,
        2
    );
    assert_eq!(e.run(&["no-such-command"]).code, 2);
}
