//! Becoming the app: ids, capabilities, no_new_privs, seccomp, fds, execve.

use super::terminal::Terminal;
use super::{io_err, rx, sys_err, LaunchError};
use crate::plan::LaunchPlan;
use crate::sys;
use rustix::fs::Mode;
use std::os::fd::{OwnedFd, RawFd};

/// In the app process: become the app and exec it. Returns only on failure. `keep` is a
/// close-on-exec fd that stays open until `execve` (detached mode's status pipe).
pub(super) fn exec_app(
    plan: &LaunchPlan,
    bpf: &[u8],
    term: &Terminal,
    cgroups: &[OwnedFd],
    keep: Option<RawFd>,
) -> LaunchError {
    match become_app(plan, bpf, term, cgroups, keep) {
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

/// Moves the calling process into the app's cgroups (`0` = the writer), then gives it
/// its own cgroup namespace rooted there. Still root: init stays in the launcher's
/// sibling cgroup, so the app's cgroup only ever holds the app's own tasks.
fn join_app_cgroups(plan: &LaunchPlan, cgroups: &[OwnedFd]) -> Result<(), LaunchError> {
    for (fd, path) in cgroups.iter().zip(&plan.cgroup_procs) {
        match rustix::io::write(fd, b"0") {
            Ok(1) => {}
            Ok(_) => {
                return Err(io_err("join cgroup", path)(
                    std::io::ErrorKind::WriteZero.into(),
                ))
            }
            Err(e) => return Err(io_err("join cgroup", path)(rx(e))),
        }
    }
    if plan.namespaces.cgroup {
        sys::unshare(libc::CLONE_NEWCGROUP).map_err(sys_err("unshare cgroup namespace"))?;
    }
    Ok(())
}

fn become_app(
    plan: &LaunchPlan,
    bpf: &[u8],
    term: &Terminal,
    cgroups: &[OwnedFd],
    keep: Option<RawFd>,
) -> Result<(), LaunchError> {
    use rustix::thread as rt;
    join_app_cgroups(plan, cgroups)?;
    rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL))
        .map_err(|e| sys_err("pdeathsig")(rx(e)))?;
    rustix::process::umask(Mode::from_raw_mode(0o022));
    // The session and fds 0-2: the app's own session without a terminal, or the
    // caller's job when fds 0-2 hold its controlling terminal (see `terminal`).
    term.apply()?;
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
    sys::default_signal_dispositions();
    sys::unblock_all_signals().map_err(sys_err("unblock signals"))?;
    sys::seccomp_set_filter(bpf).map_err(sys_err("load seccomp filter"))?;
    sys::close_fds_from(3, keep.as_slice()).map_err(sys_err("close_range"))?;
    Ok(())
}
