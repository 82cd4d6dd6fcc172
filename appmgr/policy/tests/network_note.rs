//! `appmgr permissions` says what the `network` grant means today: the host's network
//! namespace (docs/sandbox.md, "The network grant").

use appmgr_policy::*;
use appmgr_types::{AppId, Permissions, Resources};

fn text(grant: &str, request: &str) -> String {
    let s = PolicySet::from_sources([(
        "10.toml".to_string(),
        format!("[[rule]]\napps = [\"org.x.App\"]\ngrant = {{ {grant} }}\n").into_bytes(),
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

#[test]
fn network_grant_is_shown_as_the_hosts_network() {
    let t = text("network = true", "network = true");
    let notes: Vec<&str> = t.lines().skip_while(|l| *l != "notes:").skip(1).collect();
    assert_eq!(notes.len(), 1, "{t}");
    let n = notes[0];
    assert!(n.starts_with("  network: the host's own network"), "{t}");
    for what in ["127.0.0.1", "abstract unix sockets", "bind free ports"] {
        assert!(n.contains(what), "{what}: {t}");
    }
    // The permissions section is unchanged: the note is not an item.
    assert!(
        t.contains("permissions:\n  network true  [10.toml rule 1"),
        "{t}"
    );

    // Granted by policy but not requested: not in the grant, no note.
    let t = text("network = true", "");
    assert!(!t.contains("notes:"), "{t}");
    assert!(!t.contains("host's own network"), "{t}");
}
