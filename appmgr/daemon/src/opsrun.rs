//! Store mutations run in `appmgr-ops`, a child process, not in appmgrd: the daemon links
//! no libostree/GLib (about 10 MB of resident libraries), and a fault in the storage
//! stack cannot take the daemon down. The child runs the very command the CLI runs
//! locally (`--direct`), reports progress on stderr (`APPMGR_PROGRESS=stderr`) and
//! answers in one JSON object (`APPMGR_REPLY=daemon`): `{"text", "json"}` on stdout, or
//! `{"error": {code, class, message}}` on stderr.

use crate::error::Error;
use appmgr_core::Output;
use appmgr_types::ErrorClass;
use std::ffi::OsString;
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};

/// Progress of an install, as the child reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Progress {
    pub phase: String,
    pub bytes: u64,
    pub total: u64,
}

/// Where `appmgr-ops` is: `$APPMGR_OPS`, next to appmgrd, or `/usr/libexec/appmgr`.
pub fn ops_path() -> PathBuf {
    appmgr_core::paths::ops_binary()
}

/// Runs `appmgr-ops --direct ARGS` on `g`'s state and config dirs, with `stdin` (the
/// bundle of an install) and progress forwarded to `progress`.
pub async fn run(
    g: &appmgr_core::Ctx,
    args: &[OsString],
    stdin: Option<OwnedFd>,
    progress: Option<tokio::sync::mpsc::UnboundedSender<Progress>>,
) -> Result<Output, Error> {
    match run_full(g, args, stdin, progress).await? {
        (_, Some(e)) => Err(e),
        (Some(out), None) => Ok(out),
        (None, None) => Err(Error::Failed("appmgr-ops answered nothing".into())),
    }
}

/// [`run`], also returning what the child printed before it failed (fsck prints its
/// findings, then fails with exit 3).
pub async fn run_full(
    g: &appmgr_core::Ctx,
    args: &[OsString],
    stdin: Option<OwnedFd>,
    progress: Option<tokio::sync::mpsc::UnboundedSender<Progress>>,
) -> Result<(Option<Output>, Option<Error>), Error> {
    let path = ops_path();
    let mut cmd = tokio::process::Command::new(&path);
    cmd.env_clear()
        .env("APPMGR_REPLY", "daemon")
        .env("APPMGR_PROGRESS", "stderr")
        .arg("--state-dir")
        .arg(&g.state_dir)
        .arg("--config-dir")
        .arg(&g.config_dir)
        .arg("--direct")
        .args(args)
        .stdin(match stdin {
            Some(fd) => std::process::Stdio::from(fd),
            None => std::process::Stdio::null(),
        })
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    let mut child = cmd
        .spawn()
        .map_err(|e| Error::Failed(format!("cannot run {}: {e}", path.display())))?;
    let mut stdout = child.stdout.take().expect("piped");
    let stderr = child.stderr.take().expect("piped");
    let read_out = async {
        let mut buf = Vec::new();
        let _ = stdout.read_to_end(&mut buf).await;
        buf
    };
    let read_err = async {
        let mut lines = BufReader::new(stderr).lines();
        let mut rest = Vec::new();
        while let Ok(Some(line)) = lines.next_line().await {
            if let Some(p) = line.strip_prefix("appmgr-progress ") {
                let mut it = p.split(' ');
                if let (Some(phase), Some(Ok(bytes)), Some(Ok(total))) = (
                    it.next(),
                    it.next().map(str::parse::<u64>),
                    it.next().map(str::parse::<u64>),
                ) {
                    if let Some(tx) = &progress {
                        let _ = tx.send(Progress {
                            phase: phase.to_string(),
                            bytes,
                            total,
                        });
                    }
                }
            } else {
                rest.push(line);
            }
        }
        rest
    };
    let (out, err_lines, status) = tokio::join!(read_out, read_err, child.wait());
    let status = status.map_err(|e| Error::Failed(format!("{}: {e}", path.display())))?;
    let output = serde_json::from_slice::<serde_json::Value>(&out)
        .ok()
        .map(|v| Output::new(v["text"].as_str().unwrap_or_default(), v["json"].clone()));
    if status.success() {
        return match output {
            Some(o) => Ok((Some(o), None)),
            None => Err(Error::Failed(format!(
                "{} answered malformed output",
                path.display()
            ))),
        };
    }
    // The error object is the last line; anything else the child printed is context.
    for line in err_lines.iter().rev() {
        if let Ok(v) = serde_json::from_str::<serde_json::Value>(line) {
            if let Some(e) = v.get("error") {
                let code = e["code"].as_i64().unwrap_or(1);
                let class = ErrorClass::ALL
                    .into_iter()
                    .find(|c| i64::from(c.exit_code()) == code)
                    .unwrap_or(ErrorClass::Other);
                let err = Error::of(class, e["message"].as_str().unwrap_or("failed").to_string());
                return Ok((output, Some(err)));
            }
        }
    }
    Ok((
        output,
        Some(Error::Failed(format!(
            "{} failed ({status}): {}",
            path.display(),
            err_lines.join(" ")
        ))),
    ))
}
