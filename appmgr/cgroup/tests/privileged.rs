//! Real cgroups on this host (root only; cgroup v1 here, v2 in the qemu guests).
//! Each test uses its own parent (`appmgr-test-PID-NAME.slice`) and removes it.
//!
//! Workloads are busybox shell snippets: the shell first writes its own pid into every
//! `cgroup.procs` file (what the sandbox launcher does before exec), then runs the load.

use appmgr_cgroup::*;
use appmgr_types::AppId;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BUSYBOX: &str = "/usr/bin/busybox";

fn skip_reason() -> Option<String> {
    if !appmgr_testkit::is_root() {
        return Some("not root".into());
    }
    if !Path::new(BUSYBOX).exists() {
        return Some(format!("{BUSYBOX} missing"));
    }
    None
}

macro_rules! require_root {
    () => {
        appmgr_testkit::skip_if!(skip_reason())
    };
}

/// A test parent that is removed (with anything left in it) on drop.
struct Scratch {
    h: Hierarchy,
    cg: Cgroup,
}

impl Scratch {
    fn new(name: &str, limits: CgroupLimits) -> Self {
        let parent = format!("appmgr-test-{}-{name}.slice", std::process::id());
        let h = Hierarchy::detect(&parent).expect("detect cgroups");
        let app = AppId::new(&format!("org.test.{name}")).unwrap();
        let spec = CgroupSpec::for_app(&app, limits).unwrap();
        let t = Instant::now();
        let cg = h.create(&spec).expect("create cgroup");
        eprintln!("cgroup created in {:?}", t.elapsed());
        Scratch { h, cg }
    }

    fn spawn(&self, workload: &str) -> Child {
        Self::spawn_into(&self.cg.procs_files(), workload)
    }

    /// A shell that writes itself into `procs` (every file), then runs `workload`;
    /// returned once it shows up in all of them.
    fn spawn_into(procs: &[PathBuf], workload: &str) -> Child {
        let script = format!("for f in \"$@\"; do echo $$ > \"$f\" || exit 99; done; {workload}");
        let mut cmd = Command::new(BUSYBOX);
        cmd.args(["sh", "-c", &script, "sh"])
            .args(procs)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let child = cmd.spawn().expect("spawn busybox");
        // The shell is in its cgroup once its pid shows up in every hierarchy.
        let pid = child.id() as i32;
        let start = Instant::now();
        while !procs.iter().all(|f| {
            std::fs::read_to_string(f)
                .unwrap_or_default()
                .lines()
                .any(|l| l == pid.to_string())
        }) {
            assert!(
                start.elapsed() < Duration::from_secs(5),
                "child never joined"
            );
            std::thread::sleep(Duration::from_millis(2));
        }
        child
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = self.cg.kill();
        let _ = self.cg.remove();
        for c in Controller::ALL {
            if let Some(m) = self.h.mount(*c) {
                let _ = std::fs::remove_dir(m.join(self.h.parent()));
            }
        }
    }
}

fn wait_timeout(child: &mut Child, limit: Duration) -> Option<std::process::ExitStatus> {
    let start = Instant::now();
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return Some(s);
        }
        if start.elapsed() > limit {
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn memory_hog_is_oom_killed_and_reported() {
    require_root!();
    let s = Scratch::new(
        "MemHog",
        CgroupLimits {
            memory_max: Some(16 << 20),
            memory_swap_max: Some(0),
            ..Default::default()
        },
    );
    // dd allocates a 256 MiB buffer and fills it from /dev/zero.
    let mut child = s.spawn(&format!(
        "exec {BUSYBOX} dd if=/dev/zero of=/dev/null bs=256M count=1"
    ));
    let status = wait_timeout(&mut child, Duration::from_secs(30)).expect("hog still running");
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(status.signal(), Some(9), "killed by SIGKILL: {status:?}");
    let o = s.cg.outcome().unwrap();
    assert!(o.oom_killed, "{o:?}");
    assert!(o.memory_peak.unwrap_or(0) <= 16 << 20, "{o:?}");
    assert!(!o.pids_limit_hit);
    s.cg.remove().unwrap();
    assert!(s.cg.dirs().iter().all(|d| !d.exists()));
}

#[test]
fn fork_bomb_stops_at_pids_max_and_host_stays_responsive() {
    require_root!();
    let s = Scratch::new(
        "ForkBomb",
        CgroupLimits {
            pids_max: Some(24),
            cpu_max_percent: Some(50),
            memory_max: Some(64 << 20),
            ..Default::default()
        },
    );
    // busybox sh exits when a fork fails, so the bomb's waves die out and restart; the
    // top shell stays (it only forks again when its wave is gone), and so does a
    // sleeper that `kill` must reach.
    let mut child = s.spawn(&format!(
        "{BUSYBOX} sleep 60 & b() {{ while :; do b & done; }}; while :; do b & wait $!; done"
    ));
    // Counted by the pids controller itself: on a v1 host `Cgroup::pids` reads each
    // hierarchy's process list at another moment, and their union can hold an exited
    // task together with the one forked in its place (it once counted 25).
    let pids_dir =
        s.cg.dirs()
            .into_iter()
            .find(|d| d.join("pids.current").exists())
            .expect("the pids controller's cgroup");
    let mut peak = 0;
    for _ in 0..40 {
        let current = std::fs::read_to_string(pids_dir.join("pids.current")).unwrap();
        peak = peak.max(current.trim().parse::<usize>().unwrap());
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(peak <= 24, "{peak} tasks above pids.max");
    // The host still forks and runs processes promptly.
    let t = Instant::now();
    for _ in 0..5 {
        assert!(Command::new(BUSYBOX)
            .arg("true")
            .status()
            .unwrap()
            .success());
    }
    assert!(
        t.elapsed() < Duration::from_secs(3),
        "host slow: {:?}",
        t.elapsed()
    );
    let o = s.cg.outcome().unwrap();
    assert!(o.pids_limit_hit, "{o:?}");
    // appmgr kill: everything in the cgroup goes, and the cgroup can be removed.
    let n = s.cg.kill().unwrap();
    assert!(n >= 1);
    assert!(wait_timeout(&mut child, Duration::from_secs(5)).is_some());
    assert!(s.cg.pids().unwrap().is_empty());
    s.cg.remove().unwrap();
}

#[test]
fn cpu_spinner_gets_its_quota() {
    require_root!();
    const PCT: u32 = 30;
    let window = Duration::from_secs(3);
    let expected = window.as_secs_f64() * f64::from(PCT) / 100.0;
    // The host is shared (other builds run beside the tests): a spinner that got less
    // than its quota because the CPUs were busy is retried; one that got more never is.
    let mut results = Vec::new();
    for attempt in 0..3 {
        let s = Scratch::new(
            &format!("Spin{attempt}"),
            CgroupLimits {
                cpu_max_percent: Some(PCT),
                ..Default::default()
            },
        );
        let mut child = s.spawn("while :; do :; done");
        std::thread::sleep(Duration::from_millis(300));
        let t0 = Instant::now();
        let c0 = s.cg.cpu_time().unwrap().expect("cpu time");
        std::thread::sleep(window);
        let c1 = s.cg.cpu_time().unwrap().unwrap();
        let wall = t0.elapsed().as_secs_f64();
        let used = (c1 - c0).as_secs_f64() * window.as_secs_f64() / wall;
        s.cg.kill().unwrap();
        let _ = child.wait();
        results.push(used);
        assert!(
            used <= expected * 1.1,
            "spinner used {used:.3}s > {expected:.3}s +10%"
        );
        if used >= expected * 0.9 {
            eprintln!("cpu used {used:.3}s of expected {expected:.3}s");
            return;
        }
    }
    panic!("spinner got {results:?}, expected {expected:.3}s ±10%");
}

#[test]
fn limits_of_a_running_app_can_change_and_are_listed() {
    require_root!();
    let s = Scratch::new(
        "Live",
        CgroupLimits {
            memory_max: Some(64 << 20),
            pids_max: Some(16),
            ..Default::default()
        },
    );
    let mut child = s.spawn(&format!("exec {BUSYBOX} sleep 30"));
    let app = AppId::new("org.test.Live").unwrap();
    let new = CgroupLimits {
        memory_max: Some(32 << 20),
        pids_max: Some(8),
        cpu_max_percent: Some(20),
        ..Default::default()
    };
    s.cg.apply(&CgroupSpec::for_app(&app, new.clone()).unwrap())
        .unwrap();
    let list = s.h.list().unwrap();
    assert_eq!(list.len(), 1);
    let st = &list[0];
    assert_eq!(st.app.as_ref(), Some(&app));
    assert_eq!(st.pids, vec![child.id() as i32]);
    assert_eq!(st.limits.memory_max, new.memory_max);
    assert_eq!(st.limits.pids_max, new.pids_max);
    assert_eq!(st.limits.cpu_max_percent, new.cpu_max_percent);
    assert!(st.memory_current.is_some());
    // A second instance is refused while the first runs.
    let again = s.h.create(&CgroupSpec::for_app(&app, new).unwrap());
    assert!(matches!(again, Err(CgroupError::InUse { .. })));
    s.cg.kill().unwrap();
    let _ = child.wait();
    let o = s.cg.finish().unwrap();
    assert!(!o.oom_killed);
    let dirs: Vec<PathBuf> = s.cg.dirs();
    assert!(dirs.iter().all(|d| !d.exists()));
}

/// v1 `devices`: with rules, the app's cgroup opens exactly the allowed numbers, even for
/// root (EPERM from the controller); the launcher's sibling (`launch-ID.scope`) exists
/// beside it without limits, and `remove` deletes both.
#[test]
fn device_rules_confine_opens_even_for_root() {
    require_root!();
    let parent = format!("appmgr-test-{}-Devices.slice", std::process::id());
    let h = Hierarchy::detect(&parent).expect("detect cgroups");
    if h.version() != CgroupVersion::V1 || h.mount(Controller::Devices).is_none() {
        eprintln!("skipped: no cgroup v1 devices hierarchy (v2 is tested in qemu)");
        return;
    }
    let app = AppId::new("org.test.Devices").unwrap();
    let mut spec = CgroupSpec::for_app(
        &app,
        CgroupLimits {
            pids_max: Some(4),
            ..Default::default()
        },
    )
    .unwrap();
    spec.devices = Some(vec![
        DeviceRule::of_node(Path::new("/dev/null")).unwrap(),
        DeviceRule::char(136, None),
    ]);
    let cg = h.create(&spec).expect("create cgroup");
    let s = Scratch {
        h: h.clone(),
        cg: cg.clone(),
    };
    let helper = h
        .mount(Controller::Pids)
        .unwrap()
        .join(&parent)
        .join("launch-org.test.Devices.scope");
    assert!(helper.is_dir());
    assert_eq!(
        std::fs::read_to_string(helper.join("pids.max"))
            .unwrap()
            .trim(),
        "max"
    );
    let list = h
        .mount(Controller::Devices)
        .unwrap()
        .join(&parent)
        .join("app-org.test.Devices.scope/devices.list");
    assert_eq!(
        std::fs::read_to_string(&list).unwrap(),
        "c 1:3 rw\nc 136:* rw\n"
    );
    // A root shell in the cgroup: /dev/null opens, /dev/zero (1:5) does not.
    let script = "for f in \"$@\"; do echo 0 > \"$f\" || exit 99; done; \
         (exec 3<>/dev/null) || exit 10; \
         err=$( (exec 3</dev/zero) 2>&1 ) && exit 11; echo \"$err\" >&2; \
         case \"$err\" in *'Operation not permitted'*) exit 0;; esac; exit 12";
    let out = Command::new(BUSYBOX)
        .args(["sh", "-c", script, "sh"])
        .args(cg.procs_files())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    drop(s);
    assert!(
        !helper.exists(),
        "the launcher's cgroup is removed with the app's"
    );
}

/// The spec of `app`'s launcher sibling (`launch-ID.scope`), as `create` plans it.
fn helper_spec(app: &AppId) -> CgroupSpec {
    CgroupSpec {
        name: helper_leaf_name(&leaf_name(app)),
        limits: CgroupLimits::default(),
        devices: None,
    }
}

/// Every file `create` writes, for the app's cgroup and its launcher's sibling, and its
/// contents now (`None`: the kernel does not offer it).
fn written_files(
    h: &Hierarchy,
    app: &AppId,
    limits: &CgroupLimits,
) -> Vec<(PathBuf, Option<String>)> {
    let spec = CgroupSpec::for_app(app, limits.clone()).unwrap();
    let helper = helper_spec(app);
    let mut files: Vec<PathBuf> = [spec, helper]
        .iter()
        .flat_map(|s| h.plan(s).unwrap().writes)
        .map(|w| w.path)
        .collect();
    files.sort();
    files.dedup();
    files
        .into_iter()
        .map(|f| {
            let v = std::fs::read_to_string(&f).ok();
            (f, v)
        })
        .collect()
}

/// A cgroup `create` made itself is not written the values the kernel gives every new
/// cgroup: what it holds is exactly what writing them all would give (the values
/// [`Cgroup::apply`] writes, as `appmgr reload` does).
#[test]
fn a_new_cgroup_holds_what_writing_every_value_would_give() {
    require_root!();
    let limits = CgroupLimits {
        memory_max: Some(64 << 20),
        ..Default::default()
    };
    let s = Scratch::new("Fresh", limits.clone());
    let app = AppId::new("org.test.Fresh").unwrap();
    let before = written_files(&s.h, &app, &limits);
    assert!(
        before
            .iter()
            .any(|(f, v)| f.ends_with("pids.max") && v.is_some()),
        "{before:?}"
    );
    // Every value written again, the sibling's as well.
    s.cg.apply(&CgroupSpec::for_app(&app, limits.clone()).unwrap())
        .unwrap();
    for w in s.h.plan(&helper_spec(&app)).unwrap().writes {
        if let (true, appmgr_cgroup::Value::Text(t)) = (w.path.exists(), &w.value) {
            std::fs::write(&w.path, t).unwrap();
        }
    }
    assert_eq!(written_files(&s.h, &app, &limits), before);
    assert_eq!(s.cg.stats().unwrap().limits.memory_max, limits.memory_max);
}

/// While the launcher's sibling still holds a process, a new `create` is refused and
/// touches nothing: the app's (empty) cgroup is not replaced, no limit is written.
#[test]
fn a_create_refused_as_in_use_changes_nothing() {
    require_root!();
    use std::os::unix::fs::MetadataExt;
    let limits = CgroupLimits {
        pids_max: Some(32),
        ..Default::default()
    };
    let s = Scratch::new("Busy", limits.clone());
    let app = AppId::new("org.test.Busy").unwrap();
    let helper_procs = s.cg.helper_procs_files();
    assert!(!helper_procs.is_empty());
    let mut child = Scratch::spawn_into(&helper_procs, &format!("exec {BUSYBOX} sleep 30"));
    let inodes = |dirs: &[PathBuf]| -> Vec<u64> {
        dirs.iter()
            .map(|d| std::fs::metadata(d).map(|m| m.ino()).unwrap_or(0))
            .collect()
    };
    let app_dirs: Vec<PathBuf> =
        s.cg.procs_files()
            .iter()
            .map(|f| f.parent().unwrap().to_path_buf())
            .collect();
    let before = (inodes(&app_dirs), written_files(&s.h, &app, &limits));
    let other = CgroupLimits {
        pids_max: Some(8),
        memory_max: Some(16 << 20),
        ..Default::default()
    };
    let r = s.h.create(&CgroupSpec::for_app(&app, other).unwrap());
    assert!(matches!(r, Err(CgroupError::InUse { .. })), "{r:?}");
    assert_eq!(
        (inodes(&app_dirs), written_files(&s.h, &app, &limits)),
        before
    );
    let _ = child.kill();
    let _ = child.wait();
}

/// The launcher's sibling (`launch-ID.scope`, init's cgroup) is made where it keeps
/// something apart: on v1 in the memory and pids hierarchies only (init's task and memory
/// stay out of the app's limits, and the app, forked by init, out of its caller's pids);
/// on v2 it is the one directory. `dirs` and `helper_procs_files` name exactly those.
#[test]
fn the_launchers_sibling_is_made_in_the_memory_and_pids_hierarchies() {
    require_root!();
    let s = Scratch::new("Sibling", CgroupLimits::default());
    let leaf = helper_leaf_name("app-org.test.Sibling.scope");
    let mut made = Vec::new();
    let mut mounts: Vec<PathBuf> = Vec::new();
    for c in Controller::ALL {
        let Some(m) = s.h.mount(*c) else { continue };
        if mounts.contains(&m.to_path_buf()) {
            continue;
        }
        mounts.push(m.to_path_buf());
        let d = m.join(s.h.parent()).join(&leaf);
        if d.is_dir() {
            made.push(d);
        }
    }
    let expected: Vec<PathBuf> = match s.h.version() {
        CgroupVersion::V2 => vec![s
            .h
            .mount(Controller::Memory)
            .unwrap()
            .join(s.h.parent())
            .join(&leaf)],
        CgroupVersion::V1 => [Controller::Memory, Controller::Pids]
            .iter()
            .map(|c| s.h.mount(*c).unwrap().join(s.h.parent()).join(&leaf))
            .collect(),
    };
    assert_eq!(made, expected);
    let procs: Vec<PathBuf> = expected.iter().map(|d| d.join("cgroup.procs")).collect();
    assert_eq!(s.cg.helper_procs_files(), procs);
    assert!(expected.iter().all(|d| s.cg.dirs().contains(d)));
    let dirs = s.cg.dirs();
    s.cg.remove().unwrap();
    assert!(dirs.iter().all(|d| !d.exists()), "{dirs:?}");
}
