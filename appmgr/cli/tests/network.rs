//! An app's own network as the command line shows it, as root on the host: `appmgr ps`
//! (text and `--json`) gives a running app's address in its network, the address of its
//! slot in `network-pool`, and it is really the app's: the host reaches the app's listen
//! port there and the app sees the host end of its link as the peer. An app without a
//! network shows none. Skipped (with the reason) when not root or without `ip` and `nft`,
//! which CI must have.
use appmgr_testkit::*;
use std::fs;
use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

/// This file's own pool and uids: networks are host-wide (`appmgr-UID`), and other tests
/// run apps with networks in the default ones.
const POOL: &str = "10.238.0.0/24";
const UID_RANGE: (u32, u32) = (71200, 71299);

fn wait_for(what: &str, secs: u64, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `appmgr run ID -- ARGS…` in the background; its first line of output is returned.
fn start(
    e: &Env,
    id: &str,
    args: &[&str],
) -> (Child, BufReader<std::process::ChildStdout>, String) {
    let mut argv = vec!["run", id, "--"];
    argv.extend_from_slice(args);
    let mut child = e
        .cmd(&argv)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut first = String::new();
    out.read_line(&mut first).unwrap();
    (child, out, first.trim().to_string())
}

/// Ends the apps still running when a test fails half-way (`appmgr kill`: the launcher
/// then removes the network).
struct Running<'a>(&'a Env, Vec<&'a str>);

impl Drop for Running<'_> {
    fn drop(&mut self) {
        for id in &self.1 {
            let _ = self.0.run(&["kill", id]);
        }
    }
}

fn entry<'a>(ps: &'a serde_json::Value, id: &str) -> Option<&'a serde_json::Value> {
    ps.as_array().unwrap().iter().find(|p| p["app"] == id)
}

/// The `address` column of app `id`'s line in the text `ps`.
fn text_address(ps: &str, id: &str) -> Option<String> {
    let header: Vec<&str> = ps.lines().next()?.split_whitespace().collect();
    let col = header.iter().position(|h| *h == "address")?;
    ps.lines()
        .skip(1)
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|f| f.first() == Some(&id))
        .and_then(|f| f.get(col).map(|s| s.to_string()))
}

#[test]
fn ps_shows_the_address_the_app_is_reached_at() {
    require_net!("network namespaces, nftables, cgroups");
    let id = "org.example.NetPsListener";
    let plain = "org.example.NetPsPlain";
    let e = Env::new();
    fs::write(
        e.cfg.join("appmgr.toml"),
        format!(
            "uid-range = \"{}-{}\"\nnetwork-pool = \"{POOL}\"\n",
            UID_RANGE.0, UID_RANGE.1
        ),
    )
    .unwrap();
    fs::create_dir_all(e.cfg.join("policies.d")).unwrap();
    fs::write(
        e.cfg.join("policies.d/50-test.toml"),
        format!("[[rule]]\napps = [\"{id}\"]\ngrant = {{ network = {{ listen = [\"7300\"] }} }}\n"),
    )
    .unwrap();
    e.ok(&["install", s(&e.runtime_bundle("1.0.0"))]);
    e.install_probe_app(id, "network = { listen = [\"7300\"] }\n");
    e.install_probe_app(plain, "");
    let uid = e.ok(&["--json", "info", id]).json()["uid"]
        .as_u64()
        .unwrap() as u32;
    let (host_addr, app_addr) = appmgr_sandbox::net::slot_addrs(
        POOL.parse().unwrap(),
        uid.checked_sub(UID_RANGE.0).unwrap(),
    )
    .unwrap();
    assert_eq!(
        net_leftovers(uid),
        Vec::<&str>::new(),
        "a network before the app ran"
    );

    let _running = Running(&e, vec![id, plain]);
    let (mut listener, mut out, first) = start(&e, id, &["net", "listen:7300"]);
    assert_eq!(first, "listening");
    let (mut sleeper, _sleeper_out, first) = start(&e, plain, &["sleep"]);
    assert_eq!(first, "ready");
    assert_eq!(net_leftovers(uid), ["netns", "link", "rules"]);

    // JSON: the app's address for the app with a network, null for the one without.
    let ps = e.ok(&["--json", "ps"]).json();
    let mine = entry(&ps, id).unwrap_or_else(|| panic!("{id} not in {ps}"));
    assert_eq!(mine["address"], app_addr.to_string(), "{mine}");
    // permissions shows the rules a launch applies: the same address, the listen port,
    // no egress; the app without a network has none.
    let perms = e.ok(&["--json", "permissions", id]).json();
    let rules = &perms["network_rules"];
    assert_eq!(rules["address"], app_addr.to_string(), "{perms}");
    assert_eq!(rules["listen"], serde_json::json!(["7300/tcp"]), "{perms}");
    assert_eq!(rules["egress"], serde_json::json!([]), "{perms}");
    let text = e.ok(&["permissions", id]).stdout;
    assert!(text.contains(&format!("address {app_addr}/30")), "{text}");
    assert!(text.contains("  listen 7300/tcp\n"), "{text}");
    let plain_perms = e.ok(&["--json", "permissions", plain]).json();
    assert!(plain_perms.get("network_rules").is_none(), "{plain_perms}");
    let other = entry(&ps, plain).unwrap_or_else(|| panic!("{plain} not in {ps}"));
    assert!(other["address"].is_null(), "{other}");
    // Text: the same, `-` for none.
    let text = e.ok(&["ps"]).stdout;
    assert_eq!(
        text_address(&text, id).as_deref(),
        Some(app_addr.to_string().as_str()),
        "{text}"
    );
    assert_eq!(text_address(&text, plain).as_deref(), Some("-"), "{text}");

    // The address is the app's: the host reaches its listen port there, and the app saw
    // the host end of its link connect.
    let mut conn = std::net::TcpStream::connect_timeout(
        &std::net::SocketAddr::from((app_addr, 7300)),
        Duration::from_secs(3),
    )
    .unwrap_or_else(|err| panic!("connect to {app_addr}:7300: {err}"));
    conn.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let mut line = String::new();
    BufReader::new(&mut conn).read_line(&mut line).unwrap();
    assert_eq!(line, "hello\n");
    let mut rest = String::new();
    out.read_to_string(&mut rest).unwrap();
    let st = listener.wait().unwrap();
    let mut err = String::new();
    let _ = listener.stderr.take().unwrap().read_to_string(&mut err);
    assert!(st.success(), "{st}: {rest}{err}");
    let seen: serde_json::Value = serde_json::from_str(rest.trim()).unwrap();
    assert_eq!(
        seen["listen:7300"],
        format!("accepted {host_addr}"),
        "{seen}"
    );

    // Ended: not in ps, and its network is gone (the launcher removes it).
    let ps = e.ok(&["--json", "ps"]).json();
    assert!(entry(&ps, id).is_none(), "{ps}");
    wait_for("the network to be removed", 5, || {
        net_leftovers(uid).is_empty()
    });

    e.ok(&["kill", plain]);
    sleeper.wait().unwrap();
}
