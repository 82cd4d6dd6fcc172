//! Who is calling, from the kernel's view only: the bus daemon tells the caller's uid and
//! pid (`GetConnectionCredentials`, which it takes from `SO_PEERCRED` when the connection
//! was made); a pidfd pins that process while its `/proc/PID/cgroup` and `/proc/PID/status`
//! are read, and is checked to still refer to a live process afterwards, so a recycled pid
//! cannot lend its cgroup to the caller. The process must sit in exactly one app's cgroup
//! (`appmgr.slice/app-ID.scope`, in every hierarchy appmgr uses), all its uids must be the
//! bus uid, and that uid must be the one appmgr allotted to that app. Nothing the app
//! sends or can write takes part.

use appmgr_cgroup::Hierarchy;
use appmgr_types::AppId;
use std::os::fd::OwnedFd;
use std::path::Path;

/// An app caller, identified.
#[derive(Debug)]
pub struct AppCaller {
    pub app: AppId,
    pub uid: u32,
    pub pid: u32,
    /// Pins the calling process: readable once it has exited.
    pub pidfd: OwnedFd,
}

/// Why a caller is not an app (one line, for the denial and the journal).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotAnApp(pub String);

/// Whether the process `pidfd` refers to has exited (the pidfd is readable then).
pub fn exited(pidfd: &OwnedFd) -> bool {
    use rustix::event::{poll, PollFd, PollFlags};
    let mut fds = [PollFd::new(pidfd, PollFlags::IN)];
    match poll(&mut fds, Some(&rustix::event::Timespec::default())) {
        Ok(n) => n > 0,
        Err(_) => true,
    }
}

/// The real, effective, saved and filesystem uids of a `/proc/PID/status` text.
fn status_uids(status: &str) -> Option<[u32; 4]> {
    let line = status.lines().find_map(|l| l.strip_prefix("Uid:"))?;
    let v: Vec<u32> = line
        .split_whitespace()
        .map(|x| x.parse().ok())
        .collect::<Option<_>>()?;
    v.try_into().ok()
}

/// Identifies the caller with bus uid `uid` and pid `pid` (both from the bus daemon).
pub fn identify(
    uid: u32,
    pid: u32,
    hierarchy: &Hierarchy,
    state_dir: &Path,
) -> Result<AppCaller, NotAnApp> {
    let deny = |m: String| NotAnApp(m);
    let raw = i32::try_from(pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
        .ok_or_else(|| deny(format!("the bus gave an invalid pid {pid}")))?;
    let pidfd =
        rustix::process::pidfd_open(raw, rustix::process::PidfdFlags::empty()).map_err(|e| {
            deny(format!(
                "pid {pid} (uid {uid}): cannot pin the process: {e}"
            ))
        })?;
    let read = |f: &str| {
        std::fs::read_to_string(format!("/proc/{pid}/{f}"))
            .map_err(|e| deny(format!("pid {pid} (uid {uid}): /proc/{pid}/{f}: {e}")))
    };
    let cgroup = read("cgroup")?;
    let status = read("status")?;
    // The files were read from the process the pidfd pins only if it is still alive now:
    // a pid is not reused while a pidfd refers to a live process holding it.
    if exited(&pidfd) {
        return Err(deny(format!(
            "pid {pid} (uid {uid}) exited during the call"
        )));
    }
    let app = hierarchy.app_of_proc_cgroup(&cgroup).ok_or_else(|| {
        let first = cgroup
            .lines()
            .find(|l| l.starts_with("0::"))
            .or(cgroup.lines().next());
        deny(format!(
            "pid {pid} (uid {uid}) is in no app's cgroup ({})",
            first.unwrap_or("no cgroup")
        ))
    })?;
    match status_uids(&status) {
        Some(u) if u.iter().all(|&x| x == uid) => {}
        Some(u) => {
            return Err(deny(format!(
                "pid {pid} in {app}'s cgroup has uids {u:?}, the bus says {uid}"
            )))
        }
        None => {
            return Err(deny(format!(
                "pid {pid}: no Uid line in /proc/{pid}/status"
            )))
        }
    }
    let view = appmgr_state::View::new(state_dir);
    // The installed app of that ID and the uid appmgr allotted to it.
    let allotted = match appmgr_core::apps::resolve_view(&view, app.as_str()) {
        Ok(i) => (i.uid, i.current.is_some()),
        Err(_) => (None, false),
    };
    match allotted {
        (Some(u), true) if u == uid => Ok(AppCaller {
            app,
            uid,
            pid,
            pidfd,
        }),
        (Some(u), true) => Err(deny(format!(
            "pid {pid} in {app}'s cgroup runs as uid {uid}, not {app}'s uid {u}"
        ))),
        _ => Err(deny(format!(
            "pid {pid} (uid {uid}) is in the cgroup of {app}, which is not installed"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uids_from_status() {
        let s = "Name:\tx\nUid:\t70001\t70001\t70001\t70001\nGid:\t1\t1\t1\t1\n";
        assert_eq!(status_uids(s), Some([70001; 4]));
        assert_eq!(status_uids("Uid:\t1\t2\n"), None);
        assert_eq!(status_uids("Name: x\n"), None);
    }

    #[test]
    fn this_process_is_no_app() {
        let h = Hierarchy::v2("/sys/fs/cgroup", appmgr_cgroup::DEFAULT_PARENT).unwrap();
        let d = tempfile::tempdir().unwrap();
        let uid = rustix::process::getuid().as_raw();
        let e = identify(uid, std::process::id(), &h, d.path()).unwrap_err();
        assert!(e.0.contains("in no app's cgroup"), "{e:?}");
        let e = identify(uid, 0, &h, d.path()).unwrap_err();
        assert!(e.0.contains("invalid pid"), "{e:?}");
    }

    #[test]
    fn a_pidfd_of_a_live_process_is_not_exited() {
        let me = rustix::process::pidfd_open(
            rustix::process::getpid(),
            rustix::process::PidfdFlags::empty(),
        )
        .unwrap();
        assert!(!exited(&me));
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = rustix::process::Pid::from_raw(child.id() as i32).unwrap();
        let fd = rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::empty()).unwrap();
        child.wait().unwrap();
        assert!(exited(&fd));
    }
}
