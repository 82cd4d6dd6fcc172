//! A blocking client of the OCI distribution API: what `publish`, `remote ls` and a remote
//! install need, and nothing else. Every wait is bounded ([`Limits`]) and every answer
//! read into memory has a size bound.

use crate::access::{self, Access, Credentials};
use crate::artifact::{self, Descriptor, Listing, MANIFEST_MEDIA_TYPE};
use crate::stream::BlobStream;
use crate::{OciRef, RemoteError};
use std::sync::{Arc, Mutex};
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
    auth: Arc<Auth>,
}

/// The credentials of a client, and the `Authorization` value the last challenge earned
/// (Basic, or a token service's Bearer token), sent with every request after it.
struct Auth {
    credentials: Option<Credentials>,
    header: Mutex<Option<String>>,
}

pub(crate) fn transport(url: &str, e: impl std::fmt::Display) -> RemoteError {
    RemoteError::Transport {
        url: url.to_string(),
        reason: e.to_string(),
    }
}

/// A failed exchange: a certificate that does not verify is refused (exit 3), like any
/// other answer that is not what it must be; the rest is the network's (exit 1).
pub(crate) fn call_error(url: &str, e: ureq::Error) -> RemoteError {
    match e {
        ureq::Error::Rustls(e) => RemoteError::Refused {
            url: url.to_string(),
            reason: format!("TLS: {e}"),
        },
        ureq::Error::Tls(e) => RemoteError::Refused {
            url: url.to_string(),
            reason: format!("TLS: {e}"),
        },
        ureq::Error::Io(io) if io.get_ref().is_some_and(|i| i.is::<rustls::Error>()) => {
            RemoteError::Refused {
                url: url.to_string(),
                reason: format!("TLS: {io}"),
            }
        }
        e => transport(url, e),
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

type Answer = ureq::http::Response<ureq::Body>;

/// `r` with `Authorization: auth`, when there is one.
pub(crate) fn with_auth<B>(
    r: ureq::RequestBuilder<B>,
    auth: Option<&str>,
) -> ureq::RequestBuilder<B> {
    match auth {
        Some(a) => r.header("Authorization", a),
        None => r,
    }
}

impl Client {
    /// A client without credentials that trusts no CA (plain `http` only).
    pub fn new(limits: Limits) -> Client {
        Client::with_access(limits, Access::default())
    }

    /// A client that trusts `access`'s roots for `https` and answers challenges with its
    /// credentials.
    pub fn with_access(limits: Limits, access: Access) -> Client {
        let roots = access.roots.unwrap_or_default();
        let tls = ureq::tls::TlsConfig::builder()
            .provider(ureq::tls::TlsProvider::Rustls)
            .root_certs(ureq::tls::RootCerts::Specific(roots))
            .unversioned_rustls_crypto_provider(Arc::new(
                rustls::crypto::aws_lc_rs::default_provider(),
            ))
            .build();
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .max_redirects(3)
            .redirect_auth_headers(ureq::config::RedirectAuthHeaders::Never)
            .tls_config(tls)
            .timeout_connect(Some(limits.connect))
            .timeout_recv_response(Some(limits.connect))
            .timeout_per_read(Some(limits.idle))
            .timeout_per_write(Some(limits.idle))
            .user_agent(concat!("appmgr/", env!("CARGO_PKG_VERSION")))
            .build()
            .new_agent();
        Client {
            agent,
            limits,
            auth: Arc::new(Auth {
                credentials: access.credentials,
                header: Mutex::new(None),
            }),
        }
    }

    fn current_auth(&self) -> Option<String> {
        self.auth
            .header
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Sends the request `send` makes (given the `Authorization` value to set, if any).
    /// A `401` with a challenge is met once ([`Client::authenticate`]) and the request
    /// sent again; a second `401` is a refusal of the credentials (exit 7).
    pub(crate) fn send(
        &self,
        url: &str,
        send: &dyn Fn(Option<&str>) -> Result<Answer, ureq::Error>,
    ) -> Result<Answer, RemoteError> {
        let resp = send(self.current_auth().as_deref()).map_err(|e| call_error(url, e))?;
        if resp.status() != StatusCode::UNAUTHORIZED {
            return Ok(resp);
        }
        let header = self.authenticate(url, &resp)?;
        let resp = send(Some(&header)).map_err(|e| call_error(url, e))?;
        if resp.status() == StatusCode::UNAUTHORIZED {
            return Err(self.denied(url, "the registry refused the credentials"));
        }
        *self.auth.header.lock().unwrap_or_else(|p| p.into_inner()) = Some(header);
        Ok(resp)
    }

    fn denied(&self, url: &str, what: &str) -> RemoteError {
        RemoteError::Denied {
            url: url.to_string(),
            reason: match &self.auth.credentials {
                Some(c) => format!("{what} of user {} ({})", c.user, c.file.display()),
                None => format!(
                    "{what}: it wants credentials and this remote has none (credentials = FILE)"
                ),
            },
        }
    }

    /// The `Authorization` value that answers the challenge of `resp` (a `401`):
    /// `Basic` with the credentials (over TLS only), or `Bearer` with a token from the
    /// challenge's token service (asked with the credentials over TLS, or anonymously).
    fn authenticate(&self, url: &str, resp: &Answer) -> Result<String, RemoteError> {
        let challenge = resp
            .headers()
            .get("www-authenticate")
            .and_then(|v| v.to_str().ok())
            .and_then(access::parse_challenge)
            .ok_or_else(|| {
                self.denied(
                    url,
                    "the registry answered 401 without a challenge appmgr reads",
                )
            })?;
        let over_tls = |u: &str| u.starts_with("https://");
        match challenge.scheme.as_str() {
            "basic" => {
                let c = self
                    .auth
                    .credentials
                    .as_ref()
                    .ok_or_else(|| self.denied(url, "the registry asks for a password"))?;
                if !over_tls(url) {
                    return Err(self.denied(url, "refusing to send a password over plain http"));
                }
                Ok(c.basic())
            }
            "bearer" => {
                let realm = challenge.param("realm").unwrap_or("");
                let mut token_url = url::Url::parse(realm).map_err(|_| {
                    self.denied(
                        url,
                        &format!(
                            "the token service {:?} is not a URL",
                            appmgr_types::escape_for_display(realm)
                        ),
                    )
                })?;
                if !matches!(token_url.scheme(), "https" | "http") {
                    return Err(self.denied(url, "the token service is not an http(s) URL"));
                }
                {
                    let mut q = token_url.query_pairs_mut();
                    for k in ["service", "scope"] {
                        if let Some(v) = challenge.param(k) {
                            q.append_pair(k, v);
                        }
                    }
                }
                let token_url = token_url.to_string();
                let basic = match &self.auth.credentials {
                    Some(c) if over_tls(&token_url) => Some(c.basic()),
                    Some(_) => {
                        return Err(self.denied(
                            url,
                            "refusing to send a password to a token service over plain http",
                        ))
                    }
                    None => None,
                };
                let mut req = self.agent.get(&token_url);
                if let Some(b) = &basic {
                    req = req.header("Authorization", b);
                }
                let answer = req.call().map_err(|e| call_error(&token_url, e))?;
                if answer.status() == StatusCode::UNAUTHORIZED
                    || answer.status() == StatusCode::FORBIDDEN
                {
                    return Err(self.denied(url, "the token service refused the credentials"));
                }
                if !answer.status().is_success() {
                    return Err(status_error(&token_url, answer.status()));
                }
                let body = Self::small_body(&token_url, answer, access::MAX_TOKEN_ANSWER)?;
                let token = access::parse_token(&body).ok_or_else(|| RemoteError::Refused {
                    url: token_url.clone(),
                    reason: "the token service's answer holds no token".into(),
                })?;
                Ok(format!("Bearer {token}"))
            }
            other => Err(self.denied(
                url,
                &format!(
                    "the registry asks for {} authentication, which appmgr does not speak",
                    appmgr_types::escape_for_display(other)
                ),
            )),
        }
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
        let resp = self.send(&url, &|auth| with_auth(self.agent.get(&url), auth).call())?;
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
        let resp = self.send(&url, &|auth| {
            with_auth(
                self.agent.get(&url).header("Accept", MANIFEST_MEDIA_TYPE),
                auth,
            )
            .call()
        })?;
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
        let head = self.send(&url, &|auth| with_auth(self.agent.head(&url), auth).call())?;
        if head.status().is_success() {
            return Ok(());
        }
        let start = Self::repo_url(r, "blobs/uploads/");
        let resp = self.send(&start, &|auth| {
            with_auth(self.agent.post(&start), auth).send_empty()
        })?;
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
        // The body is read once: the upload's start above met any challenge already.
        let req = self
            .agent
            .put(&put)
            .header("Content-Type", "application/octet-stream");
        let resp = with_auth(req, self.current_auth().as_deref())
            .send(body)
            .map_err(|e| call_error(&url, e))?;
        if resp.status() == StatusCode::UNAUTHORIZED {
            return Err(self.denied(&url, "the registry refused the upload's credentials"));
        }
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
        let resp = self.send(&url, &|auth| {
            with_auth(
                self.agent
                    .put(&url)
                    .header("Content-Type", MANIFEST_MEDIA_TYPE),
                auth,
            )
            .send(bytes)
        })?;
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
