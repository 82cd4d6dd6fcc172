//! The outer container: a plain ustar archive with these members in this order,
//! `manifest.toml`, `manifest.sig`, `sbom.cdx.json` (only when the manifest declares it)
//! and `payload.tar` or `payload.tar.zst`, followed by two zero blocks and nothing else. GNU tar and bsdtar can list and extract it.
//!
//! appmgr writes every header itself with fixed fields (mode 0644, uid/gid 0, mtime 0,
//! no owner names) and the reader compares each 512-byte header with the one it would
//! have written for that name and size, and requires all padding and the trailer to be
//! zero. So no byte of a bundle is outside what the signature, the payload digest or this
//! exact comparison covers: one flipped byte anywhere is detected.

use std::io::{self, Read, Write};

pub const BLOCK: usize = 512;
pub const MANIFEST_NAME: &str = "manifest.toml";
pub const SIGNATURE_NAME: &str = "manifest.sig";
/// Optional, between the signature and the payload; declared by the manifest's `[sbom]`.
pub const SBOM_NAME: &str = "sbom.cdx.json";
pub const PAYLOAD_NAME: &str = "payload.tar";
pub const PAYLOAD_ZST_NAME: &str = "payload.tar.zst";

/// The exact header appmgr writes for a member.
pub fn header(name: &str, size: u64) -> [u8; BLOCK] {
    let mut h = [0u8; BLOCK];
    h[..name.len()].copy_from_slice(name.as_bytes());
    h[100..108].copy_from_slice(b"0000644\0");
    h[108..116].copy_from_slice(b"0000000\0");
    h[116..124].copy_from_slice(b"0000000\0");
    h[124..136].copy_from_slice(format!("{size:011o}\0").as_bytes());
    h[136..148].copy_from_slice(b"00000000000\0");
    h[156] = b'0';
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    h[148..156].copy_from_slice(b"        ");
    let sum: u32 = h.iter().map(|b| *b as u32).sum();
    h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    h
}

/// Bytes of zero padding after a member of `size` bytes.
pub fn padding(size: u64) -> usize {
    (BLOCK - (size % BLOCK as u64) as usize) % BLOCK
}

/// Writes a member header; the caller writes `size` bytes of data, then [`write_padding`].
pub fn write_header<W: Write>(w: &mut W, name: &str, size: u64) -> io::Result<()> {
    w.write_all(&header(name, size))
}

pub fn write_padding<W: Write>(w: &mut W, size: u64) -> io::Result<()> {
    w.write_all(&[0u8; BLOCK][..padding(size)])
}

pub fn write_trailer<W: Write>(w: &mut W) -> io::Result<()> {
    w.write_all(&[0u8; 2 * BLOCK])
}

/// Parses the size field of a header (octal), for a header that may be ours.
pub fn parse_size(h: &[u8; BLOCK]) -> Option<u64> {
    let field = &h[124..136];
    let end = field.iter().position(|b| *b == 0).unwrap_or(field.len());
    let s = std::str::from_utf8(&field[..end]).ok()?;
    if s.is_empty() || !s.bytes().all(|b| (b'0'..=b'7').contains(&b)) {
        return None;
    }
    u64::from_str_radix(s, 8).ok()
}

/// The member name of a header.
pub fn parse_name(h: &[u8; BLOCK]) -> &[u8] {
    let end = h[..100].iter().position(|b| *b == 0).unwrap_or(100);
    &h[..end]
}

/// Reads exactly `buf.len()` bytes; `Ok(false)` on a clean EOF before the first byte,
/// `Err(UnexpectedEof)` on EOF in the middle.
pub fn read_full<R: Read>(r: &mut R, buf: &mut [u8]) -> io::Result<bool> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) if n == 0 => return Ok(false),
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(true)
}

/// The exact size of the bundle whose signed manifest is `manifest_len` bytes long and
/// declares an SBOM of `sbom_size` bytes (if any) and a payload of `payload_size` bytes:
/// the container has no other variable part. A download is never read past it.
pub fn bundle_size(manifest_len: u64, sbom_size: Option<u64>, payload_size: u64) -> u64 {
    let member = |size: u64| BLOCK as u64 + size + padding(size) as u64;
    member(manifest_len)
        + member(64)
        + sbom_size.map(member).unwrap_or(0)
        + member(payload_size)
        + 2 * BLOCK as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_are_valid_ustar() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.tar");
        let mut out = Vec::new();
        write_header(&mut out, "manifest.toml", 5).unwrap();
        out.extend_from_slice(b"hello");
        write_padding(&mut out, 5).unwrap();
        write_trailer(&mut out).unwrap();
        std::fs::write(&p, &out).unwrap();
        let mut a = tar::Archive::new(&out[..]);
        let mut e = a.entries().unwrap();
        let mut first = e.next().unwrap().unwrap();
        assert_eq!(first.path().unwrap().to_str(), Some("manifest.toml"));
        let mut s = String::new();
        first.read_to_string(&mut s).unwrap();
        assert_eq!(s, "hello");
        let h = header("manifest.toml", 5);
        assert_eq!(parse_size(&h), Some(5));
        assert_eq!(parse_name(&h), b"manifest.toml");
    }

    #[test]
    fn bundle_size_is_what_the_writer_writes() {
        // Members padded to blocks, two zero blocks at the end.
        assert_eq!(
            bundle_size(100, None, 1000),
            512 + 512 + 512 + 512 + 512 + 1024 + 1024
        );
        assert_eq!(
            bundle_size(512, Some(1), 0),
            1024 + 1024 + 1024 + 512 + 1024
        );
    }
}
