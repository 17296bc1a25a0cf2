//! `cloister-agent`: the guest agent binary (PID 1 of the guest initrd later). All logic is in
//! the library; this parses arguments, sets up logging and serves.
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context as _;
use clap::Parser;

use cloister_agent::image::{ImageProvider, LocalImages, PullerImages};
use cloister_agent::transport::Listen;
use cloister_agent::{Agent, AgentPolicy, Runner, RunnerConfig};

/// The Cloister guest agent.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Where to serve the agent API: `unix:PATH`, `vsock:PORT` or `serial:/dev/vportNpM`.
    #[arg(long, default_value = "vsock:1024")]
    listen: Listen,
    /// A virtio-serial port to serve (same as `--listen serial:PATH`).
    #[arg(long, conflicts_with = "listen")]
    serial: Option<PathBuf>,
    /// The agent policy (Rego, `package agent_policy`); from initdata's `policy.rego` later.
    #[arg(long)]
    policy: PathBuf,
    /// JSON given to the policy as `data.policy_data` (allow-lists).
    #[arg(long)]
    policy_data: Option<PathBuf>,
    /// State directory (container rootfs and bookkeeping).
    #[arg(long, default_value = "/run/cloister-agent")]
    state_dir: PathBuf,
    /// Serve images from this directory of unpacked root filesystems (`<dir>/<name>`) instead
    /// of pulling them from registries.
    #[arg(long)]
    local_images: Option<PathBuf>,
    /// Registries (`host[:port]`) reached over plain HTTP.
    #[arg(long)]
    insecure_registry: Vec<String>,
    /// cgroup v2 mount under which containers get cgroups.
    #[arg(long, default_value = "/sys/fs/cgroup")]
    cgroup_root: PathBuf,
}

fn main() -> anyhow::Result<()> {
    // The container-init helper: a fresh single-threaded process, no runtime, no logging.
    if std::env::args_os().nth(1).is_some_and(|a| a == cloister_agent::init::SUBCOMMAND) {
        std::process::exit(cloister_agent::init::main());
    }
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .init();
    tokio::runtime::Builder::new_multi_thread().enable_all().build()?.block_on(run(args))
}

async fn run(args: Args) -> anyhow::Result<()> {
    let source = std::fs::read_to_string(&args.policy).with_context(|| format!("reading {}", args.policy.display()))?;
    let data = match &args.policy_data {
        Some(p) => serde_json::from_slice(&std::fs::read(p).with_context(|| format!("reading {}", p.display()))?)
            .with_context(|| format!("parsing {}", p.display()))?,
        None => serde_json::json!({}),
    };
    let id = args.policy.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "policy".into());
    let policy = AgentPolicy::new(&id, &source, data)?;
    std::fs::create_dir_all(&args.state_dir).with_context(|| format!("creating {}", args.state_dir.display()))?;
    let images: Box<dyn ImageProvider> = match &args.local_images {
        Some(dir) => Box::new(LocalImages::new(dir)),
        None => {
            let registry = cloister_image::Registry::new(cloister_image::RegistryOptions {
                insecure_http_hosts: args.insecure_registry.clone(),
                ..Default::default()
            })?;
            let opts =
                cloister_image::PullOptions { layer_store: Some(args.state_dir.join("layers")), ..Default::default() };
            Box::new(PullerImages::new(cloister_image::Puller::new(registry, opts)))
        }
    };
    let runner = Runner::new(RunnerConfig { cgroup_root: args.cgroup_root.clone(), ..Default::default() });
    let agent = Arc::new(Agent::new(policy, runner, images, args.state_dir.clone()));
    let listen = match args.serial {
        Some(p) => Listen::Serial(p),
        None => args.listen,
    };
    tracing::info!(policy = %id, ?listen, "cloister-agent starting");
    let shutdown = agent.shutdown_signal();
    tokio::select! {
        r = cloister_agent::transport::serve(agent, &listen) => r.context("serving")?,
        () = shutdown.notified() => {
            tracing::info!("sandbox destroyed: exiting");
            // Let the DestroySandbox response reach the host before the process ends.
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
    }
    Ok(())
}
