//! Which installed extensions an app's sandbox shows, and why the others are not shown.
//!
//! An extension (`kind = "extension"`, see `appmgr_bundle::extension`) is mounted in the
//! sandbox of an app when it extends the app's runtime (or the app), its conditions hold
//! on the board profile (`gpu-driver`), the extended tree has the directory its mount
//! point is in, no extension earlier in ID order took the same mount point, and fsck has
//! not marked it corrupt. Every other installed extension of that runtime or app is
//! listed as not mounted, with the reason: `permissions` and `info` show both, from the
//! same evaluation the launch uses.

use crate::apps::deployment_manifest;
use crate::error::CoreResult;
use appmgr_bundle::extension::{BoardFacts, ExtensionDecl};
use appmgr_state::View;
use appmgr_types::{Kind, RefName};
use serde::Serialize;
use std::path::{Path, PathBuf};

/// An installed extension of the tree an app runs with.
#[derive(Debug, Clone, Serialize)]
pub struct ExtensionState {
    #[serde(rename = "ref")]
    pub ref_name: RefName,
    pub version: String,
    pub mount_point: String,
    /// `None`: mounted; otherwise why not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub not_mounted: Option<String>,
    #[serde(skip)]
    pub decl: Option<ExtensionDecl>,
    #[serde(skip)]
    pub files: PathBuf,
}

impl ExtensionState {
    pub fn mounted(&self) -> bool {
        self.not_mounted.is_none()
    }

    /// What the sandbox gets for a mounted extension.
    pub fn mount(&self) -> Option<appmgr_sandbox::ExtensionMount> {
        let d = self.decl.as_ref().filter(|_| self.mounted())?;
        Some(appmgr_sandbox::ExtensionMount {
            id: self.ref_name.id.to_string(),
            files: self.files.clone(),
            mount_point: d.mount_point.clone(),
            library_path: d.library_path.clone(),
            env: d.env.clone().into_iter().collect(),
        })
    }
}

/// The board facts extension conditions are tested on.
pub fn facts(board: Option<&appmgr_board::BoardProfile>) -> BoardFacts {
    BoardFacts {
        gpu_driver: board.and_then(|b| b.gpu_driver.clone()),
    }
}

/// Whether `rel` (a normal relative path) is a directory below `root`, every component a
/// real directory (a symlink in a signed tree is not an extension point).
fn is_real_dir(root: &Path, rel: &str) -> bool {
    let mut p = root.to_path_buf();
    for c in rel.split('/') {
        p.push(c);
        match std::fs::symlink_metadata(&p) {
            Ok(m) if m.file_type().is_dir() => {}
            _ => return false,
        }
    }
    true
}

/// Whether two mount points are the same, one inside the other, or one inside the
/// other's extension point's tmpfs in a way the launcher cannot build.
fn overlaps(a: &str, b: &str) -> bool {
    a == b || a.starts_with(&format!("{b}/")) || b.starts_with(&format!("{a}/"))
}

/// The installed extensions of `app` (its ref and `files/`) running on the runtime
/// `runtime` (its ref and `files/`), in ID order, each mounted or not with the reason.
pub fn for_app(
    view: &View,
    board: &BoardFacts,
    app: (&RefName, &Path),
    runtime: (&RefName, &Path),
) -> CoreResult<Vec<ExtensionState>> {
    let mut out: Vec<ExtensionState> = Vec::new();
    for (r, _) in view.ref_dirs_of(Kind::Extension)? {
        let Some(d) = view.info(&r)?.and_then(|i| i.current) else {
            continue;
        };
        let manifest = match deployment_manifest(&d) {
            Ok(m) => m,
            Err(e) => {
                // Unreadable: shown for every app, so the operator sees it; never mounted.
                out.push(ExtensionState {
                    ref_name: r,
                    version: d.version.to_string(),
                    mount_point: String::new(),
                    not_mounted: Some(format!("its manifest cannot be read: {}", e.message)),
                    decl: None,
                    files: d.files.clone(),
                });
                continue;
            }
        };
        let Some(decl) = manifest.extension else {
            continue;
        };
        let (target, tree) = if decl.extends_app() {
            (
                RefName::new(
                    Kind::App,
                    decl.extends.id.clone(),
                    decl.extends.arch.clone(),
                    decl.extends.branch.clone(),
                ),
                app.1,
            )
        } else {
            (decl.extends.to_ref(), runtime.1)
        };
        if &target != app.0 && &target != runtime.0 {
            continue;
        }
        let point = decl.parent();
        let rel = point
            .strip_prefix("/usr/")
            .or_else(|| point.strip_prefix("/app/"))
            .unwrap_or(point);
        let not_mounted = if d.marked_corrupt || appmgr_state::deployment_is_marked_corrupt(&d.path)
        {
            Some("its deployment is corrupt (found by fsck); reinstall it".to_string())
        } else if let Some(why) = decl.unmet(board) {
            Some(why)
        } else if !is_real_dir(tree, rel) {
            Some(format!(
                "{target} has no directory {point} to mount it in (no such extension point)"
            ))
        } else if let Some(v) = decl
            .env
            .keys()
            .find(|v| !appmgr_sandbox::extension_variable_allowed(v))
        {
            Some(format!("it sets {v}, a variable the launcher reserves"))
        } else if let Some(first) = out
            .iter()
            .find(|o| o.mounted() && overlaps(&o.mount_point, &decl.mount_point))
        {
            Some(format!(
                "{} overlaps {} of {}",
                decl.mount_point, first.mount_point, first.ref_name.id
            ))
        } else {
            None
        };
        out.push(ExtensionState {
            ref_name: r,
            version: d.version.to_string(),
            mount_point: decl.mount_point.clone(),
            not_mounted,
            decl: Some(decl),
            files: d.files.clone(),
        });
    }
    Ok(out)
}

/// One installed extension's state as the apps of the tree it extends see it (mounted,
/// or why not); `None` when `r` is not an installed extension.
pub fn status(view: &View, board: &BoardFacts, r: &RefName) -> CoreResult<Option<ExtensionState>> {
    let Some(d) = view.info(r)?.and_then(|i| i.current) else {
        return Ok(None);
    };
    let decl = deployment_manifest(&d)?.extension;
    let Some(decl) = decl else { return Ok(None) };
    let target = if decl.extends_app() {
        RefName::new(
            Kind::App,
            decl.extends.id.clone(),
            decl.extends.arch.clone(),
            decl.extends.branch.clone(),
        )
    } else {
        decl.extends.to_ref()
    };
    let Some(tree) = view.info(&target)?.and_then(|i| i.current) else {
        return Ok(Some(ExtensionState {
            ref_name: r.clone(),
            version: d.version.to_string(),
            mount_point: decl.mount_point.clone(),
            not_mounted: Some(format!("{target} is not installed")),
            decl: Some(decl),
            files: d.files,
        }));
    };
    let all = for_app(view, board, (&target, &tree.files), (&target, &tree.files))?;
    Ok(all.into_iter().find(|x| &x.ref_name == r))
}

/// The paths the extension evaluation read, for a kept plan's digests: the listings that
/// say which extensions are installed, each one's record, and each current deployment's
/// manifest and corrupt marker.
pub fn input_paths(view: &View, state_dir: &Path) -> CoreResult<Vec<PathBuf>> {
    let kdir = state_dir.join("deploy").join(Kind::Extension.as_str());
    let mut v = vec![kdir.clone()];
    for id in appmgr_state::view::list_dir(&kdir)? {
        v.extend(id_listing_paths(&kdir.join(id))?);
    }
    for (r, _) in view.ref_dirs_of(Kind::Extension)? {
        if let Some(d) = view.info(&r)?.and_then(|i| i.current) {
            v.push(d.manifest.clone());
            v.push(d.path.join(appmgr_state::CORRUPT_MARKER));
        }
    }
    Ok(v)
}

/// An ID's directory (`deploy/KIND/ID`), its arch directories and each branch's record:
/// the paths that say which refs of the ID exist.
pub(crate) fn id_listing_paths(idir: &Path) -> CoreResult<Vec<PathBuf>> {
    let mut v = vec![idir.to_path_buf()];
    for arch in appmgr_state::view::list_dir(idir)? {
        let adir = idir.join(&arch);
        v.push(adir.clone());
        for branch in appmgr_state::view::list_dir(&adir)? {
            v.push(adir.join(branch).join(appmgr_state::record::RECORD_FILE));
        }
    }
    Ok(v)
}

/// The text lines `permissions` and `info` show for an app's extensions.
pub fn render(exts: &[ExtensionState]) -> String {
    if exts.is_empty() {
        return String::new();
    }
    let mut t = String::from("extensions:\n");
    for x in exts {
        match &x.not_mounted {
            None => t.push_str(&format!(
                "  {} {}: mounted at {}\n",
                x.ref_name.id, x.version, x.mount_point
            )),
            Some(why) => t.push_str(&format!(
                "  {} {}: installed, not mounted: {why}\n",
                x.ref_name.id, x.version
            )),
        }
    }
    t
}
