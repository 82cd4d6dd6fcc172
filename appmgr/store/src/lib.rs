//! appmgr-store: the libostree repository, deployments and version records of appmgr.
//!
//! The store takes the validated entries of a bundle's payload (through
//! [`appmgr_bundle::PayloadSink`]) and turns them into an ostree commit and a hardlink
//! checkout that the sandbox mounts read-only at `/app` (apps) or `/usr` (runtimes). It
//! keeps the previous deployment of every ref for rollback, a record of the highest
//! version ever installed (downgrades are refused even after a remove), and one uid per
//! app for life: kept across remove and reinstall, never reused for another app. The
//! record format, the deployment layout and the read-only [`View`] are `appmgr-state`'s
//! (which has no libostree); this crate is their only writer. It knows nothing of the manifest format: callers pass a
//! [`NewDeployment`] with the few fields it needs and the exact signed manifest bytes.
//!
//! # On-disk layout (`STATE` is the state directory, e.g. `/var/lib/appmgr`)
//!
//! ```text
//! STATE/lock                          flock(2) target; every operation holds it exclusively
//! STATE/txn                           present while a mutating operation runs
//! STATE/repo/                         ostree repo, mode `bare`, objects owned by root
//!   refs/heads/app/ID/ARCH/BRANCH     -> current commit of an app
//!   refs/heads/runtime/ID/ARCH/BRANCH -> current commit of a runtime
//!   refs/heads/appmgr/previous/KIND/ID/ARCH/BRANCH -> previous commit (kept for rollback)
//! STATE/deploy/KIND/ID/ARCH/BRANCH/
//!   state.json                        the state record: the truth (see below)
//!   COMMIT/files/                     hardlink checkout of COMMIT (the tree at /app or /usr)
//!   COMMIT/manifest.toml              the exact signed manifest bytes
//!   COMMIT/corrupt                    written by fsck when the deployment failed checks
//! STATE/staging/                      spool files, checkouts in progress, trees being deleted
//! STATE/uids.json                     highest uid ever allocated (see `uids.rs`)
//! STATE/data/ID/                      an app's HOME (created by the launchers, kept at remove)
//! ```
//!
//! `state.json` holds the current deployment (commit, version, runtime, size), the previous
//! one if any, the highest version ever installed and, for apps, the allocated uid. After a
//! remove the record stays, with no deployments and with its uid.
//!
//! Files in deployments are hardlinks to the repo's objects: identical files across apps,
//! runtimes and versions are stored once. Objects, and so deployment files, are owned by
//! root with mode 0644 or 0755 (the bundle reader canonicalises modes; setuid, setgid and
//! group/other write bits cannot be represented). Empty files are copied, not linked
//! (libostree's choice: one shared empty inode would be a shared writable object).
//!
//! # Fast import
//!
//! libostree hashes with GLib's software SHA-256. The sink computes each content object's
//! checksum itself with `sha2` (SHA-NI where the CPU has it) while reading the entry, then
//! hands the object to `write_content_trusted` on a writer thread. Small files are
//! buffered (at most [`SPOOL_THRESHOLD`] bytes each, two in the queue), larger ones are
//! spooled to `STATE/staging`, so memory stays bounded whatever the bundle size. An object
//! that already exists is re-verified before reuse and rewritten when corrupt, so
//! reinstalling repairs the store (libostree alone would skip existing objects); other
//! deployments that linked the corrupt inode are relinked to the rewritten object.
//!
//! # Crash safety
//!
//! The state records are the only truth; refs and deployment directories are derived from
//! them. Every operation runs under the lock and follows one pattern:
//!
//! 1. collect leftovers: empty `staging/` and the repo's `tmp/`, remove ref files a power
//!    cut left empty or torn, delete deployment
//!    directories and ref directories no record names, make refs equal to the records,
//!    check out again a deployment a record names but which is missing, and, if `txn`
//!    says an operation was interrupted (or refs had to be fixed), prune unreachable
//!    objects;
//! 2. write `txn`, then do all the work out of sight: objects into the repo, the checkout
//!    into `staging/`, renamed into `deploy/…/COMMIT` (unreferenced, so still garbage);
//! 3. `syncfs` the file system: objects, checkout and directories are durable;
//! 4. write the new `state.json` to a temporary file, fsync it, rename it over the old one,
//!    fsync the directory. **The rename is the commit point.**
//! 5. derived clean-up: refs, dropped deployments, prune, remove `txn`.
//!
//! A crash (SIGKILL, power cut) before 4 leaves the old record, and step 1 of the next
//! operation removes whatever 2 wrote; a crash after 4 leaves the new record, and step 1
//! finishes 5. Either way the store holds exactly the old or the new state. libostree's
//! own per-object fsync is disabled because step 3 covers it with one `syncfs`. A failing
//! step (disk full, import error) runs step 1 at once. `fsck` runs step 1 first too.
//! Tests abort at named points (`APPMGR_CRASH_AT`, see [`CRASH_ENV`]) and SIGKILL at random
//! moments, then check for exactly the old or new state and a clean fsck.
//!
//! # Limits
//!
//! - Objects are checked for content, owner and mode, not for extended attributes (the
//!   store writes none; `ostree fsck` checks them).
//! - When a reinstall rewrites a corrupt object, other deployments that link the corrupt
//!   inode are relinked to the new object (one rename per file), but a `corrupt` mark that
//!   fsck left on them stays until the next fsck finds them good.
//! - The free-space check compares the payload size plus [`StoreConfig::reserve_bytes`]
//!   with `statvfs`; a payload that lies about its size fails with ENOSPC (or libostree's
//!   `min-free-space-percent` guard) and is rolled back like any other failed step.
mod checksum;
mod crash;
mod error;
mod fsck;
mod fsutil;
mod generation;
mod import;
mod record;
mod store;
mod uids;

/// The records, their read-only view and the deployment paths live in `appmgr-state`
/// (no libostree there); they are re-exported so store users need one import.
pub use appmgr_state::{
    deployment_is_marked_corrupt, view, Deployment, DeploymentRecord, RefInfo, StateRecord, View,
    ViewError, CORRUPT_MARKER,
};
pub use crash::CRASH_ENV;
pub use error::{ImportError, StoreError};
pub use fsck::{FsckProblem, FsckReport};
pub use import::SPOOL_THRESHOLD;
pub use store::{InstallOptions, InstallReport, NewDeployment, Store, StoreConfig, StoreLock};
