//! Inhibitors (docs/remotes.md "Inhibitors"): while the vehicle moves or the battery is
//! low, installs must wait. An inhibitor is one regular file in `inhibit-dir`
//! (appmgr.toml, default `/run/appmgr/inhibit`, so they end with the boot), named NAME
//! (`[A-Za-z0-9_-]`, 1 to 64 characters), its first line the reason. appmgrd queues an
//! install while any exists (the download is kept) and runs it once the last is gone; the
//! local path, which has nobody to run it later, refuses (exit 6, nothing changed).
//!
//! Only root may write there: a directory that is a symbolic link, not root's, or
//! writable by group or others is refused as a whole (an unprivileged user could
//! otherwise hold every update back, or clear the vehicle's inhibitor). Installs then
//! stay deferred: it is the safe side for a moving vehicle, and the error says what to fix.

use crate::config::HostConfig;
use crate::{CoreResult, Ctx, Error, Output};
use appmgr_types::{escape_for_display, ErrorClass};
use serde_json::json;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

pub const DEFAULT_INHIBIT_DIR: &str = "/run/appmgr/inhibit";
const MAX_REASON: usize = 200;
const MAX_NAME: usize = 64;
/// More files than this is an error rather than a long read.
const MAX_INHIBITORS: usize = 256;

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Inhibitor {
    pub name: String,
    pub reason: String,
}

fn io_error(p: &Path, e: std::io::Error) -> Error {
    Error::new(ErrorClass::Other, format!("{}: {e}", p.display()))
}

/// The configured directory, `None` when turned off (`inhibit-dir = "none"`).
pub fn dir(g: &Ctx) -> CoreResult<Option<PathBuf>> {
    HostConfig::load(&g.config_dir)?.inhibit_dir()
}

fn valid_name(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= MAX_NAME
        && n.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn check_name(n: &str) -> CoreResult<()> {
    if valid_name(n) {
        Ok(())
    } else {
        Err(Error::new(
            ErrorClass::Usage,
            format!(
                "{}: an inhibitor name is 1 to {MAX_NAME} of A-Z a-z 0-9 - _",
                escape_for_display(n)
            ),
        ))
    }
}

/// The directory is root's and only root's; a missing one holds no inhibitor.
fn check_dir(d: &Path) -> CoreResult<bool> {
    let md = match std::fs::symlink_metadata(d) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(io_error(d, e)),
    };
    let unsafe_dir = |why: &str| {
        Error::new(
            ErrorClass::Other,
            format!(
                "inhibit-dir {}: {why}: only root may write inhibitors (chown root, chmod 0755); \
                 installs stay deferred until it is fixed",
                d.display()
            ),
        )
    };
    if md.file_type().is_symlink() || !md.is_dir() {
        return Err(unsafe_dir("not a directory (a symbolic link?)"));
    }
    if md.uid() != 0 {
        return Err(unsafe_dir(&format!("owned by uid {}", md.uid())));
    }
    if md.permissions().mode() & 0o022 != 0 {
        return Err(unsafe_dir(&format!(
            "mode {:04o} lets others write",
            md.permissions().mode() & 0o7777
        )));
    }
    Ok(true)
}

/// The first line of an inhibitor file: at most 200 characters, control characters
/// escaped. Opened without following a symbolic link and without blocking on a FIFO.
fn reason_of(p: &Path) -> CoreResult<Option<String>> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let f = match std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(p)
    {
        Ok(f) => f,
        // Removed between the listing and now: cleared.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_error(p, e)),
    };
    let md = f.metadata().map_err(|e| io_error(p, e))?;
    if !md.is_file() {
        return Err(Error::new(
            ErrorClass::Other,
            format!("{}: an inhibitor must be a regular file", p.display()),
        ));
    }
    let mut buf = Vec::new();
    f.take(4 * MAX_REASON as u64)
        .read_to_end(&mut buf)
        .map_err(|e| io_error(p, e))?;
    let text = String::from_utf8_lossy(&buf);
    let first = text.lines().next().unwrap_or("").trim();
    Ok(Some(escape_for_display(
        &first.chars().take(MAX_REASON).collect::<String>(),
    )))
}

/// The inhibitors in force, by name. An unsafe directory, or a file there that is not
/// an inhibitor, is an error (the caller defers or refuses: never installs).
pub fn active(g: &Ctx) -> CoreResult<Vec<Inhibitor>> {
    match dir(g)? {
        Some(d) => active_in(&d),
        None => Ok(Vec::new()),
    }
}

fn active_in(d: &Path) -> CoreResult<Vec<Inhibitor>> {
    if !check_dir(d)? {
        return Ok(Vec::new());
    }
    let mut out = Vec::new();
    for e in std::fs::read_dir(d).map_err(|e| io_error(d, e))? {
        let e = e.map_err(|e| io_error(d, e))?;
        let name = e.file_name();
        let name = name.to_string_lossy();
        // Temporary files of an atomic write (`.NAME.tmp…`) are not inhibitors yet.
        if name.starts_with('.') {
            continue;
        }
        if !valid_name(&name) {
            return Err(Error::new(
                ErrorClass::Other,
                format!(
                    "{}: not an inhibitor name (1 to {MAX_NAME} of A-Z a-z 0-9 - _)",
                    d.join(escape_for_display(&name)).display()
                ),
            ));
        }
        if out.len() == MAX_INHIBITORS {
            return Err(Error::new(
                ErrorClass::Other,
                format!("{}: more than {MAX_INHIBITORS} inhibitors", d.display()),
            ));
        }
        if let Some(reason) = reason_of(&e.path())? {
            out.push(Inhibitor {
                name: name.into_owned(),
                reason,
            });
        }
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// "NAME (reason), NAME" for messages.
pub fn describe(list: &[Inhibitor]) -> String {
    list.iter()
        .map(|i| {
            if i.reason.is_empty() {
                i.name.clone()
            } else {
                format!("{} ({})", i.name, i.reason)
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// What keeps installs back now, as one line; `None`: nothing (install now). An error
/// reading the inhibitors keeps them back too.
pub fn holding_back(g: &Ctx) -> Option<String> {
    match active(g) {
        Ok(l) if l.is_empty() => None,
        Ok(l) => Some(format!("inhibited by {}", describe(&l))),
        Err(e) => Some(e.message),
    }
}

/// The local path's check before an install or update: it cannot queue, so it refuses.
pub fn refuse_if_inhibited(g: &Ctx) -> CoreResult<()> {
    match holding_back(g) {
        None => Ok(()),
        Some(why) => Err(Error::new(
            ErrorClass::Conflict,
            format!(
                "{why}: nothing installed (without appmgrd nothing can be queued until they \
                 clear)"
            ),
        )),
    }
}

fn need_dir(g: &Ctx) -> CoreResult<PathBuf> {
    dir(g)?.ok_or_else(|| {
        Error::new(
            ErrorClass::Usage,
            "inhibit-dir is \"none\" in appmgr.toml: inhibitors are turned off",
        )
    })
}

/// `inhibit NAME [--reason TEXT]`: creates (or replaces) the inhibitor.
pub fn inhibit(g: &Ctx, name: &str, reason: Option<&str>) -> CoreResult<Output> {
    check_name(name)?;
    let reason = reason.unwrap_or("");
    if reason.chars().count() > MAX_REASON || reason.chars().any(char::is_control) {
        return Err(Error::new(
            ErrorClass::Usage,
            format!("--reason: at most {MAX_REASON} characters, no control characters"),
        ));
    }
    let d = need_dir(g)?;
    if let Err(e) = std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(&d)
    {
        return Err(io_error(&d, e));
    }
    check_dir(&d)?;
    let p = d.join(name);
    appmgr_policy::userdb::write_atomic(&p, format!("{reason}\n").as_bytes())
        .map_err(|e| io_error(&p, e))?;
    Ok(Output::new(
        format!("inhibitor {name} set: installs are deferred until it is cleared\n"),
        json!({"name": name, "reason": reason, "path": p}),
    ))
}

/// `uninhibit NAME`: removes it (exit 5 when it is not set).
pub fn uninhibit(g: &Ctx, name: &str) -> CoreResult<Output> {
    check_name(name)?;
    let d = need_dir(g)?;
    check_dir(&d)?;
    let p = d.join(name);
    match std::fs::remove_file(&p) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(Error::new(
                ErrorClass::NotFound,
                format!("inhibitor {name} is not set ({})", p.display()),
            ))
        }
        Err(e) => return Err(io_error(&p, e)),
    }
    // Removed: what is left is information, and an unreadable rest is no failure of
    // this command.
    let left = active_in(&d);
    let text = match &left {
        Ok(left) if left.is_empty() => format!("inhibitor {name} cleared: no inhibitor left\n"),
        Ok(left) => format!(
            "inhibitor {name} cleared; still inhibited by {}\n",
            describe(left)
        ),
        Err(e) => format!("inhibitor {name} cleared; the others: {}\n", e.message),
    };
    let left = left.unwrap_or_default();
    Ok(Output::new(text, json!({"name": name, "left": left})))
}

/// `inhibitors`: those in force, and the installs appmgrd queued meanwhile.
pub fn list(g: &Ctx) -> CoreResult<Output> {
    let l = active(g)?;
    let mut text = if l.is_empty() {
        "no inhibitor: installs run at once\n".to_string()
    } else {
        l.iter()
            .map(|i| format!("{:<24} {}\n", i.name, i.reason))
            .collect()
    };
    let queued: Vec<Queued> = queued_in(&queue_dir(&g.state_dir))
        .into_iter()
        .filter_map(|(_, e)| e)
        .collect();
    for q in &queued {
        text.push_str(&format!(
            "queued: {} {} {} (from {})\n",
            q.kind, q.id, q.version, q.name
        ));
    }
    Ok(Output::new(
        text,
        json!({"inhibitors": l, "queued": queued}),
    ))
}

/// One install appmgrd queued while inhibited (`STATE/daemon/deferred/N.json`, its
/// bundle `N.bundle` beside it).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Queued {
    /// The name for messages (the file or source the caller gave).
    pub name: String,
    pub allow_downgrade: bool,
    /// From a TUF remote: the release recorded once installed.
    pub release: Option<crate::remote_tuf::Release>,
    pub id: String,
    pub kind: String,
    pub version: String,
    pub queued_at_unix: u64,
    /// What held it back when it was queued.
    pub why: String,
}

pub fn queue_dir(state_dir: &Path) -> PathBuf {
    crate::paths::daemon_dir(state_dir).join("deferred")
}

/// The queue, oldest first: each entry by name, `None` when it cannot be read or its
/// bundle is gone.
pub fn queued_in(dir: &Path) -> Vec<(String, Option<Queued>)> {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut names: Vec<String> = rd
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            e.file_name()
                .to_str()
                .and_then(|n| n.strip_suffix(".json"))
                .map(str::to_string)
        })
        .collect();
    names.sort();
    names
        .into_iter()
        .map(|stem| {
            let e = std::fs::read(dir.join(format!("{stem}.json")))
                .ok()
                .and_then(|b| serde_json::from_slice::<Queued>(&b).ok())
                .filter(|_| dir.join(format!("{stem}.bundle")).is_file());
            (stem, e)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp() -> tempfile::TempDir {
        tempfile::tempdir().unwrap()
    }

    #[test]
    fn names_are_checked() {
        for ok in ["vehicle-moving", "low_battery", "a", &"x".repeat(64)] {
            assert!(valid_name(ok), "{ok}");
        }
        for bad in ["", ".hidden", "a/b", "a b", "ä", &"x".repeat(65), ".."] {
            assert!(!valid_name(bad), "{bad}");
        }
    }

    #[test]
    fn reads_names_and_first_lines_and_refuses_a_loose_dir() {
        let t = tmp();
        let d = t.path().join("inhibit");
        assert_eq!(active_in(&d).unwrap(), vec![]);
        std::fs::create_dir(&d).unwrap();
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::write(d.join("vehicle-moving"), "speed 42 km/h\nmore\n").unwrap();
        std::fs::write(d.join("low-battery"), "").unwrap();
        std::fs::write(d.join(".tmp123"), "").unwrap();
        if rustix::process::geteuid().is_root() {
            let l = active_in(&d).unwrap();
            assert_eq!(
                describe(&l),
                "low-battery, vehicle-moving (speed 42 km/h)",
                "{l:?}"
            );
            std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o777)).unwrap();
            let e = active_in(&d).unwrap_err();
            assert!(e.message.contains("0777"), "{}", e.message);
            std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o755)).unwrap();
            std::fs::write(d.join("bad name"), "").unwrap();
            let e = active_in(&d).unwrap_err();
            assert!(e.message.contains("not an inhibitor name"), "{}", e.message);
        } else {
            // Not root: the directory is not root's, so it is refused as a whole.
            assert!(active_in(&d).unwrap_err().message.contains("owned by uid"));
        }
    }
}
