//! Where the report-signing certificate (VCEK/VLEK) and its chain come from: bytes or files the
//! caller gives ([`SnpCertificates`]), the extended-report certificate table (`auxblob`), an
//! on-disk cache in the AMD KDS layout ([`KdsDirectory`]), or AMD KDS itself through a caller's
//! [`KdsFetch`] ([`CertSource::Fetch`], [`CertSource::DirectoryOrFetch`], which also fills the cache;
//! only with `allow_network`). The HTTP client is the caller's (the key broker's has timeouts and a
//! body limit), so this crate holds no network code.
//!
//! **What it trusts:** nothing. Every certificate found here is untrusted input for the chain
//! verification; a cache directory is only a place to find bytes, never a source of trust.
//!
//! Cache directory layout (mirrors the KDS URL paths, one tree per product):
//!
//! ```text
//! <dir>/<Product>/vcek/<hwid>/bl<BL>_tee<TEE>_snp<SNP>_ucode<UCODE>[_fmc<FMC>].der   VCEK (DER)
//! <dir>/<Product>/vcek/cert_chain.pem      ASK then ARK (KDS /vcek/v1/<Product>/cert_chain)
//! <dir>/<Product>/vlek/cert_chain.pem      ASVK then ARK (KDS /vlek/v1/<Product>/cert_chain)
//! <dir>/<Product>/vcek/crl.der             ARK-signed CRL (KDS /vcek/v1/<Product>/crl)
//! ```
//!
//! `<Product>` is `Milan`, `Genoa` or `Turin`; `<hwid>` is the lowercase hex of CHIP_ID (Turin:
//! its first 8 bytes); the SPL values are decimal, zero-padded to two digits (`_fmc` for Turin).
//! VLEKs cannot be fetched from KDS and are not looked up in the cache: they come with the
//! evidence.

use std::path::{Path, PathBuf};

use cloister_evidence::snp::{AttestationReport, ChipId, Product, SigningKey, TcbVersion};

use super::cert::{CertInfo, PublicKey, ders_from_pem_or_der};
use super::error::{CertRole, SnpVerifyError};

/// Base URL of the AMD Key Distribution Service.
pub const KDS_BASE_URL: &str = "https://kdsintf.amd.com";

/// The certificates supplied for a report: the VEK (VCEK or VLEK) and any chain certificates
/// (ASK, ASVK, ARK). None of them is trusted; supplied roots only improve error messages.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SnpCertificates {
    vek: Option<Vec<u8>>,
    chain: Vec<Vec<u8>>,
    crls: Vec<Vec<u8>>,
}

fn malformed(which: CertRole, reason: impl Into<String>) -> SnpVerifyError {
    SnpVerifyError::MalformedCertificate { which, reason: reason.into() }
}

fn read_file(path: &Path) -> Result<Vec<u8>, SnpVerifyError> {
    std::fs::read(path).map_err(|e| SnpVerifyError::Io { path: path.display().to_string(), error: e.to_string() })
}

use cloister_evidence::snp::cert_table::{self, GUID_ARK, GUID_ASK, GUID_CRL, GUID_VCEK, GUID_VLEK};

/// Serialises certificates into an extended-report certificate table (for tests and emulators):
/// entries `(guid, offset, length)`, an all-zero terminator, then the DER blobs.
pub fn build_cert_table(vek: &[u8], vlek: bool, ask: Option<&[u8]>, ark: Option<&[u8]>) -> Vec<u8> {
    let mut entries: Vec<(cert_table::Guid, &[u8])> = vec![(if vlek { GUID_VLEK } else { GUID_VCEK }, vek)];
    if let Some(ask) = ask {
        entries.push((GUID_ASK, ask));
    }
    if let Some(ark) = ark {
        entries.push((GUID_ARK, ark));
    }
    cert_table::build(&entries)
}

impl SnpCertificates {
    /// No certificates.
    pub fn new() -> Self {
        Self::default()
    }

    /// The VEK certificate, DER or PEM.
    pub fn from_vek(vek: &[u8]) -> Result<Self, SnpVerifyError> {
        Self::new().with_vek(vek)
    }

    /// Sets the VEK certificate (DER or PEM with one certificate).
    pub fn with_vek(mut self, vek: &[u8]) -> Result<Self, SnpVerifyError> {
        let ders = ders_from_pem_or_der(vek).map_err(|e| malformed(CertRole::Vek, e))?;
        let [der] = ders.as_slice() else {
            return Err(malformed(CertRole::Vek, format!("expected one VEK certificate, got {}", ders.len())));
        };
        self.vek = Some(der.clone());
        Ok(self)
    }

    /// Adds chain certificates (ASK/ASVK/ARK): one DER certificate or a PEM bundle in any order
    /// (KDS serves "ASK then ARK"). A certificate with a P-384 key in the bundle is taken as the
    /// VEK if none is set yet.
    pub fn with_chain(mut self, chain: &[u8]) -> Result<Self, SnpVerifyError> {
        let ders = ders_from_pem_or_der(chain).map_err(|e| malformed(CertRole::Ask, e))?;
        for der in ders {
            let info = CertInfo::parse(&der).map_err(|e| malformed(CertRole::Ask, e))?;
            if matches!(info.key, PublicKey::EcP384(_)) {
                if self.vek.is_some() {
                    return Err(malformed(CertRole::Vek, "more than one VEK certificate supplied"));
                }
                self.vek = Some(der);
            } else {
                self.chain.push(der);
            }
        }
        Ok(self)
    }

    /// A PEM bundle holding the VEK and its chain in any order (e.g. `VCEK, ASK, ARK`).
    pub fn from_pem_bundle(pem: &[u8]) -> Result<Self, SnpVerifyError> {
        Self::new().with_chain(pem)
    }

    /// Reads the VEK (DER or PEM) and optionally a chain file (PEM bundle or DER).
    pub fn from_files(vek: &Path, chain: Option<&Path>) -> Result<Self, SnpVerifyError> {
        let mut certs = Self::from_vek(&read_file(vek)?)?;
        if let Some(chain) = chain {
            certs = certs.with_chain(&read_file(chain)?)?;
        }
        Ok(certs)
    }

    /// Parses the extended-report certificate table (GHCB extended guest request, configfs-tsm
    /// `auxblob`): 24-byte entries `{GUID, u32 offset, u32 length}` ended by an all-zero entry,
    /// offsets relative to the table start. VCEK/VLEK, ASK, ARK and CRL entries are used; other
    /// GUIDs are ignored.
    pub fn from_cert_table(table: &[u8]) -> Result<Self, SnpVerifyError> {
        let bad = |reason: String| malformed(CertRole::Vek, format!("certificate table: {reason}"));
        let mut certs = Self::new();
        for (guid, blob) in cert_table::parse(table).map_err(bad)? {
            if guid == GUID_VCEK || guid == GUID_VLEK {
                if certs.vek.is_some() {
                    return Err(bad("more than one VCEK/VLEK entry".to_string()));
                }
                certs.vek = Some(blob.to_vec());
            } else if guid == GUID_ASK || guid == GUID_ARK {
                certs.chain.push(blob.to_vec());
            } else if guid == GUID_CRL {
                certs.crls.push(blob.to_vec());
            }
        }
        Ok(certs)
    }

    /// Adds an ARK-signed CRL (DER) to check the chain against.
    pub fn with_crl(mut self, crl_der: &[u8]) -> Self {
        self.crls.push(crl_der.to_vec());
        self
    }

    /// The VEK's DER, if any.
    pub fn vek_der(&self) -> Option<&[u8]> {
        self.vek.as_deref()
    }

    /// The chain certificates' DER.
    pub fn chain_ders(&self) -> &[Vec<u8>] {
        &self.chain
    }

    /// CRLs that came with the certificates (from a certificate table or a cache directory). They
    /// are not checked automatically: pass them in [`super::VerifyOptions::crls`] to check them.
    pub fn crls(&self) -> &[Vec<u8>] {
        &self.crls
    }
}

/// The hwID string of a CHIP_ID as KDS and the cache use it (Turin: the first 8 bytes).
pub fn kds_hwid(product: Product, chip_id: &ChipId) -> String {
    match product {
        Product::Turin => hex::encode(&chip_id.0[..8]),
        Product::Milan | Product::Genoa => chip_id.to_hex(),
    }
}

fn spl_query(product: Product, tcb: TcbVersion) -> String {
    let p = tcb.parts(product.tcb_layout());
    let mut q =
        format!("blSPL={:02}&teeSPL={:02}&snpSPL={:02}&ucodeSPL={:02}", p.bootloader, p.tee, p.snp, p.microcode);
    if let Some(fmc) = p.fmc {
        q.push_str(&format!("&fmcSPL={fmc:02}"));
    }
    q
}

/// The KDS URL of the VCEK for a chip and REPORTED_TCB.
pub fn kds_vcek_url(product: Product, chip_id: &ChipId, reported_tcb: TcbVersion) -> String {
    format!("{KDS_BASE_URL}/vcek/v1/{product}/{}?{}", kds_hwid(product, chip_id), spl_query(product, reported_tcb))
}

/// The KDS URL of the CA chain (`vlek`: ASVK then ARK; otherwise ASK then ARK), PEM.
pub fn kds_chain_url(product: Product, vlek: bool) -> String {
    format!("{KDS_BASE_URL}/{}/v1/{product}/cert_chain", if vlek { "vlek" } else { "vcek" })
}

/// The KDS URL of the ARK-signed CRL, DER.
pub fn kds_crl_url(product: Product, vlek: bool) -> String {
    format!("{KDS_BASE_URL}/{}/v1/{product}/crl", if vlek { "vlek" } else { "vcek" })
}

/// An on-disk VCEK/chain cache in the KDS layout described in the module documentation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KdsDirectory {
    root: PathBuf,
}

impl KdsDirectory {
    /// A cache rooted at `root` (need not exist yet).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Path of the VCEK for a chip and REPORTED_TCB.
    pub fn vcek_path(&self, product: Product, chip_id: &ChipId, reported_tcb: TcbVersion) -> PathBuf {
        let p = reported_tcb.parts(product.tcb_layout());
        let mut name = format!("bl{:02}_tee{:02}_snp{:02}_ucode{:02}", p.bootloader, p.tee, p.snp, p.microcode);
        if let Some(fmc) = p.fmc {
            name.push_str(&format!("_fmc{fmc:02}"));
        }
        name.push_str(".der");
        self.root.join(product.name()).join("vcek").join(kds_hwid(product, chip_id)).join(name)
    }

    /// Path of the CA chain PEM (`vlek`: ASVK then ARK; otherwise ASK then ARK).
    pub fn chain_path(&self, product: Product, vlek: bool) -> PathBuf {
        self.root.join(product.name()).join(if vlek { "vlek" } else { "vcek" }).join("cert_chain.pem")
    }

    /// Path of the ARK-signed CRL.
    pub fn crl_path(&self, product: Product, vlek: bool) -> PathBuf {
        self.root.join(product.name()).join(if vlek { "vlek" } else { "vcek" }).join("crl.der")
    }

    /// Stores a VCEK (DER) fetched elsewhere for a chip and TCB; returns its path.
    pub fn store_vcek(
        &self,
        product: Product,
        chip_id: &ChipId,
        reported_tcb: TcbVersion,
        der: &[u8],
    ) -> Result<PathBuf, SnpVerifyError> {
        let path = self.vcek_path(product, chip_id, reported_tcb);
        let io = |e: std::io::Error| SnpVerifyError::Io { path: path.display().to_string(), error: e.to_string() };
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(io)?;
        }
        std::fs::write(&path, der).map_err(io)?;
        Ok(path)
    }

    /// Finds the VCEK (and chain and CRL, when present) for a report. The product comes from
    /// CPUID (report version ≥ 3), else from `product`; for a version-2 report without it, every
    /// product directory is tried and the chain verification then decides the product.
    pub fn certificates_for(
        &self,
        report: &AttestationReport,
        product: Option<Product>,
    ) -> Result<SnpCertificates, SnpVerifyError> {
        if report.key_info.signing_key() == SigningKey::Vlek {
            return Err(SnpVerifyError::MissingVek(
                "the report is VLEK-signed; VLEK certificates come with the evidence, not from a cache".to_string(),
            ));
        }
        let candidates: Vec<Product> = match report.cpuid_product().or(product) {
            Some(p) => vec![p],
            None => Product::ALL.to_vec(),
        };
        let mut tried = Vec::new();
        for p in candidates {
            let path = self.vcek_path(p, &report.chip_id, report.reported_tcb);
            if !path.is_file() {
                tried.push(path.display().to_string());
                continue;
            }
            let mut certs = SnpCertificates::from_vek(&read_file(&path)?)?;
            let chain = self.chain_path(p, false);
            if chain.is_file() {
                certs = certs.with_chain(&read_file(&chain)?)?;
            }
            let crl = self.crl_path(p, false);
            if crl.is_file() {
                certs.crls.push(read_file(&crl)?);
            }
            return Ok(certs);
        }
        Err(SnpVerifyError::MissingVek(format!("not in the cache directory (looked for {})", tried.join(", "))))
    }
}

/// Fetches a KDS URL (the HTTP client lives with the caller, so this crate stays free of
/// network code). Implementations must time out; the bytes returned are untrusted.
pub trait KdsFetch: Send + Sync + std::fmt::Debug {
    /// The body of `url` (a [`KDS_BASE_URL`] URL), or why it could not be fetched.
    fn get(&self, url: &str) -> Result<Vec<u8>, String>;
}

/// Where [`super::SnpVerifier::verify_with_source`] gets the certificates.
#[derive(Clone, Copy, Debug)]
pub enum CertSource<'a> {
    /// Certificates the caller supplies.
    Provided(&'a SnpCertificates),
    /// A KDS-layout cache directory only (a miss is [`SnpVerifyError::MissingVek`]).
    Directory(&'a KdsDirectory),
    /// AMD KDS through `fetcher` (needs `allow_network`).
    Fetch(&'a dyn KdsFetch),
    /// The cache directory; on a miss, KDS through `fetcher` (needs `allow_network`), storing
    /// what was fetched in the directory for next time.
    DirectoryOrFetch(&'a KdsDirectory, &'a dyn KdsFetch),
}

/// VCEK and chain from KDS through `fetcher` (refused without `allow_network`).
pub(crate) fn fetch_with(
    report: &AttestationReport,
    product: Option<Product>,
    allow_network: bool,
    fetcher: &dyn KdsFetch,
    cache: Option<&KdsDirectory>,
) -> Result<SnpCertificates, SnpVerifyError> {
    let Some(p) = report.cpuid_product().or(product) else {
        return Err(SnpVerifyError::MissingVek(
            "the report carries no CPUID (version 2): name the product to fetch its VCEK from KDS".into(),
        ));
    };
    let vcek_url = kds_vcek_url(p, &report.chip_id, report.reported_tcb);
    if !allow_network {
        return Err(SnpVerifyError::NetworkDisabled(vcek_url));
    }
    if report.key_info.signing_key() == SigningKey::Vlek {
        return Err(SnpVerifyError::MissingVek("VLEK certificates are not served by KDS".into()));
    }
    let fetch = |url: &str| fetcher.get(url).map_err(|e| SnpVerifyError::Io { path: url.to_owned(), error: e });
    let vcek = fetch(&vcek_url)?;
    let chain_url = kds_chain_url(p, false);
    let chain = fetch(&chain_url)?;
    let certs = SnpCertificates::from_vek(&vcek)?.with_chain(&chain)?;
    if let Some(dir) = cache {
        // Best effort: a cache that cannot be written only costs a later fetch.
        let vpath = dir.vcek_path(p, &report.chip_id, report.reported_tcb);
        let cpath = dir.chain_path(p, false);
        for (path, bytes) in [(vpath, &vcek), (cpath, &chain)] {
            if let Some(parent) = path.parent() {
                let _ = std::fs::create_dir_all(parent);
            }
            let tmp = path.with_extension("tmp");
            if std::fs::write(&tmp, bytes).and_then(|()| std::fs::rename(&tmp, &path)).is_err() {
                tracing::warn!(path = %path.display(), "cannot cache a certificate fetched from KDS");
            }
        }
    }
    Ok(certs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_and_paths() {
        let mut chip = ChipId::default();
        chip.0[0] = 0xab;
        chip.0[63] = 0xcd;
        let tcb = TcbVersion([3, 0, 0, 0, 0, 0, 8, 115]);
        let url = kds_vcek_url(Product::Milan, &chip, tcb);
        assert!(url.starts_with("https://kdsintf.amd.com/vcek/v1/Milan/ab00"));
        assert!(url.ends_with("cd?blSPL=03&teeSPL=00&snpSPL=08&ucodeSPL=115"));
        let turin = kds_vcek_url(Product::Turin, &chip, TcbVersion([1, 2, 3, 4, 0, 0, 0, 9]));
        assert_eq!(
            turin,
            "https://kdsintf.amd.com/vcek/v1/Turin/ab00000000000000?blSPL=02&teeSPL=03&snpSPL=04&ucodeSPL=09&fmcSPL=01"
        );
        let dir = KdsDirectory::new("/c");
        let p = dir.vcek_path(Product::Turin, &chip, TcbVersion([1, 2, 3, 4, 0, 0, 0, 9]));
        assert_eq!(p, PathBuf::from("/c/Turin/vcek/ab00000000000000/bl02_tee03_snp04_ucode09_fmc01.der"));
        assert_eq!(dir.chain_path(Product::Genoa, true), PathBuf::from("/c/Genoa/vlek/cert_chain.pem"));
    }

    #[test]
    fn cert_table_round_trip_and_bounds() {
        let t = build_cert_table(&[0x30, 1, 2], false, Some(&[0x30, 3]), None);
        let c = SnpCertificates::from_cert_table(&t).unwrap();
        assert_eq!(c.vek_der(), Some(&[0x30u8, 1, 2][..]));
        assert_eq!(c.chain_ders(), &[vec![0x30u8, 3]]);
        let mut bad = t.clone();
        bad[16] = 0xff;
        assert!(SnpCertificates::from_cert_table(&bad).is_err());
        assert!(SnpCertificates::from_cert_table(&t[..30]).is_err());
        assert!(SnpCertificates::from_cert_table(&[]).is_err());
    }
}
