//! `appmgr run` end to end, as root on the host: the installed app runs sandboxed under the
//! grant `permissions` shows and the cgroup limits policy sets.
use appmgr_testkit::*;
use std::fs;
use std::time::{Duration, Instant};

const SCRIPT: &str = r#"#!/usr/bin/sh
case "$1" in
  exit) exit "$2" ;;
  signal) kill -"$2" $$ ;;
  id) id -u; id -g; echo "HOME=$HOME" ;;
  args) shift; for a in "$@"; do echo "arg:$a"; done ;;
  hog) dd if=/dev/zero of=/dev/null bs=64M count=1 ;;
  sleep) echo started; sleep "$2" ;;
  env) env ;;
  lsn) ls -ln "$2" ;;
  open) shift; for f in "$@"; do
      if err=$( (exec 3<>"$f") 2>&1 ); then echo "open:$f:ok"; else echo "open:$f:$err"; fi
    done ;;
  waitopen) n=0; while [ ! -e "$2" ] && [ $n -lt 600 ]; do sleep 0.05; n=$((n+1)); done
    if err=$( (exec 3<>"$2") 2>&1 ); then echo "open:$2:ok"; else echo "open:$2:$err"; fi ;;
  forks) n=$2; i=1; while [ $i -lt "$n" ]; do sleep 30 & i=$((i+1)); done
    echo "forked $((i-1))"; sleep 30 & echo "fork $n succeeded"; exit 0 ;;
  *) echo "usage" ; exit 2 ;;
esac
"#;

/// Each test uses its own app ID: cgroups are host-wide, and tests run in parallel.
fn setup(policy: &str, id: &str) -> Env {
    let e = policy_env(|_| policy.replace("org.example.Hello", id));
    e.install_script_app(id, SCRIPT, "");
    e
}

/// A private state and config dir (root only) with the policy `policy(&env)` (it may
/// name paths inside the env) and the runtime installed.
fn policy_env(policy: impl FnOnce(&Env) -> String) -> Env {
    // Each test calls require_root! first: here it would fail instead of skipping.
    assert!(
        is_root(),
        "these tests need root: start the test with require_root!"
    );
    let e = Env::new();
    fs::create_dir_all(e.cfg.join("policies.d")).unwrap();
    fs::write(e.cfg.join("policies.d/50-test.toml"), policy(&e)).unwrap();
    e.ok(&["install", s(&e.runtime_bundle("1.0.0"))]);
    e
}

const LIMITS: &str = "[[rule]]\napps = [\"org.example.Hello\"]\nresources = { memory-max = \"16M\", memory-swap-max = 0, pids-max = 32, cpu-max = \"50%\" }\n";

#[test]
fn exit_status_signals_identity_and_argv() {
    require_root!("namespaces, cgroups");
    let id = "org.example.RunExitStatusSignalsIdentityAndArgv";
    let e = setup(LIMITS, id);
    assert_eq!(e.run(&["run", id, "--", "exit", "7"]).code, 7);
    assert_eq!(e.run(&["run", id, "--", "signal", "TERM"]).code, 128 + 15);
    let r = e.ok(&["run", id, "--", "id"]);
    let uid = e.ok(&["--json", "info", id]).json()["uid"]
        .as_u64()
        .unwrap();
    let lines: Vec<&str> = r.stdout.lines().collect();
    assert_eq!(lines[0], uid.to_string());
    assert_eq!(lines[1], uid.to_string());
    assert!(lines[2].starts_with("HOME="), "{}", r.stdout);
    // Arguments are data: nothing is interpreted as an option, by appmgr or the launcher.
    let r = e.ok(&["run", id, "--", "args", "--bind", "/", "/", "--print-plan"]);
    assert_eq!(r.stdout, "arg:--bind\narg:/\narg:/\narg:--print-plan\n");
    // The environment is built: LD_PRELOAD and friends from the caller never arrive.
    let r = e
        .cmd(&["run", id, "--", "env"])
        .env("LD_PRELOAD", "/tmp/evil.so")
        .env("GCONV_PATH", "/tmp")
        .env("SECRET_TOKEN", "x")
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&r.stdout);
    assert!(r.status.success(), "{out}");
    for bad in ["LD_PRELOAD", "GCONV_PATH", "SECRET_TOKEN"] {
        assert!(!out.contains(bad), "{bad} leaked into the sandbox: {out}");
    }
    assert!(out.contains(&format!("APPMGR_APP_ID={id}")), "{out}");
    // The launcher removed the app's cgroup after every run (no appmgr process waited).
    for root in [
        "/sys/fs/cgroup",
        "/sys/fs/cgroup/memory",
        "/sys/fs/cgroup/pids",
    ] {
        let d = std::path::Path::new(root).join(format!("appmgr.slice/app-{id}.scope"));
        assert!(!d.exists(), "{} left behind", d.display());
    }
}

#[test]
fn plan_and_permissions_come_from_one_grant() {
    require_root!("namespaces, cgroups");
    let id = "org.example.RunPlanAndPermissionsComeFromOneGrant";
    let e = setup(LIMITS, id);
    let plan = e.ok(&["run", "--print-plan", id]).json();
    let perms = e.ok(&["--json", "permissions", id]).json();
    // Both commands report the status of each item from the plan `run` builds (whether
    // that status is true is checked from inside the sandbox in tests/shown.rs).
    assert_eq!(plan["provided"], perms["provided"]);
    let uid = e.ok(&["--json", "info", id]).json()["uid"].clone();
    assert_eq!(plan["plan"]["uid"], uid);
    assert_eq!(plan["cgroup"]["limits"]["memory-max"], 16 << 20);
    assert_eq!(plan["cgroup"]["limits"]["pids-max"], 32);
    // No network grant: the plan unshares the network namespace.
    assert_eq!(plan["plan"]["namespaces"]["net"], true);
}

#[test]
fn memory_hog_is_oom_killed_and_reported() {
    require_root!("namespaces, cgroups");
    let id = "org.example.RunMemoryHogIsOomKilledAndReported";
    let e = setup(LIMITS, id);
    let r = e.run(&["run", id, "--", "hog"]);
    assert_eq!(r.code, 128 + 9, "{}{}", r.stdout, r.stderr);
    assert!(r.stderr.contains("limit-hit memory-max"), "{}", r.stderr);
    // The cgroup is gone after the app ended, and the app can run again.
    let ps = e.ok(&["--json", "ps"]).json();
    assert!(!ps.to_string().contains(id), "{ps}");
    assert_eq!(e.run(&["run", id, "--", "exit", "0"]).code, 0);
}

#[test]
fn policy_changed_after_install_refuses_launch() {
    require_root!("namespaces, cgroups");
    let id = "org.example.RunPolicyChangedAfterInstallRefusesLaunch";
    let e = setup(LIMITS, id);
    // Policy is read again at every launch: a policy file that no longer parses means
    // nothing starts (fail closed), and the error names the file.
    fs::write(
        e.cfg.join("policies.d/60-broken.toml"),
        "[[rule]]\nappz = []\n",
    )
    .unwrap();
    let msg = e.fails(&["run", id, "--", "exit", "0"], 4);
    assert!(msg.contains("60-broken.toml"), "{msg}");
}

#[test]
fn corrupt_deployment_is_refused_until_reinstalled() {
    require_root!("namespaces, cgroups");
    let id = "org.example.RunCorruptDeploymentIsRefusedUntilReinstall";
    let e = setup(LIMITS, id);
    let info = e.ok(&["--json", "info", id]).json();
    let script = std::path::PathBuf::from(info["deployment"].as_str().unwrap()).join("bin/hello");
    // Corrupt the object behind the deployed file (same inode).
    let mut data = fs::read(&script).unwrap();
    data[20] ^= 1;
    fs::write(&script, &data).unwrap();
    let r = e.run(&["fsck"]);
    assert_eq!(r.code, 3, "{}{}", r.stdout, r.stderr);
    let msg = e.fails(&["run", id, "--", "exit", "0"], 3);
    assert!(msg.contains("corrupt"), "{msg}");
    // Reinstalling the same bundle repairs it.
    e.ok(&["install", s(&e.p("runapp.bundle"))]);
    e.fsck_clean();
    assert_eq!(e.run(&["run", id, "--", "exit", "0"]).code, 0);
}

#[test]
fn data_dir_replaced_by_symlink_is_refused() {
    require_root!("namespaces, cgroups");
    let id = "org.example.RunDataDirReplacedBySymlinkIsRefused";
    let e = setup(LIMITS, id);
    e.ok(&["run", id, "--", "exit", "0"]);
    let data = e.state.join("data").join(id);
    assert!(data.is_dir());
    let victim = e.p("victim");
    fs::create_dir_all(&victim).unwrap();
    fs::write(victim.join("keep"), "untouched").unwrap();
    fs::remove_dir_all(&data).unwrap();
    std::os::unix::fs::symlink(&victim, &data).unwrap();
    let r = e.run(&["run", id, "--", "id"]);
    assert_ne!(
        r.code, 0,
        "launch through a symlinked data dir must be refused"
    );
    use std::os::unix::fs::MetadataExt;
    let m = fs::metadata(&victim).unwrap();
    assert_eq!(
        (m.uid(), m.mode() & 0o777),
        (0, 0o755),
        "target must be untouched"
    );
    assert_eq!(
        fs::read_to_string(victim.join("keep")).unwrap(),
        "untouched"
    );
}

#[test]
fn signals_reach_the_app_and_kill_works() {
    require_root!("namespaces, cgroups");
    let id = "org.example.RunSignalsReachTheAppAndKillWorks";
    let e = setup(LIMITS, id);
    let mut child = e
        .cmd(&["run", id, "--", "sleep", "30"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until it runs (its cgroup shows up in ps).
    let t = Instant::now();
    loop {
        let ps = e.ok(&["--json", "ps"]).json();
        if ps.to_string().contains(id) {
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(10), "app did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    let ps = e.ok(&["--json", "ps"]).json();
    let entry = ps
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["app"] == id)
        .unwrap()
        .clone();
    assert!(!entry["pids"].as_array().unwrap().is_empty());
    // Limits of the running app change when policy is re-read.
    fs::write(
        e.cfg.join("policies.d/50-test.toml"),
        LIMITS
            .replace("org.example.Hello", id)
            .replace("16M", "24M")
            .replace("pids-max = 32", "pids-max = 20"),
    )
    .unwrap();
    e.ok(&["reload", id]);
    let ps = e.ok(&["--json", "ps"]).json();
    let entry = ps
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["app"] == id)
        .unwrap()
        .clone();
    assert_eq!(entry["limits"]["memory-max"], 24 << 20, "{entry}");
    assert_eq!(entry["limits"]["pids-max"], 20, "{entry}");
    // A second instance is refused while the first runs.
    e.fails(&["run", id, "--", "exit", "0"], 6);
    unsafe_free_kill(child.id() as i32, "TERM");
    let st = child.wait().unwrap();
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(
        st.code().or(st.signal().map(|s| 128 + s)),
        Some(128 + 15),
        "{st:?}"
    );
    assert!(t.elapsed() < Duration::from_secs(20));

    // appmgr kill stops a running app.
    let mut child = e.cmd(&["run", id, "--", "sleep", "30"]).spawn().unwrap();
    let t = Instant::now();
    while e.run(&["kill", id]).code != 0 {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "kill never found the app"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let st = child.wait().unwrap();
    assert!(!st.success());
    e.fails(&["kill", id], 5);
}

fn unsafe_free_kill(pid: i32, sig: &str) {
    assert!(std::process::Command::new("kill")
        .args([&format!("-{sig}"), &pid.to_string()])
        .status()
        .unwrap()
        .success());
}

#[test]
fn launch_errors_are_appmgr_lines_with_the_documented_code() {
    require_root!("namespaces, cgroups");
    let id = "org.example.RunLaunchErrorsArePrefixed";
    let e = setup(LIMITS, id);
    // An app whose command is not in its tree: the launcher's error is the user's
    // `appmgr run` error, exit 127 (docs/sandbox.md), every line `appmgr: `.
    let root = e.p("nocmd");
    fs::create_dir_all(root.join("bin")).unwrap();
    fs::write(root.join("bin/other"), SCRIPT).unwrap();
    let b = e.bundle(
        &app_manifest("2.0.0")
            .replace("org.example.Hello", id)
            .replace("command = \"hello\"", "command = \"not-there\""),
        &root,
        "nocmd.bundle",
    );
    e.ok(&["install", s(&b)]);
    let r = e.run(&["run", id]);
    assert_eq!(r.code, 127, "{}{}", r.stdout, r.stderr);
    let lines: Vec<&str> = r.stderr.lines().collect();
    assert!(!lines.is_empty(), "no error line");
    for l in &lines {
        assert!(l.starts_with(&format!("appmgr: {id}: ")), "{l}");
    }
    assert!(r.stderr.contains("not-there"), "{}", r.stderr);
}

/// A filesystem grant whose path an app can redirect (a symlink planted in the writable
/// share the policy grants): `permissions` shows it as refused, `run` refuses it with exit
/// 4 and one line naming the path, and nothing of the symlink's target is shown or changed.
#[test]
fn grant_through_a_planted_symlink_is_refused_and_shown() {
    require_root!("namespaces, cgroups");
    let id = "org.example.RunGrantThroughAPlantedSymlink";
    let e = policy_env(|e| {
        format!(
            "[[rule]]\napps = [\"{id}\"]\ngrant = {{ filesystems = [\"{}:rw\"] }}\n",
            e.p("share").display()
        )
    });
    let share = e.p("share");
    let victim = e.p("victim");
    fs::create_dir_all(share.join("docs")).unwrap();
    fs::write(share.join("docs/readme"), "grant-content\n").unwrap();
    fs::create_dir_all(&victim).unwrap();
    fs::write(victim.join("secret"), "victim-secret\n").unwrap();
    e.install_script_app(
        id,
        &format!("#!/usr/bin/sh\ncat {}/docs/*\n", share.display()),
        &format!(
            "\n[permissions]\nfilesystems = [\"{}/docs:ro\"]\n",
            share.display()
        ),
    );

    // As granted: the share's content, nothing refused.
    assert_eq!(e.ok(&["run", id]).stdout, "grant-content\n");
    let p = e.ok(&["--json", "permissions", id]).json();
    assert!(p.get("refused").is_none(), "{p}");

    // The app (which may write the share) replaces the directory by a symlink.
    fs::remove_dir_all(share.join("docs")).unwrap();
    std::os::unix::fs::symlink(&victim, share.join("docs")).unwrap();
    let path = format!("{}/docs", share.display());
    let text = e.ok(&["permissions", id]).stdout;
    assert!(text.contains("refused at launch"), "{text}");
    let line = text
        .lines()
        .find(|l| l.contains("symlink"))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(line.contains(&path), "{line}");
    let p = e.ok(&["--json", "permissions", id]).json();
    assert_eq!(p["refused"][0]["key"], "filesystems", "{p}");
    assert_eq!(p["refused"][0]["value"], format!("{path}:ro"), "{p}");

    let r = e.run(&["run", id]);
    assert_eq!(r.code, 4, "{}{}", r.stderr, r.stdout);
    assert!(r.stdout.is_empty(), "the app ran: {}", r.stdout);
    assert_eq!(r.stderr.lines().count(), 1, "{}", r.stderr);
    assert!(
        r.stderr
            .starts_with(&format!("appmgr: {id}: refusing to launch: {path}: ")),
        "{}",
        r.stderr
    );
    assert!(r.stderr.contains("symlink"), "{}", r.stderr);
    use std::os::unix::fs::MetadataExt;
    let m = fs::metadata(&victim).unwrap();
    assert_eq!((m.uid(), m.mode() & 0o777), (0, 0o755));
    assert_eq!(fs::read_dir(&victim).unwrap().count(), 1);
}

/// The state directory holds every app's data and the store: a filesystem grant of a
/// directory containing it (a policy granting `/var/lib`, say) is shown as refused and
/// refused at launch, and nothing of another app's data reaches the sandbox.
#[test]
fn a_grant_containing_the_state_dir_is_refused() {
    require_root!("namespaces, cgroups");
    let id = "org.example.RunGrantContainingTheStateDir";
    let e = policy_env(|e| {
        format!(
            "[[rule]]\napps = [\"{id}\"]\ngrant = {{ filesystems = [\"{}:ro\"] }}\n",
            e.dir.path().display()
        )
    });
    let top = e.dir.path().to_path_buf();
    e.install_script_app(
        id,
        &format!("#!/usr/bin/sh\nls {}\n", e.state.display()),
        &format!(
            "\n[permissions]\nfilesystems = [\"{}:ro\"]\n",
            top.display()
        ),
    );
    let before = e.snapshot();

    let p = e.ok(&["--json", "permissions", id]).json();
    assert_eq!(p["refused"][0]["key"], "filesystems", "{p}");
    assert_eq!(
        p["refused"][0]["value"],
        format!("{}:ro", top.display()),
        "{p}"
    );
    let r = e.run(&["run", id]);
    assert_eq!(r.code, 4, "{}{}", r.stderr, r.stdout);
    assert!(r.stdout.is_empty(), "the app ran: {}", r.stdout);
    assert_eq!(r.stderr.lines().count(), 1, "{}", r.stderr);
    assert!(
        r.stderr.starts_with(&format!(
            "appmgr: {id}: refusing to launch: {}: ",
            top.display()
        )),
        "{}",
        r.stderr
    );
    let state = fs::canonicalize(&e.state).unwrap();
    assert!(
        r.stderr.contains(&state.display().to_string()),
        "{}",
        r.stderr
    );
    // Before the grant is resolved, `run` creates the (empty, root-owned) data root and
    // the launcher caches the compiled seccomp program (install compiled it already);
    // nothing else may change.
    let mut before = before;
    before.retain(|k, _| !k.starts_with("cache"));
    let mut after = e.snapshot();
    after.retain(|k, _| !k.starts_with("cache"));
    assert_eq!(after.remove("data").as_deref(), Some("dir 40755"));
    assert!(!after.keys().any(|k| k.starts_with("data/")), "{after:?}");
    assert_eq!(after, before, "a refused launch changed the state dir");
}

/// The app's helpers (the launcher and the sandbox's init) are not the app's tasks: with
/// `pids-max = 1` the app runs its one process, and with `pids-max = N` it can have
/// exactly N tasks (N-1 forks succeed, the Nth fails with EAGAIN).
#[test]
fn pids_max_counts_only_the_apps_tasks() {
    require_root!("namespaces, cgroups");
    let id = "org.example.RunPidsMaxCountsOnlyTheAppsTasks";
    let limits = |n: u32| {
        format!(
            "[[rule]]\napps = [\"{id}\"]\nresources = {{ memory-max = \"64M\", pids-max = {n} }}\n"
        )
    };
    let e = setup(&limits(1), id);
    let policy = e.cfg.join("policies.d/50-test.toml");
    let r = e.run(&["run", id, "--", "exit", "0"]);
    assert_eq!(
        r.code, 0,
        "pids-max = 1 must run the app: {}{}",
        r.stdout, r.stderr
    );
    // One task only: even one fork is refused.
    let r = e.run(&["run", id, "--", "forks", "1"]);
    assert_eq!(r.code, 2, "{}{}", r.stdout, r.stderr);
    assert!(r.stdout.contains("forked 0"), "{}", r.stdout);
    assert!(!r.stdout.contains("succeeded"), "{}", r.stdout);
    assert!(
        r.stderr
            .contains("can't fork: Resource temporarily unavailable"),
        "{}",
        r.stderr
    );
    assert!(r.stderr.contains("limit-hit pids-max"), "{}", r.stderr);

    fs::write(&policy, limits(4)).unwrap();
    let r = e.run(&["run", id, "--", "forks", "4"]);
    assert_eq!(r.code, 2, "{}{}", r.stdout, r.stderr);
    assert!(r.stdout.contains("forked 3"), "{}", r.stdout);
    assert!(!r.stdout.contains("succeeded"), "{}", r.stdout);
    assert!(
        r.stderr
            .contains("can't fork: Resource temporarily unavailable"),
        "{}",
        r.stderr
    );
    // With one more task allowed the same app gets its Nth fork.
    fs::write(&policy, limits(5)).unwrap();
    let r = e.run(&["run", id, "--", "forks", "4"]);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    assert!(r.stdout.contains("fork 4 succeeded"), "{}", r.stdout);
    assert!(!r.stderr.contains("limit-hit"), "{}", r.stderr);
    for d in [
        format!("/sys/fs/cgroup/pids/appmgr.slice/app-{id}.scope"),
        format!("/sys/fs/cgroup/pids/appmgr.slice/launch-{id}.scope"),
    ] {
        assert!(!std::path::Path::new(&d).exists(), "{d} left behind");
    }
}

/// Host test nodes below /dev (device grants must name nodes there), removed on drop.
struct DevDir(std::path::PathBuf);
impl Drop for DevDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn mknod(path: &std::path::Path, major: u32, minor: u32, mode: u32, gid: u32) {
    let st = std::process::Command::new("mknod")
        .arg(path)
        .args(["c", &major.to_string(), &minor.to_string()])
        .status()
        .unwrap();
    assert!(st.success());
    std::os::unix::fs::chown(path, Some(0), Some(gid)).unwrap();
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

/// A granted `0660 root:GROUP` node is usable by the app (a private node owned by its uid),
/// an ungranted node is absent, and one that appears in the sandbox anyway is refused by
/// the kernel (cgroup v1 `devices`) with EPERM. What `permissions` shows, the cgroup's
/// `devices.list` enforces.
#[test]
fn granted_device_node_opens_and_nothing_else_does() {
    require_root!("namespaces, cgroups");
    let id = "org.example.RunGrantedDeviceNodeOpens";
    let devices = std::path::Path::new("/sys/fs/cgroup/devices");
    if !devices.join("devices.list").exists() {
        eprintln!("skipped: no cgroup v1 devices hierarchy");
        return;
    }
    let policy = "[[rule]]\napps = [\"org.example.Hello\"]\ngrant = { devices = [\"gpu\"] }\nresources = { memory-max = \"64M\", pids-max = 16 }\n";
    let dir = DevDir(format!("/dev/appmgr-test-{}-devices", std::process::id()).into());
    fs::create_dir_all(&dir.0).unwrap();
    // /dev/fuse's numbers (opening it only allocates a connection), mode 0660 root:4242:
    // like a render node that belongs to group `render`.
    let gpu = dir.0.join("gpu0");
    mknod(&gpu, 10, 229, 0o660, 4242);
    // Not granted: /dev/net/tun's numbers (opening it creates nothing), world-writable.
    let other = dir.0.join("other");
    mknod(&other, 10, 200, 0o666, 0);

    let e = policy_env(|e| {
        fs::create_dir_all(e.cfg.join("board-support")).unwrap();
        fs::write(e.cfg.join("appmgr.toml"), "board = \"testboard\"\n").unwrap();
        fs::write(
            e.cfg.join("board-support/testboard.toml"),
            format!(
                "name = \"testboard\"\narch = \"{}\"\n[devices.gpu]\nnodes = [\"{}/gpu*\"]\n",
                arch(),
                dir.0.display()
            ),
        )
        .unwrap();
        policy.replace("org.example.Hello", id)
    });
    e.install_script_app(id, SCRIPT, "\n[permissions]\ndevices = [\"gpu\"]\n");

    let perms = e.ok(&["--json", "permissions", id]).json();
    assert_eq!(
        perms["permissions"]["devices"],
        serde_json::json!(["gpu"]),
        "{perms}"
    );
    let uid = e.ok(&["--json", "info", id]).json()["uid"]
        .as_u64()
        .unwrap();

    let (g, o) = (gpu.display().to_string(), other.display().to_string());
    let r = e.ok(&["run", id, "--", "open", &g, &o, "/dev/null"]);
    assert!(r.stdout.contains(&format!("open:{g}:ok")), "{}", r.stdout);
    // Not granted: absent from the sandbox (so `<>` tries to create it, and cannot).
    assert!(
        r.stdout.contains(&format!("open:{o}:")) && !r.stdout.contains(&format!("open:{o}:ok")),
        "{}",
        r.stdout
    );
    let r2 = e.run(&["run", id, "--", "lsn", &o]);
    assert!(
        r2.stderr.contains("No such file or directory"),
        "{}",
        r2.stderr
    );
    assert!(r.stdout.contains("open:/dev/null:ok"), "{}", r.stdout);
    // The host node is untouched: owner, group, mode.
    use std::os::unix::fs::MetadataExt;
    let m = fs::metadata(&gpu).unwrap();
    assert_eq!((m.uid(), m.gid(), m.mode() & 0o7777), (0, 4242, 0o660));

    // While the app runs: its devices.list is exactly the standard nodes, the private pts
    // and the granted node; a node that appears in its /dev (made by root from outside)
    // is refused by the cgroup.
    let sneaky = "/dev/sneaky";
    let child = e
        .cmd(&["run", id, "--", "waitopen", sneaky])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let list = devices.join(format!("appmgr.slice/app-{id}.scope/devices.list"));
    let procs = devices.join(format!("appmgr.slice/app-{id}.scope/cgroup.procs"));
    let t = Instant::now();
    let app = loop {
        if let Some(p) = fs::read_to_string(&procs)
            .ok()
            .and_then(|s| s.lines().next().map(str::to_string))
        {
            break p;
        }
        assert!(t.elapsed() < Duration::from_secs(10), "app did not start");
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut enforced: Vec<String> = fs::read_to_string(&list)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    enforced.sort();
    let mut want: Vec<String> = [
        "c 1:3 rw",
        "c 1:5 rw",
        "c 1:7 rw",
        "c 1:8 rw",
        "c 1:9 rw",
        "c 5:0 rw",
        "c 5:2 rw",
        "c 10:229 rw",
    ]
    .iter()
    .map(|s| s.to_string())
    .chain((136..=143).map(|m| format!("c {m}:* rw")))
    .collect();
    want.sort();
    assert_eq!(enforced, want);
    // Root on the host reaches the sandbox's /dev through /proc/PID/root.
    mknod(
        std::path::Path::new(&format!("/proc/{app}/root{sneaky}")),
        10,
        200,
        0o666,
        0,
    );
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&format!("open:{sneaky}:")) && text.contains("Operation not permitted"),
        "{text}"
    );
    // Inside, the granted node is the app's own: same numbers, its uid, mode 0600.
    let r = e.ok(&["run", id, "--", "lsn", &g]);
    let f: Vec<&str> = r.stdout.split_whitespace().collect();
    assert_eq!(f[0], "crw-------", "{}", r.stdout);
    assert_eq!(
        (f[2], f[3]),
        (&*uid.to_string(), &*uid.to_string()),
        "{}",
        r.stdout
    );
    assert_eq!((f[4], f[5]), ("10,", "229"), "{}", r.stdout);
}

/// Where the kept launch plan of `id` lives.
fn plan_file(e: &Env, id: &str) -> std::path::PathBuf {
    e.state.join("plans").join(format!("{id}.plan"))
}

/// The kept launch plan of `id`: its header words and its body.
fn kept_plan(e: &Env, id: &str) -> (Vec<String>, serde_json::Value) {
    let text = fs::read_to_string(plan_file(e, id)).unwrap();
    let (head, body) = text.split_once('\n').unwrap();
    (
        head.split(' ').map(str::to_string).collect(),
        serde_json::from_str(body).unwrap(),
    )
}

/// Writes `body` as the kept plan of `id`, sealed (the header's digest is the body's).
fn write_plan(e: &Env, id: &str, body: &serde_json::Value, seal_ok: bool) {
    use sha2::Digest;
    let body = serde_json::to_string(body).unwrap();
    let mut seal = hex::encode(sha2::Sha256::digest(body.as_bytes()));
    if !seal_ok {
        seal = seal.replace(&seal[..1], if &seal[..1] == "0" { "1" } else { "0" });
    }
    fs::write(
        plan_file(e, id),
        format!(
            "appmgr-prepared-launch {} {seal}\n{body}",
            appmgr_core::prepared::PREPARED_VERSION
        ),
    )
    .unwrap();
}

fn lang_seen(e: &Env, id: &str) -> String {
    let r = e.ok(&["run", id, "--", "env"]);
    r.stdout
        .lines()
        .find_map(|l| l.strip_prefix("LANG="))
        .unwrap_or_default()
        .to_string()
}

/// Plan at install, apply at launch: install keeps a sealed, root-only plan; `run` applies
/// that plan (a change made to it, sealed, is what runs); a plan whose seal does not match,
/// or that is not root's alone, is ignored and replaced by a fresh derivation.
#[test]
fn a_launch_applies_the_plan_kept_at_install_and_only_a_sealed_one() {
    require_root!("namespaces, cgroups");
    use std::os::unix::fs::MetadataExt;
    let id = "org.example.RunKeptPlan";
    let e = setup(LIMITS, id);
    let dir = fs::symlink_metadata(e.state.join("plans")).unwrap();
    assert!(dir.is_dir());
    assert_eq!((dir.uid(), dir.mode() & 0o7777), (0, 0o700));
    let f = fs::symlink_metadata(plan_file(&e, id)).unwrap();
    assert_eq!((f.uid(), f.mode() & 0o7777, f.nlink()), (0, 0o600, 1));
    let (head, body) = kept_plan(&e, id);
    let version = appmgr_core::prepared::PREPARED_VERSION.to_string();
    assert_eq!(head[..2], ["appmgr-prepared-launch", version.as_str()]);
    assert_eq!(body["spec"]["app-id"], id);
    // Its inputs name the policy file and the app's record, by digest.
    let inputs = body["spec"]["inputs"].as_array().unwrap();
    let named = |suffix: &str| {
        inputs
            .iter()
            .any(|i| i["path"].as_str().unwrap().ends_with(suffix) && i["sha256"].is_string())
    };
    assert!(named("policies.d/50-test.toml"), "{inputs:?}");
    assert!(
        named(&format!("{id}/{}/stable/state.json", arch())),
        "{inputs:?}"
    );
    assert!(named("manifest.toml"), "{inputs:?}");
    // The seccomp filters were compiled at install, not at the first launch.
    assert_eq!(
        fs::read_dir(e.state.join("cache/seccomp")).unwrap().count(),
        2
    );
    assert_eq!(lang_seen(&e, id), "C.UTF-8");

    // The launch applies what the kept plan says.
    let mut changed = body.clone();
    changed["spec"]["lang"] = serde_json::json!("de_DE.UTF-8");
    write_plan(&e, id, &changed, true);
    assert_eq!(lang_seen(&e, id), "de_DE.UTF-8");

    // A broken seal: ignored, derived afresh, and the kept plan is replaced.
    write_plan(&e, id, &changed, false);
    assert_eq!(lang_seen(&e, id), "C.UTF-8");
    assert_eq!(kept_plan(&e, id).1, body);

    // Sealed but not root's: ignored too.
    write_plan(&e, id, &changed, true);
    let path = plan_file(&e, id);
    std::os::unix::fs::chown(&path, Some(65534), None).unwrap();
    assert_eq!(lang_seen(&e, id), "C.UTF-8");
    assert_eq!(kept_plan(&e, id).1, body);
    let f = fs::symlink_metadata(&path).unwrap();
    assert_eq!((f.uid(), f.mode() & 0o7777), (0, 0o600));
}

/// A kept plan is never applied after one of its inputs changed: a new policy file (the
/// directory's listing), an edited one that no longer grants the request, a removed
/// runtime. `reload` and every store change derive the plans again.
#[test]
fn a_kept_plan_never_outlives_its_inputs() {
    require_root!("namespaces, cgroups");
    let id = "org.example.RunStalePlan";
    let e = setup(&LIMITS.replace("memory-max = \"16M\", ", ""), id);
    let memory_max = |e: &Env| {
        let p = e.ok(&["run", "--print-plan", id]).json();
        p["cgroup"]["limits"]["memory-max"].clone()
    };
    assert_eq!(memory_max(&e), serde_json::Value::Null);
    let (_, before) = kept_plan(&e, id);

    // A new policy file: the listing changed, so the new limit applies at once.
    let extra = e.cfg.join("policies.d/60-memory.toml");
    fs::write(
        &extra,
        format!("[[rule]]\napps = [\"{id}\"]\nresources = {{ memory-max = \"16M\" }}\n"),
    )
    .unwrap();
    assert_eq!(memory_max(&e), serde_json::json!(16u64 << 20));
    let r = e.ok(&["run", id, "--", "exit", "0"]);
    assert!(r.stderr.is_empty(), "{}", r.stderr);
    assert_ne!(kept_plan(&e, id).1, before, "the launch kept the new plan");

    // An edited policy file: the next launch applies the new limit, and keeps the plan.
    fs::remove_file(&extra).unwrap();
    fs::write(
        e.cfg.join("policies.d/50-test.toml"),
        format!("[[rule]]\napps = [\"{id}\"]\nresources = {{ pids-max = 8 }}\n"),
    )
    .unwrap();
    let kept = fs::read(plan_file(&e, id)).unwrap();
    e.ok(&["run", id, "--", "exit", "0"]);
    assert_ne!(fs::read(plan_file(&e, id)).unwrap(), kept);
    assert_eq!(kept_plan(&e, id).1["limits"]["limits"]["pids-max"], 8);

    // `reload` derives the kept plans again.
    fs::write(
        e.cfg.join("policies.d/50-test.toml"),
        format!("[[rule]]\napps = [\"{id}\"]\nresources = {{ pids-max = 9 }}\n"),
    )
    .unwrap();
    e.ok(&["reload"]);
    assert_eq!(kept_plan(&e, id).1["limits"]["limits"]["pids-max"], 9);

    // An update and a rollback keep the plan of the version that is current; a removal
    // drops it, and the launch says why.
    assert_eq!(kept_plan(&e, id).1["app-version"], "1.0.0");
    let manifest = app_manifest("1.1.0").replace("org.example.Hello", id);
    e.ok(&[
        "install",
        s(&e.bundle(&manifest, &e.p("runapp"), "runapp2.bundle")),
    ]);
    assert_eq!(kept_plan(&e, id).1["app-version"], "1.1.0");
    e.ok(&["rollback", id]);
    assert_eq!(kept_plan(&e, id).1["app-version"], "1.0.0");
    e.ok(&["remove", id]);
    assert!(!plan_file(&e, id).exists());
    let msg = e.fails(&["run", id], 5);
    assert!(msg.contains("not installed"), "{msg}");
}

/// The launcher checks the plan's input digests itself, before anything is applied: a plan
/// made before a policy file changed is refused naming that file, and the same plan runs
/// while its inputs are unchanged.
#[test]
fn the_launcher_refuses_a_plan_whose_inputs_changed() {
    require_root!("namespaces, cgroups");
    let id = "org.example.RunLauncherStale";
    let e = setup(LIMITS, id);
    let plan = e.ok(&["run", "--print-plan", id, "--", "exit", "3"]).json()["plan"].clone();
    assert!(!plan["inputs"].as_array().unwrap().is_empty(), "{plan}");
    let file = e.p("plan.json");
    fs::write(&file, serde_json::to_vec(&plan).unwrap()).unwrap();
    let launch = || {
        // The plan on fd 3, as `appmgr run` passes it (there, in a sealed memfd).
        let o = std::process::Command::new("/bin/sh")
            .args(["-c", "exec \"$0\" --plan-fd 3 3<\"$1\""])
            .arg(binary("appmgr-launch"))
            .arg(&file)
            .env_clear()
            .output()
            .unwrap();
        (
            o.status.code(),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        )
    };
    // `--print-plan` creates no cgroup: with its inputs unchanged the launcher gets past
    // the check and fails where it opens the app's cgroup.
    let (code, err) = launch();
    assert_eq!(code, Some(125), "{err}");
    assert!(
        err.contains("open cgroup") && !err.contains("stale"),
        "{err}"
    );
    let policy = e.cfg.join("policies.d/50-test.toml");
    fs::write(
        &policy,
        format!("{}\n# edited\n", fs::read_to_string(&policy).unwrap()),
    )
    .unwrap();
    let (code, err) = launch();
    assert_eq!(code, Some(125), "{err}");
    assert!(
        err.contains("stale") && err.contains(policy.to_str().unwrap()),
        "{err}"
    );
}

/// A policy condition on a device node (`has-nodes`) makes the grant depend on whether
/// the node exists: the kept plan names the node among its inputs, so the node appearing
/// or going changes what the next launch applies.
#[test]
fn a_kept_plan_follows_the_device_nodes_a_condition_names() {
    require_root!("namespaces, cgroups");
    let id = "org.example.RunNodeCondition";
    let dir = DevDir(format!("/dev/appmgr-test-{}-cond", std::process::id()).into());
    fs::create_dir_all(&dir.0).unwrap();
    let node = dir.0.join("sensor0");
    let e = policy_env(|e| {
        fs::create_dir_all(e.cfg.join("board-support")).unwrap();
        fs::write(e.cfg.join("appmgr.toml"), "board = \"testboard\"\n").unwrap();
        fs::write(
            e.cfg.join("board-support/testboard.toml"),
            format!(
                "name = \"testboard\"\narch = \"{}\"\n[devices.sensor]\nnodes = [\"{}/sensor*\"]\n",
                arch(),
                dir.0.display()
            ),
        )
        .unwrap();
        format!(
            "[[rule]]\napps = [\"{id}\"]\nwhen = {{ has-nodes = [\"{}\"] }}\nresources = {{ pids-max = 7 }}\n",
            node.display()
        )
    });
    e.install_script_app(id, SCRIPT, "");
    let pids_max =
        |e: &Env| e.ok(&["run", "--print-plan", id]).json()["cgroup"]["limits"]["pids-max"].clone();
    assert_eq!(pids_max(&e), serde_json::Value::Null);
    let (_, body) = kept_plan(&e, id);
    let input = body["spec"]["inputs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["path"] == node.to_str().unwrap())
        .cloned();
    assert_eq!(
        input,
        Some(serde_json::json!({"path": node.to_str().unwrap(), "sha256": null})),
        "{body}"
    );

    // /dev/null's numbers: the node appears, the condition holds, the limit applies.
    mknod(&node, 1, 3, 0o600, 0);
    assert_eq!(pids_max(&e), 7);
    e.ok(&["run", id, "--", "exit", "0"]);
    assert_eq!(kept_plan(&e, id).1["limits"]["limits"]["pids-max"], 7);
    fs::remove_file(&node).unwrap();
    assert_eq!(pids_max(&e), serde_json::Value::Null);
}
