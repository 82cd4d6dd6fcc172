//! Device access, confined by the kernel: exactly the device numbers an app's sandbox
//! provides may be opened from the app's cgroup, whatever node appears in its tree.
//!
//! - v1: the `devices` controller. `devices.deny` = `a` removes everything, then one
//!   `devices.allow` line per rule (`c 1:3 rw`, `c 136:* rw`).
//! - v2: there is no interface file; the kernel runs a `BPF_PROG_TYPE_CGROUP_DEVICE`
//!   program attached to the cgroup on every open and mknod of a device node. This module
//!   builds that program as plain instructions ([`bpf_program`], pure, unit-tested); the
//!   sandbox launcher loads and attaches it with `bpf(2)` (the one place with `unsafe`
//!   system calls) before the app joins the cgroup.
//!
//! Access is read and write, never `mknod` (the app has no `CAP_MKNOD` anyway): a denied
//! open fails with `EPERM`, even for root.

use crate::spec::{Controller, Setting};
use crate::CgroupError;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::path::Path;

/// Character or block device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeviceKind {
    Char,
    Block,
}

/// One device number (or every minor of a major) the app may open read-write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceRule {
    pub kind: DeviceKind,
    pub major: u32,
    /// `None`: every minor of `major` (the private devpts instance's `pts/N`).
    pub minor: Option<u32>,
}

impl DeviceRule {
    pub fn char(major: u32, minor: Option<u32>) -> Self {
        DeviceRule {
            kind: DeviceKind::Char,
            major,
            minor,
        }
    }

    /// The rule for the device node at `path` (not following a final symlink): its type
    /// and device number, read from the inode. Anything but a character or block device
    /// is an error naming the path.
    pub fn of_node(path: &Path) -> Result<Self, CgroupError> {
        let st = rustix::fs::lstat(path).map_err(|e| CgroupError::Read {
            path: path.to_path_buf(),
            source: e.into(),
        })?;
        let kind = match rustix::fs::FileType::from_raw_mode(st.st_mode) {
            rustix::fs::FileType::CharacterDevice => DeviceKind::Char,
            rustix::fs::FileType::BlockDevice => DeviceKind::Block,
            _ => {
                return Err(CgroupError::Parse {
                    path: path.to_path_buf(),
                    value: "not a device node".into(),
                })
            }
        };
        Ok(DeviceRule {
            kind,
            major: rustix::fs::major(st.st_rdev),
            minor: Some(rustix::fs::minor(st.st_rdev)),
        })
    }
}

impl fmt::Display for DeviceRule {
    /// The v1 `devices.allow` line: `c 1:3 rw`, `c 136:* rw`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let t = match self.kind {
            DeviceKind::Char => 'c',
            DeviceKind::Block => 'b',
        };
        match self.minor {
            Some(m) => write!(f, "{t} {}:{m} rw", self.major),
            None => write!(f, "{t} {}:* rw", self.major),
        }
    }
}

/// v1: deny everything, then allow each rule (one write per line: the kernel parses one
/// rule per write).
pub(crate) fn v1(rules: &[DeviceRule]) -> Vec<Setting> {
    let mut out = vec![Setting::text(Controller::Devices, "devices.deny", "a")];
    for r in rules {
        out.push(Setting::text(Controller::Devices, "devices.allow", r));
    }
    out
}

// eBPF encoding (include/uapi/linux/bpf.h, bpf_common.h).
const BPF_LDX_MEM_W: u8 = 0x61; // BPF_LDX | BPF_MEM | BPF_W
const BPF_MOV64_X: u8 = 0xbf; // BPF_ALU64 | BPF_MOV | BPF_X
const BPF_MOV64_K: u8 = 0xb7; // BPF_ALU64 | BPF_MOV | BPF_K
const BPF_AND64_K: u8 = 0x57; // BPF_ALU64 | BPF_AND | BPF_K
const BPF_RSH64_K: u8 = 0x77; // BPF_ALU64 | BPF_RSH | BPF_K
const BPF_JNE_K: u8 = 0x55; // BPF_JMP | BPF_JNE | BPF_K
const BPF_JSET_K: u8 = 0x45; // BPF_JMP | BPF_JSET | BPF_K
const BPF_EXIT: u8 = 0x95; // BPF_JMP | BPF_EXIT
                           // struct bpf_cgroup_dev_ctx: access_type = (access << 16) | type; then major, minor.
const BPF_DEVCG_ACC_MKNOD: i32 = 1;
const BPF_DEVCG_DEV_BLOCK: i32 = 1;
const BPF_DEVCG_DEV_CHAR: i32 = 2;

/// One instruction as the kernel reads it (little- or big-endian like the host).
fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> u64 {
    let regs = if cfg!(target_endian = "little") {
        (src << 4) | (dst & 0xf)
    } else {
        (dst << 4) | (src & 0xf)
    };
    let mut b = [0u8; 8];
    b[0] = code;
    b[1] = regs;
    b[2..4].copy_from_slice(&off.to_ne_bytes());
    b[4..8].copy_from_slice(&imm.to_ne_bytes());
    u64::from_ne_bytes(b)
}

/// The v2 device program (`BPF_PROG_TYPE_CGROUP_DEVICE`): returns 1 (allow) when the
/// device's type, major and minor match a rule and the access is read and/or write, 0
/// (the kernel answers `EPERM`) otherwise. Registers: r2 type, r3 access, r4 major, r5
/// minor. Each rule is a run of compare-and-skip instructions ending in `return 1`.
pub fn bpf_program(rules: &[DeviceRule]) -> Vec<u64> {
    let mut p = vec![
        insn(BPF_LDX_MEM_W, 2, 1, 0, 0), // r2 = ctx->access_type
        insn(BPF_MOV64_X, 3, 2, 0, 0),   // r3 = r2
        insn(BPF_AND64_K, 2, 0, 0, 0xffff),
        insn(BPF_RSH64_K, 3, 0, 0, 16),
        insn(BPF_LDX_MEM_W, 4, 1, 4, 0), // r4 = ctx->major
        insn(BPF_LDX_MEM_W, 5, 1, 8, 0), // r5 = ctx->minor
        // mknod is never allowed
        insn(BPF_JSET_K, 3, 0, 0, 0), // placeholder, patched below
    ];
    let mknod_at = p.len() - 1;
    let mut rule_code = Vec::new();
    for r in rules {
        let t = match r.kind {
            DeviceKind::Char => BPF_DEVCG_DEV_CHAR,
            DeviceKind::Block => BPF_DEVCG_DEV_BLOCK,
        };
        let n: i16 = if r.minor.is_some() { 5 } else { 4 };
        // Each compare skips the rest of this rule (to the next rule's first insn).
        let mut block = vec![
            insn(BPF_JNE_K, 2, 0, n - 1, t),
            insn(BPF_JNE_K, 4, 0, n - 2, r.major as i32),
        ];
        if let Some(m) = r.minor {
            block.push(insn(BPF_JNE_K, 5, 0, 2, m as i32));
        }
        block.push(insn(BPF_MOV64_K, 0, 0, 0, 1));
        block.push(insn(BPF_EXIT, 0, 0, 0, 0));
        debug_assert_eq!(block.len(), n as usize);
        rule_code.extend(block);
    }
    // JSET jumps over every rule to the final deny.
    p[mknod_at] = insn(
        BPF_JSET_K,
        3,
        0,
        rule_code.len() as i16,
        BPF_DEVCG_ACC_MKNOD,
    );
    p.extend(rule_code);
    p.push(insn(BPF_MOV64_K, 0, 0, 0, 0));
    p.push(insn(BPF_EXIT, 0, 0, 0, 0));
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tiny interpreter for exactly the instructions `bpf_program` emits, so the
    /// program's logic is checked without a kernel (the privileged and qemu tests load it).
    fn run(prog: &[u64], access_type: u32, major: u32, minor: u32) -> u64 {
        let ctx = [access_type, major, minor];
        let mut r = [0u64; 11];
        let mut pc = 0usize;
        loop {
            let b = prog[pc].to_ne_bytes();
            let (dst, src) = if cfg!(target_endian = "little") {
                ((b[1] & 0xf) as usize, (b[1] >> 4) as usize)
            } else {
                ((b[1] >> 4) as usize, (b[1] & 0xf) as usize)
            };
            let off = i16::from_ne_bytes([b[2], b[3]]);
            let imm = i32::from_ne_bytes([b[4], b[5], b[6], b[7]]);
            pc += 1;
            match b[0] {
                BPF_LDX_MEM_W => {
                    assert_eq!(src, 1);
                    r[dst] = ctx[off as usize / 4] as u64;
                }
                BPF_MOV64_X => r[dst] = r[src],
                BPF_MOV64_K => r[dst] = imm as i64 as u64,
                BPF_AND64_K => r[dst] &= imm as i64 as u64,
                BPF_RSH64_K => r[dst] >>= imm,
                BPF_JNE_K => {
                    if r[dst] != imm as i64 as u64 {
                        pc = (pc as isize + off as isize) as usize;
                    }
                }
                BPF_JSET_K => {
                    if r[dst] & (imm as i64 as u64) != 0 {
                        pc = (pc as isize + off as isize) as usize;
                    }
                }
                BPF_EXIT => return r[0],
                c => panic!("unexpected opcode {c:#x}"),
            }
        }
    }

    const READ: u32 = 2 << 16;
    const WRITE: u32 = 4 << 16;
    const MKNOD: u32 = 1 << 16;
    const CHAR: u32 = 2;
    const BLOCK: u32 = 1;

    #[test]
    fn program_allows_exactly_the_rules() {
        let rules = [
            DeviceRule::char(1, Some(3)),
            DeviceRule::char(136, None),
            DeviceRule {
                kind: DeviceKind::Block,
                major: 8,
                minor: Some(0),
            },
        ];
        let p = bpf_program(&rules);
        assert_eq!(run(&p, CHAR | READ | WRITE, 1, 3), 1);
        assert_eq!(run(&p, CHAR | READ, 136, 77), 1);
        assert_eq!(run(&p, BLOCK | WRITE, 8, 0), 1);
        // a different minor, major, or type; mknod of an allowed number
        assert_eq!(run(&p, CHAR | READ, 1, 5), 0);
        assert_eq!(run(&p, CHAR | READ, 137, 0), 0);
        assert_eq!(run(&p, BLOCK | READ, 1, 3), 0);
        assert_eq!(run(&p, CHAR | READ, 8, 0), 0);
        assert_eq!(run(&p, CHAR | MKNOD, 1, 3), 0);
        assert_eq!(run(&p, CHAR | MKNOD | READ, 136, 1), 0);
        // no rules: nothing
        assert_eq!(run(&bpf_program(&[]), CHAR | READ, 1, 3), 0);
    }

    #[test]
    fn v1_lines() {
        let s = v1(&[DeviceRule::char(1, Some(3)), DeviceRule::char(136, None)]);
        let lines: Vec<String> = s
            .iter()
            .map(|s| format!("{} {:?}", s.file, s.value))
            .collect();
        assert_eq!(
            lines,
            [
                "devices.deny Text(\"a\")",
                "devices.allow Text(\"c 1:3 rw\")",
                "devices.allow Text(\"c 136:* rw\")"
            ]
        );
    }

    #[test]
    fn rule_of_a_node() {
        let r = DeviceRule::of_node(Path::new("/dev/null")).unwrap();
        assert_eq!(r, DeviceRule::char(1, Some(3)));
        assert!(DeviceRule::of_node(Path::new("/etc/hostname")).is_err());
    }
}
