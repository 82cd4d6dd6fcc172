//! The executor: applies a [`LaunchPlan`] in the single-threaded `appmgr-launch`.
//!
//! Process layout:
//!
//! ```text
//! appmgr-launch (host pid+mount ns)     loads the seccomp program, unshares
//!   │                                   pid/uts/[ipc]/[net]; once init exists, places it
//!   │                                   in the helper cgroups and connects the app's
//!   │                                   network while init builds the root, then releases
//!   │                                   init; then only waits, forwards signals, exits
//!   │                                   with the app's status
//!   └─ init (pid 1 of the new pid ns)   unshares the mount ns, opens every source, builds
//!        │                              the root, pivots, waits to be released; then
//!        │                              reaps zombies and forwards signals; dies with the
//!        │                              launcher
//!        └─ app                         drops ids and capabilities, no_new_privs,
//!                                       seccomp, closes fds >= 3, execve
//! ```
//!
//! Detached mode ([`run_detached`], `--report-fd`): init is created with
//! `clone3(CLONE_PARENT)` as a child of the launcher's caller, reports through a status
//! pipe once the app's `execve` succeeded, and the launcher exits; init then neither
//! watches the launcher nor has PDEATHSIG (see docs/sandbox.md).
//!
//! Ordering constraints (each is a security property):
//! - every host path is opened *after* `unshare(CLONE_NEWNS)` (a bind needs a mount of the
//!   caller's namespace) and *before* anything is mounted (the root tmpfs covers `/tmp`);
//!   binds go through those descriptors, so no path is resolved twice;
//! - the cgroup is joined before `unshare(CLONE_NEWCGROUP)`, so the app's cgroup root is
//!   its own cgroup;
//! - init forks the app only after the launcher released it: init is in the helper
//!   cgroups by then (so the app is never counted anywhere else), and the app's network
//!   (pair and rules) is complete. The launcher's part runs while init builds the root:
//!   on a host whose first cgroup migration waits for an RCU grace period (≈ 6 ms here),
//!   that wait overlaps init's work instead of preceding it (docs/sandbox.md);
//! - the bounding set is dropped while still root (needs CAP_SETPCAP), ids are changed,
//!   then the remaining sets are cleared, no_new_privs set, the filter loaded, fds closed,
//!   and nothing but `execve` follows.

mod identity;
mod image;
mod root;
mod sources;
mod terminal;

use crate::plan::{LaunchPlan, MountOp, PLAN_VERSION};
use crate::seccomp::{self, SeccompError};
use crate::sys;
use identity::exec_app;
use root::{build_root, NEWROOT};
use rustix::fs::{self as rfs, Mode, OFlags};
use rustix::mount::{self as rmount, MountPropagationFlags, UnmountFlags};
use sources::{host_root, open_source, Opened};
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::Path;
use terminal::Terminal;

/// Exit status when the launcher itself fails (before the app runs).
pub const EXIT_LAUNCH_FAILED: i32 = 125;
/// Exit status when the app's executable cannot be executed / does not exist.
pub const EXIT_CANNOT_EXEC: i32 = 126;
pub const EXIT_NOT_FOUND: i32 = 127;
/// Exit status when the launch is refused ([`LaunchError::Refused`]): a grant that cannot
/// be resolved safely (a symlink on a host path, a protected or denied path reached
/// through another name, a target inside a bound host directory), a source of the wrong
/// type, a foreign-owned data dir. It is appmgr's "refused by policy" exit code.
pub const EXIT_REFUSED: i32 = 4;
/// The start of [`LaunchError::Refused`]'s message (detached mode recognises the class
/// by it in init's status text).
const REFUSED_PREFIX: &str = "refusing to launch: ";

/// How long the launcher and init wait before shrinking themselves beside the app.
const SHRINK_AFTER: std::time::Duration = std::time::Duration::from_millis(200);

/// `oom_score_adj` of the launcher and init: never chosen by the OOM killer.
const OOM_SCORE_ADJ_HELPER: i32 = -1000;
/// `oom_score_adj` of the app (the kernel's default): the first choice in its cgroup.
const OOM_SCORE_ADJ_APP: i32 = 0;
/// `oom_score_adj` of the app where the helpers could not be protected (no
/// CAP_SYS_RESOURCE, e.g. in a container): the app is made the first choice instead.
const OOM_SCORE_ADJ_APP_UNPROTECTED: i32 = 1000;

const OOM_SCORE_ADJ: &str = "/proc/self/oom_score_adj";

/// Sets the calling process's `oom_score_adj`. Lowering it needs CAP_SYS_RESOURCE; a
/// process holding that capability also sets the floor (`oom_score_adj_min`) its
/// descendants cannot go below once they lost the capability.
fn set_oom_score_adj(v: i32) -> io::Result<()> {
    std::fs::write(OOM_SCORE_ADJ, v.to_string())
}

/// The helpers' protection: -1000, or, where lowering is not permitted (the launcher
/// runs without CAP_SYS_RESOURCE), left as it is (see [`app_oom_score_adj`]).
fn protect_helpers() -> Result<(), LaunchError> {
    match set_oom_score_adj(OOM_SCORE_ADJ_HELPER) {
        Ok(()) => Ok(()),
        Err(e) if matches!(e.raw_os_error(), Some(libc::EACCES | libc::EPERM)) => Ok(()),
        Err(e) => Err(io_err("set oom_score_adj", OOM_SCORE_ADJ)(e)),
    }
}

/// In the app's process, before its capabilities go: 0 below protected helpers, else
/// 1000, so the app is chosen before init either way.
fn app_oom_score_adj() -> Result<(), LaunchError> {
    let now = std::fs::read_to_string(OOM_SCORE_ADJ)
        .map_err(io_err("read oom_score_adj", OOM_SCORE_ADJ))?;
    let v = if now.trim() == OOM_SCORE_ADJ_HELPER.to_string() {
        OOM_SCORE_ADJ_APP
    } else {
        OOM_SCORE_ADJ_APP_UNPROTECTED
    };
    set_oom_score_adj(v).map_err(io_err("set oom_score_adj", OOM_SCORE_ADJ))
}

/// Reads the counters of `events` now: the launch's baseline. A reused cgroup (left
/// behind by a launcher that was killed) keeps its counts, so only an increase during
/// this run is an event of this run.
fn read_counters(events: &[crate::plan::EventCounter]) -> Vec<u64> {
    events
        .iter()
        .map(|c| {
            std::fs::read_to_string(&c.file)
                .ok()
                .and_then(|t| {
                    t.lines().find_map(|l| {
                        let (k, v) = l.split_once(' ')?;
                        (k == c.key).then(|| v.trim().parse::<u64>().ok()).flatten()
                    })
                })
                .unwrap_or(0)
        })
        .collect()
}

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
    #[error("{REFUSED_PREFIX}{path}: {reason}")]
    Refused { path: String, reason: String },
    #[error(transparent)]
    Seccomp(#[from] SeccompError),
    /// One of the plan's inputs changed since the plan was made: applying it could grant
    /// what policy no longer does. The caller makes a new plan and tries again.
    #[error("the launch plan is stale: {0}")]
    Stale(#[from] crate::inputs::StaleInput),
    /// The app's network could not be set up (nothing of it is left).
    #[error("network: {0}")]
    Network(#[from] crate::net::NetError),
}

impl LaunchError {
    /// The launcher's exit status for this failure.
    pub fn exit_code(&self) -> i32 {
        match self {
            LaunchError::Refused { .. } => EXIT_REFUSED,
            _ => EXIT_LAUNCH_FAILED,
        }
    }
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

/// The filesystem grants of `perms` that a launch on this host would refuse now, each with
/// a one-line reason naming the path (for `appmgr permissions`): a grant the sandbox
/// owns or nested in another, a symlink on the way, a protected or `deny_paths` directory
/// reached under another name. Reads the file system (without following symlinks) and
/// changes nothing; the launcher decides again, on what it resolves at launch.
pub fn refused_filesystems(
    perms: &appmgr_types::Permissions,
    deny_paths: &[std::path::PathBuf],
) -> Vec<(String, String)> {
    let protected = match crate::plan::protected_paths(deny_paths) {
        Ok(p) => p,
        Err(e) => {
            return perms
                .filesystems
                .iter()
                .map(|g| (g.path.clone(), e.to_string()))
                .collect()
        }
    };
    let mut out = Vec::new();
    for g in &perms.filesystems {
        let reason = match crate::plan::check_filesystem_grant(perms, &g.path) {
            Err(e) => Some(e.to_string()),
            Ok(()) => sources::check_granted(Path::new(&g.path), &protected)
                .err()
                .map(|e| match e {
                    LaunchError::Refused { path, reason } => format!("{path}: {reason}"),
                    other => other.to_string(),
                }),
        };
        if let Some(r) = reason {
            out.push((g.path.clone(), r));
        }
    }
    out
}

/// Checks the plan, loads the seccomp program, attaches the device program, opens the
/// app's `cgroup.procs` files (the app joins through them), makes the app's network
/// namespace, unshares the namespaces init is created in and blocks the signals the
/// launcher and init wait for.
fn prepare(plan: &LaunchPlan, term: &Terminal) -> Result<Prepared, LaunchError> {
    if plan.version != PLAN_VERSION {
        return Err(LaunchError::PlanVersion(plan.version));
    }
    // Before anything is applied: a plan made earlier (at install, on reload) is only
    // as good as its inputs.
    if let Some(stale) = crate::inputs::first_stale(&plan.inputs) {
        return Err(stale.into());
    }
    // build_plan refuses these already; the launcher does not trust that alone.
    if plan.uid == 0 || plan.gid == 0 {
        return Err(LaunchError::Refused {
            path: plan.exe.clone(),
            reason: "the app may not run as uid or gid 0".into(),
        });
    }
    let bpf = seccomp::load_or_compile_variant(&plan.seccomp, term.variant())?;

    // The launcher and init are never the OOM killer's choice: a memory cgroup filled by
    // the app's tmpfs pages (charged to it, but in nobody's RSS) would otherwise make the
    // root helpers, with the larger RSS, the victims, and nothing would clean up after
    // the app. Inherited by init; the app sets its own back to 0 before it drops
    // CAP_SYS_RESOURCE, which also makes 0 the floor it cannot go below.
    protect_helpers()?;

    // Before anything can join the app's cgroup, so no access escapes the program.
    if let Some(f) = &plan.device_filter {
        sys::attach_cgroup_device_program(&f.cgroup, &f.program)
            .map_err(io_err("attach the device program to", &f.cgroup))?;
    }
    let mut app_cgroups = Vec::with_capacity(plan.cgroup_procs.len());
    for procs in &plan.cgroup_procs {
        let fd = rfs::open(procs, OFlags::WRONLY | OFlags::CLOEXEC, Mode::empty())
            .map_err(|e| io_err("open cgroup", procs)(rx(e)))?;
        app_cgroups.push(fd);
    }

    // The mount namespace is unshared by init, not here: the launcher stays in the host's
    // (init's pivot_root would otherwise move the launcher's root too). The cgroup
    // namespace is the app's own, unshared once it has joined its cgroup.
    let ns = plan.namespaces;
    let mut flags = 0;
    for (on, f) in [
        (ns.pid, libc::CLONE_NEWPID),
        (ns.ipc, libc::CLONE_NEWIPC),
        (ns.uts, libc::CLONE_NEWUTS),
        // The app's own network is made here and joined by init; the launcher stays in
        // the host's namespace to remove it afterwards.
        (ns.net && plan.net.is_none(), libc::CLONE_NEWNET),
    ] {
        if on {
            flags |= f;
        }
    }
    // Last: nothing after it may fail without removing it again.
    let net = match &plan.net {
        Some(n) => Some(crate::net::setup(n)?),
        None => None,
    };
    if let Err(e) = sys::unshare(flags) {
        drop(net);
        net_cleanup(plan);
        return Err(sys_err("unshare")(e));
    }

    let mut forwarded = FORWARDED.to_vec();
    forwarded.push(libc::SIGCHLD);
    sys::block_signals(&forwarded).map_err(sys_err("block signals"))?;
    Ok(Prepared {
        bpf,
        forwarded,
        app_cgroups,
        net,
    })
}

/// Removes the app's network after its sandbox ended (init let go of it).
fn net_cleanup(plan: &LaunchPlan) {
    if let Some(n) = &plan.net {
        net_teardown(&plan.app_id, n);
    }
}

/// [`net_teardown`] in a child the launcher does not wait for: the caller of `appmgr
/// run` gets the app's status without waiting for the removal (a transaction, the host
/// end's retirement, the namespace's name, and libnftables' socket closing after the
/// kernel freed the rules). The launcher takes the network's lock and the child keeps it
/// while it works, so the app's next launch waits for it (bounded); if it dies, the
/// network is stale and collected like any other. Falls back to removing it here when it
/// cannot fork.
fn net_teardown_detached(app_id: &str, n: &crate::net::NetPlan) {
    if let Err(e) = host_pid_namespace() {
        eprintln!("appmgr: {app_id}: removing its network: pid namespace: {e}");
        return;
    }
    // Taken before the fork and handed on, so the lock never looks free between the app's
    // end and the removal: the app's next launch waits for the removal instead of racing
    // it for the network.
    let lock = match crate::net::lock_ended(n) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("appmgr: {app_id}: removing its network: {e}");
            return;
        }
    };
    match sys::fork() {
        Ok(Some(_)) => drop(lock),
        Ok(None) => {
            // Nothing of the caller's: its pipes must see EOF when the launcher exits.
            std_to_null(3);
            let _ = crate::net::remove_locked(n, lock);
            std::process::exit(0);
        }
        Err(_) => {
            if let Err(e) = crate::net::remove_locked(n, lock) {
                eprintln!("appmgr: {app_id}: removing its network: {e}");
            }
        }
    }
}

/// With names in the app's egress grant: a child (in the host's pid namespace, in no
/// cgroup of the app) that looks them up again as their TTLs run out
/// ([`crate::net::Refresher`]) and ends when init ends. Problems go to the caller's
/// stderr; the app keeps running on the last answers.
fn keep_names(app_id: &str, n: &crate::net::NetPlan, init: i32) {
    if n.names.is_empty() {
        return;
    }
    let started = std::time::Instant::now();
    let pidfd = rustix::process::Pid::from_raw(init)
        .ok_or(rustix::io::Errno::SRCH)
        .and_then(|p| rustix::process::pidfd_open(p, rustix::process::PidfdFlags::empty()));
    let (pidfd, refresher) = match (
        pidfd,
        host_pid_namespace()
            .map_err(|e| e.to_string())
            .and_then(|()| crate::net::Refresher::new(n, started).map_err(|e| e.to_string())),
    ) {
        (Ok(fd), Ok(Some(r))) => (fd, r),
        (_, Ok(None)) => return,
        (Err(e), _) => {
            eprintln!("appmgr: {app_id}: names will not be looked up again: pidfd: {e}");
            return;
        }
        (_, Err(e)) => {
            eprintln!("appmgr: {app_id}: names will not be looked up again: {e}");
            return;
        }
    };
    match sys::fork() {
        Ok(Some(_)) => {}
        Ok(None) => {
            std_to_null(2);
            // Nothing of the launcher's: above all not the pipe whose end tells init the
            // launcher died. Signals stay blocked (a ^C is the app's); init's end is ours.
            let keep = [pidfd.as_raw_fd(), refresher.dir_fd()];
            if sys::close_fds_from(3, &keep).is_err() {
                std::process::exit(1);
            }
            let mut r = refresher;
            loop {
                let wait = r
                    .next_due()
                    .saturating_duration_since(std::time::Instant::now());
                let mut fds = [rustix::event::PollFd::new(
                    &pidfd,
                    rustix::event::PollFlags::IN,
                )];
                let ts = rustix::event::Timespec {
                    tv_sec: wait.as_secs() as i64,
                    tv_nsec: i64::from(wait.subsec_nanos()),
                };
                match rustix::event::poll(&mut fds, Some(&ts)) {
                    // Init ended: so has the app, and the network goes.
                    Ok(n) if n > 0 => std::process::exit(0),
                    Ok(_) | Err(rustix::io::Errno::INTR) => {}
                    Err(_) => std::process::exit(1),
                }
                for line in r.refresh(std::time::Instant::now()) {
                    eprintln!("appmgr: {app_id}: {line}");
                }
            }
        }
        Err(e) => eprintln!("appmgr: {app_id}: names will not be looked up again: fork: {e}"),
    }
}

/// In a detached child of the launcher: its first `n` standard descriptors become
/// `/dev/null` (stderr stays the caller's when `n` is 2).
fn std_to_null(n: i32) {
    if let Ok(null) = rfs::open("/dev/null", OFlags::RDWR | OFlags::CLOEXEC, Mode::empty()) {
        for fd in 0..n {
            let _ = sys::dup2_std(null.as_fd(), fd);
        }
    }
}

/// Children of the launcher are created in the host's pid namespace again (the sandbox's
/// died with init: fork fails with ENOMEM there).
fn host_pid_namespace() -> io::Result<()> {
    rfs::open(
        "/proc/self/ns/pid",
        OFlags::RDONLY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .and_then(|fd| {
        rustix::thread::move_into_link_name_space(
            fd.as_fd(),
            Some(rustix::thread::LinkNameSpaceType::ProcessID),
        )
    })
    .map_err(rx)
}

fn net_teardown(app_id: &str, n: &crate::net::NetPlan) {
    if let Err(e) = host_pid_namespace() {
        eprintln!("appmgr: {app_id}: removing its network: pid namespace: {e}");
        return;
    }
    if let Err(e) = crate::net::teardown(n) {
        eprintln!("appmgr: {app_id}: removing its network: {e}");
    }
}

/// What [`prepare`] hands to init: the seccomp program, the signals to wait for, and the
/// app's `cgroup.procs` files, open for writing (close-on-exec).
struct Prepared {
    bpf: Vec<u8>,
    forwarded: Vec<i32>,
    app_cgroups: Vec<OwnedFd>,
    /// The app's network: the namespace init joins and the lock init holds.
    net: Option<crate::net::NetHandle>,
}

/// The launcher: everything from reading the plan to the app's exit. Returns the exit
/// status for `appmgr-launch`.
pub fn run(plan: LaunchPlan) -> Result<i32, LaunchError> {
    let term = Terminal::inspect(&plan.app_id, false);
    let Prepared {
        bpf,
        forwarded,
        app_cgroups,
        net,
    } = prepare(&plan, &term)?;
    let baseline = read_counters(&plan.after_exit.events);
    let pipe = || {
        rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)
            .map_err(|e| sys_err("pipe")(rx(e)))
    };
    let forked = pipe().and_then(|alive| {
        let go = pipe()?;
        Ok((alive, go, sys::fork().map_err(sys_err("fork"))?))
    });
    let ((alive_r, alive_w), (go_r, go_w), forked) = match forked {
        Ok(x) => x,
        Err(e) => {
            drop(net);
            net_cleanup(&plan);
            return Err(e);
        }
    };

    match forked {
        None => {
            drop(alive_w);
            drop(go_w);
            let link = Link::Alive(alive_r);
            let parts = (&bpf[..], &app_cgroups[..], net.as_ref());
            std::process::exit(init(&plan, parts, &term, link, go_r));
        }
        Some(child) => {
            drop(alive_r);
            drop(go_r);
            drop(bpf);
            drop(app_cgroups);
            if let Err(e) = release_init(&plan, child, net.as_ref(), &go_w) {
                // Init has not started the app: it dies, and nothing of the launch stays.
                let _ = sys::kill(child, libc::SIGKILL);
                let _ = rustix::process::waitpid(
                    rustix::process::Pid::from_raw(child),
                    rustix::process::WaitOptions::empty(),
                );
                drop(net);
                net_cleanup(&plan);
                return Err(e);
            }
            drop(go_w);
            // Init holds the network's lock now; ours would keep it held after init died.
            drop(net);
            let app_id = plan.app_id.clone();
            let after = plan.after_exit.clone();
            let net_plan = plan.net.clone();
            drop(plan);
            if let Some(n) = &net_plan {
                keep_names(&app_id, n, child);
            }
            // Keep the write end open: init watches it to notice our death.
            let alive = alive_w;
            let code = supervise(child, &forwarded, term.job_control);
            drop(alive);
            after_exit(&app_id, &after, &baseline);
            if let Some(n) = &net_plan {
                net_teardown_detached(&app_id, n);
            }
            code
        }
    }
}

/// The launcher's part while init builds the root: connects the app's network; places init
/// (host pid `init`) in the helper cgroups, so init stays outside the app's cgroup (its
/// limits, pids.max above all, count the app's own tasks only) and the app, forked by
/// init, is never counted in the caller's; then releases init, which forks the app. The
/// launcher itself stays in its caller's cgroups (the app's cgroups can be removed after
/// the app without moving it).
fn release_init(
    plan: &LaunchPlan,
    init: libc::pid_t,
    net: Option<&crate::net::NetHandle>,
    go: &OwnedFd,
) -> Result<(), LaunchError> {
    // The network first: its transaction is work, the placement mostly a wait for the
    // grace period `appmgr run` started (see docs/sandbox.md, "Performance").
    if let (Some(n), Some(h)) = (&plan.net, net) {
        // The network forks a child: in the host's pid namespace, where init's end (a
        // refused grant) cannot kill it halfway.
        host_pid_namespace().map_err(sys_err("return to the host's pid namespace"))?;
        crate::net::connect(n, h)?;
    }
    // Init may have ended on its own meanwhile (a refused grant, which it reported): then
    // there is nobody to place or release (ESRCH, EPIPE), no app was forked, and the
    // caller's wait gives init's status.
    let pid = init.to_string();
    for procs in &plan.helper_cgroup_procs {
        match std::fs::write(procs, &pid) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::ESRCH) => return Ok(()),
            Err(e) => return Err(io_err("place init in cgroup", procs)(e)),
        }
    }
    match sys::write_all(go, b"g") {
        Err(e) if e.raw_os_error() == Some(libc::EPIPE) => Ok(()),
        r => r.map_err(sys_err("release init")),
    }
}

/// How long init waits to be released: the launcher's part is a few cgroup writes and the
/// network's set-up (milliseconds); past this, something is wrong.
const RELEASE_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

/// In init, once the root is built: waits (bounded) for [`release_init`]. `Ok(false)`:
/// the launcher closed the pipe without releasing (it failed, and reports why).
fn wait_released(go: &OwnedFd) -> Result<bool, LaunchError> {
    if !sys::wait_readable_within(go.as_fd(), Some(RELEASE_WAIT))
        .map_err(sys_err("wait for the launcher"))?
    {
        return Err(sys_err("wait for the launcher")(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("not released within {} s", RELEASE_WAIT.as_secs()),
        )));
    }
    let mut b = [0u8; 1];
    loop {
        match rustix::io::read(go, &mut b) {
            Ok(1) => return Ok(b[0] == b'g'),
            Ok(_) => return Ok(false),
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(sys_err("wait for the launcher")(rx(e))),
        }
    }
}

/// Detached mode (`appmgr-launch --report-fd N`, for appmgrd's services): like [`run`], but
/// init is created with `CLONE_PARENT`, so it is a child of the launcher's parent, and the
/// launcher exits as soon as the app has been started. Returns the launcher's exit status.
///
/// `report` receives init's host pid as soon as init exists (`"<pid>\n"`), then, on
/// failure, one `"error: <message>\n"` line. Exit 0: the app's `execve` succeeded, and init
/// (pid 1 of the sandbox) supervises it alone. Exit 125: set-up failed, init has been
/// killed and has exited, and the caller must still reap it (it is the caller's child)
/// when a pid was reported. `after_exit` duties are the caller's.
pub fn run_detached(plan: LaunchPlan, report: OwnedFd) -> i32 {
    let fail = |report: &OwnedFd, msg: String| {
        eprintln!("appmgr: {}: {msg}", plan.app_id);
        let _ = sys::write_all(report, format!("error: {msg}\n").as_bytes());
        if msg.starts_with(REFUSED_PREFIX) {
            EXIT_REFUSED
        } else {
            EXIT_LAUNCH_FAILED
        }
    };
    let term = Terminal::inspect(&plan.app_id, true);
    let (bpf, app_cgroups, net) = match prepare(&plan, &term) {
        Ok(p) => (p.bpf, p.app_cgroups, p.net),
        Err(e) => return fail(&report, e.to_string()),
    };
    // Set-up failed after the network was made: nothing may be left of it.
    let fail_net = |report: &OwnedFd, msg: String| {
        net_cleanup(&plan);
        fail(report, msg)
    };
    let pipes = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC).and_then(|status| {
        Ok((
            status,
            rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)?,
        ))
    });
    let ((status_r, status_w), (go_r, go_w)) = match pipes {
        Ok(p) => p,
        Err(e) => {
            drop(net);
            return fail_net(&report, format!("pipe: {}", rx(e)));
        }
    };
    let (pid, pidfd) = match sys::clone_sibling() {
        Err(e) => {
            drop(net);
            return fail_net(&report, format!("clone init: {e}"));
        }
        Ok(None) => {
            // The report fd and the status pipe's read end are the launcher's: holding
            // them would keep the caller (and the launcher) from ever seeing EOF.
            drop(report);
            drop(status_r);
            drop(go_w);
            let parts = (&bpf[..], &app_cgroups[..], net.as_ref());
            std::process::exit(init(&plan, parts, &term, Link::Status(status_w), go_r));
        }
        Ok(Some(x)) => x,
    };
    drop(status_w);
    drop(go_r);
    drop(bpf);
    drop(app_cgroups);
    let released = sys::write_all(&report, format!("{pid}\n").as_bytes())
        .map_err(|e| format!("reporting init's pid: {e}"))
        .and_then(|()| release_init(&plan, pid, net.as_ref(), &go_w).map_err(|e| e.to_string()));
    drop(go_w);
    // Init holds the network's lock now.
    drop(net);
    let outcome = match released {
        Err(e) => Err(e),
        Ok(()) => match sys::read_to_end(&status_r) {
            Err(e) => Err(format!("reading init's status: {e}")),
            Ok(b) if b == b"+" => Ok(()),
            Ok(b) if b.is_empty() => Err("init ended before starting the app".into()),
            // The app failed between fork and execve (after "+"), or init did before.
            Ok(b) => Err(String::from_utf8_lossy(b.strip_prefix(b"+").unwrap_or(&b)).into()),
        },
    };
    match outcome {
        Ok(()) => 0,
        Err(msg) => {
            // Nothing may be left behind: kill init (its pid namespace dies with it) and
            // wait until it has exited, so the caller's wait for it returns at once.
            let _ = rustix::process::pidfd_send_signal(&pidfd, rustix::process::Signal::KILL);
            let _ = sys::wait_readable(pidfd.as_fd());
            fail_net(&report, msg)
        }
    }
}

/// Reports limit events (counts above `baseline`, read at the start of this launch) and
/// removes the app's cgroups once the app has ended. Init's death made the kernel kill
/// everything left in the pid namespace; the dying processes may keep a cgroup busy for
/// a moment, so removal is retried briefly. Failures are reported, never fatal: the
/// app's status is what the launcher exits with.
fn after_exit(app_id: &str, after: &crate::plan::AfterExit, baseline: &[u64]) {
    let now = read_counters(&after.events);
    for (i, c) in after.events.iter().enumerate() {
        let n = now[i].saturating_sub(baseline.get(i).copied().unwrap_or(0));
        if n > 0 {
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
                    eprintln!("appmgr: {app_id}: removing {}: {e}", d.display());
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
/// `job_control`: the app shares the launcher's process group (see `terminal`), so the
/// signals the kernel sends to that whole group (the terminal's INTR, QUIT, WINCH,
/// hangup) have reached the app already and are not forwarded a second time.
///
/// If the child is still running after [`SHRINK_AFTER`], the process drops its clean code
/// pages (see [`sys::release_code_pages`]): long-running apps get a small helper, short
/// ones do not pay for it on their start-up path.
fn supervise(child: libc::pid_t, set: &[i32], job_control: bool) -> Result<i32, LaunchError> {
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
        let sys::Caught { sig, from_kernel } = sig;
        if sig == libc::SIGCHLD {
            while let Some((pid, status)) = sys::waitpid_nohang(-1).map_err(sys_err("wait"))? {
                if pid == child {
                    return Ok(exit_code(status));
                }
            }
        } else if !(job_control && from_kernel) {
            let _ = sys::kill(child, sig);
        }
    }
}

/// How init is tied to the launcher.
enum Link {
    /// Foreground: the launcher holds the pipe's write end and init dies with it
    /// (PDEATHSIG; the read end catches the launcher dying before the prctl).
    Alive(OwnedFd),
    /// Detached: init writes `+` here just before forking the app; init's own set-up
    /// error, or the app's failure before `execve`, follows as text. The app keeps the fd
    /// (close-on-exec) until `execve`, so EOF after `+` means the app is running. Init
    /// does not depend on the launcher, which exits then.
    Status(OwnedFd),
}

/// What init gets of [`Prepared`]: the seccomp program, the app's `cgroup.procs` files
/// and the app's network.
type InitParts<'a> = (&'a [u8], &'a [OwnedFd], Option<&'a crate::net::NetHandle>);

/// pid 1 of the sandbox: builds the root, waits to be released, starts the app, then
/// reaps and forwards. Returns init's exit status.
fn init(
    plan: &LaunchPlan,
    (bpf, app_cgroups, net): InitParts<'_>,
    term: &Terminal,
    link: Link,
    go: OwnedFd,
) -> i32 {
    let status = match link {
        Link::Alive(alive) => match tie_to_launcher(alive) {
            Ok(true) => None,
            Ok(false) => return EXIT_LAUNCH_FAILED,
            Err(e) => {
                eprintln!("appmgr: {}: {e}", plan.app_id);
                return EXIT_LAUNCH_FAILED;
            }
        },
        Link::Status(fd) => Some(fd),
    };
    // Foreground errors go to stderr; detached ones to the launcher, which prints them.
    let report = |e: &LaunchError| match &status {
        Some(fd) => {
            let _ = sys::write_all(fd, e.to_string().as_bytes());
        }
        None => eprintln!("appmgr: {}: {e}", plan.app_id),
    };
    // The app's network first: the root is built in the namespaces the app runs in.
    if let Some(h) = net {
        if let Err(e) = crate::net::enter(&h.netns) {
            let e = sys_err("join the app's network")(e);
            report(&e);
            return e.exit_code();
        }
    }
    if let Err(e) = build_and_enter_root(plan) {
        report(&e);
        return e.exit_code();
    }
    // The launcher placed init in the helper cgroups and made the app's pair and rules
    // meanwhile; the app starts only after both.
    match wait_released(&go) {
        Ok(true) => {}
        // The launcher failed and reports it (and kills init).
        Ok(false) => return EXIT_LAUNCH_FAILED,
        Err(e) => {
            report(&e);
            return e.exit_code();
        }
    }
    drop(go);
    if let Some(n) = &plan.net {
        if let Err(e) = crate::net::configure_app_end(n) {
            let e = sys_err("configure the app's network")(e);
            report(&e);
            return e.exit_code();
        }
    }

    let mut set = FORWARDED.to_vec();
    set.push(libc::SIGCHLD);
    if let Some(fd) = &status {
        if let Err(e) = sys::write_all(fd, b"+") {
            eprintln!("appmgr: {}: reporting to the launcher: {e}", plan.app_id);
            return EXIT_LAUNCH_FAILED;
        }
    }
    match sys::fork() {
        Err(e) => {
            report(&sys_err("fork app")(e));
            EXIT_LAUNCH_FAILED
        }
        Ok(None) => {
            // Back to the default before the capabilities go (see `prepare`).
            let e = match app_oom_score_adj() {
                Ok(()) => exec_app(
                    plan,
                    bpf,
                    term,
                    app_cgroups,
                    status.as_ref().map(|fd| fd.as_raw_fd()),
                ),
                Err(e) => e,
            };
            report(&e);
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
        Ok(Some(app)) => {
            drop(status);
            match supervise(app, &set, term.job_control) {
                Ok(code) => code,
                Err(e) => {
                    eprintln!("appmgr: {}: {e}", plan.app_id);
                    EXIT_LAUNCH_FAILED
                }
            }
        }
    }
}

/// Foreground init: dies with the launcher. `Ok(false)` if the launcher is already gone.
fn tie_to_launcher(alive: OwnedFd) -> Result<bool, LaunchError> {
    rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL))
        .map_err(|e| sys_err("pdeathsig")(rx(e)))?;
    // The launcher may have died before the line above: then the pipe is already at EOF.
    rfs::fcntl_setfl(&alive, OFlags::NONBLOCK).map_err(|e| sys_err("fcntl")(rx(e)))?;
    let mut b = [0u8; 1];
    Ok(!matches!(rustix::io::read(&alive, &mut b), Ok(0)))
}

/// Init's set-up: mount namespace, sources, root, pivot, hostname, loopback.
fn build_and_enter_root(plan: &LaunchPlan) -> Result<(), LaunchError> {
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
    // Each host path is resolved once, beneath `/`, without following symlinks.
    let host = host_root()?;
    let mut opened: Vec<Option<Opened>> = Vec::with_capacity(plan.mounts.len());
    let mut copies: Vec<Option<Vec<u8>>> = Vec::with_capacity(plan.mounts.len());
    for m in &plan.mounts {
        let (o, c) = match m {
            MountOp::Bind { source, .. } => (open_source(&host, source, plan)?, None),
            MountOp::DeviceNode { source, .. } => (
                open_source(
                    &host,
                    &crate::plan::BindSource::Device(source.clone()),
                    plan,
                )?,
                None,
            ),
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

    Ok(())
}
