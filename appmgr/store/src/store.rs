//! The store: opening, locking, recovery and the operations.

use crate::error::{ImportError, StoreError};
use crate::fsutil::{self, create_dir_all, list_dir, remove_any};
use crate::import::StoreSink;
use crate::record;
use appmgr_bundle::payload::PayloadSink;
use appmgr_state::record::{DeploymentRecord, StateRecord, RECORD_FILE, RECORD_TMP};
use appmgr_state::view::{Deployment, RefInfo, View, FILES_DIR, MANIFEST_FILE, SBOM_FILE};
use appmgr_types::{AppId, Arch, Branch, Kind, RefName, RuntimeRef, Version};
use ostree::{gio, glib};
use serde::Serialize;
use std::collections::BTreeMap;
use std::fs;
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Ref namespace that keeps each ref's previous commit reachable.
pub(crate) const PREVIOUS_REF_PREFIX: &str = "appmgr/previous/";
/// Present while a mutating operation runs: its presence at the next lock means the
/// last operation was interrupted and unreachable objects must be pruned.
const TXN_MARKER: &str = "txn";

/// Store settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreConfig {
    /// The uids (and equal gids) allocated to apps, one per app ref for life (kept after
    /// remove, never reused; see `uids.rs`).
    pub uid_range: RangeInclusive<u32>,
    /// Free space that an install must leave on the file system, beyond its own size.
    pub reserve_bytes: u64,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            uid_range: 70000..=79999,
            reserve_bytes: appmgr_state::DEFAULT_RESERVE_BYTES,
        }
    }
}

/// What an install needs to know about a bundle; the store never sees the manifest type.
#[derive(Debug, Clone)]
pub struct NewDeployment<'a> {
    pub ref_name: RefName,
    pub version: Version,
    /// For apps: the runtime that must be installed.
    pub runtime: Option<RuntimeRef>,
    /// The exact signed manifest bytes, kept as `manifest.toml` beside the deployment.
    pub manifest: &'a [u8],
    /// The bundle's software bill of materials, already checked against the manifest's
    /// digest, kept as `sbom.cdx.json` beside the deployment.
    pub sbom: Option<&'a [u8]>,
    /// Sum of the payload's file sizes, for the free-space check.
    pub installed_size: u64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct InstallOptions {
    /// Install even if a higher version was installed before.
    pub allow_downgrade: bool,
}

/// The result of an install.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct InstallReport {
    #[serde(rename = "ref")]
    pub ref_name: RefName,
    pub version: Version,
    pub commit: String,
    /// The deployment that was current before, if any (now previous, or replaced when it
    /// had the same version).
    pub replaced: Option<Deployment>,
    pub deployment: Deployment,
    pub uid: Option<u32>,
    pub files: u64,
    pub bytes: u64,
    pub objects_written: u64,
    pub objects_reused: u64,
    /// Existing objects that failed verification and were rewritten.
    pub objects_repaired: u64,
}

/// An open store. All operations need a [`StoreLock`] from [`Store::lock`].
pub struct Store {
    root: PathBuf,
    repo: ostree::Repo,
    config: StoreConfig,
    view: View,
}

/// Proof that the exclusive store lock (`flock` on `STATE/lock`) is held.
#[derive(Debug)]
pub struct StoreLock {
    _file: fs::File,
    root: PathBuf,
    /// What the recovery run at lock time collected.
    pub collected: Vec<String>,
}

static SEQ: AtomicU64 = AtomicU64::new(0);

impl Store {
    /// Opens the store at `root` (the state directory), creating it on first use.
    pub fn open(root: impl Into<PathBuf>, config: StoreConfig) -> Result<Store, StoreError> {
        let root: PathBuf = root.into();
        create_dir_all(&root)?;
        let lock = lock_file(&root)?;
        let repo_path = root.join("repo");
        let repo = if repo_path.join("config").exists() {
            ostree::Repo::open_at(
                ostree::AT_FDCWD,
                &path_str(&repo_path)?,
                None::<&gio::Cancellable>,
            )
            .map_err(StoreError::ostree("open repository", repo_path.display()))?
        } else {
            // A repo whose creation was interrupted has no config: start it again.
            remove_any(&repo_path)?;
            ostree::Repo::create_at(
                ostree::AT_FDCWD,
                &path_str(&repo_path)?,
                ostree::RepoMode::Bare,
                None,
                None::<&gio::Cancellable>,
            )
            .map_err(StoreError::ostree("create repository", repo_path.display()))?
        };
        // The store fsyncs once (syncfs) before its commit point; per-object fsync by
        // libostree would only add latency (see the crate docs).
        repo.set_disable_fsync(true);
        drop(lock);
        for d in ["deploy/app", "deploy/runtime", "staging"] {
            create_dir_all(&root.join(d))?;
        }
        let view = View::new(&root);
        Ok(Store {
            root,
            repo,
            config,
            view,
        })
    }

    /// The state directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn config(&self) -> &StoreConfig {
        &self.config
    }

    /// Takes the exclusive store lock, waiting for other processes, then collects what an
    /// interrupted operation left behind.
    pub fn lock(&self) -> Result<StoreLock, StoreError> {
        let file = lock_file(&self.root)?;
        let mut lock = StoreLock {
            _file: file,
            root: self.root.clone(),
            collected: Vec::new(),
        };
        lock.collected = self.recover()?;
        Ok(lock)
    }

    fn check_lock(&self, lock: &StoreLock) {
        assert_eq!(lock.root, self.root, "store lock from another store");
    }

    // ---------------------------------------------------------------- paths

    fn ref_dir(&self, r: &RefName) -> PathBuf {
        self.view.ref_dir(r)
    }

    pub(crate) fn repo(&self) -> &ostree::Repo {
        &self.repo
    }

    pub(crate) fn repo_path(&self) -> PathBuf {
        self.root.join("repo")
    }

    pub(crate) fn object_path(&self, checksum: &str, ext: &str) -> PathBuf {
        self.repo_path()
            .join("objects")
            .join(&checksum[..2])
            .join(format!("{}.{ext}", &checksum[2..]))
    }

    pub(crate) fn deployment_dir(&self, r: &RefName, commit: &str) -> PathBuf {
        self.view.deployment_dir(r, commit)
    }

    fn info_of(&self, rec: &StateRecord) -> RefInfo {
        self.view.info_of(rec)
    }

    // ---------------------------------------------------------------- records

    pub(crate) fn read_record(&self, r: &RefName) -> Result<Option<StateRecord>, StoreError> {
        Ok(self.view.read_record(r)?)
    }

    /// Every record, keyed by ref. Ref directories without a record are not listed.
    pub(crate) fn records(&self) -> Result<Records, StoreError> {
        let mut out = BTreeMap::new();
        for (r, dir) in self.ref_dirs()? {
            if dir.join(RECORD_FILE).exists() {
                if let Some(rec) = self.read_record(&r)? {
                    out.insert(r, rec);
                }
            }
        }
        Ok(out)
    }

    /// Like [`Store::records`], but a record that cannot be read is returned apart
    /// (with the reason) instead of failing: recovery must leave such a ref alone, and
    /// fsck reports it.
    pub(crate) fn records_lenient(
        &self,
    ) -> Result<(Records, Vec<(RefName, StoreError)>), StoreError> {
        let mut good = BTreeMap::new();
        let mut bad = Vec::new();
        for (r, dir) in self.ref_dirs()? {
            if dir.join(RECORD_FILE).exists() {
                match self.read_record(&r) {
                    Ok(Some(rec)) => {
                        good.insert(r, rec);
                    }
                    Ok(None) => {}
                    Err(e @ StoreError::BadRecord { .. }) => bad.push((r, e)),
                    Err(e) => return Err(e),
                }
            }
        }
        Ok((good, bad))
    }

    fn ref_dirs(&self) -> Result<Vec<(RefName, PathBuf)>, StoreError> {
        Ok(self.view.ref_dirs()?)
    }

    // ---------------------------------------------------------------- refs

    fn current_ref(r: &RefName) -> String {
        r.to_string()
    }

    fn previous_ref(r: &RefName) -> String {
        format!("{PREVIOUS_REF_PREFIX}{r}")
    }

    fn set_ref(&self, name: &str, commit: Option<&str>) -> Result<(), StoreError> {
        self.repo
            .set_ref_immediate(None, name, commit, None::<&gio::Cancellable>)
            .map_err(StoreError::ostree("set ref", name))
    }

    pub(crate) fn resolve_ref(&self, name: &str) -> Result<Option<String>, StoreError> {
        self.repo
            .resolve_rev(name, true)
            .map(|o| o.map(|s| s.to_string()))
            .map_err(StoreError::ostree("resolve ref", name))
    }

    /// Makes the ref and previous-ref of `r` agree with its record.
    fn sync_refs(&self, r: &RefName, rec: Option<&StateRecord>) -> Result<bool, StoreError> {
        let mut changed = false;
        for (name, want) in [
            (
                Self::current_ref(r),
                rec.and_then(|x| x.current.as_ref())
                    .map(|d| d.commit.clone()),
            ),
            (
                Self::previous_ref(r),
                rec.and_then(|x| x.previous.as_ref())
                    .map(|d| d.commit.clone()),
            ),
        ] {
            if self.resolve_ref(&name)? != want {
                self.set_ref(&name, want.as_deref())?;
                changed = true;
            }
        }
        Ok(changed)
    }

    /// Ref files (relative to `refs/heads`) whose content is not one checksum line.
    fn damaged_refs(&self) -> Result<Vec<String>, StoreError> {
        let heads = self.repo_path().join("refs/heads");
        let mut out = Vec::new();
        let mut stack = vec![heads.clone()];
        while let Some(dir) = stack.pop() {
            for name in list_dir(&dir)? {
                let p = dir.join(&name);
                let md = fs::symlink_metadata(&p).map_err(StoreError::io("inspect ref", &p))?;
                if md.is_dir() {
                    stack.push(p);
                    continue;
                }
                let ok = md.is_file()
                    && fs::read_to_string(&p).is_ok_and(|c| {
                        let c = c.trim_end_matches('\n');
                        c.len() == 64
                            && c.bytes()
                                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
                    });
                if !ok {
                    let rel = p
                        .strip_prefix(&heads)
                        .unwrap_or(&p)
                        .to_string_lossy()
                        .into_owned();
                    out.push(rel);
                }
            }
        }
        Ok(out)
    }

    fn all_refs(&self) -> Result<Vec<String>, StoreError> {
        let refs = self
            .repo
            .list_refs(None, None::<&gio::Cancellable>)
            .map_err(StoreError::ostree("list refs", self.repo_path().display()))?;
        Ok(refs.keys().map(|k| k.to_string()).collect())
    }

    fn prune(&self) -> Result<(), StoreError> {
        crate::crash::point("before-prune");
        self.repo
            .prune(
                ostree::RepoPruneFlags::REFS_ONLY,
                0,
                None::<&gio::Cancellable>,
            )
            .map_err(StoreError::ostree("prune", self.repo_path().display()))?;
        self.remove_empty_object_dirs();
        Ok(())
    }

    /// libostree creates `objects/XX/` prefix directories as it writes and never removes
    /// them; after a failed import and a prune they are empty. Removing them keeps a
    /// refused install from leaving any trace. (A fresh repo has none; libostree creates
    /// them again on demand.) Best effort: a non-empty or vanished directory is skipped.
    fn remove_empty_object_dirs(&self) {
        let objects = self.repo_path().join("objects");
        if let Ok(rd) = fs::read_dir(&objects) {
            for e in rd.flatten() {
                let name = e.file_name();
                let is_prefix = name.len() == 2
                    && name
                        .to_str()
                        .is_some_and(|n| n.bytes().all(|b| b.is_ascii_hexdigit()));
                if is_prefix {
                    let _ = fs::remove_dir(e.path());
                }
            }
        }
    }

    // ---------------------------------------------------------------- recovery

    /// Brings the derived state (refs, deployment directories, staging, ostree's tmp) in
    /// line with the records. Runs under the lock before every operation and fsck.
    /// Returns a description of everything it changed.
    pub(crate) fn recover(&self) -> Result<Vec<String>, StoreError> {
        let mut collected = Vec::new();
        let staging = self.root.join("staging");
        for name in list_dir(&staging)? {
            remove_any(&staging.join(&name))?;
            collected.push(format!("staging {name}"));
        }
        let tmp = self.repo_path().join("tmp");
        for name in list_dir(&tmp)? {
            if name != "cache" {
                remove_any(&tmp.join(&name))?;
                collected.push(format!("repository tmp {name}"));
            }
        }
        let interrupted = self.root.join(TXN_MARKER).exists();
        if interrupted {
            collected.push("interrupted operation".into());
        }

        // Junk in deploy/ that does not form a valid ref directory.
        for kind in Kind::ALL.map(Kind::as_str) {
            let kdir = self.root.join("deploy").join(kind);
            for id in list_dir(&kdir)? {
                let idir = kdir.join(&id);
                for arch in list_dir(&idir)? {
                    let adir = idir.join(&arch);
                    for branch in list_dir(&adir)? {
                        let valid = AppId::new(&id).is_ok()
                            && Arch::new(&arch).is_ok()
                            && Branch::new(&branch).is_ok();
                        if !valid || !adir.join(&branch).join(RECORD_FILE).exists() {
                            self.trash(&adir.join(&branch))?;
                            collected.push(format!("ref directory {kind}/{id}/{arch}/{branch}"));
                        }
                    }
                    if list_dir(&adir)?.is_empty() {
                        remove_any(&adir)?;
                    }
                }
                if list_dir(&idir)?.is_empty() {
                    remove_any(&idir)?;
                }
            }
        }

        // Refs are derived and written without fsync: after a power cut one may be empty
        // or torn, and libostree then fails on every ref listing. Remove damaged ones;
        // the code below writes them again from the records.
        for name in self.damaged_refs()? {
            let p = self.repo_path().join("refs/heads").join(&name);
            remove_any(&p)?;
            collected.push(format!("damaged ref {name}"));
        }

        // An unreadable record (it is written atomically, so only a damaged disk or a
        // hand edit makes one) is left alone with everything of its ref: fsck reports it,
        // and operations on that ref fail closed.
        let (records, bad) = self.records_lenient()?;
        // Deployment directories: exactly those the records name.
        for (r, rec) in &records {
            let dir = self.ref_dir(r);
            let wanted: Vec<&str> = rec.commits().map(|d| d.commit.as_str()).collect();
            for name in list_dir(&dir)? {
                if name == RECORD_FILE || wanted.contains(&name.as_str()) {
                    continue;
                }
                if name != RECORD_TMP {
                    self.trash(&dir.join(&name))?;
                } else {
                    remove_any(&dir.join(&name))?;
                }
                collected.push(format!("{r}: deployment {name}"));
            }
        }
        // Refs: exactly those the records name.
        let mut refs_changed = false;
        for (r, rec) in &records {
            if self.sync_refs(r, Some(rec))? {
                refs_changed = true;
                collected.push(format!("{r}: refs"));
            }
        }
        for name in self.all_refs()? {
            let base = name.strip_prefix(PREVIOUS_REF_PREFIX).unwrap_or(&name);
            let known = base
                .parse::<RefName>()
                .ok()
                .is_some_and(|r| records.contains_key(&r) || bad.iter().any(|(b, _)| *b == r));
            if !known {
                self.set_ref(&name, None)?;
                refs_changed = true;
                collected.push(format!("ref {name}"));
            }
        }
        // Deployment directories the records name but that are missing (a crash while a
        // remove was renaming them away cannot cause this, but a lost directory can):
        // they are derived data, so they are checked out again.
        let mut recreated = false;
        for (r, rec) in &records {
            for d in rec.commits() {
                let dir = self.deployment_dir(r, &d.commit);
                if !dir.join(FILES_DIR).exists() && self.resolve_commit(&d.commit) {
                    self.redeploy(r, d)?;
                    recreated = true;
                    collected.push(format!("{r}: redeployed {}", d.commit));
                }
            }
        }
        if interrupted || refs_changed {
            self.prune()?;
        }
        if recreated {
            fsutil::syncfs(&self.root)?;
        }
        if interrupted {
            remove_any(&self.root.join(TXN_MARKER))?;
        }
        Ok(collected)
    }

    fn resolve_commit(&self, commit: &str) -> bool {
        self.object_path(commit, "commit").exists()
    }

    /// Checks out a recorded commit again (the manifest is recovered from the commit's
    /// metadata).
    fn redeploy(&self, r: &RefName, d: &DeploymentRecord) -> Result<(), StoreError> {
        let commit = self
            .repo
            .load_variant(ostree::ObjectType::Commit, &d.commit)
            .map_err(StoreError::ostree("load commit", &d.commit))?;
        let meta = commit.child_value(0);
        let dict = glib::VariantDict::new(Some(&meta));
        let bytes = |key: &str| {
            dict.lookup_value(key, Some(glib::VariantTy::BYTE_STRING))
                .map(|v| {
                    v.fixed_array::<u8>()
                        .map(|s| s.to_vec())
                        .unwrap_or_default()
                })
        };
        let manifest = bytes("appmgr.manifest").unwrap_or_default();
        let sbom = bytes("appmgr.sbom");
        let stage = self.checkout_to_staging(&d.commit, &manifest, sbom.as_deref())?;
        let dst = self.deployment_dir(r, &d.commit);
        remove_any(&dst)?;
        fs::rename(&stage, &dst).map_err(StoreError::io("move deployment into", &dst))
    }

    /// Moves a tree into staging (atomic), then deletes it; a crash leaves it in staging,
    /// which the next recovery empties.
    fn trash(&self, path: &Path) -> Result<(), StoreError> {
        let t = self.staging_path("trash");
        match fs::rename(path, &t) {
            Ok(()) => remove_any(&t),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(StoreError::io("move to staging", path)(e)),
        }
    }

    fn staging_path(&self, what: &str) -> PathBuf {
        let n = SEQ.fetch_add(1, Ordering::Relaxed);
        self.root
            .join("staging")
            .join(format!("{what}-{}-{n}", std::process::id()))
    }

    fn begin(&self) -> Result<(), StoreError> {
        let p = self.root.join(TXN_MARKER);
        fs::write(&p, b"")
            .and_then(|_| fs::File::open(&p)?.sync_all())
            .map_err(StoreError::io("write operation marker", &p))?;
        fsutil::sync_dir(&self.root)
    }

    fn end(&self) -> Result<(), StoreError> {
        remove_any(&self.root.join(TXN_MARKER))
    }

    /// Undo after a failed step: recovery restores refs and deployments from the records
    /// and prunes what the failed operation wrote. The original error is returned.
    fn fail<T>(&self, err: StoreError) -> Result<T, StoreError> {
        let _ = self.repo.abort_transaction(None::<&gio::Cancellable>);
        let _ = self.recover();
        Err(err)
    }

    fn checkout_to_staging(
        &self,
        commit: &str,
        manifest: &[u8],
        sbom: Option<&[u8]>,
    ) -> Result<PathBuf, StoreError> {
        let stage = self.staging_path("deploy");
        create_dir_all(&stage)?;
        let files = stage.join(FILES_DIR);
        let opts = ostree::RepoCheckoutAtOptions {
            mode: ostree::RepoCheckoutMode::None,
            no_copy_fallback: true,
            ..Default::default()
        };
        self.repo
            .checkout_at(
                Some(&opts),
                ostree::AT_FDCWD,
                &files,
                commit,
                None::<&gio::Cancellable>,
            )
            .map_err(StoreError::ostree("check out commit", commit))?;
        let m = stage.join(MANIFEST_FILE);
        fs::write(&m, manifest).map_err(StoreError::io("write manifest", &m))?;
        if let Some(sbom) = sbom {
            let p = stage.join(SBOM_FILE);
            fs::write(&p, sbom).map_err(StoreError::io("write SBOM", &p))?;
        }
        Ok(stage)
    }

    // ---------------------------------------------------------------- operations

    /// Installs or updates a ref from a payload.
    ///
    /// `import` is given the store's payload sink and must drive the bundle reader through
    /// it; if it returns `Err`, everything written is discarded and the error is returned
    /// as the `source` of [`StoreError::Import`].
    ///
    /// Refused (nothing changed): an app whose runtime has no current deployment
    /// ([`StoreError::RuntimeMissing`]); a version below the highest ever installed unless
    /// `allow_downgrade` ([`StoreError::Downgrade`]); not enough free space.
    /// The same version as the current one re-deploys it (replacing the current
    /// deployment, keeping the previous one); existing objects that fail verification are
    /// rewritten, so reinstalling repairs a corrupted store.
    pub fn install<F>(
        &self,
        lock: &StoreLock,
        new: &NewDeployment<'_>,
        options: InstallOptions,
        import: F,
    ) -> Result<InstallReport, StoreError>
    where
        F: FnOnce(&mut dyn PayloadSink) -> Result<(), ImportError>,
    {
        self.check_lock(lock);
        let r = &new.ref_name;
        let old = self.read_record(r)?;
        if let Some(rt) = &new.runtime {
            let rt_ref = rt.to_ref();
            let installed = self
                .read_record(&rt_ref)?
                .is_some_and(|rec| rec.current.is_some());
            if !installed {
                return Err(StoreError::RuntimeMissing {
                    ref_name: r.clone(),
                    runtime: Box::new(rt_ref),
                });
            }
        }
        if let Some(old) = &old {
            if new.version < old.highest_version && !options.allow_downgrade {
                return Err(StoreError::Downgrade {
                    ref_name: r.clone(),
                    version: Box::new(new.version.clone()),
                    highest: Box::new(old.highest_version.clone()),
                });
            }
        }
        // An app keeps its uid for life, also across remove and reinstall; a new one is
        // only allocated on the first install (or for a record from before uids were kept).
        let (uid, new_uid) = match (r.kind, old.as_ref().and_then(|o| o.uid)) {
            (Kind::App, Some(uid)) => (Some(uid), false),
            (Kind::App, None) => (Some(self.allocate_uid(r)?), true),
            (Kind::Runtime | Kind::Extension, _) => (None, false),
        };
        self.check_space(r, new.installed_size)?;

        self.begin()?;
        let staged = self.import_and_deploy(new, import);
        let Staged {
            commit,
            stage,
            stats,
            repaired,
        } = match staged {
            Ok(x) => x,
            Err(e) => return self.fail(e),
        };

        // Build the new record.
        let new_dep = DeploymentRecord {
            commit: commit.clone(),
            version: new.version.clone(),
            runtime: new.runtime.clone(),
            installed_size: new.installed_size,
        };
        let old_current = old.as_ref().and_then(|o| o.current.clone());
        let (previous, dropped): (Option<DeploymentRecord>, Vec<DeploymentRecord>) =
            match (&old_current, old.as_ref().and_then(|o| o.previous.clone())) {
                // Same version: replace the current deployment, keep the previous one.
                (Some(cur), prev) if cur.version == new.version => (prev, vec![cur.clone()]),
                (Some(cur), prev) => (Some(cur.clone()), prev.into_iter().collect()),
                (None, _) => (None, Vec::new()),
            };
        let highest = match &old {
            Some(o) if o.highest_version > new.version => o.highest_version.clone(),
            _ => new.version.clone(),
        };
        let rec = StateRecord {
            ref_name: r.clone(),
            current: Some(new_dep.clone()),
            previous,
            highest_version: highest,
            uid,
        };

        let switched = (|| {
            let dir = self.ref_dir(r);
            create_dir_all(&dir)?;
            let dst = dir.join(&commit);
            fs::rename(&stage, &dst).map_err(StoreError::io("move deployment into", &dst))?;
            crate::crash::point("after-checkout");
            // Everything the new record points at must be on disk before the commit point.
            fsutil::syncfs(&self.root)?;
            // The high-water mark first: a crash before the record only skips a uid.
            if let (true, Some(u)) = (new_uid, uid) {
                crate::uids::record(&self.root, u)?;
            }
            record::write(&dir, &rec)
        })();
        if let Err(e) = switched {
            return self.fail(e);
        }

        // Past the commit point: derived state only. A failure here is repaired by the
        // recovery of the next operation, so it is not reported as a failed install.
        if !repaired.is_empty() {
            // Best effort: fsck reports whatever could not be relinked.
            let _ = self.relink(&repaired);
        }
        let _ = self.after_switch(r, &rec, !dropped.is_empty());
        let deployment = self.view.deployment(r, &new_dep);
        Ok(InstallReport {
            ref_name: r.clone(),
            version: new.version.clone(),
            commit,
            replaced: old_current.map(|d| self.view.deployment(r, &d)),
            deployment,
            uid,
            files: stats.files,
            bytes: stats.bytes,
            objects_written: stats.objects_written,
            objects_reused: stats.objects_reused,
            objects_repaired: stats.objects_repaired,
        })
    }

    /// Runs the import in an ostree transaction, commits, and checks the commit out into
    /// a staging directory. Returns the commit and the staging directory.
    fn import_and_deploy<F>(&self, new: &NewDeployment<'_>, import: F) -> Result<Staged, StoreError>
    where
        F: FnOnce(&mut dyn PayloadSink) -> Result<(), ImportError>,
    {
        let r = &new.ref_name;
        let spool = self.staging_path("spool");
        create_dir_all(&spool)?;
        self.repo
            .prepare_transaction(None::<&gio::Cancellable>)
            .map_err(StoreError::ostree("start transaction for", r))?;
        let mut sink = StoreSink::new(&self.repo, &self.repo_path(), spool.clone())?;
        let imported = import(&mut sink);
        // Every queued object is written (or the writer failed) before anything else
        // touches the repo; a writer error inside the import is the more precise one.
        let written = sink.finish();
        imported.map_err(|source| StoreError::Import {
            ref_name: r.clone(),
            source,
        })?;
        written.map_err(|e| StoreError::Import {
            ref_name: r.clone(),
            source: Box::new(e),
        })?;
        let stats = sink.stats;
        let repaired = std::mem::take(&mut sink.repaired);
        let root = self
            .repo
            .write_mtree(sink.root(), None::<&gio::Cancellable>)
            .map_err(StoreError::ostree("write tree of", r))?;
        let root = root
            .downcast::<ostree::RepoFile>()
            .map_err(|_| StoreError::Internal {
                what: format!("libostree returned a tree of {r} that is not a repository file"),
            })?;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        let meta = glib::VariantDict::new(None);
        meta.insert("appmgr.ref", r.to_string());
        meta.insert("appmgr.version", new.version.to_string());
        // Makes every install a distinct commit, so a re-deploy of the same version gets
        // its own deployment directory.
        meta.insert("appmgr.installed-ns", now.as_nanos() as u64);
        meta.insert_value(
            "appmgr.manifest",
            &glib::Variant::array_from_fixed_array(new.manifest),
        );
        // In the commit, like the manifest, so a redeploy restores it.
        if let Some(sbom) = new.sbom {
            meta.insert_value("appmgr.sbom", &glib::Variant::array_from_fixed_array(sbom));
        }
        let subject = format!("{r} {}", new.version);
        let commit = self
            .repo
            .write_commit_with_time(
                None,
                Some(&subject),
                None,
                Some(&meta.end()),
                &root,
                now.as_secs(),
                None::<&gio::Cancellable>,
            )
            .map_err(StoreError::ostree("write commit of", r))?
            .to_string();
        self.repo
            .transaction_set_ref(None, &Self::current_ref(r), Some(&commit));
        self.repo
            .commit_transaction(None::<&gio::Cancellable>)
            .map_err(StoreError::ostree("commit transaction of", r))?;
        crate::crash::point("after-import");
        remove_any(&spool)?;
        let stage = self.checkout_to_staging(&commit, new.manifest, new.sbom)?;
        Ok(Staged {
            commit,
            stage,
            stats,
            repaired,
        })
    }

    /// Points every deployment file that still is one of the `repaired` (corrupt, now
    /// removed) object inodes at the rewritten object. Each file is replaced by a rename,
    /// so a reader sees the old or the new inode, never a missing file.
    fn relink(
        &self,
        repaired: &std::collections::HashMap<(u64, u64), String>,
    ) -> Result<(), StoreError> {
        use std::os::unix::fs::MetadataExt;
        let mut stack = Vec::new();
        for (r, rec) in self.records()? {
            for d in rec.commits() {
                stack.push(self.deployment_dir(&r, &d.commit).join(FILES_DIR));
            }
        }
        while let Some(dir) = stack.pop() {
            let rd = fs::read_dir(&dir).map_err(StoreError::io("list directory", &dir))?;
            for entry in rd {
                let entry = entry.map_err(StoreError::io("list directory", &dir))?;
                let path = entry.path();
                let md = fs::symlink_metadata(&path).map_err(StoreError::io("inspect", &path))?;
                if md.is_dir() {
                    stack.push(path);
                } else if let Some(csum) = repaired.get(&(md.dev(), md.ino())) {
                    let tmp = self.staging_path("relink");
                    let obj = self.object_path(csum, "file");
                    fs::hard_link(&obj, &tmp)
                        .map_err(StoreError::io("link repaired object", &obj))?;
                    fs::rename(&tmp, &path)
                        .map_err(StoreError::io("replace corrupt file", &path))?;
                }
            }
        }
        Ok(())
    }

    fn after_switch(
        &self,
        r: &RefName,
        rec: &StateRecord,
        dropped: bool,
    ) -> Result<(), StoreError> {
        self.sync_refs(r, Some(rec))?;
        let dir = self.ref_dir(r);
        let wanted: Vec<&str> = rec.commits().map(|d| d.commit.as_str()).collect();
        let mut first = true;
        for name in list_dir(&dir)? {
            if name != RECORD_FILE && !wanted.contains(&name.as_str()) {
                self.trash(&dir.join(&name))?;
                if first {
                    first = false;
                    crate::crash::point("mid-remove");
                }
            }
        }
        if dropped {
            self.prune()?;
        }
        self.end()
    }

    fn check_space(&self, r: &RefName, size: u64) -> Result<(), StoreError> {
        let st = rustix::fs::statvfs(&self.root).map_err(|e| StoreError::Io {
            step: "query free space of",
            path: self.root.clone(),
            source: e.into(),
        })?;
        // As root (like libostree, which then counts f_bfree too) the blocks the file system
        // reserves for root are available: apps, which run as other uids, can never take
        // them, so they are the room an install or update always has.
        let free = if rustix::process::geteuid().is_root() {
            st.f_bfree
        } else {
            st.f_bavail
        };
        let available = free.saturating_mul(st.f_frsize);
        let needed = size.saturating_add(self.config.reserve_bytes);
        if available < needed {
            return Err(StoreError::NoSpace {
                ref_name: r.clone(),
                path: self.root.clone(),
                needed,
                available,
            });
        }
        Ok(())
    }

    /// A new uid for `r` (see [`crate::uids`]): never one that any record holds or that
    /// was ever allocated before. Writes nothing.
    fn allocate_uid(&self, r: &RefName) -> Result<u32, StoreError> {
        let held: std::collections::BTreeSet<u32> =
            self.records()?.values().filter_map(|x| x.uid).collect();
        crate::uids::choose(&self.root, &self.config.uid_range, r, &held)
    }

    /// Swaps the current and previous deployments of `r`.
    pub fn rollback(&self, lock: &StoreLock, r: &RefName) -> Result<RefInfo, StoreError> {
        self.check_lock(lock);
        let rec = self.installed_record(r)?;
        let Some(prev) = rec.previous.clone() else {
            return Err(StoreError::NoPrevious {
                ref_name: r.clone(),
            });
        };
        let new = StateRecord {
            current: Some(prev),
            previous: rec.current.clone(),
            ..rec
        };
        self.begin()?;
        if let Err(e) = record::write(&self.ref_dir(r), &new) {
            return self.fail(e);
        }
        let _ = self.after_switch(r, &new, false);
        Ok(self.info_of(&new))
    }

    /// Removes both deployments of `r`, its refs and unreachable objects; keeps the record
    /// with the highest version and the app's uid (never given to another app, so a
    /// reinstall gets it back with whatever the app left: HOME, IPC objects).
    pub fn remove(&self, lock: &StoreLock, r: &RefName) -> Result<RefInfo, StoreError> {
        self.check_lock(lock);
        let rec = self.installed_record(r)?;
        if r.kind == Kind::Runtime {
            let apps = self.users_of_runtime(lock, r)?;
            if !apps.is_empty() {
                return Err(StoreError::RuntimeInUse {
                    ref_name: r.clone(),
                    apps,
                });
            }
        }
        let new = StateRecord {
            current: None,
            previous: None,
            ..rec
        };
        self.begin()?;
        if let Err(e) = record::write(&self.ref_dir(r), &new) {
            return self.fail(e);
        }
        let _ = self.after_switch(r, &new, true);
        Ok(self.info_of(&new))
    }

    /// Apps whose current or previous deployment runs on runtime `r`.
    pub fn users_of_runtime(
        &self,
        lock: &StoreLock,
        r: &RefName,
    ) -> Result<Vec<RefName>, StoreError> {
        self.check_lock(lock);
        Ok(self
            .records()?
            .into_values()
            .filter(|rec| {
                rec.commits()
                    .any(|d| d.runtime.as_ref().is_some_and(|rt| &rt.to_ref() == r))
            })
            .map(|rec| rec.ref_name)
            .collect())
    }

    fn installed_record(&self, r: &RefName) -> Result<StateRecord, StoreError> {
        match self.read_record(r)? {
            Some(rec) if rec.current.is_some() => Ok(rec),
            _ => Err(StoreError::NotInstalled {
                ref_name: r.clone(),
            }),
        }
    }

    /// Every ref the store has a record of (installed, or removed with its highest
    /// version kept). Use [`RefInfo::is_installed`] to filter.
    pub fn list(&self, lock: &StoreLock) -> Result<Vec<RefInfo>, StoreError> {
        self.check_lock(lock);
        Ok(self.records()?.values().map(|r| self.info_of(r)).collect())
    }

    /// The state of one ref; [`StoreError::NotInstalled`] if it has no record.
    pub fn info(&self, lock: &StoreLock, r: &RefName) -> Result<RefInfo, StoreError> {
        self.check_lock(lock);
        match self.read_record(r)? {
            Some(rec) => Ok(self.info_of(&rec)),
            None => Err(StoreError::NotInstalled {
                ref_name: r.clone(),
            }),
        }
    }

    /// The installed refs with this ID (any kind, arch or branch), for commands that take
    /// a bare ID.
    pub fn find(&self, lock: &StoreLock, id: &AppId) -> Result<Vec<RefName>, StoreError> {
        self.check_lock(lock);
        Ok(self
            .records()?
            .into_values()
            .filter(|rec| &rec.ref_name.id == id && rec.current.is_some())
            .map(|rec| rec.ref_name)
            .collect())
    }
}

type Records = BTreeMap<RefName, StateRecord>;

/// What an import left in staging, ready for the switch.
struct Staged {
    commit: String,
    stage: PathBuf,
    stats: crate::import::ImportStats,
    repaired: std::collections::HashMap<(u64, u64), String>,
}

fn lock_file(root: &Path) -> Result<fs::File, StoreError> {
    use std::os::unix::fs::OpenOptionsExt;
    let p = root.join("lock");
    let f = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(&p)
        .map_err(StoreError::io("open lock file", &p))?;
    // Bounded: a lock another process keeps (a hung CLI, a stopped one) ends in an
    // error after `APPMGR_LOCK_WAIT` seconds (default 120), not in a wait for ever.
    let wait = std::env::var("APPMGR_LOCK_WAIT")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(120);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(wait);
    loop {
        match rustix::fs::flock(&f, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => return Ok(f),
            Err(rustix::io::Errno::WOULDBLOCK) if std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            Err(rustix::io::Errno::WOULDBLOCK) => {
                return Err(StoreError::Io {
                    step: "lock",
                    path: p,
                    source: std::io::Error::new(
                        std::io::ErrorKind::WouldBlock,
                        format!("held by another process for {wait} s (APPMGR_LOCK_WAIT)"),
                    ),
                })
            }
            Err(e) => {
                return Err(StoreError::Io {
                    step: "lock",
                    path: p,
                    source: e.into(),
                })
            }
        }
    }
}

fn path_str(p: &Path) -> Result<String, StoreError> {
    p.to_str()
        .map(str::to_string)
        .ok_or_else(|| StoreError::Io {
            step: "use path",
            path: p.to_path_buf(),
            source: std::io::Error::new(std::io::ErrorKind::InvalidInput, "path is not UTF-8"),
        })
}

use ostree::gio::prelude::*;
