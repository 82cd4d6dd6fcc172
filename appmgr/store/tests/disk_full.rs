//! A full disk during install: a clean refusal (free-space check) or a clean failure
//! (ENOSPC in the middle of writing), with nothing left behind and the old version
//! intact. Runs on a small tmpfs, so it needs root (as the privileged tests do).

mod common;
use appmgr_store::{InstallOptions, NewDeployment, StoreError};
use appmgr_testkit::require_root;
use common::*;
use std::path::{Path, PathBuf};
use std::process::Command;

struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Tmpfs {
        let out = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0755"),
                "appmgr-test",
            ])
            .arg(dir)
            .output()
            .expect("run mount");
        assert!(
            out.status.success(),
            "mounting a tmpfs needs root: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Tmpfs(dir.to_path_buf())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

fn used_bytes(p: &Path) -> u64 {
    let st = rustix::fs::statvfs(p).unwrap();
    (st.f_blocks - st.f_bfree) * st.f_frsize
}

#[test]
fn disk_full_is_refused_or_fails_cleanly_and_leaves_the_old_version() {
    require_root!("mounts a tmpfs");
    let tmp = tempdir();
    let _fs = Tmpfs::mount(tmp.path(), "40M");
    let root = state(tmp.path());
    let store = open(&root);
    let app = app_ref("org.example.Full");
    let v1 = Payload::app("full", 1, 50, 50);
    {
        let lock = store.lock().unwrap();
        install(&store, &lock, &app, "1.0.0", None, &v1, false).unwrap();
    }
    let before = snapshot(&root);
    let used = used_bytes(&root);

    // 1. The declared size does not fit: refused before anything is written.
    let huge = Payload::app("full", 2, 10, 0).with(Entry::File(
        "share/huge".into(),
        false,
        bytes(1, 30 << 20),
    ));
    let err = {
        let lock = store.lock().unwrap();
        install(&store, &lock, &app, "2.0.0", None, &huge, false).expect_err("no space")
    };
    assert!(matches!(err, StoreError::NoSpace { .. }), "{err}");
    assert!(err.is_no_space());
    assert_eq!(snapshot(&root), before);
    assert_eq!(used_bytes(&root), used);

    // 2. The declared size lies: the disk fills up while objects are written, whether
    //    they are spooled (large files) or buffered (small ones).
    let spooled = Payload::app("full", 3, 10, 0)
        .with(Entry::File("share/a".into(), false, bytes(2, 15 << 20)))
        .with(Entry::File("share/b".into(), false, bytes(3, 15 << 20)))
        .with(Entry::File("share/c".into(), false, bytes(4, 15 << 20)));
    let mut buffered = Payload::app("full", 4, 10, 0);
    for i in 0..12 {
        buffered = buffered.with(Entry::File(
            format!("share/m{i}"),
            false,
            bytes(10 + i, 4 << 20),
        ));
    }
    for (what, p) in [("spooled", &spooled), ("buffered", &buffered)] {
        let lock = store.lock().unwrap();
        let manifest = manifest_for(&app, "2.0.0");
        let new = NewDeployment {
            ref_name: app.clone(),
            version: v("2.0.0"),
            runtime: None,
            manifest: &manifest,
            sbom: None,
            installed_size: 1,
        };
        let err = store
            .install(&lock, &new, InstallOptions::default(), |sink| p.feed(sink))
            .expect_err("disk full");
        assert!(err.is_no_space(), "{what}: {err}");
        drop(lock);
        let lock = store.lock().unwrap();
        assert_eq!(snapshot(&root), before, "{what}");
        assert!(
            used_bytes(&root) <= used + (64 << 10),
            "{what}: space not given back"
        );
        assert_clean(&store, &lock);
        let cur = store.info(&lock, &app).unwrap().current.unwrap();
        assert_eq!(cur.version, v("1.0.0"));
        assert!(cur.files.join("bin/full").exists());
    }

    // 3. The store still works: a version that fits installs.
    let lock = store.lock().unwrap();
    install(
        &store,
        &lock,
        &app,
        "2.0.0",
        None,
        &Payload::app("full", 5, 50, 25),
        false,
    )
    .unwrap();
    assert_clean(&store, &lock);
}
