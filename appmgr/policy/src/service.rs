//! The `service` table of a policy rule: whether and how appmgrd supervises an app as a
//! service, and the health window after an update. Each key is decided on its own, like
//! the resource ceilings: the most specific applying rule that sets it wins.
//!
//! ```toml
//! [[rule]]
//! apps = ["com.example.telematics"]
//! service = { autostart = true, restart = "on-failure", restart-delay-ms = 1000,
//!             restart-delay-max-ms = 60000, health-crashes = 3, health-timeout = 30 }
//! ```

use serde::{Deserialize, Serialize};

/// When a service is restarted after it ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RestartPolicy {
    /// After every end, clean or not.
    Always,
    /// After a non-zero exit or a signal.
    OnFailure,
    /// Never.
    Never,
}

/// Service settings from policy; `None` keys fall back to the manifest or the defaults.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ServicePolicy {
    /// Start at boot (when appmgrd starts).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autostart: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restart: Option<RestartPolicy>,
    /// First restart delay; doubled after each failed run up to the maximum.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restart_delay_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restart_delay_max_ms: Option<u64>,
    /// Crashes of an updated version within its health window that roll it back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_crashes: Option<u32>,
    /// Seconds an updated `ready = "notify"` service has to send `READY=1`.
    #[serde(
        default,
        rename = "health-timeout",
        skip_serializing_if = "Option::is_none"
    )]
    pub health_timeout_s: Option<u32>,
}

impl ServicePolicy {
    /// Whether policy makes the app a service (any key set).
    pub fn declares_service(&self) -> bool {
        *self != ServicePolicy::default()
    }

    /// Range checks, with the key at fault.
    pub fn validate(&self) -> Result<(), String> {
        let check = |key: &str, v: Option<u64>, lo: u64, hi: u64| match v {
            Some(v) if v < lo || v > hi => {
                Err(format!("service.{key}: {v} is not within {lo}..={hi}"))
            }
            _ => Ok(()),
        };
        check("restart-delay-ms", self.restart_delay_ms, 1, 3_600_000)?;
        check(
            "restart-delay-max-ms",
            self.restart_delay_max_ms,
            1,
            86_400_000,
        )?;
        check(
            "health-crashes",
            self.health_crashes.map(u64::from),
            1,
            1000,
        )?;
        check(
            "health-timeout",
            self.health_timeout_s.map(u64::from),
            1,
            86_400,
        )?;
        if let (Some(a), Some(b)) = (self.restart_delay_ms, self.restart_delay_max_ms) {
            if a > b {
                return Err(format!(
                    "service.restart-delay-ms: {a} is above restart-delay-max-ms {b}"
                ));
            }
        }
        Ok(())
    }
}
