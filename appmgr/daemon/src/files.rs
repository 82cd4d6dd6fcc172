//! appmgrd's own files, where no other local user can reach them: `STATE/daemon` is a
//! directory of appmgrd's user (root) with mode 0700, created and opened without
//! following a symbolic link and checked when it exists already; the lock inside is
//! mode 0600. A user who cannot open the lock cannot hold it, so cannot keep appmgrd
//! from starting.

use appmgr_core::paths;
use rustix::fs::{AtFlags, FileType, FlockOperation, Mode, OFlags};
use rustix::io::Errno;
use std::os::fd::OwnedFd;
use std::path::Path;

fn me() -> (u32, u32) {
    (
        rustix::process::geteuid().as_raw(),
        rustix::process::getegid().as_raw(),
    )
}

/// Opens the state directory and refuses one that another user owns or may write to
/// (such a user could swap `STATE/daemon` or the bus address for their own).
fn state_dir(state: &Path) -> Result<OwnedFd, String> {
    std::fs::create_dir_all(state).map_err(|e| format!("{}: {e}", state.display()))?;
    let fd = rustix::fs::open(
        state,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| format!("{}: {e}", state.display()))?;
    let st = rustix::fs::fstat(&fd).map_err(|e| format!("{}: {e}", state.display()))?;
    let (uid, gid) = me();
    let mode = st.st_mode & 0o7777;
    if st.st_uid != uid || mode & 0o002 != 0 || (mode & 0o020 != 0 && st.st_gid != gid) {
        return Err(format!(
            "{}: owned by uid {} with mode {mode:o}: refusing to serve a state directory \
             that another user may write to",
            state.display(),
            st.st_uid
        ));
    }
    Ok(fd)
}

/// `STATE/daemon`, created mode 0700 if absent. An existing one must be a real directory
/// (not a symbolic link) owned by appmgrd's user: otherwise appmgrd refuses to start.
/// One that others could open is repaired (mode 0700); the `bool` says so, and then the
/// lock file is replaced as well (someone may hold the old one open).
pub fn daemon_dir(state: &Path) -> Result<(OwnedFd, bool), String> {
    let sfd = state_dir(state)?;
    let shown = paths::daemon_dir(state);
    match rustix::fs::mkdirat(&sfd, "daemon", Mode::from_raw_mode(0o700)) {
        Ok(()) | Err(Errno::EXIST) => {}
        Err(e) => return Err(format!("{}: {e}", shown.display())),
    }
    let fd = rustix::fs::openat(
        &sfd,
        "daemon",
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| {
        format!(
            "{}: {e} (a symbolic link or not a directory: refused)",
            shown.display()
        )
    })?;
    let st = rustix::fs::fstat(&fd).map_err(|e| format!("{}: {e}", shown.display()))?;
    let (uid, _) = me();
    if st.st_uid != uid {
        return Err(format!(
            "{}: owned by uid {}, not {uid}: refusing to use it (remove it)",
            shown.display(),
            st.st_uid
        ));
    }
    let repaired = st.st_mode & 0o7777 != 0o700;
    if repaired {
        rustix::fs::fchmod(&fd, Mode::from_raw_mode(0o700))
            .map_err(|e| format!("{}: {e}", shown.display()))?;
    }
    Ok((fd, repaired))
}

/// Takes the exclusive lock `STATE/daemon/lock` (mode 0600) without waiting: a held lock
/// means another appmgrd serves the state directory.
pub fn take_lock(state: &Path, dir: &OwnedFd, replace: bool) -> Result<OwnedFd, String> {
    let shown = paths::lock_path(state);
    let err = |e: Errno| format!("{}: {e}", shown.display());
    if replace {
        match rustix::fs::unlinkat(dir, "lock", AtFlags::empty()) {
            Ok(()) | Err(Errno::NOENT) => {}
            Err(e) => return Err(err(e)),
        }
    }
    let fd = rustix::fs::openat(
        dir,
        "lock",
        OFlags::RDWR | OFlags::CREATE | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC,
        Mode::from_raw_mode(0o600),
    )
    .map_err(err)?;
    let st = rustix::fs::fstat(&fd).map_err(err)?;
    let (uid, _) = me();
    if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile || st.st_uid != uid {
        return Err(format!(
            "{}: not a regular file of uid {uid}: refused",
            shown.display()
        ));
    }
    if st.st_mode & 0o7777 != 0o600 {
        rustix::fs::fchmod(&fd, Mode::from_raw_mode(0o600)).map_err(err)?;
    }
    match rustix::fs::flock(&fd, FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => Ok(fd),
        Err(Errno::WOULDBLOCK) => Err(format!(
            "another appmgrd serves {} already",
            state.display()
        )),
        Err(e) => Err(err(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn mode(p: &Path) -> u32 {
        std::fs::symlink_metadata(p).unwrap().permissions().mode() & 0o7777
    }

    #[test]
    fn creates_root_only_files_and_repairs_a_loose_directory() {
        let t = tempfile::tempdir().unwrap();
        let state = t.path().join("state");
        let (dir, repaired) = daemon_dir(&state).unwrap();
        assert!(!repaired);
        assert_eq!(mode(&state.join("daemon")), 0o700);
        let lock = take_lock(&state, &dir, repaired).unwrap();
        assert_eq!(mode(&state.join("daemon/lock")), 0o600);
        // A second daemon is refused while the first holds the lock.
        let (dir2, _) = daemon_dir(&state).unwrap();
        let e = take_lock(&state, &dir2, false).unwrap_err();
        assert!(e.contains("another appmgrd"), "{e}");
        drop(lock);
        // A directory others could open is tightened, and its lock replaced.
        std::fs::set_permissions(state.join("daemon"), std::fs::Permissions::from_mode(0o777))
            .unwrap();
        // Someone holds the old lock open (and locked).
        let held = std::fs::File::open(state.join("daemon/lock")).unwrap();
        held.try_lock_shared().unwrap();
        let old = held.metadata().unwrap();
        let (dir, repaired) = daemon_dir(&state).unwrap();
        assert!(repaired);
        assert_eq!(mode(&state.join("daemon")), 0o700);
        let _lock = take_lock(&state, &dir, repaired).unwrap();
        let new = std::fs::metadata(state.join("daemon/lock")).unwrap();
        use std::os::unix::fs::MetadataExt;
        assert_ne!(old.ino(), new.ino(), "the lock file was not replaced");
    }

    #[test]
    fn refuses_a_symlinked_daemon_dir_and_a_writable_state_dir() {
        let t = tempfile::tempdir().unwrap();
        let state = t.path().join("state");
        let elsewhere = t.path().join("elsewhere");
        std::fs::create_dir_all(&state).unwrap();
        std::fs::create_dir_all(&elsewhere).unwrap();
        std::os::unix::fs::symlink(&elsewhere, state.join("daemon")).unwrap();
        let e = daemon_dir(&state).unwrap_err();
        assert!(e.contains("symbolic link"), "{e}");
        assert_eq!(std::fs::read_dir(&elsewhere).unwrap().count(), 0);
        std::fs::remove_file(state.join("daemon")).unwrap();
        std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o777)).unwrap();
        let e = daemon_dir(&state).unwrap_err();
        assert!(e.contains("another user may write"), "{e}");
        assert!(!state.join("daemon").exists());
    }
}
