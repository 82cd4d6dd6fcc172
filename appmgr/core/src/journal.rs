//! Logging for appmgrd and appmgr-portald: structured entries to the systemd journal (native protocol over
//! `/run/systemd/journal/socket`) with stable message IDs, or one line on stderr where no
//! journald runs. Also the per-app output streams (`stdout` protocol) for service apps.

use std::io::Write;
use std::os::unix::net::{UnixDatagram, UnixStream};
use std::path::Path;

/// Stable journal message IDs (`journalctl MESSAGE_ID=...`), a public contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    Installed,
    Updated,
    RolledBack,
    Removed,
    Denied,
    LimitHit,
    ServiceStarted,
    ServiceExited,
    HealthRollback,
    /// The portal service handed a granted resource to an app.
    PortalGranted,
    /// The portal service refused a call (not granted, or a caller that is not an app).
    PortalDenied,
    /// The portal service withdrew what it had handed out (grant revoked, app stopped).
    PortalRevoked,
}

impl Event {
    pub const ALL: [Event; 12] = [
        Event::Installed,
        Event::Updated,
        Event::RolledBack,
        Event::Removed,
        Event::Denied,
        Event::LimitHit,
        Event::ServiceStarted,
        Event::ServiceExited,
        Event::HealthRollback,
        Event::PortalGranted,
        Event::PortalDenied,
        Event::PortalRevoked,
    ];

    pub fn message_id(self) -> &'static str {
        match self {
            Event::Installed => "5d1c6a0e8f2b4c0d9a7e3b1f6c2d8e01",
            Event::Updated => "5d1c6a0e8f2b4c0d9a7e3b1f6c2d8e02",
            Event::RolledBack => "5d1c6a0e8f2b4c0d9a7e3b1f6c2d8e03",
            Event::Removed => "5d1c6a0e8f2b4c0d9a7e3b1f6c2d8e04",
            Event::Denied => "5d1c6a0e8f2b4c0d9a7e3b1f6c2d8e05",
            Event::LimitHit => "5d1c6a0e8f2b4c0d9a7e3b1f6c2d8e06",
            Event::ServiceStarted => "5d1c6a0e8f2b4c0d9a7e3b1f6c2d8e07",
            Event::ServiceExited => "5d1c6a0e8f2b4c0d9a7e3b1f6c2d8e08",
            Event::HealthRollback => "5d1c6a0e8f2b4c0d9a7e3b1f6c2d8e09",
            Event::PortalGranted => "5d1c6a0e8f2b4c0d9a7e3b1f6c2d8e10",
            Event::PortalDenied => "5d1c6a0e8f2b4c0d9a7e3b1f6c2d8e11",
            Event::PortalRevoked => "5d1c6a0e8f2b4c0d9a7e3b1f6c2d8e12",
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Event::Installed => "installed",
            Event::Updated => "updated",
            Event::RolledBack => "rolled-back",
            Event::Removed => "removed",
            Event::Denied => "denied",
            Event::LimitHit => "limit-hit",
            Event::ServiceStarted => "service-started",
            Event::ServiceExited => "service-exited",
            Event::HealthRollback => "health-rollback",
            Event::PortalGranted => "portal-granted",
            Event::PortalDenied => "portal-denied",
            Event::PortalRevoked => "portal-revoked",
        }
    }
}

const JOURNAL_SOCKET: &str = "/run/systemd/journal/socket";
const JOURNAL_STDOUT: &str = "/run/systemd/journal/stdout";

/// Syslog priorities.
pub const ERR: u8 = 3;
pub const WARNING: u8 = 4;
pub const NOTICE: u8 = 5;
pub const INFO: u8 = 6;

static IDENTIFIER: std::sync::OnceLock<&'static str> = std::sync::OnceLock::new();

/// Sets the `SYSLOG_IDENTIFIER` (and stderr prefix) of this process's entries, once, at
/// start; `appmgrd` when never set.
pub fn set_identifier(name: &'static str) {
    let _ = IDENTIFIER.set(name);
}

fn identifier() -> &'static str {
    IDENTIFIER.get().copied().unwrap_or("appmgrd")
}

/// Whether journald runs here (its sockets exist); else logs go to stderr.
pub fn journald_present() -> bool {
    Path::new(JOURNAL_SOCKET).exists()
}

/// Logs `message` with priority and optional structured event and app.
pub fn log(priority: u8, event: Option<Event>, app: Option<&str>, message: &str) {
    if journald_present() && send_native(priority, event, app, message).is_ok() {
        return;
    }
    let tag = match (event, app) {
        (Some(e), Some(a)) => format!(" [{} {a}]", e.name()),
        (Some(e), None) => format!(" [{}]", e.name()),
        _ => String::new(),
    };
    let _ = writeln!(std::io::stderr().lock(), "{}:{tag} {message}", identifier());
}

/// One journal field in the native protocol: `KEY=value\n`, or the binary-safe form
/// when the value holds a newline.
fn field(buf: &mut Vec<u8>, key: &str, value: &str) {
    if value.contains('\n') {
        buf.extend_from_slice(key.as_bytes());
        buf.push(b'\n');
        buf.extend_from_slice(&(value.len() as u64).to_le_bytes());
        buf.extend_from_slice(value.as_bytes());
        buf.push(b'\n');
    } else {
        buf.extend_from_slice(key.as_bytes());
        buf.push(b'=');
        buf.extend_from_slice(value.as_bytes());
        buf.push(b'\n');
    }
}

fn send_native(
    priority: u8,
    event: Option<Event>,
    app: Option<&str>,
    message: &str,
) -> std::io::Result<()> {
    let mut buf = Vec::with_capacity(256);
    field(&mut buf, "MESSAGE", message);
    field(&mut buf, "PRIORITY", &priority.to_string());
    field(&mut buf, "SYSLOG_IDENTIFIER", identifier());
    if let Some(e) = event {
        field(&mut buf, "MESSAGE_ID", e.message_id());
        field(&mut buf, "APPMGR_EVENT", e.name());
    }
    if let Some(a) = app {
        field(&mut buf, "APPMGR_APP", a);
    }
    let sock = UnixDatagram::unbound()?;
    sock.send_to(&buf, JOURNAL_SOCKET)?;
    Ok(())
}

/// A journal stream for a service app's stdout or stderr, tagged with the app ID
/// (`journalctl -t ID`). `None` where no journald runs.
pub fn app_stream(app: &str, priority: u8) -> Option<UnixStream> {
    if !Path::new(JOURNAL_STDOUT).exists() {
        return None;
    }
    let mut s = UnixStream::connect(JOURNAL_STDOUT).ok()?;
    let _ = s.shutdown(std::net::Shutdown::Read);
    // identifier, unit, priority, level prefix, syslog, kmsg, console.
    let header = format!("{app}\n\n{priority}\n0\n0\n0\n0\n");
    s.write_all(header.as_bytes()).ok()?;
    Some(s)
}

/// sd_notify: tells the service manager `state` (`READY=1`, `STATUS=...`,
/// `WATCHDOG=1`). A no-op without `$NOTIFY_SOCKET`.
pub fn sd_notify(state: &str) {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let Ok(sock) = UnixDatagram::unbound() else {
        return;
    };
    let bytes = path.as_encoded_bytes();
    if let Some(name) = bytes.strip_prefix(b"@") {
        use std::os::linux::net::SocketAddrExt;
        if let Ok(addr) = std::os::unix::net::SocketAddr::from_abstract_name(name) {
            let _ = sock.send_to_addr(state.as_bytes(), &addr);
        }
    } else {
        let _ = sock.send_to(state.as_bytes(), Path::new(&path));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_ids_are_unique_128_bit_hex() {
        let all = Event::ALL;
        let mut seen = std::collections::BTreeSet::new();
        for e in all {
            let id = e.message_id();
            assert_eq!(id.len(), 32);
            assert!(id
                .bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
            assert!(seen.insert(id));
        }
    }

    #[test]
    fn native_fields_escape_newlines() {
        let mut b = Vec::new();
        field(&mut b, "MESSAGE", "one");
        field(&mut b, "MESSAGE", "a\nb");
        assert_eq!(&b[..12], b"MESSAGE=one\n");
        assert_eq!(&b[12..20], b"MESSAGE\n");
        assert_eq!(&b[20..28], &3u64.to_le_bytes());
        assert_eq!(&b[28..], b"a\nb\n");
    }
}
