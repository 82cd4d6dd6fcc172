//! The view over hand-written state directories: the record format of docs/store.md is
//! read without a store (no repo, no lock, no libostree), a record that lies about its ref
//! or does not parse is refused with its path, and removed refs are not listed.
use appmgr_state::{View, ViewError, CORRUPT_MARKER};
use appmgr_types::{AppId, RefName};
use std::fs;
use std::path::Path;

const HELLO: &str = "app/org.example.Hello/x86_64/stable";

fn write_record(state: &Path, r: &str, json: &str) -> std::path::PathBuf {
    let dir = state.join("deploy").join(r);
    fs::create_dir_all(&dir).unwrap();
    fs::write(dir.join("state.json"), json).unwrap();
    dir
}

fn record(r: &str, current: &str) -> String {
    format!(
        r#"{{
  "ref": "{r}",
  "current": {current},
  "previous": {{ "commit": "c1", "version": "1.1.0", "runtime": "org.example.Platform/x86_64/1", "installed-size": 104000000 }},
  "highest-version": "1.2.0",
  "uid": 70000
}}"#
    )
}

const CURRENT: &str = r#"{ "commit": "c2", "version": "1.2.0", "runtime": "org.example.Platform/x86_64/1", "installed-size": 104857600 }"#;

#[test]
fn documented_record_is_read_without_a_store() {
    let d = tempfile::tempdir().unwrap();
    let dir = write_record(d.path(), HELLO, &record(HELLO, CURRENT));
    fs::create_dir_all(dir.join("c1")).unwrap();
    fs::write(dir.join("c1").join(CORRUPT_MARKER), "").unwrap();
    let view = View::new(d.path());
    let r: RefName = HELLO.parse().unwrap();
    let info = view.info(&r).unwrap().expect("a record");
    assert_eq!(info.uid, Some(70000));
    assert_eq!(info.highest_version.to_string(), "1.2.0");
    let cur = info.current.as_ref().unwrap();
    assert_eq!(cur.commit, "c2");
    assert_eq!(cur.installed_size, 104857600);
    assert_eq!(cur.path, dir.join("c2"));
    assert_eq!(cur.files, dir.join("c2/files"));
    assert_eq!(cur.manifest, dir.join("c2/manifest.toml"));
    assert!(!cur.marked_corrupt);
    assert!(info.previous.as_ref().unwrap().marked_corrupt);
    let listed = view.list_installed().unwrap();
    assert_eq!(listed, vec![info.clone()]);
    let id = AppId::new("org.example.Hello").unwrap();
    assert_eq!(view.installed(&id).unwrap(), vec![info]);
    // Reading created nothing: no lock, no repo, no staging.
    let mut names: Vec<_> = fs::read_dir(d.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    names.sort();
    assert_eq!(names, ["deploy"]);
    assert_eq!(view.generation(), Some(0));
}

#[test]
fn removed_refs_are_not_installed() {
    let d = tempfile::tempdir().unwrap();
    write_record(d.path(), HELLO, &record(HELLO, "null").replace(
        r#""previous": { "commit": "c1", "version": "1.1.0", "runtime": "org.example.Platform/x86_64/1", "installed-size": 104000000 }"#,
        r#""previous": null"#,
    ));
    let view = View::new(d.path());
    assert!(view.list_installed().unwrap().is_empty());
    let info = view.info(&HELLO.parse().unwrap()).unwrap().unwrap();
    assert!(!info.is_installed());
    assert_eq!(info.uid, Some(70000));
}

#[test]
fn record_naming_another_ref_is_refused() {
    let d = tempfile::tempdir().unwrap();
    let other = "app/org.example.Other/x86_64/stable";
    let dir = write_record(d.path(), HELLO, &record(other, CURRENT));
    let e = View::new(d.path())
        .info(&HELLO.parse().unwrap())
        .unwrap_err();
    assert!(matches!(e, ViewError::BadRecord { .. }), "{e:?}");
    let msg = e.to_string();
    assert!(
        msg.contains(&dir.join("state.json").display().to_string()) && msg.contains(other),
        "{msg}"
    );
    assert_eq!(e.class(), appmgr_types::ErrorClass::Integrity);
}

#[test]
fn unknown_field_is_refused_with_the_path() {
    let d = tempfile::tempdir().unwrap();
    let json = record(HELLO, CURRENT).replace("\"uid\"", "\"owner\"");
    let dir = write_record(d.path(), HELLO, &json);
    let e = View::new(d.path()).list_installed().unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.contains(&dir.join("state.json").display().to_string()) && msg.contains("owner"),
        "{msg}"
    );
    assert_eq!(e.class(), appmgr_types::ErrorClass::Integrity);
}
