//! Measures an install: `import_bench [MiB] [FILES] [DIR]` (defaults 100, 2000, a temp
//! dir under /var/tmp). The payload is generated while it is imported (distinct content
//! per file, never held in memory as a whole), about half of the bytes in a few large
//! files and the rest spread over many small ones, like an app or runtime tree. Prints
//! the install time (lock, import, commit, checkout, syncfs, record) and the peak RSS.

use appmgr_bundle::payload::{PayloadSink, RelPath};
use appmgr_store::{InstallOptions, NewDeployment, Store, StoreConfig};
use std::io::Read;
use std::time::Instant;

/// Pseudo-random content, unique per (file, offset), produced at memcpy speed.
struct Gen<'a> {
    pool: &'a [u8],
    file: u64,
    pos: u64,
    left: u64,
}

impl Read for Gen<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let off = ((self.pos + self.file * 4099) % self.pool.len() as u64) as usize;
        let n = buf.len().min(self.left as usize).min(self.pool.len() - off);
        buf[..n].copy_from_slice(&self.pool[off..off + n]);
        if n >= 16 {
            buf[..8].copy_from_slice(&self.file.to_le_bytes());
            buf[8..16].copy_from_slice(&self.pos.to_le_bytes());
        }
        self.pos += n as u64;
        self.left -= n as u64;
        Ok(n)
    }
}

fn sizes(total: u64, files: u64) -> Vec<u64> {
    // Eight large files carry half the bytes; the rest is spread evenly.
    let large = 8.min(files);
    let mut v = vec![total / 2 / large.max(1); large as usize];
    let small = files - large;
    let rest = total - v.iter().sum::<u64>();
    v.extend((0..small).map(|i| {
        let avg = rest / small.max(1);
        // sizes from 0.25x to 1.75x the average, summing to about `rest`
        avg / 4 + (avg * 3 / 2) * (i % 7) / 6
    }));
    v
}

fn vm_hwm_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        .unwrap_or(0)
}

/// User + system CPU time of this process so far, in seconds (/proc/self/stat, 100 Hz).
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let t = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (t(11) + t(12)) / 100.0
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let mib: u64 = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(100);
    let files: u64 = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(2000);
    let base = args.get(3).cloned().unwrap_or_else(|| "/var/tmp".into());
    let dir = tempfile::Builder::new()
        .prefix("appmgr-bench")
        .tempdir_in(base)
        .expect("temp dir");
    let mut pool = vec![0u8; 1 << 20];
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    for b in pool.iter_mut() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = x as u8;
    }
    let sizes = sizes(mib << 20, files);
    let total: u64 = sizes.iter().sum();
    let store = Store::open(dir.path().join("state"), StoreConfig::default()).expect("open store");
    let hwm0 = vm_hwm_kib();
    let manifest = b"id = \"org.example.Bench\"\n";
    let new = NewDeployment {
        ref_name: "app/org.example.Bench/x86_64/stable".parse().unwrap(),
        version: "1.0.0".parse().unwrap(),
        runtime: None,
        manifest,
        sbom: None,
        installed_size: total,
    };
    let t = Instant::now();
    let cpu0 = cpu_seconds();
    let lock = store.lock().expect("lock");
    let report = store
        .install(
            &lock,
            &new,
            InstallOptions::default(),
            |sink: &mut dyn PayloadSink| {
                let per_dir = 100;
                for (i, size) in sizes.iter().enumerate() {
                    if i % per_dir == 0 {
                        sink.directory(&RelPath::new(&format!("d{}", i / per_dir))?)?;
                    }
                    let p = RelPath::new(&format!("d{}/f{i}", i / per_dir))?;
                    let mut g = Gen {
                        pool: &pool,
                        file: i as u64,
                        pos: 0,
                        left: *size,
                    };
                    sink.file(&p, i % 10 == 0, *size, &mut g)?;
                }
                Ok(())
            },
        )
        .expect("install");
    let took = t.elapsed();
    let cpu = cpu_seconds() - cpu0;
    println!(
        "installed {} files, {:.1} MiB in {:.3} s ({:.0} MiB/s, {cpu:.2} s CPU); peak RSS {} MiB (before: {} MiB)",
        report.files,
        report.bytes as f64 / 1048576.0,
        took.as_secs_f64(),
        report.bytes as f64 / 1048576.0 / took.as_secs_f64(),
        vm_hwm_kib() / 1024,
        hwm0 / 1024,
    );
    let t = Instant::now();
    let fsck = store.fsck(&lock).expect("fsck");
    println!(
        "fsck: {} objects in {:.3} s, clean: {}",
        fsck.objects_checked,
        t.elapsed().as_secs_f64(),
        fsck.is_clean()
    );
    // For comparing runs on a loaded machine: this host's sha2 speed right now.
    {
        use sha2::Digest;
        let data = vec![7u8; 64 << 20];
        let t = Instant::now();
        let h = sha2::Sha256::digest(&data);
        println!(
            "calibration: sha2 {:.0} MiB/s ({:x})",
            64.0 / t.elapsed().as_secs_f64(),
            h[0]
        );
    }
}
