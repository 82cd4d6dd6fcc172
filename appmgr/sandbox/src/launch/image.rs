//! The app's storage image (`storage-max`) as its HOME: a root-owned ext4 image file,
//! opened once beneath `/` without following symlinks, locked, attached to a loop
//! device and mounted as a new, detached file system that is then moved onto HOME.
//!
//! The lock is `flock` on the image's open file description. The loop device holds that
//! same description until it detaches (when the file system is unmounted, i.e. when the
//! sandbox's mount namespace is gone), so a second launch can never mount the file
//! system through a second loop device while the first is still mounted (two mounts of
//! one ext4 through two devices would corrupt it).

use super::sources::{open_parent, openat_safe, unsafe_reason};
use super::{io_err, rx, sys_err, LaunchError};
use rustix::fs::{self as rfs, FlockOperation, OFlags};
use rustix::io::Errno;
use rustix::mount::{self as rmount, FsMountFlags, FsOpenFlags, MountAttrFlags};
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;
use std::time::{Duration, Instant};

/// How long a launch waits for an earlier instance's loop device to let go of the image
/// (the kernel detaches it once that instance's mount namespace is gone).
const LOCK_WAIT: Duration = Duration::from_secs(5);

/// Mounts the image at `path` and returns the detached mount (`fsmount`'s descriptor),
/// whose root is checked to belong to `uid`.
pub(super) fn mount_image(root: &OwnedFd, path: &Path, uid: u32) -> Result<OwnedFd, LaunchError> {
    let refused = |reason: String| LaunchError::Refused {
        path: path.display().to_string(),
        reason,
    };
    let explain = |step: &'static str| {
        move |e: Errno| match unsafe_reason(e) {
            Some(r) => LaunchError::Refused {
                path: path.display().to_string(),
                reason: r.into(),
            },
            None => io_err(step, path)(rx(e)),
        }
    };
    let Some((pfd, name)) = open_parent(root, path)? else {
        return Err(io_err("open storage image", path)(rx(Errno::NOENT)));
    };
    let img = openat_safe(
        &pfd,
        Path::new(name),
        OFlags::RDWR | OFlags::NOCTTY | OFlags::NOFOLLOW,
    )
    .map_err(explain("open storage image"))?;
    let st = rfs::fstat(&img).map_err(explain("stat storage image"))?;
    if rfs::FileType::from_raw_mode(st.st_mode) != rfs::FileType::RegularFile {
        return Err(refused("the storage image is not a regular file".into()));
    }
    if st.st_uid != 0 || st.st_mode & 0o022 != 0 {
        return Err(refused(format!(
            "the storage image must be root-owned and writable by root only (owner {}, mode {:o})",
            st.st_uid,
            st.st_mode & 0o7777
        )));
    }
    lock(&img, path)?;
    let control = rfs::open(
        "/dev/loop-control",
        OFlags::RDWR | OFlags::CLOEXEC | OFlags::NOFOLLOW,
        rfs::Mode::empty(),
    )
    .map_err(|e| io_err("open", "/dev/loop-control")(rx(e)))?;
    let (dev, n) = crate::sys::loop_attach(control.as_fd(), img.as_fd())
        .map_err(sys_err("attach the storage image to a loop device"))?;
    let fs = rmount::fsopen("ext4", FsOpenFlags::FSOPEN_CLOEXEC)
        .map_err(|e| io_err("open file system context for", path)(rx(e)))?;
    let source = format!("/dev/loop{n}");
    rmount::fsconfig_set_string(&fs, "source", source.as_str())
        .and_then(|()| rmount::fsconfig_set_string(&fs, "errors", "remount-ro"))
        // No background inode-table zeroing: through the loop device it would punch
        // holes into the image and hand the app's reserved space back to the host.
        .and_then(|()| rmount::fsconfig_set_flag(&fs, "noinit_itable"))
        .and_then(|()| rmount::fsconfig_create(&fs))
        .map_err(|e| io_err("mount the ext4 file system of", path)(rx(e)))?;
    let mnt = rmount::fsmount(
        &fs,
        FsMountFlags::FSMOUNT_CLOEXEC,
        MountAttrFlags::MOUNT_ATTR_NOSUID | MountAttrFlags::MOUNT_ATTR_NODEV,
    )
    .map_err(|e| io_err("mount the ext4 file system of", path)(rx(e)))?;
    // The mount holds the device now; with AUTOCLEAR it detaches when the mount goes.
    drop(dev);
    let st = rfs::fstat(&mnt).map_err(|e| io_err("stat", path)(rx(e)))?;
    if st.st_uid != uid {
        return Err(refused(format!(
            "the root of the storage image is owned by uid {}, not by the app's uid {uid}",
            st.st_uid
        )));
    }
    Ok(mnt)
}

/// Takes the image's exclusive lock, waiting (bounded) for an earlier instance's loop
/// device to release it.
fn lock(img: &OwnedFd, path: &Path) -> Result<(), LaunchError> {
    let start = Instant::now();
    loop {
        match rfs::flock(img, FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => return Ok(()),
            Err(Errno::WOULDBLOCK) if start.elapsed() < LOCK_WAIT => {
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(Errno::WOULDBLOCK) => {
                return Err(LaunchError::Refused {
                    path: path.display().to_string(),
                    reason: format!(
                        "the storage image is still mounted by an earlier instance (waited {} s)",
                        LOCK_WAIT.as_secs()
                    ),
                })
            }
            Err(e) => return Err(io_err("lock storage image", path)(rx(e))),
        }
    }
}
