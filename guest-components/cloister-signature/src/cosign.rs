//! Cosign key-based signatures: an ECDSA P-256 / SHA-256 signature (ASN.1 DER, base64 in the
//! `dev.cosignproject.cosign/signature` annotation) over the exact payload bytes, verified with a
//! PEM public key (SubjectPublicKeyInfo, what `cosign generate-key-pair` writes as `cosign.pub`).

use base64::Engine as _;
use p256::ecdsa::signature::Verifier as _;
use p256::ecdsa::{Signature, VerifyingKey};
use p256::pkcs8::DecodePublicKey as _;

/// Longest base64 signature text accepted (a DER P-256 signature is at most 72 bytes).
const MAX_SIGNATURE_B64: usize = 1024;

/// A trusted cosign public key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CosignKey {
    key: VerifyingKey,
}

impl CosignKey {
    /// Parses a PEM `PUBLIC KEY` (SubjectPublicKeyInfo) holding an ECDSA P-256 key. Other key
    /// types (RSA, Ed25519, other curves) are refused: cosign's default and the only kind the
    /// guest verifies.
    pub fn from_pem(data: &[u8]) -> Result<Self, String> {
        let text = std::str::from_utf8(data).map_err(|_| "the public key is not PEM text".to_string())?;
        let text = text.trim();
        let blocks = text.matches("-----BEGIN ").count();
        if blocks != 1 {
            return Err(format!("expected exactly one PEM block, found {blocks}"));
        }
        if !text.starts_with("-----BEGIN PUBLIC KEY-----") {
            return Err("expected a PEM \"PUBLIC KEY\" block".into());
        }
        let key = VerifyingKey::from_public_key_pem(text)
            .map_err(|e| format!("not an ECDSA P-256 public key (SubjectPublicKeyInfo PEM): {e}"))?;
        Ok(Self { key })
    }

    /// Verifies `signature_b64` (base64 of a DER ECDSA signature) over `payload`.
    pub fn verify(&self, payload: &[u8], signature_b64: &str) -> Result<(), String> {
        if signature_b64.len() > MAX_SIGNATURE_B64 {
            return Err(format!("signature annotation is longer than {MAX_SIGNATURE_B64} characters"));
        }
        let der = base64::engine::general_purpose::STANDARD
            .decode(signature_b64.trim())
            .map_err(|e| format!("signature is not valid base64: {e}"))?;
        let sig = Signature::from_der(&der).map_err(|_| "signature is not a DER ECDSA P-256 signature".to_string())?;
        self.key.verify(payload, &sig).map_err(|_| "cryptographic signature verification failed".to_string())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
pub(crate) mod tests {
    use super::*;
    use p256::ecdsa::SigningKey;
    use p256::ecdsa::signature::Signer as _;
    use p256::pkcs8::{EncodePublicKey as _, LineEnding};

    /// A deterministic test key (scalar = `seed` repeated).
    pub(crate) fn test_key(seed: u8) -> (SigningKey, String) {
        let sk = SigningKey::from_bytes(&[seed; 32].into()).unwrap();
        let pem = sk.verifying_key().to_public_key_pem(LineEnding::LF).unwrap();
        (sk, pem)
    }

    pub(crate) fn sign(sk: &SigningKey, payload: &[u8]) -> String {
        let sig: Signature = sk.sign(payload);
        base64::engine::general_purpose::STANDARD.encode(sig.to_der().as_bytes())
    }

    #[test]
    fn sign_and_verify() {
        let (sk, pem) = test_key(7);
        let key = CosignKey::from_pem(pem.as_bytes()).unwrap();
        let sig = sign(&sk, b"payload");
        key.verify(b"payload", &sig).unwrap();
        assert!(key.verify(b"payloaD", &sig).unwrap_err().contains("verification failed"));
        let (_, other) = test_key(9);
        assert!(CosignKey::from_pem(other.as_bytes()).unwrap().verify(b"payload", &sig).is_err());
        assert!(key.verify(b"payload", "!!").unwrap_err().contains("base64"));
        assert!(key.verify(b"payload", "AAAA").unwrap_err().contains("DER"));
        assert!(key.verify(b"payload", &"A".repeat(2000)).is_err());
        // Raw r||s (not DER) is refused, as cosign and containers/image do.
        let raw: Signature = sk.sign(b"payload");
        let raw_b64 = base64::engine::general_purpose::STANDARD.encode(raw.to_bytes());
        assert!(key.verify(b"payload", &raw_b64).is_err());
    }

    #[test]
    fn key_formats() {
        let (_, pem) = test_key(3);
        assert!(CosignKey::from_pem(format!("\n{pem}\n\n").as_bytes()).is_ok());
        assert!(CosignKey::from_pem(format!("{pem}{pem}").as_bytes()).unwrap_err().contains("exactly one"));
        assert!(CosignKey::from_pem(b"").is_err());
        assert!(CosignKey::from_pem(&[0xff, 0xfe]).is_err());
        assert!(
            CosignKey::from_pem(b"-----BEGIN PGP PUBLIC KEY BLOCK-----\n-----END PGP PUBLIC KEY BLOCK-----").is_err()
        );
        let sec1 = pem.replace("PUBLIC KEY", "EC PUBLIC KEY");
        assert!(CosignKey::from_pem(sec1.as_bytes()).is_err());
        // A P-384 key is refused.
        let p384 = p384::SecretKey::from_bytes(&[5u8; 48].into()).unwrap().public_key();
        let p384_pem = p384::pkcs8::EncodePublicKey::to_public_key_pem(&p384, LineEnding::LF).unwrap();
        assert!(CosignKey::from_pem(p384_pem.as_bytes()).unwrap_err().contains("P-256"));
    }
}
