//! `oci://HOST[:PORT]/REPO[:TAG]` (plain HTTP) or `oci+https://HOST[:PORT]/REPO[:TAG]`
//! (TLS): where a bundle is published or a remote lives.

use crate::RemoteError;
use std::fmt;

/// A registry repository, and optionally a tag in it. What is installed is trusted for its
/// signature (and a remote's TUF metadata), never for the connection; TLS adds privacy,
/// the registry's identity, and is required for credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OciRef {
    /// `oci+https://`: the registry is spoken to over TLS. `oci://` (or `oci+http://`):
    /// plain HTTP.
    pub tls: bool,
    pub host: String,
    pub port: u16,
    pub repo: String,
    pub tag: Option<String>,
}

/// A repository name as the distribution spec allows: lowercase components of
/// `[a-z0-9]` separated by `.`, `_`, `__` or runs of `-`, joined by `/`.
pub fn valid_repo(r: &str) -> bool {
    !r.is_empty()
        && r.len() <= 255
        && r.split('/').all(|c| {
            let b = c.as_bytes();
            !b.is_empty()
                && b[0].is_ascii_alphanumeric()
                && b[b.len() - 1].is_ascii_alphanumeric()
                && b.iter()
                    .all(|x| x.is_ascii_digit() || x.is_ascii_lowercase() || b"._-".contains(x))
                && !c.contains("..")
                && !c.contains("___")
                && !c.contains("._")
                && !c.contains("_.")
                && !c.contains(".-")
                && !c.contains("-.")
                && !c.contains("_-")
                && !c.contains("-_")
        })
}

/// A tag: `[A-Za-z0-9_][A-Za-z0-9._-]{0,127}`.
pub fn valid_tag(t: &str) -> bool {
    let b = t.as_bytes();
    !b.is_empty()
        && b.len() <= 128
        && (b[0].is_ascii_alphanumeric() || b[0] == b'_')
        && b.iter()
            .all(|x| x.is_ascii_alphanumeric() || b"._-".contains(x))
}

/// The tag `appmgr publish` gives a bundle when the reference names none:
/// `ID_ARCH_VERSION`, with every character a tag cannot hold (`+` of a build suffix) as `_`.
pub fn default_tag(id: &str, arch: &str, version: &str) -> String {
    let mut t: String = format!("{id}_{arch}_{version}")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    t.truncate(128);
    t
}

fn host_ok(h: &str) -> bool {
    !h.is_empty()
        && h.len() <= 253
        && h.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

impl OciRef {
    /// Parses `oci://HOST[:PORT]/REPO[:TAG]` or `oci+http://…` (plain HTTP, port 80 when
    /// absent) and `oci+https://…` (TLS, port 443 when absent).
    pub fn parse(s: &str) -> Result<OciRef, RemoteError> {
        let bad = |why: &str| {
            RemoteError::Usage(format!(
                "{}: {why} (expected oci://HOST[:PORT]/REPO[:TAG], or oci+https://… for TLS)",
                appmgr_types::escape_for_display(s)
            ))
        };
        let (tls, rest) = if let Some(r) = s.strip_prefix("oci+https://") {
            (true, r)
        } else if let Some(r) = s
            .strip_prefix("oci+http://")
            .or_else(|| s.strip_prefix("oci://"))
        {
            (false, r)
        } else {
            return Err(bad("not an oci:// reference"));
        };
        let (authority, path) = rest.split_once('/').ok_or_else(|| bad("no repository"))?;
        let (host, port) = match authority.rsplit_once(':') {
            Some((h, p)) => (
                h,
                p.parse::<u16>()
                    .ok()
                    .filter(|p| *p > 0)
                    .ok_or_else(|| bad("bad port"))?,
            ),
            None => (authority, if tls { 443 } else { 80 }),
        };
        if !host_ok(host) {
            return Err(bad("bad host name"));
        }
        let last = path.rsplit('/').next().unwrap_or(path);
        let (repo, tag) = match last.split_once(':') {
            Some((_, t)) => (&path[..path.len() - t.len() - 1], Some(t)),
            None => (path, None),
        };
        if !valid_repo(repo) {
            return Err(bad(
                "bad repository name (lowercase letters, digits, . _ - and /)",
            ));
        }
        if let Some(t) = tag {
            if !valid_tag(t) {
                return Err(bad("bad tag"));
            }
        }
        Ok(OciRef {
            tls,
            host: host.to_string(),
            port,
            repo: repo.to_string(),
            tag: tag.map(str::to_string),
        })
    }

    /// The registry's base URL.
    pub fn base_url(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}:{}", self.host, self.port)
    }

    /// This repository with another tag.
    pub fn with_tag(&self, tag: &str) -> OciRef {
        OciRef {
            tag: Some(tag.to_string()),
            ..self.clone()
        }
    }
}

impl fmt::Display for OciRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = if self.tls { "oci+https" } else { "oci" };
        write!(f, "{scheme}://{}:{}/{}", self.host, self.port, self.repo)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_references() {
        let r = OciRef::parse("oci://127.0.0.1:5000/fleet/apps:org.example.Hello_x86_64_1.0.0")
            .unwrap();
        assert_eq!(r.host, "127.0.0.1");
        assert_eq!(r.port, 5000);
        assert_eq!(r.repo, "fleet/apps");
        assert_eq!(r.tag.as_deref(), Some("org.example.Hello_x86_64_1.0.0"));
        assert_eq!(
            r.to_string(),
            "oci://127.0.0.1:5000/fleet/apps:org.example.Hello_x86_64_1.0.0"
        );
        let r = OciRef::parse("oci://registry.local/apps").unwrap();
        assert_eq!((r.tls, r.port, r.tag), (false, 80, None));
        let r = OciRef::parse("oci+http://registry.local/apps").unwrap();
        assert_eq!((r.tls, r.port), (false, 80));
        assert_eq!(r.to_string(), "oci://registry.local:80/apps");
        let r = OciRef::parse("oci+https://registry.local/fleet/apps:v1").unwrap();
        assert_eq!((r.tls, r.port, r.tag.as_deref()), (true, 443, Some("v1")));
        assert_eq!(r.base_url(), "https://registry.local:443");
        assert_eq!(
            r.to_string(),
            "oci+https://registry.local:443/fleet/apps:v1"
        );
        assert_eq!(OciRef::parse(&r.to_string()).unwrap(), r);
    }

    #[test]
    fn refuses_bad_references() {
        for s in [
            "http://127.0.0.1:5000/apps",
            "https://127.0.0.1:5000/apps",
            "oci+ftp://127.0.0.1:5000/apps",
            "oci+https:/127.0.0.1/apps",
            "oci://127.0.0.1:5000",
            "oci://127.0.0.1:0/apps",
            "oci://127.0.0.1:99999/apps",
            "oci://host name/apps",
            "oci://h/Apps",
            "oci://h/apps/../x",
            "oci://h/apps:",
            "oci://h/apps:-x",
            "oci://h/apps:a+b",
            "oci://h//apps",
            "oci://h/apps/",
        ] {
            let e = OciRef::parse(s).unwrap_err();
            assert!(matches!(e, RemoteError::Usage(_)), "{s}: {e}");
        }
    }

    #[test]
    fn default_tags_are_valid_tags() {
        let t = default_tag("org.example.Hello", "aarch64", "1.2.0+build.7");
        assert_eq!(t, "org.example.Hello_aarch64_1.2.0_build.7");
        assert!(valid_tag(&t));
        assert!(valid_tag(&default_tag(&"a".repeat(200), "x86_64", "1.0.0")));
    }
}
