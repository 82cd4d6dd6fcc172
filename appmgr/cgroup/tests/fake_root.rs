//! The values written on cgroup v2 (and v1), checked against a fake cgroupfs in a
//! temporary directory. Interface files are pre-created, as the kernel would.

use appmgr_cgroup::*;
use appmgr_types::AppId;
use std::fs;
use std::path::Path;

fn touch(dir: &Path, files: &[(&str, &str)]) {
    fs::create_dir_all(dir).unwrap();
    for (f, v) in files {
        fs::write(dir.join(f), v).unwrap();
    }
}

fn read(p: &Path) -> String {
    fs::read_to_string(p).unwrap()
}

fn limits() -> CgroupLimits {
    CgroupLimits {
        memory_max: Some(256 << 20),
        memory_high: Some(200 << 20),
        memory_swap_max: Some(0),
        cpu_max_percent: Some(30),
        cpu_weight: Some(200),
        pids_max: Some(64),
        cpus: Some(CpuList::new("2-3").unwrap()),
    }
}

const V2_LEAF_FILES: &[(&str, &str)] = &[
    ("cgroup.procs", ""),
    ("cgroup.kill", ""),
    ("cgroup.events", "populated 0\nfrozen 0\n"),
    ("memory.max", "max\n"),
    ("memory.high", "max\n"),
    ("memory.swap.max", "max\n"),
    ("memory.oom.group", "0\n"),
    ("cpu.max", "max 100000\n"),
    ("cpu.weight", "100\n"),
    ("pids.max", "max\n"),
    ("cpuset.cpus", "\n"),
];

fn fake_v2(root: &Path) {
    touch(
        root,
        &[
            (
                "cgroup.controllers",
                "cpuset cpu io memory hugetlb pids rdma misc\n",
            ),
            ("cgroup.subtree_control", "cpu memory\n"),
        ],
    );
    touch(
        &root.join("appmgr.slice"),
        &[
            ("cgroup.controllers", "cpuset cpu memory pids\n"),
            ("cgroup.subtree_control", ""),
        ],
    );
    touch(
        &root.join("appmgr.slice/app-org.example.Hmi.scope"),
        V2_LEAF_FILES,
    );
}

#[test]
fn v2_writes_documented_values() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    fake_v2(root);
    let h = Hierarchy::v2(root, DEFAULT_PARENT).unwrap();
    let app = AppId::new("org.example.Hmi").unwrap();
    let spec = CgroupSpec::for_app(&app, limits()).unwrap();
    let cg = h.create(&spec).unwrap();
    let leaf = root.join("appmgr.slice/app-org.example.Hmi.scope");
    assert_eq!(cg.path(), leaf);
    assert_eq!(cg.procs_files(), vec![leaf.join("cgroup.procs")]);
    // Only controllers not yet enabled are added, in one write per level.
    assert_eq!(read(&root.join("cgroup.subtree_control")), "+pids +cpuset");
    assert_eq!(
        read(&root.join("appmgr.slice/cgroup.subtree_control")),
        "+memory +cpu +pids +cpuset"
    );
    for (f, v) in [
        ("memory.max", "268435456"),
        ("memory.high", "209715200"),
        ("memory.swap.max", "0"),
        ("memory.oom.group", "1"),
        ("cpu.max", "30000 100000"),
        ("cpu.weight", "200"),
        ("pids.max", "64"),
        ("cpuset.cpus", "2-3"),
    ] {
        assert_eq!(read(&leaf.join(f)), v, "{f}");
    }
    // Limits read back as applied.
    assert_eq!(cg.stats().unwrap().limits, limits());

    // Re-applying with no limits lifts them.
    let spec = CgroupSpec::for_app(&app, CgroupLimits::default()).unwrap();
    cg.apply(&spec).unwrap();
    for (f, v) in [
        ("memory.max", "max"),
        ("memory.high", "max"),
        ("memory.swap.max", "max"),
        ("cpu.max", "max 100000"),
        ("cpu.weight", "100"),
        ("pids.max", "max"),
        ("cpuset.cpus", "\n"),
    ] {
        assert_eq!(read(&leaf.join(f)), v, "{f}");
    }
    assert_eq!(cg.stats().unwrap().limits.memory_max, None);
}

#[test]
fn v2_optional_files_are_skipped_and_mandatory_ones_are_not() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    fake_v2(root);
    let leaf = root.join("appmgr.slice/app-org.example.Hmi.scope");
    fs::remove_file(leaf.join("memory.swap.max")).unwrap();
    let h = Hierarchy::v2(root, DEFAULT_PARENT).unwrap();
    let app = AppId::new("org.example.Hmi").unwrap();
    h.create(&CgroupSpec::for_app(&app, limits()).unwrap())
        .unwrap();
    assert!(!leaf.join("memory.swap.max").exists());
    fs::remove_file(leaf.join("pids.max")).unwrap();
    let err = h
        .create(&CgroupSpec::for_app(&app, limits()).unwrap())
        .unwrap_err();
    assert!(err.to_string().contains("pids.max"), "{err}");
}

#[test]
fn v2_outcome_and_stats_parse_kernel_files() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    fake_v2(root);
    let leaf = root.join("appmgr.slice/app-org.example.Hmi.scope");
    touch(
        &leaf,
        &[
            (
                "memory.events",
                "low 0\nhigh 12\nmax 7\noom 1\noom_kill 1\noom_group_kill 1\n",
            ),
            ("pids.events", "max 3\n"),
            ("memory.peak", "1048576\n"),
            ("memory.current", "4096\n"),
            (
                "cpu.stat",
                "usage_usec 1500\nuser_usec 1000\nsystem_usec 500\n",
            ),
            ("cgroup.procs", "12\n34\n"),
        ],
    );
    let h = Hierarchy::v2(root, DEFAULT_PARENT).unwrap();
    let cg = h.cgroup(&AppId::new("org.example.Hmi").unwrap());
    let o = cg.outcome().unwrap();
    assert!(o.oom_killed && o.pids_limit_hit);
    assert_eq!((o.oom_kills, o.memory_max_hits, o.pids_max_hits), (1, 7, 3));
    assert_eq!(o.memory_peak, Some(1 << 20));
    assert_eq!(o.cpu_time_usec, Some(1500));
    let list = h.list().unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].app.as_ref().unwrap().as_str(), "org.example.Hmi");
    assert_eq!(list[0].pids, vec![12, 34]);
    assert_eq!(list[0].memory_current, Some(4096));
    // A running app is not started twice.
    let spec = CgroupSpec::for_app(&AppId::new("org.example.Hmi").unwrap(), limits()).unwrap();
    assert!(matches!(h.create(&spec), Err(CgroupError::InUse { .. })));
}

#[test]
fn v1_paths_and_values() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let ctl = |n: &str| root.join(n);
    let mounts = [
        (Controller::Memory, ctl("memory")),
        (Controller::Cpu, ctl("cpu,cpuacct")),
        (Controller::Cpuacct, ctl("cpu,cpuacct")),
        (Controller::Pids, ctl("pids")),
        (Controller::Cpuset, ctl("cpuset")),
        (Controller::Freezer, ctl("freezer")),
    ];
    let leaf = "appmgr.slice/app-org.example.Tel.scope";
    touch(
        &ctl("memory").join(leaf),
        &[
            ("cgroup.procs", ""),
            ("memory.limit_in_bytes", ""),
            ("memory.soft_limit_in_bytes", ""),
            ("memory.memsw.limit_in_bytes", ""),
        ],
    );
    touch(
        &ctl("cpu,cpuacct").join(leaf),
        &[
            ("cgroup.procs", ""),
            ("cpu.cfs_period_us", ""),
            ("cpu.cfs_quota_us", ""),
            ("cpu.shares", ""),
        ],
    );
    touch(
        &ctl("pids").join(leaf),
        &[("cgroup.procs", ""), ("pids.max", "")],
    );
    touch(
        &ctl("cpuset"),
        &[("cpuset.cpus", "0-7\n"), ("cpuset.mems", "0\n")],
    );
    touch(
        &ctl("cpuset/appmgr.slice"),
        &[("cpuset.cpus", ""), ("cpuset.mems", "")],
    );
    touch(
        &ctl("cpuset").join(leaf),
        &[
            ("cgroup.procs", ""),
            ("cpuset.cpus", ""),
            ("cpuset.mems", ""),
        ],
    );
    touch(&ctl("freezer").join(leaf), &[("cgroup.procs", "")]);
    let h = Hierarchy::v1(mounts.clone(), DEFAULT_PARENT).unwrap();
    let app = AppId::new("org.example.Tel").unwrap();
    let mut l = limits();
    l.memory_swap_max = Some(16 << 20);
    l.cpus = None;
    let cg = h
        .create(&CgroupSpec::for_app(&app, l.clone()).unwrap())
        .unwrap();
    assert_eq!(cg.procs_files().len(), 5, "one per distinct hierarchy");
    let r = |c: &str, f: &str| read(&ctl(c).join(leaf).join(f));
    assert_eq!(r("memory", "memory.limit_in_bytes"), "268435456");
    assert_eq!(r("memory", "memory.soft_limit_in_bytes"), "209715200");
    assert_eq!(
        r("memory", "memory.memsw.limit_in_bytes"),
        ((256u64 + 16) << 20).to_string()
    );
    assert_eq!(r("cpu,cpuacct", "cpu.cfs_quota_us"), "30000");
    assert_eq!(r("cpu,cpuacct", "cpu.cfs_period_us"), "100000");
    assert_eq!(r("cpu,cpuacct", "cpu.shares"), "2048");
    assert_eq!(r("pids", "pids.max"), "64");
    // Unpinned: cpus and mems copied down from the root through the slice.
    assert_eq!(read(&ctl("cpuset/appmgr.slice/cpuset.cpus")), "0-7");
    assert_eq!(r("cpuset", "cpuset.cpus"), "0-7");
    assert_eq!(r("cpuset", "cpuset.mems"), "0");
    assert_eq!(cg.stats().unwrap().limits, l);
}

#[test]
fn absent_cgroup_kill_and_remove_are_no_ops() {
    let tmp = tempfile::tempdir().unwrap();
    let h = Hierarchy::v2(tmp.path(), DEFAULT_PARENT).unwrap();
    let cg = h.cgroup(&AppId::new("org.example.Gone").unwrap());
    assert_eq!(cg.kill().unwrap(), 0);
    cg.remove().unwrap();
    assert!(h.list().unwrap().is_empty());
}
