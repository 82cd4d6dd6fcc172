//! Helpers shared by the store's integration tests: synthetic payloads fed straight into
//! the store's sink (no bundle file needed), and snapshots of everything on disk so a
//! refused operation can be shown to have changed nothing.
#![allow(dead_code)]

use appmgr_bundle::payload::{PayloadSink, RelPath};
use appmgr_store::{
    ImportError, InstallOptions, InstallReport, NewDeployment, Store, StoreConfig, StoreError,
    StoreLock,
};
use appmgr_types::{RefName, RuntimeRef, Version};
use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

#[derive(Clone, Debug)]
pub enum Entry {
    Dir(String),
    File(String, bool, Vec<u8>),
    Symlink(String, String),
    Hardlink(String, String),
}

#[derive(Clone, Debug, Default)]
pub struct Payload {
    pub entries: Vec<Entry>,
}

/// Deterministic pseudo-random bytes.
pub fn bytes(seed: u64, len: usize) -> Vec<u8> {
    appmgr_testkit::noise(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15), len)
}

impl Payload {
    /// A small app-like tree: `bin/NAME` (executable), `share/NAME/data-N`, one symlink,
    /// one hardlink, one empty file, one file shared by every payload (`share/common`).
    /// Files 0..keep are the same for every `variant`, the rest differ.
    pub fn app(name: &str, variant: u64, nfiles: usize, keep: usize) -> Payload {
        let mut e = vec![
            Entry::Dir("bin".into()),
            Entry::File(
                format!("bin/{name}"),
                true,
                format!("#!/bin/sh\necho {name} {variant}\n").into_bytes(),
            ),
            Entry::Dir("share".into()),
            Entry::File(
                "share/common".into(),
                false,
                b"shared by everybody\n".to_vec(),
            ),
            Entry::Dir(format!("share/{name}")),
            Entry::File(format!("share/{name}/empty"), false, Vec::new()),
        ];
        for i in 0..nfiles {
            let seed = if i < keep {
                1000 + i as u64
            } else {
                variant * 100_000 + i as u64
            };
            let len = 512 + (i * 997) % 9000;
            e.push(Entry::File(
                format!("share/{name}/data-{i}"),
                false,
                bytes(seed, len),
            ));
        }
        e.push(Entry::Dir("lib".into()));
        e.push(Entry::File("lib/libx.so.1".into(), false, bytes(7, 3000)));
        e.push(Entry::Symlink("lib/libx.so".into(), "libx.so.1".into()));
        e.push(Entry::Hardlink("bin/alias".into(), format!("bin/{name}")));
        Payload { entries: e }
    }

    pub fn with(mut self, e: Entry) -> Payload {
        self.entries.push(e);
        self
    }

    pub fn size(&self) -> u64 {
        self.entries
            .iter()
            .map(|e| match e {
                Entry::File(_, _, c) => c.len() as u64,
                _ => 0,
            })
            .sum()
    }

    pub fn feed(&self, sink: &mut dyn PayloadSink) -> Result<(), ImportError> {
        let p = |s: &str| RelPath::new(s).map_err(ImportError::from);
        for e in &self.entries {
            match e {
                Entry::Dir(d) => sink.directory(&p(d)?)?,
                Entry::File(f, x, c) => {
                    let mut r: &[u8] = c;
                    sink.file(&p(f)?, *x, c.len() as u64, &mut r as &mut dyn Read)?
                }
                Entry::Symlink(l, t) => sink.symlink(&p(l)?, t)?,
                Entry::Hardlink(l, t) => sink.hardlink(&p(l)?, &p(t)?)?,
            }
        }
        Ok(())
    }
}

pub fn app_ref(id: &str) -> RefName {
    format!("app/{id}/x86_64/stable").parse().unwrap()
}

pub fn runtime_ref(id: &str) -> RefName {
    format!("runtime/{id}/x86_64/1").parse().unwrap()
}

pub fn rt(id: &str) -> RuntimeRef {
    format!("{id}/x86_64/1").parse().unwrap()
}

pub fn v(s: &str) -> Version {
    Version::new(s).unwrap()
}

pub fn manifest_for(r: &RefName, version: &str) -> Vec<u8> {
    format!(
        "id = \"{}\"\nkind = \"{}\"\nversion = \"{version}\"\n# signed bytes\n",
        r.id, r.kind
    )
    .into_bytes()
}

pub fn install(
    store: &Store,
    lock: &StoreLock,
    r: &RefName,
    version: &str,
    runtime: Option<RuntimeRef>,
    payload: &Payload,
    allow_downgrade: bool,
) -> Result<InstallReport, StoreError> {
    let manifest = manifest_for(r, version);
    let new = NewDeployment {
        ref_name: r.clone(),
        version: v(version),
        runtime,
        manifest: &manifest,
        sbom: None,
        installed_size: payload.size(),
    };
    store.install(lock, &new, InstallOptions { allow_downgrade }, |sink| {
        payload.feed(sink)
    })
}

pub fn open(root: &Path) -> Store {
    Store::open(root, StoreConfig::default()).unwrap()
}

/// Everything on disk that an operation could change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    pub records: BTreeMap<String, String>,
    pub refs: BTreeMap<String, String>,
    /// Every path under deploy/ with its inode number and mode.
    pub deploy: BTreeMap<String, (u64, u32)>,
    pub objects: BTreeSet<String>,
    pub staging: Vec<String>,
    /// `STATE/uids.json`, the uid high-water mark.
    pub uids: Option<String>,
}

fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, (u64, u32)>) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd {
        let e = e.unwrap();
        let p = e.path();
        let md = std::fs::symlink_metadata(&p).unwrap();
        let rel = p.strip_prefix(root).unwrap().display().to_string();
        out.insert(rel, (md.ino(), md.mode()));
        if md.is_dir() {
            walk(root, &p, out);
        }
    }
}

pub fn snapshot(root: &Path) -> Snapshot {
    let mut deploy = BTreeMap::new();
    walk(&root.join("deploy"), &root.join("deploy"), &mut deploy);
    let mut records = BTreeMap::new();
    for (k, _) in deploy.iter().filter(|(k, _)| k.ends_with("state.json")) {
        records.insert(
            k.clone(),
            std::fs::read_to_string(root.join("deploy").join(k)).unwrap(),
        );
    }
    let mut refs_all = BTreeMap::new();
    walk(
        &root.join("repo/refs/heads"),
        &root.join("repo/refs/heads"),
        &mut refs_all,
    );
    let refs = refs_all
        .into_iter()
        .filter(|(_, (_, mode))| mode & 0o170000 == 0o100000)
        .map(|(k, _)| {
            let c = std::fs::read_to_string(root.join("repo/refs/heads").join(&k)).unwrap();
            (k, c.trim().to_string())
        })
        .collect();
    let mut objs = BTreeMap::new();
    walk(
        &root.join("repo/objects"),
        &root.join("repo/objects"),
        &mut objs,
    );
    let objects = objs
        .into_iter()
        .filter(|(k, _)| k.contains('.'))
        .map(|(k, _)| k)
        .collect();
    let staging = std::fs::read_dir(root.join("staging"))
        .map(|rd| {
            rd.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    Snapshot {
        records,
        refs,
        deploy,
        objects,
        staging,
        uids: std::fs::read_to_string(root.join("uids.json")).ok(),
    }
}

/// Our fsck and libostree's own (`ostree fsck`) both find nothing wrong.
pub fn assert_clean(store: &Store, lock: &StoreLock) {
    let report = store.fsck(lock).unwrap();
    assert!(report.is_clean(), "fsck problems: {:#?}", report.problems);
    ostree_fsck(&store.root().join("repo"));
}

pub fn ostree_fsck(repo: &Path) {
    let out = std::process::Command::new("ostree")
        .arg("fsck")
        .arg(format!("--repo={}", repo.display()))
        .output()
        .expect("run ostree fsck");
    assert!(
        out.status.success(),
        "ostree fsck failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

pub fn tempdir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("appmgr-store-test")
        .tempdir()
        .unwrap()
}

pub fn state(root: &Path) -> PathBuf {
    root.join("state")
}
