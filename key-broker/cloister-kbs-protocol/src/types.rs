//! KBS protocol messages, spelled exactly as on the wire (note the mix of kebab-case and
//! snake_case that `kbs-types` uses).

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The only protocol version this crate speaks.
pub const PROTOCOL_VERSION: &str = "0.4.0";

/// The session cookie's name.
pub const SESSION_COOKIE: &str = "kbs-session-id";

/// The fixed prefix of error `type` URLs.
pub const ERROR_TYPE_PREFIX: &str = "https://github.com/confidential-containers/kbs/errors/";

/// A TEE name as it appears in `Request.tee`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Tee {
    /// AMD SEV-SNP.
    #[serde(rename = "snp")]
    Snp,
    /// Intel TDX.
    #[serde(rename = "tdx")]
    Tdx,
    /// IBM Secure Execution.
    #[serde(rename = "se")]
    Se,
    /// Intel SGX.
    #[serde(rename = "sgx")]
    Sgx,
    /// Azure SNP with vTPM.
    #[serde(rename = "az-snp-vtpm")]
    AzSnpVtpm,
    /// Azure TDX with vTPM.
    #[serde(rename = "az-tdx-vtpm")]
    AzTdxVtpm,
    /// Arm CCA.
    #[serde(rename = "cca")]
    Cca,
    /// Hygon CSV.
    #[serde(rename = "csv")]
    Csv,
    /// Hygon DCU.
    #[serde(rename = "hygondcu")]
    HygonDcu,
    /// NVIDIA GPU.
    #[serde(rename = "nvidia")]
    Nvidia,
    /// NVIDIA DPU (kbs-types 0.18).
    #[serde(rename = "nvidia-dpu")]
    NvidiaDpu,
    /// TPM.
    #[serde(rename = "tpm")]
    Tpm,
    /// CoCo's fake TEE for tests (no signature at all).
    #[serde(rename = "sample")]
    Sample,
    /// CoCo's fake device.
    #[serde(rename = "sampledevice")]
    SampleDevice,
}

impl Tee {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Tee::Snp => "snp",
            Tee::Tdx => "tdx",
            Tee::Se => "se",
            Tee::Sgx => "sgx",
            Tee::AzSnpVtpm => "az-snp-vtpm",
            Tee::AzTdxVtpm => "az-tdx-vtpm",
            Tee::Cca => "cca",
            Tee::Csv => "csv",
            Tee::HygonDcu => "hygondcu",
            Tee::Nvidia => "nvidia",
            Tee::NvidiaDpu => "nvidia-dpu",
            Tee::Tpm => "tpm",
            Tee::Sample => "sample",
            Tee::SampleDevice => "sampledevice",
        }
    }
}

impl std::fmt::Display for Tee {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `POST /kbs/v0/auth` body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Request {
    /// Protocol version, must be `0.4.0`.
    pub version: String,
    /// The TEE the client will attest with.
    pub tee: Tee,
    /// Free-form parameters (`supported-hash-algorithms`, …).
    #[serde(rename = "extra-params", default)]
    pub extra_params: Value,
}

/// `POST /kbs/v0/auth` reply.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Challenge {
    /// The nonce (standard base64 of 32 random bytes).
    pub nonce: String,
    /// `""` except for IBM SE.
    #[serde(rename = "extra-params", default)]
    pub extra_params: Value,
}

/// A TEE public key, tagged by `kty` as in kbs-types.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kty")]
pub enum TeePubKey {
    /// An elliptic-curve key (`P-256`, `P-521`).
    #[serde(rename = "EC")]
    Ec {
        /// Curve name.
        crv: String,
        /// Key-management algorithm (`ECDH-ES+A256KW`).
        alg: String,
        /// X coordinate, base64url without padding.
        x: String,
        /// Y coordinate, base64url without padding.
        y: String,
    },
    /// An RSA key.
    #[serde(rename = "RSA")]
    Rsa {
        /// Key-management algorithm (`RSA-OAEP-256`).
        alg: String,
        /// Modulus, base64url without padding.
        n: String,
        /// Exponent, base64url without padding.
        e: String,
    },
    /// An algorithm key pair (ML-KEM; kbs-types 0.18). Not supported for encryption here.
    #[serde(rename = "AKP")]
    Akp {
        /// Algorithm.
        alg: String,
        /// Public key, base64url.
        #[serde(rename = "pub")]
        public: String,
    },
}

/// The `runtime-data` member of [`Attestation`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RuntimeData {
    /// Echo of the challenge nonce.
    pub nonce: String,
    /// The key resources will be encrypted to.
    #[serde(rename = "tee-pubkey")]
    pub tee_pubkey: TeePubKey,
}

/// Initdata as sent in [`Attestation`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InitData {
    /// Only `toml`.
    pub format: String,
    /// The initdata document's text.
    pub body: String,
}

/// Evidence of the primary TEE and of additional devices.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CompositeEvidence {
    /// The TEE-specific evidence JSON.
    pub primary_evidence: Value,
    /// A string holding JSON, `""` without devices.
    #[serde(default)]
    pub additional_evidence: String,
}

/// `POST /kbs/v0/attest` body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Attestation {
    /// Initdata, if the guest was launched with one.
    #[serde(rename = "init-data", default)]
    pub init_data: Option<InitData>,
    /// Nonce and TEE key.
    #[serde(rename = "runtime-data")]
    pub runtime_data: RuntimeData,
    /// The evidence.
    #[serde(rename = "tee-evidence")]
    pub tee_evidence: CompositeEvidence,
}

/// `POST /kbs/v0/attest` reply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttestationToken {
    /// The EAR JWT.
    pub token: String,
}

/// A flattened-JSON JWE (`GET /kbs/v0/resource/…` reply).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Response {
    /// Protected header, base64url.
    pub protected: String,
    /// Wrapped content key, base64url.
    pub encrypted_key: String,
    /// GCM IV, base64url.
    pub iv: String,
    /// Ciphertext, base64url.
    pub ciphertext: String,
    /// GCM tag, base64url.
    pub tag: String,
    /// Additional authenticated data (never sent by KBSes; plain string in kbs-types 0.18).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aad: Option<String>,
}

/// An error body (`{"type": …, "detail": …}`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorInformation {
    /// `ERROR_TYPE_PREFIX` + variant name.
    #[serde(rename = "type")]
    pub error_type: String,
    /// What went wrong, precisely.
    pub detail: String,
}

impl ErrorInformation {
    /// The variant name (the `type` URL without its prefix).
    pub fn kind(&self) -> &str {
        self.error_type.strip_prefix(ERROR_TYPE_PREFIX).unwrap_or(&self.error_type)
    }
}

/// RVPS registration message (`POST /kbs/v0/reference-value`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReferenceValueMessage {
    /// Must be `0.1.0`.
    pub version: String,
    /// Extractor type (`sample`).
    #[serde(rename = "type")]
    pub kind: String,
    /// Standard base64 of the provenance JSON.
    pub payload: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attestation_example_from_notes_round_trips() {
        let text = r#"{
  "init-data": null,
  "runtime-data": {
    "nonce": "9WkKnSK2mC9kq1d8g1Oqsm9O0b3c3o9m3R2dIuH1mZc=",
    "tee-pubkey": {"kty":"EC","crv":"P-256","alg":"ECDH-ES+A256KW",
                   "x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
                   "y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}
  },
  "tee-evidence": {
    "primary_evidence": {"svn":"1","report_data":"+oEBkdPU7NimYsK88XZilqJiRcvDjD2g4nIMHgDd/dknsHFHcPkEwqxsw6O5ixUK"},
    "additional_evidence": ""
  }
}"#;
        let a: Attestation = serde_json::from_str(text).unwrap();
        assert!(a.init_data.is_none());
        assert!(matches!(a.runtime_data.tee_pubkey, TeePubKey::Ec { ref crv, .. } if crv == "P-256"));
        let back: Attestation = serde_json::from_str(&serde_json::to_string(&a).unwrap()).unwrap();
        assert_eq!(a, back);
    }

    #[test]
    fn request_and_tee_names() {
        let r: Request = serde_json::from_str(
            r#"{"version":"0.4.0","tee":"az-snp-vtpm","extra-params":{"supported-hash-algorithms":["sha384"]}}"#,
        )
        .unwrap();
        assert_eq!(r.tee, Tee::AzSnpVtpm);
        assert!(serde_json::from_str::<Request>(r#"{"version":"0.4.0","tee":"sev"}"#).is_err());
        assert_eq!(serde_json::to_string(&Tee::SampleDevice).unwrap(), "\"sampledevice\"");
    }

    #[test]
    fn error_kind() {
        let e = ErrorInformation { error_type: format!("{ERROR_TYPE_PREFIX}PolicyDeny"), detail: "x".into() };
        assert_eq!(e.kind(), "PolicyDeny");
    }
}
