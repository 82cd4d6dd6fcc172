//! Small helpers that attach the path to every I/O error.

use crate::CgroupError;
use std::fs;
use std::io::Write as _;
use std::path::Path;

pub(crate) fn read(path: &Path) -> Result<String, CgroupError> {
    fs::read_to_string(path).map_err(|source| CgroupError::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// Reads a file that may be missing (older kernel, controller not enabled).
pub(crate) fn read_opt(path: &Path) -> Result<Option<String>, CgroupError> {
    match fs::read_to_string(path) {
        Ok(s) => Ok(Some(s)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(CgroupError::Read {
            path: path.to_path_buf(),
            source,
        }),
    }
}

fn parse_u64(path: &Path, s: &str) -> Result<u64, CgroupError> {
    s.trim().parse().map_err(|_| CgroupError::Parse {
        path: path.to_path_buf(),
        value: s.trim().to_string(),
    })
}

pub(crate) fn read_u64_opt(path: &Path) -> Result<Option<u64>, CgroupError> {
    read_opt(path)?.map(|s| parse_u64(path, &s)).transpose()
}

/// A limit file holding a number or `max` (v2) / `-1` or a huge number (v1).
pub(crate) fn read_limit_opt(path: &Path) -> Result<Option<u64>, CgroupError> {
    let Some(s) = read_opt(path)? else {
        return Ok(None);
    };
    let t = s.trim();
    if t == "max" || t == "-1" || t.is_empty() {
        return Ok(None);
    }
    let n = parse_u64(path, t)?;
    // v1 reports "unlimited" as PAGE_COUNTER_MAX * PAGE_SIZE (about 2^63).
    Ok((n < 1 << 62).then_some(n))
}

/// The value of `key` in a flat-keyed file such as `memory.events` (`oom_kill 3`).
pub(crate) fn read_key_opt(path: &Path, key: &str) -> Result<Option<u64>, CgroupError> {
    let Some(s) = read_opt(path)? else {
        return Ok(None);
    };
    for line in s.lines() {
        if let Some((k, v)) = line.split_once(' ') {
            if k == key {
                return parse_u64(path, v).map(Some);
            }
        }
    }
    Ok(None)
}

/// One `write(2)` of the whole value, as cgroupfs expects. The file must exist: cgroupfs
/// never creates files, so `create(false)` turns a typo into an error rather than a
/// silently ignored regular file.
pub(crate) fn write(path: &Path, value: &str) -> Result<(), CgroupError> {
    let err = |source| CgroupError::Write {
        path: path.to_path_buf(),
        value: value.to_string(),
        source,
    };
    let mut f = fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(path)
        .map_err(err)?;
    // An empty value must still reach the kernel (v2 `cpuset.cpus` = "" means "the
    // parent's"), but write_all of nothing makes no write(2) at all: send a newline,
    // which every cgroup file parser strips.
    let bytes = if value.is_empty() { "\n" } else { value };
    f.write_all(bytes.as_bytes()).map_err(err)
}

/// The pids listed in a `cgroup.procs` file; an absent file (cgroup already removed)
/// lists none.
pub(crate) fn read_pids(path: &Path) -> Result<Vec<i32>, CgroupError> {
    let Some(s) = read_opt(path)? else {
        return Ok(Vec::new());
    };
    s.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            l.trim().parse().map_err(|_| CgroupError::Parse {
                path: path.to_path_buf(),
                value: l.to_string(),
            })
        })
        .collect()
}
