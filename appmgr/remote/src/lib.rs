//! appmgr-remote: bundles on OCI registries.
//!
//! - [`reference`]: `oci://HOST[:PORT]/REPO[:TAG]` (plain HTTP) and
//!   `oci+https://HOST[:PORT]/REPO[:TAG]` references, checked at the edge.
//! - [`access`]: the CA roots trusted for `https`, and registry credentials (Basic, or a
//!   token service's Bearer token).
//! - [`artifact`]: how a bundle is an OCI artifact: one layer (the bundle file, byte for
//!   byte), an empty config, and annotations that carry the bundle's fields and its exact
//!   signed manifest and signature, so a device can list and check what a remote offers
//!   without downloading a payload.
//! - [`registry`]: a blocking client of the OCI distribution API (push, tags, manifests,
//!   blobs) with bounded waits and bounded response sizes.
//! - [`stream`]: a blob as a [`std::io::Read`] that never reads past its stated length,
//!   resumes a cut connection with a range request, refuses a retrieval slower than a
//!   minimum rate, and checks the blob's digest at its end.
//! - [`delta`]: the file index of an uncompressed bundle, so an update fetches only the
//!   files the installed version lacks.
//! - [`tuf`]: a remote's TUF metadata on the same registry, verified with `tough`, with
//!   expiry checked against a persisted trusted-time floor; and the publisher's side.
//!
//! This crate moves bytes and checks their form. Whether a bundle is trusted is the
//! bundle crate's (its signature) and the caller's decision.

pub mod access;
pub mod artifact;
pub mod delta;
pub mod reference;
pub mod registry;
pub mod stream;
pub mod tuf;

use appmgr_types::ErrorClass;

pub use artifact::{Descriptor, Listing};
pub use reference::OciRef;
pub use registry::{Client, Limits};
pub use stream::BlobStream;

/// A failure to reach a remote or an answer refused.
#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    /// A reference or URL that is not well formed (exit 2).
    #[error("{0}")]
    Usage(String),
    /// The registry does not have it (exit 5).
    #[error("{url}: not found on the registry")]
    NotFound { url: String },
    /// The network or the registry failed (exit 1).
    #[error("{url}: {reason}")]
    Transport { url: String, reason: String },
    /// The registry or its token service refused access: no credentials, or wrong ones
    /// (exit 7).
    #[error("{url}: {reason}")]
    Denied { url: String, reason: String },
    /// An answer that breaks a bound or does not match what it must be (exit 3): a
    /// digest mismatch, an oversized or malformed answer, a too slow retrieval.
    #[error("{url}: {reason}")]
    Refused { url: String, reason: String },
}

impl RemoteError {
    pub fn class(&self) -> ErrorClass {
        match self {
            RemoteError::Usage(_) => ErrorClass::Usage,
            RemoteError::NotFound { .. } => ErrorClass::NotFound,
            RemoteError::Transport { .. } => ErrorClass::Other,
            RemoteError::Refused { .. } => ErrorClass::Integrity,
            RemoteError::Denied { .. } => ErrorClass::NotPermitted,
        }
    }
}

/// `sha256:` and 64 lowercase hex digits.
pub fn is_sha256_digest(d: &str) -> bool {
    d.strip_prefix("sha256:")
        .is_some_and(|h| h.len() == 64 && h.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')))
}
