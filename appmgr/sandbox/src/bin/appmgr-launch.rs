//! `appmgr-launch --plan-fd N`: applies a launch plan (see `appmgr_sandbox`). Started by
//! `appmgr run` and appmgrd, never by hand. Exits with the app's status (128+N when the
//! app was killed by signal N), 125 when the sandbox could not be set up.

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let fd = match args.as_slice() {
        [_, flag, n] if flag == "--plan-fd" => n.parse::<i32>().ok(),
        _ => None,
    };
    let Some(fd) = fd else {
        eprintln!("usage: appmgr-launch --plan-fd N");
        std::process::exit(2);
    };
    let plan = match appmgr_sandbox::read_plan_fd(fd) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("appmgr-launch: cannot read the launch plan from fd {fd}: {e}");
            std::process::exit(appmgr_sandbox::EXIT_LAUNCH_FAILED);
        }
    };
    let app = plan.app_id.clone();
    match appmgr_sandbox::run_launcher(plan) {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("appmgr-launch: {app}: {e}");
            std::process::exit(appmgr_sandbox::EXIT_LAUNCH_FAILED);
        }
    }
}
