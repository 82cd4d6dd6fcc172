//! Commands on the store: install, list, info, remove, rollback, fsck.

use crate::config::{board_facts, HostConfig};
use crate::error::{CoreResult, Error};
use crate::Ctx;
use crate::Output;
use appmgr_bundle::TrustStore;
use appmgr_store::{InstallOptions, NewDeployment, RefInfo, Store};
use appmgr_types::{AppId, Arch, ErrorClass, Kind};
use serde_json::json;
use std::fmt::Write;
use std::path::Path;

pub fn open_store(g: &Ctx) -> CoreResult<(Store, HostConfig)> {
    let host = HostConfig::load(&g.config_dir)?;
    let store = Store::open(&g.state_dir, host.store_config()?)?;
    Ok((store, host))
}

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
    fn of(i: &RefInfo, action: Action, before: Option<String>) -> Change {
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

/// Where an install is: `phase` is `verifying` (signature and manifest checked, nothing
/// written yet), `importing` (`bytes` of `total` file content streamed into the store),
/// `committing` (content complete; commit, checkout and the record switch follow).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    pub phase: &'static str,
    pub bytes: u64,
    pub total: u64,
}

/// A sink that counts the file content passing through to the store.
struct Counting<'a> {
    inner: &'a mut dyn appmgr_bundle::PayloadSink,
    bytes: u64,
    total: u64,
    progress: &'a mut dyn FnMut(Progress),
}

impl appmgr_bundle::PayloadSink for Counting<'_> {
    fn directory(&mut self, p: &appmgr_bundle::RelPath) -> Result<(), appmgr_bundle::SinkError> {
        self.inner.directory(p)
    }
    fn file(
        &mut self,
        p: &appmgr_bundle::RelPath,
        executable: bool,
        size: u64,
        content: &mut dyn std::io::Read,
    ) -> Result<(), appmgr_bundle::SinkError> {
        self.inner.file(p, executable, size, content)?;
        self.bytes += size;
        (self.progress)(Progress {
            phase: "importing",
            bytes: self.bytes,
            total: self.total,
        });
        Ok(())
    }
    fn symlink(
        &mut self,
        p: &appmgr_bundle::RelPath,
        target: &str,
    ) -> Result<(), appmgr_bundle::SinkError> {
        self.inner.symlink(p, target)
    }
    fn hardlink(
        &mut self,
        p: &appmgr_bundle::RelPath,
        target: &appmgr_bundle::RelPath,
    ) -> Result<(), appmgr_bundle::SinkError> {
        self.inner.hardlink(p, target)
    }
}

/// Installs the bundle read from `f` (named `file` in messages), reporting progress.
pub fn install_from(
    g: &Ctx,
    f: std::fs::File,
    file: &Path,
    allow_downgrade: bool,
    progress: &mut dyn FnMut(Progress),
) -> CoreResult<Done> {
    let trust = TrustStore::load(&g.config_dir)?;
    let bundle = appmgr_bundle::open_file(f, file, Some(&trust))?;
    let m = bundle.manifest().clone();
    // The first thing read after the signature: a bundle for another architecture is a
    // conflict with this host (exit 6), refused before the store is even opened.
    let host_arch = Arch::host();
    if m.arch != host_arch {
        return Err(Error::new(
            ErrorClass::Conflict,
            format!(
                "{}: bundle {} is for {}, this host is {host_arch}",
                file.display(),
                m.id,
                m.arch
            ),
        ));
    }
    let (store, host) = open_store(g)?;
    // Policy first: an app that asks for more than policy grants is refused before a
    // single byte is written (exit 4, the excess named).
    let mut dropped = Vec::new();
    if m.kind == Kind::App {
        let policies = appmgr_policy::PolicySet::load_config_dir(&g.config_dir)?;
        let board = host.board(&g.config_dir)?;
        let facts = board_facts(board.as_ref())?;
        let req = appmgr_policy::Request {
            app: &m.id,
            permissions: &m.permissions,
            resources: &m.resources,
        };
        let grant = policies.check(&req, &facts)?;
        dropped = grant
            .dropped()
            .iter()
            .map(|d| format!("{}={}", d.key, appmgr_types::escape_for_display(&d.value)))
            .collect();
    }
    let lock = store.lock()?;
    let payload = m.payload.as_ref().expect("verified bundles have a payload");
    let manifest_bytes = bundle.manifest_bytes().to_vec();
    let signer = bundle.signer().unwrap_or_default().to_string();
    let new = NewDeployment {
        ref_name: m.ref_name(),
        version: m.version.clone(),
        runtime: m.runtime.clone(),
        manifest: &manifest_bytes,
        installed_size: payload.installed_size,
    };
    let total = payload.installed_size;
    progress(Progress {
        phase: "verifying",
        bytes: 0,
        total,
    });
    let report = store.install(&lock, &new, InstallOptions { allow_downgrade }, |sink| {
        let mut counting = Counting {
            inner: sink,
            bytes: 0,
            total,
            progress: &mut *progress,
        };
        let r = bundle
            .import(&mut counting)
            .map(|_| ())
            .map_err(|e| Box::new(e) as appmgr_store::ImportError);
        if r.is_ok() {
            progress(Progress {
                phase: "committing",
                bytes: total,
                total,
            });
        }
        r
    })?;
    let (action, from) = match &report.replaced {
        None => (Action::Installed, String::new()),
        Some(old) if old.version < report.version => {
            (Action::Updated, format!(" from {}", old.version))
        }
        Some(old) if old.version > report.version => {
            (Action::Downgraded, format!(" from {}", old.version))
        }
        Some(_) => (Action::Reinstalled, String::new()),
    };
    let what = action.as_str();
    let mut text = format!(
        "{what} {}{from} to {} ({} files, {} bytes; {} objects written, {} shared{})\n",
        report.ref_name,
        report.version,
        report.files,
        report.bytes,
        report.objects_written,
        report.objects_reused,
        if report.objects_repaired > 0 {
            format!(", {} repaired", report.objects_repaired)
        } else {
            String::new()
        }
    );
    for d in &dropped {
        let _ = writeln!(text, "dropped by policy: {d}");
    }
    let info = store.info(&lock, &report.ref_name)?;
    let mut j = ref_json(&info);
    j["action"] = json!(what);
    j["signed-by"] = json!(signer);
    j["dropped"] = json!(dropped);
    j["objects-written"] = json!(report.objects_written);
    j["objects-reused"] = json!(report.objects_reused);
    j["objects-repaired"] = json!(report.objects_repaired);
    j["files"] = json!(report.files);
    j["bytes"] = json!(report.bytes);
    let before = report.replaced.as_ref().map(|d| d.version.to_string());
    Ok(Done {
        output: Output::new(text, j),
        change: Change::of(&info, action, before),
    })
}

fn line(i: &RefInfo) -> String {
    let cur = i.current.as_ref();
    format!(
        "{:<8} {:<36} {:<12} {:<8} {:<10}{}",
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
    Ok(Output::new(t, ref_json(&i)))
}

pub fn remove(g: &Ctx, id: &str) -> CoreResult<Done> {
    let (store, _) = open_store(g)?;
    let lock = store.lock()?;
    let r = crate::apps::resolve_view(&appmgr_state::View::new(store.root()), id)?.ref_name;
    // A running instance would outlive its deployment: refused, under the store lock, so
    // the app is stopped first (`appmgr kill` / `stop`). Its uid, HOME and IPC objects stay
    // with the ID (the store never reuses the uid), so a reinstall finds them.
    if r.kind == Kind::App {
        let pids = crate::apps::running_pids(&r.id)?;
        if !pids.is_empty() {
            return Err(Error::new(
                ErrorClass::Conflict,
                format!(
                    "cannot remove {r}: {} is running ({} process(es), pid {}); stop it first",
                    r.id,
                    pids.len(),
                    pids[0]
                ),
            ));
        }
    }
    let i = store.remove(&lock, &r)?;
    Ok(Done {
        output: Output::new(
            format!(
                "removed {r} (highest version {} and uid {} stay recorded; HOME {} is kept)\n",
                i.highest_version,
                i.uid.map(|u| u.to_string()).unwrap_or_else(|| "-".into()),
                crate::apps::data_dir(g, &r.id).display()
            ),
            ref_json(&i),
        ),
        change: Change::of(&i, Action::Removed, None),
    })
}

pub fn rollback(g: &Ctx, id: &str) -> CoreResult<Done> {
    let (store, _) = open_store(g)?;
    let lock = store.lock()?;
    let r = crate::apps::resolve_view(&appmgr_state::View::new(store.root()), id)?.ref_name;
    let i = store.rollback(&lock, &r)?;
    let cur = i
        .current
        .as_ref()
        .map(|d| d.version.to_string())
        .unwrap_or_default();
    let prev = i
        .previous
        .as_ref()
        .map(|d| d.version.to_string())
        .unwrap_or_default();
    Ok(Done {
        output: Output::new(
            format!("rolled back {r} to {cur} (previous is now {prev})\n"),
            ref_json(&i),
        ),
        change: Change::of(&i, Action::RolledBack, None),
    })
}

/// `fsck`: the findings, or the integrity error (exit 3) carrying them when the store is
/// not clean.
pub fn fsck(g: &Ctx) -> CoreResult<Output> {
    fsck_verdict(g, fsck_report(g)?)
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

/// fsck's findings as output, clean or not (`json["clean"]` tells): what appmgrd returns.
pub fn fsck_report(g: &Ctx) -> CoreResult<Output> {
    let (store, _) = open_store(g)?;
    let lock = store.lock()?;
    let report = store.fsck(&lock)?;
    let mut t = String::new();
    for c in &report.collected {
        let _ = writeln!(t, "collected leftover: {c}");
    }
    for p in &report.problems {
        let _ = writeln!(t, "problem: {p}");
    }
    let _ = writeln!(
        t,
        "{} deployments and {} objects checked: {}",
        report.deployments_checked,
        report.objects_checked,
        if report.is_clean() {
            "clean"
        } else {
            "CORRUPT"
        }
    );
    let j = json!({
        "clean": report.is_clean(),
        "problems": report.problems.iter().map(|p| p.to_string()).collect::<Vec<_>>(),
        "collected": report.collected,
        "deployments-checked": report.deployments_checked,
        "objects-checked": report.objects_checked,
        "marked-corrupt": report.marked_corrupt,
    });
    Ok(Output::new(t, j))
}
