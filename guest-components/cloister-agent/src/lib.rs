//! The Cloister guest agent: the process inside the confidential VM that the host-side shim
//! drives over Kata's agent API (`grpc.AgentService` over ttRPC) to create and run containers.
//!
//! * [`ttrpc`], [`server`], [`client`]: ttRPC framing over any byte stream, a concurrent server
//!   and the [`client::AgentClient`] the shim uses; [`proto`]: the messages (Kata's field
//!   numbers); [`transport`]: UNIX socket, vsock or virtio-serial.
//! * [`policy`]: the agent policy (Rego, Kata's rule names), evaluated on every request before
//!   the agent acts on it.
//! * [`agent`]: the service; [`container`] + [`init`]: containers in their own
//!   mount/UTS/IPC/PID namespaces with `pivot_root`; [`image`]: the rootfs from an image the
//!   guest pulls itself ([`cloister_image::Puller`]) — the host never passes layers.
//!
//! **What it trusts:** the policy it was started with (from initdata, measured into the TEE
//! evidence) and its own binary. Everything from the host — every byte on the channel — is
//! untrusted: frames and strings are bounded, ids are checked before they name a path, a
//! request is decoded and must pass the policy before anything happens, malformed requests
//! get an error status, never a crash. Images are trusted only as far as
//! [`cloister_image`] verifies them.
//!
//! All `unsafe` code is in the private `sys` module.
#![deny(unsafe_code)]

pub mod agent;
pub mod client;
pub mod container;
pub mod guest;
pub mod image;
pub mod init;
pub mod metrics;
pub mod policy;
pub mod proto;
pub mod server;
mod sys;
pub mod transport;
pub mod ttrpc;

pub use agent::Agent;
pub use client::{AgentClient, ClientError};
pub use container::{Runner, RunnerConfig};
pub use policy::AgentPolicy;
