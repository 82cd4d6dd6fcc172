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
    let mut common = appmgr_core::cmdline::Common::from_env();
    let (mut iio_dir, mut iio_dev_dir) = (None, None);
    let mut o = appmgr_core::cmdline::Options::new("appmgr-portald", usage(), args);
    while let Some(a) = o.next_option() {
        let r = match a.as_str() {
            "--iio-dir" => o.value(&a).map(|v| iio_dir = Some(v.into())),
            "--iio-dev-dir" => o.value(&a).map(|v| iio_dev_dir = Some(v.into())),
            _ => o.common(&a, &mut common),
        };
        if let Err(code) = r {
            return code;
        }
    }
    let cfg = crate::Config {
        state_dir: common.state_dir,
        config_dir: common.config_dir,
        bus_address: common.bus_address,
        iio_dir,
        iio_dev_dir,
    };
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
