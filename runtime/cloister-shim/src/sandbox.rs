//! One pod's VM: launched with the handler's configuration and the pod's initdata, its guest
//! agent reached over the virtio-serial channel, and — for the emulated SNP handler — the
//! emulated platform endpoint served by the shim itself with the launch measurement it computed
//! for exactly what it started.
//!
//! Cleanup is unconditional: [`Sandbox::shutdown`] asks the agent to power off, then QEMU's
//! process group is killed and the run directory removed, whatever state the guest is in.

#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use cloister_agent::AgentClient;
use cloister_agent::ttrpc::Code;
use cloister_launcher::qemu::process::log_tail;
use cloister_launcher::{
    Accel, Channel, EmulatedConfig, InitDataSource, LaunchMeasurement, Launcher, Network, QemuLauncher, RunningVm,
    SnpConfig, TeeKind, VmConfig,
};

use crate::config::{AccelName, NetworkName, RuntimeConfig, TeeName};

/// Why a sandbox could not be started.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SandboxError {
    /// The configuration cannot describe a VM.
    #[error("{0}")]
    Config(String),
    /// QEMU could not be started.
    #[error("starting the VM: {0}")]
    Launch(#[from] cloister_launcher::LaunchError),
    /// The emulated platform endpoint could not be set up.
    #[error("emulated platform: {0}")]
    Emulated(String),
    /// The guest agent did not answer in time.
    #[error("the guest agent did not answer within {timeout:?}; guest console:\n{console}")]
    NotReady {
        /// The boot timeout.
        timeout: Duration,
        /// The end of the guest console.
        console: String,
    },
    /// QEMU exited before the agent answered.
    #[error("the VM exited before its agent answered ({status}); QEMU log:\n{qemu_log}\nguest console:\n{console}")]
    Exited {
        /// QEMU's exit status.
        status: String,
        /// The end of QEMU's log.
        qemu_log: String,
        /// The end of the guest console.
        console: String,
    },
    /// Talking to the agent failed.
    #[error("guest agent: {0}")]
    Agent(#[from] cloister_agent::ClientError),
    /// A file operation failed.
    #[error("{what}: {source}")]
    Io {
        /// What was done.
        what: String,
        /// The error.
        source: std::io::Error,
    },
}

/// A running pod VM.
pub struct Sandbox {
    /// The pod / sandbox id.
    pub id: String,
    vm: Mutex<Option<RunningVm>>,
    agent: AgentClient,
    run_dir: PathBuf,
    pid: u32,
    measurement: LaunchMeasurement,
    console: PathBuf,
    boot: Duration,
}

impl std::fmt::Debug for Sandbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sandbox").field("id", &self.id).field("pid", &self.pid).finish_non_exhaustive()
    }
}

/// The run directory of sandbox `id` in `namespace` (short: UNIX socket paths are limited).
pub fn run_dir(cfg: &RuntimeConfig, namespace: &str, id: &str) -> PathBuf {
    use sha2::Digest;
    let h = sha2::Sha256::digest(format!("{namespace}/{id}").as_bytes());
    cfg.run_root().join(&hex::encode(h)[..16])
}

/// The VM configuration for a pod.
pub fn vm_config(
    cfg: &RuntimeConfig,
    id: &str,
    run_dir: &Path,
    initdata: Option<&str>,
) -> Result<VmConfig, SandboxError> {
    let mut vm = VmConfig::new(id.chars().take(64).collect::<String>(), &cfg.guest.kernel, run_dir);
    vm.initrd = cfg.guest.initrd.clone();
    vm.cmdline = cfg.cmdline().map_err(|e| SandboxError::Config(e.to_string()))?;
    vm.firmware = cfg.guest.firmware.clone();
    vm.vcpus = cfg.vm.vcpus;
    vm.memory_mib = cfg.vm.memory_mib;
    vm.accel = match cfg.vm.accel {
        AccelName::Auto => Accel::Auto,
        AccelName::Kvm => Accel::Kvm,
        AccelName::Tcg => Accel::Tcg,
    };
    vm.network = match cfg.vm.network {
        NetworkName::User => Network::User,
        NetworkName::None => Network::None,
    };
    vm.channel = Channel::VirtioSerial { socket: run_dir.join("agent.sock") };
    vm.initdata = initdata.map(|t| InitDataSource::Toml(t.to_owned()));
    vm.deliver_initdata = true;
    vm.tee = match cfg.vm.tee {
        TeeName::None => TeeKind::None,
        TeeName::Snp => TeeKind::SevSnp(SnpConfig::default()),
        TeeName::Tdx => TeeKind::Tdx(Default::default()),
        TeeName::Se => TeeKind::Se(Default::default()),
        TeeName::EmulatedSnp => {
            let e = cfg.emulated.as_ref().ok_or_else(|| SandboxError::Config("no [emulated] section".into()))?;
            let mut snp = SnpConfig::default();
            if let Some(p) = e.policy {
                snp.policy = p;
            }
            TeeKind::EmulatedSnp(EmulatedConfig {
                endpoint: run_dir.join("tee.sock"),
                reference_firmware: Some(e.reference_firmware.clone()),
                snp,
            })
        }
        TeeName::EmulatedTdx => {
            let e = cfg.emulated.as_ref().ok_or_else(|| SandboxError::Config("no [emulated] section".into()))?;
            TeeKind::EmulatedTdx(EmulatedConfig {
                endpoint: run_dir.join("tee.sock"),
                reference_firmware: Some(e.reference_firmware.clone()),
                snp: SnpConfig::default(),
            })
        }
    };
    vm.validate().map_err(|e| SandboxError::Config(e.to_string()))?;
    Ok(vm)
}

/// Serves the emulated platform (SNP or TDX) on `vm`'s endpoint socket, for the life of the shim
/// (one shim per pod): SNP reports with the launch measurement of `vm` and its initdata digest as
/// HOST_DATA; TDX quotes with the reference TDVF's MRTD and the initdata digest as MRCONFIGID.
fn serve_emulated(cfg: &RuntimeConfig, vm: &VmConfig) -> Result<LaunchMeasurement, SandboxError> {
    use cloister_emulate::service::{Endpoint, LaunchState, SnpEndpoint, TdxEndpoint, TdxLaunchState, serve_endpoint};
    let section = cfg.emulated.as_ref().ok_or_else(|| SandboxError::Emulated("no [emulated] section".into()))?;
    let measurement = cloister_launcher::expected_measurement(vm)
        .map_err(|err| SandboxError::Emulated(format!("computing the launch measurement: {err}")))?;
    let dir = &section.platform_dir;
    let loading =
        |err: cloister_emulate::EmulateError| SandboxError::Emulated(format!("loading {}: {err}", dir.display()));
    let (endpoint, name, shown): (Arc<dyn Endpoint>, _, _) = match (&vm.tee, &measurement) {
        (TeeKind::EmulatedSnp(e), LaunchMeasurement::Snp(m)) => {
            let platform = Arc::new(cloister_emulate::snp::EmulatedSnp::load(dir).map_err(loading)?);
            let host_data = match section.host_data_override().map_err(SandboxError::Config)? {
                Some(lie) => lie,
                None => vm
                    .effective_host_data(&e.snp)
                    .map_err(|err| SandboxError::Config(err.to_string()))?
                    .unwrap_or([0; 32]),
            };
            let launch = LaunchState { measurement: m.measurement.0, host_data, policy: m.policy };
            let shown = format!("measurement {} host_data {}", m.measurement.to_hex(), hex::encode(host_data));
            (Arc::new(SnpEndpoint { platform, launch }), "SEV-SNP", shown)
        }
        (TeeKind::EmulatedTdx(_), LaunchMeasurement::Tdx(m)) => {
            if section.insecure_host_data.is_some() {
                return Err(SandboxError::Config("[emulated] insecure_host_data applies to SNP only".into()));
            }
            let platform = Arc::new(cloister_emulate::tdx::EmulatedTdx::load(dir).map_err(loading)?);
            let launch = TdxLaunchState { mr_td: m.mrtd.0, mr_config_id: m.mrconfigid.unwrap_or([0; 48]) };
            let shown =
                format!("mr_td {} mr_config_id {}", hex::encode(launch.mr_td), hex::encode(launch.mr_config_id));
            (Arc::new(TdxEndpoint { platform, launch }), "TDX", shown)
        }
        _ => return Err(SandboxError::Emulated("not an emulated VM, or no measurement for its TEE".into())),
    };
    let socket = match &vm.tee {
        TeeKind::EmulatedSnp(e) | TeeKind::EmulatedTdx(e) => e.endpoint.clone(),
        _ => return Err(SandboxError::Emulated("not an emulated VM".into())),
    };
    std::fs::create_dir_all(&vm.run_dir)
        .map_err(|source| SandboxError::Io { what: format!("creating {}", vm.run_dir.display()), source })?;
    let _ = std::fs::remove_file(&socket);
    let listener = std::os::unix::net::UnixListener::bind(&socket)
        .map_err(|source| SandboxError::Io { what: format!("binding {}", socket.display()), source })?;
    tracing::warn!(vm = %vm.name, platform = name, launch = %shown,
        "serving the EMULATED platform: its evidence proves nothing about hardware");
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { break };
            let endpoint = endpoint.clone();
            std::thread::spawn(move || {
                if let Err(err) = serve_endpoint(endpoint.as_ref(), stream) {
                    tracing::warn!(error = %err, "emulated platform connection closed");
                }
            });
        }
    });
    Ok(measurement)
}

impl Sandbox {
    /// Launches the VM for pod `id` and waits until its agent answers.
    pub async fn start(
        cfg: &RuntimeConfig,
        namespace: &str,
        id: &str,
        initdata: Option<&str>,
    ) -> Result<Sandbox, SandboxError> {
        let started = Instant::now();
        let run_dir = run_dir(cfg, namespace, id);
        // A leftover from a crashed shim of the same id: nothing in it is reused.
        let _ = std::fs::remove_dir_all(&run_dir);
        std::fs::create_dir_all(&run_dir)
            .map_err(|source| SandboxError::Io { what: format!("creating {}", run_dir.display()), source })?;
        let result = Self::launch(cfg, id, &run_dir, initdata, started).await;
        if result.is_err() {
            let _ = std::fs::remove_dir_all(&run_dir);
        }
        result
    }

    async fn launch(
        cfg: &RuntimeConfig,
        id: &str,
        run_dir: &Path,
        initdata: Option<&str>,
        started: Instant,
    ) -> Result<Sandbox, SandboxError> {
        let vm_cfg = vm_config(cfg, id, run_dir, initdata)?;
        if matches!(vm_cfg.tee, TeeKind::EmulatedSnp(_) | TeeKind::EmulatedTdx(_)) {
            serve_emulated(cfg, &vm_cfg)?;
        }
        let launcher = QemuLauncher { binary: cfg.vm.qemu.clone(), ..QemuLauncher::default() };
        let launch_cfg = vm_cfg.clone();
        let mut vm = tokio::task::spawn_blocking(move || launcher.launch(&launch_cfg))
            .await
            .map_err(|e| SandboxError::Config(format!("launcher task: {e}")))??;
        let pid = vm.pid();
        // For `containerd-shim-cloister-v2 delete` after a crash of this shim.
        let _ = std::fs::write(run_dir.join("qemu.pid"), pid.to_string());
        let measurement = vm.measurement().clone();
        let console = vm.console_log().to_path_buf();
        let qemu_log = vm.qemu_log().to_path_buf();
        tracing::info!(sandbox = id, pid, elapsed = ?started.elapsed(), "QEMU started");

        let socket = run_dir.join("agent.sock");
        let stream = match tokio::net::UnixStream::connect(&socket).await {
            Ok(s) => s,
            Err(source) => {
                let _ = vm.kill();
                return Err(SandboxError::Io { what: format!("connecting to {}", socket.display()), source });
            }
        };
        let agent = AgentClient::new(stream).with_timeout(Some(Duration::from_secs(cfg.vm.request_timeout_secs)));
        // Ready = the first answer: the request waits in the channel until the guest's agent
        // opens its port. Meanwhile, watch QEMU.
        let timeout = cfg.boot_timeout();
        let vm = Mutex::new(Some(vm));
        let ready = async {
            match agent.stats_container("cloister-readiness-probe").await {
                Ok(_) => Ok(()),
                Err(e) if e.code() == Some(Code::NotFound.as_i32()) => Ok(()),
                Err(e) => Err(e),
            }
        };
        let exited = async {
            loop {
                tokio::time::sleep(Duration::from_millis(50)).await;
                let status = {
                    let mut g = vm.lock().unwrap_or_else(PoisonError::into_inner);
                    g.as_mut().and_then(|v| v.try_wait().ok().flatten())
                };
                if let Some(s) = status {
                    return s;
                }
            }
        };
        let outcome = tokio::select! {
            r = tokio::time::timeout(timeout, ready) => match r {
                Ok(Ok(())) => Ok(()),
                Ok(Err(e)) => Err(SandboxError::Agent(e)),
                Err(_) => Err(SandboxError::NotReady { timeout, console: log_tail(&console) }),
            },
            status = exited => Err(SandboxError::Exited {
                status: status.to_string(),
                qemu_log: log_tail(&qemu_log),
                console: log_tail(&console),
            }),
        };
        if let Err(e) = outcome {
            if let Some(mut v) = vm.lock().unwrap_or_else(PoisonError::into_inner).take() {
                let _ = v.kill();
            }
            // A dropped channel usually means QEMU died: say so with its logs.
            return Err(match e {
                SandboxError::Agent(_) => SandboxError::Exited {
                    status: format!("agent channel failed: {e}"),
                    qemu_log: log_tail(&qemu_log),
                    console: log_tail(&console),
                },
                e => e,
            });
        }
        let boot = started.elapsed();
        tracing::info!(sandbox = id, elapsed = ?boot, measurement = ?measurement.hex(), "guest agent ready");
        Ok(Sandbox { id: id.to_owned(), vm, agent, run_dir: run_dir.to_owned(), pid, measurement, console, boot })
    }

    /// The agent.
    pub fn agent(&self) -> &AgentClient {
        &self.agent
    }

    /// QEMU's pid (what containerd sees as the task's pid).
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// From the launch request to the agent's first answer.
    pub fn boot_time(&self) -> Duration {
        self.boot
    }

    /// The step timings of the guest (the agent's `GetMetrics`) with the VM's boot time, as one
    /// JSON object of seconds: `vm_boot_s`, `attestation_s`, `key_release_s`, `image_pull_s`,
    /// `container_create_s` (the guest's steps only when they ran). `None` when the agent does
    /// not answer.
    pub async fn step_timings(&self) -> Option<serde_json::Value> {
        let text = self.agent.get_metrics().await.ok()?;
        let mut out = serde_json::Map::new();
        out.insert("vm_boot_s".into(), self.boot.as_secs_f64().into());
        for (step, secs) in cloister_agent::metrics::last_seconds(&text) {
            out.insert(format!("{step}_s"), secs.into());
        }
        Some(serde_json::Value::Object(out))
    }

    /// The launch measurement computed for this VM.
    pub fn measurement(&self) -> &LaunchMeasurement {
        &self.measurement
    }

    /// The end of the guest console (for error messages).
    pub fn console_tail(&self) -> String {
        log_tail(&self.console)
    }

    /// Whether QEMU is still running.
    pub fn is_running(&self) -> bool {
        let mut g = self.vm.lock().unwrap_or_else(PoisonError::into_inner);
        match g.as_mut() {
            Some(v) => matches!(v.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Powers the guest off (DestroySandbox), waits for QEMU up to `grace`, then kills its process
    /// group and removes the run directory. Idempotent.
    pub async fn shutdown(&self, grace: Duration) {
        if self.is_running() {
            match tokio::time::timeout(grace, self.agent.destroy_sandbox()).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::warn!(sandbox = %self.id, error = %e, "DestroySandbox failed"),
                Err(_) => tracing::warn!(sandbox = %self.id, "DestroySandbox timed out"),
            }
        }
        let vm = self.vm.lock().unwrap_or_else(PoisonError::into_inner).take();
        if let Some(mut vm) = vm {
            let id = self.id.clone();
            let _ = tokio::task::spawn_blocking(move || match vm.wait_timeout(grace) {
                Ok(Some(status)) => tracing::info!(sandbox = %id, %status, "QEMU exited"),
                _ => {
                    tracing::warn!(sandbox = %id, "QEMU still running: killing it");
                    let _ = vm.kill();
                }
            })
            .await;
        }
        if let Err(e) = std::fs::remove_dir_all(&self.run_dir)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(dir = %self.run_dir.display(), error = %e, "removing the run directory");
        }
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        // RunningVm's own Drop kills QEMU's process group.
        let _ = self.vm.lock().unwrap_or_else(PoisonError::into_inner).take();
        let _ = std::fs::remove_dir_all(&self.run_dir);
    }
}
