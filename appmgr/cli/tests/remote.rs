//! Remotes against Debian's real docker-registry on 127.0.0.1 (docs/remotes.md):
//! publish, `remote ls`, installs and updates streamed from the registry, and every
//! refusal (untrusted, tampered, resized, mixed-and-matched, endless, slow) leaving the
//! state dir exactly as it was.
use appmgr_testkit::*;
use std::fs;
use std::path::{Path, PathBuf};

const REPO: &str = "fleet/apps";

fn add_remote(e: &Env, name: &str, url: &str) {
    e.ok(&["remote", "add", name, url]);
}

fn tag(id: &str, version: &str) -> String {
    format!("{id}_{}_{version}", arch())
}

#[test]
fn publish_list_install_and_update_from_a_registry() {
    require_root!("installs write root-owned files");
    let e = Env::new();
    let reg = Registry::start(e.dir.path());
    let url = reg.url(REPO);
    let rt = e.runtime_bundle("1.0.0");
    let a1 = e.app_bundle("1.0.0");
    let a2 = e.app_bundle("2.0.0");
    for b in [&rt, &a1, &a2] {
        e.ok(&["publish", s(b), &url]);
    }
    // The layer is the bundle file byte for byte, and the annotations carry its fields.
    let m = reg.manifest(REPO, &tag("org.example.Hello", "2.0.0"));
    assert_eq!(m["artifactType"], "application/vnd.appmgr.bundle.v1");
    assert_eq!(
        m["layers"][0]["digest"],
        format!("sha256:{}", sha256_file(&a2))
    );
    assert_eq!(m["layers"][0]["size"], fs::metadata(&a2).unwrap().len());
    assert_eq!(m["annotations"]["org.appmgr.id"], "org.example.Hello");
    assert_eq!(m["annotations"]["org.appmgr.version"], "2.0.0");
    // Publishing again uploads nothing new and names the same digest.
    let again = e.ok(&["--json", "publish", s(&a2), &url]).json();
    assert_eq!(again["digest"], m["layers"][0]["digest"]);

    add_remote(&e, "fleet", &url);
    let listed = e.ok(&["--json", "remote", "list"]).json();
    assert_eq!(listed[0]["name"], "fleet");
    assert_eq!(listed[0]["url"], url);
    assert!(e.cfg.join("remotes.d/fleet.toml").is_file());

    let ls = e.ok(&["--json", "remote", "ls", "fleet"]).json();
    let offers = ls["offers"].as_array().unwrap();
    assert_eq!(offers.len(), 3, "{ls}");
    assert!(offers.iter().all(|o| o["trusted"] == true), "{ls}");
    let versions: Vec<_> = offers
        .iter()
        .filter(|o| o["id"] == "org.example.Hello")
        .map(|o| o["version"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(versions, ["1.0.0", "2.0.0"]);
    assert_eq!(offers[0]["signer"], "vendor");

    e.ok(&["install", "fleet:org.example.Platform"]);
    // A version named is that version, not the newest.
    let out = e
        .ok(&["--json", "install", "fleet:org.example.Hello@1.0.0"])
        .json();
    assert_eq!(out["action"], "installed");
    assert_eq!(e.app_state(), Some(("1.0.0".into(), None)));
    let run = e.ok(&["run", "org.example.Hello"]);
    assert_eq!(run.stdout, "hello 1.0.0\n");
    // Without a version: the highest trusted one.
    let out = e
        .ok(&["--json", "install", "fleet:org.example.Hello"])
        .json();
    assert_eq!(out["action"], "updated");
    assert_eq!(e.app_state(), Some(("2.0.0".into(), Some("1.0.0".into()))));
    assert_eq!(e.ok(&["run", "org.example.Hello"]).stdout, "hello 2.0.0\n");
    // The remote cannot roll the app back: the downgrade record holds.
    let before = e.snapshot();
    let msg = e.fails(&["install", "fleet:org.example.Hello@1.0.0"], 6);
    assert!(msg.contains("downgrade") || msg.contains("lower"), "{msg}");
    assert_eq!(before, e.snapshot());
    // Nothing of that version is offered.
    let msg = e.fails(&["install", "fleet:org.example.Hello@9.9.9"], 5);
    assert!(
        msg.contains("offers no trusted org.example.Hello@9.9.9"),
        "{msg}"
    );
    assert_eq!(before, e.snapshot());
    e.fsck_clean();

    e.ok(&["remote", "remove", "fleet"]);
    assert!(!e.cfg.join("remotes.d/fleet.toml").exists());
    assert_eq!(
        e.ok(&["--json", "remote", "list"]).json(),
        serde_json::json!([])
    );
}

#[test]
fn bad_remote_arguments_are_refused_and_change_no_config() {
    let e = Env::new();
    let conf = || {
        let d = e.cfg.join("remotes.d");
        let mut v: Vec<_> = fs::read_dir(&d)
            .map(|r| r.map(|x| x.unwrap().file_name()).collect())
            .unwrap_or_default();
        v.sort();
        v
    };
    for (args, code, needle) in [
        (
            vec!["remote", "add", "Fleet", "oci://127.0.0.1:5000/apps"],
            2,
            "not a valid remote name",
        ),
        (
            vec!["remote", "add", "fleet", "http://127.0.0.1:5000/apps"],
            2,
            "not an oci:// reference",
        ),
        (
            vec!["remote", "add", "fleet", "oci://127.0.0.1:5000/Apps"],
            2,
            "bad repository name",
        ),
        (
            vec!["remote", "add", "fleet", "oci://127.0.0.1:5000/apps:v1"],
            2,
            "without a tag",
        ),
        (vec!["remote", "remove", "fleet"], 5, "no remote fleet"),
        (vec!["remote", "ls", "fleet"], 5, "no remote fleet"),
        (
            vec![
                "publish",
                "/nonexistent.bundle",
                "oci://127.0.0.1:5000/apps",
            ],
            5,
            "No such file",
        ),
        (
            vec!["publish", "/nonexistent.bundle", "127.0.0.1:5000/apps"],
            2,
            "oci://",
        ),
        (
            vec![
                "remote",
                "add",
                "fleet",
                "oci://127.0.0.1:5000/apps",
                "--credentials",
                "/etc/passwd",
            ],
            2,
            "never sent over plain http",
        ),
    ] {
        let before = conf();
        let msg = e.fails(&args, code);
        assert!(
            msg.contains(needle),
            "{args:?}: {msg:?} should name {needle:?}"
        );
        assert_eq!(before, conf());
    }
    e.ok(&["remote", "add", "fleet", "oci://127.0.0.1:5000/apps"]);
    let msg = e.fails(&["remote", "add", "fleet", "oci://127.0.0.1:5001/other"], 6);
    assert!(msg.contains("exists already"), "{msg}");
    assert_eq!(
        fs::read_to_string(e.cfg.join("remotes.d/fleet.toml")).unwrap(),
        "url = \"oci://127.0.0.1:5000/apps\"\n"
    );
    // A malformed remote file is named.
    fs::write(
        e.cfg.join("remotes.d/bad.toml"),
        "url = \"oci://x/y\"\nspeed = 1\n",
    )
    .unwrap();
    let msg = e.fails(&["remote", "list"], 2);
    assert!(msg.contains("bad.toml") && msg.contains("speed"), "{msg}");
}

#[test]
fn refused_offers_install_nothing() {
    require_root!("installs write root-owned files");
    let e = Env::with_demo_app();
    let reg = Registry::start(e.dir.path());
    let url = reg.url(REPO);
    add_remote(&e, "fleet", &url);

    // Signed by a key the device does not trust.
    e.ok(&["key", "generate", "--out", s(&e.p("rogue"))]);
    let root2 = e.p("app-2.0.0");
    let _ = e.app_bundle("2.0.0");
    let rogue = e.bundle_signed(
        &app_manifest("2.0.0"),
        &root2,
        "rogue-2.0.0.bundle",
        &e.p("rogue.key"),
        &[],
    );
    e.ok(&["publish", s(&rogue), &format!("{url}:rogue")]);
    let ls = e.ok(&["--json", "remote", "ls", "fleet"]).json();
    assert_eq!(ls["offers"][0]["trusted"], false, "{ls}");
    assert_eq!(ls["offers"][0]["id"], "org.example.Hello", "{ls}");
    assert!(ls["offers"][0].get("signer").is_none(), "{ls}");
    assert!(
        ls["offers"][0]["refused"]
            .as_str()
            .unwrap()
            .contains("trusted key"),
        "{ls}"
    );
    e.assert_refused_keeps_v1(&["install", "fleet:org.example.Hello"], 3, "trusted key");
    e.assert_refused_keeps_v1(
        &["install", "fleet:org.example.Hello@2.0.0"],
        3,
        "trusted key",
    );
}

/// Publishes app 2.0.0 genuinely, then replaces its tag with `manifest` edited by `edit`
/// and `blob` as the layer.
fn republish(reg: &Registry, e: &Env, blob: &Path, edit: impl FnOnce(&mut serde_json::Value)) {
    let t = tag("org.example.Hello", "2.0.0");
    let mut m = reg.manifest(REPO, &t);
    m["layers"][0]["digest"] = format!("sha256:{}", sha256_file(blob)).into();
    m["layers"][0]["size"] = fs::metadata(blob).unwrap().len().into();
    edit(&mut m);
    reg.push_raw(REPO, &t, blob, &m);
    let _ = e;
}

#[test]
fn tampered_resized_and_mixed_artifacts_install_nothing() {
    require_root!("installs write root-owned files");
    let e = Env::with_demo_app();
    let reg = Registry::start(e.dir.path());
    let url = reg.url(REPO);
    add_remote(&e, "fleet", &url);
    let good = e.app_bundle("2.0.0");
    e.ok(&["publish", s(&good), &url]);
    let bytes = fs::read(&good).unwrap();

    // Arbitrary software: one payload byte changed, same size, the layer digest matching.
    let mut t = bytes.clone();
    let at = t.len() - 1024 - 700;
    t[at] ^= 0x55;
    let tampered = e.p("tampered.bundle");
    fs::write(&tampered, &t).unwrap();
    republish(&reg, &e, &tampered, |_| {});
    e.assert_refused_keeps_v1(&["install", "fleet:org.example.Hello"], 3, "fleet:");

    // Endless data: the layer claims more than the signed manifest implies.
    let mut long = bytes.clone();
    long.extend(std::iter::repeat_n(0u8, 1 << 20));
    let longp = e.p("long.bundle");
    fs::write(&longp, &long).unwrap();
    republish(&reg, &e, &longp, |_| {});
    let ls = e.ok(&["--json", "remote", "ls", "fleet"]).json();
    assert!(
        ls["offers"][0]["refused"]
            .as_str()
            .unwrap()
            .contains("implies"),
        "{ls}"
    );
    e.assert_refused_keeps_v1(&["install", "fleet:org.example.Hello"], 3, "implies");

    // Mix and match: a genuine, trusted bundle of the same size under another bundle's
    // signed listing.
    let other_root = e.p("app-2.0.0-other");
    fs::create_dir_all(other_root.join("bin")).unwrap();
    fs::create_dir_all(other_root.join("share")).unwrap();
    fs::copy(e.p("app-2.0.0/bin/hello"), other_root.join("bin/hello")).unwrap();
    fs::write(other_root.join("share/data"), vec![b'x'; 100_000]).unwrap();
    fs::write(other_root.join("share/version"), "2.0.0").unwrap();
    let none = ["--compression", "none"];
    let other = e.bundle_signed(
        &app_manifest("2.0.0"),
        &other_root,
        "other.bundle",
        &e.key,
        &none,
    );
    let good_none = e.bundle_signed(
        &app_manifest("2.0.0"),
        &e.p("app-2.0.0"),
        "good-none.bundle",
        &e.key,
        &none,
    );
    assert_eq!(
        fs::metadata(&other).unwrap().len(),
        fs::metadata(&good_none).unwrap().len()
    );
    e.ok(&["publish", s(&good_none), &url]);
    republish(&reg, &e, &other, |_| {});
    e.assert_refused_keeps_v1(
        &["install", "fleet:org.example.Hello"],
        3,
        "not the one its listing carries",
    );
    // The genuine artifact still installs.
    e.ok(&["publish", s(&good), &url]);
    e.ok(&["install", "fleet:org.example.Hello"]);
    assert_eq!(e.app_state(), Some(("2.0.0".into(), Some("1.0.0".into()))));
}

/// A larger, incompressible app 2.0.0 (about 1 MiB), published to a real registry so its
/// genuine image manifest can be served by a [`FaultyServer`].
fn big_app(e: &Env) -> (PathBuf, Vec<u8>) {
    let root = e.p("big-2.0.0");
    fs::create_dir_all(root.join("bin")).unwrap();
    fs::create_dir_all(root.join("share")).unwrap();
    fs::write(root.join("bin/hello"), "#!/usr/bin/sh\necho hello big\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(root.join("bin/hello"), fs::Permissions::from_mode(0o755)).unwrap();
    let mut data = vec![0u8; 1 << 20];
    let mut x: u64 = 0x9e3779b97f4a7c15;
    for b in data.iter_mut() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = x as u8;
    }
    fs::write(root.join("share/data"), data).unwrap();
    fs::write(root.join("share/version"), "2.0.0").unwrap();
    let b = e.bundle(&app_manifest("2.0.0"), &root, "big.bundle");
    let reg = Registry::start(e.dir.path());
    e.ok(&["publish", s(&b), &reg.url(REPO)]);
    let mut m = reg.manifest(REPO, &tag("org.example.Hello", "2.0.0"));
    // Without its file index: these tests are about the bundle's own stream (the server
    // serves one blob for every digest).
    let ann = m["layers"][0]["annotations"].as_object_mut().unwrap();
    assert!(ann.remove("org.appmgr.files-index.digest").is_some());
    ann.remove("org.appmgr.files-index.size");
    (b, serde_json::to_vec(&m).unwrap())
}

fn faulty_remote(e: &Env, fault: Fault, extra: &str) -> FaultyServer {
    let (b, manifest) = big_app(e);
    let srv = FaultyServer::start(
        REPO,
        &tag("org.example.Hello", "2.0.0"),
        manifest,
        fs::read(b).unwrap(),
        fault,
    );
    let d = e.cfg.join("remotes.d");
    fs::create_dir_all(&d).unwrap();
    fs::write(
        d.join("flaky.toml"),
        format!("url = \"{}\"\n{extra}", srv.url(REPO)),
    )
    .unwrap();
    srv
}

#[test]
fn a_cut_download_resumes_where_it_stopped() {
    require_root!("installs write root-owned files");
    let e = Env::with_demo_app();
    let srv = faulty_remote(&e, Fault::CutFirstAt(300_000), "");
    e.ok(&["install", "flaky:org.example.Hello"]);
    assert_eq!(e.app_state(), Some(("2.0.0".into(), Some("1.0.0".into()))));
    let reqs = srv.blob_requests();
    assert_eq!(reqs, [None, Some("bytes=300000-".to_string())], "{reqs:?}");
    e.fsck_clean();
}

#[test]
fn endless_data_is_read_only_to_the_signed_length() {
    require_root!("installs write root-owned files");
    let e = Env::with_demo_app();
    let srv = faulty_remote(&e, Fault::Endless, "");
    let (r, took) = run_bounded(
        e.cmd(&["install", "flaky:org.example.Hello"]),
        std::time::Duration::from_secs(60),
    );
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    assert!(took < std::time::Duration::from_secs(30), "took {took:?}");
    assert_eq!(e.app_state(), Some(("2.0.0".into(), Some("1.0.0".into()))));
    assert_eq!(srv.blob_requests().len(), 1);
}

#[test]
fn a_slow_retrieval_is_refused_and_installs_nothing() {
    require_root!("installs write root-owned files");
    let e = Env::with_demo_app();
    // 20 KiB/s served, 200 KiB/s required over each 1 s window.
    let _srv = faulty_remote(
        &e,
        Fault::Trickle(20 * 1024),
        "min-rate = 204800\nrate-window-s = 1\n",
    );
    let start = std::time::Instant::now();
    e.assert_refused_keeps_v1(&["install", "flaky:org.example.Hello"], 3, "slow retrieval");
    assert!(
        start.elapsed() < std::time::Duration::from_secs(20),
        "{:?}",
        start.elapsed()
    );
}

#[test]
fn a_bundle_streams_from_a_plain_url() {
    require_root!("installs write root-owned files");
    let e = Env::with_demo_app();
    let srv = faulty_remote(&e, Fault::None, "");
    let url = format!("http://127.0.0.1:{}/downloads/big.bundle", srv.port);
    let out = e.ok(&["--json", "install", &url]).json();
    assert_eq!(out["action"], "updated");
    assert_eq!(e.ok(&["run", "org.example.Hello"]).stdout, "hello big\n");
}

#[test]
fn update_installs_the_newest_trusted_versions() {
    require_root!("installs write root-owned files");
    let e = Env::with_demo_app();
    let before = e.snapshot();
    let msg = e.fails(&["update"], 5);
    assert!(msg.contains("no remote is configured"), "{msg}");
    assert_eq!(before, e.snapshot());
    let reg = Registry::start(e.dir.path());
    let url = reg.url(REPO);
    add_remote(&e, "fleet", &url);
    for b in [
        e.runtime_bundle("1.0.0"),
        e.app_bundle("2.0.0"),
        e.app_bundle("3.0.0"),
    ] {
        e.ok(&["publish", s(&b), &url]);
    }
    // An untrusted 4.0.0 is not taken.
    e.ok(&["key", "generate", "--out", s(&e.p("rogue"))]);
    let rogue = e.bundle_signed(
        &app_manifest("4.0.0"),
        &e.p("app-3.0.0"),
        "rogue4.bundle",
        &e.p("rogue.key"),
        &[],
    );
    e.ok(&["publish", s(&rogue), &url]);
    let msg = e.fails(&["update", "org.example.Nope"], 5);
    assert!(msg.contains("not installed"), "{msg}");
    assert_eq!(before, e.snapshot());

    let out = e.ok(&["--json", "update"]).json();
    assert_eq!(out["updated"].as_array().unwrap().len(), 1, "{out}");
    assert_eq!(out["updated"][0]["remote"], "fleet");
    assert_eq!(out["updated"][0]["action"], "updated");
    assert_eq!(
        out["up-to-date"][0]["ref"],
        format!("runtime/org.example.Platform/{}/1", arch())
    );
    assert_eq!(e.app_state(), Some(("3.0.0".into(), Some("1.0.0".into()))));
    assert_eq!(e.ok(&["run", "org.example.Hello"]).stdout, "hello 3.0.0\n");
    // Nothing newer: nothing written.
    let now = e.snapshot();
    let out = e.ok(&["--json", "update", "org.example.Hello"]).json();
    assert_eq!(out["updated"], serde_json::json!([]));
    assert_eq!(now, e.snapshot());
    e.fsck_clean();
}

#[test]
fn sigkill_mid_download_keeps_the_old_version_and_a_retry_installs() {
    require_root!("installs write root-owned files");
    let e = Env::with_demo_app();
    let (b, manifest) = big_app(&e);
    let blob = fs::read(&b).unwrap();
    let t = tag("org.example.Hello", "2.0.0");
    // 100 KiB/s: the 1 MiB download takes about 10 s.
    let slow = FaultyServer::start(
        REPO,
        &t,
        manifest.clone(),
        blob.clone(),
        Fault::Trickle(100 * 1024),
    );
    let d = e.cfg.join("remotes.d");
    fs::create_dir_all(&d).unwrap();
    fs::write(
        d.join("flaky.toml"),
        format!("url = \"{}\"\nmin-rate = 1024\n", slow.url(REPO)),
    )
    .unwrap();
    let mut child = e
        .cmd(&["install", "flaky:org.example.Hello"])
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while slow.blob_requests().is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "the download never started"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    std::thread::sleep(std::time::Duration::from_millis(1500));
    assert!(
        child.try_wait().unwrap().is_none(),
        "the install ended before the kill"
    );
    child.kill().unwrap();
    child.wait().unwrap();
    // The old version is current and intact; the next command collects the leftovers.
    assert_eq!(e.app_state(), Some(("1.0.0".into(), None)));
    e.fsck_clean();
    let fast = FaultyServer::start(REPO, &t, manifest, blob, Fault::None);
    fs::write(
        d.join("flaky.toml"),
        format!("url = \"{}\"\n", fast.url(REPO)),
    )
    .unwrap();
    e.ok(&["install", "flaky:org.example.Hello"]);
    assert_eq!(e.app_state(), Some(("2.0.0".into(), Some("1.0.0".into()))));
    assert_eq!(e.ok(&["run", "org.example.Hello"]).stdout, "hello big\n");
    e.fsck_clean();
}

#[test]
fn a_held_app_is_left_alone_by_update_until_unheld() {
    require_root!("installs write root-owned files");
    let e = Env::with_demo_app();
    let reg = Registry::start(e.dir.path());
    let url = reg.url(REPO);
    e.ok(&["publish", s(&e.app_bundle("2.0.0")), &url]);
    add_remote(&e, "fleet", &url);
    // Bad arguments write nothing.
    let before = e.snapshot();
    e.fails(&["hold", "not an id"], 2);
    e.fails(&["hold", "org.example.Hello", "--reason", "two\nlines"], 2);
    let msg = e.fails(&["unhold", "org.example.Hello"], 5);
    assert!(msg.contains("is not held"), "{msg}");
    assert_eq!(before, e.snapshot());

    e.ok(&["hold", "org.example.Hello", "--reason", "pilot fleet only"]);
    let before = e.snapshot();
    for args in [
        vec!["--json", "update"],
        vec!["--json", "update", "org.example.Hello"],
    ] {
        let out = e.ok(&args).json();
        assert_eq!(out["updated"], serde_json::json!([]), "{out}");
        assert_eq!(out["held"][0]["version"], "1.0.0", "{out}");
        assert_eq!(out["held"][0]["reason"], "pilot fleet only", "{out}");
    }
    assert_eq!(before, e.snapshot(), "update changed a held app's state");
    assert_eq!(e.app_state(), Some(("1.0.0".into(), None)));
    assert_eq!(e.report_app("org.example.Hello")["held"], true);

    e.ok(&["unhold", "org.example.Hello"]);
    let out = e.ok(&["--json", "update"]).json();
    assert_eq!(out["updated"][0]["version"], "2.0.0", "{out}");
    assert_eq!(out["held"], serde_json::json!([]));
    assert_eq!(e.ok(&["run", "org.example.Hello"]).stdout, "hello 2.0.0\n");

    // A hold from policy (`update-hold`): the OEM's, so `unhold` cannot lift it.
    e.ok(&["publish", s(&e.app_bundle("3.0.0")), &url]);
    let hold = e.cfg.join("policies.d/90-hold.toml");
    fs::create_dir_all(e.cfg.join("policies.d")).unwrap();
    fs::write(
        &hold,
        "[[rule]]\napps = [\"org.example.*\"]\nupdate-hold = \"recall R-42\"\n",
    )
    .unwrap();
    let before = e.snapshot();
    let out = e.ok(&["--json", "update"]).json();
    assert_eq!(out["updated"], serde_json::json!([]), "{out}");
    let reason = out["held"][0]["reason"].as_str().unwrap();
    assert!(
        reason.starts_with("recall R-42 (policy ") && reason.contains("90-hold.toml rule 1"),
        "{out}"
    );
    let msg = e.fails(&["unhold", "org.example.Hello"], 5);
    assert!(msg.contains("policy holds it: recall R-42"), "{msg}");
    assert_eq!(before, e.snapshot());
    let app = e.report_app("org.example.Hello");
    assert_eq!(app["held"], true, "{app}");
    assert!(
        app["hold_reason"].as_str().unwrap().contains("R-42"),
        "{app}"
    );
    // A reason with a control character is a policy error naming the key; nothing runs.
    fs::write(
        &hold,
        "[[rule]]\napps = [\"org.example.Hello\"]\nupdate-hold = \"a\\u0007b\"\n",
    )
    .unwrap();
    let msg = e.fails(&["update"], 4);
    assert!(msg.contains("update-hold"), "{msg}");
    assert_eq!(before, e.snapshot());
    // A more specific rule lifts it with "".
    fs::write(
        &hold,
        "[[rule]]\napps = [\"org.example.*\"]\nupdate-hold = \"recall R-42\"\n\n\
         [[rule]]\napps = [\"org.example.Hello\"]\nupdate-hold = \"\"\n",
    )
    .unwrap();
    let out = e.ok(&["--json", "update"]).json();
    assert_eq!(out["updated"][0]["version"], "3.0.0", "{out}");
}

/// `n` files of `size` pseudo-random bytes under `data/`, file i's content a function of
/// (i, its generation `gen[i]`), and `bin/hello` printing `version`.
fn data_tree(e: &Env, name: &str, version: &str, size: usize, gens: &[u64]) -> PathBuf {
    let root = e.p(name);
    fs::create_dir_all(root.join("data")).unwrap();
    write_hello(&root, version);
    for (i, g) in gens.iter().enumerate() {
        let mut x = (i as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ g.wrapping_mul(0xD1B5);
        let mut b = Vec::with_capacity(size);
        while b.len() < size {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            b.extend_from_slice(&x.to_le_bytes());
        }
        b.truncate(size);
        fs::write(root.join(format!("data/f{i:02}")), b).unwrap();
    }
    root
}

/// A state dir with the runtime installed, and a registry.
fn runtime_and_registry() -> (Env, Registry, String) {
    let e = Env::new();
    e.ok(&["install", s(&e.runtime_bundle("1.0.0"))]);
    let reg = Registry::start(e.dir.path());
    let url = reg.url(REPO);
    (e, reg, url)
}

/// The installed app's files `data/fNN` are those of `tree`.
fn assert_deployed(e: &Env, tree: &Path, files: impl IntoIterator<Item = usize>) {
    let info = e.ok(&["--json", "info", "org.example.Hello"]).json();
    let dep = PathBuf::from(info["deployment"].as_str().unwrap());
    for i in files {
        let f = format!("data/f{i:02}");
        assert_eq!(
            fs::read(dep.join(&f)).unwrap(),
            fs::read(tree.join(&f)).unwrap(),
            "{f}"
        );
    }
}

#[test]
fn an_update_downloads_only_the_changed_files() {
    update_downloads_only_the_changed_files("none");
}

/// The same with zstd payloads: each large file's content is a frame of its own, and the
/// device compresses its installed copy to the same frame.
#[test]
fn an_update_of_zstd_bundles_downloads_only_the_changed_files() {
    update_downloads_only_the_changed_files("zstd");
}

fn update_downloads_only_the_changed_files(compression: &str) {
    require_root!("installs write root-owned files");
    let (e, _reg, url) = runtime_and_registry();
    // 20 files of 600 KiB (more than one read of the importer: a local copy is read in
    // several pieces); 2.0.0 changes 2 of them (10 %), 3.0.0 one more.
    let mut gens = vec![0u64; 20];
    let mut bundles = Vec::new();
    for (v, changed) in [("1.0.0", None), ("2.0.0", Some(3)), ("3.0.0", Some(7))] {
        if let Some(c) = changed {
            gens[c] += 1;
            if v == "2.0.0" {
                gens[11] += 1;
            }
        }
        let tree = data_tree(&e, &format!("tree-{v}"), v, 600 * 1024, &gens);
        let b = e.bundle_with(
            &app_manifest(v),
            &tree,
            &format!("delta-{v}.bundle"),
            &["--compression", compression],
        );
        let out = e.ok(&["--json", "publish", s(&b), &url]).json();
        assert!(out["files-index"].is_string(), "{out}");
        bundles.push((tree, b));
    }
    add_remote(&e, "fleet", &url);
    let out = e
        .ok(&["--json", "install", "fleet:org.example.Hello@1.0.0"])
        .json();
    assert!(out["download"].is_null(), "nothing to reuse yet: {out}");

    let out = e.ok(&["--json", "update"]).json();
    let u = &out["updated"][0];
    assert_eq!(u["version"], "3.0.0", "{out}");
    let d = &u["download"];
    assert_eq!(d["delta"], true, "{out}");
    // 3.0.0 differs from 1.0.0 in 3 of 20 files.
    assert_eq!(d["reused-files"], 17, "{out}");
    let fetched = d["fetched-bytes"].as_u64().unwrap();
    let total = d["bundle-bytes"].as_u64().unwrap();
    assert_eq!(total, fs::metadata(&bundles[2].1).unwrap().len());
    assert!(
        fetched * 100 <= total * 20,
        "fetched {fetched} of {total} bytes"
    );
    assert!(fetched >= 3 * 600 * 1024, "fetched {fetched}");
    // What is installed is 3.0.0 exactly.
    assert_eq!(e.ok(&["run", "org.example.Hello"]).stdout, "hello 3.0.0\n");
    assert_deployed(&e, &bundles[2].0, [0, 3, 7, 11, 19]);
    e.fsck_clean();
}

#[test]
fn a_wrong_file_index_costs_a_full_download_never_a_wrong_install() {
    require_root!("installs write root-owned files");
    let (e, reg, url) = runtime_and_registry();
    let mut gens = vec![0u64; 6];
    let t1 = data_tree(&e, "w1", "1.0.0", 128 * 1024, &gens);
    gens[0] += 1;
    let t2 = data_tree(&e, "w2", "2.0.0", 128 * 1024, &gens);
    let none = ["--compression", "none"];
    let b1 = e.bundle_with(&app_manifest("1.0.0"), &t1, "w1.bundle", &none);
    let b2 = e.bundle_with(&app_manifest("2.0.0"), &t2, "w2.bundle", &none);
    e.ok(&["publish", s(&b1), &url]);
    e.ok(&["publish", s(&b2), &url]);
    add_remote(&e, "fleet", &url);
    e.ok(&["install", "fleet:org.example.Hello@1.0.0"]);
    // Someone with write access swaps two files' offsets in 2.0.0's index: both copies
    // exist locally with the sizes and digests it names, in the wrong places.
    let tag2 = tag("org.example.Hello", "2.0.0");
    let mut m = reg.manifest(REPO, &tag2);
    let ann = &m["layers"][0]["annotations"];
    let digest = ann["org.appmgr.files-index.digest"]
        .as_str()
        .unwrap()
        .to_string();
    let (status, body) = http_get(reg.port, &format!("/v2/{REPO}/blobs/{digest}"), &[]).unwrap();
    assert_eq!(status, 200);
    let mut index: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let files = index["files"].as_array_mut().unwrap();
    let (a, b) = (files[2]["offset"].clone(), files[3]["offset"].clone());
    files[2]["offset"] = b;
    files[3]["offset"] = a;
    files.sort_by_key(|f| f["offset"].as_u64().unwrap());
    let bad = e.p("bad-index.json");
    fs::write(&bad, serde_json::to_vec(&index).unwrap()).unwrap();
    let bad_digest = format!("sha256:{}", sha256_file(&bad));
    m["layers"][0]["annotations"]["org.appmgr.files-index.digest"] = serde_json::json!(bad_digest);
    m["layers"][0]["annotations"]["org.appmgr.files-index.size"] =
        serde_json::json!(fs::metadata(&bad).unwrap().len().to_string());
    reg.push_raw(REPO, &tag2, &bad, &m);
    let out = e.ok(&["--json", "update"]).json();
    let u = &out["updated"][0];
    assert_eq!(u["version"], "2.0.0", "{out}");
    assert_eq!(u["download"]["delta"], false, "{out}");
    assert!(
        u["download"]["delta-failed"]
            .as_str()
            .unwrap()
            .contains("digest"),
        "{out}"
    );
    assert_deployed(&e, &t2, 0..6);
    e.fsck_clean();
}
