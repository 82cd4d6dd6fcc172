//! uid lifecycle: an app ref keeps its uid for life (also across remove), allocation is
//! monotonic and persistent (`STATE/uids.json`), exhaustion is a clean refusal, and stores
//! written by older versions (which released the uid at remove) still load and never hand
//! a uid that still owns something to another app.

mod common;
use appmgr_store::{Store, StoreConfig, StoreError, StoreLock};
use appmgr_testkit::require_root;
use appmgr_types::ErrorClass;
use common::*;
use std::path::Path;

fn payload(seed: u64) -> Payload {
    Payload::app("u", seed, 2, 0)
}

fn uid_of(store: &Store, lock: &StoreLock, id: &str) -> Option<u32> {
    store.info(lock, &app_ref(id)).unwrap().uid
}

/// Rewrites a record as appmgr before uid-for-life wrote it after a remove: `uid: null`.
fn forget_uid_like_old_appmgr(root: &Path, id: &str) {
    let p = root.join(format!("deploy/app/{id}/x86_64/stable/state.json"));
    let mut v: serde_json::Value = serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap();
    assert!(
        v["current"].is_null(),
        "only removed records lost their uid"
    );
    v["uid"] = serde_json::Value::Null;
    std::fs::write(&p, serde_json::to_vec_pretty(&v).unwrap()).unwrap();
}

fn make_home(root: &Path, id: &str, uid: u32) {
    let d = root.join("data").join(id);
    std::fs::create_dir_all(&d).unwrap();
    std::fs::write(d.join("secret"), b"only for the owner\n").unwrap();
    rustix::fs::chown(
        &d,
        Some(rustix::fs::Uid::from_raw(uid)),
        Some(rustix::fs::Gid::from_raw(uid)),
    )
    .unwrap();
}

#[test]
fn removed_uid_goes_to_no_other_app_and_comes_back_on_reinstall() {
    require_root!("the store writes root-owned objects");
    let tmp = tempdir();
    let root = state(tmp.path());
    let store = open(&root);
    let lock = store.lock().unwrap();
    let (a, b) = (app_ref("org.example.A"), app_ref("org.example.B"));
    let ra = install(&store, &lock, &a, "1.0.0", None, &payload(1), false).unwrap();
    assert_eq!(ra.uid, Some(70000));

    let removed = store.remove(&lock, &a).unwrap();
    assert!(!removed.is_installed());
    assert_eq!(removed.uid, Some(70000), "the removed record keeps its uid");

    let rb = install(&store, &lock, &b, "1.0.0", None, &payload(2), false).unwrap();
    assert_eq!(rb.uid, Some(70001), "B must not get A's uid");

    let again = install(&store, &lock, &a, "1.0.0", None, &payload(1), false).unwrap();
    assert_eq!(again.uid, Some(70000), "a reinstall gets its own uid back");
    assert_eq!(uid_of(&store, &lock, "org.example.B"), Some(70001));
    assert_clean(&store, &lock);
}

#[test]
fn high_water_mark_is_persistent_and_survives_reopen() {
    require_root!("the store writes root-owned objects");
    let tmp = tempdir();
    let root = state(tmp.path());
    {
        let store = open(&root);
        let lock = store.lock().unwrap();
        for (i, id) in ["org.example.A", "org.example.B"].iter().enumerate() {
            install(
                &store,
                &lock,
                &app_ref(id),
                "1.0.0",
                None,
                &payload(i as u64),
                false,
            )
            .unwrap();
        }
        store.remove(&lock, &app_ref("org.example.B")).unwrap();
    }
    let mark: serde_json::Value =
        serde_json::from_slice(&std::fs::read(root.join("uids.json")).unwrap()).unwrap();
    assert_eq!(mark, serde_json::json!({"highest-allocated": 70001}));
    // Even with the record's uid gone (as an older appmgr left it), the mark alone keeps
    // 70001 from being reused after a reopen.
    forget_uid_like_old_appmgr(&root, "org.example.B");
    let store = open(&root);
    let lock = store.lock().unwrap();
    let rc = install(
        &store,
        &lock,
        &app_ref("org.example.C"),
        "1.0.0",
        None,
        &payload(3),
        false,
    )
    .unwrap();
    assert_eq!(rc.uid, Some(70002));
    assert_clean(&store, &lock);
}

#[test]
fn exhausted_range_is_a_clear_refusal_that_writes_nothing() {
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
    {
        let lock = store.lock().unwrap();
        for (i, id) in ["org.e.A", "org.e.B"].iter().enumerate() {
            let r = install(
                &store,
                &lock,
                &app_ref(id),
                "1.0.0",
                None,
                &payload(i as u64),
                false,
            )
            .unwrap();
            assert_eq!(r.uid, Some(5000 + i as u32));
        }
        // Removing frees no uid: both stay reserved for their apps.
        store.remove(&lock, &app_ref("org.e.A")).unwrap();
        store.remove(&lock, &app_ref("org.e.B")).unwrap();
    }
    let before = snapshot(&root);
    let err = {
        let lock = store.lock().unwrap();
        install(
            &store,
            &lock,
            &app_ref("org.e.C"),
            "1.0.0",
            None,
            &payload(3),
            false,
        )
        .expect_err("no uid left")
    };
    assert!(matches!(err, StoreError::UidsExhausted { .. }), "{err}");
    assert_eq!(err.class(), ErrorClass::Other, "exit code 1");
    let msg = err.to_string();
    assert!(
        msg.contains("org.e.C") && msg.contains("5000-5001"),
        "{msg}"
    );
    let lock = store.lock().unwrap();
    assert_eq!(snapshot(&root), before, "a refused install wrote something");
    assert!(!root.join("deploy/app/org.e.C").exists());
    // The apps that own the range can still come back.
    let ra = install(
        &store,
        &lock,
        &app_ref("org.e.A"),
        "1.0.0",
        None,
        &payload(0),
        false,
    )
    .unwrap();
    assert_eq!(ra.uid, Some(5000));
    assert_clean(&store, &lock);
}

/// A store written by an older appmgr: A was removed (record without uid), its HOME is
/// still owned by its old uid, nobody else got that uid. The reinstall gets it back, so
/// the app can open its HOME.
#[test]
fn old_store_removed_app_gets_the_uid_of_its_home_back() {
    require_root!("chown of a data directory");
    let tmp = tempdir();
    let root = state(tmp.path());
    let store = open(&root);
    let lock = store.lock().unwrap();
    let a = app_ref("org.example.A");
    install(&store, &lock, &a, "1.0.0", None, &payload(1), false).unwrap();
    install(
        &store,
        &lock,
        &app_ref("org.example.Keep"),
        "1.0.0",
        None,
        &payload(2),
        false,
    )
    .unwrap();
    store.remove(&lock, &a).unwrap();
    make_home(&root, "org.example.A", 70000);
    forget_uid_like_old_appmgr(&root, "org.example.A");
    std::fs::remove_file(root.join("uids.json")).unwrap();
    drop(lock);

    let store = open(&root);
    let lock = store.lock().unwrap();
    let info = store.info(&lock, &a).unwrap();
    assert_eq!(info.uid, None, "the old record still loads");
    let again = install(&store, &lock, &a, "1.0.0", None, &payload(1), false).unwrap();
    assert_eq!(again.uid, Some(70000));
    // A new app gets a uid above everything seen, not a gap.
    let rn = install(
        &store,
        &lock,
        &app_ref("org.example.New"),
        "1.0.0",
        None,
        &payload(3),
        false,
    )
    .unwrap();
    assert_eq!(rn.uid, Some(70002));
    assert_clean(&store, &lock);
}

/// A store written by an older appmgr where the uid was already recycled: A's HOME is
/// owned by the uid B holds now. A must not get it (that would merge A and B); it gets a
/// fresh one. And a removed app's HOME owned by a uid no record names still blocks that
/// uid for every other app.
#[test]
fn old_store_recycled_uid_is_not_given_out_again() {
    require_root!("chown of a data directory");
    let tmp = tempdir();
    let root = state(tmp.path());
    let store = open(&root);
    let lock = store.lock().unwrap();
    let (a, b) = (app_ref("org.example.A"), app_ref("org.example.B"));
    install(&store, &lock, &b, "1.0.0", None, &payload(2), false).unwrap();
    assert_eq!(uid_of(&store, &lock, "org.example.B"), Some(70000));
    install(&store, &lock, &a, "1.0.0", None, &payload(1), false).unwrap();
    store.remove(&lock, &a).unwrap();
    // As the old code left it: A's HOME owned by 70000 (its uid before B took it over),
    // A's record without uid, a HOME of a removed D owned by 70005, no mark.
    make_home(&root, "org.example.A", 70000);
    make_home(&root, "org.example.B", 70000);
    make_home(&root, "org.example.D", 70005);
    forget_uid_like_old_appmgr(&root, "org.example.A");
    std::fs::remove_file(root.join("uids.json")).unwrap();
    drop(lock);

    let store = open(&root);
    let lock = store.lock().unwrap();
    let again = install(&store, &lock, &a, "1.0.0", None, &payload(1), false).unwrap();
    assert_eq!(
        again.uid,
        Some(70006),
        "neither B's uid nor D's leftover uid"
    );
    assert_eq!(uid_of(&store, &lock, "org.example.B"), Some(70000));
    assert_clean(&store, &lock);
}
