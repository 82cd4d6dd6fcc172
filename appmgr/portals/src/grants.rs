//! What an app is granted now: the effective permissions of its kept launch plan (the
//! object `appmgr permissions` displays and the launcher applies) while that plan is
//! current, else a fresh evaluation of the installed app against the policy on disk. A
//! plan is never written here (the service's view of the state directory is read-only).
//! An app that is not installed or not granted any more has nothing.

use appmgr_types::{AppId, Permissions};

/// The effective permissions of installed app `app`, or why it has none.
pub fn of(g: &appmgr_core::Ctx, app: &AppId) -> Result<Permissions, String> {
    of_with_inputs(g, app).map(|(p, _)| p)
}

/// [`of`], with the inputs the grant was derived from (policy files, manifest, host
/// config, by digest): while none of them changed and the kept plans did not, the grant
/// is the same.
pub fn of_with_inputs(
    g: &appmgr_core::Ctx,
    app: &AppId,
) -> Result<(Permissions, Vec<appmgr_sandbox::inputs::PlanInput>), String> {
    let p = match appmgr_core::prepared::load(g, app) {
        Some(p) => p,
        None => appmgr_core::prepared::derive(g, app.as_str()).map_err(|e| e.message)?,
    };
    Ok((p.spec.permissions, p.spec.inputs))
}

/// Whether `p` grants portal `name`.
pub fn has_portal(p: &Permissions, name: &str) -> bool {
    p.portals.iter().any(|x| x.as_str() == name)
}
