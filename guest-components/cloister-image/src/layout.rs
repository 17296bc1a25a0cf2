//! Tenant-side tooling on OCI image layouts (directories as `skopeo copy … oci:DIR:TAG` writes):
//! re-wrapping encrypted layers from JWE recipients to CoCo's `provider.attestation-agent`
//! packet, whose key-encryption key is a key-broker resource. Debian's skopeo encrypts with JWE
//! but cannot call key providers; this turns its output into what a confidential guest unwraps
//! through the key broker. Layer blobs and the config stay byte-identical; the manifest and the
//! index are rewritten.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use cloister_ocicrypt::{JwePrivateKey, attestation_agent_annotation};
use serde_json::Value;

use crate::digest::Digest;
use crate::error::ImageError;

const JWE_ANNOTATION: &str = "org.opencontainers.image.enc.keys.jwe";
const AA_ANNOTATION: &str = "org.opencontainers.image.enc.keys.provider.attestation-agent";
const REF_NAME: &str = "org.opencontainers.image.ref.name";

fn cfg(why: impl Into<String>) -> ImageError {
    ImageError::Config(why.into())
}

fn read_json(p: &Path) -> Result<Value, ImageError> {
    let b = fs::read(p).map_err(|e| ImageError::io(p, e))?;
    serde_json::from_slice(&b).map_err(|e| cfg(format!("{}: {e}", p.display())))
}

fn blob_path(layout: &Path, d: &Digest) -> std::path::PathBuf {
    layout.join("blobs/sha256").join(d.hex())
}

fn write_blob(layout: &Path, bytes: &[u8]) -> Result<Digest, ImageError> {
    let d = Digest::of(bytes);
    let p = blob_path(layout, &d);
    fs::write(&p, bytes).map_err(|e| ImageError::io(&p, e))?;
    Ok(d)
}

/// Re-wraps every JWE-encrypted layer of `layout:tag` for the attestation-agent key provider:
/// the private options are unwrapped with `keys`, wrapped with `kek` (AES-256-GCM) under the
/// resource id `kid` (`kbs:///repo/type/tag`), and the JWE recipients are removed. Returns the
/// new manifest digest and the number of layers re-wrapped.
pub fn rewrap_to_attestation_agent(
    layout: &Path,
    tag: &str,
    keys: &[JwePrivateKey],
    kek: &[u8; 32],
    kid: &str,
) -> Result<(Digest, usize), ImageError> {
    let index_path = layout.join("index.json");
    let mut index = read_json(&index_path)?;
    let entries =
        index.get_mut("manifests").and_then(Value::as_array_mut).ok_or_else(|| cfg("index.json has no manifests"))?;
    let entry = entries
        .iter_mut()
        .find(|m| {
            m.pointer(&format!("/annotations/{}", REF_NAME.replace('/', "~1"))).and_then(Value::as_str) == Some(tag)
        })
        .ok_or_else(|| cfg(format!("no image tagged {tag:?} in {}", layout.display())))?;
    let old = Digest::parse(entry.get("digest").and_then(Value::as_str).unwrap_or_default())?;
    let mut manifest = read_json(&blob_path(layout, &old))?;
    let layers =
        manifest.get_mut("layers").and_then(Value::as_array_mut).ok_or_else(|| cfg("manifest has no layers"))?;
    let mut count = 0;
    for l in layers.iter_mut() {
        let Some(ann) = l.get_mut("annotations").and_then(Value::as_object_mut) else { continue };
        let Some(jwe) = ann.get(JWE_ANNOTATION).and_then(Value::as_str).map(str::to_owned) else { continue };
        let mut opts = None;
        for part in jwe.split(',') {
            let blob = B64.decode(part.trim()).map_err(|_| cfg("a JWE annotation part is not base64"))?;
            if let Ok(o) = cloister_ocicrypt::jwe::decrypt(&blob, keys) {
                opts = Some(o);
                break;
            }
        }
        let opts = opts.ok_or_else(|| cfg("none of the given keys opens a layer's JWE recipients"))?;
        let packet = attestation_agent_annotation(kek, kid, &opts)
            .map_err(|e| cfg(format!("wrapping for the attestation agent: {e}")))?;
        ann.remove(JWE_ANNOTATION);
        ann.insert(AA_ANNOTATION.to_owned(), Value::String(packet));
        count += 1;
    }
    let bytes = serde_json::to_vec(&manifest).map_err(|e| cfg(e.to_string()))?;
    let new = write_blob(layout, &bytes)?;
    let obj = entry.as_object_mut().ok_or_else(|| cfg("index entry is not an object"))?;
    obj.insert("digest".into(), Value::String(new.to_string()));
    obj.insert("size".into(), Value::from(bytes.len()));
    let index_bytes = serde_json::to_vec(&index).map_err(|e| cfg(e.to_string()))?;
    fs::write(&index_path, index_bytes).map_err(|e| ImageError::io(&index_path, e))?;
    Ok((new, count))
}

/// The annotations of a layout's layers (for inspection and tests).
pub fn layer_annotations(layout: &Path, tag: &str) -> Result<Vec<BTreeMap<String, String>>, ImageError> {
    let index = read_json(&layout.join("index.json"))?;
    let entry = index
        .get("manifests")
        .and_then(Value::as_array)
        .and_then(|ms| {
            ms.iter().find(|m| {
                m.pointer(&format!("/annotations/{}", REF_NAME.replace('/', "~1"))).and_then(Value::as_str) == Some(tag)
            })
        })
        .ok_or_else(|| cfg(format!("no image tagged {tag:?}")))?;
    let d = Digest::parse(entry.get("digest").and_then(Value::as_str).unwrap_or_default())?;
    let manifest = read_json(&blob_path(layout, &d))?;
    Ok(manifest
        .get("layers")
        .and_then(Value::as_array)
        .map(|ls| {
            ls.iter()
                .map(|l| {
                    serde_json::from_value(l.get("annotations").cloned().unwrap_or(Value::Null)).unwrap_or_default()
                })
                .collect()
        })
        .unwrap_or_default())
}
