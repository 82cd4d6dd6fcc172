//! `appmgrd`'s command line: options, host configuration defaults, the runtime. The
//! `appmgr` executable calls [`main`] when it runs as `appmgrd` (see `appmgr-multicall`).

use std::path::PathBuf;

fn usage() -> &'static str {
    "usage: appmgrd [--state-dir DIR] [--config-dir DIR] [--bus-address ADDRESS]\n\
     \x20              [--bus-policy-file FILE|none] [--system-bus-socket PATH|none]\n\
     \x20              [--userdb-dir DIR|none] [--group-file FILE]\n\
     \n\
     Serves org.appmgr.Manager1 on the system bus (or ADDRESS), supervises service apps,\n\
     installs CONFIG/preinstall.d at start. Defaults: --state-dir $APPMGR_STATE_DIR or\n\
     /var/lib/appmgr, --config-dir $APPMGR_CONFIG_DIR or /etc/appmgr, --bus-policy-file\n\
     /etc/dbus-1/system.d/appmgr-apps.conf, --system-bus-socket /run/dbus/system_bus_socket,\n\
     --userdb-dir /run/userdb (app uids as users for nss-systemd), --group-file /etc/group;\n\
     the bus settings' defaults come from CONFIG/appmgr.toml (the keys of the same names),\n\
     which `appmgr run` uses too.\n"
}

pub fn main(args: Vec<String>) -> i32 {
    let cfg = match parse(args) {
        Ok(cfg) => cfg,
        Err(code) => return code,
    };
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .max_blocking_threads(4)
        .thread_keep_alive(std::time::Duration::from_secs(5))
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("appmgrd: cannot start: {e}");
            return 1;
        }
    };
    if let Err(e) = rt.block_on(crate::run(cfg)) {
        crate::journal::log(crate::journal::ERR, None, None, &e);
        eprintln!("appmgrd: {e}");
        return 1;
    }
    0
}

/// The configuration from the options, the bus settings not given taken from
/// CONFIG/appmgr.toml. `Err`: the exit code (help, version, a usage error printed).
fn parse(args: Vec<String>) -> Result<crate::Config, i32> {
    let mut common = appmgr_core::cmdline::Common::from_env();
    let mut bus_policy_file = None;
    let mut system_bus_socket = None;
    let mut userdb_dir = None;
    let mut group_file = PathBuf::from("/etc/group");
    let mut o = appmgr_core::cmdline::Options::new("appmgrd", usage(), args);
    while let Some(a) = o.next_option() {
        match a.as_str() {
            "--bus-policy-file" => bus_policy_file = Some(o.value_or_none(&a)?.map(PathBuf::from)),
            "--system-bus-socket" => {
                system_bus_socket = Some(o.value_or_none(&a)?.map(PathBuf::from))
            }
            "--userdb-dir" => userdb_dir = Some(o.value_or_none(&a)?.map(PathBuf::from)),
            "--group-file" => group_file = o.value(&a)?.into(),
            _ => o.common(&a, &mut common)?,
        }
    }
    // Settings not given as options come from appmgr.toml (or its defaults).
    let from_host = || -> Result<_, appmgr_core::Error> {
        let host = appmgr_core::config::HostConfig::load(&common.config_dir)?;
        Ok((
            bus_policy_file
                .clone()
                .map_or_else(|| host.bus_policy_file(), Ok)?,
            system_bus_socket
                .clone()
                .map_or_else(|| host.system_bus_socket(), Ok)?,
            userdb_dir.clone().map_or_else(|| host.userdb_dir(), Ok)?,
        ))
    };
    let (bus_policy_file, system_bus_socket, userdb_dir) =
        match (&bus_policy_file, &system_bus_socket, &userdb_dir) {
            (Some(p), Some(s), Some(u)) => (p.clone(), s.clone(), u.clone()),
            _ => from_host().map_err(|e| {
                eprintln!("appmgrd: {}", e.message);
                2
            })?,
        };
    Ok(crate::Config {
        state_dir: common.state_dir,
        config_dir: common.config_dir,
        bus_address: common.bus_address,
        bus_policy_file,
        system_bus_socket,
        group_file,
        userdb_dir,
    })
}
