//! TUF metadata of a remote: what a device should run now, not only who built it.
//!
//! A remote's TUF repository (root, targets, snapshot, timestamp; consistent snapshots) is
//! kept on the same registry as its bundles, in the sibling repository `REPO/tuf`: each
//! metadata file is an artifact of type [`METADATA_ARTIFACT_TYPE`] whose one layer is the
//! file, tagged with the file's name (`timestamp.json`, `3.snapshot.json`,
//! `3.targets.json`, `2.root.json`). The metadata is verified by `tough` (thresholds of
//! ed25519 signatures, root rotation, rollback and mix-and-match checks, size bounds).
//!
//! A target is named by its bundle's tag; its length and sha256 are the bundle file's (so
//! the sha256 is the OCI layer digest) and its `custom` carries the bundle's id, kind,
//! version, arch, branch and the per-ID **release counter** ([`TargetInfo`]).
//!
//! Expiry is checked here, not by `tough`: against `max(clock, floor)` where the floor is
//! the latest trusted time persisted from metadata already verified ([`FLOOR_FILE`]), so a
//! device without a real-time clock neither accepts metadata that expired before what it
//! has already seen nor locks itself out (tough's own check refuses a clock that went
//! backwards, which is every boot of such a device).

use crate::artifact::{self, Descriptor};
use crate::{Client, OciRef, RemoteError};
use appmgr_types::escape_for_display;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::num::NonZeroU64;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use tough::editor::signed::SignedRole;
use tough::editor::RepositoryEditor;
use tough::key_source::KeySource;
use tough::schema::{KeyHolder, RoleKeys, RoleType, Root, Signed};
use tough::{
    async_trait, Bytes, ExpirationEnforcement, RepositoryLoader, Transport, TransportError,
    TransportErrorKind, TransportStream,
};

pub const METADATA_ARTIFACT_TYPE: &str = "application/vnd.appmgr.tuf.v1";
pub const METADATA_MEDIA_TYPE: &str = "application/vnd.appmgr.tuf.metadata.v1+json";
/// The persisted trusted-time floor, in a remote's TUF state dir (RFC 3339).
pub const FLOOR_FILE: &str = "trusted-time";
/// The largest metadata file read.
const MAX_METADATA: u64 = 16 << 20;
const BASE: &str = "appmgr-tuf://metadata/";

/// A remote's TUF repository: `REPO/tuf` on the same registry.
pub fn metadata_repo(r: &OciRef) -> OciRef {
    OciRef {
        repo: format!("{}/tuf", r.repo),
        tag: None,
        ..r.clone()
    }
}

fn refused(what: &str, reason: impl std::fmt::Display) -> RemoteError {
    RemoteError::Refused {
        url: what.to_string(),
        reason: reason.to_string(),
    }
}

fn usage(reason: impl std::fmt::Display) -> RemoteError {
    RemoteError::Usage(reason.to_string())
}

/// An error and its causes on one line.
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(c) = src {
        let t = c.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        src = c.source();
    }
    s
}

/// What a target's `custom` carries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetInfo {
    pub id: String,
    pub kind: String,
    pub version: String,
    pub arch: String,
    pub branch: String,
    /// Per ID, never lower than what a device installed before: a device refuses a lower
    /// one even under valid metadata, and a higher one may carry a lower version (a
    /// signed downgrade).
    pub release: u64,
}

/// One verified target: a bundle, by tag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrustedTarget {
    pub tag: String,
    pub length: u64,
    /// `sha256:HEX`, the bundle file's digest (its OCI layer digest).
    pub digest: String,
    pub info: TargetInfo,
}

/// What a verified load yields.
#[derive(Debug, Clone)]
pub struct Trusted {
    pub root_version: u64,
    pub targets_version: u64,
    pub timestamp_version: u64,
    /// The earliest expiry of the four roles.
    pub expires: jiff::Timestamp,
    /// The trusted time the expiry was checked against (`max(clock, floor)`).
    pub now: jiff::Timestamp,
    pub targets: Vec<TrustedTarget>,
}

/// Reads metadata files from the registry for `tough`. The last failure other than a
/// missing root version is kept, so a network failure is reported as such rather than
/// as a verification failure.
#[derive(Clone)]
struct OciTransport {
    client: Arc<Client>,
    repo: OciRef,
    last_error: Arc<Mutex<Option<RemoteError>>>,
}

impl std::fmt::Debug for OciTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "OciTransport({})", self.repo)
    }
}

impl OciTransport {
    fn read(&self, file: &str) -> Result<Vec<u8>, RemoteError> {
        let desc = metadata_descriptor(&self.client, &self.repo, file)?;
        let mut s = self.client.blob(&self.repo, &desc)?;
        let mut out = Vec::with_capacity(desc.size as usize);
        std::io::Read::read_to_end(&mut s, &mut out).map_err(|e| {
            refused(
                &format!("{}:{file}", self.repo),
                format!("reading the metadata: {e}"),
            )
        })?;
        Ok(out)
    }
}

#[async_trait]
impl Transport for OciTransport {
    async fn fetch(&self, url: url::Url) -> Result<TransportStream, TransportError> {
        let file = url
            .as_str()
            .strip_prefix(BASE)
            .filter(|f| crate::reference::valid_tag(f))
            .map(str::to_string);
        let Some(file) = file else {
            return Err(TransportError::new(TransportErrorKind::Other, url));
        };
        match self.read(&file) {
            Ok(data) => Ok(Box::pin(futures_util::stream::iter([Ok(Bytes::from(
                data,
            ))]))),
            Err(e) => {
                let kind = if matches!(e, RemoteError::NotFound { .. }) {
                    TransportErrorKind::FileNotFound
                } else {
                    TransportErrorKind::Other
                };
                if !(kind == TransportErrorKind::FileNotFound && file.ends_with(".root.json")) {
                    *self.last_error.lock().expect("not poisoned") = Some(e);
                }
                Err(TransportError::new(kind, url))
            }
        }
    }
}

/// The layer descriptor of metadata file `file` (a tag of the metadata repository).
fn metadata_descriptor(
    client: &Client,
    repo: &OciRef,
    file: &str,
) -> Result<Descriptor, RemoteError> {
    let (url, body) = client.raw_manifest(repo, file)?;
    let d = artifact::parse_single_layer(&body, &url, METADATA_ARTIFACT_TYPE, METADATA_MEDIA_TYPE)?;
    if d.size > MAX_METADATA {
        return Err(refused(
            &url,
            format!("metadata of {} bytes, at most {MAX_METADATA}", d.size),
        ));
    }
    Ok(d)
}

fn runtime() -> Result<tokio::runtime::Runtime, RemoteError> {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .map_err(|e| usage(format!("cannot start the TUF client: {e}")))
}

fn read_floor(dir: &Path) -> Result<Option<jiff::Timestamp>, RemoteError> {
    let p = dir.join(FLOOR_FILE);
    match std::fs::read_to_string(&p) {
        Ok(s) => s.trim().parse::<jiff::Timestamp>().map(Some).map_err(|e| {
            refused(
                &p.display().to_string(),
                format!("not an RFC 3339 time: {e}"),
            )
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(refused(&p.display().to_string(), e)),
    }
}

fn write_atomic(dir: &Path, name: &str, bytes: &[u8]) -> Result<(), RemoteError> {
    use std::io::Write;
    let tmp = dir.join(format!(".{name}.tmp"));
    let dst = dir.join(name);
    let io = |e: std::io::Error| refused(&dst.display().to_string(), e);
    let mut f = std::fs::File::create(&tmp).map_err(io)?;
    f.write_all(bytes).and_then(|_| f.sync_all()).map_err(io)?;
    std::fs::rename(&tmp, &dst).map_err(io)?;
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io)
}

/// The time metadata is checked against, and the floor to persist after a verified load:
/// `now = max(clock, floor)`; the new floor is `max(floor, min(clock, expires))`, so a
/// clock far in the future never raises it beyond what verified metadata vouches for.
pub fn trusted_time(
    clock: jiff::Timestamp,
    floor: Option<jiff::Timestamp>,
    expires: jiff::Timestamp,
) -> (jiff::Timestamp, jiff::Timestamp) {
    let now = floor.map_or(clock, |f| f.max(clock));
    let new_floor = floor.map_or(clock.min(expires), |f| f.max(clock.min(expires)));
    (now, new_floor)
}

/// Parses and self-verifies a root file (its own threshold of its own keys): what
/// `remote add --root` accepts as a trust anchor. Returns its version.
pub fn check_root(bytes: &[u8], what: &str) -> Result<u64, RemoteError> {
    let root: Signed<Root> = serde_json::from_slice(bytes)
        .map_err(|e| usage(format!("{what}: not a TUF root metadata file: {e}")))?;
    root.signed.verify_role(&root).map_err(|e| {
        refused(
            what,
            format!("the root is not signed by its own threshold: {}", chain(&e)),
        )
    })?;
    if !root.signed.consistent_snapshot {
        return Err(usage(format!(
            "{what}: the root must use consistent snapshots"
        )));
    }
    Ok(root.signed.version.get())
}

/// Loads and verifies remote `r`'s TUF metadata. `anchor` is the configured root; `dir`
/// the remote's TUF state (tough's datastore: the latest verified root and the versions
/// seen, and [`FLOOR_FILE`]). Everything refused is [`RemoteError::Refused`] naming what.
///
/// The state is changed only by a load that verifies completely, and only when something
/// in it changed: tough works on a copy, which replaces `dir` afterwards. The floor is
/// persisted when it moved by [`FLOOR_STEP`] or more (flash wear: a load every few
/// minutes writes nothing).
pub fn load(
    client: &Client,
    r: &OciRef,
    anchor: &[u8],
    dir: &Path,
) -> Result<Trusted, RemoteError> {
    let io = |p: &Path, e: std::io::Error| refused(&p.display().to_string(), e);
    let parent = dir.parent().unwrap_or(Path::new("."));
    let base_name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "tuf".into());
    let old = parent.join(format!(".{base_name}.old"));
    let new = parent.join(format!(".{base_name}.new"));
    // What a failed load must remove again: the first directory it creates.
    let first_missing = parent
        .ancestors()
        .take_while(|a| !a.as_os_str().is_empty() && !a.exists())
        .last()
        .map(Path::to_path_buf);
    std::fs::create_dir_all(parent).map_err(|e| io(parent, e))?;
    // One load of a remote's state at a time (the CLI's `remote ls` beside appmgrd's
    // update): the swap below is not safe against a second one. The wait is bounded:
    // a load is itself bounded by the registry client's limits.
    let lock_path = parent.join(format!(".{base_name}.lock"));
    let lock = std::fs::File::create(&lock_path).map_err(|e| io(&lock_path, e))?;
    let deadline = std::time::Instant::now() + LOCK_WAIT;
    loop {
        match lock.try_lock() {
            Ok(()) => break,
            Err(std::fs::TryLockError::WouldBlock) if std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(refused(
                    &lock_path.display().to_string(),
                    format!(
                        "another appmgr has been verifying this remote's metadata for {} s",
                        LOCK_WAIT.as_secs()
                    ),
                ))
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(io(&lock_path, e)),
        }
    }
    // A swap cut short by a crash: the previous state is in `old`.
    if !dir.exists() && old.exists() {
        std::fs::rename(&old, dir).map_err(|e| io(dir, e))?;
    }
    for d in [&old, &new] {
        match std::fs::remove_dir_all(d) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io(d, e)),
        }
    }
    std::fs::create_dir_all(&new).map_err(|e| io(&new, e))?;
    let before = read_state(dir).map_err(|e| io(dir, e))?;
    for (name, bytes) in &before {
        std::fs::write(new.join(name), bytes).map_err(|e| io(&new, e))?;
    }
    let result = load_in(client, r, anchor, &new);
    let commit = || -> std::io::Result<()> {
        // tough's own clock record is not kept (see load_in), and what it stores is
        // compared as JSON: it serializes maps in no fixed order.
        let _ = std::fs::remove_file(new.join("latest_known_time.json"));
        let after = read_state(&new)?;
        let same = |a: &BTreeMap<String, Vec<u8>>, b: &BTreeMap<String, Vec<u8>>| {
            a.len() == b.len()
                && a.iter().zip(b).all(|((na, va), (nb, vb))| {
                    na == nb
                        && (va == vb
                            || serde_json::from_slice::<serde_json::Value>(va)
                                .ok()
                                .is_some_and(|x| {
                                    serde_json::from_slice::<serde_json::Value>(vb).ok() == Some(x)
                                }))
                })
        };
        if same(&after, &before) {
            return std::fs::remove_dir_all(&new);
        }
        for name in after.keys() {
            std::fs::File::open(new.join(name))?.sync_all()?;
        }
        if dir.exists() {
            std::fs::rename(dir, &old)?;
        }
        std::fs::rename(&new, dir)?;
        std::fs::File::open(parent)?.sync_all()?;
        match std::fs::remove_dir_all(&old) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    };
    match result {
        Ok(t) => {
            commit().map_err(|e| io(dir, e))?;
            Ok(t)
        }
        Err(e) => {
            let _ = std::fs::remove_dir_all(&new);
            if let Some(d) = first_missing {
                let _ = std::fs::remove_dir_all(d);
            }
            Err(e)
        }
    }
}

/// The longest a load waits for another load of the same remote.
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(120);

/// The persisted floor moves in steps of at least this much.
pub const FLOOR_STEP: jiff::SignedDuration = jiff::SignedDuration::from_hours(1);

/// The regular files of a TUF state dir by name (none when it does not exist).
fn read_state(dir: &Path) -> std::io::Result<BTreeMap<String, Vec<u8>>> {
    let mut out = BTreeMap::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(e),
    };
    for e in entries {
        let e = e?;
        if e.file_type()?.is_file() {
            if let Some(n) = e.file_name().to_str() {
                out.insert(n.to_string(), std::fs::read(e.path())?);
            }
        }
    }
    Ok(out)
}

fn load_in(client: &Client, r: &OciRef, anchor: &[u8], dir: &Path) -> Result<Trusted, RemoteError> {
    let what = format!("{}", metadata_repo(r));
    // tough refuses a clock older than the last one it saw; the floor below replaces
    // that check with one that does not lock an RTC-less device out.
    let _ = std::fs::remove_file(dir.join("latest_known_time.json"));
    let floor = read_floor(dir)?;
    // The latest root verified before is the anchor; the configured one only at first.
    let stored = std::fs::read(dir.join("root.json")).ok();
    let root = match &stored {
        Some(b) if serde_json::from_slice::<Signed<Root>>(b).is_ok() => b.as_slice(),
        _ => anchor,
    };
    let transport = OciTransport {
        client: Arc::new(client.clone()),
        repo: metadata_repo(r),
        last_error: Arc::new(Mutex::new(None)),
    };
    let last_error = transport.last_error.clone();
    let base = url::Url::parse(BASE).expect("valid");
    let repo = runtime()?.block_on(async {
        RepositoryLoader::new(&root, base.clone(), base.clone())
            .transport(transport)
            .datastore(dir)
            .expiration_enforcement(ExpirationEnforcement::Unsafe)
            .load()
            .await
    });
    let repo = match repo {
        Ok(repo) => repo,
        Err(e) => {
            if let Some(t) = last_error.lock().expect("not poisoned").take() {
                return Err(t);
            }
            return Err(refused(&what, chain(&e)));
        }
    };
    let roles = [
        ("root", repo.root().signed.expires),
        ("timestamp", repo.timestamp().signed.expires),
        ("snapshot", repo.snapshot().signed.expires),
        ("targets", repo.targets().signed.expires),
    ];
    let expires = roles.iter().map(|(_, e)| *e).min().expect("four roles");
    let (now, new_floor) = trusted_time(jiff::Timestamp::now(), floor, expires);
    for (role, exp) in roles {
        if exp < now {
            return Err(refused(
                &what,
                format!(
                    "the {role} metadata expired at {exp} (trusted time {now}): updates from this remote wait for fresh metadata; installed apps are not affected"
                ),
            ));
        }
    }
    if floor.is_none_or(|f| new_floor.duration_since(f) >= FLOOR_STEP) {
        write_atomic(dir, FLOOR_FILE, format!("{new_floor}\n").as_bytes())?;
    }
    let mut targets = Vec::new();
    for (name, t) in &repo.targets().signed.targets {
        let tag = name.raw().to_string();
        let info: TargetInfo = serde_json::from_value(serde_json::Value::Object(
            t.custom.clone().into_iter().collect(),
        ))
        .map_err(|e| {
            refused(
                &what,
                format!("target {}: custom: {e}", escape_for_display(&tag)),
            )
        })?;
        targets.push(TrustedTarget {
            tag,
            length: t.length,
            digest: format!("sha256:{}", hex::encode(&t.hashes.sha256)),
            info,
        });
    }
    targets.sort_by(|a, b| a.tag.cmp(&b.tag));
    Ok(Trusted {
        root_version: repo.root().signed.version.get(),
        targets_version: repo.targets().signed.version.get(),
        timestamp_version: repo.timestamp().signed.version.get(),
        expires,
        now,
        targets,
    })
}

// ---- publisher side ----

/// An ed25519 key of a TUF role: the same PKCS#8 PEM files as bundle signing keys
/// (`appmgr keygen`).
struct PemKey {
    der: Vec<u8>,
}

impl std::fmt::Debug for PemKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PemKey(..)")
    }
}

#[async_trait]
impl KeySource for PemKey {
    async fn as_sign(
        &self,
    ) -> Result<Box<dyn tough::sign::Sign>, Box<dyn std::error::Error + Send + Sync + 'static>>
    {
        Ok(Box::new(tough::sign::parse_keypair(&self.der)?))
    }
    async fn write(
        &self,
        _value: &str,
        _key_id_hex: &str,
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync + 'static>> {
        Err("keys are not written back".into())
    }
}

fn load_keys(paths: &[PathBuf]) -> Result<Vec<Box<dyn KeySource>>, RemoteError> {
    use ed25519_dalek::pkcs8::EncodePrivateKey;
    let mut out: Vec<Box<dyn KeySource>> = Vec::new();
    for p in paths {
        let k = appmgr_bundle::keys::load_secret(p).map_err(|e| usage(e.to_string()))?;
        let der = k
            .to_pkcs8_der()
            .map_err(|e| usage(format!("{}: {e}", p.display())))?;
        out.push(Box::new(PemKey {
            der: der.as_bytes().to_vec(),
        }));
    }
    Ok(out)
}

/// The TUF key (public part and id) of a key file.
fn tuf_key(
    path: &Path,
) -> Result<
    (
        tough::schema::decoded::Decoded<tough::schema::decoded::Hex>,
        tough::schema::key::Key,
    ),
    RemoteError,
> {
    let keys = load_keys(&[path.to_path_buf()])?;
    let rt = runtime()?;
    let key = rt
        .block_on(keys[0].as_sign())
        .map_err(|e| usage(format!("{}: {e}", path.display())))?
        .tuf_key();
    let id = key
        .key_id()
        .map_err(|e| usage(format!("{}: {}", path.display(), chain(&e))))?;
    Ok((id, key))
}

/// What a root says: its version, expiry, each role's key files and threshold.
pub struct RootSpec {
    pub version: u64,
    pub expires: jiff::Timestamp,
    /// (role, key file) pairs; every role needs at least its threshold of keys.
    pub keys: Vec<(String, PathBuf)>,
    /// Per role; 1 when not given.
    pub thresholds: BTreeMap<String, u64>,
}

fn role_type(name: &str) -> Result<RoleType, RemoteError> {
    Ok(match name {
        "root" => RoleType::Root,
        "targets" => RoleType::Targets,
        "snapshot" => RoleType::Snapshot,
        "timestamp" => RoleType::Timestamp,
        other => {
            return Err(usage(format!(
                "{}: not a role (root, targets, snapshot, timestamp)",
                escape_for_display(other)
            )))
        }
    })
}

/// Builds a root from `spec` and signs it with the key files `sign` (for a rotation: the
/// previous root's threshold of its root keys and the new root's threshold of its own).
/// A root that does not verify under its own keys is refused; one the previous root does
/// not sign is written (devices refuse it), since only the publisher knows its intent.
pub fn make_root(spec: &RootSpec, sign: &[PathBuf]) -> Result<Vec<u8>, RemoteError> {
    let version =
        NonZeroU64::new(spec.version).ok_or_else(|| usage("--version must be at least 1"))?;
    let mut keys = std::collections::HashMap::new();
    let mut roles: std::collections::HashMap<RoleType, RoleKeys> = std::collections::HashMap::new();
    for r in ["root", "targets", "snapshot", "timestamp"] {
        let t = spec.thresholds.get(r).copied().unwrap_or(1);
        roles.insert(
            role_type(r)?,
            RoleKeys {
                keyids: Vec::new(),
                threshold: NonZeroU64::new(t)
                    .ok_or_else(|| usage(format!("{r}: a threshold of 0")))?,
                _extra: Default::default(),
            },
        );
    }
    for r in spec.thresholds.keys() {
        role_type(r)?;
    }
    for (role, path) in &spec.keys {
        let (id, key) = tuf_key(path)?;
        let rk = roles.get_mut(&role_type(role)?).expect("all four roles");
        if !rk.keyids.contains(&id) {
            rk.keyids.push(id.clone());
        }
        keys.insert(id, key);
    }
    for (role, rk) in &roles {
        if (rk.keyids.len() as u64) < rk.threshold.get() {
            return Err(usage(format!(
                "{role}: threshold {} but {} key(s)",
                rk.threshold,
                rk.keyids.len()
            )));
        }
    }
    let root = Root {
        spec_version: "1.0.0".into(),
        consistent_snapshot: true,
        version,
        expires: spec.expires,
        keys,
        roles,
        _extra: Default::default(),
    };
    let signers = load_keys(sign)?;
    // tough signs a root with the keys its key holder lists for the root role; the holder
    // here lists every --sign key, so a rotation carries the previous root's signatures
    // as well as the new one's (the signed content is the new root, unchanged).
    let mut holder = root.clone();
    for p in sign {
        let (id, key) = tuf_key(p)?;
        let rk = holder
            .roles
            .get_mut(&RoleType::Root)
            .expect("all four roles");
        if !rk.keyids.contains(&id) {
            rk.keyids.push(id.clone());
        }
        holder.keys.insert(id, key);
    }
    let rng = aws_lc_rs::rand::SystemRandom::new();
    let signed = runtime()?
        .block_on(SignedRole::new(
            root,
            &KeyHolder::Root(holder),
            &signers,
            &rng,
        ))
        .map_err(|e| usage(format!("signing the root: {}", chain(&e))))?;
    let bytes = signed.buffer().clone();
    check_root(&bytes, "the new root")?;
    Ok(bytes)
}

/// Stores metadata file `file` in `r`'s metadata repository (its blob, then the tag).
pub fn push_metadata(
    client: &Client,
    r: &OciRef,
    file: &str,
    bytes: &[u8],
) -> Result<(), RemoteError> {
    let repo = metadata_repo(r);
    let digest = format!("sha256:{}", artifact::sha256_hex(bytes));
    client.push_blob(
        &repo,
        &artifact::empty_config().digest,
        artifact::EMPTY_JSON,
    )?;
    client.push_blob(&repo, &digest, bytes)?;
    let m = artifact::single_layer_manifest(
        METADATA_ARTIFACT_TYPE,
        Descriptor {
            media_type: METADATA_MEDIA_TYPE.into(),
            digest,
            size: bytes.len() as u64,
            annotations: [(artifact::ANN_TITLE.to_string(), file.to_string())].into(),
        },
    );
    client.put_manifest(&repo, file, &m)
}

/// A bundle to add to the targets.
pub struct NewTarget {
    pub tag: String,
    pub length: u64,
    /// `sha256:HEX`.
    pub digest: String,
    /// Without the release: [`add_target`] sets it.
    pub id: String,
    pub kind: String,
    pub version: String,
    pub arch: String,
    pub branch: String,
}

/// What [`add_target`] published.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    pub release: u64,
    pub targets_version: u64,
    pub root_version: u64,
}

/// Adds (or replaces) target `t` in `r`'s TUF repository and publishes new targets,
/// snapshot and timestamp metadata signed with `keys`, valid until `expires`. `root` is
/// the publisher's current root file (pushed as `N.root.json` when the registry lacks
/// that version). `release`: the target's release counter, by default one more than the
/// highest of its ID in the current targets.
pub fn add_target(
    client: &Client,
    r: &OciRef,
    root: &Path,
    keys: &[PathBuf],
    t: NewTarget,
    release: Option<u64>,
    expires: jiff::Timestamp,
) -> Result<Published, RemoteError> {
    let root_bytes = std::fs::read(root).map_err(|e| usage(format!("{}: {e}", root.display())))?;
    let root_version = check_root(&root_bytes, &root.display().to_string())?;
    let signers = load_keys(keys)?;
    let meta = metadata_repo(r);
    let existing = client.tags(&meta)?;
    let rt = runtime()?;
    let work = tempfile::tempdir().map_err(|e| usage(format!("a temporary directory: {e}")))?;
    let datastore = work.path().join("datastore");
    std::fs::create_dir_all(&datastore).map_err(|e| usage(e.to_string()))?;
    let out = work.path().join("out");
    std::fs::create_dir_all(&out).map_err(|e| usage(e.to_string()))?;
    let base = url::Url::parse(BASE).expect("valid");
    let (mut editor, versions, top) = if existing.iter().any(|t| t == "timestamp.json") {
        let transport = OciTransport {
            client: Arc::new(client.clone()),
            repo: meta.clone(),
            last_error: Arc::new(Mutex::new(None)),
        };
        let repo = rt
            .block_on(
                RepositoryLoader::new(&root_bytes, base.clone(), base.clone())
                    .transport(transport)
                    .datastore(&datastore)
                    .expiration_enforcement(ExpirationEnforcement::Unsafe)
                    .load(),
            )
            .map_err(|e| {
                refused(
                    &meta.to_string(),
                    format!("the published metadata: {}", chain(&e)),
                )
            })?;
        let v = (
            repo.targets().signed.version.get(),
            repo.snapshot().signed.version.get(),
            repo.timestamp().signed.version.get(),
        );
        let top = repo
            .targets()
            .signed
            .targets
            .values()
            .filter(|x| x.custom.get("id").and_then(|v| v.as_str()) == Some(t.id.as_str()))
            .filter_map(|x| x.custom.get("release").and_then(|v| v.as_u64()))
            .max()
            .unwrap_or(0);
        let ed = rt
            .block_on(RepositoryEditor::from_repo(root, repo))
            .map_err(|e| usage(chain(&e)))?;
        (ed, v, top)
    } else {
        let ed = rt
            .block_on(RepositoryEditor::new(root))
            .map_err(|e| usage(format!("{}: {}", root.display(), chain(&e))))?;
        (ed, (0, 0, 0), 0)
    };
    let release = release.unwrap_or(top + 1);
    let info = TargetInfo {
        id: t.id,
        kind: t.kind,
        version: t.version,
        arch: t.arch,
        branch: t.branch,
        release,
    };
    let hexd = t
        .digest
        .strip_prefix("sha256:")
        .ok_or_else(|| usage("a target's digest must be sha256"))?;
    let target: tough::schema::Target = serde_json::from_value(serde_json::json!({
        "length": t.length,
        "hashes": {"sha256": hexd},
        "custom": info,
    }))
    .map_err(|e| usage(format!("target: {e}")))?;
    let next = |v: u64| NonZeroU64::new(v + 1).expect("non-zero");
    editor
        .add_target(t.tag.as_str(), target)
        .map_err(|e| usage(chain(&e)))?
        .targets_version(next(versions.0))
        .map_err(|e| usage(chain(&e)))?
        .targets_expires(expires)
        .map_err(|e| usage(chain(&e)))?
        .snapshot_version(next(versions.1))
        .snapshot_expires(expires)
        .timestamp_version(next(versions.2))
        .timestamp_expires(expires);
    let signed = rt
        .block_on(editor.sign(&signers))
        .map_err(|e| usage(format!("signing the metadata: {}", chain(&e))))?;
    rt.block_on(signed.write(&out))
        .map_err(|e| usage(format!("writing the metadata: {}", chain(&e))))?;
    // Root first (when new), then targets and snapshot, the timestamp last: a device
    // sees the new set only once all of it is there.
    let file = |name: String| -> Result<(String, Vec<u8>), RemoteError> {
        let b = std::fs::read(out.join(&name)).map_err(|e| usage(format!("{name}: {e}")))?;
        Ok((name, b))
    };
    let root_file = format!("{root_version}.root.json");
    if !existing.contains(&root_file) {
        push_metadata(client, r, &root_file, &root_bytes)?;
    }
    for name in [
        format!("{}.targets.json", versions.0 + 1),
        format!("{}.snapshot.json", versions.1 + 1),
        "timestamp.json".to_string(),
    ] {
        let (n, b) = file(name)?;
        push_metadata(client, r, &n, &b)?;
    }
    Ok(Published {
        release,
        targets_version: versions.0 + 1,
        root_version,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> jiff::Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn the_floor_never_locks_out_and_never_goes_back() {
        let expires = t("2027-01-01T00:00:00Z");
        // First verification with a sane clock: the floor is the clock.
        let (now, floor) = trusted_time(t("2026-12-01T00:00:00Z"), None, expires);
        assert_eq!(
            (now, floor),
            (t("2026-12-01T00:00:00Z"), t("2026-12-01T00:00:00Z"))
        );
        // A device without an RTC boots in 1970: the floor stands in for the clock, so
        // metadata that expired before the floor stays refused and newer metadata passes.
        let (now, floor2) = trusted_time(t("1970-01-01T00:00:10Z"), Some(floor), expires);
        assert_eq!(now, floor);
        assert_eq!(floor2, floor);
        assert!(
            t("2026-11-30T00:00:00Z") < now,
            "expired before the floor: refused"
        );
        assert!(expires > now, "still valid: accepted");
        // A clock far in the future raises the floor only up to what the verified
        // metadata vouches for (its expiry), never beyond.
        let (now, floor3) = trusted_time(t("2099-01-01T00:00:00Z"), Some(floor), expires);
        assert_eq!(now, t("2099-01-01T00:00:00Z"));
        assert_eq!(floor3, expires);
    }

    #[test]
    fn metadata_repo_is_the_sibling_tuf_repository() {
        let r = OciRef::parse("oci://127.0.0.1:5000/fleet/apps").unwrap();
        assert_eq!(metadata_repo(&r).repo, "fleet/apps/tuf");
        assert_eq!(metadata_repo(&r.with_tag("x")).tag, None);
    }
}
