//! Writing the per-ref state records (their format and reading are in `appmgr_state::record`).
//!
//! A record is replaced by writing a temporary file, fsyncing it, renaming it over the old
//! one and fsyncing the directory: the rename is the commit point of every operation.

use crate::error::StoreError;
use appmgr_state::record::{StateRecord, RECORD_FILE, RECORD_TMP};
use std::fs;
use std::path::Path;

/// Atomically replaces the record in `dir` (which must exist). Durable when it returns.
pub(crate) fn write(dir: &Path, record: &StateRecord) -> Result<(), StoreError> {
    let tmp = dir.join(RECORD_TMP);
    let dst = dir.join(RECORD_FILE);
    crate::fsutil::write_json_synced(&tmp, &dst, record)?;
    // dir is STATE/deploy/KIND/ID/ARCH/BRANCH.
    let root = dir.ancestors().nth(5).unwrap_or(dir);
    crate::generation::begin(root)?;
    crate::crash::point("before-switch");
    fs::rename(&tmp, &dst).map_err(StoreError::io("rename state record into", &dst))?;
    crate::fsutil::sync_dir(dir)?;
    crate::generation::end(root);
    crate::crash::point("after-switch");
    Ok(())
}
