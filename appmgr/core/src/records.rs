//! The lean store views every front end shares: installed refs and one ref's state read
//! from the records (no store lock, no libostree), the typed change a mutation reports,
//! and the rule for fsck's verdict. The mutations themselves are in `appmgr-storeops`,
//! which only `appmgr-ops` links.

use crate::error::{CoreResult, Error};
use crate::Ctx;
use crate::Output;
use appmgr_state::RefInfo;
use appmgr_types::{AppId, ErrorClass, Kind};
use serde_json::json;
use std::fmt::Write;

pub fn ref_json(i: &RefInfo) -> serde_json::Value {
    let r = &i.ref_name;
    let cur = i.current.as_ref();
    let prev = i.previous.as_ref();
    json!({
        "id": r.id,
        "kind": r.kind,
        "version": cur.map(|d| d.version.to_string()),
        "arch": r.arch,
        "branch": r.branch,
        "ref": r.to_string(),
        "installed": cur.is_some(),
        "commit": cur.map(|d| d.commit.clone()),
        "runtime": cur.and_then(|d| d.runtime.as_ref().map(|x| x.to_string())),
        "installed-size": cur.map(|d| d.installed_size),
        "deployment": cur.map(|d| d.files.clone()),
        "marked-corrupt": cur.map(|d| d.marked_corrupt),
        "uid": i.uid,
        "highest-version": i.highest_version.to_string(),
        "previous-version": prev.map(|d| d.version.to_string()),
        "previous": prev.map(|d| json!({"version": d.version.to_string(), "commit": d.commit, "deployment": d.files})),
    })
}

/// What a store mutation did, typed: what appmgrd acts on (a health window after an
/// update, forgetting a removed service), never read back from the rendered output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Action {
    Installed,
    Updated,
    Downgraded,
    Reinstalled,
    Removed,
    RolledBack,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Installed => "installed",
            Action::Updated => "updated",
            Action::Downgraded => "downgraded",
            Action::Reinstalled => "reinstalled",
            Action::Removed => "removed",
            Action::RolledBack => "rolled-back",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Change {
    pub id: AppId,
    pub kind: Kind,
    pub action: Action,
    /// The current version after the change (`None` after a remove).
    pub version: Option<String>,
    /// The version that was current before (install, update) or is previous now.
    pub previous_version: Option<String>,
}

impl Change {
    pub fn of(i: &RefInfo, action: Action, before: Option<String>) -> Change {
        Change {
            id: i.ref_name.id.clone(),
            kind: i.ref_name.kind,
            action,
            version: i.current.as_ref().map(|d| d.version.to_string()),
            previous_version: before.or_else(|| i.previous.as_ref().map(|d| d.version.to_string())),
        }
    }
}

/// A mutation's output for people and machines, and the typed change.
#[derive(Debug, Clone, PartialEq)]
pub struct Done {
    pub output: Output,
    pub change: Change,
}

fn line(i: &RefInfo) -> String {
    let cur = i.current.as_ref();
    format!(
        "{:<9} {:<36} {:<12} {:<8} {:<10}{}",
        i.ref_name.kind.as_str(),
        i.ref_name.id.as_str(),
        cur.map(|d| d.version.to_string()).unwrap_or_default(),
        i.ref_name.arch.as_str(),
        i.ref_name.branch.as_str(),
        match &i.previous {
            Some(p) => format!(" (previous {})", p.version),
            None => String::new(),
        }
    )
}

/// Installed refs, read from the records without the store lock (a list never waits for
/// an install, and appmgrd answers it without libostree).
pub fn list(g: &Ctx) -> CoreResult<Output> {
    let all = appmgr_state::View::new(&g.state_dir).list_installed()?;
    let mut text = String::new();
    for i in &all {
        let _ = writeln!(text, "{}", line(i));
    }
    Ok(Output::new(
        text,
        json!(all.iter().map(ref_json).collect::<Vec<_>>()),
    ))
}

/// One ref's state, from its record (lock-free, like [`list`]).
pub fn info(g: &Ctx, id: &str) -> CoreResult<Output> {
    let i = crate::apps::resolve_view(&appmgr_state::View::new(&g.state_dir), id)?;
    let r = i.ref_name.clone();
    let Some(cur) = &i.current else {
        return Err(Error::new(
            ErrorClass::NotFound,
            format!(
                "{r}: not installed (highest version ever installed: {})",
                i.highest_version
            ),
        ));
    };
    let mut t = String::new();
    let _ = writeln!(t, "ref:             {r}");
    let _ = writeln!(t, "version:         {}", cur.version);
    let _ = writeln!(t, "commit:          {}", cur.commit);
    if let Some(rt) = &cur.runtime {
        let _ = writeln!(t, "runtime:         {rt}");
    }
    let _ = writeln!(t, "deployment:      {}", cur.files.display());
    let _ = writeln!(t, "installed size:  {} bytes", cur.installed_size);
    if let Some(uid) = i.uid {
        let _ = writeln!(t, "uid/gid:         {uid}");
    }
    match &i.previous {
        Some(p) => {
            let _ = writeln!(t, "previous:        {} ({})", p.version, p.commit);
        }
        None => {
            let _ = writeln!(t, "previous:        none");
        }
    }
    let _ = writeln!(t, "highest version: {}", i.highest_version);
    if cur.marked_corrupt {
        let _ = writeln!(
            t,
            "state:           CORRUPT (reinstall the bundle to repair)"
        );
    }
    let mut j = ref_json(&i);
    if r.kind != Kind::Runtime {
        let exts = extensions_of(g, &i)?;
        t.push_str(&crate::extensions::render(&exts));
        j["extensions"] = serde_json::to_value(&exts)
            .map_err(|e| Error::new(ErrorClass::Other, e.to_string()))?;
    }
    Ok(Output::new(t, j))
}

/// What `info` shows of extensions: for an app, its runtime's and its own; for an
/// extension, itself. Evaluated on the configured board profile.
fn extensions_of(
    g: &Ctx,
    i: &appmgr_state::RefInfo,
) -> CoreResult<Vec<crate::extensions::ExtensionState>> {
    let host = crate::config::HostConfig::load(&g.config_dir)?;
    let facts = crate::extensions::facts(host.board(&g.config_dir)?.as_ref());
    let view = appmgr_state::View::new(&g.state_dir);
    let Some(cur) = &i.current else {
        return Ok(Vec::new());
    };
    if i.ref_name.kind == Kind::Extension {
        return Ok(crate::extensions::status(&view, &facts, &i.ref_name)?
            .into_iter()
            .collect());
    }
    let Some(rt) = cur.runtime.as_ref().map(|r| r.to_ref()) else {
        return Ok(Vec::new());
    };
    let Some(rd) = view.info(&rt)?.and_then(|x| x.current) else {
        return Ok(Vec::new());
    };
    crate::extensions::for_app(&view, &facts, (&i.ref_name, &cur.files), (&rt, &rd.files))
}

/// The one rule for fsck's exit: findings of an unclean store fail with the integrity
/// class (exit 3), carrying the findings; a clean report is the output. Both the local
/// path and the daemon client apply it to the report.
pub fn fsck_verdict(g: &Ctx, out: Output) -> CoreResult<Output> {
    if out.json["clean"] == serde_json::Value::Bool(false) {
        let problems = out.json["problems"].as_array().map_or(0, Vec::len);
        return Err(Error::new(
            ErrorClass::Integrity,
            format!(
                "store {}: {problems} problem(s) found",
                g.state_dir.display(),
            ),
        )
        .with_output(out));
    }
    Ok(out)
}
