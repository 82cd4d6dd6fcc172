//! Remotes: OCI registry repositories that bundles are published to (`publish`) and
//! installed from (`remote ls`, `install NAME:ID[@VERSION]`). See docs/remotes.md.
//!
//! A remote is one file, `CONFIG/remotes.d/NAME.toml`, holding `url = "oci://…"`. What a
//! remote lists is trusted only as far as the signed manifest each tag carries verifies
//! against the trusted keys; a download is read as a stream straight into the install,
//! never past the size that signed manifest implies, and its manifest must be the listed
//! one byte for byte.

use crate::{CoreResult, Ctx, Error, Output};
use appmgr_bundle::{Manifest, TrustStore};
use appmgr_remote::access::Access;
use appmgr_remote::{Client, Limits, Listing, OciRef};
use appmgr_types::{escape_for_display, AppId, Arch, ErrorClass, Version};
use serde_json::json;
use std::fmt::Write;
use std::io::Read;
use std::path::{Path, PathBuf};

pub const REMOTES_DIR: &str = "remotes.d";
/// The most tags of one remote that `remote ls` and a resolution look at.
pub const MAX_TAGS: usize = 2000;
/// The largest bundle a plain URL may deliver (a bundle's own signed sizes bound it
/// further as soon as its manifest is read).
const MAX_URL_BUNDLE: u64 = 64 << 30;

/// One configured remote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Remote {
    pub name: String,
    pub url: OciRef,
    /// The download bounds (defaults, or the file's `min-rate`, `rate-window-s`,
    /// `max-resumes`).
    pub limits: Limits,
    /// `CONFIG/remotes.d/NAME.root.json` when the remote is TUF-verified
    /// ([`crate::remote_tuf`]).
    pub root: Option<PathBuf>,
    /// `ca`: the PEM file of the CAs trusted for this `oci+https://` remote (default: the
    /// host's `tls-ca-file`).
    pub ca: Option<PathBuf>,
    /// `credentials`: a `USER:SECRET` file (mode 0600) for a registry that asks for them
    /// (`oci+https://` only).
    pub credentials: Option<PathBuf>,
}

impl Remote {
    /// The client this remote is reached with: its download bounds, and for TLS its CA
    /// roots and credentials (read now, so a bad file is named before anything is sent).
    pub fn client(&self, g: &Ctx) -> CoreResult<Client> {
        if !self.url.tls {
            return Ok(Client::new(self.limits));
        }
        let access = tls_access(g, self.ca.as_deref(), self.credentials.as_deref())?
            .map_err(|e| usage(format!("remote {}: {e}", self.name)))?;
        Ok(Client::with_access(self.limits, access))
    }
}

/// The roots of `ca` (default: the host's `tls-ca-file`) and the credentials of
/// `credentials`, read now. The outer error is the host configuration's, the inner one
/// the files'.
fn tls_access(
    g: &Ctx,
    ca: Option<&Path>,
    credentials: Option<&Path>,
) -> CoreResult<Result<Access, appmgr_remote::RemoteError>> {
    let ca = match ca {
        Some(p) => p.to_path_buf(),
        None => crate::config::HostConfig::load(&g.config_dir)?.tls_ca_file()?,
    };
    Ok(Access::load(Some(&ca), credentials))
}

/// The client of a plain bundle URL: for `https://`, the host's `tls-ca-file` roots.
fn url_client(g: &Ctx, url: &str) -> CoreResult<Client> {
    if !url.starts_with("https://") {
        return Ok(Client::new(Limits::default()));
    }
    Ok(Client::with_access(
        Limits::default(),
        tls_access(g, None, None)??,
    ))
}

/// A path of a remote file's `ca` or `credentials`: absolute, normal, printable.
fn config_path(file: &Path, key: &str, v: &str) -> CoreResult<PathBuf> {
    let p = Path::new(v);
    let normal = p.is_absolute()
        && p.components().all(|c| {
            matches!(
                c,
                std::path::Component::RootDir | std::path::Component::Normal(_)
            )
        });
    if !normal || appmgr_types::has_unsafe_chars(v) {
        return Err(usage(format!(
            "{}: {key}: \"{}\" is not an absolute path without . or .. components",
            file.display(),
            escape_for_display(v)
        )));
    }
    Ok(p.to_path_buf())
}

#[derive(serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RemoteFile {
    url: String,
    /// Bytes per second a download must average over each window (slow retrieval).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    min_rate: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    rate_window_s: Option<u64>,
    /// How often a cut download is resumed before it fails.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    max_resumes: Option<u32>,
    /// The CA certificates (PEM) trusted for an `oci+https://` remote.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    ca: Option<String>,
    /// A `USER:SECRET` file (0600) answering the registry's challenges.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    credentials: Option<String>,
}

/// A remote's name: `[a-z0-9][a-z0-9_-]{0,63}`.
pub fn valid_name(n: &str) -> bool {
    let b = n.as_bytes();
    !b.is_empty()
        && b.len() <= 64
        && (b[0].is_ascii_lowercase() || b[0].is_ascii_digit())
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'_' || *c == b'-')
}

fn dir(config_dir: &Path) -> PathBuf {
    config_dir.join(REMOTES_DIR)
}

fn usage(msg: String) -> Error {
    Error::new(ErrorClass::Usage, msg)
}

fn io_error(p: &Path, e: std::io::Error) -> Error {
    Error::new(ErrorClass::Other, format!("{}: {e}", p.display()))
}

fn load_one(path: &Path, name: &str) -> CoreResult<Remote> {
    let mut text = String::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(64 * 1024).read_to_string(&mut text))
        .map_err(|e| io_error(path, e))?;
    let f: RemoteFile =
        toml::from_str(&text).map_err(|e| usage(format!("{}: {}", path.display(), e.message())))?;
    let url = OciRef::parse(&f.url).map_err(|e| usage(format!("{}: url: {e}", path.display())))?;
    if url.tag.is_some() {
        return Err(usage(format!(
            "{}: url: a remote is a repository, without a tag",
            path.display()
        )));
    }
    let mut limits = Limits::default();
    if let Some(r) = f.min_rate {
        limits.min_rate = r;
    }
    if let Some(w) = f.rate_window_s {
        if !(1..=3600).contains(&w) {
            return Err(usage(format!(
                "{}: rate-window-s: {w} is not within 1..=3600",
                path.display()
            )));
        }
        limits.rate_window = std::time::Duration::from_secs(w);
    }
    if let Some(m) = f.max_resumes {
        if m > 100 {
            return Err(usage(format!(
                "{}: max-resumes: {m} is more than 100",
                path.display()
            )));
        }
        limits.max_resumes = m;
    }
    let ca =
        f.ca.as_deref()
            .map(|v| config_path(path, "ca", v))
            .transpose()?;
    let credentials = f
        .credentials
        .as_deref()
        .map(|v| config_path(path, "credentials", v))
        .transpose()?;
    if !url.tls && (ca.is_some() || credentials.is_some()) {
        return Err(usage(format!(
            "{}: ca and credentials need a TLS remote (url = \"oci+https://…\"): credentials are never sent over plain http",
            path.display()
        )));
    }
    let root = crate::remote_tuf::root_path(
        path.parent()
            .unwrap_or(Path::new("."))
            .parent()
            .unwrap_or(Path::new(".")),
        name,
    );
    Ok(Remote {
        name: name.to_string(),
        url,
        limits,
        root: root.exists().then_some(root),
        ca,
        credentials,
    })
}

/// Every configured remote, by name. A malformed file is an error naming it.
pub fn load(config_dir: &Path) -> CoreResult<Vec<Remote>> {
    let d = dir(config_dir);
    let entries = match std::fs::read_dir(&d) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_error(&d, e)),
    };
    let mut out = Vec::new();
    for e in entries {
        let e = e.map_err(|e| io_error(&d, e))?;
        let file = e.file_name();
        let Some(name) = file.to_str().and_then(|f| f.strip_suffix(".toml")) else {
            continue;
        };
        if !valid_name(name) {
            return Err(usage(format!(
                "{}: not a valid remote name (a-z, 0-9, _ and -)",
                e.path().display()
            )));
        }
        out.push(load_one(&e.path(), name)?);
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// Refuses a remote name that is not [`valid_name`] (exit 2), naming it.
pub fn check_name(name: &str) -> CoreResult<()> {
    if valid_name(name) {
        return Ok(());
    }
    Err(usage(format!(
        "{}: not a valid remote name (a-z, 0-9, _ and -, at most 64)",
        escape_for_display(name)
    )))
}

/// The remote called `name` (not found: exit 5).
pub fn find(config_dir: &Path, name: &str) -> CoreResult<Remote> {
    check_name(name)?;
    let p = dir(config_dir).join(format!("{name}.toml"));
    if !p.exists() {
        return Err(Error::new(
            ErrorClass::NotFound,
            format!("no remote {name} (see appmgr remote list)"),
        ));
    }
    load_one(&p, name)
}

fn remote_json(r: &Remote) -> serde_json::Value {
    json!({"name": r.name, "url": r.url.to_string(), "tuf": r.root.is_some(),
           "ca": r.ca, "credentials": r.credentials})
}

/// The `ca` and `credentials` of `remote add` and `publish`.
#[derive(Debug, Clone, Default)]
pub struct AccessFiles {
    pub ca: Option<PathBuf>,
    pub credentials: Option<PathBuf>,
}

impl AccessFiles {
    /// Both made absolute, and refused for a plain-http reference.
    fn checked(&self, url: &OciRef) -> CoreResult<AccessFiles> {
        if !url.tls && (self.ca.is_some() || self.credentials.is_some()) {
            return Err(usage(format!(
                "{url}: --ca and --credentials need a TLS registry (oci+https://…): credentials are never sent over plain http"
            )));
        }
        let abs = |p: &Option<PathBuf>| {
            p.as_ref()
                .map(|p| std::path::absolute(p).map_err(|e| io_error(p, e)))
                .transpose()
        };
        Ok(AccessFiles {
            ca: abs(&self.ca)?,
            credentials: abs(&self.credentials)?,
        })
    }

    /// A client for `url` with these files (the system's CA bundle when no `ca`).
    fn client(&self, url: &OciRef, limits: Limits) -> CoreResult<Client> {
        if !url.tls {
            return Ok(Client::new(limits));
        }
        let access = Access::load(self.ca.as_deref(), self.credentials.as_deref())?;
        Ok(Client::with_access(limits, access))
    }
}

/// `remote add NAME URL`: a new remote (an existing name is a conflict, exit 6). The file
/// is written whole and renamed into place.
pub fn add(
    g: &Ctx,
    name: &str,
    url: &str,
    root: Option<&Path>,
    files: &AccessFiles,
) -> CoreResult<Output> {
    if !valid_name(name) {
        return Err(usage(format!(
            "{}: not a valid remote name (a-z, 0-9, _ and -, at most 64)",
            escape_for_display(name)
        )));
    }
    let parsed = OciRef::parse(url)?;
    if parsed.tag.is_some() {
        return Err(usage(format!(
            "{}: a remote is a repository, without a tag",
            escape_for_display(url)
        )));
    }
    let files = files.checked(&parsed)?;
    // Read now: a CA file that holds no certificate or credentials that anyone may read
    // are named here, not at the first update.
    if parsed.tls {
        tls_access(g, files.ca.as_deref(), files.credentials.as_deref())??;
    }
    let anchor = root.map(crate::remote_tuf::read_root).transpose()?;
    let d = dir(&g.config_dir);
    std::fs::create_dir_all(&d).map_err(|e| io_error(&d, e))?;
    let path = d.join(format!("{name}.toml"));
    if path.exists() {
        return Err(Error::new(
            ErrorClass::Conflict,
            format!("remote {name} exists already (remove it first)"),
        ));
    }
    // A stale TUF state of an earlier remote of that name is not this one's.
    let state = crate::remote_tuf::state_path(&g.state_dir, name);
    match std::fs::remove_dir_all(&state) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_error(&state, e)),
    }
    // The root before the remote file: a remote file never exists without its root.
    let root_file = crate::remote_tuf::root_path(&g.config_dir, name);
    if let Some((bytes, _)) = &anchor {
        appmgr_policy::userdb::write_atomic(&root_file, bytes)
            .map_err(|e| io_error(&root_file, e))?;
    }
    let text = toml::to_string(&RemoteFile {
        url: parsed.to_string(),
        min_rate: None,
        rate_window_s: None,
        max_resumes: None,
        ca: files.ca.as_ref().map(|p| p.display().to_string()),
        credentials: files.credentials.as_ref().map(|p| p.display().to_string()),
    })
    .expect("serializable");
    let tmp = d.join(format!(".{name}.toml.tmp"));
    let write = || -> std::io::Result<()> {
        use std::io::Write as _;
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
        // A link, unlike a rename, refuses to replace a remote added meanwhile.
        std::fs::hard_link(&tmp, &path)
    };
    let r = write();
    let _ = std::fs::remove_file(&tmp);
    if r.is_err() && anchor.is_some() {
        let _ = std::fs::remove_file(&root_file);
    }
    match r {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            return Err(Error::new(
                ErrorClass::Conflict,
                format!("remote {name} exists already (remove it first)"),
            ))
        }
        Err(e) => return Err(io_error(&path, e)),
    }
    let r = Remote {
        name: name.into(),
        url: parsed,
        limits: Limits::default(),
        root: anchor.as_ref().map(|_| root_file),
        ca: files.ca,
        credentials: files.credentials,
    };
    let trust = match &anchor {
        Some((_, v)) => format!(" (TUF, root version {v})"),
        None => " (bundle signatures only)".into(),
    };
    Ok(Output::new(
        format!("added remote {} {}{trust}\n", r.name, r.url),
        remote_json(&r),
    ))
}

/// `remote list`.
pub fn list(g: &Ctx) -> CoreResult<Output> {
    let all = load(&g.config_dir)?;
    let mut text = String::new();
    for r in &all {
        let trust = if r.root.is_some() {
            "tuf"
        } else {
            "signatures"
        };
        let _ = writeln!(text, "{}\t{}\t{trust}", r.name, r.url);
    }
    Ok(Output::new(
        text,
        json!(all.iter().map(remote_json).collect::<Vec<_>>()),
    ))
}

/// `remote remove NAME`.
pub fn remove(g: &Ctx, name: &str) -> CoreResult<Output> {
    let r = find(&g.config_dir, name)?;
    let p = dir(&g.config_dir).join(format!("{name}.toml"));
    std::fs::remove_file(&p).map_err(|e| io_error(&p, e))?;
    // Its trust anchor and TUF state go with it (the remote file first: a root without
    // a remote file is ignored).
    if let Some(root) = &r.root {
        std::fs::remove_file(root).map_err(|e| io_error(root, e))?;
    }
    let state = crate::remote_tuf::state_path(&g.state_dir, name);
    match std::fs::remove_dir_all(&state) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_error(&state, e)),
    }
    Ok(Output::new(
        format!("removed remote {} {}\n", r.name, r.url),
        remote_json(&r),
    ))
}

/// What one tag of a remote offers, checked against the trusted keys.
#[derive(Debug, Clone)]
pub struct Offer {
    pub listing: Listing,
    /// The manifest it carries: verified when `refusal` is `None`, otherwise only what
    /// the listing claims (shown, and matched to name why an install is refused).
    pub manifest: Option<Manifest>,
    pub signer: Option<String>,
    /// Why it cannot be installed (untrusted, malformed, or a layer of the wrong size).
    pub refusal: Option<String>,
    /// The release counter its TUF target carries (TUF remotes only).
    pub release: Option<u64>,
}

fn check_offer(listing: Listing, trust: &TrustStore, what: &str) -> Offer {
    let name = PathBuf::from(what);
    match appmgr_bundle::check_signed_manifest(
        &listing.manifest_bytes,
        &listing.signature,
        &name,
        Some(trust),
    ) {
        Ok((m, signer)) => {
            let payload = m.payload.as_ref();
            let expected = payload.map(|p| {
                appmgr_bundle::container::bundle_size(
                    listing.manifest_bytes.len() as u64,
                    m.sbom.as_ref().map(|s| s.size),
                    p.size,
                )
            });
            let refusal = (expected != Some(listing.bundle.size)).then(|| {
                format!(
                    "{what}: the layer has {} bytes, its signed manifest implies {}",
                    listing.bundle.size,
                    expected.unwrap_or(0)
                )
            });
            Offer {
                listing,
                manifest: Some(m),
                signer,
                refusal,
                release: None,
            }
        }
        Err(e) => Offer {
            manifest: appmgr_bundle::check_signed_manifest(
                &listing.manifest_bytes,
                &listing.signature,
                &name,
                None,
            )
            .ok()
            .map(|(m, _)| m),
            listing,
            signer: None,
            refusal: Some(crate::error_chain(&e)),
            release: None,
        },
    }
}

fn unknown_listing(tag: String, refusal: String) -> Offer {
    Offer {
        listing: Listing {
            tag,
            digest: String::new(),
            manifest_bytes: Vec::new(),
            signature: Vec::new(),
            // Nothing of it is known: no layer is shown.
            bundle: appmgr_remote::Descriptor {
                media_type: String::new(),
                digest: String::new(),
                size: 0,
                annotations: Default::default(),
            },
            index: None,
        },
        manifest: None,
        signer: None,
        refusal: Some(refusal),
        release: None,
    }
}

/// What a TUF remote offers: exactly its verified targets, each checked against the tag
/// of that name on the registry (the same bundle: digest and size) and against its
/// bundle's signed manifest (the same id, kind, version, arch and branch).
fn tuf_offers(
    r: &Remote,
    t: &appmgr_remote::tuf::Trusted,
    trust: &TrustStore,
    client: &Client,
    want: &dyn Fn(&appmgr_remote::tuf::TargetInfo) -> bool,
) -> CoreResult<Vec<Offer>> {
    let mut out = Vec::with_capacity(t.targets.len());
    for target in t.targets.iter().filter(|t| want(&t.info)) {
        let what = format!("{}:{}", r.name, target.tag);
        let mut o = match client.listing(&r.url, &target.tag) {
            Ok(l) => check_offer(l, trust, &what),
            Err(e @ appmgr_remote::RemoteError::Refused { .. })
            | Err(e @ appmgr_remote::RemoteError::NotFound { .. }) => {
                unknown_listing(target.tag.clone(), e.to_string())
            }
            Err(e) => return Err(e.into()),
        };
        o.release = Some(target.info.release);
        if o.refusal.is_none()
            && (o.listing.bundle.digest != target.digest || o.listing.bundle.size != target.length)
        {
            o.refusal = Some(format!(
                "{what}: the registry's bundle ({} bytes, {}) is not the one the TUF targets list ({} bytes, {})",
                o.listing.bundle.size, o.listing.bundle.digest, target.length, target.digest
            ));
        }
        if let (None, Some(m)) = (&o.refusal, &o.manifest) {
            let i = &target.info;
            let signed = (
                m.id.to_string(),
                m.kind.to_string(),
                m.version.to_string(),
                m.arch.to_string(),
                m.branch.to_string(),
            );
            let listed = (
                i.id.clone(),
                i.kind.clone(),
                i.version.clone(),
                i.arch.clone(),
                i.branch.clone(),
            );
            if signed != listed {
                o.refusal = Some(format!(
                    "{what}: the bundle is {} {} {} {} {}, its TUF target says {} {} {} {} {}",
                    signed.0,
                    signed.1,
                    signed.2,
                    signed.3,
                    signed.4,
                    listed.0,
                    listed.1,
                    listed.2,
                    listed.3,
                    listed.4
                ));
            }
        }
        out.push(o);
    }
    Ok(out)
}

/// Every tag of `r`, read and checked. A tag that is not an appmgr bundle artifact is an
/// offer with a refusal, not an error: the repository may hold other things. A TUF
/// remote offers its verified targets only ([`tuf_offers`]); its metadata failing to
/// verify is an error.
pub fn offers(g: &Ctx, r: &Remote, trust: &TrustStore, client: &Client) -> CoreResult<Vec<Offer>> {
    offers_of(g, r, trust, client, &|_| true)
}

/// [`offers`], where a TUF remote's listings are read only for the targets `want`
/// accepts (an install reads its ID's, not the whole repository's); a remote without
/// TUF has only its listings to go by, so all are read.
fn offers_of(
    g: &Ctx,
    r: &Remote,
    trust: &TrustStore,
    client: &Client,
    want: &dyn Fn(&appmgr_remote::tuf::TargetInfo) -> bool,
) -> CoreResult<Vec<Offer>> {
    if let Some(t) = crate::remote_tuf::load(g, r, client)? {
        return tuf_offers(r, &t, trust, client, want);
    }
    let tags = client.tags(&r.url)?;
    if tags.len() > MAX_TAGS {
        return Err(Error::new(
            ErrorClass::Integrity,
            format!(
                "remote {}: {} tags, at most {MAX_TAGS} are read",
                r.name,
                tags.len()
            ),
        ));
    }
    let mut out = Vec::with_capacity(tags.len());
    for t in tags {
        let what = format!("{}:{t}", r.name);
        match client.listing(&r.url, &t) {
            Ok(l) => out.push(check_offer(l, trust, &what)),
            Err(e @ appmgr_remote::RemoteError::Refused { .. }) => {
                out.push(unknown_listing(t, e.to_string()))
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(out)
}

fn offer_json(o: &Offer) -> serde_json::Value {
    let mut v = json!({
        "tag": o.listing.tag,
        "digest": o.listing.digest,
        "size": o.listing.bundle.size,
        "trusted": o.refusal.is_none(),
    });
    if let Some(rel) = o.release {
        v["release"] = json!(rel);
    }
    if let Some(m) = &o.manifest {
        v["id"] = json!(m.id.to_string());
        v["kind"] = json!(m.kind.to_string());
        v["version"] = json!(m.version.to_string());
        v["arch"] = json!(m.arch.to_string());
        v["branch"] = json!(m.branch.to_string());
        v["runtime"] = json!(m.runtime.as_ref().map(|r| r.to_string()));
        v["installed_size"] = json!(m.payload.as_ref().map(|p| p.installed_size));
        v["permissions"] = serde_json::to_value(&m.permissions).unwrap_or_default();
        if o.refusal.is_none() {
            v["signer"] = json!(o.signer);
        }
    }
    if let Some(r) = &o.refusal {
        v["refused"] = json!(r);
    }
    v
}

/// `remote ls NAME`: what the remote offers, from the image manifests alone (no payload
/// is downloaded); each entry's signed manifest is checked against the trusted keys.
pub fn ls(g: &Ctx, name: &str) -> CoreResult<Output> {
    let r = find(&g.config_dir, name)?;
    let trust = TrustStore::load(&g.config_dir)?;
    let client = r.client(g)?;
    let all = offers(g, &r, &trust, &client)?;
    let mut text = String::new();
    for o in &all {
        match (&o.manifest, &o.refusal) {
            (Some(m), None) => {
                let release = o
                    .release
                    .map(|r| format!("\trelease {r}"))
                    .unwrap_or_default();
                let _ = writeln!(
                    text,
                    "{}\t{}\t{}\t{}\t{}\t{} bytes\tsigned by {}{release}",
                    m.id,
                    m.kind,
                    m.version,
                    m.arch,
                    m.branch,
                    o.listing.bundle.size,
                    o.signer.as_deref().unwrap_or("")
                );
            }
            (_, refusal) => {
                let _ = writeln!(
                    text,
                    "{}\trefused: {}",
                    o.listing.tag,
                    escape_for_display(refusal.as_deref().unwrap_or(""))
                );
            }
        }
    }
    Ok(Output::new(
        text,
        json!({"remote": r.name, "url": r.url.to_string(), "offers": all.iter().map(offer_json).collect::<Vec<_>>()}),
    ))
}

/// `publish FILE oci://HOST[:PORT]/REPO[:TAG]`: uploads the bundle file as an artifact
/// (its blob only when the registry lacks it) and tags it (default tag:
/// `ID_ARCH_VERSION`). The file must be a complete bundle: its size must be the one its
/// manifest implies. The signature is not checked here (the publisher need not trust its
/// own key); every device checks it.
pub fn publish(
    file: &Path,
    target: &str,
    tuf: Option<&crate::remote_tuf::TufPublish>,
    files: &AccessFiles,
) -> CoreResult<Output> {
    let dest = OciRef::parse(target)?;
    let client = files.checked(&dest)?.client(&dest, Limits::default())?;
    let expires = tuf
        .map(|t| crate::remote_tuf::expiry_in(t.expires))
        .transpose()?;
    let f = std::fs::File::open(file).map_err(|e| {
        let class = if e.kind() == std::io::ErrorKind::NotFound {
            ErrorClass::NotFound
        } else {
            ErrorClass::Other
        };
        Error::new(class, format!("{}: {e}", file.display()))
    })?;
    let size = f.metadata().map_err(|e| io_error(file, e))?.len();
    let b = appmgr_bundle::open_file(f.try_clone().map_err(|e| io_error(file, e))?, file, None)?;
    let m = b.manifest().clone();
    let p = m.payload.as_ref().expect("parsed manifests have a payload");
    let expected = appmgr_bundle::container::bundle_size(
        b.manifest_bytes().len() as u64,
        m.sbom.as_ref().map(|s| s.size),
        p.size,
    );
    if size != expected {
        return Err(Error::new(
            ErrorClass::Integrity,
            format!(
                "{}: {size} bytes, its manifest implies {expected} (truncated or extended?)",
                file.display()
            ),
        ));
    }
    // One pass to hash; the upload reads the file again, and the registry refuses it if
    // it changed in between (the digest is checked there). The clones share the offset.
    use std::io::Seek;
    let mut f = f;
    f.rewind().map_err(|e| io_error(file, e))?;
    let mut hasher = <sha2::Sha256 as sha2::Digest>::new();
    std::io::copy(&mut std::io::BufReader::new(&f), &mut hasher).map_err(|e| io_error(file, e))?;
    let digest = format!("sha256:{}", hex::encode(sha2::Digest::finalize(hasher)));
    // An uncompressed payload gets a file index: devices then fetch only changed files.
    let index = appmgr_remote::delta::build(&f)
        .map_err(|e| io_error(file, e))?
        .map(|i| serde_json::to_vec(&i).expect("serializable"))
        .filter(|b| b.len() as u64 <= appmgr_remote::delta::MAX_INDEX)
        .map(|b| {
            let d = format!("sha256:{}", appmgr_remote::artifact::sha256_hex(&b));
            (b, d)
        });
    f.rewind().map_err(|e| io_error(file, e))?;
    let tag = dest.tag.clone().unwrap_or_else(|| {
        appmgr_remote::reference::default_tag(
            m.id.as_str(),
            m.arch.as_str(),
            &m.version.to_string(),
        )
    });
    let title = file
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "bundle".into());
    let mut layer = appmgr_remote::Descriptor {
        media_type: appmgr_remote::artifact::LAYER_MEDIA_TYPE.into(),
        digest: digest.clone(),
        size,
        annotations: Default::default(),
    };
    if let Some((b, d)) = &index {
        layer
            .annotations
            .insert(appmgr_remote::delta::ANN_INDEX_DIGEST.into(), d.clone());
        layer.annotations.insert(
            appmgr_remote::delta::ANN_INDEX_SIZE.into(),
            b.len().to_string(),
        );
    }
    let image = appmgr_remote::artifact::image_manifest(
        &m,
        b.manifest_bytes(),
        b.signature(),
        layer,
        &title,
    )?;
    drop(b);
    client.push_blob(
        &dest,
        &appmgr_remote::artifact::empty_config().digest,
        appmgr_remote::artifact::EMPTY_JSON,
    )?;
    client.push_blob(&dest, &digest, &f)?;
    if let Some((b, d)) = &index {
        client.push_blob(&dest, d, b.as_slice())?;
    }
    client.put_manifest(&dest, &tag, &image)?;
    let at = dest.with_tag(&tag);
    let mut text = format!(
        "published {} {} {} as {at} ({size} bytes, {digest})\n",
        m.id, m.version, m.arch
    );
    let mut j = json!({"id": m.id.to_string(), "version": m.version.to_string(), "arch": m.arch.to_string(),
           "reference": at.to_string(), "digest": digest, "size": size, "files-index": index.as_ref().map(|(_, d)| d)});
    if let (Some(t), Some(expires)) = (tuf, expires) {
        let repo = OciRef {
            tag: None,
            ..dest.clone()
        };
        let p = appmgr_remote::tuf::add_target(
            &client,
            &repo,
            &t.root,
            &t.keys,
            appmgr_remote::tuf::NewTarget {
                tag: tag.clone(),
                length: size,
                digest: digest.clone(),
                id: m.id.to_string(),
                kind: m.kind.to_string(),
                version: m.version.to_string(),
                arch: m.arch.to_string(),
                branch: m.branch.to_string(),
            },
            t.release,
            expires,
        )?;
        let _ = writeln!(
            text,
            "listed in {} as release {} (targets version {}, root version {}, valid until {expires})",
            appmgr_remote::tuf::metadata_repo(&repo),
            p.release,
            p.targets_version,
            p.root_version
        );
        j["release"] = json!(p.release);
        j["targets_version"] = json!(p.targets_version);
    }
    Ok(Output::new(text, j))
}

/// What `install` installs from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// `NAME:ID[@VERSION]`: from a configured remote (the highest trusted version, or the
    /// one named).
    Remote {
        remote: String,
        id: AppId,
        version: Option<Version>,
    },
    /// `http://…`: a bundle file served by a web server.
    Url(String),
}

/// Reads an `install` argument as a remote source, or `None` when it names a file. A
/// `NAME:ID` whose NAME is no configured remote is a file name (it may contain `:`).
pub fn parse_source(config_dir: &Path, arg: &str) -> CoreResult<Option<Source>> {
    if arg.starts_with("http://") || arg.starts_with("https://") {
        return Ok(Some(Source::Url(arg.to_string())));
    }
    let Some((name, rest)) = arg.split_once(':') else {
        return Ok(None);
    };
    if !valid_name(name) || !dir(config_dir).join(format!("{name}.toml")).exists() {
        return Ok(None);
    }
    let (id, version) = match rest.split_once('@') {
        Some((i, v)) => (i, Some(v)),
        None => (rest, None),
    };
    let id = AppId::new(id).map_err(|e| usage(format!("{}: {e}", escape_for_display(arg))))?;
    let version = version
        .map(Version::new)
        .transpose()
        .map_err(|e| usage(format!("{}: {e}", escape_for_display(arg))))?;
    Ok(Some(Source::Remote {
        remote: name.to_string(),
        id,
        version,
    }))
}

/// An opened remote bundle: the stream (its manifest verified), its name for messages,
/// and for a TUF remote the release to record once it is installed.
pub type Opened = (
    appmgr_bundle::OpenBundle,
    PathBuf,
    Option<crate::remote_tuf::Release>,
    Option<Delta>,
);

/// A download that takes unchanged files from the installed version
/// ([`appmgr_remote::delta`]).
#[derive(Debug, Clone)]
pub struct Delta {
    /// Bytes read from the network so far (the whole bundle's, after the import).
    pub fetched: std::sync::Arc<std::sync::atomic::AtomicU64>,
    /// Bytes taken from installed files.
    pub reused: u64,
    /// The bundle's size.
    pub size: u64,
    /// Files taken from the installed version.
    pub files: usize,
}

impl Delta {
    pub fn fetched(&self) -> u64 {
        self.fetched.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// The installed deployment's tree of `r`.
fn installed_tree(g: &Ctx, r: &appmgr_types::RefName) -> Option<PathBuf> {
    let all = appmgr_state::View::new(&g.state_dir)
        .list_installed()
        .ok()?;
    all.into_iter()
        .find(|i| &i.ref_name == r)
        .and_then(|i| i.current.map(|c| c.files))
}

/// Opens `path` beneath `root` (no symbolic link, no `..` out of it) as a regular file
/// of `size` bytes; `None` otherwise.
fn open_beneath(root: &std::os::fd::OwnedFd, path: &str, size: u64) -> Option<std::fs::File> {
    use rustix::fs::{OFlags, ResolveFlags};
    let fd = rustix::fs::openat2(
        root,
        path,
        OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NOFOLLOW | OFlags::NONBLOCK,
        rustix::fs::Mode::empty(),
        ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS,
    )
    .ok()?;
    let f = std::fs::File::from(fd);
    let md = f.metadata().ok()?;
    (md.is_file() && md.len() == size).then_some(f)
}

/// [`open_beneath`], and its sha256 must be `sha256`; positioned at its start.
fn installed_copy(
    root: &std::os::fd::OwnedFd,
    path: &str,
    size: u64,
    sha256: &str,
) -> Option<std::fs::File> {
    use std::io::Seek;
    let mut f = open_beneath(root, path, size)?;
    let have = appmgr_remote::delta::sha256_of(&mut std::io::BufReader::new(&f)).ok()?;
    if have != sha256 {
        return None;
    }
    f.rewind().ok()?;
    Some(f)
}

/// Hashes what is read through it.
struct Hashed<R> {
    inner: R,
    hasher: sha2::Sha256,
}

impl<R: Read> Read for Hashed<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        sha2::Digest::update(&mut self.hasher, &buf[..n]);
        Ok(n)
    }
}

/// The frame `copy` (of `size` bytes, at its start) compresses to, as a reader, when its
/// content has sha256 `raw_sha256` and it is the frame the index names (`len` bytes of
/// that `sha256`): one read checks both. A device whose zstd compresses differently
/// fetches the frame instead.
fn same_frame(
    copy: std::fs::File,
    size: u64,
    raw_sha256: &str,
    len: u64,
    sha256: &str,
) -> Option<appmgr_bundle::frames::FrameReader<std::io::BufReader<std::fs::File>>> {
    use appmgr_bundle::frames::FrameReader;
    use std::io::Seek;
    let reader = Hashed {
        inner: std::io::BufReader::with_capacity(1 << 16, copy),
        hasher: <sha2::Sha256 as sha2::Digest>::new(),
    };
    let mut frame = FrameReader::new(reader, size).ok()?;
    let mut counted = (&mut frame).take(len + 1);
    let have = appmgr_remote::delta::sha256_of(&mut counted).ok()?;
    if counted.limit() != 1 || have != sha256 {
        return None;
    }
    let Hashed { inner, hasher } = frame.into_inner();
    if hex::encode(sha2::Digest::finalize(hasher)) != raw_sha256 {
        return None;
    }
    let mut copy = inner.into_inner();
    copy.rewind().ok()?;
    FrameReader::new(std::io::BufReader::with_capacity(1 << 16, copy), size).ok()
}

/// The local copies an update of `listing` can use: the files of the installed tree that
/// its index lists with the same size and sha256. `None`: no index, or nothing to reuse.
fn plan_delta(
    r: &Remote,
    client: &Client,
    listing: &Listing,
    tree: &Path,
) -> Option<(Vec<appmgr_remote::stream::Splice>, Delta)> {
    let desc = listing.index.as_ref()?;
    let mut bytes = Vec::new();
    client
        .blob(&r.url, desc)
        .ok()?
        .take(appmgr_remote::delta::MAX_INDEX)
        .read_to_end(&mut bytes)
        .ok()?;
    let index = appmgr_remote::delta::parse(&bytes, listing.bundle.size).ok()?;
    let root = rustix::fs::open(
        tree,
        rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::DIRECTORY | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    )
    .ok()?;
    let mut splices = Vec::new();
    let mut reused = 0;
    // Each copy stays open (checked once, read by descriptor): the largest files first,
    // at most MAX_COPIES of them, well below the process's descriptor limit.
    const MAX_COPIES: usize = 512;
    let mut by_size: Vec<&appmgr_remote::delta::IndexEntry> = index.files.iter().collect();
    by_size.sort_by_key(|f| std::cmp::Reverse(f.size));
    by_size.truncate(MAX_COPIES);
    by_size.sort_by_key(|f| f.offset);
    for f in by_size {
        let source: Box<dyn Read + Send> = match &f.raw {
            None => match installed_copy(&root, &f.path, f.size, &f.sha256) {
                Some(copy) => Box::new(std::io::BufReader::with_capacity(1 << 16, copy)),
                None => continue,
            },
            // A zstd frame: the copy must have the content, and compress to the frame.
            Some(raw) => match open_beneath(&root, &f.path, raw.size)
                .and_then(|copy| same_frame(copy, raw.size, &raw.sha256, f.size, &f.sha256))
            {
                Some(frame) => Box::new(frame),
                None => continue,
            },
        };
        reused += f.size;
        splices.push(appmgr_remote::stream::Splice {
            start: f.offset,
            len: f.size,
            source,
        });
    }
    if splices.is_empty() {
        return None;
    }
    let files = splices.len();
    Some((
        splices,
        Delta {
            fetched: Default::default(),
            reused,
            size: listing.bundle.size,
            files,
        },
    ))
}

/// The installed version of `id` (any kind, arch and branch), if any.
fn installed_version(g: &Ctx, id: &AppId) -> CoreResult<Option<Version>> {
    let all = appmgr_state::View::new(&g.state_dir).list_installed()?;
    Ok(all
        .into_iter()
        .filter(|i| &i.ref_name.id == id && i.ref_name.arch == Arch::host())
        .filter_map(|i| i.current.map(|c| c.version))
        .max())
}

/// The bundle stream of a remote source, opened and its manifest verified (signature and
/// scope), ready for the store's import; the name for messages. From a TUF remote: the
/// target with the highest release counter (of that version, when one is named), never
/// one below the release installed from it before (exit 3).
pub fn open_source(g: &Ctx, source: &Source, trust: &TrustStore) -> CoreResult<Opened> {
    open_source_with(g, source, trust, &mut |s| s, true)
}

/// A hook on the raw bundle stream before it is read (a copy of it is kept for a
/// deferred install).
pub type Wrap<'a> = &'a mut dyn FnMut(Box<dyn Read + Send>) -> Box<dyn Read + Send>;

/// [`open_source`], the download's byte stream passed through `wrap` first.
pub fn open_source_with(
    g: &Ctx,
    source: &Source,
    trust: &TrustStore,
    wrap: Wrap<'_>,
    delta: bool,
) -> CoreResult<Opened> {
    match source {
        Source::Url(url) => {
            let client = url_client(g, url)?;
            let name = PathBuf::from(url);
            let s = client.url(url, MAX_URL_BUNDLE)?;
            let b = appmgr_bundle::open_reader(wrap(Box::new(s)), &name, Some(trust))
                .map_err(crate::bundle_read_error)?;
            Ok((b, name, None, None))
        }
        Source::Remote {
            remote,
            id,
            version,
        } => {
            let r = find(&g.config_dir, remote)?;
            let client = r.client(g)?;
            let host = Arch::host();
            let want = |i: &appmgr_remote::tuf::TargetInfo| {
                i.id == id.as_str()
                    && i.arch == host.as_str()
                    && version.as_ref().is_none_or(|v| i.version == v.to_string())
            };
            let all = offers_of(g, &r, trust, &client, &want)?;
            let recorded = match r.root {
                Some(_) => crate::remote_tuf::releases(g, remote)?
                    .get(id.as_str())
                    .copied(),
                None => None,
            };
            let mut best: Option<(&Offer, &Manifest)> = None;
            let mut refused = Vec::new();
            for o in &all {
                let Some(m) = &o.manifest else { continue };
                if &m.id != id
                    || m.arch != host
                    || version.as_ref().is_some_and(|v| v != &m.version)
                {
                    continue;
                }
                if let Some(why) = &o.refusal {
                    refused.push(why.clone());
                    continue;
                }
                if let (Some(rel), Some(rec)) = (o.release, recorded) {
                    if rel < rec {
                        refused.push(format!(
                            "{remote}:{}: release {rel} of {id} ({}) is below release {rec} installed from this remote: rollback refused",
                            o.listing.tag, m.version
                        ));
                        continue;
                    }
                }
                let better = match best {
                    None => true,
                    Some((bo, b)) => (o.release, &m.version) > (bo.release, &b.version),
                };
                if better {
                    best = Some((o, m));
                }
            }
            let what = match version {
                Some(v) => format!("{id}@{v}"),
                None => id.to_string(),
            };
            let Some((o, _)) = best else {
                if let Some(why) = refused.first() {
                    return Err(Error::new(ErrorClass::Integrity, why.clone()));
                }
                return Err(Error::new(
                    ErrorClass::NotFound,
                    format!("remote {remote} offers no trusted {what} for {host}"),
                ));
            };
            let release = match o.release {
                Some(rel) => {
                    let lower = installed_version(g, id)?
                        .zip(o.manifest.as_ref())
                        .is_some_and(|(cur, m)| m.version < cur);
                    Some(crate::remote_tuf::Release {
                        remote: remote.clone(),
                        id: id.to_string(),
                        release: rel,
                        allows_downgrade: lower && recorded.is_some_and(|rec| rel > rec),
                    })
                }
                None => None,
            };
            // An update reads the files it already has from the installed version.
            let m = o.manifest.as_ref().expect("the best offer has a manifest");
            let (b, name, d) = open_listing_delta(
                g,
                &r,
                &client,
                &o.listing,
                &m.ref_name(),
                trust,
                wrap,
                delta,
            )?;
            Ok((b, name, release, d))
        }
    }
}

/// Streams the bundle of a checked listing of remote `r`; its manifest must be the listed
/// one byte for byte (mix and match).
fn open_listing(
    r: &Remote,
    client: &Client,
    listing: &Listing,
    trust: &TrustStore,
    wrap: Wrap<'_>,
    delta: Option<(Vec<appmgr_remote::stream::Splice>, &Delta)>,
) -> CoreResult<(appmgr_bundle::OpenBundle, PathBuf)> {
    let name = PathBuf::from(format!("{}:{}", r.name, listing.tag));
    let s = match delta {
        Some((splices, d)) => {
            client.blob_spliced(&r.url, &listing.bundle, splices, d.fetched.clone())?
        }
        None => client.blob(&r.url, &listing.bundle)?,
    };
    let b = appmgr_bundle::open_reader(wrap(Box::new(s)), &name, Some(trust))
        .map_err(crate::bundle_read_error)?;
    if b.manifest_bytes() != listing.manifest_bytes.as_slice() {
        return Err(Error::new(
            ErrorClass::Integrity,
            format!(
                "{}: the bundle's manifest is not the one its listing carries",
                name.display()
            ),
        ));
    }
    Ok((b, name))
}

/// The bundle stream of a planned update, from the listing the plan chose (no second
/// pass over the remote's tags).
/// With `delta`, the files the installed version has are read from it.
pub fn open_planned(g: &Ctx, p: &Planned, trust: &TrustStore, delta: bool) -> CoreResult<Opened> {
    let r = find(&g.config_dir, &p.remote)?;
    let client = r.client(g)?;
    let (b, name, d) = open_listing_delta(
        g,
        &r,
        &client,
        &p.listing,
        &p.ref_name,
        trust,
        &mut |s| s,
        delta,
    )?;
    Ok((b, name, p.release.clone(), d))
}

/// [`open_listing`], with the files the installed `ref_name` has read from it when
/// `delta` and the listing has an index.
#[allow(clippy::too_many_arguments)]
fn open_listing_delta(
    g: &Ctx,
    r: &Remote,
    client: &Client,
    listing: &Listing,
    ref_name: &appmgr_types::RefName,
    trust: &TrustStore,
    wrap: Wrap<'_>,
    delta: bool,
) -> CoreResult<(appmgr_bundle::OpenBundle, PathBuf, Option<Delta>)> {
    let planned = delta
        .then(|| installed_tree(g, ref_name))
        .flatten()
        .and_then(|t| plan_delta(r, client, listing, &t));
    match planned {
        Some((splices, d)) => {
            let (b, name) = open_listing(r, client, listing, trust, wrap, Some((splices, &d)))?;
            Ok((b, name, Some(d)))
        }
        None => {
            let (b, name) = open_listing(r, client, listing, trust, wrap, None)?;
            Ok((b, name, None))
        }
    }
}

/// One update `update` will install.
#[derive(Debug, Clone)]
pub struct Planned {
    pub ref_name: appmgr_types::RefName,
    pub from: Version,
    pub to: Version,
    pub remote: String,
    /// The listing chosen (its signed manifest verified).
    pub listing: Listing,
    /// From a TUF remote: the release to record (and whether it is a signed downgrade).
    pub release: Option<crate::remote_tuf::Release>,
}

/// An offer `update` may take: (remote, verified manifest, listing, its TUF release, the
/// release recorded for its ID from that remote).
type Candidate = (String, Manifest, Listing, Option<u64>, Option<u64>);

/// What `update [ID…]` does: for every installed ref (or those of the IDs named, each of
/// which must be installed), the highest version that a configured remote offers with a
/// trusted signature for the same kind, ID, arch and branch, when it is newer than the
/// current one and not below the highest ever installed (the downgrade record). Runtimes
/// come first, so an app's newer runtime is there before the app. Also returns the refs
/// that are up to date.
pub fn update_plan(g: &Ctx, ids: &[String]) -> CoreResult<(Vec<Planned>, Vec<UpToDate>)> {
    let mut installed = appmgr_state::View::new(&g.state_dir).list_installed()?;
    for id in ids {
        if !installed.iter().any(|i| i.ref_name.id.as_str() == id) {
            return Err(Error::new(
                ErrorClass::NotFound,
                format!("{}: not installed", escape_for_display(id)),
            ));
        }
    }
    if !ids.is_empty() {
        installed.retain(|i| ids.iter().any(|id| i.ref_name.id.as_str() == id));
    }
    let remotes = load(&g.config_dir)?;
    if remotes.is_empty() {
        return Err(Error::new(
            ErrorClass::NotFound,
            format!(
                "no remote is configured ({}/{REMOTES_DIR}/ is empty; see appmgr remote add)",
                g.config_dir.display()
            ),
        ));
    }
    let trust = TrustStore::load(&g.config_dir)?;
    let mut all: Vec<Candidate> = Vec::new();
    for r in &remotes {
        let client = r.client(g)?;
        let recorded = match r.root {
            Some(_) => crate::remote_tuf::releases(g, &r.name)?,
            None => Default::default(),
        };
        let mut from_r: Vec<Candidate> = Vec::new();
        let ids: std::collections::BTreeSet<String> = installed
            .iter()
            .map(|i| i.ref_name.id.to_string())
            .collect();
        let want = |i: &appmgr_remote::tuf::TargetInfo| ids.contains(&i.id);
        for o in offers_of(g, r, &trust, &client, &want)? {
            if o.refusal.is_none() {
                if let Some(m) = o.manifest {
                    let rec = recorded.get(m.id.as_str()).copied();
                    from_r.push((r.name.clone(), m, o.listing, o.release, rec));
                }
            }
        }
        if r.root.is_some() {
            // What the metadata says is newest: per ref, the highest release only, and
            // never one below the release installed before.
            let key = |m: &Manifest| {
                (
                    m.id.to_string(),
                    m.kind.to_string(),
                    m.arch.to_string(),
                    m.branch.to_string(),
                )
            };
            let mut top = std::collections::HashMap::new();
            for (_, m, _, rel, _) in &from_r {
                let e = top.entry(key(m)).or_insert(0);
                *e = (*e).max(rel.unwrap_or(0));
            }
            from_r.retain(|(_, m, _, rel, rec)| {
                rel.unwrap_or(0) >= rec.unwrap_or(0) && top.get(&key(m)) == Some(&rel.unwrap_or(0))
            });
        }
        all.extend(from_r);
    }
    let ids: Vec<String> = installed
        .iter()
        .map(|i| i.ref_name.id.to_string())
        .collect();
    let holds = crate::holds::in_force(g, ids.iter().map(String::as_str))?;
    let mut plan = Vec::new();
    let mut current = Vec::new();
    for i in installed {
        let Some(cur) = &i.current else { continue };
        if let Some(reason) = holds.get(i.ref_name.id.as_str()) {
            current.push(UpToDate {
                held: Some(reason.clone()),
                info: i,
            });
            continue;
        }
        let r = &i.ref_name;
        let same_ref = |m: &Manifest| {
            m.id == r.id && m.kind == r.kind && m.arch == r.arch && m.branch == r.branch
        };
        let upgrade = all
            .iter()
            .filter(|(_, m, ..)| {
                same_ref(m) && m.version > cur.version && m.version >= i.highest_version
            })
            .max_by(|a, b| (a.3, &a.1.version).cmp(&(b.3, &b.1.version)));
        // A signed downgrade: a TUF release above the one recorded, of a lower version.
        let downgrade = all
            .iter()
            .filter(|(_, m, _, rel, rec)| {
                same_ref(m)
                    && m.version < cur.version
                    && matches!((rel, rec), (Some(a), Some(b)) if a > b)
            })
            .max_by(|a, b| a.3.cmp(&b.3));
        let best = match (upgrade, downgrade) {
            (Some(u), Some(d)) if d.3 > u.3 => Some((d, true)),
            (Some(u), _) => Some((u, false)),
            (None, Some(d)) => Some((d, true)),
            (None, None) => None,
        };
        match best {
            Some(((remote, m, listing, rel, _), down)) => plan.push(Planned {
                ref_name: r.clone(),
                from: cur.version.clone(),
                to: m.version.clone(),
                remote: remote.clone(),
                listing: listing.clone(),
                release: rel.map(|rel| crate::remote_tuf::Release {
                    remote: remote.clone(),
                    id: r.id.to_string(),
                    release: rel,
                    allows_downgrade: down,
                }),
            }),
            None => current.push(UpToDate {
                info: i,
                held: None,
            }),
        }
    }
    plan.sort_by_key(|p| {
        (
            p.ref_name.kind != appmgr_types::Kind::Runtime,
            p.ref_name.to_string(),
        )
    });
    Ok((plan, current))
}

/// A ref `update` leaves as it is: up to date, or held (`appmgr hold`, the reason).
#[derive(Debug, Clone)]
pub struct UpToDate {
    pub info: appmgr_state::RefInfo,
    pub held: Option<String>,
}

/// `update`'s output: each install's own output (with the remote it came from), then
/// the refs that are up to date and those that are held.
pub fn update_output(done: Vec<(String, Output)>, current: &[UpToDate]) -> Output {
    compose_update(done, rest_output(current))
}

/// The installs' outputs put before `rest` (the up-to-date and held refs).
pub fn compose_update(done: Vec<(String, Output)>, rest: Output) -> Output {
    let mut text = String::new();
    let mut updated = Vec::new();
    for (remote, out) in done {
        text.push_str(&out.text);
        let mut j = out.json;
        j["remote"] = json!(remote);
        updated.push(j);
    }
    text.push_str(&rest.text);
    let mut j = rest.json;
    j["updated"] = json!(updated);
    Output::new(text, j)
}

/// An update plan as the worker reports it to appmgrd: each install as
/// `{"remote", "id", "ref", "from", "to"}` under `plan`, and the rest of the output
/// (the up-to-date and held refs) under `rest` (`{"text", "json"}`).
pub fn plan_output(plan: &[Planned], current: &[UpToDate]) -> Output {
    let rest = rest_output(current);
    let items: Vec<_> = plan
        .iter()
        .map(|p| {
            json!({"remote": p.remote, "id": p.ref_name.id.to_string(), "ref": p.ref_name.to_string(),
                   "from": p.from.to_string(), "to": p.to.to_string()})
        })
        .collect();
    Output::new(
        String::new(),
        json!({"plan": items, "rest": {"text": rest.text, "json": rest.json}}),
    )
}

fn rest_output(current: &[UpToDate]) -> Output {
    let mut text = String::new();
    let mut up_to_date = Vec::new();
    let mut held = Vec::new();
    for u in current {
        let i = &u.info;
        let v = i
            .current
            .as_ref()
            .map(|c| c.version.to_string())
            .unwrap_or_default();
        match &u.held {
            Some(reason) => {
                let why = if reason.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", escape_for_display(reason))
                };
                let _ = writeln!(text, "{} {v} is held{why}", i.ref_name);
                held.push(json!({"ref": i.ref_name.to_string(), "version": v, "reason": reason}));
            }
            None => {
                let _ = writeln!(text, "{} {v} is up to date", i.ref_name);
                up_to_date.push(json!({"ref": i.ref_name.to_string(), "version": v}));
            }
        }
    }
    Output::new(
        text,
        json!({"updated": [], "up-to-date": up_to_date, "held": held}),
    )
}
