//! `cloister emulate`: the emulated TEE platform (software-rooted evidence in hardware formats).
//! EMULATED EVIDENCE PROVES NOTHING ABOUT HARDWARE; only a verifier configured with the emulated
//! root accepts it, and it is labelled `emulated_snp` there.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use clap::{Args, Subcommand, ValueEnum};
use cloister_emulate::snp::{EmulatedSnp, SnpReportRequest};
use cloister_evidence::snp::Product;
use serde_json::json;

/// `cloister emulate …`
#[derive(Debug, Subcommand)]
pub enum EmulateCmd {
    /// Generate an emulated AMD chain (ARK, ASK, VCEK) and an emulated Intel DCAP chain (root,
    /// PCK CA, PCK, TCB signing, QE key) into a directory.
    Init(InitArgs),
    /// Print SNP evidence JSON (`{"report","cert_table"}`) for the given report data.
    Report(ReportArgs),
    /// Print the KBS configuration snippet that trusts these emulated roots (SNP, and TDX when
    /// present: writes fresh `tdx-collateral.json` beside them).
    KbsConfig(DirArg),
    /// Serve reports to a guest over a unix socket (the host end of the emulated PSP): the
    /// launch measurement and HOST_DATA are fixed here, the guest chooses only REPORT_DATA.
    /// With `--tee se`, the emulated IBM SE machine's Ultravisor answers attestation requests
    /// for the image header made by `init`.
    Serve(ServeArgs),
    /// Serve the emulated TD Quote Generation Service on a unix socket: Intel's QGS protocol,
    /// quoting TDREPORTs MACed by this emulated platform (QEMU's `quote-generation-socket`, or
    /// a guest's `/dev/tdx_guest` attester through a vsock proxy).
    Qgs(QgsArgs),
}

/// `emulate qgs`.
#[derive(Debug, Args)]
pub struct QgsArgs {
    /// Platform directory made by `emulate init`.
    #[arg(long)]
    dir: PathBuf,
    /// Unix socket to listen on.
    #[arg(long)]
    socket: PathBuf,
}

/// Which emulated platform `emulate serve` stands in for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ServeTee {
    /// SEV-SNP: reports for the given launch measurement and initdata.
    Snp,
    /// IBM SE: the Ultravisor's answers to attestation requests.
    Se,
}

/// `emulate serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Platform directory made by `emulate init`.
    #[arg(long)]
    dir: PathBuf,
    /// Unix socket to listen on (QEMU: the chardev of a virtio-serial port).
    #[arg(long)]
    socket: PathBuf,
    /// The emulated platform.
    #[arg(long, value_enum, default_value = "snp")]
    tee: ServeTee,
    /// The launch measurement, hex (48 bytes).
    #[arg(long, conflicts_with = "measurement_json")]
    measurement: Option<String>,
    /// The JSON `cloister measure --output json` printed for what the VM is launched with.
    #[arg(long)]
    measurement_json: Option<PathBuf>,
    /// The initdata the VM is launched with (its digest becomes HOST_DATA).
    #[arg(long)]
    initdata: Option<PathBuf>,
    /// Guest policy.
    #[arg(long, default_value = "0x30000")]
    policy: String,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum ProductArg {
    Milan,
    Genoa,
    Turin,
}

/// `emulate init`.
#[derive(Debug, Args)]
pub struct InitArgs {
    /// Directory to create the platform in (must not hold one already).
    #[arg(long)]
    dir: PathBuf,
    /// Processor product to emulate.
    #[arg(long, value_enum, default_value = "milan")]
    product: ProductArg,
}

/// A platform directory.
#[derive(Debug, Args)]
pub struct DirArg {
    /// Platform directory made by `emulate init`.
    #[arg(long)]
    dir: PathBuf,
}

/// `emulate report`.
#[derive(Debug, Args)]
pub struct ReportArgs {
    /// Platform directory made by `emulate init`.
    #[arg(long)]
    dir: PathBuf,
    /// REPORT_DATA, up to 64 bytes of hex (zero-padded).
    #[arg(long)]
    report_data: String,
    /// MEASUREMENT, 48 bytes of hex (e.g. from `cloister measure`).
    #[arg(long)]
    measurement: Option<String>,
    /// HOST_DATA, 32 bytes of hex (the initdata digest, truncated).
    #[arg(long)]
    host_data: Option<String>,
}

fn hex_fixed<const N: usize>(what: &str, s: &str, pad: bool) -> Result<[u8; N]> {
    let b = hex::decode(s.trim().trim_start_matches("0x")).with_context(|| format!("{what} is not hex"))?;
    if b.len() > N || (!pad && b.len() != N) {
        bail!("{what} must be {} {N} bytes, got {}", if pad { "at most" } else { "exactly" }, b.len());
    }
    let mut out = [0u8; N];
    out[..b.len()].copy_from_slice(&b);
    Ok(out)
}

pub fn run(cmd: EmulateCmd) -> Result<()> {
    match cmd {
        EmulateCmd::Init(a) => {
            if a.dir.join("snp-emulator.json").exists() {
                bail!("{} already holds an emulated platform", a.dir.display());
            }
            let product = match a.product {
                ProductArg::Milan => Product::Milan,
                ProductArg::Genoa => Product::Genoa,
                ProductArg::Turin => Product::Turin,
            };
            eprintln!(
                "WARNING: generating EMULATED SEV-SNP, TDX and IBM SE platforms; their evidence proves nothing about hardware"
            );
            let p = EmulatedSnp::generate(product)?;
            std::fs::create_dir_all(&a.dir).with_context(|| format!("creating {}", a.dir.display()))?;
            p.save(&a.dir)?;
            let tdx = cloister_emulate::tdx::EmulatedTdx::generate()?;
            tdx.save(&a.dir)?;
            let se = cloister_emulate::se::EmulatedSe::generate()?;
            se.save(&a.dir)?;
            outln!("emulated {} platform, TDX platform and IBM SE machine in {}", product.name(), a.dir.display())?;
            outln!("ark sha256 {}", p.ark_sha256_hex())?;
            outln!("tdx root sha256 {}", tdx.root_sha256_hex())?;
            outln!("se root sha256 {}", se.root_sha256_hex())?;
        }
        EmulateCmd::Report(a) => {
            let p = EmulatedSnp::load(&a.dir)?;
            let rd = hex_fixed::<64>("--report-data", &a.report_data, true)?;
            let mut req = SnpReportRequest::new(rd);
            if let Some(m) = &a.measurement {
                req = req.with_measurement(hex_fixed::<48>("--measurement", m, false)?);
            }
            if let Some(h) = &a.host_data {
                req = req.with_host_data(hex_fixed::<32>("--host-data", h, true)?);
            }
            let report = p.report(&req)?;
            let v = json!({"report": STANDARD.encode(report), "cert_table": STANDARD.encode(p.cert_table())});
            outln!("{v}")?;
        }
        EmulateCmd::Serve(a) => serve(a)?,
        EmulateCmd::Qgs(a) => qgs(a)?,
        EmulateCmd::KbsConfig(a) => {
            let p = EmulatedSnp::load(&a.dir)?;
            let ark = a.dir.join("ark.pem");
            outln!("# Trust the EMULATED SEV-SNP root (development only).")?;
            outln!("[[attestation_service.verifier.snp_emulated_roots]]")?;
            outln!("cert = {:?}", ark.display().to_string())?;
            outln!("sha256 = \"{}\"", p.ark_sha256_hex())?;
            outln!("product = \"{}\"", p.product().name())?;
            if cloister_emulate::tdx::EmulatedTdx::exists(&a.dir) {
                // Collateral (TCB info, QE identity, CRLs) freshly signed under the emulated root,
                // valid for 30 days from now: run kbs-config again to renew it.
                let tdx = cloister_emulate::tdx::EmulatedTdx::load(&a.dir)?;
                let collateral = a.dir.join("tdx-collateral.json");
                std::fs::write(&collateral, tdx.collateral_json()?)
                    .with_context(|| format!("writing {}", collateral.display()))?;
                outln!("# Trust the EMULATED TDX root (development only); collateral valid 30 days.")?;
                outln!("[[attestation_service.verifier.tdx_emulated_roots]]")?;
                outln!("cert = {:?}", a.dir.join("tdx-root.pem").display().to_string())?;
                outln!("sha256 = \"{}\"", tdx.root_sha256_hex())?;
                outln!("collateral = {:?}", collateral.display().to_string())?;
            }
            if cloister_emulate::se::EmulatedSe::exists(&a.dir) {
                let se = cloister_emulate::se::EmulatedSe::load(&a.dir)?;
                let path = |f: &str| a.dir.join(f).display().to_string();
                outln!("# Encrypt SE attestation requests to the EMULATED IBM Z machine (development only).")?;
                outln!("[attestation_service.verifier.se]")?;
                outln!("host_key_documents = [{:?}]", path("se-hkd.crt"))?;
                outln!("certs = [{:?}]", path("se-signing.crt"))?;
                outln!("image_header = {:?}", path("se-hdr.bin"))?;
                outln!("[[attestation_service.verifier.se.emulated_roots]]")?;
                outln!("cert = {:?}", path("se-root.crt"))?;
                outln!("sha256 = \"{}\"", se.root_sha256_hex())?;
            }
        }
    }
    Ok(())
}

fn qgs(a: QgsArgs) -> Result<()> {
    let platform = std::sync::Arc::new(cloister_emulate::tdx::EmulatedTdx::load(&a.dir)?);
    serve_unix(&a.socket, "EMULATED TDX quote generation service", "emulated QGS", move |stream| {
        cloister_emulate::qgs::serve_connection(&platform, stream)
    })
}

/// Listens on `socket` (replacing a stale one), warns loudly, prints `serving <socket>` and
/// serves each connection on its own thread with `handle`.
fn serve_unix(
    socket: &std::path::Path,
    what: &str,
    short: &'static str,
    handle: impl Fn(std::os::unix::net::UnixStream) -> std::io::Result<()> + Send + Sync + 'static,
) -> Result<()> {
    let _ = std::fs::remove_file(socket);
    let listener =
        std::os::unix::net::UnixListener::bind(socket).with_context(|| format!("binding {}", socket.display()))?;
    eprintln!("WARNING: {what} serving on {}: its evidence proves nothing about hardware", socket.display());
    outln!("serving {}", socket.display())?;
    let handle = std::sync::Arc::new(handle);
    for stream in listener.incoming() {
        let Ok(stream) = stream else { continue };
        let handle = handle.clone();
        std::thread::spawn(move || {
            if let Err(e) = handle(stream) {
                eprintln!("{short}: connection closed: {e}");
            }
        });
    }
    Ok(())
}

fn serve(a: ServeArgs) -> Result<()> {
    use cloister_emulate::service::{LaunchState, SeEndpoint, SnpEndpoint, serve_endpoint};
    if a.tee == ServeTee::Se {
        if a.measurement.is_some() || a.measurement_json.is_some() || a.initdata.is_some() {
            bail!("--tee se measures the SE image header made by `emulate init`: drop --measurement/--initdata");
        }
        let endpoint = SeEndpoint { platform: std::sync::Arc::new(cloister_emulate::se::EmulatedSe::load(&a.dir)?) };
        return serve_unix(&a.socket, "EMULATED IBM SE machine", "emulated SE", move |stream| {
            serve_endpoint(&endpoint, stream)
        });
    }
    let platform = std::sync::Arc::new(EmulatedSnp::load(&a.dir)?);
    let measurement = match (&a.measurement, &a.measurement_json) {
        (Some(m), _) => hex_fixed::<48>("--measurement", m, false)?,
        (None, Some(p)) => {
            let v: serde_json::Value =
                serde_json::from_slice(&std::fs::read(p).with_context(|| format!("reading {}", p.display()))?)
                    .context("--measurement-json is not JSON")?;
            if v.get("tee").and_then(serde_json::Value::as_str) != Some("snp") {
                bail!("--measurement-json is not an SNP measurement (tee must be \"snp\")");
            }
            let m = v
                .get("measurement")
                .and_then(serde_json::Value::as_str)
                .context("no measurement in --measurement-json")?;
            hex_fixed::<48>("measurement", m, false)?
        }
        (None, None) => bail!("give --measurement or --measurement-json"),
    };
    let host_data = match &a.initdata {
        Some(p) => {
            let text = std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
            cloister_kbs_protocol::initdata::InitData::parse(&text)?.snp_host_data()
        }
        None => [0; 32],
    };
    let policy = u64::from_str_radix(a.policy.trim_start_matches("0x"), 16).context("--policy is not hex")?;
    let launch = LaunchState { measurement, host_data, policy };
    let endpoint = SnpEndpoint { platform, launch };
    serve_unix(&a.socket, "EMULATED SEV-SNP platform", "emulated platform", move |stream| {
        serve_endpoint(&endpoint, stream)
    })
}
