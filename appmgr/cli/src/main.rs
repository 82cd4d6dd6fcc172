//! `appmgr`: a thin main. Parsing, dispatch and output live in the library.
fn main() {
    std::process::exit(appmgr_cli::main_with_args(std::env::args_os()));
}
