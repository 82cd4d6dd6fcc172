//! `appmgr run` end to end, as root on the host: the installed app runs sandboxed under the
//! grant `permissions` shows and the cgroup limits policy sets.
mod common;
use common::*;
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
  *) echo "usage" ; exit 2 ;;
esac
"#;

/// Each test uses its own app ID: cgroups are host-wide, and tests run in parallel.
fn setup(policy: &str, id: &str) -> Env {
    if !is_root() {
        panic!("these tests need root (namespaces, cgroups); CI runs them as root");
    }
    let e = Env::new();
    fs::create_dir_all(e.cfg.join("policies.d")).unwrap();
    fs::write(
        e.cfg.join("policies.d/50-test.toml"),
        policy.replace("org.example.Hello", id),
    )
    .unwrap();
    e.ok(&["install", s(&e.runtime_bundle("1.0.0"))]);
    let root = e.p("runapp");
    fs::create_dir_all(root.join("bin")).unwrap();
    fs::write(root.join("bin/hello"), SCRIPT).unwrap();
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(root.join("bin/hello"), fs::Permissions::from_mode(0o755)).unwrap();
    let b = e.bundle(
        &app_manifest("1.0.0").replace("org.example.Hello", id),
        &root,
        "runapp.bundle",
    );
    e.ok(&["install", s(&b)]);
    e
}

const LIMITS: &str = "[[rule]]\napps = [\"org.example.Hello\"]\nresources = { memory-max = \"16M\", memory-swap-max = 0, pids-max = 32, cpu-max = \"50%\" }\n";

#[test]
fn exit_status_signals_identity_and_argv() {
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
    let id = "org.example.RunGrantThroughAPlantedSymlink";
    if !is_root() {
        panic!("these tests need root (namespaces, cgroups); CI runs them as root");
    }
    let e = Env::new();
    let share = e.p("share");
    let victim = e.p("victim");
    fs::create_dir_all(share.join("docs")).unwrap();
    fs::write(share.join("docs/readme"), "grant-content\n").unwrap();
    fs::create_dir_all(&victim).unwrap();
    fs::write(victim.join("secret"), "victim-secret\n").unwrap();
    fs::create_dir_all(e.cfg.join("policies.d")).unwrap();
    fs::write(
        e.cfg.join("policies.d/50-test.toml"),
        format!(
            "[[rule]]\napps = [\"{id}\"]\ngrant = {{ filesystems = [\"{}:rw\"] }}\n",
            share.display()
        ),
    )
    .unwrap();
    e.ok(&["install", s(&e.runtime_bundle("1.0.0"))]);
    let root = e.p("runapp");
    fs::create_dir_all(root.join("bin")).unwrap();
    fs::write(
        root.join("bin/hello"),
        format!("#!/usr/bin/sh\ncat {}/docs/*\n", share.display()),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(root.join("bin/hello"), fs::Permissions::from_mode(0o755)).unwrap();
    let manifest = format!(
        "{}\n[permissions]\nfilesystems = [\"{}/docs:ro\"]\n",
        app_manifest("1.0.0").replace("org.example.Hello", id),
        share.display()
    );
    e.ok(&["install", s(&e.bundle(&manifest, &root, "runapp.bundle"))]);

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
