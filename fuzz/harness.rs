//! The fuzz harnesses, shared by the cargo-fuzz targets and by the ordinary test that runs
//! every corpus file (`appmgr/cli/tests/fuzz_corpus.rs`). Each must never panic, whatever
//! the input; they also check invariants a parser must keep.

use std::io::Cursor;

/// A fixed trust store for the bundle harness: fuzzed bundles are signed by nobody, so
/// this exercises the container and signature paths; valid seeds are signed with the key
/// whose public half is `SEED_PUBLIC_PEM`.
pub const SEED_PUBLIC_PEM: &str = include_str!("corpus-key.pub");

pub fn manifest(data: &[u8]) {
    for signed in [false, true] {
        if let Ok(m) = appmgr_bundle::Manifest::parse(data, signed) {
            // A parsed manifest's IDs are always path-safe.
            assert!(!m.id.as_str().contains('/') && !m.id.as_str().contains(".."));
            if let Some(p) = &m.payload {
                let again = m.to_signed_bytes(p.clone(), m.sbom.clone());
                assert_eq!(appmgr_bundle::Manifest::parse(&again, true).unwrap(), m);
            }
        }
    }
}

pub fn bundle(data: &[u8]) {
    let dir = std::env::temp_dir().join(format!("appmgr-fuzz-{}", std::process::id()));
    let _ = std::fs::create_dir_all(dir.join("trust.d"));
    let _ = std::fs::write(dir.join("trust.d/seed.pub"), SEED_PUBLIC_PEM);
    let file = dir.join("input.bundle");
    std::fs::write(&file, data).unwrap();
    let trust = appmgr_bundle::TrustStore::load(&dir).unwrap();
    for t in [None, Some(&trust)] {
        if let Ok(b) = appmgr_bundle::open(&file, t) {
            let _ = b.import(&mut appmgr_bundle::DiscardSink);
        }
    }
}

/// An SBOM document: parsed or refused, never a panic; what parses carries only
/// printable, bounded names, and every version that is a Debian version orders totally.
pub fn sbom(data: &[u8]) {
    if let Ok(packages) = appmgr_bundle::sbom::parse(data) {
        for p in &packages {
            assert!(!p.name.is_empty() && p.name.len() <= 1024);
            assert!(!appmgr_types::has_unsafe_chars(&p.name));
        }
        let versions: Vec<_> = packages.iter().filter_map(|p| p.deb_version()).collect();
        for a in &versions {
            assert_eq!(a.cmp(a), std::cmp::Ordering::Equal);
            for b in &versions {
                assert_eq!(a.cmp(b), b.cmp(a).reverse());
            }
        }
    }
}

pub fn payload(data: &[u8]) {
    let limits = appmgr_bundle::Limits {
        max_entries: 10_000,
        max_installed_size: 16 << 20,
        max_stream_bytes: 64 << 20,
    };
    let _ =
        appmgr_bundle::parse_payload(Cursor::new(data), limits, &mut appmgr_bundle::DiscardSink);
}

pub fn policy(data: &[u8]) {
    let set = appmgr_policy::PolicySet::from_sources([("fuzz.toml".to_string(), data.to_vec())]);
    if let Ok(set) = set {
        let id = appmgr_types::AppId::new("org.example.App").unwrap();
        let perms = appmgr_types::Permissions::default();
        let res = appmgr_types::Resources::default();
        let req = appmgr_policy::Request {
            app: &id,
            permissions: &perms,
            resources: &res,
        };
        let _ = set.evaluate(&req, &appmgr_policy::BoardFacts::default());
    }
}

pub fn board(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = appmgr_board::BoardProfile::parse(std::path::Path::new("fuzz.toml"), text);
    }
}
