//! Whether each granted permission item is actually provided by the launcher on this
//! host. `appmgr permissions` shows this next to every item, so that a grant the sandbox
//! does not (yet) give an app is never displayed as if it did ("shown == provided").
//!
//! The status is computed by `appmgr_sandbox::provisions` from the launch plan itself;
//! this crate only holds the shared vocabulary.

use crate::bluetooth::{BtDevice, BtRole, GattUuid};
use crate::network::{Egress, Listen};
use crate::perms::{
    AllowFlag, AudioRole, BusName, ChannelName, DeviceName, FsGrant, Permissions, PortalName,
    SocketName,
};
use crate::AppId;
use serde::{Deserialize, Serialize};

/// One item of a [`Permissions`] value: a boolean that is set, or one element of a set.
/// [`Permissions::entries`] lists them in display order; `key`/`value` are the names
/// `appmgr permissions` prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PermEntry<'a> {
    /// `network = true`: any egress.
    Network,
    /// One entry of `network.egress`.
    Egress(&'a Egress),
    /// One entry of `network.listen`.
    Listen(&'a Listen),
    /// `network.dns`.
    Dns,
    /// One app of `network.talk-to`.
    TalkTo(&'a AppId),
    Ipc,
    Device(&'a DeviceName),
    Socket(SocketName),
    /// One role of `audio`.
    Audio(AudioRole),
    Talk(&'a BusName),
    Own(&'a BusName),
    Fs(&'a FsGrant),
    Portal(&'a PortalName),
    Allow(AllowFlag),
    /// One channel of `[permissions.sensors]`.
    SensorChannel(&'a ChannelName),
    /// `max-rate-hz` of `[permissions.sensors]`.
    SensorRate(u32),
    /// One device of `[permissions.bluetooth]`.
    BtDevice(&'a BtDevice),
    /// One GATT service of `[permissions.bluetooth]`.
    BtService(&'a GattUuid),
    /// One role of `[permissions.bluetooth]`.
    BtRole(BtRole),
}

impl PermEntry<'_> {
    /// The manifest key (`network`, `devices`, `dbus-talk`, ...).
    pub fn key(&self) -> &'static str {
        match self {
            PermEntry::Network => "network",
            PermEntry::Egress(_) => "network.egress",
            PermEntry::Listen(_) => "network.listen",
            PermEntry::Dns => "network.dns",
            PermEntry::TalkTo(_) => "network.talk-to",
            PermEntry::Ipc => "ipc",
            PermEntry::Device(_) => "devices",
            PermEntry::Socket(_) => "sockets",
            PermEntry::Audio(_) => "audio",
            PermEntry::Talk(_) => "dbus-talk",
            PermEntry::Own(_) => "dbus-own",
            PermEntry::Fs(_) => "filesystems",
            PermEntry::Portal(_) => "portals",
            PermEntry::Allow(_) => "allow",
            PermEntry::SensorChannel(_) => "sensors.channels",
            PermEntry::SensorRate(_) => "sensors.max-rate-hz",
            PermEntry::BtDevice(_) => "bluetooth.devices",
            PermEntry::BtService(_) => "bluetooth.services",
            PermEntry::BtRole(_) => "bluetooth.roles",
        }
    }

    /// The element (`true` for the booleans).
    pub fn value(&self) -> String {
        match self {
            PermEntry::Network | PermEntry::Ipc | PermEntry::Dns => "true".into(),
            PermEntry::Egress(e) => e.to_string(),
            PermEntry::Listen(l) => l.to_string(),
            PermEntry::TalkTo(a) => a.to_string(),
            PermEntry::Device(d) => d.to_string(),
            PermEntry::Socket(s) => s.to_string(),
            PermEntry::Audio(a) => a.to_string(),
            PermEntry::Talk(b) | PermEntry::Own(b) => b.to_string(),
            PermEntry::Fs(f) => f.to_string(),
            PermEntry::Portal(p) => p.to_string(),
            PermEntry::Allow(a) => a.to_string(),
            PermEntry::SensorChannel(c) => c.to_string(),
            PermEntry::SensorRate(r) => r.to_string(),
            PermEntry::BtDevice(d) => d.to_string(),
            PermEntry::BtService(u) => u.to_string(),
            PermEntry::BtRole(r) => r.to_string(),
        }
    }
}

impl Permissions {
    /// Every item, in display order (the order of the manifest keys).
    pub fn entries(&self) -> Vec<PermEntry<'_>> {
        let mut v = Vec::new();
        let n = &self.network;
        if n.any {
            v.push(PermEntry::Network);
        }
        v.extend(n.egress.iter().map(PermEntry::Egress));
        v.extend(n.listen.iter().map(PermEntry::Listen));
        if n.dns {
            v.push(PermEntry::Dns);
        }
        v.extend(n.talk_to.iter().map(PermEntry::TalkTo));
        if self.ipc {
            v.push(PermEntry::Ipc);
        }
        v.extend(self.devices.iter().map(PermEntry::Device));
        v.extend(self.sockets.iter().copied().map(PermEntry::Socket));
        v.extend(self.audio.iter().copied().map(PermEntry::Audio));
        v.extend(self.dbus_talk.iter().map(PermEntry::Talk));
        v.extend(self.dbus_own.iter().map(PermEntry::Own));
        v.extend(self.filesystems.iter().map(PermEntry::Fs));
        v.extend(self.portals.iter().map(PermEntry::Portal));
        v.extend(self.allow.iter().copied().map(PermEntry::Allow));
        v.extend(self.sensors.channels.iter().map(PermEntry::SensorChannel));
        v.extend(self.sensors.max_rate_hz.map(PermEntry::SensorRate));
        v.extend(self.bluetooth.devices.iter().map(PermEntry::BtDevice));
        v.extend(self.bluetooth.services.iter().map(PermEntry::BtService));
        v.extend(self.bluetooth.roles.iter().copied().map(PermEntry::BtRole));
        v
    }
}

/// Whether the launcher gives the app a granted item. Serialized kebab-case
/// (`"provided"`, `"not-provided"`); new values may be added (a grant the launcher refuses
/// to resolve will be `"refused"`), so readers must treat unknown values as not provided.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ProvisionStatus {
    Provided,
    NotProvided,
}

impl ProvisionStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ProvisionStatus::Provided => "provided",
            ProvisionStatus::NotProvided => "not-provided",
        }
    }
}

/// The status of one granted item (`key`, `value` as in [`PermEntry`]), with a one-line
/// reason when it is not provided.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Provision {
    pub key: String,
    pub value: String,
    pub status: ProvisionStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl Provision {
    pub fn provided(e: &PermEntry<'_>) -> Provision {
        Provision {
            key: e.key().into(),
            value: e.value(),
            status: ProvisionStatus::Provided,
            reason: None,
        }
    }

    pub fn not_provided(e: &PermEntry<'_>, reason: impl Into<String>) -> Provision {
        Provision {
            key: e.key().into(),
            value: e.value(),
            status: ProvisionStatus::NotProvided,
            reason: Some(reason.into()),
        }
    }

    pub fn is_provided(&self) -> bool {
        self.status == ProvisionStatus::Provided
    }
}
