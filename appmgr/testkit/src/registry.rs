//! Registries for the remote tests: Debian's real `docker-registry` on 127.0.0.1
//! ([`Registry`]), and [`FaultyServer`], a small HTTP server that plays a registry's
//! network gone wrong (a cut connection, a trickle, endless data), which the real one
//! cannot be made to do.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Debian's docker-registry (distribution 2.8) serving `dir` on 127.0.0.1 at a free port,
/// up within 10 s, killed on drop.
pub struct Registry {
    child: std::process::Child,
    pub port: u16,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One HTTP/1.1 GET on loopback, `Connection: close`: (status, body).
pub fn http_get(
    port: u16,
    path: &str,
    headers: &[(&str, &str)],
) -> std::io::Result<(u16, Vec<u8>)> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut req = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes())?;
    let mut all = Vec::new();
    s.read_to_end(&mut all)?;
    let end = all
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| std::io::Error::other("no end of head"))?;
    let head = String::from_utf8_lossy(&all[..end]).into_owned();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    Ok((status, all[end + 4..].to_vec()))
}

impl Registry {
    /// Panics when docker-registry is not installed (`scripts/install-deps` installs it).
    pub fn start(dir: &Path) -> Registry {
        Registry::start_with(dir, "", &|port| {
            matches!(http_get(port, "/v2/", &[]), Ok((200, _)))
        })
    }

    /// [`Registry::start`] with `extra` appended to the `http:` section of its
    /// configuration (indented two spaces; e.g. `tls:`) or after it (`auth:`, unindented),
    /// up once `ready(port)` holds.
    pub(crate) fn start_with(dir: &Path, extra: &str, ready: &dyn Fn(u16) -> bool) -> Registry {
        let exe = "/usr/bin/docker-registry";
        assert!(
            Path::new(exe).exists(),
            "docker-registry is installed (scripts/install-deps)"
        );
        let port = free_port();
        let cfg = dir.join("registry.yml");
        std::fs::write(
            &cfg,
            format!(
                "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n{extra}",
                dir.join("registry-data").display()
            ),
        )
        .unwrap();
        let child = std::process::Command::new(exe)
            .arg("serve")
            .arg(&cfg)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let r = Registry { child, port };
        let deadline = Instant::now() + Duration::from_secs(10);
        while !ready(port) {
            assert!(
                Instant::now() < deadline,
                "docker-registry did not answer in 10 s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        r
    }

    /// `oci://127.0.0.1:PORT/REPO`.
    pub fn url(&self, repo: &str) -> String {
        format!("oci://127.0.0.1:{}/{repo}", self.port)
    }

    /// The image manifest of `repo:tag`, as JSON.
    pub fn manifest(&self, repo: &str, tag: &str) -> serde_json::Value {
        let (status, body) = http_get(
            self.port,
            &format!("/v2/{repo}/manifests/{tag}"),
            &[("Accept", "application/vnd.oci.image.manifest.v1+json")],
        )
        .unwrap();
        assert_eq!(
            status,
            200,
            "{repo}:{tag}: {}",
            String::from_utf8_lossy(&body)
        );
        serde_json::from_slice(&body).unwrap()
    }

    /// Uploads `blob` and stores `manifest` under `repo:tag`, as a publisher (or an
    /// attacker with write access to the registry) could, with curl.
    pub fn push_raw(&self, repo: &str, tag: &str, blob: &Path, manifest: &serde_json::Value) {
        let digest = format!("sha256:{}", sha256_file(blob));
        let base = format!("http://127.0.0.1:{}/v2/{repo}", self.port);
        let out = std::process::Command::new("curl")
            .args(["-sS", "-D", "-", "-o", "/dev/null", "-X", "POST"])
            .arg(format!("{base}/blobs/uploads/"))
            .output()
            .unwrap();
        let head = String::from_utf8_lossy(&out.stdout);
        let loc = head
            .lines()
            .find_map(|l| {
                l.strip_prefix("Location: ")
                    .or_else(|| l.strip_prefix("location: "))
            })
            .expect("an upload location")
            .trim()
            .to_string();
        let sep = if loc.contains('?') { '&' } else { '?' };
        curl_put(
            blob,
            "application/octet-stream",
            &format!("{loc}{sep}digest={digest}"),
        );
        let mf = blob.with_extension("manifest.json");
        std::fs::write(&mf, serde_json::to_vec(manifest).unwrap()).unwrap();
        curl_put(
            &mf,
            "application/vnd.oci.image.manifest.v1+json",
            &format!("{base}/manifests/{tag}"),
        );
    }
}

impl Registry {
    /// The image manifest of `repo:tag` byte for byte.
    pub fn raw_manifest(&self, repo: &str, tag: &str) -> Vec<u8> {
        let (status, body) = http_get(
            self.port,
            &format!("/v2/{repo}/manifests/{tag}"),
            &[("Accept", "application/vnd.oci.image.manifest.v1+json")],
        )
        .unwrap();
        assert_eq!(status, 200, "{repo}:{tag}");
        body
    }

    /// Stores manifest bytes under `repo:tag` (its blobs must be there): what an attacker
    /// with write access to the registry does to serve old or other metadata.
    pub fn put_manifest(&self, repo: &str, tag: &str, bytes: &[u8], scratch: &Path) {
        let f = scratch.join(format!("put-{tag}.json"));
        std::fs::write(&f, bytes).unwrap();
        curl_put(
            &f,
            "application/vnd.oci.image.manifest.v1+json",
            &format!("http://127.0.0.1:{}/v2/{repo}/manifests/{tag}", self.port),
        );
    }
}

/// `curl -X PUT` of a file's content, which must succeed.
fn curl_put(file: &Path, content_type: &str, url: &str) {
    let st = std::process::Command::new("curl")
        .args(["-sSf", "-X", "PUT", "-H"])
        .arg(format!("Content-Type: {content_type}"))
        .arg("--data-binary")
        .arg(format!("@{}", file.display()))
        .arg(url)
        .status()
        .unwrap();
    assert!(st.success(), "PUT {url}");
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The sha256 of a file, hex (with sha256sum, to stay free of hashing crates here).
pub fn sha256_file(p: &Path) -> String {
    let out = std::process::Command::new("sha256sum")
        .arg(p)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

/// How [`FaultyServer`] serves a blob.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// As a registry does (ranges honoured).
    None,
    /// The first connection ends after this many bytes; later ones are served whole.
    CutFirstAt(usize),
    /// At most this many bytes per second, on every connection.
    Trickle(usize),
    /// The blob, then zeros without end (no Content-Length).
    Endless,
}

/// Each request's path and Range header, in order.
pub type Requests = Arc<Mutex<Vec<(String, Option<String>)>>>;

/// A registry's network gone wrong: serves one repository's tag list, one tag's image
/// manifest and one blob (any digest asked for), and any other path as the blob too (a
/// plain URL), with the [`Fault`] given. Records each request's path and Range header.
pub struct FaultyServer {
    pub port: u16,
    pub requests: Requests,
    stop: Arc<AtomicBool>,
}

impl FaultyServer {
    pub fn start(
        repo: &str,
        tag: &str,
        manifest: Vec<u8>,
        blob: Vec<u8>,
        fault: Fault,
    ) -> FaultyServer {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        l.set_nonblocking(true).unwrap();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (reqs, st) = (requests.clone(), stop.clone());
        let repo = repo.to_string();
        let tag = tag.to_string();
        std::thread::spawn(move || {
            let blob = Arc::new(blob);
            let manifest = Arc::new(manifest);
            let mut first_blob = true;
            while !st.load(Ordering::Relaxed) {
                let (s, _) = match l.accept() {
                    Ok(c) => c,
                    Err(_) => {
                        std::thread::sleep(Duration::from_millis(10));
                        continue;
                    }
                };
                let _ = s.set_nonblocking(false);
                let Some((path, range)) = read_request(&s) else {
                    continue;
                };
                reqs.lock().unwrap().push((path.clone(), range.clone()));
                let tags = format!("/v2/{repo}/tags/list");
                let man = format!("/v2/{repo}/manifests/{tag}");
                let (blob, manifest, st) = (blob.clone(), manifest.clone(), st.clone());
                let (repo, tag) = (repo.clone(), tag.clone());
                let cut = if path.starts_with(&format!("/v2/{repo}/blobs/"))
                    || (path != tags && path != man)
                {
                    let c = first_blob;
                    first_blob = false;
                    c
                } else {
                    false
                };
                std::thread::spawn(move || {
                    let mut s = s;
                    if path == tags {
                        let body = format!("{{\"name\":\"{repo}\",\"tags\":[\"{tag}\"]}}");
                        let _ = write!(s, "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len());
                    } else if path == man {
                        let _ = write!(s, "HTTP/1.1 200 OK\r\nContent-Type: application/vnd.oci.image.manifest.v1+json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", manifest.len());
                        let _ = s.write_all(&manifest);
                    } else {
                        serve_blob(s, &blob, range.as_deref(), fault, cut, &st);
                    }
                });
            }
        });
        FaultyServer {
            port,
            requests,
            stop,
        }
    }

    pub fn url(&self, repo: &str) -> String {
        format!("oci://127.0.0.1:{}/{repo}", self.port)
    }

    /// The requests for blobs (or other paths than the listing's), with their ranges.
    pub fn blob_requests(&self) -> Vec<Option<String>> {
        self.requests
            .lock()
            .unwrap()
            .iter()
            .filter(|(p, _)| !p.ends_with("/tags/list") && !p.contains("/manifests/"))
            .map(|(_, r)| r.clone())
            .collect()
    }
}

impl Drop for FaultyServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn read_request(s: &TcpStream) -> Option<(String, Option<String>)> {
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let mut r = BufReader::new(s);
    let mut line = String::new();
    r.read_line(&mut line).ok()?;
    let path = line.split_whitespace().nth(1)?.to_string();
    let mut range = None;
    loop {
        let mut h = String::new();
        if r.read_line(&mut h).ok()? == 0 || h == "\r\n" {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            if k.eq_ignore_ascii_case("range") {
                range = Some(v.trim().to_string());
            }
        }
    }
    Some((path, range))
}

fn serve_blob(
    mut s: TcpStream,
    blob: &[u8],
    range: Option<&str>,
    fault: Fault,
    first: bool,
    stop: &AtomicBool,
) {
    let start = range
        .and_then(|r| r.strip_prefix("bytes="))
        .and_then(|r| r.strip_suffix('-'))
        .and_then(|n| n.parse::<usize>().ok())
        .unwrap_or(0)
        .min(blob.len());
    let part = &blob[start..];
    let head = if fault == Fault::Endless {
        "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nConnection: close\r\n\r\n"
            .to_string()
    } else if range.is_some() {
        format!(
            "HTTP/1.1 206 Partial Content\r\nContent-Type: application/octet-stream\r\nContent-Length: {}\r\nContent-Range: bytes {start}-{}/{}\r\nConnection: close\r\n\r\n",
            part.len(),
            blob.len() - 1,
            blob.len()
        )
    } else {
        format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: {}\r\nAccept-Ranges: bytes\r\nConnection: close\r\n\r\n",
            part.len()
        )
    };
    if s.write_all(head.as_bytes()).is_err() {
        return;
    }
    match fault {
        Fault::None => {
            let _ = s.write_all(part);
        }
        Fault::CutFirstAt(n) => {
            let n = if first { n.min(part.len()) } else { part.len() };
            let _ = s.write_all(&part[..n]);
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
        Fault::Trickle(rate) => {
            let chunk = (rate / 10).max(1);
            for c in part.chunks(chunk) {
                if stop.load(Ordering::Relaxed) || s.write_all(c).is_err() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        Fault::Endless => {
            if s.write_all(part).is_err() {
                return;
            }
            let zeros = vec![0u8; 64 * 1024];
            let deadline = Instant::now() + Duration::from_secs(60);
            while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                if s.write_all(&zeros).is_err() {
                    return;
                }
            }
        }
    }
}
