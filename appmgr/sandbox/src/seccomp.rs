//! The seccomp filter: a default-allow filter with a blocklist at least as strict as
//! Flatpak's. The plain list lives in `policies/seccomp/blocked.list` (compiled into the
//! binary); rules that look at arguments are built here.
//!
//! Compiling with libseccomp costs about a millisecond, so the launcher compiles a filter
//! once per distinct grant and exports the BPF program into the cache directory under a
//! key that hashes everything the filter depends on (list, flags, architecture, appmgr
//! version). Later launches read the program and hand it to the kernel directly.

use libseccomp::{
    ScmpAction, ScmpArch, ScmpArgCompare, ScmpCompareOp, ScmpFilterContext, ScmpSyscall,
};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// The blocklist, as shipped in `policies/seccomp/blocked.list`.
pub const BLOCKED_LIST: &str = include_str!("../../../policies/seccomp/blocked.list");

/// The allow list, as shipped in `policies/seccomp/allowed.list`: every other syscall,
/// each with the reason it is allowed. The filter is default-allow, so the list is not
/// compiled into it; [`unclassified_syscalls`] checks it against what libseccomp knows.
pub const ALLOWED_LIST: &str = include_str!("../../../policies/seccomp/allowed.list");

/// Syscalls filtered by the argument and architecture rules of [`build_filter`] rather
/// than by the lists.
pub const ARGUMENT_RULES: &[&str] = &[
    "clone",
    "clone3",
    "ioctl",
    "socket",
    "personality",
    "fchmod",
    "fchmodat",
    "fchmodat2",
    "mknodat",
    "openat",
    "chmod",
    "mknod",
    "open",
    "creat",
    "iopl",
    "ioperm",
    "modify_ldt",
    "uselib",
    "setsid",
];

/// Syscalls newer than what libseccomp 2.5.4 (Debian 12; upstream knows up to 450,
/// Debian's update up to 456) can name, with their numbers on x86_64 and aarch64
/// (`None`: not on that architecture). A name libseccomp knows is always resolved by
/// libseccomp; this table is the fallback. Since Linux 5.1 new syscalls share one
/// number on every architecture but alpha, except arch-specific ones like `uretprobe`.
pub const SYSCALL_NUMBERS: &[(&str, Option<i32>, Option<i32>)] = &[
    ("futex_waitv", Some(449), Some(449)),
    ("set_mempolicy_home_node", Some(450), Some(450)),
    ("cachestat", Some(451), Some(451)),
    ("fchmodat2", Some(452), Some(452)),
    ("map_shadow_stack", Some(453), Some(453)),
    ("futex_wake", Some(454), Some(454)),
    ("futex_wait", Some(455), Some(455)),
    ("futex_requeue", Some(456), Some(456)),
    ("statmount", Some(457), Some(457)),
    ("listmount", Some(458), Some(458)),
    ("lsm_get_self_attr", Some(459), Some(459)),
    ("lsm_set_self_attr", Some(460), Some(460)),
    ("lsm_list_modules", Some(461), Some(461)),
    ("mseal", Some(462), Some(462)),
    ("setxattrat", Some(463), Some(463)),
    ("getxattrat", Some(464), Some(464)),
    ("listxattrat", Some(465), Some(465)),
    ("removexattrat", Some(466), Some(466)),
    ("open_tree_attr", Some(467), Some(467)),
    ("file_getattr", Some(468), Some(468)),
    ("file_setattr", Some(469), Some(469)),
    ("listns", Some(470), Some(470)),
    ("uretprobe", Some(335), None),
];

/// What the launcher needs to build or find the filter.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct SeccompPlan {
    /// `devel`: ptrace and perf_event_open allowed.
    pub devel: bool,
    /// `multiarch`: the secondary ABIs (i386 and x32 on x86_64, AArch32 on aarch64) are
    /// allowed; otherwise a syscall through them kills the process.
    pub multiarch: bool,
    /// `bluetooth`: AF_BLUETOOTH sockets.
    pub bluetooth: bool,
    /// `canbus`: AF_CAN sockets.
    pub canbus: bool,
    /// SHA-256 of the blocklist the plan was made with; the launcher refuses a plan made
    /// with another list than the one compiled into it.
    pub list_sha256: String,
    /// The cached BPF program for this grant.
    pub cache_file: PathBuf,
}

impl SeccompPlan {
    pub(crate) fn new(
        cache_dir: &str,
        devel: bool,
        multiarch: bool,
        bluetooth: bool,
        canbus: bool,
    ) -> SeccompPlan {
        let list_sha256 = hex::encode(Sha256::digest(BLOCKED_LIST.as_bytes()));
        let mut h = Sha256::new();
        h.update(b"appmgr-seccomp\0");
        h.update(env!("CARGO_PKG_VERSION").as_bytes());
        h.update(b"\0");
        h.update(std::env::consts::ARCH.as_bytes());
        h.update([devel as u8, multiarch as u8, bluetooth as u8, canbus as u8]);
        h.update(BLOCKED_LIST.as_bytes());
        let key = hex::encode(&h.finalize()[..16]);
        SeccompPlan {
            devel,
            multiarch,
            bluetooth,
            canbus,
            list_sha256,
            cache_file: Path::new(cache_dir).join(format!("{}-{key}.bpf", std::env::consts::ARCH)),
        }
    }
}

/// Why a filter could not be built or loaded.
#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    #[error("blocked.list line {line}: {reason}")]
    List { line: usize, reason: String },
    #[error("allowed.list line {line}: {reason}")]
    AllowList { line: usize, reason: String },
    #[error("syscall `{name}` is unknown on {arch}")]
    UnknownSyscall { name: String, arch: String },
    #[error("libseccomp: {step}: {message}")]
    Libseccomp { step: &'static str, message: String },
    #[error("seccomp cache {path}: {reason}")]
    Cache { path: PathBuf, reason: String },
    #[error("seccomp cache {path}: {source}")]
    CacheIo {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the plan was made with another seccomp list than this launcher's")]
    ListMismatch,
}

/// One line of the blocklist.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockedSyscall {
    pub name: String,
    pub errno: i32,
    /// Re-allowed by the `devel` flag.
    pub devel: bool,
}

/// Parses the blocklist. Strict: unknown errno names or tags are errors.
pub fn parse_list(text: &str) -> Result<Vec<BlockedSyscall>, SeccompError> {
    let mut out: Vec<BlockedSyscall> = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let err = |reason: String| SeccompError::List {
            line: i + 1,
            reason,
        };
        let mut words = line.split_whitespace();
        let name = words.next().unwrap_or_default().to_string();
        if !valid_name(&name) {
            return Err(err(format!("bad syscall name {name:?}")));
        }
        let errno = match words.next() {
            Some("EPERM") => libc::EPERM,
            Some("ENOSYS") => libc::ENOSYS,
            other => return Err(err(format!("errno must be EPERM or ENOSYS, got {other:?}"))),
        };
        let mut devel = false;
        for w in words {
            match w {
                "devel" => devel = true,
                other => return Err(err(format!("unknown tag {other:?}"))),
            }
        }
        if out.iter().any(|b| b.name == name) {
            return Err(err(format!("{name} is listed twice")));
        }
        out.push(BlockedSyscall { name, errno, devel });
    }
    Ok(out)
}

/// One line of the allow list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowedSyscall {
    pub name: String,
    pub reason: String,
}

/// Parses the allow list: `NAME REASON`, the reason required. Strict like [`parse_list`].
pub fn parse_allowed_list(text: &str) -> Result<Vec<AllowedSyscall>, SeccompError> {
    let mut out: Vec<AllowedSyscall> = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let err = |reason: String| SeccompError::AllowList {
            line: i + 1,
            reason,
        };
        let (name, reason) = line
            .split_once(char::is_whitespace)
            .map(|(n, r)| (n, r.trim()))
            .unwrap_or((line, ""));
        if !valid_name(name) {
            return Err(err(format!("bad syscall name {name:?}")));
        }
        if reason.is_empty() {
            return Err(err(format!("{name} has no reason")));
        }
        if out.iter().any(|a| a.name == name) {
            return Err(err(format!("{name} is listed twice")));
        }
        out.push(AllowedSyscall {
            name: name.to_string(),
            reason: reason.to_string(),
        });
    }
    Ok(out)
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

/// Every syscall name libseccomp or [`SYSCALL_NUMBERS`] knows on `arch`, sorted.
pub fn known_syscalls(arch: ScmpArch) -> Vec<String> {
    // The x86_64 and aarch64 tables end below 1024 (x32's bit is not part of them).
    let mut names: Vec<String> = (0..1024)
        .filter_map(|nr| ScmpSyscall::from(nr).get_name_by_arch(arch).ok())
        .collect();
    for (name, x86_64, aarch64) in SYSCALL_NUMBERS {
        if table_number(arch, *x86_64, *aarch64).is_some() {
            names.push((*name).to_string());
        }
    }
    names.sort();
    names.dedup();
    names
}

/// The syscalls known on x86_64 or aarch64 that are neither blocked by the list, nor
/// filtered by [`ARGUMENT_RULES`], nor allowed with a reason by the allow list; and the
/// names of either list that are in the other as well.
pub fn unclassified_syscalls(
    blocked: &[BlockedSyscall],
    allowed: &[AllowedSyscall],
) -> Vec<String> {
    let mut out = Vec::new();
    for arch in [ScmpArch::X8664, ScmpArch::Aarch64] {
        for name in known_syscalls(arch) {
            let classified = blocked.iter().any(|b| b.name == name)
                || allowed.iter().any(|a| a.name == name)
                || ARGUMENT_RULES.contains(&name.as_str());
            if !classified && !out.contains(&name) {
                out.push(name);
            }
        }
    }
    for a in allowed {
        if blocked.iter().any(|b| b.name == a.name) || ARGUMENT_RULES.contains(&a.name.as_str()) {
            out.push(format!("{} (allowed and blocked)", a.name));
        }
    }
    out
}

fn table_number(arch: ScmpArch, x86_64: Option<i32>, aarch64: Option<i32>) -> Option<i32> {
    match arch {
        ScmpArch::X8664 => x86_64,
        ScmpArch::Aarch64 => aarch64,
        _ => None,
    }
}

fn lib(step: &'static str) -> impl Fn(libseccomp::error::SeccompError) -> SeccompError {
    move |e| SeccompError::Libseccomp {
        step,
        message: e.to_string(),
    }
}

/// How a syscall name resolves on one architecture.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Resolved {
    /// libseccomp knows the name: rules are added by name and translated for every
    /// architecture of the filter.
    Named,
    /// Only [`SYSCALL_NUMBERS`] knows it: the number on that architecture.
    Number(i32),
}

fn resolve(name: &str, arch: ScmpArch) -> Result<Resolved, SeccompError> {
    if ScmpSyscall::from_name_by_arch(name, arch).is_ok() {
        return Ok(Resolved::Named);
    }
    SYSCALL_NUMBERS
        .iter()
        .find(|(n, _, _)| *n == name)
        .and_then(|(_, x86_64, aarch64)| table_number(arch, *x86_64, *aarch64))
        .map(Resolved::Number)
        .ok_or_else(|| SeccompError::UnknownSyscall {
            name: name.into(),
            arch: format!("{arch:?}"),
        })
}

/// Checks that every name of the list exists on both supported architectures.
pub fn check_list_names(list: &[BlockedSyscall]) -> Result<(), SeccompError> {
    for b in list {
        for arch in [ScmpArch::X8664, ScmpArch::Aarch64] {
            resolve(&b.name, arch)?;
        }
    }
    Ok(())
}

const TIOCSTI: u64 = 0x5412;
const TIOCLINUX: u64 = 0x541C;
const TIOCSCTTY: u64 = 0x540E;
const TIOCSPGRP: u64 = 0x5410;
const TIOCNOTTY: u64 = 0x5422;
const TIOCSETD: u64 = 0x5423;
/// `NETLINK_KOBJECT_UEVENT`: the kernel's hotplug broadcast (see [`build_filter`]).
pub const NETLINK_KOBJECT_UEVENT: u64 = 15;
/// What `socket(AF_NETLINK, _, NETLINK_KOBJECT_UEVENT)` fails with in the sandbox.
pub const UEVENT_ERRNO: i32 = libc::EACCES;

/// Which variant of the filter the launcher loads. The plan names the grant's filter;
/// the launcher picks the variant from what it finds at launch (docs/sandbox.md, "The
/// terminal").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Variant {
    /// The app has no controlling terminal (its own session).
    #[default]
    Plain,
    /// The app stays in the caller's session and foreground job so that the kernel's job
    /// control decides when it may read the terminal: `setsid` and the ioctls that would
    /// leave or take over the terminal (`TIOCNOTTY`, `TIOCSCTTY`, `TIOCSPGRP`,
    /// `TIOCSETD`) fail with EPERM.
    JobControlled,
}

impl Variant {
    /// The cache file of this variant of `plan`'s filter.
    pub fn cache_file(self, plan: &SeccompPlan) -> PathBuf {
        match self {
            Variant::Plain => plan.cache_file.clone(),
            Variant::JobControlled => {
                let stem = plan
                    .cache_file
                    .file_stem()
                    .map(|s| s.to_string_lossy().into_owned())
                    .unwrap_or_default();
                plan.cache_file.with_file_name(format!("{stem}-tty.bpf"))
            }
        }
    }
}
const PER_LINUX32: u64 = 0x0008;
/// One past the highest address family this list knows (AF_MCTP = 45 in Linux 6.x).
const AF_LIMIT: u64 = 46;
const S_ISUID: u64 = 0o4000;
const S_ISGID: u64 = 0o2000;

/// Builds the filter for `primary` (the architecture of the launcher in production; tests
/// also build it for the other supported one).
pub fn build_filter(
    plan: &SeccompPlan,
    primary: ScmpArch,
) -> Result<ScmpFilterContext, SeccompError> {
    build_filter_variant(plan, primary, Variant::Plain)
}

/// [`build_filter`] for one [`Variant`].
pub fn build_filter_variant(
    plan: &SeccompPlan,
    primary: ScmpArch,
    variant: Variant,
) -> Result<ScmpFilterContext, SeccompError> {
    let list = parse_list(BLOCKED_LIST)?;
    let mut ctx = ScmpFilterContext::new(ScmpAction::Allow).map_err(lib("init"))?;
    // A syscall made through an ABI the filter does not cover is not "allowed by
    // default": it kills the whole process.
    ctx.set_act_badarch(ScmpAction::KillProcess)
        .map_err(lib("bad arch action"))?;
    // We load the program ourselves after setting no_new_privs.
    ctx.set_ctl_nnp(false).map_err(lib("nnp"))?;
    ctx.set_ctl_optimize(2).map_err(lib("optimize"))?;
    let native = ScmpArch::native();
    if primary != native {
        ctx.add_arch(primary).map_err(lib("add arch"))?;
        ctx.remove_arch(native).map_err(lib("remove arch"))?;
    }
    let errno = |e: i32| ScmpAction::Errno(e);

    // Syscalls libseccomp cannot name are added by number, exactly, before any secondary
    // architecture is: libseccomp translates numbers between architectures by name, so a
    // number it cannot name only goes into the filter of the architecture it was added to,
    // and only if that is the host's (the launcher's case; the filters tests build for the
    // other architecture go without them). The secondary ABIs of a `multiarch` grant do
    // not get these rules until libseccomp knows the names.
    let by_number = |name: &str| -> Result<Option<i32>, SeccompError> {
        match resolve(name, primary)? {
            Resolved::Named => Ok(None),
            Resolved::Number(nr) => Ok(Some(nr)),
        }
    };
    for b in &list {
        if b.devel && plan.devel {
            continue;
        }
        if let Some(nr) = by_number(&b.name)? {
            if primary == native {
                ctx.add_rule_exact(errno(b.errno), ScmpSyscall::from(nr))
                    .map_err(lib("list rule by number"))?;
            }
        }
    }
    // fchmodat2 would bypass the fchmodat mode check: where libseccomp cannot name it (and
    // so cannot filter its mode argument for every ABI), ENOSYS makes libc fall back to
    // fchmodat.
    let fchmodat2_nr = by_number("fchmodat2")?;
    if let Some(nr) = fchmodat2_nr.filter(|_| primary == native) {
        ctx.add_rule_exact(errno(libc::ENOSYS), ScmpSyscall::from(nr))
            .map_err(lib("fchmodat2"))?;
    }

    if plan.multiarch {
        // Without these, libseccomp's filter sends i386/x32 (or AArch32) syscalls to the
        // bad-arch action; x32 shares AUDIT_ARCH_X86_64 and is caught by the number range.
        let secondary: &[ScmpArch] = match primary {
            ScmpArch::X8664 => &[ScmpArch::X86, ScmpArch::X32],
            ScmpArch::Aarch64 => &[ScmpArch::Arm],
            _ => &[],
        };
        for a in secondary {
            ctx.add_arch(*a).map_err(lib("add secondary arch"))?;
        }
    }
    // Syscall numbers given to libseccomp are in the host's numbering; it translates them
    // by name for every architecture of the filter. Names are checked against `primary`
    // so that an unknown name is always an error.
    let sys = |name: &str| -> Result<ScmpSyscall, SeccompError> {
        if resolve(name, primary)? != Resolved::Named {
            return Err(SeccompError::UnknownSyscall {
                name: name.into(),
                arch: format!("{primary:?} (libseccomp)"),
            });
        }
        ScmpSyscall::from_name(name).map_err(|_| SeccompError::UnknownSyscall {
            name: name.into(),
            arch: format!("{native:?} (host)"),
        })
    };

    for b in &list {
        if b.devel && plan.devel {
            continue;
        }
        if by_number(&b.name)?.is_none() {
            ctx.add_rule(errno(b.errno), sys(&b.name)?)
                .map_err(lib("list rule"))?;
        }
    }

    // clone3 passes its flags in a struct seccomp cannot read: ENOSYS makes libc fall back
    // to clone, whose flags are checked below.
    ctx.add_rule(errno(libc::ENOSYS), sys("clone3")?)
        .map_err(lib("clone3"))?;
    for flag in [
        libc::CLONE_NEWUSER,
        libc::CLONE_NEWNS,
        libc::CLONE_NEWPID,
        libc::CLONE_NEWNET,
        libc::CLONE_NEWIPC,
        libc::CLONE_NEWUTS,
        libc::CLONE_NEWCGROUP,
    ] {
        let f = flag as u64;
        ctx.add_rule_conditional(
            errno(libc::EPERM),
            sys("clone")?,
            &[ScmpArgCompare::new(0, ScmpCompareOp::MaskedEqual(f), f)],
        )
        .map_err(lib("clone"))?;
    }

    // The request is an int: the kernel ignores the upper 32 bits, so compare only the
    // lower ones.
    let refuse_ioctls = |ctx: &mut ScmpFilterContext, reqs: &[u64]| -> Result<(), SeccompError> {
        for &req in reqs {
            ctx.add_rule_conditional(
                errno(libc::EPERM),
                sys("ioctl")?,
                &[ScmpArgCompare::new(
                    1,
                    ScmpCompareOp::MaskedEqual(0xffff_ffff),
                    req,
                )],
            )
            .map_err(lib("ioctl"))?;
        }
        Ok(())
    };
    // TIOCSTI pushes input into the terminal (escape to the caller's shell); TIOCLINUX can
    // too on a VT.
    refuse_ioctls(&mut ctx, &[TIOCSTI, TIOCLINUX])?;
    if variant == Variant::JobControlled {
        // The app shares the caller's session and terminal; job control holds only while
        // the terminal stays its controlling terminal and the caller's shell decides the
        // foreground job. A new session, giving the terminal up, taking it as controlling
        // terminal, making its own group the foreground one (possible from the background
        // while SIGTTOU is ignored) or a line discipline without job control would each
        // let it read what is typed for the shell.
        ctx.add_rule(errno(libc::EPERM), sys("setsid")?)
            .map_err(lib("setsid"))?;
        refuse_ioctls(&mut ctx, &[TIOCNOTTY, TIOCSCTTY, TIOCSPGRP, TIOCSETD])?;
    }

    // Socket families: UNIX, INET, INET6, NETLINK; Bluetooth and CAN only with their flag.
    let mut allowed = vec![
        libc::AF_UNIX as u64,
        libc::AF_INET as u64,
        libc::AF_INET6 as u64,
        libc::AF_NETLINK as u64,
    ];
    if plan.bluetooth {
        allowed.push(libc::AF_BLUETOOTH as u64);
    }
    if plan.canbus {
        allowed.push(libc::AF_CAN as u64);
    }
    let socket = sys("socket")?;
    for fam in (0..AF_LIMIT).filter(|f| !allowed.contains(f)) {
        ctx.add_rule_conditional(
            errno(libc::EAFNOSUPPORT),
            socket,
            &[ScmpArgCompare::new(0, ScmpCompareOp::Equal, fam)],
        )
        .map_err(lib("socket"))?;
    }
    ctx.add_rule_conditional(
        errno(libc::EAFNOSUPPORT),
        socket,
        &[ScmpArgCompare::new(
            0,
            ScmpCompareOp::GreaterEqual,
            AF_LIMIT,
        )],
    )
    .map_err(lib("socket"))?;
    // Kernel uevents (hotplug: every device added, removed or changed, with its
    // attributes) are broadcast to NETLINK_KOBJECT_UEVENT sockets in every network
    // namespace owned by the initial user namespace, so the sandbox's own network
    // namespace does not keep them out. No grant provides them (docs/sandbox.md,
    // "Kernel uevents"). The protocol is an int: compare the low 32 bits.
    ctx.add_rule_conditional(
        errno(UEVENT_ERRNO),
        socket,
        &[
            ScmpArgCompare::new(0, ScmpCompareOp::Equal, libc::AF_NETLINK as u64),
            ScmpArgCompare::new(
                2,
                ScmpCompareOp::MaskedEqual(0xffff_ffff),
                NETLINK_KOBJECT_UEVENT,
            ),
        ],
    )
    .map_err(lib("socket uevent"))?;

    // personality: only PER_LINUX (and PER_LINUX32 with multiarch). Other personalities
    // turn on READ_IMPLIES_EXEC, ADDR_NO_RANDOMIZE and similar exploit helpers.
    let personality = sys("personality")?;
    if plan.multiarch {
        ctx.add_rule_conditional(
            errno(libc::EPERM),
            personality,
            &[ScmpArgCompare::new(0, ScmpCompareOp::Greater, PER_LINUX32)],
        )
        .map_err(lib("personality"))?;
        for low in 1..8u64 {
            ctx.add_rule_conditional(
                errno(libc::EPERM),
                personality,
                &[ScmpArgCompare::new(0, ScmpCompareOp::MaskedEqual(7), low)],
            )
            .map_err(lib("personality"))?;
        }
    } else {
        ctx.add_rule_conditional(
            errno(libc::EPERM),
            personality,
            &[ScmpArgCompare::new(0, ScmpCompareOp::NotEqual, 0)],
        )
        .map_err(lib("personality"))?;
    }

    // setuid/setgid bits: an app must not leave a setuid file for a later, more privileged
    // context (deployments are nosuid, but granted host paths may not be).
    let mut mode_rules: Vec<(&str, u32)> = vec![
        ("fchmod", 1),
        ("fchmodat", 2),
        ("mknodat", 2),
        ("openat", 3),
    ];
    if fchmodat2_nr.is_none() {
        // fchmodat2(dirfd, path, mode, flags): the mode is argument 2, as for fchmodat.
        mode_rules.push(("fchmodat2", 2));
    }
    if primary == ScmpArch::X8664 {
        // Legacy calls that aarch64 does not have.
        mode_rules.extend([("chmod", 1), ("mknod", 1), ("open", 2), ("creat", 1)]);
    }
    for (name, arg) in mode_rules {
        let s = sys(name)?;
        for bit in [S_ISUID, S_ISGID] {
            ctx.add_rule_conditional(
                errno(libc::EPERM),
                s,
                &[ScmpArgCompare::new(
                    arg,
                    ScmpCompareOp::MaskedEqual(bit),
                    bit,
                )],
            )
            .map_err(lib("mode bits"))?;
        }
    }
    if primary == ScmpArch::X8664 {
        // Port I/O and the LDT: hardware access and a classic exploit aid.
        for name in ["iopl", "ioperm", "modify_ldt", "uselib"] {
            ctx.add_rule(errno(libc::EPERM), sys(name)?)
                .map_err(lib("x86 rule"))?;
        }
    }
    Ok(ctx)
}

/// Reads the cached program for `plan`, or compiles, caches and returns it. The cache
/// directory and file must belong to the launcher's user and not be writable by others:
/// a filter that someone else could swap is worse than none.
pub fn load_or_compile(plan: &SeccompPlan) -> Result<Vec<u8>, SeccompError> {
    load_or_compile_variant(plan, Variant::Plain)
}

/// [`load_or_compile`] for one [`Variant`] (cached under [`Variant::cache_file`]).
pub fn load_or_compile_variant(
    plan: &SeccompPlan,
    variant: Variant,
) -> Result<Vec<u8>, SeccompError> {
    if plan.list_sha256 != hex::encode(Sha256::digest(BLOCKED_LIST.as_bytes())) {
        return Err(SeccompError::ListMismatch);
    }
    let path = &variant.cache_file(plan);
    let cio = |source| SeccompError::CacheIo {
        path: path.clone(),
        source,
    };
    let euid = rustix::process::geteuid().as_raw();
    let check = |meta: &std::fs::Metadata, what: &Path| -> Result<(), SeccompError> {
        if meta.uid() != euid || meta.mode() & 0o022 != 0 {
            return Err(SeccompError::Cache {
                path: what.to_path_buf(),
                reason: format!(
                    "owned by uid {} with mode {:o}; must be owned by uid {euid} and not group/other writable",
                    meta.uid(),
                    meta.mode() & 0o7777
                ),
            });
        }
        Ok(())
    };
    match std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
    {
        Ok(mut f) => {
            let meta = f.metadata().map_err(cio)?;
            check(&meta, path)?;
            let mut buf = Vec::with_capacity(meta.len() as usize);
            f.read_to_end(&mut buf).map_err(cio)?;
            if !buf.is_empty()
                && buf.chunks_exact(8).remainder().is_empty()
                && buf.len() <= 4096 * 8
            {
                return Ok(buf);
            }
            // A torn write: fall through and rebuild it.
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(cio(e)),
    }
    let ctx = build_filter_variant(plan, ScmpArch::native(), variant)?;
    match store(&ctx, path, &check) {
        Ok(bpf) => Ok(bpf),
        // A read-only or full /var must not keep apps from starting: use the program
        // without caching it (an untrusted cache is still a hard error, above and in
        // `store`).
        Err(SeccompError::CacheIo { source, .. })
            if matches!(
                source.raw_os_error(),
                Some(
                    libc::EROFS
                        | libc::EACCES
                        | libc::EPERM
                        | libc::ENOSPC
                        | libc::EDQUOT
                        | libc::ENOENT
                        | libc::ENOTDIR
                )
            ) =>
        {
            export_in_memory(&ctx)
        }
        Err(e) => Err(e),
    }
}

fn store(
    ctx: &ScmpFilterContext,
    path: &Path,
    check: &dyn Fn(&std::fs::Metadata, &Path) -> Result<(), SeccompError>,
) -> Result<Vec<u8>, SeccompError> {
    let cio = |source| SeccompError::CacheIo {
        path: path.to_path_buf(),
        source,
    };
    let dir = path.parent().ok_or_else(|| SeccompError::Cache {
        path: path.to_path_buf(),
        reason: "no parent directory".into(),
    })?;
    if !dir.exists() {
        std::fs::create_dir_all(dir).map_err(cio)?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(cio)?;
    }
    check(&std::fs::symlink_metadata(dir).map_err(cio)?, dir)?;
    let tmp = dir.join(format!(
        ".tmp-{}-{}",
        std::process::id(),
        path.file_name().and_then(|n| n.to_str()).unwrap_or("bpf")
    ));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(&tmp)
        .map_err(cio)?;
    let res = (|| {
        ctx.export_bpf(&f).map_err(lib("export"))?;
        f.flush().map_err(cio)?;
        f.sync_all().map_err(cio)?;
        std::fs::rename(&tmp, path).map_err(cio)?;
        std::fs::read(path).map_err(cio)
    })();
    if res.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    res
}

fn export_in_memory(ctx: &ScmpFilterContext) -> Result<Vec<u8>, SeccompError> {
    use std::io::Seek;
    let mio = |source| SeccompError::CacheIo {
        path: PathBuf::from("memfd:appmgr-seccomp"),
        source,
    };
    let fd = rustix::fs::memfd_create("appmgr-seccomp", rustix::fs::MemfdFlags::CLOEXEC)
        .map_err(|e| mio(std::io::Error::from(e)))?;
    let mut f = std::fs::File::from(fd);
    ctx.export_bpf(&f).map_err(lib("export"))?;
    f.rewind().map_err(mio)?;
    let mut buf = Vec::new();
    f.read_to_end(&mut buf).map_err(mio)?;
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(devel: bool, multiarch: bool) -> SeccompPlan {
        SeccompPlan::new("/nonexistent", devel, multiarch, false, false)
    }

    /// An unknown name in the list is a hard failure, not a skipped rule.
    #[test]
    fn every_listed_name_resolves_on_x86_64_and_aarch64() {
        let list = parse_list(BLOCKED_LIST).unwrap();
        assert!(list.len() > 40);
        check_list_names(&list).unwrap();
        let bogus = parse_list("not_a_syscall EPERM\n").unwrap();
        assert!(matches!(
            check_list_names(&bogus),
            Err(SeccompError::UnknownSyscall { .. })
        ));
    }

    #[test]
    fn required_syscalls_are_listed() {
        let list = parse_list(BLOCKED_LIST).unwrap();
        let names: Vec<&str> = list.iter().map(|b| b.name.as_str()).collect();
        for n in [
            "unshare",
            "setns",
            "fsopen",
            "fsmount",
            "open_tree",
            "move_mount",
            "fspick",
            "fsconfig",
            "mount_setattr",
            "mount",
            "umount2",
            "pivot_root",
            "chroot",
            "ptrace",
            "process_vm_readv",
            "process_vm_writev",
            "perf_event_open",
            "keyctl",
            "add_key",
            "request_key",
            "bpf",
            "userfaultfd",
            "io_uring_setup",
            "kexec_load",
            "init_module",
            "finit_module",
            "syslog",
            "acct",
            "quotactl",
            "mbind",
            "set_mempolicy",
            "get_mempolicy",
            "migrate_pages",
            "move_pages",
            "set_mempolicy_home_node",
            "quotactl_fd",
            "open_tree_attr",
            "statmount",
            "listmount",
            "listns",
            "lsm_set_self_attr",
            "pidfd_getfd",
            "process_mrelease",
        ] {
            assert!(names.contains(&n), "{n} missing from blocked.list");
        }
        let devel: Vec<&str> = list
            .iter()
            .filter(|b| b.devel)
            .map(|b| b.name.as_str())
            .collect();
        assert_eq!(devel, ["ptrace", "perf_event_open"]);
    }

    /// The drift check: a syscall libseccomp knows on x86_64 or aarch64 (or the table of
    /// newer ones does) must be blocked, filtered by argument, or allowed with a reason.
    /// A new libseccomp or a new table entry makes this fail until someone decides.
    #[test]
    fn every_known_syscall_is_blocked_filtered_or_allowed_with_a_reason() {
        let blocked = parse_list(BLOCKED_LIST).unwrap();
        let allowed = parse_allowed_list(ALLOWED_LIST).unwrap();
        for arch in [ScmpArch::X8664, ScmpArch::Aarch64] {
            let known = known_syscalls(arch);
            assert!(
                known.len() > 280,
                "{arch:?}: libseccomp knows only {known:?}"
            );
            for n in ["read", "mount", "openat", "mseal", "listmount"] {
                assert!(known.iter().any(|k| k == n), "{arch:?}: {n} not enumerated");
            }
        }
        let missing = unclassified_syscalls(&blocked, &allowed);
        assert!(
            missing.is_empty(),
            "neither blocked (blocked.list, seccomp.rs) nor allowed with a reason \
             (allowed.list): {missing:?}"
        );
        // Every allowed name exists somewhere (no stale entries), and so does every
        // argument-filtered one.
        let known: Vec<String> = [ScmpArch::X8664, ScmpArch::Aarch64]
            .into_iter()
            .flat_map(known_syscalls)
            .collect();
        for name in allowed
            .iter()
            .map(|a| a.name.as_str())
            .chain(ARGUMENT_RULES.iter().copied())
        {
            assert!(known.iter().any(|k| k == name), "{name} is no syscall");
        }
        // The check itself notices a gap and a contradiction.
        let fewer: Vec<AllowedSyscall> = allowed
            .iter()
            .filter(|a| a.name != "mseal")
            .cloned()
            .collect();
        assert_eq!(unclassified_syscalls(&blocked, &fewer), ["mseal"]);
        let mut both = allowed.clone();
        both.push(AllowedSyscall {
            name: "mount".into(),
            reason: "r".into(),
        });
        assert_eq!(
            unclassified_syscalls(&blocked, &both),
            ["mount (allowed and blocked)"]
        );
    }

    /// Blocked syscalls libseccomp cannot name still get a rule, by number, in the filter
    /// the launcher builds (the host's architecture).
    #[test]
    fn blocked_syscalls_are_in_the_native_filter_even_without_a_libseccomp_name() {
        let native = ScmpArch::native();
        if ![ScmpArch::X8664, ScmpArch::Aarch64].contains(&native) {
            return; // not a supported architecture: the list is not for it
        }
        for multiarch in [false, true] {
            let ctx = build_filter(&plan(false, multiarch), native).unwrap();
            let mut f = tempfile::tempfile().unwrap();
            ctx.export_pfc(&f).unwrap();
            use std::io::Seek;
            f.rewind().unwrap();
            let mut pfc = String::new();
            f.read_to_string(&mut pfc).unwrap();
            for b in parse_list(BLOCKED_LIST).unwrap() {
                let nr = match resolve(&b.name, native).unwrap() {
                    Resolved::Named => ScmpSyscall::from_name_by_arch(&b.name, native)
                        .unwrap()
                        .as_raw_syscall(),
                    Resolved::Number(nr) => nr,
                };
                assert!(
                    pfc.contains(&format!("if ($syscall == {nr})")),
                    "{} ({nr}) not in the filter (multiarch {multiarch})",
                    b.name
                );
            }
        }
    }

    #[test]
    fn allow_list_parser_is_strict() {
        assert!(parse_allowed_list("read\n").is_err(), "no reason");
        assert!(parse_allowed_list("read   \n").is_err(), "blank reason");
        assert!(parse_allowed_list("Read why\n").is_err());
        assert!(parse_allowed_list("read why\nread again\n").is_err());
        let ok = parse_allowed_list("# c\n\nread  plain I/O\n").unwrap();
        assert_eq!(
            ok,
            [AllowedSyscall {
                name: "read".into(),
                reason: "plain I/O".into()
            }]
        );
    }

    #[test]
    fn list_parser_is_strict() {
        assert!(parse_list("mount EACCES\n").is_err());
        assert!(parse_list("mount\n").is_err());
        assert!(parse_list("mount EPERM devl\n").is_err());
        assert!(parse_list("mount EPERM\nmount EPERM\n").is_err());
        assert!(parse_list("Mount EPERM\n").is_err());
    }

    #[test]
    fn filters_build_for_both_arches_and_all_flags() {
        for arch in [ScmpArch::X8664, ScmpArch::Aarch64] {
            for (d, m) in [(false, false), (true, false), (false, true), (true, true)] {
                for v in [Variant::Plain, Variant::JobControlled] {
                    let ctx = build_filter_variant(&plan(d, m), arch, v).unwrap();
                    let f = tempfile::tempfile().unwrap();
                    ctx.export_bpf(&f).unwrap();
                    assert!(f.metadata().unwrap().len() > 0);
                }
            }
        }
    }

    #[test]
    fn cache_key_depends_on_grant() {
        let a = plan(false, false).cache_file;
        assert_eq!(a, plan(false, false).cache_file);
        assert_ne!(a, plan(true, false).cache_file);
        assert_ne!(a, plan(false, true).cache_file);
        assert_ne!(
            a,
            SeccompPlan::new("/nonexistent", false, false, true, false).cache_file
        );
    }

    /// The job-controlled variant is a different program in its own cache file next to
    /// the plain one: a plain launch never loads it, nor the other way round.
    #[test]
    fn terminal_variant_has_its_own_program_and_cache_file() {
        let t = tempfile::tempdir().unwrap();
        let p = SeccompPlan::new(t.path().to_str().unwrap(), false, false, false, false);
        let tty = Variant::JobControlled.cache_file(&p);
        assert_eq!(Variant::Plain.cache_file(&p), p.cache_file);
        assert_eq!(tty.parent(), p.cache_file.parent());
        assert_ne!(tty, p.cache_file);
        let plain = load_or_compile_variant(&p, Variant::Plain).unwrap();
        let job = load_or_compile_variant(&p, Variant::JobControlled).unwrap();
        assert_ne!(plain, job);
        assert_eq!(std::fs::read(&p.cache_file).unwrap(), plain);
        assert_eq!(std::fs::read(&tty).unwrap(), job);
    }

    #[test]
    fn cache_is_written_once_and_reused() {
        let t = tempfile::tempdir().unwrap();
        let dir = t.path().join("cache");
        let p = SeccompPlan::new(dir.to_str().unwrap(), false, false, false, false);
        let a = load_or_compile(&p).unwrap();
        let m1 = std::fs::metadata(&p.cache_file).unwrap();
        let b = load_or_compile(&p).unwrap();
        let m2 = std::fs::metadata(&p.cache_file).unwrap();
        assert_eq!(a, b);
        assert_eq!(m1.ino(), m2.ino(), "the cached program is not rewritten");
        // a cache file others can write is refused
        std::fs::set_permissions(&p.cache_file, std::fs::Permissions::from_mode(0o666)).unwrap();
        assert!(matches!(
            load_or_compile(&p),
            Err(SeccompError::Cache { .. })
        ));
    }

    #[test]
    fn unwritable_cache_falls_back_to_memory() {
        // /proc is not writable: the program is built and used without a cache.
        let p = SeccompPlan::new("/proc/appmgr-no-cache", false, false, false, false);
        let bpf = load_or_compile(&p).unwrap();
        assert!(!bpf.is_empty() && bpf.chunks_exact(8).remainder().is_empty());
    }
}
