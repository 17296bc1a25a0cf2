//! Typed errors: configuration, measurement, QMP and launch.

use std::path::PathBuf;
use std::process::ExitStatus;

/// A [`crate::VmConfig`] that cannot be launched as asked.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// vCPU count outside 1..=512.
    #[error("vcpus = {0}: must be between 1 and 512")]
    Vcpus(u32),
    /// Memory outside 16 MiB..16 TiB.
    #[error("memory = {0} MiB: must be at least 16 MiB and at most 16 TiB")]
    Memory(u64),
    /// The VM name is empty or has characters other than `[A-Za-z0-9._-]`.
    #[error("VM name {0:?} must be non-empty and use only A-Z a-z 0-9 . _ -")]
    Name(String),
    /// The kernel command line contains a NUL byte.
    #[error("the kernel command line contains a NUL byte")]
    CmdlineNul,
    /// A vsock guest CID below 3 (0–2 are reserved).
    #[error("guest CID {0} is reserved (use 3 or more)")]
    GuestCid(u32),
    /// A confidential VM asked for TCG.
    #[error("a {tee} guest needs KVM: accel = tcg cannot run it")]
    ConfidentialNeedsKvm {
        /// The TEE kind.
        tee: &'static str,
    },
    /// `Accel::Auto` reached the argv builder.
    #[error("accelerator is still `auto`: resolve it with Accel::probe() before building the argv")]
    AccelNotResolved,
    /// The TEE kind needs a firmware image.
    #[error("a {tee} guest needs a firmware image (OVMF / TDVF)")]
    FirmwareRequired {
        /// The TEE kind.
        tee: &'static str,
    },
    /// The TEE kind does not take a separate firmware image.
    #[error("a {tee} guest takes no separate firmware image")]
    FirmwareNotAllowed {
        /// The TEE kind.
        tee: &'static str,
    },
    /// An SE guest was given an initrd or command line (they are inside the SE image).
    #[error("an IBM SE guest boots one SE image: its initrd and command line are inside it (give neither)")]
    SeImageOnly,
    /// Unknown QEMU CPU model for SNP.
    #[error("vCPU type {0:?} has no known CPUID signature (e.g. EPYC-v4, EPYC-Milan, EPYC-Genoa)")]
    UnknownVcpuType(String),
    /// Initdata text is invalid.
    #[error("initdata: {0}")]
    InitData(#[from] cloister_kbs_protocol::initdata::InitDataError),
    /// A precomputed initdata digest of an impossible length.
    #[error("initdata digest is {0} bytes (expected 32, 48 or 64)")]
    InitDataDigestLength(usize),
    /// An explicit HOST_DATA / MRCONFIGID differs from the initdata digest.
    #[error("explicit {field} differs from the initdata digest: give one or make them agree")]
    ConflictingBinding {
        /// `host_data` or `mrconfigid`.
        field: &'static str,
    },
}

/// The expected launch measurement could not be computed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MeasureError {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// An input file could not be read.
    #[error("reading {what} {path}: {source}")]
    Read {
        /// What the file is (firmware, kernel, initrd).
        what: &'static str,
        /// The path.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// No firmware to measure against.
    #[error("cannot compute the {tee} measurement: no firmware image is configured")]
    NoFirmware {
        /// The TEE kind.
        tee: &'static str,
    },
    /// The SEV/SNP measurement library rejected the inputs.
    #[error("SEV-SNP measurement: {0}")]
    Snp(#[from] cloister_measure::Error),
    /// The TDX measurement library rejected the firmware.
    #[error("TDX measurement: {0}")]
    Tdx(#[from] cloister_measure::tdx::TdxError),
    /// The SE image has no readable header.
    #[error("IBM SE image: {0}")]
    Se(#[from] cloister_measure::se::SeHeaderError),
}

/// A QMP exchange failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum QmpError {
    /// Socket I/O failed (includes timeouts).
    #[error("QMP I/O: {0}")]
    Io(#[from] std::io::Error),
    /// QEMU closed the connection.
    #[error("QMP connection closed by QEMU")]
    Closed,
    /// A line was not the JSON expected.
    #[error("QMP protocol: {0}")]
    Protocol(String),
    /// QEMU answered a command with an error.
    #[error("QMP command {command} failed: {class}: {desc}")]
    Command {
        /// The command.
        command: String,
        /// QMP error class.
        class: String,
        /// QMP error description.
        desc: String,
    },
}

/// Launching or managing a VM failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LaunchError {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The measurement could not be computed.
    #[error(transparent)]
    Measure(#[from] MeasureError),
    /// The QEMU binary is not installed (or not executable).
    #[error("QEMU binary {binary} not found: install it (Debian: {package})")]
    QemuNotFound {
        /// The binary looked for.
        binary: PathBuf,
        /// The Debian package providing it.
        package: &'static str,
    },
    /// QEMU lacks the QOM object a confidential VM needs: launching would not give a
    /// confidential VM, so nothing is started.
    #[error(
        "{binary} ({version}) has no `{object}` object, needed for a {tee} guest (QEMU ≥ {min_version}); \
         refusing to launch a non-confidential VM for a confidential configuration"
    )]
    MissingConfidentialObject {
        /// The binary probed.
        binary: PathBuf,
        /// Its version line.
        version: String,
        /// The missing object type.
        object: &'static str,
        /// The TEE kind.
        tee: &'static str,
        /// The first QEMU version with that object.
        min_version: &'static str,
    },
    /// Probing QEMU (`-object help`, `--version`) failed.
    #[error("probing {binary}: {detail}")]
    Probe {
        /// The binary.
        binary: PathBuf,
        /// What went wrong.
        detail: String,
    },
    /// The emulated platform endpoint socket does not exist.
    #[error("emulated TEE endpoint {0} does not exist: start `cloister emulate serve --socket` first")]
    EmulatedEndpointMissing(PathBuf),
    /// Preparing the run directory or log files failed.
    #[error("{what} {path}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The path.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// QEMU could not be spawned.
    #[error("spawning {binary}: {source}")]
    Spawn {
        /// The binary.
        binary: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// QEMU exited before its QMP socket was ready.
    #[error("QEMU exited during start ({status}); last lines of its log:\n{log_tail}")]
    QemuExited {
        /// Its exit status.
        status: ExitStatus,
        /// The last lines of QEMU's stdout/stderr.
        log_tail: String,
    },
    /// QMP did not answer within the timeout.
    #[error("QMP on {socket} not ready after {timeout_ms} ms{}", last_error.as_ref().map(|e| format!(" (last error: {e})")).unwrap_or_default())]
    QmpTimeout {
        /// The QMP socket.
        socket: PathBuf,
        /// The timeout.
        timeout_ms: u128,
        /// The last connection or handshake error.
        last_error: Option<String>,
    },
    /// A QMP exchange failed.
    #[error(transparent)]
    Qmp(#[from] QmpError),
    /// Waiting for or signalling the QEMU process failed.
    #[error("managing QEMU process {pid}: {detail}")]
    Process {
        /// The process id.
        pid: u32,
        /// What went wrong.
        detail: String,
    },
}
