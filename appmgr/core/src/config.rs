//! `CONFIG/appmgr.toml`: host settings that are not policy. Optional; every key has a
//! default. Parsed strictly like every other input.
//!
//! ```toml
//! board = "rk3588"            # a profile name (CONFIG/board-support/NAME.toml, then
//!                             # /usr/share/appmgr/board-support/NAME.toml) or a path
//! uid-range = "70000-79999"   # per-app uids/gids allocated at install
//! operator-group = "appmgr"   # may install/remove/start/stop through appmgrd
//! # The D-Bus system bus, for apps with dbus-talk/dbus-own grants (`appmgr run` and
//! # appmgrd's services alike; appmgrd's flags of the same names override them). "none"
//! # turns each off.
//! system-bus-socket = "/run/dbus/system_bus_socket"
//! bus-policy-file = "/etc/dbus-1/system.d/appmgr-apps.conf"
//! userdb-dir = "/run/userdb"
//! service-log-max = "1M"      # cap of a service's log file where no journald runs
//!                             # (STATE/daemon/logs/ID.log, plus one rotated ID.log.1)
//! # The host sockets bound into sandboxes of apps granted `sockets = [...]`, each only
//! # while something exists at the path (see docs/sandbox.md, "Host sockets"). "none"
//! # turns each off. The defaults are those of an appliance whose compositor and sound
//! # server run as system services:
//! wayland-socket = "/run/wayland-0"              # e.g. Yocto's weston-init
//! x11-socket = "/tmp/.X11-unix/X0"               # display :0 (the fallback of wayland)
//! pipewire-socket = "/run/pipewire/pipewire-0"   # PipeWire's system-wide instance
//! pulseaudio-socket = "/run/pulse/native"        # PulseAudio --system, pipewire-pulse
//! # "wireplumber": the PipeWire at pipewire-socket has a WirePlumber that runs appmgr's
//! # access script (board-support/pipewire, docs/audio.md), so `audio` grants are
//! # enforced; "none" (default): they are shown as not provided
//! pipewire-access = "none"
//! # Per-app networks (docs/network.md): each app with a network grant gets the /30 at
//! # (its uid - the first of uid-range) in this IPv4 pool.
//! network-pool = "10.233.0.0/16"
//! # "nat" (default): the apps' traffic leaves with the host's address; "routed": with
//! # their own, for networks that route network-pool to this host
//! network-mode = "nat"
//! # The name servers appmgr asks for the names in egress grants (IPv4, port 53 unless
//! # given); default: the host's /etc/resolv.conf, read at every lookup
//! network-resolvers = ["192.0.2.53", "127.0.0.1:5353"]
//! # Inhibitors (docs/remotes.md): a file here defers installs until it is removed;
//! # "none" turns them off
//! inhibit-dir = "/run/appmgr/inhibit"
//! # The CA certificates (PEM) trusted for https:// bundle URLs and oci+https:// remotes
//! # without their own `ca` (docs/remotes.md)
//! tls-ca-file = "/etc/ssl/certs/ca-certificates.crt"
//! ```
//!
//! Every path is checked when read: absolute and normal (no `.`, `..`, empty component or
//! trailing `/`), no control or bidi characters; the error names the key.

use crate::error::{CoreResult, Error};
use appmgr_types::{ErrorClass, SocketName};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct HostConfig {
    pub board: Option<String>,
    pub uid_range: Option<String>,
    /// Members of this group may call appmgrd's mutating methods (besides root).
    pub operator_group: Option<String>,
    /// The system bus socket bound into sandboxes of apps with a bus grant.
    pub system_bus_socket: Option<String>,
    /// Where the per-app bus policy drop-in is written.
    pub bus_policy_file: Option<String>,
    /// Where the app uids are published as nss-systemd user records.
    pub userdb_dir: Option<String>,
    /// Cap of one service log file (at least 1M); default 1M.
    pub service_log_max: Option<appmgr_types::MemoryLimit>,
    /// The host's Wayland compositor socket (`sockets = ["wayland"]`).
    pub wayland_socket: Option<String>,
    /// The host's X11 server socket (`sockets = ["x11"]`, used when no Wayland socket is).
    pub x11_socket: Option<String>,
    /// The host's PipeWire socket (`sockets = ["pipewire"]`).
    pub pipewire_socket: Option<String>,
    /// The host's PulseAudio socket (`sockets = ["pulseaudio"]`).
    pub pulseaudio_socket: Option<String>,
    /// `wireplumber` or `none`: whether the host's PipeWire session manager enforces the
    /// `audio` grants (docs/audio.md).
    pub pipewire_access: Option<String>,
    /// The IPv4 pool of the per-app networks.
    pub network_pool: Option<String>,
    /// `nat` or `routed`.
    pub network_mode: Option<String>,
    /// Name servers for the names of egress grants (`ADDR` or `ADDR:PORT`).
    pub network_resolvers: Option<Vec<String>>,
    /// Where inhibitors are (files that defer installs).
    pub inhibit_dir: Option<String>,
    /// The CA bundle trusted for https.
    pub tls_ca_file: Option<String>,
}

/// The first uid of the store's default `uid-range` (70000-79999).
pub const DEFAULT_UID_FIRST: u32 = 70000;

/// Defaults of the bus settings (also appmgrd's).
pub const DEFAULT_SYSTEM_BUS_SOCKET: &str = "/run/dbus/system_bus_socket";
pub const DEFAULT_BUS_POLICY_FILE: &str = "/etc/dbus-1/system.d/appmgr-apps.conf";
pub const DEFAULT_USERDB_DIR: &str = "/run/userdb";
/// Defaults of the host socket settings (`sockets` grants).
pub const DEFAULT_WAYLAND_SOCKET: &str = "/run/wayland-0";
pub const DEFAULT_X11_SOCKET: &str = "/tmp/.X11-unix/X0";
pub const DEFAULT_PIPEWIRE_SOCKET: &str = "/run/pipewire/pipewire-0";
pub const DEFAULT_PULSEAUDIO_SOCKET: &str = "/run/pulse/native";

/// An absolute path without `.`, `..` or empty components (so no trailing `/` either).
fn normal_abs(p: &str) -> bool {
    p.len() > 1
        && p.starts_with('/')
        && p[1..]
            .split('/')
            .all(|c| !c.is_empty() && c != "." && c != "..")
}

/// A configured absolute path, its default when unset, or `None` for `"none"`.
fn path_or_none(key: &str, v: Option<&str>, default: &str) -> CoreResult<Option<PathBuf>> {
    match v.unwrap_or(default) {
        "none" => Ok(None),
        p if normal_abs(p) && !appmgr_types::has_unsafe_chars(p) => Ok(Some(p.into())),
        p => Err(Error::new(
            ErrorClass::Usage,
            format!(
                "appmgr.toml: {key} \"{}\": expected an absolute path without . or .. \
                 components (or \"none\")",
                appmgr_types::escape_for_display(p)
            ),
        )),
    }
}

/// Where board profiles are looked up by name, after `CONFIG/board-support`.
pub const SYSTEM_BOARD_DIR: &str = "/usr/share/appmgr/board-support";

impl HostConfig {
    pub fn load(config_dir: &Path) -> CoreResult<HostConfig> {
        let path = config_dir.join("appmgr.toml");
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(HostConfig::default()),
            Err(e) => {
                return Err(Error::new(
                    ErrorClass::Other,
                    format!("{}: {e}", path.display()),
                ))
            }
        };
        let text = std::str::from_utf8(&bytes).map_err(|e| {
            Error::new(
                ErrorClass::Usage,
                format!("{}: not UTF-8 at byte {}", path.display(), e.valid_up_to()),
            )
        })?;
        toml::from_str(text).map_err(|e| {
            let line = e
                .span()
                .map(|s| text[..s.start].matches('\n').count() + 1)
                .unwrap_or(0);
            Error::new(
                ErrorClass::Usage,
                format!("{}: line {line}: {}", path.display(), e.message()),
            )
        })
    }

    /// `uid-range`, validated: `None` when unset (the store's default applies).
    pub fn uid_range(&self) -> CoreResult<Option<std::ops::RangeInclusive<u32>>> {
        if let Some(r) = &self.uid_range {
            let bad = || {
                Error::new(ErrorClass::Usage, format!("appmgr.toml: uid-range {r:?}: expected FIRST-LAST, e.g. 70000-79999, above 1000"))
            };
            let (a, b) = r.split_once('-').ok_or_else(bad)?;
            let (a, b): (u32, u32) = (
                a.trim().parse().map_err(|_| bad())?,
                b.trim().parse().map_err(|_| bad())?,
            );
            if a < 1000 || b < a || b >= u32::MAX - 1 {
                return Err(bad());
            }
            return Ok(Some(a..=b));
        }
        Ok(None)
    }

    /// `network-pool`, validated (at most a /30 per app, so a prefix of 30 or shorter).
    pub fn network_pool(&self) -> CoreResult<appmgr_types::Ipv4Net> {
        let s = self
            .network_pool
            .as_deref()
            .unwrap_or(appmgr_sandbox::net::DEFAULT_POOL);
        let bad = |why: &str| {
            Error::new(
                ErrorClass::Usage,
                format!("appmgr.toml: network-pool {s:?}: {why}"),
            )
        };
        let n: appmgr_types::Ipv4Net = s
            .parse()
            .map_err(|e: appmgr_types::InvalidValue| bad(&e.reason))?;
        if n.prefix() > 30 {
            return Err(bad("must be a /30 or larger network"));
        }
        Ok(n)
    }

    /// `network-mode`, validated: whether the per-app networks are routed (no NAT).
    pub fn network_routed(&self) -> CoreResult<bool> {
        match self.network_mode.as_deref() {
            None | Some("nat") => Ok(false),
            Some("routed") => Ok(true),
            Some(other) => Err(Error::new(
                ErrorClass::Usage,
                format!("appmgr.toml: network-mode {other:?}: expected \"nat\" or \"routed\""),
            )),
        }
    }

    /// `network-resolvers`, validated: IPv4 addresses, port 53 unless given.
    pub fn network_resolvers(&self) -> CoreResult<Vec<std::net::SocketAddrV4>> {
        let mut v = Vec::new();
        for s in self.network_resolvers.iter().flatten() {
            let a = s
                .parse::<std::net::SocketAddrV4>()
                .or_else(|_| {
                    s.parse::<std::net::Ipv4Addr>()
                        .map(|a| std::net::SocketAddrV4::new(a, 53))
                })
                .map_err(|_| {
                    Error::new(
                        ErrorClass::Usage,
                        format!(
                            "appmgr.toml: network-resolvers {s:?}: expected an IPv4 address, \
                             optionally with :PORT"
                        ),
                    )
                })?;
            v.push(a);
        }
        Ok(v)
    }

    /// The first uid of `uid-range`: an app's network slot is its uid minus this.
    pub fn uid_first(&self) -> CoreResult<u32> {
        Ok(self
            .uid_range()?
            .map(|r| *r.start())
            .unwrap_or(DEFAULT_UID_FIRST))
    }

    /// The system bus socket path (`system-bus-socket`), `None` when turned off.
    pub fn system_bus_socket(&self) -> CoreResult<Option<PathBuf>> {
        path_or_none(
            "system-bus-socket",
            self.system_bus_socket.as_deref(),
            DEFAULT_SYSTEM_BUS_SOCKET,
        )
    }

    /// The bus policy drop-in (`bus-policy-file`), `None` when turned off.
    pub fn bus_policy_file(&self) -> CoreResult<Option<PathBuf>> {
        path_or_none(
            "bus-policy-file",
            self.bus_policy_file.as_deref(),
            DEFAULT_BUS_POLICY_FILE,
        )
    }

    /// The inhibitor directory (`inhibit-dir`), `None` when turned off.
    pub fn inhibit_dir(&self) -> CoreResult<Option<PathBuf>> {
        path_or_none(
            "inhibit-dir",
            self.inhibit_dir.as_deref(),
            crate::inhibit::DEFAULT_INHIBIT_DIR,
        )
    }

    /// The CA certificates trusted for https (`tls-ca-file`; default: the system's bundle).
    pub fn tls_ca_file(&self) -> CoreResult<PathBuf> {
        path_or_none(
            "tls-ca-file",
            self.tls_ca_file.as_deref(),
            appmgr_remote::access::SYSTEM_CA_FILE,
        )?
        .ok_or_else(|| {
            Error::new(
                ErrorClass::Usage,
                "appmgr.toml: tls-ca-file cannot be \"none\" (https needs trusted roots)",
            )
        })
    }

    /// The user-record directory (`userdb-dir`), `None` when turned off.
    pub fn userdb_dir(&self) -> CoreResult<Option<PathBuf>> {
        path_or_none("userdb-dir", self.userdb_dir.as_deref(), DEFAULT_USERDB_DIR)
    }

    /// The host path of each socket kind (`wayland-socket`, `x11-socket`,
    /// `pipewire-socket`, `pulseaudio-socket`), defaults filled in; a kind turned off
    /// (`"none"`) is absent.
    pub fn host_sockets(&self) -> CoreResult<BTreeMap<SocketName, PathBuf>> {
        let mut m = BTreeMap::new();
        for (kind, key, v, default) in [
            (
                SocketName::Wayland,
                "wayland-socket",
                &self.wayland_socket,
                DEFAULT_WAYLAND_SOCKET,
            ),
            (
                SocketName::X11,
                "x11-socket",
                &self.x11_socket,
                DEFAULT_X11_SOCKET,
            ),
            (
                SocketName::Pipewire,
                "pipewire-socket",
                &self.pipewire_socket,
                DEFAULT_PIPEWIRE_SOCKET,
            ),
            (
                SocketName::Pulseaudio,
                "pulseaudio-socket",
                &self.pulseaudio_socket,
                DEFAULT_PULSEAUDIO_SOCKET,
            ),
        ] {
            if let Some(p) = path_or_none(key, v.as_deref(), default)? {
                m.insert(kind, p);
            }
        }
        Ok(m)
    }

    /// Whether the host's PipeWire session manager runs appmgr's access script
    /// (`pipewire-access = "wireplumber"`); `none`, the default, says it does not.
    pub fn pipewire_access(&self) -> CoreResult<bool> {
        match self.pipewire_access.as_deref() {
            None | Some("none") => Ok(false),
            Some("wireplumber") => Ok(true),
            Some(v) => Err(Error::new(
                ErrorClass::Usage,
                format!(
                    "appmgr.toml: pipewire-access \"{}\": must be \"wireplumber\" or \"none\"",
                    appmgr_types::escape_for_display(v)
                ),
            )),
        }
    }

    /// The configured board profile, if any.
    pub fn board(&self, config_dir: &Path) -> CoreResult<Option<appmgr_board::BoardProfile>> {
        match self.board_path(config_dir) {
            Some(path) => Ok(Some(appmgr_board::BoardProfile::load(&path)?)),
            None => Ok(None),
        }
    }

    /// The file the configured board profile is read from, if one is configured.
    pub fn board_path(&self, config_dir: &Path) -> Option<PathBuf> {
        let b = self.board.as_ref()?;
        Some(if b.contains('/') {
            PathBuf::from(b)
        } else {
            let local = config_dir.join("board-support").join(format!("{b}.toml"));
            if local.exists() {
                local
            } else {
                Path::new(SYSTEM_BOARD_DIR).join(format!("{b}.toml"))
            }
        })
    }
}

/// What policy conditions may look at: the board's logical devices, the device nodes
/// present now, and its named core sets.
pub fn board_facts(
    board: Option<&appmgr_board::BoardProfile>,
) -> CoreResult<appmgr_policy::BoardFacts> {
    let mut facts = appmgr_policy::BoardFacts::default();
    let Some(b) = board else { return Ok(facts) };
    facts.devices = b.devices.keys().cloned().collect();
    let nodes = b.resolve(&facts.devices, Path::new("/"))?;
    facts.present_nodes = nodes.iter().map(|p| p.display().to_string()).collect();
    for (name, set) in &b.cpusets {
        let list = appmgr_cgroup::CpuList::new(&set.to_string()).map_err(|e| {
            Error::new(
                ErrorClass::Other,
                format!("board {}: cpuset {name}: {e}", b.name),
            )
        })?;
        facts.core_sets.insert(name.clone(), list);
    }
    Ok(facts)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(t: &str) -> HostConfig {
        toml::from_str(t).unwrap()
    }

    #[test]
    fn host_sockets_have_defaults_and_can_be_turned_off() {
        let d = parse("").host_sockets().unwrap();
        assert_eq!(d[&SocketName::Wayland], Path::new(DEFAULT_WAYLAND_SOCKET));
        assert_eq!(d[&SocketName::X11], Path::new("/tmp/.X11-unix/X0"));
        assert_eq!(
            d[&SocketName::Pipewire],
            Path::new("/run/pipewire/pipewire-0")
        );
        assert_eq!(d[&SocketName::Pulseaudio], Path::new("/run/pulse/native"));
        let c = parse("wayland-socket = \"/run/user/900/wayland-1\"\nx11-socket = \"none\"\n")
            .host_sockets()
            .unwrap();
        assert_eq!(
            c[&SocketName::Wayland],
            Path::new("/run/user/900/wayland-1")
        );
        assert!(!c.contains_key(&SocketName::X11));
        assert_eq!(c.len(), 3);
    }

    #[test]
    fn pipewire_access_is_off_unless_configured() {
        assert!(!parse("").pipewire_access().unwrap());
        assert!(!parse("pipewire-access = \"none\"")
            .pipewire_access()
            .unwrap());
        assert!(parse("pipewire-access = \"wireplumber\"")
            .pipewire_access()
            .unwrap());
        let e = parse("pipewire-access = \"yes\"")
            .pipewire_access()
            .unwrap_err();
        assert!(e.to_string().contains("pipewire-access \"yes\""), "{e}");
    }

    #[test]
    fn network_settings_are_validated_naming_key_and_value() {
        let c = parse(
            "network-pool = \"10.9.0.0/24\"\nnetwork-mode = \"routed\"\n\
             network-resolvers = [\"192.0.2.53\", \"127.0.0.1:5353\"]\n",
        );
        assert_eq!(c.network_pool().unwrap().to_string(), "10.9.0.0/24");
        assert!(c.network_routed().unwrap());
        assert_eq!(
            c.network_resolvers().unwrap(),
            [
                "192.0.2.53:53".parse::<std::net::SocketAddrV4>().unwrap(),
                "127.0.0.1:5353".parse().unwrap()
            ]
        );
        assert!(parse("").network_resolvers().unwrap().is_empty());
        for (toml, want) in [
            (
                "network-pool = \"10.9.0.0/31\"",
                "network-pool \"10.9.0.0/31\"",
            ),
            ("network-mode = \"bridge\"", "network-mode \"bridge\""),
            (
                "network-resolvers = [\"dns.example\"]",
                "network-resolvers \"dns.example\"",
            ),
            ("network-resolvers = [\"::1\"]", "network-resolvers \"::1\""),
        ] {
            let c = parse(toml);
            let e = c
                .network_pool()
                .and(c.network_routed())
                .and(c.network_resolvers())
                .unwrap_err();
            assert!(e.message.contains(want), "{toml}: {}", e.message);
            assert!(e.message.starts_with("appmgr.toml: "), "{}", e.message);
        }
    }

    #[test]
    fn bad_paths_are_refused_naming_the_key() {
        for (key, bad) in [
            ("wayland-socket", "wayland-0"),
            ("x11-socket", "/tmp/.X11-unix/../X0"),
            ("pipewire-socket", "/run/pipewire/"),
            ("pulseaudio-socket", "/run/./pulse/native"),
            ("pulseaudio-socket", "/"),
            ("pulseaudio-socket", ""),
            ("wayland-socket", "/run/\u{202e}x"),
            ("system-bus-socket", "/run//dbus/system_bus_socket"),
        ] {
            let mut c = HostConfig::default();
            let v = Some(bad.to_string());
            match key {
                "wayland-socket" => c.wayland_socket = v,
                "x11-socket" => c.x11_socket = v,
                "pipewire-socket" => c.pipewire_socket = v,
                "pulseaudio-socket" => c.pulseaudio_socket = v,
                _ => c.system_bus_socket = v,
            }
            let e = c
                .host_sockets()
                .and_then(|_| c.system_bus_socket())
                .unwrap_err();
            assert_eq!(e.class, ErrorClass::Usage, "{bad}");
            assert!(
                e.message.starts_with(&format!("appmgr.toml: {key} ")),
                "{}",
                e.message
            );
            assert!(!e.message.contains('\u{202e}'), "{}", e.message);
        }
    }
}
