//! Updates that fetch only what changed.
//!
//! `publish` of a bundle whose payload is uncompressed also pushes a **file index**: for
//! every regular file of at least [`MIN_FILE`] bytes, its path in the tree, the offset of
//! its content in the bundle file, its size and sha256. The bundle layer's annotations
//! name the index blob ([`ANN_INDEX_DIGEST`], [`ANN_INDEX_SIZE`]).
//!
//! A device that has a version of the same app installed reads the index and, for each
//! file whose installed copy has that size and sha256, takes those bytes from the copy
//! instead of the network ([`crate::stream::Splice`]); everything else comes with range
//! requests. The stream it reads is byte for byte the bundle file: the layer's digest,
//! the bundle's signature and its payload digest are checked on it as on a full download.
//! The index itself is not trusted: a wrong one only makes that check fail.

use serde::{Deserialize, Serialize};
use sha2::Digest;
use std::io::{self, Read, Seek, SeekFrom};

pub const ANN_INDEX_DIGEST: &str = "org.appmgr.files-index.digest";
pub const ANN_INDEX_SIZE: &str = "org.appmgr.files-index.size";
pub const INDEX_MEDIA_TYPE: &str = "application/vnd.appmgr.files-index.v1+json";
/// The largest index a device reads.
pub const MAX_INDEX: u64 = 16 << 20;
/// Smaller files are fetched with the rest: a range request costs more than they do.
pub const MIN_FILE: u64 = 64 * 1024;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IndexEntry {
    /// The path in the tree (relative, as in the payload).
    pub path: String,
    /// Where the content starts in the bundle file.
    pub offset: u64,
    pub size: u64,
    /// Hex sha256 of the content.
    pub sha256: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Index {
    pub version: u32,
    pub files: Vec<IndexEntry>,
}

/// The index of the bundle file `f`, or `None` when its payload is compressed (its
/// files' bytes are not in the file as they are in the tree).
pub fn build(f: &std::fs::File) -> io::Result<Option<Index>> {
    // The clones share the file's offset: start from the beginning.
    let mut head = f.try_clone()?;
    head.seek(SeekFrom::Start(0))?;
    let mut outer = tar::Archive::new(head);
    outer.set_ignore_zeros(false);
    let mut payload = None;
    for e in outer.entries()? {
        let e = e?;
        let name = e.path()?.to_string_lossy().into_owned();
        if name == appmgr_bundle::container::PAYLOAD_NAME {
            payload = Some((e.raw_file_position(), e.size()));
            break;
        }
        if name == appmgr_bundle::container::PAYLOAD_ZST_NAME {
            return Ok(None);
        }
    }
    let Some((start, len)) = payload else {
        return Ok(None);
    };
    let mut inner_file = f.try_clone()?;
    inner_file.seek(SeekFrom::Start(start))?;
    let mut inner = tar::Archive::new(inner_file.take(len));
    let mut files = Vec::new();
    for e in inner.entries()? {
        let mut e = e?;
        if e.header().entry_type() != tar::EntryType::Regular || e.size() < MIN_FILE {
            continue;
        }
        let path = e.path()?.to_string_lossy().into_owned();
        let path = path.strip_prefix("./").unwrap_or(&path).to_string();
        let offset = start + e.raw_file_position();
        let size = e.size();
        let mut h = sha2::Sha256::new();
        io::copy(&mut e, &mut h)?;
        files.push(IndexEntry {
            path,
            offset,
            size,
            sha256: hex::encode(h.finalize()),
        });
    }
    Ok(Some(Index { version: 1, files }))
}

/// Parses an index read from a remote; its entries must be sorted by offset, not
/// overlap, and lie within a bundle of `bundle_size` bytes.
pub fn parse(bytes: &[u8], bundle_size: u64) -> Result<Index, String> {
    let i: Index = serde_json::from_slice(bytes).map_err(|e| format!("not a file index: {e}"))?;
    if i.version != 1 {
        return Err(format!("file index version {}, 1 expected", i.version));
    }
    let mut end = 0u64;
    for f in &i.files {
        let stop = f.offset.saturating_add(f.size);
        if f.offset < end || stop > bundle_size || f.size == 0 {
            return Err(format!(
                "file index entry {}: bytes {}..{} overlap or leave the bundle",
                appmgr_types::escape_for_display(&f.path),
                f.offset,
                stop
            ));
        }
        if f.sha256.len() != 64 || !f.sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err("file index: a malformed sha256".into());
        }
        end = stop;
    }
    Ok(i)
}

/// The sha256 of what `r` yields (hex).
pub fn sha256_of(r: &mut impl Read) -> io::Result<String> {
    let mut h = sha2::Sha256::new();
    io::copy(r, &mut h)?;
    Ok(hex::encode(h.finalize()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_refuses_overlaps_and_ranges_outside_the_bundle() {
        let e = |offset, size| IndexEntry {
            path: "a".into(),
            offset,
            size,
            sha256: "0".repeat(64),
        };
        let ok = Index {
            version: 1,
            files: vec![e(512, 100), e(1024, 10)],
        };
        let b = serde_json::to_vec(&ok).unwrap();
        assert_eq!(parse(&b, 2048).unwrap(), ok);
        assert!(parse(&b, 1030).is_err());
        for bad in [
            vec![e(512, 600), e(1024, 10)],
            vec![e(u64::MAX - 1, 10)],
            vec![e(0, 0)],
        ] {
            let b = serde_json::to_vec(&Index {
                version: 1,
                files: bad,
            })
            .unwrap();
            assert!(parse(&b, 4096).is_err());
        }
        assert!(parse(br#"{"version":2,"files":[]}"#, 10).is_err());
        assert!(parse(br#"{"version":1,"files":[],"x":1}"#, 10).is_err());
    }
}
