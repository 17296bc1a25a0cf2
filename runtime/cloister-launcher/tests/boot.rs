//! Real boots: a plain TCG VM (q35, `-cpu max`, runtime.md §5.4) with the Debian cloud kernel and a
//! tiny initrd built here (busybox-static as `/init`'s shell) that prints a marker on the serial
//! console and powers off. Then the QMP `quit` and drop paths on a booting VM. Every path must
//! leave no QEMU process and no socket.
//!
//! Needs `qemu-system-x86_64` (Debian `qemu-system-x86`), `/bin/busybox` (Debian `busybox-static`)
//! and a kernel: `$CLOISTER_TEST_KERNEL`, else `/boot/vmlinuz-*-cloud-amd64` (Debian
//! `linux-image-cloud-amd64`), else any `/boot/vmlinuz-*`. Skips with a message otherwise.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use cloister_launcher::{Accel, Channel, LaunchMeasurement, Launcher, QemuLauncher, VmConfig};

const MARKER: &str = "CLOISTER-LAUNCHER-BOOT-OK";

/// Boots are CPU-bound (≈ 4–5 CPU-seconds each under TCG): one at a time (runtime.md §5.2).
static BOOTS: Mutex<()> = Mutex::new(());

fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?.to_str()?.split(':').map(|d| Path::new(d).join(name)).find(|p| p.is_file())
}

fn kernel() -> Option<PathBuf> {
    if let Some(k) = std::env::var_os("CLOISTER_TEST_KERNEL") {
        return Some(k.into());
    }
    let mut ks: Vec<PathBuf> = std::fs::read_dir("/boot")
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("vmlinuz-")))
        .collect();
    ks.sort();
    ks.iter().rev().find(|p| p.to_string_lossy().ends_with("cloud-amd64")).or(ks.last()).cloned()
}

fn prerequisites() -> Option<(PathBuf, PathBuf, PathBuf)> {
    let Some(qemu) = which("qemu-system-x86_64") else {
        eprintln!("skipping: qemu-system-x86_64 not found (Debian package qemu-system-x86)");
        return None;
    };
    let busybox = PathBuf::from("/bin/busybox");
    if !busybox.is_file() {
        eprintln!("skipping: /bin/busybox not found (Debian package busybox-static)");
        return None;
    }
    let Some(kernel) = kernel() else {
        eprintln!("skipping: no guest kernel (set CLOISTER_TEST_KERNEL or install linux-image-cloud-amd64)");
        return None;
    };
    Some((qemu, busybox, kernel))
}

/// One newc cpio entry.
fn cpio_entry(out: &mut Vec<u8>, ino: u32, name: &str, mode: u32, rdev: (u32, u32), data: &[u8]) {
    let header = format!(
        "070701{ino:08x}{mode:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}",
        0,
        0,
        1,
        0,
        data.len(),
        0,
        0,
        rdev.0,
        rdev.1,
        name.len() + 1,
        0
    );
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(name.as_bytes());
    out.push(0);
    while !out.len().is_multiple_of(4) {
        out.push(0);
    }
    out.extend_from_slice(data);
    while !out.len().is_multiple_of(4) {
        out.push(0);
    }
}

/// An uncompressed initramfs: /bin/busybox, /dev/console, and an /init that prints the marker
/// and powers off.
fn build_initrd(busybox: &Path, path: &Path) {
    let bb = std::fs::read(busybox).unwrap();
    let init = format!("#!/bin/busybox sh\n/bin/busybox echo {MARKER}\n/bin/busybox poweroff -f\n");
    let mut out = Vec::new();
    cpio_entry(&mut out, 1, "bin", 0o040755, (0, 0), b"");
    cpio_entry(&mut out, 2, "bin/busybox", 0o100755, (0, 0), &bb);
    cpio_entry(&mut out, 3, "dev", 0o040755, (0, 0), b"");
    cpio_entry(&mut out, 4, "dev/console", 0o020600, (5, 1), b"");
    cpio_entry(&mut out, 5, "init", 0o100755, (0, 0), init.as_bytes());
    cpio_entry(&mut out, 0, "TRAILER!!!", 0, (0, 0), b"");
    std::fs::write(path, out).unwrap();
}

fn config(dir: &Path, name: &str, kernel: &Path) -> VmConfig {
    let initrd = dir.join("initrd.cpio");
    let mut cfg = VmConfig::new(name, kernel, dir.join(name));
    cfg.accel = Accel::Tcg;
    cfg.memory_mib = 256;
    cfg.initrd = Some(initrd);
    cfg.cmdline = "console=ttyS0 panic=-1 no_timer_check rdinit=/init".into();
    cfg.channel = Channel::VirtioSerial { socket: dir.join(name).join("agent.sock") };
    cfg
}

fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => !s.rsplit(')').next().unwrap_or("").trim_start().starts_with('Z'),
        Err(_) => false,
    }
}

fn assert_clean(pid: u32, cfg: &VmConfig) {
    assert!(!alive(pid), "QEMU {pid} still running");
    assert!(!cfg.qmp_socket().exists(), "QMP socket left behind");
    assert!(!cfg.run_dir.join("agent.sock").exists(), "agent socket left behind");
}

#[test]
fn boots_to_init_and_powers_off() {
    let Some((qemu, busybox, kernel)) = prerequisites() else { return };
    let _one = BOOTS.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    build_initrd(&busybox, &dir.path().join("initrd.cpio"));
    let cfg = config(dir.path(), "boot", &kernel);
    let l = QemuLauncher { binary: Some(qemu), ..QemuLauncher::default() };
    let start = Instant::now();
    let mut vm = l.launch(&cfg).unwrap();
    assert_eq!(vm.measurement(), &LaunchMeasurement::None);
    let pid = vm.pid();
    assert!(alive(pid));
    let status = vm.qmp().unwrap().execute("query-status", None).unwrap();
    assert_eq!(status["running"], true, "{status}");

    let deadline = start + Duration::from_secs(90);
    let mut seen = false;
    while Instant::now() < deadline {
        let console = std::fs::read_to_string(vm.console_log()).unwrap_or_default();
        if console.contains(MARKER) {
            seen = true;
            break;
        }
        if vm.try_wait().unwrap().is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let console = std::fs::read_to_string(vm.console_log()).unwrap_or_default();
    assert!(
        seen || console.contains(MARKER),
        "marker not on the console after {:?}; console tail:\n{}",
        start.elapsed(),
        {
            let lines: Vec<&str> = console.lines().collect();
            lines[lines.len().saturating_sub(20)..].join("\n")
        }
    );
    eprintln!("marker after {:?}", start.elapsed());
    // The guest powers off; QEMU (-no-reboot) exits. Fall back to QMP quit if it does not.
    let exited = vm.wait_timeout(Duration::from_secs(20)).unwrap();
    if exited.is_none() {
        eprintln!("guest did not power off in 20 s; quitting over QMP");
        vm.shutdown(Duration::from_secs(5)).unwrap();
    } else {
        vm.wait().unwrap();
    }
    drop(vm);
    assert_clean(pid, &cfg);
}

#[test]
fn qmp_quit_and_drop_leave_no_process() {
    let Some((qemu, busybox, kernel)) = prerequisites() else { return };
    let _one = BOOTS.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    build_initrd(&busybox, &dir.path().join("initrd.cpio"));
    let l = QemuLauncher { binary: Some(qemu), ..QemuLauncher::default() };

    // QMP quit while the guest is booting.
    let cfg = config(dir.path(), "quit", &kernel);
    let mut vm = l.launch(&cfg).unwrap();
    let pid = vm.pid();
    assert!(vm.agent_socket().unwrap().exists(), "agent socket not created");
    let st = vm.shutdown(Duration::from_secs(10)).unwrap();
    eprintln!("quit: {st}");
    assert_clean(pid, &cfg);
    drop(vm);

    // Drop kills the process group.
    let cfg = config(dir.path(), "drop", &kernel);
    let vm = l.launch(&cfg).unwrap();
    let pid = vm.pid();
    drop(vm);
    assert_clean(pid, &cfg);

    // kill() works too, and the socket of a previous run is replaced.
    let mut vm = l.launch(&cfg).unwrap();
    let pid = vm.pid();
    vm.kill().unwrap();
    assert_clean(pid, &cfg);
}
