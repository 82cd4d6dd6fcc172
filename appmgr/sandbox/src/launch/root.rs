//! Building the new root on a tmpfs: the plan's mount operations, in order.

use super::sources::{openat_safe, unsafe_reason, Opened};
use super::{io_err, rx, LaunchError};
use crate::plan::{BindSource, LaunchPlan, MountOp};
use rustix::fs::{self as rfs, AtFlags, Mode, OFlags};
use rustix::io::Errno;
use rustix::mount::{self as rmount, MountFlags, MoveMountFlags, OpenTreeFlags};
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

/// Where the new root is assembled (covered by the root tmpfs in the new mount namespace;
/// the host's `/tmp` is untouched).
pub(super) const NEWROOT: &str = "/tmp";

/// The new root while it is built. Every target is resolved from `fd` one component at a
/// time with [`SAFE`] (no symlink, no `..` out, no magic link), and each directory on the
/// way must be on one of the file systems the launcher mounted itself (`own`: the root
/// tmpfs, `/dev`, `/tmp`, `/run`, procfs, ...). A bound host directory is never entered,
/// so nothing is ever created, chowned or mounted through a directory an app can write.
struct Root {
    own: Vec<u64>,
    /// Mount ids of the read-only deployment binds (`/usr`, `/app`): walked through (never
    /// written: they are read-only and root's) to reach an extension point in them.
    ro_trees: Vec<u64>,
    /// Directories walked so far, relative to the root (`""` is the root itself, always
    /// first), reused by later targets; entries a mount covers are forgotten.
    walked: Vec<(String, OwnedFd)>,
}

/// The id of the mount `fd` is on.
fn mount_id_of(fd: &OwnedFd, dest: &str) -> Result<u64, LaunchError> {
    rfs::statx(fd, "", AtFlags::EMPTY_PATH, rfs::StatxFlags::MNT_ID)
        .map(|st| st.stx_mnt_id)
        .map_err(|e| io_err("statx", in_root(dest))(rx(e)))
}

fn dev_of(fd: &OwnedFd, dest: &str) -> Result<u64, LaunchError> {
    rfs::fstat(fd)
        .map(|st| st.st_dev)
        .map_err(|e| io_err("stat", in_root(dest))(rx(e)))
}

/// `/proc/self/fd/N`: the path `mount(2)` takes for an object held as a descriptor.
fn fd_path(fd: &OwnedFd) -> String {
    format!("/proc/self/fd/{}", fd.as_raw_fd())
}

/// The components of a sandbox path (`/a/b` → `a`, `b`), or a refusal.
fn components(dest: &str) -> Result<Vec<&str>, LaunchError> {
    let parts: Vec<&str> = dest.strip_prefix('/').unwrap_or("").split('/').collect();
    if !dest.starts_with('/')
        || parts
            .iter()
            .any(|c| c.is_empty() || *c == "." || *c == "..")
    {
        return Err(Root::refused(dest, "not a normal absolute path"));
    }
    Ok(parts)
}

impl Root {
    fn refused(dest: &str, reason: &str) -> LaunchError {
        LaunchError::Refused {
            path: dest.into(),
            reason: format!("sandbox target: {reason}"),
        }
    }

    fn explain(dest: &str, e: Errno) -> LaunchError {
        match unsafe_reason(e) {
            Some(r) => Self::refused(dest, r),
            None => io_err("open", in_root(dest))(rx(e)),
        }
    }

    fn fd(&self, i: usize) -> &OwnedFd {
        &self.walked[i].1
    }

    /// One directory below `dir`, created with `mode` when missing if `create` is given.
    /// A directory found (not just created) must be on one of the sandbox's own file
    /// systems; one just created is on its parent's.
    fn step(
        &self,
        dir: &OwnedFd,
        name: &str,
        dest: &str,
        create: Option<u32>,
    ) -> Result<Option<OwnedFd>, LaunchError> {
        let how = OFlags::PATH | OFlags::DIRECTORY;
        if let Some(mode) = create {
            match rfs::mkdirat(dir, name, Mode::from_raw_mode(mode)) {
                Ok(()) => {
                    let fd = openat_safe(dir, Path::new(name), how)
                        .map_err(|e| Self::explain(dest, e))?;
                    return Ok(Some(fd));
                }
                Err(Errno::EXIST) => {}
                Err(e) => return Err(io_err("mkdir", in_root(dest))(rx(e))),
            }
        }
        let fd = match openat_safe(dir, Path::new(name), how) {
            Ok(fd) => fd,
            Err(Errno::NOENT) if create.is_none() => return Ok(None),
            Err(e) => return Err(Self::explain(dest, e)),
        };
        if !self.own.contains(&dev_of(&fd, dest)?)
            && (self.ro_trees.is_empty() || !self.ro_trees.contains(&mount_id_of(&fd, dest)?))
        {
            return Err(Self::refused(
                dest,
                "a directory on the way is a bound host directory",
            ));
        }
        Ok(Some(fd))
    }

    /// Walks `parts` from the root (from the deepest directory already walked), creating
    /// missing directories (0755, the last one `last_mode`) when `last_mode` is given.
    /// Returns the index of the directory in `walked`, or `None` if one is missing.
    fn walk(
        &mut self,
        dest: &str,
        parts: &[&str],
        last_mode: Option<u32>,
    ) -> Result<Option<usize>, LaunchError> {
        let mut start = 0;
        let mut cur = 0;
        for k in (1..=parts.len()).rev() {
            let key = parts[..k].join("/");
            if let Some(i) = self.walked.iter().position(|(p, _)| *p == key) {
                (start, cur) = (k, i);
                break;
            }
        }
        for k in start..parts.len() {
            let mode = last_mode.map(|m| if k + 1 == parts.len() { m } else { 0o755 });
            match self.step(self.fd(cur), parts[k], dest, mode)? {
                Some(fd) => {
                    self.walked.push((parts[..=k].join("/"), fd));
                    cur = self.walked.len() - 1;
                }
                None => return Ok(None),
            }
        }
        Ok(Some(cur))
    }

    /// The parent directory of `dest` (created as needed) and the last component.
    fn parent<'d>(&mut self, dest: &'d str) -> Result<(usize, &'d str), LaunchError> {
        let parts = components(dest)?;
        let (last, dirs) = parts.split_last().ok_or_else(|| missing(dest))?;
        let i = self
            .walk(dest, dirs, Some(0o755))?
            .ok_or_else(|| missing(dest))?;
        Ok((i, last))
    }

    /// Forgets the walked directories at and below `dest`, which a mount just covered
    /// (their descriptors name the covered directories).
    fn covered(&mut self, dest: &str) {
        let rel = dest.trim_start_matches('/');
        let below = format!("{rel}/");
        self.walked
            .retain(|(p, _)| p.is_empty() || (p != rel && !p.starts_with(&below)));
    }

    /// `mkdir -p dest` inside the sandbox's own file systems; returns its index.
    fn dir(&mut self, dest: &str, mode: u32) -> Result<usize, LaunchError> {
        let parts = components(dest)?;
        self.walk(dest, &parts, Some(mode))?
            .ok_or_else(|| missing(dest))
    }

    /// An existing directory inside the sandbox's own file systems, if there is one.
    fn existing_dir(&mut self, dest: &str) -> Result<Option<usize>, LaunchError> {
        let parts = components(dest)?;
        self.walk(dest, &parts, None)
    }

    /// An empty file to mount a non-directory on (kept if it exists), as `O_PATH`.
    fn mount_point_file(&mut self, dest: &str) -> Result<OwnedFd, LaunchError> {
        let (p, name) = self.parent(dest)?;
        let flags = OFlags::CREATE | OFlags::WRONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        rfs::openat(self.fd(p), name, flags, Mode::from_raw_mode(0o644))
            .map_err(|e| io_err("create", in_root(dest))(rx(e)))?;
        let fd = openat_safe(self.fd(p), Path::new(name), OFlags::PATH)
            .map_err(|e| Self::explain(dest, e))?;
        if !self.own.contains(&dev_of(&fd, dest)?) {
            return Err(Self::refused(
                dest,
                "the mount point is on a bound host directory",
            ));
        }
        Ok(fd)
    }

    /// A new file written into the sandbox's own file systems (never replacing one).
    fn write_file(&mut self, dest: &str, mode: u32, contents: &[u8]) -> Result<(), LaunchError> {
        use std::io::Write;
        let (p, name) = self.parent(dest)?;
        let flags =
            OFlags::CREATE | OFlags::EXCL | OFlags::WRONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let fd = rfs::openat(self.fd(p), name, flags, Mode::from_raw_mode(mode))
            .map_err(|e| io_err("create", in_root(dest))(rx(e)))?;
        std::fs::File::from(fd)
            .write_all(contents)
            .map_err(io_err("write", in_root(dest)))
    }

    fn symlink(&mut self, target: &str, dest: &str) -> Result<(), LaunchError> {
        let (p, name) = self.parent(dest)?;
        rfs::symlinkat(target, self.fd(p), name)
            .map_err(|e| io_err("symlink", in_root(dest))(rx(e)))
    }

    /// Mounts a new file system instance (`tmpfs`, `proc`, ...) on the directory `dest`
    /// and records it as the sandbox's own.
    fn mount_fs(
        &mut self,
        dest: &str,
        mode: u32,
        fstype: &str,
        flags: MountFlags,
        data: Option<&std::ffi::CStr>,
    ) -> Result<(), LaunchError> {
        let d = self.dir(dest, mode)?;
        rmount::mount(fstype, fd_path(self.fd(d)).as_str(), fstype, flags, data)
            .map_err(|e| io_err("mount", in_root(dest))(rx(e)))?;
        self.covered(dest);
        let (p, name) = self.parent(dest)?;
        let fd = openat_safe(
            self.fd(p),
            Path::new(name),
            OFlags::PATH | OFlags::DIRECTORY,
        )
        .map_err(|e| Self::explain(dest, e))?;
        self.own.push(dev_of(&fd, dest)?);
        self.walked
            .push((dest.trim_start_matches('/').to_string(), fd));
        Ok(())
    }
}

fn missing(dest: &str) -> LaunchError {
    io_err("open", in_root(dest))(rx(Errno::NOENT))
}

fn in_root(dest: &str) -> PathBuf {
    PathBuf::from(format!("{NEWROOT}{dest}"))
}

/// Binds an opened source onto `target` (an `O_PATH` descriptor of the mount point in the
/// sandbox's own file systems): `open_tree` clones the source's mount, `move_mount`
/// attaches it to the descriptor; no path is resolved on either side.
fn bind_fd(
    src: &Opened,
    target: &OwnedFd,
    dest: &str,
    readonly: bool,
    dev: bool,
) -> Result<Option<u64>, LaunchError> {
    if src.detached {
        // A file system mounted for this sandbox (the storage image): its mount
        // attributes were set when it was created; it is attached, not cloned.
        return rmount::move_mount(
            src.fd.as_fd(),
            "",
            target.as_fd(),
            "",
            MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH | MoveMountFlags::MOVE_MOUNT_T_EMPTY_PATH,
        )
        .map(|()| None)
        .map_err(|e| io_err("attach mount at", in_root(dest))(rx(e)));
    }
    let tree = rmount::open_tree(
        src.fd.as_fd(),
        "",
        OpenTreeFlags::OPEN_TREE_CLONE
            | OpenTreeFlags::OPEN_TREE_CLOEXEC
            | OpenTreeFlags::AT_EMPTY_PATH,
    )
    .map_err(|e| io_err("clone mount of", in_root(dest))(rx(e)))?;
    rmount::move_mount(
        tree.as_fd(),
        "",
        target.as_fd(),
        "",
        MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH | MoveMountFlags::MOVE_MOUNT_T_EMPTY_PATH,
    )
    .map_err(|e| io_err("attach mount at", in_root(dest))(rx(e)))?;
    if dev && !readonly {
        // A device node keeps the flags of the host's /dev mount it was cloned from; exec
        // and setuid do not apply to device files, so no remount (one syscall per node).
        return Ok(None);
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
    // The tree's descriptor now names the attached mount.
    rmount::mount_remount(fd_path(&tree).as_str(), flags, "")
        .map_err(|e| io_err("remount", in_root(dest))(rx(e)))?;
    if readonly {
        return mount_id_of(&tree, dest).map(Some);
    }
    Ok(None)
}

/// A granted device as the app's own node: same type and device number as the host node
/// opened as `src` (checked to be a character or block device when it was opened), owned
/// by the app, mode 0600. Created relative to a directory walked inside the sandbox's own
/// file systems (never on a host file system); `mknodat` refuses to replace anything.
fn private_node(
    root: &mut Root,
    src: &Opened,
    dest: &str,
    uid: u32,
    gid: u32,
) -> Result<(), LaunchError> {
    let st = rfs::fstat(&src.fd).map_err(|e| io_err("stat", in_root(dest))(rx(e)))?;
    let ft = rfs::FileType::from_raw_mode(st.st_mode);
    if !matches!(
        ft,
        rfs::FileType::CharacterDevice | rfs::FileType::BlockDevice
    ) {
        return Err(LaunchError::Refused {
            path: dest.into(),
            reason: "not a device node".into(),
        });
    }
    let (p, name) = root.parent(dest)?;
    let dir = root.fd(p);
    rfs::mknodat(dir, name, ft, Mode::from_raw_mode(0o600), st.st_rdev)
        .map_err(|e| io_err("mknod", in_root(dest))(rx(e)))?;
    rfs::chownat(
        dir,
        name,
        Some(rfs::Uid::from_raw(uid)),
        Some(rfs::Gid::from_raw(gid)),
        rfs::AtFlags::SYMLINK_NOFOLLOW,
    )
    .map_err(|e| io_err("chown", in_root(dest))(rx(e)))
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
    let fd = rfs::open(
        NEWROOT,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| io_err("open", NEWROOT)(rx(e)))?;
    let own = vec![dev_of(&fd, "/")?];
    let mut root = Root {
        own,
        ro_trees: Vec::new(),
        walked: vec![(String::new(), fd)],
    };

    for (i, m) in plan.mounts.iter().enumerate() {
        match m {
            MountOp::Dir { dest, mode } => {
                root.dir(dest, *mode)?;
            }
            MountOp::AppOwnedDir { dest, mode } => {
                let d = root.dir(dest, *mode)?;
                rfs::chownat(
                    root.fd(d),
                    "",
                    Some(rfs::Uid::from_raw(plan.uid)),
                    Some(rfs::Gid::from_raw(plan.gid)),
                    AtFlags::EMPTY_PATH,
                )
                .map_err(|e| io_err("chown", in_root(dest))(rx(e)))?;
            }
            MountOp::Symlink { target, dest } => root.symlink(target, dest)?,
            MountOp::Tmpfs {
                dest,
                mode,
                size_mib,
                noexec,
                dev,
            } => {
                let mut f = MountFlags::NOSUID;
                if !*dev {
                    f |= MountFlags::NODEV;
                }
                if *noexec {
                    f |= MountFlags::NOEXEC;
                }
                let data = std::ffi::CString::new(format!("mode={mode:o},size={size_mib}m"))
                    .map_err(|_| {
                        io_err("tmpfs options", in_root(dest))(io::ErrorKind::InvalidInput.into())
                    })?;
                root.mount_fs(dest, 0o755, "tmpfs", f, Some(data.as_c_str()))?;
            }
            MountOp::Bind {
                source,
                dest,
                readonly,
                dev,
            } => {
                if let Some(src) = &opened[i] {
                    if src.is_dir {
                        let d = root.dir(dest, 0o755)?;
                        let id = bind_fd(src, root.fd(d), dest, *readonly, *dev)?;
                        if let (Some(id), BindSource::Deployment(_)) = (id, source) {
                            root.ro_trees.push(id);
                        }
                    } else {
                        let f = root.mount_point_file(dest)?;
                        bind_fd(src, &f, dest, *readonly, *dev)?;
                    }
                    root.covered(dest);
                }
            }
            MountOp::DeviceNode { dest, .. } => {
                if let Some(src) = &opened[i] {
                    private_node(&mut root, src, dest, plan.uid, plan.gid)?;
                }
            }
            MountOp::Proc { dest } => {
                let f = MountFlags::NOSUID | MountFlags::NODEV | MountFlags::NOEXEC;
                root.mount_fs(dest, 0o555, "proc", f, None)?;
            }
            MountOp::Sysfs { dest } => {
                let f = MountFlags::RDONLY
                    | MountFlags::NOSUID
                    | MountFlags::NODEV
                    | MountFlags::NOEXEC;
                root.mount_fs(dest, 0o555, "sysfs", f, None)?;
            }
            MountOp::Devpts { dest } => {
                let f = MountFlags::NOSUID | MountFlags::NOEXEC;
                let data = c"newinstance,ptmxmode=0666,mode=620";
                root.mount_fs(dest, 0o755, "devpts", f, Some(data))?;
            }
            MountOp::RemountReadonly { dest } => {
                let Some(d) = root.existing_dir(dest)? else {
                    continue;
                };
                let p = fd_path(root.fd(d));
                rmount::mount_bind(p.as_str(), p.as_str())
                    .map_err(|e| io_err("bind", in_root(dest))(rx(e)))?;
                root.covered(dest);
                // Reopen: the descriptor taken before the bind names the covered directory.
                let d = root.existing_dir(dest)?.ok_or_else(|| missing(dest))?;
                rmount::mount_remount(
                    fd_path(root.fd(d)).as_str(),
                    MountFlags::BIND
                        | MountFlags::RDONLY
                        | MountFlags::NOSUID
                        | MountFlags::NODEV
                        | MountFlags::NOEXEC,
                    "",
                )
                .map_err(|e| io_err("remount read-only", in_root(dest))(rx(e)))?;
            }
            MountOp::File {
                dest,
                mode,
                contents,
            } => root.write_file(dest, *mode, contents.as_bytes())?,
            MountOp::CopyHostFile { dest, .. } => {
                if let Some(c) = &copies[i] {
                    root.write_file(dest, 0o644, c)?;
                }
            }
            MountOp::LinkRuntimeEtc {
                dest,
                target,
                except,
            } => {
                // The runtime's etc/ is read through the read-only deployment bind (the
                // store's, not an app's); the links are created in the root tmpfs.
                let src = in_root(target);
                // Only a real directory: a symlink would be resolved against the host's
                // root here (we have not pivoted yet) and list host names.
                if !std::fs::symlink_metadata(&src).is_ok_and(|m| m.is_dir()) {
                    continue;
                }
                let Ok(rd) = std::fs::read_dir(&src) else {
                    continue;
                };
                let d = root.dir(dest, 0o755)?;
                for e in rd.flatten() {
                    let name = e.file_name();
                    let Some(n) = name.to_str() else { continue };
                    if except.iter().any(|x| x == n) {
                        continue;
                    }
                    let t = format!("{target}/{n}");
                    rfs::symlinkat(t.as_str(), root.fd(d), n)
                        .map_err(|e| io_err("symlink", in_root(&format!("{dest}/{n}")))(rx(e)))?;
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
