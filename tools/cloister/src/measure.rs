//! `cloister measure`: flags compatible with sev-snp-measure 0.0.13, plus TDX, RTMR replay,
//! IBM SE header values and the SNP ID block.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use base64::Engine as _;
use clap::{Args, Subcommand, ValueEnum};
use cloister_measure::digest::{Sha256, Sha256Digest, Sha384Digest, default_threads, sha256};
use cloister_measure::hashes::cmdline_digest;
use cloister_measure::id_block::{IdBlock, SignedIdBlock, SnpSigningKey};
use cloister_measure::snp::{self, SnpParams, VcpuSpec, VmmType};
use cloister_measure::tdx::{self, PageOrder};
use cloister_measure::{FirmwareImage, KernelHashes, rtmr, se, sev};
use serde_json::{Map, Value, json};

/// Arguments of `cloister measure`.
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct MeasureArgs {
    #[command(subcommand)]
    sub: Option<MeasureSub>,

    /// Guest mode.
    #[arg(long, value_enum, required = true)]
    mode: Option<Mode>,
    /// Number of guest vCPUs.
    #[arg(long, value_name = "N")]
    vcpus: Option<u32>,
    /// QEMU CPU model of the guest vCPUs (EPYC, EPYC-v1..v4, EPYC-IBPB, EPYC-Rome[-v1..v3],
    /// EPYC-Milan[-v1,-v2], EPYC-Genoa[-v1], EPYC-Turin[-v1,-v2]).
    #[arg(long, value_name = "CPUTYPE")]
    vcpu_type: Option<String>,
    /// Guest vCPU signature (CPUID leaf 1 EAX), decimal or 0x-hex.
    #[arg(long, value_name = "VALUE", value_parser = parse_auto_int)]
    vcpu_sig: Option<u64>,
    /// Guest vCPU family (with --vcpu-model and --vcpu-stepping).
    #[arg(long, value_name = "FAMILY")]
    vcpu_family: Option<u32>,
    /// Guest vCPU model.
    #[arg(long, value_name = "MODEL")]
    vcpu_model: Option<u32>,
    /// Guest vCPU stepping.
    #[arg(long, value_name = "STEPPING")]
    vcpu_stepping: Option<u32>,
    /// Hypervisor whose initial vCPU state is modelled: QEMU, ec2 or gce.
    #[arg(long, value_name = "VMMTYPE", default_value = "QEMU")]
    vmm_type: String,
    /// Firmware image (OVMF, or TDVF for --mode tdx).
    #[arg(long, value_name = "PATH")]
    ovmf: Option<PathBuf>,
    /// Kernel for measured direct boot.
    #[arg(long, value_name = "PATH")]
    kernel: Option<PathBuf>,
    /// Initrd (with --kernel).
    #[arg(long, value_name = "PATH")]
    initrd: Option<PathBuf>,
    /// Kernel command line (with --kernel).
    #[arg(long, value_name = "CMDLINE")]
    append: Option<String>,
    /// SEV_FEATURES the host kernel sets in the VMSA (default 0x1 = SNPActive).
    #[arg(long, value_name = "VALUE", value_parser = parse_auto_int, default_value = "0x1")]
    guest_features: u64,
    /// Print the digest as hex (default) or base64.
    #[arg(long, value_enum, default_value = "hex")]
    output_format: OutputFormat,
    /// Print JSON with the inputs instead of one line.
    #[arg(long, value_enum)]
    output: Option<OutputKind>,
    /// Precomputed firmware digest (from --mode snp:ovmf-hash), hex.
    #[arg(long, value_name = "HASH")]
    snp_ovmf_hash: Option<String>,
    /// Write each measured VMSA to vmsa<N>.bin in the current directory.
    #[arg(long)]
    dump_vmsa: bool,
    /// Coconut-SVSM image (snp:svsm mode).
    #[arg(long, value_name = "PATH")]
    svsm: Option<PathBuf>,
    /// Size of the OVMF variable store in bytes (snp:svsm mode).
    #[arg(long, value_name = "SIZE", conflicts_with = "vars_file")]
    vars_size: Option<u64>,
    /// OVMF variable store file whose size is used (snp:svsm mode).
    #[arg(long, value_name = "PATH")]
    vars_file: Option<PathBuf>,
    /// TDX page order: interleaved (QEMU >= 9, upstream KVM) or add-then-extend (older QEMU).
    #[arg(long, value_name = "ORDER", default_value = "interleaved")]
    tdx_page_order: String,
    /// Say which measurement is printed.
    #[arg(short, long)]
    verbose: bool,
}

#[derive(Debug, Subcommand)]
enum MeasureSub {
    /// Replay a TD event log (CCEL) into RTMR0..3.
    Rtmr(RtmrArgs),
    /// Build and sign an SNP ID block + ID auth (as snp-create-id-block does).
    IdBlock(IdBlockArgs),
    /// Print the reference values of an IBM Secure Execution image header.
    SeHeader(SeHeaderArgs),
}

/// `cloister measure rtmr`.
#[derive(Debug, Args)]
struct RtmrArgs {
    /// The event log (the CCEL log area, e.g. /sys/firmware/acpi/tables/data/CCEL).
    #[arg(long, value_name = "PATH")]
    event_log: PathBuf,
    /// List every event (RTMR, type, digest, description).
    #[arg(short, long)]
    verbose: bool,
    /// Print JSON.
    #[arg(long, value_enum)]
    output: Option<OutputKind>,
}

/// `cloister measure id-block`.
#[derive(Debug, Args)]
struct IdBlockArgs {
    /// Launch digest the platform must see: 96 hex digits or base64 (as snp-create-id-block takes).
    #[arg(long, value_name = "DIGEST")]
    measurement: String,
    /// ID key: P-384 private key, PEM (SEC1 or PKCS#8).
    #[arg(long, value_name = "PEM")]
    id_key: PathBuf,
    /// Author key: P-384 private key, PEM (optional).
    #[arg(long, value_name = "PEM")]
    author_key: Option<PathBuf>,
    /// Guest policy the ID block pins.
    #[arg(long, value_name = "POLICY", value_parser = parse_auto_int, default_value = "0x30000")]
    policy: u64,
    /// FAMILY_ID, 32 hex digits.
    #[arg(long, value_name = "HEX")]
    family_id: Option<String>,
    /// IMAGE_ID, 32 hex digits.
    #[arg(long, value_name = "HEX")]
    image_id: Option<String>,
    /// GUEST_SVN.
    #[arg(long, value_name = "N", default_value_t = 0)]
    guest_svn: u32,
    /// Print JSON (ID block, ID auth, key digests).
    #[arg(long, value_enum)]
    output: Option<OutputKind>,
}

/// `cloister measure se-header`.
#[derive(Debug, Args)]
struct SeHeaderArgs {
    /// An SE image (as genprotimg/pvimg writes it) or a bare header (hdr.bin).
    #[arg(long, value_name = "PATH")]
    image: PathBuf,
    /// Print JSON (trustee RVPS names).
    #[arg(long, value_enum)]
    output: Option<OutputKind>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Mode {
    #[value(name = "sev")]
    Sev,
    #[value(name = "seves")]
    SevEs,
    #[value(name = "snp")]
    Snp,
    #[value(name = "snp:ovmf-hash")]
    SnpOvmfHash,
    #[value(name = "snp:svsm")]
    SnpSvsm,
    #[value(name = "tdx")]
    Tdx,
}

impl Mode {
    fn label(self) -> &'static str {
        match self {
            Mode::Sev => "SEV",
            Mode::SevEs => "SEV_ES",
            Mode::Snp => "SEV_SNP",
            Mode::SnpOvmfHash => "SEV_SNP",
            Mode::SnpSvsm => "SEV_SNP_SVSM",
            Mode::Tdx => "TDX",
        }
    }
    fn cli_name(self) -> &'static str {
        match self {
            Mode::Sev => "sev",
            Mode::SevEs => "seves",
            Mode::Snp => "snp",
            Mode::SnpOvmfHash => "snp:ovmf-hash",
            Mode::SnpSvsm => "snp:svsm",
            Mode::Tdx => "tdx",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum OutputFormat {
    Hex,
    Base64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum OutputKind {
    Json,
}

fn parse_auto_int(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let r = if let Some(h) = t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
        u64::from_str_radix(h, 16)
    } else if let Some(o) = t.strip_prefix("0o") {
        u64::from_str_radix(o, 8)
    } else if let Some(b) = t.strip_prefix("0b") {
        u64::from_str_radix(b, 2)
    } else {
        t.parse()
    };
    r.map_err(|_| format!("'{s}' is not an integer (decimal or 0x-hex)"))
}

/// Reads a whole file, naming it in the error.
pub(crate) fn read_file(what: &str, path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("cannot read {what} '{}'", path.display()))
}

/// SHA-256 of a file, streamed.
fn sha256_file(what: &str, path: &Path) -> Result<Sha256Digest> {
    let mut f = File::open(path).with_context(|| format!("cannot read {what} '{}'", path.display()))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).with_context(|| format!("cannot read {what} '{}'", path.display()))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(h.finish())
}

/// The result of one measurement, ready to print.
struct Outcome {
    tee: &'static str,
    algorithm: &'static str,
    digest: Vec<u8>,
    inputs: Map<String, Value>,
    vmsas: Vec<[u8; 4096]>,
}

/// Runs `cloister measure`.
pub fn run(args: MeasureArgs) -> Result<()> {
    if let Some(sub) = args.sub {
        return match sub {
            MeasureSub::Rtmr(a) => run_rtmr(a),
            MeasureSub::IdBlock(a) => run_id_block(a),
            MeasureSub::SeHeader(a) => run_se_header(a),
        };
    }
    let Some(mode) = args.mode else { bail!("--mode is required") };
    let out = measure(mode, &args)?;
    if args.dump_vmsa {
        for (i, v) in out.vmsas.iter().enumerate() {
            let name = format!("vmsa{i}.bin");
            std::fs::write(&name, v).with_context(|| format!("cannot write {name}"))?;
        }
    }
    let text = match (mode, args.output_format) {
        // sev-snp-measure prints the OVMF hash as hex whatever the output format.
        (Mode::SnpOvmfHash, _) | (_, OutputFormat::Hex) => hex::encode(&out.digest),
        (_, OutputFormat::Base64) => base64::engine::general_purpose::STANDARD.encode(&out.digest),
    };
    if args.output == Some(OutputKind::Json) {
        let v = json!({
            "tee": out.tee,
            "mode": mode.cli_name(),
            "algorithm": out.algorithm,
            "measurement": text,
            "inputs": Value::Object(out.inputs),
        });
        outln!("{}", serde_json::to_string_pretty(&v)?)?;
    } else if args.verbose && mode != Mode::SnpOvmfHash {
        outln!("Calculated {} guest measurement: {text}", mode.label())?;
    } else {
        outln!("{text}")?;
    }
    Ok(())
}

fn measure(mode: Mode, a: &MeasureArgs) -> Result<Outcome> {
    let Some(ovmf_path) = a.ovmf.as_deref() else { bail!("--ovmf is required") };
    let mut inputs = Map::new();
    inputs.insert("ovmf".into(), json!(ovmf_path.display().to_string()));

    if mode == Mode::Tdx {
        let Some(order) = PageOrder::from_cli_name(&a.tdx_page_order) else {
            bail!("unknown --tdx-page-order '{}' (interleaved or add-then-extend)", a.tdx_page_order);
        };
        let bytes = read_file("firmware", ovmf_path)?;
        let d = tdx::mrtd(&bytes, order)?;
        inputs.insert("tdx_page_order".into(), json!(order.cli_name()));
        return Ok(Outcome { tee: "tdx", algorithm: "sha384", digest: d.0.to_vec(), inputs, vmsas: vec![] });
    }

    let threads = default_threads();
    if mode == Mode::SnpOvmfHash {
        let bytes = read_file("firmware", ovmf_path)?;
        let fw = FirmwareImage::parse(&bytes).context("firmware")?;
        let d = snp::ovmf_hash(&fw, threads).context("firmware")?;
        return Ok(Outcome { tee: "snp", algorithm: "sha384", digest: d.0.to_vec(), inputs, vmsas: vec![] });
    }
    if a.kernel.is_none() && a.initrd.is_some() {
        bail!("--kernel required when using --initrd");
    }
    if a.kernel.is_none() && a.append.as_deref().is_some_and(|s| !s.is_empty()) {
        bail!("--kernel required when using --append");
    }
    if a.dump_vmsa && mode == Mode::Sev {
        bail!("--dump-vmsa is not available in mode sev (no VMSAs are measured)");
    }
    if a.snp_ovmf_hash.is_some() && mode != Mode::Snp {
        bail!("--snp-ovmf-hash only works with --mode snp");
    }
    if mode != Mode::Sev && a.vcpus.is_none() {
        bail!("missing --vcpus N in guest mode '{}'", mode.cli_name());
    }
    let vmm = VmmType::from_name(&a.vmm_type)?;
    let spec = VcpuSpec {
        family: a.vcpu_family,
        model: a.vcpu_model,
        stepping: a.vcpu_stepping,
        sig: a.vcpu_sig,
        type_name: a.vcpu_type.clone(),
    };
    let vcpu_sig = if mode == Mode::Sev { None } else { spec.resolve()? };
    if mode != Mode::Sev && vcpu_sig.is_none() && vmm == VmmType::Qemu {
        bail!("missing --vcpu-type or --vcpu-sig or --vcpu-family in guest mode '{}'", mode.cli_name());
    }
    let vcpus = a.vcpus.unwrap_or(0);

    // Firmware, kernel and initrd are independent: read and hash them concurrently.
    let (fw_bytes, kernel_hashes) = std::thread::scope(|s| -> Result<_> {
        let kernel = a.kernel.as_deref().map(|p| s.spawn(move || sha256_file("kernel", p)));
        let initrd = a.initrd.as_deref().map(|p| s.spawn(move || sha256_file("initrd", p)));
        let fw = read_file("firmware", ovmf_path);
        let join = |h: std::thread::ScopedJoinHandle<'_, Result<Sha256Digest>>| {
            h.join().map_err(|_| anyhow::anyhow!("file hashing thread failed"))?
        };
        let initrd = initrd.map(join).transpose()?;
        let hashes = kernel.map(join).transpose()?.map(|kernel| KernelHashes {
            kernel,
            initrd: initrd.unwrap_or_else(|| sha256(b"")),
            cmdline: cmdline_digest(a.append.as_deref()),
        });
        Ok((fw?, hashes))
    })?;
    if let Some(k) = &kernel_hashes {
        inputs.insert("kernel_sha256".into(), json!(k.kernel.to_hex()));
        inputs.insert("initrd_sha256".into(), json!(k.initrd.to_hex()));
        inputs.insert("cmdline_sha256".into(), json!(k.cmdline.to_hex()));
        inputs.insert("append".into(), json!(a.append.clone().unwrap_or_default()));
    }
    let fw = FirmwareImage::parse(&fw_bytes).context("firmware")?;
    if mode != Mode::Sev {
        inputs.insert("vcpus".into(), json!(vcpus));
        inputs.insert("vcpu_sig".into(), json!(vcpu_sig.map(|s| format!("{s:#x}"))));
        inputs.insert("vmm_type".into(), json!(vmm.name()));
    }
    match mode {
        Mode::Sev => {
            let d = sev::sev_launch_digest(&fw, kernel_hashes.as_ref())?;
            Ok(Outcome { tee: "sev", algorithm: "sha256", digest: d.0.to_vec(), inputs, vmsas: vec![] })
        }
        Mode::SevEs => {
            let (d, vmsas) = sev::seves_launch_digest(&fw, kernel_hashes.as_ref(), vcpus, vcpu_sig, vmm)?;
            Ok(Outcome { tee: "sev-es", algorithm: "sha256", digest: d.0.to_vec(), inputs, vmsas })
        }
        Mode::Snp => {
            let ovmf_hash =
                a.snp_ovmf_hash.as_deref().map(Sha384Digest::from_hex).transpose().context("--snp-ovmf-hash")?;
            inputs.insert("guest_features".into(), json!(format!("{:#x}", a.guest_features)));
            if let Some(h) = &ovmf_hash {
                inputs.insert("snp_ovmf_hash".into(), json!(h.to_hex()));
            }
            let p =
                SnpParams { vcpus, vcpu_sig, guest_features: a.guest_features, vmm, kernel_hashes, ovmf_hash, threads };
            let (d, vmsas) = snp::launch_digest_with_vmsas(&fw, &p)?;
            Ok(Outcome { tee: "snp", algorithm: "sha384", digest: d.0.to_vec(), inputs, vmsas })
        }
        Mode::SnpSvsm => {
            if vmm != VmmType::Qemu {
                bail!("snp:svsm mode is only defined for VMM type QEMU");
            }
            let Some(svsm_path) = a.svsm.as_deref() else { bail!("snp:svsm mode requires --svsm") };
            let vars_size = match (a.vars_size, a.vars_file.as_deref()) {
                (_, Some(p)) => {
                    std::fs::metadata(p).with_context(|| format!("cannot read vars file '{}'", p.display()))?.len()
                }
                (Some(n), None) if n > 0 => n,
                _ => bail!("snp:svsm mode requires --vars-size or --vars-file"),
            };
            let svsm = read_file("SVSM image", svsm_path)?;
            let sig = vcpu_sig.unwrap_or(0);
            inputs.insert("svsm".into(), json!(svsm_path.display().to_string()));
            inputs.insert("vars_size".into(), json!(vars_size));
            let (d, vmsas) = snp::svsm_launch_digest(&fw_bytes, &svsm, vars_size, vcpus, sig, threads)?;
            Ok(Outcome { tee: "snp", algorithm: "sha384", digest: d.0.to_vec(), inputs, vmsas })
        }
        Mode::SnpOvmfHash | Mode::Tdx => bail!("unreachable mode"),
    }
}

fn run_rtmr(a: RtmrArgs) -> Result<()> {
    let bytes = read_file("event log", &a.event_log)?;
    let log = rtmr::parse_event_log(&bytes)?;
    let rtmrs = log.replay();
    if a.output == Some(OutputKind::Json) {
        let events: Vec<Value> = log
            .events
            .iter()
            .map(|e| {
                json!({
                    "mr_index": e.mr_index,
                    "rtmr": e.rtmr(),
                    "type": e.type_name(),
                    "type_value": e.event_type,
                    "digest": e.digest.map(|d| d.to_hex()),
                    "description": e.describe(),
                })
            })
            .collect();
        let mut v = json!({
            "tee": "tdx",
            "algorithm": "sha384",
            "rtmr": rtmrs.iter().map(|r| r.to_hex()).collect::<Vec<_>>(),
        });
        if a.verbose {
            v["events"] = Value::Array(events);
        }
        outln!("{}", serde_json::to_string_pretty(&v)?)?;
        return Ok(());
    }
    if a.verbose {
        for e in &log.events {
            let rtmr = e.rtmr().map_or_else(|| "-".to_owned(), |r| r.to_string());
            let digest = e.digest.map_or_else(|| "-".to_owned(), |d| d.to_hex());
            outln!("rtmr{rtmr} {:<36} {digest} {}", e.type_name(), e.describe())?;
        }
    }
    for (i, r) in rtmrs.iter().enumerate() {
        outln!("rtmr{i} {}", r.to_hex())?;
    }
    Ok(())
}

fn parse_id(what: &str, s: Option<&str>) -> Result<[u8; 16]> {
    let mut out = [0u8; 16];
    if let Some(s) = s {
        hex::decode_to_slice(s.trim(), &mut out).with_context(|| format!("{what} must be 32 hex digits"))?;
    }
    Ok(out)
}

fn run_id_block(a: IdBlockArgs) -> Result<()> {
    let m = a.measurement.trim();
    let m = m.strip_prefix("0x").unwrap_or(m);
    let digest = if m.len() == 96 && m.chars().all(|c| c.is_ascii_hexdigit()) {
        Sha384Digest::from_hex(m)?
    } else {
        let raw = base64::engine::general_purpose::STANDARD
            .decode(m)
            .context("--measurement is neither 96 hex digits nor base64")?;
        Sha384Digest::from_slice(&raw).with_context(|| format!("--measurement must be 48 bytes, got {}", raw.len()))?
    };
    let load = |what: &str, p: &Path| -> Result<SnpSigningKey> {
        let pem = std::fs::read_to_string(p).with_context(|| format!("cannot read {what} '{}'", p.display()))?;
        SnpSigningKey::from_pem(&pem).with_context(|| format!("{what} '{}'", p.display()))
    };
    let id_key = load("ID key", &a.id_key)?;
    let author_key = a.author_key.as_deref().map(|p| load("author key", p)).transpose()?;
    let mut block = IdBlock::new(digest, a.policy);
    block.family_id = parse_id("--family-id", a.family_id.as_deref())?;
    block.image_id = parse_id("--image-id", a.image_id.as_deref())?;
    block.guest_svn = a.guest_svn;
    let signed = SignedIdBlock::sign(block, &id_key, author_key.as_ref())?;
    let summary = signed.summary();
    if a.output == Some(OutputKind::Json) {
        let v = json!({
            "id_block": signed.id_block_base64(),
            "id_auth": signed.id_auth_base64(),
            "author_key_enabled": signed.author_key_enabled(),
            "id_key_digest": summary.id_key_digest.to_hex(),
            "author_key_digest": summary.author_key_digest.map(|d| d.to_hex()),
            "launch_digest": summary.launch_digest.to_hex(),
            "policy": format!("{:#x}", summary.policy),
        });
        outln!("{}", serde_json::to_string_pretty(&v)?)?;
    } else {
        outln!("id_block: {}", signed.id_block_base64())?;
        outln!("id_auth: {}", signed.id_auth_base64())?;
        outln!("id_key_digest: {}", summary.id_key_digest.to_hex())?;
        if let Some(d) = summary.author_key_digest {
            outln!("author_key_digest: {}", d.to_hex())?;
        }
        outln!("qemu: {}", signed.qemu_properties())?;
    }
    Ok(())
}

fn run_se_header(a: SeHeaderArgs) -> Result<()> {
    let bytes = read_file("SE image", &a.image)?;
    let h = se::parse_se_header(&bytes)?;
    let rv = h.reference_values();
    if a.output == Some(OutputKind::Json) {
        let v = json!({
            "tee": "se",
            "header_offset": h.offset,
            "version": format!("{:#x}", h.version),
            "header_size": h.header_size,
            "pcf": format!("{:#x}", h.pcf),
            "pld": h.pld.to_hex(),
            "ald": h.ald.to_hex(),
            "tld": h.tld.to_hex(),
            "reference_values": serde_json::from_str::<Value>(&rv.to_json())?,
        });
        outln!("{}", serde_json::to_string_pretty(&v)?)?;
    } else {
        outln!("header_offset: {:#x}", h.offset)?;
        outln!("version: {:#x}", h.version)?;
        outln!("header_size: {}", h.header_size)?;
        outln!("pcf: {:#x}", h.pcf)?;
        outln!("pld: {}", h.pld.to_hex())?;
        outln!("ald: {}", h.ald.to_hex())?;
        outln!("tld: {}", h.tld.to_hex())?;
        outln!("se.tag: {}", rv.tag_hex())?;
        for p in &rv.image_phkh {
            outln!("se.image_phkh: {}", p.to_hex())?;
        }
    }
    Ok(())
}
