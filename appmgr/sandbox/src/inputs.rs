//! The inputs a launch plan was derived from, by digest, so a plan made earlier (at
//! install, on `reload`) can never be applied after one of them changed.
//!
//! A plan carries one [`PlanInput`] per file or directory its maker read: the host
//! configuration, every policy file and the policy directory's listing, the board
//! profile, the app's and its runtime's state records, the manifest, and the paths that
//! must stay absent (fsck's corrupt markers). Before anything else the launcher recomputes
//! each digest ([`first_stale`]) and refuses the plan on the first mismatch, naming the
//! path. The digests are SHA-256 of a file's bytes, or of a directory's sorted entry
//! names (one per line); an absent path has none.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::io;
use std::path::{Path, PathBuf};

/// One input of a plan and its digest when the plan was made.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct PlanInput {
    pub path: PathBuf,
    /// SHA-256 (hex) of the content; `None`: the path did not exist.
    pub sha256: Option<String>,
}

impl PlanInput {
    /// `path` with its digest now.
    pub fn of(path: impl Into<PathBuf>) -> io::Result<PlanInput> {
        let path = path.into();
        let sha256 = digest_path(&path)?;
        Ok(PlanInput { path, sha256 })
    }
}

/// The digest of `path` now (see the module docs); `None` when it does not exist. Any
/// other file (a device node a policy condition names, a FIFO) is never read (that could
/// block): its digest is that of its type and device number.
pub fn digest_path(path: &Path) -> io::Result<Option<String>> {
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let mut h = Sha256::new();
    if meta.is_dir() {
        let mut names = Vec::new();
        for e in std::fs::read_dir(path)? {
            names.push(e?.file_name());
        }
        names.sort();
        for n in names {
            h.update(std::os::unix::ffi::OsStrExt::as_bytes(n.as_os_str()));
            h.update(b"\n");
        }
    } else if meta.is_file() {
        let bytes = match std::fs::read(path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        h.update(&bytes);
    } else {
        use std::os::unix::fs::{FileTypeExt, MetadataExt};
        let t = meta.file_type();
        let kind = if t.is_char_device() {
            "char"
        } else if t.is_block_device() {
            "block"
        } else if t.is_fifo() {
            "fifo"
        } else if t.is_socket() {
            "socket"
        } else {
            "other"
        };
        h.update(format!("{kind} {}", meta.rdev()).as_bytes());
    }
    Ok(Some(hex::encode(h.finalize())))
}

/// Why an input no longer matches its plan.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {what} since the launch plan was made")]
pub struct StaleInput {
    pub path: String,
    pub what: &'static str,
}

/// The first input whose digest differs from now, if any.
pub fn first_stale(inputs: &[PlanInput]) -> Option<StaleInput> {
    inputs.iter().find_map(|i| {
        let what = match (digest_path(&i.path), &i.sha256) {
            (Ok(now), then) if now == *then => return None,
            (Ok(None), Some(_)) => "removed",
            (Ok(Some(_)), None) => "created",
            (Ok(Some(_)), Some(_)) => "changed",
            (Ok(None), None) => unreachable!("equal digests returned above"),
            (Err(_), _) => "unreadable",
        };
        Some(StaleInput {
            path: i.path.display().to_string(),
            what,
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_of_change_is_stale() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("policy.toml");
        // Outside the listed directory, so creating it changes only its own input.
        let other = tempfile::tempdir().unwrap();
        let gone = other.path().join("corrupt");
        std::fs::write(&f, "a").unwrap();
        let inputs = vec![
            PlanInput::of(&f).unwrap(),
            PlanInput::of(d.path()).unwrap(),
            PlanInput::of(&gone).unwrap(),
        ];
        assert_eq!(inputs[2].sha256, None);
        assert_eq!(first_stale(&inputs), None);

        std::fs::write(&f, "b").unwrap();
        let s = first_stale(&inputs).unwrap();
        assert_eq!((s.path.as_str(), s.what), (f.to_str().unwrap(), "changed"));
        std::fs::write(&f, "a").unwrap();
        assert_eq!(first_stale(&inputs), None, "same bytes again: current");

        // A new file in the directory changes its listing.
        std::fs::write(d.path().join("z.toml"), "").unwrap();
        assert_eq!(first_stale(&inputs).unwrap().what, "changed");
        std::fs::remove_file(d.path().join("z.toml")).unwrap();
        assert_eq!(first_stale(&inputs), None);

        std::fs::write(&gone, "").unwrap();
        let s = first_stale(&inputs).unwrap();
        assert_eq!(
            (s.path.as_str(), s.what),
            (gone.to_str().unwrap(), "created")
        );
        std::fs::remove_file(&gone).unwrap();

        std::fs::remove_file(&f).unwrap();
        assert_eq!(first_stale(&inputs).unwrap().what, "removed");
    }

    #[test]
    fn a_node_is_known_by_its_type_and_number_and_never_read() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("fifo");
        rustix::fs::mknodat(
            rustix::fs::CWD,
            &p,
            rustix::fs::FileType::Fifo,
            rustix::fs::Mode::from_raw_mode(0o600),
            0,
        )
        .unwrap();
        // A FIFO nobody writes: reading it would block; its digest returns at once.
        let fifo = PlanInput::of(&p).unwrap();
        assert!(fifo.sha256.is_some());
        let null = PlanInput::of("/dev/null").unwrap();
        assert_ne!(null.sha256, fifo.sha256);
        assert_eq!(first_stale(&[fifo.clone(), null]), None);
        std::fs::remove_file(&p).unwrap();
        assert_eq!(first_stale(&[fifo]).unwrap().what, "removed");
    }
}
