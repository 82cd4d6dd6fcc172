//! A minimal D-Bus client (no library in a static probe): SASL `EXTERNAL`, `Hello`, method
//! calls with string/u32 arguments, and replies matched by serial. Little-endian only
//! (x86_64, aarch64). Enough to observe, from inside the sandbox, which names the bus
//! lets this uid call and own.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::Duration;

const METHOD_CALL: u8 = 1;
const METHOD_RETURN: u8 = 2;
const ERROR: u8 = 3;

/// A value of a message body this client writes: `s` or `u`.
pub enum Arg<'a> {
    Str(&'a str),
    U32(u32),
}

/// A received message (only what the probe looks at).
pub struct Msg {
    pub kind: u8,
    pub serial: u32,
    pub reply_serial: Option<u32>,
    pub error_name: Option<String>,
    pub sender: Option<String>,
    /// The first `u` of the body, if the body starts with one.
    pub first_u32: Option<u32>,
}

pub struct Conn {
    s: UnixStream,
    serial: u32,
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

/// Header field `code` with a variant of signature `sig` holding `v`.
fn field(buf: &mut Vec<u8>, code: u8, sig: &str, v: &Arg) {
    pad(buf, 8);
    buf.push(code);
    put_sig(buf, sig);
    match v {
        Arg::Str(s) if sig == "g" => put_sig(buf, s),
        Arg::Str(s) => put_str(buf, s),
        Arg::U32(u) => {
            pad(buf, 4);
            buf.extend_from_slice(&u.to_le_bytes());
        }
    }
}

impl Conn {
    /// Connects to `path` and authenticates as this process's uid.
    pub fn connect(path: &str) -> std::io::Result<Conn> {
        let mut s = UnixStream::connect(path)?;
        s.set_read_timeout(Some(Duration::from_secs(10)))?;
        s.set_write_timeout(Some(Duration::from_secs(10)))?;
        let uid = crate::own_uid();
        let hex: String = uid
            .to_string()
            .bytes()
            .map(|b| format!("{b:02x}"))
            .collect();
        s.write_all(format!("\0AUTH EXTERNAL {hex}\r\n").as_bytes())?;
        let mut line = Vec::new();
        let mut b = [0u8; 1];
        while !line.ends_with(b"\r\n") && line.len() < 512 {
            if s.read(&mut b)? == 0 {
                break;
            }
            line.push(b[0]);
        }
        if !line.starts_with(b"OK ") {
            return Err(std::io::Error::other(format!(
                "authentication refused: {}",
                String::from_utf8_lossy(&line).trim()
            )));
        }
        s.write_all(b"BEGIN\r\n")?;
        let mut c = Conn { s, serial: 0 };
        c.call(
            "org.freedesktop.DBus",
            "/org/freedesktop/DBus",
            "org.freedesktop.DBus",
            "Hello",
            &[],
        )?
        .map_err(|e| std::io::Error::other(format!("Hello: {e}")))?;
        Ok(c)
    }

    fn send(
        &mut self,
        kind: u8,
        fields: &[(u8, &str, Arg)],
        body_sig: &str,
        body: &[Arg],
    ) -> std::io::Result<u32> {
        self.serial += 1;
        let mut b = Vec::new();
        for a in body {
            match a {
                Arg::Str(s) => put_str(&mut b, s),
                Arg::U32(u) => {
                    pad(&mut b, 4);
                    b.extend_from_slice(&u.to_le_bytes());
                }
            }
        }
        let mut h = vec![b'l', kind, 0, 1];
        h.extend_from_slice(&(b.len() as u32).to_le_bytes());
        h.extend_from_slice(&self.serial.to_le_bytes());
        h.extend_from_slice(&[0; 4]); // fields array length, patched below
        for (code, sig, v) in fields {
            field(&mut h, *code, sig, v);
        }
        if !body_sig.is_empty() {
            field(&mut h, 8, "g", &Arg::Str(body_sig));
        }
        let flen = (h.len() - 16) as u32;
        h[12..16].copy_from_slice(&flen.to_le_bytes());
        pad(&mut h, 8);
        h.extend_from_slice(&b);
        self.s.write_all(&h)?;
        Ok(self.serial)
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
    ) -> std::io::Result<Result<Option<u32>, String>> {
        let sig: String = args
            .iter()
            .map(|a| match a {
                Arg::Str(_) => 's',
                Arg::U32(_) => 'u',
            })
            .collect();
        let serial = self.send(
            METHOD_CALL,
            &[
                (1, "o", Arg::Str(path)),
                (2, "s", Arg::Str(iface)),
                (3, "s", Arg::Str(member)),
                (6, "s", Arg::Str(dest)),
            ],
            &sig,
            args,
        )?;
        loop {
            let m = self.recv()?;
            if m.reply_serial != Some(serial) {
                continue;
            }
            return Ok(match m.kind {
                METHOD_RETURN => Ok(m.first_u32),
                ERROR => Err(m.error_name.unwrap_or_else(|| "error".into())),
                k => Err(format!("unexpected message type {k}")),
            });
        }
    }

    /// Answers a method call with an empty return.
    pub fn reply(&mut self, to: &Msg) -> std::io::Result<()> {
        let Some(sender) = to.sender.as_deref() else {
            return Ok(());
        };
        self.send(
            METHOD_RETURN,
            &[(5, "u", Arg::U32(to.serial)), (6, "s", Arg::Str(sender))],
            "",
            &[],
        )?;
        Ok(())
    }

    pub fn set_timeout(&self, t: Option<Duration>) -> std::io::Result<()> {
        self.s.set_read_timeout(t)
    }

    /// The next message.
    pub fn recv(&mut self) -> std::io::Result<Msg> {
        let mut fixed = [0u8; 16];
        self.s.read_exact(&mut fixed)?;
        if fixed[0] != b'l' {
            return Err(std::io::Error::other("big-endian message"));
        }
        let u = |b: &[u8]| u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
        let body_len = u(&fixed[4..8]) as usize;
        let flen = u(&fixed[12..16]) as usize;
        let hdr_end = (16 + flen).div_ceil(8) * 8;
        if body_len > 1 << 24 || flen > 1 << 16 {
            return Err(std::io::Error::other("message too large"));
        }
        let mut rest = vec![0u8; hdr_end - 16 + body_len];
        self.s.read_exact(&mut rest)?;
        let mut all = fixed.to_vec();
        all.extend_from_slice(&rest);
        let mut m = Msg {
            kind: fixed[1],
            serial: u(&fixed[8..12]),
            reply_serial: None,
            error_name: None,
            sender: None,
            first_u32: None,
        };
        let mut body_sig = String::new();
        let mut p = 16;
        let end = 16 + flen;
        let bad = || std::io::Error::other("malformed header");
        while p < end {
            p = p.div_ceil(8) * 8;
            let code = *all.get(p).ok_or_else(bad)?;
            let sl = *all.get(p + 1).ok_or_else(bad)? as usize;
            let sig = all.get(p + 2..p + 2 + sl).ok_or_else(bad)?.to_vec();
            p += 3 + sl;
            match sig.as_slice() {
                b"u" => {
                    p = p.div_ceil(4) * 4;
                    let v = u(all.get(p..p + 4).ok_or_else(bad)?);
                    p += 4;
                    if code == 5 {
                        m.reply_serial = Some(v);
                    }
                }
                b"s" | b"o" => {
                    p = p.div_ceil(4) * 4;
                    let l = u(all.get(p..p + 4).ok_or_else(bad)?) as usize;
                    let v = String::from_utf8_lossy(all.get(p + 4..p + 4 + l).ok_or_else(bad)?)
                        .into_owned();
                    p += 5 + l;
                    match code {
                        4 => m.error_name = Some(v),
                        7 => m.sender = Some(v),
                        _ => {}
                    }
                }
                b"g" => {
                    let l = *all.get(p).ok_or_else(bad)? as usize;
                    if code == 8 {
                        body_sig =
                            String::from_utf8_lossy(all.get(p + 1..p + 1 + l).ok_or_else(bad)?)
                                .into_owned();
                    }
                    p += 2 + l;
                }
                _ => return Err(bad()),
            }
        }
        if body_sig.starts_with('u') && body_len >= 4 {
            m.first_u32 = Some(u(&all[hdr_end..hdr_end + 4]));
        }
        Ok(m)
    }
}
