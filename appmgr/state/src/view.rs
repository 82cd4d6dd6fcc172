//! A read-only, lock-free view of the store's records that never touches libostree.
//!
//! Launching an app needs only the records (which deployment is current, the app's uid)
//! and the deployment paths; it must not pay for loading libostree and GLib (about 20 ms
//! of dynamic linking on these boards). Reading without the lock is safe because every
//! record is replaced by one atomic rename and the deployments a record names exist before
//! that rename and are removed only after the record stops naming them. `appmgr_store::Store`
//! uses the same functions for its own reads, so the layout is defined once.

use crate::record::{self, DeploymentRecord, StateRecord, RECORD_FILE};
use appmgr_types::{AppId, Arch, Branch, ErrorClass, Kind, RefName, RuntimeRef, Version};
use serde::Serialize;
use std::fs;
use std::path::{Path, PathBuf};

/// Name of the marker written inside a deployment that fsck found corrupt.
pub const CORRUPT_MARKER: &str = "corrupt";
/// The exact signed manifest bytes, beside `files/` in a deployment.
pub const MANIFEST_FILE: &str = "manifest.toml";
/// The bundle's SBOM (CycloneDX JSON), beside `files/` when the bundle carried one; its
/// digest is in the manifest's `[sbom]` table.
pub const SBOM_FILE: &str = "sbom.cdx.json";
/// The checked-out tree of a deployment (mounted at `/app` or `/usr`).
pub const FILES_DIR: &str = "files";

/// One deployment as seen by callers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct Deployment {
    pub commit: String,
    pub version: Version,
    pub runtime: Option<RuntimeRef>,
    pub installed_size: u64,
    /// `deploy/KIND/ID/ARCH/BRANCH/COMMIT`
    pub path: PathBuf,
    /// The tree mounted at `/app` or `/usr`.
    pub files: PathBuf,
    /// The exact signed manifest bytes.
    pub manifest: PathBuf,
    /// fsck found this deployment corrupt; launchers must refuse it.
    pub marked_corrupt: bool,
}

/// The state of one ref.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct RefInfo {
    #[serde(rename = "ref")]
    pub ref_name: RefName,
    pub current: Option<Deployment>,
    pub previous: Option<Deployment>,
    pub highest_version: Version,
    pub uid: Option<u32>,
}

impl RefInfo {
    pub fn is_installed(&self) -> bool {
        self.current.is_some()
    }
}

/// Whether fsck marked the deployment directory (`…/COMMIT`, the parent of `files/`)
/// corrupt. A launcher must refuse to run such a deployment.
pub fn deployment_is_marked_corrupt(deployment_dir: &Path) -> bool {
    deployment_dir.join(CORRUPT_MARKER).exists()
}

/// Why the records could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ViewError {
    #[error("{step} {path}: {source}")]
    Io {
        step: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("state record {path} is unreadable: {reason}")]
    BadRecord { path: PathBuf, reason: String },
}

impl ViewError {
    pub fn class(&self) -> ErrorClass {
        match self {
            ViewError::Io { .. } => ErrorClass::Other,
            ViewError::BadRecord { .. } => ErrorClass::Integrity,
        }
    }
}

/// The records under a state directory.
#[derive(Debug, Clone)]
pub struct View {
    root: PathBuf,
}

impl View {
    pub fn new(state_dir: impl Into<PathBuf>) -> View {
        View {
            root: state_dir.into(),
        }
    }

    /// `deploy/KIND/ID/ARCH/BRANCH`: the ref's record and deployments.
    pub fn ref_dir(&self, r: &RefName) -> PathBuf {
        self.root
            .join("deploy")
            .join(r.kind.as_str())
            .join(r.id.as_str())
            .join(r.arch.as_str())
            .join(r.branch.as_str())
    }

    /// `deploy/KIND/ID/ARCH/BRANCH/COMMIT`.
    pub fn deployment_dir(&self, r: &RefName, commit: &str) -> PathBuf {
        self.ref_dir(r).join(commit)
    }

    /// The paths and state of the deployment `d` of `r`.
    pub fn deployment(&self, r: &RefName, d: &DeploymentRecord) -> Deployment {
        let path = self.deployment_dir(r, &d.commit);
        Deployment {
            commit: d.commit.clone(),
            version: d.version.clone(),
            runtime: d.runtime.clone(),
            installed_size: d.installed_size,
            files: path.join(FILES_DIR),
            manifest: path.join(MANIFEST_FILE),
            marked_corrupt: deployment_is_marked_corrupt(&path),
            path,
        }
    }

    /// What callers see of a record.
    pub fn info_of(&self, rec: &StateRecord) -> RefInfo {
        RefInfo {
            ref_name: rec.ref_name.clone(),
            current: rec
                .current
                .as_ref()
                .map(|d| self.deployment(&rec.ref_name, d)),
            previous: rec
                .previous
                .as_ref()
                .map(|d| self.deployment(&rec.ref_name, d)),
            highest_version: rec.highest_version.clone(),
            uid: rec.uid,
        }
    }

    /// The record of `r`, if it has one; a record naming another ref is refused.
    pub fn read_record(&self, r: &RefName) -> Result<Option<StateRecord>, ViewError> {
        let path = self.ref_dir(r).join(RECORD_FILE);
        let rec = record::read(&path)?;
        if let Some(rec) = &rec {
            if &rec.ref_name != r {
                return Err(ViewError::BadRecord {
                    path,
                    reason: format!("it names {} instead", rec.ref_name),
                });
            }
        }
        Ok(rec)
    }

    /// The state of `r`, `None` without a record.
    pub fn info(&self, r: &RefName) -> Result<Option<RefInfo>, ViewError> {
        Ok(self.read_record(r)?.map(|rec| self.info_of(&rec)))
    }

    /// Every `deploy/KIND/ID/ARCH/BRANCH` directory whose names are valid.
    pub fn ref_dirs(&self) -> Result<Vec<(RefName, PathBuf)>, ViewError> {
        let mut out = Vec::new();
        for kind in Kind::ALL {
            out.extend(self.ref_dirs_of(kind)?);
        }
        Ok(out)
    }

    /// The `deploy/KIND/ID/ARCH/BRANCH` directories of one kind whose names are valid.
    pub fn ref_dirs_of(&self, kind: Kind) -> Result<Vec<(RefName, PathBuf)>, ViewError> {
        let mut out = Vec::new();
        let kdir = self.root.join("deploy").join(kind.as_str());
        for id in list_dir(&kdir)? {
            let idir = kdir.join(&id);
            for arch in list_dir(&idir)? {
                let adir = idir.join(&arch);
                for branch in list_dir(&adir)? {
                    if let (Ok(i), Ok(a), Ok(b)) =
                        (AppId::new(&id), Arch::new(&arch), Branch::new(&branch))
                    {
                        out.push((RefName::new(kind, i, a, b), adir.join(&branch)));
                    }
                }
            }
        }
        Ok(out)
    }

    /// The change sequence of what [`View::list_installed`] and [`View::info`] show:
    /// `Some(n)` with `n` even when no change is under way. A cache built between two
    /// equal even readings is current (see `generation.rs`).
    pub fn generation(&self) -> Option<u64> {
        crate::generation::read(&self.root).filter(|n| n % 2 == 0)
    }

    /// Every installed ref (apps, then runtimes, in ref order) with its state, read
    /// without the store lock: what `list` shows.
    pub fn list_installed(&self) -> Result<Vec<RefInfo>, ViewError> {
        let mut out = Vec::new();
        for (r, _) in self.ref_dirs()? {
            if let Some(rec) = self.read_record(&r)?.filter(|rec| rec.current.is_some()) {
                out.push(self.info_of(&rec));
            }
        }
        Ok(out)
    }

    /// The refs with this ID that are installed now (any kind, arch or branch), with their
    /// state. Only the directories of this ID are read, each record once.
    pub fn installed(&self, id: &AppId) -> Result<Vec<RefInfo>, ViewError> {
        let mut out = Vec::new();
        for kind in Kind::ALL {
            let idir = self
                .root
                .join("deploy")
                .join(kind.as_str())
                .join(id.as_str());
            for arch in list_dir(&idir)? {
                for branch in list_dir(&idir.join(&arch))? {
                    let (Ok(a), Ok(b)) = (Arch::new(&arch), Branch::new(&branch)) else {
                        continue;
                    };
                    let r = RefName::new(kind, id.clone(), a, b);
                    if let Some(rec) = self.read_record(&r)?.filter(|rec| rec.current.is_some()) {
                        out.push(self.info_of(&rec));
                    }
                }
            }
        }
        Ok(out)
    }
}

/// Names in a directory, sorted; an absent directory has none.
pub fn list_dir(dir: &Path) -> Result<Vec<String>, ViewError> {
    let io = |source| ViewError::Io {
        step: "list directory",
        path: dir.to_path_buf(),
        source,
    };
    let rd = match fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io(e)),
    };
    let mut names = Vec::new();
    for entry in rd {
        names.push(
            entry
                .map_err(io)?
                .file_name()
                .to_string_lossy()
                .into_owned(),
        );
    }
    names.sort();
    Ok(names)
}
