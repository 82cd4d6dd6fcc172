//! Factory installation: `CONFIG/preinstall.d/*.toml` (in name order) lists bundles
//! appmgrd ensures are installed when it starts. Idempotent: an entry whose ref is
//! installed at `version` or higher is skipped without reading the bundle. The format
//! is what the Yocto layer's appmgr-bundle.bbclass writes:
//!
//! ```toml
//! bundle = "/usr/share/appmgr/preinstall/org.example.App.bundle"
//! id = "org.example.App"
//! kind = "app"          # or "runtime"
//! version = "1.2.0"
//! sha256 = "…"          # of the bundle file; optional
//! ```

use appmgr_core::{Ctx, Error as CoreError};
use appmgr_types::{AppId, ErrorClass, Kind, Version};
use serde::Deserialize;
use sha2::Digest;
use std::io::Read;
use std::path::{Path, PathBuf};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Entry {
    pub bundle: PathBuf,
    pub id: AppId,
    pub kind: Kind,
    pub version: Version,
    pub sha256: Option<String>,
}

/// What happened to one entry.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    Installed(String),
    Present(String),
    Failed(String),
}

fn err(class: ErrorClass, m: String) -> CoreError {
    CoreError::new(class, m)
}

/// Every entry file with its parsed entry (or why it is refused), in name order.
pub type Entries = Vec<(PathBuf, Result<Entry, CoreError>)>;

pub fn load(dir: &Path) -> Result<Entries, CoreError> {
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(err(ErrorClass::Other, format!("{}: {e}", dir.display()))),
    };
    let mut files: Vec<PathBuf> = rd
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    files.sort();
    Ok(files
        .into_iter()
        .map(|p| {
            let e = parse(&p);
            (p, e)
        })
        .collect())
}

fn parse(path: &Path) -> Result<Entry, CoreError> {
    let bytes = std::fs::read(path)
        .map_err(|e| err(ErrorClass::Other, format!("{}: {e}", path.display())))?;
    let text = std::str::from_utf8(&bytes).map_err(|e| {
        err(
            ErrorClass::Usage,
            format!("{}: not UTF-8 at byte {}", path.display(), e.valid_up_to()),
        )
    })?;
    let e: Entry = toml::from_str(text).map_err(|e| {
        err(
            ErrorClass::Usage,
            format!("{}: {}", path.display(), e.message()),
        )
    })?;
    if let Some(s) = &e.sha256 {
        if s.len() != 64
            || !s
                .bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
        {
            return Err(err(
                ErrorClass::Usage,
                format!(
                    "{}: sha256: expected 64 lowercase hex digits",
                    path.display()
                ),
            ));
        }
    }
    if !e.bundle.is_absolute() {
        return Err(err(
            ErrorClass::Usage,
            format!(
                "{}: bundle: {} is not an absolute path",
                path.display(),
                e.bundle.display()
            ),
        ));
    }
    Ok(e)
}

/// Whether the entry's ref is installed at its version or higher already.
fn present(g: &Ctx, e: &Entry) -> bool {
    let view = appmgr_state::View::new(&g.state_dir);
    view.installed(&e.id).is_ok_and(|refs| {
        refs.iter().any(|i| {
            i.ref_name.kind == e.kind && i.current.as_ref().is_some_and(|d| d.version >= e.version)
        })
    })
}

fn sha256_file(path: &Path) -> std::io::Result<String> {
    let mut f = std::fs::File::open(path)?;
    let mut h = sha2::Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex::encode(h.finalize()))
}

/// Installs one entry unless present. The bundle goes through the normal install path
/// (in appmgr-ops): signature, trust scope, policy, downgrade protection.
pub async fn apply(g: &Ctx, e: &Entry) -> Outcome {
    if present(g, e) {
        return Outcome::Present(format!(
            "{} {} {} is installed",
            e.kind.as_str(),
            e.id,
            e.version
        ));
    }
    let f = match std::fs::File::open(&e.bundle) {
        Ok(f) => f,
        Err(x) => return Outcome::Failed(format!("{}: {x}", e.bundle.display())),
    };
    if let Some(want) = &e.sha256 {
        let path = e.bundle.clone();
        let have = tokio::task::spawn_blocking(move || sha256_file(&path)).await;
        match have {
            Ok(Ok(have)) if &have == want => {}
            Ok(Ok(have)) => {
                return Outcome::Failed(format!(
                    "{}: sha256 is {have}, the entry says {want}",
                    e.bundle.display()
                ))
            }
            Ok(Err(x)) => return Outcome::Failed(format!("{}: {x}", e.bundle.display())),
            Err(x) => return Outcome::Failed(format!("internal: {x}")),
        }
    }
    let op = appmgr_core::worker::Op::Install {
        name: e.bundle.to_string_lossy().into_owned(),
        allow_downgrade: false,
        release: None,
    };
    match crate::opsrun::run(g, op, Some(std::os::fd::OwnedFd::from(f)), None).await {
        Ok(done) => {
            let (got_id, got_version) = match &done.change {
                Some(c) => (c.id.as_str(), c.version.as_deref().unwrap_or("")),
                None => ("", ""),
            };
            let out = &done.output;
            if got_id != e.id.as_str() {
                return Outcome::Failed(format!(
                    "{}: installed {got_id}, but the entry names {}",
                    e.bundle.display(),
                    e.id
                ));
            }
            Outcome::Installed(format!(
                "{} {got_id} {got_version}: {}",
                e.kind.as_str(),
                out.text.lines().next().unwrap_or("")
            ))
        }
        Err(x) => Outcome::Failed(x.message()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_are_parsed_strictly_in_name_order() {
        let d = tempfile::tempdir().unwrap();
        let good = "bundle = \"/usr/share/appmgr/preinstall/a.bundle\"\nid = \"org.example.A\"\nkind = \"app\"\nversion = \"1.0.0\"\n";
        std::fs::write(d.path().join("20-a.toml"), good).unwrap();
        std::fs::write(d.path().join("10-b.toml"), format!("{good}extra = 1\n")).unwrap();
        std::fs::write(
            d.path().join("30-c.toml"),
            good.replace("/usr/share", "usr/share"),
        )
        .unwrap();
        std::fs::write(
            d.path().join("40-d.toml"),
            format!("{good}sha256 = \"ABC\"\n"),
        )
        .unwrap();
        std::fs::write(d.path().join("README"), "not an entry").unwrap();
        let all = load(d.path()).unwrap();
        let names: Vec<_> = all
            .iter()
            .map(|(p, _)| p.file_name().unwrap().to_str().unwrap().to_string())
            .collect();
        assert_eq!(names, ["10-b.toml", "20-a.toml", "30-c.toml", "40-d.toml"]);
        assert!(all[0].1.as_ref().unwrap_err().message.contains("extra"));
        assert_eq!(all[1].1.as_ref().unwrap().id.as_str(), "org.example.A");
        assert!(all[2].1.as_ref().unwrap_err().message.contains("absolute"));
        assert!(all[3].1.as_ref().unwrap_err().message.contains("sha256"));
        assert!(load(&d.path().join("absent")).unwrap().is_empty());
    }
}
