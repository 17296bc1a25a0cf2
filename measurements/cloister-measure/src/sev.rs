//! SEV and SEV-ES launch digests (SHA-256 over what `LAUNCH_UPDATE_DATA`/`_VMSA` encrypted).

use crate::digest::{Sha256, Sha256Digest};
use crate::error::Error;
use crate::hashes::KernelHashes;
use crate::ovmf::FirmwareImage;
use crate::snp::{VmmType, vmsa_pages};

fn firmware_and_hashes(fw: &FirmwareImage<'_>, hashes: Option<&KernelHashes>) -> Result<Sha256, Error> {
    let mut h = Sha256::new();
    h.update(fw.data());
    if let Some(k) = hashes {
        if !fw.is_sev_hashes_table_supported() {
            return Err(Error::KernelHashesUnsupported { reason: "its SEV hashes-table entry is absent or zero" });
        }
        h.update(&k.table());
    }
    Ok(h)
}

/// SEV: SHA-256 of the firmware, followed by the kernel-hashes table when a kernel is given.
pub fn sev_launch_digest(fw: &FirmwareImage<'_>, hashes: Option<&KernelHashes>) -> Result<Sha256Digest, Error> {
    Ok(firmware_and_hashes(fw, hashes)?.finish())
}

/// SEV-ES: as SEV, followed by one VMSA page per vCPU (SEV_FEATURES = 0). Returns the VMSAs too.
pub fn seves_launch_digest(
    fw: &FirmwareImage<'_>,
    hashes: Option<&KernelHashes>,
    vcpus: u32,
    vcpu_sig: Option<u64>,
    vmm: VmmType,
) -> Result<(Sha256Digest, Vec<[u8; 4096]>), Error> {
    if vcpus == 0 {
        return Err(Error::ZeroVcpus);
    }
    let sig = match (vmm, vcpu_sig) {
        (VmmType::Qemu, None) => return Err(Error::MissingVcpuSignature),
        (_, s) => s.unwrap_or(0),
    };
    let mut h = firmware_and_hashes(fw, hashes)?;
    let vmsas = vmsa_pages(fw, vcpus, sig, 0, vmm)?;
    for v in &vmsas {
        h.update(v);
    }
    Ok((h.finish(), vmsas))
}
