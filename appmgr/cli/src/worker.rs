//! `appmgr-ops --worker-fd N`: appmgrd's store worker (see `appmgr_core::worker` for the
//! protocol). Reads one request from the socket N, runs it through `appmgr-core`, and
//! answers with progress messages and one final message on the same socket.

use appmgr_core::records::{Change, Done};
use appmgr_core::worker::{Message, Op, Request, VERSION};
use appmgr_core::{Error, Output};
use appmgr_storeops::{self as store_ops, Progress};
use appmgr_types::ErrorClass;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;

/// The longest request line accepted (a request holds two paths and a name).
const MAX_REQUEST: u64 = 64 * 1024;

fn send(sock: &mut UnixStream, m: &Message) -> std::io::Result<()> {
    let mut line = serde_json::to_vec(m).map_err(std::io::Error::other)?;
    line.push(b'\n');
    sock.write_all(&line)
}

fn read_request(sock: &UnixStream) -> Result<Request, Error> {
    let mut line = String::new();
    BufReader::new(std::io::Read::take(sock, MAX_REQUEST))
        .read_line(&mut line)
        .map_err(|e| Error::new(ErrorClass::Other, format!("worker request: {e}")))?;
    let r: Request = serde_json::from_str(&line).map_err(|e| {
        Error::new(
            ErrorClass::Usage,
            format!("worker request: not a protocol {VERSION} request: {e}"),
        )
    })?;
    if r.version != VERSION {
        return Err(Error::new(
            ErrorClass::Usage,
            format!(
                "worker request: protocol version {}, this appmgr-ops speaks {VERSION}",
                r.version
            ),
        ));
    }
    Ok(r)
}

fn run(req: &Request, sock: &mut UnixStream) -> Result<(Output, Option<Change>), Error> {
    let ctx = req.ctx();
    let done = |d: Done| (d.output, Some(d.change));
    match &req.op {
        Op::Install {
            name,
            allow_downgrade,
            release,
        } => {
            let f = crate::local::open_bundle_arg(Path::new("-"))?;
            let mut progress = progress_to(sock)?;
            store_ops::install_from(
                &ctx,
                f,
                Path::new(name),
                *allow_downgrade,
                release.clone(),
                &mut progress,
            )
            .map(done)
        }
        Op::InstallRemote {
            source,
            allow_downgrade,
        } => {
            let src = source_of(&ctx, source)?;
            let mut progress = progress_to(sock)?;
            store_ops::install_source(&ctx, &src, *allow_downgrade, &mut progress).map(done)
        }
        Op::Spool { source, name, dest } => {
            let (m, release, download) = match source {
                Some(s) => store_ops::spool(&ctx, Ok(&source_of(&ctx, s)?), dest)?,
                None => {
                    let f = crate::local::open_bundle_arg(Path::new("-"))?;
                    store_ops::spool(&ctx, Err((f, Path::new(name))), dest)?
                }
            };
            Ok((
                appmgr_core::Output::new(
                    format!("{} {} {} verified and kept\n", m.kind, m.id, m.version),
                    serde_json::json!({"id": m.id, "kind": m.kind, "version": m.version.to_string(),
                                       "release": release, "download": download}),
                ),
                None,
            ))
        }
        Op::Remove { id } => store_ops::remove(&ctx, id).map(done),
        Op::Rollback { id } => store_ops::rollback(&ctx, id).map(done),
        Op::Fsck => store_ops::fsck_report(&ctx).map(|o| (o, None)),
        Op::RemoteLs { name } => appmgr_core::remotes::ls(&ctx, name).map(|o| (o, None)),
        Op::UpdatePlan { ids } => appmgr_core::remotes::update_plan(&ctx, ids)
            .map(|(plan, current)| (appmgr_core::remotes::plan_output(&plan, &current), None)),
    }
}

/// A remote source (`NAME:ID[@VERSION]` or a URL), or a usage error naming it.
fn source_of(ctx: &appmgr_core::Ctx, source: &str) -> Result<appmgr_core::remotes::Source, Error> {
    appmgr_core::remotes::parse_source(&ctx.config_dir, source)?.ok_or_else(|| {
        Error::new(
            ErrorClass::Usage,
            format!(
                "{}: not NAME:ID[@VERSION] of a configured remote, nor an http:// URL",
                appmgr_types::escape_for_display(source)
            ),
        )
    })
}

/// Progress messages on the worker's socket: at most one per percent and phase (a
/// payload has thousands of files).
fn progress_to(sock: &UnixStream) -> Result<impl FnMut(Progress), Error> {
    let mut last = (u64::MAX, "");
    let mut progress_sock = sock
        .try_clone()
        .map_err(|e| Error::new(ErrorClass::Other, format!("worker socket: {e}")))?;
    Ok(move |p: Progress| {
        let pct = (p.bytes * 100).checked_div(p.total).unwrap_or(100);
        if (pct, p.phase) != last {
            last = (pct, p.phase);
            let _ = send(
                &mut progress_sock,
                &Message::Progress {
                    version: VERSION,
                    phase: p.phase.to_string(),
                    bytes: p.bytes,
                    total: p.total,
                },
            );
        }
    })
}

/// Serves one request on the socket `fd`; returns the exit code (the class's).
pub fn serve(fd: &str) -> i32 {
    let sock = fd
        .parse::<i32>()
        .map_err(std::io::Error::other)
        .and_then(appmgr_sandbox::sys::take_inherited_fd);
    let mut sock = match sock {
        Ok(fd) => UnixStream::from(fd),
        Err(e) => {
            eprintln!("appmgr-ops: --worker-fd {fd}: {e}");
            return ErrorClass::Usage.exit_code();
        }
    };
    let result = read_request(&sock).and_then(|req| run(&req, &mut sock));
    let code = match &result {
        Ok(_) => 0,
        Err(e) => e.class.exit_code(),
    };
    if let Err(e) = send(&mut sock, &Message::of_result(result)) {
        eprintln!("appmgr-ops: worker reply: {e}");
        return ErrorClass::Other.exit_code();
    }
    code
}
