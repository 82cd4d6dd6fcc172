//! A private dbus-daemon for tests: a system-bus-like configuration (everything a user may
//! do on Debian's system bus by default, method calls to services denied unless a policy
//! allows them), an `<includedir>` for policy drop-ins, and its own mount namespace where
//! NSS resolves the uids the test needs (dbus-daemon serves a uid, and applies
//! `<policy user="UID">`, only when NSS resolves it). The host's /run and /etc are not
//! touched. Up within a bounded wait; killed on drop.

use std::fs;
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// How long the bus may take to listen.
const STARTUP: Duration = Duration::from_secs(10);

/// How the bus resolves uids.
#[derive(Clone, Debug)]
pub enum Nss {
    /// `/run/userdb` is `DIR/userdb` (where appmgrd publishes the app uids as user records)
    /// and nsswitch.conf consults nss-systemd.
    Userdb,
    /// These `(name, uid)` users (each with its own group, gid = uid) are appended to
    /// passwd and group in an overlay on /etc.
    ExtraUsers(Vec<(String, u32)>),
}

/// What goes into the bus configuration besides the system-bus-like defaults.
#[derive(Clone, Debug)]
pub struct BusConfig {
    default_rules: String,
    sections: String,
    nss: Nss,
}

impl BusConfig {
    /// The system-bus-like defaults only.
    pub fn system_like(nss: Nss) -> BusConfig {
        BusConfig {
            default_rules: String::new(),
            sections: String::new(),
            nss,
        }
    }

    /// Adds a rule (an `<allow …/>` or `<deny …/>` line) at the end of the default context
    /// (later rules override earlier ones).
    pub fn default_rule(mut self, rule: &str) -> BusConfig {
        self.default_rules
            .push_str(&format!("    {}\n", rule.trim()));
        self
    }

    /// Adds a `<policy …>…</policy>` section after the default one.
    pub fn section(mut self, xml: &str) -> BusConfig {
        self.sections.push_str(&format!("  {}\n", xml.trim()));
        self
    }

    /// The configuration file's text for a bus listening on `sock`, including `incl`.
    pub fn render(&self, sock: &Path, incl: &Path) -> String {
        format!(
            r#"<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path={sock}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <deny own="*"/>
    <deny send_type="method_call"/>
    <allow send_type="signal"/>
    <allow send_requested_reply="true" send_type="method_return"/>
    <allow send_requested_reply="true" send_type="error"/>
    <allow receive_type="method_call"/>
    <allow receive_type="method_return"/>
    <allow receive_type="error"/>
    <allow receive_type="signal"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus.Introspectable"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus.Properties"/>
{rules}  </policy>
{sections}  <includedir>{incl}</includedir>
</busconfig>
"#,
            sock = sock.display(),
            incl = incl.display(),
            rules = self.default_rules,
            sections = self.sections,
        )
    }
}

/// A running private bus. Its files are in the directory given to [`PrivateBus::start`]:
/// `bus.conf`, `bus.sock`, `system.d/` (policy drop-ins: files put there before the start
/// are read at once, later ones on `ReloadConfig`), `userdb/` and `nsswitch.conf`
/// ([`Nss::Userdb`]) or `etc-up/`, `etc-work/` ([`Nss::ExtraUsers`]).
pub struct PrivateBus {
    dir: PathBuf,
    child: Child,
}

impl PrivateBus {
    /// Starts dbus-daemon (needs root: it runs in its own mount namespace) and returns once
    /// it listens; panics if it exits or is not listening within 10 s.
    pub fn start(dir: &Path, config: BusConfig) -> PrivateBus {
        let incl = dir.join("system.d");
        fs::create_dir_all(&incl).unwrap();
        let conf = dir.join("bus.conf");
        fs::write(&conf, config.render(&dir.join("bus.sock"), &incl)).unwrap();
        let setup = match &config.nss {
            Nss::Userdb => {
                fs::create_dir_all(dir.join("userdb")).unwrap();
                fs::write(
                    dir.join("nsswitch.conf"),
                    "passwd: files systemd\ngroup: files systemd\nshadow: files\nhosts: files\n",
                )
                .unwrap();
                format!(
                    "mount -t tmpfs tmpfs /run; mkdir /run/userdb; \
                     mount --bind {d}/userdb /run/userdb; \
                     mount --bind {d}/nsswitch.conf /etc/nsswitch.conf",
                    d = dir.display()
                )
            }
            Nss::ExtraUsers(users) => {
                let (up, work) = (dir.join("etc-up"), dir.join("etc-work"));
                fs::create_dir_all(&up).unwrap();
                fs::create_dir_all(&work).unwrap();
                let mut pw = String::new();
                let mut gr = String::new();
                for (name, uid) in users {
                    pw.push_str(&format!(
                        "{name}:x:{uid}:{uid}::/nonexistent:/usr/sbin/nologin\n"
                    ));
                    gr.push_str(&format!("{name}:x:{uid}:\n"));
                }
                fs::write(dir.join("passwd.add"), pw).unwrap();
                fs::write(dir.join("group.add"), gr).unwrap();
                format!(
                    "mount -t overlay overlay -o lowerdir=/etc,upperdir={up},workdir={work} /etc; \
                     cat {d}/passwd.add >> /etc/passwd; cat {d}/group.add >> /etc/group",
                    up = up.display(),
                    work = work.display(),
                    d = dir.display()
                )
            }
        };
        let script = format!(
            "set -e; {setup}; \
             exec dbus-daemon --config-file={conf} --nofork --nopidfile --print-address=1",
            conf = conf.display()
        );
        let mut child = Command::new("unshare")
            .args(["--mount", "--propagation", "private", "--", "sh", "-c"])
            .arg(script)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .expect("run unshare and dbus-daemon (scripts/install-deps installs dbus)");
        // dbus-daemon prints its address once it listens; EOF means it exited.
        let out = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = std::io::BufReader::new(out).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = rx.recv_timeout(STARTUP);
        let bus = PrivateBus {
            dir: dir.to_path_buf(),
            child,
        };
        match line {
            Ok(l) if l.starts_with("unix:") => bus,
            Ok(l) => panic!("the private bus did not come up (dbus-daemon printed {l:?})"),
            Err(_) => panic!("the private bus did not come up within {STARTUP:?}"),
        }
    }

    /// The bus's address (`unix:path=DIR/bus.sock`).
    pub fn address(&self) -> String {
        format!("unix:path={}", self.socket().display())
    }

    /// The bus's socket.
    pub fn socket(&self) -> PathBuf {
        self.dir.join("bus.sock")
    }

    /// The policy drop-in directory (`<includedir>`).
    pub fn policy_dir(&self) -> PathBuf {
        self.dir.join("system.d")
    }

    /// The directory that is the bus's /run/userdb ([`Nss::Userdb`]).
    pub fn userdb_dir(&self) -> PathBuf {
        self.dir.join("userdb")
    }
}

impl Drop for PrivateBus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// dbus-daemon applies the last matching rule: added default rules come after the
    /// system-bus-like ones (so they can override them), inside the default context, and
    /// added sections after it.
    #[test]
    fn added_rules_follow_the_defaults_in_order() {
        let c = BusConfig::system_like(Nss::Userdb)
            .default_rule(r#"<allow send_destination="a.B"/>"#)
            .default_rule(r#"<deny send_destination="a.B"/>"#)
            .section("<policy user=\"root\">\n    <allow own=\"*\"/>\n  </policy>")
            .render(Path::new("/d/bus.sock"), Path::new("/d/system.d"));
        let at = |s: &str| {
            c.find(s)
                .unwrap_or_else(|| panic!("{s} not in the config:\n{c}"))
        };
        assert!(c.contains("<listen>unix:path=/d/bus.sock</listen>"));
        let base = at(r#"send_interface="org.freedesktop.DBus.Properties"/>"#);
        let allow = at(r#"<allow send_destination="a.B"/>"#);
        let deny = at(r#"<deny send_destination="a.B"/>"#);
        let end_default = at("</policy>");
        let root = at("<policy user=\"root\">");
        let incl = at("<includedir>/d/system.d</includedir>");
        assert!(base < allow && allow < deny && deny < end_default, "{c}");
        assert!(end_default < root && root < incl, "{c}");
        assert_eq!(c.matches("<policy").count(), 2, "{c}");
        assert!(c.ends_with("</busconfig>\n"));
    }
}
