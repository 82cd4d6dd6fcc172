//! appmgr-storeops: the use cases that change the store (install, update, remove,
//! rollback, fsck). They need libostree, so they live apart from `appmgr-core`: only
//! `appmgr-ops` (the CLI's store binary and appmgrd's worker) links them, and the lean
//! `appmgr`, `appmgrd` and `appmgr-launch` do not even depend on them.

use appmgr_bundle::TrustStore;
use appmgr_core::config::{board_facts, HostConfig};
use appmgr_core::records::{ref_json, Action, Change, Done};
use appmgr_core::{CoreResult, Ctx, Error, Output};
use appmgr_store::{InstallOptions, NewDeployment, Store, StoreError};
use appmgr_types::{Arch, ErrorClass, Kind};
use serde_json::json;
use std::fmt::Write;
use std::path::Path;

/// A store error as the one error type: an import that failed because the bundle was bad
/// is the bundle's failure (exit 3).
pub fn store_error(e: StoreError) -> Error {
    if let StoreError::Import { source, .. } = &e {
        if let Some(be) = source.downcast_ref::<appmgr_bundle::BundleError>() {
            let class = match appmgr_core::remote_failure(be) {
                Some(r) => r.class(),
                None => be.class(),
            };
            return Error::new(class, appmgr_core::error_chain(be));
        }
    }
    Error::new(e.class(), appmgr_core::error_chain(&e))
}

/// A bundle error during an install: one that the store (the sink) caused has the
/// store's class.
fn bundle_error(e: appmgr_bundle::BundleError) -> Error {
    if let Some(r) = appmgr_core::remote_failure(&e) {
        return Error::new(r.class(), appmgr_core::error_chain(&e));
    }
    if let Some(inner) = e.sink_error() {
        if let Some(se) = inner.downcast_ref::<StoreError>() {
            return Error::new(se.class(), appmgr_core::error_chain(&e));
        }
    }
    Error::from(e)
}

/// The store's settings from `appmgr.toml` (the uid range).
fn store_config(host: &HostConfig) -> CoreResult<appmgr_store::StoreConfig> {
    let mut cfg = appmgr_store::StoreConfig::default();
    if let Some(r) = host.uid_range()? {
        cfg.uid_range = r;
    }
    Ok(cfg)
}

pub fn open_store(g: &Ctx) -> CoreResult<(Store, HostConfig)> {
    let host = HostConfig::load(&g.config_dir)?;
    let store = Store::open(&g.state_dir, store_config(&host)?).map_err(store_error)?;
    Ok((store, host))
}

/// Where an install is: `phase` is `verifying` (signature and manifest checked, nothing
/// written yet), `importing` (`bytes` of `total` file content streamed into the store),
/// `committing` (content complete; commit, checkout and the record switch follow).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    pub phase: &'static str,
    pub bytes: u64,
    pub total: u64,
}

/// A sink that counts the file content passing through to the store.
struct Counting<'a> {
    inner: &'a mut dyn appmgr_bundle::PayloadSink,
    bytes: u64,
    total: u64,
    progress: &'a mut dyn FnMut(Progress),
}

impl appmgr_bundle::PayloadSink for Counting<'_> {
    fn directory(&mut self, p: &appmgr_bundle::RelPath) -> Result<(), appmgr_bundle::SinkError> {
        self.inner.directory(p)
    }
    fn file(
        &mut self,
        p: &appmgr_bundle::RelPath,
        executable: bool,
        size: u64,
        content: &mut dyn std::io::Read,
    ) -> Result<(), appmgr_bundle::SinkError> {
        self.inner.file(p, executable, size, content)?;
        self.bytes += size;
        (self.progress)(Progress {
            phase: "importing",
            bytes: self.bytes,
            total: self.total,
        });
        Ok(())
    }
    fn symlink(
        &mut self,
        p: &appmgr_bundle::RelPath,
        target: &str,
    ) -> Result<(), appmgr_bundle::SinkError> {
        self.inner.symlink(p, target)
    }
    fn hardlink(
        &mut self,
        p: &appmgr_bundle::RelPath,
        target: &appmgr_bundle::RelPath,
    ) -> Result<(), appmgr_bundle::SinkError> {
        self.inner.hardlink(p, target)
    }
}

/// Installs the bundle read from `f` (named `file` in messages), reporting progress.
pub fn install_from(
    g: &Ctx,
    f: std::fs::File,
    file: &Path,
    allow_downgrade: bool,
    release: Option<appmgr_core::remote_tuf::Release>,
    progress: &mut dyn FnMut(Progress),
) -> CoreResult<Done> {
    let trust = TrustStore::load(&g.config_dir)?;
    let bundle = appmgr_bundle::open_file(f, file, Some(&trust)).map_err(bundle_error)?;
    install_released(g, bundle, file, release, allow_downgrade, progress)
}

/// Installs from a remote or a URL (`install NAME:ID[@VERSION]`, `install http://…`): the
/// download is read as a stream straight into the import, as a file is.
pub fn install_source(
    g: &Ctx,
    source: &appmgr_core::remotes::Source,
    allow_downgrade: bool,
    progress: &mut dyn FnMut(Progress),
) -> CoreResult<Done> {
    let trust = TrustStore::load(&g.config_dir)?;
    install_remote(
        g,
        &mut |delta| appmgr_core::remotes::open_source_with(g, source, &trust, &mut |s| s, delta),
        allow_downgrade,
        progress,
    )
}

/// Whether a failed delta download is worth one full download: it failed for its bytes
/// (exit 3 or 1: a copy that changed, a wrong index, a range not served), not for what
/// the bundle is (policy, conflict, usage), which a full download would not change.
fn a_full_download_may_help(e: &Error) -> bool {
    matches!(e.class, ErrorClass::Integrity | ErrorClass::Other)
}

/// Installs what `open` opens, first reading unchanged files from the installed version
/// (`open(true)`). When such a download fails for its bytes (exit 3 or 1: a copy that
/// changed, a wrong index, a range the registry did not serve), nothing was installed,
/// and the bundle is downloaded in full once more (`open(false)`). The output says how
/// many bytes came over the network (`download`).
fn install_remote(
    g: &Ctx,
    open: &mut dyn FnMut(bool) -> CoreResult<appmgr_core::remotes::Opened>,
    allow_downgrade: bool,
    progress: &mut dyn FnMut(Progress),
) -> CoreResult<Done> {
    let (bundle, name, release, delta) = open(true)?;
    let first = install_released(g, bundle, &name, release, allow_downgrade, progress);
    let (mut done, note) = match (first, delta) {
        (Ok(d), delta) => (d, delta),
        (Err(e), Some(d)) if a_full_download_may_help(&e) => {
            let why = e.message;
            let (bundle, name, release, _) = open(false)?;
            let mut done = install_released(g, bundle, &name, release, allow_downgrade, progress)?;
            let _ = writeln!(
                done.output.text,
                "the delta download failed ({why}); downloaded in full"
            );
            done.output.json["download"] =
                json!({"delta": false, "delta-failed": why, "bundle-bytes": d.size});
            return Ok(done);
        }
        (Err(e), _) => return Err(e),
    };
    if let Some(d) = note {
        let (text, j) = delta_report(&d);
        let _ = writeln!(done.output.text, "{text}");
        done.output.json["download"] = j;
    }
    Ok(done)
}

/// What a download that read unchanged files locally transferred: a line for people, the
/// `download` JSON.
fn delta_report(d: &appmgr_core::remotes::Delta) -> (String, serde_json::Value) {
    let fetched = d.fetched();
    (
        format!(
            "downloaded {fetched} of {} bytes: {} bytes in {} files came from the installed version",
            d.size, d.reused, d.files
        ),
        json!({"delta": true, "fetched-bytes": fetched, "bundle-bytes": d.size,
               "reused-bytes": d.reused, "reused-files": d.files}),
    )
}

/// Installs a remote bundle and records its TUF release (when it has one) once the
/// install is complete. A signed release above the recorded one may lower the version.
fn install_released(
    g: &Ctx,
    bundle: appmgr_bundle::OpenBundle,
    name: &Path,
    release: Option<appmgr_core::remote_tuf::Release>,
    allow_downgrade: bool,
    progress: &mut dyn FnMut(Progress),
) -> CoreResult<Done> {
    let down = allow_downgrade || release.as_ref().is_some_and(|r| r.allows_downgrade);
    let done = install_bundle(g, bundle, name, down, progress)?;
    if let Some(r) = release {
        r.record(g)?;
    }
    Ok(done)
}

/// What is refused before the store is touched: a bundle for another architecture is a
/// conflict with this host (exit 6, the first thing checked after the signature); an
/// app that asks for more than policy grants is refused (exit 4, the excess named).
/// Returns what policy dropped (`KEY=VALUE`).
fn precheck(
    g: &Ctx,
    host: &HostConfig,
    m: &appmgr_bundle::Manifest,
    file: &Path,
) -> CoreResult<Vec<String>> {
    let host_arch = Arch::host();
    if m.arch != host_arch {
        return Err(Error::new(
            ErrorClass::Conflict,
            format!(
                "{}: bundle {} is for {}, this host is {host_arch}",
                file.display(),
                m.id,
                m.arch
            ),
        ));
    }
    if m.kind != Kind::App {
        return Ok(Vec::new());
    }
    let policies = appmgr_policy::PolicySet::load_config_dir(&g.config_dir)?;
    let board = host.board(&g.config_dir)?;
    let facts = board_facts(board.as_ref())?;
    let req = appmgr_policy::Request {
        app: &m.id,
        permissions: &m.permissions,
        resources: &m.resources,
    };
    let grant = policies.check(&req, &facts)?;
    Ok(grant
        .dropped()
        .iter()
        .map(|d| format!("{}={}", d.key, appmgr_types::escape_for_display(&d.value)))
        .collect())
}

/// Copies what the bundle reader reads into the spool file.
struct Tee {
    inner: Box<dyn std::io::Read + Send>,
    out: std::fs::File,
}

impl std::io::Read for Tee {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        use std::io::Write;
        let n = self.inner.read(buf)?;
        self.out.write_all(&buf[..n])?;
        Ok(n)
    }
}

/// Downloads a remote source, or reads `input` (a bundle file), into `dest` for an
/// install that inhibitors defer: the whole bundle is verified on the way (signature and
/// scope, payload digest, sizes; a remote's digest and length) and what the install
/// would refuse before the store (architecture, policy) is refused now, so a queued
/// install fails only for what changes meanwhile. `dest` is created (never followed or
/// replaced) and synced. Returns the manifest and, from a TUF remote, the release to
/// record once it is installed, and for a remote download what it transferred (the
/// `download` JSON of an install). On an error `dest` is removed.
pub fn spool(
    g: &Ctx,
    input: Result<&appmgr_core::remotes::Source, (std::fs::File, &Path)>,
    dest: &Path,
) -> CoreResult<(
    appmgr_bundle::Manifest,
    Option<appmgr_core::remote_tuf::Release>,
    Option<serde_json::Value>,
)> {
    let trust = TrustStore::load(&g.config_dir)?;
    match input {
        // Unchanged files come from the installed version (the kept file is the whole
        // bundle all the same); a delta that fails is downloaded in full once more.
        Ok(src) => {
            let mut open = |wrap: appmgr_core::remotes::Wrap<'_>, delta| {
                appmgr_core::remotes::open_source_with(g, src, &trust, wrap, delta)
            };
            match spool_once(g, dest, &mut open, true) {
                (Err(e), Some(d)) if a_full_download_may_help(&e) => {
                    let (m, release) = spool_once(g, dest, &mut open, false).0?;
                    let j =
                        json!({"delta": false, "delta-failed": e.message, "bundle-bytes": d.size});
                    Ok((m, release, Some(j)))
                }
                (r, d) => r.map(|(m, release)| (m, release, d.map(|d| delta_report(&d).1))),
            }
        }
        Err((f, name)) => {
            let mut f = Some(f);
            spool_once(
                g,
                dest,
                &mut |wrap, _| {
                    let f = f.take().expect("opened once");
                    let b = appmgr_bundle::open_reader(wrap(Box::new(f)), name, Some(&trust))
                        .map_err(bundle_error)?;
                    Ok((b, name.to_path_buf(), None, None))
                },
                false,
            )
            .0
            .map(|(m, release)| (m, release, None))
        }
    }
}

type SpoolOpen<'a> = dyn FnMut(appmgr_core::remotes::Wrap<'_>, bool) -> CoreResult<appmgr_core::remotes::Opened>
    + 'a;

/// One attempt of [`spool`]; also what it read locally, when it did.
fn spool_once(
    g: &Ctx,
    dest: &Path,
    open: &mut SpoolOpen<'_>,
    delta: bool,
) -> (
    CoreResult<(
        appmgr_bundle::Manifest,
        Option<appmgr_core::remote_tuf::Release>,
    )>,
    Option<appmgr_core::remotes::Delta>,
) {
    use std::os::unix::fs::OpenOptionsExt;
    let io = |e: std::io::Error| Error::new(ErrorClass::Other, format!("{}: {e}", dest.display()));
    let out = match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(dest)
    {
        Ok(o) => o,
        Err(e) => return (Err(io(e)), None),
    };
    let mut used = None;
    let r = (|| {
        let keep = out.try_clone().map_err(io)?;
        let mut out = Some(out);
        let mut wrap = |inner: Box<dyn std::io::Read + Send>| -> Box<dyn std::io::Read + Send> {
            match out.take() {
                Some(out) => Box::new(Tee { inner, out }),
                None => inner,
            }
        };
        let (bundle, name, release, d) = open(&mut wrap, delta)?;
        used = d.clone();
        let m = bundle.manifest().clone();
        precheck(g, &HostConfig::load(&g.config_dir)?, &m, &name)?;
        bundle
            .import(&mut appmgr_bundle::DiscardSink)
            .map_err(bundle_error)?;
        keep.sync_all().map_err(io)?;
        Ok((m, release))
    })();
    if r.is_err() {
        let _ = std::fs::remove_file(dest);
    }
    (r, used)
}

fn install_bundle(
    g: &Ctx,
    bundle: appmgr_bundle::OpenBundle,
    file: &Path,
    allow_downgrade: bool,
    progress: &mut dyn FnMut(Progress),
) -> CoreResult<Done> {
    let m = bundle.manifest().clone();
    // Before the store is opened (which creates it in a fresh state dir).
    let dropped = precheck(g, &HostConfig::load(&g.config_dir)?, &m, file)?;
    let (store, _) = open_store(g)?;
    let lock = store.lock().map_err(store_error)?;
    let payload = m.payload.as_ref().expect("verified bundles have a payload");
    let manifest_bytes = bundle.manifest_bytes().to_vec();
    let sbom_bytes = bundle.sbom().map(<[u8]>::to_vec);
    let signer = bundle.signer().unwrap_or_default().to_string();
    let new = NewDeployment {
        ref_name: m.ref_name(),
        version: m.version.clone(),
        runtime: m.runtime.clone(),
        manifest: &manifest_bytes,
        sbom: sbom_bytes.as_deref(),
        installed_size: payload.installed_size,
    };
    let total = payload.installed_size;
    progress(Progress {
        phase: "verifying",
        bytes: 0,
        total,
    });
    let report = store
        .install(&lock, &new, InstallOptions { allow_downgrade }, |sink| {
            let mut counting = Counting {
                inner: sink,
                bytes: 0,
                total,
                progress: &mut *progress,
            };
            let r = bundle
                .import(&mut counting)
                .map(|_| ())
                .map_err(|e| Box::new(e) as appmgr_store::ImportError);
            if r.is_ok() {
                progress(Progress {
                    phase: "committing",
                    bytes: total,
                    total,
                });
            }
            r
        })
        .map_err(store_error)?;
    let (action, from) = match &report.replaced {
        None => (Action::Installed, String::new()),
        Some(old) if old.version < report.version => {
            (Action::Updated, format!(" from {}", old.version))
        }
        Some(old) if old.version > report.version => {
            (Action::Downgraded, format!(" from {}", old.version))
        }
        Some(_) => (Action::Reinstalled, String::new()),
    };
    let what = action.as_str();
    let mut text = format!(
        "{what} {}{from} to {} ({} files, {} bytes; {} objects written, {} shared{})\n",
        report.ref_name,
        report.version,
        report.files,
        report.bytes,
        report.objects_written,
        report.objects_reused,
        if report.objects_repaired > 0 {
            format!(", {} repaired", report.objects_repaired)
        } else {
            String::new()
        }
    );
    for d in &dropped {
        let _ = writeln!(text, "dropped by policy: {d}");
    }
    let info = store.info(&lock, &report.ref_name).map_err(store_error)?;
    let mut j = ref_json(&info);
    j["action"] = json!(what);
    j["signed-by"] = json!(signer);
    j["dropped"] = json!(dropped);
    j["objects-written"] = json!(report.objects_written);
    j["objects-reused"] = json!(report.objects_reused);
    j["objects-repaired"] = json!(report.objects_repaired);
    j["files"] = json!(report.files);
    j["bytes"] = json!(report.bytes);
    let before = report.replaced.as_ref().map(|d| d.version.to_string());
    drop(lock);
    appmgr_core::prepared::refresh_after_change(g, &report.ref_name);
    Ok(Done {
        output: Output::new(text, j),
        change: Change::of(&info, action, before),
    })
}

pub fn remove(g: &Ctx, id: &str) -> CoreResult<Done> {
    let (store, _) = open_store(g)?;
    let lock = store.lock().map_err(store_error)?;
    let r = appmgr_core::apps::resolve_view(&appmgr_store::View::new(store.root()), id)?.ref_name;
    // A running instance would outlive its deployment: refused, under the store lock, so
    // the app is stopped first (`appmgr kill` / `stop`). Its uid, HOME and IPC objects stay
    // with the ID (the store never reuses the uid), so a reinstall finds them.
    if r.kind == Kind::App {
        let pids = appmgr_core::apps::running_pids(&r.id)?;
        if !pids.is_empty() {
            return Err(Error::new(
                ErrorClass::Conflict,
                format!(
                    "cannot remove {r}: {} is running ({} process(es), pid {}); stop it first",
                    r.id,
                    pids.len(),
                    pids[0]
                ),
            ));
        }
    }
    let i = store.remove(&lock, &r).map_err(store_error)?;
    drop(lock);
    appmgr_core::prepared::refresh_after_change(g, &r);
    Ok(Done {
        output: Output::new(
            format!(
                "removed {r} (highest version {} and uid {} stay recorded; HOME {} is kept)\n",
                i.highest_version,
                i.uid.map(|u| u.to_string()).unwrap_or_else(|| "-".into()),
                appmgr_core::apps::data_dir(g, &r.id).display()
            ),
            ref_json(&i),
        ),
        change: Change::of(&i, Action::Removed, None),
    })
}

pub fn rollback(g: &Ctx, id: &str) -> CoreResult<Done> {
    let (store, _) = open_store(g)?;
    let lock = store.lock().map_err(store_error)?;
    let r = appmgr_core::apps::resolve_view(&appmgr_store::View::new(store.root()), id)?.ref_name;
    let i = store.rollback(&lock, &r).map_err(store_error)?;
    drop(lock);
    appmgr_core::prepared::refresh_after_change(g, &r);
    let cur = i
        .current
        .as_ref()
        .map(|d| d.version.to_string())
        .unwrap_or_default();
    let prev = i
        .previous
        .as_ref()
        .map(|d| d.version.to_string())
        .unwrap_or_default();
    Ok(Done {
        output: Output::new(
            format!("rolled back {r} to {cur} (previous is now {prev})\n"),
            ref_json(&i),
        ),
        change: Change::of(&i, Action::RolledBack, None),
    })
}

/// `fsck`: the findings, or the integrity error (exit 3) carrying them when the store is
/// not clean.
pub fn fsck(g: &Ctx) -> CoreResult<Output> {
    appmgr_core::records::fsck_verdict(g, fsck_report(g)?)
}

/// fsck's findings as output, clean or not (`json["clean"]` tells): what appmgrd returns.
pub fn fsck_report(g: &Ctx) -> CoreResult<Output> {
    let (store, _) = open_store(g)?;
    let lock = store.lock().map_err(store_error)?;
    let report = store.fsck(&lock).map_err(store_error)?;
    let mut t = String::new();
    for c in &report.collected {
        let _ = writeln!(t, "collected leftover: {c}");
    }
    for p in &report.problems {
        let _ = writeln!(t, "problem: {p}");
    }
    let _ = writeln!(
        t,
        "{} deployments and {} objects checked: {}",
        report.deployments_checked,
        report.objects_checked,
        if report.is_clean() {
            "clean"
        } else {
            "CORRUPT"
        }
    );
    let j = json!({
        "clean": report.is_clean(),
        "problems": report.problems.iter().map(|p| p.to_string()).collect::<Vec<_>>(),
        "collected": report.collected,
        "deployments-checked": report.deployments_checked,
        "objects-checked": report.objects_checked,
        "marked-corrupt": report.marked_corrupt,
    });
    Ok(Output::new(t, j))
}

/// `update [ID…]`: installs what [`appmgr_core::remotes::update_plan`] finds, one
/// atomic install after the other (runtimes first). A failure stops there, naming the
/// ref; the installs before it stay (each is complete), and the error carries their
/// output.
pub fn update(
    g: &Ctx,
    ids: &[String],
    progress: &mut dyn FnMut(Progress),
) -> CoreResult<(Output, Vec<Change>)> {
    let (plan, current) = appmgr_core::remotes::update_plan(g, ids)?;
    let mut done = Vec::new();
    let mut changes = Vec::new();
    for p in plan {
        let installed = TrustStore::load(&g.config_dir)
            .map_err(Error::from)
            .and_then(|trust| {
                install_remote(
                    g,
                    &mut |delta| appmgr_core::remotes::open_planned(g, &p, &trust, delta),
                    false,
                    progress,
                )
            });
        match installed {
            Ok(d) => {
                changes.push(d.change);
                done.push((p.remote.clone(), d.output));
            }
            Err(e) => {
                let msg = format!(
                    "{} {} from remote {}: {}",
                    p.ref_name, p.to, p.remote, e.message
                );
                let partial = appmgr_core::remotes::update_output(done, &[]);
                return Err(Error::new(e.class, msg).with_output(partial));
            }
        }
    }
    Ok((appmgr_core::remotes::update_output(done, &current), changes))
}
