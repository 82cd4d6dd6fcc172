//! The memory controller.
//!
//! v2 (cgroup-v2.rst, "Memory Interface Files"): `memory.max` is the hard limit (the OOM
//! killer runs in the cgroup when reclaim cannot keep usage under it), `memory.high` the
//! throttle point, `memory.swap.max` the swap allowance, `memory.oom.group` = 1 makes the
//! OOM killer take the whole app rather than one arbitrary process of it.
//! `memory.events` counts `oom_kill`s; `memory.peak` (5.19+) is the high-water mark.
//!
//! v1: `memory.limit_in_bytes`, `memory.soft_limit_in_bytes` (only a reclaim hint),
//! `memory.memsw.limit_in_bytes` = memory + swap (only with swap accounting, and it must
//! never be below `limit_in_bytes`, so it is lifted first and set last);
//! `memory.oom_control` has `oom_kill N` (4.13+); `memory.max_usage_in_bytes` the peak.

use crate::fsutil;
use crate::spec::{CgroupLimits, Controller, Setting};
use crate::{CgroupError, CgroupVersion};
use std::path::Path;

fn max_or(v: Option<u64>) -> String {
    v.map_or_else(|| "max".to_string(), |n| n.to_string())
}
fn v1_or(v: Option<u64>) -> String {
    v.map_or_else(|| "-1".to_string(), |n| n.to_string())
}

pub(crate) fn v2(l: &CgroupLimits) -> Vec<Setting> {
    let m = Controller::Memory;
    vec![
        Setting::text(m, "memory.high", max_or(l.memory_high)),
        Setting::text(m, "memory.max", max_or(l.memory_max)),
        Setting::text(m, "memory.swap.max", max_or(l.memory_swap_max)).optional(),
        Setting::text(m, "memory.oom.group", "1").optional(),
    ]
}

pub(crate) fn v1(l: &CgroupLimits) -> Vec<Setting> {
    let m = Controller::Memory;
    let memsw = match (l.memory_max, l.memory_swap_max) {
        (Some(mem), Some(swap)) => Some(mem.saturating_add(swap)),
        _ => None,
    };
    vec![
        Setting::text(m, "memory.memsw.limit_in_bytes", "-1").optional(),
        Setting::text(m, "memory.limit_in_bytes", v1_or(l.memory_max)),
        Setting::text(m, "memory.soft_limit_in_bytes", v1_or(l.memory_high)),
        Setting::text(m, "memory.memsw.limit_in_bytes", v1_or(memsw)).optional(),
    ]
}

/// How many processes the OOM killer killed in the cgroup.
pub(crate) fn oom_kills(v: CgroupVersion, dir: &Path) -> Result<u64, CgroupError> {
    let (file, key) = match v {
        CgroupVersion::V2 => ("memory.events", "oom_kill"),
        CgroupVersion::V1 => ("memory.oom_control", "oom_kill"),
    };
    Ok(fsutil::read_key_opt(&dir.join(file), key)?.unwrap_or(0))
}

/// How often usage hit the hard limit (v2 `memory.events` `max`, v1 `memory.failcnt`).
pub(crate) fn max_hits(v: CgroupVersion, dir: &Path) -> Result<u64, CgroupError> {
    Ok(match v {
        CgroupVersion::V2 => fsutil::read_key_opt(&dir.join("memory.events"), "max")?,
        CgroupVersion::V1 => fsutil::read_u64_opt(&dir.join("memory.failcnt"))?,
    }
    .unwrap_or(0))
}

pub(crate) fn current(v: CgroupVersion, dir: &Path) -> Result<Option<u64>, CgroupError> {
    fsutil::read_u64_opt(&dir.join(match v {
        CgroupVersion::V2 => "memory.current",
        CgroupVersion::V1 => "memory.usage_in_bytes",
    }))
}

pub(crate) fn peak(v: CgroupVersion, dir: &Path) -> Result<Option<u64>, CgroupError> {
    fsutil::read_u64_opt(&dir.join(match v {
        CgroupVersion::V2 => "memory.peak",
        CgroupVersion::V1 => "memory.max_usage_in_bytes",
    }))
}

pub(crate) fn read_limits(
    v: CgroupVersion,
    dir: &Path,
    l: &mut CgroupLimits,
) -> Result<(), CgroupError> {
    match v {
        CgroupVersion::V2 => {
            l.memory_max = fsutil::read_limit_opt(&dir.join("memory.max"))?;
            l.memory_high = fsutil::read_limit_opt(&dir.join("memory.high"))?;
            l.memory_swap_max = fsutil::read_limit_opt(&dir.join("memory.swap.max"))?;
        }
        CgroupVersion::V1 => {
            l.memory_max = fsutil::read_limit_opt(&dir.join("memory.limit_in_bytes"))?;
            l.memory_high = fsutil::read_limit_opt(&dir.join("memory.soft_limit_in_bytes"))?;
            let memsw = fsutil::read_limit_opt(&dir.join("memory.memsw.limit_in_bytes"))?;
            l.memory_swap_max = match (memsw, l.memory_max) {
                (Some(sw), Some(m)) => Some(sw.saturating_sub(m)),
                _ => None,
            };
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::Value;

    fn vals(s: &[Setting]) -> Vec<(&'static str, String)> {
        s.iter()
            .map(|s| match &s.value {
                Value::Text(t) => (s.file, t.clone()),
                Value::FromParent => (s.file, "<parent>".into()),
            })
            .collect()
    }

    #[test]
    fn v2_values() {
        let l = CgroupLimits {
            memory_max: Some(256 << 20),
            memory_high: Some(200 << 20),
            memory_swap_max: Some(0),
            ..Default::default()
        };
        assert_eq!(
            vals(&v2(&l)),
            [
                ("memory.high", "209715200".into()),
                ("memory.max", "268435456".into()),
                ("memory.swap.max", "0".into()),
                ("memory.oom.group", "1".into()),
            ]
        );
        let none = vals(&v2(&CgroupLimits::default()));
        assert_eq!(none[0].1, "max");
        assert_eq!(none[1].1, "max");
        assert_eq!(none[2].1, "max");
    }

    #[test]
    fn v1_memsw_is_lifted_first_and_is_memory_plus_swap() {
        let l = CgroupLimits {
            memory_max: Some(64 << 20),
            memory_swap_max: Some(16 << 20),
            ..Default::default()
        };
        let v = vals(&v1(&l));
        assert_eq!(v[0], ("memory.memsw.limit_in_bytes", "-1".into()));
        assert_eq!(v[1], ("memory.limit_in_bytes", (64u64 << 20).to_string()));
        assert_eq!(v[2], ("memory.soft_limit_in_bytes", "-1".into()));
        assert_eq!(
            v[3],
            ("memory.memsw.limit_in_bytes", (80u64 << 20).to_string())
        );
        // Without a swap limit memsw stays unlimited.
        let l = CgroupLimits {
            memory_max: Some(64 << 20),
            ..Default::default()
        };
        assert_eq!(vals(&v1(&l))[3].1, "-1");
    }
}
