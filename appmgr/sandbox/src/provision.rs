//! Which granted items a launch actually provides, read back from the [`LaunchPlan`] the
//! launcher is given ("shown == provided"). `appmgr permissions`, `appmgr run` and appmgrd
//! all report the result of [`provisions`], so an item can only be displayed as provided
//! when the plan contains what provides it:
//!
//! | item | provided when the plan has |
//! |---|---|
//! | `network` | the app's own network ([`crate::net`]): a veth pair, NAT, egress outside the pool |
//! | `network.egress ENTRY` | the network, and for a name: at least one address it resolved to |
//! | `network.listen PORT` | the network |
//! | `network.dns` | the network and a host name server that is not a loopback address |
//! | `network.talk-to ID` | the network, and ID's grant names this app back and ID is installed |
//! | `ipc` | no IPC namespace |
//! | `devices NAME` | a private device node (`device-node` op) for every node the board resolved for NAME (at least one) |
//! | `sockets NAME` | a bind of a host socket at the kind's sandbox path ([`sandbox_socket`]) |
//! | `dbus-talk`, `dbus-own` | the system bus socket bound at [`SANDBOX_SYSTEM_BUS_SOCKET`] |
//! | `filesystems PATH` | a bind of PATH with the granted access, and PATH exists (the launcher skips a missing one) |
//! | `portals NAME` | NAME is served by the portal service (`gpu`, `sensors`, `bluetooth`) and the system bus socket is bound |
//! | `sensors.channels`, `sensors.max-rate-hz` | the `sensors` portal is provided |
//! | `bluetooth.devices`, `.services`, `.roles` | the `bluetooth` portal is provided |
//! | `allow FLAG` | the seccomp plan's flag |
//!
//! The only host I/O is the existence check of granted host paths and host sockets
//! ([`host_socket`], [`offered_sockets`]).

use crate::plan::{
    sandbox_socket, x11_is_fallback, BindSource, LaunchPlan, LaunchSpec, MountOp,
    SANDBOX_SYSTEM_BUS_SOCKET,
};
use appmgr_types::{
    AllowFlag, DeviceName, FsAccess, PermEntry, Permissions, Provision, SocketName,
};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The display and audio sockets a caller offers a launch ([`LaunchSpec::host_sockets`]):
/// of the host paths configured for each kind (`configured`, kinds turned off are absent),
/// those of granted kinds where something exists now (not following a final symlink).
/// A missing one is left out (the app runs without it, shown not provided); anything
/// else is offered, and the launcher refuses the launch unless it is a socket reached
/// without symlinks, so a symlink planted in place of a socket is refused, not followed.
pub fn offered_sockets(
    perms: &Permissions,
    configured: &BTreeMap<SocketName, PathBuf>,
) -> BTreeMap<SocketName, PathBuf> {
    configured
        .iter()
        .filter(|(k, p)| perms.sockets.contains(k) && std::fs::symlink_metadata(p).is_ok())
        .map(|(k, p)| (*k, p.clone()))
        .collect()
}

/// `path` if it is a unix socket now (not following a final symlink): the launcher refuses
/// a bind source that is not one, so a caller offers the system bus only when this holds.
pub fn host_socket(path: &Path) -> Option<PathBuf> {
    use std::os::unix::fs::FileTypeExt;
    std::fs::symlink_metadata(path)
        .ok()
        .filter(|m| m.file_type().is_socket())
        .map(|_| path.to_path_buf())
}

/// A network item: provided only through the app's own network.
fn network_item(e: &PermEntry<'_>, spec: &LaunchSpec, plan: &LaunchPlan) -> Provision {
    let (Some(net), Some(ns)) = (&plan.net, &spec.network) else {
        return Provision::not_provided(
            e,
            "no per-app network on this host (ip and nft are needed): the sandbox has only lo",
        );
    };
    match e {
        PermEntry::Egress(g) => match &g.host {
            // What the rules allow: answers in the pool or on loopback are not taken.
            appmgr_types::EgressHost::Name(n)
                if net.name_addrs.get(n.as_str()).is_none_or(|v| v.is_empty()) =>
            {
                Provision::not_provided(
                    e,
                    format!("{n} did not resolve at launch to an address outside the app pool"),
                )
            }
            _ => Provision::provided(e),
        },
        PermEntry::Dns if ns.nameservers.is_empty() => Provision::not_provided(
            e,
            "the host has no name server the app can reach (loopback ones are the host's own)",
        ),
        PermEntry::TalkTo(id) if !net.peers.iter().any(|p| &p.app == *id) => {
            Provision::not_provided(
                e,
                format!("{id} is not installed or does not name this app in its talk-to"),
            )
        }
        _ => Provision::provided(e),
    }
}

fn binds(plan: &LaunchPlan) -> impl Iterator<Item = (&BindSource, &str, bool)> {
    plan.mounts.iter().filter_map(|m| match m {
        MountOp::Bind {
            source,
            dest,
            readonly,
            ..
        } => Some((source, dest.as_str(), *readonly)),
        _ => None,
    })
}

/// The status of every item of `spec.permissions`, in display order. `plan` must be
/// `build_plan(spec)`; `device_nodes` is what the board profile resolved for each granted
/// device (a device missing from it has no node on this host); `configured_sockets` the
/// host path configured for each socket kind (a kind turned off is absent), to name what
/// is missing.
pub fn provisions(
    spec: &LaunchSpec,
    plan: &LaunchPlan,
    device_nodes: &BTreeMap<DeviceName, Vec<PathBuf>>,
    configured_sockets: &BTreeMap<SocketName, PathBuf>,
) -> Vec<Provision> {
    let bound = |src_is: &dyn Fn(&BindSource) -> bool, dest: &str| {
        binds(plan).any(|(s, d, _)| d == dest && src_is(s))
    };
    let bus_bound = || {
        bound(
            &|s| matches!(s, BindSource::Socket(_)),
            SANDBOX_SYSTEM_BUS_SOCKET,
        )
    };
    spec.permissions
        .entries()
        .iter()
        .map(|e| match e {
            PermEntry::Network
            | PermEntry::Egress(_)
            | PermEntry::Listen(_)
            | PermEntry::Dns
            | PermEntry::TalkTo(_) => network_item(e, spec, plan),
            PermEntry::Ipc if !plan.namespaces.ipc => Provision::provided(e),
            PermEntry::Ipc => Provision::not_provided(e, "the sandbox has its own IPC namespace"),
            PermEntry::Device(d) => match device_nodes.get(*d).filter(|n| !n.is_empty()) {
                None => Provision::not_provided(e, "no device node for it on this host"),
                Some(nodes) => {
                    let missing = nodes.iter().find(|n| {
                        !plan.mounts.iter().any(|m| {
                            matches!(m, MountOp::DeviceNode { source, dest }
                                if source == *n && Some(dest.as_str()) == n.to_str())
                        })
                    });
                    match missing {
                        None => Provision::provided(e),
                        Some(n) => Provision::not_provided(
                            e,
                            format!("{} is not made in the sandbox", n.display()),
                        ),
                    }
                }
            },
            PermEntry::Socket(s) => socket_item(e, *s, spec, plan, configured_sockets),
            PermEntry::Audio(_) => audio_item(e, spec, plan, configured_sockets),
            PermEntry::Talk(_) | PermEntry::Own(_) => {
                if bus_bound() {
                    Provision::provided(e)
                } else {
                    Provision::not_provided(e, "no system bus socket on this host")
                }
            }
            PermEntry::Fs(g) => {
                let ro = g.access == FsAccess::Ro;
                let in_plan = binds(plan).any(|(s, d, r)| {
                    d == g.path
                        && r == ro
                        && matches!(s, BindSource::Granted(p) if p == Path::new(&g.path))
                });
                if !in_plan {
                    Provision::not_provided(e, "not bound into the sandbox")
                } else if std::fs::metadata(&g.path).is_err() {
                    Provision::not_provided(e, "the host path does not exist")
                } else {
                    Provision::provided(e)
                }
            }
            PermEntry::Portal(p) if !p.is_served() => {
                Provision::not_provided(e, format!("appmgr serves no {p} portal yet"))
            }
            PermEntry::Portal(_) if !bus_bound() => {
                Provision::not_provided(e, "no system bus socket to reach the portal")
            }
            PermEntry::Portal(_) => Provision::provided(e),
            PermEntry::SensorChannel(_) | PermEntry::SensorRate(_) => {
                portal_item(e, "sensors", spec, bus_bound())
            }
            PermEntry::BtDevice(_) | PermEntry::BtService(_) | PermEntry::BtRole(_) => {
                portal_item(e, "bluetooth", spec, bus_bound())
            }
            PermEntry::Allow(f) => {
                let on = match f {
                    AllowFlag::Devel => plan.seccomp.devel,
                    AllowFlag::Multiarch => plan.seccomp.multiarch,
                    AllowFlag::Bluetooth => plan.seccomp.bluetooth,
                    AllowFlag::Canbus => plan.seccomp.canbus,
                };
                if on {
                    Provision::provided(e)
                } else {
                    Provision::not_provided(e, "not in the seccomp plan")
                }
            }
        })
        .collect()
}

/// A `sockets` item: provided when the plan binds a host socket at the kind's sandbox
/// path and that host path is a socket now (the launcher refuses anything else).
fn socket_item(
    e: &PermEntry,
    kind: SocketName,
    spec: &LaunchSpec,
    plan: &LaunchPlan,
    configured: &BTreeMap<SocketName, PathBuf>,
) -> Provision {
    let dest = sandbox_socket(kind);
    let source = binds(plan).find_map(|(s, d, _)| match s {
        BindSource::Socket(p) if d == dest => Some(p),
        _ => None,
    });
    if let Some(src) = source {
        return match host_socket(src).filter(|p| no_symlink_above(p)) {
            Some(_) => Provision::provided(e),
            None => Provision::not_provided(
                e,
                format!(
                    "{} is not a socket reached without symlinks: the launch is refused",
                    src.display()
                ),
            ),
        };
    }
    if kind == SocketName::X11 && x11_is_fallback(spec) {
        return Provision::not_provided(e, "a Wayland socket exists (x11 is the fallback)");
    }
    match configured.get(&kind) {
        None => Provision::not_provided(e, format!("no host {kind} socket is configured")),
        Some(p) if !spec.host_sockets.contains_key(&kind) => {
            Provision::not_provided(e, format!("no socket at {} on this host", p.display()))
        }
        Some(_) => Provision::not_provided(e, "not bound into the sandbox"),
    }
}

/// An `audio` item: provided when the PipeWire socket is provided and the plan carries
/// the marker that puts the app's PipeWire clients under the session manager's per-uid
/// rules (`spec.pipewire_access`). Without those rules the socket would give every app
/// whatever PipeWire gives any local client, so the role is not what is shown.
fn audio_item(
    e: &PermEntry,
    spec: &LaunchSpec,
    plan: &LaunchPlan,
    configured: &BTreeMap<SocketName, PathBuf>,
) -> Provision {
    if !spec.permissions.sockets.contains(&SocketName::Pipewire) {
        return Provision::not_provided(e, "needs sockets = [\"pipewire\"], which is not granted");
    }
    let socket = socket_item(e, SocketName::Pipewire, spec, plan, configured);
    if !socket.is_provided() {
        let why = socket.reason.unwrap_or_default();
        return Provision::not_provided(e, format!("no PipeWire socket: {why}"));
    }
    let marked = plan.mounts.iter().any(
        |m| matches!(m, MountOp::File { dest, .. } if dest == crate::plan::PIPEWIRE_SANDBOX_MARKER),
    );
    if !marked {
        return Provision::not_provided(
            e,
            "the host's PipeWire session manager does not run appmgr's access rules \
             (appmgr.toml pipewire-access)",
        );
    }
    Provision::provided(e)
}

/// No directory above `p` is a symlink (the launcher opens bind sources beneath `/`
/// without following any).
fn no_symlink_above(p: &Path) -> bool {
    p.ancestors()
        .skip(1)
        .all(|a| std::fs::symlink_metadata(a).is_ok_and(|m| !m.file_type().is_symlink()))
}

/// An item of portal `portal`'s grant: provided exactly when that portal is (served,
/// granted, and the bus to reach it bound).
fn portal_item(e: &PermEntry, portal: &str, spec: &LaunchSpec, bus_bound: bool) -> Provision {
    match appmgr_types::PortalName::new(portal) {
        Ok(p) if !p.is_served() => {
            Provision::not_provided(e, format!("appmgr serves no {portal} portal yet"))
        }
        Ok(p) if spec.permissions.portals.contains(&p) => {
            if bus_bound {
                Provision::provided(e)
            } else {
                Provision::not_provided(e, "no system bus socket to reach the portal")
            }
        }
        _ => Provision::not_provided(e, format!("the {portal} portal is not granted")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::build_plan;
    use appmgr_types::{BusName, ProvisionStatus};

    fn status(v: &[Provision], key: &str, value: &str) -> ProvisionStatus {
        v.iter()
            .find(|p| p.key == key && p.value == value)
            .unwrap_or_else(|| panic!("{key} {value} missing from {v:?}"))
            .status
    }

    #[test]
    fn read_back_from_the_plan() {
        use ProvisionStatus::*;
        let mut s = crate::plan::tests::spec();
        s.network = Some(crate::net::NetSpec {
            refresh: Default::default(),
            resolvers: Vec::new(),
            pool: crate::net::DEFAULT_POOL.parse().unwrap(),
            slot: 1,
            resolved: [("a.example".to_string(), vec![])].into(),
            nameservers: vec![],
            peers: vec![],
            routed: false,
        });
        let p = &mut s.permissions;
        p.network = appmgr_types::NetworkGrant::any();
        p.sockets.insert(SocketName::Wayland);
        p.sockets.insert(SocketName::Pipewire);
        p.portals
            .insert(appmgr_types::PortalName::new("gpu").unwrap());
        p.portals
            .insert(appmgr_types::PortalName::new("bluetooth").unwrap());
        p.portals
            .insert(appmgr_types::PortalName::new("camera").unwrap());
        p.sensors
            .channels
            .insert(appmgr_types::ChannelName::new("accel_x").unwrap());
        p.bluetooth.devices.insert("*".parse().unwrap());
        p.bluetooth.services.insert("180f".parse().unwrap());
        p.bluetooth.roles.insert(appmgr_types::BtRole::Connect);
        p.dbus_talk.insert(BusName::new("org.example.X").unwrap());
        p.dbus_own.insert(BusName::new("org.example.Own").unwrap());
        let here = format!("{}:ro", env!("CARGO_MANIFEST_DIR"));
        p.filesystems.insert(here.parse().unwrap());
        p.filesystems
            .insert("/nonexistent-appmgr/x:rw".parse().unwrap());
        p.allow.insert(AllowFlag::Canbus);
        p.devices.insert(DeviceName::new("gpu").unwrap());
        p.devices.insert(DeviceName::new("input").unwrap());
        s.devices = vec!["/dev/dri/renderD128".into()];
        let nodes: BTreeMap<DeviceName, Vec<PathBuf>> = [(
            DeviceName::new("gpu").unwrap(),
            vec!["/dev/dri/renderD128".into()],
        )]
        .into();
        let plan = build_plan(&s).unwrap();
        let v = provisions(&s, &plan, &nodes, &BTreeMap::new());
        assert_eq!(v.len(), s.permissions.entries().len());
        assert_eq!(status(&v, "network", "true"), Provided);
        assert_eq!(status(&v, "sockets", "wayland"), NotProvided);
        assert_eq!(status(&v, "sockets", "pipewire"), NotProvided);
        assert_eq!(status(&v, "portals", "gpu"), NotProvided);
        assert_eq!(status(&v, "portals", "bluetooth"), NotProvided);
        assert_eq!(status(&v, "sensors.channels", "accel_x"), NotProvided);
        assert_eq!(status(&v, "bluetooth.roles", "connect"), NotProvided);
        // No bus socket in the spec: the bus grants are not provided.
        assert_eq!(status(&v, "dbus-talk", "org.example.X"), NotProvided);
        assert_eq!(status(&v, "dbus-own", "org.example.Own"), NotProvided);
        assert_eq!(status(&v, "filesystems", &here), Provided);
        assert_eq!(
            status(&v, "filesystems", "/nonexistent-appmgr/x:rw"),
            NotProvided
        );
        assert_eq!(status(&v, "allow", "canbus"), Provided);
        assert_eq!(status(&v, "devices", "gpu"), Provided);
        assert_eq!(status(&v, "devices", "input"), NotProvided);
        assert!(v.iter().all(|p| p.is_provided() == p.reason.is_none()));

        // With the bus socket the plan binds it, and both bus grants are provided.
        s.system_bus_socket = Some("/run/dbus/system_bus_socket".into());
        let plan = build_plan(&s).unwrap();
        let v = provisions(&s, &plan, &nodes, &BTreeMap::new());
        assert_eq!(status(&v, "dbus-talk", "org.example.X"), Provided);
        assert_eq!(status(&v, "dbus-own", "org.example.Own"), Provided);
        // Served portals are reached over the bound bus; camera is not served, and sensor
        // channels without the sensors portal are not provided.
        assert_eq!(status(&v, "portals", "gpu"), Provided);
        assert_eq!(status(&v, "portals", "bluetooth"), Provided);
        assert_eq!(status(&v, "portals", "camera"), NotProvided);
        let x = v.iter().find(|p| p.key == "sensors.channels").unwrap();
        assert_eq!(
            (x.status, x.reason.as_deref()),
            (NotProvided, Some("the sensors portal is not granted"))
        );
        // Granted Bluetooth devices, services and roles go with the bluetooth portal.
        for (k, val) in [
            ("bluetooth.devices", "*"),
            ("bluetooth.services", "180f"),
            ("bluetooth.roles", "connect"),
        ] {
            assert_eq!(status(&v, k, val), Provided);
        }
        let mut no_portal = s.clone();
        no_portal
            .permissions
            .portals
            .retain(|p| p.as_str() != "bluetooth");
        let v2 = provisions(
            &no_portal,
            &build_plan(&no_portal).unwrap(),
            &nodes,
            &BTreeMap::new(),
        );
        let x = v2.iter().find(|p| p.key == "bluetooth.roles").unwrap();
        assert_eq!(
            (x.status, x.reason.as_deref()),
            (NotProvided, Some("the bluetooth portal is not granted"))
        );
        // A plan that lost a bind is reported from what it contains, not from the grant.
        let mut cut = plan.clone();
        cut.mounts.retain(|m| {
            !matches!(m, MountOp::Bind { dest, .. } if dest == SANDBOX_SYSTEM_BUS_SOCKET)
                && !matches!(m, MountOp::DeviceNode { dest, .. } if dest == "/dev/dri/renderD128")
        });
        cut.net = None;
        let v = provisions(&s, &cut, &nodes, &BTreeMap::new());
        assert_eq!(status(&v, "dbus-talk", "org.example.X"), NotProvided);
        assert_eq!(status(&v, "devices", "gpu"), NotProvided);
        assert_eq!(status(&v, "network", "true"), NotProvided);
        let j = serde_json::to_value(&v).unwrap();
        assert_eq!(j[0]["status"], "not-provided");
        assert!(j[0]["reason"].is_string());
    }

    #[test]
    fn network_items_are_read_back() {
        use ProvisionStatus::*;
        let mut s = crate::plan::tests::spec();
        s.permissions.network = serde_json::from_str(
            r#"{"egress": ["192.0.2.0/24:443", "a.example:80", "gone.example:80"], "dns": true,
                "listen": ["8080"], "talk-to": ["org.example.Peer", "org.example.Deaf"]}"#,
        )
        .unwrap();
        let none = provisions(
            &s,
            &build_plan(&s).unwrap(),
            &BTreeMap::new(),
            &BTreeMap::new(),
        );
        assert!(none.iter().all(|p| p.status == NotProvided), "{none:?}");
        s.network = Some(crate::net::NetSpec {
            refresh: Default::default(),
            resolvers: Vec::new(),
            pool: crate::net::DEFAULT_POOL.parse().unwrap(),
            slot: 1,
            resolved: [
                ("a.example".to_string(), vec!["192.0.2.9".parse().unwrap()]),
                ("gone.example".to_string(), vec![]),
            ]
            .into(),
            nameservers: vec![],
            peers: vec![crate::net::NetPeer {
                app: "org.example.Peer".parse().unwrap(),
                uid: 70009,
                slot: 9,
            }],
            routed: false,
        });
        let plan = build_plan(&s).unwrap();
        let v = provisions(&s, &plan, &BTreeMap::new(), &BTreeMap::new());
        assert_eq!(
            status(&v, "network.egress", "192.0.2.0/24:443/tcp"),
            Provided
        );
        assert_eq!(status(&v, "network.egress", "a.example:80/tcp"), Provided);
        assert_eq!(
            status(&v, "network.egress", "gone.example:80/tcp"),
            NotProvided
        );
        assert_eq!(status(&v, "network.listen", "8080/tcp"), Provided);
        assert_eq!(status(&v, "network.dns", "true"), NotProvided);
        assert_eq!(status(&v, "network.talk-to", "org.example.Peer"), Provided);
        assert_eq!(
            status(&v, "network.talk-to", "org.example.Deaf"),
            NotProvided
        );
        // The app finds its names in /etc/hosts, a link into its network's names directory
        // (bound read-only), which starts with what the launch resolved; with no name
        // server it may reach, it gets no resolv.conf.
        let net = plan.net.as_ref().unwrap();
        assert!(plan
            .mounts
            .iter()
            .any(|m| matches!(m, MountOp::Symlink { target, dest }
            if dest == "/etc/hosts" && target == "/run/appmgr/net/hosts")));
        assert!(plan.mounts.iter().any(
            |m| matches!(m, MountOp::Bind { source, dest, readonly: true, .. }
            if dest == "/run/appmgr/net"
                && *source == BindSource::NetNames(crate::net::names_dir(&net.name)))
        ));
        assert!(!plan
            .mounts
            .iter()
            .any(|m| matches!(m, MountOp::File { dest, .. } if dest == "/etc/hosts")));
        assert!(crate::net::hosts_file(&net.hosts_head, &net.name_addrs)
            .ends_with("localhost ip6-localhost ip6-loopback\n192.0.2.9\ta.example\n"));
        let resolv = |p: &LaunchPlan| {
            p.mounts.iter().find_map(|m| match m {
                MountOp::File { dest, contents, .. } if dest == "/etc/resolv.conf" => {
                    Some(contents.clone())
                }
                MountOp::CopyHostFile { dest, .. } if dest == "/etc/resolv.conf" => {
                    Some("host".into())
                }
                _ => None,
            })
        };
        assert_eq!(resolv(&plan), None);
        s.network.as_mut().unwrap().nameservers = vec!["192.0.2.53".parse().unwrap()];
        let plan = build_plan(&s).unwrap();
        assert_eq!(resolv(&plan).as_deref(), Some("nameserver 192.0.2.53\n"));
        let v = provisions(&s, &plan, &BTreeMap::new(), &BTreeMap::new());
        assert_eq!(status(&v, "network.dns", "true"), Provided);
    }

    #[test]
    fn audio_is_provided_only_with_the_socket_and_the_access_rules() {
        use appmgr_types::AudioRole;
        use ProvisionStatus::*;
        let d = std::env::temp_dir().join(format!("appmgr-audio-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        let pw = d.join("pipewire-0");
        let _l = std::os::unix::net::UnixListener::bind(&pw).unwrap();
        let configured: BTreeMap<SocketName, PathBuf> = [(SocketName::Pipewire, pw.clone())].into();
        let marker = |plan: &LaunchPlan| {
            plan.mounts.iter().find_map(|m| match m {
                MountOp::File {
                    dest,
                    mode,
                    contents,
                } if dest == crate::plan::PIPEWIRE_SANDBOX_MARKER => {
                    Some((*mode, contents.clone()))
                }
                _ => None,
            })
        };
        let audio = |s: &LaunchSpec| {
            let plan = build_plan(s).unwrap();
            let v = provisions(s, &plan, &BTreeMap::new(), &configured);
            let p = v
                .iter()
                .find(|p| p.key == "audio" && p.value == "playback")
                .unwrap();
            (
                p.status,
                p.reason.clone().unwrap_or_default(),
                marker(&plan),
            )
        };
        let mut s = crate::plan::tests::spec();
        s.permissions.audio = [AudioRole::Playback].into();
        s.pipewire_access = true;
        // No socket grant.
        let (st, why, m) = audio(&s);
        assert_eq!(st, NotProvided);
        assert!(why.contains("sockets = [\"pipewire\"]"), "{why}");
        assert_eq!(m, None);
        // The socket granted but missing on the host.
        s.permissions.sockets = [SocketName::Pipewire].into();
        let (st, why, m) = audio(&s);
        assert_eq!(st, NotProvided);
        assert!(why.starts_with("no PipeWire socket: no socket at"), "{why}");
        assert_eq!(m, None);
        // Socket offered and rules configured: provided, and the root holds the marker.
        s.host_sockets = offered_sockets(&s.permissions, &configured);
        let (st, _, m) = audio(&s);
        assert_eq!(st, Provided);
        assert_eq!(
            m,
            Some((0o444, format!("[Application]\nname={}\n", s.app_id)))
        );
        // The host's session manager does not run appmgr's rules: no marker, not provided.
        s.pipewire_access = false;
        let (st, why, m) = audio(&s);
        assert_eq!(st, NotProvided);
        assert!(why.contains("pipewire-access"), "{why}");
        assert_eq!(m, None);
        // The socket without any audio role still gets the marker: held, then refused.
        s.pipewire_access = true;
        s.permissions.audio.clear();
        assert!(marker(&build_plan(&s).unwrap()).is_some());
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn sockets_are_read_back_with_the_reason() {
        use ProvisionStatus::*;
        let d = std::env::temp_dir().join(format!("appmgr-hs2-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        let (w, x, pw) = (d.join("wayland-0"), d.join("X0"), d.join("pipewire-0"));
        let _l1 = std::os::unix::net::UnixListener::bind(&w).unwrap();
        let _l2 = std::os::unix::net::UnixListener::bind(&x).unwrap();
        std::os::unix::fs::symlink(&w, &pw).unwrap();
        // pulseaudio is configured but missing.
        let configured: BTreeMap<SocketName, PathBuf> = [
            (SocketName::Wayland, w.clone()),
            (SocketName::X11, x.clone()),
            (SocketName::Pipewire, pw.clone()),
            (SocketName::Pulseaudio, d.join("missing")),
        ]
        .into();
        let mut s = crate::plan::tests::spec();
        s.permissions.sockets = SocketName::ALL.iter().copied().collect();
        s.host_sockets = offered_sockets(&s.permissions, &configured);
        // The missing one is not offered; the symlink is (the launcher refuses it).
        assert_eq!(
            s.host_sockets.keys().copied().collect::<Vec<_>>(),
            [SocketName::Wayland, SocketName::X11, SocketName::Pipewire]
        );
        let plan = build_plan(&s).unwrap();
        let v = provisions(&s, &plan, &BTreeMap::new(), &configured);
        let reason = |val: &str| {
            let p = v
                .iter()
                .find(|p| p.key == "sockets" && p.value == val)
                .unwrap();
            (p.status, p.reason.clone().unwrap_or_default())
        };
        assert_eq!(reason("wayland"), (Provided, String::new()));
        assert_eq!(
            reason("x11"),
            (
                NotProvided,
                "a Wayland socket exists (x11 is the fallback)".into()
            )
        );
        assert_eq!(
            reason("pipewire"),
            (
                NotProvided,
                format!(
                    "{} is not a socket reached without symlinks: the launch is refused",
                    pw.display()
                )
            )
        );
        assert_eq!(
            reason("pulseaudio"),
            (
                NotProvided,
                format!("no socket at {} on this host", d.join("missing").display())
            )
        );
        // Without the Wayland socket x11 is provided; a kind turned off says so.
        drop(_l1);
        std::fs::remove_file(&w).unwrap();
        let mut off = configured.clone();
        off.remove(&SocketName::Pipewire);
        s.host_sockets = offered_sockets(&s.permissions, &off);
        let plan = build_plan(&s).unwrap();
        let v = provisions(&s, &plan, &BTreeMap::new(), &off);
        let st = |val: &str| v.iter().find(|p| p.value == val).unwrap().clone();
        assert_eq!(st("x11").status, Provided);
        assert_eq!(st("wayland").status, NotProvided);
        assert_eq!(
            st("pipewire").reason.as_deref(),
            Some("no host pipewire socket is configured")
        );
        // Ungranted kinds are never offered.
        let mut none = s.permissions.clone();
        none.sockets.clear();
        assert!(offered_sockets(&none, &configured).is_empty());
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn host_socket_is_only_a_socket() {
        let d = std::env::temp_dir().join(format!("appmgr-hs-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        let sock = d.join("s");
        let _l = std::os::unix::net::UnixListener::bind(&sock).unwrap();
        std::fs::write(d.join("f"), "").unwrap();
        std::os::unix::fs::symlink(&sock, d.join("l")).unwrap();
        assert_eq!(host_socket(&sock), Some(sock.clone()));
        assert_eq!(host_socket(&d.join("f")), None);
        assert_eq!(host_socket(&d.join("l")), None);
        assert_eq!(host_socket(&d.join("missing")), None);
        std::fs::remove_dir_all(&d).unwrap();
    }
}
