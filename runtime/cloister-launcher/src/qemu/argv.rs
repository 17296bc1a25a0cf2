//! The QEMU command line for a [`VmConfig`]: a pure function (no I/O), pinned per TEE kind by
//! the golden tests in `tests/golden/`.
//!
//! Where the options come from (`runtime.md` is `../shared/reference/runtime.md`):
//! * common: `-nodefaults -no-user-config -display none -no-reboot`, console on `-serial file:`
//!   (runtime.md §5.3 "Serial consoles"), QMP on a listening unix socket (`-chardev socket … -mon
//!   mode=control`, QEMU docs "QEMU Machine Protocol"), direct boot with `-kernel/-initrd/-append`;
//! * plain VMs: `-machine q35,accel=tcg -cpu max` under TCG (runtime.md §5.1, §5.4: microvm hangs
//!   under TCG, stay on q35), `accel=kvm -cpu host` under KVM;
//! * SEV-SNP: `sev-snp-guest` (cbitpos, reduced-phys-bits, policy, `kernel-hashes=on`, `host-data`,
//!   `id-block`/`id-auth`), `memory-backend-memfd` for shared memory, `kernel-irqchip=split`, the
//!   launch CPU model (runtime.md §4; QEMU docs `system/i386/amd-memory-encryption`);
//! * TDX: `tdx-guest` given as JSON because `quote-generation-socket` is a SocketAddress,
//!   `sept-ve-disable`, `mrconfigid`, `kernel-irqchip=split` (runtime.md §4; QEMU docs
//!   `system/i386/tdx`);
//! * IBM SE: `s390-ccw-virtio,confidential-guest-support=pv0` + `s390-pv-guest`, virtio devices
//!   with `iommu_platform=on` (runtime.md §4);
//! * channels: virtio-serial port `agent.0` on a `server=on,wait=off` socket, or `vhost-vsock-pci`
//!   (runtime.md §5.3);
//! * emulated TEEs: a plain VM plus a virtio-serial port [`EMULATED_TEE_PORT_NAME`] whose host end
//!   connects to the `cloister emulate serve` socket.
//!
//! Values embedded in `key=value` option strings have their commas doubled (QEMU's escape), so a
//! path cannot inject options.

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::{OsStrExt, OsStringExt};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;

use crate::config::{
    AGENT_PORT_NAME, Accel, Channel, EMULATED_TEE_PORT_NAME, INITDATA_FW_CFG_NAME, InitDataSource, Network, QgsSocket,
    SnpConfig, TdxConfig, TeeKind, VmConfig,
};
use crate::error::ConfigError;

/// QOM id of the SEV-SNP object.
pub const SNP_OBJECT_ID: &str = "sev0";
/// QOM id of the TDX object.
pub const TDX_OBJECT_ID: &str = "tdx0";
/// QOM id of the SE object.
pub const SE_OBJECT_ID: &str = "pv0";
/// QOM id of the SNP shared-memory backend.
pub const SNP_MEMORY_BACKEND_ID: &str = "ram1";

/// Doubles commas: QEMU's escape inside `key=value,…` option strings.
fn esc(v: &OsStr) -> OsString {
    let mut out = Vec::with_capacity(v.len());
    for &b in v.as_bytes() {
        out.push(b);
        if b == b',' {
            out.push(b',');
        }
    }
    OsString::from_vec(out)
}

/// `prefix` followed by an escaped value and an optional suffix, as one argument.
fn joined(prefix: &str, value: &OsStr, suffix: &str) -> OsString {
    let mut s = OsString::from(prefix);
    s.push(esc(value));
    s.push(suffix);
    s
}

struct Argv(Vec<OsString>);

impl Argv {
    fn opt(&mut self, name: &str, value: impl Into<OsString>) {
        self.0.push(name.into());
        self.0.push(value.into());
    }
    fn flag(&mut self, name: &str) {
        self.0.push(name.into());
    }
}

/// The arguments (without the program name) that launch `cfg` with QEMU. The program is
/// [`TeeKind::default_qemu_binary`] unless the launcher is configured otherwise.
///
/// Pure: reads no files. Fails when the configuration is invalid ([`VmConfig::validate`]) or its
/// accelerator is still [`Accel::Auto`].
pub fn qemu_argv(cfg: &VmConfig) -> Result<Vec<OsString>, ConfigError> {
    cfg.validate()?;
    let accel = cfg.effective_accel()?;
    let accel_name = if accel == Accel::Kvm { "kvm" } else { "tcg" };
    let mut a = Argv(Vec::with_capacity(48));
    // `encrypted` guests need virtio devices that use the DMA API (bounce buffers).
    let encrypted = cfg.tee.is_confidential();
    let s390 = matches!(cfg.tee, TeeKind::Se(_));

    a.opt("-name", cfg.name.as_str());
    a.flag("-no-user-config");
    a.flag("-nodefaults");
    a.opt("-display", "none");
    a.flag("-no-reboot");

    match &cfg.tee {
        TeeKind::SevSnp(snp) => {
            a.opt(
                "-machine",
                format!(
                    "q35,accel=kvm,confidential-guest-support={SNP_OBJECT_ID},memory-backend={SNP_MEMORY_BACKEND_ID},kernel-irqchip=split"
                ),
            );
            a.opt(
                "-object",
                format!(
                    "memory-backend-memfd,id={SNP_MEMORY_BACKEND_ID},size={}M,share=true,prealloc=false",
                    cfg.memory_mib
                ),
            );
            a.opt("-object", snp_object(cfg, snp)?);
            a.opt("-cpu", snp.vcpu_type.as_str());
        }
        TeeKind::Tdx(tdx) => {
            a.opt("-machine", format!("q35,accel=kvm,kernel-irqchip=split,confidential-guest-support={TDX_OBJECT_ID}"));
            a.opt("-object", tdx_object(cfg, tdx)?);
            a.opt("-cpu", "host");
        }
        TeeKind::Se(_) => {
            a.opt("-machine", format!("s390-ccw-virtio,accel=kvm,confidential-guest-support={SE_OBJECT_ID}"));
            a.opt("-object", format!("s390-pv-guest,id={SE_OBJECT_ID}"));
            a.opt("-cpu", "host");
        }
        TeeKind::None | TeeKind::EmulatedSnp(_) | TeeKind::EmulatedTdx(_) => {
            a.opt("-machine", format!("q35,accel={accel_name}"));
            a.opt("-cpu", if accel == Accel::Kvm { "host" } else { "max" });
        }
    }
    a.opt("-smp", cfg.vcpus.to_string());
    a.opt("-m", format!("{}M", cfg.memory_mib));
    if let Some(fw) = &cfg.firmware {
        a.opt("-bios", fw.as_os_str());
    }
    a.opt("-kernel", cfg.kernel.as_os_str());
    if let Some(initrd) = &cfg.initrd {
        a.opt("-initrd", initrd.as_os_str());
    }
    if !cfg.cmdline.is_empty() {
        a.opt("-append", cfg.cmdline.as_str());
    }
    a.opt("-serial", joined("file:", cfg.console_log().as_os_str(), ""));
    a.opt("-chardev", joined("socket,id=qmp,path=", cfg.qmp_socket().as_os_str(), ",server=on,wait=off"));
    a.opt("-mon", "chardev=qmp,mode=control");

    let iommu = if encrypted { ",iommu_platform=on" } else { "" };
    let (serial_bus, vsock_dev) =
        if s390 { ("virtio-serial-ccw", "vhost-vsock-ccw") } else { ("virtio-serial-pci", "vhost-vsock-pci") };
    let emulated_endpoint = match &cfg.tee {
        TeeKind::EmulatedSnp(e) | TeeKind::EmulatedTdx(e) => Some(&e.endpoint),
        _ => None,
    };
    if matches!(cfg.channel, Channel::VirtioSerial { .. }) || emulated_endpoint.is_some() {
        a.opt("-device", format!("{serial_bus},id=vser0{iommu}"));
    }
    match &cfg.channel {
        Channel::None => {}
        Channel::VirtioSerial { socket } => {
            a.opt("-chardev", joined("socket,id=agent,path=", socket.as_os_str(), ",server=on,wait=off"));
            a.opt("-device", format!("virtserialport,chardev=agent,name={AGENT_PORT_NAME}"));
        }
        Channel::Vsock { guest_cid } => {
            a.opt("-device", format!("{vsock_dev},id=vsock0,guest-cid={guest_cid}{iommu}"));
        }
    }
    if let Some(endpoint) = emulated_endpoint {
        a.opt("-chardev", joined("socket,id=tee,path=", endpoint.as_os_str(), ""));
        a.opt("-device", format!("virtserialport,chardev=tee,name={EMULATED_TEE_PORT_NAME}"));
    }
    match cfg.network {
        Network::None => {}
        Network::User => {
            let net = if s390 { "virtio-net-ccw" } else { "virtio-net-pci" };
            a.opt("-netdev", "user,id=net0");
            a.opt("-device", format!("{net},netdev=net0,romfile={iommu}"));
        }
    }
    if cfg.deliver_initdata && matches!(cfg.initdata, Some(InitDataSource::Toml(_))) {
        a.opt("-fw_cfg", joined(&format!("name={INITDATA_FW_CFG_NAME},file="), cfg.initdata_file().as_os_str(), ""));
    }
    Ok(a.0)
}

fn snp_object(cfg: &VmConfig, snp: &SnpConfig) -> Result<OsString, ConfigError> {
    let mut o = format!(
        "sev-snp-guest,id={SNP_OBJECT_ID},cbitpos={},reduced-phys-bits={},policy={:#x},kernel-hashes={}",
        snp.cbitpos,
        snp.reduced_phys_bits,
        snp.policy,
        if snp.kernel_hashes { "on" } else { "off" }
    );
    if let Some(hd) = cfg.effective_host_data(snp)? {
        o.push_str(",host-data=");
        o.push_str(&STANDARD.encode(hd));
    }
    let mut o = OsString::from(o);
    if let Some(id) = &snp.id_block {
        o.push(joined(",id-block=", OsStr::new(&id.id_block), ""));
        o.push(joined(",id-auth=", OsStr::new(&id.id_auth), ""));
        if id.author_key_enabled {
            o.push(",author-key-enabled=on");
        }
    }
    Ok(o)
}

fn json_str(s: &str) -> String {
    serde_json::Value::String(s.to_owned()).to_string()
}

fn tdx_object(cfg: &VmConfig, tdx: &TdxConfig) -> Result<OsString, ConfigError> {
    // Built by hand so the key order is fixed whatever serde_json features are unified in.
    let mut o = format!("{{\"qom-type\":\"tdx-guest\",\"id\":\"{TDX_OBJECT_ID}\",\"sept-ve-disable\":true");
    if let Some(m) = cfg.effective_mrconfigid(tdx)? {
        o.push_str(&format!(",\"mrconfigid\":\"{}\"", STANDARD.encode(m)));
    }
    match &tdx.quote_generation_socket {
        None => {}
        Some(QgsSocket::Vsock { cid, port }) => o.push_str(&format!(
            ",\"quote-generation-socket\":{{\"type\":\"vsock\",\"cid\":\"{cid}\",\"port\":\"{port}\"}}"
        )),
        Some(QgsSocket::Unix(p)) => o.push_str(&format!(
            ",\"quote-generation-socket\":{{\"type\":\"unix\",\"path\":{}}}",
            json_str(&p.to_string_lossy())
        )),
    }
    if tdx.debug {
        o.push_str(",\"debug\":true");
    }
    o.push('}');
    Ok(o.into())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::config::EmulatedConfig;

    fn plain() -> VmConfig {
        let mut c = VmConfig::new("t", "/k", "/run/x");
        c.accel = Accel::Tcg;
        c
    }

    #[test]
    fn commas_in_paths_are_escaped() {
        let mut c = plain();
        c.run_dir = "/run/a,b=c".into();
        let argv = qemu_argv(&c).unwrap();
        assert!(argv.contains(&OsString::from("file:/run/a,,b=c/console.log")));
        assert!(argv.contains(&OsString::from("socket,id=qmp,path=/run/a,,b=c/qmp.sock,server=on,wait=off")));
    }

    #[test]
    fn auto_accel_is_refused_by_the_pure_builder() {
        let mut c = plain();
        c.accel = Accel::Auto;
        assert!(matches!(qemu_argv(&c), Err(ConfigError::AccelNotResolved)));
    }

    #[test]
    fn confidential_kinds_refuse_tcg_and_need_firmware() {
        let mut c = plain();
        c.tee = TeeKind::SevSnp(SnpConfig::default());
        assert!(matches!(qemu_argv(&c), Err(ConfigError::ConfidentialNeedsKvm { .. })));
        c.accel = Accel::Auto;
        assert!(matches!(qemu_argv(&c), Err(ConfigError::FirmwareRequired { .. })));
        c.firmware = Some("/fw".into());
        let argv = qemu_argv(&c).unwrap();
        assert!(argv.iter().any(|a| a.to_string_lossy().starts_with("q35,accel=kvm,confidential-guest-support=sev0")));
    }

    #[test]
    fn se_refuses_initrd_and_cmdline() {
        let mut c = plain();
        c.tee = TeeKind::Se(Default::default());
        c.accel = Accel::Kvm;
        c.cmdline = "console=ttyS0".into();
        assert!(matches!(qemu_argv(&c), Err(ConfigError::SeImageOnly)));
    }

    #[test]
    fn conflicting_host_data_is_refused() {
        let mut c = plain();
        c.accel = Accel::Kvm;
        c.firmware = Some("/fw".into());
        c.initdata = Some(crate::config::InitDataSource::Digest(vec![1; 32]));
        c.tee = TeeKind::SevSnp(SnpConfig { host_data: Some([2; 32]), ..SnpConfig::default() });
        assert!(matches!(qemu_argv(&c), Err(ConfigError::ConflictingBinding { field: "host_data" })));
        c.tee = TeeKind::SevSnp(SnpConfig { host_data: Some([1; 32]), ..SnpConfig::default() });
        assert!(qemu_argv(&c).is_ok());
    }

    #[test]
    fn emulated_adds_a_client_port() {
        let mut c = plain();
        c.tee = TeeKind::EmulatedSnp(EmulatedConfig {
            endpoint: "/run/emu.sock".into(),
            reference_firmware: None,
            snp: SnpConfig::default(),
        });
        let argv: Vec<String> = qemu_argv(&c).unwrap().iter().map(|a| a.to_string_lossy().into_owned()).collect();
        assert!(argv.contains(&"socket,id=tee,path=/run/emu.sock".to_owned()));
        assert!(argv.contains(&"virtio-serial-pci,id=vser0".to_owned()));
        assert!(!argv.iter().any(|a| a.contains("sev-snp-guest")));
    }

    #[test]
    fn user_network_and_initdata_by_fw_cfg() {
        let mut c = plain();
        c.network = Network::User;
        c.initdata = Some(InitDataSource::Toml("algorithm = \"sha256\"\nversion = \"0.1.0\"\n".into()));
        let argv = |c: &VmConfig| -> Vec<String> {
            qemu_argv(c).unwrap().iter().map(|a| a.to_string_lossy().into_owned()).collect()
        };
        let a = argv(&c);
        assert!(a.windows(2).any(|w| w == ["-netdev", "user,id=net0"]), "{a:?}");
        assert!(a.contains(&"virtio-net-pci,netdev=net0,romfile=".to_owned()));
        // Not delivered unless asked.
        assert!(!a.iter().any(|x| x == "-fw_cfg"));
        c.deliver_initdata = true;
        let a = argv(&c);
        let file = c.initdata_file();
        let expected = format!("name={INITDATA_FW_CFG_NAME},file={}", file.display());
        assert!(a.windows(2).any(|w| w[0] == "-fw_cfg" && w[1] == expected), "{a:?}");
        // A digest alone has no file to deliver.
        c.initdata = Some(InitDataSource::Digest(vec![0; 32]));
        assert!(!argv(&c).iter().any(|x| x == "-fw_cfg"));
    }
}
