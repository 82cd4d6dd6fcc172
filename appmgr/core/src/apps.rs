//! Commands about apps as they run: the effective grant (`permissions`), running
//! instances (`ps`) and stopping one (`kill`). `run` builds on the same grant.

use crate::config::{board_facts, HostConfig};
use crate::error::{CoreResult, Error};
use crate::prepared::PreparedLaunch;
use crate::Ctx;
use crate::Output;
use appmgr_bundle::Manifest;
use appmgr_policy::{EffectiveGrant, PolicySet, Request};
use appmgr_state::{Deployment, RefInfo, View};
use appmgr_types::RefName;
use appmgr_types::{AppId, ErrorClass, Kind};
use serde_json::json;
use std::fmt::Write;

/// An installed app's current deployment and manifest, and the effective grant policy
/// gives it now. The one place that turns installed state + policy into what is enforced.
pub struct AppGrant {
    pub info: RefInfo,
    pub deployment: Deployment,
    pub manifest: Manifest,
    pub grant: EffectiveGrant,
}

/// What every launch-side command reads once per invocation: the records view, host
/// config, the parsed policy set and the board. `reload` evaluates many apps against one.
pub struct LaunchCtx {
    pub view: View,
    pub policies: PolicySet,
    pub board: Option<appmgr_board::BoardProfile>,
    facts: appmgr_policy::BoardFacts,
    /// `system-bus-socket` of appmgr.toml.
    pub bus_socket: Option<std::path::PathBuf>,
    /// `wayland-socket`, `x11-socket`, `pipewire-socket`, `pulseaudio-socket` of
    /// appmgr.toml (kinds turned off are absent).
    pub host_sockets: std::collections::BTreeMap<appmgr_types::SocketName, std::path::PathBuf>,
    /// `pipewire-access = "wireplumber"` of appmgr.toml.
    pub pipewire_access: bool,
    /// The board profile's file, if one is configured.
    pub board_path: Option<std::path::PathBuf>,
    /// `network-pool` of appmgr.toml.
    pub net_pool: appmgr_types::Ipv4Net,
    /// The first uid of `uid-range` (network slot 0).
    pub uid_first: u32,
    /// `network-mode = "routed"` of appmgr.toml (no NAT).
    pub net_routed: bool,
    /// `network-resolvers` of appmgr.toml (empty: the host's name servers).
    pub net_resolvers: Vec<std::net::SocketAddrV4>,
    /// The host configuration files read (whether they exist or not): `appmgr.toml`, the
    /// policy directory and its files, the board profile and its local candidate.
    pub config_inputs: Vec<std::path::PathBuf>,
}

impl LaunchCtx {
    pub fn load(g: &Ctx) -> CoreResult<LaunchCtx> {
        // Lock-free and libostree-free: launching reads only the records (see
        // appmgr_state), so `appmgr run` does not load GLib.
        let host = HostConfig::load(&g.config_dir)?;
        let board = host.board(&g.config_dir)?;
        let facts = board_facts(board.as_ref())?;
        let policies = PolicySet::load_config_dir(&g.config_dir)?;
        let board_path = host.board_path(&g.config_dir);
        let mut config_inputs = vec![
            g.config_dir.join("appmgr.toml"),
            g.config_dir.join("policies.d"),
        ];
        config_inputs.extend(policies.files().iter().map(std::path::PathBuf::from));
        // Conditions on device nodes: the grant depends on whether they exist.
        config_inputs.extend(policies.condition_nodes().into_iter().map(Into::into));
        if let Some(b) = host.board.as_deref().filter(|b| !b.contains('/')) {
            // Which file a board name means depends on whether the local one exists.
            config_inputs.push(g.config_dir.join("board-support").join(format!("{b}.toml")));
        }
        config_inputs.extend(board_path.clone());
        Ok(LaunchCtx {
            view: View::new(&g.state_dir),
            policies,
            board,
            facts,
            bus_socket: host.system_bus_socket()?,
            host_sockets: host.host_sockets()?,
            pipewire_access: host.pipewire_access()?,
            net_pool: host.network_pool()?,
            uid_first: host.uid_first()?,
            net_routed: host.network_routed()?,
            net_resolvers: host.network_resolvers()?,
            board_path,
            config_inputs,
        })
    }

    /// An installed app's current deployment, manifest, and the grant policy gives it now.
    pub fn app_grant(&self, id: &str) -> CoreResult<AppGrant> {
        let info = resolve_view(&self.view, id)?;
        let r = &info.ref_name;
        if r.kind != Kind::App {
            return Err(Error::new(
                ErrorClass::Usage,
                format!("{r} is a runtime, not an app"),
            ));
        }
        let deployment = info
            .current
            .clone()
            .ok_or_else(|| Error::new(ErrorClass::NotFound, format!("{r}: not installed")))?;
        let manifest = deployment_manifest(&deployment)?;
        let grant = self.policies.evaluate(
            &Request {
                app: &manifest.id,
                permissions: &manifest.permissions,
                resources: &manifest.resources,
            },
            &self.facts,
        )?;
        Ok(AppGrant {
            info,
            deployment,
            manifest,
            grant,
        })
    }
}

/// The bus grant of every installed app with a uid: what the per-app bus policy is
/// rendered from. Read from the apps' kept launch plans where they are current; the host
/// configuration is loaded (once) only for an app without one. An app whose grant cannot
/// be evaluated gets no allow rules.
pub fn bus_entries(g: &Ctx) -> CoreResult<Vec<appmgr_policy::BusPolicyEntry>> {
    let mut ctx: Option<LaunchCtx> = None;
    let mut entries = Vec::new();
    for i in View::new(&g.state_dir).list_installed()? {
        if i.ref_name.kind != Kind::App {
            continue;
        }
        let Some(uid) = i.uid else { continue };
        let kept = crate::prepared::load(g, &i.ref_name.id).filter(|p| p.ref_name == i.ref_name);
        let perms = match kept {
            Some(p) => p.spec.permissions,
            None => {
                if ctx.is_none() {
                    ctx = Some(LaunchCtx::load(g)?);
                }
                ctx.as_ref()
                    .and_then(|c| c.app_grant(&i.ref_name.to_string()).ok())
                    .map(|a| a.grant.permissions)
                    .unwrap_or_default()
            }
        };
        entries.push(appmgr_policy::BusPolicyEntry::from_permissions(
            i.ref_name.id.clone(),
            uid,
            &perms,
        ));
    }
    Ok(entries)
}

/// `ID` (one installed ref with that ID) or a full ref `KIND/ID/ARCH/BRANCH` (any ref
/// with a record, installed or removed) to its state, reading each record once.
/// Reads a file of a deployment (its signed manifest, its SBOM): not through a symlink, at
/// most `max` bytes (one more is read, so the caller sees an oversized file as such).
pub(crate) fn read_deployment_file(path: &std::path::Path, max: u64) -> CoreResult<Vec<u8>> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let mut bytes = Vec::new();
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
        .and_then(|f| f.take(max + 1).read_to_end(&mut bytes))
        .map_err(|e| Error::new(ErrorClass::Other, format!("{}: {e}", path.display())))?;
    Ok(bytes)
}

/// The signed manifest kept beside a deployment. Unreadable: class Other; not a valid
/// signed manifest: Integrity.
pub fn deployment_manifest(d: &Deployment) -> CoreResult<Manifest> {
    let bytes = read_deployment_file(
        &d.manifest,
        appmgr_bundle::manifest::MAX_MANIFEST_BYTES as u64,
    )?;
    Manifest::parse(&bytes, true).map_err(|e| {
        Error::new(
            ErrorClass::Integrity,
            format!("{}: {e}", d.manifest.display()),
        )
    })
}

pub fn resolve_view(view: &View, id: &str) -> CoreResult<RefInfo> {
    if id.contains('/') {
        let r = id.parse::<RefName>()?;
        return view
            .info(&r)?
            .ok_or_else(|| Error::new(ErrorClass::NotFound, format!("{r}: not installed")));
    }
    let app = AppId::new(id)?;
    let mut refs = view.installed(&app)?;
    match refs.len() {
        0 => Err(Error::new(
            ErrorClass::NotFound,
            format!("{app}: not installed"),
        )),
        1 => Ok(refs.remove(0)),
        _ => Err(Error::new(
            ErrorClass::Usage,
            format!(
                "{app} is ambiguous: name one of {}",
                refs.iter()
                    .map(|r| r.ref_name.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        )),
    }
}

/// The host directories no filesystem grant may reach, on what the launcher resolves: the
/// policy's `deny` paths, and the state directory (every app's data and the store), so a
/// grant of a parent such as `/var/lib` is refused rather than exposing other apps' data;
/// and the configured display and audio sockets, so a grant of their directory (such as
/// `/run/pipewire`) cannot hand one out: they come only with a `sockets` grant.
fn protected_dirs(g: &Ctx, ctx: &LaunchCtx, grant: &EffectiveGrant) -> Vec<std::path::PathBuf> {
    let mut v: Vec<std::path::PathBuf> = grant.denied_paths.iter().map(Into::into).collect();
    v.extend(ctx.host_sockets.values().cloned());
    // Compared by device and inode once resolved; a missing state dir has nothing to hide.
    if let Ok(state) = std::fs::canonicalize(&g.state_dir) {
        v.push(state);
    }
    v
}

pub fn permissions(g: &Ctx, id: &str) -> CoreResult<Output> {
    let ctx = LaunchCtx::load(g)?;
    let mut a = ctx.app_grant(id)?;
    // Grants the launcher would refuse on this host now (resolved as at launch).
    let deny = protected_dirs(g, &ctx, &a.grant);
    for (path, reason) in appmgr_sandbox::refused_filesystems(&a.grant.permissions, &deny) {
        a.grant.refuse_filesystem(&path, reason);
    }
    // Each item's status is read back from the plan `appmgr run` would build now.
    // What the plan provides does not depend on the cgroup (none is needed to show it).
    let plan = PreparedLaunch::from_grant(g, &ctx, &a).and_then(|p| {
        let d = resolve_devices(ctx.board.as_ref(), &p)?;
        apply_prepared(&p, Vec::new(), d, None, Default::default(), |_| {})
    });
    let (provided, net) = match plan {
        Ok(l) => (l.provided, l.plan.net),
        Err(e) => (not_launchable(&a.grant.permissions, &e.message), None),
    };
    let shown = appmgr_policy::ShownGrant {
        grant: &a.grant,
        provided: &provided,
    };
    let mut j =
        serde_json::to_value(&shown).map_err(|e| Error::new(ErrorClass::Other, e.to_string()))?;
    let mut text = a.grant.render_text(&provided);
    let exts = shown_extensions(&ctx, &a)?;
    text.push_str(&crate::extensions::render(&exts));
    j["extensions"] =
        serde_json::to_value(&exts).map_err(|e| Error::new(ErrorClass::Other, e.to_string()))?;
    if let Some(n) = &net {
        let (t, rules) = network_rules(n);
        text.push_str(&t);
        j["network_rules"] = rules;
    }
    Ok(Output::new(text, j))
}

/// The rules the app's network would get if it started now (names resolved now): its
/// address and every destination, inbound port and peer the nft table allows.
fn network_rules(n: &appmgr_sandbox::net::NetPlan) -> (String, serde_json::Value) {
    let egress: Vec<String> = if n.any {
        vec![format!("any outside {}", n.pool)]
    } else {
        let names = n.names.iter().map(|r| {
            let addrs = n.name_addrs.get(&r.name).cloned().unwrap_or_default();
            let now = if addrs.is_empty() {
                "did not resolve".to_string()
            } else {
                addrs
                    .iter()
                    .map(|a| a.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            let again = n.name_refresh.get(&r.name).copied().unwrap_or_default();
            format!(
                "{}:{}/{} ({now}; looked up again in {again} s)",
                r.name, r.port, r.proto
            )
        });
        n.egress
            .iter()
            .map(|d| format!("{}:{}/{}", d.net, d.port, d.proto))
            .chain(names)
            .collect()
    };
    let listen: Vec<String> = n.listen.iter().map(|l| l.to_string()).collect();
    let peers: Vec<String> = n
        .peers
        .iter()
        .map(|p| format!("{} ({})", p.app, p.addr))
        .collect();
    let mode = if n.routed {
        "routed: leaves with its own address"
    } else {
        "NAT to the host's address"
    };
    let mut t = format!(
        "network rules (as a launch now would apply them):\n  address {}/30 via {} ({mode})\n",
        n.app_addr, n.host_addr
    );
    for (what, v) in [
        ("egress", &egress),
        ("listen", &listen),
        ("talk-to", &peers),
    ] {
        for x in v {
            t.push_str(&format!("  {what} {x}\n"));
        }
    }
    if egress.is_empty() {
        t.push_str("  egress none\n");
    }
    let j = json!({
        "address": n.app_addr.to_string(),
        "gateway": n.host_addr.to_string(),
        "mode": if n.routed { "routed" } else { "nat" },
        "egress": egress,
        "listen": listen,
        "talk-to": peers,
    });
    (t, j)
}

/// Every item not provided: the app cannot be launched at all (`reason`).
fn not_launchable(p: &appmgr_types::Permissions, reason: &str) -> Vec<appmgr_types::Provision> {
    p.entries()
        .iter()
        .map(|e| appmgr_types::Provision::not_provided(e, format!("cannot launch: {reason}")))
        .collect()
}

/// A launch plan and the status of each granted item in it.
pub struct Launch {
    pub plan: appmgr_sandbox::LaunchPlan,
    pub provided: Vec<appmgr_types::Provision>,
}

pub fn hierarchy() -> CoreResult<appmgr_cgroup::Hierarchy> {
    appmgr_cgroup::Hierarchy::detect(appmgr_cgroup::DEFAULT_PARENT)
        .map_err(|e| Error::new(ErrorClass::Other, format!("cgroups: {e}")))
}

fn mib(b: Option<u64>) -> String {
    b.map(|b| format!("{:.1}M", b as f64 / (1 << 20) as f64))
        .unwrap_or_else(|| "-".into())
}

/// `appmgr ps`: every running app with its cgroup figures and its network address.
pub fn ps(g: &Ctx) -> CoreResult<Output> {
    let h = hierarchy()?;
    let all = h
        .list()
        .map_err(|e| Error::new(ErrorClass::Other, format!("cgroups: {e}")))?;
    let running: Vec<_> = all.into_iter().filter(|s| !s.pids.is_empty()).collect();
    let nets = NetLookup::load(g);
    let addrs: Vec<Option<std::net::Ipv4Addr>> = running
        .iter()
        .map(|s| s.app.as_ref().and_then(|a| nets.address(a, &s.pids)))
        .collect();
    let mut t = String::new();
    let _ = writeln!(
        t,
        "{:<32} {:>8} {:>9} {:>9} {:>9} {:>8}  {:<15}  cgroup",
        "app", "pid", "mem", "peak", "limit", "cpu-s", "address"
    );
    for (s, addr) in running.iter().zip(&addrs) {
        let _ = writeln!(
            t,
            "{:<32} {:>8} {:>9} {:>9} {:>9} {:>8.2}  {:<15}  {}{}",
            s.app.as_ref().map(|a| a.as_str()).unwrap_or("?"),
            s.pids.first().copied().unwrap_or(0),
            mib(s.memory_current),
            mib(s.memory_peak),
            mib(s.limits.memory_max),
            s.cpu_time_usec.unwrap_or(0) as f64 / 1e6,
            addr.map_or_else(|| "-".to_string(), |a| a.to_string()),
            s.path.display(),
            match (s.oom_kills, s.pids_max_hits) {
                (0, 0) => String::new(),
                (o, p) => format!("  (oom kills {o}, pids.max hits {p})"),
            }
        );
    }
    let mut j = Vec::with_capacity(running.len());
    for (s, addr) in running.iter().zip(&addrs) {
        let mut v =
            serde_json::to_value(s).map_err(|e| Error::new(ErrorClass::Other, e.to_string()))?;
        if let Some(o) = v.as_object_mut() {
            o.insert("address".into(), json!(addr.map(|a| a.to_string())));
        }
        j.push(v);
    }
    Ok(Output::new(t, serde_json::Value::Array(j)))
}

/// What `ps` needs to tell a running app's network address: the installed apps' uids,
/// `network-pool` and the first uid of `uid-range` (an app's slot is its uid minus it).
struct NetLookup {
    view: View,
    /// `None` when appmgr.toml cannot be read: no address is shown then.
    net: Option<(appmgr_types::Ipv4Net, u32)>,
}

impl NetLookup {
    fn load(g: &Ctx) -> NetLookup {
        let net = HostConfig::load(&g.config_dir)
            .and_then(|h| Ok((h.network_pool()?, h.uid_first()?)))
            .ok();
        NetLookup {
            view: View::new(&g.state_dir),
            net,
        }
    }

    /// The address of `app` (whose processes are `pids`) in its own network, while that
    /// network exists (`/run/netns/appmgr-UID`) and, where their namespaces can be read,
    /// while it is the one the app's processes are in. `None` otherwise.
    fn address(&self, app: &AppId, pids: &[i32]) -> Option<std::net::Ipv4Addr> {
        use std::os::unix::fs::MetadataExt;
        let (pool, uid_first) = self.net?;
        let refs = self.view.installed(app).ok()?;
        let id = |p: &std::path::Path| std::fs::metadata(p).ok().map(|m| (m.dev(), m.ino()));
        refs.iter().filter_map(|r| r.uid).find_map(|uid| {
            let ns = std::path::Path::new(appmgr_sandbox::net::NETNS_DIR)
                .join(format!("{}{uid}", appmgr_sandbox::net::NAME_PREFIX));
            let ns = id(&ns)?;
            // The namespaces of other users' processes are readable by root only: then
            // the network's existence is all there is to go on.
            let seen: Vec<_> = pids
                .iter()
                .filter_map(|p| id(std::path::Path::new(&format!("/proc/{p}/ns/net"))))
                .collect();
            if !seen.is_empty() && !seen.contains(&ns) {
                return None;
            }
            let slot = uid.checked_sub(uid_first)?;
            appmgr_sandbox::net::slot_addrs(pool, slot)
                .ok()
                .map(|(_, app_addr)| app_addr)
        })
    }
}

/// The pids in the app's cgroup (`appmgr.slice/app-ID.scope`). None when the host has no
/// cgroup hierarchy appmgr can use: a launch needs one, so no app runs then.
pub fn running_pids(app: &AppId) -> CoreResult<Vec<i32>> {
    let Ok(h) = appmgr_cgroup::Hierarchy::detect(appmgr_cgroup::DEFAULT_PARENT) else {
        return Ok(Vec::new());
    };
    h.cgroup(app)
        .pids()
        .map_err(|e| Error::new(ErrorClass::Other, format!("{app}: cgroups: {e}")))
}

pub fn kill(g: &Ctx, id: &str) -> CoreResult<Output> {
    let app = AppId::new(id)?;
    let h = hierarchy()?;
    let cg = h.cgroup(&app);
    let pids = cg.pids().unwrap_or_default();
    if pids.is_empty() {
        return Err(Error::new(
            ErrorClass::NotFound,
            format!("{app}: not running"),
        ));
    }
    let n = cg
        .kill()
        .map_err(|e| Error::new(ErrorClass::Other, format!("{app}: {e}")))?;
    // An instance nobody watches (left by a killed appmgrd) leaves its network to whoever
    // ends it; a watched one is removed by its launcher or appmgrd, whichever is first.
    if let Some(uid) = resolve_view(&View::new(&g.state_dir), id)
        .ok()
        .and_then(|i| i.uid)
    {
        let _ = appmgr_sandbox::net::remove_if_stale(uid, std::time::Duration::from_secs(2));
    }
    Ok(Output::new(
        format!("killed {app} ({n} processes)\n"),
        json!({"id": app, "killed": n}),
    ))
}

/// Where an app's persistent data (its HOME) lives on the host.
pub fn data_dir(g: &Ctx, app: &AppId) -> std::path::PathBuf {
    g.state_dir.join("data").join(app.as_str())
}

/// The host nodes of the app's granted devices, resolved against the live `/dev` through
/// the board profile: all of them, and by granted device (for what `permissions` shows).
pub(crate) struct Devices {
    all: Vec<std::path::PathBuf>,
    by_grant: std::collections::BTreeMap<appmgr_types::DeviceName, Vec<std::path::PathBuf>>,
}

fn resolve_devices(
    board: Option<&appmgr_board::BoardProfile>,
    p: &PreparedLaunch,
) -> CoreResult<Devices> {
    let granted = &p.spec.permissions.devices;
    let Some(b) = board else {
        if granted.is_empty() {
            return Ok(Devices {
                all: Vec::new(),
                by_grant: Default::default(),
            });
        }
        return Err(Error::new(
            ErrorClass::Policy,
            format!(
                "{}: devices granted but no board profile configured (board = … in appmgr.toml)",
                p.id()
            ),
        ));
    };
    let root = std::path::Path::new("/");
    let mut by_grant = std::collections::BTreeMap::new();
    for d in granted {
        let one = std::collections::BTreeSet::from([d.clone()]);
        by_grant.insert(d.clone(), b.resolve(&one, root)?);
    }
    Ok(Devices {
        all: b.resolve(granted, root)?,
        by_grant,
    })
}

/// The board profile a launch of `p` needs: read (again) only when devices are granted.
fn launch_board(p: &PreparedLaunch) -> CoreResult<Option<appmgr_board::BoardProfile>> {
    match &p.board {
        Some(path) if !p.spec.permissions.devices.is_empty() => {
            Ok(Some(appmgr_board::BoardProfile::load(path)?))
        }
        _ => Ok(None),
    }
}

/// The cgroup spec of a launch: the grant's limits, and device access confined to what
/// the sandbox provides (its standard nodes, its private pts, the granted `nodes`).
fn launch_cgroup_spec(
    spec: &appmgr_cgroup::CgroupSpec,
    nodes: &[std::path::PathBuf],
) -> CoreResult<appmgr_cgroup::CgroupSpec> {
    use appmgr_cgroup::DeviceRule;
    let mut rules = appmgr_sandbox::STANDARD_DEVICE_NODES
        .iter()
        .map(std::path::Path::new)
        .chain(nodes.iter().map(|p| p.as_path()))
        .map(DeviceRule::of_node)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| Error::new(ErrorClass::Other, format!("device: {e}")))?;
    rules.extend(
        appmgr_sandbox::PTY_DEVICES
            .iter()
            .map(|(major, minor)| DeviceRule::char(*major, *minor)),
    );
    rules.sort();
    rules.dedup();
    let mut spec = spec.clone();
    spec.devices = Some(rules);
    Ok(spec)
}

/// The cgroup files and device program a launch plan needs from the app's cgroup.
fn cgroup_wiring(
    cg: &appmgr_cgroup::Cgroup,
    spec: &appmgr_cgroup::CgroupSpec,
    s: &mut appmgr_sandbox::LaunchSpec,
) {
    s.cgroup_procs = cg.procs_files();
    s.helper_cgroup_procs = cg.helper_procs_files();
    s.device_filter = match (cg.device_program_target(), &spec.devices) {
        (Some(dir), Some(rules)) => Some(appmgr_sandbox::DeviceFilter {
            cgroup: dir,
            program: appmgr_cgroup::bpf_program(rules),
        }),
        _ => None,
    };
}

/// The launch spec of an installed app with the live parts left empty (arguments, device
/// nodes, cgroup files, after-exit duties, the bus socket): the same [`EffectiveGrant`]
/// that `permissions` shows becomes the plan's mounts, namespaces and seccomp settings.
/// What a [`PreparedLaunch`] keeps.
pub(crate) fn template_spec(
    g: &Ctx,
    ctx: &LaunchCtx,
    a: &AppGrant,
) -> CoreResult<appmgr_sandbox::LaunchSpec> {
    let runtime_ref = a
        .deployment
        .runtime
        .as_ref()
        .ok_or_else(|| {
            Error::new(
                ErrorClass::Integrity,
                format!("{}: app without runtime", a.manifest.id),
            )
        })?
        .to_ref();
    let rt = ctx
        .view
        .info(&runtime_ref)?
        .and_then(|i| i.current)
        .ok_or_else(|| {
            Error::new(
                ErrorClass::NotFound,
                format!("{}: runtime {runtime_ref} is not installed", a.manifest.id),
            )
        })?;
    for d in [&a.deployment, &rt] {
        if d.marked_corrupt || appmgr_state::deployment_is_marked_corrupt(&d.path) {
            return Err(Error::new(
                ErrorClass::Integrity,
                format!(
                    "{}: deployment is corrupt (found by fsck); reinstall the bundle to repair",
                    d.path.display()
                ),
            ));
        }
    }
    let uid = a.info.uid.ok_or_else(|| {
        Error::new(
            ErrorClass::Other,
            format!("{}: no uid allocated", a.manifest.id),
        )
    })?;
    let extensions = app_extensions(ctx, a, &runtime_ref, &rt.files)?
        .iter()
        .filter_map(crate::extensions::ExtensionState::mount)
        .collect();
    Ok(appmgr_sandbox::LaunchSpec {
        app_id: a.manifest.id.clone(),
        runtime_files: rt.files.clone(),
        app_files: a.deployment.files.clone(),
        data_dir: data_dir(g, &a.manifest.id),
        runtime_dir: None,
        notify_socket: None,
        system_bus_socket: None,
        host_sockets: Default::default(),
        pipewire_access: ctx.pipewire_access,
        uid,
        gid: uid,
        permissions: a.grant.permissions.clone(),
        devices: Vec::new(),
        command: a.manifest.command.clone().unwrap_or_default(),
        args: Vec::new(),
        cgroup_procs: Vec::new(),
        helper_cgroup_procs: Vec::new(),
        device_filter: None,
        after_exit: Default::default(),
        env_allow: Vec::new(),
        caller_env: Vec::new(),
        cache_dir: g.state_dir.join("cache/seccomp"),
        timezone: None,
        lang: None,
        memory_max: a.grant.cgroup_limits().memory_max,
        deny_paths: protected_dirs(g, ctx, &a.grant),
        data_image: a
            .grant
            .limits
            .storage_max
            .map(|_| appmgr_sandbox::storage::image_path(&g.state_dir, a.manifest.id.as_str())),
        inputs: Vec::new(),
        network: network_spec(ctx, a, uid)?,
        extensions,
    })
}

/// The installed extensions of the app's runtime and of the app, mounted or not (see
/// [`crate::extensions`]).
pub(crate) fn app_extensions(
    ctx: &LaunchCtx,
    a: &AppGrant,
    runtime_ref: &RefName,
    runtime_files: &std::path::Path,
) -> CoreResult<Vec<crate::extensions::ExtensionState>> {
    crate::extensions::for_app(
        &ctx.view,
        &crate::extensions::facts(ctx.board.as_ref()),
        (&a.info.ref_name, &a.deployment.files),
        (runtime_ref, runtime_files),
    )
}

/// The extensions of an installed app as `permissions` shows them; none when its runtime
/// is not installed (the app cannot launch then, which it says).
fn shown_extensions(
    ctx: &LaunchCtx,
    a: &AppGrant,
) -> CoreResult<Vec<crate::extensions::ExtensionState>> {
    let Some(rt) = a.deployment.runtime.as_ref().map(|r| r.to_ref()) else {
        return Ok(Vec::new());
    };
    match ctx.view.info(&rt)?.and_then(|i| i.current) {
        Some(d) => app_extensions(ctx, a, &rt, &d.files),
        None => Ok(Vec::new()),
    }
}

/// The static half of the app's network: its slot in the pool and the installed apps
/// whose grant names it back in `talk-to`. Names and name servers are read at launch
/// ([`live_network`]).
fn network_spec(
    ctx: &LaunchCtx,
    a: &AppGrant,
    uid: u32,
) -> CoreResult<Option<appmgr_sandbox::net::NetSpec>> {
    let grant = &a.grant.permissions.network;
    if !grant.is_granted() {
        return Ok(None);
    }
    let slot = |id: &AppId, uid: u32| {
        uid.checked_sub(ctx.uid_first).ok_or_else(|| {
            Error::new(
                ErrorClass::Other,
                format!("{id}: uid {uid} is below uid-range, so it has no network slot"),
            )
        })
    };
    let mut peers = Vec::new();
    for peer in &grant.talk_to {
        // A peer that is not installed, or whose grant does not name this app, is no peer
        // (shown not provided).
        let Ok(p) = ctx.app_grant(peer.as_str()) else {
            continue;
        };
        let Some(puid) = p.info.uid else { continue };
        if p.grant.permissions.network.talk_to.contains(&a.manifest.id) {
            peers.push(appmgr_sandbox::net::NetPeer {
                app: peer.clone(),
                uid: puid,
                slot: slot(peer, puid)?,
            });
        }
    }
    Ok(Some(appmgr_sandbox::net::NetSpec {
        pool: ctx.net_pool,
        slot: slot(&a.manifest.id, uid)?,
        resolved: Default::default(),
        nameservers: Vec::new(),
        peers,
        routed: ctx.net_routed,
        refresh: Default::default(),
        resolvers: ctx.net_resolvers.clone(),
    }))
}

/// The live half of the app's network, at launch: without `ip` and `nft` there is none
/// (the grant is shown not provided); the grant's names are resolved now, by appmgr, and
/// the host's name servers read.
fn live_network(spec: &mut appmgr_sandbox::LaunchSpec) {
    if appmgr_sandbox::net::available().is_err() {
        spec.network = None;
        return;
    }
    let Some(n) = spec.network.as_mut() else {
        return;
    };
    let resolver = appmgr_sandbox::netnames::Resolver::new(&n.resolvers);
    for name in spec.permissions.network.names() {
        // Not resolving is not fatal: the item is shown not provided, and the name is
        // looked up again while the app runs.
        let (addrs, ttl) = match resolver.resolve(name) {
            Ok(a) => (a.addrs, a.ttl),
            Err(_) => (Vec::new(), appmgr_sandbox::netnames::RETRY),
        };
        n.resolved.insert(name.to_string(), addrs);
        n.refresh.insert(name.to_string(), ttl.as_secs());
    }
    if spec.permissions.network.dns {
        n.nameservers =
            host_nameservers(&std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default());
    }
}

/// The IPv4 name servers of a `resolv.conf` an app can reach: not the host's loopback
/// ones (the app has its own loopback).
pub(crate) fn host_nameservers(resolv_conf: &str) -> Vec<std::net::Ipv4Addr> {
    let mut v = appmgr_sandbox::netnames::resolv_conf_nameservers(resolv_conf);
    v.retain(|a| !a.is_loopback());
    v
}

/// The launch plan of a prepared launch with the live parts filled in: `args`, the device
/// nodes present now, the cgroup's files, the after-exit duties; `customize` adjusts the
/// spec last. The status of each granted item is read back from the plan.
fn apply_prepared(
    p: &PreparedLaunch,
    args: Vec<String>,
    devices: Devices,
    cgroup: Option<(&appmgr_cgroup::Cgroup, &appmgr_cgroup::CgroupSpec)>,
    after_exit: appmgr_sandbox::AfterExit,
    customize: impl FnOnce(&mut appmgr_sandbox::LaunchSpec),
) -> CoreResult<Launch> {
    let mut spec = p.spec.clone();
    spec.args = args;
    spec.devices = devices.all;
    spec.after_exit = after_exit;
    // Offered only while the bus is up; the plan binds it only with a bus grant.
    spec.system_bus_socket = p
        .bus_socket
        .as_deref()
        .and_then(appmgr_sandbox::host_socket);
    // The granted display and audio sockets present now; x11 falls back (in the plan).
    spec.host_sockets = appmgr_sandbox::offered_sockets(&spec.permissions, &p.host_sockets);
    live_network(&mut spec);
    if let Some((cg, cs)) = cgroup {
        cgroup_wiring(cg, cs, &mut spec);
    }
    customize(&mut spec);
    let plan = appmgr_sandbox::build_plan(&spec).map_err(|e| {
        let class = match e {
            appmgr_sandbox::PlanError::ReservedPath(_)
            | appmgr_sandbox::PlanError::NestedGrant { .. } => ErrorClass::Policy,
            _ => ErrorClass::Other,
        };
        Error::new(class, format!("{}: {e}", p.id()))
    })?;
    let mut provided = appmgr_sandbox::provisions(&spec, &plan, &devices.by_grant, &p.host_sockets);
    // The roles reach the session manager through PipeWire's own tool (crate::audio).
    if crate::audio::restricted_socket(&plan).is_some()
        && !std::path::Path::new(crate::audio::PW_METADATA).is_file()
    {
        for v in provided
            .iter_mut()
            .filter(|v| v.key == "audio" && v.is_provided())
        {
            v.status = appmgr_types::ProvisionStatus::NotProvided;
            v.reason = Some(format!(
                "{} is missing: the grant cannot reach the session manager",
                crate::audio::PW_METADATA
            ));
        }
    }
    Ok(Launch { plan, provided })
}

/// Before a launch that binds the system bus: the per-app bus policy of every installed
/// app is brought into place and loaded by the bus, exactly as appmgrd does after an
/// install, so the app's uid gets its `dbus-talk`/`dbus-own` names (and the portal
/// service's, with a served portal) and nothing else. Without a bus grant in the plan
/// nothing is done (and nothing is read). `reload_bus`
/// asks the bus at the socket to reload its configuration (the front end's D-Bus client
/// does that).
pub fn install_bus_policy(
    g: &Ctx,
    launch: &Launch,
    id: &AppId,
    reload_bus: impl FnOnce(&std::path::Path) -> CoreResult<()>,
) -> CoreResult<()> {
    if !binds_bus(launch) {
        return Ok(());
    }
    let host = HostConfig::load(&g.config_dir)?;
    let Some(socket) = host.system_bus_socket()? else {
        return Ok(());
    };
    let entries = bus_entries(g)?;
    let changed = appmgr_policy::userdb::install(
        host.bus_policy_file()?.as_deref(),
        host.userdb_dir()?.as_deref(),
        &entries,
    )
    .map_err(|e| Error::new(ErrorClass::Other, format!("{id}: bus policy: {e}")))?;
    if changed {
        reload_bus(&socket)?;
    }
    Ok(())
}

/// Whether `launch` provides a bus grant (`dbus-talk`, `dbus-own`, a served portal):
/// then [`install_bus_policy`] has work before the app starts.
pub fn binds_bus(launch: &Launch) -> bool {
    launch
        .provided
        .iter()
        .any(|p| matches!(p.key.as_str(), "dbus-talk" | "dbus-own" | "portals") && p.is_provided())
}

/// What `appmgr run` says on stderr before the app starts: one line per granted item this
/// host does not provide.
pub fn not_provided_lines(id: &AppId, launch: &Launch) -> Vec<String> {
    launch
        .provided
        .iter()
        .filter(|p| !p.is_provided())
        .map(|p| {
            format!(
                "appmgr: {id}: {} {} not provided on this host: {}",
                p.key,
                appmgr_types::escape_for_display(&p.value),
                p.reason.as_deref().unwrap_or("")
            )
        })
        .collect()
}

/// `appmgr run --print-plan`: the plan a launch of `id` would apply now (from the same
/// prepared launch, with the digests of its inputs), its cgroup, the grant and what is
/// provided; nothing is created.
pub fn plan_report(g: &Ctx, id: &str, args: Vec<String>) -> CoreResult<serde_json::Value> {
    let (_, a) = load_grant(g, id)?;
    let p = crate::prepared::for_launch(g, id)?;
    let h = hierarchy()?;
    let cg = h.cgroup(p.id());
    let after = appmgr_sandbox::AfterExit {
        events: Vec::new(),
        remove_dirs: cg.dirs(),
    };
    let d = resolve_devices(launch_board(&p)?.as_ref(), &p)?;
    let spec = launch_cgroup_spec(&p.limits, &d.all)?;
    let l = apply_prepared(&p, args, d, Some((&cg, &spec)), after, |_| {})?;
    Ok(serde_json::json!({
        "plan": l.plan,
        "cgroup": spec,
        "grant": a.grant,
        "provided": l.provided,
    }))
}

/// A foreground launch (`appmgr run`) ready to be applied: its cgroup exists, the plan is
/// built. The caller reports what is not provided, installs the bus policy
/// ([`install_bus_policy`]) and execs the launcher; on any failure it removes `cgroup`.
pub struct ForegroundLaunch {
    pub id: AppId,
    pub launch: Launch,
    pub cgroup: appmgr_cgroup::Cgroup,
}

/// `id`'s grant evaluated from the host configuration as it is now and checked (an
/// ungranted request is refused): what a launch plan is derived from
/// ([`crate::prepared`]).
pub fn load_grant(g: &Ctx, id: &str) -> CoreResult<(LaunchCtx, AppGrant)> {
    let ctx = LaunchCtx::load(g)?;
    let a = ctx.app_grant(id)?;
    a.grant.check()?;
    Ok((ctx, a))
}

/// The one launch use case (for `appmgr run` and appmgrd's services alike), applied to
/// the prepared launch ([`crate::prepared::for_launch`]): the app's storage brought in
/// line, its cgroup created (refused if the app runs already), the plan built with the
/// live parts; its post-exit duties report limit events and remove the cgroup.
/// `customize` adjusts the launch spec (appmgrd adds the notify socket and the bus
/// socket). On failure nothing is left behind.
pub fn start_launch(
    g: &Ctx,
    p: &PreparedLaunch,
    args: Vec<String>,
    customize: impl FnOnce(&mut appmgr_sandbox::LaunchSpec),
) -> CoreResult<(Launch, appmgr_cgroup::Cgroup)> {
    start_launch_primed(g, p, args, customize, false)
}

/// [`start_launch`]; with `prime`, once the cgroups exist, the wait before the launch's
/// first cgroup migration is started in a child ([`appmgr_sandbox::prime_cgroup_migration`])
/// and runs while the launch is prepared. Only for a single-threaded caller (`appmgr
/// run`), and after the cgroups were made: the child's migration holds the kernel's
/// cgroup lock while it waits, which a `mkdir` of a cgroup would wait for.
fn start_launch_primed(
    g: &Ctx,
    p: &PreparedLaunch,
    args: Vec<String>,
    customize: impl FnOnce(&mut appmgr_sandbox::LaunchSpec),
    prime: bool,
) -> CoreResult<(Launch, appmgr_cgroup::Cgroup)> {
    let h = hierarchy()?;
    // The per-app data dirs live under STATE/data (root-owned 0755); the launcher creates
    // the app's own directory, owned by its uid, without following symlinks.
    let parent = g.state_dir.join("data");
    std::fs::create_dir_all(&parent)
        .map_err(|e| Error::new(ErrorClass::Other, format!("{}: {e}", parent.display())))?;
    let devices = resolve_devices(launch_board(p)?.as_ref(), p)?;
    let spec = &launch_cgroup_spec(&p.limits, &devices.all)?;
    let cg = h.create(spec).map_err(|e| {
        let class = match e {
            appmgr_cgroup::CgroupError::InUse { .. } => ErrorClass::Conflict,
            _ => ErrorClass::Other,
        };
        Error::new(class, format!("{}: {e}", p.id()))
    })?;
    if prime {
        if let Some(f) = h
            .current_procs_files()
            .ok()
            .and_then(|v| v.into_iter().next())
        {
            appmgr_sandbox::prime_cgroup_migration(&f);
        }
    }
    if let Err(e) = prepare_storage(g, p) {
        let _ = cg.remove();
        return Err(e);
    }
    let after_exit = appmgr_sandbox::AfterExit {
        events: cg
            .event_counters()
            .into_iter()
            .map(|(file, key, event)| appmgr_sandbox::EventCounter {
                file,
                key: key.into(),
                event: event.into(),
            })
            .collect(),
        remove_dirs: cg.dirs(),
    };
    match apply_prepared(p, args, devices, Some((&cg, spec)), after_exit, customize) {
        Ok(l) => {
            // The app's audio roles reach the session manager before the app can connect
            // (a client that comes first is held until they do).
            if let Some(socket) = crate::audio::restricted_socket(&l.plan) {
                let perms = &p.spec.permissions;
                if let Err(e) = crate::audio::register(&socket, p.spec.uid, perms) {
                    let _ = cg.remove();
                    return Err(Error::new(e.class, format!("{}: {}", p.id(), e.message)));
                }
            }
            Ok((l, cg))
        }
        Err(e) => {
            let _ = cg.remove();
            Err(e)
        }
    }
}

/// Prepares `appmgr run ID -- ARGS`: the kept plan (or a new one) and [`start_launch`].
pub fn prepare_run(g: &Ctx, id: &str, args: Vec<String>) -> CoreResult<ForegroundLaunch> {
    foreground(g, &crate::prepared::for_launch(g, id)?, args)
}

/// [`prepare_run`] from a current kept plan only: `Ok(None)` when `id` has none (not a
/// plain installed ID, no plan kept, or one whose inputs changed), and nothing was done.
/// For a front end that leaves deriving a plan (policy, manifests, board) to another
/// program and so does not carry that code.
pub fn prepare_run_kept(
    g: &Ctx,
    id: &str,
    args: Vec<String>,
) -> CoreResult<Option<ForegroundLaunch>> {
    crate::prepared::kept(g, id)
        .map(|p| foreground(g, &p, args))
        .transpose()
}

fn foreground(g: &Ctx, p: &PreparedLaunch, args: Vec<String>) -> CoreResult<ForegroundLaunch> {
    let (launch, cgroup) = start_launch_primed(g, p, args, |_| {}, true)?;
    Ok(ForegroundLaunch {
        id: p.id().clone(),
        launch,
        cgroup,
    })
}

/// Brings the app's storage in line with `storage-max` before a launch (the app is not
/// running: its cgroup was just created): creates, resizes or exports its image.
fn prepare_storage(g: &Ctx, p: &PreparedLaunch) -> CoreResult<()> {
    use appmgr_sandbox::storage::{self, StorageError};
    let id = p.id().as_str();
    let image = storage::image_path(&g.state_dir, id);
    let data = data_dir(g, p.id());
    let req = storage::StorageRequest {
        image: &image,
        data_dir: &data,
        uid: p.spec.uid,
        gid: p.spec.gid,
        limit: p.storage_max,
        reserve: appmgr_state::DEFAULT_RESERVE_BYTES,
    };
    storage::prepare(&req).map(|_| ()).map_err(|e| {
        let class = match e {
            StorageError::DataTooLarge { .. } | StorageError::Unsafe { .. } => ErrorClass::Policy,
            StorageError::InUse { .. } => ErrorClass::Conflict,
            StorageError::NoSpace { .. } | StorageError::Tool { .. } | StorageError::Io { .. } => {
                ErrorClass::Other
            }
        };
        Error::new(class, format!("{id}: {e}"))
    })
}

/// `appmgr reload [ID]`: re-reads policy and applies the new limits to running apps (all,
/// or one). An app that policy no longer allows to run is reported (exit 4) and left to
/// the operator: killing is `appmgr kill`'s job.
pub fn reload(g: &Ctx, only: Option<&str>) -> CoreResult<Output> {
    let h = hierarchy()?;
    let running: Vec<AppId> = h
        .list()
        .map_err(|e| Error::new(ErrorClass::Other, format!("cgroups: {e}")))?
        .into_iter()
        .filter(|s| !s.pids.is_empty())
        .filter_map(|s| s.app)
        .filter(|a| only.is_none_or(|o| o == a.as_str()))
        .collect();
    if let Some(o) = only {
        if running.is_empty() {
            return Err(Error::new(
                ErrorClass::NotFound,
                format!("{o}: not running"),
            ));
        }
    }
    // Policy or board may have changed: the kept launch plans are derived again (every
    // installed app's, or the one named), so the next launch applies the new grant
    // without deriving it first.
    let one: Vec<AppId> = only.and_then(|o| AppId::new(o).ok()).into_iter().collect();
    crate::prepared::refresh(g, only.map(|_| one.as_slice()));
    let mut text = String::new();
    let mut applied = Vec::new();
    let mut refused = Vec::new();
    // Policy and board are read once for all running apps.
    let ctx = LaunchCtx::load(g)?;
    for app in running {
        let a = ctx.app_grant(app.as_str())?;
        if let Err(e) = a.grant.check() {
            let _ = writeln!(text, "{app}: not applied: {e}");
            refused.push(json!({"id": app, "error": e.to_string()}));
            continue;
        }
        let spec = appmgr_cgroup::CgroupSpec::for_app(&app, a.grant.cgroup_limits())
            .map_err(|e| Error::new(ErrorClass::Policy, format!("{app}: {e}")))?;
        let cg = h.cgroup(&app);
        if let Err(e) = cg.apply(&spec) {
            // The app may have ended since it was listed, its cgroup removed: above all
            // because this reload revoked something it held (appmgr-portald stops an app
            // that keeps a render node, and a probe reading a stream exits at its EOF).
            // Nothing runs there to apply limits to; that is not a failure.
            if cg.path().exists() {
                return Err(Error::new(ErrorClass::Other, format!("{app}: {e}")));
            }
            let _ = writeln!(text, "{app}: stopped meanwhile, nothing to apply");
            continue;
        }
        let _ = writeln!(
            text,
            "{app}: limits applied: {}",
            serde_json::to_string(&spec.limits).unwrap_or_default()
        );
        applied.push(json!({"id": app, "limits": spec.limits}));
    }
    if !refused.is_empty() {
        return Err(Error::new(
            ErrorClass::Policy,
            format!("{} running app(s) exceed the current policy", refused.len()),
        )
        .with_output(Output::new(
            text,
            json!({"applied": applied, "refused": refused}),
        )));
    }
    Ok(Output::new(text, json!({"applied": applied})))
}
