//! `appmgr-run`, installed as `/usr/bin/appmgr`: see the crate documentation.

use std::ffi::OsString;
use std::os::unix::process::CommandExt;

fn main() {
    let argv: Vec<OsString> = std::env::args_os().collect();
    let Some(inv) = appmgr_run::parse(argv.get(1..).unwrap_or_default(), |k| std::env::var_os(k))
    else {
        full_cli(&argv)
    };
    let g = appmgr_core::Ctx {
        state_dir: inv.state_dir,
        config_dir: inv.config_dir,
    };
    // From the plan kept at install only: without a current one the full CLI derives it
    // (and keeps it for the next launch). A failure has left nothing behind: the full CLI
    // runs the command again and reports it in its own words (text or JSON, exit code by
    // class).
    let Ok(Some(f)) = appmgr_core::apps::prepare_run_kept(&g, &inv.id, inv.args) else {
        full_cli(&argv)
    };
    // The bus policy is brought into place by the full CLI, which holds the D-Bus client.
    if appmgr_core::apps::binds_bus(&f.launch) {
        let _ = f.cgroup.remove();
        full_cli(&argv)
    }
    for line in appmgr_core::apps::not_provided_lines(&f.id, &f.launch) {
        eprintln!("{line}");
    }
    // Become the launcher, as the full CLI does; exec returns only on failure, reported
    // as the full CLI reports it (its lines above are printed already).
    let err = appmgr_sandbox::exec_launcher(&f.launch.plan);
    let _ = f.cgroup.remove();
    eprintln!("appmgr: {}: {err}", f.id);
    std::process::exit(appmgr_types::ErrorClass::Other.exit_code())
}

/// Replaces this process with the full CLI, given the same arguments.
fn full_cli(argv: &[OsString]) -> ! {
    let path = appmgr_run::cli_binary();
    if appmgr_run::is_this_program(&path) {
        // Handing the command to this program would hand it over forever.
        eprintln!(
            "appmgr: {} is this front end, not the full CLI (APPMGR_CLI, or the one in {})",
            path.display(),
            appmgr_core::paths::LIBEXEC_DIR
        );
        std::process::exit(appmgr_types::ErrorClass::Other.exit_code())
    }
    let e = std::process::Command::new(&path)
        .arg0("appmgr")
        .args(argv.get(1..).unwrap_or_default())
        .exec();
    eprintln!("appmgr: cannot run the full CLI {}: {e}", path.display());
    std::process::exit(appmgr_types::ErrorClass::Other.exit_code())
}
