//! A blocking client of the OCI distribution API: what `publish`, `remote ls` and a remote
//! install need, and nothing else. Every wait is bounded ([`Limits`]) and every answer
//! read into memory has a size bound.

use crate::artifact::{self, Descriptor, Listing, MANIFEST_MEDIA_TYPE};
use crate::stream::BlobStream;
use crate::{OciRef, RemoteError};
use std::time::Duration;
use ureq::http::StatusCode;

/// The bounds of every exchange with a registry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Connecting, and waiting for an answer's head.
    pub connect: Duration,
    /// The longest a read of a body may wait for a byte.
    pub idle: Duration,
    /// The lowest average rate a download may have over each [`Limits::rate_window`]
    /// (bytes per second): a slower one is refused (slow-retrieval attack).
    pub min_rate: u64,
    pub rate_window: Duration,
    /// How often a cut download is resumed (range request) before it is given up.
    pub max_resumes: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            connect: Duration::from_secs(10),
            idle: Duration::from_secs(30),
            min_rate: 8 * 1024,
            rate_window: Duration::from_secs(30),
            max_resumes: 5,
        }
    }
}

/// The largest tag list read.
const MAX_TAG_LIST: u64 = 4 << 20;

#[derive(Clone)]
pub struct Client {
    pub(crate) agent: ureq::Agent,
    pub(crate) limits: Limits,
}

pub(crate) fn transport(url: &str, e: impl std::fmt::Display) -> RemoteError {
    RemoteError::Transport {
        url: url.to_string(),
        reason: e.to_string(),
    }
}

fn status_error(url: &str, status: StatusCode) -> RemoteError {
    if status == StatusCode::NOT_FOUND {
        RemoteError::NotFound {
            url: url.to_string(),
        }
    } else {
        transport(url, format!("the registry answered {status}"))
    }
}

impl Client {
    pub fn new(limits: Limits) -> Client {
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .max_redirects(3)
            .timeout_connect(Some(limits.connect))
            .timeout_recv_response(Some(limits.connect))
            .timeout_per_read(Some(limits.idle))
            .timeout_per_write(Some(limits.idle))
            .user_agent(concat!("appmgr/", env!("CARGO_PKG_VERSION")))
            .build()
            .new_agent();
        Client { agent, limits }
    }

    fn repo_url(r: &OciRef, tail: &str) -> String {
        format!("{}/v2/{}/{tail}", r.base_url(), r.repo)
    }

    /// Reads a small body whole, refusing one larger than `max`.
    fn small_body(
        url: &str,
        resp: ureq::http::Response<ureq::Body>,
        max: u64,
    ) -> Result<Vec<u8>, RemoteError> {
        let mut body = resp.into_body();
        body.with_config()
            .limit(max)
            .read_to_vec()
            .map_err(|e| match e {
                ureq::Error::BodyExceedsLimit(_) => RemoteError::Refused {
                    url: url.to_string(),
                    reason: format!("answer larger than {max} bytes"),
                },
                e => transport(url, e),
            })
    }

    /// The tags of the repository (`GET /v2/REPO/tags/list`); none when the repository
    /// does not exist yet.
    pub fn tags(&self, r: &OciRef) -> Result<Vec<String>, RemoteError> {
        let url = Self::repo_url(r, "tags/list");
        let resp = self
            .agent
            .get(&url)
            .call()
            .map_err(|e| transport(&url, e))?;
        if resp.status() == StatusCode::NOT_FOUND {
            return Ok(Vec::new());
        }
        if !resp.status().is_success() {
            return Err(status_error(&url, resp.status()));
        }
        let body = Self::small_body(&url, resp, MAX_TAG_LIST)?;
        #[derive(serde::Deserialize)]
        struct Tags {
            tags: Option<Vec<String>>,
        }
        let t: Tags = serde_json::from_slice(&body).map_err(|e| RemoteError::Refused {
            url: url.clone(),
            reason: format!("not a tag list: {e}"),
        })?;
        let mut tags = t.tags.unwrap_or_default();
        tags.retain(|t| crate::reference::valid_tag(t));
        tags.sort();
        Ok(tags)
    }

    /// The image manifest of `tag`, parsed as a bundle artifact.
    pub fn listing(&self, r: &OciRef, tag: &str) -> Result<Listing, RemoteError> {
        let (url, body) = self.raw_manifest(r, tag)?;
        artifact::parse_listing(tag, &body, &url)
    }

    /// The image manifest of `tag` as read (at most [`artifact::MAX_IMAGE_MANIFEST`]
    /// bytes), and its URL.
    pub fn raw_manifest(&self, r: &OciRef, tag: &str) -> Result<(String, Vec<u8>), RemoteError> {
        let url = Self::repo_url(r, &format!("manifests/{tag}"));
        let resp = self
            .agent
            .get(&url)
            .header("Accept", MANIFEST_MEDIA_TYPE)
            .call()
            .map_err(|e| transport(&url, e))?;
        if !resp.status().is_success() {
            return Err(status_error(&url, resp.status()));
        }
        let body = Self::small_body(&url, resp, artifact::MAX_IMAGE_MANIFEST)?;
        Ok((url, body))
    }

    /// The blob `desc` as a stream of exactly `desc.size` bytes whose digest is checked at
    /// its end.
    pub fn blob(&self, r: &OciRef, desc: &Descriptor) -> Result<BlobStream, RemoteError> {
        let url = Self::repo_url(r, &format!("blobs/{}", desc.digest));
        BlobStream::open(self, url, desc.size, &desc.digest)
    }

    /// [`Client::blob`], the `splices` taken from local copies and only the rest
    /// fetched (range requests); `fetched` counts the bytes that came over the network.
    pub fn blob_spliced(
        &self,
        r: &OciRef,
        desc: &Descriptor,
        splices: Vec<crate::stream::Splice>,
        fetched: std::sync::Arc<std::sync::atomic::AtomicU64>,
    ) -> Result<BlobStream, RemoteError> {
        let url = Self::repo_url(r, &format!("blobs/{}", desc.digest));
        BlobStream::open_spliced(self, url, desc.size, &desc.digest, splices, fetched)
    }

    /// A plain `http://` URL as a stream of at most `max` bytes (no digest is known).
    pub fn url(&self, url: &str, max: u64) -> Result<BlobStream, RemoteError> {
        BlobStream::open_unsized(self, url.to_string(), max)
    }

    /// Uploads a blob unless the registry has it already (monolithic upload).
    pub fn push_blob(
        &self,
        r: &OciRef,
        digest: &str,
        body: impl ureq::AsSendBody,
    ) -> Result<(), RemoteError> {
        let url = Self::repo_url(r, &format!("blobs/{digest}"));
        let head = self
            .agent
            .head(&url)
            .call()
            .map_err(|e| transport(&url, e))?;
        if head.status().is_success() {
            return Ok(());
        }
        let start = Self::repo_url(r, "blobs/uploads/");
        let resp = self
            .agent
            .post(&start)
            .send_empty()
            .map_err(|e| transport(&start, e))?;
        if resp.status() != StatusCode::ACCEPTED {
            return Err(status_error(&start, resp.status()));
        }
        let loc = resp
            .headers()
            .get("location")
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| transport(&start, "no Location in the upload's answer"))?;
        let mut put = if loc.starts_with('/') {
            format!("{}{loc}", r.base_url())
        } else if loc.starts_with(&format!("{}/", r.base_url())) {
            loc.to_string()
        } else {
            return Err(transport(
                &start,
                format!("upload location {loc:?} is not on this registry"),
            ));
        };
        put.push(if put.contains('?') { '&' } else { '?' });
        put.push_str("digest=");
        put.push_str(&digest.replace(':', "%3A"));
        let resp = self
            .agent
            .put(&put)
            .header("Content-Type", "application/octet-stream")
            .send(body)
            .map_err(|e| transport(&url, e))?;
        if resp.status() != StatusCode::CREATED {
            return Err(transport(
                &url,
                format!("the registry refused the upload: {}", resp.status()),
            ));
        }
        Ok(())
    }

    /// Stores an image manifest under `tag`.
    pub fn put_manifest(&self, r: &OciRef, tag: &str, bytes: &[u8]) -> Result<(), RemoteError> {
        let url = Self::repo_url(r, &format!("manifests/{tag}"));
        let resp = self
            .agent
            .put(&url)
            .header("Content-Type", MANIFEST_MEDIA_TYPE)
            .send(bytes)
            .map_err(|e| transport(&url, e))?;
        if resp.status() != StatusCode::CREATED {
            let status = resp.status();
            let body = Self::small_body(&url, resp, 4096).unwrap_or_default();
            return Err(transport(
                &url,
                format!(
                    "the registry refused the manifest: {status} {}",
                    appmgr_types::escape_for_display(&String::from_utf8_lossy(&body))
                ),
            ));
        }
        Ok(())
    }
}
