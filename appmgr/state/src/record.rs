//! Per-ref state records: the only source of truth of the store.
//!
//! A record is `deploy/KIND/ID/ARCH/BRANCH/state.json`. It is replaced by writing a
//! temporary file, fsyncing it, renaming it over the old one and fsyncing the directory:
//! the rename is the commit point of every operation. Refs and deployment directories are
//! derived from the records and are repaired from them after a crash. This crate reads
//! records; `appmgr-store` is their only writer.

use crate::view::ViewError;
use appmgr_types::{RefName, RuntimeRef, Version};
use serde::{Deserialize, Serialize};
use std::fs;
use std::path::Path;

/// The record's name in its ref directory.
pub const RECORD_FILE: &str = "state.json";
/// The temporary file a writer renames over [`RECORD_FILE`].
pub const RECORD_TMP: &str = ".state.json.tmp";

/// One deployed commit of a ref.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct DeploymentRecord {
    /// The ostree commit checked out in the deployment directory.
    pub commit: String,
    pub version: Version,
    /// For apps: the runtime this deployment runs on.
    pub runtime: Option<RuntimeRef>,
    /// Sum of the payload's file sizes.
    pub installed_size: u64,
}

/// What the store knows about one ref.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct StateRecord {
    #[serde(rename = "ref")]
    pub ref_name: RefName,
    pub current: Option<DeploymentRecord>,
    pub previous: Option<DeploymentRecord>,
    /// The highest version ever installed; kept after remove so downgrades stay refused.
    pub highest_version: Version,
    /// For apps: the uid (and gid) the app runs as, allocated at its first install and
    /// kept for life (also after a remove, so a reinstall gets it back). `None` for
    /// runtimes, and for apps removed by an older appmgr that released uids.
    pub uid: Option<u32>,
}

impl StateRecord {
    /// The deployments the record names: current, then previous.
    pub fn commits(&self) -> impl Iterator<Item = &DeploymentRecord> {
        self.current.iter().chain(self.previous.iter())
    }
}

/// Reads the record at `path`; `None` when there is none.
pub fn read(path: &Path) -> Result<Option<StateRecord>, ViewError> {
    let bytes = match fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(ViewError::Io {
                step: "read state record",
                path: path.to_path_buf(),
                source,
            })
        }
    };
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|e| ViewError::BadRecord {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })
}
