//! Plan at install, apply at launch.
//!
//! Everything a launch of an installed app needs that does not change between launches
//! (the evaluated grant turned into a launch spec, the cgroup limits, the storage limit,
//! the service settings) is worked out when the app is installed, updated or rolled back,
//! when its runtime changes and on `appmgr reload`, and kept in `STATE/plans/ID.plan`. A
//! launch then reads that one file instead of the host configuration, every policy file,
//! the board profile, the records and the manifest, and fills in only what is live: the
//! arguments, the device nodes present now, the cgroup it creates.
//!
//! **Never stale.** The plan carries the SHA-256 of every input it was derived from
//! (`appmgr_sandbox::inputs`): `appmgr.toml`, the policy directory's listing and each
//! policy file, the board profile, the app's and its runtime's state records and the
//! listings that resolve the ID, the manifest, and fsck's corrupt markers (which must stay
//! absent). A plan whose inputs changed is not used: the launch derives a new one (and
//! keeps it), exactly as if there had been none. The digests travel on in the launch plan
//! and `appmgr-launch` checks them again before it applies anything, so a change between
//! the two checks is refused too.
//!
//! **Sealed.** `STATE/plans` is root's alone (0700); a plan is written to a fresh file and
//! renamed into place, is root-owned 0600 with one link, and starts with a header line
//! holding the SHA-256 of the body. A plan is read through the directory's descriptor
//! without following symlinks, and one that fails any of these checks is ignored and
//! replaced. Only root writes plans; other callers derive the plan on every launch.

use crate::apps::{self, AppGrant, LaunchCtx};
use crate::error::{CoreResult, Error};
use crate::service::Settings;
use crate::Ctx;
use appmgr_sandbox::inputs::PlanInput;
use appmgr_sandbox::LaunchSpec;
use appmgr_types::{AppId, ErrorClass, Kind, RefName};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::path::PathBuf;

/// The format of a kept plan; another version is derived afresh.
pub const PREPARED_VERSION: u32 = 2;
/// `STATE/plans`: the kept plans.
pub const PLANS_DIR: &str = "plans";
const HEADER: &str = "appmgr-prepared-launch";
/// How often a derivation is retried when its inputs change while it runs.
const DERIVE_TRIES: usize = 3;

/// What a launch of one installed app needs that does not change between launches.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct PreparedLaunch {
    pub version: u32,
    pub ref_name: RefName,
    /// The version of the deployment the plan runs.
    pub app_version: String,
    /// The launch spec with the live parts empty (arguments, device nodes, cgroup files,
    /// after-exit duties, the bus socket, the host sockets); `spec.inputs` are the digests of what it was
    /// derived from.
    pub spec: LaunchSpec,
    /// The app's cgroup with the grant's limits (device rules are added at launch).
    pub limits: appmgr_cgroup::CgroupSpec,
    /// `storage-max` in bytes.
    pub storage_max: Option<u64>,
    /// The board profile, read again at launch only when devices are granted (their
    /// nodes are resolved against the live `/dev`).
    pub board: Option<PathBuf>,
    /// `system-bus-socket`: offered to the sandbox while the bus is up.
    pub bus_socket: Option<PathBuf>,
    /// The configured host socket of each kind (`wayland-socket`, ...; kinds turned off
    /// are absent): those of granted kinds are offered to the sandbox while present.
    pub host_sockets: std::collections::BTreeMap<appmgr_types::SocketName, PathBuf>,
    /// The service settings, `None` for an app that is not a service.
    pub settings: Option<Settings>,
}

impl PreparedLaunch {
    pub fn id(&self) -> &AppId {
        &self.spec.app_id
    }

    /// The prepared launch of an evaluated grant (not checked: `permissions` shows a
    /// refused app too), without input digests.
    pub fn from_grant(g: &Ctx, ctx: &LaunchCtx, a: &AppGrant) -> CoreResult<PreparedLaunch> {
        let spec = apps::template_spec(g, ctx, a)?;
        let limits = appmgr_cgroup::CgroupSpec::for_app(&a.manifest.id, a.grant.cgroup_limits())
            .map_err(|e| Error::new(ErrorClass::Policy, format!("{}: {e}", a.manifest.id)))?;
        Ok(PreparedLaunch {
            version: PREPARED_VERSION,
            ref_name: a.info.ref_name.clone(),
            app_version: a.deployment.version.to_string(),
            spec,
            limits,
            storage_max: a.grant.limits.storage_max.map(|l| l.bytes()),
            board: ctx.board_path.clone(),
            bus_socket: ctx.bus_socket.clone(),
            host_sockets: ctx.host_sockets.clone(),
            settings: crate::service::settings_of(a),
        })
    }
}

/// The paths a prepared launch of `a` depends on (see the module docs).
fn input_paths(g: &Ctx, ctx: &LaunchCtx, a: &AppGrant) -> CoreResult<Vec<PathBuf>> {
    let mut v = ctx.config_inputs.clone();
    // How `id` resolves: every ref directory of the ID, of either kind, and its record.
    let id = &a.info.ref_name.id;
    for kind in Kind::ALL {
        let idir = g
            .state_dir
            .join("deploy")
            .join(kind.as_str())
            .join(id.as_str());
        v.extend(crate::extensions::id_listing_paths(&idir)?);
    }
    v.push(a.deployment.manifest.clone());
    v.push(a.deployment.path.join(appmgr_state::CORRUPT_MARKER));
    if let Some(rt) = &a.deployment.runtime {
        let r = rt.to_ref();
        v.push(ctx.view.ref_dir(&r).join(appmgr_state::record::RECORD_FILE));
        if let Some(d) = ctx.view.info(&r)?.and_then(|i| i.current) {
            v.push(d.path.join(appmgr_state::CORRUPT_MARKER));
        }
    }
    // Which extensions are installed, and each one's manifest and marker: installing,
    // removing or repairing one changes what the sandbox shows.
    v.extend(crate::extensions::input_paths(&ctx.view, &g.state_dir)?);
    v.sort();
    v.dedup();
    Ok(v)
}

/// One derivation from the files as they are now: the checked grant as a prepared launch
/// (no digests yet) and the paths it read.
fn derive_once(g: &Ctx, id: &str) -> CoreResult<(PreparedLaunch, Vec<PathBuf>)> {
    let (ctx, a) = apps::load_grant(g, id)?;
    let p = PreparedLaunch::from_grant(g, &ctx, &a)?;
    Ok((p, input_paths(g, &ctx, &a)?))
}

/// Derives the prepared launch of installed app `id` (an ID or a full ref) from the files
/// as they are now, with the digests of its inputs. The digests are taken between two
/// derivations that must agree, so a file changed meanwhile can only make the plan look
/// stale, never current. Errors are the launch's: not installed, refused by policy (exit
/// 4), a corrupt deployment.
pub fn derive(g: &Ctx, id: &str) -> CoreResult<PreparedLaunch> {
    let (mut before, mut paths) = derive_once(g, id)?;
    for _ in 0..DERIVE_TRIES {
        let inputs = paths
            .iter()
            .map(|p| {
                PlanInput::of(p.clone())
                    .map_err(|e| Error::new(ErrorClass::Other, format!("{}: {e}", p.display())))
            })
            .collect::<CoreResult<Vec<_>>>()?;
        let (after, after_paths) = derive_once(g, id)?;
        if after == before && after_paths == paths {
            before.spec.inputs = inputs;
            return Ok(before);
        }
        (before, paths) = (after, after_paths);
    }
    Err(Error::new(
        ErrorClass::Other,
        format!("{id}: the launch inputs kept changing while the plan was made; try again"),
    ))
}

/// The prepared launch for a launch of `id` now: the kept plan when it is sealed and its
/// inputs are unchanged, else a new derivation, kept for the next launch (root only). A
/// launch that is refused changes nothing: a stale kept plan stays (it can never apply)
/// until the next store change or `reload` replaces or drops it.
pub fn for_launch(g: &Ctx, id: &str) -> CoreResult<PreparedLaunch> {
    if let Some(p) = kept(g, id) {
        return Ok(p);
    }
    let p = derive(g, id)?;
    if kept_key(id).is_some() {
        // A plan that cannot be kept is derived again next time; the launch goes on.
        let _ = save(g, &p);
    }
    Ok(p)
}

/// The ID under which a launch of `id` is kept: only plain IDs are (a full ref names what
/// the ID resolves to, or another ref).
fn kept_key(id: &str) -> Option<AppId> {
    AppId::new(id).ok().filter(|_| !id.contains('/'))
}

/// The kept plan of a launch of `id`, when there is one and it is current ([`load`]).
pub fn kept(g: &Ctx, id: &str) -> Option<PreparedLaunch> {
    load(g, &kept_key(id)?)
}

/// Derives and keeps the plans of the installed apps `ids` (all installed apps when
/// `None`), and compiles their seccomp filters into the cache, so their next launch
/// applies a ready plan. Called after every store change and on `reload`; a no-op unless
/// root. Apps not installed any more lose their plan.
pub fn refresh(g: &Ctx, ids: Option<&[AppId]>) {
    if !rustix::process::geteuid().is_root() {
        return;
    }
    let view = appmgr_state::View::new(&g.state_dir);
    let installed: Vec<AppId> = view
        .list_installed()
        .unwrap_or_default()
        .into_iter()
        .filter(|i| i.ref_name.kind == Kind::App)
        .map(|i| i.ref_name.id)
        .collect();
    let wanted: Vec<AppId> = match ids {
        Some(ids) => ids.to_vec(),
        None => {
            let mut v = installed.clone();
            v.extend(kept_ids(g));
            v.sort();
            v.dedup();
            v
        }
    };
    for id in wanted {
        if !installed.contains(&id) {
            forget(g, &id);
            continue;
        }
        // An app that does not derive now (refused by policy, runtime missing) keeps no
        // plan: its launch derives and says why. A plan that cannot be kept is derived
        // again at the next launch.
        match derive(g, id.as_str()) {
            Ok(p) => {
                if save(g, &p).is_ok() {
                    precompile_seccomp(&p);
                }
            }
            Err(_) => forget(g, &id),
        }
    }
}

/// After a store change of `r`: the plans of the apps it touches are derived again (the
/// app itself, or every app on a runtime).
pub fn refresh_after_change(g: &Ctx, r: &RefName) {
    match r.kind {
        Kind::App => refresh(g, Some(std::slice::from_ref(&r.id))),
        Kind::Runtime => refresh(g, Some(&apps_on_runtime(g, r))),
        // Its manifest may be gone (removed): which apps it extended is not known, so
        // every app's plan is derived again.
        Kind::Extension => refresh(g, None),
    }
}

/// Apps that use the runtime `r` (installed now).
pub fn apps_on_runtime(g: &Ctx, r: &RefName) -> Vec<AppId> {
    appmgr_state::View::new(&g.state_dir)
        .list_installed()
        .unwrap_or_default()
        .into_iter()
        .filter(|i| i.ref_name.kind == Kind::App)
        .filter(|i| {
            i.current
                .as_ref()
                .and_then(|d| d.runtime.as_ref())
                .is_some_and(|rt| &rt.to_ref() == r)
        })
        .map(|i| i.ref_name.id)
        .collect()
}

/// Compiles the app's seccomp filters (both variants) into the cache, as the launcher
/// would on its first launch. A failure is left to the launch, which reports it.
fn precompile_seccomp(p: &PreparedLaunch) {
    let Ok(plan) = appmgr_sandbox::build_plan(&p.spec) else {
        return;
    };
    for v in [
        appmgr_sandbox::seccomp::Variant::Plain,
        appmgr_sandbox::seccomp::Variant::JobControlled,
    ] {
        let _ = appmgr_sandbox::seccomp::load_or_compile_variant(&plan.seccomp, v);
    }
}

fn plans_dir(g: &Ctx) -> PathBuf {
    g.state_dir.join(PLANS_DIR)
}

fn plan_name(id: &AppId) -> String {
    format!("{id}.plan")
}

/// The IDs of the kept plans.
fn kept_ids(g: &Ctx) -> Vec<AppId> {
    appmgr_state::view::list_dir(&plans_dir(g))
        .unwrap_or_default()
        .iter()
        .filter_map(|n| n.strip_suffix(".plan"))
        .filter_map(|n| AppId::new(n).ok())
        .collect()
}

/// Opens `STATE/plans` without following a symlink and checks it is root's alone.
fn open_dir(g: &Ctx) -> std::io::Result<OwnedFd> {
    use rustix::fs::{Mode, OFlags};
    let fd = rustix::fs::open(
        plans_dir(g),
        OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::RDONLY,
        Mode::empty(),
    )?;
    let st = rustix::fs::fstat(&fd)?;
    if st.st_uid != 0 || st.st_mode & 0o077 != 0 {
        return Err(std::io::Error::other(format!(
            "{} is not root's alone (owner {}, mode {:o})",
            plans_dir(g).display(),
            st.st_uid,
            st.st_mode & 0o7777
        )));
    }
    Ok(fd)
}

/// The body's seal: its SHA-256.
fn seal(body: &[u8]) -> String {
    hex::encode(Sha256::digest(body))
}

/// Reads the kept plan of `id`; `None` unless it is sealed, of this version, for this ID
/// and its inputs are unchanged.
pub fn load(g: &Ctx, id: &AppId) -> Option<PreparedLaunch> {
    use rustix::fs::{Mode, OFlags};
    let dir = open_dir(g).ok()?;
    let fd = rustix::fs::openat(
        &dir,
        plan_name(id),
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NONBLOCK | OFlags::NOCTTY,
        Mode::empty(),
    )
    .ok()?;
    let st = rustix::fs::fstat(&fd).ok()?;
    let regular =
        rustix::fs::FileType::from_raw_mode(st.st_mode) == rustix::fs::FileType::RegularFile;
    if !regular || st.st_uid != 0 || st.st_mode & 0o077 != 0 || st.st_nlink != 1 {
        return None;
    }
    let mut bytes = Vec::new();
    std::fs::File::from(fd).read_to_end(&mut bytes).ok()?;
    let nl = bytes.iter().position(|&b| b == b'\n')?;
    let (head, body) = (std::str::from_utf8(&bytes[..nl]).ok()?, &bytes[nl + 1..]);
    let mut words = head.split(' ');
    let (Some(HEADER), Some(v), Some(s), None) =
        (words.next(), words.next(), words.next(), words.next())
    else {
        return None;
    };
    if v != PREPARED_VERSION.to_string() || s != seal(body) {
        return None;
    }
    let p: PreparedLaunch = serde_json::from_slice(body).ok()?;
    if p.version != PREPARED_VERSION || p.id() != id || p.spec.inputs.is_empty() {
        return None;
    }
    if appmgr_sandbox::inputs::first_stale(&p.spec.inputs).is_some() {
        return None;
    }
    Some(p)
}

/// Keeps `p` as `STATE/plans/ID.plan` (root only; see the module docs).
pub fn save(g: &Ctx, p: &PreparedLaunch) -> std::io::Result<()> {
    use rustix::fs::{Mode, OFlags};
    if !rustix::process::geteuid().is_root() {
        return Err(std::io::Error::other("only root keeps launch plans"));
    }
    match rustix::fs::mkdir(plans_dir(g), Mode::from_raw_mode(0o700)) {
        Ok(()) | Err(rustix::io::Errno::EXIST) => {}
        Err(e) => return Err(e.into()),
    }
    let dir = open_dir(g)?;
    let body = serde_json::to_vec(p).map_err(std::io::Error::other)?;
    let mut text = format!("{HEADER} {PREPARED_VERSION} {}\n", seal(&body)).into_bytes();
    text.extend_from_slice(&body);
    let name = plan_name(p.id());
    let tmp = format!(".{name}.{}", std::process::id());
    let _ = rustix::fs::unlinkat(&dir, &tmp, rustix::fs::AtFlags::empty());
    let fd = rustix::fs::openat(
        &dir,
        &tmp,
        OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::from_raw_mode(0o600),
    )?;
    let mut f = std::fs::File::from(fd);
    let written = f.write_all(&text).and_then(|_| f.sync_data());
    drop(f);
    match written.and_then(|_| Ok(rustix::fs::renameat(&dir, &tmp, &dir, &name)?)) {
        Ok(()) => Ok(()),
        Err(e) => {
            let _ = rustix::fs::unlinkat(&dir, &tmp, rustix::fs::AtFlags::empty());
            Err(e)
        }
    }
}

/// Drops the kept plan of `id`, if any.
pub fn forget(g: &Ctx, id: &AppId) {
    if let Ok(dir) = open_dir(g) {
        let _ = rustix::fs::unlinkat(&dir, plan_name(id), rustix::fs::AtFlags::empty());
    }
}
