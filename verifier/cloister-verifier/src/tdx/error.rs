//! Why a TDX/SGX quote was rejected: one variant per failed check, each a one-line message, with
//! [`TdxVerifyError::check`] naming the group of checks for CLI output.

use std::fmt;

use cloister_evidence::tdx::QuoteError;
use cloister_measure::rtmr::EventLogError;

use super::der::format_unix;
use super::tcb::TcbStatus;

/// A certificate of the DCAP PKI, for messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CertRole {
    /// The PCK leaf certificate from the quote.
    PckLeaf,
    /// The PCK Platform or Processor CA certificate from the quote.
    PckCa,
    /// The root CA (Intel SGX Root CA or a named emulated root).
    Root,
    /// The TCB signing certificate of the TCB info.
    TcbInfoSigner,
    /// The TCB signing certificate of the QE identity.
    QeIdentitySigner,
}

impl fmt::Display for CertRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::PckLeaf => "PCK certificate",
            Self::PckCa => "PCK CA certificate",
            Self::Root => "root CA certificate",
            Self::TcbInfoSigner => "TCB info signing certificate",
            Self::QeIdentitySigner => "QE identity signing certificate",
        })
    }
}

/// Which CRL.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CrlKind {
    /// The root CA CRL (revokes intermediate CAs and TCB signing certificates).
    RootCa,
    /// The PCK CRL of the Platform or Processor CA (revokes PCK certificates).
    Pck,
}

impl fmt::Display for CrlKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::RootCa => "root CA CRL",
            Self::Pck => "PCK CRL",
        })
    }
}

/// A time for messages: UNIX seconds shown as RFC 3339.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Time(pub u64);

impl fmt::Display for Time {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&format_unix(self.0))
    }
}

/// Why a TDX (or SGX) quote failed verification.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TdxVerifyError {
    /// The quote bytes do not parse.
    #[error("malformed quote: {0}")]
    Malformed(#[from] QuoteError),
    /// Version, TEE type or QE vendor not accepted.
    #[error("unsupported quote: {0}")]
    Unsupported(String),
    /// The attestation key is not a valid P-256 point, or the quote signature does not verify.
    #[error("quote signature does not verify with the attestation key")]
    QuoteSignature,
    /// The QE report signature does not verify with the PCK key.
    #[error("QE report signature does not verify with the PCK certificate's key")]
    QeReportSignature,
    /// QE REPORTDATA is not SHA-256(attestation key ‖ QE auth data) followed by zeros.
    #[error("QE report data does not bind the attestation key and QE authentication data")]
    QeBinding,
    /// The quote carries no usable PCK certificate chain.
    #[error("no PCK certificate chain: {0}")]
    PckChainMissing(String),
    /// A certificate of a chain does not parse or is not acceptable (algorithm, key, extensions).
    #[error("{cert} is malformed: {reason}")]
    CertificateMalformed {
        /// Which certificate.
        cert: CertRole,
        /// What is wrong.
        reason: String,
    },
    /// A certificate's issuer name does not match the next certificate up the chain.
    #[error("{cert} is not issued by the next certificate of its chain (issuer name mismatch)")]
    ChainIssuer {
        /// Which certificate.
        cert: CertRole,
    },
    /// A certificate's signature does not verify with its issuer's key.
    #[error("{cert} signature does not verify with its issuer's key")]
    ChainSignature {
        /// Which certificate.
        cert: CertRole,
    },
    /// An issuing certificate may not issue certificates (not a CA, or keyUsage lacks keyCertSign),
    /// or the PCK leaf claims to be a CA.
    #[error("{cert} has the wrong CA role for its place in the chain")]
    ChainRole {
        /// Which certificate.
        cert: CertRole,
    },
    /// The chain's root is not one of the trust anchors.
    #[error("root certificate (SHA-256 {fingerprint}) is not a pinned trust anchor")]
    RootNotPinned {
        /// SHA-256 of the DER of the offered root (or of the unknown issuer name).
        fingerprint: String,
    },
    /// The PCK chain and the collateral chain to different trust anchors.
    #[error("the PCK chain and the collateral chain to different trust anchors")]
    RootMismatch,
    /// A trust anchor given by the caller is not acceptable.
    #[error("trust anchor rejected: {0}")]
    TrustAnchor(String),
    /// A certificate is past its validity.
    #[error("{cert} expired at {not_after}")]
    CertificateExpired {
        /// Which certificate.
        cert: CertRole,
        /// notAfter.
        not_after: Time,
    },
    /// A certificate is not yet valid.
    #[error("{cert} is not valid before {not_before}")]
    CertificateNotYetValid {
        /// Which certificate.
        cert: CertRole,
        /// notBefore.
        not_before: Time,
    },
    /// A CRL does not parse or is not acceptable.
    #[error("{crl} is malformed: {reason}")]
    CrlMalformed {
        /// Which CRL.
        crl: CrlKind,
        /// What is wrong.
        reason: String,
    },
    /// A CRL is not issued by the certificate whose revocations it must list.
    #[error("{crl} is not issued by the expected CA (issuer name mismatch)")]
    CrlIssuer {
        /// Which CRL.
        crl: CrlKind,
    },
    /// A CRL's signature does not verify.
    #[error("{crl} signature does not verify with its issuer's key")]
    CrlSignature {
        /// Which CRL.
        crl: CrlKind,
    },
    /// A CRL is past its nextUpdate.
    #[error("{crl} expired at {next_update}")]
    CrlExpired {
        /// Which CRL.
        crl: CrlKind,
        /// nextUpdate.
        next_update: Time,
    },
    /// A CRL's thisUpdate is in the future.
    #[error("{crl} is not valid before {this_update}")]
    CrlNotYetValid {
        /// Which CRL.
        crl: CrlKind,
        /// thisUpdate.
        this_update: Time,
    },
    /// A certificate is listed in a CRL.
    #[error("{cert} (serial {serial}) is revoked by the {crl}")]
    Revoked {
        /// Which certificate.
        cert: CertRole,
        /// Its serial number, hex.
        serial: String,
        /// The CRL listing it.
        crl: CrlKind,
    },
    /// The collateral does not parse.
    #[error("malformed collateral: {0}")]
    CollateralMalformed(String),
    /// The TCB info signature does not verify with its signing certificate.
    #[error("TCB info signature does not verify with the TCB signing certificate")]
    TcbInfoSignature,
    /// The TCB info is past its nextUpdate.
    #[error("TCB info expired at {next_update}")]
    TcbInfoExpired {
        /// nextUpdate.
        next_update: Time,
    },
    /// The TCB info's issueDate is in the future.
    #[error("TCB info is not valid before {issue_date}")]
    TcbInfoNotYetValid {
        /// issueDate.
        issue_date: Time,
    },
    /// The QE identity signature does not verify with its signing certificate.
    #[error("QE identity signature does not verify with the TCB signing certificate")]
    QeIdentitySignature,
    /// The QE identity is past its nextUpdate.
    #[error("QE identity expired at {next_update}")]
    QeIdentityExpired {
        /// nextUpdate.
        next_update: Time,
    },
    /// The QE identity's issueDate is in the future.
    #[error("QE identity is not valid before {issue_date}")]
    QeIdentityNotYetValid {
        /// issueDate.
        issue_date: Time,
    },
    /// No collateral was given: signatures and chain are valid, but the TCB cannot be appraised.
    #[error("no collateral for FMSPC {fmspc}: the TCB cannot be appraised (signatures and PCK chain are valid)")]
    CollateralMissing {
        /// The platform's FMSPC (from the PCK certificate), hex.
        fmspc: String,
    },
    /// The PCK certificate's FMSPC differs from the TCB info's.
    #[error("FMSPC mismatch: PCK certificate {pck}, TCB info {tcb_info}")]
    FmspcMismatch {
        /// From the PCK certificate, hex.
        pck: String,
        /// From the TCB info, hex.
        tcb_info: String,
    },
    /// The PCK certificate's PCE-ID differs from the TCB info's.
    #[error("PCE-ID mismatch: PCK certificate {pck}, TCB info {tcb_info}")]
    PceIdMismatch {
        /// From the PCK certificate, hex.
        pck: String,
        /// From the TCB info, hex.
        tcb_info: String,
    },
    /// The TCB info or QE identity is for another TEE (e.g. SGX collateral for a TDX quote).
    #[error("{document} is {found}, the quote needs {expected}")]
    CollateralKind {
        /// "TCB info" or "QE identity".
        document: &'static str,
        /// Its id and version.
        found: String,
        /// What the quote needs.
        expected: &'static str,
    },
    /// The QE report does not match the QE identity.
    #[error("QE report does not match the QE identity: {field}")]
    QeIdentityMismatch {
        /// The field that differs.
        field: &'static str,
    },
    /// The QE's ISVSVN is below every level of the QE identity.
    #[error("QE ISVSVN {isv_svn} is below every TCB level of the QE identity")]
    QeTcbNotSupported {
        /// The QE's ISVSVN.
        isv_svn: u16,
    },
    /// No TCB level of the TCB info is met by the platform.
    #[error("TCB level not supported: the platform meets no TCB level of the TCB info")]
    TcbLevelNotSupported,
    /// The TDX module version has no identity in the TCB info.
    #[error("TCB info has no TDX module identity {id}")]
    TdxModuleUnknown {
        /// `TDX_%02X`.
        id: String,
    },
    /// The TDX module SVN is below every level of its module identity.
    #[error("TDX module SVN {isv_svn} is below every level of its module identity")]
    TdxModuleTcbNotSupported {
        /// `TEE_TCB_SVN[0]`.
        isv_svn: u8,
    },
    /// MRSIGNERSEAM or SEAMATTRIBUTES do not match the TDX module identity.
    #[error("TDX module does not match the TCB info: {field}")]
    TdxModuleMismatch {
        /// The field that differs.
        field: &'static str,
    },
    /// A TCB level has a status not allowed in its document.
    #[error("TCB status {status} is not valid in a {structure}")]
    TcbStatusInvalid {
        /// The status.
        status: TcbStatus,
        /// The document.
        structure: &'static str,
    },
    /// The platform, TDX module or QE TCB is revoked.
    #[error("TCB status is Revoked (advisories: {})", advisory_ids.join(", "))]
    TcbRevoked {
        /// Advisory IDs of the matched levels.
        advisory_ids: Vec<String>,
    },
    /// A debug TD (TDATTRIBUTES.DEBUG) or debug enclave, and debug is not allowed.
    #[error("debug {0} rejected (its memory and state are visible to the host)")]
    Debug(&'static str),
    /// TD attributes not allowed by the options.
    #[error("TD attributes rejected: {0}")]
    TdAttributes(&'static str),
    /// The event log does not parse.
    #[error("event log: {0}")]
    EventLog(#[from] EventLogError),
    /// Replaying the event log does not give the quoted RTMR.
    #[error("event log replay gives RTMR{index} = {replayed}, the quote has {quoted}")]
    RtmrMismatch {
        /// RTMR index.
        index: usize,
        /// Replayed value, hex.
        replayed: String,
        /// Quoted value, hex.
        quoted: String,
    },
}

impl TdxVerifyError {
    /// A short name of the group of checks that failed, for CLI output.
    pub fn check(&self) -> &'static str {
        match self {
            Self::Malformed(_) | Self::Unsupported(_) => "parse",
            Self::QuoteSignature => "signature",
            Self::QeReportSignature | Self::QeBinding => "qe_report",
            Self::PckChainMissing(_)
            | Self::CertificateMalformed { .. }
            | Self::ChainIssuer { .. }
            | Self::ChainSignature { .. }
            | Self::ChainRole { .. }
            | Self::RootNotPinned { .. }
            | Self::RootMismatch
            | Self::TrustAnchor(_) => "chain",
            Self::CertificateExpired { .. }
            | Self::CertificateNotYetValid { .. }
            | Self::CrlExpired { .. }
            | Self::CrlNotYetValid { .. }
            | Self::TcbInfoExpired { .. }
            | Self::TcbInfoNotYetValid { .. }
            | Self::QeIdentityExpired { .. }
            | Self::QeIdentityNotYetValid { .. } => "dates",
            Self::CrlMalformed { .. } | Self::CrlIssuer { .. } | Self::CrlSignature { .. } | Self::Revoked { .. } => {
                "crl"
            }
            Self::CollateralMalformed(_)
            | Self::TcbInfoSignature
            | Self::QeIdentitySignature
            | Self::CollateralKind { .. } => "collateral",
            Self::QeIdentityMismatch { .. } | Self::QeTcbNotSupported { .. } => "qe_identity",
            Self::CollateralMissing { .. }
            | Self::FmspcMismatch { .. }
            | Self::PceIdMismatch { .. }
            | Self::TcbLevelNotSupported
            | Self::TdxModuleUnknown { .. }
            | Self::TdxModuleTcbNotSupported { .. }
            | Self::TdxModuleMismatch { .. }
            | Self::TcbStatusInvalid { .. }
            | Self::TcbRevoked { .. } => "tcb",
            Self::Debug(_) => "debug",
            Self::TdAttributes(_) => "td_attributes",
            Self::EventLog(_) | Self::RtmrMismatch { .. } => "event_log",
        }
    }

    /// True if the failure is a certificate, CRL, TCB info or QE identity outside its validity
    /// window at the given time (stale collateral: refresh it, or check the clock).
    pub fn is_expired(&self) -> bool {
        self.check() == "dates"
    }
}
