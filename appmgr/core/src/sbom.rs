//! `appmgr sbom`: the software bill of materials of what is installed.
//!
//! `show` prints one app's or runtime's SBOM; `query` answers the question a security team
//! asks the day a CVE lands: which installed apps and runtimes ship PACKAGE (below
//! VERSION, compared with Debian's rules)? Both read the records lock-free, like `list`,
//! and check every SBOM against the digest in its deployment's signed manifest before
//! trusting a byte of it: a changed file is reported, never answered from. A ref that
//! carries no SBOM is named in the answer, so "no match" is never mistaken for "not
//! known".

use crate::apps::{deployment_manifest, read_deployment_file, resolve_view};
use crate::error::{CoreResult, Error};
use crate::{Ctx, Output};
use appmgr_bundle::sbom::{self, Package, MAX_SBOM_BYTES};
use appmgr_state::view::{Deployment, SBOM_FILE};
use appmgr_state::{RefInfo, View};
use appmgr_types::{DebVersion, ErrorClass};
use serde_json::json;
use sha2::{Digest, Sha256};
use std::fmt::Write;

/// What one deployment's SBOM lookup found.
enum Found {
    /// The document's exact bytes, checked against the signed manifest.
    Sbom(Vec<u8>),
    /// Built without `bundle create --sbom`.
    None,
}

fn integrity(what: impl std::fmt::Display) -> Error {
    Error::new(ErrorClass::Integrity, what.to_string())
}

/// Reads a deployment's SBOM and checks it against the `[sbom]` digest of the deployment's
/// signed manifest. Files are opened without following symlinks.
fn read_checked(d: &Deployment) -> CoreResult<Found> {
    let Some(declared) = deployment_manifest(d)?.sbom else {
        return Ok(Found::None);
    };
    let path = d.path.join(SBOM_FILE);
    let bytes = read_deployment_file(&path, MAX_SBOM_BYTES).map_err(|e| integrity(e.message))?;
    let actual = hex::encode(Sha256::digest(&bytes));
    if actual != declared.sha256 || bytes.len() as u64 != declared.size {
        return Err(integrity(format!(
            "{}: does not match the signed manifest's digest {} (it is {actual}); \
             reinstall the bundle",
            path.display(),
            declared.sha256
        )));
    }
    Ok(Found::Sbom(bytes))
}

fn current(i: &RefInfo) -> CoreResult<&Deployment> {
    i.current.as_ref().ok_or_else(|| {
        Error::new(
            ErrorClass::NotFound,
            format!("{}: not installed", i.ref_name),
        )
    })
}

/// `appmgr sbom ID`: the SBOM exactly as the bundle carried it (text), or as a JSON value.
pub fn show(g: &Ctx, id: &str) -> CoreResult<Output> {
    let i = resolve_view(&View::new(&g.state_dir), id)?;
    let d = current(&i)?;
    match read_checked(d)? {
        Found::Sbom(bytes) => {
            let value: serde_json::Value = serde_json::from_slice(&bytes)
                .map_err(|e| integrity(format!("{}: {e}", d.path.join(SBOM_FILE).display())))?;
            let text = String::from_utf8_lossy(&bytes).into_owned();
            Ok(Output::new(text, value))
        }
        Found::None => Err(Error::new(
            ErrorClass::NotFound,
            format!(
                "{} {}: the bundle carries no SBOM (built without `bundle create --sbom`)",
                i.ref_name, d.version
            ),
        )),
    }
}

/// Whether `p` is the package asked for: by binary package name or by source package
/// (`openssl` finds `libssl3`).
fn is_package(p: &Package, name: &str) -> bool {
    p.name == name || p.source.as_deref() == Some(name)
}

/// `appmgr sbom query PACKAGE [--below VERSION]`.
///
/// With `below`, a package matches when its version is a Debian version lower than
/// `below`; a matching name whose version is not a Debian version is listed as not
/// comparable rather than dropped. Refs without an SBOM, and refs whose SBOM fails its
/// check, are listed apart; a failed check makes the query fail with the integrity class
/// (exit 3) after printing what it found, because an answer that skipped a ref is not one.
pub fn query(g: &Ctx, package: &str, below: Option<&str>) -> CoreResult<Output> {
    let below = below
        .map(|b| DebVersion::parse(b).map_err(|e| Error::new(ErrorClass::Usage, e.to_string())))
        .transpose()?;
    let installed = View::new(&g.state_dir).list_installed()?;
    let mut matches = Vec::new();
    let mut without = Vec::new();
    let mut failed = Vec::new();
    let mut text = String::new();
    for i in &installed {
        let Some(d) = i.current.as_ref() else {
            continue;
        };
        let r = &i.ref_name;
        let bytes = match read_checked(d) {
            Ok(Found::Sbom(b)) => b,
            Ok(Found::None) => {
                without.push(r.to_string());
                continue;
            }
            Err(e) => {
                failed.push(json!({"ref": r.to_string(), "error": e.message}));
                continue;
            }
        };
        let packages = match sbom::parse(&bytes) {
            Ok(p) => p,
            Err(e) => {
                failed.push(json!({"ref": r.to_string(), "error": e.to_string()}));
                continue;
            }
        };
        for p in packages.iter().filter(|p| is_package(p, package)) {
            let comparable = p.deb_version();
            if let Some(limit) = &below {
                if matches!(&comparable, Some(v) if v >= limit) {
                    continue;
                }
            }
            let version = p.version.clone().unwrap_or_default();
            let _ = write!(
                text,
                "{:<8} {:<36} {:<12} {} {}",
                r.kind.as_str(),
                r.id.as_str(),
                d.version.to_string(),
                p.name,
                if version.is_empty() {
                    "(no version)"
                } else {
                    &version
                },
            );
            if let Some(s) = p.source.as_deref().filter(|s| *s != p.name) {
                let _ = write!(text, " (source {s})");
            }
            if below.is_some() && comparable.is_none() {
                let _ = write!(text, " [not a Debian version: cannot compare]");
            }
            text.push('\n');
            matches.push(json!({
                "ref": r.to_string(),
                "id": r.id,
                "kind": r.kind,
                "version": d.version.to_string(),
                "package": p.name,
                "package-version": p.version,
                "source": p.source,
                "licenses": p.licenses,
                "purl": p.purl,
                "comparable": comparable.is_some(),
            }));
        }
    }
    let what = match &below {
        Some(b) => format!("{package} below {b}"),
        None => package.to_string(),
    };
    let _ = writeln!(
        text,
        "{} match(es) of {what} in {} installed app(s) and runtime(s)",
        matches.len(),
        installed.iter().filter(|i| i.current.is_some()).count()
    );
    if !without.is_empty() {
        let _ = writeln!(text, "without an SBOM (unknown): {}", without.join(", "));
    }
    for f in &failed {
        let _ = writeln!(
            text,
            "SBOM not usable: {}: {}",
            f["ref"].as_str().unwrap_or_default(),
            f["error"].as_str().unwrap_or_default()
        );
    }
    let out = Output::new(
        text,
        json!({
            "package": package,
            "below": below.as_ref().map(|b| b.to_string()),
            "matches": matches,
            "without-sbom": without,
            "failed": failed,
        }),
    );
    if failed.is_empty() {
        Ok(out)
    } else {
        Err(Error::new(
            ErrorClass::Integrity,
            format!(
                "{} installed SBOM(s) could not be read or failed their check",
                failed.len()
            ),
        )
        .with_output(out))
    }
}
