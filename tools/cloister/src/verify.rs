//! `cloister verify snp|tdx` and `cloister evidence show`.
//!
//! Exit status: 0 verified, 2 rejected (one line on stderr: `rejected: <check>: <why>`),
//! 1 usage or I/O error.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::{Args, Subcommand, ValueEnum};
use cloister_verifier::snp::{CertSource, KdsDirectory, Product, SnpCertificates, SnpVerifier, VerifyOptions};
use cloister_verifier::tdx::{TdxCollateral, TdxTrustAnchors, TdxVerifier, TdxVerifyOptions};

use crate::measure::read_file;

/// Evidence that failed verification: main maps it to exit status 2.
#[derive(Debug, thiserror::Error)]
#[error("rejected: {check}: {message}")]
pub struct Rejected {
    /// Short name of the failed check.
    pub check: &'static str,
    /// One-line reason.
    pub message: String,
}

/// `cloister verify`.
#[derive(Debug, Subcommand)]
pub enum VerifyCmd {
    /// Verify an AMD SEV-SNP attestation report against the AMD certificate chain.
    Snp(SnpArgs),
    /// Verify an Intel TDX (or SGX) DCAP quote with its collateral.
    Tdx(TdxArgs),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum OutputKind {
    Json,
}

/// `cloister verify snp`.
#[derive(Debug, Args)]
pub struct SnpArgs {
    /// The 1184-byte report.
    #[arg(long, value_name = "FILE")]
    report: PathBuf,
    /// The VCEK or VLEK certificate (DER or PEM).
    #[arg(long, value_name = "FILE", required_unless_present = "kds_dir")]
    vcek: Option<PathBuf>,
    /// ASK/ASVK + ARK bundle (PEM). The ARK must be one of the pinned AMD roots.
    #[arg(long, value_name = "FILE")]
    chain: Option<PathBuf>,
    /// An ARK-signed CRL (DER or PEM) to check the chain against.
    #[arg(long, value_name = "FILE")]
    crl: Option<PathBuf>,
    /// A certificate cache in AMD KDS layout (used when --vcek is not given).
    #[arg(long, value_name = "DIR")]
    kds_dir: Option<PathBuf>,
    /// Check validity at this UNIX time instead of now.
    #[arg(long, value_name = "UNIX")]
    now: Option<u64>,
    /// Accept a guest policy that allows debugging.
    #[arg(long)]
    allow_debug: bool,
    /// Require this product (needed for version-2 reports, which carry no CPUID).
    #[arg(long, value_name = "PRODUCT")]
    product: Option<String>,
    /// Print the verified claims as JSON.
    #[arg(long, value_enum)]
    output: Option<OutputKind>,
}

/// `cloister verify tdx`.
#[derive(Debug, Args)]
pub struct TdxArgs {
    /// The quote.
    #[arg(long, value_name = "FILE")]
    quote: PathBuf,
    /// Collateral in dcap-qvl's QuoteCollateralV3 JSON form.
    #[arg(long, value_name = "FILE")]
    collateral: Option<PathBuf>,
    /// Check validity at this UNIX time instead of now.
    #[arg(long, value_name = "UNIX")]
    now: Option<u64>,
    /// Accept a debug TD.
    #[arg(long)]
    allow_debug: bool,
    /// Replay this CCEL event log and require it to match the quote's RTMRs.
    #[arg(long, value_name = "FILE")]
    event_log: Option<PathBuf>,
    /// Print the verified claims as JSON.
    #[arg(long, value_enum)]
    output: Option<OutputKind>,
}

/// `cloister evidence`.
#[derive(Debug, Subcommand)]
pub enum EvidenceCmd {
    /// Pretty-print an SNP report or a TDX/SGX quote (parsed, not verified).
    Show {
        /// The report or quote.
        file: PathBuf,
    },
    /// Get evidence from this machine's TEE (configfs-tsm) for the given report data and print
    /// the evidence JSON the key broker accepts.
    Get {
        /// REPORT_DATA, up to 64 bytes of hex (zero-padded).
        #[arg(long)]
        report_data: String,
    },
}

fn now_or(now: Option<u64>) -> u64 {
    now.unwrap_or_else(|| std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs()))
}

fn parse_product(s: &str) -> Result<Product> {
    match s.to_ascii_lowercase().as_str() {
        "milan" => Ok(Product::Milan),
        "genoa" => Ok(Product::Genoa),
        "turin" => Ok(Product::Turin),
        _ => anyhow::bail!("unknown product '{s}' (milan, genoa or turin)"),
    }
}

/// Runs `cloister verify`.
pub fn run(cmd: VerifyCmd) -> Result<()> {
    match cmd {
        VerifyCmd::Snp(a) => verify_snp(a),
        VerifyCmd::Tdx(a) => verify_tdx(a),
    }
}

fn verify_snp(a: SnpArgs) -> Result<()> {
    let report = read_file("report", &a.report)?;
    let mut opts = VerifyOptions::at(now_or(a.now)).allow_debug(a.allow_debug);
    if let Some(p) = a.product.as_deref() {
        opts = opts.expect_product(parse_product(p)?);
    }
    if let Some(crl) = a.crl.as_deref() {
        opts = opts.with_crl(&read_file("CRL", crl)?);
    }
    let verifier = SnpVerifier::amd().map_err(|e| anyhow::anyhow!("built-in AMD roots: {e}"))?;
    let certs;
    let dir;
    let source = match a.vcek.as_deref() {
        Some(v) => {
            certs = SnpCertificates::from_files(v, a.chain.as_deref()).map_err(|e| reject_or_io(v, e))?;
            CertSource::Provided(&certs)
        }
        None => {
            dir = KdsDirectory::new(a.kds_dir.clone().unwrap_or_default());
            CertSource::Directory(&dir)
        }
    };
    let verified = verifier
        .verify_with_source(&report, source, &opts)
        .map_err(|e| Rejected { check: e.check(), message: e.to_string() })?;
    if a.output == Some(OutputKind::Json) {
        outln!("{}", serde_json::to_string_pretty(&verified.claims())?)?;
    } else {
        outln!(
            "verified: SNP report v{} ({}, {}), measurement {}",
            verified.report().version,
            verified.product(),
            verified.vek_kind().name(),
            hex::encode(verified.report().measurement.as_ref())
        )?;
    }
    Ok(())
}

/// Certificate files that cannot be read are I/O errors (status 1); unusable ones are rejections.
fn reject_or_io(path: &Path, e: cloister_verifier::snp::SnpVerifyError) -> anyhow::Error {
    if !path.exists() {
        return anyhow::anyhow!("cannot read certificate '{}'", path.display());
    }
    Rejected { check: e.check(), message: e.to_string() }.into()
}

fn verify_tdx(a: TdxArgs) -> Result<()> {
    let quote = read_file("quote", &a.quote)?;
    let collateral = match a.collateral.as_deref() {
        Some(p) => Some(
            TdxCollateral::from_json(&read_file("collateral", p)?)
                .map_err(|e| Rejected { check: e.check(), message: e.to_string() })?,
        ),
        None => None,
    };
    let options = TdxVerifyOptions { allow_debug: a.allow_debug, ..TdxVerifyOptions::default() };
    let verifier = TdxVerifier::new(TdxTrustAnchors::intel(), options);
    let verified = verifier
        .verify(&quote, collateral.as_ref(), now_or(a.now))
        .map_err(|e| Rejected { check: e.check(), message: e.to_string() })?;
    if let Some(log) = a.event_log.as_deref() {
        verified
            .check_event_log(&read_file("event log", log)?)
            .map_err(|e| Rejected { check: e.check(), message: e.to_string() })?;
    }
    let claims = verified.claims();
    if a.output == Some(OutputKind::Json) {
        outln!("{}", serde_json::to_string_pretty(&claims)?)?;
    } else {
        outln!("verified: TDX quote, TCB status {}", claims.get("tcb_status").map_or("?".into(), |v| v.to_string()))?;
    }
    Ok(())
}

/// Runs `cloister evidence`.
pub fn run_evidence(cmd: EvidenceCmd) -> Result<()> {
    let file = match cmd {
        EvidenceCmd::Show { file } => file,
        EvidenceCmd::Get { report_data } => {
            let rd = hex::decode(report_data.trim().trim_start_matches("0x")).context("--report-data is not hex")?;
            if rd.len() > 64 {
                anyhow::bail!("--report-data is {} bytes, at most 64", rd.len());
            }
            let attester = cloister_kbs_client::detect_attester()?;
            let ev = attester.evidence(&rd)?;
            outln!("{}", serde_json::json!({"tee": attester.tee().as_str(), "evidence": ev}))?;
            return Ok(());
        }
    };
    let bytes = read_file("evidence", &file)?;
    if bytes.len() == cloister_evidence::snp::REPORT_SIZE
        && let Ok(r) = cloister_evidence::snp::AttestationReport::from_bytes_lenient(&bytes)
    {
        outln!("SEV-SNP attestation report")?;
        outln!("{}", serde_json::to_string_pretty(&*r)?)?;
        return Ok(());
    }
    match cloister_evidence::tdx::Quote::parse(&bytes) {
        Ok(q) => {
            outln!("DCAP quote")?;
            outln!("{q:#?}")?;
            Ok(())
        }
        Err(e) => Err(anyhow::anyhow!("'{}' is neither an SNP report nor a DCAP quote: {e}", file.display()))
            .context("evidence show"),
    }
}
