//! `grpc.AgentService`: decodes each request, checks it against the agent policy, validates it
//! and acts on it. The order is fixed — decode, policy, validate, act — so nothing the host
//! sends is acted on before the policy has seen it.

#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use prost::Message;
use serde::Serialize;
use tokio::sync::Notify;

use crate::container::{ContainerError, ContainerSpec, Runner};
use crate::image::{ImageError, ImageProvider, PreparedRootfs};
use crate::init::{ExtraMount, ProcessConfig};
use crate::metrics::{Step, StepMetrics};
use crate::policy::{AgentPolicy, rule_for};
use crate::proto::{self, SERVICE};
use crate::server::Handler;
use crate::ttrpc::{Code, Status};

/// Most bytes one `ReadStdout`/`ReadStderr` returns.
pub const MAX_READ: usize = 1 << 20;
/// Most argv or env entries.
pub const MAX_LIST: usize = 4096;
/// Longest single string (argument, env entry, path).
pub const MAX_STRING: usize = 128 * 1024;

/// The agent.
pub struct Agent {
    policy: AgentPolicy,
    runner: Runner,
    images: Box<dyn ImageProvider>,
    state_dir: PathBuf,
    /// Rootfs directories the agent owns, by container.
    rootfs: std::sync::Mutex<std::collections::HashMap<String, PreparedRootfs>>,
    /// Ids with a `CreateContainer` in progress.
    creating: Arc<std::sync::Mutex<std::collections::HashSet<String>>>,
    shutdown: Arc<Notify>,
    metrics: Arc<StepMetrics>,
}

impl std::fmt::Debug for Agent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Agent")
            .field("policy", &self.policy.id())
            .field("state_dir", &self.state_dir)
            .finish_non_exhaustive()
    }
}

/// A failure turned into a ttRPC status.
fn status(code: Code, msg: impl std::fmt::Display) -> Status {
    Status::new(code, msg.to_string())
}

impl From<ContainerError> for Status {
    fn from(e: ContainerError) -> Self {
        let code = match &e {
            ContainerError::NotFound(_) => Code::NotFound,
            ContainerError::AlreadyExists(_) => Code::AlreadyExists,
            ContainerError::State(_) => Code::FailedPrecondition,
            ContainerError::Invalid(_) => Code::InvalidArgument,
            ContainerError::Limit(_) => Code::ResourceExhausted,
            ContainerError::Timeout(_) => Code::DeadlineExceeded,
            _ => Code::Internal,
        };
        status(code, e)
    }
}

impl From<ImageError> for Status {
    fn from(e: ImageError) -> Self {
        let code = match &e {
            ImageError::Reference { .. } => Code::InvalidArgument,
            ImageError::Attestation(_) => Code::PermissionDenied,
            _ => Code::Internal,
        };
        status(code, e)
    }
}

/// A container or exec id: it names directories and cgroups.
pub fn valid_id(id: &str) -> bool {
    let b = id.as_bytes();
    (1..=128).contains(&b.len())
        && b[0].is_ascii_alphanumeric()
        && b.iter().all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'))
}

fn check_id(what: &str, id: &str) -> Result<(), Status> {
    if valid_id(id) {
        Ok(())
    } else {
        Err(status(Code::InvalidArgument, format!("invalid {what} {:?}", id.chars().take(64).collect::<String>())))
    }
}

fn check_exec_id(id: &str) -> Result<(), Status> {
    if id.is_empty() { Ok(()) } else { check_id("exec id", id) }
}

fn check_strings(what: &str, v: &[String]) -> Result<(), Status> {
    if v.len() > MAX_LIST {
        return Err(status(Code::InvalidArgument, format!("too many {what}")));
    }
    if v.iter().any(|s| s.len() > MAX_STRING || s.contains('\0')) {
        return Err(status(Code::InvalidArgument, format!("an entry of {what} is too long or contains NUL")));
    }
    Ok(())
}

/// The runnable process of a spec.
fn process_config(p: Option<&proto::Process>) -> Result<ProcessConfig, Status> {
    let p = p.ok_or_else(|| status(Code::InvalidArgument, "no process"))?;
    if p.terminal {
        return Err(status(Code::InvalidArgument, "terminals are not supported"));
    }
    if p.args.is_empty() || p.args[0].is_empty() {
        return Err(status(Code::InvalidArgument, "no program to run"));
    }
    check_strings("args", &p.args)?;
    check_strings("env", &p.env)?;
    if let Some(bad) = p.env.iter().find(|e| e.split_once('=').is_none_or(|(k, _)| k.is_empty())) {
        return Err(status(
            Code::InvalidArgument,
            format!("env entry {:?} is not NAME=value", bad.chars().take(64).collect::<String>()),
        ));
    }
    let cwd = if p.cwd.is_empty() { "/".to_owned() } else { p.cwd.clone() };
    if !cwd.starts_with('/') || cwd.len() > 4096 || cwd.contains('\0') {
        return Err(status(Code::InvalidArgument, "cwd must be an absolute path"));
    }
    let user = p.user.clone().unwrap_or_default();
    if user.additional_gids.len() > 64 {
        return Err(status(Code::InvalidArgument, "too many groups"));
    }
    Ok(ProcessConfig {
        args: p.args.clone(),
        env: p.env.clone(),
        cwd,
        uid: user.uid,
        gid: user.gid,
        additional_gids: user.additional_gids,
        no_new_privileges: p.no_new_privileges,
    })
}

/// Mounts the agent always provides itself.
const STANDARD_MOUNTS: &[&str] = &["/proc", "/dev", "/dev/pts", "/dev/shm", "/sys"];

/// The spec's mounts that need action: standard ones are provided anyway; `tmpfs`/`mqueue`
/// elsewhere are honoured; anything else (binds of host paths in particular) is refused.
fn extra_mounts(mounts: &[proto::Mount]) -> Result<Vec<ExtraMount>, Status> {
    let mut out = Vec::new();
    for m in mounts {
        // The standard mounts are always there; /sys/fs/cgroup is not exposed to containers.
        if STANDARD_MOUNTS.contains(&m.destination.as_str()) || m.destination == "/sys/fs/cgroup" {
            continue;
        }
        if !m.destination.starts_with('/') || m.destination.len() > 4096 || m.destination.split('/').any(|c| c == "..")
        {
            return Err(status(Code::InvalidArgument, format!("mount destination {:?}", m.destination)));
        }
        match m.r#type.as_str() {
            "tmpfs" | "mqueue" => out.push(ExtraMount { destination: m.destination.clone(), fstype: m.r#type.clone() }),
            other => {
                return Err(status(
                    Code::InvalidArgument,
                    format!(
                        "mount of type {other:?} at {} is not supported (no host filesystem sharing)",
                        m.destination
                    ),
                ));
            }
        }
    }
    if out.len() > 64 {
        return Err(status(Code::InvalidArgument, "too many mounts"));
    }
    Ok(out)
}

fn positive(v: i64) -> Option<u64> {
    u64::try_from(v).ok().filter(|v| *v > 0)
}

fn decode<M: Message + Default>(method: &str, payload: &[u8]) -> Result<M, Status> {
    M::decode(payload).map_err(|e| status(Code::InvalidArgument, format!("{method}: undecodable request: {e}")))
}

fn encode<M: Message>(m: &M) -> Vec<u8> {
    m.encode_to_vec()
}

impl Agent {
    /// An agent.
    pub fn new(policy: AgentPolicy, runner: Runner, images: Box<dyn ImageProvider>, state_dir: PathBuf) -> Self {
        Agent {
            policy,
            runner,
            images,
            state_dir,
            rootfs: Default::default(),
            creating: Default::default(),
            shutdown: Arc::new(Notify::new()),
            metrics: Arc::default(),
        }
    }

    /// Records step timings in `metrics` (shared with the image providers), served by
    /// `GetMetrics`.
    pub fn with_metrics(mut self, metrics: Arc<StepMetrics>) -> Self {
        self.metrics = metrics;
        self
    }

    /// Notified when the host asked for `DestroySandbox` (after every container is gone).
    pub fn shutdown_signal(&self) -> Arc<Notify> {
        self.shutdown.clone()
    }

    fn check<T: Serialize>(&self, method: &str, req: &T) -> Result<(), Status> {
        let rule =
            rule_for(method).ok_or_else(|| status(Code::Unimplemented, format!("unknown method {method:.100}")))?;
        self.policy.check(rule, req).map_err(|d| {
            tracing::warn!(method, %d, "request refused by the agent policy");
            status(Code::PermissionDenied, d)
        })
    }

    fn container_dir(&self, id: &str) -> PathBuf {
        self.state_dir.join("containers").join(id)
    }

    async fn create_container(&self, req: proto::CreateContainerRequest) -> Result<proto::Empty, Status> {
        check_id("container id", &req.container_id)?;
        check_exec_id(&req.exec_id)?;
        if req.sandbox_pidns {
            return Err(status(Code::InvalidArgument, "a sandbox-wide PID namespace is not supported"));
        }
        let spec = req.oci.as_ref().ok_or_else(|| status(Code::InvalidArgument, "no OCI spec"))?;
        let process = process_config(spec.process.as_ref())?;
        let mounts = extra_mounts(&spec.mounts)?;
        if spec.hostname.len() > 64 {
            return Err(status(Code::InvalidArgument, "hostname too long"));
        }
        let reference = proto::image_reference(&req).map_err(|e| status(Code::InvalidArgument, e))?;
        let resources = spec.linux.as_ref().and_then(|l| l.resources.as_ref());
        let id = req.container_id.clone();
        let _reservation = self.reserve(&id)?;
        let started = std::time::Instant::now();

        let dir = self.container_dir(&id);
        if let Err(e) = std::fs::remove_dir_all(&dir)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            return Err(status(Code::Internal, format!("clearing {}: {e}", dir.display())));
        }
        std::fs::create_dir_all(&dir)
            .map_err(|e| status(Code::Internal, format!("creating {}: {e}", dir.display())))?;
        let rootfs = match self.images.prepare(reference, &dir).await {
            Ok(r) => r,
            Err(e) => {
                let _ = std::fs::remove_dir_all(&dir);
                return Err(e.into());
            }
        };
        let spec = ContainerSpec {
            id: id.clone(),
            exec_id: req.exec_id.clone(),
            rootfs: rootfs.path.clone(),
            process,
            hostname: spec.hostname.clone(),
            readonly_root: spec.root.as_ref().is_some_and(|r| r.readonly),
            mounts,
            memory_limit: resources.and_then(|r| r.memory.as_ref()).and_then(|m| positive(m.limit)),
            pids_limit: resources.and_then(|r| r.pids.as_ref()).and_then(|p| positive(p.limit)),
        };
        if let Err(e) = self.runner.create(spec).await {
            let _ = std::fs::remove_dir_all(&dir);
            return Err(e.into());
        }
        self.rootfs.lock().unwrap_or_else(std::sync::PoisonError::into_inner).insert(id, rootfs);
        self.metrics.record(Step::ContainerCreate, started.elapsed());
        Ok(proto::Empty {})
    }

    /// Claims `id` for one `CreateContainer` at a time; released when the guard drops.
    fn reserve(&self, id: &str) -> Result<Reservation, Status> {
        let exists = self.runner.ids().iter().any(|i| i == id)
            || self.rootfs.lock().unwrap_or_else(std::sync::PoisonError::into_inner).contains_key(id);
        let mut creating = self.creating.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if exists || !creating.insert(id.to_owned()) {
            return Err(status(Code::AlreadyExists, format!("container {id} already exists")));
        }
        Ok(Reservation { set: self.creating.clone(), id: id.to_owned() })
    }

    async fn remove_container(&self, id: &str, timeout: u32) -> Result<(), Status> {
        let timeout = Duration::from_secs(if timeout == 0 { 30 } else { u64::from(timeout) });
        self.runner.remove(id, timeout).await?;
        let prepared = self.rootfs.lock().unwrap_or_else(std::sync::PoisonError::into_inner).remove(id);
        let dir = self.container_dir(id);
        if prepared.is_some_and(|r| r.owned && !r.path.starts_with(&dir)) {
            tracing::warn!(container = id, "owned rootfs outside the container directory left in place");
        }
        remove_dir(&dir).await;
        Ok(())
    }

    async fn dispatch(&self, method: &str, payload: &[u8]) -> Result<Vec<u8>, Status> {
        macro_rules! request {
            ($ty:ty) => {{
                let r: $ty = decode(method, payload)?;
                self.check(method, &r)?;
                r
            }};
        }
        match method {
            "CreateContainer" => {
                let r = request!(proto::CreateContainerRequest);
                Ok(encode(&self.create_container(r).await?))
            }
            "StartContainer" => {
                let r = request!(proto::StartContainerRequest);
                check_id("container id", &r.container_id)?;
                self.runner.start(&r.container_id).await?;
                Ok(encode(&proto::Empty {}))
            }
            "ExecProcess" => {
                let r = request!(proto::ExecProcessRequest);
                check_id("container id", &r.container_id)?;
                check_id("exec id", &r.exec_id)?;
                let process = process_config(r.process.as_ref())?;
                self.runner.exec(&r.container_id, &r.exec_id, process).await?;
                Ok(encode(&proto::Empty {}))
            }
            "WaitProcess" => {
                let r = request!(proto::WaitProcessRequest);
                check_id("container id", &r.container_id)?;
                check_exec_id(&r.exec_id)?;
                let st = self.runner.wait(&r.container_id, &r.exec_id).await?;
                Ok(encode(&proto::WaitProcessResponse { status: st }))
            }
            "SignalProcess" => {
                let r = request!(proto::SignalProcessRequest);
                check_id("container id", &r.container_id)?;
                check_exec_id(&r.exec_id)?;
                self.runner.signal(&r.container_id, &r.exec_id, r.signal)?;
                Ok(encode(&proto::Empty {}))
            }
            "ReadStdout" | "ReadStderr" => {
                let r = request!(proto::ReadStreamRequest);
                check_id("container id", &r.container_id)?;
                check_exec_id(&r.exec_id)?;
                let max = if r.len == 0 { 64 * 1024 } else { (r.len as usize).min(MAX_READ) };
                let data = self.runner.read(&r.container_id, &r.exec_id, method == "ReadStderr", max).await?;
                Ok(encode(&proto::ReadStreamResponse { data }))
            }
            "WriteStdin" => {
                let r = request!(proto::WriteStreamRequest);
                check_id("container id", &r.container_id)?;
                check_exec_id(&r.exec_id)?;
                let n = self.runner.write_stdin(&r.container_id, &r.exec_id, &r.data).await?;
                Ok(encode(&proto::WriteStreamResponse { len: u32::try_from(n).unwrap_or(u32::MAX) }))
            }
            "CloseStdin" => {
                let r = request!(proto::CloseStdinRequest);
                check_id("container id", &r.container_id)?;
                check_exec_id(&r.exec_id)?;
                self.runner.close_stdin(&r.container_id, &r.exec_id).await?;
                Ok(encode(&proto::Empty {}))
            }
            "RemoveContainer" => {
                let r = request!(proto::RemoveContainerRequest);
                check_id("container id", &r.container_id)?;
                self.remove_container(&r.container_id, r.timeout).await?;
                Ok(encode(&proto::Empty {}))
            }
            "StatsContainer" => {
                let r = request!(proto::StatsContainerRequest);
                check_id("container id", &r.container_id)?;
                let s = self.runner.stats(&r.container_id)?;
                Ok(encode(&proto::StatsContainerResponse {
                    cgroup_stats: Some(proto::CgroupStats {
                        cpu_stats: Some(proto::CpuStats {
                            cpu_usage: Some(proto::CpuUsage {
                                total_usage: s.cpu_total_ns,
                                usage_in_kernelmode: s.cpu_system_ns,
                                usage_in_usermode: s.cpu_user_ns,
                            }),
                        }),
                        memory_stats: Some(proto::MemoryStats {
                            usage: Some(proto::MemoryData {
                                usage: s.memory_usage,
                                limit: s.memory_limit,
                                ..Default::default()
                            }),
                        }),
                        pids_stats: Some(proto::PidsStats { current: s.pids_current, limit: s.pids_limit }),
                    }),
                }))
            }
            "GetMetrics" => {
                let _r = request!(proto::GetMetricsRequest);
                Ok(encode(&proto::Metrics { metrics: self.metrics.prometheus() }))
            }
            "DestroySandbox" => {
                let _r = request!(proto::DestroySandboxRequest);
                for id in self.runner.ids() {
                    if let Err(e) = self.remove_container(&id, 10).await {
                        tracing::warn!(container = %id, error = %e.message, "could not remove a container");
                    }
                }
                self.shutdown.notify_waiters();
                self.shutdown.notify_one();
                Ok(encode(&proto::Empty {}))
            }
            _ => Err(status(Code::Unimplemented, format!("method {method:.100} is not implemented"))),
        }
    }
}

struct Reservation {
    set: Arc<std::sync::Mutex<std::collections::HashSet<String>>>,
    id: String,
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.set.lock().unwrap_or_else(std::sync::PoisonError::into_inner).remove(&self.id);
    }
}

async fn remove_dir(dir: &Path) {
    let d = dir.to_path_buf();
    let r = tokio::task::spawn_blocking(move || std::fs::remove_dir_all(&d)).await;
    match r {
        Ok(Ok(())) => {}
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::NotFound => {}
        Ok(Err(e)) => tracing::warn!(path = %dir.display(), error = %e, "could not remove a container directory"),
        Err(e) => tracing::warn!(error = %e, "removal task failed"),
    }
}

impl Handler for Agent {
    fn service(&self) -> &str {
        SERVICE
    }

    async fn handle(&self, method: String, payload: Vec<u8>) -> Result<Vec<u8>, Status> {
        let started = std::time::Instant::now();
        let r = self.dispatch(&method, &payload).await;
        match &r {
            Ok(_) => tracing::debug!(%method, elapsed = ?started.elapsed(), "request served"),
            Err(s) => tracing::info!(%method, code = s.code, message = %s.message, "request failed"),
        }
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids() {
        for ok in ["a", "c1", "A.b_c-d", &"x".repeat(128)] {
            assert!(valid_id(ok), "{ok}");
        }
        for bad in ["", ".", "..", "-a", "a/b", "a b", &"x".repeat(129), "é"] {
            assert!(!valid_id(bad), "{bad}");
        }
    }

    #[test]
    fn mounts() {
        let m = |d: &str, t: &str| proto::Mount { destination: d.into(), r#type: t.into(), ..Default::default() };
        assert_eq!(extra_mounts(&[m("/proc", "proc"), m("/sys", "sysfs")]).ok(), Some(vec![]));
        assert_eq!(extra_mounts(&[m("/run", "tmpfs")]).ok().map(|v| v.len()), Some(1));
        assert!(extra_mounts(&[m("/data", "bind")]).is_err());
        assert!(extra_mounts(&[m("/a/../b", "tmpfs")]).is_err());
        assert!(extra_mounts(&[m("rel", "tmpfs")]).is_err());
    }

    #[test]
    fn processes() {
        let p = |args: &[&str], env: &[&str]| proto::Process {
            args: args.iter().map(|s| s.to_string()).collect(),
            env: env.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        };
        assert!(process_config(Some(&p(&["sh"], &["A=1"]))).is_ok());
        assert!(process_config(Some(&p(&[], &[]))).is_err());
        assert!(process_config(Some(&p(&["sh"], &["=x"]))).is_err());
        assert!(process_config(Some(&p(&["sh"], &["NOEQ"]))).is_err());
        assert!(process_config(Some(&p(&["s\0h"], &[]))).is_err());
        assert!(process_config(None).is_err());
    }
}
