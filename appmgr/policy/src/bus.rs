//! The per-app D-Bus policy: a dbus-daemon `busconfig` drop-in (for
//! `/etc/dbus-1/system.d/`) that limits each app uid to the bus names its effective grant
//! lists in `dbus-talk` and `dbus-own`.
//!
//! dbus-daemon applies `context="default"` policies first and `user="UID"` policies after
//! them; within the applied policies the last matching rule wins. So each app uid gets one
//! `<policy user="UID">` section that first closes everything the default context may have
//! opened to ordinary users (`deny send_destination="*"`, which matches every message with
//! or without a destination, and `deny own="*"`), then re-opens exactly:
//!
//! - replies: a `<deny>` does not match *requested* replies (its `send_requested_reply`
//!   defaults to `false`), and explicit `allow` rules for requested `method_return` and
//!   `error` keep them flowing whatever the default context says. An app that owns a name
//!   can answer the calls it receives, and the answers to the app's own calls are sent by
//!   the callee under the callee's policy;
//! - the granted `talk` names (`send_destination`, or `send_destination_prefix` for a
//!   `prefix.*` pattern, which dbus-daemon matches element-wise exactly like
//!   [`BusName::covers`]); dbus-daemon matches these against every name the receiving
//!   connection owns;
//! - the granted `own` names (`own` / `own_prefix`); apps with an `own` grant may also emit
//!   broadcast signals (`PropertiesChanged` and friends), apps without one may not;
//! - the bus driver's ordinary interfaces (`Hello`, `AddMatch`, `GetNameOwner`,
//!   introspection, properties), as in dbus's own `system.conf`, followed by the same
//!   denials for its privileged parts, placed last so that no grant re-opens them.
//!
//! Uids are written as numbers: app uids have no passwd entry, and dbus-daemon accepts a
//! numeric uid there. uid 0 is never an app uid and is skipped (a section for it would cut
//! off root, including appmgrd). Needs dbus-daemon ≥ 1.14 (`send_destination_prefix`,
//! `send_broadcast`).

use appmgr_types::{AppId, BusName, Permissions};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write;

/// One app's bus grant: what its uid may call (`talk`) and own (`own`). Names may be
/// `prefix.*` patterns ([`BusName::is_prefix`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BusPolicyEntry {
    pub app_id: AppId,
    pub uid: u32,
    pub talk: Vec<BusName>,
    pub own: Vec<BusName>,
}

impl BusPolicyEntry {
    /// The entry for an app's effective permissions (`dbus_talk`, `dbus_own`); a granted
    /// portal that is served adds the portal service's name to `talk`.
    pub fn from_permissions(app_id: AppId, uid: u32, perms: &Permissions) -> BusPolicyEntry {
        let mut talk: BTreeSet<BusName> = perms.dbus_talk.iter().cloned().collect();
        if perms.has_served_portal() {
            talk.insert(BusName::new(appmgr_types::PORTAL_BUS_NAME).expect("a valid bus name"));
        }
        BusPolicyEntry {
            app_id,
            uid,
            talk: talk.into_iter().collect(),
            own: perms.dbus_own.iter().cloned().collect(),
        }
    }
}

/// Escapes text for an XML attribute value or text node.
fn xml_escape(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&apos;"),
            c if c.is_control() => {
                let _ = write!(o, "&#x{:X};", c as u32);
            }
            c => o.push(c),
        }
    }
    o
}

/// Text safe inside an XML comment: escaped, and no `--` (which would end it early).
fn comment_text(s: &str) -> String {
    let mut o = xml_escape(s);
    while o.contains("--") {
        o = o.replace("--", "-&#x2D;");
    }
    o
}

/// `name="NAME"` for a plain name, `prefix_name="PREFIX"` for a `PREFIX.*` pattern.
fn name_attr(n: &BusName, plain: &str, prefix: &str) -> String {
    match n.as_str().strip_suffix(".*") {
        Some(p) if n.is_prefix() => format!("{prefix}=\"{}\"", xml_escape(p)),
        _ => format!("{plain}=\"{}\"", xml_escape(n.as_str())),
    }
}

#[derive(Default)]
struct Merged<'a> {
    apps: BTreeSet<&'a str>,
    talk: BTreeSet<&'a BusName>,
    own: BTreeSet<&'a BusName>,
}

const DRIVER: &str = "org.freedesktop.DBus";

/// Renders the complete drop-in for `entries`: deterministic (sorted by uid, names sorted),
/// one `<policy user="UID">` per uid (entries sharing a uid are merged), values escaped.
pub fn render_bus_policy(entries: &[BusPolicyEntry]) -> String {
    let mut by_uid: BTreeMap<u32, Merged> = BTreeMap::new();
    let mut skipped: BTreeSet<&str> = BTreeSet::new();
    for e in entries {
        if e.uid == 0 {
            skipped.insert(e.app_id.as_str());
            continue;
        }
        let m = by_uid.entry(e.uid).or_default();
        m.apps.insert(e.app_id.as_str());
        m.talk.extend(e.talk.iter());
        m.own.extend(e.own.iter());
    }

    let mut o = String::new();
    o.push_str(concat!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n",
        "<!-- Generated by appmgrd from the effective grants (dbus-talk, dbus-own) of the\n",
        "     installed apps. Do not edit: this file is overwritten whenever an app is\n",
        "     installed, updated or removed, or the policy changes. -->\n",
        "<!DOCTYPE busconfig PUBLIC \"-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN\"\n",
        " \"http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd\">\n",
        "<busconfig>\n",
    ));
    for app in &skipped {
        let _ = writeln!(
            o,
            "  <!-- {}: skipped, uid 0 is not an app uid -->",
            comment_text(app)
        );
    }
    for (uid, m) in &by_uid {
        let apps: Vec<String> = m.apps.iter().map(|a| comment_text(a)).collect();
        let _ = writeln!(o, "  <!-- {} -->", apps.join(", "));
        let _ = writeln!(o, "  <policy user=\"{uid}\">");
        o.push_str("    <deny send_destination=\"*\"/>\n");
        o.push_str("    <deny own=\"*\"/>\n");
        o.push_str("    <allow send_type=\"method_return\" send_requested_reply=\"true\"/>\n");
        o.push_str("    <allow send_type=\"error\" send_requested_reply=\"true\"/>\n");
        for n in &m.talk {
            let _ = writeln!(
                o,
                "    <allow {}/>",
                name_attr(n, "send_destination", "send_destination_prefix")
            );
        }
        for n in &m.own {
            let _ = writeln!(o, "    <allow {}/>", name_attr(n, "own", "own_prefix"));
        }
        if !m.own.is_empty() {
            o.push_str("    <allow send_type=\"signal\" send_broadcast=\"true\"/>\n");
        }
        for iface in [
            "org.freedesktop.DBus",
            "org.freedesktop.DBus.Introspectable",
            "org.freedesktop.DBus.Properties",
        ] {
            let _ = writeln!(
                o,
                "    <allow send_destination=\"{DRIVER}\" send_interface=\"{iface}\"/>"
            );
        }
        let _ = writeln!(
            o,
            "    <deny send_destination=\"{DRIVER}\" send_interface=\"org.freedesktop.DBus\" send_member=\"UpdateActivationEnvironment\"/>"
        );
        for iface in [
            "org.freedesktop.DBus.Debug.Stats",
            "org.freedesktop.DBus.Monitoring",
            "org.freedesktop.DBus.Verbose",
            "org.freedesktop.systemd1.Activator",
        ] {
            let _ = writeln!(
                o,
                "    <deny send_destination=\"{DRIVER}\" send_interface=\"{iface}\"/>"
            );
        }
        o.push_str("  </policy>\n");
    }
    o.push_str("</busconfig>\n");
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bn(s: &str) -> BusName {
        BusName::new(s).unwrap()
    }

    fn entry(id: &str, uid: u32, talk: &[&str], own: &[&str]) -> BusPolicyEntry {
        BusPolicyEntry {
            app_id: AppId::new(id).unwrap(),
            uid,
            talk: talk.iter().map(|s| bn(s)).collect(),
            own: own.iter().map(|s| bn(s)).collect(),
        }
    }

    fn section(x: &str, uid: u32) -> &str {
        let start = x.find(&format!("<policy user=\"{uid}\">")).unwrap();
        let end = start + x[start..].find("</policy>").unwrap();
        &x[start..end]
    }

    #[test]
    fn empty_is_a_valid_document() {
        let x = render_bus_policy(&[]);
        assert!(x.starts_with("<?xml"));
        assert!(x.contains("Generated by appmgrd"));
        assert!(x.contains("<busconfig>\n</busconfig>\n"));
    }

    #[test]
    fn deny_first_then_exact_grants() {
        let x = render_bus_policy(&[entry(
            "org.example.App",
            70123,
            &["org.example.Svc", "org.example.Telemetry.*"],
            &["org.example.App", "org.example.App.Sub.*"],
        )]);
        let s = section(&x, 70123);
        let lines: Vec<&str> = s.lines().map(str::trim).collect();
        assert_eq!(lines[1], "<deny send_destination=\"*\"/>");
        assert_eq!(lines[2], "<deny own=\"*\"/>");
        assert!(lines.contains(&"<allow send_destination=\"org.example.Svc\"/>"));
        assert!(lines.contains(&"<allow send_destination_prefix=\"org.example.Telemetry\"/>"));
        assert!(lines.contains(&"<allow own=\"org.example.App\"/>"));
        assert!(lines.contains(&"<allow own_prefix=\"org.example.App.Sub\"/>"));
        assert!(lines.contains(&"<allow send_type=\"signal\" send_broadcast=\"true\"/>"));
        assert!(!s.contains(".*"), "patterns become prefix attributes: {s}");
        // The driver's privileged interfaces stay closed after every allow.
        let last_allow = lines.iter().rposition(|l| l.starts_with("<allow")).unwrap();
        let stats = lines
            .iter()
            .position(|l| l.contains("Debug.Stats"))
            .unwrap();
        assert!(stats > last_allow);
        assert!(x.contains("<!-- org.example.App -->"));
    }

    #[test]
    fn no_grant_means_no_names_and_no_broadcasts() {
        let x = render_bus_policy(&[entry("org.example.Quiet", 70200, &[], &[])]);
        let s = section(&x, 70200);
        assert!(s.contains("<deny send_destination=\"*\"/>"));
        assert!(!s.contains("send_destination=\"org.example"));
        assert!(!s.contains("<allow own"));
        assert!(!s.contains("send_broadcast"));
        // Only the driver is reachable.
        for l in s.lines().filter(|l| l.contains("<allow send_destination")) {
            assert!(
                l.contains("send_destination=\"org.freedesktop.DBus\""),
                "{l}"
            );
        }
    }

    #[test]
    fn sorted_merged_deterministic_and_root_skipped() {
        let a = entry("org.example.B", 70002, &["org.example.X"], &[]);
        let b = entry("org.example.A", 70001, &["org.example.Y"], &[]);
        let c = entry("org.example.C", 70002, &["org.example.W"], &[]);
        let r = entry("org.example.Root", 0, &["org.example.Z"], &[]);
        let x1 = render_bus_policy(&[a.clone(), b.clone(), c.clone(), r.clone()]);
        let x2 = render_bus_policy(&[r, c, b, a]);
        assert_eq!(x1, x2);
        assert!(x1.find("user=\"70001\"").unwrap() < x1.find("user=\"70002\"").unwrap());
        assert_eq!(x1.matches("user=\"70002\"").count(), 1);
        let s = section(&x1, 70002);
        assert!(s.find("org.example.W").unwrap() < s.find("org.example.X").unwrap());
        assert!(!x1.contains("user=\"0\""));
        assert!(!x1.contains("org.example.Z"));
        assert!(x1.contains("org.example.Root: skipped"));
    }

    #[test]
    fn escaping() {
        assert_eq!(xml_escape("a&b<c>\"d'"), "a&amp;b&lt;c&gt;&quot;d&apos;");
        assert_eq!(xml_escape("x\ny"), "x&#xA;y");
        assert!(!comment_text("a--b---c").contains("--"));
        let e = BusPolicyEntry::from_permissions(
            AppId::new("org.example.App").unwrap(),
            70001,
            &Permissions::default(),
        );
        assert!(e.talk.is_empty() && e.own.is_empty());
    }

    #[test]
    fn a_served_portal_opens_exactly_the_portal_name() {
        let id = AppId::new("org.example.App").unwrap();
        let mut p = Permissions::default();
        p.portals
            .insert(appmgr_types::PortalName::new("camera").unwrap());
        // Not served: no bus name is opened for it.
        let e = BusPolicyEntry::from_permissions(id.clone(), 70001, &p);
        assert!(e.talk.is_empty());
        p.portals
            .insert(appmgr_types::PortalName::new("gpu").unwrap());
        p.dbus_talk.insert(bn("org.example.Other"));
        let e = BusPolicyEntry::from_permissions(id, 70001, &p);
        let talk: Vec<&str> = e.talk.iter().map(|b| b.as_str()).collect();
        assert_eq!(talk, ["org.appmgr.Portal1", "org.example.Other"]);
        assert!(e.own.is_empty());
    }
}
