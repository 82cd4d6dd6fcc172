//! `appmgr`: the lean front end. It never links libostree: store commands are handed to
//! `appmgr-ops` (see `appmgr_cli::main_lean`).
fn main() {
    std::process::exit(appmgr_cli::main_lean(std::env::args_os()));
}
