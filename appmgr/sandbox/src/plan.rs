//! The pure half: [`LaunchSpec`] (what the caller knows) → [`LaunchPlan`] (every mount,
//! namespace, id, environment variable and seccomp setting the launcher will apply).
//! No I/O happens here, so every decision is unit-tested and `appmgr run --print-plan`
//! shows exactly what will be enforced.

use crate::inputs::PlanInput;
use crate::seccomp::SeccompPlan;
use appmgr_types::{AllowFlag, AppId, FsAccess, Permissions, SocketName};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Version of the plan format; the launcher refuses plans of another version (the CLI and
/// the launcher are installed together, this catches a half-finished update).
pub const PLAN_VERSION: u32 = 6;

/// Where the app's persistent data directory appears inside the sandbox (its `HOME`).
pub const SANDBOX_HOME: &str = "/home/app";
/// The app's login name inside the sandbox (`/etc/passwd`).
pub const SANDBOX_USER: &str = "app";
/// Where [`LaunchSpec::notify_socket`] appears inside the sandbox (`NOTIFY_SOCKET`).
pub const SANDBOX_NOTIFY_SOCKET: &str = "/run/appmgr/notify";
/// Where [`LaunchSpec::system_bus_socket`] appears inside the sandbox (the standard path,
/// so clients that ignore `DBUS_SYSTEM_BUS_ADDRESS` find it too).
pub const SANDBOX_SYSTEM_BUS_SOCKET: &str = "/run/dbus/system_bus_socket";
/// `DBUS_SYSTEM_BUS_ADDRESS` of an app that may use the system bus.
pub const SANDBOX_SYSTEM_BUS_ADDRESS: &str = "unix:path=/run/dbus/system_bus_socket";
/// Where the host's Wayland socket appears inside the sandbox (`WAYLAND_DISPLAY` is this
/// absolute path). Below the root-owned `/run/appmgr`, not in `XDG_RUNTIME_DIR`: that
/// directory is the app's (or the host's shared runtime dir), and no mount point is ever
/// made in a directory the app can write.
pub const SANDBOX_WAYLAND_SOCKET: &str = "/run/appmgr/wayland-0";
/// Where the host's PipeWire socket appears (`PIPEWIRE_RUNTIME_DIR=/run/appmgr`,
/// `PIPEWIRE_REMOTE=pipewire-0`).
pub const SANDBOX_PIPEWIRE_SOCKET: &str = "/run/appmgr/pipewire-0";
/// Where the host's PulseAudio (or pipewire-pulse) socket appears
/// (`PULSE_SERVER=unix:/run/appmgr/pulse-native`).
pub const SANDBOX_PULSEAUDIO_SOCKET: &str = "/run/appmgr/pulse-native";
/// Where the host's X11 socket appears: display `:0` (`DISPLAY=:0`), on the sandbox's own
/// `/tmp` in a root-owned `/tmp/.X11-unix`.
pub const SANDBOX_X11_SOCKET: &str = "/tmp/.X11-unix/X0";

/// Where a host socket of kind `s` is bound inside the sandbox.
pub fn sandbox_socket(s: SocketName) -> &'static str {
    match s {
        SocketName::Wayland => SANDBOX_WAYLAND_SOCKET,
        SocketName::X11 => SANDBOX_X11_SOCKET,
        SocketName::Pulseaudio => SANDBOX_PULSEAUDIO_SOCKET,
        SocketName::Pipewire => SANDBOX_PIPEWIRE_SOCKET,
    }
}

/// The variables that point a client library at the socket of kind `s` inside the
/// sandbox. Set by the plan only; a caller can never pass them in.
pub fn socket_env(s: SocketName) -> &'static [(&'static str, &'static str)] {
    match s {
        SocketName::Wayland => &[("WAYLAND_DISPLAY", SANDBOX_WAYLAND_SOCKET)],
        SocketName::X11 => &[("DISPLAY", ":0")],
        SocketName::Pulseaudio => &[("PULSE_SERVER", "unix:/run/appmgr/pulse-native")],
        SocketName::Pipewire => &[
            ("PIPEWIRE_RUNTIME_DIR", "/run/appmgr"),
            ("PIPEWIRE_REMOTE", "pipewire-0"),
        ],
    }
}

/// Whether the plan of `spec` leaves out a granted, offered x11 socket because a granted
/// Wayland socket is offered too: x11 is the fallback for hosts without Wayland.
pub fn x11_is_fallback(spec: &LaunchSpec) -> bool {
    let granted = &spec.permissions.sockets;
    granted.contains(&SocketName::Wayland)
        && granted.contains(&SocketName::X11)
        && spec.host_sockets.contains_key(&SocketName::Wayland)
}

/// Everything the caller (CLI or daemon) knows about one launch. Plain data: the store
/// gives the deployment paths and the uid/gid, `policy` the effective permissions,
/// `appmgr-board` the device nodes, `cgroup` the `cgroup.procs` files.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct LaunchSpec {
    pub app_id: AppId,
    /// The runtime deployment's `files/` directory: mounted read-only at `/usr`.
    pub runtime_files: PathBuf,
    /// The app deployment's `files/` directory: mounted read-only at `/app`.
    pub app_files: PathBuf,
    /// The app's persistent data directory (host path): bound at [`SANDBOX_HOME`].
    /// Created (mode 0700, owned by `uid:gid`) if missing; the launch is refused if any
    /// component of the path is a symlink or the directory belongs to someone else. If the
    /// state directory itself lives behind a symlink (a linked `/var`), canonicalize the
    /// state directory once, never the per-app path.
    pub data_dir: PathBuf,
    /// The app's private runtime directory shared with the host (sockets other apps may
    /// be granted), bound at `/run/user/UID`; same checks as `data_dir`. Without it,
    /// `/run/user/UID` is an empty private directory.
    #[serde(default)]
    pub runtime_dir: Option<PathBuf>,
    /// The app's own unprivileged ids, allocated by the store. 0 is refused.
    pub uid: u32,
    pub gid: u32,
    /// The effective grant (requested ∩ policy).
    pub permissions: Permissions,
    /// Host device nodes for the granted devices, as resolved by `appmgr-board`. Each
    /// becomes a private node at the same path in the sandbox's `/dev` (same type and
    /// device number, owned by the app's uid, mode 0600). Must be below `/dev`.
    #[serde(default)]
    pub devices: Vec<PathBuf>,
    /// The manifest's `command`: an absolute path below `/app` or `/usr`, or a plain name
    /// looked up in `/app/bin`.
    pub command: String,
    /// Arguments, passed to the app as data (never interpreted by the launcher).
    #[serde(default)]
    pub args: Vec<String>,
    /// The app's `cgroup.procs` files: the app process writes itself into them before it
    /// drops its privileges and execs (the cgroup crate creates the cgroups). Only the
    /// app's own tasks are in that cgroup.
    #[serde(default)]
    pub cgroup_procs: Vec<PathBuf>,
    /// `cgroup.procs` files the launcher writes its own pid into before it creates init:
    /// the launcher and init live there, outside the app's cgroup (and its `pids.max`).
    #[serde(default)]
    pub helper_cgroup_procs: Vec<PathBuf>,
    /// A cgroup v2 device program to attach to the app's cgroup before the app joins it
    /// (`None` on v1, where the cgroup crate wrote the `devices` controller's rules).
    #[serde(default)]
    pub device_filter: Option<DeviceFilter>,
    /// What the launcher does once the app has ended, on behalf of a caller that exec'd it
    /// and is gone: report limit events, remove the app's cgroup directories.
    #[serde(default)]
    pub after_exit: AfterExit,
    /// Names of caller environment variables the app may see (besides the ones the plan
    /// builds). Loader and libc variables (`LD_*`, `GCONV_PATH`, ...) are refused.
    #[serde(default)]
    pub env_allow: Vec<String>,
    /// The caller's environment (the CLI passes `std::env::vars()`); only `env_allow`ed
    /// names are taken from it.
    #[serde(default)]
    pub caller_env: Vec<(String, String)>,
    /// Root-owned directory for compiled seccomp filters.
    pub cache_dir: PathBuf,
    /// Time zone name (`Europe/Berlin`) for `/etc/localtime`; default `UTC`.
    #[serde(default)]
    pub timezone: Option<String>,
    /// `LANG`; default `C.UTF-8`.
    #[serde(default)]
    pub lang: Option<String>,
    /// Host path of an `AF_UNIX` datagram socket the caller created for sd_notify
    /// messages (`READY=1`, ...). Bound (the socket inode, read-write) at
    /// [`SANDBOX_NOTIFY_SOCKET`], and the app gets `NOTIFY_SOCKET` pointing there. The
    /// caller makes it writable for the app's uid (the launcher only binds it); the launch
    /// is refused if the path is missing, a symlink or not a socket.
    #[serde(default)]
    pub notify_socket: Option<PathBuf>,
    /// Host path of the D-Bus system bus socket. Bound at [`SANDBOX_SYSTEM_BUS_SOCKET`]
    /// with `DBUS_SYSTEM_BUS_ADDRESS` set **only** when `permissions` has a non-empty
    /// `dbus_talk` or `dbus_own`; otherwise ignored (no bind, no variable): a unix path
    /// socket is not affected by the network namespace, so the bind is the only way in.
    /// Same checks as `notify_socket` when used.
    #[serde(default)]
    pub system_bus_socket: Option<PathBuf>,
    /// Host paths of the display and audio sockets (`sockets` grants) the caller offers:
    /// those present on the host now (the caller leaves out a missing one, as it does the
    /// bus). Each whose kind is in `permissions.sockets` is bound (the socket inode,
    /// read-write) at [`sandbox_socket`] with the variables of [`socket_env`]; the others
    /// are ignored. `x11` is the fallback: it is not bound when a granted `wayland`
    /// socket is offered too. Same checks as `notify_socket` (the launch is refused when a
    /// path is a symlink, below one, or not a socket).
    #[serde(default)]
    pub host_sockets: BTreeMap<SocketName, PathBuf>,
    /// The host's PipeWire session manager runs appmgr's access rules
    /// (`board-support/pipewire`, appmgr.toml `pipewire-access`; docs/audio.md). When the
    /// PipeWire socket is bound, the root then holds [`PIPEWIRE_SANDBOX_MARKER`], which
    /// makes PipeWire's module-access hold every client of this sandbox without any
    /// permission until the session manager applies the app uid's `audio` grant.
    /// Without it, the socket gives whatever PipeWire gives any local client, and an
    /// `audio` grant is not provided.
    #[serde(default)]
    pub pipewire_access: bool,
    /// The app's memory limit in bytes (its cgroup's `memory.max`), if any. Sizes the
    /// sandbox's writable tmpfs mounts (see [`tmpfs_sizes_mib`]).
    #[serde(default)]
    pub memory_max: Option<u64>,
    /// Host paths no filesystem grant may expose, lie in or contain (the `deny`
    /// filesystems of the policy rules that apply to the app). Compared by the launcher
    /// on what a grant resolved to, not on the request string.
    #[serde(default)]
    pub deny_paths: Vec<PathBuf>,
    /// The app's storage image (host path, root-owned, prepared by
    /// [`crate::storage::prepare`]) when policy sets `storage-max`: the launcher attaches
    /// it to a loop device and mounts its ext4 file system at [`SANDBOX_HOME`] instead of
    /// binding `data_dir`, so the app's HOME ends in `ENOSPC` at the image's size.
    #[serde(default)]
    pub data_image: Option<PathBuf>,
    /// What this spec was derived from, by digest (see [`crate::inputs`]): carried into
    /// the plan, and the launcher refuses the plan when one of them changed since.
    #[serde(default)]
    pub inputs: Vec<PlanInput>,
    /// The app's network (slot, resolved names, name servers, peers) when its grant has
    /// one and this host can give it ([`crate::net::available`]). Without it, a
    /// `network` grant is not provided: the sandbox's own namespace has only `lo`.
    #[serde(default)]
    pub network: Option<crate::net::NetSpec>,
    /// The extensions whose conditions hold, in ID order: each deployment's tree is
    /// bound read-only at its mount point (see [`ExtensionMount`]).
    #[serde(default)]
    pub extensions: Vec<ExtensionMount>,
}

/// An extension the sandbox shows: its deployment's `files/` directory, bound read-only
/// (nosuid, nodev) at `mount_point`. The mount point's parent is a directory of the
/// runtime or app tree (an extension point): the launcher mounts a root-owned 0755 tmpfs
/// there and creates the mount point on it, so the extended tree itself is never written
/// and several extensions share one point.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ExtensionMount {
    /// The extension's ID (for messages).
    pub id: String,
    /// Host path of the extension deployment's `files/` directory.
    pub files: PathBuf,
    /// Below `/usr` or `/app`, at least two components down.
    pub mount_point: String,
    /// Directories relative to the mount point, put on `LD_LIBRARY_PATH`.
    #[serde(default)]
    pub library_path: Vec<String>,
    /// Variables (name, path relative to the mount point); several extensions' paths for
    /// one name are joined with `:`.
    #[serde(default)]
    pub env: Vec<(String, String)>,
}

/// `a/b`: relative, normal, no empty component.
fn normal_rel(p: &str) -> bool {
    !p.is_empty()
        && !p.starts_with('/')
        && p.split('/').all(|c| !c.is_empty() && c != "." && c != "..")
        && !appmgr_types::has_unsafe_chars(p)
}

/// Environment variables as (name, value).
type Env = Vec<(String, String)>;

/// The mounts (a tmpfs per extension point, then each extension's bind) and the
/// variables of the extensions. Refuses a mount point that is not two components below
/// `/usr` or `/app`, two extensions at one mount point or one inside another, and
/// variables the launcher reserves.
fn extension_mounts(exts: &[ExtensionMount]) -> Result<(Vec<MountOp>, Env), PlanError> {
    let bad = |what: &'static str, value: &str| PlanError::BadValue {
        what,
        value: value.to_string(),
    };
    let mut points: Vec<&str> = Vec::new();
    let mut parents: Vec<&str> = Vec::new();
    let mut binds = Vec::new();
    let mut lib_path: Vec<String> = Vec::new();
    let mut vars: Vec<(String, Vec<String>)> = Vec::new();
    for x in exts {
        let mp = x.mount_point.as_str();
        let rest = mp
            .strip_prefix("/usr/")
            .or_else(|| mp.strip_prefix("/app/"))
            .ok_or_else(|| bad("extension mount point", mp))?;
        if !normal_rel(rest) || rest.split('/').count() < 2 {
            return Err(bad("extension mount point", mp));
        }
        let files = check_host_path("extension", &x.files)?;
        if let Some(other) = points.iter().find(|p| {
            **p == mp || mp.starts_with(&format!("{p}/")) || p.starts_with(&format!("{mp}/"))
        }) {
            return Err(PlanError::Extension(format!(
                "extension {}: mount point {mp} collides with another extension's {other}",
                x.id
            )));
        }
        points.push(mp);
        let (parent, _) = mp
            .rsplit_once('/')
            .expect("two components below /usr or /app");
        if !parents.contains(&parent) {
            parents.push(parent);
        }
        binds.push(MountOp::Bind {
            source: BindSource::Deployment(files.into()),
            dest: mp.to_string(),
            readonly: true,
            dev: false,
        });
        for l in &x.library_path {
            if !normal_rel(l) {
                return Err(bad("extension library path", l));
            }
            lib_path.push(format!("{mp}/{l}"));
        }
        for (name, rel) in &x.env {
            if !extension_variable_allowed(name) || !normal_rel(rel) {
                return Err(bad("extension variable", &format!("{name}={rel}")));
            }
            let v = format!("{mp}/{rel}");
            match vars.iter_mut().find(|(n, _)| n == name) {
                Some((_, vs)) => vs.push(v),
                None => vars.push((name.clone(), vec![v])),
            }
        }
    }
    // A point inside another extension's tree would be built through a bound directory.
    for p in &parents {
        if points
            .iter()
            .any(|mp| p.starts_with(&format!("{mp}/")) || p == mp)
        {
            return Err(bad("extension mount point", p));
        }
    }
    let mut m: Vec<MountOp> = parents
        .iter()
        .map(|p| MountOp::Tmpfs {
            dest: p.to_string(),
            mode: 0o755,
            size_mib: 1,
            noexec: true,
            dev: false,
        })
        .collect();
    m.extend(binds);
    let mut env: Vec<(String, String)> = vars.into_iter().map(|(n, v)| (n, v.join(":"))).collect();
    if !lib_path.is_empty() {
        env.push(("LD_LIBRARY_PATH".into(), lib_path.join(":")));
    }
    Ok((m, env))
}

/// The file at the sandbox's root that PipeWire's module-access looks for
/// (`/proc/PID/root/.flatpak-info`): a client whose process has it at its root is marked
/// `pipewire.access = "flatpak"` and gets no permission until the session manager grants
/// some. The app cannot remove it (read-only root) nor leave that root (no `chroot`,
/// `pivot_root`, mount or user namespace under seccomp). Only `[Application] name=` is
/// written: PipeWire reads the app id from it, nothing else.
pub const PIPEWIRE_SANDBOX_MARKER: &str = "/.flatpak-info";

/// Default size of the sandbox's `/tmp` in MiB (no memory limit, or a larger one).
pub const TMP_MAX_MIB: u32 = 256;
/// Default size of the private `/dev/shm` in MiB.
pub const SHM_MAX_MIB: u32 = 64;

/// Sizes (MiB) of the sandbox's `/tmp` and private `/dev/shm`. Their pages are charged
/// to the memory cgroup of the process that writes them (the app), so a full tmpfs
/// counts against the app's `memory-max`; with a limit, `/tmp` gets half of it and
/// `/dev/shm` a quarter (at least 1 MiB each, at most the defaults), so filling them
/// ends in `ENOSPC` for the writer, not in an OOM kill with nothing left to free.
pub fn tmpfs_sizes_mib(memory_max: Option<u64>) -> (u32, u32) {
    let Some(m) = memory_max else {
        return (TMP_MAX_MIB, SHM_MAX_MIB);
    };
    let mib = |bytes: u64, cap: u32| ((bytes >> 20).max(1)).min(u64::from(cap)) as u32;
    (mib(m / 2, TMP_MAX_MIB), mib(m / 4, SHM_MAX_MIB))
}

/// A `BPF_PROG_TYPE_CGROUP_DEVICE` program (eBPF instructions, one `u64` each, built by
/// the cgroup crate) and the cgroup v2 directory the launcher attaches it to. Opaque to
/// the sandbox crate, like the seccomp program.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct DeviceFilter {
    pub cgroup: PathBuf,
    pub program: Vec<u64>,
}

/// Device numbers every sandbox's `/dev` provides besides the bound host nodes
/// ([`STANDARD_DEVICE_NODES`]): the private devpts instance's `ptmx` (5:2, as
/// `(major, Some(minor))`) and its `pts/N` (majors 136–143, every minor). Character
/// devices. With the host nodes and the granted ones this is the complete list of what
/// the app may open; the caller passes it to the cgroup crate.
pub const PTY_DEVICES: &[(u32, Option<u32>)] = &[
    (5, Some(2)),
    (136, None),
    (137, None),
    (138, None),
    (139, None),
    (140, None),
    (141, None),
    (142, None),
    (143, None),
];

/// Host device nodes bound into every sandbox's `/dev`.
pub const STANDARD_DEVICE_NODES: &[&str] = &[
    "/dev/null",
    "/dev/zero",
    "/dev/full",
    "/dev/random",
    "/dev/urandom",
    "/dev/tty",
];

/// A counter file line `KEY N`; N > 0 after the app ended means `event` happened.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventCounter {
    pub file: PathBuf,
    pub key: String,
    /// Reported as `appmgr: event: APP limit-hit EVENT (N)`.
    pub event: String,
}

/// Post-exit duties of the launcher. Plain data from the caller: the sandbox crate does
/// not know cgroup formats, it reads `KEY N` lines and removes empty directories.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AfterExit {
    pub events: Vec<EventCounter>,
    /// Removed (rmdir, retried briefly while the dying sandbox empties them), in order.
    pub remove_dirs: Vec<PathBuf>,
}

/// Which namespaces the sandbox gets. A user namespace is never created (and the seccomp
/// filter keeps the app from creating one).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Namespaces {
    pub mount: bool,
    pub pid: bool,
    pub ipc: bool,
    pub uts: bool,
    pub net: bool,
    pub cgroup: bool,
}

/// Where the source of a bind mount comes from. Every source is opened by the launcher
/// once, as an `O_PATH` file descriptor, before anything is mounted, and bound through
/// that descriptor (`open_tree`/`move_mount`), so a path is never resolved twice.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "kind", content = "path")]
pub enum BindSource {
    /// A deployment directory (trusted host path, store-owned).
    Deployment(PathBuf),
    /// A per-app directory (data dir, runtime dir): opened with `RESOLVE_NO_SYMLINKS`,
    /// created if missing, must be a directory owned by the app's uid.
    AppDir(PathBuf),
    /// A device node: opened with `O_NOFOLLOW`, must be a character or block device.
    Device(PathBuf),
    /// A host path the plan itself binds (`/dev/shm` with `ipc`); skipped if it does not
    /// exist.
    HostPath(PathBuf),
    /// A filesystem grant: opened beneath `/` with `RESOLVE_NO_SYMLINKS` (a symlink
    /// anywhere on the way refuses the launch), then compared by device and inode with
    /// the plan's [`ProtectedPath`]s; skipped if it does not exist.
    Granted(PathBuf),
    /// A host `AF_UNIX` socket (sd_notify socket, D-Bus system bus): opened with
    /// `O_NOFOLLOW`, must exist and be a socket.
    Socket(PathBuf),
    /// The names directory of the app's network ([`crate::net::names_dir`]): opened
    /// beneath `/` without following symlinks, must be a root-owned directory.
    NetNames(PathBuf),
    /// A per-app storage image: opened beneath `/` without following symlinks (a
    /// root-owned regular file), locked, attached to a loop device and mounted (ext4,
    /// `nosuid,nodev`) as a new file system whose root must belong to the app's uid.
    StorageImage(PathBuf),
}

/// One step of building the sandbox's root, applied in order. `dest` is a path inside the
/// sandbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "op")]
pub enum MountOp {
    Dir {
        dest: String,
        mode: u32,
    },
    /// A directory owned by the app's uid/gid (`/run/user/UID`).
    AppOwnedDir {
        dest: String,
        mode: u32,
    },
    Symlink {
        target: String,
        dest: String,
    },
    Tmpfs {
        dest: String,
        mode: u32,
        size_mib: u32,
        noexec: bool,
        /// Device nodes on it may be opened (no `nodev`): only `/dev`, and only when a
        /// device is granted. Nothing but init can create nodes there (root-owned 0755,
        /// and the app has no `CAP_MKNOD`).
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        dev: bool,
    },
    /// A granted device: the host node (`source`, opened `O_PATH|O_NOFOLLOW`, must be a
    /// character or block device) is recreated with `mknod` at `dest` on the sandbox's
    /// `/dev` tmpfs, with its type and device number, owned by the app's uid and gid, mode
    /// 0600. The host node's owner, group and mode do not matter, and the app needs no
    /// supplementary group (which would open every other file of that group too).
    DeviceNode {
        source: PathBuf,
        dest: String,
    },
    Bind {
        source: BindSource,
        dest: String,
        readonly: bool,
        /// Device nodes need device access; everything else is `nodev`.
        dev: bool,
    },
    Proc {
        dest: String,
    },
    /// A new sysfs instance (it shows the sandbox's network namespace), read-only.
    Sysfs {
        dest: String,
    },
    Devpts {
        dest: String,
    },
    /// Bind a path of the sandbox onto itself read-only (`/proc/sys`, ...).
    RemountReadonly {
        dest: String,
    },
    /// A generated file (`/etc/passwd`, ...) written into the root tmpfs.
    File {
        dest: String,
        mode: u32,
        contents: String,
    },
    /// A copy of a host file taken at launch (`/etc/resolv.conf`); skipped if missing.
    CopyHostFile {
        source: PathBuf,
        dest: String,
    },
    /// A symlink `dest/NAME -> target/NAME` for every entry of the runtime's `etc/`
    /// directory, except those listed in `except` (generated by the plan).
    LinkRuntimeEtc {
        dest: String,
        target: String,
        except: Vec<String>,
    },
}

/// A host path that no filesystem grant may resolve to (or, with `below`, lie in or
/// contain). The launcher resolves it as the host does and compares objects (device and
/// inode), so a second name for it (a symlink the request string does not show, a bind
/// mount) is caught too.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProtectedPath {
    pub path: PathBuf,
    pub below: bool,
}

/// Everything the launcher applies, in order. Serializable: the CLI prints it and passes
/// it to `appmgr-launch` as JSON.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct LaunchPlan {
    pub version: u32,
    pub app_id: String,
    pub hostname: String,
    pub namespaces: Namespaces,
    /// Bring up `lo` in the new network namespace.
    pub loopback: bool,
    pub uid: u32,
    pub gid: u32,
    pub cgroup_procs: Vec<PathBuf>,
    #[serde(default)]
    pub helper_cgroup_procs: Vec<PathBuf>,
    #[serde(default)]
    pub device_filter: Option<DeviceFilter>,
    pub after_exit: AfterExit,
    /// The root filesystem, built on a fresh tmpfs that is made read-only at the end.
    pub mounts: Vec<MountOp>,
    /// Checked against every [`BindSource::Granted`] after it was resolved: the host
    /// directories the sandbox builds itself and the policy's `deny` paths. Empty (and
    /// not printed) without filesystem grants.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub protected_paths: Vec<ProtectedPath>,
    pub seccomp: SeccompPlan,
    /// The complete environment of the app (nothing else is inherited).
    pub env: Vec<(String, String)>,
    /// The executable (absolute path inside the sandbox; no `PATH` search).
    pub exe: String,
    /// `argv`, including `argv[0]`.
    pub argv: Vec<String>,
    pub cwd: String,
    /// The inputs the plan was derived from, by digest; checked by the launcher before
    /// anything else (a plan made at install is refused once policy, board, records or
    /// manifest changed).
    #[serde(default)]
    pub inputs: Vec<PlanInput>,
    /// The app's own network: created by the launcher before init, joined by init
    /// (instead of a new, empty network namespace), removed after the app ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub net: Option<crate::net::NetPlan>,
}

/// Why a spec cannot become a plan.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    #[error("uid/gid {0} is not an unprivileged app id")]
    PrivilegedId(u32),
    #[error("{what} path {path:?} must be absolute and normal (no `.`, `..` or empty components)")]
    BadPath { what: &'static str, path: String },
    #[error("device node {0:?} is not below /dev")]
    DeviceOutsideDev(String),
    #[error("filesystem grant {0:?} overlaps a path the sandbox owns")]
    ReservedPath(String),
    #[error("filesystem grant {inner:?} is inside the granted {outer:?}: its mount point would be built through a bound host directory; grant one of them")]
    NestedGrant { inner: String, outer: String },
    #[error(
        "command {0:?} must be a name in /app/bin or a normal absolute path below /app or /usr"
    )]
    BadCommand(String),
    #[error("environment variable {0:?} may not be passed into the sandbox")]
    EnvNotAllowed(String),
    #[error("{what} {value:?} is not valid")]
    BadValue { what: &'static str, value: String },
    #[error("{0}")]
    Network(#[from] crate::net::NetPlanError),
    #[error("{0}")]
    Extension(String),
}

fn normal_abs(p: &str) -> bool {
    p.starts_with('/')
        && p.len() > 1
        && !p.contains('\0')
        && p[1..]
            .split('/')
            .all(|c| !c.is_empty() && c != "." && c != "..")
}

fn check_host_path(what: &'static str, p: &Path) -> Result<String, PlanError> {
    let s = p.to_str().ok_or_else(|| PlanError::BadPath {
        what,
        path: p.display().to_string(),
    })?;
    if !normal_abs(s) || appmgr_types::has_unsafe_chars(s) {
        return Err(PlanError::BadPath {
            what,
            path: s.to_string(),
        });
    }
    Ok(s.to_string())
}

/// Paths (and everything below them) that the sandbox builds itself; a filesystem grant
/// may not cover or shadow them.
const RESERVED: &[&str] = &[
    "/usr",
    "/app",
    "/proc",
    "/sys",
    "/dev",
    "/etc",
    "/bin",
    "/sbin",
    "/lib",
    "/lib64",
    "/lib32",
    "/libx32",
    "/run/user",
    // The sd_notify, system bus, Wayland, PipeWire and PulseAudio sockets: a filesystem
    // grant may neither shadow them nor hand out the bus without a dbus grant.
    "/run/appmgr",
    "/run/dbus",
    // The X11 socket's directory on the sandbox's /tmp.
    "/tmp/.X11-unix",
    // On every current host /var/run is a symlink to /run: a grant below it is a grant
    // below /run (e.g. /var/run/dbus, the system bus without a dbus grant).
    "/var/run",
    // A symlink to /tmp inside the sandbox: a mount point below it would be built
    // through a symlink.
    "/var/tmp",
    SANDBOX_HOME,
];
/// Paths that may hold grants below them, but not be granted themselves.
const RESERVED_EXACT: &[&str] = &["/tmp", "/run", "/home", "/var"];
/// Host directories the sandbox builds itself: the launcher refuses a grant that
/// *resolves* to, into or around one of them (compared by device and inode), whatever
/// the request string said. `/var/run` and the `/lib*` links are left out: on the host
/// they are names for `/run` and `/usr`.
const PROTECTED_BELOW: &[&str] = &[
    "/usr",
    "/proc",
    "/sys",
    "/dev",
    "/etc",
    "/run/user",
    "/run/appmgr",
    "/run/dbus",
];
/// Host directories a grant may lie below but not resolve to.
const PROTECTED_EXACT: &[&str] = &["/", "/tmp", "/run", "/home", "/var"];

/// The checks on one filesystem grant that need no I/O: not a path the sandbox builds,
/// not inside another grant of the same app (its mount point would be inside the bound
/// host directory, which the app may write: sandbox-side targets are only built in the
/// sandbox's own file systems).
pub(crate) fn check_filesystem_grant(perms: &Permissions, p: &str) -> Result<(), PlanError> {
    let under = |x: &str, y: &str| x.strip_prefix(y).is_some_and(|r| r.starts_with('/'));
    if RESERVED
        .iter()
        .any(|r| p == *r || under(p, r) || under(r, p))
        || RESERVED_EXACT.contains(&p)
    {
        return Err(PlanError::ReservedPath(p.to_string()));
    }
    if let Some(outer) = perms.filesystems.iter().find(|o| under(p, &o.path)) {
        return Err(PlanError::NestedGrant {
            inner: p.to_string(),
            outer: outer.path.clone(),
        });
    }
    Ok(())
}

/// What every filesystem grant is compared with once resolved: the `deny` paths (and
/// below), the host directories the sandbox builds itself.
pub(crate) fn protected_paths(deny_paths: &[PathBuf]) -> Result<Vec<ProtectedPath>, PlanError> {
    let mut v = Vec::new();
    for d in deny_paths {
        let s = check_host_path("deny path", d)?;
        v.push(ProtectedPath {
            path: s.into(),
            below: true,
        });
    }
    for (list, below) in [(PROTECTED_BELOW, true), (PROTECTED_EXACT, false)] {
        for p in list {
            v.push(ProtectedPath {
                path: p.into(),
                below,
            });
        }
    }
    Ok(v)
}

/// Variables a caller may never pass in, even if allow-listed: they change how the
/// dynamic loader, libc or the resolver behave (the classic setuid-unsafe list of
/// glibc's `unsecvars.h`), or are built by the plan.
/// Whether an extension may set `name` (a valid name the launcher does not reserve).
pub fn extension_variable_allowed(name: &str) -> bool {
    valid_env_name(name) && !env_name_forbidden(name)
}

fn env_name_forbidden(name: &str) -> bool {
    const EXACT: &[&str] = &[
        "GCONV_PATH",
        "GETCONF_DIR",
        "GLIBC_TUNABLES",
        "HOSTALIASES",
        "LOCALDOMAIN",
        "LOCPATH",
        "NIS_PATH",
        "NLSPATH",
        "RESOLV_HOST_CONF",
        "RES_OPTIONS",
        "TMPDIR",
        "TZDIR",
        "PATH",
        "HOME",
        "USER",
        "LOGNAME",
        "SHELL",
        "LANG",
        "TZ",
        "APPMGR_APP_ID",
        // Built by the plan from the spec's sockets; a caller's value could point the app
        // at a bus or socket it was not granted (with `network`, the host's abstract
        // sockets such as X11's `@/tmp/.X11-unix/X0` are reachable by name).
        "NOTIFY_SOCKET",
        "DBUS_SYSTEM_BUS_ADDRESS",
        "WAYLAND_DISPLAY",
        "WAYLAND_SOCKET",
        "DISPLAY",
        "PULSE_SERVER",
        "PIPEWIRE_REMOTE",
        "PIPEWIRE_RUNTIME_DIR",
    ];
    EXACT.contains(&name)
        || name.starts_with("LD_")
        || name.starts_with("MALLOC_")
        || name.starts_with("XDG_")
}

fn valid_env_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn dir(dest: &str, mode: u32) -> MountOp {
    MountOp::Dir {
        dest: dest.into(),
        mode,
    }
}

fn symlink(target: &str, dest: &str) -> MountOp {
    MountOp::Symlink {
        target: target.into(),
        dest: dest.into(),
    }
}

/// Turns a launch spec into a plan. Pure: reads nothing, writes nothing.
pub fn build_plan(spec: &LaunchSpec) -> Result<LaunchPlan, PlanError> {
    let perms: &Permissions = &spec.permissions;
    if spec.uid == 0 {
        return Err(PlanError::PrivilegedId(spec.uid));
    }
    if spec.gid == 0 {
        return Err(PlanError::PrivilegedId(spec.gid));
    }
    let runtime = check_host_path("runtime", &spec.runtime_files)?;
    let app = check_host_path("app", &spec.app_files)?;
    let data = check_host_path("data dir", &spec.data_dir)?;
    let cache = check_host_path("cache dir", &spec.cache_dir)?;
    for c in spec.cgroup_procs.iter().chain(&spec.helper_cgroup_procs) {
        check_host_path("cgroup.procs", c)?;
    }
    if let Some(f) = &spec.device_filter {
        check_host_path("cgroup dir", &f.cgroup)?;
    }
    for c in &spec.after_exit.events {
        check_host_path("event counter", &c.file)?;
    }
    for d in &spec.after_exit.remove_dirs {
        check_host_path("cgroup dir", d)?;
    }
    let runtime_dir = spec
        .runtime_dir
        .as_deref()
        .map(|p| check_host_path("runtime dir", p))
        .transpose()?;
    let tz = spec.timezone.clone().unwrap_or_else(|| "UTC".into());
    if tz.is_empty()
        || tz.len() > 64
        || tz.starts_with('/')
        || tz.split('/').any(|c| c.is_empty() || c == "." || c == "..")
        || !tz
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '/' | '_' | '-' | '+'))
    {
        return Err(PlanError::BadValue {
            what: "time zone",
            value: tz,
        });
    }
    let lang = spec.lang.clone().unwrap_or_else(|| "C.UTF-8".into());
    if lang.is_empty()
        || lang.len() > 64
        || !lang
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '@'))
    {
        return Err(PlanError::BadValue {
            what: "LANG",
            value: lang,
        });
    }

    let exe = if spec.command.contains('/') {
        let ok = normal_abs(&spec.command)
            && (spec.command.starts_with("/app/") || spec.command.starts_with("/usr/"));
        if !ok {
            return Err(PlanError::BadCommand(spec.command.clone()));
        }
        spec.command.clone()
    } else {
        if spec.command.is_empty() || spec.command == "." || spec.command == ".." {
            return Err(PlanError::BadCommand(spec.command.clone()));
        }
        format!("/app/bin/{}", spec.command)
    };
    if appmgr_types::has_unsafe_chars(&exe) {
        return Err(PlanError::BadCommand(spec.command.clone()));
    }

    let ns = Namespaces {
        mount: true,
        pid: true,
        ipc: !perms.ipc,
        uts: true,
        // Always its own: with a network grant, the one the launcher made for the app.
        net: true,
        cgroup: true,
    };

    let uid = spec.uid;
    let gid = spec.gid;
    let (tmp_mib, shm_mib) = tmpfs_sizes_mib(spec.memory_max);
    let run_user = format!("/run/user/{uid}");
    let mut m: Vec<MountOp> = Vec::new();

    // The root tmpfs itself is created by the launcher; these build its skeleton.
    for (d, mode) in [
        ("/usr", 0o755),
        ("/app", 0o755),
        ("/proc", 0o555),
        ("/sys", 0o555),
        ("/dev", 0o755),
        ("/etc", 0o755),
        ("/tmp", 0o1777),
        ("/run", 0o755),
        ("/home", 0o755),
        (SANDBOX_HOME, 0o700),
        ("/var", 0o755),
    ] {
        m.push(dir(d, mode));
    }
    for l in ["bin", "lib", "lib64", "sbin"] {
        m.push(symlink(&format!("usr/{l}"), &format!("/{l}")));
    }
    m.push(symlink("../tmp", "/var/tmp"));
    // Deployments: read-only, nosuid, nodev.
    m.push(MountOp::Bind {
        source: BindSource::Deployment(runtime.into()),
        dest: "/usr".into(),
        readonly: true,
        dev: false,
    });
    m.push(MountOp::Bind {
        source: BindSource::Deployment(app.into()),
        dest: "/app".into(),
        readonly: true,
        dev: false,
    });
    let (ext_mounts, ext_env) = extension_mounts(&spec.extensions)?;
    m.extend(ext_mounts);
    m.push(MountOp::Proc {
        dest: "/proc".into(),
    });
    // Kernel tunables: the app has neither root's uid nor capabilities to write them, this
    // is a second wall. (/proc/sysrq-trigger, /proc/irq, /proc/bus are root-only too; each
    // extra read-only bind costs two mount calls on every launch.)
    m.push(MountOp::RemountReadonly {
        dest: "/proc/sys".into(),
    });
    m.push(MountOp::Sysfs {
        dest: "/sys".into(),
    });

    // /dev: a small tmpfs with the harmless nodes, a private devpts, shm.
    m.push(MountOp::Tmpfs {
        dest: "/dev".into(),
        mode: 0o755,
        size_mib: 1,
        noexec: true,
        dev: !spec.devices.is_empty(),
    });
    for p in STANDARD_DEVICE_NODES {
        let p = p.to_string();
        m.push(MountOp::Bind {
            source: BindSource::Device(p.clone().into()),
            dest: p,
            readonly: false,
            dev: true,
        });
    }
    m.push(MountOp::Devpts {
        dest: "/dev/pts".into(),
    });
    m.push(symlink("pts/ptmx", "/dev/ptmx"));
    if perms.ipc {
        m.push(dir("/dev/shm", 0o755));
        m.push(MountOp::Bind {
            source: BindSource::HostPath("/dev/shm".into()),
            dest: "/dev/shm".into(),
            readonly: false,
            dev: false,
        });
    } else {
        m.push(MountOp::Tmpfs {
            dest: "/dev/shm".into(),
            mode: 0o1777,
            size_mib: shm_mib,
            noexec: true,
            dev: false,
        });
    }
    m.push(symlink("/proc/self/fd", "/dev/fd"));
    for (i, n) in ["stdin", "stdout", "stderr"].iter().enumerate() {
        m.push(symlink(&format!("/proc/self/fd/{i}"), &format!("/dev/{n}")));
    }
    let mut devs: Vec<String> = Vec::new();
    for d in &spec.devices {
        let s = check_host_path("device", d)?;
        if !s.starts_with("/dev/") {
            return Err(PlanError::DeviceOutsideDev(s));
        }
        if ["/dev/pts", "/dev/shm", "/dev/fd", "/dev/ptmx"]
            .iter()
            .any(|r| s == *r || s.starts_with(&format!("{r}/")))
        {
            return Err(PlanError::DeviceOutsideDev(s));
        }
        if !devs.contains(&s) {
            devs.push(s);
        }
    }
    devs.sort();
    for d in devs {
        m.push(MountOp::DeviceNode {
            source: d.clone().into(),
            dest: d,
        });
    }

    m.push(MountOp::Tmpfs {
        dest: "/tmp".into(),
        mode: 0o1777,
        size_mib: tmp_mib,
        noexec: false,
        dev: false,
    });
    m.push(MountOp::Tmpfs {
        dest: "/run".into(),
        mode: 0o755,
        size_mib: 1,
        noexec: true,
        dev: false,
    });
    m.push(dir("/run/user", 0o755));
    m.push(MountOp::AppOwnedDir {
        dest: run_user.clone(),
        mode: 0o700,
    });
    if let Some(rd) = runtime_dir {
        m.push(MountOp::Bind {
            source: BindSource::AppDir(rd.into()),
            dest: run_user.clone(),
            readonly: false,
            dev: false,
        });
    }
    // Host sockets: the bind of the socket inode is the whole grant (connect/sendto need
    // write permission on the inode, which the caller arranges for the app's uid). The
    // directories above them are root-owned on the /run tmpfs.
    let mut socket_vars: Vec<(String, String)> = Vec::new();
    let mut run_appmgr = false;
    let mut run_appmgr_dir = |m: &mut Vec<MountOp>| {
        if !std::mem::replace(&mut run_appmgr, true) {
            m.push(dir("/run/appmgr", 0o755));
        }
    };
    if let Some(ns) = &spec.notify_socket {
        let s = check_host_path("notify socket", ns)?;
        run_appmgr_dir(&mut m);
        m.push(MountOp::Bind {
            source: BindSource::Socket(s.into()),
            dest: SANDBOX_NOTIFY_SOCKET.into(),
            readonly: false,
            dev: false,
        });
        socket_vars.push(("NOTIFY_SOCKET".into(), SANDBOX_NOTIFY_SOCKET.into()));
    }
    // A served portal is reached over the system bus (the bus policy lets the app's uid
    // call exactly the portal's name).
    let bus_granted =
        !perms.dbus_talk.is_empty() || !perms.dbus_own.is_empty() || perms.has_served_portal();
    if let Some(bus) = spec.system_bus_socket.as_ref().filter(|_| bus_granted) {
        let s = check_host_path("system bus socket", bus)?;
        m.push(dir("/run/dbus", 0o755));
        m.push(MountOp::Bind {
            source: BindSource::Socket(s.into()),
            dest: SANDBOX_SYSTEM_BUS_SOCKET.into(),
            readonly: false,
            dev: false,
        });
        socket_vars.push((
            "DBUS_SYSTEM_BUS_ADDRESS".into(),
            SANDBOX_SYSTEM_BUS_ADDRESS.into(),
        ));
    }
    // Display and audio sockets: granted kinds the caller offers, x11 only as the
    // fallback of a missing Wayland socket.
    let x11_fallback = x11_is_fallback(spec);
    for (&kind, host) in &spec.host_sockets {
        if !perms.sockets.contains(&kind) || (kind == SocketName::X11 && x11_fallback) {
            continue;
        }
        let what = match kind {
            SocketName::Wayland => "wayland socket",
            SocketName::X11 => "x11 socket",
            SocketName::Pulseaudio => "pulseaudio socket",
            SocketName::Pipewire => "pipewire socket",
        };
        let s = check_host_path(what, host)?;
        if kind == SocketName::X11 {
            m.push(dir("/tmp/.X11-unix", 0o755));
        } else {
            run_appmgr_dir(&mut m);
        }
        m.push(MountOp::Bind {
            source: BindSource::Socket(s.into()),
            dest: sandbox_socket(kind).into(),
            readonly: false,
            dev: false,
        });
        socket_vars.extend(
            socket_env(kind)
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string())),
        );
        if kind == SocketName::Pipewire && spec.pipewire_access {
            m.push(MountOp::File {
                dest: PIPEWIRE_SANDBOX_MARKER.into(),
                mode: 0o444,
                contents: format!("[Application]\nname={}\n", spec.app_id),
            });
        }
    }

    // /etc: the runtime's /usr/etc as symlinks, plus generated identity files.
    let hostname = sanitize_hostname(spec.app_id.as_str());
    let hosts_head =
        format!("127.0.0.1\tlocalhost {hostname}\n::1\tlocalhost ip6-localhost ip6-loopback\n");
    let mut net = match (&spec.network, perms.network.is_granted()) {
        (Some(n), true) => Some(crate::net::plan(&spec.app_id, uid, &perms.network, n)?),
        _ => None,
    };
    // With names, the app's /etc/hosts lives in its network's names directory, where
    // appmgr replaces it when an answer changes (crate::netnames).
    let names_hosts = match net.as_mut().filter(|n| !n.names.is_empty()) {
        Some(n) => {
            n.hosts_head = hosts_head.clone();
            run_appmgr_dir(&mut m);
            m.push(dir(crate::net::SANDBOX_NAMES_DIR, 0o755));
            m.push(MountOp::Bind {
                source: BindSource::NetNames(crate::net::names_dir(&n.name)),
                dest: crate::net::SANDBOX_NAMES_DIR.into(),
                readonly: true,
                dev: false,
            });
            true
        }
        None => false,
    };
    let mut generated = vec![
        (
            "passwd",
            format!(
                "root:x:0:0:root:/:/sbin/nologin\n{SANDBOX_USER}:x:{uid}:{gid}:{}:{SANDBOX_HOME}:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\n",
                spec.app_id
            ),
        ),
        (
            "group",
            format!("root:x:0:\n{SANDBOX_USER}:x:{gid}:\nnogroup:x:65534:\n"),
        ),
        ("hosts", hosts_head),
        ("hostname", format!("{hostname}\n")),
        ("machine-id", format!("{}\n", machine_id(spec.app_id.as_str()))),
    ];
    if names_hosts {
        generated.retain(|(n, _)| *n != "hosts");
    }
    let mut except: Vec<String> = generated.iter().map(|(n, _)| n.to_string()).collect();
    if names_hosts {
        except.push("hosts".into());
    }
    except.push("localtime".into());
    except.push("resolv.conf".into());
    except.push("mtab".into());
    m.push(MountOp::LinkRuntimeEtc {
        dest: "/etc".into(),
        target: "/usr/etc".into(),
        except,
    });
    for (name, contents) in generated.drain(..) {
        m.push(MountOp::File {
            dest: format!("/etc/{name}"),
            mode: 0o644,
            contents,
        });
    }
    m.push(symlink(
        &format!("/usr/share/zoneinfo/{tz}"),
        "/etc/localtime",
    ));
    m.push(symlink("/proc/self/mounts", "/etc/mtab"));
    if names_hosts {
        m.push(symlink(
            &format!("{}/hosts", crate::net::SANDBOX_NAMES_DIR),
            "/etc/hosts",
        ));
    }
    match &spec.network {
        // Any egress: the host's own resolver configuration.
        Some(_) if perms.network.any => m.push(MountOp::CopyHostFile {
            source: "/etc/resolv.conf".into(),
            dest: "/etc/resolv.conf".into(),
        }),
        // `dns`: the name servers the rules let it reach, and only those.
        Some(n) if perms.network.dns && !n.nameservers.is_empty() => m.push(MountOp::File {
            dest: "/etc/resolv.conf".into(),
            mode: 0o644,
            contents: n
                .nameservers
                .iter()
                .map(|a| format!("nameserver {a}\n"))
                .collect(),
        }),
        _ => {}
    }

    // Granted host paths, at the same place. Each is opened by the launcher beneath `/`
    // without following symlinks and compared with `protected` on what it resolved to.
    for g in &perms.filesystems {
        let p = g.path.as_str();
        check_filesystem_grant(perms, p)?;
        m.push(MountOp::Bind {
            source: BindSource::Granted(p.into()),
            dest: p.to_string(),
            readonly: g.access == FsAccess::Ro,
            dev: false,
        });
    }

    // The data dir last among binds of /home so nothing can shadow it.
    m.push(MountOp::Bind {
        source: match &spec.data_image {
            Some(img) => BindSource::StorageImage(check_host_path("storage image", img)?.into()),
            None => BindSource::AppDir(data.into()),
        },
        dest: SANDBOX_HOME.into(),
        readonly: false,
        dev: false,
    });

    // Environment: built, never inherited.
    let mut env: Vec<(String, String)> = vec![
        ("PATH".into(), "/app/bin:/usr/bin:/bin".into()),
        ("HOME".into(), SANDBOX_HOME.into()),
        ("USER".into(), SANDBOX_USER.into()),
        ("LOGNAME".into(), SANDBOX_USER.into()),
        ("SHELL".into(), "/bin/sh".into()),
        ("LANG".into(), lang),
        ("TZ".into(), ":/etc/localtime".into()),
        ("XDG_CONFIG_HOME".into(), format!("{SANDBOX_HOME}/.config")),
        (
            "XDG_DATA_HOME".into(),
            format!("{SANDBOX_HOME}/.local/share"),
        ),
        (
            "XDG_STATE_HOME".into(),
            format!("{SANDBOX_HOME}/.local/state"),
        ),
        ("XDG_CACHE_HOME".into(), format!("{SANDBOX_HOME}/.cache")),
        ("XDG_RUNTIME_DIR".into(), run_user),
        ("XDG_DATA_DIRS".into(), "/app/share:/usr/share".into()),
        ("XDG_CONFIG_DIRS".into(), "/app/etc/xdg:/etc/xdg".into()),
        ("APPMGR_APP_ID".into(), spec.app_id.to_string()),
    ];
    env.extend(socket_vars);
    env.extend(ext_env);
    for name in &spec.env_allow {
        if !valid_env_name(name) || env_name_forbidden(name) {
            return Err(PlanError::EnvNotAllowed(name.clone()));
        }
        if env.iter().any(|(k, _)| k == name) {
            // An extension's variable: the extension's value is the one that works.
            continue;
        }
        if let Some((_, v)) = spec.caller_env.iter().rev().find(|(k, _)| k == name) {
            if v.contains('\0') {
                return Err(PlanError::EnvNotAllowed(name.clone()));
            }
            env.push((name.clone(), v.clone()));
        }
    }

    let mut argv = vec![exe.clone()];
    argv.extend(spec.args.iter().cloned());
    if argv.iter().any(|a| a.contains('\0')) {
        return Err(PlanError::BadValue {
            what: "argument",
            value: "contains NUL".into(),
        });
    }

    let seccomp = SeccompPlan::new(
        &cache,
        perms.allow.contains(&AllowFlag::Devel),
        perms.allow.contains(&AllowFlag::Multiarch),
        perms.allow.contains(&AllowFlag::Bluetooth),
        perms.allow.contains(&AllowFlag::Canbus),
    );

    let protected_paths = if perms.filesystems.is_empty() {
        Vec::new()
    } else {
        protected_paths(&spec.deny_paths)?
    };

    Ok(LaunchPlan {
        version: PLAN_VERSION,
        app_id: spec.app_id.to_string(),
        hostname,
        namespaces: ns,
        loopback: ns.net,
        uid,
        gid,
        cgroup_procs: spec.cgroup_procs.clone(),
        helper_cgroup_procs: spec.helper_cgroup_procs.clone(),
        device_filter: spec.device_filter.clone(),
        after_exit: spec.after_exit.clone(),
        mounts: m,
        protected_paths,
        seccomp,
        env,
        exe,
        argv,
        cwd: SANDBOX_HOME.into(),
        inputs: spec.inputs.clone(),
        net,
    })
}

/// A hostname from the app id: the last element, lowercase, at most 63 characters.
fn sanitize_hostname(id: &str) -> String {
    let last = id.rsplit('.').next().unwrap_or(id);
    let mut h: String = last
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .take(63)
        .collect();
    h = h.trim_matches('-').to_string();
    if h.is_empty() {
        h = "app".into();
    }
    h
}

/// A stable per-app machine id (the host's is not shown to apps): the first 128 bits of
/// SHA-256 over the app id, in the 32-hex-digit form of machine-id(5).
fn machine_id(id: &str) -> String {
    use sha2::{Digest, Sha256};
    let d = Sha256::digest(format!("appmgr machine-id\0{id}").as_bytes());
    hex::encode(&d[..16])
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn spec() -> LaunchSpec {
        LaunchSpec {
            app_id: AppId::new("org.example.Hello").unwrap(),
            runtime_files: "/var/lib/appmgr/deploy/runtime/files".into(),
            app_files: "/var/lib/appmgr/deploy/app/files".into(),
            data_dir: "/var/lib/appmgr/data/org.example.Hello".into(),
            runtime_dir: None,
            uid: 20001,
            gid: 20001,
            permissions: Permissions::default(),
            devices: vec![],
            command: "hello".into(),
            args: vec!["--bind".into(), "/".into(), "/".into()],
            cgroup_procs: vec![],
            helper_cgroup_procs: vec![],
            device_filter: None,
            after_exit: AfterExit::default(),
            env_allow: vec![],
            caller_env: vec![
                ("LD_PRELOAD".into(), "/tmp/evil.so".into()),
                ("GCONV_PATH".into(), "/tmp".into()),
                ("WAYLAND_DISPLAY".into(), "wayland-0".into()),
            ],
            cache_dir: "/var/cache/appmgr/seccomp".into(),
            timezone: None,
            lang: None,
            notify_socket: None,
            system_bus_socket: None,
            host_sockets: BTreeMap::new(),
            pipewire_access: false,
            memory_max: None,
            deny_paths: vec![],
            data_image: None,
            inputs: Vec::new(),
            network: None,
            extensions: vec![],
        }
    }

    fn tmpfs_size(p: &LaunchPlan, at: &str) -> u32 {
        p.mounts
            .iter()
            .find_map(|m| match m {
                MountOp::Tmpfs { dest, size_mib, .. } if dest == at => Some(*size_mib),
                _ => None,
            })
            .unwrap()
    }

    #[test]
    fn tmpfs_sizes_follow_the_memory_limit() {
        let mut s = spec();
        let p = build_plan(&s).unwrap();
        assert_eq!(tmpfs_size(&p, "/tmp"), TMP_MAX_MIB);
        assert_eq!(tmpfs_size(&p, "/dev/shm"), SHM_MAX_MIB);
        s.memory_max = Some(16 << 20);
        let p = build_plan(&s).unwrap();
        assert_eq!(tmpfs_size(&p, "/tmp"), 8);
        assert_eq!(tmpfs_size(&p, "/dev/shm"), 4);
        // Tiny limits still get a usable /tmp; large ones keep the defaults.
        assert_eq!(tmpfs_sizes_mib(Some(4096)), (1, 1));
        assert_eq!(tmpfs_sizes_mib(Some(8 << 30)), (TMP_MAX_MIB, SHM_MAX_MIB));
    }

    fn dests(p: &LaunchPlan) -> Vec<String> {
        p.mounts
            .iter()
            .filter_map(|m| match m {
                MountOp::Bind { dest, .. } | MountOp::DeviceNode { dest, .. } => Some(dest.clone()),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn default_plan_is_closed() {
        let p = build_plan(&spec()).unwrap();
        assert!(p.namespaces.net && p.namespaces.ipc && p.namespaces.pid);
        assert!(p.loopback);
        assert_eq!(p.exe, "/app/bin/hello");
        assert_eq!(p.argv, ["/app/bin/hello", "--bind", "/", "/"]);
        assert!(p
            .env
            .iter()
            .all(|(k, _)| k != "LD_PRELOAD" && k != "GCONV_PATH"));
        assert!(p.env.iter().all(|(k, _)| k != "WAYLAND_DISPLAY"));
        assert!(!p.seccomp.devel && !p.seccomp.multiarch);
        let binds: Vec<&MountOp> = p
            .mounts
            .iter()
            .filter(|m| matches!(m, MountOp::Bind { .. }))
            .collect();
        for b in binds {
            if let MountOp::Bind {
                dest,
                readonly,
                dev,
                ..
            } = b
            {
                if dest == "/usr" || dest == "/app" {
                    assert!(*readonly && !*dev);
                }
            }
        }
        assert!(!p
            .mounts
            .iter()
            .any(|m| matches!(m, MountOp::CopyHostFile { .. })));
        // round trip through JSON (what the launcher receives)
        let j = serde_json::to_string(&p).unwrap();
        assert_eq!(serde_json::from_str::<LaunchPlan>(&j).unwrap(), p);
    }

    #[test]
    fn grants_open_the_plan() {
        let mut s = spec();
        s.permissions.network = appmgr_types::NetworkGrant::any();
        s.permissions.ipc = true;
        s.permissions.allow.insert(AllowFlag::Devel);
        s.permissions
            .filesystems
            .insert("/media/usb:rw".parse().unwrap());
        s.devices = vec!["/dev/dri/renderD128".into()];
        s.env_allow = vec!["MY_APP_MODE".into()];
        s.caller_env.push(("MY_APP_MODE".into(), "kiosk".into()));
        let p = build_plan(&s).unwrap();
        // Always an own network namespace; without a network spec (no ip/nft on the host)
        // it has only lo and the grant is shown not provided.
        assert!(p.namespaces.net && p.net.is_none() && !p.namespaces.ipc && p.loopback);
        assert!(p.seccomp.devel);
        let d = dests(&p);
        assert!(d.contains(&"/media/usb".to_string()));
        assert!(d.contains(&"/dev/dri/renderD128".to_string()));
        // A granted device is the app's private node on a /dev that allows devices; no
        // host node is bound for it.
        assert!(p.mounts.iter().any(|m| matches!(m,
            MountOp::DeviceNode { source, dest }
                if dest == "/dev/dri/renderD128" && source.as_path() == Path::new(dest))));
        assert!(!p.mounts.iter().any(|m| matches!(m,
            MountOp::Bind { dest, .. } if dest == "/dev/dri/renderD128")));
        assert!(p.mounts.iter().any(|m| matches!(m,
            MountOp::Tmpfs { dest, dev: true, .. } if dest == "/dev")));
        assert!(!build_plan(&spec())
            .unwrap()
            .mounts
            .iter()
            .any(|m| matches!(m, MountOp::Tmpfs { dev: true, .. })));
        assert!(p.env.contains(&("MY_APP_MODE".into(), "kiosk".into())));
        let resolv = |p: &LaunchPlan| {
            p.mounts.iter().any(
                |m| matches!(m, MountOp::CopyHostFile { dest, .. } if dest == "/etc/resolv.conf"),
            )
        };
        // resolv.conf only with a network to query it through.
        assert!(!resolv(&p));
        let mut with_net = s.clone();
        with_net.network = Some(crate::net::NetSpec {
            refresh: Default::default(),
            resolvers: Vec::new(),
            pool: crate::net::DEFAULT_POOL.parse().unwrap(),
            slot: 0,
            resolved: Default::default(),
            nameservers: vec![],
            peers: vec![],
            routed: false,
        });
        let pn = build_plan(&with_net).unwrap();
        assert!(resolv(&pn) && pn.net.as_ref().unwrap().any);
        assert_ne!(
            p.seccomp.cache_file,
            build_plan(&spec()).unwrap().seccomp.cache_file
        );
    }

    #[test]
    fn refusals() {
        let mut s = spec();
        s.uid = 0;
        assert_eq!(build_plan(&s), Err(PlanError::PrivilegedId(0)));
        for bad in [
            "LD_PRELOAD",
            "GCONV_PATH",
            "LD_LIBRARY_PATH",
            "PATH",
            "XDG_RUNTIME_DIR",
            "A=B",
            "",
        ] {
            let mut s = spec();
            s.env_allow = vec![bad.into()];
            assert!(
                matches!(build_plan(&s), Err(PlanError::EnvNotAllowed(_))),
                "{bad}"
            );
        }
        for bad in [
            "/etc/x",
            "../x",
            "/app/../etc/passwd",
            "/usr/bin/../../x",
            "a/b",
            "",
        ] {
            let mut s = spec();
            s.command = bad.into();
            assert!(
                matches!(build_plan(&s), Err(PlanError::BadCommand(_))),
                "{bad}"
            );
        }
        for bad in [
            "/usr",
            "/usr/lib",
            "/proc/1",
            "/dev/sda",
            "/etc",
            "/tmp",
            "/run/user/0",
            "/home/app/x",
            "/home",
        ] {
            let mut s = spec();
            s.permissions.filesystems.insert(bad.parse().unwrap());
            assert!(
                matches!(build_plan(&s), Err(PlanError::ReservedPath(_))),
                "{bad}"
            );
        }
        let mut s = spec();
        s.permissions
            .filesystems
            .insert("/tmp/shared:rw".parse().unwrap());
        assert!(build_plan(&s).is_ok());
        for bad in ["/etc/shadow", "/dev/../etc/shadow", "/dev/pts/0"] {
            let mut s = spec();
            s.devices = vec![bad.into()];
            assert!(build_plan(&s).is_err(), "{bad}");
        }
        let mut s = spec();
        s.data_dir = "/var/lib/../../etc".into();
        assert!(matches!(build_plan(&s), Err(PlanError::BadPath { .. })));
        let mut s = spec();
        s.timezone = Some("../../etc/shadow".into());
        assert!(build_plan(&s).is_err());
    }

    #[test]
    fn filesystem_grants_are_resolved_by_the_launcher() {
        // A grant inside another grant is refused (its mount point would be inside the
        // bound host directory), whichever access either has.
        for (outer, inner) in [("/srv/a:rw", "/srv/a/b:ro"), ("/srv/a:ro", "/srv/a/b/c:rw")] {
            let mut s = spec();
            s.permissions.filesystems.insert(outer.parse().unwrap());
            s.permissions.filesystems.insert(inner.parse().unwrap());
            assert!(
                matches!(build_plan(&s), Err(PlanError::NestedGrant { .. })),
                "{inner} in {outer}"
            );
        }
        // Siblings and prefixes that are not parents are fine.
        let mut s = spec();
        for g in ["/srv/a:rw", "/srv/ab:ro", "/srv/b:rw"] {
            s.permissions.filesystems.insert(g.parse().unwrap());
        }
        s.deny_paths = vec!["/srv/keys".into()];
        let p = build_plan(&s).unwrap();
        // Granted sources (checked by the launcher), and the protected paths they are
        // compared with once resolved: the deny path and the sandbox's own directories.
        let granted: Vec<&BindSource> = p
            .mounts
            .iter()
            .filter_map(|m| match m {
                MountOp::Bind { source, .. } => Some(source),
                _ => None,
            })
            .filter(|s| matches!(s, BindSource::Granted(_)))
            .collect();
        assert_eq!(granted.len(), 3);
        assert!(p.protected_paths.contains(&ProtectedPath {
            path: "/srv/keys".into(),
            below: true
        }));
        for (path, below) in [
            ("/etc", true),
            ("/proc", true),
            ("/tmp", false),
            ("/", false),
        ] {
            assert!(
                p.protected_paths.contains(&ProtectedPath {
                    path: path.into(),
                    below
                }),
                "{path}"
            );
        }
        // Without filesystem grants there is nothing to compare (no cost per launch).
        assert!(build_plan(&spec()).unwrap().protected_paths.is_empty());
        // /var/tmp is the sandbox's own symlink: a mount point below it is refused.
        let mut s = spec();
        s.permissions
            .filesystems
            .insert("/var/tmp/x".parse().unwrap());
        assert!(matches!(build_plan(&s), Err(PlanError::ReservedPath(_))));
        // A deny path must be a normal absolute path.
        let mut s = spec();
        s.permissions.filesystems.insert("/srv/a".parse().unwrap());
        s.deny_paths = vec!["/srv/../etc".into()];
        assert!(matches!(build_plan(&s), Err(PlanError::BadPath { .. })));
    }

    fn socket_binds(p: &LaunchPlan) -> Vec<(String, String)> {
        p.mounts
            .iter()
            .filter_map(|m| match m {
                MountOp::Bind {
                    source: BindSource::Socket(src),
                    dest,
                    readonly,
                    dev,
                } => {
                    assert!(!*readonly && !*dev);
                    Some((src.display().to_string(), dest.clone()))
                }
                _ => None,
            })
            .collect()
    }

    fn env_of<'a>(p: &'a LaunchPlan, k: &str) -> Option<&'a str> {
        p.env.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str())
    }

    fn ext(id: &str, mp: &str) -> ExtensionMount {
        ExtensionMount {
            id: id.into(),
            files: format!("/var/lib/appmgr/deploy/extension/{id}/files").into(),
            mount_point: mp.into(),
            library_path: vec!["lib".into()],
            env: vec![("LIBGL_DRIVERS_PATH".into(), "lib/dri".into())],
        }
    }

    #[test]
    fn extensions_get_a_tmpfs_point_a_read_only_bind_and_their_variables() {
        let mut s = spec();
        s.extensions = vec![
            ext("org.x.GL.a", "/usr/lib/extensions/gl/a"),
            ext("org.x.GL.b", "/usr/lib/extensions/gl/b"),
            ext("org.x.Codec", "/app/lib/codecs/c"),
        ];
        s.env_allow = vec!["LIBGL_DRIVERS_PATH".into()];
        s.caller_env = vec![("LIBGL_DRIVERS_PATH".into(), "/home/x".into())];
        let p = build_plan(&s).unwrap();
        let tmpfs: Vec<&str> = p
            .mounts
            .iter()
            .filter_map(|m| match m {
                MountOp::Tmpfs { dest, mode, .. }
                    if dest.starts_with("/usr/") || dest.starts_with("/app/") =>
                {
                    assert_eq!(*mode, 0o755);
                    Some(dest.as_str())
                }
                _ => None,
            })
            .collect();
        assert_eq!(
            tmpfs,
            ["/usr/lib/extensions/gl", "/app/lib/codecs"],
            "one per point"
        );
        let app = pos_of(
            &p,
            |m| matches!(m, MountOp::Bind { dest, .. } if dest == "/app"),
        );
        for mp in [
            "/usr/lib/extensions/gl/a",
            "/usr/lib/extensions/gl/b",
            "/app/lib/codecs/c",
        ] {
            let i = pos_of(
                &p,
                |m| matches!(m, MountOp::Bind { dest, readonly: true, source: BindSource::Deployment(_), .. } if dest == mp),
            );
            assert!(i > app, "{mp} is bound after the trees it extends");
        }
        assert_eq!(
            env_of(&p, "LIBGL_DRIVERS_PATH"),
            Some("/usr/lib/extensions/gl/a/lib/dri:/usr/lib/extensions/gl/b/lib/dri:/app/lib/codecs/c/lib/dri"),
            "the extensions' value, not the caller's"
        );
        assert_eq!(
            p.env
                .iter()
                .filter(|(k, _)| k == "LIBGL_DRIVERS_PATH")
                .count(),
            1
        );
        assert_eq!(
            env_of(&p, "LD_LIBRARY_PATH"),
            Some("/usr/lib/extensions/gl/a/lib:/usr/lib/extensions/gl/b/lib:/app/lib/codecs/c/lib")
        );
        assert_eq!(
            env_of(&build_plan(&spec()).unwrap(), "LD_LIBRARY_PATH"),
            None
        );

        let refused = |exts: Vec<ExtensionMount>| {
            let mut s = spec();
            s.extensions = exts;
            build_plan(&s).unwrap_err().to_string()
        };
        for mp in [
            "/usr/gl",
            "/etc/a/b",
            "/usr/lib/../x",
            "/usr/lib//x",
            "/usr/lib/x/",
        ] {
            assert!(
                refused(vec![ext("org.x.A", mp)]).contains("mount point"),
                "{mp}"
            );
        }
        let e = refused(vec![
            ext("org.x.A", "/usr/lib/gl/a"),
            ext("org.x.B", "/usr/lib/gl/a"),
        ]);
        assert!(e.contains("collides"), "{e}");
        let e = refused(vec![
            ext("org.x.A", "/usr/lib/gl/a"),
            ext("org.x.B", "/usr/lib/gl/a/b/c"),
        ]);
        assert!(e.contains("collides"), "{e}");
        let mut bad = ext("org.x.A", "/usr/lib/gl/a");
        bad.env = vec![("LD_PRELOAD".into(), "lib/x.so".into())];
        assert!(refused(vec![bad]).contains("variable"));
        let mut bad = ext("org.x.A", "/usr/lib/gl/a");
        bad.library_path = vec!["../../../../tmp".into()];
        assert!(refused(vec![bad]).contains("library path"));
    }

    #[test]
    fn notify_socket_is_bound_with_its_variable() {
        let p = build_plan(&spec()).unwrap();
        assert!(socket_binds(&p).is_empty());
        assert_eq!(env_of(&p, "NOTIFY_SOCKET"), None);

        let mut s = spec();
        s.notify_socket = Some("/run/appmgr/notify/org.example.Hello".into());
        let p = build_plan(&s).unwrap();
        assert_eq!(
            socket_binds(&p),
            [(
                "/run/appmgr/notify/org.example.Hello".to_string(),
                SANDBOX_NOTIFY_SOCKET.to_string()
            )]
        );
        assert_eq!(env_of(&p, "NOTIFY_SOCKET"), Some(SANDBOX_NOTIFY_SOCKET));
        // The bind comes after the /run tmpfs it lives on, below a root-owned directory.
        let pos = |f: &dyn Fn(&MountOp) -> bool| p.mounts.iter().position(f).unwrap();
        let run = pos(&|m| matches!(m, MountOp::Tmpfs { dest, .. } if dest == "/run"));
        let d = pos(&|m| matches!(m, MountOp::Dir { dest, .. } if dest == "/run/appmgr"));
        let b = pos(&|m| matches!(m, MountOp::Bind { dest, .. } if dest == SANDBOX_NOTIFY_SOCKET));
        assert!(run < d && d < b);
        let j = serde_json::to_string(&p).unwrap();
        assert!(j.contains(r#""kind":"socket""#), "{j}");
        assert_eq!(serde_json::from_str::<LaunchPlan>(&j).unwrap(), p);

        for bad in ["relative/notify", "/run/../etc/shadow", "/run/x\n"] {
            let mut s = spec();
            s.notify_socket = Some(bad.into());
            assert!(
                matches!(build_plan(&s), Err(PlanError::BadPath { .. })),
                "{bad}"
            );
        }
    }

    #[test]
    fn system_bus_only_with_a_dbus_grant() {
        let bus = "/run/dbus/system_bus_socket";
        // Set, but no grant: no bind, no variable (deny by default).
        let mut s = spec();
        s.system_bus_socket = Some(bus.into());
        let p = build_plan(&s).unwrap();
        assert!(socket_binds(&p).is_empty());
        assert_eq!(env_of(&p, "DBUS_SYSTEM_BUS_ADDRESS"), None);
        assert!(!dests(&p).iter().any(|d| d.starts_with("/run/dbus")));
        // Other grants do not open the bus.
        s.permissions.network = appmgr_types::NetworkGrant::any();
        s.permissions.ipc = true;
        assert!(socket_binds(&build_plan(&s).unwrap()).is_empty());

        for grant in ["talk", "own"] {
            let mut s = spec();
            s.system_bus_socket = Some(bus.into());
            let name = appmgr_types::BusName::new("org.example.Hello").unwrap();
            if grant == "talk" {
                s.permissions.dbus_talk.insert(name);
            } else {
                s.permissions.dbus_own.insert(name);
            }
            let p = build_plan(&s).unwrap();
            assert_eq!(
                socket_binds(&p),
                [(bus.to_string(), SANDBOX_SYSTEM_BUS_SOCKET.to_string())],
                "{grant}"
            );
            assert_eq!(
                env_of(&p, "DBUS_SYSTEM_BUS_ADDRESS"),
                Some("unix:path=/run/dbus/system_bus_socket")
            );
            // A grant without a socket path binds nothing.
            s.system_bus_socket = None;
            let p = build_plan(&s).unwrap();
            assert!(socket_binds(&p).is_empty());
            assert_eq!(env_of(&p, "DBUS_SYSTEM_BUS_ADDRESS"), None);
        }

        // Both sockets at once, notify first.
        let mut s = spec();
        s.system_bus_socket = Some(bus.into());
        s.notify_socket = Some("/run/appmgrd/n.sock".into());
        s.permissions
            .dbus_talk
            .insert(appmgr_types::BusName::new("org.example.*").unwrap());
        let p = build_plan(&s).unwrap();
        assert_eq!(socket_binds(&p).len(), 2);
        assert_eq!(socket_binds(&p)[0].1, SANDBOX_NOTIFY_SOCKET);
    }

    #[test]
    fn display_and_audio_sockets_only_when_granted_and_offered() {
        let offered: BTreeMap<SocketName, PathBuf> = [
            (SocketName::Wayland, "/run/wayland-0".into()),
            (SocketName::X11, "/tmp/.X11-unix/X0".into()),
            (SocketName::Pipewire, "/run/pipewire/pipewire-0".into()),
            (SocketName::Pulseaudio, "/run/pulse/native".into()),
        ]
        .into();
        let vars = [
            "WAYLAND_DISPLAY",
            "DISPLAY",
            "PULSE_SERVER",
            "PIPEWIRE_REMOTE",
            "PIPEWIRE_RUNTIME_DIR",
        ];
        // Offered, not granted: nothing.
        let mut s = spec();
        s.host_sockets = offered.clone();
        let p = build_plan(&s).unwrap();
        assert!(socket_binds(&p).is_empty());
        assert!(vars.iter().all(|v| env_of(&p, v).is_none()));
        // Granted wayland and pipewire: exactly those two, with their variables.
        s.permissions.sockets = [SocketName::Wayland, SocketName::Pipewire].into();
        let p = build_plan(&s).unwrap();
        assert_eq!(
            socket_binds(&p),
            [
                (
                    "/run/wayland-0".to_string(),
                    SANDBOX_WAYLAND_SOCKET.to_string()
                ),
                (
                    "/run/pipewire/pipewire-0".to_string(),
                    SANDBOX_PIPEWIRE_SOCKET.to_string()
                ),
            ]
        );
        assert_eq!(env_of(&p, "WAYLAND_DISPLAY"), Some("/run/appmgr/wayland-0"));
        assert_eq!(env_of(&p, "PIPEWIRE_RUNTIME_DIR"), Some("/run/appmgr"));
        assert_eq!(env_of(&p, "PIPEWIRE_REMOTE"), Some("pipewire-0"));
        assert_eq!(env_of(&p, "DISPLAY"), None);
        assert_eq!(env_of(&p, "PULSE_SERVER"), None);
        assert_eq!(env_of(&p, "XDG_RUNTIME_DIR"), Some("/run/user/20001"));
        // Below one root-owned /run/appmgr made once, after the /run tmpfs.
        let pos = |f: &dyn Fn(&MountOp) -> bool| p.mounts.iter().position(f).unwrap();
        let run = pos(&|m| matches!(m, MountOp::Tmpfs { dest, .. } if dest == "/run"));
        let d = pos(&|m| matches!(m, MountOp::Dir { dest, .. } if dest == "/run/appmgr"));
        let b = pos(&|m| matches!(m, MountOp::Bind { dest, .. } if dest == SANDBOX_WAYLAND_SOCKET));
        assert!(run < d && d < b);
        s.notify_socket = Some("/run/appmgrd/n.sock".into());
        let p = build_plan(&s).unwrap();
        let dirs = p
            .mounts
            .iter()
            .filter(|m| matches!(m, MountOp::Dir { dest, .. } if dest == "/run/appmgr"))
            .count();
        assert_eq!(dirs, 1);
        // pulseaudio: PULSE_SERVER names the socket.
        let mut s = spec();
        s.host_sockets = offered.clone();
        s.permissions.sockets = [SocketName::Pulseaudio].into();
        let p = build_plan(&s).unwrap();
        assert_eq!(
            env_of(&p, "PULSE_SERVER"),
            Some("unix:/run/appmgr/pulse-native")
        );
        assert_eq!(socket_binds(&p)[0].1, SANDBOX_PULSEAUDIO_SOCKET);
        // x11 alone: bound at display :0 on the sandbox's /tmp.
        let mut s = spec();
        s.host_sockets = offered.clone();
        s.permissions.sockets = [SocketName::X11].into();
        let p = build_plan(&s).unwrap();
        assert_eq!(
            socket_binds(&p),
            [(
                "/tmp/.X11-unix/X0".to_string(),
                SANDBOX_X11_SOCKET.to_string()
            )]
        );
        assert_eq!(env_of(&p, "DISPLAY"), Some(":0"));
        let tmp = pos_of(
            &p,
            |m| matches!(m, MountOp::Tmpfs { dest, .. } if dest == "/tmp"),
        );
        let xd = pos_of(
            &p,
            |m| matches!(m, MountOp::Dir { dest, .. } if dest == "/tmp/.X11-unix"),
        );
        assert!(tmp < xd);
        // x11 and wayland granted: x11 is the fallback, bound only without Wayland.
        s.permissions.sockets = [SocketName::X11, SocketName::Wayland].into();
        assert!(x11_is_fallback(&s));
        let p = build_plan(&s).unwrap();
        assert_eq!(
            socket_binds(&p),
            [(
                "/run/wayland-0".to_string(),
                SANDBOX_WAYLAND_SOCKET.to_string()
            )]
        );
        assert_eq!(env_of(&p, "DISPLAY"), None);
        s.host_sockets.remove(&SocketName::Wayland);
        assert!(!x11_is_fallback(&s));
        let p = build_plan(&s).unwrap();
        assert_eq!(socket_binds(&p)[0].1, SANDBOX_X11_SOCKET);
        assert_eq!(env_of(&p, "WAYLAND_DISPLAY"), None);
        // Host paths are checked like every other.
        for bad in ["relative/wayland-0", "/run/../etc/shadow", "/run/w\n"] {
            let mut s = spec();
            s.permissions.sockets = [SocketName::Wayland].into();
            s.host_sockets = [(SocketName::Wayland, bad.into())].into();
            assert!(
                matches!(
                    build_plan(&s),
                    Err(PlanError::BadPath {
                        what: "wayland socket",
                        ..
                    })
                ),
                "{bad}"
            );
        }
        let j = serde_json::to_string(&s).unwrap();
        assert!(
            j.contains(r#""host-sockets":{"x11":"/tmp/.X11-unix/X0","#),
            "{j}"
        );
        assert_eq!(serde_json::from_str::<LaunchSpec>(&j).unwrap(), s);
    }

    fn pos_of(p: &LaunchPlan, f: impl Fn(&MountOp) -> bool) -> usize {
        p.mounts.iter().position(f).unwrap()
    }

    #[test]
    fn socket_paths_cannot_be_reached_otherwise() {
        // A caller cannot point the app elsewhere through its environment...
        for name in [
            "NOTIFY_SOCKET",
            "DBUS_SYSTEM_BUS_ADDRESS",
            "WAYLAND_DISPLAY",
            "WAYLAND_SOCKET",
            "DISPLAY",
            "PULSE_SERVER",
            "PIPEWIRE_REMOTE",
            "PIPEWIRE_RUNTIME_DIR",
        ] {
            let mut s = spec();
            s.env_allow = vec![name.into()];
            s.caller_env = vec![(name.into(), "unix:path=/tmp/x".into())];
            assert_eq!(
                build_plan(&s),
                Err(PlanError::EnvNotAllowed(name.into())),
                "{name}"
            );
        }
        // ...and a filesystem grant cannot expose or shadow the sockets' directories
        // (/var/run is /run on the host).
        for bad in [
            "/run/dbus",
            "/run/dbus/system_bus_socket",
            "/run/appmgr",
            "/run/appmgr/notify",
            "/var/run",
            "/var/run/dbus",
            "/var/run/dbus/system_bus_socket",
            "/run/appmgr/wayland-0",
            "/tmp/.X11-unix",
            "/tmp/.X11-unix/X0",
        ] {
            let mut s = spec();
            s.permissions.filesystems.insert(bad.parse().unwrap());
            assert!(
                matches!(build_plan(&s), Err(PlanError::ReservedPath(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn identity_files() {
        let p = build_plan(&spec()).unwrap();
        let passwd = p
            .mounts
            .iter()
            .find_map(|m| match m {
                MountOp::File { dest, contents, .. } if dest == "/etc/passwd" => Some(contents),
                _ => None,
            })
            .unwrap();
        assert!(passwd.contains("app:x:20001:20001:"));
        assert_eq!(p.hostname, "hello");
        assert_eq!(machine_id("a").len(), 32);
        assert_ne!(machine_id("a"), machine_id("b"));
    }
}
