//! Small file-system helpers that attach the path to every error.

use crate::error::StoreError;
use serde::Serialize;
use std::fs;
use std::io::Write;
use std::path::Path;

/// Writes `value` as pretty JSON (with a final newline) to `tmp` and fsyncs it: the
/// first half of an atomic record update, whose caller then renames `tmp` over `dst`
/// and fsyncs the directory. `dst` only names the record in a serialization error.
pub(crate) fn write_json_synced<T: Serialize>(
    tmp: &Path,
    dst: &Path,
    value: &T,
) -> Result<(), StoreError> {
    let mut bytes = serde_json::to_vec_pretty(value).map_err(|e| StoreError::BadRecord {
        path: dst.to_path_buf(),
        reason: e.to_string(),
    })?;
    bytes.push(b'\n');
    let mut f = fs::File::create(tmp).map_err(StoreError::io("create record", tmp))?;
    f.write_all(&bytes)
        .and_then(|_| f.sync_all())
        .map_err(StoreError::io("write record", tmp))
}

pub(crate) fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    fs::File::open(dir)
        .and_then(|f| f.sync_all())
        .map_err(StoreError::io("fsync directory", dir))
}

/// Flushes the whole file system holding `path` (objects, checkouts, directories).
pub(crate) fn syncfs(path: &Path) -> Result<(), StoreError> {
    let f = fs::File::open(path).map_err(StoreError::io("open for syncfs", path))?;
    rustix::fs::syncfs(&f).map_err(|e| StoreError::Io {
        step: "syncfs",
        path: path.to_path_buf(),
        source: e.into(),
    })
}

pub(crate) fn create_dir_all(dir: &Path) -> Result<(), StoreError> {
    fs::create_dir_all(dir).map_err(StoreError::io("create directory", dir))
}

/// Removes a file or a tree if it exists.
pub(crate) fn remove_any(path: &Path) -> Result<(), StoreError> {
    let md = match fs::symlink_metadata(path) {
        Ok(md) => md,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(StoreError::io("inspect", path)(e)),
    };
    let r = if md.is_dir() {
        fs::remove_dir_all(path)
    } else {
        fs::remove_file(path)
    };
    match r {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(StoreError::io("remove", path)(e)),
    }
}

/// Names in a directory; an absent directory has none.
pub(crate) fn list_dir(dir: &Path) -> Result<Vec<String>, StoreError> {
    Ok(appmgr_state::view::list_dir(dir)?)
}
