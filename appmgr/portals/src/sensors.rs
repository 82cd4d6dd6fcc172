//! `org.appmgr.portal.Sensors1`: the IIO channels of an app's `[permissions.sensors]`
//! grant, as single reads and as streams.
//!
//! A stream is a pipe. Each record is written whole (one `write` of at most 264 bytes, less
//! than `PIPE_BUF`, so a reader never sees a torn record): a little-endian u64 timestamp in
//! nanoseconds of `CLOCK_MONOTONIC`, then one little-endian f64 per channel in the order
//! `Open` was given. Records come at most `rate_hz` per second: the next record is due one
//! interval (⌈10⁹/rate⌉ ns) after the previous one was taken, so no two are closer and no
//! 1-second window holds more than `rate_hz`; a late wake-up (a `timerfd` wakes within
//! tens of µs) makes the average slightly slower, never faster. A reader that does not
//! keep up loses records (the write end does not block), never the service's time.
//!
//! Where the channels of a stream are all on one device that has an IIO buffer and a
//! trigger, the stream is served from that buffer ([`crate::buffer`]): the kernel samples
//! exactly the channels the device's streams carry, and each scan is fanned out to every
//! stream of that device that is due (paced on the scans' timestamps the same way).
//! Otherwise one sampler task polls sysfs for every such stream: at each due time it reads
//! each needed channel once and fans the value out to every stream due then, so two apps
//! reading the same device cost one read. A stream ends (EOF) when its caller exits, when
//! `appmgr reload` or a store change leaves the grant without its channels or rate (see
//! [`crate::watch`]), or when the reader closes it.

use crate::buffer::{Capture, Scan};
use crate::iio::{self, Channel, OpenChannel};
use crate::{grants, PortalError, Shared};
use appmgr_core::journal;
use appmgr_types::{AppId, ChannelName, Permissions};
use std::collections::{BTreeMap, BTreeSet};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// The most channels one stream may carry (a record stays below `PIPE_BUF`).
pub const MAX_STREAM_CHANNELS: usize = 32;

/// The most streams one app may hold open at once: each costs the portal a pipe, a pidfd
/// and a share of every sample, so an app opening streams in a loop is stopped here.
pub const MAX_STREAMS_PER_APP: usize = 32;

/// One open stream.
pub struct Stream {
    pub id: u64,
    pub app: AppId,
    pub pid: u32,
    pub pidfd: OwnedFd,
    pub channels: Vec<ChannelName>,
    pub rate_hz: u32,
    interval: Duration,
    src: Source,
    pipe: OwnedFd,
    pub written: u64,
    pub dropped: u64,
}

/// Where a stream's samples come from.
enum Source {
    /// Polled from sysfs by the sampler: keys into [`Streams::open`] in record order, and
    /// when the next record is due.
    Poll {
        keys: Vec<PathBuf>,
        next_due: Instant,
    },
    /// Fanned out from the buffer of the capture of device directory `dev`: the next
    /// record is the first scan stamped at or after `next_ts`.
    Buffer { dev: PathBuf, next_ts: u64 },
}

impl Stream {
    /// Where its samples come from, for the journal.
    pub fn source(&self, st: &Streams) -> String {
        match &self.src {
            Source::Poll { .. } => "polling sysfs".into(),
            Source::Buffer { dev, .. } => match st.captures.get(dev) {
                Some(c) => format!(
                    "from the IIO buffer of {} (trigger {})",
                    c.device, c.trigger
                ),
                None => "from an IIO buffer".into(),
            },
        }
    }

    /// Writes one whole record; `Err` says why the stream ends.
    fn deliver(&mut self, rec: &[u8]) -> Result<(), &'static str> {
        match rustix::io::write(&self.pipe, rec) {
            Ok(_) => self.written += 1,
            Err(rustix::io::Errno::AGAIN) => self.dropped += 1,
            Err(_) => return Err("its reader closed it"),
        }
        Ok(())
    }
}

/// Every open stream, the channel files polled streams keep open (shared between
/// streams), and the device buffers buffered streams use.
#[derive(Default)]
pub struct Streams {
    next_id: u64,
    pub list: Vec<Stream>,
    open: BTreeMap<PathBuf, (OpenChannel, usize)>,
    captures: BTreeMap<PathBuf, Capture>,
}

impl Streams {
    /// Removes stream `id`; its write end closes, so the reader sees EOF. A device buffer
    /// it used is narrowed to the remaining streams' channels, or stopped.
    pub fn remove(&mut self, id: u64) -> Option<Stream> {
        let i = self.list.iter().position(|s| s.id == id)?;
        let s = self.list.swap_remove(i);
        match &s.src {
            Source::Poll { keys, .. } => {
                for k in keys {
                    if let Some(e) = self.open.get_mut(k) {
                        e.1 -= 1;
                        if e.1 == 0 {
                            self.open.remove(k);
                        }
                    }
                }
            }
            Source::Buffer { dev, .. } => {
                if let Err(e) = self.refresh(dev) {
                    // The buffer keeps its wider set of channels; each stream still gets
                    // only its own.
                    journal::log(
                        journal::WARNING,
                        None,
                        None,
                        &format!(
                            "sensors: cannot narrow the IIO buffer of {}: {e}",
                            dev.display()
                        ),
                    );
                }
            }
        }
        Some(s)
    }

    /// Configures device `dev`'s buffer for its streams now: their channels, the fastest
    /// rate; stopped and closed when it has none.
    fn refresh(&mut self, dev: &Path) -> std::io::Result<()> {
        let mut chans = BTreeSet::new();
        let mut rate = 0;
        for x in &self.list {
            if matches!(&x.src, Source::Buffer { dev: d, .. } if d == dev) {
                chans.extend(x.channels.iter().cloned());
                rate = rate.max(x.rate_hz);
            }
        }
        let Some(c) = self.captures.get_mut(dev) else {
            return Ok(());
        };
        if chans.is_empty() {
            let r = c.stop();
            self.captures.remove(dev);
            return r;
        }
        c.configure(&chans, rate)
    }

    /// Ends stream `id` (its reader sees EOF) and journals `what` happened to it, e.g.
    /// `revoked: sensor channel temp is not granted`.
    pub fn end(&mut self, id: u64, priority: u8, what: &str) {
        if let Some(x) = self.remove(id) {
            journal::log(
                priority,
                Some(journal::Event::PortalRevoked),
                Some(x.app.as_str()),
                &format!(
                    "sensors: stream {id} of pid {} {what} ({} records, {} dropped)",
                    x.pid, x.written, x.dropped
                ),
            );
        }
    }

    /// Ends the streams (of app `only`, or of every app) whose caller has exited.
    pub fn end_exited(&mut self, only: Option<&AppId>) {
        let dead: Vec<u64> = self
            .list
            .iter()
            .filter(|x| only.is_none_or(|a| *a == x.app) && crate::identity::exited(&x.pidfd))
            .map(|x| x.id)
            .collect();
        for id in dead {
            self.end(id, journal::INFO, "closed: its caller exited");
        }
    }

    /// Writes each of `scans` of device `dev` to every stream of that device due at its
    /// timestamp; returns the streams that must end, and why.
    fn fan_out(&mut self, dev: &Path, scans: &[Scan]) -> Vec<(u64, &'static str)> {
        let mut gone = Vec::new();
        for x in self.list.iter_mut() {
            let interval = x.interval.as_nanos() as u64;
            for scan in scans {
                let Source::Buffer { dev: d, next_ts } = &mut x.src else {
                    break;
                };
                if d != dev || scan.ts < *next_ts {
                    continue;
                }
                let mut rec = Vec::with_capacity(8 + 8 * x.channels.len());
                rec.extend_from_slice(&scan.ts.to_le_bytes());
                for c in &x.channels {
                    if let Some(v) = scan.values.get(c) {
                        rec.extend_from_slice(&v.to_le_bytes());
                    }
                }
                if rec.len() != 8 + 8 * x.channels.len() {
                    // A scan from before the buffer carried this stream's channels.
                    continue;
                }
                // One interval after this scan: the same pacing as a polled stream.
                *next_ts = scan.ts + interval;
                if let Err(why) = x.deliver(&rec) {
                    gone.push((x.id, why));
                    break;
                }
            }
        }
        gone
    }
}

/// Reads device `dev`'s buffer while its capture (with this descriptor) lasts, and fans
/// the scans out. Reads happen with the streams locked, so a reconfiguration (which
/// drains the buffer) never meets a scan of the old layout.
async fn reader(s: Arc<Shared>, dev: PathBuf, fd: Arc<tokio::io::unix::AsyncFd<OwnedFd>>) {
    loop {
        let Ok(mut g) = fd.readable().await else {
            return;
        };
        let mut st = s.streams.lock().unwrap_or_else(|p| p.into_inner());
        let Some(c) = st.captures.get_mut(&dev) else {
            return;
        };
        if !Arc::ptr_eq(&c.fd, &fd) {
            return;
        }
        match c.read_scans(now_ns()) {
            Ok(scans) if scans.is_empty() => g.clear_ready(),
            Ok(scans) => {
                for (id, why) in st.fan_out(&dev, &scans) {
                    st.end(id, journal::INFO, &format!("ended: {why}"));
                }
            }
            Err(e) => {
                let name = c.device.clone();
                let ids: Vec<u64> = st
                    .list
                    .iter()
                    .filter(|x| matches!(&x.src, Source::Buffer { dev: d, .. } if *d == dev))
                    .map(|x| x.id)
                    .collect();
                for id in ids {
                    st.end(
                        id,
                        journal::WARNING,
                        &format!("ended: the IIO buffer of {name} failed: {e}"),
                    );
                }
                st.captures.remove(&dev);
                return;
            }
        }
    }
}

/// Where this board's IIO devices are, and which of them the portal serves.
pub fn iio_source(s: &Shared) -> Result<(PathBuf, Vec<String>), PortalError> {
    if let Some(d) = &s.config.iio_dir {
        return Ok((d.clone(), Vec::new()));
    }
    let host = appmgr_core::config::HostConfig::load(&s.config.config_dir)
        .map_err(|e| PortalError::NotAvailable(e.message))?;
    let board = host
        .board(&s.config.config_dir)
        .map_err(|e| PortalError::NotAvailable(e.message))?;
    Ok(match board.and_then(|b| b.sensors) {
        Some(sp) => (sp.sysfs, sp.devices),
        None => (PathBuf::from("/sys/bus/iio/devices"), Vec::new()),
    })
}

fn channels_now(s: &Shared) -> Result<Vec<Channel>, PortalError> {
    let (dir, only) = iio_source(s)?;
    iio::discover(&dir, &only).map_err(|e| PortalError::NotAvailable(e.to_string()))
}

/// Why `perms` does not cover a stream of `channels` at `rate_hz`, if it does not.
pub fn stream_refusal(
    perms: &Permissions,
    channels: &[ChannelName],
    rate_hz: u32,
) -> Option<String> {
    if !grants::has_portal(perms, "sensors") {
        return Some("the sensors portal is not granted".into());
    }
    if let Some(c) = channels
        .iter()
        .find(|c| !perms.sensors.channels.contains(*c))
    {
        return Some(format!("sensor channel {c} is not granted"));
    }
    match perms.sensors.max_rate_hz {
        None if rate_hz > 0 => Some("no stream rate is granted (sensors.max-rate-hz)".into()),
        Some(m) if rate_hz > m => Some(format!(
            "{rate_hz} Hz is above the granted sensors.max-rate-hz {m}"
        )),
        _ => None,
    }
}

fn now_ns() -> u64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    (t.tv_sec as u64).saturating_mul(1_000_000_000) + t.tv_nsec as u64
}

/// A timer of `timerfd` precision (tens of µs): tokio's own timers round to whole
/// milliseconds, which would stretch a 5 ms (200 Hz) interval by up to a fifth.
struct Timer(tokio::io::unix::AsyncFd<OwnedFd>);

impl Timer {
    fn new() -> std::io::Result<Timer> {
        use rustix::time::{TimerfdClockId, TimerfdFlags};
        let fd = rustix::time::timerfd_create(
            TimerfdClockId::Monotonic,
            TimerfdFlags::NONBLOCK | TimerfdFlags::CLOEXEC,
        )?;
        // tokio 1.54 deprecates `new` because a `T` whose `as_raw_fd` can change (or that
        // does not own its descriptor) could outlive the registration; an `OwnedFd` owned
        // by the `AsyncFd` for its whole life is the case `new` is sound for, and the safe
        // call keeps this crate free of `unsafe`.
        #[allow(deprecated)]
        let fd = tokio::io::unix::AsyncFd::new(fd)?;
        Ok(Timer(fd))
    }

    /// Returns at `due` (at once if it has passed).
    async fn sleep_until(&self, due: Instant) -> std::io::Result<()> {
        let left = due.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(());
        }
        let zero = rustix::time::Timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        let spec = rustix::time::Itimerspec {
            it_interval: zero,
            it_value: rustix::time::Timespec {
                tv_sec: left.as_secs() as _,
                tv_nsec: left.subsec_nanos() as _,
            },
        };
        rustix::time::timerfd_settime(
            self.0.get_ref(),
            rustix::time::TimerfdTimerFlags::empty(),
            &spec,
        )?;
        loop {
            let mut g = self.0.readable().await?;
            let mut buf = [0u8; 8];
            match rustix::io::read(g.get_inner(), &mut buf) {
                Ok(_) => return Ok(()),
                Err(rustix::io::Errno::AGAIN) => g.clear_ready(),
                Err(e) => return Err(e.into()),
            }
        }
    }
}

/// The sampler: waits for the earliest due stream, reads the channels due streams need
/// (each once), writes their records, and ends streams whose reader is gone.
pub async fn sampler(s: Arc<Shared>) {
    let timer = match Timer::new() {
        Ok(t) => Some(t),
        Err(e) => {
            journal::log(
                journal::WARNING,
                None,
                None,
                &format!("sensors: no timerfd ({e}); streams use millisecond timers"),
            );
            None
        }
    };
    loop {
        // Registered before the state is read, so a change made meanwhile wakes it.
        let changed = s.changed.notified();
        let next = {
            let st = s.streams.lock().unwrap_or_else(|p| p.into_inner());
            st.list
                .iter()
                .filter_map(|x| match &x.src {
                    Source::Poll { next_due, .. } => Some(*next_due),
                    Source::Buffer { .. } => None,
                })
                .min()
        };
        match next {
            None => changed.await,
            Some(due) => match &timer {
                Some(t) => {
                    tokio::select! {
                        r = t.sleep_until(due) => {
                            if r.is_err() {
                                tokio::time::sleep_until(due).await;
                            }
                        }
                        _ = changed => continue,
                    }
                }
                None => {
                    tokio::select! {
                        _ = tokio::time::sleep_until(due) => {}
                        _ = changed => continue,
                    }
                }
            },
        }
        // The timestamp first: no record's timestamp is later than `now`, so the next one,
        // due at `now + interval` or later, is at least one interval after it.
        let ts = now_ns();
        let now = Instant::now();
        let mut st = s.streams.lock().unwrap_or_else(|p| p.into_inner());
        let mut values: BTreeMap<PathBuf, f64> = BTreeMap::new();
        let mut gone = Vec::new();
        let Streams { list, open, .. } = &mut *st;
        for x in list.iter_mut() {
            let Source::Poll { keys, next_due } = &mut x.src else {
                continue;
            };
            if *next_due > now {
                continue;
            }
            let mut rec = Vec::with_capacity(8 + 8 * keys.len());
            rec.extend_from_slice(&ts.to_le_bytes());
            let mut ok = true;
            for k in keys.iter() {
                let v = match values.get(k) {
                    Some(v) => *v,
                    None => match open.get(k).map(|(c, _)| c.read()) {
                        Some(Ok(v)) => {
                            values.insert(k.clone(), v);
                            v
                        }
                        _ => {
                            ok = false;
                            break;
                        }
                    },
                };
                rec.extend_from_slice(&v.to_le_bytes());
            }
            if !ok {
                // The device went away: the stream ends.
                gone.push((x.id, "its device is gone"));
                continue;
            }
            // One interval after this record: consecutive records are never closer
            // than 1/rate (so no 1-second window holds more than rate of them); a late
            // wake-up makes the average a little slower, never faster.
            *next_due = now + x.interval;
            if let Err(why) = x.deliver(&rec) {
                gone.push((x.id, why));
            }
        }
        for (id, why) in gone {
            st.end(id, journal::INFO, &format!("ended: {why}"));
        }
    }
}

/// A polled source for `picked`: their `_raw` files, kept open (shared with other polled
/// streams). A stream at the rate of a polled one joins its schedule: both are served by
/// the same wake-up and the same reads (each is still never faster than its rate: its
/// first record simply comes up to one interval later).
fn poll_source(
    st: &mut Streams,
    picked: &[Channel],
    interval: Duration,
) -> Result<Source, PortalError> {
    let mut keys = Vec::new();
    for ch in picked {
        let k = ch.raw.clone();
        if !st.open.contains_key(&k) {
            let o = ch
                .open()
                .map_err(|e| PortalError::NotAvailable(format!("{}: {e}", ch.name)))?;
            st.open.insert(k.clone(), (o, 0));
        }
        if let Some(e) = st.open.get_mut(&k) {
            e.1 += 1;
        }
        keys.push(k);
    }
    let next_due = st
        .list
        .iter()
        .find_map(|x| match &x.src {
            Source::Poll { next_due, .. } if x.interval == interval => Some(*next_due),
            _ => None,
        })
        .unwrap_or_else(Instant::now);
    Ok(Source::Poll { keys, next_due })
}

/// Makes sure the buffer of the device of `picked` (all on one device) is open with their
/// scales and offsets, and read by a [`reader`] task; the caller configures it.
fn attach(
    s: &Arc<Shared>,
    st: &mut Streams,
    sysfs: &Path,
    picked: &[Channel],
) -> std::io::Result<()> {
    let dir = &picked[0].dir;
    let mut chans = Vec::new();
    for c in picked {
        chans.push((c.name.clone(), c.scale()?, c.offset()?));
    }
    if let Some(cap) = st.captures.get_mut(dir) {
        for (n, scale, offset) in &chans {
            cap.add_channel(n, *scale, *offset)?;
        }
        return Ok(());
    }
    let dev_dir = s
        .config
        .iio_dev_dir
        .clone()
        .unwrap_or_else(|| PathBuf::from("/dev"));
    let mut cap = Capture::open(sysfs, &dev_dir, dir, &picked[0].device, &chans)?;
    cap.task = Some(tokio::spawn(reader(s.clone(), dir.clone(), cap.fd.clone())));
    st.captures.insert(dir.clone(), cap);
    Ok(())
}

/// `org.appmgr.portal.Sensors1`.
pub struct Sensors {
    pub(crate) s: Arc<Shared>,
}

fn parse_channel(c: &str) -> Result<ChannelName, PortalError> {
    ChannelName::new(c).map_err(|e| PortalError::InvalidArgs(e.to_string()))
}

#[zbus::interface(name = "org.appmgr.portal.Sensors1")]
impl Sensors {
    #[zbus(out_args("channels"))]
    async fn list(
        &self,
        #[zbus(header)] hdr: zbus::message::Header<'_>,
    ) -> Result<Vec<(String, String, f64, String)>, PortalError> {
        let (_, perms) = self.s.granted(&hdr, "Sensors1.List", "sensors").await?;
        let mut out = Vec::new();
        for ch in channels_now(&self.s)? {
            if perms.sensors.channels.contains(&ch.name) {
                let scale = ch
                    .scale()
                    .map_err(|e| PortalError::NotAvailable(e.to_string()))?;
                out.push((
                    ch.name.to_string(),
                    ch.device.clone(),
                    scale,
                    iio::unit_of(ch.name.as_str()).to_string(),
                ));
            }
        }
        Ok(out)
    }

    #[zbus(out_args("value"))]
    async fn read(
        &self,
        #[zbus(header)] hdr: zbus::message::Header<'_>,
        channel: String,
    ) -> Result<f64, PortalError> {
        let name = parse_channel(&channel)?;
        let (c, perms) = self.s.granted(&hdr, "Sensors1.Read", "sensors").await?;
        if !perms.sensors.channels.contains(&name) {
            return Err(self.s.denied(
                &c.app,
                format!("{}: sensor channel {name} is not granted", c.app),
            ));
        }
        let ch = channels_now(&self.s)?
            .into_iter()
            .find(|x| x.name == name)
            .ok_or_else(|| PortalError::NotAvailable(format!("no sensor has channel {name}")))?;
        ch.read()
            .map_err(|e| PortalError::NotAvailable(format!("{name}: {e}")))
    }

    #[zbus(out_args("fd"))]
    async fn open(
        &self,
        #[zbus(header)] hdr: zbus::message::Header<'_>,
        channels: Vec<String>,
        rate_hz: u32,
    ) -> Result<zbus::zvariant::OwnedFd, PortalError> {
        if channels.is_empty() || channels.len() > MAX_STREAM_CHANNELS {
            return Err(PortalError::InvalidArgs(format!(
                "a stream carries 1 to {MAX_STREAM_CHANNELS} channels, not {}",
                channels.len()
            )));
        }
        let names = channels
            .iter()
            .map(|c| parse_channel(c))
            .collect::<Result<Vec<_>, _>>()?;
        if (1..names.len()).any(|i| names[..i].contains(&names[i])) {
            return Err(PortalError::InvalidArgs("a channel is named twice".into()));
        }
        if rate_hz == 0 || rate_hz > appmgr_types::MAX_SENSOR_RATE_HZ {
            return Err(PortalError::InvalidArgs(format!(
                "rate {rate_hz} Hz: must be 1 to {}",
                appmgr_types::MAX_SENSOR_RATE_HZ
            )));
        }
        let (c, perms) = self.s.granted(&hdr, "Sensors1.Open", "sensors").await?;
        if let Some(why) = stream_refusal(&perms, &names, rate_hz) {
            return Err(self.s.denied(&c.app, format!("{}: {why}", c.app)));
        }
        let open_now = {
            let mut st = self.s.streams.lock().unwrap_or_else(|p| p.into_inner());
            // Streams of this app's exited callers end now, not at the watcher's next
            // tick: they must not count against the limit.
            st.end_exited(Some(&c.app));
            st.list.iter().filter(|x| x.app == c.app).count()
        };
        if open_now >= MAX_STREAMS_PER_APP {
            return Err(PortalError::NotAvailable(format!(
                "{} holds {open_now} open streams, the most one app may hold",
                c.app
            )));
        }
        // One read of the host config and board for both the channels and the triggers.
        let (sysfs, only) = iio_source(&self.s)?;
        let found =
            iio::discover(&sysfs, &only).map_err(|e| PortalError::NotAvailable(e.to_string()))?;
        let mut picked = Vec::new();
        for n in &names {
            let ch = found
                .iter()
                .find(|x| &x.name == n)
                .ok_or_else(|| PortalError::NotAvailable(format!("no sensor has channel {n}")))?;
            picked.push(ch.clone());
        }
        let (read_end, write_end) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)
            .map_err(|e| PortalError::NotAvailable(format!("pipe: {e}")))?;
        let fl = rustix::fs::fcntl_getfl(&write_end)
            .map_err(|e| PortalError::NotAvailable(format!("pipe: {e}")))?;
        rustix::fs::fcntl_setfl(&write_end, fl | rustix::fs::OFlags::NONBLOCK)
            .map_err(|e| PortalError::NotAvailable(format!("pipe: {e}")))?;
        // Rounded up: records are never closer than 1/rate_hz.
        let interval = Duration::from_nanos(1_000_000_000u64.div_ceil(u64::from(rate_hz)));
        let dev = picked[0].dir.clone();
        let one_device = picked.iter().all(|x| x.dir == dev);
        let mut tries = 0;
        let mut pidfd = Some(c.pidfd);
        let mut pipe = Some(write_end);
        let (id, how) = loop {
            let busy = {
                let mut st = self.s.streams.lock().unwrap_or_else(|p| p.into_inner());
                let buffered = if one_device {
                    attach(&self.s, &mut st, &sysfs, &picked)
                } else {
                    Err(std::io::Error::other(
                        "its channels are on more than one device",
                    ))
                };
                match buffered {
                    Err(e) if e.kind() == std::io::ErrorKind::ResourceBusy && tries < 20 => true,
                    buffered => {
                        let buffered = buffered.map_err(|e| e.to_string());
                        let src = match &buffered {
                            Ok(()) => Source::Buffer {
                                dev: dev.clone(),
                                next_ts: 0,
                            },
                            Err(_) => poll_source(&mut st, &picked, interval)?,
                        };
                        st.next_id += 1;
                        let id = st.next_id;
                        let (Some(pidfd), Some(pipe)) = (pidfd.take(), pipe.take()) else {
                            unreachable!("moved only here, once")
                        };
                        st.list.push(Stream {
                            id,
                            app: c.app.clone(),
                            pid: c.pid,
                            pidfd,
                            channels: names.clone(),
                            rate_hz,
                            interval,
                            src,
                            pipe,
                            written: 0,
                            dropped: 0,
                        });
                        let mut why_not = buffered.err();
                        if why_not.is_none() {
                            if let Err(e) = st.refresh(&dev) {
                                // The buffer cannot take it (its sysfs is read-only, the
                                // trigger refuses the rate...): this stream polls instead.
                                why_not = Some(format!("configuring the buffer: {e}"));
                                let src = poll_source(&mut st, &picked, interval)?;
                                if let Some(x) = st.list.last_mut() {
                                    x.src = src;
                                }
                                let _ = st.refresh(&dev);
                            }
                        }
                        let how = match (&why_not, st.list.last()) {
                            (None, Some(x)) => x.source(&st),
                            (Some(w), _) => format!("polling sysfs ({w})"),
                            _ => String::new(),
                        };
                        break (id, how);
                    }
                }
            };
            if busy {
                // The device's buffer is still held by a capture that just ended.
                tries += 1;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        };
        self.s.changed.notify_waiters();
        journal::log(
            journal::INFO,
            Some(journal::Event::PortalGranted),
            Some(c.app.as_str()),
            &format!(
                "sensors: stream {id} of {} at {rate_hz} Hz to pid {} of {}, {how}",
                names
                    .iter()
                    .map(|n| n.as_str())
                    .collect::<Vec<_>>()
                    .join(","),
                c.pid,
                c.app
            ),
        );
        Ok(read_end.into())
    }
}
