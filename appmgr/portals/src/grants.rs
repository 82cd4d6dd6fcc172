//! What an app is granted now: the effective permissions of its kept launch plan (the
//! object `appmgr permissions` displays and the launcher applies) while that plan is
//! current, else a fresh evaluation of the installed app against the policy on disk. A
//! plan is never written here (the service's view of the state directory is read-only).
//! An app that is not installed or not granted any more has nothing.

use appmgr_types::{AppId, Permissions};

/// The effective permissions of installed app `app`, or why it has none.
pub fn of(g: &appmgr_core::Ctx, app: &AppId) -> Result<Permissions, String> {
    if let Some(p) = appmgr_core::prepared::load(g, app) {
        return Ok(p.spec.permissions);
    }
    appmgr_core::prepared::derive(g, app.as_str())
        .map(|p| p.spec.permissions)
        .map_err(|e| e.message)
}

/// Whether `p` grants portal `name`.
pub fn has_portal(p: &Permissions, name: &str) -> bool {
    p.portals.iter().any(|x| x.as_str() == name)
}
