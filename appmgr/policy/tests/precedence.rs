//! Precedence across files and rules, denials, limits, conditions, excess, display.

use appmgr_policy::*;
use appmgr_types::{AppId, ErrorClass, Permissions, Provision, Resources};

fn set(files: &[(&str, &str)]) -> PolicySet {
    PolicySet::from_sources(
        files
            .iter()
            .map(|(n, s)| (n.to_string(), s.as_bytes().to_vec())),
    )
    .unwrap()
}

struct Req {
    app: AppId,
    perms: Permissions,
    res: Resources,
}

fn req(app: &str, perms: &str, res: &str) -> Req {
    Req {
        app: AppId::new(app).unwrap(),
        perms: toml::from_str(perms).unwrap(),
        res: toml::from_str(res).unwrap(),
    }
}

impl Req {
    fn r(&self) -> Request<'_> {
        Request {
            app: &self.app,
            permissions: &self.perms,
            resources: &self.res,
        }
    }
}

fn board() -> BoardFacts {
    BoardFacts::default()
}

fn eval(s: &PolicySet, r: &Req) -> EffectiveGrant {
    s.evaluate(&r.r(), &board()).unwrap()
}

fn refusal(s: &PolicySet, r: &Req) -> String {
    let e = s.check(&r.r(), &board()).unwrap_err();
    assert_eq!(e.class(), ErrorClass::Policy);
    assert_eq!(e.class().exit_code(), 4);
    e.to_string()
}

#[test]
fn no_policy_grants_nothing() {
    let s = PolicySet::empty();
    let nothing = req("org.x.App", "", "");
    let g = s.check(&nothing.r(), &board()).unwrap();
    assert!(g.permissions.is_empty());
    let wants = req("org.x.App", "network = true", "");
    assert_eq!(
        refusal(&s, &wants),
        "org.x.App requests network=true beyond what policy grants"
    );
}

#[test]
fn excess_message_names_exact_excess() {
    let s = set(&[(
        "10.toml",
        "[[rule]]\napps = [\"org.x.*\"]\ngrant = { devices = [\"gpu\"] }\n",
    )]);
    let r = req(
        "org.x.App",
        "network = true\ndevices = [\"gpu\", \"camera\"]",
        "",
    );
    assert_eq!(
        refusal(&s, &r),
        "org.x.App requests network=true and devices=[camera] beyond what policy grants"
    );
    let g = eval(&s, &r);
    assert_eq!(g.excess.len(), 2);
    assert_eq!(
        g.permissions.devices.len(),
        1,
        "gpu is still what would be granted"
    );
}

#[test]
fn grants_union_across_files_and_intersect_with_request() {
    let s = set(&[
        (
            "20-b.toml",
            "[[rule]]\napps = [\"org.x.App\"]\ngrant = { devices = [\"input\"], sockets = [\"wayland\"] }\n",
        ),
        (
            "10-a.toml",
            "[[rule]]\napps = [\"org.x.*\"]\ngrant = { devices = [\"gpu\"], network = true }\n",
        ),
    ]);
    assert_eq!(s.files(), ["10-a.toml", "20-b.toml"], "name order");
    let r = req("org.x.App", "devices = [\"gpu\", \"input\"]", "");
    let g = s.check(&r.r(), &board()).unwrap();
    assert_eq!(g.permissions.devices.len(), 2);
    assert!(
        !g.permissions.network.is_granted(),
        "granted but not requested"
    );
    assert!(g.permissions.sockets.is_empty());
    let src = |v: &str| {
        g.provenance
            .iter()
            .find(|p| p.value == v)
            .unwrap()
            .source
            .clone()
            .unwrap()
    };
    assert_eq!(src("gpu").file, "10-a.toml");
    assert_eq!(src("input").file, "20-b.toml");
    assert_eq!((src("input").rule, src("input").line), (1, 1));
}

#[test]
fn explicit_denials_always_win() {
    // The denial is in an earlier file and in a less specific rule than the grant.
    let s = set(&[
        (
            "00-deny.toml",
            "[[rule]]\napps = [\"*\"]\ndeny = { network = true, allow = [\"devel\"] }\n",
        ),
        (
            "90-grant.toml",
            "[[rule]]\napps = [\"org.x.App\"]\ngrant = { network = true, allow = [\"devel\"] }\non-excess = \"drop\"\n",
        ),
    ]);
    let r = req("org.x.App", "network = true\nallow = [\"devel\"]", "");
    let g = s.check(&r.r(), &board()).unwrap();
    assert!(g.permissions.is_empty());
    assert_eq!(g.dropped().len(), 2);
    match &g.dropped()[0].reason {
        ExcessReason::Denied { by } => assert_eq!(by.file, "00-deny.toml"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn denials_match_by_overlap() {
    let s = set(&[(
        "10.toml",
        r#"[[rule]]
apps = ["org.x.App"]
grant = { dbus-talk = ["org.x.*", "org.y.*"], filesystems = ["/data:rw"] }
deny = { dbus-talk = ["org.x.Secret"], filesystems = ["/data/keys"] }
on-excess = "drop"
"#,
    )]);
    let r = req(
        "org.x.App",
        r#"dbus-talk = ["org.x.*", "org.y.Public"]
filesystems = ["/data:ro", "/data/maps:rw", "/data/keys/a:ro"]"#,
        "",
    );
    let g = eval(&s, &r);
    let talk: Vec<_> = g.permissions.dbus_talk.iter().map(|b| b.as_str()).collect();
    assert_eq!(talk, ["org.y.Public"], "org.x.* would reach org.x.Secret");
    let fs: Vec<_> = g
        .permissions
        .filesystems
        .iter()
        .map(|f| f.to_string())
        .collect();
    assert_eq!(fs, ["/data/maps:rw"], "/data would expose /data/keys");
    assert_eq!(g.dropped().len(), 3);
}

#[test]
fn grants_cover_by_pattern_and_access() {
    let s = set(&[(
        "10.toml",
        "[[rule]]\napps = [\"org.x.App\"]\ngrant = { dbus-talk = [\"org.freedesktop.*\"], filesystems = [\"/media:ro\"] }\n",
    )]);
    let ok = req(
        "org.x.App",
        "dbus-talk = [\"org.freedesktop.NetworkManager\"]\nfilesystems = [\"/media/usb\"]",
        "",
    );
    assert!(s.check(&ok.r(), &board()).is_ok());
    let rw = req("org.x.App", "filesystems = [\"/media/usb:rw\"]", "");
    assert_eq!(
        refusal(&s, &rw),
        "org.x.App requests filesystems=[/media/usb:rw] beyond what policy grants"
    );
}

const LIMITS: &str = r#"
[[rule]]
apps = ["*"]
resources = { memory-max = "128M", cpu-max = "50%", pids-max = 256 }

[[rule]]
apps = ["org.x.*"]
resources = { memory-max = "256M" }
"#;

#[test]
fn most_specific_pattern_decides_each_limit() {
    // The exact rule comes first in reading order and still wins.
    let s = set(&[
        (
            "05-exact.toml",
            "[[rule]]\napps = [\"org.x.App\"]\nresources = { memory-max = \"64M\" }\n",
        ),
        ("10-limits.toml", LIMITS),
    ]);
    let mem = |app: &str| {
        let g = eval(&s, &req(app, "", ""));
        (
            g.limits.memory_max.unwrap().to_string(),
            g.limits.cpu_max.unwrap().to_string(),
        )
    };
    assert_eq!(mem("org.x.App"), ("64M".into(), "50%".into()));
    assert_eq!(mem("org.x.Other"), ("256M".into(), "50%".into()));
    assert_eq!(mem("com.y.App"), ("128M".into(), "50%".into()));
    let g = eval(&s, &req("org.x.App", "", ""));
    let mem_src = g.provenance.iter().find(|p| p.key == "memory-max").unwrap();
    assert_eq!(mem_src.source.as_ref().unwrap().file, "05-exact.toml");
    let cpu_src = g.provenance.iter().find(|p| p.key == "cpu-max").unwrap();
    assert_eq!(cpu_src.source.as_ref().unwrap().rule, 1);
    assert_eq!(cpu_src.source.as_ref().unwrap().line, 2);
}

#[test]
fn equally_specific_rules_later_wins() {
    let s = set(&[
        (
            "10.toml",
            "[[rule]]\napps = [\"org.x.*\"]\nresources = { pids-max = 100 }\n",
        ),
        (
            "20.toml",
            "[[rule]]\napps = [\"org.x.*\"]\nresources = { pids-max = 50 }\n",
        ),
    ]);
    assert_eq!(eval(&s, &req("org.x.A", "", "")).limits.pids_max, Some(50));
}

#[test]
fn app_request_lowers_ceiling_and_cannot_raise_it() {
    let s = set(&[("10.toml", LIMITS)]);
    let g = s
        .check(&req("org.x.App", "", "memory-max = \"32M\"").r(), &board())
        .unwrap();
    assert_eq!(g.limits.memory_max.unwrap().to_string(), "32M");
    assert!(g
        .provenance
        .iter()
        .any(|p| p.key == "memory-max" && p.source.is_none()));
    let big = req("org.x.App", "", "memory-max = \"512M\"");
    assert_eq!(
        refusal(&s, &big),
        "org.x.App requests memory-max=512M (policy allows 256M) beyond what policy grants"
    );
    // With drop, the ceiling is enforced and the excess reported.
    let s = set(&[
        ("10.toml", LIMITS),
        (
            "20.toml",
            "[[rule]]\napps = [\"org.x.App\"]\non-excess = \"drop\"\n",
        ),
    ]);
    let g = s.check(&big.r(), &board()).unwrap();
    assert_eq!(g.limits.memory_max.unwrap().to_string(), "256M");
    assert_eq!(g.dropped()[0].key, "memory-max");
    // An app may set a limit no policy sets.
    let s = PolicySet::empty();
    let g = s
        .check(&req("org.x.App", "", "pids-max = 10").r(), &board())
        .unwrap();
    assert_eq!(g.limits.pids_max, Some(10));
    assert!(s
        .evaluate(&req("org.x.App", "", "pids-max = 0").r(), &board())
        .is_err());
}

#[test]
fn on_excess_is_decided_by_the_most_specific_rule() {
    let s = set(&[
        (
            "10.toml",
            "[[rule]]\napps = [\"*\"]\non-excess = \"drop\"\n",
        ),
        (
            "20.toml",
            "[[rule]]\napps = [\"org.x.Strict\"]\non-excess = \"refuse\"\n",
        ),
    ]);
    let r = req("org.x.Lax", "devices = [\"camera\"]", "");
    let g = s.check(&r.r(), &board()).unwrap();
    assert!(g.permissions.is_empty());
    assert_eq!(g.dropped().len(), 1);
    assert_eq!(g.on_excess_source.as_ref().unwrap().file, "10.toml");
    let r = req("org.x.Strict", "devices = [\"camera\"]", "");
    assert!(s.check(&r.r(), &board()).is_err());
}

#[test]
fn updates_that_grow_the_request_are_refused() {
    let s = set(&[(
        "10.toml",
        "[[rule]]\napps = [\"org.x.App\"]\ngrant = { devices = [\"gpu\"] }\n",
    )]);
    let v1 = req("org.x.App", "devices = [\"gpu\"]", "");
    assert!(s.check(&v1.r(), &board()).is_ok());
    let v2 = req(
        "org.x.App",
        "devices = [\"gpu\", \"camera\"]\nnetwork = true",
        "",
    );
    let msg = refusal(&s, &v2);
    assert!(
        msg.contains("devices=[camera]") && msg.contains("network=true"),
        "{msg}"
    );
    assert!(!msg.contains("gpu"), "{msg}");
}

const CONDITIONAL: &str = r#"
[[rule]]
apps = ["org.x.Hmi"]
grant = { devices = ["gpu"] }
when = { has-devices = ["gpu"], has-nodes = ["/dev/dri/renderD128"] }

[[rule]]
apps = ["org.x.Hmi"]
grant = { devices = ["fbdev"] }
when = { lacks-devices = ["gpu"] }

[[rule]]
apps = ["org.x.Hmi"]
on-excess = "drop"
"#;

#[test]
fn conditional_grants_follow_the_board() {
    let s = set(&[("10.toml", CONDITIONAL)]);
    let r = req("org.x.Hmi", "devices = [\"gpu\", \"fbdev\"]", "");
    let devs = |b: &BoardFacts| -> Vec<String> {
        s.check(&r.r(), b)
            .unwrap()
            .permissions
            .devices
            .iter()
            .map(|d| d.to_string())
            .collect()
    };
    let mut with_gpu = BoardFacts::default();
    with_gpu
        .devices
        .insert("gpu".to_string().try_into().unwrap());
    with_gpu.present_nodes.insert("/dev/dri/renderD128".into());
    assert_eq!(devs(&with_gpu), ["gpu"]);
    // Profile maps a GPU but the render node is missing: neither rule applies.
    let mut no_node = with_gpu.clone();
    no_node.present_nodes.clear();
    assert!(devs(&no_node).is_empty());
    assert_eq!(devs(&BoardFacts::default()), ["fbdev"]);
}

#[test]
fn core_sets_resolve_from_the_board() {
    let s = set(&[(
        "10.toml",
        "[[rule]]\napps = [\"org.x.*\"]\nresources = { cpuset = \"little\", cpu-weight = 50, memory-high = \"300M\", memory-max = \"256M\", memory-swap-max = 0 }\n",
    )]);
    let r = req("org.x.App", "", "");
    let mut b = BoardFacts::default();
    b.core_sets
        .insert("little".into(), appmgr_cgroup::CpuList::new("0-3").unwrap());
    let g = s.check(&r.r(), &b).unwrap();
    let cg = g.cgroup_limits();
    assert_eq!(cg.cpus.unwrap().as_str(), "0-3");
    assert_eq!(cg.cpu_weight, Some(50));
    assert_eq!(cg.memory_high, Some(256 << 20), "high clamped to max");
    assert_eq!(cg.memory_swap_max, Some(0));
    match s.evaluate(&r.r(), &BoardFacts::default()).unwrap_err() {
        e @ PolicyError::UnknownCoreSet { .. } => {
            assert_eq!(e.class(), ErrorClass::Policy);
            assert!(e.to_string().starts_with("10.toml:1: rule 1"), "{e}");
        }
        other => panic!("{other}"),
    }
}

/// The text names the rule behind each item and marks what the launcher does not provide
/// (whether items are provided is compared with the sandbox itself in
/// `appmgr/cli/tests/shown.rs`); the cgroup limits come from the same value.
#[test]
fn text_names_the_rule_and_marks_what_is_not_provided() {
    let s = set(&[
        ("10.toml", LIMITS),
        (
            "20.toml",
            "[[rule]]\napps = [\"org.x.App\"]\ngrant = { devices = [\"gpu\", \"input\"], network = true, filesystems = [\"/media:rw\"] }\n",
        ),
    ]);
    let r = req(
        "org.x.App",
        "devices = [\"gpu\", \"input\"]\nnetwork = true\nfilesystems = [\"/media/usb\"]",
        "cpu-max = \"30%\"",
    );
    let g = s.check(&r.r(), &board()).unwrap();
    let entries = g.permissions.entries();
    let provided: Vec<Provision> = entries
        .iter()
        .map(|e| {
            if e.key() == "devices" && e.value() == "input" {
                Provision::not_provided(e, "no device node for it on this host")
            } else {
                Provision::provided(e)
            }
        })
        .collect();
    let text = g.render_text(&provided);
    assert!(
        text.contains("  devices gpu  [20.toml rule 1 (line 1)]\n"),
        "{text}"
    );
    assert!(
        text.contains(
            "  devices input  [20.toml rule 1 (line 1)]  (not provided on this host: no device node for it on this host)\n"
        ),
        "{text}"
    );
    assert_eq!(text.matches("not provided").count(), 1, "{text}");
    assert!(
        text.contains("cpu-max 30%  [requested by the app]"),
        "{text}"
    );
    let json = serde_json::to_value(appmgr_policy::ShownGrant {
        grant: &g,
        provided: &provided,
    })
    .unwrap();
    // network, devices gpu, devices input, filesystems: in display order.
    assert_eq!(json["provided"][2]["value"], "input", "{json}");
    assert_eq!(json["provided"][2]["status"], "not-provided", "{json}");
    assert_eq!(json["provided"][1]["status"], "provided", "{json}");
    assert!(json["provided"][1].get("reason").is_none(), "{json}");
    assert_eq!(json["limits"]["cpu-max"], "30%");
    // The cgroup limits come from the same struct.
    let cg = g.cgroup_limits();
    assert_eq!(cg.cpu_max_percent, Some(30));
    assert_eq!(cg.memory_max, Some(256 << 20));
    assert_eq!(cg.pids_max, Some(256));
}

#[test]
fn display_escapes_control_and_bidi_characters() {
    let s = set(&[(
        "10-\u{202e}lmot.toml",
        "[[rule]]\napps = [\"org.x.App\"]\ngrant = { network = true }\n",
    )]);
    let g = eval(&s, &req("org.x.App", "network = true", ""));
    let text = g.render_text(&[]);
    assert!(!text.contains('\u{202e}'), "{text}");
    assert!(text.contains("10-\\u{202e}lmot.toml"), "{text}");
    let json = serde_json::to_string(&g).unwrap();
    assert!(!json.contains('\u{202e}'), "{json}");
}

#[test]
fn load_dir_reads_toml_files_in_name_order() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    std::fs::write(p.join("20-b.toml"), "[[rule]]\napps = [\"b.B\"]\n").unwrap();
    std::fs::write(p.join("10-a.toml"), "[[rule]]\napps = [\"a.A\"]\n").unwrap();
    std::fs::write(p.join(".hidden.toml"), "garbage").unwrap();
    std::fs::write(p.join("30-c.toml~"), "garbage").unwrap();
    std::fs::write(p.join("README"), "garbage").unwrap();
    let s = PolicySet::load_dir(p).unwrap();
    let names: Vec<_> = s
        .files()
        .iter()
        .map(|f| f.rsplit('/').next().unwrap().to_string())
        .collect();
    assert_eq!(names, ["10-a.toml", "20-b.toml"]);
    assert_eq!(s.rule_count(), 2);
    assert_eq!(
        PolicySet::load_dir(&p.join("missing"))
            .unwrap()
            .rule_count(),
        0
    );
    std::fs::write(
        p.join("15-bad.toml"),
        "[[rule]]\napps = [\"a.A\"]\nnope = 1\n",
    )
    .unwrap();
    let e = PolicySet::load_dir(p).unwrap_err().to_string();
    assert!(
        e.contains("15-bad.toml:3:") && e.contains("key `nope`"),
        "{e}"
    );
}

#[test]
fn evaluation_is_fast_with_many_rules() {
    // 50 files, 200 rules; not a benchmark, a guard against accidental quadratic work.
    let files: Vec<(String, Vec<u8>)> = (0..50)
        .map(|f| {
            let mut s = String::new();
            for r in 0..4 {
                s.push_str(&format!(
                    "[[rule]]\napps = [\"com.vendor{f}.app{r}.*\", \"org.other{f}.*\"]\ngrant = {{ devices = [\"gpu\"], dbus-talk = [\"org.v{f}.*\"] }}\nresources = {{ memory-max = \"{}M\" }}\n\n",
                    64 + r
                ));
            }
            (format!("{f:02}.toml"), s.into_bytes())
        })
        .collect();
    let s = PolicySet::from_sources(files).unwrap();
    assert_eq!(s.rule_count(), 200);
    let r = req(
        "com.vendor7.app2.Main",
        "devices = [\"gpu\"]\ndbus-talk = [\"org.v7.X\"]",
        "",
    );
    let start = std::time::Instant::now();
    for _ in 0..200 {
        let g = s.check(&r.r(), &board()).unwrap();
        assert_eq!(g.limits.memory_max.unwrap().to_string(), "66M");
        let _ = g.cgroup_limits();
    }
    let per = start.elapsed() / 200;
    eprintln!("evaluation: {per:?} per app");
    assert!(per < std::time::Duration::from_millis(20), "{per:?}");
}

/// What an evaluation depends on besides the files: the device nodes the conditions name
/// (a kept launch plan carries them as inputs).
#[test]
fn condition_nodes_lists_every_node_a_condition_names() {
    let s = PolicySet::from_sources([(
        "10-a.toml".to_string(),
        b"[[rule]]\napps = [\"a.b\"]\nwhen = { has-nodes = [\"/dev/dri/renderD128\"] }\n\
          [[rule]]\napps = [\"*\"]\nwhen = { lacks-nodes = [\"/dev/mali0\"], has-devices = [\"gpu\"] }\n\
          [[rule]]\napps = [\"c.d\"]\n"
            .to_vec(),
    )])
    .unwrap();
    assert_eq!(
        s.condition_nodes().into_iter().collect::<Vec<_>>(),
        ["/dev/dri/renderD128", "/dev/mali0"]
    );
}

#[test]
fn sensor_grants_intersect_per_channel_and_cap_the_rate() {
    let s = set(&[(
        "10.toml",
        "[[rule]]\napps = [\"org.x.*\"]\ngrant = { portals = [\"sensors\"], sensors = { channels = [\"accel_x\", \"accel_y\"], max-rate-hz = 50 } }\n\
         [[rule]]\napps = [\"org.x.Bad\"]\ndeny = { sensors = { channels = [\"accel_y\"] } }\n",
    )]);
    // Within the grant: exactly what was asked for, not the rest of the grant.
    let ok = req(
        "org.x.App",
        "portals = [\"sensors\"]\n[sensors]\nchannels = [\"accel_x\"]\nmax-rate-hz = 20",
        "",
    );
    let g = s.check(&ok.r(), &board()).unwrap();
    let ch: Vec<&str> = g
        .permissions
        .sensors
        .channels
        .iter()
        .map(|c| c.as_str())
        .collect();
    assert_eq!(ch, ["accel_x"]);
    assert_eq!(g.permissions.sensors.max_rate_hz, Some(20));
    // A channel or a rate beyond the grant is named in the refusal.
    let more = req(
        "org.x.App",
        "portals = [\"sensors\"]\n[sensors]\nchannels = [\"accel_x\", \"temp\"]\nmax-rate-hz = 20",
        "",
    );
    let m = refusal(&s, &more);
    assert!(m.contains("sensors.channels") && m.contains("temp"), "{m}");
    let fast = req(
        "org.x.App",
        "portals = [\"sensors\"]\n[sensors]\nchannels = [\"accel_x\"]\nmax-rate-hz = 51",
        "",
    );
    let m = refusal(&s, &fast);
    assert!(m.contains("sensors.max-rate-hz") && m.contains("51"), "{m}");
    // An explicit denial wins over the grant.
    let denied = req(
        "org.x.Bad",
        "portals = [\"sensors\"]\n[sensors]\nchannels = [\"accel_y\"]",
        "",
    );
    let m = refusal(&s, &denied);
    assert!(m.contains("accel_y"), "{m}");
    // Keys are checked: a rate of 0 or an unknown key is an error, not a silent default.
    assert!(toml::from_str::<Permissions>("[sensors]\nmax-rate-hz = 0").is_err());
    assert!(toml::from_str::<Permissions>("[sensors]\nrate = 5").is_err());
    assert!(toml::from_str::<Permissions>("[sensors]\nchannels = [\"Accel\"]").is_err());
}

#[test]
fn bluetooth_grants_intersect_per_device_service_and_role() {
    let s = set(&[(
        "30.toml",
        "[[rule]]\napps = [\"org.x.*\"]\ngrant = { portals = [\"bluetooth\"], bluetooth = { devices = [\"*\"], services = [\"180f\", \"180d\"], roles = [\"scan\", \"connect\", \"notify\"] } }\n\
         [[rule]]\napps = [\"org.x.One\"]\ngrant = { bluetooth = { devices = [\"AA:BB:CC:DD:EE:FF\"], services = [\"180f\"], roles = [\"connect\"] } }\n\
         [[rule]]\napps = [\"org.x.Bad\"]\ndeny = { bluetooth = { devices = [\"11:22:33:44:55:66\"], roles = [\"notify\"] } }\n",
    )]);
    // `*` granted covers an address asked for; the 128-bit form of a granted 16-bit UUID
    // is the same service; only what was asked for is granted.
    let ok = req(
        "org.x.App",
        "portals = [\"bluetooth\"]\n[bluetooth]\ndevices = [\"aa:bb:cc:dd:ee:ff\"]\nservices = [\"0000180F-0000-1000-8000-00805f9b34fb\"]\nroles = [\"connect\"]",
        "",
    );
    let g = s.check(&ok.r(), &board()).unwrap();
    let b = &g.permissions.bluetooth;
    assert_eq!(
        (
            b.devices.iter().map(|d| d.to_string()).collect::<Vec<_>>(),
            b.services.iter().map(|u| u.to_string()).collect::<Vec<_>>(),
            b.roles.iter().map(|r| r.to_string()).collect::<Vec<_>>()
        ),
        (
            vec!["AA:BB:CC:DD:EE:FF".to_string()],
            vec!["180f".to_string()],
            vec!["connect".to_string()]
        )
    );
    // A service, a role beyond the grant is named in the refusal.
    let m = refusal(
        &s,
        &req("org.x.App", "[bluetooth]\nservices = [\"1812\"]", ""),
    );
    assert!(
        m.contains("bluetooth.services") && m.contains("1812"),
        "{m}"
    );
    let m = refusal(
        &s,
        &req("org.x.App", "[bluetooth]\nroles = [\"write\"]", ""),
    );
    assert!(m.contains("bluetooth.roles") && m.contains("write"), "{m}");
    // A grant of one address does not cover `*`.
    let one = set(&[(
        "30.toml",
        "[[rule]]\napps = [\"org.x.One\"]\ngrant = { bluetooth = { devices = [\"AA:BB:CC:DD:EE:FF\"] } }\n",
    )]);
    let m = refusal(
        &one,
        &req("org.x.One", "[bluetooth]\ndevices = [\"*\"]", ""),
    );
    assert!(m.contains("bluetooth.devices") && m.contains('*'), "{m}");
    // Denials match by overlap: denying one address refuses `*`, which would reach it.
    let m = refusal(&s, &req("org.x.Bad", "[bluetooth]\ndevices = [\"*\"]", ""));
    assert!(m.contains("bluetooth.devices"), "{m}");
    let m = refusal(
        &s,
        &req("org.x.Bad", "[bluetooth]\nroles = [\"notify\"]", ""),
    );
    assert!(m.contains("notify"), "{m}");
    assert!(s
        .check(
            &req(
                "org.x.Bad",
                "[bluetooth]\ndevices = [\"AA:BB:CC:DD:EE:FF\"]",
                ""
            )
            .r(),
            &board()
        )
        .is_ok());
    // Keys and values are checked; adapters and pairing have no key at all.
    for bad in [
        "[bluetooth]\ndevices = [\"AA:BB:CC:DD:EE\"]",
        "[bluetooth]\nservices = [\"18f\"]",
        "[bluetooth]\nroles = [\"pair\"]",
        "[bluetooth]\nadapters = [\"hci0\"]",
        "[bluetooth]\npower = true",
    ] {
        assert!(toml::from_str::<Permissions>(bad).is_err(), "{bad}");
    }
}

#[test]
fn audio_roles_are_granted_and_denied_one_by_one() {
    let s = set(&[
        (
            "10-nav.toml",
            "[[rule]]\napps = [\"org.x.*\"]\ngrant = { sockets = [\"pipewire\"], audio = [\"playback\", \"capture\"] }\n",
        ),
        (
            "20-no-mic.toml",
            "[[rule]]\napps = [\"org.x.Nav\"]\ndeny = { audio = [\"capture\"] }\n",
        ),
    ]);
    let r = req(
        "org.x.Nav",
        "sockets = [\"pipewire\"]\naudio = [\"playback\"]",
        "",
    );
    let g = s.check(&r.r(), &board()).unwrap();
    assert_eq!(
        g.permissions
            .audio
            .iter()
            .map(|a| a.as_str())
            .collect::<Vec<_>>(),
        ["playback"]
    );
    assert!(g
        .render_text(&[])
        .contains("audio playback  [10-nav.toml rule 1"));
    let greedy = req(
        "org.x.Nav",
        "sockets = [\"pipewire\"]\naudio = [\"playback\", \"capture\"]",
        "",
    );
    assert_eq!(
        refusal(&s, &greedy),
        "org.x.Nav requests audio=[capture] beyond what policy grants"
    );
    // Unknown roles are refused when the manifest or policy is read.
    assert!(toml::from_str::<Permissions>("audio = [\"listen\"]").is_err());
    assert!(PolicySet::from_sources([(
        "x.toml".to_string(),
        b"[[rule]]\napps = [\"*\"]\ngrant = { audio = [\"record\"] }\n".to_vec()
    )])
    .is_err());
}
