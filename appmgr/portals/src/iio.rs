//! IIO devices as sysfs shows them (`Documentation/ABI/testing/sysfs-bus-iio`): each
//! `iio:deviceN` directory has a `name` and, per channel, `in_CHANNEL_raw` with optional
//! `_scale` and `_offset` (per channel, or shared by the channel type:
//! `in_accel_scale`). A value in the channel's unit is `(raw + offset) * scale`.
//!
//! Files are opened without following a final symlink and read with `pread` at offset 0,
//! which makes sysfs render the attribute afresh; a stream keeps its `_raw` files open.

use appmgr_types::ChannelName;
use std::collections::BTreeMap;
use std::io;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

/// One channel of one IIO device.
#[derive(Debug, Clone, PartialEq)]
pub struct Channel {
    pub name: ChannelName,
    /// The device's `name` attribute (`accel0`, `lis3dh`, ...).
    pub device: String,
    /// The `iio:deviceN` directory.
    pub dir: PathBuf,
    /// `in_CHANNEL_raw`.
    pub raw: PathBuf,
    pub scale: Option<PathBuf>,
    pub offset: Option<PathBuf>,
}

/// The unit of a channel type's processed value (sysfs-bus-iio).
pub fn unit_of(channel: &str) -> &'static str {
    match channel_type(channel) {
        "accel" => "m/s^2",
        "anglvel" => "rad/s",
        "magn" => "gauss",
        "temp" => "m°C",
        "voltage" => "mV",
        "current" => "mA",
        "power" => "mW",
        "pressure" => "kPa",
        "humidityrelative" => "m%",
        "illuminance" => "lux",
        "proximity" => "",
        "rot" => "",
        "incli" => "°",
        "angl" => "rad",
        "distance" => "m",
        "velocity" => "m/s",
        "concentration" => "%",
        _ => "",
    }
}

/// The channel type: the leading letters (`accel_x` → `accel`, `voltage0` → `voltage`).
pub fn channel_type(channel: &str) -> &str {
    let end = channel
        .find(|c: char| !c.is_ascii_lowercase())
        .unwrap_or(channel.len());
    &channel[..end]
}

fn open_nofollow(path: &Path) -> io::Result<OwnedFd> {
    use rustix::fs::{Mode, OFlags};
    Ok(rustix::fs::open(
        path,
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NOCTTY | OFlags::NONBLOCK,
        Mode::empty(),
    )?)
}

/// Reads an attribute of an open file from its start.
pub fn pread_attr(fd: &OwnedFd) -> io::Result<String> {
    let mut buf = [0u8; 128];
    let n = rustix::io::pread(fd, &mut buf, 0)?;
    Ok(String::from_utf8_lossy(&buf[..n]).trim().to_string())
}

pub(crate) fn read_attr(path: &Path) -> io::Result<String> {
    pread_attr(&open_nofollow(path)?)
}

fn parse_num(path: &Path, text: &str) -> io::Result<f64> {
    text.parse::<f64>().map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{}: not a number: {text:?}", path.display()),
        )
    })
}

/// The channels of the IIO devices below `sysfs` (`/sys/bus/iio/devices`), of the devices
/// named in `only` (all when empty), in device then channel order. A missing directory
/// has none.
pub fn discover(sysfs: &Path, only: &[String]) -> io::Result<Vec<Channel>> {
    let mut out = Vec::new();
    let entries = match std::fs::read_dir(sysfs) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(out),
        Err(e) => {
            return Err(io::Error::new(
                e.kind(),
                format!("{}: {e}", sysfs.display()),
            ))
        }
    };
    let mut dirs: Vec<PathBuf> = entries
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with("iio:device"))
        .map(|e| e.path())
        .collect();
    dirs.sort();
    for dir in dirs {
        let Ok(device) = std::fs::read_to_string(dir.join("name")) else {
            continue;
        };
        let device = device.trim().to_string();
        if !only.is_empty() && !only.contains(&device) {
            continue;
        }
        let mut files: BTreeMap<String, PathBuf> = BTreeMap::new();
        for e in std::fs::read_dir(&dir)?.filter_map(|e| e.ok()) {
            if let Some(n) = e.file_name().to_str() {
                files.insert(n.to_string(), e.path());
            }
        }
        for f in files.keys() {
            let Some(ch) = f.strip_prefix("in_").and_then(|r| r.strip_suffix("_raw")) else {
                continue;
            };
            let Ok(name) = ChannelName::new(ch) else {
                continue;
            };
            let attr = |suffix: &str| shared_attr(&files, ch, suffix);
            out.push(Channel {
                name,
                device: device.clone(),
                dir: dir.clone(),
                raw: files[f].clone(),
                scale: attr("scale"),
                offset: attr("offset"),
            });
        }
    }
    Ok(out)
}

/// `in_CH_SUFFIX`, else the shared forms: `in_voltage-voltage_scale` for a differential
/// channel, then `in_TYPE_SUFFIX`.
fn shared_attr(files: &BTreeMap<String, PathBuf>, ch: &str, suffix: &str) -> Option<PathBuf> {
    let ty = channel_type(ch);
    let mut names = vec![format!("in_{ch}_{suffix}")];
    if ch.contains('-') {
        names.push(format!("in_{ty}-{ty}_{suffix}"));
    }
    names.push(format!("in_{ty}_{suffix}"));
    names.into_iter().find_map(|n| files.get(&n).cloned())
}

impl Channel {
    /// The current scale (1 without a scale attribute).
    pub fn scale(&self) -> io::Result<f64> {
        match &self.scale {
            None => Ok(1.0),
            Some(p) => parse_num(p, &read_attr(p)?),
        }
    }

    /// The current offset (0 without an offset attribute).
    pub fn offset(&self) -> io::Result<f64> {
        match &self.offset {
            None => Ok(0.0),
            Some(p) => parse_num(p, &read_attr(p)?),
        }
    }

    /// One value, in the channel's unit.
    pub fn read(&self) -> io::Result<f64> {
        let raw = parse_num(&self.raw, &read_attr(&self.raw)?)?;
        Ok((raw + self.offset()?) * self.scale()?)
    }

    /// The channel's `_raw` file, open for repeated reads ([`OpenChannel::read`]), with the
    /// scale and offset of now.
    pub fn open(&self) -> io::Result<OpenChannel> {
        Ok(OpenChannel {
            raw: open_nofollow(&self.raw)?,
            path: self.raw.clone(),
            scale: self.scale()?,
            offset: self.offset()?,
        })
    }
}

/// A channel kept open by a stream.
#[derive(Debug)]
pub struct OpenChannel {
    raw: OwnedFd,
    path: PathBuf,
    scale: f64,
    offset: f64,
}

impl OpenChannel {
    pub fn read(&self) -> io::Result<f64> {
        let raw = parse_num(&self.path, &pread_attr(&self.raw)?)?;
        Ok((raw + self.offset) * self.scale)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// An IIO sysfs tree as the iio_dummy driver lays it out.
    pub(crate) fn fake_sysfs(root: &Path) {
        let d = root.join("iio:device0");
        std::fs::create_dir_all(&d).unwrap();
        for (f, v) in [
            ("name", "accel0\n"),
            ("in_accel_x_raw", "34\n"),
            ("in_accel_scale", "0.5\n"),
            ("in_voltage0_raw", "73\n"),
            ("in_voltage0_scale", "0.001333\n"),
            ("in_voltage0_offset", "7\n"),
            ("in_voltage1-voltage2_raw", "33\n"),
            ("in_voltage-voltage_scale", "0.000001344\n"),
            ("in_steps_input", "0\n"),
            ("in_temp_raw", "-2\n"),
        ] {
            std::fs::write(d.join(f), v).unwrap();
        }
        let e = root.join("iio:device1");
        std::fs::create_dir_all(&e).unwrap();
        std::fs::write(e.join("name"), "other\n").unwrap();
        std::fs::write(e.join("in_accel_x_raw"), "1\n").unwrap();
        std::fs::create_dir_all(root.join("trigger0")).unwrap();
    }

    #[test]
    fn discovers_channels_with_scales_and_offsets() {
        let d = tempfile::tempdir().unwrap();
        fake_sysfs(d.path());
        let all = discover(d.path(), &[]).unwrap();
        let names: Vec<String> = all
            .iter()
            .map(|c| format!("{}/{}", c.device, c.name))
            .collect();
        assert_eq!(
            names,
            [
                "accel0/accel_x",
                "accel0/temp",
                "accel0/voltage0",
                "accel0/voltage1-voltage2",
                "other/accel_x"
            ]
        );
        let only = discover(d.path(), &["other".into()]).unwrap();
        assert_eq!(only.len(), 1);
        let by = |n: &str| all.iter().find(|c| c.name.as_str() == n).unwrap();
        assert_eq!(by("accel_x").read().unwrap(), 17.0);
        assert!((by("voltage0").read().unwrap() - 80.0 * 0.001333).abs() < 1e-12);
        assert!((by("voltage1-voltage2").scale().unwrap() - 0.000001344).abs() < 1e-15);
        assert_eq!(by("temp").read().unwrap(), -2.0);
        let o = by("accel_x").open().unwrap();
        assert_eq!(o.read().unwrap(), 17.0);
        std::fs::write(&by("accel_x").raw, "36\n").unwrap();
        assert_eq!(o.read().unwrap(), 18.0, "a kept file is read afresh");
        assert!(discover(&d.path().join("none"), &[]).unwrap().is_empty());
        assert_eq!(unit_of("accel_x"), "m/s^2");
        assert_eq!(unit_of("voltage1-voltage2"), "mV");
        assert_eq!(channel_type("temp"), "temp");
    }

    #[test]
    fn a_symlinked_attribute_is_not_followed() {
        let d = tempfile::tempdir().unwrap();
        fake_sysfs(d.path());
        let raw = d.path().join("iio:device0/in_accel_x_raw");
        std::fs::remove_file(&raw).unwrap();
        std::os::unix::fs::symlink("/etc/hostname", &raw).unwrap();
        let all = discover(d.path(), &[]).unwrap();
        let c = all.iter().find(|c| c.name.as_str() == "accel_x").unwrap();
        assert!(c.read().is_err());
    }
}
