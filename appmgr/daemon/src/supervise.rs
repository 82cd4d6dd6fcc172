//! Supervision of service apps. appmgrd launches a service through the single-threaded
//! launcher (never forking the tokio process into a sandbox), tracks the launcher with a
//! pidfd, reaps it, restarts it with exponential backoff, and runs the health window
//! after an update: N crashes, or no `READY=1` within T seconds, roll the app back to
//! the previous version, recorded in `STATE/daemon/health/ID.json`.
//!
//! The decisions (restart or not, when, roll back or not) are made by the pure state
//! machine in [`crate::restart`]; this module feeds it events with the time and carries
//! out the actions it returns.
//!
//! No process stays beside the app for supervision: the daemon itself waits on the
//! pidfd. The launcher (and its tiny init as pid 1 of the sandbox) are the only
//! per-app processes, as with `appmgr run`.

use crate::error::Error;
use crate::journal::{self, Event};
use crate::restart::{self, Action, Exit, Machine};
pub use crate::restart::{Health, State};
use crate::Daemon;
use appmgr_bundle::ReadyProtocol;
use appmgr_core::{apps, Error as CoreError, Output};
use appmgr_types::{AppId, ErrorClass};
use serde::Serialize;
use serde_json::json;
use std::collections::BTreeMap;
use std::os::fd::OwnedFd;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::Mutex;

/// How a service is run (`appmgr-core`'s one definition, defaults included).
pub use appmgr_core::service::Settings;

/// The restart and health rules of a service's settings.
trait RulesOf {
    fn rules(&self) -> restart::Rules;
}

impl RulesOf for Settings {
    /// What the restart and health decisions need of the settings.
    fn rules(&self) -> restart::Rules {
        restart::Rules {
            restart: self.restart,
            restart_delay_ms: self.restart_delay_ms,
            restart_delay_max_ms: self.restart_delay_max_ms,
            needs_ready: self.ready == ReadyProtocol::Notify,
            stop_timeout_s: self.stop_timeout_s,
        }
    }
}

/// What appmgrd recorded when it rolled an app back by itself.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct RollbackRecord {
    pub id: String,
    pub from_version: String,
    pub to_version: String,
    pub reason: String,
    pub at_unix: u64,
}

#[derive(Debug)]
struct Service {
    id: AppId,
    settings: Settings,
    version: String,
    /// Set while a run's process exists (the machine's state says the same).
    pid: Option<u32>,
    pidfd: Option<Arc<OwnedFd>>,
    status_text: Option<String>,
    /// State, generation (a stale exit or timer belongs to an older launch), backoff,
    /// restarts, last exit, health window: every decision is the machine's.
    machine: Machine,
}

impl Service {
    fn state(&self) -> State {
        self.machine.state()
    }
}

pub struct Supervisor {
    daemon: Weak<Daemon>,
    services: Mutex<BTreeMap<String, Service>>,
    /// How the last health window of each app ended (for `install --wait`); cleared when
    /// an update opens a new one.
    outcomes: std::sync::Mutex<BTreeMap<String, Outcome>>,
    /// Bumped whenever a service's state or an outcome changes: waiters look again.
    changed: tokio::sync::watch::Sender<u64>,
    /// Exits, restart timers and health deadlines arrive here and are handled by
    /// [`Supervisor::run`] (one task each), so a launch never awaits its own successor.
    tx: tokio::sync::mpsc::UnboundedSender<Msg>,
    rx: std::sync::Mutex<Option<tokio::sync::mpsc::UnboundedReceiver<Msg>>>,
}

/// How an update's health window ended, as `install --wait` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// READY=1 came, or the window's time passed with fewer crashes than allowed.
    Healthy(String),
    /// The window failed and appmgrd rolled the app back (`restored`: the rollback
    /// itself succeeded and the previous version was started).
    RolledBack { reason: String, restored: bool },
    /// The window did not close: the service was stopped or removed, or another update
    /// replaced the window.
    Interrupted(String),
}

#[derive(Debug, Clone)]
struct Outcome {
    to_version: String,
    /// `None` while the rollback the window decided is under way.
    verdict: Option<Verdict>,
}

/// What an install left to wait for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Watch {
    /// No health window opened, and why (not a service, a first install, …).
    NoWindow(String),
    /// The service could not be started on the new version.
    StartFailed(String),
    /// A window for `to_version` is open; it closes within `timeout_s` (plus crashes).
    Window { to_version: String, timeout_s: u32 },
}

enum Msg {
    Exited {
        app: AppId,
        generation: u64,
        status: Option<std::process::ExitStatus>,
        events: Vec<String>,
    },
    Restart {
        app: AppId,
        generation: u64,
    },
    HealthDeadline {
        app: AppId,
        generation: u64,
    },
}

fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// What a launch produced.
struct Launched {
    /// The sandbox's init, our child (the launcher is gone).
    pid: u32,
    pidfd: OwnedFd,
    cgroup: appmgr_cgroup::Cgroup,
    counters: Vec<(PathBuf, &'static str, &'static str)>,
    /// The counters' values before the launch (a reused cgroup keeps old counts).
    baseline: Vec<u64>,
    /// The app's network, removed after init ended (the launcher is gone).
    net: Option<appmgr_sandbox::net::NetPlan>,
    version: String,
    settings: Settings,
}

impl Supervisor {
    pub fn new(daemon: Weak<Daemon>) -> Supervisor {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        Supervisor {
            daemon,
            services: Mutex::new(BTreeMap::new()),
            outcomes: std::sync::Mutex::new(BTreeMap::new()),
            changed: tokio::sync::watch::Sender::new(0),
            tx,
            rx: std::sync::Mutex::new(Some(rx)),
        }
    }

    /// Handles supervision events until the daemon ends.
    pub async fn run(self: Arc<Self>) {
        let rx = self.rx.lock().ok().and_then(|mut r| r.take());
        let Some(mut rx) = rx else { return };
        while let Some(m) = rx.recv().await {
            let me = self.clone();
            tokio::spawn(async move {
                match m {
                    Msg::Exited {
                        app,
                        generation,
                        status,
                        events,
                    } => me.exited(&app, generation, status, events).await,
                    Msg::Restart { app, generation } => {
                        me.restart_after_backoff(&app, generation).await
                    }
                    Msg::HealthDeadline { app, generation } => {
                        me.health_deadline(&app, generation).await
                    }
                }
            });
        }
    }

    async fn restart_after_backoff(self: &Arc<Self>, app: &AppId, generation: u64) {
        let rest = {
            let mut map = self.services.lock().await;
            let Some(s) = map.get_mut(app.as_str()) else {
                return;
            };
            let actions = s
                .machine
                .handle(restart::Event::RestartDue { generation }, Instant::now());
            self.perform(s, actions).await
        };
        self.follow_up(app, rest).await;
    }

    /// Carries out the actions that need no waiting, under the services lock: state
    /// signals, journal entries, timers. Returns the rest (launch, rollback, terminate)
    /// for the caller to carry out once the lock is released.
    async fn perform(&self, s: &Service, actions: Vec<Action>) -> Vec<Action> {
        let app = &s.id;
        let mut rest = Vec::new();
        // Waiters for a verdict look again after every decision.
        self.changed.send_modify(|n| *n = n.wrapping_add(1));
        for a in actions {
            match a {
                Action::Announce(state) => {
                    if let Some(d) = self.daemon.upgrade() {
                        d.emit_service_state(app.as_str(), state.name()).await;
                    }
                }
                Action::Ended { desc, success, ran } => journal::log(
                    if success {
                        journal::INFO
                    } else {
                        journal::WARNING
                    },
                    Some(Event::ServiceExited),
                    Some(app.as_str()),
                    &format!(
                        "{app} {} {desc} after {:.1} s",
                        s.version,
                        ran.as_secs_f64()
                    ),
                ),
                Action::Accepted {
                    from_version,
                    to_version,
                    why,
                } => {
                    self.record_outcome(
                        app,
                        &to_version,
                        Some(Verdict::Healthy(match why {
                            restart::Passed::Ready => "READY=1".into(),
                            restart::Passed::Window => {
                                "its health window passed without too many crashes".into()
                            }
                        })),
                    );
                    journal::log(
                    journal::INFO,
                    None,
                    Some(app.as_str()),
                    &match why {
                        restart::Passed::Ready => format!(
                            "{app} {to_version} reported ready: update from {from_version} accepted"
                        ),
                        restart::Passed::Window => format!(
                            "{app} {to_version} passed its health window: update from {from_version} accepted"
                        ),
                    },
                    )
                }
                Action::RestartAt { at, generation } => {
                    let tx = self.tx.clone();
                    let app = app.clone();
                    tokio::spawn(async move {
                        tokio::time::sleep_until(at.into()).await;
                        let _ = tx.send(Msg::Restart { app, generation });
                    });
                }
                Action::HealthDeadlineAt { at, generation } => {
                    let tx = self.tx.clone();
                    let app = app.clone();
                    tokio::spawn(async move {
                        tokio::time::sleep_until(at.into()).await;
                        let _ = tx.send(Msg::HealthDeadline { app, generation });
                    });
                }
                Action::RollBack { ref to_version, .. } => {
                    // Decided: the verdict follows once the rollback is done.
                    self.record_outcome(app, to_version, None);
                    rest.push(a)
                }
                a @ (Action::Launch | Action::Terminate { .. }) => rest.push(a),
            }
        }
        rest
    }

    /// Carries out what [`Supervisor::perform`] left, without the services lock.
    async fn follow_up(self: &Arc<Self>, app: &AppId, rest: Vec<Action>) {
        for a in rest {
            match a {
                Action::Launch => {
                    if let Err(e) = self.launch_as(app, None, true).await {
                        let mut map = self.services.lock().await;
                        if let Some(s) = map.get_mut(app.as_str()) {
                            let reason = e.message();
                            let actions = s
                                .machine
                                .handle(restart::Event::RestartFailed { reason }, Instant::now());
                            let more = self.perform(s, actions).await;
                            debug_assert!(more.is_empty());
                        }
                    }
                }
                Action::RollBack {
                    from_version,
                    to_version,
                    reason,
                } => {
                    self.health_rollback(app, from_version, to_version, reason)
                        .await
                }
                // Only a stop request terminates, and stop_and_wait carries that out.
                _ => {}
            }
        }
    }

    fn d(&self) -> Arc<Daemon> {
        self.daemon
            .upgrade()
            .expect("the daemon outlives its supervisor")
    }

    /// The service settings of an installed app, `None` if it is not a service.
    pub fn settings_of(g: &appmgr_core::Ctx, id: &str) -> Result<Option<Settings>, CoreError> {
        // The kept launch plan (current: its inputs are unchanged) has them; without
        // one the grant is evaluated.
        if let Some(p) = appmgr_types::AppId::new(id)
            .ok()
            .and_then(|a| appmgr_core::prepared::load(g, &a))
        {
            return Ok(p.settings);
        }
        let ctx = apps::LaunchCtx::load(g)?;
        let a = ctx.app_grant(id)?;
        Ok(settings_from(&a))
    }

    /// Starts every installed app whose service settings say autostart.
    pub async fn start_autostart(self: &Arc<Self>) {
        let g = self.d().ctx();
        let list = tokio::task::spawn_blocking(move || -> Vec<String> {
            let Ok(ctx) = apps::LaunchCtx::load(&g) else {
                return Vec::new();
            };
            let Ok(all) = ctx.view.list_installed() else {
                return Vec::new();
            };
            all.into_iter()
                .filter(|i| i.ref_name.kind == appmgr_types::Kind::App)
                .filter_map(|i| {
                    let id = i.ref_name.id.to_string();
                    let a = ctx.app_grant(&id).ok()?;
                    settings_from(&a).filter(|s| s.autostart).map(|_| id)
                })
                .collect()
        })
        .await
        .unwrap_or_default();
        for id in list {
            // An instance left running by an appmgrd that died (SIGKILL, OOM) is not ours
            // to supervise: it is stopped, and the service starts afresh.
            let sid = id.clone();
            let stale = tokio::task::spawn_blocking(move || stop_leftover(&sid))
                .await
                .unwrap_or(0);
            if stale > 0 {
                journal::log(
                    journal::WARNING,
                    None,
                    Some(&id),
                    &format!("stopped {stale} leftover process(es) of a previous appmgrd"),
                );
            }
            if let Err(e) = self.start(&id).await {
                journal::log(
                    journal::ERR,
                    None,
                    Some(&id),
                    &format!("autostart failed: {}", e.message()),
                );
            }
        }
        // Networks no sandbox holds any more (an appmgrd or a launcher that was killed, the
        // leftovers stopped above) go now; a live one is never touched.
        let removed = tokio::task::spawn_blocking(appmgr_sandbox::net::remove_stale).await;
        match removed {
            Ok(Ok(names)) if !names.is_empty() => journal::log(
                journal::WARNING,
                None,
                None,
                &format!("removed stale app networks: {}", names.join(", ")),
            ),
            Ok(Err(e)) => journal::log(
                journal::WARNING,
                None,
                None,
                &format!("stale app networks: {e}"),
            ),
            _ => {}
        }
    }

    /// `Start`: launches the app under supervision.
    pub async fn start(self: &Arc<Self>, id: &str) -> Result<Output, Error> {
        let app = AppId::new(id).map_err(|e| Error::of(ErrorClass::Usage, e.to_string()))?;
        {
            let map = self.services.lock().await;
            if let Some(s) = map.get(app.as_str()) {
                if s.pid.is_some() || s.state() == State::Backoff {
                    return Err(Error::of(
                        ErrorClass::Conflict,
                        format!(
                            "{app}: already running under appmgrd (state {})",
                            s.state().name()
                        ),
                    ));
                }
            }
        }
        self.launch(&app, None).await?;
        self.status(app.as_str()).await
    }

    /// Launches (or relaunches) `app`; with `health`, the new run opens a health window.
    async fn launch(self: &Arc<Self>, app: &AppId, health: Option<Health>) -> Result<(), Error> {
        self.launch_as(app, health, false).await
    }

    /// [`Supervisor::launch`]; `restart`: for the machine's [`Action::Launch`], so a stop
    /// that came while the launch was under way ends the new run at once.
    async fn launch_as(
        self: &Arc<Self>,
        app: &AppId,
        health: Option<Health>,
        restart: bool,
    ) -> Result<(), Error> {
        let d = self.d();
        let g = d.ctx();
        let id = app.to_string();
        let bus_socket = d.config.system_bus_socket.clone();
        let notify_dir = d.daemon_dir().join("notify");
        let logs = (d.daemon_dir().join("logs"), d.service_log_max);
        let launched = tokio::task::spawn_blocking(move || {
            launch_blocking(&g, &id, bus_socket, &notify_dir, &logs)
        })
        .await
        .map_err(|e| Error::Failed(format!("internal: {e}")))?;
        let (launched, notify) = launched.map_err(Error::from)?;
        let pid = launched.pid;
        let pidfd = Arc::new(launched.pidfd);
        let generation;
        let stop_now;
        {
            let mut map = self.services.lock().await;
            let s = map.entry(app.to_string()).or_insert_with(|| Service {
                id: app.clone(),
                settings: launched.settings.clone(),
                version: launched.version.clone(),
                pid: None,
                pidfd: None,
                status_text: None,
                machine: Machine::new(),
            });
            s.settings = launched.settings.clone();
            s.version = launched.version.clone();
            s.pid = Some(pid);
            s.pidfd = Some(pidfd.clone());
            s.status_text = None;
            let actions = s.machine.handle(
                restart::Event::Launched {
                    rules: s.settings.rules(),
                    window: health,
                    restart,
                },
                Instant::now(),
            );
            generation = s.machine.generation();
            // A state signal and the health deadline, or (stopped meanwhile) Terminate.
            stop_now = !self.perform(s, actions).await.is_empty();
            journal::log(
                journal::INFO,
                Some(Event::ServiceStarted),
                Some(app.as_str()),
                &format!("{app} {} started (launcher pid {pid})", s.version),
            );
        }
        // Readiness messages.
        if let Some(sock) = notify {
            let me = self.clone();
            let app = app.clone();
            tokio::spawn(async move { me.read_notify(app, sock, generation).await });
        }
        // Wait for the exit on the pidfd, then reap.
        let tx = self.tx.clone();
        let requester = app;
        let app = app.clone();
        let Launched {
            cgroup,
            counters,
            baseline,
            net,
            ..
        } = launched;
        let reap_fd = pidfd.clone();
        let names = net
            .as_ref()
            .filter(|n| !n.names.is_empty())
            .map(|n| tokio::spawn(keep_names(n.clone(), app.to_string())));
        tokio::spawn(async move {
            // `with_interest` is deprecated only because it cannot prove that the fd
            // stays open; PidfdRef owns it (an Arc<OwnedFd>) for the AsyncFd's lifetime.
            #[allow(deprecated)]
            let afd = tokio::io::unix::AsyncFd::with_interest(
                PidfdRef(pidfd),
                tokio::io::Interest::READABLE,
            );
            if let Ok(afd) = afd {
                let _ = afd.readable().await;
            }
            if let Some(h) = names {
                h.abort();
            }
            let status = tokio::task::spawn_blocking(move || {
                let st = reap(&reap_fd);
                // Limit events, then the cgroup goes (init and the app have ended).
                let events = read_events(&counters, &baseline);
                remove_cgroup(&cgroup);
                if let Some(n) = &net {
                    if let Err(e) = appmgr_sandbox::net::teardown(n) {
                        journal::log(
                            journal::WARNING,
                            None,
                            None,
                            &format!("{}: removing its network: {e}", n.name),
                        );
                    }
                }
                (st, events)
            })
            .await;
            if let Ok((status, events)) = status {
                let _ = tx.send(Msg::Exited {
                    app,
                    generation,
                    status,
                    events,
                });
            }
        });
        if stop_now {
            self.stop_and_wait(requester).await;
        }
        Ok(())
    }

    async fn read_notify(
        self: Arc<Self>,
        app: AppId,
        sock: std::os::unix::net::UnixDatagram,
        generation: u64,
    ) {
        let Ok(sock) = sock
            .set_nonblocking(true)
            .and_then(|_| tokio::net::UnixDatagram::from_std(sock))
        else {
            return;
        };
        let mut buf = vec![0u8; 4096];
        loop {
            let Ok(n) = sock.recv(&mut buf).await else {
                return;
            };
            let text = String::from_utf8_lossy(&buf[..n]).to_string();
            let mut map = self.services.lock().await;
            let Some(s) = map.get_mut(app.as_str()) else {
                return;
            };
            if s.machine.generation() != generation {
                return;
            }
            for line in text.lines() {
                if line == "READY=1" {
                    let actions = s
                        .machine
                        .handle(restart::Event::Ready { generation }, Instant::now());
                    let more = self.perform(s, actions).await;
                    debug_assert!(more.is_empty());
                } else if let Some(t) = line.strip_prefix("STATUS=") {
                    s.status_text = Some(appmgr_types::escape_for_display(
                        &t.chars().take(200).collect::<String>(),
                    ));
                }
            }
        }
    }

    /// The health deadline of launch `generation` passed.
    async fn health_deadline(self: &Arc<Self>, app: &AppId, generation: u64) {
        let rest = {
            let mut map = self.services.lock().await;
            let Some(s) = map.get_mut(app.as_str()) else {
                return;
            };
            let actions = s.machine.handle(
                restart::Event::HealthDeadline { generation },
                Instant::now(),
            );
            self.perform(s, actions).await
        };
        self.follow_up(app, rest).await;
    }

    async fn exited(
        self: &Arc<Self>,
        app: &AppId,
        generation: u64,
        status: Option<std::process::ExitStatus>,
        events: Vec<String>,
    ) {
        for e in &events {
            journal::log(
                journal::WARNING,
                Some(Event::LimitHit),
                Some(app.as_str()),
                &format!("{app}: limit hit: {e}"),
            );
        }
        let rest = {
            let mut map = self.services.lock().await;
            let Some(s) = map.get_mut(app.as_str()) else {
                return;
            };
            if s.machine.generation() != generation {
                return;
            }
            s.pid = None;
            s.pidfd = None;
            let exit = Exit::of(status);
            let actions = s
                .machine
                .handle(restart::Event::Exited { generation, exit }, Instant::now());
            self.perform(s, actions).await
        };
        self.follow_up(app, rest).await;
    }

    /// Rolls `app` back after a failed health window and starts the previous version.
    /// The machine has closed the window and no longer wants the failed version `to`.
    async fn health_rollback(
        self: &Arc<Self>,
        app: &AppId,
        from: String,
        to: String,
        reason: String,
    ) {
        // The failed version is stopped before the switch.
        self.stop_and_wait(app).await;
        let d = self.d();
        let g = d.ctx();
        let id = app.to_string();
        let _guard = d.mutation.lock().await;
        let op = appmgr_core::worker::Op::Rollback { id };
        let r = crate::opsrun::run(&g, op, None, None).await;
        drop(_guard);
        d.refresh_bus_policy().await;
        let record = RollbackRecord {
            id: app.to_string(),
            from_version: to.clone(),
            to_version: from.clone(),
            reason: reason.clone(),
            at_unix: now_unix(),
        };
        let restored = match r {
            Ok(_) => {
                let path = d.daemon_dir().join("health").join(format!("{app}.json"));
                let written =
                    std::fs::create_dir_all(d.daemon_dir().join("health")).and_then(|_| {
                        let bytes =
                            serde_json::to_vec_pretty(&record).map_err(std::io::Error::other)?;
                        crate::write_atomic(&path, &bytes)
                    });
                if let Err(e) = written {
                    journal::log(
                        journal::ERR,
                        None,
                        Some(app.as_str()),
                        &format!("{}: {e}", path.display()),
                    );
                }
                journal::log(
                    journal::ERR,
                    Some(Event::HealthRollback),
                    Some(app.as_str()),
                    &format!("{app}: update {from} -> {to} rolled back: {reason}"),
                );
                match self.launch(app, None).await {
                    Ok(()) => true,
                    Err(e) => {
                        journal::log(
                            journal::ERR,
                            None,
                            Some(app.as_str()),
                            &format!("restart after rollback failed: {}", e.message()),
                        );
                        false
                    }
                }
            }
            Err(e) => {
                journal::log(
                    journal::ERR,
                    None,
                    Some(app.as_str()),
                    &format!(
                        "{app}: health window failed ({reason}) but rollback failed: {}",
                        e.message()
                    ),
                );
                false
            }
        };
        self.record_outcome(app, &to, Some(Verdict::RolledBack { reason, restored }));
    }

    fn record_outcome(&self, app: &AppId, to_version: &str, verdict: Option<Verdict>) {
        if let Ok(mut o) = self.outcomes.lock() {
            o.insert(
                app.to_string(),
                Outcome {
                    to_version: to_version.to_string(),
                    verdict,
                },
            );
        }
        self.changed.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Waits, at most until `deadline`, for the verdict of the health window that an
    /// update of `app` to `to_version` opened. `None`: no verdict by then.
    pub async fn verdict(
        &self,
        app: &AppId,
        to_version: &str,
        deadline: tokio::time::Instant,
    ) -> Option<Verdict> {
        let mut rx = self.changed.subscribe();
        loop {
            // Marked seen before looking, so a change after the look wakes us.
            rx.borrow_and_update();
            let recorded = self
                .outcomes
                .lock()
                .ok()
                .and_then(|o| o.get(app.as_str()).cloned())
                .filter(|o| o.to_version == to_version);
            match recorded {
                Some(Outcome {
                    verdict: Some(v), ..
                }) => return Some(v),
                // Rolling back: the verdict follows.
                Some(Outcome { verdict: None, .. }) => {}
                None => {
                    let map = self.services.lock().await;
                    let gone = match map.get(app.as_str()) {
                        None => Some("the service is no longer supervised (removed)".to_string()),
                        Some(s) => match s.machine.health() {
                            Some(h) if h.to_version == to_version => (!s.machine.want_running()
                                && matches!(s.state(), State::Stopped | State::Failed))
                            .then(|| {
                                format!(
                                    "the service is {} (last: {}) and its health window is \
                                     still open",
                                    s.state().name(),
                                    s.machine.last_exit().unwrap_or("-")
                                )
                            }),
                            _ => Some(format!(
                                "the health window of {to_version} was replaced (another \
                                 update or launch)"
                            )),
                        },
                    };
                    if let Some(why) = gone {
                        return Some(Verdict::Interrupted(why));
                    }
                }
            }
            if tokio::time::timeout_at(deadline, rx.changed())
                .await
                .is_err()
            {
                return None;
            }
        }
    }

    /// SIGTERM to the launcher (forwarded to the app), SIGKILL to the whole cgroup after
    /// the stop timeout; returns when the launcher has been reaped.
    async fn stop_and_wait(&self, app: &AppId) {
        let (pidfd, deadline) = {
            let mut map = self.services.lock().await;
            let Some(s) = map.get_mut(app.as_str()) else {
                return;
            };
            let actions = s
                .machine
                .handle(restart::Event::StopRequested, Instant::now());
            let kill_at = actions.iter().find_map(|a| match a {
                Action::Terminate { kill_at } => Some(*kill_at),
                _ => None,
            });
            let Some(kill_at) = kill_at else {
                return;
            };
            (s.pidfd.clone(), kill_at)
        };
        let Some(pidfd) = pidfd else { return };
        let _ = rustix::process::pidfd_send_signal(&*pidfd, rustix::process::Signal::TERM);
        loop {
            let gone = {
                let map = self.services.lock().await;
                map.get(app.as_str()).is_none_or(|s| s.pid.is_none())
            };
            if gone {
                return;
            }
            if Instant::now() >= deadline {
                let _ = rustix::process::pidfd_send_signal(&*pidfd, rustix::process::Signal::KILL);
                if let Ok(h) = apps::hierarchy() {
                    let _ = h.cgroup(app).kill();
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub async fn stop(&self, id: &str) -> Result<Output, Error> {
        let app = AppId::new(id).map_err(|e| Error::of(ErrorClass::Usage, e.to_string()))?;
        {
            let map = self.services.lock().await;
            match map.get(app.as_str()) {
                Some(s) if s.pid.is_some() || s.state() == State::Backoff => {}
                _ => {
                    return Err(Error::of(
                        ErrorClass::NotFound,
                        format!("{app}: not running under appmgrd"),
                    ))
                }
            }
        }
        self.stop_and_wait(&app).await;
        self.status(app.as_str()).await
    }

    pub async fn stop_if_running(&self, id: &str) {
        if let Ok(app) = AppId::new(id) {
            self.stop_and_wait(&app).await;
        }
    }

    pub async fn forget(&self, id: &str) {
        let mut map = self.services.lock().await;
        if map.get(id).is_some_and(|s| s.pid.is_none()) {
            map.remove(id);
        }
        self.changed.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// `Kill` was asked for: the exit that follows is not a crash to restart from.
    pub async fn mark_stopping(&self, id: &str) {
        let mut map = self.services.lock().await;
        if let Some(s) = map.get_mut(id) {
            let none = s
                .machine
                .handle(restart::Event::KillRequested, Instant::now());
            debug_assert!(none.is_empty());
        }
    }

    /// After a rollback by an operator: a running service restarts on the new current
    /// version.
    pub async fn restart_if_running(self: &Arc<Self>, id: &str) {
        let Ok(app) = AppId::new(id) else { return };
        let running = {
            let map = self.services.lock().await;
            map.get(id).is_some_and(|s| s.pid.is_some())
        };
        if running {
            self.stop_and_wait(&app).await;
            if let Err(e) = self.launch(&app, None).await {
                journal::log(
                    journal::ERR,
                    None,
                    Some(id),
                    &format!("restart failed: {}", e.message()),
                );
            }
        }
    }

    /// After an install: an updated service that runs (or autostarts) is restarted on the
    /// new version inside a health window; a new autostart service is started.
    pub async fn after_install(self: &Arc<Self>, change: &appmgr_core::records::Change) -> Watch {
        let app = change.id.clone();
        let id = app.as_str();
        if change.kind != appmgr_types::Kind::App {
            return Watch::NoWindow("a runtime: no service is restarted on it".into());
        }
        let g = self.d().ctx();
        let sid = id.to_string();
        let settings = tokio::task::spawn_blocking(move || Supervisor::settings_of(&g, &sid))
            .await
            .ok()
            .and_then(Result::ok)
            .flatten();
        let Some(settings) = settings else {
            return Watch::NoWindow("not a service".into());
        };
        let running = {
            let map = self.services.lock().await;
            map.get(id).is_some_and(|s| s.machine.want_running())
        };
        if !running && !settings.autostart {
            return Watch::NoWindow("a service that is not running and does not autostart".into());
        }
        let from = change.previous_version.clone();
        let to = change.version.clone().unwrap_or_default();
        let health = match (change.action, from) {
            (appmgr_core::records::Action::Updated, Some(from)) => Some(Health::open(
                from,
                to,
                settings.health_crashes,
                settings.health_timeout_s,
                settings.ready == ReadyProtocol::Notify,
                Instant::now(),
            )),
            _ => None,
        };
        let watch = match &health {
            Some(h) => Watch::Window {
                to_version: h.to_version.clone(),
                timeout_s: h.timeout_s,
            },
            None if change.action == appmgr_core::records::Action::Installed => {
                Watch::NoWindow("a first install: no previous version to return to".into())
            }
            None => Watch::NoWindow(format!(
                "{}: only an update opens a health window",
                change.action.as_str()
            )),
        };
        if let Ok(mut o) = self.outcomes.lock() {
            // A verdict of an earlier window (the same version, once before) is not this
            // one's.
            o.remove(id);
        }
        self.stop_and_wait(&app).await;
        if let Err(e) = self.launch(&app, health).await {
            let msg = format!("start after install failed: {}", e.message());
            journal::log(journal::ERR, None, Some(id), &msg);
            return Watch::StartFailed(msg);
        }
        watch
    }

    /// `Status`: every supervised service, or one.
    pub async fn status(&self, id: &str) -> Result<Output, Error> {
        let map = self.services.lock().await;
        let health_dir = self.d().daemon_dir().join("health");
        let mut rows = Vec::new();
        let mut text = String::new();
        for s in map
            .values()
            .filter(|s| id.is_empty() || s.id.as_str() == id)
        {
            let last_rollback: Option<RollbackRecord> =
                std::fs::read(health_dir.join(format!("{}.json", s.id)))
                    .ok()
                    .and_then(|b| serde_json::from_slice(&b).ok());
            text.push_str(&format!(
                "{:<32} {:<9} {:<12} pid {:<8} restarts {}{}{}\n",
                s.id.as_str(),
                s.state().name(),
                s.version,
                s.pid.map(|p| p.to_string()).unwrap_or_else(|| "-".into()),
                s.machine.restarts(),
                s.machine
                    .last_exit()
                    .map(|e| format!("  last: {e}"))
                    .unwrap_or_default(),
                last_rollback
                    .as_ref()
                    .map(|r| format!(
                        "  rolled back {} -> {}: {}",
                        r.from_version, r.to_version, r.reason
                    ))
                    .unwrap_or_default(),
            ));
            rows.push(json!({
                "id": s.id,
                "state": s.state().name(),
                "version": s.version,
                "pid": s.pid,
                "restarts": s.machine.restarts(),
                "last-exit": s.machine.last_exit(),
                "status-text": s.status_text,
                "settings": s.settings,
                "health-window": s.machine.health(),
                "last-rollback": last_rollback,
            }));
        }
        if !id.is_empty() && rows.is_empty() {
            return Err(Error::of(
                ErrorClass::NotFound,
                format!(
                    "{}: not supervised by appmgrd",
                    appmgr_types::escape_for_display(id)
                ),
            ));
        }
        let j = if id.is_empty() {
            json!(rows)
        } else {
            rows.remove(0)
        };
        Ok(Output::new(text, j))
    }
}

/// A pidfd as an `AsRawFd` for `AsyncFd` (readable once the process has exited).
struct PidfdRef(Arc<OwnedFd>);

impl std::os::fd::AsRawFd for PidfdRef {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.0.as_raw_fd()
    }
}

/// Service settings: the manifest's `[service]` declares the app a service and how it
/// reports readiness; policy's `service` table (if any rule sets it) decides autostart,
/// restart and the health window, and can make any app a service.
pub fn settings_from(a: &apps::AppGrant) -> Option<Settings> {
    appmgr_core::service::settings_of(a)
}

/// Looks the names of a service's network up again as their TTLs run out
/// ([`appmgr_sandbox::net::Refresher`]), until aborted when the service's init ends.
async fn keep_names(n: appmgr_sandbox::net::NetPlan, app: String) {
    let started = Instant::now();
    let name = n.name.clone();
    let made =
        tokio::task::spawn_blocking(move || appmgr_sandbox::net::Refresher::new(&n, started)).await;
    let mut r = match made {
        Ok(Ok(Some(r))) => r,
        Ok(Ok(None)) | Err(_) => return,
        Ok(Err(e)) => {
            journal::log(
                journal::WARNING,
                None,
                Some(&app),
                &format!("{name}: names will not be looked up again: {e}"),
            );
            return;
        }
    };
    loop {
        tokio::time::sleep_until(r.next_due().into()).await;
        let done = tokio::task::spawn_blocking(move || {
            let problems = r.refresh(Instant::now());
            (r, problems)
        })
        .await;
        let Ok((back, problems)) = done else { return };
        r = back;
        for p in problems {
            journal::log(journal::WARNING, None, Some(&app), &format!("{name}: {p}"));
        }
    }
}

type LaunchResult = Result<(Launched, Option<std::os::unix::net::UnixDatagram>), CoreError>;

/// The blocking part of a launch: policy check, cgroup, notify socket, output streams,
/// plan, spawn of the launcher, pidfd.
fn launch_blocking(
    g: &appmgr_core::Ctx,
    id: &str,
    bus_socket: Option<PathBuf>,
    notify_dir: &std::path::Path,
    logs: &(PathBuf, u64),
) -> LaunchResult {
    let other = |m: String| CoreError::new(ErrorClass::Other, m);
    // The kept plan (made at install, checked against its inputs), or a new one.
    let p = appmgr_core::prepared::for_launch(g, id)?;
    let settings = p.settings.clone().unwrap_or_else(Settings::manual);
    let uid = p.spec.uid;
    // The notify socket: one per app uid, owned by that uid, bound into the sandbox.
    let notify = if settings.ready == ReadyProtocol::Notify {
        std::fs::create_dir_all(notify_dir)
            .map_err(|e| other(format!("{}: {e}", notify_dir.display())))?;
        let _ = std::fs::set_permissions(notify_dir, std::fs::Permissions::from_mode(0o700));
        let path = notify_dir.join(uid.to_string());
        let _ = std::fs::remove_file(&path);
        let sock = std::os::unix::net::UnixDatagram::bind(&path)
            .map_err(|e| other(format!("{}: {e}", path.display())))?;
        std::os::unix::fs::chown(&path, Some(uid), Some(uid))
            .map_err(|e| other(format!("{}: {e}", path.display())))?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
            .map_err(|e| other(format!("{}: {e}", path.display())))?;
        Some((sock, path))
    } else {
        None
    };
    let notify_path = notify.as_ref().map(|(_, p)| p.clone());
    let (launch, cgroup) = apps::start_launch(g, &p, Vec::new(), |s| {
        s.notify_socket = notify_path;
        // Offered only while the bus is up, as `appmgr run` does.
        s.system_bus_socket = bus_socket.as_deref().and_then(appmgr_sandbox::host_socket);
        // appmgrd reads the limit counters and removes the cgroup itself after the exit.
        s.after_exit.events.clear();
        s.after_exit.remove_dirs.clear();
    })?;
    let plan = launch.plan;
    let counters = cgroup.event_counters();
    let baseline = read_counts(&counters);
    let (out, err) = output_streams(id, logs)?;
    // Detached: the launcher sets the sandbox up and exits; init (pid 1 of the sandbox)
    // becomes our child, so nothing but init stays beside the app.
    let init = match appmgr_sandbox::spawn_detached(&plan, out, err) {
        Ok(i) => i,
        Err(e) => {
            remove_cgroup(&cgroup);
            // The launcher's refusal (a grant it cannot provide safely) is the policy
            // class, as for `appmgr run` (exit 4): Start answers PolicyRefused.
            let class = match &e {
                appmgr_sandbox::ExecError::Launch {
                    code: Some(appmgr_sandbox::EXIT_REFUSED),
                    ..
                } => ErrorClass::Policy,
                _ => ErrorClass::Other,
            };
            return Err(CoreError::new(class, format!("{id}: {e}")));
        }
    };
    Ok((
        Launched {
            pid: init.pid,
            pidfd: init.pidfd,
            cgroup,
            counters,
            baseline,
            net: plan.net.clone(),
            version: p.app_version.clone(),
            settings,
        },
        notify.map(|(s, _)| s),
    ))
}

/// stdout and stderr of a service: journal streams tagged with the app ID, or where no
/// journald runs a pipe into `STATE/daemon/logs/ID.log`, capped with one rotated file
/// (see [`crate::logfile`]).
fn output_streams(
    id: &str,
    (logs_dir, max): &(PathBuf, u64),
) -> Result<(std::process::Stdio, std::process::Stdio), CoreError> {
    if let (Some(o), Some(e)) = (
        journal::app_stream(id, journal::INFO),
        journal::app_stream(id, journal::WARNING),
    ) {
        return Ok((OwnedFd::from(o).into(), OwnedFd::from(e).into()));
    }
    let (out, err) = crate::logfile::spawn(logs_dir, id, *max).map_err(|e| {
        CoreError::new(
            ErrorClass::Other,
            format!("{id}: log in {}: {e}", logs_dir.display()),
        )
    })?;
    Ok((out.into(), err.into()))
}

/// The current value of each counter (`KEY N` line of its file; 0 if unreadable).
fn read_counts(counters: &[(PathBuf, &'static str, &'static str)]) -> Vec<u64> {
    counters
        .iter()
        .map(|(file, key, _)| {
            std::fs::read_to_string(file)
                .ok()
                .and_then(|text| {
                    text.lines().find_map(|line| {
                        let mut it = line.split_whitespace();
                        (it.next() == Some(key))
                            .then(|| it.next().and_then(|n| n.parse::<u64>().ok()))
                            .flatten()
                    })
                })
                .unwrap_or(0)
        })
        .collect()
}

/// Limit events from the cgroup's counter files (`memory-max`, `pids-max` with counts):
/// the increase over `baseline`, read before the launch, so a reused cgroup's old counts
/// are never reported again.
fn read_events(
    counters: &[(PathBuf, &'static str, &'static str)],
    baseline: &[u64],
) -> Vec<String> {
    let now = read_counts(counters);
    let mut out = Vec::new();
    for (i, (_, _, event)) in counters.iter().enumerate() {
        let n = now[i].saturating_sub(baseline.get(i).copied().unwrap_or(0));
        if n > 0 {
            out.push(format!("{event} ({n})"));
        }
    }
    out
}

impl Supervisor {
    /// At shutdown: every service is stopped (SIGTERM, then SIGKILL after its timeout).
    pub async fn stop_all(&self) {
        let ids: Vec<AppId> = {
            let map = self.services.lock().await;
            map.values()
                .filter(|s| s.pid.is_some())
                .map(|s| s.id.clone())
                .collect()
        };
        for id in ids {
            self.stop_and_wait(&id).await;
        }
    }
}

/// Kills what is left in an app's cgroup and removes the cgroup; returns how many
/// processes there were.
fn stop_leftover(id: &str) -> usize {
    let (Ok(h), Ok(app)) = (apps::hierarchy(), AppId::new(id)) else {
        return 0;
    };
    let cg = h.cgroup(&app);
    let n = cg.pids().map(|p| p.len()).unwrap_or(0);
    if n == 0 {
        return 0;
    }
    let _ = cg.kill();
    for _ in 0..100 {
        if cg.pids().map(|p| p.is_empty()).unwrap_or(true) {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = cg.remove();
    n
}

/// Reaps init through its pidfd; its status is the app's (128+N for a signal).
fn reap(pidfd: &OwnedFd) -> Option<std::process::ExitStatus> {
    use std::os::fd::AsFd;
    use std::os::unix::process::ExitStatusExt;
    let st = rustix::process::waitid(
        rustix::process::WaitId::PidFd(pidfd.as_fd()),
        rustix::process::WaitIdOptions::EXITED,
    )
    .ok()
    .flatten()?;
    if let Some(code) = st.exit_status() {
        return Some(std::process::ExitStatus::from_raw((code & 0xff) << 8));
    }
    st.terminating_signal()
        .map(|sig| std::process::ExitStatus::from_raw(sig & 0x7f))
}

/// Removes an app's cgroup once it is empty (dying processes may keep it busy briefly).
fn remove_cgroup(cg: &appmgr_cgroup::Cgroup) {
    for _ in 0..50 {
        if cg.remove().is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
