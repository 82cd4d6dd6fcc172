//! A download as a [`Read`]: bounded, resumable, rate-checked, digest-checked.

use crate::registry::{transport, with_auth, Client, Limits};
use crate::RemoteError;
use sha2::{Digest, Sha256};
use std::io::{self, Read};
use std::time::Instant;
use ureq::http::StatusCode;

/// A blob being downloaded. Reads return its bytes in order and never more than its
/// length; a connection that is cut (an error, or an end before the length) is reopened
/// with `Range: bytes=OFFSET-` up to [`Limits::max_resumes`] times; a rate below
/// [`Limits::min_rate`] over a window is an error; at the end, the content's sha256 must
/// be the digest asked for (when one is known).
pub struct BlobStream {
    client: Client,
    limits: Limits,
    url: String,
    /// The length; for an unsized URL, the bound (the end of the answer ends it).
    size: u64,
    sized: bool,
    digest: Option<String>,
    offset: u64,
    hasher: Sha256,
    body: Option<ureq::BodyReader<'static>>,
    resumes: u32,
    window: (Instant, u64),
    finished: bool,
    /// Byte ranges of the blob taken from local copies instead of the network, in order.
    splices: std::collections::VecDeque<Splice>,
    /// Where the open connection's range ends (exclusive).
    body_end: u64,
    /// Bytes read from the network.
    fetched: std::sync::Arc<std::sync::atomic::AtomicU64>,
    /// The connection was closed on purpose (a range ended): the next one is no resumption.
    next_range: bool,
}

/// `len` bytes of the blob at `start` that a local copy supplies (a file of an installed
/// deployment whose content the blob's index says is there). They are hashed with the
/// rest, so the blob's digest still covers them: a wrong copy fails the download.
pub struct Splice {
    pub start: u64,
    pub len: u64,
    pub source: Box<dyn Read + Send>,
}

fn refused(url: &str, reason: String) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        RemoteError::Refused {
            url: url.to_string(),
            reason,
        },
    )
}

impl BlobStream {
    pub(crate) fn open(
        c: &Client,
        url: String,
        size: u64,
        digest: &str,
    ) -> Result<BlobStream, RemoteError> {
        let mut s = BlobStream::new(c, url, size, true, Some(digest.to_string()));
        s.connect().map_err(|e| into_remote(&s.url, e))?;
        Ok(s)
    }

    /// [`BlobStream::open`], `splices` (sorted, not overlapping, within the blob) read
    /// locally and every other range fetched with a bounded range request. `fetched`
    /// counts the bytes read from the network.
    pub(crate) fn open_spliced(
        c: &Client,
        url: String,
        size: u64,
        digest: &str,
        splices: Vec<Splice>,
        fetched: std::sync::Arc<std::sync::atomic::AtomicU64>,
    ) -> Result<BlobStream, RemoteError> {
        let mut s = BlobStream::new(c, url, size, true, Some(digest.to_string()));
        let mut last = 0;
        for sp in &splices {
            if sp.start < last || sp.start.saturating_add(sp.len) > size || sp.len == 0 {
                return Err(RemoteError::Refused {
                    url: s.url.clone(),
                    reason: "internal: splices out of order".into(),
                });
            }
            last = sp.start + sp.len;
        }
        s.splices = splices.into();
        s.fetched = fetched;
        if s.splices.front().is_none_or(|sp| sp.start > 0) {
            s.connect().map_err(|e| into_remote(&s.url, e))?;
        } else {
            s.next_range = true;
        }
        Ok(s)
    }

    pub(crate) fn open_unsized(
        c: &Client,
        url: String,
        max: u64,
    ) -> Result<BlobStream, RemoteError> {
        let mut s = BlobStream::new(c, url, max, false, None);
        s.connect().map_err(|e| into_remote(&s.url, e))?;
        Ok(s)
    }

    fn new(c: &Client, url: String, size: u64, sized: bool, digest: Option<String>) -> BlobStream {
        BlobStream {
            client: c.clone(),
            limits: c.limits,
            url,
            size,
            sized,
            digest,
            offset: 0,
            hasher: Sha256::new(),
            body: None,
            resumes: 0,
            window: (Instant::now(), 0),
            finished: false,
            splices: Default::default(),
            body_end: size,
            fetched: Default::default(),
            next_range: false,
        }
    }

    /// Opens (or reopens at the offset) the connection.
    fn connect(&mut self) -> io::Result<()> {
        // Up to the next local range, or the end.
        let end = self.splices.front().map(|s| s.start);
        self.body_end = end.unwrap_or(self.size);
        let ranged = self.offset > 0 || end.is_some();
        let range = ranged.then(|| {
            let last = end.map(|e| (e - 1).to_string()).unwrap_or_default();
            format!("bytes={}-{last}", self.offset)
        });
        let resp = self
            .client
            .send(&self.url, &|auth| {
                let mut req = with_auth(self.client.agent.get(&self.url), auth);
                if let Some(r) = &range {
                    req = req.header("Range", r);
                }
                req.call()
            })
            .map_err(|e| match e {
                // The network's failures are resumed; a refusal is final.
                RemoteError::Transport { reason, .. } => {
                    io::Error::new(io::ErrorKind::ConnectionAborted, reason)
                }
                e => io::Error::new(io::ErrorKind::InvalidData, e),
            })?;
        let status = resp.status();
        if status == StatusCode::NOT_FOUND {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                RemoteError::NotFound {
                    url: self.url.clone(),
                },
            ));
        }
        if ranged {
            // A resumption (or a range between local copies) must start exactly there.
            let range = resp
                .headers()
                .get("content-range")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            let start = range
                .strip_prefix("bytes ")
                .and_then(|r| r.split_once('-'))
                .and_then(|(a, _)| a.parse::<u64>().ok());
            if status != StatusCode::PARTIAL_CONTENT || start != Some(self.offset) {
                return Err(refused(
                    &self.url,
                    format!(
                        "resuming at byte {}: the server answered {status} {range:?}, not that range",
                        self.offset
                    ),
                ));
            }
        } else if !status.is_success() {
            return Err(io::Error::other(format!(
                "{}: the server answered {status}",
                self.url
            )));
        }
        if self.sized && !ranged {
            if let Some(len) = resp.body().content_length() {
                if len != self.size {
                    return Err(refused(
                        &self.url,
                        format!("the server offers {len} bytes, {} expected", self.size),
                    ));
                }
            }
        }
        self.body = Some(resp.into_body().into_with_config().limit(u64::MAX).reader());
        Ok(())
    }

    fn resume(&mut self, why: io::Error) -> io::Result<()> {
        self.body = None;
        if why.kind() == io::ErrorKind::InvalidData || why.kind() == io::ErrorKind::NotFound {
            return Err(why);
        }
        loop {
            if self.resumes >= self.limits.max_resumes {
                return Err(io::Error::new(
                    why.kind(),
                    format!(
                        "{}: cut at byte {} of {}, {} resumptions failed: {why}",
                        self.url, self.offset, self.size, self.resumes
                    ),
                ));
            }
            self.resumes += 1;
            // Back off a little, boundedly: 0.2, 0.4, ... s.
            std::thread::sleep(std::time::Duration::from_millis(
                200 * u64::from(self.resumes),
            ));
            match self.connect() {
                Ok(()) => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::InvalidData => return Err(e),
                Err(_) => continue,
            }
        }
    }

    fn check_rate(&mut self, n: usize) -> io::Result<()> {
        self.window.1 += n as u64;
        let elapsed = self.window.0.elapsed();
        if elapsed >= self.limits.rate_window {
            let need = self
                .limits
                .min_rate
                .saturating_mul(elapsed.as_secs().max(1));
            if self.window.1 < need {
                return Err(refused(
                    &self.url,
                    format!(
                        "slow retrieval: {} bytes in {:.0} s, at least {} bytes/s required",
                        self.window.1,
                        elapsed.as_secs_f64(),
                        self.limits.min_rate
                    ),
                ));
            }
            self.window = (Instant::now(), 0);
        }
        Ok(())
    }

    fn finish(&mut self) -> io::Result<()> {
        if self.finished {
            return Ok(());
        }
        self.finished = true;
        self.body = None;
        if let Some(want) = &self.digest {
            let got = format!("sha256:{}", hex::encode(self.hasher.clone().finalize()));
            if &got != want {
                return Err(refused(
                    &self.url,
                    format!("content has digest {got}, {want} expected"),
                ));
            }
        }
        Ok(())
    }
}

impl BlobStream {
    /// Reads from the local copy that starts at the current offset; it must supply
    /// exactly its length.
    fn read_splice(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        // The connection of the range before ended here; the next range opens anew.
        self.body = None;
        self.next_range = true;
        let sp = self.splices.front_mut().expect("a splice starts here");
        let done = self.offset - sp.start;
        let want = buf
            .len()
            .min((sp.len - done).min(usize::MAX as u64) as usize);
        let n = loop {
            match sp.source.read(&mut buf[..want]) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                r => break r?,
            }
        };
        if n == 0 {
            return Err(refused(
                &self.url,
                format!(
                    "the local copy of bytes {}..{} ended early",
                    sp.start,
                    sp.start + sp.len
                ),
            ));
        }
        self.hasher.update(&buf[..n]);
        self.offset += n as u64;
        if self.offset == sp.start + sp.len {
            self.splices.pop_front();
        }
        // Local bytes are progress too: a long copy from slow flash is no slow retrieval.
        self.check_rate(n)?;
        if self.offset == self.size {
            self.finish()?;
        }
        Ok(n)
    }
}

fn into_remote(url: &str, e: io::Error) -> RemoteError {
    match e.into_inner() {
        Some(inner) => match inner.downcast::<RemoteError>() {
            Ok(r) => *r,
            Err(other) => transport(url, other),
        },
        None => transport(url, "connection failed"),
    }
}

impl Read for BlobStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        loop {
            if self.offset == self.size {
                self.finish()?;
                return Ok(0);
            }
            // Inside a local copy (they are in order, and one is dropped when done).
            if self.splices.front().is_some_and(|s| s.start <= self.offset) {
                return self.read_splice(buf);
            }
            if self.body.is_some() && self.offset == self.body_end {
                // This range is done; the next one starts after a local copy.
                self.body = None;
                self.next_range = true;
                continue;
            }
            if self.body.is_none() && std::mem::take(&mut self.next_range) {
                if let Err(e) = self.connect() {
                    self.resume(e)?;
                }
                continue;
            }
            if self.body.is_none() {
                let e = io::Error::new(io::ErrorKind::ConnectionAborted, "connection closed");
                self.resume(e)?;
            }
            let want = buf
                .len()
                .min((self.body_end - self.offset).min(usize::MAX as u64) as usize);
            let body = self.body.as_mut().expect("connected");
            match body.read(&mut buf[..want]) {
                Ok(0) if !self.sized => {
                    self.size = self.offset;
                    self.finish()?;
                    return Ok(0);
                }
                Ok(0) => {
                    let e = io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!("connection ended at byte {}", self.offset),
                    );
                    self.resume(e)?;
                }
                Ok(n) => {
                    self.hasher.update(&buf[..n]);
                    self.offset += n as u64;
                    self.fetched
                        .fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
                    self.check_rate(n)?;
                    if self.offset == self.size {
                        self.finish()?;
                    }
                    return Ok(n);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if !self.sized => return Err(e),
                Err(e) => self.resume(e)?,
            }
        }
    }
}
