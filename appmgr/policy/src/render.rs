//! `appmgr permissions` text, generated from the [`EffectiveGrant`] that is enforced.

use crate::eval::{limit_items, summarize, EffectiveGrant, Item};
use crate::parse::OnExcess;
use appmgr_types::escape_for_display as esc;
use std::fmt::Write as _;

impl EffectiveGrant {
    /// The effective grant and limits as text, one line per item with the rule that
    /// granted it. Items are enumerated from `self.permissions` and `self.limits` (the
    /// values the launch plan consumes), never from a separate list; every name, path
    /// and file is escaped (control characters, bidi overrides).
    pub fn render_text(&self) -> String {
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
            let _ = writeln!(out, "  {k} {}  [{}]", esc(&v), source_of(k, &v));
        }
        let limits = limit_items(&self.limits);
        out.push_str("limits:\n");
        if limits.is_empty() {
            out.push_str("  (none)\n");
        }
        for (k, v) in &limits {
            let _ = writeln!(out, "  {k} {}  [{}]", esc(v), source_of(k, v));
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
