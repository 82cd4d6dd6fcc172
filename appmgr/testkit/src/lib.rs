//! The shared harness of appmgr's integration tests (dev-only, `publish = false`).
//!
//! One copy, used by the tests of every crate, of what they all need:
//!
//! - **root and skipping**: [`is_root`] (the effective uid), [`require_root!`] and
//!   [`skip_if!`], which end a test early and print `SKIPPED <test>: <reason>` straight to
//!   the terminal (past libtest's output capture), so an unprivileged `cargo test` reports
//!   the privileged tests as skipped with the reason instead of failing them;
//! - **binaries** ([`binary`], [`bin`]): `appmgr`, `appmgr-ops`, `appmgrd` and
//!   `appmgr-launch` are found next to the running test executable's target directory
//!   (`target/<profile>/`, or `APPMGR_TEST_BIN_DIR`), from the tests of any crate. A missing
//!   binary, or one older than one of its sources (cargo's dep-info file next to it), is a
//!   panic naming the binary and the `cargo build` command that makes it: `cargo test -p X`
//!   builds only X's own binaries, `cargo test --workspace` builds them all;
//! - **an install environment** ([`Env`]): a private state and config dir, a trusted key, a
//!   real runtime (static busybox) and app bundles, the CLI run against them, and a snapshot
//!   of the state dir so a refused command can be proven to have changed nothing;
//! - **a private bus** ([`PrivateBus`], [`BusConfig`]): a dbus-daemon with a
//!   system-bus-like policy in its own mount namespace (app uids resolved from a userdb
//!   directory or from extra passwd entries), up within a bounded wait and killed on drop;
//! - **registries** ([`Registry`], [`FaultyServer`]): Debian's docker-registry on loopback,
//!   and a server that plays a registry's network gone wrong.
//!
//! The kit depends on no appmgr crate (it runs the binaries as processes), so any crate may
//! take it as a dev-dependency without a cycle, and the daemon's tests never pull in the CLI
//! crate.

mod bus;
mod env;
mod registry;
mod tls;

pub use bus::{BusConfig, Nss, PrivateBus};
pub use env::*;
pub use registry::{http_get, sha256_file, Fault, FaultyServer, Registry};
pub use tls::{write_credentials, RegistryAuth, SecureRegistry, TestCa};

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::SystemTime;

/// Whether the tests run with effective uid 0 (the privileged ones need it; CI and
/// scripts/test run them as root).
pub fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// Reports a skipped test on the terminal: `SKIPPED <test>: <reason>`. Written to the
/// stderr file directly, so it shows even though libtest captures a passing test's output.
/// `location` names the test when the thread does not (`--test-threads=1`).
pub fn skipped(location: &str, reason: &str) {
    let thread = std::thread::current();
    let test = thread
        .name()
        .filter(|n| *n != "main")
        .unwrap_or(location)
        .to_string();
    let _ = writeln!(std::io::stderr().lock(), "SKIPPED {test}: {reason}");
}

/// Ends the current test (`return`) when not root, printing why it is skipped:
/// `require_root!("namespaces, cgroups")`.
#[macro_export]
macro_rules! require_root {
    ($why:expr) => {
        if !$crate::is_root() {
            $crate::skipped(
                concat!(module_path!(), ":", line!()),
                &format!("needs root ({})", $why),
            );
            return;
        }
    };
}

/// Ends the current test (`return`) when `reason` (an `Option<String>`) is `Some`,
/// printing it: `skip_if!(missing_tool(&["dbus-daemon"]))`.
#[macro_export]
macro_rules! skip_if {
    ($reason:expr) => {
        if let Some(reason) = $reason {
            $crate::skipped(concat!(module_path!(), ":", line!()), &reason);
            return;
        }
    };
}

/// For tests of app networks: [`require_root!`], then skips (with the reason) when the host
/// cannot give apps networks (`ip` or `nft` missing), except in CI (`CI` set), where that
/// fails the test. Expands to a call of `appmgr_sandbox::net::available`, which the
/// calling crate must reach.
#[macro_export]
macro_rules! require_net {
    ($why:expr) => {
        $crate::require_root!($why);
        if let Err(e) = appmgr_sandbox::net::available() {
            assert!(
                std::env::var_os("CI").is_none(),
                "ip and nft must be installed in CI: {e}"
            );
            $crate::skip_if!(Some(format!("no app networks on this host: {e}")));
        }
    };
}

/// What the kernel holds of the network of the app with `uid` (docs/network.md): its
/// namespace, its host interface, its rules (its chains in the shared table `inet
/// appmgr`), by those names.
pub fn net_leftovers(uid: u32) -> Vec<&'static str> {
    let mut v = Vec::new();
    if std::fs::symlink_metadata(format!("/run/netns/appmgr-{uid}")).is_ok() {
        v.push("netns");
    }
    if std::fs::symlink_metadata(format!("/sys/class/net/am-{uid}")).is_ok() {
        v.push("link");
    }
    let rules = std::process::Command::new("nft")
        .args(["list", "chain", "inet", "appmgr", &format!("a{uid}_from")])
        .output()
        .expect("run nft");
    if rules.status.success() {
        v.push("rules");
    }
    v
}

/// `Some("TOOL is not installed")` for the first of `tools` not found on `PATH`.
pub fn missing_tool(tools: &[&str]) -> Option<String> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    tools
        .iter()
        .find(|t| !std::env::split_paths(&path).any(|d| d.join(t).is_file()))
        .map(|t| format!("{t} is not installed"))
}

/// The repository's root directory (the workspace this kit belongs to).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("the workspace root")
}

/// Where the workspace's binaries are: `APPMGR_TEST_BIN_DIR`, else the profile directory
/// of the running test executable (`target/debug/deps/NAME-HASH` → `target/debug`).
pub fn bin_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("APPMGR_TEST_BIN_DIR") {
        return d.into();
    }
    let exe = std::env::current_exe().expect("the test executable's path");
    let mut dir = exe
        .parent()
        .expect("the test executable's directory")
        .to_path_buf();
    if dir.file_name().is_some_and(|n| n == "deps") {
        dir.pop();
    }
    dir
}

/// The package that builds binary `name`.
fn package_of(name: &str) -> &'static str {
    match name {
        "appmgr" => "appmgr-multicall",
        "appmgr-ops" => "appmgr-cli",
        "appmgr-launch" => "appmgr-sandbox",
        "appmgr-probe" => "appmgr-probe",
        _ => "<the package that defines it>",
    }
}

/// The programs that are the `appmgr` executable run under another name (a symlink, as
/// installed; see `appmgr-multicall`).
pub const MULTICALL_NAMES: &[&str] = &["appmgrd", "appmgr-portald"];

/// The executable that `name` runs: `appmgr` for the [`MULTICALL_NAMES`], else `name`.
fn image_of(name: &str) -> &str {
    if MULTICALL_NAMES.contains(&name) {
        "appmgr"
    } else {
        name
    }
}

/// The probe (`appmgr-probe`) built statically (it runs inside sandboxes whose runtime
/// has no libc), once per test run, into `TARGET/probe-static`; `APPMGR_PROBE` overrides.
pub fn static_probe() -> PathBuf {
    static P: Mutex<Option<PathBuf>> = Mutex::new(None);
    let mut p = P.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(p) = p.as_ref() {
        return p.clone();
    }
    let built = match std::env::var_os("APPMGR_PROBE") {
        Some(x) => PathBuf::from(x),
        None => {
            // TARGET/<profile> → TARGET
            let target = bin_dir()
                .parent()
                .expect("the target directory")
                .to_path_buf();
            let dir = target.join("probe-static");
            let triple = format!("{}-unknown-linux-gnu", std::env::consts::ARCH);
            let st = std::process::Command::new(
                std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()),
            )
            .current_dir(repo_root())
            .args(["build", "-q", "-p", "appmgr-probe", "--bin", "appmgr-probe"])
            .args(["--target", &triple])
            .env("CARGO_TARGET_DIR", &dir)
            .env("RUSTFLAGS", "-C target-feature=+crt-static")
            .env("LIBSECCOMP_LINK_TYPE", "static")
            .env(
                "LIBSECCOMP_LIB_PATH",
                format!("/usr/lib/{}-linux-gnu", std::env::consts::ARCH),
            )
            .status()
            .expect("run cargo to build the static probe");
            assert!(st.success(), "building the static probe failed");
            dir.join(triple).join("debug/appmgr-probe")
        }
    };
    *p = Some(built.clone());
    built
}

/// The workspace binary `name` (`appmgr`, `appmgr-ops`, `appmgrd`, `appmgr-launch`, …) in
/// [`bin_dir`]. Panics, naming the binary and the command that builds it, when it is
/// missing or older than one of its sources (per cargo's dep-info file `NAME.d` beside it).
pub fn binary(name: &str) -> PathBuf {
    static CHECKED: Mutex<BTreeMap<String, PathBuf>> = Mutex::new(BTreeMap::new());
    let mut checked = CHECKED.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(p) = checked.get(name) {
        return p.clone();
    }
    let p = locate(&bin_dir(), name).unwrap_or_else(|e| panic!("appmgr-testkit: {e}"));
    checked.insert(name.to_string(), p.clone());
    p
}

/// `dir/name` if it exists and is not older than its sources; else why not and how to
/// build it. For the [`MULTICALL_NAMES`], the `appmgr` executable is checked and
/// `dir/name` made the symlink to it that the installed layout has (cargo builds no such
/// link).
fn locate(dir: &Path, name: &str) -> Result<PathBuf, String> {
    let image = image_of(name);
    if image != name {
        let target = locate(dir, image)?;
        let link = dir.join(name);
        if std::fs::read_link(&link).is_ok_and(|t| t == Path::new(image)) {
            return Ok(link);
        }
        // Made under a temporary name and renamed over whatever is there (a binary of an
        // older layout, say), so that tests running in parallel never see a half-made link.
        let tmp = dir.join(format!(".{name}.{}.link", std::process::id()));
        let _ = std::fs::remove_file(&tmp);
        std::os::unix::fs::symlink(image, &tmp)
            .and_then(|()| std::fs::rename(&tmp, &link))
            .map_err(|e| {
                format!(
                    "{name}: cannot link {} to {}: {e}",
                    link.display(),
                    target.display()
                )
            })?;
        return Ok(link);
    }
    let p = dir.join(name);
    let build = format!(
        "build it with `cargo build -p {} --bin {name}` (or `cargo build --workspace --bins`, \
         as scripts/test does; `cargo test -p X` builds only X's own binaries)",
        package_of(name)
    );
    let built = std::fs::metadata(&p)
        .and_then(|m| m.modified())
        .map_err(|e| format!("{name} is missing at {} ({e}): {build}", p.display()))?;
    match newer_source(&dir.join(format!("{name}.d")), built) {
        Some(src) => Err(format!(
            "{name} at {} is older than its source {}: {build}",
            p.display(),
            src.display()
        )),
        None => Ok(p),
    }
}

/// The first source listed in the dep-info file `dep_info` (`TARGET: SRC SRC …`, spaces in
/// paths escaped as `\ `) that is missing or modified after `built`. None when there is no
/// dep-info file (binaries not built by cargo here, e.g. `APPMGR_TEST_BIN_DIR`).
fn newer_source(dep_info: &Path, built: SystemTime) -> Option<PathBuf> {
    let text = std::fs::read_to_string(dep_info).ok()?;
    let first = text.lines().next()?;
    let (_, deps) = first.split_once(": ")?;
    let mut paths = Vec::new();
    let mut cur = String::new();
    let mut chars = deps.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => cur.extend(chars.next()),
            ' ' => paths.push(std::mem::take(&mut cur)),
            c => cur.push(c),
        }
    }
    paths.push(cur);
    paths
        .into_iter()
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
        .find(|p| {
            std::fs::metadata(p)
                .and_then(|m| m.modified())
                .map_or(true, |t| t > built)
        })
}

/// [`binary`]'s path as a `&'static str` (the form the CLI tests pass to `Command::new`).
pub fn binary_str(name: &str) -> &'static str {
    static PATHS: Mutex<BTreeMap<String, &'static str>> = Mutex::new(BTreeMap::new());
    let mut paths = PATHS.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(s) = paths.get(name) {
        return s;
    }
    let p = binary(name);
    let s: &'static str = Box::leak(
        p.to_str()
            .unwrap_or_else(|| panic!("{} is not UTF-8", p.display()))
            .to_string()
            .into_boxed_str(),
    );
    paths.insert(name.to_string(), s);
    s
}

/// The `appmgr` CLI.
pub fn bin() -> &'static str {
    binary_str("appmgr")
}

/// A port of 127.0.0.1 free for both UDP and TCP right now.
fn free_port_udp_and_tcp() -> u16 {
    for _ in 0..100 {
        let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = udp.local_addr().unwrap().port();
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no port of 127.0.0.1 free for both UDP and TCP in 100 tries");
}

/// Debian's dnsmasq on 127.0.0.1 (a free port), answering from a hosts file of the
/// test's with a TTL of 5 s: the name server of the tests of names in network grants
/// (docs/network.md#names). [`Dnsmasq::set`] rewrites the file and makes dnsmasq read it
/// again (SIGHUP). Killed on drop.
pub struct Dnsmasq {
    child: std::process::Child,
    port: u16,
    hosts: PathBuf,
}

impl Dnsmasq {
    /// Starts it in `dir` with one name. Panics when dnsmasq is not installed
    /// (`scripts/install-deps` installs dnsmasq-base).
    pub fn start(dir: &Path, name: &str, addr: std::net::Ipv4Addr) -> Dnsmasq {
        let exe = ["/usr/sbin/dnsmasq", "/usr/bin/dnsmasq"]
            .into_iter()
            .find(|p| Path::new(p).exists())
            .expect("dnsmasq is installed (scripts/install-deps: dnsmasq-base)");
        let hosts = dir.join("dnsmasq-hosts");
        std::fs::write(&hosts, format!("{addr} {name}\n")).unwrap();
        // A port free for UDP is not always free for TCP, which dnsmasq binds too, and
        // another test may take it between our probe and dnsmasq's bind: dnsmasq then
        // exits at once. So a start that ends within 300 ms is tried again on another
        // port (a CI run once failed on such a start, answering nothing for 5 s).
        for attempt in 1..=5 {
            let port = free_port_udp_and_tcp();
            let mut child = std::process::Command::new(exe)
                .args([
                    "--keep-in-foreground",
                    "--conf-file=/dev/null",
                    "--no-resolv",
                    "--no-hosts",
                    "--local-ttl=5",
                    "--listen-address=127.0.0.1",
                    "--bind-interfaces",
                    "--user=root",
                    "--group=root",
                    "--pid-file=",
                    "--log-facility=/dev/null",
                ])
                .arg(format!("--port={port}"))
                .arg(format!("--addn-hosts={}", hosts.display()))
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .unwrap();
            let start = std::time::Instant::now();
            let exited = loop {
                if let Some(status) = child.try_wait().unwrap() {
                    break Some(status);
                }
                if start.elapsed() > std::time::Duration::from_millis(300) {
                    break None;
                }
                std::thread::sleep(std::time::Duration::from_millis(20));
            };
            match exited {
                None => return Dnsmasq { child, port, hosts },
                Some(status) => eprintln!(
                    "dnsmasq on port {port} ended at once ({status}), attempt {attempt} of 5"
                ),
            }
        }
        panic!("dnsmasq did not stay up on 5 free ports in a row");
    }

    /// Where it answers.
    pub fn server(&self) -> std::net::SocketAddrV4 {
        std::net::SocketAddrV4::new(std::net::Ipv4Addr::LOCALHOST, self.port)
    }

    /// From now on `name` is at `addr` (the caller waits until it answers so).
    pub fn set(&self, name: &str, addr: std::net::Ipv4Addr) {
        std::fs::write(&self.hosts, format!("{addr} {name}\n")).unwrap();
        let _ = std::process::Command::new("kill")
            .args(["-HUP", &self.child.id().to_string()])
            .status();
    }

    /// Waits (5 s at most) until `answers` says it gives the expected answer for `name`.
    pub fn wait_for(&self, name: &str, mut answers: impl FnMut() -> bool) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while !answers() {
            assert!(
                std::time::Instant::now() < deadline,
                "dnsmasq does not give the expected answer for {name}"
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn dep_info_newer_or_missing_sources_are_found() {
        let d = tempfile::tempdir().unwrap();
        let a = d.path().join("a b.rs");
        std::fs::write(&a, "").unwrap();
        let built = SystemTime::now() + Duration::from_secs(60);
        let info = d.path().join("x.d");
        let escaped = a.display().to_string().replace(' ', "\\ ");
        std::fs::write(&info, format!("/t/x: {escaped}\n\n{escaped}:\n")).unwrap();
        assert_eq!(newer_source(&info, built), None);
        let earlier = SystemTime::now() - Duration::from_secs(60);
        assert_eq!(newer_source(&info, earlier), Some(a.clone()));
        std::fs::write(&info, format!("/t/x: {escaped} /nonexistent/src.rs\n")).unwrap();
        assert_eq!(
            newer_source(&info, built),
            Some(PathBuf::from("/nonexistent/src.rs"))
        );
        assert_eq!(newer_source(&d.path().join("none.d"), built), None);
    }

    #[test]
    fn a_missing_or_stale_binary_is_refused_with_the_build_command() {
        let d = tempfile::tempdir().unwrap();
        let e = locate(d.path(), "appmgr").unwrap_err();
        assert!(e.starts_with("appmgr is missing at "), "{e}");
        assert!(
            e.contains("`cargo build -p appmgr-multicall --bin appmgr`"),
            "{e}"
        );
        // appmgrd is the appmgr executable: its absence is appmgr's.
        let e = locate(d.path(), "appmgrd").unwrap_err();
        assert!(
            e.starts_with("appmgr is missing at ")
                && e.contains("`cargo build -p appmgr-multicall --bin appmgr`"),
            "{e}"
        );
        // Built, and its source edited afterwards: stale.
        let bin = d.path().join("appmgr-launch");
        std::fs::write(&bin, "").unwrap();
        let src = d.path().join("launch.rs");
        std::fs::write(&src, "").unwrap();
        let later = SystemTime::now() + Duration::from_secs(60);
        std::fs::File::options()
            .write(true)
            .open(&src)
            .unwrap()
            .set_modified(later)
            .unwrap();
        std::fs::write(
            d.path().join("appmgr-launch.d"),
            format!("{}: {}\n", bin.display(), src.display()),
        )
        .unwrap();
        let e = locate(d.path(), "appmgr-launch").unwrap_err();
        assert!(
            e.contains("is older than its source") && e.contains("launch.rs"),
            "{e}"
        );
        assert!(
            e.contains("`cargo build -p appmgr-sandbox --bin appmgr-launch`"),
            "{e}"
        );
        // Rebuilt after the edit: found.
        std::fs::File::options()
            .write(true)
            .open(&bin)
            .unwrap()
            .set_modified(later + Duration::from_secs(1))
            .unwrap();
        assert_eq!(locate(d.path(), "appmgr-launch"), Ok(bin));
    }

    #[test]
    fn the_daemons_are_links_to_the_appmgr_executable() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("appmgr"), "").unwrap();
        // A binary of the old layout is replaced by the link.
        std::fs::write(d.path().join("appmgrd"), "old").unwrap();
        for name in MULTICALL_NAMES {
            let p = locate(d.path(), name).unwrap();
            assert_eq!(p, d.path().join(name));
            assert_eq!(std::fs::read_link(&p).unwrap(), Path::new("appmgr"));
            // Found again as it is.
            assert_eq!(locate(d.path(), name), Ok(p));
        }
        let left: Vec<_> = std::fs::read_dir(d.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.starts_with('.'))
            .collect();
        assert!(left.is_empty(), "temporary links left: {left:?}");
    }

    #[test]
    fn missing_tool_names_the_tool() {
        assert_eq!(missing_tool(&["sh"]), None);
        assert_eq!(
            missing_tool(&["sh", "appmgr-no-such-tool"]),
            Some("appmgr-no-such-tool is not installed".into())
        );
    }
}
