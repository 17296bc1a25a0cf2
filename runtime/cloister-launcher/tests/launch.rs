//! Launch-path errors with the real QEMU (skipped when `qemu-system-x86_64` is not installed) and
//! with a fake QEMU script: missing binary, missing confidential object (fail closed), QEMU exiting
//! during start, QMP never ready, missing emulated endpoint. No guest kernel needed.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use cloister_launcher::{
    Accel, Channel, EmulatedConfig, LaunchError, Launcher, QemuLauncher, SnpConfig, TdxConfig, TeeKind, VmConfig,
};

fn qemu() -> Option<PathBuf> {
    let found = std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| Path::new(d).join("qemu-system-x86_64"))
        .find(|p| p.is_file());
    if found.is_none() {
        eprintln!("skipping: qemu-system-x86_64 not found");
    }
    found
}

fn alive(pid: u32) -> bool {
    // A zombie still has /proc/<pid>; count it as gone.
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => !s.rsplit(')').next().unwrap_or("").trim_start().starts_with('Z'),
        Err(_) => false,
    }
}

#[test]
fn missing_binary_is_typed() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = VmConfig::new("nobin", "/nonexistent/kernel", dir.path());
    cfg.accel = Accel::Tcg;
    let l = QemuLauncher { binary: Some("/nonexistent/qemu-system-x86_64".into()), ..QemuLauncher::default() };
    let e = l.launch(&cfg).unwrap_err();
    assert!(matches!(e, LaunchError::QemuNotFound { package: "qemu-system-x86", .. }), "{e}");
}

#[test]
fn confidential_config_on_old_qemu_fails_closed() {
    let Some(bin) = qemu() else { return };
    let dir = tempfile::tempdir().unwrap();
    let l = QemuLauncher { binary: Some(bin), ..QemuLauncher::default() };
    let caps = cloister_launcher::QemuCapabilities::probe(l.binary.as_deref().unwrap()).unwrap();
    for (tee, object) in
        [(TeeKind::SevSnp(SnpConfig::default()), "sev-snp-guest"), (TeeKind::Tdx(TdxConfig::default()), "tdx-guest")]
    {
        if caps.has_object(object) {
            eprintln!("note: this QEMU has {object}; the fail-closed path is covered by unit tests");
            continue;
        }
        let mut cfg = VmConfig::new("conf", "/nonexistent/kernel", dir.path());
        cfg.firmware = Some("/nonexistent/OVMF.fd".into());
        cfg.tee = tee;
        let e = l.launch(&cfg).unwrap_err();
        let msg = e.to_string();
        assert!(matches!(e, LaunchError::MissingConfidentialObject { object: o, .. } if o == object), "{msg}");
        assert!(msg.contains(object) && msg.contains("refusing"), "{msg}");
        // Nothing was started: no QMP socket, no log.
        assert!(!dir.path().join("qmp.sock").exists());
        assert!(!dir.path().join("qemu.log").exists());
    }
}

#[test]
fn qemu_exiting_during_start_reports_its_log() {
    let Some(bin) = qemu() else { return };
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = VmConfig::new("badkernel", dir.path().join("no-such-kernel"), dir.path());
    cfg.accel = Accel::Tcg;
    cfg.channel = Channel::VirtioSerial { socket: dir.path().join("agent.sock") };
    let l = QemuLauncher { binary: Some(bin), ..QemuLauncher::default() };
    let e = l.launch(&cfg).unwrap_err();
    let LaunchError::QemuExited { log_tail, .. } = &e else { panic!("{e}") };
    assert!(log_tail.contains("no-such-kernel"), "{e}");
    assert!(!dir.path().join("qmp.sock").exists(), "QMP socket left behind");
    assert!(!dir.path().join("agent.sock").exists(), "agent socket left behind");
}

#[test]
fn emulated_endpoint_must_exist() {
    let Some(bin) = qemu() else { return };
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = VmConfig::new("emu", "/nonexistent/kernel", dir.path());
    cfg.accel = Accel::Tcg;
    cfg.tee = TeeKind::EmulatedSnp(EmulatedConfig {
        endpoint: dir.path().join("psp.sock"),
        reference_firmware: None,
        snp: SnpConfig::default(),
    });
    let l = QemuLauncher { binary: Some(bin), ..QemuLauncher::default() };
    let e = l.launch(&cfg).unwrap_err();
    assert!(matches!(e, LaunchError::EmulatedEndpointMissing(_)), "{e}");
}

/// A "QEMU" that answers the probes and then never opens its QMP socket.
fn fake_qemu(dir: &Path) -> PathBuf {
    let script = dir.join("fake-qemu");
    let pidfile = dir.join("fake.pid");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\ncase \"$1\" in\n  --version) echo 'QEMU emulator version 0.0.0 (fake)';;\n  -object) printf 'List of user creatable objects:\\n  memory-backend-memfd\\n';;\n  *) echo $$ > {pid}; echo 'fake qemu started'; exec sleep 60;;\nesac\n",
            pid = pidfile.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    script
}

#[test]
fn qmp_never_ready_times_out_and_kills_the_process() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    let mut cfg = VmConfig::new("hang", "/nonexistent/kernel", &run);
    cfg.accel = Accel::Tcg;
    let l = QemuLauncher {
        binary: Some(fake_qemu(dir.path())),
        ready_timeout: Duration::from_millis(600),
        ..QemuLauncher::default()
    };
    let e = l.launch(&cfg).unwrap_err();
    assert!(matches!(e, LaunchError::QmpTimeout { timeout_ms: 600, .. }), "{e}");
    let pid: u32 = std::fs::read_to_string(dir.path().join("fake.pid")).unwrap().trim().parse().unwrap();
    assert!(!alive(pid), "fake QEMU {pid} still running after the timeout");
    assert!(std::fs::read_to_string(run.join("qemu.log")).unwrap().contains("fake qemu started"));
}
