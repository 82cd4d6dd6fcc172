//! Validated vocabulary shared by every appmgr crate.
//!
//! Everything that crosses a trust boundary (a manifest from a bundle, a policy file, a
//! command-line argument) is parsed into one of these types first, so that an invalid
//! value cannot be represented further in: an [`AppId`] never contains `/` or `..`, a
//! [`MemoryLimit`] is never zero, a [`RefName`] always names a kind, id, arch and branch.
//!
//! The crate holds no I/O and no policy: it is the shared language of `bundle`, `store`,
//! `policy`, `sandbox` and `cgroup`, so that none of them has to know another's file format.

mod bluetooth;
mod debversion;
mod exit;
mod glob;
mod id;
mod network;
mod perms;
mod provision;
mod text;

pub use bluetooth::{BluetoothGrant, BtDevice, BtRole, GattUuid};
pub use debversion::DebVersion;
pub use exit::{dbus, ErrorClass};
pub use glob::{wildcard_match, Glob};
pub use id::{AppId, Arch, Branch, Kind, RefName, RuntimeRef, Version};
pub use network::{Egress, EgressHost, Ipv4Net, Listen, NetworkGrant, Proto};
pub use perms::{
    AllowFlag, AudioRole, BusName, ChannelName, CpuPercent, DeviceName, FsAccess, FsGrant,
    MemoryLimit, Permissions, PortalName, Resources, SensorGrant, SocketName, MAX_SENSOR_RATE_HZ,
    PORTAL_BUS_NAME, SERVED_PORTALS,
};
pub use provision::{PermEntry, Provision, ProvisionStatus};
pub use text::{escape_for_display, has_unsafe_chars};

/// Why a value was refused: carried by every validated type's parse error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {what} {value:?}: {reason}")]
pub struct InvalidValue {
    /// What kind of value it was ("app id", "arch", ...).
    pub what: &'static str,
    /// The value as given, escaped for display.
    pub value: String,
    /// Why it is refused.
    pub reason: String,
}

impl InvalidValue {
    pub(crate) fn new(what: &'static str, value: &str, reason: impl Into<String>) -> Self {
        InvalidValue {
            what,
            value: escape_for_display(value),
            reason: reason.into(),
        }
    }
}
