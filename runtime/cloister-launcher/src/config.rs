//! What to launch: [`VmConfig`] and its parts (TEE kind, accelerator, host↔guest channel,
//! initdata). Plain data; [`VmConfig::validate`] checks the combinations the argv builder and the
//! measurement rely on.

use std::path::{Path, PathBuf};

use cloister_kbs_protocol::binding::fit;
use cloister_kbs_protocol::initdata::InitData;

use crate::error::ConfigError;

/// The guest port name of the agent channel on virtio-serial (runtime.md §5.3).
pub const AGENT_PORT_NAME: &str = "agent.0";
/// The guest port name on which an emulated-TEE guest reaches the emulated platform endpoint.
pub const EMULATED_TEE_PORT_NAME: &str = "cloister.tee.0";
/// The vsock port the guest agent listens on (kata-agent's `vsock://-1:1024`, runtime.md §2).
pub const AGENT_VSOCK_PORT: u32 = 1024;
/// Default SEV-SNP guest policy (Kata's `snp_guest_policy = 196608`, runtime.md §4).
pub const DEFAULT_SNP_POLICY: u64 = 0x30000;
/// Default SEV_FEATURES the host kernel sets for an SNP guest (sev-snp-measure's default; must
/// match the host kernel, measurement.md §2.3).
pub const DEFAULT_SNP_GUEST_FEATURES: u64 = 0x1;
/// The launch CPU model Kata forces for SNP (runtime.md §4).
pub const DEFAULT_SNP_VCPU_TYPE: &str = "EPYC-v4";

/// How QEMU executes guest code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accel {
    /// Hardware virtualisation (`accel=kvm`, `-cpu host`). Required by every confidential kind.
    Kvm,
    /// Software emulation (`accel=tcg`, `-cpu max`): slow, but it boots stock kernels anywhere.
    Tcg,
    /// Decide at launch with [`Accel::probe`]: KVM when it works, TCG otherwise. The argv builder
    /// refuses an unresolved `Auto` (it does no I/O); [`crate::QemuLauncher`] resolves it.
    Auto,
}

impl Accel {
    /// Resolves `Auto` by probing this host ([`kvm_usable`]); `Kvm`/`Tcg` are returned unchanged.
    pub fn probe(self) -> Accel {
        match self {
            Accel::Auto if kvm_usable() => Accel::Kvm,
            Accel::Auto => Accel::Tcg,
            other => other,
        }
    }
}

/// Whether KVM can run stock guest kernels here: `/dev/kvm` opens read-write **and** the CPU has
/// hardware virtualisation (`vmx` or `svm` in `/proc/cpuinfo`). The second condition rules out PVM
/// (a paravirtualised KVM without hardware support, on which stock Debian kernels hang:
/// runtime.md §5.1, §5.4).
pub fn kvm_usable() -> bool {
    let dev = std::fs::OpenOptions::new().read(true).write(true).open("/dev/kvm").is_ok();
    if !dev {
        return false;
    }
    let Ok(cpuinfo) = std::fs::read_to_string("/proc/cpuinfo") else { return false };
    cpuinfo.lines().filter(|l| l.starts_with("flags")).any(|l| l.split_whitespace().any(|f| f == "vmx" || f == "svm"))
}

/// Where the TDX quote generation service (QGS) listens on the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QgsSocket {
    /// vsock address (the usual QGS: CID 2, port 4050, runtime.md §4).
    Vsock {
        /// Context id (2 = host).
        cid: u32,
        /// Port.
        port: u32,
    },
    /// A unix socket path.
    Unix(PathBuf),
}

impl Default for QgsSocket {
    fn default() -> Self {
        QgsSocket::Vsock { cid: 2, port: 4050 }
    }
}

/// An SNP ID block and its authentication structure, as QEMU takes them (base64 strings, e.g.
/// from `cloister_measure::id_block::SignedIdBlock::id_block_base64`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnpIdBlock {
    /// `id-block=`: base64 of the 0x60-byte ID block.
    pub id_block: String,
    /// `id-auth=`: base64 of the 0x1000-byte ID authentication structure.
    pub id_auth: String,
    /// `author-key-enabled=on`: the ID auth carries an author key the report should show.
    pub author_key_enabled: bool,
}

/// AMD SEV-SNP launch parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnpConfig {
    /// Guest policy (`policy=`).
    pub policy: u64,
    /// C-bit position (CPUID 0x8000001F EBX[5:0]; 51 on Milan/Genoa).
    pub cbitpos: u32,
    /// Physical address bits lost to encryption (CPUID 0x8000001F EBX[11:6]; 1).
    pub reduced_phys_bits: u32,
    /// The QEMU CPU model (`-cpu`); its CPUID signature enters the VMSAs and the measurement.
    pub vcpu_type: String,
    /// SEV_FEATURES the host kernel sets in the VMSAs (measurement input only; QEMU/KVM decide it).
    pub guest_features: u64,
    /// `kernel-hashes=on`: measured direct boot (kernel, initrd, cmdline hashed into the firmware).
    /// Without it, a direct-boot kernel is **not** measured.
    pub kernel_hashes: bool,
    /// HOST_DATA (`host-data=`). When [`VmConfig::initdata`] is set too, both must agree.
    pub host_data: Option<[u8; 32]>,
    /// Optional ID block / ID auth.
    pub id_block: Option<SnpIdBlock>,
}

impl Default for SnpConfig {
    fn default() -> Self {
        SnpConfig {
            policy: DEFAULT_SNP_POLICY,
            cbitpos: 51,
            reduced_phys_bits: 1,
            vcpu_type: DEFAULT_SNP_VCPU_TYPE.to_owned(),
            guest_features: DEFAULT_SNP_GUEST_FEATURES,
            kernel_hashes: true,
            host_data: None,
            id_block: None,
        }
    }
}

/// Intel TDX launch parameters.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TdxConfig {
    /// MRCONFIGID. When [`VmConfig::initdata`] is set too, both must agree.
    pub mrconfigid: Option<[u8; 48]>,
    /// Where the quote generation service listens (`quote-generation-socket`); `None` omits it.
    pub quote_generation_socket: Option<QgsSocket>,
    /// `debug: true` (TDATTRIBUTES.DEBUG): only for debugging, never for production secrets.
    pub debug: bool,
}

/// IBM Secure Execution: the kernel is an SE image built by `genprotimg`/`pvimg`, which already
/// contains (encrypted) the kernel, initrd and command line.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SeConfig {}

/// An emulated TEE (see `cloister-emulate`): a plain VM whose guest asks the emulated platform
/// endpoint for evidence over a virtio-serial port named [`EMULATED_TEE_PORT_NAME`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmulatedConfig {
    /// The unix socket `cloister emulate serve` listens on; QEMU connects to it at start.
    pub endpoint: PathBuf,
    /// The firmware the measurement is computed against, as if the VM were launched on real
    /// hardware (the emulated VM itself boots its kernel directly, without firmware).
    pub reference_firmware: Option<PathBuf>,
    /// SNP measurement inputs (policy, vCPU type, guest features, HOST_DATA); ignored for TDX.
    pub snp: SnpConfig,
}

/// The TEE a VM runs in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TeeKind {
    /// No TEE: the degenerate policy (KVM when it works, TCG otherwise).
    None,
    /// AMD SEV-SNP (QEMU ≥ 9.1, `sev-snp-guest`).
    SevSnp(SnpConfig),
    /// Intel TDX (QEMU ≥ 10.1, `tdx-guest`).
    Tdx(TdxConfig),
    /// IBM Secure Execution (`qemu-system-s390x`, `s390-pv-guest`).
    Se(SeConfig),
    /// A plain VM with the emulated SEV-SNP platform endpoint.
    EmulatedSnp(EmulatedConfig),
    /// A plain VM with the emulated TDX platform endpoint.
    EmulatedTdx(EmulatedConfig),
}

impl TeeKind {
    /// Short name for logs and errors.
    pub fn name(&self) -> &'static str {
        match self {
            TeeKind::None => "none",
            TeeKind::SevSnp(_) => "sev-snp",
            TeeKind::Tdx(_) => "tdx",
            TeeKind::Se(_) => "se",
            TeeKind::EmulatedSnp(_) => "emulated-snp",
            TeeKind::EmulatedTdx(_) => "emulated-tdx",
        }
    }

    /// Whether the hardware encrypts and measures the guest (SNP, TDX, SE).
    pub fn is_confidential(&self) -> bool {
        matches!(self, TeeKind::SevSnp(_) | TeeKind::Tdx(_) | TeeKind::Se(_))
    }

    /// The QOM object type this kind needs QEMU to provide, if any.
    pub fn required_qemu_object(&self) -> Option<&'static str> {
        match self {
            TeeKind::SevSnp(_) => Some("sev-snp-guest"),
            TeeKind::Tdx(_) => Some("tdx-guest"),
            TeeKind::Se(_) => Some("s390-pv-guest"),
            _ => None,
        }
    }

    /// The QEMU binary that runs this kind by default.
    pub fn default_qemu_binary(&self) -> &'static str {
        match self {
            TeeKind::Se(_) => "qemu-system-s390x",
            _ => "qemu-system-x86_64",
        }
    }
}

/// The host↔guest agent channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Channel {
    /// No agent channel.
    None,
    /// A virtio-serial port named [`AGENT_PORT_NAME`] whose host end is a listening unix socket
    /// (`server=on,wait=off`): the fastest channel on machines without vhost-vsock (runtime.md §5.3).
    VirtioSerial {
        /// The host-side unix socket QEMU listens on.
        socket: PathBuf,
    },
    /// Kernel vhost-vsock (`vhost-vsock-pci,guest-cid=N`); the agent is at `vsock://N:1024`.
    Vsock {
        /// The guest's context id (≥ 3).
        guest_cid: u32,
    },
}

impl Channel {
    /// vsock when this host has `/dev/vhost-vsock`, a virtio-serial port at `socket` otherwise.
    pub fn probe(guest_cid: u32, socket: PathBuf) -> Channel {
        if Path::new("/dev/vhost-vsock").exists() {
            Channel::Vsock { guest_cid }
        } else {
            Channel::VirtioSerial { socket }
        }
    }
}

/// Init data for the guest: its digest goes into SNP HOST_DATA / TDX MRCONFIGID.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InitDataSource {
    /// The initdata TOML text (parsed and digested with its own `algorithm`).
    Toml(String),
    /// A precomputed digest (`H_algorithm(TOML)`, 32, 48 or 64 bytes).
    Digest(Vec<u8>),
}

impl InitDataSource {
    /// The digest (`H_algorithm(TOML text)`).
    pub fn digest(&self) -> Result<Vec<u8>, ConfigError> {
        match self {
            InitDataSource::Toml(t) => Ok(InitData::parse(t)?.digest),
            InitDataSource::Digest(d) if matches!(d.len(), 32 | 48 | 64) => Ok(d.clone()),
            InitDataSource::Digest(d) => Err(ConfigError::InitDataDigestLength(d.len())),
        }
    }
}

/// Everything needed to launch one VM. Paths are used as given (the launcher does not canonicalise
/// them); the QMP socket and logs live in `run_dir`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmConfig {
    /// VM name (QEMU `-name`, logs).
    pub name: String,
    /// Number of vCPUs (≥ 1).
    pub vcpus: u32,
    /// Guest memory in MiB (≥ 16).
    pub memory_mib: u64,
    /// Kernel: ELF `vmlinux` (PVH direct boot, fastest under TCG) or bzImage; an SE image for SE.
    pub kernel: PathBuf,
    /// Initrd (not for SE).
    pub initrd: Option<PathBuf>,
    /// Kernel command line (not for SE). Measured as given: the launcher never edits it.
    pub cmdline: String,
    /// Firmware (`-bios`): OVMF for SNP (with an SNP_KERNEL_HASHES section for measured direct
    /// boot), TDVF for TDX; optional for plain VMs.
    pub firmware: Option<PathBuf>,
    /// The TEE.
    pub tee: TeeKind,
    /// Accelerator.
    pub accel: Accel,
    /// Init data (its digest feeds HOST_DATA / MRCONFIGID).
    pub initdata: Option<InitDataSource>,
    /// The agent channel.
    pub channel: Channel,
    /// Directory for the QMP socket, the console log and QEMU's own log.
    pub run_dir: PathBuf,
    /// Guest networking.
    pub network: Network,
    /// Hand the initdata TOML (when [`VmConfig::initdata`] is [`InitDataSource::Toml`]) to the
    /// guest as the fw_cfg file [`INITDATA_FW_CFG_NAME`], written to `<run_dir>/initdata.toml`.
    /// The channel is untrusted: the guest checks the digest against its evidence (HOST_DATA /
    /// MRCONFIGID), and the key broker checks it again.
    pub deliver_initdata: bool,
}

/// The fw_cfg name under which the guest finds its initdata
/// (`/sys/firmware/qemu_fw_cfg/by_name/opt/io.cloister/initdata/raw`).
pub const INITDATA_FW_CFG_NAME: &str = "opt/io.cloister/initdata";

/// Guest networking.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Network {
    /// No network device.
    #[default]
    None,
    /// QEMU user-mode networking (slirp) on a `virtio-net-pci` device: the guest is 10.0.2.15/24
    /// behind NAT, the host's loopback is 10.0.2.2, nothing reaches the guest from outside.
    User,
}

impl VmConfig {
    /// A plain VM with defaults: 1 vCPU, 512 MiB, `Accel::Auto`, no channel, no initdata.
    pub fn new(name: impl Into<String>, kernel: impl Into<PathBuf>, run_dir: impl Into<PathBuf>) -> Self {
        VmConfig {
            name: name.into(),
            vcpus: 1,
            memory_mib: 512,
            kernel: kernel.into(),
            initrd: None,
            cmdline: String::new(),
            firmware: None,
            tee: TeeKind::None,
            accel: Accel::Auto,
            initdata: None,
            channel: Channel::None,
            run_dir: run_dir.into(),
            network: Network::None,
            deliver_initdata: false,
        }
    }

    /// Where [`VmConfig::deliver_initdata`] writes the initdata for fw_cfg.
    pub fn initdata_file(&self) -> PathBuf {
        self.run_dir.join("initdata.toml")
    }

    /// The QMP control socket (`<run_dir>/qmp.sock`).
    pub fn qmp_socket(&self) -> PathBuf {
        self.run_dir.join("qmp.sock")
    }

    /// The guest serial console log (`<run_dir>/console.log`).
    pub fn console_log(&self) -> PathBuf {
        self.run_dir.join("console.log")
    }

    /// QEMU's own stdout/stderr (`<run_dir>/qemu.log`).
    pub fn qemu_log(&self) -> PathBuf {
        self.run_dir.join("qemu.log")
    }

    /// The initdata digest, if initdata is configured.
    pub fn initdata_digest(&self) -> Result<Option<Vec<u8>>, ConfigError> {
        self.initdata.as_ref().map(InitDataSource::digest).transpose()
    }

    /// HOST_DATA for an SNP (or emulated-SNP) launch: the explicit value, or the initdata digest
    /// truncated to 32 bytes; both given and different is an error.
    pub fn effective_host_data(&self, snp: &SnpConfig) -> Result<Option<[u8; 32]>, ConfigError> {
        let from_initdata = self.initdata_digest()?.map(|d| fit::<32>(&d));
        match (snp.host_data, from_initdata) {
            (Some(a), Some(b)) if a != b => Err(ConfigError::ConflictingBinding { field: "host_data" }),
            (a, b) => Ok(a.or(b)),
        }
    }

    /// MRCONFIGID for a TDX launch: the explicit value, or the initdata digest zero-padded (or
    /// truncated) to 48 bytes; both given and different is an error.
    pub fn effective_mrconfigid(&self, tdx: &TdxConfig) -> Result<Option<[u8; 48]>, ConfigError> {
        let from_initdata = self.initdata_digest()?.map(|d| fit::<48>(&d));
        match (tdx.mrconfigid, from_initdata) {
            (Some(a), Some(b)) if a != b => Err(ConfigError::ConflictingBinding { field: "mrconfigid" }),
            (a, b) => Ok(a.or(b)),
        }
    }

    /// The accelerator the argv will use: confidential kinds always need KVM (`Tcg` is refused);
    /// `Auto` must have been resolved ([`Accel::probe`]) for the other kinds.
    pub fn effective_accel(&self) -> Result<Accel, ConfigError> {
        match (self.tee.is_confidential(), self.accel) {
            (true, Accel::Tcg) => Err(ConfigError::ConfidentialNeedsKvm { tee: self.tee.name() }),
            (true, _) => Ok(Accel::Kvm),
            (false, Accel::Auto) => Err(ConfigError::AccelNotResolved),
            (false, a) => Ok(a),
        }
    }

    /// Checks the combinations the argv builder and the measurement rely on (no I/O).
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.vcpus == 0 || self.vcpus > 512 {
            return Err(ConfigError::Vcpus(self.vcpus));
        }
        if self.memory_mib < 16 || self.memory_mib > (1 << 24) {
            return Err(ConfigError::Memory(self.memory_mib));
        }
        if self.name.is_empty() || !self.name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)) {
            return Err(ConfigError::Name(self.name.clone()));
        }
        if self.cmdline.contains('\0') {
            return Err(ConfigError::CmdlineNul);
        }
        if let Channel::Vsock { guest_cid } = self.channel
            && guest_cid < 3
        {
            return Err(ConfigError::GuestCid(guest_cid));
        }
        self.effective_accel()?;
        match &self.tee {
            TeeKind::None => {}
            TeeKind::SevSnp(snp) => {
                if self.firmware.is_none() {
                    return Err(ConfigError::FirmwareRequired { tee: self.tee.name() });
                }
                cloister_measure::snp::vcpu_type_sig(&snp.vcpu_type)
                    .map_err(|_| ConfigError::UnknownVcpuType(snp.vcpu_type.clone()))?;
                self.effective_host_data(snp)?;
            }
            TeeKind::Tdx(tdx) => {
                if self.firmware.is_none() {
                    return Err(ConfigError::FirmwareRequired { tee: self.tee.name() });
                }
                self.effective_mrconfigid(tdx)?;
            }
            TeeKind::Se(_) => {
                if self.initrd.is_some() || !self.cmdline.is_empty() {
                    return Err(ConfigError::SeImageOnly);
                }
                if self.firmware.is_some() {
                    return Err(ConfigError::FirmwareNotAllowed { tee: self.tee.name() });
                }
            }
            TeeKind::EmulatedSnp(e) => {
                cloister_measure::snp::vcpu_type_sig(&e.snp.vcpu_type)
                    .map_err(|_| ConfigError::UnknownVcpuType(e.snp.vcpu_type.clone()))?;
                self.effective_host_data(&e.snp)?;
            }
            TeeKind::EmulatedTdx(_) => {
                self.initdata_digest()?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn auto_never_picks_kvm_without_hardware_virtualisation() {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let hw = cpuinfo.lines().filter(|l| l.starts_with("flags")).any(|l| l.contains(" vmx") || l.contains(" svm"));
        if !hw {
            // PVM hosts (runtime.md §5.4): /dev/kvm exists but stock kernels hang under it.
            assert_eq!(Accel::Auto.probe(), Accel::Tcg);
        }
        assert_eq!(Accel::Tcg.probe(), Accel::Tcg);
        assert_eq!(Accel::Kvm.probe(), Accel::Kvm);
    }

    #[test]
    fn initdata_digest_feeds_host_data_and_mrconfigid() {
        let toml = "version = \"0.1.0\"\nalgorithm = \"sha256\"\n[data]\n";
        let mut c = VmConfig::new("x", "/k", "/r");
        c.initdata = Some(InitDataSource::Toml(toml.into()));
        let d = c.initdata_digest().unwrap().unwrap();
        assert_eq!(d.len(), 32);
        let hd = c.effective_host_data(&SnpConfig::default()).unwrap().unwrap();
        assert_eq!(&hd[..], &d[..]);
        let m = c.effective_mrconfigid(&TdxConfig::default()).unwrap().unwrap();
        assert_eq!(&m[..32], &d[..]);
        assert_eq!(&m[32..], &[0u8; 16]);
        c.initdata = Some(InitDataSource::Digest(vec![0; 20]));
        assert!(matches!(c.initdata_digest(), Err(ConfigError::InitDataDigestLength(20))));
        c.initdata = Some(InitDataSource::Toml("version = 1".into()));
        assert!(matches!(c.initdata_digest(), Err(ConfigError::InitData(_))));
    }
}
