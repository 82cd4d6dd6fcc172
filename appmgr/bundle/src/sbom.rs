//! The software bill of materials a bundle may carry: a CycloneDX 1.5 JSON document
//! listing the packages the bundle was built from.
//!
//! It travels as the member `sbom.cdx.json` between the signature and the payload, and the
//! signed manifest's `[sbom]` table binds it by SHA-256 and size, so the signature covers
//! it like the payload. appmgr reads only what `appmgr sbom` answers from (each
//! component's name, version, purl, licenses and the `appmgr:source-package` property)
//! and refuses a document it could not answer from; the rest of the document is kept byte
//! for byte. Conformance with the CycloneDX 1.5 JSON schema itself is checked in the tests
//! (`appmgr/cli/tests/sbom.rs`) with the schema the CycloneDX project publishes.

use appmgr_types::{has_unsafe_chars, DebVersion};
use serde::{Deserialize, Serialize};

/// The most bytes an SBOM may have: it is read into memory and kept beside the
/// deployment. A runtime of a few hundred Debian packages needs about 200 KiB.
pub const MAX_SBOM_BYTES: u64 = 4 << 20;
/// The most components an SBOM may list.
pub const MAX_COMPONENTS: usize = 20_000;
/// The property holding a Debian binary package's source package.
pub const SOURCE_PROPERTY: &str = "appmgr:source-package";

/// The format of the SBOM member. One for now; the manifest names it so that a second
/// (SPDX) can be added without guessing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SbomFormat {
    #[serde(rename = "cyclonedx-1.5")]
    CycloneDx15,
}

impl SbomFormat {
    /// The name in the manifest (`format = "…"`).
    pub fn as_str(self) -> &'static str {
        match self {
            SbomFormat::CycloneDx15 => "cyclonedx-1.5",
        }
    }
}

/// The manifest's `[sbom]` table, written by `bundle create`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct SbomInfo {
    pub format: SbomFormat,
    /// Lowercase hex SHA-256 of the member's bytes.
    pub sha256: String,
    /// Size in bytes of the member.
    pub size: u64,
}

/// One package the bundle ships, as the SBOM lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct Package {
    pub name: String,
    pub version: Option<String>,
    /// The Debian source package, when the SBOM names one.
    pub source: Option<String>,
    /// License IDs, names or expressions, as listed.
    pub licenses: Vec<String>,
    pub purl: Option<String>,
}

impl Package {
    /// The version as a Debian version, when it is one.
    pub fn deb_version(&self) -> Option<DebVersion> {
        self.version
            .as_deref()
            .and_then(|v| DebVersion::parse(v).ok())
    }
}

/// Why an SBOM document was refused.
#[derive(Debug, thiserror::Error)]
pub enum SbomError {
    #[error("SBOM is larger than {MAX_SBOM_BYTES} bytes")]
    TooLarge,
    #[error("SBOM is not CycloneDX JSON: {0}")]
    Syntax(String),
    #[error("SBOM: {field}: {reason}")]
    Invalid { field: String, reason: String },
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Document {
    bom_format: String,
    spec_version: String,
    #[serde(default)]
    components: Vec<Component>,
}

#[derive(Deserialize)]
struct Component {
    #[serde(rename = "type")]
    kind: String,
    name: String,
    version: Option<String>,
    purl: Option<String>,
    #[serde(default)]
    licenses: Vec<LicenseChoice>,
    #[serde(default)]
    properties: Vec<Property>,
}

#[derive(Deserialize)]
struct LicenseChoice {
    license: Option<License>,
    expression: Option<String>,
}

#[derive(Deserialize)]
struct License {
    id: Option<String>,
    name: Option<String>,
}

#[derive(Deserialize)]
struct Property {
    name: String,
    value: Option<String>,
}

/// CycloneDX 1.5's component types.
const COMPONENT_TYPES: &[&str] = &[
    "application",
    "framework",
    "library",
    "container",
    "platform",
    "operating-system",
    "device",
    "device-driver",
    "firmware",
    "file",
    "machine-learning-model",
    "data",
];

fn invalid(field: String, reason: impl Into<String>) -> SbomError {
    SbomError::Invalid {
        field,
        reason: reason.into(),
    }
}

fn text(field: &str, s: &str) -> Result<String, SbomError> {
    if s.is_empty() || s.len() > 1024 || has_unsafe_chars(s) {
        return Err(invalid(
            field.to_string(),
            "must be 1 to 1024 printable characters",
        ));
    }
    Ok(s.to_string())
}

/// Parses an SBOM and returns its packages, in document order.
pub fn parse(bytes: &[u8]) -> Result<Vec<Package>, SbomError> {
    if bytes.len() as u64 > MAX_SBOM_BYTES {
        return Err(SbomError::TooLarge);
    }
    let doc: Document =
        serde_json::from_slice(bytes).map_err(|e| SbomError::Syntax(e.to_string()))?;
    if doc.bom_format != "CycloneDX" {
        return Err(invalid(
            "bomFormat".into(),
            format!("{:?} is not \"CycloneDX\"", doc.bom_format),
        ));
    }
    if doc.spec_version != "1.5" {
        return Err(invalid(
            "specVersion".into(),
            format!("{:?} is not \"1.5\"", doc.spec_version),
        ));
    }
    if doc.components.len() > MAX_COMPONENTS {
        return Err(invalid(
            "components".into(),
            format!(
                "{} components, at most {MAX_COMPONENTS}",
                doc.components.len()
            ),
        ));
    }
    doc.components
        .into_iter()
        .enumerate()
        .map(|(i, c)| {
            let at = |f: &str| format!("components[{i}].{f}");
            if !COMPONENT_TYPES.contains(&c.kind.as_str()) {
                return Err(invalid(
                    at("type"),
                    format!("{:?} is not a CycloneDX 1.5 component type", c.kind),
                ));
            }
            let mut licenses = Vec::new();
            for (k, l) in c.licenses.into_iter().enumerate() {
                let value = match (l.license, l.expression) {
                    (Some(License { id: Some(v), .. }), None)
                    | (Some(License { name: Some(v), .. }), None)
                    | (None, Some(v)) => v,
                    _ => {
                        return Err(invalid(
                            at(&format!("licenses[{k}]")),
                            "needs license.id, license.name or expression",
                        ))
                    }
                };
                licenses.push(text(&at(&format!("licenses[{k}]")), &value)?);
            }
            let mut source = None;
            for p in &c.properties {
                if p.name == SOURCE_PROPERTY {
                    let v = p.value.as_deref().unwrap_or_default();
                    source = Some(text(&at("properties"), v)?);
                }
            }
            Ok(Package {
                name: text(&at("name"), &c.name)?,
                version: c.version.map(|v| text(&at("version"), &v)).transpose()?,
                source,
                licenses,
                purl: c.purl.map(|v| text(&at("purl"), &v)).transpose()?,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC: &str = r#"{
  "bomFormat": "CycloneDX", "specVersion": "1.5", "version": 1,
  "components": [
    {"type": "library", "name": "libc6", "version": "2.36-9+deb12u4",
     "purl": "pkg:deb/debian/libc6@2.36-9%2Bdeb12u4?arch=amd64&distro=debian-12",
     "licenses": [{"license": {"name": "LGPL-2.1+"}}],
     "properties": [{"name": "appmgr:source-package", "value": "glibc"}]},
    {"type": "application", "name": "busybox", "version": "1:1.35.0-4",
     "licenses": [{"expression": "GPL-2.0-only"}, {"license": {"id": "MIT"}}]}
  ]
}"#;

    #[test]
    fn reads_packages() {
        let p = parse(DOC.as_bytes()).unwrap();
        assert_eq!(p.len(), 2);
        assert_eq!(p[0].name, "libc6");
        assert_eq!(p[0].source.as_deref(), Some("glibc"));
        assert_eq!(p[0].licenses, ["LGPL-2.1+"]);
        assert!(p[0]
            .purl
            .as_deref()
            .unwrap()
            .starts_with("pkg:deb/debian/libc6@"));
        assert_eq!(p[1].licenses, ["GPL-2.0-only", "MIT"]);
        assert_eq!(p[1].deb_version().unwrap().epoch(), 1);
        assert_eq!(p[1].source, None);
    }

    #[test]
    fn the_format_name_is_the_manifest_value() {
        let f = SbomFormat::CycloneDx15;
        assert_eq!(serde_json::to_value(f).unwrap(), f.as_str());
    }

    #[test]
    fn refuses_what_it_cannot_answer_from() {
        let cases = [
            (DOC.replace("\"CycloneDX\"", "\"SPDX\""), "bomFormat"),
            (DOC.replace("\"1.5\"", "\"1.4\""), "specVersion"),
            (
                DOC.replace("\"library\"", "\"gadget\""),
                "components[0].type",
            ),
            (
                DOC.replace("\"libc6\",", "\"lib\\u0007c\","),
                "components[0].name",
            ),
            (
                DOC.replace("{\"expression\": \"GPL-2.0-only\"}", "{}"),
                "components[1].licenses[0]",
            ),
            (DOC.replace("\"glibc\"", "\"\""), "components[0].properties"),
            (
                DOC.replace("\"components\"", "\"components\": 1, \"x\""),
                "Syntax",
            ),
            (DOC[..DOC.len() - 3].to_string(), "Syntax"),
        ];
        for (doc, what) in cases {
            let e = parse(doc.as_bytes()).expect_err(what);
            let msg = format!("{e:?} {e}");
            assert!(msg.contains(what), "{what}: {msg}");
        }
        let big = vec![b' '; MAX_SBOM_BYTES as usize + 1];
        assert!(matches!(parse(&big), Err(SbomError::TooLarge)));
    }
}
