//! Verification of the store: records against refs and deployment directories, every
//! object reachable from a record re-hashed with the fast hash, every deployment file
//! checked to be the object's own inode with safe ownership and mode.

use crate::checksum;
use crate::error::StoreError;
use crate::fsutil::list_dir;
use crate::store::{Store, StoreLock, PREVIOUS_REF_PREFIX};
use appmgr_state::view::{MANIFEST_FILE, SBOM_FILE};
use appmgr_state::CORRUPT_MARKER;
use appmgr_types::RefName;
use ostree::{gio, glib};
use serde::Serialize;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::fmt;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// One problem found by fsck.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct FsckProblem {
    #[serde(rename = "ref")]
    pub ref_name: Option<RefName>,
    pub commit: Option<String>,
    /// The ostree object concerned (`CHECKSUM.TYPE`).
    pub object: Option<String>,
    pub path: Option<PathBuf>,
    pub problem: String,
}

impl fmt::Display for FsckProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        if let Some(r) = &self.ref_name {
            parts.push(r.to_string());
        }
        if let Some(c) = &self.commit {
            parts.push(format!("commit {c}"));
        }
        if let Some(o) = &self.object {
            parts.push(format!("object {o}"));
        }
        if let Some(p) = &self.path {
            parts.push(p.display().to_string());
        }
        write!(f, "{}: {}", parts.join(", "), self.problem)
    }
}

/// What fsck found.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct FsckReport {
    pub problems: Vec<FsckProblem>,
    /// Leftovers of interrupted operations that were collected before checking.
    pub collected: Vec<String>,
    pub deployments_checked: u64,
    pub objects_checked: u64,
    /// Deployment directories marked corrupt by this run.
    pub marked_corrupt: Vec<PathBuf>,
}

impl FsckReport {
    pub fn is_clean(&self) -> bool {
        self.problems.is_empty()
    }
}

struct Ctx<'a> {
    store: &'a Store,
    /// Object checksum → problem found when verifying it (None: good).
    content: HashMap<String, Option<String>>,
    meta_ok: HashSet<String>,
    objects_checked: u64,
}

struct Dep<'a> {
    ref_name: &'a RefName,
    commit: &'a str,
    problems: Vec<FsckProblem>,
}

impl Dep<'_> {
    fn add(&mut self, object: Option<String>, path: Option<&Path>, problem: impl Into<String>) {
        self.problems.push(FsckProblem {
            ref_name: Some(self.ref_name.clone()),
            commit: Some(self.commit.to_string()),
            object,
            path: path.map(Path::to_path_buf),
            problem: problem.into(),
        });
    }
}

fn csum_hex(v: &glib::Variant) -> String {
    hex::encode(v.fixed_array::<u8>().unwrap_or_default())
}

/// Owner root, no setuid/setgid/sticky, not writable by group or others.
fn unsafe_mode(md: &fs::Metadata) -> Option<String> {
    if md.uid() != 0 || md.gid() != 0 {
        return Some(format!(
            "owned by {}:{} instead of root",
            md.uid(),
            md.gid()
        ));
    }
    if !md.file_type().is_symlink() && md.mode() & 0o7022 != 0 {
        return Some(format!("unsafe mode {:o}", md.mode() & 0o7777));
    }
    None
}

impl Store {
    /// Collects leftovers, then verifies the whole store. Deployments with problems are
    /// marked corrupt (see [`crate::deployment_is_marked_corrupt`]); a mark is cleared
    /// when a later fsck finds the deployment good again.
    pub fn fsck(&self, lock: &StoreLock) -> Result<FsckReport, StoreError> {
        let mut report = FsckReport {
            collected: lock.collected.clone(),
            ..Default::default()
        };
        report.collected.extend(self.recover()?);
        let mut ctx = Ctx {
            store: self,
            content: HashMap::new(),
            meta_ok: HashSet::new(),
            objects_checked: 0,
        };
        let (records, bad) = self.records_lenient()?;
        for (r, e) in bad {
            let path = match &e {
                StoreError::BadRecord { path, .. } => Some(path.clone()),
                _ => None,
            };
            report.problems.push(FsckProblem {
                ref_name: Some(r),
                commit: None,
                object: None,
                path,
                problem: e.to_string(),
            });
        }
        for (r, rec) in &records {
            for (name, want) in [
                (r.to_string(), rec.current.as_ref()),
                (format!("{PREVIOUS_REF_PREFIX}{r}"), rec.previous.as_ref()),
            ] {
                let have = self.resolve_ref(&name)?;
                if have.as_deref() != want.map(|d| d.commit.as_str()) {
                    report.problems.push(FsckProblem {
                        ref_name: Some(r.clone()),
                        commit: have,
                        object: None,
                        path: None,
                        problem: format!("ref {name} disagrees with the state record"),
                    });
                }
            }
            let dir = self.deployment_dir(r, "");
            let expected: BTreeSet<String> = rec
                .commits()
                .map(|d| d.commit.clone())
                .chain(["state.json".to_string()])
                .collect();
            for name in list_dir(&dir)? {
                if !expected.contains(&name) {
                    report.problems.push(FsckProblem {
                        ref_name: Some(r.clone()),
                        commit: None,
                        object: None,
                        path: Some(dir.join(&name)),
                        problem: "not referenced by the state record".into(),
                    });
                }
            }
            for d in rec.commits() {
                report.deployments_checked += 1;
                let mut dep = Dep {
                    ref_name: r,
                    commit: &d.commit,
                    problems: Vec::new(),
                };
                ctx.check_deployment(&mut dep);
                let ddir = self.deployment_dir(r, &d.commit);
                let marker = ddir.join(CORRUPT_MARKER);
                if dep.problems.is_empty() {
                    if marker.exists() {
                        crate::generation::begin(self.root())?;
                        fs::remove_file(&marker)
                            .map_err(StoreError::io("remove corrupt mark", &marker))?;
                        crate::generation::end(self.root());
                    }
                } else if ddir.is_dir() {
                    let text: String = dep.problems.iter().map(|p| format!("{p}\n")).collect();
                    crate::generation::begin(self.root())?;
                    fs::write(&marker, text)
                        .map_err(StoreError::io("mark deployment corrupt", &marker))?;
                    crate::generation::end(self.root());
                    report.marked_corrupt.push(ddir);
                }
                report.problems.extend(dep.problems);
            }
        }
        report.objects_checked = ctx.objects_checked;
        Ok(report)
    }
}

impl Ctx<'_> {
    fn check_meta(&mut self, dep: &mut Dep, ty: ostree::ObjectType, csum: &str) -> bool {
        let key = format!("{csum}.{}", ostree::object_type_to_string(ty));
        if self.meta_ok.contains(&key) {
            return true;
        }
        self.objects_checked += 1;
        match self
            .store
            .repo()
            .fsck_object(ty, csum, None::<&gio::Cancellable>)
        {
            Ok(()) => {
                self.meta_ok.insert(key);
                true
            }
            Err(e) => {
                dep.add(
                    Some(key),
                    None,
                    format!("metadata object is missing or corrupt: {e}"),
                );
                false
            }
        }
    }

    fn check_deployment(&mut self, dep: &mut Dep) {
        // (the signed manifest and the SBOM beside `files/` are compared with the copies in
        // the commit's metadata, which the commit's checksum covers)
        let store = self.store;
        let ddir = store.deployment_dir(dep.ref_name, dep.commit);
        let commit = dep.commit.to_string();
        if !self.check_meta(dep, ostree::ObjectType::Commit, &commit) {
            return;
        }
        let v = match store
            .repo()
            .load_variant(ostree::ObjectType::Commit, &commit)
        {
            Ok(v) => v,
            Err(e) => {
                dep.add(
                    Some(format!("{commit}.commit")),
                    None,
                    format!("cannot load commit: {e}"),
                );
                return;
            }
        };
        check_beside_files(dep, &ddir, &v.child_value(0));
        let tree = csum_hex(&v.child_value(6));
        let meta = csum_hex(&v.child_value(7));
        let files = ddir.join("files");
        if !files.is_dir() {
            dep.add(None, Some(&files), "deployment directory is missing");
            return;
        }
        self.walk(dep, &tree, &meta, &files);
    }

    fn walk(&mut self, dep: &mut Dep, tree: &str, meta: &str, dir: &Path) {
        if !self.check_meta(dep, ostree::ObjectType::DirTree, tree)
            || !self.check_meta(dep, ostree::ObjectType::DirMeta, meta)
        {
            return;
        }
        match fs::symlink_metadata(dir) {
            Ok(md) if md.is_dir() => {
                if let Some(p) = unsafe_mode(&md) {
                    dep.add(None, Some(dir), p);
                }
            }
            Ok(_) => {
                dep.add(None, Some(dir), "is not a directory");
                return;
            }
            Err(e) => {
                dep.add(None, Some(dir), format!("cannot inspect: {e}"));
                return;
            }
        }
        let v = match self
            .store
            .repo()
            .load_variant(ostree::ObjectType::DirTree, tree)
        {
            Ok(v) => v,
            Err(e) => {
                dep.add(
                    Some(format!("{tree}.dirtree")),
                    None,
                    format!("cannot load: {e}"),
                );
                return;
            }
        };
        let mut expected = BTreeSet::new();
        let files = v.child_value(0);
        for i in 0..files.n_children() {
            let f = files.child_value(i);
            let name = f.child_value(0).str().unwrap_or_default().to_string();
            let csum = csum_hex(&f.child_value(1));
            self.check_file(dep, &csum, &dir.join(&name));
            expected.insert(name);
        }
        let dirs = v.child_value(1);
        for i in 0..dirs.n_children() {
            let d = dirs.child_value(i);
            let name = d.child_value(0).str().unwrap_or_default().to_string();
            let sub_tree = csum_hex(&d.child_value(1));
            let sub_meta = csum_hex(&d.child_value(2));
            self.walk(dep, &sub_tree, &sub_meta, &dir.join(&name));
            expected.insert(name);
        }
        match list_dir(dir) {
            Ok(names) => {
                for n in names {
                    if !expected.contains(&n) {
                        dep.add(None, Some(&dir.join(&n)), "unexpected entry in deployment");
                    }
                }
            }
            Err(e) => dep.add(None, Some(dir), e.to_string()),
        }
    }

    fn check_file(&mut self, dep: &mut Dep, csum: &str, path: &Path) {
        let obj = self.store.object_path(csum, "file");
        let key = format!("{csum}.file");
        if !self.content.contains_key(csum) {
            self.objects_checked += 1;
            let problem = match checksum::checksum_bare_object(&obj) {
                Ok(c) if c == csum => fs::symlink_metadata(&obj)
                    .ok()
                    .and_then(|md| unsafe_mode(&md)),
                Ok(_) => Some("object content does not match its checksum".to_string()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    Some("object is missing".to_string())
                }
                Err(e) => Some(format!("cannot verify object: {e}")),
            };
            self.content.insert(csum.to_string(), problem);
        }
        if let Some(Some(p)) = self.content.get(csum) {
            let p = p.clone();
            dep.add(Some(key.clone()), Some(&obj), p);
        }
        let (Ok(o), d) = (fs::symlink_metadata(&obj), fs::symlink_metadata(path)) else {
            return;
        };
        match d {
            Ok(d) if d.dev() == o.dev() && d.ino() == o.ino() => {}
            // libostree copies empty files instead of linking them (a shared empty inode
            // would let one writer change them all); they carry no data to compare.
            Ok(d) if o.is_file() && o.len() == 0 && d.is_file() && d.len() == 0 => {
                if let Some(p) = unsafe_mode(&d) {
                    dep.add(Some(key), Some(path), p);
                } else if d.mode() != o.mode() {
                    dep.add(Some(key), Some(path), "empty file has the wrong mode");
                }
            }
            Ok(_) => dep.add(
                Some(key),
                Some(path),
                "deployment file is not the object's inode (modified or replaced)",
            ),
            Err(e) => dep.add(Some(key), Some(path), format!("cannot inspect: {e}")),
        }
    }
}

/// The files a deployment keeps beside its tree (the signed manifest, the SBOM) must be
/// byte for byte the copies in the commit's metadata: `sbom` and `permissions` answer from
/// them. Read without following symlinks.
fn check_beside_files(dep: &mut Dep, ddir: &Path, commit_meta: &glib::Variant) {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let meta = glib::VariantDict::new(Some(commit_meta));
    for (key, file) in [
        ("appmgr.manifest", MANIFEST_FILE),
        ("appmgr.sbom", SBOM_FILE),
    ] {
        let want = meta
            .lookup_value(key, Some(glib::VariantTy::BYTE_STRING))
            .and_then(|v| v.fixed_array::<u8>().ok().map(<[u8]>::to_vec));
        let p = ddir.join(file);
        let have = fs::OpenOptions::new()
            .read(true)
            .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
            .open(&p)
            .and_then(|f| {
                let mut b = Vec::new();
                f.take(8 << 20).read_to_end(&mut b)?;
                Ok(b)
            });
        let problem = match (&want, have) {
            (None, Err(e)) if e.kind() == std::io::ErrorKind::NotFound => None,
            (Some(w), Ok(h)) if *w == h => None,
            (Some(_), Err(e)) if e.kind() == std::io::ErrorKind::NotFound => {
                Some(format!("{file} is missing"))
            }
            (_, Err(e)) => Some(format!("{file} cannot be read: {e}")),
            (None, Ok(_)) => Some(format!("{file} is there, but the commit has none")),
            (Some(_), Ok(_)) => Some(format!("{file} differs from the copy in the commit")),
        };
        if let Some(problem) = problem {
            dep.add(None, Some(&p), problem);
        }
    }
}
