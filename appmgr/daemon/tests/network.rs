//! Service apps' own networks under appmgrd, as root, on a private dbus-daemon: while a
//! service with a network grant runs, its namespace (`/run/netns/appmgr-UID`), host
//! interface (`am-UID`) and nft rules (chains `aUID_*` in `inet appmgr`) exist and `ps` (through the
//! daemon and locally) shows the address it is reached at; when appmgrd stops it, all three
//! go; when appmgrd was SIGKILLed, the next appmgrd stops the leftover instance, starts the
//! service afresh, and what is left of the network is the new instance's (its lock held);
//! when appmgrd ends (SIGTERM), nothing is left. Skipped (with the reason) when not root or
//! without `ip` and `nft`, which CI must have. The CLI binaries are not this crate's: `cargo
//! test --workspace` builds them, or `cargo build --workspace --bins` first.
use appmgr_testkit::*;
use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

/// This file's own pool and uids: networks are host-wide (`appmgr-UID`), and other tests
/// run apps with networks in the default ones.
const POOL: &str = "10.239.0.0/24";
const UID_RANGE: (u32, u32) = (71300, 71399);
const PORT: u16 = 7300;
/// The names test's own uids (its service runs beside the other test's, which would have
/// the same network, `appmgr-UID`, in the same range).
const NAMES_UID_RANGE: (u32, u32) = (71400, 71499);
const NAMES_POOL: &str = "10.239.1.0/24";

mod harness;
use harness::Daemon;

/// Kills whatever of app `id` still runs when a test fails half-way (an instance a killed
/// appmgrd left, which no daemon stops), and collects its network.
struct Leftover<'a>(&'a Env, &'a str);

impl Drop for Leftover<'_> {
    fn drop(&mut self) {
        let _ = self.0.run(&["--direct", "kill", self.1]);
        let _ = appmgr_sandbox::net::remove_stale();
    }
}

const ALL: [&str; 3] = ["netns", "link", "rules"];

fn wait_for(what: &str, secs: u64, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn wait_gone(uid: u32, when: &str) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !net_leftovers(uid).is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(
        net_leftovers(uid),
        Vec::<&str>::new(),
        "the network of uid {uid} is left {when}"
    );
}

fn status(e: &Env, id: &str) -> serde_json::Value {
    let r = e.run(&["--json", "status", id]);
    if r.code != 0 {
        return serde_json::Value::Null;
    }
    r.json()
}

fn running_pid(e: &Env, id: &str) -> Option<u64> {
    let st = status(e, id);
    (st["state"] == "running")
        .then(|| st["pid"].as_u64())
        .flatten()
}

/// `id`'s address as `ps --json` shows it (`args` before `ps`: `--direct` or nothing).
fn ps_address(e: &Env, args: &[&str], id: &str) -> serde_json::Value {
    harness::ps_entry(e, args, id)["address"].clone()
}

/// The body of `GET /marker` from the service's web server at `addr`.
fn fetch_marker(addr: std::net::Ipv4Addr) -> String {
    let mut c = std::net::TcpStream::connect_timeout(
        &std::net::SocketAddr::from((addr, PORT)),
        Duration::from_secs(3),
    )
    .unwrap_or_else(|err| panic!("connect to {addr}:{PORT}: {err}"));
    c.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    c.write_all(b"GET /marker HTTP/1.0\r\n\r\n").unwrap();
    let mut r = String::new();
    c.read_to_string(&mut r).unwrap();
    r
}

/// Installs service app `id` (the runtime must be installed) whose `/app/bin/hello` runs
/// `script` in sh, with `permissions` (one TOML line); returns its uid. Files the caller
/// put under `svc/` go into the bundle too.
fn install_service(e: &Env, id: &str, script: &str, permissions: &str) -> u32 {
    let root = e.p("svc");
    fs::create_dir_all(root.join("bin")).unwrap();
    fs::write(root.join("bin/hello"), format!("#!/usr/bin/sh\n{script}\n")).unwrap();
    fs::set_permissions(root.join("bin/hello"), fs::Permissions::from_mode(0o755)).unwrap();
    let manifest = format!(
        "{}\n[permissions]\n{permissions}\n\n[service]\nready = \"started\"\n",
        app_manifest("1.0.0").replace("org.example.Hello", id)
    );
    e.ok(&[
        "--direct",
        "install",
        s(&e.bundle(&manifest, &root, "svc.bundle")),
    ]);
    e.ok(&["--direct", "--json", "info", id]).json()["uid"]
        .as_u64()
        .unwrap() as u32
}

/// Whether the network's lock is held: [`appmgr_sandbox::net::remove_stale`] (what
/// appmgrd does at start) leaves the network alone.
fn kept_by_remove_stale(uid: u32) -> bool {
    let removed = appmgr_sandbox::net::remove_stale().unwrap();
    !removed.contains(&format!("appmgr-{uid}"))
}

#[test]
fn a_services_network_lives_and_goes_with_the_service() {
    require_net!("runs appmgrd on a private dbus-daemon; network namespaces, nftables");
    let id = "org.example.NetService";
    let e = Env::new();
    fs::create_dir_all(e.cfg.join("policies.d")).unwrap();
    fs::write(
        e.cfg.join("policies.d/50-test.toml"),
        format!(
            "[[rule]]\napps = [\"{id}\"]\ngrant = {{ network = {{ listen = [\"{PORT}\"] }} }}\n\
             service = {{ autostart = true, restart = \"on-failure\", restart-delay-ms = 100 }}\n"
        ),
    )
    .unwrap();
    fs::write(e.cfg.join("group"), "root:x:0:\n").unwrap();
    fs::write(
        e.cfg.join("appmgr.toml"),
        format!(
            "uid-range = \"{}-{}\"\nnetwork-pool = \"{POOL}\"\n",
            UID_RANGE.0, UID_RANGE.1
        ),
    )
    .unwrap();
    e.ok(&["--direct", "install", s(&e.runtime_bundle("1.0.0"))]);
    // A web server on the listen port, serving a marker only this test knows.
    let marker = format!("appmgr-net-test-{}", std::process::id());
    fs::create_dir_all(e.p("svc/share")).unwrap();
    fs::write(e.p("svc/share/marker"), &marker).unwrap();
    let uid = install_service(
        &e,
        id,
        &format!("exec busybox httpd -f -p {PORT} -h /app/share"),
        &format!("network = {{ listen = [\"{PORT}\"] }}"),
    );
    let (_, app_addr) = appmgr_sandbox::net::slot_addrs(
        POOL.parse().unwrap(),
        uid.checked_sub(UID_RANGE.0).unwrap(),
    )
    .unwrap();
    let _leftover = Leftover(&e, id);
    assert_eq!(
        net_leftovers(uid),
        Vec::<&str>::new(),
        "a network before the app ran"
    );

    // Autostarted: its network exists, ps shows its address (through appmgrd and
    // locally), and the app answers there.
    let mut d = Daemon::start(&e);
    wait_for("autostart", 20, || running_pid(&e, id).is_some());
    assert_eq!(net_leftovers(uid), ALL);
    assert_eq!(ps_address(&e, &[], id), app_addr.to_string());
    assert_eq!(ps_address(&e, &["--direct"], id), app_addr.to_string());
    let r = fetch_marker(app_addr);
    assert!(r.contains(&marker), "{r}");

    // Stopped through appmgrd: all of it goes.
    let r = e.ok(&["--json", "stop", id]);
    assert_eq!(r.json()["state"], "stopped");
    wait_gone(uid, "after Stop");

    // Started again through appmgrd, then appmgrd is SIGKILLed: the instance it left
    // keeps running with its network, which is not stale (init holds the lock).
    e.ok(&["start", id]);
    wait_for("Start", 20, || running_pid(&e, id).is_some());
    assert_eq!(net_leftovers(uid), ALL);
    let old = running_pid(&e, id).unwrap();
    d.kill9();
    assert!(Path::new(&format!("/proc/{old}")).exists());
    assert_eq!(net_leftovers(uid), ALL);
    assert!(
        kept_by_remove_stale(uid),
        "a running app's network was removed"
    );
    assert!(fetch_marker(app_addr).contains(&marker));

    // The next appmgrd stops the leftover and autostarts the service afresh: the network
    // there is the new instance's (held: nothing stale is removed), and it answers.
    d.spawn();
    wait_for("the restart by the new appmgrd", 20, || {
        running_pid(&e, id).is_some_and(|p| p != old)
    });
    wait_for("the leftover to end", 10, || {
        fs::read_to_string(format!("/proc/{old}/stat")).map_or(true, |st| st.contains(") Z "))
    });
    assert!(d.log().contains("leftover"), "{}", d.log());
    assert_eq!(net_leftovers(uid), ALL);
    assert!(
        kept_by_remove_stale(uid),
        "the new instance's network was removed"
    );
    assert_eq!(net_leftovers(uid), ALL);
    assert_eq!(ps_address(&e, &[], id), app_addr.to_string());
    let r = fetch_marker(app_addr);
    assert!(r.contains(&marker), "{r}");

    // Killed through appmgrd (not restarted): gone; started again, then appmgrd ends
    // (SIGTERM stops its services): gone.
    e.ok(&["kill", id]);
    wait_gone(uid, "after Kill");
    e.ok(&["start", id]);
    wait_for("Start", 20, || running_pid(&e, id).is_some());
    assert_eq!(net_leftovers(uid), ALL);
    drop(d);
    wait_gone(uid, "after appmgrd ended");

    // An instance nobody watches any more (its appmgrd was SIGKILLed, none runs now),
    // ended by `appmgr kill`: the kill removes its network.
    let mut d = Daemon::start(&e);
    wait_for("autostart", 20, || running_pid(&e, id).is_some());
    d.kill9();
    assert_eq!(net_leftovers(uid), ALL);
    e.ok(&["--direct", "kill", id]);
    wait_gone(uid, "after kill of an unwatched instance");
}

/// The addresses in the nft set of app `uid`'s first name.
fn name_set(uid: u32) -> Vec<String> {
    let o = std::process::Command::new("nft")
        .args([
            "-j",
            "list",
            "set",
            "inet",
            "appmgr",
            &format!("a{uid}_name_0"),
        ])
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap_or_default();
    let mut got: Vec<String> = v["nftables"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|x| x["set"]["elem"].as_array())
        .flatten()
        .filter_map(|e| e.as_str().map(str::to_string))
        .collect();
    got.sort();
    got
}

#[test]
fn a_services_names_follow_their_ttl() {
    require_net!("runs appmgrd on a private dbus-daemon; network namespaces, nftables");
    let id = "org.example.NetNames";
    let e = Env::new();
    // Addresses only written into rules, never contacted (TEST-NET-1).
    let (a, b): (std::net::Ipv4Addr, std::net::Ipv4Addr) =
        ("192.0.2.10".parse().unwrap(), "192.0.2.11".parse().unwrap());
    let dns = Dnsmasq::start(&e.p(""), "svc.test", a);
    let answers = |addr| {
        let r = appmgr_sandbox::netnames::Resolver::new(&[dns.server()]);
        move || matches!(r.resolve("svc.test"), Ok(x) if x.addrs == [addr])
    };
    dns.wait_for("svc.test", answers(a));
    fs::create_dir_all(e.cfg.join("policies.d")).unwrap();
    fs::write(
        e.cfg.join("policies.d/50-test.toml"),
        format!(
            "[[rule]]\napps = [\"{id}\"]\ngrant = {{ network = {{ egress = [\"svc.test:7005\"] }} }}\n\
             service = {{ autostart = true }}\n"
        ),
    )
    .unwrap();
    fs::write(e.cfg.join("group"), "root:x:0:\n").unwrap();
    fs::write(
        e.cfg.join("appmgr.toml"),
        format!(
            "uid-range = \"{}-{}\"\nnetwork-pool = \"{NAMES_POOL}\"\nnetwork-resolvers = [\"{}\"]\n",
            NAMES_UID_RANGE.0,
            NAMES_UID_RANGE.1,
            dns.server()
        ),
    )
    .unwrap();
    e.ok(&["--direct", "install", s(&e.runtime_bundle("1.0.0"))]);
    let uid = install_service(
        &e,
        id,
        "exec busybox sleep 600",
        "network = { egress = [\"svc.test:7005\"] }",
    );
    let _leftover = Leftover(&e, id);
    // permissions asks the configured server now, and says when it would ask again.
    let perms = e.ok(&["--direct", "--json", "permissions", id]).json();
    assert_eq!(
        perms["network_rules"]["egress"],
        serde_json::json!([format!("svc.test:7005/tcp ({a}; looked up again in 5 s)")]),
        "{perms}"
    );

    let mut d = Daemon::start(&e);
    wait_for("autostart", 20, || running_pid(&e, id).is_some());
    let hosts = appmgr_sandbox::net::names_dir(&format!("appmgr-{uid}")).join("hosts");
    let lines = |p: &Path| fs::read_to_string(p).unwrap_or_default();
    assert_eq!(name_set(uid), [a.to_string()]);
    assert!(
        lines(&hosts).ends_with(&format!("{a}\tsvc.test\n")),
        "{}",
        lines(&hosts)
    );
    // The name moves: within its TTL (5 s) and a margin, appmgrd has the service's rules
    // and /etc/hosts follow, and only the new address is allowed.
    dns.set("svc.test", b);
    dns.wait_for("svc.test", answers(b));
    wait_for("the refresh", 20, || name_set(uid) == [b.to_string()]);
    wait_for("the new /etc/hosts", 5, || {
        lines(&hosts).ends_with(&format!("{b}\tsvc.test\n"))
    });
    assert!(!lines(&hosts).contains(&a.to_string()), "{}", lines(&hosts));

    e.ok(&["--json", "stop", id]);
    wait_gone(uid, "after Stop");
    assert!(!hosts.exists());
    d.terminate();
}
