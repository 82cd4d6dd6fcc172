//! Commands about apps as they run: the effective grant (`permissions`), running
//! instances (`ps`) and stopping one (`kill`). `run` builds on the same grant.

use crate::args::Global;
use crate::cmd_store::{open_store, resolve};
use crate::config::board_facts;
use crate::error::{CliError, CliResult};
use crate::Output;
use appmgr_bundle::Manifest;
use appmgr_policy::{EffectiveGrant, PolicySet, Request};
use appmgr_store::{Deployment, RefInfo};
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
    pub board: Option<appmgr_board::BoardProfile>,
}

pub fn app_grant(g: &Global, id: &str) -> CliResult<AppGrant> {
    let (store, host) = open_store(g)?;
    let (info, deployment) = {
        let lock = store.lock()?;
        let r = resolve(&store, &lock, id)?;
        if r.kind != Kind::App {
            return Err(CliError::new(
                ErrorClass::Usage,
                format!("{r} is a runtime, not an app"),
            ));
        }
        let info = store.info(&lock, &r)?;
        let dep = info
            .current
            .clone()
            .ok_or_else(|| CliError::new(ErrorClass::NotFound, format!("{r}: not installed")))?;
        (info, dep)
    };
    let bytes = std::fs::read(&deployment.manifest).map_err(|e| {
        CliError::new(
            ErrorClass::Other,
            format!("{}: {e}", deployment.manifest.display()),
        )
    })?;
    let manifest = Manifest::parse(&bytes, true).map_err(|e| {
        CliError::new(
            ErrorClass::Integrity,
            format!("{}: {e}", deployment.manifest.display()),
        )
    })?;
    let policies = PolicySet::load_config_dir(&g.config_dir)?;
    let board = host.board(&g.config_dir)?;
    let facts = board_facts(board.as_ref())?;
    let grant = policies.evaluate(
        &Request {
            app: &manifest.id,
            permissions: &manifest.permissions,
            resources: &manifest.resources,
        },
        &facts,
    )?;
    Ok(AppGrant {
        info,
        deployment,
        manifest,
        grant,
        board,
    })
}

pub fn permissions(g: &Global, id: &str) -> CliResult<Output> {
    let a = app_grant(g, id)?;
    // Serialized and rendered from the same value the launcher is given.
    let j = serde_json::to_value(&a.grant)
        .map_err(|e| CliError::new(ErrorClass::Other, e.to_string()))?;
    Ok(Output::new(a.grant.render_text(), j))
}

fn hierarchy() -> CliResult<appmgr_cgroup::Hierarchy> {
    appmgr_cgroup::Hierarchy::detect(appmgr_cgroup::DEFAULT_PARENT)
        .map_err(|e| CliError::new(ErrorClass::Other, format!("cgroups: {e}")))
}

fn mib(b: Option<u64>) -> String {
    b.map(|b| format!("{:.1}M", b as f64 / (1 << 20) as f64))
        .unwrap_or_else(|| "-".into())
}

pub fn ps(_g: &Global) -> CliResult<Output> {
    let h = hierarchy()?;
    let all = h
        .list()
        .map_err(|e| CliError::new(ErrorClass::Other, format!("cgroups: {e}")))?;
    let running: Vec<_> = all.into_iter().filter(|s| !s.pids.is_empty()).collect();
    let mut t = String::new();
    let _ = writeln!(
        t,
        "{:<32} {:>8} {:>9} {:>9} {:>9} {:>8}  cgroup",
        "app", "pid", "mem", "peak", "limit", "cpu-s"
    );
    for s in &running {
        let _ = writeln!(
            t,
            "{:<32} {:>8} {:>9} {:>9} {:>9} {:>8.2}  {}{}",
            s.app.as_ref().map(|a| a.as_str()).unwrap_or("?"),
            s.pids.first().copied().unwrap_or(0),
            mib(s.memory_current),
            mib(s.memory_peak),
            mib(s.limits.memory_max),
            s.cpu_time_usec.unwrap_or(0) as f64 / 1e6,
            s.path.display(),
            match (s.oom_kills, s.pids_max_hits) {
                (0, 0) => String::new(),
                (o, p) => format!("  (oom kills {o}, pids.max hits {p})"),
            }
        );
    }
    let j = serde_json::to_value(&running)
        .map_err(|e| CliError::new(ErrorClass::Other, e.to_string()))?;
    Ok(Output::new(t, j))
}

pub fn kill(_g: &Global, id: &str) -> CliResult<Output> {
    let app = AppId::new(id)?;
    let h = hierarchy()?;
    let cg = h.cgroup(&app);
    let pids = cg.pids().unwrap_or_default();
    if pids.is_empty() {
        return Err(CliError::new(
            ErrorClass::NotFound,
            format!("{app}: not running"),
        ));
    }
    let n = cg
        .kill()
        .map_err(|e| CliError::new(ErrorClass::Other, format!("{app}: {e}")))?;
    Ok(Output::new(
        format!("killed {app} ({n} processes)\n"),
        json!({"id": app, "killed": n}),
    ))
}
