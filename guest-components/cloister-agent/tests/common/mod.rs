//! Test fixtures: a busybox rootfs, an in-process agent on a UNIX socket, request builders.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use cloister_agent::image::LocalImages;
use cloister_agent::proto::*;
use cloister_agent::{Agent, AgentClient, AgentPolicy, Runner, RunnerConfig};

pub const BUSYBOX: &str = "/bin/busybox";

static NEXT: AtomicU32 = AtomicU32::new(0);

/// True (after printing why) when these tests cannot run here; under CI they must.
pub fn skip() -> bool {
    let ci = std::env::var_os("CI").is_some();
    if !rustix::process::geteuid().is_root() {
        assert!(!ci, "the container tests need root under CI");
        eprintln!("skipping: the container tests need root (namespaces, mounts, pivot_root)");
        return true;
    }
    if !Path::new(BUSYBOX).is_file() {
        assert!(!ci, "{BUSYBOX} is required under CI (apt-get install busybox-static)");
        eprintln!("skipping: {BUSYBOX} not found (apt-get install busybox-static)");
        return true;
    }
    false
}

/// `<dir>/busybox`: a rootfs with the static busybox and its applets as symlinks.
pub fn busybox_image(images: &Path) -> PathBuf {
    let root = images.join("busybox");
    for d in ["bin", "proc", "dev", "sys", "tmp", "etc"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    std::fs::copy(BUSYBOX, root.join("bin/busybox")).unwrap();
    for applet in [
        "sh", "echo", "cat", "sleep", "hostname", "ls", "id", "env", "test", "touch", "readlink", "true", "wc", "grep",
        "mount",
    ] {
        std::os::unix::fs::symlink("busybox", root.join("bin").join(applet)).unwrap();
    }
    root
}

pub struct TestAgent {
    pub dir: tempfile::TempDir,
    pub socket: PathBuf,
    pub task: tokio::task::JoinHandle<()>,
    /// The per-test cgroup parent, when the cgroup root is cgroup v2.
    pub cgroup_parent: Option<PathBuf>,
}

impl Drop for TestAgent {
    fn drop(&mut self) {
        self.task.abort();
        if let Some(p) = &self.cgroup_parent {
            let _ = std::fs::remove_dir(p);
        }
    }
}

/// A cgroup v2 mount on this machine, if any.
pub fn cgroup2_root() -> Option<PathBuf> {
    ["/sys/fs/cgroup", "/sys/fs/cgroup/unified"]
        .into_iter()
        .find(|p| rustix::fs::statfs(*p).is_ok_and(|s| s.f_type as u64 == 0x6367_7270))
        .map(PathBuf::from)
}

impl TestAgent {
    /// An agent with `policy` serving the busybox image from a local catalogue.
    pub async fn start(policy: AgentPolicy) -> TestAgent {
        Self::start_with(policy, Path::new("/sys/fs/cgroup")).await
    }

    /// With container cgroups under `cgroup_root` (in a parent directory of this test's own).
    pub async fn start_with(policy: AgentPolicy, cgroup_root: &Path) -> TestAgent {
        let dir = tempfile::tempdir().unwrap();
        let images = dir.path().join("images");
        busybox_image(&images);
        let state = dir.path().join("state");
        std::fs::create_dir_all(&state).unwrap();
        let parent = format!("cloister-test-{}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed));
        let runner = Runner::new(RunnerConfig {
            init_binary: PathBuf::from(env!("CARGO_BIN_EXE_cloister-agent")),
            setup_timeout: Duration::from_secs(20),
            cgroup_root: cgroup_root.to_path_buf(),
            cgroup_parent: parent,
        });
        let cgroup_parent = runner.cgroup_parent().map(Path::to_path_buf);
        let agent = Arc::new(Agent::new(policy, runner, Box::new(LocalImages::new(&images)), state));
        let socket = dir.path().join("agent.sock");
        let listener = tokio::net::UnixListener::bind(&socket).unwrap();
        let task = tokio::spawn(async move {
            let _ = cloister_agent::server::serve_unix(agent, listener).await;
        });
        TestAgent { dir, socket, task, cgroup_parent }
    }

    pub async fn client(&self) -> AgentClient {
        AgentClient::connect_unix(&self.socket).await.unwrap().with_timeout(Some(Duration::from_secs(30)))
    }
}

pub fn create_req(id: &str, image: &str, args: &[&str], env: &[&str]) -> CreateContainerRequest {
    CreateContainerRequest {
        container_id: id.into(),
        storages: vec![Storage { driver: DRIVER_IMAGE_GUEST_PULL.into(), source: image.into(), ..Default::default() }],
        oci: Some(Spec {
            process: Some(Process {
                args: args.iter().map(|s| s.to_string()).collect(),
                env: env.iter().map(|s| s.to_string()).collect(),
                cwd: "/".into(),
                ..Default::default()
            }),
            mounts: vec![Mount { destination: "/proc".into(), r#type: "proc".into(), ..Default::default() }],
            ..Default::default()
        }),
        ..Default::default()
    }
}

pub fn exec_req(id: &str, exec_id: &str, args: &[&str]) -> ExecProcessRequest {
    ExecProcessRequest {
        container_id: id.into(),
        exec_id: exec_id.into(),
        process: Some(Process {
            args: args.iter().map(|s| s.to_string()).collect(),
            env: vec!["PATH=/bin".into()],
            cwd: "/".into(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

pub async fn output(c: &AgentClient, id: &str, exec_id: &str) -> (String, String) {
    let out = c.read_to_end(id, exec_id, false, 1 << 20).await.unwrap();
    let err = c.read_to_end(id, exec_id, true, 1 << 20).await.unwrap();
    (String::from_utf8_lossy(&out).into_owned(), String::from_utf8_lossy(&err).into_owned())
}

/// Starts the agent binary serving `socket` with `args` after `--listen` (output to stderr as
/// `stderr` says) and connects to it once it answers; fails if it exits first or takes 20 s.
pub async fn spawn_binary(
    socket: &Path,
    args: &[&std::ffi::OsStr],
    stderr: std::process::Stdio,
) -> (tokio::process::Child, AgentClient) {
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_cloister-agent"))
        .arg("--listen")
        .arg(format!("unix:{}", socket.display()))
        .args(args)
        .stderr(stderr)
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(c) = AgentClient::connect_unix(socket).await {
            return (child, c);
        }
        assert!(child.try_wait().unwrap().is_none(), "the agent exited instead of serving");
        assert!(std::time::Instant::now() < deadline, "the agent did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
