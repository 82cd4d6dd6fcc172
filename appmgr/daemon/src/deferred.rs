//! Installs deferred by inhibitors (docs/remotes.md "Inhibitors"). While an inhibitor
//! is in force, an install is downloaded (or read from the caller's descriptor) and
//! verified in full by `appmgr-ops` into `STATE/daemon/deferred/N.bundle`, its entry
//! written to `N.json`, and the caller told `Deferred` (exit 9), or, with `wait`, answered
//! once it ran. Once no inhibitor is left, the queue runs in order, each entry an ordinary
//! install from the kept file (verified again), followed by the service restart in its
//! health window; so neither the install nor the restart happens while inhibited, and
//! nothing is downloaded twice. Entries survive a restart of appmgrd or of the device.

use crate::error::Error;
use crate::journal;
use crate::manager::Installed;
use crate::Daemon;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Weak};
use std::time::Duration;
use tokio::sync::oneshot;

/// How often the queue looks at the inhibitors while entries wait.
const POLL: Duration = Duration::from_secs(1);
/// A queued install that fails for a passing reason (class `Failed`: a lock held by a
/// local CLI, I/O) is tried this many times, then dropped and reported.
const ATTEMPTS: u32 = 3;

pub use appmgr_core::inhibit::Queued as Entry;

type Answer = Result<Installed, Error>;

#[derive(Default)]
pub struct Queue {
    /// Woken when an entry is queued: with none queued, the queue sleeps without a timer.
    kick: tokio::sync::Notify,
    waiters: std::sync::Mutex<HashMap<String, oneshot::Sender<Answer>>>,
    attempts: std::sync::Mutex<HashMap<String, u32>>,
    seq: std::sync::atomic::AtomicU64,
}

pub fn dir(d: &Daemon) -> PathBuf {
    appmgr_core::inhibit::queue_dir(&d.config.state_dir)
}

fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The entries on disk, oldest first. An entry that cannot be read or has lost its
/// bundle is removed.
fn entries(dir: &Path) -> Vec<(String, Entry)> {
    let mut out = Vec::new();
    for (stem, e) in appmgr_core::inhibit::queued_in(dir) {
        match e {
            Some(e) => out.push((stem, e)),
            None => {
                journal::log(
                    journal::ERR,
                    None,
                    None,
                    &format!(
                        "{}/{stem}: a broken deferred install, dropped",
                        dir.display()
                    ),
                );
                remove(dir, &stem);
            }
        }
    }
    out
}

fn remove(dir: &Path, stem: &str) {
    let _ = std::fs::remove_file(dir.join(format!("{stem}.json")));
    let _ = std::fs::remove_file(dir.join(format!("{stem}.bundle")));
}

/// Removes spool files no entry names (appmgrd stopped while it was writing one).
pub fn clean(d: &Daemon) {
    let dir = dir(d);
    let Ok(rd) = std::fs::read_dir(&dir) else {
        return;
    };
    for e in rd.filter_map(|e| e.ok()) {
        let n = e.file_name().to_string_lossy().into_owned();
        if let Some(stem) = n.strip_suffix(".bundle") {
            if !dir.join(format!("{stem}.json")).exists() {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
}

/// What keeps installs back now (`None`: nothing), read off the event loop.
pub async fn holding_back(d: &Daemon) -> Option<String> {
    let g = d.ctx();
    tokio::task::spawn_blocking(move || appmgr_core::inhibit::holding_back(&g))
        .await
        .unwrap_or_else(|e| Some(format!("internal: {e}")))
}

impl Queue {
    /// Verifies `op`'s bundle into the queue (appmgr-ops) and writes its entry. Returns
    /// the entry's name, the message for the caller and, with `answer`, where the
    /// outcome of its install will arrive (registered before the entry exists, so the
    /// queue cannot run it unanswered).
    pub async fn defer(
        &self,
        d: &Daemon,
        op: appmgr_core::worker::Op,
        stdin: Option<std::os::fd::OwnedFd>,
        why: String,
        answer: bool,
    ) -> Result<(String, String, Option<oneshot::Receiver<Answer>>), Error> {
        use appmgr_core::worker::Op;
        let (source, name, allow_downgrade) = match op {
            Op::Install {
                name,
                allow_downgrade,
                ..
            } => (None, name, allow_downgrade),
            Op::InstallRemote {
                source,
                allow_downgrade,
            } => (Some(source.clone()), source, allow_downgrade),
            _ => return Err(Error::Failed("internal: only installs are deferred".into())),
        };
        let dir = dir(d);
        let made = std::fs::DirBuilder::new()
            .recursive(true)
            .create(&dir)
            .map_err(|e| Error::Failed(format!("{}: {e}", dir.display())));
        made?;
        let n = self.seq.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let ns = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let stem = format!("{ns:024}-{n:06}");
        let dest = dir.join(format!("{stem}.bundle"));
        let op = Op::Spool {
            source,
            name: name.clone(),
            dest: dest.clone(),
        };
        let done = crate::opsrun::run(&d.ctx(), op, stdin, None).await?;
        let j = &done.output.json;
        let s = |k: &str| j[k].as_str().unwrap_or_default().to_string();
        let entry = Entry {
            name,
            allow_downgrade,
            release: serde_json::from_value(j["release"].clone()).unwrap_or(None),
            id: s("id"),
            kind: s("kind"),
            version: s("version"),
            queued_at_unix: now_unix(),
            why: why.clone(),
        };
        let bytes = serde_json::to_vec_pretty(&entry)
            .map_err(|e| Error::Failed(format!("internal: {e}")))?;
        let rx = answer.then(|| {
            let (tx, rx) = oneshot::channel();
            if let Ok(mut w) = self.waiters.lock() {
                w.insert(stem.clone(), tx);
            }
            rx
        });
        let p = dir.join(format!("{stem}.json"));
        if let Err(e) = crate::write_atomic(&p, &bytes) {
            let _ = std::fs::remove_file(&dest);
            self.forget(&stem);
            return Err(Error::Failed(format!("{}: {e}", p.display())));
        }
        let dl = &j["download"];
        let fetched = match (dl["delta"].as_bool(), dl["fetched-bytes"].as_u64()) {
            (Some(true), Some(f)) => format!(
                " ({f} of {} bytes downloaded, {} files from the installed version)",
                dl["bundle-bytes"], dl["reused-files"]
            ),
            _ => String::new(),
        };
        let msg = format!(
            "{} {} {} deferred: {why}; it is verified and kept{fetched}, and installs when \
             no inhibitor is left",
            entry.kind, entry.id, entry.version
        );
        journal::log(journal::INFO, None, Some(&entry.id), &msg);
        self.kick.notify_one();
        Ok((stem, msg, rx))
    }

    /// Waits, at most until `deadline`, for queued entry `stem` to be installed (`rx`
    /// from [`Queue::defer`]). `None`: still queued (or appmgrd lost the answer).
    pub async fn wait(
        &self,
        stem: &str,
        rx: oneshot::Receiver<Answer>,
        deadline: tokio::time::Instant,
    ) -> Option<Answer> {
        let r = tokio::time::timeout_at(deadline, rx).await;
        self.forget(stem);
        r.ok()?.ok()
    }

    fn forget(&self, stem: &str) {
        if let Ok(mut w) = self.waiters.lock() {
            w.remove(stem);
        }
    }

    fn answer(&self, stem: &str, a: Answer) {
        let tx = self.waiters.lock().ok().and_then(|mut w| w.remove(stem));
        if let Some(tx) = tx {
            let _ = tx.send(a);
        }
    }
}

/// Runs the queue whenever no inhibitor is left, until the daemon ends. While entries
/// wait it looks every [`POLL`]; with none it waits to be woken (no timer on an idle
/// device).
pub async fn run(d: Weak<Daemon>) {
    loop {
        let Some(d) = d.upgrade() else { return };
        if process(&d).await {
            tokio::time::sleep(POLL).await;
        } else {
            d.queue.kick.notified().await;
        }
    }
}

/// Installs the queued entries, in order, while nothing inhibits. Returns whether
/// entries are left (inhibited, or one to try again).
async fn process(d: &Arc<Daemon>) -> bool {
    let dir = dir(d);
    let queued = {
        let dir = dir.clone();
        tokio::task::spawn_blocking(move || entries(&dir))
            .await
            .unwrap_or_default()
    };
    for (stem, e) in queued {
        // An inhibitor set meanwhile stops the queue before the next install.
        if holding_back(d).await.is_some() {
            return true;
        }
        let bundle = dir.join(format!("{stem}.bundle"));
        let f = match open_nofollow(&bundle) {
            Ok(f) => f,
            Err(x) => {
                remove(&dir, &stem);
                d.queue.answer(&stem, Err(Error::Failed(x)));
                continue;
            }
        };
        let op = appmgr_core::worker::Op::Install {
            name: e.name.clone(),
            allow_downgrade: e.allow_downgrade,
            release: e.release.clone(),
        };
        let r = crate::manager::install_and_follow(d, op, Some(f), None).await;
        match r {
            Ok(done) => {
                remove(&dir, &stem);
                if let Ok(mut a) = d.queue.attempts.lock() {
                    a.remove(&stem);
                }
                d.queue.answer(&stem, Ok(done));
            }
            Err(x) => {
                let tries = d
                    .queue
                    .attempts
                    .lock()
                    .map(|mut a| {
                        let n = a.entry(stem.clone()).or_insert(0);
                        *n += 1;
                        *n
                    })
                    .unwrap_or(ATTEMPTS);
                let passing = matches!(x, Error::Failed(_));
                if passing && tries < ATTEMPTS {
                    journal::log(
                        journal::WARNING,
                        None,
                        Some(&e.id),
                        &format!(
                            "deferred install of {} {} failed (attempt {tries} of {ATTEMPTS}): {}",
                            e.id,
                            e.version,
                            x.message()
                        ),
                    );
                    return true;
                }
                journal::log(
                    journal::ERR,
                    None,
                    Some(&e.id),
                    &format!(
                        "deferred install of {} {} dropped: {}",
                        e.id,
                        e.version,
                        x.message()
                    ),
                );
                remove(&dir, &stem);
                d.queue.answer(&stem, Err(x));
            }
        }
    }
    false
}

fn open_nofollow(p: &Path) -> Result<std::os::fd::OwnedFd, String> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(p)
        .map(std::os::fd::OwnedFd::from)
        .map_err(|e| format!("{}: {e}", p.display()))
}
