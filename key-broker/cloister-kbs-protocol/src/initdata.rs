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
    /// The pod annotation is not base64 of a gzip stream of UTF-8 text.
    #[error("initdata annotation {ANNOTATION}: {0}")]
    Annotation(String),
}

/// The pod annotation that carries initdata to the runtime (Kata's name): standard base64 of
/// the gzip-compressed TOML document.
pub const ANNOTATION: &str = "io.katacontainers.config.hypervisor.cc_init_data";

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

    /// Decodes the [`ANNOTATION`] value into the TOML body (whose bytes the digest covers).
    /// Decompression stops at [`MAX_INITDATA_LEN`], so a small annotation cannot expand into an
    /// unbounded allocation.
    pub fn body_from_annotation(value: &str) -> Result<String, InitDataError> {
        use base64::Engine;
        use std::io::Read;
        let bad = |m: String| InitDataError::Annotation(m);
        let gz = base64::engine::general_purpose::STANDARD
            .decode(value.trim())
            .map_err(|e| bad(format!("not standard base64: {e}")))?;
        let mut body = Vec::new();
        flate2::read::GzDecoder::new(&gz[..])
            .take(MAX_INITDATA_LEN as u64 + 1)
            .read_to_end(&mut body)
            .map_err(|e| bad(format!("not a gzip stream: {e}")))?;
        if body.len() > MAX_INITDATA_LEN {
            return Err(InitDataError::TooLarge(body.len()));
        }
        String::from_utf8(body).map_err(|_| bad("the document is not UTF-8".into()))
    }

    /// Encodes a TOML body as the [`ANNOTATION`] value (gzip, then standard base64), as
    /// CoCo's tooling does. The gzip header carries no name or time, so the value is stable.
    pub fn annotation_value(body: &str) -> Result<String, InitDataError> {
        use base64::Engine;
        use std::io::Write;
        if body.len() > MAX_INITDATA_LEN {
            return Err(InitDataError::TooLarge(body.len()));
        }
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        gz.write_all(body.as_bytes())
            .and_then(|()| gz.finish())
            .map(|bytes| base64::engine::general_purpose::STANDARD.encode(bytes))
            .map_err(|e| InitDataError::Annotation(format!("compressing: {e}")))
    }

    /// Parses the [`ANNOTATION`] value.
    pub fn from_annotation(value: &str) -> Result<Self, InitDataError> {
        Self::parse(&Self::body_from_annotation(value)?)
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

    fn gzip_base64(body: &[u8]) -> String {
        use base64::Engine;
        use std::io::Write;
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(body).unwrap();
        base64::engine::general_purpose::STANDARD.encode(gz.finish().unwrap())
    }

    #[test]
    fn the_pod_annotation_decodes_to_the_same_document_and_digest() {
        let a = gzip_base64(DOC.as_bytes());
        let from_annotation = InitData::from_annotation(&a).unwrap();
        assert_eq!(from_annotation, InitData::parse(DOC).unwrap());
        // The digest covers the decompressed TOML bytes, not the annotation.
        assert_eq!(from_annotation.digest, HashAlgorithm::Sha384.digest(DOC.as_bytes()));
        assert_eq!(InitData::body_from_annotation(&format!("  {a}\n")).unwrap(), DOC);
        // Our encoder round-trips and is deterministic.
        let ours = InitData::annotation_value(DOC).unwrap();
        assert_eq!(InitData::body_from_annotation(&ours).unwrap(), DOC);
        assert_eq!(ours, InitData::annotation_value(DOC).unwrap());
    }

    #[test]
    fn bad_annotations_are_refused_with_the_reason() {
        assert!(matches!(InitData::from_annotation("%%%"), Err(InitDataError::Annotation(m)) if m.contains("base64")));
        let not_gzip = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, DOC);
        assert!(
            matches!(InitData::from_annotation(&not_gzip), Err(InitDataError::Annotation(m)) if m.contains("gzip"))
        );
        assert!(matches!(
            InitData::from_annotation(&gzip_base64(&[0xff, 0xfe])),
            Err(InitDataError::Annotation(m)) if m.contains("UTF-8")
        ));
        // A gzip bomb stops at the limit instead of expanding.
        let bomb = gzip_base64(&vec![b'#'; MAX_INITDATA_LEN + 4096]);
        assert!(bomb.len() < 8192);
        assert!(
            matches!(InitData::from_annotation(&bomb), Err(InitDataError::TooLarge(n)) if n == MAX_INITDATA_LEN + 1)
        );
        assert!(matches!(InitData::from_annotation(&gzip_base64(b"version = 1")), Err(InitDataError::Parse(_))));
    }
}
