//! `org.appmgr.portal.Gpu1`: a descriptor of the board's render node for an app granted
//! `portals = ["gpu"]`. The node comes from the board profile (`[portals.gpu]
//! render-node`, e.g. `/dev/dri/renderD*`, `/dev/mali0`), is opened here without following
//! symlinks and must be a character device; a DRM primary node (`card*`, minors 0-127 of
//! major 226: modesetting, the display) is refused even if a profile named one. The app
//! needs no `/dev/dri` in its sandbox and its device cgroup allows no GPU node: an open
//! descriptor is not checked again by the device cgroup, a path would be.

use crate::{PortalError, Shared};
use appmgr_core::journal;
use appmgr_types::AppId;
use std::collections::HashMap;
use std::os::fd::{AsFd, OwnedFd};
use std::path::PathBuf;
use std::sync::Arc;
use zbus::zvariant::OwnedValue;

/// DRM's character major; minors below 128 are primary (`card*`) nodes.
const DRM_MAJOR: u32 = 226;

/// A render node handed to an app: the process it was handed to, pinned.
pub struct Handout {
    pub app: AppId,
    pub pid: u32,
    pub pidfd: OwnedFd,
    pub node: PathBuf,
}

/// The board's GPU as the portal serves it.
#[derive(Debug, Clone)]
pub struct BoardGpu {
    pub node: PathBuf,
    pub family: String,
    pub driver: Option<String>,
}

/// The render node the board profile names and that exists now.
pub fn board_gpu(g: &appmgr_core::Ctx) -> Result<BoardGpu, PortalError> {
    let host = appmgr_core::config::HostConfig::load(&g.config_dir)
        .map_err(|e| PortalError::NotAvailable(e.message))?;
    let board = host
        .board(&g.config_dir)
        .map_err(|e| PortalError::NotAvailable(e.message))?
        .ok_or_else(|| PortalError::NotAvailable("no board profile is configured".into()))?;
    let spec = board.gpu.as_ref().ok_or_else(|| {
        PortalError::NotAvailable(format!(
            "board {} names no render node ([portals.gpu])",
            board.name
        ))
    })?;
    let node = spec
        .resolve()
        .map_err(|e| PortalError::NotAvailable(e.to_string()))?
        .ok_or_else(|| {
            PortalError::NotAvailable(format!(
                "board {}: no render node {} is present",
                board.name, spec.render_node
            ))
        })?;
    Ok(BoardGpu {
        node,
        family: spec.family.clone(),
        driver: spec.driver.clone(),
    })
}

/// Opens `gpu.node` read-write, refusing anything but a character device that is not a
/// DRM primary node, and names its driver (`DRM_IOCTL_VERSION`, else the profile's).
pub fn open_node(gpu: &BoardGpu) -> Result<(OwnedFd, String), PortalError> {
    use rustix::fs::{Mode, OFlags};
    let fd = rustix::fs::open(
        &gpu.node,
        OFlags::RDWR | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NOCTTY,
        Mode::empty(),
    )
    .map_err(|e| PortalError::NotAvailable(format!("{}: {e}", gpu.node.display())))?;
    let st = rustix::fs::fstat(&fd)
        .map_err(|e| PortalError::NotAvailable(format!("{}: {e}", gpu.node.display())))?;
    if rustix::fs::FileType::from_raw_mode(st.st_mode) != rustix::fs::FileType::CharacterDevice {
        return Err(PortalError::NotAvailable(format!(
            "{} is not a character device",
            gpu.node.display()
        )));
    }
    let (major, minor) = (rustix::fs::major(st.st_rdev), rustix::fs::minor(st.st_rdev));
    if major == DRM_MAJOR && minor < 128 {
        return Err(PortalError::NotAvailable(format!(
            "{} is a DRM primary node ({major}:{minor}); only render nodes are handed out",
            gpu.node.display()
        )));
    }
    let driver = match appmgr_sandbox::sys::drm_driver_name(fd.as_fd()) {
        Ok(d) if !d.is_empty() => d,
        _ => gpu.driver.clone().ok_or_else(|| {
            PortalError::NotAvailable(format!(
                "{} does not name its driver and the board profile names none",
                gpu.node.display()
            ))
        })?,
    };
    Ok((fd, driver))
}

/// `org.appmgr.portal.Gpu1`.
pub struct Gpu {
    pub(crate) s: Arc<Shared>,
}

fn sv(s: &str) -> OwnedValue {
    OwnedValue::try_from(zbus::zvariant::Value::from(s)).expect("a string value has no fd")
}

#[zbus::interface(name = "org.appmgr.portal.Gpu1")]
impl Gpu {
    #[zbus(out_args("fd", "driver"))]
    async fn open_render_node(
        &self,
        #[zbus(header)] hdr: zbus::message::Header<'_>,
    ) -> Result<(zbus::zvariant::OwnedFd, String), PortalError> {
        let (c, _) = self.s.granted(&hdr, "Gpu1.OpenRenderNode", "gpu").await?;
        let gpu = board_gpu(self.s.ctx())?;
        let (fd, driver) = open_node(&gpu)?;
        journal::log(
            journal::INFO,
            Some(journal::Event::PortalGranted),
            Some(c.app.as_str()),
            &format!(
                "gpu: {} ({driver}) handed to pid {} of {}",
                gpu.node.display(),
                c.pid,
                c.app
            ),
        );
        {
            // One record per live process and node: a process that asks again is already
            // watched (its earlier pidfd pins it), and a record per call would let an app
            // that loops on OpenRenderNode pile up the portal's descriptors and the
            // watcher's work.
            let mut hs = self.s.handouts.lock().unwrap_or_else(|p| p.into_inner());
            let known = hs.iter().any(|h| {
                h.pid == c.pid
                    && h.node == gpu.node
                    && h.app == c.app
                    && !crate::identity::exited(&h.pidfd)
            });
            if !known {
                hs.push(Handout {
                    app: c.app,
                    pid: c.pid,
                    pidfd: c.pidfd,
                    node: gpu.node,
                });
            }
        }
        self.s.changed.notify_waiters();
        Ok((fd.into(), driver))
    }

    #[zbus(out_args("info"))]
    async fn info(
        &self,
        #[zbus(header)] hdr: zbus::message::Header<'_>,
    ) -> Result<HashMap<String, OwnedValue>, PortalError> {
        self.s.granted(&hdr, "Gpu1.Info", "gpu").await?;
        let gpu = board_gpu(self.s.ctx())?;
        let (_, driver) = open_node(&gpu)?;
        Ok(HashMap::from([
            ("driver".to_string(), sv(&driver)),
            ("render-node".to_string(), sv(&gpu.node.to_string_lossy())),
            ("family".to_string(), sv(&gpu.family)),
        ]))
    }
}
