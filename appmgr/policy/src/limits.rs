//! Resource ceilings in policy files, and the enforced [`Limits`] they produce.

use appmgr_cgroup::{CgroupLimits, CpuList};
use appmgr_types::{CpuPercent, MemoryLimit};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;

/// Swap allowance: like a memory size, but `0` (no swap at all) is allowed and common.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct SwapLimit(u64);

impl SwapLimit {
    pub fn bytes(self) -> u64 {
        self.0
    }
}
impl fmt::Display for SwapLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0 == 0 {
            f.write_str("0")
        } else {
            // Non-zero swap limits are built from MemoryLimit, so this cannot fail.
            match MemoryLimit::from_bytes(self.0) {
                Ok(m) => m.fmt(f),
                Err(_) => write!(f, "{}", self.0),
            }
        }
    }
}
impl Serialize for SwapLimit {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}
impl<'de> Deserialize<'de> for SwapLimit {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Int(u64),
            Str(String),
        }
        match Raw::deserialize(d)? {
            Raw::Int(0) => Ok(SwapLimit(0)),
            Raw::Str(s) if s == "0" => Ok(SwapLimit(0)),
            Raw::Int(b) => MemoryLimit::from_bytes(b)
                .map(|m| SwapLimit(m.bytes()))
                .map_err(serde::de::Error::custom),
            Raw::Str(s) => s
                .parse::<MemoryLimit>()
                .map(|m| SwapLimit(m.bytes()))
                .map_err(serde::de::Error::custom),
        }
    }
}

/// The size of an app's own file system (`storage-max`): a size like a memory limit
/// (`64M`, `1G`, at least 1M), reported as a storage size when it is malformed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct StorageLimit(MemoryLimit);

impl StorageLimit {
    pub fn bytes(self) -> u64 {
        self.0.bytes()
    }
}
impl fmt::Display for StorageLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}
impl Serialize for StorageLimit {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(s)
    }
}
impl<'de> Deserialize<'de> for StorageLimit {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Int(u64),
            Str(String),
        }
        let parsed = match Raw::deserialize(d)? {
            Raw::Int(b) => MemoryLimit::from_bytes(b).map_err(|e| e.reason),
            Raw::Str(s) => s
                .parse::<MemoryLimit>()
                .map_err(|e| format!("{:?}: {}", e.value, e.reason)),
        };
        parsed.map(StorageLimit).map_err(|reason| {
            serde::de::Error::custom(format!(
                "invalid storage size {reason} (a size such as \"64M\" or \"1G\", at least 1M)"
            ))
        })
    }
}

/// Relative CPU weight, 1 to 10000 (cgroup v2 scale, default 100).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct CpuWeight(u32);

impl CpuWeight {
    pub fn get(self) -> u32 {
        self.0
    }
}
impl<'de> Deserialize<'de> for CpuWeight {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let n = u32::deserialize(d)?;
        if (1..=10_000).contains(&n) {
            Ok(CpuWeight(n))
        } else {
            Err(serde::de::Error::custom(format!(
                "invalid cpu weight {n}: must be 1 to 10000"
            )))
        }
    }
}

/// A task limit of at least 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct PidsMax(u32);

impl PidsMax {
    pub fn get(self) -> u32 {
        self.0
    }
}
impl<'de> Deserialize<'de> for PidsMax {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let n = u32::deserialize(d)?;
        if n >= 1 {
            Ok(PidsMax(n))
        } else {
            Err(serde::de::Error::custom(
                "invalid pids max 0: must be at least 1",
            ))
        }
    }
}

/// `cpuset` in a policy: a literal CPU list (`"0-1"`) or the name of a core set the
/// board profile defines (`"little"`). A value starting with a digit is a list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CpusetRef {
    Cpus(CpuList),
    CoreSet(String),
}

impl<'de> Deserialize<'de> for CpusetRef {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        if s.starts_with(|c: char| c.is_ascii_digit()) {
            CpuList::new(&s)
                .map(CpusetRef::Cpus)
                .map_err(serde::de::Error::custom)
        } else if !s.is_empty()
            && s.len() <= 64
            && s.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
        {
            Ok(CpusetRef::CoreSet(s))
        } else {
            Err(serde::de::Error::custom(format!(
                "invalid cpuset {:?}: must be a cpu list such as \"0-3\" or a core set name",
                appmgr_types::escape_for_display(&s)
            )))
        }
    }
}

/// A rule's `resources` table: the manifest's `[resources]` keys (`memory-max`,
/// `cpu-max`, `pids-max`, as ceilings) plus keys only policy sets.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct PolicyResources {
    pub memory_max: Option<MemoryLimit>,
    pub cpu_max: Option<CpuPercent>,
    pub pids_max: Option<PidsMax>,
    pub memory_high: Option<MemoryLimit>,
    pub memory_swap_max: Option<SwapLimit>,
    pub cpu_weight: Option<CpuWeight>,
    pub cpuset: Option<CpusetRef>,
    pub storage_max: Option<StorageLimit>,
}

/// The limits enforced on one app: produced by policy evaluation, consumed by the
/// cgroup crate through `From<&Limits> for CgroupLimits`. `None` is "no limit".
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct Limits {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory_max: Option<MemoryLimit>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory_high: Option<MemoryLimit>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory_swap_max: Option<SwapLimit>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu_max: Option<CpuPercent>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu_weight: Option<CpuWeight>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pids_max: Option<u32>,
    /// The CPUs, resolved from a core set name when the policy gave one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpuset: Option<CpuList>,
    /// The core set name the CPUs came from, for display.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub core_set: Option<String>,
    /// The size of the app's own file system holding its HOME (not a cgroup limit: the
    /// launcher mounts a per-app ext4 image of this size).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub storage_max: Option<StorageLimit>,
}

impl From<&Limits> for CgroupLimits {
    fn from(l: &Limits) -> Self {
        CgroupLimits {
            memory_max: l.memory_max.map(MemoryLimit::bytes),
            memory_high: l.memory_high.map(MemoryLimit::bytes),
            memory_swap_max: l.memory_swap_max.map(SwapLimit::bytes),
            cpu_max_percent: l.cpu_max.map(CpuPercent::percent),
            cpu_weight: l.cpu_weight.map(CpuWeight::get),
            pids_max: l.pids_max,
            cpus: l.cpuset.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resources_parse_strictly() {
        let r: PolicyResources = toml::from_str(
            "memory-max = \"256M\"\nmemory-high = \"200M\"\nmemory-swap-max = 0\ncpu-max = \"30%\"\ncpu-weight = 50\npids-max = 64\ncpuset = \"little\"",
        )
        .unwrap();
        assert_eq!(r.memory_swap_max, Some(SwapLimit(0)));
        assert_eq!(r.cpuset, Some(CpusetRef::CoreSet("little".into())));
        let r: PolicyResources =
            toml::from_str("cpuset = \"0-1\"\nmemory-swap-max = \"16M\"").unwrap();
        assert_eq!(
            r.cpuset,
            Some(CpusetRef::Cpus(CpuList::new("0-1").unwrap()))
        );
        assert_eq!(r.memory_swap_max.unwrap().to_string(), "16M");
        for bad in [
            "cpu-weight = 0",
            "cpu-weight = 10001",
            "pids-max = 0",
            "cpuset = \"0-\"",
            "cpuset = \"Big\"",
            "memory-swap-max = \"-1\"",
            "swap = 1",
        ] {
            assert!(toml::from_str::<PolicyResources>(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn storage_max_is_a_size_and_a_bad_one_names_the_value() {
        let r: PolicyResources = toml::from_str("storage-max = \"64M\"").unwrap();
        assert_eq!(r.storage_max.map(StorageLimit::bytes), Some(64 << 20));
        assert_eq!(r.storage_max.unwrap().to_string(), "64M");
        for bad in ["\"4Q\"", "\"512K\"", "\"-1M\"", "0"] {
            let e = toml::from_str::<PolicyResources>(&format!("storage-max = {bad}"))
                .unwrap_err()
                .to_string();
            assert!(e.contains("storage-max"), "{bad}: {e}");
            assert!(e.contains("invalid storage size"), "{bad}: {e}");
        }
    }
}
