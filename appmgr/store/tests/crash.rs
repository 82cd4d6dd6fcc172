//! Crash safety: an operation run in a child process is stopped at every named crash
//! point (`APPMGR_CRASH_AT`, which aborts there) and by SIGKILL at random moments; the
//! next lock must find exactly the old or the new state, a clean fsck (ours and
//! libostree's), no unreachable objects and no staging leftovers. Also: several
//! processes installing at once are serialized by the lock.
//!
//! The child is this test binary itself, re-executed to run only `child_process_entry`.

mod common;
use appmgr_store::{Store, CRASH_ENV};
use appmgr_testkit::require_root;
use common::*;
use rand::Rng;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const OP_ENV: &str = "APPMGR_STORE_TEST_OP";
const ROOT_ENV: &str = "APPMGR_STORE_TEST_ROOT";

fn app() -> appmgr_types::RefName {
    app_ref("org.example.Crash")
}

fn payload(variant: u64) -> Payload {
    Payload::app("crash", variant, 150, 75).with(Entry::File(
        "share/big".into(),
        false,
        bytes(variant, (appmgr_store::SPOOL_THRESHOLD + 4096) as usize),
    ))
}

/// Runs the operation named by the environment, when started as a child.
#[test]
fn child_process_entry() {
    let Ok(op) = std::env::var(OP_ENV) else {
        return;
    };
    let root = PathBuf::from(std::env::var(ROOT_ENV).unwrap());
    let store = open(&root);
    let lock = store.lock().unwrap();
    match op.as_str() {
        "install-v3" => {
            drop(install(&store, &lock, &app(), "3.0.0", None, &payload(3), false).unwrap())
        }
        "reinstall-v2" => {
            drop(install(&store, &lock, &app(), "2.0.0", None, &payload(2), false).unwrap())
        }
        "install-first" => {
            drop(install(&store, &lock, &app(), "1.0.0", None, &payload(1), false).unwrap())
        }
        "rollback" => drop(store.rollback(&lock, &app()).unwrap()),
        "remove" => drop(store.remove(&lock, &app()).unwrap()),
        other if other.starts_with("rss-") => {
            let mib: u64 = other.strip_prefix("rss-").unwrap().parse().unwrap();
            streamed_install(&store, &lock, mib);
            let status = std::fs::read_to_string("/proc/self/status").unwrap();
            let hwm = status
                .lines()
                .find(|l| l.starts_with("VmHWM:"))
                .unwrap()
                .to_string();
            std::fs::write(root.join("hwm"), hwm).unwrap();
        }
        other => {
            let n: u64 = other.strip_prefix("install-app-").unwrap().parse().unwrap();
            let r = app_ref(&format!("org.example.P{n}"));
            install(
                &store,
                &lock,
                &r,
                "1.0.0",
                None,
                &Payload::app("p", n, 40, 20),
                false,
            )
            .unwrap();
        }
    }
}

fn child(root: &Path, op: &str, crash_at: Option<&str>) -> Command {
    let mut c = Command::new(std::env::current_exe().unwrap());
    c.args([
        "--exact",
        "child_process_entry",
        "--nocapture",
        "--test-threads=1",
    ])
    .env(OP_ENV, op)
    .env(ROOT_ENV, root)
    .env("RUST_BACKTRACE", "0")
    .stdout(Stdio::null())
    .stderr(Stdio::null());
    match crash_at {
        Some(p) => c.env(CRASH_ENV, p),
        None => c.env_remove(CRASH_ENV),
    };
    c
}

/// The state that matters: (current, previous) as (commit, version), uid, highest.
type Summary = (
    Option<(String, String)>,
    Option<(String, String)>,
    Option<u32>,
    String,
);

fn summary(store: &Store) -> Summary {
    let lock = store.lock().unwrap();
    let Ok(i) = store.info(&lock, &app()) else {
        return (None, None, None, String::new());
    };
    let d = |d: Option<appmgr_store::Deployment>| d.map(|d| (d.commit, d.version.to_string()));
    (
        d(i.current),
        d(i.previous),
        i.uid,
        i.highest_version.to_string(),
    )
}

/// Old state: the app at 2.0.0 with 1.0.0 as previous, and a second app sharing files
/// (for `install-first`: only the second app).
fn setup(root: &Path, op: &str) -> (Snapshot, Summary) {
    let store = open(root);
    let lock = store.lock().unwrap();
    install(
        &store,
        &lock,
        &app_ref("org.example.Other"),
        "1.0.0",
        None,
        &Payload::app("crash", 9, 20, 20),
        false,
    )
    .unwrap();
    if op != "install-first" {
        install(&store, &lock, &app(), "1.0.0", None, &payload(1), false).unwrap();
        install(&store, &lock, &app(), "2.0.0", None, &payload(2), false).unwrap();
    }
    drop(lock);
    (snapshot(root), summary(&store))
}

#[derive(Debug, PartialEq)]
enum Outcome {
    Old,
    New,
}

/// Whether `now` is the state `op` produces from `old`.
fn is_new(op: &str, old: &Summary, now: &Summary) -> bool {
    let (cur, prev, uid, _) = old;
    match op {
        "install-v3" => {
            now.0
                .as_ref()
                .is_some_and(|c| c.1 == "3.0.0" && Some(c) != cur.as_ref())
                && now.1 == *cur
                && now.2 == *uid
                && now.3 == "3.0.0"
        }
        "reinstall-v2" => {
            now.0
                .as_ref()
                .is_some_and(|c| c.1 == "2.0.0" && Some(c) != cur.as_ref())
                && now.1 == *prev
                && now.2 == *uid
        }
        "install-first" => {
            now.0.as_ref().is_some_and(|c| c.1 == "1.0.0")
                && now.1.is_none()
                && now.2 == Some(70001)
                && now.3 == "1.0.0"
        }
        "rollback" => now.0 == *prev && now.1 == *cur && now.2 == *uid && now.3 == old.3,
        // The uid stays with the removed app.
        "remove" => now.0.is_none() && now.1.is_none() && now.2 == *uid && now.3 == old.3,
        _ => unreachable!(),
    }
}

/// Checks the store after an interrupted operation and says which state it is in.
fn check_after(root: &Path, op: &str, old_snap: &Snapshot, old: &Summary, what: &str) -> Outcome {
    let store = open(root);
    let now = summary(&store);
    let outcome = if now == *old {
        // Exactly the old state: nothing at all may differ, objects included.
        let mut snap = snapshot(root);
        snap.records.clear();
        let mut o = old_snap.clone();
        o.records.clear();
        // The one exception: a first install writes the uid high-water mark just before
        // its record, so a crash in between skips that uid (never reuses one).
        if op == "install-first" && snap.uids != o.uids {
            assert_eq!(
                snap.uids.as_deref().map(str::trim),
                Some("{\n  \"highest-allocated\": 70001\n}"),
                "{what}"
            );
            snap.uids = o.uids.clone();
        }
        assert_eq!(snap, o, "{what}: old state but the store differs");
        assert_eq!(snapshot(root).records, old_snap.records, "{what}");
        Outcome::Old
    } else if is_new(op, old, &now) {
        Outcome::New
    } else {
        panic!("{what}: neither old nor new state: old {old:?}, now {now:?}");
    };
    let lock = store.lock().unwrap();
    assert_clean(&store, &lock);
    assert!(
        snapshot(root).staging.is_empty(),
        "{what}: staging leftovers"
    );
    assert!(!root.join("txn").exists(), "{what}: operation marker left");
    let out = Command::new("ostree")
        .args([
            &format!("--repo={}", root.join("repo").display()),
            "prune",
            "--refs-only",
            "--depth=0",
            "--no-prune",
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("No unreachable objects"), "{what}: {text}");
    outcome
}

const POINTS: [&str; 7] = [
    "mid-import",
    "after-import",
    "after-checkout",
    "before-switch",
    "after-switch",
    "mid-remove",
    "before-prune",
];

/// Which state a crash at `point` must leave, or None when `op` never reaches it.
fn expected(op: &str, point: &str) -> Option<Outcome> {
    let install = op.starts_with("install") || op.starts_with("reinstall");
    match point {
        "mid-import" | "after-import" | "after-checkout" if install => Some(Outcome::Old),
        "before-switch" => Some(Outcome::Old),
        "after-switch" => Some(Outcome::New),
        "mid-remove" | "before-prune" if op != "rollback" && op != "install-first" => {
            Some(Outcome::New)
        }
        _ => None,
    }
}

fn crash_points(op: &str) {
    for point in POINTS {
        let tmp = tempdir();
        let root = state(tmp.path());
        let (snap, old) = setup(&root, op);
        let status = child(&root, op, Some(point)).status().unwrap();
        let what = format!("{op} crashed at {point}");
        match expected(op, point) {
            Some(want) => {
                assert!(
                    !status.success(),
                    "{what}: the crash point was never reached"
                );
                assert_eq!(check_after(&root, op, &snap, &old, &what), want, "{what}");
            }
            None => {
                assert!(status.success(), "{what}: {status}");
                assert_eq!(
                    check_after(&root, op, &snap, &old, &what),
                    Outcome::New,
                    "{what}"
                );
            }
        }
    }
}

fn random_kills(op: &str, rounds: usize) {
    // How long the operation takes here, to spread the kills over it.
    let tmp = tempdir();
    let root = state(tmp.path());
    setup(&root, op);
    let t = Instant::now();
    assert!(child(&root, op, None).status().unwrap().success());
    let full = t.elapsed();
    let mut rng = rand::thread_rng();
    let mut seen = (0, 0);
    for i in 0..rounds {
        let tmp = tempdir();
        let root = state(tmp.path());
        let (snap, old) = setup(&root, op);
        // Half of the kills land in the first half, where the import and switch are.
        let span = full.as_micros() as u64 * if i % 2 == 0 { 5 } else { 11 } / 10;
        let delay = Duration::from_micros(rng.gen_range(0..=span));
        let mut c = child(&root, op, None).spawn().unwrap();
        std::thread::sleep(delay);
        let _ = c.kill(); // SIGKILL
        c.wait().unwrap();
        let what = format!("{op} killed after {delay:?} (round {i})");
        match check_after(&root, op, &snap, &old, &what) {
            Outcome::Old => seen.0 += 1,
            Outcome::New => seen.1 += 1,
        }
    }
    eprintln!(
        "{op}: {rounds} kills over {full:?}: {} old, {} new",
        seen.0, seen.1
    );
}

#[test]
fn install_update_survives_every_crash_point() {
    require_root!("the store writes root-owned objects");
    crash_points("install-v3");
}

#[test]
fn first_install_survives_every_crash_point() {
    require_root!("the store writes root-owned objects");
    crash_points("install-first");
}

#[test]
fn reinstall_same_version_survives_every_crash_point() {
    require_root!("the store writes root-owned objects");
    crash_points("reinstall-v2");
}

#[test]
fn rollback_survives_every_crash_point() {
    require_root!("the store writes root-owned objects");
    crash_points("rollback");
}

#[test]
fn remove_survives_every_crash_point() {
    require_root!("the store writes root-owned objects");
    crash_points("remove");
}

#[test]
fn install_survives_sigkill_at_random_moments() {
    require_root!("the store writes root-owned objects");
    random_kills("install-v3", 10);
    random_kills("install-first", 6);
}

#[test]
fn rollback_and_remove_survive_sigkill_at_random_moments() {
    require_root!("the store writes root-owned objects");
    random_kills("rollback", 8);
    random_kills("remove", 8);
}

#[test]
fn parallel_installs_from_several_processes_are_serialized() {
    require_root!("the store writes root-owned objects");
    let tmp = tempdir();
    let root = state(tmp.path());
    open(&root);
    let children: Vec<_> = (0..4)
        .map(|n| {
            child(&root, &format!("install-app-{n}"), None)
                .spawn()
                .unwrap()
        })
        .collect();
    for mut c in children {
        assert!(c.wait().unwrap().success());
    }
    let store = open(&root);
    let lock = store.lock().unwrap();
    let list = store.list(&lock).unwrap();
    assert_eq!(list.len(), 4);
    let mut uids: Vec<u32> = list.iter().map(|i| i.uid.unwrap()).collect();
    uids.sort();
    assert_eq!(uids, vec![70000, 70001, 70002, 70003]);
    assert_clean(&store, &lock);
}

/// Content generated while it is read, unique per (file, offset): the payload is never
/// in memory as a whole.
struct Gen {
    file: u64,
    pos: u64,
    left: u64,
}

impl std::io::Read for Gen {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = buf.len().min(self.left as usize).min(64 << 10);
        for (i, chunk) in buf[..n].chunks_mut(8).enumerate() {
            let v = (self.file << 40) ^ (self.pos + i as u64 * 8);
            chunk.copy_from_slice(&v.to_le_bytes()[..chunk.len()]);
        }
        self.pos += n as u64;
        self.left -= n as u64;
        Ok(n)
    }
}

/// Installs `mib` MiB in files of 6 MiB (buffered: the worst case for memory) and
/// 12 MiB (spooled).
fn streamed_install(store: &Store, lock: &appmgr_store::StoreLock, mib: u64) {
    use appmgr_bundle::payload::RelPath;
    let sizes: Vec<u64> = (0..mib / 18).flat_map(|_| [6 << 20, 12 << 20]).collect();
    let manifest = b"memory".to_vec();
    let new = appmgr_store::NewDeployment {
        ref_name: app_ref("org.example.Mem"),
        version: v("1.0.0"),
        runtime: None,
        manifest: &manifest,
        sbom: None,
        installed_size: sizes.iter().sum(),
    };
    store
        .install(lock, &new, Default::default(), |sink| {
            for (i, size) in sizes.iter().enumerate() {
                let mut g = Gen {
                    file: i as u64,
                    pos: 0,
                    left: *size,
                };
                sink.file(&RelPath::new(&format!("f{i}"))?, false, *size, &mut g)?;
            }
            Ok(())
        })
        .unwrap();
}

fn peak_rss_kib(mib: u64) -> u64 {
    let tmp = tempdir();
    let root = state(tmp.path());
    open(&root);
    assert!(child(&root, &format!("rss-{mib}"), None)
        .status()
        .unwrap()
        .success());
    let line = std::fs::read_to_string(root.join("hwm")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[test]
fn peak_memory_does_not_grow_with_the_payload() {
    require_root!("the store writes root-owned objects");
    let small = peak_rss_kib(18);
    let large = peak_rss_kib(180);
    eprintln!("peak RSS: 18 MiB payload {small} KiB, 180 MiB payload {large} KiB");
    // Buffered objects in flight are bounded, not by the payload: two in the writer's
    // queue, one being read, one being written. The small payload has one buffered file,
    // so the large one may hold three more (6 MiB each here) at its peak, plus 2 MiB of
    // allocator slack; a payload-sized buffer (60 MiB of buffered files) is far above.
    let bound = 3 * 6 * 1024 + 2 * 1024;
    assert!(
        large < small + bound,
        "peak RSS grew from {small} KiB to {large} KiB with a 10x larger payload"
    );
}
