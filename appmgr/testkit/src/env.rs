//! The install environment: a private state and config dir, a trusted key, a small but
//! real runtime (static busybox) and app trees, the `appmgr` CLI run against them, and a
//! snapshot of the state dir so a refused command can be proven to have changed nothing.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::bin;

pub struct Env {
    pub dir: tempfile::TempDir,
    pub state: PathBuf,
    pub cfg: PathBuf,
    pub key: PathBuf,
}

pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {}", self.stdout))
    }
}

impl Env {
    /// A fresh environment with a generated vendor key that the config dir trusts. (Not
    /// `Default`: it runs the CLI.)
    #[allow(clippy::new_without_default)]
    pub fn new() -> Env {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let cfg = dir.path().join("etc");
        let e = Env {
            key: dir.path().join("vendor.key"),
            dir,
            state,
            cfg,
        };
        e.ok(&["key", "generate", "--out", e.p("vendor").to_str().unwrap()]);
        e.ok(&["trust", "add", e.p("vendor.pub").to_str().unwrap()]);
        e
    }

    pub fn p(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(bin());
        c.args(["--state-dir", self.state.to_str().unwrap()])
            .args(["--config-dir", self.cfg.to_str().unwrap()])
            .args(args)
            .env_remove("APPMGR_STATE_DIR")
            .env_remove("APPMGR_CONFIG_DIR");
        c
    }

    pub fn run(&self, args: &[&str]) -> Run {
        // `appmgr run` commands of one test binary take turns: its tests install the same
        // app IDs (the demo app) in their own state dirs, and on a cgroup v1 host the same
        // ID has the same cgroup in every state dir, so one run's cleanup would remove it
        // under another's join.
        static RUN_TURN: std::sync::Mutex<()> = std::sync::Mutex::new(());
        let _turn = args
            .contains(&"run")
            .then(|| RUN_TURN.lock().unwrap_or_else(|p| p.into_inner()));
        let Output {
            status,
            stdout,
            stderr,
        } = self.cmd(args).output().unwrap();
        Run {
            code: status.code().unwrap_or(128 + 9),
            stdout: String::from_utf8_lossy(&stdout).into_owned(),
            stderr: String::from_utf8_lossy(&stderr).into_owned(),
        }
    }

    pub fn ok(&self, args: &[&str]) -> Run {
        let r = self.run(args);
        assert_eq!(
            r.code, 0,
            "appmgr {args:?} failed: {}{}",
            r.stdout, r.stderr
        );
        r
    }

    /// Runs and expects exit `code` with a one-line error on stderr; returns the message.
    pub fn fails(&self, args: &[&str], code: i32) -> String {
        let r = self.run(args);
        assert_eq!(
            r.code, code,
            "appmgr {args:?}: expected exit {code}, got {}: {}{}",
            r.code, r.stdout, r.stderr
        );
        let lines: Vec<&str> = r.stderr.lines().collect();
        assert_eq!(lines.len(), 1, "error must be one line: {:?}", r.stderr);
        assert!(lines[0].starts_with("appmgr: "), "{}", lines[0]);
        lines[0].to_string()
    }

    /// Builds and signs a bundle from a tree.
    pub fn bundle(&self, manifest: &str, root: &Path, out: &str) -> PathBuf {
        self.bundle_with(manifest, root, out, &[])
    }

    /// [`Env::bundle`] with more `bundle create` options (`--sbom FILE`, ...).
    pub fn bundle_with(&self, manifest: &str, root: &Path, out: &str, more: &[&str]) -> PathBuf {
        self.bundle_signed(manifest, root, out, &self.key, more)
    }

    /// [`Env::bundle_with`] signed with another `key` (a `NAME.key` file).
    pub fn bundle_signed(
        &self,
        manifest: &str,
        root: &Path,
        out: &str,
        key: &Path,
        more: &[&str],
    ) -> PathBuf {
        let m = self.p(&format!("{out}.toml"));
        fs::write(&m, manifest).unwrap();
        let outp = self.p(out);
        let mut args = vec![
            "bundle",
            "create",
            "--manifest",
            m.to_str().unwrap(),
            "--root",
            root.to_str().unwrap(),
            "--key",
            key.to_str().unwrap(),
            "--out",
            outp.to_str().unwrap(),
        ];
        args.extend_from_slice(more);
        self.ok(&args);
        outp
    }

    /// A runtime with a static busybox as /usr/bin/sh.
    pub fn runtime_bundle(&self, version: &str) -> PathBuf {
        let root = self.p(&format!("rt-{version}"));
        if !root.exists() {
            fs::create_dir_all(root.join("bin")).unwrap();
            fs::create_dir_all(root.join("etc")).unwrap();
            fs::copy("/bin/busybox", root.join("bin/busybox"))
                .expect("busybox-static is installed");
            std::os::unix::fs::symlink("busybox", root.join("bin/sh")).unwrap();
            fs::write(
                root.join("etc/os-release"),
                format!("ID=test\nVERSION_ID={version}\n"),
            )
            .unwrap();
        }
        self.bundle(
            &runtime_manifest(version),
            &root,
            &format!("rt-{version}.bundle"),
        )
    }

    /// An app whose files differ by version.
    pub fn app_bundle(&self, version: &str) -> PathBuf {
        self.app_bundle_with(version, "")
    }

    pub fn app_bundle_with(&self, version: &str, extra_manifest: &str) -> PathBuf {
        let root = self.p(&format!("app-{version}"));
        if !root.exists() {
            write_hello(&root, version);
            fs::create_dir_all(root.join("share")).unwrap();
            fs::write(root.join("share/data"), vec![b'd'; 100_000]).unwrap();
            fs::write(root.join("share/version"), version).unwrap();
        }
        let name = format!("app-{version}-{:x}.bundle", fxhash(extra_manifest));
        self.bundle(
            &format!("{}{extra_manifest}", app_manifest(version)),
            &root,
            &name,
        )
    }

    /// Installs app `id` whose command `/app/bin/hello` is `script`, with `extra` appended
    /// to its manifest (e.g. a `[permissions]` table). The runtime must be installed.
    pub fn install_script_app(&self, id: &str, script: &str, extra: &str) {
        use std::os::unix::fs::PermissionsExt;
        let root = self.p("runapp");
        fs::create_dir_all(root.join("bin")).unwrap();
        fs::write(root.join("bin/hello"), script).unwrap();
        fs::set_permissions(root.join("bin/hello"), fs::Permissions::from_mode(0o755)).unwrap();
        let manifest = format!(
            "{}{extra}",
            app_manifest("1.0.0").replace("org.example.Hello", id)
        );
        self.ok(&[
            "install",
            s(&self.bundle(&manifest, &root, "runapp.bundle")),
        ]);
    }

    /// Installs an app `id` whose command is the static probe ([`crate::static_probe`]),
    /// requesting `permissions` (the body of its `[permissions]` table). The runtime must
    /// be installed.
    pub fn install_probe_app(&self, id: &str, permissions: &str) {
        use std::os::unix::fs::PermissionsExt;
        let root = self.p(&format!("probe-app-{id}"));
        fs::create_dir_all(root.join("bin")).unwrap();
        fs::copy(crate::static_probe(), root.join("bin/probe")).unwrap();
        fs::set_permissions(root.join("bin/probe"), fs::Permissions::from_mode(0o755)).unwrap();
        let manifest = app_manifest("1.0.0")
            .replace("org.example.Hello", id)
            .replace("command = \"hello\"", "command = \"probe\"");
        let b = self.bundle(
            &format!("{manifest}\n[permissions]\n{permissions}"),
            &root,
            &format!("{id}.bundle"),
        );
        self.ok(&["install", s(&b)]);
    }

    /// Selects a board profile of this machine's arch (`CONFIG/board-support/testboard.toml`)
    /// whose GPU needs the Mesa driver `driver` (what driver extensions are matched on).
    pub fn set_board_gpu_driver(&self, driver: &str) {
        let dir = self.cfg.join("board-support");
        fs::create_dir_all(&dir).unwrap();
        fs::write(
            dir.join("testboard.toml"),
            format!(
                "name = \"testboard\"\narch = \"{}\"\ngpu-driver = \"{driver}\"\n",
                arch()
            ),
        )
        .unwrap();
        fs::write(self.cfg.join("appmgr.toml"), "board = \"testboard\"\n").unwrap();
    }

    /// Every path in the state dir with its type, size and (for regular files) content
    /// hash, except the lock file. Equal snapshots mean nothing was written.
    pub fn snapshot(&self) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        if self.state.exists() {
            walk(&self.state, &self.state, &mut out);
        }
        out
    }

    /// A fresh environment with the demo runtime and app 1.0.0 installed.
    pub fn with_demo_app() -> Env {
        let e = Env::new();
        e.ok(&["install", s(&e.runtime_bundle("1.0.0"))]);
        e.ok(&["install", s(&e.app_bundle("1.0.0"))]);
        e
    }

    /// Runs a command that must be refused with exit `code` and a one-line message naming
    /// `needle`, and checks that nothing was written and the demo app 1.0.0 is still
    /// current and intact, fsck clean.
    pub fn assert_refused_keeps_v1(&self, args: &[&str], code: i32, needle: &str) {
        let before = self.snapshot();
        let msg = self.fails(args, code);
        assert!(
            msg.contains(needle),
            "message {msg:?} should name {needle:?}"
        );
        assert_eq!(
            before,
            self.snapshot(),
            "state changed after refused {args:?}"
        );
        assert_eq!(self.app_state(), Some(("1.0.0".into(), None)));
        let info = self.ok(&["--json", "info", "org.example.Hello"]).json();
        let files = PathBuf::from(info["deployment"].as_str().unwrap());
        assert_eq!(
            fs::read_to_string(files.join("share/version")).unwrap(),
            "1.0.0"
        );
        self.fsck_clean();
    }

    /// The entry of `id` in the signed device report (`appmgr --json report`).
    pub fn report_app(&self, id: &str) -> serde_json::Value {
        let r = self.ok(&["--json", "report"]).json();
        r["report"]["apps"]
            .as_array()
            .and_then(|a| a.iter().find(|x| x["id"] == id).cloned())
            .unwrap_or_else(|| panic!("{id} is not in the report: {r}"))
    }

    pub fn fsck_clean(&self) {
        let r = self.run(&["--json", "fsck"]);
        assert_eq!(r.code, 0, "fsck not clean: {}{}", r.stdout, r.stderr);
        assert_eq!(r.json()["clean"], true);
    }

    /// (current version, previous version) of the demo app, or None if not installed.
    pub fn app_state(&self) -> Option<(String, Option<String>)> {
        self.app_state_of("org.example.Hello")
    }

    /// (current version, previous version) of app `id`, or None if not installed.
    pub fn app_state_of(&self, id: &str) -> Option<(String, Option<String>)> {
        let r = self.run(&["--json", "info", id]);
        if r.code == 5 {
            return None;
        }
        assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
        let j = r.json();
        Some((
            j["version"].as_str().unwrap().to_string(),
            j["previous-version"].as_str().map(str::to_string),
        ))
    }
}

fn fxhash(s: &str) -> u64 {
    s.bytes().fold(0xcbf29ce484222325u64, |h, b| {
        (h ^ b as u64).wrapping_mul(0x100000001b3)
    })
}

fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, String>) {
    let mut ents: Vec<_> = fs::read_dir(dir).unwrap().map(|e| e.unwrap()).collect();
    ents.sort_by_key(|e| e.file_name());
    for e in ents {
        let p = e.path();
        let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
        if rel == "lock" {
            continue;
        }
        let m = fs::symlink_metadata(&p).unwrap();
        let desc = if m.is_dir() {
            walk(root, &p, out);
            format!("dir {:o}", m.mode())
        } else if m.file_type().is_symlink() {
            format!("link {}", fs::read_link(&p).unwrap().display())
        } else {
            let data = fs::read(&p).unwrap();
            format!(
                "file {:o} {} {:x}",
                m.mode(),
                data.len(),
                fxhash(&String::from_utf8_lossy(&data))
            )
        };
        out.insert(rel, desc);
    }
}

pub fn arch() -> &'static str {
    std::env::consts::ARCH
}

pub fn runtime_manifest(version: &str) -> String {
    format!(
        "id = \"org.example.Platform\"\nkind = \"runtime\"\nversion = \"{version}\"\narch = \"{}\"\nbranch = \"1\"\n",
        arch()
    )
}

pub fn app_manifest(version: &str) -> String {
    format!(
        "id = \"org.example.Hello\"\nkind = \"app\"\nversion = \"{version}\"\narch = \"{a}\"\nbranch = \"stable\"\nruntime = \"org.example.Platform/{a}/1\"\ncommand = \"hello\"\n",
        a = arch()
    )
}

/// `ROOT/bin/hello`, executable, printing `hello VERSION`: the demo app's command.
pub fn write_hello(root: &Path, version: &str) {
    use std::os::unix::fs::PermissionsExt;
    fs::create_dir_all(root.join("bin")).unwrap();
    fs::write(
        root.join("bin/hello"),
        format!("#!/usr/bin/sh\necho hello {version}\n"),
    )
    .unwrap();
    fs::set_permissions(root.join("bin/hello"), fs::Permissions::from_mode(0o755)).unwrap();
}

/// `len` bytes of xorshift noise from `seed` (incompressible, the same for the same seed).
pub fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

pub fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Runs `c` (stdin from /dev/null), killed after `limit` (every wait in a test is
/// bounded): the result and how long it took.
pub fn run_bounded(mut c: Command, limit: Duration) -> (Run, Duration) {
    let t = Instant::now();
    let mut child = c
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    while child.try_wait().unwrap().is_none() && t.elapsed() < limit {
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let o = child.wait_with_output().unwrap();
    let took = t.elapsed();
    (
        Run {
            code: o.status.code().unwrap_or(137),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        },
        took,
    )
}
