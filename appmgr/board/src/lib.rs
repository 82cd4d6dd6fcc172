//! Board profiles: what a logical device (`gpu`, `input`, `bluetooth`, ...) means on one
//! board, and which CPU cores the named core sets (`hmi`, `rt`, ...) cover.
//!
//! A profile is one TOML file under `board-support/` (see `docs/sandbox.md`):
//!
//! ```toml
//! name = "rk3588"
//! arch = "aarch64"
//! description = "Rockchip RK3588"
//!
//! [devices.gpu]
//! nodes = ["/dev/mali0", "/dev/dri/renderD*"]
//! sysfs = ["/sys/class/misc/mali0"]
//!
//! [cpusets]
//! hmi = "4-7"
//! ```
//!
//! Parsing is strict (unknown keys, bad device names, relative or non-normal paths, node
//! paths outside `/dev`, sysfs paths outside `/sys`, overlapping ranges are errors, and
//! each error names the file and the key). Node patterns may hold `*` and `?` inside a
//! path component; they are expanded against the live `/dev` by [`BoardProfile::resolve`]
//! when an app is launched, so hot-plugged nodes present at launch are included.
//!
//! The crate holds no policy: which devices an app gets is decided by `policy`; the
//! sandbox receives the resolved node list.

use appmgr_types::{Arch, DeviceName};
use serde::Deserialize;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};

/// Why a profile could not be loaded or resolved.
#[derive(Debug, thiserror::Error)]
pub enum BoardError {
    #[error("cannot read board profile {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid board profile {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("invalid board profile {path}: key `{key}`: {reason}")]
    Invalid {
        path: PathBuf,
        key: String,
        reason: String,
    },
    #[error("board profile {board} has no device `{device}`")]
    UnknownDevice { board: String, device: String },
    #[error("board profile {board} has no cpu set `{name}`")]
    UnknownCpuSet { board: String, name: String },
    #[error("cannot list {path} while resolving device `{device}`: {source}")]
    Resolve {
        device: String,
        path: PathBuf,
        source: std::io::Error,
    },
}

/// A set of CPU cores written as a Linux cpu list (`"2-3"`, `"0,4-7"`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CpuSet(BTreeSet<u32>);

impl CpuSet {
    /// The largest core number accepted (the kernel's NR_CPUS on common configs).
    pub const MAX_CPU: u32 = 8191;

    pub fn parse(s: &str) -> Result<CpuSet, String> {
        let mut set = BTreeSet::new();
        if s.trim().is_empty() {
            return Err("empty cpu list".into());
        }
        for part in s.split(',') {
            let num = |t: &str| -> Result<u32, String> {
                let n: u32 = t
                    .parse()
                    .map_err(|_| format!("{t:?} is not a cpu number in {s:?}"))?;
                if n > Self::MAX_CPU {
                    return Err(format!("cpu {n} is above {}", Self::MAX_CPU));
                }
                Ok(n)
            };
            let (a, b) = match part.split_once('-') {
                Some((a, b)) => (num(a)?, num(b)?),
                None => (num(part)?, num(part)?),
            };
            if a > b {
                return Err(format!("range {part:?} is reversed"));
            }
            for c in a..=b {
                if !set.insert(c) {
                    return Err(format!("cpu {c} is listed twice in {s:?}"));
                }
            }
        }
        Ok(CpuSet(set))
    }

    pub fn cpus(&self) -> impl Iterator<Item = u32> + '_ {
        self.0.iter().copied()
    }
}

/// Canonical cpu-list form, as written to `cpuset.cpus`.
impl fmt::Display for CpuSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let v: Vec<u32> = self.0.iter().copied().collect();
        let mut i = 0;
        let mut first = true;
        while i < v.len() {
            let mut j = i;
            while j + 1 < v.len() && v[j + 1] == v[j] + 1 {
                j += 1;
            }
            if !first {
                f.write_str(",")?;
            }
            first = false;
            if i == j {
                write!(f, "{}", v[i])?;
            } else {
                write!(f, "{}-{}", v[i], v[j])?;
            }
            i = j + 1;
        }
        Ok(())
    }
}

/// What one logical device is on this board.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DeviceMap {
    /// Device node paths or patterns under `/dev`.
    pub nodes: Vec<String>,
    /// sysfs paths (for portals and documentation; `/sys` is read-only in the sandbox).
    pub sysfs: Vec<String>,
}

/// A parsed, validated board profile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BoardProfile {
    pub name: String,
    pub arch: Arch,
    pub description: String,
    pub devices: BTreeMap<DeviceName, DeviceMap>,
    pub cpusets: BTreeMap<String, CpuSet>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProfile {
    name: String,
    arch: String,
    #[serde(default)]
    description: String,
    #[serde(default)]
    devices: BTreeMap<String, RawDevice>,
    #[serde(default)]
    cpusets: BTreeMap<String, String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDevice {
    #[serde(default)]
    nodes: Vec<String>,
    #[serde(default)]
    sysfs: Vec<String>,
}

/// A path is normal when absolute, without empty, `.` or `..` components, without control
/// characters, and below `root`.
fn check_path(p: &str, root: &str, allow_glob: bool) -> Result<(), String> {
    if appmgr_types::has_unsafe_chars(p) {
        return Err(format!("{p:?} holds control or bidi characters"));
    }
    let rest = p
        .strip_prefix(root)
        .and_then(|r| r.strip_prefix('/'))
        .ok_or_else(|| format!("{p:?} is not below {root}"))?;
    if rest.is_empty()
        || rest
            .split('/')
            .any(|c| c.is_empty() || c == "." || c == "..")
    {
        return Err(format!(
            "{p:?} must be normal: no empty, `.` or `..` components"
        ));
    }
    if !allow_glob && p.contains(['*', '?', '[']) {
        return Err(format!("{p:?}: patterns are only allowed in `nodes`"));
    }
    if p.contains('[') {
        return Err(format!("{p:?}: only `*` and `?` are supported in patterns"));
    }
    Ok(())
}

impl BoardProfile {
    /// Loads and validates one profile file.
    pub fn load(path: &Path) -> Result<BoardProfile, BoardError> {
        let text = std::fs::read_to_string(path).map_err(|source| BoardError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(path, &text)
    }

    /// Parses profile text; `path` is only used in error messages.
    pub fn parse(path: &Path, text: &str) -> Result<BoardProfile, BoardError> {
        let raw: RawProfile = toml::from_str(text).map_err(|e| BoardError::Parse {
            path: path.to_path_buf(),
            message: e.to_string().trim_end().replace('\n', " "),
        })?;
        let invalid = |key: String, reason: String| BoardError::Invalid {
            path: path.to_path_buf(),
            key,
            reason,
        };
        if raw.name.is_empty()
            || raw.name.len() > 64
            || !raw
                .name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
        {
            return Err(invalid(
                "name".into(),
                format!(
                    "{:?} must be 1-64 lowercase letters, digits, `-`, `_`",
                    raw.name
                ),
            ));
        }
        let arch = Arch::new(&raw.arch).map_err(|e| invalid("arch".into(), e.to_string()))?;
        if appmgr_types::has_unsafe_chars(&raw.description) {
            return Err(invalid(
                "description".into(),
                "control or bidi characters".into(),
            ));
        }
        let mut devices = BTreeMap::new();
        for (name, dev) in raw.devices {
            let key = format!("devices.{name}");
            let dn = DeviceName::new(&name).map_err(|e| invalid(key.clone(), e.to_string()))?;
            if dev.nodes.is_empty() && dev.sysfs.is_empty() {
                return Err(invalid(key, "maps to no nodes and no sysfs paths".into()));
            }
            for n in &dev.nodes {
                check_path(n, "/dev", true).map_err(|r| invalid(format!("{key}.nodes"), r))?;
            }
            for s in &dev.sysfs {
                check_path(s, "/sys", false).map_err(|r| invalid(format!("{key}.sysfs"), r))?;
            }
            devices.insert(
                dn,
                DeviceMap {
                    nodes: dev.nodes,
                    sysfs: dev.sysfs,
                },
            );
        }
        let mut cpusets = BTreeMap::new();
        for (name, list) in raw.cpusets {
            let key = format!("cpusets.{name}");
            if DeviceName::new(&name).is_err() {
                return Err(invalid(key, "set names are lowercase identifiers".into()));
            }
            let set = CpuSet::parse(&list).map_err(|r| invalid(key, r))?;
            cpusets.insert(name, set);
        }
        Ok(BoardProfile {
            name: raw.name,
            arch,
            description: raw.description,
            devices,
            cpusets,
        })
    }

    /// The named core set.
    pub fn cpuset(&self, name: &str) -> Result<&CpuSet, BoardError> {
        self.cpusets
            .get(name)
            .ok_or_else(|| BoardError::UnknownCpuSet {
                board: self.name.clone(),
                name: name.to_string(),
            })
    }

    /// Expands the node patterns of the granted devices against the live filesystem under
    /// `root` (normally `/`), returning host paths (`/dev/...`), sorted and deduplicated.
    /// A device the board does not have is an error; a pattern that matches nothing is
    /// not (the device may be absent or not yet plugged in). Symlinks are not followed
    /// when expanding patterns, so a pattern cannot be steered outside `/dev`.
    pub fn resolve(
        &self,
        granted: &BTreeSet<DeviceName>,
        root: &Path,
    ) -> Result<Vec<PathBuf>, BoardError> {
        let mut out = BTreeSet::new();
        for dev in granted {
            let map = self
                .devices
                .get(dev)
                .ok_or_else(|| BoardError::UnknownDevice {
                    board: self.name.clone(),
                    device: dev.to_string(),
                })?;
            for pat in &map.nodes {
                expand(root, pat, &mut out).map_err(|(path, source)| BoardError::Resolve {
                    device: dev.to_string(),
                    path,
                    source,
                })?;
            }
        }
        Ok(out.into_iter().collect())
    }
}

/// Loads every `*.toml` profile in `dir`, sorted by file name.
pub fn load_dir(dir: &Path) -> Result<Vec<BoardProfile>, BoardError> {
    let rd = std::fs::read_dir(dir).map_err(|source| BoardError::Read {
        path: dir.to_path_buf(),
        source,
    })?;
    let mut paths = Vec::new();
    for e in rd {
        let e = e.map_err(|source| BoardError::Read {
            path: dir.to_path_buf(),
            source,
        })?;
        let p = e.path();
        if p.extension().is_some_and(|x| x == "toml") {
            paths.push(p);
        }
    }
    paths.sort();
    paths.iter().map(|p| BoardProfile::load(p)).collect()
}

fn component_match(pat: &[u8], text: &[u8]) -> bool {
    appmgr_types::wildcard_match(pat, text)
}

type ResolveErr = (PathBuf, std::io::Error);

fn expand(root: &Path, pat: &str, out: &mut BTreeSet<PathBuf>) -> Result<(), ResolveErr> {
    // Host-visible form (`/dev/...`) and the directory actually read (`root/dev/...`).
    let mut current: Vec<(PathBuf, PathBuf)> = vec![(PathBuf::from("/"), root.to_path_buf())];
    let comps: Vec<&str> = pat.trim_start_matches('/').split('/').collect();
    for (i, comp) in comps.iter().enumerate() {
        let last = i + 1 == comps.len();
        let mut next = Vec::new();
        for (vis, real) in &current {
            if comp.contains(['*', '?']) {
                let rd = match std::fs::read_dir(real) {
                    Ok(rd) => rd,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                    Err(e) if e.raw_os_error() == Some(20) => continue, // ENOTDIR
                    Err(e) => return Err((real.clone(), e)),
                };
                let mut names: Vec<String> = rd
                    .filter_map(|e| e.ok())
                    .filter_map(|e| e.file_name().into_string().ok())
                    .filter(|n| {
                        !n.starts_with('.') && component_match(comp.as_bytes(), n.as_bytes())
                    })
                    .collect();
                names.sort();
                for n in names {
                    next.push((vis.join(&n), real.join(&n)));
                }
            } else {
                next.push((vis.join(comp), real.join(comp)));
            }
        }
        // Keep only entries that exist; intermediate ones must be real directories.
        current = next
            .into_iter()
            .filter(|(_, real)| match std::fs::symlink_metadata(real) {
                Ok(m) => last || m.is_dir(),
                Err(_) => false,
            })
            .collect();
    }
    for (vis, _) in current {
        out.insert(vis);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<BoardProfile, BoardError> {
        BoardProfile::parse(Path::new("test.toml"), s)
    }

    #[test]
    fn every_shipped_profile_loads() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../board-support");
        let all = load_dir(&dir).unwrap();
        let names: BTreeSet<&str> = all.iter().map(|p| p.name.as_str()).collect();
        for want in [
            "qemu-virt-aarch64",
            "qemu-virt-x86_64",
            "raspberry-pi-4",
            "rk3588",
            "imx8mp",
        ] {
            assert!(names.contains(want), "missing profile {want}");
        }
        for p in &all {
            for (dev, map) in &p.devices {
                assert!(
                    !map.nodes.is_empty() || !map.sysfs.is_empty(),
                    "{}: {dev}",
                    p.name
                );
            }
        }
        let rk = all.iter().find(|p| p.name == "rk3588").unwrap();
        let gpu = &rk.devices[&DeviceName::new("gpu").unwrap()];
        assert!(gpu.nodes.iter().any(|n| n == "/dev/mali0"));
        assert!(gpu.nodes.iter().any(|n| n.starts_with("/dev/dri/renderD")));
        let imx = all.iter().find(|p| p.name == "imx8mp").unwrap();
        let gpu = &imx.devices[&DeviceName::new("gpu").unwrap()];
        assert!(gpu.nodes.iter().any(|n| n == "/dev/galcore"));
        assert!(gpu.nodes.iter().any(|n| n.starts_with("/dev/dri/")));
    }

    #[test]
    fn strict_parsing_names_the_key() {
        let ok = "name = \"b\"\narch = \"aarch64\"\n[devices.gpu]\nnodes = [\"/dev/dri/renderD*\"]\n[cpusets]\nhmi = \"2-3\"\n";
        let p = parse(ok).unwrap();
        assert_eq!(p.cpuset("hmi").unwrap().to_string(), "2-3");
        let cases = [
            ("name = \"b\"\narch = \"aarch64\"\nextra = 1\n", "extra"),
            (
                "name = \"b\"\narch = \"aarch64\"\n[devices.gpu]\nnode = [\"/dev/x\"]\n",
                "node",
            ),
            (
                "name = \"b\"\narch = \"aarch64\"\n[devices.GPU]\nnodes = [\"/dev/x\"]\n",
                "devices.GPU",
            ),
            (
                "name = \"b\"\narch = \"aarch64\"\n[devices.gpu]\nnodes = [\"/etc/shadow\"]\n",
                "devices.gpu.nodes",
            ),
            (
                "name = \"b\"\narch = \"aarch64\"\n[devices.gpu]\nnodes = [\"/dev/../etc\"]\n",
                "devices.gpu.nodes",
            ),
            (
                "name = \"b\"\narch = \"aarch64\"\n[devices.gpu]\nsysfs = [\"/sys/*\"]\n",
                "devices.gpu.sysfs",
            ),
            (
                "name = \"b\"\narch = \"aarch64\"\n[devices.gpu]\n",
                "devices.gpu",
            ),
            (
                "name = \"b\"\narch = \"aarch64\"\n[cpusets]\nhmi = \"3-2\"\n",
                "cpusets.hmi",
            ),
            (
                "name = \"b\"\narch = \"aarch64\"\n[cpusets]\nhmi = \"1,1\"\n",
                "cpusets.hmi",
            ),
            (
                "name = \"b\"\narch = \"aarch64\"\n[cpusets]\nhmi = \"x\"\n",
                "cpusets.hmi",
            ),
            ("name = \"B/\"\narch = \"aarch64\"\n", "name"),
            ("name = \"b\"\narch = \"aarch/64\"\n", "arch"),
            ("name = \"b\"\nname = \"c\"\narch = \"x86_64\"\n", "name"),
        ];
        for (text, key) in cases {
            let e = parse(text).unwrap_err().to_string();
            assert!(e.contains("test.toml"), "{e}");
            assert!(e.contains(key), "{text:?}: {e}");
        }
    }

    #[test]
    fn cpu_lists() {
        assert_eq!(CpuSet::parse("0,2-3,5").unwrap().to_string(), "0,2-3,5");
        assert_eq!(CpuSet::parse("4-7").unwrap().cpus().count(), 4);
        assert!(CpuSet::parse("").is_err());
        assert!(CpuSet::parse("99999").is_err());
    }

    #[test]
    fn resolve_expands_patterns_without_following_symlinks() {
        let t = tempfile::tempdir().unwrap();
        let dev = t.path().join("dev");
        std::fs::create_dir_all(dev.join("input")).unwrap();
        std::fs::create_dir_all(dev.join("dri")).unwrap();
        for f in [
            "input/event0",
            "input/event1",
            "input/mice",
            "dri/renderD128",
            "mali0",
        ] {
            std::fs::write(dev.join(f), "").unwrap();
        }
        std::os::unix::fs::symlink("/etc", dev.join("evil")).unwrap();
        let p = parse(
            "name = \"b\"\narch = \"aarch64\"\n[devices.input]\nnodes = [\"/dev/input/event*\"]\n[devices.gpu]\nnodes = [\"/dev/mali0\", \"/dev/dri/renderD*\", \"/dev/galcore\"]\n[devices.sensors]\nnodes = [\"/dev/evil/*\"]\n",
        )
        .unwrap();
        let set = |v: &[&str]| v.iter().map(|s| DeviceName::new(s).unwrap()).collect();
        let got = p.resolve(&set(&["input", "gpu"]), t.path()).unwrap();
        let got: Vec<String> = got.iter().map(|p| p.display().to_string()).collect();
        assert_eq!(
            got,
            [
                "/dev/dri/renderD128",
                "/dev/input/event0",
                "/dev/input/event1",
                "/dev/mali0"
            ]
        );
        assert!(p.resolve(&set(&["sensors"]), t.path()).unwrap().is_empty());
        assert!(matches!(
            p.resolve(&set(&["can"]), t.path()),
            Err(BoardError::UnknownDevice { .. })
        ));
    }
}
