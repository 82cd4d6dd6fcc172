//! Kills `appmgr` with SIGKILL at random moments during install, update, rollback and
//! remove, and checks after each kill that the state is exactly the old or the new one
//! and that fsck is clean (the next command collects the leftovers).
//!
//! Iterations: `APPMGR_CRASH_ITERATIONS` (default 200, as CI runs it).
use appmgr_testkit::*;
use rand::Rng;
use std::time::{Duration, Instant};

type State = Option<(String, Option<String>)>;

#[test]
fn sigkill_at_random_moments_leaves_old_or_new_state() {
    require_root!("installs write root-owned files");
    let iterations: usize = std::env::var("APPMGR_CRASH_ITERATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let e = Env::new();
    e.ok(&["install", s(&e.runtime_bundle("1.0.0"))]);
    let versions = ["1.0.0", "2.0.0", "3.0.0"];
    let bundles: Vec<_> = versions.iter().map(|v| e.app_bundle(v)).collect();

    // Calibrate: how long does one operation take here?
    let t = Instant::now();
    e.ok(&["install", s(&bundles[0])]);
    let op_time = t.elapsed().max(Duration::from_millis(20));
    e.ok(&["remove", "org.example.Hello"]);

    let mut rng = rand::thread_rng();
    let mut outcomes = [0usize; 2];
    for i in 0..iterations {
        let before: State = e.app_state();
        // Pick an operation that makes sense in this state, and the state it leads to.
        let (args, after): (Vec<String>, State) = match &before {
            None => {
                let v = rng.gen_range(0..versions.len());
                (
                    vec![
                        "install".into(),
                        "--allow-downgrade".into(),
                        s(&bundles[v]).into(),
                    ],
                    Some((versions[v].into(), None)),
                )
            }
            Some((cur, prev)) => match rng.gen_range(0..4) {
                0 if prev.is_some() => (
                    vec!["rollback".into(), "org.example.Hello".into()],
                    Some((prev.clone().unwrap(), Some(cur.clone()))),
                ),
                1 => (vec!["remove".into(), "org.example.Hello".into()], None),
                _ => {
                    let v = rng.gen_range(0..versions.len());
                    let newv = versions[v].to_string();
                    // Same version re-deploys and keeps the previous one.
                    let prev_after = if &newv == cur {
                        prev.clone()
                    } else {
                        Some(cur.clone())
                    };
                    (
                        vec![
                            "install".into(),
                            "--allow-downgrade".into(),
                            s(&bundles[v]).into(),
                        ],
                        Some((newv, prev_after)),
                    )
                }
            },
        };
        let argv: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut child = e
            .cmd(&argv)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let delay = rng.gen_range(0..op_time.as_micros() as u64 * 12 / 10);
        std::thread::sleep(Duration::from_micros(delay));
        let _ = child.kill();
        let status = child.wait().unwrap();
        let now = e.app_state();
        assert!(
            now == before || now == after,
            "iteration {i}: {args:?} killed after {delay} us (status {status}): state {now:?} is neither old {before:?} nor new {after:?}"
        );
        outcomes[usize::from(now == after && now != before)] += 1;
        if i % 10 == 9 || i + 1 == iterations {
            e.fsck_clean();
        }
    }
    e.fsck_clean();
    eprintln!(
        "crash loop: {iterations} kills, {} left the old state, {} the new",
        outcomes[0], outcomes[1]
    );
    // The loop must have exercised both outcomes, or the kills were all too early/late.
    assert!(outcomes[0] > 0 && outcomes[1] > 0, "{outcomes:?}");
}
