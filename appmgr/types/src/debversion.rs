//! Debian package versions (`[EPOCH:]UPSTREAM[-REVISION]`), ordered the way dpkg orders
//! them (Debian Policy §5.6.12), for `appmgr sbom query PACKAGE --below VERSION`.
//!
//! The ordering: epochs compare as numbers; then the upstream versions, then the
//! revisions, each compared by alternating runs: a run of non-digits compared character by
//! character where `~` sorts before everything (even the end of the string), letters
//! before all other characters, and the rest by their ASCII value; then a run of digits
//! compared as a number. `dpkg --compare-versions` is the reference the tests check
//! against.

use crate::InvalidValue;
use std::cmp::Ordering;
use std::fmt;

/// A validated Debian version string.
#[derive(Debug, Clone)]
pub struct DebVersion {
    text: String,
    epoch: u32,
    /// Byte ranges of `text`: the upstream version and the revision (empty when absent).
    upstream: (usize, usize),
    revision: (usize, usize),
}

const WHAT: &str = "Debian version";

impl DebVersion {
    /// Parses and validates `s` with dpkg's rules: an optional numeric epoch, an upstream
    /// version that starts with a digit and holds only alphanumerics and `.+~-:` (`-` only
    /// when a revision follows, `:` only with an epoch), and a revision of alphanumerics
    /// and `.+~`.
    pub fn parse(s: &str) -> Result<DebVersion, InvalidValue> {
        let bad = |reason: &str| InvalidValue::new(WHAT, s, reason);
        if s.is_empty() {
            return Err(bad("empty"));
        }
        if s.len() > 256 {
            return Err(bad("longer than 256 bytes"));
        }
        let (epoch, rest_at) = match s.find(':') {
            Some(i) => {
                let e = &s[..i];
                if e.is_empty() || !e.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(bad("the epoch before `:` must be a number"));
                }
                let epoch = e
                    .parse::<u32>()
                    .map_err(|_| bad("the epoch is too large"))?;
                (epoch, i + 1)
            }
            None => (0, 0),
        };
        let rest = &s[rest_at..];
        let (up, rev) = match rest.rfind('-') {
            Some(i) => ((rest_at, rest_at + i), (rest_at + i + 1, s.len())),
            None => ((rest_at, s.len()), (s.len(), s.len())),
        };
        let upstream = &s[up.0..up.1];
        let revision = &s[rev.0..rev.1];
        if upstream.is_empty() {
            return Err(bad("the upstream version is empty"));
        }
        if !upstream.as_bytes()[0].is_ascii_digit() {
            return Err(bad("the upstream version must start with a digit"));
        }
        if let Some(c) = upstream
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || ".+~-:".contains(*c)))
        {
            return Err(bad(&format!(
                "{c:?} is not allowed in the upstream version"
            )));
        }
        if rest.contains('-') && revision.is_empty() {
            return Err(bad("the revision after `-` is empty"));
        }
        if let Some(c) = revision
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || ".+~".contains(*c)))
        {
            return Err(bad(&format!("{c:?} is not allowed in the revision")));
        }
        Ok(DebVersion {
            text: s.to_string(),
            epoch,
            upstream: up,
            revision: rev,
        })
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    pub fn epoch(&self) -> u32 {
        self.epoch
    }

    pub fn upstream(&self) -> &str {
        &self.text[self.upstream.0..self.upstream.1]
    }

    /// The Debian revision, `""` for a native package.
    pub fn revision(&self) -> &str {
        &self.text[self.revision.0..self.revision.1]
    }
}

/// The weight of one byte in a non-digit run; `None` (the end of the run) weighs 0.
fn weight(c: Option<u8>) -> i32 {
    match c {
        None => 0,
        Some(b'~') => -1,
        Some(c) if c.is_ascii_digit() => 0,
        Some(c) if c.is_ascii_alphabetic() => c as i32,
        Some(c) => c as i32 + 256,
    }
}

/// dpkg's comparison of two upstream versions or two revisions.
fn compare_part(a: &str, b: &str) -> Ordering {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let (mut i, mut j) = (0, 0);
    while i < a.len() || j < b.len() {
        // The non-digit run.
        while (i < a.len() && !a[i].is_ascii_digit()) || (j < b.len() && !b[j].is_ascii_digit()) {
            let wa = weight(a.get(i).copied().filter(|c| !c.is_ascii_digit()));
            let wb = weight(b.get(j).copied().filter(|c| !c.is_ascii_digit()));
            if wa != wb {
                return wa.cmp(&wb);
            }
            if i < a.len() && !a[i].is_ascii_digit() {
                i += 1;
            }
            if j < b.len() && !b[j].is_ascii_digit() {
                j += 1;
            }
        }
        // The digit run, as a number of any length: leading zeros dropped, then the
        // longer run is larger, then the digits decide.
        let start_a = i;
        while i < a.len() && a[i].is_ascii_digit() {
            i += 1;
        }
        let start_b = j;
        while j < b.len() && b[j].is_ascii_digit() {
            j += 1;
        }
        let na = trim_zeros(&a[start_a..i]);
        let nb = trim_zeros(&b[start_b..j]);
        let ord = na.len().cmp(&nb.len()).then_with(|| na.cmp(nb));
        if ord != Ordering::Equal {
            return ord;
        }
    }
    Ordering::Equal
}

fn trim_zeros(d: &[u8]) -> &[u8] {
    let k = d.iter().position(|c| *c != b'0').unwrap_or(d.len());
    &d[k..]
}

impl Ord for DebVersion {
    fn cmp(&self, other: &Self) -> Ordering {
        self.epoch
            .cmp(&other.epoch)
            .then_with(|| compare_part(self.upstream(), other.upstream()))
            .then_with(|| compare_part(self.revision(), other.revision()))
    }
}

impl PartialOrd for DebVersion {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// Equal as dpkg sees it: `1.0` equals `0:1.0` and `1.0-0` is not `1.0` only in text.
impl PartialEq for DebVersion {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for DebVersion {}

impl fmt::Display for DebVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl std::str::FromStr for DebVersion {
    type Err = InvalidValue;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        DebVersion::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Versions in dpkg's ascending order.
    const ASCENDING: &[&str] = &[
        "0.9",
        "1.0~rc1",
        "1.0~rc1-1",
        "1.0",
        "1.0-0.1",
        "1.0-1~bpo1",
        "1.0-1",
        "1.0-1+b1",
        "1.0-1.1",
        "1.0a",
        "1.0a+",
        "1.0.1",
        "1.00.2",
        "1.2",
        "1.10",
        "9.9-9",
        "1:0.1",
        "1:0.1-1",
        "2:0",
    ];
    /// More shapes for the comparison with dpkg.
    const OTHERS: &[&str] = &[
        "0",
        "1.0A",
        "1.0+dfsg-2",
        "1.0.0~git20230101.abc-1",
        "2.36-9+deb12u10",
        "2.36-9+deb12u3",
        "3.0.11-1~deb12u2",
        "1.0-1-1",
        "1.0-1.1-1",
        "10",
        "009",
    ];

    fn v(s: &str) -> DebVersion {
        DebVersion::parse(s).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn splits_epoch_upstream_and_revision() {
        let x = v("1:2.36-9+deb12u4");
        assert_eq!(
            (x.epoch(), x.upstream(), x.revision()),
            (1, "2.36", "9+deb12u4")
        );
        let y = v("3.0.11-1~deb12u2");
        assert_eq!(
            (y.epoch(), y.upstream(), y.revision()),
            (0, "3.0.11", "1~deb12u2")
        );
        let z = v("2:1.2-3-4");
        assert_eq!((z.upstream(), z.revision()), ("1.2-3", "4"));
        assert_eq!(v("20230311").revision(), "");
    }

    #[test]
    fn refuses_what_dpkg_refuses() {
        for bad in [
            "",
            "a1.0",
            "1.0-",
            ":1.0",
            "x:1.0",
            "1.0 1",
            "1.0_1",
            "1:",
            "1:-1",
            "1.0-a_b",
            "1:2:3\u{0}",
        ] {
            assert!(DebVersion::parse(bad).is_err(), "accepted {bad:?}");
        }
        let e = DebVersion::parse("1.0_1").unwrap_err().to_string();
        assert!(e.contains("1.0_1") && e.contains("'_'"), "{e}");
    }

    #[test]
    fn orders_like_dpkg() {
        let ascending = ASCENDING;
        for w in ascending.windows(2) {
            assert!(v(w[0]) < v(w[1]), "{} < {}", w[0], w[1]);
            assert!(v(w[1]) > v(w[0]), "{} > {}", w[1], w[0]);
        }
        assert_eq!(v("1.0"), v("0:1.0"));
        assert_eq!(v("1.01"), v("1.1"));
        assert!(v("1.0~~") < v("1.0~"));
        assert!(v("1.0~") < v("1.0"));
        assert!(v("2.36-9+deb12u3") < v("2.36-9+deb12u10"));
    }

    /// Every pair of a varied list, against dpkg itself where it is installed (every
    /// Debian host, so CI).
    #[test]
    fn agrees_with_dpkg_compare_versions() {
        if std::process::Command::new("dpkg")
            .arg("--version")
            .output()
            .is_err()
        {
            eprintln!("skipped: no dpkg on this host");
            return;
        }
        let all: Vec<&str> = ASCENDING.iter().chain(OTHERS).copied().collect();
        for &a in &all {
            for &b in &all {
                let ours = v(a).cmp(&v(b));
                let lt = dpkg(a, "lt", b);
                let eq = dpkg(a, "eq", b);
                let theirs = if lt {
                    Ordering::Less
                } else if eq {
                    Ordering::Equal
                } else {
                    Ordering::Greater
                };
                assert_eq!(ours, theirs, "{a} vs {b}");
            }
        }
    }

    fn dpkg(a: &str, op: &str, b: &str) -> bool {
        std::process::Command::new("dpkg")
            .args(["--compare-versions", a, op, b])
            .status()
            .expect("dpkg runs")
            .success()
    }
}
