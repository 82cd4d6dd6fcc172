//! Hostile bundles: every one must be refused with an integrity error (exit class 3),
//! without panicking, and without the sink keeping anything (the sink here records what
//! it was given so tests can assert a refused import never completed).

use appmgr_bundle::container;
use appmgr_bundle::keys;
use appmgr_bundle::manifest::{Compression, Manifest, PayloadInfo};
use appmgr_bundle::{open, verify, BundleError, PayloadSink, RelPath, SinkError, TrustStore};
use appmgr_types::{ErrorClass, Glob};
use sha2::{Digest, Sha256};
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

const APP: &str = r#"id = "org.example.Hello"
kind = "app"
version = "1.0.0"
arch = "x86_64"
branch = "stable"
runtime = "org.example.Platform/x86_64/1"
command = "hello"
"#;

struct Fx {
    dir: tempfile::TempDir,
    key: PathBuf,
    cfg: PathBuf,
}

fn fixture() -> Fx {
    let dir = tempfile::tempdir().unwrap();
    let (key, public) = keys::generate(&dir.path().join("vendor")).unwrap();
    let cfg = dir.path().join("etc");
    TrustStore::add(&cfg, &public, &[]).unwrap();
    Fx { dir, key, cfg }
}

impl Fx {
    fn trust(&self) -> TrustStore {
        TrustStore::load(&self.cfg).unwrap()
    }
    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

#[derive(Debug, PartialEq)]
enum Got {
    Dir(String),
    File(String, bool, Vec<u8>),
    Link(String, String),
    Hard(String, String),
}

#[derive(Default)]
struct Collect(Vec<Got>);

impl PayloadSink for Collect {
    fn directory(&mut self, p: &RelPath) -> Result<(), SinkError> {
        self.0.push(Got::Dir(p.to_string()));
        Ok(())
    }
    fn file(&mut self, p: &RelPath, x: bool, size: u64, r: &mut dyn Read) -> Result<(), SinkError> {
        let mut v = Vec::new();
        r.read_to_end(&mut v)?;
        assert_eq!(v.len() as u64, size);
        self.0.push(Got::File(p.to_string(), x, v));
        Ok(())
    }
    fn symlink(&mut self, p: &RelPath, t: &str) -> Result<(), SinkError> {
        self.0.push(Got::Link(p.to_string(), t.to_string()));
        Ok(())
    }
    fn hardlink(&mut self, p: &RelPath, t: &RelPath) -> Result<(), SinkError> {
        self.0.push(Got::Hard(p.to_string(), t.to_string()));
        Ok(())
    }
}

/// One raw ustar member with full control over every field (the tar crate refuses to
/// write `..` names, which is exactly what these tests need).
fn raw_entry(name: &[u8], typeflag: u8, link: &[u8], data: &[u8], mode: u32) -> Vec<u8> {
    let mut h = [0u8; 512];
    h[..name.len()].copy_from_slice(name);
    h[100..108].copy_from_slice(format!("{mode:07o}\0").as_bytes());
    h[108..116].copy_from_slice(b"0000000\0");
    h[116..124].copy_from_slice(b"0000000\0");
    h[124..136].copy_from_slice(format!("{:011o}\0", data.len()).as_bytes());
    h[136..148].copy_from_slice(b"00000000000\0");
    h[156] = typeflag;
    h[157..157 + link.len()].copy_from_slice(link);
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    h[148..156].copy_from_slice(b"        ");
    let sum: u32 = h.iter().map(|b| *b as u32).sum();
    h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    let mut out = h.to_vec();
    out.extend_from_slice(data);
    out.resize(out.len() + container::padding(data.len() as u64), 0);
    out
}

fn end_of_tar(mut v: Vec<u8>) -> Vec<u8> {
    v.extend_from_slice(&[0u8; 1024]);
    v
}

/// Signs `manifest_input` + a payload given as raw bytes, bypassing the writer's checks.
/// `entries`/`installed` are what the manifest declares.
fn sign_raw(
    fx: &Fx,
    input: &str,
    payload: &[u8],
    compression: Compression,
    entries: u64,
    installed: u64,
) -> Vec<u8> {
    let m = Manifest::parse(input.as_bytes(), false).unwrap();
    let info = PayloadInfo {
        sha256: hex::encode(Sha256::digest(payload)),
        size: payload.len() as u64,
        compression,
        installed_size: installed,
        entries,
    };
    let bytes = m.to_signed_bytes(info, None);
    let sig = keys::sign(&keys::load_secret(&fx.key).unwrap(), &bytes);
    assemble(&bytes, &sig, payload, compression)
}

fn assemble(manifest: &[u8], sig: &[u8], payload: &[u8], c: Compression) -> Vec<u8> {
    assemble_with_sbom(manifest, sig, None, payload, c)
}

fn assemble_with_sbom(
    manifest: &[u8],
    sig: &[u8],
    sbom: Option<&[u8]>,
    payload: &[u8],
    c: Compression,
) -> Vec<u8> {
    let mut out = Vec::new();
    let payload_name = match c {
        Compression::None => container::PAYLOAD_NAME,
        Compression::Zstd => container::PAYLOAD_ZST_NAME,
    };
    let members = [
        Some((container::MANIFEST_NAME, manifest)),
        Some((container::SIGNATURE_NAME, sig)),
        sbom.map(|s| (container::SBOM_NAME, s)),
        Some((payload_name, payload)),
    ];
    for (name, data) in members.into_iter().flatten() {
        container::write_header(&mut out, name, data.len() as u64).unwrap();
        out.extend_from_slice(data);
        container::write_padding(&mut out, data.len() as u64).unwrap();
    }
    container::write_trailer(&mut out).unwrap();
    out
}

fn import_bytes(fx: &Fx, bytes: &[u8]) -> Result<Vec<Got>, BundleError> {
    import_with(fx, &fx.trust(), bytes)
}

fn import_with(fx: &Fx, trust: &TrustStore, bytes: &[u8]) -> Result<Vec<Got>, BundleError> {
    let p = fx.path("b.bundle");
    fs::write(&p, bytes).unwrap();
    let mut sink = Collect::default();
    open(&p, Some(trust))?.import(&mut sink)?;
    Ok(sink.0)
}

fn assert_integrity(r: Result<Vec<Got>, BundleError>, what: &str) -> String {
    match r {
        Ok(got) => panic!("{what}: accepted, sink got {got:?}"),
        Err(e) => {
            assert_eq!(
                e.class(),
                ErrorClass::Integrity,
                "{what}: wrong class for {e}"
            );
            let msg = e.to_string();
            assert!(
                !msg.contains('\n'),
                "{what}: message must be one line: {msg}"
            );
            msg
        }
    }
}

fn sample_tree(root: &Path) {
    fs::create_dir_all(root.join("bin")).unwrap();
    fs::create_dir_all(root.join("share/deep/er")).unwrap();
    fs::write(root.join("bin/hello"), b"#!/bin/sh\necho hi\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(root.join("bin/hello"), fs::Permissions::from_mode(0o4777)).unwrap();
    fs::write(root.join("share/empty"), b"").unwrap();
    fs::write(root.join("share/deep/er/data"), vec![7u8; 70_000]).unwrap();
    fs::hard_link(
        root.join("share/deep/er/data"),
        root.join("share/data-again"),
    )
    .unwrap();
    std::os::unix::fs::symlink("deep/er/data", root.join("share/link")).unwrap();
    std::os::unix::fs::symlink("/usr/lib/libc.so.6", root.join("share/abs-link")).unwrap();
    let long = "x".repeat(120);
    fs::write(root.join("share").join(&long), b"long name").unwrap();
}

fn good_bundle(fx: &Fx, compression: Compression) -> PathBuf {
    let root = fx.path("root");
    if !root.exists() {
        sample_tree(&root);
    }
    let m = fx.path("m.toml");
    fs::write(&m, APP).unwrap();
    let out = fx.path(match compression {
        Compression::None => "good.bundle",
        Compression::Zstd => "good-zst.bundle",
    });
    appmgr_bundle::create(
        &m,
        appmgr_bundle::Source::Root(&root),
        &fx.key,
        &out,
        compression,
        None,
    )
    .unwrap();
    out
}

#[test]
fn roundtrip_preserves_tree_and_canonicalizes_modes() {
    let fx = fixture();
    for c in [Compression::None, Compression::Zstd] {
        let b = good_bundle(&fx, c);
        let (m, signer, summary) = verify(&b, &fx.trust()).unwrap();
        assert_eq!(m.id.as_str(), "org.example.Hello");
        assert_eq!(signer, "vendor");
        let got = import_bytes(&fx, &fs::read(&b).unwrap()).unwrap();
        assert_eq!(summary.entries, got.len() as u64);
        assert!(got.contains(&Got::File(
            "bin/hello".into(),
            true,
            b"#!/bin/sh\necho hi\n".to_vec()
        )));
        assert!(got.contains(&Got::File("share/empty".into(), false, vec![])));
        // The walk is sorted, so `data-again` is the first name and `deep/er/data` the link.
        assert!(got.contains(&Got::Hard(
            "share/deep/er/data".into(),
            "share/data-again".into()
        )));
        assert!(got.contains(&Got::Link("share/link".into(), "deep/er/data".into())));
        assert!(got.contains(&Got::Link(
            "share/abs-link".into(),
            "/usr/lib/libc.so.6".into()
        )));
        assert!(got.contains(&Got::File(
            format!("share/{}", "x".repeat(120)),
            false,
            b"long name".to_vec()
        )));
        // Parents before children.
        let pos = |g: &Got| got.iter().position(|x| x == g).unwrap();
        assert!(pos(&Got::Dir("share/deep".into())) < pos(&Got::Dir("share/deep/er".into())));
    }
    // Deterministic: the same tree gives the same payload digest.
    let a = verify(&good_bundle(&fx, Compression::Zstd), &fx.trust())
        .unwrap()
        .2;
    let b = verify(&good_bundle(&fx, Compression::Zstd), &fx.trust())
        .unwrap()
        .2;
    assert_eq!(a.payload_sha256, b.payload_sha256);
}

#[test]
fn every_flipped_byte_is_detected() {
    let fx = fixture();
    let fxroot = fx.path("root");
    fs::create_dir_all(fxroot.join("bin")).unwrap();
    fs::write(fxroot.join("bin/hello"), b"hi").unwrap();
    let m = fx.path("m.toml");
    fs::write(&m, APP).unwrap();
    for c in [Compression::None, Compression::Zstd] {
        let out = fx.path("small.bundle");
        appmgr_bundle::create(
            &m,
            appmgr_bundle::Source::Root(&fxroot),
            &fx.key,
            &out,
            c,
            None,
        )
        .unwrap();
        let good = fs::read(&out).unwrap();
        let trust = fx.trust();
        assert!(import_with(&fx, &trust, &good).is_ok());
        for i in 0..good.len() {
            let mut bad = good.clone();
            bad[i] ^= 0x01;
            assert_integrity(
                import_with(&fx, &trust, &bad),
                &format!("flip at {i} ({c:?})"),
            );
        }
    }
}

#[test]
fn truncation_at_every_offset_empty_and_random_are_refused() {
    let fx = fixture();
    let good = fs::read(good_bundle(&fx, Compression::Zstd)).unwrap();
    let step = (good.len() / 2000).max(1);
    for n in (0..good.len()).step_by(step) {
        assert_integrity(import_bytes(&fx, &good[..n]), &format!("truncated at {n}"));
    }
    assert_integrity(import_bytes(&fx, &good[..good.len() - 1]), "last byte cut");
    assert_integrity(import_bytes(&fx, b""), "empty");
    use rand::RngCore;
    let mut rng = rand::thread_rng();
    for len in [1usize, 511, 512, 4096, 100_000] {
        let mut junk = vec![0u8; len];
        rng.fill_bytes(&mut junk);
        assert_integrity(import_bytes(&fx, &junk), &format!("{len} random bytes"));
    }
    let mut padded = good.clone();
    padded.extend_from_slice(&[0u8; 512]);
    assert_integrity(import_bytes(&fx, &padded), "trailing zero block");
}

#[test]
fn untrusted_removed_and_out_of_scope_keys_are_refused() {
    let fx = fixture();
    let b = good_bundle(&fx, Compression::None);
    // Unknown key: a trust store holding another key only.
    let other = tempfile::tempdir().unwrap();
    let (_, p2) = keys::generate(&other.path().join("other")).unwrap();
    let cfg2 = other.path().join("etc");
    TrustStore::add(&cfg2, &p2, &[]).unwrap();
    let e = verify(&b, &TrustStore::load(&cfg2).unwrap()).unwrap_err();
    assert!(matches!(e, BundleError::Untrusted { .. }), "{e}");
    assert_eq!(e.class(), ErrorClass::Integrity);
    // No keys at all.
    assert!(matches!(
        verify(&b, &TrustStore::default()),
        Err(BundleError::Untrusted { .. })
    ));
    // Scoped key that does not cover the ID.
    let pubk = fx.path("vendor.pub");
    TrustStore::add(&fx.cfg, &pubk, &[Glob::new("com.other.*").unwrap()]).unwrap();
    let e = verify(&b, &fx.trust()).unwrap_err();
    assert!(matches!(e, BundleError::OutOfScope { .. }), "{e}");
    assert!(e.to_string().contains("org.example.Hello"));
    TrustStore::add(&fx.cfg, &pubk, &[Glob::new("org.example.*").unwrap()]).unwrap();
    verify(&b, &fx.trust()).unwrap();
    // Removed key.
    TrustStore::remove(&fx.cfg, "vendor").unwrap();
    assert!(matches!(
        verify(&b, &fx.trust()),
        Err(BundleError::Untrusted { .. })
    ));
}

#[test]
fn malformed_signatures_are_refused() {
    let fx = fixture();
    let good = fs::read(good_bundle(&fx, Compression::None)).unwrap();
    let b = fx.path("x.bundle");
    fs::write(&b, &good).unwrap();
    let ob = open(&b, None).unwrap();
    let manifest = ob.manifest_bytes().to_vec();
    let payload_off = 512 + manifest.len() + container::padding(manifest.len() as u64) + 1024 + 512;
    let info = ob.manifest().payload.clone().unwrap();
    let payload = good[payload_off..payload_off + info.size as usize].to_vec();
    let sig = keys::sign(&keys::load_secret(&fx.key).unwrap(), &manifest);
    assert!(import_bytes(&fx, &assemble(&manifest, &sig, &payload, Compression::None)).is_ok());
    let mut noncanon = sig;
    // s + l: add the group order to s (little-endian); strict verification refuses it.
    let l: [u8; 32] = [
        0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9, 0xde,
        0x14, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
    ];
    let mut carry = 0u16;
    for i in 0..32 {
        let s = noncanon[32 + i] as u16 + l[i] as u16 + carry;
        noncanon[32 + i] = s as u8;
        carry = s >> 8;
    }
    for (what, sig) in [
        ("all zero", vec![0u8; 64]),
        ("short", sig[..63].to_vec()),
        ("long", [&sig[..], &[0u8]].concat()),
        ("empty", vec![]),
        ("non-canonical s", noncanon.to_vec()),
        ("bit flip", {
            let mut s = sig.to_vec();
            s[10] ^= 4;
            s
        }),
    ] {
        assert_integrity(
            import_bytes(&fx, &assemble(&manifest, &sig, &payload, Compression::None)),
            what,
        );
    }
}

fn hostile(fx: &Fx, payload: Vec<u8>, entries: u64, installed: u64, what: &str) -> String {
    let bytes = sign_raw(
        fx,
        APP,
        &end_of_tar(payload),
        Compression::None,
        entries,
        installed,
    );
    assert_integrity(import_bytes(fx, &bytes), what)
}

#[test]
fn hostile_archive_entries_are_refused() {
    let fx = fixture();
    let d = |n: &str| raw_entry(n.as_bytes(), b'5', b"", b"", 0o755);
    let f = |n: &str| raw_entry(n.as_bytes(), b'0', b"", b"x", 0o644);
    let sym = |n: &str, t: &str| raw_entry(n.as_bytes(), b'2', t.as_bytes(), b"", 0o777);
    let hard = |n: &str, t: &str| raw_entry(n.as_bytes(), b'1', t.as_bytes(), b"", 0o644);
    let cases: Vec<(&str, Vec<u8>, u64, u64)> = vec![
        ("dotdot", f("../evil"), 1, 1),
        ("inner dotdot", [d("a"), f("a/../../evil")].concat(), 2, 1),
        ("absolute", f("/etc/evil"), 1, 1),
        (
            "symlink parent abs",
            [sym("l", "/etc"), f("l/passwd")].concat(),
            2,
            1,
        ),
        (
            "symlink parent rel",
            [d("a"), sym("a/l", ".."), f("a/l/x")].concat(),
            3,
            1,
        ),
        ("escaping symlink", sym("up", "../../etc/shadow"), 1, 0),
        ("hardlink outside", hard("h", "../../etc/passwd"), 1, 0),
        ("hardlink absolute", hard("h", "/etc/passwd"), 1, 0),
        (
            "hardlink unseen",
            [hard("h", "later"), f("later")].concat(),
            2,
            1,
        ),
        ("hardlink to dir", [d("a"), hard("h", "a")].concat(), 2, 0),
        (
            "hardlink to symlink",
            [sym("s", "x"), hard("h", "s")].concat(),
            2,
            0,
        ),
        (
            "char device",
            raw_entry(b"null", b'3', b"", b"", 0o666),
            1,
            0,
        ),
        (
            "block device",
            raw_entry(b"sda", b'4', b"", b"", 0o660),
            1,
            0,
        ),
        ("fifo", raw_entry(b"fifo", b'6', b"", b"", 0o644), 1, 0),
        (
            "gnu sparse",
            raw_entry(b"sparse", b'S', b"", b"", 0o644),
            1,
            0,
        ),
        ("duplicate", [f("a"), f("a")].concat(), 2, 2),
        ("file then child", [f("a"), f("a/b")].concat(), 2, 2),
        ("control char", f("bad\x1bname"), 1, 1),
        ("bidi override", f("bad\u{202e}name"), 1, 1),
        ("deep path", f(&vec!["d"; 70].join("/")), 71, 1),
        (
            "non utf8",
            raw_entry(b"bad\xffname", b'0', b"", b"x", 0o644),
            1,
            1,
        ),
    ];
    for (what, payload, entries, installed) in cases {
        let msg = hostile(&fx, payload, entries, installed, what);
        assert!(
            msg.contains("unsafe") || msg.contains("malformed"),
            "{what}: {msg}"
        );
    }
}

#[test]
fn setuid_and_world_writable_modes_are_stripped() {
    let fx = fixture();
    let payload = end_of_tar(
        [
            raw_entry(b"suid", b'0', b"", b"x", 0o4755),
            raw_entry(b"sgid", b'0', b"", b"x", 0o2644),
            raw_entry(b"ww", b'0', b"", b"x", 0o666),
        ]
        .concat(),
    );
    let got = import_bytes(&fx, &sign_raw(&fx, APP, &payload, Compression::None, 3, 3)).unwrap();
    // The sink only ever learns "executable or not": modes are canonical 0755/0644.
    assert_eq!(
        got,
        vec![
            Got::File("suid".into(), true, b"x".to_vec()),
            Got::File("sgid".into(), false, b"x".to_vec()),
            Got::File("ww".into(), false, b"x".to_vec()),
        ]
    );
}

#[test]
fn bombs_and_limits_are_bounded() {
    let fx = fixture();
    // 64 MiB of zeros in one file compresses to a few KiB; the manifest declares 1 KiB.
    let big = raw_entry(b"bomb", b'0', b"", &vec![0u8; 64 << 20], 0o644);
    let compressed = zstd::encode_all(&end_of_tar(big)[..], 19).unwrap();
    let t = std::time::Instant::now();
    let bytes = sign_raw(&fx, APP, &compressed, Compression::Zstd, 1, 1024);
    let msg = assert_integrity(import_bytes(&fx, &bytes), "zstd bomb");
    assert!(msg.contains("limit"), "{msg}");
    // Bounded work: the refusal comes long before 64 MiB are produced (not a timing
    // threshold on speed, a sanity bound against unbounded loops).
    assert!(t.elapsed() < std::time::Duration::from_secs(60));
    // A sparse-looking entry declaring a huge size with no data: truncated, refused.
    let mut huge = raw_entry(b"huge", b'0', b"", b"", 0o644);
    huge[124..136].copy_from_slice(b"77777777777\0");
    let sum: u32 = {
        let mut h = huge[..512].to_vec();
        h[148..156].copy_from_slice(b"        ");
        h.iter().map(|b| *b as u32).sum()
    };
    huge[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    hostile(&fx, huge, 1, 1 << 40, "huge apparent size");
    // More entries than declared.
    let many: Vec<u8> = (0..50)
        .flat_map(|i| raw_entry(format!("f{i}").as_bytes(), b'0', b"", b"", 0o644))
        .collect();
    let msg = hostile(&fx, many, 10, 0, "more entries than declared");
    assert!(msg.contains("limit"), "{msg}");
    // Millions of entries declared: refused before reading.
    let bytes = sign_raw(
        &fx,
        APP,
        &end_of_tar(vec![]),
        Compression::None,
        5_000_000,
        0,
    );
    let msg = assert_integrity(import_bytes(&fx, &bytes), "millions declared");
    assert!(msg.contains("entries"), "{msg}");
}

#[test]
fn manifest_lies_about_counts_are_refused() {
    let fx = fixture();
    let payload = end_of_tar(raw_entry(b"a", b'0', b"", b"abc", 0o644));
    hostile(&fx, payload.clone(), 2, 3, "entries overstated");
    hostile(&fx, payload, 1, 4, "size overstated");
}

#[test]
fn file_rewritten_or_swapped_during_import() {
    let fx = fixture();
    // Larger than the reader's buffer, so the rewrite lands in bytes not yet read.
    let root = fx.path("root");
    sample_tree(&root);
    use rand::RngCore;
    let mut big = vec![0u8; 3 << 20];
    rand::thread_rng().fill_bytes(&mut big);
    fs::write(root.join("zbig"), &big).unwrap(); // sorts last: read after the first directory
    let good = good_bundle(&fx, Compression::None);
    let target = fx.path("live.bundle");

    // Rewritten in place after verification started: the digest no longer matches.
    fs::copy(&good, &target).unwrap();
    struct Rewrite(PathBuf, bool);
    impl PayloadSink for Rewrite {
        fn directory(&mut self, _: &RelPath) -> Result<(), SinkError> {
            if !self.1 {
                self.1 = true;
                use std::io::{Seek, SeekFrom, Write};
                let mut f = fs::OpenOptions::new().write(true).open(&self.0).unwrap();
                let len = f.metadata().unwrap().len();
                // Overwrite payload bytes near the end, well past what has been read.
                f.seek(SeekFrom::Start(len - 200_000)).unwrap();
                f.write_all(&vec![0x55u8; 100_000]).unwrap();
            }
            Ok(())
        }
        fn file(
            &mut self,
            _: &RelPath,
            _: bool,
            _: u64,
            r: &mut dyn Read,
        ) -> Result<(), SinkError> {
            std::io::copy(r, &mut std::io::sink())?;
            Ok(())
        }
        fn symlink(&mut self, _: &RelPath, _: &str) -> Result<(), SinkError> {
            Ok(())
        }
        fn hardlink(&mut self, _: &RelPath, _: &RelPath) -> Result<(), SinkError> {
            Ok(())
        }
    }
    let r = open(&target, Some(&fx.trust()))
        .unwrap()
        .import(&mut Rewrite(target.clone(), false));
    let e = r.unwrap_err();
    assert_eq!(e.class(), ErrorClass::Integrity, "{e}");

    // Swapped by rename: the open descriptor still reads the verified file to the end.
    fs::copy(&good, &target).unwrap();
    let ob = open(&target, Some(&fx.trust())).unwrap();
    let evil = fx.path("evil.bundle");
    fs::write(&evil, b"not a bundle").unwrap();
    fs::rename(&evil, &target).unwrap();
    let mut sink = Collect::default();
    ob.import(&mut sink).unwrap();
    let expected = import_bytes(&fx, &fs::read(&good).unwrap()).unwrap();
    assert_eq!(sink.0, expected);
}

#[test]
fn create_refuses_special_files_and_hostile_payload_tars() {
    let fx = fixture();
    let m = fx.path("m.toml");
    fs::write(&m, APP).unwrap();
    let root = fx.path("special");
    fs::create_dir_all(&root).unwrap();
    let fifo = root.join("fifo");
    assert!(std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap()
        .success());
    let out = fx.path("o.bundle");
    let e = appmgr_bundle::create(
        &m,
        appmgr_bundle::Source::Root(&root),
        &fx.key,
        &out,
        Compression::Zstd,
        None,
    )
    .unwrap_err();
    assert!(e.to_string().contains("FIFO"), "{e}");
    assert!(!out.exists());
    let tarp = fx.path("evil.tar");
    fs::write(
        &tarp,
        end_of_tar(raw_entry(b"../x", b'0', b"", b"x", 0o644)),
    )
    .unwrap();
    let e = appmgr_bundle::create(
        &m,
        appmgr_bundle::Source::Tar(&tarp),
        &fx.key,
        &out,
        Compression::Zstd,
        None,
    )
    .unwrap_err();
    assert_eq!(e.class(), ErrorClass::Integrity, "{e}");
    assert!(!out.exists());
    // No temporary files are left next to the output.
    let leftovers: Vec<_> = fs::read_dir(fx.dir.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with(".appmgr"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    // A well-formed build-system tar (with ./ prefixes and no directory entries) works
    // and is canonicalized.
    let ok_tar = fx.path("ok.tar");
    fs::write(
        &ok_tar,
        end_of_tar(
            [
                raw_entry(b"./", b'5', b"", b"", 0o777),
                raw_entry(b"./bin/hello", b'0', b"", b"hi", 0o4775),
            ]
            .concat(),
        ),
    )
    .unwrap();
    appmgr_bundle::create(
        &m,
        appmgr_bundle::Source::Tar(&ok_tar),
        &fx.key,
        &out,
        Compression::None,
        None,
    )
    .unwrap();
    let got = import_bytes(&fx, &fs::read(&out).unwrap()).unwrap();
    assert_eq!(
        got,
        vec![
            Got::Dir("bin".into()),
            Got::File("bin/hello".into(), true, b"hi".to_vec())
        ]
    );
}

/// One PAX record, `LEN key=value\n`, where LEN counts the whole record, itself included.
fn pax_record(key: &str, value: &[u8]) -> Vec<u8> {
    let rest = 1 + key.len() + 1 + value.len() + 1;
    let mut len = rest + 1;
    while len.to_string().len() + rest != len {
        len = len.to_string().len() + rest;
    }
    let mut out = format!("{len} {key}=").into_bytes();
    out.extend_from_slice(value);
    out.push(b'\n');
    out
}

/// A PAX extended header (`x`, for the next entry) or global header (`g`).
fn pax_header(typeflag: u8, records: &[(&str, &[u8])]) -> Vec<u8> {
    let data: Vec<u8> = records.iter().flat_map(|(k, v)| pax_record(k, v)).collect();
    raw_entry(b"PaxHeaders/entry", typeflag, b"", &data, 0o644)
}

/// Rewrites the ustar size field of the header at the start of `entry` (and its checksum).
fn set_ustar_size(entry: &mut [u8], size: u64) {
    entry[124..136].copy_from_slice(format!("{size:011o}\0").as_bytes());
    entry[148..156].copy_from_slice(b"        ");
    let sum: u32 = entry[..512].iter().map(|b| *b as u32).sum();
    entry[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
}

/// Imports a signed payload and returns the result together with everything the sink was
/// given, so a refusal can be shown to have written nothing.
fn import_recording(
    fx: &Fx,
    payload: &[u8],
    entries: u64,
    installed: u64,
) -> (Result<(), BundleError>, Vec<Got>) {
    let bytes = sign_raw(
        fx,
        APP,
        &end_of_tar(payload.to_vec()),
        Compression::None,
        entries,
        installed,
    );
    let p = fx.path("b.bundle");
    fs::write(&p, bytes).unwrap();
    let mut sink = Collect::default();
    let r = open(&p, Some(&fx.trust())).and_then(|b| b.import(&mut sink).map(|_| ()));
    (r, sink.0)
}

/// Asserts an integrity refusal (exit code 3) that reached no sink call; returns the message.
fn refused_unwritten(fx: &Fx, payload: &[u8], entries: u64, installed: u64, what: &str) -> String {
    let (r, got) = import_recording(fx, payload, entries, installed);
    let e = match r {
        Ok(()) => panic!("{what}: accepted, sink got {got:?}"),
        Err(e) => e,
    };
    assert_eq!(e.class(), ErrorClass::Integrity, "{what}: {e}");
    assert_eq!(e.class().exit_code(), 3, "{what}: {e}");
    assert!(
        got.is_empty(),
        "{what}: refused, but the sink was given {got:?}"
    );
    let msg = e.to_string();
    assert!(!msg.contains('\n'), "{what}: {msg}");
    msg
}

/// An entry whose data is one byte for a ustar-only reader and 1536 bytes for a PAX
/// reader: in the 1536 bytes hides a second member, `hidden`, that only the ustar-only
/// reader would see.
fn pax_size_smuggler(pax_size: u64, ustar_size: u64) -> Vec<u8> {
    let mut data = b"x".to_vec();
    data.resize(512, 0);
    data.extend(raw_entry(b"hidden", b'0', b"", b"evil", 0o755));
    assert_eq!(data.len(), 1536);
    let mut f = raw_entry(b"f", b'0', b"", &data, 0o644);
    set_ustar_size(&mut f, ustar_size);
    let size = pax_size.to_string();
    [pax_header(b'x', &[("size", size.as_bytes())]), f].concat()
}

#[test]
fn pax_size_disagreeing_with_ustar_size_is_refused() {
    let fx = fixture();
    for (pax, ustar) in [(1536, 1), (1, 1536)] {
        let what = format!("PAX size {pax}, ustar size {ustar}");
        let msg = refused_unwritten(&fx, &pax_size_smuggler(pax, ustar), 1, 1, &what);
        assert!(msg.contains("unsafe payload entry \"f\""), "{what}: {msg}");
        assert!(
            msg.contains(&format!(
                "PAX size {pax} disagrees with the ustar header size {ustar}"
            )),
            "{what}: {msg}"
        );
    }
    // Sizes that agree are fine: PAX `size` is legitimate, only disagreement is not.
    let (r, got) = import_recording(&fx, &pax_size_smuggler(1536, 1536), 1, 1536);
    r.unwrap();
    assert!(matches!(&got[..], [Got::File(n, false, d)] if n == "f" && d.len() == 1536));
}

#[test]
fn ambiguous_pax_and_gnu_headers_are_refused() {
    let fx = fixture();
    let file = |name: &[u8]| raw_entry(name, b'0', b"", b"x", 0o644);
    let x = |records: &[(&str, &[u8])]| pax_header(b'x', records);
    let g = |records: &[(&str, &[u8])]| pax_header(b'g', records);
    let long_name = raw_entry(b"././@LongLink", b'L', b"", b"long-name\0", 0o644);
    let mut dir_with_data = raw_entry(b"d", b'5', b"", &[0u8; 512], 0o755);
    set_ustar_size(&mut dir_with_data, 512);
    let link_with_data = raw_entry(b"l", b'2', b"target", &[0u8; 512], 0o777);
    let cases: Vec<(&str, Vec<u8>, u64, &str)> = vec![
        (
            "size twice, equal",
            [x(&[("size", b"1"), ("size", b"1")]), file(b"f")].concat(),
            1,
            "PAX record size appears twice",
        ),
        (
            "size twice, conflicting",
            [x(&[("size", b"1"), ("size", b"1536")]), file(b"f")].concat(),
            1,
            "PAX record size appears twice",
        ),
        (
            "negative size",
            [x(&[("size", b"-1")]), file(b"f")].concat(),
            1,
            "PAX size \"-1\" is not a decimal number",
        ),
        (
            "non-numeric size",
            [x(&[("size", b"1x")]), file(b"f")].concat(),
            1,
            "PAX size \"1x\" is not a decimal number",
        ),
        (
            "signed size",
            [x(&[("size", b"+1")]), file(b"f")].concat(),
            1,
            "not a decimal number",
        ),
        (
            "empty size",
            [x(&[("size", b"")]), file(b"f")].concat(),
            1,
            "not a decimal number",
        ),
        (
            "size beyond u64",
            [x(&[("size", b"99999999999999999999")]), file(b"f")].concat(),
            1,
            "not a decimal number",
        ),
        (
            "GNU sparse PAX records",
            [x(&[("GNU.sparse.size", b"1")]), file(b"f")].concat(),
            1,
            "sparse file",
        ),
        (
            "path twice",
            [x(&[("path", b"a"), ("path", b"b")]), file(b"f")].concat(),
            1,
            "PAX record path appears twice",
        ),
        (
            "GNU long name and a different PAX path",
            [long_name.clone(), x(&[("path", b"other")]), file(b"f")].concat(),
            1,
            "both a GNU long name and a PAX path",
        ),
        (
            "global size",
            [g(&[("size", b"1")]), file(b"f")].concat(),
            1,
            "global PAX header sets size",
        ),
        (
            "global path",
            [g(&[("path", b"evil")]), file(b"f")].concat(),
            1,
            "global PAX header sets path",
        ),
        (
            "local PAX header before a global one",
            [x(&[("path", b"evil")]), g(&[("comment", b"c")]), file(b"f")].concat(),
            1,
            "in front of a global PAX header",
        ),
        (
            "GNU long name before a global header",
            [long_name, g(&[("comment", b"c")]), file(b"f")].concat(),
            1,
            "in front of a global PAX header",
        ),
        (
            "directory with data",
            dir_with_data,
            1,
            "non-regular entry with a data size of 512 bytes",
        ),
        (
            "symlink with data",
            link_with_data,
            1,
            "non-regular entry with a data size of 512 bytes",
        ),
    ];
    for (what, payload, entries, expect) in cases {
        let msg = refused_unwritten(&fx, &payload, entries, 1, what);
        assert!(msg.contains("unsafe payload entry"), "{what}: {msg}");
        assert!(msg.contains(expect), "{what}: {msg}");
    }
}

#[test]
fn ordinary_pax_headers_are_accepted() {
    let fx = fixture();
    let long = format!("share/{}", "n".repeat(200));
    let payload = [
        // What `git archive` writes.
        pax_header(b'g', &[("comment", b"0123456789abcdef")]),
        raw_entry(b"share", b'5', b"", b"", 0o755),
        pax_header(
            b'x',
            &[
                ("path", long.as_bytes()),
                ("size", b"3"),
                ("mtime", b"1700000000.5"),
                ("SCHILY.xattr.user.x", b"ignored"),
            ],
        ),
        raw_entry(b"share/short", b'0', b"", b"abc", 0o644),
        pax_header(b'x', &[("linkpath", b"../share/short")]),
        raw_entry(b"share/l", b'2', b"x", b"", 0o777),
    ]
    .concat();
    let (r, got) = import_recording(&fx, &payload, 3, 3);
    r.unwrap();
    assert_eq!(
        got,
        vec![
            Got::Dir("share".into()),
            Got::File(long, false, b"abc".to_vec()),
            Got::Link("share/l".into(), "../share/short".into()),
        ]
    );
}

const SBOM: &str = r#"{"bomFormat": "CycloneDX", "specVersion": "1.5", "version": 1,
 "components": [{"type": "library", "name": "libc6", "version": "2.36-9+deb12u4",
  "purl": "pkg:deb/debian/libc6@2.36-9%2Bdeb12u4?arch=amd64",
  "properties": [{"name": "appmgr:source-package", "value": "glibc"}]}]}"#;

/// A small bundle carrying `sbom` (bytes as given to `bundle create --sbom`).
fn sbom_bundle(fx: &Fx, sbom: &[u8]) -> Result<PathBuf, BundleError> {
    let root = fx.path("sbom-root");
    fs::create_dir_all(root.join("bin")).unwrap();
    fs::write(root.join("bin/hello"), b"hi").unwrap();
    let m = fx.path("m.toml");
    fs::write(&m, APP).unwrap();
    let s = fx.path("sbom.cdx.json");
    fs::write(&s, sbom).unwrap();
    let out = fx.path("sbom.bundle");
    appmgr_bundle::create(
        &m,
        appmgr_bundle::Source::Root(&root),
        &fx.key,
        &out,
        Compression::None,
        Some(&s),
    )?;
    Ok(out)
}

#[test]
fn an_sbom_is_carried_bound_by_the_signature() {
    let fx = fixture();
    let out = sbom_bundle(&fx, SBOM.as_bytes()).unwrap();
    let b = open(&out, Some(&fx.trust())).unwrap();
    assert_eq!(b.sbom(), Some(SBOM.as_bytes()));
    let info = b
        .manifest()
        .sbom
        .clone()
        .expect("[sbom] in the signed manifest");
    assert_eq!(info.sha256, hex::encode(Sha256::digest(SBOM.as_bytes())));
    assert_eq!(info.size, SBOM.len() as u64);
    let got = {
        let mut sink = Collect::default();
        b.import(&mut sink).unwrap();
        sink.0
    };
    assert!(got.contains(&Got::File("bin/hello".into(), false, b"hi".to_vec())));

    // Every byte of the SBOM member (header, data, padding) is covered: flipped, it is
    // refused before a single payload entry reaches the sink.
    let good = fs::read(&out).unwrap();
    let at = good
        .windows(container::SBOM_NAME.len())
        .position(|w| w == container::SBOM_NAME.as_bytes())
        .unwrap();
    let end = at + 512 + SBOM.len().div_ceil(512) * 512;
    let trust = fx.trust();
    for i in at..end {
        let mut bad = good.clone();
        bad[i] ^= 0x01;
        let msg = assert_integrity(import_with(&fx, &trust, &bad), &format!("flip at {i}"));
        if i >= at + 512 && i < at + 512 + SBOM.len() {
            assert!(msg.contains("SBOM digest mismatch"), "flip at {i}: {msg}");
        }
    }
}

#[test]
fn an_sbom_member_missing_undeclared_or_unreadable_is_refused() {
    let fx = fixture();
    let key = keys::load_secret(&fx.key).unwrap();
    let payload = end_of_tar(raw_entry(b"hello", b'0', b"", b"hi", 0o644));
    let m = Manifest::parse(APP.as_bytes(), false).unwrap();
    let info = PayloadInfo {
        sha256: hex::encode(Sha256::digest(&payload)),
        size: payload.len() as u64,
        compression: Compression::None,
        installed_size: 2,
        entries: 1,
    };
    let declared = |doc: &[u8]| appmgr_bundle::SbomInfo {
        format: appmgr_bundle::SbomFormat::CycloneDx15,
        sha256: hex::encode(Sha256::digest(doc)),
        size: doc.len() as u64,
    };
    let with = m.to_signed_bytes(info.clone(), Some(declared(SBOM.as_bytes())));
    let without = m.to_signed_bytes(info.clone(), None);
    let (sig_with, sig_without) = (keys::sign(&key, &with), keys::sign(&key, &without));
    let c = Compression::None;
    let ok = assemble_with_sbom(&with, &sig_with, Some(SBOM.as_bytes()), &payload, c);
    assert!(import_bytes(&fx, &ok).is_ok());

    let missing = assemble_with_sbom(&with, &sig_with, None, &payload, c);
    let msg = assert_integrity(import_bytes(&fx, &missing), "declared, missing");
    assert!(msg.contains("sbom.cdx.json"), "{msg}");
    let undeclared = assemble_with_sbom(&without, &sig_without, Some(SBOM.as_bytes()), &payload, c);
    let msg = assert_integrity(import_bytes(&fx, &undeclared), "undeclared");
    assert!(msg.contains("payload.tar"), "{msg}");
    let other = SBOM.replace("libc6", "libc7");
    let swapped = assemble_with_sbom(&with, &sig_with, Some(other.as_bytes()), &payload, c);
    let msg = assert_integrity(import_bytes(&fx, &swapped), "another SBOM of the same size");
    assert!(msg.contains("SBOM digest mismatch"), "{msg}");

    // Signed with its right digest, but not a document appmgr can answer from.
    let spdx = br#"{"spdxVersion": "SPDX-2.3", "packages": []}"#;
    let signed = m.to_signed_bytes(info, Some(declared(spdx)));
    let sig = keys::sign(&key, &signed);
    let bytes = assemble_with_sbom(&signed, &sig, Some(spdx), &payload, c);
    let msg = assert_integrity(import_bytes(&fx, &bytes), "not CycloneDX");
    assert!(
        msg.contains("sbom.cdx.json") && msg.contains("bomFormat"),
        "{msg}"
    );
}

#[test]
fn create_refuses_a_bad_sbom_and_writes_nothing() {
    let fx = fixture();
    for (doc, expect) in [
        (SBOM.replace("\"1.5\"", "\"1.6\""), "specVersion"),
        (SBOM.replace("\"library\"", "\"lib\""), "components[0].type"),
        ("not json".to_string(), "not CycloneDX JSON"),
    ] {
        let before: Vec<_> = fs::read_dir(fx.dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .filter(|n| n != "m.toml" && n != "sbom.cdx.json" && n != "sbom-root")
            .collect();
        let e = sbom_bundle(&fx, doc.as_bytes()).unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains("sbom.cdx.json") && msg.contains(expect),
            "{msg}"
        );
        assert!(
            !fx.path("sbom.bundle").exists(),
            "{expect}: a bundle was written"
        );
        let after: Vec<_> = fs::read_dir(fx.dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .filter(|n| n != "m.toml" && n != "sbom.cdx.json" && n != "sbom-root")
            .collect();
        assert_eq!(before, after, "{expect}: temporary files left");
    }
}
