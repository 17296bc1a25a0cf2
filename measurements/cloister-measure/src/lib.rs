//! Offline launch measurements for confidential VMs.
//!
//! Computes, from the bytes a VM is launched with, the values the hardware will report:
//! the AMD SEV / SEV-ES / SEV-SNP launch digest (bit-exact with sev-snp-measure 0.0.13), the
//! Intel TDX MRTD and the replay of a TD event log into RTMR0..3, IBM SE header values, and
//! the SNP ID block that pins a launch digest.
//!
//! **What it trusts:** nothing it is given. Every input (firmware image, event log, SE image) is
//! treated as untrusted bytes: parsed with bounds checks, rejected with a typed [`Error`] when
//! malformed, never panicking. The crate is pure: bytes in, digests out; it does no I/O (callers
//! read files), which makes it usable by the verifier, the runtime and the CLI alike.

// `unsafe` is denied everywhere but in `simd`, the one module that calls a `#[target_feature]`
// function after checking the CPU; every other crate of the workspace forbids it outright.
#![deny(unsafe_code)]

pub mod digest;
pub mod error;
pub mod guid;
pub mod hashes;
pub mod id_block;
pub mod ovmf;
pub mod rtmr;
pub mod se;
pub mod sev;
pub mod simd;
pub mod snp;
pub mod tdx;

pub use digest::{Sha256Digest, Sha384Digest, Sha512Digest};
pub use error::Error;
pub use guid::Guid;
pub use hashes::KernelHashes;
pub use ovmf::FirmwareImage;
