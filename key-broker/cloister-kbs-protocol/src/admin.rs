//! Admin bearer tokens (trustee's `[admin.authentication.bearer_jwt]`): compact JWS signed with
//! EdDSA (Ed25519) or ES256, claims `{"iss","sub","aud","role","iat","exp"}`. Keys are PEM:
//! PKCS#8 private keys for minting, SPKI public keys for checking.

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD as B64URL};
use ring::rand::SystemRandom;
use ring::signature::{self, EcdsaKeyPair, Ed25519KeyPair, KeyPair};
use serde_json::{Value, json};
use zeroize::Zeroizing;

/// Admin-token failures.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AdminTokenError {
    /// Not a PEM / DER key of a supported type.
    #[error("key: {0}")]
    Key(String),
    /// The token is not a well-formed JWS.
    #[error("token is not a compact JWS: {0}")]
    Malformed(&'static str),
    /// Unsupported `alg`.
    #[error("token algorithm {0:?} is not EdDSA or ES256")]
    Algorithm(String),
    /// No configured key verifies the signature.
    #[error("token signature does not verify under any configured admin key")]
    Signature,
    /// Past `exp`, before `nbf`, or no `exp`.
    #[error("token time: {0}")]
    Time(String),
    /// `iss`/`aud` mismatch.
    #[error("token {0}")]
    Claim(String),
}

/// The public half of an admin key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdminPublicKey {
    /// Ed25519 (32 bytes).
    Ed25519(Vec<u8>),
    /// P-256 uncompressed point.
    P256(Vec<u8>),
}

const ED25519_SPKI_PREFIX: [u8; 12] = [0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00];
const P256_SPKI_PREFIX: [u8; 27] = [
    0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce,
    0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00, 0x04,
];

/// Decodes the first PEM block (any label) or passes DER through.
pub fn pem_or_der(bytes: &[u8]) -> Result<Zeroizing<Vec<u8>>, AdminTokenError> {
    let text = match std::str::from_utf8(bytes) {
        Ok(t) if t.contains("-----BEGIN") => t,
        _ => return Ok(Zeroizing::new(bytes.to_vec())),
    };
    let body: String = text
        .lines()
        .skip_while(|l| !l.starts_with("-----BEGIN"))
        .skip(1)
        .take_while(|l| !l.starts_with("-----END"))
        .collect::<Vec<_>>()
        .concat();
    STANDARD.decode(body.trim()).map(Zeroizing::new).map_err(|e| AdminTokenError::Key(format!("PEM body: {e}")))
}

/// PEM encoding.
pub fn to_pem(label: &str, der: &[u8]) -> String {
    let b = STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for chunk in b.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(chunk).unwrap_or_default());
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

impl AdminPublicKey {
    /// From an SPKI (PEM or DER).
    pub fn from_spki(bytes: &[u8]) -> Result<Self, AdminTokenError> {
        let der = pem_or_der(bytes)?;
        if der.len() == 44 && der[..12] == ED25519_SPKI_PREFIX {
            return Ok(Self::Ed25519(der[12..].to_vec()));
        }
        if der.len() == 91 && der[..27] == P256_SPKI_PREFIX {
            return Ok(Self::P256(der[26..].to_vec()));
        }
        Err(AdminTokenError::Key("public key is not an Ed25519 or P-256 SubjectPublicKeyInfo".into()))
    }

    /// As SPKI PEM.
    pub fn to_spki_pem(&self) -> String {
        let der = match self {
            Self::Ed25519(k) => [&ED25519_SPKI_PREFIX[..], k].concat(),
            Self::P256(p) => [&P256_SPKI_PREFIX[..26], p].concat(),
        };
        to_pem("PUBLIC KEY", &der)
    }
}

/// A key that mints admin tokens.
pub enum AdminSigningKey {
    /// Ed25519 (`EdDSA`).
    Ed25519(Ed25519KeyPair),
    /// P-256 (`ES256`).
    P256(EcdsaKeyPair),
}

impl std::fmt::Debug for AdminSigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AdminSigningKey(..)")
    }
}

impl AdminSigningKey {
    /// A fresh Ed25519 key and its PKCS#8 PEM.
    pub fn generate() -> Result<(Self, Zeroizing<String>), AdminTokenError> {
        let rng = SystemRandom::new();
        let doc = Ed25519KeyPair::generate_pkcs8(&rng).map_err(|_| AdminTokenError::Key("generation failed".into()))?;
        let pem = Zeroizing::new(to_pem("PRIVATE KEY", doc.as_ref()));
        Ok((Self::from_pkcs8(doc.as_ref())?, pem))
    }

    /// From a PKCS#8 private key (PEM or DER), Ed25519 or P-256.
    pub fn from_pkcs8(bytes: &[u8]) -> Result<Self, AdminTokenError> {
        let der = pem_or_der(bytes)?;
        if let Ok(k) = Ed25519KeyPair::from_pkcs8_maybe_unchecked(&der) {
            return Ok(Self::Ed25519(k));
        }
        EcdsaKeyPair::from_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, &der, &SystemRandom::new())
            .map(Self::P256)
            .map_err(|_| AdminTokenError::Key("private key is not PKCS#8 Ed25519 or P-256".into()))
    }

    /// The public key.
    pub fn public(&self) -> AdminPublicKey {
        match self {
            Self::Ed25519(k) => AdminPublicKey::Ed25519(k.public_key().as_ref().to_vec()),
            Self::P256(k) => AdminPublicKey::P256(k.public_key().as_ref().to_vec()),
        }
    }

    /// A token with `role`, valid from `now` for `lifetime` seconds.
    pub fn mint(&self, role: &str, now: u64, lifetime: u64) -> Result<String, AdminTokenError> {
        let alg = match self {
            Self::Ed25519(_) => "EdDSA",
            Self::P256(_) => "ES256",
        };
        let header = json!({"alg": alg, "typ": "JWT"});
        let claims = json!({"sub": "admin", "role": role, "iat": now, "exp": now + lifetime});
        let input = format!("{}.{}", B64URL.encode(header.to_string()), B64URL.encode(claims.to_string()));
        let sig = match self {
            Self::Ed25519(k) => k.sign(input.as_bytes()).as_ref().to_vec(),
            Self::P256(k) => k
                .sign(&SystemRandom::new(), input.as_bytes())
                .map_err(|_| AdminTokenError::Key("signing failed".into()))?
                .as_ref()
                .to_vec(),
        };
        Ok(format!("{input}.{}", B64URL.encode(sig)))
    }
}

/// Requirements on a token beyond its signature.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Expect {
    /// Required `iss`.
    pub issuer: Option<String>,
    /// Required member of `aud` (string or list).
    pub audience: Option<String>,
}

/// Verifies `token` against `key` at `now` and returns its claims.
pub fn verify(token: &str, key: &AdminPublicKey, expect: &Expect, now: u64) -> Result<Value, AdminTokenError> {
    let mut parts = token.split('.');
    let (Some(h), Some(p), Some(s), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
        return Err(AdminTokenError::Malformed("not three parts"));
    };
    let header: Value = B64URL
        .decode(h)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or(AdminTokenError::Malformed("header"))?;
    let sig = B64URL.decode(s).map_err(|_| AdminTokenError::Malformed("signature"))?;
    let signed = &token.as_bytes()[..h.len() + 1 + p.len()];
    let alg = header.get("alg").and_then(Value::as_str).unwrap_or_default();
    let ok = match (alg, key) {
        ("EdDSA", AdminPublicKey::Ed25519(k)) => {
            signature::UnparsedPublicKey::new(&signature::ED25519, k).verify(signed, &sig).is_ok()
        }
        ("ES256", AdminPublicKey::P256(k)) => {
            signature::UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, k).verify(signed, &sig).is_ok()
        }
        ("EdDSA" | "ES256", _) => false,
        (other, _) => return Err(AdminTokenError::Algorithm(other.to_owned())),
    };
    if !ok {
        return Err(AdminTokenError::Signature);
    }
    let claims: Value = B64URL
        .decode(p)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or(AdminTokenError::Malformed("claims"))?;
    let exp = claims.get("exp").and_then(Value::as_u64).ok_or(AdminTokenError::Time("no exp claim".into()))?;
    if now >= exp {
        return Err(AdminTokenError::Time(format!("expired at {exp}, now {now}")));
    }
    if let Some(nbf) = claims.get("nbf").and_then(Value::as_u64)
        && nbf > now + 60
    {
        return Err(AdminTokenError::Time(format!("not valid before {nbf}")));
    }
    if let Some(iss) = &expect.issuer
        && claims.get("iss").and_then(Value::as_str) != Some(iss)
    {
        return Err(AdminTokenError::Claim(format!("iss is not {iss:?}")));
    }
    if let Some(aud) = &expect.audience {
        let ok = match claims.get("aud") {
            Some(Value::String(a)) => a == aud,
            Some(Value::Array(a)) => a.iter().any(|x| x.as_str() == Some(aud)),
            _ => false,
        };
        if !ok {
            return Err(AdminTokenError::Claim(format!("aud does not contain {aud:?}")));
        }
    }
    Ok(claims)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mint_and_verify_both_algorithms() {
        let (ed, pem) = AdminSigningKey::generate().unwrap();
        let ed2 = AdminSigningKey::from_pkcs8(pem.as_bytes()).unwrap();
        assert_eq!(ed.public(), ed2.public());
        let pubkey = AdminPublicKey::from_spki(ed.public().to_spki_pem().as_bytes()).unwrap();
        let t = ed.mint("admin", 1000, 60).unwrap();
        assert_eq!(verify(&t, &pubkey, &Expect::default(), 1001).unwrap()["role"], "admin");
        assert!(matches!(verify(&t, &pubkey, &Expect::default(), 1060), Err(AdminTokenError::Time(_))));
        let exp = Expect { issuer: Some("x".into()), audience: None };
        assert!(matches!(verify(&t, &pubkey, &exp, 1001), Err(AdminTokenError::Claim(_))));

        let rng = SystemRandom::new();
        let doc = EcdsaKeyPair::generate_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
        let es = AdminSigningKey::from_pkcs8(to_pem("PRIVATE KEY", doc.as_ref()).as_bytes()).unwrap();
        let es_pub = AdminPublicKey::from_spki(es.public().to_spki_pem().as_bytes()).unwrap();
        let t2 = es.mint("admin", 1000, 60).unwrap();
        assert!(verify(&t2, &es_pub, &Expect::default(), 1001).is_ok());
        assert_eq!(verify(&t2, &pubkey, &Expect::default(), 1001), Err(AdminTokenError::Signature));
        assert_eq!(verify(&t, &es_pub, &Expect::default(), 1001), Err(AdminTokenError::Signature));
        let mut parts: Vec<&str> = t.split('.').collect();
        let forged = B64URL.encode(r#"{"role":"admin","exp":99999999999}"#);
        parts[1] = &forged;
        assert_eq!(verify(&parts.join("."), &pubkey, &Expect::default(), 1001), Err(AdminTokenError::Signature));
        let none = format!("{}.{}.", B64URL.encode(r#"{"alg":"none"}"#), forged);
        assert!(matches!(verify(&none, &pubkey, &Expect::default(), 1001), Err(AdminTokenError::Algorithm(_))));
    }
}
