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
//!
//! [portals.gpu]
//! render-node = "/dev/dri/renderD*"
//! family = "mali"
//!
//! [portals.sensors]
//! sysfs = "/sys/bus/iio/devices"
//! devices = ["accel0"]
//!
//! [portals.bluetooth]
//! adapter = "hci0"
//! ```
//!
//! The optional `[portals.*]` tables say what the portals of appmgrd may hand out on this
//! board: the GPU render node ([`GpuPortalSpec`]), the IIO sensors
//! ([`SensorPortalSpec`]) and the Bluetooth adapter ([`BluetoothPortalSpec`]). A GPU portal never names a primary DRM node (`card*`): that
//! node can modeset and stays with the compositor.
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
    #[error("cannot list {path} while resolving portals.gpu.render-node {pattern:?}: {source}")]
    ResolveGpu {
        pattern: String,
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

/// The GPU the GPU portal hands out on this board (`[portals.gpu]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GpuPortalSpec {
    /// The render node: a path below `/dev`, `*` and `?` allowed in its last component
    /// only (the first match in name order is used, see [`GpuPortalSpec::resolve`]).
    /// Never a primary DRM node (`card*`).
    pub render_node: String,
    /// The GPU family, a lowercase name: `virtio`, `mali`, `vivante`, `videocore`,
    /// `intel`, ...
    pub family: String,
    /// The kernel driver's name, for nodes that answer no `DRM_IOCTL_VERSION` (Mali
    /// kbase `/dev/mali0`, Vivante `/dev/galcore`); for a DRM render node the driver the
    /// board is expected to have.
    pub driver: Option<String>,
}

/// The IIO sensors the sensor portal may serve on this board (`[portals.sensors]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SensorPortalSpec {
    /// Where the IIO devices appear (`iio:deviceN` directories), below `/sys`.
    pub sysfs: PathBuf,
    /// IIO device names (each device's sysfs `name` attribute) the portal may serve;
    /// empty: every device found.
    pub devices: Vec<String>,
}

/// The Bluetooth adapter the Bluetooth portal drives through BlueZ on this board
/// (`[portals.bluetooth]`). Other adapters stay with the system (a board may keep one for
/// a car kit, for example).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BluetoothPortalSpec {
    /// The adapter's kernel name, `hciN` (BlueZ's object `/org/bluez/hciN`).
    pub adapter: String,
}

/// A parsed, validated board profile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BoardProfile {
    pub name: String,
    pub arch: Arch,
    pub description: String,
    pub devices: BTreeMap<DeviceName, DeviceMap>,
    pub cpusets: BTreeMap<String, CpuSet>,
    /// `[portals.gpu]`, if the board offers its GPU through the portal.
    pub gpu: Option<GpuPortalSpec>,
    /// `[portals.sensors]`, if the board offers IIO sensors through the portal.
    pub sensors: Option<SensorPortalSpec>,
    /// `[portals.bluetooth]`, if the board offers an adapter through the portal.
    pub bluetooth: Option<BluetoothPortalSpec>,
    /// `gpu-driver`: the Mesa driver this board's GPU needs (`panfrost`, `etnaviv`,
    /// `virgl`, `llvmpipe` for software rendering). Driver extensions whose conditions
    /// name it are mounted; the others stay installed but unmounted.
    pub gpu_driver: Option<String>,
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
    #[serde(default)]
    portals: RawPortals,
    #[serde(default, rename = "gpu-driver")]
    gpu_driver: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawPortals {
    gpu: Option<RawGpuPortal>,
    sensors: Option<RawSensorPortal>,
    bluetooth: Option<RawBluetoothPortal>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBluetoothPortal {
    adapter: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawGpuPortal {
    render_node: String,
    family: String,
    driver: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSensorPortal {
    sysfs: String,
    #[serde(default)]
    devices: Vec<String>,
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
        return Err(format!(
            "{p:?}: patterns are only allowed in device node paths"
        ));
    }
    if p.contains('[') {
        return Err(format!("{p:?}: only `*` and `?` are supported in patterns"));
    }
    Ok(())
}

/// A GPU render node: a normal path below `/dev`, a pattern in its last component only,
/// and never a name of a primary (modesetting) DRM node: the kernel's `cardN`, or in a
/// `by-path` directory udev's `...-card` links to one.
fn check_render_node(p: &str) -> Result<(), String> {
    check_path(p, "/dev", true)?;
    let (dir, last) = p.rsplit_once('/').unwrap_or(("", p));
    if dir.contains(['*', '?']) {
        return Err(format!(
            "{p:?}: `*` and `?` are only allowed in the last path component"
        ));
    }
    let last = last.as_bytes();
    // udev's links (`/dev/dri/by-path/pci-0000:00:02.0-card`) are only checked by name in
    // a `by-path` directory; a link elsewhere is checked by its target at resolve time.
    let link_dir = dir.ends_with("/by-path");
    if pattern_meets(last, 7, 5, primary_node_step)
        || (link_dir && pattern_meets(last, 6, 5, card_link_step))
    {
        return Err(format!(
            "{p:?} can name a primary DRM node (`card*`), which can modeset: the GPU portal \
             hands out render nodes only (e.g. `/dev/dri/renderD*`)"
        ));
    }
    Ok(())
}

/// Whether a file name is the kernel's name of a primary DRM node: `card` and digits.
fn is_primary_node_name(name: &[u8]) -> bool {
    name.strip_prefix(b"card")
        .is_some_and(|d| !d.is_empty() && d.iter().all(u8::is_ascii_digit))
}

/// The automaton of `card[0-9]+`: states 0-4 are that many bytes of `card` read, 5 (the
/// accepting one) one or more digits after it, 6 dead.
fn primary_node_step(q: usize, c: u8) -> usize {
    match q {
        0..=3 if b"card"[q] == c => q + 1,
        4 | 5 if c.is_ascii_digit() => 5,
        _ => 6,
    }
}

/// The automaton of names ending in `-card` (udev's by-path links to primary nodes):
/// state q is the longest prefix of `-card` that the bytes read end with; 5 accepts.
fn card_link_step(q: usize, c: u8) -> usize {
    const SUFFIX: &[u8] = b"-card";
    let mut read = SUFFIX[..q.min(SUFFIX.len())].to_vec();
    read.push(c);
    (0..=SUFFIX.len().min(read.len()))
        .rev()
        .find(|&k| read.ends_with(&SUFFIX[..k]))
        .unwrap_or(0)
}

/// Whether some file name that the pattern `pat` (`*` any run, `?` one byte) matches is
/// accepted by the automaton `step` (total on bytes, `states` states, 0 first, `accept`
/// accepting). Exact: every reachable pair (pattern position, automaton state) is
/// visited once; `*` and `?` stand for any byte a file name may hold (not `/`, not NUL).
fn pattern_meets(pat: &[u8], states: usize, accept: usize, step: fn(usize, u8) -> usize) -> bool {
    let name_bytes = || (1..=u8::MAX).filter(|&b| b != b'/');
    let mut seen = vec![vec![false; states]; pat.len() + 1];
    let mut todo = vec![(0usize, 0usize)];
    while let Some((i, q)) = todo.pop() {
        if std::mem::replace(&mut seen[i][q], true) {
            continue;
        }
        match pat.get(i) {
            None => {}
            Some(b'*') => {
                todo.push((i + 1, q));
                todo.extend(name_bytes().map(|b| (i, step(q, b))));
            }
            Some(b'?') => todo.extend(name_bytes().map(|b| (i + 1, step(q, b)))),
            Some(&c) => todo.push((i + 1, step(q, c))),
        }
    }
    seen[pat.len()][accept]
}

/// A lowercase name (`[a-z][a-z0-9_-]*`, at most `max` characters).
fn check_lower_name(v: &str, max: usize) -> Result<(), String> {
    if v.is_empty()
        || v.len() > max
        || !v.starts_with(|c: char| c.is_ascii_lowercase())
        || !v
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
    {
        return Err(format!(
            "{v:?} must be 1-{max} lowercase letters, digits, `-`, `_`, starting with a letter"
        ));
    }
    Ok(())
}

/// An IIO device name as the kernel shows it in sysfs `name` (`accel0`, `bmi160`,
/// `fec10000.saradc`, `iio_dummy_part_no`): 1-64 ASCII letters, digits, `_ . : + -`.
/// A Bluetooth adapter's kernel name: `hci` and a number.
fn check_hci_name(v: &str) -> Result<(), String> {
    match v.strip_prefix("hci") {
        Some(n) if !n.is_empty() && n.len() <= 3 && n.chars().all(|c| c.is_ascii_digit()) => Ok(()),
        _ => Err(format!("{v:?} must be an adapter name like hci0")),
    }
}

fn check_iio_name(v: &str) -> Result<(), String> {
    if v.is_empty()
        || v.len() > 64
        || !v
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | ':' | '+' | '-'))
    {
        return Err(format!(
            "{v:?} must be an IIO device name: 1-64 ASCII letters, digits, `_`, `.`, `:`, `+`, `-`"
        ));
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
        let gpu = match raw.portals.gpu {
            None => None,
            Some(g) => {
                check_render_node(&g.render_node)
                    .map_err(|r| invalid("portals.gpu.render-node".into(), r))?;
                check_lower_name(&g.family, 32)
                    .map_err(|r| invalid("portals.gpu.family".into(), r))?;
                if let Some(d) = &g.driver {
                    check_lower_name(d, 32).map_err(|r| invalid("portals.gpu.driver".into(), r))?;
                }
                Some(GpuPortalSpec {
                    render_node: g.render_node,
                    family: g.family,
                    driver: g.driver,
                })
            }
        };
        let sensors = match raw.portals.sensors {
            None => None,
            Some(s) => {
                check_path(&s.sysfs, "/sys", false)
                    .map_err(|r| invalid("portals.sensors.sysfs".into(), r))?;
                let mut seen = BTreeSet::new();
                for d in &s.devices {
                    check_iio_name(d).map_err(|r| invalid("portals.sensors.devices".into(), r))?;
                    if !seen.insert(d.as_str()) {
                        return Err(invalid(
                            "portals.sensors.devices".into(),
                            format!("{d:?} is listed twice"),
                        ));
                    }
                }
                Some(SensorPortalSpec {
                    sysfs: PathBuf::from(s.sysfs),
                    devices: s.devices,
                })
            }
        };
        let bluetooth = match raw.portals.bluetooth {
            None => None,
            Some(b) => {
                check_hci_name(&b.adapter)
                    .map_err(|r| invalid("portals.bluetooth.adapter".into(), r))?;
                Some(BluetoothPortalSpec { adapter: b.adapter })
            }
        };
        if let Some(d) = &raw.gpu_driver {
            check_lower_name(d, 32).map_err(|r| invalid("gpu-driver".into(), r))?;
        }
        Ok(BoardProfile {
            name: raw.name,
            arch,
            description: raw.description,
            devices,
            cpusets,
            gpu,
            sensors,
            bluetooth,
            gpu_driver: raw.gpu_driver,
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

impl GpuPortalSpec {
    /// The render node the portal hands out now: the first existing match of
    /// [`render_node`](Self::render_node) in name order, `None` when nothing matches (no
    /// GPU driver bound, or the node is not there yet). Symlinks are not followed while
    /// expanding the pattern; a dangling link, and a match that is or links to a primary
    /// DRM node (`cardN`), are passed over.
    pub fn resolve(&self) -> Result<Option<PathBuf>, BoardError> {
        self.resolve_under(Path::new("/"))
    }

    /// [`resolve`](Self::resolve) against the tree under `root` instead of `/` (tests);
    /// the path returned is the host-visible one (`/dev/...`).
    fn resolve_under(&self, root: &Path) -> Result<Option<PathBuf>, BoardError> {
        let mut found = BTreeSet::new();
        expand(root, &self.render_node, &mut found).map_err(|(path, source)| {
            BoardError::ResolveGpu {
                pattern: self.render_node.clone(),
                path,
                source,
            }
        })?;
        let rel = |p: &Path| root.join(p.strip_prefix("/").unwrap_or(p));
        Ok(found.into_iter().find(|p| {
            let real = rel(p);
            // A dangling link is no node; a primary node, or a link to one, is never one to
            // hand out (checked at parse time too; the fields are public).
            let primary = |n: Option<&std::ffi::OsStr>| {
                n.is_some_and(|n| is_primary_node_name(n.as_encoded_bytes()))
            };
            real.exists()
                && !primary(p.file_name())
                && std::fs::read_link(&real).map_or(true, |t| !primary(t.file_name()))
        }))
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
    fn gpu_driver_is_a_lowercase_name() {
        let base = "name = \"b\"\narch = \"x86_64\"\n";
        let p = parse(&format!("{base}gpu-driver = \"panfrost\"\n")).unwrap();
        assert_eq!(p.gpu_driver.as_deref(), Some("panfrost"));
        assert_eq!(parse(base).unwrap().gpu_driver, None);
        for bad in ["\"Panfrost\"", "\"\"", "\"../x\"", "[\"a\"]"] {
            let e = parse(&format!("{base}gpu-driver = {bad}\n")).unwrap_err();
            assert!(e.to_string().contains("gpu-driver"), "{bad}: {e}");
        }
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
        // Every shipped board names the Mesa driver its GPU needs (the driver extensions'
        // conditions are tested on it).
        for (board, driver) in [
            ("qemu-virt-x86_64", "llvmpipe"),
            ("qemu-virt-aarch64", "llvmpipe"),
            ("raspberry-pi-4", "v3d"),
            ("rk3588", "panfrost"),
            ("imx8mp", "etnaviv"),
        ] {
            let p = all.iter().find(|p| p.name == board).unwrap();
            assert_eq!(p.gpu_driver.as_deref(), Some(driver), "{board}");
        }
        let rk = all.iter().find(|p| p.name == "rk3588").unwrap();
        let gpu = &rk.devices[&DeviceName::new("gpu").unwrap()];
        assert!(gpu.nodes.iter().any(|n| n == "/dev/mali0"));
        assert!(gpu.nodes.iter().any(|n| n.starts_with("/dev/dri/renderD")));
        let imx = all.iter().find(|p| p.name == "imx8mp").unwrap();
        let gpu = &imx.devices[&DeviceName::new("gpu").unwrap()];
        assert!(gpu.nodes.iter().any(|n| n == "/dev/galcore"));
        assert!(gpu.nodes.iter().any(|n| n.starts_with("/dev/dri/")));
        // Every shipped board offers its GPU render node and its IIO sensors.
        let family = |name: &str| {
            let p = all.iter().find(|p| p.name == name).unwrap();
            let g = p
                .gpu
                .as_ref()
                .unwrap_or_else(|| panic!("{name}: no gpu portal"));
            assert_eq!(g.render_node, "/dev/dri/renderD*", "{name}");
            let s = p
                .sensors
                .as_ref()
                .unwrap_or_else(|| panic!("{name}: no sensors"));
            assert_eq!(s.sysfs, Path::new("/sys/bus/iio/devices"), "{name}");
            (g.family.as_str(), g.driver.as_deref())
        };
        assert_eq!(family("qemu-virt-x86_64"), ("virtio", None));
        assert_eq!(family("qemu-virt-aarch64"), ("virtio", None));
        assert_eq!(family("raspberry-pi-4"), ("videocore", None));
        assert_eq!(family("rk3588"), ("mali", None));
        assert_eq!(family("imx8mp"), ("vivante", Some("etnaviv")));
        assert_eq!(all.len(), 5, "a new profile: add it to the checks above");
    }

    const HEAD: &str = "name = \"b\"\narch = \"aarch64\"\n";

    #[test]
    fn portals_parse() {
        let p = parse(&format!(
            "{HEAD}[portals.gpu]\nrender-node = \"/dev/dri/renderD*\"\nfamily = \"mali\"\n\
             [portals.sensors]\nsysfs = \"/sys/bus/iio/devices\"\ndevices = [\"accel0\", \"fec10000.saradc\"]\n"
        ))
        .unwrap();
        assert_eq!(
            p.gpu,
            Some(GpuPortalSpec {
                render_node: "/dev/dri/renderD*".into(),
                family: "mali".into(),
                driver: None,
            })
        );
        assert_eq!(
            p.sensors,
            Some(SensorPortalSpec {
                sysfs: "/sys/bus/iio/devices".into(),
                devices: vec!["accel0".into(), "fec10000.saradc".into()],
            })
        );
        let p = parse(&format!(
            "{HEAD}[portals.gpu]\nrender-node = \"/dev/galcore\"\nfamily = \"vivante\"\ndriver = \"galcore\"\n"
        ))
        .unwrap();
        assert_eq!(p.gpu.unwrap().driver.as_deref(), Some("galcore"));
        assert_eq!(p.sensors, None);
        let p = parse(&format!(
            "{HEAD}[portals.sensors]\nsysfs = \"/sys/bus/iio/devices\"\n"
        ))
        .unwrap();
        assert_eq!((p.gpu, p.sensors.unwrap().devices), (None, vec![]));
        let p = parse(HEAD).unwrap();
        assert_eq!((p.gpu, p.sensors, p.bluetooth), (None, None, None));
        let p = parse(&format!("{HEAD}[portals.bluetooth]\nadapter = \"hci12\"\n")).unwrap();
        assert_eq!(p.bluetooth.unwrap().adapter, "hci12");
        for ok in [
            "/dev/dri/renderD128",
            "/dev/dri/renderD12?",
            "/dev/mali0",
            "/dev/dri/by-path/platform-fb000000.gpu-render",
            "/dev/dri/by-path/*-render",
        ] {
            let text = format!("{HEAD}[portals.gpu]\nrender-node = {ok:?}\nfamily = \"virtio\"\n");
            assert!(parse(&text).is_ok(), "{ok}: {:?}", parse(&text).err());
        }
    }

    #[test]
    fn portal_rejections_name_file_key_and_value() {
        let gpu = |node: &str| {
            format!("{HEAD}[portals.gpu]\nrender-node = {node:?}\nfamily = \"virtio\"\n")
        };
        let mut cases: Vec<(String, &str, &str)> = Vec::new();
        // Primary (modesetting) nodes, by name, by pattern, and udev's links to them.
        for card in [
            "/dev/dri/card0",
            "/dev/dri/card1",
            "/dev/dri/card*",
            "/dev/dri/*",
            "/dev/dri/c?rd1",
            "/dev/dri/????2",
            "/dev/dri/*1",
            "/dev/dri/by-path/pci-0000:00:02.0-card",
            "/dev/dri/by-path/*",
            "/dev/dri/by-path/*-car?",
        ] {
            cases.push((gpu(card), "portals.gpu.render-node", "primary DRM node"));
        }
        for (node, why) in [
            ("/sys/class/drm/renderD128", "not below /dev"),
            ("/tmp/renderD128", "not below /dev"),
            ("dev/dri/renderD128", "not below /dev"),
            ("/dev/dri/../dri/renderD128", "must be normal"),
            ("/dev/*/renderD128", "last path component"),
            ("/dev/dri/renderD[0-9]", "only `*` and `?`"),
        ] {
            cases.push((gpu(node), "portals.gpu.render-node", why));
        }
        let table = |body: &str| format!("{HEAD}{body}");
        cases.extend([
            (
                table("[portals.gpu]\nrender-node = \"/dev/dri/renderD*\"\nfamily = \"Mali\"\n"),
                "portals.gpu.family",
                "\"Mali\"",
            ),
            (
                table("[portals.gpu]\nrender-node = \"/dev/dri/renderD*\"\nfamily = \"mali\"\ndriver = \"pan frost\"\n"),
                "portals.gpu.driver",
                "\"pan frost\"",
            ),
            (
                table("[portals.gpu]\nrender-node = \"/dev/dri/renderD*\"\nfamily = \"mali\"\nnode = \"/dev/mali0\"\n"),
                "node",
                "unknown field",
            ),
            (
                table("[portals.gpu]\nrender-node = \"/dev/dri/renderD*\"\n"),
                "family",
                "missing field",
            ),
            (
                table("[portals.audio]\nsysfs = \"/sys/class/sound\"\n"),
                "audio",
                "unknown field",
            ),
            (
                table("[portals.sensors]\nsysfs = \"/sys/bus/iio/devices\"\nchannels = [\"accel_x\"]\n"),
                "channels",
                "unknown field",
            ),
            (
                table("[portals.sensors]\nsysfs = \"/dev/iio\"\n"),
                "portals.sensors.sysfs",
                "not below /sys",
            ),
            (
                table("[portals.sensors]\nsysfs = \"/sys/bus/iio/*\"\n"),
                "portals.sensors.sysfs",
                "patterns are only allowed",
            ),
            (
                table("[portals.sensors]\nsysfs = \"/sys/bus/iio/devices\"\ndevices = [\"accel/0\"]\n"),
                "portals.sensors.devices",
                "\"accel/0\"",
            ),
            (
                table("[portals.sensors]\nsysfs = \"/sys/bus/iio/devices\"\ndevices = [\"accel0\", \"accel0\"]\n"),
                "portals.sensors.devices",
                "listed twice",
            ),
            (
                table("[portals.bluetooth]\nadapter = \"/org/bluez/hci0\"\n"),
                "portals.bluetooth.adapter",
                "like hci0",
            ),
            (
                table("[portals.bluetooth]\nadapter = \"hci\"\n"),
                "portals.bluetooth.adapter",
                "\"hci\"",
            ),
            (
                table("[portals.bluetooth]\nadapter = \"hci0\"\npower = true\n"),
                "power",
                "unknown field",
            ),
        ]);
        for (text, key, why) in &cases {
            let e = parse(text).unwrap_err().to_string();
            assert!(e.contains("test.toml"), "{e}");
            assert!(e.contains(key), "{text:?}: no key {key}: {e}");
            assert!(e.contains(why), "{text:?}: no {why:?}: {e}");
        }
        // The value is named too.
        let e = parse(&gpu("/dev/dri/card0")).unwrap_err().to_string();
        assert!(e.contains("\"/dev/dri/card0\""), "{e}");
    }

    #[test]
    fn primary_node_patterns_are_recognized_exactly() {
        let primary = |p: &str| pattern_meets(p.as_bytes(), 7, 5, primary_node_step);
        let link = |p: &str| pattern_meets(p.as_bytes(), 6, 5, card_link_step);
        for yes in [
            "card0", "card12", "card*", "ca*", "*", "*0", "c*1", "?????", "card??",
        ] {
            assert!(primary(yes), "{yes}");
        }
        for no in [
            "card",
            "cardx",
            "card0x",
            "????",
            "render*",
            "renderD128",
            "mali0",
            "*x",
        ] {
            assert!(!primary(no), "{no}");
        }
        for yes in [
            "-card",
            "pci-0000:00:02.0-card",
            "*",
            "*-card",
            "*card",
            "x-c?rd",
            "*d",
        ] {
            assert!(link(yes), "{yes}");
        }
        for no in ["-render", "*-render", "card0", "-cards", "*-car", "x-card?"] {
            assert!(!link(no), "{no}");
        }
        assert!(is_primary_node_name(b"card0") && is_primary_node_name(b"card10"));
        assert!(!is_primary_node_name(b"card") && !is_primary_node_name(b"renderD128"));
    }

    #[test]
    fn gpu_render_node_resolves_to_the_first_match_in_name_order() {
        let t = tempfile::tempdir().unwrap();
        let dri = t.path().join("dev/dri");
        std::fs::create_dir_all(dri.join("by-path")).unwrap();
        for f in ["card0", "renderD129", "renderD128"] {
            std::fs::write(dri.join(f), "").unwrap();
        }
        let link = |name: &str, to: &str| {
            std::os::unix::fs::symlink(to, dri.join("by-path").join(name)).unwrap()
        };
        // udev-style relative links; a link to the primary node and a dangling one are
        // passed over.
        link("a-render", "../card0");
        link("b-render", "../renderD404");
        link("c-render", "../renderD129");
        link("d-render", "../renderD128");
        let spec = |node: &str| GpuPortalSpec {
            render_node: node.into(),
            family: "virtio".into(),
            driver: None,
        };
        let got = |node: &str| spec(node).resolve_under(t.path()).unwrap();
        assert_eq!(
            got("/dev/dri/renderD*"),
            Some(PathBuf::from("/dev/dri/renderD128"))
        );
        assert_eq!(
            got("/dev/dri/renderD129"),
            Some(PathBuf::from("/dev/dri/renderD129"))
        );
        assert_eq!(
            got("/dev/dri/by-path/*-render"),
            Some(PathBuf::from("/dev/dri/by-path/c-render"))
        );
        assert_eq!(got("/dev/dri/renderD2*"), None);
        assert_eq!(got("/dev/dri/card0"), None);
        assert_eq!(got("/dev/mali0"), None);
        assert_eq!(got("/dev/nodir/renderD*"), None);
        // The public form reads the live /dev.
        assert!(spec("/dev/appmgr-no-such-node*")
            .resolve()
            .unwrap()
            .is_none());
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
