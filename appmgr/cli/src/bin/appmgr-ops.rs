//! `appmgr-ops`: the store commands (install, list, info, remove, rollback, fsck), run
//! in-process on the local path; it links libostree, which `appmgr` does not. `appmgr`
//! execs it with the same arguments when no appmgrd takes the command; it is not meant to
//! be called directly, and runs nothing but the store commands if it is
//! (`appmgr_cli::main_ops`). `appmgr-ops --worker-fd N` is appmgrd's store worker
//! (`appmgr_core::worker`).
fn main() {
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if args.len() == 3 && args[1] == "--worker-fd" {
        std::process::exit(appmgr_cli::worker::serve(&args[2].to_string_lossy()));
    }
    std::process::exit(appmgr_cli::main_ops(args));
}
