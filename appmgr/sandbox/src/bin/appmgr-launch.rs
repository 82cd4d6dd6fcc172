//! `appmgr-launch --plan-fd N [--report-fd M]`: applies a launch plan (see
//! `appmgr_sandbox`). Started by `appmgr run` and appmgrd, never by hand.
//!
//! Without `--report-fd`: exits with the app's status (128+N when the app was killed by
//! signal N), 125 when the sandbox could not be set up, 4 when the launch was refused (a
//! host path that cannot be resolved safely, see `LaunchError::Refused`).
//!
//! With `--report-fd M` (detached mode, appmgrd's services): init becomes a child of the
//! caller, its host pid is written to fd M, and the launcher exits 0 once the app runs, or
//! 125 (with an `error: ...` line on fd M) when set-up failed; see `run_detached`.

use std::os::fd::OwnedFd;

fn usage() -> ! {
    eprintln!("usage: appmgr-launch --plan-fd N [--report-fd M]");
    std::process::exit(2);
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let num = |s: &String| s.parse::<i32>().ok().unwrap_or_else(|| usage());
    let (fd, report) = match args.as_slice() {
        [_, flag, n] if flag == "--plan-fd" => (num(n), None),
        [_, flag, n, rflag, r] if flag == "--plan-fd" && rflag == "--report-fd" => {
            (num(n), Some(num(r)))
        }
        _ => usage(),
    };
    if report == Some(fd) {
        usage();
    }
    // Taken before the plan, so a bad report fd fails before anything else.
    let report: Option<OwnedFd> = report.map(|r| {
        appmgr_sandbox::sys::take_inherited_fd(r).unwrap_or_else(|e| {
            eprintln!("appmgr: cannot use the report fd {r}: {e}");
            std::process::exit(appmgr_sandbox::EXIT_LAUNCH_FAILED)
        })
    });
    let plan = match appmgr_sandbox::read_plan_fd(fd) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("appmgr: cannot read the launch plan from fd {fd}: {e}");
            if let Some(r) = &report {
                let msg = format!("error: cannot read the launch plan: {e}\n");
                let _ = rustix::io::write(r, msg.as_bytes());
            }
            std::process::exit(appmgr_sandbox::EXIT_LAUNCH_FAILED);
        }
    };
    if let Some(report) = report {
        std::process::exit(appmgr_sandbox::run_detached(plan, report));
    }
    let app = plan.app_id.clone();
    match appmgr_sandbox::run_launcher(plan) {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("appmgr: {app}: {e}");
            std::process::exit(e.exit_code());
        }
    }
}
