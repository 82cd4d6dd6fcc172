//! `appmgr report`: the signed device report (docs/remotes.md "Device report"). It lists
//! what is installed, is signed with the device key made on first use, verifies with the
//! enrolled public key, and any change to it or another key fails verification (exit 3).
use appmgr_testkit::*;
use std::fs;
use std::os::unix::fs::PermissionsExt;

#[test]
fn the_device_report_lists_what_runs_and_its_signature_binds_it() {
    require_root!("installs write root-owned files");
    let e = Env::with_demo_app();
    e.ok(&["install", s(&e.app_bundle("2.0.0"))]);
    let r = e.ok(&["--json", "report"]).json();
    let report = &r["report"];
    assert_eq!(report["format"], 1);
    let apps = report["apps"].as_array().unwrap();
    let hello = apps
        .iter()
        .find(|a| a["id"] == "org.example.Hello")
        .unwrap();
    assert_eq!(hello["version"], "2.0.0");
    assert_eq!(hello["previous"], "1.0.0");
    assert_eq!(hello["highest_version"], "2.0.0");
    assert_eq!(hello["last_update"]["outcome"], "installed");
    assert!(apps
        .iter()
        .any(|a| a["id"] == "org.example.Platform" && a["kind"] == "runtime"));
    // The device key: made once, private to root, the same for every report.
    let key = e.state.join("device/report.key");
    assert_eq!(
        fs::metadata(&key).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert_eq!(r["signature"]["key"], report["device_key"]);
    let again = e.ok(&["--json", "report"]).json();
    assert_eq!(again["report"]["device_key"], report["device_key"]);

    let file = e.p("report.json");
    fs::write(&file, serde_json::to_vec_pretty(&r).unwrap()).unwrap();
    let pubkey = e.state.join("device/report.pub");
    let v = e
        .ok(&[
            "--json",
            "report",
            "--verify",
            s(&file),
            "--key",
            s(&pubkey),
        ])
        .json();
    assert_eq!(v["verified"], true);
    assert_eq!(v["apps"], apps.len());

    // A report that says something else than what was signed: refused.
    let mut forged = r.clone();
    forged["report"]["apps"]
        .as_array_mut()
        .unwrap()
        .iter_mut()
        .find(|a| a["id"] == "org.example.Hello")
        .unwrap()["version"] = "9.9.9".into();
    let bad = e.p("forged.json");
    fs::write(&bad, serde_json::to_vec(&forged).unwrap()).unwrap();
    let msg = e.fails(&["report", "--verify", s(&bad), "--key", s(&pubkey)], 3);
    assert!(msg.contains("does not verify"), "{msg}");
    // Another device's key (or a backend enrolling the wrong one): refused.
    e.ok(&["key", "generate", "--out", s(&e.p("other"))]);
    let msg = e.fails(
        &[
            "report",
            "--verify",
            s(&file),
            "--key",
            s(&e.p("other.pub")),
        ],
        3,
    );
    assert!(msg.contains("does not verify"), "{msg}");
    // The files checked are unchanged by the checks.
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&fs::read(&file).unwrap()).unwrap(),
        r
    );
}
