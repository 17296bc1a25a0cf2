//! `cloister-agent`: the guest agent binary (PID 1 of the guest initrd later). All logic is in
//! the library; this parses arguments, sets up logging and serves.
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context as _;
use clap::Parser;

use cloister_agent::guest::{AttestedImages, BrokerKeks, GuestConfig, KbsConfig, check_binding};
use cloister_agent::image::{BrokerPolicy, ImageProvider, LocalImages, PullerFactory, PullerImages};
use cloister_agent::metrics::StepMetrics;
use cloister_agent::transport::Listen;
use cloister_agent::{Agent, AgentPolicy, Runner, RunnerConfig};
use cloister_kbs_client::{Attester, ClientOptions, KbsClient, TrustMode};

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
    /// Initdata (TOML) from the host. Its `policy.rego` replaces `--policy` and its key broker
    /// (`cdh.toml`/`aa.toml`) gates every image pull on attestation. Its digest is checked
    /// against the TEE evidence first; a mismatch makes the agent refuse every request.
    #[arg(long)]
    initdata: Option<PathBuf>,
    /// The virtio-serial port of the emulated TEE endpoint (`cloister.tee.0`); used only when
    /// this machine has no hardware TEE.
    #[arg(long)]
    emulated_tee_port: Option<PathBuf>,
    /// Reach loopback registries (`127.0.0.1[:port]`, `localhost[:port]`) at this address
    /// instead (QEMU user networking: `10.0.2.2`, the host's loopback).
    #[arg(long)]
    registry_loopback_via: Option<String>,
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
    let data = match &args.policy_data {
        Some(p) => serde_json::from_slice(&std::fs::read(p).with_context(|| format!("reading {}", p.display()))?)
            .with_context(|| format!("parsing {}", p.display()))?,
        None => serde_json::json!({}),
    };
    // The TEE: hardware first; the emulated endpoint only where there is none.
    let attester: Option<Arc<dyn Attester>> = match cloister_kbs_client::detect_attester() {
        Ok(a) => Some(a),
        Err(e) => match &args.emulated_tee_port {
            Some(port) => {
                tracing::warn!(port = %port.display(), "no hardware TEE ({e}): using the EMULATED TEE endpoint");
                Some(Arc::new(cloister_kbs_client::EmulatedPortAttester::new(port)))
            }
            None => {
                tracing::info!("no TEE ({e}): the degenerate, non-confidential path");
                None
            }
        },
    };
    let guest = args.initdata.as_deref().map(GuestConfig::load);
    let (mut policy, guest) = match guest {
        None => (load_policy(&args.policy, data)?, None),
        Some(Err(e)) => (AgentPolicy::refuse_all(format!("unusable initdata: {e}"))?, None),
        Some(Ok(g)) => {
            let bound = match &attester {
                Some(a) => {
                    let a = a.clone();
                    let init = g.initdata.clone();
                    tokio::task::spawn_blocking(move || check_binding(&init, a.as_ref())).await?
                }
                None => {
                    tracing::warn!("initdata without a TEE: nothing binds it (degenerate path)");
                    Ok(())
                }
            };
            match bound {
                Err(e) => {
                    tracing::error!(error = %e, "initdata refused");
                    (AgentPolicy::refuse_all(e.to_string())?, None)
                }
                Ok(()) => {
                    let policy = match &g.policy {
                        Some(src) => AgentPolicy::new("initdata", src, data)?,
                        None => load_policy(&args.policy, data)?,
                    };
                    tracing::info!(digest = %hex::encode(&g.initdata.digest), kbs = ?g.kbs.as_ref().map(|k| &k.url), "initdata adopted");
                    (policy, Some(g))
                }
            }
        }
    };
    std::fs::create_dir_all(&args.state_dir).with_context(|| format!("creating {}", args.state_dir.display()))?;
    let metrics = Arc::new(StepMetrics::default());
    // The key broker named by (bound) initdata: every pull is gated on attestation, and layer
    // keys of encrypted images come from it (CoCo's `attestation-agent` key provider).
    let kbs = match guest.as_ref().and_then(|g| g.kbs.as_ref().map(|k| (k, g))) {
        Some((k, g)) => {
            let attester = attester.clone().unwrap_or_else(|| Arc::new(NoTee));
            let client = trust_for(k).and_then(|trust| {
                let opts = ClientOptions { init_data: Some(g.body.clone()), trust, ..Default::default() };
                Ok(KbsClient::new(&k.url, attester, opts)?)
            });
            match client {
                Ok(c) => Some(Arc::new(c)),
                // Bound initdata names a key broker that cannot be reached as configured (e.g.
                // a pinned certificate with an http:// URL): serve, refusing everything with
                // the reason, so the host sees why instead of a guest that never answers.
                Err(e) => {
                    tracing::error!(error = %format!("{e:#}"), "initdata's key broker is unusable");
                    policy = AgentPolicy::refuse_all(format!("initdata's key broker is unusable: {e:#}"))?;
                    None
                }
            }
        }
        None => None,
    };
    let mut images: Box<dyn ImageProvider> = match &args.local_images {
        Some(dir) => Box::new(LocalImages::new(dir)),
        None => {
            let registry = cloister_image::Registry::new(cloister_image::RegistryOptions {
                insecure_http_hosts: args.insecure_registry.clone(),
                loopback_via: args.registry_loopback_via.clone(),
                ..Default::default()
            })?;
            let decrypt = match &kbs {
                Some(client) => BrokerKeks::new(client.clone(), metrics.clone()).decrypt_config(),
                // Without a key broker an encrypted layer stays closed (a typed pull error).
                None => Default::default(),
            };
            let layer_store = args.state_dir.join("layers");
            let make: PullerFactory = Box::new(move |signatures| {
                let opts = cloister_image::PullOptions {
                    layer_store: Some(layer_store.clone()),
                    decrypt: decrypt.clone(),
                    signatures,
                    ..Default::default()
                };
                cloister_image::Puller::new(registry.clone(), opts)
            });
            let images = PullerImages::new(make(None)).with_metrics(metrics.clone());
            match (guest.as_ref().and_then(|g| g.image_policy.clone()), &kbs) {
                (Some(uri), Some(client)) => {
                    tracing::info!(policy = %uri, "image signature policy from the key broker");
                    let secrets = cloister_image::secrets::CdhSecrets(Arc::new(cloister_cdh::Cdh::new(client.clone())));
                    Box::new(images.with_broker_policy(BrokerPolicy { uri, secrets }, make))
                }
                _ => Box::new(images),
            }
        }
    };
    if let Some(client) = kbs {
        images = Box::new(AttestedImages::new(client, images).with_metrics(metrics.clone()));
    }
    let id = policy.id().to_owned();
    let runner = Runner::new(RunnerConfig { cgroup_root: args.cgroup_root.clone(), ..Default::default() });
    let agent = Arc::new(Agent::new(policy, runner, images, args.state_dir.clone()).with_metrics(metrics));
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

fn load_policy(path: &std::path::Path, data: serde_json::Value) -> anyhow::Result<AgentPolicy> {
    let source = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let id = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "policy".into());
    Ok(AgentPolicy::new(&id, &source, data)?)
}

/// The TLS trust for the key broker: its certificate/CA from initdata, else plain HTTP only.
fn trust_for(k: &KbsConfig) -> anyhow::Result<TrustMode> {
    match &k.cert_pem {
        None => Ok(TrustMode::PlainHttpOnly),
        Some(pem) => {
            let ders = cloister_agent::guest::certificates_from_pem(pem)?;
            Ok(TrustMode::Ca(ders))
        }
    }
}

/// The attester when there is no TEE: every attestation fails, saying so.
struct NoTee;

impl Attester for NoTee {
    fn tee(&self) -> cloister_kbs_protocol::Tee {
        cloister_kbs_protocol::Tee::Sample
    }

    fn evidence(&self, _digest: &[u8]) -> Result<serde_json::Value, cloister_kbs_client::AttesterError> {
        Err(cloister_kbs_client::AttesterError::Platform {
            tee: "none",
            detail: "no hardware TEE and no emulated TEE endpoint in this VM".into(),
        })
    }
}
