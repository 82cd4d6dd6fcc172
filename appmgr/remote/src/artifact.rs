//! A bundle as an OCI artifact (image-spec 1.1 artifact guidance):
//!
//! - the manifest has `artifactType` [`ARTIFACT_TYPE`] and the empty config;
//! - its one layer is the bundle file, byte for byte, of media type [`LAYER_MEDIA_TYPE`];
//! - its annotations carry the bundle's fields for standard tooling (`org.appmgr.id`,
//!   `.kind`, `.version`, `.arch`, `.branch`, `.runtime`, `.permissions` as JSON,
//!   `.installed-size`) and, for devices, the exact signed manifest
//!   (`org.appmgr.manifest`, UTF-8 TOML) and its signature (`org.appmgr.signature`,
//!   hex). A device trusts only the latter two, after checking the signature, and
//!   requires the layer's size to be the size that signed manifest implies.

use crate::{is_sha256_digest, RemoteError};
use appmgr_bundle::Manifest;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

pub const ARTIFACT_TYPE: &str = "application/vnd.appmgr.bundle.v1";
pub const LAYER_MEDIA_TYPE: &str = "application/vnd.appmgr.bundle.v1.tar";
pub const MANIFEST_MEDIA_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
pub const EMPTY_MEDIA_TYPE: &str = "application/vnd.oci.empty.v1+json";
/// The empty config's content.
pub const EMPTY_JSON: &[u8] = b"{}";

pub const ANN_ID: &str = "org.appmgr.id";
pub const ANN_KIND: &str = "org.appmgr.kind";
pub const ANN_VERSION: &str = "org.appmgr.version";
pub const ANN_ARCH: &str = "org.appmgr.arch";
pub const ANN_BRANCH: &str = "org.appmgr.branch";
pub const ANN_RUNTIME: &str = "org.appmgr.runtime";
pub const ANN_PERMISSIONS: &str = "org.appmgr.permissions";
pub const ANN_INSTALLED_SIZE: &str = "org.appmgr.installed-size";
pub const ANN_MANIFEST: &str = "org.appmgr.manifest";
pub const ANN_SIGNATURE: &str = "org.appmgr.signature";
pub const ANN_TITLE: &str = "org.opencontainers.image.title";
pub const ANN_OCI_VERSION: &str = "org.opencontainers.image.version";

/// The largest image manifest read from a registry.
pub const MAX_IMAGE_MANIFEST: u64 = 256 * 1024;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Descriptor {
    #[serde(rename = "mediaType")]
    pub media_type: String,
    pub digest: String,
    pub size: u64,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct ImageManifest {
    #[serde(rename = "schemaVersion")]
    schema_version: u32,
    #[serde(rename = "mediaType", default)]
    media_type: Option<String>,
    #[serde(rename = "artifactType", default)]
    artifact_type: Option<String>,
    config: Descriptor,
    layers: Vec<Descriptor>,
    #[serde(default)]
    annotations: BTreeMap<String, String>,
}

/// The empty config's descriptor.
pub fn empty_config() -> Descriptor {
    Descriptor {
        media_type: EMPTY_MEDIA_TYPE.into(),
        digest: format!("sha256:{}", sha256_hex(EMPTY_JSON)),
        size: EMPTY_JSON.len() as u64,
        annotations: BTreeMap::new(),
    }
}

pub fn sha256_hex(b: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(b))
}

/// The image manifest that publishes a bundle: `bundle` is the layer's descriptor (the
/// bundle file's digest and size), `title` its file name.
pub fn image_manifest(
    manifest: &Manifest,
    manifest_bytes: &[u8],
    signature: &[u8],
    mut bundle: Descriptor,
    title: &str,
) -> Result<Vec<u8>, RemoteError> {
    let text = std::str::from_utf8(manifest_bytes)
        .map_err(|_| RemoteError::Usage("the bundle's manifest is not UTF-8".into()))?;
    let mut a = BTreeMap::new();
    a.insert(ANN_ID.into(), manifest.id.to_string());
    a.insert(ANN_KIND.into(), manifest.kind.to_string());
    a.insert(ANN_VERSION.into(), manifest.version.to_string());
    a.insert(ANN_OCI_VERSION.into(), manifest.version.to_string());
    a.insert(ANN_ARCH.into(), manifest.arch.to_string());
    a.insert(ANN_BRANCH.into(), manifest.branch.to_string());
    if let Some(r) = &manifest.runtime {
        a.insert(ANN_RUNTIME.into(), r.to_string());
    }
    a.insert(
        ANN_PERMISSIONS.into(),
        serde_json::to_string(&manifest.permissions).unwrap_or_default(),
    );
    if let Some(p) = &manifest.payload {
        a.insert(ANN_INSTALLED_SIZE.into(), p.installed_size.to_string());
    }
    a.insert(ANN_MANIFEST.into(), text.to_string());
    a.insert(ANN_SIGNATURE.into(), hex::encode(signature));
    bundle.media_type = LAYER_MEDIA_TYPE.into();
    bundle
        .annotations
        .insert(ANN_TITLE.into(), title.to_string());
    let m = ImageManifest {
        schema_version: 2,
        media_type: Some(MANIFEST_MEDIA_TYPE.into()),
        artifact_type: Some(ARTIFACT_TYPE.into()),
        config: empty_config(),
        layers: vec![bundle],
        annotations: a,
    };
    Ok(serde_json::to_vec(&m).expect("serializable"))
}

/// What a tag offers, as read from its image manifest: the signed manifest and signature
/// (not checked here) and the bundle layer.
#[derive(Debug, Clone)]
pub struct Listing {
    pub tag: String,
    /// The image manifest's own digest.
    pub digest: String,
    pub manifest_bytes: Vec<u8>,
    pub signature: Vec<u8>,
    pub bundle: Descriptor,
    /// The bundle's file index ([`crate::delta`]), when the publisher pushed one.
    pub index: Option<Descriptor>,
}

/// Parses a tag's image manifest; anything that is not an appmgr bundle artifact of the
/// expected form is refused, naming what is wrong.
/// Parses an image manifest that must be an artifact of `artifact_type` with exactly one
/// layer of `layer_type` (sha256, not empty); returns it and its layer.
fn parse_artifact(
    bytes: &[u8],
    url: &str,
    artifact_type: &str,
    layer_type: &str,
) -> Result<(ImageManifest, Descriptor), RemoteError> {
    let refuse = |reason: String| RemoteError::Refused {
        url: url.to_string(),
        reason,
    };
    let mut m: ImageManifest = serde_json::from_slice(bytes)
        .map_err(|e| refuse(format!("not an OCI image manifest: {e}")))?;
    if m.schema_version != 2 {
        return Err(refuse(format!(
            "schemaVersion {} (expected 2)",
            m.schema_version
        )));
    }
    if m.artifact_type.as_deref() != Some(artifact_type) {
        return Err(refuse(format!(
            "artifactType {:?} is not {artifact_type}",
            m.artifact_type.clone().unwrap_or_default()
        )));
    }
    let [layer] = <[Descriptor; 1]>::try_from(std::mem::take(&mut m.layers)).map_err(|l| {
        refuse(format!(
            "{} layers (an {artifact_type} artifact has one)",
            l.len()
        ))
    })?;
    if layer.media_type != layer_type || !is_sha256_digest(&layer.digest) || layer.size == 0 {
        return Err(refuse(format!(
            "layer {:?} {:?} ({} bytes) is not a {layer_type} layer",
            layer.media_type, layer.digest, layer.size
        )));
    }
    Ok((m, layer))
}

/// The one layer of an artifact of `artifact_type` whose layer is of `layer_type`.
pub fn parse_single_layer(
    bytes: &[u8],
    url: &str,
    artifact_type: &str,
    layer_type: &str,
) -> Result<Descriptor, RemoteError> {
    parse_artifact(bytes, url, artifact_type, layer_type).map(|(_, l)| l)
}

/// An artifact manifest of `artifact_type` with the empty config and one layer.
pub fn single_layer_manifest(artifact_type: &str, layer: Descriptor) -> Vec<u8> {
    let m = ImageManifest {
        schema_version: 2,
        media_type: Some(MANIFEST_MEDIA_TYPE.into()),
        artifact_type: Some(artifact_type.into()),
        config: empty_config(),
        layers: vec![layer],
        annotations: BTreeMap::new(),
    };
    serde_json::to_vec(&m).expect("serializable")
}

/// Parses a tag's image manifest; anything that is not an appmgr bundle artifact of the
/// expected form is refused, naming what is wrong.
pub fn parse_listing(tag: &str, bytes: &[u8], url: &str) -> Result<Listing, RemoteError> {
    let refuse = |reason: String| RemoteError::Refused {
        url: url.to_string(),
        reason,
    };
    let (m, layer) = parse_artifact(bytes, url, ARTIFACT_TYPE, LAYER_MEDIA_TYPE)?;
    let manifest_bytes = m
        .annotations
        .get(ANN_MANIFEST)
        .ok_or_else(|| refuse(format!("no {ANN_MANIFEST} annotation")))?
        .as_bytes()
        .to_vec();
    let signature = m
        .annotations
        .get(ANN_SIGNATURE)
        .and_then(|s| hex::decode(s).ok())
        .filter(|s| s.len() == 64)
        .ok_or_else(|| refuse(format!("no or a malformed {ANN_SIGNATURE} annotation")))?;
    // A malformed index reference is ignored: the index only saves bytes.
    let index = match (
        layer.annotations.get(crate::delta::ANN_INDEX_DIGEST),
        layer
            .annotations
            .get(crate::delta::ANN_INDEX_SIZE)
            .and_then(|s| s.parse::<u64>().ok()),
    ) {
        (Some(d), Some(size)) if is_sha256_digest(d) && size <= crate::delta::MAX_INDEX => {
            Some(Descriptor {
                media_type: crate::delta::INDEX_MEDIA_TYPE.into(),
                digest: d.clone(),
                size,
                annotations: BTreeMap::new(),
            })
        }
        _ => None,
    };
    Ok(Listing {
        tag: tag.to_string(),
        digest: format!("sha256:{}", sha256_hex(bytes)),
        manifest_bytes,
        signature,
        bundle: layer,
        index,
    })
}
