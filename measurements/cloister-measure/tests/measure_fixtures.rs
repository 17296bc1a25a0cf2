//! Every SEV / SEV-ES / SEV-SNP case of `fixtures/measure/cases.tsv` (expected values from
//! sev-snp-measure 0.0.13, see that folder's README and PROVENANCE) through the library.
//!
//! Kernels and initrds enter these digests only through their SHA-256, so the synthetic inputs are
//! regenerated in-process with the recipe of `gen-inputs.py` and the Debian kernel (not shipped) is
//! represented by its published digest.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::path::PathBuf;

use cloister_measure::digest::{Sha256, Sha256Digest, Sha384Digest};
use cloister_measure::hashes::cmdline_digest;
use cloister_measure::snp::{self, SnpParams, VmmType};
use cloister_measure::{FirmwareImage, KernelHashes, sev};

fn fixtures() -> Option<PathBuf> {
    match std::env::var_os("CLOISTER_FIXTURES") {
        Some(p) => Some(PathBuf::from(p)),
        None => {
            eprintln!("skipping: CLOISTER_FIXTURES is not set (point it at shared/fixtures)");
            None
        }
    }
}

/// `block(i) = SHA-256(seed ‖ i as u64 LE)`, concatenated and truncated (gen-inputs.py).
fn synth_digest(seed: &[u8], size: usize) -> Sha256Digest {
    let mut h = Sha256::new();
    let mut left = size;
    let mut i = 0u64;
    while left > 0 {
        let mut b = Sha256::new();
        b.update(seed);
        b.update(&i.to_le_bytes());
        let block = b.finish();
        let n = left.min(32);
        h.update(&block.as_bytes()[..n]);
        left -= n;
        i += 1;
    }
    h.finish()
}

fn input_digest(name: &str) -> Option<Sha256Digest> {
    let hex = |s: &str| Sha256Digest::from_hex(s).unwrap();
    match name {
        "-" => None,
        "/dev/null" => Some(cloister_measure::digest::sha256(b"")),
        "kernel-synth.bin" => Some(synth_digest(b"kernel", 1_048_576)),
        "initrd-synth.img" => Some(synth_digest(b"initrd", 4_194_427)),
        "vmlinuz-6.1.0-56-cloud-amd64" => Some(hex("51349501a3d1ff83836437d2b365fd2d57f2feb8642d315e5181dec23d4c3275")),
        other => panic!("unknown input {other}"),
    }
}

struct Case {
    id: String,
    cols: Vec<String>,
}

fn cases(root: &std::path::Path) -> Vec<Case> {
    let text = std::fs::read_to_string(root.join("measure/cases.tsv")).unwrap();
    text.lines()
        .skip(1)
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let cols: Vec<String> = l.split('\t').map(str::to_owned).collect();
            Case { id: cols[0].clone(), cols }
        })
        .collect()
}

#[test]
fn synthetic_inputs_match_their_published_digests() {
    assert_eq!(
        synth_digest(b"kernel", 1_048_576).to_hex(),
        "83433109c3bac0d3c48c533cda61cef2bb3f530476c8013b301723e94966009e"
    );
    assert_eq!(
        synth_digest(b"initrd", 4_194_427).to_hex(),
        "f00cc1852688d2a956baf9ad5f4d4c45a7c561128a20af1e3b6f13eae41ec000"
    );
}

#[test]
fn every_sev_family_case_matches() {
    let Some(root) = fixtures() else { return };
    let fw_dir = root.join("firmware");
    let mut ran = 0;
    for c in cases(&root) {
        let col = |i: usize| c.cols[i].as_str();
        let (mode, firmware, vcpus, vtype, vmm, feats, kernel, initrd, append, expected, extra) =
            (col(1), col(2), col(3), col(4), col(5), col(6), col(7), col(8), col(9), col(10), col(11));
        if mode.starts_with("tdx") {
            continue;
        }
        let bytes = std::fs::read(fw_dir.join(firmware)).unwrap();
        let fw = FirmwareImage::parse(&bytes).unwrap();
        let vcpus: u32 = vcpus.parse().unwrap_or(0);
        let sig = match vtype {
            "-" => None,
            s if s.starts_with("0x") => Some(u64::from_str_radix(&s[2..], 16).unwrap()),
            s => Some(u64::from(snp::vcpu_type_sig(s).unwrap())),
        };
        let vmm = if vmm == "-" { VmmType::Qemu } else { VmmType::from_name(vmm).unwrap() };
        let features = if feats == "-" { 0x1 } else { u64::from_str_radix(&feats[2..], 16).unwrap() };
        let hashes = input_digest(kernel).map(|k| KernelHashes {
            kernel: k,
            initrd: input_digest(initrd).unwrap_or(cloister_measure::digest::sha256(b"")),
            cmdline: cmdline_digest((append != "-").then_some(append)),
        });
        let mut extra_args = extra.split_whitespace().filter(|s| *s != "-");
        let mut ovmf_hash = None;
        let mut svsm = None;
        let mut vars_size = 0u64;
        while let Some(flag) = extra_args.next() {
            let v = extra_args.next().unwrap();
            match flag {
                "--snp-ovmf-hash" => ovmf_hash = Some(Sha384Digest::from_hex(v).unwrap()),
                "--svsm" => svsm = Some(std::fs::read(fw_dir.join(v)).unwrap()),
                "--vars-size" => vars_size = v.parse().unwrap(),
                other => panic!("{}: unknown extra flag {other}", c.id),
            }
        }
        let got = match mode {
            "snp" => {
                let p = SnpParams {
                    vcpus,
                    vcpu_sig: sig,
                    guest_features: features,
                    vmm,
                    kernel_hashes: hashes,
                    ovmf_hash,
                    threads: 2,
                };
                snp::launch_digest(&fw, &p).unwrap().to_hex()
            }
            "snp:ovmf-hash" => snp::ovmf_hash(&fw, 2).unwrap().to_hex(),
            "snp:svsm" => snp::svsm_launch_digest(&bytes, svsm.as_deref().unwrap(), vars_size, vcpus, sig.unwrap(), 2)
                .unwrap()
                .0
                .to_hex(),
            "seves" => sev::seves_launch_digest(&fw, hashes.as_ref(), vcpus, sig, vmm).unwrap().0.to_hex(),
            "sev" => sev::sev_launch_digest(&fw, hashes.as_ref()).unwrap().to_hex(),
            other => panic!("{}: unknown mode {other}", c.id),
        };
        assert_eq!(got, expected, "case {}", c.id);
        ran += 1;
    }
    assert!(ran >= 22, "only {ran} cases ran");
}
