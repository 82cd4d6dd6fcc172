//! The `network` grant: `true` (any egress) or a table that narrows it.
//!
//! ```toml
//! network = { egress = ["198.51.100.0/24:443", "backend.example.com:8883/tcp"],
//!             listen = ["8080/tcp"], dns = true, talk-to = ["org.example.Server"] }
//! ```
//!
//! Every entry names its port; the protocol is `tcp` unless `/udp` is given. Hosts are
//! IPv4 addresses, IPv4 networks (`ADDR/PREFIX`) or DNS names, which appmgr resolves
//! when the app starts (the app never needs DNS for them). Policy and manifest use the
//! same form; a policy entry covers a requested one when it names the same port and
//! protocol and a network containing the requested one (names only cover equal names).

use crate::{AppId, InvalidValue};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::collections::BTreeSet;
use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

/// A transport protocol of an egress or listen entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Proto {
    Tcp,
    Udp,
}

impl Proto {
    pub fn as_str(self) -> &'static str {
        match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        }
    }
}

impl FromStr for Proto {
    type Err = InvalidValue;
    fn from_str(s: &str) -> Result<Self, InvalidValue> {
        match s {
            "tcp" => Ok(Proto::Tcp),
            "udp" => Ok(Proto::Udp),
            _ => Err(InvalidValue::new("protocol", s, "must be tcp or udp")),
        }
    }
}

impl fmt::Display for Proto {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An IPv4 network: an address and a prefix length, with no host bits set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Ipv4Net {
    addr: Ipv4Addr,
    prefix: u8,
}

impl Ipv4Net {
    /// `addr/prefix`; refused when `addr` has bits set below the prefix.
    pub fn new(addr: Ipv4Addr, prefix: u8) -> Result<Self, InvalidValue> {
        let s = format!("{addr}/{prefix}");
        if prefix > 32 {
            return Err(InvalidValue::new("network", &s, "prefix must be 0 to 32"));
        }
        if u32::from(addr) & !Self::mask(prefix) != 0 {
            return Err(InvalidValue::new(
                "network",
                &s,
                "host bits are set below the prefix",
            ));
        }
        Ok(Ipv4Net { addr, prefix })
    }
    /// One address (`/32`).
    pub fn host(addr: Ipv4Addr) -> Self {
        Ipv4Net { addr, prefix: 32 }
    }
    fn mask(prefix: u8) -> u32 {
        if prefix == 0 {
            0
        } else {
            u32::MAX << (32 - prefix)
        }
    }
    pub fn addr(&self) -> Ipv4Addr {
        self.addr
    }
    pub fn prefix(&self) -> u8 {
        self.prefix
    }
    /// Whether every address of `other` is in `self`.
    pub fn contains(&self, other: &Ipv4Net) -> bool {
        other.prefix >= self.prefix
            && u32::from(other.addr) & Self::mask(self.prefix) == u32::from(self.addr)
    }
    /// Whether `a` is in `self`.
    pub fn contains_addr(&self, a: Ipv4Addr) -> bool {
        self.contains(&Ipv4Net::host(a))
    }
}

impl FromStr for Ipv4Net {
    type Err = InvalidValue;
    fn from_str(s: &str) -> Result<Self, InvalidValue> {
        let bad = |r: &str| InvalidValue::new("network", s, r);
        let (a, p) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: Ipv4Addr = a
            .parse()
            .map_err(|_| bad("must be an IPv4 address or ADDRESS/PREFIX"))?;
        let prefix = match p {
            None => 32,
            Some(p) if !p.is_empty() && p.len() <= 2 && p.bytes().all(|b| b.is_ascii_digit()) => {
                p.parse().map_err(|_| bad("bad prefix"))?
            }
            Some(_) => return Err(bad("the prefix must be a number from 0 to 32")),
        };
        Ipv4Net::new(addr, prefix)
    }
}

impl fmt::Display for Ipv4Net {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.prefix == 32 {
            write!(f, "{}", self.addr)
        } else {
            write!(f, "{}/{}", self.addr, self.prefix)
        }
    }
}

/// Where an egress entry goes: a network, or a DNS name appmgr resolves at launch.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum EgressHost {
    Net(Ipv4Net),
    /// A DNS name, lowercase, without a trailing dot.
    Name(String),
}

impl fmt::Display for EgressHost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EgressHost::Net(n) => n.fmt(f),
            EgressHost::Name(n) => f.write_str(n),
        }
    }
}

fn valid_dns_name(s: &str) -> bool {
    s.len() <= 253
        && s.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        })
        // A name of digits and dots only would read as an address.
        && !s.bytes().all(|b| b.is_ascii_digit() || b == b'.')
}

fn parse_port(what: &'static str, whole: &str, p: &str) -> Result<u16, InvalidValue> {
    if p.is_empty() || p.len() > 5 || !p.bytes().all(|b| b.is_ascii_digit()) {
        return Err(InvalidValue::new(what, whole, "the port must be a number"));
    }
    match p.parse::<u16>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(InvalidValue::new(
            what,
            whole,
            "the port must be 1 to 65535",
        )),
    }
}

/// Splits `REST/PROTO` (tcp when absent).
fn split_proto<'a>(
    what: &'static str,
    whole: &str,
    s: &'a str,
) -> Result<(&'a str, Proto), InvalidValue> {
    match s.rsplit_once('/') {
        Some((rest, p)) if p == "tcp" || p == "udp" => Ok((rest, p.parse()?)),
        _ => Ok((s, Proto::Tcp)),
    }
    .and_then(|(rest, p)| {
        if rest.is_empty() {
            Err(InvalidValue::new(what, whole, "empty"))
        } else {
            Ok((rest, p))
        }
    })
}

/// One egress entry: `HOST:PORT[/tcp|/udp]`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Egress {
    pub host: EgressHost,
    pub port: u16,
    pub proto: Proto,
}

impl Egress {
    /// Whether this (policy) entry allows everything `req` asks for.
    pub fn covers(&self, req: &Egress) -> bool {
        self.port == req.port
            && self.proto == req.proto
            && match (&self.host, &req.host) {
                (EgressHost::Net(a), EgressHost::Net(b)) => a.contains(b),
                (EgressHost::Name(a), EgressHost::Name(b)) => a == b,
                _ => false,
            }
    }
}

impl FromStr for Egress {
    type Err = InvalidValue;
    fn from_str(s: &str) -> Result<Self, InvalidValue> {
        const WHAT: &str = "egress entry";
        let bad = |r: &str| InvalidValue::new(WHAT, s, r);
        if s.contains('[') || s.matches(':').count() > 1 {
            return Err(bad(
                "IPv6 destinations are not supported (IPv4 and DNS names only)",
            ));
        }
        let (rest, proto) = split_proto(WHAT, s, s)?;
        let (host, port) = rest
            .rsplit_once(':')
            .ok_or_else(|| bad("must be HOST:PORT[/tcp|/udp]: the port is required"))?;
        let port = parse_port(WHAT, s, port)?;
        let host = if host.starts_with(|c: char| c.is_ascii_digit())
            && host
                .bytes()
                .all(|b| b.is_ascii_digit() || b == b'.' || b == b'/')
        {
            EgressHost::Net(host.parse().map_err(|e: InvalidValue| bad(&e.reason))?)
        } else {
            let name = host.strip_suffix('.').unwrap_or(host);
            if !valid_dns_name(name) {
                return Err(bad(
                    "the host must be an IPv4 address, ADDRESS/PREFIX or a lowercase DNS name",
                ));
            }
            EgressHost::Name(name.to_string())
        };
        Ok(Egress { host, port, proto })
    }
}

impl fmt::Display for Egress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}/{}", self.host, self.port, self.proto)
    }
}

/// One inbound port the app may accept connections on: `PORT[/tcp|/udp]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Listen {
    pub port: u16,
    pub proto: Proto,
}

impl FromStr for Listen {
    type Err = InvalidValue;
    fn from_str(s: &str) -> Result<Self, InvalidValue> {
        const WHAT: &str = "listen entry";
        let (rest, proto) = split_proto(WHAT, s, s)?;
        Ok(Listen {
            port: parse_port(WHAT, s, rest)?,
            proto,
        })
    }
}

impl fmt::Display for Listen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.port, self.proto)
    }
}

macro_rules! string_serde {
    ($($t:ty),+) => {$(
        impl Serialize for $t {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }
        impl<'de> Deserialize<'de> for $t {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                String::deserialize(d)?.parse().map_err(serde::de::Error::custom)
            }
        }
    )+};
}
string_serde!(Ipv4Net, Egress, Listen, Proto);

/// The `network` grant. `any` is `network = true`: any egress, DNS included. Otherwise
/// the app reaches only `egress`, accepts only on `listen`, may query the host's name
/// servers only with `dns`, and reaches (and is reached by) the apps in `talk-to` whose
/// own grant names it back.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NetworkGrant {
    pub any: bool,
    pub egress: BTreeSet<Egress>,
    pub listen: BTreeSet<Listen>,
    pub dns: bool,
    pub talk_to: BTreeSet<AppId>,
}

impl NetworkGrant {
    /// `network = true`.
    pub fn any() -> Self {
        NetworkGrant {
            any: true,
            ..Default::default()
        }
    }
    /// Whether the app gets a network at all (its own namespace connected to the host).
    pub fn is_granted(&self) -> bool {
        self != &NetworkGrant::default()
    }
    /// The entries by name resolved at launch.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.egress.iter().filter_map(|e| match &e.host {
            EgressHost::Name(n) => Some(n.as_str()),
            EgressHost::Net(_) => None,
        })
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct Table {
    #[serde(default)]
    egress: BTreeSet<Egress>,
    #[serde(default)]
    listen: BTreeSet<Listen>,
    #[serde(default)]
    dns: bool,
    #[serde(default)]
    talk_to: BTreeSet<AppId>,
}

enum Form {
    Flag(bool),
    Table(Table),
}

impl<'de> Deserialize<'de> for NetworkGrant {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // Untagged enums hide the inner error; parse the two forms by hand instead.
        let v = toml_or_json_value(d)?;
        match v {
            Form::Flag(any) => Ok(NetworkGrant {
                any,
                ..Default::default()
            }),
            Form::Table(t) => Ok(NetworkGrant {
                any: false,
                egress: t.egress,
                listen: t.listen,
                dns: t.dns,
                talk_to: t.talk_to,
            }),
        }
    }
}

/// Reads either form, keeping the table's own error (a bad entry names itself).
fn toml_or_json_value<'de, D: Deserializer<'de>>(d: D) -> Result<Form, D::Error> {
    struct V;
    impl<'de> serde::de::Visitor<'de> for V {
        type Value = Form;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("true, false or a table { egress, listen, dns, talk-to }")
        }
        fn visit_bool<E: serde::de::Error>(self, b: bool) -> Result<Form, E> {
            Ok(Form::Flag(b))
        }
        fn visit_map<A: serde::de::MapAccess<'de>>(self, m: A) -> Result<Form, A::Error> {
            Table::deserialize(serde::de::value::MapAccessDeserializer::new(m)).map(Form::Table)
        }
    }
    d.deserialize_any(V)
}

impl Serialize for NetworkGrant {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let table = !self.egress.is_empty()
            || !self.listen.is_empty()
            || self.dns
            || !self.talk_to.is_empty();
        if !table {
            return s.serialize_bool(self.any);
        }
        let mut m = s.serialize_map(None)?;
        if !self.egress.is_empty() {
            m.serialize_entry("egress", &self.egress)?;
        }
        if !self.listen.is_empty() {
            m.serialize_entry("listen", &self.listen)?;
        }
        if self.dns {
            m.serialize_entry("dns", &true)?;
        }
        if !self.talk_to.is_empty() {
            m.serialize_entry("talk-to", &self.talk_to)?;
        }
        m.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn egress_forms() {
        let e: Egress = "198.51.100.0/24:443".parse().unwrap();
        assert_eq!(e.to_string(), "198.51.100.0/24:443/tcp");
        let e: Egress = "backend.example.com:8883/tcp".parse().unwrap();
        assert_eq!(e.host, EgressHost::Name("backend.example.com".into()));
        let e: Egress = "10.0.0.53:53/udp".parse().unwrap();
        assert_eq!((e.port, e.proto), (53, Proto::Udp));
        for bad in [
            "198.51.100.0/24",
            "198.51.100.1/24:443",
            "198.51.100.0/33:443",
            "host:0",
            "host:65536",
            "Host.Example:1",
            "[::1]:80",
            "::1:80",
            "a..b:80",
            ":80",
            "h:80/sctp",
            "-a.b:1",
        ] {
            assert!(bad.parse::<Egress>().is_err(), "{bad}");
        }
        let err = "10.1.2.3/8:80".parse::<Egress>().unwrap_err();
        assert!(err.to_string().contains("10.1.2.3/8:80"), "{err}");
    }

    #[test]
    fn coverage() {
        let p: Egress = "10.0.0.0/8:443".parse().unwrap();
        assert!(p.covers(&"10.1.2.0/24:443".parse().unwrap()));
        assert!(p.covers(&"10.1.2.3:443".parse().unwrap()));
        assert!(!p.covers(&"11.1.2.3:443".parse().unwrap()));
        assert!(!p.covers(&"10.1.2.3:444".parse().unwrap()));
        assert!(!p.covers(&"10.1.2.3:443/udp".parse().unwrap()));
        assert!(!p.covers(&"0.0.0.0/0:443".parse().unwrap()));
        let n: Egress = "a.example:1".parse().unwrap();
        assert!(n.covers(&"a.example.:1".parse().unwrap()));
        assert!(!n.covers(&"b.example:1".parse().unwrap()));
        assert!(!p.covers(&"a.example:443".parse().unwrap()));
    }

    #[derive(Deserialize, Serialize, Debug)]
    struct W {
        network: NetworkGrant,
    }

    #[test]
    fn both_forms_round_trip() {
        let w: W = toml::from_str("network = true").unwrap();
        assert_eq!(w.network, NetworkGrant::any());
        assert_eq!(toml::to_string(&w).unwrap().trim(), "network = true");
        let w: W = toml::from_str(
            "network = { egress = [\"198.51.100.0/24:443\"], listen = [\"8080\"], dns = true, talk-to = [\"org.example.Server\"] }",
        )
        .unwrap();
        assert!(!w.network.any && w.network.dns && w.network.is_granted());
        assert_eq!(
            w.network.listen.iter().next().unwrap().to_string(),
            "8080/tcp"
        );
        let back: W = toml::from_str(&toml::to_string(&w).unwrap()).unwrap();
        assert_eq!(back.network, w.network);
        let j = serde_json::to_string(&w).unwrap();
        let back: W = serde_json::from_str(&j).unwrap();
        assert_eq!(back.network, w.network);
        assert!(!toml::from_str::<W>("network = false")
            .unwrap()
            .network
            .is_granted());
    }

    #[test]
    fn bad_tables_name_the_entry() {
        let e = toml::from_str::<W>("network = { egress = [\"x:99999\"] }").unwrap_err();
        assert!(e.to_string().contains("x:99999"), "{e}");
        let e = toml::from_str::<W>("network = { egres = [] }").unwrap_err();
        assert!(e.to_string().contains("egres"), "{e}");
        assert!(toml::from_str::<W>("network = \"yes\"").is_err());
    }
}
