//! The AMD chain ARK → ASK → VCEK / ARK → ASVK → VLEK, its per-report bindings (TCB, chip id,
//! signing key), the report signature, CRLs, and the bounded cache of verified VEKs and CRLs.
//!
//! **What it trusts:** the [`TrustAnchors`] only. Supplied intermediates are used only after the
//! anchor's signature on them verifies; the product is the anchor's product (never guessed from
//! names); dates are checked against the caller's `now` on every call, cached or not.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use cloister_evidence::snp::{AttestationReport, Product, SigningKey};
use tracing::debug;

use super::anchors::TrustAnchors;
use super::cert::{CertInfo, CrlInfo, PublicKey, der, sha256, verify_p384, verify_pss};
use super::error::{CertRole, ChainLink, SnpVerifyError, TcbComponent};
use super::source::SnpCertificates;

/// The kind of key that signs reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum VekKind {
    /// Versioned chip endorsement key: per chip and TCB, issued by the ASK.
    Vcek,
    /// Versioned loaded endorsement key: per cloud provider, issued by the ASVK.
    Vlek,
}

impl VekKind {
    /// The certificate role of this kind.
    pub fn role(self) -> CertRole {
        match self {
            VekKind::Vcek => CertRole::Vcek,
            VekKind::Vlek => CertRole::Vlek,
        }
    }

    /// The role of the intermediate that issues this kind.
    pub fn issuer_role(self) -> CertRole {
        match self {
            VekKind::Vcek => CertRole::Ask,
            VekKind::Vlek => CertRole::Asvk,
        }
    }

    /// `"vcek"` or `"vlek"`.
    pub fn name(self) -> &'static str {
        match self {
            VekKind::Vcek => "vcek",
            VekKind::Vlek => "vlek",
        }
    }
}

/// The TCB values a VEK certifies (`None`: the extension is absent or not a small integer).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VekTcb {
    /// fmcSPL (Turin and later).
    pub fmc: Option<u64>,
    /// blSPL.
    pub bootloader: Option<u64>,
    /// teeSPL.
    pub tee: Option<u64>,
    /// snpSPL.
    pub snp: Option<u64>,
    /// ucodeSPL.
    pub microcode: Option<u64>,
}

/// A VEK certificate whose chain to a trust anchor verified. What is cached: checking a report
/// against it costs the bindings (cheap) and one ECDSA P-384 verification.
#[derive(Clone, Debug)]
pub struct VerifiedVek {
    product: Product,
    kind: VekKind,
    public_key: Vec<u8>,
    tcb: VekTcb,
    hw_id: Result<Vec<u8>, String>,
    product_name: Option<String>,
    csp_id: Option<String>,
    validity: [(CertRole, i64, i64); 3],
    intermediate_role: CertRole,
    intermediate_serial: Vec<u8>,
    ark: Arc<CertInfo>,
    root_builtin: bool,
    vek_sha256: [u8; 32],
}

impl VerifiedVek {
    /// The product of the root the chain ends at.
    pub fn product(&self) -> Product {
        self.product
    }
    /// VCEK or VLEK.
    pub fn kind(&self) -> VekKind {
        self.kind
    }
    /// The certified TCB values.
    pub fn tcb(&self) -> VekTcb {
        self.tcb
    }
    /// The decoded hwID (VCEK: 64 bytes, Turin 8), if usable.
    pub fn hw_id(&self) -> Option<&[u8]> {
        self.hw_id.as_deref().ok()
    }
    /// The ECDSA P-384 public key (uncompressed point).
    pub fn public_key(&self) -> &[u8] {
        &self.public_key
    }
    /// The productName extension.
    pub fn product_name(&self) -> Option<&str> {
        self.product_name.as_deref()
    }
    /// The cspID extension (VLEK).
    pub fn csp_id(&self) -> Option<&str> {
        self.csp_id.as_deref()
    }
    /// SHA-256 of the root certificate, hex.
    pub fn root_sha256(&self) -> String {
        hex::encode(self.ark.sha256)
    }
    /// True when the root is a built-in AMD root (not an extra root the caller added).
    pub fn root_is_builtin(&self) -> bool {
        self.root_builtin
    }
    /// SHA-256 of the VEK certificate, hex.
    pub fn vek_sha256(&self) -> String {
        hex::encode(self.vek_sha256)
    }

    /// Checks that VEK, intermediate and root are all valid at `now` (UNIX seconds).
    pub fn check_dates(&self, now: u64) -> Result<(), SnpVerifyError> {
        let t = i128::from(now);
        for (which, not_before, not_after) in self.validity {
            if t < i128::from(not_before) {
                return Err(SnpVerifyError::CertificateNotYetValid { which, not_before, now });
            }
            if t > i128::from(not_after) {
                return Err(SnpVerifyError::CertificateExpired { which, not_after, now });
            }
        }
        Ok(())
    }

    /// Checks that this VEK is the key for `report`: KEY_INFO.SIGNING_KEY names this kind, the
    /// certified TCB equals REPORTED_TCB (decoded with the product's layout), and for a VCEK the
    /// hwID equals CHIP_ID (Turin: the first 8 bytes, the rest must be zero).
    pub fn check_report_binding(&self, report: &AttestationReport) -> Result<(), SnpVerifyError> {
        let signing = report.key_info.signing_key();
        let matches_kind =
            matches!((signing, self.kind), (SigningKey::Vcek, VekKind::Vcek) | (SigningKey::Vlek, VekKind::Vlek));
        if !matches_kind {
            return Err(SnpVerifyError::SigningKeyMismatch { report: signing, certificate: self.kind.role() });
        }
        let parts = report.reported_tcb.parts(self.product.tcb_layout());
        let mut components = Vec::with_capacity(5);
        if let Some(fmc) = parts.fmc {
            components.push((TcbComponent::Fmc, self.tcb.fmc, fmc));
        }
        components.extend([
            (TcbComponent::Bootloader, self.tcb.bootloader, parts.bootloader),
            (TcbComponent::Tee, self.tcb.tee, parts.tee),
            (TcbComponent::Snp, self.tcb.snp, parts.snp),
            (TcbComponent::Microcode, self.tcb.microcode, parts.microcode),
        ]);
        for (component, certified, reported) in components {
            let certified =
                certified.ok_or(SnpVerifyError::TcbExtensionMissing { which: self.kind.role(), component })?;
            if certified != u64::from(reported) {
                return Err(SnpVerifyError::TcbMismatch { component, certificate: certified, report: reported });
            }
        }
        if self.kind == VekKind::Vcek {
            let hw_id = self.hw_id.as_ref().map_err(|e| SnpVerifyError::HwIdMissing(e.clone()))?;
            let chip = &report.chip_id.0;
            if chip.iter().all(|b| *b == 0) {
                return Err(SnpVerifyError::ChipIdMasked);
            }
            let n = hw_id.len().min(chip.len());
            if hw_id.as_slice() != &chip[..n] || chip[n..].iter().any(|b| *b != 0) {
                return Err(SnpVerifyError::ChipIdMismatch {
                    certificate: hex::encode(hw_id),
                    report: hex::encode(if chip[n..].iter().any(|b| *b != 0) { &chip[..] } else { &chip[..n] }),
                });
            }
        }
        Ok(())
    }

    /// Verifies the ECDSA P-384/SHA-384 signature over the report bytes `0x000..0x2A0` exactly as
    /// received, R and S converted from 72-byte little-endian.
    pub fn verify_report_signature(&self, report: &AttestationReport) -> Result<(), SnpVerifyError> {
        let which = self.kind.role();
        let fixed = report.signature.to_p384_fixed().ok_or(SnpVerifyError::ReportSignature { which })?;
        if verify_p384(&self.public_key, report.signed_bytes(), &fixed) {
            Ok(())
        } else {
            Err(SnpVerifyError::ReportSignature { which })
        }
    }
}

/// Decodes a hwID extension value: exactly `n` raw bytes, or a DER OCTET STRING of `n` bytes.
fn decode_hw_id(raw: Option<&[u8]>, n: usize) -> Result<Vec<u8>, String> {
    let raw = raw.ok_or("no hwID extension (1.3.6.1.4.1.3704.1.4)")?;
    if raw.len() == n {
        return Ok(raw.to_vec());
    }
    match der::octet_string(raw) {
        Some(v) if v.len() == n => Ok(v.to_vec()),
        _ => Err(format!("hwID is {} bytes, neither {n} raw bytes nor an OCTET STRING of {n}", raw.len())),
    }
}

fn malformed(which: CertRole, reason: impl Into<String>) -> SnpVerifyError {
    SnpVerifyError::MalformedCertificate { which, reason: reason.into() }
}

/// Verifies the chain of `vek_der` up to one of `anchors`, using the supplied chain certificates
/// and the anchors' own intermediates.
pub(crate) fn verify_chain(
    anchors: &TrustAnchors,
    certs: &SnpCertificates,
    vek_der: &[u8],
) -> Result<VerifiedVek, SnpVerifyError> {
    let vek = CertInfo::parse(vek_der).map_err(|e| malformed(CertRole::Vek, e))?;
    let PublicKey::EcP384(public_key) = &vek.key else {
        return Err(malformed(CertRole::Vek, "public key is not ECDSA P-384"));
    };
    let supplied: Vec<CertInfo> = certs
        .chain_ders()
        .iter()
        .enumerate()
        .map(|(i, d)| CertInfo::parse(d).map_err(|e| malformed(CertRole::Ask, format!("chain certificate {i}: {e}"))))
        .collect::<Result<_, _>>()?;

    // Candidate issuers: supplied first, then the anchors' intermediates, deduplicated.
    let mut candidates: Vec<&CertInfo> = Vec::new();
    let builtin = anchors.anchors.iter().flat_map(|a| a.intermediates.iter().map(|c| c.as_ref()));
    for c in supplied.iter().chain(builtin) {
        if !c.self_issued() && c.subject_raw == vek.issuer_raw && !candidates.iter().any(|k| k.sha256 == c.sha256) {
            candidates.push(c);
        }
    }
    if candidates.is_empty() {
        return Err(SnpVerifyError::IssuerNotFound { which: CertRole::Vek, issuer: vek.issuer_cn.clone() });
    }

    let mut first_error = None;
    for int in candidates {
        match verify_via(anchors, &supplied, &vek, public_key, int, vek_der) {
            Ok(v) => return Ok(v),
            Err(e) => {
                debug!(intermediate = %int.subject_cn, error = %e, "SNP chain candidate rejected");
                first_error.get_or_insert(e);
            }
        }
    }
    Err(first_error.unwrap_or(SnpVerifyError::IssuerNotFound { which: CertRole::Vek, issuer: vek.issuer_cn }))
}

fn verify_via(
    anchors: &TrustAnchors,
    supplied: &[CertInfo],
    vek: &CertInfo,
    public_key: &[u8],
    int: &CertInfo,
    vek_der: &[u8],
) -> Result<VerifiedVek, SnpVerifyError> {
    // The issuer's name says which chain this is: "SEV-VLEK-<Product>" issues VLEKs.
    let kind = if int.subject_cn.contains("VLEK") { VekKind::Vlek } else { VekKind::Vcek };
    let (role, int_role) = (kind.role(), kind.issuer_role());
    let other = match kind {
        VekKind::Vcek => "VLEK",
        VekKind::Vlek => "VCEK",
    };
    if vek.subject_cn.contains(other) {
        return Err(malformed(role, format!("subject {:?} issued by {:?}", vek.subject_cn, int.subject_cn)));
    }
    vek.pss.clone().map_err(|detail| SnpVerifyError::UnsupportedCertSignatureAlgorithm { which: role, detail })?;
    let (link_int, link_vek) = match kind {
        VekKind::Vcek => (ChainLink::ArkToAsk, ChainLink::AskToVcek),
        VekKind::Vlek => (ChainLink::ArkToAsvk, ChainLink::AsvkToVlek),
    };
    if !vek.signed_by(int) {
        return Err(SnpVerifyError::ChainSignature { link: link_vek });
    }
    let roots: Vec<_> = anchors.anchors.iter().filter(|a| a.ark.subject_raw == int.issuer_raw).collect();
    if roots.is_empty() {
        if let Some(r) = supplied.iter().find(|c| c.self_issued() && c.subject_raw == int.issuer_raw) {
            return Err(SnpVerifyError::UnpinnedRoot {
                subject: r.subject_cn.clone(),
                fingerprint: hex::encode(r.sha256),
            });
        }
        return Err(SnpVerifyError::UnknownRoot { which: int_role, issuer: int.issuer_cn.clone() });
    }
    int.pss.clone().map_err(|detail| SnpVerifyError::UnsupportedCertSignatureAlgorithm { which: int_role, detail })?;
    let anchor =
        roots.into_iter().find(|a| int.signed_by(&a.ark)).ok_or(SnpVerifyError::ChainSignature { link: link_int })?;
    let product = anchor.product;
    if let Some(name) = &vek.amd.product_name {
        let family = name.split('-').next().unwrap_or("");
        if !family.eq_ignore_ascii_case(product.name()) {
            return Err(malformed(role, format!("productName {name:?} but the root is {product}'s")));
        }
    }
    let hw_id = match kind {
        VekKind::Vcek => decode_hw_id(vek.amd.hw_id.as_deref(), if product == Product::Turin { 8 } else { 64 }),
        VekKind::Vlek => Err("a VLEK has no hwID".to_string()),
    };
    debug!(%product, kind = kind.name(), root = %anchor.ark.subject_cn, "SNP chain verified");
    Ok(VerifiedVek {
        product,
        kind,
        public_key: public_key.to_vec(),
        tcb: VekTcb {
            fmc: vek.amd.fmc_spl,
            bootloader: vek.amd.bl_spl,
            tee: vek.amd.tee_spl,
            snp: vek.amd.snp_spl,
            microcode: vek.amd.ucode_spl,
        },
        hw_id,
        product_name: vek.amd.product_name.clone(),
        csp_id: vek.amd.csp_id.clone(),
        validity: [
            (role, vek.not_before, vek.not_after),
            (int_role, int.not_before, int.not_after),
            (CertRole::Ark, anchor.ark.not_before, anchor.ark.not_after),
        ],
        intermediate_role: int_role,
        intermediate_serial: int.serial.clone(),
        ark: anchor.ark.clone(),
        root_builtin: anchor.builtin,
        vek_sha256: sha256(vek_der),
    })
}

/// A CRL whose ARK signature verified.
#[derive(Debug)]
pub(crate) struct VerifiedCrl {
    this_update: i64,
    next_update: Option<i64>,
    revoked: Vec<Vec<u8>>,
}

/// Checks the CRLs that the VEK's root issued: signature (cached), currency at `now`, and that
/// the intermediate is not revoked. CRLs of other issuers are ignored; a malformed one fails.
pub(crate) fn check_crls(
    vek: &VerifiedVek,
    crls: &[Vec<u8>],
    now: u64,
    cache: &BoundedCache<VerifiedCrl>,
) -> Result<(), SnpVerifyError> {
    for crl_der in crls {
        let key = sha256(&[&vek.ark.sha256[..], crl_der].concat());
        let verified = match cache.get(&key) {
            Some(v) => v,
            None => {
                let crl = CrlInfo::parse(crl_der).map_err(SnpVerifyError::MalformedCrl)?;
                if crl.issuer_raw != vek.ark.subject_raw {
                    debug!(issuer = %crl.issuer_cn, "CRL of another issuer ignored");
                    continue;
                }
                crl.pss.clone().map_err(|detail| SnpVerifyError::UnsupportedCertSignatureAlgorithm {
                    which: CertRole::Crl,
                    detail,
                })?;
                let PublicKey::Rsa(ark_key) = &vek.ark.key else {
                    return Err(SnpVerifyError::CrlIssuer { issuer: crl.issuer_cn });
                };
                if !verify_pss(ark_key, &crl.tbs, &crl.signature) {
                    return Err(SnpVerifyError::ChainSignature { link: ChainLink::ArkToCrl });
                }
                let v = Arc::new(VerifiedCrl {
                    this_update: crl.this_update,
                    next_update: crl.next_update,
                    revoked: crl.revoked,
                });
                cache.insert(key, v.clone());
                v
            }
        };
        let t = i128::from(now);
        if t < i128::from(verified.this_update) || verified.next_update.is_some_and(|n| t > i128::from(n)) {
            return Err(SnpVerifyError::CrlNotCurrent {
                this_update: verified.this_update,
                next_update: verified.next_update,
                now,
            });
        }
        if verified.revoked.contains(&vek.intermediate_serial) {
            return Err(SnpVerifyError::Revoked {
                which: vek.intermediate_role,
                serial: hex::encode(&vek.intermediate_serial),
            });
        }
    }
    Ok(())
}

/// A small thread-safe map from a 32-byte key to shared values, holding at most `capacity`
/// entries (an arbitrary entry is evicted when full; capacity 0 disables caching).
#[derive(Debug)]
pub(crate) struct BoundedCache<V> {
    map: RwLock<HashMap<[u8; 32], Arc<V>>>,
    capacity: usize,
}

impl<V> BoundedCache<V> {
    pub fn new(capacity: usize) -> Self {
        Self { map: RwLock::new(HashMap::new()), capacity }
    }

    pub fn get(&self, key: &[u8; 32]) -> Option<Arc<V>> {
        let map = self.map.read().unwrap_or_else(|e| e.into_inner());
        map.get(key).cloned()
    }

    pub fn insert(&self, key: [u8; 32], value: Arc<V>) {
        if self.capacity == 0 {
            return;
        }
        let mut map = self.map.write().unwrap_or_else(|e| e.into_inner());
        if map.len() >= self.capacity
            && !map.contains_key(&key)
            && let Some(victim) = map.keys().next().copied()
        {
            map.remove(&victim);
        }
        map.insert(key, value);
    }

    pub fn len(&self) -> usize {
        self.map.read().unwrap_or_else(|e| e.into_inner()).len()
    }

    pub fn clear(&self) {
        self.map.write().unwrap_or_else(|e| e.into_inner()).clear();
    }
}
