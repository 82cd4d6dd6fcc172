//! `appmgr board show`: the configured board profile, what of it is present on the host
//! now (device nodes, the GPU portal's render node, the sensor portal's IIO devices), as
//! text and as JSON; not found (exit 5) without a board. Local and read-only: no daemon,
//! no state directory needed.
use appmgr_testkit::*;
use serde_json::{json, Value};
use std::fs;
use std::path::Path;
use std::process::Command;

/// A board whose node patterns resolve the same on every Linux host: `/dev/nul?` is
/// `/dev/null`, `/dev/appmgr-absent*` is nothing.
const PROFILE: &str = r#"name = "testboard"
arch = "aarch64"
description = "A test board"

[devices.gpu]
nodes = ["/dev/nul?", "/dev/appmgr-absent*"]
sysfs = ["/sys/class/drm"]

[devices.bluetooth]
sysfs = ["/sys/class/bluetooth"]

[cpusets]
all = "0-3"
hmi = "2,3"

[portals.gpu]
render-node = "/dev/nul?"
family = "mali"
driver = "panfrost"

[portals.sensors]
sysfs = "/sys/bus/iio/devices"
devices = ["accel0"]
"#;

/// Selects the board profile `text` by name (`CONFIG/board-support/testboard.toml`).
fn configure(e: &Env, text: &str) {
    let dir = e.cfg.join("board-support");
    fs::create_dir_all(&dir).unwrap();
    fs::write(dir.join("testboard.toml"), text).unwrap();
    fs::write(e.cfg.join("appmgr.toml"), "board = \"testboard\"\n").unwrap();
}

#[test]
fn board_show_text_and_json() {
    let e = Env::new();
    configure(&e, PROFILE);
    let profile = e.cfg.join("board-support/testboard.toml");

    let text = e.ok(&["board", "show"]).stdout;
    for want in [
        "board:          testboard\n".to_string(),
        "arch:           aarch64\n".into(),
        "description:    A test board\n".into(),
        format!("profile:        {}\n", profile.display()),
        "devices:\n  bluetooth:\n    nodes:      none\n    present:    none\n    \
         sysfs:      /sys/class/bluetooth\n"
            .into(),
        "  gpu:\n    nodes:      /dev/nul? /dev/appmgr-absent*\n    present:    /dev/null\n    \
         sysfs:      /sys/class/drm\n"
            .into(),
        "cpusets:\n  all:          0-3\n  hmi:          2-3\n".into(),
        "gpu portal:\n  render node:  /dev/nul?\n  present:      /dev/null\n  \
         family:       mali\n  driver:       panfrost\n"
            .into(),
        "sensor portal:\n  sysfs:        /sys/bus/iio/devices\n  devices:      accel0\n".into(),
    ] {
        assert!(text.contains(&want), "no {want:?} in:\n{text}");
    }

    let j = e.ok(&["--json", "board", "show"]).json();
    assert_eq!(j["name"], "testboard");
    assert_eq!(j["arch"], "aarch64");
    assert_eq!(j["description"], "A test board");
    assert_eq!(j["profile"], profile.display().to_string());
    assert_eq!(
        j["devices"],
        json!({
            "bluetooth": {"nodes": [], "present": [], "sysfs": ["/sys/class/bluetooth"]},
            "gpu": {
                "nodes": ["/dev/nul?", "/dev/appmgr-absent*"],
                "present": ["/dev/null"],
                "sysfs": ["/sys/class/drm"],
            },
        })
    );
    assert_eq!(j["cpusets"], json!({"all": "0-3", "hmi": "2-3"}));
    assert_eq!(
        j["gpu"],
        json!({"render-node": "/dev/nul?", "present": "/dev/null", "family": "mali", "driver": "panfrost"})
    );
    let iio = Path::new("/sys/bus/iio/devices");
    assert_eq!(j["sensors"]["sysfs"], "/sys/bus/iio/devices");
    assert_eq!(j["sensors"]["devices"], json!(["accel0"]));
    assert_eq!(j["sensors"]["sysfs-present"], iio.exists());
    assert!(j["sensors"]["present"].is_array(), "{j}");

    // Nothing present now, and no portals configured.
    let bare = PROFILE
        .replace(
            "render-node = \"/dev/nul?\"",
            "render-node = \"/dev/appmgr-absent*\"",
        )
        .replace("driver = \"panfrost\"\n", "");
    configure(&e, &bare);
    let text = e.ok(&["board", "show"]).stdout;
    assert!(
        text.contains(
            "  present:      none present\n  family:       mali\n  driver:       not named"
        ),
        "{text}"
    );
    let j = e.ok(&["--json", "board", "show"]).json();
    assert_eq!(j["gpu"]["present"], Value::Null);
    assert_eq!(j["gpu"]["driver"], Value::Null);
    let none = PROFILE.split("[portals.gpu]").next().unwrap();
    configure(&e, none);
    let text = e.ok(&["board", "show"]).stdout;
    assert!(text.contains("gpu portal:     none configured\n"), "{text}");
    assert!(text.contains("sensor portal:  none configured\n"), "{text}");
    let j = e.ok(&["--json", "board", "show"]).json();
    assert_eq!((&j["gpu"], &j["sensors"]), (&Value::Null, &Value::Null));
}

#[test]
fn board_show_without_a_board_is_not_found() {
    let e = Env::new();
    let msg = e.fails(&["board", "show"], 5);
    assert!(msg.contains("no board profile configured"), "{msg}");
    assert!(msg.contains("appmgr.toml"), "{msg}");
    let r = e.run(&["--json", "board", "show"]);
    assert_eq!(r.code, 5, "{}", r.stderr);
    assert!(r.stdout.is_empty(), "{}", r.stdout);
    let err: Value = serde_json::from_str(r.stderr.lines().nth(1).unwrap()).unwrap();
    assert_eq!(err["error"]["code"], 5);
    assert_eq!(err["error"]["class"], "NotFound");

    // Configured, but no such profile: not found either, naming the file.
    fs::write(e.cfg.join("appmgr.toml"), "board = \"nosuch\"\n").unwrap();
    let msg = e.fails(&["board", "show"], 5);
    assert!(msg.contains("nosuch.toml: no such file"), "{msg}");

    // An invalid profile: the file, the key and the value are named (exit 1).
    configure(
        &e,
        &PROFILE.replace(
            "render-node = \"/dev/nul?\"",
            "render-node = \"/dev/dri/card0\"",
        ),
    );
    let msg = e.fails(&["board", "show"], 1);
    for want in [
        "testboard.toml",
        "portals.gpu.render-node",
        "\"/dev/dri/card0\"",
        "primary DRM node",
    ] {
        assert!(msg.contains(want), "no {want:?} in {msg}");
    }
}

/// The sensor portal's IIO devices, from a fake sysfs tree bound over `/sys/bus` in a
/// private mount namespace: each `iio:deviceN` with its `name` and its `in_*_raw`
/// channels, in N order, and whether the profile's device filter lets the portal serve it.
#[test]
fn board_show_lists_iio_devices_and_their_channels() {
    require_root!("binds a fake IIO tree over /sys/bus in a private mount namespace");
    skip_if!(missing_tool(&["unshare", "mount"]));
    let private = Command::new("unshare")
        .args(["-m", "--propagation", "private", "true"])
        .status()
        .is_ok_and(|s| s.success());
    skip_if!((!private).then(|| "cannot create a mount namespace here".to_string()));

    let e = Env::new();
    configure(&e, PROFILE);
    let bus = e.p("sys-bus");
    let dev = |n: &str, name: &str, files: &[&str]| {
        let d = bus.join("iio/devices").join(n);
        fs::create_dir_all(&d).unwrap();
        fs::write(d.join("name"), format!("{name}\n")).unwrap();
        for f in files {
            fs::write(d.join(f), "0\n").unwrap();
        }
    };
    dev(
        "iio:device0",
        "accel0",
        &[
            "in_accel_x_raw",
            "in_accel_y_raw",
            "in_accel_z_raw",
            "in_accel_scale",
        ],
    );
    dev("iio:device1", "temp0", &["in_temp_raw", "in_voltage0_raw"]);
    dev("iio:device10", "light0", &["in_illuminance_raw"]);
    fs::create_dir_all(bus.join("iio/devices/trigger0")).unwrap();

    let show = |json: bool| {
        let app = e.cmd(&if json {
            vec!["--json", "board", "show"]
        } else {
            vec!["board", "show"]
        });
        let out = Command::new("unshare")
            .args(["-m", "--propagation", "private", "sh", "-c"])
            .arg(r#"mount --bind "$1" /sys/bus && shift && exec "$@""#)
            .arg("sh")
            .arg(&bus)
            .arg(app.get_program())
            .args(app.get_args())
            .env_remove("APPMGR_STATE_DIR")
            .env_remove("APPMGR_CONFIG_DIR")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };

    let text = show(false);
    let want = "  present:      iio:device0 accel0: accel_x accel_y accel_z\n                \
                iio:device1 temp0: temp voltage0 (not served)\n                \
                iio:device10 light0: illuminance (not served)\n";
    assert!(text.contains(want), "no {want:?} in:\n{text}");

    let j: Value = serde_json::from_str(&show(true)).unwrap();
    assert_eq!(j["sensors"]["sysfs-present"], true);
    assert_eq!(
        j["sensors"]["present"],
        json!([
            {"device": "iio:device0", "name": "accel0", "channels": ["accel_x", "accel_y", "accel_z"], "served": true},
            {"device": "iio:device1", "name": "temp0", "channels": ["temp", "voltage0"], "served": false},
            {"device": "iio:device10", "name": "light0", "channels": ["illuminance"], "served": false},
        ])
    );

    // Without a device filter, the portal serves every device found.
    configure(&e, &PROFILE.replace("devices = [\"accel0\"]\n", ""));
    let j: Value = serde_json::from_str(&show(true)).unwrap();
    let served: Vec<&Value> = j["sensors"]["present"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| &d["served"])
        .collect();
    assert_eq!(served, [&json!(true), &json!(true), &json!(true)]);
    assert!(show(false).contains("  devices:      every device found\n"));
}
