//! Evidence verification for each TEE, through the bundled verifier crate.
//!
//! Primary-evidence JSON accepted per TEE:
//! * `snp`: `{"report": "<base64 of the 1184-byte report>", "cert_table": "<base64 of the
//!   extended-report certificate table>"?}`; without a table the VCEK comes from the configured
//!   KDS-layout cache directory.
//! * `tdx`: `{"quote": "<base64>", "cc_eventlog": "<base64>"?}` (trustee's field names).
//! * `sample`: `{"svn": "1", "report_data": "<base64 of the digest>"}` (CoCo's fake TEE; no
//!   signature, so its claims are labelled `sample` and the default policy denies them).
//! * `se`: trustee's `SeAttestationResponse` JSON, answering the `SeAttestationRequest` that
//!   was this session's challenge nonce ([`Verifiers::se_challenge`]). The request is encrypted
//!   only to host-key documents that chain to a configured root; the host that answered decides
//!   the label (`se`, or `emulated_se` under an emulated root).
//!
//! SNP evidence that chains to a configured emulated root is labelled `emulated_snp` (and TDX
//! `emulated_tdx`); only the AMD/Intel roots produce `snp`/`tdx` claims.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use cloister_evidence::se::{AttestationFlags, BootHdrTags, SeAttestationRequest};
use cloister_kbs_protocol::Tee;
use cloister_verifier::se::hostkey::{HostKeyAuthority, HostKeyRoot, P521HostKeyWrap, pem_or_der_all};
use cloister_verifier::se::{SeReference, SeRequestSecrets, SeSecretSealer, build_arcb, verify_se_response};
use cloister_verifier::snp::{
    CertSource, KDS_BASE_URL, KdsDirectory, KdsFetch, Product, SnpCertificates, SnpVerifier, TrustAnchors,
    VerifyOptions,
};
use cloister_verifier::tdx::{TdxCollateral, TdxTrustAnchors, TdxVerifier, TdxVerifyOptions};
use serde::Deserialize as _;
use serde_json::{Value, json};

use crate::config::{EmulatedRoot, SeConfig, VerifierConfig};
use crate::error::ConfigError;

/// What verified evidence says.
#[derive(Debug, Clone)]
pub struct Verified {
    /// Claims key: `snp`, `emulated_snp`, `tdx`, `emulated_tdx`, `sample`.
    pub tee_key: &'static str,
    /// The verifier's claims.
    pub claims: Value,
    /// The evidence's report-data field (64 bytes for SNP/TDX; the digest for sample).
    pub report_data: Vec<u8>,
    /// HOST_DATA (SNP) or MRCONFIGID (TDX); empty for sample.
    pub config_field: Vec<u8>,
}

/// Largest KDS response accepted.
const MAX_KDS_BODY: usize = 64 * 1024;

/// Fetches from AMD KDS (or a proxy) over HTTPS with the web PKI roots, 10 s timeouts.
#[derive(Debug)]
pub struct HttpKdsFetch {
    base: String,
    client: std::sync::OnceLock<Result<reqwest::blocking::Client, String>>,
}

impl HttpKdsFetch {
    /// A fetcher for `base` (`https://kdsintf.amd.com` or a proxy; `http://` only for tests).
    pub fn new(base: &str) -> Self {
        Self { base: base.trim_end_matches('/').to_owned(), client: std::sync::OnceLock::new() }
    }

    fn client(&self) -> Result<&reqwest::blocking::Client, String> {
        self.client
            .get_or_init(|| {
                let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
                let mut roots = rustls::RootCertStore::empty();
                roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
                let tls = rustls::ClientConfig::builder_with_provider(provider)
                    .with_safe_default_protocol_versions()
                    .map_err(|e| e.to_string())?
                    .with_root_certificates(roots)
                    .with_no_client_auth();
                reqwest::blocking::Client::builder()
                    .use_preconfigured_tls(tls)
                    .timeout(std::time::Duration::from_secs(10))
                    .connect_timeout(std::time::Duration::from_secs(5))
                    .build()
                    .map_err(|e| e.to_string())
            })
            .as_ref()
            .map_err(Clone::clone)
    }
}

impl KdsFetch for HttpKdsFetch {
    fn get(&self, url: &str) -> Result<Vec<u8>, String> {
        let url = url.replacen(KDS_BASE_URL, &self.base, 1);
        let resp = self.client()?.get(&url).send().map_err(|e| format!("GET {url}: {e}"))?;
        if !resp.status().is_success() {
            return Err(format!("GET {url}: HTTP {}", resp.status()));
        }
        let body = resp.bytes().map_err(|e| format!("GET {url}: {e}"))?;
        if body.len() > MAX_KDS_BODY {
            return Err(format!("GET {url}: response larger than {MAX_KDS_BODY} bytes"));
        }
        Ok(body.to_vec())
    }
}

/// The verifiers a broker uses.
pub struct Verifiers {
    snp: SnpVerifier,
    snp_cache: Option<KdsDirectory>,
    snp_fetch: Option<HttpKdsFetch>,
    tdx: (TdxVerifier, Option<TdxCollateral>),
    tdx_emulated: Vec<(TdxVerifier, Option<TdxCollateral>)>,
    se: Option<SeSetup>,
    allow_debug: bool,
}

/// IBM SE: the verified host keys requests are encrypted to, and the image guests run.
#[derive(Debug)]
struct SeSetup {
    wrap: P521HostKeyWrap,
    reference: SeReference,
    tags: BootHdrTags,
}

/// An emulated root's certificate, checked against its SHA-256 pin.
fn pinned_root(r: &EmulatedRoot, what: &str) -> Result<Vec<u8>, ConfigError> {
    let der = cloister_kbs_protocol::admin::pem_or_der(&read(&r.cert)?)
        .map_err(|e| ConfigError::Invalid(format!("{what} {}: {e}", r.cert.display())))?
        .to_vec();
    let actual = hex::encode(ring::digest::digest(&ring::digest::SHA256, &der).as_ref());
    if !actual.eq_ignore_ascii_case(r.sha256.trim()) {
        return Err(ConfigError::Invalid(format!("{what} {}: SHA-256 is {actual}", r.cert.display())));
    }
    Ok(der)
}

fn se_setup(c: &SeConfig, now: i64) -> Result<SeSetup, ConfigError> {
    let invalid =
        |p: &std::path::Path, e: &dyn std::fmt::Display| ConfigError::Invalid(format!("{}: {e}", p.display()));
    let mut authority = HostKeyAuthority::new();
    for p in &c.roots {
        for der in pem_or_der_all(&read(p)?, "CERTIFICATE") {
            authority = authority.with_root(&der, HostKeyRoot::Ibm).map_err(|e| invalid(p, &e))?;
        }
    }
    for r in &c.emulated_roots {
        let der = pinned_root(r, "emulated SE root")?;
        authority = authority.with_root(&der, HostKeyRoot::Emulated).map_err(|e| invalid(&r.cert, &e))?;
        tracing::warn!(root = %r.sha256, "EMULATED IBM SE root trusted: evidence under it proves nothing about hardware");
    }
    for p in &c.certs {
        for der in pem_or_der_all(&read(p)?, "CERTIFICATE") {
            authority = authority.with_cert(&der).map_err(|e| invalid(p, &e))?;
        }
    }
    for p in &c.crls {
        for der in pem_or_der_all(&read(p)?, "X509 CRL") {
            authority = authority.with_crl(&der).map_err(|e| invalid(p, &e))?;
        }
    }
    let mut hosts = Vec::new();
    for p in &c.host_key_documents {
        let docs = pem_or_der_all(&read(p)?, "CERTIFICATE");
        let der = docs.first().ok_or_else(|| invalid(p, &"no certificate"))?;
        hosts.push(authority.verify(der, now).map_err(|e| invalid(p, &e))?);
    }
    let wrap = P521HostKeyWrap::new(hosts).map_err(|e| ConfigError::Invalid(format!("[verifier.se] {e}")))?;
    let hdr =
        cloister_measure::se::parse_se_header(&read(&c.image_header)?).map_err(|e| invalid(&c.image_header, &e))?;
    let mut reference = SeReference::from_header(&hdr);
    for h in wrap.hosts() {
        reference = reference.allow_attestation_phkh(cloister_measure::Sha256Digest(h.phkh()));
    }
    let tags = BootHdrTags::from_array(&hdr.boot_hdr_tags());
    tracing::info!(hosts = wrap.hosts().len(), tag = %hex::encode(tags.tag), "IBM SE attestation configured");
    Ok(SeSetup { wrap, reference, tags })
}

impl std::fmt::Debug for Verifiers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifiers").field("snp_roots", &self.snp.anchors().roots()).finish_non_exhaustive()
    }
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

fn read(path: &std::path::Path) -> Result<Vec<u8>, ConfigError> {
    std::fs::read(path).map_err(|e| ConfigError::Io { path: path.display().to_string(), error: e.to_string() })
}

fn b64(field: &str, v: &Value) -> Result<Vec<u8>, String> {
    let s = v.get(field).and_then(Value::as_str).ok_or_else(|| format!("evidence has no string member {field:?}"))?;
    STANDARD.decode(s.trim()).map_err(|e| format!("evidence member {field:?} is not base64: {e}"))
}

impl Verifiers {
    /// Builds verifiers from configuration (AMD and Intel roots built in, plus named emulated roots).
    pub fn from_config(c: &VerifierConfig) -> Result<Self, ConfigError> {
        let mut anchors = TrustAnchors::amd().map_err(|e| ConfigError::Invalid(e.to_string()))?;
        for r in &c.snp_emulated_roots {
            let product = match r.product.as_deref().unwrap_or("Milan") {
                "Milan" => Product::Milan,
                "Genoa" => Product::Genoa,
                "Turin" => Product::Turin,
                other => return Err(ConfigError::Invalid(format!("unknown SNP product {other:?}"))),
            };
            let der = read(&r.cert)?;
            anchors = anchors
                .with_root(product, &der, &r.sha256)
                .map_err(|e| ConfigError::Invalid(format!("emulated SNP root {}: {e}", r.cert.display())))?;
            tracing::warn!(root = %r.sha256, "EMULATED SNP root trusted: evidence under it proves nothing about hardware");
        }
        let tdx_options = || TdxVerifyOptions { allow_debug: c.insecure_allow_debug, ..TdxVerifyOptions::default() };
        let tdx_collateral = match &c.tdx_collateral {
            Some(p) => Some(TdxCollateral::from_json(&read(p)?).map_err(|e| ConfigError::Invalid(e.to_string()))?),
            None => None,
        };
        let mut tdx_emulated = Vec::new();
        for r in &c.tdx_emulated_roots {
            let der = pinned_root(r, "emulated TDX root")?;
            let anchors = TdxTrustAnchors::empty().with_root(&der).map_err(|e| ConfigError::Invalid(e.to_string()))?;
            let collateral = match &r.collateral {
                Some(p) => Some(TdxCollateral::from_json(&read(p)?).map_err(|e| ConfigError::Invalid(e.to_string()))?),
                None => None,
            };
            tdx_emulated.push((TdxVerifier::new(anchors, tdx_options()), collateral));
            tracing::warn!(root = %r.sha256, "EMULATED TDX root trusted: evidence under it proves nothing about hardware");
        }
        Ok(Self {
            snp: SnpVerifier::new(anchors),
            snp_cache: c.snp_cert_cache.clone().map(KdsDirectory::new),
            snp_fetch: c.snp_kds_fetch.then(|| HttpKdsFetch::new(c.snp_kds_url.as_deref().unwrap_or(KDS_BASE_URL))),
            tdx: (TdxVerifier::new(TdxTrustAnchors::intel(), tdx_options()), tdx_collateral),
            tdx_emulated,
            se: c.se.as_ref().map(|sc| se_setup(sc, unix_now())).transpose()?,
            allow_debug: c.insecure_allow_debug,
        })
    }

    /// Whether IBM SE is configured.
    pub fn has_se(&self) -> bool {
        self.se.is_some()
    }

    /// A fresh SE attestation request (trustee's `SeAttestationRequest` JSON, the `/auth`
    /// nonce): a new measurement key and nonce, encrypted to the configured host keys, and sealed
    /// with `sealer` so that any replica holding the key can verify the answer.
    pub fn se_challenge(&self, sealer: &SeSecretSealer) -> Result<String, String> {
        let se = self
            .se
            .as_ref()
            .ok_or("TEE se is not configured on this key broker ([attestation_service.verifier.se])")?;
        let rng = ring::rand::SystemRandom::new();
        let secrets = SeRequestSecrets::generate(AttestationFlags::TRUSTEE, &rng).map_err(|e| format!("se: {e}"))?;
        let arcb = build_arcb(&secrets, &se.wrap, &rng).map_err(|e| format!("se: {e}"))?;
        let (encr_measurement_key, encr_request_nonce) = sealer.seal(&secrets, &rng).map_err(|e| format!("se: {e}"))?;
        let request = SeAttestationRequest {
            request_blob: arcb,
            measurement_size: secrets.measurement_size(),
            additional_size: secrets.additional_size(),
            encr_measurement_key,
            encr_request_nonce,
            image_hdr_tags: se.tags,
            runtime_data_digest: None,
        };
        serde_json::to_string(&request).map_err(|e| format!("se: {e}"))
    }

    /// Verifies SE evidence answering `request_json` (the session's challenge), whose user data
    /// must start with `expected_report_data`.
    pub fn verify_se(
        &self,
        evidence: &Value,
        request_json: &str,
        sealer: &SeSecretSealer,
        expected_report_data: &[u8],
    ) -> Result<Verified, String> {
        let se = self
            .se
            .as_ref()
            .ok_or("TEE se is not configured on this key broker ([attestation_service.verifier.se])")?;
        let request: SeAttestationRequest =
            serde_json::from_str(request_json).map_err(|_| "se: this session's challenge is not an SE request")?;
        let secrets = sealer
            .unseal(&request.encr_measurement_key, &request.encr_request_nonce)
            .map_err(|e| format!("se {}: {e}", e.check()))?;
        // Already parsed JSON (bounded by the body limit): converted without re-serialising.
        let response = cloister_evidence::se::SeAttestationResponse::deserialize(evidence)
            .map_err(|e| format!("se evidence: {e}"))?;
        if response.encr_measurement_key != request.encr_measurement_key
            || response.encr_request_nonce != request.encr_request_nonce
        {
            return Err("se request: the evidence answers another attestation request than this session's".into());
        }
        let verified = verify_se_response(&response, &secrets, &se.reference, Some(expected_report_data))
            .map_err(|e| format!("se {}: {e}", e.check()))?;
        let host = verified
            .additional
            .attestation_phkh
            .and_then(|p| se.wrap.hosts().iter().find(|h| h.phkh() == p))
            .ok_or("se attestation_phkh: the answering host is not one the request was encrypted to")?;
        Ok(Verified {
            tee_key: match host.root() {
                HostKeyRoot::Ibm => "se",
                HostKeyRoot::Emulated => "emulated_se",
            },
            claims: verified.claims(),
            report_data: verified.report_data().to_vec(),
            config_field: Vec::new(),
        })
    }

    /// Verifies `evidence` of `tee` at `now`.
    pub fn verify(&self, tee: Tee, evidence: &Value, now: u64) -> Result<Verified, String> {
        match tee {
            Tee::Sample => {
                let rd = b64("report_data", evidence)?;
                let svn = evidence.get("svn").cloned().unwrap_or(json!("1"));
                Ok(Verified {
                    tee_key: "sample",
                    claims: json!({
                        "svn": svn,
                        "launch_digest": "abcde",
                        "platform_version": {"major": 1, "minor": 4},
                        "debug": false,
                        "report_data": hex::encode(&rd),
                    }),
                    report_data: rd,
                    config_field: Vec::new(),
                })
            }
            Tee::Snp => self.verify_snp(evidence, now),
            Tee::Tdx => self.verify_tdx(evidence, now),
            Tee::Se => Err("se evidence is verified against its session's request (Verifiers::verify_se)".into()),
            other => Err(format!("TEE {other} is not supported by this key broker (snp, tdx, se, sample)")),
        }
    }

    fn verify_snp(&self, evidence: &Value, now: u64) -> Result<Verified, String> {
        // CoCo guest-components' shape: the `sev` crate's serde report plus `cert_chain`.
        if let Some(sev_report) = evidence.get("attestation_report") {
            return self.verify_snp_coco(sev_report, evidence.get("cert_chain"), now);
        }
        let report = b64("report", evidence)?;
        let certs = if evidence.get("cert_table").is_some_and(|v| !v.is_null()) {
            let table = b64("cert_table", evidence)?;
            Some(SnpCertificates::from_cert_table(&table).map_err(|e| format!("snp cert_table: {e}"))?)
        } else {
            None
        };
        self.verify_snp_report(&report, certs.as_ref(), now, "snp evidence has no cert_table")
    }

    /// Verifies raw report bytes with the certificates that came with the evidence or, without
    /// them, from the configured cache / KDS (`missing` says what was absent).
    fn verify_snp_report(
        &self,
        report: &[u8],
        certs: Option<&SnpCertificates>,
        now: u64,
        missing: &str,
    ) -> Result<Verified, String> {
        let opts = VerifyOptions::at(now).allow_debug(self.allow_debug).allow_network(self.snp_fetch.is_some());
        let verified = match certs {
            Some(certs) => self.snp.verify(report, certs, &opts),
            None => {
                let source = match (&self.snp_cache, &self.snp_fetch) {
                    (Some(dir), Some(f)) => CertSource::DirectoryOrFetch(dir, f),
                    (Some(dir), None) => CertSource::Directory(dir),
                    (None, Some(f)) => CertSource::Fetch(f),
                    (None, None) => {
                        return Err(format!(
                            "{missing}, and neither a certificate cache nor KDS fetching is configured"
                        ));
                    }
                };
                self.snp.verify_with_source(report, source, &opts)
            }
        }
        .map_err(|e| format!("snp {}: {e}", e.check()))?;
        let r = verified.report();
        Ok(Verified {
            tee_key: if verified.vek().root_is_builtin() { "snp" } else { "emulated_snp" },
            claims: verified.claims(),
            report_data: r.report_data.0.to_vec(),
            config_field: r.host_data.0.to_vec(),
        })
    }

    /// trustee's `SnpEvidence`: `{"attestation_report": <sev serde>, "cert_chain": [{"cert_type":
    /// "VCEK"|"VLEK"|"ASK"|"ARK"|"CRL", "data": [bytes]}] | null}`. The raw report is rebuilt
    /// from the fields (reserved bytes zero) and verified like any other.
    fn verify_snp_coco(&self, sev_report: &Value, chain: Option<&Value>, now: u64) -> Result<Verified, String> {
        let report =
            cloister_evidence::snp::sev_json::report_from_sev_json(sev_report).map_err(|e| format!("snp: {e}"))?;
        let mut certs = SnpCertificates::new();
        let mut have_vek = false;
        for entry in chain.and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default() {
            let kind = entry.get("cert_type").and_then(Value::as_str).unwrap_or_default();
            let data: Vec<u8> = entry
                .get("data")
                .and_then(Value::as_array)
                .ok_or("snp cert_chain entry has no data array")?
                .iter()
                .map(|x| x.as_u64().and_then(|b| u8::try_from(b).ok()))
                .collect::<Option<_>>()
                .ok_or("snp cert_chain data is not bytes")?;
            certs = match kind {
                "VCEK" | "VLEK" => {
                    have_vek = true;
                    certs.with_vek(&data)
                }
                "ASK" | "ARK" | "ASVK" => certs.with_chain(&data),
                "CRL" => Ok(certs.with_crl(&data)),
                _ => Ok(certs),
            }
            .map_err(|e| format!("snp cert_chain {kind}: {e}"))?;
        }
        let certs = have_vek.then_some(certs);
        self.verify_snp_report(&report, certs.as_ref(), now, "snp cert_chain has no VCEK")
    }

    fn verify_tdx(&self, evidence: &Value, now: u64) -> Result<Verified, String> {
        let quote = b64("quote", evidence)?;
        let eventlog = match evidence.get("cc_eventlog") {
            Some(Value::String(_)) => Some(b64("cc_eventlog", evidence)?),
            _ => None,
        };
        let mut first_err = None;
        let candidates =
            std::iter::once((&self.tdx, "tdx")).chain(self.tdx_emulated.iter().map(|v| (v, "emulated_tdx")));
        for ((verifier, collateral), key) in candidates {
            match verifier.verify(&quote, collateral.as_ref(), now) {
                Ok(v) => {
                    if let Some(log) = &eventlog {
                        v.check_event_log(log).map_err(|e| format!("tdx event log: {e}"))?;
                    }
                    let td = v.td_report().ok_or("tdx quote has no TD report body")?;
                    return Ok(Verified {
                        tee_key: key,
                        claims: v.claims(),
                        report_data: td.report_data.0.to_vec(),
                        config_field: td.mr_config_id.0.to_vec(),
                    });
                }
                Err(e) => {
                    first_err.get_or_insert(format!("tdx: {e}"));
                }
            }
        }
        Err(first_err.unwrap_or_else(|| "tdx: no verifier configured".into()))
    }
}
