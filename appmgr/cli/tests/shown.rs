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

/// A sockets kind's path inside the sandbox, the variable that names it, and the byte
/// the test's host server for it writes to every client.
fn socket_kind(kind: &str) -> (&'static str, &'static str, u8) {
    match kind {
        "wayland" => ("/run/appmgr/wayland-0", "WAYLAND_DISPLAY", b'w'),
        "x11" => ("/tmp/.X11-unix/X0", "DISPLAY", b'x'),
        "pipewire" => ("/run/appmgr/pipewire-0", "PIPEWIRE_REMOTE", b'p'),
        "pulseaudio" => ("/run/appmgr/pulse-native", "PULSE_SERVER", b'a'),
        other => panic!("no observation for socket {other}"),
    }
}

/// A real listening host socket for `kind` at `path`, mode 0666 (as an appliance's
/// compositor or sound server makes it for its clients), whose server writes the kind's
/// byte to every connection; it serves until the test process ends.
fn serve_socket(path: &Path, kind: &str) {
    use std::io::Write;
    let l = std::os::unix::net::UnixListener::bind(path).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(0o666)).unwrap();
    let byte = socket_kind(kind).2;
    std::thread::spawn(move || {
        for mut c in l.incoming().flatten() {
            let _ = c.write_all(&[byte]);
        }
    });
}

/// The `provided` entry of `shown` for (key, value): (status, reason).
fn shown_item(shown: &Value, k: &str, v: &str) -> (String, String) {
    let i = shown["provided"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["key"] == k && i["value"] == v)
        .unwrap_or_else(|| panic!("{k} {v} not shown: {shown}"));
    (
        i["status"].as_str().unwrap().to_string(),
        i["reason"].as_str().unwrap_or("").to_string(),
    )
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
    // The unix sockets the sandbox may hold: the bus with a provided bus grant, and each
    // provided display or audio socket; nothing else.
    let mut expected_sockets: Vec<String> = Vec::new();
    if any_bus {
        expected_sockets.push(bus_socket_inside.to_string());
    }
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
            "network" | "network.egress" | "network.listen" | "network.dns" | "network.talk-to" => {
                // Never the host's network; provided means the app's own link to it
                // (tests/network.rs and the sandbox's tests check what it reaches).
                assert_ne!(seen["namespaces"]["net"], host_ns("net"), "{what}");
                let linked = strs(&seen["net_links"]).contains(&"eth0".to_string());
                if k == "network" || provided {
                    assert_eq!(linked, provided, "{what}");
                }
            }
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
            "sockets" => {
                // Connected from inside through the variable a client library reads, and
                // the host server's own byte came back.
                let (inside, var, byte) = socket_kind(v);
                let d = &seen["display_sockets"][var];
                if provided {
                    assert!(sockets.contains(&inside.to_string()), "{what}");
                    assert_eq!(d["path"], inside, "{what}");
                    assert_eq!(d["connect"], format!("ok:{byte}"), "{what}");
                    expected_sockets.push(inside.to_string());
                } else {
                    assert!(!sockets.contains(&inside.to_string()), "{what}");
                    assert!(d.is_null(), "{what}");
                    assert!(
                        !env.iter().any(|e| e.starts_with(&format!("{var}="))),
                        "{what}"
                    );
                }
            }
            "portals" => {
                assert!(!provided, "no observation for a provided {k} yet: {what}");
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
    expected_sockets.sort();
    assert_eq!(sockets, expected_sockets, "{seen}");
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
    // The host's display and audio servers: Wayland, X11 and PipeWire run; PulseAudio
    // is configured but does not run.
    let hs = e.p("host-sockets");
    fs::create_dir_all(&hs).unwrap();
    for (name, kind) in [
        ("wayland-0", "wayland"),
        ("X0", "x11"),
        ("pipewire-0", "pipewire"),
    ] {
        serve_socket(&hs.join(name), kind);
    }
    let pulse = hs.join("pulse-native");
    let host_toml = format!(
        "board = \"shown\"\nsystem-bus-socket = \"{}\"\nbus-policy-file = \"{}\"\nuserdb-dir = \"{}\"\n\
         wayland-socket = \"{}\"\nx11-socket = \"{}\"\npipewire-socket = \"{}\"\npulseaudio-socket = \"{}\"\n",
        bus.socket().display(),
        bus.policy_file().display(),
        e.p("bus/userdb").display(),
        hs.join("wayland-0").display(),
        hs.join("X0").display(),
        hs.join("pipewire-0").display(),
        pulse.display(),
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
    // Wayland and PipeWire run; x11 is the fallback of Wayland; PulseAudio is missing.
    assert!(status("sockets", "wayland") && status("sockets", "pipewire"));
    assert!(!status("sockets", "x11") && !status("sockets", "pulseaudio"));
    assert_eq!(
        shown_item(&shown, "sockets", "x11").1,
        "a Wayland socket exists (x11 is the fallback)"
    );
    assert_eq!(
        shown_item(&shown, "sockets", "pulseaudio").1,
        format!("no socket at {} on this host", pulse.display())
    );
    assert!(
        stderr.contains(&format!(
            "appmgr: {id}: sockets pulseaudio not provided on this host: no socket at {}",
            pulse.display()
        )),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!(
            "appmgr: {id}: sockets x11 not provided on this host: a Wayland socket exists"
        )),
        "{stderr}"
    );
    assert!(!stderr.contains("sockets wayland") && !stderr.contains("sockets pipewire"));
    // The client variables are the plan's, pointing at the bound sockets.
    let env = strs(&seen["env"]);
    for v in [
        "WAYLAND_DISPLAY=/run/appmgr/wayland-0",
        "PIPEWIRE_RUNTIME_DIR=/run/appmgr",
        "PIPEWIRE_REMOTE=pipewire-0",
    ] {
        assert!(env.contains(&v.to_string()), "{v}: {env:?}");
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
    for l in text.lines().filter(|l| {
        l.starts_with("  sockets x11 ")
            || l.starts_with("  sockets pulseaudio ")
            || l.starts_with("  portals camera ")
    }) {
        assert!(l.contains("(not provided on this host: "), "{text}");
    }
    for l in text
        .lines()
        .filter(|l| l.starts_with("  sockets wayland ") || l.starts_with("  sockets pipewire "))
    {
        assert!(!l.contains("not provided"), "{text}");
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
    // Only the display and audio sockets are left.
    assert_eq!(
        strs(&seen["unix_sockets"]),
        ["/run/appmgr/pipewire-0", "/run/appmgr/wayland-0"],
        "{seen}"
    );

    // 3. The compositor is gone: x11 is bound instead, wayland is not provided and says
    // which host path is missing.
    fs::remove_file(hs.join("wayland-0")).unwrap();
    let shown = e.ok(&["--json", "permissions", id]).json();
    let (seen, stderr) = observe(&e, id, &args);
    let items = compare(&shown, &seen, inside_bus);
    assert!(items.contains(&("sockets".into(), "x11".into(), true)));
    assert!(items.contains(&("sockets".into(), "wayland".into(), false)));
    assert_eq!(
        shown_item(&shown, "sockets", "wayland").1,
        format!(
            "no socket at {} on this host",
            hs.join("wayland-0").display()
        )
    );
    assert!(strs(&seen["env"]).contains(&"DISPLAY=:0".to_string()));
    assert!(stderr.contains("sockets wayland not provided on this host: no socket at"));

    // 4. A symlink planted in place of a socket (to the X11 socket here) is never
    // followed: shown as refused, and the launch is refused naming the path (exit 4);
    // the app never runs and nothing changes.
    let pw = hs.join("pipewire-0");
    fs::remove_file(&pw).unwrap();
    std::os::unix::fs::symlink(hs.join("X0"), &pw).unwrap();
    let shown = e.ok(&["--json", "permissions", id]).json();
    let (st, reason) = shown_item(&shown, "sockets", "pipewire");
    assert_eq!(st, "not-provided");
    assert!(
        reason.contains(&pw.display().to_string()) && reason.contains("the launch is refused"),
        "{reason}"
    );
    let refused = |e: &Env| {
        let r = e.run(&["run", id, "--", "observe"]);
        assert_eq!(r.code, 4, "{}{}", r.stdout, r.stderr);
        assert!(r.stdout.is_empty(), "the app ran: {}", r.stdout);
        let line = r
            .stderr
            .lines()
            .find(|l| l.contains("refusing to launch"))
            .unwrap_or_else(|| panic!("{}", r.stderr));
        assert!(line.contains(s(&pw)) && line.contains("symlink"), "{line}");
    };
    refused(&e);
    let before = e.snapshot();
    refused(&e);
    assert_eq!(
        e.snapshot(),
        before,
        "a refused launch changed the state dir"
    );
    assert_eq!(fs::read_link(&pw).unwrap(), hs.join("X0"));
    let m = fs::symlink_metadata(hs.join("X0")).unwrap();
    assert_eq!(
        m.permissions().mode() & 0o7777,
        0o666,
        "the target is untouched"
    );
    e.fsck_clean();
}

#[test]
fn bad_socket_paths_in_appmgr_toml_are_refused() {
    let e = Env::new();
    fs::create_dir_all(&e.cfg).unwrap();
    let before = e.snapshot();
    for (key, bad) in [
        ("wayland-socket", "run/wayland-0"),
        ("x11-socket", "/tmp/../X0"),
        ("pipewire-socket", "/run/pipewire/"),
        ("pulseaudio-socket", "/run//pulse/native"),
        ("wayland-socket", "/run/\\u202ewayland"),
    ] {
        fs::write(e.cfg.join("appmgr.toml"), format!("{key} = \"{bad}\"\n")).unwrap();
        for cmd in ["permissions", "run"] {
            let msg = e.fails(&[cmd, "org.example.Any"], 2);
            assert!(
                msg.contains(&format!("appmgr.toml: {key} ")) && msg.contains("absolute path"),
                "{msg}"
            );
        }
        assert_eq!(e.snapshot(), before);
    }
}

#[test]
fn without_a_bus_grant_there_is_no_bus() {
    require_root!("namespaces, cgroups, a private bus");
    let id = "org.example.ShownNoBus";
    let e = Env::new();
    fs::set_permissions(e.dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let bus = Bus::start(&e.p("bus"), &[GRANTED_TALK]);
    // Every display and audio server runs; none is granted.
    let hs = e.p("host-sockets");
    fs::create_dir_all(&hs).unwrap();
    let mut toml = format!(
        "system-bus-socket = \"{}\"\nbus-policy-file = \"{}\"\nuserdb-dir = \"{}\"\n",
        bus.socket().display(),
        bus.policy_file().display(),
        e.p("bus/userdb").display()
    );
    for kind in ["wayland", "x11", "pipewire", "pulseaudio"] {
        let p = hs.join(kind);
        serve_socket(&p, kind);
        toml.push_str(&format!("{kind}-socket = \"{}\"\n", p.display()));
    }
    fs::write(e.cfg.join("appmgr.toml"), toml).unwrap();
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
    assert_eq!(seen["display_sockets"], serde_json::json!({}), "{seen}");
    // Nothing was written for the bus: no bus grant launched, no policy installed by run.
    assert!(!bus.policy_file().exists());
}

/// A filesystem grant of the directory that holds a configured host socket (here the
/// compositor's) would hand the socket out without a `sockets` grant: it is shown as
/// refused, naming the socket, and the launch is refused (exit 4) without the app running.
#[test]
fn a_directory_grant_cannot_hand_out_a_host_socket() {
    require_root!("namespaces, cgroups");
    let id = "org.example.ShownSocketDir";
    let e = Env::new();
    fs::set_permissions(e.dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let dir = e.p("compositor");
    fs::create_dir_all(&dir).unwrap();
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
    serve_socket(&dir.join("wayland-0"), "wayland");
    fs::create_dir_all(&e.cfg).unwrap();
    fs::write(
        e.cfg.join("appmgr.toml"),
        format!("wayland-socket = \"{}\"\n", dir.join("wayland-0").display()),
    )
    .unwrap();
    let perms = format!("filesystems = [\"{}:rw\"]\n", dir.display());
    fs::create_dir_all(e.cfg.join("policies.d")).unwrap();
    fs::write(
        e.cfg.join("policies.d/50-test.toml"),
        format!(
            "[[rule]]\napps = [\"{id}\"]\ngrant = {{ {} }}\n",
            perms.trim_end()
        ),
    )
    .unwrap();
    e.ok(&["install", s(&e.runtime_bundle("1.0.0"))]);
    e.install_probe_app(id, &perms);
    let shown = e.ok(&["--json", "permissions", id]).json();
    let refused = shown["refused"].as_array().expect("refused list");
    assert!(
        refused.iter().any(|i| i["key"] == "filesystems"
            && i["value"] == format!("{}:rw", dir.display())
            && i["reason"]
                .as_str()
                .is_some_and(|r| r.contains("protected path") && r.contains("wayland-0"))),
        "{shown}"
    );
    let r = e.run(&["run", id, "--", "observe"]);
    assert_eq!(r.code, 4, "{}{}", r.stdout, r.stderr);
    assert!(r.stdout.is_empty(), "the app ran: {}", r.stdout);
    assert!(
        r.stderr.contains(s(&dir)) && r.stderr.contains("wayland-0"),
        "{}",
        r.stderr
    );
    // Without the socket configured there, the same grant is provided.
    fs::write(e.cfg.join("appmgr.toml"), "wayland-socket = \"none\"\n").unwrap();
    let (seen, _) = observe(&e, id, &[format!("path:{}", dir.display())]);
    assert_eq!(seen["paths"][s(&dir)]["exists"], true, "{seen}");
}
