//! appmgr-store: the libostree repository, deployments and version records of appmgr.
//!
//! TODO-DOCS
mod checksum;
mod crash;
mod error;
mod fsck;
mod fsutil;
mod import;
mod record;
mod store;

pub use crash::CRASH_ENV;
pub use error::{ImportError, StoreError};
pub use fsck::{FsckProblem, FsckReport};
pub use import::SPOOL_THRESHOLD;
pub use record::{DeploymentRecord, StateRecord};
pub use store::{
    deployment_is_marked_corrupt, Deployment, InstallOptions, InstallReport, NewDeployment,
    RefInfo, Store, StoreConfig, StoreLock, CORRUPT_MARKER,
};
