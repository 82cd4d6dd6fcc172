//! `appmgr-ops`: runs every `appmgr` command in-process, store commands (install, list,
//! info, remove, rollback, fsck) included. `appmgr` execs it with the same arguments; it
//! is not meant to be called directly, but behaves exactly like `appmgr` if it is.
fn main() {
    std::process::exit(appmgr_cli::main_with_args(std::env::args_os()));
}
