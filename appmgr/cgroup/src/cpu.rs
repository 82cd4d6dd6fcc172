//! The cpu controller (and v1's cpuacct for CPU time).
//!
//! A percentage of one CPU becomes a CFS bandwidth quota over a 100 ms period: 30 % is
//! 30 ms of CPU time per 100 ms (v2 `cpu.max` = `"30000 100000"`, v1
//! `cpu.cfs_quota_us`/`cpu.cfs_period_us`); 150 % is 150 ms per period, i.e. 1.5 CPUs.
//! The weight uses v2's scale (1..=10000, default 100); v1's `cpu.shares` default is
//! 1024, so shares = weight × 1024 / 100, clamped to the kernel's [2, 262144].

use crate::fsutil;
use crate::spec::{CgroupLimits, Controller, Setting};
use crate::{CgroupError, CgroupVersion};
use std::path::Path;
use std::time::Duration;

/// CFS period in microseconds. 100 ms is the kernel default: shorter periods cost
/// scheduler overhead, longer ones make throttling visible as stutter in HMI apps.
pub const PERIOD_US: u64 = 100_000;

/// The quota in microseconds per [`PERIOD_US`] for `percent` of one CPU.
pub fn quota_us(percent: u32) -> u64 {
    u64::from(percent) * PERIOD_US / 100
}

/// v1 `cpu.shares` for a v2-scale weight.
pub fn shares_for_weight(weight: u32) -> u64 {
    (u64::from(weight) * 1024 / 100).clamp(2, 262_144)
}

pub(crate) fn v2(l: &CgroupLimits) -> Vec<Setting> {
    let c = Controller::Cpu;
    let max = match l.cpu_max_percent {
        Some(p) => format!("{} {}", quota_us(p), PERIOD_US),
        None => format!("max {PERIOD_US}"),
    };
    vec![
        Setting::text(c, "cpu.max", max),
        Setting::text(c, "cpu.weight", l.cpu_weight.unwrap_or(100)),
    ]
}

pub(crate) fn v1(l: &CgroupLimits) -> Vec<Setting> {
    let c = Controller::Cpu;
    let quota = l
        .cpu_max_percent
        .map_or_else(|| "-1".to_string(), |p| quota_us(p).to_string());
    vec![
        Setting::text(c, "cpu.cfs_period_us", PERIOD_US),
        Setting::text(c, "cpu.cfs_quota_us", quota),
        Setting::text(
            c,
            "cpu.shares",
            shares_for_weight(l.cpu_weight.unwrap_or(100)),
        ),
    ]
}

/// CPU time used by the cgroup: v2 `cpu.stat` `usage_usec` in the cgroup's directory,
/// v1 `cpuacct.usage` (nanoseconds) in the cpuacct hierarchy's directory.
pub(crate) fn usage(v: CgroupVersion, dir: &Path) -> Result<Option<Duration>, CgroupError> {
    Ok(match v {
        CgroupVersion::V2 => {
            fsutil::read_key_opt(&dir.join("cpu.stat"), "usage_usec")?.map(Duration::from_micros)
        }
        CgroupVersion::V1 => {
            fsutil::read_u64_opt(&dir.join("cpuacct.usage"))?.map(Duration::from_nanos)
        }
    })
}

pub(crate) fn read_limits(
    v: CgroupVersion,
    dir: &Path,
    l: &mut CgroupLimits,
) -> Result<(), CgroupError> {
    let pct = |quota: u64, period: u64| {
        (period > 0).then(|| u32::try_from(quota * 100 / period).unwrap_or(u32::MAX))
    };
    match v {
        CgroupVersion::V2 => {
            if let Some(s) = fsutil::read_opt(&dir.join("cpu.max"))? {
                let mut it = s.split_whitespace();
                if let (Some(q), Some(p)) = (it.next(), it.next()) {
                    if let (Ok(q), Ok(p)) = (q.parse::<u64>(), p.parse::<u64>()) {
                        l.cpu_max_percent = pct(q, p);
                    }
                }
            }
            l.cpu_weight = fsutil::read_u64_opt(&dir.join("cpu.weight"))?
                .map(|w| u32::try_from(w).unwrap_or(u32::MAX));
        }
        CgroupVersion::V1 => {
            let q = fsutil::read_limit_opt(&dir.join("cpu.cfs_quota_us"))?;
            let p = fsutil::read_u64_opt(&dir.join("cpu.cfs_period_us"))?;
            if let (Some(q), Some(p)) = (q, p) {
                l.cpu_max_percent = pct(q, p);
            }
            l.cpu_weight = fsutil::read_u64_opt(&dir.join("cpu.shares"))?
                .map(|s| u32::try_from(s * 100 / 1024).unwrap_or(u32::MAX));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::Value;

    fn text(s: &Setting) -> &str {
        match &s.value {
            Value::Text(t) => t,
            Value::FromParent => "<parent>",
        }
    }

    #[test]
    fn percent_becomes_quota() {
        let l = CgroupLimits {
            cpu_max_percent: Some(30),
            cpu_weight: Some(50),
            ..Default::default()
        };
        let s = v2(&l);
        assert_eq!((s[0].file, text(&s[0])), ("cpu.max", "30000 100000"));
        assert_eq!((s[1].file, text(&s[1])), ("cpu.weight", "50"));
        let s = v1(&l);
        assert_eq!(text(&s[0]), "100000");
        assert_eq!((s[1].file, text(&s[1])), ("cpu.cfs_quota_us", "30000"));
        assert_eq!((s[2].file, text(&s[2])), ("cpu.shares", "512"));
        let l = CgroupLimits {
            cpu_max_percent: Some(150),
            ..Default::default()
        };
        assert_eq!(text(&v2(&l)[0]), "150000 100000");
    }

    #[test]
    fn unlimited_and_default_weight() {
        let s = v2(&CgroupLimits::default());
        assert_eq!(text(&s[0]), "max 100000");
        assert_eq!(text(&s[1]), "100");
        let s = v1(&CgroupLimits::default());
        assert_eq!(text(&s[1]), "-1");
        assert_eq!(text(&s[2]), "1024");
        assert_eq!(shares_for_weight(1), 10);
        assert_eq!(shares_for_weight(10_000), 102_400);
    }
}
