//! The pure half of plan-then-apply: what a cgroup should look like, as data.

use crate::devices::{self, DeviceRule};
use crate::{cpu, cpuset, memory, pids, CgroupError};
use appmgr_types::AppId;
use serde::{Deserialize, Serialize};
use std::fmt;

/// The cgroup interface version of a hierarchy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CgroupVersion {
    V1,
    V2,
}

/// A cgroup controller appmgr uses. In v1 each has its own hierarchy (some may be
/// co-mounted, e.g. `cpu,cpuacct`); in v2 they share one tree.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Controller {
    Memory,
    Cpu,
    /// v1 only: CPU time accounting (`cpuacct.usage`). In v2 `cpu.stat` has it.
    Cpuacct,
    Pids,
    Cpuset,
    /// v1 only: used by `kill` to stop a fork bomb from racing the killer. v2 has
    /// `cgroup.freeze` and `cgroup.kill` in every cgroup.
    Freezer,
    /// v1 only: device access (`devices.deny`/`devices.allow`). v2 confines devices with a
    /// BPF program instead (see `devices.rs`).
    Devices,
}

impl Controller {
    pub const ALL: &'static [Controller] = &[
        Controller::Memory,
        Controller::Cpu,
        Controller::Cpuacct,
        Controller::Pids,
        Controller::Cpuset,
        Controller::Freezer,
        Controller::Devices,
    ];
    /// The controllers enabled in `cgroup.subtree_control` on v2.
    pub const V2: &'static [Controller] = &[
        Controller::Memory,
        Controller::Cpu,
        Controller::Pids,
        Controller::Cpuset,
    ];
    pub fn as_str(self) -> &'static str {
        match self {
            Controller::Memory => "memory",
            Controller::Cpu => "cpu",
            Controller::Cpuacct => "cpuacct",
            Controller::Pids => "pids",
            Controller::Cpuset => "cpuset",
            Controller::Freezer => "freezer",
            Controller::Devices => "devices",
        }
    }
}

impl fmt::Display for Controller {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A validated CPU list in the kernel's `cpuset.cpus` syntax: `0-3,6`. Never empty.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct CpuList(String);

impl CpuList {
    pub fn new(s: &str) -> Result<Self, CgroupError> {
        let bad = |reason| {
            Err(CgroupError::InvalidLimit {
                what: "cpu list",
                value: appmgr_types::escape_for_display(s),
                reason,
            })
        };
        if s.is_empty() || s.len() > 256 {
            return bad("must be 1 to 256 characters");
        }
        for part in s.split(',') {
            let (a, b) = part.split_once('-').unwrap_or((part, part));
            let (Ok(a), Ok(b)) = (parse_cpu(a), parse_cpu(b)) else {
                return bad("must be CPU numbers or ranges separated by commas, e.g. 0-3,6");
            };
            if a > b {
                return bad("a range must go upwards");
            }
        }
        Ok(CpuList(s.to_string()))
    }
    /// The compact list (`0-3,6`) of the given CPU numbers, e.g. a board profile's core
    /// set. Fails on an empty set.
    pub fn from_cpus(cpus: impl IntoIterator<Item = u32>) -> Result<Self, CgroupError> {
        let mut v: Vec<u32> = cpus.into_iter().collect();
        v.sort_unstable();
        v.dedup();
        let mut parts = Vec::new();
        let mut i = 0;
        while i < v.len() {
            let start = v[i];
            while i + 1 < v.len() && v[i + 1] == v[i] + 1 {
                i += 1;
            }
            parts.push(if v[i] == start {
                start.to_string()
            } else {
                format!("{start}-{}", v[i])
            });
            i += 1;
        }
        CpuList::new(&parts.join(","))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
    /// The CPUs in the list, expanded.
    pub fn cpus(&self) -> Vec<u32> {
        let mut v = Vec::new();
        for part in self.0.split(',') {
            let (a, b) = part.split_once('-').unwrap_or((part, part));
            if let (Ok(a), Ok(b)) = (parse_cpu(a), parse_cpu(b)) {
                v.extend(a..=b);
            }
        }
        v
    }
}

fn parse_cpu(s: &str) -> Result<u32, ()> {
    if s.is_empty() || s.len() > 4 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(());
    }
    s.parse().map_err(|_| ())
}

impl TryFrom<String> for CpuList {
    type Error = CgroupError;
    fn try_from(s: String) -> Result<Self, CgroupError> {
        CpuList::new(&s)
    }
}
impl From<CpuList> for String {
    fn from(c: CpuList) -> String {
        c.0
    }
}
impl fmt::Display for CpuList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The limits of one cgroup, in kernel units. `None` means "no limit" (the kernel
/// default), and re-applying a spec with `None` lifts a limit set earlier.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
pub struct CgroupLimits {
    /// Hard memory limit in bytes (v2 `memory.max`, v1 `memory.limit_in_bytes`): the
    /// OOM killer runs inside the cgroup when it is reached.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory_max: Option<u64>,
    /// Throttling point in bytes (v2 `memory.high`; v1 has only the weaker
    /// `memory.soft_limit_in_bytes`, applied under global pressure).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory_high: Option<u64>,
    /// Swap the cgroup may use in bytes (v2 `memory.swap.max`; v1 `memory.memsw.limit_in_bytes`
    /// = memory_max + swap, written only when swap accounting is compiled in).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory_swap_max: Option<u64>,
    /// CPU bandwidth in percent of one CPU (v2 `cpu.max`, v1 `cpu.cfs_quota_us`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu_max_percent: Option<u32>,
    /// Relative CPU weight, 1..=10000, default 100 (v2 `cpu.weight`, v1 `cpu.shares`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu_weight: Option<u32>,
    /// Maximum number of tasks (processes and threads) (`pids.max`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pids_max: Option<u32>,
    /// CPUs the app may run on (`cpuset.cpus`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpus: Option<CpuList>,
}

impl CgroupLimits {
    /// Checks ranges the kernel would refuse, so that a bad value fails at planning
    /// time and not halfway through applying.
    pub fn validate(&self) -> Result<(), CgroupError> {
        let bad = |what, value: String, reason| {
            Err(CgroupError::InvalidLimit {
                what,
                value,
                reason,
            })
        };
        if let Some(w) = self.cpu_weight {
            if !(1..=10_000).contains(&w) {
                return bad("cpu weight", w.to_string(), "must be 1 to 10000");
            }
        }
        if let Some(p) = self.cpu_max_percent {
            if !(1..=100_000).contains(&p) {
                return bad("cpu percentage", p.to_string(), "must be 1 to 100000");
            }
        }
        if self.pids_max == Some(0) {
            return bad("pids max", "0".into(), "must be at least 1");
        }
        if self.memory_max.is_some_and(|m| m < 4096) {
            return bad(
                "memory max",
                format!("{:?}", self.memory_max),
                "must be at least 4K",
            );
        }
        Ok(())
    }
}

/// What one app's cgroup should be: its leaf name under the parent and its limits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CgroupSpec {
    /// The leaf directory name, `app-ID.scope` (systemd's naming for a scope unit, so
    /// the tree reads naturally under `systemd-cgls`).
    pub name: String,
    pub limits: CgroupLimits,
    /// The device numbers the app may open; `None` leaves device access unconfined (a
    /// cgroup not made for an app's sandbox, or re-applying limits to a running app,
    /// which keeps the rules it was created with). `Some` confines it to exactly these:
    /// v1 `devices.deny`/`devices.allow`, v2 a BPF program the launcher attaches
    /// ([`crate::Cgroup::device_program_target`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub devices: Option<Vec<DeviceRule>>,
}

/// One value a controller needs written into the app's cgroup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Setting {
    pub controller: Controller,
    /// Interface file name, e.g. `memory.max`.
    pub file: &'static str,
    pub value: Value,
    /// Skipped when the file does not exist (a kernel built without the feature, e.g. swap
    /// accounting); a missing mandatory file is an error.
    pub optional: bool,
}

/// What to write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    Text(String),
    /// v1 cpuset: a new cpuset cgroup starts with empty `cpus`/`mems` and refuses tasks
    /// until they are set, so copy the parent's value.
    FromParent,
}

impl Setting {
    pub(crate) fn text(controller: Controller, file: &'static str, v: impl ToString) -> Self {
        Setting {
            controller,
            file,
            value: Value::Text(v.to_string()),
            optional: false,
        }
    }
    pub(crate) fn optional(mut self) -> Self {
        self.optional = true;
        self
    }
}

impl CgroupSpec {
    /// The spec for `app`'s cgroup: leaf `app-ID.scope`. App IDs cannot hold `/` or `..`,
    /// so the name is always a single path component.
    pub fn for_app(app: &AppId, limits: CgroupLimits) -> Result<Self, CgroupError> {
        limits.validate()?;
        Ok(CgroupSpec {
            name: leaf_name(app),
            limits,
            devices: None,
        })
    }

    /// Every value to write, in order, for a hierarchy of `version`. Pure: unit tests
    /// check it, `appmgr` can print it.
    pub fn settings(&self, version: CgroupVersion) -> Vec<Setting> {
        let l = &self.limits;
        let mut out = Vec::new();
        match version {
            CgroupVersion::V2 => {
                out.extend(cpuset::v2(l));
                out.extend(memory::v2(l));
                out.extend(cpu::v2(l));
                out.extend(pids::v2(l));
            }
            CgroupVersion::V1 => {
                // cpuset first: v1 refuses tasks in a cpuset without cpus and mems.
                out.extend(cpuset::v1(l));
                out.extend(memory::v1(l));
                out.extend(cpu::v1(l));
                out.extend(pids::v1(l));
                if let Some(d) = &self.devices {
                    out.extend(devices::v1(d));
                }
            }
        }
        out
    }
}

/// `app-ID.scope`.
pub fn leaf_name(app: &AppId) -> String {
    format!("app-{}.scope", app.as_str())
}

/// `launch-ID.scope`: the sibling of the app's cgroup that holds the launcher and the
/// sandbox's init, so that the app's cgroup holds the app's own tasks only (its
/// `pids.max` counts exactly them).
pub fn helper_leaf_name(app_leaf: &str) -> String {
    let id = app_leaf
        .strip_prefix("app-")
        .and_then(|s| s.strip_suffix(".scope"))
        .unwrap_or(app_leaf);
    format!("launch-{id}.scope")
}

/// The app ID in a leaf name, if it is one of appmgr's.
pub fn app_of_leaf(name: &str) -> Option<AppId> {
    let id = name.strip_prefix("app-")?.strip_suffix(".scope")?;
    AppId::new(id).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_lists() {
        assert_eq!(CpuList::new("0-2,5").unwrap().cpus(), vec![0, 1, 2, 5]);
        assert_eq!(
            CpuList::from_cpus([5, 0, 2, 1, 1]).unwrap().as_str(),
            "0-2,5"
        );
        assert_eq!(CpuList::from_cpus([7]).unwrap().as_str(), "7");
        assert!(CpuList::from_cpus([]).is_err());
        for bad in ["", "a", "3-1", "1,,2", "-1", "1-", "0 1", "99999"] {
            assert!(CpuList::new(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn leaf_names_round_trip() {
        let id = AppId::new("org.example.Hmi").unwrap();
        assert_eq!(leaf_name(&id), "app-org.example.Hmi.scope");
        assert_eq!(app_of_leaf("app-org.example.Hmi.scope"), Some(id));
        assert_eq!(app_of_leaf("user.slice"), None);
        assert_eq!(app_of_leaf("app-...scope"), None);
    }

    #[test]
    fn limits_are_validated() {
        let id = AppId::new("org.example.A").unwrap();
        let l = CgroupLimits {
            cpu_weight: Some(0),
            ..Default::default()
        };
        assert!(CgroupSpec::for_app(&id, l).is_err());
        let l = CgroupLimits {
            pids_max: Some(0),
            ..Default::default()
        };
        assert!(CgroupSpec::for_app(&id, l).is_err());
    }
}
