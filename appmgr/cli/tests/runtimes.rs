//! The runtimes `runtimes/build.py` builds from Debian packages (`runtimes/*.toml`: the
//! headless and HMI Platforms and their Sdks): every shared object in them loads with the
//! runtime's own loader (`runtimes/check-load`, so a runtime that cannot load never ships
//! again), their SBOMs are valid CycloneDX 1.5 (`scripts/validate-sbom`) and list every
//! package with dpkg's own version, the SBOM goes through bundle create and install to
//! `appmgr sbom query`, and an HMI app compiled in the Hmi Sdk, sandboxed by appmgr, runs
//! on the Hmi Platform. The four runtimes are built once per test run; package downloads
//! are cached machine-wide (`/var/cache/appmgr-debs`, build.py's default).
use appmgr_testkit::*;
use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

/// The definitions in `runtimes/`, by file stem.
const RUNTIMES: [&str; 4] = ["headless", "hmi", "headless-sdk", "hmi-sdk"];
/// The driver extension of the HMI runtime the tests build (llvmpipe: no GPU needed).
const GL: &str = "gl-llvmpipe";

/// Builds every definition of [`RUNTIMES`] once per test process, into cargo's scratch
/// directory for integration tests (`target/tmp/runtimes`: one copy, rebuilt by each run,
/// removed by `cargo clean`); `built().join(NAME)` holds `files/`, `manifest.toml` and
/// `sbom.cdx.json`.
fn built() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("runtimes");
        for name in RUNTIMES {
            let def = repo_root().join(format!("runtimes/{name}.toml"));
            build(&def, &dir.join(name), &[]);
        }
        // The GPU driver extension, against the built HMI runtime it extends.
        let def = repo_root().join(format!("runtimes/{GL}.toml"));
        build(&def, &dir.join(GL), &["--runtime", s(&dir.join("hmi"))]);
        dir
    })
}

/// The packages a definition names, with those of its bases (`base`: one or a list).
fn packages_of(def: &Path) -> BTreeSet<String> {
    let v: toml::Value = toml::from_str(&fs::read_to_string(def).unwrap()).unwrap();
    let gnu_type = format!("{}-linux-gnu", arch()).replace('_', "-");
    let mut out: BTreeSet<String> = ["packages".to_string(), format!("packages-{}", arch())]
        .iter()
        .filter_map(|k| v.get(k))
        .flat_map(|a| a.as_array().unwrap().iter())
        .map(|p| p.as_str().unwrap().replace("@GNU_TYPE@", &gnu_type))
        .collect();
    let bases = match v.get("base") {
        None => vec![],
        Some(toml::Value::String(b)) => vec![b.clone()],
        Some(toml::Value::Array(a)) => a.iter().map(|b| b.as_str().unwrap().to_string()).collect(),
        Some(other) => panic!("base = {other}"),
    };
    for b in bases {
        out.extend(packages_of(&def.parent().unwrap().join(b)));
    }
    out
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Builds `definition` (a path) into `out` with `more` options; returns the tree.
fn build(definition: &Path, out: &Path, more: &[&str]) -> PathBuf {
    let o = Command::new("python3")
        .arg(repo_root().join("runtimes/build.py"))
        .arg(definition)
        .args(["--arch", arch(), "--out", s(out)])
        .args(more)
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
    for name in RUNTIMES.into_iter().chain([GL]) {
        let def = repo.join(format!("runtimes/{name}.toml"));
        let out = built().join(name);
        let tree = out.join("files");
        let (bytes, files) = size(&tree);
        if name == GL {
            // Loaded by the test below, inside the sandbox, with the runtime it extends.
            eprintln!("extension {name}: {bytes} bytes, {files} files");
        } else {
            let o = check_load(&tree);
            assert!(o.status.success(), "{name}: {}", text(&o));
            eprintln!(
                "runtime {name}: {bytes} bytes, {files} files; {}",
                text(&o).trim()
            );
        }

        // Every package of the definition (and its bases), with dpkg's own version and a
        // purl.
        let sbom = out.join("sbom.cdx.json");
        let doc: serde_json::Value = serde_json::from_slice(&fs::read(&sbom).unwrap()).unwrap();
        let comps = doc["components"].as_array().unwrap();
        let wanted = packages_of(&def);
        assert_eq!(comps.len(), wanted.len(), "{name}: {doc}");
        for p in &wanted {
            let c = comps
                .iter()
                .find(|c| c["name"] == p.as_str())
                .unwrap_or_else(|| panic!("{name}: {p} missing from the SBOM"));
            assert_eq!(c["version"], deb_version(p).as_str(), "{name}: {p}");
            let purl = c["purl"].as_str().unwrap();
            assert!(purl.starts_with(&format!("pkg:deb/debian/{p}@")), "{purl}");
        }
        sboms.push(sbom);
    }

    // What an HMI app links against is there (and loaded above, with what it needs).
    let hmi = built().join("hmi/files");
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
    assert!(
        hmi.join("lib/extensions/gl").is_dir(),
        "no GL extension point"
    );
    // The extension carries only what the runtime lacks: no library of the runtime again.
    let gl_lib = built()
        .join(GL)
        .join(format!("files/lib/{}-linux-gnu", arch()));
    for f in fs::read_dir(&gl_lib).unwrap() {
        let n = f.unwrap().file_name();
        assert!(
            !libdir.join(&n).exists(),
            "{GL} repeats the runtime's {n:?}"
        );
    }
    assert!(gl_lib.join("dri/swrast_dri.so").is_file());

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
        &fs::read_to_string(built().join("hmi/manifest.toml")).unwrap(),
        &hmi,
        "hmi.bundle",
        &["--sbom", s(&built().join("hmi/sbom.cdx.json"))],
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

    // Extensions answer too: Mesa is in the driver extension, not in the runtime.
    let ext = built().join(GL);
    let bundle = e.bundle_with(
        &fs::read_to_string(ext.join("manifest.toml")).unwrap(),
        &ext.join("files"),
        "gl.bundle",
        &["--sbom", s(&ext.join("sbom.cdx.json"))],
    );
    e.ok(&["install", s(&bundle)]);
    let j = e.ok(&["--json", "sbom", "query", "mesa"]).json();
    let ids: BTreeSet<&str> = j["matches"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, BTreeSet::from(["org.appmgr.Hmi.GL.llvmpipe"]), "{j}");
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
    let tree = build(&p, &e.p("broken"), &[]);
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

/// The manifest of app `id` 1.0.0 on runtime `runtime` (branch 1), running `command`.
fn app_of(id: &str, runtime: &str, command: &str) -> String {
    app_manifest("1.0.0")
        .replace("org.example.Hello", id)
        .replace("org.example.Platform", runtime)
        .replace("command = \"hello\"", &format!("command = \"{command}\""))
}

/// Where an app is built: an app whose runtime is an Sdk runs its build script sandboxed
/// by appmgr (its own uid, the Sdk read-only at /usr, the sources read-only at /app) and
/// compiles into its HOME; the result, bundled against the Platform, runs there.
#[test]
fn an_hmi_app_compiled_in_the_sdk_runs_on_the_platform() {
    require_root!("apt-get download into the machine-wide cache; installs and runs apps");
    skip_if!(missing_tool(&[
        "apt-get", "dpkg-deb", "readelf", "file", "unshare"
    ]));
    let e = Env::new();
    install_built(&e, &["hmi", "hmi-sdk"]);
    let src = repo_root().join("runtimes/examples/hmi-probe");
    let builder = e.bundle(
        &app_of("org.appmgr.test.HmiBuilder", "org.appmgr.Hmi.Sdk", "build"),
        &src,
        "builder.bundle",
    );
    e.ok(&["install", s(&builder)]);
    let r = e.ok(&["run", "org.appmgr.test.HmiBuilder"]);
    assert!(
        r.stdout.contains("built /home/app/out/hmi-probe"),
        "{}{}",
        r.stdout,
        r.stderr
    );

    // What the sandboxed build wrote, owned by the builder's uid, becomes an app of the
    // Platform (which has no compiler and no headers).
    let out = e
        .state
        .join("data/org.appmgr.test.HmiBuilder/out/hmi-probe");
    let uid = e
        .ok(&["--json", "info", "org.appmgr.test.HmiBuilder"])
        .json()["uid"]
        .as_u64()
        .unwrap();
    use std::os::unix::fs::MetadataExt;
    assert_eq!(fs::metadata(&out).unwrap().uid() as u64, uid);
    let platform = built().join("hmi/files");
    assert!(!platform.join("bin/gcc").exists() && !platform.join("include").exists());
    let app_root = e.p("hmi-app");
    fs::create_dir_all(app_root.join("bin")).unwrap();
    fs::copy(&out, app_root.join("bin/hmi-probe")).unwrap();
    let app = e.bundle(
        &app_of("org.appmgr.test.Hmi", "org.appmgr.Hmi", "hmi-probe"),
        &app_root,
        "hmi-app.bundle",
    );
    e.ok(&["install", s(&app)]);
    let r = e.ok(&["run", "org.appmgr.test.Hmi"]);
    // A keymap compiled from the Platform's xkb data, its font found by fontconfig and
    // opened by freetype, PipeWire's client library (the version the SBOM names), EGL
    // through glvnd; no compositor is granted, so none is reached.
    let sbom: serde_json::Value =
        serde_json::from_slice(&fs::read(built().join("hmi/sbom.cdx.json")).unwrap()).unwrap();
    let pw = sbom["components"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "libpipewire-0.3-0")
        .unwrap()["version"]
        .as_str()
        .unwrap()
        .split('-')
        .next()
        .unwrap()
        .to_string();
    assert_eq!(
        r.stdout.trim(),
        format!(
            "keymap=ok font=/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf family=DejaVu Sans \
             pipewire={pw} egl=ok wayland=none"
        ),
        "{}",
        r.stderr
    );
}

/// Installs the HMI Platform, its Sdk and the llvmpipe driver extension into `e` (with a
/// board profile naming `driver`), compiles the HMI demo in the Sdk and installs it as
/// `org.appmgr.test.HmiDemo` on the Platform.
pub fn hmi_demo_env(driver: &str) -> Env {
    let e = Env::new();
    e.set_board_gpu_driver(driver);
    install_built(&e, &["hmi", "hmi-sdk", GL]);
    let src = repo_root().join("runtimes/examples/hmi-demo");
    let builder = e.bundle(
        &app_of(
            "org.appmgr.test.HmiDemoBuilder",
            "org.appmgr.Hmi.Sdk",
            "build",
        ),
        &src,
        "demo-builder.bundle",
    );
    e.ok(&["install", s(&builder)]);
    let r = e.ok(&["run", "org.appmgr.test.HmiDemoBuilder"]);
    assert!(
        r.stdout.contains("built /home/app/out/hmi-demo"),
        "{}{}",
        r.stdout,
        r.stderr
    );
    let root = e.p("hmi-demo-app");
    fs::create_dir_all(root.join("bin")).unwrap();
    fs::copy(
        e.state
            .join("data/org.appmgr.test.HmiDemoBuilder/out/hmi-demo"),
        root.join("bin/hmi-demo"),
    )
    .unwrap();
    let app = e.bundle(
        &app_of("org.appmgr.test.HmiDemo", "org.appmgr.Hmi", "hmi-demo"),
        &root,
        "hmi-demo.bundle",
    );
    e.ok(&["install", s(&app)]);
    e
}

/// Signs and installs the built runtimes and extensions `names` into `e`.
fn install_built(e: &Env, names: &[&str]) {
    for name in names {
        let out = built().join(name);
        let b = e.bundle(
            &fs::read_to_string(out.join("manifest.toml")).unwrap(),
            &out.join("files"),
            &format!("{name}.bundle"),
        );
        e.ok(&["install", s(&b)]);
    }
}

/// The board's GPU driver comes from its extension, not from the runtime: with
/// `gpu-driver = "llvmpipe"` the demo renders its picture through Mesa's llvmpipe inside
/// the sandbox (read back from the GPU driver, pixel by pixel); on a board that names
/// another driver the same app finds no driver, and `permissions` says why.
#[test]
fn the_boards_driver_extension_renders_in_the_sandbox() {
    require_root!("apt-get download into the machine-wide cache; installs and runs apps");
    skip_if!(missing_tool(&[
        "apt-get", "dpkg-deb", "readelf", "file", "unshare"
    ]));
    let e = hmi_demo_env("llvmpipe");
    let id = "org.appmgr.test.HmiDemo";
    let r = e.ok(&["run", id, "--", "--offscreen"]);
    let out = r.stdout.trim();
    assert!(
        out.starts_with("renderer=llvmpipe (LLVM 15"),
        "{out}{}",
        r.stderr
    );
    assert!(
        out.ends_with("left=2060c0 right=e08010 middle=10c040"),
        "{out}"
    );
    let p = e.ok(&["--json", "permissions", id]).json();
    let x = &p["extensions"][0];
    assert_eq!(
        x["ref"],
        format!("extension/org.appmgr.Hmi.GL.llvmpipe/{}/1", arch())
    );
    assert_eq!(x["mount_point"], "/usr/lib/extensions/gl/llvmpipe");
    assert!(x.get("not_mounted").is_none(), "{p}");

    // Another board: installed, not mounted, and the app has no GL driver.
    e.set_board_gpu_driver("panfrost");
    let r = e.run(&["run", id, "--", "--offscreen"]);
    assert_ne!(r.code, 0, "rendered without a driver: {}", r.stdout);
    assert!(r.stderr.contains("hmi-demo: "), "{}", r.stderr);
    let t = e.ok(&["permissions", id]).stdout;
    assert!(
        t.contains("org.appmgr.Hmi.GL.llvmpipe 22.3.6: installed, not mounted: needs gpu-driver llvmpipe; the board profile names panfrost"),
        "{t}"
    );
}

/// Every board profile's `gpu-driver` has a driver extension definition, and each builds
/// for its boards' architecture against the HMI runtime of that architecture: one
/// driver, libEGL_mesa and glvnd's JSON, nothing the runtime has, and a manifest whose
/// condition names the driver. (Only llvmpipe renders here: there is no GPU.)
#[test]
fn every_boards_driver_extension_builds() {
    require_root!("apt-get download into the machine-wide cache");
    skip_if!(missing_tool(&["apt-get", "dpkg-deb", "readelf"]));
    skip_if!((arch() != "x86_64").then_some("the aarch64 cross build runs on x86_64 hosts"));
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("driver-extensions");
    let repo = repo_root();
    let boards = repo.join("board-support");
    let mut wanted: BTreeSet<(String, String)> = BTreeSet::new();
    for f in fs::read_dir(&boards).unwrap() {
        let f = f.unwrap().path();
        if f.extension().is_some_and(|x| x == "toml") {
            let v: toml::Value = toml::from_str(&fs::read_to_string(&f).unwrap()).unwrap();
            let driver = v["gpu-driver"]
                .as_str()
                .unwrap_or_else(|| panic!("{f:?}: no gpu-driver"));
            wanted.insert((v["arch"].as_str().unwrap().to_string(), driver.to_string()));
        }
    }
    wanted.insert(("x86_64".into(), "virgl".into()));
    for (a, driver) in &wanted {
        let rt = dir.join(format!("hmi-{a}"));
        if !rt.join("manifest.toml").exists() {
            let o = Command::new("python3")
                .arg(repo.join("runtimes/build.py"))
                .arg(repo.join("runtimes/hmi.toml"))
                .args(["--arch", a, "--out", s(&rt)])
                .output()
                .unwrap();
            assert!(o.status.success(), "hmi {a}: {}", text(&o));
        }
        let def = repo.join(format!("runtimes/gl-{driver}.toml"));
        assert!(
            def.is_file(),
            "no driver extension for gpu-driver {driver} ({a})"
        );
        let out = dir.join(format!("gl-{driver}-{a}"));
        let o = Command::new("python3")
            .arg(repo.join("runtimes/build.py"))
            .arg(&def)
            .args(["--arch", a, "--out", s(&out), "--runtime", s(&rt)])
            .output()
            .unwrap();
        assert!(o.status.success(), "gl-{driver} {a}: {}", text(&o));
        let triplet = format!("{a}-linux-gnu");
        let lib = out.join(format!("files/lib/{triplet}"));
        let drivers: Vec<String> = fs::read_dir(lib.join("dri"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        let file = if driver == "llvmpipe" {
            "swrast_dri.so".to_string()
        } else if driver == "virgl" {
            "virtio_gpu_dri.so".to_string()
        } else {
            format!("{driver}_dri.so")
        };
        assert_eq!(drivers, vec![file], "gl-{driver} {a}");
        assert!(lib.join("libEGL_mesa.so.0").exists());
        assert!(out
            .join("files/share/glvnd/egl_vendor.d/50_mesa.json")
            .is_file());
        let rt_lib = rt.join(format!("files/lib/{triplet}"));
        for f in fs::read_dir(&lib).unwrap() {
            let n = f.unwrap().file_name();
            assert!(
                !rt_lib.join(&n).exists(),
                "gl-{driver} {a} repeats the runtime's {n:?}"
            );
        }
        let m: toml::Value =
            toml::from_str(&fs::read_to_string(out.join("manifest.toml")).unwrap()).unwrap();
        let x = &m["extension"];
        assert_eq!(
            x["extends"].as_str(),
            Some(format!("org.appmgr.Hmi/{a}/1").as_str())
        );
        assert_eq!(
            x["mount-point"].as_str(),
            Some(format!("/usr/lib/extensions/gl/{driver}").as_str())
        );
        assert_eq!(
            x["conditions"]["gpu-driver"][0].as_str(),
            Some(driver.as_str())
        );
        assert_eq!(
            x["env"]["LIBGL_DRIVERS_PATH"].as_str(),
            Some(format!("lib/{triplet}/dri").as_str())
        );
        // Signs and verifies as a bundle.
        let e = Env::new();
        e.bundle(
            &fs::read_to_string(out.join("manifest.toml")).unwrap(),
            &out.join("files"),
            &format!("gl-{driver}-{a}.bundle"),
        );
        eprintln!(
            "driver extension gl-{driver} ({a}): {:?}",
            size(&out.join("files"))
        );
    }
}
