//! Writing the change sequence `STATE/records.seq` (its meaning and reading are in
//! `appmgr_state::generation`): odd before a change, even after.

use crate::error::StoreError;
use appmgr_state::generation::{read, SEQ_FILE};
use std::path::Path;

const SEQ_TMP: &str = ".records.seq.tmp";

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
