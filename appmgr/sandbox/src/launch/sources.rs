//! Opening every bind source once, before anything is mounted.

use super::{io_err, rx, LaunchError};
use crate::plan::{BindSource, LaunchPlan};
use rustix::fs::{self as rfs, AtFlags, Mode, OFlags, ResolveFlags, CWD};
use std::os::fd::OwnedFd;
use std::path::Path;

/// A bind source opened by the launcher before anything was mounted.
pub(super) struct Opened {
    pub(super) fd: OwnedFd,
    pub(super) is_dir: bool,
}

/// Opens a per-app directory without following any symlink on the way (a symlinked
/// component means someone tampered with the state directory), creating it (0700,
/// `uid:gid`) when missing, and checks that it is a directory owned by the app.
fn open_app_dir(path: &Path, uid: u32, gid: u32) -> Result<OwnedFd, LaunchError> {
    let how = OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC;
    let refused = |reason: String| LaunchError::Refused {
        path: path.display().to_string(),
        reason,
    };
    let explain = |e: rustix::io::Errno| -> LaunchError {
        if e == rustix::io::Errno::LOOP || e == rustix::io::Errno::NOTDIR {
            refused("the path or one of its parents is a symlink or not a directory".into())
        } else {
            LaunchError::Io {
                step: "open app directory",
                path: path.display().to_string(),
                source: rx(e),
            }
        }
    };
    let fd = match rfs::openat2(CWD, path, how, Mode::empty(), ResolveFlags::NO_SYMLINKS) {
        Ok(fd) => fd,
        Err(rustix::io::Errno::NOENT) => {
            let parent = path.parent().unwrap_or(Path::new("/"));
            let name = path
                .file_name()
                .ok_or_else(|| refused("no file name".into()))?;
            let pfd = rfs::openat2(CWD, parent, how, Mode::empty(), ResolveFlags::NO_SYMLINKS)
                .map_err(explain)?;
            match rfs::mkdirat(&pfd, name, Mode::from_raw_mode(0o700)) {
                Ok(()) | Err(rustix::io::Errno::EXIST) => {}
                Err(e) => return Err(explain(e)),
            }
            let fd = rfs::openat2(&pfd, name, how, Mode::empty(), ResolveFlags::NO_SYMLINKS)
                .map_err(explain)?;
            let st = rfs::fstat(&fd).map_err(explain)?;
            if st.st_uid == 0 {
                rfs::chownat(
                    &fd,
                    "",
                    Some(rfs::Uid::from_raw(uid)),
                    Some(rfs::Gid::from_raw(gid)),
                    AtFlags::EMPTY_PATH,
                )
                .map_err(explain)?;
            }
            fd
        }
        Err(e) => return Err(explain(e)),
    };
    let st = rfs::fstat(&fd).map_err(explain)?;
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

pub(super) fn open_source(
    src: &BindSource,
    plan: &LaunchPlan,
) -> Result<Option<Opened>, LaunchError> {
    let (path, flags) = match src {
        BindSource::Deployment(p) => (p, OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC),
        BindSource::AppDir(p) => {
            let fd = open_app_dir(p, plan.uid, plan.gid)?;
            return Ok(Some(Opened { fd, is_dir: true }));
        }
        BindSource::Device(p) => (p, OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC),
        BindSource::HostPath(p) => (p, OFlags::PATH | OFlags::CLOEXEC),
        BindSource::Socket(p) => (p, OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC),
    };
    let fd = match rfs::open(path.as_path(), flags, Mode::empty()) {
        Ok(fd) => fd,
        Err(rustix::io::Errno::NOENT) if matches!(src, BindSource::HostPath(_)) => return Ok(None),
        Err(e) => return Err(io_err("open", path)(rx(e))),
    };
    let st = rfs::fstat(&fd).map_err(|e| io_err("stat", path)(rx(e)))?;
    let ft = rfs::FileType::from_raw_mode(st.st_mode);
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
    // O_NOFOLLOW on an O_PATH open yields the symlink itself rather than failing, so a
    // symlink shows up here as "not a socket" too.
    if matches!(src, BindSource::Socket(_)) && ft != rfs::FileType::Socket {
        return Err(LaunchError::Refused {
            path: path.display().to_string(),
            reason: "not a socket".into(),
        });
    }
    Ok(Some(Opened {
        fd,
        is_dir: ft == rfs::FileType::Directory,
    }))
}
