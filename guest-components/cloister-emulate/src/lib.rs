//! The emulated TEE platform: attestation evidence in the exact AMD SEV-SNP (and Intel TDX)
//! hardware formats, signed by certificate chains generated on this machine, so that the rest of
//! Cloister (attester, key broker, verifier, policies) can be built and tested end to end without
//! confidential-computing hardware.
//!
//! > **WARNING — EMULATED EVIDENCE PROVES NOTHING ABOUT HARDWARE.** Whoever holds the emulator's
//! > private keys (anyone who can read the directory [`snp::EmulatedSnp::save`] writes, or any
//! > process that calls [`snp::EmulatedSnp::report`]) can produce a "valid" report with any
//! > measurement, report data or TCB. Such evidence says nothing about memory encryption, about
//! > what booted, or about which machine it ran on. Never trust an emulated root in production; a
//! > verifier must accept it only when a policy names that root explicitly.
//!
//! **What it trusts:** nothing from outside. Key material comes from the operating system's
//! random number generator (`getrandom`); the only inputs are the caller's requested field values,
//! and, for [`snp::EmulatedSnp::load`], a directory the caller controls.
//!
//! **How it is verified:** by the same code paths as real evidence. The SNP chain is shaped like
//! AMD's (RSA-4096 ARK → RSA-4096 ASK → ECDSA P-384 VCEK, RSASSA-PSS SHA-384 salt 48, the AMD VCEK
//! extensions), and reports are built with [`cloister_evidence::snp`]'s own serialiser, so
//! `cloister-verifier`'s `SnpVerifier` accepts them once its `TrustAnchors` name the emulated ARK
//! (`TrustAnchors::empty().with_root(product, ark_der, ark_sha256_hex)`). Only the trust anchor
//! differs; the built-in AMD roots reject them.
//!
//! TDX works the same way: [`tdx::EmulatedTdx`] issues an Intel-shaped DCAP chain (P-256 root CA →
//! PCK Platform CA → PCK certificate with the SGX extension; TCB signing certificate), version-4
//! quotes through an emulated quoting enclave, and signed collateral, which `TdxVerifier` accepts
//! with `TdxTrustAnchors::empty().with_root(root_der)`.
//!
//! Modules: [`snp`] (AMD SEV-SNP), [`tdx`] (Intel TDX), [`se`] (IBM Secure Execution: host-key
//! chain, image header and Ultravisor), [`service`] (the endpoint a guest asks
//! for reports: launch measurement and HOST_DATA fixed by the host, REPORT_DATA by the guest).

#![forbid(unsafe_code)]

mod der;
pub mod qgs;
pub mod se;
pub mod service;
pub mod snp;
pub mod tdx;

/// Why the emulator could not generate, load, save or sign.
#[derive(Debug, thiserror::Error)]
pub enum EmulateError {
    /// Key generation or signing failed in the cryptographic library.
    #[error("cryptographic operation failed: {0}")]
    Crypto(String),
    /// The requested report fields are not acceptable (e.g. VMPL above 3, unsupported version).
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    /// The report built from the fields does not parse back (an emulator bug or a bad request).
    #[error("report does not serialise: {0}")]
    Report(#[from] cloister_evidence::snp::SnpReportError),
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A saved emulator directory is incomplete or inconsistent.
    #[error("emulator state {path}: {reason}")]
    InvalidState {
        /// The file or directory.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// Malformed PEM armour.
    #[error("PEM: {0}")]
    Pem(String),
}
