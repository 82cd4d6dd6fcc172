//! Privileged tests: run the static probe through `appmgr-launch` in a tiny runtime built
//! from the host's busybox, and check every Sandbox class of security-cases.md from the
//! inside. Skipped (with a message) when not root.

use appmgr_sandbox::{build_plan, launcher_command, LaunchSpec, SeccompPlan};
use appmgr_testkit::{net_leftovers, require_net, require_root, Dnsmasq};
use appmgr_types::{AllowFlag, AppId, Permissions};
use serde_json::Value;
use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

const UID: u32 = 40123;

fn probe_bin() -> PathBuf {
    appmgr_testkit::static_probe()
}

fn init_launcher_env() {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
        // An explicit APPMGR_LAUNCH (e.g. a release build for the latency test) wins.
        if std::env::var_os("APPMGR_LAUNCH").is_none() {
            std::env::set_var("APPMGR_LAUNCH", env!("CARGO_BIN_EXE_appmgr-launch"));
        }
    });
}

/// A runtime (busybox), an app (the probe), a data dir parent and a seccomp cache.
struct World {
    _t: tempfile::TempDir,
    root: PathBuf,
}

impl World {
    fn new() -> World {
        let t = tempfile::tempdir().unwrap();
        let root = t.path().to_path_buf();
        std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o755)).unwrap();
        let usr = root.join("runtime/files");
        std::fs::create_dir_all(usr.join("bin")).unwrap();
        std::fs::create_dir_all(usr.join("etc")).unwrap();
        std::fs::create_dir_all(usr.join("lib")).unwrap();
        std::fs::copy("/bin/busybox", usr.join("bin/busybox")).unwrap();
        for a in ["sh", "sleep", "cat", "ls", "true", "id", "env"] {
            std::os::unix::fs::symlink("busybox", usr.join("bin").join(a)).unwrap();
        }
        std::fs::write(usr.join("etc/os-release"), "ID=appmgr-test\n").unwrap();
        std::fs::write(usr.join("etc/passwd"), "evil:x:0:0::/:/bin/sh\n").unwrap();
        let app = root.join("app/files");
        std::fs::create_dir_all(app.join("bin")).unwrap();
        std::fs::copy(probe_bin(), app.join("bin/probe")).unwrap();
        std::fs::create_dir_all(root.join("data")).unwrap();
        World { _t: t, root }
    }

    fn spec(&self, args: &[&str]) -> LaunchSpec {
        LaunchSpec {
            app_id: AppId::new("org.example.Probe").unwrap(),
            runtime_files: self.root.join("runtime/files"),
            app_files: self.root.join("app/files"),
            data_dir: self.root.join("data/org.example.Probe"),
            runtime_dir: None,
            uid: UID,
            gid: UID,
            permissions: Permissions::default(),
            devices: vec![],
            command: "probe".into(),
            args: args.iter().map(|s| s.to_string()).collect(),
            cgroup_procs: vec![],
            helper_cgroup_procs: vec![],
            device_filter: None,
            after_exit: Default::default(),
            env_allow: vec![],
            caller_env: vec![
                ("LD_PRELOAD".into(), "/nonexistent/evil.so".into()),
                ("GCONV_PATH".into(), "/tmp".into()),
                ("TERM".into(), "xterm".into()),
            ],
            cache_dir: self.root.join("cache"),
            timezone: None,
            lang: None,
            notify_socket: None,
            system_bus_socket: None,
            host_sockets: Default::default(),
            pipewire_access: false,
            memory_max: None,
            deny_paths: vec![],
            data_image: None,
            inputs: Vec::new(),
            network: None,
            extensions: vec![],
        }
    }
}

struct Outcome {
    code: i32,
    stdout: String,
    stderr: String,
}

fn command(spec: &LaunchSpec) -> (Command, std::os::fd::OwnedFd) {
    init_launcher_env();
    let plan = build_plan(spec).expect("plan");
    let (mut cmd, fd) = launcher_command(&plan).expect("launcher command");
    cmd.stdin(Stdio::null());
    (cmd, fd)
}

fn launch(spec: &LaunchSpec) -> Outcome {
    let (mut cmd, _fd) = command(spec);
    let out = cmd.output().expect("spawn launcher");
    Outcome {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into(),
        stderr: String::from_utf8_lossy(&out.stderr).into(),
    }
}

fn report(spec: &LaunchSpec) -> Value {
    let o = launch(spec);
    assert_eq!(o.code, 0, "probe failed: {}\n{}", o.stderr, o.stdout);
    serde_json::from_str(o.stdout.trim()).unwrap_or_else(|e| panic!("{e}: {}", o.stdout))
}

/// A network spec in the tests' own pool (never the default one real apps use).
fn own_network(slot: u32) -> appmgr_sandbox::net::NetSpec {
    appmgr_sandbox::net::NetSpec {
        refresh: Default::default(),
        resolvers: Vec::new(),
        pool: "10.235.0.0/24".parse().unwrap(),
        slot,
        resolved: Default::default(),
        nameservers: vec![],
        peers: vec![],
        routed: false,
    }
}

fn host_ns(n: &str) -> String {
    std::fs::read_link(format!("/proc/self/ns/{n}"))
        .unwrap()
        .display()
        .to_string()
}

fn strs(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_str().unwrap().to_string())
        .collect()
}

/// Calls the filter must block, with the errno it returns.
const BLOCKED: &[(&str, &str)] = &[
    ("ioctl_tiocsti", "EPERM"),
    ("ioctl_tiocsti_high_bits", "EPERM"),
    ("ioctl_tioclinux", "EPERM"),
    ("clone_newuser", "EPERM"),
    ("clone_newns", "EPERM"),
    ("clone_newpid", "EPERM"),
    ("clone_newnet", "EPERM"),
    ("unshare", "EPERM"),
    ("setns", "EPERM"),
    ("clone3", "ENOSYS"),
    ("fsopen", "ENOSYS"),
    ("fsconfig", "ENOSYS"),
    ("fsmount", "ENOSYS"),
    ("fspick", "ENOSYS"),
    ("open_tree", "ENOSYS"),
    ("move_mount", "ENOSYS"),
    ("mount_setattr", "ENOSYS"),
    ("mount", "EPERM"),
    ("umount2", "EPERM"),
    ("pivot_root", "EPERM"),
    ("chroot", "EPERM"),
    ("ptrace", "EPERM"),
    ("process_vm_readv", "EPERM"),
    ("process_vm_writev", "EPERM"),
    ("perf_event_open", "EPERM"),
    ("keyctl", "EPERM"),
    ("add_key", "EPERM"),
    ("request_key", "EPERM"),
    ("bpf", "EPERM"),
    ("userfaultfd", "EPERM"),
    ("io_uring_setup", "EPERM"),
    ("io_uring_enter", "EPERM"),
    ("io_uring_register", "EPERM"),
    ("kexec_load", "EPERM"),
    ("kexec_file_load", "EPERM"),
    ("init_module", "EPERM"),
    ("finit_module", "EPERM"),
    ("delete_module", "EPERM"),
    ("personality_query", "EPERM"),
    ("personality_bsd", "EPERM"),
    ("syslog", "EPERM"),
    ("acct", "EPERM"),
    ("quotactl", "EPERM"),
    ("mbind", "EPERM"),
    ("get_mempolicy", "EPERM"),
    ("set_mempolicy", "EPERM"),
    ("migrate_pages", "EPERM"),
    ("move_pages", "EPERM"),
    ("name_to_handle_at", "EPERM"),
    ("open_by_handle_at", "EPERM"),
    ("openat2", "ENOSYS"),
    ("swapon", "EPERM"),
    ("reboot", "EPERM"),
    ("sethostname", "EPERM"),
    ("fchmod_setuid", "EPERM"),
    ("fchmod_setgid", "EPERM"),
    ("fchmodat_setuid", "EPERM"),
    ("mknodat_setuid", "EPERM"),
    ("openat_creat_setuid", "EPERM"),
    ("openat_creat_setgid", "EPERM"),
    // (EPERM where libseccomp can name fchmodat2: see `blocked()`)
    ("fchmodat2_setuid", "ENOSYS"),
    ("quotactl_fd", "EPERM"),
    ("kcmp", "EPERM"),
    ("pidfd_getfd", "EPERM"),
    ("process_mrelease", "EPERM"),
    ("set_mempolicy_home_node", "EPERM"),
    ("statmount", "ENOSYS"),
    ("listmount", "ENOSYS"),
    ("lsm_set_self_attr", "EPERM"),
    ("open_tree_attr", "ENOSYS"),
    ("listns", "EPERM"),
    #[cfg(target_arch = "x86_64")]
    ("chmod_setuid", "EPERM"),
    #[cfg(target_arch = "x86_64")]
    ("mknod_setuid", "EPERM"),
    #[cfg(target_arch = "x86_64")]
    ("open_creat_setuid", "EPERM"),
    #[cfg(target_arch = "x86_64")]
    ("creat_setuid", "EPERM"),
    #[cfg(target_arch = "x86_64")]
    ("iopl", "EPERM"),
    #[cfg(target_arch = "x86_64")]
    ("modify_ldt", "EPERM"),
    ("socket_packet", "EAFNOSUPPORT"),
    ("socket_key", "EAFNOSUPPORT"),
    ("socket_alg", "EAFNOSUPPORT"),
    ("socket_vsock", "EAFNOSUPPORT"),
    ("socket_bluetooth", "EAFNOSUPPORT"),
    ("socket_can", "EAFNOSUPPORT"),
    ("socket_family_200", "EAFNOSUPPORT"),
    ("socket_netlink_uevent", "EACCES"),
];

/// [`BLOCKED`] as this build's filter answers: fchmodat2 gets the setuid/setgid mode
/// check of fchmodat where libseccomp can name it, and ENOSYS (libc falls back to
/// fchmodat) where it cannot.
fn blocked() -> Vec<(&'static str, &'static str)> {
    let named = libseccomp::ScmpSyscall::from_name("fchmodat2").is_ok();
    BLOCKED
        .iter()
        .map(|&(n, w)| match n {
            "fchmodat2_setuid" if named => (n, "EPERM"),
            _ => (n, w),
        })
        .collect()
}

/// Calls that must stay allowed (the filter is not a blanket block).
const ALLOWED: &[(&str, &str)] = &[
    ("ioctl_fionread", "EBADF"),
    ("clone_plain", "EINVAL"),
    ("fchmod_plain", "EBADF"),
    ("openat_creat_plain", "ENOENT"),
    ("personality_linux", "ok"),
    ("socket_unix", "EINVAL"),
    ("socket_inet", "EINVAL"),
    ("socket_inet6", "EINVAL"),
    ("socket_netlink", "EINVAL"),
];

#[test]
fn default_sandbox_is_closed() {
    require_root!("namespaces, mounts, setuid");
    let w = World::new();
    let r = report(&w.spec(&[]));
    let st = &r["status"];
    // identity, capabilities, no_new_privs, seccomp
    assert_eq!(st["Uid"], format!("{UID}\t{UID}\t{UID}\t{UID}"));
    assert_eq!(st["Gid"], format!("{UID}\t{UID}\t{UID}\t{UID}"));
    assert_eq!(st["Groups"], "");
    for c in ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"] {
        assert_eq!(st[c], "0000000000000000", "{c}");
    }
    assert_eq!(st["NoNewPrivs"], "1");
    assert_eq!(st["Seccomp"], "2");
    // namespaces: new mount/pid/net/ipc/uts/cgroup, never a user namespace
    for n in ["mnt", "pid", "net", "ipc", "uts", "cgroup"] {
        assert_ne!(
            r["namespaces"][n],
            host_ns(n),
            "{n} namespace shared with the host"
        );
    }
    assert_eq!(r["namespaces"]["user"], host_ns("user"));
    // only the sandbox's own processes: init (1) and the probe
    let pids = strs(&r["pids"]);
    assert_eq!(pids, ["1", "2"], "visible processes");
    assert_eq!(r["pid"], 2);
    assert_eq!(r["kill_outside"], "ESRCH");
    // fds 0-2 only (plus the directory being listed)
    let fds: Vec<String> = r["fds"]
        .as_object()
        .unwrap()
        .iter()
        // the directory fd used for listing is gone by the time it is read back
        .filter(|(_, t)| t.as_str().unwrap() != "(closed)")
        .map(|(k, _)| k.clone())
        .collect();
    assert_eq!(fds, ["0", "1", "2"], "open fds: {}", r["fds"]);
    // network: only lo, and it is up
    assert_eq!(strs(&r["interfaces"]), ["lo"]);
    let lo =
        u32::from_str_radix(r["lo_flags"].as_str().unwrap().trim_start_matches("0x"), 16).unwrap();
    assert_eq!(lo & 1, 1, "lo is up");
    // writes
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
    ] {
        let e = r["writes"][p].as_str().unwrap();
        // (ENOENT: kernels built without sysrq have no /proc/sysrq-trigger)
        let absent_ok = p == "/proc/sysrq-trigger" && e == "ENOENT";
        assert!(
            absent_ok || ["EROFS", "EACCES", "EPERM"].contains(&e),
            "{p}: {e}"
        );
    }
    assert_eq!(r["writes"]["/tmp/probe-write"], "ok");
    assert_eq!(r["writes"]["/home/app/probe-write"], "ok");
    // syscalls
    for (name, want) in &blocked() {
        assert_eq!(r["syscalls"][name], *want, "{name}");
    }
    for (name, want) in ALLOWED {
        assert_eq!(r["syscalls"][name], *want, "{name}");
    }
    // filesystem layout
    let root: BTreeSet<String> = strs(&r["root_entries"]).into_iter().collect();
    for e in [
        "app", "bin", "dev", "etc", "home", "lib", "proc", "run", "sbin", "sys", "tmp", "usr",
    ] {
        assert!(root.contains(e), "/{e} missing: {root:?}");
    }
    let dev: BTreeSet<String> = strs(&r["dev_entries"]).into_iter().collect();
    let want: BTreeSet<String> = [
        "full", "null", "ptmx", "pts", "random", "shm", "tty", "urandom", "zero", "fd", "stdin",
        "stdout", "stderr",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    assert_eq!(dev, want);
    let etc: BTreeSet<String> = strs(&r["etc_entries"]).into_iter().collect();
    for e in [
        "passwd",
        "group",
        "hosts",
        "localtime",
        "machine-id",
        "os-release",
    ] {
        assert!(etc.contains(e), "/etc/{e} missing: {etc:?}");
    }
    assert!(!etc.contains("resolv.conf"));
    let passwd = r["passwd"].as_str().unwrap();
    assert!(passwd.contains(&format!("app:x:{UID}:{UID}:")), "{passwd}");
    assert!(
        !passwd.contains("evil"),
        "the generated passwd wins over the runtime's"
    );
    let mounts = strs(&r["mounts"]);
    let opts = |dir: &str| -> String {
        mounts
            .iter()
            .rfind(|l| l.split(' ').nth(1) == Some(dir))
            .unwrap_or_else(|| panic!("{dir} not mounted: {mounts:?}"))
            .split(' ')
            .nth(3)
            .unwrap()
            .to_string()
    };
    for d in ["/usr", "/app"] {
        let o = opts(d);
        for f in ["ro", "nosuid", "nodev"] {
            assert!(o.split(',').any(|x| x == f), "{d}: {o}");
        }
    }
    assert!(opts("/sys").split(',').any(|x| x == "ro"));
    assert!(opts("/").split(',').any(|x| x == "ro"));
    assert_eq!(r["cwd"], "/home/app");
    // XDG_RUNTIME_DIR is the app's
    let o = launch(&w.spec(&["write", &format!("/run/user/{UID}/x"), "/run/x"]));
    let v: Value = serde_json::from_str(o.stdout.trim()).unwrap();
    assert_eq!(v[format!("/run/user/{UID}/x")], "ok");
    assert_eq!(v["/run/x"], "EACCES");
    // the data dir was created for the app
    let m = std::fs::metadata(w.root.join("data/org.example.Probe")).unwrap();
    assert_eq!((m.uid(), m.gid(), m.mode() & 0o7777), (UID, UID, 0o700));
    // the environment is built
    let env: BTreeSet<String> = strs(&r["env"])
        .iter()
        .map(|e| e.split('=').next().unwrap().to_string())
        .collect();
    let want: BTreeSet<String> = [
        "PATH",
        "HOME",
        "USER",
        "LOGNAME",
        "SHELL",
        "LANG",
        "TZ",
        "XDG_CONFIG_HOME",
        "XDG_DATA_HOME",
        "XDG_STATE_HOME",
        "XDG_CACHE_HOME",
        "XDG_RUNTIME_DIR",
        "XDG_DATA_DIRS",
        "XDG_CONFIG_DIRS",
        "APPMGR_APP_ID",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    assert_eq!(env, want);
}

/// The errno of each blocked call comes from the filter, not from missing privileges:
/// as root without a sandbox, the same calls fail differently (or succeed harmlessly).
#[test]
fn blocked_errnos_come_from_the_filter() {
    require_root!("namespaces, mounts, setuid");
    let t = tempfile::tempdir().unwrap();
    let plan = SeccompPlan {
        cache_file: t.path().join("f.bpf"),
        ..build_plan(&World::new().spec(&[])).unwrap().seccomp
    };
    let _ = appmgr_sandbox::seccomp::load_or_compile(&plan).unwrap();
    let run = |args: &[&str]| -> Value {
        let out = Command::new(probe_bin()).args(args).output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let bare = run(&["report"]);
    let filtered = run(&["load-filter", plan.cache_file.to_str().unwrap()]);
    assert_eq!(filtered["status"]["Seccomp"], "2");
    for (name, want) in &blocked() {
        assert_eq!(filtered["syscalls"][name], *want, "{name} with the filter");
        // (family 200 is past the kernel's NPROTO: EAFNOSUPPORT either way)
        // (and ENOSYS cannot be told from a kernel without the call: newer calls on an
        // older kernel)
        if *name != "socket_family_200"
            && !(*want == "ENOSYS" && bare["syscalls"][name] == "ENOSYS")
        {
            assert_ne!(bare["syscalls"][name], *want, "{name} without the filter");
        }
    }
}

#[test]
fn grants_open_exactly_what_they_name() {
    require_root!("namespaces, mounts, setuid");
    let w = World::new();
    // ipc: the host's namespace. network: never the host's; with the app's own network
    // (tests/network.rs) resolv.conf is copied, without one (no NetSpec) it is not.
    let mut s = w.spec(&[]);
    s.permissions.network = appmgr_types::NetworkGrant::any();
    s.permissions.ipc = true;
    let r = report(&s);
    assert_ne!(r["namespaces"]["net"], host_ns("net"));
    assert_eq!(r["namespaces"]["ipc"], host_ns("ipc"));
    assert_ne!(r["namespaces"]["mnt"], host_ns("mnt"));
    assert!(!strs(&r["etc_entries"]).contains(&"resolv.conf".to_string()));
    // devel: ptrace and perf_event_open re-allowed, nothing else
    let mut s = w.spec(&[]);
    s.permissions.allow.insert(AllowFlag::Devel);
    let r = report(&s);
    assert_eq!(r["syscalls"]["ptrace"], "ESRCH");
    assert_ne!(r["syscalls"]["perf_event_open"], "EPERM");
    for (name, want) in &blocked() {
        if *name != "ptrace" && *name != "perf_event_open" {
            assert_eq!(r["syscalls"][name], *want, "{name} with devel");
        }
    }
    // bluetooth and canbus: their socket families only
    let mut s = w.spec(&[]);
    s.permissions.allow.insert(AllowFlag::Bluetooth);
    s.permissions.allow.insert(AllowFlag::Canbus);
    let r = report(&s);
    assert_eq!(r["syscalls"]["socket_bluetooth"], "EINVAL");
    assert_eq!(r["syscalls"]["socket_can"], "EINVAL");
    assert_eq!(r["syscalls"]["socket_packet"], "EAFNOSUPPORT");
    // a granted device node appears at its path
    let node = format!("/dev/appmgr-test-{}", std::process::id());
    let c = std::ffi::CString::new(node.clone()).unwrap();
    rustix::fs::mknodat(
        rustix::fs::CWD,
        c.as_c_str(),
        rustix::fs::FileType::CharacterDevice,
        rustix::fs::Mode::from_raw_mode(0o666),
        rustix::fs::makedev(1, 3),
    )
    .unwrap();
    let mut s = w.spec(&[]);
    s.devices = vec![node.clone().into()];
    let r = report(&s);
    std::fs::remove_file(&node).unwrap();
    let name = node.trim_start_matches("/dev/").to_string();
    assert!(
        strs(&r["dev_entries"]).contains(&name),
        "{}",
        r["dev_entries"]
    );
    // granted host paths: ro and rw as granted
    let ro = w.root.join("shared-ro");
    let rw = w.root.join("shared-rw");
    for d in [&ro, &rw] {
        std::fs::create_dir_all(d).unwrap();
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o777)).unwrap();
    }
    let mut s = w.spec(&[
        "write",
        &format!("{}/f", ro.display()),
        &format!("{}/f", rw.display()),
    ]);
    s.permissions
        .filesystems
        .insert(format!("{}:ro", ro.display()).parse().unwrap());
    s.permissions
        .filesystems
        .insert(format!("{}:rw", rw.display()).parse().unwrap());
    let o = launch(&s);
    assert_eq!(o.code, 0, "{}", o.stderr);
    let v: Value = serde_json::from_str(o.stdout.trim()).unwrap();
    assert_eq!(v[format!("{}/f", ro.display())], "EROFS");
    assert_eq!(v[format!("{}/f", rw.display())], "ok");
}

#[cfg(target_arch = "x86_64")]
#[test]
fn foreign_abi_syscalls_kill_unless_multiarch() {
    require_root!("namespaces, mounts, setuid");
    let w = World::new();
    for mode in ["int80", "x32"] {
        let o = launch(&w.spec(&[mode]));
        assert_eq!(
            o.code,
            128 + libc::SIGSYS,
            "{mode}: {} {}",
            o.stdout,
            o.stderr
        );
        assert!(!o.stdout.contains("survived"));
    }
    let mut s = w.spec(&["int80"]);
    s.permissions.allow.insert(AllowFlag::Multiarch);
    let o = launch(&s);
    assert_eq!(o.code, 0, "int80 with multiarch: {}", o.stderr);
    assert!(o.stdout.contains("survived"));
}

#[test]
fn arguments_are_data_and_environment_is_built() {
    require_root!("namespaces, mounts, setuid");
    let w = World::new();
    let args = ["--bind", "/", "/", "--", "$(id)", "; rm -rf /", "-c"];
    let o = launch(&w.spec(&args));
    assert_eq!(o.code, 0, "{}", o.stderr);
    let v: Value = serde_json::from_str(o.stdout.trim()).unwrap();
    let mut want = vec!["/app/bin/probe".to_string()];
    want.extend(args.iter().map(|s| s.to_string()));
    assert_eq!(strs(&v["argv"]), want);

    // The caller's LD_PRELOAD / GCONV_PATH reach the app neither through the spec (the
    // caller_env has them) nor through the launcher's own environment.
    use std::os::fd::AsRawFd;
    let plan = build_plan(&w.spec(&[])).unwrap();
    let fd = appmgr_sandbox::plan_memfd(&plan).unwrap();
    let mut c = Command::new("/usr/bin/env");
    c.env("LD_PRELOAD", "/nonexistent/evil.so")
        .env("GCONV_PATH", "/tmp/evil")
        .arg(env!("CARGO_BIN_EXE_appmgr-launch"))
        .arg("--plan-fd")
        .arg(fd.as_raw_fd().to_string())
        .stdin(Stdio::null());
    appmgr_sandbox::sys::keep_fd_in_child(&mut c, fd.as_raw_fd());
    let o = c.output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    let env = strs(&v["env"]);
    assert!(!env.is_empty());
    for e in env {
        assert!(!e.starts_with("LD_") && !e.starts_with("GCONV_PATH"), "{e}");
    }
}

#[test]
fn exit_status_is_the_apps() {
    require_root!("namespaces, mounts, setuid");
    let w = World::new();
    let mut s = w.spec(&["-c", "exit 7"]);
    s.command = "/usr/bin/sh".into();
    assert_eq!(launch(&s).code, 7);
    let mut s = w.spec(&["-c", "kill -TERM $$; sleep 5"]);
    s.command = "/usr/bin/sh".into();
    assert_eq!(launch(&s).code, 128 + libc::SIGTERM);
    let mut s = w.spec(&[]);
    s.command = "missing".into();
    let o = launch(&s);
    assert_eq!(o.code, 127, "{}", o.stderr);
}

fn children(pid: u32) -> Vec<u32> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|s| s.parse().ok())
        .collect()
}

fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => {
            let state = s
                .rsplit(')')
                .next()
                .unwrap_or("")
                .trim_start()
                .chars()
                .next();
            state != Some('Z') && state != Some('X')
        }
        Err(_) => false,
    }
}

#[test]
fn signals_are_forwarded_to_the_app() {
    require_root!("namespaces, mounts, setuid");
    let w = World::new();
    let mut s = w.spec(&[
        "-c",
        "trap 'echo got-usr1; exit 3' USR1; echo ready; while :; do sleep 0.05; done",
    ]);
    s.command = "/usr/bin/sh".into();
    let (mut cmd, fd) = command(&s);
    let mut child = cmd.stdout(Stdio::piped()).spawn().unwrap();
    drop(fd);
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "ready");
    rustix::process::kill_process(
        rustix::process::Pid::from_child(&child),
        rustix::process::Signal::USR1,
    )
    .unwrap();
    line.clear();
    out.read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "got-usr1");
    assert_eq!(child.wait().unwrap().code(), Some(3));
}

#[test]
fn launcher_death_kills_the_sandbox() {
    require_root!("namespaces, mounts, setuid");
    let w = World::new();
    let (mut cmd, fd) = command(&w.spec(&["sleep"]));
    let mut child = cmd.stdout(Stdio::piped()).spawn().unwrap();
    drop(fd);
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "ready");
    let init = children(child.id());
    assert_eq!(init.len(), 1);
    let app = children(init[0]);
    assert_eq!(app.len(), 1);
    // The launcher itself stays in the host's mount namespace and root.
    let lns = std::fs::read_link(format!("/proc/{}/ns/mnt", child.id())).unwrap();
    assert_eq!(lns.display().to_string(), host_ns("mnt"));
    let lroot = std::fs::read_link(format!("/proc/{}/root", child.id())).unwrap();
    assert_eq!(lroot, Path::new("/"));
    child.kill().unwrap();
    child.wait().unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while (alive(init[0]) || alive(app[0])) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(!alive(init[0]), "init survived the launcher");
    assert!(!alive(app[0]), "app survived the launcher");
}

#[test]
fn data_dir_replaced_by_symlink_is_refused() {
    require_root!("namespaces, mounts, setuid");
    let w = World::new();
    let victim = w.root.join("victim");
    std::fs::create_dir_all(&victim).unwrap();
    std::fs::write(victim.join("keep"), "x").unwrap();
    let before = std::fs::metadata(&victim).unwrap();
    let data = w.root.join("data/org.example.Probe");
    // absolute symlink, relative `../..` symlink, and a symlinked parent
    for (link, target) in [
        (data.clone(), victim.clone()),
        (data.clone(), PathBuf::from("../..")),
    ] {
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let o = launch(&w.spec(&[]));
        assert_eq!(o.code, appmgr_sandbox::EXIT_REFUSED, "{}", o.stdout);
        assert!(o.stderr.contains("symlink"), "{}", o.stderr);
        assert!(o.stdout.is_empty());
        std::fs::remove_file(&link).unwrap();
    }
    let linked_parent = w.root.join("data-link");
    std::os::unix::fs::symlink(w.root.join("data"), &linked_parent).unwrap();
    let mut s = w.spec(&[]);
    s.data_dir = linked_parent.join("org.example.Probe");
    let o = launch(&s);
    assert_eq!(o.code, appmgr_sandbox::EXIT_REFUSED);
    assert!(
        !data.exists(),
        "nothing created through the symlinked parent"
    );
    // the targets are untouched
    let after = std::fs::metadata(&victim).unwrap();
    assert_eq!(
        (before.uid(), before.gid(), before.mode(), before.mtime()),
        (after.uid(), after.gid(), after.mode(), after.mtime())
    );
    let top = std::fs::metadata(&w.root).unwrap();
    assert_eq!(top.uid(), 0);
    // a data dir owned by someone else is refused too
    std::fs::create_dir_all(&data).unwrap();
    let o = launch(&w.spec(&[]));
    assert_eq!(o.code, appmgr_sandbox::EXIT_REFUSED);
    assert!(o.stderr.contains("owned by uid 0"), "{}", o.stderr);
}

/// Start→exit latency of a trivial app (run with `--ignored --nocapture`).
#[test]
#[ignore]
fn latency() {
    require_root!("namespaces, mounts, setuid");
    let w = World::new();
    let mut s = w.spec(&[]);
    s.command = "/usr/bin/true".into();
    let _ = launch(&s); // warm the seccomp cache
    if let Some(out) = std::env::var_os("APPMGR_PLAN_OUT") {
        // Keep the world for an external benchmark (bench against bwrap by hand).
        std::fs::write(out, serde_json::to_vec(&build_plan(&s).unwrap()).unwrap()).unwrap();
        std::mem::forget(w);
        return;
    }
    let mut v = Vec::new();
    for _ in 0..200 {
        let (mut cmd, _fd) = command(&s);
        let t = Instant::now();
        let st = cmd.status().unwrap();
        v.push(t.elapsed());
        assert!(st.success());
    }
    v.sort();
    eprintln!(
        "appmgr-launch start→exit: median {:?}, p90 {:?}",
        v[v.len() / 2],
        v[v.len() * 9 / 10]
    );
}

/// The launcher re-checks what it must not trust from the plan's producer.
#[test]
fn launcher_refuses_bad_plans() {
    require_root!("namespaces, mounts, setuid");
    use std::os::fd::AsRawFd;
    let w = World::new();
    let good = build_plan(&w.spec(&[])).unwrap();
    let mut bad_version = good.clone();
    bad_version.version += 1;
    let mut root_uid = good.clone();
    root_uid.uid = 0;
    let mut other_list = good.clone();
    other_list.seccomp.list_sha256 = "00".repeat(32);
    for (what, plan, want) in [
        (
            "plan version",
            bad_version,
            appmgr_sandbox::EXIT_LAUNCH_FAILED,
        ),
        ("uid 0", root_uid, appmgr_sandbox::EXIT_REFUSED),
        (
            "seccomp list",
            other_list,
            appmgr_sandbox::EXIT_LAUNCH_FAILED,
        ),
    ] {
        let fd = appmgr_sandbox::plan_memfd(&plan).unwrap();
        let mut c = Command::new(env!("CARGO_BIN_EXE_appmgr-launch"));
        c.arg("--plan-fd")
            .arg(fd.as_raw_fd().to_string())
            .env_clear()
            .stdin(Stdio::null());
        appmgr_sandbox::sys::keep_fd_in_child(&mut c, fd.as_raw_fd());
        let o = c.output().unwrap();
        assert_eq!(o.status.code(), Some(want), "{what}");
        assert!(o.stdout.is_empty(), "{what}: the app ran");
    }
    // not a plan at all
    let o = Command::new(env!("CARGO_BIN_EXE_appmgr-launch"))
        .args(["--plan-fd", "0"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_ne!(o.status.code(), Some(0));
}

/// The app joins the cgroups it is given before it runs, and only the app: init is in the
/// helper cgroup, placed there by the launcher, which stays in its caller's cgroup.
/// Inside, the app sees its own cgroup as the root (cgroup namespace).
#[test]
fn sandbox_runs_in_the_given_cgroup() {
    require_root!("namespaces, mounts, setuid");
    let pids = Path::new("/sys/fs/cgroup/pids");
    if !pids.join("cgroup.procs").exists() {
        eprintln!("skipped: no cgroup v1 pids hierarchy");
        return;
    }
    let cg = pids.join(format!("appmgr-test-{}", std::process::id()));
    let helper = pids.join(format!("appmgr-test-{}-launch", std::process::id()));
    std::fs::create_dir(&cg).unwrap();
    std::fs::create_dir(&helper).unwrap();
    let w = World::new();
    let mut s = w.spec(&["sleep"]);
    s.cgroup_procs = vec![cg.join("cgroup.procs")];
    s.helper_cgroup_procs = vec![helper.join("cgroup.procs")];
    let (mut cmd, fd) = command(&s);
    let mut child = cmd.stdout(Stdio::piped()).spawn().unwrap();
    drop(fd);
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    let init = children(child.id())[0];
    let app = children(init)[0];
    let procs = std::fs::read_to_string(cg.join("cgroup.procs")).unwrap();
    let helpers = std::fs::read_to_string(helper.join("cgroup.procs")).unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
    let sorted = |t: &str| {
        let mut v: Vec<String> = t.split_whitespace().map(str::to_string).collect();
        v.sort();
        v
    };
    assert_eq!(sorted(&procs), vec![app.to_string()], "only the app");
    assert_eq!(sorted(&helpers), vec![init.to_string()], "only init");
    // inside, the cgroup namespace makes the app's cgroup the root
    let mut s = w.spec(&[]);
    s.cgroup_procs = vec![cg.join("cgroup.procs")];
    let r = report(&s);
    let line = r["cgroup"]
        .as_str()
        .unwrap()
        .lines()
        .find(|l| l.contains(":pids:"))
        .unwrap()
        .to_string();
    assert!(line.ends_with(":pids:/"), "{line}");
    let deadline = Instant::now() + Duration::from_secs(5);
    for d in [&cg, &helper] {
        while std::fs::remove_dir(d).is_err() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// When init cannot be placed in its helper cgroup, the launch fails before the app is
/// forked: exit 125 naming the file, init gone, nothing ever in the app's cgroup, and the
/// app never ran (the probe's `sleep` prints a line first thing).
#[test]
fn a_failed_placement_of_init_starts_nothing() {
    require_root!("namespaces, mounts, setuid");
    let pids = Path::new("/sys/fs/cgroup/pids");
    if !pids.join("cgroup.procs").exists() {
        eprintln!("skipped: no cgroup v1 pids hierarchy");
        return;
    }
    let cg = pids.join(format!("appmgr-test-noplace-{}", std::process::id()));
    std::fs::create_dir(&cg).unwrap();
    let missing = pids.join(format!("appmgr-test-noplace-{}-launch", std::process::id()));
    let w = World::new();
    let mut s = w.spec(&["sleep"]);
    s.cgroup_procs = vec![cg.join("cgroup.procs")];
    s.helper_cgroup_procs = vec![missing.join("cgroup.procs")];
    let (mut cmd, fd) = command(&s);
    let started = Instant::now();
    let out = cmd.output().expect("spawn launcher");
    drop(fd);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(125), "{stderr}");
    assert!(
        stderr.contains("place init in cgroup") && stderr.contains(&*missing.to_string_lossy()),
        "{stderr}"
    );
    assert!(started.elapsed() < Duration::from_secs(10), "bounded");
    assert_eq!(
        std::fs::read_to_string(cg.join("cgroup.procs")).unwrap(),
        "",
        "nothing joined the app's cgroup"
    );
    assert!(out.stdout.is_empty(), "the app ran: {:?}", out.stdout);
    assert!(!missing.exists());
    std::fs::remove_dir(&cg).unwrap();
}

/// A tiny static helper for the socket tests (busybox has no unix-socket client):
/// `helper notify MSG` sends MSG to `$NOTIFY_SOCKET` (sd_notify); `helper connect PATH`
/// connects a stream socket and writes `hello`. Built with rustc once per test run.
fn sock_helper() -> PathBuf {
    static P: OnceLock<PathBuf> = OnceLock::new();
    P.get_or_init(|| {
        let exe = std::env::current_exe().unwrap();
        let dir = exe.ancestors().nth(3).unwrap().join("sock-helper");
        std::fs::create_dir_all(&dir).unwrap();
        let src = dir.join("helper.rs");
        std::fs::write(
            &src,
            r#"
use std::io::Write;
use std::os::unix::net::{UnixDatagram, UnixStream};
fn main() {
    let a: Vec<String> = std::env::args().collect();
    match a[1].as_str() {
        "notify" => {
            let path = std::env::var("NOTIFY_SOCKET").expect("NOTIFY_SOCKET is not set");
            let s = UnixDatagram::unbound().expect("socket");
            s.send_to(a[2].as_bytes(), &path).expect("sendto");
        }
        "connect" => {
            let mut s = UnixStream::connect(&a[2]).expect("connect");
            s.write_all(b"hello").expect("write");
        }
        _ => std::process::exit(2),
    }
}
"#,
        )
        .unwrap();
        let out = dir.join("helper");
        let st = Command::new(std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into()))
            .args([
                "--edition",
                "2021",
                "-C",
                "target-feature=+crt-static",
                "-o",
            ])
            .arg(&out)
            .arg(&src)
            .status()
            .expect("run rustc to build the socket helper");
        assert!(st.success(), "building the socket helper failed");
        out
    })
    .clone()
}

fn add_helper(w: &World) {
    std::fs::copy(sock_helper(), w.root.join("app/files/bin/helper")).unwrap();
}

fn sh(w: &World, script: &str) -> LaunchSpec {
    let mut s = w.spec(&["-c", script]);
    s.command = "/usr/bin/sh".into();
    s
}

fn world_writable(p: &Path) {
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o666)).unwrap();
}

#[test]
fn notify_socket_reaches_the_caller() {
    require_root!("namespaces, mounts, setuid");
    let w = World::new();
    add_helper(&w);
    let host = w.root.join("notify.sock");
    let rx = std::os::unix::net::UnixDatagram::bind(&host).unwrap();
    // The daemon's part: the app's uid may write to the socket.
    world_writable(&host);
    rx.set_nonblocking(true).unwrap();
    let script = "echo \"ns=${NOTIFY_SOCKET-unset}\"; test -S /run/appmgr/notify && echo sock; \
                  /app/bin/helper notify READY=1";

    let mut s = sh(&w, script);
    s.notify_socket = Some(host.clone());
    let o = launch(&s);
    assert_eq!(o.code, 0, "{}\n{}", o.stderr, o.stdout);
    assert_eq!(o.stdout, "ns=/run/appmgr/notify\nsock\n");
    // sendto on a unix datagram socket has queued the message before the app exited.
    let mut buf = [0u8; 64];
    let n = rx
        .recv(&mut buf)
        .expect("READY=1 was queued on the host socket");
    assert_eq!(&buf[..n], b"READY=1");

    // Not set: no variable, no socket, nothing arrives.
    let o = launch(&sh(&w, script));
    assert_ne!(o.code, 0);
    assert!(o.stdout.starts_with("ns=unset\n"), "{}", o.stdout);
    assert!(!o.stdout.contains("sock"), "{}", o.stdout);
    assert_eq!(
        rx.recv(&mut buf).unwrap_err().kind(),
        std::io::ErrorKind::WouldBlock
    );
}

#[test]
fn socket_sources_must_be_sockets() {
    require_root!("namespaces, mounts, setuid");
    let w = World::new();
    let file = w.root.join("not-a-socket");
    std::fs::write(&file, "x").unwrap();
    let real = w.root.join("real.sock");
    let _l = std::os::unix::net::UnixDatagram::bind(&real).unwrap();
    let link = w.root.join("link.sock");
    std::os::unix::fs::symlink(&real, &link).unwrap();
    for (p, why, want) in [
        (file, "not a socket", appmgr_sandbox::EXIT_REFUSED),
        (link, "symlink", appmgr_sandbox::EXIT_REFUSED),
        (
            w.root.join("missing.sock"),
            "No such file",
            appmgr_sandbox::EXIT_LAUNCH_FAILED,
        ),
    ] {
        let mut s = w.spec(&[]);
        s.notify_socket = Some(p.clone());
        let o = launch(&s);
        assert_eq!(o.code, want, "{}", p.display());
        assert!(o.stderr.contains(why), "{}: {}", p.display(), o.stderr);
        assert!(o.stdout.is_empty());
    }
}

#[test]
fn system_bus_only_with_a_dbus_grant() {
    require_root!("namespaces, mounts, setuid");
    let w = World::new();
    add_helper(&w);
    let host = w.root.join("system_bus_socket");
    let l = std::os::unix::net::UnixListener::bind(&host).unwrap();
    world_writable(&host);
    l.set_nonblocking(true).unwrap();
    let script = "echo \"bus=${DBUS_SYSTEM_BUS_ADDRESS-unset}\"; \
                  test -S /run/dbus/system_bus_socket && echo sock; \
                  /app/bin/helper connect /run/dbus/system_bus_socket && echo connected";

    // The field is set in both cases; only the grant decides.
    let mut s = sh(&w, script);
    s.system_bus_socket = Some(host.clone());
    let o = launch(&s);
    assert!(o.stdout.starts_with("bus=unset\n"), "{}", o.stdout);
    assert!(!o.stdout.contains("sock") && !o.stdout.contains("connected"));
    assert_eq!(
        l.accept().unwrap_err().kind(),
        std::io::ErrorKind::WouldBlock,
        "the app reached the bus without a grant"
    );

    s.permissions
        .dbus_talk
        .insert(appmgr_types::BusName::new("org.example.Service").unwrap());
    let o = launch(&s);
    assert_eq!(o.code, 0, "{}\n{}", o.stderr, o.stdout);
    assert_eq!(
        o.stdout,
        "bus=unix:path=/run/dbus/system_bus_socket\nsock\nconnected\n"
    );
    // The connection waits in the backlog even though the app is gone.
    let (mut c, _) = l.accept().expect("the app connected to the bus socket");
    c.set_nonblocking(false).unwrap();
    let mut got = String::new();
    std::io::Read::read_to_string(&mut c, &mut got).unwrap();
    assert_eq!(got, "hello");
}

/// Display and audio sockets: bound with their variables for granted kinds (also with a
/// host-shared runtime dir at `XDG_RUNTIME_DIR`: no mount point is made in it), x11
/// left out while Wayland is offered, and a socket reached through a symlinked directory
/// refused (exit 4) without the app running.
#[test]
fn display_sockets_are_bound_outside_the_runtime_dir() {
    require_root!("namespaces, mounts, setuid");
    use appmgr_types::SocketName;
    let w = World::new();
    add_helper(&w);
    let (wl, x) = (w.root.join("wayland-0"), w.root.join("X0"));
    let _lw = std::os::unix::net::UnixListener::bind(&wl).unwrap();
    let _lx = std::os::unix::net::UnixListener::bind(&x).unwrap();
    world_writable(&wl);
    world_writable(&x);
    let script = "echo \"w=${WAYLAND_DISPLAY-unset} d=${DISPLAY-unset}\"; \
                  /app/bin/helper connect /run/appmgr/wayland-0 && echo wayland; \
                  /app/bin/helper connect /tmp/.X11-unix/X0 && echo x11; \
                  ls -A \"$XDG_RUNTIME_DIR\"";
    let mut s = sh(&w, script);
    let rundir = w.root.join("rundir");
    s.runtime_dir = Some(rundir.clone());
    s.permissions.sockets = [SocketName::Wayland, SocketName::X11].into();
    s.host_sockets = [
        (SocketName::Wayland, wl.clone()),
        (SocketName::X11, x.clone()),
    ]
    .into();
    let o = launch(&s);
    assert_eq!(o.code, 0, "{}\n{}", o.stderr, o.stdout);
    assert_eq!(o.stdout, "w=/run/appmgr/wayland-0 d=unset\nwayland\n");
    assert_eq!(std::fs::read_dir(&rundir).unwrap().count(), 0);
    // No Wayland offered: x11 is bound instead.
    s.host_sockets.remove(&SocketName::Wayland);
    let o = launch(&s);
    assert_eq!(o.code, 0, "{}\n{}", o.stderr, o.stdout);
    assert_eq!(o.stdout, "w=unset d=:0\nx11\n");
    // A directory on the way replaced by a symlink: refused, the app never runs.
    let real = w.root.join("real");
    std::fs::create_dir(&real).unwrap();
    let sock = real.join("wayland-0");
    let _lr = std::os::unix::net::UnixListener::bind(&sock).unwrap();
    std::os::unix::fs::symlink(&real, w.root.join("linked")).unwrap();
    let via = w.root.join("linked/wayland-0");
    s.host_sockets = [(SocketName::Wayland, via.clone())].into();
    let o = launch(&s);
    assert_refused(&o, &via, "symlink");
}

#[test]
fn standard_streams_are_the_callers() {
    require_root!("namespaces, mounts, setuid");
    use std::io::Read;
    use std::os::fd::AsFd;
    let w = World::new();
    let input = w.root.join("stdin.txt");
    std::fs::write(&input, "from-stdin\n").unwrap();
    let (out_r, out_w) = rustix::pipe::pipe().unwrap();
    let (err_r, err_w) = rustix::pipe::pipe().unwrap();
    let out_ino = rustix::fs::fstat(out_w.as_fd()).unwrap().st_ino;
    let err_ino = rustix::fs::fstat(err_w.as_fd()).unwrap().st_ino;
    let s = sh(
        &w,
        "cat; echo to-stderr >&2; busybox readlink /proc/self/fd/1; busybox readlink /proc/self/fd/2",
    );
    let (mut cmd, fd) = command(&s);
    cmd.stdin(std::fs::File::open(&input).unwrap())
        .stdout(Stdio::from(out_w))
        .stderr(Stdio::from(err_w));
    let mut child = cmd.spawn().unwrap();
    // Our copies of the write ends live in `cmd`: without dropping them, EOF never comes.
    drop(cmd);
    drop(fd);
    let mut out = String::new();
    std::fs::File::from(out_r).read_to_string(&mut out).unwrap();
    let mut err = String::new();
    std::fs::File::from(err_r).read_to_string(&mut err).unwrap();
    assert!(child.wait().unwrap().success(), "{err}");
    // The very same pipes, not copies relayed by the launcher.
    assert_eq!(
        out,
        format!("from-stdin\npipe:[{out_ino}]\npipe:[{err_ino}]\n")
    );
    assert_eq!(err, "to-stderr\n");
}

/// Host pids whose pid namespace is `ns` (a `/proc/PID/ns/pid` link text).
fn ns_members(ns: &str) -> Vec<u32> {
    let mut v: Vec<u32> = std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|p| {
            std::fs::read_link(format!("/proc/{p}/ns/pid"))
                .is_ok_and(|l| l.display().to_string() == ns)
        })
        .collect();
    v.sort();
    v
}

fn ppid(pid: u32) -> u32 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after = s.rsplit(')').next().unwrap();
    after.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// Starts `spec` detached with stdout and stderr in `out`.
fn detached(
    spec: &LaunchSpec,
    out: &Path,
) -> Result<appmgr_sandbox::DetachedInit, appmgr_sandbox::ExecError> {
    init_launcher_env();
    let plan = build_plan(spec).expect("plan");
    let f = std::fs::File::create(out).unwrap();
    appmgr_sandbox::spawn_detached(&plan, Stdio::from(f.try_clone().unwrap()), Stdio::from(f))
}

/// Reaps init through its pidfd, as appmgrd does; returns its exit status.
fn reap(init: &appmgr_sandbox::DetachedInit) -> Option<i32> {
    use std::os::fd::AsFd;
    let st = rustix::process::waitid(
        rustix::process::WaitId::PidFd(init.pidfd.as_fd()),
        rustix::process::WaitIdOptions::EXITED,
    )
    .unwrap()
    .expect("init exited");
    st.exit_status()
}

/// After a failed detached start, init (if any) has been reaped by `spawn_detached`.
fn assert_reaped(pid: Option<u32>) {
    if let Some(p) = pid.and_then(|p| rustix::process::Pid::from_raw(p as i32)) {
        let r = rustix::process::waitpid(Some(p), rustix::process::WaitOptions::NOHANG);
        assert_eq!(
            r.err(),
            Some(rustix::io::Errno::CHILD),
            "init {p:?} left behind"
        );
    }
}

#[test]
fn detached_leaves_only_init_beside_the_app() {
    require_root!("namespaces, mounts, setuid");
    let w = World::new();
    let out = w.root.join("out");
    let s = sh(
        &w,
        "id -u; cat /proc/self/status; echo ready; exec sleep 100",
    );
    let init = detached(&s, &out).expect("detached start");
    let deadline = Instant::now() + Duration::from_secs(10);
    let text = loop {
        let t = std::fs::read_to_string(&out).unwrap_or_default();
        if t.contains("ready") {
            break t;
        }
        assert!(Instant::now() < deadline, "no ready: {t}");
        std::thread::sleep(Duration::from_millis(10));
    };
    // Init is the caller's child (the launcher has exited), pid 1 of the sandbox.
    assert_eq!(ppid(init.pid), std::process::id());
    let status = std::fs::read_to_string(format!("/proc/{}/status", init.pid)).unwrap();
    let nspid = status.lines().find(|l| l.starts_with("NSpid:")).unwrap();
    assert_eq!(
        nspid.split_whitespace().collect::<Vec<_>>(),
        ["NSpid:", &init.pid.to_string(), "1"]
    );
    let ns = std::fs::read_link(format!("/proc/{}/ns/pid", init.pid))
        .unwrap()
        .display()
        .to_string();
    assert_ne!(ns, host_ns("pid"));
    let members = ns_members(&ns);
    assert_eq!(members.len(), 2, "init + app only: {members:?}");
    let app = *members.iter().find(|p| **p != init.pid).unwrap();
    assert_eq!(ppid(app), init.pid);
    // Same identity and confinement as a foreground launch.
    assert_eq!(
        text.lines().next(),
        Some(UID.to_string().as_str()),
        "{text}"
    );
    for want in [
        format!("Uid:\t{UID}\t{UID}\t{UID}\t{UID}"),
        "NoNewPrivs:\t1".into(),
        "Seccomp:\t2".into(),
        "CapEff:\t0000000000000000".into(),
        "CapBnd:\t0000000000000000".into(),
    ] {
        assert!(text.lines().any(|l| l == want), "{want} missing: {text}");
    }
    // The launcher's ignored SIGPIPE (Rust runtime) does not reach the app.
    let ign = text
        .lines()
        .find_map(|l| l.strip_prefix("SigIgn:\t"))
        .unwrap();
    let ign = u64::from_str_radix(ign, 16).unwrap();
    assert_eq!(
        ign & (1 << (libc::SIGPIPE - 1)),
        0,
        "SIGPIPE ignored: {ign:x}"
    );
    // SIGTERM to init reaches the app; init exits with the app's status.
    rustix::process::kill_process(
        rustix::process::Pid::from_raw(init.pid as i32).unwrap(),
        rustix::process::Signal::TERM,
    )
    .unwrap();
    assert_eq!(reap(&init), Some(128 + libc::SIGTERM));
    let deadline = Instant::now() + Duration::from_secs(5);
    while alive(app) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(!alive(app), "app survived init");
}

#[test]
fn detached_init_exits_with_the_apps_status() {
    require_root!("namespaces, mounts, setuid");
    let w = World::new();
    let out = w.root.join("out");
    let init = detached(&sh(&w, "exit 7"), &out).expect("detached start");
    assert_eq!(reap(&init), Some(7));
    let init = detached(&sh(&w, "kill -KILL $$"), &out).expect("detached start");
    assert_eq!(reap(&init), Some(128 + libc::SIGKILL));
}

#[test]
fn detached_failures_leave_nothing_behind() {
    require_root!("namespaces, mounts, setuid");
    let w = World::new();
    let out = w.root.join("out");
    let launch_err = |r: Result<appmgr_sandbox::DetachedInit, appmgr_sandbox::ExecError>| match r {
        Err(appmgr_sandbox::ExecError::Launch {
            code,
            init,
            message,
        }) => (code, init, message),
        other => panic!("expected a launch error, got {other:?}"),
    };
    // The app cannot be executed: fails after init's set-up, in the app process.
    let mut s = w.spec(&[]);
    s.command = "missing".into();
    let (code, init, message) = launch_err(detached(&s, &out));
    assert_eq!(code, Some(appmgr_sandbox::EXIT_LAUNCH_FAILED));
    assert!(init.is_some());
    assert!(message.contains("/app/bin/missing"), "{message}");
    assert_reaped(init);
    let stderr = std::fs::read_to_string(&out).unwrap();
    assert_eq!(stderr.matches("/app/bin/missing").count(), 1, "{stderr}");
    // Init's own set-up fails (data dir replaced by a symlink).
    let data = w.root.join("data/org.example.Probe");
    let _ = std::fs::remove_dir_all(&data);
    std::os::unix::fs::symlink(w.root.join("runtime"), &data).unwrap();
    let (code, init, message) = launch_err(detached(&w.spec(&[]), &out));
    assert_eq!(code, Some(appmgr_sandbox::EXIT_REFUSED));
    assert!(init.is_some());
    assert!(message.contains("symlink"), "{message}");
    assert_reaped(init);
    std::fs::remove_file(&data).unwrap();
    // The launcher fails before creating init.
    init_launcher_env();
    let mut plan = build_plan(&w.spec(&[])).unwrap();
    plan.version += 1;
    let r = appmgr_sandbox::spawn_detached(&plan, Stdio::null(), Stdio::null());
    let (code, init, message) = launch_err(r);
    assert_eq!(code, Some(appmgr_sandbox::EXIT_LAUNCH_FAILED));
    assert_eq!(init, None);
    assert!(message.contains("plan version"), "{message}");
}

#[test]
fn detached_sandbox_runs_in_the_given_cgroup() {
    require_root!("namespaces, mounts, setuid");
    let pids = Path::new("/sys/fs/cgroup/pids");
    if !pids.join("cgroup.procs").exists() {
        eprintln!("skipped: no cgroup v1 pids hierarchy");
        return;
    }
    let cg = pids.join(format!("appmgr-test-detached-{}", std::process::id()));
    let helper = pids.join(format!(
        "appmgr-test-detached-{}-launch",
        std::process::id()
    ));
    std::fs::create_dir(&cg).unwrap();
    std::fs::create_dir(&helper).unwrap();
    let w = World::new();
    let out = w.root.join("out");
    let mut s = w.spec(&["sleep"]);
    s.cgroup_procs = vec![cg.join("cgroup.procs")];
    s.helper_cgroup_procs = vec![helper.join("cgroup.procs")];
    let init = detached(&s, &out).expect("detached start");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !std::fs::read_to_string(&out)
        .unwrap_or_default()
        .contains("ready")
    {
        assert!(Instant::now() < deadline, "no ready");
        std::thread::sleep(Duration::from_millis(10));
    }
    let app = children(init.pid);
    let procs = std::fs::read_to_string(cg.join("cgroup.procs")).unwrap();
    let helpers = std::fs::read_to_string(helper.join("cgroup.procs")).unwrap();
    let _ = rustix::process::pidfd_send_signal(&init.pidfd, rustix::process::Signal::KILL);
    reap(&init);
    assert_eq!(app.len(), 1);
    let got: Vec<&str> = procs.split_whitespace().collect();
    assert_eq!(got, vec![app[0].to_string()], "exactly the app");
    let got: Vec<&str> = helpers.split_whitespace().collect();
    assert_eq!(
        got,
        vec![init.pid.to_string()],
        "exactly init (the launcher has left)"
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    for d in [&cg, &helper] {
        while std::fs::remove_dir(d).is_err() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Host test nodes below /dev, removed on drop.
struct DevDir(PathBuf);
impl Drop for DevDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn mknod(path: &Path, major: u32, minor: u32, mode: u32, gid: u32) {
    let st = Command::new("mknod")
        .arg(path)
        .args(["c", &major.to_string(), &minor.to_string()])
        .status()
        .unwrap();
    assert!(st.success());
    std::os::unix::fs::chown(path, Some(0), Some(gid)).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// A granted `0660 root:GROUP` node is the app's own (a private node, uid-owned, 0600) and
/// opens read-write; the cgroup v2 device program, attached by the launcher, refuses a
/// node that was not granted even when it is bound into the sandbox (EPERM), and only the
/// program does: the same plan without it opens that node. Runs in the host's cgroup2
/// hierarchy (the `unified` mount of a hybrid host, or a v2 host's root), where device
/// programs work without any controller.
#[test]
fn device_program_allows_exactly_the_granted_nodes() {
    require_root!("namespaces, mounts, setuid");
    let base = [
        Path::new("/sys/fs/cgroup/unified"),
        Path::new("/sys/fs/cgroup"),
    ]
    .into_iter()
    .find(|b| {
        std::fs::read_to_string("/proc/self/mountinfo")
            .unwrap_or_default()
            .lines()
            .any(|l| l.contains(" - cgroup2 ") && l.split(' ').nth(4) == Some(b.to_str().unwrap()))
    });
    let Some(base) = base else {
        eprintln!("skipped: no cgroup2 mount");
        return;
    };
    let dir = DevDir(format!("/dev/appmgr-test-{}-bpf", std::process::id()).into());
    std::fs::create_dir_all(&dir.0).unwrap();
    let gpu = dir.0.join("gpu0");
    mknod(&gpu, 10, 229, 0o660, 4242); // /dev/fuse's numbers
    let sneaky = dir.0.join("sneaky");
    mknod(&sneaky, 10, 200, 0o666, 0); // /dev/net/tun's numbers, never granted
    let w = World::new();
    let g = gpu.display().to_string();
    let script = format!(
        "for f in {g} /dev/sneaky /dev/null /dev/zero; do \
           if err=$( (exec 3<>$f) 2>&1 ); then echo open:$f:ok; else echo open:$f:$err; fi; \
         done; ls -ln {g}"
    );
    let run = |filter: bool| {
        let cg = base.join(format!("appmgr-test-{}-bpf-{filter}", std::process::id()));
        std::fs::create_dir(&cg).unwrap();
        let mut s = sh(&w, &script);
        s.devices = vec![gpu.clone()];
        s.cgroup_procs = vec![cg.join("cgroup.procs")];
        if filter {
            use appmgr_cgroup::DeviceRule;
            let mut rules: Vec<DeviceRule> = appmgr_sandbox::STANDARD_DEVICE_NODES
                .iter()
                .map(|p| DeviceRule::of_node(Path::new(p)).unwrap())
                .collect();
            rules.extend(
                appmgr_sandbox::PTY_DEVICES
                    .iter()
                    .map(|(a, b)| DeviceRule::char(*a, *b)),
            );
            rules.push(DeviceRule::of_node(&gpu).unwrap());
            s.device_filter = Some(appmgr_sandbox::DeviceFilter {
                cgroup: cg.clone(),
                program: appmgr_cgroup::bpf_program(&rules),
            });
        }
        init_launcher_env();
        let mut plan = build_plan(&s).expect("plan");
        // A node the plan did not grant, made reachable anyway.
        plan.mounts.push(appmgr_sandbox::MountOp::Bind {
            source: appmgr_sandbox::BindSource::Device(sneaky.clone()),
            dest: "/dev/sneaky".into(),
            readonly: false,
            dev: true,
        });
        let (mut cmd, _fd) = launcher_command(&plan).expect("launcher command");
        let out = cmd.stdin(Stdio::null()).output().unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        while std::fs::remove_dir(&cg).is_err() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, out, err) = run(true);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains(&format!("open:{g}:ok")), "{out}");
    assert!(out.contains("open:/dev/null:ok"), "{out}");
    assert!(out.contains("open:/dev/zero:ok"), "{out}");
    assert!(
        out.contains("open:/dev/sneaky:") && out.contains("Operation not permitted"),
        "{out}"
    );
    let ls: Vec<&str> = out.lines().last().unwrap().split_whitespace().collect();
    assert_eq!(ls[0], "crw-------", "{out}");
    assert_eq!((ls[2], ls[3]), ("40123", "40123"), "{out}");
    assert_eq!((ls[4], ls[5]), ("10,", "229"), "{out}");
    // The host node is untouched.
    let m = std::fs::metadata(&gpu).unwrap();
    assert_eq!((m.uid(), m.gid(), m.mode() & 0o7777), (0, 4242, 0o660));
    // Without the program the bound node opens: the EPERM above is the program's.
    let (code, out, err) = run(false);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains("open:/dev/sneaky:ok"), "{out}");
}

/// Runs `script` with bash (job control on: `set -m`) as the session leader of a new
/// terminal (a pty from script(1)), `$L` being the launcher and `$P` a file with the plan
/// for `spec`. `typed` is what the operator types, in order: each text is written to the
/// terminal once the output shows its trigger (`""`: at once). Returns the terminal's
/// output (`\r` removed) once bash has exited (bounded: 60 s).
fn on_terminal(w: &World, spec: &LaunchSpec, script: &str, typed: &[(&str, &str)]) -> String {
    use std::io::{Read, Write};
    init_launcher_env();
    let plan = build_plan(spec).expect("plan");
    let plan_file = w.root.join("plan.json");
    std::fs::write(&plan_file, serde_json::to_vec(&plan).unwrap()).unwrap();
    let job = w.root.join("job.sh");
    std::fs::write(&job, format!("set -m\n{script}\n")).unwrap();
    let mut child = Command::new("script")
        .args(["-qec", &format!("bash {}", job.display()), "/dev/null"])
        .env("L", std::env::var("APPMGR_LAUNCH").unwrap())
        .env("P", &plan_file)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("script(1) from util-linux");
    let mut stdout = child.stdout.take().unwrap();
    let seen = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let reader = {
        let seen = seen.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = stdout.read(&mut buf) {
                if n == 0 {
                    break;
                }
                let text = String::from_utf8_lossy(&buf[..n]).replace('\r', "");
                seen.lock().unwrap().push_str(&text);
            }
        })
    };
    let mut stdin = child.stdin.take().unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut pending = typed.iter();
    let mut next = pending.next();
    let status = loop {
        if let Some((trigger, text)) = next {
            if seen.lock().unwrap().contains(trigger) {
                stdin.write_all(text.as_bytes()).unwrap();
                stdin.flush().unwrap();
                next = pending.next();
                continue;
            }
        }
        if let Some(st) = child.try_wait().unwrap() {
            break Some(st);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    drop(stdin);
    reader.join().unwrap();
    let out = seen.lock().unwrap().clone();
    assert!(
        status.is_some(),
        "the terminal session did not end in time:\n{out}"
    );
    out
}

fn has_line(out: &str, line: &str) -> bool {
    out.lines().any(|l| l == line)
}

/// The operator's terminal is read only by the foreground job. The app runs as a
/// background job of a shell that owns the terminal: its read stops the job (SIGTTIN)
/// instead of taking the line typed for the shell, which the shell then reads; every way
/// out of job control is refused; brought to the foreground, the app reads the next line.
#[test]
fn background_job_cannot_read_the_terminal() {
    require_root!("namespaces, mounts, setuid");
    let w = World::new();
    let out = on_terminal(
        &w,
        &w.spec(&["tty"]),
        r#""$L" --plan-fd 3 3<"$P" &
pid=$!
for i in $(seq 200); do s=$(cut -d' ' -f3 /proc/$pid/stat); [ "$s" = T ] && break; sleep 0.05; done
echo "launcher-state:$s"
IFS= read -r -t 10 line
echo "shell-read:$line"
fg %1 >/dev/null
echo "job-exit:$?""#,
        &[
            ("", "secret-typed-for-the-shell\n"),
            ("shell-read:", "granted-to-the-foreground-job\n"),
        ],
    );
    assert!(
        has_line(
            &out,
            "tty tiocspgrp=EPERM tiocnotty=EPERM tiocsctty=EPERM tiocsetd=EPERM setsid=EPERM"
        ),
        "{out}"
    );
    assert!(
        has_line(&out, "launcher-state:T"),
        "the job was not stopped:\n{out}"
    );
    assert!(
        !has_line(&out, "read:secret-typed-for-the-shell"),
        "the background app read the shell's input:\n{out}"
    );
    assert!(
        has_line(&out, "shell-read:secret-typed-for-the-shell"),
        "{out}"
    );
    assert!(
        has_line(&out, "read:granted-to-the-foreground-job"),
        "{out}"
    );
    assert!(has_line(&out, "job-exit:0"), "{out}");
}

/// In the foreground the app reads the terminal, and the terminal's INTR (Ctrl-C)
/// reaches it: the job ends with 130.
#[test]
fn foreground_job_reads_the_terminal_and_gets_ctrl_c() {
    require_root!("namespaces, mounts, setuid");
    let w = World::new();
    let out = on_terminal(
        &w,
        &w.spec(&["tty"]),
        r#""$L" --plan-fd 3 3<"$P"; echo "job-exit:$?""#,
        &[("tty ", "hello\n")],
    );
    assert!(has_line(&out, "read:hello"), "{out}");
    assert!(has_line(&out, "job-exit:0"), "{out}");

    let out = on_terminal(
        &w,
        &w.spec(&["sleep"]),
        r#""$L" --plan-fd 3 3<"$P"; r=$?; echo; echo "job-exit:$r""#,
        &[("ready", "\x03")],
    );
    assert!(has_line(&out, "job-exit:130"), "{out}");
}

/// A terminal that is not the job's controlling terminal (here: the launcher started in
/// a session of its own, so no job control can guard it) is not given to the app:
/// `/dev/null` instead, with a note; what was typed stays for the shell.
#[test]
fn foreign_terminal_is_not_given_to_the_app() {
    require_root!("namespaces, mounts, setuid");
    let w = World::new();
    let result = w.root.join("app-stdout");
    let out = on_terminal(
        &w,
        &w.spec(&["tty"]),
        &format!(
            r#"setsid -w "$L" --plan-fd 3 3<"$P" >{}
echo "job-exit:$?"
IFS= read -r -t 5 line
echo "shell-read:$line""#,
            result.display()
        ),
        &[("", "secret-typed-for-the-shell\n")],
    );
    let app = std::fs::read_to_string(&result).unwrap();
    assert!(
        app.ends_with("\nread:EOF\n") && app.starts_with("tty tiocspgrp=ENOTTY"),
        "{app}"
    );
    assert!(has_line(&out, "job-exit:0"), "{out}");
    for fd in [0, 2] {
        assert!(
            out.contains(&format!(
                "fd {fd} is a terminal that is not this job's controlling terminal: \
                 the app gets /dev/null instead"
            )),
            "{out}"
        );
    }
    assert!(!out.contains("fd 1 is a terminal"), "{out}");
    assert!(
        has_line(&out, "shell-read:secret-typed-for-the-shell"),
        "{out}"
    );
}

/// Kernel uevents (hotplug) reach no app: `socket(AF_NETLINK, _, NETLINK_KOBJECT_UEVENT)`
/// fails with EACCES with and without `network`, while a uevent triggered on the host
/// reaches the same probe outside the sandbox (so a socket in the sandbox would have
/// received it). NETLINK_ROUTE keeps working in both network setups.
#[test]
fn kernel_uevents_are_refused_to_every_app() {
    require_root!("namespaces, mounts, setuid");
    let trigger = || std::fs::write("/sys/class/mem/null/uevent", "change").unwrap();
    // Starts the probe, waits for its first line, triggers a uevent, returns all output.
    let with_trigger = |mut cmd: Command| -> String {
        use std::io::Read;
        let mut child = cmd.stdout(Stdio::piped()).spawn().unwrap();
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut first = String::new();
        out.read_line(&mut first).unwrap();
        trigger();
        let mut rest = String::new();
        out.read_to_string(&mut rest).unwrap();
        assert!(child.wait().unwrap().success());
        first + &rest
    };
    // Outside any sandbox (root, host network namespace): the uevent arrives.
    let mut host = Command::new(probe_bin());
    host.args(["uevent", "5"]);
    let got = with_trigger(host);
    assert!(
        got.starts_with("uevent socket=ok bind=ok\nreceived:change@/devices/virtual/mem/null"),
        "{got}"
    );

    let w = World::new();
    for network in [false, true] {
        let mut s = w.spec(&["uevent", "5"]);
        if network {
            s.permissions.network = appmgr_types::NetworkGrant::any();
            s.network = Some(own_network(7));
        }
        let (cmd, _fd) = command(&s);
        let got = with_trigger(cmd);
        assert_eq!(got, "uevent socket=EACCES\n", "network={network}");

        let mut s = w.spec(&["netlink-route"]);
        if network {
            s.permissions.network = appmgr_types::NetworkGrant::any();
            s.network = Some(own_network(7));
        }
        let o = launch(&s);
        assert_eq!(o.code, 0, "{}", o.stderr);
        let links: usize = o
            .stdout
            .trim()
            .strip_prefix("route socket=ok bind=ok send=ok links=")
            .unwrap_or_else(|| panic!("{}", o.stdout))
            .parse()
            .unwrap();
        // Its own network namespace: only lo, and eth0 with a network.
        assert_eq!(links, 1 + usize::from(network), "{}", o.stdout);
    }
}

// ---- Host paths under app-writable directories (docs/sandbox.md) ----

/// A directory's entries and its own metadata: what must not change when a launch is
/// refused (nothing created, chowned or chmodded in it).
fn snapshot(p: &Path) -> (Vec<String>, u32, u32, u32, i64) {
    let mut names: Vec<String> = std::fs::read_dir(p)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    let m = std::fs::symlink_metadata(p).unwrap();
    (names, m.uid(), m.gid(), m.mode(), m.mtime())
}

/// A directory "outside every grant" with a secret in it, and a share an app may write.
fn outside_and_share(w: &World) -> (PathBuf, PathBuf) {
    let outside = w.root.join("outside");
    std::fs::create_dir_all(outside.join("q")).unwrap();
    std::fs::write(outside.join("secret"), "outside-secret\n").unwrap();
    std::fs::write(outside.join("q/marker"), "outside-secret\n").unwrap();
    let share = w.root.join("share");
    std::fs::create_dir_all(&share).unwrap();
    std::fs::set_permissions(&share, std::fs::Permissions::from_mode(0o777)).unwrap();
    (outside, share)
}

fn grant(s: &mut LaunchSpec, p: &Path, access: &str) {
    s.permissions
        .filesystems
        .insert(format!("{}:{access}", p.display()).parse().unwrap());
}

/// Refused with exit 4, one line naming `path` and `why`, and the app never ran.
fn assert_refused(o: &Outcome, path: &Path, why: &str) {
    assert_eq!(
        o.code,
        appmgr_sandbox::EXIT_REFUSED,
        "{}: {}{}",
        path.display(),
        o.stderr,
        o.stdout
    );
    assert!(o.stdout.is_empty(), "the app ran: {}", o.stdout);
    let line = o.stderr.trim_end();
    assert!(!line.contains('\n'), "one line: {line}");
    assert!(
        line.starts_with("appmgr: org.example.Probe: refusing to launch: "),
        "{line}"
    );
    assert!(line.contains(&path.display().to_string()), "{line}");
    assert!(line.contains(why), "{line}");
}

/// Every kind of grant that names a host path, with a symlink planted where an app could
/// plant one: refused with exit 4 and a line naming the path, and nothing outside the
/// grant is created, bound, chowned or shown.
#[test]
fn planted_symlinks_are_refused_for_every_grant_kind() {
    require_root!("namespaces, mounts, setuid");
    let w = World::new();
    let (outside, share) = outside_and_share(&w);
    let before = snapshot(&outside);
    let script = |p: &Path| format!("cat {0}/secret {0}/q/marker; ls {0}", p.display());

    // Filesystem shares, ro and rw: the grant itself a symlink (absolute, relative, to
    // host /etc and /proc), or a symlinked parent inside the writable share.
    std::os::unix::fs::symlink(&outside, share.join("abs")).unwrap();
    std::os::unix::fs::symlink("../outside", share.join("rel")).unwrap();
    std::os::unix::fs::symlink("/etc", share.join("etc")).unwrap();
    std::os::unix::fs::symlink("/proc", share.join("proc")).unwrap();
    std::os::unix::fs::symlink(&outside, share.join("parent")).unwrap();
    for (p, access) in [
        (share.join("abs"), "ro"),
        (share.join("rel"), "rw"),
        (share.join("etc"), "ro"),
        (share.join("proc"), "rw"),
        (share.join("parent/q"), "rw"),
    ] {
        let mut s = sh(&w, &script(&p));
        grant(&mut s, &p, access);
        assert_refused(&launch(&s), &p, "symlink");
    }

    // A share nested in another writable share: refused before anything is mounted (the
    // inner mount point would be built through the bound host directory).
    std::fs::create_dir_all(share.join("inner")).unwrap();
    let mut s = sh(&w, "true");
    grant(&mut s, &share, "rw");
    grant(&mut s, &share.join("inner"), "ro");
    assert!(matches!(
        build_plan(&s),
        Err(appmgr_sandbox::PlanError::NestedGrant { .. })
    ));
    // The launcher does not trust the plan for it either: a target inside a bound host
    // directory is refused and nothing is created in the host directory.
    // (A second grant that sorts after the share, its target moved into the share.)
    let other = w.root.join("z-other");
    std::fs::create_dir_all(&other).unwrap();
    let mut s = sh(&w, "true");
    grant(&mut s, &share, "rw");
    grant(&mut s, &other, "ro");
    let mut plan = build_plan(&s).unwrap();
    let mnt = format!("{}/mnt", share.display());
    for m in plan.mounts.iter_mut() {
        if let appmgr_sandbox::MountOp::Bind { source, dest, .. } = m {
            if matches!(source, appmgr_sandbox::BindSource::Granted(p) if p == &other) {
                *dest = mnt.clone();
            }
        }
    }
    let share_before = snapshot(&share);
    let o = launch_plan(&plan);
    assert_refused(&o, Path::new(&mnt), "bound host directory");
    assert_eq!(
        snapshot(&share),
        share_before,
        "nothing created in the share"
    );

    // HOME (data dir) and the runtime dir planted as symlinks to the outside directory.
    let data = w.root.join("data/org.example.Probe");
    let _ = std::fs::remove_dir(&data);
    std::os::unix::fs::symlink(&outside, &data).unwrap();
    assert_refused(&launch(&sh(&w, "true")), &data, "symlink");
    std::fs::remove_file(&data).unwrap();
    let rundir = w.root.join("rundir");
    std::os::unix::fs::symlink(&outside, &rundir).unwrap();
    let mut s = sh(&w, "true");
    s.runtime_dir = Some(rundir.clone());
    assert_refused(&launch(&s), &rundir, "symlink");

    // A device node reached through a symlinked directory below /dev.
    let devdir = w.root.join("devdir");
    std::fs::create_dir_all(&devdir).unwrap();
    let c = std::ffi::CString::new(devdir.join("null").display().to_string()).unwrap();
    rustix::fs::mknodat(
        rustix::fs::CWD,
        c.as_c_str(),
        rustix::fs::FileType::CharacterDevice,
        rustix::fs::Mode::from_raw_mode(0o666),
        rustix::fs::makedev(1, 3),
    )
    .unwrap();
    let devlink = PathBuf::from(format!("/dev/appmgr-test-link-{}", std::process::id()));
    std::os::unix::fs::symlink(&devdir, &devlink).unwrap();
    let mut s = sh(&w, "true");
    s.devices = vec![devlink.join("null")];
    let o = launch(&s);
    std::fs::remove_file(&devlink).unwrap();
    assert_refused(&o, &devlink.join("null"), "symlink");

    // A socket below a symlinked directory.
    let sockdir = w.root.join("sockdir");
    std::fs::create_dir_all(&sockdir).unwrap();
    let _l = std::os::unix::net::UnixDatagram::bind(sockdir.join("n.sock")).unwrap();
    std::os::unix::fs::symlink(&sockdir, share.join("sock")).unwrap();
    let mut s = sh(&w, "true");
    s.notify_socket = Some(share.join("sock/n.sock"));
    assert_refused(&launch(&s), &share.join("sock/n.sock"), "symlink");

    // A deny rule bypassed through a symlink in a granted share...
    let mut s = sh(&w, &script(&share.join("abs")));
    s.deny_paths = vec![outside.clone()];
    grant(&mut s, &share.join("abs"), "ro");
    assert_refused(&launch(&s), &share.join("abs"), "symlink");
    // ...and compared on what was resolved: the deny rule names the directory through an
    // alias (a symlink the administrator made), the grant names it directly.
    let alias = w.root.join("alias");
    std::os::unix::fs::symlink(&outside, &alias).unwrap();
    let mut s = sh(&w, &script(&outside));
    s.deny_paths = vec![alias.clone()];
    grant(&mut s, &outside, "ro");
    assert_refused(&launch(&s), &outside, "protected path");
    // A grant whose parent is denied under another name, and one that contains it.
    let mut s = sh(&w, &script(&outside));
    s.deny_paths = vec![alias.join("q")];
    grant(&mut s, &outside, "ro");
    assert_refused(&launch(&s), &outside, "overlapping");

    // Nothing outside the grants changed (not created, chowned or chmodded).
    assert_eq!(snapshot(&outside), before);
}

/// Host /etc and /proc under another name (a bind mount the request string does not
/// show): compared by device and inode, refused.
#[test]
fn protected_host_paths_are_compared_on_what_was_resolved() {
    require_root!("namespaces, mounts, setuid");
    let w = World::new();
    for host in ["/etc", "/proc"] {
        let alias = w.root.join(format!("alias{}", host.replace('/', "-")));
        std::fs::create_dir_all(&alias).unwrap();
        // In a private mount namespace of a child, so the host's mount table is untouched:
        // the launcher inherits it.
        let mut s = sh(&w, &format!("ls {}", alias.display()));
        grant(&mut s, &alias, "ro");
        let plan = build_plan(&s).unwrap();
        let fd = appmgr_sandbox::plan_memfd(&plan).unwrap();
        use std::os::fd::AsRawFd;
        let mut c = Command::new("unshare");
        c.args(["-m", "--propagation", "private", "sh", "-c"])
            .arg(format!(
                "mount --bind {host} {} && exec \"$0\" --plan-fd {}",
                alias.display(),
                fd.as_raw_fd()
            ))
            .arg(env!("CARGO_BIN_EXE_appmgr-launch"))
            .stdin(Stdio::null());
        appmgr_sandbox::sys::keep_fd_in_child(&mut c, fd.as_raw_fd());
        let out = c.output().unwrap();
        let o = Outcome {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into(),
            stderr: String::from_utf8_lossy(&out.stderr).into(),
        };
        assert_refused(&o, &alias, &format!("protected path {host}"));
        assert_eq!(std::fs::read_dir(&alias).unwrap().count(), 0);
    }
}

fn launch_plan(plan: &appmgr_sandbox::LaunchPlan) -> Outcome {
    init_launcher_env();
    let (mut cmd, _fd) = launcher_command(plan).expect("launcher command");
    let out = cmd.stdin(Stdio::null()).output().expect("spawn launcher");
    Outcome {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into(),
        stderr: String::from_utf8_lossy(&out.stderr).into(),
    }
}

/// One app (another uid) flips a directory and a parent directory of another app's
/// grants between real directories and symlinks to a directory outside every grant,
/// while the other app is launched a few hundred times. Every launch is refused (exit 4)
/// or sees only the grant's content, and nothing is created or bound outside.
#[test]
fn symlink_race_in_a_shared_grant_never_escapes() {
    require_root!("namespaces, mounts, setuid");
    let w = World::new();
    let (outside, share) = outside_and_share(&w);
    let flipper_uid = UID + 1;
    std::os::unix::fs::chown(&share, Some(flipper_uid), Some(flipper_uid)).unwrap();
    std::fs::set_permissions(&share, std::fs::Permissions::from_mode(0o755)).unwrap();
    let before = snapshot(&outside);
    // World-writable: an escape of the app's writes would show here.
    let sentinel = w.root.join("sentinel");
    std::fs::create_dir_all(&sentinel).unwrap();
    std::fs::set_permissions(&sentinel, std::fs::Permissions::from_mode(0o777)).unwrap();
    let launches: usize = std::env::var("APPMGR_RACE_LAUNCHES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300);
    // The other app's loop: `flip` (granted) and `p` (parent of the granted `p/q`) are
    // in turn real directories holding grant content and symlinks to `outside`.
    let loop_script = format!(
        "cd {share} || exit 1; while :; do \
           rm -rf flip p; mkdir -p flip p/q; echo grant > flip/marker; echo grant > p/q/marker; \
           rm -rf flip p; ln -s {out} flip; ln -s {out} p; \
           rm -f flip p; ln -s {sent} flip; ln -s ../sentinel p; \
         done",
        share = share.display(),
        out = outside.display(),
        sent = sentinel.display(),
    );
    // Killed on drop: a failed assertion must not leave the loop running.
    struct Flipper(std::process::Child);
    impl Drop for Flipper {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let flipper = Flipper({
        use std::os::unix::process::CommandExt;
        Command::new("/bin/sh")
            .args(["-c", &loop_script])
            .uid(flipper_uid)
            .gid(flipper_uid)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    });
    let (flip, q) = (share.join("flip"), share.join("p/q"));
    let script = format!(
        "cat {0}/marker {1}/marker 2>&1; ls {0} {1} 2>&1; mkdir {0}/made {1}/made 2>&1; true",
        flip.display(),
        q.display()
    );
    let mut s = sh(&w, &script);
    grant(&mut s, &flip, "rw");
    grant(&mut s, &q, "rw");
    let (mut refused, mut ran, mut vanished) = (0, 0, 0);
    let start = Instant::now();
    for i in 0..launches {
        let o = launch(&s);
        match o.code {
            0 => {
                ran += 1;
                assert!(
                    !o.stdout.contains("outside-secret"),
                    "launch {i}: {}",
                    o.stdout
                );
                assert!(!o.stdout.contains("secret"), "launch {i}: {}", o.stdout);
            }
            4 => {
                refused += 1;
                assert!(o.stdout.is_empty());
                assert!(
                    o.stderr.contains(&flip.display().to_string())
                        || o.stderr.contains(&q.display().to_string()),
                    "{}",
                    o.stderr
                );
            }
            // The granted directory was removed between its opening and the bind.
            125 if o.stderr.contains("No such file or directory") && o.stdout.is_empty() => {
                vanished += 1
            }
            c => panic!("launch {i}: unexpected exit {c}: {}{}", o.stderr, o.stdout),
        }
    }
    let elapsed = start.elapsed();
    drop(flipper);
    eprintln!(
        "race: {launches} launches in {:.1} s ({:.1} ms each): {ran} ran, {refused} refused, \
         {vanished} lost their source",
        elapsed.as_secs_f64(),
        elapsed.as_secs_f64() * 1000.0 / launches as f64
    );
    assert!(refused > 0, "the flipper never raced a launch");
    assert_eq!(
        snapshot(&outside),
        before,
        "nothing created outside the grant"
    );
    assert_eq!(
        std::fs::read_dir(&sentinel).unwrap().count(),
        0,
        "nothing created in the sentinel"
    );
}

// ---- Per-app networks (docs/network.md) ----

/// A network namespace of the test's own with a veth to the host: the "internet" the
/// apps are allowed (or not) to reach. Removed on drop.
struct Remote {
    name: String,
    host_if: String,
    addr: std::net::Ipv4Addr,
}

fn ip(args: &[&str]) {
    let o = Command::new("ip").args(args).output().expect("ip runs");
    assert!(
        o.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

impl Remote {
    /// `10.236.N.2/30`, the host end `10.236.N.1`.
    fn new(n: u8) -> Remote {
        let name = format!("amt-remote-{n}");
        let host_if = format!("amt-r{n}");
        let _ = Command::new("ip").args(["netns", "del", &name]).output();
        let _ = Command::new("ip").args(["link", "del", &host_if]).output();
        ip(&["netns", "add", &name]);
        ip(&[
            "link", "add", &host_if, "type", "veth", "peer", "name", "eth0", "netns", &name,
        ]);
        ip(&["addr", "add", &format!("10.236.{n}.1/30"), "dev", &host_if]);
        ip(&["link", "set", &host_if, "up"]);
        for args in [
            vec!["link", "set", "lo", "up"],
            vec!["link", "set", "eth0", "up"],
        ] {
            let mut a = vec!["-n", name.as_str()];
            a.extend(args);
            ip(&a);
        }
        let addr = format!("10.236.{n}.2/30");
        ip(&["-n", &name, "addr", "add", &addr, "dev", "eth0"]);
        let gw = format!("10.236.{n}.1");
        ip(&["-n", &name, "route", "add", "default", "via", &gw]);
        // Not forwarding: the host's side of a remote is like an uplink; appmgr makes replies
        // to apps come back through it.
        Remote {
            name,
            host_if,
            addr: format!("10.236.{n}.2").parse().unwrap(),
        }
    }

    /// A TCP server on `port` inside the namespace that answers `hi-PORT` to everyone,
    /// and reports each peer address it saw.
    fn serve(&self, port: u16) -> std::sync::mpsc::Receiver<std::net::IpAddr> {
        let (tx, rx) = std::sync::mpsc::channel();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let addr = self.addr;
        in_netns(&self.name, move || {
            let l = std::net::TcpListener::bind((addr, port)).unwrap();
            ready_tx.send(()).unwrap();
            for s in l.incoming() {
                let Ok(mut s) = s else { continue };
                use std::io::Write;
                let _ = tx.send(s.peer_addr().unwrap().ip());
                let _ = writeln!(s, "hi-{port}");
            }
        });
        ready_rx.recv().unwrap();
        rx
    }
}

impl Remote {
    /// Whether a TCP connection from inside this namespace to `to` succeeds (2 s).
    fn connects(&self, to: std::net::SocketAddr) -> bool {
        in_netns(&self.name, move || {
            std::net::TcpStream::connect_timeout(&to, Duration::from_secs(2)).is_ok()
        })
        .join()
        .unwrap()
    }
}

/// Runs `f` on a thread of its own inside the network namespace `/run/netns/NAME`.
fn in_netns<T: Send + 'static>(
    name: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> std::thread::JoinHandle<T> {
    let ns = format!("/run/netns/{name}");
    std::thread::spawn(move || {
        let file = std::fs::File::open(&ns).unwrap();
        rustix::thread::move_into_link_name_space(
            std::os::fd::AsFd::as_fd(&file),
            Some(rustix::thread::LinkNameSpaceType::Network),
        )
        .unwrap();
        f()
    })
}

impl Drop for Remote {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
        let _ = Command::new("ip")
            .args(["link", "del", &self.host_if])
            .output();
    }
}

/// Waits (5 s at most) until nothing of app network `uid` is left: the kernel destroys a
/// removed namespace's pair in the background.
fn assert_gone(uid: u32, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !net_leftovers(uid).is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(net_leftovers(uid), Vec::<&str>::new(), "{what}");
}

fn net_spec(w: &World, uid: u32, slot: u32, args: &[&str], grant: &str) -> LaunchSpec {
    let mut s = w.spec(args);
    s.uid = uid;
    s.gid = uid;
    s.data_dir = w.root.join(format!("data/{uid}"));
    s.permissions.network = serde_json::from_str(grant).unwrap();
    s.network = Some(own_network(slot));
    s
}

#[test]
fn own_network_reaches_only_what_is_granted() {
    require_net!("network namespaces, nftables");
    let w = World::new();
    let remote = Remote::new(1);
    let seen = remote.serve(7001);
    let _other = remote.serve(7002);
    // Host services the app must not reach: loopback, an abstract socket, the host's own
    // address on the app's link.
    let lo = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let lo_port = lo.local_addr().unwrap().port();
    let any = std::net::TcpListener::bind("0.0.0.0:0").unwrap();
    let any_port = any.local_addr().unwrap().port();
    let abs_name = format!("appmgr-test-{}", std::process::id());
    let _abs = {
        use std::os::linux::net::SocketAddrExt;
        let a = std::os::unix::net::SocketAddr::from_abstract_name(abs_name.as_bytes()).unwrap();
        std::os::unix::net::UnixListener::bind_addr(&a).unwrap()
    };
    let uid = UID + 100;
    let grant = format!(
        r#"{{"egress": ["{}:7001", "remote.test:7001"]}}"#,
        remote.addr
    );
    let mut s = net_spec(&w, uid, 1, &[], &grant);
    s.network.as_mut().unwrap().resolved = [("remote.test".to_string(), vec![remote.addr])].into();
    let host_addr = "10.235.0.5";
    let targets = [
        format!("tcp:{}:7001", remote.addr),
        "tcp:remote.test:7001".to_string(),
        format!("tcp:{}:7002", remote.addr),
        format!("tcp:127.0.0.1:{lo_port}"),
        format!("tcp:{host_addr}:{any_port}"),
        format!("abstract:{abs_name}"),
        "resolve:remote.test".to_string(),
    ];
    s.args = std::iter::once("net".to_string())
        .chain(targets.iter().cloned())
        .collect();
    let o = launch(&s);
    assert_eq!(o.code, 0, "{}\n{}", o.stderr, o.stdout);
    let r: Value =
        serde_json::from_str(o.stdout.trim()).unwrap_or_else(|e| panic!("{e}: {}", o.stdout));
    assert_eq!(r[&targets[0]], "ok hi-7001", "{r}");
    assert_eq!(r[&targets[1]], "ok hi-7001", "{r}");
    // The remote saw the host's address (NAT), never the pool's.
    let peer = seen.recv_timeout(Duration::from_secs(1)).unwrap();
    assert_eq!(peer.to_string(), "10.236.1.1");
    // Refused at once (admin-prohibited), not left to time out.
    assert_eq!(r[&targets[2]], "EHOSTUNREACH", "{r}");
    // Its own loopback and abstract namespace: nothing of the host's.
    assert_eq!(r[&targets[3]], "ECONNREFUSED", "{r}");
    assert_eq!(r[&targets[4]], "EHOSTUNREACH", "{r}");
    assert_eq!(r[&targets[5]], "ECONNREFUSED", "{r}");
    assert_eq!(r[&targets[6]], remote.addr.to_string(), "{r}");
    // The host forwards now. Where appmgr turned that on (the host did not forward before
    // its first app network: the guard table exists), only for apps: two namespaces of
    // the host's own still cannot talk through it.
    assert_eq!(
        std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward")
            .unwrap()
            .trim(),
        "1"
    );
    let guard = Command::new("nft")
        .args(["list", "table", "inet", appmgr_sandbox::net::GUARD_TABLE])
        .output()
        .unwrap();
    if guard.status.success() {
        let other = Remote::new(2);
        let _srv = other.serve(7005);
        assert!(!remote.connects((other.addr, 7005).into()));
        // The same from the host itself (not forwarded) works: the server is up.
        assert!(std::net::TcpStream::connect_timeout(
            &(other.addr, 7005).into(),
            Duration::from_secs(2)
        )
        .is_ok());
    }
    assert_gone(uid, &format!("removed after the app ended: {}", o.stderr));
}

/// Starts app `s` (a probe that prints `listening` first) and returns it with its stdout.
fn start_listener(s: &LaunchSpec) -> (std::process::Child, BufReader<std::process::ChildStdout>) {
    let (mut cmd, fd) = command(s);
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(fd);
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "listening", "{line}");
    (child, out)
}

#[test]
fn apps_reach_each_other_only_when_both_grants_say_so() {
    require_net!("network namespaces, nftables");
    let w = World::new();
    let (a_uid, b_uid) = (UID + 110, UID + 111);
    let (a_slot, b_slot) = (10, 11);
    let b_addr = "10.235.0.46"; // slot 11: .44/30, the app is .46
    let a_id: AppId = "org.example.A".parse().unwrap();
    let b_id: AppId = "org.example.B".parse().unwrap();
    let peer = |app: &AppId, uid, slot| appmgr_sandbox::net::NetPeer {
        app: app.clone(),
        uid,
        slot,
    };
    for mutual in [false, true] {
        // B listens on 7100; with `mutual`, both name each other in talk-to.
        let talk = |other: &AppId| {
            if mutual {
                format!(r#", "talk-to": ["{other}"]"#)
            } else {
                String::new()
            }
        };
        let mut b = net_spec(
            &w,
            b_uid,
            b_slot,
            &["net", "listen:7100"],
            &format!(r#"{{"listen": ["7100"]{}}}"#, talk(&a_id)),
        );
        b.app_id = b_id.clone();
        b.network.as_mut().unwrap().peers = vec![peer(&a_id, a_uid, a_slot)];
        let (mut bproc, mut bout) = start_listener(&b);

        let target = format!("tcp:{b_addr}:7100");
        let mut a = net_spec(
            &w,
            a_uid,
            a_slot,
            &["net", &target],
            &format!(r#"{{"egress": ["192.0.2.1:9"]{}}}"#, talk(&b_id)),
        );
        a.app_id = a_id.clone();
        a.network.as_mut().unwrap().peers = vec![peer(&b_id, b_uid, b_slot)];
        let o = launch(&a);
        assert_eq!(o.code, 0, "{}", o.stderr);
        let r: Value = serde_json::from_str(o.stdout.trim()).unwrap();
        if mutual {
            assert_eq!(r[&target], "ok hello", "{r}");
            let mut rest = String::new();
            std::io::Read::read_to_string(&mut bout, &mut rest).unwrap();
            // B saw A's own address: no NAT between apps.
            assert!(rest.contains("\"accepted 10.235.0.42\""), "{rest}");
        } else {
            assert_eq!(r[&target], "EHOSTUNREACH", "{r}");
            // The host itself reaches B's listen port (its own address only).
            let mut s = std::net::TcpStream::connect_timeout(
                &format!("{b_addr}:7100").parse().unwrap(),
                Duration::from_secs(3),
            )
            .unwrap();
            let mut line = String::new();
            s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
            BufReader::new(&mut s).read_line(&mut line).unwrap();
            assert_eq!(line, "hello\n");
        }
        // SIGTERM, forwarded to the app: the launcher removes the network after it.
        rustix::process::kill_process(
            rustix::process::Pid::from_raw(bproc.id() as i32).unwrap(),
            rustix::process::Signal::TERM,
        )
        .unwrap();
        bproc.wait().unwrap();
        for uid in [a_uid, b_uid] {
            assert_gone(uid, &format!("uid {uid}"));
        }
    }
}

#[test]
fn a_network_outlives_no_crash_and_is_never_shared() {
    require_net!("network namespaces, nftables");
    let w = World::new();
    let uid = UID + 120;
    let s = net_spec(
        &w,
        uid,
        20,
        &["net", "listen:7200"],
        r#"{"listen": ["7200"]}"#,
    );
    let (mut first, _out) = start_listener(&s);
    assert_eq!(net_leftovers(uid), ["netns", "link", "rules"]);
    // A second instance of the same app is refused, and the first one's network stays.
    let o = launch(&s);
    assert_eq!(o.code, 125, "{}", o.stdout);
    assert!(
        o.stderr.contains("already runs with its network"),
        "{}",
        o.stderr
    );
    assert_eq!(net_leftovers(uid), ["netns", "link", "rules"]);
    // Nothing is stale while init lives.
    assert!(!appmgr_sandbox::net::remove_stale()
        .unwrap()
        .contains(&format!("appmgr-{uid}")));
    // SIGKILL of the launcher: init and the app die, the network is left behind ...
    let init = children(first.id());
    first.kill().unwrap();
    first.wait().unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while init
        .iter()
        .any(|p| Path::new(&format!("/proc/{p}")).exists())
    {
        assert!(Instant::now() < deadline, "init survived its launcher");
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(net_leftovers(uid), ["netns", "link", "rules"]);
    // ... until the stale networks are collected (appmgrd at start), or the app's next
    // launch takes its place.
    let removed = appmgr_sandbox::net::remove_stale().unwrap();
    assert!(removed.contains(&format!("appmgr-{uid}")), "{removed:?}");
    assert_gone(uid, "after remove_stale");
}

#[test]
fn a_routed_network_keeps_the_apps_own_address() {
    require_net!("network namespaces, nftables");
    let w = World::new();
    let remote = Remote::new(3);
    let seen = remote.serve(7001);
    let uid = UID + 130;
    let target = format!("tcp:{}:7001", remote.addr);
    let grant = format!(r#"{{"egress": ["{}:7001"]}}"#, remote.addr);
    let mut s = net_spec(&w, uid, 30, &["net", &target], &grant);
    s.network.as_mut().unwrap().routed = true;
    let o = launch(&s);
    assert_eq!(o.code, 0, "{}", o.stderr);
    let r: Value = serde_json::from_str(o.stdout.trim()).unwrap();
    assert_eq!(r[&target], "ok hi-7001", "{r}");
    // No NAT: the remote (whose default route is the host) saw the app's own address,
    // slot 30 of 10.235.0.0/24.
    let peer = seen.recv_timeout(Duration::from_secs(1)).unwrap();
    assert_eq!(peer.to_string(), "10.235.0.122");
    assert_gone(uid, "after a routed app");
}

/// The interfaces of the host's network namespace holding IPv4 address `addr`.
fn interfaces_with(addr: &str) -> Vec<String> {
    let out = Command::new("ip")
        .args(["-o", "-4", "addr", "show"])
        .output()
        .expect("run ip");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains(&format!(" {addr}/")))
        .filter_map(|l| l.split_whitespace().nth(1).map(str::to_string))
        .collect()
}

/// Waits (5 s at most) until nobody holds the lock of app `uid`'s network: the launcher's
/// removal child has finished.
fn removal_done(uid: u32) {
    let path = format!("/run/appmgr/net/appmgr-{uid}.lock");
    let f = std::fs::File::open(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match rustix::fs::flock(&f, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => break,
            Err(rustix::io::Errno::WOULDBLOCK) => {
                assert!(Instant::now() < deadline, "{path} still held after 5 s");
                std::thread::sleep(Duration::from_millis(1));
            }
            Err(e) => panic!("lock {path}: {e}"),
        }
    }
}

#[test]
fn a_removed_network_frees_its_name_and_address_at_once() {
    require_net!("network namespaces, nftables");
    let w = World::new();
    let remote = Remote::new(7);
    let seen = remote.serve(7001);
    let uid = UID + 150;
    let target = format!("tcp:{}:7001", remote.addr);
    let grant = format!(r#"{{"egress": ["{}:7001"]}}"#, remote.addr);
    let s = net_spec(&w, uid, 50, &["net", &target], &grant);
    // Slot 50 of 10.235.0.0/24: the host end is .201.
    let host_addr = "10.235.0.201";
    for round in 0..3 {
        let o = launch(&s);
        assert_eq!(o.code, 0, "round {round}: {}", o.stderr);
        let r: Value = serde_json::from_str(o.stdout.trim()).unwrap();
        assert_eq!(r[&target], "ok hi-7001", "round {round}: {r}");
        seen.recv_timeout(Duration::from_secs(1)).unwrap();
        // As soon as the removal let go of the lock, and before the kernel destroyed the
        // namespace: the pair's name and the host end's address are free, the rules gone.
        removal_done(uid);
        assert_eq!(net_leftovers(uid), Vec::<&str>::new(), "round {round}");
        assert_eq!(
            interfaces_with(host_addr),
            Vec::<String>::new(),
            "round {round}"
        );
        // A retired end that still exists is down and holds no address.
        for e in std::fs::read_dir("/sys/class/net").unwrap().flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if !name.starts_with("amx") {
                continue;
            }
            if let Ok(flags) = std::fs::read_to_string(e.path().join("flags")) {
                let flags = u32::from_str_radix(flags.trim().trim_start_matches("0x"), 16);
                assert_eq!(flags.map(|f| f & 1), Ok(0), "{name} is up");
            }
        }
    }
}

#[test]
fn rules_that_cannot_be_loaded_start_nothing_and_leave_nothing() {
    require_net!("network namespaces, nftables");
    let w = World::new();
    let uid = UID + 160;
    let s = net_spec(&w, uid, 60, &["net", "links"], r#"{"listen": ["7300"]}"#);
    // A first launch makes sure the shared table exists.
    let o = launch(&s);
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert_gone(uid, "after the first launch");
    // Someone else's entry for the app's interface in a dispatch map: the app's
    // transaction, which adds its own, fails as a whole.
    let host_if = format!("am-{uid}");
    let nft = |args: &[&str]| {
        let o = Command::new("nft").args(args).output().expect("run nft");
        assert!(
            o.status.success(),
            "nft {args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    let elem = format!(r#"{{ "{host_if}" : drop }}"#);
    nft(&["add", "element", "inet", "appmgr", "to_app", &elem]);
    let started = Instant::now();
    let o = launch(&s);
    assert_eq!(o.code, 125, "{}\n{}", o.stdout, o.stderr);
    assert!(o.stderr.contains("load the rules"), "{}", o.stderr);
    assert!(started.elapsed() < Duration::from_secs(40), "bounded");
    // The app never ran (the probe prints its report first thing) ...
    assert!(o.stdout.is_empty(), "the app ran: {}", o.stdout);
    // ... and nothing of its network is left, the foreign entry for its interface
    // included (a removal takes every entry keyed on the app's interface).
    assert_gone(uid, "after the refused launch");
    let maps = nft(&["list", "map", "inet", "appmgr", "to_app"]);
    assert!(!maps.contains(&host_if), "{maps}");
    // The next launch works again.
    let o = launch(&s);
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert_gone(uid, "after the last launch");
}

#[test]
fn connection_tracking_stays_on_between_launches() {
    require_net!("network namespaces, nftables");
    let w = World::new();
    let uid = UID + 170;
    let s = net_spec(&w, uid, 45, &["net", "links"], "true");
    let o = launch(&s);
    assert_eq!(o.code, 0, "{}", o.stderr);
    removal_done(uid);
    assert_gone(uid, "after the launch");
    // The app's chains went; the tracking chain stayed, with its one state match.
    let chain = appmgr_sandbox::net::TRACKING_CHAIN;
    let o = Command::new("nft")
        .args(["-j", "list", "chain", "inet", "appmgr", chain])
        .output()
        .expect("run nft");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let listing: Value = serde_json::from_slice(&o.stdout).unwrap();
    let rules: Vec<&Value> = listing["nftables"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|i| i.get("rule"))
        .collect();
    assert_eq!(rules.len(), 1, "{listing}");
    assert_eq!(
        rules[0]["expr"][0]["match"]["left"],
        serde_json::json!({"ct": {"key": "state"}}),
        "{listing}"
    );
    // So the host's namespace still tracks connections: one made on its loopback now is
    // in the table (the kernel's listing of it, where built in).
    if !Path::new("/proc/net/nf_conntrack").exists() {
        eprintln!("skipping the loopback check: no /proc/net/nf_conntrack in this kernel");
        return;
    }
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let _c = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    let _a = l.accept().unwrap();
    let table = std::fs::read_to_string("/proc/net/nf_conntrack").unwrap();
    let dport = format!(" dport={port} ");
    assert!(
        table
            .lines()
            .any(|l| l.contains(" src=127.0.0.1 ") && l.contains(&dport)),
        "the connection to 127.0.0.1:{port} is not tracked"
    );
}

#[test]
fn the_pair_carries_no_ipv6() {
    require_net!("network namespaces, nftables");
    let w = World::new();
    let uid = UID + 180;
    // Slot 55 of 10.235.0.0/24: the app is .222.
    let s = net_spec(
        &w,
        uid,
        55,
        &["net", "inet6", "listen:7400"],
        r#"{"listen": ["7400"]}"#,
    );
    let (mut app, mut out) = start_listener(&s);
    // The host's end, while the app runs.
    let host_end = format!("/proc/sys/net/ipv6/conf/am-{uid}/disable_ipv6");
    let off = std::fs::read_to_string(&host_end);
    // The app's listen port lets it end.
    let reached = std::net::TcpStream::connect_timeout(
        &"10.235.0.222:7400".parse().unwrap(),
        Duration::from_secs(2),
    );
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut out, &mut rest).unwrap();
    let status = app.wait().unwrap();
    assert!(reached.is_ok() && status.success(), "{status:?} {rest}");
    assert_eq!(
        off.map(|v| v.trim().to_string()).ok(),
        Some("1".into()),
        "{host_end}"
    );
    // Inside: only loopback holds an IPv6 address (::1); the app's end holds none.
    let r: Value = serde_json::from_str(rest.trim()).unwrap();
    assert_eq!(r["inet6"], "lo", "{r}");
    removal_done(uid);
    assert_gone(uid, "after the launch");
}

/// Until `dns` answers `addr` for `name` (5 s at most).
fn dns_answers(dns: &Dnsmasq, name: &str, addr: std::net::Ipv4Addr) {
    let r = appmgr_sandbox::netnames::Resolver::new(&[dns.server()]);
    dns.wait_for(
        name,
        || matches!(r.resolve(name), Ok(a) if a.addrs == [addr]),
    );
}

#[test]
fn names_follow_their_ttl_while_the_app_runs() {
    require_net!("network namespaces, nftables, dnsmasq");
    let w = World::new();
    let (a, b) = (Remote::new(5), Remote::new(6));
    let (seen_a, seen_b) = (a.serve(7005), b.serve(7005));
    let dns = Dnsmasq::start(&w.root, "svc.test", a.addr);
    dns_answers(&dns, "svc.test", a.addr);
    // The answer's TTL is 5 s: appmgr asks for the name again then.
    let first = appmgr_sandbox::netnames::Resolver::new(&[dns.server()])
        .resolve("svc.test")
        .unwrap();
    assert_eq!(first.addrs, [a.addr]);
    assert_eq!(first.ttl, Duration::from_secs(5));
    let uid = UID + 140;
    let watch = "watch:svc.test:7005:30".to_string();
    let old = format!("tcp:{}:7005", a.addr);
    let mut s = net_spec(
        &w,
        uid,
        40,
        // The old address is tried a moment after the new one answered: the sets are made
        // exact right after /etc/hosts changed.
        &["net", &watch, "sleep:2000", &old, "resolve:svc.test"],
        r#"{"egress": ["svc.test:7005"]}"#,
    );
    let n = s.network.as_mut().unwrap();
    n.resolved = [("svc.test".to_string(), first.addrs.clone())].into();
    n.refresh = [("svc.test".to_string(), first.ttl.as_secs())].into();
    n.resolvers = vec![dns.server()];
    // The name moves to b; the app starts on what was resolved a moment ago (a).
    dns.set("svc.test", b.addr);
    dns_answers(&dns, "svc.test", b.addr);
    let t0 = Instant::now();
    let o = launch(&s);
    assert_eq!(o.code, 0, "{}\n{}", o.stderr, o.stdout);
    let r: Value = serde_json::from_str(o.stdout.trim())
        .unwrap_or_else(|e| panic!("{e}: {}\n{}", o.stdout, o.stderr));
    let steps: Vec<&str> = r[&watch].as_str().unwrap().split(" | ").collect();
    // The app reached a through its /etc/hosts, then, once the TTL ran out, b: its
    // /etc/hosts and its rules moved together (no refused attempt in between).
    assert_eq!(
        steps,
        [
            format!("{}=ok hi-7005", a.addr),
            format!("{}=ok hi-7005", b.addr)
        ],
        "{r}"
    );
    assert!(t0.elapsed() >= Duration::from_secs(5), "{:?}", t0.elapsed());
    assert!(seen_a.recv_timeout(Duration::from_secs(1)).is_ok());
    assert!(seen_b.recv_timeout(Duration::from_secs(1)).is_ok());
    // The old address is no longer allowed; the name now gives the new one.
    assert_eq!(r[&old], "EHOSTUNREACH", "{r}");
    assert_eq!(r["resolve:svc.test"], b.addr.to_string(), "{r}");
    assert_gone(uid, "after an app with names");
    assert!(!appmgr_sandbox::net::names_dir(&format!("appmgr-{uid}")).exists());
}
