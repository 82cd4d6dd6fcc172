//! The probe's portal client against a real dbus-daemon. A test double of the portal (a
//! zbus object of this test, owning `org.appmgr.Portal1` on a private bus) gives fixed
//! answers; `appmgr-probe portal ...` is run against that bus and its JSON checked. This
//! tests the probe's client (fd passing, marshalling, parsing, the JSON), not the portal.
//! Privileged (the private bus runs in its own mount namespace): skipped, with the reason,
//! when not root or when dbus-daemon or unshare is missing.

use appmgr_testkit::{BusConfig, Nss, PrivateBus};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::io::Write;
use std::process::Command;
use std::sync::{Arc, Mutex};
use zbus::zvariant::{OwnedFd, OwnedValue};

const PROBE: &str = env!("CARGO_BIN_EXE_appmgr-probe");
const NAME: &str = "org.appmgr.Portal1";
const PATH: &str = "/org/appmgr/portal";
const MS: u64 = 1_000_000;

#[derive(Debug, zbus::DBusError)]
#[zbus(prefix = "org.appmgr.Error")]
enum PortalError {
    #[zbus(error)]
    ZBus(zbus::Error),
    AccessDenied(String),
    NotAvailable(String),
    InvalidArgs(String),
}

/// What the double was asked, and switches the test flips.
#[derive(Default)]
struct State {
    gpu_unavailable: bool,
    /// `Open`'s arguments, last call.
    opened: Option<(Vec<String>, u32)>,
    /// Write ends kept open (the `endless` stream).
    kept: Vec<std::io::PipeWriter>,
}

struct Gpu(Arc<Mutex<State>>);

#[zbus::interface(name = "org.appmgr.portal.Gpu1")]
impl Gpu {
    #[zbus(out_args("fd", "driver"))]
    fn open_render_node(&self) -> Result<(OwnedFd, String), PortalError> {
        if self.0.lock().unwrap().gpu_unavailable {
            return Err(PortalError::NotAvailable(
                "no render node on this board".into(),
            ));
        }
        let f = std::fs::File::open("/dev/null")
            .map_err(|e| PortalError::NotAvailable(e.to_string()))?;
        Ok((std::os::fd::OwnedFd::from(f).into(), "test".into()))
    }

    #[zbus(out_args("info"))]
    fn info(&self) -> HashMap<String, OwnedValue> {
        let v = |v: zbus::zvariant::Value| OwnedValue::try_from(v).unwrap();
        HashMap::from([
            ("driver".to_string(), v("test".into())),
            ("render-node".to_string(), v("/dev/null".into())),
            ("count".to_string(), v(3u32.into())),
            ("rw".to_string(), v(true.into())),
            ("ratio".to_string(), v(0.5f64.into())),
            ("sizes".to_string(), v(vec![1i32, 2].into())),
        ])
    }
}

struct Sensors(Arc<Mutex<State>>);

/// Records at 0, 100, 150, 1200 and 1300 ms (three within one second; the smallest gap
/// 50 ms); channel k of record i holds i + k/10.
fn records(nch: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for (i, t) in [0u64, 100, 150, 1200, 1300].into_iter().enumerate() {
        out.extend_from_slice(&(7_000 * MS + t * MS).to_le_bytes());
        for k in 0..nch {
            out.extend_from_slice(&(i as f64 + k as f64 / 10.0).to_le_bytes());
        }
    }
    out
}

#[zbus::interface(name = "org.appmgr.portal.Sensors1")]
impl Sensors {
    /// Per the contract's signature a(ssds).
    #[zbus(out_args("channels"))]
    fn list(&self) -> Vec<(String, String, f64, String)> {
        vec![
            ("accel_x".into(), "accel0".into(), 0.0005, "m/s^2".into()),
            ("temp".into(), "thermal0".into(), 1.0, "C".into()),
        ]
    }

    #[zbus(out_args("value"))]
    fn read(&self, channel: String) -> Result<f64, PortalError> {
        match channel.as_str() {
            "accel_x" => Ok(1.5),
            "nope" => Err(PortalError::AccessDenied(
                "sensor channel nope is not granted".into(),
            )),
            _ => Err(PortalError::InvalidArgs(format!("bad channel {channel:?}"))),
        }
    }

    /// A pipe with the 5 [`records`], then EOF; `torn` among the channels adds 3 bytes
    /// before EOF; `endless`: one record and no EOF.
    #[zbus(out_args("fd"))]
    fn open(&self, channels: Vec<String>, rate_hz: u32) -> Result<OwnedFd, PortalError> {
        let mut st = self.0.lock().unwrap();
        st.opened = Some((channels.clone(), rate_hz));
        let (r, mut w) = std::io::pipe().map_err(|e| PortalError::NotAvailable(e.to_string()))?;
        let nch = channels.len();
        if channels.iter().any(|c| c == "endless") {
            w.write_all(&records(nch)[..8 + 8 * nch]).unwrap();
            st.kept.push(w);
        } else {
            w.write_all(&records(nch)).unwrap();
            if channels.iter().any(|c| c == "torn") {
                w.write_all(&[1, 2, 3]).unwrap();
            }
        }
        Ok(std::os::fd::OwnedFd::from(r).into())
    }
}

/// A private system-like bus (in `dir`) on which root may own `name` and anyone call it.
fn bus_owning(dir: &std::path::Path, name: &str) -> PrivateBus {
    let config = BusConfig::system_like(Nss::ExtraUsers(Vec::new())).section(&format!(
        r#"<policy user="root">
    <allow own="{name}"/>
    <allow send_destination="{name}"/>
  </policy>"#
    ));
    PrivateBus::start(dir, config)
}

/// The runtime the test doubles of the services are served from.
fn service_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap()
}

fn skip_reason() -> Option<String> {
    if !appmgr_testkit::is_root() {
        return Some("needs root (the private bus runs in its own mount namespace)".into());
    }
    appmgr_testkit::missing_tool(&["dbus-daemon", "unshare"])
}

/// The probe's output: its exit status and stdout parsed as JSON.
fn probe(addr: &str, args: &[&str]) -> (i32, Value, String) {
    let o = Command::new(PROBE)
        .arg("portal")
        .args(args)
        .env("DBUS_SYSTEM_BUS_ADDRESS", addr)
        .output()
        .expect("run appmgr-probe");
    let stdout = String::from_utf8_lossy(&o.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&o.stderr).into_owned();
    let code = o.status.code().unwrap_or(-1);
    let v = if code == 0 {
        serde_json::from_str(stdout.trim())
            .unwrap_or_else(|e| panic!("probe {args:?}: not one JSON object ({e}): {stdout}"))
    } else {
        Value::Null
    };
    (code, v, stderr)
}

#[test]
fn the_probe_reads_what_the_portal_hands_out() {
    appmgr_testkit::skip_if!(skip_reason());
    let dir = tempfile::tempdir().unwrap();
    let bus = bus_owning(dir.path(), NAME);
    let addr = bus.address();

    let state = Arc::new(Mutex::new(State::default()));
    let rt = service_runtime();
    let _service = rt
        .block_on(async {
            zbus::connection::Builder::address(addr.as_str())?
                .name(NAME)?
                .serve_at(PATH, Gpu(state.clone()))?
                .serve_at(PATH, Sensors(state.clone()))?
                .build()
                .await
        })
        .unwrap_or_else(|e| panic!("the test portal on the private bus: {e}"));

    // GPU: the fd arrived (it is /dev/null: char 1:3, not a DRM device), the driver
    // strings, the Info dict with s, u, b, d and an array value.
    let (code, v, err) = probe(&addr, &["gpu"]);
    assert_eq!(code, 0, "{err}");
    let open = &v["open"];
    assert_eq!(open["ok"], true, "{v}");
    assert_eq!(open["driver"], "test", "{v}");
    assert_eq!(open["ioctl_driver"], Value::Null, "{v}");
    assert_eq!(open["ioctl_error"], "ENOTTY", "{v}");
    assert_eq!(open["rdev"], json!([1, 3]), "{v}");
    assert_eq!(open["type"], "char", "{v}");
    assert_eq!(open["access"], "r", "{v}");
    assert_eq!(
        v["info"],
        json!({"ok": true, "driver": "test", "render-node": "/dev/null", "count": 3,
               "rw": true, "ratio": 0.5, "sizes": [1, 2]}),
        "{v}"
    );
    let by_path = v["by_path"].as_array().expect("by_path");
    for p in ["/dev/dri/renderD128", "/dev/dri/card0"] {
        let e = by_path
            .iter()
            .find(|e| e["path"] == p)
            .unwrap_or_else(|| panic!("{p} not tried: {v}"));
        assert!(
            e["ok"].is_boolean() && (e["ok"] == true || e["errno"].is_u64()),
            "{e}"
        );
    }

    // A D-Bus error is a result: exit 0, the name and message in place of the object.
    state.lock().unwrap().gpu_unavailable = true;
    let (code, v, err) = probe(&addr, &["gpu"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        v["open"],
        json!({"ok": false, "error": "org.appmgr.Error.NotAvailable",
               "message": "no render node on this board"}),
        "{v}"
    );
    assert_eq!(v["info"]["ok"], true, "{v}");

    // Sensors: List (a(ssds)), Read, Read refused.
    let (code, v, err) = probe(&addr, &["sensors", "list"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        v,
        json!({"ok": true, "channels": [
            {"channel": "accel_x", "device": "accel0", "unit": "m/s^2", "scale": 0.0005},
            {"channel": "temp", "device": "thermal0", "unit": "C", "scale": 1.0}]})
    );
    let (code, v, err) = probe(&addr, &["sensors", "read", "accel_x"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(v, json!({"ok": true, "value": 1.5}));
    let (code, v, err) = probe(&addr, &["sensors", "read", "nope"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        v,
        json!({"ok": false, "error": "org.appmgr.Error.AccessDenied",
               "message": "sensor channel nope is not granted"})
    );

    // A stream: the `as` and `u` arguments as given, 5 records to EOF.
    let (code, v, err) = probe(&addr, &["sensors", "stream", "accel_x,accel_y", "50", "5"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        state.lock().unwrap().opened,
        Some((vec!["accel_x".to_string(), "accel_y".to_string()], 50))
    );
    assert_eq!(v["ok"], true, "{v}");
    assert_eq!(v["records"], 5, "{v}");
    assert_eq!(v["eof"], true, "{v}");
    assert!(v["eof_after_s"].as_f64().unwrap() < 5.0, "{v}");
    assert_eq!(v["first"], json!([0.0, 0.1]), "{v}");
    assert_eq!(v["max_rate_hz"], 3, "{v}");
    assert_eq!(v["min_gap_ms"], 50.0, "{v}");
    assert_eq!(v["torn"], 0, "{v}");
    assert_eq!(v["read_error"], Value::Null, "{v}");

    // A partial record at EOF is counted as torn.
    let (code, v, err) = probe(&addr, &["sensors", "stream", "torn", "10", "5"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        (v["records"].clone(), v["torn"].clone()),
        (json!(5), json!(1)),
        "{v}"
    );

    // A stream that does not end is read for SECONDS only.
    let t = std::time::Instant::now();
    let (code, v, err) = probe(&addr, &["sensors", "stream", "endless", "10", "1"]);
    assert_eq!(code, 0, "{err}");
    assert!(t.elapsed() < std::time::Duration::from_secs(8), "{v}");
    assert_eq!(v["records"], 1, "{v}");
    assert_eq!(v["eof"], false, "{v}");
    assert_eq!(v["eof_after_s"], Value::Null, "{v}");
    assert!(v["seconds"].as_f64().unwrap() >= 0.9, "{v}");
    state.lock().unwrap().kept.clear();
}

/// Without a bus the probe fails (exit 1, the reason on stderr), and bad arguments are
/// a usage error (exit 2): neither prints a result.
#[test]
fn no_bus_and_bad_arguments_are_probe_failures() {
    let dir = tempfile::tempdir().unwrap();
    let addr = format!("unix:path={}", dir.path().join("none.sock").display());
    let (code, _, err) = probe(&addr, &["sensors", "list"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("none.sock"), "{err}");
    for args in [
        &["sensors", "stream", "a", "x", "1"][..],
        &["sensors", "stream", "a", "1", "0"],
        &["sensors", "read"],
        &["camera"],
    ] {
        let (code, _, err) = probe(&addr, args);
        assert_eq!(code, 2, "{args:?}: {err}");
        assert!(err.contains("usage"), "{err}");
    }
}

/// A double of iio-sensor-proxy: an accelerometer whose orientation is `undefined` until
/// it has been claimed and asked twice (its first poll), then `left-up`.
#[derive(Default)]
struct Proxy {
    claims: u32,
    releases: u32,
    gets: u32,
}

struct SensorProxy(Arc<Mutex<Proxy>>);

#[zbus::interface(name = "net.hadess.SensorProxy")]
impl SensorProxy {
    fn claim_accelerometer(&self) {
        self.0.lock().unwrap().claims += 1;
    }

    fn release_accelerometer(&self) {
        self.0.lock().unwrap().releases += 1;
    }

    #[zbus(property)]
    fn has_accelerometer(&self) -> bool {
        true
    }

    #[zbus(property)]
    fn accelerometer_orientation(&self) -> String {
        let mut p = self.0.lock().unwrap();
        if p.claims == 0 {
            return "undefined".into();
        }
        p.gets += 1;
        if p.gets <= 2 { "undefined" } else { "left-up" }.into()
    }
}

/// `portal bench sensorproxy N`: claim, wait for the first reading, N timed `Get`s,
/// release; and `portal bench sysfs A,B N` reads every file of the list per sample.
#[test]
fn the_probe_benches_iio_sensor_proxy_and_sysfs() {
    appmgr_testkit::skip_if!(skip_reason());
    const PROXY: &str = "net.hadess.SensorProxy";
    let dir = tempfile::tempdir().unwrap();
    let bus = bus_owning(dir.path(), PROXY);
    let addr = bus.address();
    let state = Arc::new(Mutex::new(Proxy::default()));
    let rt = service_runtime();
    let _service = rt
        .block_on(async {
            zbus::connection::Builder::address(addr.as_str())?
                .name(PROXY)?
                .serve_at("/net/hadess/SensorProxy", SensorProxy(state.clone()))?
                .build()
                .await
        })
        .unwrap_or_else(|e| panic!("the test sensor proxy on the private bus: {e}"));

    let (code, v, err) = probe(&addr, &["bench", "sensorproxy", "20"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(v["n"], 20, "{v}");
    assert_eq!(v["errors"], 0, "{v}");
    assert_eq!(v["has_accelerometer"], true, "{v}");
    assert_eq!(v["orientation"], "left-up", "{v}");
    assert!(v["first_reading_ms"].as_f64().is_some(), "{v}");
    assert!(v["p50_us"].as_f64().unwrap() > 0.0, "{v}");
    let p = state.lock().unwrap();
    assert_eq!(
        (p.claims, p.releases, p.gets),
        (1, 1, 23),
        "claims, releases, gets"
    );
    drop(p);

    let a = dir.path().join("in_accel_x_raw");
    let b = dir.path().join("in_accel_scale");
    std::fs::write(&a, "34\n").unwrap();
    std::fs::write(&b, "0.5\n").unwrap();
    let both = format!("{},{}", a.display(), b.display());
    let (code, v, err) = probe(&addr, &["bench", "sysfs", &both, "10"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        (v["n"].clone(), v["errors"].clone()),
        (json!(10), json!(0)),
        "{v}"
    );
    let missing = format!("{},{}", a.display(), dir.path().join("none").display());
    let (code, v, err) = probe(&addr, &["bench", "sysfs", &missing, "10"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        v["errors"], 10,
        "a missing file of the list is an error: {v}"
    );
}
