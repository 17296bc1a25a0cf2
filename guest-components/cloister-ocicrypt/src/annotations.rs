//! Layer descriptors: the `+encrypted` media type, the `enc.pubopts` and `enc.keys.*` annotations,
//! and the public and private cipher options JSON.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::error::OcicryptError;
use crate::util::{GoBytes, STD, std_b64};
use base64::Engine;

/// The media-type suffix of encrypted layers.
pub const ENCRYPTED_SUFFIX: &str = "+encrypted";
/// The annotation holding the public options.
pub const PUBOPTS_ANNOTATION: &str = "org.opencontainers.image.enc.pubopts";
/// The prefix of the key-wrapping annotations (`…keys.jwe`, `…keys.provider.<name>`, …).
pub const KEYS_ANNOTATION_PREFIX: &str = "org.opencontainers.image.enc.keys.";
/// The only layer cipher ocicrypt defines.
pub const AES_256_CTR_HMAC_SHA256: &str = "AES_256_CTR_HMAC_SHA256";

/// A key-wrapping scheme, from the annotation key's suffix.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum KeyScheme {
    /// `jwe`: JWE recipients.
    Jwe,
    /// `provider.<name>`: a key provider.
    Provider(String),
    /// Anything else (`pkcs7`, `pgp`, `pkcs11`, …): kept, but this crate cannot unwrap it.
    Other(String),
}

impl KeyScheme {
    fn from_suffix(suffix: &str) -> Self {
        if suffix == "jwe" {
            KeyScheme::Jwe
        } else if let Some(name) = suffix.strip_prefix("provider.") {
            KeyScheme::Provider(name.to_owned())
        } else {
            KeyScheme::Other(suffix.to_owned())
        }
    }

    /// Whether this crate can unwrap keys of this scheme (given a key or provider).
    pub fn is_supported(&self) -> bool {
        !matches!(self, KeyScheme::Other(_))
    }

    /// The annotation key for this scheme.
    pub fn annotation(&self) -> String {
        format!("{KEYS_ANNOTATION_PREFIX}{self}")
    }
}

impl fmt::Display for KeyScheme {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyScheme::Jwe => f.write_str("jwe"),
            KeyScheme::Provider(n) => write!(f, "provider.{n}"),
            KeyScheme::Other(s) => f.write_str(s),
        }
    }
}

/// The wrapped copies of the layer key under one scheme: each comma-separated part of the
/// annotation, base64-decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WrappedKeys {
    /// The scheme.
    pub scheme: KeyScheme,
    /// The decoded blobs (a JWE JSON, an annotation packet, …), in annotation order.
    pub blobs: Vec<Vec<u8>>,
}

/// The public options (`enc.pubopts`): the cipher and the HMAC of the ciphertext.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicOptions {
    /// Always [`AES_256_CTR_HMAC_SHA256`] once parsed.
    pub cipher: String,
    /// HMAC-SHA256 of the whole ciphertext, keyed with the symmetric key.
    pub hmac: [u8; 32],
    /// Extra public cipher options (empty in practice), by name.
    pub cipher_options: BTreeMap<String, Vec<u8>>,
}

#[derive(Serialize, Deserialize)]
struct PublicOptionsJson {
    #[serde(default)]
    cipher: String,
    #[serde(default)]
    hmac: Option<GoBytes>,
    #[serde(default)]
    cipheroptions: Option<BTreeMap<String, GoBytes>>,
}

impl PublicOptions {
    /// Parses the public options JSON (the base64-decoded annotation).
    pub fn from_json(json: &[u8]) -> Result<Self, OcicryptError> {
        let raw: PublicOptionsJson =
            serde_json::from_slice(json).map_err(|e| OcicryptError::Options(format!("public options: {e}")))?;
        if raw.cipher != AES_256_CTR_HMAC_SHA256 {
            return Err(OcicryptError::UnsupportedCipher(raw.cipher));
        }
        let hmac = raw.hmac.ok_or_else(|| OcicryptError::Options("public options have no hmac".into()))?;
        let hmac: [u8; 32] = hmac
            .as_bytes()
            .try_into()
            .map_err(|_| OcicryptError::Options(format!("public options hmac is {} bytes, not 32", hmac.0.len())))?;
        let cipher_options =
            raw.cipheroptions.unwrap_or_default().into_iter().map(|(k, v)| (k, v.as_bytes().to_vec())).collect();
        Ok(PublicOptions { cipher: raw.cipher, hmac, cipher_options })
    }

    /// The JSON exactly as skopeo writes it: `{"cipher":…,"hmac":…,"cipheroptions":{}}`.
    pub fn to_json(&self) -> String {
        let raw = PublicOptionsJson {
            cipher: self.cipher.clone(),
            hmac: Some(GoBytes::new(self.hmac.to_vec())),
            cipheroptions: Some(
                self.cipher_options.iter().map(|(k, v)| (k.clone(), GoBytes::new(v.clone()))).collect(),
            ),
        };
        serde_json::to_string(&raw).unwrap_or_default()
    }

    /// The annotation value (standard base64 of [`PublicOptions::to_json`]).
    pub fn to_annotation(&self) -> String {
        STD.encode(self.to_json())
    }
}

/// The private options: what every key wrapper protects.
#[derive(Clone)]
pub struct PrivateOptions {
    /// The AES-256 key (also the HMAC key).
    pub symkey: Zeroizing<[u8; 32]>,
    /// The initial counter block.
    pub nonce: [u8; 16],
    /// `sha256:<64 lower-case hex>` of the plaintext (the compressed layer).
    pub digest: String,
}

impl PartialEq for PrivateOptions {
    /// Compares the key in constant time.
    fn eq(&self, other: &Self) -> bool {
        crate::util::ct_eq(self.symkey.as_ref(), other.symkey.as_ref())
            && self.nonce == other.nonce
            && self.digest == other.digest
    }
}

impl Eq for PrivateOptions {}

impl fmt::Debug for PrivateOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PrivateOptions").field("digest", &self.digest).finish_non_exhaustive()
    }
}

#[derive(Serialize, Deserialize)]
struct PrivateOptionsJson {
    #[serde(default)]
    symkey: Option<GoBytes>,
    #[serde(default)]
    digest: String,
    #[serde(default)]
    cipheroptions: Option<BTreeMap<String, GoBytes>>,
}

/// Whether `d` is `sha256:` and 64 lower-case hex digits.
pub fn is_sha256_digest(d: &str) -> bool {
    d.strip_prefix("sha256:")
        .is_some_and(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)))
}

impl PrivateOptions {
    /// Parses `{"symkey":…,"digest":…,"cipheroptions":{"nonce":…}}`.
    pub fn from_json(json: &[u8]) -> Result<Self, OcicryptError> {
        let raw: PrivateOptionsJson = serde_json::from_slice(json).map_err(|e| {
            OcicryptError::Options(format!("private options are not the expected JSON ({})", e.classify_name()))
        })?;
        let symkey = raw.symkey.ok_or_else(|| OcicryptError::Options("private options have no symkey".into()))?;
        if symkey.0.len() != 32 {
            return Err(OcicryptError::Options(format!("symkey is {} bytes, not 32", symkey.0.len())));
        }
        let mut key = Zeroizing::new([0u8; 32]);
        key.copy_from_slice(symkey.as_bytes());
        let opts = raw.cipheroptions.unwrap_or_default();
        let nonce = opts.get("nonce").ok_or_else(|| OcicryptError::Options("private options have no nonce".into()))?;
        let nonce: [u8; 16] = nonce
            .as_bytes()
            .try_into()
            .map_err(|_| OcicryptError::Options(format!("nonce is {} bytes, not 16", nonce.0.len())))?;
        if !is_sha256_digest(&raw.digest) {
            return Err(OcicryptError::Options(format!("digest {:?} is not sha256:<64 hex>", truncate(&raw.digest))));
        }
        Ok(PrivateOptions { symkey: key, nonce, digest: raw.digest })
    }

    /// The JSON as Go's ocicrypt writes it.
    pub fn to_json(&self) -> Zeroizing<Vec<u8>> {
        let raw = PrivateOptionsJson {
            symkey: Some(GoBytes::new(self.symkey.to_vec())),
            digest: self.digest.clone(),
            cipheroptions: Some(BTreeMap::from([("nonce".to_owned(), GoBytes::new(self.nonce.to_vec()))])),
        };
        Zeroizing::new(serde_json::to_vec(&raw).unwrap_or_default())
    }
}

trait ClassifyName {
    fn classify_name(&self) -> &'static str;
}

impl ClassifyName for serde_json::Error {
    // Private options are secret: report the error class and position, not serde's message (which
    // can quote the input).
    fn classify_name(&self) -> &'static str {
        match self.classify() {
            serde_json::error::Category::Io => "I/O",
            serde_json::error::Category::Syntax => "syntax error",
            serde_json::error::Category::Data => "wrong member types",
            serde_json::error::Category::Eof => "truncated",
        }
    }
}

fn truncate(s: &str) -> String {
    s.chars().take(80).collect()
}

/// An encrypted layer's descriptor, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncryptedLayer {
    /// The media type without `+encrypted` (e.g. `application/vnd.oci.image.layer.v1.tar+gzip`).
    pub media_type: String,
    /// The public options.
    pub public_options: PublicOptions,
    /// Every key-wrapping annotation, in annotation-key order.
    pub keys: Vec<WrappedKeys>,
}

impl EncryptedLayer {
    /// Parses a layer descriptor's media type and annotations. `Ok(None)` when the media type does
    /// not end with `+encrypted` (a plain layer).
    pub fn parse(media_type: &str, annotations: &BTreeMap<String, String>) -> Result<Option<Self>, OcicryptError> {
        let Some(inner) = media_type.strip_suffix(ENCRYPTED_SUFFIX) else {
            return Ok(None);
        };
        let pub_b64 = annotations.get(PUBOPTS_ANNOTATION).ok_or(OcicryptError::MissingPublicOptions)?;
        let pub_json = std_b64("value", pub_b64)
            .map_err(|reason| OcicryptError::Annotation { annotation: PUBOPTS_ANNOTATION.into(), reason })?;
        let public_options = PublicOptions::from_json(&pub_json)?;
        let mut keys = Vec::new();
        for (k, v) in annotations {
            let Some(suffix) = k.strip_prefix(KEYS_ANNOTATION_PREFIX) else { continue };
            let scheme = KeyScheme::from_suffix(suffix);
            let mut blobs = Vec::new();
            for (i, part) in v.split(',').enumerate() {
                let part = part.trim();
                if part.is_empty() {
                    continue;
                }
                let blob = std_b64(&format!("part {i}"), part)
                    .map_err(|reason| OcicryptError::Annotation { annotation: k.clone(), reason })?;
                blobs.push(blob);
            }
            if blobs.is_empty() {
                tracing::debug!(annotation = %k, "empty key annotation ignored");
                continue;
            }
            keys.push(WrappedKeys { scheme, blobs });
        }
        tracing::debug!(media_type = inner, recipients = %summarize(&keys), "encrypted layer");
        Ok(Some(EncryptedLayer { media_type: inner.to_owned(), public_options, keys }))
    }

    /// The wrapped keys under `scheme`, if the layer has that annotation.
    pub fn keys_for(&self, scheme: &KeyScheme) -> Option<&WrappedKeys> {
        self.keys.iter().find(|k| &k.scheme == scheme)
    }

    /// A short description of the recipients, e.g. `jwe (2), provider.attestation-agent (1)`.
    pub fn recipients_summary(&self) -> String {
        summarize(&self.keys)
    }
}

fn summarize(keys: &[WrappedKeys]) -> String {
    if keys.is_empty() {
        return "none".into();
    }
    keys.iter()
        .map(|k| {
            let unsupported = if k.scheme.is_supported() { "" } else { ", unsupported" };
            format!("{} ({}{unsupported})", k.scheme, k.blobs.len())
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Builds the annotations of an encrypted layer: `pubopts` plus each scheme's blobs joined by `,`.
pub fn build_annotations(public: &PublicOptions, keys: &[WrappedKeys]) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    out.insert(PUBOPTS_ANNOTATION.to_owned(), public.to_annotation());
    for k in keys {
        let v = k.blobs.iter().map(|b| STD.encode(b)).collect::<Vec<_>>().join(",");
        out.insert(k.scheme.annotation(), v);
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const SKOPEO_PUBOPTS: &str = r#"{"cipher":"AES_256_CTR_HMAC_SHA256","hmac":"HRiz3BNNiIO8VMbp14b3NwCwWMWGdqROuhN22JCkY1s=","cipheroptions":{}}"#;

    fn ann(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

    #[test]
    fn plain_layer_is_none() {
        assert_eq!(
            EncryptedLayer::parse("application/vnd.oci.image.layer.v1.tar+gzip", &BTreeMap::new()).unwrap(),
            None
        );
    }

    #[test]
    fn parses_skopeo_shape() {
        let a = ann(&[
            (PUBOPTS_ANNOTATION, &STD.encode(SKOPEO_PUBOPTS)),
            ("org.opencontainers.image.enc.keys.jwe", &format!("{},{}", STD.encode("a"), STD.encode("bb"))),
            ("org.opencontainers.image.enc.keys.provider.attestation-agent", &STD.encode("{}")),
            ("org.opencontainers.image.enc.keys.pgp", &STD.encode("x")),
            ("org.opencontainers.image.ref.name", "v1"),
        ]);
        let l = EncryptedLayer::parse("application/vnd.oci.image.layer.v1.tar+zstd+encrypted", &a).unwrap().unwrap();
        assert_eq!(l.media_type, "application/vnd.oci.image.layer.v1.tar+zstd");
        assert_eq!(l.public_options.cipher, AES_256_CTR_HMAC_SHA256);
        assert_eq!(l.public_options.hmac[0], 0x1d);
        assert_eq!(l.keys.len(), 3);
        assert_eq!(l.keys_for(&KeyScheme::Jwe).unwrap().blobs, vec![b"a".to_vec(), b"bb".to_vec()]);
        assert!(l.keys_for(&KeyScheme::Provider("attestation-agent".into())).is_some());
        assert!(!l.keys_for(&KeyScheme::Other("pgp".into())).unwrap().scheme.is_supported());
        assert_eq!(l.recipients_summary(), "jwe (2), pgp (1, unsupported), provider.attestation-agent (1)");
        // Re-emitting pubopts gives skopeo's bytes.
        assert_eq!(l.public_options.to_json(), SKOPEO_PUBOPTS);
    }

    #[test]
    fn rejects_bad_pubopts() {
        let mt = "application/vnd.oci.image.layer.v1.tar+encrypted";
        assert!(matches!(EncryptedLayer::parse(mt, &BTreeMap::new()), Err(OcicryptError::MissingPublicOptions)));
        let other = STD.encode(r#"{"cipher":"AES_128_GCM","hmac":"","cipheroptions":{}}"#);
        assert!(matches!(
            EncryptedLayer::parse(mt, &ann(&[(PUBOPTS_ANNOTATION, &other)])),
            Err(OcicryptError::UnsupportedCipher(c)) if c == "AES_128_GCM"
        ));
        let short = STD.encode(r#"{"cipher":"AES_256_CTR_HMAC_SHA256","hmac":"AAAA","cipheroptions":{}}"#);
        assert!(matches!(
            EncryptedLayer::parse(mt, &ann(&[(PUBOPTS_ANNOTATION, &short)])),
            Err(OcicryptError::Options(_))
        ));
        assert!(matches!(
            EncryptedLayer::parse(mt, &ann(&[(PUBOPTS_ANNOTATION, "!!")])),
            Err(OcicryptError::Annotation { .. })
        ));
        let good = STD.encode(SKOPEO_PUBOPTS);
        assert!(matches!(
            EncryptedLayer::parse(
                mt,
                &ann(&[(PUBOPTS_ANNOTATION, &good), ("org.opencontainers.image.enc.keys.jwe", "a,@")])
            ),
            Err(OcicryptError::Annotation { .. })
        ));
    }

    #[test]
    fn private_options_round_trip_and_validation() {
        let p = PrivateOptions {
            symkey: Zeroizing::new([7; 32]),
            nonce: [9; 16],
            digest: format!("sha256:{}", "a".repeat(64)),
        };
        let j = p.to_json();
        let text = std::str::from_utf8(&j).unwrap();
        assert!(text.starts_with(r#"{"symkey":"BwcH"#), "{text}");
        assert!(text.contains(r#""cipheroptions":{"nonce":"CQkJCQkJCQkJCQkJCQkJCQ=="}"#));
        assert_eq!(PrivateOptions::from_json(&j).unwrap(), p);
        // Integer arrays are accepted too.
        let arr = format!(
            r#"{{"symkey":{:?},"digest":"{}","cipheroptions":{{"nonce":{:?}}}}}"#,
            [7u8; 32].to_vec(),
            p.digest,
            [9u8; 16].to_vec()
        );
        assert_eq!(PrivateOptions::from_json(arr.as_bytes()).unwrap(), p);
        for bad in [
            r#"{"digest":"sha256:00","cipheroptions":{"nonce":"CQkJCQkJCQkJCQkJCQkJCQ=="}}"#.to_owned(),
            text.replace(&"a".repeat(64), &"A".repeat(64)),
            text.replace("sha256:", "sha512:"),
            text.replace("CQkJCQkJCQkJCQkJCQkJCQ==", "CQkJ"),
            text.replace(r#""BwcH"#, r#""AAAA"#).replacen("BwcHBw", "", 1),
            "[]".into(),
        ] {
            assert!(matches!(PrivateOptions::from_json(bad.as_bytes()), Err(OcicryptError::Options(_))), "{bad}");
        }
        assert!(!format!("{p:?}").contains("7, 7"));
    }

    proptest! {
        #[test]
        fn parse_never_panics(mt in ".{0,40}", pairs in proptest::collection::btree_map(".{0,60}", ".{0,200}", 0..6)) {
            let _ = EncryptedLayer::parse(&mt, &pairs);
            let _ = EncryptedLayer::parse(&format!("{mt}+encrypted"), &pairs);
        }

        #[test]
        fn options_json_never_panics(data in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = PublicOptions::from_json(&data);
            let _ = PrivateOptions::from_json(&data);
        }

        #[test]
        fn annotations_round_trip(hmac in any::<[u8; 32]>(), blobs in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 1..50), 1..4)) {
            let public = PublicOptions { cipher: AES_256_CTR_HMAC_SHA256.into(), hmac, cipher_options: BTreeMap::new() };
            let keys = vec![WrappedKeys { scheme: KeyScheme::Jwe, blobs: blobs.clone() }];
            let a = build_annotations(&public, &keys);
            let l = EncryptedLayer::parse("x+encrypted", &a).unwrap().unwrap();
            prop_assert_eq!(l.public_options, public);
            prop_assert_eq!(l.keys, keys);
        }
    }
}
