//! `appmgr permissions` text, generated from the [`EffectiveGrant`] that is enforced.

use crate::eval::{limit_items, summarize, EffectiveGrant, Item};
use crate::parse::OnExcess;
use appmgr_types::escape_for_display as esc;
use appmgr_types::{NetworkGrant, Provision};
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
        let notes = network_notes(&self.permissions.network);
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

/// What a `network` grant means (docs/sandbox.md, "The network grant"): the app's own
/// network namespace, joined to the host by a veth pair and NAT.
const NETWORK_NOTE: &str = "network: its own network namespace, joined to the host by a \
veth pair and NAT; the host's loopback, its abstract unix sockets and other apps are \
unreachable";

/// The notes for a network grant: none without one; otherwise [`NETWORK_NOTE`] and one
/// line saying what this grant reaches (the entries themselves are the items above).
fn network_notes(n: &NetworkGrant) -> Vec<String> {
    if !n.is_granted() {
        return vec![];
    }
    let mut what: Vec<&str> = Vec::new();
    if n.any {
        what.push("any egress (network = true), DNS included");
    } else {
        what.push(if n.egress.is_empty() {
            "no egress"
        } else {
            "egress only to the listed destinations (names resolved by appmgr at launch \
             and written to the app's /etc/hosts)"
        });
        what.push(if n.dns {
            "DNS through the host's name servers"
        } else {
            "no DNS"
        });
    }
    if !n.listen.is_empty() {
        what.push("inbound only on the listed ports of its own address");
    }
    if !n.talk_to.is_empty() {
        what.push("talk-to apps reachable only when their own grant names this app back");
    }
    vec![
        NETWORK_NOTE.to_string(),
        format!("network: {}", what.join("; ")),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use appmgr_types::Permissions;

    /// The lines `permissions` prints and the entries `appmgr_sandbox::provisions` reports
    /// are keyed alike, so every printed item finds its status.
    #[test]
    fn items_and_entries_agree() {
        // Both sides of one grant, keyed and valued alike.
        let agreed = |toml_text: &str| -> Vec<(&'static str, String)> {
            let p: Permissions = toml::from_str(toml_text).unwrap();
            let items: Vec<(&str, String)> =
                Item::all(&p).iter().map(|i| (i.key(), i.value())).collect();
            let entries: Vec<(&str, String)> =
                p.entries().iter().map(|e| (e.key(), e.value())).collect();
            assert_eq!(items, entries);
            items
        };
        let items = agreed(
            "network = true\nipc = true\ndevices = [\"gpu\"]\nsockets = [\"wayland\", \"x11\"]\n\
             dbus-talk = [\"org.example.*\"]\ndbus-own = [\"org.example.A\"]\n\
             filesystems = [\"/srv/x\"]\nportals = [\"gpu\"]\nallow = [\"devel\"]",
        );
        assert_eq!(items.len(), 10);

        let items = agreed(
            "network = { egress = [\"198.51.100.0/24:443\", \"b.example:8883/tcp\"], \
             listen = [\"8080\"], dns = true, talk-to = [\"org.example.Server\"] }\nipc = true",
        );
        assert_eq!(
            items,
            [
                ("network.egress", "198.51.100.0/24:443/tcp".to_string()),
                ("network.egress", "b.example:8883/tcp".to_string()),
                ("network.listen", "8080/tcp".to_string()),
                ("network.dns", "true".to_string()),
                ("network.talk-to", "org.example.Server".to_string()),
                ("ipc", "true".to_string()),
            ]
        );
    }

    #[test]
    fn network_notes_follow_the_grant() {
        assert!(network_notes(&NetworkGrant::default()).is_empty());
        let any = network_notes(&NetworkGrant::any());
        assert_eq!(any.len(), 2);
        assert_eq!(any[0], NETWORK_NOTE);
        assert!(any[1].contains("any egress") && any[1].contains("DNS included"));
        let mut n = NetworkGrant::default();
        n.listen.insert("8080".parse().unwrap());
        let only_listen = network_notes(&n);
        assert_eq!(
            only_listen[1],
            "network: no egress; no DNS; inbound only on the listed ports of its own address"
        );
    }
}
