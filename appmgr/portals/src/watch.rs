//! Revocation. While any stream or render-node handout is open, every [`TICK`]:
//!
//! - a stream whose caller has exited ends (its pidfd is readable), and the record of a
//!   handout to an exited process goes (the kernel closed its descriptors);
//! - when the kept launch plans changed (`STATE/plans`: `appmgr reload`, install, update,
//!   remove and rollback all rewrite or drop them), every app holding something is checked
//!   against its grant now: a stream whose channels or rate are no longer granted ends; an
//!   app still running with a render node it is no longer granted is stopped (SIGKILL to
//!   every process of its cgroup), because the kernel has no way to take back an open
//!   DRM descriptor. Each revocation is a journal event.
//!
//! So a stopped or revoked app loses what it was handed within `TICK` plus one check.

use crate::{grants, sensors, Shared};
use appmgr_core::journal;
use appmgr_types::AppId;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

/// How often open resources are checked.
pub const TICK: Duration = Duration::from_millis(40);

/// What identifies a state of the plans directory (any entry added, replaced or removed
/// changes its mtime; a replaced directory its inode).
pub type PlansStamp = (u64, i64, i64, i64, i64);

/// The plans directory's [`PlansStamp`] now (`None`: it does not exist).
pub fn plans_stamp(g: &appmgr_core::Ctx) -> Option<PlansStamp> {
    let st = rustix::fs::stat(g.state_dir.join(appmgr_core::prepared::PLANS_DIR)).ok()?;
    Some((
        st.st_ino,
        st.st_mtime,
        st.st_mtime_nsec as i64,
        st.st_ctime,
        st.st_ctime_nsec as i64,
    ))
}

/// Runs forever: idle (no timer) while nothing is open.
pub async fn watcher(s: Arc<Shared>) {
    let mut stamp = plans_stamp(s.ctx());
    loop {
        let changed = s.changed.notified();
        let busy = !s
            .streams
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .list
            .is_empty()
            || !s
                .handouts
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .is_empty()
            || s.bt.lock().unwrap_or_else(|p| p.into_inner()).busy();
        if !busy {
            changed.await;
            // Plans changed while idle are what new calls were checked against.
            stamp = plans_stamp(s.ctx());
            continue;
        }
        tokio::time::sleep(TICK).await;
        reap_exited(&s);
        let now = plans_stamp(s.ctx());
        if now != stamp {
            stamp = now;
            recheck(&s);
        }
    }
}

fn reap_exited(s: &Arc<Shared>) {
    s.streams
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .end_exited(None);
    s.handouts
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .retain(|h| !crate::identity::exited(&h.pidfd));
    crate::bluetooth::reap_exited(s);
}

/// Checks every app holding a stream or a render node against its grant now.
pub fn recheck(s: &Arc<Shared>) {
    let mut apps: BTreeMap<AppId, Option<appmgr_types::Permissions>> = BTreeMap::new();
    {
        let st = s.streams.lock().unwrap_or_else(|p| p.into_inner());
        apps.extend(st.list.iter().map(|x| (x.app.clone(), None)));
    }
    apps.extend(
        s.bt.lock()
            .unwrap_or_else(|p| p.into_inner())
            .apps()
            .into_iter()
            .map(|a| (a, None)),
    );
    apps.extend(
        s.handouts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|h| (h.app.clone(), None)),
    );
    for (app, p) in apps.iter_mut() {
        *p = grants::of(s.ctx(), app).ok();
    }
    let granted = |app: &AppId| apps.get(app).cloned().flatten().unwrap_or_default();

    let mut st = s.streams.lock().unwrap_or_else(|p| p.into_inner());
    let revoked: Vec<(u64, String)> = st
        .list
        .iter()
        .filter_map(|x| {
            sensors::stream_refusal(&granted(&x.app), &x.channels, x.rate_hz).map(|w| (x.id, w))
        })
        .collect();
    for (id, why) in revoked {
        st.end(id, journal::NOTICE, &format!("revoked: {why}"));
    }
    drop(st);
    crate::bluetooth::recheck(s, &granted);

    let mut hs = s.handouts.lock().unwrap_or_else(|p| p.into_inner());
    let stop: Vec<AppId> = {
        let mut v: Vec<AppId> = hs
            .iter()
            .filter(|h| !grants::has_portal(&granted(&h.app), "gpu"))
            .map(|h| h.app.clone())
            .collect();
        v.sort();
        v.dedup();
        v
    };
    hs.retain(|h| !stop.contains(&h.app));
    drop(hs);
    for app in stop {
        let pids = appmgr_core::apps::running_pids(&app).unwrap_or_default();
        // Gone already counts as stopped: killing the sandbox's init takes the others.
        let mut killed = 0;
        for pid in &pids {
            if let Some(p) = rustix::process::Pid::from_raw(*pid) {
                match rustix::process::kill_process(p, rustix::process::Signal::KILL) {
                    Ok(()) | Err(rustix::io::Errno::SRCH) => killed += 1,
                    Err(_) => {}
                }
            }
        }
        journal::log(
            journal::NOTICE,
            Some(journal::Event::PortalRevoked),
            Some(app.as_str()),
            &format!(
                "gpu: the grant of {app} was revoked; an open render node cannot be taken back, \
                 so its {killed} of {} processes were stopped",
                pids.len()
            ),
        );
    }
}
