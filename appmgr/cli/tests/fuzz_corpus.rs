//! Runs every file of the fuzz corpora (`fuzz/corpus/TARGET/`) through the same harness
//! the cargo-fuzz targets use, so the seeds and any crash reproducer added there are
//! checked by every `cargo test`, without nightly or libFuzzer.
#[path = "../../../fuzz/harness.rs"]
mod harness;

use std::path::Path;

fn run(target: &str, f: fn(&[u8])) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/corpus")
        .join(target);
    let mut n = 0;
    for e in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let p = e.unwrap().path();
        let data = std::fs::read(&p).unwrap();
        f(&data);
        // Every prefix too: truncation must never panic either.
        for cut in (0..data.len()).step_by((data.len() / 64).max(1)) {
            f(&data[..cut]);
        }
        n += 1;
    }
    assert!(n > 0, "corpus {target} is empty");
}

#[test]
fn manifest_corpus() {
    run("manifest", harness::manifest);
}

#[test]
fn bundle_corpus() {
    run("bundle", harness::bundle);
}

#[test]
fn payload_corpus() {
    run("payload", harness::payload);
}

#[test]
fn policy_corpus() {
    run("policy", harness::policy);
}

#[test]
fn sbom_corpus() {
    run("sbom", harness::sbom);
}

#[test]
fn board_corpus() {
    run("board", harness::board);
}

#[test]
fn seed_bundles_verify_with_the_seed_key() {
    // Guards the corpus itself: the valid seeds must stay valid, or the fuzzer would only
    // ever explore the refusal of the signature.
    let dir = std::env::temp_dir().join(format!("appmgr-seed-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("trust.d")).unwrap();
    std::fs::write(dir.join("trust.d/seed.pub"), harness::SEED_PUBLIC_PEM).unwrap();
    let trust = appmgr_bundle::TrustStore::load(&dir).unwrap();
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/bundle");
    for name in ["app-zstd.bundle", "runtime-plain.bundle"] {
        appmgr_bundle::verify(&corpus.join(name), &trust).unwrap();
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
