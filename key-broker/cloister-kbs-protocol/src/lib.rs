//! The wire format of the Confidential Containers KBS protocol 0.4.0 (message shapes of
//! `kbs-types` 0.18), shared by the Cloister key broker and its guest-side client:
//!
//! * [`types`]: the JSON messages (`Request`, `Challenge`, `Attestation`, the JWE `Response`,
//!   `ErrorInformation`) with their exact field spellings;
//! * [`jcs`]: RFC 8785 JSON canonicalisation;
//! * [`binding`]: the runtime-data digest that binds nonce and TEE key to the evidence's
//!   report data, and the init-data digest that binds configuration to HOST_DATA / MRCONFIGID;
//! * [`jwe`]: the KBS JWE profile (flattened JSON; `ECDH-ES+A256KW` on P-256/P-521 or
//!   `RSA-OAEP-256`; content `A256GCM`), both directions;
//! * [`initdata`]: the initdata TOML document.
//!
//! **What it trusts:** nothing it parses. Every decoder here takes untrusted bytes and fails with
//! a typed error; secrets (content keys, plaintexts, private keys) are zeroized on drop.
#![forbid(unsafe_code)]

pub mod admin;
pub mod binding;
pub mod initdata;
pub mod jcs;
pub mod jwe;
pub mod types;

pub use binding::{HashAlgorithm, runtime_data_digest};
pub use jwe::{JweError, TeeKeyPair};
pub use types::*;
