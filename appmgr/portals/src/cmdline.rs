//! `appmgr-portald`'s command line. The `appmgr` executable calls [`main`] when it runs
//! as `appmgr-portald` (see `appmgr-multicall`).

fn usage() -> &'static str {
    "usage: appmgr-portald [--state-dir DIR] [--config-dir DIR] [--bus-address ADDRESS]\n\
     \x20                     [--iio-dir DIR] [--iio-dev-dir DIR]\n\
     \n\
     Serves org.appmgr.Portal1 (org.appmgr.portal.Gpu1, .Sensors1, .Bluetooth1) at\n\
     /org/appmgr/portal on the system bus (or ADDRESS). Defaults: --state-dir\n\
     $APPMGR_STATE_DIR or /var/lib/appmgr, --config-dir $APPMGR_CONFIG_DIR or /etc/appmgr;\n\
     the render node and the IIO devices come from the board profile (--iio-dir replaces\n\
     its [portals.sensors] sysfs directory; --iio-dev-dir replaces /dev as the place of\n\
     the IIO devices' buffers). The Bluetooth portal drives the board's adapter\n\
     ([portals.bluetooth] adapter, else hci0) through BlueZ on the same bus.\n"
}

pub fn main(args: Vec<String>) -> i32 {
    appmgr_core::journal::set_identifier("appmgr-portald");
    let mut cfg = crate::Config {
        state_dir: std::env::var_os("APPMGR_STATE_DIR")
            .map(Into::into)
            .unwrap_or_else(|| "/var/lib/appmgr".into()),
        config_dir: std::env::var_os("APPMGR_CONFIG_DIR")
            .map(Into::into)
            .unwrap_or_else(|| "/etc/appmgr".into()),
        bus_address: None,
        iio_dir: None,
        iio_dev_dir: None,
    };
    let mut args = args.into_iter().skip(1);
    while let Some(a) = args.next() {
        let mut value = |name: &str| {
            args.next().unwrap_or_else(|| {
                eprintln!("appmgr-portald: {name} needs a value\n{}", usage());
                std::process::exit(2)
            })
        };
        match a.as_str() {
            "--state-dir" => cfg.state_dir = value("--state-dir").into(),
            "--config-dir" => cfg.config_dir = value("--config-dir").into(),
            "--bus-address" => cfg.bus_address = Some(value("--bus-address")),
            "--iio-dir" => cfg.iio_dir = Some(value("--iio-dir").into()),
            "--iio-dev-dir" => cfg.iio_dev_dir = Some(value("--iio-dev-dir").into()),
            "-h" | "--help" => {
                print!("{}", usage());
                return 0;
            }
            "--version" => {
                println!("appmgr-portald {}", env!("CARGO_PKG_VERSION"));
                return 0;
            }
            other => {
                eprintln!("appmgr-portald: unknown argument {other:?}\n{}", usage());
                return 2;
            }
        }
    }
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("appmgr-portald: cannot start: {e}");
            return 1;
        }
    };
    if let Err(e) = rt.block_on(crate::run(cfg)) {
        // journal::log writes to stderr where no journald runs.
        appmgr_core::journal::log(appmgr_core::journal::ERR, None, None, &e);
        if appmgr_core::journal::journald_present() {
            eprintln!("appmgr-portald: {e}");
        }
        return 1;
    }
    0
}
