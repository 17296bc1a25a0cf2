//! `cloister-kbs`: runs the key broker. With no arguments it starts on embedded defaults:
//! https://127.0.0.1:8080, a self-signed certificate, an on-disk store and keys under the data
//! directory, and a fresh admin key printed once.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Parser;
use cloister_kbs::Config;
use cloister_kbs::server::{bind, default_data_dir, prepare, serve};

/// mimalloc instead of glibc malloc: under load the broker spent about 13% of its CPU in
/// glibc's malloc and free (`cargo bench -p cloister-kbs --bench flow` uses the same allocator).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(name = "cloister-kbs", version, about = "CoCo-compatible key broker with the bundled Cloister verifier")]
struct Args {
    /// TOML configuration (trustee's section names); defaults apply without it.
    #[arg(long, short = 'c')]
    config_file: Option<PathBuf>,
    /// Where the store, keys and certificate live.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Also write a newly generated admin private key to this file (mode 0600).
    #[arg(long)]
    admin_key_out: Option<PathBuf>,
}

fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_env("CLOISTER_LOG").unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let config = match &args.config_file {
        Some(p) => Config::from_file(p)?,
        None => Config::default(),
    };
    let data_dir = args.data_dir.unwrap_or_else(default_data_dir);
    let prepared = prepare(&config, &data_dir).context("starting the key broker")?;
    if let Some(pem) = &prepared.new_admin_key {
        if let Some(out) = &args.admin_key_out {
            use std::io::Write;
            let mut o = std::fs::OpenOptions::new();
            o.write(true).create_new(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut o, 0o600);
            o.open(out)
                .and_then(|mut f| f.write_all(pem.as_bytes()))
                .with_context(|| format!("writing {}", out.display()))?;
        }
        let public = if config.storage_backend.storage_type == "Postgres" {
            "the shared store".to_owned()
        } else {
            data_dir.join("admin.pub").display().to_string()
        };
        eprintln!(
            "A new admin key was generated (its public half is in {public}). It is shown ONCE; keep it secret:\n{}",
            pem.as_str()
        );
    }
    let listeners = bind(&config)?;
    let scheme = if prepared.tls.is_some() { "https" } else { "http" };
    for l in &listeners {
        println!("listening on {scheme}://{}", l.local_addr()?);
    }
    if let Some(fp) = &prepared.tls_fingerprint {
        println!("tls certificate sha256 {fp}");
    }
    println!("data directory {}", data_dir.display());
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(async move {
        let shutdown = async {
            let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending().await } } => {}
            }
        };
        serve(prepared, listeners, shutdown).await
    })?;
    Ok(())
}
