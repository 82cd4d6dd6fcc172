//! appmgr-sandbox: the launch plan and the `appmgr-launch` executor.
//!
//! **Plan, then apply.** [`build_plan`] turns a [`LaunchSpec`] (deployment paths, the
//! effective [`appmgr_types::Permissions`], the app's uid/gid, resolved device nodes,
//! command and arguments, cgroup files) into a [`LaunchPlan`]: plain, serializable data
//! listing every mount, namespace, id, environment variable and seccomp setting. It does no
//! I/O and is unit-tested; `appmgr run --print-plan` prints it.
//!
//! **A separate, single-threaded launcher.** The CLI (and later the tokio daemon) never
//! sets up namespaces itself: [`exec_launcher`] / [`launcher_command`] start the
//! `appmgr-launch` binary with the plan in a sealed memfd and an empty environment. The
//! launcher (see the `launch` module docs for the process layout and ordering) joins the
//! cgroups, unshares mount/pid/uts/cgroup (and ipc/net unless granted) namespaces, builds
//! a read-only tmpfs root (`/usr` = runtime, `/app` = app, both read-only `nosuid,nodev`,
//! private `/proc`, read-only `/sys`, minimal `/dev`, private `/tmp`, generated `/etc`
//! files, the data dir as `HOME` bound through a descriptor opened without following
//! symlinks), pivots into it, and runs the app as its own uid with no capabilities,
//! `no_new_privs`, a seccomp filter (cached BPF per grant) and only fds 0-2. It stays as
//! the parent outside, a tiny init is pid 1 inside; the launcher exits with the app's
//! status and forwards signals; if it dies, the sandbox dies. In detached mode
//! ([`spawn_detached`], for the daemon's services) init becomes the caller's child and
//! the launcher exits once the app runs, so init is the only helper beside the app.
//!
//! **Storage limits.** With `storage-max`, [`storage::prepare`] (run by the caller before
//! each launch) keeps a fully allocated per-app ext4 image of that size, and the launcher
//! mounts it through a loop device at `HOME` instead of binding the data dir, so the app
//! gets `ENOSPC` at its limit and nobody else notices.
//!
//! **unsafe** is confined to the `sys` module.
//!
//! **Host sockets.** The caller's sd_notify socket is bound at `/run/appmgr/notify`
//! (`NOTIFY_SOCKET`); the D-Bus system bus socket at `/run/dbus/system_bus_socket`
//! (`DBUS_SYSTEM_BUS_ADDRESS`) only when the grant has `dbus-talk` or `dbus-own` names.
//! Which names the app may then reach is the bus's business: the policy crate renders the
//! per-uid dbus-daemon policy. Granted display and audio sockets (`sockets`: wayland,
//! pipewire, pulseaudio, x11) that the caller offers (present on the host) are bound at
//! fixed paths ([`sandbox_socket`]) with their variables ([`socket_env`]); x11 only when
//! no granted Wayland socket is offered ([`x11_is_fallback`]).
//!
//! **Shown == provided.** [`provisions`] reads back from a plan which granted items it
//! provides; `appmgr permissions` and `appmgr run` report every other item as not
//! provided on this host.
//!
//! Limits: filesystem grants are bound non-recursively (submounts of a
//! granted path are not visible); Ctrl-C on a terminal reaches the app both directly and
//! through the forwarding chain.

mod exec;
pub mod inputs;
mod launch;
pub mod net;
pub mod netnames;
mod plan;
mod provision;
pub mod seccomp;
pub mod storage;
pub mod sys;

pub use exec::{
    exec_launcher, launcher_command, launcher_path, plan_memfd, prime_cgroup_migration,
    read_plan_fd, spawn_detached, DetachedInit, ExecError, LAUNCHER_ENV, LAUNCHER_LIBEXEC,
    LAUNCHER_NAME,
};
pub use launch::{
    refused_filesystems, run as run_launcher, run_detached, LaunchError, EXIT_CANNOT_EXEC,
    EXIT_LAUNCH_FAILED, EXIT_NOT_FOUND, EXIT_REFUSED,
};
pub use plan::{
    build_plan, extension_variable_allowed, sandbox_socket, socket_env, x11_is_fallback, AfterExit,
    BindSource, DeviceFilter, EventCounter, ExtensionMount, LaunchPlan, LaunchSpec, MountOp,
    Namespaces, PlanError, ProtectedPath, PIPEWIRE_SANDBOX_MARKER, PLAN_VERSION, PTY_DEVICES,
    SANDBOX_HOME, SANDBOX_NOTIFY_SOCKET, SANDBOX_PIPEWIRE_SOCKET, SANDBOX_PULSEAUDIO_SOCKET,
    SANDBOX_SYSTEM_BUS_ADDRESS, SANDBOX_SYSTEM_BUS_SOCKET, SANDBOX_USER, SANDBOX_WAYLAND_SOCKET,
    SANDBOX_X11_SOCKET, STANDARD_DEVICE_NODES,
};
pub use provision::{host_socket, offered_sockets, provisions};
pub use seccomp::SeccompPlan;
