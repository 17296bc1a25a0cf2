//! The typed error of SEV-SNP verification: one variant per failed check, each with a one-line
//! message and a short check name for command-line output.
//!
//! **What it trusts:** nothing; it only describes failures. Messages carry public values
//! (certificate names, serials, TCB numbers, fingerprints), never key material or report data.

use std::fmt;

use cloister_evidence::snp::{Product, SigningKey, SnpReportError};

/// A certificate of the AMD chain, to say which one a check failed on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CertRole {
    /// AMD root key (self-signed, pinned).
    Ark,
    /// AMD SEV key: signs VCEKs.
    Ask,
    /// AMD SEV VLEK key: signs VLEKs.
    Asvk,
    /// Versioned chip endorsement key certificate.
    Vcek,
    /// Versioned loaded endorsement key certificate.
    Vlek,
    /// The report-signing certificate, before its kind is known.
    Vek,
    /// A certificate revocation list.
    Crl,
}

impl fmt::Display for CertRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CertRole::Ark => "ARK",
            CertRole::Ask => "ASK",
            CertRole::Asvk => "ASVK",
            CertRole::Vcek => "VCEK",
            CertRole::Vlek => "VLEK",
            CertRole::Vek => "VEK",
            CertRole::Crl => "CRL",
        })
    }
}

/// A signature link of the chain.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ChainLink {
    /// ARK signs ASK.
    ArkToAsk,
    /// ARK signs ASVK.
    ArkToAsvk,
    /// ASK signs VCEK.
    AskToVcek,
    /// ASVK signs VLEK.
    AsvkToVlek,
    /// ARK signs its CRL.
    ArkToCrl,
}

impl fmt::Display for ChainLink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ChainLink::ArkToAsk => "ARK -> ASK",
            ChainLink::ArkToAsvk => "ARK -> ASVK",
            ChainLink::AskToVcek => "ASK -> VCEK",
            ChainLink::AsvkToVlek => "ASVK -> VLEK",
            ChainLink::ArkToCrl => "ARK -> CRL",
        })
    }
}

/// A component of a TCB version.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TcbComponent {
    /// FMC (Turin and later), certificate extension fmcSPL.
    Fmc,
    /// ASP boot loader, blSPL.
    Bootloader,
    /// ASP OS, teeSPL.
    Tee,
    /// SNP firmware, snpSPL.
    Snp,
    /// Microcode, ucodeSPL.
    Microcode,
}

impl fmt::Display for TcbComponent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TcbComponent::Fmc => "fmc",
            TcbComponent::Bootloader => "bootloader",
            TcbComponent::Tee => "tee",
            TcbComponent::Snp => "snp",
            TcbComponent::Microcode => "microcode",
        })
    }
}

/// Why an SEV-SNP report was not verified. Every variant is one failed check.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SnpVerifyError {
    /// The report bytes are malformed.
    #[error("malformed report: {0}")]
    Report(#[from] SnpReportError),
    /// KEY_INFO.MASK_CHIP_KEY is set: the report carries no signature.
    #[error("report is unsigned (MASK_CHIP_KEY is set)")]
    ChipKeyMasked,
    /// KEY_INFO.SIGNING_KEY is neither VCEK nor VLEK.
    #[error("report signing key is {0}, not VCEK or VLEK")]
    UnsupportedSigningKey(SigningKey),
    /// The report's CPUID names a processor without known roots.
    #[error("unknown product: CPUID family {family:#04x} model {model:#04x}")]
    UnknownProduct {
        /// CPUID family.
        family: u8,
        /// CPUID model.
        model: u8,
    },
    /// The product of the report (CPUID or the caller's expectation) and of the chain differ.
    #[error("product mismatch: {expected} expected, certificate chain is for {chain}")]
    ProductMismatch {
        /// Product from CPUID or the caller.
        expected: Product,
        /// Product of the root the chain ends at.
        chain: Product,
    },
    /// A certificate does not parse or lacks something required.
    #[error("malformed {which} certificate: {reason}")]
    MalformedCertificate {
        /// The certificate.
        which: CertRole,
        /// What is wrong.
        reason: String,
    },
    /// No report-signing certificate (VCEK/VLEK) was supplied or found.
    #[error("no VCEK/VLEK certificate: {0}")]
    MissingVek(String),
    /// No ASK/ASVK with the VEK's issuer name is known.
    #[error("issuer {issuer:?} of the {which} is not among the supplied or built-in certificates")]
    IssuerNotFound {
        /// The certificate whose issuer is missing.
        which: CertRole,
        /// Issuer common name.
        issuer: String,
    },
    /// The chain ends at a root certificate that is not in the trust anchors.
    #[error("root {subject:?} (sha256 {fingerprint}) is not a pinned trust anchor")]
    UnpinnedRoot {
        /// Root common name.
        subject: String,
        /// SHA-256 of the root's DER, lowercase hex.
        fingerprint: String,
    },
    /// No trust anchor has the name of the intermediate's issuer.
    #[error("unknown root: no trust anchor named {issuer:?} issued the {which}")]
    UnknownRoot {
        /// The intermediate certificate.
        which: CertRole,
        /// Issuer common name.
        issuer: String,
    },
    /// A certificate is signed with something other than RSASSA-PSS SHA-384/MGF1-SHA-384/salt 48.
    #[error("{which} signature algorithm is not RSASSA-PSS SHA-384 (salt 48): {detail}")]
    UnsupportedCertSignatureAlgorithm {
        /// The certificate (or CRL).
        which: CertRole,
        /// What was found.
        detail: String,
    },
    /// A chain signature does not verify.
    #[error("chain signature {link} does not verify")]
    ChainSignature {
        /// The failing link.
        link: ChainLink,
    },
    /// A certificate is not yet valid at `now`.
    #[error("{which} certificate not valid before {not_before} (now {now})")]
    CertificateNotYetValid {
        /// The certificate.
        which: CertRole,
        /// Start of validity, UNIX seconds.
        not_before: i64,
        /// The time verified at.
        now: u64,
    },
    /// A certificate has expired at `now`.
    #[error("{which} certificate expired at {not_after} (now {now})")]
    CertificateExpired {
        /// The certificate.
        which: CertRole,
        /// End of validity, UNIX seconds.
        not_after: i64,
        /// The time verified at.
        now: u64,
    },
    /// A CRL does not parse.
    #[error("malformed CRL: {0}")]
    MalformedCrl(String),
    /// A CRL was issued by none of the trust anchors of the chain's product.
    #[error("CRL issuer {issuer:?} is not the ARK of the chain")]
    CrlIssuer {
        /// CRL issuer common name.
        issuer: String,
    },
    /// A CRL is outside its validity (thisUpdate/nextUpdate) at `now`.
    #[error("CRL not current: valid {this_update}..{next_update:?}, now {now}")]
    CrlNotCurrent {
        /// thisUpdate, UNIX seconds.
        this_update: i64,
        /// nextUpdate, UNIX seconds.
        next_update: Option<i64>,
        /// The time verified at.
        now: u64,
    },
    /// A certificate of the chain is revoked by the ARK's CRL.
    #[error("{which} certificate serial {serial} is revoked")]
    Revoked {
        /// The revoked certificate.
        which: CertRole,
        /// Its serial number, hex.
        serial: String,
    },
    /// The report was signed by a different kind of key than the certificate.
    #[error("report says signing key {report}, certificate is a {certificate}")]
    SigningKeyMismatch {
        /// KEY_INFO.SIGNING_KEY.
        report: SigningKey,
        /// Kind of the certificate (VCEK or VLEK).
        certificate: CertRole,
    },
    /// A TCB extension of the VEK is missing or not an integer.
    #[error("{which} has no usable {component} SPL extension")]
    TcbExtensionMissing {
        /// The certificate.
        which: CertRole,
        /// Component.
        component: TcbComponent,
    },
    /// A VEK TCB extension differs from REPORTED_TCB.
    #[error("TCB mismatch: {component} is {certificate} in the certificate, {report} in REPORTED_TCB")]
    TcbMismatch {
        /// Component.
        component: TcbComponent,
        /// Value in the certificate.
        certificate: u64,
        /// Value in the report.
        report: u8,
    },
    /// The VCEK has no usable hwID extension.
    #[error("VCEK has no usable hwID extension: {0}")]
    HwIdMissing(String),
    /// CHIP_ID is zero (masked) but the report is signed by a VCEK, which binds a chip.
    #[error("CHIP_ID is masked (all zero) in a VCEK-signed report")]
    ChipIdMasked,
    /// The VCEK hwID differs from CHIP_ID.
    #[error("chip id mismatch: VCEK hwID {certificate}, report CHIP_ID {report}")]
    ChipIdMismatch {
        /// hwID, hex.
        certificate: String,
        /// CHIP_ID (the part compared), hex.
        report: String,
    },
    /// The ECDSA P-384 signature over report bytes 0x000..0x2A0 does not verify.
    #[error("report signature does not verify with the {which} key")]
    ReportSignature {
        /// VCEK or VLEK.
        which: CertRole,
    },
    /// POLICY.DEBUG is set and debug guests are not allowed.
    #[error("guest policy allows debugging (POLICY.DEBUG = 1) and debug guests are not allowed")]
    DebugPolicy,
    /// The certificate source needs the network and the caller did not allow it.
    #[error("fetching from AMD KDS needs allow_network, which is off: {0}")]
    NetworkDisabled(String),
    /// A certificate file could not be read.
    #[error("reading {path}: {error}")]
    Io {
        /// File.
        path: String,
        /// The I/O error.
        error: String,
    },
    /// A trust anchor could not be set up.
    #[error("trust anchor: {0}")]
    TrustAnchor(String),
}

impl SnpVerifyError {
    /// A short name of the failed check, for command-line output: `report`, `product`,
    /// `certificate`, `chain`, `root`, `dates`, `crl`, `signing_key`, `tcb`, `chip_id`,
    /// `signature`, `debug`, `source` or `anchors`.
    pub fn check(&self) -> &'static str {
        use SnpVerifyError as E;
        match self {
            E::Report(_) => "report",
            E::ChipKeyMasked | E::ReportSignature { .. } => "signature",
            E::UnsupportedSigningKey(_) | E::SigningKeyMismatch { .. } => "signing_key",
            E::UnknownProduct { .. } | E::ProductMismatch { .. } => "product",
            E::MalformedCertificate { .. } | E::MissingVek(_) => "certificate",
            E::IssuerNotFound { .. } | E::UnsupportedCertSignatureAlgorithm { .. } | E::ChainSignature { .. } => {
                "chain"
            }
            E::UnpinnedRoot { .. } | E::UnknownRoot { .. } => "root",
            E::CertificateNotYetValid { .. } | E::CertificateExpired { .. } => "dates",
            E::MalformedCrl(_) | E::CrlIssuer { .. } | E::CrlNotCurrent { .. } | E::Revoked { .. } => "crl",
            E::TcbExtensionMissing { .. } | E::TcbMismatch { .. } => "tcb",
            E::HwIdMissing(_) | E::ChipIdMasked | E::ChipIdMismatch { .. } => "chip_id",
            E::DebugPolicy => "debug",
            E::NetworkDisabled(_) | E::Io { .. } => "source",
            E::TrustAnchor(_) => "anchors",
        }
    }
}
