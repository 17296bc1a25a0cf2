//! The whole mission in one run, with real components only: a confidential pod whose encrypted
//! image opens only after attestation.
//!
//! On loopback: Debian's `docker-registry` holding a tenant image that Debian's `skopeo`
//! encrypted (JWE) and `cloister image rewrap` re-wrapped for CoCo's `attestation-agent` key
//! provider, so its layer key is the key broker resource `default/key/image-kek`;
//! `cloister-kbs` on embedded defaults with the emulated platform's root, the emulated
//! attestation policy, reference values from `cloister measure` (launch measurement of exactly
//! this guest) and `cloister initdata digest` (the tenant's initdata); Debian's containerd 1.6
//! with `containerd-shim-cloister-v2`, which launches each pod in a QEMU (TCG) guest and serves
//! it the emulated SEV-SNP platform.
//!
//! The host never holds the image: `ctr run --rootfs` with the CRI image-name annotation, as
//! with CoCo's guest pull. Scenarios, each reported as its own test:
//!
//! * `emulated_snp_pod`: VM → the agent attests → KEK released → image pulled, decrypted and
//!   run → its output; step timings from the shim, and the pod start against a bare boot.
//! * `emulated_tdx_pod`: the same on the emulated TDX platform (MRTD of the reference TDVF,
//!   MRCONFIGID the initdata digest, collateral under the emulated Intel root).
//! * `tampered_launch`: another kernel command line, hence another measurement: not affirmed,
//!   no key, the container never starts, and `ctr` says why (the trust vector).
//! * `wrong_initdata`: the host swaps the agent policy in initdata. Launched with it (HOST_DATA
//!   follows): the broker refuses initdata that is not the tenant's. Launched with the tenant's
//!   HOST_DATA but handed the swap: the guest sees the mismatch and refuses everything.
//! * `revoked_image`: the signature policy the guest fetches from the key broker before every pull
//!   (initdata's `image_security_policy_uri`) now rejects the repository: no container, and `ctr`
//!   says "signature policy".
//! * `degenerate`: a plain VM without initdata runs an unencrypted image without attestation;
//!   the encrypted image stays closed.
//!
//! Timings go to `$TMPDIR/cloister-confidential-pod.json`. Needs root, containerd, ctr,
//! docker-registry, skopeo, openssl, tar, gzip, the guest image prerequisites
//! (`cloister_e2e::guest`) and, under `$CLOISTER_FIXTURES/firmware/debian-sid/`, `OVMF.amdsev.fd`
//! and `OVMF.inteltdx.ms.fd` (the firmware the emulated measurements are computed against). Failures print the logs of
//! containerd (with the shim's), the key broker and any guest console left.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use cloister_e2e::containerd::{Containerd, RUNTIME, assert_no_vms_under, bare_boot, consoles_under, is_root, text};
use cloister_e2e::guest::{GuestImage, ImageOptions, guest_image, missing, prerequisites, which};
use cloister_e2e::registry::{Registry, layout_of};
use cloister_e2e::{KbsProcess, binary, run};
use serde_json::{Value, json};

const SECRET_TEXT: &str = "the tenant's confidential workload";
const KEK_ID: &str = "kbs:///default/key/image-kek";
/// The tenant's containers-policy.json, a key-broker resource named in initdata.
const IMAGE_POLICY: &str = "kbs:///default/security-policy/tenant";

struct Harness {
    _dir: tempfile::TempDir,
    d: PathBuf,
    image: GuestImage,
    registry: Registry,
    kbs: KbsProcess,
    containerd: Containerd,
    ovmf: PathBuf,
    tdvf: PathBuf,
    /// The tenant's initdata and its pod annotation (`name=value`).
    initdata: String,
    annotation: String,
    setup_steps: Vec<(String, f64)>,
}

fn ok(o: Output, what: &str) -> String {
    assert!(o.status.success(), "{what}: {}{}", text(&o.stdout), text(&o.stderr));
    text(&o.stdout)
}

fn cloister() -> PathBuf {
    binary("cloister").expect("cloister built")
}

impl Harness {
    fn new() -> Option<Harness> {
        let p = prerequisites()?;
        for tool in ["containerd", "ctr", "docker-registry", "skopeo", "openssl", "tar", "gzip"] {
            if which(tool).is_none() {
                return missing(&format!("{tool} not installed (see .ci/run)"));
            }
        }
        if !is_root() {
            return missing("containerd needs root");
        }
        binary("containerd-shim-cloister-v2")?;
        binary("cloister")?;
        let kbs_bin = binary("cloister-kbs")?;
        let Some(fixtures) = std::env::var_os("CLOISTER_FIXTURES").map(PathBuf::from) else {
            return missing("CLOISTER_FIXTURES not set (the reference firmware of the emulated measurement)");
        };
        let ovmf = fixtures.join("firmware/debian-sid/OVMF.amdsev.fd");
        let tdvf = fixtures.join("firmware/debian-sid/OVMF.inteltdx.ms.fd");
        for f in [&ovmf, &tdvf] {
            assert!(f.exists(), "{} missing", f.display());
        }
        let mut steps = Vec::new();
        let mut step = |name: &str, started: Instant| {
            let s = started.elapsed().as_secs_f64();
            eprintln!("setup: {name}: {s:.2}s");
            steps.push((name.to_owned(), s));
        };

        // The same guest image as the runtime test (one cached build serves both).
        let t = Instant::now();
        let image = guest_image(
            &p,
            &ImageOptions {
                local_busybox: false,
                agent_args: vec!["--insecure-registry=127.0.0.1:*".into(), "--registry-loopback-via=10.0.2.2".into()],
            },
        );
        step("guest image", t);
        let dir = tempfile::Builder::new().prefix("cpod").tempdir_in("/tmp").unwrap();
        let d = dir.path().to_owned();

        // The tenant's images: busybox with a confidential file, plain and encrypted.
        let t = Instant::now();
        let registry = Registry::start(&d).unwrap();
        let rootfs = d.join("app-rootfs");
        cloister_e2e::guest::busybox_rootfs(&rootfs).unwrap();
        fs::create_dir_all(rootfs.join("app")).unwrap();
        fs::write(rootfs.join("app/message.txt"), format!("{SECRET_TEXT}\n")).unwrap();
        layout_of(&rootfs, &d.join("plain")).unwrap();
        let skopeo =
            |args: &[&str], what: &str| ok(run(Command::new("skopeo").arg("--insecure-policy").args(args)), what);
        let pathed = |p: &Path| p.display().to_string();
        skopeo(
            &[
                "copy",
                "-q",
                "--dest-tls-verify=false",
                &format!("oci:{}:v1", pathed(&d.join("plain"))),
                &format!("docker://{}/tenant/plain:v1", registry.host),
            ],
            "push plain",
        );
        ok(run(Command::new("openssl").args(["genrsa", "-out"]).arg(d.join("rsa.pem")).arg("2048")), "genrsa");
        ok(
            run(Command::new("openssl")
                .args(["rsa", "-pubout", "-in"])
                .arg(d.join("rsa.pem"))
                .arg("-out")
                .arg(d.join("rsa.pub"))),
            "rsa",
        );
        skopeo(
            &[
                "copy",
                "-q",
                "--encryption-key",
                &format!("jwe:{}", pathed(&d.join("rsa.pub"))),
                &format!("oci:{}:v1", pathed(&d.join("plain"))),
                &format!("oci:{}:v1", pathed(&d.join("enc"))),
            ],
            "skopeo encrypt",
        );
        let kek: [u8; 32] = std::array::from_fn(|i| (i as u8).wrapping_mul(37).wrapping_add(11));
        fs::write(d.join("kek.bin"), kek).unwrap();
        let rewrap = ok(
            run(Command::new(cloister())
                .args(["image", "rewrap", &format!("{}:v1", pathed(&d.join("enc"))), "--decryption-key"])
                .arg(d.join("rsa.pem"))
                .arg("--kek")
                .arg(d.join("kek.bin"))
                .args(["--kid", KEK_ID])),
            "image rewrap",
        );
        assert!(rewrap.contains("\"layers_rewrapped\":1"), "{rewrap}");
        skopeo(
            &[
                "copy",
                "-q",
                "--dest-tls-verify=false",
                &format!("oci:{}:v1", pathed(&d.join("enc"))),
                &format!("docker://{}/tenant/secret:v1", registry.host),
            ],
            "push encrypted",
        );
        step("images built, encrypted and pushed", t);

        // The key broker: emulated root, emulated policies, the KEK, reference values.
        let t = Instant::now();
        ok(run(Command::new(cloister()).args(["emulate", "init", "--dir"]).arg(d.join("platform"))), "emulate init");
        let roots = ok(
            run(Command::new(cloister()).args(["emulate", "kbs-config", "--dir"]).arg(d.join("platform"))),
            "kbs-config",
        );
        // Plain HTTP on loopback, reached by the guest at 10.0.2.2 (a certificate pinned in
        // initdata is the production setting; the test keeps the guest image generic).
        let kbs = KbsProcess::start(
            &kbs_bin,
            &d,
            &format!("[http_server]\nsockets = [\"127.0.0.1:0\"]\ninsecure_http = true\nauth_rate_limit = 0\n{roots}"),
        )
        .unwrap();
        let port = kbs.url.rsplit(':').next().unwrap().to_owned();
        let busybox_ref = format!("{}/tenant/secret:v1", registry.host);
        let initdata = tenant_initdata(&port, &[&busybox_ref], None);
        fs::write(d.join("initdata.toml"), &initdata).unwrap();
        let annotation = ok(
            run(Command::new(cloister()).args(["initdata", "annotation", "--with-name"]).arg(d.join("initdata.toml"))),
            "initdata annotation",
        )
        .trim()
        .to_owned();
        let admin = |args: &[&str], what: &str| {
            let mut c = Command::new(cloister());
            c.args(["kbs", "--url", &kbs.url, "config", "--admin-key"]).arg(&kbs.admin_key).args(args);
            ok(run(&mut c), what)
        };
        admin(
            &["set-resource", "--path", "default/key/image-kek", "--resource-file", &pathed(&d.join("kek.bin"))],
            "KEK",
        );
        // The signature policy the guest fetches before every pull: the tenant's repository only.
        fs::write(d.join("accept.json"), image_policy(&registry.host, "insecureAcceptAnything")).unwrap();
        fs::write(d.join("reject.json"), image_policy(&registry.host, "reject")).unwrap();
        admin(
            &[
                "set-resource",
                "--path",
                IMAGE_POLICY.trim_start_matches("kbs:///"),
                "--resource-file",
                &pathed(&d.join("accept.json")),
            ],
            "image policy",
        );
        let policies = cloister_e2e::guest::repo().join("policies");
        admin(
            &["set-attestation-policy", "--policy-file", &pathed(&policies.join("attestation/emulated_cpu.rego"))],
            "attestation policy",
        );
        admin(
            &["set-resource-policy", "--policy-file", &pathed(&policies.join("resource/emulated.rego"))],
            "resource policy",
        );
        // The launch measurement of exactly this guest (firmware, kernel, initrd, command line).
        let m = ok(
            run(Command::new(cloister())
                .args(["measure", "--mode", "snp", "--vcpus", "1", "--vcpu-type", "EPYC-v4", "--ovmf"])
                .arg(&ovmf)
                .arg("--kernel")
                .arg(image.kernel())
                .arg("--initrd")
                .arg(image.initrd())
                .args(["--append", image.cmdline.trim_end(), "--output", "json"])),
            "measure",
        );
        fs::write(d.join("measure.json"), &m).unwrap();
        admin(&["set-reference-values", "--file", &pathed(&d.join("measure.json"))], "measurement reference value");
        // TDX: MRTD of the TDVF (the emulated TDX platform reports it and MRCONFIGID).
        let m = ok(
            run(Command::new(cloister())
                .args(["measure", "--mode", "tdx", "--ovmf"])
                .arg(&tdvf)
                .args(["--output", "json"])),
            "measure tdx",
        );
        fs::write(d.join("measure-tdx.json"), &m).unwrap();
        admin(&["set-reference-values", "--file", &pathed(&d.join("measure-tdx.json"))], "MRTD reference value");
        // The tenant's initdata digest: a host that launches the pod with other initdata is refused.
        let digest = ok(
            run(Command::new(cloister()).args(["initdata", "digest", "--hex"]).arg(d.join("initdata.toml"))),
            "initdata digest",
        );
        admin(&["set-sample-reference-value", "init_data", digest.trim()], "initdata reference value");
        step("key broker configured", t);

        let t = Instant::now();
        let containerd = Containerd::start(&d);
        step("containerd started", t);
        Some(Harness {
            _dir: dir,
            d,
            image,
            registry,
            kbs,
            containerd,
            ovmf,
            tdvf,
            initdata,
            annotation,
            setup_steps: steps,
        })
    }

    fn image_ref(&self, name: &str) -> String {
        format!("{}/tenant/{name}:v1", self.registry.host)
    }

    /// A handler configuration: the guest image, TCG, `extra` appended.
    fn runtime_config(&self, name: &str, extra: &str) -> PathBuf {
        let p = self.d.join(format!("{name}.toml"));
        fs::write(
            &p,
            format!(
                "[guest]\nkernel = \"{}\"\ninitrd = \"{}\"\ncmdline = \"{}\"\n\
                 [vm]\naccel = \"tcg\"\nmemory_mib = 512\nboot_timeout_secs = 120\nrun_root = \"{}\"\n{extra}",
                self.image.kernel().display(),
                self.image.initrd().display(),
                self.image.cmdline.trim_end(),
                self.d.join("vm").display()
            ),
        )
        .unwrap();
        p
    }

    /// The emulated TDX handler.
    fn emulated_tdx_config(&self, name: &str) -> PathBuf {
        self.runtime_config(
            name,
            &format!(
                "tee = \"emulated-tdx\"\n[emulated]\nplatform_dir = \"{}\"\nreference_firmware = \"{}\"\n",
                self.d.join("platform").display(),
                self.tdvf.display()
            ),
        )
    }

    /// The emulated SEV-SNP handler (`extra` lines appended to `[emulated]`).
    fn emulated_config(&self, name: &str, cmdline_suffix: &str, extra: &str) -> PathBuf {
        let p = self.runtime_config(
            name,
            &format!(
                "tee = \"emulated-snp\"\n[emulated]\nplatform_dir = \"{}\"\nreference_firmware = \"{}\"\n{extra}",
                self.d.join("platform").display(),
                self.ovmf.display()
            ),
        );
        if !cmdline_suffix.is_empty() {
            let t = fs::read_to_string(&p).unwrap();
            let c = self.image.cmdline.trim_end();
            fs::write(&p, t.replace(&format!("cmdline = \"{c}\""), &format!("cmdline = \"{c}{cmdline_suffix}\"")))
                .unwrap();
        }
        p
    }

    /// `ctr run --rm` of `image` in a pod of handler `cfg`: the host holds no image (an empty
    /// `--rootfs`); the guest pulls `image` itself (the CRI image-name annotation). Returns the
    /// output and the time to the container's first output (to the end when it printed none).
    fn ctr_run(&self, cfg: &Path, image: &str, id: &str, annotations: &[&str], cmd: &[&str]) -> (Output, Duration) {
        let empty = self.d.join("empty-rootfs");
        fs::create_dir_all(&empty).unwrap();
        let cfg = cfg.display().to_string();
        let image_ann = format!("io.kubernetes.cri.image-name={image}");
        let empty = empty.display().to_string();
        let mut args = vec!["run", "--rm", "--runtime", RUNTIME, "--runtime-config-path", &cfg];
        args.extend(["--annotation", &image_ann]);
        for a in annotations {
            args.extend(["--annotation", a]);
        }
        args.extend(["--rootfs", &empty, id]);
        args.extend_from_slice(cmd);
        let started = Instant::now();
        let (o, first_output) = self.containerd.ctr_timed(&args);
        let took = started.elapsed();
        let _ = self.containerd.ctr(&["containers", "delete", id]);
        (o, first_output.unwrap_or(took))
    }

    /// `kbs_resource_reads_total` from the key broker's `/metrics` (resources released).
    fn resources_released(&self) -> u64 {
        let addr = self.kbs.url.trim_start_matches("http://");
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        write!(s, "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").unwrap();
        let mut body = String::new();
        s.read_to_string(&mut body).unwrap();
        body.lines()
            .find_map(|l| l.strip_prefix("kbs_resource_reads_total ").and_then(|v| v.trim().parse::<f64>().ok()))
            .map(|v| v as u64)
            .unwrap_or_else(|| panic!("no kbs_resource_reads_total in /metrics:\n{body}"))
    }

    fn diagnostics(&self) -> String {
        format!(
            "--- containerd log, shim included (tail)\n{}\n--- key broker log (tail)\n{}\n{}",
            self.containerd.log_tail(80),
            self.kbs.log_tail(40),
            consoles_under(&self.d.join("vm"))
        )
    }

    /// Every pod's VM and run directory are gone.
    fn assert_clean(&self) {
        assert_no_vms_under(&self.d.join("vm"), || self.diagnostics());
    }

    /// A refused pod: `ctr` fails, its error contains every one of `why`, the command's output
    /// never appears, no key was released, nothing is left behind.
    fn assert_refused(&self, o: &Output, why: &[&str]) {
        let err = text(&o.stderr);
        assert!(!o.status.success(), "the pod ran: {}\n{}", text(&o.stdout), self.diagnostics());
        assert!(!text(&o.stdout).contains(SECRET_TEXT), "the secret reached stdout");
        for w in why {
            assert!(err.contains(w), "ctr error lacks {w:?}: {err}\n{}", self.diagnostics());
        }
        self.assert_clean();
    }
}

/// Initdata naming the key broker at `10.0.2.2:<port>` with the confidential agent policy
/// allowing `images` (or `policy` instead).
fn tenant_initdata(port: &str, images: &[&str], policy: Option<&str>) -> String {
    let policy = match policy {
        Some(p) => p.to_owned(),
        None => {
            let src = fs::read_to_string(cloister_e2e::guest::repo().join("policies/agent/confidential.rego")).unwrap();
            let data = json!({"allowed_images": images, "allowed_env": ["PATH=.*", "HOSTNAME=.*", "TERM=.*"]});
            src.replace("policy_data := data.policy_data", &format!("policy_data := {data}"))
        }
    };
    format!(
        "version = \"0.1.0\"\nalgorithm = \"sha384\"\n[data]\n\"cdh.toml\" = '''\n[kbc]\nname = \"cc_kbc\"\nurl = \"http://10.0.2.2:{port}\"\n[image]\nimage_security_policy_uri = \"{IMAGE_POLICY}\"\n'''\n\"policy.rego\" = '''\n{policy}'''\n"
    )
}

/// A containers-policy.json: reject by default, `tenant_rule` for the test registry's `tenant/`.
fn image_policy(registry: &str, tenant_rule: &str) -> String {
    json!({"default": [{"type": "reject"}], "transports": {"docker": {format!("{registry}/tenant"): [{"type": tenant_rule}]}}})
        .to_string()
}

fn annotation_of(d: &Path, name: &str, initdata: &str) -> String {
    let p = d.join(format!("{name}.toml"));
    fs::write(&p, initdata).unwrap();
    ok(run(Command::new(cloister()).args(["initdata", "annotation", "--with-name"]).arg(&p)), "initdata annotation")
        .trim()
        .to_owned()
}

/// The first scenario: attestation, key release, pull + decrypt, run; timed.
fn emulated_snp_pod(h: &Harness, report: &mut serde_json::Map<String, Value>) {
    let cfg = h.emulated_config("emulated-snp", "", "");
    // Pods and bare boots alternating, three of each; the fastest of each is compared (TCG boots
    // on two shared cores vary by seconds between runs). When that is above the goal, three more
    // of each, and the fastest of all six.
    let min = |v: &[f64]| v.iter().copied().fold(f64::INFINITY, f64::min);
    let (mut pods, mut bares, mut all_steps) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..6 {
        if i == 3 && min(&pods) / min(&bares) <= 1.5 {
            break;
        }
        let id = format!("pod-snp-{i}");
        let before = h.resources_released();
        let (o, took) =
            h.ctr_run(&cfg, &h.image_ref("secret"), &id, &[&h.annotation], &["/bin/cat", "/app/message.txt"]);
        assert_eq!(text(&o.stdout), format!("{SECRET_TEXT}\n"), "stderr {}\n{}", text(&o.stderr), h.diagnostics());
        assert!(o.status.success());
        assert!(h.resources_released() > before, "no key was released for the pod");
        let steps =
            h.containerd.pod_timings(&id).unwrap_or_else(|| panic!("no pod step timings logged\n{}", h.diagnostics()));
        for k in ["vm_boot_s", "attestation_s", "key_release_s", "image_pull_s", "container_create_s"] {
            assert!(steps.get(k).and_then(Value::as_f64).is_some(), "timing {k} missing: {steps}");
        }
        h.assert_clean();
        // The baseline: a bare QEMU boot of the same guest, on this machine, in this run.
        let (bare, _) = bare_boot(&h.image, &h.d.join(format!("bare-{i}")));
        eprintln!("emulated SNP pod {i}: ctr run to first output {took:?}, bare boot {bare:?}; steps {steps}");
        pods.push(took.as_secs_f64());
        bares.push(bare.as_secs_f64());
        all_steps.push(steps);
    }
    let best = pods.iter().enumerate().min_by(|a, b| a.1.total_cmp(b.1)).map_or(0, |(i, _)| i);
    let steps = &all_steps[best];
    let ratio = min(&pods) / min(&bares);
    let created = steps["container_create_s"].as_f64().unwrap_or(0.0);
    let boot = steps["vm_boot_s"].as_f64().unwrap_or(0.0);
    eprintln!(
        "emulated SNP pod start: {:.2}s vs bare boot {:.2}s = {ratio:.2}x (goal <= 1.5x)",
        min(&pods),
        min(&bares)
    );
    report.insert("emulated_snp_steps_s".into(), steps.clone());
    report.insert("container_start_and_containerd_s".into(), json!((pods[best] - boot - created).max(0.0)));
    report.insert("ctr_run_to_first_output_s".into(), json!(pods));
    report.insert("bare_qemu_boot_to_agent_s".into(), json!(bares));
    report.insert("pod_start_ratio".into(), json!(ratio));
    assert!(ratio <= 1.5, "pod start with attestation and decryption is {ratio:.2}x a bare boot (goal 1.5x): {steps}");
}

/// The same pod on the emulated TDX platform: a TD quote (MRTD of the reference TDVF, MRCONFIGID
/// the initdata digest) verified with its collateral under the emulated Intel root.
fn emulated_tdx_pod(h: &Harness, report: &mut serde_json::Map<String, Value>) {
    let cfg = h.emulated_tdx_config("emulated-tdx");
    let before = h.resources_released();
    let (o, took) =
        h.ctr_run(&cfg, &h.image_ref("secret"), "pod-tdx", &[&h.annotation], &["/bin/cat", "/app/message.txt"]);
    assert_eq!(text(&o.stdout), format!("{SECRET_TEXT}\n"), "stderr {}\n{}", text(&o.stderr), h.diagnostics());
    assert!(o.status.success());
    assert!(h.resources_released() > before, "no key was released for the TDX pod");
    let steps =
        h.containerd.pod_timings("pod-tdx").unwrap_or_else(|| panic!("no pod step timings\n{}", h.diagnostics()));
    eprintln!("emulated TDX pod: ctr run to first output {took:?}; steps {steps}");
    report.insert("emulated_tdx_steps_s".into(), steps);
    report.insert("emulated_tdx_ctr_run_to_first_output_s".into(), json!(took.as_secs_f64()));
    h.assert_clean();
}

/// Another kernel command line: another measurement, no key, and `ctr` says why.
fn tampered_launch(h: &Harness) {
    let cfg = h.emulated_config("tampered", " cloister.tampered=1", "");
    let before = h.resources_released();
    let (o, _) =
        h.ctr_run(&cfg, &h.image_ref("secret"), "pod-tampered", &[&h.annotation], &["/bin/cat", "/app/message.txt"]);
    // AR4SI executables 33: the launch measurement is not a reference value.
    h.assert_refused(&o, &["attestation to the key broker failed", "\"executables\":33"]);
    assert_eq!(h.resources_released(), before, "a key was released to a tampered guest");
}

/// The host swaps the agent policy in initdata.
fn wrong_initdata(h: &Harness) {
    let port = h.kbs.url.rsplit(':').next().unwrap();
    let allow_all = fs::read_to_string(cloister_e2e::guest::repo().join("policies/agent/allow_all.rego")).unwrap();
    let swapped = tenant_initdata(port, &[], Some(&allow_all));
    assert_ne!(swapped, h.initdata);
    let swapped_ann = annotation_of(&h.d, "swapped-initdata", &swapped);
    let before = h.resources_released();

    // a. Launched with the swap: HOST_DATA is its digest, bound but not the tenant's. The broker
    //    appraises configuration 36 and the guest gets nothing.
    let cfg = h.emulated_config("emulated-snp", "", "");
    let (o, _) =
        h.ctr_run(&cfg, &h.image_ref("secret"), "pod-swapped", &[&swapped_ann], &["/bin/cat", "/app/message.txt"]);
    h.assert_refused(&o, &["attestation to the key broker failed", "\"configuration\":36"]);

    // b. Launched with the tenant's HOST_DATA, but the guest is handed the swap: the agent
    //    compares the digest with its evidence and refuses every request, saying why.
    let tenant = cloister_kbs_host_data(&h.d.join("initdata.toml"));
    let cfg = h.emulated_config("lying-host", "", &format!("insecure_host_data = \"{tenant}\"\n"));
    let (o, _) =
        h.ctr_run(&cfg, &h.image_ref("secret"), "pod-lying", &[&swapped_ann], &["/bin/cat", "/app/message.txt"]);
    h.assert_refused(&o, &["does not match the TEE evidence's HOST_DATA", "the host changed the initdata"]);
    assert_eq!(h.resources_released(), before, "a key was released under swapped initdata");
}

fn cloister_kbs_host_data(initdata: &Path) -> String {
    let v: Value = serde_json::from_str(&ok(
        run(Command::new(cloister()).args(["initdata", "digest"]).arg(initdata)),
        "initdata digest",
    ))
    .unwrap();
    v["snp_host_data"].as_str().unwrap().to_owned()
}

/// The tenant revokes its image: the signature policy the guest fetches from the key broker now
/// rejects the repository; the pod does not start, and `ctr` says why. Then it is restored.
fn revoked_image(h: &Harness) {
    let set = |file: &str| {
        let mut c = Command::new(cloister());
        c.args(["kbs", "--url", &h.kbs.url, "config", "--admin-key"]).arg(&h.kbs.admin_key).args([
            "set-resource",
            "--path",
            IMAGE_POLICY.trim_start_matches("kbs:///"),
            "--resource-file",
            &h.d.join(file).display().to_string(),
        ]);
        ok(run(&mut c), "image policy");
    };
    set("reject.json");
    let cfg = h.emulated_config("emulated-snp", "", "");
    let (o, _) =
        h.ctr_run(&cfg, &h.image_ref("secret"), "pod-revoked", &[&h.annotation], &["/bin/cat", "/app/message.txt"]);
    set("accept.json");
    h.assert_refused(&o, &["signature policy"]);
}

/// The degenerate policy: a plain VM, no initdata, no attestation.
fn degenerate(h: &Harness) {
    let cfg = h.runtime_config("plain", "");
    let (o, _) = h.ctr_run(&cfg, &h.image_ref("plain"), "pod-plain", &[], &["/bin/cat", "/app/message.txt"]);
    assert_eq!(text(&o.stdout), format!("{SECRET_TEXT}\n"), "stderr {}\n{}", text(&o.stderr), h.diagnostics());
    h.assert_clean();
    let (o, _) = h.ctr_run(&cfg, &h.image_ref("secret"), "pod-closed", &[], &["/bin/cat", "/app/message.txt"]);
    h.assert_refused(&o, &["is encrypted and no decryption key or key provider is configured"]);
}

type Scenario = fn(&Harness, &mut serde_json::Map<String, Value>);

fn main() {
    let filters: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with('-')).collect();
    if std::env::args().any(|a| a == "--list") {
        for n in
            ["emulated_snp_pod", "emulated_tdx_pod", "tampered_launch", "wrong_initdata", "revoked_image", "degenerate"]
        {
            println!("{n}: test");
        }
        return;
    }
    let scenarios: [(&str, Scenario); 6] = [
        ("emulated_snp_pod", emulated_snp_pod),
        ("emulated_tdx_pod", emulated_tdx_pod),
        ("tampered_launch", |h, _| tampered_launch(h)),
        ("wrong_initdata", |h, _| wrong_initdata(h)),
        ("revoked_image", |h, _| revoked_image(h)),
        ("degenerate", |h, _| degenerate(h)),
    ];
    let chosen: Vec<_> = scenarios
        .iter()
        .filter(|(n, _)| filters.is_empty() || filters.iter().any(|f| n.contains(f.as_str())))
        .collect();
    let started = Instant::now();
    let filtered = scenarios.len() - chosen.len();
    if chosen.is_empty() {
        println!(
            "test result: ok. 0 passed; 0 failed; 0 ignored; 0 measured; {filtered} filtered out; finished in 0.00s"
        );
        return;
    }
    let Some(h) = Harness::new() else {
        println!(
            "test result: ok. 0 passed; 0 failed; {} ignored; 0 measured; {filtered} filtered out; finished in 0.00s",
            chosen.len()
        );
        return;
    };
    let mut report = serde_json::Map::new();
    report.insert(
        "setup_s".into(),
        json!(h.setup_steps.iter().map(|(n, s)| (n.clone(), json!(s))).collect::<serde_json::Map<_, _>>()),
    );
    let (mut passed, mut failed) = (0, Vec::new());
    println!("\nrunning {} tests", chosen.len());
    for (name, f) in chosen {
        let t = Instant::now();
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(&h, &mut report)));
        let secs = t.elapsed().as_secs_f64();
        report.insert(format!("scenario_{name}_s"), json!(secs));
        match r {
            Ok(()) => {
                passed += 1;
                println!("test {name} ... ok ({secs:.1}s)");
            }
            Err(_) => {
                failed.push(*name);
                println!("test {name} ... FAILED ({secs:.1}s)");
            }
        }
    }
    let path = std::env::temp_dir().join("cloister-confidential-pod.json");
    let _ = fs::write(&path, serde_json::to_string_pretty(&Value::Object(report.clone())).unwrap_or_default());
    eprintln!("timings: {} -> {}", Value::Object(report), path.display());
    let status = if failed.is_empty() { "ok" } else { "FAILED" };
    println!(
        "\ntest result: {status}. {passed} passed; {} failed; 0 ignored; 0 measured; {filtered} filtered out; finished in {:.2}s",
        failed.len(),
        started.elapsed().as_secs_f64()
    );
    if !failed.is_empty() {
        println!("failed: {}", failed.join(", "));
        std::process::exit(101);
    }
}
