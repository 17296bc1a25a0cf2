//! The containerd task service: containerd's shim v2 `Task` API mapped onto one pod VM and its
//! guest agent.
//!
//! * `Create`: the first container (or CRI's sandbox container) starts the VM with the
//!   handler's configuration and the pod's initdata (annotation
//!   `io.katacontainers.config.hypervisor.cc_init_data`, else the handler's default); the
//!   container is created in the guest from the bundle's spec, the guest pulling the image by
//!   reference (CRI's image-name annotation, else containerd's record of the container).
//! * `Start`/`Wait`/`Kill`/`Exec`/`CloseIO`: forwarded to the agent, stdio pumped between
//!   containerd's FIFOs and the agent's stream calls.
//! * `Delete` of the last container powers the VM off, kills what is left and removes its run
//!   directory; `Shutdown` then ends the shim.
//!
//! Every agent refusal (policy, attestation, pull) reaches containerd with the agent's message.

#![forbid(unsafe_code)]

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use cloister_agent::ClientError;
use cloister_agent::proto::ExecProcessRequest;
use cloister_agent::ttrpc::Code;
use cloister_kbs_protocol::initdata::{ANNOTATION as INITDATA_ANNOTATION, InitData};
use containerd_shim::api::{self, Status};
use containerd_shim::asynchronous::ExitSignal;
use containerd_shim::protos::events::task as events;
use containerd_shim::protos::protobuf::well_known_types::timestamp::Timestamp;
use containerd_shim::protos::protobuf::{MessageDyn, MessageField};
use containerd_shim::protos::shim_async::Task;
use containerd_shim::protos::topics;
use containerd_shim::protos::ttrpc::r#async::TtrpcContext;
use containerd_shim::publisher::RemotePublisher;
use containerd_shim::{Context, TtrpcResult};
use prost::Message;
use tokio::sync::{Mutex, watch};

use crate::config::{RuntimeConfig, locate};
use crate::sandbox::Sandbox;
use crate::spec::{self, CRI_CONTAINER_TYPE, CRI_IMAGE_ANNOTATION};

/// How long the guest gets to power off before QEMU is killed.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
/// Chunk size of stdout/stderr reads from the agent.
const READ_CHUNK: u32 = 64 * 1024;

type Exit = Option<(u32, Timestamp)>;

/// One process (a container's init process or an exec).
struct Proc {
    stdin: String,
    stdout: String,
    stderr: String,
    terminal: bool,
    status: Status,
    exit_tx: watch::Sender<Exit>,
    exit_rx: watch::Receiver<Exit>,
    /// An exec's process, until started.
    exec: Option<ExecProcessRequest>,
}

impl Proc {
    fn new(stdin: &str, stdout: &str, stderr: &str, terminal: bool) -> Self {
        let (exit_tx, exit_rx) = watch::channel(None);
        Proc {
            stdin: stdin.to_owned(),
            stdout: stdout.to_owned(),
            stderr: stderr.to_owned(),
            terminal,
            status: Status::CREATED,
            exit_tx,
            exit_rx,
            exec: None,
        }
    }

    fn exit(&self) -> Exit {
        self.exit_rx.borrow().clone()
    }
}

struct Container {
    bundle: String,
    /// CRI's sandbox (pause) container: the VM itself, nothing runs in the guest for it.
    is_sandbox: bool,
    init: Proc,
    execs: HashMap<String, Proc>,
}

#[derive(Default)]
struct State {
    sandbox: Option<Arc<Sandbox>>,
    containers: HashMap<String, Container>,
}

impl State {
    /// Container `id` and its process `exec_id` (empty: the init process).
    fn proc_of(&self, id: &str, exec_id: &str) -> Result<(&Container, &Proc), containerd_shim::Error> {
        let c = self.containers.get(id).ok_or_else(|| not_found(&format!("container {id}")))?;
        let p = if exec_id.is_empty() {
            &c.init
        } else {
            c.execs.get(exec_id).ok_or_else(|| not_found(&format!("exec {exec_id}")))?
        };
        Ok((c, p))
    }
}

/// The task service of one shim (one pod VM).
#[derive(Clone)]
pub struct Service {
    namespace: String,
    containerd_address: String,
    exit: Arc<ExitSignal>,
    publisher: Arc<RemotePublisher>,
    state: Arc<Mutex<State>>,
}

fn now() -> Timestamp {
    containerd_shim::util::timestamp().unwrap_or_default()
}

fn rpc_error(
    code: containerd_shim::protos::ttrpc::Code,
    msg: impl Into<String>,
) -> containerd_shim::protos::ttrpc::Error {
    containerd_shim::protos::ttrpc::Error::RpcStatus(containerd_shim::protos::ttrpc::get_status(code, msg.into()))
}

fn not_found(what: &str) -> containerd_shim::protos::ttrpc::Error {
    rpc_error(containerd_shim::protos::ttrpc::Code::NOT_FOUND, format!("{what} not found"))
}

fn failed(msg: impl Into<String>) -> containerd_shim::protos::ttrpc::Error {
    rpc_error(containerd_shim::protos::ttrpc::Code::FAILED_PRECONDITION, msg)
}

fn unimplemented(what: &str) -> containerd_shim::protos::ttrpc::Error {
    rpc_error(
        containerd_shim::protos::ttrpc::Code::UNIMPLEMENTED,
        format!("{what} is not supported by the cloister runtime"),
    )
}

/// An agent error as containerd sees it: the guest's message, with its status mapped.
fn agent_error(what: &str, e: &ClientError) -> containerd_shim::protos::ttrpc::Error {
    use containerd_shim::protos::ttrpc::Code as T;
    let code = match e.code() {
        Some(c) if c == Code::NotFound.as_i32() => T::NOT_FOUND,
        Some(c) if c == Code::PermissionDenied.as_i32() => T::PERMISSION_DENIED,
        Some(c) if c == Code::InvalidArgument.as_i32() => T::INVALID_ARGUMENT,
        Some(c) if c == Code::AlreadyExists.as_i32() => T::ALREADY_EXISTS,
        _ => T::FAILED_PRECONDITION,
    };
    rpc_error(code, format!("{what}: the guest refused: {e}"))
}

/// The `ConfigPath` of containerd's runtime options (`runtimeoptions.v1.Options`).
#[derive(Clone, PartialEq, Message)]
struct RuntimeOptions {
    #[prost(string, tag = "1")]
    type_url: String,
    #[prost(string, tag = "2")]
    config_path: String,
}

fn config_path_option(
    options: &MessageField<containerd_shim::protos::protobuf::well_known_types::any::Any>,
) -> Option<String> {
    let any = options.as_ref()?;
    if !any.type_url.ends_with("runtimeoptions.v1.Options") {
        return None;
    }
    RuntimeOptions::decode(any.value.as_slice()).ok().map(|o| o.config_path).filter(|p| !p.is_empty())
}

impl Service {
    /// A service publishing events through `publisher`.
    pub fn new(namespace: &str, containerd_address: &str, exit: Arc<ExitSignal>, publisher: RemotePublisher) -> Self {
        Service {
            namespace: namespace.to_owned(),
            containerd_address: containerd_address.to_owned(),
            exit,
            publisher: Arc::new(publisher),
            state: Arc::default(),
        }
    }

    async fn publish(&self, topic: &str, event: Box<dyn MessageDyn>) {
        if let Err(e) = self.publisher.publish(Context::default(), topic, &self.namespace, event).await {
            tracing::warn!(topic, error = %e, "publishing an event failed");
        }
    }

    async fn sandbox(&self) -> Result<Arc<Sandbox>, containerd_shim::protos::ttrpc::Error> {
        self.state.lock().await.sandbox.clone().ok_or_else(|| failed("the pod VM is not running"))
    }

    /// The image the guest pulls for `id`.
    async fn image_of(
        &self,
        id: &str,
        annotations: &std::collections::BTreeMap<String, String>,
    ) -> Result<String, String> {
        if let Some(i) = annotations.get(CRI_IMAGE_ANNOTATION).filter(|i| !i.is_empty()) {
            return Ok(i.clone());
        }
        match crate::containerd::container_image(&self.containerd_address, &self.namespace, id, Duration::from_secs(10))
            .await
        {
            Ok(Some(i)) => Ok(i),
            Ok(None) => Err(format!(
                "container {id} has no image: the guest pulls its image itself, so a rootfs from the host (ctr run --rootfs) cannot be used"
            )),
            Err(e) => Err(format!("finding the image of container {id}: {e}")),
        }
    }

    /// The pod's initdata: the annotation, else the handler's default file.
    fn initdata(
        cfg: &RuntimeConfig,
        annotations: &std::collections::BTreeMap<String, String>,
    ) -> Result<Option<String>, String> {
        if let Some(a) = annotations.get(INITDATA_ANNOTATION).filter(|a| !a.trim().is_empty()) {
            let body =
                InitData::body_from_annotation(a).map_err(|e| format!("annotation {INITDATA_ANNOTATION}: {e}"))?;
            InitData::parse(&body).map_err(|e| format!("annotation {INITDATA_ANNOTATION}: {e}"))?;
            return Ok(Some(body));
        }
        match &cfg.initdata.default {
            Some(p) => {
                let body = std::fs::read_to_string(p).map_err(|e| format!("initdata {}: {e}", p.display()))?;
                InitData::parse(&body).map_err(|e| format!("initdata {}: {e}", p.display()))?;
                Ok(Some(body))
            }
            None => Ok(None),
        }
    }

    /// Pumps one process's stdio and records its exit. `exec_id` empty = the init process.
    fn spawn_process_io(&self, sandbox: Arc<Sandbox>, id: String, exec_id: String, p: &Proc) {
        let (stdin, stdout, stderr) = (p.stdin.clone(), p.stdout.clone(), p.stderr.clone());
        let exit_tx = p.exit_tx.clone();
        let svc = self.clone();
        let pid = sandbox.pid();
        tokio::spawn(async move {
            let agent_in = sandbox.clone();
            let (cid, eid) = (id.clone(), exec_id.clone());
            let stdin_task = tokio::spawn(async move { pump_stdin(agent_in, cid, eid, stdin).await });
            let out = tokio::spawn(pump_output(sandbox.clone(), id.clone(), exec_id.clone(), stdout, false));
            let err = tokio::spawn(pump_output(sandbox.clone(), id.clone(), exec_id.clone(), stderr, true));
            let status = match sandbox.agent().wait_process(&id, &exec_id).await {
                Ok(s) => u32::try_from(s).unwrap_or(255),
                Err(e) => {
                    tracing::warn!(container = %id, exec = %exec_id, error = %e, "waiting for the process failed");
                    // The VM went away: like a process killed with SIGKILL.
                    137
                }
            };
            // All output before the exit is reported.
            let _ = tokio::time::timeout(Duration::from_secs(10), async {
                let _ = out.await;
                let _ = err.await;
            })
            .await;
            stdin_task.abort();
            let at = now();
            {
                let mut st = svc.state.lock().await;
                if let Some(c) = st.containers.get_mut(&id) {
                    let proc = if exec_id.is_empty() { Some(&mut c.init) } else { c.execs.get_mut(&exec_id) };
                    if let Some(p) = proc {
                        p.status = Status::STOPPED;
                    }
                }
            }
            let _ = exit_tx.send(Some((status, at.clone())));
            tracing::info!(container = %id, exec = %exec_id, status, "process exited");
            svc.publish(
                topics::TASK_EXIT_EVENT_TOPIC,
                Box::new(events::TaskExit {
                    container_id: id.clone(),
                    id: if exec_id.is_empty() { id.clone() } else { exec_id.clone() },
                    pid,
                    exit_status: status,
                    exited_at: MessageField::some(at),
                    ..Default::default()
                }),
            )
            .await;
        });
    }
}

async fn open_fifo_writer(path: &str) -> std::io::Result<tokio::net::unix::pipe::Sender> {
    // Read-write: opening never fails for want of a reader (containerd opens its end first).
    tokio::net::unix::pipe::OpenOptions::new().read_write(true).open_sender(path)
}

/// Copies the process's stdout (or stderr) from the agent into containerd's FIFO until EOF.
async fn pump_output(sandbox: Arc<Sandbox>, id: String, exec_id: String, fifo: String, stderr: bool) {
    use tokio::io::AsyncWriteExt;
    let mut w = if fifo.is_empty() {
        None
    } else {
        match open_fifo_writer(&fifo).await {
            Ok(w) => Some(w),
            Err(e) => {
                tracing::warn!(fifo, error = %e, "opening the output FIFO failed; discarding output");
                None
            }
        }
    };
    loop {
        let r = if stderr {
            sandbox.agent().read_stderr(&id, &exec_id, READ_CHUNK).await
        } else {
            sandbox.agent().read_stdout(&id, &exec_id, READ_CHUNK).await
        };
        match r {
            Ok(data) if data.is_empty() => break,
            Ok(data) => {
                if let Some(f) = w.as_mut()
                    && let Err(e) = f.write_all(&data).await
                {
                    tracing::warn!(fifo, error = %e, "writing output failed; discarding the rest");
                    w = None;
                }
            }
            Err(e) => {
                tracing::debug!(container = %id, exec = %exec_id, stderr, error = %e, "output stream ended");
                break;
            }
        }
    }
}

/// Copies containerd's stdin FIFO into the process until EOF, then closes its stdin. No FIFO:
/// stdin is closed at once.
async fn pump_stdin(sandbox: Arc<Sandbox>, id: String, exec_id: String, fifo: String) {
    if !fifo.is_empty() {
        // A blocking open waits for containerd's writer; read on a blocking thread too.
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<u8>>(4);
        let path = PathBuf::from(&fifo);
        std::thread::spawn(move || {
            use std::io::Read;
            let Ok(mut f) = std::fs::File::open(&path) else { return };
            let mut buf = vec![0u8; 32 * 1024];
            loop {
                match f.read(&mut buf) {
                    Ok(0) | Err(_) => return,
                    Ok(n) => {
                        if tx.blocking_send(buf[..n].to_vec()).is_err() {
                            return;
                        }
                    }
                }
            }
        });
        while let Some(chunk) = rx.recv().await {
            let mut rest = &chunk[..];
            while !rest.is_empty() {
                match sandbox.agent().write_stdin(&id, &exec_id, rest).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => rest = &rest[(n as usize).min(rest.len())..],
                }
            }
        }
    }
    if let Err(e) = sandbox.agent().close_stdin(&id, &exec_id).await {
        tracing::debug!(container = %id, error = %e, "closing stdin");
    }
}

#[async_trait]
impl Task for Service {
    async fn create(&self, _ctx: &TtrpcContext, req: api::CreateTaskRequest) -> TtrpcResult<api::CreateTaskResponse> {
        let id = req.id.clone();
        tracing::info!(container = %id, bundle = %req.bundle, "create");
        if req.terminal {
            return Err(failed(
                "terminals (ctr run -t) are not supported: the container's stdio is pumped by the guest agent",
            ));
        }
        let spec = spec::read_bundle_spec(std::path::Path::new(&req.bundle)).map_err(|e| failed(e.to_string()))?;
        let annotations = spec::annotations(&spec);
        let is_sandbox = annotations.get(CRI_CONTAINER_TYPE).is_some_and(|t| t == "sandbox");
        let config_path = locate(config_path_option(&req.options).as_deref());
        let cfg = RuntimeConfig::load(&config_path).map_err(|e| failed(e.to_string()))?;

        let mut st = self.state.lock().await;
        if st.containers.contains_key(&id) {
            return Err(rpc_error(
                containerd_shim::protos::ttrpc::Code::ALREADY_EXISTS,
                format!("container {id} exists"),
            ));
        }
        let started_vm = st.sandbox.is_none();
        if started_vm {
            let initdata = Self::initdata(&cfg, &annotations).map_err(failed)?;
            let sandbox = Sandbox::start(&cfg, &self.namespace, &id, initdata.as_deref())
                .await
                .map_err(|e| failed(format!("starting the pod VM: {e}")))?;
            st.sandbox = Some(Arc::new(sandbox));
        }
        let sandbox = st.sandbox.clone().ok_or_else(|| failed("no VM"))?;
        if !is_sandbox {
            let created = async {
                let image = self.image_of(&id, &annotations).await.map_err(failed)?;
                let (request, dropped) = spec::create_request(&id, &spec, &image).map_err(|e| failed(e.to_string()))?;
                if !dropped.is_empty() {
                    tracing::warn!(container = %id, ?dropped, "host mounts are not shared with the guest: dropped");
                }
                tracing::info!(container = %id, image, "creating the container in the guest");
                sandbox.agent().create_container(&request).await.map_err(|e| agent_error("creating the container", &e))
            }
            .await;
            if let Err(e) = created {
                if started_vm {
                    // The run directory (and the console) goes with the VM: keep its end in the log.
                    tracing::warn!(container = %id, console = %sandbox.console_tail(), "the pod did not start; guest console (tail)");
                    sandbox.shutdown(SHUTDOWN_GRACE).await;
                    st.sandbox = None;
                }
                return Err(e);
            }
            // What the pod's start cost, step by step (the guest's part from its agent).
            if let Some(t) = sandbox.step_timings().await {
                tracing::info!(container = %id, timings = %t, "pod step timings");
            }
        }
        let pid = sandbox.pid();
        st.containers.insert(
            id.clone(),
            Container {
                bundle: req.bundle.clone(),
                is_sandbox,
                init: Proc::new(&req.stdin, &req.stdout, &req.stderr, req.terminal),
                execs: HashMap::new(),
            },
        );
        drop(st);
        self.publish(
            topics::TASK_CREATE_EVENT_TOPIC,
            Box::new(events::TaskCreate {
                container_id: id.clone(),
                bundle: req.bundle.clone(),
                rootfs: req.rootfs.clone(),
                io: MessageField::some(events::TaskIO {
                    stdin: req.stdin.clone(),
                    stdout: req.stdout.clone(),
                    stderr: req.stderr.clone(),
                    terminal: req.terminal,
                    ..Default::default()
                }),
                pid,
                ..Default::default()
            }),
        )
        .await;
        Ok(api::CreateTaskResponse { pid, ..Default::default() })
    }

    async fn start(&self, _ctx: &TtrpcContext, req: api::StartRequest) -> TtrpcResult<api::StartResponse> {
        let sandbox = self.sandbox().await?;
        let pid = sandbox.pid();
        let mut st = self.state.lock().await;
        let c = st.containers.get_mut(&req.id).ok_or_else(|| not_found(&format!("container {}", req.id)))?;
        if req.exec_id.is_empty() {
            if c.init.status != Status::CREATED {
                return Err(failed(format!("container {} is not in the created state", req.id)));
            }
            if !c.is_sandbox {
                sandbox
                    .agent()
                    .start_container(&req.id)
                    .await
                    .map_err(|e| agent_error("starting the container", &e))?;
                self.spawn_process_io(sandbox.clone(), req.id.clone(), String::new(), &c.init);
            }
            c.init.status = Status::RUNNING;
            drop(st);
            self.publish(
                topics::TASK_START_EVENT_TOPIC,
                Box::new(events::TaskStart { container_id: req.id.clone(), pid, ..Default::default() }),
            )
            .await;
        } else {
            let p = c.execs.get_mut(&req.exec_id).ok_or_else(|| not_found(&format!("exec {}", req.exec_id)))?;
            let exec = p.exec.take().ok_or_else(|| failed(format!("exec {} was already started", req.exec_id)))?;
            sandbox.agent().exec_process(&exec).await.map_err(|e| agent_error("exec in the container", &e))?;
            p.status = Status::RUNNING;
            self.spawn_process_io(sandbox.clone(), req.id.clone(), req.exec_id.clone(), p);
            drop(st);
            self.publish(
                topics::TASK_EXEC_STARTED_EVENT_TOPIC,
                Box::new(events::TaskExecStarted {
                    container_id: req.id.clone(),
                    exec_id: req.exec_id.clone(),
                    pid,
                    ..Default::default()
                }),
            )
            .await;
        }
        Ok(api::StartResponse { pid, ..Default::default() })
    }

    async fn exec(&self, _ctx: &TtrpcContext, req: api::ExecProcessRequest) -> TtrpcResult<api::Empty> {
        if req.terminal {
            return Err(failed("terminals are not supported"));
        }
        let spec: serde_json::Value = req
            .spec
            .as_ref()
            .and_then(|a| serde_json::from_slice(&a.value).ok())
            .ok_or_else(|| failed("exec without a readable process spec"))?;
        let process = spec::process(&spec).map_err(|e| failed(e.to_string()))?;
        let mut st = self.state.lock().await;
        let c = st.containers.get_mut(&req.id).ok_or_else(|| not_found(&format!("container {}", req.id)))?;
        if c.execs.contains_key(&req.exec_id) {
            return Err(rpc_error(
                containerd_shim::protos::ttrpc::Code::ALREADY_EXISTS,
                format!("exec {} exists", req.exec_id),
            ));
        }
        // The guest is asked on Start (`ctr task exec` sends both; a refusal reaches it there).
        let exec = ExecProcessRequest {
            container_id: req.id.clone(),
            exec_id: req.exec_id.clone(),
            process: Some(process),
            ..Default::default()
        };
        let mut p = Proc::new(&req.stdin, &req.stdout, &req.stderr, false);
        p.exec = Some(exec);
        c.execs.insert(req.exec_id.clone(), p);
        drop(st);
        self.publish(
            topics::TASK_EXEC_ADDED_EVENT_TOPIC,
            Box::new(events::TaskExecAdded {
                container_id: req.id.clone(),
                exec_id: req.exec_id.clone(),
                ..Default::default()
            }),
        )
        .await;
        Ok(api::Empty::new())
    }

    async fn state(&self, _ctx: &TtrpcContext, req: api::StateRequest) -> TtrpcResult<api::StateResponse> {
        let st = self.state.lock().await;
        let pid = st.sandbox.as_ref().map(|s| s.pid()).unwrap_or(0);
        let (c, p) = st.proc_of(&req.id, &req.exec_id)?;
        let mut resp = api::StateResponse {
            id: if req.exec_id.is_empty() { req.id.clone() } else { req.exec_id.clone() },
            bundle: c.bundle.clone(),
            pid,
            stdin: p.stdin.clone(),
            stdout: p.stdout.clone(),
            stderr: p.stderr.clone(),
            terminal: p.terminal,
            exec_id: req.exec_id.clone(),
            ..Default::default()
        };
        resp.set_status(p.status);
        if let Some((code, at)) = p.exit() {
            resp.exit_status = code;
            resp.exited_at = MessageField::some(at);
        }
        Ok(resp)
    }

    async fn wait(&self, _ctx: &TtrpcContext, req: api::WaitRequest) -> TtrpcResult<api::WaitResponse> {
        let mut rx = {
            let st = self.state.lock().await;
            let (_, p) = st.proc_of(&req.id, &req.exec_id)?;
            p.exit_rx.clone()
        };
        let (code, at) = loop {
            if let Some(e) = rx.borrow_and_update().clone() {
                break e;
            }
            if rx.changed().await.is_err() {
                return Err(failed("the process record was deleted while waiting"));
            }
        };
        Ok(api::WaitResponse { exit_status: code, exited_at: MessageField::some(at), ..Default::default() })
    }

    async fn kill(&self, _ctx: &TtrpcContext, req: api::KillRequest) -> TtrpcResult<api::Empty> {
        let sandbox = self.sandbox().await?;
        let (is_sandbox, status, exit_tx) = {
            let st = self.state.lock().await;
            let (c, p) = st.proc_of(&req.id, &req.exec_id)?;
            (c.is_sandbox, p.status, p.exit_tx.clone())
        };
        if status == Status::STOPPED {
            return Ok(api::Empty::new());
        }
        if is_sandbox || status == Status::CREATED {
            // Nothing runs in the guest for it (yet): it ends with the signal.
            let code = 128 + req.signal.min(127);
            let _ = exit_tx.send(Some((code, now())));
            let mut st = self.state.lock().await;
            if let Some(c) = st.containers.get_mut(&req.id) {
                let p = if req.exec_id.is_empty() { Some(&mut c.init) } else { c.execs.get_mut(&req.exec_id) };
                if let Some(p) = p {
                    p.status = Status::STOPPED;
                }
            }
            return Ok(api::Empty::new());
        }
        match sandbox.agent().signal_process(&req.id, &req.exec_id, req.signal).await {
            Ok(()) => Ok(api::Empty::new()),
            // Already gone.
            Err(e) if e.code() == Some(Code::NotFound.as_i32()) => Ok(api::Empty::new()),
            Err(e) => Err(agent_error("signalling the process", &e)),
        }
    }

    async fn delete(&self, _ctx: &TtrpcContext, req: api::DeleteRequest) -> TtrpcResult<api::DeleteResponse> {
        let mut st = self.state.lock().await;
        let pid = st.sandbox.as_ref().map(|s| s.pid()).unwrap_or(0);
        let sandbox = st.sandbox.clone();
        if !req.exec_id.is_empty() {
            let c = st.containers.get_mut(&req.id).ok_or_else(|| not_found(&format!("container {}", req.id)))?;
            let p = c.execs.remove(&req.exec_id).ok_or_else(|| not_found(&format!("exec {}", req.exec_id)))?;
            let (code, at) = p.exit().unwrap_or((0, now()));
            return Ok(api::DeleteResponse {
                pid,
                exit_status: code,
                exited_at: MessageField::some(at),
                ..Default::default()
            });
        }
        let c = st.containers.remove(&req.id).ok_or_else(|| not_found(&format!("container {}", req.id)))?;
        let (code, at) = c.init.exit().unwrap_or((137, now()));
        if let Some(s) = &sandbox
            && !c.is_sandbox
            && s.is_running()
            && let Err(e) = s.agent().remove_container(&req.id, 10).await
        {
            tracing::warn!(container = %req.id, error = %e, "removing the container in the guest");
        }
        let last = st.containers.is_empty();
        if last && let Some(s) = st.sandbox.take() {
            s.shutdown(SHUTDOWN_GRACE).await;
        }
        drop(st);
        self.publish(
            topics::TASK_DELETE_EVENT_TOPIC,
            Box::new(events::TaskDelete {
                container_id: req.id.clone(),
                pid,
                exit_status: code,
                exited_at: MessageField::some(at.clone()),
                ..Default::default()
            }),
        )
        .await;
        Ok(api::DeleteResponse { pid, exit_status: code, exited_at: MessageField::some(at), ..Default::default() })
    }

    async fn pids(&self, _ctx: &TtrpcContext, req: api::PidsRequest) -> TtrpcResult<api::PidsResponse> {
        let st = self.state.lock().await;
        if !st.containers.contains_key(&req.id) {
            return Err(not_found(&format!("container {}", req.id)));
        }
        let pid = st.sandbox.as_ref().map(|s| s.pid()).unwrap_or(0);
        Ok(api::PidsResponse {
            processes: vec![containerd_shim::protos::types::task::ProcessInfo { pid, ..Default::default() }],
            ..Default::default()
        })
    }

    async fn close_io(&self, _ctx: &TtrpcContext, req: api::CloseIORequest) -> TtrpcResult<api::Empty> {
        let sandbox = self.sandbox().await?;
        if req.stdin {
            sandbox.agent().close_stdin(&req.id, &req.exec_id).await.map_err(|e| agent_error("closing stdin", &e))?;
        }
        Ok(api::Empty::new())
    }

    async fn connect(&self, _ctx: &TtrpcContext, _req: api::ConnectRequest) -> TtrpcResult<api::ConnectResponse> {
        let task_pid = self.state.lock().await.sandbox.as_ref().map(|s| s.pid()).unwrap_or(0);
        Ok(api::ConnectResponse {
            shim_pid: std::process::id(),
            task_pid,
            version: env!("CARGO_PKG_VERSION").to_owned(),
            ..Default::default()
        })
    }

    async fn shutdown(&self, _ctx: &TtrpcContext, _req: api::ShutdownRequest) -> TtrpcResult<api::Empty> {
        let st = self.state.lock().await;
        if st.containers.is_empty() {
            if let Some(s) = &st.sandbox {
                s.shutdown(SHUTDOWN_GRACE).await;
            }
            self.exit.signal();
        }
        Ok(api::Empty::new())
    }

    async fn resize_pty(&self, _ctx: &TtrpcContext, _req: api::ResizePtyRequest) -> TtrpcResult<api::Empty> {
        Err(unimplemented("a terminal"))
    }

    async fn pause(&self, _ctx: &TtrpcContext, _req: api::PauseRequest) -> TtrpcResult<api::Empty> {
        Err(unimplemented("pause"))
    }

    async fn resume(&self, _ctx: &TtrpcContext, _req: api::ResumeRequest) -> TtrpcResult<api::Empty> {
        Err(unimplemented("resume"))
    }

    async fn checkpoint(&self, _ctx: &TtrpcContext, _req: api::CheckpointTaskRequest) -> TtrpcResult<api::Empty> {
        Err(unimplemented("checkpoint (a confidential VM's memory cannot be saved by the host)"))
    }

    async fn update(&self, _ctx: &TtrpcContext, _req: api::UpdateTaskRequest) -> TtrpcResult<api::Empty> {
        Err(unimplemented("updating resources"))
    }
}
