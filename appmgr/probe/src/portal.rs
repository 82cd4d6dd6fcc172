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
//! - `portal bt STEP...`: `Bluetooth1` steps run in order on one connection (the portal
//!   ties scans, connections and streams to the calling process): `{"steps":[R1,R2,…]}`,
//!   each `Ri` an object `{"step":STEP,"ok":true,…}` with the step's members below, or
//!   `{"step":STEP,"ok":false,"error":NAME,"message":TEXT|null}` for an error reply; a
//!   failed step does not stop the next ones. A step's fields are separated by commas.
//!   After step K (from 1), a line on stderr: `step K STEP ok` or `step K STEP error NAME`
//!   (`step K STEP fail` before exit 1, when the steps so far are printed all the same, as
//!   `{"steps":[…],"failed":{"step":STEP,"message":M}}`). All steps are checked first (exit
//!   2 with nothing called); SECONDS is a number in (0, 3600]; each call waits at most
//!   60 s.
//!   - `scan,SECONDS`: `AddMatch` of `type='signal',interface='org.appmgr.portal.Bluetooth1'`
//!     (once per run, its refusal ignored), `StartScan`, the `DeviceFound` signals
//!     collected for SECONDS (also those sent before StartScan's reply), `StopScan`:
//!     `"signals":N,"found":[{"address":A,"name":S,"services":[UUID…],"rssi":R}…],
//!     "stop_error":NAME|null,"seconds":S`. `found`: merged by address (case-insensitive;
//!     services the union, name and rssi the latest), sorted by address; `seconds`: the
//!     time collected.
//!   - `scan-until,ADDRESS,SECONDS`: the same, ending as soon as ADDRESS (any case) is
//!     found, after SECONDS at most.
//!   - `connect,ADDRESS`, `disconnect,ADDRESS`: `"ms":X` (the call's round trip).
//!   - `read,ADDRESS,SERVICE,CHAR`: `"value":[BYTE…],"ms":X`.
//!   - `write,ADDRESS,SERVICE,CHAR,HEX`: the value as hex digits (`01`, `0a0b`; empty for
//!     no bytes): `"ms":X`.
//!   - `notify,ADDRESS,SERVICE,CHAR,SECONDS`: `Notify`, `notify open` on stderr once the
//!     descriptor is here, then its records (a u16 LE length, then the value) read until
//!     EOF or for SECONDS: `"records":N,"bytes":B,"first":[BYTE…]|null,"last":[BYTE…]|null,
//!     "eof":BOOL,"eof_mono_ns":X|null,"torn":T,"seconds":S,"read_error":ERRNO|null`.
//!     `bytes`: of the values (without the lengths); `eof_mono_ns`: `CLOCK_MONOTONIC` when
//!     EOF was read; `torn`: the bytes left over that are not a whole record (at EOF or at
//!     the end of SECONDS); `seconds`: the time read. The descriptor is closed after.
//!   - `call,METHOD`: `Bluetooth1.METHOD()` (e.g. `SetPowered`, `Pair`: not in the
//!     contract, `org.freedesktop.DBus.Error.UnknownMethod`): no members.
//!   - `bluez-power-off`: straight to BlueZ (as an app must not),
//!     `org.bluez /org/bluez/hci0 Properties.Set("org.bluez.Adapter1","Powered",<false>)`:
//!     no members (the bus should refuse: the error form).
//!   - `bluez-pair,ADDRESS`: straight to BlueZ, `Device1.Pair()` of
//!     `/org/bluez/hci0/dev_AA_BB_CC_DD_EE_FF`: no members.
//!   - `sleep,SECONDS`: no members.
//! - `portal bench bt-read ADDRESS SERVICE CHAR N`: `Bluetooth1.Connect`, N
//!   `ReadCharacteristic`, `Disconnect`: the figures of the other benches and
//!   `"connect_error":NAME|null` (the reads are made all the same).
//!   `portal bench bluez-read CHARPATH N`: the baseline, N
//!   `org.bluez.GattCharacteristic1.ReadValue({})` of the object CHARPATH straight to
//!   BlueZ (as root on the host): the same figures.
//! - `portal bench bt-notify ADDRESS SERVICE CHAR SECONDS`: `Connect`, `Notify`, the
//!   records counted for SECONDS (or until EOF), `Disconnect`: `{"records":N,"bytes":B,
//!   "seconds":S,"rate_hz":R|null,"eof":BOOL}` (`rate_hz`: records / seconds, null for
//!   0 s; an error reply of Connect or Notify: the error form; `seconds`: the time read,
//!   less than SECONDS after an EOF). `portal bench bluez-notify CHARPATH SECONDS`: the
//!   baseline: `AddMatch` of BlueZ's `PropertiesChanged` on CHARPATH, `StartNotify`, the
//!   signals whose changed properties hold `Value` counted for SECONDS (and those before
//!   StartNotify's reply), `StopNotify`: the same members (`bytes`: of the values; `eof`
//!   false).

use crate::dbus::{system_bus_path, Arg, Conn, DbusError, Msg, Value, SIGNAL};
use crate::{errno_name, esc, obj};
use rustix::event::{PollFd, PollFlags, Timespec};
use std::fmt::Write as _;
use std::io::{Read, Write as _};
use std::os::fd::{AsFd, OwnedFd};
use std::time::{Duration, Instant};

const DEST: &str = "org.appmgr.Portal1";
const PATH: &str = "/org/appmgr/portal";
const GPU: &str = "org.appmgr.portal.Gpu1";
const SENSORS: &str = "org.appmgr.portal.Sensors1";
const BT: &str = "org.appmgr.portal.Bluetooth1";

/// The longest `stream` observation accepted.
const MAX_STREAM_SECONDS: f64 = 3600.0;

const USAGE: &str = "usage: appmgr-probe portal gpu | portal gpu-hold SECONDS | portal sensors list | \
                     portal sensors read CHANNEL | portal sensors stream CH[,CH...] RATE_HZ SECONDS | \
                     portal sensors streams K CH[,CH...] RATE_HZ SECONDS | \
                     portal bench (gpu N | read CHANNEL N | open PATH N | sysfs PATH[,PATH...] N | \
                     sensorproxy N | bt-read ADDRESS SERVICE CHAR N | bluez-read CHARPATH N | \
                     bt-notify ADDRESS SERVICE CHAR SECONDS | bluez-notify CHARPATH SECONDS) | \
                     portal bt STEP... (STEP: scan,SECONDS | scan-until,ADDRESS,SECONDS | \
                     connect,ADDRESS | disconnect,ADDRESS | read,ADDRESS,SERVICE,CHAR | \
                     write,ADDRESS,SERVICE,CHAR,HEX | notify,ADDRESS,SERVICE,CHAR,SECONDS | \
                     call,METHOD | bluez-power-off | bluez-pair,ADDRESS | sleep,SECONDS)";

/// Why the probe itself failed (exit 1).
type Fail = String;

/// The members of a JSON object, values already JSON.
type Fields = Vec<(String, String)>;

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
        ["bt", steps @ ..] if !steps.is_empty() => {
            let mut parsed = Vec::new();
            for s in steps {
                match parse_step(s) {
                    Ok(step) => parsed.push((*s, step)),
                    Err(e) => {
                        eprintln!("appmgr-probe: portal bt: {e}\n{USAGE}");
                        return 2;
                    }
                }
            }
            bt(&parsed)
        }
        ["bench", "bt-notify", a, sv, c, secs] => match parse_seconds(secs) {
            Some(secs) => bench_bt_notify(&Gatt::new(a, sv, c), secs),
            None => {
                eprintln!(
                    "appmgr-probe: portal bench bt-notify: SECONDS is a number in \
                     (0, {MAX_STREAM_SECONDS}]\n{USAGE}"
                );
                return 2;
            }
        },
        ["bench", "bluez-notify", path, secs] => match parse_seconds(secs) {
            Some(secs) if is_object_path(path) => bench_bluez_notify(path, secs),
            _ => {
                eprintln!(
                    "appmgr-probe: portal bench bluez-notify: CHARPATH is an object path, \
                     SECONDS a number in (0, {MAX_STREAM_SECONDS}]\n{USAGE}"
                );
                return 2;
            }
        },
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
                (["bt-read", a, sv, c, _], Some(n)) => bench_bt_read(&Gatt::new(a, sv, c), n),
                (["bluez-read", path, _], Some(n)) if is_object_path(path) => {
                    bench_bluez_read(path, n)
                }
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
    call_full(
        conn,
        (dest, path),
        iface,
        member,
        args,
        Some(want),
        &mut drop,
    )
}

/// [`call_at`]; `want` None accepts a return of any signature, and the messages received
/// while waiting for the reply (signals) go to `other`.
fn call_full(
    conn: &mut Conn,
    (dest, path): (&str, &str),
    iface: &str,
    member: &str,
    args: &[Arg],
    want: Option<&str>,
    other: &mut dyn FnMut(Msg),
) -> Result<Result<Msg, DbusError>, Fail> {
    let m = conn
        .call_msg_with(dest, path, iface, member, args, other)
        .map_err(|e| format!("{iface}.{member}: {e}"))?;
    match m.into_result() {
        Ok(m) if want.is_none_or(|w| m.signature == w) => Ok(Ok(m)),
        Ok(m) => Err(format!(
            "{iface}.{member}: reply of signature {:?}, expected {:?}",
            m.signature,
            want.unwrap_or_default()
        )),
        Err(e) => Ok(Err(e)),
    }
}

/// The decoded body of `m` (its signature already checked).
fn values(m: &Msg, what: &str) -> Result<Vec<Value>, Fail> {
    m.values().map_err(|e| format!("{what}: {e}"))
}

fn error_json(e: &DbusError) -> String {
    obj(&error_fields(e))
}

/// The members of [`error_json`]'s object.
fn error_fields(e: &DbusError) -> Fields {
    vec![
        ("ok".into(), "false".into()),
        ("error".into(), esc(&e.name)),
        ("message".into(), opt(e.message.as_deref().map(esc))),
    ]
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

/// The bus itself, for `AddMatch`.
const BUS: (&str, &str) = ("org.freedesktop.DBus", "/org/freedesktop/DBus");
const BUS_IFACE: &str = "org.freedesktop.DBus";
const PROPS: &str = "org.freedesktop.DBus.Properties";
/// BlueZ, called directly by `bt bluez-*` steps and the `bench bluez-*` baselines.
const BLUEZ: &str = "org.bluez";
const BLUEZ_ADAPTER: &str = "/org/bluez/hci0";
const GATT_CHAR: &str = "org.bluez.GattCharacteristic1";
/// The bound on each Bluetooth call: BlueZ connects and resolves services slowly, the
/// more so under an emulated CPU (the bus may answer `NoReply` sooner).
const BT_TIMEOUT: Duration = Duration::from_secs(60);

/// A characteristic as the portal names it.
#[derive(Debug, PartialEq)]
struct Gatt {
    address: String,
    service: String,
    characteristic: String,
}

impl Gatt {
    fn new(address: &str, service: &str, characteristic: &str) -> Gatt {
        Gatt {
            address: address.into(),
            service: service.into(),
            characteristic: characteristic.into(),
        }
    }

    fn args(&self) -> [Arg<'_>; 3] {
        [
            Arg::Str(&self.address),
            Arg::Str(&self.service),
            Arg::Str(&self.characteristic),
        ]
    }
}

/// One step of `portal bt`.
#[derive(Debug, PartialEq)]
enum Step {
    /// `scan,SECONDS` (`until` None) or `scan-until,ADDRESS,SECONDS`.
    Scan {
        secs: f64,
        until: Option<String>,
    },
    Connect(String),
    Disconnect(String),
    Read(Gatt),
    Write(Gatt, Vec<u8>),
    Notify(Gatt, f64),
    /// A method of the portal's Bluetooth interface, without arguments.
    Call(String),
    BluezPowerOff,
    /// The address, upper case.
    BluezPair(String),
    Sleep(f64),
}

/// SECONDS: a number in (0, 3600].
fn parse_seconds(s: &str) -> Option<f64> {
    s.parse::<f64>()
        .ok()
        .filter(|s| *s > 0.0 && *s <= MAX_STREAM_SECONDS)
}

/// Pairs of hex digits (`01`, `0a0B`; empty: no bytes).
fn parse_hex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).ok())
        .collect()
}

/// `AA:BB:CC:DD:EE:FF` (either case).
fn is_address(s: &str) -> bool {
    s.len() == 17
        && s.split(':').count() == 6
        && s.split(':')
            .all(|p| p.len() == 2 && p.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// A D-Bus member name (the bus drops a connection that sends an invalid one).
fn is_member_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 255
        && !s.starts_with(|c: char| c.is_ascii_digit())
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// A D-Bus object path (likewise).
fn is_object_path(s: &str) -> bool {
    s == "/"
        || (s.starts_with('/')
            && s[1..].split('/').all(|e| {
                !e.is_empty() && e.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
            }))
}

/// BlueZ's object for the device `address` (valid, see [`is_address`]) on hci0.
fn bluez_device_path(address: &str) -> String {
    format!(
        "{BLUEZ_ADAPTER}/dev_{}",
        address.to_ascii_uppercase().replace(':', "_")
    )
}

/// One `portal bt` step: its fields separated by commas (see the module documentation).
fn parse_step(s: &str) -> Result<Step, String> {
    let f: Vec<&str> = s.split(',').collect();
    let secs = |t: &str| {
        parse_seconds(t)
            .ok_or_else(|| format!("{s}: SECONDS is a number in (0, {MAX_STREAM_SECONDS}]"))
    };
    Ok(match f.as_slice() {
        ["scan", t] => Step::Scan {
            secs: secs(t)?,
            until: None,
        },
        ["scan-until", a, t] => Step::Scan {
            secs: secs(t)?,
            until: Some(a.to_string()),
        },
        ["connect", a] => Step::Connect(a.to_string()),
        ["disconnect", a] => Step::Disconnect(a.to_string()),
        ["read", a, sv, c] => Step::Read(Gatt::new(a, sv, c)),
        ["write", a, sv, c, hex] => Step::Write(
            Gatt::new(a, sv, c),
            parse_hex(hex).ok_or_else(|| format!("{s}: HEX is pairs of hex digits"))?,
        ),
        ["notify", a, sv, c, t] => Step::Notify(Gatt::new(a, sv, c), secs(t)?),
        ["call", m] if is_member_name(m) => Step::Call(m.to_string()),
        ["call", _] => return Err(format!("{s}: METHOD is not a D-Bus member name")),
        ["bluez-power-off"] => Step::BluezPowerOff,
        ["bluez-pair", a] if is_address(a) => Step::BluezPair(a.to_ascii_uppercase()),
        ["bluez-pair", _] => return Err(format!("{s}: ADDRESS is AA:BB:CC:DD:EE:FF")),
        ["sleep", t] => Step::Sleep(secs(t)?),
        _ => return Err(format!("{s}: unknown step or wrong number of fields")),
    })
}

/// A duration in ms, as JSON.
fn ms(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1e3)
}

fn bytes_json(b: &[u8]) -> String {
    format!(
        "[{}]",
        b.iter().map(u8::to_string).collect::<Vec<_>>().join(",")
    )
}

/// The bytes of an `ay` value.
fn bytes_of(v: &Value) -> Option<Vec<u8>> {
    match v {
        Value::Array(items) => items
            .iter()
            .map(|b| match b {
                Value::Byte(b) => Some(*b),
                _ => None,
            })
            .collect(),
        _ => None,
    }
}

/// The portal's `Bluetooth1.member`.
fn bt_call(
    conn: &mut Conn,
    member: &str,
    args: &[Arg],
    want: &str,
) -> Result<Result<Msg, DbusError>, Fail> {
    call(conn, BT, member, args, want)
}

/// A device as merged from `DeviceFound` signals.
#[derive(Debug, PartialEq)]
struct Device {
    address: String,
    name: String,
    services: std::collections::BTreeSet<String>,
    rssi: i16,
}

/// What a scan found: every `DeviceFound`, merged by address (case-insensitively).
#[derive(Debug, Default)]
struct Found {
    signals: usize,
    /// By upper-case address.
    devices: std::collections::BTreeMap<String, Device>,
}

impl Found {
    /// One `DeviceFound`: the union of the services, the latest name and RSSI.
    fn add(&mut self, address: &str, name: &str, services: &[String], rssi: i16) {
        self.signals += 1;
        let d = self
            .devices
            .entry(address.to_ascii_uppercase())
            .or_insert_with(|| Device {
                address: address.into(),
                name: String::new(),
                services: Default::default(),
                rssi,
            });
        d.address = address.into();
        d.name = name.into();
        d.services.extend(services.iter().cloned());
        d.rssi = rssi;
    }

    /// Counts `m` if it is a `DeviceFound`; other messages are left alone.
    fn take(&mut self, m: &Msg) -> Result<(), Fail> {
        if m.kind != SIGNAL
            || m.interface.as_deref() != Some(BT)
            || m.member.as_deref() != Some("DeviceFound")
        {
            return Ok(());
        }
        let what = "Bluetooth1.DeviceFound";
        if m.signature != "ssasn" {
            return Err(format!(
                "{what}: signature {:?}, not \"ssasn\"",
                m.signature
            ));
        }
        let v = values(m, what)?;
        let [Value::Str(address), Value::Str(name), Value::Array(svcs), Value::I16(rssi)] =
            v.as_slice()
        else {
            return Err(format!("{what}: unexpected body {v:?}"));
        };
        let svcs: Vec<String> = svcs
            .iter()
            .filter_map(|s| match s {
                Value::Str(s) => Some(s.clone()),
                _ => None,
            })
            .collect();
        self.add(address, name, &svcs, *rssi);
        Ok(())
    }

    fn has(&self, address: &str) -> bool {
        self.devices.contains_key(&address.to_ascii_uppercase())
    }

    /// `"signals":N,"found":[…]` (sorted by address).
    fn fields(&self) -> Fields {
        let found: Vec<String> = self
            .devices
            .values()
            .map(|d| {
                let services: Vec<String> = d.services.iter().cloned().collect();
                obj(&[
                    ("address".into(), esc(&d.address)),
                    ("name".into(), esc(&d.name)),
                    ("services".into(), crate::arr(&services)),
                    ("rssi".into(), d.rssi.to_string()),
                ])
            })
            .collect();
        vec![
            ("signals".into(), self.signals.to_string()),
            ("found".into(), format!("[{}]", found.join(","))),
        ]
    }
}

/// `portal bt STEP...`: the steps in order on one connection (see the module
/// documentation).
fn bt(steps: &[(&str, Step)]) -> Result<String, Fail> {
    let mut conn = connect()?;
    conn.set_timeout(Some(BT_TIMEOUT))
        .map_err(|e| format!("bus: {e}"))?;
    let mut matched = false;
    let mut results = Vec::new();
    let list = |results: &[String]| format!("[{}]", results.join(","));
    for (k, (text, step)) in steps.iter().enumerate() {
        let k = k + 1;
        let mut f = vec![("step".to_string(), esc(text))];
        match bt_step(&mut conn, step, &mut matched) {
            Ok(Ok(fields)) => {
                eprintln!("step {k} {text} ok");
                f.push(("ok".into(), "true".into()));
                f.extend(fields);
            }
            Ok(Err(e)) => {
                eprintln!("step {k} {text} error {}", e.name);
                f.extend(error_fields(&e));
            }
            Err(e) => {
                // The steps so far are results all the same.
                eprintln!("step {k} {text} fail");
                println!(
                    "{}",
                    obj(&[
                        ("steps".into(), list(&results)),
                        (
                            "failed".into(),
                            obj(&[("step".into(), esc(text)), ("message".into(), esc(&e)),]),
                        ),
                    ])
                );
                return Err(format!("step {k} {text}: {e}"));
            }
        }
        let _ = std::io::stderr().flush();
        results.push(obj(&f));
    }
    Ok(obj(&[("steps".into(), list(&results))]))
}

/// One step: its members after `"ok":true`, or the error reply.
fn bt_step(
    conn: &mut Conn,
    step: &Step,
    matched: &mut bool,
) -> Result<Result<Fields, DbusError>, Fail> {
    let t = Instant::now();
    let took = |_| vec![("ms".to_string(), ms(t.elapsed()))];
    let done = |_| Fields::new();
    Ok(match step {
        Step::Scan { secs, until } => return scan(conn, *secs, until.as_deref(), matched),
        Step::Connect(a) => bt_call(conn, "Connect", &[Arg::Str(a)], "")?.map(took),
        Step::Disconnect(a) => bt_call(conn, "Disconnect", &[Arg::Str(a)], "")?.map(took),
        Step::Read(g) => match bt_call(conn, "ReadCharacteristic", &g.args(), "ay")? {
            Ok(m) => {
                let d = t.elapsed();
                let what = "Bluetooth1.ReadCharacteristic";
                let v = values(&m, what)?;
                let b = v
                    .first()
                    .and_then(bytes_of)
                    .ok_or_else(|| format!("{what}: unexpected body {v:?}"))?;
                Ok(vec![("value".into(), bytes_json(&b)), ("ms".into(), ms(d))])
            }
            Err(e) => Err(e),
        },
        Step::Write(g, value) => {
            let [a, s, c] = g.args();
            bt_call(
                conn,
                "WriteCharacteristic",
                &[a, s, c, Arg::Bytes(value)],
                "",
            )?
            .map(took)
        }
        Step::Notify(g, secs) => match bt_notify(conn, g)? {
            Ok(fd) => {
                eprintln!("notify open");
                let _ = std::io::stderr().flush();
                Ok(read_notifications(fd, Duration::from_secs_f64(*secs)).fields())
            }
            Err(e) => Err(e),
        },
        Step::Call(member) => {
            call_full(conn, (DEST, PATH), BT, member, &[], None, &mut drop)?.map(done)
        }
        Step::BluezPowerOff => call_full(
            conn,
            (BLUEZ, BLUEZ_ADAPTER),
            PROPS,
            "Set",
            &[
                Arg::Str("org.bluez.Adapter1"),
                Arg::Str("Powered"),
                Arg::Variant(&Arg::Bool(false)),
            ],
            None,
            &mut drop,
        )?
        .map(done),
        Step::BluezPair(a) => call_full(
            conn,
            (BLUEZ, &bluez_device_path(a)),
            "org.bluez.Device1",
            "Pair",
            &[],
            None,
            &mut drop,
        )?
        .map(done),
        Step::Sleep(secs) => {
            std::thread::sleep(Duration::from_secs_f64(*secs));
            Ok(Fields::new())
        }
    })
}

/// `AddMatch(rule)`: the error reply, if any.
fn add_match(conn: &mut Conn, rule: &str) -> Result<Result<(), DbusError>, Fail> {
    Ok(call_at(conn, BUS, BUS_IFACE, "AddMatch", &[Arg::Str(rule)], "")?.map(drop))
}

/// The `scan`/`scan-until` step: StartScan, `DeviceFound` collected for `secs` (or until
/// `until` was found), StopScan.
fn scan(
    conn: &mut Conn,
    secs: f64,
    until: Option<&str>,
    matched: &mut bool,
) -> Result<Result<Fields, DbusError>, Fail> {
    if !*matched {
        // DeviceFound is unicast, delivered without a rule; the rule does no harm (its
        // refusal is not the portal's).
        let rule = format!("type='signal',interface='{BT}'");
        let _ = add_match(conn, &rule)?;
        *matched = true;
    }
    let mut found = Found::default();
    let mut bad = None;
    // Signals sent before the reply (for devices already known) count too.
    let started = call_full(
        conn,
        (DEST, PATH),
        BT,
        "StartScan",
        &[],
        Some(""),
        &mut |m| {
            if let Err(e) = found.take(&m) {
                bad.get_or_insert(e);
            }
        },
    )?;
    if let Some(e) = bad {
        return Err(e);
    }
    if let Err(e) = started {
        return Ok(Err(e));
    }
    let start = Instant::now();
    let deadline = start + Duration::from_secs_f64(secs);
    while !until.is_some_and(|a| found.has(a)) {
        match conn.recv_before(deadline) {
            Ok(m) => found.take(&m)?,
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => break,
            Err(e) => return Err(format!("waiting for Bluetooth1.DeviceFound: {e}")),
        }
    }
    let seconds = start.elapsed();
    let stopped = bt_call(conn, "StopScan", &[], "")?;
    let mut f = found.fields();
    f.push((
        "stop_error".into(),
        opt(stopped.err().map(|e| esc(&e.name))),
    ));
    f.push(("seconds".into(), format!("{:.3}", seconds.as_secs_f64())));
    Ok(Ok(f))
}

/// `Bluetooth1.Notify`: the pipe's read end, or the error reply.
fn bt_notify(conn: &mut Conn, g: &Gatt) -> Result<Result<OwnedFd, DbusError>, Fail> {
    let what = "Bluetooth1.Notify";
    let mut m = match bt_call(conn, "Notify", &g.args(), "h")? {
        Err(e) => return Ok(Err(e)),
        Ok(m) => m,
    };
    let index = match values(&m, what)?.as_slice() {
        [Value::Fd(i)] => *i,
        v => return Err(format!("{what}: unexpected body {v:?}")),
    };
    m.take_fd(index).map(Ok).map_err(|e| format!("{what}: {e}"))
}

/// Splits `buf` into whole notification records (a u16 little-endian length, then that
/// many bytes: the values are returned) and the bytes left over (an incomplete record).
fn split_records(buf: &[u8]) -> (Vec<&[u8]>, &[u8]) {
    let mut records = Vec::new();
    let mut rest = buf;
    while let [lo, hi, tail @ ..] = rest {
        let len = u16::from_le_bytes([*lo, *hi]) as usize;
        if tail.len() < len {
            break;
        }
        records.push(&tail[..len]);
        rest = &tail[len..];
    }
    (records, rest)
}

/// What a notification pipe delivered.
#[derive(Debug, Default)]
struct Notifications {
    records: usize,
    /// The values' bytes (without the length prefixes).
    bytes: usize,
    first: Option<Vec<u8>>,
    last: Option<Vec<u8>>,
    /// Bytes left over at the end, not a whole record.
    torn: usize,
    end: ReadEnd,
}

impl Notifications {
    /// Takes the records of `pending` (the bytes read and not yet used), leaving an
    /// incomplete one there.
    fn take(&mut self, pending: &mut Vec<u8>) {
        let (records, rest) = split_records(pending);
        let used = pending.len() - rest.len();
        for r in records {
            self.records += 1;
            self.bytes += r.len();
            if self.first.is_none() {
                self.first = Some(r.to_vec());
            }
            self.last = Some(r.to_vec());
        }
        pending.drain(..used);
    }

    fn fields(&self) -> Fields {
        vec![
            ("records".into(), self.records.to_string()),
            ("bytes".into(), self.bytes.to_string()),
            ("first".into(), opt(self.first.as_deref().map(bytes_json))),
            ("last".into(), opt(self.last.as_deref().map(bytes_json))),
            ("eof".into(), self.end.eof_after.is_some().to_string()),
            (
                "eof_mono_ns".into(),
                opt(self.end.eof_mono_ns.map(|n| n.to_string())),
            ),
            ("torn".into(), self.torn.to_string()),
            (
                "seconds".into(),
                format!("{:.3}", self.end.observed.as_secs_f64()),
            ),
            (
                "read_error".into(),
                opt(self.end.read_error.as_deref().map(esc)),
            ),
        ]
    }
}

/// Reads notification records from `fd` until EOF or `limit`, never blocking past it.
fn read_notifications(fd: OwnedFd, limit: Duration) -> Notifications {
    let mut n = Notifications::default();
    let mut pending = Vec::new();
    let end = read_for(fd, limit, |b| {
        pending.extend_from_slice(b);
        n.take(&mut pending);
    });
    n.end = end;
    n.torn = pending.len();
    n
}

/// `{"records","bytes","seconds","rate_hz","eof"}` of the `bench *-notify` commands.
fn rate_json(records: usize, bytes: usize, observed: Duration, eof: bool) -> String {
    let secs = observed.as_secs_f64();
    obj(&[
        ("records".into(), records.to_string()),
        ("bytes".into(), bytes.to_string()),
        ("seconds".into(), format!("{secs:.3}")),
        (
            "rate_hz".into(),
            opt((secs > 0.0).then(|| format!("{:.1}", records as f64 / secs))),
        ),
        ("eof".into(), eof.to_string()),
    ])
}

/// A connection with the Bluetooth calls' bound.
fn bt_connect() -> Result<Conn, Fail> {
    let mut conn = connect()?;
    conn.set_timeout(Some(BT_TIMEOUT))
        .map_err(|e| format!("bus: {e}"))?;
    Ok(conn)
}

/// `portal bench bt-read ADDRESS SERVICE CHAR N`: Connect, N ReadCharacteristic round
/// trips, Disconnect.
fn bench_bt_read(g: &Gatt, n: usize) -> Result<String, Fail> {
    let mut conn = bt_connect()?;
    let connect_error = bt_call(&mut conn, "Connect", &[Arg::Str(&g.address)], "")?.err();
    let mut lat = Vec::with_capacity(n);
    let mut errors = 0;
    for _ in 0..n {
        let t = Instant::now();
        if bt_call(&mut conn, "ReadCharacteristic", &g.args(), "ay")?.is_err() {
            errors += 1;
        }
        lat.push(t.elapsed());
    }
    // Best effort: the hold also ends with this connection.
    let _ = bt_call(&mut conn, "Disconnect", &[Arg::Str(&g.address)], "");
    let mut fields = latency_fields(lat, errors);
    fields.push((
        "connect_error".into(),
        opt(connect_error.map(|e| esc(&e.name))),
    ));
    Ok(obj(&fields))
}

/// `portal bench bluez-read CHARPATH N`: BlueZ's `ReadValue` round trips.
fn bench_bluez_read(path: &str, n: usize) -> Result<String, Fail> {
    let mut conn = bt_connect()?;
    let mut lat = Vec::with_capacity(n);
    let mut errors = 0;
    for _ in 0..n {
        let t = Instant::now();
        let r = call_at(
            &mut conn,
            (BLUEZ, path),
            GATT_CHAR,
            "ReadValue",
            &[Arg::EmptyDict],
            "ay",
        )?;
        errors += usize::from(r.is_err());
        lat.push(t.elapsed());
    }
    Ok(latency_json(lat, errors))
}

/// `portal bench bt-notify ADDRESS SERVICE CHAR SECONDS`: Connect, Notify, the records
/// counted for SECONDS (or until EOF), Disconnect.
fn bench_bt_notify(g: &Gatt, secs: f64) -> Result<String, Fail> {
    let mut conn = bt_connect()?;
    if let Err(e) = bt_call(&mut conn, "Connect", &[Arg::Str(&g.address)], "")? {
        return Ok(error_json(&e));
    }
    let disconnect = |conn: &mut Conn| {
        let _ = bt_call(conn, "Disconnect", &[Arg::Str(&g.address)], "");
    };
    let fd = match bt_notify(&mut conn, g)? {
        Ok(fd) => fd,
        Err(e) => {
            disconnect(&mut conn);
            return Ok(error_json(&e));
        }
    };
    let n = read_notifications(fd, Duration::from_secs_f64(secs));
    disconnect(&mut conn);
    Ok(rate_json(
        n.records,
        n.bytes,
        n.end.observed,
        n.end.eof_after.is_some(),
    ))
}

/// The length of the new `Value` if `m` is BlueZ's `PropertiesChanged` of the object
/// `path` with one.
fn value_changed(m: &Msg, path: &str) -> Result<Option<usize>, Fail> {
    if m.kind != SIGNAL
        || m.path.as_deref() != Some(path)
        || m.interface.as_deref() != Some(PROPS)
        || m.member.as_deref() != Some("PropertiesChanged")
    {
        return Ok(None);
    }
    let what = "Properties.PropertiesChanged";
    if m.signature != "sa{sv}as" {
        return Err(format!("{what}: signature {:?}", m.signature));
    }
    let v = values(m, what)?;
    let Some(Value::Dict(changed)) = v.get(1) else {
        return Err(format!("{what}: unexpected body {v:?}"));
    };
    Ok(changed.iter().find_map(|(k, v)| match (k, v) {
        (Value::Str(k), Value::Variant(v)) if k == "Value" => {
            Some(bytes_of(v).map_or(0, |b| b.len()))
        }
        _ => None,
    }))
}

/// `portal bench bluez-notify CHARPATH SECONDS`: BlueZ's notifications
/// (`PropertiesChanged` of `Value`) counted for SECONDS after `StartNotify`.
fn bench_bluez_notify(path: &str, secs: f64) -> Result<String, Fail> {
    let mut conn = bt_connect()?;
    let rule = format!(
        "type='signal',sender='{BLUEZ}',path='{path}',interface='{PROPS}',\
         member='PropertiesChanged'"
    );
    if let Err(e) = add_match(&mut conn, &rule)? {
        return Ok(error_json(&e));
    }
    let (mut records, mut bytes) = (0, 0);
    let mut bad = None;
    let mut count = |m: &Msg| -> Result<(), Fail> {
        if let Some(len) = value_changed(m, path)? {
            records += 1;
            bytes += len;
        }
        Ok(())
    };
    let started = call_full(
        &mut conn,
        (BLUEZ, path),
        GATT_CHAR,
        "StartNotify",
        &[],
        Some(""),
        &mut |m| {
            if let Err(e) = count(&m) {
                bad.get_or_insert(e);
            }
        },
    )?;
    if let Some(e) = bad {
        return Err(e);
    }
    if let Err(e) = started {
        return Ok(error_json(&e));
    }
    let limit = Duration::from_secs_f64(secs);
    let start = Instant::now();
    loop {
        match conn.recv_before(start + limit) {
            Ok(m) => count(&m)?,
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => break,
            Err(e) => return Err(format!("waiting for PropertiesChanged: {e}")),
        }
    }
    let observed = start.elapsed().min(limit);
    let _ = call_at(&mut conn, (BLUEZ, path), GATT_CHAR, "StopNotify", &[], "");
    Ok(rate_json(records, bytes, observed, false))
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

/// How reading a pipe ended.
#[derive(Debug, Default)]
struct ReadEnd {
    /// When EOF came (from the start of reading).
    eof_after: Option<Duration>,
    /// `CLOCK_MONOTONIC` when EOF was read.
    eof_mono_ns: Option<u64>,
    /// The time read: until EOF, else `limit`.
    observed: Duration,
    read_error: Option<String>,
}

/// Reads `fd` until EOF, an error or `limit`, never blocking past it; each chunk read
/// goes to `chunk`.
fn read_for(fd: OwnedFd, limit: Duration, mut chunk: impl FnMut(&[u8])) -> ReadEnd {
    let file = std::fs::File::from(fd);
    let start = Instant::now();
    let deadline = start + limit;
    let mut end = ReadEnd::default();
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
                end.read_error = Some(errno_name(e.raw_os_error()));
                break;
            }
        }
        match (&file).read(&mut buf) {
            Ok(0) => {
                end.eof_after = Some(start.elapsed());
                end.eof_mono_ns = Some(mono_ns());
                break;
            }
            Ok(n) => chunk(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => {
                end.read_error = Some(errno_name(errno_of(&e)));
                break;
            }
        }
    }
    end.observed = end.eof_after.unwrap_or_else(|| start.elapsed().min(limit));
    end
}

/// Reads `nch`-channel records from `fd` until EOF or `limit`, never blocking past it.
fn read_stream(fd: OwnedFd, nch: usize, limit: Duration) -> StreamStats {
    let rec = 8 + 8 * nch;
    let mut st = StreamStats::default();
    let mut pending: Vec<u8> = Vec::new();
    let end = read_for(fd, limit, |b| {
        pending.extend_from_slice(b);
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
    });
    st.eof_after = end.eof_after;
    st.eof_mono_ns = end.eof_mono_ns;
    st.observed = end.observed;
    st.read_error = end.read_error;
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
    fn bt_steps_parse() {
        let g = |a: &str, s: &str, c: &str| Gatt::new(a, s, c);
        let a = "AA:BB:CC:DD:EE:01";
        for (text, want) in [
            (
                "scan,5",
                Step::Scan {
                    secs: 5.0,
                    until: None,
                },
            ),
            (
                "scan-until,aa:bb:cc:dd:ee:01,2.5",
                Step::Scan {
                    secs: 2.5,
                    until: Some("aa:bb:cc:dd:ee:01".into()),
                },
            ),
            ("connect,AA:BB:CC:DD:EE:01", Step::Connect(a.into())),
            ("disconnect,AA:BB:CC:DD:EE:01", Step::Disconnect(a.into())),
            // Addresses go to the portal as given (its InvalidArgs is a result).
            ("connect,nonsense", Step::Connect("nonsense".into())),
            (
                "read,AA:BB:CC:DD:EE:01,180f,2a19",
                Step::Read(g(a, "180f", "2a19")),
            ),
            (
                "write,AA:BB:CC:DD:EE:01,180f,2a19,0aFf",
                Step::Write(g(a, "180f", "2a19"), vec![0x0a, 0xff]),
            ),
            (
                "write,AA:BB:CC:DD:EE:01,180f,2a19,",
                Step::Write(g(a, "180f", "2a19"), vec![]),
            ),
            (
                "notify,AA:BB:CC:DD:EE:01,180d,2a37,3600",
                Step::Notify(g(a, "180d", "2a37"), 3600.0),
            ),
            ("call,SetPowered", Step::Call("SetPowered".into())),
            ("bluez-power-off", Step::BluezPowerOff),
            ("bluez-pair,aa:bb:cc:dd:ee:01", Step::BluezPair(a.into())),
            ("sleep,0.2", Step::Sleep(0.2)),
        ] {
            assert_eq!(parse_step(text), Ok(want), "{text}");
        }
        for bad in [
            "",
            "scan",
            "scan,0",
            "scan,-1",
            "scan,3600.5",
            "scan,nan",
            "scan,inf",
            "scan,x",
            "scan,5,6",
            "scan-until,5",
            "connect",
            "connect,A,B",
            "read,A,180f",
            "write,A,180f,2a19",
            "write,A,180f,2a19,0",
            "write,A,180f,2a19,zz",
            "write,A,180f,2a19,0x01",
            "notify,A,180d,2a37",
            "notify,A,180d,2a37,0",
            "call",
            "call,",
            "call,Set.Powered",
            "call,1Pair",
            "bluez-power-off,1",
            "bluez-pair,AA:BB",
            "bluez-pair,AA:BB:CC:DD:EE:GG",
            "bluez-pair,AA-BB-CC-DD-EE-FF",
            "sleep",
            "sleep,0",
            "Scan,5",
            "pair,AA:BB:CC:DD:EE:01",
        ] {
            assert!(parse_step(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn bt_arguments_are_checked() {
        assert_eq!(parse_hex("01"), Some(vec![1]));
        assert_eq!(parse_hex("0a0B"), Some(vec![10, 11]));
        assert_eq!(parse_hex(""), Some(vec![]));
        for bad in ["0", "abc", "g0", "0x01", " 01", "+1", "é1"] {
            assert_eq!(parse_hex(bad), None, "{bad:?}");
        }
        assert!(is_address("AA:BB:CC:dd:ee:0f"));
        assert!(!is_address("AA:BB:CC:DD:EE:F"));
        assert!(!is_address("AA:BB:CC:DD:EEE:F"));
        assert!(!is_address("AA:BB:CC:DD:EE:FF:"));
        assert_eq!(
            bluez_device_path("aa:bb:cc:dd:ee:0f"),
            "/org/bluez/hci0/dev_AA_BB_CC_DD_EE_0F"
        );
        assert!(is_member_name("Pair") && is_member_name("_x1"));
        assert!(!is_member_name("") && !is_member_name("a.b") && !is_member_name("9a"));
        for ok in [
            "/",
            "/org/bluez/hci0/dev_AA_BB_CC_DD_EE_FF/service0010/char0011",
        ] {
            assert!(is_object_path(ok), "{ok}");
        }
        for bad in ["", "org", "/org/", "//org", "/org//b", "/org/b-c", "/o'"] {
            assert!(!is_object_path(bad), "{bad}");
        }
    }

    fn nrec(value: &[u8]) -> Vec<u8> {
        let mut r = (value.len() as u16).to_le_bytes().to_vec();
        r.extend_from_slice(value);
        r
    }

    #[test]
    fn notification_records_split() {
        let mut buf = nrec(&[1, 2]);
        buf.extend(nrec(&[]));
        buf.extend(nrec(&[3; 300]));
        let (recs, rest) = split_records(&buf);
        assert_eq!(recs, [&[1u8, 2][..], &[], &[3; 300]]);
        assert!(rest.is_empty());
        // A torn tail: a length alone, a length and part of the value, one byte.
        for tail in [&[5u8, 0][..], &[5, 0, 1, 2], &[9]] {
            let mut b = nrec(&[7]);
            b.extend_from_slice(tail);
            let (recs, rest) = split_records(&b);
            assert_eq!(recs, [&[7u8][..]]);
            assert_eq!(rest, tail);
        }
        assert_eq!(split_records(&[]), (vec![], &[][..]));
        // A record split across reads: whole once the rest arrives.
        let mut n = Notifications::default();
        let r = nrec(&[1, 2, 3, 4]);
        let mut pending = r[..3].to_vec();
        n.take(&mut pending);
        assert_eq!((n.records, pending.len()), (0, 3));
        pending.extend_from_slice(&r[3..]);
        pending.extend_from_slice(&nrec(&[9])[..1]);
        n.take(&mut pending);
        assert_eq!((n.records, n.bytes), (1, 4));
        assert_eq!(pending, [1]);
        assert_eq!(n.first.as_deref(), Some(&[1u8, 2, 3, 4][..]));
        assert_eq!(n.last, n.first);
    }

    #[test]
    fn notifications_are_read_to_eof() {
        let (r, mut w) = std::io::pipe().unwrap();
        w.write_all(&nrec(&[1])).unwrap();
        w.write_all(&nrec(&[2, 3])).unwrap();
        w.write_all(&nrec(&[4, 5, 6])).unwrap();
        w.write_all(&[10, 0, 1]).unwrap(); // torn: 3 bytes
        drop(w);
        let n = read_notifications(r.into(), Duration::from_secs(5));
        assert_eq!((n.records, n.bytes, n.torn), (3, 6, 3));
        assert!(n.end.eof_after.is_some() && n.end.eof_mono_ns.is_some());
        let j = obj(&n.fields());
        assert!(
            j.starts_with(r#"{"records":3,"bytes":6,"first":[1],"last":[4,5,6],"eof":true,"#),
            "{j}"
        );
        assert!(j.contains(r#""torn":3,"#), "{j}");
        assert!(j.ends_with(r#""read_error":null}"#), "{j}");
    }

    #[test]
    fn notifications_that_do_not_end_are_read_for_the_limit_only() {
        let (r, mut w) = std::io::pipe().unwrap();
        let t = Instant::now();
        w.write_all(&[1, 0]).unwrap(); // a record in flight
        let n = read_notifications(r.into(), Duration::from_millis(300));
        assert!(t.elapsed() < Duration::from_secs(3));
        assert_eq!((n.records, n.torn), (0, 2));
        let j = obj(&n.fields());
        assert!(
            j.contains(r#""first":null,"last":null,"eof":false,"eof_mono_ns":null,"#),
            "{j}"
        );
        drop(w);
        let j = rate_json(30, 60, Duration::from_secs(2), false);
        assert_eq!(
            j,
            r#"{"records":30,"bytes":60,"seconds":2.000,"rate_hz":15.0,"eof":false}"#
        );
    }

    #[test]
    fn found_devices_merge_by_address() {
        let mut f = Found::default();
        let svc = |s: &[&str]| s.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        f.add("AA:BB:CC:DD:EE:02", "b", &svc(&["180d"]), -70);
        f.add("AA:BB:CC:DD:EE:01", "", &svc(&["180f"]), 0);
        f.add("aa:bb:cc:dd:ee:01", "Thermo", &svc(&["181a", "180f"]), -40);
        assert_eq!(f.signals, 3);
        assert!(f.has("AA:bb:CC:DD:EE:01") && !f.has("AA:BB:CC:DD:EE:03"));
        let j = obj(&f.fields());
        assert_eq!(
            j,
            concat!(
                r#"{"signals":3,"found":["#,
                r#"{"address":"aa:bb:cc:dd:ee:01","name":"Thermo","services":["180f","181a"],"rssi":-40},"#,
                r#"{"address":"AA:BB:CC:DD:EE:02","name":"b","services":["180d"],"rssi":-70}]}"#
            )
        );
        assert_eq!(
            obj(&Found::default().fields()),
            r#"{"signals":0,"found":[]}"#
        );
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
