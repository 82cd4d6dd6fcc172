//! The validating payload parser: turns an untrusted tar stream into [`PayloadSink`]
//! calls, enforcing every archive rule and limit before the sink sees an entry.

use crate::payload::{PayloadSink, RelPath, SinkError};
use std::collections::HashMap;
use std::io::{self, Read};

/// Bounds on a payload, enforced while streaming.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Most entries (files, directories, links) a payload may have.
    pub max_entries: u64,
    /// Most bytes of regular-file content in total.
    pub max_installed_size: u64,
    /// Most bytes the tar stream may have after decompression: content plus headers.
    pub max_stream_bytes: u64,
}

/// The largest number of entries any payload may have, whatever its manifest says.
pub const MAX_ENTRIES: u64 = 500_000;

/// What was read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    pub entries: u64,
    pub installed_size: u64,
}

/// A refusal while parsing, before the caller adds the bundle path.
#[derive(Debug)]
pub(crate) enum UnpackError {
    Io(io::Error),
    Malformed(String),
    Unsafe { entry: String, reason: String },
    Limit(String),
    Sink { entry: String, source: SinkError },
}

impl From<io::Error> for UnpackError {
    fn from(e: io::Error) -> Self {
        UnpackError::Io(e)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Seen {
    Dir,
    File,
    Symlink,
}

/// Counts bytes coming out of the decompressor so a bomb is stopped at the limit.
struct Counted<R> {
    inner: R,
    count: u64,
    limit: u64,
}

impl<R: Read> Read for Counted<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count += n as u64;
        if self.count > self.limit {
            return Err(io::Error::other(LimitHit));
        }
        Ok(n)
    }
}

#[derive(Debug)]
struct LimitHit;
impl std::fmt::Display for LimitHit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("decompressed payload larger than its manifest allows")
    }
}
impl std::error::Error for LimitHit {}

/// Remembers a read error of the underlying stream while a sink consumes a file, so it
/// can be classified as the bundle's fault even if the sink wraps it.
/// It also turns a premature end of the stream into `UnexpectedEof` (a truncated tar
/// otherwise just reads short).
struct Tracked<R> {
    inner: R,
    remaining: u64,
    fault: Option<io::Error>,
}

impl<R: Read> Read for Tracked<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.remaining == 0 || buf.is_empty() {
            return Ok(0);
        }
        match self.inner.read(buf) {
            Ok(0) => {
                self.fault = Some(io::ErrorKind::UnexpectedEof.into());
                Err(io::ErrorKind::UnexpectedEof.into())
            }
            Ok(n) => {
                self.remaining -= n as u64;
                Ok(n)
            }
            Err(e) => {
                let copy = match e.get_ref() {
                    Some(i) if i.is::<LimitHit>() => io::Error::other(LimitHit),
                    _ => io::Error::new(e.kind(), e.to_string()),
                };
                self.fault = Some(copy);
                Err(e)
            }
        }
    }
}

fn io_or_limit(e: io::Error) -> UnpackError {
    if e.get_ref().is_some_and(|i| i.is::<LimitHit>()) {
        UnpackError::Limit(e.to_string())
    } else if e.kind() == io::ErrorKind::UnexpectedEof {
        UnpackError::Malformed("payload tar ends in the middle of an entry".into())
    } else if e.kind() == io::ErrorKind::InvalidData || e.kind() == io::ErrorKind::Other {
        UnpackError::Malformed(format!("payload tar: {e}"))
    } else {
        UnpackError::Io(e)
    }
}

/// The PAX records of one entry (or of a global header) that decide which bytes and
/// which names the entry has.
#[derive(Debug, Default)]
struct PaxRecords {
    size: Option<u64>,
    path: Option<Vec<u8>>,
    linkpath: Option<Vec<u8>>,
}

/// Why a PAX extended header was refused.
enum PaxProblem {
    Io(io::Error),
    Ambiguous(String),
}

impl PaxProblem {
    fn into_unpack(self, entry: &str) -> UnpackError {
        match self {
            PaxProblem::Io(e) => io_or_limit(e),
            PaxProblem::Ambiguous(reason) => UnpackError::Unsafe {
                entry: appmgr_types::escape_for_display(entry),
                reason,
            },
        }
    }
}

/// The largest global PAX header read (`git archive` writes about 60 bytes).
const MAX_GLOBAL_HEADER: u64 = 64 << 10;

/// The longest decimal `size` value accepted: `u64::MAX` has 20 digits.
const MAX_SIZE_DIGITS: usize = 20;

/// Reads the records of a PAX extended header and refuses what two tar readers could
/// interpret differently: a key given twice (readers keep the first or the last),
/// a `size` that is not a plain decimal number (readers ignore it, reject it or read a
/// prefix), any `GNU.sparse.*` record, and, in a global header, records that would
/// rename or resize later entries for readers that apply global headers.
fn pax_records(exts: tar::PaxExtensions<'_>, global: bool) -> Result<PaxRecords, PaxProblem> {
    let mut out = PaxRecords::default();
    let mut keys: Vec<Vec<u8>> = Vec::new();
    for ext in exts {
        let ext = ext.map_err(PaxProblem::Io)?;
        let key = ext.key_bytes();
        let shown = String::from_utf8_lossy(key);
        let shown = appmgr_types::escape_for_display(&shown);
        if key.starts_with(b"GNU.sparse") {
            return Err(PaxProblem::Ambiguous(format!(
                "sparse file (PAX record {shown})"
            )));
        }
        if keys.iter().any(|k| k.as_slice() == key) {
            return Err(PaxProblem::Ambiguous(format!(
                "PAX record {shown} appears twice"
            )));
        }
        keys.push(key.to_vec());
        let value = ext.value_bytes();
        match key {
            b"size" | b"path" | b"linkpath" if global => {
                return Err(PaxProblem::Ambiguous(format!(
                    "global PAX header sets {shown} for every later entry"
                )));
            }
            b"size" => {
                let digits = !value.is_empty()
                    && value.len() <= MAX_SIZE_DIGITS
                    && value.iter().all(u8::is_ascii_digit);
                let parsed = std::str::from_utf8(value)
                    .ok()
                    .filter(|_| digits)
                    .and_then(|v| v.parse::<u64>().ok());
                match parsed {
                    Some(n) => out.size = Some(n),
                    None => {
                        let v = appmgr_types::escape_for_display(&String::from_utf8_lossy(value));
                        return Err(PaxProblem::Ambiguous(format!(
                            "PAX size {v:?} is not a decimal number of bytes"
                        )));
                    }
                }
            }
            b"path" => out.path = Some(value.to_vec()),
            b"linkpath" => out.linkpath = Some(value.to_vec()),
            _ => {}
        }
    }
    Ok(out)
}

/// Normalizes a tar member name: strips one leading `./` (what `tar -C dir -c .` writes)
/// and one trailing `/` on directories; `None` for the root entry itself.
fn member_path(raw: &[u8], is_dir: bool) -> Result<Option<RelPath>, String> {
    let s = std::str::from_utf8(raw).map_err(|_| "name is not UTF-8".to_string())?;
    let s = s.strip_prefix("./").unwrap_or(s);
    let s = if is_dir {
        s.strip_suffix('/').unwrap_or(s)
    } else {
        s
    };
    if is_dir && (s.is_empty() || s == ".") {
        return Ok(None);
    }
    RelPath::new(s).map(Some)
}

/// Checks a symlink target: non-empty, bounded, printable, and if relative, never above
/// the payload root when resolved from the link's directory.
pub(crate) fn check_symlink(path: &RelPath, target: &[u8]) -> Result<String, String> {
    let t = std::str::from_utf8(target).map_err(|_| "symlink target is not UTF-8".to_string())?;
    if t.is_empty() || t.len() > 4095 {
        return Err("symlink target empty or longer than 4095 bytes".into());
    }
    if appmgr_types::has_unsafe_chars(t) {
        return Err("control or bidi character in symlink target".into());
    }
    if !t.starts_with('/') {
        let mut depth: i64 = path.components().count() as i64 - 1;
        for c in t.split('/') {
            match c {
                "" | "." => {}
                ".." => {
                    depth -= 1;
                    if depth < 0 {
                        return Err(format!("symlink target {t:?} escapes the tree"));
                    }
                }
                _ => depth += 1,
            }
        }
    }
    Ok(t.to_string())
}

/// Parses a payload tar from `r` (already decompressed) into `sink`.
pub(crate) fn unpack<R: Read>(
    r: R,
    limits: Limits,
    sink: &mut dyn PayloadSink,
) -> Result<Stats, UnpackError> {
    let counted = Counted {
        inner: r,
        count: 0,
        limit: limits.max_stream_bytes,
    };
    let mut archive = tar::Archive::new(counted);
    let mut seen: HashMap<RelPath, Seen> = HashMap::new();
    let mut stats = Stats::default();
    let unsafe_entry = |entry: &str, reason: String| UnpackError::Unsafe {
        entry: appmgr_types::escape_for_display(entry),
        reason,
    };
    let sink_err = |entry: &RelPath, source: SinkError| UnpackError::Sink {
        entry: entry.to_string(),
        source,
    };
    for entry in archive.entries().map_err(io_or_limit)? {
        let mut entry = entry.map_err(io_or_limit)?;
        let etype = entry.header().entry_type();
        let raw_name = entry.path_bytes().into_owned();
        let shown = String::from_utf8_lossy(&raw_name).into_owned();
        use tar::EntryType as T;
        if matches!(etype, T::XGlobalHeader) {
            // `git archive` writes one (a `comment` with the commit); it carries no entry.
            // Other readers apply its records to every later entry, this one does not:
            // refuse records that would make them see other names or other boundaries.
            // A GNU long name or a local PAX header in front of it would be applied to the
            // global header here, and to the next real entry by other readers.
            if entry.header().path_bytes().as_ref() != raw_name.as_slice() {
                return Err(unsafe_entry(
                    &shown,
                    "GNU long name or PAX path in front of a global PAX header".into(),
                ));
            }
            let mut records = Vec::new();
            (&mut entry)
                .take(MAX_GLOBAL_HEADER + 1)
                .read_to_end(&mut records)
                .map_err(io_or_limit)?;
            if records.len() as u64 > MAX_GLOBAL_HEADER {
                return Err(UnpackError::Limit(format!(
                    "global PAX header larger than {MAX_GLOBAL_HEADER} bytes"
                )));
            }
            // With its data consumed, `pax_extensions` only has records if a local PAX
            // header came first.
            if let Some(mut prior) = entry.pax_extensions().map_err(io_or_limit)? {
                if prior.next().is_some() {
                    return Err(unsafe_entry(
                        &shown,
                        "local PAX header in front of a global PAX header".into(),
                    ));
                }
            }
            pax_records(tar::PaxExtensions::new(&records), true)
                .map_err(|e| e.into_unpack(&shown))?;
            continue;
        }
        let pax = match entry.pax_extensions().map_err(io_or_limit)? {
            Some(exts) => pax_records(exts, false).map_err(|e| e.into_unpack(&shown))?,
            None => PaxRecords::default(),
        };
        // The tar crate takes the PAX `size` for the entry's extent; a reader that ignores
        // PAX (or applies it differently) takes the ustar field. Both must be the same.
        let ustar_size = entry.header().size().map_err(io_or_limit)?;
        if let Some(pax_size) = pax.size {
            if pax_size != ustar_size {
                return Err(unsafe_entry(
                    &shown,
                    format!(
                        "PAX size {pax_size} disagrees with the ustar header size {ustar_size}"
                    ),
                ));
            }
        }
        // A GNU long name (or long link) and a PAX path for the same entry: readers differ
        // in which one wins.
        if let Some(p) = &pax.path {
            if entry.path_bytes().as_ref() != p.as_slice() {
                return Err(unsafe_entry(
                    &shown,
                    "both a GNU long name and a PAX path, which differ".into(),
                ));
            }
        }
        if let Some(l) = &pax.linkpath {
            if entry.link_name_bytes().as_deref() != Some(l.as_slice()) {
                return Err(unsafe_entry(
                    &shown,
                    "both a GNU long link name and a PAX linkpath, which differ".into(),
                ));
            }
        }
        let is_dir = etype == T::Directory;
        let kind_ok = matches!(etype, T::Regular | T::Directory | T::Symlink | T::Link);
        if !kind_ok {
            let what = match etype {
                T::Char => "character device",
                T::Block => "block device",
                T::Fifo => "FIFO",
                T::GNUSparse => "sparse file",
                T::Continuous => "contiguous file",
                _ => "unsupported entry type",
            };
            return Err(unsafe_entry(&shown, what.into()));
        }
        // Directories and links carry no data. Some readers skip a non-zero size's worth
        // of bytes after them, others read the next header right away.
        if etype != T::Regular && ustar_size != 0 {
            return Err(unsafe_entry(
                &shown,
                format!("non-regular entry with a data size of {ustar_size} bytes"),
            ));
        }
        let path = match member_path(&raw_name, is_dir).map_err(|r| unsafe_entry(&shown, r))? {
            Some(p) => p,
            None => continue,
        };
        stats.entries += 1;
        if stats.entries > limits.max_entries {
            return Err(UnpackError::Limit(format!(
                "more than {} entries",
                limits.max_entries
            )));
        }
        if seen.contains_key(&path) {
            return Err(unsafe_entry(&shown, "appears twice".into()));
        }
        // Parents must be directories; create missing ones implicitly, outermost first.
        let mut missing = Vec::new();
        let mut cur = path.parent();
        while let Some(p) = cur {
            match seen.get(&p) {
                Some(Seen::Dir) => break,
                Some(Seen::Symlink) => {
                    return Err(unsafe_entry(&shown, format!("parent {p} is a symlink")))
                }
                Some(Seen::File) => {
                    return Err(unsafe_entry(&shown, format!("parent {p} is a file")))
                }
                None => {
                    cur = p.parent();
                    missing.push(p);
                }
            }
        }
        for p in missing.into_iter().rev() {
            stats.entries += 1;
            sink.directory(&p).map_err(|e| sink_err(&p, e))?;
            seen.insert(p, Seen::Dir);
        }
        match etype {
            T::Directory => {
                sink.directory(&path).map_err(|e| sink_err(&path, e))?;
                seen.insert(path, Seen::Dir);
            }
            T::Regular => {
                let size = ustar_size;
                stats.installed_size = stats.installed_size.saturating_add(size);
                if stats.installed_size > limits.max_installed_size {
                    return Err(UnpackError::Limit(format!(
                        "file contents exceed {} bytes (at {})",
                        limits.max_installed_size, path
                    )));
                }
                let mode = entry.header().mode().map_err(io_or_limit)?;
                let mut content = Tracked {
                    inner: (&mut entry).take(size),
                    remaining: size,
                    fault: None,
                };
                if let Err(e) = sink.file(&path, mode & 0o111 != 0, size, &mut content) {
                    // A read error of the bundle itself (truncation, bomb) is the bundle's
                    // fault, whatever the sink made of it.
                    return Err(match content.fault.take() {
                        Some(f) => io_or_limit(f),
                        None => sink_err(&path, e),
                    });
                }
                if content.remaining != 0 {
                    return Err(UnpackError::Malformed(format!(
                        "entry {path}: sink did not read the whole file"
                    )));
                }
                seen.insert(path, Seen::File);
            }
            T::Symlink => {
                let target = entry
                    .link_name_bytes()
                    .ok_or_else(|| unsafe_entry(&shown, "symlink without target".into()))?;
                let target = check_symlink(&path, &target).map_err(|r| unsafe_entry(&shown, r))?;
                sink.symlink(&path, &target)
                    .map_err(|e| sink_err(&path, e))?;
                seen.insert(path, Seen::Symlink);
            }
            T::Link => {
                let raw = entry
                    .link_name_bytes()
                    .ok_or_else(|| unsafe_entry(&shown, "hardlink without target".into()))?;
                let target = member_path(&raw, false)
                    .map_err(|r| unsafe_entry(&shown, format!("hardlink target: {r}")))?
                    .ok_or_else(|| unsafe_entry(&shown, "hardlink to the root".into()))?;
                if seen.get(&target) != Some(&Seen::File) {
                    return Err(unsafe_entry(
                        &shown,
                        format!("hardlink to {target}, which is not an earlier regular file"),
                    ));
                }
                sink.hardlink(&path, &target)
                    .map_err(|e| sink_err(&path, e))?;
                seen.insert(path, Seen::File);
            }
            _ => unreachable!("entry types were checked above"),
        }
    }
    Ok(stats)
}

/// Validates a payload tar read from `r` (uncompressed) into `sink`: the same checks
/// install applies. For build tooling and fuzzing; `Err` holds the reason as one line.
pub fn parse_payload<R: Read>(
    r: R,
    limits: Limits,
    sink: &mut dyn PayloadSink,
) -> Result<Stats, String> {
    unpack(r, limits, sink).map_err(|e| match e {
        UnpackError::Io(e) => format!("read error: {e}"),
        UnpackError::Malformed(r) => format!("malformed: {r}"),
        UnpackError::Unsafe { entry, reason } => format!("unsafe entry {entry:?}: {reason}"),
        UnpackError::Limit(r) => format!("limit: {r}"),
        UnpackError::Sink { entry, source } => format!("sink failed at {entry}: {source}"),
    })
}
