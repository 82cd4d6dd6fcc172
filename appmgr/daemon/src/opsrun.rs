//! Store mutations run in `appmgr-ops`, a child process, not in appmgrd: the daemon links
//! no libostree/GLib (about 10 MB of resident libraries), and a fault in the storage
//! stack cannot take the daemon down. The two speak `appmgr_core::worker`'s typed,
//! versioned protocol over a socketpair (`appmgr-ops --worker-fd N`): one request, then
//! progress messages and one final message. The bundle of an install is the child's
//! stdin; the child's stderr (diagnostics only) goes to the daemon's.

use crate::error::Error;
use appmgr_core::records::Change;
use appmgr_core::worker::{Message, Op, Request, VERSION};
use appmgr_core::Output;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::PathBuf;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

/// The longest one operation may take (an install of a large bundle on slow flash
/// included); then the worker is killed and the call fails.
const WORKER_TIMEOUT: Duration = Duration::from_secs(3600);
/// The longest message line accepted from the worker.
const MAX_MESSAGE: usize = 16 << 20;

/// Progress of an install, as the worker reports it.
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

/// What the worker did: its output and, for install, remove and rollback, the typed
/// change the daemon acts on.
#[derive(Debug)]
pub struct Finished {
    pub output: Output,
    pub change: Option<Change>,
}

impl Finished {
    /// The change of an install, remove or rollback (the worker always reports one).
    pub fn change(&self) -> Result<&Change, Error> {
        self.change
            .as_ref()
            .ok_or_else(|| Error::Failed("appmgr-ops reported no change".into()))
    }
}

/// Runs `op` in an `appmgr-ops` worker on `g`'s state and config dirs, with `stdin` (the
/// bundle of an install) and progress forwarded to `progress`.
pub async fn run(
    g: &appmgr_core::Ctx,
    op: Op,
    stdin: Option<OwnedFd>,
    progress: Option<tokio::sync::mpsc::UnboundedSender<Progress>>,
) -> Result<Finished, Error> {
    let path = ops_path();
    let (mine, theirs) = std::os::unix::net::UnixStream::pair()
        .map_err(|e| Error::Failed(format!("worker socketpair: {e}")))?;
    mine.set_nonblocking(true)
        .map_err(|e| Error::Failed(format!("worker socket: {e}")))?;
    let theirs = OwnedFd::from(theirs);
    let mut std_cmd = std::process::Command::new(&path);
    std_cmd
        .env_clear()
        .arg("--worker-fd")
        .arg(theirs.as_raw_fd().to_string())
        .stdin(match stdin {
            Some(fd) => std::process::Stdio::from(fd),
            None => std::process::Stdio::null(),
        })
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::inherit());
    appmgr_sandbox::sys::keep_fd_in_child(&mut std_cmd, theirs.as_raw_fd());
    let mut cmd = tokio::process::Command::from(std_cmd);
    cmd.kill_on_drop(true);
    let mut child = cmd
        .spawn()
        .map_err(|e| Error::Failed(format!("cannot run {}: {e}", path.display())))?;
    drop(theirs);
    let mut sock = tokio::net::UnixStream::from_std(mine)
        .map_err(|e| Error::Failed(format!("worker socket: {e}")))?;
    let talk = async {
        let mut line = serde_json::to_vec(&Request::new(g, op))
            .map_err(|e| Error::Failed(format!("worker request: {e}")))?;
        line.push(b'\n');
        sock.write_all(&line)
            .await
            .map_err(|e| Error::Failed(format!("worker request: {e}")))?;
        let mut lines = BufReader::new(sock).lines();
        loop {
            let Some(line) = lines
                .next_line()
                .await
                .map_err(|e| Error::Failed(format!("worker reply: {e}")))?
            else {
                return Err(Error::Failed(format!(
                    "{} ended without a reply",
                    path.display()
                )));
            };
            if line.len() > MAX_MESSAGE {
                return Err(Error::Failed("worker reply: message too long".into()));
            }
            let m: Message = serde_json::from_str(&line).map_err(|e| {
                Error::Failed(format!(
                    "{}: not a protocol {VERSION} message: {e}",
                    path.display()
                ))
            })?;
            if m.version() != VERSION {
                return Err(Error::Failed(format!(
                    "{} speaks protocol version {}, appmgrd {VERSION}",
                    path.display(),
                    m.version()
                )));
            }
            if let Message::Progress {
                phase,
                bytes,
                total,
                ..
            } = &m
            {
                if let Some(tx) = &progress {
                    let _ = tx.send(Progress {
                        phase: phase.clone(),
                        bytes: *bytes,
                        total: *total,
                    });
                }
                continue;
            }
            return Ok(m.into_result().expect("a final message"));
        }
    };
    let result = match tokio::time::timeout(WORKER_TIMEOUT, talk).await {
        Ok(r) => r,
        Err(_) => {
            let _ = child.kill().await;
            return Err(Error::Failed(format!(
                "{} did not finish within {} s: killed",
                path.display(),
                WORKER_TIMEOUT.as_secs()
            )));
        }
    };
    // The final message was sent; the worker exits right after it.
    let _ = tokio::time::timeout(Duration::from_secs(10), child.wait()).await;
    match result? {
        Ok((output, change)) => Ok(Finished { output, change }),
        Err(e) => Err(Error::from(e)),
    }
}
