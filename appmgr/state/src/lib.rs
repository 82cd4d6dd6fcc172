//! appmgr-state: the on-disk state of appmgr (the per-ref records, the deployment paths,
//! the change sequence) and a read-only view of it, without libostree or GLib.
//!
//! The lean binaries (`appmgr`, `appmgrd`, `appmgr-launch`) read state through this crate
//! only: they must not load libostree and GLib (about 20 ms of dynamic linking on the
//! boards, and a large library in the daemon's memory). `appmgr-store` builds on this crate:
//! it defines nothing about the record format or the deployment layout itself and is the
//! only writer (temporary file, fsync, rename, fsync of the directory). The rule is visible
//! in the dependency graph: this crate depends on `appmgr-types`, `serde`, `serde_json` and
//! `thiserror` only, and `appmgr/layering`'s tests check that no lean crate reaches the
//! `ostree` crate and that no lean binary has a `NEEDED` entry for libostree or GLib.
//!
//! The layout of the state directory is described in `appmgr_store`'s crate docs.

pub mod generation;
pub mod record;
pub mod view;

pub use record::{DeploymentRecord, StateRecord};
pub use view::{
    deployment_is_marked_corrupt, Deployment, RefInfo, View, ViewError, CORRUPT_MARKER,
};

/// Free space an install must leave on the state directory's file system beyond its own
/// size, unless `appmgr.toml` says otherwise (the store's default; the launchers keep the
/// same reserve when they grow an app's storage image).
pub const DEFAULT_RESERVE_BYTES: u64 = 16 << 20;
