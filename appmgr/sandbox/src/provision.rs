//! Which granted items a launch actually provides, read back from the [`LaunchPlan`] the
//! launcher is given ("shown == provided"). `appmgr permissions`, `appmgr run` and appmgrd
//! all report the result of [`provisions`], so an item can only be displayed as provided
//! when the plan contains what provides it:
//!
//! | item | provided when the plan has |
//! |---|---|
//! | `network` | no network namespace |
//! | `ipc` | no IPC namespace |
//! | `devices NAME` | a private device node (`device-node` op) for every node the board resolved for NAME (at least one) |
//! | `sockets NAME` | a bind at the socket's sandbox path (none exists yet: never) |
//! | `dbus-talk`, `dbus-own` | the system bus socket bound at [`SANDBOX_SYSTEM_BUS_SOCKET`] |
//! | `filesystems PATH` | a bind of PATH with the granted access, and PATH exists (the launcher skips a missing one) |
//! | `portals NAME` | NAME is served by the portal service (`gpu`, `sensors`, `bluetooth`) and the system bus socket is bound |
//! | `sensors.channels`, `sensors.max-rate-hz` | the `sensors` portal is provided |
//! | `bluetooth.devices`, `.services`, `.roles` | the `bluetooth` portal is provided |
//! | `allow FLAG` | the seccomp plan's flag |
//!
//! The only host I/O is the existence check of granted host paths and [`host_socket`].

use crate::plan::{BindSource, LaunchPlan, LaunchSpec, MountOp, SANDBOX_SYSTEM_BUS_SOCKET};
use appmgr_types::{AllowFlag, DeviceName, FsAccess, PermEntry, Provision, SocketName};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Where a host socket of this kind would appear inside the sandbox. No kind is bound
/// yet; when one is, its path goes here and [`provisions`] reports it provided as soon as
/// the plan binds it there.
fn socket_dest(_s: SocketName) -> Option<&'static str> {
    None
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
/// device (a device missing from it has no node on this host).
pub fn provisions(
    spec: &LaunchSpec,
    plan: &LaunchPlan,
    device_nodes: &BTreeMap<DeviceName, Vec<PathBuf>>,
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
            PermEntry::Network if !plan.namespaces.net => Provision::provided(e),
            PermEntry::Network => {
                Provision::not_provided(e, "the sandbox has its own network namespace")
            }
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
            PermEntry::Socket(s) => match socket_dest(*s) {
                Some(dest) if bound(&|s| matches!(s, BindSource::Socket(_)), dest) => {
                    Provision::provided(e)
                }
                _ => Provision::not_provided(
                    e,
                    format!("the launcher does not bind host {s} sockets yet"),
                ),
            },
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
        let p = &mut s.permissions;
        p.network = true;
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
        let v = provisions(&s, &plan, &nodes);
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
        let v = provisions(&s, &plan, &nodes);
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
        let v2 = provisions(&no_portal, &build_plan(&no_portal).unwrap(), &nodes);
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
        cut.namespaces.net = true;
        let v = provisions(&s, &cut, &nodes);
        assert_eq!(status(&v, "dbus-talk", "org.example.X"), NotProvided);
        assert_eq!(status(&v, "devices", "gpu"), NotProvided);
        assert_eq!(status(&v, "network", "true"), NotProvided);
        let j = serde_json::to_value(&v).unwrap();
        assert_eq!(j[0]["status"], "not-provided");
        assert!(j[0]["reason"].is_string());
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
