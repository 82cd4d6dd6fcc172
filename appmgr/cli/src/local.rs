//! The CLI's local path for the commands that are more than a call into `appmgr-core`:
//! `install` (a file name or stdin) and
//! `run` (the plan printed, or the launcher exec'd in place of this process).

use crate::{CliError, CliResult, Global, Output};
use appmgr_storeops::{install_from, Progress};
use appmgr_types::ErrorClass;
use std::path::Path;

/// `install FILE` (`-`: the bundle open on stdin, named `name` in messages).
pub fn install(
    g: &Global,
    file: &Path,
    allow_downgrade: bool,
    name: Option<&str>,
) -> CliResult<Output> {
    let mut progress = |_: Progress| {};
    if let Some(source) = remote_source(g, file)? {
        return appmgr_storeops::install_source(&g.ctx(), &source, allow_downgrade, &mut progress)
            .map(|d| d.output);
    }
    let f = open_bundle_arg(file)?;
    let shown = match name {
        Some(n) if file == Path::new("-") => Path::new(n),
        _ => file,
    };
    install_from(&g.ctx(), f, shown, allow_downgrade, None, &mut progress).map(|d| d.output)
}

/// The remote source an `install` argument names (`NAME:ID[@VERSION]` of a configured
/// remote, or a URL); `None` for `-` and for a path that exists (which wins).
pub(crate) fn remote_source(
    g: &Global,
    file: &Path,
) -> CliResult<Option<appmgr_core::remotes::Source>> {
    if file == Path::new("-") || file.symlink_metadata().is_ok() {
        return Ok(None);
    }
    match file.to_str() {
        Some(arg) => appmgr_core::remotes::parse_source(&g.config_dir, arg),
        None => Ok(None),
    }
}

/// The bundle an `install FILE` names: `-` is the file open on stdin. A file that does not
/// exist is not found (exit 5); another unreadable file is an I/O failure (exit 1); on both
/// CLI paths.
pub(crate) fn open_bundle_arg(file: &Path) -> CliResult<std::fs::File> {
    if file == Path::new("-") {
        use std::os::fd::AsFd;
        return std::io::stdin()
            .as_fd()
            .try_clone_to_owned()
            .map(std::fs::File::from)
            .map_err(|e| CliError::new(ErrorClass::Other, format!("stdin: {e}")));
    }
    std::fs::File::open(file).map_err(|e| {
        let class = match e.kind() {
            std::io::ErrorKind::NotFound => ErrorClass::NotFound,
            _ => ErrorClass::Other,
        };
        CliError::new(class, format!("{}: {e}", file.display()))
    })
}

/// `appmgr run`: returns the exit status to exit with (the app's, 128+N for a signal).
pub fn run(g: &Global, id: &str, args: Vec<String>, print_plan: bool) -> CliResult<i32> {
    if print_plan {
        let out = appmgr_core::apps::plan_report(&g.ctx(), id, args)?;
        crate::print_stdout(&format!(
            "{}\n",
            serde_json::to_string_pretty(&out).unwrap_or_default()
        ));
        return Ok(0);
    }
    let f = appmgr_core::apps::prepare_run(&g.ctx(), id, args)?;
    for line in appmgr_core::apps::not_provided_lines(&f.id, &f.launch) {
        eprintln!("{line}");
    }
    if let Err(e) = appmgr_core::apps::install_bus_policy(
        &g.ctx(),
        &f.launch,
        &f.id,
        crate::client::reload_bus_config,
    ) {
        let _ = f.cgroup.remove();
        return Err(e);
    }
    // Become the launcher: no appmgr process stays beside the app. The launcher waits for
    // it, forwards signals, exits with its status, reports limit events and removes the
    // cgroup. exec returns only on failure.
    let err = appmgr_sandbox::exec_launcher(&f.launch.plan);
    let _ = f.cgroup.remove();
    Err(CliError::new(ErrorClass::Other, format!("{}: {err}", f.id)))
}
