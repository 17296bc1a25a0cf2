//! OVMF footer table + SEV metadata parser and every SEV-family digest.
#![no_main]

use cloister_measure::snp::{self, SnpParams, VmmType};
use cloister_measure::{FirmwareImage, KernelHashes, sev};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(fw) = FirmwareImage::parse(data) else { return };
    let hashes = KernelHashes::from_contents(b"k", None, None);
    for vmm in [VmmType::Qemu, VmmType::Ec2, VmmType::Gce] {
        let p = SnpParams {
            vcpus: 2,
            vcpu_sig: Some(0x800f12),
            guest_features: 1,
            vmm,
            kernel_hashes: Some(hashes),
            ovmf_hash: None,
            threads: 1,
        };
        let _ = snp::launch_digest(&fw, &p);
        let _ = sev::seves_launch_digest(&fw, None, 2, Some(1), vmm);
    }
    let _ = sev::sev_launch_digest(&fw, Some(&hashes));
});
