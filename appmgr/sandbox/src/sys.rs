//! The only module of appmgr allowed to use `unsafe`: thin wrappers over the few
//! syscalls that `rustix` does not wrap safely (fork, signal masks, execve, seccomp
//! loading, the cgroup device program's `bpf(2)` load and attach, close_range, the
//! interface-flags, loop-device and DRM-version ioctls) and the raw-syscall entry the probe uses, and
//! (in [`nftlib`]) libnftables loaded with `dlopen`. Every block says why it is sound;
//! callers get safe functions.
#![allow(unsafe_code)]

#[path = "nftlib.rs"]
pub mod nftlib;

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;

fn cvt(r: libc::c_int) -> io::Result<libc::c_int> {
    if r == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// `fork()`. Returns `None` in the child.
///
/// Only called by the launcher, which never starts a thread, and by `appmgr run` before
/// it becomes the launcher (before it started any thread), so the child inherits a
/// consistent address space (no lock held by a vanished thread).
pub fn fork() -> io::Result<Option<libc::pid_t>> {
    // SAFETY: fork has no memory-safety preconditions for a single-threaded process; the
    // launcher is single-threaded by construction (no threads are ever spawned in it),
    // and so is `appmgr run` up to its exec of the launcher.
    let pid = unsafe { libc::fork() };
    match pid {
        -1 => Err(io::Error::last_os_error()),
        0 => Ok(None),
        p => Ok(Some(p)),
    }
}

/// `_exit(2)`: ends a forked child at once, without running the parent's exit handlers
/// or flushing its buffers a second time.
pub fn exit_now(code: i32) -> ! {
    // SAFETY: _exit takes an int and never returns; it touches no memory of ours.
    unsafe { libc::_exit(code) }
}

/// `clone3(CLONE_PARENT | CLONE_PIDFD)`: like [`fork`], but the child's parent is the
/// caller's parent (the caller may exit at once and the child stays a direct child of the
/// grandparent, which reaps it). Returns `None` in the child, `(pid, pidfd)` in the caller.
/// Linux 5.3. The calling process must not be a pid namespace's init (EINVAL).
///
/// Only called by the single-threaded launcher, like [`fork`].
pub fn clone_sibling() -> io::Result<Option<(libc::pid_t, OwnedFd)>> {
    /// `struct clone_args` up to `tls` (CLONE_ARGS_SIZE_VER0, 64 bytes).
    #[repr(C)]
    struct CloneArgs {
        flags: u64,
        pidfd: u64,
        child_tid: u64,
        parent_tid: u64,
        exit_signal: u64,
        stack: u64,
        stack_size: u64,
        tls: u64,
    }
    let mut pidfd: libc::c_int = -1;
    let args = CloneArgs {
        flags: (libc::CLONE_PARENT | libc::CLONE_PIDFD) as u64,
        pidfd: &mut pidfd as *mut libc::c_int as u64,
        child_tid: 0,
        parent_tid: 0,
        // Must be 0 with CLONE_PARENT: the child inherits the caller's own exit signal
        // (SIGCHLD for a process started by fork/posix_spawn).
        exit_signal: 0,
        stack: 0,
        stack_size: 0,
        tls: 0,
    };
    // SAFETY: without CLONE_VM and with no stack the child gets a copy of the address space
    // and continues here, exactly like fork(); the process is single-threaded, so no lock
    // is held by another thread. `args` and `pidfd` are valid for the call (the kernel
    // writes the pidfd number into `pidfd` in the parent only). libc's fork-time
    // bookkeeping is skipped: the launcher registers no atfork handlers and its child only
    // makes plain syscalls and forks the app with libc's fork.
    let r = unsafe {
        libc::syscall(
            libc::SYS_clone3,
            &args as *const CloneArgs,
            std::mem::size_of::<CloneArgs>(),
        )
    };
    match r {
        -1 => Err(io::Error::last_os_error()),
        0 => Ok(None),
        p => {
            // SAFETY: CLONE_PIDFD made the kernel store a new descriptor, owned by nothing
            // else, in `pidfd`.
            let fd = unsafe { OwnedFd::from_raw_fd(pidfd) };
            Ok(Some((p as libc::pid_t, fd)))
        }
    }
}

/// Blocks until `fd` is readable (for a pidfd: the process has exited).
pub fn wait_readable(fd: std::os::fd::BorrowedFd<'_>) -> io::Result<()> {
    wait_readable_within(fd, None).map(drop)
}

/// [`wait_readable`], giving up after `limit` (`None`: never); `Ok(false)` on timeout.
pub fn wait_readable_within(
    fd: std::os::fd::BorrowedFd<'_>,
    limit: Option<std::time::Duration>,
) -> io::Result<bool> {
    use std::os::fd::AsRawFd;
    let deadline = limit.map(|l| std::time::Instant::now() + l);
    let mut p = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    loop {
        let ms = match deadline {
            None => -1,
            Some(d) => {
                let left = d.saturating_duration_since(std::time::Instant::now());
                // Rounded up, so a wait never ends before its deadline.
                left.as_micros().div_ceil(1000).min(i32::MAX as u128) as i32
            }
        };
        // SAFETY: `p` is one valid pollfd for the call.
        let r = unsafe { libc::poll(&mut p, 1, ms) };
        match r {
            0 => return Ok(false),
            r if r > 0 => return Ok(true),
            _ => {}
        }
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EINTR) {
            return Err(e);
        }
    }
}

/// Writes all of `buf` to `fd` (a pipe), retrying short writes and EINTR.
pub fn write_all(fd: &OwnedFd, mut buf: &[u8]) -> io::Result<()> {
    while !buf.is_empty() {
        match rustix::io::write(fd, buf) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => buf = &buf[n..],
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// Reads `fd` (a pipe) to its end.
pub fn read_to_end(fd: &OwnedFd) -> io::Result<Vec<u8>> {
    read_to_end_within(fd, None)?.ok_or_else(|| io::ErrorKind::TimedOut.into())
}

/// [`read_to_end`], giving up after `limit` (`None`: never); `Ok(None)` on timeout, with
/// what was read lost.
pub fn read_to_end_within(
    fd: &OwnedFd,
    limit: Option<std::time::Duration>,
) -> io::Result<Option<Vec<u8>>> {
    use std::os::fd::AsFd;
    let deadline = limit.map(|l| std::time::Instant::now() + l);
    let mut out = Vec::new();
    let mut buf = [0u8; 512];
    loop {
        if let Some(d) = deadline {
            let left = d.saturating_duration_since(std::time::Instant::now());
            if !wait_readable_within(fd.as_fd(), Some(left))? {
                return Ok(None);
            }
        }
        match rustix::io::read(fd, &mut buf) {
            Ok(0) => return Ok(Some(out)),
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
}

fn sigset(signals: &[i32]) -> libc::sigset_t {
    // SAFETY: sigset_t is plain data; sigemptyset initialises it fully before use.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a valid, writable sigset_t.
    unsafe { libc::sigemptyset(&mut set) };
    for s in signals {
        // SAFETY: `set` is initialised; an invalid signal number only returns EINVAL.
        unsafe { libc::sigaddset(&mut set, *s) };
    }
    set
}

/// Blocks `signals` for the calling (only) thread, so they stay pending for [`sigwait`].
pub fn block_signals(signals: &[i32]) -> io::Result<()> {
    let set = sigset(signals);
    // SAFETY: `set` is a valid sigset_t; a null old-set pointer is allowed.
    cvt(unsafe { libc::sigprocmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) }).map(|_| ())
}

/// Unblocks every signal (the mask is inherited across execve, so the app must not start
/// with the launcher's mask).
pub fn unblock_all_signals() -> io::Result<()> {
    let set = sigset(&[]);
    // SAFETY: `set` is a valid (empty) sigset_t; a null old-set pointer is allowed.
    cvt(unsafe { libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut()) }).map(|_| ())
}

/// Resets every ignored signal to its default action. `execve` keeps `SIG_IGN` (handlers
/// are reset anyway), and the Rust runtime ignores SIGPIPE in the launcher, which the app
/// must not inherit (a writer to a closed pipe would get EPIPE instead of dying).
pub fn default_signal_dispositions() {
    for sig in 1..libc::SIGRTMIN() {
        if sig == libc::SIGKILL || sig == libc::SIGSTOP {
            continue;
        }
        // SAFETY: SIG_DFL installs no handler, so no code of ours can run asynchronously;
        // numbers the kernel or libc reserve only return EINVAL, which is ignored.
        unsafe { libc::signal(sig, libc::SIG_DFL) };
    }
}

/// A signal taken by [`sigwait`] or [`sigwait_timeout`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caught {
    pub sig: i32,
    /// The kernel sent it itself (`SI_KERNEL`): a terminal's INTR, QUIT, SUSP or WINCH,
    /// or its hangup, which go to the whole foreground process group at once.
    pub from_kernel: bool,
}

fn caught(r: libc::c_int, info: &libc::siginfo_t) -> Caught {
    Caught {
        sig: r,
        from_kernel: info.si_code == libc::SI_KERNEL,
    }
}

/// Waits for one of `signals` (which must be blocked) and returns it.
pub fn sigwait(signals: &[i32]) -> io::Result<Caught> {
    let set = sigset(signals);
    loop {
        // SAFETY: all-zero bytes are a valid siginfo_t (plain integers and a union).
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: `set` and `info` are valid for the call.
        let r = unsafe { libc::sigwaitinfo(&set, &mut info) };
        if r >= 0 {
            return Ok(caught(r, &info));
        }
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EINTR) {
            return Err(e);
        }
    }
}

/// Like [`sigwait`], but gives up after `timeout`; `Ok(None)` on timeout.
pub fn sigwait_timeout(
    signals: &[i32],
    timeout: std::time::Duration,
) -> io::Result<Option<Caught>> {
    let set = sigset(signals);
    let ts = libc::timespec {
        tv_sec: timeout.as_secs() as libc::time_t,
        tv_nsec: timeout.subsec_nanos() as libc::c_long,
    };
    loop {
        // SAFETY: all-zero bytes are a valid siginfo_t (plain integers and a union).
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: `set`, `info` and `ts` are valid for the call.
        let r = unsafe { libc::sigtimedwait(&set, &mut info, &ts) };
        if r >= 0 {
            return Ok(Some(caught(r, &info)));
        }
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::EAGAIN) => return Ok(None),
            Some(libc::EINTR) => continue,
            _ => return Err(e),
        }
    }
}

/// `dup2(old, new)` onto one of the standard streams (0, 1, 2), which no Rust object
/// owns in the launcher. The new descriptor is not close-on-exec.
pub fn dup2_std(old: std::os::fd::BorrowedFd<'_>, new: RawFd) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    if !(0..=2).contains(&new) {
        return Err(io::Error::from_raw_os_error(libc::EBADF));
    }
    // SAFETY: `old` is a valid descriptor for the call; `new` is 0, 1 or 2, which the
    // process uses only as its standard streams, so replacing it invalidates no owner.
    cvt(unsafe { libc::dup2(old.as_raw_fd(), new) }).map(|_| ())
}

/// `kill(pid, sig)`.
pub fn kill(pid: libc::pid_t, sig: i32) -> io::Result<()> {
    // SAFETY: kill takes plain integers and has no memory effects in this process.
    cvt(unsafe { libc::kill(pid, sig) }).map(|_| ())
}

/// `waitpid(pid, WNOHANG)`; `Ok(None)` when nothing has exited. Returns the raw status.
pub fn waitpid_nohang(pid: libc::pid_t) -> io::Result<Option<(libc::pid_t, i32)>> {
    let mut status = 0;
    // SAFETY: `status` is a valid, writable int.
    let r = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
    match r {
        -1 => Err(io::Error::last_os_error()),
        0 => Ok(None),
        p => Ok(Some((p, status))),
    }
}

/// `unshare(flags)`. The launcher is single-threaded, so no other thread can observe the
/// changed fd table or namespaces (the reason rustix marks it unsafe).
pub fn unshare(flags: libc::c_int) -> io::Result<()> {
    // SAFETY: plain integer argument; the process has a single thread (see above).
    cvt(unsafe { libc::unshare(flags) }).map(|_| ())
}

/// Drops every capability from the bounding set (needs CAP_SETPCAP, i.e. root).
pub fn drop_bounding_set() -> io::Result<()> {
    for cap in 0..64 {
        // SAFETY: prctl(PR_CAPBSET_DROP, cap) takes integers only.
        let r = unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0) };
        if r == -1 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::EINVAL) {
                // Past the kernel's last capability.
                return Ok(());
            }
            return Err(e);
        }
    }
    Ok(())
}

/// Installs a classic-BPF seccomp program (as exported by libseccomp). no_new_privs must
/// already be set.
pub fn seccomp_set_filter(bpf: &[u8]) -> io::Result<()> {
    if bpf.is_empty() || !bpf.chunks_exact(8).remainder().is_empty() {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    }
    // Copy into properly aligned storage: the byte buffer has alignment 1.
    let n = bpf.len() / std::mem::size_of::<libc::sock_filter>();
    let insns: Vec<libc::sock_filter> = bpf
        .chunks_exact(8)
        .map(|c| libc::sock_filter {
            code: u16::from_ne_bytes([c[0], c[1]]),
            jt: c[2],
            jf: c[3],
            k: u32::from_ne_bytes([c[4], c[5], c[6], c[7]]),
        })
        .collect();
    let prog = libc::sock_fprog {
        len: n as libc::c_ushort,
        filter: insns.as_ptr() as *mut libc::sock_filter,
    };
    // SAFETY: `prog` points at `n` initialised instructions that outlive the call; the
    // kernel copies the program.
    let r = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER,
            0,
            &prog as *const libc::sock_fprog,
        )
    };
    if r == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// `union bpf_attr` for `BPF_PROG_LOAD`, up to `expected_attach_type` (the kernel accepts a
/// shorter attr and treats the rest as zero).
#[repr(C)]
#[derive(Default)]
struct BpfProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    prog_ifindex: u32,
    expected_attach_type: u32,
}

/// `union bpf_attr` for `BPF_PROG_ATTACH`.
#[repr(C)]
struct BpfAttachAttr {
    target_fd: u32,
    attach_bpf_fd: u32,
    attach_type: u32,
    attach_flags: u32,
    replace_bpf_fd: u32,
}

const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_PROG_ATTACH: libc::c_long = 8;
const BPF_PROG_TYPE_CGROUP_DEVICE: u32 = 15;
const BPF_CGROUP_DEVICE: u32 = 6;
const BPF_F_ALLOW_MULTI: u32 = 2;

fn bpf(cmd: libc::c_long, attr: *const u8, size: usize) -> io::Result<libc::c_long> {
    // SAFETY: `attr` points at a live, initialised `repr(C)` attr of `size` bytes (the
    // callers below); the kernel copies it and reads the buffers it names, which the
    // callers keep alive across the call.
    let r = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr, size as libc::c_uint) };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// Loads a `BPF_PROG_TYPE_CGROUP_DEVICE` program (eBPF instructions, one `u64` each) and
/// attaches it to the cgroup v2 directory `cgroup` with `BPF_F_ALLOW_MULTI` (programs of
/// ancestors still run; every one must allow an access). The attachment holds the
/// program until the cgroup is removed. On a verifier rejection the error carries the
/// verifier's log.
pub fn attach_cgroup_device_program(cgroup: &Path, insns: &[u64]) -> io::Result<()> {
    if insns.is_empty() || insns.len() > 4096 {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    }
    let dir = rustix::fs::open(
        cgroup,
        rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::DIRECTORY | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    )
    .map_err(|e| io::Error::from_raw_os_error(e.raw_os_error()))?;
    let license = c"GPL";
    let mut log = vec![0u8; 0];
    let load = |log: &mut Vec<u8>| {
        let attr = BpfProgLoadAttr {
            prog_type: BPF_PROG_TYPE_CGROUP_DEVICE,
            insn_cnt: insns.len() as u32,
            insns: insns.as_ptr() as u64,
            license: license.as_ptr() as u64,
            log_level: u32::from(!log.is_empty()),
            log_size: log.len() as u32,
            log_buf: if log.is_empty() {
                0
            } else {
                log.as_mut_ptr() as u64
            },
            ..Default::default()
        };
        bpf(
            BPF_PROG_LOAD,
            (&attr as *const BpfProgLoadAttr).cast(),
            std::mem::size_of::<BpfProgLoadAttr>(),
        )
    };
    let prog = match load(&mut log) {
        Ok(fd) => fd,
        Err(e) => {
            // Once more with the verifier's log, for a message that says why.
            log = vec![0u8; 16 * 1024];
            let _ = load(&mut log);
            let text = String::from_utf8_lossy(&log);
            let text = text.trim_end_matches('\0').trim();
            let last = text.lines().last().unwrap_or("");
            return Err(io::Error::new(
                e.kind(),
                format!("loading the device program: {e}: {last}"),
            ));
        }
    };
    // SAFETY: a successful BPF_PROG_LOAD returns a new file descriptor that we own.
    let prog = unsafe { OwnedFd::from_raw_fd(prog as RawFd) };
    let attr = BpfAttachAttr {
        target_fd: dir.as_raw_fd() as u32,
        attach_bpf_fd: prog.as_raw_fd() as u32,
        attach_type: BPF_CGROUP_DEVICE,
        attach_flags: BPF_F_ALLOW_MULTI,
        replace_bpf_fd: 0,
    };
    bpf(
        BPF_PROG_ATTACH,
        (&attr as *const BpfAttachAttr).cast(),
        std::mem::size_of::<BpfAttachAttr>(),
    )
    .map(drop)
}

/// Closes every fd from `first` up (close_range, Linux 5.9), except those in `keep`.
/// Called right before execve (the app) or in a child that owns nothing else (the
/// launcher's name keeper).
pub fn close_fds_from(first: u32, keep: &[RawFd]) -> io::Result<()> {
    let close = |lo: u32, hi: u32| {
        if lo > hi {
            return Ok(());
        }
        // SAFETY: the caller only execs or exits afterwards and uses no Rust object owning
        // one of these fds, except those in `keep`, which are left open.
        let r = unsafe { libc::syscall(libc::SYS_close_range, lo, hi, 0) };
        if r == -1 {
            Err(io::Error::last_os_error())
        } else {
            Ok(())
        }
    };
    let mut kept: Vec<u32> = keep
        .iter()
        .filter_map(|k| u32::try_from(*k).ok())
        .filter(|k| *k >= first)
        .collect();
    kept.sort_unstable();
    kept.dedup();
    let mut lo = first;
    for k in kept {
        if k > lo {
            close(lo, k - 1)?;
        }
        match k.checked_add(1) {
            Some(n) => lo = n,
            None => return Ok(()),
        }
    }
    close(lo, u32::MAX)
}

/// `execve`. Returns only on failure.
pub fn execve(path: &str, argv: &[String], env: &[(String, String)]) -> io::Error {
    let to_c = |s: &str| CString::new(s).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL));
    let build = || -> io::Result<(CString, Vec<CString>, Vec<CString>)> {
        let p = to_c(path)?;
        let a = argv
            .iter()
            .map(|s| to_c(s))
            .collect::<io::Result<Vec<_>>>()?;
        let e = env
            .iter()
            .map(|(k, v)| to_c(&format!("{k}={v}")))
            .collect::<io::Result<Vec<_>>>()?;
        Ok((p, a, e))
    };
    let (p, a, e) = match build() {
        Ok(x) => x,
        Err(e) => return e,
    };
    let mut ap: Vec<*const libc::c_char> = a.iter().map(|c| c.as_ptr()).collect();
    ap.push(std::ptr::null());
    let mut ep: Vec<*const libc::c_char> = e.iter().map(|c| c.as_ptr()).collect();
    ep.push(std::ptr::null());
    // SAFETY: all pointers point into CStrings alive for the call; both arrays are
    // NULL-terminated.
    unsafe { libc::execve(p.as_ptr(), ap.as_ptr(), ep.as_ptr()) };
    io::Error::last_os_error()
}

/// A socket for the classic interface ioctls (`SIOCSIFFLAGS`, `SIOCSIFADDR`, ...).
fn ioctl_socket() -> io::Result<OwnedFd> {
    // SAFETY: plain integer arguments.
    let sock =
        cvt(unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) })?;
    // SAFETY: `sock` was just returned by socket() and is owned by nothing else.
    Ok(unsafe { OwnedFd::from_raw_fd(sock) })
}

/// An all-zero `ifreq` naming interface `name` (the caller checked its length).
fn ifreq_named(name: &str) -> libc::ifreq {
    // SAFETY: ifreq is plain data; all-zero is a valid value.
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, s) in ifr.ifr_name.iter_mut().zip(name.bytes()) {
        *d = s as libc::c_char;
    }
    ifr
}

/// Brings `lo` up in the current network namespace.
pub fn loopback_up() -> io::Result<()> {
    let guard = ioctl_socket()?;
    let sock = guard.as_raw_fd();
    let mut ifr = ifreq_named("lo");
    ifr.ifr_ifru.ifru_flags = (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
    // SAFETY: SIOCSIFFLAGS reads an ifreq, which `ifr` is, valid for the call.
    cvt(unsafe { libc::ioctl(sock, libc::SIOCSIFFLAGS, &mut ifr) }).map(|_| ())
}

/// `struct rtentry` of `<linux/route.h>` (`SIOCADDRT`).
#[repr(C)]
struct RtEntry {
    rt_pad1: libc::c_ulong,
    rt_dst: libc::sockaddr,
    rt_gateway: libc::sockaddr,
    rt_genmask: libc::sockaddr,
    rt_flags: libc::c_ushort,
    rt_pad2: libc::c_short,
    rt_pad3: libc::c_ulong,
    rt_pad4: *mut libc::c_void,
    rt_metric: libc::c_short,
    rt_dev: *mut libc::c_char,
    rt_mtu: libc::c_ulong,
    rt_window: libc::c_ulong,
    rt_irtt: libc::c_ushort,
}

const RTF_UP: libc::c_ushort = 0x1;
const RTF_GATEWAY: libc::c_ushort = 0x2;

fn sockaddr_v4(a: std::net::Ipv4Addr) -> libc::sockaddr {
    let sin = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: 0,
        sin_addr: libc::in_addr {
            s_addr: u32::from(a).to_be(),
        },
        sin_zero: [0; 8],
    };
    // SAFETY: sockaddr_in and sockaddr have the same size (16 bytes) and sockaddr is plain
    // data; this is the conversion the socket API is designed around.
    unsafe { std::mem::transmute::<libc::sockaddr_in, libc::sockaddr>(sin) }
}

/// Configures interface `name` of the current network namespace: IPv4 address `addr`
/// with `prefix`, up, and (with `gateway`) the default route via it (classic ioctls, no
/// netlink).
pub fn configure_if(
    name: &str,
    addr: std::net::Ipv4Addr,
    prefix: u8,
    gateway: Option<std::net::Ipv4Addr>,
) -> io::Result<()> {
    if name.len() >= libc::IFNAMSIZ || prefix == 0 || prefix > 32 {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    }
    let guard = ioctl_socket()?;
    let sock = guard.as_raw_fd();
    let ifreq = || ifreq_named(name);
    let mut ifr = ifreq();
    ifr.ifr_ifru.ifru_addr = sockaddr_v4(addr);
    // SAFETY: SIOCSIFADDR reads an ifreq, which `ifr` is, valid for the call.
    cvt(unsafe { libc::ioctl(sock, libc::SIOCSIFADDR as _, &mut ifr) })?;
    let mask = std::net::Ipv4Addr::from(u32::MAX << (32 - u32::from(prefix)));
    let mut ifr = ifreq();
    ifr.ifr_ifru.ifru_netmask = sockaddr_v4(mask);
    // SAFETY: as above (SIOCSIFNETMASK).
    cvt(unsafe { libc::ioctl(sock, libc::SIOCSIFNETMASK as _, &mut ifr) })?;
    let mut ifr = ifreq();
    ifr.ifr_ifru.ifru_flags = (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
    // SAFETY: as above (SIOCSIFFLAGS).
    cvt(unsafe { libc::ioctl(sock, libc::SIOCSIFFLAGS as _, &mut ifr) })?;
    let Some(gateway) = gateway else {
        return Ok(());
    };
    let any = std::net::Ipv4Addr::UNSPECIFIED;
    let mut rt = RtEntry {
        rt_pad1: 0,
        rt_dst: sockaddr_v4(any),
        rt_gateway: sockaddr_v4(gateway),
        rt_genmask: sockaddr_v4(any),
        rt_flags: RTF_UP | RTF_GATEWAY,
        rt_pad2: 0,
        rt_pad3: 0,
        rt_pad4: std::ptr::null_mut(),
        rt_metric: 0,
        rt_dev: std::ptr::null_mut(),
        rt_mtu: 0,
        rt_window: 0,
        rt_irtt: 0,
    };
    // SAFETY: SIOCADDRT reads a `struct rtentry`, which `RtEntry` mirrors; `rt` is valid
    // for the call and rt_dev is NULL (the kernel picks the device by the gateway).
    cvt(unsafe { libc::ioctl(sock, libc::SIOCADDRT as _, &mut rt) }).map(|_| ())
}

/// Takes interface `name` of the current network namespace out of the way without
/// destroying it: down (its routes go), its IPv4 address removed, and renamed `amxN` (N
/// its interface index, unique while it exists), with classic ioctls. Each step takes
/// microseconds where deleting a veth waits for RCU (10-30 ms measured); the device
/// itself goes later, with its peer's namespace.
pub fn retire_if(name: &str) -> io::Result<()> {
    if name.is_empty() || name.len() >= libc::IFNAMSIZ {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    }
    let guard = ioctl_socket()?;
    let sock = guard.as_raw_fd();
    let ifreq = || ifreq_named(name);
    let mut ifr = ifreq();
    // SAFETY: SIOCGIFINDEX writes an ifreq, which `ifr` is, valid for the call.
    cvt(unsafe { libc::ioctl(sock, libc::SIOCGIFINDEX as _, &mut ifr) })?;
    // SAFETY: SIOCGIFINDEX filled the index member of the union.
    let new = format!("amx{}", unsafe { ifr.ifr_ifru.ifru_ifindex });
    let mut ifr = ifreq();
    // SAFETY: as above (SIOCGIFFLAGS, the flags member).
    cvt(unsafe { libc::ioctl(sock, libc::SIOCGIFFLAGS as _, &mut ifr) })?;
    // SAFETY: SIOCGIFFLAGS filled the flags member.
    let flags = unsafe { ifr.ifr_ifru.ifru_flags };
    ifr.ifr_ifru.ifru_flags = flags & !(libc::IFF_UP as libc::c_short);
    // SAFETY: SIOCSIFFLAGS reads an ifreq, valid for the call.
    cvt(unsafe { libc::ioctl(sock, libc::SIOCSIFFLAGS as _, &mut ifr) })?;
    // Address 0.0.0.0 removes the interface's address (the kernel frees an address
    // without a local part); EADDRNOTAVAIL: it had none.
    let mut ifr = ifreq();
    ifr.ifr_ifru.ifru_addr = sockaddr_v4(std::net::Ipv4Addr::UNSPECIFIED);
    // SAFETY: SIOCSIFADDR reads an ifreq, valid for the call.
    if let Err(e) = cvt(unsafe { libc::ioctl(sock, libc::SIOCSIFADDR as _, &mut ifr) }) {
        if e.raw_os_error() != Some(libc::EADDRNOTAVAIL) {
            return Err(e);
        }
    }
    let mut ifr = ifreq();
    // SAFETY: writing the union's name member, which `new` and its NUL fit: "amx" and
    // at most 10 digits.
    unsafe {
        for (d, s) in ifr.ifr_ifru.ifru_newname.iter_mut().zip(new.bytes()) {
            *d = s as libc::c_char;
        }
    }
    // SAFETY: SIOCSIFNAME reads an ifreq, valid for the call.
    cvt(unsafe { libc::ioctl(sock, libc::SIOCSIFNAME as _, &mut ifr) }).map(drop)
}

/// Appends a netlink attribute (`struct rtattr`: length, type, payload padded to 4).
fn nl_attr(buf: &mut Vec<u8>, ty: u16, payload: &[u8]) {
    let len = 4 + payload.len();
    buf.extend_from_slice(&(len as u16).to_ne_bytes());
    buf.extend_from_slice(&ty.to_ne_bytes());
    buf.extend_from_slice(payload);
    buf.resize(buf.len().next_multiple_of(4), 0);
}

/// A nested netlink attribute around what `inner` appends.
fn nl_nest(buf: &mut Vec<u8>, ty: u16, inner: impl FnOnce(&mut Vec<u8>)) {
    let start = buf.len();
    buf.extend_from_slice(&[0, 0]);
    buf.extend_from_slice(&ty.to_ne_bytes());
    inner(buf);
    let len = (buf.len() - start) as u16;
    buf[start..start + 2].copy_from_slice(&len.to_ne_bytes());
}

fn nl_name(name: &str) -> io::Result<Vec<u8>> {
    if name.is_empty() || name.len() >= libc::IFNAMSIZ || name.bytes().any(|b| b == 0 || b == b'/')
    {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    }
    let mut v = name.as_bytes().to_vec();
    v.push(0);
    Ok(v)
}

/// Creates the veth pair `host` (in the current network namespace, down) and `peer` (in
/// the namespace `peer_netns`), with one `RTM_NEWLINK` request on a route netlink socket
/// (what `ip link add HOST type veth peer name PEER netns NS` sends), and waits for the
/// kernel's acknowledgement.
pub fn create_veth(
    host: &str,
    peer: &str,
    peer_netns: std::os::fd::BorrowedFd<'_>,
) -> io::Result<()> {
    const IFLA_IFNAME: u16 = 3;
    const IFLA_LINKINFO: u16 = 18;
    const IFLA_NET_NS_FD: u16 = 28;
    const IFLA_INFO_KIND: u16 = 1;
    const IFLA_INFO_DATA: u16 = 2;
    const VETH_INFO_PEER: u16 = 1;
    const IFINFOMSG: [u8; 16] = [0; 16];
    let (host, peer) = (nl_name(host)?, nl_name(peer)?);
    let mut msg = vec![0u8; 16];
    msg.extend_from_slice(&IFINFOMSG);
    nl_attr(&mut msg, IFLA_IFNAME, &host);
    nl_nest(&mut msg, IFLA_LINKINFO, |b| {
        nl_attr(b, IFLA_INFO_KIND, b"veth\0");
        nl_nest(b, IFLA_INFO_DATA, |b| {
            nl_nest(b, VETH_INFO_PEER, |b| {
                b.extend_from_slice(&IFINFOMSG);
                nl_attr(b, IFLA_IFNAME, &peer);
                nl_attr(
                    b,
                    IFLA_NET_NS_FD,
                    &(peer_netns.as_raw_fd() as u32).to_ne_bytes(),
                );
            });
        });
    });
    let len = msg.len() as u32;
    let flags =
        (libc::NLM_F_REQUEST | libc::NLM_F_ACK | libc::NLM_F_CREATE | libc::NLM_F_EXCL) as u16;
    msg[0..4].copy_from_slice(&len.to_ne_bytes());
    msg[4..6].copy_from_slice(&libc::RTM_NEWLINK.to_ne_bytes());
    msg[6..8].copy_from_slice(&flags.to_ne_bytes());
    msg[8..12].copy_from_slice(&1u32.to_ne_bytes());
    // SAFETY: plain integer arguments.
    let sock = cvt(unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            libc::NETLINK_ROUTE,
        )
    })?;
    // SAFETY: `sock` was just returned by socket() and is owned by nothing else.
    let _guard = unsafe { OwnedFd::from_raw_fd(sock) };
    // SAFETY: sockaddr_nl is plain data; all-zero (nl_pid 0: the kernel) is valid.
    let mut kernel: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
    kernel.nl_family = libc::AF_NETLINK as libc::sa_family_t;
    // SAFETY: `msg` is valid for its length; `kernel` is a sockaddr_nl of the size given.
    let sent = unsafe {
        libc::sendto(
            sock,
            msg.as_ptr().cast(),
            msg.len(),
            0,
            (&kernel as *const libc::sockaddr_nl).cast(),
            std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
        )
    };
    if sent < 0 {
        return Err(io::Error::last_os_error());
    }
    // The acknowledgement: NLMSG_ERROR with error 0, or the negated errno. A kernel that
    // does not answer within 5 s fails the set-up rather than hanging it.
    let tv = libc::timeval {
        tv_sec: 5,
        tv_usec: 0,
    };
    // SAFETY: SO_RCVTIMEO reads a timeval, which `tv` is, of the size given.
    cvt(unsafe {
        libc::setsockopt(
            sock,
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&tv as *const libc::timeval).cast(),
            std::mem::size_of::<libc::timeval>() as libc::socklen_t,
        )
    })?;
    let mut buf = [0u8; 4096];
    loop {
        // SAFETY: `buf` is valid for writes of its length.
        let n = unsafe { libc::recv(sock, buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let n = n as usize;
        if n < 20 {
            return Err(io::Error::from_raw_os_error(libc::EPROTO));
        }
        let ty = u16::from_ne_bytes([buf[4], buf[5]]);
        let seq = u32::from_ne_bytes([buf[8], buf[9], buf[10], buf[11]]);
        if seq != 1 || ty != libc::NLMSG_ERROR as u16 {
            continue;
        }
        let err = i32::from_ne_bytes([buf[16], buf[17], buf[18], buf[19]]);
        return if err == 0 {
            Ok(())
        } else {
            Err(io::Error::from_raw_os_error(-err))
        };
    }
}

/// `struct loop_info64` of `<linux/loop.h>`.
#[repr(C)]
struct LoopInfo64 {
    lo_device: u64,
    lo_inode: u64,
    lo_rdevice: u64,
    lo_offset: u64,
    lo_sizelimit: u64,
    lo_number: u32,
    lo_encrypt_type: u32,
    lo_encrypt_key_size: u32,
    lo_flags: u32,
    lo_file_name: [u8; 64],
    lo_crypt_name: [u8; 64],
    lo_encrypt_key: [u8; 32],
    lo_init: [u64; 2],
}

/// `struct loop_config` of `<linux/loop.h>` (`LOOP_CONFIGURE`, Linux 5.8).
#[repr(C)]
struct LoopConfig {
    fd: u32,
    block_size: u32,
    info: LoopInfo64,
    reserved: [u64; 8],
}

const LOOP_CONFIGURE: libc::c_ulong = 0x4C0A;
const LOOP_CTL_GET_FREE: libc::c_ulong = 0x4C82;
/// Detach the device when its last user (the mount) goes away.
const LO_FLAGS_AUTOCLEAR: u32 = 4;

/// Attaches the regular file `backing` (opened read-write) to a free loop device with
/// `LO_FLAGS_AUTOCLEAR` and returns the device, opened read-write, and its number. The
/// device detaches itself when its last opener (the file system mounted from it, or the
/// returned descriptor if nothing was mounted) is gone. A device another process took
/// between `LOOP_CTL_GET_FREE` and `LOOP_CONFIGURE` (`EBUSY`) is retried a few times.
pub fn loop_attach(
    control: std::os::fd::BorrowedFd<'_>,
    backing: std::os::fd::BorrowedFd<'_>,
) -> io::Result<(OwnedFd, u32)> {
    let mut last = io::Error::from_raw_os_error(libc::EBUSY);
    for _ in 0..16 {
        // SAFETY: LOOP_CTL_GET_FREE takes no argument and returns a device number.
        let n = cvt(unsafe { libc::ioctl(control.as_raw_fd(), LOOP_CTL_GET_FREE) })?;
        let path = CString::new(format!("/dev/loop{n}")).map_err(io::Error::other)?;
        // SAFETY: `path` is a valid NUL-terminated string for the duration of the call.
        let raw = cvt(unsafe {
            libc::open(
                path.as_ptr(),
                libc::O_RDWR | libc::O_CLOEXEC | libc::O_NOFOLLOW | libc::O_NOCTTY,
            )
        })?;
        // SAFETY: `raw` was just returned by open and is owned by nothing else.
        let dev = unsafe { OwnedFd::from_raw_fd(raw) };
        // SAFETY: every field of LoopInfo64 and LoopConfig is an integer or an integer
        // array, for which all-zero is a valid value.
        let mut cfg: LoopConfig = unsafe { std::mem::zeroed() };
        cfg.fd = backing.as_raw_fd() as u32;
        cfg.info.lo_flags = LO_FLAGS_AUTOCLEAR;
        // SAFETY: LOOP_CONFIGURE reads a `struct loop_config`, which `cfg` is (same
        // layout, repr(C)), valid for the call; the kernel takes its own reference to
        // the backing file.
        match cvt(unsafe { libc::ioctl(dev.as_raw_fd(), LOOP_CONFIGURE, &cfg) }) {
            Ok(_) => return Ok((dev, n as u32)),
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) => last = e,
            Err(e) => return Err(e),
        }
    }
    Err(last)
}

/// Takes ownership of an fd number handed to this process on its command line.
///
/// Returns `EBADF` if the fd is not open. The caller must not take the same number twice.
pub fn take_inherited_fd(fd: RawFd) -> io::Result<OwnedFd> {
    if fd < 3 {
        return Err(io::Error::from_raw_os_error(libc::EBADF));
    }
    // SAFETY: F_GETFD only checks that the fd exists.
    cvt(unsafe { libc::fcntl(fd, libc::F_GETFD) })?;
    // SAFETY: the fd is open (checked above) and was passed to this process for it to
    // own; nothing else in the process refers to it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Arranges for `fd` to survive `execve` in the child of `cmd` only (its close-on-exec
/// flag is cleared between fork and exec), so concurrent spawns in a multi-threaded
/// caller never inherit it.
pub fn keep_fd_in_child(cmd: &mut std::process::Command, fd: RawFd) {
    use std::os::unix::process::CommandExt;
    // SAFETY: the closure only calls fcntl, which is async-signal-safe, and allocates
    // nothing, as required between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            let flags = libc::fcntl(fd, libc::F_GETFD);
            if flags == -1 || libc::fcntl(fd, libc::F_SETFD, flags & !libc::FD_CLOEXEC) == -1 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// Raw `syscall(nr, a0..a5)` for the sandbox probe: returns the result or the errno.
/// Only meant to be called with side-effect-free arguments (bad fds, null or invalid
/// pointers): the kernel validates them, and no Rust memory is referenced.
pub fn probe_syscall(nr: libc::c_long, args: [usize; 6]) -> Result<i64, i32> {
    // SAFETY: the arguments are integers; any pointer values are deliberately invalid or
    // null and are only ever checked by the kernel (EFAULT), never dereferenced here.
    let r = unsafe { libc::syscall(nr, args[0], args[1], args[2], args[3], args[4], args[5]) };
    if r == -1 {
        Err(io::Error::last_os_error().raw_os_error().unwrap_or(0))
    } else {
        Ok(r)
    }
}

/// Makes `getpid` through the i386 `int 0x80` entry (x86_64 only): used by the probe to
/// show that a syscall from a foreign ABI kills the process.
#[cfg(target_arch = "x86_64")]
pub fn probe_int80_getpid() -> i64 {
    let mut ret: i64 = 20; // __NR_getpid on i386
                           // SAFETY: int 0x80 with eax=20 is getpid in the i386 ABI: no memory is read or
                           // written; the registers it clobbers on return are declared.
    unsafe {
        std::arch::asm!("int 0x80", inout("rax") ret, out("r8") _, out("r9") _,
            out("r10") _, out("r11") _, options(nostack));
    }
    ret
}

/// Drops this process's resident pages of clean, read-only file mappings (program and
/// library text and read-only data) with `MADV_DONTNEED`. Called by the launcher and init
/// once set-up is done: from then on they only run a small wait loop, whose few pages fault
/// back in from the page cache, so their footprint beside the app stays small.
/// `MADV_RANDOM` first turns off read-ahead for the refaults. It does not turn off the
/// kernel's fault-around (measured on 6.18: after `MADV_DONTNEED` of a cached 1 MiB file
/// mapping, 5 touches map 320 kB with or without it), so each 64 kB window the wait loop
/// touches comes back whole: about 512 kB of the static launcher's text stays mapped.
/// Only mappings that are private, not writable, backed by a file and hold no anonymous
/// (copy-on-write) pages are touched, so what is dropped is exactly the file's content
/// (relocated RELRO pages are anonymous and are kept).
pub fn release_code_pages() {
    let Ok(smaps) = std::fs::read_to_string("/proc/self/smaps") else {
        return;
    };
    let mut candidate: Option<(usize, usize)> = None;
    for line in smaps.lines() {
        let mut f = line.split_whitespace();
        let first = f.next().unwrap_or("");
        if let Some((a, b)) = first.split_once('-') {
            // A mapping header: "start-end perms offset dev inode [path]".
            candidate = None;
            let perms = f.next().unwrap_or("");
            let path = f.nth(3);
            let pb = perms.as_bytes();
            if pb.len() == 4
                && pb[1] != b'w'
                && pb[3] == b'p'
                && path.is_some_and(|p| p.starts_with('/'))
            {
                if let (Ok(s), Ok(e)) = (usize::from_str_radix(a, 16), usize::from_str_radix(b, 16))
                {
                    candidate = Some((s, e));
                }
            }
        } else if first == "Anonymous:" {
            if let (Some((start, end)), Some("0")) = (candidate.take(), f.next()) {
                // SAFETY: [start, end) is a private, non-writable file mapping of this
                // process without anonymous pages (from /proc/self/smaps): MADV_RANDOM
                // only changes read-ahead, and MADV_DONTNEED discards resident copies that
                // are refaulted unchanged from the file. No Rust reference is invalidated.
                unsafe {
                    let p = start as *mut libc::c_void;
                    libc::madvise(p, end - start, libc::MADV_RANDOM);
                    libc::madvise(p, end - start, libc::MADV_DONTNEED);
                }
            }
        }
    }
    drop(smaps);
    // SAFETY: malloc_trim only returns free heap memory to the kernel; the process is
    // single-threaded and holds no allocator lock here.
    unsafe { libc::malloc_trim(0) };
}

/// Returns free heap pages of every malloc arena to the kernel (glibc `malloc_trim(0)`):
/// the daemons call it once start-up is over, so their idle footprint is not start-up's
/// peak.
pub fn malloc_trim() {
    // SAFETY: malloc_trim takes a size and touches only the allocator's own state, which
    // it locks; it is safe to call from any thread at any time.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// `struct drm_version` of `<drm/drm.h>` (64-bit layout; the ioctl number encodes its size).
#[repr(C)]
struct DrmVersion {
    major: libc::c_int,
    minor: libc::c_int,
    patchlevel: libc::c_int,
    name_len: libc::size_t,
    name: *mut libc::c_char,
    date_len: libc::size_t,
    date: *mut libc::c_char,
    desc_len: libc::size_t,
    desc: *mut libc::c_char,
}

/// `DRM_IOCTL_VERSION`: `_IOWR('d', 0x00, struct drm_version)`.
const DRM_IOCTL_VERSION: libc::c_ulong = (3 << 30)
    | ((std::mem::size_of::<DrmVersion>() as libc::c_ulong) << 16)
    | ((b'd' as libc::c_ulong) << 8);

/// The kernel driver's name of a DRM device (`DRM_IOCTL_VERSION` on `fd`): what the GPU
/// portal reports and what the probe checks on the descriptor it was handed. At most 64
/// bytes of the name are read.
pub fn drm_driver_name(fd: std::os::fd::BorrowedFd<'_>) -> io::Result<String> {
    let mut name = [0u8; 64];
    let mut v = DrmVersion {
        major: 0,
        minor: 0,
        patchlevel: 0,
        name_len: name.len(),
        name: name.as_mut_ptr().cast(),
        date_len: 0,
        date: std::ptr::null_mut(),
        desc_len: 0,
        desc: std::ptr::null_mut(),
    };
    // SAFETY: `v` is a properly laid out `struct drm_version` that lives across the call;
    // its only non-null buffer is `name`, valid for `name_len` bytes, and the kernel
    // writes at most `*_len` bytes into each buffer (zero-length ones are not touched).
    // The kernel does not keep the pointers after the call.
    cvt(unsafe { libc::ioctl(fd.as_raw_fd(), DRM_IOCTL_VERSION as _, &mut v) })?;
    // The kernel sets name_len to the full length; it copied min(full, buffer).
    let n = v.name_len.min(name.len());
    Ok(String::from_utf8_lossy(&name[..n]).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    #[test]
    fn drm_version_ioctl_number_and_a_non_drm_node() {
        // The value <drm/drm.h> gives on 64-bit Linux.
        assert_eq!(DRM_IOCTL_VERSION, 0xC040_6400);
        let f = std::fs::File::open("/dev/null").unwrap();
        let e = drm_driver_name(f.as_fd()).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ENOTTY));
    }
}
