//! Per-app cgroups for appmgr.
//!
//! Every app runs in its own cgroup at a stable path: `ROOT/PARENT/app-ID.scope`, where
//! PARENT is [`DEFAULT_PARENT`] (`appmgr.slice`) unless configured (under systemd, a
//! subtree delegated to appmgrd). On cgroup v2 (the target) that is one directory, e.g.
//! `/sys/fs/cgroup/appmgr.slice/app-org.example.Hmi.scope`; on v1 (the fallback) it is
//! the same relative path in each controller hierarchy (memory, cpu, cpuacct, pids,
//! cpuset, freezer).
//!
//! Design: plan, then apply. A [`CgroupSpec`] (leaf name + [`CgroupLimits`], this crate's
//! own input type; the policy crate converts its limits into it) turns into a list of
//! [`Setting`]s per version, and [`Hierarchy::plan`] into absolute paths and values
//! ([`Plan`]): pure data that unit tests check. [`Hierarchy::create`] applies a plan and
//! returns a [`Cgroup`] handle; the sandbox launcher writes its own pid into every file
//! of [`Cgroup::procs_files`] before exec, so the app's first instruction already runs
//! inside its limits. After the app ends, [`Cgroup::outcome`] reports OOM kills and
//! `pids.max` hits, and [`Cgroup::remove`] (or [`Cgroup::finish`]) deletes it.
//! [`Cgroup::apply`] changes a running app's limits; [`Hierarchy::list`] and
//! [`Cgroup::kill`] serve `appmgr ps` and `appmgr kill`.
//!
//! One file per controller: `memory.rs`, `cpu.rs`, `pids.rs`, `cpuset.rs` each know
//! their v1 and v2 files, values and counters.
//!
//! Limits: the crate does not create or talk to systemd scopes; it needs write access
//! to the parent (root, or a delegated subtree). On v1, `memory.high` maps to the much
//! weaker `memory.soft_limit_in_bytes`, and the swap limit needs swap accounting
//! (`memory.memsw.*`); it is skipped silently where the kernel lacks it. One cgroup per
//! app: a second instance of a running app is refused ([`CgroupError::InUse`]).

mod cgroup;
mod cpu;
mod cpuset;
mod devices;
mod error;
mod fsutil;
mod hierarchy;
mod memory;
mod pids;
mod spec;

pub use cgroup::{Cgroup, CgroupStats, Outcome};
pub use cpu::{quota_us, shares_for_weight, PERIOD_US};
pub use devices::{bpf_program, DeviceKind, DeviceRule};
pub use error::CgroupError;
pub use hierarchy::{Hierarchy, Plan, PlannedWrite, DEFAULT_PARENT};
pub use spec::{
    app_of_leaf, helper_leaf_name, leaf_name, CgroupLimits, CgroupSpec, CgroupVersion, Controller,
    CpuList, Setting, Value,
};
