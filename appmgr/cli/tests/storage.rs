//! `storage-max`, as root on the host: an app's HOME is its own ext4 file system of that
//! size (a loop-mounted image), so filling it ends in ENOSPC for that app while other
//! apps and installs proceed; the image follows the limit across policy changes without
//! losing a file; a malformed or too small limit is refused and changes nothing.
use appmgr_testkit::*;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

const SCRIPT: &str = r#"#!/usr/bin/sh
case "$1" in
  fill)
    dd if=/dev/zero of="$HOME/fill" bs=64k count="$(($2 * 16))" 2>&1
    echo "rc=$?"
    echo "size=$(wc -c < "$HOME/fill")" ;;
  put)
    echo "$2" > "$HOME/keep" && mkdir -p "$HOME/sub" && echo deep > "$HOME/sub/file" \
      && ln -sf keep "$HOME/link" && echo put ;;
  get)
    echo "keep=$(cat "$HOME/keep")"
    echo "deep=$(cat "$HOME/sub/file")"
    echo "link=$(readlink "$HOME/link")" ;;
  statfs)
    echo "statfs=$(stat -f -c '%b %S' "$HOME")"
    echo "owner=$(stat -c '%u' "$HOME")" ;;
  *) echo usage; exit 2 ;;
esac
"#;

/// App IDs are global on the host (cgroups), and the tests run in parallel: each test
/// has its own pair.
struct Ids {
    limited: String,
    other: String,
}

fn ids(test: &str) -> Ids {
    Ids {
        limited: format!("org.example.Storage{test}Limited"),
        other: format!("org.example.Storage{test}Other"),
    }
}

fn policy(e: &Env, i: &Ids, limit: Option<&str>) {
    let (lim, oth) = (&i.limited, &i.other);
    let mut text = format!("[[rule]]\napps = [\"{oth}\"]\nresources = {{ pids-max = 64 }}\n");
    text.push_str(&format!("\n[[rule]]\napps = [\"{lim}\"]\n"));
    if let Some(l) = limit {
        text.push_str(&format!("resources = {{ storage-max = {l} }}\n"));
    }
    fs::create_dir_all(e.cfg.join("policies.d")).unwrap();
    fs::write(e.cfg.join("policies.d/50-test.toml"), text).unwrap();
}

fn app(e: &Env, id: &str, version: &str) -> PathBuf {
    let root = e.p(&format!("app-{id}-{version}"));
    fs::create_dir_all(root.join("bin")).unwrap();
    fs::write(root.join("bin/hello"), SCRIPT).unwrap();
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(root.join("bin/hello"), fs::Permissions::from_mode(0o755)).unwrap();
    e.bundle(
        &app_manifest(version).replace("org.example.Hello", id),
        &root,
        &format!("{id}-{version}.bundle"),
    )
}

fn setup(i: &Ids, limit: Option<&str>) -> Option<Env> {
    if !is_root() {
        eprintln!("skipped: needs root (loop devices, mounts, namespaces)");
        return None;
    }
    if !Path::new("/dev/loop-control").exists() {
        eprintln!("skipped: no /dev/loop-control (loop driver missing)");
        return None;
    }
    let e = Env::new();
    policy(&e, i, limit);
    e.ok(&["install", s(&e.runtime_bundle("1.0.0"))]);
    e.ok(&["install", s(&app(&e, &i.limited, "1.0.0"))]);
    e.ok(&["install", s(&app(&e, &i.other, "1.0.0"))]);
    Some(e)
}

fn image(e: &Env, i: &Ids) -> PathBuf {
    e.state.join("storage").join(format!("{}.img", i.limited))
}

fn value(out: &str, key: &str) -> String {
    out.lines()
        .find_map(|l| l.strip_prefix(&format!("{key}=")))
        .unwrap_or_else(|| panic!("no {key}= in {out:?}"))
        .trim()
        .to_string()
}

/// (total bytes, owner uid) of HOME as the app sees it.
fn home_fs(e: &Env, id: &str) -> (u64, u32) {
    let r = e.ok(&["run", id, "--", "statfs"]);
    let st = value(&r.stdout, "statfs");
    let (blocks, bsize) = st.split_once(' ').unwrap();
    let total = blocks.parse::<u64>().unwrap() * bsize.parse::<u64>().unwrap();
    (total, value(&r.stdout, "owner").parse().unwrap())
}

fn digest(p: &Path) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    fs::read(p).unwrap().hash(&mut h);
    h.finish()
}

fn uid_of(e: &Env, id: &str) -> u32 {
    e.ok(&["--json", "info", id]).json()["uid"]
        .as_u64()
        .unwrap() as u32
}

fn shown_storage_max(e: &Env, id: &str) -> Option<String> {
    let j = e.ok(&["--json", "permissions", id]).json();
    let text = j.to_string();
    assert!(
        !text.contains("\"4Q\""),
        "a malformed value must never be shown: {text}"
    );
    j["limits"]["storage-max"].as_str().map(str::to_string)
}

#[test]
fn filling_home_ends_in_enospc_at_storage_max_and_others_proceed() {
    let i = ids("Fill");
    let (lim, oth) = (i.limited.as_str(), i.other.as_str());
    let Some(e) = setup(&i, Some("\"4M\"")) else {
        return;
    };
    // Shown == enforced: permissions shows 4M, the app sees a file system of at most
    // 4M (its own metadata included) that it owns, backed by a 4M image.
    assert_eq!(shown_storage_max(&e, lim).as_deref(), Some("4M"));
    let (total, owner) = home_fs(&e, lim);
    assert!(
        (5 << 19..=4 << 20).contains(&total),
        "HOME is {total} bytes for storage-max=4M"
    );
    assert_eq!(owner, uid_of(&e, lim));
    let md = fs::symlink_metadata(image(&e, &i)).unwrap();
    assert_eq!(md.len(), 4 << 20);
    assert_eq!((md.uid(), md.mode() & 0o777), (0, 0o600));
    assert!(
        md.blocks() * 512 >= 4 << 20,
        "the image's space is allocated up front: {} blocks",
        md.blocks()
    );

    let r = e.ok(&["run", lim, "--", "fill", "8"]);
    assert!(r.stdout.contains("No space left"), "{}", r.stdout);
    assert_ne!(value(&r.stdout, "rc"), "0", "{}", r.stdout);
    let size: u64 = value(&r.stdout, "size").parse().unwrap();
    assert!(
        size > 5 << 19 && size <= 4 << 20,
        "wrote {size} bytes under storage-max=4M"
    );
    // The host file system did not take those bytes: the image is still 4M.
    assert_eq!(fs::symlink_metadata(image(&e, &i)).unwrap().len(), 4 << 20);

    // Everyone else proceeds: another app writes twice that, an install succeeds.
    let r = e.ok(&["run", oth, "--", "fill", "8"]);
    assert_eq!(value(&r.stdout, "rc"), "0", "{}", r.stdout);
    assert_eq!(value(&r.stdout, "size"), (8u64 << 20).to_string());
    e.ok(&["install", s(&app(&e, oth, "1.1.0"))]);
    // The full app still starts, and its file is still there.
    let r = e.ok(&["run", lim, "--", "fill", "1"]);
    assert!(r.stdout.contains("No space left") || value(&r.stdout, "rc") == "0");
    e.fsck_clean();
}

#[test]
fn a_malformed_storage_max_is_refused_naming_it_and_nothing_is_written() {
    let i = ids("Bad");
    let lim = i.limited.as_str();
    let Some(e) = setup(&i, None) else {
        return;
    };
    policy(&e, &i, Some("\"4Q\""));
    let before = e.snapshot();
    for args in [vec!["run", lim, "--", "statfs"], vec!["permissions", lim]] {
        let msg = e.fails(&args, 4);
        assert!(msg.contains("50-test.toml"), "{msg}");
        assert!(msg.contains("storage-max"), "{msg}");
        assert!(msg.contains("4Q"), "{msg}");
    }
    // A size below the minimum is refused the same way.
    policy(&e, &i, Some("\"512K\""));
    let msg = e.fails(&["run", lim, "--", "statfs"], 4);
    assert!(msg.contains("storage-max") && msg.contains("512K"), "{msg}");
    assert_eq!(
        before,
        e.snapshot(),
        "a refused policy changed the state dir"
    );
    assert!(!e.state.join("storage").exists());
}

#[test]
fn the_image_follows_the_limit_and_no_file_is_lost() {
    let i = ids("Follow");
    let lim = i.limited.as_str();
    let Some(e) = setup(&i, None) else {
        return;
    };
    let uid = uid_of(&e, lim);
    let data = e.state.join("data").join(lim);
    e.ok(&["run", lim, "--", "put", "first"]);
    let get = |e: &Env| {
        let r = e.ok(&["run", lim, "--", "get"]);
        (
            value(&r.stdout, "keep"),
            value(&r.stdout, "deep"),
            value(&r.stdout, "link"),
        )
    };
    let expected = ("first".to_string(), "deep".to_string(), "keep".to_string());
    assert_eq!(get(&e), expected);

    // A limit appears: the files move into an 8M image; the plain dir is emptied.
    policy(&e, &i, Some("\"8M\""));
    assert_eq!(get(&e), expected);
    assert_eq!(fs::symlink_metadata(image(&e, &i)).unwrap().len(), 8 << 20);
    assert_eq!(fs::read_dir(&data).unwrap().count(), 0);
    let (small, owner) = home_fs(&e, lim);
    assert!(small <= 8 << 20 && owner == uid, "{small} {owner}");

    // It grows.
    policy(&e, &i, Some("\"16M\""));
    assert_eq!(get(&e), expected);
    let (big, _) = home_fs(&e, lim);
    assert!(big > 12 << 20 && big <= 16 << 20, "{big}");
    let md = fs::symlink_metadata(image(&e, &i)).unwrap();
    assert_eq!(md.len(), 16 << 20);
    assert!(
        md.blocks() * 512 >= 16 << 20,
        "the grown image's space is not allocated: {} blocks",
        md.blocks()
    );

    // A shrink below what the files need is refused; the image is untouched. (The
    // pause makes the last mount later than the last check, so resize2fs asks for an
    // e2fsck first: the refusal must come before it, the fitting shrink after it.)
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let r = e.ok(&["run", lim, "--", "fill", "6"]);
    assert_eq!(value(&r.stdout, "rc"), "0", "{}", r.stdout);
    policy(&e, &i, Some("\"4M\""));
    let before = digest(&image(&e, &i));
    let msg = e.fails(&["run", lim, "--", "get"], 4);
    assert!(
        msg.contains("does not fit storage-max=4M"),
        "expected a clear refusal: {msg}"
    );
    assert!(
        before == digest(&image(&e, &i)),
        "a refused shrink changed the image"
    );
    // A shrink that fits works.
    policy(&e, &i, Some("\"10M\""));
    assert_eq!(get(&e), expected);
    assert_eq!(fs::symlink_metadata(image(&e, &i)).unwrap().len(), 10 << 20);

    // The limit goes: the files come back into the plain dir, owned by the app.
    policy(&e, &i, None);
    assert_eq!(get(&e), expected);
    assert!(!image(&e, &i).exists());
    assert_eq!(fs::read_to_string(data.join("keep")).unwrap(), "first\n");
    for p in ["keep", "sub", "sub/file", "link", "fill"] {
        let md = fs::symlink_metadata(data.join(p)).unwrap();
        assert_eq!((md.uid(), md.gid()), (uid, uid), "{p}");
    }
    assert!(!data.join("lost+found").exists());
    assert_eq!(fs::metadata(data.join("fill")).unwrap().len(), 6 << 20);
}

#[test]
fn a_tampered_image_is_refused_and_left_alone() {
    let i = ids("Tamper");
    let lim = i.limited.as_str();
    let Some(e) = setup(&i, Some("\"4M\"")) else {
        return;
    };
    e.ok(&["run", lim, "--", "put", "x"]);
    let img = image(&e, &i);
    // An image whose file system root is not the app's (root's here): the launcher
    // checks the mounted root's owner and refuses.
    let moved = e.p("saved.img");
    fs::rename(&img, &moved).unwrap();
    let f = fs::File::create(&img).unwrap();
    f.set_len(4 << 20).unwrap();
    drop(f);
    fs::set_permissions(&img, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let st = std::process::Command::new("mkfs.ext4")
        .args(["-q", "-F", "-E", "root_owner=0:0"])
        .arg(&img)
        .status()
        .unwrap();
    assert!(st.success());
    // Mounting updates the superblock's mount time; what must not change is any file.
    let files = |img: &Path| {
        let out = std::process::Command::new("debugfs")
            .args(["-R", "ls -p /"])
            .arg(img)
            .output()
            .unwrap();
        assert!(out.status.success());
        String::from_utf8(out.stdout).unwrap()
    };
    let before = files(&img);
    let msg = e.fails(&["run", lim, "--", "get"], 4);
    assert!(
        msg.contains("refusing to launch") && msg.contains("owned by uid 0"),
        "{msg}"
    );
    assert_eq!(before, files(&img), "the refused image's files changed");
    // A symlink in place of the image: refused before anything is touched.
    fs::remove_file(&img).unwrap();
    std::os::unix::fs::symlink(&moved, &img).unwrap();
    let msg = e.fails(&["run", lim, "--", "get"], 4);
    assert!(msg.contains("not a root-owned regular file"), "{msg}");
    assert!(fs::symlink_metadata(&img).unwrap().file_type().is_symlink());
    // The real image back: the app's files are all there.
    fs::remove_file(&img).unwrap();
    fs::rename(&moved, &img).unwrap();
    let r = e.ok(&["run", lim, "--", "get"]);
    assert_eq!(value(&r.stdout, "keep"), "x");
}

/// Unmounts the small state file system when the test ends, however it ends.
struct Mounted(PathBuf);
impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

#[test]
fn an_app_without_a_limit_cannot_take_the_space_installs_need() {
    if !is_root() || !Path::new("/dev/loop-control").exists() {
        eprintln!("skipped: needs root and loop devices");
        return;
    }
    // The state dir on its own small ext4 whose root-reserved blocks (24M) are the
    // room for installs: app uids never get them, appmgr (root) does.
    let i = ids("Reserve");
    let oth = i.other.as_str();
    let e = Env::new();
    let img = e.p("state.img");
    let f = fs::File::create(&img).unwrap();
    f.set_len(96 << 20).unwrap();
    drop(f);
    let st = std::process::Command::new("mkfs.ext4")
        .args(["-q", "-F", "-m", "25"])
        .arg(&img)
        .status()
        .unwrap();
    assert!(st.success());
    fs::create_dir_all(&e.state).unwrap();
    let st = std::process::Command::new("mount")
        .args(["-o", "loop"])
        .arg(&img)
        .arg(&e.state)
        .status()
        .unwrap();
    assert!(st.success());
    let _m = Mounted(e.state.clone());
    policy(&e, &i, None);
    e.ok(&["install", s(&e.runtime_bundle("1.0.0"))]);
    e.ok(&["install", s(&app(&e, oth, "1.0.0"))]);

    let r = e.ok(&["run", oth, "--", "fill", "200"]);
    assert!(r.stdout.contains("No space left"), "{}", r.stdout);
    let written: u64 = value(&r.stdout, "size").parse().unwrap();
    let out = std::process::Command::new("stat")
        .args(["-f", "-c", "%a %S"])
        .arg(&e.state)
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    let (avail, bsize) = text.trim().split_once(' ').unwrap();
    let avail = avail.parse::<u64>().unwrap() * bsize.parse::<u64>().unwrap();
    assert!(
        avail < 1 << 20,
        "the app did not fill the file system ({written} bytes written)"
    );
    // The update still installs, into the space the app could not take, and runs.
    e.ok(&["install", s(&app(&e, oth, "1.1.0"))]);
    assert_eq!(e.app_state_of(oth).unwrap().0, "1.1.0");
    e.ok(&["run", oth, "--", "get"]);
    e.fsck_clean();
}
