//! ed25519 signing keys in standard encodings: PKCS#8 PEM for secret keys and
//! SubjectPublicKeyInfo PEM for public keys, so that `openssl genpkey -algorithm ed25519`
//! or an HSM export can produce keys appmgr uses, and the other way round.

use ed25519_dalek::pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey};
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use sha2::{Digest, Sha256};
use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: not a PKCS#8 PEM ed25519 secret key: {reason}")]
    BadSecret { path: PathBuf, reason: String },
    #[error("{path}: not a SubjectPublicKeyInfo PEM ed25519 public key: {reason}")]
    BadPublic { path: PathBuf, reason: String },
    #[error("{path}: weak (small-order) ed25519 public key refused")]
    WeakKey { path: PathBuf },
    #[error("{path}: already exists, refusing to overwrite a key")]
    Exists { path: PathBuf },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> KeyError + '_ {
    move |source| KeyError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// A short, stable identifier of a public key: the first 16 hex digits of the SHA-256 of
/// its 32 raw bytes.
pub fn fingerprint(key: &VerifyingKey) -> String {
    hex::encode(&Sha256::digest(key.as_bytes())[..8])
}

/// Generates a key pair and writes `OUT.key` (mode 0600, created exclusively) and
/// `OUT.pub`. Returns the two paths.
pub fn generate(out: &Path) -> Result<(PathBuf, PathBuf), KeyError> {
    let key = SigningKey::generate(&mut rand_core::OsRng);
    let secret_path = with_suffix(out, "key");
    let public_path = with_suffix(out, "pub");
    for p in [&secret_path, &public_path] {
        if p.symlink_metadata().is_ok() {
            return Err(KeyError::Exists { path: p.clone() });
        }
    }
    let pem = key
        .to_pkcs8_pem(Default::default())
        .map_err(|e| KeyError::BadSecret {
            path: secret_path.clone(),
            reason: e.to_string(),
        })?;
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&secret_path)
        .map_err(io(&secret_path))?;
    f.write_all(pem.as_bytes())
        .and_then(|_| f.sync_all())
        .map_err(io(&secret_path))?;
    let public = public_pem(&key.verifying_key());
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .open(&public_path)
        .map_err(io(&public_path))?;
    f.write_all(public.as_bytes())
        .and_then(|_| f.sync_all())
        .map_err(io(&public_path))?;
    Ok((secret_path, public_path))
}

fn with_suffix(out: &Path, ext: &str) -> PathBuf {
    let mut s = out.as_os_str().to_owned();
    s.push(".");
    s.push(ext);
    PathBuf::from(s)
}

/// The SubjectPublicKeyInfo PEM text of a public key.
pub fn public_pem(key: &VerifyingKey) -> String {
    key.to_public_key_pem(Default::default())
        .expect("an ed25519 public key always encodes")
}

/// Loads a PKCS#8 PEM secret key.
pub fn load_secret(path: &Path) -> Result<SigningKey, KeyError> {
    let text = fs::read_to_string(path).map_err(io(path))?;
    SigningKey::from_pkcs8_pem(&text).map_err(|e| KeyError::BadSecret {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })
}

/// Parses SubjectPublicKeyInfo PEM text; refuses weak keys. `path` names the source.
pub fn parse_public(text: &str, path: &Path) -> Result<VerifyingKey, KeyError> {
    let key = VerifyingKey::from_public_key_pem(text).map_err(|e| KeyError::BadPublic {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    if key.is_weak() {
        return Err(KeyError::WeakKey {
            path: path.to_path_buf(),
        });
    }
    Ok(key)
}

/// Loads a SubjectPublicKeyInfo PEM public key.
pub fn load_public(path: &Path) -> Result<VerifyingKey, KeyError> {
    let text = fs::read_to_string(path).map_err(io(path))?;
    parse_public(&text, path)
}

/// Signs `msg`; the signature is 64 raw bytes.
pub fn sign(key: &SigningKey, msg: &[u8]) -> [u8; 64] {
    key.sign(msg).to_bytes()
}

/// Strict verification: refuses non-canonical signatures and small-order keys or R values
/// (the checks `verify` alone does not make), so a signature is bound to one message and
/// one key.
pub fn verify_strict(key: &VerifyingKey, msg: &[u8], sig: &[u8]) -> bool {
    let Ok(sig) = Signature::from_slice(sig) else {
        return false;
    };
    !key.is_weak() && key.verify_strict(msg, &sig).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generate_load_sign_verify() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("demo");
        let (sk, pk) = generate(&out).unwrap();
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            fs::metadata(&sk).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let secret = load_secret(&sk).unwrap();
        let public = load_public(&pk).unwrap();
        assert_eq!(secret.verifying_key(), public);
        let sig = sign(&secret, b"hello");
        assert!(verify_strict(&public, b"hello", &sig));
        assert!(!verify_strict(&public, b"hellp", &sig));
        assert!(!verify_strict(&public, b"hello", &sig[..63]));
        assert!(!verify_strict(&public, b"hello", &[0u8; 64]));
        // Non-canonical s (s + l) must be refused.
        let mut bad = sig;
        bad[63] |= 0xf0;
        assert!(!verify_strict(&public, b"hello", &bad));
        assert!(matches!(generate(&out), Err(KeyError::Exists { .. })));
    }

    #[test]
    fn small_order_public_key_refused() {
        // The identity point (encoded as 1 followed by zeros) has order 1.
        let mut raw = [0u8; 32];
        raw[0] = 1;
        let key = VerifyingKey::from_bytes(&raw).unwrap();
        let pem = key.to_public_key_pem(Default::default()).unwrap();
        assert!(matches!(
            parse_public(&pem, Path::new("x.pub")),
            Err(KeyError::WeakKey { .. })
        ));
    }

    #[test]
    fn openssl_keys_interoperate() {
        let dir = tempfile::tempdir().unwrap();
        let sk = dir.path().join("o.key");
        let pk = dir.path().join("o.pub");
        let ok = std::process::Command::new("openssl")
            .args(["genpkey", "-algorithm", "ed25519", "-out"])
            .arg(&sk)
            .status();
        if !matches!(ok, Ok(s) if s.success()) {
            eprintln!("skipped: openssl not available");
            return;
        }
        let st = std::process::Command::new("openssl")
            .args(["pkey", "-pubout", "-in"])
            .arg(&sk)
            .arg("-out")
            .arg(&pk)
            .status()
            .unwrap();
        assert!(st.success());
        let secret = load_secret(&sk).unwrap();
        let public = load_public(&pk).unwrap();
        assert_eq!(secret.verifying_key(), public);
    }
}
