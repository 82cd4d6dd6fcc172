//! Privileged: appmgr-portald on a private system-like dbus-daemon (with the shipped bus
//! policy and the per-app policy `appmgr run` installs), called from inside real
//! sandboxes by the probe (`appmgr-probe portal ...`) and, for the identity checks, by
//! `dbus-send` from processes the test places: outside any app (root; an app's uid in no
//! app cgroup) and inside an app's cgroup with another app's uid. The GPU portal hands out
//! `/dev/null` here (the host has no DRM device; qemu scenario 90-portal-gpu uses a real
//! render node), the sensor portal reads an IIO-shaped sysfs tree (qemu scenario
//! 91-portal-sensors uses the real iio_dummy driver). Skipped (with the reason) when not
//! root or when dbus-daemon, dbus-send, setpriv or unshare is missing.

use appmgr_testkit::*;
use serde_json::Value;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const A: &str = "org.example.PortalA";
const B: &str = "org.example.PortalB";
const DENIED: &str = "org.appmgr.Error.AccessDenied";

/// The portal service, killed on drop.
struct Portald(Child);

impl Drop for Portald {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Fields drop in order: the service, then the bus, then the directories, then the lock.
struct Setup {
    portald: Option<Portald>,
    bus: PrivateBus,
    iio: PathBuf,
    e: Env,
    _serial: std::sync::MutexGuard<'static, ()>,
}

/// The tests share the app IDs, hence their cgroups: one at a time.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// An IIO device as iio_dummy lays it out in sysfs.
fn fake_iio(root: &Path) {
    let d = root.join("iio:device0");
    fs::create_dir_all(&d).unwrap();
    for (f, v) in [
        ("name", "accel0\n"),
        ("in_accel_x_raw", "34\n"),
        ("in_accel_scale", "0.5\n"),
        ("in_voltage0_raw", "73\n"),
        ("in_voltage0_scale", "0.25\n"),
        ("in_voltage0_offset", "7\n"),
        ("in_temp_raw", "-2\n"),
    ] {
        fs::write(d.join(f), v).unwrap();
    }
}

fn policy(a_channels: &str) -> String {
    format!(
        "[[rule]]\napps = [\"{A}\"]\ngrant = {{ portals = [\"gpu\", \"sensors\"], sensors = {{ channels = [{a_channels}], max-rate-hz = 50 }} }}\n\
         [[rule]]\napps = [\"{B}\"]\ngrant = {{ portals = [\"sensors\"], sensors = {{ channels = [\"temp\"], max-rate-hz = 10 }} }}\n"
    )
}

fn setup() -> Setup {
    let serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let e = Env::new();
    fs::set_permissions(e.dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let bus = PrivateBus::start(&e.p("bus"), BusConfig::system_like(Nss::Userdb));
    // The shipped bus policy of the portal service.
    fs::copy(
        repo_root().join("appmgr/portals/data/org.appmgr.Portal1.conf"),
        bus.policy_dir().join("org.appmgr.Portal1.conf"),
    )
    .unwrap();
    fs::create_dir_all(e.cfg.join("board-support")).unwrap();
    fs::write(
        e.cfg.join("board-support/portal-host.toml"),
        format!(
            "name = \"portal-host\"\narch = \"{}\"\ndescription = \"host test board\"\n\
             [portals.gpu]\nrender-node = \"/dev/null\"\nfamily = \"test\"\ndriver = \"null-test\"\n",
            arch()
        ),
    )
    .unwrap();
    fs::write(
        e.cfg.join("appmgr.toml"),
        format!(
            "board = \"portal-host\"\nsystem-bus-socket = \"{}\"\nbus-policy-file = \"{}\"\nuserdb-dir = \"{}\"\n",
            bus.socket().display(),
            bus.policy_dir().join("appmgr-apps.conf").display(),
            bus.userdb_dir().display()
        ),
    )
    .unwrap();
    fs::create_dir_all(e.cfg.join("policies.d")).unwrap();
    fs::write(
        e.cfg.join("policies.d/50-portal.toml"),
        policy("\"accel_x\", \"voltage0\""),
    )
    .unwrap();
    e.ok(&["install", s(&e.runtime_bundle("1.0.0"))]);
    e.install_probe_app(
        A,
        "portals = [\"gpu\", \"sensors\"]\n[permissions.sensors]\nchannels = [\"accel_x\", \"voltage0\"]\nmax-rate-hz = 50",
    );
    e.install_probe_app(
        B,
        "portals = [\"sensors\"]\n[permissions.sensors]\nchannels = [\"temp\"]\nmax-rate-hz = 10",
    );
    // The per-app bus policy and the app uids' user records, as appmgrd publishes them at
    // start (here `appmgr run` does, as it does before every launch).
    e.ok(&["run", B, "--", "args"]);
    let iio = e.p("iio");
    fake_iio(&iio);
    let mut st = Setup {
        e,
        bus,
        iio,
        portald: None,
        _serial: serial,
    };
    st.portald = Some(start_portald(&st));
    st
}

/// Starts appmgr-portald and waits (bounded) for its READY=1.
fn start_portald(st: &Setup) -> Portald {
    let sock_path = st.e.p("notify.sock");
    let _ = fs::remove_file(&sock_path);
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(15)))
        .unwrap();
    let child = Command::new(binary("appmgr-portald"))
        .args(["--state-dir", s(&st.e.state), "--config-dir", s(&st.e.cfg)])
        .args(["--bus-address", &st.bus.address(), "--iio-dir", s(&st.iio)])
        .env("NOTIFY_SOCKET", &sock_path)
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let p = Portald(child);
    let mut buf = [0u8; 256];
    let n = sock
        .recv(&mut buf)
        .expect("appmgr-portald said READY=1 within 15 s");
    let msg = String::from_utf8_lossy(&buf[..n]).to_string();
    assert!(msg.contains("READY=1"), "{msg}");
    assert!(msg.contains("STATUS=serving org.appmgr.Portal1"), "{msg}");
    p
}

/// Runs the probe's portal client in `id`'s sandbox.
fn probe(st: &Setup, id: &str, args: &[&str]) -> Value {
    let mut a = vec!["run", id, "--", "portal"];
    a.extend(args);
    let r = st.e.run(&a);
    assert_eq!(r.code, 0, "appmgr {a:?}: {}{}", r.stdout, r.stderr);
    r.json()
}

fn uid_of(st: &Setup, id: &str) -> u32 {
    st.e.ok(&["--json", "info", id]).json()["uid"]
        .as_u64()
        .unwrap() as u32
}

/// `dbus-send` of `method` (on the portal object) with `args`, as `uid` (when given),
/// after the test has placed the process as `place` says. Returns (success, output).
fn send(
    st: &Setup,
    uid: Option<u32>,
    place: Option<&[PathBuf]>,
    method: &str,
    args: &[&str],
) -> (bool, String) {
    let mut cmd = String::from("read go; exec ");
    if let Some(u) = uid {
        cmd.push_str(&format!("setpriv --reuid={u} --regid={u} --clear-groups "));
    }
    cmd.push_str(&format!(
        "dbus-send --bus={} --print-reply --reply-timeout=5000 --dest=org.appmgr.Portal1 /org/appmgr/portal {method}",
        st.bus.address()
    ));
    for a in args {
        cmd.push(' ');
        cmd.push_str(a);
    }
    let mut c = Command::new("sh")
        .args(["-c", &cmd])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    if let Some(files) = place {
        for f in files {
            fs::write(f, c.id().to_string()).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
        }
    }
    use std::io::Write;
    c.stdin.take().unwrap().write_all(b"go\n").unwrap();
    let out = c.wait_with_output().unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// The `cgroup.procs` files of the cgroups running app `id` is in (one per hierarchy).
fn app_procs_files(id: &str) -> Vec<PathBuf> {
    let app = appmgr_types::AppId::new(id).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let pids = appmgr_core::apps::running_pids(&app).unwrap();
        if let Some(p) = pids.first() {
            let h = appmgr_core::apps::hierarchy().unwrap();
            let text = fs::read_to_string(format!("/proc/{p}/cgroup")).unwrap();
            let files = h.procs_files_of(&text);
            assert!(!files.is_empty());
            return files;
        }
        assert!(Instant::now() < deadline, "{id} did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn skip_reason() -> Option<String> {
    if !is_root() {
        return Some("needs root (namespaces, cgroups, a private bus)".into());
    }
    missing_tool(&["dbus-daemon", "dbus-send", "setpriv", "unshare"])
}

#[test]
fn introspection_matches_the_committed_xml() {
    skip_if!(skip_reason());
    let st = setup();
    let (ok, out) = send(
        &st,
        None,
        None,
        "org.freedesktop.DBus.Introspectable.Introspect",
        &[],
    );
    assert!(ok, "{out}");
    let live = interfaces(&out.replace("\\\"", "\""));
    for (iface, file) in [
        ("org.appmgr.portal.Gpu1", "org.appmgr.portal.Gpu1.xml"),
        (
            "org.appmgr.portal.Sensors1",
            "org.appmgr.portal.Sensors1.xml",
        ),
        (
            "org.appmgr.portal.Bluetooth1",
            "org.appmgr.portal.Bluetooth1.xml",
        ),
    ] {
        let committed = interfaces(
            &fs::read_to_string(repo_root().join("appmgr/portals/dbus").join(file)).unwrap(),
        );
        assert_eq!(
            committed.keys().collect::<Vec<_>>(),
            [iface],
            "{file} describes exactly {iface}"
        );
        assert_eq!(
            live.get(iface),
            committed.get(iface),
            "the served {iface} differs from appmgr/portals/dbus/{file}"
        );
    }
}

/// Interface name → its members, normalized: `method NAME(name:type:dir, ...)`,
/// `signal ...`, `property NAME type access`, from introspection XML (comments dropped).
fn interfaces(xml: &str) -> std::collections::BTreeMap<String, Vec<String>> {
    let mut text = String::new();
    let mut rest = xml;
    while let Some(i) = rest.find("<!--") {
        text.push_str(&rest[..i]);
        rest = rest[i..].find("-->").map_or("", |j| &rest[i + j + 3..]);
    }
    text.push_str(rest);
    let attr = |tag: &str, name: &str| -> Option<String> {
        let k = format!("{name}=\"");
        let i = tag.find(&k)? + k.len();
        Some(tag[i..i + tag[i..].find('"')?].to_string())
    };
    let mut out = std::collections::BTreeMap::new();
    let mut cur: Option<(String, Vec<String>)> = None;
    let mut member: Option<(String, Vec<String>)> = None;
    for raw in text.split('<').skip(1) {
        let tag = &raw[..raw.find('>').unwrap_or(raw.len())];
        let word = tag.split_whitespace().next().unwrap_or("");
        match word {
            "interface" => cur = Some((attr(tag, "name").unwrap(), Vec::new())),
            "/interface" => {
                if let Some((n, v)) = cur.take() {
                    out.insert(n, v);
                }
            }
            "method" | "signal" => {
                let m = (format!("{word} {}", attr(tag, "name").unwrap()), Vec::new());
                if tag.ends_with('/') {
                    if let Some(c) = cur.as_mut() {
                        c.1.push(format!("{}()", m.0));
                    }
                } else {
                    member = Some(m);
                }
            }
            "arg" => {
                if let Some(m) = member.as_mut() {
                    m.1.push(format!(
                        "{}:{}:{}",
                        attr(tag, "name").unwrap_or_default(),
                        attr(tag, "type").unwrap_or_default(),
                        attr(tag, "direction").unwrap_or_else(|| "in".into())
                    ));
                }
            }
            "/method" | "/signal" => {
                if let (Some(c), Some((n, args))) = (cur.as_mut(), member.take()) {
                    c.1.push(format!("{n}({})", args.join(", ")));
                }
            }
            "property" => {
                if let Some(c) = cur.as_mut() {
                    c.1.push(format!(
                        "property {} {} {}",
                        attr(tag, "name").unwrap(),
                        attr(tag, "type").unwrap(),
                        attr(tag, "access").unwrap()
                    ));
                }
            }
            _ => {}
        }
    }
    for v in out.values_mut() {
        v.sort();
    }
    out
}

#[test]
fn callers_are_apps_by_the_kernels_view() {
    skip_if!(skip_reason());
    let st = setup();
    let (ua, ub) = (uid_of(&st, A), uid_of(&st, B));
    // Root, in no app's cgroup: refused, however it is allowed on the bus.
    let (ok, out) = send(
        &st,
        None,
        None,
        "org.appmgr.portal.Gpu1.OpenRenderNode",
        &[],
    );
    assert!(
        !ok && out.contains(DENIED) && out.contains("in no app's cgroup"),
        "{out}"
    );
    // A's uid outside A's cgroup: the uid alone is not an app.
    let (ok, out) = send(
        &st,
        Some(ua),
        None,
        "org.appmgr.portal.Sensors1.Read",
        &["string:accel_x"],
    );
    assert!(
        !ok && out.contains(DENIED) && out.contains("in no app's cgroup"),
        "{out}"
    );

    // With A running, a process placed in A's cgroup.
    let mut running = st.e.cmd(&["run", A, "--", "sleep"]);
    let mut a = running.stdout(Stdio::null()).spawn().unwrap();
    let files = app_procs_files(A);
    // ... with B's uid: refused, the uid is not A's.
    let (ok, out) = send(
        &st,
        Some(ub),
        Some(&files),
        "org.appmgr.portal.Sensors1.Read",
        &["string:accel_x"],
    );
    assert!(
        !ok && out.contains(DENIED)
            && out.contains(&format!("runs as uid {ub}, not {A}'s uid {ua}")),
        "{out}"
    );
    // ... with A's uid: it is A by every kernel fact, and gets A's channel (control).
    let (ok, out) = send(
        &st,
        Some(ua),
        Some(&files),
        "org.appmgr.portal.Sensors1.Read",
        &["string:accel_x"],
    );
    assert!(ok && out.contains("double 17"), "{out}");
    let _ = a.kill();
    let _ = a.wait();
}

#[test]
fn grants_decide_what_each_app_gets() {
    skip_if!(skip_reason());
    let st = setup();
    // GPU: A is granted it and gets the board's node, B is not.
    let g = probe(&st, A, &["gpu"]);
    assert_eq!(g["open"]["ok"], true, "{g}");
    assert_eq!(g["open"]["driver"], "null-test", "{g}");
    assert_eq!(g["open"]["rdev"], serde_json::json!([1, 3]), "{g}");
    assert_eq!(g["info"]["family"], "test", "{g}");
    assert!(
        g["by_path"]
            .as_array()
            .unwrap()
            .iter()
            .all(|p| p["ok"] == false),
        "{g}"
    );
    let g = probe(&st, B, &["gpu"]);
    assert_eq!(g["open"]["ok"], false, "{g}");
    assert_eq!(g["open"]["error"], DENIED, "{g}");
    assert_eq!(g["info"]["error"], DENIED, "{g}");
    // A process asking 300 times is watched once: the portal does not keep a descriptor
    // per call (it used to, which let a looping app exhaust the portal's descriptors and
    // stretched every call's p99 as the watcher walked them).
    let pid = st.portald.as_ref().expect("portald runs").0.id();
    let fds = || fs::read_dir(format!("/proc/{pid}/fd")).unwrap().count();
    let before_fds = fds();
    let b = probe(&st, A, &["bench", "gpu", "300"]);
    assert_eq!(b["errors"], 0, "{b}");
    let after_fds = fds();
    assert!(
        after_fds <= before_fds + 3,
        "the portal holds {after_fds} descriptors after 300 OpenRenderNode calls of one process, {before_fds} before"
    );

    // From here on the state directory holds both apps' data; the portal writes nothing.
    let before = st.e.snapshot();
    // Sensors: exactly the granted channels, scaled.
    let l = probe(&st, A, &["sensors", "list"]);
    let got: Vec<(String, String, String, f64)> = l["channels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["channel"].as_str().unwrap().into(),
                c["device"].as_str().unwrap().into(),
                c["unit"].as_str().unwrap().into(),
                c["scale"].as_f64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            ("accel_x".into(), "accel0".into(), "m/s^2".into(), 0.5),
            ("voltage0".into(), "accel0".into(), "mV".into(), 0.25)
        ],
        "{l}"
    );
    assert_eq!(
        probe(&st, A, &["sensors", "read", "accel_x"])["value"],
        17.0
    );
    assert_eq!(
        probe(&st, A, &["sensors", "read", "voltage0"])["value"],
        20.0
    );
    let r = probe(&st, A, &["sensors", "read", "temp"]);
    assert_eq!(r["error"], DENIED, "{r}");
    let r = probe(&st, A, &["sensors", "read", "Bad/Name"]);
    assert_eq!(r["error"], "org.appmgr.Error.InvalidArgs", "{r}");
    assert_eq!(probe(&st, B, &["sensors", "read", "temp"])["value"], -2.0);
    let r = probe(&st, B, &["sensors", "read", "accel_x"]);
    assert_eq!(r["error"], DENIED, "{r}");
    // Above the granted rate: refused.
    let r = probe(&st, A, &["sensors", "stream", "accel_x", "51", "1"]);
    assert_eq!(r["error"], DENIED, "{r}");
    // The portal wrote nothing to the state directory.
    assert_eq!(before, st.e.snapshot());

    // An update asking for an ungranted channel is refused and changes nothing; the
    // installed version keeps its grant.
    let root = st.e.p(&format!("probe-app-{A}"));
    let m = app_manifest("1.1.0")
        .replace("org.example.Hello", A)
        .replace("command = \"hello\"", "command = \"probe\"");
    let b = st.e.bundle(
        &format!(
            "{m}\n[permissions]\nportals = [\"gpu\", \"sensors\"]\n[permissions.sensors]\nchannels = [\"accel_x\", \"temp\"]\n"
        ),
        &root,
        "a-more.bundle",
    );
    let before = st.e.snapshot();
    let err = st.e.fails(&["install", s(&b)], 4);
    assert!(
        err.contains("sensors.channels") && err.contains("temp"),
        "{err}"
    );
    assert_eq!(before, st.e.snapshot());
    assert_eq!(
        probe(&st, A, &["sensors", "read", "accel_x"])["value"],
        17.0
    );
}

#[test]
fn streams_keep_the_rate_fan_out_and_end_on_revocation() {
    skip_if!(skip_reason());
    let st = setup();
    // Two apps stream at once (the same device).
    let spawn = |id: &str, args: &[&str]| {
        let mut a = vec!["run", id, "--", "portal", "sensors", "stream"];
        a.extend(args);
        st.e.cmd(&a).stdout(Stdio::piped()).spawn().unwrap()
    };
    // One app holds at most 32 streams: the 33rd is refused, and 32 run.
    let many = probe(
        &st,
        A,
        &["sensors", "streams", "33", "accel_x", "20", "0.3"],
    );
    assert_eq!(many["ok"], false, "{many}");
    assert_eq!(many["error"], "org.appmgr.Error.NotAvailable", "{many}");
    assert!(
        many["message"]
            .as_str()
            .is_some_and(|m| m.contains("32 open streams")),
        "{many}"
    );
    let most = probe(
        &st,
        A,
        &["sensors", "streams", "32", "accel_x", "20", "0.3"],
    );
    assert_eq!(
        (most["ok"].clone(), most["streams"].clone()),
        (true.into(), 32.into()),
        "{most}"
    );
    let a = spawn(A, &["accel_x,voltage0", "20", "2"]);
    let b = spawn(B, &["temp", "10", "2"]);
    let ja: Value = serde_json::from_slice(&a.wait_with_output().unwrap().stdout).unwrap();
    let jb: Value = serde_json::from_slice(&b.wait_with_output().unwrap().stdout).unwrap();
    for (j, rate) in [(&ja, 20.0), (&jb, 10.0)] {
        assert_eq!(j["ok"], true, "{j}");
        let n = j["records"].as_f64().unwrap();
        // Never above the rate; close to it (start-up of the stream aside).
        assert!(j["max_rate_hz"].as_f64().unwrap() <= rate, "{j}");
        assert!(n >= rate * 1.2 && n <= rate * 2.0 + 1.0, "{j}");
        assert!(
            j["min_gap_ms"].as_f64().unwrap() >= 1000.0 / rate - 0.001,
            "{j}"
        );
        assert_eq!(j["eof"], false, "{j}");
        assert_eq!(j["torn"], 0, "{j}");
    }
    assert_eq!(ja["first"], serde_json::json!([17.0, 20.0]), "{ja}");
    assert_eq!(jb["first"], serde_json::json!([-2.0]), "{jb}");

    // Revocation: the policy stops granting accel_x; `appmgr reload` ends A's stream.
    let a = spawn(A, &["accel_x", "20", "10"]);
    std::thread::sleep(Duration::from_millis(1500));
    fs::write(
        st.e.cfg.join("policies.d/50-portal.toml"),
        policy("\"voltage0\""),
    )
    .unwrap();
    // reload reports the running app that now exceeds its policy (exit 4), and has
    // re-derived the plans the portal follows.
    let r = st.e.run(&["reload"]);
    let reloaded = mono_ns();
    assert_eq!(r.code, 4, "{}{}", r.stdout, r.stderr);
    assert!(
        r.stdout.contains(&format!("{A}: not applied")),
        "{}",
        r.stdout
    );
    let out = a.wait_with_output().unwrap();
    let j: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(j["eof"], true, "{j}");
    let eof = j["eof_mono_ns"].as_u64().unwrap();
    assert!(
        eof <= reloaded + 100_000_000,
        "the stream ended {} ms after reload returned: {j}",
        (eof - reloaded) / 1_000_000
    );
    // And A, now beyond its policy, does not start again.
    let err =
        st.e.fails(&["run", A, "--", "portal", "sensors", "read", "accel_x"], 4);
    assert!(err.contains("sensors.channels=[accel_x]"), "{err}");
}

#[test]
fn an_app_keeping_a_revoked_render_node_is_stopped() {
    skip_if!(skip_reason());
    let st = setup();
    let mut holder =
        st.e.cmd(&["run", A, "--", "portal", "gpu-hold", "60"])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
    let mut line = String::new();
    use std::io::BufRead;
    std::io::BufReader::new(holder.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line, "held\n");
    // The policy stops granting the gpu portal (A still asks for it).
    fs::write(
        st.e.cfg.join("policies.d/50-portal.toml"),
        policy("\"accel_x\", \"voltage0\"").replace(
            "portals = [\"gpu\", \"sensors\"]",
            "portals = [\"sensors\"]",
        ),
    )
    .unwrap();
    let r = st.e.run(&["reload"]);
    let reloaded = Instant::now();
    assert_eq!(r.code, 4, "{}{}", r.stdout, r.stderr);
    // The kernel cannot take the descriptor back: the app's processes are stopped, within
    // 100 ms of the reload that revoked the grant.
    let app = appmgr_types::AppId::new(A).unwrap();
    while !appmgr_core::apps::running_pids(&app).unwrap().is_empty() {
        assert!(
            reloaded.elapsed() < Duration::from_millis(100),
            "{A} still runs 100 ms after reload"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    let status = holder.wait().unwrap();
    assert!(!status.success(), "{status:?}");
}

#[test]
fn bluetooth_is_refused_without_its_grant_and_without_bluez_is_not_available() {
    skip_if!(skip_reason());
    let st = setup();
    const C: &str = "org.example.PortalC";
    const DEV: &str = "00:AA:01:01:00:01";
    fs::write(
        st.e.cfg.join("policies.d/60-bluetooth.toml"),
        format!(
            "[[rule]]\napps = [\"{C}\"]\ngrant = {{ portals = [\"bluetooth\"], bluetooth = {{ \
             devices = [\"*\"], services = [\"180f\"], roles = [\"scan\", \"connect\"] }} }}\n"
        ),
    )
    .unwrap();
    st.e.install_probe_app(
        C,
        "portals = [\"bluetooth\"]\n[permissions.bluetooth]\ndevices = [\"*\"]\n\
         services = [\"180f\"]\nroles = [\"scan\", \"connect\"]",
    );
    let dev = |x: &str| x.replace("DEV", DEV);
    let steps: Vec<String> = [
        "scan,1",
        "connect,DEV",
        "read,DEV,180f,2a19",
        "write,DEV,180f,2a19,01",
        "notify,DEV,180f,2a19,1",
        "disconnect,DEV",
    ]
    .iter()
    .map(|x| dev(x))
    .collect();
    let mut args = vec!["bt"];
    args.extend(steps.iter().map(String::as_str));
    // A holds other portals, not bluetooth: every method is refused, and journaled.
    let r = probe(&st, A, &args);
    for k in 0..steps.len() {
        assert_eq!(r["steps"][k]["ok"], false, "{r}");
        assert_eq!(r["steps"][k]["error"], DENIED, "step {k}: {r}");
    }
    let m = r["steps"][1]["message"].as_str().unwrap();
    assert!(m.contains("the bluetooth portal is not granted"), "{m}");
    // C is granted 180f with scan and connect, on a bus without BlueZ: what its grant
    // covers is not available (bounded, with the reason); what it does not is refused
    // before BlueZ is asked.
    let t0 = Instant::now();
    let r = probe(&st, C, &args);
    assert!(t0.elapsed() < Duration::from_secs(20), "{r}");
    let not_available = "org.appmgr.Error.NotAvailable";
    for (k, want) in [
        (0, not_available),
        (1, not_available),
        // No hold (Connect failed): not connected for this caller.
        (2, not_available),
        (3, DENIED),
        (4, DENIED),
        (5, not_available),
    ] {
        assert_eq!(r["steps"][k]["error"], want, "step {k}: {r}");
    }
    let m = r["steps"][1]["message"].as_str().unwrap();
    assert!(m.contains("BlueZ (org.bluez) is not running"), "{m}");
    assert!(r["steps"][3]["message"]
        .as_str()
        .unwrap()
        .contains("bluetooth role write is not granted"));
    assert!(r["steps"][4]["message"]
        .as_str()
        .unwrap()
        .contains("bluetooth role notify is not granted"));
    let r = probe(&st, C, &["bt", &dev("read,DEV,180d,2a38")]);
    assert_eq!(r["steps"][0]["error"], DENIED, "{r}");
    assert!(r["steps"][0]["message"]
        .as_str()
        .unwrap()
        .contains("bluetooth service 180d is not granted"));
    // Malformed arguments are named.
    let r = probe(
        &st,
        C,
        &["bt", "connect,AA:BB", "read,AA:BB:CC:DD:EE:FF,18f,2a19"],
    );
    for k in 0..2 {
        assert_eq!(
            r["steps"][k]["error"], "org.appmgr.Error.InvalidArgs",
            "{r}"
        );
    }
}

fn mono_ns() -> u64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    t.tv_sec as u64 * 1_000_000_000 + t.tv_nsec as u64
}
