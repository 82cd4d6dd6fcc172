//! Updates that fetch only what changed.
//!
//! `publish` also pushes a **file index** of the bundle: for every regular file of at least
//! [`MIN_FILE`] bytes, its path in the tree and where its bytes are in the bundle file.
//! The bundle layer's annotations name the index blob ([`ANN_INDEX_DIGEST`],
//! [`ANN_INDEX_SIZE`]).
//!
//! - Uncompressed payload (index version 1): the content's offset, size and sha256.
//! - zstd payload (version 2): each such file's content is a zstd frame of its own
//!   ([`appmgr_bundle::frames`]); the entry gives the frame's offset, length and sha256,
//!   and in `raw` the content's size and sha256.
//!
//! A device that has a version of the same app installed reads the index and, for each
//! file whose installed copy has that content (and, for a frame, compresses to that
//! frame), takes those bytes from the copy instead of the network
//! ([`crate::stream::Splice`]); everything else comes with range requests. The stream it reads is byte for byte the bundle file: the layer's digest,
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
    /// Where its bytes start in the bundle file: the content, or its zstd frame.
    pub offset: u64,
    pub size: u64,
    /// Hex sha256 of those bytes.
    pub sha256: String,
    /// For a frame: the content it decompresses to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub raw: Option<Raw>,
}

/// The content of a file whose bytes in the bundle are a zstd frame.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Raw {
    pub size: u64,
    pub sha256: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Index {
    pub version: u32,
    pub files: Vec<IndexEntry>,
}

/// The index of the bundle file `f`, or `None` when it has no payload member.
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
            return build_framed(f, e.raw_file_position(), e.size()).map(Some);
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
            raw: None,
        });
    }
    Ok(Some(Index { version: 1, files }))
}

/// Counts what is read through it.
struct Counted<R> {
    inner: R,
    n: u64,
}

impl<R: Read> Read for Counted<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.n += n as u64;
        Ok(n)
    }
}

/// Hashes what is written to it.
struct HashSink(sha2::Sha256);

impl io::Write for HashSink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.update(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// One zstd frame of a payload: where it is (compressed, from the payload's start) and
/// what it decompresses to (where in the tar, its length and sha256).
struct Frame {
    c_off: u64,
    c_len: u64,
    u_off: u64,
    u_len: u64,
    u_sha256: String,
}

/// The index of a zstd payload of `len` bytes at `start` in `f`: the files whose content
/// is exactly one frame. Two passes: the frames, then the tar entries they decompress to.
fn build_framed(f: &std::fs::File, start: u64, len: u64) -> io::Result<Index> {
    let open = || -> io::Result<io::Take<std::fs::File>> {
        let mut c = f.try_clone()?;
        c.seek(SeekFrom::Start(start))?;
        Ok(c.take(len))
    };
    let mut src = io::BufReader::with_capacity(
        1 << 16,
        Counted {
            inner: open()?,
            n: 0,
        },
    );
    let mut frames = Vec::new();
    let mut u_off = 0;
    loop {
        let c_off = src.get_ref().n - src.buffer().len() as u64;
        if c_off >= len {
            break;
        }
        let mut dec = zstd::stream::read::Decoder::with_buffer(&mut src)?.single_frame();
        let mut h = HashSink(sha2::Sha256::new());
        let u_len = io::copy(&mut dec, &mut h)?;
        drop(dec);
        let c_end = src.get_ref().n - src.buffer().len() as u64;
        if c_end <= c_off {
            return Err(io::Error::other("a zstd frame of no bytes"));
        }
        frames.push(Frame {
            c_off,
            c_len: c_end - c_off,
            u_off,
            u_len,
            u_sha256: hex::encode(h.0.finalize()),
        });
        u_off += u_len;
    }
    let by_start: std::collections::HashMap<u64, &Frame> = frames
        .iter()
        .filter(|fr| fr.u_len >= MIN_FILE)
        .map(|fr| (fr.u_off, fr))
        .collect();
    let mut inner = tar::Archive::new(zstd::stream::read::Decoder::new(open()?)?);
    let mut framed = Vec::new();
    for e in inner.entries()? {
        let e = e?;
        if e.header().entry_type() != tar::EntryType::Regular || e.size() < MIN_FILE {
            continue;
        }
        let Some(fr) = by_start
            .get(&e.raw_file_position())
            .filter(|fr| fr.u_len == e.size())
        else {
            continue;
        };
        let path = e.path()?.to_string_lossy().into_owned();
        framed.push((path.strip_prefix("./").unwrap_or(&path).to_string(), *fr));
    }
    drop(inner);
    // The frames' own digests, once the tar is read (the clones share the offset).
    let mut files = Vec::with_capacity(framed.len());
    for (path, fr) in framed {
        let mut frame = f.try_clone()?;
        frame.seek(SeekFrom::Start(start + fr.c_off))?;
        files.push(IndexEntry {
            path,
            offset: start + fr.c_off,
            size: fr.c_len,
            sha256: sha256_of(&mut io::BufReader::new(frame.take(fr.c_len)))?,
            raw: Some(Raw {
                size: fr.u_len,
                sha256: fr.u_sha256.clone(),
            }),
        });
    }
    files.sort_by_key(|e| e.offset);
    Ok(Index { version: 2, files })
}

/// Parses an index read from a remote; its entries must be sorted by offset, not
/// overlap, and lie within a bundle of `bundle_size` bytes.
pub fn parse(bytes: &[u8], bundle_size: u64) -> Result<Index, String> {
    let i: Index = serde_json::from_slice(bytes).map_err(|e| format!("not a file index: {e}"))?;
    if i.version != 1 && i.version != 2 {
        return Err(format!("file index version {}, 1 or 2 expected", i.version));
    }
    let hex64 = |h: &str| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit());
    // Version 1 indexes content, version 2 zstd frames: every entry says what it is.
    if i.files.iter().any(|f| {
        (f.raw.is_some() != (i.version == 2)) || f.raw.as_ref().is_some_and(|r| !hex64(&r.sha256))
    }) {
        return Err(format!(
            "file index version {}: an entry of the other kind",
            i.version
        ));
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
        if !hex64(&f.sha256) {
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
            raw: None,
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
        assert!(parse(br#"{"version":3,"files":[]}"#, 10).is_err());
        // A frame entry in a version 1 index, a content entry in a version 2 one.
        let mut framed = e(512, 100);
        framed.raw = Some(Raw {
            size: 300,
            sha256: "1".repeat(64),
        });
        for (version, files) in [(1, vec![framed.clone()]), (2, vec![e(512, 100)])] {
            let b = serde_json::to_vec(&Index { version, files }).unwrap();
            assert!(parse(&b, 4096).is_err(), "{version}");
        }
        let b = serde_json::to_vec(&Index {
            version: 2,
            files: vec![framed],
        })
        .unwrap();
        assert!(parse(&b, 4096).is_ok());
        assert!(parse(br#"{"version":1,"files":[],"x":1}"#, 10).is_err());
    }
}
