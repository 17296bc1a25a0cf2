//! The measured-VM launcher of the Cloister runtime.
//!
//! It turns a [`VmConfig`] (vCPUs, memory, kernel/initrd/cmdline, firmware, TEE kind, initdata,
//! agent channel) into a QEMU command line ([`qemu_argv`], a pure function pinned by golden
//! tests), computes with `cloister-measure` the launch measurement the platform will report for
//! exactly those inputs ([`expected_measurement`]: SEV-SNP MEASUREMENT, TDX MRTD, IBM SE header
//! values; HOST_DATA / MRCONFIGID from the initdata digest), and runs QEMU ([`QemuLauncher`]):
//! in its own process group, output to a log, ready once QMP answers, killed with its group
//! when the [`RunningVm`] handle is dropped.
//!
//! Kinds: plain VMs (the degenerate policy: KVM when it works, TCG otherwise, see
//! [`Accel::probe`]), AMD SEV-SNP (`sev-snp-guest`, QEMU ≥ 9.1), Intel TDX (`tdx-guest`,
//! QEMU ≥ 10.1), IBM SE (`s390-pv-guest`), and the emulated SNP/TDX platforms (a plain VM plus
//! a virtio-serial port to the `cloister emulate serve` endpoint).
//!
//! **What it trusts:** the [`VmConfig`] it is given (it comes from the runtime's own
//! configuration) and the QEMU binary it runs. It does **not** trust QEMU's output: QMP lines are
//! length-bounded and parsed defensively, and a QEMU that lacks the confidential object a
//! configuration needs is refused before anything starts ([`LaunchError::MissingConfidentialObject`]) —
//! a confidential configuration never silently becomes a plain VM. Firmware, kernel, initrd and SE
//! images are read as untrusted bytes by the measurements crate. The host itself is outside the
//! guest's trust boundary: the measurement computed here is for logs and reference values; the
//! guest's own attestation is what the key broker checks.

#![forbid(unsafe_code)]

pub mod config;
pub mod error;
pub mod measure;
pub mod qemu;
pub mod qmp;

pub use config::{
    AGENT_PORT_NAME, Accel, Channel, EMULATED_TEE_PORT_NAME, EmulatedConfig, INITDATA_FW_CFG_NAME, InitDataSource,
    Network, QgsSocket, SeConfig, SnpConfig, SnpIdBlock, TdxConfig, TeeKind, VmConfig,
};
pub use error::{ConfigError, LaunchError, MeasureError, QmpError};
pub use measure::{LaunchMeasurement, SeMeasurement, SnpMeasurement, TdxMeasurement, expected_measurement};
pub use qemu::argv::qemu_argv;
pub use qemu::caps::QemuCapabilities;
pub use qemu::process::{QemuLauncher, RunningVm};
pub use qmp::Qmp;

/// A hypervisor that can start a [`VmConfig`]. QEMU ([`QemuLauncher`]) is the first.
pub trait Launcher {
    /// Short name (`qemu`).
    fn name(&self) -> &'static str;

    /// Starts the VM and returns once its control channel is ready. Fails closed: a confidential
    /// configuration the hypervisor cannot honour is an error, never a plain VM.
    fn launch(&self, cfg: &VmConfig) -> Result<RunningVm, LaunchError>;

    /// The launch measurement the platform will report for `cfg`.
    fn expected_measurement(&self, cfg: &VmConfig) -> Result<LaunchMeasurement, MeasureError> {
        expected_measurement(cfg)
    }
}
