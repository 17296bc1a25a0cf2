//! Binding the protocol's runtime data and initdata into evidence.
//!
//! `digest = H(JCS({"additional-evidence", "nonce", "tee-pubkey"}))` with H = SHA-384 (SHA-512 for
//! IBM SE); SNP and TDX carry it zero-padded to 64 bytes in REPORT_DATA. The initdata digest
//! `H_alg(body)` goes to SNP HOST_DATA (truncated to 32 bytes) or TDX MRCONFIGID (zero-padded to
//! 48 bytes).

use serde_json::{Value, json};
use sha2::{Digest, Sha256, Sha384, Sha512};

use crate::jcs::canonicalize;
use crate::types::TeePubKey;

/// A hash algorithm named in the protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HashAlgorithm {
    /// SHA-256.
    Sha256,
    /// SHA-384 (the protocol default).
    Sha384,
    /// SHA-512.
    Sha512,
}

impl HashAlgorithm {
    /// Parses a protocol name (`sha256`, `sha384`, `sha512`; `sm3` is not supported).
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "sha256" => Some(Self::Sha256),
            "sha384" => Some(Self::Sha384),
            "sha512" => Some(Self::Sha512),
            _ => None,
        }
    }

    /// The protocol name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Sha256 => "sha256",
            Self::Sha384 => "sha384",
            Self::Sha512 => "sha512",
        }
    }

    /// Hashes `data`.
    pub fn digest(self, data: &[u8]) -> Vec<u8> {
        match self {
            Self::Sha256 => Sha256::digest(data).to_vec(),
            Self::Sha384 => Sha384::digest(data).to_vec(),
            Self::Sha512 => Sha512::digest(data).to_vec(),
        }
    }
}

/// The object whose canonical form is hashed.
pub fn runtime_data_material(nonce: &str, tee_pubkey: &TeePubKey, additional_evidence: &str) -> String {
    let key = serde_json::to_value(tee_pubkey).unwrap_or(Value::Null);
    canonicalize(&json!({"additional-evidence": additional_evidence, "nonce": nonce, "tee-pubkey": key}))
}

/// `H(JCS({"additional-evidence", "nonce", "tee-pubkey"}))`.
pub fn runtime_data_digest(
    nonce: &str,
    tee_pubkey: &TeePubKey,
    additional_evidence: &str,
    alg: HashAlgorithm,
) -> Vec<u8> {
    alg.digest(runtime_data_material(nonce, tee_pubkey, additional_evidence).as_bytes())
}

/// A digest placed into a fixed-size field: truncated when longer, zero-padded when shorter.
pub fn fit<const N: usize>(digest: &[u8]) -> [u8; N] {
    let mut out = [0u8; N];
    let n = digest.len().min(N);
    out[..n].copy_from_slice(&digest[..n]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn example_key() -> TeePubKey {
        TeePubKey::Ec {
            crv: "P-256".into(),
            alg: "ECDH-ES+A256KW".into(),
            x: "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU".into(),
            y: "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0".into(),
        }
    }

    /// The worked example of the protocol notes (`kbs-protocol.md` §4).
    #[test]
    fn worked_example() {
        let nonce = "9WkKnSK2mC9kq1d8g1Oqsm9O0b3c3o9m3R2dIuH1mZc=";
        assert_eq!(
            runtime_data_material(nonce, &example_key(), ""),
            r#"{"additional-evidence":"","nonce":"9WkKnSK2mC9kq1d8g1Oqsm9O0b3c3o9m3R2dIuH1mZc=","tee-pubkey":{"alg":"ECDH-ES+A256KW","crv":"P-256","kty":"EC","x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU","y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}}"#
        );
        let d = runtime_data_digest(nonce, &example_key(), "", HashAlgorithm::Sha384);
        assert_eq!(
            hex::encode(&d),
            "fa810191d3d4ecd8a662c2bcf1766296a26245cbc38c3da0e2720c1e00ddfdd927b0714770f904c2ac6cc3a3b98b150a"
        );
        use base64::Engine;
        assert_eq!(
            base64::engine::general_purpose::STANDARD.encode(&d),
            "+oEBkdPU7NimYsK88XZilqJiRcvDjD2g4nIMHgDd/dknsHFHcPkEwqxsw6O5ixUK"
        );
        let rd: [u8; 64] = fit(&d);
        assert_eq!(&rd[..48], &d[..]);
        assert_eq!(rd[48..], [0u8; 16]);
        // The wrong {nonce, tee-pubkey}-only hash from the notes differs.
        let wrong = canonicalize(&json!({"nonce": nonce, "tee-pubkey": serde_json::to_value(example_key()).unwrap()}));
        assert!(hex::encode(Sha384::digest(wrong.as_bytes())).starts_with("c36419e6"));
    }
}
