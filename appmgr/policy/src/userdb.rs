//! Installing the per-app bus policy where dbus-daemon applies it: the policy drop-in
//! ([`crate::render_bus_policy`]) and the app uids as users. One implementation for
//! appmgrd (after installs and removals) and `appmgr run` (before it launches an app with a
//! bus grant), so a bus grant means the same under both.
//!
//! The app uids as users and groups, published as systemd user records
//! (`/run/userdb/NAME.user`, `UID.user`, `NAME.group`, `GID.group`) that nss-systemd
//! resolves. dbus-daemon serves a uid and applies `<policy user="UID">` only when NSS
//! resolves it, and `ps`/`ls -l` show `appmgr-UID` instead of a bare number.
//!
//! Each app uid becomes user and group `appmgr-UID` (real name: the app ID), with no home
//! and no shell. Records appmgrd wrote for uids no longer installed are removed; records
//! of anyone else are never touched.

use crate::BusPolicyEntry;
use serde_json::json;
use std::collections::BTreeSet;
use std::path::Path;

const PREFIX: &str = "appmgr-";

/// Replaces `path` with `bytes` (mode 0644) by a synced temporary file and a rename. The
/// temporary file is created anew (`O_EXCL`, `O_NOFOLLOW`: a symbolic link planted there
/// is not followed).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let dir = path.parent().unwrap_or(Path::new("/"));
    let tmp = dir.join(format!(
        ".{}.tmp",
        path.file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("appmgr")
    ));
    match std::fs::remove_file(&tmp) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::set_permissions(&tmp, std::os::unix::fs::PermissionsExt::from_mode(0o644))?;
    std::fs::rename(&tmp, path)
}

/// Writes `dir/name` unless it already holds `bytes` (nss-systemd readers see no churn).
fn write_file(dir: &Path, name: &str, bytes: &[u8]) -> std::io::Result<()> {
    let path = dir.join(name);
    if std::fs::read(&path).is_ok_and(|old| old == bytes) {
        return Ok(());
    }
    write_atomic(&path, bytes)
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

/// Brings the bus policy for `entries` (every installed app) into place: publishes the app
/// uids as users in `userdb_dir` first (dbus-daemon resolves a uid before it applies its
/// rules), then writes the drop-in `policy_file` when its content differs. Returns whether
/// the drop-in changed: the caller then makes the bus reload its configuration
/// (`org.freedesktop.DBus.ReloadConfig`). Either path may be absent (not managed here).
pub fn install(
    policy_file: Option<&Path>,
    userdb_dir: Option<&Path>,
    entries: &[BusPolicyEntry],
) -> std::io::Result<bool> {
    if let Some(dir) = userdb_dir {
        publish(dir, entries).map_err(|e| with_path(dir, e))?;
    }
    let Some(file) = policy_file else {
        return Ok(false);
    };
    let text = crate::render_bus_policy(entries);
    if std::fs::read(file).is_ok_and(|old| old == text.as_bytes()) {
        return Ok(false);
    }
    write_atomic(file, text.as_bytes()).map_err(|e| with_path(file, e))?;
    Ok(true)
}

fn with_path(p: &Path, e: std::io::Error) -> std::io::Error {
    std::io::Error::new(e.kind(), format!("{}: {e}", p.display()))
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
    fn install_writes_only_changes() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("appmgr-apps.conf");
        let u = d.path().join("userdb");
        let mut a = e("org.example.A", 70001);
        a.talk = vec![appmgr_types::BusName::new("org.example.X").unwrap()];
        assert!(install(Some(&f), Some(&u), &[a.clone()]).unwrap());
        let text = std::fs::read_to_string(&f).unwrap();
        assert_eq!(text, crate::render_bus_policy(&[a.clone()]));
        assert!(u.join("70001.user").exists());
        assert!(!install(Some(&f), Some(&u), &[a]).unwrap(), "unchanged");
        assert!(install(Some(&f), None, &[]).unwrap());
        assert!(!std::fs::read_to_string(&f).unwrap().contains("70001"));
        assert!(!install(None, None, &[]).unwrap());
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
