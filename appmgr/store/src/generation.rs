//! A sequence number over everything `list`/`info` show (records and corrupt marks), in
//! `STATE/records.seq`, for readers that cache (appmgrd's `List`). Seqlock style: every
//! change makes it odd before and even after, so a reader that reads the same even number
//! before and after building its answer knows the answer is current. A writer that dies
//! between leaves it odd: readers then never cache until the next change completes.
//! Not synced: after a reboot every cache is empty anyway.

use crate::error::StoreError;
use std::path::Path;

pub(crate) const SEQ_FILE: &str = "records.seq";
const SEQ_TMP: &str = ".records.seq.tmp";

pub(crate) fn read(root: &Path) -> Option<u64> {
    match std::fs::read_to_string(root.join(SEQ_FILE)) {
        Ok(s) => s.trim().parse().ok(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Some(0),
        Err(_) => None,
    }
}

fn store(root: &Path, n: u64) -> Result<(), StoreError> {
    let tmp = root.join(SEQ_TMP);
    let dst = root.join(SEQ_FILE);
    std::fs::write(&tmp, format!("{n}\n")).map_err(StoreError::io("write sequence", &tmp))?;
    std::fs::rename(&tmp, &dst).map_err(StoreError::io("rename sequence into", &dst))
}

/// Before a change: odd.
pub(crate) fn begin(root: &Path) -> Result<(), StoreError> {
    let n = read(root).unwrap_or(0);
    store(root, if n % 2 == 1 { n + 2 } else { n + 1 })
}

/// After a change: even (best effort: a failure leaves it odd, which only disables
/// caching).
pub(crate) fn end(root: &Path) {
    if let Some(n) = read(root).filter(|n| n % 2 == 1) {
        let _ = store(root, n + 1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn odd_while_changing_even_after() {
        let d = tempfile::tempdir().unwrap();
        assert_eq!(read(d.path()), Some(0));
        begin(d.path()).unwrap();
        assert_eq!(read(d.path()), Some(1));
        end(d.path());
        assert_eq!(read(d.path()), Some(2));
        // A writer died after begin: the next one still goes odd, then even.
        begin(d.path()).unwrap();
        begin(d.path()).unwrap();
        assert_eq!(read(d.path()), Some(5));
        end(d.path());
        assert_eq!(read(d.path()), Some(6));
        end(d.path());
        assert_eq!(read(d.path()), Some(6));
    }
}
