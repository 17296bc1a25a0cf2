//! The guest's own configuration, from initdata: the agent policy (`policy.rego`), the key broker
//! (`cdh.toml` `[kbc] url`/`kbs_cert`, else `aa.toml` `[token_configs.kbs] url`/`cert`), and
//! the attestation gate every image pull goes through when a key broker is configured.
//!
//! Initdata arrives over a host-controlled channel (fw_cfg), so it is untrusted until its digest
//! matches what the TEE reports (SNP HOST_DATA, TDX MRCONFIGID). [`check_binding`] compares the
//! two before the agent adopts the policy; the key broker checks it again on every attestation.

#![forbid(unsafe_code)]

use std::path::Path;
use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use cloister_kbs_client::{Attester, KbsClient};
use cloister_kbs_protocol::initdata::InitData;

use crate::image::{BoxFuture, ImageError, ImageProvider, PreparedRootfs};
use crate::metrics::{Step, StepMetrics};

/// Why the guest configuration is unusable.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GuestConfigError {
    /// The initdata document is malformed.
    #[error("initdata: {0}")]
    InitData(#[from] cloister_kbs_protocol::initdata::InitDataError),
    /// An embedded TOML file is malformed.
    #[error("initdata {file}: {why}")]
    Embedded {
        /// `cdh.toml` or `aa.toml`.
        file: &'static str,
        /// Why.
        why: String,
    },
    /// The initdata digest is not what the TEE reports.
    #[error(
        "initdata digest {digest} does not match the TEE evidence's {field} {reported}: the host changed the initdata"
    )]
    Mismatch {
        /// HOST_DATA or MRCONFIGID.
        field: &'static str,
        /// Digest of the initdata the agent was given (hex, truncated to the field).
        digest: String,
        /// What the evidence reports (hex).
        reported: String,
    },
    /// The evidence could not be obtained or read.
    #[error("checking initdata against the TEE evidence: {0}")]
    Evidence(String),
}

/// Where the key broker is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KbsConfig {
    /// Base URL (`http://…` or `https://…`).
    pub url: String,
    /// The broker's certificate or CA (PEM), when given.
    pub cert_pem: Option<String>,
}

/// The guest configuration initdata carries.
#[derive(Debug, Clone)]
pub struct GuestConfig {
    /// The parsed document (with its digest).
    pub initdata: InitData,
    /// The TOML body exactly as received (sent to the key broker, which digests it again).
    pub body: String,
    /// The agent policy, when initdata has one (`policy.rego`).
    pub policy: Option<String>,
    /// The key broker, when configured.
    pub kbs: Option<KbsConfig>,
    /// The signature policy's key-broker resource (`cdh.toml` `[image]
    /// image_security_policy_uri`, `kbs:///…`), when configured.
    pub image_policy: Option<String>,
}

fn embedded(
    data: &std::collections::BTreeMap<String, String>,
    file: &'static str,
) -> Result<Option<toml::Table>, GuestConfigError> {
    data.get(file)
        .map(|t| {
            toml::from_str::<toml::Table>(t)
                .map_err(|e| GuestConfigError::Embedded { file, why: e.message().to_owned() })
        })
        .transpose()
}

fn lookup<'a>(t: &'a toml::Table, path: &[&str]) -> Option<&'a str> {
    let (last, parents) = path.split_last()?;
    let mut cur = t;
    for p in parents {
        cur = cur.get(*p)?.as_table()?;
    }
    cur.get(*last)?.as_str()
}

impl GuestConfig {
    /// Parses an initdata TOML body.
    pub fn parse(body: &str) -> Result<Self, GuestConfigError> {
        let initdata = InitData::parse(body)?;
        let policy = initdata.data.get("policy.rego").cloned();
        let cdh = embedded(&initdata.data, "cdh.toml")?;
        let aa = embedded(&initdata.data, "aa.toml")?;
        let kbs = cdh
            .as_ref()
            .and_then(|c| {
                lookup(c, &["kbc", "url"]).map(|u| KbsConfig {
                    url: u.to_owned(),
                    cert_pem: lookup(c, &["kbc", "kbs_cert"]).map(str::to_owned),
                })
            })
            .or_else(|| {
                aa.as_ref().and_then(|a| {
                    lookup(a, &["token_configs", "kbs", "url"]).map(|u| KbsConfig {
                        url: u.to_owned(),
                        cert_pem: lookup(a, &["token_configs", "kbs", "cert"]).map(str::to_owned),
                    })
                })
            })
            .filter(|k| !k.url.is_empty());
        let image_policy = cdh
            .as_ref()
            .and_then(|c| lookup(c, &["image", "image_security_policy_uri"]))
            .filter(|u| !u.is_empty())
            .map(str::to_owned);
        if let Some(u) = &image_policy {
            let bad = |why: &str| GuestConfigError::Embedded {
                file: "cdh.toml",
                why: format!("image_security_policy_uri {u:?}: {why}"),
            };
            if !u.starts_with("kbs:///") {
                return Err(bad("only kbs:/// resources are supported"));
            }
            if kbs.is_none() {
                return Err(bad("needs a key broker ([kbc] url)"));
            }
        }
        Ok(GuestConfig { initdata, body: body.to_owned(), policy, kbs, image_policy })
    }

    /// Reads and parses an initdata file.
    pub fn load(path: &Path) -> Result<Self, GuestConfigError> {
        let body = std::fs::read_to_string(path)
            .map_err(|e| GuestConfigError::Evidence(format!("reading {}: {e}", path.display())))?;
        Self::parse(&body)
    }
}

/// The DER certificates in a PEM text (`CERTIFICATE` blocks; anything else is ignored).
pub fn certificates_from_pem(pem: &str) -> Result<Vec<Vec<u8>>, GuestConfigError> {
    let bad = |why: String| GuestConfigError::Embedded { file: "kbs certificate", why };
    let mut out = Vec::new();
    let mut cur: Option<String> = None;
    for line in pem.lines().map(str::trim) {
        match (&mut cur, line) {
            (None, "-----BEGIN CERTIFICATE-----") => cur = Some(String::new()),
            (Some(b64), "-----END CERTIFICATE-----") => {
                out.push(STANDARD.decode(b64.as_bytes()).map_err(|e| bad(format!("not base64: {e}")))?);
                cur = None;
            }
            (Some(b64), l) => b64.push_str(l),
            (None, _) => {}
        }
    }
    if cur.is_some() {
        return Err(bad("unterminated CERTIFICATE block".into()));
    }
    if out.is_empty() {
        return Err(bad("no CERTIFICATE block".into()));
    }
    Ok(out)
}

/// Compares the initdata digest with the TEE's evidence (`attester` asked with zero report
/// data): SNP HOST_DATA must equal the first 32 bytes of the digest, TDX MRCONFIGID the digest
/// zero-padded to 48 bytes.
pub fn check_binding(initdata: &InitData, attester: &dyn Attester) -> Result<(), GuestConfigError> {
    let ev = attester.evidence(&[0u8; 64]).map_err(|e| GuestConfigError::Evidence(e.to_string()))?;
    let field = |name: &str| -> Result<Vec<u8>, GuestConfigError> {
        let s = ev
            .get(name)
            .and_then(|v| v.as_str())
            .ok_or_else(|| GuestConfigError::Evidence(format!("evidence has no {name}")))?;
        STANDARD.decode(s).map_err(|e| GuestConfigError::Evidence(format!("{name} is not base64: {e}")))
    };
    if ev.get("report").is_some() {
        let report = cloister_evidence::snp::AttestationReport::from_bytes(&field("report")?)
            .map_err(|e| GuestConfigError::Evidence(e.to_string()))?;
        let expected = initdata.snp_host_data();
        let reported = report.host_data.0;
        if expected != reported {
            return Err(GuestConfigError::Mismatch {
                field: "HOST_DATA",
                digest: hex::encode(expected),
                reported: hex::encode(reported),
            });
        }
        return Ok(());
    }
    if ev.get("quote").is_some() {
        let quote = cloister_evidence::tdx::Quote::parse(&field("quote")?)
            .map_err(|e| GuestConfigError::Evidence(e.to_string()))?;
        let reported = match quote.body() {
            cloister_evidence::tdx::QuoteBody::Td10(r) => *r.mr_config_id.as_bytes(),
            cloister_evidence::tdx::QuoteBody::Td15(r) => *r.base.mr_config_id.as_bytes(),
            cloister_evidence::tdx::QuoteBody::Td15Ex(r) => *r.base.base.mr_config_id.as_bytes(),
            _ => return Err(GuestConfigError::Evidence("the quote is not a TD quote".into())),
        };
        let expected = initdata.tdx_mr_config_id();
        if expected != reported {
            return Err(GuestConfigError::Mismatch {
                field: "MRCONFIGID",
                digest: hex::encode(expected),
                reported: hex::encode(reported),
            });
        }
        return Ok(());
    }
    Err(GuestConfigError::Evidence("evidence has neither an SNP report nor a TDX quote".into()))
}

/// The key broker's appraisal in an EAR token (`submods.*.ear.status`): `Ok` when every
/// submodule is `affirming`, else the first other status with its trust vector. The guest reads
/// the token it just received over its (pinned) channel to the broker; it does not need to
/// verify the broker's signature to learn the broker's own verdict.
pub fn ear_verdict(token: &str) -> Result<(), String> {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let payload = token.split('.').nth(1).ok_or("the token is not a JWT")?;
    let claims: serde_json::Value = serde_json::from_slice(
        &URL_SAFE_NO_PAD.decode(payload.trim_end_matches('=')).map_err(|e| format!("token payload: {e}"))?,
    )
    .map_err(|e| format!("token payload: {e}"))?;
    let submods = claims.get("submods").and_then(|s| s.as_object()).ok_or("the token has no submods")?;
    if submods.is_empty() {
        return Err("the token appraises nothing".into());
    }
    for (name, s) in submods {
        let status = s.get("ear.status").and_then(|v| v.as_str()).unwrap_or("none");
        if status != "affirming" {
            let vector = s.get("ear.trustworthiness-vector").map(|v| v.to_string()).unwrap_or_default();
            return Err(format!("the key broker's appraisal of {name} is {status} (trust vector {vector})"));
        }
    }
    Ok(())
}

/// An [`ImageProvider`] that attests to the key broker before every pull: no attestation, or an
/// appraisal that is not `affirming`, no image. The token is reused while it is valid, so a
/// pod's second container does not attest again.
pub struct AttestedImages {
    kbs: Arc<KbsClient>,
    inner: Box<dyn ImageProvider>,
    metrics: Arc<StepMetrics>,
}

impl AttestedImages {
    /// Gates `inner` on attestation through `kbs`.
    pub fn new(kbs: Arc<KbsClient>, inner: Box<dyn ImageProvider>) -> Self {
        AttestedImages { kbs, inner, metrics: Arc::default() }
    }

    /// Records attestation timings in `metrics`.
    pub fn with_metrics(mut self, metrics: Arc<StepMetrics>) -> Self {
        self.metrics = metrics;
        self
    }
}

/// The key broker as the source of image layer key-encryption keys (CoCo's
/// `attestation-agent` key provider), through the data hub; each release is timed.
pub struct BrokerKeks {
    cdh: cloister_image::secrets::CdhSecrets,
    metrics: Arc<StepMetrics>,
}

impl BrokerKeks {
    /// KEKs fetched through `kbs` (attesting when its token is missing or expired).
    pub fn new(kbs: Arc<KbsClient>, metrics: Arc<StepMetrics>) -> Self {
        BrokerKeks { cdh: cloister_image::secrets::CdhSecrets(Arc::new(cloister_cdh::Cdh::new(kbs))), metrics }
    }

    /// The decryption configuration a pull uses: the `attestation-agent` provider over these KEKs.
    pub fn decrypt_config(self) -> cloister_ocicrypt::DecryptConfig {
        let provider = cloister_ocicrypt::AttestationAgentProvider::new(self);
        cloister_ocicrypt::DecryptConfig { jwe_keys: Vec::new(), providers: vec![Arc::new(provider)] }
    }
}

impl cloister_ocicrypt::KekSource for BrokerKeks {
    fn get_resource<'a>(
        &'a self,
        uri: &'a str,
    ) -> cloister_ocicrypt::BoxFuture<'a, Result<zeroize::Zeroizing<Vec<u8>>, cloister_ocicrypt::KekSourceError>> {
        Box::pin(async move {
            let started = std::time::Instant::now();
            let kek = cloister_ocicrypt::KekSource::get_resource(&self.cdh, uri).await;
            match &kek {
                Ok(_) => {
                    self.metrics.record(Step::KeyRelease, started.elapsed());
                    tracing::info!(kid = uri, elapsed = ?started.elapsed(), "layer key-encryption key released");
                }
                Err(e) => tracing::warn!(kid = uri, error = %e, "layer key-encryption key refused"),
            }
            kek
        })
    }
}

impl ImageProvider for AttestedImages {
    fn prepare<'a>(
        &'a self,
        reference: &'a str,
        container_dir: &'a Path,
    ) -> BoxFuture<'a, Result<PreparedRootfs, ImageError>> {
        Box::pin(async move {
            let started = std::time::Instant::now();
            let (token, attested) =
                self.kbs.ensure_token().await.map_err(|e| ImageError::Attestation(e.to_string()))?;
            ear_verdict(&token).map_err(ImageError::Attestation)?;
            if attested {
                self.metrics.record(Step::Attestation, started.elapsed());
                tracing::info!(elapsed = ?started.elapsed(), "attested to the key broker");
            }
            self.inner.prepare(reference, container_dir).await
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn kbs_from_cdh_then_aa() {
        let doc = |data: &str| format!("version = \"0.1.0\"\nalgorithm = \"sha256\"\n[data]\n{data}");
        let g = GuestConfig::parse(&doc(
            "\"cdh.toml\" = '''\n[kbc]\nname = \"cc_kbc\"\nurl = \"http://10.0.2.2:8080\"\n'''\n\"aa.toml\" = '''\n[token_configs.kbs]\nurl = \"http://other\"\n'''\n\"policy.rego\" = \"package agent_policy\"\n",
        ))
        .unwrap();
        assert_eq!(g.kbs, Some(KbsConfig { url: "http://10.0.2.2:8080".into(), cert_pem: None }));
        assert_eq!(g.policy.as_deref(), Some("package agent_policy"));
        let g = GuestConfig::parse(&doc(
            "\"aa.toml\" = '''\n[token_configs.kbs]\nurl = \"https://k\"\ncert = \"PEM\"\n'''\n",
        ))
        .unwrap();
        assert_eq!(g.kbs, Some(KbsConfig { url: "https://k".into(), cert_pem: Some("PEM".into()) }));
        assert!(GuestConfig::parse(&doc("")).unwrap().kbs.is_none());
        let with_policy = |u: &str, kbc: &str| {
            GuestConfig::parse(&doc(&format!(
                "\"cdh.toml\" = '''\n{kbc}[image]\nimage_security_policy_uri = \"{u}\"\n'''\n"
            )))
        };
        let g = with_policy("kbs:///default/security-policy/test", "[kbc]\nurl = \"http://k\"\n").unwrap();
        assert_eq!(g.image_policy.as_deref(), Some("kbs:///default/security-policy/test"));
        assert!(with_policy("file:///etc/policy.json", "[kbc]\nurl = \"http://k\"\n").is_err());
        assert!(with_policy("kbs:///default/security-policy/test", "").is_err());
        assert!(matches!(
            GuestConfig::parse(&doc("\"cdh.toml\" = \"[kbc\"\n")),
            Err(GuestConfigError::Embedded { .. })
        ));
        assert!(matches!(GuestConfig::parse("version = 1"), Err(GuestConfigError::InitData(_))));
    }

    #[test]
    fn ear_verdicts() {
        use base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let jwt = |claims: serde_json::Value| format!("e30.{}.sig", URL_SAFE_NO_PAD.encode(claims.to_string()));
        let ok = serde_json::json!({"submods": {"cpu0": {"ear.status": "affirming"}}});
        ear_verdict(&jwt(ok)).unwrap();
        let bad = serde_json::json!({"submods": {"cpu0": {"ear.status": "contraindicated",
            "ear.trustworthiness-vector": {"hardware": 97}}}});
        let e = ear_verdict(&jwt(bad)).unwrap_err();
        assert!(e.contains("cpu0 is contraindicated") && e.contains("97"), "{e}");
        assert!(ear_verdict(&jwt(serde_json::json!({"submods": {}}))).is_err());
        assert!(ear_verdict("not a token").is_err());
    }

    #[test]
    fn binding_to_emulated_snp_evidence() {
        let platform =
            Arc::new(cloister_emulate::snp::EmulatedSnp::generate(cloister_evidence::snp::Product::Milan).unwrap());
        let body = "version = \"0.1.0\"\nalgorithm = \"sha384\"\n[data]\n\"policy.rego\" = \"package agent_policy\"\n";
        let init = InitData::parse(body).unwrap();
        let good = cloister_kbs_client::EmulatedSnpAttester::new(platform.clone(), [1; 48], init.snp_host_data());
        check_binding(&init, &good).unwrap();
        let bad = cloister_kbs_client::EmulatedSnpAttester::new(platform, [1; 48], [9; 32]);
        let e = check_binding(&init, &bad).unwrap_err();
        assert!(matches!(e, GuestConfigError::Mismatch { field: "HOST_DATA", .. }), "{e}");
        assert!(e.to_string().contains("the host changed the initdata"));
    }
}
