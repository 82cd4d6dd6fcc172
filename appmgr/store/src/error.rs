//! The store's error type: every variant names the object (ref, path, commit) and the step.

use appmgr_types::{ErrorClass, RefName, Version};
use ostree::glib;
use std::path::PathBuf;

/// An error from the bundle reader driving an import, kept as-is so callers can downcast.
pub type ImportError = Box<dyn std::error::Error + Send + Sync + 'static>;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A file-system step failed on `path`.
    #[error("cannot {step} {}: {source}", path.display())]
    Io {
        step: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A libostree call failed; `object` is a ref, commit or object checksum.
    #[error("cannot {step} {object}: {source}")]
    Ostree {
        step: &'static str,
        object: String,
        #[source]
        source: glib::Error,
    },
    /// The import closure (the bundle reader) failed; nothing was installed.
    #[error("cannot import {ref_name}: {source}")]
    Import {
        ref_name: RefName,
        #[source]
        source: ImportError,
    },
    /// An app's runtime has no current deployment.
    #[error("cannot install {ref_name}: its runtime {runtime} is not installed")]
    RuntimeMissing {
        ref_name: RefName,
        runtime: Box<RefName>,
    },
    /// The version is lower than the highest ever installed for that ref.
    #[error(
        "cannot install {ref_name} {version}: version {highest} was installed before \
         (downgrade refused unless explicitly allowed)"
    )]
    Downgrade {
        ref_name: RefName,
        version: Box<Version>,
        highest: Box<Version>,
    },
    /// The ref has no current deployment.
    #[error("{ref_name} is not installed")]
    NotInstalled { ref_name: RefName },
    /// Rollback asked for, but there is no previous deployment.
    #[error("cannot roll back {ref_name}: there is no previous deployment")]
    NoPrevious { ref_name: RefName },
    /// A runtime is still referenced by apps.
    #[error("cannot remove runtime {ref_name}: still used by {}", list(apps))]
    RuntimeInUse {
        ref_name: RefName,
        apps: Vec<RefName>,
    },
    /// Not enough free space for the install.
    #[error(
        "cannot install {ref_name}: not enough free space in {}: {needed} bytes needed, \
         {available} available", path.display()
    )]
    NoSpace {
        ref_name: RefName,
        path: PathBuf,
        needed: u64,
        available: u64,
    },
    /// Every uid of the configured range has been allocated (uids are never reused, so
    /// removed apps count).
    #[error(
        "cannot install {ref_name}: uid-range {first}-{last} is exhausted (every uid in it \
         was allocated once and uids are never reused; widen uid-range in appmgr.toml)"
    )]
    UidsExhausted {
        ref_name: RefName,
        first: u32,
        last: u32,
    },
    /// A state record could not be parsed or contradicts its location.
    #[error("invalid state record {}: {reason}", path.display())]
    BadRecord { path: PathBuf, reason: String },
    /// A payload entry was inconsistent (size mismatch, duplicate, missing parent).
    #[error("payload entry {path}: {reason}")]
    BadEntry { path: String, reason: String },
    /// A broken internal invariant (a libostree result of the wrong type, a writer
    /// thread that died).
    #[error("internal error: {what}")]
    Internal { what: String },
}

fn list(refs: &[RefName]) -> String {
    refs.iter()
        .map(|r| r.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

impl StoreError {
    /// The exit-code class (design.md, "Exit codes").
    ///
    /// For [`StoreError::Import`] the class comes from a `StoreError` found in the source
    /// chain (a store failure inside the import, such as a full disk), else it is
    /// [`ErrorClass::Other`]: the bundle reader's own error carries its class, and callers
    /// downcast `source()` to it.
    pub fn class(&self) -> ErrorClass {
        match self {
            StoreError::Io { .. }
            | StoreError::Ostree { .. }
            | StoreError::NoSpace { .. }
            | StoreError::UidsExhausted { .. }
            | StoreError::BadRecord { .. }
            | StoreError::Internal { .. } => ErrorClass::Other,
            StoreError::Import { source, .. } => {
                let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(source.as_ref());
                while let Some(e) = cur {
                    if let Some(se) = e.downcast_ref::<StoreError>() {
                        return se.class();
                    }
                    cur = e.source();
                }
                ErrorClass::Other
            }
            StoreError::BadEntry { .. } => ErrorClass::Integrity,
            StoreError::RuntimeMissing { .. }
            | StoreError::NotInstalled { .. }
            | StoreError::NoPrevious { .. } => ErrorClass::NotFound,
            StoreError::Downgrade { .. } | StoreError::RuntimeInUse { .. } => ErrorClass::Conflict,
        }
    }

    pub(crate) fn io(
        step: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |source| StoreError::Io { step, path, source }
    }

    pub(crate) fn ostree(
        step: &'static str,
        object: impl std::fmt::Display,
    ) -> impl FnOnce(glib::Error) -> Self {
        let object = object.to_string();
        move |source| StoreError::Ostree {
            step,
            object,
            source,
        }
    }

    /// Whether the failure is (or is caused by) a full file system.
    pub fn is_no_space(&self) -> bool {
        let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(self);
        while let Some(e) = cur {
            if let Some(io) = e.downcast_ref::<std::io::Error>() {
                if io.raw_os_error() == Some(28) {
                    return true;
                }
            }
            if let Some(g) = e.downcast_ref::<glib::Error>() {
                // libostree refuses writes that would eat into its own reserve
                // (`min-free-space-percent`) with a generic error naming the setting.
                if g.matches(ostree::gio::IOErrorEnum::NoSpace)
                    || g.message().contains("min-free-space")
                {
                    return true;
                }
            }
            if matches!(
                e.downcast_ref::<StoreError>(),
                Some(StoreError::NoSpace { .. })
            ) {
                return true;
            }
            cur = e.source();
        }
        false
    }
}

impl From<appmgr_state::ViewError> for StoreError {
    fn from(e: appmgr_state::ViewError) -> Self {
        match e {
            appmgr_state::ViewError::Io { step, path, source } => {
                StoreError::Io { step, path, source }
            }
            appmgr_state::ViewError::BadRecord { path, reason } => {
                StoreError::BadRecord { path, reason }
            }
        }
    }
}
