//! Small helpers: Go-compatible `[]byte` JSON encoding, base64 engines, hex.

use std::fmt;

use base64::Engine;
use serde::de::{self, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use zeroize::Zeroizing;

/// Standard base64 with padding (Go's `base64.StdEncoding`, used for every `[]byte` in ocicrypt JSON
/// and for layer annotations).
pub(crate) const STD: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;
/// base64url without padding (inside JWEs).
pub(crate) const B64URL: base64::engine::GeneralPurpose = base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// Lower-case hex.
pub(crate) fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 15)]));
    }
    s
}

/// Constant-time equality of two byte strings of the same length (lengths are not secret).
pub(crate) fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

/// `sha256:<hex>` of `data`.
#[cfg(test)]
pub(crate) fn sha256_digest(data: &[u8]) -> String {
    use sha2::Digest;
    format!("sha256:{}", hex(&sha2::Sha256::digest(data)))
}

/// A byte string as Go's `encoding/json` writes `[]byte` (a standard base64 string), read from either
/// that or a JSON array of integers 0–255 (what CoCo's Rust key providers emit). Zeroized on drop,
/// since it may carry private options.
#[derive(Clone, Default)]
pub struct GoBytes(pub Zeroizing<Vec<u8>>);

impl PartialEq for GoBytes {
    /// Constant time for equal lengths (the bytes may be private options).
    fn eq(&self, other: &Self) -> bool {
        ct_eq(&self.0, &other.0)
    }
}

impl Eq for GoBytes {}

impl GoBytes {
    /// Wraps bytes.
    pub fn new(bytes: impl Into<Vec<u8>>) -> Self {
        GoBytes(Zeroizing::new(bytes.into()))
    }

    /// The bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for GoBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "GoBytes({} bytes)", self.0.len())
    }
}

impl Serialize for GoBytes {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let text = Zeroizing::new(STD.encode(self.0.as_slice()));
        s.serialize_str(&text)
    }
}

struct GoBytesVisitor;

impl<'de> Visitor<'de> for GoBytesVisitor {
    type Value = GoBytes;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a standard base64 string or an array of integers 0-255")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<GoBytes, E> {
        // Go's decoder skips CR and LF inside the string; so do we.
        let decoded = if v.contains(['\r', '\n']) {
            let cleaned: Zeroizing<String> = Zeroizing::new(v.chars().filter(|c| *c != '\r' && *c != '\n').collect());
            STD.decode(cleaned.as_bytes())
        } else {
            STD.decode(v)
        };
        decoded.map(|b| GoBytes(Zeroizing::new(b))).map_err(|_| E::custom("not standard base64 (with padding)"))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<GoBytes, A::Error> {
        let mut out = Zeroizing::new(Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1 << 20)));
        while let Some(b) = seq.next_element::<u8>()? {
            out.push(b);
        }
        Ok(GoBytes(out))
    }
}

impl<'de> Deserialize<'de> for GoBytes {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<GoBytes, D::Error> {
        d.deserialize_any(GoBytesVisitor)
    }
}

/// Decodes standard base64 (with padding) or says which `what` was not.
pub(crate) fn std_b64(what: &str, s: &str) -> Result<Vec<u8>, String> {
    STD.decode(s).map_err(|_| format!("{what} is not standard base64"))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn go_bytes_both_encodings() {
        let a: GoBytes = serde_json::from_str(r#""aGk=""#).unwrap();
        let b: GoBytes = serde_json::from_str("[104, 105]").unwrap();
        assert_eq!(a, b);
        assert_eq!(a.as_bytes(), b"hi");
        assert_eq!(serde_json::to_string(&b).unwrap(), r#""aGk=""#);
        let c: GoBytes = serde_json::from_str(r#""aG\nk=""#).unwrap();
        assert_eq!(c.as_bytes(), b"hi");
        assert!(serde_json::from_str::<GoBytes>("[256]").is_err());
        assert!(serde_json::from_str::<GoBytes>(r#""a-_""#).is_err());
        assert!(serde_json::from_str::<GoBytes>("3").is_err());
        let e: Option<GoBytes> = serde_json::from_str("null").unwrap();
        assert!(e.is_none());
    }

    #[test]
    fn hex_and_digest() {
        assert_eq!(hex(&[0, 0xab, 0xff]), "00abff");
        assert_eq!(sha256_digest(b""), "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    }
}
