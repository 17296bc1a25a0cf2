//! The launch measurement the platform will report for a [`VmConfig`], computed with
//! `cloister-measure` from the files the VM is launched with:
//!
//! * **SEV-SNP**: MEASUREMENT from the firmware, the kernel-hashes table (kernel, initrd, command
//!   line) when `kernel-hashes=on`, the vCPU count and the CPUID signature of the launch CPU model,
//!   and the guest features (SEV_FEATURES) the host kernel sets; HOST_DATA alongside.
//! * **Emulated SNP**: the same computation against [`crate::EmulatedConfig::reference_firmware`]:
//!   the value to hand to `cloister emulate serve --measurement`.
//! * **TDX** (and emulated TDX): MRTD from the TDVF (single-pass page order: upstream KVM, QEMU ≥ 9);
//!   MRCONFIGID alongside. RTMRs are not predicted: RTMR0 depends on QEMU's ACPI tables and the
//!   TD HOB, and the measurements crate only replays event logs (measurement.md §3.3).
//! * **IBM SE**: the header values a verifier compares (`se.tag`, image PHKHs), parsed from the SE
//!   image; an SE image's keys are random per build, so nothing is predicted from its parts.
//! * Plain VMs: nothing is measured.
//!
//! Files are read here (firmware, kernel, initrd); their contents are untrusted bytes handed to
//! the measurements crate, which parses them with bounds checks.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use cloister_measure::digest::Sha256;
use cloister_measure::hashes::cmdline_digest;
use cloister_measure::se::{SeReferenceValues, parse_se_header};
use cloister_measure::snp::{SnpParams, launch_digest, vcpu_type_sig};
use cloister_measure::tdx::{PageOrder, mrtd};
use cloister_measure::{FirmwareImage, KernelHashes, Sha256Digest, Sha384Digest};
use serde_json::{Value, json};

use crate::config::{EmulatedConfig, SnpConfig, TeeKind, VmConfig};
use crate::error::{ConfigError, MeasureError};

/// An SEV-SNP launch measurement and the inputs it was computed from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnpMeasurement {
    /// MEASUREMENT (the launch digest).
    pub measurement: Sha384Digest,
    /// HOST_DATA the VM is launched with.
    pub host_data: Option<[u8; 32]>,
    /// Guest policy.
    pub policy: u64,
    /// The firmware measured.
    pub firmware: PathBuf,
    /// vCPU count.
    pub vcpus: u32,
    /// Launch CPU model.
    pub vcpu_type: String,
    /// Its CPUID signature (enters the VMSAs).
    pub vcpu_sig: u32,
    /// SEV_FEATURES assumed for the VMSAs.
    pub guest_features: u64,
    /// Kernel/initrd/cmdline digests (measured direct boot), if enabled.
    pub kernel_hashes: Option<KernelHashes>,
    /// Whether this is the value an emulated platform reports (no hardware involved).
    pub emulated: bool,
}

/// A TDX launch measurement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TdxMeasurement {
    /// MRTD.
    pub mrtd: Sha384Digest,
    /// MRCONFIGID the VM is launched with.
    pub mrconfigid: Option<[u8; 48]>,
    /// The TDVF measured.
    pub firmware: PathBuf,
    /// Whether this is the value an emulated platform reports.
    pub emulated: bool,
}

/// IBM SE reference values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeMeasurement {
    /// Values from the SE header.
    pub reference: SeReferenceValues,
    /// The SE image.
    pub image: PathBuf,
}

/// What the platform will report for a launch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LaunchMeasurement {
    /// A plain VM: nothing is measured.
    None,
    /// SEV-SNP (hardware or emulated).
    Snp(SnpMeasurement),
    /// TDX (hardware or emulated).
    Tdx(TdxMeasurement),
    /// IBM SE.
    Se(SeMeasurement),
}

impl LaunchMeasurement {
    /// The main value as lowercase hex (SNP MEASUREMENT, TDX MRTD, SE tag), if any.
    pub fn hex(&self) -> Option<String> {
        match self {
            LaunchMeasurement::None => None,
            LaunchMeasurement::Snp(s) => Some(s.measurement.to_hex()),
            LaunchMeasurement::Tdx(t) => Some(t.mrtd.to_hex()),
            LaunchMeasurement::Se(s) => Some(s.reference.tag_hex()),
        }
    }

    /// A JSON export. SNP and TDX follow `cloister measure --output json` (`tee`, `algorithm`,
    /// `measurement`, `inputs`), so `cloister emulate serve --measurement-json` accepts the SNP form.
    pub fn to_json(&self) -> Value {
        match self {
            LaunchMeasurement::None => json!({ "tee": "none" }),
            LaunchMeasurement::Snp(s) => {
                let mut inputs = json!({
                    "ovmf": s.firmware.display().to_string(),
                    "vcpus": s.vcpus,
                    "vcpu_type": s.vcpu_type,
                    "vcpu_sig": format!("{:#x}", s.vcpu_sig),
                    "vmm_type": "QEMU",
                    "guest_features": format!("{:#x}", s.guest_features),
                });
                if let Some(k) = &s.kernel_hashes {
                    inputs["kernel_sha256"] = json!(k.kernel.to_hex());
                    inputs["initrd_sha256"] = json!(k.initrd.to_hex());
                    inputs["cmdline_sha256"] = json!(k.cmdline.to_hex());
                }
                json!({
                    "tee": "snp",
                    "mode": "snp",
                    "algorithm": "sha384",
                    "measurement": s.measurement.to_hex(),
                    "host_data": s.host_data.map(hex::encode),
                    "policy": format!("{:#x}", s.policy),
                    "emulated": s.emulated,
                    "inputs": inputs,
                })
            }
            LaunchMeasurement::Tdx(t) => json!({
                "tee": "tdx",
                "mode": "tdx",
                "algorithm": "sha384",
                "measurement": t.mrtd.to_hex(),
                "mrconfigid": t.mrconfigid.map(hex::encode),
                "emulated": t.emulated,
                "inputs": { "ovmf": t.firmware.display().to_string(), "tdx_page_order": PageOrder::SinglePass.cli_name() },
            }),
            LaunchMeasurement::Se(s) => json!({
                "tee": "se",
                "image": s.image.display().to_string(),
                "reference_values": serde_json::from_str::<Value>(&s.reference.to_json()).unwrap_or(Value::Null),
            }),
        }
    }
}

fn read(what: &'static str, path: &Path) -> Result<Vec<u8>, MeasureError> {
    std::fs::read(path).map_err(|source| MeasureError::Read { what, path: path.to_owned(), source })
}

/// SHA-256 of a file, streamed.
fn sha256_file(what: &'static str, path: &Path) -> Result<Sha256Digest, MeasureError> {
    let err = |source| MeasureError::Read { what, path: path.to_owned(), source };
    let mut f = File::open(path).map_err(err)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).map_err(err)?;
        if n == 0 {
            return Ok(h.finish());
        }
        h.update(buf.get(..n).unwrap_or_default());
    }
}

/// The kernel-hashes table entries QEMU computes for `-kernel/-initrd/-append` (measurement.md §2.4).
pub fn kernel_hashes(cfg: &VmConfig) -> Result<KernelHashes, MeasureError> {
    let kernel = sha256_file("kernel", &cfg.kernel)?;
    let initrd = match &cfg.initrd {
        Some(p) => sha256_file("initrd", p)?,
        None => Sha256::new().finish(),
    };
    Ok(KernelHashes { kernel, initrd, cmdline: cmdline_digest(Some(&cfg.cmdline)) })
}

fn snp_measurement(
    cfg: &VmConfig,
    snp: &SnpConfig,
    firmware: Option<&PathBuf>,
    emulated: bool,
) -> Result<SnpMeasurement, MeasureError> {
    let firmware = firmware.ok_or(MeasureError::NoFirmware { tee: cfg.tee.name() })?;
    let vcpu_sig = vcpu_type_sig(&snp.vcpu_type).map_err(|_| ConfigError::UnknownVcpuType(snp.vcpu_type.clone()))?;
    let fw_bytes = read("firmware", firmware)?;
    let fw = FirmwareImage::parse(&fw_bytes)?;
    let hashes = if snp.kernel_hashes { Some(kernel_hashes(cfg)?) } else { None };
    let mut p = SnpParams::qemu(cfg.vcpus, vcpu_sig);
    p.guest_features = snp.guest_features;
    p.kernel_hashes = hashes;
    let measurement = launch_digest(&fw, &p)?;
    Ok(SnpMeasurement {
        measurement,
        host_data: cfg.effective_host_data(snp)?,
        policy: snp.policy,
        firmware: firmware.clone(),
        vcpus: cfg.vcpus,
        vcpu_type: snp.vcpu_type.clone(),
        vcpu_sig,
        guest_features: snp.guest_features,
        kernel_hashes: hashes,
        emulated,
    })
}

fn tdx_measurement(
    cfg: &VmConfig,
    firmware: Option<&PathBuf>,
    mrconfigid: Option<[u8; 48]>,
    emulated: bool,
) -> Result<TdxMeasurement, MeasureError> {
    let firmware = firmware.ok_or(MeasureError::NoFirmware { tee: cfg.tee.name() })?;
    let bytes = read("firmware", firmware)?;
    Ok(TdxMeasurement { mrtd: mrtd(&bytes, PageOrder::SinglePass)?, mrconfigid, firmware: firmware.clone(), emulated })
}

/// The launch measurement the platform will report for `cfg` (see the module documentation).
/// Reads the firmware, kernel and initrd; the accelerator is irrelevant.
pub fn expected_measurement(cfg: &VmConfig) -> Result<LaunchMeasurement, MeasureError> {
    let mut c = cfg.clone();
    if !c.tee.is_confidential() {
        // The accelerator does not enter the measurement; let validation pass for `Auto`.
        c.accel = crate::config::Accel::Tcg;
    } else {
        c.accel = crate::config::Accel::Kvm;
    }
    c.validate()?;
    Ok(match &cfg.tee {
        TeeKind::None => LaunchMeasurement::None,
        TeeKind::SevSnp(snp) => LaunchMeasurement::Snp(snp_measurement(cfg, snp, cfg.firmware.as_ref(), false)?),
        TeeKind::EmulatedSnp(EmulatedConfig { reference_firmware, snp, .. }) => {
            LaunchMeasurement::Snp(snp_measurement(cfg, snp, reference_firmware.as_ref(), true)?)
        }
        TeeKind::Tdx(tdx) => {
            LaunchMeasurement::Tdx(tdx_measurement(cfg, cfg.firmware.as_ref(), cfg.effective_mrconfigid(tdx)?, false)?)
        }
        TeeKind::EmulatedTdx(e) => LaunchMeasurement::Tdx(tdx_measurement(
            cfg,
            e.reference_firmware.as_ref(),
            cfg.effective_mrconfigid(&Default::default())?,
            true,
        )?),
        TeeKind::Se(_) => {
            let bytes = read("SE image", &cfg.kernel)?;
            LaunchMeasurement::Se(SeMeasurement {
                reference: parse_se_header(&bytes)?.reference_values(),
                image: cfg.kernel.clone(),
            })
        }
    })
}
