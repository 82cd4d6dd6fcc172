//! appmgr-probe: a static binary run *inside* the sandbox by the tests (and by integrators
//! on a target board) that reports, as one JSON object on stdout, what the process can
//! see and do: ids, capability sets, `NoNewPrivs`, `Seccomp`, namespaces, mounts, visible
//! processes, open fds, network interfaces, environment, argv, the result of writing to
//! `/usr`, `/app`, `/sys`, `/proc/sys`, and the errno of every blocked syscall made with
//! side-effect-free arguments (bad fds, null pointers, invalid flags). An allowed call
//! then fails with EBADF/EFAULT/EINVAL/ENOENT/...; a blocked one with the filter's
//! EPERM/ENOSYS/EAFNOSUPPORT.
//!
//! Modes (first argument):
//! - `report` (default): the JSON report.
//! - `load-filter FILE`: load the BPF program in FILE (after no_new_privs), then report:
//!   run as root outside any sandbox, this shows that the errno comes from the filter and
//!   not from a missing capability.
//! - `int80` / `x32` (x86_64): make `getpid` through the i386 / x32 ABI; expected to be
//!   killed by SIGSYS.
//! - `write PATH...`: try to create each PATH, report the errno.
//! - `sleep`: sleep until killed (for signal and death tests); prints `ready`.
//! - `tty`: try to leave or take over the terminal on fd 0, then read one line from it.
//! - `uevent [SECONDS]`: open and bind a kernel uevent (hotplug) socket, wait for one.
//! - `netlink-route`: dump the link table through a NETLINK_ROUTE socket.
//! - `observe ARGS` / `bus-serve NAME...`: see the `observe` module.
//! - `portal gpu`, `portal sensors list`, `portal sensors read CHANNEL`,
//!   `portal sensors stream CH[,CH...] RATE_HZ SECONDS`, `portal bt STEP...` (Bluetooth:
//!   scan, connect, read, write, notify in order on one connection), `portal bench ...`
//!   (round trips, and the direct BlueZ baselines): call the portal service
//!   (`org.appmgr.Portal1` on the system bus at `DBUS_SYSTEM_BUS_ADDRESS`, default
//!   `/run/dbus/system_bus_socket`) as the app, examine the descriptors it hands out, and
//!   print one JSON object. Exit 0 when the probe worked, also when the portal answered
//!   with a D-Bus error (`{"ok":false,"error":NAME,"message":TEXT}` in place of the call's
//!   result); 1 when the bus cannot be reached or a reply is malformed; 2 for bad
//!   arguments. The keys of each subcommand's object are listed in the `portal` module.
//!
//! Built statically (`-C target-feature=+crt-static`) so it runs in any runtime tree.

mod dbus;
mod observe;
mod portal;

use appmgr_sandbox::sys::probe_syscall;
use std::fmt::Write as _;

fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len() + 2);
    o.push('"');
    for c in s.chars() {
        match c {
            '"' => o.push_str("\\\""),
            '\\' => o.push_str("\\\\"),
            '\n' => o.push_str("\\n"),
            c if (c as u32) < 0x20 => {
                let _ = write!(o, "\\u{:04x}", c as u32);
            }
            c => o.push(c),
        }
    }
    o.push('"');
    o
}

fn arr(items: &[String]) -> String {
    format!(
        "[{}]",
        items.iter().map(|s| esc(s)).collect::<Vec<_>>().join(",")
    )
}

fn obj(items: &[(String, String)]) -> String {
    format!(
        "{{{}}}",
        items
            .iter()
            .map(|(k, v)| format!("{}:{}", esc(k), v))
            .collect::<Vec<_>>()
            .join(",")
    )
}

/// errno name for the report.
pub fn errno_name(e: i32) -> String {
    let n = match e {
        libc::EPERM => "EPERM",
        libc::ENOENT => "ENOENT",
        libc::ESRCH => "ESRCH",
        libc::EBADF => "EBADF",
        libc::EACCES => "EACCES",
        libc::EFAULT => "EFAULT",
        libc::EBUSY => "EBUSY",
        libc::EEXIST => "EEXIST",
        libc::ENOTDIR => "ENOTDIR",
        libc::EINVAL => "EINVAL",
        libc::ENOTTY => "ENOTTY",
        libc::EROFS => "EROFS",
        libc::ENOSYS => "ENOSYS",
        libc::EOPNOTSUPP => "EOPNOTSUPP",
        libc::EAFNOSUPPORT => "EAFNOSUPPORT",
        libc::EPROTONOSUPPORT => "EPROTONOSUPPORT",
        libc::ENOEXEC => "ENOEXEC",
        libc::ENXIO => "ENXIO",
        libc::E2BIG => "E2BIG",
        libc::ENODEV => "ENODEV",
        libc::ENOMEM => "ENOMEM",
        libc::EIO => "EIO",
        libc::ENAMETOOLONG => "ENAMETOOLONG",
        libc::ESOCKTNOSUPPORT => "ESOCKTNOSUPPORT",
        libc::ECONNREFUSED => "ECONNREFUSED",
        libc::EHOSTUNREACH => "EHOSTUNREACH",
        libc::ENETUNREACH => "ENETUNREACH",
        libc::ETIMEDOUT => "ETIMEDOUT",
        _ => return format!("E{e}"),
    };
    n.to_string()
}

const BAD: usize = usize::MAX; // an invalid pointer / fd (-1)
const BADPTR: usize = 8; // a non-null pointer into the unmapped first page
const NOPATH: &[u8] = b"/nonexistent-appmgr-probe/x\0";

fn nopath() -> usize {
    NOPATH.as_ptr() as usize
}

/// The battery: (name, syscall number, arguments). Every call is harmless if allowed.
fn battery() -> Vec<(&'static str, libc::c_long, [usize; 6])> {
    use libc::*;
    let ns = |f: c_int| (f | CLONE_THREAD) as usize; // CLONE_THREAD w/o SIGHAND: EINVAL
    let mut v: Vec<(&'static str, c_long, [usize; 6])> = vec![
        (
            "ioctl_tiocsti",
            SYS_ioctl,
            [BAD, TIOCSTI as usize, 0, 0, 0, 0],
        ),
        (
            "ioctl_tiocsti_high_bits",
            SYS_ioctl,
            [BAD, (1usize << 32) | TIOCSTI as usize, 0, 0, 0, 0],
        ),
        (
            "ioctl_tioclinux",
            SYS_ioctl,
            [BAD, TIOCLINUX as usize, 0, 0, 0, 0],
        ),
        (
            "ioctl_fionread",
            SYS_ioctl,
            [BAD, FIONREAD as usize, 0, 0, 0, 0],
        ),
        (
            "clone_newuser",
            SYS_clone,
            [ns(CLONE_NEWUSER), 0, 0, 0, 0, 0],
        ),
        ("clone_newns", SYS_clone, [ns(CLONE_NEWNS), 0, 0, 0, 0, 0]),
        ("clone_newpid", SYS_clone, [ns(CLONE_NEWPID), 0, 0, 0, 0, 0]),
        ("clone_newnet", SYS_clone, [ns(CLONE_NEWNET), 0, 0, 0, 0, 0]),
        ("clone_plain", SYS_clone, [ns(0), 0, 0, 0, 0, 0]),
        (
            "unshare",
            SYS_unshare,
            [(CLONE_NEWUSER | 1) as usize, 0, 0, 0, 0, 0],
        ),
        ("setns", SYS_setns, [BAD, 0, 0, 0, 0, 0]),
        ("clone3", SYS_clone3, [0, 0, 0, 0, 0, 0]),
        ("fsopen", SYS_fsopen, [0, 0, 0, 0, 0, 0]),
        ("fsconfig", SYS_fsconfig, [BAD, 0, 0, 0, 0, 0]),
        ("fsmount", SYS_fsmount, [BAD, 0, 0, 0, 0, 0]),
        ("fspick", SYS_fspick, [BAD, 0, 0, 0, 0, 0]),
        ("open_tree", SYS_open_tree, [BAD, 0, 0, 0, 0, 0]),
        ("move_mount", SYS_move_mount, [BAD, 0, BAD, 0, 0, 0]),
        ("mount_setattr", SYS_mount_setattr, [BAD, 0, 0, 0, 0, 0]),
        ("mount", SYS_mount, [0, 0, 0, 0, 0, 0]),
        ("umount2", SYS_umount2, [0, 0xffff_ffff, 0, 0, 0, 0]),
        ("pivot_root", SYS_pivot_root, [0, 0, 0, 0, 0, 0]),
        ("chroot", SYS_chroot, [0, 0, 0, 0, 0, 0]),
        ("ptrace", SYS_ptrace, [0x7fff_ffff, 0, 0, 0, 0, 0]),
        (
            "process_vm_readv",
            SYS_process_vm_readv,
            [0, BADPTR, 1, BADPTR, 1, 1],
        ),
        (
            "process_vm_writev",
            SYS_process_vm_writev,
            [0, BADPTR, 1, BADPTR, 1, 1],
        ),
        (
            "perf_event_open",
            SYS_perf_event_open,
            [0, 0, BAD, BAD, 0, 0],
        ),
        ("keyctl", SYS_keyctl, [0x7fff_ffff, 0, 0, 0, 0, 0]),
        ("add_key", SYS_add_key, [0, 0, 0, 0, 0, 0]),
        ("request_key", SYS_request_key, [0, 0, 0, 0, 0, 0]),
        ("bpf", SYS_bpf, [0x7fff_ffff, 0, 0, 0, 0, 0]),
        ("userfaultfd", SYS_userfaultfd, [0xffff_ffff, 0, 0, 0, 0, 0]),
        ("io_uring_setup", SYS_io_uring_setup, [0, 0, 0, 0, 0, 0]),
        ("io_uring_enter", SYS_io_uring_enter, [BAD, 0, 0, 0, 0, 0]),
        (
            "io_uring_register",
            SYS_io_uring_register,
            [BAD, 0, 0, 0, 0, 0],
        ),
        ("kexec_load", SYS_kexec_load, [0, 0, 0, 0xffff_ffff, 0, 0]),
        (
            "kexec_file_load",
            SYS_kexec_file_load,
            [BAD, BAD, 0, 0, 0xffff_ffff, 0],
        ),
        ("init_module", SYS_init_module, [0, 0, 0, 0, 0, 0]),
        ("finit_module", SYS_finit_module, [BAD, 0, 0, 0, 0, 0]),
        ("delete_module", SYS_delete_module, [0, 0, 0, 0, 0, 0]),
        (
            "personality_query",
            SYS_personality,
            [0xffff_ffff, 0, 0, 0, 0, 0],
        ),
        ("personality_bsd", SYS_personality, [0x0006, 0, 0, 0, 0, 0]),
        ("personality_linux", SYS_personality, [0, 0, 0, 0, 0, 0]),
        ("syslog", SYS_syslog, [0xff, 0, 0, 0, 0, 0]),
        ("acct", SYS_acct, [BADPTR, 0, 0, 0, 0, 0]),
        ("quotactl", SYS_quotactl, [0, 0, 0, 0, 0, 0]),
        ("mbind", SYS_mbind, [1, 0, 0, 0, 0, 0]),
        (
            "get_mempolicy",
            SYS_get_mempolicy,
            [0, 0, 0, 0, 0xffff_ffff, 0],
        ),
        ("set_mempolicy", SYS_set_mempolicy, [0xffff, 0, 0, 0, 0, 0]),
        (
            "migrate_pages",
            SYS_migrate_pages,
            [0, 1, BADPTR, BADPTR, 0, 0],
        ),
        (
            "move_pages",
            SYS_move_pages,
            [0, 1, BADPTR, 0, BADPTR, 0xffff_ffff],
        ),
        (
            "name_to_handle_at",
            SYS_name_to_handle_at,
            [BAD, 0, 0, 0, 0, 0],
        ),
        (
            "open_by_handle_at",
            SYS_open_by_handle_at,
            [BAD, 0, 0, 0, 0, 0],
        ),
        ("openat2", SYS_openat2, [BAD, 0, 0, 0, 0, 0]),
        ("swapon", SYS_swapon, [0, 0, 0, 0, 0, 0]),
        ("reboot", SYS_reboot, [0, 0, 0, 0, 0, 0]),
        ("sethostname", SYS_sethostname, [0, 1 << 20, 0, 0, 0, 0]),
        ("fchmod_setuid", SYS_fchmod, [BAD, 0o4755, 0, 0, 0, 0]),
        ("fchmod_setgid", SYS_fchmod, [BAD, 0o2755, 0, 0, 0, 0]),
        ("fchmod_plain", SYS_fchmod, [BAD, 0o755, 0, 0, 0, 0]),
        (
            "fchmodat_setuid",
            SYS_fchmodat,
            [AT_FDCWD as usize, nopath(), 0o4755, 0, 0, 0],
        ),
        (
            "mknodat_setuid",
            SYS_mknodat,
            [
                AT_FDCWD as usize,
                nopath(),
                (S_IFREG | 0o4755) as usize,
                0,
                0,
                0,
            ],
        ),
        (
            "openat_creat_setuid",
            SYS_openat,
            [
                AT_FDCWD as usize,
                nopath(),
                (O_CREAT | O_WRONLY) as usize,
                0o4755,
                0,
                0,
            ],
        ),
        (
            "openat_creat_setgid",
            SYS_openat,
            [
                AT_FDCWD as usize,
                nopath(),
                (O_CREAT | O_WRONLY) as usize,
                0o2755,
                0,
                0,
            ],
        ),
        (
            "openat_creat_plain",
            SYS_openat,
            [
                AT_FDCWD as usize,
                nopath(),
                (O_CREAT | O_WRONLY) as usize,
                0o644,
                0,
                0,
            ],
        ),
        (
            "fchmodat2_setuid",
            452,
            [AT_FDCWD as usize, nopath(), 0o4755, 0, 0, 0],
        ),
        (
            "fchmodat2_plain",
            452,
            [AT_FDCWD as usize, nopath(), 0o644, 0, 0, 0],
        ),
        ("quotactl_fd", SYS_quotactl_fd, [BAD, 0, 0, 0, 0, 0]),
        ("kcmp", SYS_kcmp, [0, 0, 0xff, 0, 0, 0]),
        ("pidfd_getfd", SYS_pidfd_getfd, [BAD, 0, 0, 0, 0, 0]),
        (
            "process_mrelease",
            SYS_process_mrelease,
            [BAD, 0, 0, 0, 0, 0],
        ),
        // Newer than the libc crate's constants on some targets: the numbers are shared by
        // x86_64 and aarch64 (see SYSCALL_NUMBERS in appmgr-sandbox's seccomp.rs).
        ("set_mempolicy_home_node", 450, [0, 0, 0, 1, 0, 0]),
        ("statmount", 457, [BADPTR, BADPTR, 0, 0, 0, 0]),
        ("listmount", 458, [BADPTR, BADPTR, 0, 0, 0, 0]),
        ("lsm_set_self_attr", 460, [0, 0, 0, 1, 0, 0]),
        ("open_tree_attr", 467, [BAD, 0, 0, 0, 0, 0]),
        ("listns", 470, [BADPTR, BADPTR, 0, 0, 0, 0]),
    ];
    #[cfg(target_arch = "x86_64")]
    v.extend([
        ("chmod_setuid", SYS_chmod, [nopath(), 0o4755, 0, 0, 0, 0]),
        (
            "mknod_setuid",
            SYS_mknod,
            [nopath(), (S_IFREG | 0o4755) as usize, 0, 0, 0, 0],
        ),
        (
            "open_creat_setuid",
            SYS_open,
            [nopath(), (O_CREAT | O_WRONLY) as usize, 0o4755, 0, 0, 0],
        ),
        ("creat_setuid", SYS_creat, [nopath(), 0o4755, 0, 0, 0, 0]),
        ("iopl", SYS_iopl, [4, 0, 0, 0, 0, 0]),
        ("modify_ldt", SYS_modify_ldt, [0x7fff, 0, 0, 0, 0, 0]),
    ]);
    // socket(family, invalid type): an allowed family fails with EINVAL (the type is
    // checked first), a blocked one with the filter's EAFNOSUPPORT.
    for (name, fam) in [
        ("socket_unix", AF_UNIX),
        ("socket_inet", AF_INET),
        ("socket_inet6", AF_INET6),
        ("socket_netlink", AF_NETLINK),
        ("socket_packet", AF_PACKET),
        ("socket_key", AF_KEY),
        ("socket_alg", AF_ALG),
        ("socket_vsock", AF_VSOCK),
        ("socket_bluetooth", AF_BLUETOOTH),
        ("socket_can", AF_CAN),
        ("socket_family_200", 200),
    ] {
        v.push((name, SYS_socket, [fam as usize, 15, 0, 0, 0, 0]));
    }
    // Kernel uevents (hotplug): refused with EACCES; other netlink protocols stay (EINVAL
    // for the invalid type, as above).
    v.push((
        "socket_netlink_uevent",
        SYS_socket,
        [
            AF_NETLINK as usize,
            15,
            NETLINK_KOBJECT_UEVENT as usize,
            0,
            0,
            0,
        ],
    ));
    v
}

fn res(r: Result<i64, i32>) -> String {
    match r {
        Ok(_) => "ok".into(),
        Err(e) => errno_name(e),
    }
}

/// `tty`: tries every way out of job control on fd 0 (the caller's terminal when the app
/// runs as a job), prints the errnos on one line, then reads one line from fd 0 and
/// prints `read:LINE`, `read:EOF` or `read-error:ERRNO`.
fn tty_mode() -> i32 {
    use libc::*;
    use std::io::BufRead;
    let pgrp = probe_syscall(SYS_getpgid, [0; 6]).unwrap_or(0) as i32;
    let ldisc: i32 = 0; // N_TTY
    let ioctl =
        |req: c_ulong, arg: usize| res(probe_syscall(SYS_ioctl, [0, req as usize, arg, 0, 0, 0]));
    // (the ioctls before setsid: a successful setsid would leave fd 0 without a session)
    let line = format!(
        "tty tiocspgrp={} tiocnotty={} tiocsctty={} tiocsetd={} setsid={}",
        ioctl(TIOCSPGRP, &pgrp as *const i32 as usize),
        ioctl(TIOCNOTTY, 0),
        ioctl(TIOCSCTTY, 0),
        ioctl(TIOCSETD, &ldisc as *const i32 as usize),
        res(probe_syscall(SYS_setsid, [0; 6])),
    );
    println!("{line}");
    let mut buf = String::new();
    match std::io::stdin().lock().read_line(&mut buf) {
        Ok(0) => println!("read:EOF"),
        Ok(_) => println!("read:{}", buf.trim_end()),
        Err(e) => println!("read-error:{}", errno_name(e.raw_os_error().unwrap_or(0))),
    }
    0
}

fn sockaddr_nl(groups: u32) -> [u8; 12] {
    let mut a = [0u8; 12];
    a[..2].copy_from_slice(&(libc::AF_NETLINK as u16).to_ne_bytes());
    a[8..].copy_from_slice(&groups.to_ne_bytes());
    a
}

/// `uevent SECONDS`: opens a NETLINK_KOBJECT_UEVENT socket, binds it to the kernel's
/// multicast group, prints `uevent socket=… bind=…` and waits up to SECONDS for one
/// uevent: `received:ACTION@DEVPATH` or `received:none`.
fn uevent_mode(secs: i64) -> i32 {
    use libc::*;
    let fd = match probe_syscall(
        SYS_socket,
        [
            AF_NETLINK as usize,
            (SOCK_DGRAM | SOCK_CLOEXEC) as usize,
            NETLINK_KOBJECT_UEVENT as usize,
            0,
            0,
            0,
        ],
    ) {
        Ok(fd) => fd as usize,
        Err(e) => {
            println!("uevent socket={}", errno_name(e));
            return 0;
        }
    };
    let addr = sockaddr_nl(1);
    let bind = probe_syscall(SYS_bind, [fd, addr.as_ptr() as usize, addr.len(), 0, 0, 0]);
    println!("uevent socket=ok bind={}", res(bind));
    let tv = [secs, 0i64];
    let _ = probe_syscall(
        SYS_setsockopt,
        [
            fd,
            SOL_SOCKET as usize,
            SO_RCVTIMEO as usize,
            tv.as_ptr() as usize,
            16,
            0,
        ],
    );
    let mut buf = vec![0u8; 8192];
    match probe_syscall(
        SYS_recvfrom,
        [fd, buf.as_mut_ptr() as usize, buf.len(), 0, 0, 0],
    ) {
        Ok(n) => {
            let msg = &buf[..n as usize];
            let head = msg.split(|b| *b == 0).next().unwrap_or_default();
            println!("received:{}", String::from_utf8_lossy(head));
        }
        Err(e) => println!("received:none ({})", errno_name(e)),
    }
    0
}

/// `netlink-route`: a NETLINK_ROUTE socket asks for the link table (RTM_GETLINK dump) and
/// prints `route socket=… bind=… send=… links=N` (N: RTM_NEWLINK messages received).
/// `net TARGET...`: what the app's network lets it do, one result per target, as JSON:
/// `tcp:HOST:PORT` (connect and read one line: `ok LINE`), `udp:HOST:PORT` (send `ping`,
/// read the answer), `abstract:NAME` (connect to an abstract unix socket), `resolve:NAME`
/// (the addresses the app's resolver gives), `listen:PORT` (print `listening`, then accept
/// one TCP connection within [`LISTEN_WINDOW`] and answer `hello`), `abstract-listen:NAME` (the same on
/// an abstract unix socket), `send:HOST:PORT:MIB` (write MIB MiB, print the rate),
/// `sink:PORT` (print `listening`, read one connection to its end), `links` (the interfaces),
/// `watch:HOST:PORT:SECS` (every 200 ms: look HOST up and connect; the distinct
/// `ADDR=RESULT`s in order, joined by ` | `; ends SECS after the start or once a second
/// address was reached), `sleep:MS` (waits, then `slept`).
/// Failures are errno names or `timeout`.
/// How long the `net` mode's listeners wait for their one connection: long enough for a
/// launch in a loaded, emulated guest.
const LISTEN_WINDOW: std::time::Duration = std::time::Duration::from_secs(60);

fn net_mode(targets: &[String]) -> String {
    use std::io::{BufRead, Write};
    use std::net::{TcpListener, TcpStream, ToSocketAddrs, UdpSocket};
    use std::time::Duration;
    let t = Duration::from_secs(3);
    let err = |e: std::io::Error| match e.kind() {
        std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock => "timeout".to_string(),
        _ => e
            .raw_os_error()
            .map(errno_name)
            .unwrap_or_else(|| e.to_string()),
    };
    let addr = |hp: &str| -> Result<std::net::SocketAddr, String> {
        hp.to_socket_addrs()
            .map_err(|e| format!("resolve: {e}"))?
            .find(|a| a.is_ipv4())
            .ok_or_else(|| "resolve: no address".to_string())
    };
    let mut out = Vec::new();
    for target in targets {
        let r: Result<String, String> = if let Some(hp) = target.strip_prefix("tcp:") {
            addr(hp).and_then(|a| {
                let s = TcpStream::connect_timeout(&a, t).map_err(err)?;
                s.set_read_timeout(Some(t)).map_err(err)?;
                let mut line = String::new();
                std::io::BufReader::new(s)
                    .read_line(&mut line)
                    .map_err(err)?;
                Ok(format!("ok {}", line.trim()))
            })
        } else if let Some(hp) = target.strip_prefix("udp:") {
            addr(hp).and_then(|a| {
                let s = UdpSocket::bind("0.0.0.0:0").map_err(err)?;
                s.set_read_timeout(Some(t)).map_err(err)?;
                s.send_to(b"ping", a).map_err(err)?;
                let mut b = [0u8; 64];
                let n = s.recv(&mut b).map_err(err)?;
                Ok(format!("ok {}", String::from_utf8_lossy(&b[..n]).trim()))
            })
        } else if let Some(name) = target.strip_prefix("abstract:") {
            abstract_connect(name).map(|()| "ok".to_string())
        } else if let Some(name) = target.strip_prefix("resolve:") {
            format!("{name}:0")
                .to_socket_addrs()
                .map(|v| v.map(|a| a.ip().to_string()).collect::<Vec<_>>().join(" "))
                .map_err(|e| format!("resolve: {e}"))
        } else if let Some(port) = target.strip_prefix("listen:") {
            (|| {
                let l = TcpListener::bind(format!("0.0.0.0:{port}")).map_err(err)?;
                println!("listening");
                let _ = std::io::stdout().flush();
                l.set_nonblocking(true).map_err(err)?;
                let deadline = std::time::Instant::now() + LISTEN_WINDOW;
                loop {
                    match l.accept() {
                        Ok((mut s, peer)) => {
                            let _ = s.write_all(b"hello\n");
                            return Ok(format!("accepted {}", peer.ip()));
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                            if std::time::Instant::now() > deadline {
                                return Err("timeout".to_string());
                            }
                            std::thread::sleep(Duration::from_millis(20));
                        }
                        Err(e) => return Err(err(e)),
                    }
                }
            })()
        } else if let Some(name) = target.strip_prefix("abstract-listen:") {
            abstract_listen(name)
        } else if let Some(spec) = target.strip_prefix("send:") {
            // send:HOST:PORT:MIB: write MIB MiB of zeros, report the rate.
            match spec.rsplit_once(':') {
                Some((hp, mib)) => match mib.parse::<u64>() {
                    Ok(mib) => addr(hp).and_then(|a| {
                        let mut s = TcpStream::connect_timeout(&a, t).map_err(err)?;
                        let buf = vec![0u8; 1 << 20];
                        let t0 = std::time::Instant::now();
                        for _ in 0..mib {
                            s.write_all(&buf).map_err(err)?;
                        }
                        s.shutdown(std::net::Shutdown::Write).map_err(err)?;
                        // The sink closes once it has read everything.
                        let mut rest = Vec::new();
                        let _ = std::io::Read::read_to_end(&mut s, &mut rest);
                        let secs = t0.elapsed().as_secs_f64();
                        Ok(format!("{:.1} MiB/s", mib as f64 / secs))
                    }),
                    Err(_) => Err("send:HOST:PORT:MIB".into()),
                },
                None => Err("send:HOST:PORT:MIB".into()),
            }
        } else if let Some(port) = target.strip_prefix("sink:") {
            // sink:PORT: print `listening`, read one connection to its end.
            (|| {
                let l = TcpListener::bind(format!("0.0.0.0:{port}")).map_err(err)?;
                println!("listening");
                let _ = std::io::stdout().flush();
                let (mut s, _) = l.accept().map_err(err)?;
                let n = std::io::copy(&mut s, &mut std::io::sink()).map_err(err)?;
                Ok(format!("read {n}"))
            })()
        } else if let Some(spec) = target.strip_prefix("watch:") {
            match spec.rsplit_once(':').map(|(hp, s)| (hp, s.parse::<u64>())) {
                Some((hp, Ok(secs))) => {
                    let end = std::time::Instant::now() + Duration::from_secs(secs);
                    let mut seen: Vec<String> = Vec::new();
                    let mut first_addr = None;
                    while std::time::Instant::now() < end {
                        let r = match addr(hp) {
                            Ok(a) => {
                                let res = TcpStream::connect_timeout(&a, t)
                                    .and_then(|s| {
                                        s.set_read_timeout(Some(t))?;
                                        let mut line = String::new();
                                        std::io::BufReader::new(s).read_line(&mut line)?;
                                        Ok(format!("ok {}", line.trim()))
                                    })
                                    .unwrap_or_else(err);
                                let ip = a.ip().to_string();
                                let done = res.starts_with("ok ")
                                    && first_addr.get_or_insert_with(|| ip.clone()) != &ip;
                                (format!("{ip}={res}"), done)
                            }
                            Err(e) => (e, false),
                        };
                        if seen.last() != Some(&r.0) {
                            seen.push(r.0);
                        }
                        if r.1 {
                            break;
                        }
                        std::thread::sleep(Duration::from_millis(200));
                    }
                    Ok(seen.join(" | "))
                }
                _ => Err("watch:HOST:PORT:SECS".into()),
            }
        } else if let Some(ms) = target.strip_prefix("sleep:") {
            match ms.parse::<u64>() {
                Ok(ms) => {
                    std::thread::sleep(Duration::from_millis(ms));
                    Ok("slept".into())
                }
                Err(_) => Err("sleep:MS".into()),
            }
        } else if target == "links" {
            Ok(list_dir("/sys/class/net").join(" "))
        } else if target == "inet6" {
            // The interfaces holding an IPv6 address (the last field of each line).
            std::fs::read_to_string("/proc/net/if_inet6")
                .map(|t| {
                    let mut v: Vec<&str> = t
                        .lines()
                        .filter_map(|l| l.split_whitespace().last())
                        .collect();
                    v.sort();
                    v.dedup();
                    v.join(" ")
                })
                .map_err(err)
        } else {
            Err("unknown target".into())
        };
        out.push((target.clone(), esc(&r.unwrap_or_else(|e| e))));
    }
    obj(&out)
}

/// Listens on the abstract address `name`, prints `listening`, and accepts one connection
/// within [`LISTEN_WINDOW`].
fn abstract_listen(name: &str) -> Result<String, String> {
    use rustix::net::{
        bind, listen, socket_with, AddressFamily, SocketAddrUnix, SocketFlags, SocketType,
    };
    use std::io::Write;
    let e = |e: rustix::io::Errno| errno_name(e.raw_os_error());
    let fd = socket_with(
        AddressFamily::UNIX,
        SocketType::STREAM,
        SocketFlags::CLOEXEC | SocketFlags::NONBLOCK,
        None,
    )
    .map_err(e)?;
    let a = SocketAddrUnix::new_abstract_name(name.as_bytes()).map_err(e)?;
    bind(&fd, &a).map_err(e)?;
    listen(&fd, 4).map_err(e)?;
    println!("listening");
    let _ = std::io::stdout().flush();
    let deadline = std::time::Instant::now() + LISTEN_WINDOW;
    loop {
        match rustix::net::accept(&fd) {
            Ok(_) => return Ok("accepted".into()),
            Err(rustix::io::Errno::AGAIN) if std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(20))
            }
            Err(rustix::io::Errno::AGAIN) => return Err("timeout".into()),
            Err(x) => return Err(e(x)),
        }
    }
}

/// Connects a unix stream socket to the abstract address `name`.
fn abstract_connect(name: &str) -> Result<(), String> {
    use rustix::net::{
        connect, socket_with, AddressFamily, SocketAddrUnix, SocketFlags, SocketType,
    };
    let fd = socket_with(
        AddressFamily::UNIX,
        SocketType::STREAM,
        SocketFlags::CLOEXEC,
        None,
    )
    .map_err(|e| errno_name(e.raw_os_error()))?;
    let a = SocketAddrUnix::new_abstract_name(name.as_bytes())
        .map_err(|e| errno_name(e.raw_os_error()))?;
    connect(&fd, &a).map_err(|e| errno_name(e.raw_os_error()))
}

fn netlink_route_mode() -> i32 {
    use libc::*;
    let fd = match probe_syscall(
        SYS_socket,
        [
            AF_NETLINK as usize,
            (SOCK_RAW | SOCK_CLOEXEC) as usize,
            NETLINK_ROUTE as usize,
            0,
            0,
            0,
        ],
    ) {
        Ok(fd) => fd as usize,
        Err(e) => {
            println!("route socket={}", errno_name(e));
            return 0;
        }
    };
    let addr = sockaddr_nl(0);
    let bind = res(probe_syscall(
        SYS_bind,
        [fd, addr.as_ptr() as usize, addr.len(), 0, 0, 0],
    ));
    // nlmsghdr (len, type, flags, seq, pid) + ifinfomsg (16 zero bytes: AF_UNSPEC, all).
    let mut req = Vec::with_capacity(32);
    req.extend_from_slice(&32u32.to_ne_bytes());
    req.extend_from_slice(&RTM_GETLINK.to_ne_bytes());
    req.extend_from_slice(&((NLM_F_REQUEST | NLM_F_DUMP) as u16).to_ne_bytes());
    req.extend_from_slice(&1u32.to_ne_bytes());
    req.extend_from_slice(&0u32.to_ne_bytes());
    req.extend_from_slice(&[0u8; 16]);
    let send = res(probe_syscall(
        SYS_sendto,
        [fd, req.as_ptr() as usize, req.len(), 0, 0, 0],
    ));
    let mut links = 0;
    let mut buf = vec![0u8; 32768];
    'recv: for _ in 0..64 {
        let Ok(n) = probe_syscall(
            SYS_recvfrom,
            [fd, buf.as_mut_ptr() as usize, buf.len(), 0, 0, 0],
        ) else {
            break;
        };
        let mut msg = &buf[..n as usize];
        while msg.len() >= 16 {
            let len = u32::from_ne_bytes(msg[..4].try_into().unwrap()) as usize;
            let ty = u16::from_ne_bytes(msg[4..6].try_into().unwrap());
            if ty == NLMSG_DONE as u16 || ty == NLMSG_ERROR as u16 || len < 16 {
                break 'recv;
            }
            if ty == RTM_NEWLINK {
                links += 1;
            }
            msg = &msg[((len + 3) & !3).min(msg.len())..];
        }
    }
    println!("route socket=ok bind={bind} send={send} links={links}");
    0
}

fn syscalls() -> String {
    let mut out = Vec::new();
    for (name, nr, args) in battery() {
        let r = match probe_syscall(nr, args) {
            Ok(v) => {
                // A call that unexpectedly succeeded and returned an fd: close it.
                if name.starts_with("socket") || name.starts_with("open") {
                    let _ = probe_syscall(libc::SYS_close, [v as usize, 0, 0, 0, 0, 0]);
                }
                "ok".to_string()
            }
            Err(e) => errno_name(e),
        };
        out.push((name.to_string(), esc(&r)));
    }
    obj(&out)
}

fn read(p: &str) -> String {
    std::fs::read_to_string(p).unwrap_or_default()
}

fn status() -> String {
    let s = read("/proc/self/status");
    let mut out = Vec::new();
    for line in s.lines() {
        if let Some((k, v)) = line.split_once(':') {
            if [
                "Uid",
                "Gid",
                "Groups",
                "CapInh",
                "CapPrm",
                "CapEff",
                "CapBnd",
                "CapAmb",
                "NoNewPrivs",
                "Seccomp",
                "Seccomp_filters",
                "NSpid",
            ]
            .contains(&k)
            {
                out.push((k.to_string(), esc(v.trim())));
            }
        }
    }
    obj(&out)
}

fn namespaces() -> String {
    let mut out = Vec::new();
    for n in ["mnt", "pid", "net", "ipc", "uts", "cgroup", "user", "time"] {
        let t = std::fs::read_link(format!("/proc/self/ns/{n}"))
            .map(|p| p.display().to_string())
            .unwrap_or_default();
        out.push((n.to_string(), esc(&t)));
    }
    obj(&out)
}

fn list_dir(p: &str) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(p)
        .map(|rd| {
            rd.flatten()
                .filter_map(|e| e.file_name().into_string().ok())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

fn fds() -> String {
    // The directory being read is itself an open fd; it is reported with its target so
    // the reader can discount it.
    let mut out = Vec::new();
    for n in list_dir("/proc/self/fd") {
        let t = std::fs::read_link(format!("/proc/self/fd/{n}"))
            .map(|p| p.display().to_string())
            .unwrap_or_else(|_| "(closed)".into());
        out.push((n, esc(&t)));
    }
    obj(&out)
}

fn try_write(path: &str) -> String {
    match std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
    {
        Ok(_) => {
            let _ = std::fs::remove_file(path);
            "ok".into()
        }
        Err(e) => errno_name(e.raw_os_error().unwrap_or(0)),
    }
}

fn writes() -> String {
    let mut out = Vec::new();
    for p in [
        "/usr/probe-write",
        "/app/probe-write",
        "/sys/kernel/probe-write",
        "/proc/sys/kernel/hostname",
        "/proc/sysrq-trigger",
        "/probe-write",
        "/etc/probe-write",
        "/etc/passwd",
        "/dev/probe-write",
        "/tmp/probe-write",
        "/home/app/probe-write",
    ] {
        out.push((p.to_string(), esc(&try_write(p))));
    }
    obj(&out)
}

fn interfaces() -> Vec<String> {
    read("/proc/net/dev")
        .lines()
        .skip(2)
        .filter_map(|l| l.split(':').next())
        .map(|s| s.trim().to_string())
        .collect()
}

fn kill_signal_test() -> String {
    // Signalling pid 1 of the sandbox (init) and a pid outside (there is none visible):
    // ESRCH for pids that do not exist in this namespace.
    let r = probe_syscall(libc::SYS_kill, [99999, 0, 0, 0, 0, 0]);
    match r {
        Ok(_) => "ok".into(),
        Err(e) => errno_name(e),
    }
}

/// The full report as a JSON object.
pub fn report(args: &[String]) -> String {
    obj(&report_fields(args))
}

fn report_fields(args: &[String]) -> Vec<(String, String)> {
    let pids: Vec<String> = list_dir("/proc")
        .into_iter()
        .filter(|n| n.bytes().all(|b| b.is_ascii_digit()))
        .collect();
    let mounts: Vec<String> = read("/proc/self/mounts")
        .lines()
        .map(String::from)
        .collect();
    let env: Vec<String> = std::env::vars_os()
        .map(|(k, v)| format!("{}={}", k.to_string_lossy(), v.to_string_lossy()))
        .collect();
    let fields: Vec<(String, String)> = vec![
        ("pid".into(), std::process::id().to_string()),
        ("status".into(), status()),
        ("namespaces".into(), namespaces()),
        ("mounts".into(), arr(&mounts)),
        ("pids".into(), arr(&pids)),
        ("fds".into(), fds()),
        ("interfaces".into(), arr(&interfaces())),
        ("writes".into(), writes()),
        ("syscalls".into(), syscalls()),
        ("kill_outside".into(), esc(&kill_signal_test())),
        ("env".into(), arr(&env)),
        ("argv".into(), arr(args)),
        (
            "cwd".into(),
            esc(&std::env::current_dir()
                .map(|p| p.display().to_string())
                .unwrap_or_default()),
        ),
        (
            "hostname".into(),
            esc(read("/proc/sys/kernel/hostname").trim()),
        ),
        ("cgroup".into(), esc(&read("/proc/self/cgroup"))),
        (
            "lo_flags".into(),
            esc(read("/sys/class/net/lo/flags").trim()),
        ),
        ("root_entries".into(), arr(&list_dir("/"))),
        ("dev_entries".into(), arr(&list_dir("/dev"))),
        ("etc_entries".into(), arr(&list_dir("/etc"))),
        ("passwd".into(), esc(&read("/etc/passwd"))),
    ];
    fields
}

/// Entry point; returns the exit status.
pub fn run(args: &[String]) -> i32 {
    match args.get(1).map(String::as_str) {
        None | Some("report") => {
            println!("{}", report(args));
            0
        }
        Some("load-filter") => {
            let Some(bpf) = args.get(2).and_then(|p| std::fs::read(p).ok()) else {
                eprintln!("appmgr-probe: load-filter FILE: cannot read FILE");
                return 2;
            };
            // PR_SET_NO_NEW_PRIVS = 38
            if let Err(e) = probe_syscall(libc::SYS_prctl, [38, 1, 0, 0, 0, 0]) {
                eprintln!("appmgr-probe: no_new_privs: {}", errno_name(e));
                return 1;
            }
            if let Err(e) = appmgr_sandbox::sys::seccomp_set_filter(&bpf) {
                eprintln!("appmgr-probe: load filter: {e}");
                return 1;
            }
            println!("{}", report(args));
            0
        }
        #[cfg(target_arch = "x86_64")]
        Some("int80") => {
            let r = appmgr_sandbox::sys::probe_int80_getpid();
            println!("survived int80: {r}");
            0
        }
        #[cfg(target_arch = "x86_64")]
        Some("x32") => {
            let r = probe_syscall(0x4000_0000 | libc::SYS_getpid, [0; 6]);
            println!("survived x32: {r:?}");
            0
        }
        Some("write") => {
            let out: Vec<(String, String)> = args[2..]
                .iter()
                .map(|p| (p.clone(), esc(&try_write(p))))
                .collect();
            println!("{}", obj(&out));
            0
        }
        Some("observe") => {
            println!("{}", crate::observe::observe(args));
            0
        }
        Some("bus-serve") => crate::observe::bus_serve(&args[2..]),
        Some("portal") => crate::portal::run(&args[2..]),
        Some("tty") => tty_mode(),
        Some("uevent") => uevent_mode(args.get(2).and_then(|s| s.parse().ok()).unwrap_or(5)),
        Some("netlink-route") => netlink_route_mode(),
        Some("net") => {
            println!("{}", net_mode(&args[2..]));
            0
        }
        Some("sleep") => {
            println!("ready");
            loop {
                std::thread::sleep(std::time::Duration::from_secs(3600));
            }
        }
        Some(_) => {
            // Anything else: print argv as JSON (argument passing test).
            println!("{}", obj(&[("argv".into(), arr(args))]));
            0
        }
    }
}

/// The real uid, from `/proc/self/status`.
fn own_uid() -> u32 {
    read("/proc/self/status")
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(u32::MAX)
}
