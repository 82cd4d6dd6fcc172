//! The `audio` grant on the host's PipeWire (docs/audio.md): before an app whose sandbox
//! gets the PipeWire socket starts, appmgr tells the session manager which audio roles
//! the app's uid has. WirePlumber runs `board-support/pipewire/appmgr-access.lua`, which
//! owns the metadata object [`METADATA_NAME`]; appmgr (root, an unrestricted PipeWire
//! client) sets `appmgr.audio.uid.UID` there with `pw-metadata`. Apps get no permission
//! on that object, so they can neither read nor change it. A client of the app's sandbox
//! is held without any permission until the entry is there.

use crate::error::{CoreResult, Error};
use appmgr_sandbox::{BindSource, LaunchPlan, MountOp};
use appmgr_types::{ErrorClass, Permissions};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// PipeWire's own tool, from the host (package `pipewire-bin`).
pub const PW_METADATA: &str = "/usr/bin/pw-metadata";
/// The metadata object `appmgr-access.lua` creates and reads.
pub const METADATA_NAME: &str = "appmgr-audio";
/// The longest a registration may take (PipeWire answers in milliseconds).
const TIMEOUT: Duration = Duration::from_secs(5);

/// The value registered for `perms`: `none`, `playback`, `capture` or
/// `playback,capture`.
pub fn grant_value(perms: &Permissions) -> String {
    let v: Vec<&str> = perms.audio.iter().map(|r| r.as_str()).collect();
    if v.is_empty() {
        "none".into()
    } else {
        v.join(",")
    }
}

/// The host PipeWire socket `plan` binds, when the plan also carries the marker that
/// makes PipeWire hold the app's clients for the session manager (appmgr.toml
/// `pipewire-access`); `None` when there is nothing to register.
pub fn restricted_socket(plan: &LaunchPlan) -> Option<PathBuf> {
    let marked = plan.mounts.iter().any(|m| {
        matches!(m, MountOp::File { dest, .. } if dest == appmgr_sandbox::PIPEWIRE_SANDBOX_MARKER)
    });
    if !marked {
        return None;
    }
    plan.mounts.iter().find_map(|m| match m {
        MountOp::Bind {
            source: BindSource::Socket(s),
            dest,
            ..
        } if dest == appmgr_sandbox::SANDBOX_PIPEWIRE_SOCKET => Some(s.clone()),
        _ => None,
    })
}

/// Registers `uid`'s audio roles with the session manager behind `socket`. Fails when
/// `pw-metadata` is missing, cannot connect, or finds no `appmgr-audio` object (the
/// access script is not running): the launch is then refused rather than left waiting.
pub fn register(socket: &Path, uid: u32, perms: &Permissions) -> CoreResult<()> {
    let value = grant_value(perms);
    let key = format!("appmgr.audio.uid.{uid}");
    let fail = |why: String| {
        Error::new(
            ErrorClass::Other,
            format!(
                "cannot register the audio grant of uid {uid} with PipeWire at {}: {why}",
                socket.display()
            ),
        )
    };
    let (Some(dir), Some(name)) = (socket.parent(), socket.file_name()) else {
        return Err(fail("not a socket path".into()));
    };
    let mut child = Command::new(PW_METADATA)
        .env_clear()
        .env("PIPEWIRE_RUNTIME_DIR", dir)
        .env("PIPEWIRE_REMOTE", name)
        .args(["-n", METADATA_NAME, "0", &key, &value])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| fail(format!("{PW_METADATA}: {e}")))?;
    let start = Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break s,
            Ok(None) if start.elapsed() < TIMEOUT => std::thread::sleep(Duration::from_millis(2)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(fail(format!("no answer within {} s", TIMEOUT.as_secs())));
            }
            Err(e) => return Err(fail(e.to_string())),
        }
    };
    let mut out = String::new();
    let mut err = String::new();
    if let Some(mut o) = child.stdout.take() {
        let _ = o.read_to_string(&mut out);
    }
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut err);
    }
    if !status.success() {
        let msg = err.lines().next().unwrap_or("failed").to_string();
        return Err(fail(appmgr_types::escape_for_display(&msg).to_string()));
    }
    if !out.contains(&format!("set property: id:0 key:{key} value:{value}")) {
        return Err(fail(format!(
            "no {METADATA_NAME} metadata (is appmgr-access.lua loaded by WirePlumber?)"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use appmgr_types::AudioRole;

    #[test]
    fn values_name_the_roles_or_none() {
        let mut p = Permissions::default();
        assert_eq!(grant_value(&p), "none");
        p.audio.insert(AudioRole::Capture);
        assert_eq!(grant_value(&p), "capture");
        p.audio.insert(AudioRole::Playback);
        assert_eq!(grant_value(&p), "playback,capture");
    }
}
