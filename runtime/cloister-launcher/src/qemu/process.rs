//! Running QEMU: spawn in its own process group with output to a log, wait for QMP, and a
//! [`RunningVm`] handle whose `Drop` kills the process group and removes the sockets.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::FileTypeExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use rustix::process::{Pid, Signal, kill_process_group};

use crate::Launcher;
use crate::config::{Channel, InitDataSource, TeeKind, VmConfig};
use crate::error::{LaunchError, MeasureError, QmpError};
use crate::measure::{LaunchMeasurement, expected_measurement};
use crate::qemu::argv::qemu_argv;
use crate::qemu::caps::QemuCapabilities;
use crate::qmp::Qmp;

/// How many lines of QEMU's log an error quotes.
const LOG_TAIL_LINES: usize = 20;
/// How much of the log end is read for the tail.
const LOG_TAIL_BYTES: u64 = 16 * 1024;
/// Poll interval while waiting for QEMU.
const POLL: Duration = Duration::from_millis(20);

/// Launches VMs with QEMU.
#[derive(Debug, Clone)]
pub struct QemuLauncher {
    /// The QEMU binary; `None` = [`TeeKind::default_qemu_binary`] (looked up in `PATH`).
    pub binary: Option<PathBuf>,
    /// How long to wait for the QMP socket to answer.
    pub ready_timeout: Duration,
    /// Timeout of each QMP exchange.
    pub qmp_timeout: Duration,
}

impl Default for QemuLauncher {
    fn default() -> Self {
        QemuLauncher { binary: None, ready_timeout: Duration::from_secs(30), qmp_timeout: Duration::from_secs(10) }
    }
}

impl QemuLauncher {
    /// The binary used for `tee`.
    pub fn binary_for(&self, tee: &TeeKind) -> PathBuf {
        self.binary.clone().unwrap_or_else(|| PathBuf::from(tee.default_qemu_binary()))
    }
}

impl Launcher for QemuLauncher {
    fn name(&self) -> &'static str {
        "qemu"
    }

    /// Resolves the accelerator, builds the argv, checks that QEMU has the confidential object,
    /// computes and logs the expected measurement, spawns QEMU and waits for QMP.
    fn launch(&self, cfg: &VmConfig) -> Result<RunningVm, LaunchError> {
        let mut cfg = cfg.clone();
        if !cfg.tee.is_confidential() {
            cfg.accel = cfg.accel.probe();
        }
        let argv = qemu_argv(&cfg)?;
        let binary = self.binary_for(&cfg.tee);
        let caps = QemuCapabilities::probe(&binary)?;
        caps.check(&cfg.tee)?;
        if let TeeKind::EmulatedSnp(e) | TeeKind::EmulatedTdx(e) = &cfg.tee
            && !e.endpoint.exists()
        {
            return Err(LaunchError::EmulatedEndpointMissing(e.endpoint.clone()));
        }
        let measurement = match expected_measurement(&cfg) {
            Ok(m) => m,
            // An emulated VM without reference firmware still boots; its endpoint needs the
            // value from elsewhere.
            Err(MeasureError::NoFirmware { .. }) if !cfg.tee.is_confidential() => {
                tracing::warn!(vm = %cfg.name, tee = cfg.tee.name(), "no reference firmware: launch measurement not computed");
                LaunchMeasurement::None
            }
            Err(e) => return Err(e.into()),
        };
        if let Some(hex) = measurement.hex() {
            tracing::info!(vm = %cfg.name, tee = cfg.tee.name(), measurement = %hex, export = %measurement.to_json(), "expected launch measurement");
        }

        let io = |what: &'static str, path: &Path| {
            let path = path.to_owned();
            move |source| LaunchError::Io { what, path, source }
        };
        std::fs::create_dir_all(&cfg.run_dir).map_err(io("creating run directory", &cfg.run_dir))?;
        let qmp_socket = cfg.qmp_socket();
        let agent_socket = match &cfg.channel {
            Channel::VirtioSerial { socket } => Some(socket.clone()),
            _ => None,
        };
        for s in std::iter::once(&qmp_socket).chain(agent_socket.as_ref()) {
            remove_stale_socket(s).map_err(io("removing stale socket", s))?;
        }
        if cfg.deliver_initdata
            && let Some(InitDataSource::Toml(toml)) = &cfg.initdata
        {
            let f = cfg.initdata_file();
            std::fs::write(&f, toml).map_err(io("writing initdata", &f))?;
        }
        let qemu_log = cfg.qemu_log();
        let log = File::create(&qemu_log).map_err(io("creating", &qemu_log))?;
        let log2 = log.try_clone().map_err(io("duplicating", &qemu_log))?;

        tracing::info!(vm = %cfg.name, binary = %binary.display(), version = %caps.version, argv = ?argv, "starting QEMU");
        let child = Command::new(&binary)
            .args(&argv)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            .process_group(0)
            .spawn()
            .map_err(|source| match source.kind() {
                std::io::ErrorKind::NotFound => LaunchError::QemuNotFound {
                    binary: binary.clone(),
                    package: crate::qemu::caps::debian_package(&binary),
                },
                _ => LaunchError::Spawn { binary: binary.clone(), source },
            })?;
        let mut vm = RunningVm {
            pid: child.id(),
            child,
            exit: None,
            name: cfg.name.clone(),
            qmp: None,
            qmp_socket,
            agent_socket,
            console_log: cfg.console_log(),
            qemu_log,
            measurement,
        };
        // From here on, an error drops `vm`, which kills QEMU and removes the sockets.
        vm.wait_ready(self.ready_timeout, self.qmp_timeout)?;
        tracing::info!(vm = %vm.name, pid = vm.pid, "QEMU ready (QMP negotiated)");
        Ok(vm)
    }
}

fn remove_stale_socket(p: &Path) -> std::io::Result<()> {
    match std::fs::symlink_metadata(p) {
        Ok(m) if m.file_type().is_socket() => std::fs::remove_file(p),
        Ok(_) => Err(std::io::Error::new(std::io::ErrorKind::AlreadyExists, "exists and is not a socket")),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// The last `LOG_TAIL_LINES` lines of a log file (lossy UTF-8).
pub fn log_tail(path: &Path) -> String {
    let Ok(mut f) = File::open(path) else { return String::new() };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let _ = f.seek(SeekFrom::Start(len.saturating_sub(LOG_TAIL_BYTES)));
    let mut buf = Vec::new();
    let _ = f.read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf);
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(LOG_TAIL_LINES)..].join("\n")
}

/// A running QEMU. Dropping it kills QEMU's process group and removes its sockets.
#[derive(Debug)]
pub struct RunningVm {
    child: Child,
    pid: u32,
    exit: Option<ExitStatus>,
    name: String,
    qmp: Option<Qmp>,
    qmp_socket: PathBuf,
    agent_socket: Option<PathBuf>,
    console_log: PathBuf,
    qemu_log: PathBuf,
    measurement: LaunchMeasurement,
}

impl RunningVm {
    /// QEMU's process id (also its process group id).
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The QMP socket.
    pub fn qmp_socket(&self) -> &Path {
        &self.qmp_socket
    }

    /// The guest serial console log.
    pub fn console_log(&self) -> &Path {
        &self.console_log
    }

    /// QEMU's own stdout/stderr.
    pub fn qemu_log(&self) -> &Path {
        &self.qemu_log
    }

    /// The host end of the virtio-serial agent channel, if any.
    pub fn agent_socket(&self) -> Option<&Path> {
        self.agent_socket.as_deref()
    }

    /// The launch measurement computed before start.
    pub fn measurement(&self) -> &LaunchMeasurement {
        &self.measurement
    }

    /// The negotiated QMP session (for further commands).
    pub fn qmp(&mut self) -> Option<&mut Qmp> {
        self.qmp.as_mut()
    }

    fn wait_ready(&mut self, timeout: Duration, qmp_timeout: Duration) -> Result<(), LaunchError> {
        let deadline = Instant::now() + timeout;
        let mut last_error = None;
        loop {
            if let Some(status) = self.try_wait()? {
                return Err(LaunchError::QemuExited { status, log_tail: log_tail(&self.qemu_log) });
            }
            if self.qmp_socket.exists() {
                let left = deadline.saturating_duration_since(Instant::now()).min(qmp_timeout);
                match Qmp::connect(&self.qmp_socket, left.max(Duration::from_millis(100))) {
                    Ok(q) => {
                        self.qmp = Some(q);
                        return Ok(());
                    }
                    Err(e) => last_error = Some(e.to_string()),
                }
            }
            if Instant::now() >= deadline {
                return Err(LaunchError::QmpTimeout {
                    socket: self.qmp_socket.clone(),
                    timeout_ms: timeout.as_millis(),
                    last_error,
                });
            }
            std::thread::sleep(POLL);
        }
    }

    /// Whether QEMU has exited (reaps it if so).
    pub fn try_wait(&mut self) -> Result<Option<ExitStatus>, LaunchError> {
        if self.exit.is_some() {
            return Ok(self.exit);
        }
        let st = self.child.try_wait().map_err(|e| self.process_error(e))?;
        if st.is_some() {
            self.exit = st;
        }
        Ok(st)
    }

    /// Waits up to `timeout` for QEMU to exit.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Result<Option<ExitStatus>, LaunchError> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(s) = self.try_wait()? {
                return Ok(Some(s));
            }
            if Instant::now() >= deadline {
                return Ok(None);
            }
            std::thread::sleep(POLL);
        }
    }

    /// Waits until QEMU exits (e.g. the guest powered off: QEMU runs with `-no-reboot`).
    pub fn wait(&mut self) -> Result<ExitStatus, LaunchError> {
        if let Some(s) = self.exit {
            return Ok(s);
        }
        let s = self.child.wait().map_err(|e| self.process_error(e))?;
        self.exit = Some(s);
        self.cleanup_sockets();
        Ok(s)
    }

    /// Asks QEMU to quit over QMP and waits up to `timeout`; then kills the process group.
    pub fn shutdown(&mut self, timeout: Duration) -> Result<ExitStatus, LaunchError> {
        if let Some(s) = self.try_wait()? {
            self.cleanup_sockets();
            return Ok(s);
        }
        if let Some(q) = self.qmp.as_mut() {
            match q.execute("quit", None) {
                // QEMU may close the socket before or after answering.
                Ok(_) | Err(QmpError::Closed) => {}
                Err(e) => tracing::warn!(vm = %self.name, error = %e, "QMP quit failed"),
            }
        }
        self.qmp = None;
        if let Some(s) = self.wait_timeout(timeout)? {
            tracing::info!(vm = %self.name, status = %s, "QEMU exited after QMP quit");
            self.cleanup_sockets();
            return Ok(s);
        }
        tracing::warn!(vm = %self.name, pid = self.pid, "QEMU did not quit in time: killing its process group");
        self.kill()
    }

    /// Kills QEMU's process group (SIGKILL) and reaps QEMU.
    pub fn kill(&mut self) -> Result<ExitStatus, LaunchError> {
        self.qmp = None;
        if self.exit.is_none() {
            self.killpg();
        }
        self.wait()
    }

    fn killpg(&self) {
        // QEMU is not reaped yet, so its pid (= the group id) cannot have been reused.
        if let Some(pid) = i32::try_from(self.pid).ok().and_then(Pid::from_raw)
            && let Err(e) = kill_process_group(pid, Signal::KILL)
            && e != rustix::io::Errno::SRCH
        {
            tracing::warn!(vm = %self.name, pid = self.pid, error = %e, "killing QEMU's process group");
        }
    }

    fn cleanup_sockets(&mut self) {
        for s in std::iter::once(&self.qmp_socket).chain(self.agent_socket.as_ref()) {
            if let Err(e) = remove_stale_socket(s) {
                tracing::debug!(socket = %s.display(), error = %e, "not removed");
            }
        }
    }

    fn process_error(&self, e: std::io::Error) -> LaunchError {
        LaunchError::Process { pid: self.pid, detail: e.to_string() }
    }
}

impl Drop for RunningVm {
    fn drop(&mut self) {
        self.qmp = None;
        if self.exit.is_none() {
            // Reaped already? Then do not signal a group id that may have been reused.
            match self.child.try_wait() {
                Ok(Some(s)) => self.exit = Some(s),
                _ => {
                    self.killpg();
                    if let Ok(s) = self.child.wait() {
                        self.exit = Some(s);
                    }
                }
            }
        }
        self.cleanup_sockets();
    }
}
