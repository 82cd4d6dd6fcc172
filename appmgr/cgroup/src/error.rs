use appmgr_types::ErrorClass;
use std::io;
use std::path::PathBuf;

/// Why a cgroup operation failed. Every variant names the file or directory involved.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("invalid cgroup limit {what} {value:?}: {reason}")]
    InvalidLimit {
        what: &'static str,
        value: String,
        reason: &'static str,
    },
    #[error("invalid cgroup parent {path:?}: must be a relative, normal path")]
    InvalidParent { path: PathBuf },
    #[error("no usable cgroup hierarchy found: {reason}")]
    NoHierarchy { reason: String },
    #[error("creating cgroup {path:?}: {source}")]
    Create { path: PathBuf, source: io::Error },
    #[error("writing {value:?} to {path:?}: {source}")]
    Write {
        path: PathBuf,
        value: String,
        source: io::Error,
    },
    #[error("reading {path:?}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("unexpected content {value:?} in {path:?}")]
    Parse { path: PathBuf, value: String },
    #[error("cgroup {path:?} is already running processes")]
    InUse { path: PathBuf },
    #[error("cgroup {path:?} still has processes after {attempts} attempts to empty it")]
    StillBusy { path: PathBuf, attempts: u32 },
    #[error("removing cgroup {path:?}: {source}")]
    Remove { path: PathBuf, source: io::Error },
    #[error("sending SIGKILL to pid {pid}: {source}")]
    Kill { pid: i32, source: io::Error },
}

impl CgroupError {
    /// The exit class: a cgroup already in use is a conflict ("already running"), a
    /// permission error is "not permitted", bad limits are usage errors, the rest is other.
    pub fn class(&self) -> ErrorClass {
        let perm = |e: &io::Error| e.kind() == io::ErrorKind::PermissionDenied;
        match self {
            CgroupError::InUse { .. } => ErrorClass::Conflict,
            CgroupError::InvalidLimit { .. } | CgroupError::InvalidParent { .. } => {
                ErrorClass::Usage
            }
            CgroupError::Create { source, .. }
            | CgroupError::Write { source, .. }
            | CgroupError::Remove { source, .. }
            | CgroupError::Kill { source, .. }
                if perm(source) =>
            {
                ErrorClass::NotPermitted
            }
            _ => ErrorClass::Other,
        }
    }
}
