//! The device's TUF state of a remote (docs/remotes.md "Trust"): its configured root,
//! the verified metadata's datastore with the trusted-time floor, and the per-ID release
//! counters installs from it reached.
//!
//! - `CONFIG/remotes.d/NAME.root.json`: the trust anchor given to `remote add --root`;
//! - `STATE/remotes/NAME/tuf/`: the latest verified root, the versions seen (rollback),
//!   the trusted-time floor;
//! - `STATE/remotes/NAME/releases.json`: `{ID: release}`, the highest release installed.
//!
//! Removing the remote removes all of it; adding it again is the documented recovery
//! from a floor pushed too far (a clock that was wrong when metadata verified).

use crate::{CoreResult, Ctx, Error};
use appmgr_remote::tuf::{self, Trusted};
use appmgr_remote::Client;
use appmgr_types::ErrorClass;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

pub const ROOT_SUFFIX: &str = ".root.json";
const RELEASES: &str = "releases.json";
/// A releases file larger than this is refused (one line per ID).
const MAX_RELEASES: u64 = 4 << 20;

/// `CONFIG/remotes.d/NAME.root.json`.
pub fn root_path(config_dir: &Path, name: &str) -> PathBuf {
    config_dir
        .join(crate::remotes::REMOTES_DIR)
        .join(format!("{name}{ROOT_SUFFIX}"))
}

/// `STATE/remotes/NAME`.
pub fn state_path(state_dir: &Path, name: &str) -> PathBuf {
    state_dir.join("remotes").join(name)
}

fn io_error(p: &Path, e: std::io::Error) -> Error {
    Error::new(ErrorClass::Other, format!("{}: {e}", p.display()))
}

/// Reads and checks a root file for `remote add --root` (exit 2 when it is no root,
/// exit 3 when it does not verify under its own keys). Returns its bytes and version.
pub fn read_root(path: &Path) -> CoreResult<(Vec<u8>, u64)> {
    use std::io::Read;
    let mut b = Vec::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(1 << 20).read_to_end(&mut b))
        .map_err(|e| {
            let class = if e.kind() == std::io::ErrorKind::NotFound {
                ErrorClass::NotFound
            } else {
                ErrorClass::Other
            };
            Error::new(class, format!("{}: {e}", path.display()))
        })?;
    let v = tuf::check_root(&b, &path.display().to_string())?;
    Ok((b, v))
}

/// The remote's verified TUF metadata (`None` for a remote without a root).
pub fn load(g: &Ctx, r: &crate::remotes::Remote, client: &Client) -> CoreResult<Option<Trusted>> {
    let Some(root) = &r.root else {
        return Ok(None);
    };
    let (anchor, _) = read_root(root)?;
    let dir = state_path(&g.state_dir, &r.name).join("tuf");
    let t = tuf::load(client, &r.url, &anchor, &dir).map_err(|e| {
        let msg = format!("remote {}: {}", r.name, crate::error_chain(&e));
        Error::new(e.class(), msg)
    })?;
    Ok(Some(t))
}

/// The release counters reached by installs from remote `name`.
pub fn releases(g: &Ctx, name: &str) -> CoreResult<BTreeMap<String, u64>> {
    use std::io::Read;
    let p = state_path(&g.state_dir, name).join(RELEASES);
    let mut text = String::new();
    match std::fs::File::open(&p) {
        Ok(f) => {
            f.take(MAX_RELEASES)
                .read_to_string(&mut text)
                .map_err(|e| io_error(&p, e))?;
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(BTreeMap::new()),
        Err(e) => return Err(io_error(&p, e)),
    }
    serde_json::from_str(&text).map_err(|e| {
        Error::new(
            ErrorClass::Integrity,
            format!("{}: not a release record: {e}", p.display()),
        )
    })
}

/// Records that release `release` of `id` from remote `name` is installed (never
/// lowering the record); written whole and renamed into place.
pub fn record_release(g: &Ctx, name: &str, id: &str, release: u64) -> CoreResult<()> {
    let mut all = releases(g, name)?;
    let e = all.entry(id.to_string()).or_insert(0);
    if *e >= release {
        return Ok(());
    }
    *e = release;
    let dir = state_path(&g.state_dir, name);
    std::fs::create_dir_all(&dir).map_err(|e| io_error(&dir, e))?;
    let dst = dir.join(RELEASES);
    let text = serde_json::to_vec_pretty(&all).expect("serializable");
    appmgr_policy::userdb::write_atomic(&dst, &text).map_err(|e| io_error(&dst, e))
}

/// What an install from a TUF remote records once it succeeded, and whether the signed
/// release allows a lower version than the one installed (a downgrade the publisher
/// signed: a release above the one recorded).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Release {
    pub remote: String,
    pub id: String,
    pub release: u64,
    pub allows_downgrade: bool,
}

impl Release {
    pub fn record(&self, g: &Ctx) -> CoreResult<()> {
        record_release(g, &self.remote, &self.id, self.release)
    }
}

/// `publish --tuf-root`: how the bundle is listed in the remote's TUF metadata.
#[derive(Debug, Clone)]
pub struct TufPublish {
    pub root: PathBuf,
    pub keys: Vec<PathBuf>,
    pub release: Option<u64>,
    pub expires: std::time::Duration,
}

fn usage(msg: String) -> Error {
    Error::new(ErrorClass::Usage, msg)
}

/// `7d`, `12h`, `30m`, `90s` (at most ten years).
pub fn parse_duration(s: &str) -> CoreResult<std::time::Duration> {
    let bad = || {
        usage(format!(
            "{}: not a duration (a number and d, h, m or s: 7d, 12h, 90s)",
            appmgr_types::escape_for_display(s)
        ))
    };
    let (n, unit) = s.split_at(s.len().saturating_sub(1));
    let n: u64 = n.parse().map_err(|_| bad())?;
    let mul = match unit {
        "d" => 86400,
        "h" => 3600,
        "m" => 60,
        "s" => 1,
        _ => return Err(bad()),
    };
    let secs = n
        .checked_mul(mul)
        .filter(|&x| x > 0 && x <= 3650 * 86400)
        .ok_or_else(bad)?;
    Ok(std::time::Duration::from_secs(secs))
}

/// Now plus `d`, as the metadata's expiry.
pub fn expiry_in(d: std::time::Duration) -> CoreResult<jiff::Timestamp> {
    let sd = jiff::SignedDuration::try_from(d).map_err(|e| usage(format!("{e}")))?;
    jiff::Timestamp::now()
        .checked_add(sd)
        .map_err(|e| usage(format!("{e}")))
}

/// `tuf root OUT --version N --expires D --key ROLE=FILE… --threshold ROLE=K… --sign
/// FILE…`: writes a new root metadata file (never over an existing file).
pub fn new_root(
    out: &Path,
    version: u64,
    expires: std::time::Duration,
    keys: &[String],
    thresholds: &[String],
    sign: &[PathBuf],
) -> CoreResult<crate::Output> {
    let mut spec = tuf::RootSpec {
        version,
        expires: expiry_in(expires)?,
        keys: Vec::new(),
        thresholds: BTreeMap::new(),
    };
    for k in keys {
        let (role, file) = k.split_once('=').ok_or_else(|| {
            usage(format!(
                "--key {}: not ROLE=FILE",
                appmgr_types::escape_for_display(k)
            ))
        })?;
        spec.keys.push((role.to_string(), PathBuf::from(file)));
    }
    for t in thresholds {
        let (role, n) = t
            .split_once('=')
            .and_then(|(r, n)| n.parse::<u64>().ok().map(|n| (r, n)))
            .ok_or_else(|| {
                usage(format!(
                    "--threshold {}: not ROLE=K",
                    appmgr_types::escape_for_display(t)
                ))
            })?;
        spec.thresholds.insert(role.to_string(), n);
    }
    let bytes = tuf::make_root(&spec, sign)?;
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(out)
        .map_err(|e| {
            let class = if e.kind() == std::io::ErrorKind::AlreadyExists {
                ErrorClass::Conflict
            } else {
                ErrorClass::Other
            };
            Error::new(class, format!("{}: {e}", out.display()))
        })?;
    f.write_all(&bytes)
        .and_then(|_| f.sync_all())
        .map_err(|e| io_error(out, e))?;
    Ok(crate::Output::new(
        format!("wrote root version {version} to {}\n", out.display()),
        serde_json::json!({"root": out.display().to_string(), "version": version}),
    ))
}
