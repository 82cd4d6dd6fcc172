//! The app uids as users and groups, published as systemd user records
//! (`/run/userdb/NAME.user`, `UID.user`, `NAME.group`, `GID.group`) that nss-systemd
//! resolves. dbus-daemon serves a uid and applies `<policy user="UID">` only when NSS
//! resolves it, and `ps`/`ls -l` show `appmgr-UID` instead of a bare number.
//!
//! Each app uid becomes user and group `appmgr-UID` (real name: the app ID), with no home
//! and no shell. Records appmgrd wrote for uids no longer installed are removed; records
//! of anyone else are never touched.

use appmgr_policy::BusPolicyEntry;
use serde_json::json;
use std::collections::BTreeSet;
use std::path::Path;

const PREFIX: &str = "appmgr-";

/// Writes `dir/name` unless it already holds `bytes` (nss-systemd readers see no churn).
fn write_file(dir: &Path, name: &str, bytes: &[u8]) -> std::io::Result<()> {
    let path = dir.join(name);
    if std::fs::read(&path).is_ok_and(|old| old == bytes) {
        return Ok(());
    }
    crate::write_atomic(&path, bytes)
}

fn link(dir: &Path, name: &str, target: &str) -> std::io::Result<()> {
    let path = dir.join(name);
    if std::fs::read_link(&path).is_ok_and(|t| t == Path::new(target)) {
        return Ok(());
    }
    let tmp = dir.join(format!(".{name}.tmp"));
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(target, &tmp)?;
    std::fs::rename(&tmp, &path)
}

/// Writes the records of `entries` into `dir` and removes appmgrd's stale ones.
pub fn publish(dir: &Path, entries: &[BusPolicyEntry]) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let mut keep = BTreeSet::new();
    for e in entries {
        if e.uid == 0 {
            continue;
        }
        let name = format!("{PREFIX}{}", e.uid);
        let user = json!({
            "userName": name,
            "uid": e.uid,
            "gid": e.uid,
            "realName": e.app_id.as_str(),
            "homeDirectory": "/nonexistent",
            "shell": "/usr/sbin/nologin",
            "disposition": "system",
            "locked": true,
        });
        let group = json!({"groupName": name, "gid": e.uid, "disposition": "system"});
        for (file, value) in [
            (format!("{name}.user"), user),
            (format!("{name}.group"), group),
        ] {
            write_file(dir, &file, value.to_string().as_bytes())?;
            keep.insert(file);
        }
        for kind in ["user", "group"] {
            let l = format!("{}.{kind}", e.uid);
            link(dir, &l, &format!("{name}.{kind}"))?;
            keep.insert(l);
        }
    }
    for ent in std::fs::read_dir(dir)?.filter_map(Result::ok) {
        let fname = ent.file_name().to_string_lossy().into_owned();
        if keep.contains(&fname) {
            continue;
        }
        let ours = fname.starts_with(PREFIX)
            || std::fs::read_link(ent.path())
                .is_ok_and(|t| t.to_string_lossy().starts_with(PREFIX));
        let record = fname.ends_with(".user") || fname.ends_with(".group");
        if ours && record {
            std::fs::remove_file(ent.path())?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use appmgr_types::AppId;

    fn e(id: &str, uid: u32) -> BusPolicyEntry {
        BusPolicyEntry {
            app_id: AppId::new(id).unwrap(),
            uid,
            talk: vec![],
            own: vec![],
        }
    }

    #[test]
    fn records_are_written_linked_and_pruned() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("alice.user"), "{}").unwrap();
        publish(
            d.path(),
            &[e("org.example.A", 70001), e("org.example.B", 70002)],
        )
        .unwrap();
        let u: serde_json::Value =
            serde_json::from_slice(&std::fs::read(d.path().join("70001.user")).unwrap()).unwrap();
        assert_eq!(u["userName"], "appmgr-70001");
        assert_eq!(u["realName"], "org.example.A");
        assert_eq!(u["uid"], 70001);
        assert!(d.path().join("70002.group").exists());
        publish(d.path(), &[e("org.example.B", 70002)]).unwrap();
        assert!(!d.path().join("70001.user").exists());
        assert!(!d.path().join("appmgr-70001.group").exists());
        assert!(d.path().join("appmgr-70002.user").exists());
        assert!(d.path().join("alice.user").exists(), "others' records stay");
    }
}
