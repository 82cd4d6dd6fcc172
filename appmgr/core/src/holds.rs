//! Update holds (docs/remotes.md "Holds"): `appmgr hold ID [--reason TEXT]` keeps `update`
//! (the CLI's and appmgrd's) from touching ID until `appmgr unhold ID`; an explicit
//! `install` still does what it is told. A hold is one file, `STATE/holds/ID.json`
//! (`{"reason", "since_unix"}`), written whole and renamed into place.

use crate::{CoreResult, Ctx, Error, Output};
use appmgr_types::{escape_for_display, AppId, ErrorClass};
use serde_json::json;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

const MAX_REASON: usize = 200;

fn dir(state_dir: &Path) -> PathBuf {
    state_dir.join("holds")
}

fn io_error(p: &Path, e: std::io::Error) -> Error {
    Error::new(ErrorClass::Other, format!("{}: {e}", p.display()))
}

fn app_id(id: &str) -> CoreResult<AppId> {
    AppId::new(id).map_err(|e| {
        Error::new(
            ErrorClass::Usage,
            format!("{}: {e}", escape_for_display(id)),
        )
    })
}

/// Every hold, by ID: its reason. A file that is not a hold is an error naming it.
pub fn holds(g: &Ctx) -> CoreResult<BTreeMap<String, String>> {
    let d = dir(&g.state_dir);
    let entries = match std::fs::read_dir(&d) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(BTreeMap::new()),
        Err(e) => return Err(io_error(&d, e)),
    };
    let mut out = BTreeMap::new();
    for e in entries {
        let e = e.map_err(|e| io_error(&d, e))?;
        let name = e.file_name();
        let Some(id) = name.to_str().and_then(|n| n.strip_suffix(".json")) else {
            continue;
        };
        if AppId::new(id).is_err() {
            continue;
        }
        let p = e.path();
        let b = std::fs::read(&p).map_err(|e| io_error(&p, e))?;
        let v: serde_json::Value = serde_json::from_slice(&b).map_err(|e| {
            Error::new(
                ErrorClass::Integrity,
                format!("{}: not a hold: {e}", p.display()),
            )
        })?;
        out.insert(
            id.to_string(),
            v["reason"].as_str().unwrap_or_default().to_string(),
        );
    }
    Ok(out)
}

/// The holds in force for `ids`: the operator's (`appmgr hold`) and policy's
/// (`update-hold` of the most specific rule that sets it), by ID: the reason, policy's as
/// "REASON (policy FILE rule N (line L))". An operator's hold is named first.
pub fn in_force<'a>(
    g: &Ctx,
    ids: impl IntoIterator<Item = &'a str>,
) -> CoreResult<BTreeMap<String, String>> {
    let mut out = holds(g)?;
    let policies = appmgr_policy::PolicySet::load_config_dir(&g.config_dir)?;
    let board = crate::config::HostConfig::load(&g.config_dir)?.board(&g.config_dir)?;
    let facts = crate::config::board_facts(board.as_ref())?;
    for id in ids {
        if out.contains_key(id) {
            continue;
        }
        if let Some((reason, src)) = policies.update_hold(id, &facts) {
            out.insert(id.to_string(), format!("{reason} (policy {src})"));
        }
    }
    Ok(out)
}

/// `hold ID [--reason TEXT]`.
pub fn hold(g: &Ctx, id: &str, reason: Option<&str>) -> CoreResult<Output> {
    let id = app_id(id)?;
    let reason = reason.unwrap_or("");
    if reason.chars().count() > MAX_REASON || reason.chars().any(char::is_control) {
        return Err(Error::new(
            ErrorClass::Usage,
            format!("--reason: at most {MAX_REASON} characters, no control characters"),
        ));
    }
    let d = dir(&g.state_dir);
    std::fs::create_dir_all(&d).map_err(|e| io_error(&d, e))?;
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let body = json!({"reason": reason, "since_unix": since});
    let dst = d.join(format!("{id}.json"));
    appmgr_policy::userdb::write_atomic(&dst, &serde_json::to_vec(&body).expect("serializable"))
        .map_err(|e| io_error(&dst, e))?;
    Ok(Output::new(
        format!("{id} is held: update leaves it as it is (appmgr unhold {id})\n"),
        json!({"id": id.to_string(), "held": true, "reason": reason}),
    ))
}

/// `unhold ID` (an ID without a hold: exit 5).
pub fn unhold(g: &Ctx, id: &str) -> CoreResult<Output> {
    let id = app_id(id)?;
    let p = dir(&g.state_dir).join(format!("{id}.json"));
    match std::fs::remove_file(&p) {
        Ok(()) => Ok(Output::new(
            format!("{id} is no longer held\n"),
            json!({"id": id.to_string(), "held": false}),
        )),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            // A policy hold is the policy's to lift, not this command's.
            let by_policy = in_force(g, [id.as_str()])
                .ok()
                .and_then(|h| h.get(id.as_str()).cloned())
                .map(|r| format!(" by an operator; policy holds it: {r}"))
                .unwrap_or_default();
            Err(Error::new(
                ErrorClass::NotFound,
                format!("{id} is not held{by_policy}"),
            ))
        }
        Err(e) => Err(io_error(&p, e)),
    }
}
