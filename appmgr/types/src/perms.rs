//! What an app asks for (`[permissions]`, `[resources]` in its manifest) and what a policy
//! grants use the same types, so the effective grant is a plain intersection.

use crate::{has_unsafe_chars, BluetoothGrant, InvalidValue, NetworkGrant};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

fn lower_ident(what: &'static str, s: &str) -> Result<(), InvalidValue> {
    if s.is_empty() || s.len() > 64 {
        return Err(InvalidValue::new(what, s, "must be 1 to 64 characters"));
    }
    if !s.starts_with(|c: char| c.is_ascii_lowercase())
        || !s
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
    {
        return Err(InvalidValue::new(
            what,
            s,
            "must be a lowercase name (letters, digits, `-`, `_`)",
        ));
    }
    Ok(())
}

macro_rules! ident_type {
    ($(#[$m:meta])* $name:ident, $what:literal) => {
        $(#[$m])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);
        impl $name {
            pub fn new(s: &str) -> Result<Self, InvalidValue> {
                lower_ident($what, s)?;
                Ok($name(s.to_string()))
            }
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }
        impl TryFrom<String> for $name {
            type Error = InvalidValue;
            fn try_from(s: String) -> Result<Self, InvalidValue> {
                $name::new(&s)
            }
        }
        impl From<$name> for String {
            fn from(v: $name) -> String {
                v.0
            }
        }
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

ident_type!(
    /// A logical device (`gpu`, `input`, `bluetooth`, `sensors`, `video`, `sound`,
    /// `serial`, `can`, ...), resolved to nodes by the board profile.
    DeviceName,
    "device"
);
ident_type!(
    /// A portal served by appmgr's portal service (`gpu`, `sensors`, `bluetooth`, ...).
    PortalName,
    "portal"
);
ident_type!(
    /// An IIO channel as sysfs spells it without `in_` and `_raw` (`accel_x`, `temp`,
    /// `voltage0`, `voltage1-voltage2`).
    ChannelName,
    "sensor channel"
);

/// The portal service's well-known bus name. An app granted a served portal may call it
/// (and nothing else, unless `dbus-talk` says so).
pub const PORTAL_BUS_NAME: &str = "org.appmgr.Portal1";

/// The portals the portal service serves. A granted portal not listed here is shown as not
/// provided.
pub const SERVED_PORTALS: &[&str] = &["gpu", "sensors", "bluetooth"];

impl PortalName {
    /// Whether appmgr's portal service serves this portal.
    pub fn is_served(&self) -> bool {
        SERVED_PORTALS.contains(&self.as_str())
    }
}

impl Permissions {
    /// Whether any granted portal is served (the app gets the bus to reach the portal).
    pub fn has_served_portal(&self) -> bool {
        self.portals.iter().any(PortalName::is_served)
    }
}

/// The fastest sensor stream rate a grant may name (`max-rate-hz`).
pub const MAX_SENSOR_RATE_HZ: u32 = 10_000;

/// `[permissions.sensors]` of a manifest and `grant = { sensors = { ... } }` of a policy
/// rule: the IIO channels the Sensors portal may read for the app, and the highest rate
/// of a stream (`Open`). Without `max-rate-hz` only single reads (`Read`) are possible.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct SensorGrant {
    pub channels: BTreeSet<ChannelName>,
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "de_rate")]
    pub max_rate_hz: Option<u32>,
}

impl SensorGrant {
    pub fn is_empty(&self) -> bool {
        self.channels.is_empty() && self.max_rate_hz.is_none()
    }
}

fn de_rate<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    let v = u64::deserialize(d)?;
    if v == 0 || v > u64::from(MAX_SENSOR_RATE_HZ) {
        return Err(serde::de::Error::custom(InvalidValue::new(
            "max-rate-hz",
            &v.to_string(),
            "must be 1 to 10000",
        )));
    }
    Ok(Some(v as u32))
}

macro_rules! closed_enum {
    ($(#[$m:meta])* $name:ident, $what:literal, { $($var:ident => $s:literal),+ $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum $name { $($var),+ }
        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$var),+];
            pub fn as_str(self) -> &'static str {
                match self { $($name::$var => $s),+ }
            }
        }
        impl FromStr for $name {
            type Err = InvalidValue;
            fn from_str(s: &str) -> Result<Self, InvalidValue> {
                match s {
                    $($s => Ok($name::$var),)+
                    _ => Err(InvalidValue::new($what, s, concat!("must be one of:", $(" ", $s),+))),
                }
            }
        }
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result { f.write_str(self.as_str()) }
        }
        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> { s.serialize_str(self.as_str()) }
        }
        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

closed_enum!(
    /// Host sockets that can be bound into the sandbox.
    SocketName, "socket", {
        Wayland => "wayland",
        X11 => "x11",
        Pulseaudio => "pulseaudio",
        Pipewire => "pipewire",
    }
);

closed_enum!(
    /// What an app may do on the host's PipeWire (`audio = [...]`), enforced by the
    /// session manager for the app's uid (docs/audio.md): play to sinks, record from
    /// sources.
    AudioRole, "audio role", {
        Playback => "playback",
        Capture => "capture",
    }
);

closed_enum!(
    /// Special allowances that relax the sandbox.
    AllowFlag, "allow flag", {
        Devel => "devel",
        Multiarch => "multiarch",
        Bluetooth => "bluetooth",
        Canbus => "canbus",
    }
);

/// A D-Bus well-known name (`org.freedesktop.NetworkManager`), or a prefix pattern ending
/// in `.*` (`org.example.Telemetry.*`) that covers the name itself and every name below it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct BusName(String);

impl BusName {
    pub fn new(s: &str) -> Result<Self, InvalidValue> {
        let bad = |r: &str| Err(InvalidValue::new("bus name", s, r));
        if s.is_empty() || s.len() > 255 {
            return bad("must be 1 to 255 characters");
        }
        let body = s.strip_suffix(".*").unwrap_or(s);
        let parts: Vec<&str> = body.split('.').collect();
        if parts.len() < 2 {
            return bad("must have at least two elements");
        }
        for p in parts {
            if p.is_empty()
                || p.starts_with(|c: char| c.is_ascii_digit())
                || !p
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
            {
                return bad("elements must be non-empty, not start with a digit, and hold only [A-Za-z0-9_-]");
            }
        }
        Ok(BusName(s.to_string()))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
    /// True for a `prefix.*` pattern.
    pub fn is_prefix(&self) -> bool {
        self.0.ends_with(".*")
    }
    /// Whether this grant covers `other` (a name or pattern the app asked for).
    pub fn covers(&self, other: &BusName) -> bool {
        match self.0.strip_suffix(".*") {
            None => self.0 == other.0,
            Some(prefix) => {
                let o = other.0.strip_suffix(".*").unwrap_or(&other.0);
                o == prefix || o.starts_with(&format!("{prefix}."))
            }
        }
    }
}
impl TryFrom<String> for BusName {
    type Error = InvalidValue;
    fn try_from(s: String) -> Result<Self, InvalidValue> {
        BusName::new(&s)
    }
}
impl From<BusName> for String {
    fn from(v: BusName) -> String {
        v.0
    }
}
impl fmt::Display for BusName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Read-only or read-write access to a host path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FsAccess {
    Ro,
    Rw,
}

/// A host path to bind into the sandbox: `PATH`, `PATH:ro` or `PATH:rw`. Without a
/// suffix the access is read-only (appmgr's default is the safer one; Flatpak's is rw).
/// The path must be absolute and normal: no `.`/`..` components, no empty components, no
/// control characters, not `/` itself.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FsGrant {
    pub path: String,
    pub access: FsAccess,
}

impl FsGrant {
    /// Whether this grant covers `req`: the same path or a parent of it, with at least the
    /// access requested.
    pub fn covers(&self, req: &FsGrant) -> bool {
        let path_ok = req.path == self.path
            || req
                .path
                .strip_prefix(&self.path)
                .is_some_and(|rest| rest.starts_with('/'));
        path_ok && (self.access == FsAccess::Rw || req.access == FsAccess::Ro)
    }
}

impl FromStr for FsGrant {
    type Err = InvalidValue;
    fn from_str(s: &str) -> Result<Self, InvalidValue> {
        let (path, access) = match s.rsplit_once(':') {
            Some((p, "ro")) => (p, FsAccess::Ro),
            Some((p, "rw")) => (p, FsAccess::Rw),
            Some(_) => {
                return Err(InvalidValue::new(
                    "filesystem",
                    s,
                    "suffix must be `:ro` or `:rw`",
                ))
            }
            None => (s, FsAccess::Ro),
        };
        let bad = |r: &str| Err(InvalidValue::new("filesystem", s, r));
        if has_unsafe_chars(path) {
            return bad("control or bidi characters are not allowed in paths");
        }
        if !path.starts_with('/') || path == "/" {
            return bad("must be an absolute path other than `/`");
        }
        if path.len() > 1024 {
            return bad("path too long");
        }
        if path[1..]
            .split('/')
            .any(|c| c.is_empty() || c == "." || c == "..")
        {
            return bad("must be normal: no empty, `.` or `..` components, no trailing `/`");
        }
        if path.contains(':') {
            return bad("`:` is only allowed before the access suffix");
        }
        Ok(FsGrant {
            path: path.to_string(),
            access,
        })
    }
}
impl fmt::Display for FsGrant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let a = match self.access {
            FsAccess::Ro => "ro",
            FsAccess::Rw => "rw",
        };
        write!(f, "{}:{}", self.path, a)
    }
}
impl Serialize for FsGrant {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}
impl<'de> Deserialize<'de> for FsGrant {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

/// The `[permissions]` table of a manifest, and the `grant` of a policy rule.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct Permissions {
    /// `true` (any egress) or a table narrowing it (see [`NetworkGrant`]).
    pub network: NetworkGrant,
    pub ipc: bool,
    pub devices: BTreeSet<DeviceName>,
    pub sockets: BTreeSet<SocketName>,
    /// PipeWire playback and capture (needs `sockets = ["pipewire"]` to be of use).
    #[serde(skip_serializing_if = "BTreeSet::is_empty")]
    pub audio: BTreeSet<AudioRole>,
    pub dbus_talk: BTreeSet<BusName>,
    pub dbus_own: BTreeSet<BusName>,
    pub filesystems: BTreeSet<FsGrant>,
    pub portals: BTreeSet<PortalName>,
    pub allow: BTreeSet<AllowFlag>,
    /// The Sensors portal's channels and rate (`[permissions.sensors]`).
    #[serde(skip_serializing_if = "SensorGrant::is_empty")]
    pub sensors: SensorGrant,
    /// The Bluetooth portal's devices, services and roles (`[permissions.bluetooth]`).
    #[serde(skip_serializing_if = "BluetoothGrant::is_empty")]
    pub bluetooth: BluetoothGrant,
}

impl Permissions {
    /// True when nothing at all is requested or granted.
    pub fn is_empty(&self) -> bool {
        self == &Permissions::default()
    }
}

/// A memory size in bytes, written as an integer or a string with an optional `K`, `M`,
/// `G` suffix (powers of 1024). At least 1 MiB: smaller limits only make the kernel
/// OOM-kill the app at start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MemoryLimit(u64);

impl MemoryLimit {
    pub const MIN: u64 = 1 << 20;
    pub fn from_bytes(b: u64) -> Result<Self, InvalidValue> {
        if !(Self::MIN..=(1u64 << 50)).contains(&b) {
            return Err(InvalidValue::new(
                "memory size",
                &b.to_string(),
                "must be between 1M and 1P",
            ));
        }
        Ok(MemoryLimit(b))
    }
    pub fn bytes(self) -> u64 {
        self.0
    }
}
impl FromStr for MemoryLimit {
    type Err = InvalidValue;
    fn from_str(s: &str) -> Result<Self, InvalidValue> {
        let (num, mult) = match s.as_bytes().last() {
            Some(b'K') | Some(b'k') => (&s[..s.len() - 1], 1u64 << 10),
            Some(b'M') | Some(b'm') => (&s[..s.len() - 1], 1 << 20),
            Some(b'G') | Some(b'g') => (&s[..s.len() - 1], 1 << 30),
            _ => (s, 1),
        };
        let n: u64 = num.parse().map_err(|_| {
            InvalidValue::new(
                "memory size",
                s,
                "must be a whole number with optional K, M or G",
            )
        })?;
        let b = n
            .checked_mul(mult)
            .ok_or_else(|| InvalidValue::new("memory size", s, "too large"))?;
        MemoryLimit::from_bytes(b).map_err(|e| InvalidValue::new("memory size", s, e.reason))
    }
}
impl fmt::Display for MemoryLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        if b.is_multiple_of(1 << 30) {
            write!(f, "{}G", b >> 30)
        } else if b.is_multiple_of(1 << 20) {
            write!(f, "{}M", b >> 20)
        } else if b.is_multiple_of(1 << 10) {
            write!(f, "{}K", b >> 10)
        } else {
            write!(f, "{b}")
        }
    }
}
impl Serialize for MemoryLimit {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}
impl<'de> Deserialize<'de> for MemoryLimit {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Int(u64),
            Str(String),
        }
        match Raw::deserialize(d)? {
            Raw::Int(b) => MemoryLimit::from_bytes(b),
            Raw::Str(s) => s.parse(),
        }
        .map_err(serde::de::Error::custom)
    }
}

/// CPU bandwidth as a percentage of one CPU (`"30%"`; `"150%"` is one and a half CPUs),
/// 1 to 100000.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CpuPercent(u32);

impl CpuPercent {
    pub fn new(p: u32) -> Result<Self, InvalidValue> {
        if p == 0 || p > 100_000 {
            return Err(InvalidValue::new(
                "cpu percentage",
                &p.to_string(),
                "must be 1% to 100000%",
            ));
        }
        Ok(CpuPercent(p))
    }
    pub fn percent(self) -> u32 {
        self.0
    }
}
impl FromStr for CpuPercent {
    type Err = InvalidValue;
    fn from_str(s: &str) -> Result<Self, InvalidValue> {
        let n = s.strip_suffix('%').ok_or_else(|| {
            InvalidValue::new("cpu percentage", s, "must end in `%`, e.g. \"50%\"")
        })?;
        let p: u32 = n.parse().map_err(|_| {
            InvalidValue::new("cpu percentage", s, "must be a whole number of percent")
        })?;
        CpuPercent::new(p).map_err(|e| InvalidValue::new("cpu percentage", s, e.reason))
    }
}
impl fmt::Display for CpuPercent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}%", self.0)
    }
}
impl Serialize for CpuPercent {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}
impl<'de> Deserialize<'de> for CpuPercent {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

/// The `[resources]` table of a manifest (what the app expects to need) and the ceilings
/// of a policy rule.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct Resources {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory_max: Option<MemoryLimit>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu_max: Option<CpuPercent>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pids_max: Option<u32>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permissions_parse_strictly() {
        let p: Permissions = toml::from_str(
            r#"network = true
devices = ["gpu", "input"]
sockets = ["wayland"]
dbus-talk = ["org.freedesktop.NetworkManager", "org.example.*"]
filesystems = ["/var/lib/maps:ro", "/media/usb:rw", "/srv/x"]
allow = ["devel"]"#,
        )
        .unwrap();
        assert!(p.network.any && !p.ipc);
        assert_eq!(p.devices.len(), 2);
        assert!(p.filesystems.contains(&"/srv/x:ro".parse().unwrap()));
        assert!(toml::from_str::<Permissions>("netwrok = true").is_err());
        assert!(toml::from_str::<Permissions>("network = \"yes\"").is_err());
        assert!(toml::from_str::<Permissions>("sockets = [\"ssh-agent\"]").is_err());
        assert!(toml::from_str::<Permissions>("filesystems = [\"/a/../etc\"]").is_err());
        assert!(toml::from_str::<Permissions>("filesystems = [\"relative\"]").is_err());
        assert!(toml::from_str::<Permissions>("filesystems = [\"/\"]").is_err());
        assert!(toml::from_str::<Permissions>("filesystems = [\"/a\\u202e\"]").is_err());
        assert!(toml::from_str::<Permissions>("devices = [\"GPU\"]").is_err());
        assert!(toml::from_str::<Permissions>("network = true\nnetwork = false").is_err());
    }

    #[test]
    fn resources_parse() {
        let r: Resources =
            toml::from_str("memory-max = \"64M\"\ncpu-max = \"30%\"\npids-max = 64").unwrap();
        assert_eq!(r.memory_max.unwrap().bytes(), 64 << 20);
        assert_eq!(r.cpu_max.unwrap().percent(), 30);
        let r: Resources = toml::from_str("memory-max = 2097152").unwrap();
        assert_eq!(r.memory_max.unwrap().to_string(), "2M");
        for bad in [
            "memory-max = \"0\"",
            "memory-max = \"12X\"",
            "memory-max = \"-5M\"",
            "cpu-max = \"0%\"",
            "cpu-max = \"50\"",
            "pids-max = -1",
            "swap = 1",
        ] {
            assert!(toml::from_str::<Resources>(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn coverage() {
        let g: BusName = BusName::new("org.example.*").unwrap();
        assert!(g.covers(&BusName::new("org.example.Foo").unwrap()));
        assert!(g.covers(&BusName::new("org.example").unwrap()));
        assert!(!g.covers(&BusName::new("org.examples.Foo").unwrap()));
        let rw: FsGrant = "/media:rw".parse().unwrap();
        let ro: FsGrant = "/media/usb".parse().unwrap();
        assert!(rw.covers(&ro));
        assert!(!ro.covers(&rw));
        assert!(!rw.covers(&"/mediax:ro".parse().unwrap()));
    }
}
