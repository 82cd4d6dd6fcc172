//! Where the cgroup trees are mounted, and the plan (paths and values) for one app.

use crate::fsutil;
use crate::spec::{CgroupSpec, Controller, Value};
use crate::{Cgroup, CgroupError, CgroupStats, CgroupVersion};
use std::collections::BTreeMap;
use std::fs;
use std::path::{Component, Path, PathBuf};

/// The default parent of the app cgroups, relative to the hierarchy root. Under systemd,
/// appmgrd should be given a delegated subtree (`Delegate=yes`) and use a parent inside
/// it instead, because systemd owns the top of the tree.
pub const DEFAULT_PARENT: &str = "appmgr.slice";

/// The mounted cgroup hierarchies appmgr uses and the parent under which app cgroups live.
/// The app cgroup of `org.example.App` is `ROOT/PARENT/app-org.example.App.scope`: on v2
/// one directory, on v1 that same relative path in each controller's hierarchy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hierarchy {
    version: CgroupVersion,
    /// v2: every controller maps to the one root; v1: each mounted controller to its mount.
    mounts: BTreeMap<Controller, PathBuf>,
    parent: PathBuf,
}

/// Every file write and directory creation needed for one app, with absolute paths.
/// Pure data: built without touching the file system.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub version: CgroupVersion,
    /// The app's cgroup directories (one on v2, one per distinct hierarchy on v1); their
    /// parents are created as needed.
    pub dirs: Vec<PathBuf>,
    /// v2: `cgroup.subtree_control` files from the root down to the parent, and the
    /// controllers to enable in each (intersected with what the kernel offers there).
    pub enable: Vec<(PathBuf, Vec<Controller>)>,
    /// Values to write, in order.
    pub writes: Vec<PlannedWrite>,
    /// The `cgroup.procs` files the launcher writes its own pid into before exec.
    pub procs_files: Vec<PathBuf>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedWrite {
    pub path: PathBuf,
    pub value: Value,
    pub optional: bool,
}

/// Controllers without which appmgr refuses to run apps on v1: the limits it promises
/// could not be enforced.
const V1_REQUIRED: &[Controller] = &[Controller::Memory, Controller::Cpu, Controller::Pids];

fn check_parent(parent: &Path) -> Result<PathBuf, CgroupError> {
    let ok = !parent.as_os_str().is_empty()
        && parent
            .components()
            .all(|c| matches!(c, Component::Normal(_)));
    if ok {
        Ok(parent.to_path_buf())
    } else {
        Err(CgroupError::InvalidParent {
            path: parent.to_path_buf(),
        })
    }
}

impl Hierarchy {
    /// A v2 (unified) hierarchy mounted at `root` (normally `/sys/fs/cgroup`).
    pub fn v2(root: impl Into<PathBuf>, parent: impl AsRef<Path>) -> Result<Self, CgroupError> {
        let root = root.into();
        Ok(Hierarchy {
            version: CgroupVersion::V2,
            mounts: Controller::ALL.iter().map(|c| (*c, root.clone())).collect(),
            parent: check_parent(parent.as_ref())?,
        })
    }

    /// v1 hierarchies: controller → mount point (co-mounted controllers share one).
    pub fn v1(
        mounts: impl IntoIterator<Item = (Controller, PathBuf)>,
        parent: impl AsRef<Path>,
    ) -> Result<Self, CgroupError> {
        let mounts: BTreeMap<_, _> = mounts.into_iter().collect();
        if let Some(c) = V1_REQUIRED.iter().find(|c| !mounts.contains_key(c)) {
            return Err(CgroupError::NoHierarchy {
                reason: format!("the v1 {c} controller is not mounted"),
            });
        }
        Ok(Hierarchy {
            version: CgroupVersion::V1,
            mounts,
            parent: check_parent(parent.as_ref())?,
        })
    }

    /// Finds the hierarchies from `/proc/self/mountinfo`: a cgroup2 mount that offers the
    /// memory, cpu and pids controllers is used; otherwise the v1 controller mounts.
    pub fn detect(parent: impl AsRef<Path>) -> Result<Self, CgroupError> {
        let p = Path::new("/proc/self/mountinfo");
        Self::from_mountinfo(&fsutil::read(p)?, parent)
    }

    /// [`Hierarchy::detect`] on given mountinfo text (for tests and odd setups).
    pub fn from_mountinfo(mountinfo: &str, parent: impl AsRef<Path>) -> Result<Self, CgroupError> {
        let mut v1 = BTreeMap::new();
        for line in mountinfo.lines() {
            let Some((pre, post)) = line.split_once(" - ") else {
                continue;
            };
            let Some(mnt) = pre.split(' ').nth(4) else {
                continue;
            };
            let mnt = PathBuf::from(unescape_mountinfo(mnt));
            let mut post = post.split(' ');
            let (Some(fstype), _, Some(opts)) = (post.next(), post.next(), post.next()) else {
                continue;
            };
            match fstype {
                "cgroup2" => {
                    let ctrl =
                        fsutil::read_opt(&mnt.join("cgroup.controllers"))?.unwrap_or_default();
                    let have: Vec<&str> = ctrl.split_whitespace().collect();
                    if ["memory", "cpu", "pids"].iter().all(|c| have.contains(c)) {
                        return Self::v2(mnt, parent);
                    }
                }
                "cgroup" => {
                    for o in opts.split(',') {
                        if let Some(c) = Controller::ALL.iter().find(|c| c.as_str() == o) {
                            v1.entry(*c).or_insert_with(|| mnt.clone());
                        }
                    }
                }
                _ => {}
            }
        }
        if v1.is_empty() {
            return Err(CgroupError::NoHierarchy {
                reason: "no cgroup2 mount with memory, cpu and pids, and no v1 controllers".into(),
            });
        }
        Self::v1(v1, parent)
    }

    pub fn version(&self) -> CgroupVersion {
        self.version
    }

    /// The parent, relative to each hierarchy root.
    pub fn parent(&self) -> &Path {
        &self.parent
    }

    /// The mount point of `c`, if it is available.
    pub fn mount(&self, c: Controller) -> Option<&Path> {
        self.mounts.get(&c).map(PathBuf::as_path)
    }

    /// The directory of `leaf` in `c`'s hierarchy.
    pub(crate) fn dir(&self, c: Controller, leaf: &str) -> Option<PathBuf> {
        self.mounts.get(&c).map(|m| m.join(&self.parent).join(leaf))
    }

    /// The path `proc_cgroup` (the text of `/proc/PID/cgroup`) gives for controller `c`'s
    /// hierarchy (v2: the unified line).
    fn path_in<'t>(&self, proc_cgroup: &'t str, c: Controller) -> Option<&'t str> {
        proc_cgroup.lines().find_map(|l| {
            let mut f = l.splitn(3, ':');
            let (_, ctrls, path) = (f.next()?, f.next()?, f.next()?);
            let hit = match self.version {
                CgroupVersion::V2 => ctrls.is_empty(),
                CgroupVersion::V1 => ctrls.split(',').any(|x| x == c.as_str()),
            };
            hit.then_some(path)
        })
    }

    /// The `cgroup.procs` files of the cgroups that `proc_cgroup` (the text of
    /// `/proc/PID/cgroup`) names, one per distinct hierarchy appmgr uses. Pure.
    pub fn procs_files_of(&self, proc_cgroup: &str) -> Vec<PathBuf> {
        let mut out: Vec<PathBuf> = Vec::new();
        let mut seen: Vec<&Path> = Vec::new();
        for (c, m) in &self.mounts {
            if seen.contains(&m.as_path()) {
                continue;
            }
            let rel = self.path_in(proc_cgroup, *c);
            if let Some(rel) = rel {
                seen.push(m);
                out.push(m.join(rel.trim_start_matches('/')).join("cgroup.procs"));
            }
        }
        out
    }

    /// The app whose cgroup `proc_cgroup` (the text of `/proc/PID/cgroup`, read in the
    /// host's cgroup namespace) places the process in: in every hierarchy appmgr uses the
    /// process must be in `/PARENT/app-ID.scope` of the same app, or a cgroup below it.
    /// None for any other process (the launcher's `launch-ID.scope`, a system service, a
    /// process in two apps' cgroups). Pure.
    pub fn app_of_proc_cgroup(&self, proc_cgroup: &str) -> Option<appmgr_types::AppId> {
        let mut app: Option<appmgr_types::AppId> = None;
        let mut seen: Vec<&Path> = Vec::new();
        for (c, m) in &self.mounts {
            if seen.contains(&m.as_path()) {
                continue;
            }
            seen.push(m);
            let rel = self.path_in(proc_cgroup, *c)?;
            let below = Path::new(rel.strip_prefix('/')?)
                .strip_prefix(&self.parent)
                .ok()?;
            let leaf = below.components().next()?.as_os_str().to_str()?;
            let this = crate::spec::app_of_leaf(leaf)?;
            match &app {
                Some(a) if *a != this => return None,
                _ => app = Some(this),
            }
        }
        app
    }

    /// [`Hierarchy::procs_files_of`] for the calling process: the `cgroup.procs` files of
    /// the cgroups it is in.
    pub fn current_procs_files(&self) -> Result<Vec<PathBuf>, CgroupError> {
        let path = PathBuf::from("/proc/self/cgroup");
        let text =
            std::fs::read_to_string(&path).map_err(|source| CgroupError::Read { path, source })?;
        Ok(self.procs_files_of(&text))
    }

    /// The distinct mounts, in controller order (v2: one).
    fn distinct_mounts(&self) -> Vec<&Path> {
        let mut v: Vec<&Path> = Vec::new();
        for m in self.mounts.values() {
            if !v.contains(&m.as_path()) {
                v.push(m);
            }
        }
        v
    }

    /// The launcher's sibling `leaf` (`launch-ID.scope`, init's cgroup) in the hierarchies
    /// it is made in: on v2 the one directory; on v1 the memory and pids hierarchies only.
    /// Those keep init's task and memory out of the app's limits, and the app, forked by
    /// init before it joins its own cgroups, out of its caller's. The other v1 controllers
    /// have nothing to keep apart for a sleeping init, and each hierarchy costs a launch a
    /// `mkdir`, a migration and an `rmdir` (docs/cgroup.md).
    pub(crate) fn helper_dirs(&self, leaf: &str) -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = Vec::new();
        for c in [Controller::Memory, Controller::Pids] {
            if let Some(d) = self.dir(c, leaf) {
                if !v.contains(&d) {
                    v.push(d);
                }
            }
        }
        v
    }

    /// The plan for `spec`: pure, no I/O.
    pub fn plan(&self, spec: &CgroupSpec) -> Result<Plan, CgroupError> {
        let leaf = &spec.name;
        let dirs: Vec<PathBuf> = self
            .distinct_mounts()
            .iter()
            .map(|m| m.join(&self.parent).join(leaf))
            .collect();
        let mut enable = Vec::new();
        let mut writes = Vec::new();
        if self.version == CgroupVersion::V2 {
            // cgroup-v2.rst "Top-down Constraint": a controller can be enabled in a child
            // only if the parent enabled it in its subtree_control, so every level from
            // the root down to the parent enables them.
            let root = &self.mounts[&Controller::Memory];
            let mut level = root.clone();
            enable.push((
                level.join("cgroup.subtree_control"),
                Controller::V2.to_vec(),
            ));
            for c in self.parent.components() {
                level.push(c);
                enable.push((
                    level.join("cgroup.subtree_control"),
                    Controller::V2.to_vec(),
                ));
            }
        } else if let Some(cpuset) = self.mounts.get(&Controller::Cpuset) {
            // v1: every cpuset level between the root and the app needs cpus and mems
            // before the app's own can be set.
            let mut level = cpuset.clone();
            for c in self.parent.components() {
                level.push(c);
                for f in ["cpuset.cpus", "cpuset.mems"] {
                    writes.push(PlannedWrite {
                        path: level.join(f),
                        value: Value::FromParent,
                        optional: false,
                    });
                }
            }
        }
        for s in spec.settings(self.version) {
            let Some(dir) = self.dir(s.controller, leaf) else {
                if s.controller == Controller::Cpuset && spec.limits.cpus.is_none() {
                    continue;
                }
                return Err(CgroupError::NoHierarchy {
                    reason: format!("the {} controller is not mounted", s.controller),
                });
            };
            writes.push(PlannedWrite {
                path: dir.join(s.file),
                value: s.value,
                optional: s.optional,
            });
        }
        let procs_files = dirs.iter().map(|d| d.join("cgroup.procs")).collect();
        Ok(Plan {
            version: self.version,
            dirs,
            enable,
            writes,
            procs_files,
        })
    }

    /// Creates the app's cgroup and applies its limits. Refused with
    /// [`CgroupError::InUse`] if the cgroup exists and has processes (the app is running);
    /// an empty leftover is replaced. On failure, directories created here are removed.
    ///
    /// A launch pays for every file operation here, so a directory this call made itself
    /// gets only the writes that change something: a value the kernel gives every new
    /// cgroup (`fresh_default`) is not written again. A reused leftover gets them all.
    pub fn create(&self, spec: &CgroupSpec) -> Result<Cgroup, CgroupError> {
        let plan = self.plan(spec)?;
        // Init lives in a sibling without limits, so that the app's own cgroup counts and
        // limits the app's tasks only; on v1 only where that matters (`helper_dirs`).
        let helper = self.plan(&CgroupSpec {
            name: crate::spec::helper_leaf_name(&spec.name),
            limits: Default::default(),
            devices: None,
        })?;
        let keep = self.helper_dirs(&crate::spec::helper_leaf_name(&spec.name));
        let helper = Plan {
            dirs: helper
                .dirs
                .into_iter()
                .filter(|d| same_dir_in(&keep, d))
                .collect(),
            writes: helper
                .writes
                .into_iter()
                .filter(|w| w.path.parent().is_some_and(|p| same_dir_in(&keep, p)))
                .collect(),
            ..helper
        };
        let cg = self.handle(&spec.name);
        let dirs: Vec<&PathBuf> = plan.dirs.iter().chain(&helper.dirs).collect();
        let mut created = Vec::new();
        let r = (|| {
            // First every directory that does not exist yet; one that does is looked at
            // only once all are known, so that a running app's is never touched.
            let mut existing = Vec::new();
            for d in &dirs {
                if make_dir(d)? {
                    created.push(d.to_path_buf());
                } else {
                    existing.push(*d);
                }
            }
            for d in &existing {
                if !fsutil::read_pids(&d.join("cgroup.procs"))?.is_empty() {
                    return Err(CgroupError::InUse {
                        path: cg.path().to_path_buf(),
                    });
                }
            }
            // An empty leftover is replaced, not reused: a v2 device program stays
            // attached to a cgroup until it is removed. One that cannot be removed (it
            // still has child cgroups) is reused, and gets every write.
            for d in existing {
                let _ = fs::remove_dir(d);
                if make_dir(d)? {
                    created.push(d.to_path_buf());
                }
            }
            let fresh = |w: &PlannedWrite| {
                w.path.parent().is_some_and(|p| same_dir_in(&created, p))
                    && fresh_default(self.version, &w.path, &w.value)
            };
            enable_controllers(&plan.enable)?;
            let writes: Vec<PlannedWrite> =
                plan.writes.iter().filter(|w| !fresh(w)).cloned().collect();
            apply_writes(&writes)?;
            // The helper gets default values only (no limits): a file the kernel does not
            // offer there is skipped.
            let defaults: Vec<PlannedWrite> = helper
                .writes
                .iter()
                .filter(|w| !fresh(w))
                .cloned()
                .map(|w| PlannedWrite {
                    optional: true,
                    ..w
                })
                .collect();
            apply_writes(&defaults)
        })();
        if let Err(e) = r {
            for d in created.iter().rev() {
                let _ = fs::remove_dir(d);
            }
            return Err(e);
        }
        Ok(cg)
    }

    /// The handle of an app's cgroup, whether or not it exists (for `ps`, `kill`,
    /// re-applying limits, removing leftovers).
    pub fn cgroup(&self, app: &appmgr_types::AppId) -> Cgroup {
        self.handle(&crate::spec::leaf_name(app))
    }

    fn handle(&self, leaf: &str) -> Cgroup {
        Cgroup::new(self.clone(), leaf.to_string())
    }

    /// appmgr's live app cgroups (every `app-*.scope` under the parent) with their stats.
    pub fn list(&self) -> Result<Vec<CgroupStats>, CgroupError> {
        let base = self.mounts[&Controller::Memory].join(&self.parent);
        let rd = match fs::read_dir(&base) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => return Err(CgroupError::Read { path: base, source }),
        };
        let mut names: Vec<String> = rd
            .filter_map(Result::ok)
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|n| crate::spec::app_of_leaf(n).is_some())
            .collect();
        names.sort();
        names.iter().map(|n| self.handle(n).stats()).collect()
    }
}

/// Makes the directory `d` (its parents as needed): `true` if this call made it, `false`
/// if it was there already.
fn make_dir(d: &Path) -> Result<bool, CgroupError> {
    let mut made = fs::create_dir(d);
    if matches!(&made, Err(e) if e.kind() == std::io::ErrorKind::NotFound) {
        if let Some(p) = d.parent() {
            fs::create_dir_all(p).map_err(|source| CgroupError::Create {
                path: p.to_path_buf(),
                source,
            })?;
        }
        made = fs::create_dir(d);
    }
    match made {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
        Err(source) => Err(CgroupError::Create {
            path: d.to_path_buf(),
            source,
        }),
    }
}

/// Whether every new cgroup of `version` already holds `value` in the file `path` names,
/// as the kernel creates it: the "no limit" values of the limits appmgr sets. (A fresh v1
/// cpuset is empty, so its copied `cpus`/`mems` are always written; so is every device
/// rule and `memory.oom.group`.) A privileged test checks the list against the kernel.
pub(crate) fn fresh_default(version: CgroupVersion, path: &Path, value: &Value) -> bool {
    let Value::Text(v) = value else {
        return false;
    };
    let file = path.file_name().and_then(|f| f.to_str()).unwrap_or("");
    let defaults: &[(&str, &str)] = match version {
        CgroupVersion::V1 => &[
            ("memory.limit_in_bytes", "-1"),
            ("memory.soft_limit_in_bytes", "-1"),
            ("memory.memsw.limit_in_bytes", "-1"),
            ("cpu.cfs_period_us", "100000"),
            ("cpu.cfs_quota_us", "-1"),
            ("cpu.shares", "1024"),
            ("pids.max", "max"),
        ],
        CgroupVersion::V2 => &[
            ("memory.max", "max"),
            ("memory.high", "max"),
            ("memory.swap.max", "max"),
            ("cpu.max", "max 100000"),
            ("cpu.weight", "100"),
            ("pids.max", "max"),
            ("cpuset.cpus", ""),
        ],
    };
    defaults.contains(&(file, v.as_str()))
}

pub(crate) fn apply_writes(writes: &[PlannedWrite]) -> Result<(), CgroupError> {
    for w in writes {
        if w.optional && !w.path.exists() {
            continue;
        }
        let value = match &w.value {
            Value::Text(t) => t.clone(),
            Value::FromParent => {
                let name = w.path.file_name().unwrap_or_default();
                let from = w
                    .path
                    .parent()
                    .and_then(Path::parent)
                    .map(|p| p.join(name))
                    .unwrap_or_default();
                fsutil::read(&from)?.trim().to_string()
            }
        };
        fsutil::write(&w.path, &value)?;
    }
    Ok(())
}

fn enable_controllers(enable: &[(PathBuf, Vec<Controller>)]) -> Result<(), CgroupError> {
    for (file, want) in enable {
        let dir = file.parent().unwrap_or(Path::new("/"));
        let offered = fsutil::read_opt(&dir.join("cgroup.controllers"))?.unwrap_or_default();
        let enabled = fsutil::read_opt(file)?.unwrap_or_default();
        let offered: Vec<&str> = offered.split_whitespace().collect();
        let enabled: Vec<&str> = enabled.split_whitespace().collect();
        let add: Vec<String> = want
            .iter()
            .map(|c| c.as_str())
            .filter(|c| offered.contains(c) && !enabled.contains(c))
            .map(|c| format!("+{c}"))
            .collect();
        if !add.is_empty() {
            fsutil::write(file, &add.join(" "))?;
        }
    }
    Ok(())
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape_mountinfo(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..=i + 3].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Whether `dir` is one of `dirs`, compared as the strings they are: the planned paths are
/// all built the same way, and `Path`'s own comparison, which parses both into components
/// from the back, was a tenth of `appmgr run`'s instructions here (every planned write
/// against every directory).
fn same_dir_in(dirs: &[PathBuf], dir: &Path) -> bool {
    dirs.iter().any(|d| d.as_os_str() == dir.as_os_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID: &str = "\
24 1 0:22 / /sys rw - sysfs sysfs rw
30 24 0:26 / /sys/fs/cgroup rw - tmpfs tmpfs rw,mode=755
31 30 0:27 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw
33 30 0:29 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct
34 30 0:30 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory
35 30 0:31 / /sys/fs/cgroup/pids rw - cgroup cgroup rw,pids
36 30 0:32 / /sys/fs/cgroup/cpuset rw - cgroup cgroup rw,cpuset
37 30 0:33 / /sys/fs/cgroup/freezer rw - cgroup cgroup rw,freezer
38 30 0:34 / /sys/fs/cgroup/systemd rw - cgroup cgroup rw,xattr,name=systemd
";

    /// Only the "no limit" values are left out of a new cgroup: a limit, a copied cpuset, a
    /// device rule or `memory.oom.group` is always written, on both versions.
    #[test]
    fn only_the_values_of_a_new_cgroup_are_left_out() {
        use CgroupVersion::{V1, V2};
        let t = |s: &str| Value::Text(s.into());
        let at = |f: &str| PathBuf::from("/sys/fs/cgroup/x/app-a.b.C.scope").join(f);
        for (v, f, val) in [
            (V1, "memory.limit_in_bytes", "-1"),
            (V1, "cpu.shares", "1024"),
            (V1, "pids.max", "max"),
            (V2, "memory.max", "max"),
            (V2, "cpu.max", "max 100000"),
            (V2, "cpuset.cpus", ""),
        ] {
            assert!(fresh_default(v, &at(f), &t(val)), "{f}={val}");
        }
        for (v, f, val) in [
            (V1, "memory.limit_in_bytes", "67108864"),
            (V1, "cpu.shares", "2048"),
            (V1, "devices.deny", "a"),
            (V1, "devices.allow", "c 1:3 rw"),
            (V2, "memory.oom.group", "1"),
            (V2, "pids.max", "64"),
            (V2, "cpuset.cpus", "0-1"),
            (V1, "pids.max", "-1"),
        ] {
            assert!(!fresh_default(v, &at(f), &t(val)), "{f}={val}");
        }
        assert!(!fresh_default(V1, &at("cpuset.cpus"), &Value::FromParent));
    }

    #[test]
    fn procs_files_of_a_process() {
        let h = Hierarchy::from_mountinfo(HYBRID, DEFAULT_PARENT).unwrap();
        let self_cgroup = "12:name=systemd:/user.slice\n4:memory:/svc/x\n3:cpu,cpuacct:/svc\n2:pids:/\n1:cpuset:/\n0::/user.slice\n";
        let files = h.procs_files_of(self_cgroup);
        assert!(files.contains(&PathBuf::from("/sys/fs/cgroup/memory/svc/x/cgroup.procs")));
        assert!(files.contains(&PathBuf::from(
            "/sys/fs/cgroup/cpu,cpuacct/svc/cgroup.procs"
        )));
        assert!(files.contains(&PathBuf::from("/sys/fs/cgroup/pids/cgroup.procs")));
        // cpu and cpuacct share one mount: listed once.
        assert_eq!(
            files
                .iter()
                .filter(|f| f.starts_with("/sys/fs/cgroup/cpu,cpuacct"))
                .count(),
            1
        );
        let v2 = Hierarchy::v2("/sys/fs/cgroup", DEFAULT_PARENT).unwrap();
        assert_eq!(
            v2.procs_files_of("0::/user.slice/session-1.scope\n"),
            vec![PathBuf::from(
                "/sys/fs/cgroup/user.slice/session-1.scope/cgroup.procs"
            )]
        );
    }

    #[test]
    fn the_app_of_a_process_from_its_cgroups() {
        let v2 = Hierarchy::v2("/sys/fs/cgroup", DEFAULT_PARENT).unwrap();
        let app = |h: &Hierarchy, t: &str| h.app_of_proc_cgroup(t).map(|a| a.to_string());
        assert_eq!(
            app(&v2, "0::/appmgr.slice/app-org.x.A.scope\n").as_deref(),
            Some("org.x.A")
        );
        assert_eq!(
            app(&v2, "0::/appmgr.slice/app-org.x.A.scope/sub\n").as_deref(),
            Some("org.x.A")
        );
        for other in [
            "0::/appmgr.slice/launch-org.x.A.scope\n",
            "0::/user.slice/app-org.x.A.scope\n",
            "0::/appmgr.slice\n",
            "0::/\n",
            "",
            "0::/appmgr.slice/app-org.x.A.scopeX\n",
        ] {
            assert_eq!(app(&v2, other), None, "{other:?}");
        }
        // v1: every hierarchy appmgr uses must name the same app.
        let h = Hierarchy::from_mountinfo(HYBRID, DEFAULT_PARENT).unwrap();
        let v1 = |a: &str, b: &str| {
            format!(
                "12:name=systemd:/user.slice\n7:freezer:{a}\n4:memory:{a}\n3:cpu,cpuacct:{a}\n2:pids:{b}\n1:cpuset:{a}\n0::/user.slice\n"
            )
        };
        let a = "/appmgr.slice/app-org.x.A.scope";
        assert_eq!(app(&h, &v1(a, a)).as_deref(), Some("org.x.A"));
        assert_eq!(app(&h, &v1(a, "/appmgr.slice/app-org.x.B.scope")), None);
        assert_eq!(app(&h, &v1(a, "/")), None);
    }

    #[test]
    fn detects_v1_with_comounted_controllers() {
        let h = Hierarchy::from_mountinfo(HYBRID, DEFAULT_PARENT).unwrap();
        assert_eq!(h.version(), CgroupVersion::V1);
        assert_eq!(
            h.mount(Controller::Cpu),
            Some(Path::new("/sys/fs/cgroup/cpu,cpuacct"))
        );
        assert_eq!(h.mount(Controller::Cpu), h.mount(Controller::Cpuacct));
        assert_eq!(
            h.mount(Controller::Memory),
            Some(Path::new("/sys/fs/cgroup/memory"))
        );
        // One directory per distinct hierarchy: cpu,cpuacct counts once.
        assert_eq!(h.distinct_mounts().len(), 5);
    }

    #[test]
    fn missing_required_v1_controller_is_an_error() {
        let mi = "34 30 0:30 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n";
        assert!(matches!(
            Hierarchy::from_mountinfo(mi, DEFAULT_PARENT),
            Err(CgroupError::NoHierarchy { .. })
        ));
    }

    #[test]
    fn parents_must_be_relative_and_normal() {
        for bad in ["/abs", "../up", "a/../b", ""] {
            assert!(Hierarchy::v2("/sys/fs/cgroup", bad).is_err(), "{bad}");
        }
        assert!(Hierarchy::v2("/sys/fs/cgroup", "system.slice/appmgrd.service/apps").is_ok());
    }

    #[test]
    fn mountinfo_unescape() {
        assert_eq!(unescape_mountinfo("/a\\040b"), "/a b");
        assert_eq!(unescape_mountinfo("/plain"), "/plain");
    }
}
