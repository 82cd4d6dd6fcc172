//! `appmgr report`: what this device runs, signed with a per-device key, so a backend can
//! trust what its fleet reports (docs/remotes.md "Device report").
//!
//! The report lists every installed app and runtime (version, previous version, highest
//! version ever installed), the release counters each remote's installs reached, and
//! each app's last update outcome (a health-window rollback appmgrd recorded, or the
//! version it runs). It is signed with `STATE/device/report.key` (ed25519, made on
//! first use, mode 0600; `report.pub` beside it is what a backend enrolls). The
//! signature covers the compact JSON serialization of the `report` member.

use crate::{CoreResult, Ctx, Error, Output};
use appmgr_bundle::keys;
use appmgr_types::ErrorClass;
use serde_json::json;
use std::fmt::Write;
use std::path::{Path, PathBuf};

pub const FORMAT: u64 = 1;

/// `STATE/device/report` (`.key`, `.pub`).
pub fn key_base(state_dir: &Path) -> PathBuf {
    state_dir.join("device").join("report")
}

fn key_error(e: keys::KeyError) -> Error {
    Error::new(ErrorClass::Other, e.to_string())
}

/// The device's report key, made on first use.
fn device_key(state_dir: &Path) -> CoreResult<ed25519_dalek::SigningKey> {
    let base = key_base(state_dir);
    let secret = base.with_extension("key");
    if !secret.exists() {
        let dir = base.parent().expect("STATE/device");
        std::fs::create_dir_all(dir)
            .map_err(|e| Error::new(ErrorClass::Other, format!("{}: {e}", dir.display())))?;
        match keys::generate(&base) {
            Ok(_) | Err(keys::KeyError::Exists { .. }) => {}
            Err(e) => return Err(key_error(e)),
        }
    }
    keys::load_secret(&secret).map_err(key_error)
}

/// The bytes a report's signature covers.
fn signed_bytes(report: &serde_json::Value) -> Vec<u8> {
    serde_json::to_vec(report).expect("serializable")
}

/// What appmgrd recorded of a health-window rollback of `id`, if anything.
fn rollback_record(state_dir: &Path, id: &str) -> Option<serde_json::Value> {
    let p = crate::paths::daemon_dir(state_dir)
        .join("health")
        .join(format!("{id}.json"));
    let b = std::fs::read(p).ok()?;
    serde_json::from_slice(&b).ok()
}

/// `report`: the signed device report.
pub fn report(g: &Ctx) -> CoreResult<Output> {
    let key = device_key(&g.state_dir)?;
    let fingerprint = keys::fingerprint(&key.verifying_key());
    let installed = appmgr_state::View::new(&g.state_dir).list_installed()?;
    let remotes = crate::remotes::load(&g.config_dir)?;
    let mut counters = Vec::new();
    for r in &remotes {
        if r.root.is_some() {
            counters.push((r.name.clone(), crate::remote_tuf::releases(g, &r.name)?));
        }
    }
    let holds = crate::holds::in_force(g, installed.iter().map(|i| i.ref_name.id.as_str()))?;
    let mut apps = Vec::new();
    let mut text = String::new();
    for i in &installed {
        let Some(cur) = &i.current else { continue };
        let id = i.ref_name.id.to_string();
        let releases: serde_json::Map<String, serde_json::Value> = counters
            .iter()
            .filter_map(|(name, c)| c.get(&id).map(|r| (name.clone(), json!(r))))
            .collect();
        let last = match rollback_record(&g.state_dir, &id) {
            // appmgrd's record (kebab-case): rolled back from `from-version` to
            // `to-version`, which is still what runs.
            Some(rec) if rec["to-version"] == json!(cur.version.to_string()) => json!({
                "outcome": "rolled-back",
                "failed_version": rec["from-version"],
                "version": rec["to-version"],
                "reason": rec["reason"],
                "at_unix": rec["at-unix"],
            }),
            _ => json!({"outcome": "installed", "version": cur.version.to_string()}),
        };
        let _ = writeln!(
            text,
            "{}\t{}\t{}",
            i.ref_name,
            cur.version,
            last["outcome"].as_str().unwrap_or_default()
        );
        apps.push(json!({
            "ref": i.ref_name.to_string(),
            "id": id,
            "kind": i.ref_name.kind.to_string(),
            "version": cur.version.to_string(),
            "previous": i.previous.as_ref().map(|p| p.version.to_string()),
            "highest_version": i.highest_version.to_string(),
            "releases": releases,
            "held": holds.contains_key(&id),
            "hold_reason": holds.get(&id),
            "last_update": last,
        }));
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let body = json!({
        "format": FORMAT,
        "generated_at_unix": now,
        "device_key": fingerprint,
        "apps": apps,
        "remotes": remotes.iter().map(|r| json!({"name": r.name, "url": r.url.to_string(), "tuf": r.root.is_some()})).collect::<Vec<_>>(),
    });
    let sig = keys::sign(&key, &signed_bytes(&body));
    let _ = writeln!(text, "signed by device key {fingerprint}");
    Ok(Output::new(
        text,
        json!({
            "report": body,
            "signature": {
                "algorithm": "ed25519",
                "key": fingerprint,
                "public_key": keys::public_pem(&key.verifying_key()),
                "value": hex::encode(sig),
            },
        }),
    ))
}

/// `report --verify FILE --key PUB`: checks a report's signature against an enrolled
/// device key (exit 3 when it does not verify, naming why).
pub fn verify(file: &Path, key: &Path) -> CoreResult<Output> {
    let pubkey =
        keys::load_public(key).map_err(|e| Error::new(ErrorClass::Usage, e.to_string()))?;
    let bad = |why: String| Error::new(ErrorClass::Integrity, format!("{}: {why}", file.display()));
    let bytes = std::fs::read(file)
        .map_err(|e| Error::new(ErrorClass::NotFound, format!("{}: {e}", file.display())))?;
    let v: serde_json::Value =
        serde_json::from_slice(&bytes).map_err(|e| bad(format!("not a report: {e}")))?;
    let report = v
        .get("report")
        .ok_or_else(|| bad("no report member".into()))?;
    let sig = v["signature"]["value"]
        .as_str()
        .and_then(|s| hex::decode(s).ok())
        .ok_or_else(|| bad("no signature value".into()))?;
    if v["signature"]["algorithm"] != "ed25519" {
        return Err(bad("the signature is not ed25519".into()));
    }
    if !keys::verify_strict(&pubkey, &signed_bytes(report), &sig) {
        return Err(bad(format!(
            "the signature does not verify with {} ({})",
            key.display(),
            keys::fingerprint(&pubkey)
        )));
    }
    let n = report["apps"].as_array().map_or(0, Vec::len);
    Ok(Output::new(
        format!(
            "{}: verified, {n} installed, device key {}\n",
            file.display(),
            keys::fingerprint(&pubkey)
        ),
        json!({"verified": true, "apps": n, "device_key": keys::fingerprint(&pubkey)}),
    ))
}
