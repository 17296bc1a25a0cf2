//! The runtime acceptance test with real components: Debian's `containerd` 1.6 started with a
//! private configuration, our `containerd-shim-cloister-v2` found on its `PATH`, Debian's
//! `docker-registry` holding a busybox image, and `ctr run --runtime io.containerd.cloister.v2`
//! printing the output of a command that ran inside a QEMU (TCG) guest whose agent pulled the
//! image itself.
//!
//! * degenerate path (no TEE): output, exit code, stderr, `ctr task kill`, and nothing left
//!   behind (no QEMU, no run directory);
//! * emulated SEV-SNP path: the guest attests to `cloister-kbs` before pulling; under the
//!   broker's default policy the container never starts and `ctr` says why; with the emulated
//!   policy and the reference measurement the command runs; the confidential agent policy from
//!   initdata refuses `ctr task exec` and an image it does not list.
//!
//! Needs root, `containerd`, `ctr`, `docker-registry`, `skopeo`, `tar`, `gzip` and the guest
//! image prerequisites (see `cloister_e2e::guest`); the emulated path also needs the reference
//! firmware `debian-sid/OVMF.amdsev.fd` under `$CLOISTER_FIXTURES/firmware`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use cloister_e2e::containerd::{
    Containerd, RUNTIME, assert_no_vms_under, bare_boot, consoles_under, is_root, kill, pids_with, qemus_with, rss_kib,
    text,
};
use cloister_e2e::guest::{GuestImage, ImageOptions, guest_image, missing, prerequisites, which};
use cloister_e2e::registry::{Registry, layout_of};
use cloister_e2e::{KbsProcess, binary, run};

struct Setup {
    _dir: tempfile::TempDir,
    d: PathBuf,
    image: GuestImage,
    containerd: Containerd,
    registry: Registry,
    cloister: PathBuf,
}

impl Setup {
    fn new() -> Option<Setup> {
        let p = prerequisites()?;
        for tool in ["containerd", "ctr", "docker-registry", "skopeo", "tar", "gzip"] {
            if which(tool).is_none() {
                return missing(&format!("{tool} not installed (apt-get install containerd docker-registry skopeo)"));
            }
        }
        if !is_root() {
            return missing("containerd needs root");
        }
        binary("containerd-shim-cloister-v2")?;
        let cloister = binary("cloister")?;
        // The guest pulls over QEMU user networking: loopback registries are the host's, at
        // 10.0.2.2, over plain HTTP (test registries only).
        let image = guest_image(
            &p,
            &ImageOptions {
                local_busybox: false,
                agent_args: vec!["--insecure-registry=127.0.0.1:*".into(), "--registry-loopback-via=10.0.2.2".into()],
            },
        );
        let dir = tempfile::Builder::new().prefix("ctr").tempdir_in("/tmp").unwrap();
        let d = dir.path().to_owned();
        let registry = Registry::start(&d).unwrap();
        let rootfs = d.join("busybox-rootfs");
        cloister_e2e::guest::busybox_rootfs(&rootfs).unwrap();
        layout_of(&rootfs, &d.join("busybox-layout")).unwrap();
        for name in ["busybox", "other"] {
            let o = run(Command::new("skopeo")
                .args(["--insecure-policy", "copy", "-q", "--dest-tls-verify=false"])
                .arg(format!("oci:{}:v1", d.join("busybox-layout").display()))
                .arg(format!("docker://{}/{name}:v1", registry.host)));
            assert!(o.status.success(), "skopeo push: {}", text(&o.stderr));
        }
        let containerd = Containerd::start(&d);
        for name in ["busybox", "other"] {
            containerd.pull_plain_http(&format!("{}/{name}:v1", registry.host));
        }
        Some(Setup { _dir: dir, d, image, containerd, registry, cloister })
    }

    fn runtime_config(&self, name: &str, extra: &str) -> PathBuf {
        let p = self.d.join(format!("{name}.toml"));
        fs::write(
            &p,
            format!(
                "[guest]\nkernel = \"{}\"\ninitrd = \"{}\"\ncmdline_file = \"{}\"\n\
                 [vm]\naccel = \"tcg\"\nmemory_mib = 512\nboot_timeout_secs = 120\nrun_root = \"{}\"\n{extra}",
                self.image.kernel().display(),
                self.image.initrd().display(),
                self.image.dir.join("cmdline.txt").display(),
                self.d.join("vm").display()
            ),
        )
        .unwrap();
        p
    }

    fn image_ref(&self, name: &str) -> String {
        format!("{}/{name}:v1", self.registry.host)
    }

    /// `ctr run --rm` with the runtime config at `cfg`; returns (output, wall time).
    fn ctr_run(&self, cfg: &Path, image: &str, id: &str, extra: &[&str], cmd: &[&str]) -> (Output, Duration) {
        let started = Instant::now();
        let mut args = vec!["run", "--rm", "--snapshotter", "native", "--runtime", RUNTIME, "--runtime-config-path"];
        let cfg = cfg.display().to_string();
        args.push(&cfg);
        args.extend_from_slice(extra);
        args.push(image);
        args.push(id);
        args.extend_from_slice(cmd);
        let o = self.containerd.ctr(&args);
        (o, started.elapsed())
    }

    /// `ctr run -d` (detached) with the runtime config at `cfg`.
    fn run_detached(&self, cfg: &Path, image: &str, id: &str, extra: &[&str], cmd: &[&str]) -> Output {
        let cfg = cfg.display().to_string();
        let mut args =
            vec!["run", "-d", "--snapshotter", "native", "--runtime", RUNTIME, "--runtime-config-path", &cfg];
        args.extend_from_slice(extra);
        args.push(image);
        args.push(id);
        args.extend_from_slice(cmd);
        self.containerd.ctr(&args)
    }

    fn diagnostics(&self) -> String {
        format!("--- containerd log (tail)\n{}\n{}", self.containerd.log_tail(60), consoles_under(&self.d.join("vm")))
    }

    fn assert_clean(&self) {
        assert_no_vms_under(&self.d.join("vm"), || self.diagnostics());
    }
}

#[test]
fn ctr_runs_containers_in_vms() {
    let Some(s) = Setup::new() else { return };
    let busybox = s.image_ref("busybox");

    // 1. The degenerate path: a plain VM, the guest pulls the image, output and exit code.
    let plain = s.runtime_config("cloister-qemu", "");
    let (o, took) = s.ctr_run(
        &plain,
        &busybox,
        "hello",
        &[],
        &["/bin/sh", "-c", "echo hello from $(uname -r); echo to-stderr >&2; exit 3"],
    );
    let out = text(&o.stdout);
    assert!(
        out.starts_with("hello from ") && out.trim_end().ends_with("-cloud-amd64"),
        "stdout {out:?}, stderr {}\n{}",
        text(&o.stderr),
        s.diagnostics()
    );
    assert_eq!(o.status.code(), Some(3), "{}", text(&o.stderr));
    assert!(text(&o.stderr).contains("to-stderr"), "{}", text(&o.stderr));
    eprintln!("ctr run (degenerate, TCG) to exit: {took:?}");
    s.assert_clean();

    // 2. `ctr task kill` of a detached, long-running container.
    let o = s.run_detached(&plain, &busybox, "sleeper", &[], &["/bin/sleep", "600"]);
    assert!(o.status.success(), "ctr run -d: {}\n{}", text(&o.stderr), s.diagnostics());
    let o = s.containerd.ctr(&["task", "kill", "--signal", "SIGKILL", "sleeper"]);
    assert!(o.status.success(), "ctr task kill: {}", text(&o.stderr));
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let o = s.containerd.ctr(&["task", "ls"]);
        let ls = text(&o.stdout);
        if ls.lines().any(|l| l.starts_with("sleeper") && l.contains("STOPPED")) {
            break;
        }
        assert!(Instant::now() < deadline, "sleeper not stopped: {ls}");
        std::thread::sleep(Duration::from_millis(200));
    }
    let o = s.containerd.ctr(&["task", "delete", "sleeper"]);
    assert!(o.status.success(), "ctr task delete: {}", text(&o.stderr));
    let o = s.containerd.ctr(&["containers", "delete", "sleeper"]);
    assert!(o.status.success(), "ctr containers delete: {}", text(&o.stderr));
    s.assert_clean();

    // 3. A broken guest image: QEMU fails, the error reaches ctr, nothing is left.
    let broken = s.d.join("broken.toml");
    fs::write(
        &broken,
        fs::read_to_string(&plain).unwrap().replace(&s.image.kernel().display().to_string(), "/nonexistent/vmlinux"),
    )
    .unwrap();
    let (o, _) = s.ctr_run(&broken, &busybox, "broken", &[], &["/bin/true"]);
    assert!(!o.status.success());
    let err = text(&o.stderr);
    assert!(err.contains("starting the pod VM"), "{err}");
    let _ = s.containerd.ctr(&["containers", "delete", "broken"]);
    s.assert_clean();

    // 4. QEMU missing, and a guest that never answers in time: clear errors, nothing left.
    let no_qemu = s.runtime_config("no-qemu", "qemu = \"/nonexistent/qemu-system-x86_64\"\n");
    let (o, _) = s.ctr_run(&no_qemu, &busybox, "no-qemu", &[], &["/bin/true"]);
    let err = text(&o.stderr);
    assert!(!o.status.success() && err.contains("/nonexistent/qemu-system-x86_64"), "{err}");
    let _ = s.containerd.ctr(&["containers", "delete", "no-qemu"]);
    s.assert_clean();
    let slow = s.d.join("slow.toml");
    fs::write(&slow, fs::read_to_string(&plain).unwrap().replace("boot_timeout_secs = 120", "boot_timeout_secs = 1"))
        .unwrap();
    let (o, _) = s.ctr_run(&slow, &busybox, "slow", &[], &["/bin/true"]);
    let err = text(&o.stderr);
    assert!(!o.status.success() && err.contains("did not answer within 1s"), "{err}");
    let _ = s.containerd.ctr(&["containers", "delete", "slow"]);
    s.assert_clean();

    // 5. Speed and memory against a bare QEMU boot of the same kernel and initrd (to the agent's
    //    first answer), in the same run; then the agent channel dropped under a running pod
    //    (QEMU killed): the task ends with 137 and everything is cleaned up.
    let bare = bare_boot(&s.image, &s.d.join("bare"));
    // One VM at a time (2 cores): the pod start is timed with nothing else running.
    let (o, pod_start) = s.ctr_run(&plain, &busybox, "timed", &[], &["/bin/echo", "ready"]);
    assert_eq!(text(&o.stdout), "ready\n", "{}", text(&o.stderr));
    let o = s.run_detached(&plain, &busybox, "idle", &[], &["/bin/sleep", "600"]);
    assert!(o.status.success(), "ctr run -d: {}\n{}", text(&o.stderr), s.diagnostics());
    std::thread::sleep(Duration::from_secs(2));
    let vm_root = s.d.join("vm").display().to_string();
    let qemu = qemus_with(&vm_root);
    assert_eq!(qemu.len(), 1, "{qemu:?}");
    let shim = pids_with("containerd-shim-cloister-v2", "idle");
    let (qemu_rss, shim_rss) = (rss_kib(qemu[0]), shim.iter().map(|p| rss_kib(*p)).sum::<u64>());
    let report = serde_json::json!({
        "bare_qemu_boot_to_agent_s": bare.0.as_secs_f64(),
        "ctr_run_to_output_s": pod_start.as_secs_f64(),
        "pod_start_ratio": pod_start.as_secs_f64() / bare.0.as_secs_f64(),
        "bare_qemu_rss_kib": bare.1,
        "pod_qemu_rss_kib": qemu_rss,
        "pod_shim_rss_kib": shim_rss,
        "pod_memory_ratio": (qemu_rss + shim_rss) as f64 / bare.1 as f64,
    });
    eprintln!("runtime speed/memory (goals: start <= 1.3x, memory <= 1.2x): {report}");
    let _ = fs::write(std::env::temp_dir().join("cloister-runtime-bench.json"), report.to_string());
    kill(qemu[0]);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let ls = text(&s.containerd.ctr(&["task", "ls"]).stdout);
        if ls.lines().any(|l| l.starts_with("idle") && l.contains("STOPPED")) {
            break;
        }
        assert!(Instant::now() < deadline, "idle not stopped after QEMU died: {ls}");
        std::thread::sleep(Duration::from_millis(200));
    }
    let o = s.containerd.ctr(&["task", "delete", "idle"]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let _ = s.containerd.ctr(&["containers", "delete", "idle"]);
    s.assert_clean();
    assert!(pids_with("containerd-shim-cloister-v2", "idle").is_empty(), "the shim outlived its pod");

    emulated_snp(&s);
}

/// The emulated SEV-SNP handler: attestation before pull, agent policy from initdata.
fn emulated_snp(s: &Setup) {
    let Some(fixtures) = std::env::var_os("CLOISTER_FIXTURES").map(PathBuf::from) else {
        eprintln!("skipping the emulated-SNP part: CLOISTER_FIXTURES not set (reference firmware)");
        return;
    };
    let ovmf = fixtures.join("firmware/debian-sid/OVMF.amdsev.fd");
    assert!(ovmf.exists(), "{} missing", ovmf.display());
    let Some(kbs_bin) = binary("cloister-kbs") else { return };
    let d = &s.d;
    let cloister = &s.cloister;
    let ok = |o: Output, what: &str| -> String {
        assert!(o.status.success(), "{what}: {}", text(&o.stderr));
        text(&o.stdout)
    };
    ok(run(Command::new(cloister).args(["emulate", "init", "--dir"]).arg(d.join("platform"))), "emulate init");
    let roots =
        ok(run(Command::new(cloister).args(["emulate", "kbs-config", "--dir"]).arg(d.join("platform"))), "kbs-config");
    // Plain HTTP on loopback: the guest reaches it at 10.0.2.2 (a pinned certificate in
    // initdata is the production setting; the test keeps the guest image generic).
    let kbs = KbsProcess::start(
        &kbs_bin,
        d,
        &format!("[http_server]\nsockets = [\"127.0.0.1:0\"]\ninsecure_http = true\nauth_rate_limit = 0\n{roots}"),
    )
    .unwrap();
    let port = kbs.url.rsplit(':').next().unwrap().to_owned();
    let admin = |args: &[&str]| {
        let mut c = Command::new(cloister);
        c.args(["kbs", "--url", &kbs.url]);
        if let Some(fp) = &kbs.cert_sha256 {
            c.args(["--cert-sha256", fp]);
        }
        c.args(["config", "--admin-key"]).arg(&kbs.admin_key).args(args);
        run(&mut c)
    };

    // Initdata: the key broker, and the confidential agent policy allowing only busybox.
    let busybox = s.image_ref("busybox");
    let policy = fs::read_to_string(cloister_e2e::guest::repo().join("policies/agent/confidential.rego")).unwrap();
    let data = serde_json::json!({"allowed_images": [busybox], "allowed_env": ["PATH=.*", "HOSTNAME=.*", "TERM=.*"]});
    let policy = policy.replace("policy_data := data.policy_data", &format!("policy_data := {data}"));
    let initdata = format!(
        "version = \"0.1.0\"\nalgorithm = \"sha384\"\n[data]\n\"cdh.toml\" = '''\n[kbc]\nname = \"cc_kbc\"\nurl = \"http://10.0.2.2:{port}\"\n'''\n\"policy.rego\" = '''\n{policy}'''\n"
    );
    let annotation = {
        fs::write(d.join("initdata.toml"), &initdata).unwrap();
        let gz = run(Command::new("gzip").args(["-n", "-c"]).arg(d.join("initdata.toml")));
        fs::write(d.join("initdata.gz"), &gz.stdout).unwrap();
        let b64 = run(Command::new("base64").arg("-w0").arg(d.join("initdata.gz")));
        format!("io.katacontainers.config.hypervisor.cc_init_data={}", text(&b64.stdout))
    };
    let emulated = s.runtime_config(
        "cloister-qemu-emulated",
        &format!(
            "tee = \"emulated-snp\"\n[emulated]\nplatform_dir = \"{}\"\nreference_firmware = \"{}\"\n",
            d.join("platform").display(),
            ovmf.display()
        ),
    );
    let ann = ["--annotation", annotation.as_str()];

    // a. The broker's default policy does not trust the emulated platform: the guest's
    //    attestation is not affirmed, the image is never pulled, ctr says why.
    let (o, _) = s.ctr_run(&emulated, &busybox, "emu-deny", &ann, &["/bin/echo", "must not run"]);
    assert!(!o.status.success(), "ran under the default policy: {}", text(&o.stdout));
    let err = text(&o.stderr);
    assert!(
        err.contains("attestation to the key broker failed") && err.contains("contraindicated"),
        "{err}\n{}",
        s.diagnostics()
    );
    assert!(!text(&o.stdout).contains("must not run"));
    let _ = s.containerd.ctr(&["containers", "delete", "emu-deny"]);
    s.assert_clean();

    // b. The emulated policy and the reference measurement of exactly this guest: it runs.
    let m = ok(
        run(Command::new(cloister)
            .args(["measure", "--mode", "snp", "--vcpus", "1", "--vcpu-type", "EPYC-v4", "--ovmf"])
            .arg(&ovmf)
            .arg("--kernel")
            .arg(s.image.kernel())
            .arg("--initrd")
            .arg(s.image.initrd())
            .args(["--append", s.image.cmdline.trim_end(), "--output", "json"])),
        "measure",
    );
    fs::write(d.join("measure.json"), &m).unwrap();
    ok(admin(&["set-reference-values", "--file", d.join("measure.json").to_str().unwrap()]), "set-reference-values");
    let policies = cloister_e2e::guest::repo().join("policies");
    ok(
        admin(&[
            "set-attestation-policy",
            "--policy-file",
            policies.join("attestation/emulated_cpu.rego").to_str().unwrap(),
        ]),
        "attestation policy",
    );
    let (o, took) = s.ctr_run(&emulated, &busybox, "emu-ok", &ann, &["/bin/echo", "attested and running"]);
    assert_eq!(text(&o.stdout), "attested and running\n", "stderr {}\n{}", text(&o.stderr), s.diagnostics());
    assert!(o.status.success());
    eprintln!("ctr run (emulated SNP, attestation, TCG) to exit: {took:?}");
    s.assert_clean();

    // c. The confidential agent policy refuses an image it does not list …
    let (o, _) = s.ctr_run(&emulated, &s.image_ref("other"), "emu-other", &ann, &["/bin/echo", "must not run"]);
    assert!(!o.status.success());
    let err = text(&o.stderr);
    assert!(err.contains("policy denied CreateContainerRequest"), "{err}\n{}", s.diagnostics());
    let _ = s.containerd.ctr(&["containers", "delete", "emu-other"]);
    s.assert_clean();

    // d. … and exec from the host.
    let o = s.run_detached(&emulated, &busybox, "emu-exec", &ann, &["/bin/sleep", "600"]);
    assert!(o.status.success(), "ctr run -d: {}\n{}", text(&o.stderr), s.diagnostics());
    let o = s.containerd.ctr(&["task", "exec", "--exec-id", "x1", "emu-exec", "/bin/echo", "from the host"]);
    assert!(!o.status.success());
    let err = text(&o.stderr);
    assert!(err.contains("policy denied ExecProcessRequest"), "{err}");
    assert!(!text(&o.stdout).contains("from the host"));
    let _ = s.containerd.ctr(&["task", "kill", "--signal", "SIGKILL", "emu-exec"]);
    std::thread::sleep(Duration::from_secs(1));
    let _ = s.containerd.ctr(&["task", "delete", "--force", "emu-exec"]);
    let _ = s.containerd.ctr(&["containers", "delete", "emu-exec"]);
    s.assert_clean();
}
