//! The names in network grants (`egress = ["backend.example.com:8883"]`), resolved by
//! appmgr on the host, never by the app, and looked up again when their answer's TTL runs
//! out (docs/network.md#names).
//!
//! Lookup order is the host's usual one, `files dns`: a name listed in the host's
//! `/etc/hosts` takes those addresses (looked at again every [`HOSTS_REFRESH`]); any other
//! name is asked of the name servers as an `A` query (IPv4: app networks are IPv4), over
//! UDP, over TCP when the answer was truncated. The answer's lowest TTL on the way to the
//! addresses (CNAMEs included) says when to ask again, clamped to
//! [`MIN_REFRESH`]..=[`MAX_REFRESH`]; a name that does not exist is asked again after the
//! zone's negative TTL. Every query is bounded ([`QUERY_TIMEOUT`] per server).
//!
//! The answers become elements of the app's per-name nft sets and lines of the app's
//! `/etc/hosts` ([`Refresher`]), both replaced whole when an answer changes: the app sees
//! an address in its `/etc/hosts` only while the rules let it reach that address.

use simple_dns::{rdata::RData, Name, Packet, PacketFlag, Question, CLASS, QTYPE, RCODE, TYPE};
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpStream, UdpSocket};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// No name is looked up more often than this, whatever its TTL.
pub const MIN_REFRESH: Duration = Duration::from_secs(5);
/// Nor less often than this.
pub const MAX_REFRESH: Duration = Duration::from_secs(3600);
/// Names from the host's `/etc/hosts` (no TTL) are read again this often.
pub const HOSTS_REFRESH: Duration = Duration::from_secs(300);
/// After a failed lookup (no server answered): the last addresses stay, and the name is
/// asked again this soon.
pub const RETRY: Duration = Duration::from_secs(30);
/// How long one server has to answer one query.
pub const QUERY_TIMEOUT: Duration = Duration::from_secs(2);
/// The host's resolver configuration, read at every lookup (it may change with DHCP).
pub const HOST_RESOLV_CONF: &str = "/etc/resolv.conf";
/// The host's static names.
pub const HOST_HOSTS: &str = "/etc/hosts";

/// What one lookup found: the name's IPv4 addresses (sorted, none when the name does not
/// exist) and when to look again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub addrs: Vec<Ipv4Addr>,
    pub ttl: Duration,
}

/// Why a lookup found nothing usable (the last answer stays, see [`RETRY`]).
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    #[error("no name server (none in {HOST_RESOLV_CONF} and none in network-resolvers)")]
    NoServers,
    #[error("name server {server}: {source}")]
    Io {
        server: SocketAddrV4,
        #[source]
        source: io::Error,
    },
    #[error("name server {server}: {reason}")]
    Bad {
        server: SocketAddrV4,
        reason: String,
    },
}

/// Where names are looked up: the host's `/etc/hosts`, then `servers` (the configured
/// `network-resolvers`, or the host's `/etc/resolv.conf` name servers when empty).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolver {
    pub servers: Vec<SocketAddrV4>,
    pub hosts: PathBuf,
    pub resolv_conf: PathBuf,
    pub timeout: Duration,
}

impl Resolver {
    /// The host's resolver, or `configured` name servers in place of its `resolv.conf`.
    pub fn new(configured: &[SocketAddrV4]) -> Self {
        Resolver {
            servers: configured.to_vec(),
            hosts: HOST_HOSTS.into(),
            resolv_conf: HOST_RESOLV_CONF.into(),
            timeout: QUERY_TIMEOUT,
        }
    }

    /// The servers asked, in order. The host's own loopback resolvers count: appmgr asks
    /// from the host's network namespace.
    pub fn servers(&self) -> Vec<SocketAddrV4> {
        if !self.servers.is_empty() {
            return self.servers.clone();
        }
        let conf = std::fs::read_to_string(&self.resolv_conf).unwrap_or_default();
        resolv_conf_nameservers(&conf)
            .into_iter()
            .map(|a| SocketAddrV4::new(a, 53))
            .collect()
    }

    /// Looks `name` up: the host's `/etc/hosts` first, then each server in turn until one
    /// answers.
    pub fn resolve(&self, name: &str) -> Result<Answer, ResolveError> {
        let hosts = std::fs::read_to_string(&self.hosts).unwrap_or_default();
        let listed = hosts_file_lookup(&hosts, name);
        if !listed.is_empty() {
            return Ok(Answer {
                addrs: listed,
                ttl: HOSTS_REFRESH,
            });
        }
        let servers = self.servers();
        let mut last = ResolveError::NoServers;
        for server in servers {
            match query(server, name, self.timeout) {
                Ok(a) => return Ok(a),
                Err(e) => last = e,
            }
        }
        Err(last)
    }
}

/// The IPv4 `nameserver`s of a `resolv.conf`, in order, without repeats or `0.0.0.0`.
pub fn resolv_conf_nameservers(resolv_conf: &str) -> Vec<Ipv4Addr> {
    let mut v: Vec<Ipv4Addr> = Vec::new();
    for a in resolv_conf
        .lines()
        .filter_map(|l| l.trim().strip_prefix("nameserver"))
        .filter_map(|a| a.trim().parse::<Ipv4Addr>().ok())
        .filter(|a| !a.is_unspecified())
    {
        if !v.contains(&a) {
            v.push(a);
        }
    }
    v
}

/// The IPv4 addresses `hosts` (an `/etc/hosts` file) gives `name`, sorted.
pub fn hosts_file_lookup(hosts: &str, name: &str) -> Vec<Ipv4Addr> {
    let want = normalize(name);
    let mut v: Vec<Ipv4Addr> = hosts
        .lines()
        .map(|l| l.split('#').next().unwrap_or(""))
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let addr = f.next()?.parse::<Ipv4Addr>().ok()?;
            f.any(|n| normalize(n) == want).then_some(addr)
        })
        .collect();
    v.sort();
    v.dedup();
    v
}

fn normalize(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

fn query_id() -> u16 {
    let mut b = [0u8; 2];
    if std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut b))
        .is_err()
    {
        // Not secret, only unpredictable enough not to be guessed by an off-path sender
        // (the source port is random too).
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        b = (t.subsec_nanos() as u16 ^ std::process::id() as u16).to_be_bytes();
    }
    u16::from_be_bytes(b)
}

/// The `A` query for `name` with id `id` (recursion desired).
fn build_query(id: u16, name: &str) -> Result<Vec<u8>, String> {
    let mut p = Packet::new_query(id);
    p.set_flags(PacketFlag::RECURSION_DESIRED);
    let qname = Name::new(name).map_err(|e| format!("name {name:?}: {e}"))?;
    p.questions.push(Question::new(
        qname,
        QTYPE::TYPE(TYPE::A),
        simple_dns::QCLASS::CLASS(CLASS::IN),
        false,
    ));
    p.build_bytes_vec().map_err(|e| e.to_string())
}

/// Asks `server` for the `A` records of `name`.
fn query(server: SocketAddrV4, name: &str, timeout: Duration) -> Result<Answer, ResolveError> {
    let bad = |reason: String| ResolveError::Bad { server, reason };
    let io = |source: io::Error| ResolveError::Io { server, source };
    let id = query_id();
    let q = build_query(id, name).map_err(bad)?;
    let deadline = Instant::now() + timeout;
    let sock = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).map_err(io)?;
    // Connected: the kernel drops datagrams from anyone but the server.
    sock.connect(server).map_err(io)?;
    sock.send(&q).map_err(io)?;
    let mut buf = [0u8; 1500];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("no answer within {} ms", timeout.as_millis()),
            )));
        }
        sock.set_read_timeout(Some(left)).map_err(io)?;
        let n = match sock.recv(&mut buf) {
            Ok(n) => n,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                continue
            }
            Err(e) => return Err(io(e)),
        };
        let Ok(p) = Packet::parse(&buf[..n]) else {
            continue;
        };
        // Not the answer to this question: someone else's datagram, ignored.
        if p.id() != id || !p.has_flags(PacketFlag::RESPONSE) || !asks(&p, name) {
            continue;
        }
        if p.has_flags(PacketFlag::TRUNCATION) {
            return query_tcp(server, name, deadline);
        }
        return interpret(&p, name).map_err(bad);
    }
}

/// The same question over TCP (the UDP answer was truncated).
fn query_tcp(server: SocketAddrV4, name: &str, deadline: Instant) -> Result<Answer, ResolveError> {
    let bad = |reason: String| ResolveError::Bad { server, reason };
    let io = |source: io::Error| ResolveError::Io { server, source };
    let left = || {
        let d = deadline.saturating_duration_since(Instant::now());
        if d.is_zero() {
            Err(io(io::ErrorKind::TimedOut.into()))
        } else {
            Ok(d)
        }
    };
    let id = query_id();
    let q = build_query(id, name).map_err(bad)?;
    let mut s = TcpStream::connect_timeout(&SocketAddr::V4(server), left()?).map_err(io)?;
    s.set_write_timeout(Some(left()?)).map_err(io)?;
    let mut framed = (q.len() as u16).to_be_bytes().to_vec();
    framed.extend_from_slice(&q);
    s.write_all(&framed).map_err(io)?;
    s.set_read_timeout(Some(left()?)).map_err(io)?;
    let mut len = [0u8; 2];
    s.read_exact(&mut len).map_err(io)?;
    let mut msg = vec![0u8; usize::from(u16::from_be_bytes(len))];
    s.set_read_timeout(Some(left()?)).map_err(io)?;
    s.read_exact(&mut msg).map_err(io)?;
    let p = Packet::parse(&msg).map_err(|e| bad(format!("unreadable answer: {e}")))?;
    if p.id() != id || !p.has_flags(PacketFlag::RESPONSE) || !asks(&p, name) {
        return Err(bad("an answer to another question".into()));
    }
    interpret(&p, name).map_err(bad)
}

/// Whether `p` answers the question appmgr asked (one `A` question for `name`).
fn asks(p: &Packet, name: &str) -> bool {
    p.questions.len() == 1
        && normalize(&p.questions[0].qname.to_string()) == normalize(name)
        && p.questions[0].qtype == QTYPE::TYPE(TYPE::A)
}

/// The addresses of `name` in an answer: the `A` records at the end of its CNAME chain
/// (records for other names are ignored), with the lowest TTL on the way.
fn interpret(p: &Packet, name: &str) -> Result<Answer, String> {
    match p.rcode() {
        RCODE::NoError => {}
        RCODE::NameError => {
            return Ok(Answer {
                addrs: Vec::new(),
                ttl: clamp(negative_ttl(p)),
            })
        }
        other => return Err(format!("answered {other:?}")),
    }
    let mut current = normalize(name);
    let mut ttl = u32::MAX;
    // A chain longer than the answer has records is a loop.
    for _ in 0..=p.answers.len() {
        let mut next = None;
        for rr in p
            .answers
            .iter()
            .filter(|rr| normalize(&rr.name.to_string()) == current)
        {
            if let RData::CNAME(c) = &rr.rdata {
                next = Some(normalize(&c.0.to_string()));
                ttl = ttl.min(rr.ttl);
            }
        }
        match next {
            Some(n) => current = n,
            None => break,
        }
    }
    let mut addrs = Vec::new();
    let mut a_ttl = None::<u32>;
    for rr in p
        .answers
        .iter()
        .filter(|rr| normalize(&rr.name.to_string()) == current)
    {
        if let RData::A(a) = &rr.rdata {
            addrs.push(Ipv4Addr::from(a.address));
            a_ttl = Some(a_ttl.map_or(rr.ttl, |t| t.min(rr.ttl)));
        }
    }
    addrs.sort();
    addrs.dedup();
    let ttl = match a_ttl {
        Some(t) => ttl.min(t),
        // The name exists but has no IPv4 address: ask again after the negative TTL.
        None => negative_ttl(p),
    };
    Ok(Answer {
        addrs,
        ttl: clamp(ttl),
    })
}

/// The negative-caching TTL of an answer without addresses: the SOA's minimum (capped by
/// the SOA record's own TTL), or [`RETRY`] without one.
fn negative_ttl(p: &Packet) -> u32 {
    p.name_servers
        .iter()
        .find_map(|rr| match &rr.rdata {
            RData::SOA(soa) => Some(rr.ttl.min(soa.minimum)),
            _ => None,
        })
        .unwrap_or(RETRY.as_secs() as u32)
}

fn clamp(ttl: u32) -> Duration {
    Duration::from_secs(u64::from(ttl)).clamp(MIN_REFRESH, MAX_REFRESH)
}

#[cfg(test)]
mod tests {
    use super::*;
    use simple_dns::{rdata, ResourceRecord};

    fn reply<'a>(id: u16, q: &'a str, records: Vec<ResourceRecord<'a>>) -> Vec<u8> {
        let mut p = Packet::new_reply(id);
        p.questions.push(Question::new(
            Name::new_unchecked(q),
            QTYPE::TYPE(TYPE::A),
            simple_dns::QCLASS::CLASS(CLASS::IN),
            false,
        ));
        p.answers = records;
        p.build_bytes_vec().unwrap()
    }

    fn a(name: &str, ttl: u32, addr: [u8; 4]) -> ResourceRecord<'_> {
        ResourceRecord::new(
            Name::new_unchecked(name),
            CLASS::IN,
            ttl,
            RData::A(rdata::A {
                address: u32::from(Ipv4Addr::from(addr)),
            }),
        )
    }

    fn cname<'a>(name: &'a str, ttl: u32, to: &'a str) -> ResourceRecord<'a> {
        ResourceRecord::new(
            Name::new_unchecked(name),
            CLASS::IN,
            ttl,
            RData::CNAME(rdata::CNAME(Name::new_unchecked(to))),
        )
    }

    fn answer(bytes: &[u8], name: &str) -> Result<Answer, String> {
        interpret(&Packet::parse(bytes).unwrap(), name)
    }

    #[test]
    fn the_lowest_ttl_on_the_chain_says_when_to_ask_again() {
        let b = reply(
            7,
            "api.example",
            vec![
                cname("api.example", 600, "edge.cdn.example"),
                a("edge.cdn.example", 60, [192, 0, 2, 8]),
                a("edge.cdn.example", 120, [192, 0, 2, 7]),
                // Not on the chain: ignored, however it got into the answer.
                a("evil.example", 1, [203, 0, 113, 1]),
            ],
        );
        let got = answer(&b, "API.example.").unwrap();
        assert_eq!(
            got.addrs,
            [
                "192.0.2.7".parse::<Ipv4Addr>().unwrap(),
                "192.0.2.8".parse().unwrap()
            ]
        );
        assert_eq!(got.ttl, Duration::from_secs(60));
        let b = reply(
            7,
            "api.example",
            vec![
                cname("api.example", 30, "x.example"),
                a("x.example", 600, [192, 0, 2, 1]),
            ],
        );
        assert_eq!(
            answer(&b, "api.example").unwrap().ttl,
            Duration::from_secs(30)
        );
    }

    #[test]
    fn ttls_are_clamped_and_loops_end() {
        let b = reply(1, "a.example", vec![a("a.example", 0, [192, 0, 2, 1])]);
        assert_eq!(answer(&b, "a.example").unwrap().ttl, MIN_REFRESH);
        let b = reply(
            1,
            "a.example",
            vec![a("a.example", 86400 * 7, [192, 0, 2, 1])],
        );
        assert_eq!(answer(&b, "a.example").unwrap().ttl, MAX_REFRESH);
        let b = reply(
            1,
            "a.example",
            vec![
                cname("a.example", 60, "b.example"),
                cname("b.example", 60, "a.example"),
            ],
        );
        let got = answer(&b, "a.example").unwrap();
        assert!(got.addrs.is_empty(), "{got:?}");
    }

    #[test]
    fn a_missing_name_has_no_addresses_and_a_server_failure_is_an_error() {
        let mut p = Packet::new_reply(3);
        *p.rcode_mut() = RCODE::NameError;
        let got = interpret(&p, "gone.example").unwrap();
        assert!(got.addrs.is_empty());
        assert_eq!(got.ttl, RETRY);
        *p.rcode_mut() = RCODE::ServerFailure;
        let e = interpret(&p, "gone.example").unwrap_err();
        assert!(e.contains("ServerFailure"), "{e}");
    }

    #[test]
    fn the_hosts_file_is_read_like_the_c_library_reads_it() {
        let hosts = "127.0.0.1 localhost\n# 192.0.2.99 backend.example\n\
                     192.0.2.5\tother.example Backend.Example # comment\n\
                     ::1 backend.example\n192.0.2.4 backend.example\n";
        assert_eq!(
            hosts_file_lookup(hosts, "backend.example."),
            [
                "192.0.2.4".parse::<Ipv4Addr>().unwrap(),
                "192.0.2.5".parse().unwrap()
            ]
        );
        assert!(hosts_file_lookup(hosts, "example").is_empty());
    }

    #[test]
    fn resolv_conf_gives_each_ipv4_server_once_in_order() {
        let conf = "# nameserver 192.0.2.1\nnameserver 192.0.2.53\nnameserver 0.0.0.0\n\
                    nameserver fe80::1\n  nameserver 127.0.0.53 \nnameserver 192.0.2.53\n";
        assert_eq!(
            resolv_conf_nameservers(conf),
            [
                "192.0.2.53".parse::<Ipv4Addr>().unwrap(),
                "127.0.0.53".parse().unwrap()
            ]
        );
    }

    #[test]
    fn servers_come_from_the_configuration_or_resolv_conf() {
        let dir = std::env::temp_dir().join(format!("appmgr-netnames-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let conf = dir.join("resolv.conf");
        std::fs::write(
            &conf,
            "search example\nnameserver 127.0.0.53\nnameserver ::1\nnameserver 192.0.2.53\n",
        )
        .unwrap();
        let mut r = Resolver::new(&[]);
        r.resolv_conf = conf;
        assert_eq!(
            r.servers(),
            [
                "127.0.0.53:53".parse::<SocketAddrV4>().unwrap(),
                "192.0.2.53:53".parse().unwrap()
            ]
        );
        let r = Resolver::new(&["127.0.0.1:5353".parse().unwrap()]);
        assert_eq!(
            r.servers(),
            ["127.0.0.1:5353".parse::<SocketAddrV4>().unwrap()]
        );
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_server_that_answers_another_question_is_not_believed() {
        // A real UDP exchange on loopback: first a reply with the wrong id, then one for
        // another name, then the right one; only the last counts.
        let srv = UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = match srv.local_addr().unwrap() {
            SocketAddr::V4(a) => a,
            SocketAddr::V6(_) => unreachable!(),
        };
        let t = std::thread::spawn(move || {
            let mut buf = [0u8; 512];
            let (n, from) = srv.recv_from(&mut buf).unwrap();
            let q = Packet::parse(&buf[..n]).unwrap();
            assert!(q.has_flags(PacketFlag::RECURSION_DESIRED));
            let id = q.id();
            srv.send_to(
                &reply(
                    id.wrapping_add(1),
                    "n.example",
                    vec![a("n.example", 60, [192, 0, 2, 66])],
                ),
                from,
            )
            .unwrap();
            srv.send_to(
                &reply(
                    id,
                    "other.example",
                    vec![a("other.example", 60, [192, 0, 2, 67])],
                ),
                from,
            )
            .unwrap();
            srv.send_to(
                &reply(id, "n.example", vec![a("n.example", 90, [192, 0, 2, 9])]),
                from,
            )
            .unwrap();
        });
        let got = query(addr, "n.example", Duration::from_secs(5)).unwrap();
        t.join().unwrap();
        assert_eq!(got.addrs, ["192.0.2.9".parse::<Ipv4Addr>().unwrap()]);
        assert_eq!(got.ttl, Duration::from_secs(90));
    }

    #[test]
    fn a_silent_server_costs_the_timeout_not_more() {
        let srv = UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = match srv.local_addr().unwrap() {
            SocketAddr::V4(a) => a,
            SocketAddr::V6(_) => unreachable!(),
        };
        let t0 = Instant::now();
        let e = query(addr, "n.example", Duration::from_millis(300)).unwrap_err();
        assert!(t0.elapsed() < Duration::from_secs(2), "{:?}", t0.elapsed());
        assert!(e.to_string().contains("no answer within"), "{e}");
        drop(srv);
    }
}
