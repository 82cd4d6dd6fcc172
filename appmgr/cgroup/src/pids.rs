//! The pids controller: `pids.max` bounds tasks (processes and threads), so a fork bomb
//! stops there with `EAGAIN` from fork/clone. `pids.events` `max N` counts refused forks
//! (same file in v1 and v2); `pids.current` the live count.

use crate::fsutil;
use crate::spec::{CgroupLimits, Controller, Setting};
use crate::CgroupError;
use std::path::Path;

fn value(l: &CgroupLimits) -> String {
    l.pids_max
        .map_or_else(|| "max".to_string(), |n| n.to_string())
}

pub(crate) fn v2(l: &CgroupLimits) -> Vec<Setting> {
    vec![Setting::text(Controller::Pids, "pids.max", value(l))]
}

pub(crate) fn v1(l: &CgroupLimits) -> Vec<Setting> {
    vec![Setting::text(Controller::Pids, "pids.max", value(l))]
}

/// How many forks were refused because of `pids.max`.
pub(crate) fn max_hits(dir: &Path) -> Result<u64, CgroupError> {
    Ok(fsutil::read_key_opt(&dir.join("pids.events"), "max")?.unwrap_or(0))
}

pub(crate) fn current(dir: &Path) -> Result<Option<u64>, CgroupError> {
    fsutil::read_u64_opt(&dir.join("pids.current"))
}

pub(crate) fn read_limits(dir: &Path, l: &mut CgroupLimits) -> Result<(), CgroupError> {
    l.pids_max = fsutil::read_limit_opt(&dir.join("pids.max"))?
        .map(|n| u32::try_from(n).unwrap_or(u32::MAX));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::Value;

    #[test]
    fn values() {
        let l = CgroupLimits {
            pids_max: Some(64),
            ..Default::default()
        };
        assert_eq!(v2(&l)[0].value, Value::Text("64".into()));
        assert_eq!(v1(&l)[0].value, Value::Text("64".into()));
        assert_eq!(
            v2(&CgroupLimits::default())[0].value,
            Value::Text("max".into())
        );
    }
}
