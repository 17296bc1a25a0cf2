//! The ocicrypt JWE profile (`org.opencontainers.image.enc.keys.jwe`), separate from the KBS
//! response profile in `cloister-kbs-protocol`.
//!
//! Decryption accepts the JSON serialisations go-jose writes (flattened for one recipient, general
//! for several) and also the compact one; header members may be split over `protected`, the
//! shared `unprotected` header and each recipient's `header` (they must be disjoint, RFC 7516 §7.2.1).
//!
//! * Key management: `RSA-OAEP` (SHA-1, MGF1-SHA-1 — what ocicrypt uses for RSA keys),
//!   `RSA-OAEP-256`, `ECDH-ES+A128KW`, `ECDH-ES+A192KW`, `ECDH-ES+A256KW` on P-256, P-384 and
//!   P-521 (Concat KDF with SHA-256, AlgorithmID = the `alg` name, PartyUInfo/PartyVInfo = the
//!   decoded `apu`/`apv` if present, RFC 7518 §4.6).
//! * Content: `A128GCM`, `A192GCM`, `A256GCM`, `A128CBC-HS256`, `A192CBC-HS384`, `A256CBC-HS512`
//!   (RFC 7518 §5.2); AAD = the ASCII of the received `protected` member, followed by `.` and the
//!   `aad` member when present (RFC 7516 §5.1 step 14).
//! * Rejected: `zip` (compression), any `crit` extension, `dir`, `RSA1_5`, other curves.
//!
//! Private keys: PKCS#8 (`PRIVATE KEY`) for RSA and EC, and — more lenient than skopeo 1.9.3,
//! which rejects them — SEC1 `EC PRIVATE KEY` and PKCS#1 `RSA PRIVATE KEY`, as PEM or DER.
//! Encrypted PEM keys are refused. The RSA implementation is the `rsa` crate, whose decryption is
//! not guaranteed constant-time (RUSTSEC-2023-0071): do not expose unwrapping as an online oracle.
//!
//! Encryption (for tests and tools) writes what ocicrypt with go-jose writes: `RSA-OAEP` for RSA
//! keys, `ECDH-ES+A256KW` for EC keys, content `A256GCM`; flattened JSON for one recipient, general
//! for several.

use std::fmt;

use aes_gcm::aead::consts::{U12, U16};
use aes_gcm::aead::{AeadInPlace, KeyInit};
use base64::Engine;
use hmac::{Hmac, Mac};
use rand_core::{OsRng, RngCore};
use rsa::pkcs1::DecodeRsaPrivateKey;
use rsa::pkcs1::DecodeRsaPublicKey;
use rsa::pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePublicKey};
use rsa::traits::PublicKeyParts;
use rsa::{Oaep, RsaPrivateKey, RsaPublicKey};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256, Sha384, Sha512};
use zeroize::Zeroizing;

use crate::error::OcicryptError;
use crate::util::{B64URL, STD, hex};

/// The EC curves of the profile.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EcCurve {
    /// NIST P-256.
    P256,
    /// NIST P-384.
    P384,
    /// NIST P-521.
    P521,
}

impl EcCurve {
    /// The JWK `crv` name.
    pub fn name(self) -> &'static str {
        match self {
            EcCurve::P256 => "P-256",
            EcCurve::P384 => "P-384",
            EcCurve::P521 => "P-521",
        }
    }

    fn field_len(self) -> usize {
        match self {
            EcCurve::P256 => 32,
            EcCurve::P384 => 48,
            EcCurve::P521 => 66,
        }
    }

    fn from_name(s: &str) -> Option<Self> {
        match s {
            "P-256" => Some(EcCurve::P256),
            "P-384" => Some(EcCurve::P384),
            "P-521" => Some(EcCurve::P521),
            _ => None,
        }
    }
}

#[derive(Clone)]
enum PrivKey {
    Rsa(Box<RsaPrivateKey>),
    P256(p256::SecretKey),
    P384(p384::SecretKey),
    P521(p521::SecretKey),
}

/// A private key that can open JWE recipients (RSA or EC P-256/P-384/P-521). The secret is
/// zeroized on drop by the underlying types; `Debug` shows only the public description.
#[derive(Clone)]
pub struct JwePrivateKey {
    inner: PrivKey,
    description: String,
    label: Option<String>,
}

impl fmt::Debug for JwePrivateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.description())
    }
}

/// A public key that JWEs can be encrypted to.
#[derive(Clone)]
pub struct JwePublicKey {
    inner: PubKey,
    description: String,
}

#[derive(Clone)]
enum PubKey {
    Rsa(Box<RsaPublicKey>),
    P256(p256::PublicKey),
    P384(p384::PublicKey),
    P521(p521::PublicKey),
}

impl fmt::Debug for JwePublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.description)
    }
}

/// One PEM block: label and decoded body.
struct PemBlock {
    label: String,
    der: Zeroizing<Vec<u8>>,
}

/// Splits PEM text into blocks. Blocks with RFC 1421 headers (`Proc-Type: 4,ENCRYPTED`, …) are
/// reported as errors since they are encrypted legacy keys.
fn pem_blocks(text: &str) -> Result<Vec<PemBlock>, OcicryptError> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("-----BEGIN ") {
        let after = &rest[start + 11..];
        let end_label = after.find("-----").ok_or_else(|| OcicryptError::Key("unterminated PEM BEGIN line".into()))?;
        let label = after[..end_label].trim().to_owned();
        let body_start = &after[end_label + 5..];
        let end_marker = format!("-----END {label}-----");
        let body_end = body_start
            .find(&end_marker)
            .ok_or_else(|| OcicryptError::Key(format!("PEM block {label} has no END line")))?;
        let body = &body_start[..body_end];
        if body.contains(':') {
            return Err(OcicryptError::Key(format!("PEM block {label} has headers (an encrypted legacy key?)")));
        }
        let cleaned: Zeroizing<String> = Zeroizing::new(body.chars().filter(|c| !c.is_whitespace()).collect());
        let der = STD
            .decode(cleaned.as_bytes())
            .map_err(|_| OcicryptError::Key(format!("PEM block {label} is not base64")))?;
        out.push(PemBlock { label, der: Zeroizing::new(der) });
        rest = &body_start[body_end + end_marker.len()..];
    }
    Ok(out)
}

fn spki_fingerprint(spki_der: &[u8]) -> String {
    hex(&Sha256::digest(spki_der)[..8])
}

impl PubKey {
    fn describe(&self) -> String {
        let (kind, spki) = match self {
            PubKey::Rsa(k) => (format!("RSA-{}", k.size() * 8), k.to_public_key_der().map(|d| d.into_vec())),
            PubKey::P256(k) => ("EC P-256".into(), k.to_public_key_der().map(|d| d.into_vec())),
            PubKey::P384(k) => ("EC P-384".into(), k.to_public_key_der().map(|d| d.into_vec())),
            PubKey::P521(k) => ("EC P-521".into(), p521_spki(k)),
        };
        match spki {
            Ok(d) => format!("{kind} key (SPKI SHA-256 {}…)", spki_fingerprint(&d)),
            Err(_) => format!("{kind} key"),
        }
    }
}

fn p521_spki(k: &p521::PublicKey) -> Result<Vec<u8>, rsa::pkcs8::spki::Error> {
    k.to_public_key_der().map(|d| d.into_vec())
}

impl JwePrivateKey {
    fn new(inner: PrivKey) -> Self {
        let public = public_of(&inner);
        JwePrivateKey { description: public.describe(), inner, label: None }
    }

    /// Parses a private key from PEM (`PRIVATE KEY`, `EC PRIVATE KEY`, `RSA PRIVATE KEY`; other
    /// blocks such as `EC PARAMETERS` are skipped) or DER (PKCS#8, PKCS#1 or SEC1).
    pub fn from_bytes(data: &[u8]) -> Result<Self, OcicryptError> {
        let is_pem = data.windows(11).any(|w| w == b"-----BEGIN ");
        if is_pem {
            let text = std::str::from_utf8(data).map_err(|_| OcicryptError::Key("PEM is not UTF-8".into()))?;
            Self::from_pem(text)
        } else {
            Self::from_der(data)
        }
    }

    /// Reads a private key file ([`JwePrivateKey::from_bytes`]), labelled with its path.
    pub fn from_file(path: &std::path::Path) -> Result<Self, OcicryptError> {
        let data =
            Zeroizing::new(std::fs::read(path).map_err(|e| OcicryptError::Key(format!("{}: {e}", path.display())))?);
        Self::from_bytes(&data)
            .map(|k| k.with_label(path.display().to_string()))
            .map_err(|e| OcicryptError::Key(format!("{}: {e}", path.display())))
    }

    /// Parses the first private-key block of a PEM text.
    pub fn from_pem(text: &str) -> Result<Self, OcicryptError> {
        for block in pem_blocks(text)? {
            match block.label.as_str() {
                "PRIVATE KEY" => return Self::from_pkcs8(&block.der),
                "EC PRIVATE KEY" => return Self::from_sec1(&block.der),
                "RSA PRIVATE KEY" => return Self::from_pkcs1(&block.der),
                "ENCRYPTED PRIVATE KEY" => {
                    return Err(OcicryptError::Key("encrypted PKCS#8 private keys are not supported".into()));
                }
                _ => continue,
            }
        }
        Err(OcicryptError::Key("no PRIVATE KEY, EC PRIVATE KEY or RSA PRIVATE KEY PEM block".into()))
    }

    /// Parses a DER private key: PKCS#8, then PKCS#1 (RSA), then SEC1 (EC).
    pub fn from_der(der: &[u8]) -> Result<Self, OcicryptError> {
        Self::from_pkcs8(der)
            .or_else(|_| Self::from_pkcs1(der))
            .or_else(|_| Self::from_sec1(der))
            .map_err(|_| OcicryptError::Key("not a PKCS#8, PKCS#1 or SEC1 private key of a supported type".into()))
    }

    fn from_pkcs8(der: &[u8]) -> Result<Self, OcicryptError> {
        if let Ok(k) = RsaPrivateKey::from_pkcs8_der(der) {
            return Self::rsa(k);
        }
        if let Ok(k) = p256::SecretKey::from_pkcs8_der(der) {
            return Ok(Self::new(PrivKey::P256(k)));
        }
        if let Ok(k) = p384::SecretKey::from_pkcs8_der(der) {
            return Ok(Self::new(PrivKey::P384(k)));
        }
        if let Ok(k) = p521::SecretKey::from_pkcs8_der(der) {
            return Ok(Self::new(PrivKey::P521(k)));
        }
        Err(OcicryptError::Key("PKCS#8 key is not RSA or EC on P-256, P-384 or P-521".into()))
    }

    fn from_pkcs1(der: &[u8]) -> Result<Self, OcicryptError> {
        let k = RsaPrivateKey::from_pkcs1_der(der)
            .map_err(|_| OcicryptError::Key("not a PKCS#1 RSA private key".into()))?;
        Self::rsa(k)
    }

    fn from_sec1(der: &[u8]) -> Result<Self, OcicryptError> {
        if let Ok(k) = p256::SecretKey::from_sec1_der(der) {
            return Ok(Self::new(PrivKey::P256(k)));
        }
        if let Ok(k) = p384::SecretKey::from_sec1_der(der) {
            return Ok(Self::new(PrivKey::P384(k)));
        }
        if let Ok(k) = p521::SecretKey::from_sec1_der(der) {
            return Ok(Self::new(PrivKey::P521(k)));
        }
        Err(OcicryptError::Key("SEC1 key is not on P-256, P-384 or P-521".into()))
    }

    fn rsa(k: RsaPrivateKey) -> Result<Self, OcicryptError> {
        k.validate().map_err(|_| OcicryptError::Key("RSA private key is inconsistent".into()))?;
        Ok(Self::new(PrivKey::Rsa(Box::new(k))))
    }

    /// A fresh EC key.
    pub fn generate_ec(curve: EcCurve) -> Self {
        Self::new(match curve {
            EcCurve::P256 => PrivKey::P256(p256::SecretKey::random(&mut OsRng)),
            EcCurve::P384 => PrivKey::P384(p384::SecretKey::random(&mut OsRng)),
            EcCurve::P521 => PrivKey::P521(p521::SecretKey::random(&mut OsRng)),
        })
    }

    /// A fresh RSA key of `bits` bits (at least 2048).
    pub fn generate_rsa(bits: usize) -> Result<Self, OcicryptError> {
        if bits < 2048 {
            return Err(OcicryptError::Key("RSA keys below 2048 bits".into()));
        }
        let k = RsaPrivateKey::new(&mut OsRng, bits).map_err(|_| OcicryptError::Crypto("RSA key generation"))?;
        Ok(Self::new(PrivKey::Rsa(Box::new(k))))
    }

    /// Names the key in error messages and logs (e.g. its file path).
    pub fn with_label(mut self, label: impl Into<String>) -> Self {
        self.label = Some(label.into());
        self
    }

    /// A description without secrets: label, type, size and SPKI fingerprint.
    pub fn description(&self) -> String {
        match &self.label {
            Some(l) => format!("{l} ({})", self.description),
            None => self.description.clone(),
        }
    }

    /// The public half.
    pub fn public_key(&self) -> JwePublicKey {
        let inner = public_of(&self.inner);
        JwePublicKey { description: inner.describe(), inner }
    }

    fn is_rsa(&self) -> bool {
        matches!(self.inner, PrivKey::Rsa(_))
    }

    fn curve(&self) -> Option<EcCurve> {
        match self.inner {
            PrivKey::Rsa(_) => None,
            PrivKey::P256(_) => Some(EcCurve::P256),
            PrivKey::P384(_) => Some(EcCurve::P384),
            PrivKey::P521(_) => Some(EcCurve::P521),
        }
    }
}

fn public_of(k: &PrivKey) -> PubKey {
    match k {
        PrivKey::Rsa(k) => PubKey::Rsa(Box::new(k.to_public_key())),
        PrivKey::P256(k) => PubKey::P256(k.public_key()),
        PrivKey::P384(k) => PubKey::P384(k.public_key()),
        PrivKey::P521(k) => PubKey::P521(k.public_key()),
    }
}

impl JwePublicKey {
    /// Parses a public key: PEM `PUBLIC KEY` (SPKI) or `RSA PUBLIC KEY` (PKCS#1), or SPKI DER.
    pub fn from_bytes(data: &[u8]) -> Result<Self, OcicryptError> {
        if data.windows(11).any(|w| w == b"-----BEGIN ") {
            let text = std::str::from_utf8(data).map_err(|_| OcicryptError::Key("PEM is not UTF-8".into()))?;
            for block in pem_blocks(text)? {
                match block.label.as_str() {
                    "PUBLIC KEY" => return Self::from_spki_der(&block.der),
                    "RSA PUBLIC KEY" => {
                        let k = RsaPublicKey::from_pkcs1_der(&block.der)
                            .map_err(|_| OcicryptError::Key("not a PKCS#1 RSA public key".into()))?;
                        return Ok(Self::new(PubKey::Rsa(Box::new(k))));
                    }
                    _ => continue,
                }
            }
            return Err(OcicryptError::Key("no PUBLIC KEY PEM block".into()));
        }
        Self::from_spki_der(data)
    }

    /// Reads a public key file ([`JwePublicKey::from_bytes`]).
    pub fn from_file(path: &std::path::Path) -> Result<Self, OcicryptError> {
        let data = std::fs::read(path).map_err(|e| OcicryptError::Key(format!("{}: {e}", path.display())))?;
        Self::from_bytes(&data).map_err(|e| OcicryptError::Key(format!("{}: {e}", path.display())))
    }

    /// Parses SubjectPublicKeyInfo DER.
    pub fn from_spki_der(der: &[u8]) -> Result<Self, OcicryptError> {
        if let Ok(k) = RsaPublicKey::from_public_key_der(der) {
            return Ok(Self::new(PubKey::Rsa(Box::new(k))));
        }
        if let Ok(k) = p256::PublicKey::from_public_key_der(der) {
            return Ok(Self::new(PubKey::P256(k)));
        }
        if let Ok(k) = p384::PublicKey::from_public_key_der(der) {
            return Ok(Self::new(PubKey::P384(k)));
        }
        if let Ok(k) = p521::PublicKey::from_public_key_der(der) {
            return Ok(Self::new(PubKey::P521(k)));
        }
        Err(OcicryptError::Key("public key is not RSA or EC on P-256, P-384 or P-521".into()))
    }

    fn new(inner: PubKey) -> Self {
        JwePublicKey { description: inner.describe(), inner }
    }

    /// Type, size and SPKI fingerprint.
    pub fn description(&self) -> &str {
        &self.description
    }
}

// ------------------------------------------------------------------------------------------------
// Parsing

#[derive(Deserialize)]
struct JweJson {
    #[serde(default)]
    protected: Option<String>,
    #[serde(default)]
    unprotected: Option<Map<String, Value>>,
    #[serde(default)]
    header: Option<Map<String, Value>>,
    #[serde(default)]
    encrypted_key: Option<String>,
    #[serde(default)]
    recipients: Option<Vec<RecipientJson>>,
    #[serde(default)]
    aad: Option<String>,
    #[serde(default)]
    iv: Option<String>,
    ciphertext: String,
    #[serde(default)]
    tag: Option<String>,
}

#[derive(Deserialize)]
struct RecipientJson {
    #[serde(default)]
    header: Option<Map<String, Value>>,
    #[serde(default)]
    encrypted_key: Option<String>,
}

type Header = Map<String, Value>;

/// One recipient of a parsed JWE: its complete (merged) header and wrapped CEK.
#[derive(Debug, Clone)]
pub struct JweRecipient {
    /// The merged JOSE header (protected ∪ unprotected ∪ per-recipient).
    pub header: Map<String, Value>,
    /// The encrypted (wrapped) content key.
    pub encrypted_key: Vec<u8>,
}

impl JweRecipient {
    /// The `alg` member.
    pub fn alg(&self) -> &str {
        self.header.get("alg").and_then(Value::as_str).unwrap_or("")
    }

    /// The `enc` member.
    pub fn enc(&self) -> &str {
        self.header.get("enc").and_then(Value::as_str).unwrap_or("")
    }

    fn describe(&self, i: usize) -> String {
        let crv = self.header.get("epk").and_then(|e| e.get("crv")).and_then(Value::as_str);
        match crv {
            Some(c) => format!("recipient {i} ({} {c})", self.alg()),
            None => format!("recipient {i} ({})", self.alg()),
        }
    }
}

/// A parsed JWE (any serialisation).
#[derive(Debug, Clone)]
pub struct Jwe {
    /// The `protected` member as received (base64url), the basis of the AAD.
    pub protected: String,
    /// The recipients, in order.
    pub recipients: Vec<JweRecipient>,
    /// The `aad` member as received (base64url), if any.
    pub aad: Option<String>,
    /// Initialisation vector.
    pub iv: Vec<u8>,
    /// Ciphertext.
    pub ciphertext: Vec<u8>,
    /// Authentication tag.
    pub tag: Vec<u8>,
}

fn b64url(member: &str, s: &str) -> Result<Vec<u8>, OcicryptError> {
    B64URL.decode(s.trim_end_matches('=')).map_err(|_| OcicryptError::Jwe(format!("{member} is not base64url")))
}

fn merge(into: &mut Map<String, Value>, from: &Map<String, Value>, what: &str) -> Result<(), OcicryptError> {
    for (k, v) in from {
        if into.contains_key(k) {
            return Err(OcicryptError::Jwe(format!("header member {k:?} appears twice (again in {what})")));
        }
        into.insert(k.clone(), v.clone());
    }
    Ok(())
}

/// The most recipients a JWE may have (bounds the work of trying every key).
pub const MAX_RECIPIENTS: usize = 256;

impl Jwe {
    /// Parses a JWE in general or flattened JSON, or compact serialisation.
    pub fn parse(data: &[u8]) -> Result<Self, OcicryptError> {
        let text = std::str::from_utf8(data).map_err(|_| OcicryptError::Jwe("not UTF-8".into()))?.trim();
        if !text.starts_with('{') {
            return Self::parse_compact(text);
        }
        let raw: JweJson = serde_json::from_str(text).map_err(|e| OcicryptError::Jwe(format!("not JWE JSON: {e}")))?;
        let protected = raw.protected.unwrap_or_default();
        let mut shared = Map::new();
        if !protected.is_empty() {
            let bytes = b64url("protected", &protected)?;
            let hdr: Map<String, Value> = serde_json::from_slice(&bytes)
                .map_err(|e| OcicryptError::Jwe(format!("protected header is not a JSON object: {e}")))?;
            shared = hdr;
        }
        if let Some(u) = &raw.unprotected {
            merge(&mut shared, u, "unprotected")?;
        }
        let per_recipient: Vec<(Option<Header>, Option<String>)> = match raw.recipients {
            Some(list) => {
                if raw.header.is_some() {
                    return Err(OcicryptError::Jwe("both recipients and a top-level header".into()));
                }
                // go-jose also repeats the first recipient's encrypted_key at the top level: ignored.
                list.into_iter().map(|r| (r.header, r.encrypted_key)).collect()
            }
            None => vec![(raw.header, raw.encrypted_key)],
        };
        if per_recipient.is_empty() {
            return Err(OcicryptError::Jwe("no recipients".into()));
        }
        if per_recipient.len() > MAX_RECIPIENTS {
            return Err(OcicryptError::Jwe(format!("{} recipients (at most {MAX_RECIPIENTS})", per_recipient.len())));
        }
        let mut recipients = Vec::with_capacity(per_recipient.len());
        for (i, (hdr, ek)) in per_recipient.into_iter().enumerate() {
            let mut header = shared.clone();
            if let Some(h) = &hdr {
                merge(&mut header, h, &format!("recipient {i}'s header"))?;
            }
            let encrypted_key = match ek {
                Some(s) => b64url("encrypted_key", &s)?,
                None => Vec::new(),
            };
            recipients.push(JweRecipient { header, encrypted_key });
        }
        Ok(Jwe {
            protected,
            recipients,
            aad: raw.aad,
            iv: b64url("iv", raw.iv.as_deref().unwrap_or(""))?,
            ciphertext: b64url("ciphertext", &raw.ciphertext)?,
            tag: b64url("tag", raw.tag.as_deref().unwrap_or(""))?,
        })
    }

    fn parse_compact(text: &str) -> Result<Self, OcicryptError> {
        let parts: Vec<&str> = text.split('.').collect();
        let [protected, ek, iv, ct, tag] = parts[..] else {
            return Err(OcicryptError::Jwe("neither JSON nor compact serialisation (5 parts)".into()));
        };
        let bytes = b64url("protected", protected)?;
        let header: Map<String, Value> = serde_json::from_slice(&bytes)
            .map_err(|e| OcicryptError::Jwe(format!("protected header is not a JSON object: {e}")))?;
        Ok(Jwe {
            protected: protected.to_owned(),
            recipients: vec![JweRecipient { header, encrypted_key: b64url("encrypted_key", ek)? }],
            aad: None,
            iv: b64url("iv", iv)?,
            ciphertext: b64url("ciphertext", ct)?,
            tag: b64url("tag", tag)?,
        })
    }

    fn aad_bytes(&self) -> Vec<u8> {
        let mut aad = self.protected.as_bytes().to_vec();
        if let Some(extra) = &self.aad {
            aad.push(b'.');
            aad.extend_from_slice(extra.as_bytes());
        }
        aad
    }

    /// Tries every recipient with every key; the first that unwraps the CEK and authenticates the
    /// content wins.
    ///
    /// Errors: [`OcicryptError::NoKeyForRecipients`] when no key is of a type any recipient uses,
    /// [`OcicryptError::UnwrapFailed`] (listing each attempt) when keys were tried and none worked.
    pub fn decrypt(&self, keys: &[JwePrivateKey]) -> Result<Zeroizing<Vec<u8>>, OcicryptError> {
        let mut attempts = Vec::new();
        let mut unmatched = Vec::new();
        for (i, r) in self.recipients.iter().enumerate() {
            let who = r.describe(i);
            if let Err(e) = check_header(r) {
                // No key can be configured for what this crate does not implement.
                unmatched.push(format!("{who}: {e}"));
                continue;
            }
            let mut matched = false;
            for key in keys {
                if !key_fits(key, r) {
                    continue;
                }
                matched = true;
                match self.open_with(r, key) {
                    Ok(pt) => {
                        tracing::debug!(recipient = i, key = %key.description(), "JWE recipient opened");
                        return Ok(pt);
                    }
                    Err(e) => attempts.push(format!("{who} with {}: {e}", key.description())),
                }
            }
            if !matched {
                unmatched.push(format!("{who}: no key of its type"));
            }
        }
        if attempts.is_empty() {
            return Err(OcicryptError::NoKeyForRecipients {
                recipients: format!("jwe: {}", unmatched.join("; ")),
                configured: describe_keys(keys),
            });
        }
        attempts.extend(unmatched);
        Err(OcicryptError::UnwrapFailed { attempts })
    }

    fn open_with(&self, r: &JweRecipient, key: &JwePrivateKey) -> Result<Zeroizing<Vec<u8>>, OcicryptError> {
        let enc = ContentAlg::from_name(r.enc()).ok_or_else(|| OcicryptError::Jwe(format!("enc {:?}", r.enc())))?;
        let cek = unwrap_cek(r, key, enc.key_len())?;
        content_decrypt(enc, &cek, &self.iv, &self.aad_bytes(), &self.ciphertext, &self.tag)
    }
}

fn describe_keys(keys: &[JwePrivateKey]) -> String {
    if keys.is_empty() {
        return "no JWE private keys".into();
    }
    keys.iter().map(JwePrivateKey::description).collect::<Vec<_>>().join(", ")
}

/// Parses `jwe` and decrypts it with the first key that fits ([`Jwe::decrypt`]).
pub fn decrypt(jwe: &[u8], keys: &[JwePrivateKey]) -> Result<Zeroizing<Vec<u8>>, OcicryptError> {
    Jwe::parse(jwe)?.decrypt(keys)
}

fn check_header(r: &JweRecipient) -> Result<(), OcicryptError> {
    if r.header.contains_key("zip") {
        return Err(OcicryptError::Jwe("compressed JWE (zip) is not supported".into()));
    }
    if r.header.contains_key("crit") {
        return Err(OcicryptError::Jwe("critical header extensions (crit) are not supported".into()));
    }
    if KeyAlg::from_name(r.alg()).is_none() {
        return Err(OcicryptError::Jwe(format!("unsupported alg {:?}", r.alg())));
    }
    if ContentAlg::from_name(r.enc()).is_none() {
        return Err(OcicryptError::Jwe(format!("unsupported enc {:?}", r.enc())));
    }
    Ok(())
}

fn key_fits(key: &JwePrivateKey, r: &JweRecipient) -> bool {
    match KeyAlg::from_name(r.alg()) {
        Some(KeyAlg::RsaOaep | KeyAlg::RsaOaep256) => key.is_rsa(),
        Some(KeyAlg::EcdhEsKw(_)) => {
            let crv = r.header.get("epk").and_then(|e| e.get("crv")).and_then(Value::as_str);
            // An epk without a (known) curve is tried with every EC key, to report why it fails.
            match crv.and_then(EcCurve::from_name) {
                Some(c) => key.curve() == Some(c),
                None => key.curve().is_some(),
            }
        }
        None => false,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum KeyAlg {
    RsaOaep,
    RsaOaep256,
    /// ECDH-ES with AES key wrap; the KEK length in bytes.
    EcdhEsKw(usize),
}

impl KeyAlg {
    fn from_name(s: &str) -> Option<Self> {
        match s {
            "RSA-OAEP" => Some(KeyAlg::RsaOaep),
            "RSA-OAEP-256" => Some(KeyAlg::RsaOaep256),
            "ECDH-ES+A128KW" => Some(KeyAlg::EcdhEsKw(16)),
            "ECDH-ES+A192KW" => Some(KeyAlg::EcdhEsKw(24)),
            "ECDH-ES+A256KW" => Some(KeyAlg::EcdhEsKw(32)),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ContentAlg {
    Gcm(usize),
    /// CBC-HMAC; the AES key length in bytes (MAC key is the same length).
    CbcHs(usize),
}

impl ContentAlg {
    fn from_name(s: &str) -> Option<Self> {
        match s {
            "A128GCM" => Some(ContentAlg::Gcm(16)),
            "A192GCM" => Some(ContentAlg::Gcm(24)),
            "A256GCM" => Some(ContentAlg::Gcm(32)),
            "A128CBC-HS256" => Some(ContentAlg::CbcHs(16)),
            "A192CBC-HS384" => Some(ContentAlg::CbcHs(24)),
            "A256CBC-HS512" => Some(ContentAlg::CbcHs(32)),
            _ => None,
        }
    }

    fn key_len(self) -> usize {
        match self {
            ContentAlg::Gcm(n) => n,
            ContentAlg::CbcHs(n) => 2 * n,
        }
    }
}

/// RFC 7518 §4.6.2 Concat KDF (single-step KDF of NIST SP 800-56A with SHA-256).
pub fn concat_kdf(z: &[u8], alg_id: &str, apu: &[u8], apv: &[u8], out_len: usize) -> Zeroizing<Vec<u8>> {
    let mut out = Zeroizing::new(Vec::with_capacity(out_len + 32));
    let bits = u32::try_from(out_len.saturating_mul(8)).unwrap_or(u32::MAX);
    let mut counter: u32 = 1;
    while out.len() < out_len {
        let mut h = Sha256::new();
        h.update(counter.to_be_bytes());
        h.update(z);
        for part in [alg_id.as_bytes(), apu, apv] {
            h.update(u32::try_from(part.len()).unwrap_or(u32::MAX).to_be_bytes());
            h.update(part);
        }
        h.update(bits.to_be_bytes());
        out.extend_from_slice(&h.finalize());
        counter = counter.wrapping_add(1);
    }
    out.truncate(out_len);
    out
}

fn header_bytes(r: &JweRecipient, name: &str) -> Result<Vec<u8>, OcicryptError> {
    match r.header.get(name) {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::String(s)) => b64url(name, s),
        Some(_) => Err(OcicryptError::Jwe(format!("{name} is not a string"))),
    }
}

fn epk_point(r: &JweRecipient, curve: EcCurve) -> Result<Vec<u8>, OcicryptError> {
    let epk = r.header.get("epk").ok_or_else(|| OcicryptError::Jwe("ECDH-ES recipient without epk".into()))?;
    if epk.get("kty").and_then(Value::as_str) != Some("EC") {
        return Err(OcicryptError::Jwe("epk kty is not EC".into()));
    }
    let crv = epk.get("crv").and_then(Value::as_str).unwrap_or("");
    if crv != curve.name() {
        return Err(OcicryptError::Jwe(format!("epk curve {crv:?} does not match the {} key", curve.name())));
    }
    let n = curve.field_len();
    let mut point = Vec::with_capacity(1 + 2 * n);
    point.push(4u8);
    for c in ["x", "y"] {
        let s = epk.get(c).and_then(Value::as_str).ok_or_else(|| OcicryptError::Jwe(format!("epk has no {c}")))?;
        let v = b64url("epk coordinate", s)?;
        if v.len() > n || v.is_empty() {
            return Err(OcicryptError::Jwe(format!("epk {c} is {} bytes, not {n}", v.len())));
        }
        // Lenient: left-pad coordinates that were written without leading zero bytes.
        point.resize(point.len() + n - v.len(), 0);
        point.extend_from_slice(&v);
    }
    Ok(point)
}

fn ecdh(key: &JwePrivateKey, point: &[u8]) -> Result<Zeroizing<Vec<u8>>, OcicryptError> {
    let bad = || OcicryptError::Jwe("epk is not a point on the key's curve".into());
    let z = match &key.inner {
        PrivKey::P256(sk) => {
            let pk = p256::PublicKey::from_sec1_bytes(point).map_err(|_| bad())?;
            let s = p256::ecdh::diffie_hellman(sk.to_nonzero_scalar(), pk.as_affine());
            Zeroizing::new(s.raw_secret_bytes().to_vec())
        }
        PrivKey::P384(sk) => {
            let pk = p384::PublicKey::from_sec1_bytes(point).map_err(|_| bad())?;
            let s = p384::ecdh::diffie_hellman(sk.to_nonzero_scalar(), pk.as_affine());
            Zeroizing::new(s.raw_secret_bytes().to_vec())
        }
        PrivKey::P521(sk) => {
            let pk = p521::PublicKey::from_sec1_bytes(point).map_err(|_| bad())?;
            let s = p521::ecdh::diffie_hellman(sk.to_nonzero_scalar(), pk.as_affine());
            Zeroizing::new(s.raw_secret_bytes().to_vec())
        }
        PrivKey::Rsa(_) => return Err(OcicryptError::Jwe("ECDH-ES needs an EC key".into())),
    };
    Ok(z)
}

fn aes_kw_unwrap(kek: &[u8], wrapped: &[u8]) -> Result<Zeroizing<Vec<u8>>, OcicryptError> {
    let fail = || OcicryptError::Jwe("AES key unwrap failed (another key, or modified)".into());
    let v = match kek.len() {
        16 => aes_kw::KekAes128::try_from(kek).map_err(|_| fail())?.unwrap_vec(wrapped),
        24 => aes_kw::KekAes192::try_from(kek).map_err(|_| fail())?.unwrap_vec(wrapped),
        32 => aes_kw::KekAes256::try_from(kek).map_err(|_| fail())?.unwrap_vec(wrapped),
        _ => return Err(OcicryptError::Crypto("AES-KW key length")),
    };
    v.map(Zeroizing::new).map_err(|_| fail())
}

fn aes_kw_wrap(kek: &[u8; 32], cek: &[u8]) -> Result<Vec<u8>, OcicryptError> {
    aes_kw::KekAes256::from(*kek).wrap_vec(cek).map_err(|_| OcicryptError::Crypto("AES key wrap"))
}

fn unwrap_cek(r: &JweRecipient, key: &JwePrivateKey, cek_len: usize) -> Result<Zeroizing<Vec<u8>>, OcicryptError> {
    let alg = KeyAlg::from_name(r.alg()).ok_or_else(|| OcicryptError::Jwe(format!("unsupported alg {:?}", r.alg())))?;
    let cek = match (alg, &key.inner) {
        (KeyAlg::RsaOaep, PrivKey::Rsa(sk)) => sk.decrypt(Oaep::new::<sha1::Sha1>(), &r.encrypted_key),
        (KeyAlg::RsaOaep256, PrivKey::Rsa(sk)) => sk.decrypt(Oaep::new::<Sha256>(), &r.encrypted_key),
        (KeyAlg::EcdhEsKw(kek_len), _) => {
            let curve = key.curve().ok_or_else(|| OcicryptError::Jwe("ECDH-ES needs an EC key".into()))?;
            let z = ecdh(key, &epk_point(r, curve)?)?;
            let kek = concat_kdf(&z, r.alg(), &header_bytes(r, "apu")?, &header_bytes(r, "apv")?, kek_len);
            let cek = aes_kw_unwrap(&kek, &r.encrypted_key)?;
            return check_len(cek, cek_len);
        }
        _ => return Err(OcicryptError::Jwe(format!("alg {} does not fit this key", r.alg()))),
    };
    let cek =
        cek.map(Zeroizing::new).map_err(|_| OcicryptError::Jwe("RSA-OAEP decryption failed (another key?)".into()))?;
    check_len(cek, cek_len)
}

fn check_len(cek: Zeroizing<Vec<u8>>, want: usize) -> Result<Zeroizing<Vec<u8>>, OcicryptError> {
    if cek.len() != want {
        return Err(OcicryptError::Jwe(format!("content key is {} bytes, enc needs {want}", cek.len())));
    }
    Ok(cek)
}

fn gcm_open<A>(cek: &[u8], iv: &[u8], aad: &[u8], ct: &[u8], tag: &[u8]) -> Result<Zeroizing<Vec<u8>>, OcicryptError>
where
    A: AeadInPlace<NonceSize = U12, TagSize = U16> + KeyInit,
{
    let (Ok(iv), Ok(tag)) = (<[u8; 12]>::try_from(iv), <[u8; 16]>::try_from(tag)) else {
        return Err(OcicryptError::Jwe("GCM needs a 12-byte iv and a 16-byte tag".into()));
    };
    let cipher = A::new_from_slice(cek).map_err(|_| OcicryptError::Crypto("AES-GCM key length"))?;
    let mut buf = Zeroizing::new(ct.to_vec());
    cipher
        .decrypt_in_place_detached(&iv.into(), aad, &mut buf, &tag.into())
        .map_err(|_| OcicryptError::Jwe("content authentication failed (GCM tag)".into()))?;
    Ok(buf)
}

type Aes192Gcm = aes_gcm::AesGcm<aes::Aes192, U12>;

macro_rules! cbc_hs_open {
    ($aes:ty, $sha:ty, $n:expr, $cek:expr, $iv:expr, $aad:expr, $ct:expr, $tag:expr) => {{
        use cbc::cipher::{BlockDecryptMut, KeyIvInit, block_padding::Pkcs7};
        let (mac_key, enc_key) = $cek.split_at($n);
        if $tag.len() != $n || $iv.len() != 16 {
            return Err(OcicryptError::Jwe("CBC-HMAC needs a 16-byte iv and a tag of half the key".into()));
        }
        let mut mac =
            <Hmac<$sha> as Mac>::new_from_slice(mac_key).map_err(|_| OcicryptError::Crypto("HMAC key length"))?;
        mac.update($aad);
        mac.update($iv);
        mac.update($ct);
        mac.update(&(u64::try_from($aad.len()).unwrap_or(u64::MAX).wrapping_mul(8)).to_be_bytes());
        mac.verify_truncated_left($tag)
            .map_err(|_| OcicryptError::Jwe("content authentication failed (CBC-HMAC tag)".into()))?;
        let dec = cbc::Decryptor::<$aes>::new_from_slices(enc_key, $iv)
            .map_err(|_| OcicryptError::Crypto("AES-CBC key length"))?;
        let pt = dec.decrypt_padded_vec_mut::<Pkcs7>($ct).map_err(|_| OcicryptError::Jwe("bad CBC padding".into()))?;
        Ok(Zeroizing::new(pt))
    }};
}

fn content_decrypt(
    enc: ContentAlg,
    cek: &[u8],
    iv: &[u8],
    aad: &[u8],
    ct: &[u8],
    tag: &[u8],
) -> Result<Zeroizing<Vec<u8>>, OcicryptError> {
    match enc {
        ContentAlg::Gcm(16) => gcm_open::<aes_gcm::Aes128Gcm>(cek, iv, aad, ct, tag),
        ContentAlg::Gcm(24) => gcm_open::<Aes192Gcm>(cek, iv, aad, ct, tag),
        ContentAlg::Gcm(_) => gcm_open::<aes_gcm::Aes256Gcm>(cek, iv, aad, ct, tag),
        ContentAlg::CbcHs(16) => cbc_hs_open!(aes::Aes128, Sha256, 16, cek, iv, aad, ct, tag),
        ContentAlg::CbcHs(24) => cbc_hs_open!(aes::Aes192, Sha384, 24, cek, iv, aad, ct, tag),
        ContentAlg::CbcHs(_) => cbc_hs_open!(aes::Aes256, Sha512, 32, cek, iv, aad, ct, tag),
    }
}

// ------------------------------------------------------------------------------------------------
// Encryption

#[derive(Serialize)]
struct Epk {
    kty: &'static str,
    crv: &'static str,
    x: String,
    y: String,
}

#[derive(Serialize)]
struct RecipientHeader {
    alg: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    epk: Option<Epk>,
}

#[derive(Serialize)]
struct SingleHeader<'a> {
    alg: &'static str,
    enc: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    epk: Option<&'a Epk>,
}

#[derive(Serialize)]
struct RecipientOut {
    header: RecipientHeader,
    encrypted_key: String,
}

#[derive(Serialize)]
struct FlattenedOut {
    protected: String,
    encrypted_key: String,
    iv: String,
    ciphertext: String,
    tag: String,
}

#[derive(Serialize)]
struct GeneralOut {
    protected: String,
    recipients: Vec<RecipientOut>,
    iv: String,
    ciphertext: String,
    tag: String,
}

fn ec_wrap<P: AsRef<[u8]>>(
    curve: EcCurve,
    z: &[u8],
    epk_point: P,
    cek: &[u8; 32],
) -> Result<(RecipientHeader, Vec<u8>), OcicryptError> {
    let p = epk_point.as_ref();
    let n = curve.field_len();
    if p.len() != 1 + 2 * n {
        return Err(OcicryptError::Crypto("ephemeral point encoding"));
    }
    let kek = concat_kdf(z, "ECDH-ES+A256KW", &[], &[], 32);
    let mut kek32 = Zeroizing::new([0u8; 32]);
    kek32.copy_from_slice(&kek);
    let wrapped = aes_kw_wrap(&kek32, cek)?;
    let epk = Epk { kty: "EC", crv: curve.name(), x: B64URL.encode(&p[1..1 + n]), y: B64URL.encode(&p[1 + n..]) };
    Ok((RecipientHeader { alg: "ECDH-ES+A256KW", epk: Some(epk) }, wrapped))
}

fn wrap_for(key: &JwePublicKey, cek: &[u8; 32]) -> Result<(RecipientHeader, Vec<u8>), OcicryptError> {
    use p256::elliptic_curve::sec1::ToEncodedPoint;
    match &key.inner {
        PubKey::Rsa(pk) => {
            if pk.size() < 256 {
                return Err(OcicryptError::Key("RSA keys below 2048 bits".into()));
            }
            let ek = pk
                .encrypt(&mut OsRng, Oaep::new::<sha1::Sha1>(), cek)
                .map_err(|_| OcicryptError::Crypto("RSA-OAEP encryption"))?;
            Ok((RecipientHeader { alg: "RSA-OAEP", epk: None }, ek))
        }
        PubKey::P256(pk) => {
            let eph = p256::ecdh::EphemeralSecret::random(&mut OsRng);
            let z = eph.diffie_hellman(pk);
            ec_wrap(EcCurve::P256, z.raw_secret_bytes(), eph.public_key().to_encoded_point(false), cek)
        }
        PubKey::P384(pk) => {
            let eph = p384::ecdh::EphemeralSecret::random(&mut OsRng);
            let z = eph.diffie_hellman(pk);
            ec_wrap(EcCurve::P384, z.raw_secret_bytes(), eph.public_key().to_encoded_point(false), cek)
        }
        PubKey::P521(pk) => {
            let eph = p521::ecdh::EphemeralSecret::random(&mut OsRng);
            let z = eph.diffie_hellman(pk);
            ec_wrap(EcCurve::P521, z.raw_secret_bytes(), eph.public_key().to_encoded_point(false), cek)
        }
    }
}

/// Encrypts `plaintext` to `recipients` as go-jose does for ocicrypt: `RSA-OAEP` or
/// `ECDH-ES+A256KW` per key, `A256GCM` content; flattened JSON for one recipient, general JSON
/// for several. Returns the JWE JSON bytes (the annotation blob before base64).
pub fn encrypt(plaintext: &[u8], recipients: &[JwePublicKey]) -> Result<Vec<u8>, OcicryptError> {
    if recipients.is_empty() {
        return Err(OcicryptError::Key("no JWE recipients".into()));
    }
    let mut cek = Zeroizing::new([0u8; 32]);
    OsRng.try_fill_bytes(cek.as_mut()).map_err(|_| OcicryptError::Crypto("no randomness"))?;
    let mut iv = [0u8; 12];
    OsRng.try_fill_bytes(&mut iv).map_err(|_| OcicryptError::Crypto("no randomness"))?;
    let mut wrapped = Vec::with_capacity(recipients.len());
    for k in recipients {
        wrapped.push(wrap_for(k, &cek)?);
    }
    let seal = |protected: &str| -> Result<(String, String), OcicryptError> {
        let cipher =
            aes_gcm::Aes256Gcm::new_from_slice(cek.as_ref()).map_err(|_| OcicryptError::Crypto("AES-GCM key"))?;
        let mut buf = Zeroizing::new(plaintext.to_vec());
        let tag = cipher
            .encrypt_in_place_detached(&iv.into(), protected.as_bytes(), &mut buf)
            .map_err(|_| OcicryptError::Crypto("AES-GCM seal"))?;
        Ok((B64URL.encode(buf.as_slice()), B64URL.encode(tag)))
    };
    let json = if wrapped.len() == 1 {
        let Some((hdr, ek)) = wrapped.pop() else { return Err(OcicryptError::Crypto("recipient list")) };
        let header = SingleHeader { alg: hdr.alg, enc: "A256GCM", epk: hdr.epk.as_ref() };
        let protected = B64URL.encode(serde_json::to_vec(&header).map_err(|_| OcicryptError::Crypto("header JSON"))?);
        let (ciphertext, tag) = seal(&protected)?;
        serde_json::to_vec(&FlattenedOut {
            encrypted_key: B64URL.encode(ek),
            iv: B64URL.encode(iv),
            protected,
            ciphertext,
            tag,
        })
    } else {
        let protected = B64URL.encode(br#"{"enc":"A256GCM"}"#);
        let (ciphertext, tag) = seal(&protected)?;
        serde_json::to_vec(&GeneralOut {
            protected,
            recipients: wrapped
                .into_iter()
                .map(|(header, ek)| RecipientOut { header, encrypted_key: B64URL.encode(ek) })
                .collect(),
            iv: B64URL.encode(iv),
            ciphertext,
            tag,
        })
    };
    json.map_err(|_| OcicryptError::Crypto("JWE JSON"))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::sync::OnceLock;

    fn rsa_key() -> &'static JwePrivateKey {
        static K: OnceLock<JwePrivateKey> = OnceLock::new();
        K.get_or_init(|| JwePrivateKey::generate_rsa(2048).unwrap())
    }

    fn ec_keys() -> Vec<JwePrivateKey> {
        vec![
            JwePrivateKey::generate_ec(EcCurve::P256),
            JwePrivateKey::generate_ec(EcCurve::P384),
            JwePrivateKey::generate_ec(EcCurve::P521),
        ]
    }

    fn clone_key(k: &JwePrivateKey) -> JwePrivateKey {
        match &k.inner {
            PrivKey::Rsa(r) => JwePrivateKey::new(PrivKey::Rsa(r.clone())),
            PrivKey::P256(s) => JwePrivateKey::new(PrivKey::P256(s.clone())),
            PrivKey::P384(s) => JwePrivateKey::new(PrivKey::P384(s.clone())),
            PrivKey::P521(s) => JwePrivateKey::new(PrivKey::P521(s.clone())),
        }
    }

    #[test]
    fn single_recipient_is_flattened_like_go_jose() {
        for key in [clone_key(rsa_key()), JwePrivateKey::generate_ec(EcCurve::P256)] {
            let jwe = encrypt(b"opts", &[key.public_key()]).unwrap();
            let v: Value = serde_json::from_slice(&jwe).unwrap();
            let keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
            let mut sorted = vec!["ciphertext", "encrypted_key", "iv", "protected", "tag"];
            sorted.sort();
            let mut got = keys.clone();
            got.sort();
            assert_eq!(got, sorted);
            let text = std::str::from_utf8(&jwe).unwrap();
            assert!(text.starts_with(r#"{"protected":""#), "{text}");
            let hdr = String::from_utf8(B64URL.decode(v["protected"].as_str().unwrap()).unwrap()).unwrap();
            if key.is_rsa() {
                assert_eq!(hdr, r#"{"alg":"RSA-OAEP","enc":"A256GCM"}"#);
            } else {
                assert!(
                    hdr.starts_with(r#"{"alg":"ECDH-ES+A256KW","enc":"A256GCM","epk":{"kty":"EC","crv":"P-256","x":""#)
                );
            }
            assert_eq!(&decrypt(&jwe, &[key]).unwrap()[..], b"opts");
        }
    }

    #[test]
    fn general_with_every_curve_and_rsa() {
        let mut keys = ec_keys();
        keys.push(clone_key(rsa_key()));
        let pubs: Vec<JwePublicKey> = keys.iter().map(JwePrivateKey::public_key).collect();
        let jwe = encrypt(b"private options", &pubs).unwrap();
        let parsed = Jwe::parse(&jwe).unwrap();
        assert_eq!(parsed.recipients.len(), 4);
        assert_eq!(String::from_utf8(B64URL.decode(&parsed.protected).unwrap()).unwrap(), r#"{"enc":"A256GCM"}"#);
        assert_eq!(parsed.recipients[3].alg(), "RSA-OAEP");
        assert_eq!(parsed.recipients[0].enc(), "A256GCM");
        for k in keys {
            assert_eq!(&decrypt(&jwe, &[k]).unwrap()[..], b"private options");
        }
    }

    #[test]
    fn wrong_keys_are_reported() {
        let a = JwePrivateKey::generate_ec(EcCurve::P256).with_label("a.pem");
        let b = JwePrivateKey::generate_ec(EcCurve::P256).with_label("b.pem");
        let jwe = encrypt(b"x", &[a.public_key()]).unwrap();
        match decrypt(&jwe, &[b]) {
            Err(OcicryptError::UnwrapFailed { attempts }) => {
                assert_eq!(attempts.len(), 1);
                assert!(
                    attempts[0].contains("recipient 0 (ECDH-ES+A256KW P-256) with b.pem (EC P-256 key"),
                    "{attempts:?}"
                );
            }
            other => panic!("{other:?}"),
        }
        // An RSA key for an EC-only JWE: nothing to try.
        match decrypt(&jwe, &[clone_key(rsa_key())]) {
            Err(OcicryptError::NoKeyForRecipients { recipients, configured }) => {
                assert!(recipients.contains("ECDH-ES+A256KW P-256"));
                assert!(configured.contains("RSA-2048"));
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(decrypt(&jwe, &[]), Err(OcicryptError::NoKeyForRecipients { .. })));
    }

    #[test]
    fn tampering_fails() {
        let k = JwePrivateKey::generate_ec(EcCurve::P384);
        let jwe = encrypt(b"secret", &[k.public_key()]).unwrap();
        let mut v: Value = serde_json::from_slice(&jwe).unwrap();
        let mut ct = B64URL.decode(v["ciphertext"].as_str().unwrap()).unwrap();
        ct[0] ^= 1;
        v["ciphertext"] = Value::String(B64URL.encode(ct));
        let e = decrypt(&serde_json::to_vec(&v).unwrap(), &[k]).unwrap_err();
        assert!(e.to_string().contains("GCM tag"), "{e}");
    }

    #[test]
    fn header_rules() {
        let k = JwePrivateKey::generate_ec(EcCurve::P256);
        let jwe = encrypt(b"x", &[k.public_key(), clone_key(rsa_key()).public_key()]).unwrap();
        // Duplicate members between protected and a recipient header.
        let mut v: Value = serde_json::from_slice(&jwe).unwrap();
        v["recipients"][0]["header"]["enc"] = Value::String("A256GCM".into());
        assert!(matches!(Jwe::parse(&serde_json::to_vec(&v).unwrap()), Err(OcicryptError::Jwe(_))));
        // zip is refused: nothing can be tried.
        let mut v: Value = serde_json::from_slice(&jwe).unwrap();
        v["unprotected"] = serde_json::json!({"zip": "DEF"});
        let e = decrypt(&serde_json::to_vec(&v).unwrap(), &[k]).unwrap_err();
        assert!(matches!(e, OcicryptError::NoKeyForRecipients { .. }), "{e}");
        assert!(e.to_string().contains("zip"), "{e}");
        for bad in [&b""[..], b"{}", b"a.b", b"{\"ciphertext\":\"\",\"recipients\":[]}", b"\xff"] {
            assert!(Jwe::parse(bad).is_err());
        }
    }

    /// Moves the shared members into the unprotected header and a per-recipient header, and uses
    /// the `aad` member: still decrypts (AAD = protected "." aad).
    #[test]
    fn split_headers_and_aad_member() {
        let k = JwePrivateKey::generate_ec(EcCurve::P256);
        let kek_point = k.public_key();
        let cek = [5u8; 32];
        let (hdr, ek) = wrap_for(&kek_point, &cek).unwrap();
        let protected = B64URL.encode(br#"{"alg":"ECDH-ES+A256KW"}"#);
        let aad_member = B64URL.encode(b"extra");
        let aad = format!("{protected}.{aad_member}");
        let iv = [1u8; 12];
        let cipher = aes_gcm::Aes256Gcm::new_from_slice(&cek).unwrap();
        let mut buf = b"hello".to_vec();
        let tag = cipher.encrypt_in_place_detached(&iv.into(), aad.as_bytes(), &mut buf).unwrap();
        let jwe = serde_json::json!({
            "protected": protected,
            "unprotected": {"enc": "A256GCM"},
            "header": {"epk": serde_json::to_value(hdr.epk.unwrap()).unwrap()},
            "encrypted_key": B64URL.encode(ek),
            "aad": aad_member,
            "iv": B64URL.encode(iv),
            "ciphertext": B64URL.encode(&buf),
            "tag": B64URL.encode(tag),
        });
        assert_eq!(&decrypt(&serde_json::to_vec(&jwe).unwrap(), &[k]).unwrap()[..], b"hello");
    }

    /// RFC 7516 Appendix A.3 (A128KW + A128CBC-HS256): the content layer with the RFC's CEK.
    #[test]
    fn rfc7516_a3_cbc_hs256() {
        let cek: [u8; 32] = [
            4, 211, 31, 197, 84, 157, 252, 254, 11, 100, 157, 250, 63, 170, 106, 206, 107, 124, 212, 45, 111, 107, 9,
            219, 200, 177, 0, 240, 143, 156, 44, 207,
        ];
        let protected = "eyJhbGciOiJBMTI4S1ciLCJlbmMiOiJBMTI4Q0JDLUhTMjU2In0";
        let iv = B64URL.decode("AxY8DCtDaGlsbGljb3RoZQ").unwrap();
        let ct = B64URL.decode("KDlTtXchhZTGufMYmOYGS4HffxPSUrfmqCHXaI9wOGY").unwrap();
        let tag = B64URL.decode("U0m_YmjN04DJvceFICbCVQ").unwrap();
        let pt = content_decrypt(ContentAlg::CbcHs(16), &cek, &iv, protected.as_bytes(), &ct, &tag).unwrap();
        assert_eq!(&pt[..], b"Live long and prosper.");
        let mut bad = tag.clone();
        bad[15] ^= 1;
        assert!(content_decrypt(ContentAlg::CbcHs(16), &cek, &iv, protected.as_bytes(), &ct, &bad).is_err());
        // A3's key wrap: A128KW of the CEK under the RFC's KEK.
        let kek = B64URL.decode("GawgguFyGrWKav7AX4VKUg").unwrap();
        let ek = B64URL.decode("6KB707dM9YTIgHtLvtgWQ8mKwboJW3of9locizkDTHzBC2IlrT1oOQ").unwrap();
        assert_eq!(&aes_kw_unwrap(&kek, &ek).unwrap()[..], &cek[..]);
    }

    /// RFC 7518 Appendix C: ECDH-ES Concat KDF example (A128GCM, apu "Alice", apv "Bob").
    #[test]
    fn rfc7518_appendix_c_kdf() {
        let z: [u8; 32] = [
            158, 86, 217, 29, 129, 113, 53, 211, 114, 131, 66, 131, 191, 132, 38, 156, 251, 49, 110, 163, 218, 128,
            106, 72, 246, 218, 167, 121, 140, 254, 144, 196,
        ];
        let k = concat_kdf(&z, "A128GCM", b"Alice", b"Bob", 16);
        assert_eq!(B64URL.encode(&k[..]), "VqqN6vgjbSBcIijNcacQGg");
        assert_eq!(concat_kdf(&z, "x", b"", b"", 64).len(), 64);
    }

    /// A128GCM / A192GCM / A256CBC-HS512 / A192CBC-HS384 through our content layer with known keys
    /// (round trip through independent encryption code: aes-gcm seal, cbc + hmac by hand).
    #[test]
    fn other_content_algs() {
        let aad = b"eyJlbmMiOiJ4In0";
        let iv12 = [3u8; 12];
        let k16 = [1u8; 16];
        let c = aes_gcm::Aes128Gcm::new_from_slice(&k16).unwrap();
        let mut buf = b"abc".to_vec();
        let tag = c.encrypt_in_place_detached(&iv12.into(), aad, &mut buf).unwrap();
        assert_eq!(&content_decrypt(ContentAlg::Gcm(16), &k16, &iv12, aad, &buf, &tag).unwrap()[..], b"abc");
        let k24 = [2u8; 24];
        let c = Aes192Gcm::new_from_slice(&k24).unwrap();
        let mut buf = b"abcd".to_vec();
        let tag = c.encrypt_in_place_detached(&iv12.into(), aad, &mut buf).unwrap();
        assert_eq!(&content_decrypt(ContentAlg::Gcm(24), &k24, &iv12, aad, &buf, &tag).unwrap()[..], b"abcd");
        fn cbc_seal<A, H>(key: &[u8], n: usize, iv: &[u8; 16], aad: &[u8], pt: &[u8]) -> (Vec<u8>, Vec<u8>)
        where
            A: cbc::cipher::BlockEncryptMut + cbc::cipher::BlockCipher + cbc::cipher::KeyInit,
            cbc::Encryptor<A>: cbc::cipher::KeyIvInit,
            H: Mac + hmac::digest::KeyInit,
        {
            use cbc::cipher::{BlockEncryptMut, KeyIvInit, block_padding::Pkcs7};
            let ct = cbc::Encryptor::<A>::new_from_slices(&key[n..], iv).unwrap().encrypt_padded_vec_mut::<Pkcs7>(pt);
            let mut m = <H as Mac>::new_from_slice(&key[..n]).unwrap();
            m.update(aad);
            m.update(iv);
            m.update(&ct);
            m.update(&((aad.len() as u64) * 8).to_be_bytes());
            (ct, m.finalize().into_bytes()[..n].to_vec())
        }
        let iv16 = [4u8; 16];
        let k64 = [6u8; 64];
        let (ct, tag) = cbc_seal::<aes::Aes256, Hmac<Sha512>>(&k64, 32, &iv16, aad, b"sixteen bytes!!!");
        assert_eq!(
            &content_decrypt(ContentAlg::CbcHs(32), &k64, &iv16, aad, &ct, &tag).unwrap()[..],
            b"sixteen bytes!!!"
        );
        let k48 = [7u8; 48];
        let (ct, tag) = cbc_seal::<aes::Aes192, Hmac<Sha384>>(&k48, 24, &iv16, aad, b"");
        assert_eq!(&content_decrypt(ContentAlg::CbcHs(24), &k48, &iv16, aad, &ct, &tag).unwrap()[..], b"");
        // A shorter tag than the profile's is refused (verify_truncated_left would accept it).
        assert!(content_decrypt(ContentAlg::CbcHs(24), &k48, &iv16, aad, &ct, &tag[..8]).is_err());
    }

    /// ECDH-ES+A128KW with apu/apv on P-256, built by hand (alg-specific KDF input and key length).
    #[test]
    fn ecdh_a128kw_with_apu_apv() {
        use p256::elliptic_curve::sec1::ToEncodedPoint;
        let k = JwePrivateKey::generate_ec(EcCurve::P256);
        let PubKey::P256(pk) = k.public_key().inner else { panic!() };
        let eph = p256::ecdh::EphemeralSecret::random(&mut OsRng);
        let z = eph.diffie_hellman(&pk);
        let kek = concat_kdf(z.raw_secret_bytes(), "ECDH-ES+A128KW", b"Alice", b"Bob", 16);
        let cek = [8u8; 16];
        let ek = aes_kw::KekAes128::try_from(&kek[..]).unwrap().wrap_vec(&cek).unwrap();
        let pt = eph.public_key().to_encoded_point(false);
        let hdr = serde_json::json!({"alg":"ECDH-ES+A128KW","enc":"A128GCM","apu":B64URL.encode("Alice"),"apv":B64URL.encode("Bob"),
            "epk":{"kty":"EC","crv":"P-256","x":B64URL.encode(pt.x().unwrap()),"y":B64URL.encode(pt.y().unwrap())}});
        let protected = B64URL.encode(hdr.to_string());
        let iv = [9u8; 12];
        let mut buf = b"ok".to_vec();
        let tag = aes_gcm::Aes128Gcm::new_from_slice(&cek)
            .unwrap()
            .encrypt_in_place_detached(&iv.into(), protected.as_bytes(), &mut buf)
            .unwrap();
        let compact = format!(
            "{protected}.{}.{}.{}.{}",
            B64URL.encode(ek),
            B64URL.encode(iv),
            B64URL.encode(&buf),
            B64URL.encode(tag)
        );
        assert_eq!(&decrypt(compact.as_bytes(), &[k]).unwrap()[..], b"ok");
    }

    #[test]
    fn rsa_oaep_256_accepted() {
        let k = rsa_key();
        let PubKey::Rsa(pk) = &k.public_key().inner else { panic!() };
        let cek = [4u8; 32];
        let ek = pk.encrypt(&mut OsRng, Oaep::new::<Sha256>(), &cek).unwrap();
        let protected = B64URL.encode(br#"{"alg":"RSA-OAEP-256","enc":"A256GCM"}"#);
        let iv = [9u8; 12];
        let mut buf = b"rsa256".to_vec();
        let tag = aes_gcm::Aes256Gcm::new_from_slice(&cek)
            .unwrap()
            .encrypt_in_place_detached(&iv.into(), protected.as_bytes(), &mut buf)
            .unwrap();
        let jwe = serde_json::json!({"protected":protected,"encrypted_key":B64URL.encode(ek),"iv":B64URL.encode(iv),
            "ciphertext":B64URL.encode(&buf),"tag":B64URL.encode(tag)});
        assert_eq!(&decrypt(jwe.to_string().as_bytes(), &[clone_key(k)]).unwrap()[..], b"rsa256");
    }

    #[test]
    fn key_formats() {
        use p256::pkcs8::EncodePrivateKey;
        use rsa::pkcs1::EncodeRsaPrivateKey;
        let ec = p256::SecretKey::random(&mut OsRng);
        let pkcs8 = ec.to_pkcs8_pem(Default::default()).unwrap();
        let sec1 = ec.to_sec1_pem(Default::default()).unwrap();
        let a = JwePrivateKey::from_bytes(pkcs8.as_bytes()).unwrap();
        let b = JwePrivateKey::from_bytes(
            format!("-----BEGIN EC PARAMETERS-----\nBggqhkjOPQMBBw==\n-----END EC PARAMETERS-----\n{}", &*sec1)
                .as_bytes(),
        )
        .unwrap();
        assert_eq!(a.description(), b.description());
        assert!(a.description().starts_with("EC P-256 key (SPKI SHA-256 "));
        let der = ec.to_sec1_der().unwrap();
        assert_eq!(JwePrivateKey::from_bytes(&der).unwrap().description(), a.description());
        let PrivKey::Rsa(r) = &rsa_key().inner else { panic!() };
        let p1 = r.to_pkcs1_pem(Default::default()).unwrap();
        let k = JwePrivateKey::from_bytes(p1.as_bytes()).unwrap();
        assert!(k.description().starts_with("RSA-2048 key"));
        let p8 = r.to_pkcs8_der().unwrap();
        assert!(JwePrivateKey::from_bytes(p8.as_bytes()).unwrap().is_rsa());
        // Public keys.
        let spki = ec.public_key().to_public_key_pem(Default::default()).unwrap();
        let pk = JwePublicKey::from_bytes(spki.as_bytes()).unwrap();
        assert_eq!(pk.description(), a.description());
        let enc = "-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----\n";
        assert!(JwePrivateKey::from_bytes(enc.as_bytes()).unwrap_err().to_string().contains("encrypted"));
        let legacy = "-----BEGIN RSA PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\n\nAAAA\n-----END RSA PRIVATE KEY-----\n";
        assert!(JwePrivateKey::from_bytes(legacy.as_bytes()).is_err());
        assert!(JwePrivateKey::from_bytes(b"garbage").is_err());
        assert!(!format!("{a:?}").contains("SecretKey"));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn parse_never_panics(data in proptest::collection::vec(any::<u8>(), 0..400)) {
            let _ = Jwe::parse(&data);
        }

        #[test]
        fn parse_json_shapes_never_panic(
            protected in "[A-Za-z0-9_-]{0,40}",
            alg in prop_oneof![Just("RSA-OAEP".to_owned()), Just("ECDH-ES+A256KW".to_owned()), Just("dir".to_owned()), ".{0,8}"],
            enc in prop_oneof![Just("A256GCM".to_owned()), Just("A128CBC-HS256".to_owned()), ".{0,8}"],
            ek in "[A-Za-z0-9_-]{0,60}",
            x in "[A-Za-z0-9_-]{0,90}",
        ) {
            let k = JwePrivateKey::generate_ec(EcCurve::P256);
            let j = serde_json::json!({"protected": protected, "header": {"alg": alg, "enc": enc,
                "epk": {"kty":"EC","crv":"P-256","x":x,"y":x}}, "encrypted_key": ek, "iv": "", "ciphertext": "", "tag": ""});
            let _ = decrypt(j.to_string().as_bytes(), &[k]);
        }

        #[test]
        fn round_trip(pt in proptest::collection::vec(any::<u8>(), 0..200)) {
            let k = JwePrivateKey::generate_ec(EcCurve::P256);
            let jwe = encrypt(&pt, &[k.public_key()]).unwrap();
            prop_assert_eq!(&decrypt(&jwe, &[k]).unwrap()[..], &pt[..]);
        }
    }
}
