//! `appmgr-probe [report|int80|x32|load-filter FILE|write PATH...|sleep|tty|uevent [SECONDS]|
//! netlink-route|observe ARGS|bus-serve NAME...|portal gpu|portal sensors list|
//! portal sensors read CHANNEL|portal sensors stream CH[,CH...] RATE_HZ SECONDS|
//! portal bt STEP...|portal bench ...|args...]`:
//! see the library docs.

fn main() {
    let args: Vec<String> = std::env::args().collect();
    std::process::exit(appmgr_probe::run(&args));
}
