//! How a client reaches a registry that wants more than plain HTTP: the CA certificates it
//! trusts for `https`, and the credentials it answers a registry's challenge with.
//!
//! - TLS is rustls over the aws-lc crypto that the TUF code links anyway; the roots are a
//!   PEM file (the system's bundle, or one the remote names), never a built-in list.
//! - Credentials are a `USER:SECRET` line in a file only its owner (root, or whoever runs
//!   appmgr) can read. They are sent over TLS only: to the registry when it asks for
//!   `Basic`, or to the token service of a `Bearer` challenge, whose token is then sent to
//!   the registry (the flow of the distribution spec's token authentication). A redirect
//!   never carries them on.

use crate::RemoteError;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Debian's (and Yocto's `ca-certificates`) bundle of the system's trusted roots.
pub const SYSTEM_CA_FILE: &str = "/etc/ssl/certs/ca-certificates.crt";
/// The largest CA file read.
const MAX_CA_FILE: u64 = 4 << 20;
/// The largest credentials file read.
const MAX_CREDENTIALS: u64 = 4096;
/// The largest token service answer read.
pub(crate) const MAX_TOKEN_ANSWER: u64 = 64 * 1024;
/// The longest token accepted.
const MAX_TOKEN: usize = 16 * 1024;

fn usage(path: &Path, why: impl std::fmt::Display) -> RemoteError {
    RemoteError::Usage(format!("{}: {why}", path.display()))
}

/// Opens `path` without following a symlink in its last component, as a regular file of
/// at most `max` bytes, and reads it.
fn read_small(path: &Path, max: u64) -> Result<(std::fs::File, Vec<u8>), RemoteError> {
    use std::os::unix::fs::OpenOptionsExt;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                RemoteError::NotFound {
                    url: path.display().to_string(),
                }
            } else {
                usage(path, e)
            }
        })?;
    let meta = f.metadata().map_err(|e| usage(path, e))?;
    if !meta.is_file() {
        return Err(usage(path, "not a regular file"));
    }
    if meta.len() > max {
        return Err(usage(path, format!("larger than {max} bytes")));
    }
    let mut bytes = Vec::new();
    (&f).take(max + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| usage(path, e))?;
    if bytes.len() as u64 > max {
        return Err(usage(path, format!("larger than {max} bytes")));
    }
    Ok((f, bytes))
}

/// The CA certificates of a PEM file (at least one; anything else in it is ignored).
pub fn read_ca(path: &Path) -> Result<Vec<ureq::tls::Certificate<'static>>, RemoteError> {
    let (_, bytes) = read_small(path, MAX_CA_FILE)?;
    let mut out = Vec::new();
    for item in ureq::tls::parse_pem(&bytes) {
        match item {
            Ok(ureq::tls::PemItem::Certificate(c)) => out.push(c),
            Ok(_) => {}
            Err(e) => return Err(usage(path, format!("not a PEM file: {e}"))),
        }
    }
    if out.is_empty() {
        return Err(usage(path, "holds no PEM certificate"));
    }
    Ok(out)
}

/// A user name and its secret (password or access token) for a registry. Never shown:
/// `Debug` prints the user only.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub user: String,
    secret: String,
    /// The file they were read from (named in errors).
    pub file: PathBuf,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Credentials({} from {})", self.user, self.file.display())
    }
}

impl Credentials {
    /// Reads `USER:SECRET` (one line; a final newline is allowed) from a regular file that
    /// belongs to the user running appmgr and that no group or other user may read or
    /// write.
    pub fn read(path: &Path) -> Result<Credentials, RemoteError> {
        use std::os::unix::fs::MetadataExt;
        let (f, bytes) = read_small(path, MAX_CREDENTIALS)?;
        let meta = f.metadata().map_err(|e| usage(path, e))?;
        let euid = rustix::process::geteuid().as_raw();
        if meta.uid() != euid {
            return Err(usage(
                path,
                format!(
                    "belongs to uid {}, not to the user running appmgr ({euid})",
                    meta.uid()
                ),
            ));
        }
        if meta.mode() & 0o077 != 0 {
            return Err(usage(
                path,
                format!(
                    "mode {:o}: a credentials file must not be readable or writable by group or others (chmod 600)",
                    meta.mode() & 0o7777
                ),
            ));
        }
        let text = std::str::from_utf8(&bytes).map_err(|_| usage(path, "not UTF-8"))?;
        let text = text.strip_suffix('\n').unwrap_or(text);
        let (user, secret) = text
            .split_once(':')
            .ok_or_else(|| usage(path, "expected one line USER:SECRET"))?;
        let visible = |s: &str| !s.is_empty() && s.bytes().all(|b| (0x21..0x7f).contains(&b));
        if !visible(user) || !visible(secret) {
            return Err(usage(
                path,
                "expected one line USER:SECRET (printable ASCII, no spaces, neither empty)",
            ));
        }
        Ok(Credentials {
            user: user.to_string(),
            secret: secret.to_string(),
            file: path.to_path_buf(),
        })
    }

    /// The `Authorization` value of HTTP Basic authentication.
    pub(crate) fn basic(&self) -> String {
        use base64::Engine;
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD
                .encode(format!("{}:{}", self.user, self.secret))
        )
    }
}

/// What a [`crate::Client`] trusts and presents.
#[derive(Debug, Clone, Default)]
pub struct Access {
    /// The roots trusted for `https`; none: every `https` connection fails verification.
    pub roots: Option<Arc<Vec<ureq::tls::Certificate<'static>>>>,
    pub credentials: Option<Credentials>,
}

impl Access {
    /// The roots of `ca` (or of [`SYSTEM_CA_FILE`]) and the credentials of `credentials`.
    pub fn load(ca: Option<&Path>, credentials: Option<&Path>) -> Result<Access, RemoteError> {
        let ca = ca.unwrap_or(Path::new(SYSTEM_CA_FILE));
        Ok(Access {
            roots: Some(Arc::new(read_ca(ca)?)),
            credentials: credentials.map(Credentials::read).transpose()?,
        })
    }
}

/// One challenge of a `WWW-Authenticate` header: its scheme (lowercase) and parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Challenge {
    pub scheme: String,
    pub params: Vec<(String, String)>,
}

impl Challenge {
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Parses `SCHEME k="v", k2=v2` (RFC 9110 §11.6.1; one challenge, which is what
/// registries send). `None` for anything else.
pub(crate) fn parse_challenge(h: &str) -> Option<Challenge> {
    let h = h.trim();
    let (scheme, mut rest) = match h.split_once(' ') {
        Some((s, r)) => (s, r.trim_start()),
        None => (h, ""),
    };
    if scheme.is_empty()
        || !scheme
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
    {
        return None;
    }
    let mut params = Vec::new();
    while !rest.is_empty() {
        let (key, after) = rest.split_once('=')?;
        let key = key.trim();
        if key.is_empty()
            || !key
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_-".contains(&b))
        {
            return None;
        }
        let after = after.trim_start();
        let (value, tail) = if let Some(q) = after.strip_prefix('"') {
            let mut v = String::new();
            let mut chars = q.char_indices();
            let mut end = None;
            while let Some((i, c)) = chars.next() {
                match c {
                    '\\' => v.push(chars.next()?.1),
                    '"' => {
                        end = Some(i + 1);
                        break;
                    }
                    c if c.is_control() => return None,
                    c => v.push(c),
                }
            }
            (v, &q[end?..])
        } else {
            let end = after.find(',').unwrap_or(after.len());
            let v = after[..end].trim();
            if v.bytes().any(|b| b.is_ascii_control() || b == b' ') {
                return None;
            }
            (v.to_string(), &after[end..])
        };
        params.push((key.to_string(), value));
        let tail = tail.trim_start();
        rest = match tail.strip_prefix(',') {
            Some(t) => t.trim_start(),
            None if tail.is_empty() => "",
            None => return None,
        };
    }
    Some(Challenge {
        scheme: scheme.to_ascii_lowercase(),
        params,
    })
}

/// A token service's answer: `token` (or the OAuth2 name `access_token`).
pub(crate) fn parse_token(body: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Answer {
        token: Option<String>,
        access_token: Option<String>,
    }
    let a: Answer = serde_json::from_slice(body).ok()?;
    let t = a.token.filter(|t| !t.is_empty()).or(a.access_token)?;
    (!t.is_empty() && t.len() <= MAX_TOKEN && t.bytes().all(|b| (0x21..0x7f).contains(&b)))
        .then_some(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_registry_challenges() {
        let c = parse_challenge(
            r#"Bearer realm="https://auth.example.com/token",service="registry.example.com",scope="repository:fleet/apps:pull""#,
        )
        .unwrap();
        assert_eq!(c.scheme, "bearer");
        assert_eq!(c.param("realm"), Some("https://auth.example.com/token"));
        assert_eq!(c.param("service"), Some("registry.example.com"));
        assert_eq!(c.param("scope"), Some("repository:fleet/apps:pull"));
        let c = parse_challenge(r#"Basic realm="Registry Realm""#).unwrap();
        assert_eq!(
            (c.scheme.as_str(), c.param("realm")),
            ("basic", Some("Registry Realm"))
        );
        let c = parse_challenge(r#"Bearer realm="a\"b", x=y"#).unwrap();
        assert_eq!(c.param("realm"), Some("a\"b"));
        assert_eq!(c.param("x"), Some("y"));
        for bad in [
            "",
            "Bearer realm=\"open",
            "Bearer =x",
            "Be arer",
            "Bearer a=\"x\" junk",
        ] {
            assert_eq!(parse_challenge(bad), None, "{bad}");
        }
    }

    #[test]
    fn parses_token_answers() {
        assert_eq!(
            parse_token(br#"{"token":"abc.def"}"#).as_deref(),
            Some("abc.def")
        );
        assert_eq!(
            parse_token(br#"{"access_token":"xyz","expires_in":300}"#).as_deref(),
            Some("xyz")
        );
        assert_eq!(parse_token(br#"{"token":"a b"}"#), None);
        assert_eq!(parse_token(br#"{"token":""}"#), None);
        assert_eq!(parse_token(b"not json"), None);
    }

    #[test]
    fn credentials_files_must_be_private_and_well_formed() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("c");
        std::fs::write(&p, "fleet:s3cret\n").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        let c = Credentials::read(&p).unwrap();
        assert_eq!(c.user, "fleet");
        assert_eq!(c.basic(), "Basic ZmxlZXQ6czNjcmV0");
        assert!(!format!("{c:?}").contains("s3cret"));
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o640)).unwrap();
        let e = Credentials::read(&p).unwrap_err().to_string();
        assert!(e.contains("chmod 600"), "{e}");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        for bad in ["fleet", ":x", "fleet:", "fle et:x", "a:b\nc:d\n"] {
            std::fs::write(&p, bad).unwrap();
            let e = Credentials::read(&p).unwrap_err();
            assert!(matches!(e, RemoteError::Usage(_)), "{bad:?}: {e}");
        }
        let l = d.path().join("link");
        std::os::unix::fs::symlink(&p, &l).unwrap();
        assert!(Credentials::read(&l).is_err(), "a symlink is not followed");
    }
}
