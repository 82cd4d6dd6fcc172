//! appmgr-core: appmgr's use cases, one home for every front end.
//!
//! The mechanism crates below (`types`, `bundle`, `store`, `policy`, `board`, `cgroup`,
//! `sandbox`) know nothing of each other's formats or of the front ends; this crate puts
//! them together into what an operator asks for: the effective grant, launch, ps, kill
//! and reload (`apps`), installed refs and one ref's state (`records`), which extensions an app's sandbox shows (`extensions`), what installed refs
//! were built from (`sbom`), the service
//! settings (`service`), the worker protocol (`worker`), what the configured board offers
//! (`board`). The store mutations (install, update, remove, rollback, fsck) need
//! libostree and live in `appmgr-storeops`, above this crate, which only `appmgr-ops`
//! links: nothing here depends on the store. The front ends sit side by side on it:
//! `appmgr-cli` (argument parsing, rendering, the D-Bus client) and `appmgr-daemon`
//! (D-Bus, access control, supervision); neither depends on the other.
//!
//! No argument parsing, no D-Bus and no printing here: a use case takes a [`Ctx`] (the
//! state and config directories) and typed arguments, and returns its [`Output`] (text
//! for people, JSON for machines) or one [`Error`] whose class fixes the exit code and the
//! D-Bus error name (`appmgr_types::ErrorClass`).

pub mod apps;
pub mod audio;
pub mod board;
pub mod cmdline;
pub mod config;
mod error;
pub mod extensions;
pub mod holds;
pub mod inhibit;
pub mod journal;
pub mod paths;
pub mod prepared;
pub mod records;
pub mod remote_tuf;
pub mod remotes;
pub mod report;
pub mod sbom;
pub mod service;
pub mod worker;

pub use error::{bundle_read_error, chain as error_chain, remote_failure, CoreResult, Error};

use std::path::PathBuf;

/// The directories one operation works on. Host configuration (policy, board, uid range)
/// is read from `config_dir` once per operation by the use case that needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ctx {
    /// State directory: store, deployments, app data.
    pub state_dir: PathBuf,
    /// Configuration directory: trusted keys, policies, board selection.
    pub config_dir: PathBuf,
}

/// What a use case produced: text for people and a JSON value for machines (`--json`, the
/// daemon's replies). The two are built together so they cannot disagree.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Output {
    pub text: String,
    pub json: serde_json::Value,
}

impl Output {
    pub fn new(text: impl Into<String>, json: serde_json::Value) -> Self {
        Output {
            text: text.into(),
            json,
        }
    }
}
