//! A minimal D-Bus client (no library in a static probe): SASL `EXTERNAL` with unix fd
//! passing negotiated (`NEGOTIATE_UNIX_FD`), `Hello`, method calls with `s`, `u`, `as`,
//! `ay`, `b`, `v` and empty `a{sv}` arguments, and replies matched by serial. Messages are received with `recvmsg`, and the
//! `SCM_RIGHTS` descriptors that come with them are handed to the message whose
//! `UNIX_FDS` header field counts them (its `h` values index into them). Bodies of any
//! signature are decoded into [`Value`]s. Little-endian only (x86_64, aarch64). Enough to
//! observe, from inside the sandbox, which names the bus lets this uid call and own, and
//! what the portals hand out.
//!
//! Every wait for the bus is bounded by the connection's timeout ([`Conn::set_timeout`],
//! 10 s from [`Conn::connect`]).

use rustix::net::{RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, ReturnFlags};
use std::collections::VecDeque;
use std::io::{self, IoSliceMut, Read, Write};
use std::mem::MaybeUninit;
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

pub const METHOD_CALL: u8 = 1;
pub const METHOD_RETURN: u8 = 2;
pub const ERROR: u8 = 3;
pub const SIGNAL: u8 = 4;

// Header field codes.
const F_PATH: u8 = 1;
const F_INTERFACE: u8 = 2;
const F_MEMBER: u8 = 3;
const F_ERROR_NAME: u8 = 4;
const F_REPLY_SERIAL: u8 = 5;
const F_DESTINATION: u8 = 6;
const F_SENDER: u8 = 7;
const F_SIGNATURE: u8 = 8;
const F_UNIX_FDS: u8 = 9;

/// The bound on every wait from [`Conn::connect`] on.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// The largest body and header-fields array accepted.
const MAX_BODY: usize = 1 << 24;
const MAX_FIELDS: usize = 1 << 16;
/// Container nesting accepted while decoding (the specification allows 32 arrays plus
/// 32 structs).
const MAX_DEPTH: u32 = 64;
/// Descriptors one `recvmsg` can carry (the kernel's SCM_MAX_FD): room for all of them,
/// so none is ever lost to a truncated control buffer.
const MAX_FDS_PER_RECV: usize = 253;

/// A value of a message this client writes: `s`, `u`, `as`, `ay`, `b`, `v`, an empty
/// `a{sv}` (bodies), `o`, `g` (header fields).
pub enum Arg<'a> {
    Str(&'a str),
    U32(u32),
    StrArray(&'a [&'a str]),
    Bytes(&'a [u8]),
    Bool(bool),
    /// `v` holding the value.
    Variant(&'a Arg<'a>),
    /// `a{sv}` without entries (e.g. BlueZ's empty options).
    EmptyDict,
    Path(&'a str),
    Sig(&'a str),
}

impl Arg<'_> {
    fn sig(&self) -> &'static str {
        match self {
            Arg::Str(_) => "s",
            Arg::U32(_) => "u",
            Arg::StrArray(_) => "as",
            Arg::Bytes(_) => "ay",
            Arg::Bool(_) => "b",
            Arg::Variant(_) => "v",
            Arg::EmptyDict => "a{sv}",
            Arg::Path(_) => "o",
            Arg::Sig(_) => "g",
        }
    }
}

/// A decoded value of a received message.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Byte(u8),
    Bool(bool),
    I16(i16),
    U16(u16),
    I32(i32),
    U32(u32),
    I64(i64),
    U64(u64),
    F64(f64),
    Str(String),
    Path(String),
    Sig(String),
    /// `h`: an index into the message's descriptors ([`Msg::take_fd`]).
    Fd(u32),
    Array(Vec<Value>),
    /// `a{..}`: the entries in the order received.
    Dict(Vec<(Value, Value)>),
    Struct(Vec<Value>),
    Variant(Box<Value>),
}

/// A received message.
#[derive(Debug)]
pub struct Msg {
    pub kind: u8,
    pub serial: u32,
    pub reply_serial: Option<u32>,
    pub path: Option<String>,
    pub interface: Option<String>,
    pub member: Option<String>,
    pub error_name: Option<String>,
    pub sender: Option<String>,
    /// The body's signature (empty for no body).
    pub signature: String,
    pub body: Vec<u8>,
    /// The first `u` of the body, if the body starts with one.
    pub first_u32: Option<u32>,
    /// The descriptors that came with the message (`UNIX_FDS` of them), each taken at most
    /// once.
    fds: Vec<Option<OwnedFd>>,
}

/// An error reply: its name and the first string of its body.
#[derive(Clone, Debug, PartialEq)]
pub struct DbusError {
    pub name: String,
    pub message: Option<String>,
}

impl std::fmt::Display for DbusError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.message {
            Some(m) => write!(f, "{}: {m}", self.name),
            None => f.write_str(&self.name),
        }
    }
}

impl Msg {
    /// The body, decoded per its signature.
    pub fn values(&self) -> io::Result<Vec<Value>> {
        decode_body(&self.signature, &self.body)
    }

    /// The descriptor an `h` value of the body names (its index among the message's
    /// descriptors).
    pub fn take_fd(&mut self, index: u32) -> io::Result<OwnedFd> {
        let n = self.fds.len();
        match self.fds.get_mut(index as usize) {
            None => Err(bad(format!(
                "fd index {index} out of range: the message carries {n} descriptor(s)"
            ))),
            Some(slot) => slot
                .take()
                .ok_or_else(|| bad(format!("fd index {index} used twice"))),
        }
    }

    /// `Ok(self)` for a method return, the error's name and message for an error reply.
    pub fn into_result(self) -> Result<Msg, DbusError> {
        if self.kind != ERROR {
            return Ok(self);
        }
        let message = match self.values().ok().as_deref() {
            Some([Value::Str(s), ..]) => Some(s.clone()),
            _ => None,
        };
        Err(DbusError {
            name: self
                .error_name
                .unwrap_or_else(|| "(error reply without a name)".into()),
            message,
        })
    }
}

pub struct Conn {
    s: UnixStream,
    serial: u32,
    timeout: Option<Duration>,
    /// Bytes received and not yet consumed by a message.
    rbuf: Vec<u8>,
    /// Descriptors received and not yet handed to a message, in arrival order.
    fdq: VecDeque<OwnedFd>,
    /// Whether the bus agreed to pass descriptors.
    unix_fds: bool,
}

fn bad(what: impl std::fmt::Display) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("malformed message: {what}"),
    )
}

fn pad(buf: &mut Vec<u8>, align: usize) {
    while !buf.len().is_multiple_of(align) {
        buf.push(0);
    }
}

fn put_str(buf: &mut Vec<u8>, s: &str) {
    pad(buf, 4);
    buf.extend_from_slice(&(s.len() as u32).to_le_bytes());
    buf.extend_from_slice(s.as_bytes());
    buf.push(0);
}

fn put_sig(buf: &mut Vec<u8>, s: &str) {
    buf.push(s.len() as u8);
    buf.extend_from_slice(s.as_bytes());
    buf.push(0);
}

/// Appends `a`, aligned relative to the start of `buf` (a message or a body: both start
/// 8-aligned in the message).
fn put_arg(buf: &mut Vec<u8>, a: &Arg) {
    match a {
        Arg::Str(s) | Arg::Path(s) => put_str(buf, s),
        Arg::Sig(s) => put_sig(buf, s),
        Arg::U32(u) => {
            pad(buf, 4);
            buf.extend_from_slice(&u.to_le_bytes());
        }
        Arg::StrArray(items) => {
            pad(buf, 4);
            let at = buf.len();
            buf.extend_from_slice(&[0; 4]);
            // Strings are 4-aligned, as the length is: no padding before the first one.
            let start = buf.len();
            for s in *items {
                put_str(buf, s);
            }
            let n = (buf.len() - start) as u32;
            buf[at..at + 4].copy_from_slice(&n.to_le_bytes());
        }
        Arg::Bytes(b) => {
            pad(buf, 4);
            buf.extend_from_slice(&(b.len() as u32).to_le_bytes());
            buf.extend_from_slice(b);
        }
        Arg::Bool(b) => {
            pad(buf, 4);
            buf.extend_from_slice(&u32::from(*b).to_le_bytes());
        }
        Arg::Variant(v) => {
            put_sig(buf, v.sig());
            put_arg(buf, v);
        }
        Arg::EmptyDict => {
            pad(buf, 4);
            buf.extend_from_slice(&[0; 4]);
            // The padding to the entries' 8-alignment comes even without entries.
            pad(buf, 8);
        }
    }
}

/// Header field `code` holding `v` (a variant of `v`'s type).
fn field(buf: &mut Vec<u8>, code: u8, v: &Arg) {
    pad(buf, 8);
    buf.push(code);
    put_sig(buf, v.sig());
    put_arg(buf, v);
}

/// The bytes of a message: header (with the body's signature derived from `body`) and
/// body.
fn build_message(kind: u8, serial: u32, fields: &[(u8, Arg)], body: &[Arg]) -> Vec<u8> {
    let mut b = Vec::new();
    for a in body {
        put_arg(&mut b, a);
    }
    let body_sig: String = body.iter().map(Arg::sig).collect();
    let mut h = vec![b'l', kind, 0, 1];
    h.extend_from_slice(&(b.len() as u32).to_le_bytes());
    h.extend_from_slice(&serial.to_le_bytes());
    h.extend_from_slice(&[0; 4]); // fields array length, patched below
    for (code, v) in fields {
        field(&mut h, *code, v);
    }
    if !body_sig.is_empty() {
        field(&mut h, F_SIGNATURE, &Arg::Sig(&body_sig));
    }
    let flen = (h.len() - 16) as u32;
    h[12..16].copy_from_slice(&flen.to_le_bytes());
    pad(&mut h, 8);
    h.extend_from_slice(&b);
    h
}

/// The total length of the message whose first 16 bytes are `fixed`.
fn message_len(fixed: &[u8]) -> io::Result<usize> {
    if fixed[0] != b'l' {
        return Err(bad("big-endian message"));
    }
    let body_len = u32::from_le_bytes(fixed[4..8].try_into().unwrap()) as usize;
    let flen = u32::from_le_bytes(fixed[12..16].try_into().unwrap()) as usize;
    if body_len > MAX_BODY || flen > MAX_FIELDS {
        return Err(bad("message too large"));
    }
    Ok((16 + flen).div_ceil(8) * 8 + body_len)
}

/// Parses one complete message (`all`, exactly [`message_len`] bytes); returns it without
/// descriptors and the number its `UNIX_FDS` field announces.
fn parse_message(all: &[u8]) -> io::Result<(Msg, usize)> {
    let total = message_len(all.get(..16).ok_or_else(|| bad("short message"))?)?;
    if all.len() != total {
        return Err(bad("length does not match the header"));
    }
    let flen = u32::from_le_bytes(all[12..16].try_into().unwrap()) as usize;
    let hdr_end = (16 + flen).div_ceil(8) * 8;
    let mut r = Reader::new(&all[..16 + flen]);
    let header = decode_body_with(&mut r, "yyyyuua(yv)")?;
    let (kind, serial, fields) = match header.as_slice() {
        [Value::Byte(_), Value::Byte(kind), Value::Byte(_), Value::Byte(1), Value::U32(_), Value::U32(serial), Value::Array(fields)] => {
            (*kind, *serial, fields)
        }
        [_, _, _, Value::Byte(v), ..] if *v != 1 => {
            return Err(bad(format!("protocol version {v}")))
        }
        _ => return Err(bad("header")),
    };
    let mut m = Msg {
        kind,
        serial,
        reply_serial: None,
        path: None,
        interface: None,
        member: None,
        error_name: None,
        sender: None,
        signature: String::new(),
        body: all[hdr_end..].to_vec(),
        first_u32: None,
        fds: Vec::new(),
    };
    let mut nfds = 0;
    for f in fields {
        let Value::Struct(f) = f else {
            return Err(bad("header field"));
        };
        let [Value::Byte(code), Value::Variant(v)] = f.as_slice() else {
            return Err(bad("header field"));
        };
        let wrong = || bad(format!("header field {code} has the wrong type"));
        let s = || match &**v {
            Value::Str(s) | Value::Path(s) | Value::Sig(s) => Ok(s.clone()),
            _ => Err(wrong()),
        };
        let u = || match &**v {
            Value::U32(u) => Ok(*u),
            _ => Err(wrong()),
        };
        match *code {
            F_PATH => m.path = Some(s()?),
            F_INTERFACE => m.interface = Some(s()?),
            F_MEMBER => m.member = Some(s()?),
            F_ERROR_NAME => m.error_name = Some(s()?),
            F_REPLY_SERIAL => m.reply_serial = Some(u()?),
            F_SENDER => m.sender = Some(s()?),
            F_SIGNATURE => m.signature = s()?,
            F_UNIX_FDS => nfds = u()? as usize,
            _ => {} // DESTINATION and fields this client does not know
        }
    }
    if m.signature.starts_with('u') && m.body.len() >= 4 {
        m.first_u32 = Some(u32::from_le_bytes(m.body[..4].try_into().unwrap()));
    }
    Ok((m, nfds))
}

/// Reads D-Bus wire data; alignment is relative to the start of `buf`.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8]) -> Reader<'a> {
        Reader { buf, pos: 0 }
    }

    fn align(&mut self, n: usize) -> io::Result<()> {
        let p = self.pos.div_ceil(n) * n;
        if p > self.buf.len() {
            return Err(bad("truncated (padding)"));
        }
        self.pos = p;
        Ok(())
    }

    fn take(&mut self, n: usize) -> io::Result<&'a [u8]> {
        let end = self.pos.checked_add(n).filter(|e| *e <= self.buf.len());
        let end = end.ok_or_else(|| bad("truncated"))?;
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    fn fixed<const N: usize>(&mut self) -> io::Result<[u8; N]> {
        self.align(N)?;
        Ok(self.take(N)?.try_into().unwrap())
    }

    fn u32(&mut self) -> io::Result<u32> {
        Ok(u32::from_le_bytes(self.fixed()?))
    }

    /// The text of a string of `len` bytes and its terminating nul.
    fn text(&mut self, len: usize) -> io::Result<String> {
        let b = self.take(len)?;
        if self.take(1)? != [0] {
            return Err(bad("string without its nul"));
        }
        String::from_utf8(b.to_vec()).map_err(|_| bad("string is not UTF-8"))
    }
}

/// The alignment of values of the type `c` starts.
fn alignment(c: u8) -> usize {
    match c {
        b'n' | b'q' => 2,
        b'b' | b'i' | b'u' | b'h' | b's' | b'o' | b'a' => 4,
        b'x' | b't' | b'd' | b'(' | b'{' => 8,
        _ => 1, // y, g, v
    }
}

fn is_basic(c: u8) -> bool {
    b"ybnqiuxtdhsog".contains(&c)
}

/// The length of the first complete type of `sig`.
fn single_len(sig: &[u8], depth: u32) -> io::Result<usize> {
    type_len(sig, depth, false)
}

/// [`single_len`]; a dict entry is a complete type only as an array's element.
fn type_len(sig: &[u8], depth: u32, dict_entry_ok: bool) -> io::Result<usize> {
    if depth > MAX_DEPTH {
        return Err(bad("signature nests too deep"));
    }
    let bad_sig = || bad(format!("signature {:?}", String::from_utf8_lossy(sig)));
    match *sig.first().ok_or_else(bad_sig)? {
        b'a' => Ok(1 + type_len(&sig[1..], depth + 1, true)?),
        b'(' => {
            let mut i = 1;
            while sig.get(i).ok_or_else(bad_sig)? != &b')' {
                i += single_len(&sig[i..], depth + 1)?;
            }
            if i == 1 {
                return Err(bad_sig());
            }
            Ok(i + 1)
        }
        b'{' => {
            if !dict_entry_ok || !sig.get(1).is_some_and(|c| is_basic(*c)) {
                return Err(bad_sig());
            }
            let i = 2 + single_len(&sig[2..], depth + 1)?;
            if sig.get(i) != Some(&b'}') {
                return Err(bad_sig());
            }
            Ok(i + 1)
        }
        c if is_basic(c) || c == b'v' => Ok(1),
        _ => Err(bad_sig()),
    }
}

/// Decodes one value of the complete type `sig`.
fn decode(r: &mut Reader, sig: &[u8], depth: u32) -> io::Result<Value> {
    if depth > MAX_DEPTH {
        return Err(bad("value nests too deep"));
    }
    Ok(match sig[0] {
        b'y' => Value::Byte(r.take(1)?[0]),
        b'b' => match r.u32()? {
            0 => Value::Bool(false),
            1 => Value::Bool(true),
            v => return Err(bad(format!("boolean {v}"))),
        },
        b'n' => Value::I16(i16::from_le_bytes(r.fixed()?)),
        b'q' => Value::U16(u16::from_le_bytes(r.fixed()?)),
        b'i' => Value::I32(i32::from_le_bytes(r.fixed()?)),
        b'u' => Value::U32(r.u32()?),
        b'h' => Value::Fd(r.u32()?),
        b'x' => Value::I64(i64::from_le_bytes(r.fixed()?)),
        b't' => Value::U64(u64::from_le_bytes(r.fixed()?)),
        b'd' => Value::F64(f64::from_le_bytes(r.fixed()?)),
        b's' | b'o' => {
            let len = r.u32()? as usize;
            let s = r.text(len)?;
            if sig[0] == b's' {
                Value::Str(s)
            } else {
                Value::Path(s)
            }
        }
        b'g' => {
            let len = r.take(1)?[0] as usize;
            Value::Sig(r.text(len)?)
        }
        b'v' => {
            let len = r.take(1)?[0] as usize;
            let inner = r.text(len)?;
            let inner = inner.as_bytes();
            if inner.is_empty() || single_len(inner, depth + 1)? != inner.len() {
                return Err(bad("variant signature is not one complete type"));
            }
            Value::Variant(Box::new(decode(r, inner, depth + 1)?))
        }
        b'a' => {
            let len = r.u32()? as usize;
            if len > MAX_BODY {
                return Err(bad("array too large"));
            }
            let elem = &sig[1..1 + type_len(&sig[1..], depth + 1, true)?];
            r.align(alignment(elem[0]))?;
            let end = r.pos + len;
            if end > r.buf.len() {
                return Err(bad("array runs past the message"));
            }
            let mut items = Vec::new();
            while r.pos < end {
                items.push(decode(r, elem, depth + 1)?);
            }
            if r.pos != end {
                return Err(bad("array length does not end on an element"));
            }
            if elem[0] == b'{' {
                let pairs = items.into_iter().map(|e| match e {
                    Value::Struct(mut kv) if kv.len() == 2 => {
                        let v = kv.pop().unwrap();
                        (kv.pop().unwrap(), v)
                    }
                    _ => unreachable!("dict entries decode as two-field structs"),
                });
                Value::Dict(pairs.collect())
            } else {
                Value::Array(items)
            }
        }
        b'(' | b'{' => {
            r.align(8)?;
            let mut fields = Vec::new();
            let mut i = 1;
            while sig[i] != b')' && sig[i] != b'}' {
                let n = single_len(&sig[i..], depth + 1)?;
                fields.push(decode(r, &sig[i..i + n], depth + 1)?);
                i += n;
            }
            Value::Struct(fields)
        }
        c => return Err(bad(format!("type code {:?}", c as char))),
    })
}

fn decode_body_with(r: &mut Reader, sig: &str) -> io::Result<Vec<Value>> {
    let sig = sig.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < sig.len() {
        let n = single_len(&sig[i..], 0)?;
        out.push(decode(r, &sig[i..i + n], 0)?);
        i += n;
    }
    Ok(out)
}

/// Decodes a body of signature `sig`: one value per complete type, the whole body used.
pub fn decode_body(sig: &str, body: &[u8]) -> io::Result<Vec<Value>> {
    let mut r = Reader::new(body);
    let v = decode_body_with(&mut r, sig)?;
    if r.pos != body.len() {
        return Err(bad(format!(
            "{} byte(s) after the values of signature {sig:?}",
            body.len() - r.pos
        )));
    }
    Ok(v)
}

/// The system bus socket: the first `unix:path=` of `DBUS_SYSTEM_BUS_ADDRESS`, else the
/// standard path.
pub fn system_bus_path() -> io::Result<String> {
    match std::env::var("DBUS_SYSTEM_BUS_ADDRESS") {
        Err(_) => Ok("/run/dbus/system_bus_socket".into()),
        Ok(a) => bus_path_of(&a),
    }
}

fn bus_path_of(address: &str) -> io::Result<String> {
    address
        .split(';')
        .filter_map(|a| a.strip_prefix("unix:"))
        .flat_map(|kv| kv.split(','))
        .find_map(|kv| kv.strip_prefix("path="))
        .map(String::from)
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::Unsupported,
                format!("bus address {address:?} has no unix:path="),
            )
        })
}

/// One line of the SASL exchange (without its CRLF).
fn read_line(s: &mut UnixStream) -> io::Result<String> {
    let mut line = Vec::new();
    let mut b = [0u8; 1];
    while !line.ends_with(b"\r\n") {
        if line.len() >= 512 {
            return Err(io::Error::other("authentication: line too long"));
        }
        if s.read(&mut b)? == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "authentication: the bus closed the connection",
            ));
        }
        line.push(b[0]);
    }
    line.truncate(line.len() - 2);
    Ok(String::from_utf8_lossy(&line).into_owned())
}

impl Conn {
    /// Connects to `path` and authenticates as this process's uid.
    pub fn connect(path: &str) -> io::Result<Conn> {
        let s = UnixStream::connect(path)?;
        Conn::handshake(s)
    }

    fn raw(s: UnixStream) -> Conn {
        Conn {
            s,
            serial: 0,
            timeout: Some(DEFAULT_TIMEOUT),
            rbuf: Vec::new(),
            fdq: VecDeque::new(),
            unix_fds: false,
        }
    }

    /// SASL EXTERNAL, fd passing if the bus agrees, `Hello`.
    fn handshake(mut s: UnixStream) -> io::Result<Conn> {
        s.set_read_timeout(Some(DEFAULT_TIMEOUT))?;
        s.set_write_timeout(Some(DEFAULT_TIMEOUT))?;
        let uid = crate::own_uid();
        let hex: String = uid
            .to_string()
            .bytes()
            .map(|b| format!("{b:02x}"))
            .collect();
        s.write_all(format!("\0AUTH EXTERNAL {hex}\r\n").as_bytes())?;
        let line = read_line(&mut s)?;
        if !line.starts_with("OK ") {
            return Err(io::Error::other(format!(
                "authentication refused: {}",
                line.trim()
            )));
        }
        s.write_all(b"NEGOTIATE_UNIX_FD\r\n")?;
        let line = read_line(&mut s)?;
        // ERROR: this bus does not pass descriptors; everything else still works.
        let unix_fds = match line.as_str() {
            "AGREE_UNIX_FD" => true,
            l if l.starts_with("ERROR") => false,
            l => {
                return Err(io::Error::other(format!(
                    "unexpected answer to NEGOTIATE_UNIX_FD: {l}"
                )))
            }
        };
        s.write_all(b"BEGIN\r\n")?;
        let mut c = Conn::raw(s);
        c.unix_fds = unix_fds;
        c.call(
            "org.freedesktop.DBus",
            "/org/freedesktop/DBus",
            "org.freedesktop.DBus",
            "Hello",
            &[],
        )?
        .map_err(|e| io::Error::other(format!("Hello: {e}")))?;
        Ok(c)
    }

    /// Whether the bus agreed to pass descriptors.
    pub fn unix_fds(&self) -> bool {
        self.unix_fds
    }

    fn send(&mut self, kind: u8, fields: &[(u8, Arg)], body: &[Arg]) -> io::Result<u32> {
        self.serial += 1;
        let m = build_message(kind, self.serial, fields, body);
        self.s.write_all(&m)?;
        Ok(self.serial)
    }

    /// Calls `member` and waits (bounded by the timeout) for its reply: a method return or
    /// an error reply.
    pub fn call_msg(
        &mut self,
        dest: &str,
        path: &str,
        iface: &str,
        member: &str,
        args: &[Arg],
    ) -> io::Result<Msg> {
        self.call_msg_with(dest, path, iface, member, args, &mut drop)
    }

    /// [`Conn::call_msg`], handing the other messages received while waiting (signals,
    /// say) to `other` instead of dropping them.
    pub fn call_msg_with(
        &mut self,
        dest: &str,
        path: &str,
        iface: &str,
        member: &str,
        args: &[Arg],
        other: &mut dyn FnMut(Msg),
    ) -> io::Result<Msg> {
        let deadline = self.timeout.map(|t| Instant::now() + t);
        let serial = self.send(
            METHOD_CALL,
            &[
                (F_PATH, Arg::Path(path)),
                (F_INTERFACE, Arg::Str(iface)),
                (F_MEMBER, Arg::Str(member)),
                (F_DESTINATION, Arg::Str(dest)),
            ],
            args,
        )?;
        loop {
            let m = self.recv_until(deadline)?;
            if m.reply_serial != Some(serial) {
                // signals, other replies; their descriptors are closed unless `other` keeps
                // them
                other(m);
                continue;
            }
            return match m.kind {
                METHOD_RETURN | ERROR => Ok(m),
                k => Err(bad(format!("message type {k} in reply to {member}"))),
            };
        }
    }

    /// Calls `member` and waits for its reply: `Ok(Ok(first u32 of the body))` for a
    /// return, `Ok(Err(error name))` for an error.
    pub fn call(
        &mut self,
        dest: &str,
        path: &str,
        iface: &str,
        member: &str,
        args: &[Arg],
    ) -> io::Result<Result<Option<u32>, String>> {
        let m = self.call_msg(dest, path, iface, member, args)?;
        Ok(m.into_result().map(|m| m.first_u32).map_err(|e| e.name))
    }

    /// Answers a method call with an empty return.
    pub fn reply(&mut self, to: &Msg) -> io::Result<()> {
        self.reply_with(to, &[])
    }

    /// Answers a method call with a return carrying `body`.
    pub fn reply_with(&mut self, to: &Msg, body: &[Arg]) -> io::Result<()> {
        let Some(sender) = to.sender.as_deref() else {
            return Ok(());
        };
        self.send(
            METHOD_RETURN,
            &[
                (F_REPLY_SERIAL, Arg::U32(to.serial)),
                (F_DESTINATION, Arg::Str(sender)),
            ],
            body,
        )?;
        Ok(())
    }

    /// The bound on each wait for the bus (`None`: wait forever).
    pub fn set_timeout(&mut self, t: Option<Duration>) -> io::Result<()> {
        self.timeout = t;
        self.s.set_read_timeout(t)
    }

    /// The next message (waiting at most the timeout).
    pub fn recv(&mut self) -> io::Result<Msg> {
        let deadline = self.timeout.map(|t| Instant::now() + t);
        self.recv_until(deadline)
    }

    /// The next message, waiting until `deadline` at most (an error of kind `TimedOut`
    /// then).
    pub fn recv_before(&mut self, deadline: Instant) -> io::Result<Msg> {
        self.recv_until(Some(deadline))
    }

    fn recv_until(&mut self, deadline: Option<Instant>) -> io::Result<Msg> {
        self.fill(16, deadline)?;
        let total = message_len(&self.rbuf[..16])?;
        self.fill(total, deadline)?;
        let (mut m, nfds) = parse_message(&self.rbuf[..total])?;
        self.rbuf.drain(..total);
        // The bus sends a message's descriptors with its first byte: by now they are all
        // here, after those of the messages before it.
        if nfds > self.fdq.len() {
            return Err(bad(format!(
                "the message announces {nfds} descriptor(s), {} arrived",
                self.fdq.len()
            )));
        }
        m.fds = self.fdq.drain(..nfds).map(Some).collect();
        Ok(m)
    }

    /// Receives until `rbuf` holds `need` bytes.
    fn fill(&mut self, need: usize, deadline: Option<Instant>) -> io::Result<()> {
        let timed_out = || {
            io::Error::new(
                io::ErrorKind::TimedOut,
                "no message from the bus within the timeout",
            )
        };
        while self.rbuf.len() < need {
            if let Some(d) = deadline {
                let left = d.checked_duration_since(Instant::now());
                // (a zero read timeout would mean "none")
                let left = left.filter(|l| !l.is_zero()).ok_or_else(timed_out)?;
                self.s.set_read_timeout(Some(left))?;
            }
            match self.recv_some() {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Err(timed_out()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                r => r?,
            }
        }
        Ok(())
    }

    /// One `recvmsg`: its bytes to `rbuf`, its descriptors to `fdq`.
    fn recv_some(&mut self) -> io::Result<()> {
        let mut chunk = [0u8; 16384];
        let mut space =
            [MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS_PER_RECV))];
        let mut control = RecvAncillaryBuffer::new(&mut space);
        let r = rustix::net::recvmsg(
            &self.s,
            &mut [IoSliceMut::new(&mut chunk)],
            &mut control,
            RecvFlags::CMSG_CLOEXEC,
        )?;
        for m in control.drain() {
            if let RecvAncillaryMessage::ScmRights(fds) = m {
                self.fdq.extend(fds);
            }
        }
        if r.flags.contains(ReturnFlags::CTRUNC) {
            return Err(io::Error::other(
                "descriptors from the bus were lost (control data truncated)",
            ));
        }
        if r.bytes == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the bus closed the connection",
            ));
        }
        self.rbuf.extend_from_slice(&chunk[..r.bytes]);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustix::net::{SendAncillaryBuffer, SendAncillaryMessage, SendFlags};
    use std::io::IoSlice;
    use std::os::fd::AsFd;

    fn body(args: &[Arg]) -> Vec<u8> {
        let mut b = Vec::new();
        for a in args {
            put_arg(&mut b, a);
        }
        b
    }

    fn le32(v: u32) -> [u8; 4] {
        v.to_le_bytes()
    }

    /// `(h s)`: OpenRenderNode's reply, written byte by byte.
    #[test]
    fn parses_fd_and_string() {
        let mut b = Vec::new();
        b.extend_from_slice(&le32(0)); // h: index 0
        b.extend_from_slice(&le32(4));
        b.extend_from_slice(b"vgem\0");
        let v = decode_body("hs", &b).unwrap();
        assert_eq!(v, [Value::Fd(0), Value::Str("vgem".into())]);
    }

    /// `a{sv}` with s, u, b, d and an unknown-to-the-portal type (`ai`) in the values.
    #[test]
    fn parses_a_dict_of_variants() {
        let mut b = Vec::new();
        b.extend_from_slice(&le32(0)); // array length, patched below
        b.extend_from_slice(&[0; 4]); // entries are 8-aligned
        let start = b.len();
        let entry = |b: &mut Vec<u8>, key: &str, sig: &str, val: &[u8], align: usize| {
            pad(b, 8);
            put_str(b, key);
            put_sig(b, sig);
            pad(b, align);
            b.extend_from_slice(val);
        };
        let mut s = Vec::new();
        put_str(&mut s, "vgem");
        entry(&mut b, "driver", "s", &s, 4);
        entry(&mut b, "count", "u", &le32(7), 4);
        entry(&mut b, "rw", "b", &le32(1), 4);
        entry(&mut b, "ratio", "d", &0.25f64.to_le_bytes(), 8);
        let mut ai = le32(8).to_vec();
        ai.extend_from_slice(&(-1i32).to_le_bytes());
        ai.extend_from_slice(&2i32.to_le_bytes());
        entry(&mut b, "list", "ai", &ai, 4);
        let n = (b.len() - start) as u32;
        b[..4].copy_from_slice(&le32(n));
        let v = decode_body("a{sv}", &b).unwrap();
        let var = |v: Value| Value::Variant(Box::new(v));
        let s = |s: &str| Value::Str(s.into());
        assert_eq!(
            v,
            [Value::Dict(vec![
                (s("driver"), var(s("vgem"))),
                (s("count"), var(Value::U32(7))),
                (s("rw"), var(Value::Bool(true))),
                (s("ratio"), var(Value::F64(0.25))),
                (
                    s("list"),
                    var(Value::Array(vec![Value::I32(-1), Value::I32(2)]))
                ),
            ])]
        );
        // An empty dict: length 0, then the padding to the entries' alignment.
        let v = decode_body("a{sv}", &[0, 0, 0, 0, 0, 0, 0, 0]).unwrap();
        assert_eq!(v, [Value::Dict(vec![])]);
    }

    /// `a(ssds)`: List's reply (per its signature: two strings, a double, a string), two
    /// channels.
    #[test]
    fn parses_an_array_of_structs() {
        let mut b = vec![0u8; 8]; // length + padding to the structs' 8-alignment
        for (c, d, scale, u) in [("accel_x", "accel0", 0.5, "m/s^2"), ("t", "th", 1.0, "C")] {
            pad(&mut b, 8);
            put_str(&mut b, c);
            put_str(&mut b, d);
            pad(&mut b, 8);
            b.extend_from_slice(&f64::to_le_bytes(scale));
            put_str(&mut b, u);
        }
        let n = (b.len() - 8) as u32;
        b[..4].copy_from_slice(&le32(n));
        let s = |s: &str| Value::Str(s.into());
        assert_eq!(
            decode_body("a(ssds)", &b).unwrap(),
            [Value::Array(vec![
                Value::Struct(vec![s("accel_x"), s("accel0"), Value::F64(0.5), s("m/s^2")]),
                Value::Struct(vec![s("t"), s("th"), Value::F64(1.0), s("C")]),
            ])]
        );
        // The empty list.
        assert_eq!(
            decode_body("a(ssds)", &[0; 8]).unwrap(),
            [Value::Array(vec![])]
        );
    }

    #[test]
    fn parses_double_and_fd() {
        assert_eq!(
            decode_body("d", &1.5f64.to_le_bytes()).unwrap(),
            [Value::F64(1.5)]
        );
        assert_eq!(decode_body("h", &le32(3)).unwrap(), [Value::Fd(3)]);
    }

    #[test]
    fn refuses_malformed_bodies() {
        for (sig, b) in [
            ("d", &[0u8; 4][..]),                       // truncated
            ("s", &[2, 0, 0, 0, b'a', b'b', 1]),        // no nul
            ("b", &[2, 0, 0, 0]),                       // not a boolean
            ("u", &[1, 0, 0, 0, 0]),                    // trailing byte
            ("as", &[9, 0, 0, 0, 1, 0, 0, 0, b'x', 0]), // array past the end
            ("(", &[]),                                 // bad signature
            ("v", &[1, b'z', 0]),                       // unknown type in a variant
            ("{su}", &[0; 8]),                          // a dict entry outside an array
        ] {
            let e = decode_body(sig, b).unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::InvalidData, "{sig}: {e}");
        }
        // Nesting is bounded: a 100-deep array signature.
        let sig = format!("{}u", "a".repeat(100));
        assert!(decode_body(&sig, &[0; 8]).is_err());
    }

    /// `s`, `u`, `as` as written, then decoded back.
    #[test]
    fn marshals_string_u32_and_string_arrays() {
        let chans = ["accel_x", "gyro_zz"];
        let b = body(&[Arg::Str("a"), Arg::StrArray(&chans), Arg::U32(50)]);
        let mut want = Vec::new();
        want.extend_from_slice(&le32(1));
        want.extend_from_slice(b"a\0\0\0"); // string + nul + padding to 4
        want.extend_from_slice(&le32(24)); // 12 + 12 bytes of elements
        want.extend_from_slice(&le32(7));
        want.extend_from_slice(b"accel_x\0");
        want.extend_from_slice(&le32(7));
        want.extend_from_slice(b"gyro_zz\0");
        want.extend_from_slice(&le32(50));
        assert_eq!(b, want);
        let v = decode_body("sasu", &b).unwrap();
        assert_eq!(
            v,
            [
                Value::Str("a".into()),
                Value::Array(vec![
                    Value::Str("accel_x".into()),
                    Value::Str("gyro_zz".into())
                ]),
                Value::U32(50)
            ]
        );
        // The empty array.
        let b = body(&[Arg::StrArray(&[]), Arg::U32(1)]);
        assert_eq!(b, [0, 0, 0, 0, 1, 0, 0, 0]);
    }

    /// `ay`, `b`, `v` and the empty `a{sv}` as written (BlueZ's `Properties.Set` and
    /// `ReadValue` arguments), then decoded back.
    #[test]
    fn marshals_bytes_bools_variants_and_empty_dicts() {
        // Properties.Set("org.bluez.Adapter1", "Powered", <false>)
        let b = body(&[
            Arg::Str("ab"),
            Arg::Str("P"),
            Arg::Variant(&Arg::Bool(false)),
        ]);
        let mut want = Vec::new();
        want.extend_from_slice(&le32(2));
        want.extend_from_slice(b"ab\0\0"); // + padding to 4
        want.extend_from_slice(&le32(1));
        want.extend_from_slice(b"P\0"); // the variant's signature follows unaligned
        want.extend_from_slice(b"\x01b\0"); // signature "b"
        want.extend_from_slice(&[0; 3]); // padding to the boolean's 4
        want.extend_from_slice(&le32(0));
        assert_eq!(b, want);
        assert_eq!(
            decode_body("ssv", &b).unwrap()[2],
            Value::Variant(Box::new(Value::Bool(false)))
        );
        assert_eq!(body(&[Arg::Bool(true)]), le32(1));

        // ay: length, then the bytes, unpadded; the next value aligned after them.
        let b = body(&[Arg::Bytes(&[1, 2, 3]), Arg::U32(9)]);
        let mut want = le32(3).to_vec();
        want.extend_from_slice(&[1, 2, 3, 0]);
        want.extend_from_slice(&le32(9));
        assert_eq!(b, want);
        assert_eq!(
            decode_body("ayu", &b).unwrap(),
            [
                Value::Array(vec![Value::Byte(1), Value::Byte(2), Value::Byte(3)]),
                Value::U32(9)
            ]
        );
        assert_eq!(body(&[Arg::Bytes(&[])]), le32(0));

        // Empty a{sv}: the length, then the padding to the entries' alignment (8), also
        // when there are none; here after a string ending at offset 6.
        let b = body(&[Arg::Str("x"), Arg::EmptyDict]);
        let mut want = le32(1).to_vec();
        want.extend_from_slice(b"x\0\0\0"); // to offset 8
        want.extend_from_slice(&le32(0)); // length at 8
        want.extend_from_slice(&[0; 4]); // padding to 16
        assert_eq!(b, want);
        assert_eq!(
            decode_body("sa{sv}", &b).unwrap(),
            [Value::Str("x".into()), Value::Dict(vec![])]
        );
        // Alone: the length, then 4 bytes of padding.
        assert_eq!(body(&[Arg::EmptyDict]), [0; 8]);

        // In a message: the signature header field is derived from the arguments.
        let m = build_message(
            METHOD_CALL,
            2,
            &[(F_MEMBER, Arg::Str("Set"))],
            &[
                Arg::Str("a"),
                Arg::Variant(&Arg::Bool(true)),
                Arg::EmptyDict,
            ],
        );
        let (msg, _) = parse_message(&m).unwrap();
        assert_eq!(msg.signature, "sva{sv}");
        assert_eq!(
            msg.values().unwrap(),
            [
                Value::Str("a".into()),
                Value::Variant(Box::new(Value::Bool(true))),
                Value::Dict(vec![])
            ]
        );
    }

    /// Messages received while waiting for a reply reach `call_msg_with`'s `other`.
    #[test]
    fn other_messages_during_a_call_are_kept_when_asked() {
        let (a, b) = UnixStream::pair().unwrap();
        let mut c = Conn::raw(b);
        let bus = std::thread::spawn(move || {
            let mut bus = Conn::raw(a);
            let call = bus.recv().unwrap();
            let sig = build_message(
                SIGNAL,
                1,
                &[(F_MEMBER, Arg::Str("DeviceFound"))],
                &[Arg::Str("AA")],
            );
            bus.s.write_all(&sig).unwrap();
            let r = build_message(
                METHOD_RETURN,
                2,
                &[(F_REPLY_SERIAL, Arg::U32(call.serial))],
                &[],
            );
            bus.s.write_all(&r).unwrap();
            bus.s.write_all(&sig).unwrap();
            bus // kept open: no EOF below
        });
        let mut kept = Vec::new();
        let r = c
            .call_msg_with("d", "/p", "i.f", "StartScan", &[], &mut |m| kept.push(m))
            .unwrap();
        assert_eq!(r.kind, METHOD_RETURN);
        assert_eq!(kept.len(), 1);
        assert_eq!(kept[0].kind, SIGNAL);
        assert_eq!(kept[0].member.as_deref(), Some("DeviceFound"));
        let _bus = bus.join().unwrap();
        // The one after the reply: received next; then nothing until the deadline.
        let m = c
            .recv_before(Instant::now() + Duration::from_secs(5))
            .unwrap();
        assert_eq!(m.kind, SIGNAL);
        let t = Instant::now();
        let e = c
            .recv_before(Instant::now() + Duration::from_millis(100))
            .unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
        assert!(t.elapsed() < Duration::from_secs(5));
    }

    /// A built message parses back, header fields included.
    #[test]
    fn messages_round_trip() {
        let m = build_message(
            METHOD_CALL,
            7,
            &[
                (F_PATH, Arg::Path("/org/appmgr/portal")),
                (F_INTERFACE, Arg::Str("org.appmgr.portal.Sensors1")),
                (F_MEMBER, Arg::Str("Open")),
                (F_DESTINATION, Arg::Str("org.appmgr.Portal1")),
            ],
            &[Arg::StrArray(&["a", "b"]), Arg::U32(10)],
        );
        assert_eq!(message_len(&m[..16]).unwrap(), m.len());
        let (msg, nfds) = parse_message(&m).unwrap();
        assert_eq!(nfds, 0);
        assert_eq!((msg.kind, msg.serial), (METHOD_CALL, 7));
        assert_eq!(msg.path.as_deref(), Some("/org/appmgr/portal"));
        assert_eq!(msg.member.as_deref(), Some("Open"));
        assert_eq!(msg.signature, "asu");
        assert_eq!(msg.values().unwrap().len(), 2);
    }

    fn error_reply(serial: u32, to: u32, name: &str, text: &str) -> Vec<u8> {
        build_message(
            ERROR,
            serial,
            &[
                (F_REPLY_SERIAL, Arg::U32(to)),
                (F_ERROR_NAME, Arg::Str(name)),
            ],
            &[Arg::Str(text)],
        )
    }

    #[test]
    fn error_replies_give_name_and_message() {
        let m = error_reply(3, 2, "org.appmgr.Error.AccessDenied", "not granted");
        let (msg, _) = parse_message(&m).unwrap();
        assert_eq!(msg.reply_serial, Some(2));
        let e = msg.into_result().unwrap_err();
        assert_eq!(e.name, "org.appmgr.Error.AccessDenied");
        assert_eq!(e.message.as_deref(), Some("not granted"));
        // Without a body: no message.
        let m = build_message(
            ERROR,
            4,
            &[(F_ERROR_NAME, Arg::Str("org.appmgr.Error.NotAvailable"))],
            &[],
        );
        let e = parse_message(&m).unwrap().0.into_result().unwrap_err();
        assert_eq!(e.message, None);
    }

    /// A return `(h s)` carrying `UNIX_FDS` = n.
    fn fd_reply(serial: u32, to: u32, nfds: u32, index: u32, text: &str) -> Vec<u8> {
        let mut fields = vec![(F_REPLY_SERIAL, Arg::U32(to))];
        if nfds > 0 {
            fields.push((F_UNIX_FDS, Arg::U32(nfds)));
        }
        // `h` is marshalled as a u32: built as one, then the signature patched.
        let mut m = build_message(
            METHOD_RETURN,
            serial,
            &fields,
            &[Arg::U32(index), Arg::Str(text)],
        );
        let at = m.windows(4).position(|w| w == b"\x02us\0").unwrap();
        m[at + 1] = b'h';
        m
    }

    fn send_with_fds(s: &UnixStream, bytes: &[u8], fds: &[std::os::fd::BorrowedFd]) {
        let mut space = [MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(4))];
        let mut control = SendAncillaryBuffer::new(&mut space);
        assert!(control.push(SendAncillaryMessage::ScmRights(fds)));
        let n = rustix::net::sendmsg(s, &[IoSlice::new(bytes)], &mut control, SendFlags::empty())
            .unwrap();
        assert_eq!(n, bytes.len());
    }

    fn ino(fd: impl AsFd) -> u64 {
        rustix::fs::fstat(fd).unwrap().st_ino
    }

    /// Descriptors reach the message whose UNIX_FDS counts them, in order, also when two
    /// messages arrive in one read; an `h` index selects among the message's own.
    #[test]
    fn descriptors_are_mapped_to_their_messages() {
        let (a, b) = UnixStream::pair().unwrap();
        let mut c = Conn::raw(b);
        let f1 = tempfile::tempfile().unwrap();
        let f2 = tempfile::tempfile().unwrap();
        let f3 = tempfile::tempfile().unwrap();
        // Message 1: two fds, `h` = 1 (the second); message 2: none; message 3: one.
        let m1 = fd_reply(1, 10, 2, 1, "one");
        let m2 = error_reply(2, 11, "org.x.E", "two");
        let m3 = fd_reply(3, 12, 1, 0, "three");
        send_with_fds(&a, &m1, &[f1.as_fd(), f2.as_fd()]);
        let mut rest = m2.clone();
        rest.extend_from_slice(&m3);
        // m3's fd with m2's first byte: as a stream read may gather them.
        send_with_fds(&a, &rest, &[f3.as_fd()]);

        let mut r1 = c.recv().unwrap();
        assert_eq!(r1.fds.len(), 2);
        let v = r1.values().unwrap();
        let [Value::Fd(i), Value::Str(s)] = &v[..] else {
            panic!("{v:?}")
        };
        let i = *i;
        assert_eq!((i, s.as_str()), (1, "one"));
        assert_eq!(ino(r1.take_fd(i).unwrap()), ino(&f2));
        assert!(r1.take_fd(i).is_err(), "an fd is handed out once");
        assert!(r1.take_fd(2).is_err(), "index past the message's fds");
        let r2 = c.recv().unwrap();
        assert_eq!(r2.fds.len(), 0);
        assert_eq!(
            r2.into_result().unwrap_err().message.as_deref(),
            Some("two")
        );
        let mut r3 = c.recv().unwrap();
        assert_eq!(r3.fds.len(), 1);
        assert_eq!(ino(r3.take_fd(0).unwrap()), ino(&f3));

        // A message announcing more fds than arrived is malformed.
        let m4 = fd_reply(4, 13, 1, 0, "four");
        (&a).write_all(&m4).unwrap();
        assert_eq!(c.recv().unwrap_err().kind(), io::ErrorKind::InvalidData);
    }

    /// Waits end at the timeout.
    #[test]
    fn receiving_is_bounded() {
        let (_a, b) = UnixStream::pair().unwrap();
        let mut c = Conn::raw(b);
        c.set_timeout(Some(Duration::from_millis(100))).unwrap();
        let t = Instant::now();
        assert_eq!(c.recv().unwrap_err().kind(), io::ErrorKind::TimedOut);
        assert!(t.elapsed() < Duration::from_secs(5));
    }

    /// The handshake against a scripted bus: EXTERNAL, NEGOTIATE_UNIX_FD, BEGIN, Hello.
    #[test]
    fn handshake_negotiates_fd_passing() {
        for agree in [true, false] {
            let (a, b) = UnixStream::pair().unwrap();
            let bus = std::thread::spawn(move || {
                let mut a = a;
                let mut nul = [0u8; 1];
                a.read_exact(&mut nul).unwrap();
                assert_eq!(nul, [0]);
                let auth = read_line(&mut a).unwrap();
                assert!(auth.starts_with("AUTH EXTERNAL "), "{auth}");
                a.write_all(b"OK 0123456789abcdef0123456789abcdef\r\n")
                    .unwrap();
                assert_eq!(read_line(&mut a).unwrap(), "NEGOTIATE_UNIX_FD");
                let answer: &[u8] = if agree {
                    b"AGREE_UNIX_FD\r\n"
                } else {
                    b"ERROR\r\n"
                };
                a.write_all(answer).unwrap();
                assert_eq!(read_line(&mut a).unwrap(), "BEGIN");
                let mut bus = Conn::raw(a);
                let hello = bus.recv().unwrap();
                assert_eq!(hello.member.as_deref(), Some("Hello"));
                assert_eq!(hello.kind, METHOD_CALL);
                let m = build_message(
                    METHOD_RETURN,
                    1,
                    &[(F_REPLY_SERIAL, Arg::U32(hello.serial))],
                    &[Arg::Str(":1.7")],
                );
                bus.s.write_all(&m).unwrap();
            });
            let c = Conn::handshake(b).unwrap();
            assert_eq!(c.unix_fds(), agree);
            bus.join().unwrap();
        }
    }

    #[test]
    fn bus_addresses() {
        assert_eq!(bus_path_of("unix:path=/a/b").unwrap(), "/a/b");
        assert_eq!(
            bus_path_of("tcp:host=x;unix:guid=1,path=/run/s").unwrap(),
            "/run/s"
        );
        assert!(bus_path_of("unix:abstract=x").is_err());
    }
}
