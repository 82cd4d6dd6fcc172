use crate::manifest::ManifestError;
use crate::payload::SinkError;
use crate::trust::TrustError;
use appmgr_types::ErrorClass;
use std::path::PathBuf;

/// Why a bundle was refused or could not be written. Every variant names the object at
/// fault; all but I/O and sink failures are integrity failures (exit code 3).
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: truncated bundle ({what})")]
    Truncated { path: PathBuf, what: String },
    #[error("{path}: malformed bundle: {reason}")]
    Malformed { path: PathBuf, reason: String },
    #[error("{path}: {source}")]
    Manifest {
        path: PathBuf,
        source: ManifestError,
    },
    #[error("{path}: signature does not verify with any trusted key")]
    Untrusted { path: PathBuf },
    #[error("{path}: signed by trusted key {key:?}, whose scope does not cover {id}")]
    OutOfScope {
        path: PathBuf,
        key: String,
        id: String,
    },
    #[error("{path}: {member} digest mismatch (manifest says {expected}, {member} is {actual})")]
    DigestMismatch {
        path: PathBuf,
        /// `payload` or `SBOM`.
        member: &'static str,
        expected: String,
        actual: String,
    },
    #[error("{path}: unsafe payload entry {entry:?}: {reason}")]
    Unsafe {
        path: PathBuf,
        entry: String,
        reason: String,
    },
    #[error("{path}: payload exceeds a limit: {reason}")]
    Limit { path: PathBuf, reason: String },
    #[error("{path}: writing entry {entry:?}: {source}")]
    Sink {
        path: PathBuf,
        entry: String,
        source: SinkError,
    },
    #[error(transparent)]
    Trust(#[from] TrustError),
}

impl BundleError {
    pub fn class(&self) -> ErrorClass {
        match self {
            BundleError::Io { .. } | BundleError::Sink { .. } => ErrorClass::Other,
            BundleError::Trust(t) => t.class(),
            _ => ErrorClass::Integrity,
        }
    }

    /// The sink's own error, if the sink failed (callers downcast it to their type).
    pub fn sink_error(&self) -> Option<&(dyn std::error::Error + Send + Sync + 'static)> {
        match self {
            BundleError::Sink { source, .. } => Some(source.as_ref()),
            _ => None,
        }
    }
}
