//! `appmgr-probe [report|int80|x32|load-filter FILE|sleep|args...]`: see the library docs.

fn main() {
    let args: Vec<String> = std::env::args().collect();
    std::process::exit(appmgr_probe::run(&args));
}
