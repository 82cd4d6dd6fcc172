//! appmgr-layering: checks of layering rules that the compiler does not see, used by this
//! crate's tests (`tests/lean.rs`).
//!
//! The lean binaries (`appmgr`, which is also `appmgrd` and `appmgr-portald`,
//! `appmgr-run`, the front end installed as `appmgr` on a device, and `appmgr-launch`)
//! must not load libostree or GLib:
//! they read state through `appmgr-state`, and only `appmgr-ops` (run by `appmgr` and
//! `appmgrd` for store operations) links the libostree store. Two views of the rule:
//!
//! - the built binaries: no `NEEDED` entry of their dynamic section names libostree or a
//!   GLib library ([`needed_libraries`], read with `readelf -d` from binutils);
//! - the dependency graph: which normal (not dev, not build) dependencies of a crate lead
//!   to the `ostree` crate or the GLib bindings ([`Graph::forbidden_routes`], from
//!   `cargo metadata`).
//!
//! The first is what matters at run time; the second says why, and catches a lean crate
//! that depends on the store even while the linker still drops the unused library.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The executables that must not link libostree or GLib. `appmgrd` and `appmgr-portald`
/// are the `appmgr` executable under other names (`appmgr-multicall`), so checking it
/// checks them.
pub const LEAN_BINARIES: &[&str] = &["appmgr", "appmgr-run", "appmgr-launch"];

/// A binary that does link libostree: the tests' positive control.
pub const STORE_BINARY: &str = "appmgr-ops";

/// Prefixes of the shared objects a lean binary must not need: libostree and the GLib
/// family (libostree's own dependencies).
pub const FORBIDDEN_LIBRARIES: &[&str] = &[
    "libostree-1.so",
    "libglib-2.0.so",
    "libgio-2.0.so",
    "libgobject-2.0.so",
    "libgmodule-2.0.so",
    "libgthread-2.0.so",
];

/// The crates that bind libostree and GLib.
pub const FORBIDDEN_CRATES: &[&str] = &[
    "ostree",
    "ostree-sys",
    "glib",
    "glib-sys",
    "gio",
    "gio-sys",
    "gobject-sys",
];

/// The directory cargo puts binaries in for the profile a test executable was built with:
/// a test executable lives in `TARGET/PROFILE/deps/`, the binaries in `TARGET/PROFILE/`.
pub fn profile_dir(test_exe: &Path) -> Result<PathBuf, String> {
    let deps = test_exe
        .parent()
        .filter(|d| d.file_name().is_some_and(|n| n == "deps"))
        .ok_or_else(|| {
            format!(
                "{} is not in a cargo deps/ directory: run this test through cargo test",
                test_exe.display()
            )
        })?;
    deps.parent()
        .map(Path::to_path_buf)
        .ok_or_else(|| format!("{} has no parent", deps.display()))
}

/// The `NEEDED` entries of `readelf -d` output, in order.
pub fn parse_needed(readelf_output: &str) -> Vec<String> {
    readelf_output
        .lines()
        .filter(|l| l.contains("(NEEDED)"))
        .filter_map(|l| {
            let start = l.find('[')? + 1;
            let end = start + l[start..].find(']')?;
            Some(l[start..end].to_string())
        })
        .collect()
}

/// The `NEEDED` entries of an ELF file's dynamic section (none for a static binary).
pub fn needed_libraries(binary: &Path) -> Result<Vec<String>, String> {
    let out = Command::new("readelf")
        .args(["-d", "--wide"])
        .arg(binary)
        .env("LC_ALL", "C")
        .output()
        .map_err(|e| {
            format!("cannot run readelf (binutils; scripts/install-deps installs it): {e}")
        })?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() || !stderr.trim().is_empty() {
        return Err(format!(
            "readelf -d {} failed ({}): {}",
            binary.display(),
            out.status,
            stderr.trim()
        ));
    }
    Ok(parse_needed(&String::from_utf8_lossy(&out.stdout)))
}

/// The entries of `needed` that name libostree or a GLib library.
pub fn forbidden_libraries(needed: &[String]) -> Vec<String> {
    needed
        .iter()
        .filter(|n| FORBIDDEN_LIBRARIES.iter().any(|f| n.starts_with(f)))
        .cloned()
        .collect()
}

/// The resolved dependency graph of the workspace (features unified, as cargo builds it),
/// normal dependencies only.
pub struct Graph {
    names: HashMap<String, String>,
    members: HashMap<String, String>,
    normal: HashMap<String, Vec<String>>,
}

impl Graph {
    /// Runs `cargo metadata` on the workspace whose root manifest is `manifest`, for the
    /// build host's platform (what the binaries are built for; other platforms'
    /// dependencies, e.g. Windows crates, are not downloaded and not needed).
    pub fn load(manifest: &Path) -> Result<Graph, String> {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let host = format!("{}-unknown-linux-gnu", std::env::consts::ARCH);
        let out = Command::new(&cargo)
            .args(["metadata", "--format-version", "1", "--locked", "--offline"])
            .args(["--filter-platform", &host])
            .arg("--manifest-path")
            .arg(manifest)
            .output()
            .map_err(|e| format!("cannot run {cargo} metadata: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "cargo metadata --manifest-path {} failed ({}): {}",
                manifest.display(),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        let v: serde_json::Value = serde_json::from_slice(&out.stdout)
            .map_err(|e| format!("cargo metadata printed invalid JSON: {e}"))?;
        Graph::from_metadata(&v)
    }

    /// Builds the graph from `cargo metadata --format-version 1` output.
    pub fn from_metadata(v: &serde_json::Value) -> Result<Graph, String> {
        let missing = |what: &str| format!("cargo metadata output has no {what}");
        let str_of = |v: &serde_json::Value, k: &str| -> Result<String, String> {
            v.get(k)
                .and_then(|s| s.as_str())
                .map(str::to_string)
                .ok_or_else(|| missing(k))
        };
        let mut names = HashMap::new();
        for p in v["packages"]
            .as_array()
            .ok_or_else(|| missing("packages"))?
        {
            names.insert(str_of(p, "id")?, str_of(p, "name")?);
        }
        let mut members = HashMap::new();
        for id in v["workspace_members"]
            .as_array()
            .ok_or_else(|| missing("workspace_members"))?
        {
            let id = id.as_str().ok_or_else(|| missing("member id"))?;
            let name = names.get(id).ok_or_else(|| missing("member package"))?;
            members.insert(name.clone(), id.to_string());
        }
        let mut normal = HashMap::new();
        for node in v["resolve"]["nodes"]
            .as_array()
            .ok_or_else(|| missing("resolve.nodes"))?
        {
            let mut deps = Vec::new();
            for d in node["deps"].as_array().ok_or_else(|| missing("deps"))? {
                let kinds = d["dep_kinds"]
                    .as_array()
                    .ok_or_else(|| missing("dep_kinds"))?;
                // A normal dependency has kind null (with or without a target cfg).
                if kinds.iter().any(|k| k["kind"].is_null()) {
                    deps.push(str_of(d, "pkg")?);
                }
            }
            normal.insert(str_of(node, "id")?, deps);
        }
        Ok(Graph {
            names,
            members,
            normal,
        })
    }

    fn name<'a>(&'a self, id: &'a str) -> &'a str {
        self.names.get(id).map(String::as_str).unwrap_or(id)
    }

    /// For each direct normal dependency of the workspace crate `krate` through which a
    /// [`FORBIDDEN_CRATES`] crate is reachable: that dependency's name and one shortest
    /// path `krate -> … -> forbidden crate`. Empty when `krate` is free of them.
    pub fn forbidden_routes(&self, krate: &str) -> Result<BTreeMap<String, Vec<String>>, String> {
        let id = self
            .members
            .get(krate)
            .ok_or_else(|| format!("{krate} is not a workspace member"))?;
        let mut routes = BTreeMap::new();
        let empty = Vec::new();
        for first in self.normal.get(id).unwrap_or(&empty) {
            // Breadth-first from the direct dependency, remembering where each came from.
            let mut from: HashMap<&str, &str> = HashMap::new();
            let mut queue = VecDeque::from([first.as_str()]);
            from.insert(first, id);
            while let Some(cur) = queue.pop_front() {
                if FORBIDDEN_CRATES.contains(&self.name(cur)) {
                    let mut path = vec![self.name(cur).to_string()];
                    let mut at = cur;
                    while at != id.as_str() {
                        at = from[at];
                        path.push(self.name(at).to_string());
                    }
                    path.reverse();
                    routes.insert(self.name(first).to_string(), path);
                    break;
                }
                for next in self.normal.get(cur).unwrap_or(&empty) {
                    if next != id && !from.contains_key(next.as_str()) {
                        from.insert(next, cur);
                        queue.push_back(next);
                    }
                }
            }
        }
        Ok(routes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn needed_entries_are_parsed_from_readelf_output() {
        let out = "\nDynamic section at offset 0x1 contains 3 entries:\n  Tag        Type                         Name/Value\n 0x0000000000000001 (NEEDED)             Shared library: [libostree-1.so.1]\n 0x0000000000000001 (NEEDED)             Shared library: [libc.so.6]\n 0x000000000000000e (SONAME)             Library soname: [libx.so]\n";
        let n = parse_needed(out);
        assert_eq!(n, ["libostree-1.so.1", "libc.so.6"]);
        assert_eq!(forbidden_libraries(&n), ["libostree-1.so.1"]);
        assert!(forbidden_libraries(&["libgio-2.0.so.0".into()]).len() == 1);
        assert!(forbidden_libraries(&["libgcc_s.so.1".into()]).is_empty());
    }

    #[test]
    fn profile_dir_is_the_parent_of_deps() {
        assert_eq!(
            profile_dir(Path::new("/t/target/debug/deps/lean-abc")).unwrap(),
            Path::new("/t/target/debug")
        );
        let e = profile_dir(Path::new("/usr/bin/lean")).unwrap_err();
        assert!(e.contains("not in a cargo deps/ directory"), "{e}");
    }
}
