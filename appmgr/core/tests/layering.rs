//! The workspace's dependency graph points down only: `cargo metadata` must show every
//! crate depending (normal dependencies) on crates of lower layers only, so the front
//! ends (`appmgr-cli`, `appmgr-daemon`, `appmgr-portals`, and `appmgr-run`, `run`'s fast
//! path) sit side by side on `appmgr-core` and the
//! mechanism crates never see the use cases or the policy format. `appmgr-multicall` (the
//! `appmgr` executable) is the one crate above them.
use std::collections::BTreeMap;
use std::process::Command;

/// Layer of each workspace crate: a crate may depend on crates of a lower layer only
/// (same layer = siblings, which must not depend on each other).
fn layer(name: &str) -> Option<u32> {
    Some(match name {
        // The test kit depends on no appmgr crate and is only ever a dev-dependency
        // (checked below).
        "appmgr-types" | "appmgr-testkit" => 0,
        "appmgr-cgroup" | "appmgr-bundle" | "appmgr-board" | "appmgr-sandbox" | "appmgr-state" => 1,
        // appmgr-remote: OCI registries and downloads, over the bundle format.
        "appmgr-store" | "appmgr-policy" | "appmgr-remote" => 2,
        "appmgr-core" => 3,
        // The store mutations, over core: only appmgr-ops links them.
        "appmgr-storeops" => 4,
        "appmgr-cli" | "appmgr-daemon" | "appmgr-portals" | "appmgr-run" | "appmgr-probe"
        | "appmgr-layering" => 5,
        // The `appmgr` executable: the three front ends in one image, none of them built
        // on another (appmgr-daemon and appmgr-portals still never see appmgr-cli).
        "appmgr-multicall" => 6,
        _ => return None,
    })
}

/// Edges inside a layer that the design allows (none today).
const SIBLING_EDGES: &[(&str, &str)] = &[];

#[test]
fn dependencies_point_down_only() {
    let out = Command::new(env!("CARGO"))
        .args([
            "metadata",
            "--format-version",
            "1",
            "--no-deps",
            "--offline",
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("cargo metadata runs");
    assert!(
        out.status.success(),
        "cargo metadata: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let mut seen = BTreeMap::new();
    let mut wrong = Vec::new();
    for p in meta["packages"].as_array().unwrap() {
        let name = p["name"].as_str().unwrap();
        let Some(mine) = layer(name) else {
            wrong.push(format!("{name}: not in the layer table of this test"));
            continue;
        };
        seen.insert(name.to_string(), mine);
        for d in p["dependencies"].as_array().unwrap() {
            let dep = d["name"].as_str().unwrap();
            if dep == "appmgr-testkit" && d["kind"].as_str() != Some("dev") {
                wrong.push(format!("{name}: appmgr-testkit as a non-dev dependency"));
            }
            // Not even the daemon's tests build on the CLI crate.
            if name == "appmgr-daemon" && dep == "appmgr-cli" {
                wrong.push(format!("{name} depends on {dep} ({})", d["kind"]));
            }
            // The portal service never needs the store (nor libostree in its image).
            if name == "appmgr-portals"
                && matches!(dep, "appmgr-store" | "appmgr-storeops" | "ostree")
                && d["kind"].is_null()
            {
                wrong.push(format!(
                    "{name} depends on {dep}: the portal service reads no store"
                ));
            }
            // dev-dependencies (tests) may reach anywhere; build scripts likewise.
            if !d["kind"].is_null() {
                continue;
            }
            let Some(theirs) = layer(dep) else { continue };
            let sibling_ok = SIBLING_EDGES.contains(&(name, dep));
            if theirs > mine || (theirs == mine && !sibling_ok) {
                wrong.push(format!(
                    "{name} (layer {mine}) depends on {dep} (layer {theirs})"
                ));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "dependencies that do not point down: {wrong:#?}"
    );
    // The test knows the crates it is about.
    for must in ["appmgr-core", "appmgr-cli", "appmgr-daemon"] {
        assert!(seen.contains_key(must), "{must} is not in the workspace");
    }
}

#[test]
fn the_daemon_does_not_depend_on_the_cli() {
    let out = Command::new(env!("CARGO"))
        .args([
            "tree",
            "-p",
            "appmgr-daemon",
            "-e",
            "normal",
            "--prefix",
            "none",
            "--offline",
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("cargo tree runs");
    assert!(
        out.status.success(),
        "cargo tree: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.lines().any(|l| l.starts_with("appmgr-core ")),
        "appmgr-daemon does not build on appmgr-core: {text}"
    );
    assert!(
        !text.lines().any(|l| l.starts_with("appmgr-cli ")),
        "appmgr-daemon depends on appmgr-cli (directly or through another crate)"
    );
}
