//! Evaluation: (app, its request, the board) → [`EffectiveGrant`].

use crate::board::BoardFacts;
use crate::limits::{CpusetRef, Limits};
use crate::parse::{parse_file, OnExcess, Rule};
use crate::PolicyError;
use appmgr_cgroup::CgroupLimits;
use appmgr_types::{
    escape_for_display, AllowFlag, AppId, AudioRole, BtDevice, BtRole, BusName, ChannelName,
    DeviceName, Egress, FsGrant, GattUuid, Listen, Permissions, PortalName, Resources, SocketName,
};
use serde::Serialize;
use std::fmt;
use std::path::Path;

/// All policy rules, parsed once, in reading order (files by name, rules in file order).
#[derive(Debug, Clone, Default)]
pub struct PolicySet {
    rules: Vec<Rule>,
    files: Vec<String>,
}

/// What an app asks for: its manifest's `[permissions]` and `[resources]`.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    pub app: &'a AppId,
    pub permissions: &'a Permissions,
    pub resources: &'a Resources,
}

/// A policy rule: file, 1-based rule number in that file, and its line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Source {
    /// The file's path, already escaped for display (file names are the one thing in a
    /// policy that no validated type constrains), so text and JSON show the same.
    pub file: String,
    pub rule: usize,
    pub line: usize,
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} rule {} (line {})", self.file, self.rule, self.line)
    }
}

impl Source {
    fn of(r: &Rule) -> Self {
        Source {
            file: escape_for_display(&r.file),
            rule: r.index,
            line: r.line,
        }
    }
}

/// One line of the effective grant and where it came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Granted {
    /// The manifest/policy key: `devices`, `network`, `memory-max`, …
    pub key: &'static str,
    /// The item or value, as in a policy file (`gpu`, `true`, `256M`, `/media:ro`).
    pub value: String,
    /// The rule that granted it; `None` for a limit the app set for itself below any
    /// policy ceiling.
    pub source: Option<Source>,
}

/// Why a requested item is not part of the grant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "reason", rename_all = "kebab-case")]
pub enum ExcessReason {
    /// No applying rule grants it.
    NotGranted,
    /// An applying rule denies it explicitly.
    Denied { by: Source },
    /// The app asks for more of a resource than the ceiling.
    AboveCeiling { ceiling: String, by: Source },
}

/// A requested item beyond the grant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ExcessItem {
    pub key: &'static str,
    pub value: String,
    #[serde(flatten)]
    pub reason: ExcessReason,
}

/// The result of evaluating policy for one app: exactly what is enforced. The launch
/// plan takes `permissions` and [`EffectiveGrant::cgroup_limits`]; `appmgr permissions`
/// prints [`EffectiveGrant::render_text`] or this struct serialized as JSON. All three
/// come from this one value, so what is shown is what is enforced.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EffectiveGrant {
    pub app: AppId,
    /// requested ∩ granted − denied.
    pub permissions: Permissions,
    pub limits: Limits,
    /// One entry per granted item and per limit, in display order.
    pub provenance: Vec<Granted>,
    /// What the app requested beyond the grant.
    pub excess: Vec<ExcessItem>,
    /// What happens to `excess`: with `refuse` the app is not installed, updated or
    /// started ([`EffectiveGrant::check`] fails); with `drop` it runs without it.
    pub on_excess: OnExcess,
    /// The rule that decided `on_excess` (`None`: the default, refuse).
    pub on_excess_source: Option<Source>,
    /// Service supervision settings, each key from the most specific rule that sets it.
    pub service: crate::service::ServicePolicy,
    /// The `deny` filesystems of every applying rule. The launcher compares each granted
    /// path with these on what it resolved to (device and inode), not on the string.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub denied_paths: Vec<String>,
    /// Granted items the launcher refuses on this host as it is now (a filesystem grant
    /// that cannot be resolved safely: a symlink on the way, a protected or denied
    /// directory under another name, a grant inside another). Filled by the caller from
    /// the sandbox's check ([`EffectiveGrant::refuse`]); a launch with any of them ends
    /// with exit 4.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub refused: Vec<RefusedItem>,
}

/// A granted item that the launch would refuse, and why (one line naming the path).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RefusedItem {
    pub key: &'static str,
    pub value: String,
    pub reason: String,
}

/// One permission item (a boolean or one element of a set).
#[derive(Debug, Clone)]
pub(crate) enum Item {
    /// `network = true`: any egress, DNS included.
    Network,
    /// One entry of `network.egress`.
    Egress(Egress),
    /// One entry of `network.listen`.
    Listen(Listen),
    /// `network.dns`.
    Dns,
    /// One app of `network.talk-to`.
    TalkTo(AppId),
    Ipc,
    Device(DeviceName),
    Socket(SocketName),
    Audio(AudioRole),
    Talk(BusName),
    Own(BusName),
    Fs(FsGrant),
    Portal(PortalName),
    Allow(AllowFlag),
    SensorChannel(ChannelName),
    SensorRate(u32),
    BtDevice(BtDevice),
    BtService(GattUuid),
    BtRole(BtRole),
}

fn paths_overlap(a: &str, b: &str) -> bool {
    let under = |x: &str, y: &str| x.strip_prefix(y).is_some_and(|r| r.starts_with('/'));
    a == b || under(a, b) || under(b, a)
}

impl Item {
    /// Every item in `p`, in display order.
    pub(crate) fn all(p: &Permissions) -> Vec<Item> {
        let mut v = Vec::new();
        let n = &p.network;
        if n.any {
            v.push(Item::Network);
        }
        v.extend(n.egress.iter().cloned().map(Item::Egress));
        v.extend(n.listen.iter().copied().map(Item::Listen));
        if n.dns {
            v.push(Item::Dns);
        }
        v.extend(n.talk_to.iter().cloned().map(Item::TalkTo));
        if p.ipc {
            v.push(Item::Ipc);
        }
        v.extend(p.devices.iter().cloned().map(Item::Device));
        v.extend(p.sockets.iter().copied().map(Item::Socket));
        v.extend(p.audio.iter().copied().map(Item::Audio));
        v.extend(p.dbus_talk.iter().cloned().map(Item::Talk));
        v.extend(p.dbus_own.iter().cloned().map(Item::Own));
        v.extend(p.filesystems.iter().cloned().map(Item::Fs));
        v.extend(p.portals.iter().cloned().map(Item::Portal));
        v.extend(p.allow.iter().copied().map(Item::Allow));
        v.extend(p.sensors.channels.iter().cloned().map(Item::SensorChannel));
        v.extend(p.sensors.max_rate_hz.map(Item::SensorRate));
        v.extend(p.bluetooth.devices.iter().copied().map(Item::BtDevice));
        v.extend(p.bluetooth.services.iter().copied().map(Item::BtService));
        v.extend(p.bluetooth.roles.iter().copied().map(Item::BtRole));
        v
    }

    pub(crate) fn key(&self) -> &'static str {
        match self {
            Item::Network => "network",
            Item::Egress(_) => "network.egress",
            Item::Listen(_) => "network.listen",
            Item::Dns => "network.dns",
            Item::TalkTo(_) => "network.talk-to",
            Item::Ipc => "ipc",
            Item::Device(_) => "devices",
            Item::Socket(_) => "sockets",
            Item::Audio(_) => "audio",
            Item::Talk(_) => "dbus-talk",
            Item::Own(_) => "dbus-own",
            Item::Fs(_) => "filesystems",
            Item::Portal(_) => "portals",
            Item::Allow(_) => "allow",
            Item::SensorChannel(_) => "sensors.channels",
            Item::SensorRate(_) => "sensors.max-rate-hz",
            Item::BtDevice(_) => "bluetooth.devices",
            Item::BtService(_) => "bluetooth.services",
            Item::BtRole(_) => "bluetooth.roles",
        }
    }

    pub(crate) fn value(&self) -> String {
        match self {
            Item::Network | Item::Dns | Item::Ipc => "true".into(),
            Item::Egress(e) => e.to_string(),
            Item::Listen(l) => l.to_string(),
            Item::TalkTo(a) => a.to_string(),
            Item::Device(d) => d.to_string(),
            Item::Socket(s) => s.to_string(),
            Item::Audio(a) => a.to_string(),
            Item::Talk(b) | Item::Own(b) => b.to_string(),
            Item::Fs(f) => f.to_string(),
            Item::Portal(p) => p.to_string(),
            Item::Allow(a) => a.to_string(),
            Item::SensorChannel(c) => c.to_string(),
            Item::SensorRate(r) => r.to_string(),
            Item::BtDevice(d) => d.to_string(),
            Item::BtService(u) => u.to_string(),
            Item::BtRole(r) => r.to_string(),
        }
    }

    /// Whether a rule's `grant` covers this requested item.
    fn granted_by(&self, g: &Permissions) -> bool {
        match self {
            // Only `network = true` covers a requested `true`: a narrowed policy does
            // not turn "any" into its own list.
            Item::Network => g.network.any,
            // `true` is any egress, DNS included; listen and talk-to are granted by
            // name only.
            Item::Egress(e) => g.network.any || g.network.egress.iter().any(|x| x.covers(e)),
            Item::Dns => g.network.any || g.network.dns,
            Item::Listen(l) => g.network.listen.contains(l),
            Item::TalkTo(a) => g.network.talk_to.contains(a),
            Item::Ipc => g.ipc,
            Item::Device(d) => g.devices.contains(d),
            Item::Socket(s) => g.sockets.contains(s),
            Item::Audio(a) => g.audio.contains(a),
            Item::Talk(b) => g.dbus_talk.iter().any(|x| x.covers(b)),
            Item::Own(b) => g.dbus_own.iter().any(|x| x.covers(b)),
            Item::Fs(f) => g.filesystems.iter().any(|x| x.covers(f)),
            Item::Portal(p) => g.portals.contains(p),
            Item::Allow(a) => g.allow.contains(a),
            Item::SensorChannel(c) => g.sensors.channels.contains(c),
            // A rate is covered by any grant of that rate or more.
            Item::SensorRate(r) => g.sensors.max_rate_hz.is_some_and(|m| m >= *r),
            // `*` covers every address; a requested `*` only a granted `*`.
            Item::BtDevice(d) => BtDevice::reaches(&g.bluetooth.devices, d),
            Item::BtService(u) => g.bluetooth.services.contains(u),
            Item::BtRole(r) => g.bluetooth.roles.contains(r),
        }
    }

    /// Whether a rule's `deny` touches this requested item. Denials are matched by
    /// overlap, not coverage: denying `org.x.Secret` also refuses a request for
    /// `org.x.*`, and denying `/data/keys` refuses `/data` (which would expose it), at any
    /// access.
    fn denied_by(&self, d: &Permissions) -> bool {
        match self {
            // Denying `network = true` denies the network altogether, every entry
            // included. Otherwise by overlap: a requested `true` reaches every denied
            // egress entry and DNS; an egress entry is denied when its network and a
            // denied one's overlap (same port and protocol). Names are compared as
            // names: what they resolve to is only known at launch.
            Item::Network => d.network.any || d.network.dns || !d.network.egress.is_empty(),
            Item::Egress(e) => {
                d.network.any || d.network.egress.iter().any(|x| x.covers(e) || e.covers(x))
            }
            Item::Dns => d.network.any || d.network.dns,
            Item::Listen(l) => d.network.any || d.network.listen.contains(l),
            Item::TalkTo(a) => d.network.any || d.network.talk_to.contains(a),
            Item::Ipc => d.ipc,
            Item::Device(x) => d.devices.contains(x),
            Item::Socket(x) => d.sockets.contains(x),
            Item::Audio(x) => d.audio.contains(x),
            Item::Talk(b) => d.dbus_talk.iter().any(|x| x.covers(b) || b.covers(x)),
            Item::Own(b) => d.dbus_own.iter().any(|x| x.covers(b) || b.covers(x)),
            Item::Fs(f) => d
                .filesystems
                .iter()
                .any(|x| paths_overlap(&x.path, &f.path)),
            Item::Portal(x) => d.portals.contains(x),
            Item::Allow(x) => d.allow.contains(x),
            Item::SensorChannel(x) => d.sensors.channels.contains(x),
            // Denying a rate denies streams at that rate or faster.
            Item::SensorRate(r) => d.sensors.max_rate_hz.is_some_and(|m| *r >= m),
            // Overlap: denying one address refuses a request for `*` (which would reach
            // it), and denying `*` refuses every address.
            Item::BtDevice(x) => match x {
                BtDevice::Any => !d.bluetooth.devices.is_empty(),
                _ => BtDevice::reaches(&d.bluetooth.devices, x),
            },
            Item::BtService(u) => d.bluetooth.services.contains(u),
            Item::BtRole(r) => d.bluetooth.roles.contains(r),
        }
    }

    fn insert_into(self, p: &mut Permissions) {
        match self {
            Item::Network => p.network.any = true,
            Item::Egress(x) => {
                p.network.egress.insert(x);
            }
            Item::Listen(x) => {
                p.network.listen.insert(x);
            }
            Item::Dns => p.network.dns = true,
            Item::TalkTo(x) => {
                p.network.talk_to.insert(x);
            }
            Item::Ipc => p.ipc = true,
            Item::Device(x) => {
                p.devices.insert(x);
            }
            Item::Socket(x) => {
                p.sockets.insert(x);
            }
            Item::Audio(x) => {
                p.audio.insert(x);
            }
            Item::Talk(x) => {
                p.dbus_talk.insert(x);
            }
            Item::Own(x) => {
                p.dbus_own.insert(x);
            }
            Item::Fs(x) => {
                p.filesystems.insert(x);
            }
            Item::Portal(x) => {
                p.portals.insert(x);
            }
            Item::Allow(x) => {
                p.allow.insert(x);
            }
            Item::SensorChannel(x) => {
                p.sensors.channels.insert(x);
            }
            Item::SensorRate(r) => p.sensors.max_rate_hz = Some(r),
            Item::BtDevice(x) => {
                p.bluetooth.devices.insert(x);
            }
            Item::BtService(x) => {
                p.bluetooth.services.insert(x);
            }
            Item::BtRole(x) => {
                p.bluetooth.roles.insert(x);
            }
        }
    }
}

/// The limits as (key, value) lines, in display order.
pub(crate) fn limit_items(l: &Limits) -> Vec<(&'static str, String)> {
    let mut v = Vec::new();
    if let Some(x) = l.memory_max {
        v.push(("memory-max", x.to_string()));
    }
    if let Some(x) = l.memory_high {
        v.push(("memory-high", x.to_string()));
    }
    if let Some(x) = l.memory_swap_max {
        v.push(("memory-swap-max", x.to_string()));
    }
    if let Some(x) = l.cpu_max {
        v.push(("cpu-max", x.to_string()));
    }
    if let Some(x) = l.cpu_weight {
        v.push(("cpu-weight", x.get().to_string()));
    }
    if let Some(x) = l.pids_max {
        v.push(("pids-max", x.to_string()));
    }
    if let Some(x) = &l.cpuset {
        let v2 = match &l.core_set {
            Some(name) => format!("{x} ({name})"),
            None => x.to_string(),
        };
        v.push(("cpuset", v2));
    }
    if let Some(x) = l.storage_max {
        v.push(("storage-max", x.to_string()));
    }
    v
}

struct Applying<'r> {
    rule: &'r Rule,
    specificity: (bool, usize),
}

/// The setting from the most specific applying rule that sets it; among equally
/// specific ones, the last in reading order (a later drop-in overrides).
fn decide<'r, T>(
    rules: &[Applying<'r>],
    get: impl Fn(&'r Rule) -> Option<T>,
) -> Option<(T, &'r Rule)> {
    let mut best: Option<(T, &'r Rule, (bool, usize))> = None;
    for a in rules {
        if let Some(v) = get(a.rule) {
            if best.as_ref().is_none_or(|b| a.specificity >= b.2) {
                best = Some((v, a.rule, a.specificity));
            }
        }
    }
    best.map(|(v, r, _)| (v, r))
}

impl PolicySet {
    /// No policy at all: nothing is granted.
    pub fn empty() -> Self {
        PolicySet::default()
    }

    /// Parses policy files given as (name, content) pairs; they are ordered by name.
    pub fn from_sources(
        files: impl IntoIterator<Item = (String, Vec<u8>)>,
    ) -> Result<Self, PolicyError> {
        let mut files: Vec<(String, Vec<u8>)> = files.into_iter().collect();
        files.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
        let mut set = PolicySet::default();
        for (name, bytes) in files {
            set.rules.extend(parse_file(&name, &bytes)?);
            set.files.push(name);
        }
        Ok(set)
    }

    /// Loads `DIR/*.toml` in byte order of the file names (`CONFIG/policies.d`). Hidden
    /// files and other extensions (editor backups, `.rpmnew`, `.disabled`) are ignored;
    /// a missing directory is an empty policy (deny everything). Any file that does not
    /// parse fails the whole load: no app is started on a half-read policy.
    pub fn load_dir(dir: &Path) -> Result<Self, PolicyError> {
        let rd = match std::fs::read_dir(dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Self::empty()),
            Err(source) => {
                return Err(PolicyError::Read {
                    path: dir.to_path_buf(),
                    source,
                })
            }
        };
        let mut files = Vec::new();
        for entry in rd {
            let entry = entry.map_err(|source| PolicyError::Read {
                path: dir.to_path_buf(),
                source,
            })?;
            let os = entry.file_name();
            let Some(name) = os.to_str() else {
                return Err(PolicyError::FileName {
                    name: escape_for_display(&os.to_string_lossy()),
                    reason: "file names in the policy directory must be utf-8",
                });
            };
            if name.starts_with('.') || !name.ends_with(".toml") {
                continue;
            }
            let path = entry.path();
            if path.is_dir() {
                continue;
            }
            let bytes = std::fs::read(&path).map_err(|source| PolicyError::Read {
                path: path.clone(),
                source,
            })?;
            files.push((path.to_string_lossy().into_owned(), bytes));
        }
        Self::from_sources(files)
    }

    /// Loads `CONFIG/policies.d`.
    pub fn load_config_dir(config_dir: &Path) -> Result<Self, PolicyError> {
        Self::load_dir(&config_dir.join("policies.d"))
    }

    /// The files read, in order.
    pub fn files(&self) -> &[String] {
        &self.files
    }

    pub fn rule_count(&self) -> usize {
        self.rules.len()
    }

    /// Every device node a rule's condition (`has-nodes`, `lacks-nodes`) looks at: what an
    /// evaluation depends on besides the policy files and the board.
    pub fn condition_nodes(&self) -> std::collections::BTreeSet<String> {
        self.rules
            .iter()
            .flat_map(|r| r.when.has_nodes.iter().chain(&r.when.lacks_nodes))
            .map(|n| n.as_str().to_string())
            .collect()
    }

    /// Evaluates policy for one app. Never refuses by itself (so `appmgr permissions`
    /// can show a refused app's situation); use [`PolicySet::check`] (install, update,
    /// launch) or [`EffectiveGrant::check`]. Fails only when the app's request is
    /// invalid or a rule names a core set the board lacks.
    /// The rules that apply to `id` on this board, with their specificity.
    fn applying(&self, id: &str, board: &BoardFacts) -> Vec<Applying<'_>> {
        self.rules
            .iter()
            .filter_map(|r| {
                let spec = r
                    .apps
                    .iter()
                    .filter(|g| g.matches(id))
                    .map(|g| g.specificity())
                    .max()?;
                r.when.holds(board).then_some(Applying {
                    rule: r,
                    specificity: spec,
                })
            })
            .collect()
    }

    /// Whether policy holds `id` back from `update` (`update-hold`, from the most
    /// specific rule that sets it; `""` there means not held): the reason and its rule.
    pub fn update_hold(&self, id: &str, board: &BoardFacts) -> Option<(String, Source)> {
        let applying = self.applying(id, board);
        decide(&applying, |r: &Rule| r.update_hold.as_deref())
            .filter(|(reason, _)| !reason.is_empty())
            .map(|(reason, r)| (reason.to_string(), Source::of(r)))
    }

    pub fn evaluate(
        &self,
        req: &Request<'_>,
        board: &BoardFacts,
    ) -> Result<EffectiveGrant, PolicyError> {
        let applying = self.applying(req.app.as_str(), board);

        let mut permissions = Permissions::default();
        let mut provenance = Vec::new();
        let mut excess = Vec::new();
        for item in Item::all(req.permissions) {
            let denied = applying.iter().find(|a| item.denied_by(&a.rule.deny));
            let granted = applying.iter().find(|a| item.granted_by(&a.rule.grant));
            match (denied, granted) {
                (Some(d), _) => excess.push(ExcessItem {
                    key: item.key(),
                    value: item.value(),
                    reason: ExcessReason::Denied {
                        by: Source::of(d.rule),
                    },
                }),
                (None, Some(g)) => {
                    provenance.push(Granted {
                        key: item.key(),
                        value: item.value(),
                        source: Some(Source::of(g.rule)),
                    });
                    item.insert_into(&mut permissions);
                }
                (None, None) => excess.push(ExcessItem {
                    key: item.key(),
                    value: item.value(),
                    reason: ExcessReason::NotGranted,
                }),
            }
        }

        let mut limits = Limits::default();
        let mut limit_src: Vec<(&'static str, Option<Source>)> = Vec::new();

        // Ceilings the app may also ask for: the effective value is the smaller one.
        macro_rules! ceiling {
            ($field:ident, $key:literal, $req:expr, $pol:expr) => {{
                let pol = decide(&applying, $pol);
                match ($req, pol) {
                    (Some(a), Some((p, r))) if a > p => {
                        excess.push(ExcessItem {
                            key: $key,
                            value: a.to_string(),
                            reason: ExcessReason::AboveCeiling {
                                ceiling: p.to_string(),
                                by: Source::of(r),
                            },
                        });
                        limits.$field = Some(p);
                        limit_src.push(($key, Some(Source::of(r))));
                    }
                    (Some(a), Some(_)) | (Some(a), None) => {
                        limits.$field = Some(a);
                        limit_src.push(($key, None));
                    }
                    (None, Some((p, r))) => {
                        limits.$field = Some(p);
                        limit_src.push(($key, Some(Source::of(r))));
                    }
                    (None, None) => {}
                }
            }};
        }
        if req.resources.pids_max == Some(0) {
            return Err(PolicyError::InvalidRequest {
                app: req.app.to_string(),
                key: "pids-max",
                value: "0".into(),
                reason: "must be at least 1",
            });
        }
        ceiling!(
            memory_max,
            "memory-max",
            req.resources.memory_max,
            |r: &Rule| r.resources.memory_max
        );
        ceiling!(cpu_max, "cpu-max", req.resources.cpu_max, |r: &Rule| r
            .resources
            .cpu_max);
        ceiling!(pids_max, "pids-max", req.resources.pids_max, |r: &Rule| r
            .resources
            .pids_max
            .map(|p| p.get()));

        // Policy-only settings.
        if let Some((v, r)) = decide(&applying, |r: &Rule| r.resources.memory_high) {
            // memory.high above memory.max would never trigger.
            limits.memory_high = Some(limits.memory_max.map_or(v, |m| v.min(m)));
            limit_src.push(("memory-high", Some(Source::of(r))));
        }
        if let Some((v, r)) = decide(&applying, |r: &Rule| r.resources.memory_swap_max) {
            limits.memory_swap_max = Some(v);
            limit_src.push(("memory-swap-max", Some(Source::of(r))));
        }
        if let Some((v, r)) = decide(&applying, |r: &Rule| r.resources.cpu_weight) {
            limits.cpu_weight = Some(v);
            limit_src.push(("cpu-weight", Some(Source::of(r))));
        }
        if let Some((v, r)) = decide(&applying, |r: &Rule| r.resources.cpuset.as_ref()) {
            match v {
                CpusetRef::Cpus(c) => limits.cpuset = Some(c.clone()),
                CpusetRef::CoreSet(name) => {
                    let Some(c) = board.core_sets.get(name) else {
                        return Err(PolicyError::UnknownCoreSet {
                            file: escape_for_display(&r.file),
                            line: r.line,
                            rule: r.index,
                            app: req.app.to_string(),
                            name: name.clone(),
                        });
                    };
                    limits.cpuset = Some(c.clone());
                    limits.core_set = Some(name.clone());
                }
            }
            limit_src.push(("cpuset", Some(Source::of(r))));
        }
        if let Some((v, r)) = decide(&applying, |r: &Rule| r.resources.storage_max) {
            limits.storage_max = Some(v);
            limit_src.push(("storage-max", Some(Source::of(r))));
        }
        for (key, value) in limit_items(&limits) {
            let source = limit_src
                .iter()
                .find(|(k, _)| *k == key)
                .and_then(|(_, s)| s.clone());
            provenance.push(Granted { key, value, source });
        }

        let (on_excess, on_excess_source) = match decide(&applying, |r: &Rule| r.on_excess) {
            Some((v, r)) => (v, Some(Source::of(r))),
            None => (OnExcess::Refuse, None),
        };
        let svc = |get: fn(&crate::service::ServicePolicy) -> Option<u64>| {
            decide(&applying, |r: &Rule| get(&r.service)).map(|(v, _)| v)
        };
        let service = crate::service::ServicePolicy {
            autostart: decide(&applying, |r: &Rule| r.service.autostart).map(|(v, _)| v),
            restart: decide(&applying, |r: &Rule| r.service.restart).map(|(v, _)| v),
            restart_delay_ms: svc(|s| s.restart_delay_ms),
            restart_delay_max_ms: svc(|s| s.restart_delay_max_ms),
            health_crashes: svc(|s| s.health_crashes.map(u64::from)).map(|v| v as u32),
            health_timeout_s: svc(|s| s.health_timeout_s.map(u64::from)).map(|v| v as u32),
        };
        let mut denied_paths: Vec<String> = Vec::new();
        for a in &applying {
            for f in &a.rule.deny.filesystems {
                if !denied_paths.contains(&f.path) {
                    denied_paths.push(f.path.clone());
                }
            }
        }
        Ok(EffectiveGrant {
            app: req.app.clone(),
            permissions,
            limits,
            provenance,
            excess,
            on_excess,
            on_excess_source,
            service,
            denied_paths,
            refused: Vec::new(),
        })
    }

    /// [`PolicySet::evaluate`] then [`EffectiveGrant::check`]: what install, update and
    /// launch call. An update is checked with the new version's request, so an update
    /// that grows the request beyond the grant is refused like an install.
    pub fn check(
        &self,
        req: &Request<'_>,
        board: &BoardFacts,
    ) -> Result<EffectiveGrant, PolicyError> {
        let g = self.evaluate(req, board)?;
        g.check()?;
        Ok(g)
    }
}

/// `devices=[camera, video], network=true, network.egress=[10.0.0.1:443/tcp] and
/// memory-max=512M (policy allows 256M)`.
pub(crate) fn summarize(items: &[ExcessItem]) -> String {
    let mut groups: Vec<(&'static str, Vec<&ExcessItem>)> = Vec::new();
    for it in items {
        match groups.iter_mut().find(|(k, _)| *k == it.key) {
            Some((_, v)) => v.push(it),
            None => groups.push((it.key, vec![it])),
        }
    }
    let parts: Vec<String> = groups
        .iter()
        .map(|(key, its)| {
            let first = its[0];
            match &first.reason {
                ExcessReason::AboveCeiling { ceiling, .. } => format!(
                    "{key}={} (policy allows {})",
                    escape_for_display(&first.value),
                    escape_for_display(ceiling)
                ),
                _ if matches!(*key, "network" | "network.dns" | "ipc") => format!("{key}=true"),
                _ => format!(
                    "{key}=[{}]",
                    its.iter()
                        .map(|i| escape_for_display(&i.value))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            }
        })
        .collect();
    match parts.len() {
        0 => String::new(),
        1 => parts[0].clone(),
        n => format!("{} and {}", parts[..n - 1].join(", "), parts[n - 1]),
    }
}

impl EffectiveGrant {
    /// Fails with [`PolicyError::Excess`], naming the exact excess, when the app asks
    /// for more than it is granted and `on-excess` is `refuse`.
    pub fn check(&self) -> Result<(), PolicyError> {
        if self.excess.is_empty() || self.on_excess == OnExcess::Drop {
            return Ok(());
        }
        Err(PolicyError::Excess {
            app: escape_for_display(self.app.as_str()),
            summary: summarize(&self.excess),
            items: self.excess.clone(),
        })
    }

    /// Records that the launch refuses the granted filesystem path `path` (`reason` from
    /// the sandbox's check). Shown by `appmgr permissions`; the grant itself is unchanged
    /// (the launcher refuses it again, on what it resolves then).
    pub fn refuse_filesystem(&mut self, path: &str, reason: String) {
        let value = self
            .permissions
            .filesystems
            .iter()
            .find(|f| f.path == path)
            .map_or_else(|| path.to_string(), |f| f.to_string());
        self.refused.push(RefusedItem {
            key: "filesystems",
            value,
            reason,
        });
    }

    /// What was dropped (requested, not granted, and the deciding rule says `drop`).
    pub fn dropped(&self) -> &[ExcessItem] {
        match self.on_excess {
            OnExcess::Drop => &self.excess,
            OnExcess::Refuse => &[],
        }
    }

    /// The cgroup crate's input for these limits.
    pub fn cgroup_limits(&self) -> CgroupLimits {
        CgroupLimits::from(&self.limits)
    }
}
