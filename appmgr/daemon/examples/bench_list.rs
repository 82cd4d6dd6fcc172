//! `List` latency over D-Bus: `bench_list ADDRESS N` calls org.appmgr.Manager1.List N
//! times on one connection and prints the reply size and p50/p90/p99/max in ms.
//! Used by bench/daemon.

use appmgr_types::dbus;
use std::time::Instant;

fn main() {
    let mut args = std::env::args().skip(1);
    let (Some(addr), Some(n)) = (
        args.next(),
        args.next().and_then(|n| n.parse::<usize>().ok()),
    ) else {
        eprintln!("usage: bench_list ADDRESS N");
        std::process::exit(2);
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let conn = zbus::connection::Builder::address(addr.as_str())
            .expect("address")
            .build()
            .await
            .expect("connect");
        let mut samples = Vec::with_capacity(n);
        let mut entries = 0;
        for _ in 0..n {
            let t = Instant::now();
            let msg = conn
                .call_method(
                    Some(dbus::BUS_NAME),
                    dbus::OBJECT_PATH,
                    Some(dbus::INTERFACE),
                    "List",
                    &(),
                )
                .await
                .expect("List");
            let (_text, json): (String, String) = msg.body().deserialize().expect("reply");
            samples.push(t.elapsed().as_secs_f64() * 1e3);
            entries = serde_json::from_str::<serde_json::Value>(&json)
                .ok()
                .and_then(|v| v.as_array().map(Vec::len))
                .unwrap_or(0);
        }
        samples.sort_by(|a, b| a.total_cmp(b));
        let q = |p: f64| samples[((samples.len() as f64 - 1.0) * p).round() as usize];
        println!(
            "entries={entries} n={n} p50={:.3} p90={:.3} p99={:.3} max={:.3}",
            q(0.5),
            q(0.9),
            q(0.99),
            q(1.0)
        );
    });
}
