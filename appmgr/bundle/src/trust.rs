//! The trusted signing keys: `CONFIG/trust.d/NAME.pub` (SubjectPublicKeyInfo PEM, as
//! `openssl pkey -pubout` writes it) and, for a scoped key, `CONFIG/trust.d/NAME.scope`
//! (one app-ID glob per line, `#` comments). A key without a scope file may sign any ID.
//!
//! Integrators can therefore provision keys by dropping files into the directory (a Yocto
//! recipe does). `trust add` writes the scope file before the key file, each by
//! write-temp-then-rename, so an interrupted add leaves either no key or a correctly
//! scoped key, never an unscoped one; `trust remove` deletes the key before the scope.
//! A scope file that cannot be parsed makes loading fail (fail closed) instead of
//! silently widening the key.

use crate::keys::{self, KeyError};
use appmgr_types::{AppId, Glob};
use ed25519_dalek::VerifyingKey;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum TrustError {
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: line {line}: {reason}")]
    BadScope {
        path: PathBuf,
        line: usize,
        reason: String,
    },
    #[error("key name {name:?}: {reason}")]
    BadName { name: String, reason: String },
    #[error(
        "trusted key {name:?} already exists with a different key (fingerprint {fingerprint})"
    )]
    Exists { name: String, fingerprint: String },
    #[error("no trusted key named {0:?}")]
    NotFound(String),
}

impl TrustError {
    pub fn class(&self) -> appmgr_types::ErrorClass {
        use appmgr_types::ErrorClass::*;
        match self {
            TrustError::Key(KeyError::Io { .. }) | TrustError::Io { .. } => Other,
            TrustError::Key(KeyError::Exists { .. }) | TrustError::Exists { .. } => Conflict,
            TrustError::Key(_) | TrustError::BadScope { .. } => Integrity,
            TrustError::BadName { .. } => Usage,
            TrustError::NotFound(_) => NotFound,
        }
    }
}

/// One trusted key.
#[derive(Debug, Clone)]
pub struct TrustedKey {
    pub name: String,
    pub key: VerifyingKey,
    pub fingerprint: String,
    /// `None`: may sign any ID.
    pub scope: Option<Vec<Glob>>,
}

impl TrustedKey {
    /// Whether this key may sign bundles for `id`.
    pub fn covers(&self, id: &AppId) -> bool {
        match &self.scope {
            None => true,
            Some(globs) => globs.iter().any(|g| g.matches(id.as_str())),
        }
    }
}

/// The set of trusted keys read from a config dir.
#[derive(Debug, Clone, Default)]
pub struct TrustStore {
    pub keys: Vec<TrustedKey>,
}

/// `CONFIG/trust.d`.
pub fn trust_dir(config_dir: &Path) -> PathBuf {
    config_dir.join("trust.d")
}

fn validate_name(name: &str) -> Result<(), TrustError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    if ok {
        Ok(())
    } else {
        Err(TrustError::BadName {
            name: appmgr_types::escape_for_display(name),
            reason: "use 1 to 64 letters, digits, `_`, `-`, `.`, not starting with `.`".into(),
        })
    }
}

fn parse_scope(text: &str, path: &Path) -> Result<Vec<Glob>, TrustError> {
    let mut globs = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        globs.push(Glob::new(line).map_err(|e| TrustError::BadScope {
            path: path.to_path_buf(),
            line: i + 1,
            reason: e.to_string(),
        })?);
    }
    if globs.is_empty() {
        return Err(TrustError::BadScope {
            path: path.to_path_buf(),
            line: 0,
            reason: "scope file lists no pattern (delete it to make the key unscoped)".into(),
        });
    }
    Ok(globs)
}

impl TrustStore {
    /// Loads every `*.pub` in `CONFIG/trust.d` (a missing directory is an empty store).
    pub fn load(config_dir: &Path) -> Result<TrustStore, TrustError> {
        let dir = trust_dir(config_dir);
        let rd = match fs::read_dir(&dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(TrustStore::default()),
            Err(source) => return Err(TrustError::Io { path: dir, source }),
        };
        let mut keys = Vec::new();
        for ent in rd {
            let ent = ent.map_err(|source| TrustError::Io {
                path: dir.clone(),
                source,
            })?;
            let fname = ent.file_name();
            let Some(name) = fname.to_str().and_then(|n| n.strip_suffix(".pub")) else {
                continue;
            };
            if validate_name(name).is_err() {
                continue;
            }
            let path = ent.path();
            let key = keys::load_public(&path)?;
            let scope_path = dir.join(format!("{name}.scope"));
            let scope = match fs::read_to_string(&scope_path) {
                Ok(text) => Some(parse_scope(&text, &scope_path)?),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
                Err(source) => {
                    return Err(TrustError::Io {
                        path: scope_path,
                        source,
                    })
                }
            };
            keys.push(TrustedKey {
                name: name.to_string(),
                fingerprint: keys::fingerprint(&key),
                key,
                scope,
            });
        }
        keys.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(TrustStore { keys })
    }

    /// Adds the public key at `pub_path` under the name of its file stem.
    pub fn add(
        config_dir: &Path,
        pub_path: &Path,
        scope: &[Glob],
    ) -> Result<TrustedKey, TrustError> {
        let name = pub_path
            .file_name()
            .and_then(|n| n.to_str())
            .map(|n| n.strip_suffix(".pub").unwrap_or(n))
            .unwrap_or("")
            .to_string();
        validate_name(&name)?;
        let text = fs::read_to_string(pub_path).map_err(|source| TrustError::Io {
            path: pub_path.to_path_buf(),
            source,
        })?;
        let key = keys::parse_public(&text, pub_path)?;
        let fp = keys::fingerprint(&key);
        let existing = TrustStore::load(config_dir)?;
        if let Some(k) = existing.keys.iter().find(|k| k.name == name) {
            if k.key != key {
                return Err(TrustError::Exists {
                    name,
                    fingerprint: k.fingerprint.clone(),
                });
            }
        }
        let dir = trust_dir(config_dir);
        fs::create_dir_all(&dir).map_err(|source| TrustError::Io {
            path: dir.clone(),
            source,
        })?;
        let scope_path = dir.join(format!("{name}.scope"));
        if scope.is_empty() {
            remove_if_exists(&scope_path)?;
        } else {
            let mut body = String::from("# app-ID patterns this key may sign, one per line\n");
            for g in scope {
                body.push_str(g.as_str());
                body.push('\n');
            }
            write_atomic(&scope_path, body.as_bytes())?;
        }
        write_atomic(
            &dir.join(format!("{name}.pub")),
            keys::public_pem(&key).as_bytes(),
        )?;
        Ok(TrustedKey {
            name,
            key,
            fingerprint: fp,
            scope: (!scope.is_empty()).then(|| scope.to_vec()),
        })
    }

    /// Removes a trusted key by name or fingerprint.
    pub fn remove(config_dir: &Path, name_or_fp: &str) -> Result<TrustedKey, TrustError> {
        let store = TrustStore::load(config_dir)?;
        let key = store
            .keys
            .into_iter()
            .find(|k| k.name == name_or_fp || k.fingerprint == name_or_fp)
            .ok_or_else(|| TrustError::NotFound(appmgr_types::escape_for_display(name_or_fp)))?;
        let dir = trust_dir(config_dir);
        remove_if_exists(&dir.join(format!("{}.pub", key.name)))?;
        sync_dir(&dir)?;
        remove_if_exists(&dir.join(format!("{}.scope", key.name)))?;
        Ok(key)
    }
}

fn remove_if_exists(path: &Path) -> Result<(), TrustError> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(TrustError::Io {
            path: path.to_path_buf(),
            source,
        }),
    }
}

fn sync_dir(dir: &Path) -> Result<(), TrustError> {
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|source| TrustError::Io {
            path: dir.to_path_buf(),
            source,
        })
}

fn write_atomic(path: &Path, data: &[u8]) -> Result<(), TrustError> {
    let tmp = path.with_extension("tmp~");
    let err = |source| TrustError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut f = fs::File::create(&tmp).map_err(err)?;
    f.write_all(data).and_then(|_| f.sync_all()).map_err(err)?;
    fs::rename(&tmp, path).map_err(err)?;
    sync_dir(path.parent().unwrap_or(Path::new(".")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn add_list_scope_remove() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = dir.path().join("etc");
        let (_, pubk) = keys::generate(&dir.path().join("vendor")).unwrap();
        let scope = [Glob::new("org.vendor.*").unwrap()];
        TrustStore::add(&cfg, &pubk, &scope).unwrap();
        let store = TrustStore::load(&cfg).unwrap();
        assert_eq!(store.keys.len(), 1);
        let k = &store.keys[0];
        assert_eq!(k.name, "vendor");
        assert!(k.covers(&AppId::new("org.vendor.Maps").unwrap()));
        assert!(!k.covers(&AppId::new("org.other.Maps").unwrap()));
        // Re-adding without scope widens it deliberately.
        TrustStore::add(&cfg, &pubk, &[]).unwrap();
        let store = TrustStore::load(&cfg).unwrap();
        assert!(store.keys[0].covers(&AppId::new("org.other.Maps").unwrap()));
        // A different key under the same name is a conflict, and nothing changes.
        let other = dir.path().join("x");
        fs::create_dir(&other).unwrap();
        let (_, pub2) = keys::generate(&other.join("vendor")).unwrap();
        let before = fs::read(trust_dir(&cfg).join("vendor.pub")).unwrap();
        assert!(matches!(
            TrustStore::add(&cfg, &pub2, &[]),
            Err(TrustError::Exists { .. })
        ));
        assert_eq!(
            fs::read(trust_dir(&cfg).join("vendor.pub")).unwrap(),
            before
        );
        TrustStore::remove(&cfg, "vendor").unwrap();
        assert!(TrustStore::load(&cfg).unwrap().keys.is_empty());
        assert!(matches!(
            TrustStore::remove(&cfg, "vendor"),
            Err(TrustError::NotFound(_))
        ));
    }

    #[test]
    fn bad_scope_file_fails_closed() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = dir.path().join("etc");
        let (_, pubk) = keys::generate(&dir.path().join("k")).unwrap();
        TrustStore::add(&cfg, &pubk, &[Glob::new("org.a.*").unwrap()]).unwrap();
        fs::write(trust_dir(&cfg).join("k.scope"), "org/bad\n").unwrap();
        let e = TrustStore::load(&cfg).unwrap_err();
        assert!(matches!(e, TrustError::BadScope { line: 1, .. }), "{e}");
    }

    #[test]
    fn garbage_public_key_refused_and_not_added() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = dir.path().join("etc");
        let p = dir.path().join("junk.pub");
        fs::write(
            &p,
            "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n",
        )
        .unwrap();
        assert!(TrustStore::add(&cfg, &p, &[]).is_err());
        assert!(!trust_dir(&cfg).join("junk.pub").exists());
    }
}
