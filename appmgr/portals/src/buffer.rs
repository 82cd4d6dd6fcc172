//! Streams from an IIO device's buffer (`Documentation/ABI/testing/sysfs-bus-iio`,
//! "scan elements"): the kernel samples the enabled channels at each trigger and queues
//! fixed-size scans in the device's character device (`/dev/iio:deviceN`).
//!
//! A [`Capture`] owns one device's buffer while at least one stream uses it. It enables
//! exactly the union of the channels its streams carry (each of them granted to its
//! stream's app) plus the timestamp, and runs the device's trigger slightly slower than the
//! fastest stream (see [`trigger_hz`]); every stream is then paced on the scans'
//! timestamps, so none is ever faster than its rate. When the set of channels or the
//! fastest rate changes, the buffer is disabled, drained, reconfigured and enabled again;
//! when the last stream goes, it is disabled, every channel is switched off and the device
//! is closed.
//!
//! A device is used this way when it has `scan_elements/`, `buffer/enable` and a current
//! trigger (`trigger/current_trigger`, set by the board integration, e.g. a udev rule),
//! and its character device opens; otherwise streams poll `_raw` in sysfs
//! ([`crate::sensors`]).

use appmgr_types::ChannelName;
use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

/// How a scan element is stored in a scan (`in_X_type`, e.g. `le:s12/16>>4`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScanType {
    pub big_endian: bool,
    pub signed: bool,
    pub realbits: u8,
    /// 8, 16, 32 or 64.
    pub storagebits: u8,
    pub shift: u8,
}

impl ScanType {
    /// Parses `[be|le]:[s|u]REAL/STORAGE>>SHIFT`. Repeated elements (`X2`) are refused: no
    /// channel the portal grants is one.
    pub fn parse(s: &str) -> Result<ScanType, String> {
        let bad = || format!("unsupported scan type {s:?}");
        let (endian, rest) = s.split_once(':').ok_or_else(bad)?;
        let big_endian = match endian {
            "be" => true,
            "le" => false,
            _ => return Err(bad()),
        };
        let mut chars = rest.chars();
        let signed = match chars.next() {
            Some('s') => true,
            Some('u') => false,
            _ => return Err(bad()),
        };
        let rest = chars.as_str();
        let (real, rest) = rest.split_once('/').ok_or_else(bad)?;
        let (storage, shift) = rest.split_once(">>").ok_or_else(bad)?;
        let t = ScanType {
            big_endian,
            signed,
            realbits: real.parse().map_err(|_| bad())?,
            storagebits: storage.parse().map_err(|_| bad())?,
            shift: shift.parse().map_err(|_| bad())?,
        };
        let fits = matches!(t.storagebits, 8 | 16 | 32 | 64)
            && t.realbits >= 1
            && u32::from(t.realbits) + u32::from(t.shift) <= u32::from(t.storagebits);
        if fits {
            Ok(t)
        } else {
            Err(bad())
        }
    }

    pub fn bytes(&self) -> usize {
        usize::from(self.storagebits / 8)
    }

    /// The element's value from its bytes (exactly [`ScanType::bytes`] of them).
    pub fn decode(&self, b: &[u8]) -> i64 {
        let mut v: u64 = 0;
        for i in 0..b.len() {
            let byte = if self.big_endian {
                b[i]
            } else {
                b[b.len() - 1 - i]
            };
            v = (v << 8) | u64::from(byte);
        }
        v >>= self.shift;
        let bits = u32::from(self.realbits);
        if bits < 64 {
            v &= (1u64 << bits) - 1;
            if self.signed && v >> (bits - 1) & 1 == 1 {
                v |= !0u64 << bits;
            }
        }
        v as i64
    }
}

/// One scan element of a device.
#[derive(Debug, Clone)]
pub struct Element {
    /// The channel (`accel_x`), or `timestamp`.
    pub name: String,
    pub index: u32,
    pub ty: ScanType,
    /// `scan_elements/in_X_en`.
    pub en: PathBuf,
}

/// Where each enabled element sits in a scan: the elements in index order, each aligned
/// to its own size; the scan padded to a multiple of its largest element.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    /// (element position in the device's list, byte offset).
    pub offsets: Vec<(usize, usize)>,
    pub size: usize,
}

impl Layout {
    pub fn of(elements: &[Element], enabled: &BTreeSet<usize>) -> Layout {
        let mut order: Vec<usize> = enabled.iter().copied().collect();
        order.sort_by_key(|&i| elements[i].index);
        let (mut at, mut largest) = (0usize, 1usize);
        let mut offsets = Vec::new();
        for i in order {
            let n = elements[i].ty.bytes();
            at = at.div_ceil(n) * n;
            offsets.push((i, at));
            at += n;
            largest = largest.max(n);
        }
        Layout {
            offsets,
            size: at.div_ceil(largest) * largest,
        }
    }
}

/// The scan elements of device directory `dir`, in index order; empty when it has no
/// buffer.
pub fn elements(dir: &Path) -> io::Result<Vec<Element>> {
    let se = dir.join("scan_elements");
    let entries = match std::fs::read_dir(&se) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut out = Vec::new();
    for e in entries.filter_map(|e| e.ok()) {
        let f = e.file_name().to_string_lossy().into_owned();
        let Some(name) = f.strip_prefix("in_").and_then(|r| r.strip_suffix("_en")) else {
            continue;
        };
        let read = |suffix: &str| crate::iio::read_attr(&se.join(format!("in_{name}_{suffix}")));
        let index = read("index")?;
        let index: u32 = index.parse().map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{}: in_{name}_index: not an index: {index:?}", se.display()),
            )
        })?;
        let ty = ScanType::parse(&read("type")?).map_err(|m| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{}: in_{name}_type: {m}", se.display()),
            )
        })?;
        out.push(Element {
            name: name.to_string(),
            index,
            ty,
            en: se.join(f),
        });
    }
    out.sort_by_key(|e| e.index);
    Ok(out)
}

/// An errno as an I/O error that names `path`.
fn at(path: &Path) -> impl Fn(rustix::io::Errno) -> io::Error + '_ {
    move |e| {
        io::Error::new(
            io::Error::from(e).kind(),
            format!("{}: {e}", path.display()),
        )
    }
}

/// Writes `value` to the sysfs attribute `path` (never through a final symlink).
pub fn write_attr(path: &Path, value: &str) -> io::Result<()> {
    use rustix::fs::{Mode, OFlags};
    let fd = rustix::fs::open(
        path,
        OFlags::WRONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NOCTTY,
        Mode::empty(),
    )
    .map_err(at(path))?;
    rustix::io::write(&fd, value.as_bytes()).map_err(at(path))?;
    Ok(())
}

/// The trigger rate for streams whose fastest is `max_rate_hz`: its period is one stream
/// interval plus 1 % (at least 20 µs), so a trigger firing a little early or late still
/// leaves each scan at least one interval after the one before and the fastest stream
/// loses none to its own pacing. Returned as the millihertz text the hrtimer trigger's
/// `sampling_frequency` takes.
pub fn trigger_hz(max_rate_hz: u32) -> String {
    let interval = 1_000_000_000u64.div_ceil(u64::from(max_rate_hz.max(1)));
    let period = interval + (interval / 100).max(20_000);
    let mhz = 1_000_000_000_000u64 / period;
    format!("{}.{:03}", mhz / 1000, mhz % 1000)
}

/// The samples one scan carries.
#[derive(Debug, Clone, PartialEq)]
pub struct Scan {
    /// Nanoseconds of `CLOCK_MONOTONIC`.
    pub ts: u64,
    pub values: BTreeMap<ChannelName, f64>,
}

/// One device's buffer, in use by at least one stream.
pub struct Capture {
    /// The `iio:deviceN` sysfs directory.
    pub dir: PathBuf,
    /// The device's `name` attribute.
    pub device: String,
    pub fd: std::sync::Arc<tokio::io::unix::AsyncFd<OwnedFd>>,
    elements: Vec<Element>,
    /// Scale and offset per element position (read when the capture started).
    scaling: BTreeMap<usize, (f64, f64)>,
    enabled: BTreeSet<usize>,
    layout: Layout,
    /// The scans carry a `CLOCK_MONOTONIC` timestamp element.
    timestamped: bool,
    /// The trigger's (else the device's) `sampling_frequency`, if there is one.
    frequency: Option<PathBuf>,
    pub trigger: String,
    pub rate_hz: u32,
    partial: Vec<u8>,
    pub task: Option<tokio::task::JoinHandle<()>>,
}

fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::Unsupported, msg)
}

impl Capture {
    /// Opens device `dir`'s buffer (`dev_dir`/`iio:deviceN`) for the channels of `chans`
    /// (each with its scale and offset now), if the device can stream them from its
    /// buffer. `sysfs` is where the triggers are (`triggerN`).
    pub fn open(
        sysfs: &Path,
        dev_dir: &Path,
        dir: &Path,
        device: &str,
        chans: &[(ChannelName, f64, f64)],
    ) -> io::Result<Capture> {
        use crate::iio::read_attr;
        let elements = elements(dir)?;
        if elements.is_empty() {
            return Err(invalid(format!(
                "{device} has no buffer (no scan elements)"
            )));
        }
        let mut scaling = BTreeMap::new();
        for (c, scale, offset) in chans {
            let i = elements
                .iter()
                .position(|e| e.name == c.as_str())
                .ok_or_else(|| invalid(format!("{device} has no scan element for {c}")))?;
            scaling.insert(i, (*scale, *offset));
        }
        let trigger = read_attr(&dir.join("trigger/current_trigger")).unwrap_or_default();
        if trigger.is_empty() {
            return Err(invalid(format!("{device} has no current trigger")));
        }
        let frequency = trigger_frequency(sysfs, &trigger)?
            .or_else(|| Some(dir.join("sampling_frequency")).filter(|p| p.exists()));
        let node = dev_dir.join(dir.file_name().unwrap_or_default());
        let fd = {
            use rustix::fs::{Mode, OFlags};
            rustix::fs::open(
                &node,
                OFlags::RDONLY | OFlags::NONBLOCK | OFlags::CLOEXEC | OFlags::NOFOLLOW,
                Mode::empty(),
            )
            .map_err(at(&node))?
        };
        // tokio 1.54 deprecates `new` (see `sensors::Timer::new`): an `OwnedFd` owned by
        // the `AsyncFd` for its whole life is the sound case.
        #[allow(deprecated)]
        let fd = std::sync::Arc::new(tokio::io::unix::AsyncFd::new(fd)?);
        let mut c = Capture {
            dir: dir.to_path_buf(),
            device: device.to_string(),
            fd,
            elements,
            scaling,
            enabled: BTreeSet::new(),
            layout: Layout {
                offsets: Vec::new(),
                size: 0,
            },
            timestamped: false,
            frequency,
            trigger,
            rate_hz: 0,
            partial: Vec::new(),
            task: None,
        };
        // A buffer some earlier instance left enabled is stopped first.
        c.disable()?;
        // Scans are stamped with the clock the records carry when the device lets it be
        // chosen; otherwise the time of reading stands in.
        let clock = dir.join("current_timestamp_clock");
        c.timestamped = c.elements.iter().any(|e| e.name == "timestamp")
            && (read_attr(&clock).is_ok_and(|v| v == "monotonic")
                || write_attr(&clock, "monotonic").is_ok());
        Ok(c)
    }

    /// Adds the scale and offset of a channel another stream brings.
    pub fn add_channel(&mut self, c: &ChannelName, scale: f64, offset: f64) -> io::Result<()> {
        let i = self
            .elements
            .iter()
            .position(|e| e.name == c.as_str())
            .ok_or_else(|| invalid(format!("{} has no scan element for {c}", self.device)))?;
        self.scaling.entry(i).or_insert((scale, offset));
        Ok(())
    }

    /// Whether the device can stream `c` from its buffer.
    pub fn has(&self, c: &ChannelName) -> bool {
        self.elements.iter().any(|e| e.name == c.as_str())
    }

    fn disable(&mut self) -> io::Result<()> {
        let enable = self.dir.join("buffer/enable");
        if crate::iio::read_attr(&enable)? != "0" {
            write_attr(&enable, "0")?;
        }
        // What the old configuration queued is of the old layout: dropped.
        let mut buf = [0u8; 4096];
        while matches!(rustix::io::read(self.fd.get_ref(), &mut buf), Ok(n) if n > 0) {}
        self.partial.clear();
        Ok(())
    }

    /// Samples exactly `channels` (plus the timestamp) with the trigger at
    /// [`trigger_hz`]`(rate_hz)`: the buffer is stopped, the channels switched, and
    /// started again. Nothing to do when both are as they are.
    pub fn configure(&mut self, channels: &BTreeSet<ChannelName>, rate_hz: u32) -> io::Result<()> {
        let mut want: BTreeSet<usize> = BTreeSet::new();
        for (i, e) in self.elements.iter().enumerate() {
            let is_ts = e.name == "timestamp" && self.timestamped && !channels.is_empty();
            if is_ts || channels.iter().any(|c| c.as_str() == e.name) {
                want.insert(i);
            }
        }
        if want == self.enabled && rate_hz == self.rate_hz {
            return Ok(());
        }
        self.disable()?;
        for (i, e) in self.elements.iter().enumerate() {
            let on = want.contains(&i);
            let now = crate::iio::read_attr(&e.en)? == "1";
            if on != now {
                write_attr(&e.en, if on { "1" } else { "0" })?;
            }
        }
        self.enabled = want;
        self.layout = Layout::of(&self.elements, &self.enabled);
        if self.enabled.is_empty() {
            self.rate_hz = 0;
            return Ok(());
        }
        // Room for a quarter second at the trigger's rate (at least 16 scans), so a
        // reader late by a scheduling hiccup loses nothing.
        let length = (rate_hz / 4).clamp(16, 1024);
        write_attr(&self.dir.join("buffer/length"), &length.to_string())?;
        if let Some(f) = &self.frequency {
            write_attr(f, &trigger_hz(rate_hz))?;
        }
        write_attr(&self.dir.join("buffer/enable"), "1")?;
        self.rate_hz = rate_hz;
        Ok(())
    }

    /// Stops the buffer and switches every channel off (the last stream went).
    pub fn stop(&mut self) -> io::Result<()> {
        self.configure(&BTreeSet::new(), 0)
    }

    /// The scans queued now (none when the device has none ready).
    pub fn read_scans(&mut self, now_ns: u64) -> io::Result<Vec<Scan>> {
        let size = self.layout.size;
        if size == 0 {
            return Ok(Vec::new());
        }
        let mut buf = vec![0u8; size * 64];
        let mut out = Vec::new();
        loop {
            let n = match rustix::io::read(self.fd.get_ref(), &mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(rustix::io::Errno::AGAIN) => break,
                Err(e) => return Err(e.into()),
            };
            self.partial.extend_from_slice(&buf[..n]);
            let whole = self.partial.len() / size * size;
            for scan in self.partial[..whole].chunks_exact(size) {
                out.push(self.decode(scan, now_ns));
            }
            self.partial.drain(..whole);
            if n < buf.len() {
                break;
            }
        }
        Ok(out)
    }

    fn decode(&self, scan: &[u8], now_ns: u64) -> Scan {
        let mut s = Scan {
            ts: now_ns,
            values: BTreeMap::new(),
        };
        for &(i, at) in &self.layout.offsets {
            let e = &self.elements[i];
            let raw = e.ty.decode(&scan[at..at + e.ty.bytes()]);
            if e.name == "timestamp" {
                if self.timestamped && raw > 0 {
                    s.ts = raw as u64;
                }
            } else if let (Ok(name), Some((scale, offset))) =
                (ChannelName::new(&e.name), self.scaling.get(&i))
            {
                s.values.insert(name, (raw as f64 + offset) * scale);
            }
        }
        s
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }
}

/// The `sampling_frequency` of the trigger named `name` below `sysfs`, if it has one.
fn trigger_frequency(sysfs: &Path, name: &str) -> io::Result<Option<PathBuf>> {
    let Ok(entries) = std::fs::read_dir(sysfs) else {
        return Ok(None);
    };
    for e in entries.filter_map(|e| e.ok()) {
        if !e.file_name().to_string_lossy().starts_with("trigger") {
            continue;
        }
        if crate::iio::read_attr(&e.path().join("name")).is_ok_and(|n| n == name) {
            let f = e.path().join("sampling_frequency");
            return Ok(f.exists().then_some(f));
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scan_types_parse_and_decode() {
        let t = ScanType::parse("le:s12/16>>4").unwrap();
        assert_eq!(
            t,
            ScanType {
                big_endian: false,
                signed: true,
                realbits: 12,
                storagebits: 16,
                shift: 4
            }
        );
        // -3 in 12 bits, shifted left by 4, little-endian.
        let v: u16 = ((-3i16 as u16) & 0x0fff) << 4 | 0xf;
        assert_eq!(t.decode(&v.to_le_bytes()), -3);
        let u = ScanType::parse("be:u13/16>>0").unwrap();
        assert_eq!(u.decode(&[0xff, 0xff]), 0x1fff);
        let ts = ScanType::parse("le:s64/64>>0").unwrap();
        assert_eq!(
            ts.decode(&123_456_789_012i64.to_le_bytes()),
            123_456_789_012
        );
        for bad in [
            "le:s16/16X2>>0",
            "xe:s16/16>>0",
            "le:s17/16>>0",
            "le:s12/12>>0",
            "le:q8/8>>0",
            "",
        ] {
            assert!(ScanType::parse(bad).is_err(), "{bad}");
        }
    }

    fn el(name: &str, index: u32, ty: &str) -> Element {
        Element {
            name: name.into(),
            index,
            ty: ScanType::parse(ty).unwrap(),
            en: PathBuf::new(),
        }
    }

    #[test]
    fn layout_aligns_each_element_and_pads_the_scan() {
        // iio_dummy: voltage0 u13/16 (0), accel_x s16/16 (3), timestamp s64/64 (4).
        let e = [
            el("voltage0", 0, "le:u13/16>>0"),
            el("voltage1-voltage2", 1, "le:s12/16>>0"),
            el("accel_x", 3, "le:s16/16>>0"),
            el("timestamp", 4, "le:s64/64>>0"),
        ];
        let l = Layout::of(&e, &[2, 3].into());
        assert_eq!((l.offsets.clone(), l.size), (vec![(2, 0), (3, 8)], 16));
        let l = Layout::of(&e, &[0, 1, 2].into());
        assert_eq!(
            (l.offsets.clone(), l.size),
            (vec![(0, 0), (1, 2), (2, 4)], 6)
        );
        let l = Layout::of(&e, &BTreeSet::new());
        assert_eq!(l.size, 0);
    }

    #[test]
    fn the_trigger_runs_a_little_slower_than_the_fastest_stream() {
        assert_eq!(trigger_hz(200), "198.019");
        assert_eq!(trigger_hz(20), "19.801");
        assert_eq!(trigger_hz(1), "0.990");
        // 1 kHz: 1 ms + 20 µs.
        assert_eq!(trigger_hz(1000), "980.392");
    }
}
