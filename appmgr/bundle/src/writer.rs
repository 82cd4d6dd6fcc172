//! `appmgr bundle create`: builds the canonical payload tar, then the signed container.
//!
//! Both sources go through the same rules as install: a root directory is walked with
//! `lstat` (devices, FIFOs and sockets are refused, hardlinked files become tar hardlinks
//! to their first name, symlink targets are checked), and a tar produced by a build system
//! is parsed by the same validating unpacker the installer uses. Either way the payload is
//! re-written canonically (sorted walk order, mtime 0, owner 0, modes 0755/0644), so equal
//! trees give equal payloads and digests.

use crate::container;
use crate::error::BundleError;
use crate::keys;
use crate::manifest::{Compression, Manifest, PayloadInfo};
use crate::payload::{PayloadSink, RelPath, SinkError, DIR_MODE, EXEC_MODE, FILE_MODE};
use crate::sbom::{SbomFormat, SbomInfo};
use crate::unpack::{self, Limits, UnpackError, MAX_ENTRIES};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{self, BufWriter, Read, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

/// Where the tree comes from.
pub enum Source<'a> {
    /// A directory whose contents become the tree.
    Root(&'a Path),
    /// A tar archive produced by a build system (treated as untrusted).
    Tar(&'a Path),
}

/// What `create` wrote.
#[derive(Debug, Clone)]
pub struct Created {
    pub manifest: Manifest,
    pub payload: PayloadInfo,
    pub bundle_size: u64,
}

struct HashingWriter<W> {
    inner: W,
    hasher: Sha256,
    count: u64,
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Where the payload tar goes: the file as it is, or zstd frames.
trait PayloadOut: Write {
    /// Whether a file's content can be a frame of its own ([`crate::frames`]).
    fn frames(&self) -> bool {
        false
    }
    /// Writes exactly `size` bytes of `r` as a frame of their own (only when
    /// [`PayloadOut::frames`]).
    fn own_frame(&mut self, _r: &mut dyn Read, _size: u64) -> io::Result<()> {
        Err(io::Error::other("an uncompressed payload has no frames"))
    }
}

impl<W: Write> PayloadOut for HashingWriter<W> {}

impl<W: Write> PayloadOut for crate::frames::Frames<W> {
    fn frames(&self) -> bool {
        true
    }
    fn own_frame(&mut self, r: &mut dyn Read, size: u64) -> io::Result<()> {
        crate::frames::Frames::own_frame(self, r, size)
    }
}

/// A sink that writes a canonical tar.
struct TarSink<W: Write> {
    builder: tar::Builder<W>,
    entries: u64,
    installed_size: u64,
}

fn base_header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_size(size);
    h.set_mtime(0);
    h.set_uid(0);
    h.set_gid(0);
    h
}

impl<W: PayloadOut> PayloadSink for TarSink<W> {
    fn directory(&mut self, path: &RelPath) -> Result<(), SinkError> {
        self.entries += 1;
        let mut h = base_header(tar::EntryType::Directory, DIR_MODE, 0);
        self.builder
            .append_data(&mut h, format!("{path}/"), io::empty())?;
        Ok(())
    }
    fn file(
        &mut self,
        path: &RelPath,
        exec: bool,
        size: u64,
        r: &mut dyn Read,
    ) -> Result<(), SinkError> {
        self.entries += 1;
        self.installed_size += size;
        let mode = if exec { EXEC_MODE } else { FILE_MODE };
        let mut h = base_header(tar::EntryType::Regular, mode, size);
        let mut exact = ExactReader {
            inner: r,
            remaining: size,
        };
        // A large file of a zstd payload: its content is a frame of its own. The entry's
        // bytes are what `append_data` writes (header, content, zero padding); a path too
        // long for the ustar header (a GNU long-name entry) is written unframed.
        if size >= crate::frames::FRAMED_MIN
            && self.builder.get_ref().frames()
            && h.set_path(path.as_str()).is_ok()
        {
            h.set_cksum();
            let w = self.builder.get_mut();
            w.write_all(h.as_bytes())?;
            w.own_frame(&mut exact, size)?;
            let pad = (512 - size % 512) % 512;
            w.write_all(&[0u8; 512][..pad as usize])?;
        } else {
            self.builder
                .append_data(&mut h, path.as_str(), &mut exact)?;
        }
        if exact.remaining != 0 {
            return Err(format!("{path} changed size while it was read").into());
        }
        Ok(())
    }
    fn symlink(&mut self, path: &RelPath, target: &str) -> Result<(), SinkError> {
        self.entries += 1;
        let mut h = base_header(tar::EntryType::Symlink, 0o777, 0);
        self.builder.append_link(&mut h, path.as_str(), target)?;
        Ok(())
    }
    fn hardlink(&mut self, path: &RelPath, target: &RelPath) -> Result<(), SinkError> {
        self.entries += 1;
        let mut h = base_header(tar::EntryType::Link, FILE_MODE, 0);
        self.builder
            .append_link(&mut h, path.as_str(), target.as_str())?;
        Ok(())
    }
}

/// Reads at most `remaining` bytes and fails if the source ends early (a file that shrank
/// while it was read would otherwise produce a corrupt tar).
struct ExactReader<'a> {
    inner: &'a mut dyn Read,
    remaining: u64,
}

impl Read for ExactReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.remaining == 0 {
            return Ok(0);
        }
        let max = buf
            .len()
            .min(self.remaining.min(usize::MAX as u64) as usize);
        let n = self.inner.read(&mut buf[..max])?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "file shrank while it was read",
            ));
        }
        self.remaining -= n as u64;
        Ok(n)
    }
}

fn unsafe_entry(path: &Path, entry: &str, reason: impl Into<String>) -> BundleError {
    BundleError::Unsafe {
        path: path.to_path_buf(),
        entry: appmgr_types::escape_for_display(entry),
        reason: reason.into(),
    }
}

/// Walks `root` in sorted order into `sink`.
fn walk(root: &Path, sink: &mut dyn PayloadSink) -> Result<(), BundleError> {
    let io_at = |p: &Path| {
        let p = p.to_path_buf();
        move |source| BundleError::Io { path: p, source }
    };
    let meta = fs::symlink_metadata(root).map_err(io_at(root))?;
    if !meta.is_dir() {
        return Err(BundleError::Malformed {
            path: root.to_path_buf(),
            reason: "--root must be a directory".into(),
        });
    }
    let mut inodes: HashMap<(u64, u64), RelPath> = HashMap::new();
    let mut stack: Vec<(PathBuf, String)> = vec![(root.to_path_buf(), String::new())];
    let mut count = 0u64;
    while let Some((dir, rel)) = stack.pop() {
        let mut names: Vec<_> = fs::read_dir(&dir)
            .map_err(io_at(&dir))?
            .map(|e| e.map(|e| e.file_name()))
            .collect::<Result<_, _>>()
            .map_err(io_at(&dir))?;
        names.sort();
        let mut subdirs = Vec::new();
        for name in names {
            let full = dir.join(&name);
            let name = name.to_str().ok_or_else(|| {
                unsafe_entry(root, &full.to_string_lossy(), "file name is not UTF-8")
            })?;
            let relname = if rel.is_empty() {
                name.to_string()
            } else {
                format!("{rel}/{name}")
            };
            let rp = RelPath::new(&relname).map_err(|r| unsafe_entry(root, &relname, r))?;
            count += 1;
            if count > MAX_ENTRIES {
                return Err(BundleError::Limit {
                    path: root.to_path_buf(),
                    reason: format!("more than {MAX_ENTRIES} entries"),
                });
            }
            let m = fs::symlink_metadata(&full).map_err(io_at(&full))?;
            let ft = m.file_type();
            let sink_err = |source: SinkError| BundleError::Sink {
                path: root.to_path_buf(),
                entry: relname.clone(),
                source,
            };
            if ft.is_dir() {
                sink.directory(&rp).map_err(sink_err)?;
                subdirs.push((full, relname.clone()));
            } else if ft.is_file() {
                if m.nlink() > 1 {
                    if let Some(first) = inodes.get(&(m.dev(), m.ino())) {
                        sink.hardlink(&rp, first).map_err(sink_err)?;
                        continue;
                    }
                    inodes.insert((m.dev(), m.ino()), rp.clone());
                }
                let mut f = File::open(&full).map_err(io_at(&full))?;
                sink.file(&rp, m.mode() & 0o111 != 0, m.len(), &mut f)
                    .map_err(sink_err)?;
            } else if ft.is_symlink() {
                let target = fs::read_link(&full).map_err(io_at(&full))?;
                let target = target
                    .to_str()
                    .ok_or_else(|| unsafe_entry(root, &relname, "symlink target is not UTF-8"))?;
                let t = unpack::check_symlink(&rp, target.as_bytes())
                    .map_err(|r| unsafe_entry(root, &relname, r))?;
                sink.symlink(&rp, &t).map_err(sink_err)?;
            } else {
                let what = if ft.is_block_device() || ft.is_char_device() {
                    "device node"
                } else if ft.is_fifo() {
                    "FIFO"
                } else if ft.is_socket() {
                    "socket"
                } else {
                    "unsupported file type"
                };
                return Err(unsafe_entry(root, &relname, what));
            }
        }
        // Depth-first in sorted order: push in reverse so the smallest name pops first.
        for d in subdirs.into_iter().rev() {
            stack.push(d);
        }
    }
    Ok(())
}

/// Builds and signs a bundle. The output is written to a temporary file beside `out` and
/// renamed into place, so `out` is either absent, the old file, or the complete bundle.
/// `sbom` is a CycloneDX 1.5 JSON file to carry (checked with [`crate::sbom::parse`]
/// first, so a bundle never carries one `appmgr sbom` could not answer from).
pub fn create(
    manifest_path: &Path,
    source: Source<'_>,
    key_path: &Path,
    out: &Path,
    compression: Compression,
    sbom_path: Option<&Path>,
) -> Result<Created, BundleError> {
    let io_at = |p: &Path| {
        let p = p.to_path_buf();
        move |source| BundleError::Io { path: p, source }
    };
    let text = fs::read(manifest_path).map_err(io_at(manifest_path))?;
    let manifest = Manifest::parse(&text, false).map_err(|source| BundleError::Manifest {
        path: manifest_path.to_path_buf(),
        source,
    })?;
    let sbom = match sbom_path {
        None => None,
        Some(p) => {
            let mut bytes = Vec::new();
            File::open(p)
                .and_then(|f| {
                    f.take(crate::sbom::MAX_SBOM_BYTES + 1)
                        .read_to_end(&mut bytes)
                })
                .map_err(io_at(p))?;
            crate::sbom::parse(&bytes).map_err(|e| BundleError::Malformed {
                path: p.to_path_buf(),
                reason: e.to_string(),
            })?;
            let info = SbomInfo {
                format: SbomFormat::CycloneDx15,
                sha256: hex::encode(Sha256::digest(&bytes)),
                size: bytes.len() as u64,
            };
            Some((info, bytes))
        }
    };
    let key = keys::load_secret(key_path).map_err(crate::trust::TrustError::from)?;

    let dir = out
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let tmp_payload = tempfile::Builder::new()
        .prefix(".appmgr-payload")
        .tempfile_in(dir)
        .map_err(io_at(dir))?;
    let file = BufWriter::with_capacity(1 << 20, tmp_payload.reopen().map_err(io_at(dir))?);
    let hashing = HashingWriter {
        inner: file,
        hasher: Sha256::new(),
        count: 0,
    };
    let (hashing, entries, installed_size) = match compression {
        Compression::None => {
            let (h, e, s) = build_payload(hashing, &source)?;
            (h, e, s)
        }
        Compression::Zstd => {
            let enc = crate::frames::Frames::new(hashing).map_err(io_at(out))?;
            let (enc, e, s) = build_payload(enc, &source)?;
            (enc.finish().map_err(io_at(out))?, e, s)
        }
    };
    let HashingWriter {
        inner,
        hasher,
        count,
    } = hashing;
    inner
        .into_inner()
        .map_err(|e| BundleError::Io {
            path: out.to_path_buf(),
            source: e.into_error(),
        })?
        .sync_all()
        .map_err(io_at(out))?;
    let payload = PayloadInfo {
        sha256: hex::encode(hasher.finalize()),
        size: count,
        compression,
        installed_size,
        entries,
    };
    let signed = manifest.to_signed_bytes(payload.clone(), sbom.as_ref().map(|s| s.0.clone()));
    let sig = keys::sign(&key, &signed);

    let tmp_out = tempfile::Builder::new()
        .prefix(".appmgr-bundle")
        .tempfile_in(dir)
        .map_err(io_at(dir))?;
    {
        let mut w = BufWriter::with_capacity(1 << 20, tmp_out.as_file());
        let name = match compression {
            Compression::None => container::PAYLOAD_NAME,
            Compression::Zstd => container::PAYLOAD_ZST_NAME,
        };
        let mut payload_file = File::open(tmp_payload.path()).map_err(io_at(dir))?;
        (|| -> io::Result<()> {
            container::write_header(&mut w, container::MANIFEST_NAME, signed.len() as u64)?;
            w.write_all(&signed)?;
            container::write_padding(&mut w, signed.len() as u64)?;
            container::write_header(&mut w, container::SIGNATURE_NAME, 64)?;
            w.write_all(&sig)?;
            container::write_padding(&mut w, 64)?;
            if let Some((info, bytes)) = &sbom {
                container::write_header(&mut w, container::SBOM_NAME, info.size)?;
                w.write_all(bytes)?;
                container::write_padding(&mut w, info.size)?;
            }
            container::write_header(&mut w, name, count)?;
            let copied = io::copy(&mut payload_file, &mut w)?;
            if copied != count {
                return Err(io::Error::other("payload temp file changed"));
            }
            container::write_padding(&mut w, count)?;
            container::write_trailer(&mut w)?;
            w.flush()
        })()
        .map_err(io_at(out))?;
    }
    // A bundle is public data; tempfile creates 0600.
    use std::os::unix::fs::PermissionsExt;
    tmp_out
        .as_file()
        .set_permissions(fs::Permissions::from_mode(0o644))
        .map_err(io_at(out))?;
    tmp_out.as_file().sync_all().map_err(io_at(out))?;
    let bundle_size = tmp_out.as_file().metadata().map_err(io_at(out))?.len();
    tmp_out.persist(out).map_err(|e| BundleError::Io {
        path: out.to_path_buf(),
        source: e.error,
    })?;
    Ok(Created {
        manifest: Manifest::parse(&signed, true).expect("what we wrote parses"),
        payload,
        bundle_size,
    })
}

fn build_payload<W: PayloadOut>(w: W, source: &Source<'_>) -> Result<(W, u64, u64), BundleError> {
    let mut sink = TarSink {
        builder: tar::Builder::new(w),
        entries: 0,
        installed_size: 0,
    };
    match source {
        Source::Root(root) => walk(root, &mut sink)?,
        Source::Tar(path) => {
            let f = File::open(path).map_err(|source| BundleError::Io {
                path: path.to_path_buf(),
                source,
            })?;
            let limits = Limits {
                max_entries: MAX_ENTRIES,
                max_installed_size: u64::MAX / 2,
                max_stream_bytes: u64::MAX,
            };
            unpack::unpack(io::BufReader::with_capacity(1 << 20, f), limits, &mut sink).map_err(
                |e| match e {
                    UnpackError::Io(source) => BundleError::Io {
                        path: path.to_path_buf(),
                        source,
                    },
                    UnpackError::Malformed(reason) | UnpackError::Limit(reason) => {
                        BundleError::Malformed {
                            path: path.to_path_buf(),
                            reason,
                        }
                    }
                    UnpackError::Unsafe { entry, reason } => BundleError::Unsafe {
                        path: path.to_path_buf(),
                        entry,
                        reason,
                    },
                    UnpackError::Sink { entry, source } => BundleError::Sink {
                        path: path.to_path_buf(),
                        entry,
                        source,
                    },
                },
            )?;
        }
    }
    let (entries, size) = (sink.entries, sink.installed_size);
    let w = sink
        .builder
        .into_inner()
        .map_err(|source| BundleError::Io {
            path: PathBuf::from("payload"),
            source,
        })?;
    Ok((w, entries, size))
}
