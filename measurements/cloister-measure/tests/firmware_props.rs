//! Property tests: the firmware parser and every SEV-family digest on random and mutated images
//! never panic; they return a value or a typed error. (The cargo-fuzz target `firmware` explores
//! the same entry points coverage-guided.)
#![allow(missing_docs)]

use cloister_measure::snp::{self, SnpParams, VmmType};
use cloister_measure::{FirmwareImage, KernelHashes, sev};
use proptest::prelude::*;

fn exercise(bytes: &[u8]) {
    let Ok(fw) = FirmwareImage::parse(bytes) else { return };
    let hashes = KernelHashes::from_contents(b"k", None, Some("x"));
    for vmm in [VmmType::Qemu, VmmType::Ec2, VmmType::Gce] {
        for kernel in [None, Some(hashes)] {
            let p = SnpParams {
                vcpus: 3,
                vcpu_sig: Some(0x800f12),
                guest_features: 0x21,
                vmm,
                kernel_hashes: kernel,
                ovmf_hash: None,
                threads: 1,
            };
            let _ = snp::launch_digest(&fw, &p);
            let _ = sev::seves_launch_digest(&fw, kernel.as_ref(), 2, Some(1), vmm);
        }
    }
    let _ = sev::sev_launch_digest(&fw, Some(&hashes));
    let _ = snp::ovmf_hash(&fw, 2);
    let _ = snp::svsm_launch_digest(bytes, bytes, 4096, 2, 1, 1);
}

/// A 4 KiB image whose tail is a plausible footer table with SEV metadata, for mutation.
fn seed_image() -> Vec<u8> {
    let footer = [0xde, 0x82, 0xb5, 0x96, 0xb2, 0x1f, 0xf7, 0x45, 0xba, 0xea, 0xa3, 0x66, 0xc5, 0x5a, 0x08, 0x2d];
    let reset = [0xde, 0x71, 0xf7, 0x00, 0x7e, 0x1a, 0xcb, 0x4f, 0x89, 0x0e, 0x68, 0xc7, 0x7e, 0x2f, 0xb4, 0x4e];
    let meta = [0x66, 0x65, 0x88, 0xdc, 0x4a, 0x98, 0x98, 0x47, 0xa7, 0x5e, 0x55, 0x85, 0xa7, 0xbf, 0x67, 0xcc];
    let hashes = [0x1f, 0x37, 0x55, 0x72, 0x3b, 0x3a, 0x04, 0x4b, 0x92, 0x7b, 0x1d, 0xa6, 0xef, 0xa8, 0xd4, 0x54];
    let mut img = vec![0u8; 4096];
    // SEV metadata at 0x800 from the end: 3 items (SEC_MEM, KERNEL_HASHES, CPUID).
    let m = 4096 - 0x800;
    img[m..m + 4].copy_from_slice(b"ASEV");
    img[m + 4..m + 8].copy_from_slice(&(16u32 + 36).to_le_bytes());
    img[m + 8..m + 12].copy_from_slice(&1u32.to_le_bytes());
    img[m + 12..m + 16].copy_from_slice(&3u32.to_le_bytes());
    for (i, (gpa, size, t)) in
        [(0x800000u32, 0x2000u32, 1u32), (0x810000, 0x1000, 0x10), (0x80e000, 0x1000, 3)].into_iter().enumerate()
    {
        let at = m + 16 + 12 * i;
        img[at..at + 4].copy_from_slice(&gpa.to_le_bytes());
        img[at + 4..at + 8].copy_from_slice(&size.to_le_bytes());
        img[at + 8..at + 12].copy_from_slice(&t.to_le_bytes());
    }
    let mut table = Vec::new();
    for (g, d) in [(hashes, [0x00u8, 0x0c, 0x81, 0, 0, 4, 0, 0].to_vec()), (meta, 0x800u32.to_le_bytes().to_vec())]
        .into_iter()
        .chain([(reset, 0x80b004u32.to_le_bytes().to_vec())])
    {
        table.extend_from_slice(&d);
        table.extend_from_slice(&((d.len() + 18) as u16).to_le_bytes());
        table.extend_from_slice(&g);
    }
    table.extend_from_slice(&((table.len() + 18) as u16).to_le_bytes());
    table.extend_from_slice(&footer);
    let end = 4096 - 32;
    img[end - table.len()..end].copy_from_slice(&table);
    img
}

#[test]
fn seed_image_is_valid() {
    let img = seed_image();
    let fw = FirmwareImage::parse(&img).expect("seed parses");
    assert_eq!(fw.sev_metadata().len(), 3);
    let mut p = SnpParams::qemu(2, 0x800f12);
    p.kernel_hashes = Some(KernelHashes::from_contents(b"k", None, None));
    assert!(snp::launch_digest(&fw, &p).is_ok());
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..9000)) {
        exercise(&bytes);
    }

    #[test]
    fn mutated_tables_never_panic(flips in proptest::collection::vec((0usize..0x820, any::<u8>()), 1..12),
                                  cut in 0usize..64) {
        let mut img = seed_image();
        for (pos, v) in flips {
            let at = img.len() - 1 - pos;
            img[at] = v;
        }
        exercise(&img);
        // Truncations keep the tail (where the table is) but shift everything.
        exercise(&img[cut * 64..]);
    }
}
