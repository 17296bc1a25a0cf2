//! The container runner: processes in their own mount, UTS, IPC and PID namespaces on a
//! prepared root filesystem, sharing the VM's network namespace (the VM is the sandbox, as in
//! Kata).
//!
//! **How a container starts.** The agent is a multi-threaded tokio process, where a forked
//! child may only make async-signal-safe calls before `exec` — too little to build a
//! container. So the agent re-executes its own binary ([`RunnerConfig::init_binary`],
//! normally `/proc/self/exe`) as the hidden subcommand `__container-init` ([`crate::init`]),
//! with the container's stdio pipes as its stdin/stdout/stderr and a control socket as fd 3.
//! That helper is a fresh single-threaded process:
//!
//! 1. it reads its [`InitConfig`] from the control socket and calls
//!    `unshare(CLONE_NEWPID)`, which puts its *next child* in a new PID namespace;
//! 2. it forks: the child is PID 1 of the container. The child unshares mount, UTS and IPC
//!    namespaces, makes every mount private, bind-mounts the rootfs onto itself, mounts `/proc`,
//!    a tmpfs `/dev` with `null zero full random urandom tty` (mknod, or bind mounts of the
//!    agent's nodes without `CAP_MKNOD`), `/dev/shm`, `/dev/pts`, read-only `/sys`, then
//!    `pivot_root(".", ".")` and a lazy unmount of the old root; refuses symlinks on the way
//!    into the rootfs so an image cannot redirect a mount;
//! 3. the child reports `Ready` and blocks until the agent sends the start byte
//!    (`StartContainer`), then sets its ids and `exec`s the workload, which therefore *is* PID 1
//!    of its namespace (like Kata without a shared sandbox PID namespace: no extra init, and
//!    when it exits the kernel kills whatever else runs in the container);
//! 4. the helper stays outside as the supervisor: it relays the child's setup errors (through a
//!    close-on-exec pipe that also tells it when `exec` succeeded), reaps it, and reports the
//!    exit status (code, or 128 + signal) to the agent.
//!
//! `ExecProcess` uses the same helper in exec mode: it opens `/proc/<init>/ns/{ipc,uts,pid,mnt}`,
//! `setns`es into each (possible only because it is single-threaded), forks (the child lands
//! in the container's PID namespace; entering the mount namespace already placed it at the
//! container's root) and execs. The helper is placed in the container's cgroup before it forks.
//!
//! **cgroups.** When `/sys/fs/cgroup` (or [`RunnerConfig::cgroup_root`]) is a cgroup v2
//! hierarchy, each container gets `cloister/<id>` with `pids.max` / `memory.max` when the spec
//! sets limits and the controller is available; `RemoveContainer` uses `cgroup.kill` and
//! removes the directory. Without cgroup v2 this is skipped with a log line.
//!
//! **Output.** stdout and stderr are pumped into bounded buffers ([`OUTPUT_BUFFER`] each; the
//! pump stops reading when full, so a workload nobody reads blocks rather than exhausting
//! memory). `ReadStdout`/`ReadStderr` return what is buffered or wait; empty means end of
//! stream.

#![forbid(unsafe_code)]

use std::collections::{HashMap, VecDeque};
use std::io;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex as StdMutex, PoisonError};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::unix::OwnedWriteHalf;
use tokio::process::ChildStdin;
use tokio::sync::{Mutex, Notify, mpsc, watch};

use crate::init::{ExtraMount, InitConfig, InitMode, InitMsg, MAX_MSG, ProcessConfig, SUBCOMMAND, write_msg};
use crate::sys;

/// Bytes of stdout (and of stderr) buffered per process.
pub const OUTPUT_BUFFER: usize = 1 << 20;
/// Containers at once.
pub const MAX_CONTAINERS: usize = 256;
/// Exec'd processes per container.
pub const MAX_EXECS: usize = 64;

/// Why a container operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ContainerError {
    /// No such container or process.
    #[error("{0} not found")]
    NotFound(String),
    /// The id is taken.
    #[error("{0} already exists")]
    AlreadyExists(String),
    /// Wrong state for the operation.
    #[error("{0}")]
    State(String),
    /// A bad spec.
    #[error("invalid: {0}")]
    Invalid(String),
    /// Too many containers or processes.
    #[error("limit reached: {0}")]
    Limit(String),
    /// The helper reported a setup or exec failure.
    #[error("container setup failed: {0}")]
    Setup(String),
    /// The helper did not answer in time.
    #[error("timed out: {0}")]
    Timeout(String),
    /// A system call or file operation failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The error.
        source: io::Error,
    },
}

fn io_err(what: impl Into<String>) -> impl FnOnce(io::Error) -> ContainerError {
    let what = what.into();
    move |source| ContainerError::Io { what, source }
}

/// Where and how the runner works.
#[derive(Debug, Clone)]
pub struct RunnerConfig {
    /// The binary that understands the `__container-init` subcommand (the agent itself).
    pub init_binary: PathBuf,
    /// The cgroup v2 mount to create container cgroups under (skipped when it is not cgroup2).
    pub cgroup_root: PathBuf,
    /// The directory under `cgroup_root` holding one cgroup per container.
    pub cgroup_parent: String,
    /// How long the helper may take to set a container up or exec a process.
    pub setup_timeout: Duration,
}

impl Default for RunnerConfig {
    fn default() -> Self {
        RunnerConfig {
            init_binary: PathBuf::from("/proc/self/exe"),
            cgroup_root: PathBuf::from("/sys/fs/cgroup"),
            cgroup_parent: "cloister".into(),
            setup_timeout: Duration::from_secs(30),
        }
    }
}

/// A container to create.
#[derive(Debug, Clone)]
pub struct ContainerSpec {
    /// Container id (validated by the caller: a safe path component).
    pub id: String,
    /// The init process's exec id.
    pub exec_id: String,
    /// The root filesystem (a directory).
    pub rootfs: PathBuf,
    /// The workload.
    pub process: ProcessConfig,
    /// UTS hostname (empty: the container id).
    pub hostname: String,
    /// Read-only root.
    pub readonly_root: bool,
    /// Extra kernel-filesystem mounts.
    pub mounts: Vec<ExtraMount>,
    /// `memory.max` in bytes.
    pub memory_limit: Option<u64>,
    /// `pids.max`.
    pub pids_limit: Option<u64>,
}

/// cgroup statistics of a container (zero without cgroup v2).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// `memory.current`.
    pub memory_usage: u64,
    /// `memory.max` (0: none).
    pub memory_limit: u64,
    /// `pids.current`.
    pub pids_current: u64,
    /// `pids.max` (0: none).
    pub pids_limit: u64,
    /// CPU time, nanoseconds.
    pub cpu_total_ns: u64,
    /// User CPU time, nanoseconds.
    pub cpu_user_ns: u64,
    /// System CPU time, nanoseconds.
    pub cpu_system_ns: u64,
}

/// A bounded output buffer fed by a pipe.
#[derive(Default)]
struct Output {
    state: StdMutex<(VecDeque<u8>, bool)>,
    data: Notify,
    space: Notify,
}

impl Output {
    fn lock(&self) -> std::sync::MutexGuard<'_, (VecDeque<u8>, bool)> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    async fn pump<R: AsyncRead + Unpin>(self: Arc<Self>, mut pipe: R) {
        let mut chunk = vec![0u8; 32 * 1024];
        loop {
            loop {
                let space = self.space.notified();
                tokio::pin!(space);
                space.as_mut().enable();
                if self.lock().0.len() < OUTPUT_BUFFER {
                    break;
                }
                space.await;
            }
            let room = OUTPUT_BUFFER - self.lock().0.len().min(OUTPUT_BUFFER);
            let want = room.min(chunk.len()).max(1);
            match pipe.read(&mut chunk[..want]).await {
                Ok(0) | Err(_) => {
                    self.lock().1 = true;
                    self.data.notify_waiters();
                    return;
                }
                Ok(n) => {
                    self.lock().0.extend(&chunk[..n]);
                    self.data.notify_waiters();
                }
            }
        }
    }

    /// Up to `max` bytes, waiting for one; empty at end of stream.
    async fn read(&self, max: usize) -> Vec<u8> {
        loop {
            let data = self.data.notified();
            tokio::pin!(data);
            data.as_mut().enable();
            {
                let mut st = self.lock();
                if !st.0.is_empty() {
                    let n = st.0.len().min(max.max(1));
                    let out: Vec<u8> = st.0.drain(..n).collect();
                    drop(st);
                    self.space.notify_waiters();
                    return out;
                }
                if st.1 {
                    return Vec::new();
                }
            }
            data.await;
        }
    }
}

/// One process (a container's init or an exec'd process).
struct Proc {
    pid: i32,
    stdin: Mutex<Option<ChildStdin>>,
    stdout: Arc<Output>,
    stderr: Arc<Output>,
    exit: watch::Receiver<Option<i32>>,
}

impl Proc {
    fn exited(&self) -> bool {
        self.exit.borrow().is_some()
    }

    async fn wait(&self) -> i32 {
        let mut rx = self.exit.clone();
        let done = rx.wait_for(Option::is_some).await.map(|v| *v);
        // Err: the supervisor task is gone without a status (runtime shutting down).
        done.unwrap_or_else(|_| *rx.borrow()).unwrap_or(255)
    }

    fn signal(&self, sig: rustix::process::Signal) -> Result<(), ContainerError> {
        if self.exited() {
            return Ok(());
        }
        match rustix::process::kill_process(
            rustix::process::Pid::from_raw(self.pid).ok_or_else(|| ContainerError::State("no pid".into()))?,
            sig,
        ) {
            Ok(()) | Err(rustix::io::Errno::SRCH) => Ok(()),
            Err(e) => Err(ContainerError::Io { what: format!("kill {}", self.pid), source: e.into() }),
        }
    }
}

/// A spawned helper before it is started (container) or after (exec).
struct Spawned {
    proc: Arc<Proc>,
    ctl: OwnedWriteHalf,
    events: mpsc::Receiver<InitMsg>,
    helper_pid: i32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Created,
    Running,
}

/// What starting a created container needs: the helper's control socket and its messages.
type PendingStart = (OwnedWriteHalf, mpsc::Receiver<InitMsg>);

struct Container {
    exec_id: String,
    init: Arc<Proc>,
    execs: StdMutex<HashMap<String, Arc<Proc>>>,
    state: Mutex<(State, Option<PendingStart>)>,
    cgroup: Option<PathBuf>,
}

/// The runner: every container of the sandbox.
pub struct Runner {
    cfg: RunnerConfig,
    cgroups: Option<Cgroups>,
    containers: StdMutex<HashMap<String, Arc<Container>>>,
    /// Ids being created (reserved so that two creates of one id cannot race).
    creating: StdMutex<std::collections::HashSet<String>>,
}

impl std::fmt::Debug for Runner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runner").field("cfg", &self.cfg).finish_non_exhaustive()
    }
}

async fn read_msg_async<R: AsyncRead + Unpin>(r: &mut R) -> io::Result<InitMsg> {
    let len = r.read_u32().await? as usize;
    if len > MAX_MSG {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "control message too large"));
    }
    let mut body = vec![0u8; len];
    r.read_exact(&mut body).await?;
    serde_json::from_slice(&body).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

fn status_of(st: std::process::ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    st.code().or_else(|| st.signal().map(|s| 128 + s)).unwrap_or(255)
}

impl Runner {
    /// A runner; detects cgroup v2 under `cfg.cgroup_root`.
    pub fn new(cfg: RunnerConfig) -> Self {
        let cgroups = Cgroups::detect(&cfg.cgroup_root, &cfg.cgroup_parent);
        Runner { cfg, cgroups, containers: StdMutex::default(), creating: StdMutex::default() }
    }

    /// The cgroup directory containers get theirs under, when cgroups are in use.
    pub fn cgroup_parent(&self) -> Option<&Path> {
        self.cgroups.as_ref().map(|c| c.parent.as_path())
    }

    fn get(&self, id: &str) -> Result<Arc<Container>, ContainerError> {
        self.containers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(id)
            .cloned()
            .ok_or_else(|| ContainerError::NotFound(format!("container {id}")))
    }

    /// The ids of all containers.
    pub fn ids(&self) -> Vec<String> {
        self.containers.lock().unwrap_or_else(PoisonError::into_inner).keys().cloned().collect()
    }

    fn proc(&self, id: &str, exec_id: &str) -> Result<Arc<Proc>, ContainerError> {
        let c = self.get(id)?;
        if exec_id.is_empty() || exec_id == c.exec_id {
            return Ok(c.init.clone());
        }
        c.execs
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(exec_id)
            .cloned()
            .ok_or_else(|| ContainerError::NotFound(format!("process {exec_id} of container {id}")))
    }

    async fn spawn_helper(&self, config: &InitConfig, cgroup: Option<&Path>) -> Result<Spawned, ContainerError> {
        let (ours, theirs) = std::os::unix::net::UnixStream::pair().map_err(io_err("socketpair"))?;
        let mut cmd = tokio::process::Command::new(&self.cfg.init_binary);
        cmd.arg(SUBCOMMAND)
            .env_clear()
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        sys::pass_ctl_fd(&mut cmd, theirs.as_raw_fd());
        let mut child = cmd.spawn().map_err(io_err(format!("starting {}", self.cfg.init_binary.display())))?;
        drop(theirs);
        let helper_pid = child.id().and_then(|p| i32::try_from(p).ok()).unwrap_or(0);
        if let Some(cg) = cgroup
            && let Err(e) = std::fs::write(cg.join("cgroup.procs"), helper_pid.to_string())
        {
            let _ = child.start_kill();
            return Err(ContainerError::Io { what: format!("joining {}", cg.display()), source: e });
        }
        ours.set_nonblocking(true).map_err(io_err("control socket"))?;
        let ctl = tokio::net::UnixStream::from_std(ours).map_err(io_err("control socket"))?;
        let (mut ctl_r, mut ctl_w) = ctl.into_split();
        let mut frame = Vec::new();
        write_msg(&mut frame, config).map_err(io_err("encoding the helper configuration"))?;
        ctl_w.write_all(&frame).await.map_err(io_err("configuring the helper"))?;

        let (stdout, stderr) = (Arc::new(Output::default()), Arc::new(Output::default()));
        if let Some(p) = child.stdout.take() {
            tokio::spawn(stdout.clone().pump(p));
        }
        if let Some(p) = child.stderr.take() {
            tokio::spawn(stderr.clone().pump(p));
        }
        let stdin = child.stdin.take();
        let (exit_tx, exit_rx) = watch::channel(None);
        let (ev_tx, mut events) = mpsc::channel(8);
        // The supervisor: relays the helper's messages, then publishes the exit status.
        tokio::spawn(async move {
            let mut status = None;
            loop {
                match read_msg_async(&mut ctl_r).await {
                    Ok(InitMsg::Exit(code)) => {
                        status = Some(code);
                        break;
                    }
                    Ok(m) => {
                        let _ = ev_tx.send(m).await;
                    }
                    Err(_) => break,
                }
            }
            drop(ev_tx);
            let helper = child.wait().await;
            let code = status.unwrap_or_else(|| helper.map(status_of).unwrap_or(255));
            let _ = exit_tx.send(Some(code));
        });

        let timeout = self.cfg.setup_timeout;
        let pid = match tokio::time::timeout(timeout, events.recv()).await {
            Ok(Some(InitMsg::Pid(pid))) => pid,
            Ok(Some(InitMsg::Error(e))) => return Err(ContainerError::Setup(e)),
            Ok(other) => return Err(ContainerError::Setup(format!("helper failed before forking ({other:?})"))),
            Err(_) => {
                kill_pid(helper_pid);
                return Err(ContainerError::Timeout("the container helper did not fork".into()));
            }
        };
        let proc = Arc::new(Proc { pid, stdin: Mutex::new(stdin), stdout, stderr, exit: exit_rx });
        Ok(Spawned { proc, ctl: ctl_w, events, helper_pid })
    }

    /// Waits for `want` (or an error) from a helper.
    async fn expect(
        &self,
        events: &mut mpsc::Receiver<InitMsg>,
        want: &InitMsg,
        helper_pid: i32,
        proc: &Proc,
    ) -> Result<(), ContainerError> {
        match tokio::time::timeout(self.cfg.setup_timeout, events.recv()).await {
            Ok(Some(m)) if &m == want => Ok(()),
            Ok(Some(InitMsg::Error(e))) => Err(ContainerError::Setup(e)),
            Ok(Some(m)) => Err(ContainerError::Setup(format!("unexpected {m:?} from the helper"))),
            Ok(None) => Err(ContainerError::Setup(format!("the helper ended (status {})", proc.wait().await))),
            Err(_) => {
                kill_pid(proc.pid);
                kill_pid(helper_pid);
                Err(ContainerError::Timeout(format!("waiting for {want:?}")))
            }
        }
    }

    /// Creates a container, stopped before `exec` until [`Runner::start`].
    pub async fn create(&self, spec: ContainerSpec) -> Result<(), ContainerError> {
        {
            let containers = self.containers.lock().unwrap_or_else(PoisonError::into_inner);
            let mut creating = self.creating.lock().unwrap_or_else(PoisonError::into_inner);
            if containers.contains_key(&spec.id) || creating.contains(&spec.id) {
                return Err(ContainerError::AlreadyExists(format!("container {}", spec.id)));
            }
            if containers.len() + creating.len() >= MAX_CONTAINERS {
                return Err(ContainerError::Limit(format!("{MAX_CONTAINERS} containers")));
            }
            creating.insert(spec.id.clone());
        }
        // Released however this ends, cancellation (the host hung up) included.
        let _reserved = Reserved { set: &self.creating, id: &spec.id };
        self.create_reserved(&spec).await
    }

    async fn create_reserved(&self, spec: &ContainerSpec) -> Result<(), ContainerError> {
        let cgroup = match &self.cgroups {
            Some(cg) => Some(cg.create(&spec.id, spec.memory_limit, spec.pids_limit)?),
            None => None,
        };
        // Removes the cgroup unless the container is registered (also on cancellation).
        let mut cgroup_guard = CgroupGuard(cgroup.clone());
        let config = InitConfig {
            mode: InitMode::Create {
                rootfs: spec.rootfs.clone(),
                hostname: if spec.hostname.is_empty() { spec.id.clone() } else { spec.hostname.clone() },
                readonly_root: spec.readonly_root,
                mounts: spec.mounts.clone(),
            },
            process: spec.process.clone(),
        };
        let result = async {
            let mut s = self.spawn_helper(&config, cgroup.as_deref()).await?;
            self.expect(&mut s.events, &InitMsg::Ready, s.helper_pid, &s.proc).await?;
            Ok::<_, ContainerError>(s)
        }
        .await;
        let s = match result {
            Ok(s) => s,
            Err(e) => {
                if let Some(cg) = cgroup_guard.0.take() {
                    Cgroups::remove(&cg).await;
                }
                return Err(e);
            }
        };
        cgroup_guard.0 = None;
        let c = Container {
            exec_id: if spec.exec_id.is_empty() { spec.id.clone() } else { spec.exec_id.clone() },
            init: s.proc,
            execs: StdMutex::default(),
            state: Mutex::new((State::Created, Some((s.ctl, s.events)))),
            cgroup,
        };
        tracing::info!(container = %spec.id, "container created");
        self.containers.lock().unwrap_or_else(PoisonError::into_inner).insert(spec.id.clone(), Arc::new(c));
        Ok(())
    }

    /// Starts a created container's workload.
    pub async fn start(&self, id: &str) -> Result<(), ContainerError> {
        let c = self.get(id)?;
        let mut st = c.state.lock().await;
        if st.0 != State::Created {
            return Err(ContainerError::State(format!("container {id} is already started")));
        }
        let Some((mut ctl, mut events)) = st.1.take() else {
            return Err(ContainerError::State(format!("container {id} cannot be started")));
        };
        ctl.write_all(b"S").await.map_err(io_err("starting the container"))?;
        st.0 = State::Running;
        self.expect(&mut events, &InitMsg::Started, 0, &c.init).await?;
        tracing::info!(container = %id, pid = c.init.pid, "container started");
        Ok(())
    }

    /// Runs another process in a running container's namespaces.
    pub async fn exec(&self, id: &str, exec_id: &str, process: ProcessConfig) -> Result<(), ContainerError> {
        let c = self.get(id)?;
        if c.state.lock().await.0 != State::Running || c.init.exited() {
            return Err(ContainerError::State(format!("container {id} is not running")));
        }
        {
            let execs = c.execs.lock().unwrap_or_else(PoisonError::into_inner);
            if execs.contains_key(exec_id) || exec_id == c.exec_id {
                return Err(ContainerError::AlreadyExists(format!("process {exec_id}")));
            }
            if execs.len() >= MAX_EXECS {
                return Err(ContainerError::Limit(format!("{MAX_EXECS} processes per container")));
            }
        }
        let config = InitConfig { mode: InitMode::Exec { pid: c.init.pid }, process };
        let mut s = self.spawn_helper(&config, c.cgroup.as_deref()).await?;
        self.expect(&mut s.events, &InitMsg::Started, s.helper_pid, &s.proc).await?;
        let mut execs = c.execs.lock().unwrap_or_else(PoisonError::into_inner);
        // Forget exec'd processes that ended and were waited for long ago: keep the map bounded.
        if execs.len() >= MAX_EXECS {
            execs.retain(|_, p| !p.exited());
        }
        execs.insert(exec_id.to_owned(), s.proc);
        tracing::info!(container = %id, exec = %exec_id, "process exec'd");
        Ok(())
    }

    /// Waits for a process: its exit code, or 128 + signal.
    pub async fn wait(&self, id: &str, exec_id: &str) -> Result<i32, ContainerError> {
        let p = self.proc(id, exec_id)?;
        Ok(p.wait().await)
    }

    /// Signals one process, or with an empty `exec_id` every process of the container.
    pub fn signal(&self, id: &str, exec_id: &str, signal: u32) -> Result<(), ContainerError> {
        let sig = i32::try_from(signal)
            .ok()
            .and_then(rustix::process::Signal::from_named_raw)
            .ok_or_else(|| ContainerError::Invalid(format!("signal {signal}")))?;
        if !exec_id.is_empty() {
            return self.proc(id, exec_id)?.signal(sig);
        }
        let c = self.get(id)?;
        let execs: Vec<_> = c.execs.lock().unwrap_or_else(PoisonError::into_inner).values().cloned().collect();
        for p in execs {
            p.signal(sig)?;
        }
        c.init.signal(sig)
    }

    /// Reads buffered stdout or stderr.
    pub async fn read(&self, id: &str, exec_id: &str, stderr: bool, max: usize) -> Result<Vec<u8>, ContainerError> {
        let p = self.proc(id, exec_id)?;
        Ok(if stderr { p.stderr.read(max).await } else { p.stdout.read(max).await })
    }

    /// Writes to stdin.
    pub async fn write_stdin(&self, id: &str, exec_id: &str, data: &[u8]) -> Result<usize, ContainerError> {
        let p = self.proc(id, exec_id)?;
        let mut stdin = p.stdin.lock().await;
        let w = stdin.as_mut().ok_or_else(|| ContainerError::State("stdin is closed".into()))?;
        w.write_all(data).await.map_err(io_err("writing stdin"))?;
        Ok(data.len())
    }

    /// Closes stdin.
    pub async fn close_stdin(&self, id: &str, exec_id: &str) -> Result<(), ContainerError> {
        let p = self.proc(id, exec_id)?;
        p.stdin.lock().await.take();
        Ok(())
    }

    /// cgroup statistics.
    pub fn stats(&self, id: &str) -> Result<Stats, ContainerError> {
        let c = self.get(id)?;
        Ok(c.cgroup.as_deref().map(Cgroups::stats).unwrap_or_default())
    }

    /// Kills every process of the container, waits up to `timeout` for them, and forgets it.
    pub async fn remove(&self, id: &str, timeout: Duration) -> Result<(), ContainerError> {
        let c = self.get(id)?;
        if let Some(cg) = &c.cgroup {
            let _ = std::fs::write(cg.join("cgroup.kill"), "1");
        }
        self.signal(id, "", 9)?;
        let execs: Vec<_> = c.execs.lock().unwrap_or_else(PoisonError::into_inner).values().cloned().collect();
        let all = async {
            c.init.wait().await;
            for p in execs {
                p.wait().await;
            }
        };
        tokio::time::timeout(timeout, all)
            .await
            .map_err(|_| ContainerError::Timeout(format!("processes of container {id} did not die")))?;
        if let Some(cg) = &c.cgroup {
            Cgroups::remove(cg).await;
        }
        self.containers.lock().unwrap_or_else(PoisonError::into_inner).remove(id);
        tracing::info!(container = %id, "container removed");
        Ok(())
    }
}

/// Frees a reserved container id when dropped.
struct Reserved<'a> {
    set: &'a StdMutex<std::collections::HashSet<String>>,
    id: &'a str,
}

impl Drop for Reserved<'_> {
    fn drop(&mut self) {
        self.set.lock().unwrap_or_else(PoisonError::into_inner).remove(self.id);
    }
}

/// Best-effort removal of a container cgroup that did not get a container.
struct CgroupGuard(Option<PathBuf>);

impl Drop for CgroupGuard {
    fn drop(&mut self) {
        if let Some(dir) = self.0.take() {
            let _ = std::fs::write(dir.join("cgroup.kill"), "1");
            if std::fs::remove_dir(&dir).is_err() {
                // Processes may still be dying: retry off the caller's path.
                std::thread::spawn(move || {
                    for _ in 0..100 {
                        if std::fs::remove_dir(&dir).is_ok() || !dir.exists() {
                            return;
                        }
                        std::thread::sleep(Duration::from_millis(20));
                    }
                });
            }
        }
    }
}

fn kill_pid(pid: i32) {
    if let Some(p) = rustix::process::Pid::from_raw(pid) {
        let _ = rustix::process::kill_process(p, rustix::process::Signal::KILL);
    }
}

/// The cgroup v2 subtree of the agent's containers.
struct Cgroups {
    parent: PathBuf,
}

const CGROUP2_SUPER_MAGIC: u64 = 0x6367_7270;

impl Cgroups {
    fn detect(root: &Path, parent: &str) -> Option<Self> {
        match rustix::fs::statfs(root) {
            Ok(s) if s.f_type as u64 == CGROUP2_SUPER_MAGIC => {}
            _ => {
                tracing::info!(root = %root.display(), "no cgroup v2 hierarchy: containers get no cgroups");
                return None;
            }
        }
        if parent.is_empty() || parent.contains('/') || parent.starts_with('.') {
            tracing::warn!(parent, "bad cgroup parent name: no cgroups");
            return None;
        }
        let parent = root.join(parent);
        if let Err(e) = std::fs::create_dir(&parent)
            && e.kind() != io::ErrorKind::AlreadyExists
        {
            tracing::warn!(error = %e, path = %parent.display(), "cannot create the container cgroup: no cgroups");
            return None;
        }
        let available = std::fs::read_to_string(root.join("cgroup.controllers")).unwrap_or_default();
        for c in ["pids", "memory", "cpu"] {
            if available.split_whitespace().any(|a| a == c) {
                let _ = std::fs::write(root.join("cgroup.subtree_control"), format!("+{c}"));
                let _ = std::fs::write(parent.join("cgroup.subtree_control"), format!("+{c}"));
            }
        }
        tracing::info!(path = %parent.display(), "per-container cgroups enabled");
        Some(Cgroups { parent })
    }

    fn create(&self, id: &str, memory: Option<u64>, pids: Option<u64>) -> Result<PathBuf, ContainerError> {
        let dir = self.parent.join(id);
        std::fs::create_dir(&dir).map_err(io_err(format!("creating {}", dir.display())))?;
        for (file, limit) in [("memory.max", memory), ("pids.max", pids)] {
            let Some(limit) = limit else { continue };
            let path = dir.join(file);
            if !path.exists() {
                tracing::warn!(file, "controller not available: limit not applied");
                continue;
            }
            if let Err(e) = std::fs::write(&path, limit.to_string()) {
                let _ = std::fs::remove_dir(&dir);
                return Err(ContainerError::Io { what: format!("writing {}", path.display()), source: e });
            }
        }
        Ok(dir)
    }

    async fn remove(dir: &Path) {
        let _ = std::fs::write(dir.join("cgroup.kill"), "1");
        for _ in 0..100 {
            match std::fs::remove_dir(dir) {
                Ok(()) => return,
                Err(e) if e.kind() == io::ErrorKind::NotFound => return,
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
        tracing::warn!(path = %dir.display(), "could not remove a container cgroup");
    }

    fn stats(dir: &Path) -> Stats {
        let num =
            |f: &str| std::fs::read_to_string(dir.join(f)).ok().and_then(|s| s.trim().parse::<u64>().ok()).unwrap_or(0);
        let cpu = std::fs::read_to_string(dir.join("cpu.stat")).unwrap_or_default();
        let field = |name: &str| {
            cpu.lines()
                .filter_map(|l| l.split_once(' '))
                .find(|(k, _)| *k == name)
                .and_then(|(_, v)| v.trim().parse::<u64>().ok())
                .unwrap_or(0)
                .saturating_mul(1000)
        };
        Stats {
            memory_usage: num("memory.current"),
            memory_limit: num("memory.max"),
            pids_current: num("pids.current"),
            pids_limit: num("pids.max"),
            cpu_total_ns: field("usage_usec"),
            cpu_user_ns: field("user_usec"),
            cpu_system_ns: field("system_usec"),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[tokio::test]
    async fn output_buffer_is_bounded_and_ends() {
        let out = Arc::new(Output::default());
        let (mut w, r) = tokio::io::duplex(64 * 1024);
        let pump = tokio::spawn(out.clone().pump(r));
        let writer = tokio::spawn(async move {
            let big = vec![7u8; OUTPUT_BUFFER + 100_000];
            w.write_all(&big).await.unwrap();
        });
        // The pump stops at the bound; the writer is held back until we read.
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(out.lock().0.len() <= OUTPUT_BUFFER);
        let mut total = 0;
        loop {
            let chunk = out.read(100_000).await;
            if chunk.is_empty() {
                break;
            }
            assert!(chunk.len() <= 100_000);
            total += chunk.len();
        }
        assert_eq!(total, OUTPUT_BUFFER + 100_000);
        writer.await.unwrap();
        pump.await.unwrap();
    }
}
