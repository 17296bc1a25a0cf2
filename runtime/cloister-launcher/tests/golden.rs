//! Golden tests: the exact QEMU argv for each kind of VM, checked against `tests/golden/*.argv`
//! (one argument per line, after a `#` comment header saying where each option comes from).
//!
//! The SNP and TDX objects do not exist in Debian's QEMU 7.2, so these files are how those command
//! lines are checked on the project machines. After an intended change, regenerate them with
//!
//! ```sh
//! CLOISTER_BLESS=1 cargo test -p cloister-launcher --test golden
//! ```
//!
//! and review the diff. The paths in the configurations are fixed strings: the argv builder does
//! no I/O, so none of these files need to exist.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::path::PathBuf;

use cloister_launcher::{
    Accel, Channel, EmulatedConfig, InitDataSource, QgsSocket, SeConfig, SnpConfig, SnpIdBlock, TdxConfig, TeeKind,
    VmConfig, qemu_argv,
};
use cloister_measure::Sha384Digest;
use cloister_measure::id_block::{IdBlock, SignedIdBlock, SnpSigningKey};

const GUEST: &str = "/var/lib/cloister/guest";

/// An initdata document (its SHA-384 becomes HOST_DATA truncated to 32 bytes / MRCONFIGID).
const INITDATA: &str = r#"version = "0.1.0"
algorithm = "sha384"
[data]
"aa.toml" = '''
[token_configs.kbs]
url = "https://kbs.example:8080"
'''
"policy.rego" = "package agent_policy\ndefault AllowRequestsFailingPolicy := true\n"
"#;

const COMMON_SOURCES: &str = "\
#   -name, -no-user-config, -nodefaults, -display none, -no-reboot: QEMU docs (invocation);
#     -no-reboot makes a guest reboot/power-off end QEMU (runtime.md §5.3 \"Serial consoles\")
#   -smp, -m, -kernel/-initrd/-append (direct boot): QEMU docs (invocation)
#   -serial file:<run_dir>/console.log: runtime.md §5.3 \"Serial consoles\"
#   -chardev socket,id=qmp,…,server=on,wait=off + -mon chardev=qmp,mode=control: QEMU docs
#     (QMP, \"QEMU Machine Protocol\"); the launcher waits for the greeting + qmp_capabilities
";

fn base(name: &str) -> VmConfig {
    let mut c =
        VmConfig::new(name, format!("{GUEST}/vmlinux-6.1.0-56-cloud-amd64"), format!("/run/cloister/vms/{name}"));
    c.vcpus = 2;
    c.memory_mib = 512;
    c.initrd = Some(format!("{GUEST}/initrd.img").into());
    c.cmdline = "console=ttyS0 panic=-1 no_timer_check quiet".into();
    c.channel = Channel::VirtioSerial { socket: format!("/run/cloister/vms/{name}/agent.sock").into() };
    c
}

fn signed_id_block() -> SignedIdBlock {
    // A fixed key and digest: ECDSA here is deterministic (RFC 6979), so the file is stable.
    let secret = p384::SecretKey::from_slice(&[0x11; 48]).unwrap();
    let key = SnpSigningKey::from_secret_key(&secret);
    // S05 of ../shared/fixtures/measure/cases.tsv (any 48 bytes would do for the argv).
    let digest = Sha384Digest::from_hex(
        "ce79216595a90a22200308ad254957f4d076aa1d1c90ae20ce50f0a2d48e6fa755df3a045fe235dfa4c1cbce28c13450",
    )
    .unwrap();
    SignedIdBlock::sign(IdBlock::new(digest, 0x30000), &key, None).unwrap()
}

struct Case {
    name: &'static str,
    title: &'static str,
    sources: &'static str,
    cfg: VmConfig,
}

fn cases() -> Vec<Case> {
    let mut v = Vec::new();

    let mut c = base("plain-tcg");
    c.accel = Accel::Tcg;
    v.push(Case {
        name: "plain-tcg",
        title: "plain VM under TCG: the degenerate policy on the project machines (no usable KVM)",
        sources: "\
#   -machine q35,accel=tcg -cpu max: runtime.md §5.1, §5.4 (PVM /dev/kvm hangs stock kernels; microvm
#     hangs under TCG, stay on q35); -kernel takes the ELF vmlinux for PVH direct boot (§5.2, §5.4)
#   virtio-serial-pci + virtserialport name=agent.0 on a server=on,wait=off socket: runtime.md §5.3
",
        cfg: c,
    });

    let mut c = base("plain-kvm");
    c.accel = Accel::Kvm;
    c.channel = Channel::Vsock { guest_cid: 3 };
    v.push(Case {
        name: "plain-kvm",
        title: "plain VM under KVM on a real host, agent over kernel vhost-vsock",
        sources: "\
#   -machine q35,accel=kvm -cpu host: QEMU docs (invocation); runtime.md §5.4 \"On a real host the same
#     launcher uses KVM\"
#   -device vhost-vsock-pci,guest-cid=N: runtime.md §5.3 (kernel vhost), agent at vsock://N:1024 (§2)
",
        cfg: c,
    });

    let mut c = base("snp");
    c.accel = Accel::Auto;
    c.firmware = Some("/usr/share/ovmf/OVMF.amdsev.fd".into());
    c.initdata = Some(InitDataSource::Toml(INITDATA.into()));
    c.tee = TeeKind::SevSnp(SnpConfig::default());
    v.push(Case {
        name: "snp",
        title: "AMD SEV-SNP, measured direct boot, HOST_DATA = SHA-384(initdata)[..32]",
        sources: "\
#   -machine q35,accel=kvm,confidential-guest-support=sev0,memory-backend=ram1,kernel-irqchip=split:
#     runtime.md §4 (Kata: confidential-guest-support, kernel_irqchip=split); QEMU docs
#     system/i386/amd-memory-encryption (SEV-SNP: memory-backend for shared memory)
#   -object memory-backend-memfd,id=ram1,size=<M>M,share=true,prealloc=false: QEMU docs
#     system/i386/amd-memory-encryption (SNP launch example)
#   -object sev-snp-guest,id=sev0,cbitpos=51,reduced-phys-bits=1,policy=0x30000,kernel-hashes=on,
#     host-data=<base64 of 32 bytes>: runtime.md §4 (SNP; cbitpos/reduced-phys-bits = CPUID 0x8000001F,
#     policy = Kata snp_guest_policy 196608), runtime.md §3 (initdata digest truncated to 32 bytes)
#   -cpu EPYC-v4: runtime.md §4 (Kata forces the launch CPU model; it enters the VMSA / measurement)
#   -bios OVMF.amdsev.fd: runtime.md §4 (firmware with the SNP_KERNEL_HASHES section)
#   virtio devices with iommu_platform=on: encrypted guests need the DMA API (runtime.md §4, SE note;
#     Kata sets it for confidential guests)
",
        cfg: c,
    });

    let mut c = base("snp-with-id-block");
    c.accel = Accel::Kvm;
    c.vcpus = 4;
    c.firmware = Some("/usr/share/ovmf/OVMF.amdsev.fd".into());
    let id = signed_id_block();
    c.tee = TeeKind::SevSnp(SnpConfig {
        vcpu_type: "EPYC-Milan".into(),
        host_data: Some([0xab; 32]),
        id_block: Some(SnpIdBlock {
            id_block: id.id_block_base64(),
            id_auth: id.id_auth_base64(),
            author_key_enabled: id.author_key_enabled(),
        }),
        ..SnpConfig::default()
    });
    v.push(Case {
        name: "snp-with-id-block",
        title: "AMD SEV-SNP with an explicit HOST_DATA and a signed ID block (4 vCPUs, EPYC-Milan)",
        sources: "\
#   as snp.argv, plus id-block=<base64 0x60 bytes>,id-auth=<base64 0x1000 bytes>: runtime.md §4
#     (\"Other properties\"; Kata snp_id_block / snp_id_auth), measurement.md §2.7; built here with
#     cloister_measure::id_block::SignedIdBlock from a fixed test key (no author key, so no
#     author-key-enabled=on)
#   host-data given explicitly (no initdata)
",
        cfg: c,
    });

    let mut c = base("tdx");
    c.accel = Accel::Kvm;
    c.firmware = Some("/usr/share/ovmf/OVMF.inteltdx.fd".into());
    c.initdata = Some(InitDataSource::Toml(INITDATA.into()));
    c.tee = TeeKind::Tdx(TdxConfig { quote_generation_socket: Some(QgsSocket::default()), ..TdxConfig::default() });
    v.push(Case {
        name: "tdx",
        title: "Intel TDX, MRCONFIGID = SHA-384(initdata), quote generation service on vsock 2:4050",
        sources: "\
#   -machine q35,accel=kvm,kernel-irqchip=split,confidential-guest-support=tdx0: runtime.md §4 (TDX);
#     QEMU docs system/i386/tdx
#   -object {JSON tdx-guest}: runtime.md §4 (given as JSON because quote-generation-socket is a
#     SocketAddress; sept-ve-disable as Kata; mrconfigid base64 of 48 bytes = initdata digest, §3)
#   -cpu host, -bios OVMF.inteltdx.fd (TDVF): runtime.md §4, QEMU docs system/i386/tdx
",
        cfg: c,
    });

    let mut c = VmConfig::new("se", format!("{GUEST}/se-image.img"), "/run/cloister/vms/se");
    c.vcpus = 2;
    c.accel = Accel::Kvm;
    c.tee = TeeKind::Se(SeConfig::default());
    c.channel = Channel::VirtioSerial { socket: "/run/cloister/vms/se/agent.sock".into() };
    v.push(Case {
        name: "se",
        title: "IBM Secure Execution (qemu-system-s390x): one SE image holds kernel, initrd and cmdline",
        sources: "\
#   -machine s390-ccw-virtio,accel=kvm,confidential-guest-support=pv0 -object s390-pv-guest,id=pv0:
#     runtime.md §4 (IBM SE); -kernel = the SE image built with genprotimg/pvimg
#   virtio-serial-ccw,iommu_platform=on: runtime.md §4 (\"devices need iommu_platform=on\")
",
        cfg: c,
    });

    let mut c = base("emulated-snp");
    c.accel = Accel::Tcg;
    c.initdata = Some(InitDataSource::Toml(INITDATA.into()));
    c.tee = TeeKind::EmulatedSnp(EmulatedConfig {
        endpoint: "/run/cloister/vms/emulated-snp/emulated-psp.sock".into(),
        reference_firmware: Some("/usr/share/ovmf/OVMF.amdsev.fd".into()),
        snp: SnpConfig::default(),
    });
    v.push(Case {
        name: "emulated-snp",
        title: "emulated SEV-SNP: a plain TCG VM plus a port to the `cloister emulate serve` endpoint",
        sources: "\
#   as plain-tcg.argv (no sev-snp-guest object: nothing is encrypted), plus
#   -chardev socket,id=tee,path=<endpoint> (client) + virtserialport name=cloister.tee.0: the guest
#     asks the emulated PSP for reports (cloister-emulate service.rs wire format); MEASUREMENT and
#     HOST_DATA are fixed by the endpoint, computed by expected_measurement() against reference_firmware
",
        cfg: c,
    });

    let mut c = base("emulated-tdx");
    c.accel = Accel::Tcg;
    c.channel = Channel::None;
    c.tee = TeeKind::EmulatedTdx(EmulatedConfig {
        endpoint: "/run/cloister/vms/emulated-tdx/emulated-tdx.sock".into(),
        reference_firmware: Some("/usr/share/ovmf/OVMF.inteltdx.fd".into()),
        snp: SnpConfig::default(),
    });
    v.push(Case {
        name: "emulated-tdx",
        title: "emulated TDX: a plain TCG VM, no agent channel, a port to the emulated TDX endpoint",
        sources: "\
#   as emulated-snp.argv; virtio-serial-pci is added for the endpoint port even without an agent channel
",
        cfg: c,
    });
    v
}

fn render(case: &Case) -> String {
    let argv = qemu_argv(&case.cfg).unwrap_or_else(|e| panic!("{}: {e}", case.name));
    let mut out = format!(
        "# {name}: {title}\n\
         # Generated by tests/golden.rs; regenerate with CLOISTER_BLESS=1 cargo test -p cloister-launcher --test golden\n\
         # One argument per line (program not included: {binary} unless configured).\n\
         # Where each option comes from (runtime.md = ../shared/reference/runtime.md):\n{COMMON_SOURCES}{sources}",
        name = case.name,
        title = case.title,
        binary = case.cfg.tee.default_qemu_binary(),
        sources = case.sources,
    );
    for a in argv {
        let s = a.into_string().expect("golden argv is UTF-8");
        assert!(!s.contains('\n'), "argument with a newline");
        out.push_str(&s);
        out.push('\n');
    }
    out
}

/// A line diff (longest common subsequence), `-` expected, `+` actual.
fn diff(expected: &str, actual: &str) -> String {
    let a: Vec<&str> = expected.lines().collect();
    let b: Vec<&str> = actual.lines().collect();
    let mut lcs = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for i in (0..a.len()).rev() {
        for j in (0..b.len()).rev() {
            lcs[i][j] = if a[i] == b[j] { lcs[i + 1][j + 1] + 1 } else { lcs[i + 1][j].max(lcs[i][j + 1]) };
        }
    }
    let clip = |s: &str| if s.len() > 160 { format!("{}… ({} chars)", &s[..160], s.len()) } else { s.to_owned() };
    let (mut i, mut j, mut out) = (0, 0, String::new());
    while i < a.len() || j < b.len() {
        if i < a.len() && j < b.len() && a[i] == b[j] {
            out.push_str(&format!("  {}\n", clip(a[i])));
            i += 1;
            j += 1;
        } else if j < b.len() && (i == a.len() || lcs[i][j + 1] >= lcs[i + 1][j]) {
            out.push_str(&format!("+ {}\n", clip(b[j])));
            j += 1;
        } else {
            out.push_str(&format!("- {}\n", clip(a[i])));
            i += 1;
        }
    }
    out
}

#[test]
fn golden_argv() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
    let bless = std::env::var_os("CLOISTER_BLESS").is_some_and(|v| v == "1");
    let mut failures = Vec::new();
    for case in cases() {
        let path = dir.join(format!("{}.argv", case.name));
        let actual = render(&case);
        if bless {
            std::fs::write(&path, &actual).unwrap();
            eprintln!("blessed {}", path.display());
            continue;
        }
        match std::fs::read_to_string(&path) {
            Ok(expected) if expected == actual => {}
            Ok(expected) => failures.push(format!(
                "{} differs (- expected, + actual):\n{}",
                path.display(),
                diff(&expected, &actual)
            )),
            Err(e) => failures.push(format!("{}: {e} (run with CLOISTER_BLESS=1 to create it)", path.display())),
        }
    }
    assert!(
        failures.is_empty(),
        "{}\nIf the change is intended: CLOISTER_BLESS=1 cargo test -p cloister-launcher --test golden",
        failures.join("\n")
    );
}

#[test]
fn every_golden_file_has_a_case() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
    let names: Vec<String> = cases().iter().map(|c| format!("{}.argv", c.name)).collect();
    for e in std::fs::read_dir(&dir).unwrap() {
        let n = e.unwrap().file_name().into_string().unwrap();
        assert!(names.contains(&n), "{n} in tests/golden has no case in tests/golden.rs");
    }
}

#[test]
fn diff_is_readable() {
    let d = diff("a\nb\nc\n", "a\nx\nc\n");
    assert_eq!(d, "  a\n+ x\n- b\n  c\n");
}
