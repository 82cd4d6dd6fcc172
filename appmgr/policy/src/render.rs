//! `appmgr permissions` text, generated from the [`EffectiveGrant`] that is enforced.

use crate::eval::{limit_items, summarize, EffectiveGrant, Item};
use crate::parse::OnExcess;
use appmgr_types::escape_for_display as esc;
use appmgr_types::Provision;
use serde::Serialize;
use std::fmt::Write as _;

/// What `appmgr permissions --json` prints: the effective grant, plus `provided`, one
/// entry per permission item with its status on this host (`"provided"`,
/// `"not-provided"` with a `reason`; more values may follow, e.g. `"refused"`).
#[derive(Debug, Serialize)]
pub struct ShownGrant<'a> {
    #[serde(flatten)]
    pub grant: &'a EffectiveGrant,
    pub provided: &'a [Provision],
}

impl EffectiveGrant {
    /// The effective grant and limits as text, one line per item with the rule that
    /// granted it. Items are enumerated from `self.permissions` and `self.limits` (the
    /// values the launch plan consumes), never from a separate list; every name, path
    /// and file is escaped (control characters, bidi overrides). An item whose entry in
    /// `provided` (see `appmgr_sandbox::provisions`) is not `provided` ends in
    /// `(not provided on this host: REASON)`.
    pub fn render_text(&self, provided: &[Provision]) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "app {}", esc(self.app.as_str()));
        let source_of = |key: &str, value: &str| {
            self.provenance
                .iter()
                .find(|g| g.key == key && g.value == value)
                .and_then(|g| g.source.as_ref())
                .map_or_else(|| "requested by the app".to_string(), |s| s.to_string())
        };
        let items = Item::all(&self.permissions);
        out.push_str("permissions:\n");
        if items.is_empty() {
            out.push_str("  (none)\n");
        }
        for it in &items {
            let (k, v) = (it.key(), it.value());
            let _ = write!(out, "  {k} {}  [{}]", esc(&v), source_of(k, &v));
            match provided.iter().find(|p| p.key == k && p.value == v) {
                Some(p) if !p.is_provided() => {
                    let what = match p.status {
                        appmgr_types::ProvisionStatus::NotProvided => "not provided on this host",
                        appmgr_types::ProvisionStatus::Provided => "provided",
                    };
                    let _ = writeln!(
                        out,
                        "  ({what}: {})",
                        esc(p.reason.as_deref().unwrap_or("no reason given"))
                    );
                }
                _ => out.push('\n'),
            }
        }
        if !self.refused.is_empty() {
            out.push_str("refused at launch (the app does not start while these stand):\n");
            for r in &self.refused {
                let _ = writeln!(out, "  {} {}: {}", r.key, esc(&r.value), esc(&r.reason));
            }
        }
        let limits = limit_items(&self.limits);
        out.push_str("limits:\n");
        if limits.is_empty() {
            out.push_str("  (none)\n");
        }
        for (k, v) in &limits {
            let _ = writeln!(out, "  {k} {}  [{}]", esc(v), source_of(k, v));
        }
        let notes = network_notes(self.permissions.network);
        if !notes.is_empty() {
            out.push_str("notes:\n");
            for n in notes {
                let _ = writeln!(out, "  {n}");
            }
        }
        if !self.excess.is_empty() {
            match self.on_excess {
                OnExcess::Drop => {
                    let _ = writeln!(out, "dropped (on-excess = \"drop\"):");
                    for e in &self.excess {
                        let _ = writeln!(out, "  {} {}", e.key, esc(&e.value));
                    }
                }
                OnExcess::Refuse => {
                    let _ = writeln!(
                        out,
                        "refused: requests {} beyond what policy grants",
                        summarize(&self.excess)
                    );
                }
            }
        }
        out
    }
}

/// What the `network` grant means on this host today (docs/sandbox.md, "The network
/// grant"): the sandbox joins the host's network namespace.
const NETWORK_NOTE: &str = "network: the host's own network (no per-app network yet): \
the app reaches services listening on the host's 127.0.0.1/::1 and the host's abstract \
unix sockets, and can bind free ports on every host address, where it can pose as a host \
service that is not running";

fn network_notes(network: bool) -> Vec<&'static str> {
    if network {
        vec![NETWORK_NOTE]
    } else {
        vec![]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use appmgr_types::Permissions;

    /// The lines `permissions` prints and the entries `appmgr_sandbox::provisions` reports
    /// are keyed alike, so every printed item finds its status.
    #[test]
    fn items_and_entries_agree() {
        let p: Permissions = toml::from_str(
            "network = true\nipc = true\ndevices = [\"gpu\"]\nsockets = [\"wayland\", \"x11\"]\n\
             dbus-talk = [\"org.example.*\"]\ndbus-own = [\"org.example.A\"]\n\
             filesystems = [\"/srv/x\"]\nportals = [\"gpu\"]\nallow = [\"devel\"]",
        )
        .unwrap();
        let items: Vec<(&str, String)> =
            Item::all(&p).iter().map(|i| (i.key(), i.value())).collect();
        let entries: Vec<(&str, String)> =
            p.entries().iter().map(|e| (e.key(), e.value())).collect();
        assert_eq!(items, entries);
        assert_eq!(items.len(), 10);
    }
}
