//! The applier side: one app's live cgroup.

use crate::hierarchy::{apply_writes, Hierarchy};
use crate::spec::{CgroupLimits, CgroupSpec, Controller};
use crate::{cpu, cpuset, fsutil, memory, pids, CgroupError, CgroupVersion};
use appmgr_types::AppId;
use rustix::process::{kill_process, Pid, Signal};
use serde::Serialize;
use std::collections::BTreeSet;
use std::fs;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::thread::sleep;
use std::time::{Duration, Instant};

/// How long `kill` and `remove` keep trying before giving up: long enough for the
/// kernel to tear down a few thousand killed tasks, short enough for a CLI.
const SETTLE: Duration = Duration::from_secs(5);
const POLL: Duration = Duration::from_millis(5);

/// One app's cgroup (which may or may not exist yet).
#[derive(Debug, Clone)]
pub struct Cgroup {
    hierarchy: Hierarchy,
    leaf: String,
}

/// What the cgroup saw during the app's life. Read after the app ended, before
/// [`Cgroup::remove`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Outcome {
    /// The kernel OOM killer killed at least one of the app's processes.
    pub oom_killed: bool,
    pub oom_kills: u64,
    /// Times usage reached the hard memory limit (v2 `max`, v1 `failcnt`); reclaim may
    /// have succeeded, so this alone is no kill.
    pub memory_max_hits: u64,
    /// At least one fork or clone was refused because of `pids.max`.
    pub pids_limit_hit: bool,
    pub pids_max_hits: u64,
    /// Peak memory in bytes, if the kernel reports it.
    pub memory_peak: Option<u64>,
    /// CPU time used, in microseconds.
    pub cpu_time_usec: Option<u64>,
}

/// A live cgroup, for `appmgr ps`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CgroupStats {
    /// The app, if the leaf name is one of appmgr's.
    pub app: Option<AppId>,
    /// The cgroup directory (v2), or its directory in the memory hierarchy (v1).
    pub path: PathBuf,
    pub pids: Vec<i32>,
    pub memory_current: Option<u64>,
    pub memory_peak: Option<u64>,
    pub cpu_time_usec: Option<u64>,
    /// The limits in force, read back from the kernel.
    pub limits: CgroupLimits,
    pub oom_kills: u64,
    pub pids_max_hits: u64,
}

impl Cgroup {
    pub(crate) fn new(hierarchy: Hierarchy, leaf: String) -> Self {
        Cgroup { hierarchy, leaf }
    }

    pub fn version(&self) -> CgroupVersion {
        self.hierarchy.version()
    }

    /// The leaf name, `app-ID.scope`.
    pub fn name(&self) -> &str {
        &self.leaf
    }

    pub fn app(&self) -> Option<AppId> {
        crate::spec::app_of_leaf(&self.leaf)
    }

    fn dir(&self, c: Controller) -> Option<PathBuf> {
        self.hierarchy.dir(c, &self.leaf)
    }

    /// The cgroup's directory (v2), or its directory in the memory hierarchy (v1).
    pub fn path(&self) -> PathBuf {
        self.dir(Controller::Memory)
            .unwrap_or_else(|| PathBuf::from(&self.leaf))
    }

    fn leaf_dirs(&self, leaf: &str) -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = Vec::new();
        for c in Controller::ALL {
            if let Some(d) = self.hierarchy.dir(*c, leaf) {
                if !v.contains(&d) {
                    v.push(d);
                }
            }
        }
        v
    }

    /// The sibling's directories (see [`Cgroup::helper_procs_files`]).
    fn helper_dirs(&self) -> Vec<PathBuf> {
        self.hierarchy.helper_dirs(&self.helper_leaf())
    }

    fn helper_leaf(&self) -> String {
        crate::spec::helper_leaf_name(&self.leaf)
    }

    /// The directories to remove once the app has ended: the app's cgroup in every
    /// distinct hierarchy (one on v2), then its launcher's sibling (`launch-ID.scope`).
    pub fn dirs(&self) -> Vec<PathBuf> {
        let mut v = self.leaf_dirs(&self.leaf);
        v.extend(self.helper_dirs());
        v
    }

    /// The `cgroup.procs` files the app process writes itself into (in this order) before
    /// it drops its privileges and execs, so the app never runs a single instruction
    /// outside its limits. On v1 this is one file per hierarchy. Only the app's own tasks
    /// are ever in these cgroups: `pids.max` counts exactly them.
    pub fn procs_files(&self) -> Vec<PathBuf> {
        self.leaf_dirs(&self.leaf)
            .into_iter()
            .map(|d| d.join("cgroup.procs"))
            .collect()
    }

    /// The `cgroup.procs` files the launcher writes init's pid into: the sibling cgroup
    /// `launch-ID.scope`, without limits, holding the sandbox's init (pid 1) for the app's
    /// lifetime. On v1 only in the memory and pids hierarchies (docs/cgroup.md).
    pub fn helper_procs_files(&self) -> Vec<PathBuf> {
        self.helper_dirs()
            .into_iter()
            .map(|d| d.join("cgroup.procs"))
            .collect()
    }

    /// On v2: the app's cgroup directory, to which the launcher attaches the device
    /// program ([`crate::bpf_program`] of the spec's rules) before the app joins. `None`
    /// on v1, where [`crate::Hierarchy::create`] wrote `devices.deny`/`devices.allow`.
    pub fn device_program_target(&self) -> Option<PathBuf> {
        (self.version() == CgroupVersion::V2).then(|| self.path())
    }

    /// The counters whose increase means a limit was hit, as (file, key, event name):
    /// `memory.events`/`memory.oom_control` `oom_kill` and `pids.events` `max`. A fresh
    /// cgroup starts them at 0, so whoever waits for the app (the launcher, which `appmgr
    /// run` execs) can report limit hits without knowing cgroup file formats.
    pub fn event_counters(&self) -> Vec<(PathBuf, &'static str, &'static str)> {
        let mut out = Vec::new();
        if let Some(d) = self.dir(Controller::Memory) {
            let file = match self.version() {
                CgroupVersion::V2 => "memory.events",
                CgroupVersion::V1 => "memory.oom_control",
            };
            out.push((d.join(file), "oom_kill", "memory-max"));
        }
        if let Some(d) = self.dir(Controller::Pids) {
            out.push((d.join("pids.events"), "max", "pids-max"));
        }
        out
    }

    /// Re-applies limits to a cgroup that exists (a running app's limits can change).
    pub fn apply(&self, spec: &CgroupSpec) -> Result<(), CgroupError> {
        let plan = self.hierarchy.plan(spec)?;
        apply_writes(&plan.writes)
    }

    /// All pids in the cgroup, over every hierarchy (on v1 a process could have been
    /// moved in one hierarchy and not another; the union is what `kill` must reach).
    pub fn pids(&self) -> Result<Vec<i32>, CgroupError> {
        let mut set = BTreeSet::new();
        for f in self.procs_files() {
            set.extend(fsutil::read_pids(&f)?);
        }
        Ok(set.into_iter().collect())
    }

    /// Events and totals; read after the app ended and before [`Cgroup::remove`].
    pub fn outcome(&self) -> Result<Outcome, CgroupError> {
        let v = self.version();
        let mut o = Outcome::default();
        if let Some(d) = self.dir(Controller::Memory) {
            o.oom_kills = memory::oom_kills(v, &d)?;
            o.memory_max_hits = memory::max_hits(v, &d)?;
            o.memory_peak = memory::peak(v, &d)?;
        }
        if let Some(d) = self.dir(Controller::Pids) {
            o.pids_max_hits = pids::max_hits(&d)?;
        }
        o.cpu_time_usec = self.cpu_time()?.map(|d| d.as_micros() as u64);
        o.oom_killed = o.oom_kills > 0;
        o.pids_limit_hit = o.pids_max_hits > 0;
        Ok(o)
    }

    /// CPU time used so far.
    pub fn cpu_time(&self) -> Result<Option<Duration>, CgroupError> {
        let c = match self.version() {
            CgroupVersion::V2 => Controller::Cpu,
            CgroupVersion::V1 => Controller::Cpuacct,
        };
        match self.dir(c) {
            Some(d) => cpu::usage(self.version(), &d),
            None => Ok(None),
        }
    }

    /// Current usage and the limits in force, read back from the kernel.
    pub fn stats(&self) -> Result<CgroupStats, CgroupError> {
        let v = self.version();
        let mut limits = CgroupLimits::default();
        let mut s = CgroupStats {
            app: self.app(),
            path: self.path(),
            pids: self.pids()?,
            memory_current: None,
            memory_peak: None,
            cpu_time_usec: self.cpu_time()?.map(|d| d.as_micros() as u64),
            limits: CgroupLimits::default(),
            oom_kills: 0,
            pids_max_hits: 0,
        };
        if let Some(d) = self.dir(Controller::Memory) {
            s.memory_current = memory::current(v, &d)?;
            s.memory_peak = memory::peak(v, &d)?;
            s.oom_kills = memory::oom_kills(v, &d)?;
            memory::read_limits(v, &d, &mut limits)?;
        }
        if let Some(d) = self.dir(Controller::Cpu) {
            cpu::read_limits(v, &d, &mut limits)?;
        }
        if let Some(d) = self.dir(Controller::Pids) {
            s.pids_max_hits = pids::max_hits(&d)?;
            pids::read_limits(&d, &mut limits)?;
            let _ = pids::current(&d)?;
        }
        if let Some(d) = self.dir(Controller::Cpuset) {
            let parent = d.parent().unwrap_or(Path::new("/")).to_path_buf();
            cpuset::read_limits(v, &d, &parent, &mut limits)?;
        }
        s.limits = limits;
        Ok(s)
    }

    /// Kills every process in the cgroup and waits until it is empty; returns how many
    /// pids were signalled. v2 writes `cgroup.kill` (5.14+), which the kernel applies
    /// atomically to the whole subtree. Otherwise the cgroup is frozen first (v2
    /// `cgroup.freeze`, v1 `freezer.state`) so a fork bomb cannot create processes
    /// faster than they are killed, every pid gets SIGKILL, and the cgroup is thawed so
    /// the kills are delivered.
    pub fn kill(&self) -> Result<usize, CgroupError> {
        let start = Instant::now();
        let mut signalled = BTreeSet::new();
        if self.pids()?.is_empty() {
            return Ok(0);
        }
        if self.version() == CgroupVersion::V2 {
            let dir = self.path();
            let kill_file = dir.join("cgroup.kill");
            if kill_file.exists() {
                signalled.extend(self.pids()?);
                fsutil::write(&kill_file, "1")?;
                self.wait_empty(start)?;
                return Ok(signalled.len());
            }
        }
        let freezer = match self.version() {
            CgroupVersion::V2 => Some((self.path().join("cgroup.freeze"), "1", "0")),
            CgroupVersion::V1 => self
                .dir(Controller::Freezer)
                .map(|d| (d.join("freezer.state"), "FROZEN", "THAWED")),
        };
        let mut rounds = 0;
        loop {
            let pids = self.pids()?;
            if pids.is_empty() {
                return Ok(signalled.len());
            }
            if start.elapsed() > SETTLE {
                return Err(CgroupError::StillBusy {
                    path: self.path(),
                    attempts: rounds,
                });
            }
            rounds += 1;
            if let Some((f, freeze, _)) = &freezer {
                if f.exists() {
                    fsutil::write(f, freeze)?;
                    self.wait_frozen(f, start);
                }
            }
            // Re-read: processes forked between the first read and the freeze.
            for pid in self.pids()? {
                if let Some(p) = Pid::from_raw(pid) {
                    match kill_process(p, Signal::KILL) {
                        Ok(()) => {
                            signalled.insert(pid);
                        }
                        Err(e) if e == rustix::io::Errno::SRCH => {}
                        Err(e) => {
                            return Err(CgroupError::Kill {
                                pid,
                                source: e.into(),
                            })
                        }
                    }
                }
            }
            if let Some((f, _, thaw)) = &freezer {
                if f.exists() {
                    fsutil::write(f, thaw)?;
                }
            }
            sleep(POLL);
        }
    }

    fn wait_frozen(&self, state_file: &Path, start: Instant) {
        // v1 reports FREEZING until every task stopped; v2 has `frozen 1` in
        // cgroup.events. A task in uninterruptible sleep can delay this: give up waiting
        // (not killing) after the settle time.
        while start.elapsed() < SETTLE {
            let frozen = match self.version() {
                CgroupVersion::V1 => fsutil::read_opt(state_file)
                    .ok()
                    .flatten()
                    .is_some_and(|s| s.trim() == "FROZEN"),
                CgroupVersion::V2 => {
                    fsutil::read_key_opt(&self.path().join("cgroup.events"), "frozen")
                        .ok()
                        .flatten()
                        == Some(1)
                }
            };
            if frozen {
                return;
            }
            sleep(Duration::from_millis(1));
        }
    }

    fn wait_empty(&self, start: Instant) -> Result<(), CgroupError> {
        let mut polls = 0;
        while !self.pids()?.is_empty() {
            if start.elapsed() > SETTLE {
                return Err(CgroupError::StillBusy {
                    path: self.path(),
                    attempts: polls,
                });
            }
            polls += 1;
            sleep(POLL);
        }
        Ok(())
    }

    /// Removes the cgroup once its processes are gone. The kernel refuses `rmdir` with
    /// `EBUSY` while the last tasks are still exiting, so it is retried briefly. An
    /// absent cgroup is not an error.
    pub fn remove(&self) -> Result<(), CgroupError> {
        const ATTEMPTS: u32 = 200;
        for d in self.dirs() {
            let mut n = 0;
            loop {
                match fs::remove_dir(&d) {
                    Ok(()) => break,
                    Err(e) if e.kind() == ErrorKind::NotFound => break,
                    Err(e) if e.raw_os_error() == Some(rustix::io::Errno::BUSY.raw_os_error()) => {
                        n += 1;
                        if n >= ATTEMPTS {
                            return Err(CgroupError::StillBusy {
                                path: d,
                                attempts: n,
                            });
                        }
                        sleep(POLL);
                    }
                    Err(source) => return Err(CgroupError::Remove { path: d, source }),
                }
            }
        }
        Ok(())
    }

    /// Reads the outcome, kills anything left (daemonized children of the app), and
    /// removes the cgroup: what the supervisor calls when the app's main process ended.
    pub fn finish(&self) -> Result<Outcome, CgroupError> {
        let outcome = self.outcome()?;
        self.kill()?;
        self.remove()?;
        Ok(outcome)
    }
}
