//! `appmgr permissions` says what a `network` grant means: the app's own network
//! namespace behind a veth pair and NAT, and what this grant reaches from it
//! (docs/sandbox.md, "The network grant").

use appmgr_policy::*;
use appmgr_types::{AppId, Permissions, Resources};

fn text_with(grant: &str, request: &str, extra: &str) -> String {
    let s = PolicySet::from_sources([(
        "10.toml".to_string(),
        format!("[[rule]]\napps = [\"org.x.App\"]\ngrant = {{ {grant} }}\n{extra}").into_bytes(),
    )])
    .unwrap();
    let app = AppId::new("org.x.App").unwrap();
    let permissions: Permissions = toml::from_str(request).unwrap();
    let resources = Resources::default();
    let r = Request {
        app: &app,
        permissions: &permissions,
        resources: &resources,
    };
    s.evaluate(&r, &BoardFacts::default())
        .unwrap()
        .render_text(&[])
}

fn text(grant: &str, request: &str) -> String {
    text_with(grant, request, "")
}

fn notes(t: &str) -> Vec<&str> {
    t.lines()
        .skip_while(|l| *l != "notes:")
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .collect()
}

fn assert_namespace_note(n: &str, t: &str) {
    assert!(n.starts_with("  network: its own network namespace"), "{t}");
    for what in [
        "veth pair",
        "NAT",
        "loopback",
        "abstract unix sockets",
        "other apps are unreachable",
    ] {
        assert!(n.contains(what), "{what}: {t}");
    }
    for old in ["host's own network", "127.0.0.1", "bind free ports"] {
        assert!(!n.contains(old), "{old}: {t}");
    }
}

#[test]
fn any_network_is_its_own_namespace_with_any_egress() {
    let t = text("network = true", "network = true");
    let n = notes(&t);
    assert_eq!(n.len(), 2, "{t}");
    assert_namespace_note(n[0], &t);
    assert_eq!(
        n[1], "  network: any egress (network = true), DNS included",
        "{t}"
    );
    // The permissions section is unchanged: the notes are not items.
    assert!(
        t.contains("permissions:\n  network true  [10.toml rule 1"),
        "{t}"
    );

    // Granted by policy but not requested: not in the grant, no note.
    let t = text("network = true", "");
    assert!(!t.contains("notes:"), "{t}");
    assert!(!t.contains("network namespace"), "{t}");
}

#[test]
fn a_narrowed_grant_says_only_the_listed_destinations() {
    let t = text(
        "network = { egress = [\"198.51.100.0/24:443\", \"telematics.example.com:8883/tcp\"], listen = [\"8080\"], dns = true, talk-to = [\"org.x.Peer\"] }",
        "network = { egress = [\"198.51.100.7:443\", \"telematics.example.com:8883\"], listen = [\"8080/tcp\"], dns = true, talk-to = [\"org.x.Peer\"] }",
    );
    let n = notes(&t);
    assert_eq!(n.len(), 2, "{t}");
    assert_namespace_note(n[0], &t);
    for what in [
        "egress only to the listed destinations",
        "resolved by appmgr at launch",
        "/etc/hosts",
        "DNS through the host's name servers",
        "inbound only on the listed ports of its own address",
        "only when their own grant names this app back",
    ] {
        assert!(n[1].contains(what), "{what}: {t}");
    }
    assert!(!n[1].contains("any egress"), "{t}");
    // Each entry is an item of its own, with its rule.
    for line in [
        "  network.egress 198.51.100.7:443/tcp  [10.toml rule 1 (line 1)]",
        "  network.egress telematics.example.com:8883/tcp  [10.toml rule 1 (line 1)]",
        "  network.listen 8080/tcp  [10.toml rule 1 (line 1)]",
        "  network.dns true  [10.toml rule 1 (line 1)]",
        "  network.talk-to org.x.Peer  [10.toml rule 1 (line 1)]",
    ] {
        assert!(t.contains(&format!("{line}\n")), "{line}: {t}");
    }

    // Without dns: said so.
    let t = text(
        "network = { egress = [\"198.51.100.0/24:443\"] }",
        "network = { egress = [\"198.51.100.1:443\"] }",
    );
    let n = notes(&t);
    assert_eq!(
        n[1],
        "  network: egress only to the listed destinations (names resolved by appmgr at \
         launch and written to the app's /etc/hosts); no DNS",
        "{t}"
    );
}

#[test]
fn no_note_when_everything_network_is_dropped() {
    // The app asks for any network; the policy only grants a list: the request is
    // excess, and dropped it leaves no network grant and no note.
    let t = text_with(
        "network = { egress = [\"198.51.100.0/24:443\"], dns = true }",
        "network = true",
        "on-excess = \"drop\"\n",
    );
    assert!(!t.contains("notes:"), "{t}");
    assert!(
        t.contains("dropped (on-excess = \"drop\"):\n  network true\n"),
        "{t}"
    );
}
