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

mod identity;
mod root;
mod sources;

use crate::plan::{LaunchPlan, MountOp, PLAN_VERSION};
use crate::seccomp::{self, SeccompError};
use crate::sys;
use identity::exec_app;
use root::{build_root, NEWROOT};
use rustix::fs::{self as rfs, Mode, OFlags};
use rustix::mount::{self as rmount, MountPropagationFlags, UnmountFlags};
use sources::{open_source, Opened};
use std::io;
use std::os::fd::OwnedFd;
use std::path::Path;

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

pub(super) fn io_err(
    step: &'static str,
    path: impl AsRef<Path>,
) -> impl FnOnce(io::Error) -> LaunchError {
    let path = path.as_ref().display().to_string();
    move |source| LaunchError::Io { step, path, source }
}

pub(super) fn sys_err(step: &'static str) -> impl FnOnce(io::Error) -> LaunchError {
    move |source| LaunchError::Sys { step, source }
}

pub(super) fn rx(e: rustix::io::Errno) -> io::Error {
    io::Error::from_raw_os_error(e.raw_os_error())
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
            let app_id = plan.app_id.clone();
            let after = plan.after_exit.clone();
            drop(plan);
            // Keep the write end open: init watches it to notice our death.
            let alive = alive_w;
            let code = supervise(child, &forwarded)?;
            drop(alive);
            after_exit(&app_id, &after);
            Ok(code)
        }
    }
}

/// Reports limit events and removes the app's cgroups once the app has ended. Init's death
/// made the kernel kill everything left in the pid namespace; the dying processes may
/// keep a cgroup busy for a moment, so removal is retried briefly. Failures are reported,
/// never fatal: the app's status is what the launcher exits with.
fn after_exit(app_id: &str, after: &crate::plan::AfterExit) {
    let me = std::process::id().to_string();
    for procs in &after.leave_to {
        if let Err(e) = std::fs::write(procs, &me) {
            eprintln!(
                "appmgr-launch: {app_id}: leaving the app cgroup via {}: {e}",
                procs.display()
            );
        }
    }
    for c in &after.events {
        let n = std::fs::read_to_string(&c.file).ok().and_then(|t| {
            t.lines().find_map(|l| {
                let (k, v) = l.split_once(' ')?;
                (k == c.key).then(|| v.trim().parse::<u64>().ok()).flatten()
            })
        });
        if let Some(n) = n.filter(|n| *n > 0) {
            eprintln!("appmgr: event: {app_id} limit-hit {} ({n})", c.event);
        }
    }
    for d in &after.remove_dirs {
        let mut tries = 0;
        loop {
            match std::fs::remove_dir(d) {
                Ok(()) => break,
                Err(e) if e.kind() == io::ErrorKind::NotFound => break,
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) && tries < 100 => {
                    tries += 1;
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
                Err(e) => {
                    eprintln!("appmgr-launch: {app_id}: removing {}: {e}", d.display());
                    break;
                }
            }
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
