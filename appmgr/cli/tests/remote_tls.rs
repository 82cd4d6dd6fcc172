//! Remotes behind TLS and authentication (docs/remotes.md, "TLS and credentials"), against
//! Debian's real docker-registry on 127.0.0.1 serving https with a test CA's certificate:
//! htpasswd (`Basic`) and token (`Bearer`) authentication, a plain https bundle URL, and
//! every refusal (no credentials, wrong ones, an untrusted certificate, a readable
//! credentials file, credentials over plain http) leaving the state dir and the remote
//! configuration exactly as they were.
use appmgr_testkit::*;
use std::fs;
use std::path::Path;

const REPO: &str = "fleet/apps";
const USER: &str = "fleet";
const PASSWORD: &str = "pw-8d1c3a";

fn remotes(e: &Env) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(e.cfg.join("remotes.d"))
        .map(|r| {
            r.map(|x| x.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// Publishes the demo runtime and app 1.0.0 and 2.0.0 to `reg` with `creds` (and the
/// registry's CA), after checking that a publish without credentials is refused.
fn publish_all(e: &Env, reg: &SecureRegistry, creds: &Path) {
    let url = reg.url(REPO);
    let rt = e.runtime_bundle("1.0.0");
    let msg = e.fails(&["publish", s(&rt), &url, "--ca", s(&reg.ca.cert)], 7);
    assert!(msg.contains("has none"), "{msg}");
    for v in ["1.0.0", "2.0.0"] {
        let b = e.app_bundle(v);
        e.ok(&[
            "publish",
            s(&b),
            &url,
            "--ca",
            s(&reg.ca.cert),
            "--credentials",
            s(creds),
        ]);
    }
    e.ok(&[
        "publish",
        s(&rt),
        &url,
        "--ca",
        s(&reg.ca.cert),
        "--credentials",
        s(creds),
    ]);
}

/// Adds remote `name` for `reg` trusting `ca`, with `creds` if given.
fn add(e: &Env, name: &str, reg: &SecureRegistry, ca: &Path, creds: Option<&Path>) {
    let url = reg.url(REPO);
    let mut args = vec!["remote", "add", name, &url, "--ca", s(ca)];
    if let Some(c) = creds {
        args.extend(["--credentials", s(c)]);
    }
    e.ok(&args);
}

/// Installs and updates from remote `fleet`; then the refusals of remotes that lack the
/// credentials, have wrong ones, or trust another CA.
fn install_update_and_refusals(e: &Env, reg: &SecureRegistry, creds: &Path, wrong_needle: &str) {
    add(e, "fleet", reg, &reg.ca.cert, Some(creds));
    let file = fs::read_to_string(e.cfg.join("remotes.d/fleet.toml")).unwrap();
    assert!(
        file.contains(&format!("url = \"{}\"", reg.url(REPO))),
        "{file}"
    );
    assert!(
        file.contains(&format!("ca = \"{}\"", reg.ca.cert.display())),
        "{file}"
    );
    assert!(
        file.contains(&format!("credentials = \"{}\"", creds.display())),
        "{file}"
    );
    assert!(!file.contains(PASSWORD), "the secret stays in its own file");

    let ls = e.ok(&["--json", "remote", "ls", "fleet"]).json();
    let offers = ls["offers"].as_array().unwrap();
    assert_eq!(offers.len(), 3, "{ls}");
    assert!(offers.iter().all(|o| o["trusted"] == true), "{ls}");

    e.ok(&["install", "fleet:org.example.Platform"]);
    e.ok(&["install", "fleet:org.example.Hello@1.0.0"]);
    assert_eq!(e.ok(&["run", "org.example.Hello"]).stdout, "hello 1.0.0\n");

    // Without credentials, with wrong ones, trusting another CA: refused, nothing changed.
    let wrong = e.p("wrong.credentials");
    write_credentials(&wrong, USER, "not-the-password");
    add(e, "anon", reg, &reg.ca.cert, None);
    add(e, "wrong", reg, &reg.ca.cert, Some(&wrong));
    let other = TestCa::new(e.dir.path(), "other");
    add(e, "mitm", reg, &other.cert, Some(creds));
    for (args, code, needle) in [
        (&["install", "anon:org.example.Hello"][..], 7, "has none"),
        (&["install", "wrong:org.example.Hello"][..], 7, wrong_needle),
        (&["install", "mitm:org.example.Hello"][..], 3, "TLS"),
        (&["remote", "ls", "mitm"][..], 3, "TLS"),
    ] {
        let before = e.snapshot();
        let msg = e.fails(args, code);
        assert!(
            msg.contains(needle),
            "{args:?}: {msg:?} should name {needle:?}"
        );
        assert!(
            !msg.contains(PASSWORD) && !msg.contains("not-the-password"),
            "{msg}"
        );
        assert_eq!(before, e.snapshot(), "{args:?} changed the state");
        assert_eq!(e.app_state(), Some(("1.0.0".into(), None)));
    }
    for name in ["anon", "wrong", "mitm"] {
        e.ok(&["remote", "remove", name]);
    }

    // `update` follows the remote over TLS with the credentials.
    let out = e.ok(&["--json", "update"]).json();
    assert_eq!(
        e.app_state(),
        Some(("2.0.0".into(), Some("1.0.0".into()))),
        "{out}"
    );
    assert_eq!(e.ok(&["run", "org.example.Hello"]).stdout, "hello 2.0.0\n");
    e.fsck_clean();
}

#[test]
fn a_registry_behind_tls_and_a_password() {
    require_root!("installs write root-owned files");
    let e = Env::new();
    let reg = SecureRegistry::start(e.dir.path(), RegistryAuth::Basic(USER, PASSWORD));
    let creds = e.p("fleet.credentials");
    write_credentials(&creds, USER, PASSWORD);
    publish_all(&e, &reg, &creds);
    install_update_and_refusals(&e, &reg, &creds, "refused the credentials of user fleet");
}

#[test]
fn a_registry_with_token_authentication() {
    require_root!("installs write root-owned files");
    let e = Env::new();
    let reg = SecureRegistry::start(e.dir.path(), RegistryAuth::Token(USER, PASSWORD));
    let creds = e.p("fleet.credentials");
    write_credentials(&creds, USER, PASSWORD);
    publish_all(&e, &reg, &creds);
    install_update_and_refusals(
        &e,
        &reg,
        &creds,
        "the token service refused the credentials of user fleet",
    );
}

#[test]
fn bad_access_files_are_refused_at_the_edge_and_change_no_config() {
    let e = Env::new();
    let ca = TestCa::new(e.dir.path(), "test");
    let creds = e.p("c");
    write_credentials(&creds, USER, PASSWORD);
    let readable = e.p("readable");
    write_credentials(&readable, USER, PASSWORD);
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(&readable, fs::Permissions::from_mode(0o644)).unwrap();
    let not_pem = e.p("not.pem");
    fs::write(&not_pem, "hello\n").unwrap();
    let https = "oci+https://127.0.0.1:5443/fleet/apps";
    let plain = "oci://127.0.0.1:5000/fleet/apps";
    for (args, code, needle) in [
        (
            vec![
                "remote",
                "add",
                "f",
                https,
                "--ca",
                s(&ca.cert),
                "--credentials",
                s(&readable),
            ],
            2,
            "chmod 600",
        ),
        (
            vec!["remote", "add", "f", https, "--ca", s(&not_pem)],
            2,
            "holds no PEM certificate",
        ),
        (
            vec!["remote", "add", "f", https, "--ca", "/nonexistent.pem"],
            5,
            "/nonexistent.pem",
        ),
        (
            vec!["remote", "add", "f", plain, "--credentials", s(&creds)],
            2,
            "never sent over plain http",
        ),
        (
            vec![
                "publish",
                "/nonexistent.bundle",
                plain,
                "--credentials",
                s(&creds),
            ],
            2,
            "never sent over plain http",
        ),
    ] {
        let before = remotes(&e);
        let msg = e.fails(&args, code);
        assert!(
            msg.contains(needle),
            "{args:?}: {msg:?} should name {needle:?}"
        );
        assert!(!msg.contains(PASSWORD), "{msg}");
        assert_eq!(before, remotes(&e));
    }
    // A hand-written remote file is checked the same way when read.
    fs::create_dir_all(e.cfg.join("remotes.d")).unwrap();
    fs::write(
        e.cfg.join("remotes.d/hand.toml"),
        format!("url = \"{plain}\"\ncredentials = \"{}\"\n", creds.display()),
    )
    .unwrap();
    let msg = e.fails(&["remote", "list"], 2);
    assert!(
        msg.contains("hand.toml") && msg.contains("plain http"),
        "{msg}"
    );
    fs::write(
        e.cfg.join("remotes.d/hand.toml"),
        format!("url = \"{https}\"\ncredentials = \"relative/file\"\n"),
    )
    .unwrap();
    let msg = e.fails(&["remote", "list"], 2);
    assert!(
        msg.contains("credentials") && msg.contains("absolute"),
        "{msg}"
    );
}

#[test]
fn a_bundle_streams_from_an_https_url() {
    require_root!("installs write root-owned files");
    let e = Env::with_demo_app();
    let reg = SecureRegistry::start(e.dir.path(), RegistryAuth::None);
    let b = e.app_bundle("2.0.0");
    let out = e
        .ok(&[
            "--json",
            "publish",
            s(&b),
            &reg.url(REPO),
            "--ca",
            s(&reg.ca.cert),
        ])
        .json();
    let url = reg.https_url(&format!(
        "/v2/{REPO}/blobs/{}",
        out["digest"].as_str().unwrap()
    ));
    // The system's roots do not include the test CA: refused, nothing changed.
    e.assert_refused_keeps_v1(&["install", &url], 3, "TLS");
    // appmgr.toml's tls-ca-file names the roots for https URLs.
    let conf = e.cfg.join("appmgr.toml");
    let old = fs::read_to_string(&conf).unwrap_or_default();
    fs::write(
        &conf,
        format!("{old}tls-ca-file = \"{}\"\n", reg.ca.cert.display()),
    )
    .unwrap();
    let out = e.ok(&["--json", "install", &url]).json();
    assert_eq!(out["action"], "updated");
    assert_eq!(e.ok(&["run", "org.example.Hello"]).stdout, "hello 2.0.0\n");
    e.fsck_clean();
}
