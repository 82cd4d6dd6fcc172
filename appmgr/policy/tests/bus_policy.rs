//! Privileged: the rendered bus policy on a real dbus-daemon. A private bus with a
//! system-bus-like configuration whose *default* context lets every user call the test
//! services, so each denial below is the per-uid section overriding a permissive default.
//! Services are zbus connections of this test (as root, or as an app uid by re-running this
//! test binary under setpriv); clients are `dbus-send` run as app uids with `setpriv`.
//! Every assertion is on exit status and D-Bus error names, none on timing. Skipped (with
//! the reason) when not root or when dbus-daemon, dbus-send, setpriv or unshare is
//! missing.

use appmgr_policy::{render_bus_policy, BusPolicyEntry};
use appmgr_testkit::{BusConfig, Nss, PrivateBus};
use appmgr_types::{AppId, BusName};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Child, ChildStdout, Command, Stdio};

const APP_A: u32 = 70123;
const APP_B: u32 = 70124;
/// A plain user without an entry: only the default context applies.
const PLAIN: u32 = 70999;

const GRANTED: &str = "org.appmgr.Test.Granted";
const OTHER: &str = "org.appmgr.Test.Other";
const PFX_ONE: &str = "org.appmgr.Test.Pfx.One";
/// The name app A owns (as a service app).
const A_NAME: &str = "org.appmgr.Test.AppA";

const ACCESS_DENIED: &str = "org.freedesktop.DBus.Error.AccessDenied";
/// Set in the environment of the re-run test binary that acts as app A's service.
const CHILD_ENV: &str = "APPMGR_TEST_BUS_SERVICE";

fn skip_reason() -> Option<String> {
    if !appmgr_testkit::is_root() {
        return Some("needs root (runs clients as app uids)".into());
    }
    appmgr_testkit::missing_tool(&["dbus-daemon", "dbus-send", "setpriv", "unshare"])
}

/// The kit's system-bus-like configuration whose default context lets every user call the
/// test services, and root own them.
fn config() -> BusConfig {
    BusConfig::system_like(Nss::ExtraUsers(
        [("a", APP_A), ("b", APP_B), ("plain", PLAIN)]
            .into_iter()
            .map(|(n, u)| (format!("appmgr-test-{n}"), u))
            .collect(),
    ))
    .default_rule(r#"<deny send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus" send_member="UpdateActivationEnvironment"/>"#)
    .default_rule("<!-- permissive for everyone: the per-uid app sections must override this -->")
    .default_rule(&format!(r#"<allow send_destination="{GRANTED}"/>"#))
    .default_rule(&format!(r#"<allow send_destination="{OTHER}"/>"#))
    .default_rule(&format!(r#"<allow send_destination="{PFX_ONE}"/>"#))
    .section(
        r#"<policy user="root">
    <allow own_prefix="org.appmgr.Test"/>
    <allow send_destination_prefix="org.appmgr.Test"/>
  </policy>"#,
    )
}

struct Bus {
    // Killed before `dir` is removed.
    _bus: PrivateBus,
    dir: tempfile::TempDir,
    addr: String,
}

impl Bus {
    fn start(entries: &[BusPolicyEntry]) -> Bus {
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::create_dir(dir.path().join("system.d")).unwrap();
        write_policy(dir.path(), entries);
        // dbus-daemon serves a uid, and honours `<policy user="UID">`, only when NSS
        // resolves it (else: "Unknown username", and the connection's Hello is never
        // answered). The app uids get passwd/group entries in a private mount namespace
        // of the daemon only: an overlay on /etc, nothing written to the host's /etc.
        let bus = PrivateBus::start(dir.path(), config());
        // Like the system bus socket: every uid may connect; the policy decides the rest.
        std::fs::set_permissions(bus.socket(), std::fs::Permissions::from_mode(0o666)).unwrap();
        Bus {
            addr: bus.address(),
            _bus: bus,
            dir,
        }
    }

    fn write_policy(&self, entries: &[BusPolicyEntry]) {
        write_policy(self.dir.path(), entries);
    }

    fn reload(&self) {
        let r = self.call(
            None,
            &[
                "--dest=org.freedesktop.DBus",
                "/org/freedesktop/DBus",
                "org.freedesktop.DBus.ReloadConfig",
            ],
        );
        assert!(r.ok, "ReloadConfig failed: {}", r.stderr);
    }

    /// `dbus-send --print-reply ARGS` as `uid` (root when `None`).
    fn call(&self, uid: Option<u32>, args: &[&str]) -> Reply {
        let mut c = match uid {
            Some(u) => {
                let mut c = Command::new("setpriv");
                c.arg(format!("--reuid={u}"))
                    .arg(format!("--regid={u}"))
                    .args(["--clear-groups", "--", "dbus-send"]);
                c
            }
            None => Command::new("dbus-send"),
        };
        c.arg(format!("--bus={}", self.addr))
            .arg("--print-reply")
            .args(args)
            .stdin(Stdio::null());
        let o = c.output().expect("run dbus-send");
        Reply {
            ok: o.status.success(),
            stdout: String::from_utf8_lossy(&o.stdout).into(),
            stderr: String::from_utf8_lossy(&o.stderr).into(),
        }
    }

    /// Calls `org.appmgr.Test.Hello` on `dest`.
    fn hello(&self, uid: Option<u32>, dest: &str) -> Reply {
        self.call(
            uid,
            &[&format!("--dest={dest}"), "/", "org.appmgr.Test.Hello"],
        )
    }

    fn request_name(&self, uid: u32, name: &str) -> Reply {
        self.call(
            Some(uid),
            &[
                "--dest=org.freedesktop.DBus",
                "/org/freedesktop/DBus",
                "org.freedesktop.DBus.RequestName",
                &format!("string:{name}"),
                "uint32:0",
            ],
        )
    }
}

/// The rendered policy for `entries`, atomically, as the bus's drop-in.
fn write_policy(dir: &Path, entries: &[BusPolicyEntry]) {
    let xml = render_bus_policy(entries);
    let p = dir.join("system.d/appmgr-apps.conf");
    let tmp = p.with_extension("tmp");
    std::fs::write(&tmp, xml).unwrap();
    std::fs::rename(&tmp, &p).unwrap();
}

#[derive(Debug)]
struct Reply {
    ok: bool,
    stdout: String,
    stderr: String,
}

impl Reply {
    fn assert_ok(&self, what: &str) {
        assert!(self.ok, "{what}: expected success, got {}", self.stderr);
    }
    fn assert_denied(&self, what: &str) {
        assert!(
            !self.ok,
            "{what}: expected AccessDenied, got {}",
            self.stdout
        );
        assert!(
            self.stderr.contains(&format!("Error {ACCESS_DENIED}")),
            "{what}: expected AccessDenied, got {}",
            self.stderr
        );
    }
}

struct Svc;

#[zbus::interface(name = "org.appmgr.Test")]
impl Svc {
    fn hello(&self) -> String {
        "hello".into()
    }
}

async fn serve(addr: &str, name: &str) -> zbus::Result<zbus::Connection> {
    zbus::connection::Builder::address(addr)?
        .name(name.to_string())?
        .serve_at("/", Svc)?
        .build()
        .await
}

fn bn(s: &str) -> BusName {
    BusName::new(s).unwrap()
}

fn entry(id: &str, uid: u32, talk: &[&str], own: &[&str]) -> BusPolicyEntry {
    BusPolicyEntry {
        app_id: AppId::new(id).unwrap(),
        uid,
        talk: talk.iter().map(|s| bn(s)).collect(),
        own: own.iter().map(|s| bn(s)).collect(),
    }
}

/// App A's service: this test binary re-run as app A's uid, owning `A_NAME` and answering
/// calls until its stdin closes.
struct AppService {
    child: Child,
    _out: BufReader<ChildStdout>,
}

impl AppService {
    fn start(bus: &Bus, uid: u32) -> AppService {
        // A copy the app uid can execute (the target dir may be private to root).
        let exe = bus.dir.path().join("test-bin");
        if !exe.exists() {
            std::fs::copy(std::env::current_exe().unwrap(), &exe).unwrap();
            std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        let mut child = Command::new("setpriv")
            .arg(format!("--reuid={uid}"))
            .arg(format!("--regid={uid}"))
            .args(["--clear-groups", "--"])
            .arg(&exe)
            .args([
                "app_service_child",
                "--exact",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_ENV, format!("{}\n{A_NAME}", bus.addr))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut seen = String::new();
        loop {
            let mut line = String::new();
            if out.read_line(&mut line).unwrap() == 0 {
                panic!("the app's service ended before owning {A_NAME}: {seen}");
            }
            // The harness prints "test NAME ... " before the test's own output.
            if line.trim_end().ends_with("service-ready") {
                break;
            }
            seen.push_str(&line);
        }
        AppService { child, _out: out }
    }
}

impl Drop for AppService {
    fn drop(&mut self) {
        drop(self.child.stdin.take());
        let _ = self.child.wait();
    }
}

/// Not a test of its own: the body of [`AppService`], run in a child process.
#[test]
#[ignore = "helper process for app_uids_get_exactly_their_bus_grants"]
fn app_service_child() {
    let Ok(spec) = std::env::var(CHILD_ENV) else {
        return;
    };
    let (addr, name) = spec.split_once('\n').unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let _conn = rt
        .block_on(serve(addr, name))
        .unwrap_or_else(|e| panic!("owning {name}: {e}"));
    println!("service-ready");
    std::io::stdout().flush().unwrap();
    // Serve until the test closes our stdin.
    let mut sink = String::new();
    let _ = std::io::stdin().read_line(&mut sink);
}

#[test]
fn app_uids_get_exactly_their_bus_grants() {
    appmgr_testkit::skip_if!(skip_reason());
    let a = entry(
        "org.example.AppA",
        APP_A,
        &[GRANTED, "org.appmgr.Test.Pfx.*"],
        &[A_NAME],
    );
    let b = entry("org.example.AppB", APP_B, &[], &[]);
    let bus = Bus::start(&[a.clone(), b.clone()]);

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let _services: Vec<zbus::Connection> = [GRANTED, OTHER, PFX_ONE]
        .iter()
        .map(|n| {
            rt.block_on(serve(&bus.addr, n))
                .unwrap_or_else(|e| panic!("service {n}: {e}"))
        })
        .collect();

    // Root (and the test config) reach every service: the services work.
    for n in [GRANTED, OTHER, PFX_ONE] {
        bus.hello(None, n).assert_ok(n);
    }

    // A user without an entry gets the permissive default context: both services.
    bus.hello(Some(PLAIN), GRANTED)
        .assert_ok("plain user -> Granted");
    bus.hello(Some(PLAIN), OTHER)
        .assert_ok("plain user -> Other");

    // A uid NSS cannot resolve is not served at all (fail closed): dbus-daemon never
    // answers its Hello. App uids therefore need passwd/group entries (see docs/policy.md).
    let r = bus.call(
        Some(70777),
        &[
            "--dest=org.freedesktop.DBus",
            "/org/freedesktop/DBus",
            "org.freedesktop.DBus.ListNames",
        ],
    );
    assert!(
        !r.ok,
        "a uid without a passwd entry was served: {}",
        r.stdout
    );

    // App A: exactly its talk grants (a plain name and a prefix), not the rest.
    let r = bus.hello(Some(APP_A), GRANTED);
    r.assert_ok("A -> Granted");
    assert!(r.stdout.contains("\"hello\""), "{}", r.stdout);
    bus.hello(Some(APP_A), PFX_ONE)
        .assert_ok("A -> Pfx.One (prefix grant)");
    bus.hello(Some(APP_A), OTHER).assert_denied("A -> Other");

    // App B has an entry without grants: nothing, though the default context would allow.
    bus.hello(Some(APP_B), GRANTED)
        .assert_denied("B -> Granted");
    bus.hello(Some(APP_B), OTHER).assert_denied("B -> Other");

    // Every app still reaches the bus driver, but not its privileged parts.
    for uid in [APP_A, APP_B] {
        bus.call(
            Some(uid),
            &[
                "--dest=org.freedesktop.DBus",
                "/org/freedesktop/DBus",
                "org.freedesktop.DBus.ListNames",
            ],
        )
        .assert_ok("ListNames");
        bus.call(
            Some(uid),
            &[
                "--dest=org.freedesktop.DBus",
                "/org/freedesktop/DBus",
                "org.freedesktop.DBus.UpdateActivationEnvironment",
                "dict:string:string:PATH,/tmp",
            ],
        )
        .assert_denied("UpdateActivationEnvironment");
    }

    // Owning: A its granted name only; B and a plain user nothing.
    let r = bus.request_name(APP_A, A_NAME);
    r.assert_ok("A owns its name");
    assert!(r.stdout.contains("uint32 1"), "{}", r.stdout);
    bus.request_name(APP_A, "org.appmgr.Test.NotA")
        .assert_denied("A owns another name");
    bus.request_name(APP_B, A_NAME)
        .assert_denied("B owns A's name");
    bus.request_name(PLAIN, A_NAME)
        .assert_denied("plain user owns a name");

    // A as a service: its replies pass its `deny send_destination="*"` (requested replies),
    // so root's call is answered; B may not call it.
    {
        let _svc = AppService::start(&bus, APP_A);
        let r = bus.hello(None, A_NAME);
        r.assert_ok("root -> A's service");
        assert!(r.stdout.contains("\"hello\""), "{}", r.stdout);
        bus.hello(Some(APP_B), A_NAME)
            .assert_denied("B -> A's service");
    }

    // A grant added later: rewrite the drop-in, reload, and the name becomes reachable.
    let mut a2 = a.clone();
    a2.talk.push(bn(OTHER));
    bus.write_policy(&[a2, b]);
    bus.reload();
    bus.hello(Some(APP_A), OTHER)
        .assert_ok("A -> Other after reload");
    bus.hello(Some(APP_A), GRANTED)
        .assert_ok("A -> Granted after reload");
    bus.hello(Some(APP_B), OTHER)
        .assert_denied("B -> Other after reload");
}
