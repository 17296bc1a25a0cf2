//! AMD SEV-SNP report verification: the chain ARK → ASK → VCEK or ARK → ASVK → VLEK (RSASSA-PSS
//! SHA-384, checked with `ring` over the raw TBS bytes), certificate dates at a caller-given time,
//! optional ARK-signed CRLs, the VEK's TCB and hwID bound to the report's REPORTED_TCB and
//! CHIP_ID, the ECDSA P-384 report signature over the received bytes `0x000..0x2A0`, and the
//! guest policy's DEBUG bit. Success yields a [`VerifiedSnpReport`] with normalised claims.
//!
//! **What it trusts:** only the roots in its [`TrustAnchors`] (the pinned AMD ARKs, or a root the
//! caller names by SHA-256) and the `now` it is given. Reports, certificates, CRLs and cache
//! directories are untrusted. The product (root, TCB layout, hwID length) comes from the root the
//! chain ends at and must agree with the report's CPUID (version ≥ 3) and the caller's
//! expectation; it is never guessed.
//!
//! Order of checks (the first failure is reported, see [`SnpVerifyError::check`]): report
//! format → signing key (masked / unknown) → product from CPUID → certificate source → chain
//! (cached) → dates → CRLs → product agreement → signing-key kind, TCB, chip id → report
//! signature → debug policy. The bindings come before the signature so that a wrong or stale
//! VCEK is reported as such ("tcb", "chip_id") rather than as a bad signature.
//!
//! Caching: a verified chain is cached under SHA-256(anchor-set id ‖ VEK DER) with the VEK's
//! public key, TCB, hwID and validity, so another report under the same VEK costs the report
//! signature and cheap comparisons. Dates and CRLs are still checked on every call.

mod amd_certs;
mod anchors;
mod cert;
mod chain;
mod error;
mod source;

use std::sync::Arc;

use cloister_evidence::snp::{SigningKey, TcbLayout, TcbVersion};
use serde_json::{Map, Value, json};
use tracing::debug;

pub use anchors::{RootInfo, TrustAnchors};
pub use chain::{VekKind, VekTcb, VerifiedVek};
pub use cloister_evidence::snp::{AttestationReport, Product, SnpReportError};
pub use error::{CertRole, ChainLink, SnpVerifyError, TcbComponent};
pub use source::{
    CertSource, KDS_BASE_URL, KdsDirectory, KdsFetch, SnpCertificates, build_cert_table, kds_chain_url, kds_crl_url,
    kds_hwid, kds_vcek_url,
};

use chain::{BoundedCache, VerifiedCrl};

/// Default number of verified VEKs (and CRLs) kept in memory.
pub const DEFAULT_CACHE_CAPACITY: usize = 1024;

/// What to check and how. There is no default `now`: the caller must say when.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifyOptions {
    /// The time to check certificate and CRL validity at, UNIX seconds.
    pub now: u64,
    /// Accept reports whose guest policy allows debugging (off by default).
    pub allow_debug: bool,
    /// Allow fetching from AMD KDS (off by default).
    pub allow_network: bool,
    /// Require this product (e.g. for version-2 reports, which carry no CPUID).
    pub expected_product: Option<Product>,
    /// ARK-signed CRLs (DER) to check the intermediates against; CRLs of other roots are ignored.
    pub crls: Vec<Vec<u8>>,
    /// Parse the report leniently (non-zero reserved bytes tolerated; they are still signed).
    pub lenient_reserved: bool,
}

impl VerifyOptions {
    /// Strict options at time `now` (UNIX seconds): debug rejected, no network, no CRLs.
    pub fn at(now: u64) -> Self {
        Self {
            now,
            allow_debug: false,
            allow_network: false,
            expected_product: None,
            crls: Vec::new(),
            lenient_reserved: false,
        }
    }

    /// Sets [`VerifyOptions::allow_debug`].
    pub fn allow_debug(mut self, allow: bool) -> Self {
        self.allow_debug = allow;
        self
    }

    /// Sets [`VerifyOptions::allow_network`].
    pub fn allow_network(mut self, allow: bool) -> Self {
        self.allow_network = allow;
        self
    }

    /// Sets [`VerifyOptions::expected_product`].
    pub fn expect_product(mut self, product: Product) -> Self {
        self.expected_product = Some(product);
        self
    }

    /// Adds a CRL (DER).
    pub fn with_crl(mut self, crl_der: &[u8]) -> Self {
        self.crls.push(crl_der.to_vec());
        self
    }
}

/// Verifies SEV-SNP reports. Stateless apart from a cache of verified chains; `Send + Sync`, so
/// one instance can serve many threads.
#[derive(Debug)]
pub struct SnpVerifier {
    anchors: TrustAnchors,
    veks: BoundedCache<VerifiedVek>,
    crls: BoundedCache<VerifiedCrl>,
}

const _: () = {
    const fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<SnpVerifier>();
    assert_send_sync::<VerifiedSnpReport>();
};

/// A report whose chain, bindings and signature verified.
#[derive(Clone, Debug)]
pub struct VerifiedSnpReport {
    report: AttestationReport,
    vek: Arc<VerifiedVek>,
}

impl SnpVerifier {
    /// A verifier accepting exactly `anchors`, with the default cache size.
    pub fn new(anchors: TrustAnchors) -> Self {
        Self::with_cache_capacity(anchors, DEFAULT_CACHE_CAPACITY)
    }

    /// A verifier with the built-in AMD roots of Milan, Genoa and Turin.
    pub fn amd() -> Result<Self, SnpVerifyError> {
        Ok(Self::new(TrustAnchors::amd()?))
    }

    /// A verifier keeping at most `capacity` verified chains (0: no caching).
    pub fn with_cache_capacity(anchors: TrustAnchors, capacity: usize) -> Self {
        Self { anchors, veks: BoundedCache::new(capacity), crls: BoundedCache::new(capacity) }
    }

    /// The trust anchors.
    pub fn anchors(&self) -> &TrustAnchors {
        &self.anchors
    }

    /// Number of cached verified chains.
    pub fn cache_len(&self) -> usize {
        self.veks.len()
    }

    /// Empties the caches.
    pub fn clear_cache(&self) {
        self.veks.clear();
        self.crls.clear();
    }

    /// Verifies report bytes with the supplied certificates.
    pub fn verify(
        &self,
        report: &[u8],
        certs: &SnpCertificates,
        opts: &VerifyOptions,
    ) -> Result<VerifiedSnpReport, SnpVerifyError> {
        let report = parse_report(report, opts)?;
        self.verify_parsed(report, certs, opts)
    }

    /// Verifies report bytes, getting the certificates from `source`.
    pub fn verify_with_source(
        &self,
        report: &[u8],
        source: CertSource<'_>,
        opts: &VerifyOptions,
    ) -> Result<VerifiedSnpReport, SnpVerifyError> {
        let report = parse_report(report, opts)?;
        precheck(&report, opts)?;
        let fetched;
        let certs = match source {
            CertSource::Provided(c) => c,
            CertSource::Directory(dir) => {
                fetched = dir.certificates_for(&report, opts.expected_product)?;
                &fetched
            }
            CertSource::Fetch(fetcher) => {
                fetched = source::fetch_with(&report, opts.expected_product, opts.allow_network, fetcher, None)?;
                &fetched
            }
            CertSource::DirectoryOrFetch(dir, fetcher) => {
                fetched = match dir.certificates_for(&report, opts.expected_product) {
                    Ok(c) => c,
                    Err(SnpVerifyError::MissingVek(_)) => {
                        source::fetch_with(&report, opts.expected_product, opts.allow_network, fetcher, Some(dir))?
                    }
                    Err(e) => return Err(e),
                };
                &fetched
            }
        };
        self.verify_parsed(report, certs, opts)
    }

    /// Verifies an already parsed report (its received bytes are what the signature is checked
    /// over).
    pub fn verify_parsed(
        &self,
        report: AttestationReport,
        certs: &SnpCertificates,
        opts: &VerifyOptions,
    ) -> Result<VerifiedSnpReport, SnpVerifyError> {
        let cpuid_product = precheck(&report, opts)?;
        let vek = self.verify_vek(certs, opts)?;
        for expected in [cpuid_product, opts.expected_product].into_iter().flatten() {
            if expected != vek.product() {
                return Err(SnpVerifyError::ProductMismatch { expected, chain: vek.product() });
            }
        }
        vek.check_report_binding(&report)?;
        vek.verify_report_signature(&report)?;
        if report.policy.debug() && !opts.allow_debug {
            return Err(SnpVerifyError::DebugPolicy);
        }
        debug!(product = %vek.product(), kind = vek.kind().name(), version = report.version, "SNP report verified");
        Ok(VerifiedSnpReport { report, vek })
    }

    /// Verifies the VEK's chain (cached), its dates at `opts.now`, `opts.crls` and the CRLs
    /// supplied with the certificates; no report.
    pub fn verify_vek(
        &self,
        certs: &SnpCertificates,
        opts: &VerifyOptions,
    ) -> Result<Arc<VerifiedVek>, SnpVerifyError> {
        let der = certs.vek_der().ok_or_else(|| SnpVerifyError::MissingVek("none supplied".to_string()))?;
        let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
        ctx.update(&self.anchors.id());
        ctx.update(der);
        let mut key = [0u8; 32];
        key.copy_from_slice(ctx.finish().as_ref());
        let vek = match self.veks.get(&key) {
            Some(v) => v,
            None => {
                debug!("SNP VEK not cached; verifying its chain");
                let v = Arc::new(chain::verify_chain(&self.anchors, certs, der)?);
                self.veks.insert(key, v.clone());
                v
            }
        };
        vek.check_dates(opts.now)?;
        // CRLs the caller names and CRLs that came with the certificates (extended-report table,
        // cache directory) alike; CRLs of other issuers are ignored, bad or stale ones reject.
        chain::check_crls(&vek, &opts.crls, opts.now, &self.crls)?;
        chain::check_crls(&vek, certs.crls(), opts.now, &self.crls)?;
        Ok(vek)
    }
}

fn parse_report(bytes: &[u8], opts: &VerifyOptions) -> Result<AttestationReport, SnpVerifyError> {
    Ok(if opts.lenient_reserved {
        AttestationReport::from_bytes_lenient(bytes)?
    } else {
        AttestationReport::from_bytes(bytes)?
    })
}

/// Checks that need no certificate; returns the CPUID product (version ≥ 3).
fn precheck(report: &AttestationReport, opts: &VerifyOptions) -> Result<Option<Product>, SnpVerifyError> {
    if report.key_info.mask_chip_key() {
        return Err(SnpVerifyError::ChipKeyMasked);
    }
    match report.key_info.signing_key() {
        SigningKey::Vcek | SigningKey::Vlek => {}
        other => return Err(SnpVerifyError::UnsupportedSigningKey(other)),
    }
    let cpuid_product = match report.cpuid {
        Some(c) => Some(c.product().ok_or(SnpVerifyError::UnknownProduct { family: c.family, model: c.model })?),
        None => None,
    };
    if let (Some(c), Some(e)) = (cpuid_product, opts.expected_product)
        && c != e
    {
        return Err(SnpVerifyError::ProductMismatch { expected: e, chain: c });
    }
    Ok(cpuid_product)
}

fn tcb_claims(claims: &mut Map<String, Value>, prefix: &str, tcb: TcbVersion, layout: TcbLayout) {
    let p = tcb.parts(layout);
    claims.insert(format!("{prefix}_bootloader"), json!(p.bootloader));
    claims.insert(format!("{prefix}_tee"), json!(p.tee));
    claims.insert(format!("{prefix}_snp"), json!(p.snp));
    claims.insert(format!("{prefix}_microcode"), json!(p.microcode));
    if let Some(fmc) = p.fmc {
        claims.insert(format!("{prefix}_fmc"), json!(fmc));
    }
    claims.insert(format!("{prefix}_raw"), json!(tcb.to_hex()));
}

impl VerifiedSnpReport {
    /// The report.
    pub fn report(&self) -> &AttestationReport {
        &self.report
    }

    /// The product of the chain.
    pub fn product(&self) -> Product {
        self.vek.product()
    }

    /// Whether a VCEK or a VLEK signed it.
    pub fn vek_kind(&self) -> VekKind {
        self.vek.kind()
    }

    /// The verified VEK.
    pub fn vek(&self) -> &VerifiedVek {
        &self.vek
    }

    /// Normalised claims as a flat JSON object. Names follow trustee's SNP verifier where it has
    /// one (`measurement`, `report_data`, `init_data` (= HOST_DATA), `chip_id`, `policy_*`,
    /// `reported_tcb_*`, `platform_smt_enabled`, `platform_tsme_enabled`); the others use the same
    /// style. Byte fields are lowercase hex, flags booleans, numbers JSON numbers. `host_data`
    /// repeats `init_data` under the specification's name.
    pub fn claims(&self) -> Value {
        let r = &self.report;
        let layout = self.product().tcb_layout();
        let p = r.policy;
        let pi = r.platform_info;
        let mut c = Map::new();
        c.insert("version".into(), json!(r.version));
        c.insert("product".into(), json!(self.product().name()));
        c.insert("signing_key".into(), json!(self.vek_kind().name()));
        c.insert("measurement".into(), json!(r.measurement.to_hex()));
        c.insert("report_data".into(), json!(r.report_data.to_hex()));
        c.insert("init_data".into(), json!(r.host_data.to_hex()));
        c.insert("host_data".into(), json!(r.host_data.to_hex()));
        c.insert("chip_id".into(), json!(r.chip_id.to_hex()));
        c.insert("vmpl".into(), json!(r.vmpl));
        c.insert("guest_svn".into(), json!(r.guest_svn));
        c.insert("family_id".into(), json!(r.family_id.to_hex()));
        c.insert("image_id".into(), json!(r.image_id.to_hex()));
        c.insert("id_key_digest".into(), json!(r.id_key_digest.to_hex()));
        c.insert("author_key_digest".into(), json!(r.author_key_digest.to_hex()));
        c.insert("author_key_en".into(), json!(r.key_info.author_key_en()));
        c.insert("report_id".into(), json!(r.report_id.to_hex()));
        c.insert("report_id_ma".into(), json!(r.report_id_ma.to_hex()));
        c.insert("policy".into(), json!(format!("{:#x}", p.0)));
        c.insert("policy_abi_major".into(), json!(p.abi_major()));
        c.insert("policy_abi_minor".into(), json!(p.abi_minor()));
        c.insert("policy_smt_allowed".into(), json!(p.smt_allowed()));
        c.insert("policy_migrate_ma".into(), json!(p.migrate_ma()));
        c.insert("policy_debug_allowed".into(), json!(p.debug()));
        c.insert("policy_single_socket".into(), json!(p.single_socket()));
        c.insert("policy_cxl_allowed".into(), json!(p.cxl_allowed()));
        c.insert("policy_mem_aes_256_xts".into(), json!(p.mem_aes_256_xts()));
        c.insert("policy_rapl_dis".into(), json!(p.rapl_dis()));
        c.insert("policy_ciphertext_hiding".into(), json!(p.ciphertext_hiding()));
        c.insert("policy_page_swap_disable".into(), json!(p.page_swap_disable()));
        c.insert("platform_info".into(), json!(format!("{:#x}", pi.0)));
        c.insert("platform_smt_enabled".into(), json!(pi.smt_enabled()));
        c.insert("platform_tsme_enabled".into(), json!(pi.tsme_enabled()));
        c.insert("platform_ecc_enabled".into(), json!(pi.ecc_enabled()));
        c.insert("platform_rapl_disabled".into(), json!(pi.rapl_disabled()));
        c.insert("platform_ciphertext_hiding_enabled".into(), json!(pi.ciphertext_hiding_enabled()));
        c.insert("platform_alias_check_complete".into(), json!(pi.alias_check_complete()));
        c.insert("platform_sev_tio_enabled".into(), json!(pi.sev_tio_enabled()));
        tcb_claims(&mut c, "reported_tcb", r.reported_tcb, layout);
        tcb_claims(&mut c, "committed_tcb", r.committed_tcb, layout);
        tcb_claims(&mut c, "current_tcb", r.current_tcb, layout);
        tcb_claims(&mut c, "launch_tcb", r.launch_tcb, layout);
        c.insert("firmware_current".into(), json!(r.current_version.to_string()));
        c.insert("firmware_committed".into(), json!(r.committed_version.to_string()));
        if let Some(cpuid) = r.cpuid {
            c.insert("cpuid_fam_id".into(), json!(cpuid.family));
            c.insert("cpuid_mod_id".into(), json!(cpuid.model));
            c.insert("cpuid_step".into(), json!(cpuid.stepping));
        }
        if let Some(m) = r.launch_mit_vector {
            c.insert("launch_mit_vector".into(), json!(format!("{m:#x}")));
        }
        if let Some(m) = r.current_mit_vector {
            c.insert("current_mit_vector".into(), json!(format!("{m:#x}")));
        }
        if let Some(csp) = self.vek.csp_id() {
            c.insert("vlek_csp_id".into(), json!(csp));
        }
        Value::Object(c)
    }
}
