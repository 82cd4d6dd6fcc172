//! Mangled policy files (truncated at every offset, bytes flipped) are refused or
//! accepted, never a panic; and an error always names the file.

use appmgr_policy::PolicySet;
use std::path::Path;

fn shipped() -> Vec<Vec<u8>> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../policies");
    let mut v = Vec::new();
    for sub in ["policies.d", "examples"] {
        for e in std::fs::read_dir(root.join(sub)).unwrap() {
            v.push(std::fs::read(e.unwrap().path()).unwrap());
        }
    }
    v
}

fn load(bytes: &[u8]) {
    if let Err(e) = PolicySet::from_sources([("m.toml".to_string(), bytes.to_vec())]) {
        let msg = e.to_string();
        assert!(msg.starts_with("m.toml:"), "{msg}");
        assert!(!appmgr_types::has_unsafe_chars(&msg), "{msg:?}");
    }
}

#[test]
fn truncations_and_bit_flips_never_panic() {
    for f in shipped() {
        for cut in 0..f.len() {
            load(&f[..cut]);
        }
        // A deterministic spread of single-byte corruptions.
        for (i, x) in [0x00u8, 0xff, b'"', b'[', b'=', 0x1b, b'\n']
            .iter()
            .enumerate()
        {
            let mut pos = i * 7;
            while pos < f.len() {
                let mut m = f.clone();
                m[pos] = *x;
                load(&m);
                pos += 13;
            }
        }
    }
}

#[test]
fn hostile_shapes_are_bounded() {
    load(&vec![b'['; 100_000]);
    load("a = ".repeat(10_000).as_bytes());
    load(format!("[[rule]]\napps = [{}]\n", "\"a.b\",".repeat(10_000)).as_bytes());
    let big = vec![b'#'; appmgr_policy::MAX_FILE_SIZE + 1];
    assert!(PolicySet::from_sources([("big.toml".to_string(), big)]).is_err());
}
