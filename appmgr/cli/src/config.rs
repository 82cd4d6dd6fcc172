//! `CONFIG/appmgr.toml`: host settings that are not policy. Optional; every key has a
//! default. Parsed strictly like every other input.
//!
//! ```toml
//! board = "rk3588"            # a profile name (CONFIG/board-support/NAME.toml, then
//!                             # /usr/share/appmgr/board-support/NAME.toml) or a path
//! uid-range = "70000-79999"   # per-app uids/gids allocated at install
//! operator-group = "appmgr"   # may install/remove/start/stop through appmgrd
//! ```

use crate::error::{CliError, CliResult};
use appmgr_types::ErrorClass;
use serde::Deserialize;
use std::path::{Path, PathBuf};

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct HostConfig {
    pub board: Option<String>,
    pub uid_range: Option<String>,
    /// Members of this group may call appmgrd's mutating methods (besides root).
    pub operator_group: Option<String>,
}

/// Where board profiles are looked up by name, after `CONFIG/board-support`.
pub const SYSTEM_BOARD_DIR: &str = "/usr/share/appmgr/board-support";

impl HostConfig {
    pub fn load(config_dir: &Path) -> CliResult<HostConfig> {
        let path = config_dir.join("appmgr.toml");
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(HostConfig::default()),
            Err(e) => {
                return Err(CliError::new(
                    ErrorClass::Other,
                    format!("{}: {e}", path.display()),
                ))
            }
        };
        let text = std::str::from_utf8(&bytes).map_err(|e| {
            CliError::new(
                ErrorClass::Usage,
                format!("{}: not UTF-8 at byte {}", path.display(), e.valid_up_to()),
            )
        })?;
        toml::from_str(text).map_err(|e| {
            let line = e
                .span()
                .map(|s| text[..s.start].matches('\n').count() + 1)
                .unwrap_or(0);
            CliError::new(
                ErrorClass::Usage,
                format!("{}: line {line}: {}", path.display(), e.message()),
            )
        })
    }

    pub fn store_config(&self) -> CliResult<appmgr_store::StoreConfig> {
        let mut cfg = appmgr_store::StoreConfig::default();
        if let Some(r) = &self.uid_range {
            let bad = || {
                CliError::new(ErrorClass::Usage, format!("appmgr.toml: uid-range {r:?}: expected FIRST-LAST, e.g. 70000-79999, above 1000"))
            };
            let (a, b) = r.split_once('-').ok_or_else(bad)?;
            let (a, b): (u32, u32) = (
                a.trim().parse().map_err(|_| bad())?,
                b.trim().parse().map_err(|_| bad())?,
            );
            if a < 1000 || b < a || b >= u32::MAX - 1 {
                return Err(bad());
            }
            cfg.uid_range = a..=b;
        }
        Ok(cfg)
    }

    /// The configured board profile, if any.
    pub fn board(&self, config_dir: &Path) -> CliResult<Option<appmgr_board::BoardProfile>> {
        let Some(b) = &self.board else {
            return Ok(None);
        };
        let path = if b.contains('/') {
            PathBuf::from(b)
        } else {
            let local = config_dir.join("board-support").join(format!("{b}.toml"));
            if local.exists() {
                local
            } else {
                Path::new(SYSTEM_BOARD_DIR).join(format!("{b}.toml"))
            }
        };
        Ok(Some(appmgr_board::BoardProfile::load(&path)?))
    }
}

/// What policy conditions may look at: the board's logical devices, the device nodes
/// present now, and its named core sets.
pub fn board_facts(
    board: Option<&appmgr_board::BoardProfile>,
) -> CliResult<appmgr_policy::BoardFacts> {
    let mut facts = appmgr_policy::BoardFacts::default();
    let Some(b) = board else { return Ok(facts) };
    facts.devices = b.devices.keys().cloned().collect();
    let nodes = b.resolve(&facts.devices, Path::new("/"))?;
    facts.present_nodes = nodes.iter().map(|p| p.display().to_string()).collect();
    for (name, set) in &b.cpusets {
        let list = appmgr_cgroup::CpuList::new(&set.to_string()).map_err(|e| {
            CliError::new(
                ErrorClass::Other,
                format!("board {}: cpuset {name}: {e}", b.name),
            )
        })?;
        facts.core_sets.insert(name.clone(), list);
    }
    Ok(facts)
}
