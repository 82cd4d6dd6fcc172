//! ostree content-object checksums computed with the `sha2` crate.
//!
//! libostree hashes with GLib's software SHA-256 (about 200 MB/s); `sha2` uses the CPU's
//! SHA extensions when present (about 6x faster), and the import is hash-bound. The
//! checksum of a content object is, as in `ostree_checksum_file_from_input`:
//!
//! ```text
//! sha256( BE u32 len(H) || 4 zero bytes (pad to 8) || H || file content )
//! H = GVariant "(uuuusa(ayay))": uid, gid, mode, rdev (each stored big-endian),
//!     symlink target ("" for regular files), xattrs (always empty here)
//! ```
//!
//! A unit test compares the result with libostree's own function for regular files,
//! executables, empty files and symlinks, so a change on either side is caught.

use sha2::{Digest, Sha256};
use std::io::{self, Read};
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// File type bits of `st_mode`.
pub(crate) const S_IFREG: u32 = 0o100000;
pub(crate) const S_IFLNK: u32 = 0o120000;
/// Mode of a symlink object, as `lstat` reports it.
pub(crate) const SYMLINK_MODE: u32 = S_IFLNK | 0o777;

/// The serialized GVariant file header `(uuuusa(ayay))` with empty xattrs, prefixed by
/// its big-endian length and padded to 8 bytes: the exact bytes ostree puts in front of
/// the content when it checksums a file object (and in a content stream).
pub(crate) fn file_header(uid: u32, gid: u32, mode: u32, symlink_target: &str) -> Vec<u8> {
    let mut body = Vec::with_capacity(32 + symlink_target.len());
    for v in [uid, gid, mode, 0u32] {
        // GUINT32_TO_BE then native serialization: the bytes are big-endian on any host.
        body.extend_from_slice(&v.to_be_bytes());
    }
    body.extend_from_slice(symlink_target.as_bytes());
    body.push(0);
    let string_end = body.len();
    // The empty a(ayay) takes no bytes. One framing offset (the end of the string, the
    // only variable-size member that is not last) closes the tuple; its width is the
    // smallest that can address the whole container including the offset itself.
    let width = [1usize, 2, 4, 8]
        .into_iter()
        .find(|w| *w == 8 || ((string_end + w) as u128) < (1u128 << (8 * w)))
        .unwrap_or(8);
    body.extend_from_slice(&(string_end as u64).to_le_bytes()[..width]);

    let mut out = Vec::with_capacity(8 + body.len());
    out.extend_from_slice(&(body.len() as u32).to_be_bytes());
    out.extend_from_slice(&[0u8; 4]);
    out.extend_from_slice(&body);
    out
}

/// Incremental checksum of one content object.
pub(crate) struct ObjectHasher(Sha256);

impl ObjectHasher {
    pub(crate) fn regular(executable: bool) -> Self {
        let mode = S_IFREG | if executable { 0o755 } else { 0o644 };
        Self::with_header(&file_header(0, 0, mode, ""))
    }
    pub(crate) fn with_header(header: &[u8]) -> Self {
        let mut h = Sha256::new();
        h.update(header);
        ObjectHasher(h)
    }
    pub(crate) fn update(&mut self, data: &[u8]) {
        self.0.update(data);
    }
    pub(crate) fn finish_hex(self) -> String {
        hex::encode(self.0.finalize())
    }
}

/// The checksum of a root-owned symlink object.
pub(crate) fn symlink_checksum(target: &str) -> String {
    ObjectHasher::with_header(&file_header(0, 0, SYMLINK_MODE, target)).finish_hex()
}

/// Recomputes the checksum of a file object as it is stored in a `bare` repo (owner,
/// mode and content of the object file itself). Extended attributes are not read: the
/// store never writes any, so an object that gained some fails verification in
/// `ostree fsck` instead.
pub(crate) fn checksum_bare_object(path: &Path) -> io::Result<String> {
    let md = std::fs::symlink_metadata(path)?;
    let ft = md.file_type();
    if ft.is_symlink() {
        let target = std::fs::read_link(path)?;
        let target = target.to_str().ok_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidData, "symlink target is not UTF-8")
        })?;
        let header = file_header(md.uid(), md.gid(), md.mode(), target);
        return Ok(ObjectHasher::with_header(&header).finish_hex());
    }
    if !ft.is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "object is neither a regular file nor a symlink",
        ));
    }
    let mut h = ObjectHasher::with_header(&file_header(md.uid(), md.gid(), md.mode(), ""));
    let mut f = std::fs::File::open(path)?;
    // Sized to the file (at most 1 MiB): fsck hashes thousands of mostly small objects.
    let mut buf = vec![0u8; (md.len() as usize).clamp(1, 1 << 20)];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(h.finish_hex())
}

#[cfg(test)]
mod tests {
    use super::*;
    use ostree::gio;
    use ostree::glib;

    fn ostree_checksum(mode: u32, content: &[u8], target: Option<&str>) -> String {
        let info = gio::FileInfo::new();
        info.set_attribute_uint32("unix::uid", 0);
        info.set_attribute_uint32("unix::gid", 0);
        info.set_attribute_uint32("unix::mode", mode);
        let input = gio::MemoryInputStream::from_bytes(&glib::Bytes::from(content));
        match target {
            Some(t) => {
                info.set_file_type(gio::FileType::SymbolicLink);
                info.set_symlink_target(t);
                ostree::checksum_file_from_input(
                    &info,
                    None,
                    None::<&gio::InputStream>,
                    ostree::ObjectType::File,
                    None::<&gio::Cancellable>,
                )
            }
            None => {
                info.set_file_type(gio::FileType::Regular);
                info.set_size(content.len() as i64);
                ostree::checksum_file_from_input(
                    &info,
                    None,
                    Some(&input),
                    ostree::ObjectType::File,
                    None::<&gio::Cancellable>,
                )
            }
        }
        .unwrap()
        .to_hex()
    }

    fn ours(executable: bool, content: &[u8]) -> String {
        let mut h = ObjectHasher::regular(executable);
        h.update(content);
        h.finish_hex()
    }

    #[test]
    fn regular_executable_and_empty_files_match_libostree() {
        let big: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        for content in [&b""[..], b"hello\n", &big[..]] {
            assert_eq!(
                ours(false, content),
                ostree_checksum(0o100644, content, None)
            );
            assert_eq!(
                ours(true, content),
                ostree_checksum(0o100755, content, None)
            );
        }
        // Different modes must give different objects.
        assert_ne!(ours(false, b"x"), ours(true, b"x"));
    }

    #[test]
    fn symlinks_match_libostree_for_every_offset_width() {
        // Targets around the 1-byte/2-byte framing-offset boundary, and a maximal one.
        for len in [1usize, 10, 236, 237, 238, 239, 300, 4095] {
            let target: String = "t/".repeat(len).chars().take(len).collect();
            assert_eq!(
                symlink_checksum(&target),
                ostree_checksum(SYMLINK_MODE, b"", Some(&target)),
                "target length {len}"
            );
        }
        assert_eq!(
            symlink_checksum("/usr/lib/libfoo.so.1"),
            ostree_checksum(SYMLINK_MODE, b"", Some("/usr/lib/libfoo.so.1"))
        );
    }
}
