//! Per-app networks: every app with a `network` grant runs in its own network namespace,
//! joined to the host by a veth pair and NATed; nftables rules keyed on the host end of
//! the pair allow exactly what the grant says (docs/network.md).
//!
//! ```text
//!   host netns                                   app netns (/run/netns/appmgr-UID)
//!   am-UID  POOL+4·slot+1/30  ◄── veth ──►  eth0  POOL+4·slot+2/30, default via +1
//!   table inet appmgr: base chains dispatch by am-UID (and, for NAT, the app's address)
//!   through verdict maps to the app's chains aUID_from/to/in/out/nat
//! ```
//!
//! **Plan** ([`NetSpec`] + the grant → [`NetPlan`]) is pure. **Apply** runs in the
//! single-threaded launcher (or appmgrd for cleanup), in-process: the named namespace as
//! `ip netns add` makes it, the pair with one `RTM_NEWLINK` request, the host end by ioctl,
//! the app's chains in the shared table in one nft JSON transaction (libnftables, or the
//! `nft` program); init joins the namespace by descriptor and configures `eth0` by ioctl.
//! The namespace is made before init exists ([`setup`]), the rest while init builds the
//! root ([`connect`]); the app starts after both. A per-app lock file, held
//! by init for the app's life, tells a live network from a stale one: set-up removes the
//! stale leftovers of its app first, [`remove_stale`] all of them (appmgrd at start).

use appmgr_types::{AppId, EgressHost, Ipv4Net, Listen, NetworkGrant, Proto};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::io::{self, Write};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The default address pool; each app gets the `/30` at its slot.
pub const DEFAULT_POOL: &str = "10.233.0.0/16";
/// The nft table of [`guard_ruleset`].
pub const GUARD_TABLE: &str = "appmgr-forward-guard";
const IP_FORWARD: &str = "/proc/sys/net/ipv4/ip_forward";
/// Where `ip netns` keeps named namespaces.
pub const NETNS_DIR: &str = "/run/netns";
/// Lock files of live app networks (held by each sandbox's init).
pub const LOCK_DIR: &str = "/run/appmgr/net";
/// Prefix of every name appmgr creates (namespace, nft table); the host interface is
/// `am-UID`.
pub const NAME_PREFIX: &str = "appmgr-";
/// The app's interface inside its namespace.
pub const APP_IF: &str = "eth0";
/// Dropped connection attempts are logged at most this often per app (kernel log, thus
/// the journal), after a burst of 5.
pub const LOG_RATE_PER_MINUTE: u32 = 6;

/// What the caller resolved for one launch: the app's slot in the pool, the addresses of
/// the names in its grant, the host's name servers, and the peers that grant `talk-to`
/// back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct NetSpec {
    pub pool: Ipv4Net,
    pub slot: u32,
    /// Every name of the grant's egress entries; an empty list when it did not resolve.
    #[serde(default)]
    pub resolved: BTreeMap<String, Vec<Ipv4Addr>>,
    /// Seconds until each name is looked up again (its answer's TTL, see
    /// [`crate::netnames`]); a name without one is looked up again after
    /// [`crate::netnames::RETRY`].
    #[serde(default)]
    pub refresh: BTreeMap<String, u64>,
    /// The name servers appmgr asks (`network-resolvers`); empty: the host's.
    #[serde(default)]
    pub resolvers: Vec<SocketAddrV4>,
    /// The host's name servers (`/etc/resolv.conf`), for `dns`.
    #[serde(default)]
    pub nameservers: Vec<Ipv4Addr>,
    /// Apps whose grant names this one in `talk-to` as this one's names them, with their
    /// slots.
    #[serde(default)]
    pub peers: Vec<NetPeer>,
    /// `network-mode = "routed"`: no NAT; the app's traffic keeps its own address and the
    /// network must route the pool to this host.
    #[serde(default)]
    pub routed: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct NetPeer {
    pub app: AppId,
    pub uid: u32,
    pub slot: u32,
}

/// One allowed destination (a resolved egress entry, a name server, a peer).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Dest {
    pub net: Ipv4Net,
    pub proto: Proto,
    pub port: u16,
}

/// An egress entry by name: allowed to the addresses in the nft set `set` (one per name),
/// which appmgr keeps equal to the name's current answer ([`Refresher`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct NameRule {
    pub name: String,
    pub set: String,
    pub proto: Proto,
    pub port: u16,
}

/// A peer app: its host interface and address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct PeerIf {
    pub app: AppId,
    pub host_if: String,
    pub addr: Ipv4Addr,
}

/// Everything the launcher applies for the app's network.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct NetPlan {
    /// Namespace name (`/run/netns/NAME`) and nft table name: `appmgr-UID`.
    pub name: String,
    /// The host end of the pair: `am-UID`.
    pub host_if: String,
    pub host_addr: Ipv4Addr,
    pub app_addr: Ipv4Addr,
    pub pool: Ipv4Net,
    /// `network = true`: anything outside the pool.
    pub any: bool,
    /// No NAT ([`NetSpec::routed`]).
    #[serde(default)]
    pub routed: bool,
    /// Destinations by address (entries by address, name servers).
    pub egress: Vec<Dest>,
    /// Destinations by name.
    #[serde(default)]
    pub names: Vec<NameRule>,
    /// Each name's addresses at launch, and seconds until it is looked up again.
    #[serde(default)]
    pub name_addrs: BTreeMap<String, Vec<Ipv4Addr>>,
    #[serde(default)]
    pub name_refresh: BTreeMap<String, u64>,
    /// The name servers the refresh asks; empty: the host's.
    #[serde(default)]
    pub resolvers: Vec<SocketAddrV4>,
    /// The app's `/etc/hosts` above the names' lines: with names, the file lives in the
    /// network's names directory ([`names_dir`]) and is rewritten when an answer changes.
    #[serde(default)]
    pub hosts_head: String,
    pub listen: Vec<Listen>,
    pub peers: Vec<PeerIf>,
    /// The prefix of the kernel log line of a dropped attempt.
    pub log_prefix: String,
}

/// Why a network cannot be planned.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NetPlanError {
    #[error("network pool {pool} has no slot {slot} (widen network-pool in appmgr.toml)")]
    PoolExhausted { pool: Ipv4Net, slot: u32 },
}

/// The host address, app address of `slot` in `pool`.
pub fn slot_addrs(pool: Ipv4Net, slot: u32) -> Result<(Ipv4Addr, Ipv4Addr), NetPlanError> {
    let size: u64 = 1u64 << (32 - u32::from(pool.prefix()));
    let base = u64::from(slot) * 4;
    if pool.prefix() > 30 || base + 3 >= size {
        return Err(NetPlanError::PoolExhausted { pool, slot });
    }
    let b = u32::from(pool.addr()) + base as u32;
    Ok((Ipv4Addr::from(b + 1), Ipv4Addr::from(b + 2)))
}

/// The host interface of the app with `uid`.
pub fn host_if(uid: u32) -> String {
    format!("am-{uid}")
}

/// Plans the network of the app `app` (uid `uid`) for `grant`. The grant's names that
/// did not resolve and `dns` without name servers contribute nothing (see
/// [`crate::provisions`]).
pub fn plan(
    app: &AppId,
    uid: u32,
    grant: &NetworkGrant,
    spec: &NetSpec,
) -> Result<NetPlan, NetPlanError> {
    let (host_addr, app_addr) = slot_addrs(spec.pool, spec.slot)?;
    let mut egress = Vec::new();
    let mut names = Vec::new();
    let mut name_addrs = BTreeMap::new();
    let mut name_refresh = BTreeMap::new();
    for e in &grant.egress {
        match &e.host {
            EgressHost::Net(net) => egress.push(Dest {
                net: *net,
                proto: e.proto,
                port: e.port,
            }),
            EgressHost::Name(n) => {
                let name = n.as_str().to_string();
                // One set per name, shared by its entries (ports, protocols).
                let set = match names.iter().find(|r: &&NameRule| r.name == name) {
                    Some(r) => r.set.clone(),
                    None => format!(
                        "{}name_{}",
                        object_prefix(&format!("{NAME_PREFIX}{uid}")),
                        name_addrs.len()
                    ),
                };
                if !name_addrs.contains_key(&name) {
                    let addrs = spec.resolved.get(&name).cloned().unwrap_or_default();
                    name_addrs.insert(name.clone(), name_targets(spec.pool, addrs));
                    name_refresh.insert(
                        name.clone(),
                        spec.refresh
                            .get(&name)
                            .copied()
                            .unwrap_or(crate::netnames::RETRY.as_secs()),
                    );
                }
                names.push(NameRule {
                    name,
                    set,
                    proto: e.proto,
                    port: e.port,
                });
            }
        }
    }
    if grant.dns && !grant.any {
        for ns in &spec.nameservers {
            for proto in [Proto::Udp, Proto::Tcp] {
                egress.push(Dest {
                    net: Ipv4Net::host(*ns),
                    proto,
                    port: 53,
                });
            }
        }
    }
    let mut peers = Vec::new();
    for p in &spec.peers {
        if !grant.talk_to.contains(&p.app) {
            continue;
        }
        let (_, addr) = slot_addrs(spec.pool, p.slot)?;
        peers.push(PeerIf {
            app: p.app.clone(),
            host_if: host_if(p.uid),
            addr,
        });
    }
    let mut id = app.as_str().to_string();
    id.truncate(96);
    Ok(NetPlan {
        name: format!("{NAME_PREFIX}{uid}"),
        host_if: host_if(uid),
        host_addr,
        app_addr,
        pool: spec.pool,
        any: grant.any,
        egress,
        names,
        name_addrs,
        name_refresh,
        resolvers: spec.resolvers.clone(),
        hosts_head: String::new(),
        listen: grant.listen.iter().copied().collect(),
        peers,
        log_prefix: format!("appmgr drop {id}: "),
        routed: spec.routed,
    })
}

/// The app's `/etc/hosts` with its names at `addrs`: the app resolves them through this
/// file, never through DNS.
pub fn hosts_file(head: &str, addrs: &BTreeMap<String, Vec<Ipv4Addr>>) -> String {
    let mut s = head.to_string();
    for (name, v) in addrs {
        for a in v {
            s.push_str(&format!("{a}\t{name}\n"));
        }
    }
    s
}

/// The directory of the app network `name` that holds the app's `/etc/hosts` (bound
/// read-only at [`SANDBOX_NAMES_DIR`]), when its grant has names.
pub fn names_dir(name: &str) -> PathBuf {
    Path::new(LOCK_DIR).join(format!("{name}.d"))
}

/// Where the app sees [`names_dir`]; its `/etc/hosts` links to `hosts` in it.
pub const SANDBOX_NAMES_DIR: &str = "/run/appmgr/net";

fn meta(key: &str, op: &str, right: Value) -> Value {
    json!({"match": {"op": op, "left": {"meta": {"key": key}}, "right": right}})
}

fn ip_field(field: &str, op: &str, net: &Ipv4Net) -> Value {
    let right = if net.prefix() == 32 {
        json!(net.addr().to_string())
    } else {
        json!({"prefix": {"addr": net.addr().to_string(), "len": net.prefix()}})
    };
    json!({"match": {"op": op, "left": {"payload": {"protocol": "ip", "field": field}}, "right": right}})
}

fn l4(proto: Proto, port: u16) -> [Value; 2] {
    [
        meta("l4proto", "==", json!(proto.as_str())),
        json!({"match": {"op": "==", "left": {"payload": {"protocol": "th", "field": "dport"}}, "right": port}}),
    ]
}

fn ct_state(states: &[&str]) -> Value {
    json!({"match": {"op": "in", "left": {"ct": {"key": "state"}}, "right": states}})
}

/// The table all app networks share: base chains that dispatch by interface (or, for
/// NAT, by source address) to each app's own regular chains. Created once (after boot, or
/// after someone flushed the ruleset); an app's network is then a handful of regular
/// chains and map elements, which the kernel adds in a fraction of a millisecond, where a
/// table of its own with base chains cost every launch about 6 ms of hook registration.
pub const TABLE: &str = "appmgr";

/// The prefix of app `name`'s (`appmgr-UID`) objects in [`TABLE`]: `aUID_`.
pub fn object_prefix(name: &str) -> String {
    format!("a{}_", name.strip_prefix(NAME_PREFIX).unwrap_or(name))
}

/// The maps of [`TABLE`]: name, key type, the base chain and the statement that consults it.
const DISPATCH: [(&str, &str, &str, &str); 5] = [
    ("from_app", "ifname", "forward", "iifname"),
    ("to_app", "ifname", "forward", "oifname"),
    ("in_from_app", "ifname", "input", "iifname"),
    ("out_to_app", "ifname", "output", "oifname"),
    ("nat_from", "ipv4_addr", "postrouting", "saddr"),
];

/// A regular chain of [`TABLE`] that nothing jumps to, holding one rule that matches on
/// connection-tracking state, for as long as the table exists.
///
/// Every app's chains match on that state too. The kernel turns connection tracking on
/// for the host's namespace when the first such rule arrives and off when the last one
/// goes, and turning it on walks every bucket of the connection table, once for IPv4 and
/// once for IPv6 (262144 buckets on the development VM: about 1 ms of CPU). Without this
/// chain every launch of the only networked app paid that walk, and its removal the
/// unhooking. Its cost: the host's own connections are tracked while the table exists, as
/// they were while any networked app ran.
pub const TRACKING_CHAIN: &str = "keep_tracking";

/// The transaction that creates [`TABLE`] with its base chains, maps and dispatch rules,
/// and [`TRACKING_CHAIN`]. Run only when an app's transaction failed for want of them:
/// rerunning it flushes and refills the chains (about 20 ms), which an app's launch should
/// not pay.
pub fn base_ruleset() -> Value {
    let t = TABLE;
    let mut cmds: Vec<Value> = vec![json!({"add": {"table": {"family": "inet", "name": t}}})];
    // The tracking rule is replaced within one transaction (the new one holds tracking
    // before the old one lets go), so tracking never goes off on a rerun.
    cmds.push(json!({"add": {"chain": {"family": "inet", "table": t, "name": TRACKING_CHAIN}}}));
    cmds.push(json!({"flush": {"chain": {"family": "inet", "table": t, "name": TRACKING_CHAIN}}}));
    cmds.push(
        json!({"add": {"rule": {"family": "inet", "table": t, "chain": TRACKING_CHAIN,
        "expr": [ct_state(&["established"])]}}}),
    );
    for (name, key, _, _) in DISPATCH {
        cmds.push(
            json!({"add": {"map": {"family": "inet", "table": t, "name": name,
            "type": key, "map": "verdict"}}}),
        );
    }
    for (chain, ty, prio) in [
        ("forward", "filter", -5),
        ("input", "filter", -5),
        ("output", "filter", -5),
        ("postrouting", "nat", 100),
    ] {
        cmds.push(
            json!({"add": {"chain": {"family": "inet", "table": t, "name": chain,
            "type": ty, "hook": chain, "prio": prio, "policy": "accept"}}}),
        );
        cmds.push(json!({"flush": {"chain": {"family": "inet", "table": t, "name": chain}}}));
    }
    for (map, _, chain, key) in DISPATCH {
        let left = if key == "saddr" {
            json!({"payload": {"protocol": "ip", "field": "saddr"}})
        } else {
            json!({"meta": {"key": key}})
        };
        cmds.push(
            json!({"add": {"rule": {"family": "inet", "table": t, "chain": chain,
            "expr": [{"vmap": {"key": left, "data": format!("@{map}")}}]}}}),
        );
    }
    json!({ "nftables": cmds })
}

/// The nft JSON transaction that adds the app's chains to [`TABLE`] and points the
/// dispatch maps at them. Allowed traffic `return`s to the base chain, so traffic between
/// two apps passes the sender's chain and then the receiver's, as two tables would.
pub fn ruleset(p: &NetPlan) -> Value {
    let t = TABLE;
    let pre = object_prefix(&p.name);
    let h = p.host_if.as_str();
    let c = |n: &str| format!("{pre}{n}");
    let limit = c("log");
    let mut cmds: Vec<Value> = Vec::new();
    // One budget for the log lines of the app's refused attempts, whichever chain refuses.
    cmds.push(
        json!({"add": {"limit": {"family": "inet", "table": t, "name": limit,
        "rate": LOG_RATE_PER_MINUTE, "per": "minute", "burst": 5}}}),
    );
    // One set per name, holding its current addresses ([`Refresher`] replaces them).
    for (name, set) in name_sets(p) {
        cmds.push(
            json!({"add": {"set": {"family": "inet", "table": t, "name": set,
            "type": "ipv4_addr"}}}),
        );
        if let Some(el) = set_elements(t, set, p.name_addrs.get(name)) {
            cmds.push(json!({ "add": el }));
        }
    }
    let mut chains = vec!["from", "to", "in", "out"];
    if !p.routed {
        chains.push("nat");
    }
    for ch in &chains {
        cmds.push(json!({"add": {"chain": {"family": "inet", "table": t, "name": c(ch)}}}));
    }
    let mut rule = |chain: &str, expr: Vec<Value>| {
        cmds.push(
            json!({"add": {"rule": {"family": "inet", "table": t, "chain": c(chain), "expr": expr}}}),
        );
    };
    let ok = || json!({"return": null});
    let drop = || json!({"drop": null});
    // The app learns at once that a destination is not granted (EHOSTUNREACH), rather
    // than waiting for a timeout.
    let reject = || json!({"reject": {"type": "icmpx", "expr": "admin-prohibited"}});
    let est = || ct_state(&["established", "related"]);
    let log = || {
        [
            ct_state(&["new"]),
            json!({"limit": limit}),
            json!({"log": {"prefix": p.log_prefix, "level": "warn"}}),
        ]
    };

    // from: the app's own traffic through the host (forward, iifname am-UID).
    rule("from", vec![est(), ok()]);
    if p.any {
        rule("from", vec![ip_field("daddr", "!=", &p.pool), ok()]);
    }
    for d in &p.egress {
        let [a, b] = l4(d.proto, d.port);
        rule("from", vec![ip_field("daddr", "==", &d.net), a, b, ok()]);
    }
    for r in &p.names {
        let [a, b] = l4(r.proto, r.port);
        let daddr = json!({"match": {"op": "==",
            "left": {"payload": {"protocol": "ip", "field": "daddr"}},
            "right": format!("@{}", r.set)}});
        rule("from", vec![daddr, a, b, ok()]);
    }
    for peer in &p.peers {
        rule(
            "from",
            vec![meta("oifname", "==", json!(peer.host_if)), ok()],
        );
    }
    rule("from", log().to_vec());
    rule("from", vec![reject()]);
    // to: traffic forwarded to the app (oifname am-UID).
    rule("to", vec![est(), ok()]);
    for peer in &p.peers {
        rule("to", vec![meta("iifname", "==", json!(peer.host_if)), ok()]);
    }
    for l in &p.listen {
        let [a, b] = l4(l.proto, l.port);
        let me = ip_field("daddr", "==", &Ipv4Net::host(p.app_addr));
        rule("to", vec![me, a, b, ok()]);
    }
    rule("to", vec![drop()]);
    // in: nothing of the host itself (its addresses, its loopback through them).
    rule("in", vec![est(), ok()]);
    rule("in", log().to_vec());
    rule("in", vec![reject()]);
    // out: the host reaches the app only on its listen ports.
    rule("out", vec![est(), ok()]);
    for l in &p.listen {
        let [a, b] = l4(l.proto, l.port);
        rule("out", vec![a, b, ok()]);
    }
    rule("out", vec![drop()]);
    // nat: leaving the pool, the app's traffic takes the host's address (unless the
    // network routes the pool to this host).
    if !p.routed {
        rule(
            "nat",
            vec![
                ip_field("daddr", "!=", &p.pool),
                json!({"masquerade": null}),
            ],
        );
    }
    // Last: the dispatch to the chains, now complete.
    let mut elem = |map: &str, key: Value, chain: &str| {
        cmds.push(
            json!({"add": {"element": {"family": "inet", "table": t, "name": map,
            "elem": [[key, {"jump": {"target": c(chain)}}]]}}}),
        );
    };
    elem("from_app", json!(h), "from");
    elem("to_app", json!(h), "to");
    elem("in_from_app", json!(h), "in");
    elem("out_to_app", json!(h), "out");
    if !p.routed {
        elem("nat_from", json!(p.app_addr.to_string()), "nat");
    }
    json!({ "nftables": cmds })
}

/// The transaction that removes what [`TABLE`] holds of app `name` (as listed in
/// `listing`, the JSON of `nft -j list table inet appmgr`): its map elements first, then
/// its chains, sets and limit. `None`: nothing of it is there.
fn removal(name: &str, host_if: &str, listing: &Value) -> Option<Value> {
    let t = TABLE;
    let pre = object_prefix(name);
    let mut elems = Vec::new();
    let (mut chains, mut sets, mut limits) = (Vec::new(), Vec::new(), Vec::new());
    for item in listing["nftables"].as_array().into_iter().flatten() {
        if let Some(m) = item.get("map") {
            let map = m["name"].as_str().unwrap_or_default();
            for e in m["elem"].as_array().into_iter().flatten() {
                // [key, verdict]: the app's when the verdict jumps to one of its chains.
                let target = e[1]["jump"]["target"].as_str().unwrap_or_default();
                if target.starts_with(&pre) || e[0] == json!(host_if) {
                    elems.push(json!({"delete": {"element": {"family": "inet", "table": t,
                        "name": map, "elem": [e[0].clone()]}}}));
                }
            }
        }
        for (kind, into) in [
            ("chain", &mut chains),
            ("set", &mut sets),
            ("limit", &mut limits),
        ] {
            if let Some(n) = item[kind]["name"].as_str().filter(|n| n.starts_with(&pre)) {
                into.push((kind, n.to_string()));
            }
        }
    }
    if elems.is_empty() && chains.is_empty() && sets.is_empty() && limits.is_empty() {
        return None;
    }
    let mut cmds = elems;
    for (_, n) in &chains {
        cmds.push(json!({"flush": {"chain": {"family": "inet", "table": t, "name": n}}}));
    }
    for (kind, n) in chains.iter().chain(&sets).chain(&limits) {
        cmds.push(json!({"delete": {*kind: {"family": "inet", "table": t, "name": n}}}));
    }
    Some(json!({ "nftables": cmds }))
}

/// The transaction that undoes [`ruleset`]`(p)`: what a launch loaded, removed without
/// listing the table first (listing runs `nft`, about 12 ms). It fails as a whole when
/// anything of it is missing; [`removal`] of a listing then removes what is there.
fn planned_removal(p: &NetPlan) -> Value {
    let mut elems = Vec::new();
    let (mut chains, mut others) = (Vec::new(), Vec::new());
    for cmd in ruleset(p)["nftables"].as_array().into_iter().flatten() {
        let add = &cmd["add"];
        if let Some(e) = add.get("element") {
            // Dispatch map entries ([key, verdict]); a name set's addresses go with it.
            if let Some(key) = e["elem"][0].as_array().and_then(|kv| kv.first()) {
                elems.push(
                    json!({"delete": {"element": {"family": "inet", "table": TABLE,
                    "name": e["name"], "elem": [key]}}}),
                );
            }
        } else if let Some(c) = add.get("chain") {
            chains.push(c["name"].clone());
        } else if let Some((kind, o)) = ["set", "limit"]
            .iter()
            .find_map(|k| add.get(*k).map(|o| (*k, o)))
        {
            others.push((kind, o["name"].clone()));
        }
    }
    let mut cmds = elems;
    for n in &chains {
        cmds.push(json!({"flush": {"chain": {"family": "inet", "table": TABLE, "name": n}}}));
    }
    for n in &chains {
        cmds.push(json!({"delete": {"chain": {"family": "inet", "table": TABLE, "name": n}}}));
    }
    for (kind, n) in others {
        cmds.push(json!({"delete": {kind: {"family": "inet", "table": TABLE, "name": n}}}));
    }
    json!({ "nftables": cmds })
}

/// The uids whose objects [`TABLE`] holds (from `nft -j list table inet appmgr`).
fn uids_in(listing: &Value) -> Vec<u32> {
    let mut v: Vec<u32> = listing["nftables"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|item| item["chain"]["name"].as_str())
        .filter_map(|n| n.strip_prefix('a')?.split_once('_')?.0.parse().ok())
        .collect();
    v.sort();
    v.dedup();
    v
}

/// The addresses of a name's answer that may become destinations: not the pool (other
/// apps are reached only through mutual `talk-to`, whatever a name server says), not
/// loopback, unspecified, multicast or broadcast addresses.
pub fn name_targets(pool: Ipv4Net, addrs: Vec<Ipv4Addr>) -> Vec<Ipv4Addr> {
    addrs
        .into_iter()
        .filter(|a| {
            !pool.contains_addr(*a)
                && !a.is_loopback()
                && !a.is_unspecified()
                && !a.is_multicast()
                && !a.is_broadcast()
        })
        .collect()
}

/// Each name of the plan with its set, once.
fn name_sets(p: &NetPlan) -> Vec<(&str, &str)> {
    let mut v: Vec<(&str, &str)> = p
        .names
        .iter()
        .map(|r| (r.name.as_str(), r.set.as_str()))
        .collect();
    v.sort();
    v.dedup();
    v
}

/// The `element` object that puts `addrs` into set `set` of table `table` (none for no
/// addresses: nft refuses an empty list).
fn set_elements(table: &str, set: &str, addrs: Option<&Vec<Ipv4Addr>>) -> Option<Value> {
    let addrs = addrs.filter(|a| !a.is_empty())?;
    let elem: Vec<String> = addrs.iter().map(|a| a.to_string()).collect();
    Some(json!({"element": {"family": "inet", "table": table, "name": set, "elem": elem}}))
}

/// The table that keeps a host which did not forward from forwarding anything but the
/// apps' traffic, once appmgr turned IPv4 forwarding on for them ([`GUARD_TABLE`]).
pub fn guard_ruleset() -> Value {
    let t = GUARD_TABLE;
    json!({"nftables": [
        {"add": {"table": {"family": "inet", "name": t}}},
        {"delete": {"table": {"family": "inet", "name": t}}},
        {"add": {"table": {"family": "inet", "name": t}}},
        {"add": {"chain": {"family": "inet", "table": t, "name": "forward", "type": "filter",
            "hook": "forward", "prio": -5, "policy": "accept"}}},
        {"add": {"rule": {"family": "inet", "table": t, "chain": "forward", "expr": [
            meta("iifname", "!=", json!("am-*")),
            meta("oifname", "!=", json!("am-*")),
            {"drop": null},
        ]}}},
    ]})
}

// ---- apply (root, host network namespace) ----

const TOOL_DIRS: &[&str] = &["/usr/sbin", "/sbin", "/usr/bin", "/bin"];
/// How long one `ip` or `nft` run may take. The first table after boot autoloads a dozen
/// modules (conntrack, nat, reject, log, limit): 3.2 s in an idle TCG guest, over 10 s in
/// one sharing two cores with a build.
const TOOL_TIMEOUT: Duration = Duration::from_secs(30);
/// How long teardown waits for init to let go of the lock.
const LOCK_WAIT: Duration = Duration::from_secs(5);
/// How long set-up waits for the pair of a removed network to go.
const LINK_GONE_WAIT: Duration = Duration::from_secs(3);
/// How long set-up waits for a collector to finish with the lock.
/// How long the launcher waits for the child loading the rules: the `nft` program's own
/// deadline, and some.
const RULES_WAIT: Duration = Duration::from_secs(35);
const SETUP_LOCK_WAIT: Duration = Duration::from_secs(1);

/// A failed network step.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error("{tool} is not installed (looked in {})", TOOL_DIRS.join(", "))]
    Missing { tool: &'static str },
    #[error("{step}: {source}")]
    Io {
        step: String,
        #[source]
        source: io::Error,
    },
    #[error("{step}: {tool} failed: {stderr}")]
    Tool {
        step: String,
        tool: &'static str,
        stderr: String,
    },
    /// A failure the child loading the rules reported, as it reported it.
    #[error("{0}")]
    Reported(String),
    /// The network's lock is held: an instance of the app runs with it.
    #[error("the app already runs with its network {name} (one instance per app with a network)")]
    Busy { name: String },
}

fn io_err(step: impl Into<String>) -> impl FnOnce(io::Error) -> NetError {
    let step = step.into();
    move |source| NetError::Io { step, source }
}

fn tool(name: &'static str) -> Result<PathBuf, NetError> {
    TOOL_DIRS
        .iter()
        .map(|d| Path::new(d).join(name))
        .find(|p| p.is_file())
        .ok_or(NetError::Missing { tool: name })
}

/// Whether this host can give apps their networks (`ip` and `nft` are installed).
pub fn available() -> Result<(), NetError> {
    tool("ip")?;
    tool("nft")?;
    Ok(())
}

/// Runs `tool args` with `input` on stdin, an empty environment and a deadline; returns
/// what it printed (a listing: small, read once it has exited).
fn run_tool(
    name: &'static str,
    args: &[&str],
    input: &[u8],
    step: &str,
) -> Result<Vec<u8>, NetError> {
    let path = tool(name)?;
    let mut child = Command::new(&path)
        .args(args)
        .env_clear()
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(io_err(format!("{step}: run {}", path.display())))?;
    if let Some(mut i) = child.stdin.take() {
        if let Err(e) = i.write_all(input) {
            let _ = child.kill();
            let _ = child.wait();
            return Err(io_err(format!("{step}: write to {name}"))(e));
        }
    }
    let deadline = Instant::now() + TOOL_TIMEOUT;
    loop {
        match child.try_wait().map_err(io_err(step))? {
            Some(st) => {
                let mut err = String::new();
                if let Some(mut e) = child.stderr.take() {
                    let _ = io::Read::read_to_string(&mut e, &mut err);
                }
                if st.success() {
                    let mut out = Vec::new();
                    if let Some(mut o) = child.stdout.take() {
                        let _ = io::Read::read_to_end(&mut o, &mut out);
                    }
                    return Ok(out);
                }
                return Err(NetError::Tool {
                    step: step.into(),
                    tool: name,
                    stderr: err.trim().replace('\n', "; "),
                });
            }
            None if Instant::now() > deadline => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(NetError::Tool {
                    step: step.into(),
                    tool: name,
                    stderr: format!("no answer within {}s", TOOL_TIMEOUT.as_secs()),
                });
            }
            // A launch waits for these runs (a few ms each): look often.
            None => std::thread::sleep(Duration::from_micros(100)),
        }
    }
}

fn lock_path(name: &str) -> PathBuf {
    Path::new(LOCK_DIR).join(format!("{name}.lock"))
}

/// Opens (creating) and tries to lock `name`'s lock file. `Ok(None)`: held elsewhere.
fn try_lock(name: &str) -> Result<Option<OwnedFd>, NetError> {
    use rustix::fs::{flock, FlockOperation, Mode, OFlags};
    for (d, mode) in [("/run/appmgr", 0o755), (LOCK_DIR, 0o700)] {
        rustix::fs::mkdir(d, Mode::from_raw_mode(mode))
            .or_else(|e| {
                if e == rustix::io::Errno::EXIST {
                    Ok(())
                } else {
                    Err(e)
                }
            })
            .map_err(|e| io_err(format!("create {d}"))(e.into()))?;
    }
    let p = lock_path(name);
    let fd = rustix::fs::open(
        &p,
        OFlags::RDWR | OFlags::CREATE | OFlags::CLOEXEC | OFlags::NOFOLLOW,
        Mode::from_raw_mode(0o600),
    )
    .map_err(|e| io_err(format!("open {}", p.display()))(e.into()))?;
    match flock(&fd, FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => Ok(Some(fd)),
        Err(rustix::io::Errno::WOULDBLOCK) => Ok(None),
        Err(e) => Err(io_err(format!("lock {}", p.display()))(e.into())),
    }
}

/// Runs one nft JSON transaction: in-process through libnftables when it loads
/// ([`crate::nftlib`]), else through the `nft` program.
fn nft_json(tx: &Value, step: &str) -> Result<(), NetError> {
    nft_json_keep(tx, step).map(drop)
}

/// [`nft_json`], returning libnftables' context for the caller to drop when closing its
/// socket may wait (after a removal, see [`crate::nftlib::Context`]).
fn nft_json_keep(tx: &Value, step: &str) -> Result<Option<crate::sys::nftlib::Context>, NetError> {
    let text = tx.to_string();
    match crate::sys::nftlib::run_json_keep(&text) {
        Some((Ok(()), ctx)) => Ok(Some(ctx)),
        Some((Err(stderr), _)) => Err(NetError::Tool {
            step: step.into(),
            tool: "nft",
            stderr,
        }),
        None => run_tool("nft", &["-j", "-f", "-"], text.as_bytes(), step).map(|_| None),
    }
}

/// [`TABLE`] as `nft -j list` shows it; an empty listing when it does not exist.
fn list_table() -> Result<Value, NetError> {
    match run_tool(
        "nft",
        &["-j", "list", "table", "inet", TABLE],
        b"",
        "list the rules",
    ) {
        Ok(out) => serde_json::from_slice(&out).map_err(|e| NetError::Tool {
            step: "list the rules".into(),
            tool: "nft",
            stderr: e.to_string(),
        }),
        Err(NetError::Tool { stderr, .. }) if stderr.contains("No such file or directory") => {
            Ok(json!({"nftables": []}))
        }
        Err(e) => Err(e),
    }
}

/// Loads the app's rules; creates [`TABLE`] first when they cannot be loaded for want of
/// it.
fn load_rules(p: &NetPlan) -> Result<(), NetError> {
    let tx = ruleset(p);
    if nft_json(&tx, "load the rules").is_ok() {
        return Ok(());
    }
    nft_json(&base_ruleset(), "create the appmgr table")?;
    nft_json(&tx, "load the rules")
}

/// Removes whatever exists of the network `name` with host interface `host_if` (table,
/// pair, namespace); `loaded`: the plan whose rules a launch loaded, removed directly when
/// they are all there. The caller holds the lock.
///
/// Returns what to drop once the lock is released: libnftables' context, whose socket
/// closes only when the kernel has freed the removed rules.
fn remove(
    name: &str,
    host_if: &str,
    loaded: Option<&NetPlan>,
) -> (Result<(), NetError>, Option<crate::sys::nftlib::Context>) {
    let mut first = None;
    // The rules first: nothing is allowed any more, whatever else remains.
    // `Some`: the launch's own removal went through (with libnftables' context, if used).
    let planned = loaded.and_then(|p| nft_json_keep(&planned_removal(p), "remove the rules").ok());
    let rules = if planned.is_some() {
        Ok(())
    } else {
        list_table().and_then(|listing| match removal(name, host_if, &listing) {
            Some(tx) => nft_json(&tx, "remove the rules"),
            None => Ok(()),
        })
    };
    if let Err(e) = rules {
        first.get_or_insert(e);
    }
    if Path::new(NETNS_DIR).join(name).exists() {
        // The host end is retired first (down, no address, renamed `amxN`), so the app's
        // next launch finds its name and address free at once instead of waiting the
        // 15-25 ms the kernel takes to destroy the namespace. Should that fail, the next
        // set-up waits for the pair to go instead (`link_gone`).
        if Path::new("/sys/class/net").join(host_if).exists() {
            let _ = crate::sys::retire_if(host_if);
        }
        // The namespace's last reference: the kernel destroys it, and with it the pair,
        // in the background (no synchronous RCU wait of `ip link del` here).
        if let Err(e) = remove_netns(name) {
            first.get_or_insert(e);
        }
    } else if Path::new("/sys/class/net").join(host_if).exists() {
        // A pair without its namespace (a set-up cut short), or one being destroyed.
        if let Err(e) = run_tool("ip", &["link", "del", host_if], b"", "remove the veth pair") {
            if Path::new("/sys/class/net").join(host_if).exists() {
                first.get_or_insert(e);
            }
        }
    }
    let d = names_dir(name);
    if let Err(e) = std::fs::remove_dir_all(&d) {
        if e.kind() != io::ErrorKind::NotFound {
            first.get_or_insert(io_err(format!("remove {}", d.display()))(e));
        }
    }
    if first.is_none() {
        let _ = std::fs::remove_file(marker_path(name));
    }
    // The lock file stays: unlinking it would let a second locker in on a new file while
    // a holder still has the old one.
    (first.map_or(Ok(()), Err), planned.flatten())
}

/// Exists from the start of a set-up until a removal completed: a network with it may be
/// half made or half removed, and is removed whole before the next set-up.
fn marker_path(name: &str) -> PathBuf {
    Path::new(LOCK_DIR).join(format!("{name}.up"))
}

/// Whether anything of network `name` may exist (checked without running a tool).
fn may_exist(name: &str, host_if: &str) -> bool {
    marker_path(name).exists()
        || Path::new(NETNS_DIR).join(name).exists()
        || Path::new("/sys/class/net").join(host_if).exists()
}

/// A network set up for one launch: the namespace (joined by init with `setns`) and the
/// lock, which init keeps for the app's life.
#[derive(Debug)]
pub struct NetHandle {
    pub netns: OwnedFd,
    pub lock: OwnedFd,
}

/// The first half of the app's network, made before init exists: the lock, the removal of
/// stale leftovers of the same app, and the named namespace init joins (and the names
/// directory the root binds). Refused while another instance of the app holds its
/// network. On failure nothing is left. [`connect`] adds the rest while init builds the
/// root.
pub fn setup(p: &NetPlan) -> Result<NetHandle, NetError> {
    // The names become paths and interface names: only the forms `plan` makes are accepted.
    let uid = p
        .name
        .strip_prefix(NAME_PREFIX)
        .filter(|u| !u.is_empty() && u.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|u| u.parse::<u32>().ok());
    if uid.map(host_if) != Some(p.host_if.clone()) {
        return Err(NetError::Io {
            step: format!("network names {:?}/{:?}", p.name, p.host_if),
            source: io::Error::from(io::ErrorKind::InvalidInput),
        });
    }
    // A collector (`remove_stale`, a `kill`) holds the lock for the few milliseconds of a
    // removal: wait that out, not a live instance.
    let lock = lock_within(&p.name, SETUP_LOCK_WAIT)?.ok_or_else(|| NetError::Busy {
        name: p.name.clone(),
    })?;
    if may_exist(&p.name, &p.host_if) {
        remove(&p.name, &p.host_if, None).0?;
    }
    link_gone(&p.host_if)?;
    std::fs::write(marker_path(&p.name), b"")
        .map_err(io_err(format!("write {}", marker_path(&p.name).display())))?;
    let done = (|| {
        let netns = create_netns(&p.name)?;
        if !p.names.is_empty() {
            let d = names_dir(&p.name);
            std::fs::create_dir(&d).map_err(io_err(format!("create {}", d.display())))?;
            let dir = open_names_dir(&p.name)?;
            write_hosts(&dir, &p.name, &hosts_file(&p.hosts_head, &p.name_addrs))?;
        }
        Ok(netns)
    })();
    match done {
        Ok(netns) => Ok(NetHandle { netns, lock }),
        Err(e) => {
            let _ = remove(&p.name, &p.host_if, None).0;
            Err(e)
        }
    }
}

/// The second half, while init builds the root in the namespace: the veth pair (its app
/// end moved into the namespace), the host end's address, forwarding, and the app's
/// rules. Init configures the app end and starts the app only after this returned. On
/// failure the caller ends init and removes the network ([`teardown`]).
///
/// The rules match the pair by name, so they need not wait for it: a child loads them
/// while this process makes the pair (each about 3 ms of a launch right after another,
/// most of it waiting for the kernel's locks and loading libnftables). Both are done, or
/// the child is gone, when this returns. The caller forks in the host's pid namespace.
pub fn connect(p: &NetPlan, h: &NetHandle) -> Result<(), NetError> {
    let rules = RulesChild::start(p);
    let link = connect_link(p, h);
    let rules = match rules {
        Some(child) => child.finish(),
        None => load_rules(p),
    };
    link.and(rules)
}

fn connect_link(p: &NetPlan, h: &NetHandle) -> Result<(), NetError> {
    crate::sys::create_veth(&p.host_if, APP_IF, h.netns.as_fd()).map_err(io_err(format!(
        "create the veth pair {}/{APP_IF}",
        p.host_if
    )))?;
    ipv6_off(&p.host_if);
    crate::sys::configure_if(&p.host_if, p.host_addr, 30, None)
        .map_err(io_err(format!("configure {}", p.host_if)))?;
    ensure_forwarding()?;
    let fwd = format!("/proc/sys/net/ipv4/conf/{}/forwarding", p.host_if);
    std::fs::write(&fwd, b"1").map_err(io_err(format!("write {fwd}")))?;
    Ok(())
}

/// Turns IPv6 off for interface `conf` (or `default`: those made later) of the current
/// network namespace, before it is up. The app's network is IPv4; with IPv6 on, bringing
/// each end of the pair up made a link-local address, duplicate address detection and
/// multicast listener reports, and taking it down undid them: work on every launch for
/// traffic the rules refuse anyway. Best effort: should the write fail (a kernel without
/// IPv6 has no such file), the pair keeps IPv6 and the rules still refuse it.
fn ipv6_off(conf: &str) {
    let _ = std::fs::write(format!("/proc/sys/net/ipv6/conf/{conf}/disable_ipv6"), b"1");
}

/// A child of the launcher loading the app's rules ([`load_rules`]); it reports a failure
/// as text on a pipe.
struct RulesChild {
    pid: libc::pid_t,
    report: OwnedFd,
}

impl RulesChild {
    /// `None` when no child can be made (the caller loads the rules itself).
    fn start(p: &NetPlan) -> Option<RulesChild> {
        let (r, w) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC).ok()?;
        match crate::sys::fork() {
            Ok(Some(pid)) => Some(RulesChild { pid, report: r }),
            Ok(None) => {
                drop(r);
                let code = match load_rules(p) {
                    Ok(()) => 0,
                    Err(e) => {
                        let _ = crate::sys::write_all(&w, e.to_string().as_bytes());
                        1
                    }
                };
                crate::sys::exit_now(code)
            }
            Err(_) => None,
        }
    }

    /// Waits (bounded: the `nft` program's own deadline and some) for the child's end.
    fn finish(self) -> Result<(), NetError> {
        let read = crate::sys::read_to_end_within(&self.report, Some(RULES_WAIT));
        if !matches!(read, Ok(Some(_))) {
            let _ = crate::sys::kill(self.pid, libc::SIGKILL);
        }
        let status = rustix::process::waitpid(
            rustix::process::Pid::from_raw(self.pid),
            rustix::process::WaitOptions::empty(),
        );
        let failed = |why: String| NetError::Io {
            step: "load the rules".into(),
            source: io::Error::other(why),
        };
        match read {
            Ok(Some(msg)) if msg.is_empty() => match status {
                Ok(Some((_, st))) if st.exit_status() == Some(0) => Ok(()),
                _ => Err(failed(
                    "the child loading them ended without a report".into(),
                )),
            },
            Ok(Some(msg)) => Err(NetError::Reported(
                String::from_utf8_lossy(&msg).into_owned(),
            )),
            Ok(None) => Err(failed(format!(
                "not done within {} s",
                RULES_WAIT.as_secs()
            ))),
            Err(e) => Err(failed(format!("reading the child's report: {e}"))),
        }
    }
}

/// Creates the named network namespace `/run/netns/NAME` the way `ip netns add` does,
/// in-process: `/run/netns` a shared mount point (so the name is seen from mount
/// namespaces made later), an empty file there, a new namespace bind-mounted on it; then
/// back to the host's namespace. Returns the new namespace, open.
fn create_netns(name: &str) -> Result<OwnedFd, NetError> {
    use rustix::fs::{Mode, OFlags};
    use rustix::mount::{mount_bind, mount_change, MountPropagationFlags};
    let rx = |step: String| move |e: rustix::io::Errno| io_err(step)(e.into());
    match rustix::fs::mkdir(NETNS_DIR, Mode::from_raw_mode(0o755)) {
        Ok(()) | Err(rustix::io::Errno::EXIST) => {}
        Err(e) => return Err(rx(format!("create {NETNS_DIR}"))(e)),
    }
    let shared = MountPropagationFlags::SHARED | MountPropagationFlags::REC;
    if let Err(rustix::io::Errno::INVAL) = mount_change(NETNS_DIR, shared) {
        // Not a mount point yet: make it one.
        mount_bind(NETNS_DIR, NETNS_DIR).map_err(rx(format!("bind {NETNS_DIR}")))?;
        mount_change(NETNS_DIR, shared).map_err(rx(format!("share {NETNS_DIR}")))?;
    }
    let path = Path::new(NETNS_DIR).join(name);
    drop(
        rustix::fs::open(
            &path,
            OFlags::RDONLY | OFlags::CREATE | OFlags::EXCL | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(rx(format!("create {}", path.display())))?,
    );
    let host = rustix::fs::open(
        "/proc/self/ns/net",
        OFlags::RDONLY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(rx("open the host's network namespace".into()))?;
    let made = crate::sys::unshare(libc::CLONE_NEWNET)
        .map_err(io_err("new network namespace"))
        .and_then(|()| {
            // The app's end of the pair, made later, is born without IPv6 (`lo` keeps ::1).
            ipv6_off("default");
            mount_bind("/proc/self/ns/net", &path)
                .map_err(rx(format!("bind the namespace on {}", path.display())))
        });
    // Back to the host's namespace whatever happened: the launcher's own network stays
    // the host's (it removes the app's afterwards).
    let back = rustix::thread::move_into_link_name_space(
        host.as_fd(),
        Some(rustix::thread::LinkNameSpaceType::Network),
    );
    if let Err(e) = back {
        // Nothing can be trusted in a launcher stuck in the wrong namespace.
        eprintln!("appmgr: cannot return to the host's network namespace: {e}");
        std::process::abort();
    }
    if let Err(e) = made {
        let _ = std::fs::remove_file(&path);
        return Err(e);
    }
    rustix::fs::open(
        &path,
        OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NOFOLLOW,
        Mode::empty(),
    )
    .map_err(rx(format!("open {}", path.display())))
}

/// Removes the name of network namespace `name` (`ip netns del`): the namespace goes with
/// its last user, and the veth pair with it.
fn remove_netns(name: &str) -> Result<(), NetError> {
    let path = Path::new(NETNS_DIR).join(name);
    match rustix::mount::unmount(&path, rustix::mount::UnmountFlags::DETACH) {
        Ok(()) | Err(rustix::io::Errno::INVAL) | Err(rustix::io::Errno::NOENT) => {}
        Err(e) => return Err(io_err(format!("unmount {}", path.display()))(e.into())),
    }
    match std::fs::remove_file(&path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_err(format!("remove {}", path.display()))(e)),
    }
}

fn open_names_dir(name: &str) -> Result<OwnedFd, NetError> {
    use rustix::fs::{Mode, OFlags};
    let d = names_dir(name);
    rustix::fs::open(
        &d,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| io_err(format!("open {}", d.display()))(e.into()))
}

/// Waits (bounded) until no interface `host_if` exists: the pair of a removed namespace
/// goes when the kernel destroys the namespace, in the background, a few milliseconds
/// after its name was removed.
fn link_gone(host_if: &str) -> Result<(), NetError> {
    let sys = Path::new("/sys/class/net").join(host_if);
    let deadline = Instant::now() + LINK_GONE_WAIT;
    while sys.exists() {
        if Instant::now() > deadline {
            return Err(NetError::Io {
                step: format!(
                    "{host_if} still exists {} s after its network was removed",
                    LINK_GONE_WAIT.as_secs()
                ),
                source: io::Error::from_raw_os_error(libc::EEXIST),
            });
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    Ok(())
}

/// Replaces `hosts` in the names directory `dir` whole (a new file renamed over it), so
/// the app never reads half a file.
fn write_hosts(dir: &OwnedFd, name: &str, contents: &str) -> Result<(), NetError> {
    use rustix::fs::{Mode, OFlags};
    let step = || format!("write {}/hosts", names_dir(name).display());
    let f = rustix::fs::openat(
        dir,
        "hosts.new",
        OFlags::WRONLY | OFlags::CREATE | OFlags::TRUNC | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::from_raw_mode(0o644),
    )
    .map_err(|e| io_err(step())(e.into()))?;
    std::fs::File::from(f)
        .write_all(contents.as_bytes())
        .map_err(io_err(step()))?;
    rustix::fs::renameat(dir, "hosts.new", dir, "hosts").map_err(|e| io_err(step())(e.into()))
}

/// Keeps an app network's names current while the app runs: each name is looked up again
/// when its answer's TTL has run out ([`crate::netnames`]); when an answer changed, its
/// set's elements are replaced in one nft transaction, then the app's `/etc/hosts`. A
/// failed lookup keeps the last addresses and is retried after
/// [`crate::netnames::RETRY`]. Run by the launcher (`appmgr run`) or appmgrd (services).
pub struct Refresher {
    table: String,
    name: String,
    pool: Ipv4Net,
    sets: Vec<(String, String)>,
    head: String,
    dir: OwnedFd,
    addrs: BTreeMap<String, Vec<Ipv4Addr>>,
    due: BTreeMap<String, Instant>,
    resolver: crate::netnames::Resolver,
}

impl Refresher {
    /// The refresher of a network set up from `p`, `None` when its grant has no names.
    /// `started` is when the names were looked up for the launch.
    pub fn new(p: &NetPlan, started: Instant) -> Result<Option<Refresher>, NetError> {
        if p.names.is_empty() {
            return Ok(None);
        }
        let due = p
            .name_addrs
            .keys()
            .map(|n| {
                let secs = p.name_refresh.get(n).copied().unwrap_or(0);
                (n.clone(), started + Duration::from_secs(secs))
            })
            .collect();
        Ok(Some(Refresher {
            table: TABLE.to_string(),
            name: p.name.clone(),
            pool: p.pool,
            sets: name_sets(p)
                .into_iter()
                .map(|(n, s)| (n.to_string(), s.to_string()))
                .collect(),
            head: p.hosts_head.clone(),
            dir: open_names_dir(&p.name)?,
            addrs: p.name_addrs.clone(),
            due,
            resolver: crate::netnames::Resolver::new(&p.resolvers),
        }))
    }

    /// The names directory, open (the keeper process keeps it across closing the rest).
    pub fn dir_fd(&self) -> std::os::fd::RawFd {
        std::os::fd::AsRawFd::as_raw_fd(&self.dir)
    }

    /// When the next name is due.
    pub fn next_due(&self) -> Instant {
        self.due
            .values()
            .min()
            .copied()
            .unwrap_or_else(|| Instant::now() + crate::netnames::MAX_REFRESH)
    }

    /// The addresses the rules allow for each name now.
    pub fn addrs(&self) -> &BTreeMap<String, Vec<Ipv4Addr>> {
        &self.addrs
    }

    /// Looks up the names due at `now` and applies what changed. Returns one line per
    /// problem, for the caller's log; the network keeps working on the last answers.
    pub fn refresh(&mut self, now: Instant) -> Vec<String> {
        let mut problems = Vec::new();
        let mut changed = Vec::new();
        let due: Vec<String> = self
            .due
            .iter()
            .filter(|(_, t)| **t <= now)
            .map(|(n, _)| n.clone())
            .collect();
        for name in due {
            let next = match self.resolver.resolve(&name) {
                Ok(a) => {
                    let addrs = name_targets(self.pool, a.addrs);
                    if self.addrs.get(&name) != Some(&addrs) {
                        self.addrs.insert(name.clone(), addrs);
                        changed.push(name.clone());
                    }
                    a.ttl
                }
                Err(e) => {
                    problems.push(format!(
                        "looking up {name} again: {e} (its last addresses stay)"
                    ));
                    crate::netnames::RETRY
                }
            };
            self.due.insert(name, Instant::now() + next);
        }
        if changed.is_empty() {
            return problems;
        }
        // The app never finds an address in its /etc/hosts that the rules do not allow:
        // the new addresses are added, then /etc/hosts replaced, then the sets made exact
        // (a removed address stays allowed for the moment in between).
        let t = self.table.as_str();
        let (mut add, mut exact) = (Vec::new(), Vec::new());
        for (name, set) in self.sets.iter().filter(|(n, _)| changed.contains(n)) {
            exact.push(json!({"flush": {"set": {"family": "inet", "table": t, "name": set}}}));
            if let Some(el) = set_elements(t, set, self.addrs.get(name)) {
                add.push(json!({ "add": el }));
                exact.push(json!({ "add": el }));
            }
        }
        let nft = |cmds: Vec<Value>, step: &str| nft_json(&json!({ "nftables": cmds }), step);
        let done = (|| {
            if !add.is_empty() {
                nft(add, "add the names' new addresses")?;
            }
            write_hosts(&self.dir, &self.name, &hosts_file(&self.head, &self.addrs))?;
            nft(exact, "remove the names' old addresses")
        })();
        if let Err(e) = done {
            problems.push(e.to_string());
        }
        problems
    }
}

/// Replies to an app's traffic arrive on the host's uplink and are forwarded only if that
/// interface forwards. A host that forwards (`ip_forward` 1) stays as it is; on one that
/// does not, forwarding is turned on with [`guard_ruleset`] loaded first, so the host still
/// forwards nothing that is not to or from an app.
fn ensure_forwarding() -> Result<(), NetError> {
    let on = std::fs::read_to_string(IP_FORWARD).map_err(io_err(format!("read {IP_FORWARD}")))?;
    if on.trim() == "1" {
        return Ok(());
    }
    nft_json(&guard_ruleset(), "load the forwarding guard")?;
    std::fs::write(IP_FORWARD, b"1").map_err(io_err(format!("write {IP_FORWARD}")))
}

/// Removes the app's network once its sandbox has ended: waits (bounded) until init has
/// let go of the lock, so a network still in use is never removed.
pub fn teardown(p: &NetPlan) -> Result<(), NetError> {
    // Before the lock, which the app's next launch waits for.
    crate::sys::nftlib::preload();
    remove_locked(p, lock_ended(p)?)
}

/// The lock of the app's network once its sandbox has ended, waiting (bounded) until init
/// has let go of it. Held on to, it keeps the next launch of the app from racing the
/// removal ([`remove_locked`]) for it.
pub fn lock_ended(p: &NetPlan) -> Result<OwnedFd, NetError> {
    lock_within(&p.name, LOCK_WAIT)?.ok_or_else(|| NetError::Busy {
        name: p.name.clone(),
    })
}

/// Removes the app's network with its lock ([`lock_ended`]) held, and lets go of the lock.
pub fn remove_locked(p: &NetPlan, lock: OwnedFd) -> Result<(), NetError> {
    let (r, closing) = remove(&p.name, &p.host_if, Some(p));
    drop(lock);
    drop(closing);
    r
}

/// The lock of network `name`, waiting up to `wait` for its holder to let go.
fn lock_within(name: &str, wait: Duration) -> Result<Option<OwnedFd>, NetError> {
    let deadline = Instant::now() + wait;
    loop {
        if let Some(l) = try_lock(name)? {
            return Ok(Some(l));
        }
        if Instant::now() > deadline {
            return Ok(None);
        }
        // A removal holds it for about a millisecond: poll finely.
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Removes the network of the app with `uid` if it exists and no sandbox holds it,
/// waiting up to `wait` for a dying sandbox to let go (`appmgr kill` of an instance no
/// launcher or appmgrd watches). `Ok(true)`: it was removed.
pub fn remove_if_stale(uid: u32, wait: Duration) -> Result<bool, NetError> {
    let name = format!("{NAME_PREFIX}{uid}");
    if !may_exist(&name, &host_if(uid)) {
        return Ok(false);
    }
    match lock_within(&name, wait)? {
        Some(lock) => {
            let r = remove(&name, &host_if(uid), None).0;
            drop(lock);
            r.map(|()| true)
        }
        None => Ok(false),
    }
}

/// Finds app networks no sandbox holds (left by a killed launcher or appmgrd) and
/// removes them: namespaces in [`NETNS_DIR`] and nft tables named `appmgr-UID`. Returns
/// the names removed.
pub fn remove_stale() -> Result<Vec<String>, NetError> {
    let mut names: Vec<String> = Vec::new();
    if let Ok(rd) = std::fs::read_dir(NETNS_DIR) {
        for e in rd.flatten() {
            names.push(e.file_name().to_string_lossy().into_owned());
        }
    }
    // Set-ups or removals cut short.
    if let Ok(rd) = std::fs::read_dir(LOCK_DIR) {
        for e in rd.flatten() {
            if let Some(n) = e.file_name().to_string_lossy().strip_suffix(".up") {
                names.push(n.to_string());
            }
        }
    }
    // Tables of their own: what versions before the shared table made.
    let mut legacy = Vec::new();
    if tool("nft").is_ok() {
        let out = run_tool(
            "nft",
            &["-j", "list", "tables", "inet"],
            b"",
            "list nft tables",
        )?;
        if let Ok(v) = serde_json::from_slice::<Value>(&out) {
            for item in v["nftables"].as_array().into_iter().flatten() {
                if let Some(n) = item["table"]["name"].as_str() {
                    legacy.push(n.to_string());
                }
            }
        }
        for uid in uids_in(&list_table()?) {
            names.push(format!("{NAME_PREFIX}{uid}"));
        }
    }
    legacy.retain(|n| {
        n.strip_prefix(NAME_PREFIX)
            .is_some_and(|u| u.parse::<u32>().is_ok())
    });
    names.extend(legacy.iter().cloned());
    names.sort();
    names.dedup();
    let mut removed = Vec::new();
    let mut first_err = None;
    for name in names {
        let Some(uid) = name.strip_prefix(NAME_PREFIX) else {
            continue;
        };
        let Ok(uid) = uid.parse::<u32>() else {
            continue;
        };
        // One network that cannot be removed does not keep the others.
        let r = try_lock(&name).and_then(|l| match l {
            Some(lock) => {
                let mut r = remove(&name, &host_if(uid), None).0;
                if r.is_ok() && legacy.contains(&name) {
                    let table = json!({"nftables": [
                        {"add": {"table": {"family": "inet", "name": name}}},
                        {"delete": {"table": {"family": "inet", "name": name}}},
                    ]});
                    r = nft_json(&table, "remove an old table");
                }
                drop(lock);
                r.map(|()| true)
            }
            None => Ok(false),
        });
        match r {
            Ok(true) => removed.push(name),
            Ok(false) => {}
            Err(e) => {
                first_err.get_or_insert(e);
            }
        }
    }
    match first_err {
        Some(e) if removed.is_empty() => Err(e),
        _ => Ok(removed),
    }
}

/// Init's half, before it builds the root: joins the namespace.
pub(crate) fn enter(netns: impl AsFd) -> io::Result<()> {
    rustix::thread::move_into_link_name_space(
        netns.as_fd(),
        Some(rustix::thread::LinkNameSpaceType::Network),
    )
    .map_err(io::Error::from)
}

/// Init's half once [`connect`] is done: configures the app's end of the pair.
pub(crate) fn configure_app_end(p: &NetPlan) -> io::Result<()> {
    crate::sys::configure_if(APP_IF, p.app_addr, 30, Some(p.host_addr))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    fn spec() -> NetSpec {
        NetSpec {
            resolvers: Vec::new(),
            pool: DEFAULT_POOL.parse().unwrap(),
            slot: 3,
            resolved: [(
                "backend.example".to_string(),
                vec!["192.0.2.7".parse().unwrap()],
            )]
            .into(),
            refresh: [("backend.example".to_string(), 120)].into(),
            // `resolved` is what the name server said: its pool and loopback answers
            // never become destinations (see plan_resolves_names_dns_and_mutual_peers).
            nameservers: vec!["192.0.2.53".parse().unwrap()],
            peers: vec![NetPeer {
                app: "org.example.Peer".parse().unwrap(),
                uid: 70010,
                slot: 10,
            }],
            routed: false,
        }
    }

    #[test]
    fn addresses_follow_the_slot() {
        let pool: Ipv4Net = "10.233.0.0/16".parse().unwrap();
        assert_eq!(
            slot_addrs(pool, 3).unwrap(),
            (
                "10.233.0.13".parse().unwrap(),
                "10.233.0.14".parse().unwrap()
            )
        );
        assert!(slot_addrs(pool, 16383).is_ok());
        assert!(slot_addrs(pool, 16384).is_err());
        assert!(slot_addrs("10.0.0.0/31".parse().unwrap(), 0).is_err());
    }

    #[test]
    fn plan_resolves_names_dns_and_mutual_peers() {
        let g: NetworkGrant = serde_json::from_str(
            r#"{"egress": ["198.51.100.0/24:443", "backend.example:8883", "gone.example:1"],
                "dns": true, "listen": ["8080"], "talk-to": ["org.example.Peer"]}"#,
        )
        .unwrap();
        let id: AppId = "org.example.App".parse().unwrap();
        let p = plan(&id, 70003, &g, &spec()).unwrap();
        assert_eq!(p.name, "appmgr-70003");
        assert_eq!(p.host_if, "am-70003");
        let dests: Vec<String> = p
            .egress
            .iter()
            .map(|d| format!("{}:{}/{}", d.net, d.port, d.proto))
            .collect();
        assert_eq!(
            dests,
            [
                "198.51.100.0/24:443/tcp",
                "192.0.2.53:53/udp",
                "192.0.2.53:53/tcp"
            ]
        );
        assert_eq!(p.peers[0].addr, "10.233.0.42".parse::<Ipv4Addr>().unwrap());
        // Names go through sets, one per name; a name that did not resolve has an empty
        // one, looked up again soon.
        let names: Vec<(&str, &str, u16)> = p
            .names
            .iter()
            .map(|r| (r.name.as_str(), r.set.as_str(), r.port))
            .collect();
        assert_eq!(
            names,
            [
                ("backend.example", "a70003_name_0", 8883),
                ("gone.example", "a70003_name_1", 1)
            ]
        );
        assert_eq!(p.name_refresh["backend.example"], 120);
        // A name server that answers with another app's address or loopback gains the
        // app nothing.
        let mut bad = spec();
        bad.resolved.insert(
            "backend.example".into(),
            vec![
                "10.233.0.42".parse().unwrap(),
                "127.0.0.1".parse().unwrap(),
                "224.0.0.1".parse().unwrap(),
                "192.0.2.7".parse().unwrap(),
            ],
        );
        let pb = plan(&id, 70003, &g, &bad).unwrap();
        assert_eq!(
            pb.name_addrs["backend.example"],
            ["192.0.2.7".parse::<Ipv4Addr>().unwrap()]
        );
        assert_eq!(
            p.name_refresh["gone.example"],
            crate::netnames::RETRY.as_secs()
        );
        assert_eq!(
            hosts_file("127.0.0.1\tlocalhost\n", &p.name_addrs),
            "127.0.0.1\tlocalhost\n192.0.2.7\tbackend.example\n"
        );
        let r = ruleset(&p).to_string();
        assert!(
            r.contains(r#"{"add":{"element":{"elem":["192.0.2.7"],"family":"inet","name":"a70003_name_0","table":"appmgr"}}}"#),
            "{r}"
        );
        assert!(r.contains(r#""right":"@a70003_name_1""#), "{r}");
        // No element list for the name without addresses (nft refuses an empty one).
        assert!(!r.contains(r#""elem":[]"#), "{r}");
        // A peer the grant does not name is no peer.
        let mut g2 = g.clone();
        g2.talk_to.clear();
        assert!(plan(&id, 70003, &g2, &spec()).unwrap().peers.is_empty());
    }

    #[test]
    fn setup_takes_only_the_names_plan_makes() {
        let id: AppId = "org.example.App".parse().unwrap();
        let good = plan(&id, 70003, &NetworkGrant::any(), &spec()).unwrap();
        for (name, hif) in [
            ("appmgr-70003\nnetns del x", "am-70003"),
            ("appmgr-70003", "am-70004"),
            ("other-70003", "am-70003"),
            ("appmgr-", "am-"),
        ] {
            let mut p = good.clone();
            p.name = name.into();
            p.host_if = hif.into();
            let e = setup(&p).unwrap_err();
            assert!(e.to_string().starts_with("network names"), "{e}");
        }
    }

    #[test]
    fn the_planned_removal_deletes_what_the_listing_removal_would() {
        let g: NetworkGrant = serde_json::from_str(
            r#"{"egress": ["198.51.100.0/24:443", "backend.example:8883"],
                "listen": ["8080"], "talk-to": ["org.example.Peer"]}"#,
        )
        .unwrap();
        let id: AppId = "org.example.App".parse().unwrap();
        for routed in [false, true] {
            let mut p = plan(&id, 70003, &g, &spec()).unwrap();
            p.routed = routed;
            // The table as `nft -j list` shows it after `ruleset(p)` was loaded, with
            // another app's chain and element beside it.
            let mut listing = vec![
                json!({"chain": {"name": "a70004_from"}}),
                json!({"map": {"name": "from_app",
                    "elem": [["am-70004", {"jump": {"target": "a70004_from"}}]]}}),
            ];
            for cmd in ruleset(&p)["nftables"].as_array().unwrap() {
                let add = &cmd["add"];
                // Map entries are listed in their map; a set's addresses in the set.
                if let Some(e) = add.get("element").filter(|e| e["elem"][0].is_array()) {
                    listing.push(json!({"map": {"name": e["name"], "elem": e["elem"]}}));
                }
                for kind in ["chain", "set", "limit"] {
                    if let Some(o) = add.get(kind) {
                        listing.push(json!({ kind: {"name": o["name"]} }));
                    }
                }
            }
            let listed = removal(&p.name, &p.host_if, &json!({ "nftables": listing })).unwrap();
            let planned = planned_removal(&p);
            let set = |v: &Value| -> BTreeSet<String> {
                v["nftables"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(Value::to_string)
                    .collect()
            };
            assert_eq!(set(&planned), set(&listed), "routed {routed}");
            assert!(set(&planned).iter().any(|c| c.contains("a70003_name_0")));
            assert!(!planned.to_string().contains("70004"));
            // Elements first, chains flushed before any is deleted.
            let cmds: Vec<String> = planned["nftables"]
                .as_array()
                .unwrap()
                .iter()
                .map(Value::to_string)
                .collect();
            let last_elem = cmds
                .iter()
                .rposition(|c| c.contains("\"element\""))
                .unwrap();
            let first_flush = cmds.iter().position(|c| c.contains("\"flush\"")).unwrap();
            let first_delete_chain = cmds
                .iter()
                .position(|c| c.contains("\"delete\":{\"chain\""))
                .unwrap();
            let last_flush = cmds.iter().rposition(|c| c.contains("\"flush\"")).unwrap();
            assert!(last_elem < first_flush && last_flush < first_delete_chain);
        }
    }

    #[test]
    fn an_app_is_chains_in_the_shared_table_that_drop_by_default() {
        let g = NetworkGrant::any();
        let id: AppId = "org.example.App".parse().unwrap();
        let p = plan(&id, 70003, &g, &spec()).unwrap();
        let v = ruleset(&p);
        let r = v.to_string();
        // Only regular chains (no hook: nothing to register) and the dispatch elements.
        assert!(!r.contains("\"hook\"") && !r.contains("\"table\":{"), "{r}");
        for ch in ["from", "to", "in", "out", "nat"] {
            assert!(
                r.contains(&format!("\"name\":\"a70003_{ch}\"")),
                "{ch}: {r}"
            );
        }
        assert!(
            r.contains(r#""elem":[["am-70003",{"jump":{"target":"a70003_from"}}]]"#),
            "{r}"
        );
        assert!(
            r.contains(r#""elem":[["10.233.0.14",{"jump":{"target":"a70003_nat"}}]]"#),
            "{r}"
        );
        assert!(r.contains("masquerade") && r.contains("\"drop\""));
        // The dispatch elements come last: a chain is complete before traffic reaches it.
        let cmds = v["nftables"].as_array().unwrap();
        let first_elem = cmds
            .iter()
            .position(|c| c["add"]["element"]["elem"][0][1].get("jump").is_some())
            .unwrap();
        assert!(cmds[first_elem..]
            .iter()
            .all(|c| c["add"].get("element").is_some()));
        // The base: dispatch by interface (and source address for NAT) to those chains.
        let b = base_ruleset().to_string();
        assert!(
            b.contains(r#"{"vmap":{"data":"@from_app","key":{"meta":{"key":"iifname"}}}}"#),
            "{b}"
        );
        assert!(b.contains(r#""hook":"postrouting""#), "{b}");
        // Tracking stays on: the chain holding a state match has no hook, nothing jumps to
        // it, its one rule has no verdict, and a rerun replaces that rule (flush first).
        let base = base_ruleset();
        let cmds = base["nftables"].as_array().unwrap();
        let on_tracking = |verb: &str, what: &str| {
            cmds.iter().position(|c| {
                let o = &c[verb][what];
                o["name"] == TRACKING_CHAIN || o["chain"] == TRACKING_CHAIN
            })
        };
        let added = on_tracking("add", "chain").unwrap();
        assert!(cmds[added]["add"]["chain"].get("hook").is_none());
        let flushed = on_tracking("flush", "chain").unwrap();
        let rule = on_tracking("add", "rule").unwrap();
        assert!(added < flushed && flushed < rule);
        assert_eq!(
            cmds[rule]["add"]["rule"]["expr"],
            json!([ct_state(&["established"])])
        );
        assert!(
            !b.contains(&format!(r#""target":"{TRACKING_CHAIN}""#)),
            "{b}"
        );
        assert!(uids_in(&json!({"nftables": [{"chain": {"name": TRACKING_CHAIN}}]})).is_empty());
        // Removal finds the app's objects in a listing and removes elements first.
        let listing = json!({"nftables": [
            {"map": {"name": "from_app", "elem": [["am-70003", {"jump": {"target": "a70003_from"}}],
                                                  ["am-70004", {"jump": {"target": "a70004_from"}}]]}},
            {"chain": {"name": "a70003_from"}}, {"chain": {"name": "a70004_from"}},
            {"set": {"name": "a70003_name_0"}}, {"limit": {"name": "a70003_log"}},
        ]});
        let rm = removal("appmgr-70003", "am-70003", &listing)
            .unwrap()
            .to_string();
        assert!(
            rm.starts_with(r#"{"nftables":[{"delete":{"element":{"elem":["am-70003"]"#),
            "{rm}"
        );
        assert!(!rm.contains("70004"), "{rm}");
        assert!(
            rm.contains(r#"{"delete":{"set":{"family":"inet","name":"a70003_name_0""#),
            "{rm}"
        );
        assert_eq!(uids_in(&listing), [70003, 70004]);
        assert!(removal("appmgr-70005", "am-70005", &listing).is_none());
        // any: everything outside the pool, nothing inside it.
        assert!(
            r.contains("\"op\":\"!=\",\"right\":{\"prefix\":{\"addr\":\"10.233.0.0\",\"len\":16}}")
        );
    }
}
