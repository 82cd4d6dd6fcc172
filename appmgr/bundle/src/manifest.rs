//! `manifest.toml`: what a bundle is, bound to its payload by digest and size and signed
//! byte for byte.
//!
//! The same file is the input of `appmgr bundle create` without the `[payload]` table
//! (and optionally without `format-version`); `bundle create` adds both and writes the
//! result, whose exact bytes are what the signature covers. Parsing is strict: unknown
//! keys, duplicate keys, wrong types, invalid UTF-8 and values the validated types refuse
//! are all errors naming the key.

use crate::extension::ExtensionDecl;
use crate::sbom::SbomInfo;
use appmgr_types::{
    AppId, Arch, Branch, Kind, Permissions, RefName, Resources, RuntimeRef, Version,
};
use serde::{Deserialize, Serialize};

/// The format version this code writes and the only one it reads.
pub const FORMAT_VERSION: u32 = 1;

/// The most bytes a manifest may have: it is read into memory before the signature check.
pub const MAX_MANIFEST_BYTES: usize = 64 * 1024;

/// How the payload tar is stored inside the bundle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    None,
    Zstd,
}

/// The `[payload]` table: binds the manifest to exactly one payload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct PayloadInfo {
    /// Lowercase hex SHA-256 of the payload member's bytes as stored in the bundle.
    pub sha256: String,
    /// Size in bytes of the payload member as stored.
    pub size: u64,
    pub compression: Compression,
    /// Sum of the sizes of all regular files in the tree: an upper bound the reader
    /// enforces while unpacking (decompression bombs) and the store checks against free
    /// space before writing.
    pub installed_size: u64,
    /// Number of entries in the payload tar (directories, files, links).
    pub entries: u64,
}

/// Common fields of input and signed manifests.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawManifest {
    #[serde(skip_serializing_if = "Option::is_none")]
    format_version: Option<u32>,
    id: AppId,
    kind: Kind,
    version: Version,
    arch: Arch,
    branch: Branch,
    #[serde(skip_serializing_if = "Option::is_none")]
    runtime: Option<RuntimeRef>,
    #[serde(skip_serializing_if = "Option::is_none")]
    command: Option<String>,
    #[serde(default, skip_serializing_if = "Permissions::is_empty")]
    permissions: Permissions,
    #[serde(default, skip_serializing_if = "resources_empty")]
    resources: Resources,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    service: Option<ServiceDecl>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    extension: Option<ExtensionDecl>,
    #[serde(skip_serializing_if = "Option::is_none")]
    payload: Option<PayloadInfo>,
    #[serde(skip_serializing_if = "Option::is_none")]
    sbom: Option<SbomInfo>,
}

/// How a service app tells it is up: `notify` apps send `READY=1` to `$NOTIFY_SOCKET`
/// (sd_notify style); `started` apps count as up once they run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ReadyProtocol {
    #[default]
    Started,
    Notify,
}

/// The `[service]` table: the app is a long-running service appmgrd may supervise. When it
/// starts and how it restarts is policy's (`service` in policy rules); the app declares
/// only what it implements.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ServiceDecl {
    /// How readiness is reported.
    #[serde(default)]
    pub ready: ReadyProtocol,
    /// Seconds between SIGTERM and SIGKILL on stop (1..=300, default 10).
    #[serde(default = "default_stop_timeout")]
    pub stop_timeout: u32,
}

fn default_stop_timeout() -> u32 {
    10
}

fn resources_empty(r: &Resources) -> bool {
    r == &Resources::default()
}

/// A validated manifest. For a signed bundle `payload` is always present.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Manifest {
    pub id: AppId,
    pub kind: Kind,
    pub version: Version,
    pub arch: Arch,
    pub branch: Branch,
    /// Apps only: the runtime mounted at `/usr`.
    pub runtime: Option<RuntimeRef>,
    /// Apps only: a path under `/app`, or a name looked up in `/app/bin`.
    pub command: Option<String>,
    pub permissions: Permissions,
    pub resources: Resources,
    pub payload: Option<PayloadInfo>,
    /// Apps only: declared a service (`[service]`).
    pub service: Option<ServiceDecl>,
    /// Extensions only (and always): what they extend, where and when (`[extension]`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub extension: Option<ExtensionDecl>,
    /// The SBOM member's format, digest and size (`[sbom]`, written by `bundle create`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sbom: Option<SbomInfo>,
}

/// A manifest that failed to parse or validate.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("manifest is larger than {MAX_MANIFEST_BYTES} bytes")]
    TooLarge,
    #[error("manifest is not valid UTF-8 (byte {0})")]
    NotUtf8(usize),
    #[error("manifest: {0}")]
    Syntax(String),
    #[error("manifest: {field}: {reason}")]
    Invalid { field: &'static str, reason: String },
}

fn invalid(field: &'static str, reason: impl Into<String>) -> ManifestError {
    ManifestError::Invalid {
        field,
        reason: reason.into(),
    }
}

impl Manifest {
    /// Parses manifest bytes. `signed` requires the `[payload]` table and
    /// `format-version`; an input manifest for `bundle create` must not have `[payload]`.
    pub fn parse(bytes: &[u8], signed: bool) -> Result<Manifest, ManifestError> {
        if bytes.len() > MAX_MANIFEST_BYTES {
            return Err(ManifestError::TooLarge);
        }
        let text =
            std::str::from_utf8(bytes).map_err(|e| ManifestError::NotUtf8(e.valid_up_to()))?;
        let raw: RawManifest = toml::from_str(text).map_err(|e| {
            let msg = e.message().to_string();
            match e.span() {
                Some(span) => {
                    let line = text[..span.start].matches('\n').count() + 1;
                    ManifestError::Syntax(format!("line {line}: {msg}"))
                }
                None => ManifestError::Syntax(msg),
            }
        })?;
        let m = Manifest {
            id: raw.id,
            kind: raw.kind,
            version: raw.version,
            arch: raw.arch,
            branch: raw.branch,
            runtime: raw.runtime,
            command: raw.command,
            permissions: raw.permissions,
            resources: raw.resources,
            payload: raw.payload,
            service: raw.service,
            extension: raw.extension,
            sbom: raw.sbom,
        };
        match raw.format_version {
            Some(FORMAT_VERSION) => {}
            None if !signed => {}
            None => return Err(invalid("format-version", "missing")),
            Some(v) => {
                return Err(invalid(
                    "format-version",
                    format!("{v} is not supported (this appmgr reads {FORMAT_VERSION})"),
                ))
            }
        }
        if signed && m.payload.is_none() {
            return Err(invalid("payload", "missing [payload] table"));
        }
        if !signed && m.payload.is_some() {
            return Err(invalid(
                "payload",
                "[payload] is written by `bundle create`, not by hand",
            ));
        }
        if !signed && m.sbom.is_some() {
            return Err(invalid(
                "sbom",
                "[sbom] is written by `bundle create --sbom FILE`, not by hand",
            ));
        }
        m.validate()?;
        Ok(m)
    }

    fn validate(&self) -> Result<(), ManifestError> {
        if let Some(svc) = &self.service {
            if self.kind != Kind::App {
                return Err(invalid("service", "only apps can be services"));
            }
            if !(1..=300).contains(&svc.stop_timeout) {
                return Err(invalid(
                    "service.stop-timeout",
                    format!("{} is not within 1..=300 seconds", svc.stop_timeout),
                ));
            }
        }
        match self.kind {
            Kind::App => {
                if self.runtime.is_none() {
                    return Err(invalid(
                        "runtime",
                        "an app must name its runtime (ID/ARCH/BRANCH)",
                    ));
                }
                if let Some(rt) = &self.runtime {
                    if rt.arch != self.arch {
                        return Err(invalid(
                            "runtime",
                            format!(
                                "runtime arch {} differs from the app's arch {}",
                                rt.arch, self.arch
                            ),
                        ));
                    }
                }
                let cmd = self
                    .command
                    .as_deref()
                    .ok_or_else(|| invalid("command", "an app must name its command"))?;
                validate_command(cmd)?;
            }
            Kind::Runtime | Kind::Extension => {
                let what = self.kind.as_str();
                if self.runtime.is_some() {
                    return Err(invalid(
                        "runtime",
                        format!("a {what} cannot name a runtime"),
                    ));
                }
                if self.command.is_some() {
                    return Err(invalid("command", format!("a {what} has no command")));
                }
                if !self.permissions.is_empty() {
                    return Err(invalid(
                        "permissions",
                        format!("a {what} cannot request permissions"),
                    ));
                }
                if !resources_empty(&self.resources) {
                    return Err(invalid("resources", format!("a {what} has no resources")));
                }
            }
        }
        match (&self.extension, self.kind) {
            (None, Kind::Extension) => {
                return Err(invalid(
                    "extension",
                    "an extension must declare [extension] (extends, mount-point)",
                ))
            }
            (Some(_), Kind::App | Kind::Runtime) => {
                return Err(invalid(
                    "extension",
                    "only a bundle of kind \"extension\" has [extension]",
                ))
            }
            (Some(x), Kind::Extension) => {
                x.validate().map_err(|(f, r)| invalid(f, r))?;
                // In the extended tree's namespace, so a key trusted only for other IDs
                // (trust scopes match IDs) cannot put code into another vendor's runtime.
                if !self
                    .id
                    .as_str()
                    .strip_prefix(x.extends.id.as_str())
                    .is_some_and(|rest| rest.starts_with('.'))
                {
                    return Err(invalid(
                        "id",
                        format!(
                            "an extension's ID is below the ID it extends: {}.NAME, not {}",
                            x.extends.id, self.id
                        ),
                    ));
                }
                if x.extends.arch != self.arch {
                    return Err(invalid(
                        "extension.extends",
                        format!(
                            "{} is for arch {}, the extension is {}",
                            x.extends, x.extends.arch, self.arch
                        ),
                    ));
                }
            }
            (None, _) => {}
        }
        if let Some(p) = &self.payload {
            if !is_sha256_hex(&p.sha256) {
                return Err(invalid("payload.sha256", "must be 64 lowercase hex digits"));
            }
        }
        if let Some(s) = &self.sbom {
            if !is_sha256_hex(&s.sha256) {
                return Err(invalid("sbom.sha256", "must be 64 lowercase hex digits"));
            }
            if s.size == 0 || s.size > crate::sbom::MAX_SBOM_BYTES {
                return Err(invalid(
                    "sbom.size",
                    format!(
                        "{} is not within 1..={} bytes",
                        s.size,
                        crate::sbom::MAX_SBOM_BYTES
                    ),
                ));
            }
        }
        Ok(())
    }

    /// The store ref this manifest installs to.
    pub fn ref_name(&self) -> RefName {
        RefName::new(
            self.kind,
            self.id.clone(),
            self.arch.clone(),
            self.branch.clone(),
        )
    }

    /// Serializes as a signed manifest with `payload` and, when the bundle carries one,
    /// the SBOM's `[sbom]` table. Deterministic.
    pub fn to_signed_bytes(&self, payload: PayloadInfo, sbom: Option<SbomInfo>) -> Vec<u8> {
        let raw = RawManifest {
            format_version: Some(FORMAT_VERSION),
            id: self.id.clone(),
            kind: self.kind,
            version: self.version.clone(),
            arch: self.arch.clone(),
            branch: self.branch.clone(),
            runtime: self.runtime.clone(),
            command: self.command.clone(),
            permissions: self.permissions.clone(),
            resources: self.resources.clone(),
            service: self.service.clone(),
            extension: self.extension.clone(),
            payload: Some(payload),
            sbom,
        };
        toml::to_string(&raw)
            .expect("a validated manifest always serializes")
            .into_bytes()
    }
}

fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

fn validate_command(cmd: &str) -> Result<(), ManifestError> {
    if cmd.is_empty() || cmd.len() > 1024 || appmgr_types::has_unsafe_chars(cmd) {
        return Err(invalid("command", "must be 1 to 1024 printable characters"));
    }
    if let Some(rest) = cmd.strip_prefix("/app/") {
        if rest
            .split('/')
            .any(|c| c.is_empty() || c == "." || c == "..")
        {
            return Err(invalid(
                "command",
                "path must be normal (no `.`, `..` or `//`)",
            ));
        }
    } else if cmd.contains('/') {
        return Err(invalid(
            "command",
            "must be a path under /app or a name looked up in /app/bin",
        ));
    } else if cmd == "." || cmd == ".." {
        return Err(invalid("command", "not a file name"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const APP: &str = r#"id = "org.example.Hello"
kind = "app"
version = "1.2.0"
arch = "x86_64"
branch = "stable"
runtime = "org.example.Platform/x86_64/1"
command = "hello"

[permissions]
network = true

[resources]
memory-max = "64M"
"#;

    #[test]
    fn parses_input_and_roundtrips_signed() {
        let m = Manifest::parse(APP.as_bytes(), false).unwrap();
        assert_eq!(
            m.ref_name().to_string(),
            "app/org.example.Hello/x86_64/stable"
        );
        let info = PayloadInfo {
            sha256: "a".repeat(64),
            size: 10,
            compression: Compression::Zstd,
            installed_size: 5,
            entries: 2,
        };
        let bytes = m.to_signed_bytes(info.clone(), None);
        let s = Manifest::parse(&bytes, true).unwrap();
        assert_eq!(s.payload, Some(info.clone()));
        assert_eq!(s.sbom, None);
        let sbom = SbomInfo {
            format: crate::sbom::SbomFormat::CycloneDx15,
            sha256: "b".repeat(64),
            size: 7,
        };
        let with = m.to_signed_bytes(info.clone(), Some(sbom.clone()));
        assert_eq!(Manifest::parse(&with, true).unwrap().sbom, Some(sbom));
        let text = String::from_utf8(with).unwrap();
        for (from, to) in [
            ("size = 7", "size = 0"),
            ("cyclonedx-1.5", "spdx-2.3"),
            (&"b".repeat(64)[..], "B"),
        ] {
            assert!(
                Manifest::parse(text.replace(from, to).as_bytes(), true).is_err(),
                "accepted [sbom] with {to}"
            );
        }
        let input_with_sbom = format!(
            "{APP}\n[sbom]\nformat = \"cyclonedx-1.5\"\nsha256 = \"{}\"\nsize = 7\n",
            "b".repeat(64)
        );
        let e = Manifest::parse(input_with_sbom.as_bytes(), false).unwrap_err();
        assert!(e.to_string().contains("sbom"), "{e}");
        assert_eq!(s.permissions, m.permissions);
        assert!(
            Manifest::parse(APP.as_bytes(), true).is_err(),
            "signed needs payload"
        );
        assert!(
            Manifest::parse(&bytes, false).is_err(),
            "input must not have payload"
        );
    }

    #[test]
    fn rejects_bad_manifests() {
        let cases: Vec<(String, &str)> = vec![
            (format!("{APP}\nextra = 1\n"), "unknown"),
            (
                APP.replace("kind = \"app\"", "kind = \"app\"\nkind = \"app\""),
                "duplicate",
            ),
            (APP.replace("\"1.2.0\"", "1"), "invalid type"),
            (APP.replace("org.example.Hello", "org/../Hello"), "id"),
            (
                APP.replace("arch = \"x86_64\"", "arch = \"x86/64\""),
                "arch",
            ),
            (APP.replace("\"stable\"", "\"..\""), "branch"),
            (APP.replace("\"hello\"", "\"../bin/sh\""), "command"),
            (APP.replace("\"hello\"", "\"/app/../etc/x\""), "command"),
            (APP.replace("\"hello\"", "\"a\\u0000b\""), "command"),
            (APP.replace("command = \"hello\"\n", ""), "command"),
            (
                APP.replace("runtime = \"org.example.Platform/x86_64/1\"\n", ""),
                "runtime",
            ),
            (APP.replace("Platform/x86_64", "Platform/aarch64"), "arch"),
            (APP.replace("network = true", "netwrok = true"), "unknown"),
            (format!("format-version = 2\n{APP}"), "format-version"),
        ];
        for (text, what) in cases {
            let e = Manifest::parse(text.as_bytes(), false);
            assert!(e.is_err(), "accepted ({what}):\n{text}");
        }
        assert!(matches!(
            Manifest::parse(b"id = \"\xff\"", false),
            Err(ManifestError::NotUtf8(_))
        ));
        assert!(Manifest::parse(&vec![b'#'; MAX_MANIFEST_BYTES + 1], false).is_err());
        let rt = "id = \"org.example.Platform\"\nkind = \"runtime\"\nversion = \"1.0.0\"\narch = \"x86_64\"\nbranch = \"1\"\ncommand = \"x\"\n";
        assert!(Manifest::parse(rt.as_bytes(), false).is_err());
        let rt_ok = rt.replace("command = \"x\"\n", "");
        assert!(Manifest::parse(rt_ok.as_bytes(), false).is_ok());
    }

    const EXT: &str = r#"id = "org.appmgr.Hmi.GL.llvmpipe"
kind = "extension"
version = "22.3.6"
arch = "x86_64"
branch = "1"

[extension]
extends = "org.appmgr.Hmi/x86_64/1"
mount-point = "/usr/lib/extensions/gl/llvmpipe"
library-path = ["lib/x86_64-linux-gnu"]

[extension.conditions]
gpu-driver = ["llvmpipe"]

[extension.env]
LIBGL_DRIVERS_PATH = "lib/x86_64-linux-gnu/dri"
"#;

    #[test]
    fn extensions_declare_what_they_extend_and_nothing_an_app_has() {
        let m = Manifest::parse(EXT.as_bytes(), false).unwrap();
        assert_eq!(
            m.ref_name().to_string(),
            "extension/org.appmgr.Hmi.GL.llvmpipe/x86_64/1"
        );
        let info = PayloadInfo {
            sha256: "a".repeat(64),
            size: 1,
            compression: Compression::None,
            installed_size: 1,
            entries: 1,
        };
        let signed = Manifest::parse(&m.to_signed_bytes(info, None), true).unwrap();
        assert_eq!(
            signed.extension, m.extension,
            "[extension] is signed as read"
        );
        let cases: Vec<(String, &str)> = vec![
            (
                EXT.split("[extension]").next().unwrap().to_string(),
                "extension",
            ),
            (
                EXT.replace("kind = \"extension\"", "kind = \"runtime\""),
                "extension",
            ),
            (format!("command = \"x\"\n{EXT}"), "command"),
            (
                EXT.replace(
                    "id = \"org.appmgr.Hmi.GL.llvmpipe\"",
                    "id = \"com.other.GL\"",
                ),
                "below the ID it extends",
            ),
            (
                EXT.replace(
                    "id = \"org.appmgr.Hmi.GL.llvmpipe\"",
                    "id = \"org.appmgr.HmiX.GL\"",
                ),
                "below the ID it extends",
            ),
            (
                EXT.replace("Hmi/x86_64/1", "Hmi/aarch64/1"),
                "extension.extends",
            ),
            (
                EXT.replace("/usr/lib/extensions/gl/llvmpipe", "/etc/gl/x"),
                "extension.mount-point",
            ),
            (
                EXT.replace("LIBGL_DRIVERS_PATH", "LD_PRELOAD"),
                "extension.env",
            ),
            (EXT.replace("gpu-driver", "gpu-drivre"), "gpu-drivre"),
            (
                format!("{EXT}\n[permissions]\nnetwork = true\n"),
                "permissions",
            ),
        ];
        for (text, what) in cases {
            let e = Manifest::parse(text.as_bytes(), false)
                .expect_err(&format!("accepted ({what}):\n{text}"))
                .to_string();
            assert!(e.contains(what), "{what}: {e}");
        }
        let app_with = format!(
            "{APP}\n[extension]\nextends = \"org.a.B/x86_64/1\"\nmount-point = \"/app/a/b\"\n"
        );
        let e = Manifest::parse(app_with.as_bytes(), false).unwrap_err();
        assert!(e.to_string().contains("extension"), "{e}");
    }

    #[test]
    fn unknown_key_error_names_key_and_line() {
        let e = Manifest::parse(format!("{APP}bogus-key = 1\n").as_bytes(), false)
            .unwrap_err()
            .to_string();
        assert!(e.contains("bogus-key") || e.contains("line"), "{e}");
    }
}
