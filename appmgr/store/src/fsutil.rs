//! Small file-system helpers that attach the path to every error.

use crate::error::StoreError;
use std::fs;
use std::path::Path;

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
    Ok(crate::view::list_dir(dir)?)
}
