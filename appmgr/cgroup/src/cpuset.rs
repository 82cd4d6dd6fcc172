//! The cpuset controller: `cpuset.cpus` pins the app to a set of cores (board profiles
//! name core sets such as "big" or "little").
//!
//! v2: an empty `cpuset.cpus` means "the parent's", so no limit is written as `""`; memory
//! nodes are left to the parent. v1: a new cpuset starts with empty `cpus` and `mems` and
//! refuses tasks (`ENOSPC`) until both are set, so both are copied from the parent unless
//! given.

use crate::fsutil;
use crate::spec::{CgroupLimits, Controller, CpuList, Setting, Value};
use crate::{CgroupError, CgroupVersion};
use std::path::Path;

pub(crate) fn v2(l: &CgroupLimits) -> Vec<Setting> {
    let cpus = l.cpus.as_ref().map_or("", CpuList::as_str);
    vec![Setting::text(Controller::Cpuset, "cpuset.cpus", cpus)]
}

pub(crate) fn v1(l: &CgroupLimits) -> Vec<Setting> {
    let c = Controller::Cpuset;
    let cpus = match &l.cpus {
        Some(c) => Value::Text(c.to_string()),
        None => Value::FromParent,
    };
    vec![
        Setting {
            controller: c,
            file: "cpuset.cpus",
            value: cpus,
            optional: false,
        },
        Setting {
            controller: c,
            file: "cpuset.mems",
            value: Value::FromParent,
            optional: false,
        },
    ]
}

pub(crate) fn read_limits(
    v: CgroupVersion,
    dir: &Path,
    parent: &Path,
    l: &mut CgroupLimits,
) -> Result<(), CgroupError> {
    let own = fsutil::read_opt(&dir.join("cpuset.cpus"))?;
    let own = own.as_deref().map(str::trim).unwrap_or("");
    // In v1 an unpinned app carries a copy of its parent's list; report it as unpinned.
    let inherited = match v {
        CgroupVersion::V2 => own.is_empty(),
        CgroupVersion::V1 => {
            fsutil::read_opt(&parent.join("cpuset.cpus"))?
                .as_deref()
                .map(str::trim)
                == Some(own)
        }
    };
    l.cpus = if inherited {
        None
    } else {
        CpuList::new(own).ok()
    };
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values() {
        let l = CgroupLimits {
            cpus: Some(CpuList::new("2-3").unwrap()),
            ..Default::default()
        };
        assert_eq!(v2(&l)[0].value, Value::Text("2-3".into()));
        assert_eq!(v1(&l)[0].value, Value::Text("2-3".into()));
        assert_eq!(v1(&l)[1].value, Value::FromParent);
        assert_eq!(
            v2(&CgroupLimits::default())[0].value,
            Value::Text(String::new())
        );
        assert_eq!(v1(&CgroupLimits::default())[0].value, Value::FromParent);
    }
}
