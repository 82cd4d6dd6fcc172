//! The lean binaries do not link libostree or GLib, and the lean crates do not depend on
//! the libostree bindings (see the crate docs and docs/store.md, "Lean binaries and
//! appmgr-state").
//!
//! The binary check reads the binaries cargo built for this test's profile, next to this
//! test executable: `cargo build --workspace --bins` (scripts/test does it) or
//! `cargo test --workspace` builds them; a missing one fails the test with a message.
use appmgr_layering::{
    forbidden_libraries, needed_libraries, profile_dir, Graph, LEAN_BINARIES, STORE_BINARY,
};
use std::path::{Path, PathBuf};

fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the test executable's path");
    profile_dir(&exe).unwrap_or_else(|e| panic!("{e}"))
}

fn built(dir: &Path, name: &str) -> PathBuf {
    let p = dir.join(name);
    assert!(
        p.is_file(),
        "{} is missing: build the binaries of this profile first \
         (cargo build --workspace --bins, with the same --release/--target as the test)",
        p.display()
    );
    p
}

#[test]
fn lean_binaries_need_no_libostree_or_glib() {
    let dir = bin_dir();
    // Positive control: appmgr-ops links the store, so the check must see libostree and
    // GLib there; otherwise it would pass on anything.
    let ops = built(&dir, STORE_BINARY);
    let ops_needed = needed_libraries(&ops).unwrap_or_else(|e| panic!("{e}"));
    let ops_bad = forbidden_libraries(&ops_needed);
    assert!(
        ops_bad.iter().any(|l| l.starts_with("libostree-1.so"))
            && ops_bad.iter().any(|l| l.starts_with("libglib-2.0.so")),
        "control: {} should need libostree-1 and libglib-2.0 but needs {ops_needed:?}; \
         the check cannot tell a lean binary from one that links the store",
        ops.display()
    );

    let mut failures = Vec::new();
    for name in LEAN_BINARIES {
        let p = built(&dir, name);
        let needed = needed_libraries(&p).unwrap_or_else(|e| panic!("{e}"));
        let bad = forbidden_libraries(&needed);
        if !bad.is_empty() {
            failures.push(format!(
                "{} needs {} (NEEDED: {})",
                p.display(),
                bad.join(", "),
                needed.join(", ")
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "lean binaries link libostree or GLib; they must read state through appmgr-state \
         and leave store operations to appmgr-ops:\n{}",
        failures.join("\n")
    );
}

/// The lean crates, with the direct dependencies through which they may still reach the
/// `ostree` crate, and why. An exception that no longer holds fails the test too, so the
/// list only shrinks.
const LEAN_CRATES: &[(&str, &[&str], &str)] = &[
    ("appmgr-state", &[], ""),
    ("appmgr-sandbox", &[], ""),
    ("appmgr-core", &[], ""),
    (
        "appmgr-cli",
        &["appmgr-storeops"],
        "the crate also builds appmgr-ops, which runs the store mutations \
         (appmgr-storeops over appmgr_store::Store); the lean appmgr binary of the same \
         crate is checked by lean_binaries_need_no_libostree_or_glib",
    ),
    ("appmgr-daemon", &[], ""),
    ("appmgr-portals", &[], ""),
    ("appmgr-run", &[], ""),
    (
        "appmgr-multicall",
        &["appmgr-cli"],
        "the appmgr executable runs the CLI's lean entry point, and appmgr-cli also \
         builds appmgr-ops; the executable itself is checked by \
         lean_binaries_need_no_libostree_or_glib",
    ),
];

#[test]
fn lean_crates_do_not_depend_on_ostree() {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../Cargo.toml");
    let graph = Graph::load(&manifest).unwrap_or_else(|e| panic!("{e}"));

    // Positive control: the store does reach ostree, directly.
    let store = graph.forbidden_routes("appmgr-store").unwrap();
    assert!(
        store
            .get("ostree")
            .is_some_and(|p| p == &["appmgr-store", "ostree"]),
        "control: appmgr-store should depend on ostree directly, routes found: {store:?}"
    );

    let mut failures = Vec::new();
    for (krate, allowed, why) in LEAN_CRATES {
        let routes = graph
            .forbidden_routes(krate)
            .unwrap_or_else(|e| panic!("{e}"));
        for (first, path) in &routes {
            if !allowed.contains(&first.as_str()) {
                failures.push(format!(
                    "{krate} reaches the libostree bindings: {}",
                    path.join(" -> ")
                ));
            }
        }
        for first in *allowed {
            if !routes.contains_key(*first) {
                failures.push(format!(
                    "{krate} no longer reaches ostree through {first} (the exception was: \
                     {why}): remove it from LEAN_CRATES in {}",
                    file!()
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
