//! Opening every bind source once, before anything is mounted.
//!
//! Every host path is resolved exactly once, by [`open_host`]: `openat2` relative to a
//! descriptor of `/` with `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS`,
//! as `O_PATH`. A symlink anywhere on the way (an app can plant one in any directory it
//! may write: a shared grant, its HOME, its runtime directory) refuses the launch; what
//! is bound, chowned or compared afterwards is the descriptor, never the path again.

use super::{io_err, rx, LaunchError};
use crate::plan::{BindSource, LaunchPlan, ProtectedPath};
use rustix::fs::{self as rfs, AtFlags, Mode, OFlags, ResolveFlags, CWD};
use rustix::io::Errno;
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;

/// A bind source opened by the launcher before anything was mounted.
pub(super) struct Opened {
    pub(super) fd: OwnedFd,
    pub(super) is_dir: bool,
    /// `fd` is a new, detached mount (`fsmount`): attached as it is, not cloned.
    pub(super) detached: bool,
}

/// How every host path and every sandbox-side target is resolved: beneath the directory
/// it starts from, no symlink, no `/proc` magic link.
pub(super) const SAFE: ResolveFlags = ResolveFlags::BENEATH
    .union(ResolveFlags::NO_SYMLINKS)
    .union(ResolveFlags::NO_MAGICLINKS);

/// `openat2(dir, path, flags, SAFE)`, retried on `EAGAIN` (the kernel's answer when a
/// rename raced the lookup).
pub(super) fn openat_safe<Fd: AsFd>(dir: Fd, path: &Path, flags: OFlags) -> Result<OwnedFd, Errno> {
    let mut tries = 0;
    loop {
        match rfs::openat2(
            dir.as_fd(),
            path,
            flags | OFlags::CLOEXEC,
            Mode::empty(),
            SAFE,
        ) {
            Err(Errno::AGAIN) if tries < 16 => tries += 1,
            r => return r,
        }
    }
}

/// The one-line reason for a refused resolution, or `None` for an ordinary I/O error.
pub(super) fn unsafe_reason(e: Errno) -> Option<&'static str> {
    match e {
        Errno::LOOP => Some("a component of the path is a symlink (host paths are resolved without following symlinks)"),
        Errno::XDEV => Some("the path leads outside the directory it was granted in"),
        Errno::NOTDIR => Some("a component of the path is not a directory"),
        _ => None,
    }
}

fn explain<'p>(step: &'static str, path: &'p Path) -> impl Fn(Errno) -> LaunchError + 'p {
    move |e| match unsafe_reason(e) {
        Some(reason) => LaunchError::Refused {
            path: path.display().to_string(),
            reason: reason.into(),
        },
        None => io_err(step, path)(rx(e)),
    }
}

/// A descriptor of the host's `/`, the root every host path is resolved beneath.
pub(super) fn host_root() -> Result<OwnedFd, LaunchError> {
    rfs::openat2(
        CWD,
        "/",
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
        ResolveFlags::empty(),
    )
    .map_err(|e| io_err("open", "/")(rx(e)))
}

/// The parent directory of an absolute host path and the final component, both resolved
/// beneath `root` without following symlinks. `Ok(None)` if the parent does not exist.
pub(super) fn open_parent<'p>(
    root: &OwnedFd,
    path: &'p Path,
) -> Result<Option<(OwnedFd, &'p std::ffi::OsStr)>, LaunchError> {
    let refused = |reason: &str| LaunchError::Refused {
        path: path.display().to_string(),
        reason: reason.into(),
    };
    let rel = path
        .strip_prefix("/")
        .map_err(|_| refused("not an absolute path"))?;
    let name = rel.file_name().ok_or_else(|| refused("no file name"))?;
    let parent = rel.parent().unwrap_or(Path::new(""));
    let pfd = if parent.as_os_str().is_empty() {
        rustix::io::fcntl_dupfd_cloexec(root, 3).map_err(|e| io_err("dup", "/")(rx(e)))?
    } else {
        match openat_safe(root, parent, OFlags::PATH | OFlags::DIRECTORY) {
            Ok(fd) => fd,
            Err(Errno::NOENT) => return Ok(None),
            Err(e) => return Err(explain("open", path)(e)),
        }
    };
    Ok(Some((pfd, name)))
}

/// Opens an absolute host path once, beneath `root`, as `O_PATH`, following no symlink
/// (the final component included). Returns the object and its parent directory;
/// `Ok(None)` if it does not exist.
pub(super) fn open_host(
    root: &OwnedFd,
    path: &Path,
) -> Result<Option<(OwnedFd, OwnedFd)>, LaunchError> {
    let Some((pfd, name)) = open_parent(root, path)? else {
        return Ok(None);
    };
    match openat_safe(&pfd, Path::new(name), OFlags::PATH) {
        Ok(fd) => Ok(Some((fd, pfd))),
        Err(Errno::NOENT) => Ok(None),
        Err(e) => Err(explain("open", path)(e)),
    }
}

/// Opens a per-app directory (data dir, runtime dir) beneath `/` without following any
/// symlink (a symlinked component means someone tampered with the state directory),
/// creating it (0700, `uid:gid`, through the parent's descriptor) when missing, and
/// checks that it is a directory owned by the app.
fn open_app_dir(root: &OwnedFd, path: &Path, uid: u32, gid: u32) -> Result<OwnedFd, LaunchError> {
    let refused = |reason: String| LaunchError::Refused {
        path: path.display().to_string(),
        reason,
    };
    let how = OFlags::PATH | OFlags::DIRECTORY;
    let Some((pfd, name)) = open_parent(root, path)? else {
        return Err(io_err("open app directory", path)(rx(Errno::NOENT)));
    };
    let name = Path::new(name);
    let fd = match openat_safe(&pfd, name, how) {
        Ok(fd) => fd,
        Err(Errno::NOENT) => {
            match rfs::mkdirat(&pfd, name, Mode::from_raw_mode(0o700)) {
                Ok(()) | Err(Errno::EXIST) => {}
                Err(e) => return Err(explain("create app directory", path)(e)),
            }
            let fd = openat_safe(&pfd, name, how).map_err(explain("open app directory", path))?;
            let st = rfs::fstat(&fd).map_err(explain("stat", path))?;
            if st.st_uid == 0 {
                rfs::chownat(
                    &fd,
                    "",
                    Some(rfs::Uid::from_raw(uid)),
                    Some(rfs::Gid::from_raw(gid)),
                    AtFlags::EMPTY_PATH,
                )
                .map_err(explain("chown", path))?;
            }
            fd
        }
        Err(e) => return Err(explain("open app directory", path)(e)),
    };
    let st = rfs::fstat(&fd).map_err(explain("stat", path))?;
    if rfs::FileType::from_raw_mode(st.st_mode) != rfs::FileType::Directory {
        return Err(refused("not a directory".into()));
    }
    if st.st_uid != uid {
        return Err(refused(format!(
            "owned by uid {}, not by the app's uid {uid}",
            st.st_uid
        )));
    }
    Ok(fd)
}

/// `(st_dev, st_ino)` of an open object.
fn id_of(fd: &OwnedFd) -> Result<(u64, u64), Errno> {
    let st = rfs::fstat(fd)?;
    Ok((st.st_dev, st.st_ino))
}

/// The identities of a directory and of every directory above it up to the root (each
/// `..` from the descriptor, so across mount points as the kernel sees them).
fn ancestry(dir: &OwnedFd) -> Result<Vec<(u64, u64)>, Errno> {
    let mut ids = vec![id_of(dir)?];
    let mut cur = rfs::openat(
        dir,
        "..",
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    for _ in 0..4096 {
        let id = id_of(&cur)?;
        if ids.last() == Some(&id) {
            break;
        }
        ids.push(id);
        cur = rfs::openat(
            &cur,
            "..",
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
    }
    Ok(ids)
}

/// Refuses a granted host path whose *resolved* object is, lies below, or (for a
/// `below` entry) contains one of the plan's protected paths (the host paths the sandbox
/// builds itself and the policy's `deny` rules). Objects are compared by device and
/// inode, so a second name for a protected directory (a bind mount, an alias the request
/// string does not show) is caught as well as the name itself.
/// The directories at and above a protected path (`fd`, opened from `path` as the host
/// resolves it); for a protected file or socket (a configured host socket), the
/// directories above it, so a grant of a directory holding it is refused too.
fn protected_ancestry(path: &Path, fd: &OwnedFd) -> Result<Vec<(u64, u64)>, Errno> {
    if rfs::FileType::from_raw_mode(rfs::fstat(fd)?.st_mode) == rfs::FileType::Directory {
        return ancestry(fd);
    }
    let parent = path.parent().ok_or(Errno::NOENT)?;
    let dir = rfs::open(
        parent,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    ancestry(&dir)
}

fn check_protected(
    path: &Path,
    obj: &OwnedFd,
    parent: &OwnedFd,
    protected: &[ProtectedPath],
) -> Result<(), LaunchError> {
    if protected.is_empty() {
        return Ok(());
    }
    let step = |e: Errno| io_err("resolve", path)(rx(e));
    let me = id_of(obj).map_err(step)?;
    let mut above = ancestry(parent).map_err(step)?;
    above.insert(0, me);
    let is_dir = rfs::FileType::from_raw_mode(rfs::fstat(obj).map_err(step)?.st_mode)
        == rfs::FileType::Directory;
    for p in protected {
        // The protected path is the administrator's or the sandbox's own name, resolved
        // as the host resolves it (following its symlinks).
        let Ok(pfd) = rfs::open(
            p.path.as_path(),
            OFlags::PATH | OFlags::CLOEXEC,
            Mode::empty(),
        ) else {
            continue;
        };
        let Ok(pid) = id_of(&pfd) else { continue };
        let hit = if p.below {
            let inside = above.contains(&pid);
            let contains =
                is_dir && protected_ancestry(&p.path, &pfd).is_ok_and(|a| a.contains(&me));
            inside || contains
        } else {
            me == pid
        };
        if hit {
            return Err(LaunchError::Refused {
                path: path.display().to_string(),
                reason: format!(
                    "resolves to {} {}",
                    if me == pid {
                        "the protected path"
                    } else {
                        "a path overlapping the protected path"
                    },
                    p.path.display()
                ),
            });
        }
    }
    Ok(())
}

pub(super) fn open_source(
    root: &OwnedFd,
    src: &BindSource,
    plan: &LaunchPlan,
) -> Result<Option<Opened>, LaunchError> {
    let path = match src {
        BindSource::AppDir(p) => {
            let fd = open_app_dir(root, p, plan.uid, plan.gid)?;
            return Ok(Some(Opened {
                fd,
                is_dir: true,
                detached: false,
            }));
        }
        BindSource::StorageImage(p) => {
            let fd = super::image::mount_image(root, p, plan.uid)?;
            return Ok(Some(Opened {
                fd,
                is_dir: true,
                detached: true,
            }));
        }
        BindSource::Deployment(p)
        | BindSource::NetNames(p)
        | BindSource::Device(p)
        | BindSource::HostPath(p)
        | BindSource::Granted(p)
        | BindSource::Socket(p) => p,
    };
    let (fd, parent) = match open_host(root, path)? {
        Some(x) => x,
        // A granted path that does not exist is skipped (nothing is created for it).
        None if matches!(src, BindSource::HostPath(_) | BindSource::Granted(_)) => return Ok(None),
        None => return Err(io_err("open", path)(rx(Errno::NOENT))),
    };
    let st = rfs::fstat(&fd).map_err(|e| io_err("stat", path)(rx(e)))?;
    let ft = rfs::FileType::from_raw_mode(st.st_mode);
    if matches!(src, BindSource::NetNames(_)) && (ft != rfs::FileType::Directory || st.st_uid != 0)
    {
        return Err(LaunchError::Refused {
            path: path.display().to_string(),
            reason: "not a root-owned directory".into(),
        });
    }
    if matches!(src, BindSource::Deployment(_)) && ft != rfs::FileType::Directory {
        return Err(LaunchError::Refused {
            path: path.display().to_string(),
            reason: "not a directory".into(),
        });
    }
    if matches!(src, BindSource::Device(_))
        && !matches!(
            ft,
            rfs::FileType::CharacterDevice | rfs::FileType::BlockDevice
        )
    {
        return Err(LaunchError::Refused {
            path: path.display().to_string(),
            reason: "not a device node".into(),
        });
    }
    if matches!(src, BindSource::Socket(_)) && ft != rfs::FileType::Socket {
        return Err(LaunchError::Refused {
            path: path.display().to_string(),
            reason: "not a socket".into(),
        });
    }
    if matches!(src, BindSource::Granted(_)) {
        check_protected(path, &fd, &parent, &plan.protected_paths)?;
    }
    Ok(Some(Opened {
        fd,
        is_dir: ft == rfs::FileType::Directory,
        detached: false,
    }))
}

/// Whether the launcher would refuse the granted host path `path` now: resolved as at
/// launch (beneath `/`, no symlink) and compared with `protected`. `Ok` for a path that
/// does not exist (it is skipped at launch).
pub(super) fn check_granted(path: &Path, protected: &[ProtectedPath]) -> Result<(), LaunchError> {
    let root = host_root()?;
    if let Some((fd, parent)) = open_host(&root, path)? {
        check_protected(path, &fd, &parent, protected)?;
    }
    Ok(())
}
