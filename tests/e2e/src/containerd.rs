//! A private containerd for runtime tests: Debian's `containerd` 1.6 with its own root, state
//! and socket (the CRI plugin disabled), our `containerd-shim-cloister-v2` found on its `PATH`
//! as on a node where it is installed, driven with `ctr`. Plus the process helpers the runtime
//! tests share: finding QEMU and shim processes, their RSS, and a bare QEMU boot of a guest
//! image to compare pod starts against.

// A test harness: a failed setup step fails the calling test, with its cause.
#![allow(clippy::panic)]

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::guest::{GuestImage, console_tail};
use crate::{bin_dir, run};

/// The namespace the tests use.
pub const NS: &str = "cloister-test";
/// The runtime name `ctr run --runtime` takes.
pub const RUNTIME: &str = "io.containerd.cloister.v2";

/// A private containerd (killed on drop, with every shim and VM it started).
#[derive(Debug)]
pub struct Containerd {
    child: Child,
    /// Its gRPC socket.
    pub socket: PathBuf,
    /// Its log (debug level, shim logs included).
    pub log: PathBuf,
}

impl Drop for Containerd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Containerd {
    /// Starts containerd with root, state, socket and log under `dir`; waits until it answers.
    pub fn start(dir: &Path) -> Containerd {
        let socket = dir.join("containerd.sock");
        let log = dir.join("containerd.log");
        fs::write(
            dir.join("containerd.toml"),
            format!(
                "version = 2\nroot = \"{root}\"\nstate = \"{state}\"\n\
                 disabled_plugins = [\"io.containerd.grpc.v1.cri\", \"io.containerd.snapshotter.v1.aufs\", \
                 \"io.containerd.snapshotter.v1.btrfs\", \"io.containerd.snapshotter.v1.zfs\", \
                 \"io.containerd.snapshotter.v1.devmapper\"]\n\
                 [grpc]\naddress = \"{sock}\"\n[ttrpc]\naddress = \"{sock}.ttrpc\"\n[debug]\nlevel = \"debug\"\n",
                root = dir.join("root").display(),
                state = dir.join("state").display(),
                sock = socket.display()
            ),
        )
        .unwrap_or_else(|e| panic!("writing containerd.toml: {e}"));
        // The shim is found on containerd's PATH, as on a node where it is installed.
        let path = format!("{}:{}", bin_dir().display(), std::env::var("PATH").unwrap_or_default());
        let stderr = fs::File::create(&log).unwrap_or_else(|e| panic!("{}: {e}", log.display()));
        let child = Command::new("containerd")
            .arg("--config")
            .arg(dir.join("containerd.toml"))
            .env("PATH", path)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|e| panic!("starting containerd: {e}"));
        let c = Containerd { child, socket, log };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if c.ctr(&["version"]).status.success() {
                break;
            }
            assert!(Instant::now() < deadline, "containerd did not start:\n{}", c.log_tail(60));
            std::thread::sleep(Duration::from_millis(100));
        }
        c
    }

    /// `ctr --address … --namespace NS <args>`.
    pub fn ctr(&self, args: &[&str]) -> Output {
        run(Command::new("ctr")
            .arg("--address")
            .arg(&self.socket)
            .args(["--namespace", NS])
            .args(args)
            .stdin(Stdio::null()))
    }

    /// `ctr <args>` like [`Containerd::ctr`], also timing the first byte on its stdout (when
    /// the container's output appears) from the start.
    pub fn ctr_timed(&self, args: &[&str]) -> (Output, Option<Duration>) {
        use std::io::Read;
        let started = Instant::now();
        let mut child = match Command::new("ctr")
            .arg("--address")
            .arg(&self.socket)
            .args(["--namespace", NS])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
        {
            Ok(c) => c,
            Err(e) => panic!("running ctr: {e}"),
        };
        let mut out = child.stdout.take().unwrap_or_else(|| panic!("ctr stdout"));
        let mut err = child.stderr.take().unwrap_or_else(|| panic!("ctr stderr"));
        let reader = std::thread::spawn(move || {
            let (mut buf, mut first) = (Vec::new(), None);
            let mut chunk = [0u8; 4096];
            while let Ok(n) = out.read(&mut chunk) {
                if n == 0 {
                    break;
                }
                first.get_or_insert_with(|| started.elapsed());
                buf.extend_from_slice(&chunk[..n]);
            }
            (buf, first)
        });
        let err_reader = std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = err.read_to_end(&mut buf);
            buf
        });
        let status = child.wait().unwrap_or_else(|e| panic!("waiting for ctr: {e}"));
        let (stdout, first) = reader.join().unwrap_or_default();
        let stderr = err_reader.join().unwrap_or_default();
        (Output { status, stdout, stderr }, first)
    }

    /// The last `n` lines of containerd's log.
    pub fn log_tail(&self, n: usize) -> String {
        let log = fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// Pulls `reference` over plain HTTP (test registries) into containerd's content store.
    pub fn pull_plain_http(&self, reference: &str) {
        let o = self.ctr(&["images", "pull", "--plain-http", reference]);
        assert!(o.status.success(), "ctr pull {reference}: {}{}", text(&o.stdout), text(&o.stderr));
    }

    /// The step timings the shim logged for `container` (`pod step timings`), as JSON.
    pub fn pod_timings(&self, container: &str) -> Option<serde_json::Value> {
        let log = fs::read_to_string(&self.log).ok()?;
        let needle = format!("container={container} ");
        log.lines().rev().filter(|l| l.contains("pod step timings") && l.contains(&needle)).find_map(|l| {
            // logrus quotes the message: `msg="… timings={\"vm_boot_s\":…} …"`.
            let unescaped = l.replace("\\\"", "\"");
            let start = unescaped.find("timings={")? + "timings=".len();
            let end = start + unescaped[start..].find('}')? + 1;
            serde_json::from_str(&unescaped[start..end]).ok()
        })
    }
}

/// The console tails of the VM run directories under `vm_root` (for failure messages).
pub fn consoles_under(vm_root: &Path) -> String {
    let mut s = String::new();
    if let Ok(dirs) = fs::read_dir(vm_root) {
        for e in dirs.flatten() {
            let tail = console_tail(&e.path().join("console.log"));
            s.push_str(&format!("--- guest console {}\n{tail}\n", e.path().display()));
        }
    }
    s
}

/// Waits up to 20 s until no run directory is left under `vm_root` and no QEMU names it; panics
/// with what is left and `diagnostics()` otherwise.
pub fn assert_no_vms_under(vm_root: &Path, diagnostics: impl Fn() -> String) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let left: Vec<_> = fs::read_dir(vm_root).map(|r| r.flatten().map(|e| e.path()).collect()).unwrap_or_default();
        let qemus = qemus_with(&vm_root.display().to_string());
        if left.is_empty() && qemus.is_empty() {
            return;
        }
        assert!(Instant::now() < deadline, "left behind: run dirs {left:?}, QEMU pids {qemus:?}\n{}", diagnostics());
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Bytes as text (lossy).
pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn cmdlines() -> Vec<(u32, String)> {
    let Ok(dir) = fs::read_dir("/proc") else { return Vec::new() };
    dir.flatten()
        .filter_map(|e| {
            let pid = e.file_name().to_str()?.parse::<u32>().ok()?;
            let cmd = fs::read(e.path().join("cmdline")).ok()?;
            Some((pid, text(&cmd).replace('\0', " ")))
        })
        .collect()
}

/// QEMU processes whose command line names `needle`.
pub fn qemus_with(needle: &str) -> Vec<u32> {
    cmdlines().into_iter().filter(|(_, c)| c.contains("qemu-system") && c.contains(needle)).map(|(p, _)| p).collect()
}

/// Processes whose command line contains `a` and has the word `b`.
pub fn pids_with(a: &str, b: &str) -> Vec<u32> {
    cmdlines().into_iter().filter(|(_, c)| c.contains(a) && c.split(' ').any(|w| w == b)).map(|(p, _)| p).collect()
}

/// VmRSS of `pid` in KiB (0 when gone).
pub fn rss_kib(pid: u32) -> u64 {
    fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmRSS:")).and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// SIGKILL to `pid`.
pub fn kill(pid: u32) {
    let _ = Command::new("kill").args(["-KILL", &pid.to_string()]).status();
}

/// Whether this process runs as root (containerd needs it).
pub fn is_root() -> bool {
    fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("Uid:")).map(|l| l.split_whitespace().nth(2) == Some("0")))
        .unwrap_or(false)
}

/// A bare QEMU boot of `image` (same kernel, initrd, command line, memory and networking as
/// the runtime tests' pods) with the launcher: time to the agent's first answer, and QEMU's
/// RSS once idle. The baseline pod starts are compared with.
pub fn bare_boot(image: &GuestImage, run_dir: &Path) -> (Duration, u64) {
    use cloister_launcher::{Accel, Channel, Launcher, Network, QemuLauncher, VmConfig};
    let mut cfg = VmConfig::new("bare", image.kernel(), run_dir);
    cfg.accel = Accel::Tcg;
    cfg.memory_mib = 512;
    cfg.initrd = Some(image.initrd());
    cfg.cmdline = image.cmdline.trim_end().to_owned();
    cfg.network = Network::User;
    cfg.channel = Channel::VirtioSerial { socket: run_dir.join("agent.sock") };
    let started = Instant::now();
    let mut vm = QemuLauncher::default().launch(&cfg).unwrap_or_else(|e| panic!("bare boot: {e}"));
    let pid = vm.pid();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("tokio runtime: {e}"));
    let (took, rss) = rt.block_on(async {
        let stream = tokio::net::UnixStream::connect(run_dir.join("agent.sock"))
            .await
            .unwrap_or_else(|e| panic!("bare boot agent socket: {e}"));
        let client = cloister_agent::AgentClient::new(stream).with_timeout(Some(Duration::from_secs(120)));
        let _ = client.stats_container("probe").await;
        let took = started.elapsed();
        // Idle, as a pod's QEMU is when it is measured.
        tokio::time::sleep(Duration::from_secs(2)).await;
        let rss = rss_kib(pid);
        let _ = client.destroy_sandbox().await;
        (took, rss)
    });
    let _ = vm.wait_timeout(Duration::from_secs(20));
    let _ = vm.kill();
    (took, rss)
}
