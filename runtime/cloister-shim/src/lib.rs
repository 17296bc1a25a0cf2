//! `containerd-shim-cloister-v2`: the containerd shim v2 of the Cloister runtime. Each pod runs
//! in its own VM, launched by `cloister-launcher` (plain, SEV-SNP, TDX, IBM SE, or the emulated
//! SNP platform), and everything the host asks of it goes through the guest agent over the
//! virtio-serial channel ([`service`]).
//!
//! * [`config`]: the RuntimeClass handler's TOML configuration;
//! * [`spec`]: OCI bundle → agent `CreateContainerRequest` (nothing from the host filesystem);
//! * [`containerd`]: the container's image reference from containerd, when no CRI annotation
//!   names it;
//! * [`sandbox`]: the VM, its agent connection and the emulated platform endpoint;
//! * [`shim`]: the containerd-shim lifecycle (`start`, `delete`, serve).
//!
//! **What it trusts:** its configuration and the binaries it names (QEMU, the guest image). It is
//! host software: the guest does not trust it. Whatever it forwards — image reference, initdata,
//! process spec — is checked inside the guest (agent policy, initdata digest against the TEE
//! evidence) and by the key broker. The shim's own job is to fail clearly and leave nothing
//! behind: every VM it started is killed and its run directory removed on delete, on error and
//! by `containerd-shim-cloister-v2 delete` after a crash.

#![forbid(unsafe_code)]

pub mod config;
pub mod containerd;
pub mod sandbox;
pub mod service;
pub mod shim;
pub mod spec;

pub use config::RuntimeConfig;
pub use service::Service;
pub use shim::Shim;
