//! `appmgrd`'s command line: options, host configuration defaults, the runtime. The
//! `appmgr` executable calls [`main`] when it runs as `appmgrd` (see `appmgr-multicall`).

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
    let mut cfg = crate::Config {
        state_dir: std::env::var_os("APPMGR_STATE_DIR")
            .map(Into::into)
            .unwrap_or_else(|| "/var/lib/appmgr".into()),
        config_dir: std::env::var_os("APPMGR_CONFIG_DIR")
            .map(Into::into)
            .unwrap_or_else(|| "/etc/appmgr".into()),
        bus_address: None,
        bus_policy_file: Some("/etc/dbus-1/system.d/appmgr-apps.conf".into()),
        system_bus_socket: Some("/run/dbus/system_bus_socket".into()),
        group_file: "/etc/group".into(),
        userdb_dir: Some("/run/userdb".into()),
    };
    // Flags given explicitly; the others come from appmgr.toml after parsing.
    let (mut policy_set, mut socket_set, mut userdb_set) = (false, false, false);
    let mut args = args.into_iter().skip(1);
    while let Some(a) = args.next() {
        let mut value = |name: &str| {
            args.next().unwrap_or_else(|| {
                eprintln!("appmgrd: {name} needs a value\n{}", usage());
                std::process::exit(2)
            })
        };
        match a.as_str() {
            "--state-dir" => cfg.state_dir = value("--state-dir").into(),
            "--config-dir" => cfg.config_dir = value("--config-dir").into(),
            "--bus-address" => cfg.bus_address = Some(value("--bus-address")),
            "--bus-policy-file" => {
                let v = value("--bus-policy-file");
                cfg.bus_policy_file = (v != "none").then(|| v.into());
                policy_set = true;
            }
            "--system-bus-socket" => {
                let v = value("--system-bus-socket");
                cfg.system_bus_socket = (v != "none").then(|| v.into());
                socket_set = true;
            }
            "--group-file" => cfg.group_file = value("--group-file").into(),
            "--userdb-dir" => {
                let v = value("--userdb-dir");
                cfg.userdb_dir = (v != "none").then(|| v.into());
                userdb_set = true;
            }
            "-h" | "--help" => {
                print!("{}", usage());
                return 0;
            }
            "--version" => {
                println!("appmgrd {}", env!("CARGO_PKG_VERSION"));
                return 0;
            }
            other => {
                eprintln!("appmgrd: unknown argument {other:?}\n{}", usage());
                return 2;
            }
        }
    }
    if !(policy_set && socket_set && userdb_set) {
        let host = match appmgr_core::config::HostConfig::load(&cfg.config_dir) {
            Ok(h) => h,
            Err(e) => {
                eprintln!("appmgrd: {}", e.message);
                return 2;
            }
        };
        let r = (|| {
            if !policy_set {
                cfg.bus_policy_file = host.bus_policy_file()?;
            }
            if !socket_set {
                cfg.system_bus_socket = host.system_bus_socket()?;
            }
            if !userdb_set {
                cfg.userdb_dir = host.userdb_dir()?;
            }
            Ok::<_, appmgr_core::Error>(())
        })();
        if let Err(e) = r {
            eprintln!("appmgrd: {}", e.message);
            return 2;
        }
    }
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
