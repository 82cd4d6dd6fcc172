//! The CLI's second path: when appmgrd serves the state directory, commands go through
//! its D-Bus API (`org.appmgr.Manager1`) instead of taking the state lock themselves.
//! The daemon runs the very same command functions, so the output and the exit codes are
//! the same on both paths: a reply carries the command's text and JSON, an error reply's
//! name maps one to one to an exit code (`ErrorClass::from_dbus_error_name`).
//!
//! How the CLI knows: appmgrd holds an exclusive `flock` on `STATE/daemon/lock` for as
//! long as it runs (`STATE/daemon` is root's, mode 0700: no other user can open the lock,
//! let alone hold it) and, once it serves, writes the bus address to
//! `STATE/daemon.bus-address` (root's, mode 0644: operators read it too). An address
//! counts only when its bus answers and `org.appmgr.Manager1` has an owner there; a stale
//! one (its daemon is gone) sends the command down the local path. Every wait is
//! bounded: connecting, each call, and waiting for a daemon that holds the lock but does
//! not serve yet; each ends in a one-line error (exit 1).

use crate::args::{Command, Global, WaitArgs};
use crate::Output;
use crate::{CliError, CliResult};
use appmgr_types::{dbus, ErrorClass};
use std::collections::HashMap;
use std::io::IsTerminal;
use std::path::Path;
use std::time::{Duration, Instant};
use zbus::zvariant::Value;

pub use appmgr_core::paths::{address_path, daemon_dir, lock_path};

/// How long one connection attempt (connect, authenticate, ask who owns the name) may
/// take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// How long one method call may take (an install of a large bundle on slow flash).
const CALL_TIMEOUT: Duration = Duration::from_secs(600);

/// How long a client waits for an appmgrd that holds its lock but does not serve yet
/// (preinstall runs first): `APPMGR_DAEMON_WAIT` seconds, 60 by default.
fn start_wait() -> Duration {
    let secs = std::env::var("APPMGR_DAEMON_WAIT")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(60);
    Duration::from_secs(secs)
}

/// Whether a process holds the state directory's daemon lock right now. `false` when
/// the lock cannot be opened: no daemon ever ran, or the caller is not root (the daemon
/// directory is root's). Opened without following a symbolic link and without blocking.
pub fn lock_held(state_dir: &Path) -> bool {
    use std::os::unix::fs::OpenOptionsExt;
    let Ok(f) = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(lock_path(state_dir))
    else {
        return false;
    };
    if !f.metadata().is_ok_and(|m| m.is_file()) {
        return false;
    }
    matches!(f.try_lock_shared(), Err(std::fs::TryLockError::WouldBlock))
}

/// Whether appmgrd may serve the state directory: its address is published or its lock
/// is held. Cheap (no D-Bus): [`call`] finds out for sure.
pub fn daemon_maybe_running(state_dir: &Path) -> bool {
    std::fs::symlink_metadata(address_path(state_dir)).is_ok() || lock_held(state_dir)
}

/// The commands that go through appmgrd when it runs (`Command::route`).
pub fn is_routed(c: &Command) -> bool {
    c.route().daemon
}

/// Commands that only exist with appmgrd (it supervises services).
pub fn needs_daemon(c: &Command) -> bool {
    c.route().daemon_only
}

fn other(msg: impl Into<String>) -> CliError {
    CliError::new(ErrorClass::Other, msg)
}

/// Runs one routed command through appmgrd. `None`: no appmgrd serves the state
/// directory (no address, or a stale one while nobody holds the lock), so the caller runs
/// the command locally.
pub fn call(g: &Global, cmd: &Command) -> Option<CliResult<Output>> {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return Some(Err(other(format!("cannot start the D-Bus client: {e}")))),
    };
    rt.block_on(async {
        match connect(g, call_timeout(cmd)).await {
            Ok(Some(conn)) => Some(call_async(g, &conn, cmd).await),
            Ok(None) => None,
            Err(e) => Some(Err(e)),
        }
    })
}

/// The appmgrd serving the state directory, if any. While a process holds the lock but
/// no daemon answers at the published address (appmgrd is starting, or the lock holder
/// is not a daemon), waits up to [`start_wait`], then fails.
async fn connect(g: &Global, call: Duration) -> CliResult<Option<zbus::Connection>> {
    let wait = start_wait();
    let deadline = Instant::now() + wait;
    loop {
        if let Some(conn) = serving(&g.state_dir, call).await {
            return Ok(Some(conn));
        }
        if !lock_held(&g.state_dir) {
            return Ok(None);
        }
        if Instant::now() >= deadline {
            return Err(other(format!(
                "appmgrd: {} is held but no daemon answers (waited {} s; APPMGR_DAEMON_WAIT)",
                lock_path(&g.state_dir).display(),
                wait.as_secs()
            )));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A connection to the published address when its bus answers within
/// [`CONNECT_TIMEOUT`] and `org.appmgr.Manager1` has an owner there; `None` otherwise
/// (no address, or a stale one).
async fn serving(state_dir: &Path, call: Duration) -> Option<zbus::Connection> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let mut addr = String::new();
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(address_path(state_dir))
        .ok()
        .filter(|f| f.metadata().is_ok_and(|m| m.is_file()))?
        .take(4096)
        .read_to_string(&mut addr)
        .ok()?;
    let attempt = async {
        let conn = zbus::connection::Builder::address(addr.trim())
            .ok()?
            .method_timeout(call)
            .build()
            .await
            .ok()?;
        let name = zbus::names::BusName::try_from(dbus::BUS_NAME).ok()?;
        let bus = zbus::fdo::DBusProxy::new(&conn).await.ok()?;
        bus.name_has_owner(name).await.ok()?.then_some(conn)
    };
    tokio::time::timeout(CONNECT_TIMEOUT, attempt)
        .await
        .ok()
        .flatten()
}

async fn call_async(g: &Global, conn: &zbus::Connection, cmd: &Command) -> CliResult<Output> {
    use Command::*;
    let no_opts: HashMap<&str, Value<'_>> = HashMap::new();
    let reply = match cmd {
        Install {
            file,
            allow_downgrade,
            name,
            wait,
        } => install(g, conn, file, *allow_downgrade, name.as_deref(), *wait).await,
        Update { ids, wait } => {
            let mut opts = HashMap::new();
            wait_options(&mut opts, *wait);
            install_call(conn, "Update", &(ids, &opts)).await
        }
        List => method(conn, "List", &()).await,
        Info { id } => method(conn, "Info", &(id.as_str(),)).await,
        Remove { id } => method(conn, "Remove", &(id.as_str(), &no_opts)).await,
        Rollback { id } => method(conn, "Rollback", &(id.as_str(), &no_opts)).await,
        Fsck => method(conn, "Fsck", &()).await,
        Permissions { id } => method(conn, "Permissions", &(id.as_str(),)).await,
        Ps => method(conn, "Ps", &()).await,
        Kill { id } => method(conn, "Kill", &(id.as_str(),)).await,
        Start { id } => method(conn, "Start", &(id.as_str(),)).await,
        Stop { id } => method(conn, "Stop", &(id.as_str(),)).await,
        Status { id } => method(conn, "Status", &(id.as_deref().unwrap_or(""),)).await,
        _ => Err(other("not a daemon command")),
    }?;
    if matches!(cmd, Fsck) {
        // The same rule as the local path: findings, then the integrity error.
        return appmgr_core::records::fsck_verdict(&g.ctx(), reply);
    }
    Ok(reply)
}

/// Every method replies `(text, json)`: the command's output for people and the JSON
/// document `--json` prints.
fn decode(msg: &zbus::Message) -> CliResult<Output> {
    let (text, json): (String, String) = msg
        .body()
        .deserialize()
        .map_err(|e| other(format!("appmgrd sent a malformed reply: {e}")))?;
    let json = serde_json::from_str(&json)
        .map_err(|e| other(format!("appmgrd sent malformed JSON: {e}")))?;
    Ok(Output::new(text, json))
}

fn error_of(e: zbus::Error) -> CliError {
    match e {
        zbus::Error::MethodError(name, desc, _) => CliError::new(
            ErrorClass::from_dbus_error_name(name.as_str()),
            desc.unwrap_or_else(|| name.to_string()),
        ),
        e => other(format!("appmgrd: {e}")),
    }
}

async fn method<B>(conn: &zbus::Connection, name: &str, body: &B) -> CliResult<Output>
where
    B: serde::Serialize + zbus::zvariant::DynamicType,
{
    let msg = conn
        .call_method(
            Some(dbus::BUS_NAME),
            dbus::OBJECT_PATH,
            Some(dbus::INTERFACE),
            name,
            body,
        )
        .await
        .map_err(error_of)?;
    decode(&msg)
}

/// `Install(h bundle, a{sv} options)`: the CLI opens the bundle with the caller's own
/// rights and passes the descriptor; appmgrd never opens a path on a client's behalf
/// here. A remote source (`NAME:ID[@VERSION]`, a URL) is `InstallRemote(s source, a{sv}
/// options)`: appmgrd's worker downloads it. `InstallProgress` signals for this connection
/// drive a progress bar on a terminal.
async fn install(
    g: &Global,
    conn: &zbus::Connection,
    file: &Path,
    allow_downgrade: bool,
    shown: Option<&str>,
    wait: WaitArgs,
) -> CliResult<Output> {
    let mut opts: HashMap<&str, Value<'_>> = HashMap::new();
    opts.insert("allow-downgrade", Value::from(allow_downgrade));
    wait_options(&mut opts, wait);
    if crate::local::remote_source(g, file)?.is_some() {
        let source = file.to_string_lossy();
        return install_call(conn, "InstallRemote", &(&*source, &opts)).await;
    }
    let f = crate::local::open_bundle_arg(file)?;
    let name = shown
        .map(str::to_string)
        .unwrap_or_else(|| file.display().to_string());
    opts.insert("name", Value::from(name.as_str()));
    install_call(conn, "Install", &(zbus::zvariant::Fd::from(&f), &opts)).await
}

/// `wait` (b) and `wait-timeout` (u) for `--wait [--wait-timeout S]`.
fn wait_options(opts: &mut HashMap<&str, Value<'_>>, wait: WaitArgs) {
    if wait.wait {
        opts.insert("wait", Value::from(true));
    }
    if let Some(t) = wait.wait_timeout {
        opts.insert("wait-timeout", Value::from(t));
    }
}

/// How long a call may take: [`CALL_TIMEOUT`], plus the longest verdict wait appmgrd may
/// take for `--wait` (its `--wait-timeout`, or the longest health-timeout plus 60 s).
fn call_timeout(cmd: &Command) -> Duration {
    let wait = match cmd {
        Command::Install { wait, .. } | Command::Update { wait, .. } if wait.wait => {
            wait.wait_timeout.unwrap_or(86_400 + 60)
        }
        _ => 0,
    };
    CALL_TIMEOUT + Duration::from_secs(wait.into())
}

/// Calls an install method, drawing its progress on a terminal.
async fn install_call<B>(conn: &zbus::Connection, method: &str, body: &B) -> CliResult<Output>
where
    B: serde::Serialize + zbus::zvariant::DynamicType,
{
    use futures_util::StreamExt;
    let bar = std::io::stderr().is_terminal();
    let me = conn
        .unique_name()
        .map(|n| n.to_string())
        .unwrap_or_default();
    let rule = zbus::MatchRule::builder()
        .msg_type(zbus::message::Type::Signal)
        .interface(dbus::INTERFACE)
        .and_then(|b| b.member("InstallProgress"))
        .map(|b| b.build())
        .map_err(|e| other(e.to_string()))?;
    let mut signals = if bar {
        Some(
            zbus::MessageStream::for_match_rule(rule, conn, Some(64))
                .await
                .map_err(|e| other(format!("appmgrd: {e}")))?,
        )
    } else {
        None
    };
    let call = conn.call_method(
        Some(dbus::BUS_NAME),
        dbus::OBJECT_PATH,
        Some(dbus::INTERFACE),
        method,
        body,
    );
    tokio::pin!(call);
    let mut drawn = false;
    let result = loop {
        let next = async {
            match signals.as_mut() {
                Some(s) => s.next().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            r = &mut call => break r,
            Some(Ok(msg)) = next => {
                if let Ok((caller, phase, done, total)) =
                    msg.body().deserialize::<(String, String, u64, u64)>()
                {
                    if caller == me {
                        draw_bar(&phase, done, total);
                        drawn = true;
                    }
                }
            }
        }
    };
    if drawn {
        eprint!("\r\x1b[2K");
    }
    decode(&result.map_err(error_of)?)
}

fn draw_bar(phase: &str, done: u64, total: u64) {
    const WIDTH: u64 = 30;
    let filled = (done.min(total) * WIDTH).checked_div(total).unwrap_or(0);
    let pct = (done.min(total) * 100).checked_div(total).unwrap_or(0);
    eprint!(
        "\r\x1b[2K{phase:<10} [{}{}] {pct:>3}% {:.1}/{:.1} MB",
        "#".repeat(filled as usize),
        " ".repeat((WIDTH - filled) as usize),
        done as f64 / 1e6,
        total as f64 / 1e6
    );
}

/// Asks the bus at `socket` to reload its configuration (`ReloadConfig` returns once the
/// new policy is in force), bounded by [`CONNECT_TIMEOUT`] twice. Used by
/// `appmgr run` after it changed the per-app bus policy, as appmgrd does.
pub fn reload_bus_config(socket: &Path) -> CliResult<()> {
    let fail = |e: String| other(format!("{}: bus ReloadConfig: {e}", socket.display()));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| fail(e.to_string()))?;
    rt.block_on(async {
        let attempt = async {
            let conn = zbus::connection::Builder::address(
                format!("unix:path={}", socket.display()).as_str(),
            )?
            .method_timeout(CONNECT_TIMEOUT)
            .build()
            .await?;
            conn.call_method(
                Some("org.freedesktop.DBus"),
                "/org/freedesktop/DBus",
                Some("org.freedesktop.DBus"),
                "ReloadConfig",
                &(),
            )
            .await?;
            Ok::<_, zbus::Error>(())
        };
        match tokio::time::timeout(CONNECT_TIMEOUT * 2, attempt).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(fail(e.to_string())),
            Err(_) => Err(fail("no answer".into())),
        }
    })
}
