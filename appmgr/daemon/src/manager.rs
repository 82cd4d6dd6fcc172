//! The `org.appmgr.Manager1` interface. Every method runs the same command function the
//! CLI runs locally and replies `(text, json)`: the command's output for people and the
//! JSON document `appmgr --json` prints. Store work runs on the blocking pool, one
//! mutation at a time (the store's own lock also serializes against local CLIs).

use crate::access;
use crate::error::Error;
use crate::journal::{self, Event};
use crate::opsrun;
use crate::supervise::{Verdict, Watch};
use crate::Daemon;
use appmgr_core::{apps, records, Error as CoreError};
use appmgr_types::{AppId, ErrorClass};
use std::collections::HashMap;
use std::sync::Arc;
use zbus::message::Header;
use zbus::object_server::SignalEmitter;
use zbus::zvariant::{OwnedFd, OwnedValue};

pub struct Manager {
    pub(crate) d: Arc<Daemon>,
}

/// One install done by appmgr-ops, with what its health window will tell.
#[derive(Debug)]
pub struct Installed {
    id: AppId,
    output: appmgr_core::Output,
    watch: Watch,
    /// The remote of an update's install (empty otherwise).
    remote: String,
}

/// An install in appmgr-ops (serialized with the other mutations, the bus policy brought
/// up to date), its journal entry, and the service follow-up (a restart in a health
/// window): what an install does once nothing inhibits it.
pub(crate) async fn install_and_follow(
    d: &Daemon,
    op: appmgr_core::worker::Op,
    stdin: Option<std::os::fd::OwnedFd>,
    progress: Option<tokio::sync::mpsc::UnboundedSender<opsrun::Progress>>,
) -> Result<Installed, Error> {
    let done = mutate(d, op, stdin, progress).await?;
    let change = done.change()?.clone();
    let event = if change.action == appmgr_core::records::Action::Updated {
        Event::Updated
    } else {
        Event::Installed
    };
    journal::log(
        journal::INFO,
        Some(event),
        Some(change.id.as_str()),
        done.output.text.lines().next().unwrap_or(""),
    );
    let watch = d.after_install(&change).await;
    Ok(Installed {
        id: change.id.clone(),
        output: done.output,
        watch,
        remote: String::new(),
    })
}

/// How long `wait` waits for a deferred install to run, without `wait-timeout`.
const DEFERRED_WAIT_S: u32 = 3600;

type Reply = Result<(String, String), Error>;

fn reply(out: appmgr_core::Output) -> Reply {
    let json = serde_json::to_string(&out.json)
        .map_err(|e| Error::Failed(format!("cannot encode the reply: {e}")))?;
    Ok((out.text, json))
}

impl Manager {
    /// Refuses a mutating call from anyone but root or the operator group: nothing is
    /// read or written before this check.
    async fn authorize(
        &self,
        conn: &zbus::Connection,
        hdr: &Header<'_>,
        what: &str,
    ) -> Result<access::Caller, Error> {
        let c = access::caller(conn, hdr).await?;
        if c.may_mutate(self.d.operator_gid) {
            return Ok(c);
        }
        journal::log(
            journal::WARNING,
            Some(Event::Denied),
            None,
            &format!(
                "denied {what} to uid {} (pid {}): not root and not in the operator group",
                c.uid,
                c.pid.map(|p| p.to_string()).unwrap_or_else(|| "?".into())
            ),
        );
        Err(Error::AccessDenied(format!(
            "{what}: uid {} may not change apps (root or the operator group only)",
            c.uid
        )))
    }

    /// Runs `f` on the blocking pool.
    async fn blocking<T: Send + 'static>(
        f: impl FnOnce() -> Result<T, CoreError> + Send + 'static,
    ) -> Result<T, Error> {
        tokio::task::spawn_blocking(f)
            .await
            .map_err(|e| Error::Failed(format!("internal: {e}")))?
            .map_err(Error::from)
    }

    async fn mutate(
        &self,
        op: appmgr_core::worker::Op,
        stdin: Option<std::os::fd::OwnedFd>,
        progress: Option<tokio::sync::mpsc::UnboundedSender<opsrun::Progress>>,
    ) -> Result<opsrun::Finished, Error> {
        mutate(&self.d, op, stdin, progress).await
    }
}

/// A mutating store command in `appmgr-ops`, serialized with the others; then the bus
/// policy is brought up to date.
async fn mutate(
    d: &Daemon,
    op: appmgr_core::worker::Op,
    stdin: Option<std::os::fd::OwnedFd>,
    progress: Option<tokio::sync::mpsc::UnboundedSender<opsrun::Progress>>,
) -> Result<opsrun::Finished, Error> {
    let _guard = d.mutation.lock().await;
    let g = d.ctx();
    let out = opsrun::run(&g, op, stdin, progress).await;
    d.refresh_bus_policy().await;
    crate::mem::trim();
    out
}

/// `wait` (b) and `wait-timeout` (u, seconds) of the install methods and `Update`: reply
/// only once the health window the install opened has a verdict.
#[derive(Debug, Clone, Copy, Default)]
struct WaitOpt {
    wait: bool,
    timeout_s: Option<u32>,
}

/// The longest `wait-timeout` (two days: beyond the longest health-timeout, 86400 s).
const MAX_WAIT_S: u32 = 172_800;

impl WaitOpt {
    /// Takes `wait` or `wait-timeout` out of the options; `Ok(false)`: not one of them.
    fn take(&mut self, k: &str, v: &OwnedValue) -> Result<bool, Error> {
        match k {
            "wait" => {
                self.wait = bool::try_from(v)
                    .map_err(|_| Error::InvalidArgs("option wait: expected a boolean".into()))?
            }
            "wait-timeout" => {
                let t = u32::try_from(v).map_err(|_| {
                    Error::InvalidArgs("option wait-timeout: expected a u32 (seconds)".into())
                })?;
                if t == 0 || t > MAX_WAIT_S {
                    return Err(Error::InvalidArgs(format!(
                        "option wait-timeout: {t} is not within 1..={MAX_WAIT_S} seconds"
                    )));
                }
                self.timeout_s = Some(t)
            }
            _ => return Ok(false),
        }
        Ok(true)
    }

    fn check(self) -> Result<Self, Error> {
        if self.timeout_s.is_some() && !self.wait {
            return Err(Error::InvalidArgs(
                "option wait-timeout needs wait = true".into(),
            ));
        }
        Ok(self)
    }
}

/// The options of Install and InstallPath (`allow-downgrade` b, `name` s, `wait` b,
/// `wait-timeout` u) and of InstallRemote (the same but `name`, unless `with_name`);
/// anything else is refused.
fn install_options(
    options: &HashMap<String, OwnedValue>,
    with_name: bool,
) -> Result<(bool, Option<String>, WaitOpt), Error> {
    let mut allow_downgrade = false;
    let mut name = None;
    let mut wait = WaitOpt::default();
    for (k, v) in options {
        if wait.take(k, v)? {
            continue;
        }
        match k.as_str() {
            "allow-downgrade" => {
                allow_downgrade = bool::try_from(v).map_err(|_| {
                    Error::InvalidArgs("option allow-downgrade: expected a boolean".into())
                })?
            }
            "name" if with_name => {
                let n = String::try_from(v.try_clone().map_err(zbus::Error::from)?)
                    .map_err(|_| Error::InvalidArgs("option name: expected a string".into()))?;
                if appmgr_types::has_unsafe_chars(&n) || n.len() > 4096 {
                    return Err(Error::InvalidArgs(format!(
                        "option name: {}: control characters or too long",
                        appmgr_types::escape_for_display(&n)
                    )));
                }
                name = Some(n);
            }
            other => {
                return Err(Error::InvalidArgs(format!(
                    "unknown option {}",
                    appmgr_types::escape_for_display(other)
                )))
            }
        }
    }
    Ok((allow_downgrade, name, wait.check()?))
}

/// The verdict of one install's health window: a line for people and its JSON.
struct Judged {
    text: String,
    json: serde_json::Value,
    /// Rolled back, or no verdict: the error the reply becomes.
    failure: Option<Error>,
}

impl Manager {
    /// Install and InstallPath, after the caller was authorized: options, the install in
    /// appmgr-ops with progress signals, the journal entry, and the service follow-up.
    async fn install_fd(
        &self,
        caller: &access::Caller,
        emitter: SignalEmitter<'_>,
        bundle: std::os::fd::OwnedFd,
        options: HashMap<String, OwnedValue>,
    ) -> Result<(String, String), Error> {
        let (allow_downgrade, name, wait) = install_options(&options, true)?;
        let name = name.unwrap_or_else(|| String::from("bundle"));
        let op = appmgr_core::worker::Op::Install {
            name,
            allow_downgrade,
            release: None,
        };
        let done = self
            .install_op(caller, emitter, op, Some(bundle), wait)
            .await?;
        self.answer(vec![done], wait).await
    }

    /// The reply to one install: with `wait`, its health verdict is added (`health` in
    /// its JSON, a line in its text); a rollback makes the reply `RolledBack` (exit 8), no
    /// verdict `Failed`.
    async fn answer(&self, done: Vec<Installed>, wait: WaitOpt) -> Reply {
        let (out, failure) = self.judge_all(done, wait).await;
        if let Some(e) = failure {
            return Err(e);
        }
        let (_, out) = out
            .into_iter()
            .next()
            .ok_or_else(|| Error::Failed("internal: an install without output".into()))?;
        reply(out)
    }

    /// Adds the verdicts to the outputs (with `wait`) and returns the failures as one
    /// error: `RolledBack` when any install was rolled back, else `Failed`.
    async fn judge_all(
        &self,
        done: Vec<Installed>,
        wait: WaitOpt,
    ) -> (Vec<(String, appmgr_core::Output)>, Option<Error>) {
        let mut outs = Vec::new();
        let mut failures: Vec<Error> = Vec::new();
        for d in done {
            let mut out = d.output;
            if wait.wait {
                let j = self.judge(&d.id, d.watch, wait.timeout_s).await;
                out.text.push_str(&j.text);
                if let Some(o) = out.json.as_object_mut() {
                    o.insert("health".into(), j.json);
                }
                failures.extend(j.failure);
            }
            outs.push((d.remote, out));
        }
        // A rollback wins over the other failures: it is what the pipeline must know.
        let failure = match failures.len() {
            0 => None,
            1 => failures.pop(),
            _ => {
                let rolled = failures.iter().any(|e| matches!(e, Error::RolledBack(_)));
                let msg = failures
                    .iter()
                    .map(Error::message)
                    .collect::<Vec<_>>()
                    .join("; ");
                Some(if rolled {
                    Error::RolledBack(msg)
                } else {
                    Error::Failed(msg)
                })
            }
        };
        (outs, failure)
    }

    /// Waits for the verdict of the health window an install opened: at most
    /// `timeout_s`, by default the window's own timeout plus 60 s.
    async fn judge(&self, id: &AppId, watch: Watch, timeout_s: Option<u32>) -> Judged {
        let (to_version, window_s) = match watch {
            Watch::NoWindow(why) => {
                return Judged {
                    text: format!("{id}: no health window ({why})\n"),
                    json: serde_json::json!({"verdict": "none", "why": why}),
                    failure: None,
                }
            }
            Watch::StartFailed(why) => {
                return Judged {
                    text: String::new(),
                    json: serde_json::json!({"verdict": "not-started", "why": why}),
                    failure: Some(Error::Failed(format!("{id}: {why}"))),
                }
            }
            Watch::Window {
                to_version,
                timeout_s,
            } => (to_version, timeout_s),
        };
        let bound = timeout_s.unwrap_or(window_s.saturating_add(60));
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(bound.into());
        match self.d.supervisor.verdict(id, &to_version, deadline).await {
            Some(Verdict::Healthy(why)) => Judged {
                text: format!("{id} {to_version} is healthy: {why}\n"),
                json: serde_json::json!({"verdict": "healthy", "version": to_version, "why": why}),
                failure: None,
            },
            Some(Verdict::RolledBack { reason, restored }) => {
                let msg = format!(
                    "{id}: the update to {to_version} failed its health window and was rolled \
                     back: {reason}{}",
                    if restored {
                        ""
                    } else {
                        " (the previous version did not start again: see appmgr status)"
                    }
                );
                Judged {
                    text: format!("{msg}\n"),
                    json: serde_json::json!({"verdict": "rolled-back", "version": to_version,
                        "reason": reason, "restored": restored}),
                    failure: Some(Error::RolledBack(msg)),
                }
            }
            Some(Verdict::Interrupted(why)) => Judged {
                text: format!("{id} {to_version}: no verdict: {why}\n"),
                json: serde_json::json!({"verdict": "interrupted", "version": to_version, "why": why}),
                failure: Some(Error::Failed(format!(
                    "{id} {to_version}: no verdict: {why}"
                ))),
            },
            None => {
                let why = format!(
                    "its health window gave no verdict within {bound} s (it stays open: \
                     appmgr status {id})"
                );
                Judged {
                    text: format!("{id} {to_version}: {why}\n"),
                    json: serde_json::json!({"verdict": "timeout", "version": to_version, "why": why}),
                    failure: Some(Error::Failed(format!("{id} {to_version}: {why}"))),
                }
            }
        }
    }

    /// An install in appmgr-ops with progress signals, the journal entry, and the service
    /// follow-up. While an inhibitor is in force the bundle is verified into the queue
    /// instead: the reply is `Deferred` (exit 9), or with `wait` the install once it ran
    /// (at most `wait-timeout`, by default an hour).
    async fn install_op(
        &self,
        caller: &access::Caller,
        emitter: SignalEmitter<'_>,
        op: appmgr_core::worker::Op,
        bundle: Option<std::os::fd::OwnedFd>,
        wait: WaitOpt,
    ) -> Result<Installed, Error> {
        if let Some(why) = crate::deferred::holding_back(&self.d).await {
            let (stem, msg, rx) = self
                .d
                .queue
                .defer(&self.d, op, bundle, why, wait.wait)
                .await?;
            let Some(rx) = rx else {
                return Err(Error::Deferred(msg));
            };
            let bound = wait.timeout_s.unwrap_or(DEFERRED_WAIT_S);
            let deadline =
                tokio::time::Instant::now() + std::time::Duration::from_secs(bound.into());
            return match self.d.queue.wait(&stem, rx, deadline).await {
                Some(r) => r,
                None => Err(Error::Failed(format!(
                    "{msg}: still queued after {bound} s (wait-timeout)"
                ))),
            };
        }
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<opsrun::Progress>();
        let emitter = emitter.to_owned();
        let who = caller.name.clone();
        let forward = tokio::spawn(async move {
            // appmgr-ops reports at most one line per percent and phase.
            while let Some(p) = rx.recv().await {
                let _ = Manager::install_progress(&emitter, &who, &p.phase, p.bytes, p.total).await;
            }
            let _ = Manager::install_progress(&emitter, &who, "done", 1, 1).await;
        });
        let out = install_and_follow(&self.d, op, bundle, Some(tx)).await;
        let _ = forward.await;
        out
    }

    async fn fsck_report(&self) -> Result<appmgr_core::Output, Error> {
        let _guard = self.d.mutation.lock().await;
        let g = self.d.ctx();
        // The findings, clean or not: the caller decides what an unclean store means.
        opsrun::run(&g, appmgr_core::worker::Op::Fsck, None, None)
            .await
            .map(|f| f.output)
    }
}

#[zbus::interface(name = "org.appmgr.Manager1")]
impl Manager {
    /// Installs or updates from the signed bundle open on `bundle` (the caller opens it
    /// with its own rights). Options: `allow-downgrade` (b), `name` (s: the file name for
    /// messages). Emits `InstallProgress` while it works.
    async fn install(
        &self,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &zbus::Connection,
        #[zbus(signal_emitter)] emitter: SignalEmitter<'_>,
        bundle: OwnedFd,
        options: HashMap<String, OwnedValue>,
    ) -> Result<(String, String), Error> {
        let caller = self.authorize(conn, &hdr, "Install").await?;
        self.install_fd(
            &caller,
            emitter,
            std::os::fd::OwnedFd::from(bundle),
            options,
        )
        .await
    }

    /// Installs or updates from the bundle at `path`, opened with the caller's own rights
    /// (for FOTA agents that download to a directory). `path` must be absolute and name a
    /// regular file, not a symbolic link; options as for `Install`.
    async fn install_path(
        &self,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &zbus::Connection,
        #[zbus(signal_emitter)] emitter: SignalEmitter<'_>,
        path: String,
        options: HashMap<String, OwnedValue>,
    ) -> Result<(String, String), Error> {
        // The caller is checked before anything is opened on its behalf.
        let caller = self.authorize(conn, &hdr, "InstallPath").await?;
        let p = std::path::Path::new(&path);
        if !p.is_absolute() || appmgr_types::has_unsafe_chars(&path) {
            return Err(Error::InvalidArgs(format!(
                "{}: the bundle path must be absolute and printable",
                appmgr_types::escape_for_display(&path)
            )));
        }
        // With the caller's uid and groups, off the event loop, bounded: a root-only file
        // is AccessDenied, a FIFO or device is refused at once.
        let f = crate::callerfile::open(&caller, p).await?;
        let mut options = options;
        options.insert(
            "name".into(),
            OwnedValue::try_from(zbus::zvariant::Value::from(path.as_str()))
                .map_err(zbus::Error::from)?,
        );
        self.install_fd(&caller, emitter, f, options).await
    }

    /// Installs or updates from a remote source: `NAME:ID[@VERSION]` of a remote configured
    /// in the config dir, or an http:// URL; the worker downloads it as a stream into the
    /// store. Options: `allow-downgrade` (b). Emits `InstallProgress` while it works.
    async fn install_remote(
        &self,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &zbus::Connection,
        #[zbus(signal_emitter)] emitter: SignalEmitter<'_>,
        source: String,
        options: HashMap<String, OwnedValue>,
    ) -> Result<(String, String), Error> {
        let caller = self.authorize(conn, &hdr, "InstallRemote").await?;
        if appmgr_types::has_unsafe_chars(&source) || source.is_empty() || source.len() > 4096 {
            return Err(Error::InvalidArgs(format!(
                "{}: the source must be printable, 1 to 4096 bytes",
                appmgr_types::escape_for_display(&source)
            )));
        }
        let (allow_downgrade, _, wait) = install_options(&options, false)?;
        let op = appmgr_core::worker::Op::InstallRemote {
            source,
            allow_downgrade,
        };
        let done = self.install_op(&caller, emitter, op, None, wait).await?;
        self.answer(vec![done], wait).await
    }

    /// Updates installed apps and runtimes (all, or those of `ids`) to the newest version a
    /// configured remote offers with a trusted signature, runtimes first: one
    /// `InstallRemote` each, with its progress signals, journal entry and service
    /// follow-up. No options yet; unknown ones are refused.
    async fn update(
        &self,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &zbus::Connection,
        #[zbus(signal_emitter)] emitter: SignalEmitter<'_>,
        ids: Vec<String>,
        options: HashMap<String, OwnedValue>,
    ) -> Result<(String, String), Error> {
        let caller = self.authorize(conn, &hdr, "Update").await?;
        let mut wait = WaitOpt::default();
        for (k, v) in &options {
            if !wait.take(k, v)? {
                return Err(Error::InvalidArgs(format!(
                    "unknown option {}",
                    appmgr_types::escape_for_display(k)
                )));
            }
        }
        let wait = wait.check()?;
        if let Some(bad) = ids
            .iter()
            .find(|i| appmgr_types::has_unsafe_chars(i) || i.len() > 255)
        {
            return Err(Error::InvalidArgs(format!(
                "{}: not an ID",
                appmgr_types::escape_for_display(bad)
            )));
        }
        // The plan is resolved by the worker (it holds the TUF client); each install is
        // then one InstallRemote of exactly the version planned.
        let g = self.d.ctx();
        let planned = opsrun::run(&g, appmgr_core::worker::Op::UpdatePlan { ids }, None, None)
            .await?
            .output
            .json;
        let bad = || Error::Failed("appmgr-ops: a malformed update plan".into());
        let rest = appmgr_core::Output::new(
            planned["rest"]["text"].as_str().ok_or_else(bad)?,
            planned["rest"]["json"].clone(),
        );
        let mut done = Vec::new();
        let mut deferred = Vec::new();
        for p in planned["plan"].as_array().ok_or_else(bad)? {
            let (Some(remote), Some(id), Some(to)) =
                (p["remote"].as_str(), p["id"].as_str(), p["to"].as_str())
            else {
                return Err(bad());
            };
            let op = appmgr_core::worker::Op::InstallRemote {
                source: format!("{remote}:{id}@{to}"),
                allow_downgrade: false,
            };
            match self
                .install_op(&caller, emitter.clone(), op, None, wait)
                .await
            {
                Ok(mut one) => {
                    one.remote = remote.to_string();
                    done.push(one);
                }
                // Each planned install is queued; the reply names them all.
                Err(Error::Deferred(m)) => deferred.push(m),
                Err(e) => return Err(e),
            }
        }
        if !deferred.is_empty() {
            return Err(Error::Deferred(deferred.join("; ")));
        }
        // Every window runs at once; the verdicts are collected after the last install.
        let (done, failure) = self.judge_all(done, wait).await;
        if let Some(e) = failure {
            return Err(e);
        }
        reply(appmgr_core::remotes::compose_update(done, rest))
    }

    /// Removes an app or runtime (a running service is stopped first). No options yet;
    /// unknown ones are refused.
    async fn remove(
        &self,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &zbus::Connection,
        id: String,
        options: HashMap<String, OwnedValue>,
    ) -> Result<(String, String), Error> {
        self.authorize(conn, &hdr, "Remove").await?;
        no_options(&options)?;
        self.d.supervisor.stop_if_running(&id).await;
        let done = self
            .mutate(
                appmgr_core::worker::Op::Remove { id: id.clone() },
                None,
                None,
            )
            .await?;
        let id = done.change()?.id.to_string();
        self.d.supervisor.forget(&id).await;
        journal::log(
            journal::INFO,
            Some(Event::Removed),
            Some(&id),
            done.output.text.trim_end(),
        );
        reply(done.output)
    }

    /// Switches an app or runtime back to its previous deployment (a running service is
    /// restarted on it).
    async fn rollback(
        &self,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &zbus::Connection,
        id: String,
        options: HashMap<String, OwnedValue>,
    ) -> Result<(String, String), Error> {
        self.authorize(conn, &hdr, "Rollback").await?;
        no_options(&options)?;
        let done = self
            .mutate(
                appmgr_core::worker::Op::Rollback { id: id.clone() },
                None,
                None,
            )
            .await?;
        let id = done.change()?.id.to_string();
        journal::log(
            journal::INFO,
            Some(Event::RolledBack),
            Some(&id),
            done.output.text.trim_end(),
        );
        self.d.supervisor.restart_if_running(&id).await;
        reply(done.output)
    }

    /// Installed apps and runtimes (lock-free: the records are read as they are).
    async fn list(&self) -> Result<(String, String), Error> {
        // Served from memory while the store's change sequence stands still (one small
        // read per call); rebuilt from the records after any change, by anyone.
        let view = appmgr_state::View::new(&self.d.config.state_dir);
        let before = view.generation();
        if let Some(g) = before {
            if let Ok(c) = self.d.list_cache.lock() {
                if let Some((cg, r)) = c.as_ref() {
                    if *cg == g {
                        return Ok(r.clone());
                    }
                }
            }
        }
        let g = self.d.ctx();
        let r = reply(Self::blocking(move || records::list(&g)).await?)?;
        if let Some(g) = before.filter(|g| view.generation() == Some(*g)) {
            if let Ok(mut c) = self.d.list_cache.lock() {
                *c = Some((g, r.clone()));
            }
        }
        Ok(r)
    }

    /// The configured remotes (`remote list`): their files are read as they are.
    async fn remote_list(&self) -> Result<(String, String), Error> {
        let g = self.d.ctx();
        reply(Self::blocking(move || appmgr_core::remotes::list(&g)).await?)
    }

    /// What remote `name` offers (`remote ls`), each listing's signed manifest checked;
    /// no payload is downloaded. Root and operators only: it goes to the network, and a
    /// TUF remote's verified metadata is kept.
    async fn remote_ls(
        &self,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &zbus::Connection,
        name: String,
    ) -> Result<(String, String), Error> {
        self.authorize(conn, &hdr, "RemoteLs").await?;
        // Refused here, before a worker is started for it.
        appmgr_core::remotes::check_name(&name)?;
        let g = self.d.ctx();
        let op = appmgr_core::worker::Op::RemoteLs { name };
        reply(opsrun::run(&g, op, None, None).await?.output)
    }

    /// One installed app or runtime.
    async fn info(&self, id: String) -> Result<(String, String), Error> {
        let g = self.d.ctx();
        reply(Self::blocking(move || records::info(&g, &id)).await?)
    }

    /// The effective grant and limits of an app with the rule behind each.
    async fn permissions(&self, id: String) -> Result<(String, String), Error> {
        let g = self.d.ctx();
        reply(Self::blocking(move || apps::permissions(&g, &id)).await?)
    }

    /// Running apps with their cgroup figures.
    async fn ps(&self) -> Result<(String, String), Error> {
        let g = self.d.ctx();
        reply(Self::blocking(move || apps::ps(&g)).await?)
    }

    /// Verifies the store; problems are in the reply (`clean` false), not an error.
    async fn fsck(
        &self,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &zbus::Connection,
    ) -> Result<(String, String), Error> {
        // fsck marks corrupt deployments: a mutation.
        self.authorize(conn, &hdr, "Fsck").await?;
        // Problems come back as output with `clean: false` (exit 3 from appmgr-ops): the
        // report, not an error, is the answer.
        reply(self.fsck_report().await?)
    }

    /// Kills every process of a running app (a supervised service is not restarted).
    async fn kill(
        &self,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &zbus::Connection,
        id: String,
    ) -> Result<(String, String), Error> {
        self.authorize(conn, &hdr, "Kill").await?;
        self.d.supervisor.mark_stopping(&id).await;
        let g = self.d.ctx();
        reply(Self::blocking(move || apps::kill(&g, &id)).await?)
    }

    /// Starts an app as a supervised service.
    async fn start(
        &self,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &zbus::Connection,
        id: String,
    ) -> Result<(String, String), Error> {
        self.authorize(conn, &hdr, "Start").await?;
        reply(self.d.supervisor.start(&id).await?)
    }

    /// Stops a supervised service: SIGTERM, SIGKILL after its stop timeout.
    async fn stop(
        &self,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &zbus::Connection,
        id: String,
    ) -> Result<(String, String), Error> {
        self.authorize(conn, &hdr, "Stop").await?;
        reply(self.d.supervisor.stop(&id).await?)
    }

    /// Supervised services (`id` empty: all): state, pid, restarts, readiness, health
    /// window, last automatic rollback.
    async fn status(&self, id: String) -> Result<(String, String), Error> {
        reply(self.d.supervisor.status(&id).await?)
    }

    /// Progress of an install started by `caller` (a unique bus name): `phase` is
    /// `verifying`, `importing`, `committing` or `done`; `bytes` of `total` file content.
    #[zbus(signal)]
    async fn install_progress(
        emitter: &SignalEmitter<'_>,
        caller: &str,
        phase: &str,
        bytes: u64,
        total: u64,
    ) -> zbus::Result<()>;

    /// A service changed state (`starting`, `running`, `ready`, `backoff`, `stopping`,
    /// `stopped`, `failed`).
    #[zbus(signal)]
    pub async fn service_state_changed(
        emitter: &SignalEmitter<'_>,
        id: &str,
        state: &str,
    ) -> zbus::Result<()>;

    /// The interface version (1 for `org.appmgr.Manager1`).
    #[zbus(property)]
    async fn version(&self) -> u32 {
        1
    }
}

fn no_options(o: &HashMap<String, OwnedValue>) -> Result<(), Error> {
    match o.keys().next() {
        None => Ok(()),
        Some(k) => Err(Error::of(
            ErrorClass::Usage,
            format!("unknown option {}", appmgr_types::escape_for_display(k)),
        )),
    }
}
