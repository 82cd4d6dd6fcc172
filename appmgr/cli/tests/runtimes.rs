//! The runtimes `runtimes/build.py` builds from Debian packages (`runtimes/*.toml`):
//! every shared object in them loads with the runtime's own loader (`runtimes/check-load`,
//! so a runtime that cannot load never ships again), their SBOMs are valid CycloneDX 1.5
//! (`scripts/validate-sbom`) and list every package with dpkg's own version, and the SBOM
//! goes through bundle create and install to `appmgr sbom query`. Package downloads are
//! cached machine-wide (`/var/cache/appmgr-debs`, build.py's default).
use appmgr_testkit::*;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Builds `definition` (a path) into `out`; returns the tree.
fn build(definition: &Path, out: &Path) -> PathBuf {
    let o = Command::new("python3")
        .arg(repo_root().join("runtimes/build.py"))
        .arg(definition)
        .args(["--arch", arch(), "--out", s(out)])
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "build.py {}: {}",
        definition.display(),
        text(&o)
    );
    out.join("files")
}

fn check_load(tree: &Path) -> Output {
    Command::new(repo_root().join("runtimes/check-load"))
        .arg(tree)
        .output()
        .unwrap()
}

/// Bytes and regular files in a tree.
fn size(tree: &Path) -> (u64, u64) {
    let mut total = (0, 0);
    for e in fs::read_dir(tree).unwrap() {
        let e = e.unwrap();
        let m = fs::symlink_metadata(e.path()).unwrap();
        if m.is_dir() {
            let (b, n) = size(&e.path());
            total = (total.0 + b, total.1 + n);
        } else if m.is_file() {
            total = (total.0 + m.len(), total.1 + 1);
        }
    }
    total
}

fn deb_version(name: &str) -> String {
    let deb_arch = if arch() == "aarch64" {
        "arm64"
    } else {
        "amd64"
    };
    let cache = Path::new("/var/cache/appmgr-debs").join(deb_arch);
    let deb = fs::read_dir(&cache)
        .unwrap()
        .map(|d| d.unwrap().path())
        .filter(|p| {
            let f = p.file_name().unwrap().to_str().unwrap();
            f.starts_with(&format!("{name}_"))
        })
        .max()
        .unwrap_or_else(|| panic!("{name}: no .deb in {}", cache.display()));
    let f = Command::new("dpkg-deb")
        .args(["-f", s(&deb), "Version"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&f.stdout).trim().to_string()
}

/// Each definition in `runtimes/`: builds, every object loads, the SBOM is valid and
/// exact, and the HMI Platform offers what an HMI app links against.
#[test]
fn every_runtime_builds_loads_and_carries_a_valid_sbom() {
    require_root!("apt-get download into the machine-wide cache; check-load mounts");
    skip_if!(missing_tool(&[
        "apt-get", "dpkg-deb", "readelf", "file", "unshare"
    ]));
    let e = Env::new();
    let repo = repo_root();
    let mut sboms = Vec::new();
    for name in ["headless", "hmi"] {
        let def = repo.join(format!("runtimes/{name}.toml"));
        let out = e.p(name);
        let tree = build(&def, &out);
        let o = check_load(&tree);
        assert!(o.status.success(), "{name}: {}", text(&o));
        let (bytes, files) = size(&tree);
        eprintln!(
            "runtime {name}: {bytes} bytes, {files} files; {}",
            text(&o).trim()
        );

        // Every package of the definition, with dpkg's own version and a purl.
        let definition: toml::Value = toml::from_str(&fs::read_to_string(&def).unwrap()).unwrap();
        let sbom = out.join("sbom.cdx.json");
        let doc: serde_json::Value = serde_json::from_slice(&fs::read(&sbom).unwrap()).unwrap();
        let comps = doc["components"].as_array().unwrap();
        let wanted = definition["packages"].as_array().unwrap();
        assert_eq!(comps.len(), wanted.len(), "{name}: {doc}");
        for p in wanted {
            let p = p.as_str().unwrap();
            let c = comps
                .iter()
                .find(|c| c["name"] == p)
                .unwrap_or_else(|| panic!("{name}: {p} missing from the SBOM"));
            assert_eq!(c["version"], deb_version(p).as_str(), "{name}: {p}");
            let purl = c["purl"].as_str().unwrap();
            assert!(purl.starts_with(&format!("pkg:deb/debian/{p}@")), "{purl}");
        }
        sboms.push(sbom);
    }

    // What an HMI app links against is there (and loaded above, with what it needs).
    let hmi = e.p("hmi/files");
    let libdir = hmi.join(format!("lib/{}-linux-gnu", arch()));
    for lib in [
        "libwayland-client.so.0",
        "libwayland-egl.so.1",
        "libxkbcommon.so.0",
        "libEGL.so.1",
        "libGLESv2.so.2",
        "libfontconfig.so.1",
        "libfreetype.so.6",
        "libharfbuzz.so.0",
        "libpipewire-0.3.so.0",
        "libpulse.so.0",
        "libstdc++.so.6",
        "spa-0.2/support/libspa-support.so",
        "pipewire-0.3/libpipewire-module-protocol-native.so",
    ] {
        assert!(libdir.join(lib).exists(), "HMI runtime lacks {lib}");
    }
    assert!(hmi
        .join("share/fonts/truetype/dejavu/DejaVuSans.ttf")
        .is_file());
    assert!(hmi.join("share/X11/xkb/rules/evdev").is_file());
    assert!(hmi.join("etc/fonts/fonts.conf").is_file());
    // Trimmed: no docs, locales, headers, and no Mesa (drivers come from extensions).
    for dir in ["share/doc", "share/locale", "include", "share/man"] {
        assert!(!hmi.join(dir).exists(), "HMI runtime keeps {dir}");
    }
    assert!(
        !libdir.join("dri").exists(),
        "HMI runtime carries Mesa drivers"
    );

    // The SBOMs against the CycloneDX 1.5 schema. A file that does not exist must fail
    // the validator, so a validator that passes everything cannot hide here.
    let missing = e.p("missing.cdx.json");
    let v = Command::new(repo.join("scripts/validate-sbom"))
        .args(&sboms)
        .arg(&missing)
        .output()
        .unwrap();
    let report = text(&v);
    assert_eq!(v.status.code(), Some(1), "{report}");
    for sbom in &sboms {
        assert!(
            report.contains(&format!("{}: valid CycloneDX 1.5", s(sbom))),
            "{report}"
        );
    }
    assert!(
        report.contains(&format!("{}: not readable JSON", s(&missing))),
        "{report}"
    );

    // Carried through bundle create and install, and found by source package.
    let bundle = e.bundle_with(
        &fs::read_to_string(e.p("hmi/manifest.toml")).unwrap(),
        &hmi,
        "hmi.bundle",
        &["--sbom", s(&e.p("hmi/sbom.cdx.json"))],
    );
    e.ok(&["install", s(&bundle)]);
    let j = e
        .ok(&["--json", "sbom", "query", "pulseaudio", "--below", "99"])
        .json();
    let m = j["matches"].as_array().unwrap();
    assert_eq!(m.len(), 1, "{j}");
    assert_eq!(m[0]["package"], "libpulse0");
    assert_eq!(m[0]["id"], "org.appmgr.Hmi");
    let j = e
        .ok(&["--json", "sbom", "query", "pulseaudio", "--below", "1.0"])
        .json();
    assert!(j["matches"].as_array().unwrap().is_empty(), "{j}");
}

/// The load check fails where it must: the HMI definition as it was before it was
/// rebuilt (libwayland-client kept without the libpthread.so.0 it needs) is refused,
/// naming the object and the missing library.
#[test]
fn the_load_check_refuses_a_runtime_that_cannot_load() {
    require_root!("apt-get download into the machine-wide cache; check-load mounts");
    skip_if!(missing_tool(&[
        "apt-get", "dpkg-deb", "readelf", "file", "unshare"
    ]));
    let e = Env::new();
    let headless = fs::read_to_string(repo_root().join("runtimes/headless.toml")).unwrap();
    let def = headless
        .replace(
            "packages = [\"busybox-static\", \"libc6\", \"tzdata\"]",
            "packages = [\"busybox-static\", \"libc6\", \"tzdata\", \"libwayland-client0\", \"libffi8\"]",
        )
        .replace(
            "    \"lib64/ld-linux*.so*\",",
            "    \"lib64/ld-linux*.so*\",\n    \"lib/*-linux-gnu/libwayland-client.so.0*\",\n    \"lib/*-linux-gnu/libffi.so.8*\",",
        );
    assert_ne!(
        def, headless,
        "runtimes/headless.toml changed shape: update this test"
    );
    let p = e.p("broken.toml");
    fs::write(&p, def).unwrap();
    let tree = build(&p, &e.p("broken"));
    let o = check_load(&tree);
    let report = text(&o);
    assert_eq!(o.status.code(), Some(1), "{report}");
    assert!(
        report.contains("libwayland-client.so.0") && report.contains("does not load"),
        "{report}"
    );
    assert!(report.contains("libpthread.so.0 => not found"), "{report}");
    assert!(report.contains("1 do not load"), "{report}");
}
