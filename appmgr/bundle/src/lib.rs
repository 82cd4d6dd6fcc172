//! appmgr's signed bundle format.
//!
//! A bundle is one file a FOTA pipeline hands to a device: a ustar container holding
//! `manifest.toml`, `manifest.sig` (an ed25519 signature over the exact manifest bytes),
//! optionally `sbom.cdx.json` (the packages it was built from, see [`sbom`]) and the
//! payload (a tar of the tree, optionally zstd-compressed). The manifest binds
//! id, kind, arch, branch and version to the payload's SHA-256, size, entry count and
//! unpacked size, so a signature cannot be moved to other content or another ID. The
//! format is specified in `docs/bundle-format.md`.
//!
//! This crate needs no privileges and does no installing: [`reader::open`] verifies the
//! header and signature against a [`trust::TrustStore`], and [`reader::OpenBundle::import`]
//! streams validated entries into any [`PayloadSink`] (the store's importer, or a discarding
//! sink for `bundle verify`) in one pass over one file descriptor.
//!
//! Limits: paths must be UTF-8; extended attributes, ownership and timestamps are not
//! carried (deployments are canonical: root-owned, 0755/0644); at most
//! [`unpack::MAX_ENTRIES`] entries.

pub mod container;
mod error;
pub mod extension;
pub mod frames;
pub mod keys;
pub mod manifest;
pub mod payload;
pub mod reader;
pub mod sbom;
pub mod trust;
pub mod unpack;
pub use unpack::{parse_payload, Limits, Stats};
pub mod writer;

pub use error::BundleError;
pub use manifest::{Compression, Manifest, ManifestError, PayloadInfo, ReadyProtocol, ServiceDecl};
pub use payload::{PayloadSink, RelPath, SinkError};
pub use reader::{
    check_signed_manifest, open, open_file, open_reader, verify, DiscardSink, ImportSummary,
    OpenBundle,
};
pub use sbom::{Package, SbomError, SbomFormat, SbomInfo};
pub use trust::{TrustError, TrustStore, TrustedKey};
pub use writer::{create, Created, Source};
