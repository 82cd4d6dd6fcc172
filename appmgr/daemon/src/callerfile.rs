//! Opening a path a client names (`InstallPath`) with the client's own rights, never
//! appmgrd's: a short-lived thread takes the caller's uid and groups (the kernel keeps
//! credentials per thread; rustix's `set_thread_*` are the raw per-thread system calls,
//! unlike the libc wrappers, which change every thread of the process), opens the path
//! with `O_NOFOLLOW | O_NONBLOCK`, refuses anything but a regular file, and ends. The
//! event loop only waits for its answer, and not longer than [`OPEN_TIMEOUT`].

use crate::access::Caller;
use crate::error::Error;
use rustix::fs::{FileType, Mode, OFlags};
use rustix::io::Errno;
use std::os::fd::OwnedFd;
use std::path::Path;
use std::time::Duration;

/// How long opening a caller's path may take (a hung network file system, say).
pub const OPEN_TIMEOUT: Duration = Duration::from_secs(5);

/// The group a caller without any group the bus knows of gets (the kernel's overflow
/// gid, `nogroup`).
const NO_GROUP: u32 = 65534;

/// Opens `path` for reading as `caller` would. Permission errors are `AccessDenied`, a
/// symbolic link or anything but a regular file is `InvalidArgs`, other failures are
/// `Failed`; no message carries a byte of the file.
pub async fn open(caller: &Caller, path: &Path) -> Result<OwnedFd, Error> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let (uid, gids, p) = (caller.uid, caller.gids.clone(), path.to_path_buf());
    std::thread::Builder::new()
        .name("appmgrd-open".into())
        .spawn(move || {
            let _ = tx.send(open_as(uid, &gids, &p));
        })
        .map_err(|e| Error::Failed(format!("cannot start a thread to open the bundle: {e}")))?;
    match tokio::time::timeout(OPEN_TIMEOUT, rx).await {
        Ok(Ok(r)) => r,
        Ok(Err(_)) => Err(Error::Failed(format!(
            "{}: the thread opening it ended without an answer",
            path.display()
        ))),
        Err(_) => Err(Error::Failed(format!(
            "{}: opening it took longer than {} s",
            path.display(),
            OPEN_TIMEOUT.as_secs()
        ))),
    }
}

/// On a thread of its own, which must end right after: drops to `uid` and `gids`, then
/// opens `p`.
fn open_as(uid: u32, gids: &[u32], p: &Path) -> Result<OwnedFd, Error> {
    let cred = |e: Errno| Error::Failed(format!("cannot take the caller's credentials: {e}"));
    let groups: Vec<rustix::process::Gid> = gids
        .iter()
        .map(|g| rustix::process::Gid::from_raw(*g))
        .collect();
    let gid = rustix::process::Gid::from_raw(gids.first().copied().unwrap_or(NO_GROUP));
    let uid = rustix::process::Uid::from_raw(uid);
    // Groups first, the uid last: only a privileged thread may change its groups. Once
    // the uid is not 0, the thread has no capabilities left (no CAP_DAC_OVERRIDE).
    rustix::thread::set_thread_groups(&groups).map_err(cred)?;
    rustix::thread::set_thread_res_gid(gid, gid, gid).map_err(cred)?;
    rustix::thread::set_thread_res_uid(uid, uid, uid).map_err(cred)?;
    open_regular(p)
}

/// Opens `p` read-only without following a final symbolic link and without blocking (a
/// FIFO does not wait for a writer), then requires a regular file and makes the
/// descriptor blocking again for the reader.
pub fn open_regular(p: &Path) -> Result<OwnedFd, Error> {
    let shown = p.display();
    let fd = rustix::fs::open(
        p,
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::NOCTTY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| match e {
        Errno::ACCESS | Errno::PERM => {
            Error::AccessDenied(format!("{shown}: the caller may not read it ({e})"))
        }
        Errno::NOENT => Error::NotFound(format!("{shown}: {e}")),
        Errno::LOOP => Error::InvalidArgs(format!(
            "{shown}: a symbolic link: name the bundle file itself"
        )),
        e => Error::Failed(format!("{shown}: {e}")),
    })?;
    let st = rustix::fs::fstat(&fd).map_err(|e| Error::Failed(format!("{shown}: {e}")))?;
    if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile {
        return Err(Error::InvalidArgs(format!(
            "{shown}: not a regular file (a FIFO, device, socket or directory is refused)"
        )));
    }
    let flags = rustix::fs::fcntl_getfl(&fd).map_err(|e| Error::Failed(format!("{shown}: {e}")))?;
    rustix::fs::fcntl_setfl(&fd, flags - OFlags::NONBLOCK)
        .map_err(|e| Error::Failed(format!("{shown}: {e}")))?;
    Ok(fd)
}

#[cfg(test)]
mod tests {
    use super::*;
    use zbus::DBusError;

    #[test]
    fn only_regular_files_and_no_final_symlink() {
        let t = tempfile::tempdir().unwrap();
        let f = t.path().join("b");
        std::fs::write(&f, b"x").unwrap();
        assert!(open_regular(&f).is_ok());
        let l = t.path().join("l");
        std::os::unix::fs::symlink(&f, &l).unwrap();
        let e = open_regular(&l).unwrap_err();
        assert_eq!(e.name().as_str(), "org.appmgr.Error.InvalidArgs");
        let fifo = t.path().join("fifo");
        rustix::fs::mknodat(
            rustix::fs::CWD,
            &fifo,
            FileType::Fifo,
            Mode::from_raw_mode(0o600),
            0,
        )
        .unwrap();
        let start = std::time::Instant::now();
        let e = open_regular(&fifo).unwrap_err();
        assert!(start.elapsed() < Duration::from_secs(1));
        assert!(
            e.message().contains("not a regular file"),
            "{}",
            e.message()
        );
        let e = open_regular(t.path()).unwrap_err();
        assert!(
            e.message().contains("not a regular file"),
            "{}",
            e.message()
        );
    }
}
