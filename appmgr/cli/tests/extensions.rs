//! Extensions (`kind = "extension"`) end to end: signed bundles that appear inside the
//! runtime at their mount point while their conditions hold on the board profile, and
//! `permissions`/`info` say which one is mounted and why the others are not. What the
//! app sees is read from inside the sandbox, not from the plan.
use appmgr_testkit::*;
use std::fs;
use std::os::unix::fs::PermissionsExt;

const SCRIPT: &str = r#"#!/usr/bin/sh
echo "points:$(ls /usr/lib/extensions/gl | tr '\n' ' ')"
for x in a b; do
  [ -e /usr/lib/extensions/gl/$x/share/marker ] && echo "marker:$(cat /usr/lib/extensions/gl/$x/share/marker)"
done
echo "var:$APPMGR_TEST_GL"
echo "ld:$LD_LIBRARY_PATH"
if touch /usr/lib/extensions/gl/new 2>/dev/null; then echo "write-point:ok"; else echo "write-point:refused"; fi
for x in a b; do
  if [ -d /usr/lib/extensions/gl/$x ]; then
    if touch /usr/lib/extensions/gl/$x/share/new 2>/dev/null; then echo "write-ext:ok"; else echo "write-ext:refused"; fi
  fi
done
"#;

const ID: &str = "org.example.ExtUser";

/// A runtime (static busybox) with the extension point `/usr/lib/extensions/gl`.
fn runtime(e: &Env) -> std::path::PathBuf {
    let root = e.p("rt-ext");
    fs::create_dir_all(root.join("bin")).unwrap();
    fs::create_dir_all(root.join("lib/extensions/gl")).unwrap();
    fs::copy("/bin/busybox", root.join("bin/busybox")).expect("busybox-static is installed");
    std::os::unix::fs::symlink("busybox", root.join("bin/sh")).unwrap();
    e.bundle(&runtime_manifest("1.0.0"), &root, "rt-ext.bundle")
}

fn extension_manifest(name: &str, mount_point: &str, driver: &str) -> String {
    format!(
        "id = \"org.example.Platform.GL.{name}\"\nkind = \"extension\"\nversion = \"1.0.0\"\n\
         arch = \"{a}\"\nbranch = \"1\"\n\n[extension]\nextends = \"org.example.Platform/{a}/1\"\n\
         mount-point = \"{mount_point}\"\nlibrary-path = [\"lib\"]\n\n[extension.conditions]\n\
         gpu-driver = [\"{driver}\"]\n\n[extension.env]\nAPPMGR_TEST_GL = \"share\"\n",
        a = arch()
    )
}

fn extension(e: &Env, name: &str, mount_point: &str, driver: &str) -> std::path::PathBuf {
    let root = e.p(&format!("ext-{name}"));
    fs::create_dir_all(root.join("share")).unwrap();
    fs::create_dir_all(root.join("lib")).unwrap();
    fs::write(root.join("share/marker"), format!("{name}\n")).unwrap();
    e.bundle(
        &extension_manifest(name, mount_point, driver),
        &root,
        &format!("ext-{name}.bundle"),
    )
}

/// (id suffix → not-mounted reason or None) from `permissions --json`.
fn shown(e: &Env) -> Vec<(String, Option<String>)> {
    let j = e.ok(&["--json", "permissions", ID]).json();
    j["extensions"]
        .as_array()
        .expect("permissions lists extensions")
        .iter()
        .map(|x| {
            let r = x["ref"].as_str().unwrap();
            let name = r.split('/').nth(1).unwrap().rsplit('.').next().unwrap();
            (
                name.to_string(),
                x["not_mounted"].as_str().map(str::to_string),
            )
        })
        .collect()
}

fn run_lines(e: &Env) -> Vec<String> {
    let r = e.ok(&["run", ID]);
    r.stdout.lines().map(str::to_string).collect()
}

#[test]
fn the_boards_driver_extension_is_mounted_and_the_others_are_shown_not_mounted() {
    require_root!("namespaces and mounts");
    let e = Env::new();
    e.set_board_gpu_driver("llvmpipe");
    e.ok(&["install", s(&runtime(&e))]);
    let app = e.p("extapp");
    fs::create_dir_all(app.join("bin")).unwrap();
    fs::write(app.join("bin/hello"), SCRIPT).unwrap();
    fs::set_permissions(app.join("bin/hello"), fs::Permissions::from_mode(0o755)).unwrap();
    let m = app_manifest("1.0.0").replace("org.example.Hello", ID);
    e.ok(&["install", s(&e.bundle(&m, &app, "extapp.bundle"))]);

    // Before any extension: the point is empty, no variables.
    let l = run_lines(&e);
    assert!(l.contains(&"points:".to_string()), "{l:?}");
    assert!(
        l.contains(&"var:".to_string()) && l.contains(&"ld:".to_string()),
        "{l:?}"
    );
    assert_eq!(shown(&e), vec![]);

    for (name, mp, driver) in [
        ("a", "/usr/lib/extensions/gl/a", "llvmpipe"),
        ("b", "/usr/lib/extensions/gl/b", "panfrost"),
        ("c", "/usr/lib/nosuchpoint/c", "llvmpipe"),
    ] {
        e.ok(&["install", s(&extension(&e, name, mp, driver))]);
    }
    let list = e.ok(&["list"]).stdout;
    assert!(
        list.contains("extension org.example.Platform.GL.a "),
        "{list}"
    );

    // Shown: a mounted; b (another board's driver) and c (no such point) not, with why.
    let sh = shown(&e);
    assert_eq!(sh.len(), 3, "{sh:?}");
    assert_eq!(sh[0], ("a".to_string(), None));
    let why_b = sh[1].1.as_deref().expect("b is not mounted");
    assert!(
        why_b.contains("panfrost") && why_b.contains("llvmpipe"),
        "{why_b}"
    );
    let why_c = sh[2].1.as_deref().expect("c is not mounted");
    assert!(why_c.contains("/usr/lib/nosuchpoint"), "{why_c}");
    let text = e.ok(&["permissions", ID]).stdout;
    assert!(
        text.contains("org.example.Platform.GL.a 1.0.0: mounted at /usr/lib/extensions/gl/a"),
        "{text}"
    );
    assert!(
        text.contains(
            "org.example.Platform.GL.b 1.0.0: installed, not mounted: needs gpu-driver panfrost"
        ),
        "{text}"
    );
    let info = e.ok(&["info", "org.example.Platform.GL.b"]).stdout;
    assert!(
        info.contains("installed, not mounted: needs gpu-driver panfrost"),
        "{info}"
    );

    // An extension that would set a variable the launcher reserves, or take a mount point
    // inside another's, is shown not mounted; the app still launches.
    for (name, mp, from, to, why) in [
        (
            "d",
            "/usr/lib/extensions/gl/d",
            "APPMGR_TEST_GL",
            "PATH",
            "PATH, a variable the launcher reserves",
        ),
        (
            "e",
            "/usr/lib/extensions/gl/a",
            "APPMGR_TEST_GL",
            "APPMGR_TEST_GL",
            "overlaps /usr/lib/extensions/gl/a",
        ),
    ] {
        let root = e.p(&format!("ext-{name}"));
        fs::create_dir_all(&root).unwrap();
        let m = extension_manifest(name, mp, "llvmpipe").replace(from, to);
        e.ok(&[
            "install",
            s(&e.bundle(&m, &root, &format!("ext-{name}.bundle"))),
        ]);
        let sh = shown(&e);
        let got = sh.iter().find(|(n, _)| n == name).unwrap();
        assert!(
            got.1.as_deref().is_some_and(|r| r.contains(why)),
            "{name}: {sh:?}"
        );
        e.ok(&["remove", &format!("org.example.Platform.GL.{name}")]);
    }

    // Enforced as shown: only a is there, read-only, with its variables.
    let l = run_lines(&e);
    assert!(l.contains(&"points:a ".to_string()), "{l:?}");
    assert!(l.contains(&"marker:a".to_string()), "{l:?}");
    assert!(!l.contains(&"marker:b".to_string()), "{l:?}");
    assert!(
        l.contains(&"var:/usr/lib/extensions/gl/a/share".to_string()),
        "{l:?}"
    );
    assert!(
        l.contains(&"ld:/usr/lib/extensions/gl/a/lib".to_string()),
        "{l:?}"
    );
    assert!(l.contains(&"write-point:refused".to_string()), "{l:?}");
    assert!(l.contains(&"write-ext:refused".to_string()), "{l:?}");
    assert!(!l.iter().any(|x| x.ends_with(":ok")), "{l:?}");

    // Another board: the other driver, with nothing reinstalled.
    e.set_board_gpu_driver("panfrost");
    let sh = shown(&e);
    assert_eq!(sh[1], ("b".to_string(), None), "{sh:?}");
    assert!(sh[0]
        .1
        .as_deref()
        .unwrap()
        .contains("needs gpu-driver llvmpipe"));
    let l = run_lines(&e);
    assert!(l.contains(&"points:b ".to_string()), "{l:?}");
    assert!(
        l.contains(&"marker:b".to_string()) && !l.contains(&"marker:a".to_string()),
        "{l:?}"
    );
    assert!(
        l.contains(&"var:/usr/lib/extensions/gl/b/share".to_string()),
        "{l:?}"
    );

    // Removed: gone from the next launch (the kept plan is not used).
    e.ok(&["remove", "org.example.Platform.GL.b"]);
    let l = run_lines(&e);
    assert!(l.contains(&"points:".to_string()), "{l:?}");
    assert!(l.contains(&"var:".to_string()), "{l:?}");
    assert_eq!(shown(&e).len(), 2);
    e.fsck_clean();
}

#[test]
fn a_bad_extension_manifest_is_refused_naming_the_field_and_writes_nothing() {
    // Exit 3: a manifest that does not validate (docs/bundle-format.md).
    let e = Env::new();
    let root = e.p("ext-bad");
    fs::create_dir_all(&root).unwrap();
    for (from, to, field) in [
        (
            "/usr/lib/extensions/gl/a",
            "/etc/gl/a",
            "extension.mount-point",
        ),
        ("APPMGR_TEST_GL", "LD_PRELOAD", "extension.env"),
        (
            "gpu-driver = [\"llvmpipe\"]",
            "gpu-driver = [\"Bad Name\"]",
            "gpu-driver",
        ),
        ("[extension]\n", "[extensio]\n", "extensio"),
    ] {
        let m = extension_manifest("a", "/usr/lib/extensions/gl/a", "llvmpipe").replace(from, to);
        let mf = e.p("bad.toml");
        fs::write(&mf, &m).unwrap();
        let out = e.p("bad.bundle");
        let before = e.snapshot();
        let msg = e.fails(
            &[
                "bundle",
                "create",
                "--manifest",
                s(&mf),
                "--root",
                s(&root),
                "--key",
                s(&e.key),
                "--out",
                s(&out),
            ],
            3,
        );
        assert!(msg.contains(field), "{field}: {msg}");
        assert!(!out.exists(), "no bundle written for {field}");
        assert_eq!(e.snapshot(), before);
    }
}
