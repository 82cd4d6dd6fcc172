//! The payload sink: turns validated payload entries into ostree objects and a tree.
//!
//! Each content object's checksum is computed here with `sha2` while the content is read
//! (see `checksum`), then the object is handed to `write_content_trusted`, so libostree
//! never hashes file data itself. Files up to [`SPOOL_THRESHOLD`] are buffered in memory;
//! larger ones are spooled to a file in the staging directory, so memory stays bounded
//! whatever the bundle size. An object that already exists in the repo is re-verified
//! before it is reused, and rewritten if it is corrupt: libostree would otherwise skip
//! writing it and a reinstall could never repair the store.

use crate::checksum::{self, ObjectHasher, SYMLINK_MODE, S_IFREG};
use crate::error::StoreError;
use appmgr_bundle::payload::{PayloadSink, RelPath, SinkError};
use ostree::{gio, glib};
use std::collections::{HashMap, HashSet};
use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

/// Files larger than this are spooled to disk instead of buffered in memory.
pub const SPOOL_THRESHOLD: u64 = 8 << 20;
const CHUNK: usize = 1 << 20;

#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct ImportStats {
    pub files: u64,
    pub bytes: u64,
    pub objects_written: u64,
    pub objects_reused: u64,
    pub objects_repaired: u64,
}

pub(crate) struct StoreSink {
    writer: Writer,
    objects_dir: PathBuf,
    spool_dir: PathBuf,
    dirmeta: String,
    root: ostree::MutableTree,
    dirs: HashMap<String, ostree::MutableTree>,
    /// Regular files seen so far, for hardlinks: path → object checksum.
    files: HashMap<String, String>,
    /// Objects written or verified during this import.
    done: HashSet<String>,
    pub(crate) stats: ImportStats,
    /// Corrupt objects removed during this import: (device, inode) → checksum.
    pub(crate) repaired: HashMap<(u64, u64), String>,
}

fn bad(path: &RelPath, reason: impl Into<String>) -> SinkError {
    Box::new(StoreError::BadEntry {
        path: path.to_string(),
        reason: reason.into(),
    })
}

impl StoreSink {
    pub(crate) fn new(
        repo: &ostree::Repo,
        repo_path: &Path,
        spool_dir: PathBuf,
    ) -> Result<Self, StoreError> {
        let info = gio::FileInfo::new();
        info.set_attribute_uint32("unix::uid", 0);
        info.set_attribute_uint32("unix::gid", 0);
        info.set_attribute_uint32("unix::mode", 0o040000 | appmgr_bundle::payload::DIR_MODE);
        info.set_file_type(gio::FileType::Directory);
        let meta = ostree::create_directory_metadata(&info, None);
        let dirmeta = repo
            .write_metadata(
                ostree::ObjectType::DirMeta,
                None,
                &meta,
                None::<&gio::Cancellable>,
            )
            .map_err(StoreError::ostree("write directory metadata", "dirmeta"))?
            .to_hex();
        let root = ostree::MutableTree::new();
        root.set_metadata_checksum(&dirmeta);
        Ok(StoreSink {
            writer: Writer::start(repo.clone()),
            objects_dir: repo_path.join("objects"),
            spool_dir,
            dirmeta,
            root,
            dirs: HashMap::new(),
            files: HashMap::new(),
            done: HashSet::new(),
            stats: ImportStats::default(),
            repaired: HashMap::new(),
        })
    }

    pub(crate) fn root(&self) -> &ostree::MutableTree {
        &self.root
    }

    /// The tree of `dir` (None: the root), creating missing parents like `mkdir -p`.
    fn tree_of(&mut self, dir: Option<&RelPath>) -> Result<ostree::MutableTree, SinkError> {
        let Some(dir) = dir else {
            return Ok(self.root.clone());
        };
        if let Some(t) = self.dirs.get(dir.as_str()) {
            return Ok(t.clone());
        }
        let parent = self.tree_of(dir.parent().as_ref())?;
        let t = parent
            .ensure_dir(dir.file_name())
            .map_err(|e| bad(dir, format!("cannot create directory: {e}")))?;
        t.set_metadata_checksum(&self.dirmeta);
        self.dirs.insert(dir.as_str().to_string(), t.clone());
        Ok(t)
    }

    fn add_file(&mut self, path: &RelPath, checksum: &str) -> Result<(), SinkError> {
        let parent = self.tree_of(path.parent().as_ref())?;
        if matches!(
            parent.lookup(path.file_name()),
            Ok((Some(_), _)) | Ok((_, Some(_)))
        ) {
            return Err(bad(path, "appears twice in the payload"));
        }
        parent
            .replace_file(path.file_name(), checksum)
            .map_err(|e| bad(path, format!("cannot add file: {e}")))
    }

    fn object_path(&self, checksum: &str) -> PathBuf {
        self.objects_dir
            .join(&checksum[..2])
            .join(format!("{}.file", &checksum[2..]))
    }

    /// Whether the object must be written: absent, or present but corrupt (then removed).
    fn needs_write(&mut self, checksum: &str) -> Result<bool, StoreError> {
        if self.done.contains(checksum) {
            return Ok(false);
        }
        let path = self.object_path(checksum);
        match fs::symlink_metadata(&path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(true),
            Err(e) => Err(StoreError::io("inspect object", &path)(e)),
            Ok(_) => {
                let ok = checksum::checksum_bare_object(&path)
                    .map(|c| c == checksum)
                    .unwrap_or(false);
                if ok {
                    self.stats.objects_reused += 1;
                    self.done.insert(checksum.to_string());
                    Ok(false)
                } else {
                    // libostree skips objects that exist: remove the bad one so that the
                    // good content is written. Other deployments still linking the bad
                    // inode are relinked after the install (see `Store::relink`).
                    if let Ok(md) = fs::symlink_metadata(&path) {
                        use std::os::unix::fs::MetadataExt;
                        self.repaired
                            .insert((md.dev(), md.ino()), checksum.to_string());
                    }
                    fs::remove_file(&path)
                        .map_err(StoreError::io("remove corrupt object", &path))?;
                    self.stats.objects_repaired += 1;
                    Ok(true)
                }
            }
        }
    }

    /// Queues an object for the writer thread.
    fn write_object(&mut self, job: Job) -> Result<(), StoreError> {
        self.done.insert(job.checksum().to_string());
        self.stats.objects_written += 1;
        self.writer.send(job)
    }

    /// Waits until every queued object is written; the first write error, if any.
    pub(crate) fn finish(&mut self) -> Result<(), StoreError> {
        self.writer.finish()
    }
}

/// Reads exactly `size` bytes and checks that the stream ends there.
fn check_end(path: &RelPath, content: &mut dyn Read) -> Result<(), SinkError> {
    let mut one = [0u8; 1];
    match content.read(&mut one) {
        Ok(0) => Ok(()),
        Ok(_) => Err(bad(path, "content is longer than its declared size")),
        Err(e) => Err(Box::new(e)),
    }
}

impl PayloadSink for StoreSink {
    fn directory(&mut self, path: &RelPath) -> Result<(), SinkError> {
        if self.dirs.contains_key(path.as_str()) {
            return Err(bad(path, "appears twice in the payload"));
        }
        let parent = self.tree_of(path.parent().as_ref())?;
        if matches!(parent.lookup(path.file_name()), Ok((Some(_), _))) {
            return Err(bad(path, "appears twice in the payload"));
        }
        self.tree_of(Some(path)).map(|_| ())
    }

    fn file(
        &mut self,
        path: &RelPath,
        executable: bool,
        size: u64,
        content: &mut dyn Read,
    ) -> Result<(), SinkError> {
        let mode = S_IFREG
            | if executable {
                appmgr_bundle::payload::EXEC_MODE
            } else {
                appmgr_bundle::payload::FILE_MODE
            };
        let mut hasher = ObjectHasher::regular(executable);
        let checksum;
        if size <= SPOOL_THRESHOLD {
            let mut buf = Vec::with_capacity(size as usize);
            content.take(size).read_to_end(&mut buf)?;
            if buf.len() as u64 != size {
                return Err(bad(
                    path,
                    format!("content ends after {} of {size} bytes", buf.len()),
                ));
            }
            check_end(path, content)?;
            hasher.update(&buf);
            checksum = hasher.finish_hex();
            if self.needs_write(&checksum)? {
                self.write_object(Job::Buffer {
                    checksum: checksum.clone(),
                    mode,
                    data: buf,
                })?;
            }
        } else {
            let spool = self.spool_dir.join(format!("spool-{}", self.stats.files));
            let mut out =
                fs::File::create(&spool).map_err(StoreError::io("create spool file", &spool))?;
            let mut buf = vec![0u8; CHUNK];
            let mut left = size;
            while left > 0 {
                let want = left.min(CHUNK as u64) as usize;
                let n = content.read(&mut buf[..want])?;
                if n == 0 {
                    let _ = fs::remove_file(&spool);
                    return Err(bad(
                        path,
                        format!("content ends after {} of {size} bytes", size - left),
                    ));
                }
                hasher.update(&buf[..n]);
                out.write_all(&buf[..n])
                    .map_err(StoreError::io("write spool file", &spool))?;
                left -= n as u64;
            }
            drop(out);
            check_end(path, content)?;
            checksum = hasher.finish_hex();
            if self.needs_write(&checksum)? {
                // The writer removes the spool file once the object is written.
                self.write_object(Job::Spool {
                    checksum: checksum.clone(),
                    mode,
                    size,
                    path: spool,
                })?;
            } else {
                let _ = fs::remove_file(&spool);
            }
        }
        self.stats.files += 1;
        self.stats.bytes += size;
        if self.stats.files == 1 {
            crate::crash::point("mid-import");
        }
        self.add_file(path, &checksum)?;
        self.files.insert(path.as_str().to_string(), checksum);
        Ok(())
    }

    fn symlink(&mut self, path: &RelPath, target: &str) -> Result<(), SinkError> {
        if target.is_empty() || target.contains('\0') {
            return Err(bad(path, "empty symlink target or NUL in it"));
        }
        let checksum = checksum::symlink_checksum(target);
        if self.needs_write(&checksum)? {
            self.write_object(Job::Symlink {
                checksum: checksum.clone(),
                target: target.to_string(),
            })?;
        }
        self.add_file(path, &checksum)
    }

    fn hardlink(&mut self, path: &RelPath, target: &RelPath) -> Result<(), SinkError> {
        let Some(checksum) = self.files.get(target.as_str()).cloned() else {
            return Err(bad(
                path,
                format!("hardlink target {target} is not an earlier regular file"),
            ));
        };
        // Same content, same object: a hardlink checkout links both names to one inode.
        self.add_file(path, &checksum)?;
        self.files.insert(path.as_str().to_string(), checksum);
        Ok(())
    }
}

/// An object for the writer thread: its checksum is already known.
enum Job {
    Buffer {
        checksum: String,
        mode: u32,
        data: Vec<u8>,
    },
    Spool {
        checksum: String,
        mode: u32,
        size: u64,
        path: PathBuf,
    },
    Symlink {
        checksum: String,
        target: String,
    },
}

impl Job {
    fn checksum(&self) -> &str {
        match self {
            Job::Buffer { checksum, .. }
            | Job::Spool { checksum, .. }
            | Job::Symlink { checksum, .. } => checksum,
        }
    }
}

/// Objects waiting for the writer; with at most 8 MiB per buffered object this bounds
/// the memory held in the queue.
const QUEUE: usize = 2;

/// Writes objects into the repository on its own thread, so that libostree's per-object
/// work (temporary file, copy, chown, chmod, link) overlaps reading and hashing the next
/// entry. Only this thread touches the repo while an import runs.
struct Writer {
    tx: Option<std::sync::mpsc::SyncSender<Job>>,
    handle: Option<std::thread::JoinHandle<Result<(), StoreError>>>,
}

impl Writer {
    fn start(repo: ostree::Repo) -> Writer {
        let (tx, rx) = std::sync::mpsc::sync_channel::<Job>(QUEUE);
        let handle = std::thread::Builder::new()
            .name("appmgr-store-writer".into())
            .spawn(move || {
                for job in rx {
                    write_job(&repo, job)?;
                }
                Ok(())
            })
            .ok();
        Writer {
            tx: Some(tx),
            handle,
        }
    }

    fn send(&mut self, job: Job) -> Result<(), StoreError> {
        let Some(tx) = &self.tx else {
            return self.finish();
        };
        if tx.send(job).is_err() {
            // The writer stopped on an error: report it.
            self.finish()?;
            return Err(StoreError::Internal {
                what: "the object writer stopped".into(),
            });
        }
        Ok(())
    }

    fn finish(&mut self) -> Result<(), StoreError> {
        self.tx = None;
        match self.handle.take() {
            Some(h) => h.join().unwrap_or_else(|_| {
                Err(StoreError::Internal {
                    what: "the object writer panicked".into(),
                })
            }),
            None => Ok(()),
        }
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        let _ = self.finish();
    }
}

fn regular_info(mode: u32, size: u64) -> gio::FileInfo {
    let info = gio::FileInfo::new();
    info.set_attribute_uint32("unix::uid", 0);
    info.set_attribute_uint32("unix::gid", 0);
    info.set_attribute_uint32("unix::mode", mode);
    info.set_file_type(gio::FileType::Regular);
    info.set_size(size as i64);
    info
}

fn write_job(repo: &ostree::Repo, job: Job) -> Result<(), StoreError> {
    let (checksum, info, input, spool): (String, gio::FileInfo, gio::InputStream, Option<PathBuf>) =
        match job {
            Job::Buffer {
                checksum,
                mode,
                data,
            } => {
                let size = data.len() as u64;
                let input = gio::MemoryInputStream::from_bytes(&glib::Bytes::from_owned(data));
                (checksum, regular_info(mode, size), input.upcast(), None)
            }
            Job::Spool {
                checksum,
                mode,
                size,
                path,
            } => {
                let input = gio::File::for_path(&path)
                    .read(None::<&gio::Cancellable>)
                    .map_err(StoreError::ostree("open spool file", path.display()))?;
                (
                    checksum,
                    regular_info(mode, size),
                    input.upcast(),
                    Some(path),
                )
            }
            Job::Symlink { checksum, target } => {
                let info = gio::FileInfo::new();
                info.set_attribute_uint32("unix::uid", 0);
                info.set_attribute_uint32("unix::gid", 0);
                info.set_attribute_uint32("unix::mode", SYMLINK_MODE);
                info.set_file_type(gio::FileType::SymbolicLink);
                info.set_symlink_target(&target);
                (checksum, info, gio::MemoryInputStream::new().upcast(), None)
            }
        };
    let result = ostree::raw_file_to_content_stream(&input, &info, None, None::<&gio::Cancellable>)
        .map_err(StoreError::ostree("build content stream for", &checksum))
        .and_then(|(stream, len)| {
            repo.write_content_trusted(&checksum, &stream, len, None::<&gio::Cancellable>)
                .map_err(StoreError::ostree("write object", &checksum))
        });
    if let Some(p) = spool {
        let _ = fs::remove_file(p);
    }
    result
}

use ostree::gio::prelude::*;
