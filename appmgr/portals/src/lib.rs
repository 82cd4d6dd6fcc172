//! appmgr-portals: `appmgr-portald`, the portal service on the system bus
//! (`org.appmgr.Portal1` at `/org/appmgr/portal`). An app asks over D-Bus; the service
//! identifies the app from the kernel's view of the caller ([`identity`]), checks the
//! static grant (the app's effective permissions, from the same kept launch plan the
//! launcher applies, [`grants`]), and hands back exactly the granted resource as a file
//! descriptor. Nothing is asked of a person; every grant, denial and revocation is a
//! journal event with a stable MESSAGE_ID.
//!
//! - [`gpu`]: `org.appmgr.portal.Gpu1`: a descriptor of the board's render node.
//! - [`sensors`]: `org.appmgr.portal.Sensors1`: granted IIO channels, single reads and
//!   rate-limited streams fanned out from a device's IIO buffer ([`buffer`]) or from one
//!   sampler polling sysfs ([`iio`]).
//! - [`bluetooth`]: `org.appmgr.portal.Bluetooth1`: scans, connections, reads, writes and
//!   notification streams of the granted Bluetooth LE devices and GATT services, through
//!   BlueZ, which the portal drives as its own client.
//! - [`watch`]: revocation: a stream ends, a scan stops, a connection is released, and an
//!   app holding a render node it is no longer granted is stopped, within 100 ms of its
//!   caller exiting or `appmgr reload`.
//!
//! It runs as its own process, not inside appmgrd: it needs device nodes and `/proc`, not
//! the store, so its unit can give it the render and IIO nodes and a read-only view of
//! everything else (docs/portals.md). It shares only `appmgr-core` with the other front
//! ends.

pub mod bluetooth;
pub mod buffer;
pub mod cmdline;
pub mod gpu;
pub mod grants;
pub mod identity;
pub mod iio;
pub mod sensors;
pub mod watch;

use appmgr_core::journal;
use appmgr_types::AppId;
use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// The service's well-known name, object and interfaces (a public contract).
pub const BUS_NAME: &str = appmgr_types::PORTAL_BUS_NAME;
pub const OBJECT_PATH: &str = "/org/appmgr/portal";
pub const GPU_INTERFACE: &str = "org.appmgr.portal.Gpu1";
pub const SENSORS_INTERFACE: &str = "org.appmgr.portal.Sensors1";
pub const BLUETOOTH_INTERFACE: &str = "org.appmgr.portal.Bluetooth1";

/// How long a call to the bus daemon (the caller's credentials) may take.
pub(crate) const BUS_TIMEOUT: Duration = Duration::from_secs(5);

/// What the service runs with.
#[derive(Debug, Clone)]
pub struct Config {
    pub state_dir: PathBuf,
    pub config_dir: PathBuf,
    /// The bus to serve on; the system bus when `None`.
    pub bus_address: Option<String>,
    /// Where IIO devices are, instead of the board profile's `[portals.sensors] sysfs`.
    pub iio_dir: Option<PathBuf>,
    /// Where the IIO character devices (`iio:deviceN`) are, instead of `/dev`.
    pub iio_dev_dir: Option<PathBuf>,
}

/// The portal's D-Bus errors (`org.appmgr.Error.NAME`).
#[derive(Debug, zbus::DBusError)]
#[zbus(prefix = "org.appmgr.Error")]
pub enum PortalError {
    #[zbus(error)]
    ZBus(zbus::Error),
    /// The caller is not an app, or its grant does not cover the request.
    AccessDenied(String),
    /// Granted, but this board or host does not have it (no render node, no channel).
    NotAvailable(String),
    /// Malformed arguments.
    InvalidArgs(String),
    /// Granted and available, but the device or the system service failed or refused the
    /// operation (the message carries its error).
    Failed(String),
}

/// At most this many denials are journaled per window; the rest are counted.
const DENIAL_LOG_BURST: u32 = 20;
const DENIAL_LOG_WINDOW: Duration = Duration::from_secs(10);

struct RateLimit {
    window_start: Instant,
    logged: u32,
    suppressed: u64,
}

/// The most callers whose identification is kept (see [`Shared::granted`]).
const MAX_KNOWN_CALLERS: usize = 256;

/// A caller identified before, and the grant it had: valid while its process lives, the
/// kept plans are unchanged and none of the grant's inputs changed.
struct KnownCaller {
    app: AppId,
    uid: u32,
    pid: u32,
    pidfd: OwnedFd,
    perms: appmgr_types::Permissions,
    inputs: Vec<appmgr_sandbox::inputs::PlanInput>,
    /// Each input's [`InputStamp`] when its digest was last found unchanged.
    stamps: Vec<InputStamp>,
    plans: Option<watch::PlansStamp>,
}

/// What identifies a version of a grant input without reading it: device, inode, size,
/// mtime and ctime (any write changes the ctime, which no caller can set back); `None`
/// for an absent path. A stamp taken within [`RACY`] of its ctime is not trusted (a
/// write in the same clock tick may leave it unchanged), so that input is checked by
/// digest until the stamp is older.
type InputStamp = Option<(u64, u64, u64, i64, i64, i64, i64)>;

/// How old a ctime must be before a stamp alone may vouch for its file.
const RACY: Duration = Duration::from_secs(2);

fn input_stamp(p: &std::path::Path) -> InputStamp {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(p).ok().map(|m| {
        (
            m.dev(),
            m.ino(),
            m.size(),
            m.mtime(),
            m.mtime_nsec(),
            m.ctime(),
            m.ctime_nsec(),
        )
    })
}

/// Whether stamp `s` (taken now) may vouch for its input: absent, or its ctime is at
/// least [`RACY`] in the past.
fn trusted(s: &InputStamp) -> bool {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    s.is_none_or(|x| now - x.5 >= RACY.as_secs() as i64)
}

/// Whether `inputs` still have their digests: by stamp where `stamps` (updated here)
/// vouch for them, by digest otherwise.
fn inputs_unchanged(
    inputs: &[appmgr_sandbox::inputs::PlanInput],
    stamps: &mut [InputStamp],
) -> bool {
    inputs.iter().zip(stamps.iter_mut()).all(|(i, st)| {
        let now = input_stamp(&i.path);
        if now == *st && trusted(st) {
            return true;
        }
        let same = appmgr_sandbox::inputs::digest_path(&i.path).is_ok_and(|d| d == i.sha256);
        // Stamped before the digest was taken, so a write after it changes the stamp;
        // one too recent to vouch is not kept (the digest is taken again next time).
        *st = if trusted(&now) { now } else { None };
        same
    })
}

/// State shared by the interfaces and the background tasks.
pub struct Shared {
    pub config: Config,
    ctx: appmgr_core::Ctx,
    hierarchy: Result<appmgr_cgroup::Hierarchy, String>,
    dbus: OnceLock<zbus::fdo::DBusProxy<'static>>,
    /// The connection the portal serves on (for the Bluetooth portal's unicast signals).
    pub(crate) serving: OnceLock<zbus::Connection>,
    /// The portal's own connection as a client of BlueZ, made at the first Bluetooth
    /// call (see [`bluetooth`]): a board or an app set without Bluetooth costs nothing.
    pub(crate) bluez: tokio::sync::OnceCell<zbus::Connection>,
    pub(crate) bt: Mutex<bluetooth::Bt>,
    /// Serializes changes of the BlueZ discovery session.
    pub(crate) bt_discovery: tokio::sync::Mutex<()>,
    /// Serializes subscriptions to characteristics (`StartNotify`, `StopNotify`).
    pub(crate) bt_notify: tokio::sync::Mutex<()>,
    /// Serializes connecting and disconnecting devices, so a `Connect` never meets the
    /// portal's own disconnection of a device nobody held a moment before.
    pub(crate) bt_conn: tokio::sync::Mutex<()>,
    known: Mutex<HashMap<String, KnownCaller>>,
    pub(crate) streams: Mutex<sensors::Streams>,
    pub(crate) handouts: Mutex<Vec<gpu::Handout>>,
    /// Wakes the sampler and the watcher when streams or handouts change.
    pub(crate) changed: tokio::sync::Notify,
    denials: Mutex<RateLimit>,
}

impl Shared {
    pub fn new(config: Config) -> Arc<Shared> {
        let hierarchy = appmgr_cgroup::Hierarchy::detect(appmgr_cgroup::DEFAULT_PARENT)
            .map_err(|e| format!("cgroups: {e}"));
        Arc::new(Shared {
            ctx: appmgr_core::Ctx {
                state_dir: config.state_dir.clone(),
                config_dir: config.config_dir.clone(),
            },
            config,
            hierarchy,
            dbus: OnceLock::new(),
            serving: OnceLock::new(),
            bluez: tokio::sync::OnceCell::new(),
            bt: Mutex::new(bluetooth::Bt::default()),
            bt_discovery: tokio::sync::Mutex::new(()),
            bt_notify: tokio::sync::Mutex::new(()),
            bt_conn: tokio::sync::Mutex::new(()),
            known: Mutex::new(HashMap::new()),
            streams: Mutex::new(sensors::Streams::default()),
            handouts: Mutex::new(Vec::new()),
            changed: tokio::sync::Notify::new(),
            denials: Mutex::new(RateLimit {
                window_start: Instant::now(),
                logged: 0,
                suppressed: 0,
            }),
        })
    }

    pub fn ctx(&self) -> &appmgr_core::Ctx {
        &self.ctx
    }

    /// The calling app, identified from the bus credentials of the message's sender. A
    /// caller that is not an app is denied (and journaled).
    pub(crate) async fn caller(
        &self,
        hdr: &zbus::message::Header<'_>,
        what: &str,
    ) -> Result<identity::AppCaller, PortalError> {
        let sender = hdr
            .sender()
            .ok_or_else(|| PortalError::AccessDenied("a message without a sender".into()))?;
        let proxy = self
            .dbus
            .get()
            .ok_or_else(|| PortalError::NotAvailable("the portal is starting".into()))?;
        let creds = tokio::time::timeout(
            BUS_TIMEOUT,
            proxy.get_connection_credentials(sender.clone().into()),
        )
        .await
        .map_err(|_| PortalError::NotAvailable("the bus did not answer in time".into()))?
        .map_err(|e| PortalError::AccessDenied(format!("credentials of {sender}: {e}")))?;
        let (Some(uid), Some(pid)) = (creds.unix_user_id(), creds.process_id()) else {
            let m = format!("{what}: the bus did not tell {sender}'s uid and pid");
            self.deny(None, &m);
            return Err(PortalError::AccessDenied(m));
        };
        let h = self.hierarchy.as_ref().map_err(|e| {
            let m = format!("{what}: cannot identify apps: {e}");
            self.deny(None, &m);
            PortalError::AccessDenied(m)
        })?;
        identity::identify(uid, pid, h, &self.config.state_dir).map_err(|e| {
            let m = format!("{what}: {}", e.0);
            self.deny(None, &m);
            PortalError::AccessDenied(m)
        })
    }

    /// The calling app and its effective permissions, if they grant portal `portal` (else
    /// AccessDenied, journaled).
    ///
    /// A caller's identification and grant are kept per unique bus name (which the bus
    /// never gives twice, and whose credentials are fixed when it connects) and used again
    /// while its pidfd shows the process alive, the kept plans are unchanged and every
    /// input of the grant (policy files, manifest, host config) has its recorded digest:
    /// the same answer a fresh identification would give, without the bus round trip and
    /// the plan's parse on every call.
    pub(crate) async fn granted(
        &self,
        hdr: &zbus::message::Header<'_>,
        what: &str,
        portal: &str,
    ) -> Result<(identity::AppCaller, appmgr_types::Permissions), PortalError> {
        let sender = hdr.sender().map(|s| s.to_string());
        let plans = watch::plans_stamp(self.ctx());
        let (c, perms) = match sender.as_deref().and_then(|s| self.known_caller(s, plans)) {
            Some(hit) => hit,
            None => {
                let c = self.caller(hdr, what).await?;
                let (perms, inputs) = grants::of_with_inputs(self.ctx(), &c.app)
                    .map_err(|e| self.denied(&c.app, format!("{}: no grant: {e}", c.app)))?;
                // The digests were checked before these stamps: a write since then is
                // recent, so its stamp is not trusted and the digest is taken again.
                let mut stamps: Vec<InputStamp> =
                    inputs.iter().map(|i| input_stamp(&i.path)).collect();
                let keep = inputs_unchanged(&inputs, &mut stamps);
                if let (Some(sender), Ok(pidfd), true) = (sender, c.pidfd.try_clone(), keep) {
                    let mut k = self.known.lock().unwrap_or_else(|p| p.into_inner());
                    if k.len() >= MAX_KNOWN_CALLERS {
                        k.retain(|_, x| !identity::exited(&x.pidfd));
                        if k.len() >= MAX_KNOWN_CALLERS {
                            k.clear();
                        }
                    }
                    k.insert(
                        sender,
                        KnownCaller {
                            app: c.app.clone(),
                            uid: c.uid,
                            pid: c.pid,
                            pidfd,
                            perms: perms.clone(),
                            inputs,
                            stamps,
                            plans,
                        },
                    );
                }
                (c, perms)
            }
        };
        if !grants::has_portal(&perms, portal) {
            return Err(self.denied(
                &c.app,
                format!("{}: the {portal} portal is not granted", c.app),
            ));
        }
        Ok((c, perms))
    }

    /// The kept identification of `sender`, if it is still valid (see [`Shared::granted`]).
    fn known_caller(
        &self,
        sender: &str,
        plans: Option<watch::PlansStamp>,
    ) -> Option<(identity::AppCaller, appmgr_types::Permissions)> {
        let mut k = self.known.lock().unwrap_or_else(|p| p.into_inner());
        let x = k.get_mut(sender)?;
        let valid = x.plans == plans
            && !identity::exited(&x.pidfd)
            && inputs_unchanged(&x.inputs, &mut x.stamps);
        if !valid {
            k.remove(sender);
            return None;
        }
        let pidfd = x.pidfd.try_clone().ok()?;
        Some((
            identity::AppCaller {
                app: x.app.clone(),
                uid: x.uid,
                pid: x.pid,
                pidfd,
            },
            x.perms.clone(),
        ))
    }

    /// Journals a denial (rate-limited) and returns it as the caller's error.
    pub(crate) fn denied(&self, app: &AppId, m: String) -> PortalError {
        self.deny(Some(app), &m);
        PortalError::AccessDenied(m)
    }

    fn deny(&self, app: Option<&AppId>, m: &str) {
        let mut r = self.denials.lock().unwrap_or_else(|p| p.into_inner());
        if r.window_start.elapsed() > DENIAL_LOG_WINDOW {
            if r.suppressed > 0 {
                journal::log(
                    journal::WARNING,
                    Some(journal::Event::PortalDenied),
                    None,
                    &format!("{} more denials were not logged", r.suppressed),
                );
            }
            *r = RateLimit {
                window_start: Instant::now(),
                logged: 0,
                suppressed: 0,
            };
        }
        if r.logged < DENIAL_LOG_BURST {
            r.logged += 1;
            journal::log(
                journal::WARNING,
                Some(journal::Event::PortalDenied),
                app.map(|a| a.as_str()),
                m,
            );
        } else {
            r.suppressed += 1;
        }
    }
}

/// Serves the portal until SIGTERM or SIGINT.
pub async fn run(config: Config) -> Result<(), String> {
    let shared = Shared::new(config);
    if let Err(e) = &shared.hierarchy {
        journal::log(
            journal::WARNING,
            None,
            None,
            &format!("no app can be identified: {e}"),
        );
    }
    let builder = match &shared.config.bus_address {
        Some(a) => zbus::connection::Builder::address(a.as_str())
            .map_err(|e| format!("bus address {a}: {e}"))?,
        None => zbus::connection::Builder::system().map_err(|e| format!("system bus: {e}"))?,
    };
    let conn = tokio::time::timeout(
        BUS_TIMEOUT,
        builder
            .method_timeout(BUS_TIMEOUT)
            .serve_at(OBJECT_PATH, gpu::Gpu { s: shared.clone() })
            .map_err(|e| e.to_string())?
            .serve_at(OBJECT_PATH, sensors::Sensors { s: shared.clone() })
            .map_err(|e| e.to_string())?
            .serve_at(OBJECT_PATH, bluetooth::Bluetooth { s: shared.clone() })
            .map_err(|e| e.to_string())?
            .build(),
    )
    .await
    .map_err(|_| "the bus did not answer in time".to_string())?
    .map_err(|e| format!("cannot connect to the bus: {e}"))?;
    let proxy = zbus::fdo::DBusProxy::new(&conn)
        .await
        .map_err(|e| format!("org.freedesktop.DBus: {e}"))?;
    let _ = shared.dbus.set(proxy);
    let _ = shared.serving.set(conn.clone());
    tokio::spawn(sensors::sampler(shared.clone()));
    tokio::spawn(watch::watcher(shared.clone()));
    tokio::time::timeout(
        BUS_TIMEOUT,
        conn.request_name_with_flags(BUS_NAME, zbus::fdo::RequestNameFlags::DoNotQueue.into()),
    )
    .await
    .map_err(|_| format!("the bus did not answer in time when owning {BUS_NAME}"))?
    .map_err(|e| format!("cannot own {BUS_NAME} on the bus: {e}"))?;
    appmgr_sandbox::sys::malloc_trim();
    journal::sd_notify(&format!("READY=1\nSTATUS=serving {BUS_NAME}"));
    journal::log(
        journal::INFO,
        None,
        None,
        &format!("serving {BUS_NAME} (Gpu1, Sensors1, Bluetooth1)"),
    );
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| e.to_string())?;
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    journal::sd_notify("STOPPING=1");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use appmgr_sandbox::inputs::PlanInput;

    #[test]
    fn a_recent_stamp_never_vouches_and_every_change_is_seen() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("policy.toml");
        let gone = d.path().join("absent");
        std::fs::write(&f, "grant = 1\n").unwrap();
        let inputs = vec![PlanInput::of(&f).unwrap(), PlanInput::of(&gone).unwrap()];
        let mut stamps: Vec<InputStamp> = inputs.iter().map(|i| input_stamp(&i.path)).collect();
        // Just written: its stamp is too recent to vouch, so the digest decides (and the
        // stamp is not kept); the absent path's stamp vouches for its absence.
        assert!(!trusted(&stamps[0]));
        assert!(trusted(&stamps[1]) && stamps[1].is_none());
        assert!(inputs_unchanged(&inputs, &mut stamps));
        assert_eq!(stamps[0], None);
        // The same size within the same second: only the digest can tell.
        std::fs::write(&f, "grant = 2\n").unwrap();
        assert!(!inputs_unchanged(&inputs, &mut stamps));
        std::fs::write(&f, "grant = 1\n").unwrap();
        assert!(inputs_unchanged(&inputs, &mut stamps));
        // A path that was absent appears.
        std::fs::write(&gone, "").unwrap();
        assert!(!inputs_unchanged(&inputs, &mut stamps));
        // An old ctime vouches; a stamp that differs from now does not.
        let old = Some((1, 2, 3, 4, 5, 6, 7));
        assert!(trusted(&old));
        let mut s = vec![old, None];
        std::fs::remove_file(&gone).unwrap();
        assert!(inputs_unchanged(&inputs, &mut s));
    }
}
