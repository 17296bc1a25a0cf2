//! OCI and Docker schema-2 manifests, indexes and image configs: the fields the guest uses,
//! parsed strictly enough that a registry cannot smuggle in something the pull ignores.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::digest::Digest;
use crate::error::ImageError;

/// OCI image manifest.
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// OCI image index.
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// Docker schema-2 manifest.
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// Docker manifest list.
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
/// What the pull asks registries for.
pub const ACCEPT: &str = "application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.v2+json, application/vnd.docker.distribution.manifest.list.v2+json";
/// The largest manifest, index or config accepted (containers-image uses 4 MiB too).
pub const MAX_MANIFEST: usize = 4 << 20;

/// A content descriptor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Descriptor {
    /// Media type.
    #[serde(rename = "mediaType")]
    pub media_type: String,
    /// Content digest.
    pub digest: Digest,
    /// Size in bytes.
    pub size: u64,
    /// Annotations (ocicrypt keys live here).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    /// Platform, in indexes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
    /// Alternative download locations: refused (the guest fetches only from the registry).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub urls: Option<Vec<String>>,
}

/// An index entry's platform.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Platform {
    /// e.g. `amd64`.
    pub architecture: String,
    /// e.g. `linux`.
    pub os: String,
    /// e.g. `v8` for arm64.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}

impl Platform {
    /// The platform this binary runs on, in OCI spelling.
    pub fn host() -> Self {
        let architecture = match std::env::consts::ARCH {
            "x86_64" => "amd64",
            "aarch64" => "arm64",
            "s390x" => "s390x",
            "powerpc64" => "ppc64le",
            other => other,
        };
        Self { architecture: architecture.to_owned(), os: "linux".to_owned(), variant: None }
    }
}

/// An image manifest (OCI or Docker schema 2).
#[derive(Debug, Clone, Deserialize)]
pub struct Manifest {
    /// 2.
    #[serde(rename = "schemaVersion")]
    pub schema_version: u32,
    /// Media type, if stated in the body.
    #[serde(rename = "mediaType", default)]
    pub media_type: Option<String>,
    /// The config blob.
    pub config: Descriptor,
    /// Layers, bottom first.
    pub layers: Vec<Descriptor>,
}

/// An image index or Docker manifest list.
#[derive(Debug, Clone, Deserialize)]
pub struct Index {
    /// 2.
    #[serde(rename = "schemaVersion")]
    pub schema_version: u32,
    /// The per-platform manifests.
    pub manifests: Vec<Descriptor>,
}

/// The parts of the image config the guest uses.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct ImageConfig {
    /// Architecture.
    #[serde(default)]
    pub architecture: String,
    /// OS.
    #[serde(default)]
    pub os: String,
    /// The runtime configuration (entrypoint, env, …), kept as JSON.
    #[serde(default)]
    pub config: serde_json::Value,
    /// Layer diff ids.
    pub rootfs: RootFs,
}

/// `rootfs` of an image config.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct RootFs {
    /// `layers`.
    #[serde(rename = "type")]
    pub kind: String,
    /// SHA-256 of each uncompressed layer tar.
    pub diff_ids: Vec<Digest>,
}

/// What a manifest request returned.
#[derive(Debug, Clone)]
pub enum Fetched {
    /// A single-platform manifest.
    Manifest(Box<Manifest>),
    /// An index to choose from.
    Index(Index),
}

fn is_layer_type(t: &str) -> bool {
    let base = t.strip_suffix("+encrypted").unwrap_or(t);
    matches!(
        base,
        "application/vnd.oci.image.layer.v1.tar"
            | "application/vnd.oci.image.layer.v1.tar+gzip"
            | "application/vnd.oci.image.layer.v1.tar+zstd"
            | "application/vnd.oci.image.layer.nondistributable.v1.tar"
            | "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
            | "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd"
            | "application/vnd.docker.image.rootfs.diff.tar.gzip"
            | "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"
    )
}

/// Parses a manifest or index body, using the Content-Type and the body's own `mediaType`;
/// every layer must be an image layer type this crate can unpack.
pub fn parse_manifest(content_type: Option<&str>, body: &[u8]) -> Result<Fetched, ImageError> {
    parse(content_type, body, true)
}

/// Like [`parse_manifest`] but layers may have any media type (artifacts such as cosign
/// signature manifests, whose "layers" are payloads).
pub fn parse_manifest_any(content_type: Option<&str>, body: &[u8]) -> Result<Fetched, ImageError> {
    parse(content_type, body, false)
}

fn parse(content_type: Option<&str>, body: &[u8], image_layers: bool) -> Result<Fetched, ImageError> {
    let bad = |why: String| ImageError::BadManifest(why);
    if body.len() > MAX_MANIFEST {
        return Err(bad(format!("{} bytes is larger than the {MAX_MANIFEST}-byte limit", body.len())));
    }
    let v: serde_json::Value = serde_json::from_slice(body).map_err(|e| bad(format!("not JSON: {e}")))?;
    let body_type = v.get("mediaType").and_then(|m| m.as_str()).map(str::to_owned);
    let ct = content_type.map(|c| c.split(';').next().unwrap_or(c).trim().to_owned());
    if let (Some(b), Some(c)) = (&body_type, &ct)
        && b != c
        && [OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_LIST].contains(&c.as_str())
    {
        return Err(bad(format!("body says {b} but the registry sent {c}")));
    }
    let kind = body_type.or(ct).unwrap_or_default();
    let is_index = match kind.as_str() {
        OCI_INDEX | DOCKER_LIST => true,
        OCI_MANIFEST | DOCKER_MANIFEST => false,
        // OCI manifests may omit mediaType: decide by shape.
        _ if v.get("manifests").is_some() => true,
        _ if v.get("config").is_some() => false,
        other => return Err(bad(format!("unsupported manifest type {other:?} (schema 1 is not supported)"))),
    };
    if is_index {
        let idx: Index = serde_json::from_value(v).map_err(|e| bad(format!("index: {e}")))?;
        if idx.schema_version != 2 {
            return Err(bad(format!("schemaVersion {}", idx.schema_version)));
        }
        Ok(Fetched::Index(idx))
    } else {
        let m: Manifest = serde_json::from_value(v).map_err(|e| bad(format!("manifest: {e}")))?;
        if m.schema_version != 2 {
            return Err(bad(format!("schemaVersion {}", m.schema_version)));
        }
        for l in &m.layers {
            if image_layers && !is_layer_type(&l.media_type) {
                return Err(bad(format!("layer {} has unsupported media type {:?}", l.digest, l.media_type)));
            }
            if l.urls.is_some() {
                return Err(bad(format!("layer {} names external URLs, which the guest does not fetch", l.digest)));
            }
        }
        Ok(Fetched::Manifest(Box::new(m)))
    }
}

/// Picks the entry for `want` from an index (exact os/architecture; variant if both state one).
pub fn select_platform<'a>(idx: &'a Index, want: &Platform) -> Result<&'a Descriptor, ImageError> {
    idx.manifests
        .iter()
        .filter(|d| d.media_type == OCI_MANIFEST || d.media_type == DOCKER_MANIFEST)
        .find(|d| {
            d.platform.as_ref().is_some_and(|p| {
                p.os == want.os
                    && p.architecture == want.architecture
                    && (want.variant.is_none() || p.variant.is_none() || p.variant == want.variant)
            })
        })
        .ok_or_else(|| ImageError::NoPlatform {
            want: format!("{}/{}", want.os, want.architecture),
            have: idx
                .manifests
                .iter()
                .filter_map(|d| d.platform.as_ref().map(|p| format!("{}/{}", p.os, p.architecture)))
                .collect(),
        })
}

/// How a layer's plaintext is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// Plain tar.
    None,
    /// gzip.
    Gzip,
    /// zstd.
    Zstd,
}

/// A layer media type without `+encrypted` → its compression.
pub fn compression_of(media_type: &str) -> Compression {
    let base = media_type.strip_suffix("+encrypted").unwrap_or(media_type);
    if base.ends_with("+gzip") || base.ends_with(".tar.gzip") {
        Compression::Gzip
    } else if base.ends_with("+zstd") {
        Compression::Zstd
    } else {
        Compression::None
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn d(c: char) -> String {
        format!("sha256:{}", c.to_string().repeat(64))
    }

    #[test]
    fn manifest_and_index() {
        let m = format!(
            r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{}","size":2}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar+zstd+encrypted","digest":"{}","size":3}}]}}"#,
            d('a'),
            d('b')
        );
        let Fetched::Manifest(parsed) = parse_manifest(Some(OCI_MANIFEST), m.as_bytes()).unwrap() else { panic!() };
        assert_eq!(compression_of(&parsed.layers[0].media_type), Compression::Zstd);
        // A Content-Type contradicting the body's own mediaType.
        let err = parse_manifest(Some(OCI_INDEX), m.as_bytes()).unwrap_err();
        assert!(err.to_string().contains("but the registry sent"), "{err}");
        let idx = format!(
            r#"{{"schemaVersion":2,"manifests":[{{"mediaType":"{OCI_MANIFEST}","digest":"{}","size":1,"platform":{{"architecture":"arm64","os":"linux"}}}},{{"mediaType":"{OCI_MANIFEST}","digest":"{}","size":1,"platform":{{"architecture":"amd64","os":"linux"}}}}]}}"#,
            d('c'),
            d('e')
        );
        let Fetched::Index(i) = parse_manifest(None, idx.as_bytes()).unwrap() else { panic!() };
        let amd = Platform { architecture: "amd64".into(), os: "linux".into(), variant: None };
        assert_eq!(select_platform(&i, &amd).unwrap().digest.to_string(), d('e'));
        let s390 = Platform { architecture: "s390x".into(), os: "linux".into(), variant: None };
        assert!(matches!(select_platform(&i, &s390), Err(ImageError::NoPlatform { .. })));
    }

    #[test]
    fn refuses_foreign_urls_and_odd_layers() {
        let m = format!(
            r#"{{"schemaVersion":2,"config":{{"mediaType":"x","digest":"{}","size":2}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"{}","size":3,"urls":["http://x"]}}]}}"#,
            d('a'),
            d('b')
        );
        assert!(parse_manifest(None, m.as_bytes()).is_err());
        let m = m.replace(r#","urls":["http://x"]"#, "").replace("layer.v1.tar\"", "layer.v1.tar+lz4\"");
        assert!(parse_manifest(None, m.as_bytes()).is_err());
        assert!(parse_manifest(None, br#"{"schemaVersion":1,"fsLayers":[]}"#).is_err());
    }
}
