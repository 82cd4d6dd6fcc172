//! `org.appmgr.portal.Bluetooth1`: the Bluetooth LE devices and GATT services of an app's
//! `[permissions.bluetooth]` grant, and nothing else, through BlueZ.
//!
//! The portal is a client of `bluetoothd` (`org.bluez`) on a connection of its own, with
//! its own privileges, on the board's adapter only (`[portals.bluetooth] adapter`, read
//! when the portal starts; `hci0` without one). Apps never reach BlueZ: their bus policy
//! opens no `org.bluez`, their seccomp filter keeps `AF_BLUETOOTH` closed, and this
//! interface has no method for adapter power, discoverability, pairing or bonding.
//!
//! - **Scans.** BlueZ keeps one discovery session and one filter per client, so the portal
//!   runs one discovery whose filter is the union of the granted services of every app
//!   scanning now (LE only); a device that advertises none of them is not even reported
//!   by BlueZ. Each sighting is then checked per scanning app (its devices, its services)
//!   and sent to that app's bus connection alone (a unicast `DeviceFound`), listing only
//!   the granted services the device advertises. The discovery stops with the last scan.
//! - **Connections** are held per calling process: `Connect` records a hold, `Disconnect`
//!   or the process's exit releases it, and a device the portal connected is disconnected
//!   when nobody holds it. Reads, writes and notifications need the caller's hold.
//! - **Notifications**: the portal subscribes once per characteristic (`StartNotify`,
//!   refcounted over every app's streams) and writes each value change to every stream of
//!   it as a record: u16 little-endian length, then the value; each record is one `write`
//!   below `PIPE_BUF`, so none is torn. A reader that does not keep up loses records.
//! - **Revocation** ([`crate::watch`]): when a caller exits, or `appmgr reload` leaves its
//!   grant without a role, device or service it uses, its scan stops, its holds are
//!   released and its streams end (EOF), each a journal event.
//!
//! A device is reachable when the grant names its address, or names `*` and the device
//! offers a granted service ([`refusal`]).

use crate::{grants, PortalError, Shared, OBJECT_PATH};
use appmgr_core::journal;
use appmgr_types::{AppId, BluetoothGrant, BtDevice, BtRole, GattUuid, Permissions};
use futures_util::StreamExt;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::time::{Duration, Instant};
use zbus::zvariant::{OwnedObjectPath, OwnedValue, Value};

const BLUEZ: &str = "org.bluez";
const ADAPTER1: &str = "org.bluez.Adapter1";
const DEVICE1: &str = "org.bluez.Device1";
const SERVICE1: &str = "org.bluez.GattService1";
const CHAR1: &str = "org.bluez.GattCharacteristic1";
const PROPERTIES: &str = "org.freedesktop.DBus.Properties";

/// The longest value a characteristic write carries (ATT's limit).
pub const MAX_VALUE_LEN: usize = 512;
/// The most notification streams one app may hold open at once.
pub const MAX_NOTIFY_PER_APP: usize = 32;
/// The adapter when the board profile names none.
pub const DEFAULT_ADAPTER: &str = "hci0";

/// Bounds of BlueZ calls: a read, write or subscription; a connection (BlueZ gives up on
/// an LE connection by itself after some 40 s); services resolving after it.
const CALL_TIMEOUT: Duration = Duration::from_secs(20);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(60);
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(30);
/// At most one `DeviceFound` per device and scan in this time, unless its name or
/// services changed.
const FOUND_INTERVAL: Duration = Duration::from_secs(1);

type Props = HashMap<String, OwnedValue>;
type Ifaces = HashMap<String, Props>;

// ---- grants

/// Why `perms` does not let an app do `role` with device `addr` and, when named, service
/// `service`; `offered` is what the device offers now, when known. `None`: granted.
pub fn refusal(
    perms: &Permissions,
    role: BtRole,
    addr: &BtDevice,
    offered: Option<&BTreeSet<GattUuid>>,
    service: Option<&GattUuid>,
) -> Option<String> {
    if !grants::has_portal(perms, "bluetooth") {
        return Some("the bluetooth portal is not granted".into());
    }
    let g = &perms.bluetooth;
    if !g.roles.contains(&role) {
        return Some(format!("bluetooth role {role} is not granted"));
    }
    if !BtDevice::reaches(&g.devices, addr) {
        return Some(format!("bluetooth device {addr} is not granted"));
    }
    if let (false, Some(o)) = (g.devices.contains(addr), offered) {
        // Reached through `*` only: while it offers a granted service.
        if o.is_disjoint(&g.services) {
            return Some(format!("bluetooth device {addr} offers no granted service"));
        }
    }
    if let Some(sv) = service {
        if !g.services.contains(sv) {
            return Some(format!("bluetooth service {sv} is not granted"));
        }
    }
    None
}

/// Why `perms` does not let an app scan, if it does not.
pub fn scan_refusal(perms: &Permissions) -> Option<String> {
    if !grants::has_portal(perms, "bluetooth") {
        return Some("the bluetooth portal is not granted".into());
    }
    let g = &perms.bluetooth;
    if !g.roles.contains(&BtRole::Scan) {
        return Some("bluetooth role scan is not granted".into());
    }
    if g.devices.is_empty() || g.services.is_empty() {
        return Some("no bluetooth devices or services are granted: nothing to scan for".into());
    }
    None
}

/// The granted services among `offered`, as `DeviceFound` lists them; empty when an app
/// with grant `g` does not see the device at `addr` at all (a scan reports a device only
/// when it advertises a granted service).
pub fn visible_services(
    g: &BluetoothGrant,
    addr: &BtDevice,
    offered: &BTreeSet<GattUuid>,
) -> Vec<String> {
    if !BtDevice::reaches(&g.devices, addr) {
        return Vec::new();
    }
    offered
        .intersection(&g.services)
        .map(|u| u.to_string())
        .collect()
}

fn parse_addr(s: &str) -> Result<BtDevice, PortalError> {
    match s.parse::<BtDevice>() {
        Ok(a @ BtDevice::Addr(_)) => Ok(a),
        Ok(BtDevice::Any) => Err(PortalError::InvalidArgs(
            "a device address is needed, not *".into(),
        )),
        Err(e) => Err(PortalError::InvalidArgs(e.to_string())),
    }
}

fn parse_uuid(s: &str) -> Result<GattUuid, PortalError> {
    s.parse::<GattUuid>()
        .map_err(|e| PortalError::InvalidArgs(e.to_string()))
}

/// BlueZ's object path of device `addr` on adapter object `adapter`.
pub fn device_path(adapter: &str, addr: &BtDevice) -> String {
    format!("{adapter}/dev_{}", addr.to_string().replace(':', "_"))
}

// ---- what the portal knows and holds

/// A device as BlueZ last described it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DevInfo {
    pub addr: Option<BtDevice>,
    pub name: String,
    pub uuids: BTreeSet<GattUuid>,
    /// Set while the current discovery sees it (BlueZ drops it when discovery stops).
    pub rssi: Option<i16>,
    pub connected: bool,
    pub resolved: bool,
}

fn v_str(v: &Value<'_>) -> Option<String> {
    match v {
        Value::Str(s) => Some(s.as_str().to_string()),
        Value::ObjectPath(p) => Some(p.as_str().to_string()),
        Value::Value(b) => v_str(b),
        _ => None,
    }
}

fn v_bool(v: &Value<'_>) -> Option<bool> {
    match v {
        Value::Bool(b) => Some(*b),
        Value::Value(b) => v_bool(b),
        _ => None,
    }
}

fn v_strs(v: &Value<'_>) -> Option<Vec<String>> {
    match v {
        Value::Array(a) => a.inner().iter().map(v_str).collect(),
        Value::Value(b) => v_strs(b),
        _ => None,
    }
}

fn v_bytes(v: &Value<'_>) -> Option<Vec<u8>> {
    match v {
        Value::Array(a) => a
            .inner()
            .iter()
            .map(|x| match x {
                Value::U8(b) => Some(*b),
                _ => None,
            })
            .collect(),
        Value::Value(b) => v_bytes(b),
        _ => None,
    }
}

fn v_uuid(p: &Props) -> Option<GattUuid> {
    p.get("UUID")
        .and_then(|v| v_str(v))
        .and_then(|s| s.parse().ok())
}

impl DevInfo {
    /// Takes in changed properties and the names of invalidated ones; whether anything a
    /// scan reports (name, services, RSSI) changed.
    pub fn apply(&mut self, p: &Props, invalidated: &[String]) -> bool {
        let before = (self.name.clone(), self.uuids.clone(), self.rssi);
        if let Some(a) = p
            .get("Address")
            .and_then(|v| v_str(v))
            .and_then(|a| a.parse().ok())
        {
            self.addr = Some(a);
        }
        if let Some(n) = p.get("Name").and_then(|v| v_str(v)) {
            self.name = n;
        }
        if let Some(u) = p.get("UUIDs").and_then(|v| v_strs(v)) {
            self.uuids = u.iter().filter_map(|x| x.parse().ok()).collect();
        }
        match p.get("RSSI") {
            Some(v) => {
                if let Value::I16(r) = &**v {
                    self.rssi = Some(*r);
                }
            }
            None if invalidated.iter().any(|x| x == "RSSI") => self.rssi = None,
            None => {}
        }
        if let Some(c) = p.get("Connected").and_then(|v| v_bool(v)) {
            self.connected = c;
        }
        if let Some(r) = p.get("ServicesResolved").and_then(|v| v_bool(v)) {
            self.resolved = r;
        }
        before != (self.name.clone(), self.uuids.clone(), self.rssi)
    }

    fn from_props(p: &Props) -> DevInfo {
        let mut d = DevInfo::default();
        d.apply(p, &[]);
        d
    }
}

/// What was last sent to a scan about a device.
struct Sent {
    at: Instant,
    name: String,
    services: Vec<String>,
    rssi: i16,
}

/// An app's scan: its bus connection gets the sightings.
struct Scan {
    app: AppId,
    sender: String,
    pid: u32,
    pidfd: OwnedFd,
    grant: BluetoothGrant,
    sent: HashMap<String, Sent>,
}

/// A process's hold on a connection.
struct Hold {
    app: AppId,
    pid: u32,
    pidfd: OwnedFd,
    addr: BtDevice,
    path: String,
    offered: BTreeSet<GattUuid>,
}

/// One notification stream.
struct NotifyStream {
    id: u64,
    app: AppId,
    pid: u32,
    pidfd: OwnedFd,
    addr: BtDevice,
    dev: String,
    service: GattUuid,
    chr: GattUuid,
    char_path: String,
    pipe: OwnedFd,
    written: u64,
    dropped: u64,
}

/// The Bluetooth portal's state.
#[derive(Default)]
pub struct Bt {
    /// BlueZ's adapter object, `/org/bluez/hciN`; empty until the portal has read it.
    adapter: String,
    scans: Vec<Scan>,
    holds: Vec<Hold>,
    notifies: Vec<NotifyStream>,
    devices: BTreeMap<String, DevInfo>,
    /// Whether `devices` was filled from BlueZ's object tree (then signals keep it).
    loaded: bool,
    /// Devices the portal connected (and so disconnects when nobody holds them).
    connected_by_portal: BTreeSet<String>,
    /// (device path, service, characteristic) → the characteristic's object path.
    chars: HashMap<(String, GattUuid, GattUuid), String>,
    /// The services of the running discovery's filter; `None`: no discovery.
    discovering: Option<BTreeSet<GattUuid>>,
    /// Characteristics the portal is subscribed to (`StartNotify` and a match rule for
    /// their value changes): exactly those with a stream, give or take a cleanup.
    subscribed: BTreeSet<String>,
    next_id: u64,
}

/// BlueZ calls to make after the state changed (outside of its lock).
#[derive(Default)]
struct Cleanup {
    stop_notify: Vec<String>,
    disconnect: Vec<String>,
    rescan: bool,
}

impl Bt {
    /// Whether anything is open that a caller's exit or a revocation must end.
    pub fn busy(&self) -> bool {
        !self.scans.is_empty() || !self.holds.is_empty() || !self.notifies.is_empty()
    }

    /// The apps holding anything.
    pub fn apps(&self) -> BTreeSet<AppId> {
        let mut v: BTreeSet<AppId> = self.scans.iter().map(|x| x.app.clone()).collect();
        v.extend(self.holds.iter().map(|x| x.app.clone()));
        v.extend(self.notifies.iter().map(|x| x.app.clone()));
        v
    }

    /// Ends notification stream `id` (its reader sees EOF), journaled as `what`.
    fn end_notify(&mut self, id: u64, priority: u8, what: &str, c: &mut Cleanup) {
        let Some(i) = self.notifies.iter().position(|x| x.id == id) else {
            return;
        };
        let x = self.notifies.swap_remove(i);
        journal::log(
            priority,
            Some(journal::Event::PortalRevoked),
            Some(x.app.as_str()),
            &format!(
                "bluetooth: notification stream {id} of {} {} {} of pid {} {what} ({} records, {} dropped)",
                x.addr, x.service, x.chr, x.pid, x.written, x.dropped
            ),
        );
        if !self.notifies.iter().any(|y| y.char_path == x.char_path) {
            c.stop_notify.push(x.char_path);
        }
    }

    /// Removes hold `i`, and the streams of its process on its device.
    fn release(&mut self, i: usize, priority: u8, what: &str, c: &mut Cleanup) {
        let h = self.holds.swap_remove(i);
        journal::log(
            priority,
            Some(journal::Event::PortalRevoked),
            Some(h.app.as_str()),
            &format!(
                "bluetooth: the connection of pid {} to {} {what}",
                h.pid, h.addr
            ),
        );
        let ids: Vec<u64> = self
            .notifies
            .iter()
            .filter(|x| x.pid == h.pid && x.app == h.app && x.dev == h.path)
            .map(|x| x.id)
            .collect();
        for id in ids {
            self.end_notify(id, priority, "ended: its connection was released", c);
        }
        // Disconnected by the cleanup, which checks again that nobody holds it then.
        if !self.holds.iter().any(|y| y.path == h.path)
            && self.connected_by_portal.contains(&h.path)
        {
            c.disconnect.push(h.path);
        }
    }

    fn end_scan(&mut self, i: usize, priority: u8, what: &str, c: &mut Cleanup) {
        let x = self.scans.swap_remove(i);
        journal::log(
            priority,
            Some(journal::Event::PortalRevoked),
            Some(x.app.as_str()),
            &format!("bluetooth: the scan of pid {} {what}", x.pid),
        );
        c.rescan = true;
    }

    /// The services the discovery must look for now.
    fn wanted(&self) -> BTreeSet<GattUuid> {
        self.scans
            .iter()
            .flat_map(|x| x.grant.services.iter().copied())
            .collect()
    }

    /// The `DeviceFound` signals due for device `path` (to every scan, or to `only`).
    fn sightings(&mut self, path: &str, only: Option<&str>) -> Vec<Found> {
        let Some(d) = self.devices.get(path) else {
            return Vec::new();
        };
        let (Some(addr), Some(rssi)) = (d.addr, d.rssi) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for sc in self.scans.iter_mut() {
            if only.is_some_and(|o| o != sc.sender) {
                continue;
            }
            let services = visible_services(&sc.grant, &addr, &d.uuids);
            if services.is_empty() {
                continue;
            }
            let due = match sc.sent.get(path) {
                None => true,
                Some(s) => {
                    s.name != d.name
                        || s.services != services
                        || (s.rssi != rssi && s.at.elapsed() >= FOUND_INTERVAL)
                }
            };
            if !due {
                continue;
            }
            sc.sent.insert(
                path.to_string(),
                Sent {
                    at: Instant::now(),
                    name: d.name.clone(),
                    services: services.clone(),
                    rssi,
                },
            );
            out.push(Found {
                dest: sc.sender.clone(),
                address: addr.to_string(),
                name: d.name.clone(),
                services,
                rssi,
            });
        }
        out
    }

    /// Forgets what BlueZ told (it went away or restarted): streams end, holds go.
    fn reset(&mut self, why: &str, c: &mut Cleanup) {
        let ids: Vec<u64> = self.notifies.iter().map(|x| x.id).collect();
        for id in ids {
            self.end_notify(id, journal::WARNING, why, c);
        }
        while !self.holds.is_empty() {
            self.release(0, journal::WARNING, why, c);
        }
        c.stop_notify.clear();
        c.disconnect.clear();
        self.connected_by_portal.clear();
        self.devices.clear();
        self.chars.clear();
        self.loaded = false;
        self.discovering = None;
        self.subscribed.clear();
        c.rescan = !self.scans.is_empty();
    }

    /// A device disconnected or went away: its streams end, its holds go.
    fn device_gone(&mut self, path: &str, what: &str, c: &mut Cleanup) {
        let ids: Vec<u64> = self
            .notifies
            .iter()
            .filter(|x| x.dev == path)
            .map(|x| x.id)
            .collect();
        for id in ids {
            self.end_notify(id, journal::INFO, what, c);
        }
        while let Some(i) = self.holds.iter().position(|h| h.path == path) {
            self.release(i, journal::INFO, what, c);
        }
        // Nothing to disconnect on a device that is gone (its subscriptions' match rules
        // still go, in the cleanup).
        c.disconnect.retain(|p| p != path);
        self.connected_by_portal.remove(path);
        let prefix = format!("{path}/");
        self.chars.retain(|k, _| k.0 != path);
        self.chars.retain(|_, v| !v.starts_with(&prefix));
    }

    /// A notification of characteristic `path`: to every stream of it.
    fn deliver(&mut self, path: &str, value: &[u8], c: &mut Cleanup) {
        let len = value.len().min(MAX_VALUE_LEN);
        let mut rec = Vec::with_capacity(2 + len);
        rec.extend_from_slice(&(len as u16).to_le_bytes());
        rec.extend_from_slice(&value[..len]);
        let mut gone = Vec::new();
        for x in self.notifies.iter_mut().filter(|x| x.char_path == path) {
            match rustix::io::write(&x.pipe, &rec) {
                Ok(_) => x.written += 1,
                Err(rustix::io::Errno::AGAIN) => x.dropped += 1,
                Err(_) => gone.push(x.id),
            }
        }
        for id in gone {
            self.end_notify(id, journal::INFO, "ended: its reader closed it", c);
        }
    }
}

/// One `DeviceFound` to send.
struct Found {
    dest: String,
    address: String,
    name: String,
    services: Vec<String>,
    rssi: i16,
}

fn lock(s: &Shared) -> std::sync::MutexGuard<'_, Bt> {
    s.bt.lock().unwrap_or_else(|p| p.into_inner())
}

// ---- BlueZ

/// The portal's BlueZ client connection, made (and BlueZ's signals followed) at the first
/// Bluetooth call. BlueZ is reached on a connection of its own: its discovery and
/// notification sessions belong to that client, and its calls may take longer than the
/// serving connection's method timeout (a connection), each bounded by its own instead.
async fn bluez(s: &Arc<Shared>) -> Result<zbus::Connection, PortalError> {
    s.bluez
        .get_or_try_init(|| async {
            let b = match &s.config.bus_address {
                Some(a) => zbus::connection::Builder::address(a.as_str()),
                None => zbus::connection::Builder::system(),
            }
            .map_err(|e| PortalError::NotAvailable(format!("no bus for BlueZ: {e}")))?;
            let c = tokio::time::timeout(crate::BUS_TIMEOUT, b.max_queued(4096).build())
                .await
                .map_err(|_| {
                    PortalError::NotAvailable("the bus did not answer in time (BlueZ)".into())
                })?
                .map_err(|e| PortalError::NotAvailable(format!("no bus for BlueZ: {e}")))?;
            follow(s.clone(), &c).await;
            Ok(c)
        })
        .await
        .cloned()
}

/// The BlueZ connection if a Bluetooth call made it (for cleanups: without it there is
/// nothing to clean up).
fn bluez_now(s: &Shared) -> Result<zbus::Connection, PortalError> {
    s.bluez
        .get()
        .cloned()
        .ok_or_else(|| PortalError::NotAvailable("the portal has no connection to BlueZ".into()))
}

/// Calls BlueZ's `iface.method` on `path`, bounded by `t`; BlueZ's errors as the
/// portal's.
async fn call<B>(
    conn: &zbus::Connection,
    path: &str,
    iface: &str,
    method: &str,
    body: &B,
    t: Duration,
) -> Result<zbus::Message, PortalError>
where
    B: serde::Serialize + zbus::zvariant::DynamicType,
{
    let r = tokio::time::timeout(
        t,
        conn.call_method(Some(BLUEZ), path, Some(iface), method, body),
    )
    .await;
    match r {
        Err(_) => Err(PortalError::Failed(format!(
            "BlueZ did not answer {method} within {} s",
            t.as_secs()
        ))),
        Ok(Ok(m)) => Ok(m),
        Ok(Err(zbus::Error::MethodError(name, msg, _))) => {
            let msg = msg.unwrap_or_default();
            Err(match name.as_str() {
                "org.freedesktop.DBus.Error.ServiceUnknown"
                | "org.freedesktop.DBus.Error.NameHasNoOwner" => {
                    PortalError::NotAvailable("BlueZ (org.bluez) is not running".into())
                }
                "org.freedesktop.DBus.Error.UnknownObject"
                | "org.freedesktop.DBus.Error.UnknownMethod" => {
                    PortalError::NotAvailable(format!("BlueZ has no {path}"))
                }
                n => PortalError::Failed(format!("BlueZ {method}: {n}: {msg}")),
            })
        }
        Ok(Err(e)) => Err(PortalError::Failed(format!("BlueZ {method}: {e}"))),
    }
}

fn body<T>(m: &zbus::Message, what: &str) -> Result<T, PortalError>
where
    T: for<'d> serde::Deserialize<'d> + zbus::zvariant::Type,
{
    m.body()
        .deserialize::<T>()
        .map_err(|e| PortalError::Failed(format!("BlueZ {what}: unexpected reply: {e}")))
}

async fn device_props(conn: &zbus::Connection, path: &str) -> Result<DevInfo, PortalError> {
    let m = call(conn, path, PROPERTIES, "GetAll", &(DEVICE1,), CALL_TIMEOUT).await?;
    Ok(DevInfo::from_props(&body::<Props>(&m, "GetAll")?))
}

type Objects = HashMap<OwnedObjectPath, Ifaces>;

async fn managed_objects(conn: &zbus::Connection) -> Result<Objects, PortalError> {
    let m = call(
        conn,
        "/",
        "org.freedesktop.DBus.ObjectManager",
        "GetManagedObjects",
        &(),
        CALL_TIMEOUT,
    )
    .await?;
    body::<Objects>(&m, "GetManagedObjects")
}

/// The object of characteristic `chr` in service `svc` of device `dev`.
async fn char_path(
    s: &Shared,
    conn: &zbus::Connection,
    dev: &str,
    addr: &BtDevice,
    svc: GattUuid,
    chr: GattUuid,
) -> Result<String, PortalError> {
    let key = (dev.to_string(), svc, chr);
    if let Some(p) = lock(s).chars.get(&key) {
        return Ok(p.clone());
    }
    let objs = managed_objects(conn).await?;
    let prefix = format!("{dev}/");
    let services: BTreeSet<&str> = objs
        .iter()
        .filter(|(p, i)| {
            p.as_str().starts_with(&prefix) && i.get(SERVICE1).and_then(v_uuid) == Some(svc)
        })
        .map(|(p, _)| p.as_str())
        .collect();
    let found = objs
        .iter()
        .filter(|(_, i)| {
            i.get(CHAR1).is_some_and(|c| {
                v_uuid(c) == Some(chr)
                    && c.get("Service")
                        .and_then(|v| v_str(v))
                        .is_some_and(|sp| services.contains(sp.as_str()))
            })
        })
        .map(|(p, _)| p.as_str().to_string())
        .min();
    let path = found.ok_or_else(|| {
        PortalError::NotAvailable(format!(
            "{addr} has no characteristic {chr} in service {svc}"
        ))
    })?;
    lock(s).chars.insert(key, path.clone());
    Ok(path)
}

/// Makes BlueZ's discovery match the scans now: the union of their services, started,
/// narrowed or stopped.
async fn sync_discovery(s: &Shared) -> Result<(), PortalError> {
    let _one = s.bt_discovery.lock().await;
    let conn = bluez_now(s)?;
    let (want, now, adapter) = {
        let b = lock(s);
        (b.wanted(), b.discovering.clone(), b.adapter.clone())
    };
    if now.as_ref() == Some(&want) || (want.is_empty() && now.is_none()) {
        return Ok(());
    }
    if want.is_empty() {
        lock(s).discovering = None;
        return call(
            &conn,
            &adapter,
            ADAPTER1,
            "StopDiscovery",
            &(),
            CALL_TIMEOUT,
        )
        .await
        .map(drop);
    }
    let uuids: Vec<String> = want.iter().map(|u| u.full()).collect();
    let mut filter: HashMap<&str, Value<'_>> = HashMap::new();
    filter.insert("UUIDs", Value::from(uuids));
    filter.insert("Transport", Value::from("le"));
    call(
        &conn,
        &adapter,
        ADAPTER1,
        "SetDiscoveryFilter",
        &(filter,),
        CALL_TIMEOUT,
    )
    .await?;
    if now.is_none() {
        call(
            &conn,
            &adapter,
            ADAPTER1,
            "StartDiscovery",
            &(),
            CALL_TIMEOUT,
        )
        .await?;
    }
    lock(s).discovering = Some(want);
    Ok(())
}

/// Makes the BlueZ calls a state change left to do, in the background.
fn spawn_cleanup(s: &Arc<Shared>, c: Cleanup) {
    if c.stop_notify.is_empty() && c.disconnect.is_empty() && !c.rescan {
        return;
    }
    let s = s.clone();
    tokio::spawn(async move {
        let Ok(conn) = bluez_now(&s) else {
            return;
        };
        if !c.stop_notify.is_empty() {
            let _one = s.bt_notify.lock().await;
            for p in &c.stop_notify {
                // A stream may have started on it since (it found it subscribed).
                let unused = {
                    let mut b = lock(&s);
                    let unused = !b.notifies.iter().any(|x| x.char_path == *p);
                    unused && b.subscribed.remove(p)
                };
                if unused {
                    let _ = call(&conn, p, CHAR1, "StopNotify", &(), CALL_TIMEOUT).await;
                    let _ = value_rule(&conn, p, false).await;
                }
            }
        }
        let _one = if c.disconnect.is_empty() {
            None
        } else {
            Some(s.bt_conn.lock().await)
        };
        for p in &c.disconnect {
            // A Connect since the release holds it again (and found it connected).
            let unheld = {
                let mut b = lock(&s);
                !b.holds.iter().any(|h| h.path == *p) && b.connected_by_portal.remove(p)
            };
            if !unheld {
                continue;
            }
            if let Err(e) = call(&conn, p, DEVICE1, "Disconnect", &(), CALL_TIMEOUT).await {
                journal::log(
                    journal::WARNING,
                    None,
                    None,
                    &format!("bluetooth: cannot disconnect {p}: {e:?}"),
                );
            }
        }
        if c.rescan {
            if let Err(e) = sync_discovery(&s).await {
                journal::log(
                    journal::WARNING,
                    None,
                    None,
                    &format!("bluetooth: cannot update the discovery: {e:?}"),
                );
            }
        }
    });
}

/// Adds (or removes) the match rule for the value changes of characteristic `path`: the
/// portal hears a characteristic's values only while it streams them, not every read's.
async fn value_rule(conn: &zbus::Connection, path: &str, add: bool) -> Result<(), PortalError> {
    let rule = format!(
        "type='signal',sender='{BLUEZ}',interface='{PROPERTIES}',member='PropertiesChanged',path='{path}'"
    );
    let method = if add { "AddMatch" } else { "RemoveMatch" };
    tokio::time::timeout(
        CALL_TIMEOUT,
        conn.call_method(
            Some("org.freedesktop.DBus"),
            "/org/freedesktop/DBus",
            Some("org.freedesktop.DBus"),
            method,
            &(rule,),
        ),
    )
    .await
    .map_err(|_| PortalError::Failed(format!("the bus did not answer {method}")))?
    .map_err(|e| PortalError::Failed(format!("{method}: {e}")))
    .map(drop)
}

/// Sends `DeviceFound` signals, each to its scan's connection only.
async fn send(s: &Shared, found: Vec<Found>) {
    let Some(conn) = s.serving.get() else {
        return;
    };
    for f in found {
        let Ok(dest) = zbus::names::BusName::try_from(f.dest.as_str()) else {
            continue;
        };
        let Ok(e) = zbus::object_server::SignalEmitter::new(conn, OBJECT_PATH) else {
            continue;
        };
        let e = e.set_destination(dest);
        let _ = tokio::time::timeout(
            CALL_TIMEOUT,
            Bluetooth::device_found(&e, &f.address, &f.name, f.services, f.rssi),
        )
        .await;
    }
}

/// The adapter object the board profile names.
fn adapter_path(s: &Shared) -> String {
    let named = appmgr_core::config::HostConfig::load(&s.config.config_dir)
        .ok()
        .and_then(|h| h.board(&s.config.config_dir).ok().flatten())
        .and_then(|b| b.bluetooth)
        .map(|b| b.adapter);
    format!("/org/bluez/{}", named.as_deref().unwrap_or(DEFAULT_ADAPTER))
}

/// Follows BlueZ's signals on the portal's client connection for as long as it lasts
/// (subscribed before this returns, so the first call misses none): devices appearing,
/// changing and going, characteristic values (notifications), and `bluetoothd` itself
/// going away.
async fn follow(s: Arc<Shared>, conn: &zbus::Connection) {
    lock(&s).adapter = adapter_path(&s);
    let mut stream = zbus::MessageStream::from(conn);
    // Devices and GATT objects coming and going, devices' properties, BlueZ itself;
    // characteristics' values only while streamed (`value_rule`).
    let rules = [
        "type='signal',sender='org.bluez',interface='org.freedesktop.DBus.ObjectManager'",
        "type='signal',sender='org.bluez',interface='org.freedesktop.DBus.Properties',member='PropertiesChanged',arg0='org.bluez.Device1'",
        "type='signal',sender='org.freedesktop.DBus',interface='org.freedesktop.DBus',member='NameOwnerChanged',arg0='org.bluez'",
    ];
    match zbus::fdo::DBusProxy::new(conn).await {
        Ok(p) => {
            for r in rules {
                let added = match zbus::MatchRule::try_from(r) {
                    Ok(rule) => p.add_match_rule(rule).await.map_err(|e| e.to_string()),
                    Err(e) => Err(e.to_string()),
                };
                if let Err(e) = added {
                    journal::log(
                        journal::WARNING,
                        None,
                        None,
                        &format!("bluetooth: cannot follow BlueZ ({r}): {e}"),
                    );
                }
            }
        }
        Err(e) => journal::log(
            journal::WARNING,
            None,
            None,
            &format!("bluetooth: cannot follow BlueZ: {e}"),
        ),
    }
    tokio::spawn(async move {
        while let Some(m) = stream.next().await {
            let Ok(m) = m else { continue };
            if m.message_type() != zbus::message::Type::Signal {
                continue;
            }
            let (found, cleanup) = handle(&s, &m);
            spawn_cleanup(&s, cleanup);
            if !found.is_empty() {
                send(&s, found).await;
            }
        }
    });
}

/// Applies one signal to the state.
fn handle(s: &Shared, m: &zbus::Message) -> (Vec<Found>, Cleanup) {
    let h = m.header();
    let member = h
        .member()
        .map(|x| x.as_str().to_string())
        .unwrap_or_default();
    let path = h.path().map(|x| x.as_str().to_string()).unwrap_or_default();
    let mut c = Cleanup::default();
    let mut found = Vec::new();
    let mut b = lock(s);
    let on_adapter = |p: &str, b: &Bt| {
        !b.adapter.is_empty()
            && p.strip_prefix(&b.adapter)
                .and_then(|r| r.strip_prefix("/dev_"))
                .is_some_and(|r| !r.contains('/'))
    };
    match member.as_str() {
        "NameOwnerChanged" => {
            if let Ok((name, _, _)) = m.body().deserialize::<(String, String, String)>() {
                if name == BLUEZ {
                    b.reset("ended: BlueZ went away", &mut c);
                }
            }
        }
        "InterfacesAdded" => {
            if let Ok((p, ifaces)) = m.body().deserialize::<(OwnedObjectPath, Ifaces)>() {
                let p = p.as_str().to_string();
                if let (Some(props), true) = (ifaces.get(DEVICE1), on_adapter(&p, &b)) {
                    b.devices.insert(p.clone(), DevInfo::from_props(props));
                    found = b.sightings(&p, None);
                }
            }
        }
        "InterfacesRemoved" => {
            if let Ok((p, ifaces)) = m.body().deserialize::<(OwnedObjectPath, Vec<String>)>() {
                let p = p.as_str().to_string();
                if ifaces.iter().any(|i| i == DEVICE1) && b.devices.remove(&p).is_some() {
                    b.device_gone(&p, "ended: the device went away", &mut c);
                }
                if ifaces.iter().any(|i| i == CHAR1 || i == SERVICE1) {
                    let prefix = format!("{p}/");
                    b.chars.retain(|_, v| *v != p && !v.starts_with(&prefix));
                    let ids: Vec<u64> = b
                        .notifies
                        .iter()
                        .filter(|x| x.char_path == p || x.char_path.starts_with(&prefix))
                        .map(|x| x.id)
                        .collect();
                    for id in ids {
                        b.end_notify(
                            id,
                            journal::INFO,
                            "ended: the characteristic went away",
                            &mut c,
                        );
                    }
                }
            }
        }
        "PropertiesChanged" => {
            let Ok((iface, changed, invalidated)) =
                m.body().deserialize::<(String, Props, Vec<String>)>()
            else {
                return (found, c);
            };
            if iface == CHAR1 {
                if let Some(v) = changed.get("Value").and_then(|v| v_bytes(v)) {
                    b.deliver(&path, &v, &mut c);
                }
            } else if iface == DEVICE1 && on_adapter(&path, &b) {
                let was_connected = b.devices.get(&path).is_some_and(|d| d.connected);
                let d = b.devices.entry(path.clone()).or_default();
                let reported = d.apply(&changed, &invalidated);
                let (connected, known) = (d.connected, d.addr.is_some());
                if was_connected && !connected {
                    b.device_gone(&path, "ended: the device disconnected", &mut c);
                }
                if reported && known {
                    found = b.sightings(&path, None);
                }
            }
        }
        _ => {}
    }
    (found, c)
}

/// Fills the device cache from BlueZ's object tree once (signals keep it after).
async fn load_devices(s: &Shared, conn: &zbus::Connection) -> Result<(), PortalError> {
    if lock(s).loaded {
        return Ok(());
    }
    let objs = managed_objects(conn).await?;
    let mut b = lock(s);
    let prefix = format!("{}/dev_", b.adapter);
    for (p, i) in &objs {
        let p = p.as_str();
        if let (Some(props), true) = (
            i.get(DEVICE1),
            p.strip_prefix(&prefix).is_some_and(|r| !r.contains('/')),
        ) {
            b.devices
                .entry(p.to_string())
                .or_default()
                .apply(props, &[]);
        }
    }
    b.loaded = true;
    Ok(())
}

// ---- revocation (from crate::watch)

/// Ends what exited callers held.
pub fn reap_exited(s: &Arc<Shared>) {
    let mut c = Cleanup::default();
    let mut b = lock(s);
    while let Some(i) = b
        .scans
        .iter()
        .position(|x| crate::identity::exited(&x.pidfd))
    {
        b.end_scan(i, journal::INFO, "ended: its caller exited", &mut c);
    }
    while let Some(i) = b
        .holds
        .iter()
        .position(|x| crate::identity::exited(&x.pidfd))
    {
        b.release(i, journal::INFO, "was released: its caller exited", &mut c);
    }
    let ids: Vec<u64> = b
        .notifies
        .iter()
        .filter(|x| crate::identity::exited(&x.pidfd))
        .map(|x| x.id)
        .collect();
    for id in ids {
        b.end_notify(id, journal::INFO, "closed: its caller exited", &mut c);
    }
    drop(b);
    spawn_cleanup(s, c);
}

/// Checks every scan, hold and stream against its app's grant now (`granted`).
pub fn recheck(s: &Arc<Shared>, granted: &dyn Fn(&AppId) -> Permissions) {
    let mut c = Cleanup::default();
    let mut b = lock(s);
    let mut i = 0;
    while i < b.scans.len() {
        let p = granted(&b.scans[i].app);
        match scan_refusal(&p) {
            Some(why) => b.end_scan(i, journal::NOTICE, &format!("revoked: {why}"), &mut c),
            None => {
                if b.scans[i].grant != p.bluetooth {
                    b.scans[i].grant = p.bluetooth;
                    b.scans[i].sent.clear();
                    c.rescan = true;
                }
                i += 1;
            }
        }
    }
    let mut i = 0;
    while i < b.holds.len() {
        let h = &b.holds[i];
        match refusal(
            &granted(&h.app),
            BtRole::Connect,
            &h.addr,
            Some(&h.offered),
            None,
        ) {
            Some(why) => b.release(i, journal::NOTICE, &format!("was revoked: {why}"), &mut c),
            None => i += 1,
        }
    }
    let revoked: Vec<(u64, String)> = b
        .notifies
        .iter()
        .filter_map(|x| {
            refusal(
                &granted(&x.app),
                BtRole::Notify,
                &x.addr,
                None,
                Some(&x.service),
            )
            .map(|w| (x.id, w))
        })
        .collect();
    for (id, why) in revoked {
        b.end_notify(id, journal::NOTICE, &format!("revoked: {why}"), &mut c);
    }
    drop(b);
    spawn_cleanup(s, c);
}

// ---- the interface

pub struct Bluetooth {
    pub s: Arc<Shared>,
}

impl Bluetooth {
    /// The caller's hold on `addr`: the device's path and what it offered.
    fn held(&self, app: &AppId, pid: u32, addr: &BtDevice) -> Result<String, PortalError> {
        lock(&self.s)
            .holds
            .iter()
            .find(|h| h.app == *app && h.pid == pid && h.addr == *addr)
            .map(|h| h.path.clone())
            .ok_or_else(|| {
                PortalError::NotAvailable(format!(
                    "{addr} is not connected for this caller: call Connect first"
                ))
            })
    }

    /// The common checks of a characteristic call: the caller, the role, the device,
    /// the service, its hold; then the characteristic's object.
    async fn characteristic(
        &self,
        hdr: &zbus::message::Header<'_>,
        what: &str,
        role: BtRole,
        (address, service, characteristic): (&str, &str, &str),
    ) -> Result<
        (
            crate::identity::AppCaller,
            BtDevice,
            String,
            zbus::Connection,
        ),
        PortalError,
    > {
        let addr = parse_addr(address)?;
        let svc = parse_uuid(service)?;
        let chr = parse_uuid(characteristic)?;
        let (c, perms) = self.s.granted(hdr, what, "bluetooth").await?;
        if let Some(why) = refusal(&perms, role, &addr, None, Some(&svc)) {
            return Err(self.s.denied(&c.app, format!("{}: {why}", c.app)));
        }
        let dev = self.held(&c.app, c.pid, &addr)?;
        let conn = bluez(&self.s).await?;
        let path = char_path(&self.s, &conn, &dev, &addr, svc, chr).await?;
        Ok((c, addr, path, conn))
    }
}

#[zbus::interface(name = "org.appmgr.portal.Bluetooth1")]
impl Bluetooth {
    async fn start_scan(
        &self,
        #[zbus(header)] hdr: zbus::message::Header<'_>,
    ) -> Result<(), PortalError> {
        let (c, perms) = self
            .s
            .granted(&hdr, "Bluetooth1.StartScan", "bluetooth")
            .await?;
        if let Some(why) = scan_refusal(&perms) {
            return Err(self.s.denied(&c.app, format!("{}: {why}", c.app)));
        }
        let sender = hdr
            .sender()
            .map(|x| x.to_string())
            .ok_or_else(|| PortalError::InvalidArgs("a call without a sender".into()))?;
        let conn = bluez(&self.s).await?;
        {
            let mut b = lock(&self.s);
            b.scans.retain(|x| x.sender != sender);
            b.scans.push(Scan {
                app: c.app.clone(),
                sender: sender.clone(),
                pid: c.pid,
                pidfd: c.pidfd,
                grant: perms.bluetooth.clone(),
                sent: HashMap::new(),
            });
        }
        self.s.changed.notify_waiters();
        let started = async {
            load_devices(&self.s, &conn).await?;
            sync_discovery(&self.s).await
        }
        .await;
        if let Err(e) = started {
            lock(&self.s).scans.retain(|x| x.sender != sender);
            let _ = sync_discovery(&self.s).await;
            return Err(e);
        }
        journal::log(
            journal::INFO,
            Some(journal::Event::PortalGranted),
            Some(c.app.as_str()),
            &format!(
                "bluetooth: pid {} of {} scans for {}",
                c.pid,
                c.app,
                perms
                    .bluetooth
                    .services
                    .iter()
                    .map(|u| u.to_string())
                    .collect::<Vec<_>>()
                    .join(",")
            ),
        );
        // Devices the running discovery sees already.
        let found = {
            let mut b = lock(&self.s);
            let paths: Vec<String> = b.devices.keys().cloned().collect();
            paths
                .iter()
                .flat_map(|p| b.sightings(p, Some(&sender)))
                .collect::<Vec<_>>()
        };
        send(&self.s, found).await;
        Ok(())
    }

    async fn stop_scan(
        &self,
        #[zbus(header)] hdr: zbus::message::Header<'_>,
    ) -> Result<(), PortalError> {
        self.s
            .granted(&hdr, "Bluetooth1.StopScan", "bluetooth")
            .await?;
        let sender = hdr.sender().map(|x| x.to_string()).unwrap_or_default();
        let mut cl = Cleanup::default();
        {
            let mut b = lock(&self.s);
            if let Some(i) = b.scans.iter().position(|x| x.sender == sender) {
                b.end_scan(i, journal::INFO, "ended: StopScan", &mut cl);
            }
        }
        if self.s.bluez.get().is_none() {
            return Ok(());
        }
        sync_discovery(&self.s).await
    }

    /// A reachable device was seen by a scan of this caller.
    #[zbus(signal)]
    async fn device_found(
        emitter: &zbus::object_server::SignalEmitter<'_>,
        address: &str,
        name: &str,
        services: Vec<String>,
        rssi: i16,
    ) -> zbus::Result<()>;

    async fn connect(
        &self,
        #[zbus(header)] hdr: zbus::message::Header<'_>,
        address: String,
    ) -> Result<(), PortalError> {
        let addr = parse_addr(&address)?;
        let (c, perms) = self
            .s
            .granted(&hdr, "Bluetooth1.Connect", "bluetooth")
            .await?;
        if let Some(why) = refusal(&perms, BtRole::Connect, &addr, None, None) {
            return Err(self.s.denied(&c.app, format!("{}: {why}", c.app)));
        }
        let conn = bluez(&self.s).await?;
        let adapter = lock(&self.s).adapter.clone();
        let path = device_path(&adapter, &addr);
        let _one = self.s.bt_conn.lock().await;
        let mut info = device_props(&conn, &path).await.map_err(|e| match e {
            PortalError::NotAvailable(m) if m.starts_with("BlueZ has no ") => {
                PortalError::NotAvailable(format!(
                    "{addr} is not known to BlueZ on {adapter}: scan for it first"
                ))
            }
            e => e,
        })?;
        if let Some(why) = refusal(&perms, BtRole::Connect, &addr, Some(&info.uuids), None) {
            return Err(self.s.denied(&c.app, format!("{}: {why}", c.app)));
        }
        if !(info.connected && info.resolved) {
            let r = call(&conn, &path, DEVICE1, "Connect", &(), CONNECT_TIMEOUT).await;
            match r {
                Ok(_) => {}
                Err(PortalError::Failed(m)) if m.contains("AlreadyConnected") => {}
                Err(e) => return Err(e),
            }
            if !info.connected {
                lock(&self.s).connected_by_portal.insert(path.clone());
            }
            let t0 = Instant::now();
            loop {
                info = device_props(&conn, &path).await?;
                if info.connected && info.resolved {
                    break;
                }
                if t0.elapsed() > RESOLVE_TIMEOUT {
                    return Err(PortalError::Failed(format!(
                        "the services of {addr} did not resolve within {} s",
                        RESOLVE_TIMEOUT.as_secs()
                    )));
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        {
            let mut b = lock(&self.s);
            if !b
                .holds
                .iter()
                .any(|h| h.app == c.app && h.pid == c.pid && h.addr == addr)
            {
                b.holds.push(Hold {
                    app: c.app.clone(),
                    pid: c.pid,
                    pidfd: c.pidfd,
                    addr,
                    path,
                    offered: info.uuids,
                });
            }
        }
        self.s.changed.notify_waiters();
        journal::log(
            journal::INFO,
            Some(journal::Event::PortalGranted),
            Some(c.app.as_str()),
            &format!("bluetooth: pid {} of {} connected to {addr}", c.pid, c.app),
        );
        Ok(())
    }

    async fn disconnect(
        &self,
        #[zbus(header)] hdr: zbus::message::Header<'_>,
        address: String,
    ) -> Result<(), PortalError> {
        let addr = parse_addr(&address)?;
        let (c, _) = self
            .s
            .granted(&hdr, "Bluetooth1.Disconnect", "bluetooth")
            .await?;
        let mut cl = Cleanup::default();
        {
            let mut b = lock(&self.s);
            let i = b
                .holds
                .iter()
                .position(|h| h.app == c.app && h.pid == c.pid && h.addr == addr)
                .ok_or_else(|| {
                    PortalError::NotAvailable(format!("{addr} is not connected for this caller"))
                })?;
            b.release(i, journal::INFO, "was released: Disconnect", &mut cl);
        }
        spawn_cleanup(&self.s, cl);
        Ok(())
    }

    #[zbus(out_args("value"))]
    async fn read_characteristic(
        &self,
        #[zbus(header)] hdr: zbus::message::Header<'_>,
        address: String,
        service: String,
        characteristic: String,
    ) -> Result<Vec<u8>, PortalError> {
        let (_, _, path, conn) = self
            .characteristic(
                &hdr,
                "Bluetooth1.ReadCharacteristic",
                BtRole::Connect,
                (&address, &service, &characteristic),
            )
            .await?;
        let opts: HashMap<&str, Value<'_>> = HashMap::new();
        let m = call(&conn, &path, CHAR1, "ReadValue", &(opts,), CALL_TIMEOUT).await?;
        body::<Vec<u8>>(&m, "ReadValue")
    }

    async fn write_characteristic(
        &self,
        #[zbus(header)] hdr: zbus::message::Header<'_>,
        address: String,
        service: String,
        characteristic: String,
        value: Vec<u8>,
    ) -> Result<(), PortalError> {
        if value.len() > MAX_VALUE_LEN {
            return Err(PortalError::InvalidArgs(format!(
                "a value of {} bytes: at most {MAX_VALUE_LEN}",
                value.len()
            )));
        }
        let (_, _, path, conn) = self
            .characteristic(
                &hdr,
                "Bluetooth1.WriteCharacteristic",
                BtRole::Write,
                (&address, &service, &characteristic),
            )
            .await?;
        let opts: HashMap<&str, Value<'_>> = HashMap::new();
        call(
            &conn,
            &path,
            CHAR1,
            "WriteValue",
            &(value, opts),
            CALL_TIMEOUT,
        )
        .await
        .map(drop)
    }

    #[zbus(out_args("fd"))]
    async fn notify(
        &self,
        #[zbus(header)] hdr: zbus::message::Header<'_>,
        address: String,
        service: String,
        characteristic: String,
    ) -> Result<zbus::zvariant::OwnedFd, PortalError> {
        let (c, addr, path, conn) = self
            .characteristic(
                &hdr,
                "Bluetooth1.Notify",
                BtRole::Notify,
                (&address, &service, &characteristic),
            )
            .await?;
        let svc = parse_uuid(&service)?;
        let chr = parse_uuid(&characteristic)?;
        let pipe_err = |e: rustix::io::Errno| PortalError::NotAvailable(format!("pipe: {e}"));
        let (read_end, write_end) =
            rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC).map_err(pipe_err)?;
        let fl = rustix::fs::fcntl_getfl(&write_end).map_err(pipe_err)?;
        rustix::fs::fcntl_setfl(&write_end, fl | rustix::fs::OFlags::NONBLOCK).map_err(pipe_err)?;
        let id = {
            let mut b = lock(&self.s);
            let open_now = b
                .notifies
                .iter()
                .filter(|x| x.app == c.app && !crate::identity::exited(&x.pidfd))
                .count();
            if open_now >= MAX_NOTIFY_PER_APP {
                return Err(PortalError::NotAvailable(format!(
                    "{} holds {open_now} notification streams, the most one app may hold",
                    c.app
                )));
            }
            let dev = b
                .holds
                .iter()
                .find(|h| h.app == c.app && h.pid == c.pid && h.addr == addr)
                .map(|h| h.path.clone())
                .unwrap_or_default();
            b.next_id += 1;
            let id = b.next_id;
            b.notifies.push(NotifyStream {
                id,
                app: c.app.clone(),
                pid: c.pid,
                pidfd: c.pidfd,
                addr,
                dev,
                service: svc,
                chr,
                char_path: path.clone(),
                pipe: write_end,
                written: 0,
                dropped: 0,
            });
            id
        };
        self.s.changed.notify_waiters();
        let subscribed = {
            let _one = self.s.bt_notify.lock().await;
            if lock(&self.s).subscribed.contains(&path) {
                Ok(())
            } else {
                let r = match value_rule(&conn, &path, true).await {
                    Ok(()) => call(&conn, &path, CHAR1, "StartNotify", &(), CALL_TIMEOUT)
                        .await
                        .map(drop),
                    Err(e) => Err(e),
                };
                match r {
                    Ok(()) => Ok(()),
                    Err(PortalError::Failed(m)) if m.contains("InProgress") => Ok(()),
                    Err(e) => {
                        let _ = value_rule(&conn, &path, false).await;
                        Err(e)
                    }
                }
                .map(|()| {
                    lock(&self.s).subscribed.insert(path.clone());
                })
            }
        };
        if let Err(e) = subscribed {
            let mut cl = Cleanup::default();
            lock(&self.s).end_notify(id, journal::INFO, "ended: StartNotify failed", &mut cl);
            return Err(e);
        }
        journal::log(
            journal::INFO,
            Some(journal::Event::PortalGranted),
            Some(c.app.as_str()),
            &format!(
                "bluetooth: notification stream {id} of {addr} {svc} {chr} to pid {} of {}",
                c.pid, c.app
            ),
        );
        Ok(read_end.into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use appmgr_types::PortalName;

    fn perms(devices: &[&str], services: &[&str], roles: &[BtRole]) -> Permissions {
        let mut p = Permissions::default();
        p.portals.insert(PortalName::new("bluetooth").unwrap());
        p.bluetooth.devices = devices.iter().map(|d| d.parse().unwrap()).collect();
        p.bluetooth.services = services.iter().map(|s| s.parse().unwrap()).collect();
        p.bluetooth.roles = roles.iter().copied().collect();
        p
    }

    fn uuids(v: &[&str]) -> BTreeSet<GattUuid> {
        v.iter().map(|s| s.parse().unwrap()).collect()
    }

    const A: &str = "00:AA:01:01:00:01";
    const B: &str = "00:AA:01:02:00:02";

    #[test]
    fn a_star_grant_reaches_devices_offering_a_granted_service_only() {
        let p = perms(&["*"], &["180f"], &[BtRole::Connect, BtRole::Notify]);
        let a: BtDevice = A.parse().unwrap();
        assert_eq!(refusal(&p, BtRole::Connect, &a, None, None), None);
        assert_eq!(
            refusal(
                &p,
                BtRole::Connect,
                &a,
                Some(&uuids(&["180f", "180d"])),
                None
            ),
            None
        );
        let w = refusal(&p, BtRole::Connect, &a, Some(&uuids(&["181a"])), None).unwrap();
        assert!(w.contains("offers no granted service"), "{w}");
        let f: GattUuid = "180f".parse().unwrap();
        let d: GattUuid = "0000180d-0000-1000-8000-00805f9b34fb".parse().unwrap();
        assert_eq!(refusal(&p, BtRole::Notify, &a, None, Some(&f)), None);
        let w = refusal(&p, BtRole::Notify, &a, None, Some(&d)).unwrap();
        assert_eq!(w, "bluetooth service 180d is not granted");
        let w = refusal(&p, BtRole::Write, &a, None, Some(&f)).unwrap();
        assert_eq!(w, "bluetooth role write is not granted");
        let w = refusal(&p, BtRole::Scan, &a, None, None).unwrap();
        assert_eq!(w, "bluetooth role scan is not granted");
    }

    #[test]
    fn a_named_device_is_reached_by_address_whatever_it_offers() {
        let p = perms(&[A], &["180f"], &[BtRole::Connect]);
        let a: BtDevice = A.parse().unwrap();
        let b: BtDevice = B.parse().unwrap();
        assert_eq!(
            refusal(&p, BtRole::Connect, &a, Some(&uuids(&["181a"])), None),
            None
        );
        let w = refusal(&p, BtRole::Connect, &b, Some(&uuids(&["180f"])), None).unwrap();
        assert_eq!(w, format!("bluetooth device {B} is not granted"));
    }

    #[test]
    fn nothing_without_the_portal() {
        let mut p = perms(&["*"], &["180f"], BtRole::ALL);
        p.portals.clear();
        let a: BtDevice = A.parse().unwrap();
        for r in BtRole::ALL {
            assert_eq!(
                refusal(&p, *r, &a, None, None).as_deref(),
                Some("the bluetooth portal is not granted")
            );
        }
        assert_eq!(
            scan_refusal(&p).as_deref(),
            Some("the bluetooth portal is not granted")
        );
        assert!(scan_refusal(&perms(&["*"], &[], &[BtRole::Scan]))
            .unwrap()
            .contains("nothing to scan for"));
        assert!(scan_refusal(&perms(&[], &["180f"], &[BtRole::Scan])).is_some());
        assert_eq!(
            scan_refusal(&perms(&["*"], &["180f"], &[BtRole::Scan])),
            None
        );
    }

    #[test]
    fn a_scan_lists_only_granted_advertised_services() {
        let g = perms(&["*"], &["180f", "181a"], &[BtRole::Scan]).bluetooth;
        let a: BtDevice = A.parse().unwrap();
        assert_eq!(
            visible_services(&g, &a, &uuids(&["180d", "180f"])),
            ["180f"]
        );
        assert!(visible_services(&g, &a, &uuids(&["180d"])).is_empty());
        let only_b = perms(&[B], &["180f"], &[BtRole::Scan]).bluetooth;
        assert!(visible_services(&only_b, &a, &uuids(&["180f"])).is_empty());
    }

    #[test]
    fn sightings_go_to_each_scan_that_sees_the_device_at_most_once_a_second() {
        let mut b = Bt {
            adapter: "/org/bluez/hci0".into(),
            ..Bt::default()
        };
        let fd = || {
            rustix::process::pidfd_open(
                rustix::process::getpid(),
                rustix::process::PidfdFlags::empty(),
            )
            .unwrap()
        };
        let app = |s: &str| AppId::new(s).unwrap();
        for (sender, services) in [(":1.7", &["180f", "180d"][..]), (":1.8", &["180f"][..])] {
            b.scans.push(Scan {
                app: app("org.example.A"),
                sender: sender.into(),
                pid: 1,
                pidfd: fd(),
                grant: perms(&["*"], services, &[BtRole::Scan]).bluetooth,
                sent: HashMap::new(),
            });
        }
        let path = device_path(&b.adapter, &A.parse().unwrap());
        assert_eq!(path, "/org/bluez/hci0/dev_00_AA_01_01_00_01");
        let mut props: Props = HashMap::new();
        props.insert(
            "Address".into(),
            OwnedValue::try_from(Value::from(A)).unwrap(),
        );
        props.insert(
            "Name".into(),
            OwnedValue::try_from(Value::from("hrm")).unwrap(),
        );
        let list = Value::from(vec![
            "0000180d-0000-1000-8000-00805f9b34fb".to_string(),
            "0000180f-0000-1000-8000-00805f9b34fb".to_string(),
        ]);
        props.insert("UUIDs".into(), OwnedValue::try_from(list).unwrap());
        b.devices.insert(path.clone(), DevInfo::from_props(&props));
        // Not seen by the running discovery yet (no RSSI): nothing.
        assert!(b.sightings(&path, None).is_empty());
        let mut rssi: Props = HashMap::new();
        rssi.insert("RSSI".into(), OwnedValue::from(-60i16));
        assert!(b.devices.get_mut(&path).unwrap().apply(&rssi, &[]));
        let f = b.sightings(&path, None);
        let got: Vec<(&str, &[String])> = f
            .iter()
            .map(|x| (x.dest.as_str(), x.services.as_slice()))
            .collect();
        assert_eq!(
            got,
            [
                (":1.7", &["180d".to_string(), "180f".to_string()][..]),
                (":1.8", &["180f".to_string()][..])
            ]
        );
        assert!(f
            .iter()
            .all(|x| x.address == A && x.name == "hrm" && x.rssi == -60));
        // The same again, or a new RSSI within a second: nothing.
        assert!(b.sightings(&path, None).is_empty());
        rssi.insert("RSSI".into(), OwnedValue::from(-50i16));
        b.devices.get_mut(&path).unwrap().apply(&rssi, &[]);
        assert!(b.sightings(&path, None).is_empty());
        // A new scan of one connection gets it at once.
        b.scans[1].sent.clear();
        let f = b.sightings(&path, Some(":1.8"));
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].rssi, -50);
        // Discovery stopped: RSSI invalidated, nothing is reported.
        b.devices
            .get_mut(&path)
            .unwrap()
            .apply(&HashMap::new(), &["RSSI".into()]);
        b.scans[1].sent.clear();
        assert!(b.sightings(&path, None).is_empty());
    }

    #[test]
    fn notifications_are_length_prefixed_records_and_a_closed_reader_ends_the_stream() {
        let mut b = Bt::default();
        let (r, w) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC).unwrap();
        let me = rustix::process::pidfd_open(
            rustix::process::getpid(),
            rustix::process::PidfdFlags::empty(),
        )
        .unwrap();
        let chr = "/org/bluez/hci0/dev_00_AA_01_01_00_01/service0010/char0011";
        b.notifies.push(NotifyStream {
            id: 1,
            app: AppId::new("org.example.A").unwrap(),
            pid: 1,
            pidfd: me,
            addr: A.parse().unwrap(),
            dev: "/org/bluez/hci0/dev_00_AA_01_01_00_01".into(),
            service: "180d".parse().unwrap(),
            chr: "2a37".parse().unwrap(),
            char_path: chr.into(),
            pipe: w,
            written: 0,
            dropped: 0,
        });
        let mut c = Cleanup::default();
        b.deliver(chr, &[0, 72], &mut c);
        b.deliver(&format!("{chr}x"), &[9], &mut c);
        b.deliver(chr, &[], &mut c);
        let mut buf = [0u8; 16];
        let n = rustix::io::read(&r, &mut buf).unwrap();
        assert_eq!(&buf[..n], &[2, 0, 0, 72, 0, 0]);
        assert_eq!(b.notifies[0].written, 2);
        drop(r);
        b.deliver(chr, &[1], &mut c);
        assert!(b.notifies.is_empty());
        assert_eq!(c.stop_notify, [chr]);
    }
}
