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
use std::process::Command;

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
