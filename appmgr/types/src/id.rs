use crate::InvalidValue;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

macro_rules! string_newtype {
    ($name:ident, $validate:path) => {
        impl $name {
            pub fn new(s: &str) -> Result<Self, InvalidValue> {
                $validate(s)?;
                Ok($name(s.to_string()))
            }
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }
        impl TryFrom<String> for $name {
            type Error = InvalidValue;
            fn try_from(s: String) -> Result<Self, InvalidValue> {
                $validate(&s)?;
                Ok($name(s))
            }
        }
        impl From<$name> for String {
            fn from(v: $name) -> String {
                v.0
            }
        }
        impl FromStr for $name {
            type Err = InvalidValue;
            fn from_str(s: &str) -> Result<Self, InvalidValue> {
                $name::new(s)
            }
        }
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }
    };
}

/// A reverse-DNS application or runtime ID such as `org.example.Hello`: at least two
/// dot-separated elements, each starting with a letter or `_`, then letters, digits, `_`
/// or `-`; at most 255 bytes. It can never contain `/`, `..` or control characters, so
/// it is safe as a path component and in a ref.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct AppId(String);
string_newtype!(AppId, validate_app_id);

fn validate_app_id(s: &str) -> Result<(), InvalidValue> {
    let bad = |r: &str| Err(InvalidValue::new("id", s, r));
    if s.is_empty() || s.len() > 255 {
        return bad("must be 1 to 255 characters");
    }
    let parts: Vec<&str> = s.split('.').collect();
    if parts.len() < 2 {
        return bad("must be reverse-DNS with at least two elements, e.g. org.example.App");
    }
    for part in parts {
        let mut chars = part.chars();
        match chars.next() {
            None => return bad("has an empty element (`..` or a leading/trailing dot)"),
            Some(c) if c.is_ascii_alphabetic() || c == '_' => {}
            Some(_) => return bad("each element must start with a letter or `_`"),
        }
        if !chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') {
            return bad("only letters, digits, `_` and `-` are allowed between the dots");
        }
    }
    Ok(())
}

/// A CPU architecture name as used in refs (`x86_64`, `aarch64`, `armv7`, `i386`,
/// `riscv64`, ...): lowercase letters, digits and `_`, 1 to 32 bytes.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Arch(String);
string_newtype!(Arch, validate_arch);

fn validate_arch(s: &str) -> Result<(), InvalidValue> {
    if s.is_empty() || s.len() > 32 {
        return Err(InvalidValue::new("arch", s, "must be 1 to 32 characters"));
    }
    if !s
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
    {
        return Err(InvalidValue::new(
            "arch",
            s,
            "only lowercase letters, digits and `_` are allowed",
        ));
    }
    Ok(())
}

impl Arch {
    /// The architecture of the running machine, in ref spelling.
    pub fn host() -> Arch {
        let a = match std::env::consts::ARCH {
            "x86" => "i386",
            "arm" => "armv7",
            other => other,
        };
        Arch(a.to_string())
    }
}

/// A branch name (`stable`, `1`, `23.08`): letters, digits, `_`, `-`, `.`; must start
/// with a letter, digit or `_`; no `..`; 1 to 64 bytes.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Branch(String);
string_newtype!(Branch, validate_branch);

fn validate_branch(s: &str) -> Result<(), InvalidValue> {
    let bad = |r: &str| Err(InvalidValue::new("branch", s, r));
    if s.is_empty() || s.len() > 64 {
        return bad("must be 1 to 64 characters");
    }
    if !s.starts_with(|c: char| c.is_ascii_alphanumeric() || c == '_') {
        return bad("must start with a letter, digit or `_`");
    }
    if s.contains("..") {
        return bad("must not contain `..`");
    }
    if !s
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
    {
        return bad("only letters, digits, `_`, `-` and `.` are allowed");
    }
    Ok(())
}

/// Whether a bundle holds an app (mounted at `/app`), a runtime (mounted at `/usr`) or
/// an extension (mounted inside a runtime or app at the mount point it declares, while
/// its conditions hold).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    App,
    Runtime,
    Extension,
}

impl Kind {
    /// Every kind, in the order listings show them.
    pub const ALL: [Kind; 3] = [Kind::App, Kind::Runtime, Kind::Extension];

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::App => "app",
            Kind::Runtime => "runtime",
            Kind::Extension => "extension",
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Kind {
    type Err = InvalidValue;
    fn from_str(s: &str) -> Result<Self, InvalidValue> {
        match s {
            "app" => Ok(Kind::App),
            "runtime" => Ok(Kind::Runtime),
            "extension" => Ok(Kind::Extension),
            _ => Err(InvalidValue::new(
                "kind",
                s,
                "must be `app`, `runtime` or `extension`",
            )),
        }
    }
}

/// A semantic version (`1.4.2`, `2.0.0-rc.1`). Ordering is semver precedence; build
/// metadata (`+...`) is refused because semver ignores it in precedence, which would make
/// two different bundles "the same version" for the downgrade check.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Version(semver::Version);

impl Version {
    pub fn new(s: &str) -> Result<Self, InvalidValue> {
        let v = semver::Version::parse(s)
            .map_err(|e| InvalidValue::new("version", s, format!("not a semantic version: {e}")))?;
        if !v.build.is_empty() {
            return Err(InvalidValue::new(
                "version",
                s,
                "build metadata (`+...`) is not allowed: it does not order versions",
            ));
        }
        Ok(Version(v))
    }
    pub fn semver(&self) -> &semver::Version {
        &self.0
    }
}

impl TryFrom<String> for Version {
    type Error = InvalidValue;
    fn try_from(s: String) -> Result<Self, InvalidValue> {
        Version::new(&s)
    }
}
impl From<Version> for String {
    fn from(v: Version) -> String {
        v.0.to_string()
    }
}
impl FromStr for Version {
    type Err = InvalidValue;
    fn from_str(s: &str) -> Result<Self, InvalidValue> {
        Version::new(s)
    }
}
impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A runtime reference as written in an app manifest: `ID/ARCH/BRANCH`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct RuntimeRef {
    pub id: AppId,
    pub arch: Arch,
    pub branch: Branch,
}

impl RuntimeRef {
    pub fn to_ref(&self) -> RefName {
        RefName {
            kind: Kind::Runtime,
            id: self.id.clone(),
            arch: self.arch.clone(),
            branch: self.branch.clone(),
        }
    }
}

impl FromStr for RuntimeRef {
    type Err = InvalidValue;
    fn from_str(s: &str) -> Result<Self, InvalidValue> {
        let parts: Vec<&str> = s.split('/').collect();
        if parts.len() != 3 {
            return Err(InvalidValue::new("runtime", s, "must be ID/ARCH/BRANCH"));
        }
        Ok(RuntimeRef {
            id: AppId::new(parts[0])?,
            arch: Arch::new(parts[1])?,
            branch: Branch::new(parts[2])?,
        })
    }
}
impl TryFrom<String> for RuntimeRef {
    type Error = InvalidValue;
    fn try_from(s: String) -> Result<Self, InvalidValue> {
        s.parse()
    }
}
impl From<RuntimeRef> for String {
    fn from(r: RuntimeRef) -> String {
        r.to_string()
    }
}
impl fmt::Display for RuntimeRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}/{}", self.id, self.arch, self.branch)
    }
}

/// A store ref: `app/ID/ARCH/BRANCH` or `runtime/ID/ARCH/BRANCH`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct RefName {
    pub kind: Kind,
    pub id: AppId,
    pub arch: Arch,
    pub branch: Branch,
}

impl RefName {
    pub fn new(kind: Kind, id: AppId, arch: Arch, branch: Branch) -> Self {
        RefName {
            kind,
            id,
            arch,
            branch,
        }
    }
}

impl FromStr for RefName {
    type Err = InvalidValue;
    fn from_str(s: &str) -> Result<Self, InvalidValue> {
        let parts: Vec<&str> = s.split('/').collect();
        if parts.len() != 4 {
            return Err(InvalidValue::new("ref", s, "must be KIND/ID/ARCH/BRANCH"));
        }
        Ok(RefName {
            kind: parts[0].parse()?,
            id: AppId::new(parts[1])?,
            arch: Arch::new(parts[2])?,
            branch: Branch::new(parts[3])?,
        })
    }
}
impl TryFrom<String> for RefName {
    type Error = InvalidValue;
    fn try_from(s: String) -> Result<Self, InvalidValue> {
        s.parse()
    }
}
impl From<RefName> for String {
    fn from(r: RefName) -> String {
        r.to_string()
    }
}
impl fmt::Display for RefName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}/{}/{}", self.kind, self.id, self.arch, self.branch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn app_ids() {
        for ok in ["org.example.App", "com.x", "org.ex_ample.App-2", "_a.b"] {
            assert!(AppId::new(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "single",
            "org..x",
            ".org.x",
            "org.x.",
            "org/x",
            "org.x/..",
            "org.1x",
            "org.x\0",
            "org.x\n",
            "org.é",
            "../../etc",
        ] {
            assert!(AppId::new(bad).is_err(), "{bad:?}");
        }
        assert!(AppId::new(&format!("a.{}", "b".repeat(300))).is_err());
    }

    #[test]
    fn arches_and_branches() {
        assert!(Arch::new("x86_64").is_ok());
        assert!(Arch::new("aarch64").is_ok());
        for bad in ["", "x86/64", "..", "X86", "a.b"] {
            assert!(Arch::new(bad).is_err(), "{bad}");
        }
        for ok in ["stable", "1", "23.08", "beta-2"] {
            assert!(Branch::new(ok).is_ok(), "{ok}");
        }
        for bad in ["", "a/b", "..", "a..b", ".hidden", "-x", "a b"] {
            assert!(Branch::new(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn versions_order_by_semver() {
        let v = |s: &str| Version::new(s).unwrap();
        assert!(v("1.10.0") > v("1.9.0"));
        assert!(v("2.0.0") > v("2.0.0-rc.1"));
        assert!(Version::new("1.0").is_err());
        assert!(Version::new("1.0.0+build").is_err());
    }

    #[test]
    fn refs_roundtrip() {
        let r: RefName = "app/org.example.App/x86_64/stable".parse().unwrap();
        assert_eq!(r.kind, Kind::App);
        assert_eq!(r.to_string(), "app/org.example.App/x86_64/stable");
        assert!("app/org.example.App/x86_64".parse::<RefName>().is_err());
        assert!("app/../x86_64/stable".parse::<RefName>().is_err());
        let rt: RuntimeRef = "org.example.Platform/aarch64/1".parse().unwrap();
        assert_eq!(
            rt.to_ref().to_string(),
            "runtime/org.example.Platform/aarch64/1"
        );
    }
}
