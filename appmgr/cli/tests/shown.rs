//! "Shown == provided": `appmgr permissions --json` compared, item by item, with what the
//! probe (`appmgr-probe observe`) sees from inside the sandbox of `appmgr run`, on a
//! private dbus-daemon with the per-app bus policy. As root.
use appmgr_testkit::*;
use serde_json::Value;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

fn probe_bin() -> PathBuf {
    appmgr_testkit::static_probe()
}

/// A private system-like bus in its own mount namespace (its /run/userdb is `userdb/`,
/// nss-systemd resolves the app uids from there), with root allowed to own names, plus a
/// responder (the probe's `bus-serve`) owning `names`. Killed on drop.
struct Bus {
    bus: PrivateBus,
    responders: Vec<Child>,
}

impl Bus {
    fn start(dir: &Path, names: &[&str]) -> Bus {
        let bus = PrivateBus::start(
            dir,
            BusConfig::system_like(Nss::Userdb).section(
                r#"<policy user="root">
    <allow own="*"/>
    <allow send_type="method_call"/>
  </policy>"#,
            ),
        );
        let sock = bus.socket();
        let mut b = Bus {
            bus,
            responders: Vec::new(),
        };
        // One connection per name: dbus-daemon checks `send_destination` against every
        // name the receiving connection owns, so a shared owner would let a call to an
        // ungranted name through because of the granted one.
        for n in names {
            let mut r = Command::new(probe_bin())
                .args(["bus-serve", n])
                .env(
                    "DBUS_SYSTEM_BUS_ADDRESS",
                    format!("unix:path={}", sock.display()),
                )
                .stdout(Stdio::piped())
                .spawn()
                .unwrap();
            let mut line = String::new();
            use std::io::BufRead;
            std::io::BufReader::new(r.stdout.take().unwrap())
                .read_line(&mut line)
                .unwrap();
            b.responders.push(r);
            assert_eq!(line, "ready\n", "the responder owns {n}");
        }
        b
    }

    fn socket(&self) -> PathBuf {
        self.bus.socket()
    }

    fn policy_file(&self) -> PathBuf {
        self.bus.policy_dir().join("appmgr-apps.conf")
    }
}

impl Drop for Bus {
    fn drop(&mut self) {
        // The bus itself is killed when the field drops, after its clients.
        for c in self.responders.iter_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

const GRANTED_TALK: &str = "org.example.ShownTarget";
const PORTAL: &str = appmgr_types::PORTAL_BUS_NAME;
const OTHER_TALK: &str = "org.example.ShownOther";
const OWN: &str = "org.example.ShownApp";
const OTHER_OWN: &str = "org.example.ShownNotMine";

fn host_ns(n: &str) -> String {
    fs::read_link(format!("/proc/self/ns/{n}"))
        .unwrap()
        .display()
        .to_string()
}

fn strs(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().to_string())
        .collect()
}

/// Runs the probe in the app's sandbox: (observation, stderr of `appmgr run`).
fn observe(e: &Env, id: &str, args: &[String]) -> (Value, String) {
    let mut a = vec!["run", id, "--", "observe"];
    a.extend(args.iter().map(String::as_str));
    let r = e.run(&a);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    (r.json(), r.stderr)
}

/// Asserts, for every item of `permissions --json`, that the probe's observation matches
/// its status. Returns the items seen as (key, value, provided).
fn compare(shown: &Value, seen: &Value, bus_socket_inside: &str) -> Vec<(String, String, bool)> {
    let items = shown["provided"].as_array().expect("`provided` list");
    let perms = &shown["permissions"];
    let mut out = Vec::new();
    let sockets = strs(&seen["unix_sockets"]);
    let env = strs(&seen["env"]);
    let any_bus = items
        .iter()
        .any(|i| i["key"].as_str().unwrap().starts_with("dbus-") && i["status"] == "provided");
    for i in items {
        let (k, v) = (i["key"].as_str().unwrap(), i["value"].as_str().unwrap());
        let provided = match i["status"].as_str().unwrap() {
            "provided" => {
                assert!(i.get("reason").is_none(), "{i}");
                true
            }
            "not-provided" => {
                assert!(i["reason"].as_str().is_some_and(|r| !r.is_empty()), "{i}");
                false
            }
            other => panic!("unknown status {other:?}: {i}"),
        };
        let what = format!("{k} {v} shown {}: {seen}", i["status"]);
        match k {
            "network" => assert_eq!(
                seen["namespaces"]["net"] == host_ns("net"),
                provided,
                "{what}"
            ),
            "ipc" => assert_eq!(
                seen["namespaces"]["ipc"] == host_ns("ipc"),
                provided,
                "{what}"
            ),
            "devices" => {
                // The test's board maps device NAME to /dev/net/NAME-ish nodes, see below.
                let node = match v {
                    "tun" => "/dev/net/tun",
                    "absent" => "/dev/appmgr-absent-node",
                    other => panic!("no observation for device {other}"),
                };
                assert_eq!(seen["paths"][node]["exists"], provided, "{what}");
            }
            "portals" if provided => {
                // A served portal is reached over the bus: the app's uid may call the
                // portal service's name (a responder owns it here; the portal's own
                // behaviour is tested in appmgr-portals' tests and qemu scenario 90).
                assert_eq!(seen["bus"]["talk"][PORTAL], "ok", "{what}");
                assert!(sockets.contains(&bus_socket_inside.to_string()), "{what}");
            }
            "sockets" | "portals" => {
                assert!(!provided, "no observation for a provided {k} yet: {what}");
                // Nothing a wayland/pulseaudio/pipewire/x11 socket or a portal could be:
                // the only socket in the sandbox is the bus, when a bus grant is provided.
                let expected: Vec<String> = if any_bus {
                    vec![bus_socket_inside.to_string()]
                } else {
                    vec![]
                };
                assert_eq!(sockets, expected, "{what}");
                for var in [
                    "WAYLAND_DISPLAY",
                    "DISPLAY",
                    "PULSE_SERVER",
                    "PIPEWIRE_REMOTE",
                ] {
                    assert!(
                        !env.iter().any(|e| e.starts_with(&format!("{var}="))),
                        "{what}"
                    );
                }
            }
            "dbus-talk" => {
                if provided {
                    assert_eq!(seen["bus"]["talk"][v], "ok", "{what}");
                    assert!(sockets.contains(&bus_socket_inside.to_string()), "{what}");
                } else {
                    assert_eq!(seen["bus"]["connected"], false, "{what}");
                }
            }
            "dbus-own" => {
                if provided {
                    assert_eq!(seen["bus"]["own"][v], "ok", "{what}");
                } else {
                    assert_eq!(seen["bus"]["connected"], false, "{what}");
                }
            }
            "filesystems" => {
                let (p, acc) = v.rsplit_once(':').unwrap();
                let o = &seen["paths"][p];
                assert_eq!(o["exists"], provided, "{what}");
                if provided {
                    assert_eq!(o["write"] == "ok", acc == "rw", "{what}");
                }
            }
            "allow" => {
                let (call, blocked) = match v {
                    "devel" => ("ptrace", "EPERM"),
                    "bluetooth" => ("socket_bluetooth", "EAFNOSUPPORT"),
                    "canbus" => ("socket_can", "EAFNOSUPPORT"),
                    other => panic!("no observation for allow {other}"),
                };
                assert_eq!(seen["syscalls"][call] != blocked, provided, "{what}");
            }
            other => panic!("no observation for permission kind {other:?}: add one"),
        }
        // The item is one of the effective grant's.
        match &perms[k] {
            Value::Bool(b) => assert!(*b, "{what}"),
            Value::Array(a) => assert!(a.iter().any(|x| x == v), "{what}"),
            x => panic!("{k}: {x}"),
        }
        out.push((k.to_string(), v.to_string(), provided));
    }
    // Every granted item has exactly one status.
    let n: usize = perms
        .as_object()
        .unwrap()
        .values()
        .map(|x| match x {
            Value::Bool(b) => *b as usize,
            Value::Array(a) => a.len(),
            _ => 0,
        })
        .sum();
    assert_eq!(items.len(), n, "{shown}");
    out
}

#[test]
fn permissions_json_matches_what_the_sandbox_provides() {
    require_root!("namespaces, cgroups, a private bus");
    let id = "org.example.ShownAll";
    let e = Env::new();
    fs::set_permissions(e.dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let bus = Bus::start(&e.p("bus"), &[GRANTED_TALK, OTHER_TALK, PORTAL]);
    let board = e.cfg.join("board-support/shown.toml");
    fs::create_dir_all(board.parent().unwrap()).unwrap();
    fs::write(
        &board,
        format!(
            "name = \"shown\"\narch = \"{}\"\n[devices.tun]\nnodes = [\"/dev/net/tun\"]\n\
             [devices.absent]\nnodes = [\"/dev/appmgr-absent-node*\"]\n",
            arch()
        ),
    )
    .unwrap();
    let host_toml = format!(
        "board = \"shown\"\nsystem-bus-socket = \"{}\"\nbus-policy-file = \"{}\"\nuserdb-dir = \"{}\"\n",
        bus.socket().display(),
        bus.policy_file().display(),
        e.p("bus/userdb").display()
    );
    fs::write(e.cfg.join("appmgr.toml"), &host_toml).unwrap();
    let ro = e.p("shared-ro");
    let rw = e.p("shared-rw");
    fs::create_dir_all(&ro).unwrap();
    fs::create_dir_all(&rw).unwrap();
    fs::set_permissions(&rw, fs::Permissions::from_mode(0o777)).unwrap();
    fs::set_permissions(&ro, fs::Permissions::from_mode(0o777)).unwrap();
    let missing = e.p("shared-missing");
    let perms = format!(
        "network = true\nipc = true\ndevices = [\"tun\", \"absent\"]\n\
         sockets = [\"wayland\", \"pulseaudio\", \"pipewire\", \"x11\"]\n\
         dbus-talk = [\"{GRANTED_TALK}\"]\ndbus-own = [\"{OWN}\"]\n\
         filesystems = [\"{}:ro\", \"{}:rw\", \"{}:rw\"]\nportals = [\"gpu\", \"bluetooth\", \"camera\"]\n\
         allow = [\"devel\", \"canbus\"]\n",
        ro.display(),
        rw.display(),
        missing.display()
    );
    fs::create_dir_all(e.cfg.join("policies.d")).unwrap();
    fs::write(
        e.cfg.join("policies.d/50-test.toml"),
        format!(
            "[[rule]]\napps = [\"{id}\"]\ngrant = {{ {} }}\n",
            perms.trim_end().replace('\n', ", ")
        ),
    )
    .unwrap();
    e.ok(&["install", s(&e.runtime_bundle("1.0.0"))]);
    e.install_probe_app(id, &perms);

    let args: Vec<String> = [
        format!("path:{}", ro.display()),
        format!("path:{}", rw.display()),
        format!("path:{}", missing.display()),
        "path:/dev/net/tun".into(),
        "path:/dev/appmgr-absent-node".into(),
        format!("talk:{GRANTED_TALK}"),
        format!("talk:{OTHER_TALK}"),
        format!("talk:{PORTAL}"),
        format!("own:{OWN}"),
        format!("own:{OTHER_OWN}"),
    ]
    .into();
    let inside_bus = "/run/dbus/system_bus_socket";

    // 1. The bus is up: every bus grant is provided and enforced by name.
    let shown = e.ok(&["--json", "permissions", id]).json();
    let (seen, stderr) = observe(&e, id, &args);
    let items = compare(&shown, &seen, inside_bus);
    let status = |k: &str, v: &str| {
        items
            .iter()
            .find(|(a, b, _)| a == k && b == v)
            .unwrap_or_else(|| panic!("{k} {v} not shown"))
            .2
    };
    // What this host provides and what it cannot, by kind.
    assert!(status("network", "true") && status("ipc", "true"));
    assert!(status("devices", "tun") && !status("devices", "absent"));
    for s in ["wayland", "pulseaudio", "pipewire", "x11"] {
        assert!(!status("sockets", s));
    }
    // gpu and bluetooth are served (over the bus); camera has no portal.
    assert!(status("portals", "gpu") && status("portals", "bluetooth"));
    assert!(!status("portals", "camera"));
    assert!(status("dbus-talk", GRANTED_TALK) && status("dbus-own", OWN));
    assert!(status("allow", "devel") && status("allow", "canbus"));
    assert!(!status("filesystems", &format!("{}:rw", missing.display())));
    // Exactly the granted names: another service and another name are refused.
    assert_eq!(
        seen["bus"]["talk"][OTHER_TALK], "org.freedesktop.DBus.Error.AccessDenied",
        "{seen}"
    );
    assert_eq!(
        seen["bus"]["own"][OTHER_OWN], "org.freedesktop.DBus.Error.AccessDenied",
        "{seen}"
    );
    // `run` says what it does not provide, one line per item.
    assert!(
        stderr.contains(&format!(
            "appmgr: {id}: portals camera not provided on this host: appmgr serves no camera portal yet"
        )),
        "{stderr}"
    );
    assert!(!stderr.contains("dbus-talk"), "{stderr}");
    // The text form flags the same items.
    let text = e.ok(&["permissions", id]).stdout;
    for l in text
        .lines()
        .filter(|l| l.starts_with("  sockets ") || l.starts_with("  portals camera "))
    {
        assert!(l.contains("(not provided on this host: "), "{text}");
    }
    assert!(text
        .lines()
        .any(|l| l.starts_with("  portals gpu ") && !l.contains("not provided")));
    assert!(text
        .lines()
        .any(|l| l.starts_with(&format!("  dbus-talk {GRANTED_TALK} "))
            && !l.contains("not provided")));
    // The per-app bus policy `run` installed is the one appmgrd renders.
    let uid = e.ok(&["--json", "info", id]).json()["uid"]
        .as_u64()
        .unwrap();
    let policy = fs::read_to_string(bus.policy_file()).unwrap();
    assert!(
        policy.contains(&format!("<policy user=\"{uid}\">")),
        "{policy}"
    );

    // 2. No bus on this host: the bus grants are shown as not provided, `run` says so, and
    // the sandbox has no bus socket at all.
    fs::write(
        e.cfg.join("appmgr.toml"),
        host_toml.replace(s(&bus.socket()), s(&e.p("bus/not-running.sock"))),
    )
    .unwrap();
    let shown = e.ok(&["--json", "permissions", id]).json();
    let (seen, stderr) = observe(&e, id, &args);
    let items = compare(&shown, &seen, inside_bus);
    assert!(items
        .iter()
        .filter(|(k, _, _)| k.starts_with("dbus-") || k == "portals")
        .all(|(_, _, p)| !p));
    assert!(
        stderr.contains(&format!(
            "appmgr: {id}: dbus-talk {GRANTED_TALK} not provided on this host: no system bus socket"
        )),
        "{stderr}"
    );
    assert!(strs(&seen["unix_sockets"]).is_empty(), "{seen}");
}

#[test]
fn without_a_bus_grant_there_is_no_bus() {
    require_root!("namespaces, cgroups, a private bus");
    let id = "org.example.ShownNoBus";
    let e = Env::new();
    fs::set_permissions(e.dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let bus = Bus::start(&e.p("bus"), &[GRANTED_TALK]);
    fs::write(
        e.cfg.join("appmgr.toml"),
        format!(
            "system-bus-socket = \"{}\"\nbus-policy-file = \"{}\"\nuserdb-dir = \"{}\"\n",
            bus.socket().display(),
            bus.policy_file().display(),
            e.p("bus/userdb").display()
        ),
    )
    .unwrap();
    e.ok(&["install", s(&e.runtime_bundle("1.0.0"))]);
    e.install_probe_app(id, "");
    let shown = e.ok(&["--json", "permissions", id]).json();
    assert_eq!(shown["provided"], serde_json::json!([]));
    let (seen, stderr) = observe(&e, id, &[format!("talk:{GRANTED_TALK}")]);
    assert!(stderr.is_empty(), "{stderr}");
    assert!(strs(&seen["unix_sockets"]).is_empty(), "{seen}");
    assert_eq!(seen["bus"]["connected"], false, "{seen}");
    assert!(!strs(&seen["env"])
        .iter()
        .any(|v| v.starts_with("DBUS_SYSTEM_BUS_ADDRESS=")));
    // Nothing was written for the bus: no bus grant launched, no policy installed by run.
    assert!(!bus.policy_file().exists());
}
