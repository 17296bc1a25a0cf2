//! `cloister initdata`: what a tenant does with an initdata document before a pod starts —
//! print its digest (the `init_data` reference value, and the HOST_DATA / MRCONFIGID the TEE
//! will report) and encode it as the pod annotation.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use cloister_kbs_protocol::initdata::{ANNOTATION, InitData};
use serde_json::json;

/// `cloister initdata …`
#[derive(Debug, Subcommand)]
pub enum InitDataCmd {
    /// Print the digest (JSON: `digest`, `algorithm`, `snp_host_data`, `tdx_mr_config_id`), or
    /// only the digest's hex with `--hex`.
    Digest(DigestArgs),
    /// Print the pod annotation value (gzip + base64), or `name=value` with `--with-name`.
    Annotation(AnnotationArgs),
}

/// `initdata digest`.
#[derive(Debug, Args)]
pub struct DigestArgs {
    /// The initdata TOML.
    file: PathBuf,
    /// Print only the digest, hex.
    #[arg(long)]
    hex: bool,
}

/// `initdata annotation`.
#[derive(Debug, Args)]
pub struct AnnotationArgs {
    /// The initdata TOML.
    file: PathBuf,
    /// Print `io.katacontainers.config.hypervisor.cc_init_data=<value>` (for `ctr run --annotation`).
    #[arg(long)]
    with_name: bool,
}

fn load(file: &PathBuf) -> Result<(String, InitData)> {
    let body = std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    let parsed = InitData::parse(&body).with_context(|| format!("{}", file.display()))?;
    Ok((body, parsed))
}

pub fn run(cmd: InitDataCmd) -> Result<()> {
    match cmd {
        InitDataCmd::Digest(a) => {
            let (_, init) = load(&a.file)?;
            if a.hex {
                outln!("{}", hex::encode(&init.digest))?;
            } else {
                let v = json!({
                    "algorithm": init.algorithm.name(),
                    "digest": hex::encode(&init.digest),
                    "snp_host_data": hex::encode(init.snp_host_data()),
                    "tdx_mr_config_id": hex::encode(init.tdx_mr_config_id()),
                });
                outln!("{}", serde_json::to_string_pretty(&v)?)?;
            }
        }
        InitDataCmd::Annotation(a) => {
            let (body, _) = load(&a.file)?;
            let value = InitData::annotation_value(&body)?;
            if a.with_name {
                outln!("{ANNOTATION}={value}")?;
            } else {
                outln!("{value}")?;
            }
        }
    }
    Ok(())
}
