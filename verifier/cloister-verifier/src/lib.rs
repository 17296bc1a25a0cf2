//! Verification of TEE evidence.
//!
//! Checks SEV-SNP reports against the AMD certificate chain (ARK → ASK/ASVK → VCEK/VLEK), TDX
//! quotes against Intel's PCK chain and DCAP collateral, and reports exactly which check failed.
//!
//! **What it trusts:** only the trust anchors it is given (the pinned AMD roots, the Intel SGX
//! Root CA, or an emulated root a policy names explicitly) and the caller's notion of the current
//! time. Evidence, certificates and collateral are untrusted input.

#![forbid(unsafe_code)]

pub mod appraisal;
pub mod ear;
pub mod se;
pub mod snp;
pub mod tdx;
