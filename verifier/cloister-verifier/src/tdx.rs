//! Verification of Intel TDX (and SGX) DCAP quotes against Intel's PCK chain and DCAP collateral.
//!
//! [`TdxVerifier::verify`] checks, in this order, and reports the first failure as a typed
//! [`TdxVerifyError`]:
//!
//! 1. the quote parses (v4/v5 TDX, v3 SGX; ECDSA P-256 attestation key; Intel's QE vendor ID);
//! 2. the collateral (if given): the TCB signing chain to a pinned root, the root CA CRL (signature,
//!    issuer), the TCB info and QE identity signatures over their exact signed texts, the TCB
//!    signing certificates not revoked; then every validity window at `now` (root, CRLs, TCB
//!    signing certificate, TCB info, QE identity);
//! 3. the PCK chain from the quote (leaf → Platform/Processor CA → root): the root must be a pinned
//!    trust anchor (the embedded Intel SGX Root CA, or an emulated root the caller named), names
//!    chain, CA roles, signatures, validity at `now`; with collateral, the CA is not revoked by the
//!    root CA CRL, the PCK CRL is issued and signed by that CA, and the leaf is not revoked;
//! 4. the QE report signature by the PCK key, the QE report-data binding
//!    (`SHA-256(attestation key ‖ QE auth data) ‖ 0³²`), the quote signature by the attestation key
//!    over the signed bytes exactly as received;
//! 5. without collateral: [`TdxVerifyError::CollateralMissing`] — the TCB cannot be appraised;
//! 6. TCB info and QE identity are for this TEE, FMSPC and PCE-ID of the PCK certificate match,
//!    the QE report matches the QE identity (MRSIGNER, ISVPRODID, masked MISCSELECT/ATTRIBUTES,
//!    not debug) and its ISVSVN has a TCB level;
//! 7. the platform TCB level (PCK SGX components and PCESVN, TEE_TCB_SVN with the TDX module
//!    identity; for TD 1.5 also TEE_TCB_SVN2, the TCB the TD runs on now), combined with the QE
//!    status; `Revoked` is rejected, every other status is returned with its advisory IDs;
//! 8. TD attributes (debug, profiling, reserved bits, MIGRATABLE, SERVTD_EXT/MRSERVICETD,
//!    SEPT_VE_DISABLE) or the SGX enclave's DEBUG attribute, per [`TdxVerifyOptions`].
//!
//! Collateral that verified once is cached (keyed by a hash of its bytes and of the trust anchors):
//! a later quote with the same collateral costs the quote signature, the QE report signature and
//! the PCK leaf signature (the PCK CA is cached with the collateral). Dates are checked on every
//! call. Apart from that cache, verification is stateless.
//!
//! **What it trusts:** the embedded Intel SGX Root CA (pinned by its SHA-256), roots the caller
//! names explicitly in [`TdxTrustAnchors`], and the caller's `now`. Quotes, certificates, CRLs and
//! collateral are untrusted input; nothing parsed from collateral is used before its signature has
//! been checked.

mod cert;
mod collateral;
pub(crate) mod der;
mod error;
mod tcb;

use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLock};

use cloister_evidence::tdx::{INTEL_QE_VENDOR_ID, Quote, QuoteBody, TEE_TYPE_TDX, TdAttributes, TdReport10};
use cloister_measure::rtmr::{EventLog, parse_event_log};
use serde_json::{Map, Value, json};

use cert::{CertInfo, CrlInfo, PckExtension, sec1_point, verify_raw_sig};
use collateral::{QeIdentity, TcbInfo, TeeKind};

pub use collateral::{CollateralParts, TdxCollateral, pcs_signed_body};
pub use error::{CertRole, CrlKind, TdxVerifyError, Time};
pub use tcb::TcbStatus;

/// The Intel SGX Root CA certificate (DER), the root of every genuine PCK chain.
pub const INTEL_SGX_ROOT_CA_DER: &[u8] = include_bytes!("tdx/intel_sgx_root_ca.der");

/// SHA-256 of [`INTEL_SGX_ROOT_CA_DER`]: `44a0196b…74d3`. The embedded root is used only if it
/// has exactly this fingerprint.
pub const INTEL_SGX_ROOT_CA_SHA256: [u8; 32] = [
    0x44, 0xa0, 0x19, 0x6b, 0x2b, 0x99, 0xf8, 0x89, 0xb8, 0xe1, 0x49, 0xe9, 0x5b, 0x80, 0x7a, 0x35, 0x0e, 0x74, 0x24,
    0x96, 0x43, 0x99, 0xe8, 0x85, 0xa7, 0xcb, 0xb8, 0xcc, 0xfa, 0xb6, 0x74, 0xd3,
];

/// Most PCK CAs remembered per collateral set (Intel has two: Platform and Processor).
const MAX_CACHED_CAS: usize = 8;

fn sha256(parts: &[&[u8]]) -> [u8; 32] {
    let mut h = ring::digest::Context::new(&ring::digest::SHA256);
    for p in parts {
        h.update(p);
    }
    let mut out = [0u8; 32];
    out.copy_from_slice(h.finish().as_ref());
    out
}

/// A trusted root certificate.
#[derive(Debug, Clone)]
struct Anchor {
    der: Vec<u8>,
    cert: CertInfo,
}

/// The roots a PCK chain and the collateral may chain to.
#[derive(Debug, Clone)]
pub struct TdxTrustAnchors {
    anchors: Vec<Anchor>,
    digest: [u8; 32],
}

impl TdxTrustAnchors {
    /// Only the embedded Intel SGX Root CA (checked against [`INTEL_SGX_ROOT_CA_SHA256`]; if it
    /// somehow does not match, the set is empty and every quote is rejected).
    pub fn intel() -> Self {
        let mut anchors = Vec::new();
        if sha256(&[INTEL_SGX_ROOT_CA_DER]) == INTEL_SGX_ROOT_CA_SHA256 {
            match CertInfo::parse(INTEL_SGX_ROOT_CA_DER) {
                Ok(cert) => anchors.push(Anchor { der: INTEL_SGX_ROOT_CA_DER.to_vec(), cert }),
                Err(e) => tracing::error!(error = %e, "embedded Intel SGX Root CA does not parse"),
            }
        } else {
            tracing::error!("embedded Intel SGX Root CA does not match its pinned fingerprint");
        }
        Self::from_anchors(anchors)
    }

    /// No roots at all (combine with [`TdxTrustAnchors::with_root`] for an emulated-only setup).
    pub fn empty() -> Self {
        Self::from_anchors(Vec::new())
    }

    fn from_anchors(anchors: Vec<Anchor>) -> Self {
        let fingerprints: Vec<[u8; 32]> = anchors.iter().map(|a| sha256(&[&a.der])).collect();
        let flat: Vec<&[u8]> = fingerprints.iter().map(|f| f.as_slice()).collect();
        let digest = sha256(&flat);
        Self { anchors, digest }
    }

    /// Adds another root, e.g. the TEE emulator's. It must be a self-issued, self-signed P-256 CA
    /// certificate. Only verifiers constructed with it accept chains to it.
    pub fn with_root(self, der: &[u8]) -> Result<Self, TdxVerifyError> {
        let cert = CertInfo::parse(der).map_err(TdxVerifyError::TrustAnchor)?;
        if cert.subject != cert.issuer || !cert.signed_by(&cert.public_key) {
            return Err(TdxVerifyError::TrustAnchor("not a self-signed certificate".into()));
        }
        if !cert.can_sign_certs() {
            return Err(TdxVerifyError::TrustAnchor("not a CA certificate".into()));
        }
        let mut anchors = self.anchors;
        if !anchors.iter().any(|a| a.der == der) {
            anchors.push(Anchor { der: der.to_vec(), cert });
        }
        Ok(Self::from_anchors(anchors))
    }

    /// SHA-256 fingerprints of the roots (DER).
    pub fn fingerprints(&self) -> Vec<[u8; 32]> {
        self.anchors.iter().map(|a| sha256(&[&a.der])).collect()
    }

    /// Splits a chain into its non-root certificates and the pinned root it ends in (by DER).
    fn split_root<'c>(&self, chain: &'c [Vec<u8>]) -> (&'c [Vec<u8>], Option<usize>) {
        if let Some((last, rest)) = chain.split_last()
            && let Some(i) = self.anchors.iter().position(|a| a.der == *last)
        {
            return (rest, Some(i));
        }
        (chain, None)
    }

    /// The anchor whose subject is `issuer`.
    fn by_subject(&self, issuer: &[u8]) -> Option<usize> {
        self.anchors.iter().position(|a| a.cert.subject == issuer)
    }
}

impl Default for TdxTrustAnchors {
    fn default() -> Self {
        Self::intel()
    }
}

/// What the verifier accepts beyond the cryptographic checks. The default is strict (the same as
/// dcap-qvl's defaults).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TdxVerifyOptions {
    /// Accept debug TDs / enclaves and TD profiling (TUD bits). Default false.
    pub allow_debug: bool,
    /// Accept TDATTRIBUTES.MIGRATABLE. Default false.
    pub allow_migratable: bool,
    /// Accept TD 1.5 TDs bound to service TDs (SERVTD_EXT, non-zero MRSERVICETD). Default false.
    pub allow_service_td: bool,
    /// Require TDATTRIBUTES.SEPT_VE_DISABLE. Default true.
    pub require_sept_ve_disable: bool,
    /// Most collateral sets kept in the cache. Default 64.
    pub cache_capacity: usize,
}

impl Default for TdxVerifyOptions {
    fn default() -> Self {
        Self {
            allow_debug: false,
            allow_migratable: false,
            allow_service_td: false,
            require_sept_ve_disable: true,
            cache_capacity: 64,
        }
    }
}

/// A PCK CA certificate verified against a root (and, with collateral, not revoked and the issuer
/// of a PCK CRL whose signature verified).
#[derive(Debug)]
struct VerifiedCa {
    der: Vec<u8>,
    cert: CertInfo,
}

/// Something with a validity window.
#[derive(Debug, Clone, Copy)]
enum Dated {
    Cert(CertRole),
    Crl(CrlKind),
    TcbInfo,
    QeIdentity,
}

#[derive(Debug, Clone, Copy)]
struct Window {
    what: Dated,
    not_before: u64,
    not_after: u64,
}

impl Window {
    fn cert(role: CertRole, c: &CertInfo) -> Self {
        let (not_before, not_after) = c.validity();
        Self { what: Dated::Cert(role), not_before, not_after }
    }

    fn check(&self, now: u64) -> Result<(), TdxVerifyError> {
        let (nb, na) = (Time(self.not_before), Time(self.not_after));
        let early = now < self.not_before;
        let late = now > self.not_after;
        match (self.what, early, late) {
            (_, false, false) => Ok(()),
            (Dated::Cert(cert), true, _) => Err(TdxVerifyError::CertificateNotYetValid { cert, not_before: nb }),
            (Dated::Cert(cert), _, true) => Err(TdxVerifyError::CertificateExpired { cert, not_after: na }),
            (Dated::Crl(crl), true, _) => Err(TdxVerifyError::CrlNotYetValid { crl, this_update: nb }),
            (Dated::Crl(crl), _, true) => Err(TdxVerifyError::CrlExpired { crl, next_update: na }),
            (Dated::TcbInfo, true, _) => Err(TdxVerifyError::TcbInfoNotYetValid { issue_date: nb }),
            (Dated::TcbInfo, _, true) => Err(TdxVerifyError::TcbInfoExpired { next_update: na }),
            (Dated::QeIdentity, true, _) => Err(TdxVerifyError::QeIdentityNotYetValid { issue_date: nb }),
            (Dated::QeIdentity, _, true) => Err(TdxVerifyError::QeIdentityExpired { next_update: na }),
        }
    }
}

/// Collateral whose signatures verified (time-independent), with its validity windows.
#[derive(Debug)]
struct VerifiedCollateral {
    anchor: usize,
    windows: Vec<Window>,
    expires: u64,
    root_crl: CrlInfo,
    pck_crl: CrlInfo,
    tcb_info: TcbInfo,
    qe_identity: QeIdentity,
    cas: RwLock<Vec<Arc<VerifiedCa>>>,
}

impl VerifiedCollateral {
    fn check_dates(&self, now: u64) -> Result<(), TdxVerifyError> {
        self.windows.iter().try_for_each(|w| w.check(now))
    }
}

/// A quote that passed every check, with its appraisal.
#[derive(Debug, Clone)]
pub struct VerifiedTdxQuote {
    /// The parsed quote.
    pub quote: Quote,
    /// The TCB status reported for the quote (platform, TDX module and QE combined; for TD 1.5 with
    /// the relaunch rule). Never `Revoked`.
    pub tcb_status: TcbStatus,
    /// Advisory IDs of the matched platform, TDX module and QE TCB levels.
    pub advisory_ids: Vec<String>,
    /// Status of the matched platform TCB level (with the TDX module), before the QE is folded in.
    pub platform_tcb_status: TcbStatus,
    /// Status of the QE's TCB level.
    pub qe_tcb_status: TcbStatus,
    /// tcbDate of the matched platform level.
    pub tcb_date: String,
    /// The platform's FMSPC (from the PCK certificate).
    pub fmspc: [u8; 6],
    /// PCESVN from the PCK certificate.
    pub pce_svn: u16,
    /// CPUSVN from the PCK certificate.
    pub cpu_svn: [u8; 16],
    /// tcbEvaluationDataNumber of the TCB info used.
    pub tcb_evaluation_data_number: u32,
}

impl VerifiedTdxQuote {
    /// The TD 1.0 fields (None for SGX quotes).
    pub fn td_report(&self) -> Option<&TdReport10> {
        self.quote.body().td10()
    }

    /// Normalised claims as a JSON object, with trustee's field names where trustee has one.
    ///
    /// TDX: `tee`, `quote_version`, `body_type`, `mr_td`, `rtmr_0`..`rtmr_3`, `report_data`,
    /// `mr_config_id` (and `init_data`, trustee's alias), `mr_owner`, `mr_owner_config`, `mr_seam`,
    /// `mrsigner_seam`, `seam_attributes`, `tcb_svn` (TEE_TCB_SVN), `xfam`, `td_attributes`
    /// (object of flags: `debug`, `septve_disable`, `protection_keys`, `key_locker`, `perfmon`,
    /// `migratable`), `td_attributes_hex`; TD 1.5 adds `tee_tcb_svn2`, `mr_servicetd`. SGX:
    /// `mr_enclave`, `mr_signer`, `isv_prod_id`, `isv_svn`, `cpu_svn`, `misc_select`, `attributes`,
    /// `debug`, `report_data`. Both: `tcb_status`, `advisory_ids`, `platform_tcb_status`,
    /// `qe_tcb_status`, `tcb_date`, `fmspc`, `pce_svn`, `tcb_evaluation_data_number`.
    pub fn claims(&self) -> Value {
        let mut m = Map::new();
        let body = self.quote.body();
        m.insert("quote_version".into(), json!(self.quote.header().version));
        m.insert(
            "body_type".into(),
            json!(match body {
                QuoteBody::SgxEnclave(_) => "sgx_enclave",
                QuoteBody::Td10(_) => "td10",
                QuoteBody::Td15(_) => "td15",
                QuoteBody::Td15Ex(_) => "td15_ex",
            }),
        );
        if let Some(td) = body.td10() {
            m.insert("tee".into(), json!("tdx"));
            let a = td.td_attributes;
            let mut hex = |k: &str, v: String| {
                m.insert(k.to_string(), Value::String(v));
            };
            hex("mr_td", td.mr_td.to_hex());
            for (i, r) in td.rtmr.iter().enumerate() {
                hex(&format!("rtmr_{i}"), r.to_hex());
            }
            hex("report_data", td.report_data.to_hex());
            hex("mr_config_id", td.mr_config_id.to_hex());
            hex("init_data", td.mr_config_id.to_hex());
            hex("mr_owner", td.mr_owner.to_hex());
            hex("mr_owner_config", td.mr_owner_config.to_hex());
            hex("mr_seam", td.mr_seam.to_hex());
            hex("mrsigner_seam", td.mr_signer_seam.to_hex());
            hex("seam_attributes", td.seam_attributes.to_hex());
            hex("tcb_svn", td.tee_tcb_svn.to_hex());
            hex("xfam", td.xfam.to_hex());
            hex("td_attributes_hex", a.0.to_hex());
            if let Some(t15) = body.td15() {
                hex("tee_tcb_svn2", t15.tee_tcb_svn2.to_hex());
                hex("mr_servicetd", t15.mr_service_td.to_hex());
            }
            m.insert(
                "td_attributes".into(),
                json!({
                    "debug": a.debug(),
                    "septve_disable": a.sept_ve_disable(),
                    "protection_keys": a.has(TdAttributes::PKS),
                    "key_locker": a.has(TdAttributes::KL),
                    "perfmon": a.has(TdAttributes::PERFMON),
                    "migratable": a.migratable(),
                }),
            );
        } else if let Some(r) = body.sgx() {
            m.insert("tee".into(), json!("sgx"));
            m.insert("mr_enclave".into(), json!(r.mr_enclave.to_hex()));
            m.insert("mr_signer".into(), json!(r.mr_signer.to_hex()));
            m.insert("isv_prod_id".into(), json!(r.isv_prod_id));
            m.insert("isv_svn".into(), json!(r.isv_svn));
            m.insert("cpu_svn".into(), json!(r.cpu_svn.to_hex()));
            m.insert("misc_select".into(), json!(r.misc_select));
            m.insert("attributes".into(), json!(r.attributes.to_hex()));
            m.insert("debug".into(), json!(r.debug()));
            m.insert("report_data".into(), json!(r.report_data.to_hex()));
        }
        m.insert("tcb_status".into(), json!(self.tcb_status.as_str()));
        m.insert("advisory_ids".into(), json!(self.advisory_ids));
        m.insert("platform_tcb_status".into(), json!(self.platform_tcb_status.as_str()));
        m.insert("qe_tcb_status".into(), json!(self.qe_tcb_status.as_str()));
        m.insert("tcb_date".into(), json!(self.tcb_date));
        m.insert("fmspc".into(), json!(hex::encode(self.fmspc)));
        m.insert("pce_svn".into(), json!(self.pce_svn));
        m.insert("tcb_evaluation_data_number".into(), json!(self.tcb_evaluation_data_number));
        Value::Object(m)
    }

    /// Replays a CCEL event log and checks it against this quote's RTMRs (see [`check_event_log`]).
    pub fn check_event_log(&self, log: &[u8]) -> Result<EventLog, TdxVerifyError> {
        let td = self.td_report().ok_or_else(|| TdxVerifyError::Unsupported("an SGX quote has no RTMRs".into()))?;
        check_event_log(td, log)
    }
}

/// Parses a CCEL event log, replays it and requires RTMR0..3 to equal the report's. Returns the
/// log, whose events are then authentic to the extent the report is (only use it with the report
/// of a verified quote).
pub fn check_event_log(td: &TdReport10, log: &[u8]) -> Result<EventLog, TdxVerifyError> {
    let parsed = parse_event_log(log)?;
    let replayed = parsed.replay();
    for (index, (r, q)) in replayed.iter().zip(&td.rtmr).enumerate() {
        if r.as_bytes() != &q.0 {
            return Err(TdxVerifyError::RtmrMismatch { index, replayed: r.to_hex(), quoted: q.to_hex() });
        }
    }
    Ok(parsed)
}

/// Verifies TDX and SGX DCAP quotes. Cheap to share: `Send + Sync`, all methods take `&self`.
#[derive(Debug)]
pub struct TdxVerifier {
    anchors: TdxTrustAnchors,
    options: TdxVerifyOptions,
    cache: RwLock<HashMap<[u8; 32], Arc<VerifiedCollateral>>>,
}

const _: () = {
    const fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<TdxVerifier>();
    assert_send_sync::<VerifiedTdxQuote>();
};

impl Default for TdxVerifier {
    fn default() -> Self {
        Self::new(TdxTrustAnchors::intel(), TdxVerifyOptions::default())
    }
}

impl TdxVerifier {
    /// A verifier with the given roots and options.
    pub fn new(anchors: TdxTrustAnchors, options: TdxVerifyOptions) -> Self {
        Self { anchors, options, cache: RwLock::new(HashMap::new()) }
    }

    /// The options.
    pub fn options(&self) -> &TdxVerifyOptions {
        &self.options
    }

    /// Verifies a quote (raw bytes; trailing bytes after the signature data are ignored) with the
    /// collateral for its FMSPC at `now` (UNIX seconds). Without collateral the signatures and the
    /// chain are checked and [`TdxVerifyError::CollateralMissing`] is returned.
    pub fn verify(
        &self,
        quote: &[u8],
        collateral: Option<&TdxCollateral>,
        now: u64,
    ) -> Result<VerifiedTdxQuote, TdxVerifyError> {
        self.run(quote, collateral, now, true)
    }

    /// As [`TdxVerifier::verify`], but verifies the collateral from scratch without reading or
    /// filling the cache (for measurements and one-off checks).
    pub fn verify_uncached(
        &self,
        quote: &[u8],
        collateral: Option<&TdxCollateral>,
        now: u64,
    ) -> Result<VerifiedTdxQuote, TdxVerifyError> {
        self.run(quote, collateral, now, false)
    }

    /// Number of collateral sets in the cache.
    pub fn cached_collateral(&self) -> usize {
        self.cache.read().unwrap_or_else(PoisonError::into_inner).len()
    }

    /// Empties the cache.
    pub fn clear_cache(&self) {
        self.cache.write().unwrap_or_else(PoisonError::into_inner).clear();
    }

    fn run(
        &self,
        quote: &[u8],
        collateral: Option<&TdxCollateral>,
        now: u64,
        use_cache: bool,
    ) -> Result<VerifiedTdxQuote, TdxVerifyError> {
        let result = self.verify_inner(quote, collateral, now, use_cache);
        match &result {
            Ok(v) => tracing::debug!(
                fmspc = %hex::encode(v.fmspc),
                tcb_status = %v.tcb_status,
                advisories = v.advisory_ids.len(),
                "DCAP quote verified"
            ),
            Err(e) => tracing::debug!(check = e.check(), error = %e, "DCAP quote rejected"),
        }
        result
    }

    fn verify_inner(
        &self,
        bytes: &[u8],
        collateral: Option<&TdxCollateral>,
        now: u64,
        use_cache: bool,
    ) -> Result<VerifiedTdxQuote, TdxVerifyError> {
        // 1. Parse and check the header.
        let quote = Quote::parse(bytes)?;
        let h = quote.header();
        let is_tdx = h.tee_type == TEE_TYPE_TDX;
        match (is_tdx, h.version) {
            (true, 4 | 5) | (false, 3) => {}
            (tdx, v) => {
                return Err(TdxVerifyError::Unsupported(format!(
                    "{} quote version {v} (TDX needs 4 or 5, SGX 3)",
                    if tdx { "TDX" } else { "SGX" }
                )));
            }
        }
        if h.qe_vendor_id.0 != INTEL_QE_VENDOR_ID {
            return Err(TdxVerifyError::Unsupported(format!("QE vendor ID {} is not Intel's", h.qe_vendor_id)));
        }
        let sig = quote.signature_data();

        // 2. Collateral signatures and dates.
        let vc = match collateral {
            Some(c) => {
                let vc = self.collateral(c, now, use_cache)?;
                vc.check_dates(now)?;
                Some(vc)
            }
            None => None,
        };

        // 3. PCK chain.
        let pem: &[u8] = match (
            sig.certification.cert_type,
            collateral.and_then(|c| c.parts().pck_certificate_chain.as_ref()),
        ) {
            (cloister_evidence::tdx::CERT_DATA_PCK_CHAIN, _) => &sig.certification.data,
            (_, Some(chain)) => chain.as_bytes(),
            (t, None) => {
                return Err(TdxVerifyError::PckChainMissing(format!(
                    "the quote carries certification data type {t}, not a PCK certificate chain (type 5), and the collateral has none"
                )));
            }
        };
        let certs = der::pem_certificates(pem)
            .map_err(|e| TdxVerifyError::CertificateMalformed { cert: CertRole::PckLeaf, reason: e.into() })?;
        let (path, pinned) = self.anchors.split_root(&certs);
        let [leaf_der, ca_der] = path else {
            if pinned.is_none() && path.len() == 3 {
                return Err(TdxVerifyError::RootNotPinned { fingerprint: hex::encode(sha256(&[&path[2]])) });
            }
            return Err(TdxVerifyError::PckChainMissing(format!(
                "expected PCK certificate, PCK CA and root; found {} certificates",
                certs.len()
            )));
        };
        let ca = self.pck_ca(vc.as_deref(), ca_der, pinned)?;
        let anchor_index = match pinned {
            Some(i) => i,
            None => self
                .anchors
                .by_subject(&ca.cert.issuer)
                .ok_or_else(|| TdxVerifyError::RootNotPinned { fingerprint: hex::encode(sha256(&[ca_der])) })?,
        };
        if let Some(vc) = &vc
            && vc.anchor != anchor_index
        {
            return Err(TdxVerifyError::RootMismatch);
        }
        let anchor = &self.anchors.anchors[anchor_index];
        let leaf = CertInfo::parse(leaf_der)
            .map_err(|reason| TdxVerifyError::CertificateMalformed { cert: CertRole::PckLeaf, reason })?;
        if leaf.issuer != ca.cert.subject {
            return Err(TdxVerifyError::ChainIssuer { cert: CertRole::PckLeaf });
        }
        if leaf.is_ca {
            return Err(TdxVerifyError::ChainRole { cert: CertRole::PckLeaf });
        }
        if !leaf.signed_by(&ca.cert.public_key) {
            return Err(TdxVerifyError::ChainSignature { cert: CertRole::PckLeaf });
        }
        Window::cert(CertRole::Root, &anchor.cert).check(now)?;
        Window::cert(CertRole::PckCa, &ca.cert).check(now)?;
        Window::cert(CertRole::PckLeaf, &leaf).check(now)?;
        if let Some(vc) = &vc
            && vc.pck_crl.revokes(&leaf.serial)
        {
            return Err(TdxVerifyError::Revoked {
                cert: CertRole::PckLeaf,
                serial: hex::encode(&leaf.serial),
                crl: CrlKind::Pck,
            });
        }
        let ext = leaf
            .sgx_extension
            .as_deref()
            .ok_or_else(|| "no Intel SGX extension".to_string())
            .and_then(PckExtension::parse)
            .map_err(|reason| TdxVerifyError::CertificateMalformed { cert: CertRole::PckLeaf, reason })?;

        // 4. QE report, binding, quote signature.
        if !verify_raw_sig(&leaf.public_key, quote.qe_report_bytes(), &sig.qe_report_signature.0) {
            return Err(TdxVerifyError::QeReportSignature);
        }
        let binding = sha256(&[&sig.attestation_key.0, &sig.qe_auth_data]);
        let rd = &sig.qe_report.report_data.0;
        if rd[..32] != binding || rd[32..].iter().any(|b| *b != 0) {
            return Err(TdxVerifyError::QeBinding);
        }
        if !verify_raw_sig(&sec1_point(&sig.attestation_key.0), quote.signed_bytes(), &sig.signature.0) {
            return Err(TdxVerifyError::QuoteSignature);
        }

        // 5. Without collateral, stop here.
        let Some(vc) = vc else {
            return Err(TdxVerifyError::CollateralMissing { fmspc: hex::encode(ext.fmspc) });
        };

        // 6. Collateral matches the quote and platform; QE identity.
        let info = &vc.tcb_info;
        let (want_kind, want_tcb, want_qe): (TeeKind, &'static str, &'static str) =
            if is_tdx { (TeeKind::Tdx, "TDX v3", "TD_QE v2 or v3") } else { (TeeKind::Sgx, "SGX v3", "QE v2") };
        if info.kind != want_kind {
            return Err(TdxVerifyError::CollateralKind {
                document: "TCB info",
                found: format!("{} v{}", info.id, info.version),
                expected: want_tcb,
            });
        }
        let qi = &vc.qe_identity;
        let qe_ok =
            if is_tdx { qi.id == "TD_QE" && matches!(qi.version, 2 | 3) } else { qi.id == "QE" && qi.version == 2 };
        if !qe_ok {
            return Err(TdxVerifyError::CollateralKind {
                document: "QE identity",
                found: format!("{} v{}", qi.id, qi.version),
                expected: want_qe,
            });
        }
        if ext.fmspc != info.fmspc {
            return Err(TdxVerifyError::FmspcMismatch {
                pck: hex::encode(ext.fmspc),
                tcb_info: hex::encode(info.fmspc),
            });
        }
        if ext.pce_id != info.pce_id {
            return Err(TdxVerifyError::PceIdMismatch {
                pck: hex::encode(ext.pce_id),
                tcb_info: hex::encode(info.pce_id),
            });
        }
        let qe_level = tcb::appraise_qe(qi, &sig.qe_report)?;

        // 7. Platform TCB.
        let body = quote.body();
        let (tcb_status, advisory_ids, platform_tcb_status, tcb_date) = if let Some(td) = body.td10() {
            let svn2 = body.td15().map(|t| &t.tee_tcb_svn2.0);
            let (launch, current) = tcb::appraise_tdx_platform(info, &ext, td, svn2)?;
            let platform = launch.status;
            let combined = launch.with_component(qe_level.status, &qe_level.advisory_ids);
            let current = current.map(|c| c.status.with_component(qe_level.status));
            if combined.status == TcbStatus::Revoked || current == Some(TcbStatus::Revoked) {
                return Err(TdxVerifyError::TcbRevoked { advisory_ids: combined.advisory_ids });
            }
            let status = current.map_or(combined.status, |c| combined.status.with_current(c));
            (status, combined.advisory_ids, platform, combined.tcb_date)
        } else {
            let platform = tcb::appraise_sgx_platform(info, &ext)?;
            let platform_status = platform.status;
            let combined = platform.with_component(qe_level.status, &qe_level.advisory_ids);
            if combined.status == TcbStatus::Revoked {
                return Err(TdxVerifyError::TcbRevoked { advisory_ids: combined.advisory_ids });
            }
            (combined.status, combined.advisory_ids, platform_status, combined.tcb_date)
        };

        // 8. Attributes.
        self.check_attributes(body)?;

        Ok(VerifiedTdxQuote {
            tcb_status,
            advisory_ids,
            platform_tcb_status,
            qe_tcb_status: qe_level.status,
            tcb_date,
            fmspc: ext.fmspc,
            pce_svn: ext.pce_svn,
            cpu_svn: ext.cpu_svn,
            tcb_evaluation_data_number: info.evaluation_data_number,
            quote,
        })
    }

    fn check_attributes(&self, body: &QuoteBody) -> Result<(), TdxVerifyError> {
        let o = &self.options;
        if let Some(r) = body.sgx() {
            if r.debug() && !o.allow_debug {
                return Err(TdxVerifyError::Debug("enclave"));
            }
            return Ok(());
        }
        let Some(td) = body.td10() else { return Ok(()) };
        let td15 = body.td15();
        if let Some(t) = td15
            && !o.allow_service_td
            && !t.mr_service_td.is_zero()
        {
            return Err(TdxVerifyError::TdAttributes("MRSERVICETD is not zero (the TD is bound to a service TD)"));
        }
        let a = td.td_attributes;
        if a.debug() && !o.allow_debug {
            return Err(TdxVerifyError::Debug("TD"));
        }
        if a.bits() & TdAttributes::PROFILING != 0 && !o.allow_debug {
            return Err(TdxVerifyError::TdAttributes("TD profiling (TDATTRIBUTES bits 4..6) is enabled"));
        }
        if a.bits() & TdAttributes::RESERVED != 0 {
            return Err(TdxVerifyError::TdAttributes("reserved TDATTRIBUTES bits are set"));
        }
        if a.migratable() && !o.allow_migratable {
            return Err(TdxVerifyError::TdAttributes("MIGRATABLE is set"));
        }
        if a.has(TdAttributes::SERVTD_EXT) && !(o.allow_service_td && td15.is_some()) {
            return Err(TdxVerifyError::TdAttributes("SERVTD_EXT is set"));
        }
        if !a.sept_ve_disable() && o.require_sept_ve_disable {
            return Err(TdxVerifyError::TdAttributes("SEPT_VE_DISABLE is not set"));
        }
        Ok(())
    }

    /// The verified collateral for `c`, from the cache or verified now.
    fn collateral(
        &self,
        c: &TdxCollateral,
        now: u64,
        use_cache: bool,
    ) -> Result<Arc<VerifiedCollateral>, TdxVerifyError> {
        if !use_cache {
            return self.verify_collateral(c).map(Arc::new);
        }
        let key = sha256(&[&self.anchors.digest, c.digest()]);
        if let Some(vc) = self.cache.read().unwrap_or_else(PoisonError::into_inner).get(&key) {
            return Ok(Arc::clone(vc));
        }
        let vc = Arc::new(self.verify_collateral(c)?);
        let mut cache = self.cache.write().unwrap_or_else(PoisonError::into_inner);
        if cache.len() >= self.options.cache_capacity.max(1) {
            // Drop what has expired; if nothing has, the entry expiring first.
            cache.retain(|_, v| v.expires >= now);
            if cache.len() >= self.options.cache_capacity.max(1)
                && let Some(k) = cache.iter().min_by_key(|(_, v)| v.expires).map(|(k, _)| *k)
            {
                cache.remove(&k);
            }
        }
        cache.insert(key, Arc::clone(&vc));
        tracing::debug!(fmspc = %hex::encode(vc.tcb_info.fmspc), "DCAP collateral verified and cached");
        Ok(vc)
    }

    /// Verifies a signing chain `[signer, root?]` of the collateral; returns the signer and anchor.
    fn signer_chain(&self, pem: &str, role: CertRole) -> Result<(CertInfo, usize), TdxVerifyError> {
        let malformed = |reason: String| TdxVerifyError::CertificateMalformed { cert: role, reason };
        let certs = der::pem_certificates(pem.as_bytes()).map_err(|e| malformed(e.into()))?;
        let (path, pinned) = self.anchors.split_root(&certs);
        let signer_der = match path {
            [one] => one,
            [_, top] if pinned.is_none() => {
                return Err(TdxVerifyError::RootNotPinned { fingerprint: hex::encode(sha256(&[top])) });
            }
            _ => {
                return Err(malformed(format!(
                    "issuer chain has {} certificates, expected signer and root",
                    certs.len()
                )));
            }
        };
        let signer = CertInfo::parse(signer_der).map_err(malformed)?;
        let index = match pinned {
            Some(i) => i,
            None => self
                .anchors
                .by_subject(&signer.issuer)
                .ok_or_else(|| TdxVerifyError::RootNotPinned { fingerprint: hex::encode(sha256(&[signer_der])) })?,
        };
        let root = &self.anchors.anchors[index].cert;
        if signer.issuer != root.subject {
            return Err(TdxVerifyError::ChainIssuer { cert: role });
        }
        if !signer.signed_by(&root.public_key) {
            return Err(TdxVerifyError::ChainSignature { cert: role });
        }
        Ok((signer, index))
    }

    fn verify_collateral(&self, c: &TdxCollateral) -> Result<VerifiedCollateral, TdxVerifyError> {
        let p = c.parts();
        let (tcb_signer, anchor) = self.signer_chain(&p.tcb_info_issuer_chain, CertRole::TcbInfoSigner)?;
        let root = &self.anchors.anchors[anchor].cert;

        let root_crl = CrlInfo::parse(&p.root_ca_crl)
            .map_err(|reason| TdxVerifyError::CrlMalformed { crl: CrlKind::RootCa, reason })?;
        if root_crl.issuer != root.subject {
            return Err(TdxVerifyError::CrlIssuer { crl: CrlKind::RootCa });
        }
        if !root_crl.signed_by(&root.public_key) {
            return Err(TdxVerifyError::CrlSignature { crl: CrlKind::RootCa });
        }
        let revoked = |role: CertRole, c: &CertInfo| -> Result<(), TdxVerifyError> {
            if root_crl.revokes(&c.serial) {
                return Err(TdxVerifyError::Revoked {
                    cert: role,
                    serial: hex::encode(&c.serial),
                    crl: CrlKind::RootCa,
                });
            }
            Ok(())
        };
        revoked(CertRole::TcbInfoSigner, &tcb_signer)?;
        if !verify_raw_sig(&tcb_signer.public_key, p.tcb_info.as_bytes(), &p.tcb_info_signature) {
            return Err(TdxVerifyError::TcbInfoSignature);
        }

        let qe_signer = if p.qe_identity_issuer_chain == p.tcb_info_issuer_chain {
            tcb_signer.clone()
        } else {
            let (signer, qe_anchor) = self.signer_chain(&p.qe_identity_issuer_chain, CertRole::QeIdentitySigner)?;
            if qe_anchor != anchor {
                return Err(TdxVerifyError::RootMismatch);
            }
            revoked(CertRole::QeIdentitySigner, &signer)?;
            signer
        };
        if !verify_raw_sig(&qe_signer.public_key, p.qe_identity.as_bytes(), &p.qe_identity_signature) {
            return Err(TdxVerifyError::QeIdentitySignature);
        }

        let tcb_info = TcbInfo::parse(&p.tcb_info)?;
        let qe_identity = QeIdentity::parse(&p.qe_identity)?;
        let pck_crl =
            CrlInfo::parse(&p.pck_crl).map_err(|reason| TdxVerifyError::CrlMalformed { crl: CrlKind::Pck, reason })?;

        let windows = vec![
            Window::cert(CertRole::Root, root),
            Window {
                what: Dated::Crl(CrlKind::RootCa),
                not_before: root_crl.this_update,
                not_after: root_crl.next_update,
            },
            Window::cert(CertRole::TcbInfoSigner, &tcb_signer),
            Window { what: Dated::TcbInfo, not_before: tcb_info.issue_date, not_after: tcb_info.next_update },
            Window::cert(CertRole::QeIdentitySigner, &qe_signer),
            Window { what: Dated::QeIdentity, not_before: qe_identity.issue_date, not_after: qe_identity.next_update },
            Window { what: Dated::Crl(CrlKind::Pck), not_before: pck_crl.this_update, not_after: pck_crl.next_update },
        ];
        let expires = windows.iter().map(|w| w.not_after).min().unwrap_or(0);
        Ok(VerifiedCollateral {
            anchor,
            windows,
            expires,
            root_crl,
            pck_crl,
            tcb_info,
            qe_identity,
            cas: RwLock::new(Vec::new()),
        })
    }

    /// The PCK CA from the quote, verified against its root (cached per collateral set).
    fn pck_ca(
        &self,
        vc: Option<&VerifiedCollateral>,
        der: &[u8],
        pinned: Option<usize>,
    ) -> Result<Arc<VerifiedCa>, TdxVerifyError> {
        if let Some(vc) = vc
            && let Some(ca) = vc.cas.read().unwrap_or_else(PoisonError::into_inner).iter().find(|c| c.der == der)
        {
            return Ok(Arc::clone(ca));
        }
        let cert = CertInfo::parse(der)
            .map_err(|reason| TdxVerifyError::CertificateMalformed { cert: CertRole::PckCa, reason })?;
        let anchor = match pinned.or_else(|| self.anchors.by_subject(&cert.issuer)) {
            Some(i) => i,
            None => return Err(TdxVerifyError::RootNotPinned { fingerprint: hex::encode(sha256(&[der])) }),
        };
        if let Some(vc) = vc
            && vc.anchor != anchor
        {
            return Err(TdxVerifyError::RootMismatch);
        }
        let root = &self.anchors.anchors[anchor].cert;
        if cert.issuer != root.subject {
            return Err(TdxVerifyError::ChainIssuer { cert: CertRole::PckCa });
        }
        if !cert.can_sign_certs() {
            return Err(TdxVerifyError::ChainRole { cert: CertRole::PckCa });
        }
        if !cert.signed_by(&root.public_key) {
            return Err(TdxVerifyError::ChainSignature { cert: CertRole::PckCa });
        }
        let ca = Arc::new(VerifiedCa { der: der.to_vec(), cert });
        if let Some(vc) = vc {
            if vc.root_crl.revokes(&ca.cert.serial) {
                return Err(TdxVerifyError::Revoked {
                    cert: CertRole::PckCa,
                    serial: hex::encode(&ca.cert.serial),
                    crl: CrlKind::RootCa,
                });
            }
            if vc.pck_crl.issuer != ca.cert.subject || !ca.cert.can_sign_crls() {
                return Err(TdxVerifyError::CrlIssuer { crl: CrlKind::Pck });
            }
            if !vc.pck_crl.signed_by(&ca.cert.public_key) {
                return Err(TdxVerifyError::CrlSignature { crl: CrlKind::Pck });
            }
            let mut cas = vc.cas.write().unwrap_or_else(PoisonError::into_inner);
            if cas.len() < MAX_CACHED_CAS {
                cas.push(Arc::clone(&ca));
            }
        }
        Ok(ca)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_root_is_pinned() {
        assert_eq!(sha256(&[INTEL_SGX_ROOT_CA_DER]), INTEL_SGX_ROOT_CA_SHA256);
        let a = TdxTrustAnchors::intel();
        assert_eq!(a.fingerprints(), vec![INTEL_SGX_ROOT_CA_SHA256]);
        assert!(a.anchors[0].cert.can_sign_certs());
        // The Intel root is self-signed, so it is also acceptable through `with_root` (no duplicate).
        let b = TdxTrustAnchors::intel().with_root(INTEL_SGX_ROOT_CA_DER).unwrap();
        assert_eq!(b.fingerprints().len(), 1);
        assert!(TdxTrustAnchors::empty().with_root(b"not a cert").is_err());
    }

    #[test]
    fn td_attribute_options() {
        use cloister_evidence::tdx::{Bytes, EnclaveReport, TdReport15};
        let td = TdReport10::from_bytes(&[0u8; 584]).unwrap();
        let td10 = |bits: u64| {
            let mut t = td;
            t.td_attributes = TdAttributes(Bytes(bits.to_le_bytes()));
            QuoteBody::Td10(t)
        };
        let td15 = |bits: u64, service: u8| {
            let mut t = td;
            t.td_attributes = TdAttributes(Bytes(bits.to_le_bytes()));
            QuoteBody::Td15(TdReport15 { base: t, tee_tcb_svn2: Bytes::ZERO, mr_service_td: Bytes([service; 48]) })
        };
        let opts = |f: &dyn Fn(&mut TdxVerifyOptions)| {
            let mut o = TdxVerifyOptions::default();
            f(&mut o);
            TdxVerifier::new(TdxTrustAnchors::empty(), o)
        };
        let strict = TdxVerifier::default();
        let sept = TdAttributes::SEPT_VE_DISABLE;
        let rejects = |v: &TdxVerifier, body: QuoteBody| {
            matches!(v.check_attributes(&body), Err(TdxVerifyError::TdAttributes(_)))
        };
        assert_eq!(strict.check_attributes(&td10(sept)), Ok(()));
        assert_eq!(strict.check_attributes(&td10(sept | TdAttributes::DEBUG)), Err(TdxVerifyError::Debug("TD")));
        let debug_ok = opts(&|o| o.allow_debug = true);
        assert_eq!(debug_ok.check_attributes(&td10(sept | TdAttributes::DEBUG | 0x10)), Ok(()));
        assert!(rejects(&strict, td10(sept | 0x10)), "profiling");
        for reserved in [1u64 << 1, 1 << 8, 1 << 24, 1 << 40] {
            assert!(rejects(&debug_ok, td10(sept | reserved)), "reserved bit {reserved:#x}");
        }
        assert!(rejects(&strict, td10(sept | TdAttributes::MIGRATABLE)));
        assert_eq!(
            opts(&|o| o.allow_migratable = true).check_attributes(&td10(sept | TdAttributes::MIGRATABLE)),
            Ok(())
        );
        assert!(rejects(&strict, td10(0)), "SEPT_VE_DISABLE required");
        assert_eq!(opts(&|o| o.require_sept_ve_disable = false).check_attributes(&td10(0)), Ok(()));
        for bit in [TdAttributes::PKS, TdAttributes::KL, TdAttributes::PERFMON, TdAttributes::LASS, TdAttributes::ICSSD]
        {
            assert_eq!(strict.check_attributes(&td10(sept | bit)), Ok(()), "defined bit {bit:#x}");
        }
        let service = opts(&|o| o.allow_service_td = true);
        assert!(rejects(&service, td10(sept | TdAttributes::SERVTD_EXT)), "SERVTD_EXT needs TD 1.5");
        assert!(rejects(&strict, td15(sept | TdAttributes::SERVTD_EXT, 0)));
        assert_eq!(service.check_attributes(&td15(sept | TdAttributes::SERVTD_EXT, 0)), Ok(()));
        assert!(rejects(&strict, td15(sept, 1)), "non-zero MRSERVICETD");
        assert_eq!(service.check_attributes(&td15(sept, 1)), Ok(()));
        let mut enclave = EnclaveReport::from_bytes(&[0u8; 384]).unwrap();
        assert_eq!(strict.check_attributes(&QuoteBody::SgxEnclave(enclave)), Ok(()));
        enclave.attributes.0[0] = 0x02;
        assert_eq!(strict.check_attributes(&QuoteBody::SgxEnclave(enclave)), Err(TdxVerifyError::Debug("enclave")));
        assert_eq!(debug_ok.check_attributes(&QuoteBody::SgxEnclave(enclave)), Ok(()));
    }

    #[test]
    fn bad_inputs_are_typed_errors() {
        let v = TdxVerifier::default();
        assert!(matches!(v.verify(&[], None, 0), Err(TdxVerifyError::Malformed(_))));
        assert!(matches!(TdxCollateral::from_json(b"{}"), Err(TdxVerifyError::CollateralMalformed(_))));
    }
}
