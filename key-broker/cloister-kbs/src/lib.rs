//! `cloister-kbs`: a key broker that speaks the Confidential Containers KBS protocol 0.4.0
//! (kbs-types 0.18) so that unmodified CoCo guests and clients work against it, with the
//! bundled Cloister verifier (SEV-SNP, TDX, CoCo's `sample`, and the emulated TEE), Rego
//! policies (regorus), EAR tokens and an on-disk store that survives `kill -9`.
//!
//! **What it trusts:** the AMD and Intel roots built into the verifier and any root its
//! configuration names explicitly (labelled `emulated_*`); its own token key and the JWK sets it
//! is configured with; the admin public keys it is configured with (or generated on first
//! start). Everything arriving over HTTP — evidence, tokens, bodies, cookies, paths — is
//! untrusted and refused with a typed error ([`error::KbsError`]) when it does not check out.
//! Resources are never logged.
#![forbid(unsafe_code)]

pub mod admin;
pub mod broker;
pub mod config;
pub mod error;
pub mod evidence;
pub mod http;
pub mod metrics;
pub mod rvps;
pub mod server;
pub mod store;

pub use broker::{Broker, BrokerSettings, Credential, ResourcePath};
pub use config::Config;
pub use error::KbsError;
pub use store::{FsStore, MemoryStore, ResourceStore};
