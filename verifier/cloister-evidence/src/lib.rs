//! Attestation evidence formats shared by the verifier, the attesters and the TEE emulator.
//!
//! Parses and serialises, from and to the exact hardware byte layouts: AMD SEV-SNP attestation
//! reports ([`snp`]) and Intel TDX/SGX DCAP quotes ([`tdx`]). Parsing is pure and does no
//! cryptography: a parsed value says what the bytes claim, not that they are genuine (that is the
//! verifier's job).
//!
//! **What it trusts:** nothing. All input is untrusted bytes: every length and offset is checked,
//! malformed input is rejected with a typed error, and parsing never panics.

#![forbid(unsafe_code)]

pub mod se;
pub mod snp;
pub mod tdx;
