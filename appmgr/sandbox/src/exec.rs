//! Starting `appmgr-launch` from the CLI or the daemon.
//!
//! The plan travels as JSON in a sealed memfd (no temporary file, no size limit of argv,
//! immutable once sealed) whose descriptor number is given as `--plan-fd N`. The launcher
//! runs with an empty environment: nothing of the caller's (`LD_PRELOAD`, `GCONV_PATH`,
//! ...) reaches this root-owned helper or the app.

use crate::plan::LaunchPlan;
use crate::sys;
use rustix::fs::{MemfdFlags, SealFlags};
use std::io::Write;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::PathBuf;
use std::process::{Command, Stdio};

/// Environment variable naming the launcher binary (tests, development trees).
pub const LAUNCHER_ENV: &str = "APPMGR_LAUNCH";
/// The launcher's file name, looked up next to the current executable.
pub const LAUNCHER_NAME: &str = "appmgr-launch";

#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    #[error("cannot find {LAUNCHER_NAME}: {0}")]
    NotFound(String),
    #[error("cannot pass the launch plan: {0}")]
    Plan(std::io::Error),
    #[error("cannot execute {path}: {source}")]
    Exec {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot run {LAUNCHER_NAME} detached: {0}")]
    Report(std::io::Error),
    /// Detached start failed; `init` (if it was created) has been killed and reaped.
    #[error("sandbox not started ({LAUNCHER_NAME} {}): {message}", match .code {
        Some(c) => format!("exit {c}"),
        None => "killed".to_string(),
    })]
    Launch {
        /// The launcher's exit code (`None`: killed by a signal).
        code: Option<i32>,
        /// Init's host pid, if init was created (already reaped).
        init: Option<u32>,
        message: String,
    },
}

/// Starts the wait of the launch's first cgroup migration early, in a child that moves
/// itself into the cgroup it is already in (`procs`: a `cgroup.procs` file of the
/// caller's own cgroup) and exits; the caller goes on at once.
///
/// Every migration takes the kernel's `cgroup_threadgroup_rwsem` for writing; when none
/// happened in the last few tens of milliseconds, that first waits for an RCU grace
/// period (≈ 6 ms measured on the 2-core x86_64 machine, cgroup v1, more on a busy one),
/// and migrations right after it do not. `appmgr run` calls this as soon as the app's
/// cgroups exist, so the launcher's placement of init, and the app's join, find the grace
/// period over or under way instead of starting one. (Not earlier: the child's write holds
/// the kernel's cgroup mutex while it waits, and a `mkdir` of a cgroup needs it.) Nothing
/// is moved anywhere; failures are ignored (the launch only loses the head start). The
/// work is done by a grandchild, so the caller, which becomes the launcher, is left with
/// no stray child.
///
/// Only for a single-threaded caller (see [`sys::fork`]).
pub fn prime_cgroup_migration(procs: &std::path::Path) {
    use std::os::unix::ffi::OsStrExt;
    // Made before the fork: the child only opens, writes and exits (no allocation).
    let Ok(path) = std::ffi::CString::new(procs.as_os_str().as_bytes()) else {
        return;
    };
    match sys::fork() {
        Ok(None) => {
            // A grandchild does the work: the child exits at once, so the caller (soon
            // the launcher) has no child of its own beside init to wait for.
            if let Ok(None) = sys::fork() {
                if let Ok(fd) = rustix::fs::open(
                    path.as_c_str(),
                    rustix::fs::OFlags::WRONLY | rustix::fs::OFlags::CLOEXEC,
                    rustix::fs::Mode::empty(),
                ) {
                    let _ = rustix::io::write(&fd, b"0");
                }
            }
            sys::exit_now(0);
        }
        Ok(Some(child)) => {
            // Bounded: the child only forks and exits.
            let _ = rustix::process::waitpid(
                rustix::process::Pid::from_raw(child),
                rustix::process::WaitOptions::empty(),
            );
        }
        Err(_) => {}
    }
}

/// Where packages install the launcher when it is not next to the CLI.
pub const LAUNCHER_LIBEXEC: &str = "/usr/libexec/appmgr/appmgr-launch";

/// The launcher binary: `$APPMGR_LAUNCH` if set (tests, development trees), else
/// `appmgr-launch` next to the current executable, else [`LAUNCHER_LIBEXEC`].
pub fn launcher_path() -> Result<PathBuf, ExecError> {
    if let Some(p) = std::env::var_os(LAUNCHER_ENV) {
        return Ok(PathBuf::from(p));
    }
    let exe = std::env::current_exe().map_err(|e| ExecError::NotFound(e.to_string()))?;
    if let Some(p) = exe.parent().map(|d| d.join(LAUNCHER_NAME)) {
        if p.exists() {
            return Ok(p);
        }
    }
    let p = PathBuf::from(LAUNCHER_LIBEXEC);
    if p.exists() {
        return Ok(p);
    }
    Err(ExecError::NotFound(format!(
        "not next to {} nor at {LAUNCHER_LIBEXEC}",
        exe.display()
    )))
}

/// Writes `plan` into a sealed memfd.
pub fn plan_memfd(plan: &LaunchPlan) -> std::io::Result<OwnedFd> {
    let json = serde_json::to_vec(plan).map_err(std::io::Error::other)?;
    let fd = rustix::fs::memfd_create(
        "appmgr-plan",
        MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING,
    )?;
    let mut f = std::fs::File::from(fd);
    f.write_all(&json)?;
    std::io::Seek::rewind(&mut f)?;
    let fd = OwnedFd::from(f);
    rustix::fs::fcntl_add_seals(
        &fd,
        SealFlags::SEAL | SealFlags::SHRINK | SealFlags::GROW | SealFlags::WRITE,
    )?;
    Ok(fd)
}

/// A `Command` that runs the launcher with `plan`. stdin/stdout/stderr are inherited (the
/// app's); the environment is empty. Keep the returned fd alive until the command has
/// been spawned.
pub fn launcher_command(plan: &LaunchPlan) -> Result<(Command, OwnedFd), ExecError> {
    let path = launcher_path()?;
    let fd = plan_memfd(plan).map_err(ExecError::Plan)?;
    let mut cmd = Command::new(&path);
    cmd.env_clear()
        .arg("--plan-fd")
        .arg(fd.as_raw_fd().to_string());
    sys::keep_fd_in_child(&mut cmd, fd.as_raw_fd());
    Ok((cmd, fd))
}

/// Replaces the current process with the launcher (what `appmgr run` does: the launcher's
/// exit status, which is the app's, becomes the command's). Returns only on failure.
pub fn exec_launcher(plan: &LaunchPlan) -> ExecError {
    use std::os::unix::process::CommandExt;
    let (mut cmd, _fd) = match launcher_command(plan) {
        Ok(x) => x,
        Err(e) => return e,
    };
    let source = cmd.exec();
    ExecError::Exec {
        path: PathBuf::from(cmd.get_program()),
        source,
    }
}

/// Reads a plan from the fd the launcher was given.
pub fn read_plan_fd(fd: i32) -> std::io::Result<LaunchPlan> {
    use std::io::Read;
    use std::io::{Seek, SeekFrom};
    let owned = sys::take_inherited_fd(fd)?;
    let mut f = std::fs::File::from(owned);
    // The open file description is shared with the caller, whose write moved the offset.
    f.seek(SeekFrom::Start(0))?;
    let mut buf = Vec::new();
    f.read_to_end(&mut buf)?;
    serde_json::from_slice(&buf).map_err(std::io::Error::other)
}

/// A sandbox started by [`spawn_detached`]: its init (pid 1 inside), a child of the
/// calling process, running the app.
#[derive(Debug)]
pub struct DetachedInit {
    /// Init's pid in the caller's pid namespace.
    pub pid: u32,
    /// A pidfd for init (`pidfd_open`); `waitid(P_PIDFD)` reaps it, poll says when it ends.
    pub pidfd: OwnedFd,
}

/// Starts the sandbox for `plan` with no helper process left beside it but its init:
/// runs `appmgr-launch --plan-fd N --report-fd M` (stdin `/dev/null`, the given stdout and
/// stderr, which init and the app inherit), waits for it to exit (it does once the app's
/// `execve` has succeeded) and returns init, now a child of the calling process.
///
/// Blocking (milliseconds; call it from `spawn_blocking` in async code). The caller owns
/// init from then on: it must reap it (`waitid(P_PIDFD, WEXITED)`; the status is the app's,
/// 128+N if the app was killed by signal N, 125 if init itself failed) and do the plan's
/// `after_exit` duties itself. The caller must not reap children it does not know
/// (`waitpid(-1)`), or the pid could be reused before `pidfd_open`. On failure nothing is
/// left running and init, if created, has been reaped.
pub fn spawn_detached(
    plan: &LaunchPlan,
    stdout: Stdio,
    stderr: Stdio,
) -> Result<DetachedInit, ExecError> {
    use std::io::Read;
    let (mut cmd, plan_fd) = launcher_command(plan)?;
    let (report_r, report_w) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)
        .map_err(|e| ExecError::Report(e.into()))?;
    cmd.arg("--report-fd")
        .arg(report_w.as_raw_fd().to_string())
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(stderr);
    sys::keep_fd_in_child(&mut cmd, report_w.as_raw_fd());
    let spawned = cmd.spawn();
    drop(report_w);
    drop(plan_fd);
    let mut child = spawned.map_err(|source| ExecError::Exec {
        path: PathBuf::from(cmd.get_program()),
        source,
    })?;
    let status = child.wait().map_err(ExecError::Report);
    // The launcher has exited (or waiting failed); init closed its copy at birth, so this
    // read ends.
    let mut text = String::new();
    let read = std::fs::File::from(report_r).read_to_string(&mut text);
    let pid = text.lines().next().and_then(|l| l.parse::<u32>().ok());
    let error = text
        .lines()
        .find_map(|l| l.strip_prefix("error: "))
        .map(str::to_string);
    let code = status.as_ref().ok().and_then(|s| s.code());
    if let (Ok(st), Ok(_), Some(pid), None) = (&status, &read, pid, &error) {
        if st.success() {
            let p = rustix::process::Pid::from_raw(pid as i32);
            match p.map(|p| rustix::process::pidfd_open(p, rustix::process::PidfdFlags::empty())) {
                Some(Ok(pidfd)) => return Ok(DetachedInit { pid, pidfd }),
                _ => {
                    reap_failed_init(pid);
                    return Err(ExecError::Launch {
                        code,
                        init: Some(pid),
                        message: "cannot open a pidfd for init".into(),
                    });
                }
            }
        }
    }
    if let Some(pid) = pid {
        reap_failed_init(pid);
    }
    let message = match (status, read, error) {
        (Err(e), _, _) => format!("waiting for the launcher: {}", e),
        (_, Err(e), _) => format!("reading the launcher's report: {e}"),
        (_, _, Some(m)) => m,
        (Ok(st), _, None) => format!("the launcher ended without a report ({st})"),
    };
    Err(ExecError::Launch {
        code,
        init: pid,
        message,
    })
}

/// Kills (if still running) and reaps init after a failed detached start.
fn reap_failed_init(pid: u32) {
    let Some(p) = rustix::process::Pid::from_raw(pid as i32) else {
        return;
    };
    // Init is our unreaped child, so the pid still names it.
    if let Ok(fd) = rustix::process::pidfd_open(p, rustix::process::PidfdFlags::empty()) {
        let _ = rustix::process::pidfd_send_signal(&fd, rustix::process::Signal::KILL);
    }
    let _ = rustix::process::waitpid(Some(p), rustix::process::WaitOptions::empty());
}
