//! A sequence number over everything `list`/`info` show (records and corrupt marks), in
//! `STATE/records.seq`, for readers that cache (appmgrd's `List`). Seqlock style: every
//! change makes it odd before and even after (`appmgr-store` writes it), so a reader that
//! reads the same even number before and after building its answer knows the answer is
//! current. A writer that dies between leaves it odd: readers then never cache until the
//! next change completes. Not synced: after a reboot every cache is empty anyway.

use std::path::Path;

/// The sequence file's name in the state directory.
pub const SEQ_FILE: &str = "records.seq";

/// The current number: `Some(0)` before the first change, `None` when unreadable.
pub fn read(root: &Path) -> Option<u64> {
    match std::fs::read_to_string(root.join(SEQ_FILE)) {
        Ok(s) => s.trim().parse().ok(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Some(0),
        Err(_) => None,
    }
}
