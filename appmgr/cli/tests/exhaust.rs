//! Memory exhaustion, as root on the host (cgroup v1 here; v2 in
//! qemu-tests/scenarios/35-oom-tmpfs.sh): the sandbox's tmpfs mounts are sized from the
//! app's memory limit, the launcher and init are never the OOM killer's victims, cleanup
//! runs whatever ended the app, and limit events are those of the current run only.
use appmgr_testkit::*;
use std::fs;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::time::{Duration, Instant};

const SCRIPT: &str = r#"#!/usr/bin/sh
case "$1" in
  exit) exit "$2" ;;
  fill)
    dd if=/dev/zero of="$2/fill" bs=1M count=64 2>&1
    echo "rc=$?"
    echo "size=$(wc -c < "$2/fill")" ;;
  fill-then-hog)
    dd if=/dev/zero of=/tmp/fill bs=1M count=64 2>/dev/null
    dd if=/dev/zero of=/dev/shm/fill bs=1M count=64 2>/dev/null
    dd if=/dev/zero of=/dev/null bs=64M count=1 ;;
  oom-adj)
    echo "adj=$(cat /proc/self/oom_score_adj)"
    if (echo -1000 > /proc/self/oom_score_adj) 2>/dev/null; then echo lowered; else echo refused; fi ;;
  hog-then-sleep)
    dd if=/dev/zero of=/dev/null bs=64M count=1 2>/dev/null
    echo hogged; sleep 60 ;;
  sleep) echo started; sleep "$2" ;;
  *) echo "usage" ; exit 2 ;;
esac
"#;

const LIMITS: &str = "[[rule]]\napps = [\"org.example.Hello\"]\nresources = { memory-max = \"16M\", memory-swap-max = 0, pids-max = 32 }\n";

fn setup(id: &str) -> Env {
    // Each test calls require_root! first: here it would fail instead of skipping.
    assert!(
        is_root(),
        "these tests need root: start the test with require_root!"
    );
    let e = Env::new();
    fs::create_dir_all(e.cfg.join("policies.d")).unwrap();
    fs::write(
        e.cfg.join("policies.d/50-test.toml"),
        LIMITS.replace("org.example.Hello", id),
    )
    .unwrap();
    e.ok(&["install", s(&e.runtime_bundle("1.0.0"))]);
    let root = e.p("app");
    fs::create_dir_all(root.join("bin")).unwrap();
    fs::write(root.join("bin/hello"), SCRIPT).unwrap();
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(root.join("bin/hello"), fs::Permissions::from_mode(0o755)).unwrap();
    let b = e.bundle(
        &app_manifest("1.0.0").replace("org.example.Hello", id),
        &root,
        "app.bundle",
    );
    e.ok(&["install", s(&b)]);
    e
}

fn cgroup_dirs(id: &str) -> Vec<std::path::PathBuf> {
    [
        "/sys/fs/cgroup",
        "/sys/fs/cgroup/memory",
        "/sys/fs/cgroup/pids",
    ]
    .iter()
    .map(|r| Path::new(r).join(format!("appmgr.slice/app-{id}.scope")))
    .filter(|d| d.exists())
    .collect()
}

/// Direct children of `pid` (from every process's `stat`).
fn children(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    for e in fs::read_dir("/proc").unwrap().flatten() {
        let Ok(p) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = fs::read_to_string(format!("/proc/{p}/stat")) else {
            continue;
        };
        // pid (comm) state ppid ...: comm may hold spaces, so split after the last ')'.
        let rest = &stat[stat.rfind(')').unwrap() + 2..];
        if rest.split(' ').nth(1) == Some(&pid.to_string()) {
            out.push(p);
        }
    }
    out
}

/// Whether this process may lower `oom_score_adj` (CAP_SYS_RESOURCE, bit 24). Some
/// hosts (containers, this CI's VM) withhold it even from root.
fn may_lower_oom_score() -> bool {
    let st = fs::read_to_string("/proc/self/status").unwrap();
    let eff = st
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .map(|v| u64::from_str_radix(v.trim(), 16).unwrap())
        .unwrap();
    eff & (1 << 24) != 0
}

fn oom_adj(pid: u32) -> i32 {
    fs::read_to_string(format!("/proc/{pid}/oom_score_adj"))
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

/// Starts `appmgr run ID -- ARGS` and waits for its first stdout line.
fn start(e: &Env, args: &[&str], first_line: &str) -> (std::process::Child, impl BufRead) {
    let mut child = e
        .cmd(args)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    assert_eq!(line.trim(), first_line);
    (child, out)
}

#[test]
fn filling_tmp_ends_in_enospc_within_the_memory_limit() {
    require_root!("namespaces, cgroups");
    let id = "org.example.ExhaustFillingTmp";
    let e = setup(id);
    // memory-max 16M: /tmp is 8M and /dev/shm 4M; the writer gets ENOSPC, nothing is
    // OOM-killed, and the app's status is its own.
    for (dir, cap) in [("/tmp", 8u64 << 20), ("/dev/shm", 4 << 20)] {
        let r = e.run(&["run", id, "--", "fill", dir]);
        assert_eq!(r.code, 0, "{dir}: {}{}", r.stdout, r.stderr);
        assert!(r.stdout.contains("No space left"), "{dir}: {}", r.stdout);
        assert!(!r.stdout.contains("rc=0"), "{dir}: {}", r.stdout);
        let size: u64 = r
            .stdout
            .lines()
            .find_map(|l| l.strip_prefix("size="))
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        assert!(size <= cap, "{dir}: {size} bytes in a {cap}-byte tmpfs");
        assert!(!r.stderr.contains("limit-hit"), "{dir}: {}", r.stderr);
    }
    assert!(cgroup_dirs(id).is_empty(), "{:?}", cgroup_dirs(id));
}

#[test]
fn launcher_and_init_are_never_oom_victims_and_the_app_cannot_protect_itself() {
    require_root!("namespaces, cgroups");
    let id = "org.example.ExhaustOomScoreAdj";
    let e = setup(id);
    // With CAP_SYS_RESOURCE the helpers are at -1000 and the app at 0; without it (the
    // launcher cannot lower its score) the helpers keep the caller's score and the app
    // is raised to 1000, so it is still the first choice. Either way the app cannot
    // lower its own score below its floor.
    let (helper, app_adj) = if may_lower_oom_score() {
        (-1000, 0)
    } else {
        (oom_adj(std::process::id()), 1000)
    };
    let r = e.ok(&["run", id, "--", "oom-adj"]);
    assert_eq!(
        r.stdout,
        format!("adj={app_adj}\nrefused\n"),
        "{}",
        r.stderr
    );

    let (mut child, _out) = start(&e, &["run", id, "--", "sleep", "30"], "started");
    let launcher = child.id();
    assert_eq!(oom_adj(launcher), helper, "launcher");
    let init = children(launcher);
    assert_eq!(init.len(), 1, "{init:?}");
    assert_eq!(oom_adj(init[0]), helper, "init");
    let app = children(init[0]);
    assert_eq!(app.len(), 1, "{app:?}");
    assert_eq!(oom_adj(app[0]), app_adj, "app");
    // The launcher is no longer in the app's cgroup: the OOM killer and `kill` of the
    // cgroup reach init and the app, never the process that cleans up after them.
    for d in cgroup_dirs(id) {
        let procs = fs::read_to_string(d.join("cgroup.procs")).unwrap();
        assert!(
            !procs.lines().any(|p| p == launcher.to_string()),
            "launcher in {}",
            d.display()
        );
    }
    unsafe_free_kill(launcher, "TERM");
    let _ = child.wait();
}

#[test]
fn tmpfs_pages_count_against_the_app_and_the_launcher_reports_the_kill() {
    require_root!("namespaces, cgroups");
    let id = "org.example.ExhaustTmpfsThenHog";
    let e = setup(id);
    // 12M of tmpfs pages (in nobody's RSS) plus a 64M allocation in a 16M cgroup: the
    // app is killed, the launcher survives, reports it and removes the cgroup.
    let r = e.run(&["run", id, "--", "fill-then-hog"]);
    assert_eq!(r.code, 128 + 9, "{}{}", r.stdout, r.stderr);
    assert!(
        r.stderr
            .contains(&format!("event: {id} limit-hit memory-max")),
        "{}",
        r.stderr
    );
    assert!(cgroup_dirs(id).is_empty(), "{:?}", cgroup_dirs(id));
    assert_eq!(e.run(&["run", id, "--", "exit", "0"]).code, 0);
}

#[test]
fn cleanup_runs_when_the_app_is_killed_from_outside() {
    require_root!("namespaces, cgroups");
    let id = "org.example.ExhaustKilledFromOutside";
    let e = setup(id);
    let (mut child, _out) = start(&e, &["run", id, "--", "sleep", "30"], "started");
    let t = Instant::now();
    e.ok(&["kill", id]);
    let st = child.wait().unwrap();
    // The launcher was not in the killed cgroup: it reports the app's status (SIGKILL)
    // as its exit code and removes the cgroup.
    assert_eq!(st.code(), Some(128 + 9), "{st:?}");
    assert!(t.elapsed() < Duration::from_secs(10));
    assert!(cgroup_dirs(id).is_empty(), "{:?}", cgroup_dirs(id));
}

#[test]
fn limit_events_of_an_earlier_run_are_not_reported_again() {
    require_root!("namespaces, cgroups");
    let id = "org.example.ExhaustStaleEvents";
    let e = setup(id);
    // A run that hits the limit and whose launcher is then killed: its cgroup stays
    // behind with the OOM count.
    let (mut child, _out) = start(&e, &["run", id, "--", "hog-then-sleep"], "hogged");
    unsafe_free_kill(child.id(), "KILL");
    let _ = child.wait();
    let mem = Path::new("/sys/fs/cgroup/memory").join(format!("appmgr.slice/app-{id}.scope"));
    let v2 = Path::new("/sys/fs/cgroup").join(format!("appmgr.slice/app-{id}.scope"));
    let counter = [mem.join("memory.oom_control"), v2.join("memory.events")]
        .into_iter()
        .find(|f| f.exists())
        .expect("the killed launcher left its cgroup behind");
    let text = fs::read_to_string(&counter).unwrap();
    assert!(
        text.lines()
            .any(|l| l.starts_with("oom_kill ") && l != "oom_kill 0"),
        "{}: {text}",
        counter.display()
    );
    // The next run reuses the empty cgroup and hits no limit: nothing is reported.
    let t = Instant::now();
    let r = loop {
        let r = e.run(&["run", id, "--", "exit", "0"]);
        // The dying sandbox may keep the cgroup busy for a moment.
        if r.code != 6 || t.elapsed() > Duration::from_secs(10) {
            break r;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(!r.stderr.contains("limit-hit"), "stale event: {}", r.stderr);
    assert!(cgroup_dirs(id).is_empty(), "{:?}", cgroup_dirs(id));
}

fn unsafe_free_kill(pid: u32, sig: &str) {
    assert!(std::process::Command::new("kill")
        .args([&format!("-{sig}"), &pid.to_string()])
        .status()
        .unwrap()
        .success());
}
