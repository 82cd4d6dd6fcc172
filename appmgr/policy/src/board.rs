//! What the policy knows about the board: this crate's own input type, filled by the CLI
//! from the board profile (and the device nodes present at run time).

use appmgr_cgroup::CpuList;
use appmgr_types::{has_unsafe_chars, DeviceName};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

/// Facts about the board that conditional rules (`when`) and core-set limits use.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BoardFacts {
    /// Logical devices the board profile maps to nodes (`gpu`, `input`, `bluetooth`, …).
    pub devices: BTreeSet<DeviceName>,
    /// Device nodes that exist on this board now, e.g. `/dev/dri/renderD128`.
    pub present_nodes: BTreeSet<String>,
    /// Named core sets (`big` → `4-7`).
    pub core_sets: BTreeMap<String, CpuList>,
}

/// An absolute device-node path in a condition: under `/dev`, normal, no control chars.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct NodePath(String);

impl NodePath {
    pub fn new(s: &str) -> Result<Self, String> {
        let ok = s.len() <= 256
            && !has_unsafe_chars(s)
            && s.strip_prefix("/dev/").is_some_and(|rest| {
                !rest.is_empty()
                    && rest
                        .split('/')
                        .all(|c| !c.is_empty() && c != "." && c != "..")
            });
        if ok {
            Ok(NodePath(s.to_string()))
        } else {
            Err(format!(
                "invalid device node {:?}: must be a normal path under /dev/",
                appmgr_types::escape_for_display(s)
            ))
        }
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}
impl TryFrom<String> for NodePath {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        NodePath::new(&s)
    }
}
impl From<NodePath> for String {
    fn from(n: NodePath) -> String {
        n.0
    }
}
impl fmt::Display for NodePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A rule's `when` table, in the spirit of Flatpak's `--device-if`/`--socket-if`: the
/// rule (its grants, denials, limits and on-excess) applies only if every listed
/// condition holds on this board. An empty `when` always holds.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct Condition {
    /// The board provides all of these logical devices.
    #[serde(skip_serializing_if = "BTreeSet::is_empty")]
    pub has_devices: BTreeSet<DeviceName>,
    /// The board provides none of these (a fallback for an absent preferred device).
    #[serde(skip_serializing_if = "BTreeSet::is_empty")]
    pub lacks_devices: BTreeSet<DeviceName>,
    /// All of these device nodes exist (e.g. a DRI render node).
    #[serde(skip_serializing_if = "BTreeSet::is_empty")]
    pub has_nodes: BTreeSet<NodePath>,
    /// None of these device nodes exist.
    #[serde(skip_serializing_if = "BTreeSet::is_empty")]
    pub lacks_nodes: BTreeSet<NodePath>,
    /// The board defines all of these core sets.
    #[serde(skip_serializing_if = "BTreeSet::is_empty")]
    pub has_core_sets: BTreeSet<String>,
}

impl Condition {
    pub fn holds(&self, b: &BoardFacts) -> bool {
        self.has_devices.iter().all(|d| b.devices.contains(d))
            && !self.lacks_devices.iter().any(|d| b.devices.contains(d))
            && self
                .has_nodes
                .iter()
                .all(|n| b.present_nodes.contains(n.as_str()))
            && !self
                .lacks_nodes
                .iter()
                .any(|n| b.present_nodes.contains(n.as_str()))
            && self
                .has_core_sets
                .iter()
                .all(|c| b.core_sets.contains_key(c))
    }

    pub fn is_empty(&self) -> bool {
        self == &Condition::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conditions() {
        let mut b = BoardFacts::default();
        b.devices.insert(DeviceName::new("gpu").unwrap());
        b.present_nodes.insert("/dev/dri/renderD128".into());
        let c: Condition = toml::from_str("has-nodes = [\"/dev/dri/renderD128\"]").unwrap();
        assert!(c.holds(&b));
        let c: Condition = toml::from_str("lacks-devices = [\"gpu\"]").unwrap();
        assert!(!c.holds(&b));
        let c: Condition = toml::from_str("has-core-sets = [\"big\"]").unwrap();
        assert!(!c.holds(&b));
        assert!(Condition::default().holds(&b));
        for bad in [
            "has-nodes = [\"/dev/../etc/passwd\"]",
            "has-nodes = [\"relative\"]",
            "has-nodes = [\"/dev/\"]",
            "has-node = []",
        ] {
            assert!(toml::from_str::<Condition>(bad).is_err(), "{bad}");
        }
    }
}
