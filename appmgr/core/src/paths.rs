//! Where appmgr's helper binaries and the daemon's files are: one definition for the CLI,
//! the daemon and the tests.

use std::path::{Path, PathBuf};

/// The binary that runs store commands (it links libostree; `appmgr` and `appmgrd` do
/// not).
pub const OPS_NAME: &str = "appmgr-ops";
/// Where packaged helper binaries live.
pub const LIBEXEC_DIR: &str = "/usr/libexec/appmgr";

/// A helper binary: `$ENV_VAR` if set, else next to the running executable (resolved
/// through symlinks, so `/usr/bin/appmgr` → `/usr/libexec/appmgr/appmgr` finds its
/// siblings), else in [`LIBEXEC_DIR`].
pub fn helper_binary(name: &str, env_var: &str) -> PathBuf {
    if let Some(p) = std::env::var_os(env_var) {
        return p.into();
    }
    std::env::current_exe()
        .ok()
        .and_then(|e| e.canonicalize().ok())
        .and_then(|e| {
            let p = e.with_file_name(name);
            p.exists().then_some(p)
        })
        .unwrap_or_else(|| Path::new(LIBEXEC_DIR).join(name))
}

/// `appmgr-ops`: `$APPMGR_OPS`, next to this executable, or in [`LIBEXEC_DIR`].
pub fn ops_binary() -> PathBuf {
    helper_binary(OPS_NAME, "APPMGR_OPS")
}

/// `STATE/daemon`: appmgrd's own files (lock, health records, logs, notify sockets),
/// root-only (0700).
pub fn daemon_dir(state_dir: &Path) -> PathBuf {
    state_dir.join("daemon")
}

/// The lock appmgrd holds while it serves `state_dir`.
pub fn lock_path(state_dir: &Path) -> PathBuf {
    daemon_dir(state_dir).join("lock")
}

/// The D-Bus address appmgrd serves `state_dir` on (readable by every local user, so
/// operators find the daemon; written by root only).
pub fn address_path(state_dir: &Path) -> PathBuf {
    state_dir.join("daemon.bus-address")
}
