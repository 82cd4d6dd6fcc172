//! The terminal: an app reads the caller's terminal only while it is the foreground job
//! (docs/sandbox.md, "The terminal").
//!
//! The kernel's job control (SIGTTIN for a read from a background process group, EIO when
//! SIGTTIN is ignored or the group is orphaned) applies only to processes whose
//! *controlling* terminal the terminal is. So:
//! - when one of fds 0-2 is the launcher's controlling terminal (foreground mode), the app
//!   stays in the caller's session and in the launcher's process group (the shell's job),
//!   and its seccomp filter is the [`Variant::JobControlled`] one, which keeps it from
//!   leaving the session or taking the terminal over;
//! - any other terminal on fds 0-2 (one this session does not control, a pty master, or
//!   any terminal in detached mode) is replaced by `/dev/null` for the app: without job
//!   control nothing would stop it from reading what is typed for someone else;
//! - otherwise (no terminal on fds 0-2) nothing changes: the app gets its own session and
//!   has no controlling terminal, as before.

use super::{rx, sys_err, LaunchError};
use crate::seccomp::Variant;
use crate::sys;
use rustix::fs::{Mode, OFlags};
use std::os::fd::{AsFd, BorrowedFd};

/// What one of fds 0-2 is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StdFd {
    /// Closed, or not a terminal (pipe, file, socket, `/dev/null`): given unchanged.
    NotTerminal,
    /// The launcher's controlling terminal (the slave side).
    Controlling,
    /// A terminal that job control cannot guard for the app: replaced by `/dev/null`.
    Foreign,
}

/// The launcher's finding about fds 0-2, decided once before init is created.
#[derive(Debug, Clone, Copy)]
pub(super) struct Terminal {
    fds: [StdFd; 3],
    /// The app stays in the caller's session and process group.
    pub(super) job_control: bool,
}

fn classify(fd: BorrowedFd<'_>) -> StdFd {
    let Ok(st) = rustix::fs::fstat(fd) else {
        return StdFd::NotTerminal;
    };
    if !rustix::termios::isatty(fd) {
        return StdFd::NotTerminal;
    }
    // A pty master (`/dev/ptmx`: 5,2; BSD masters: major 2) answers TIOCGSID for its
    // slave's session, but reading it reads everything the slave's programs write.
    let (major, minor) = (rustix::fs::major(st.st_rdev), rustix::fs::minor(st.st_rdev));
    if (major, minor) == (5, 2) || major == 2 {
        return StdFd::Foreign;
    }
    // TIOCGSID answers only for the caller's controlling terminal (ENOTTY otherwise).
    match (rustix::termios::tcgetsid(fd), rustix::process::getsid(None)) {
        (Ok(a), Ok(b)) if a == b => StdFd::Controlling,
        _ => StdFd::Foreign,
    }
}

impl Terminal {
    /// Looks at fds 0-2. `detached`: the launcher's caller is a daemon, the app is not a
    /// job of any shell, and no terminal is handed over. Prints one line per terminal
    /// the app does not get.
    pub(super) fn inspect(app_id: &str, detached: bool) -> Terminal {
        let mut fds = [StdFd::NotTerminal; 3];
        for (n, slot) in fds.iter_mut().enumerate() {
            let (i, o, e) = (std::io::stdin(), std::io::stdout(), std::io::stderr());
            let fd = match n {
                0 => i.as_fd(),
                1 => o.as_fd(),
                _ => e.as_fd(),
            };
            *slot = match classify(fd) {
                StdFd::Controlling if detached => StdFd::Foreign,
                k => k,
            };
            if *slot == StdFd::Foreign {
                eprintln!(
                    "appmgr: {app_id}: fd {n} is a terminal that is not this job's \
                     controlling terminal: the app gets /dev/null instead"
                );
            }
        }
        let job_control = !detached && fds.contains(&StdFd::Controlling);
        Terminal { fds, job_control }
    }

    /// The seccomp variant the app needs.
    pub(super) fn variant(&self) -> Variant {
        if self.job_control {
            Variant::JobControlled
        } else {
            Variant::Plain
        }
    }

    /// In the app process, inside the new root, before ids change: the session and fds
    /// 0-2 as decided by [`Terminal::inspect`].
    pub(super) fn apply(&self) -> Result<(), LaunchError> {
        if !self.job_control {
            // A new session: no controlling terminal, so the app cannot open `/dev/tty`
            // nor get the caller's terminal's job-control signals (the launcher forwards
            // them).
            rustix::process::setsid().map_err(|e| sys_err("setsid")(rx(e)))?;
        }
        if self.fds.contains(&StdFd::Foreign) {
            let null = rustix::fs::open(
                "/dev/null",
                OFlags::RDWR | OFlags::CLOEXEC | OFlags::NOCTTY,
                Mode::empty(),
            )
            .map_err(|e| sys_err("open /dev/null for a foreign terminal")(rx(e)))?;
            for (n, k) in self.fds.iter().enumerate() {
                if *k == StdFd::Foreign {
                    sys::dup2_std(null.as_fd(), n as i32)
                        .map_err(sys_err("replace a foreign terminal"))?;
                }
            }
        }
        Ok(())
    }
}
