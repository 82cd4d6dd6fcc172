//! SBOMs end to end: `bundle create --sbom`, install, `appmgr sbom ID`, `appmgr sbom query
//! PACKAGE [--below VERSION]`, their survival across update and rollback, a tampered SBOM
//! on disk. The SBOMs `runtimes/build.py` writes are checked in `runtimes.rs`.
use appmgr_testkit::*;
use std::fs;
use std::path::Path;

fn component(name: &str, version: &str, source: &str) -> String {
    format!(
        r#"{{"type": "library", "name": "{name}", "version": "{version}",
  "purl": "pkg:deb/debian/{name}@{version}?arch=amd64",
  "licenses": [{{"license": {{"name": "test-license"}}}}],
  "properties": [{{"name": "appmgr:source-package", "value": "{source}"}}]}}"#
    )
}

fn document(components: &[String]) -> String {
    format!(
        "{{\"bomFormat\": \"CycloneDX\", \"specVersion\": \"1.5\", \"version\": 1,\n\
         \"components\": [{}]}}\n",
        components.join(",\n")
    )
}

/// Builds and signs a bundle carrying `sbom`.
fn bundle_with_sbom(e: &Env, manifest: &str, root: &Path, out: &str, sbom: &str) -> String {
    let sp = e.p(&format!("{out}.cdx.json"));
    fs::write(&sp, sbom).unwrap();
    let b = e.bundle_with(manifest, root, out, &["--sbom", s(&sp)]);
    s(&b).to_string()
}

fn runtime_sbom() -> String {
    document(&[
        component("libc6", "2.36-9+deb12u4", "glibc"),
        component("libssl3", "3.0.11-1~deb12u2", "openssl"),
        component("zlib1g", "1:1.2.13.dfsg-1", "zlib"),
    ])
}

fn app_sbom() -> String {
    document(&[
        component("libssl3", "3.0.15-1~deb12u1", "openssl"),
        component("mylib", "git-abc", "mylib"),
    ])
}

/// The refs a query matched, as `KIND/ID VERSION PACKAGE-VERSION`.
fn matched(e: &Env, args: &[&str]) -> (Vec<String>, serde_json::Value) {
    let mut full = vec!["--json", "sbom", "query"];
    full.extend_from_slice(args);
    let j = e.ok(&full).json();
    let mut v: Vec<String> = j["matches"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            format!(
                "{}/{} {} {}",
                m["kind"].as_str().unwrap(),
                m["id"].as_str().unwrap(),
                m["version"].as_str().unwrap(),
                m["package-version"].as_str().unwrap()
            )
        })
        .collect();
    v.sort();
    (v, j)
}

#[test]
fn sboms_are_installed_shown_queried_and_follow_the_deployment() {
    require_root!("installs write root-owned files");
    let e = Env::new();
    // The runtime and app 1.0.0 carry SBOMs; another app and app 1.1.0 do not.
    let rt_root = e.p("rt-root");
    fs::create_dir_all(rt_root.join("bin")).unwrap();
    fs::copy("/bin/busybox", rt_root.join("bin/busybox")).unwrap();
    let rt = bundle_with_sbom(
        &e,
        &runtime_manifest("1.0.0"),
        &rt_root,
        "rt.bundle",
        &runtime_sbom(),
    );
    e.ok(&["install", &rt]);
    e.app_bundle("1.0.0");
    let app = bundle_with_sbom(
        &e,
        &app_manifest("1.0.0"),
        &e.p("app-1.0.0"),
        "app.bundle",
        &app_sbom(),
    );
    e.ok(&["install", &app]);
    let other = e.bundle(
        &app_manifest("1.0.0").replace("org.example.Hello", "org.example.Other"),
        &e.p("app-1.0.0"),
        "other.bundle",
    );
    e.ok(&["install", s(&other)]);

    // `sbom ID` prints the document exactly as signed; --json gives it as a value.
    let shown = e.ok(&["sbom", "org.example.Platform"]).stdout;
    assert_eq!(shown, runtime_sbom());
    let j = e.ok(&["--json", "sbom", "org.example.Hello"]).json();
    assert_eq!(
        j,
        serde_json::from_str::<serde_json::Value>(&app_sbom()).unwrap()
    );
    let msg = e.fails(&["sbom", "org.example.Other"], 5);
    assert!(msg.contains("carries no SBOM"), "{msg}");
    let msg = e.fails(&["sbom", "org.example.Missing"], 5);
    assert!(msg.contains("not installed"), "{msg}");

    // By binary package, by source package, below a version (Debian order: ~ sorts
    // first, so 3.0.11-1~deb12u2 < 3.0.11-1 < 3.0.13).
    let rt_ref = "runtime/org.example.Platform";
    let app_ref = "app/org.example.Hello";
    let (m, j) = matched(&e, &["libssl3"]);
    assert_eq!(
        m,
        [
            format!("{app_ref} 1.0.0 3.0.15-1~deb12u1"),
            format!("{rt_ref} 1.0.0 3.0.11-1~deb12u2")
        ]
    );
    assert_eq!(
        j["without-sbom"],
        serde_json::json!([format!("app/org.example.Other/{}/stable", arch())])
    );
    let (m, _) = matched(&e, &["libssl3", "--below", "3.0.13"]);
    assert_eq!(m, [format!("{rt_ref} 1.0.0 3.0.11-1~deb12u2")]);
    let (m, _) = matched(&e, &["openssl", "--below", "3.0.11-1"]);
    assert_eq!(m, [format!("{rt_ref} 1.0.0 3.0.11-1~deb12u2")]);
    let (m, _) = matched(&e, &["openssl", "--below", "3.0.11-1~deb12u2"]);
    assert!(m.is_empty(), "equal is not below: {m:?}");
    let (m, _) = matched(&e, &["zlib1g", "--below", "1.3"]);
    assert!(m.is_empty(), "epoch 1 is above any epoch 0: {m:?}");
    let (m, _) = matched(&e, &["zlib1g", "--below", "1:1.3"]);
    assert_eq!(m, [format!("{rt_ref} 1.0.0 1:1.2.13.dfsg-1")]);
    // A version that is not a Debian version is listed, marked, never dropped.
    let (m, j) = matched(&e, &["mylib", "--below", "1.0"]);
    assert_eq!(m, [format!("{app_ref} 1.0.0 git-abc")]);
    assert_eq!(j["matches"][0]["comparable"], false);
    let text = e.ok(&["sbom", "query", "mylib", "--below", "1.0"]).stdout;
    assert!(text.contains("cannot compare"), "{text}");
    assert!(
        text.contains("without an SBOM (unknown): app/org.example.Other"),
        "{text}"
    );
    let msg = e.fails(&["sbom", "query", "libc6", "--below", "2.36_1"], 2);
    assert!(msg.contains("2.36_1"), "{msg}");

    // An update without an SBOM: the current deployment has none; rollback brings the
    // previous deployment's SBOM back.
    e.ok(&["install", s(&e.app_bundle("1.1.0"))]);
    let msg = e.fails(&["sbom", "org.example.Hello"], 5);
    assert!(
        msg.contains("1.1.0") && msg.contains("carries no SBOM"),
        "{msg}"
    );
    let (m, _) = matched(&e, &["libssl3"]);
    assert_eq!(m, [format!("{rt_ref} 1.0.0 3.0.11-1~deb12u2")]);
    e.ok(&["rollback", "org.example.Hello"]);
    assert_eq!(e.ok(&["sbom", "org.example.Hello"]).stdout, app_sbom());

    // A changed SBOM on disk is reported, never answered from; the others still are.
    let info = e.ok(&["--json", "info", "org.example.Platform"]).json();
    let dep = Path::new(info["deployment"].as_str().unwrap())
        .parent()
        .unwrap()
        .to_path_buf();
    let file = dep.join("sbom.cdx.json");
    fs::write(
        &file,
        runtime_sbom().replace("2.36-9+deb12u4", "9.99-9+deb12u4"),
    )
    .unwrap();
    let msg = e.fails(&["sbom", "org.example.Platform"], 3);
    assert!(
        msg.contains("sbom.cdx.json") && msg.contains("signed manifest"),
        "{msg}"
    );
    let r = e.run(&["--json", "sbom", "query", "libssl3"]);
    assert_eq!(r.code, 3, "{}{}", r.stdout, r.stderr);
    let j = r.json();
    assert_eq!(
        j["failed"][0]["ref"].as_str().unwrap(),
        format!("runtime/org.example.Platform/{}/1", arch())
    );
    assert_eq!(j["matches"].as_array().unwrap().len(), 1, "{j}");
    // fsck finds it too: the file is not the copy in the commit.
    let r = e.run(&["fsck"]);
    assert_eq!(r.code, 3, "{}{}", r.stdout, r.stderr);
    assert!(
        r.stdout
            .contains("sbom.cdx.json differs from the copy in the commit"),
        "{}",
        r.stdout
    );
    // A symlink in its place is not followed.
    fs::remove_file(&file).unwrap();
    std::os::unix::fs::symlink(e.p("rt.bundle.cdx.json"), &file).unwrap();
    let msg = e.fails(&["sbom", "org.example.Platform"], 3);
    assert!(msg.contains("sbom.cdx.json"), "{msg}");
    // Reinstalling the bundle repairs it.
    e.ok(&["install", &rt]);
    assert_eq!(
        e.ok(&["sbom", "org.example.Platform"]).stdout,
        runtime_sbom()
    );
    e.fsck_clean();
}

#[test]
fn a_refused_sbom_installs_nothing() {
    require_root!("installs write root-owned files");
    let e = Env::new();
    e.ok(&["install", s(&e.runtime_bundle("1.0.0"))]);
    e.ok(&["install", s(&e.app_bundle("1.0.0"))]);
    let before = e.snapshot();
    // `bundle create` refuses an SBOM appmgr could not answer from, and writes no bundle.
    let bad = document(&[component("libc6", "2.36", "glibc")]).replace("\"1.5\"", "\"1.4\"");
    let m = e.p("bad.toml");
    fs::write(&m, app_manifest("2.0.0")).unwrap();
    fs::write(e.p("bad.cdx.json"), &bad).unwrap();
    let out = e.p("bad.bundle");
    let msg = e.fails(
        &[
            "bundle",
            "create",
            "--manifest",
            s(&m),
            "--root",
            s(&e.p("app-1.0.0")),
            "--key",
            s(&e.key),
            "--out",
            s(&out),
            "--sbom",
            s(&e.p("bad.cdx.json")),
        ],
        3,
    );
    assert!(
        msg.contains("bad.cdx.json") && msg.contains("specVersion"),
        "{msg}"
    );
    assert!(!out.exists());
    // A bundle whose SBOM member was swapped for another of the same size is refused at
    // install (the signature covers its digest), and nothing is written.
    let good = bundle_with_sbom(
        &e,
        &app_manifest("2.0.0"),
        &e.p("app-1.0.0"),
        "good.bundle",
        &app_sbom(),
    );
    let mut bytes = fs::read(&good).unwrap();
    let at = bytes
        .windows(b"3.0.15".len())
        .position(|w| w == b"3.0.15")
        .unwrap();
    bytes[at..at + 6].copy_from_slice(b"3.0.16");
    let swapped = e.p("swapped.bundle");
    fs::write(&swapped, &bytes).unwrap();
    let msg = e.fails(&["install", s(&swapped)], 3);
    assert!(msg.contains("SBOM digest mismatch"), "{msg}");
    assert_eq!(
        before,
        e.snapshot(),
        "a refused install changed the state dir"
    );
    assert_eq!(e.app_state(), Some(("1.0.0".into(), None)));
    e.fsck_clean();
}
