//! The appmgrd test harness shared by tests/daemon.rs and tests/network.rs: a private
//! bus with a system-bus-like policy and an appmgrd serving an Env's state dir on it.
#![allow(dead_code)]
use appmgr_testkit::*;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

pub const BUS_NAME: &str = "org.appmgr.Manager1";

pub fn appmgrd_bin() -> PathBuf {
    binary("appmgrd")
}

/// A private bus (system-bus-like policy plus the shipped appmgrd bus policy) and an
/// appmgrd serving the Env's state dir on it. Both are killed on drop.
pub struct Daemon {
    // Dropped after `Drop::drop` has ended appmgrd.
    pub _bus: PrivateBus,
    pub daemon: Option<Child>,
    pub address: String,
    pub policy_dir: PathBuf,
    pub userdb: PathBuf,
    pub state: PathBuf,
    pub cfg: PathBuf,
    pub stderr: PathBuf,
}

impl Daemon {
    pub fn start(e: &Env) -> Daemon {
        // Unprivileged callers must reach the bus socket and the daemon's files.
        fs::set_permissions(e.dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
        let busdir = e.p("bus");
        fs::create_dir_all(busdir.join("system.d")).unwrap();
        // The daemon's own policy file, as shipped.
        fs::copy(
            repo_root().join("appmgr/daemon/data/org.appmgr.Manager1.conf"),
            busdir.join("system.d/org.appmgr.Manager1.conf"),
        )
        .expect("appmgr/daemon/data/org.appmgr.Manager1.conf is shipped");
        // dbus-daemon serves a uid, and applies `<policy user="UID">`, only when NSS
        // resolves it: appmgrd publishes the app uids as nss-systemd user records. The bus
        // runs in its own mount namespace where /run/userdb is the directory appmgrd
        // writes to and nsswitch.conf consults nss-systemd; the host is not touched.
        let bus = PrivateBus::start(
            &busdir,
            BusConfig::system_like(Nss::Userdb).default_rule(
                r#"<allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus.Monitoring"/>"#,
            ),
        );
        let mut d = Daemon {
            address: bus.address(),
            policy_dir: bus.policy_dir(),
            userdb: bus.userdb_dir(),
            _bus: bus,
            daemon: None,
            state: e.state.clone(),
            cfg: e.cfg.clone(),
            stderr: e.p("appmgrd.log"),
        };
        d.spawn();
        d
    }

    pub fn spawn(&mut self) {
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.stderr)
            .unwrap();
        let child = Command::new(appmgrd_bin())
            .args(["--state-dir", s(&self.state), "--config-dir", s(&self.cfg)])
            .args(["--bus-address", &self.address])
            .args([
                "--bus-policy-file",
                s(&self.policy_dir.join("appmgr-apps.conf")),
            ])
            .args(["--system-bus-socket", "none"])
            .args(["--group-file", s(&self.cfg.join("group"))])
            .args(["--userdb-dir", s(&self.userdb)])
            .env_remove("NOTIFY_SOCKET")
            .env("APPMGR_LAUNCH", binary("appmgr-launch"))
            .stderr(log)
            .spawn()
            .unwrap();
        self.daemon = Some(child);
        // Up when it holds the lock and owns its name.
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let owned = Command::new("dbus-send")
                .arg(format!("--bus={}", self.address))
                .args([
                    "--print-reply",
                    "--dest=org.freedesktop.DBus",
                    "/org/freedesktop/DBus",
                ])
                .arg("org.freedesktop.DBus.NameHasOwner")
                .arg(format!("string:{BUS_NAME}"))
                .output()
                .unwrap();
            // Ready: the name is owned and the address the CLI reads is written (just
            // after the name; a snapshot taken in between would see it appear).
            if String::from_utf8_lossy(&owned.stdout).contains("boolean true")
                && self.state.join("daemon.bus-address").exists()
            {
                break;
            }
            if let Some(st) = self.daemon.as_mut().unwrap().try_wait().unwrap() {
                panic!("appmgrd exited ({st}): {}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "appmgrd did not come up: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn log(&self) -> String {
        fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    pub fn kill9(&mut self) {
        if let Some(mut c) = self.daemon.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn terminate(&mut self) {
        if let Some(mut c) = self.daemon.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &c.id().to_string()])
                .status();
            let _ = c.wait();
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- appmgrd's log ---\n{}", self.log());
        }
        self.terminate();
    }
}

/// The one `ps --json` entry of app `id` (`args` before `ps`: `--direct` or nothing).
pub fn ps_entry(e: &Env, args: &[&str], id: &str) -> serde_json::Value {
    let mut argv = vec!["--json"];
    argv.extend_from_slice(args);
    argv.push("ps");
    let ps = e.ok(&argv).json();
    let mine: Vec<_> = ps
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["app"] == id)
        .collect();
    assert_eq!(mine.len(), 1, "{ps}");
    mine[0].clone()
}
