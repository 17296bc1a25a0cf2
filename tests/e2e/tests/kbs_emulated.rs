//! The guest-attestation acceptance test: `cloister-kbs` (embedded defaults: HTTPS with its own
//! certificate, on-disk store, generated admin key) + the emulated SNP platform (`cloister emulate
//! init`) + the guest client (`cloister kbs get-resource`, pinning the KBS certificate). With a
//! policy trusting the emulated root and a reference value computed by `cloister measure`, the
//! secret is released; with the default policy, a wrong measurement, or mismatched initdata it
//! is refused with the precise reason.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::process::Command;

use cloister_e2e::{KbsProcess, binary, run};
use serde_json::Value;

const OVMF: &str = "/usr/share/ovmf/OVMF.fd";

fn ok(o: &std::process::Output, what: &str) -> String {
    assert!(o.status.success(), "{what} failed: {}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn emulated_snp_secret_release_end_to_end() {
    let (Some(cloister), Some(kbs_bin)) = (binary("cloister"), binary("cloister-kbs")) else { return };
    if !Path::new(OVMF).exists() {
        if std::env::var_os("CI").is_some() {
            panic!("{OVMF} missing in CI (apt package ovmf)");
        }
        eprintln!("skipping: {OVMF} not installed");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // The emulated platform and its root, named in the broker's configuration.
    ok(&run(Command::new(&cloister).args(["emulate", "init", "--dir"]).arg(d.join("platform"))), "emulate init");
    let roots = ok(
        &run(Command::new(&cloister).args(["emulate", "kbs-config", "--dir"]).arg(d.join("platform"))),
        "kbs-config",
    );
    let config = format!("[http_server]\nsockets = [\"127.0.0.1:0\"]\nauth_rate_limit = 0\n{roots}");
    let kbs = KbsProcess::start(&kbs_bin, d, &config).unwrap();
    assert!(kbs.url.starts_with("https://"), "embedded default must be HTTPS");
    let fp = kbs.cert_sha256.clone().unwrap();
    let kbs_cmd = || {
        let mut c = Command::new(&cloister);
        c.args(["kbs", "--url", &kbs.url, "--cert-sha256", &fp]);
        c
    };
    let admin = |args: &[&str]| {
        let mut c = kbs_cmd();
        c.arg("config").arg("--admin-key").arg(&kbs.admin_key).args(args);
        run(&mut c)
    };

    // Reference value from the offline measurement tool.
    let m = ok(
        &run(Command::new(&cloister).args([
            "measure",
            "--mode",
            "snp",
            "--vcpus",
            "1",
            "--vcpu-type",
            "EPYC-v4",
            "--ovmf",
            OVMF,
            "--output",
            "json",
        ])),
        "measure",
    );
    std::fs::write(d.join("measure.json"), &m).unwrap();
    let measurement = serde_json::from_str::<Value>(&m).unwrap()["measurement"].as_str().unwrap().to_owned();
    ok(&admin(&["set-reference-values", "--file", d.join("measure.json").to_str().unwrap()]), "set-reference-values");
    let rv = ok(&admin(&["get-reference-value", "snp_launch_measurement"]), "get-reference-value");
    assert!(rv.contains(&measurement));
    std::fs::write(d.join("secret"), b"db-password-42").unwrap();
    ok(
        &admin(&["set-resource", "--path", "app/db/password", "--resource-file", d.join("secret").to_str().unwrap()]),
        "set-resource",
    );

    let initdata = d.join("initdata.toml");
    std::fs::write(
        &initdata,
        "version = \"0.1.0\"\nalgorithm = \"sha384\"\n[data]\n\"policy.rego\" = \"package agent_policy\\n\"\n",
    )
    .unwrap();
    let get = |m: &str, init: Option<&Path>| {
        let mut c = kbs_cmd();
        c.args([
            "get-resource",
            "--path",
            "kbs:///app/db/password",
            "--tee",
            "emulated-snp",
            "--measurement",
            m,
            "--emulated-dir",
        ])
        .arg(d.join("platform"));
        if let Some(i) = init {
            c.arg("--initdata").arg(i);
        }
        run(&mut c)
    };

    // 1. Default policies: refused, and the reason names the emulated evidence.
    let o = get(&measurement, None);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("403") && err.contains("PolicyDeny"), "{err}");

    // 2. Policies trusting the emulated TEE: released.
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../policies");
    ok(
        &admin(&[
            "set-attestation-policy",
            "--policy-file",
            repo.join("attestation/emulated_cpu.rego").to_str().unwrap(),
        ]),
        "set-attestation-policy",
    );
    ok(
        &admin(&["set-resource-policy", "--policy-file", repo.join("resource/emulated.rego").to_str().unwrap()]),
        "set-resource-policy",
    );
    assert_eq!(ok(&get(&measurement, Some(&initdata)), "get-resource"), "db-password-42");

    // 2b. The emulated IBM SE machine of the same `emulate init`: the broker's challenge is an
    //     attestation request encrypted to its host-key document (from `kbs-config`), and the
    //     image's tag comes from `cloister measure se-header`.
    let se_refs = ok(
        &run(Command::new(&cloister)
            .args(["measure", "se-header", "--output", "json", "--image"])
            .arg(d.join("platform").join("se-hdr.bin"))),
        "measure se-header",
    );
    std::fs::write(d.join("se.json"), &se_refs).unwrap();
    ok(&admin(&["set-reference-values", "--file", d.join("se.json").to_str().unwrap()]), "set SE reference values");
    let mut c = kbs_cmd();
    c.args(["get-resource", "--path", "app/db/password", "--tee", "emulated-se", "--emulated-dir"])
        .arg(d.join("platform"));
    assert_eq!(ok(&run(&mut c), "get-resource (emulated SE)"), "db-password-42");

    // 3. A wrong measurement: refused by policy, saying why.
    let wrong = "00".repeat(48);
    let o = get(&wrong, None);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("not affirming"), "{err}");

    // 4. Initdata that does not match HOST_DATA: refused at attestation, naming HOST_DATA.
    let other = d.join("other.toml");
    std::fs::write(&other, "version = \"0.1.0\"\nalgorithm = \"sha384\"\n[data]\n").unwrap();
    let mut c = kbs_cmd();
    c.args([
        "get-resource",
        "--path",
        "app/db/password",
        "--tee",
        "emulated-snp",
        "--measurement",
        &measurement,
        "--emulated-dir",
    ])
    .arg(d.join("platform"))
    .arg("--initdata")
    .arg(&other)
    .arg("--launch-initdata")
    .arg(&initdata);
    let o = run(&mut c);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("401") && err.contains("HOST_DATA"), "{err}");

    // 5. The same through the host-side endpoint (`cloister emulate serve`): the host fixes the
    //    measurement (from `cloister measure`) and HOST_DATA (from the launch initdata); the guest
    //    only asks with its report data.
    let sock = d.join("psp.sock");
    let mut serve = serving(
        Command::new(&cloister)
            .args(["emulate", "serve", "--dir"])
            .arg(d.join("platform"))
            .arg("--socket")
            .arg(&sock)
            .arg("--measurement-json")
            .arg(d.join("measure.json"))
            .arg("--initdata")
            .arg(&initdata),
    );
    let via_socket = |init: &Path| {
        let mut c = kbs_cmd();
        c.args(["get-resource", "--path", "app/db/password", "--tee", "emulated-snp", "--emulator-socket"])
            .arg(&sock)
            .arg("--initdata")
            .arg(init);
        run(&mut c)
    };
    assert_eq!(ok(&via_socket(&initdata), "get-resource via emulate serve"), "db-password-42");
    let o = via_socket(&other);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("HOST_DATA"), "{}", String::from_utf8_lossy(&o.stderr));

    // 5b. The emulated IBM SE machine behind its own endpoint (`emulate serve --tee se`): the
    //     guest passes the broker's encrypted attestation request through; the host's Ultravisor
    //     answers for the image header of `emulate init` (reference values set in 2b).
    let se_sock = d.join("uv.sock");
    let mut se_serve = serving(
        Command::new(&cloister)
            .args(["emulate", "serve", "--tee", "se", "--dir"])
            .arg(d.join("platform"))
            .arg("--socket")
            .arg(&se_sock),
    );
    let via = |tee: &str, sock: &Path| {
        let mut c = kbs_cmd();
        c.args(["get-resource", "--path", "app/db/password", "--tee", tee, "--emulator-socket"]).arg(sock);
        run(&mut c)
    };
    assert_eq!(ok(&via("emulated-se", &se_sock), "get-resource via emulate serve --tee se"), "db-password-42");
    // An SE machine has no report for bare report data, and an SNP endpoint no Ultravisor.
    for (tee, endpoint, why) in
        [("emulated-snp", &se_sock, "is an IBM SE machine"), ("emulated-se", &sock, "not an IBM SE machine")]
    {
        let o = via(tee, endpoint);
        let stderr = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success() && stderr.contains(why), "{tee}: {stderr}");
    }
    let _ = se_serve.kill();
    let _ = se_serve.wait();

    // 6. The confidential data hub on its socket, attesting through the same endpoint.
    let cdh_sock = d.join("cdh.sock");
    let mut cdh = kbs_cmd();
    cdh.args(["cdh-serve", "--tee", "emulated-snp", "--emulator-socket"])
        .arg(&sock)
        .arg("--initdata")
        .arg(&initdata)
        .arg("--socket")
        .arg(&cdh_sock)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null());
    let mut cdh = cdh.spawn().unwrap();
    {
        use std::io::{BufRead, Write};
        let mut l = String::new();
        std::io::BufReader::new(cdh.stdout.take().unwrap()).read_line(&mut l).unwrap();
        assert!(l.starts_with("cdh serving"), "{l}");
        let mut s = std::os::unix::net::UnixStream::connect(&cdh_sock).unwrap();
        s.write_all(b"{\"op\":\"get-resource\",\"uri\":\"kbs:///app/db/password\"}\n").unwrap();
        let mut reply = String::new();
        std::io::BufReader::new(&s).read_line(&mut reply).unwrap();
        let v: Value = serde_json::from_str(&reply).unwrap();
        assert_eq!(v["data"], "ZGItcGFzc3dvcmQtNDI=", "{reply}"); // base64("db-password-42")
    }
    let _ = cdh.kill();
    let _ = cdh.wait();
    let _ = serve.kill();
    let _ = serve.wait();

    // 7. The pin is enforced: a wrong fingerprint fails before anything is sent.
    let o = run(Command::new(&cloister).args([
        "kbs",
        "--url",
        &kbs.url,
        "--cert-sha256",
        &"ab".repeat(32),
        "attest",
        "--tee",
        "sample",
    ]));
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("pinned"), "{}", String::from_utf8_lossy(&o.stderr));
}

/// Starts `cmd` (an `emulate serve`) and waits for its `serving <socket>` line.
fn serving(cmd: &mut Command) -> std::process::Child {
    use std::io::BufRead;
    let mut child = cmd.stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::null()).spawn().unwrap();
    let mut l = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap()).read_line(&mut l).unwrap();
    assert!(l.starts_with("serving"), "{l}");
    child
}
