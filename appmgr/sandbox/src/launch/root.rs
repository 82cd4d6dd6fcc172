//! Building the new root on a tmpfs: the plan's mount operations, in order.

use super::sources::Opened;
use super::{io_err, rx, LaunchError};
use crate::plan::{LaunchPlan, MountOp};
use rustix::fs::{self as rfs, Mode, OFlags, CWD};
use rustix::mount::{self as rmount, MountFlags, MoveMountFlags, OpenTreeFlags};
use std::io;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

/// Where the new root is assembled (covered by the root tmpfs in the new mount namespace;
/// the host's `/tmp` is untouched).
pub(super) const NEWROOT: &str = "/tmp";

fn in_root(dest: &str) -> PathBuf {
    PathBuf::from(format!("{NEWROOT}{dest}"))
}

/// `mkdir -p` without a stat per component: try, and create parents only on ENOENT.
fn mkdir_p(p: &Path, mode: u32) -> Result<(), LaunchError> {
    match rfs::mkdir(p, Mode::from_raw_mode(mode)) {
        Ok(()) | Err(rustix::io::Errno::EXIST) => Ok(()),
        Err(rustix::io::Errno::NOENT) => {
            if let Some(parent) = p.parent() {
                mkdir_p(parent, 0o755)?;
            }
            match rfs::mkdir(p, Mode::from_raw_mode(mode)) {
                Ok(()) | Err(rustix::io::Errno::EXIST) => Ok(()),
                Err(e) => Err(io_err("mkdir", p)(rx(e))),
            }
        }
        Err(e) => Err(io_err("mkdir", p)(rx(e))),
    }
}

/// An empty file to mount a non-directory on (kept if it exists).
fn mount_point_file(p: &Path) -> Result<(), LaunchError> {
    let flags = OFlags::CREATE | OFlags::WRONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    match rfs::open(p, flags, Mode::from_raw_mode(0o644)) {
        Ok(_) => Ok(()),
        Err(rustix::io::Errno::NOENT) => {
            if let Some(parent) = p.parent() {
                mkdir_p(parent, 0o755)?;
            }
            rfs::open(p, flags, Mode::from_raw_mode(0o644))
                .map(drop)
                .map_err(|e| io_err("create", p)(rx(e)))
        }
        Err(e) => Err(io_err("create", p)(rx(e))),
    }
}

fn write_file(p: &Path, mode: u32, contents: &[u8]) -> Result<(), LaunchError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(p)
        .map_err(io_err("create", p))?;
    f.write_all(contents).map_err(io_err("write", p))
}

fn bind_fd(src: &Opened, target: &Path, readonly: bool, dev: bool) -> Result<(), LaunchError> {
    if src.is_dir {
        mkdir_p(target, 0o755)?;
    } else {
        mount_point_file(target)?;
    }
    let tree = rmount::open_tree(
        src.fd.as_fd(),
        "",
        OpenTreeFlags::OPEN_TREE_CLONE
            | OpenTreeFlags::OPEN_TREE_CLOEXEC
            | OpenTreeFlags::AT_EMPTY_PATH,
    )
    .map_err(|e| io_err("clone mount of", target)(rx(e)))?;
    rmount::move_mount(
        tree.as_fd(),
        "",
        CWD,
        target,
        MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH,
    )
    .map_err(|e| io_err("attach mount at", target)(rx(e)))?;
    if dev && !readonly {
        // A device node keeps the flags of the host's /dev mount it was cloned from; exec
        // and setuid do not apply to device files, so no remount (one syscall per node).
        return Ok(());
    }
    let mut flags = MountFlags::BIND | MountFlags::NOSUID;
    if readonly {
        flags |= MountFlags::RDONLY;
    }
    if dev {
        flags |= MountFlags::NOEXEC;
    } else {
        flags |= MountFlags::NODEV;
    }
    rmount::mount_remount(target, flags, "").map_err(|e| io_err("remount", target)(rx(e)))
}

/// A granted device as the app's own node: same type and device number as the host node
/// opened as `src` (checked to be a character or block device when it was opened), owned
/// by the app, mode 0600. Created on the sandbox's `/dev` tmpfs, never on a host file
/// system; `mknod` refuses to replace anything.
fn private_node(src: &Opened, target: &Path, uid: u32, gid: u32) -> Result<(), LaunchError> {
    let st = rfs::fstat(&src.fd).map_err(|e| io_err("stat", target)(rx(e)))?;
    let ft = rfs::FileType::from_raw_mode(st.st_mode);
    if !matches!(
        ft,
        rfs::FileType::CharacterDevice | rfs::FileType::BlockDevice
    ) {
        return Err(LaunchError::Refused {
            path: target.display().to_string(),
            reason: "not a device node".into(),
        });
    }
    if let Some(parent) = target.parent() {
        mkdir_p(parent, 0o755)?;
    }
    rfs::mknodat(CWD, target, ft, Mode::from_raw_mode(0o600), st.st_rdev)
        .map_err(|e| io_err("mknod", target)(rx(e)))?;
    rfs::chownat(
        CWD,
        target,
        Some(rfs::Uid::from_raw(uid)),
        Some(rfs::Gid::from_raw(gid)),
        rfs::AtFlags::SYMLINK_NOFOLLOW,
    )
    .map_err(|e| io_err("chown", target)(rx(e)))
}

pub(super) fn build_root(
    plan: &LaunchPlan,
    opened: &[Option<Opened>],
    copies: &[Option<Vec<u8>>],
) -> Result<(), LaunchError> {
    rmount::mount(
        "tmpfs",
        NEWROOT,
        "tmpfs",
        MountFlags::NOSUID | MountFlags::NODEV,
        Some(c"mode=0755,size=16m"),
    )
    .map_err(|e| io_err("mount root tmpfs at", NEWROOT)(rx(e)))?;

    for (i, m) in plan.mounts.iter().enumerate() {
        match m {
            MountOp::Dir { dest, mode } => {
                let p = in_root(dest);
                mkdir_p(&p, *mode)?;
            }
            MountOp::AppOwnedDir { dest, mode } => {
                let p = in_root(dest);
                mkdir_p(&p, *mode)?;
                rfs::chown(
                    &p,
                    Some(rfs::Uid::from_raw(plan.uid)),
                    Some(rfs::Gid::from_raw(plan.gid)),
                )
                .map_err(|e| io_err("chown", &p)(rx(e)))?;
            }
            MountOp::Symlink { target, dest } => {
                let p = in_root(dest);
                rfs::symlink(target.as_str(), &p).map_err(|e| io_err("symlink", &p)(rx(e)))?;
            }
            MountOp::Tmpfs {
                dest,
                mode,
                size_mib,
                noexec,
                dev,
            } => {
                let p = in_root(dest);
                mkdir_p(&p, 0o755)?;
                let mut f = MountFlags::NOSUID;
                if !*dev {
                    f |= MountFlags::NODEV;
                }
                if *noexec {
                    f |= MountFlags::NOEXEC;
                }
                let data = std::ffi::CString::new(format!("mode={mode:o},size={size_mib}m"))
                    .map_err(|_| io_err("tmpfs options", &p)(io::ErrorKind::InvalidInput.into()))?;
                rmount::mount("tmpfs", &p, "tmpfs", f, Some(data.as_c_str()))
                    .map_err(|e| io_err("mount tmpfs at", &p)(rx(e)))?;
            }
            MountOp::Bind {
                dest,
                readonly,
                dev,
                ..
            } => {
                if let Some(src) = &opened[i] {
                    bind_fd(src, &in_root(dest), *readonly, *dev)?;
                }
            }
            MountOp::DeviceNode { dest, .. } => {
                if let Some(src) = &opened[i] {
                    private_node(src, &in_root(dest), plan.uid, plan.gid)?;
                }
            }
            MountOp::Proc { dest } => {
                let p = in_root(dest);
                mkdir_p(&p, 0o555)?;
                rmount::mount(
                    "proc",
                    &p,
                    "proc",
                    MountFlags::NOSUID | MountFlags::NODEV | MountFlags::NOEXEC,
                    None,
                )
                .map_err(|e| io_err("mount proc at", &p)(rx(e)))?;
            }
            MountOp::Sysfs { dest } => {
                let p = in_root(dest);
                mkdir_p(&p, 0o555)?;
                rmount::mount(
                    "sysfs",
                    &p,
                    "sysfs",
                    MountFlags::RDONLY
                        | MountFlags::NOSUID
                        | MountFlags::NODEV
                        | MountFlags::NOEXEC,
                    None,
                )
                .map_err(|e| io_err("mount sysfs at", &p)(rx(e)))?;
            }
            MountOp::Devpts { dest } => {
                let p = in_root(dest);
                mkdir_p(&p, 0o755)?;
                rmount::mount(
                    "devpts",
                    &p,
                    "devpts",
                    MountFlags::NOSUID | MountFlags::NOEXEC,
                    Some(c"newinstance,ptmxmode=0666,mode=620"),
                )
                .map_err(|e| io_err("mount devpts at", &p)(rx(e)))?;
            }
            MountOp::RemountReadonly { dest } => {
                let p = in_root(dest);
                if !p.exists() {
                    continue;
                }
                rmount::mount_bind(&p, &p).map_err(|e| io_err("bind", &p)(rx(e)))?;
                rmount::mount_remount(
                    &p,
                    MountFlags::BIND
                        | MountFlags::RDONLY
                        | MountFlags::NOSUID
                        | MountFlags::NODEV
                        | MountFlags::NOEXEC,
                    "",
                )
                .map_err(|e| io_err("remount read-only", &p)(rx(e)))?;
            }
            MountOp::File {
                dest,
                mode,
                contents,
            } => write_file(&in_root(dest), *mode, contents.as_bytes())?,
            MountOp::CopyHostFile { dest, .. } => {
                if let Some(c) = &copies[i] {
                    write_file(&in_root(dest), 0o644, c)?;
                }
            }
            MountOp::LinkRuntimeEtc {
                dest,
                target,
                except,
            } => {
                let src = in_root(target);
                // Only a real directory: a symlink would be resolved against the host's
                // root here (we have not pivoted yet) and list host names.
                if !std::fs::symlink_metadata(&src).is_ok_and(|m| m.is_dir()) {
                    continue;
                }
                let Ok(rd) = std::fs::read_dir(&src) else {
                    continue;
                };
                let d = in_root(dest);
                for e in rd.flatten() {
                    let name = e.file_name();
                    let Some(n) = name.to_str() else { continue };
                    if except.iter().any(|x| x == n) {
                        continue;
                    }
                    let link = d.join(n);
                    let t = format!("{target}/{n}");
                    rfs::symlink(t.as_str(), &link).map_err(|e| io_err("symlink", &link)(rx(e)))?;
                }
            }
        }
    }
    // Everything is in place: the root itself becomes read-only.
    rmount::mount_remount(
        NEWROOT,
        MountFlags::BIND | MountFlags::RDONLY | MountFlags::NOSUID | MountFlags::NODEV,
        "",
    )
    .map_err(|e| io_err("remount root read-only", NEWROOT)(rx(e)))
}
