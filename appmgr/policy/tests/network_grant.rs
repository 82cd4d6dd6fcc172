//! The `network` grant is intersected entry by entry: `network = true` (any egress, DNS
//! included), `network.egress` (by `Egress::covers`), `network.listen`, `network.dns`
//! and `network.talk-to` (by name).

use appmgr_policy::*;
use appmgr_types::{AppId, ErrorClass, NetworkGrant, Permissions, Resources};

fn set(files: &[(&str, &str)]) -> PolicySet {
    PolicySet::from_sources(
        files
            .iter()
            .map(|(n, s)| (n.to_string(), s.as_bytes().to_vec())),
    )
    .unwrap()
}

/// One rule for `org.x.App` granting `grant` (the inside of `network = ...`), with
/// `on-excess` as given.
fn policy(grant: &str, on_excess: &str) -> PolicySet {
    set(&[(
        "10.toml",
        &format!(
            "[[rule]]\napps = [\"org.x.App\"]\ngrant = {{ network = {grant} }}\non-excess = \"{on_excess}\"\n"
        ),
    )])
}

fn eval(s: &PolicySet, network: &str) -> EffectiveGrant {
    let app = AppId::new("org.x.App").unwrap();
    let permissions: Permissions = toml::from_str(&format!("network = {network}")).unwrap();
    let resources = Resources::default();
    s.evaluate(
        &Request {
            app: &app,
            permissions: &permissions,
            resources: &resources,
        },
        &BoardFacts::default(),
    )
    .unwrap()
}

fn grant(toml_value: &str) -> NetworkGrant {
    #[derive(serde::Deserialize)]
    struct W {
        network: NetworkGrant,
    }
    toml::from_str::<W>(&format!("network = {toml_value}"))
        .unwrap()
        .network
}

fn excess(g: &EffectiveGrant) -> Vec<(&'static str, String)> {
    g.excess.iter().map(|e| (e.key, e.value.clone())).collect()
}

fn refusal(g: &EffectiveGrant) -> String {
    let e = g.check().unwrap_err();
    assert_eq!(e.class(), ErrorClass::Policy);
    assert_eq!(e.class().exit_code(), 4);
    e.to_string()
}

#[test]
fn cidr_entries_cover_narrower_networks_on_the_same_port_and_protocol() {
    let s = policy(
        "{ egress = [\"198.51.100.0/24:443\", \"10.0.0.53:53/udp\"] }",
        "drop",
    );
    let g = eval(
        &s,
        "{ egress = [\"198.51.100.7:443\", \"198.51.100.128/25:443\", \"10.0.0.53:53/udp\", \
         \"198.51.0.0/16:443\", \"203.0.113.1:443\", \"198.51.100.7:444\", \
         \"198.51.100.7:443/udp\", \"10.0.0.53:53/tcp\"] }",
    );
    assert_eq!(
        g.permissions.network,
        grant(
            "{ egress = [\"198.51.100.7:443\", \"198.51.100.128/25:443\", \"10.0.0.53:53/udp\"] }"
        )
    );
    assert!(!g.permissions.network.any && !g.permissions.network.dns);
    assert_eq!(
        excess(&g),
        [
            // Another protocol.
            ("network.egress", "10.0.0.53:53/tcp".to_string()),
            // Wider than the policy's network.
            ("network.egress", "198.51.0.0/16:443/tcp".to_string()),
            // Another protocol.
            ("network.egress", "198.51.100.7:443/udp".to_string()),
            // Another port.
            ("network.egress", "198.51.100.7:444/tcp".to_string()),
            // Outside the policy's network.
            ("network.egress", "203.0.113.1:443/tcp".to_string()),
        ]
    );
    assert!(g
        .excess
        .iter()
        .all(|e| e.reason == ExcessReason::NotGranted));
    // Each granted entry names the rule behind it.
    let src = g
        .provenance
        .iter()
        .find(|p| p.key == "network.egress" && p.value == "198.51.100.7:443/tcp")
        .unwrap();
    assert_eq!(src.source.as_ref().unwrap().file, "10.toml");
    assert_eq!(g.dropped().len(), 5);
    assert!(g.check().is_ok(), "dropped, not refused");
}

#[test]
fn names_cover_only_the_same_name_and_never_addresses() {
    let s = policy(
        "{ egress = [\"telematics.example.com:8883/tcp\", \"198.51.100.0/24:443\"] }",
        "refuse",
    );
    let ok = eval(
        &s,
        "{ egress = [\"telematics.example.com:8883\", \"telematics.example.com.:8883/tcp\"] }",
    );
    assert!(ok.excess.is_empty(), "{:?}", ok.excess);
    assert_eq!(
        ok.permissions.network.names().collect::<Vec<_>>(),
        ["telematics.example.com"]
    );
    let g = eval(
        &s,
        "{ egress = [\"other.example.com:8883\", \"www.telematics.example.com:8883\", \
         \"telematics.example.com:443\", \"api.example.net:443\"] }",
    );
    assert!(g.permissions.network.egress.is_empty());
    assert_eq!(excess(&g).len(), 4, "{:?}", g.excess);
    // A name's address is only known at launch; the policy's network does not cover it.
    assert!(excess(&g).contains(&("network.egress", "api.example.net:443/tcp".to_string())));
    // Nor does a policy name cover the address it resolves to today.
    let s = policy("{ egress = [\"telematics.example.com:8883\"] }", "refuse");
    let g = eval(&s, "{ egress = [\"192.0.2.10:8883\"] }");
    assert_eq!(
        excess(&g),
        [("network.egress", "192.0.2.10:8883/tcp".to_string())]
    );
}

#[test]
fn any_covers_egress_and_dns_but_not_listen_or_talk_to() {
    let s = policy("true", "drop");
    let g = eval(
        &s,
        "{ egress = [\"0.0.0.0/0:443\", \"a.example:1/udp\"], dns = true, \
         listen = [\"8080\"], talk-to = [\"org.x.Peer\"] }",
    );
    assert_eq!(
        g.permissions.network,
        grant("{ egress = [\"0.0.0.0/0:443\", \"a.example:1/udp\"], dns = true }")
    );
    assert_eq!(
        excess(&g),
        [
            ("network.listen", "8080/tcp".to_string()),
            ("network.talk-to", "org.x.Peer".to_string()),
        ]
    );
    // And `true` itself.
    let g = eval(&s, "true");
    assert_eq!(g.permissions.network, NetworkGrant::any());
    assert!(g.excess.is_empty());
    let p = g.provenance.iter().find(|p| p.key == "network").unwrap();
    assert_eq!(p.value, "true");
}

#[test]
fn requesting_any_is_excess_under_a_narrowed_policy() {
    let narrowed = "{ egress = [\"0.0.0.0/0:443\"], dns = true }";
    let g = eval(&policy(narrowed, "refuse"), "true");
    assert_eq!(excess(&g), [("network", "true".to_string())]);
    assert_eq!(
        refusal(&g),
        "org.x.App requests network=true beyond what policy grants"
    );
    // Dropped, it does not turn into the policy's list: no network at all.
    let g = eval(&policy(narrowed, "drop"), "true");
    assert!(!g.permissions.network.is_granted());
    assert_eq!(g.dropped().len(), 1);
}

#[test]
fn listen_and_talk_to_match_exactly() {
    let s = policy(
        "{ listen = [\"8080\", \"5353/udp\"], talk-to = [\"org.x.Server\"] }",
        "refuse",
    );
    let g = eval(
        &s,
        "{ listen = [\"8080/tcp\", \"5353/udp\"], talk-to = [\"org.x.Server\"] }",
    );
    assert!(g.excess.is_empty(), "{:?}", g.excess);
    assert_eq!(g.permissions.network.listen.len(), 2);
    let g = eval(
        &s,
        "{ listen = [\"8080/udp\", \"8081\"], talk-to = [\"org.x.Server2\", \"org.x.Server\"] }",
    );
    assert_eq!(
        excess(&g),
        [
            ("network.listen", "8080/udp".to_string()),
            ("network.listen", "8081/tcp".to_string()),
            ("network.talk-to", "org.x.Server2".to_string()),
        ]
    );
    assert_eq!(
        refusal(&g),
        "org.x.App requests network.listen=[8080/udp, 8081/tcp] and \
         network.talk-to=[org.x.Server2] beyond what policy grants"
    );
    // DNS is granted by `dns = true` (or `true`) only.
    let g = eval(&s, "{ dns = true }");
    assert_eq!(excess(&g), [("network.dns", "true".to_string())]);
    assert_eq!(
        refusal(&g),
        "org.x.App requests network.dns=true beyond what policy grants"
    );
}

#[test]
fn on_excess_refuse_names_the_entries_and_drop_keeps_the_rest() {
    let grant_ = "{ egress = [\"198.51.100.0/24:443\"], dns = true }";
    let request = "{ egress = [\"198.51.100.9:443\", \"203.0.113.5:443\"], dns = true }";
    let g = eval(&policy(grant_, "refuse"), request);
    assert_eq!(
        refusal(&g),
        "org.x.App requests network.egress=[203.0.113.5:443/tcp] beyond what policy grants"
    );
    let json = serde_json::to_value(&g).unwrap();
    assert_eq!(json["excess"][0]["key"], "network.egress", "{json}");
    assert_eq!(json["excess"][0]["value"], "203.0.113.5:443/tcp", "{json}");
    assert_eq!(json["excess"][0]["reason"], "not-granted", "{json}");
    assert!(g.dropped().is_empty());

    let g = eval(&policy(grant_, "drop"), request);
    assert!(g.check().is_ok());
    assert_eq!(
        g.permissions.network,
        grant("{ egress = [\"198.51.100.9:443\"], dns = true }")
    );
    assert_eq!(g.dropped().len(), 1);
    assert_eq!(g.dropped()[0].value, "203.0.113.5:443/tcp");
    // What the launch plan gets serializes back to the manifest form.
    let json = serde_json::to_value(&g).unwrap();
    assert_eq!(
        json["permissions"]["network"],
        serde_json::json!({ "egress": ["198.51.100.9:443/tcp"], "dns": true }),
        "{json}"
    );
}

#[test]
fn entries_union_across_rules() {
    let s = set(&[
        (
            "10.toml",
            "[[rule]]\napps = [\"org.x.*\"]\ngrant = { network = { egress = [\"10.0.0.0/8:443\"] } }\n",
        ),
        (
            "20.toml",
            "[[rule]]\napps = [\"org.x.App\"]\ngrant = { network = { dns = true, listen = [\"80\"] } }\n",
        ),
    ]);
    let g = eval(
        &s,
        "{ egress = [\"10.1.1.1:443\"], dns = true, listen = [\"80\"] }",
    );
    assert!(g.check().is_ok());
    let file = |k: &str| {
        g.provenance
            .iter()
            .find(|p| p.key == k)
            .unwrap()
            .source
            .as_ref()
            .unwrap()
            .file
            .clone()
    };
    assert_eq!(file("network.egress"), "10.toml");
    assert_eq!(file("network.dns"), "20.toml");
    assert_eq!(file("network.listen"), "20.toml");
}

#[test]
fn denials_overlap() {
    let deny = |deny: &str| {
        set(&[(
            "10.toml",
            &format!(
                "[[rule]]\napps = [\"org.x.App\"]\ngrant = {{ network = true }}\n\
                 deny = {{ network = {deny} }}\non-excess = \"drop\"\n\n\
                 [[rule]]\napps = [\"org.x.App\"]\ngrant = {{ network = {{ listen = [\"80\"], talk-to = [\"org.x.Peer\"] }} }}\n"
            ),
        )])
    };
    let full = "{ egress = [\"198.51.100.7:443\", \"203.0.113.0/24:443\"], dns = true, \
                listen = [\"80\"], talk-to = [\"org.x.Peer\"] }";

    // Denying `network = true` denies the network altogether.
    let s = deny("true");
    for request in [full, "true"] {
        let g = eval(&s, request);
        assert!(!g.permissions.network.is_granted(), "{request}");
        assert!(g
            .excess
            .iter()
            .all(|e| matches!(e.reason, ExcessReason::Denied { .. })));
    }

    // A denied network overlaps a wider or narrower request, and `true` reaches it.
    let s = deny("{ egress = [\"203.0.113.128/25:443\"] }");
    let g = eval(&s, full);
    assert_eq!(
        excess(&g),
        [("network.egress", "203.0.113.0/24:443/tcp".to_string())]
    );
    assert!(g.permissions.network.dns && g.permissions.network.listen.len() == 1);
    let g = eval(
        &s,
        "{ egress = [\"203.0.113.200:443\", \"203.0.113.200:80\"] }",
    );
    assert_eq!(
        excess(&g),
        [("network.egress", "203.0.113.200:443/tcp".to_string())],
        "other ports are not denied"
    );
    assert_eq!(excess(&eval(&s, "true")), [("network", "true".to_string())]);

    // Denying DNS: the entry and `true` (which includes it).
    let s = deny("{ dns = true }");
    assert_eq!(
        excess(&eval(&s, full)),
        [("network.dns", "true".to_string())]
    );
    assert_eq!(excess(&eval(&s, "true")), [("network", "true".to_string())]);

    // Listen and talk-to by name.
    let s = deny("{ listen = [\"80\"], talk-to = [\"org.x.Peer\"] }");
    assert_eq!(
        excess(&eval(&s, full)),
        [
            ("network.listen", "80/tcp".to_string()),
            ("network.talk-to", "org.x.Peer".to_string()),
        ]
    );
    assert!(eval(&s, "true").excess.is_empty());
}

#[test]
fn a_bad_entry_in_a_policy_file_names_file_line_and_value() {
    let e = PolicySet::from_sources([(
        "50-net.toml".to_string(),
        b"# egress allowlist\n[[rule]]\napps = [\"org.x.App\"]\n\n[rule.grant.network]\negress = [\n  \"198.51.100.0/24:443\",\n  \"backend.example.com\",\n]\n"
            .to_vec(),
    )])
    .unwrap_err();
    let msg = e.to_string();
    assert!(msg.starts_with("50-net.toml:8:"), "{msg}");
    assert!(msg.contains("key `egress`"), "{msg}");
    assert!(msg.contains("\"backend.example.com\""), "{msg}");
    assert!(msg.contains("the port is required"), "{msg}");
    assert_eq!(e.class(), ErrorClass::Policy);
}
