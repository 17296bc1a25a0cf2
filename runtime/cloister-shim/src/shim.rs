//! The containerd-shim lifecycle: `start` spawns the long-running shim (grouped by CRI's
//! sandbox id, so a pod's containers share one shim and one VM), `delete` cleans up after a shim
//! that died, and the serving instance hands containerd the [`Service`].

#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use containerd_shim::api::DeleteResponse;
use containerd_shim::asynchronous::{ExitSignal, spawn};
use containerd_shim::publisher::RemotePublisher;
use containerd_shim::{Config, Error, Flags, StartOpts};

use crate::config::{RuntimeConfig, locate};
use crate::sandbox::run_dir;
use crate::service::Service;
use crate::spec::{CRI_SANDBOX_ID, annotations, read_bundle_spec};

/// The shim.
pub struct Shim {
    namespace: String,
    id: String,
    address: String,
    bundle: PathBuf,
    exit: Arc<ExitSignal>,
}

/// Kills what a dead shim left: the QEMU whose pid file is in the run directory (only if its
/// command line still names that directory: pids are reused), then the directory itself.
pub fn cleanup_run_dir(dir: &Path) {
    if let Ok(pid) = std::fs::read_to_string(dir.join("qemu.pid"))
        && let Ok(pid) = pid.trim().parse::<i32>()
    {
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let needle = dir.as_os_str().as_encoded_bytes();
        if cmdline.windows(needle.len().max(1)).any(|w| w == needle)
            && let Some(pid) = rustix::process::Pid::from_raw(pid)
        {
            tracing::warn!(pid = pid.as_raw_nonzero().get(), "killing the QEMU a dead shim left");
            let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
        }
    }
    if let Err(e) = std::fs::remove_dir_all(dir)
        && e.kind() != std::io::ErrorKind::NotFound
    {
        tracing::warn!(dir = %dir.display(), error = %e, "removing a run directory");
    }
}

#[async_trait]
impl containerd_shim::asynchronous::Shim for Shim {
    type T = Service;

    async fn new(_runtime_id: &str, args: &Flags, _config: &mut Config) -> Self {
        Shim {
            namespace: args.namespace.clone(),
            id: args.id.clone(),
            address: args.address.clone(),
            bundle: if args.bundle.is_empty() {
                std::env::current_dir().unwrap_or_default()
            } else {
                PathBuf::from(&args.bundle)
            },
            exit: Arc::new(ExitSignal::default()),
        }
    }

    async fn start_shim(&mut self, opts: StartOpts) -> Result<String, Error> {
        // CRI puts a pod's containers in one shim (one VM); `ctr run` gets one per container.
        let grouping = read_bundle_spec(&self.bundle)
            .ok()
            .and_then(|s| annotations(&s).get(CRI_SANDBOX_ID).cloned())
            .unwrap_or_else(|| opts.id.clone());
        let mut vars = Vec::new();
        let config = std::env::var(crate::config::CONFIG_ENV).unwrap_or_default();
        if !config.is_empty() {
            vars.push((crate::config::CONFIG_ENV, config.as_str()));
        }
        spawn(opts, &grouping, vars).await
    }

    async fn delete_shim(&mut self) -> Result<DeleteResponse, Error> {
        // After a crash: kill the VM this id started and remove its run directory.
        if let Ok(cfg) = RuntimeConfig::load(&locate(None)) {
            cleanup_run_dir(&run_dir(&cfg, &self.namespace, &self.id));
        }
        let mut resp = DeleteResponse::new();
        resp.exit_status = 137;
        resp.exited_at = containerd_shim::protos::protobuf::MessageField::some(
            containerd_shim::util::timestamp().unwrap_or_default(),
        );
        Ok(resp)
    }

    async fn wait(&mut self) {
        self.exit.wait().await;
    }

    async fn create_task_service(&self, publisher: RemotePublisher) -> Self::T {
        Service::new(&self.namespace, &self.address, self.exit.clone(), publisher)
    }
}
