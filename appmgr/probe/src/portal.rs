//! `portal ...`: the app side of the portal service (`org.appmgr.Portal1` at
//! `/org/appmgr/portal`, contract in `appmgr/portals/dbus/*.xml`), run inside the sandbox
//! to show what the portals hand out. Each subcommand prints one JSON object and exits 0
//! when the probe itself worked: a D-Bus error reply is a result, printed in place of the
//! call's object as `{"ok":false,"error":NAME,"message":TEXT|null}`. Exit 1 when the bus
//! cannot be reached or a reply is malformed (wrong signature, a missing descriptor), 2 for
//! bad arguments.
//!
//! - `portal gpu`: `{"open":{…},"info":{…},"dev_dri":[…]|null,"by_path":[…]}`.
//!   `open`: `Gpu1.OpenRenderNode`, then the descriptor examined here:
//!   `{"ok":true,"driver":PORTAL'S,"ioctl_driver":DRM_IOCTL_VERSION'S|null,
//!   "ioctl_error":ERRNO|null,"rdev":[MAJOR,MINOR],"type":"char"|"block"|"file"|"dir"|
//!   "fifo"|"socket"|"symlink"|"unknown","access":"r"|"w"|"rw"}`.
//!   `info`: `Gpu1.Info`'s dict, flattened: `{"ok":true,"driver":…,"render-node":…,…}`.
//!   `dev_dri`: the entries of `/dev/dri` (null when it does not exist). `by_path`: for
//!   each of them and `/dev/dri/renderD128`, `/dev/dri/card0`, an `open(O_RDWR)`:
//!   `{"path":P,"ok":BOOL,"errno":N|null,"error":"ENOENT"|null}`.
//! - `portal gpu-hold SECONDS`: `Gpu1.OpenRenderNode`, prints `held` (a line) once the
//!   descriptor is here, keeps it for SECONDS, then prints `{"held_s":SECONDS}`: a holder
//!   for revocation tests (the service stops an app that keeps a revoked render node).
//! - `portal sensors list`: `{"ok":true,"channels":[{"channel","device","unit","scale"}]}`.
//! - `portal sensors read CHANNEL`: `{"ok":true,"value":X}`.
//! - `portal sensors stream CH[,CH...] RATE_HZ SECONDS`: `Sensors1.Open`, then the records
//!   read for at most SECONDS: `{"ok":true,"records":N,"seconds":S,"eof":BOOL,
//!   "eof_after_s":X|null,"first":[VALUES]|null,"max_rate_hz":R,"min_gap_ms":G|null,
//!   "torn":T,"read_error":ERRNO|null}`. `seconds`: the time observed (SECONDS, or less
//!   when the stream ended first); `max_rate_hz`: the most records whose timestamps fall
//!   in one 1-second window; `min_gap_ms`: the smallest difference between consecutive
//!   timestamps (negative if they went backwards); `torn`: partial records at EOF;
//!   `eof_mono_ns`: `CLOCK_MONOTONIC` when EOF was read (to compare with the time a
//!   revocation was made), null without EOF.
//! - `portal sensors streams K CH[,CH...] RATE_HZ SECONDS`: K streams opened on one
//!   connection and read side by side: `{"ok":true,"streams":K,"records":TOTAL,
//!   "eof":COUNT_ENDED,"max_rate_hz":HIGHEST_OF_ANY}` (for the portal's CPU and memory
//!   with many streams).
//! - `portal bench gpu N` / `portal bench read CHANNEL N`: N calls of
//!   `Gpu1.OpenRenderNode` (each descriptor closed) / `Sensors1.Read` on one connection;
//!   `portal bench open PATH N` / `portal bench sysfs PATH[,PATH...] N`: N `open`+`close` /
//!   `open`+`read`+`close` of PATH (of each PATH in turn, e.g. an IIO `_raw` and its
//!   `_scale`, as one sample) here, the baselines the round trips are compared with:
//!   `{"n":N,"p50_us":X,"p99_us":Y,"errors":E}`.
//! - `portal bench sensorproxy N`: the same figures for iio-sensor-proxy
//!   (`net.hadess.SensorProxy` at `/net/hadess/SensorProxy`), the desktop's answer to the
//!   same question: `ClaimAccelerometer`, then a wait (at most 10 s) until its
//!   `AccelerometerOrientation` is not `undefined`, i.e. it has read the device, then N
//!   `Properties.Get` of that property (what its interface offers per read: the value it
//!   last polled, not a fresh read), then `ReleaseAccelerometer`. Adds
//!   `"has_accelerometer":BOOL,"orientation":S,"first_reading_ms":X|null` (null: no reading
//!   within 10 s; the round trips are measured all the same).

use crate::dbus::{system_bus_path, Arg, Conn, DbusError, Msg, Value};
use crate::{errno_name, esc, obj};
use rustix::event::{PollFd, PollFlags, Timespec};
use std::fmt::Write as _;
use std::io::Read;
use std::os::fd::{AsFd, OwnedFd};
use std::time::{Duration, Instant};

const DEST: &str = "org.appmgr.Portal1";
const PATH: &str = "/org/appmgr/portal";
const GPU: &str = "org.appmgr.portal.Gpu1";
const SENSORS: &str = "org.appmgr.portal.Sensors1";

/// The longest `stream` observation accepted.
const MAX_STREAM_SECONDS: f64 = 3600.0;

const USAGE: &str = "usage: appmgr-probe portal gpu | portal gpu-hold SECONDS | portal sensors list | \
                     portal sensors read CHANNEL | portal sensors stream CH[,CH...] RATE_HZ SECONDS | \
                     portal sensors streams K CH[,CH...] RATE_HZ SECONDS | \
                     portal bench (gpu N | read CHANNEL N | open PATH N | sysfs PATH[,PATH...] N | \
                     sensorproxy N)";

/// Why the probe itself failed (exit 1).
type Fail = String;

/// `portal ARGS`; returns the exit status.
pub fn run(args: &[String]) -> i32 {
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = match a.as_slice() {
        ["gpu"] => gpu(),
        ["gpu-hold", secs] => match secs.parse::<u64>().ok().filter(|s| (1..=3600).contains(s)) {
            Some(secs) => gpu_hold(secs),
            None => {
                eprintln!("appmgr-probe: portal gpu-hold: SECONDS is 1 to 3600\n{USAGE}");
                return 2;
            }
        },
        ["sensors", "list"] => sensors_list(),
        ["sensors", "read", ch] => sensors_read(ch),
        ["sensors", "stream", chs, rate, secs] => {
            let rate = rate.parse::<u32>();
            let secs = secs
                .parse::<f64>()
                .ok()
                .filter(|s| *s > 0.0 && *s <= MAX_STREAM_SECONDS);
            match (rate, secs) {
                (Ok(rate), Some(secs)) => sensors_stream(chs, rate, secs),
                _ => {
                    eprintln!(
                        "appmgr-probe: portal sensors stream: RATE_HZ is a u32, SECONDS a \
                         number in (0, {MAX_STREAM_SECONDS}]\n{USAGE}"
                    );
                    return 2;
                }
            }
        }
        ["sensors", "streams", k, chs, rate, secs] => {
            let k = k.parse::<usize>().ok().filter(|k| (1..=256).contains(k));
            let rate = rate.parse::<u32>();
            let secs = secs
                .parse::<f64>()
                .ok()
                .filter(|s| *s > 0.0 && *s <= MAX_STREAM_SECONDS);
            match (k, rate, secs) {
                (Some(k), Ok(rate), Some(secs)) => sensors_streams(k, chs, rate, secs),
                _ => {
                    eprintln!("appmgr-probe: portal sensors streams: K is 1 to 256\n{USAGE}");
                    return 2;
                }
            }
        }
        ["bench", what @ ..] => {
            let n = what
                .last()
                .and_then(|n| n.parse::<usize>().ok())
                .filter(|n| (1..=1_000_000).contains(n));
            match (what, n) {
                (["gpu", _], Some(n)) => bench_gpu(n),
                (["read", ch, _], Some(n)) => bench_read(ch, n),
                (["open", p, _], Some(n)) => {
                    Ok(bench_local(n, || std::fs::File::open(p).map(drop)))
                }
                (["sysfs", paths, _], Some(n)) => Ok(bench_local(n, || {
                    for p in paths.split(',') {
                        let mut s = String::new();
                        std::fs::File::open(p)?.read_to_string(&mut s)?;
                    }
                    Ok(())
                })),
                (["sensorproxy", _], Some(n)) => bench_sensorproxy(n),
                _ => {
                    eprintln!("{USAGE}");
                    return 2;
                }
            }
        }
        _ => {
            eprintln!("{USAGE}");
            return 2;
        }
    };
    match out {
        Ok(json) => {
            println!("{json}");
            0
        }
        Err(e) => {
            eprintln!("appmgr-probe: portal: {e}");
            1
        }
    }
}

fn connect() -> Result<Conn, Fail> {
    let path = system_bus_path().map_err(|e| format!("bus: {e}"))?;
    Conn::connect(&path).map_err(|e| format!("bus at {path}: {e}"))
}

/// Calls the portal's `iface.member`: the reply if it is a return of signature `want`, the
/// error reply as a result; any other reply is malformed.
fn call(
    conn: &mut Conn,
    iface: &str,
    member: &str,
    args: &[Arg],
    want: &str,
) -> Result<Result<Msg, DbusError>, Fail> {
    call_at(conn, (DEST, PATH), iface, member, args, want)
}

/// [`call`] to the object `(bus name, path)`.
fn call_at(
    conn: &mut Conn,
    (dest, path): (&str, &str),
    iface: &str,
    member: &str,
    args: &[Arg],
    want: &str,
) -> Result<Result<Msg, DbusError>, Fail> {
    let m = conn
        .call_msg(dest, path, iface, member, args)
        .map_err(|e| format!("{iface}.{member}: {e}"))?;
    match m.into_result() {
        Ok(m) if m.signature == want => Ok(Ok(m)),
        Ok(m) => Err(format!(
            "{iface}.{member}: reply of signature {:?}, expected {want:?}",
            m.signature
        )),
        Err(e) => Ok(Err(e)),
    }
}

/// The decoded body of `m` (its signature already checked).
fn values(m: &Msg, what: &str) -> Result<Vec<Value>, Fail> {
    m.values().map_err(|e| format!("{what}: {e}"))
}

fn error_json(e: &DbusError) -> String {
    obj(&[
        ("ok".into(), "false".into()),
        ("error".into(), esc(&e.name)),
        ("message".into(), opt(e.message.as_deref().map(esc))),
    ])
}

fn opt(v: Option<String>) -> String {
    v.unwrap_or_else(|| "null".into())
}

/// A JSON number (null for NaN and infinities, which JSON cannot write).
fn num(v: f64) -> String {
    if v.is_finite() {
        format!("{v:?}")
    } else {
        "null".into()
    }
}

/// Any decoded value as JSON: dicts with string keys as objects, arrays and structs as
/// arrays, variants as their content, `h` as its index.
fn json_value(v: &Value) -> String {
    let list = |items: &[Value]| {
        format!(
            "[{}]",
            items.iter().map(json_value).collect::<Vec<_>>().join(",")
        )
    };
    match v {
        Value::Byte(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        Value::I16(n) => n.to_string(),
        Value::U16(n) => n.to_string(),
        Value::I32(n) => n.to_string(),
        Value::U32(n) | Value::Fd(n) => n.to_string(),
        Value::I64(n) => n.to_string(),
        Value::U64(n) => n.to_string(),
        Value::F64(d) => num(*d),
        Value::Str(s) | Value::Path(s) | Value::Sig(s) => esc(s),
        Value::Array(items) | Value::Struct(items) => list(items),
        Value::Dict(pairs) => {
            let keys: Option<Vec<&str>> = pairs
                .iter()
                .map(|(k, _)| match k {
                    Value::Str(s) | Value::Path(s) | Value::Sig(s) => Some(s.as_str()),
                    _ => None,
                })
                .collect();
            match keys {
                Some(keys) => obj(&keys
                    .iter()
                    .zip(pairs)
                    .map(|(k, (_, v))| (k.to_string(), json_value(v)))
                    .collect::<Vec<_>>()),
                None => format!(
                    "[{}]",
                    pairs
                        .iter()
                        .map(|(k, v)| format!("[{},{}]", json_value(k), json_value(v)))
                        .collect::<Vec<_>>()
                        .join(",")
                ),
            }
        }
        Value::Variant(inner) => json_value(inner),
    }
}

fn file_type(mode: u32) -> &'static str {
    use rustix::fs::FileType;
    match FileType::from_raw_mode(mode) {
        FileType::CharacterDevice => "char",
        FileType::BlockDevice => "block",
        FileType::RegularFile => "file",
        FileType::Directory => "dir",
        FileType::Fifo => "fifo",
        FileType::Socket => "socket",
        FileType::Symlink => "symlink",
        FileType::Unknown => "unknown",
    }
}

fn errno_of(e: &std::io::Error) -> i32 {
    e.raw_os_error().unwrap_or(0)
}

/// What the render node descriptor is: the portal's driver name and the kernel's
/// (DRM_IOCTL_VERSION on the descriptor), device numbers, file type, access mode.
fn describe_render_fd(fd: &OwnedFd, driver: &str) -> String {
    let mut f = vec![
        ("ok".to_string(), "true".to_string()),
        ("driver".into(), esc(driver)),
    ];
    let (ioctl_driver, ioctl_error) = match appmgr_sandbox::sys::drm_driver_name(fd.as_fd()) {
        Ok(name) => (esc(&name), "null".into()),
        Err(e) => ("null".into(), esc(&errno_name(errno_of(&e)))),
    };
    f.push(("ioctl_driver".into(), ioctl_driver));
    f.push(("ioctl_error".into(), ioctl_error));
    match rustix::fs::fstat(fd) {
        Ok(st) => {
            let rdev = st.st_rdev;
            f.push((
                "rdev".into(),
                format!("[{},{}]", rustix::fs::major(rdev), rustix::fs::minor(rdev)),
            ));
            f.push(("type".into(), esc(file_type(st.st_mode))));
        }
        Err(e) => f.push(("fstat_error".into(), esc(&errno_name(e.raw_os_error())))),
    }
    let access = match rustix::fs::fcntl_getfl(fd) {
        Ok(fl) => {
            let mode = fl & rustix::fs::OFlags::RWMODE;
            if mode == rustix::fs::OFlags::RDWR {
                esc("rw")
            } else if mode == rustix::fs::OFlags::WRONLY {
                esc("w")
            } else {
                esc("r")
            }
        }
        Err(_) => "null".into(),
    };
    f.push(("access".into(), access));
    obj(&f)
}

/// The paths of `/dev/dri`'s entries (None when it cannot be listed) and the open
/// attempts: each entry, then the standard render and primary nodes.
fn open_by_path() -> (Option<Vec<String>>, String) {
    let entries = std::fs::read_dir("/dev/dri").ok().map(|rd| {
        let mut v: Vec<String> = rd
            .filter_map(Result::ok)
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    });
    let mut paths: Vec<String> = entries
        .iter()
        .flatten()
        .map(|n| format!("/dev/dri/{n}"))
        .collect();
    for p in ["/dev/dri/renderD128", "/dev/dri/card0"] {
        if !paths.iter().any(|q| q == p) {
            paths.push(p.into());
        }
    }
    let results: Vec<String> = paths
        .iter()
        .map(|p| {
            let r = std::fs::OpenOptions::new().read(true).write(true).open(p);
            let (ok, errno, error) = match r {
                Ok(_) => ("true", "null".to_string(), "null".to_string()),
                Err(e) => (
                    "false",
                    errno_of(&e).to_string(),
                    esc(&errno_name(errno_of(&e))),
                ),
            };
            obj(&[
                ("path".into(), esc(p)),
                ("ok".into(), ok.into()),
                ("errno".into(), errno),
                ("error".into(), error),
            ])
        })
        .collect();
    (entries, format!("[{}]", results.join(",")))
}

/// `portal gpu`.
fn gpu() -> Result<String, Fail> {
    let mut conn = connect()?;
    let what = "Gpu1.OpenRenderNode";
    let open = match call(&mut conn, GPU, "OpenRenderNode", &[], "hs")? {
        Err(e) => error_json(&e),
        Ok(mut m) => {
            let (index, driver) = match values(&m, what)?.as_slice() {
                [Value::Fd(i), Value::Str(d)] => (*i, d.clone()),
                v => return Err(format!("{what}: unexpected body {v:?}")),
            };
            let fd = m.take_fd(index).map_err(|e| {
                let fds = if conn.unix_fds() {
                    ""
                } else {
                    " (the bus refused fd passing)"
                };
                format!("{what}: {e}{fds}")
            })?;
            describe_render_fd(&fd, &driver)
        }
    };
    let info = match call(&mut conn, GPU, "Info", &[], "a{sv}")? {
        Err(e) => error_json(&e),
        Ok(m) => match values(&m, "Gpu1.Info")?.as_slice() {
            [Value::Dict(pairs)] => {
                let mut f = vec![("ok".to_string(), "true".to_string())];
                for (k, v) in pairs {
                    let Value::Str(k) = k else {
                        return Err(format!("Gpu1.Info: key {k:?}"));
                    };
                    // (a key "ok" would be ambiguous next to the result's own)
                    let k = if k == "ok" { "_ok".into() } else { k.clone() };
                    f.push((k, json_value(v)));
                }
                obj(&f)
            }
            v => return Err(format!("Gpu1.Info: unexpected body {v:?}")),
        },
    };
    let (entries, by_path) = open_by_path();
    Ok(obj(&[
        ("open".into(), open),
        ("info".into(), info),
        ("dev_dri".into(), opt(entries.map(|e| crate::arr(&e)))),
        ("by_path".into(), by_path),
    ]))
}

/// `portal gpu-hold SECONDS`.
fn gpu_hold(secs: u64) -> Result<String, Fail> {
    let mut conn = connect()?;
    let mut m = match call(&mut conn, GPU, "OpenRenderNode", &[], "hs")? {
        Err(e) => return Ok(error_json(&e)),
        Ok(m) => m,
    };
    let i = match values(&m, "Gpu1.OpenRenderNode")?.as_slice() {
        [Value::Fd(i), Value::Str(_)] => *i,
        v => return Err(format!("Gpu1.OpenRenderNode: unexpected body {v:?}")),
    };
    let fd = m
        .take_fd(i)
        .map_err(|e| format!("Gpu1.OpenRenderNode: {e}"))?;
    println!("held");
    std::thread::sleep(Duration::from_secs(secs));
    drop(fd);
    Ok(obj(&[("held_s".into(), secs.to_string())]))
}

/// `portal sensors list`.
fn sensors_list() -> Result<String, Fail> {
    let mut conn = connect()?;
    let m = match call(&mut conn, SENSORS, "List", &[], "a(ssds)")? {
        Err(e) => return Ok(error_json(&e)),
        Ok(m) => m,
    };
    let v = values(&m, "Sensors1.List")?;
    let [Value::Array(items)] = v.as_slice() else {
        return Err(format!("Sensors1.List: unexpected body {v:?}"));
    };
    let mut chans = Vec::new();
    for it in items {
        let Value::Struct(f) = it else {
            return Err(format!("Sensors1.List: unexpected item {it:?}"));
        };
        // The contract's signature is (s s d s): the double is the scale, the strings are
        // the channel, the device and the unit, in this order.
        let [Value::Str(c), Value::Str(d), Value::F64(s), Value::Str(u)] = f.as_slice() else {
            return Err(format!("Sensors1.List: unexpected item {it:?}"));
        };
        chans.push(obj(&[
            ("channel".into(), esc(c)),
            ("device".into(), esc(d)),
            ("unit".into(), esc(u)),
            ("scale".into(), num(*s)),
        ]));
    }
    Ok(obj(&[
        ("ok".into(), "true".into()),
        ("channels".into(), format!("[{}]", chans.join(","))),
    ]))
}

/// `portal sensors read CHANNEL`.
fn sensors_read(ch: &str) -> Result<String, Fail> {
    let mut conn = connect()?;
    let m = match call(&mut conn, SENSORS, "Read", &[Arg::Str(ch)], "d")? {
        Err(e) => return Ok(error_json(&e)),
        Ok(m) => m,
    };
    match values(&m, "Sensors1.Read")?.as_slice() {
        [Value::F64(v)] => Ok(obj(&[
            ("ok".into(), "true".into()),
            ("value".into(), num(*v)),
        ])),
        v => Err(format!("Sensors1.Read: unexpected body {v:?}")),
    }
}

/// `Sensors1.Open(channels, rate)`: the stream's descriptor, or the error reply.
fn open_stream(
    conn: &mut Conn,
    channels: &[&str],
    rate: u32,
) -> Result<Result<OwnedFd, DbusError>, Fail> {
    let args = [Arg::StrArray(channels), Arg::U32(rate)];
    let mut m = match call(conn, SENSORS, "Open", &args, "h")? {
        Err(e) => return Ok(Err(e)),
        Ok(m) => m,
    };
    let index = match values(&m, "Sensors1.Open")?.as_slice() {
        [Value::Fd(i)] => *i,
        v => return Err(format!("Sensors1.Open: unexpected body {v:?}")),
    };
    m.take_fd(index)
        .map(Ok)
        .map_err(|e| format!("Sensors1.Open: {e}"))
}

/// `portal sensors stream CH[,CH...] RATE_HZ SECONDS`.
fn sensors_stream(chs: &str, rate: u32, secs: f64) -> Result<String, Fail> {
    let channels: Vec<&str> = if chs.is_empty() {
        Vec::new()
    } else {
        chs.split(',').collect()
    };
    let mut conn = connect()?;
    let fd = match open_stream(&mut conn, &channels, rate)? {
        Err(e) => return Ok(error_json(&e)),
        Ok(fd) => fd,
    };
    // The bus connection is not needed while reading.
    drop(conn);
    let s = read_stream(fd, channels.len(), Duration::from_secs_f64(secs));
    Ok(s.json())
}

/// `portal sensors streams K CH[,CH...] RATE_HZ SECONDS`.
fn sensors_streams(k: usize, chs: &str, rate: u32, secs: f64) -> Result<String, Fail> {
    let channels: Vec<&str> = chs.split(',').collect();
    let mut conn = connect()?;
    let mut fds = Vec::new();
    for _ in 0..k {
        match open_stream(&mut conn, &channels, rate)? {
            Err(e) => return Ok(error_json(&e)),
            Ok(fd) => fds.push(fd),
        }
    }
    drop(conn);
    let n = channels.len();
    let limit = Duration::from_secs_f64(secs);
    let readers: Vec<_> = fds
        .into_iter()
        .map(|fd| std::thread::spawn(move || read_stream(fd, n, limit)))
        .collect();
    let (mut records, mut ended, mut max_rate) = (0, 0, 0);
    for r in readers {
        let s = r
            .join()
            .map_err(|_| "a stream reader panicked".to_string())?;
        records += s.timestamps.len();
        ended += usize::from(s.eof_after.is_some());
        max_rate = max_rate.max(s.max_rate_hz());
    }
    Ok(obj(&[
        ("ok".into(), "true".into()),
        ("streams".into(), k.to_string()),
        ("records".into(), records.to_string()),
        ("eof".into(), ended.to_string()),
        ("max_rate_hz".into(), max_rate.to_string()),
    ]))
}

/// p50/p99 of `lat` (sorted here) in µs, with the error count.
fn latency_json(lat: Vec<Duration>, errors: usize) -> String {
    obj(&latency_fields(lat, errors))
}

/// The members of [`latency_json`]'s object.
fn latency_fields(mut lat: Vec<Duration>, errors: usize) -> Vec<(String, String)> {
    lat.sort_unstable();
    let pct = |p: f64| {
        lat.get(((lat.len() as f64 * p).ceil() as usize).saturating_sub(1))
            .map_or(0.0, |d| d.as_secs_f64() * 1e6)
    };
    vec![
        ("n".into(), lat.len().to_string()),
        ("p50_us".into(), format!("{:.1}", pct(0.50))),
        ("p99_us".into(), format!("{:.1}", pct(0.99))),
        ("errors".into(), errors.to_string()),
    ]
}

/// N local operations, timed one by one.
fn bench_local(n: usize, mut op: impl FnMut() -> std::io::Result<()>) -> String {
    let mut lat = Vec::with_capacity(n);
    let mut errors = 0;
    for _ in 0..n {
        let t = Instant::now();
        errors += usize::from(op().is_err());
        lat.push(t.elapsed());
    }
    latency_json(lat, errors)
}

/// `portal bench gpu N`: OpenRenderNode round trips, each descriptor received and closed.
fn bench_gpu(n: usize) -> Result<String, Fail> {
    let mut conn = connect()?;
    let mut lat = Vec::with_capacity(n);
    let mut errors = 0;
    for _ in 0..n {
        let t = Instant::now();
        match call(&mut conn, GPU, "OpenRenderNode", &[], "hs")? {
            Ok(mut m) => {
                let i = match values(&m, "Gpu1.OpenRenderNode")?.as_slice() {
                    [Value::Fd(i), Value::Str(_)] => *i,
                    v => return Err(format!("Gpu1.OpenRenderNode: unexpected body {v:?}")),
                };
                drop(
                    m.take_fd(i)
                        .map_err(|e| format!("Gpu1.OpenRenderNode: {e}"))?,
                );
            }
            Err(_) => errors += 1,
        }
        lat.push(t.elapsed());
    }
    Ok(latency_json(lat, errors))
}

/// `portal bench read CHANNEL N`: Sensors1.Read round trips.
fn bench_read(ch: &str, n: usize) -> Result<String, Fail> {
    let mut conn = connect()?;
    let mut lat = Vec::with_capacity(n);
    let mut errors = 0;
    for _ in 0..n {
        let t = Instant::now();
        if call(&mut conn, SENSORS, "Read", &[Arg::Str(ch)], "d")?.is_err() {
            errors += 1;
        }
        lat.push(t.elapsed());
    }
    Ok(latency_json(lat, errors))
}

/// iio-sensor-proxy's object and interface.
const PROXY: (&str, &str) = ("net.hadess.SensorProxy", "/net/hadess/SensorProxy");
const PROXY_IFACE: &str = "net.hadess.SensorProxy";
/// How long `bench sensorproxy` waits for the proxy's first reading (it polls its
/// accelerometer every 700 ms once claimed).
const PROXY_FIRST_READING: Duration = Duration::from_secs(10);

/// One `Properties.Get` of iio-sensor-proxy's `prop`: its value, or the error reply.
fn proxy_get(conn: &mut Conn, prop: &str) -> Result<Result<Value, DbusError>, Fail> {
    let what = format!("Properties.Get {prop}");
    Ok(
        match call_at(
            conn,
            PROXY,
            "org.freedesktop.DBus.Properties",
            "Get",
            &[Arg::Str(PROXY_IFACE), Arg::Str(prop)],
            "v",
        )? {
            Ok(m) => match values(&m, &what)?.pop() {
                Some(Value::Variant(v)) => Ok(*v),
                v => return Err(format!("{what}: unexpected body {v:?}")),
            },
            Err(e) => Err(e),
        },
    )
}

/// `portal bench sensorproxy N`: iio-sensor-proxy's per-read round trip (see the module
/// documentation).
fn bench_sensorproxy(n: usize) -> Result<String, Fail> {
    let mut conn = connect()?;
    let has = match proxy_get(&mut conn, "HasAccelerometer")? {
        Ok(Value::Bool(b)) => b,
        Ok(v) => return Err(format!("HasAccelerometer is {v:?}, not a boolean")),
        Err(e) => return Ok(error_json(&e)),
    };
    if let Err(e) = call_at(&mut conn, PROXY, PROXY_IFACE, "ClaimAccelerometer", &[], "")? {
        return Ok(error_json(&e));
    }
    let orientation = |conn: &mut Conn| -> Result<Result<String, DbusError>, Fail> {
        Ok(match proxy_get(conn, "AccelerometerOrientation")? {
            Ok(Value::Str(s)) => Ok(s),
            Ok(v) => return Err(format!("AccelerometerOrientation is {v:?}, not a string")),
            Err(e) => Err(e),
        })
    };
    let claimed = Instant::now();
    let mut first = None;
    let mut last = String::new();
    while claimed.elapsed() < PROXY_FIRST_READING {
        match orientation(&mut conn)? {
            Ok(o) if o != "undefined" => {
                first = Some(claimed.elapsed());
                last = o;
                break;
            }
            Ok(o) => last = o,
            Err(e) => return Ok(error_json(&e)),
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut lat = Vec::with_capacity(n);
    let mut errors = 0;
    for _ in 0..n {
        let t = Instant::now();
        match orientation(&mut conn)? {
            Ok(o) => last = o,
            Err(_) => errors += 1,
        }
        lat.push(t.elapsed());
    }
    // Best effort: the claim also ends with this connection.
    let _ = call_at(
        &mut conn,
        PROXY,
        PROXY_IFACE,
        "ReleaseAccelerometer",
        &[],
        "",
    );
    let mut fields = latency_fields(lat, errors);
    fields.extend([
        ("has_accelerometer".into(), has.to_string()),
        ("orientation".into(), esc(&last)),
        (
            "first_reading_ms".into(),
            opt(first.map(|d| format!("{:.1}", d.as_secs_f64() * 1e3))),
        ),
    ]);
    Ok(obj(&fields))
}

/// `CLOCK_MONOTONIC` now, in ns (the clock of the portal's record timestamps).
fn mono_ns() -> u64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    (t.tv_sec as u64) * 1_000_000_000 + t.tv_nsec as u64
}

/// What a record stream delivered.
#[derive(Debug, Default)]
struct StreamStats {
    timestamps: Vec<u64>,
    first: Option<Vec<f64>>,
    /// When EOF came (from the start of reading).
    eof_after: Option<Duration>,
    /// `CLOCK_MONOTONIC` when EOF was read.
    eof_mono_ns: Option<u64>,
    observed: Duration,
    /// Partial records at EOF.
    torn: usize,
    read_error: Option<String>,
}

/// Reads `nch`-channel records from `fd` until EOF or `limit`, never blocking past it.
fn read_stream(fd: OwnedFd, nch: usize, limit: Duration) -> StreamStats {
    let rec = 8 + 8 * nch;
    let file = std::fs::File::from(fd);
    let start = Instant::now();
    let deadline = start + limit;
    let mut st = StreamStats::default();
    let mut pending: Vec<u8> = Vec::new();
    let mut buf = vec![0u8; 65536];
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        if left.is_zero() {
            break;
        }
        let ts = Timespec {
            tv_sec: left.as_secs() as i64,
            tv_nsec: left.subsec_nanos() as _,
        };
        let mut pfd = [PollFd::new(&file, PollFlags::IN)];
        match rustix::event::poll(&mut pfd, Some(&ts)) {
            Ok(0) => continue, // the deadline, checked above
            Ok(_) => {}
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => {
                st.read_error = Some(errno_name(e.raw_os_error()));
                break;
            }
        }
        match (&file).read(&mut buf) {
            Ok(0) => {
                st.eof_after = Some(start.elapsed());
                st.eof_mono_ns = Some(mono_ns());
                break;
            }
            Ok(n) => {
                pending.extend_from_slice(&buf[..n]);
                let whole = pending.len() / rec * rec;
                for r in pending[..whole].chunks_exact(rec) {
                    st.timestamps
                        .push(u64::from_le_bytes(r[..8].try_into().unwrap()));
                    if st.first.is_none() {
                        st.first = Some(
                            r[8..]
                                .chunks_exact(8)
                                .map(|v| f64::from_le_bytes(v.try_into().unwrap()))
                                .collect(),
                        );
                    }
                }
                pending.drain(..whole);
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => {
                st.read_error = Some(errno_name(errno_of(&e)));
                break;
            }
        }
    }
    st.observed = st.eof_after.unwrap_or_else(|| start.elapsed().min(limit));
    if st.eof_after.is_some() {
        st.torn = pending.len().div_ceil(rec);
    }
    st
}

impl StreamStats {
    /// The most records whose timestamps fall in one window [t, t + 1 s).
    fn max_rate_hz(&self) -> usize {
        let mut t = self.timestamps.clone();
        t.sort_unstable();
        let mut best = 0;
        let mut lo = 0;
        for hi in 0..t.len() {
            while t[hi] - t[lo] >= 1_000_000_000 {
                lo += 1;
            }
            best = best.max(hi - lo + 1);
        }
        best
    }

    /// The smallest difference between consecutive timestamps, in ms.
    fn min_gap_ms(&self) -> Option<f64> {
        self.timestamps
            .windows(2)
            .map(|w| w[1] as i128 - w[0] as i128)
            .min()
            .map(|ns| ns as f64 / 1e6)
    }

    fn json(&self) -> String {
        let mut first = String::from("null");
        if let Some(vals) = &self.first {
            first = String::from("[");
            for (i, v) in vals.iter().enumerate() {
                let _ = write!(first, "{}{}", if i > 0 { "," } else { "" }, num(*v));
            }
            first.push(']');
        }
        obj(&[
            ("ok".into(), "true".into()),
            ("records".into(), self.timestamps.len().to_string()),
            (
                "seconds".into(),
                format!("{:.3}", self.observed.as_secs_f64()),
            ),
            ("eof".into(), self.eof_after.is_some().to_string()),
            (
                "eof_after_s".into(),
                opt(self.eof_after.map(|d| format!("{:.3}", d.as_secs_f64()))),
            ),
            ("first".into(), first),
            ("max_rate_hz".into(), self.max_rate_hz().to_string()),
            ("min_gap_ms".into(), opt(self.min_gap_ms().map(num))),
            ("torn".into(), self.torn.to_string()),
            (
                "eof_mono_ns".into(),
                opt(self.eof_mono_ns.map(|n| n.to_string())),
            ),
            (
                "read_error".into(),
                opt(self.read_error.as_deref().map(esc)),
            ),
        ])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn record(ts_ns: u64, vals: &[f64]) -> Vec<u8> {
        let mut r = ts_ns.to_le_bytes().to_vec();
        for v in vals {
            r.extend_from_slice(&v.to_le_bytes());
        }
        r
    }

    #[test]
    fn a_stream_is_read_to_eof_with_its_statistics() {
        let (r, mut w) = std::io::pipe().unwrap();
        let ms = 1_000_000u64;
        // 3 records in the first second, then 2 more; the smallest gap 50 ms.
        for (t, v) in [(0, 1.5), (100, 2.0), (150, 2.5), (1200, 3.0), (1300, 3.5)] {
            w.write_all(&record(5_000 * ms + t * ms, &[v, -v])).unwrap();
        }
        w.write_all(&[1, 2, 3]).unwrap(); // a torn record
        drop(w);
        let s = read_stream(r.into(), 2, Duration::from_secs(5));
        assert_eq!(s.timestamps.len(), 5);
        assert_eq!(s.first.as_deref(), Some(&[1.5, -1.5][..]));
        assert!(s.eof_after.is_some());
        assert_eq!(s.torn, 1);
        assert_eq!(s.max_rate_hz(), 3);
        assert_eq!(s.min_gap_ms(), Some(50.0));
        let j = s.json();
        assert!(j.contains(r#""records":5,"#), "{j}");
        assert!(j.contains(r#""eof":true,"#), "{j}");
        assert!(j.contains(r#""first":[1.5,-1.5],"#), "{j}");
        assert!(j.contains(r#""torn":1,"#), "{j}");
        assert!(j.contains(r#""read_error":null"#), "{j}");
    }

    #[test]
    fn a_stream_that_does_not_end_is_read_for_the_limit_only() {
        let (r, mut w) = std::io::pipe().unwrap();
        w.write_all(&record(1, &[])).unwrap();
        w.write_all(&[0; 4]).unwrap(); // half a record, not torn: the stream goes on
        let t = Instant::now();
        let s = read_stream(r.into(), 0, Duration::from_millis(300));
        assert!(t.elapsed() < Duration::from_secs(3));
        assert_eq!(s.timestamps, [1]);
        assert_eq!((s.eof_after, s.torn), (None, 0));
        assert_eq!(s.min_gap_ms(), None);
        let j = s.json();
        assert!(j.contains(r#""eof":false,"eof_after_s":null,"#), "{j}");
        assert!(j.contains(r#""first":[],"#), "{j}");
        assert!(j.contains(r#""min_gap_ms":null,"#), "{j}");
        drop(w);
    }

    #[test]
    fn values_render_as_json() {
        let v = Value::Dict(vec![
            (
                Value::Str("a".into()),
                Value::Variant(Box::new(Value::U32(1))),
            ),
            (
                Value::Str("b".into()),
                Value::Variant(Box::new(Value::Struct(vec![
                    Value::Bool(true),
                    Value::F64(f64::NAN),
                ]))),
            ),
        ]);
        assert_eq!(json_value(&v), r#"{"a":1,"b":[true,null]}"#);
        let v = Value::Dict(vec![(Value::U32(1), Value::Str("x".into()))]);
        assert_eq!(json_value(&v), r#"[[1,"x"]]"#);
        assert_eq!(num(0.0), "0.0");
        assert_eq!(num(1e-7), "1e-7");
    }
}
