//! The runtime configuration of one RuntimeClass handler (`cloister-qemu`,
//! `cloister-qemu-snp`, `cloister-qemu-tdx`, `cloister-qemu-se`, `cloister-qemu-emulated`): a TOML
//! file naming the guest image, the VM shape and the TEE. Unknown keys are refused.
//!
//! Found, in order: the path containerd passes as the runtime option `ConfigPath`
//! (`ctr run --runtime-config-path`, or `[plugins.cri.containerd.runtimes.<h>.options]
//! ConfigPath` in containerd's config), the environment variable `CLOISTER_SHIM_CONFIG`,
//! then `/etc/cloister/runtime/<handler>.toml`, the handler being the binary name between
//! `containerd-shim-` and `-v2` (`containerd-shim-cloister-qemu-snp-v2` → `cloister-qemu-snp`).
//!
//! ```toml
//! [guest]
//! kernel = "/usr/share/cloister/guest/vmlinux"
//! initrd = "/usr/share/cloister/guest/initrd.img"
//! cmdline_file = "/usr/share/cloister/guest/cmdline.txt"   # or: cmdline = "…"
//!
//! [vm]
//! tee = "none"          # none | snp | tdx | se | emulated-snp
//! vcpus = 1
//! memory_mib = 512
//! accel = "auto"        # auto | kvm | tcg
//! network = "user"      # user | none
//! boot_timeout_secs = 60
//!
//! [emulated]            # tee = "emulated-snp"
//! platform_dir = "/var/lib/cloister/emulated"   # from `cloister emulate init`
//! reference_firmware = "/usr/share/ovmf/OVMF.amdsev.fd"
//! ```

#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

/// Environment variable naming the configuration file.
pub const CONFIG_ENV: &str = "CLOISTER_SHIM_CONFIG";
/// Directory of per-handler configuration files.
pub const CONFIG_DIR: &str = "/etc/cloister/runtime";
/// Default root of per-VM run directories (sockets, logs).
pub const RUN_ROOT: &str = "/run/cloister/vm";

/// Why the configuration is unusable.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("runtime configuration {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The file is not a valid configuration.
    #[error("runtime configuration {path}: {why}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// Why.
        why: String,
    },
}

/// The TEE of the handler.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum TeeName {
    /// No TEE: the degenerate policy.
    #[default]
    None,
    /// AMD SEV-SNP.
    Snp,
    /// Intel TDX.
    Tdx,
    /// IBM Secure Execution.
    Se,
    /// The emulated SEV-SNP platform (development; proves nothing about hardware).
    EmulatedSnp,
    /// The emulated TDX platform (development; proves nothing about hardware).
    EmulatedTdx,
}

/// Accelerator choice.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum AccelName {
    /// KVM when it works, TCG otherwise.
    #[default]
    Auto,
    /// KVM.
    Kvm,
    /// TCG.
    Tcg,
}

/// Guest networking.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum NetworkName {
    /// QEMU user networking (the guest pulls its images over it).
    #[default]
    User,
    /// None.
    None,
}

/// `[guest]`: the guest image.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GuestSection {
    /// Kernel (`vmlinux` for PVH, or bzImage; an SE image for SE).
    pub kernel: PathBuf,
    /// Initrd.
    pub initrd: Option<PathBuf>,
    /// Kernel command line.
    pub cmdline: Option<String>,
    /// A file holding the kernel command line (as `runtime/guest/build.sh` writes it).
    pub cmdline_file: Option<PathBuf>,
    /// Firmware (`-bios`): OVMF for SNP, TDVF for TDX.
    pub firmware: Option<PathBuf>,
}

fn default_vcpus() -> u32 {
    1
}
fn default_memory() -> u64 {
    512
}
fn default_boot_timeout() -> u64 {
    60
}
fn default_request_timeout() -> u64 {
    300
}

/// `[vm]`: the VM.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VmSection {
    /// The TEE.
    #[serde(default)]
    pub tee: TeeName,
    /// vCPUs.
    #[serde(default = "default_vcpus")]
    pub vcpus: u32,
    /// Memory (MiB).
    #[serde(default = "default_memory")]
    pub memory_mib: u64,
    /// Accelerator.
    #[serde(default)]
    pub accel: AccelName,
    /// Networking.
    #[serde(default)]
    pub network: NetworkName,
    /// The QEMU binary (default: from `PATH`).
    pub qemu: Option<PathBuf>,
    /// How long the guest agent may take to answer after QEMU starts.
    #[serde(default = "default_boot_timeout")]
    pub boot_timeout_secs: u64,
    /// Longest agent request (image pulls included).
    #[serde(default = "default_request_timeout")]
    pub request_timeout_secs: u64,
    /// Root of per-VM run directories.
    pub run_root: Option<PathBuf>,
}

impl Default for VmSection {
    fn default() -> Self {
        VmSection {
            tee: TeeName::None,
            vcpus: default_vcpus(),
            memory_mib: default_memory(),
            accel: AccelName::Auto,
            network: NetworkName::User,
            qemu: None,
            boot_timeout_secs: default_boot_timeout(),
            request_timeout_secs: default_request_timeout(),
            run_root: None,
        }
    }
}

/// `[emulated]`: the emulated platform the shim serves to the guest.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmulatedSection {
    /// Platform directory made by `cloister emulate init`.
    pub platform_dir: PathBuf,
    /// Firmware the measurement is computed against: an AmdSev OVMF with kernel hashes
    /// (SNP MEASUREMENT), or a TDVF (TDX MRTD).
    pub reference_firmware: PathBuf,
    /// SNP guest policy reported.
    pub policy: Option<u64>,
    /// SNP only: HOST_DATA to report instead of the initdata digest (64 hex digits). A real host chooses
    /// HOST_DATA at launch; this models a host that launches with one initdata and hands the
    /// guest another, for tests of the guest's binding check. Never set it otherwise.
    pub insecure_host_data: Option<String>,
}

impl EmulatedSection {
    /// The HOST_DATA override, parsed.
    pub fn host_data_override(&self) -> Result<Option<[u8; 32]>, String> {
        self.insecure_host_data
            .as_deref()
            .map(|h| {
                let mut out = [0u8; 32];
                hex::decode_to_slice(h, &mut out)
                    .map_err(|e| format!("[emulated] insecure_host_data: {e} (want 64 hex digits)"))?;
                Ok(out)
            })
            .transpose()
    }
}

/// `[initdata]`.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct InitDataSection {
    /// Initdata (TOML) used when the pod has no `cc_init_data` annotation.
    pub default: Option<PathBuf>,
}

/// A handler's configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuntimeConfig {
    /// Guest image.
    pub guest: GuestSection,
    /// VM.
    #[serde(default)]
    pub vm: VmSection,
    /// Emulated platform (`tee = "emulated-snp"`).
    pub emulated: Option<EmulatedSection>,
    /// Initdata defaults.
    #[serde(default)]
    pub initdata: InitDataSection,
}

impl RuntimeConfig {
    /// Parses `text` (read from `path`, for messages and relative paths).
    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let invalid = |why: String| ConfigError::Invalid { path: path.to_owned(), why };
        let c: RuntimeConfig = toml::from_str(text).map_err(|e| invalid(e.message().to_owned()))?;
        if c.guest.cmdline.is_some() && c.guest.cmdline_file.is_some() {
            return Err(invalid("[guest] has both cmdline and cmdline_file".into()));
        }
        if matches!(c.vm.tee, TeeName::EmulatedSnp | TeeName::EmulatedTdx) && c.emulated.is_none() {
            return Err(invalid("an emulated tee needs an [emulated] section".into()));
        }
        if let Some(e) = &c.emulated
            && e.host_data_override().map_err(invalid)?.is_some()
        {
            tracing::warn!(path = %path.display(), "[emulated] insecure_host_data set: the emulated platform lies about HOST_DATA");
        }
        if c.vm.vcpus == 0 || c.vm.memory_mib < 64 {
            return Err(invalid("[vm] needs vcpus >= 1 and memory_mib >= 64".into()));
        }
        Ok(c)
    }

    /// Reads and parses `path`.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text =
            std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.to_owned(), source })?;
        Self::parse(&text, path)
    }

    /// The kernel command line.
    pub fn cmdline(&self) -> Result<String, ConfigError> {
        match (&self.guest.cmdline, &self.guest.cmdline_file) {
            (Some(c), _) => Ok(c.clone()),
            (None, Some(f)) => std::fs::read_to_string(f)
                .map(|s| s.trim_end_matches('\n').to_owned())
                .map_err(|source| ConfigError::Read { path: f.clone(), source }),
            (None, None) => Ok(String::new()),
        }
    }

    /// How long to wait for the agent.
    pub fn boot_timeout(&self) -> Duration {
        Duration::from_secs(self.vm.boot_timeout_secs)
    }

    /// Root of run directories.
    pub fn run_root(&self) -> PathBuf {
        self.vm.run_root.clone().unwrap_or_else(|| PathBuf::from(RUN_ROOT))
    }
}

/// The handler name from the shim binary's file name (`containerd-shim-<handler>-v2`).
pub fn handler_from_binary(argv0: &str) -> Option<String> {
    let name = Path::new(argv0).file_name()?.to_str()?;
    let h = name.strip_prefix("containerd-shim-")?.strip_suffix("-v2")?;
    (!h.is_empty()).then(|| h.to_owned())
}

/// Where the configuration is, given containerd's `ConfigPath` option (if any).
pub fn locate(config_path_option: Option<&str>) -> PathBuf {
    if let Some(p) = config_path_option.filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    if let Some(p) = std::env::var_os(CONFIG_ENV).filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    let handler =
        std::env::args().next().and_then(|a| handler_from_binary(&a)).unwrap_or_else(|| "cloister".to_owned());
    Path::new(CONFIG_DIR).join(format!("{handler}.toml"))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn parses_minimal_and_full() {
        let p = Path::new("x.toml");
        let c = RuntimeConfig::parse("[guest]\nkernel = \"/k\"\n", p).unwrap();
        assert_eq!(c.vm.tee, TeeName::None);
        assert_eq!(c.vm.network, NetworkName::User);
        assert_eq!(c.cmdline().unwrap(), "");
        let c = RuntimeConfig::parse(
            "[guest]\nkernel = \"/k\"\ncmdline = \"console=ttyS0\"\n[vm]\ntee = \"emulated-snp\"\naccel = \"tcg\"\n\
             [emulated]\nplatform_dir = \"/p\"\nreference_firmware = \"/f\"\n[initdata]\ndefault = \"/i.toml\"\n",
            p,
        )
        .unwrap();
        assert_eq!(c.vm.tee, TeeName::EmulatedSnp);
        assert_eq!(c.cmdline().unwrap(), "console=ttyS0");
        assert_eq!(c.initdata.default.as_deref(), Some(Path::new("/i.toml")));
    }

    #[test]
    fn refuses_unknown_and_inconsistent() {
        let p = Path::new("x.toml");
        for bad in [
            "[guest]\nkernel = \"/k\"\nkernal = 1\n",
            "[guest]\nkernel = \"/k\"\n[vm]\ntee = \"sgx\"\n",
            "[guest]\nkernel = \"/k\"\n[vm]\ntee = \"emulated-snp\"\n",
            "[guest]\nkernel = \"/k\"\ncmdline = \"a\"\ncmdline_file = \"/b\"\n",
            "[guest]\nkernel = \"/k\"\n[vm]\nvcpus = 0\n",
            "[vm]\n",
        ] {
            let e = RuntimeConfig::parse(bad, p).unwrap_err();
            assert!(e.to_string().starts_with("runtime configuration x.toml: "), "{e}");
        }
    }

    #[test]
    fn handler_names() {
        assert_eq!(handler_from_binary("/usr/bin/containerd-shim-cloister-v2").as_deref(), Some("cloister"));
        assert_eq!(handler_from_binary("containerd-shim-cloister-qemu-snp-v2").as_deref(), Some("cloister-qemu-snp"));
        assert_eq!(handler_from_binary("containerd-shim--v2"), None);
        assert_eq!(handler_from_binary("runc"), None);
    }
}
