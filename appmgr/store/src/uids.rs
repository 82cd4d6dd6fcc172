//! App uid allocation: every uid is handed out once, to one ref, for the life of the store.
//!
//! A uid owns more than the app's processes: its HOME (`STATE/data/ID`), `/dev/shm` files,
//! SysV IPC objects and anything else it created keep that uid after a remove. Reusing it
//! for another app would give that app all of it. So the uid stays in the ref's record
//! after a remove (a reinstall gets it back and can open its own HOME), and new uids come
//! from a persistent high-water mark, `STATE/uids.json`, that only grows:
//!
//! ```json
//! { "highest-allocated": 70002 }
//! ```
//!
//! The next uid is one above the highest of: the mark, every uid in a record, and the
//! owner of every entry of `STATE/data` (within the configured range). The last two make
//! the mark self-healing (a lost or older-than-the-records file never causes reuse) and
//! cover stores written by older versions of appmgr, which released the uid at remove.
//!
//! Migration from those versions: a removed app's record has no uid; if its data
//! directory is owned by a uid that no record and no other data directory holds, that uid
//! was this app's and is given back to it (so the reinstall opens its HOME). Otherwise it
//! gets a fresh uid. The mark is written with the same temporary-file, fsync, rename,
//! fsync-directory sequence as the records, before the record that uses the uid: a crash
//! in between only skips a uid.

use crate::error::StoreError;
use crate::fsutil;
use appmgr_types::RefName;
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::fs;
use std::ops::RangeInclusive;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

pub(crate) const UIDS_FILE: &str = "uids.json";
const UIDS_TMP: &str = ".uids.json.tmp";
/// The per-app data directories (`STATE/data/ID`), created by the launchers.
pub(crate) const DATA_DIR: &str = "data";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct HighWater {
    highest_allocated: u32,
}

/// Reads the mark; `None` when there is none yet.
fn read_mark(root: &Path) -> Result<Option<u32>, StoreError> {
    let path = root.join(UIDS_FILE);
    let bytes = match fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(StoreError::io("read uid record", &path)(e)),
    };
    serde_json::from_slice::<HighWater>(&bytes)
        .map(|h| Some(h.highest_allocated))
        .map_err(|e| StoreError::BadRecord {
            path,
            reason: e.to_string(),
        })
}

/// Atomically raises the mark to `uid`. Durable when it returns.
pub(crate) fn record(root: &Path, uid: u32) -> Result<(), StoreError> {
    if read_mark(root)?.is_some_and(|m| m >= uid) {
        return Ok(());
    }
    let tmp = root.join(UIDS_TMP);
    let dst = root.join(UIDS_FILE);
    fsutil::write_json_synced(
        &tmp,
        &dst,
        &HighWater {
            highest_allocated: uid,
        },
    )?;
    fs::rename(&tmp, &dst).map_err(StoreError::io("rename uid record into", &dst))?;
    fsutil::sync_dir(root)
}

/// Owners of the entries of `STATE/data`, by name.
fn data_owners(root: &Path) -> Result<Vec<(String, u32)>, StoreError> {
    let dir = root.join(DATA_DIR);
    let mut out = Vec::new();
    for name in fsutil::list_dir(&dir)? {
        let p = dir.join(&name);
        match fs::symlink_metadata(&p) {
            Ok(md) => out.push((name, md.uid())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(StoreError::io("inspect data directory", &p)(e)),
        }
    }
    Ok(out)
}

/// Chooses the uid for `r`, which has none yet. `held` are the uids of every record.
/// Writes nothing: the caller records the choice with [`record`] before its commit point.
pub(crate) fn choose(
    root: &Path,
    range: &RangeInclusive<u32>,
    r: &RefName,
    held: &BTreeSet<u32>,
) -> Result<u32, StoreError> {
    let owners = data_owners(root)?;
    // A store from an older appmgr: this app's data directory is owned by the uid it had
    // before its remove released it. Give it back if nothing else has it.
    if let Some((_, uid)) = owners.iter().find(|(n, _)| n == r.id.as_str()) {
        let uid = *uid;
        let elsewhere = owners.iter().any(|(n, u)| *u == uid && n != r.id.as_str());
        if range.contains(&uid) && !held.contains(&uid) && !elsewhere {
            return Ok(uid);
        }
    }
    let seen = read_mark(root)?
        .into_iter()
        .chain(held.iter().copied())
        .chain(owners.iter().map(|(_, u)| *u))
        .filter(|u| range.contains(u))
        .max();
    let next = match seen {
        None => Some(*range.start()),
        Some(u) => u.checked_add(1).filter(|n| range.contains(n)),
    };
    next.ok_or_else(|| StoreError::UidsExhausted {
        ref_name: r.clone(),
        first: *range.start(),
        last: *range.end(),
    })
}
