//! `appmgr-ops`: runs every `appmgr` command in-process, store commands (install, list,
//! info, remove, rollback, fsck) included. `appmgr` execs it with the same arguments; it
//! is not meant to be called directly, but behaves exactly like `appmgr` if it is.
//! `appmgr-ops --worker-fd N` is appmgrd's store worker (`appmgr_core::worker`).
fn main() {
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if args.len() == 3 && args[1] == "--worker-fd" {
        std::process::exit(appmgr_cli::worker::serve(&args[2].to_string_lossy()));
    }
    std::process::exit(appmgr_cli::main_with_args(args));
}
