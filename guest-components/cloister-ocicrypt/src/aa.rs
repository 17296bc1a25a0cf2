//! CoCo's `attestation-agent` key provider: the annotation packet
//! (`org.opencontainers.image.enc.keys.provider.attestation-agent`), unwrapping with a 32-byte
//! key-encryption key (KEK) fetched from the key broker, and wrapping for tests and tools.
//!
//! Packet v1 (what `coco_keyprovider` emits):
//! `{"kid":"kbs:///r/t/tag","wrapped_data":"<b64>","iv":"<b64>","wrap_type":"A256GCM"}`; v2 adds
//! `version`, `provider` (only `kbs` is supported here), `provider_settings` and `annotations`.
//! `A256GCM`: 12-byte IV, 16-byte tag appended to the ciphertext, no AAD; `A256CTR`: 16-byte IV
//! (the initial counter block), no tag — and so no integrity beyond the layer HMAC.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;
use std::sync::Arc;

use aes_gcm::aead::{Aead, KeyInit};
use base64::Engine;
use ctr::cipher::{KeyIvInit, StreamCipher};
use rand_core::{OsRng, RngCore};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use zeroize::{Zeroize, Zeroizing};

use crate::error::OcicryptError;
use crate::keyprovider::{BoxFuture, KeyProvider};
use crate::util::{GoBytes, STD};

/// The provider name CoCo uses.
pub const ATTESTATION_AGENT: &str = "attestation-agent";

/// The error a [`KekSource`] returns.
pub type KekSourceError = Box<dyn std::error::Error + Send + Sync>;

/// Where key-encryption keys come from (the confidential data hub, an offline file, …).
pub trait KekSource: Send + Sync {
    /// The resource `uri` (always normalised to `kbs:///repo/type/tag`).
    fn get_resource<'a>(&'a self, uri: &'a str) -> BoxFuture<'a, Result<Zeroizing<Vec<u8>>, KekSourceError>>;
}

impl<T: KekSource + ?Sized> KekSource for Arc<T> {
    fn get_resource<'a>(&'a self, uri: &'a str) -> BoxFuture<'a, Result<Zeroizing<Vec<u8>>, KekSourceError>> {
        (**self).get_resource(uri)
    }
}

impl<T: KekSource + ?Sized> KekSource for Box<T> {
    fn get_resource<'a>(&'a self, uri: &'a str) -> BoxFuture<'a, Result<Zeroizing<Vec<u8>>, KekSourceError>> {
        (**self).get_resource(uri)
    }
}

/// How the private options are wrapped in a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WrapType {
    /// AES-256-GCM, 12-byte IV, tag appended.
    A256Gcm,
    /// AES-256-CTR, 16-byte IV, no tag.
    A256Ctr,
}

impl WrapType {
    /// The `wrap_type` string.
    pub fn name(self) -> &'static str {
        match self {
            WrapType::A256Gcm => "A256GCM",
            WrapType::A256Ctr => "A256CTR",
        }
    }

    /// Parses a `wrap_type` / `algorithm` value.
    pub fn from_name(s: &str) -> Option<Self> {
        match s {
            "A256GCM" => Some(WrapType::A256Gcm),
            "A256CTR" => Some(WrapType::A256Ctr),
            _ => None,
        }
    }
}

/// An annotation packet (v1 or v2).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AnnotationPacket {
    /// The KEK's resource id.
    pub kid: String,
    /// The wrapped private options (GCM: ciphertext ‖ tag).
    pub wrapped_data: GoBytes,
    /// The IV.
    pub iv: GoBytes,
    /// `A256GCM` or `A256CTR`.
    pub wrap_type: String,
    /// v2: the packet version (`0.1.0`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// v2: `kbs` (default) or a KMS name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
    /// v2: provider settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider_settings: Option<Value>,
    /// v2: free annotations.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<Value>,
}

impl AnnotationPacket {
    /// Parses a packet (the base64-decoded annotation part).
    pub fn parse(json: &[u8]) -> Result<Self, OcicryptError> {
        serde_json::from_slice(json).map_err(|e| OcicryptError::Packet(e.to_string()))
    }

    /// The packet JSON.
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Checks what this crate supports: provider `kbs` (or absent), a known wrap type with the
    /// right IV length, a KBS `kid`. Returns the normalised kid and the wrap type.
    pub fn check(&self) -> Result<(String, WrapType), OcicryptError> {
        if let Some(p) = &self.provider
            && p != "kbs"
        {
            return Err(OcicryptError::Packet(format!("provider {p:?} is not supported (only kbs)")));
        }
        if let Some(v) = &self.version
            && v != "0.1.0"
        {
            return Err(OcicryptError::Packet(format!("version {v:?} is not supported (only 0.1.0)")));
        }
        let wrap = WrapType::from_name(&self.wrap_type).ok_or_else(|| {
            OcicryptError::Packet(format!("wrap_type {:?} (want A256GCM or A256CTR)", self.wrap_type))
        })?;
        let want_iv = match wrap {
            WrapType::A256Gcm => 12,
            WrapType::A256Ctr => 16,
        };
        if self.iv.0.len() != want_iv {
            return Err(OcicryptError::Packet(format!(
                "{} needs a {want_iv}-byte iv, got {}",
                wrap.name(),
                self.iv.0.len()
            )));
        }
        if wrap == WrapType::A256Gcm && self.wrapped_data.0.len() < 16 {
            return Err(OcicryptError::Packet("wrapped_data is shorter than the GCM tag".into()));
        }
        Ok((normalize_kid(&self.kid)?, wrap))
    }

    /// Decrypts `wrapped_data` with `kek` (after [`AnnotationPacket::check`]).
    pub fn open(&self, kek: &[u8]) -> Result<Zeroizing<Vec<u8>>, OcicryptError> {
        let (_, wrap) = self.check()?;
        let kek: &[u8; 32] =
            kek.try_into().map_err(|_| OcicryptError::Packet(format!("the KEK is {} bytes, not 32", kek.len())))?;
        match wrap {
            WrapType::A256Gcm => {
                let iv: [u8; 12] =
                    self.iv.as_bytes().try_into().map_err(|_| OcicryptError::Packet("iv is not 12 bytes".into()))?;
                let c = aes_gcm::Aes256Gcm::new(kek.into());
                c.decrypt(&iv.into(), self.wrapped_data.as_bytes())
                    .map(Zeroizing::new)
                    .map_err(|_| OcicryptError::Packet("wrapped_data does not authenticate under this KEK".into()))
            }
            WrapType::A256Ctr => {
                let mut c = ctr::Ctr128BE::<aes::Aes256>::new(kek.into(), self.iv.as_bytes().into());
                let mut out = Zeroizing::new(self.wrapped_data.as_bytes().to_vec());
                c.apply_keystream(&mut out);
                Ok(out)
            }
        }
    }
}

/// Normalises a key id to `kbs:///repo/type/tag`. Accepted: `kbs:///r/t/tag`,
/// `kbs://host/r/t/tag` (host ignored), `host/r/t/tag`, `/r/t/tag`, `r/t/tag`. Segments must be
/// non-empty, not `.`/`..`, and made of ASCII letters, digits, `.`, `_`, `-`.
pub fn normalize_kid(kid: &str) -> Result<String, OcicryptError> {
    let bad = || OcicryptError::BadKeyId(kid.chars().take(200).collect());
    let segs: Vec<&str> = if let Some(rest) = kid.strip_prefix("kbs://") {
        let (_host, path) = rest.split_once('/').ok_or_else(bad)?;
        path.split('/').collect()
    } else {
        let all: Vec<&str> = kid.strip_prefix('/').unwrap_or(kid).split('/').collect();
        match all.len() {
            3 => all,
            4 if !kid.starts_with('/') => all[1..].to_vec(),
            _ => return Err(bad()),
        }
    };
    let ok_seg = |s: &&str| {
        !s.is_empty()
            && *s != "."
            && *s != ".."
            && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
    };
    if segs.len() != 3 || !segs.iter().all(ok_seg) {
        return Err(bad());
    }
    Ok(format!("kbs:///{}", segs.join("/")))
}

/// Wraps `private_options` (the private options JSON) for `kid` with `kek`: returns the v1
/// packet JSON (the annotation blob before base64). `kid` is normalised.
pub fn wrap_attestation_agent(kek: &[u8; 32], kid: &str, private_options: &[u8]) -> Result<Vec<u8>, OcicryptError> {
    wrap_attestation_agent_with(kek, kid, private_options, WrapType::A256Gcm)
}

/// [`wrap_attestation_agent`] with a choice of wrap type.
pub fn wrap_attestation_agent_with(
    kek: &[u8; 32],
    kid: &str,
    private_options: &[u8],
    wrap: WrapType,
) -> Result<Vec<u8>, OcicryptError> {
    let kid = normalize_kid(kid)?;
    let (iv, wrapped) = match wrap {
        WrapType::A256Gcm => {
            let mut iv = [0u8; 12];
            OsRng.try_fill_bytes(&mut iv).map_err(|_| OcicryptError::Crypto("no randomness"))?;
            let c = aes_gcm::Aes256Gcm::new(kek.into());
            let ct = c.encrypt(&iv.into(), private_options).map_err(|_| OcicryptError::Crypto("AES-GCM seal"))?;
            (iv.to_vec(), ct)
        }
        WrapType::A256Ctr => {
            let mut iv = [0u8; 16];
            OsRng.try_fill_bytes(&mut iv).map_err(|_| OcicryptError::Crypto("no randomness"))?;
            let mut c = ctr::Ctr128BE::<aes::Aes256>::new(kek.into(), (&iv).into());
            let mut ct = private_options.to_vec();
            c.apply_keystream(&mut ct);
            (iv.to_vec(), ct)
        }
    };
    let packet = AnnotationPacket {
        kid,
        wrapped_data: GoBytes::new(wrapped),
        iv: GoBytes::new(iv),
        wrap_type: wrap.name().into(),
        version: None,
        provider: None,
        provider_settings: None,
        annotations: None,
    };
    Ok(packet.to_json())
}

/// The layer annotation value (standard base64 of the v1 packet) for [`wrap_attestation_agent`].
pub fn attestation_agent_annotation(
    kek: &[u8; 32],
    kid: &str,
    private_options: &[u8],
) -> Result<String, OcicryptError> {
    Ok(STD.encode(wrap_attestation_agent(kek, kid, private_options)?))
}

/// A KEK to wrap with: the key and its (normalised) resource id.
#[derive(Clone)]
pub struct WrapKey {
    kid: String,
    kek: Zeroizing<[u8; 32]>,
}

impl WrapKey {
    /// A KEK named `kid` (normalised).
    pub fn new(kid: &str, kek: Zeroizing<[u8; 32]>) -> Result<Self, OcicryptError> {
        Ok(WrapKey { kid: normalize_kid(kid)?, kek })
    }

    /// The normalised kid.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The KEK.
    pub fn kek(&self) -> &[u8; 32] {
        &self.kek
    }
}

impl fmt::Debug for WrapKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WrapKey").field("kid", &self.kid).finish_non_exhaustive()
    }
}

/// The `attestation-agent` key provider: packet → KEK from a [`KekSource`] → private options.
pub struct AttestationAgentProvider<S> {
    source: S,
    name: String,
    wrap: Option<WrapKey>,
}

impl<S> fmt::Debug for AttestationAgentProvider<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AttestationAgentProvider").field("name", &self.name).field("wrap", &self.wrap).finish()
    }
}

impl<S: KekSource> AttestationAgentProvider<S> {
    /// A provider named `attestation-agent` fetching KEKs from `source`.
    pub fn new(source: S) -> Self {
        AttestationAgentProvider { source, name: ATTESTATION_AGENT.into(), wrap: None }
    }

    /// Serves another annotation name (`provider.<name>`).
    pub fn with_name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// Enables `keywrap` with this KEK (for the provider side of [`crate::handle_keyprovider_request`]).
    pub fn with_wrap_key(mut self, key: WrapKey) -> Self {
        self.wrap = Some(key);
        self
    }

    /// Unwraps one packet: parse, check, fetch the KEK, decrypt.
    pub async fn unwrap_packet(&self, packet_json: &[u8]) -> Result<Zeroizing<Vec<u8>>, OcicryptError> {
        let packet = AnnotationPacket::parse(packet_json)?;
        let (uri, wrap) = packet.check()?;
        tracing::debug!(kid = %uri, wrap_type = wrap.name(), "attestation-agent packet");
        let kek = self
            .source
            .get_resource(&uri)
            .await
            .map_err(|e| OcicryptError::Kek { uri: uri.clone(), reason: e.to_string() })?;
        if kek.len() != 32 {
            return Err(OcicryptError::Kek {
                uri,
                reason: format!("resource is {} bytes, a KEK must be 32", kek.len()),
            });
        }
        packet.open(&kek)
    }

    fn wrap_with_params(&self, params: &[Vec<u8>], opts: &[u8]) -> Result<Vec<u8>, OcicryptError> {
        let err = |reason: String| OcicryptError::KeyProvider { provider: self.name.clone(), reason };
        let key = self.wrap.as_ref().ok_or_else(|| err("no KEK configured for keywrap".into()))?;
        let mut wrap = WrapType::A256Gcm;
        for p in params {
            let text = std::str::from_utf8(p).map_err(|_| err("parameters are not UTF-8".into()))?;
            for item in text.split("::").filter(|s| !s.is_empty() && *s != "Enabled") {
                let (k, v) = item.split_once('=').unwrap_or((item, ""));
                match k {
                    "keyid" => {
                        let want = normalize_kid(v)?;
                        if want != key.kid {
                            return Err(err(format!("keyid {want} requested, but the configured KEK is {}", key.kid)));
                        }
                    }
                    "algorithm" => {
                        wrap = WrapType::from_name(v).ok_or_else(|| err(format!("algorithm {v:?}")))?;
                    }
                    "keypath" | "sample" => {
                        return Err(err(format!("parameter {k:?} is not supported (the KEK is configured)")));
                    }
                    other => tracing::debug!(parameter = other, "ignored keywrap parameter"),
                }
            }
        }
        wrap_attestation_agent_with(key.kek(), &key.kid, opts, wrap)
    }
}

impl<S: KekSource> KeyProvider for AttestationAgentProvider<S> {
    fn name(&self) -> &str {
        &self.name
    }

    fn unwrap_key<'a>(&'a self, annotation: &'a [u8]) -> BoxFuture<'a, Result<Zeroizing<Vec<u8>>, OcicryptError>> {
        Box::pin(self.unwrap_packet(annotation))
    }

    fn wrap_key<'a>(
        &'a self,
        params: &'a [Vec<u8>],
        private_options: &'a [u8],
    ) -> BoxFuture<'a, Result<Vec<u8>, OcicryptError>> {
        Box::pin(async move { self.wrap_with_params(params, private_options) })
    }
}

/// KEKs from offline_fs_kbc-style JSON files: `{"repo/type/tag": "<standard base64>"}` (keys may
/// also be `kbs:///…` URIs).
#[derive(Default, Clone)]
pub struct OfflineKekSource {
    keys: BTreeMap<String, Zeroizing<Vec<u8>>>,
}

impl fmt::Debug for OfflineKekSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OfflineKekSource").field("kids", &self.keys.keys().collect::<Vec<_>>()).finish()
    }
}

impl OfflineKekSource {
    /// An empty source.
    pub fn new() -> Self {
        Self::default()
    }

    /// Reads and merges the given files (later files win on duplicate ids).
    pub fn from_files<P: AsRef<Path>>(paths: &[P]) -> Result<Self, OcicryptError> {
        let mut s = Self::new();
        for p in paths {
            let p = p.as_ref();
            let data =
                Zeroizing::new(std::fs::read(p).map_err(|e| OcicryptError::Config(format!("{}: {e}", p.display())))?);
            s.add_json(&data).map_err(|e| OcicryptError::Config(format!("{}: {e}", p.display())))?;
        }
        Ok(s)
    }

    /// Adds the entries of one JSON map.
    pub fn add_json(&mut self, json: &[u8]) -> Result<(), OcicryptError> {
        let map: BTreeMap<String, String> =
            serde_json::from_slice(json).map_err(|_| OcicryptError::Config("not a JSON object of strings".into()))?;
        let mut result = Ok(());
        for (k, mut v) in map {
            if result.is_ok() {
                result = match STD.decode(v.as_bytes()) {
                    Ok(key) => self.insert(&k, Zeroizing::new(key)),
                    Err(_) => Err(OcicryptError::Config(format!("{k}: not base64"))),
                };
            }
            v.zeroize();
        }
        result
    }

    /// Adds one key.
    pub fn insert(&mut self, kid: &str, key: Zeroizing<Vec<u8>>) -> Result<(), OcicryptError> {
        self.keys.insert(normalize_kid(kid)?, key);
        Ok(())
    }

    /// How many keys are held.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether no key is held.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

impl KekSource for OfflineKekSource {
    fn get_resource<'a>(&'a self, uri: &'a str) -> BoxFuture<'a, Result<Zeroizing<Vec<u8>>, KekSourceError>> {
        Box::pin(async move {
            let id = normalize_kid(uri)?;
            self.keys.get(&id).cloned().ok_or_else(|| format!("no offline key {id}").into())
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn kid_forms() {
        for (input, want) in [
            ("kbs:///default/key/key_id1", "kbs:///default/key/key_id1"),
            ("kbs://kbs.example:8080/default/key/1", "kbs:///default/key/1"),
            ("kbs.example/default/key/1", "kbs:///default/key/1"),
            ("/default/key/1", "kbs:///default/key/1"),
            ("default/key/1", "kbs:///default/key/1"),
        ] {
            assert_eq!(normalize_kid(input).unwrap(), want, "{input}");
        }
        for bad in [
            "kbs:///a/../c",
            "kbs:///a/b",
            "kbs:///a/b/c/d",
            "a/b",
            "/h/a/b/c",
            "a//b",
            "kbs://",
            "kbs:///a/b/c?x",
            "../a/b",
            "null",
            "",
            "kbs:///a/b/ c",
        ] {
            assert!(matches!(normalize_kid(bad), Err(OcicryptError::BadKeyId(_))), "{bad}");
        }
    }

    /// A vector constructed by hand from the spec (section 3.3): KEK = bytes 0x00..=0x1f, IV = 12 ×
    /// 0x01, plaintext = `{"a":1}`, no AAD. The expected `wrapped_data` (ciphertext ‖ tag) was computed
    /// once with Python `cryptography` 48 (OpenSSL) `AESGCM(kek).encrypt(iv, b'{"a":1}', None)`.
    #[test]
    fn hand_checked_v1_vector() {
        let kek: [u8; 32] = std::array::from_fn(|i| i as u8);
        let packet = r#"{"kid":"kbs:///default/key/key_id1","wrapped_data":"DOGEF1K0FaAePKolnED/xZftjgzcUhA=","iv":"AQEBAQEBAQEBAQEB","wrap_type":"A256GCM"}"#;
        let p = AnnotationPacket::parse(packet.as_bytes()).unwrap();
        assert_eq!(p.check().unwrap(), ("kbs:///default/key/key_id1".into(), WrapType::A256Gcm));
        assert_eq!(&p.open(&kek).unwrap()[..], br#"{"a":1}"#);
        // Our wrap output re-opens, and has the v1 member order of coco_keyprovider.
        let ours = wrap_attestation_agent(&kek, "default/key/key_id1", br#"{"a":1}"#).unwrap();
        let text = std::str::from_utf8(&ours).unwrap();
        assert!(text.starts_with(r#"{"kid":"kbs:///default/key/key_id1","wrapped_data":""#), "{text}");
        assert!(text.ends_with(r#"","wrap_type":"A256GCM"}"#), "{text}");
        assert_eq!(&AnnotationPacket::parse(&ours).unwrap().open(&kek).unwrap()[..], br#"{"a":1}"#);
        // Wrong KEK, flipped byte.
        assert!(p.open(&[0u8; 32]).is_err());
        let mut t = p.clone();
        t.wrapped_data.0[0] ^= 1;
        assert!(t.open(&kek).is_err());
        assert!(p.open(&kek[..16]).is_err());
    }

    /// A256CTR: the whole 16-byte IV is the initial counter block (big-endian increment); checked
    /// against ring's AES block function applied by hand to the counter blocks.
    #[test]
    fn ctr_packet_and_v2() {
        let kek = [7u8; 32];
        let pt = vec![0x5au8; 40];
        let iv = [0xffu8; 16]; // wraps around to zero after the first block
        let aes = aes_block_fn(&kek);
        let mut expect = pt.clone();
        let mut counter = u128::from_be_bytes(iv);
        for chunk in expect.chunks_mut(16) {
            let ks = aes(counter.to_be_bytes());
            for (b, k) in chunk.iter_mut().zip(ks) {
                *b ^= k;
            }
            counter = counter.wrapping_add(1);
        }
        let packet = serde_json::json!({"kid":"kbs:///a/b/c","wrapped_data":STD.encode(&expect),"iv":STD.encode(iv),
            "wrap_type":"A256CTR","version":"0.1.0","provider":"kbs","provider_settings":{},"annotations":{}});
        let p = AnnotationPacket::parse(packet.to_string().as_bytes()).unwrap();
        assert_eq!(&p.open(&kek).unwrap()[..], &pt[..]);
        let mut other = p.clone();
        other.provider = Some("aliyun".into());
        assert!(other.check().unwrap_err().to_string().contains("aliyun"));
        let mut other = p.clone();
        other.iv = GoBytes::new(vec![0; 12]);
        assert!(other.check().is_err());
        let mut other = p;
        other.wrap_type = "aes-gcm".into();
        assert!(other.check().is_err());
    }

    /// AES-256 single-block encryption through the `aes` crate's block API (not ctr).
    fn aes_block_fn(key: &[u8; 32]) -> impl Fn([u8; 16]) -> [u8; 16] {
        use aes::cipher::{BlockEncrypt, KeyInit};
        let c = aes::Aes256::new(key.into());
        move |b| {
            let mut block = b.into();
            c.encrypt_block(&mut block);
            block.into()
        }
    }

    #[tokio::test]
    async fn provider_with_offline_source() {
        let dir = tempfile::tempdir().unwrap();
        let kek = [3u8; 32];
        let f = dir.path().join("keys.json");
        std::fs::write(&f, format!(r#"{{"default/key/k1":"{}","kbs:///other/key/x":"AAAA"}}"#, STD.encode(kek)))
            .unwrap();
        let src = OfflineKekSource::from_files(&[&f]).unwrap();
        assert_eq!(src.len(), 2);
        assert!(!format!("{src:?}").contains("AwMD"));
        let prov = AttestationAgentProvider::new(src)
            .with_wrap_key(WrapKey::new("kbs:///default/key/k1", Zeroizing::new(kek)).unwrap());
        let packet = wrap_attestation_agent(&kek, "kbs:///default/key/k1", b"opts").unwrap();
        assert_eq!(&prov.unwrap_key(&packet).await.unwrap()[..], b"opts");
        // KEK of the wrong size, unknown kid.
        let packet = wrap_attestation_agent(&kek, "kbs:///other/key/x", b"opts").unwrap();
        assert!(prov.unwrap_key(&packet).await.unwrap_err().to_string().contains("3 bytes"));
        let packet = wrap_attestation_agent(&kek, "kbs:///nope/key/x", b"opts").unwrap();
        assert!(matches!(prov.unwrap_key(&packet).await, Err(OcicryptError::Kek { .. })));
        // keywrap through the provider, with parameters.
        let ann = prov.wrap_key(&[b"keyid=kbs:///default/key/k1::algorithm=A256CTR".to_vec()], b"o2").await.unwrap();
        assert!(std::str::from_utf8(&ann).unwrap().contains("A256CTR"));
        assert_eq!(&prov.unwrap_key(&ann).await.unwrap()[..], b"o2");
        assert!(prov.wrap_key(&[b"keyid=kbs:///x/y/z".to_vec()], b"o").await.is_err());
        assert!(prov.wrap_key(&[b"keypath=/etc/shadow".to_vec()], b"o").await.is_err());
        assert!(OfflineKekSource::new().add_json(br#"{"../a/b":"AAAA"}"#).is_err());
        assert!(OfflineKekSource::from_files(&[dir.path().join("missing")]).is_err());
    }

    proptest! {
        #[test]
        fn packet_parser_never_panics(data in proptest::collection::vec(any::<u8>(), 0..300)) {
            if let Ok(p) = AnnotationPacket::parse(&data) {
                let _ = p.check();
                let _ = p.open(&[0u8; 32]);
            }
        }

        #[test]
        fn kid_never_panics(kid in ".{0,60}") {
            if let Ok(n) = normalize_kid(&kid) {
                prop_assert_eq!(normalize_kid(&n).unwrap(), n.clone());
                prop_assert!(!n.split('/').any(|s| s == ".." || s == "."));
            }
        }

        #[test]
        fn wrap_round_trip(opts in proptest::collection::vec(any::<u8>(), 0..200), kek in any::<[u8; 32]>(), ctr in any::<bool>()) {
            let w = if ctr { WrapType::A256Ctr } else { WrapType::A256Gcm };
            let p = wrap_attestation_agent_with(&kek, "r/t/tag", &opts, w).unwrap();
            prop_assert_eq!(&AnnotationPacket::parse(&p).unwrap().open(&kek).unwrap()[..], &opts[..]);
        }
    }
}
