//! The executor: applies a [`LaunchPlan`] in the single-threaded `appmgr-launch`.
//!
//! Process layout:
//!
//! ```text
//! appmgr-launch (host pid+mount ns)     loads the seccomp program, joins the cgroups,
//!   │                                   unshares pid/uts/cgroup/[ipc]/[net]; then only
//!   │                                   waits, forwards signals, exits with the app's status
//!   └─ init (pid 1 of the new pid ns)   unshares the mount ns, opens every source, builds
//!        │                              the root, pivots; then reaps zombies and
//!        │                              forwards signals; dies with the launcher
//!        └─ app                         drops ids and capabilities, no_new_privs,
//!                                       seccomp, closes fds >= 3, execve
//! ```
//!
//! Ordering constraints (each is a security property):
//! - every host path is opened *after* `unshare(CLONE_NEWNS)` (a bind needs a mount of the
//!   caller's namespace) and *before* anything is mounted (the root tmpfs covers `/tmp`);
//!   binds go through those descriptors, so no path is resolved twice;
//! - the cgroup is joined before `unshare(CLONE_NEWCGROUP)`, so the app's cgroup root is
//!   its own cgroup;
//! - the bounding set is dropped while still root (needs CAP_SETPCAP), ids are changed,
//!   then the remaining sets are cleared, no_new_privs set, the filter loaded, fds closed,
//!   and nothing but `execve` follows.

use crate::plan::{BindSource, LaunchPlan, MountOp, PLAN_VERSION};
use crate::seccomp::{self, SeccompError};
use crate::sys;
use rustix::fs::{self as rfs, AtFlags, Mode, OFlags, ResolveFlags, CWD};
use rustix::mount::{
    self as rmount, MountFlags, MountPropagationFlags, MoveMountFlags, OpenTreeFlags, UnmountFlags,
};
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

/// Where the new root is assembled (covered by the root tmpfs in the new mount namespace;
/// the host's `/tmp` is untouched).
const NEWROOT: &str = "/tmp";

/// Exit status when the launcher itself fails (before the app runs).
pub const EXIT_LAUNCH_FAILED: i32 = 125;
/// Exit status when the app's executable cannot be executed / does not exist.
pub const EXIT_CANNOT_EXEC: i32 = 126;
pub const EXIT_NOT_FOUND: i32 = 127;

/// How long the launcher and init wait before shrinking themselves beside the app.
const SHRINK_AFTER: std::time::Duration = std::time::Duration::from_millis(200);

/// Signals the launcher and init pass on to the app.
const FORWARDED: &[i32] = &[
    libc::SIGHUP,
    libc::SIGINT,
    libc::SIGQUIT,
    libc::SIGTERM,
    libc::SIGUSR1,
    libc::SIGUSR2,
    libc::SIGWINCH,
    libc::SIGCONT,
    libc::SIGALRM,
];

/// Why the sandbox could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    #[error("plan version {0} is not supported (launcher speaks {PLAN_VERSION})")]
    PlanVersion(u32),
    #[error("{step} {path}: {source}")]
    Io {
        step: &'static str,
        path: String,
        source: io::Error,
    },
    #[error("{step}: {source}")]
    Sys {
        step: &'static str,
        source: io::Error,
    },
    #[error("refusing to launch: {path}: {reason}")]
    Refused { path: String, reason: String },
    #[error(transparent)]
    Seccomp(#[from] SeccompError),
}

fn io_err(step: &'static str, path: impl AsRef<Path>) -> impl FnOnce(io::Error) -> LaunchError {
    let path = path.as_ref().display().to_string();
    move |source| LaunchError::Io { step, path, source }
}

fn sys_err(step: &'static str) -> impl FnOnce(io::Error) -> LaunchError {
    move |source| LaunchError::Sys { step, source }
}

fn rx(e: rustix::io::Errno) -> io::Error {
    io::Error::from_raw_os_error(e.raw_os_error())
}

/// A bind source opened by the launcher before anything was mounted.
struct Opened {
    fd: OwnedFd,
    is_dir: bool,
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

fn open_source(src: &BindSource, plan: &LaunchPlan) -> Result<Option<Opened>, LaunchError> {
    let (path, flags) = match src {
        BindSource::Deployment(p) => (p, OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC),
        BindSource::AppDir(p) => {
            let fd = open_app_dir(p, plan.uid, plan.gid)?;
            return Ok(Some(Opened { fd, is_dir: true }));
        }
        BindSource::Device(p) => (p, OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC),
        BindSource::HostPath(p) => (p, OFlags::PATH | OFlags::CLOEXEC),
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
    Ok(Some(Opened {
        fd,
        is_dir: ft == rfs::FileType::Directory,
    }))
}

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

/// The launcher: everything from reading the plan to the app's exit. Returns the exit
/// status for `appmgr-launch`.
pub fn run(plan: LaunchPlan) -> Result<i32, LaunchError> {
    if plan.version != PLAN_VERSION {
        return Err(LaunchError::PlanVersion(plan.version));
    }
    // build_plan refuses these already; the launcher does not trust that alone.
    if plan.uid == 0 || plan.gid == 0 {
        return Err(LaunchError::Refused {
            path: plan.exe.clone(),
            reason: "the app may not run as uid or gid 0".into(),
        });
    }
    let bpf = seccomp::load_or_compile(&plan.seccomp)?;

    let me = std::process::id().to_string();
    for procs in &plan.cgroup_procs {
        std::fs::write(procs, &me).map_err(io_err("join cgroup", procs))?;
    }

    // The mount namespace is unshared by init, not here: the launcher stays in the host's
    // (init's pivot_root would otherwise move the launcher's root too).
    let ns = plan.namespaces;
    let mut flags = 0;
    for (on, f) in [
        (ns.pid, libc::CLONE_NEWPID),
        (ns.ipc, libc::CLONE_NEWIPC),
        (ns.uts, libc::CLONE_NEWUTS),
        (ns.net, libc::CLONE_NEWNET),
        (ns.cgroup, libc::CLONE_NEWCGROUP),
    ] {
        if on {
            flags |= f;
        }
    }
    sys::unshare(flags).map_err(sys_err("unshare"))?;

    let mut forwarded = FORWARDED.to_vec();
    forwarded.push(libc::SIGCHLD);
    sys::block_signals(&forwarded).map_err(sys_err("block signals"))?;
    let (alive_r, alive_w) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)
        .map_err(|e| sys_err("pipe")(rx(e)))?;

    match sys::fork().map_err(sys_err("fork"))? {
        None => {
            drop(alive_w);
            let code = match init(&plan, &bpf, alive_r) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("appmgr-launch: {}: {e}", plan.app_id);
                    EXIT_LAUNCH_FAILED
                }
            };
            std::process::exit(code);
        }
        Some(child) => {
            drop(alive_r);
            drop(bpf);
            drop(plan);
            // Keep the write end open: init watches it to notice our death.
            let _alive = alive_w;
            supervise(child, &forwarded)
        }
    }
}

fn exit_code(status: i32) -> i32 {
    if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else if libc::WIFSIGNALED(status) {
        128 + libc::WTERMSIG(status)
    } else {
        EXIT_LAUNCH_FAILED
    }
}

/// Waits for `child`, forwarding signals; returns the exit status to report.
///
/// If the child is still running after [`SHRINK_AFTER`], the process drops its clean code
/// pages (see [`sys::release_code_pages`]): long-running apps get a small helper, short
/// ones do not pay for it on their start-up path.
fn supervise(child: libc::pid_t, set: &[i32]) -> Result<i32, LaunchError> {
    let mut shrunk = false;
    loop {
        let sig = if shrunk {
            sys::sigwait(set).map_err(sys_err("sigwait"))?
        } else {
            match sys::sigwait_timeout(set, SHRINK_AFTER).map_err(sys_err("sigwait"))? {
                Some(s) => s,
                None => {
                    sys::release_code_pages();
                    shrunk = true;
                    continue;
                }
            }
        };
        if sig == libc::SIGCHLD {
            while let Some((pid, status)) = sys::waitpid_nohang(-1).map_err(sys_err("wait"))? {
                if pid == child {
                    return Ok(exit_code(status));
                }
            }
        } else {
            let _ = sys::kill(child, sig);
        }
    }
}

/// pid 1 of the sandbox: builds the root, starts the app, then reaps and forwards.
fn init(plan: &LaunchPlan, bpf: &[u8], alive: OwnedFd) -> Result<i32, LaunchError> {
    rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL))
        .map_err(|e| sys_err("pdeathsig")(rx(e)))?;
    // The launcher may have died before the line above: then the pipe is already at EOF.
    rfs::fcntl_setfl(&alive, OFlags::NONBLOCK).map_err(|e| sys_err("fcntl")(rx(e)))?;
    let mut b = [0u8; 1];
    if let Ok(0) = rustix::io::read(&alive, &mut b) {
        return Ok(EXIT_LAUNCH_FAILED);
    }
    rustix::process::umask(Mode::empty());

    if plan.namespaces.mount {
        sys::unshare(libc::CLONE_NEWNS).map_err(sys_err("unshare mount namespace"))?;
    }
    // Nothing we mount may propagate back to the host; host unmounts still reach us.
    rmount::mount_change(
        "/",
        MountPropagationFlags::DOWNSTREAM | MountPropagationFlags::REC,
    )
    .map_err(|e| io_err("make slave", "/")(rx(e)))?;
    // Every source is opened now, in the new namespace (a bind source must belong to it)
    // and before the root tmpfs covers /tmp; binds then go through these fds.
    let mut opened: Vec<Option<Opened>> = Vec::with_capacity(plan.mounts.len());
    let mut copies: Vec<Option<Vec<u8>>> = Vec::with_capacity(plan.mounts.len());
    for m in &plan.mounts {
        let (o, c) = match m {
            MountOp::Bind { source, .. } => (open_source(source, plan)?, None),
            MountOp::CopyHostFile { source, .. } => (None, std::fs::read(source).ok()),
            _ => (None, None),
        };
        opened.push(o);
        copies.push(c);
    }

    build_root(plan, &opened, &copies)?;
    // The sources are mounted; holding them would pin host mounts (and keep the old root
    // reachable) for the app's lifetime.
    drop(opened);
    drop(copies);

    // Enter the new root and drop the old one.
    rustix::process::chdir(NEWROOT).map_err(|e| io_err("chdir", NEWROOT)(rx(e)))?;
    rustix::process::pivot_root(".", ".").map_err(|e| io_err("pivot_root", NEWROOT)(rx(e)))?;
    rmount::unmount(".", UnmountFlags::DETACH)
        .map_err(|e| io_err("detach old root", "/")(rx(e)))?;
    rustix::process::chdir("/").map_err(|e| io_err("chdir", "/")(rx(e)))?;

    if plan.namespaces.uts {
        rustix::system::sethostname(plan.hostname.as_bytes())
            .map_err(|e| sys_err("sethostname")(rx(e)))?;
    }
    if plan.loopback {
        sys::loopback_up().map_err(sys_err("bring up lo"))?;
    }

    let mut set = FORWARDED.to_vec();
    set.push(libc::SIGCHLD);
    match sys::fork().map_err(sys_err("fork app"))? {
        None => {
            drop(alive);
            let e = exec_app(plan, bpf);
            eprintln!("appmgr-launch: {}: {e}", plan.app_id);
            let code = match &e {
                LaunchError::Io {
                    source,
                    step: "execute",
                    ..
                } if source.kind() == io::ErrorKind::NotFound => EXIT_NOT_FOUND,
                LaunchError::Io {
                    step: "execute", ..
                } => EXIT_CANNOT_EXEC,
                _ => EXIT_LAUNCH_FAILED,
            };
            std::process::exit(code);
        }
        Some(app) => supervise(app, &set),
    }
}

fn build_root(
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
            } => {
                let p = in_root(dest);
                mkdir_p(&p, 0o755)?;
                let mut f = MountFlags::NOSUID | MountFlags::NODEV;
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

/// In the app process: become the app and exec it. Returns only on failure.
fn exec_app(plan: &LaunchPlan, bpf: &[u8]) -> LaunchError {
    match become_app(plan, bpf) {
        Err(e) => e,
        Ok(()) => {
            let e = sys::execve(&plan.exe, &plan.argv, &plan.env);
            LaunchError::Io {
                step: "execute",
                path: plan.exe.clone(),
                source: e,
            }
        }
    }
}

fn become_app(plan: &LaunchPlan, bpf: &[u8]) -> Result<(), LaunchError> {
    use rustix::thread as rt;
    rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL))
        .map_err(|e| sys_err("pdeathsig")(rx(e)))?;
    rustix::process::umask(Mode::from_raw_mode(0o022));
    // A new session: the app has no controlling terminal, so it cannot inject input into
    // the caller's terminal (TIOCSTI needs it) nor receive the terminal's job-control
    // signals directly; the launcher forwards them.
    rustix::process::setsid().map_err(|e| sys_err("setsid")(rx(e)))?;
    rustix::process::chdir(plan.cwd.as_str()).map_err(|e| io_err("chdir", &plan.cwd)(rx(e)))?;
    sys::drop_bounding_set().map_err(sys_err("drop bounding set"))?;
    rt::clear_ambient_capability_set().map_err(|e| sys_err("clear ambient capabilities")(rx(e)))?;
    rt::set_thread_groups(&[]).map_err(|e| sys_err("setgroups")(rx(e)))?;
    let gid = rustix::process::Gid::from_raw(plan.gid);
    let uid = rustix::process::Uid::from_raw(plan.uid);
    rt::set_thread_res_gid(gid, gid, gid).map_err(|e| sys_err("setresgid")(rx(e)))?;
    rt::set_thread_res_uid(uid, uid, uid).map_err(|e| sys_err("setresuid")(rx(e)))?;
    rt::set_capabilities(
        None,
        rt::CapabilitySets {
            effective: rt::CapabilitySet::empty(),
            permitted: rt::CapabilitySet::empty(),
            inheritable: rt::CapabilitySet::empty(),
        },
    )
    .map_err(|e| sys_err("clear capabilities")(rx(e)))?;
    rt::set_no_new_privs(true).map_err(|e| sys_err("no_new_privs")(rx(e)))?;
    sys::unblock_all_signals().map_err(sys_err("unblock signals"))?;
    sys::seccomp_set_filter(bpf).map_err(sys_err("load seccomp filter"))?;
    sys::close_fds_from(3).map_err(sys_err("close_range"))?;
    Ok(())
}
