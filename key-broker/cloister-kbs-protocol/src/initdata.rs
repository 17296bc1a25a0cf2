//! The initdata document: a TOML text with `version`, `algorithm` and a `[data]` table of file
//! contents (`aa.toml`, `cdh.toml`, `policy.rego`, …). Its digest, `H_algorithm(body bytes)`, is
//! what the host must have placed in SNP HOST_DATA (truncated to 32 bytes) or TDX MRCONFIGID
//! (zero-padded to 48 bytes) at launch.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::{Value, json};

use crate::binding::{HashAlgorithm, fit};

/// The largest initdata body accepted (the CoCo guest limits it similarly).
pub const MAX_INITDATA_LEN: usize = 1 << 20;

/// Why an initdata document was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum InitDataError {
    /// The format is not `toml`.
    #[error("initdata format {0:?} is not supported (only \"toml\")")]
    Format(String),
    /// Larger than [`MAX_INITDATA_LEN`].
    #[error("initdata is {0} bytes, more than the {MAX_INITDATA_LEN}-byte limit")]
    TooLarge(usize),
    /// Not valid TOML or the wrong shape.
    #[error("initdata is not a valid document: {0}")]
    Parse(String),
    /// `algorithm` names an unsupported hash.
    #[error("initdata algorithm {0:?} is not one of sha256, sha384, sha512")]
    Algorithm(String),
    /// `version` is not `0.1.0`.
    #[error("initdata version {0:?} is not 0.1.0")]
    Version(String),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Doc {
    version: String,
    algorithm: String,
    #[serde(default)]
    data: BTreeMap<String, String>,
}

/// A parsed initdata document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InitData {
    /// The hash algorithm it names.
    pub algorithm: HashAlgorithm,
    /// Version (`0.1.0`).
    pub version: String,
    /// The `[data]` table.
    pub data: BTreeMap<String, String>,
    /// `H_algorithm(body)`.
    pub digest: Vec<u8>,
}

impl InitData {
    /// Parses a TOML body.
    pub fn parse(body: &str) -> Result<Self, InitDataError> {
        if body.len() > MAX_INITDATA_LEN {
            return Err(InitDataError::TooLarge(body.len()));
        }
        let doc: Doc = toml::from_str(body).map_err(|e| InitDataError::Parse(e.message().to_owned()))?;
        if doc.version != "0.1.0" {
            return Err(InitDataError::Version(doc.version));
        }
        let algorithm = HashAlgorithm::from_name(&doc.algorithm).ok_or(InitDataError::Algorithm(doc.algorithm))?;
        Ok(Self { algorithm, version: doc.version, data: doc.data, digest: algorithm.digest(body.as_bytes()) })
    }

    /// Parses the `init-data` member of an attestation (format must be `toml`).
    pub fn from_message(format: &str, body: &str) -> Result<Self, InitDataError> {
        if format != "toml" {
            return Err(InitDataError::Format(format.to_owned()));
        }
        Self::parse(body)
    }

    /// The value expected in SNP HOST_DATA.
    pub fn snp_host_data(&self) -> [u8; 32] {
        fit(&self.digest)
    }

    /// The value expected in TDX MRCONFIGID.
    pub fn tdx_mr_config_id(&self) -> [u8; 48] {
        fit(&self.digest)
    }

    /// The claims policies see as `init_data_claims`: the `[data]` table, with `aa.toml` and
    /// `cdh.toml` additionally parsed (as `aa`/`cdh`) when they are valid TOML.
    pub fn claims(&self) -> Value {
        let mut o = serde_json::Map::new();
        for (k, v) in &self.data {
            o.insert(k.clone(), json!(v));
        }
        for (file, key) in [("aa.toml", "aa"), ("cdh.toml", "cdh")] {
            if let Some(text) = self.data.get(file)
                && let Ok(t) = toml::from_str::<toml::Table>(text)
                && let Ok(v) = serde_json::to_value(t)
            {
                o.insert(key.to_owned(), v);
            }
        }
        Value::Object(o)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC: &str = r#"version = "0.1.0"
algorithm = "sha384"
[data]
"aa.toml" = '''
[token_configs.kbs]
url = "https://kbs.example:8080"
'''
"policy.rego" = "package agent_policy\ndefault AllowRequestsFailingPolicy := true\n"
"#;

    #[test]
    fn parses_and_digests() {
        let d = InitData::parse(DOC).unwrap();
        assert_eq!(d.algorithm, HashAlgorithm::Sha384);
        assert_eq!(d.digest, HashAlgorithm::Sha384.digest(DOC.as_bytes()));
        assert_eq!(&d.snp_host_data()[..], &d.digest[..32]);
        assert_eq!(&d.tdx_mr_config_id()[..], &d.digest[..]);
        assert_eq!(d.claims()["aa"]["token_configs"]["kbs"]["url"], "https://kbs.example:8080");
    }

    #[test]
    fn refuses_bad_documents() {
        assert!(matches!(InitData::from_message("json", DOC), Err(InitDataError::Format(_))));
        assert!(matches!(InitData::parse("version = 1"), Err(InitDataError::Parse(_))));
        assert!(matches!(
            InitData::parse("version = \"0.1.0\"\nalgorithm = \"md5\"\n"),
            Err(InitDataError::Algorithm(_))
        ));
        assert!(matches!(
            InitData::parse("version = \"0.2.0\"\nalgorithm = \"sha256\"\n"),
            Err(InitDataError::Version(_))
        ));
        assert!(matches!(
            InitData::parse("version = \"0.1.0\"\nalgorithm = \"sha256\"\nextra = 1\n"),
            Err(InitDataError::Parse(_))
        ));
    }
}
