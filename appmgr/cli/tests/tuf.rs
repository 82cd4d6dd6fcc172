//! TUF-verified remotes against Debian's real docker-registry on 127.0.0.1
//! (docs/remotes.md "Trust"): a remote added with `--root` offers exactly what its
//! verified targets list, per-ID release counters hold against valid old metadata, a
//! signed release may downgrade, and every attack is refused with exit 3, one line, and
//! the state dir unchanged.
use appmgr_testkit::*;
use std::path::{Path, PathBuf};

const REPO: &str = "fleet/apps";
const META: &str = "fleet/apps/tuf";

struct Keys {
    root: PathBuf,
    targets: [PathBuf; 2],
    snapshot: PathBuf,
    timestamp: PathBuf,
}

fn key(e: &Env, name: &str) -> PathBuf {
    e.ok(&["key", "generate", "--out", s(&e.p(name))]);
    e.p(&format!("{name}.key"))
}

fn keys(e: &Env) -> Keys {
    Keys {
        root: key(e, "tuf-root"),
        targets: [key(e, "tuf-targets-a"), key(e, "tuf-targets-b")],
        snapshot: key(e, "tuf-snapshot"),
        timestamp: key(e, "tuf-timestamp"),
    }
}

/// A root over `root_key` with the targets threshold `targets_threshold` of the given
/// targets keys, signed by `sign`.
fn make_root(
    e: &Env,
    out: &str,
    version: u32,
    root_key: &Path,
    k: &Keys,
    (targets, targets_threshold): (&[&Path], u32),
    sign: &[&Path],
) -> PathBuf {
    let out = e.p(out);
    let mut args: Vec<String> = vec![
        "tuf".into(),
        "root".into(),
        s(&out).into(),
        "--version".into(),
        version.to_string(),
        "--key".into(),
        format!("root={}", root_key.display()),
        "--key".into(),
        format!("snapshot={}", k.snapshot.display()),
        "--key".into(),
        format!("timestamp={}", k.timestamp.display()),
        "--threshold".into(),
        format!("targets={targets_threshold}"),
    ];
    for t in targets {
        args.push("--key".into());
        args.push(format!("targets={}", t.display()));
    }
    for x in sign {
        args.push("--sign".into());
        args.push(s(x).into());
    }
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    e.ok(&a);
    out
}

fn publish(e: &Env, bundle: &Path, url: &str, root: &Path, keys: &[&Path], extra: &[&str]) {
    let mut args = vec!["publish", s(bundle), url, "--tuf-root", s(root)];
    for k in keys {
        args.push("--tuf-key");
        args.push(s(k));
    }
    args.extend_from_slice(extra);
    e.ok(&args);
}

struct Setup {
    e: Env,
    reg: Registry,
    url: String,
    k: Keys,
    root1: PathBuf,
}

impl Setup {
    /// Runtime 1.0.0 and app 1.0.0 and 2.0.0 published under a root whose targets need
    /// two of two keys; the device adds the remote with that root.
    fn new() -> Setup {
        let e = Env::new();
        let reg = Registry::start(e.dir.path());
        let url = reg.url(REPO);
        let k = keys(&e);
        let root1 = make_root(
            &e,
            "root1.json",
            1,
            &k.root,
            &k,
            (&[&k.targets[0], &k.targets[1]], 2),
            &[&k.root],
        );
        let st = Setup {
            e,
            reg,
            url,
            k,
            root1,
        };
        for b in [
            st.e.runtime_bundle("1.0.0"),
            st.e.app_bundle("1.0.0"),
            st.e.app_bundle("2.0.0"),
        ] {
            st.publish(&b, &[]);
        }
        st.e.ok(&["remote", "add", "fleet", &st.url, "--root", s(&st.root1)]);
        st
    }

    fn signing_keys(&self) -> Vec<&Path> {
        vec![
            &self.k.targets[0],
            &self.k.targets[1],
            &self.k.snapshot,
            &self.k.timestamp,
        ]
    }

    fn publish(&self, bundle: &Path, extra: &[&str]) {
        publish(
            &self.e,
            bundle,
            &self.url,
            &self.root1,
            &self.signing_keys(),
            extra,
        );
    }

    /// `remote ls`, as JSON (it verifies and records the metadata).
    fn ls(&self) -> serde_json::Value {
        self.e.ok(&["--json", "remote", "ls", "fleet"]).json()
    }

    /// Runs `args`, which must be refused with exit 3 naming `needle`, nothing written.
    fn refused(&self, args: &[&str], needle: &str) {
        let before = self.e.snapshot();
        let msg = self.e.fails(args, 3);
        eprintln!("refused {args:?}: {msg}");
        assert!(
            msg.contains(needle),
            "{args:?}: {msg:?} should name {needle:?}"
        );
        assert_eq!(
            before,
            self.e.snapshot(),
            "state changed after refused {args:?}"
        );
    }

    fn timestamp(&self) -> Vec<u8> {
        self.reg.raw_manifest(META, "timestamp.json")
    }

    fn put(&self, tag: &str, bytes: &[u8]) {
        self.reg.put_manifest(META, tag, bytes, self.e.dir.path());
    }
}

#[test]
fn a_tuf_remote_offers_its_targets_and_its_release_counters_hold() {
    require_root!("installs write root-owned files");
    let st = Setup::new();
    let e = &st.e;
    // A bundle on the registry that the metadata does not list is not offered.
    e.ok(&["publish", s(&e.app_bundle("3.0.0")), &st.url]);
    let ls = st.ls();
    let offers = ls["offers"].as_array().unwrap();
    let got: Vec<_> = offers
        .iter()
        .map(|o| {
            (
                o["version"].as_str().unwrap().to_string(),
                o["release"].as_u64().unwrap(),
                o["trusted"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            ("1.0.0".to_string(), 1, true),
            ("2.0.0".to_string(), 2, true),
            ("1.0.0".to_string(), 1, true)
        ],
        "{ls}"
    );
    // Loads of the same remote at once wait for each other (the state's swap is
    // locked): all succeed.
    std::thread::scope(|sc| {
        let runs: Vec<_> = (0..4)
            .map(|_| sc.spawn(|| e.run(&["--json", "remote", "ls", "fleet"])))
            .collect();
        for r in runs {
            let r = r.join().unwrap();
            assert_eq!(r.code, 0, "{}", r.stderr);
        }
    });
    let before = e.snapshot();
    let msg = e.fails(&["install", "fleet:org.example.Hello@3.0.0"], 5);
    assert!(msg.contains("offers no trusted"), "{msg}");
    assert_eq!(before, e.snapshot());

    e.ok(&["install", "fleet:org.example.Platform"]);
    e.ok(&["install", "fleet:org.example.Hello"]);
    assert_eq!(e.app_state(), Some(("2.0.0".into(), None)));
    assert_eq!(e.ok(&["run", "org.example.Hello"]).stdout, "hello 2.0.0\n");
    let releases: serde_json::Value = serde_json::from_slice(
        &std::fs::read(e.state.join("remotes/fleet/releases.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(releases["org.example.Hello"], 2);
    // The signed device report carries the release counter.
    let hello = e.report_app("org.example.Hello");
    assert_eq!(hello["releases"]["fleet"], 2, "{hello}");
    let up = e.ok(&["--json", "update"]).json();
    assert_eq!(up["updated"], serde_json::json!([]), "{up}");

    // Valid metadata that lists an older release again: refused (rollback), unchanged.
    st.publish(&e.app_bundle("1.0.0"), &["--release", "1"]);
    st.ls();
    st.refused(
        &["install", "fleet:org.example.Hello@1.0.0"],
        "release 1 of org.example.Hello (1.0.0) is below release 2",
    );
    let up = e.ok(&["--json", "update"]).json();
    assert_eq!(up["updated"], serde_json::json!([]), "{up}");
    assert_eq!(e.app_state(), Some(("2.0.0".into(), None)));

    // A signed downgrade: a higher release of a lower version.
    st.publish(&e.app_bundle("1.0.0"), &["--release", "3"]);
    let up = e.ok(&["--json", "update"]).json();
    assert_eq!(up["updated"][0]["version"], "1.0.0", "{up}");
    assert_eq!(e.ok(&["run", "org.example.Hello"]).stdout, "hello 1.0.0\n");
    let releases: serde_json::Value = serde_json::from_slice(
        &std::fs::read(e.state.join("remotes/fleet/releases.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(releases["org.example.Hello"], 3);
    e.fsck_clean();

    // Removing the remote removes its root and its TUF state.
    e.ok(&["remote", "remove", "fleet"]);
    assert!(!e.cfg.join("remotes.d/fleet.root.json").exists());
    assert!(!e.state.join("remotes/fleet").exists());
}

#[test]
fn tuf_attacks_are_refused_and_change_nothing() {
    require_root!("installs write root-owned files");
    let st = Setup::new();
    let e = &st.e;
    e.ok(&["install", "fleet:org.example.Platform"]);
    e.ok(&["install", "fleet:org.example.Hello@1.0.0"]);

    // Arbitrary software: the tag of a listed bundle re-pointed at another bundle (signed
    // by the trusted vendor key even).
    let tag = format!("org.example.Hello_{}_2.0.0", arch());
    let other = e.app_bundle_with("2.0.0", "\n[permissions]\nnetwork = true\n");
    e.ok(&["publish", s(&other), &format!("{}:{tag}", st.url)]);
    st.refused(
        &["install", "fleet:org.example.Hello@2.0.0"],
        "is not the one the TUF targets list",
    );
    e.ok(&[
        "publish",
        s(&e.app_bundle("2.0.0")),
        &format!("{}:{tag}", st.url),
    ]);

    // Key compromise below the threshold: one of the two targets keys (and the snapshot
    // and timestamp keys) sign metadata listing a new bundle.
    let good = st.timestamp();
    let fake = make_root(
        e,
        "fake-root.json",
        1,
        &st.k.root,
        &st.k,
        (&[&st.k.targets[0]], 1),
        &[&st.k.root],
    );
    publish(
        e,
        &e.app_bundle("4.0.0"),
        &st.url,
        &fake,
        &[&st.k.targets[0], &st.k.snapshot, &st.k.timestamp],
        &[],
    );
    let below = "Signature threshold of 2 not met for role targets";
    st.refused(&["remote", "ls", "fleet"], below);
    st.refused(&["update"], below);
    st.put("timestamp.json", &good);
    st.ls();

    // Mix and match: the targets file the snapshot names replaced by an older one.
    let snapshot = st.ls();
    assert_eq!(snapshot["offers"].as_array().unwrap().len(), 3);
    let ts: serde_json::Value = serde_json::from_slice(
        &std::fs::read(e.state.join("remotes/fleet/tuf/targets.json")).unwrap(),
    )
    .unwrap();
    let n = ts["signed"]["version"].as_u64().unwrap();
    let current = st.reg.raw_manifest(META, &format!("{n}.targets.json"));
    let older = st
        .reg
        .raw_manifest(META, &format!("{}.targets.json", n - 1));
    st.put(&format!("{n}.targets.json"), &older);
    // The device already has version n: a fresh device sees the mismatch.
    let e2 = Env::new();
    e2.ok(&["remote", "add", "fleet", &st.url, "--root", s(&st.root1)]);
    let before = e2.snapshot();
    let msg = e2.fails(&["remote", "ls", "fleet"], 3);
    eprintln!("refused (fresh device): {msg}");
    assert!(
        msg.contains(&format!(
            "Hash mismatch for appmgr-tuf://metadata/{n}.targets.json"
        )),
        "{msg}"
    );
    assert_eq!(before, e2.snapshot());
    st.put(&format!("{n}.targets.json"), &current);

    // Rollback: the timestamp of an older, still valid set served after a newer one.
    let old_ts = st.timestamp();
    st.publish(&e.app_bundle("2.0.0"), &[]);
    st.ls();
    let new_ts = st.timestamp();
    st.put("timestamp.json", &old_ts);
    let rollback = "of timestamp metadata when we had previously fetched version";
    st.refused(&["remote", "ls", "fleet"], rollback);
    st.refused(&["install", "fleet:org.example.Hello@2.0.0"], rollback);
    st.put("timestamp.json", &new_ts);

    // A new root signed only by its own new key (not by the trusted root's): refused.
    let root2_key = key(e, "tuf-root2");
    let all: Vec<&Path> = vec![&st.k.targets[0], &st.k.targets[1]];
    let bad = make_root(
        e,
        "root2-bad.json",
        2,
        &root2_key,
        &st.k,
        (&all, 2),
        &[&root2_key],
    );
    st.put_file("2.root.json", &bad);
    st.refused(
        &["remote", "ls", "fleet"],
        "Failed to verify root metadata: Signature threshold of 1 not met for role root",
    );
    // Correctly rotated (signed by the old root key and the new one): accepted.
    let good2 = make_root(
        e,
        "root2.json",
        2,
        &root2_key,
        &st.k,
        (&all, 2),
        &[&st.k.root, &root2_key],
    );
    st.put_file("2.root.json", &good2);
    st.ls();
    let stored: serde_json::Value = serde_json::from_slice(
        &std::fs::read(e.state.join("remotes/fleet/tuf/root.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(stored["signed"]["version"], 2);

    // Freeze: metadata that expired is refused for updates, never for what runs or for a
    // local install under the same keys.
    publish(
        e,
        &e.app_bundle("2.0.0"),
        &st.url,
        &good2,
        &st.signing_keys(),
        &["--expires", "3s"],
    );
    st.ls();
    std::thread::sleep(std::time::Duration::from_secs(4));
    st.refused(&["update"], "the timestamp metadata expired at");
    st.refused(
        &["install", "fleet:org.example.Hello@2.0.0"],
        "the timestamp metadata expired at",
    );
    assert_eq!(e.app_state(), Some(("1.0.0".into(), None)));
    assert_eq!(e.ok(&["run", "org.example.Hello"]).stdout, "hello 1.0.0\n");
    e.ok(&["install", s(&e.app_bundle("2.0.0"))]);
    assert_eq!(e.ok(&["run", "org.example.Hello"]).stdout, "hello 2.0.0\n");
    e.fsck_clean();
}

impl Setup {
    /// Stores a metadata file as the publisher's tooling would (blob and tag).
    fn put_file(&self, tag: &str, file: &Path) {
        let bytes = std::fs::read(file).unwrap();
        let blob = self.e.dir.path().join(format!("blob-{tag}"));
        std::fs::write(&blob, &bytes).unwrap();
        let digest = format!("sha256:{}", sha256_file(&blob));
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "artifactType": "application/vnd.appmgr.tuf.v1",
            "config": {
                "mediaType": "application/vnd.oci.empty.v1+json",
                "digest": "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a",
                "size": 2
            },
            "layers": [{
                "mediaType": "application/vnd.appmgr.tuf.metadata.v1+json",
                "digest": digest,
                "size": bytes.len()
            }]
        });
        self.reg.push_raw(META, tag, &blob, &manifest);
    }
}

#[test]
fn remote_add_refuses_a_root_that_is_not_one() {
    let e = Env::new();
    let k = keys(&e);
    let not_root = e.p("not-root.json");
    std::fs::write(&not_root, "{\"signed\": {}}").unwrap();
    let add = |root: &Path, code| {
        let args = [
            "remote",
            "add",
            "fleet",
            "oci://127.0.0.1:5000/apps",
            "--root",
            s(root),
        ];
        e.fails(&args, code)
    };
    let msg = add(&not_root, 2);
    assert!(msg.contains("not a TUF root"), "{msg}");
    // Changed after it was signed: it does not verify under its own keys.
    let r = make_root(
        &e,
        "r.json",
        1,
        &k.root,
        &k,
        (&[&k.targets[0]], 1),
        &[&k.root],
    );
    let text = std::fs::read_to_string(&r).unwrap();
    assert!(text.contains("\"version\": 1,"));
    std::fs::write(&r, text.replacen("\"version\": 1,", "\"version\": 7,", 1)).unwrap();
    let msg = add(&r, 3);
    assert!(msg.contains("not signed by its own threshold"), "{msg}");
    assert!(!e.cfg.join("remotes.d/fleet.toml").exists());
    assert!(!e.cfg.join("remotes.d/fleet.root.json").exists());
    // A threshold above its keys is refused when the root is made.
    let msg = e.fails(
        &[
            "tuf",
            "root",
            s(&e.p("r2.json")),
            "--version",
            "1",
            "--key",
            &format!("root={}", k.root.display()),
            "--key",
            &format!("targets={}", k.targets[0].display()),
            "--key",
            &format!("snapshot={}", k.snapshot.display()),
            "--key",
            &format!("timestamp={}", k.timestamp.display()),
            "--threshold",
            "targets=2",
            "--sign",
            s(&k.root),
        ],
        2,
    );
    assert!(msg.contains("threshold 2 but 1 key"), "{msg}");
    assert!(!e.p("r2.json").exists());
}
