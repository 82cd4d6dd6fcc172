//! `[permissions.bluetooth]` of a manifest and `grant = { bluetooth = { ... } }` of a
//! policy rule: the Bluetooth devices and GATT services the Bluetooth portal may reach for
//! an app, and what it may do with them. Adapters, pairing, bonding, adapter power and
//! discoverability belong to the system and have no key here.

use crate::InvalidValue;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

/// A device a grant names: one address, or `*` (any device that offers a granted
/// service).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum BtDevice {
    /// `*`.
    Any,
    /// `AA:BB:CC:DD:EE:FF`, most significant byte first (as BlueZ prints it).
    Addr([u8; 6]),
}

impl BtDevice {
    /// Whether this granted device covers `other` (`*` covers every address; a requested
    /// `*` only by a granted `*`).
    pub fn covers(&self, other: &BtDevice) -> bool {
        matches!(self, BtDevice::Any) || self == other
    }

    /// Whether a grant of these devices reaches the device at `addr`.
    pub fn reaches(set: &BTreeSet<BtDevice>, addr: &BtDevice) -> bool {
        set.iter().any(|d| d.covers(addr))
    }
}

impl FromStr for BtDevice {
    type Err = InvalidValue;
    fn from_str(s: &str) -> Result<Self, InvalidValue> {
        if s == "*" {
            return Ok(BtDevice::Any);
        }
        let bad = || {
            InvalidValue::new(
                "bluetooth device",
                s,
                "must be an address like AA:BB:CC:DD:EE:FF, or *",
            )
        };
        let mut a = [0u8; 6];
        let parts: Vec<&str> = s.split(':').collect();
        if parts.len() != 6 {
            return Err(bad());
        }
        for (i, p) in parts.iter().enumerate() {
            if p.len() != 2 || !p.chars().all(|c| c.is_ascii_hexdigit()) {
                return Err(bad());
            }
            a[i] = u8::from_str_radix(p, 16).map_err(|_| bad())?;
        }
        Ok(BtDevice::Addr(a))
    }
}

impl fmt::Display for BtDevice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BtDevice::Any => f.write_str("*"),
            BtDevice::Addr(a) => write!(
                f,
                "{:02X}:{:02X}:{:02X}:{:02X}:{:02X}:{:02X}",
                a[0], a[1], a[2], a[3], a[4], a[5]
            ),
        }
    }
}

/// The Bluetooth base UUID `00000000-0000-1000-8000-00805f9b34fb`: a 16- or 32-bit UUID
/// `x` stands for this with `x` in its first 32 bits.
const BASE_UUID: u128 = 0x0000_0000_0000_1000_8000_0080_5f9b_34fb;

/// A GATT service or characteristic UUID. 16-bit (`180f`) and 32-bit shorthands are the
/// same UUID as their full form, so a grant written either way matches both.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct GattUuid(u128);

impl GattUuid {
    pub fn as_u128(self) -> u128 {
        self.0
    }

    /// The full lowercase form BlueZ uses (`0000180f-0000-1000-8000-00805f9b34fb`).
    pub fn full(self) -> String {
        let h = format!("{:032x}", self.0);
        format!(
            "{}-{}-{}-{}-{}",
            &h[0..8],
            &h[8..12],
            &h[12..16],
            &h[16..20],
            &h[20..32]
        )
    }
}

impl FromStr for GattUuid {
    type Err = InvalidValue;
    fn from_str(s: &str) -> Result<Self, InvalidValue> {
        let bad = || {
            InvalidValue::new(
                "GATT UUID",
                s,
                "must be a 16-bit (180f), 32-bit or 128-bit (0000180f-0000-1000-8000-00805f9b34fb) UUID",
            )
        };
        let hex = |t: &str| -> Result<u128, InvalidValue> {
            if t.is_empty() || !t.chars().all(|c| c.is_ascii_hexdigit()) {
                return Err(bad());
            }
            u128::from_str_radix(t, 16).map_err(|_| bad())
        };
        match s.len() {
            4 | 8 => Ok(GattUuid(BASE_UUID | (hex(s)? << 96))),
            36 => {
                let groups: Vec<&str> = s.split('-').collect();
                let lens: Vec<usize> = groups.iter().map(|g| g.len()).collect();
                if lens != [8, 4, 4, 4, 12] {
                    return Err(bad());
                }
                Ok(GattUuid(hex(&groups.concat())?))
            }
            _ => Err(bad()),
        }
    }
}

impl fmt::Display for GattUuid {
    /// The 16-bit shorthand when the UUID has one, else the full form.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let short = self.0 >> 96;
        if self.0 & !(0xffff_u128 << 96) == BASE_UUID && short <= 0xffff {
            write!(f, "{short:04x}")
        } else {
            f.write_str(&self.full())
        }
    }
}

macro_rules! string_serde {
    ($($t:ty),+) => {$(
        impl Serialize for $t {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.to_string())
            }
        }
        impl<'de> Deserialize<'de> for $t {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                String::deserialize(d)?
                    .parse()
                    .map_err(serde::de::Error::custom)
            }
        }
    )+};
}
string_serde!(BtDevice, GattUuid, BtRole);

/// What an app may do with its granted devices and services.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum BtRole {
    /// Discover granted devices (`StartScan`, `DeviceFound`).
    Scan,
    /// Connect and read characteristics.
    Connect,
    /// Receive a characteristic's notifications.
    Notify,
    /// Write characteristics.
    Write,
}

impl BtRole {
    pub const ALL: &'static [BtRole] =
        &[BtRole::Scan, BtRole::Connect, BtRole::Notify, BtRole::Write];

    pub fn as_str(self) -> &'static str {
        match self {
            BtRole::Scan => "scan",
            BtRole::Connect => "connect",
            BtRole::Notify => "notify",
            BtRole::Write => "write",
        }
    }
}

impl FromStr for BtRole {
    type Err = InvalidValue;
    fn from_str(s: &str) -> Result<Self, InvalidValue> {
        BtRole::ALL
            .iter()
            .copied()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| {
                InvalidValue::new(
                    "bluetooth role",
                    s,
                    "must be one of: scan connect notify write",
                )
            })
    }
}

impl fmt::Display for BtRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `[permissions.bluetooth]`: `devices`, `services`, `roles`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BluetoothGrant {
    pub devices: BTreeSet<BtDevice>,
    pub services: BTreeSet<GattUuid>,
    pub roles: BTreeSet<BtRole>,
}

impl BluetoothGrant {
    pub fn is_empty(&self) -> bool {
        self.devices.is_empty() && self.services.is_empty() && self.roles.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn devices_parse_print_and_cover() {
        let a: BtDevice = "aa:bb:cc:dd:ee:0f".parse().unwrap();
        assert_eq!(a.to_string(), "AA:BB:CC:DD:EE:0F");
        assert_eq!(a, "AA:BB:CC:DD:EE:0F".parse().unwrap());
        let any: BtDevice = "*".parse().unwrap();
        assert!(any.covers(&a) && any.covers(&any) && a.covers(&a));
        assert!(!a.covers(&any));
        assert!(!a.covers(&"AA:BB:CC:DD:EE:10".parse().unwrap()));
        for bad in [
            "",
            "AA:BB:CC:DD:EE",
            "AA:BB:CC:DD:EE:FF:00",
            "AA:BB:CC:DD:EE:GG",
            "AAB:B:CC:DD:EE:FF",
            "**",
            "aa-bb-cc-dd-ee-ff",
            "+A:BB:CC:DD:EE:FF",
        ] {
            let e = bad.parse::<BtDevice>().unwrap_err();
            assert!(e.to_string().contains("bluetooth device"), "{bad}: {e}");
        }
    }

    #[test]
    fn uuids_in_every_form_are_one_uuid() {
        let short: GattUuid = "180f".parse().unwrap();
        let long: GattUuid = "0000180F-0000-1000-8000-00805F9B34FB".parse().unwrap();
        let mid: GattUuid = "0000180f".parse().unwrap();
        assert_eq!(short, long);
        assert_eq!(short, mid);
        assert_eq!(short.to_string(), "180f");
        assert_eq!(short.full(), "0000180f-0000-1000-8000-00805f9b34fb");
        let custom: GattUuid = "6e400001-b5a3-f393-e0a9-e50e24dcca9e".parse().unwrap();
        assert_eq!(custom.to_string(), "6e400001-b5a3-f393-e0a9-e50e24dcca9e");
        // A 32-bit UUID above 16 bits prints in full.
        let wide: GattUuid = "0001180f".parse().unwrap();
        assert_eq!(wide.to_string(), "0001180f-0000-1000-8000-00805f9b34fb");
        for bad in [
            "",
            "18f",
            "180g",
            "180f0",
            "0000180f-0000-1000-8000-00805f9b34f",
            "0000180f00001000800000805f9b34fb",
            "+180",
        ] {
            assert!(bad.parse::<GattUuid>().is_err(), "{bad}");
        }
    }

    #[test]
    fn grants_parse_from_toml_with_clear_errors() {
        let g: BluetoothGrant = toml::from_str(
            "devices = [\"*\", \"AA:BB:CC:DD:EE:FF\"]\nservices = [\"180f\", \"0000180d-0000-1000-8000-00805f9b34fb\"]\nroles = [\"scan\", \"connect\"]\n",
        )
        .unwrap();
        assert_eq!(g.devices.len(), 2);
        assert_eq!(
            g.services.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
            ["180d", "180f"]
        );
        assert_eq!(g.roles, [BtRole::Scan, BtRole::Connect].into());
        let e = toml::from_str::<BluetoothGrant>("roles = [\"pair\"]").unwrap_err();
        assert!(e.to_string().contains("pair"), "{e}");
        let e = toml::from_str::<BluetoothGrant>("adapters = [\"hci0\"]").unwrap_err();
        assert!(e.to_string().contains("adapters"), "{e}");
        assert!(BluetoothGrant::default().is_empty());
    }
}
