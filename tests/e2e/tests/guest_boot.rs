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

use std::time::{Duration, Instant};

use cloister_agent::AgentClient;
use cloister_agent::proto::{CreateContainerRequest, DRIVER_IMAGE_GUEST_PULL, Mount, Process, Spec, Storage};
use cloister_agent::ttrpc::Code;
use cloister_e2e::guest::{ImageOptions, OVMF, console_tail, guest_image, prerequisites};
use cloister_launcher::{Accel, Channel, Launcher, QemuLauncher, SnpConfig, TeeKind, VmConfig, expected_measurement};

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
    let image = guest_image(&p, &ImageOptions { local_busybox: true, ..Default::default() });
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
