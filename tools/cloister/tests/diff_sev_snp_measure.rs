//! Differential test: `cloister measure` against sev-snp-measure 0.0.13 on randomised option
//! combinations over the fixture firmware. Both must succeed with byte-identical stdout, or both
//! fail.
//!
//! Needs `CLOISTER_FIXTURES` and the reference tool (`SEV_SNP_MEASURE` = path of the
//! `sev-snp-measure` script, else looked up on PATH). Without them the test skips with a message,
//! except under CI (`CI` set), where a missing reference tool is a failure: `.ci/run` installs it.
//! `CLOISTER_DIFF_CASES` sets the number of cases (default 60), `CLOISTER_DIFF_SEED` the seed.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::path::{Path, PathBuf};
use std::process::Command;

/// xorshift64*: small, seedable, good enough to pick options.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn pick<T: Copy>(&mut self, xs: &[T]) -> T {
        xs[self.below(xs.len() as u64) as usize]
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

fn reference_tool() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("SEV_SNP_MEASURE") {
        return Some(PathBuf::from(p));
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|d| d.join("sev-snp-measure")).find(|p| p.is_file())
}

const VCPU_TYPES: &[&str] = &[
    "EPYC",
    "EPYC-v1",
    "EPYC-v2",
    "EPYC-IBPB",
    "EPYC-v3",
    "EPYC-v4",
    "EPYC-Rome",
    "EPYC-Rome-v1",
    "EPYC-Rome-v2",
    "EPYC-Rome-v3",
    "EPYC-Milan",
    "EPYC-Milan-v1",
    "EPYC-Milan-v2",
    "EPYC-Genoa",
    "EPYC-Genoa-v1",
    "EPYC-Turin",
];

const FIRMWARE: &[&str] = &[
    "debian-bookworm/OVMF.fd",
    "debian-bookworm/OVMF_CODE.fd",
    "debian-bookworm/OVMF_CODE_4M.fd",
    "debian-sid/OVMF.amdsev.fd",
    "debian-sid/OVMF.inteltdx.ms.fd",
    "sev-snp-measure-fixtures/ovmf_AmdSev_suffix.bin",
    "sev-snp-measure-fixtures/ovmf_OvmfX64_suffix.bin",
    "sev-snp-measure-fixtures/svsm_ovmf.fd",
];

const APPENDS: &[&str] =
    &["console=ttyS0 loglevel=7", "", "root=/dev/vda1 ro quiet", "cloister.initdata=abc ünïcødé=1"];

fn random_args(rng: &mut Rng, fw: &Path, inputs: &Path) -> Vec<String> {
    let mut a: Vec<String> = Vec::new();
    let mut push = |xs: &[&str]| a.extend(xs.iter().map(|s| s.to_string()));
    let mode = rng.pick(&["snp", "snp", "snp", "seves", "sev", "snp:ovmf-hash", "snp:svsm"]);
    push(&["--mode", mode]);
    if mode == "snp:svsm" {
        push(&["--ovmf", fw.join("sev-snp-measure-fixtures/svsm_ovmf.fd").to_str().unwrap()]);
        push(&["--svsm", fw.join("sev-snp-measure-fixtures/svsm.bin").to_str().unwrap()]);
        if rng.chance(50) {
            push(&["--vars-size", &(4096 * (1 + rng.below(200))).to_string()]);
        } else {
            push(&["--vars-file", fw.join("debian-bookworm/OVMF_CODE.fd").to_str().unwrap()]);
        }
    } else {
        push(&["--ovmf", fw.join(rng.pick(FIRMWARE)).to_str().unwrap()]);
    }
    if mode != "sev" {
        push(&["--vcpus", &(1 + rng.below(64)).to_string()]);
    }
    match rng.below(4) {
        0 => push(&["--vcpu-type", rng.pick(VCPU_TYPES)]),
        1 => push(&["--vcpu-sig", &format!("{:#x}", 1 + rng.below(0xffffff))]),
        2 => push(&[
            "--vcpu-family",
            &(16 + rng.below(16)).to_string(),
            "--vcpu-model",
            &rng.below(256).to_string(),
            "--vcpu-stepping",
            &rng.below(16).to_string(),
        ]),
        _ => {} // only valid for ec2/gce: both tools must then fail alike for QEMU
    }
    if mode != "snp:svsm" {
        match rng.below(4) {
            0 => push(&["--vmm-type", "ec2"]),
            1 => push(&["--vmm-type", "gce"]),
            _ => {}
        }
        if mode != "snp:ovmf-hash" && rng.chance(50) {
            let k = rng.pick(&["kernel-a", "kernel-b", "empty"]);
            push(&["--kernel", inputs.join(k).to_str().unwrap()]);
            if rng.chance(60) {
                push(&["--initrd", inputs.join(rng.pick(&["initrd", "empty"])).to_str().unwrap()]);
            }
            if rng.chance(70) {
                push(&["--append", rng.pick(APPENDS)]);
            }
        }
    }
    if (mode == "snp" || mode == "snp:svsm") && rng.chance(60) {
        let f = rng.pick(&["0x1", "0x21", "0x3", "0x41", "0x101", "0x1e1"]);
        push(&["--guest-features", f]);
    }
    if mode == "snp" && rng.chance(15) {
        // The U08 value: the OVMF hash of ovmf_AmdSev_suffix.bin.
        push(&["--snp-ovmf-hash", U08]);
    }
    if rng.chance(30) {
        push(&["--output-format", "base64"]);
    }
    if rng.chance(10) {
        push(&["-v"]);
    }
    if rng.chance(10) {
        push(&["--dump-vmsa"]);
    }
    a
}

const U08: &str = "086e2e9149ebf45abdc3445fba5b2da8270bdbb04094d7a2c37faaa4b24af3aa16aff8c374c2a55c467a50da6d466b74";

/// The files a run left in its working directory (the VMSA dumps), sorted by name.
fn dumped(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut v: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (e.file_name().to_string_lossy().into_owned(), std::fs::read(e.path()).unwrap())
        })
        .collect();
    v.sort();
    v
}

#[test]
fn matches_sev_snp_measure_on_random_options() {
    let Some(fixtures) = std::env::var_os("CLOISTER_FIXTURES").map(PathBuf::from) else {
        eprintln!("skipping: CLOISTER_FIXTURES is not set");
        return;
    };
    let Some(reference) = reference_tool() else {
        assert!(std::env::var_os("CI").is_none(), "sev-snp-measure 0.0.13 is required under CI");
        eprintln!("skipping: sev-snp-measure not found (set SEV_SNP_MEASURE or put it on PATH)");
        return;
    };
    let fw = fixtures.join("firmware");
    let inputs = tempfile::tempdir().unwrap();
    let mut x = 1u64;
    for (name, len) in [("kernel-a", 3 << 20), ("kernel-b", 70_001), ("initrd", 1 << 20), ("empty", 0)] {
        let bytes: Vec<u8> = (0..len)
            .map(|_| {
                x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                (x >> 33) as u8
            })
            .collect();
        std::fs::write(inputs.path().join(name), bytes).unwrap();
    }
    let cases: usize = std::env::var("CLOISTER_DIFF_CASES").ok().and_then(|s| s.parse().ok()).unwrap_or(60);
    let seed: u64 = std::env::var("CLOISTER_DIFF_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(7, |d| d.as_nanos() as u64) | 1
    });
    eprintln!("differential test: {cases} cases, CLOISTER_DIFF_SEED={seed}");
    let mut rng = Rng(seed);
    let (mut ok_both, mut fail_both) = (0, 0);
    for i in 0..cases {
        let args = random_args(&mut rng, &fw, inputs.path());
        let (our_dir, their_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let ours = Command::new(env!("CARGO_BIN_EXE_cloister"))
            .arg("measure")
            .args(&args)
            .current_dir(our_dir.path())
            .output()
            .unwrap();
        let theirs = Command::new(&reference).args(&args).current_dir(their_dir.path()).output().unwrap();
        let show = args.join(" ");
        assert!(!String::from_utf8_lossy(&ours.stderr).contains("panicked"), "case {i} panicked: {show}");
        match (ours.status.success(), theirs.status.success()) {
            (true, true) => {
                assert_eq!(
                    String::from_utf8_lossy(&ours.stdout),
                    String::from_utf8_lossy(&theirs.stdout),
                    "case {i} differs (seed {seed}): {show}"
                );
                let (a, b) = (dumped(our_dir.path()), dumped(their_dir.path()));
                assert!(a == b, "case {i}: dumped VMSAs differ (seed {seed}): {show}");
                ok_both += 1;
            }
            (false, false) => {
                assert_eq!(ours.status.code(), Some(1), "case {i}: exit code must be 1: {show}");
                fail_both += 1;
            }
            (o, t) => panic!(
                "case {i} (seed {seed}): cloister success={o}, sev-snp-measure success={t}: {show}\nours: {}\ntheirs: {}",
                String::from_utf8_lossy(&ours.stderr),
                String::from_utf8_lossy(&theirs.stderr)
            ),
        }
    }
    eprintln!("{ok_both} identical digests, {fail_both} rejected by both");
    assert!(ok_both >= cases / 3, "too few successful cases ({ok_both}) to mean anything");
}
