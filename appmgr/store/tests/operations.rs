//! Install, update, rollback, remove, list, info and fsck on a real ostree repo.
//! Every refusal also checks that nothing changed on disk and the store stays clean.

mod common;
use appmgr_store::{deployment_is_marked_corrupt, Store, StoreConfig, StoreError};
use appmgr_testkit::require_root;
use appmgr_types::ErrorClass;
use common::*;
use std::os::unix::fs::MetadataExt;

#[test]
fn install_runtime_and_app_deploys_hardlinked_root_owned_files() {
    require_root!("the store writes root-owned objects");
    let tmp = tempdir();
    let root = state(tmp.path());
    let store = open(&root);
    let lock = store.lock().unwrap();
    let rtr = runtime_ref("org.example.Platform");
    let app = app_ref("org.example.Hello");
    let rt_payload = Payload::app("platform", 1, 20, 20);
    let app_payload = Payload::app("hello", 1, 30, 10);
    let r1 = install(&store, &lock, &rtr, "1.0.0", None, &rt_payload, false).unwrap();
    assert_eq!(r1.uid, None, "runtimes get no uid");
    let r2 = install(
        &store,
        &lock,
        &app,
        "1.2.0",
        Some(rt("org.example.Platform")),
        &app_payload,
        false,
    )
    .unwrap();
    assert_eq!(r2.uid, Some(70000));
    assert_eq!(r2.files, 30 + 4);
    assert!(
        r2.objects_reused >= 1,
        "share/common and lib/libx.so.1 exist already"
    );

    let info = store.info(&lock, &app).unwrap();
    let cur = info.current.clone().unwrap();
    assert_eq!(cur.version, v("1.2.0"));
    assert_eq!(cur.commit, r2.commit);
    assert_eq!(cur.runtime, Some(rt("org.example.Platform")));
    assert!(info.previous.is_none());
    assert_eq!(
        std::fs::read(&cur.manifest).unwrap(),
        manifest_for(&app, "1.2.0")
    );
    assert_eq!(
        cur.path,
        root.join("deploy/app/org.example.Hello/x86_64/stable")
            .join(&r2.commit)
    );

    // Contents, modes, ownership.
    let f = &cur.files;
    let exe = std::fs::symlink_metadata(f.join("bin/hello")).unwrap();
    assert_eq!(exe.mode() & 0o7777, 0o755);
    assert_eq!((exe.uid(), exe.gid()), (0, 0));
    let data = std::fs::symlink_metadata(f.join("share/hello/data-3")).unwrap();
    assert_eq!(data.mode() & 0o7777, 0o644);
    assert_eq!(
        std::fs::read_link(f.join("lib/libx.so")).unwrap().to_str(),
        Some("libx.so.1")
    );
    assert_eq!(std::fs::read(f.join("share/hello/empty")).unwrap(), b"");
    assert_eq!(
        std::fs::metadata(f.join("share")).unwrap().mode() & 0o7777,
        0o755
    );
    // The payload's hardlink is the same inode.
    let alias = std::fs::symlink_metadata(f.join("bin/alias")).unwrap();
    assert_eq!(alias.ino(), exe.ino());
    // Identical files across the app and the runtime are one inode.
    let rt_files = store.info(&lock, &rtr).unwrap().current.unwrap().files;
    let a = std::fs::metadata(f.join("share/common")).unwrap();
    let b = std::fs::metadata(rt_files.join("share/common")).unwrap();
    assert_eq!((a.dev(), a.ino()), (b.dev(), b.ino()));
    assert!(a.nlink() >= 3, "object + two deployments");

    let listed = store.list(&lock).unwrap();
    assert_eq!(listed.len(), 2);
    assert_eq!(store.find(&lock, &app.id).unwrap(), vec![app.clone()]);
    assert_clean(&store, &lock);
}

#[test]
fn update_keeps_previous_and_rollback_swaps_with_stable_uid() {
    require_root!("the store writes root-owned objects");
    let tmp = tempdir();
    let root = state(tmp.path());
    let store = open(&root);
    let lock = store.lock().unwrap();
    let app = app_ref("org.example.Hello");
    let r1 = install(
        &store,
        &lock,
        &app,
        "1.0.0",
        None,
        &Payload::app("a", 1, 10, 5),
        false,
    )
    .unwrap();
    let r2 = install(
        &store,
        &lock,
        &app,
        "2.0.0",
        None,
        &Payload::app("a", 2, 10, 5),
        false,
    )
    .unwrap();
    assert_eq!(r2.replaced.as_ref().unwrap().commit, r1.commit);
    let info = store.info(&lock, &app).unwrap();
    assert_eq!(info.current.as_ref().unwrap().version, v("2.0.0"));
    assert_eq!(info.previous.as_ref().unwrap().commit, r1.commit);
    assert!(info.previous.as_ref().unwrap().files.join("bin/a").exists());
    let uid = info.uid;

    let back = store.rollback(&lock, &app).unwrap();
    assert_eq!(back.current.as_ref().unwrap().commit, r1.commit);
    assert_eq!(back.previous.as_ref().unwrap().commit, r2.commit);
    assert_eq!(back.uid, uid);
    assert_eq!(back.highest_version, v("2.0.0"));
    assert_eq!(store.info(&lock, &app).unwrap(), back);
    assert_clean(&store, &lock);

    // Roll forward again, then a third version drops the oldest deployment.
    store.rollback(&lock, &app).unwrap();
    let before = snapshot(&root).objects;
    let r3 = install(
        &store,
        &lock,
        &app,
        "3.0.0",
        None,
        &Payload::app("a", 3, 10, 5),
        false,
    )
    .unwrap();
    let info = store.info(&lock, &app).unwrap();
    assert_eq!(info.current.as_ref().unwrap().commit, r3.commit);
    assert_eq!(info.previous.as_ref().unwrap().commit, r2.commit);
    assert_eq!(info.uid, uid);
    assert!(!store
        .info(&lock, &app)
        .unwrap()
        .current
        .unwrap()
        .path
        .parent()
        .unwrap()
        .join(&r1.commit)
        .exists());
    let after = snapshot(&root).objects;
    let c1 = format!("{}/{}.commit", &r1.commit[..2], &r1.commit[2..]);
    assert!(
        before.contains(&c1) && !after.contains(&c1),
        "v1 commit pruned"
    );
    assert_clean(&store, &lock);
}

#[test]
fn same_version_redeploys_and_keeps_previous() {
    require_root!("the store writes root-owned objects");
    let tmp = tempdir();
    let root = state(tmp.path());
    let store = open(&root);
    let lock = store.lock().unwrap();
    let app = app_ref("org.example.Hello");
    let r1 = install(
        &store,
        &lock,
        &app,
        "1.0.0",
        None,
        &Payload::app("a", 1, 5, 5),
        false,
    )
    .unwrap();
    let r2 = install(
        &store,
        &lock,
        &app,
        "2.0.0",
        None,
        &Payload::app("a", 2, 5, 5),
        false,
    )
    .unwrap();
    let r2b = install(
        &store,
        &lock,
        &app,
        "2.0.0",
        None,
        &Payload::app("a", 2, 5, 5),
        false,
    )
    .unwrap();
    assert_ne!(r2b.commit, r2.commit, "a re-deploy gets a fresh deployment");
    let info = store.info(&lock, &app).unwrap();
    assert_eq!(info.current.as_ref().unwrap().commit, r2b.commit);
    assert_eq!(info.previous.as_ref().unwrap().commit, r1.commit);
    assert!(!root
        .join("deploy/app/org.example.Hello/x86_64/stable")
        .join(&r2.commit)
        .exists());
    assert_clean(&store, &lock);
}

fn assert_refused_unchanged(
    root: &std::path::Path,
    store: &Store,
    f: impl FnOnce() -> Result<appmgr_store::InstallReport, StoreError>,
) -> StoreError {
    let before = snapshot(root);
    let err = f().expect_err("must be refused");
    let lock = store.lock().unwrap();
    assert_eq!(
        snapshot(root),
        before,
        "refused operation changed the store: {err}"
    );
    assert_clean(store, &lock);
    err
}

#[test]
fn downgrade_is_refused_unless_allowed_even_after_remove() {
    require_root!("the store writes root-owned objects");
    let tmp = tempdir();
    let root = state(tmp.path());
    let store = open(&root);
    let app = app_ref("org.example.Hello");
    {
        let lock = store.lock().unwrap();
        install(
            &store,
            &lock,
            &app,
            "2.0.0",
            None,
            &Payload::app("a", 2, 5, 5),
            false,
        )
        .unwrap();
    }
    let err = assert_refused_unchanged(&root, &store, || {
        let lock = store.lock().unwrap();
        install(
            &store,
            &lock,
            &app,
            "1.9.9",
            None,
            &Payload::app("a", 1, 5, 5),
            false,
        )
    });
    assert!(matches!(err, StoreError::Downgrade { .. }), "{err}");
    assert_eq!(err.class(), ErrorClass::Conflict);
    assert!(
        err.to_string().contains("2.0.0") && err.to_string().contains("1.9.9"),
        "{err}"
    );

    let lock = store.lock().unwrap();
    let removed = store.remove(&lock, &app).unwrap();
    assert!(!removed.is_installed());
    assert_eq!(removed.highest_version, v("2.0.0"));
    drop(lock);
    let err = assert_refused_unchanged(&root, &store, || {
        let lock = store.lock().unwrap();
        install(
            &store,
            &lock,
            &app,
            "1.0.0",
            None,
            &Payload::app("a", 1, 5, 5),
            false,
        )
    });
    assert_eq!(err.class(), ErrorClass::Conflict);

    let lock = store.lock().unwrap();
    let r = install(
        &store,
        &lock,
        &app,
        "1.0.0",
        None,
        &Payload::app("a", 1, 5, 5),
        true,
    )
    .unwrap();
    let info = store.info(&lock, &app).unwrap();
    assert_eq!(info.current.unwrap().commit, r.commit);
    assert_eq!(
        info.highest_version,
        v("2.0.0"),
        "the highest version is never lowered"
    );
    assert_clean(&store, &lock);
}

#[test]
fn app_whose_runtime_is_missing_is_refused() {
    require_root!("the store writes root-owned objects");
    let tmp = tempdir();
    let root = state(tmp.path());
    let store = open(&root);
    let app = app_ref("org.example.Hello");
    let err = assert_refused_unchanged(&root, &store, || {
        let lock = store.lock().unwrap();
        install(
            &store,
            &lock,
            &app,
            "1.0.0",
            Some(rt("org.example.Platform")),
            &Payload::app("a", 1, 5, 5),
            false,
        )
    });
    assert!(matches!(err, StoreError::RuntimeMissing { .. }));
    assert_eq!(err.class(), ErrorClass::NotFound);
    assert!(
        err.to_string()
            .contains("runtime/org.example.Platform/x86_64/1"),
        "{err}"
    );
    // Also after the runtime was removed, and for an update of an installed app.
    let rtr = runtime_ref("org.example.Platform");
    let lock = store.lock().unwrap();
    install(
        &store,
        &lock,
        &rtr,
        "1.0.0",
        None,
        &Payload::app("p", 1, 3, 3),
        false,
    )
    .unwrap();
    install(
        &store,
        &lock,
        &app,
        "1.0.0",
        Some(rt("org.example.Platform")),
        &Payload::app("a", 1, 5, 5),
        false,
    )
    .unwrap();
    drop(lock);
    let err = assert_refused_unchanged(&root, &store, || {
        let lock = store.lock().unwrap();
        install(
            &store,
            &lock,
            &app,
            "1.1.0",
            Some(rt("org.example.Other")),
            &Payload::app("a", 2, 5, 5),
            false,
        )
    });
    assert!(err.to_string().contains("org.example.Other"), "{err}");
}

#[test]
fn runtime_in_use_by_current_or_previous_deployment_cannot_be_removed() {
    require_root!("the store writes root-owned objects");
    let tmp = tempdir();
    let root = state(tmp.path());
    let store = open(&root);
    let lock = store.lock().unwrap();
    let (ra, rb) = (runtime_ref("org.example.A"), runtime_ref("org.example.B"));
    let app = app_ref("org.example.Hello");
    install(
        &store,
        &lock,
        &ra,
        "1.0.0",
        None,
        &Payload::app("ra", 1, 3, 3),
        false,
    )
    .unwrap();
    install(
        &store,
        &lock,
        &rb,
        "1.0.0",
        None,
        &Payload::app("rb", 1, 3, 3),
        false,
    )
    .unwrap();
    install(
        &store,
        &lock,
        &app,
        "1.0.0",
        Some(rt("org.example.A")),
        &Payload::app("a", 1, 3, 3),
        false,
    )
    .unwrap();
    install(
        &store,
        &lock,
        &app,
        "2.0.0",
        Some(rt("org.example.B")),
        &Payload::app("a", 2, 3, 3),
        false,
    )
    .unwrap();
    drop(lock);
    for r in [&ra, &rb] {
        let before = snapshot(&root);
        let lock = store.lock().unwrap();
        let err = store.remove(&lock, r).expect_err("in use");
        assert!(matches!(err, StoreError::RuntimeInUse { .. }));
        assert_eq!(err.class(), ErrorClass::Conflict);
        assert!(
            err.to_string()
                .contains("app/org.example.Hello/x86_64/stable"),
            "{err}"
        );
        assert_eq!(snapshot(&root), before);
        assert_clean(&store, &lock);
    }
    // Once the app is gone, both can go.
    let lock = store.lock().unwrap();
    store.remove(&lock, &app).unwrap();
    store.remove(&lock, &ra).unwrap();
    store.remove(&lock, &rb).unwrap();
    assert_clean(&store, &lock);
}

#[test]
fn remove_deletes_deployments_refs_and_objects_and_keeps_the_uid() {
    require_root!("the store writes root-owned objects");
    let tmp = tempdir();
    let root = state(tmp.path());
    let store = open(&root);
    let lock = store.lock().unwrap();
    let (a, b) = (app_ref("org.example.A"), app_ref("org.example.B"));
    let empty_objects = snapshot(&root).objects;
    let ra = install(
        &store,
        &lock,
        &a,
        "1.0.0",
        None,
        &Payload::app("a", 1, 5, 0),
        false,
    )
    .unwrap();
    install(
        &store,
        &lock,
        &a,
        "1.1.0",
        None,
        &Payload::app("a", 2, 5, 0),
        false,
    )
    .unwrap();
    let with_a = snapshot(&root).objects;
    let rb = install(
        &store,
        &lock,
        &b,
        "1.0.0",
        None,
        &Payload::app("b", 9, 5, 0),
        false,
    )
    .unwrap();
    assert_eq!((ra.uid, rb.uid), (Some(70000), Some(70001)));

    let removed = store.remove(&lock, &b).unwrap();
    assert!(removed.current.is_none() && removed.previous.is_none());
    assert_eq!(
        removed.uid,
        Some(70001),
        "the uid stays with the removed app"
    );
    let snap = snapshot(&root);
    assert_eq!(snap.objects, with_a, "b's objects pruned, a's kept");
    assert!(
        !snap.refs.keys().any(|r| r.contains("org.example.B")),
        "{:?}",
        snap.refs
    );
    let bdir = root.join("deploy/app/org.example.B/x86_64/stable");
    assert_eq!(
        std::fs::read_dir(&bdir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect::<Vec<_>>(),
        vec!["state.json"]
    );
    let before = snapshot(&root);
    let err = store.remove(&lock, &b).expect_err("not installed");
    assert_eq!(err.class(), ErrorClass::NotFound);
    assert_eq!(snapshot(&root), before);
    assert!(store.find(&lock, &b.id).unwrap().is_empty());

    // b's uid is not reused (it still owns b's HOME, IPC objects, …), a's stays.
    let c = app_ref("org.example.C");
    let rc = install(
        &store,
        &lock,
        &c,
        "1.0.0",
        None,
        &Payload::app("c", 3, 2, 0),
        false,
    )
    .unwrap();
    assert_eq!(rc.uid, Some(70002));
    store.remove(&lock, &a).unwrap();
    store.remove(&lock, &c).unwrap();
    assert!(snapshot(&root)
        .objects
        .is_subset(&empty_objects.union(&with_a).cloned().collect()));
    assert!(
        snapshot(&root)
            .objects
            .iter()
            .all(|o| !o.ends_with(".file")),
        "all content pruned"
    );
    assert_clean(&store, &lock);
}

#[test]
fn rollback_without_previous_is_a_clear_error() {
    require_root!("the store writes root-owned objects");
    let tmp = tempdir();
    let root = state(tmp.path());
    let store = open(&root);
    let app = app_ref("org.example.Hello");
    let lock = store.lock().unwrap();
    let empty = snapshot(&root);
    let err = store.rollback(&lock, &app).expect_err("not installed");
    assert_eq!(err.class(), ErrorClass::NotFound);
    assert_eq!(snapshot(&root), empty);
    assert!(matches!(
        store.info(&lock, &app),
        Err(StoreError::NotInstalled { .. })
    ));
    install(
        &store,
        &lock,
        &app,
        "1.0.0",
        None,
        &Payload::app("a", 1, 3, 3),
        false,
    )
    .unwrap();
    let before = snapshot(&root);
    let err = store.rollback(&lock, &app).expect_err("no previous");
    assert!(matches!(err, StoreError::NoPrevious { .. }));
    assert_eq!(
        err.to_string(),
        "cannot roll back app/org.example.Hello/x86_64/stable: there is no previous deployment"
    );
    assert_eq!(snapshot(&root), before);
    assert_clean(&store, &lock);
}

#[derive(Debug)]
struct ReaderFailure;
impl std::fmt::Display for ReaderFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("payload digest mismatch")
    }
}
impl std::error::Error for ReaderFailure {}

#[test]
fn failing_import_discards_everything_and_keeps_the_reader_error() {
    require_root!("the store writes root-owned objects");
    let tmp = tempdir();
    let root = state(tmp.path());
    let store = open(&root);
    let app = app_ref("org.example.Hello");
    {
        let lock = store.lock().unwrap();
        install(
            &store,
            &lock,
            &app,
            "1.0.0",
            None,
            &Payload::app("a", 1, 5, 5),
            false,
        )
        .unwrap();
    }
    let big = Payload::app("a", 2, 40, 0).with(common::Entry::File(
        "share/big".into(),
        false,
        common::bytes(5, (appmgr_store::SPOOL_THRESHOLD + 100) as usize),
    ));
    let err = assert_refused_unchanged(&root, &store, || {
        let lock = store.lock().unwrap();
        let manifest = manifest_for(&app, "2.0.0");
        let new = appmgr_store::NewDeployment {
            ref_name: app.clone(),
            version: v("2.0.0"),
            runtime: None,
            manifest: &manifest,
            sbom: None,
            installed_size: big.size(),
        };
        store.install(&lock, &new, Default::default(), |sink| {
            big.feed(sink)?;
            Err(Box::new(ReaderFailure))
        })
    });
    let StoreError::Import { source, .. } = &err else {
        panic!("{err}")
    };
    assert!(source.downcast_ref::<ReaderFailure>().is_some());
    assert!(err.to_string().contains("payload digest mismatch"));
}

#[test]
fn inconsistent_entries_are_refused() {
    require_root!("the store writes root-owned objects");
    let tmp = tempdir();
    let root = state(tmp.path());
    let store = open(&root);
    let app = app_ref("org.example.Hello");
    {
        let lock = store.lock().unwrap();
        install(
            &store,
            &lock,
            &app,
            "1.0.0",
            None,
            &Payload::app("a", 1, 5, 5),
            false,
        )
        .unwrap();
    }
    use appmgr_bundle::payload::RelPath;
    type Feed =
        Box<dyn Fn(&mut dyn appmgr_bundle::PayloadSink) -> Result<(), appmgr_store::ImportError>>;
    let cases: Vec<(&str, Feed)> = vec![
        (
            "hardlink to an unseen file",
            Box::new(|s| {
                s.hardlink(
                    &RelPath::new("x").unwrap(),
                    &RelPath::new("nothing").unwrap(),
                )
            }),
        ),
        (
            "content shorter than its size",
            Box::new(|s| {
                let mut r: &[u8] = b"abc";
                s.file(&RelPath::new("x").unwrap(), false, 10, &mut r)
            }),
        ),
        (
            "content longer than its size",
            Box::new(|s| {
                let mut r: &[u8] = b"abcdef";
                s.file(&RelPath::new("x").unwrap(), false, 3, &mut r)
            }),
        ),
        (
            "same path twice",
            Box::new(|s| {
                let mut r: &[u8] = b"abc";
                s.file(&RelPath::new("x").unwrap(), false, 3, &mut r)?;
                let mut r: &[u8] = b"abc";
                s.file(&RelPath::new("x").unwrap(), false, 3, &mut r)
            }),
        ),
        (
            "file where a directory is",
            Box::new(|s| {
                s.directory(&RelPath::new("d").unwrap())?;
                s.symlink(&RelPath::new("d").unwrap(), "x")
            }),
        ),
    ];
    for (what, feed) in cases {
        let err = assert_refused_unchanged(&root, &store, || {
            let lock = store.lock().unwrap();
            let manifest = manifest_for(&app, "2.0.0");
            let new = appmgr_store::NewDeployment {
                ref_name: app.clone(),
                version: v("2.0.0"),
                runtime: None,
                manifest: &manifest,
                sbom: None,
                installed_size: 10,
            };
            store.install(&lock, &new, Default::default(), |sink| feed(sink))
        });
        assert!(matches!(err, StoreError::Import { .. }), "{what}: {err}");
        assert_eq!(err.class(), ErrorClass::Integrity, "{what}: {err}");
    }
}

#[test]
fn fsck_finds_corruption_marks_the_deployment_and_reinstall_repairs() {
    require_root!("the store writes root-owned objects");
    let tmp = tempdir();
    let root = state(tmp.path());
    let store = open(&root);
    let lock = store.lock().unwrap();
    let app = app_ref("org.example.Hello");
    let payload = Payload::app("a", 1, 5, 5);
    // 0.9.0 shares data-2 with 1.0.0, so the corruption hits the previous deployment too.
    install(
        &store,
        &lock,
        &app,
        "0.9.0",
        None,
        &Payload::app("a", 0, 5, 5),
        false,
    )
    .unwrap();
    install(&store, &lock, &app, "1.0.0", None, &payload, false).unwrap();
    assert_clean(&store, &lock);
    let cur = store.info(&lock, &app).unwrap().current.unwrap();
    let prev = store.info(&lock, &app).unwrap().previous.unwrap();
    assert!(!cur.marked_corrupt);

    // Flip a byte of an object (the deployment file is the same inode).
    let data = cur.files.join("share/a/data-2");
    let mut content = std::fs::read(&data).unwrap();
    content[10] ^= 1;
    std::fs::write(&data, &content).unwrap();
    // Replace another deployment file by a new inode with the same content.
    let other = cur.files.join("share/a/data-3");
    let same = std::fs::read(&other).unwrap();
    std::fs::remove_file(&other).unwrap();
    std::fs::write(&other, &same).unwrap();
    // And drop an extra file into the deployment.
    std::fs::write(cur.files.join("bin/extra"), b"x").unwrap();

    let report = store.fsck(&lock).unwrap();
    assert!(!report.is_clean());
    let text: Vec<String> = report.problems.iter().map(|p| p.to_string()).collect();
    assert!(
        text.iter()
            .any(|p| p.contains("does not match its checksum") && p.contains(".file")),
        "{text:#?}"
    );
    assert!(
        text.iter()
            .any(|p| p.contains("data-3") && p.contains("not the object's inode")),
        "{text:#?}"
    );
    assert!(
        text.iter()
            .any(|p| p.contains("bin/extra") && p.contains("unexpected")),
        "{text:#?}"
    );
    assert!(deployment_is_marked_corrupt(&cur.path));
    assert!(
        deployment_is_marked_corrupt(&prev.path),
        "the previous deployment shares the object"
    );
    assert!(
        store
            .info(&lock, &app)
            .unwrap()
            .current
            .unwrap()
            .marked_corrupt
    );

    let r = install(&store, &lock, &app, "1.0.0", None, &payload, false).unwrap();
    assert_eq!(r.objects_repaired, 1);
    let now = store.info(&lock, &app).unwrap().current.unwrap();
    assert!(!now.marked_corrupt);
    assert_eq!(
        std::fs::read(now.files.join("share/a/data-2")).unwrap()[10],
        content[10] ^ 1
    );
    // The previous deployment was relinked to the rewritten object: fsck clears its mark.
    assert_eq!(
        std::fs::read(prev.files.join("share/a/data-2")).unwrap()[10],
        content[10] ^ 1
    );
    assert_clean(&store, &lock);
    assert!(!deployment_is_marked_corrupt(&prev.path));
}

#[test]
fn uid_range_is_exhausted_cleanly() {
    require_root!("the store writes root-owned objects");
    let tmp = tempdir();
    let root = state(tmp.path());
    let store = Store::open(
        &root,
        StoreConfig {
            uid_range: 5000..=5001,
            ..Default::default()
        },
    )
    .unwrap();
    let lock = store.lock().unwrap();
    for (i, id) in ["org.e.A", "org.e.B"].iter().enumerate() {
        let r = install(
            &store,
            &lock,
            &app_ref(id),
            "1.0.0",
            None,
            &Payload::app("x", i as u64, 2, 0),
            false,
        )
        .unwrap();
        assert_eq!(r.uid, Some(5000 + i as u32));
    }
    drop(lock);
    let err = assert_refused_unchanged(&root, &store, || {
        let lock = store.lock().unwrap();
        install(
            &store,
            &lock,
            &app_ref("org.e.C"),
            "1.0.0",
            None,
            &Payload::app("x", 3, 2, 0),
            false,
        )
    });
    assert!(matches!(err, StoreError::UidsExhausted { .. }), "{err}");
}

#[test]
fn large_files_are_spooled_and_round_trip() {
    require_root!("the store writes root-owned objects");
    let tmp = tempdir();
    let root = state(tmp.path());
    let store = open(&root);
    let lock = store.lock().unwrap();
    let big = common::bytes(42, (appmgr_store::SPOOL_THRESHOLD * 2 + 12345) as usize);
    let payload =
        Payload::app("a", 1, 2, 2).with(common::Entry::File("share/big".into(), true, big.clone()));
    let r = install(
        &store,
        &lock,
        &app_ref("org.e.Big"),
        "1.0.0",
        None,
        &payload,
        false,
    )
    .unwrap();
    let files = r.deployment.files;
    assert_eq!(std::fs::read(files.join("share/big")).unwrap(), big);
    assert_eq!(
        std::fs::metadata(files.join("share/big")).unwrap().mode() & 0o7777,
        0o755
    );
    assert!(
        std::fs::read_dir(root.join("staging"))
            .unwrap()
            .next()
            .is_none(),
        "spool removed"
    );
    assert_clean(&store, &lock);
}

#[test]
fn leftovers_are_collected_at_lock_time() {
    require_root!("the store writes root-owned objects");
    let tmp = tempdir();
    let root = state(tmp.path());
    let store = open(&root);
    let app = app_ref("org.example.Hello");
    {
        let lock = store.lock().unwrap();
        install(
            &store,
            &lock,
            &app,
            "1.0.0",
            None,
            &Payload::app("a", 1, 3, 3),
            false,
        )
        .unwrap();
    }
    let clean = snapshot(&root);
    // Plant leftovers of an interrupted operation.
    std::fs::create_dir_all(root.join("staging/deploy-1-1/files")).unwrap();
    let dep = root.join("deploy/app/org.example.Hello/x86_64/stable");
    std::fs::create_dir_all(dep.join("0000dead/files")).unwrap();
    std::fs::create_dir_all(root.join("deploy/app/org.example.Ghost/x86_64/stable/abcd")).unwrap();
    std::fs::write(dep.join(".state.json.tmp"), b"{").unwrap();
    let commit = clean.refs["app/org.example.Hello/x86_64/stable"].clone();
    store_set_ref(&root, "app/org.example.Other/x86_64/stable", &commit);
    // A ref torn by a power cut (refs are derived, written without fsync).
    std::fs::write(
        root.join("repo/refs/heads/app/org.example.Hello/x86_64/stable"),
        b"",
    )
    .unwrap();
    let lock = store.lock().unwrap();
    assert!(lock.collected.len() >= 6, "{:?}", lock.collected);
    assert!(
        lock.collected.iter().any(|c| c.contains("damaged ref")),
        "{:?}",
        lock.collected
    );
    assert_eq!(snapshot(&root), clean);
    assert_clean(&store, &lock);
}

fn store_set_ref(root: &std::path::Path, name: &str, commit: &str) {
    let out = std::process::Command::new("ostree")
        .args([
            &format!("--repo={}", root.join("repo").display()),
            "refs",
            "--create",
            name,
            commit,
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_lost_deployment_directory_is_checked_out_again_from_its_commit() {
    require_root!("the store writes root-owned objects");
    let tmp = tempdir();
    let root = state(tmp.path());
    let store = open(&root);
    let app = app_ref("org.example.Hello");
    let payload = Payload::app("a", 1, 5, 5);
    let r = {
        let lock = store.lock().unwrap();
        install(&store, &lock, &app, "1.0.0", None, &payload, false).unwrap()
    };
    let manifest = std::fs::read(&r.deployment.manifest).unwrap();
    std::fs::remove_dir_all(&r.deployment.path).unwrap();
    let lock = store.lock().unwrap();
    assert!(
        lock.collected.iter().any(|c| c.contains("redeployed")),
        "{:?}",
        lock.collected
    );
    assert_eq!(std::fs::read(&r.deployment.manifest).unwrap(), manifest);
    assert!(r.deployment.files.join("bin/a").exists());
    assert_clean(&store, &lock);
}

#[test]
fn an_unreadable_record_is_reported_and_left_alone_while_other_refs_work() {
    require_root!("the store writes root-owned objects");
    let tmp = tempdir();
    let root = state(tmp.path());
    let store = open(&root);
    let (a, b) = (app_ref("org.example.A"), app_ref("org.example.B"));
    {
        let lock = store.lock().unwrap();
        install(
            &store,
            &lock,
            &a,
            "1.0.0",
            None,
            &Payload::app("a", 1, 3, 3),
            false,
        )
        .unwrap();
        install(
            &store,
            &lock,
            &b,
            "1.0.0",
            None,
            &Payload::app("b", 2, 3, 3),
            false,
        )
        .unwrap();
    }
    let rec = root.join("deploy/app/org.example.B/x86_64/stable/state.json");
    std::fs::write(&rec, b"{ not json").unwrap();
    let before = snapshot(&root);
    let lock = store.lock().unwrap();
    assert_eq!(
        snapshot(&root),
        before,
        "recovery must not touch the ref of a bad record"
    );
    let report = store.fsck(&lock).unwrap();
    assert_eq!(report.problems.len(), 1, "{:#?}", report.problems);
    assert!(report.problems[0]
        .to_string()
        .contains("invalid state record"));
    let err = store.rollback(&lock, &b).expect_err("fails closed");
    assert!(matches!(err, StoreError::BadRecord { .. }), "{err}");
    // The other app is unaffected.
    assert!(store.info(&lock, &a).unwrap().is_installed());
    assert_eq!(snapshot(&root), before);
}

/// Versions are ordered per ref, and the branch is part of the ref: a lower version of the
/// same ID on another branch is another ref's first install, not a downgrade. Each
/// branch keeps its own `highest-version`, and a downgrade within a branch stays refused.
#[test]
fn lower_version_on_another_branch_is_not_a_downgrade() {
    require_root!("the store writes root-owned objects");
    let tmp = tempdir();
    let root = state(tmp.path());
    let store = open(&root);
    let stable = app_ref("org.example.Hello");
    let beta: appmgr_types::RefName = "app/org.example.Hello/x86_64/beta".parse().unwrap();
    let payload = Payload::app("a", 1, 5, 5);
    let lock = store.lock().unwrap();
    install(&store, &lock, &stable, "2.0.0", None, &payload, false).unwrap();
    let stable_before = store.info(&lock, &stable).unwrap();

    // 1.0.0 on `beta`, below stable's 2.0.0 and without allow-downgrade: accepted.
    let r = install(&store, &lock, &beta, "1.0.0", None, &payload, false).unwrap();
    assert!(r.replaced.is_none(), "a first install of the beta ref");
    let beta_info = store.info(&lock, &beta).unwrap();
    assert_eq!(beta_info.current.as_ref().unwrap().version, v("1.0.0"));
    assert_eq!(beta_info.highest_version, v("1.0.0"));
    assert!(beta_info.uid.is_some() && beta_info.uid != stable_before.uid);
    // The stable ref and its record are untouched, highest version included.
    assert_eq!(store.info(&lock, &stable).unwrap(), stable_before);
    assert_eq!(stable_before.highest_version, v("2.0.0"));
    drop(lock);

    // Within a branch the rule is unchanged: 1.5.0 on stable is still a downgrade...
    let err = assert_refused_unchanged(&root, &store, || {
        let lock = store.lock().unwrap();
        install(&store, &lock, &stable, "1.5.0", None, &payload, false)
    });
    assert!(matches!(err, StoreError::Downgrade { .. }), "{err}");
    assert!(err.to_string().contains("stable"), "{err}");
    // ...and so is going back below 1.0.0 on beta, after beta moved up.
    {
        let lock = store.lock().unwrap();
        install(&store, &lock, &beta, "3.0.0", None, &payload, false).unwrap();
        assert_eq!(store.info(&lock, &stable).unwrap(), stable_before);
    }
    let err = assert_refused_unchanged(&root, &store, || {
        let lock = store.lock().unwrap();
        install(&store, &lock, &beta, "2.5.0", None, &payload, false)
    });
    assert!(matches!(err, StoreError::Downgrade { .. }), "{err}");
    assert!(err.to_string().contains("beta"), "{err}");
    let lock = store.lock().unwrap();
    assert_clean(&store, &lock);
}

/// A payload tar whose PAX `size` disagrees with its ustar size, fed through the bundle
/// crate's real parser into the store's importer: refused, with nothing on disk changed.
#[test]
fn pax_size_disagreement_is_refused_before_anything_is_stored() {
    require_root!("the store writes root-owned objects");
    let tmp = tempdir();
    let root = state(tmp.path());
    let store = open(&root);
    let app = app_ref("org.example.Hello");
    {
        let lock = store.lock().unwrap();
        install(
            &store,
            &lock,
            &app,
            "1.0.0",
            None,
            &Payload::app("a", 1, 5, 5),
            false,
        )
        .unwrap();
    }
    // ustar says 1 byte, PAX says 1024; a good file comes first so staging is not empty.
    let mut tar = tar_member(b"good", b'0', b"ok");
    tar.extend(tar_member(b"PaxHeaders/f", b'x', b"13 size=1024\n"));
    let mut f = tar_member(b"f", b'0', &[b'x'; 1024]);
    f[124..136].copy_from_slice(b"00000000001\0");
    tar_checksum(&mut f);
    tar.extend(f);
    tar.extend([0u8; 1024]);
    let err = assert_refused_unchanged(&root, &store, || {
        let lock = store.lock().unwrap();
        let manifest = manifest_for(&app, "2.0.0");
        let new = appmgr_store::NewDeployment {
            ref_name: app.clone(),
            version: v("2.0.0"),
            runtime: None,
            manifest: &manifest,
            sbom: None,
            installed_size: 3,
        };
        store.install(&lock, &new, Default::default(), |sink| {
            let limits = appmgr_bundle::Limits {
                max_entries: 10,
                max_installed_size: 1 << 20,
                max_stream_bytes: 1 << 20,
            };
            appmgr_bundle::parse_payload(&tar[..], limits, sink)
                .map(|_| ())
                .map_err(appmgr_store::ImportError::from)
        })
    });
    assert!(matches!(err, StoreError::Import { .. }), "{err}");
    let msg = format!("{err}: {}", std::error::Error::source(&err).unwrap());
    assert!(
        msg.contains("\"f\"")
            && msg.contains("PAX size 1024 disagrees with the ustar header size 1"),
        "{msg}"
    );
    let lock = store.lock().unwrap();
    assert_eq!(
        store.info(&lock, &app).unwrap().current.unwrap().version,
        v("1.0.0")
    );
}

fn tar_checksum(h: &mut [u8]) {
    h[148..156].copy_from_slice(b"        ");
    let sum: u32 = h[..512].iter().map(|b| *b as u32).sum();
    h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
}

/// One ustar member (header, data, padding).
fn tar_member(name: &[u8], typeflag: u8, data: &[u8]) -> Vec<u8> {
    let mut h = vec![0u8; 512];
    h[..name.len()].copy_from_slice(name);
    h[100..108].copy_from_slice(b"0000644\0");
    h[108..116].copy_from_slice(b"0000000\0");
    h[116..124].copy_from_slice(b"0000000\0");
    h[124..136].copy_from_slice(format!("{:011o}\0", data.len()).as_bytes());
    h[136..148].copy_from_slice(b"00000000000\0");
    h[156] = typeflag;
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    tar_checksum(&mut h);
    h.extend_from_slice(data);
    h.resize(h.len().div_ceil(512) * 512, 0);
    h
}
