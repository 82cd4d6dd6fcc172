//! Crash injection for tests: when `APPMGR_CRASH_AT` names a point, the process aborts
//! there, as a SIGKILL or power cut would stop it. Points: `mid-import` (after the first
//! file of an import), `after-import` (ostree transaction committed), `after-checkout`
//! (deployment directory in place), `before-switch` (new record written, not renamed),
//! `after-switch` (record renamed), `mid-remove` (after the first deployment of a removed
//! ref is deleted), `before-prune`.

/// The environment variable naming the crash point.
pub const CRASH_ENV: &str = "APPMGR_CRASH_AT";

pub(crate) fn point(name: &str) {
    if std::env::var_os(CRASH_ENV).is_some_and(|v| v == name) {
        std::process::abort();
    }
}
