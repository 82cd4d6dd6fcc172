//! How a service app is run: its manifest's `[service]` table and the policy's `service`
//! settings, with appmgr's defaults filled in once, here.

use crate::apps::AppGrant;
use appmgr_bundle::ReadyProtocol;
use appmgr_policy::RestartPolicy;
use serde::{Deserialize, Serialize};

/// First restart delay when policy sets none.
pub const DEFAULT_RESTART_DELAY_MS: u64 = 1000;
/// Cap of the doubling restart delay when policy sets none.
pub const DEFAULT_RESTART_DELAY_MAX_MS: u64 = 60_000;
/// How long a stopped service gets between SIGTERM and SIGKILL when the manifest says
/// nothing.
pub const DEFAULT_STOP_TIMEOUT_S: u32 = 10;
/// Crashes within the health window after an update that roll it back.
pub const DEFAULT_HEALTH_CRASHES: u32 = 3;
/// The health window after an update, in seconds.
pub const DEFAULT_HEALTH_TIMEOUT_S: u32 = 30;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Settings {
    pub autostart: bool,
    pub restart: RestartPolicy,
    pub restart_delay_ms: u64,
    pub restart_delay_max_ms: u64,
    pub ready: ReadyProtocol,
    pub stop_timeout_s: u32,
    pub health_crashes: u32,
    pub health_timeout_s: u32,
}

impl Settings {
    /// An app started by hand that declares no service: not started at boot, never
    /// restarted, the default timeouts.
    pub fn manual() -> Settings {
        Settings {
            autostart: false,
            restart: RestartPolicy::Never,
            restart_delay_ms: DEFAULT_RESTART_DELAY_MS,
            restart_delay_max_ms: DEFAULT_RESTART_DELAY_MAX_MS,
            ready: ReadyProtocol::Started,
            stop_timeout_s: DEFAULT_STOP_TIMEOUT_S,
            health_crashes: DEFAULT_HEALTH_CRASHES,
            health_timeout_s: DEFAULT_HEALTH_TIMEOUT_S,
        }
    }
}

/// The service settings of an app, or `None` when neither its manifest nor policy
/// declares it a service.
pub fn settings_of(a: &AppGrant) -> Option<Settings> {
    let decl = a.manifest.service.as_ref();
    let pol = &a.grant.service;
    if decl.is_none() && !pol.declares_service() {
        return None;
    }
    Some(Settings {
        autostart: pol.autostart.unwrap_or(true),
        restart: pol.restart.unwrap_or(RestartPolicy::OnFailure),
        restart_delay_ms: pol.restart_delay_ms.unwrap_or(DEFAULT_RESTART_DELAY_MS),
        restart_delay_max_ms: pol
            .restart_delay_max_ms
            .unwrap_or(DEFAULT_RESTART_DELAY_MAX_MS),
        ready: decl.map(|d| d.ready).unwrap_or_default(),
        stop_timeout_s: decl
            .map(|d| d.stop_timeout)
            .unwrap_or(DEFAULT_STOP_TIMEOUT_S),
        health_crashes: pol.health_crashes.unwrap_or(DEFAULT_HEALTH_CRASHES),
        health_timeout_s: pol.health_timeout_s.unwrap_or(DEFAULT_HEALTH_TIMEOUT_S),
    })
}
