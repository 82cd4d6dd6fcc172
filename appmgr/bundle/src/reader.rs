//! Opening, verifying and importing a bundle in one streaming pass over one file
//! descriptor.
//!
//! Order of checks: the container headers are compared byte for byte with the ones appmgr
//! writes; the manifest (at most 64 KiB) and its 64-byte signature are read; the signature
//! is verified strictly against every trusted key before the manifest is even parsed;
//! then the key's scope is checked against the manifest's ID. Only then does the payload
//! stream start: its bytes are hashed as they are read from the same descriptor and
//! handed, decompressed and validated, to the sink. The digest and size are compared at
//! the end, so a sink must treat everything it received as staging until
//! [`OpenBundle::import`] returns `Ok`. Because the file is opened once and read once,
//! rewriting or replacing the file while it is read cannot make appmgr install anything
//! but the verified bytes: changed bytes fail the digest, a renamed-over file is not the
//! one being read.

use crate::container::{self, BLOCK};
use crate::error::BundleError;
use crate::keys;
use crate::manifest::{Compression, Manifest, MAX_MANIFEST_BYTES};
use crate::payload::{PayloadSink, RelPath, SinkError};
use crate::trust::TrustStore;
use crate::unpack::{self, Limits, UnpackError, MAX_ENTRIES};
use sha2::{Digest, Sha256};
use std::fs::File;
use std::io::{self, BufReader, Read};
use std::path::{Path, PathBuf};

/// A bundle whose manifest passed signature, scope and format checks; its payload has not
/// been read yet.
pub struct OpenBundle {
    path: PathBuf,
    file: BufReader<Box<dyn Read + Send>>,
    manifest: Manifest,
    manifest_bytes: Vec<u8>,
    signature: Vec<u8>,
    sbom: Option<Vec<u8>>,
    signer: Option<String>,
}

/// What an import read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportSummary {
    pub entries: u64,
    pub installed_size: u64,
    pub payload_sha256: String,
}

fn io_err(path: &Path) -> impl Fn(io::Error) -> BundleError + '_ {
    move |source| {
        if source.kind() == io::ErrorKind::UnexpectedEof {
            BundleError::Truncated {
                path: path.to_path_buf(),
                what: "unexpected end of file".into(),
            }
        } else {
            BundleError::Io {
                path: path.to_path_buf(),
                source,
            }
        }
    }
}

fn malformed(path: &Path, reason: impl Into<String>) -> BundleError {
    BundleError::Malformed {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

/// Reads one member header and requires it to be exactly what appmgr writes for `names`
/// (the first that matches) with a size accepted by `size_ok`.
fn read_member_header(
    r: &mut impl Read,
    path: &Path,
    names: &[&str],
    size_ok: impl Fn(u64) -> bool,
) -> Result<(String, u64), BundleError> {
    let mut h = [0u8; BLOCK];
    if !container::read_full(r, &mut h).map_err(io_err(path))? {
        return Err(BundleError::Truncated {
            path: path.to_path_buf(),
            what: format!("missing member {}", names[0]),
        });
    }
    let name = container::parse_name(&h);
    let Some(&expected) = names.iter().find(|n| n.as_bytes() == name) else {
        return Err(malformed(
            path,
            // Not the bytes found: they may be anything (a file the caller may not read).
            format!(
                "expected member {}, found another (not an appmgr bundle?)",
                names.join(" or ")
            ),
        ));
    };
    let size = container::parse_size(&h)
        .ok_or_else(|| malformed(path, format!("bad size field in header of {expected}")))?;
    if h != container::header(expected, size) {
        return Err(malformed(
            path,
            format!("header of {expected} is not in appmgr's canonical form (corrupted?)"),
        ));
    }
    if !size_ok(size) {
        return Err(malformed(
            path,
            format!("member {expected} has a bad size ({size})"),
        ));
    }
    Ok((expected.to_string(), size))
}

fn read_padding(r: &mut impl Read, path: &Path, size: u64) -> Result<(), BundleError> {
    let mut pad = [0u8; BLOCK];
    let n = container::padding(size);
    if n > 0 {
        if !container::read_full(r, &mut pad[..n]).map_err(io_err(path))? {
            return Err(BundleError::Truncated {
                path: path.to_path_buf(),
                what: "missing padding".into(),
            });
        }
        if pad[..n].iter().any(|b| *b != 0) {
            return Err(malformed(path, "non-zero padding"));
        }
    }
    Ok(())
}

fn read_member(r: &mut impl Read, path: &Path, size: u64) -> Result<Vec<u8>, BundleError> {
    let mut buf = vec![0u8; size as usize];
    if !container::read_full(r, &mut buf).map_err(io_err(path))? && size > 0 {
        return Err(BundleError::Truncated {
            path: path.to_path_buf(),
            what: "member data".into(),
        });
    }
    read_padding(r, path, size)?;
    Ok(buf)
}

/// Opens a bundle and reads its manifest and signature. With `trust`, the signature must
/// verify with a trusted key whose scope covers the ID; without (for `bundle inspect`), the
/// signature is not checked and [`OpenBundle::signer`] is `None`.
pub fn open(path: &Path, trust: Option<&TrustStore>) -> Result<OpenBundle, BundleError> {
    let f = File::open(path).map_err(io_err(path))?;
    open_file(f, path, trust)
}

/// [`open`] on a file that is open already (a descriptor passed over D-Bus): the bundle is
/// read through this one open file description only; `path` names it in errors.
pub fn open_file(
    f: File,
    path: &Path,
    trust: Option<&TrustStore>,
) -> Result<OpenBundle, BundleError> {
    let meta = f.metadata().map_err(io_err(path))?;
    if !meta.is_file() {
        return Err(malformed(path, "not a regular file"));
    }
    open_reader(Box::new(f), path, trust)
}

/// [`open_file`] on a stream (a download): the bundle is read once, front to back, and
/// never past its end (the import reads the container's end and refuses anything after
/// it). `name` names it in errors. The stream must end where the bundle ends.
pub fn open_reader(
    r: Box<dyn Read + Send>,
    name: &Path,
    trust: Option<&TrustStore>,
) -> Result<OpenBundle, BundleError> {
    let path = name;
    let mut file = BufReader::with_capacity(256 * 1024, r);
    let (_, msize) = read_member_header(&mut file, path, &[container::MANIFEST_NAME], |s| {
        s > 0 && s <= MAX_MANIFEST_BYTES as u64
    })?;
    let manifest_bytes = read_member(&mut file, path, msize)?;
    let (_, ssize) =
        read_member_header(&mut file, path, &[container::SIGNATURE_NAME], |s| s == 64)?;
    let sig = read_member(&mut file, path, ssize)?;

    let (manifest, signer) = check_signed_manifest(&manifest_bytes, &sig, path, trust)?;
    let sbom = match &manifest.sbom {
        None => None,
        Some(declared) => {
            let (_, size) = read_member_header(&mut file, path, &[container::SBOM_NAME], |s| {
                s == declared.size
            })?;
            let bytes = read_member(&mut file, path, size)?;
            let actual = hex::encode(Sha256::digest(&bytes));
            if actual != declared.sha256 {
                return Err(BundleError::DigestMismatch {
                    path: path.to_path_buf(),
                    member: "SBOM",
                    expected: declared.sha256.clone(),
                    actual,
                });
            }
            // Signed, but still refused when appmgr could not answer from it.
            crate::sbom::parse(&bytes)
                .map_err(|e| malformed(path, format!("{}: {e}", container::SBOM_NAME)))?;
            Some(bytes)
        }
    };
    let info = manifest
        .payload
        .as_ref()
        .expect("signed manifests have a payload");
    let name = match info.compression {
        Compression::None => container::PAYLOAD_NAME,
        Compression::Zstd => container::PAYLOAD_ZST_NAME,
    };
    read_member_header(&mut file, path, &[name], |s| s == info.size)?;
    Ok(OpenBundle {
        path: path.to_path_buf(),
        file,
        manifest,
        manifest_bytes,
        signature: sig,
        sbom,
        signer,
    })
}

/// Checks a manifest's signature against every trusted key (strictly, before the manifest
/// is even parsed), parses it, and checks the signing key's scope against its ID. Without
/// `trust`, only parses (the signer is `None`). Used on a bundle's first members and on a
/// signed manifest that a remote lists beside a bundle (`name` names it in errors).
pub fn check_signed_manifest(
    manifest_bytes: &[u8],
    sig: &[u8],
    name: &Path,
    trust: Option<&TrustStore>,
) -> Result<(Manifest, Option<String>), BundleError> {
    let path = name;
    if manifest_bytes.is_empty() || manifest_bytes.len() > MAX_MANIFEST_BYTES || sig.len() != 64 {
        return Err(malformed(path, "manifest or signature has a bad size"));
    }
    let mut verified_by: Vec<&crate::trust::TrustedKey> = Vec::new();
    if let Some(trust) = trust {
        verified_by = trust
            .keys
            .iter()
            .filter(|k| keys::verify_strict(&k.key, manifest_bytes, sig))
            .collect();
        if verified_by.is_empty() {
            return Err(BundleError::Untrusted {
                path: path.to_path_buf(),
            });
        }
    }
    let manifest =
        Manifest::parse(manifest_bytes, true).map_err(|source| BundleError::Manifest {
            path: path.to_path_buf(),
            source,
        })?;
    let signer = match trust {
        None => None,
        Some(_) => match verified_by.iter().find(|k| k.covers(&manifest.id)) {
            Some(k) => Some(k.name.clone()),
            None => {
                return Err(BundleError::OutOfScope {
                    path: path.to_path_buf(),
                    key: verified_by[0].name.clone(),
                    id: manifest.id.to_string(),
                })
            }
        },
    };
    Ok((manifest, signer))
}

struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
    count: u64,
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }
}

/// A sink that checks and discards: `bundle verify`.
pub struct DiscardSink;

impl PayloadSink for DiscardSink {
    fn directory(&mut self, _: &RelPath) -> Result<(), SinkError> {
        Ok(())
    }
    fn file(&mut self, _: &RelPath, _: bool, _: u64, r: &mut dyn Read) -> Result<(), SinkError> {
        io::copy(r, &mut io::sink())?;
        Ok(())
    }
    fn symlink(&mut self, _: &RelPath, _: &str) -> Result<(), SinkError> {
        Ok(())
    }
    fn hardlink(&mut self, _: &RelPath, _: &RelPath) -> Result<(), SinkError> {
        Ok(())
    }
}

impl OpenBundle {
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// The exact signed manifest bytes.
    pub fn manifest_bytes(&self) -> &[u8] {
        &self.manifest_bytes
    }

    /// The manifest's 64-byte ed25519 signature.
    pub fn signature(&self) -> &[u8] {
        &self.signature
    }

    /// The SBOM member's exact bytes, checked against the manifest's `[sbom]` digest.
    pub fn sbom(&self) -> Option<&[u8]> {
        self.sbom.as_deref()
    }

    /// The name of the trusted key that signed it (`None` when opened without trust).
    pub fn signer(&self) -> Option<&str> {
        self.signer.as_deref()
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Streams the payload into `sink`, then checks digest, size, counts and the end of
    /// the container. On `Err`, the sink's output must be discarded.
    pub fn import(mut self, sink: &mut dyn PayloadSink) -> Result<ImportSummary, BundleError> {
        let path = self.path.clone();
        let info = self
            .manifest
            .payload
            .clone()
            .expect("signed manifests have a payload");
        if info.entries > MAX_ENTRIES {
            return Err(BundleError::Limit {
                path,
                reason: format!(
                    "{} entries declared, at most {MAX_ENTRIES} allowed",
                    info.entries
                ),
            });
        }
        let limits = Limits {
            max_entries: info.entries,
            max_installed_size: info.installed_size,
            max_stream_bytes: info
                .installed_size
                .saturating_add(info.entries.saturating_add(4).saturating_mul(3 * 1024))
                .saturating_add(1 << 20),
        };
        let mut hashed = HashingReader {
            inner: (&mut self.file).take(info.size),
            hasher: Sha256::new(),
            count: 0,
        };
        let conv = |e: UnpackError| match e {
            UnpackError::Io(source) => io_err(&path)(source),
            UnpackError::Malformed(reason) => malformed(&path, reason),
            UnpackError::Unsafe { entry, reason } => BundleError::Unsafe {
                path: path.clone(),
                entry,
                reason,
            },
            UnpackError::Limit(reason) => BundleError::Limit {
                path: path.clone(),
                reason,
            },
            UnpackError::Sink { entry, source } => BundleError::Sink {
                path: path.clone(),
                entry,
                source,
            },
        };
        let stats = match info.compression {
            Compression::None => unpack::unpack(&mut hashed, limits, sink).map_err(conv)?,
            Compression::Zstd => {
                let mut dec = zstd::stream::read::Decoder::new(&mut hashed)
                    .map_err(|e| malformed(&path, format!("zstd: {e}")))?;
                let s = unpack::unpack(&mut dec, limits, sink).map_err(conv)?;
                // The tar end marker may leave decompressed bytes unread; they are covered
                // by the digest, but bound them.
                let n = io::copy(&mut (&mut dec).take((1 << 20) + 1), &mut io::sink())
                    .map_err(|e| malformed(&path, format!("zstd: {e}")))?;
                if n > 1 << 20 {
                    return Err(BundleError::Limit {
                        path,
                        reason: "more than 1 MiB of data after the payload tar's end".into(),
                    });
                }
                s
            }
        };
        io::copy(&mut hashed, &mut io::sink()).map_err(io_err(&path))?;
        if hashed.count != info.size {
            return Err(BundleError::Truncated {
                path,
                what: format!("payload has {} of {} bytes", hashed.count, info.size),
            });
        }
        let actual = hex::encode(hashed.hasher.finalize());
        if actual != info.sha256 {
            return Err(BundleError::DigestMismatch {
                path,
                member: "payload",
                expected: info.sha256,
                actual,
            });
        }
        if stats.entries != info.entries || stats.installed_size != info.installed_size {
            return Err(malformed(
                &path,
                format!(
                    "payload has {} entries and {} bytes, manifest declares {} and {}",
                    stats.entries, stats.installed_size, info.entries, info.installed_size
                ),
            ));
        }
        read_padding(&mut self.file, &path, info.size)?;
        let mut trailer = [0u8; 2 * BLOCK];
        if !container::read_full(&mut self.file, &mut trailer).map_err(io_err(&path))? {
            return Err(BundleError::Truncated {
                path,
                what: "missing end-of-archive blocks".into(),
            });
        }
        if trailer.iter().any(|b| *b != 0) {
            return Err(malformed(&path, "data after the payload member"));
        }
        let mut extra = [0u8; 1];
        if container::read_full(&mut self.file, &mut extra).map_err(io_err(&path))? {
            return Err(malformed(
                &path,
                "trailing data after the end of the archive",
            ));
        }
        Ok(ImportSummary {
            entries: stats.entries,
            installed_size: stats.installed_size,
            payload_sha256: actual,
        })
    }
}

/// Opens and fully verifies a bundle without writing anything.
pub fn verify(
    path: &Path,
    trust: &TrustStore,
) -> Result<(Manifest, String, ImportSummary), BundleError> {
    let b = open(path, Some(trust))?;
    let manifest = b.manifest().clone();
    let signer = b.signer().unwrap_or_default().to_string();
    let summary = b.import(&mut DiscardSink)?;
    Ok((manifest, signer, summary))
}
