//! Registries behind TLS and authentication for the remote tests: a test CA made with the
//! `openssl` tool, a server certificate for 127.0.0.1 it signs, and Debian's real
//! `docker-registry` serving https with htpasswd (`Basic`) or token (`Bearer`)
//! authentication. The token service is a small Python https server that checks a
//! password and signs ES256 tokens (JWT with an `x5c` certificate) the registry verifies
//! against its `rootcertbundle`, as the distribution spec's token authentication works.

use crate::registry::Registry;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn openssl(args: &[&str], dir: &Path) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .expect("openssl runs (scripts/install-deps installs it)");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A self-signed P-256 certificate `cert` for `subject`, its key in `key`, with `more`
/// arguments for `openssl req` (extensions).
fn self_signed(dir: &Path, key: &Path, cert: &Path, subject: &str, more: &[&str]) {
    let mut args = vec![
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-days",
        "2",
        "-subj",
        subject,
        "-keyout",
        key.to_str().unwrap(),
        "-out",
        cert.to_str().unwrap(),
    ];
    args.extend_from_slice(more);
    openssl(&args, dir);
}

/// A certificate authority of the test, in `dir/NAME-ca.pem` (its key beside it).
pub struct TestCa {
    pub cert: PathBuf,
    key: PathBuf,
    dir: PathBuf,
    name: String,
}

impl TestCa {
    pub fn new(dir: &Path, name: &str) -> TestCa {
        let cert = dir.join(format!("{name}-ca.pem"));
        let key = dir.join(format!("{name}-ca.key"));
        self_signed(
            dir,
            &key,
            &cert,
            &format!("/CN={name} test CA"),
            &[
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign,cRLSign",
            ],
        );
        TestCa {
            cert,
            key,
            dir: dir.to_path_buf(),
            name: name.to_string(),
        }
    }

    /// A server certificate and key for 127.0.0.1 (and `localhost`) signed by this CA.
    pub fn server_cert(&self) -> (PathBuf, PathBuf) {
        let stem = format!("{}-server", self.name);
        let (cert, key, csr, ext) = (
            self.dir.join(format!("{stem}.pem")),
            self.dir.join(format!("{stem}.key")),
            self.dir.join(format!("{stem}.csr")),
            self.dir.join(format!("{stem}.ext")),
        );
        std::fs::write(
            &ext,
            "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n\
             keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n",
        )
        .unwrap();
        openssl(
            &[
                "req",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-subj",
                "/CN=127.0.0.1",
                "-keyout",
                key.to_str().unwrap(),
                "-out",
                csr.to_str().unwrap(),
            ],
            &self.dir,
        );
        openssl(
            &[
                "x509",
                "-req",
                "-in",
                csr.to_str().unwrap(),
                "-CA",
                self.cert.to_str().unwrap(),
                "-CAkey",
                self.key.to_str().unwrap(),
                "-CAcreateserial",
                "-days",
                "2",
                "-extfile",
                ext.to_str().unwrap(),
                "-out",
                cert.to_str().unwrap(),
            ],
            &self.dir,
        );
        (cert, key)
    }
}

/// How a [`SecureRegistry`] authenticates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RegistryAuth {
    /// TLS only: anyone may pull and push.
    None,
    /// htpasswd: `Basic` with this user and password.
    Basic(&'static str, &'static str),
    /// A token service that gives tokens for this user and password (`Bearer`).
    Token(&'static str, &'static str),
}

/// docker-registry on https://127.0.0.1:PORT with a certificate of its own test CA.
pub struct SecureRegistry {
    pub registry: Registry,
    pub ca: TestCa,
    token_service: Option<std::process::Child>,
}

/// `curl --cacert CA https://127.0.0.1:PORT/v2/`: the status code, 0 when not up.
fn https_status(ca: &Path, port: u16, path: &str) -> u16 {
    Command::new("curl")
        .args([
            "-s",
            "-o",
            "/dev/null",
            "-m",
            "5",
            "-w",
            "%{http_code}",
            "--cacert",
        ])
        .arg(ca)
        .arg(format!("https://127.0.0.1:{port}{path}"))
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(0)
}

/// A bcrypt hash of `password` (cost 4) as htpasswd holds it, with Python's `crypt`
/// (libxcrypt), which Debian 12's python3 has.
fn bcrypt(password: &str) -> String {
    let out = Command::new("python3")
        .args([
            "-W",
            "ignore",
            "-c",
            "import crypt,sys; print(crypt.crypt(sys.argv[1], crypt.mksalt(crypt.METHOD_BLOWFISH, rounds=16)))",
            password,
        ])
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "bcrypt: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

const TOKEN_SERVICE: &str = r#"
import base64, http.server, json, os, ssl, subprocess, sys, time
from urllib.parse import urlparse, parse_qs
port_file, cert, key, sign_key, signer_der, user, password = sys.argv[1:8]
def b64u(b): return base64.urlsafe_b64encode(b).rstrip(b'=').decode()
def raw_sig(der):
    i = 2 if der[1] < 0x80 else 2 + (der[1] & 0x7f)
    out = b''
    for _ in range(2):
        n = der[i + 1]; v = der[i + 2:i + 2 + n]; i += 2 + n
        out += v.lstrip(b'\0').rjust(32, b'\0')
    return out
x5c = base64.b64encode(open(signer_der, 'rb').read()).decode()
class H(http.server.BaseHTTPRequestHandler):
    def log_message(self, *a): pass
    def reply(self, code, body=b''):
        self.send_response(code)
        self.send_header('Content-Type', 'application/json')
        self.send_header('Content-Length', str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def do_GET(self):
        q = parse_qs(urlparse(self.path).query)
        want = 'Basic ' + base64.b64encode(f'{user}:{password}'.encode()).decode()
        if self.headers.get('Authorization') != want:
            return self.reply(401)
        access = []
        for sc in q.get('scope', []):
            typ, name, actions = sc.rsplit(':', 2) if sc.count(':') >= 2 else (sc, '', '')
            access.append({'type': typ, 'name': name, 'actions': actions.split(',')})
        now = int(time.time())
        head = {'typ': 'JWT', 'alg': 'ES256', 'x5c': [x5c]}
        claims = {'iss': 'appmgr-test-issuer', 'sub': user, 'aud': q.get('service', [''])[0],
                  'exp': now + 600, 'nbf': now - 60, 'iat': now, 'jti': os.urandom(8).hex(),
                  'access': access}
        signing = b64u(json.dumps(head).encode()) + '.' + b64u(json.dumps(claims).encode())
        der = subprocess.run(['openssl', 'dgst', '-sha256', '-sign', sign_key],
                             input=signing.encode(), capture_output=True, check=True).stdout
        self.reply(200, json.dumps({'token': signing + '.' + b64u(raw_sig(der)),
                                    'expires_in': 600}).encode())
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(cert, key)
srv = http.server.ThreadingHTTPServer(('127.0.0.1', 0), H)
srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
open(port_file + '.tmp', 'w').write(str(srv.server_address[1]))
os.rename(port_file + '.tmp', port_file)
srv.serve_forever()
"#;

impl SecureRegistry {
    /// Starts it in `dir` (its CA, certificates, password file and data live there).
    pub fn start(dir: &Path, auth: RegistryAuth) -> SecureRegistry {
        let ca = TestCa::new(dir, "registry");
        let (cert, key) = ca.server_cert();
        let mut extra = format!(
            "  tls:\n    certificate: {}\n    key: {}\n",
            cert.display(),
            key.display()
        );
        let mut token_service = None;
        match auth {
            RegistryAuth::None => {}
            RegistryAuth::Basic(user, password) => {
                let htpasswd = dir.join("htpasswd");
                std::fs::write(&htpasswd, format!("{user}:{}\n", bcrypt(password))).unwrap();
                extra.push_str(&format!(
                    "auth:\n  htpasswd:\n    realm: appmgr-test\n    path: {}\n",
                    htpasswd.display()
                ));
            }
            RegistryAuth::Token(user, password) => {
                // The key that signs tokens, and its self-signed certificate: the
                // registry's rootcertbundle and each token's x5c.
                let signer_key = dir.join("token-signer.key");
                let signer = dir.join("token-signer.pem");
                let signer_der = dir.join("token-signer.der");
                self_signed(
                    dir,
                    &signer_key,
                    &signer,
                    "/CN=appmgr test token signer",
                    &[],
                );
                openssl(
                    &[
                        "x509",
                        "-in",
                        signer.to_str().unwrap(),
                        "-outform",
                        "DER",
                        "-out",
                        signer_der.to_str().unwrap(),
                    ],
                    dir,
                );
                let port_file = dir.join("token-service.port");
                let child = Command::new("python3")
                    .args(["-c", TOKEN_SERVICE])
                    .args([&port_file, &cert, &key, &signer_key, &signer_der])
                    .args([user, password])
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .spawn()
                    .expect("python3 runs");
                token_service = Some(child);
                let deadline = Instant::now() + Duration::from_secs(10);
                let port = loop {
                    if let Ok(p) = std::fs::read_to_string(&port_file) {
                        break p.trim().parse::<u16>().unwrap();
                    }
                    assert!(Instant::now() < deadline, "the token service did not start");
                    std::thread::sleep(Duration::from_millis(50));
                };
                extra.push_str(&format!(
                    "auth:\n  token:\n    realm: https://127.0.0.1:{port}/token\n    service: appmgr-test-registry\n    issuer: appmgr-test-issuer\n    rootcertbundle: {}\n",
                    signer.display()
                ));
            }
        }
        let ca_file = ca.cert.clone();
        let registry = Registry::start_with(dir, &extra, &|port| {
            matches!(https_status(&ca_file, port, "/v2/"), 200 | 401)
        });
        SecureRegistry {
            registry,
            ca,
            token_service,
        }
    }

    pub fn port(&self) -> u16 {
        self.registry.port
    }

    /// `oci+https://127.0.0.1:PORT/REPO`.
    pub fn url(&self, repo: &str) -> String {
        format!("oci+https://127.0.0.1:{}/{repo}", self.registry.port)
    }

    /// `https://127.0.0.1:PORT/PATH` (PATH starts with `/`).
    pub fn https_url(&self, path: &str) -> String {
        format!("https://127.0.0.1:{}{path}", self.registry.port)
    }
}

impl Drop for SecureRegistry {
    fn drop(&mut self) {
        if let Some(c) = &mut self.token_service {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Writes `USER:SECRET` to `path`, mode 0600.
pub fn write_credentials(path: &Path, user: &str, secret: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, format!("{user}:{secret}\n")).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}
