//! appmgrd: owns the state directory, serves `org.appmgr.Manager1` on the system bus,
//! supervises service apps and rolls back updates that do not come up healthy.
//!
//! - [`manager`]: the D-Bus interface (the CLI contract as methods, progress signals,
//!   typed errors), with access control from the caller's bus credentials ([`access`]).
//! - [`supervise`]: service apps, launched through the launcher and tracked by pidfd.
//! - [`preinstall`]: factory bundles from `CONFIG/preinstall.d`.
//! - [`journal`]: journald (stable message IDs) or stderr, and sd_notify.
//! - per-app bus policy: `dbus-talk`/`dbus-own` grants as dbus-daemon rules per app uid
//!   ([`Daemon::refresh_bus_policy`]).

pub mod access;
pub mod callerfile;
pub mod cmdline;
pub mod deferred;
pub mod error;
pub mod files;
pub use appmgr_core::journal;
pub mod logfile;
pub mod manager;
pub mod mem;
pub mod opsrun;
pub mod preinstall;
pub mod restart;
pub mod supervise;

use appmgr_core::{apps, paths, Ctx};
use appmgr_types::dbus;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

/// How appmgrd was started (command line, see `appmgrd --help`).
#[derive(Debug, Clone)]
pub struct Config {
    pub state_dir: PathBuf,
    pub config_dir: PathBuf,
    /// D-Bus address to serve on; `None`: the system bus.
    pub bus_address: Option<String>,
    /// Where the per-app bus policy drop-in is written; `None`: not written.
    pub bus_policy_file: Option<PathBuf>,
    /// The bus socket bound into sandboxes of apps with `dbus-talk`/`dbus-own` grants.
    pub system_bus_socket: Option<PathBuf>,
    /// `/etc/group`, for the operator group.
    pub group_file: PathBuf,
    /// Where user and group records for the app uids are published for nss-systemd
    /// (`/run/userdb`); `None`: not published.
    pub userdb_dir: Option<PathBuf>,
}

pub struct Daemon {
    pub config: Config,
    pub operator_gid: Option<u32>,
    /// Cap of a service's log file where no journald runs (`service-log-max`).
    pub service_log_max: u64,
    /// One store mutation at a time inside the daemon (the store lock also serializes
    /// against local CLIs).
    pub mutation: tokio::sync::Mutex<()>,
    pub supervisor: Arc<supervise::Supervisor>,
    /// Installs deferred by inhibitors.
    pub queue: deferred::Queue,
    conn: OnceLock<zbus::Connection>,
    bus_policy: tokio::sync::Mutex<()>,
    /// The last `List` reply and the store change sequence it was built at.
    pub(crate) list_cache: std::sync::Mutex<Option<(u64, (String, String))>>,
}

impl Daemon {
    /// The directories every use case runs on.
    pub fn ctx(&self) -> Ctx {
        Ctx {
            state_dir: self.config.state_dir.clone(),
            config_dir: self.config.config_dir.clone(),
        }
    }

    pub fn daemon_dir(&self) -> PathBuf {
        paths::daemon_dir(&self.config.state_dir)
    }

    pub async fn emit_service_state(&self, id: &str, state: &str) {
        if let Some(conn) = self.conn.get() {
            if let Ok(em) = zbus::object_server::SignalEmitter::new(conn, dbus::OBJECT_PATH) {
                let _ = manager::Manager::service_state_changed(&em, id, state).await;
            }
        }
    }

    pub async fn after_install(
        &self,
        change: &appmgr_core::records::Change,
    ) -> crate::supervise::Watch {
        self.supervisor.after_install(change).await
    }

    /// Publishes the app uids as users (nss-systemd drop-ins), rewrites the bus policy
    /// drop-in from the installed apps' effective grants and asks the bus to reload it
    /// when it changed. dbus-daemon applies per-uid rules only to uids NSS resolves, so
    /// the users come first. The same code (`appmgr_policy::userdb::install` on
    /// `apps::bus_entries`, from the kept launch plans) runs in `appmgr run` before an app with a bus grant.
    pub async fn refresh_bus_policy(&self) {
        let g = self.ctx();
        let userdb = self.config.userdb_dir.clone();
        let file = self.config.bus_policy_file.clone();
        // One refresh at a time: the file is compared and replaced as a whole.
        let _one = self.bus_policy.lock().await;
        let changed = tokio::task::spawn_blocking(move || {
            let entries = apps::bus_entries(&g).map_err(|e| e.message)?;
            appmgr_policy::userdb::install(file.as_deref(), userdb.as_deref(), &entries)
                .map_err(|e| e.to_string())
        })
        .await;
        let changed = match changed {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => {
                journal::log(
                    journal::ERR,
                    None,
                    None,
                    &format!("bus policy not updated: {e}"),
                );
                return;
            }
            Err(_) => return,
        };
        if !changed {
            return;
        }
        if let Some(conn) = self.conn.get() {
            let r = conn
                .call_method(
                    Some("org.freedesktop.DBus"),
                    "/org/freedesktop/DBus",
                    Some("org.freedesktop.DBus"),
                    "ReloadConfig",
                    &(),
                )
                .await;
            if let Err(e) = r {
                journal::log(journal::ERR, None, None, &format!("bus ReloadConfig: {e}"));
            }
        }
    }
}

/// Replaces `path` with `bytes` (mode 0644) by a synced temporary file and a rename: the
/// one way appmgrd writes its files (bus policy, records, user records).
pub(crate) fn write_atomic(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    appmgr_policy::userdb::write_atomic(path, bytes)
}

/// Runs appmgrd until SIGTERM or SIGINT.
pub async fn run(config: Config) -> Result<(), String> {
    let (ddir, replaced) = files::daemon_dir(&config.state_dir)?;
    let lock = files::take_lock(&config.state_dir, &ddir, replaced)?;
    // A stale address (a daemon that was killed) goes: the address file appears again
    // once this daemon answers. The CLI waits, bounded, while the lock is held.
    for stale in [
        paths::address_path(&config.state_dir),
        paths::daemon_dir(&config.state_dir).join("bus-address"),
    ] {
        match std::fs::remove_file(&stale) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(format!("{}: {e}", stale.display()))
            }
            _ => {}
        }
    }
    let host = appmgr_core::config::HostConfig::load(&config.config_dir).map_err(|e| e.message)?;
    let operator_gid = match &host.operator_group {
        None => None,
        Some(name) => Some(access::group_gid(&config.group_file, name).ok_or_else(|| {
            format!(
                "appmgr.toml: operator-group {name:?} is not in {}",
                config.group_file.display()
            )
        })?),
    };
    let daemon = Arc::new_cyclic(|weak| Daemon {
        config: config.clone(),
        operator_gid,
        service_log_max: host
            .service_log_max
            .map_or(logfile::DEFAULT_MAX, |m| m.bytes()),
        mutation: tokio::sync::Mutex::new(()),
        supervisor: Arc::new(supervise::Supervisor::new(weak.clone())),
        queue: deferred::Queue::default(),
        conn: OnceLock::new(),
        bus_policy: tokio::sync::Mutex::new(()),
        list_cache: std::sync::Mutex::new(None),
    });
    tokio::spawn(daemon.supervisor.clone().run());
    journal::sd_notify("STATUS=preinstalling factory bundles");
    preinstall_all(&daemon).await;

    let builder = match &config.bus_address {
        Some(a) => zbus::connection::Builder::address(a.as_str())
            .map_err(|e| format!("bus address {a}: {e}"))?,
        None => zbus::connection::Builder::system().map_err(|e| format!("system bus: {e}"))?,
    };
    let conn = builder
        .serve_at(dbus::OBJECT_PATH, manager::Manager { d: daemon.clone() })
        .map_err(|e| e.to_string())?
        .build()
        .await
        .map_err(|e| format!("cannot connect to the bus: {e}"))?;
    let _ = daemon.conn.set(conn.clone());
    // Bus policy and services first, the name last: once clients can reach appmgrd, the
    // apps' bus rules are in force and the boot services are up.
    daemon.refresh_bus_policy().await;
    daemon.supervisor.start_autostart().await;
    // Installs queued while inhibited (before a restart too) run once nothing inhibits.
    deferred::clean(&daemon);
    tokio::spawn(deferred::run(Arc::downgrade(&daemon)));
    conn.request_name_with_flags(
        dbus::BUS_NAME,
        zbus::fdo::RequestNameFlags::DoNotQueue.into(),
    )
    .await
    .map_err(|e| format!("cannot own {} on the bus: {e}", dbus::BUS_NAME))?;
    let address = config.bus_address.clone().unwrap_or_else(|| {
        std::env::var("DBUS_SYSTEM_BUS_ADDRESS")
            .unwrap_or_else(|_| "unix:path=/run/dbus/system_bus_socket".into())
    });
    write_atomic(&paths::address_path(&config.state_dir), address.as_bytes())
        .map_err(|e| format!("{}: {e}", paths::address_path(&config.state_dir).display()))?;
    mem::trim();
    journal::sd_notify("READY=1\nSTATUS=serving org.appmgr.Manager1");
    journal::log(
        journal::INFO,
        None,
        None,
        &format!(
            "serving {} for {} on {address}",
            dbus::BUS_NAME,
            config.state_dir.display()
        ),
    );
    let watchdog = watchdog_interval();
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| e.to_string())?;
    let mut int = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())
        .map_err(|e| e.to_string())?;
    let mut tick = tokio::time::interval(watchdog.unwrap_or(std::time::Duration::from_secs(3600)));
    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = tick.tick() => {
                // The ping comes from the event loop itself: a hung loop stops pinging and
                // systemd restarts the daemon.
                if watchdog.is_some() {
                    journal::sd_notify("WATCHDOG=1");
                }
            }
        }
    }
    journal::sd_notify("STOPPING=1\nSTATUS=stopping services");
    // Clients stop routing to a daemon that is going away.
    let _ = std::fs::remove_file(paths::address_path(&config.state_dir));
    daemon.supervisor.stop_all().await;
    drop(lock);
    Ok(())
}

/// Half of `$WATCHDOG_USEC` when systemd asks for pings (and `$WATCHDOG_PID` is ours).
fn watchdog_interval() -> Option<std::time::Duration> {
    if let Ok(pid) = std::env::var("WATCHDOG_PID") {
        if pid.parse::<u32>().ok() != Some(std::process::id()) {
            return None;
        }
    }
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
    (usec > 0).then(|| std::time::Duration::from_micros(usec / 2))
}

async fn preinstall_all(d: &Arc<Daemon>) {
    let dir = d.config.config_dir.join("preinstall.d");
    let g = d.ctx();
    let _guard = d.mutation.lock().await;
    let mut r = Vec::new();
    match preinstall::load(&dir) {
        Err(e) => r.push((
            dir.display().to_string(),
            preinstall::Outcome::Failed(e.message),
        )),
        Ok(entries) => {
            for (p, e) in entries {
                let name = p.display().to_string();
                let o = match e {
                    Ok(e) => preinstall::apply(&g, &e).await,
                    Err(x) => preinstall::Outcome::Failed(x.message),
                };
                r.push((name, o));
            }
        }
    }
    for (name, o) in r {
        match o {
            preinstall::Outcome::Installed(m) => journal::log(
                journal::INFO,
                Some(journal::Event::Installed),
                None,
                &format!("preinstall {name}: {m}"),
            ),
            preinstall::Outcome::Present(m) => journal::log(
                journal::INFO,
                None,
                None,
                &format!("preinstall {name}: {m}"),
            ),
            preinstall::Outcome::Failed(m) => {
                journal::log(journal::ERR, None, None, &format!("preinstall {name}: {m}"))
            }
        }
    }
}
