//! The real guest image end to end: `runtime/guest/build.sh` builds the Debian cloud kernel
//! (vmlinux, PVH) and an initrd with the static agent and a busybox root filesystem baked in as a
//! local image; the launcher boots it under TCG with the virtio-serial channel `agent.0`; the
//! host's `AgentClient` runs a container in the guest over that channel, reads its output and exit
//! code, destroys the sandbox, and QEMU must exit. Also checks that the image's
//! `measurements.json` equals the launcher's `expected_measurement` for the same files.
//!
//! The image is cached under `/var/tmp/cloister-guest-cache/<key>`, the key being the SHA-256 of
//! every input (build script, /init, kernel package, agent binary, busybox, policy).
//!
//! Needs: `qemu-system-x86_64`, `/bin/busybox` (busybox-static), `cpio`, `zstd`, `lz4`,
//! `dpkg-deb`, the Rust target `x86_64-unknown-linux-musl` + `musl-gcc` (musl-tools), and the
//! cloud kernel package: `$CLOISTER_TEST_KERNEL_DEB`, else `/var/tmp/cloister-ci-kernel/*.deb`
//! (where .ci/run downloads it). Skips with a message otherwise; fails instead under `CI`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use cloister_agent::AgentClient;
use cloister_agent::proto::{CreateContainerRequest, DRIVER_IMAGE_GUEST_PULL, Mount, Process, Spec, Storage};
use cloister_agent::ttrpc::Code;
use cloister_launcher::{Accel, Channel, Launcher, QemuLauncher, SnpConfig, TeeKind, VmConfig, expected_measurement};
use sha2::{Digest, Sha256};

const OVMF: &str = "/usr/share/ovmf/OVMF.fd";
const MUSL: &str = "x86_64-unknown-linux-musl";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().unwrap()
}

fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?.to_str()?.split(':').map(|d| Path::new(d).join(name)).find(|p| p.is_file())
}

/// Skips (prints why, returns `None`) unless under CI, where a missing prerequisite fails.
fn missing(why: &str) -> Option<PathBuf> {
    assert!(std::env::var_os("CI").is_none(), "{why} (required under CI)");
    eprintln!("skipping: {why}");
    None
}

fn kernel_deb() -> Option<PathBuf> {
    if let Some(k) = std::env::var_os("CLOISTER_TEST_KERNEL_DEB") {
        return Some(k.into());
    }
    let mut debs: Vec<PathBuf> = std::fs::read_dir("/var/tmp/cloister-ci-kernel")
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("linux-image-") && n.contains("-cloud-amd64_") && n.ends_with(".deb"))
        })
        .collect();
    debs.sort();
    debs.pop()
}

struct Prereqs {
    qemu: PathBuf,
    kernel_deb: PathBuf,
}

fn prerequisites() -> Option<Prereqs> {
    for tool in ["qemu-system-x86_64", "cpio", "zstd", "lz4", "dpkg-deb", "musl-gcc"] {
        if which(tool).is_none() {
            missing(&format!("{tool} not found (apt-get install qemu-system-x86 cpio zstd lz4 musl-tools)"))?;
        }
    }
    if !Path::new("/bin/busybox").is_file() {
        missing("/bin/busybox not found (apt-get install busybox-static)")?;
    }
    let sysroot = Command::new("rustc").args(["--print", "sysroot"]).output().ok()?;
    let sysroot = PathBuf::from(String::from_utf8_lossy(&sysroot.stdout).trim());
    if !sysroot.join("lib/rustlib").join(MUSL).is_dir() {
        missing(&format!("Rust target {MUSL} not installed (rustup target add {MUSL})"))?;
    }
    let Some(kernel_deb) = kernel_deb() else {
        missing("no cloud kernel package (set CLOISTER_TEST_KERNEL_DEB or run .ci/run's kernel download)")?;
        return None;
    };
    Some(Prereqs { qemu: which("qemu-system-x86_64")?, kernel_deb })
}

fn sha256_file(p: &Path) -> String {
    hex::encode(Sha256::digest(std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))))
}

/// The static agent, built (or found up to date) by cargo in the workspace target directory.
fn musl_agent() -> PathBuf {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let started = Instant::now();
    let st = Command::new(cargo)
        .current_dir(repo())
        .args(["build", "-q", "--locked", "--release", "--target", MUSL, "-p", "cloister-agent"])
        .status()
        .unwrap();
    assert!(st.success(), "building the musl agent failed: {st}");
    eprintln!("musl agent build/check: {:?}", started.elapsed());
    // bin_dir() is <target>/<profile>; the musl build is <target>/<triple>/release.
    cloister_e2e::bin_dir().parent().unwrap().join(MUSL).join("release/cloister-agent")
}

/// `<dir>`: a busybox root filesystem for the test container.
fn busybox_rootfs(dir: &Path) {
    std::fs::create_dir_all(dir.join("bin")).unwrap();
    for d in ["proc", "dev", "sys", "tmp", "etc"] {
        std::fs::create_dir_all(dir.join(d)).unwrap();
    }
    std::fs::copy("/bin/busybox", dir.join("bin/busybox")).unwrap();
    for applet in ["sh", "echo", "cat", "uname", "hostname", "test"] {
        std::os::unix::fs::symlink("busybox", dir.join("bin").join(applet)).unwrap();
    }
}

struct GuestImage {
    dir: PathBuf,
    cmdline: String,
}

/// Builds the image with `runtime/guest/build.sh`, or reuses the cached build for the same inputs.
fn guest_image(p: &Prereqs) -> GuestImage {
    let repo = repo();
    let agent = musl_agent();
    let inputs = [
        repo.join("runtime/guest/build.sh"),
        repo.join("runtime/guest/init"),
        repo.join("policies/agent/allow_all.rego"),
        p.kernel_deb.clone(),
        agent.clone(),
        PathBuf::from("/bin/busybox"),
    ];
    let mut key = Sha256::new();
    for i in &inputs {
        key.update(sha256_file(i).as_bytes());
    }
    key.update(Path::new(OVMF).exists().to_string().as_bytes());
    let key = hex::encode(key.finalize());
    let cache = PathBuf::from("/var/tmp/cloister-guest-cache");
    let dir = cache.join(&key[..16]);
    if !dir.join("SHA256SUMS").exists() {
        let started = Instant::now();
        std::fs::create_dir_all(&cache).unwrap();
        let tmp = tempfile::tempdir_in(&cache).unwrap();
        let rootfs = tmp.path().join("busybox-rootfs");
        busybox_rootfs(&rootfs);
        let mut cmd = Command::new(repo.join("runtime/guest/build.sh"));
        cmd.arg("--out").arg(tmp.path().join("out"));
        cmd.arg("--kernel-deb").arg(&p.kernel_deb);
        cmd.arg("--agent").arg(&agent);
        cmd.arg("--local-image").arg(format!("busybox={}", rootfs.display()));
        if !Path::new(OVMF).exists() {
            cmd.args(["--firmware", "none"]);
        }
        if let Some(c) = cloister_e2e::binary("cloister") {
            cmd.env("CLOISTER", c);
        }
        let st = cmd.status().unwrap();
        assert!(st.success(), "build.sh failed: {st}");
        // Publish atomically: another test run may be building the same key.
        let _ = std::fs::rename(tmp.path().join("out"), &dir);
        eprintln!("guest image built in {:?}", started.elapsed());
    } else {
        eprintln!("guest image reused from {}", dir.display());
    }
    let cmdline = std::fs::read_to_string(dir.join("cmdline.txt")).unwrap();
    GuestImage { dir, cmdline }
}

fn console_tail(path: &Path) -> String {
    let console = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = console.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

fn container(id: &str, args: &[&str]) -> CreateContainerRequest {
    CreateContainerRequest {
        container_id: id.into(),
        storages: vec![Storage {
            driver: DRIVER_IMAGE_GUEST_PULL.into(),
            source: "busybox".into(),
            ..Default::default()
        }],
        oci: Some(Spec {
            process: Some(Process {
                args: args.iter().map(|s| s.to_string()).collect(),
                env: vec!["PATH=/bin".into()],
                cwd: "/".into(),
                ..Default::default()
            }),
            mounts: vec![Mount { destination: "/proc".into(), r#type: "proc".into(), ..Default::default() }],
            hostname: "guest-box".into(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

#[test]
fn agent_in_a_real_guest_runs_a_container_over_virtio_serial() {
    let Some(p) = prerequisites() else { return };
    let image = guest_image(&p);
    let kernel = image.dir.join("vmlinux");
    let initrd = image.dir.join("initrd.img");

    // The reference measurement the build printed is the launcher's for the same files.
    if image.dir.join("measurements.json").exists() {
        let json: serde_json::Value =
            serde_json::from_slice(&std::fs::read(image.dir.join("measurements.json")).unwrap()).unwrap();
        let mut snp = VmConfig::new("measure", &kernel, "/nonexistent");
        snp.initrd = Some(initrd.clone());
        snp.cmdline = image.cmdline.clone();
        snp.firmware = Some(OVMF.into());
        snp.tee = TeeKind::SevSnp(SnpConfig::default());
        let expected = expected_measurement(&snp).unwrap();
        assert_eq!(json["measurement"].as_str(), expected.hex().as_deref(), "measurements.json vs launcher");
    }

    let run = tempfile::tempdir().unwrap();
    let socket = run.path().join("agent.sock");
    let mut cfg = VmConfig::new("guest", &kernel, run.path());
    cfg.accel = Accel::Tcg;
    cfg.memory_mib = 512;
    cfg.initrd = Some(initrd);
    cfg.cmdline = image.cmdline.clone();
    cfg.channel = Channel::VirtioSerial { socket: socket.clone() };
    let launcher = QemuLauncher { binary: Some(p.qemu.clone()), ..QemuLauncher::default() };

    let start = Instant::now();
    let mut vm = launcher.launch(&cfg).unwrap();
    let console = vm.console_log().to_path_buf();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let result = rt.block_on(async {
        let stream = tokio::net::UnixStream::connect(&socket).await.unwrap();
        let client = AgentClient::new(stream).with_timeout(Some(Duration::from_secs(180)));
        // Ready = the first answer (the agent is not there until the guest has booted and opened
        // the port; the request waits in the channel meanwhile).
        let e = client.stats_container("not-there").await.unwrap_err();
        assert_eq!(e.code(), Some(Code::NotFound.as_i32()), "{e}");
        let ready = start.elapsed();

        let run_start = Instant::now();
        let script = "echo hello from $(hostname); uname -r >&2; exit 7";
        client.create_container(&container("hello", &["/bin/sh", "-c", script])).await.unwrap();
        client.start_container("hello").await.unwrap();
        let status = client.wait_process("hello", "").await.unwrap();
        let out = client.read_to_end("hello", "", false, 1 << 20).await.unwrap();
        let err = client.read_to_end("hello", "", true, 1 << 20).await.unwrap();
        client.remove_container("hello", 10).await.unwrap();
        let ran = run_start.elapsed();
        client.destroy_sandbox().await.unwrap();
        (ready, ran, status, String::from_utf8_lossy(&out).into_owned(), String::from_utf8_lossy(&err).into_owned())
    });
    let (ready, ran, status, out, err) = result;
    assert_eq!(out, "hello from guest-box\n", "console:\n{}", console_tail(&console));
    assert_eq!(status, 7);
    // The container ran on the guest's kernel (the cloud kernel), not the host's.
    assert!(err.trim_end().ends_with("-cloud-amd64"), "uname -r in the guest: {err:?}");
    let exit = vm.wait_timeout(Duration::from_secs(60)).unwrap();
    let total = start.elapsed();
    assert!(exit.is_some(), "QEMU still running 60 s after DestroySandbox; console:\n{}", console_tail(&console));
    assert!(
        std::fs::read_to_string(&console).unwrap_or_default().contains("powering off"),
        "the guest did not power off cleanly; console:\n{}",
        console_tail(&console)
    );
    eprintln!(
        "guest boot: agent ready after {ready:?}; container create..remove {ran:?}; total (to QEMU exit) {total:?}"
    );
}
