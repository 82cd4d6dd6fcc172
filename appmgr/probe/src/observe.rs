//! `observe`: what the tests compare with `appmgr permissions --json` item by item. The
//! report's fields plus:
//! - `unix_sockets`: every unix socket inode below `/run`, `/tmp`, `/var`, `/dev` and
//!   `HOME` (host sockets a grant could have bound: wayland, pulseaudio, pipewire, the
//!   bus, portals);
//! - `paths`: for each `path:P` argument, whether P exists and whether a file can be
//!   created in it;
//! - `display_sockets`: for each of `WAYLAND_DISPLAY`, `DISPLAY`, `PULSE_SERVER` and
//!   `PIPEWIRE_REMOTE` that is set, the socket path a client library derives from it
//!   (`XDG_RUNTIME_DIR`/`PIPEWIRE_RUNTIME_DIR` for relative names, `/tmp/.X11-unix/XN` for
//!   `:N`, `unix:` stripped) and `connect`: `ok:BYTE` (connected, and the first byte the
//!   server wrote, within 5 s), `ok` (connected, nothing read) or the errno name;
//! - `bus`: for each `talk:NAME` argument, the result of calling `Peer.Ping` on NAME, and
//!   for each `own:NAME`, of `RequestName` (`ok`, or the bus's error name), over the
//!   system bus at `DBUS_SYSTEM_BUS_ADDRESS` (or the standard path).
//!
//! `bus-serve NAME...` (run by a test on the host): owns every NAME on the bus at
//! `DBUS_SYSTEM_BUS_ADDRESS`, prints `ready`, and answers every method call.

use crate::dbus::{system_bus_path, Arg, Conn};
use crate::{arr, errno_name, esc, obj};

fn walk_sockets(dir: &std::path::Path, depth: u32, out: &mut Vec<String>) {
    use std::os::unix::fs::FileTypeExt;
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.filter_map(Result::ok) {
        // lstat, not the directory entry's type: a bound socket is a mount over the
        // entry, and readdir reports the covered inode.
        let Ok(t) = std::fs::symlink_metadata(e.path()).map(|m| m.file_type()) else {
            continue;
        };
        if t.is_socket() {
            out.push(e.path().display().to_string());
        } else if t.is_dir() && depth > 0 {
            walk_sockets(&e.path(), depth - 1, out);
        }
    }
}

/// Unix sockets visible in the places a host socket would be bound.
pub fn unix_sockets() -> Vec<String> {
    let mut out = Vec::new();
    let home = std::env::var("HOME").unwrap_or_else(|_| "/home/app".into());
    for d in ["/run", "/tmp", "/var", "/dev", home.as_str()] {
        walk_sockets(std::path::Path::new(d), 6, &mut out);
    }
    out.sort();
    out.dedup();
    out
}

/// Whether `p` exists and whether a new file can be created in it.
pub fn path_access(p: &str) -> String {
    let exists = std::fs::symlink_metadata(p).is_ok();
    let probe = format!("{p}/.appmgr-probe-{}", std::process::id());
    let write = match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&probe)
    {
        Ok(_) => {
            let _ = std::fs::remove_file(&probe);
            "ok".to_string()
        }
        Err(e) => errno_name(e.raw_os_error().unwrap_or(0)),
    };
    obj(&[
        ("exists".into(), exists.to_string()),
        ("write".into(), esc(&write)),
    ])
}

/// The bus checks for `talk:`/`own:` arguments.
pub fn bus_checks(args: &[String]) -> String {
    let talk: Vec<&str> = args
        .iter()
        .filter_map(|a| a.strip_prefix("talk:"))
        .collect();
    let own: Vec<&str> = args.iter().filter_map(|a| a.strip_prefix("own:")).collect();
    let mut conn = match system_bus_path().and_then(|p| Conn::connect(&p)) {
        Ok(c) => c,
        Err(e) => {
            return obj(&[
                ("connected".into(), "false".into()),
                ("error".into(), esc(&e.to_string())),
            ])
        }
    };
    let mut t = Vec::new();
    for n in talk {
        let r = conn.call(n, "/", "org.freedesktop.DBus.Peer", "Ping", &[]);
        t.push((n.to_string(), esc(&outcome(r, None))));
    }
    let mut o = Vec::new();
    for n in own {
        // DBUS_NAME_FLAG_DO_NOT_QUEUE; reply 1: primary owner.
        let r = conn.call(
            "org.freedesktop.DBus",
            "/org/freedesktop/DBus",
            "org.freedesktop.DBus",
            "RequestName",
            &[Arg::Str(n), Arg::U32(4)],
        );
        o.push((n.to_string(), esc(&outcome(r, Some(1)))));
    }
    obj(&[
        ("connected".into(), "true".into()),
        ("talk".into(), obj(&t)),
        ("own".into(), obj(&o)),
    ])
}

fn outcome(r: std::io::Result<Result<Option<u32>, String>>, want: Option<u32>) -> String {
    match r {
        Ok(Ok(v)) if want.is_none() || v == want => "ok".into(),
        Ok(Ok(v)) => format!("reply {v:?}"),
        Ok(Err(name)) => name,
        Err(e) => format!("io: {e}"),
    }
}

/// The socket path a client derives from the variable `var` set to `value`.
fn client_socket_path(var: &str, value: &str) -> Option<String> {
    let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    let in_dir = |dir: Option<String>, name: &str| {
        if name.starts_with('/') {
            Some(name.to_string())
        } else {
            dir.map(|d| format!("{d}/{name}"))
        }
    };
    match var {
        "WAYLAND_DISPLAY" => in_dir(env("XDG_RUNTIME_DIR"), value),
        "PIPEWIRE_REMOTE" => in_dir(
            env("PIPEWIRE_RUNTIME_DIR").or_else(|| env("XDG_RUNTIME_DIR")),
            value,
        ),
        "PULSE_SERVER" => value.strip_prefix("unix:").map(str::to_string),
        "DISPLAY" => {
            let n = value.strip_prefix(':')?;
            let n = n.split('.').next()?;
            Some(format!("/tmp/.X11-unix/X{n}"))
        }
        _ => None,
    }
}

/// Connects to `path` and reads the first byte the server sends.
fn connect_and_read(path: &str) -> String {
    use std::io::Read;
    let mut c = match std::os::unix::net::UnixStream::connect(path) {
        Ok(c) => c,
        Err(e) => return errno_name(e.raw_os_error().unwrap_or(0)),
    };
    let _ = c.set_read_timeout(Some(std::time::Duration::from_secs(5)));
    let mut b = [0u8; 1];
    match c.read(&mut b) {
        Ok(1) => format!("ok:{}", b[0]),
        _ => "ok".into(),
    }
}

/// `display_sockets`: see the module docs.
pub fn display_sockets() -> String {
    let mut out = Vec::new();
    for var in [
        "WAYLAND_DISPLAY",
        "DISPLAY",
        "PULSE_SERVER",
        "PIPEWIRE_REMOTE",
    ] {
        let Ok(v) = std::env::var(var) else { continue };
        let path = client_socket_path(var, &v);
        let connect = path
            .as_deref()
            .map(connect_and_read)
            .unwrap_or_else(|| "no path".into());
        out.push((
            var.to_string(),
            obj(&[
                ("value".into(), esc(&v)),
                ("path".into(), esc(path.as_deref().unwrap_or(""))),
                ("connect".into(), esc(&connect)),
            ]),
        ));
    }
    obj(&out)
}

/// `observe ARGS`: the report plus `unix_sockets`, `display_sockets`, `paths`, `bus`.
pub fn observe(args: &[String]) -> String {
    let mut f = crate::report_fields(args);
    f.push(("unix_sockets".into(), arr(&unix_sockets())));
    f.push(("display_sockets".into(), display_sockets()));
    // The sandbox's sysfs shows its own network namespace's interfaces.
    f.push(("net_links".into(), arr(&crate::list_dir("/sys/class/net"))));
    let paths: Vec<(String, String)> = args
        .iter()
        .filter_map(|a| a.strip_prefix("path:"))
        .map(|p| (p.to_string(), path_access(p)))
        .collect();
    f.push(("paths".into(), obj(&paths)));
    f.push(("bus".into(), bus_checks(args)));
    obj(&f)
}

/// `bus-serve NAME...`: owns the names and answers calls until killed.
pub fn bus_serve(names: &[String]) -> i32 {
    let mut conn = match system_bus_path().and_then(|p| Conn::connect(&p)) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("appmgr-probe: bus: {e}");
            return 1;
        }
    };
    for n in names {
        let r = conn.call(
            "org.freedesktop.DBus",
            "/org/freedesktop/DBus",
            "org.freedesktop.DBus",
            "RequestName",
            &[Arg::Str(n), Arg::U32(4)],
        );
        let o = outcome(r, Some(1));
        if o != "ok" {
            eprintln!("appmgr-probe: cannot own {n}: {o}");
            return 1;
        }
    }
    println!("ready");
    let _ = conn.set_timeout(None);
    loop {
        match conn.recv() {
            Ok(m) if m.kind == 1 => {
                if conn.reply(&m).is_err() {
                    return 1;
                }
            }
            Ok(_) => {}
            Err(_) => return 0,
        }
    }
}
