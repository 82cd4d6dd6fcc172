//! Every policy file under `policies/` (except seccomp lists) is loaded here, alone and
//! together, and the example scenarios behave as their comments say.

use appmgr_cgroup::CpuList;
use appmgr_policy::*;
use appmgr_types::{AppId, Permissions, Resources};
use std::path::{Path, PathBuf};

fn policies_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../policies")
}

fn toml_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            if p.file_name().unwrap() != "seccomp" {
                toml_files(&p, out);
            }
        } else if p.extension().is_some_and(|x| x == "toml") {
            out.push(p);
        }
    }
}

fn all_files() -> Vec<PathBuf> {
    let mut v = Vec::new();
    toml_files(&policies_dir(), &mut v);
    v.sort();
    v
}

#[test]
fn every_policy_file_loads() {
    let files = all_files();
    assert!(files.len() >= 5, "{files:?}");
    for f in &files {
        let bytes = std::fs::read(f).unwrap();
        let s = PolicySet::from_sources([(f.display().to_string(), bytes)])
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(s.rule_count() >= 1, "{}", f.display());
    }
}

/// The default policy plus every example, as an OEM would install them in one
/// `policies.d` (the examples' names keep them after `00-default.toml`).
fn installed() -> PolicySet {
    let mut v = Vec::new();
    for sub in ["policies.d", "examples"] {
        let s = PolicySet::load_dir(&policies_dir().join(sub)).unwrap();
        for f in s.files() {
            let name = Path::new(f)
                .file_name()
                .unwrap()
                .to_string_lossy()
                .into_owned();
            v.push((name, std::fs::read(f).unwrap()));
        }
    }
    PolicySet::from_sources(v).unwrap()
}

fn without_debug() -> PolicySet {
    let mut v = Vec::new();
    for sub in ["policies.d", "examples"] {
        let s = PolicySet::load_dir(&policies_dir().join(sub)).unwrap();
        for f in s.files() {
            if !f.contains("debug") {
                v.push((f.clone(), std::fs::read(f).unwrap()));
            }
        }
    }
    PolicySet::from_sources(v).unwrap()
}

fn check(
    s: &PolicySet,
    app: &str,
    perms: &str,
    board: &BoardFacts,
) -> Result<EffectiveGrant, PolicyError> {
    let app = AppId::new(app).unwrap();
    let perms: Permissions = toml::from_str(perms).unwrap();
    let res = Resources::default();
    s.check(
        &Request {
            app: &app,
            permissions: &perms,
            resources: &res,
        },
        board,
    )
}

fn board(devices: &[&str], nodes: &[&str], little: bool) -> BoardFacts {
    let mut b = BoardFacts::default();
    for d in devices {
        b.devices.insert(d.to_string().try_into().unwrap());
    }
    for n in nodes {
        b.present_nodes.insert(n.to_string());
    }
    if little {
        b.core_sets
            .insert("little".into(), CpuList::new("0-3").unwrap());
        b.core_sets
            .insert("big".into(), CpuList::new("4-7").unwrap());
    }
    b
}

#[test]
fn default_policy_denies_everything_and_sets_ceilings() {
    let s = PolicySet::load_dir(&policies_dir().join("policies.d")).unwrap();
    let b = BoardFacts::default();
    let g = check(&s, "org.any.App", "", &b).unwrap();
    assert!(g.permissions.is_empty());
    assert_eq!(g.limits.memory_max.unwrap().to_string(), "128M");
    assert_eq!(g.limits.pids_max, Some(256));
    let e = check(&s, "org.any.App", "network = true", &b).unwrap_err();
    assert_eq!(e.class().exit_code(), 4);
}

#[test]
fn hmi_gets_gpu_and_input_with_its_limits() {
    let s = without_debug();
    let req = "devices = [\"input\", \"fbdev\"]\nsockets = [\"wayland\"]\nportals = [\"gpu\"]";
    let gpu_board = board(&["gpu", "input"], &["/dev/dri/renderD128"], false);
    let g = check(&s, "com.example.Hmi", req, &gpu_board).unwrap();
    let devs: Vec<_> = g
        .permissions
        .devices
        .iter()
        .map(|d| d.to_string())
        .collect();
    // The GPU comes through the portal, never as a device node in the sandbox.
    assert_eq!(devs, ["input"]);
    let portals: Vec<_> = g
        .permissions
        .portals
        .iter()
        .map(|p| p.to_string())
        .collect();
    assert_eq!(portals, ["gpu"]);
    assert_eq!(g.dropped().len(), 1);
    assert_eq!(g.dropped()[0].value, "fbdev");
    let cg = g.cgroup_limits();
    assert_eq!(cg.cpu_max_percent, Some(30));
    assert_eq!(cg.memory_max, Some(256 << 20));
    assert_eq!(cg.memory_high, Some(224 << 20));
    assert_eq!(cg.memory_swap_max, Some(0), "from the default policy");
    eprintln!("{}", g.render_text(&[]));
    // No GPU on this board: the framebuffer fallback instead, and no gpu portal.
    let g = check(&s, "com.example.Hmi", req, &board(&["input"], &[], false)).unwrap();
    let devs: Vec<_> = g
        .permissions
        .devices
        .iter()
        .map(|d| d.to_string())
        .collect();
    assert_eq!(devs, ["fbdev", "input"]);
    assert!(g.permissions.portals.is_empty());
    assert_eq!(g.dropped()[0].value, "gpu");
    // devel is not granted without the override.
    assert!(
        check(&s, "com.example.Hmi", "allow = [\"devel\"]", &gpu_board)
            .unwrap()
            .permissions
            .allow
            .is_empty()
    );
}

#[test]
fn debug_override_grants_devel_to_one_app_only() {
    let s = installed();
    let b = board(&["gpu"], &["/dev/dri/renderD128"], false);
    let g = check(&s, "com.example.Hmi", "allow = [\"devel\"]", &b).unwrap();
    assert_eq!(g.permissions.allow.len(), 1);
    assert_eq!(g.limits.memory_max.unwrap().to_string(), "512M");
    let src = g.provenance.iter().find(|p| p.value == "devel").unwrap();
    assert!(src
        .source
        .as_ref()
        .unwrap()
        .file
        .contains("90-debug-override"));
    assert!(check(&s, "com.example.Telematics", "allow = [\"devel\"]", &b).is_err());
}

/// What the telematics app's manifest asks for: its backend and the update servers.
const TELEMATICS_NET: &str =
    "network = { egress = [\"telematics.example.com:8883/tcp\", \"198.51.100.0/24:443\"] }";

#[test]
fn telematics_gets_its_backend_and_64m_and_never_canbus() {
    let s = installed();
    let b = board(&[], &[], true);
    let g = check(
        &s,
        "com.example.Telematics",
        &format!("{TELEMATICS_NET}\ndbus-talk = [\"org.freedesktop.ModemManager1\"]"),
        &b,
    )
    .unwrap();
    let net = &g.permissions.network;
    assert!(net.is_granted() && !net.any && !net.dns);
    assert!(net.listen.is_empty() && net.talk_to.is_empty());
    let egress: Vec<_> = net.egress.iter().map(|e| e.to_string()).collect();
    assert_eq!(
        egress,
        ["198.51.100.0/24:443/tcp", "telematics.example.com:8883/tcp"]
    );
    assert_eq!(net.names().collect::<Vec<_>>(), ["telematics.example.com"]);
    let cg = g.cgroup_limits();
    assert_eq!(cg.memory_max, Some(64 << 20));
    assert_eq!(cg.cpus.unwrap().as_str(), "0-3");
    let text = g.render_text(&[]);
    assert!(text.contains("cpuset 0-3 (little)"), "{text}");
    assert!(
        text.contains("  network.egress telematics.example.com:8883/tcp  [")
            && text.contains("20-telematics.toml rule 1 (line 4)]"),
        "{text}"
    );
    assert!(
        text.contains("egress only to the listed destinations"),
        "{text}"
    );
    // A narrower request is covered too.
    assert!(check(
        &s,
        "com.example.Telematics",
        "network = { egress = [\"198.51.100.20:443\"] }",
        &b
    )
    .is_ok());
    // Boards without core sets: no pinning, no error.
    assert!(check(
        &s,
        "com.example.Telematics",
        TELEMATICS_NET,
        &BoardFacts::default()
    )
    .unwrap()
    .limits
    .cpuset
    .is_none());
    let e = check(&s, "com.example.Telematics", "allow = [\"canbus\"]", &b).unwrap_err();
    assert_eq!(
        e.to_string(),
        "com.example.Telematics requests allow=[canbus] beyond what policy grants"
    );
    // Any network, DNS, other destinations and inbound ports are beyond the allowlist.
    for (req, excess) in [
        ("network = true", "network=true"),
        ("network = { dns = true }", "network.dns=true"),
        (
            "network = { egress = [\"telematics.example.com:443\"] }",
            "network.egress=[telematics.example.com:443/tcp]",
        ),
        (
            "network = { egress = [\"198.51.0.0/16:443\"] }",
            "network.egress=[198.51.0.0/16:443/tcp]",
        ),
        (
            "network = { listen = [\"8883\"] }",
            "network.listen=[8883/tcp]",
        ),
    ] {
        let e = check(&s, "com.example.Telematics", req, &b).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!("com.example.Telematics requests {excess} beyond what policy grants"),
            "{req}"
        );
    }
}

#[test]
fn bluetooth_apps_get_the_portal_only_where_the_board_has_bluetooth() {
    let s = installed();
    let bt = board(&["bluetooth"], &[], false);
    let req = "portals = [\"bluetooth\"]\n[bluetooth]\ndevices = [\"*\"]\n\
               services = [\"180d\", \"180f\"]\nroles = [\"scan\", \"connect\", \"notify\"]";
    let g = check(&s, "com.example.FitnessHmi", req, &bt).unwrap();
    assert_eq!(g.permissions.bluetooth.services.len(), 2);
    assert!(g.permissions.allow.is_empty() && g.permissions.dbus_talk.is_empty());
    assert!(check(&s, "com.example.FitnessHmi", req, &BoardFacts::default()).is_err());
    // Beyond the example's grant: a role, a service, raw sockets, BlueZ itself.
    for extra in [
        "portals = [\"bluetooth\"]\n[bluetooth]\ndevices = [\"*\"]\nservices = [\"180f\"]\nroles = [\"write\"]",
        "portals = [\"bluetooth\"]\n[bluetooth]\ndevices = [\"*\"]\nservices = [\"181a\"]\nroles = [\"scan\"]",
        "allow = [\"bluetooth\"]",
        "dbus-talk = [\"org.bluez\"]",
    ] {
        let e = check(&s, "com.example.FitnessHmi", extra, &bt).unwrap_err();
        assert!(e.to_string().contains("beyond what policy grants"), "{extra}: {e}");
    }
    // The diagnostics app reaches its one dongle by address, never `*`.
    let dongle = "portals = [\"bluetooth\"]\n[bluetooth]\ndevices = [\"C0:FF:EE:00:00:01\"]\n\
                  services = [\"6e400001-b5a3-f393-e0a9-e50e24dcca9e\"]\nroles = [\"connect\", \"write\"]";
    assert!(check(&s, "com.example.Diagnostics", dongle, &bt).is_ok());
    let any = dongle.replace("C0:FF:EE:00:00:01", "*");
    assert!(check(&s, "com.example.Diagnostics", &any, &bt).is_err());
}
