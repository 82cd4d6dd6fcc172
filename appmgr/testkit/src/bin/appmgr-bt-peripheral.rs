//! appmgr-bt-peripheral: a Bluetooth LE peripheral for the qemu tests, served by the
//! real BlueZ on one adapter (a `btvirt` virtual controller): it registers a GATT
//! application (`org.bluez.GattManager1`) and an advertisement
//! (`org.bluez.LEAdvertisingManager1`) with `bluetoothd` over the system bus.
//!
//! Services, chosen with `--services`:
//! - `180f` Battery: Battery Level `2a19` (read, notify), starting at `--battery`;
//! - `180d` Heart Rate: Heart Rate Measurement `2a37` (notify: flags 0, then the rate),
//!   Body Sensor Location `2a38` (read: 1, chest), Heart Rate Control Point `2a39`
//!   (write: each write is printed as `write 2a39 HEX`);
//! - `181a` Environmental Sensing: Temperature `2a6e` (read: 2150, i.e. 21.50 °C).
//!
//! Notifying characteristics change every `--interval-ms` while a central listens (the
//! battery level counts down, the heart rate up). Prints `ready ADDRESS` once both are
//! registered, and runs until SIGTERM or SIGINT.

use std::collections::HashMap;
use std::time::Duration;
use zbus::object_server::SignalEmitter;
use zbus::zvariant::{ObjectPath, OwnedObjectPath, OwnedValue};

const ROOT: &str = "/org/appmgr/test/peripheral";

struct Service {
    uuid: String,
}

#[zbus::interface(name = "org.bluez.GattService1")]
impl Service {
    #[zbus(property, name = "UUID")]
    fn uuid(&self) -> String {
        self.uuid.clone()
    }
    #[zbus(property)]
    fn primary(&self) -> bool {
        true
    }
}

struct Characteristic {
    uuid: String,
    service: OwnedObjectPath,
    flags: Vec<String>,
    value: Vec<u8>,
    notifying: bool,
}

#[zbus::interface(name = "org.bluez.GattCharacteristic1")]
impl Characteristic {
    #[zbus(property, name = "UUID")]
    fn uuid(&self) -> String {
        self.uuid.clone()
    }
    #[zbus(property)]
    fn service(&self) -> OwnedObjectPath {
        self.service.clone()
    }
    #[zbus(property)]
    fn flags(&self) -> Vec<String> {
        self.flags.clone()
    }
    #[zbus(property)]
    fn value(&self) -> Vec<u8> {
        self.value.clone()
    }
    #[zbus(property)]
    fn notifying(&self) -> bool {
        self.notifying
    }

    fn read_value(&self, _options: HashMap<String, OwnedValue>) -> zbus::fdo::Result<Vec<u8>> {
        if !self.flags.iter().any(|f| f == "read") {
            return Err(zbus::fdo::Error::NotSupported("not readable".into()));
        }
        Ok(self.value.clone())
    }

    fn write_value(
        &mut self,
        value: Vec<u8>,
        _options: HashMap<String, OwnedValue>,
    ) -> zbus::fdo::Result<()> {
        if !self.flags.iter().any(|f| f.starts_with("write")) {
            return Err(zbus::fdo::Error::NotSupported("not writable".into()));
        }
        let hex: String = value.iter().map(|b| format!("{b:02x}")).collect();
        println!("write {} {hex}", short(&self.uuid));
        self.value = value;
        Ok(())
    }

    async fn start_notify(&mut self, #[zbus(signal_emitter)] e: SignalEmitter<'_>) {
        self.notifying = true;
        let _ = self.notifying_changed(&e).await;
    }

    async fn stop_notify(&mut self, #[zbus(signal_emitter)] e: SignalEmitter<'_>) {
        self.notifying = false;
        let _ = self.notifying_changed(&e).await;
    }
}

struct Advertisement {
    services: Vec<String>,
    name: String,
}

#[zbus::interface(name = "org.bluez.LEAdvertisement1")]
impl Advertisement {
    #[zbus(property, name = "Type")]
    fn kind(&self) -> String {
        "peripheral".into()
    }
    #[zbus(property, name = "ServiceUUIDs")]
    fn service_uuids(&self) -> Vec<String> {
        self.services.clone()
    }
    #[zbus(property)]
    fn local_name(&self) -> String {
        self.name.clone()
    }
    fn release(&self) {
        println!("advertisement released");
    }
}

fn full(short: &str) -> String {
    format!("0000{short}-0000-1000-8000-00805f9b34fb")
}

fn short(uuid: &str) -> &str {
    uuid.get(4..8).unwrap_or(uuid)
}

fn die(msg: String) -> ! {
    eprintln!("appmgr-bt-peripheral: {msg}");
    std::process::exit(1)
}

struct Args {
    adapter: String,
    services: Vec<String>,
    name: String,
    battery: u8,
    interval: Duration,
}

fn args() -> Args {
    let mut a = Args {
        adapter: "hci1".into(),
        services: vec!["180f".into(), "180d".into()],
        name: "appmgr-test".into(),
        battery: 87,
        interval: Duration::from_millis(100),
    };
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        let mut v = || {
            it.next()
                .unwrap_or_else(|| die(format!("{k} needs a value")))
        };
        match k.as_str() {
            "--adapter" => a.adapter = v(),
            "--services" => a.services = v().split(',').map(str::to_string).collect(),
            "--name" => a.name = v(),
            "--battery" => {
                a.battery = v()
                    .parse()
                    .unwrap_or_else(|_| die("--battery: 0 to 100".into()))
            }
            "--interval-ms" => {
                a.interval = Duration::from_millis(
                    v().parse()
                        .unwrap_or_else(|_| die("--interval-ms: a number".into())),
                )
            }
            _ => die(format!(
                "unknown argument {k}\nusage: appmgr-bt-peripheral [--adapter hciN] [--services 180f,180d,181a] [--name NAME] [--battery N] [--interval-ms MS]"
            )),
        }
    }
    for s in &a.services {
        if !["180f", "180d", "181a"].contains(&s.as_str()) {
            die(format!("--services: {s} is not one of 180f, 180d, 181a"));
        }
    }
    a
}

/// (service, [(characteristic, flags, value)]) for a service this peripheral knows.
fn layout(service: &str, battery: u8) -> Vec<(&'static str, Vec<&'static str>, Vec<u8>)> {
    match service {
        "180f" => vec![("2a19", vec!["read", "notify"], vec![battery])],
        "180d" => vec![
            ("2a37", vec!["notify"], vec![0, 60]),
            ("2a38", vec!["read"], vec![1]),
            ("2a39", vec!["write"], vec![0]),
        ],
        _ => vec![("2a6e", vec!["read"], 2150i16.to_le_bytes().to_vec())],
    }
}

/// Serves the application's objects below `root`; returns the notifying characteristics.
async fn publish(server: &zbus::ObjectServer, root: &str, a: &Args) -> zbus::Result<Vec<String>> {
    server.at(root, zbus::fdo::ObjectManager).await?;
    let mut notifying = Vec::new();
    for (i, s) in a.services.iter().enumerate() {
        let spath = format!("{root}/service{i}");
        server.at(spath.as_str(), Service { uuid: full(s) }).await?;
        for (j, (c, flags, value)) in layout(s, a.battery).into_iter().enumerate() {
            let cpath = format!("{spath}/char{j}");
            if flags.contains(&"notify") {
                notifying.push(cpath.clone());
            }
            let service = ObjectPath::try_from(spath.clone())?.into();
            let flags = flags.iter().map(|f| f.to_string()).collect();
            let c = Characteristic {
                uuid: full(c),
                service,
                flags,
                value,
                notifying: false,
            };
            server.at(cpath.as_str(), c).await?;
        }
    }
    let adv = Advertisement {
        services: a.services.iter().map(|s| full(s)).collect(),
        name: a.name.clone(),
    };
    server.at(format!("{root}/advertisement"), adv).await?;
    Ok(notifying)
}

/// Calls `iface.method(path, {})` on the adapter, bounded.
async fn register(
    conn: &zbus::Connection,
    adapter: &str,
    iface: &str,
    method: &str,
    path: &str,
) -> zbus::Result<()> {
    let p = ObjectPath::try_from(path)?;
    let opts: HashMap<String, OwnedValue> = HashMap::new();
    let body = (p, opts);
    let call = conn.call_method(Some("org.bluez"), adapter, Some(iface), method, &body);
    tokio::time::timeout(Duration::from_secs(8), call)
        .await
        .map_err(|_| zbus::Error::Failure(format!("{iface}.{method}: no answer in 8 s")))?
        .map(|_| ())
}

async fn run(a: Args) -> zbus::Result<()> {
    let conn = zbus::Connection::system().await?;
    let server = conn.object_server();
    let adapter = format!("/org/bluez/{}", a.adapter);
    // bluetoothd sometimes never answers a registration made just after it powered its
    // adapters (seen under TCG; it then keeps that application half-registered and
    // refuses the same path as AlreadyExists). So each attempt is bounded and uses a
    // fresh object path; each retry is printed, so a test log shows it.
    let mut attempt = 0;
    let notifying = loop {
        attempt += 1;
        let root = format!("{ROOT}/a{attempt}");
        let notifying = publish(server, &root, &a).await?;
        let adv = format!("{root}/advertisement");
        let gatt = "org.bluez.GattManager1";
        let le = "org.bluez.LEAdvertisingManager1";
        let r = match register(&conn, &adapter, gatt, "RegisterApplication", &root).await {
            Ok(()) => register(&conn, &adapter, le, "RegisterAdvertisement", &adv).await,
            Err(e) => Err(e),
        };
        match r {
            Ok(()) => break notifying,
            Err(e) if attempt < 3 => println!("retry after attempt {attempt}: {e}"),
            Err(e) => return Err(e),
        }
    };
    let address: String =
        zbus::Proxy::new(&conn, "org.bluez", adapter.as_str(), "org.bluez.Adapter1")
            .await?
            .get_property("Address")
            .await?;
    println!("ready {address}");
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| zbus::Error::Failure(e.to_string()))?;
    let mut tick = tokio::time::interval(a.interval);
    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = tokio::signal::ctrl_c() => break,
            _ = tick.tick() => {}
        }
        for path in &notifying {
            let r = server.interface::<_, Characteristic>(path.as_str()).await?;
            let mut c = r.get_mut().await;
            if !c.notifying {
                continue;
            }
            // The battery counts down (wrapping at 0 to 100), the heart rate up.
            match short(&c.uuid) {
                "2a19" => c.value[0] = if c.value[0] == 0 { 100 } else { c.value[0] - 1 },
                _ => c.value[1] = c.value[1].wrapping_add(1),
            }
            c.value_changed(r.signal_emitter()).await?;
        }
    }
    Ok(())
}

fn main() {
    let a = args();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| die(e.to_string()));
    if let Err(e) = rt.block_on(run(a)) {
        die(e.to_string());
    }
}
