//! Per-app storage limits (`storage-max`): the app's HOME as its own ext4 file system.
//!
//! With a limit, the app's data lives in `STATE/storage/ID.img`, a root-owned image file
//! of exactly the limit's size (rounded down to 4 KiB), fully allocated with `fallocate`
//! so the space is the app's from the moment the limit applies and a loop device never
//! meets a full host file system. The launcher mounts it at HOME (see `launch/image.rs`):
//! a write beyond it fails with `ENOSPC` in that app only. The limit is the size of the
//! app's file system, its own metadata included, so it is also exactly what the app can
//! take from the device's storage.
//!
//! [`prepare`] runs before every launch, by the caller (root, with the app's cgroup
//! created, so the app is not running), and brings the image in line with the limit:
//!
//! | limit | image | action |
//! |---|---|---|
//! | set | missing | check space, create, `mkfs.ext4 -d` with the plain data dir's contents, then empty that dir |
//! | set | other size | `resize2fs` (after `e2fsck -f -p` if it asks for one; a shrink below what the data needs is refused, image untouched) |
//! | none | present | `debugfs rdump` the files back into the plain data dir, then delete the image |
//!
//! Every step that can fail leaves the previous state usable: a new image is built
//! under a temporary name and renamed into place; the plain directory is emptied only
//! after the image holding its files is durable; an exported image is deleted only once
//! its files are in place.

use std::fs;
use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The directory below the state dir that holds the images.
pub const STORAGE_DIR: &str = "storage";

/// Image sizes are multiples of this.
const ALIGN: u64 = 4096;

/// Where app `id`'s image lives.
pub fn image_path(state_dir: &Path, id: &str) -> PathBuf {
    state_dir.join(STORAGE_DIR).join(format!("{id}.img"))
}

/// What [`prepare`] needs to know about one app.
#[derive(Debug, Clone)]
pub struct StorageRequest<'a> {
    /// `STATE/storage/ID.img`.
    pub image: &'a Path,
    /// `STATE/data/ID`, the plain data dir (used when there is no limit).
    pub data_dir: &'a Path,
    pub uid: u32,
    pub gid: u32,
    /// `storage-max` in bytes, if policy sets one.
    pub limit: Option<u64>,
    /// Free space (as root sees it) that must remain on the state file system after the
    /// image got its space: the room installs and updates need.
    pub reserve: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("{path}: the storage image of {needed} bytes (storage-max plus the {reserve}-byte install reserve) does not fit: {available} bytes free")]
    NoSpace {
        path: PathBuf,
        needed: u64,
        reserve: u64,
        available: u64,
    },
    #[error("{path}: the app's data does not fit storage-max={limit}: {detail}")]
    DataTooLarge {
        path: PathBuf,
        limit: String,
        detail: String,
    },
    #[error("{path}: {reason}")]
    Unsafe { path: PathBuf, reason: String },
    #[error("{path}: {tool} failed: {detail}")]
    Tool {
        path: PathBuf,
        tool: &'static str,
        detail: String,
    },
    #[error("{path}: the storage image is in use (still mounted by an earlier instance)")]
    InUse { path: PathBuf },
    #[error("{step} {path}: {source}")]
    Io {
        step: &'static str,
        path: PathBuf,
        source: io::Error,
    },
}

fn io_err<'p>(step: &'static str, path: &'p Path) -> impl FnOnce(io::Error) -> StorageError + 'p {
    move |source| StorageError::Io {
        step,
        path: path.to_path_buf(),
        source,
    }
}

/// `64M` style display of a byte count (exact when it is a whole number of MiB).
fn human(bytes: u64) -> String {
    if bytes.is_multiple_of(1 << 20) {
        format!("{}M", bytes >> 20)
    } else {
        bytes.to_string()
    }
}

/// The size of the image for a limit.
pub fn image_size(limit: u64) -> u64 {
    limit - limit % ALIGN
}

/// Brings the app's storage in line with its limit (see the module docs). Returns the
/// image the launcher must mount at HOME, or `None` when the plain data dir is used.
pub fn prepare(req: &StorageRequest<'_>) -> Result<Option<PathBuf>, StorageError> {
    let present = match fs::symlink_metadata(req.image) {
        Ok(m) if m.file_type().is_file() && m.uid() == 0 => Some(m.len()),
        Ok(_) => {
            return Err(StorageError::Unsafe {
                path: req.image.to_path_buf(),
                reason: "not a root-owned regular file".into(),
            })
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => return Err(io_err("inspect", req.image)(e)),
    };
    match (req.limit, present) {
        (None, None) => Ok(None),
        (None, Some(_)) => {
            export(req)?;
            Ok(None)
        }
        (Some(limit), None) => {
            create(req, image_size(limit), limit)?;
            Ok(Some(req.image.to_path_buf()))
        }
        (Some(limit), Some(len)) => {
            let want = image_size(limit);
            if len != want {
                resize(req, len, want, limit)?;
            }
            Ok(Some(req.image.to_path_buf()))
        }
    }
}

/// Free bytes on the file system of `dir` as root sees them (root may use the blocks
/// ext4 reserves for it, as installs do).
fn free_bytes(dir: &Path) -> Result<u64, StorageError> {
    let st = rustix::fs::statvfs(dir).map_err(|e| io_err("query free space of", dir)(e.into()))?;
    Ok(st.f_bfree.saturating_mul(st.f_frsize))
}

fn check_space(req: &StorageRequest<'_>, dir: &Path, grow: u64) -> Result<(), StorageError> {
    let available = free_bytes(dir)?;
    let needed = grow.saturating_add(req.reserve);
    if available < needed {
        return Err(StorageError::NoSpace {
            path: req.image.to_path_buf(),
            needed,
            reserve: req.reserve,
            available,
        });
    }
    Ok(())
}

/// Runs an e2fsprogs tool; `ok` lists the exit codes that mean success.
fn tool(path: &Path, name: &'static str, args: &[&str], ok: &[i32]) -> Result<(), StorageError> {
    tool_output(path, name, args, ok).map(|_| ())
}

/// [`tool`], returning its standard output.
fn tool_output(
    path: &Path,
    name: &'static str,
    args: &[&str],
    ok: &[i32],
) -> Result<String, StorageError> {
    let out = Command::new(name)
        .args(args)
        .env("LC_ALL", "C")
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| StorageError::Tool {
            path: path.to_path_buf(),
            tool: name,
            detail: format!("cannot run it ({e}); e2fsprogs is required for storage-max"),
        })?;
    if out.status.code().is_some_and(|c| ok.contains(&c)) {
        return Ok(String::from_utf8_lossy(&out.stdout).into_owned());
    }
    let text = String::from_utf8_lossy(&out.stderr);
    let last = text
        .lines()
        .map(str::trim)
        .rfind(|l| !l.is_empty())
        .unwrap_or("no message");
    Err(StorageError::Tool {
        path: path.to_path_buf(),
        tool: name,
        detail: format!(
            "{} ({})",
            appmgr_types::escape_for_display(last),
            out.status
        ),
    })
}

/// The directory holding the image, created root-only.
fn storage_dir(image: &Path) -> Result<&Path, StorageError> {
    let dir = image.parent().ok_or_else(|| StorageError::Unsafe {
        path: image.to_path_buf(),
        reason: "no parent directory".into(),
    })?;
    fs::create_dir_all(dir).map_err(io_err("create", dir))?;
    let m = fs::symlink_metadata(dir).map_err(io_err("inspect", dir))?;
    if !m.file_type().is_dir() || m.uid() != 0 || m.mode() & 0o022 != 0 {
        return Err(StorageError::Unsafe {
            path: dir.to_path_buf(),
            reason: "must be a root-owned directory writable by root only".into(),
        });
    }
    if m.mode() & 0o077 != 0 {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
            .map_err(io_err("chmod", dir))?;
    }
    Ok(dir)
}

/// The plain data dir if it exists, refused if it is anything but a directory.
fn plain_dir(req: &StorageRequest<'_>) -> Result<Option<()>, StorageError> {
    match fs::symlink_metadata(req.data_dir) {
        Ok(m) if m.file_type().is_dir() => Ok(Some(())),
        Ok(_) => Err(StorageError::Unsafe {
            path: req.data_dir.to_path_buf(),
            reason: "the data dir is not a directory".into(),
        }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_err("inspect", req.data_dir)(e)),
    }
}

fn has_entries(dir: &Path) -> Result<bool, StorageError> {
    Ok(fs::read_dir(dir)
        .map_err(io_err("read", dir))?
        .next()
        .is_some())
}

/// Removes everything inside `dir` (not `dir` itself), never following a symlink.
fn empty_dir(dir: &Path) -> Result<(), StorageError> {
    for e in fs::read_dir(dir).map_err(io_err("read", dir))? {
        let e = e.map_err(io_err("read", dir))?;
        let p = e.path();
        let ft = e.file_type().map_err(io_err("inspect", &p))?;
        if ft.is_dir() {
            // std's remove_dir_all does not follow symlinks inside the tree.
            fs::remove_dir_all(&p).map_err(io_err("remove", &p))?;
        } else {
            fs::remove_file(&p).map_err(io_err("remove", &p))?;
        }
    }
    Ok(())
}

fn sync_dir(dir: &Path) -> Result<(), StorageError> {
    fs::File::open(dir)
        .and_then(|f| f.sync_all())
        .map_err(io_err("sync", dir))
}

/// A new, fully allocated image holding the plain data dir's files.
fn create(req: &StorageRequest<'_>, size: u64, limit: u64) -> Result<(), StorageError> {
    let dir = storage_dir(req.image)?;
    check_space(req, dir, size)?;
    let name = req
        .image
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp"));
    let _ = fs::remove_file(&tmp);
    {
        let f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&tmp)
            .map_err(io_err("create", &tmp))?;
        rustix::fs::fallocate(&f, rustix::fs::FallocateFlags::empty(), 0, size)
            .map_err(|e| io_err("allocate", &tmp)(e.into()))?;
    }
    // nodiscard: mkfs would otherwise punch the allocated blocks back out of the file.
    // lazy_itable_init=0: the inode tables are written now, so the kernel's lazy init
    // thread has nothing to zero later (through the loop device that zeroing punches
    // holes, and the image would no longer hold all of the app's space).
    let owner = format!(
        "root_owner={}:{},nodiscard,lazy_itable_init=0",
        req.uid, req.gid
    );
    let tmp_s = tmp.to_string_lossy().into_owned();
    let data_s = req.data_dir.to_string_lossy().into_owned();
    // The file system's root is made from the plain data dir (created like the launcher
    // creates it when missing), so it has that dir's owner and mode 0700.
    if plain_dir(req)?.is_none() {
        fs::DirBuilder::new()
            .mode(0o700)
            .create(req.data_dir)
            .map_err(io_err("create", req.data_dir))?;
        std::os::unix::fs::lchown(req.data_dir, Some(req.uid), Some(req.gid))
            .map_err(io_err("chown", req.data_dir))?;
    }
    let populate = has_entries(req.data_dir)?;
    let args = [
        "-q", "-F", "-m", "0", "-i", "16384", "-E", &owner, "-L", "appdata", "-d", &data_s, &tmp_s,
    ];
    if let Err(e) = tool(req.image, "mkfs.ext4", &args, &[0]) {
        let _ = fs::remove_file(&tmp);
        return Err(match e {
            StorageError::Tool { detail, .. }
                if populate
                    && (detail.contains("allocate") || detail.contains("No space left")) =>
            {
                StorageError::DataTooLarge {
                    path: req.data_dir.to_path_buf(),
                    limit: human(limit),
                    detail: format!("the {} bytes of the image are too few ({detail})", size),
                }
            }
            e => e,
        });
    }
    if let Err(e) = allocate(&tmp, size) {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    fs::rename(&tmp, req.image).map_err(io_err("rename into place", req.image))?;
    sync_dir(dir)?;
    // The files are in the durable image now; the plain copy goes.
    if populate {
        empty_dir(req.data_dir)?;
    }
    Ok(())
}

/// Grows or shrinks the image's file system to `want` bytes.
fn resize(req: &StorageRequest<'_>, len: u64, want: u64, limit: u64) -> Result<(), StorageError> {
    let img = req.image;
    let img_s = img.to_string_lossy().into_owned();
    let dir = storage_dir(img)?;
    lock_free(img)?;
    if want > len {
        check_space(req, dir, want - len)?;
    } else {
        // A shrink below what the files need is refused before anything is written
        // (`resize2fs -P` only reads; resize2fs would refuse the same size, but might
        // first want an e2fsck that rewrites the superblock).
        let min = minimum_bytes(img)?;
        if want < min {
            return Err(StorageError::DataTooLarge {
                path: img.to_path_buf(),
                limit: human(limit),
                detail: format!("the files need a file system of at least {min} bytes"),
            });
        }
    }
    let f = fs::OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(img)
        .map_err(io_err("open", img))?;
    if want > len {
        rustix::fs::fallocate(&f, rustix::fs::FallocateFlags::empty(), 0, want)
            .map_err(|e| io_err("allocate", img)(e.into()))?;
    }
    let size_arg = format!("{}K", want / 1024);
    let resize2fs = || tool(img, "resize2fs", &[&img_s, &size_arg], &[0]);
    let mut r = resize2fs();
    if matches!(&r, Err(StorageError::Tool { detail, .. }) if detail.contains("e2fsck")) {
        // resize2fs wants a freshly checked file system; e2fsck exit 1 = errors fixed.
        tool(img, "e2fsck", &["-f", "-p", &img_s], &[0, 1])?;
        r = resize2fs();
    }
    match r {
        Ok(()) => {}
        Err(StorageError::Tool { detail, .. }) if want < len => {
            // resize2fs refuses a size below what the files need before it changes
            // anything: the image stays as it was.
            return Err(StorageError::DataTooLarge {
                path: img.to_path_buf(),
                limit: human(limit),
                detail,
            });
        }
        Err(e) => return Err(e),
    }
    if want < len {
        f.set_len(want).map_err(io_err("truncate", img))?;
    }
    drop(f);
    allocate(img, want)
}

/// Allocates every block of the image and makes it durable. mkfs and resize2fs may punch
/// holes where they zero a range (the journal, for instance): `fallocate` over the whole
/// file fills them again without changing what any byte reads as, so the app's space is
/// reserved on the host file system whatever the tools did.
fn allocate(img: &Path, size: u64) -> Result<(), StorageError> {
    let f = fs::OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(img)
        .map_err(io_err("open", img))?;
    rustix::fs::fallocate(&f, rustix::fs::FallocateFlags::empty(), 0, size)
        .map_err(|e| io_err("allocate", img)(e.into()))?;
    f.sync_all().map_err(io_err("sync", img))
}

/// The smallest size `resize2fs` would shrink the image's file system to, in bytes: its
/// estimate in blocks times the block size from the superblock (`s_log_block_size`, at
/// byte 24 of the superblock, which starts at byte 1024).
fn minimum_bytes(img: &Path) -> Result<u64, StorageError> {
    use std::io::{Read, Seek, SeekFrom};
    let img_s = img.to_string_lossy().into_owned();
    let out = tool_output(img, "resize2fs", &["-P", &img_s], &[0])?;
    let blocks: u64 = out
        .lines()
        .find_map(|l| l.split_once("minimum size of the filesystem:"))
        .and_then(|(_, n)| n.trim().parse().ok())
        .ok_or_else(|| StorageError::Tool {
            path: img.to_path_buf(),
            tool: "resize2fs",
            detail: format!(
                "no minimum size in the output of resize2fs -P: {}",
                appmgr_types::escape_for_display(out.trim())
            ),
        })?;
    let mut f = fs::File::open(img).map_err(io_err("open", img))?;
    let mut b = [0u8; 4];
    f.seek(SeekFrom::Start(1024 + 24))
        .and_then(|_| f.read_exact(&mut b))
        .map_err(io_err("read superblock of", img))?;
    let log = u32::from_le_bytes(b);
    if log > 6 {
        return Err(StorageError::Unsafe {
            path: img.to_path_buf(),
            reason: format!("not an ext4 image (block size exponent {log})"),
        });
    }
    Ok(blocks.saturating_mul(1024 << log))
}

/// Fails if a loop device still holds the image (see `launch/image.rs`: the lock lives
/// as long as the mount).
fn lock_free(img: &Path) -> Result<(), StorageError> {
    let f = fs::File::open(img).map_err(io_err("open", img))?;
    let start = std::time::Instant::now();
    loop {
        match rustix::fs::flock(&f, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => return Ok(()),
            Err(rustix::io::Errno::WOULDBLOCK)
                if start.elapsed() < std::time::Duration::from_secs(5) =>
            {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            Err(rustix::io::Errno::WOULDBLOCK) => {
                return Err(StorageError::InUse {
                    path: img.to_path_buf(),
                })
            }
            Err(e) => return Err(io_err("lock", img)(e.into())),
        }
    }
}

/// Copies the image's files back into the plain data dir (owned by the app), then
/// deletes the image.
fn export(req: &StorageRequest<'_>) -> Result<(), StorageError> {
    let img = req.image;
    lock_free(img)?;
    let parent = req.data_dir.parent().ok_or_else(|| StorageError::Unsafe {
        path: req.data_dir.to_path_buf(),
        reason: "no parent directory".into(),
    })?;
    fs::create_dir_all(parent).map_err(io_err("create", parent))?;
    let name = req
        .data_dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = parent.join(format!(".{name}.export"));
    if fs::symlink_metadata(&tmp).is_ok() {
        fs::remove_dir_all(&tmp).map_err(io_err("remove", &tmp))?;
    }
    fs::create_dir(&tmp).map_err(io_err("create", &tmp))?;
    let tmp_s = tmp.to_string_lossy().into_owned();
    let cmd = format!("rdump / \"{tmp_s}\"");
    let img_s = img.to_string_lossy().into_owned();
    tool(img, "debugfs", &["-R", &cmd, &img_s], &[0])?;
    // debugfs reports a failed rdump on stderr but exits 0: the root must have come out.
    let lf = tmp.join("lost+found");
    if fs::symlink_metadata(&lf).is_ok() {
        fs::remove_dir_all(&lf).map_err(io_err("remove", &lf))?;
    }
    chown_tree(&tmp, req.uid, req.gid)?;
    match plain_dir(req)? {
        Some(()) => empty_dir(req.data_dir)?,
        None => {
            fs::create_dir(req.data_dir).map_err(io_err("create", req.data_dir))?;
        }
    }
    std::os::unix::fs::lchown(req.data_dir, Some(req.uid), Some(req.gid))
        .map_err(io_err("chown", req.data_dir))?;
    for e in fs::read_dir(&tmp).map_err(io_err("read", &tmp))? {
        let e = e.map_err(io_err("read", &tmp))?;
        let to = req.data_dir.join(e.file_name());
        fs::rename(e.path(), &to).map_err(io_err("move into place", &to))?;
    }
    fs::remove_dir(&tmp).map_err(io_err("remove", &tmp))?;
    sync_dir(req.data_dir)?;
    fs::remove_file(img).map_err(io_err("remove", img))?;
    if let Some(d) = img.parent() {
        sync_dir(d)?;
    }
    Ok(())
}

/// Gives everything below `dir` (not following symlinks) to `uid:gid`: files in an
/// app's HOME are the app's, whatever owner the copy gave them.
fn chown_tree(dir: &Path, uid: u32, gid: u32) -> Result<(), StorageError> {
    for e in fs::read_dir(dir).map_err(io_err("read", dir))? {
        let e = e.map_err(io_err("read", dir))?;
        let p = e.path();
        std::os::unix::fs::lchown(&p, Some(uid), Some(gid)).map_err(io_err("chown", &p))?;
        if e.file_type().map_err(io_err("inspect", &p))?.is_dir() {
            chown_tree(&p, uid, gid)?;
        }
    }
    Ok(())
}
