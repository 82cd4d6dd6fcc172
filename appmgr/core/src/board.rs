//! `appmgr board show`: what the configured board profile offers and what of it is
//! present on this host now: the logical devices with their node patterns and the nodes
//! that exist, the named core sets, and what the GPU and sensor portals would hand out
//! (the render node the pattern resolves to, the IIO devices and their channels).
//!
//! Read-only: no state directory, no lock, no daemon. Everything shown is read again on
//! every call, so a hot-plugged node or sensor shows up at once.

use crate::config::HostConfig;
use crate::error::{CoreResult, Error};
use crate::{Ctx, Output};
use appmgr_board::{BoardProfile, SensorPortalSpec};
use appmgr_types::{escape_for_display as esc, ErrorClass};
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::fmt::Write;
use std::path::{Path, PathBuf};

/// The width of the label column of the text output.
const LABEL: usize = 16;

/// `appmgr board show`: the board configured in `CONFIG/appmgr.toml` (`board = ...`).
/// No board configured, or a configured profile file that does not exist, is not found.
pub fn show(g: &Ctx) -> CoreResult<Output> {
    let cfg = HostConfig::load(&g.config_dir)?;
    let config_file = g.config_dir.join("appmgr.toml");
    let no_board = || {
        Error::new(
            ErrorClass::NotFound,
            format!(
                "no board profile configured: set board = \"NAME\" (a profile in {} or {}) \
                 or board = \"/PATH/TO/PROFILE.toml\" in {}",
                g.config_dir.join("board-support").display(),
                crate::config::SYSTEM_BOARD_DIR,
                config_file.display()
            ),
        )
    };
    let path = cfg.board_path(&g.config_dir).ok_or_else(no_board)?;
    if !path.try_exists().unwrap_or(true) {
        return Err(Error::new(
            ErrorClass::NotFound,
            format!(
                "board profile {}: no such file (board = {:?} in {})",
                path.display(),
                cfg.board.as_deref().unwrap_or_default(),
                config_file.display()
            ),
        ));
    }
    let board = cfg.board(&g.config_dir)?.ok_or_else(no_board)?;
    report(&board, &path)
}

/// One IIO device found in the sensor portal's sysfs directory.
#[derive(Debug, Clone, PartialEq, Eq)]
struct IioDevice {
    /// The directory's name, `iio:deviceN`.
    dir: String,
    /// Its `name` attribute, `None` when unreadable.
    name: Option<String>,
    /// Its channels: every `in_X_raw` file as `X` (`accel_x`, `temp`, `voltage0`), sorted.
    channels: Vec<String>,
}

fn report(b: &BoardProfile, path: &Path) -> CoreResult<Output> {
    let mut t = String::new();
    fn line(t: &mut String, label: &str, value: &str) {
        let _ = writeln!(t, "{:<LABEL$}{value}", format!("{label}:"));
    }
    let list = |v: &[String]| {
        if v.is_empty() {
            "none".to_string()
        } else {
            v.iter().map(|s| esc(s)).collect::<Vec<_>>().join(" ")
        }
    };
    line(&mut t, "board", &b.name);
    line(&mut t, "arch", b.arch.as_str());
    line(&mut t, "description", &esc(&b.description));
    line(&mut t, "profile", &esc(&path.display().to_string()));
    line(
        &mut t,
        "gpu-driver",
        b.gpu_driver
            .as_deref()
            .unwrap_or("none (no GPU driver extension is mounted)"),
    );

    let mut devices = serde_json::Map::new();
    let _ = writeln!(t, "devices:");
    if b.devices.is_empty() {
        let _ = writeln!(t, "  none");
    }
    for (name, map) in &b.devices {
        let present: Vec<String> = b
            .resolve(&BTreeSet::from([name.clone()]), Path::new("/"))?
            .iter()
            .map(|p| p.display().to_string())
            .collect();
        let _ = writeln!(t, "  {name}:");
        line(&mut t, "    nodes", &list(&map.nodes));
        line(&mut t, "    present", &list(&present));
        line(&mut t, "    sysfs", &list(&map.sysfs));
        devices.insert(
            name.to_string(),
            json!({"nodes": map.nodes, "present": present, "sysfs": map.sysfs}),
        );
    }

    let _ = writeln!(t, "cpusets:");
    if b.cpusets.is_empty() {
        let _ = writeln!(t, "  none");
    }
    let mut cpusets = serde_json::Map::new();
    for (name, set) in &b.cpusets {
        line(&mut t, &format!("  {name}"), &set.to_string());
        cpusets.insert(name.clone(), json!(set.to_string()));
    }

    let gpu = match &b.gpu {
        None => {
            line(&mut t, "gpu portal", "none configured");
            Value::Null
        }
        Some(g) => {
            let now = g.resolve()?.map(|p| p.display().to_string());
            let _ = writeln!(t, "gpu portal:");
            line(&mut t, "  render node", &g.render_node);
            line(
                &mut t,
                "  present",
                &now.as_deref().map_or("none present".into(), esc),
            );
            line(&mut t, "  family", &g.family);
            line(
                &mut t,
                "  driver",
                g.driver
                    .as_deref()
                    .unwrap_or("not named (the render node's DRM driver)"),
            );
            json!({
                "render-node": g.render_node,
                "present": now,
                "family": g.family,
                "driver": g.driver,
            })
        }
    };

    let sensors = match &b.sensors {
        None => {
            line(&mut t, "sensor portal", "none configured");
            Value::Null
        }
        Some(s) => {
            let found = iio_devices(&s.sysfs)?;
            let _ = writeln!(t, "sensor portal:");
            line(&mut t, "  sysfs", &s.sysfs.display().to_string());
            line(
                &mut t,
                "  devices",
                &if s.devices.is_empty() {
                    "every device found".to_string()
                } else {
                    s.devices.join(" ")
                },
            );
            let mut present = Vec::new();
            match &found {
                None => line(&mut t, "  present", "none (no such directory)"),
                Some(v) if v.is_empty() => line(&mut t, "  present", "none"),
                Some(_) => {}
            }
            for (i, d) in found.iter().flatten().enumerate() {
                let served = serves(s, d);
                let _ = writeln!(
                    t,
                    "{:<LABEL$}{} {}: {}{}",
                    if i == 0 { "  present:" } else { "" },
                    d.dir,
                    d.name.as_deref().map_or("(no name)".into(), esc),
                    list(&d.channels),
                    if served { "" } else { " (not served)" },
                );
                present.push(json!({
                    "device": d.dir,
                    "name": d.name,
                    "channels": d.channels,
                    "served": served,
                }));
            }
            json!({
                "sysfs": s.sysfs.display().to_string(),
                "sysfs-present": found.is_some(),
                "devices": s.devices,
                "present": present,
            })
        }
    };

    Ok(Output::new(
        t,
        json!({
            "name": b.name,
            "arch": b.arch.as_str(),
            "description": b.description,
            "profile": path.display().to_string(),
            "gpu-driver": b.gpu_driver,
            "devices": devices,
            "cpusets": cpusets,
            "gpu": gpu,
            "sensors": sensors,
        }),
    ))
}

/// Whether the sensor portal may serve `d`: every device without a filter, else the
/// devices whose `name` is listed.
fn serves(s: &SensorPortalSpec, d: &IioDevice) -> bool {
    s.devices.is_empty() || d.name.as_ref().is_some_and(|n| s.devices.contains(n))
}

/// The IIO devices (`iio:deviceN`, in N order) in `dir`; `None` when `dir` does not
/// exist (no IIO driver loaded). A device that goes away while it is read is left out.
fn iio_devices(dir: &Path) -> CoreResult<Option<Vec<IioDevice>>> {
    let io_err = |p: &Path, e: std::io::Error| {
        Error::new(ErrorClass::Other, format!("{}: {e}", p.display()))
    };
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_err(dir, e)),
    };
    let mut numbered: Vec<(u32, String)> = Vec::new();
    for e in rd {
        let e = e.map_err(|e| io_err(dir, e))?;
        let Ok(name) = e.file_name().into_string() else {
            continue;
        };
        if let Some(n) = name
            .strip_prefix("iio:device")
            .and_then(|n| n.parse::<u32>().ok())
        {
            numbered.push((n, name));
        }
    }
    numbered.sort();
    let mut out = Vec::new();
    for (_, d) in numbered {
        let dev: PathBuf = dir.join(&d);
        let rd = match std::fs::read_dir(&dev) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(io_err(&dev, e)),
        };
        let mut channels: Vec<String> = rd
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter_map(|f| {
                let ch = f.strip_prefix("in_")?.strip_suffix("_raw")?;
                (!ch.is_empty()).then(|| ch.to_string())
            })
            .collect();
        channels.sort();
        let name = std::fs::read_to_string(dev.join("name"))
            .ok()
            .map(|n| n.trim_end_matches('\n').to_string());
        out.push(IioDevice {
            dir: d,
            name,
            channels,
        });
    }
    Ok(Some(out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn ctx(t: &Path) -> Ctx {
        Ctx {
            state_dir: t.join("state"),
            config_dir: t.join("etc"),
        }
    }

    /// A fake IIO sysfs directory: `iio:device0` (accel, three channels), `iio:device10`
    /// (no name attribute), `iio:device2` (temp and a voltage), a trigger.
    fn fake_iio(dir: &Path) {
        let dev = |n: &str, name: Option<&str>, files: &[&str]| {
            let d = dir.join(n);
            fs::create_dir_all(&d).unwrap();
            if let Some(name) = name {
                fs::write(d.join("name"), format!("{name}\n")).unwrap();
            }
            for f in files {
                fs::write(d.join(f), "0\n").unwrap();
            }
        };
        dev(
            "iio:device0",
            Some("accel0"),
            &[
                "in_accel_z_raw",
                "in_accel_x_raw",
                "in_accel_y_raw",
                "in_accel_scale",
                "sampling_frequency",
            ],
        );
        dev("iio:device10", None, &["in_illuminance_raw"]);
        dev(
            "iio:device2",
            Some("temp\u{1b}[31m"),
            &["in_temp_raw", "in_voltage0_raw", "in__raw", "in_temp_input"],
        );
        dev("trigger0", Some("trig"), &[]);
        fs::create_dir_all(dir.join("iio:device0/scan_elements")).unwrap();
        fs::write(dir.join("iio:device0/scan_elements/in_accel_x_en"), "0").unwrap();
    }

    #[test]
    fn iio_devices_in_number_order_with_their_channels() {
        let t = tempfile::tempdir().unwrap();
        assert_eq!(iio_devices(&t.path().join("absent")).unwrap(), None);
        fake_iio(t.path());
        let got = iio_devices(t.path()).unwrap().unwrap();
        let dev = |dir: &str, name: Option<&str>, ch: &[&str]| IioDevice {
            dir: dir.into(),
            name: name.map(Into::into),
            channels: ch.iter().map(|s| s.to_string()).collect(),
        };
        assert_eq!(
            got,
            [
                dev(
                    "iio:device0",
                    Some("accel0"),
                    &["accel_x", "accel_y", "accel_z"]
                ),
                dev("iio:device2", Some("temp\u{1b}[31m"), &["temp", "voltage0"]),
                dev("iio:device10", None, &["illuminance"]),
            ]
        );
        let filter = |d: &[&str]| SensorPortalSpec {
            sysfs: t.path().into(),
            devices: d.iter().map(|s| s.to_string()).collect(),
        };
        assert!(serves(&filter(&[]), &got[2]));
        assert!(serves(&filter(&["accel0"]), &got[0]));
        assert!(!serves(&filter(&["accel0"]), &got[1]));
        assert!(!serves(&filter(&["accel0"]), &got[2]));
    }

    #[test]
    fn report_shows_devices_cpusets_and_portals() {
        let t = tempfile::tempdir().unwrap();
        let iio = t.path().join("iio");
        fake_iio(&iio);
        let text = "name = \"testboard\"\narch = \"aarch64\"\ndescription = \"A test board\"\n\
            [devices.gpu]\nnodes = [\"/dev/nul?\", \"/dev/appmgr-absent*\"]\n\
            [devices.bluetooth]\nsysfs = [\"/sys/class/bluetooth\"]\n\
            [cpusets]\nall = \"0-3\"\nhmi = \"2,3\"\n\
            [portals.gpu]\nrender-node = \"/dev/nul?\"\nfamily = \"virtio\"\n\
            [portals.sensors]\nsysfs = \"/sys/bus/iio/devices\"\ndevices = [\"accel0\"]\n";
        let mut b = BoardProfile::parse(Path::new("b.toml"), text).unwrap();
        // The sensor portal's directory must be below /sys in a profile; the fake one is
        // put in place after parsing.
        b.sensors.as_mut().unwrap().sysfs = iio.clone();
        let out = report(&b, Path::new("/etc/appmgr/board-support/testboard.toml")).unwrap();
        let j = &out.json;
        assert_eq!(j["name"], "testboard");
        assert_eq!(j["arch"], "aarch64");
        assert_eq!(j["description"], "A test board");
        assert_eq!(j["profile"], "/etc/appmgr/board-support/testboard.toml");
        assert_eq!(
            j["devices"]["gpu"],
            json!({"nodes": ["/dev/nul?", "/dev/appmgr-absent*"], "present": ["/dev/null"], "sysfs": []})
        );
        assert_eq!(
            j["devices"]["bluetooth"],
            json!({"nodes": [], "present": [], "sysfs": ["/sys/class/bluetooth"]})
        );
        assert_eq!(j["cpusets"], json!({"all": "0-3", "hmi": "2-3"}));
        assert_eq!(
            j["gpu"],
            json!({"render-node": "/dev/nul?", "present": "/dev/null", "family": "virtio", "driver": null})
        );
        assert_eq!(j["sensors"]["devices"], json!(["accel0"]));
        assert_eq!(j["sensors"]["sysfs-present"], true);
        assert_eq!(
            j["sensors"]["present"][0],
            json!({"device": "iio:device0", "name": "accel0", "channels": ["accel_x", "accel_y", "accel_z"], "served": true})
        );
        assert_eq!(j["sensors"]["present"][1]["served"], false);
        assert_eq!(j["sensors"]["present"][2]["name"], Value::Null);

        let text = &out.text;
        for want in [
            "board:          testboard\n",
            "arch:           aarch64\n",
            "description:    A test board\n",
            "devices:\n  bluetooth:\n    nodes:      none\n    present:    none\n    sysfs:      /sys/class/bluetooth\n",
            "  gpu:\n    nodes:      /dev/nul? /dev/appmgr-absent*\n    present:    /dev/null\n",
            "cpusets:\n  all:          0-3\n  hmi:          2-3\n",
            "gpu portal:\n  render node:  /dev/nul?\n",
            "  present:      /dev/null\n  family:       virtio\n",
            "  driver:       not named (the render node's DRM driver)\n",
            "sensor portal:\n",
            "  devices:      accel0\n",
            "  present:      iio:device0 accel0: accel_x accel_y accel_z\n",
            // Names read from sysfs are escaped.
            "                iio:device2 temp\\u{001b}[31m: temp voltage0 (not served)\n",
            "                iio:device10 (no name): illuminance (not served)\n",
        ] {
            assert!(text.contains(want), "no {want:?} in:\n{text}");
        }
        assert!(!text.contains('\u{1b}'), "{text}");

        // Nothing present, nothing configured.
        b.gpu.as_mut().unwrap().render_node = "/dev/appmgr-absent*".into();
        b.sensors.as_mut().unwrap().sysfs = t.path().join("absent");
        let out = report(&b, Path::new("/b.toml")).unwrap();
        assert_eq!(out.json["gpu"]["present"], Value::Null);
        assert_eq!(out.json["sensors"]["sysfs-present"], false);
        assert!(
            out.text.contains("  present:      none present\n"),
            "{}",
            out.text
        );
        assert!(
            out.text
                .contains("  present:      none (no such directory)\n"),
            "{}",
            out.text
        );
        b.gpu = None;
        b.sensors = None;
        let out = report(&b, Path::new("/b.toml")).unwrap();
        assert_eq!(
            (&out.json["gpu"], &out.json["sensors"]),
            (&Value::Null, &Value::Null)
        );
        assert!(
            out.text.contains("gpu portal:     none configured\n"),
            "{}",
            out.text
        );
        assert!(
            out.text.contains("sensor portal:  none configured\n"),
            "{}",
            out.text
        );
    }

    #[test]
    fn show_reads_the_configured_board_or_is_not_found() {
        let t = tempfile::tempdir().unwrap();
        let g = ctx(t.path());
        fs::create_dir_all(g.config_dir.join("board-support")).unwrap();
        let e = show(&g).unwrap_err();
        assert_eq!(e.class, ErrorClass::NotFound);
        assert!(e.message.contains("no board profile configured"), "{e}");
        assert!(e.message.contains("appmgr.toml"), "{e}");

        fs::write(g.config_dir.join("appmgr.toml"), "board = \"nosuch\"\n").unwrap();
        let e = show(&g).unwrap_err();
        assert_eq!(e.class, ErrorClass::NotFound);
        assert!(e.message.contains("nosuch.toml: no such file"), "{e}");

        fs::write(g.config_dir.join("appmgr.toml"), "board = \"tb\"\n").unwrap();
        let profile = g.config_dir.join("board-support/tb.toml");
        fs::write(&profile, "name = \"tb\"\narch = \"x86_64\"\n").unwrap();
        let out = show(&g).unwrap();
        assert_eq!(out.json["name"], "tb");
        assert_eq!(out.json["profile"], profile.display().to_string());

        // An invalid profile is the board crate's error: file, key and value named.
        fs::write(
            &profile,
            "name = \"tb\"\narch = \"x86_64\"\n[portals.gpu]\nrender-node = \"/dev/dri/card0\"\nfamily = \"intel\"\n",
        )
        .unwrap();
        let e = show(&g).unwrap_err();
        assert_eq!(e.class, ErrorClass::Other);
        for want in ["tb.toml", "portals.gpu.render-node", "/dev/dri/card0"] {
            assert!(e.message.contains(want), "{e}");
        }
    }
}
