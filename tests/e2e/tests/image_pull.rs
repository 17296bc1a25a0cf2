//! The guest image-pull acceptance test, with real components only: `cloister-kbs` (embedded
//! defaults), Debian's `docker-registry`, an image encrypted by Debian's `skopeo` and re-wrapped
//! for CoCo's `attestation-agent` key provider (its key-encryption key stored in the KBS), and
//! `cloister image pull` attesting with the emulated SEV-SNP platform. The layer key is released
//! only to an attested guest; the signature policy comes from the KBS too, and a policy that
//! cannot be fetched stops the pull.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};

use cloister_e2e::registry::{Registry, layout_of};
use cloister_e2e::{KbsProcess, binary, run};
use serde_json::Value;

const OVMF: &str = "/usr/share/ovmf/OVMF.fd";

fn ok(o: &std::process::Output, what: &str) -> String {
    assert!(o.status.success(), "{what} failed: {}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn have(tool: &str) -> bool {
    Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {tool}"))
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

#[test]
fn encrypted_image_opens_only_after_attestation() {
    let (Some(cloister), Some(kbs_bin)) = (binary("cloister"), binary("cloister-kbs")) else { return };
    for tool in ["skopeo", "docker-registry", "openssl", "tar", "gzip"] {
        if !have(tool) {
            if std::env::var_os("CI").is_some() {
                panic!("{tool} missing in CI");
            }
            eprintln!("skipping: {tool} not installed");
            return;
        }
    }
    if !Path::new(OVMF).exists() {
        eprintln!("skipping: {OVMF} not installed");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();

    // The tenant's image: encrypted by skopeo (JWE), re-wrapped so its layer key is the KBS
    // resource default/key/image-kek.
    let src = d.join("src");
    fs::create_dir_all(src.join("app")).unwrap();
    fs::write(src.join("app/config.txt"), "the confidential workload\n").unwrap();
    layout_of(&src, &d.join("plain")).unwrap();
    ok(&run(Command::new("openssl").args(["genrsa", "-out"]).arg(d.join("rsa.pem")).arg("2048")), "genrsa");
    ok(
        &run(Command::new("openssl")
            .args(["rsa", "-pubout", "-in"])
            .arg(d.join("rsa.pem"))
            .arg("-out")
            .arg(d.join("rsa.pub"))),
        "rsa",
    );
    ok(
        &run(Command::new("skopeo")
            .args(["--insecure-policy", "copy", "-q", "--encryption-key"])
            .arg(format!("jwe:{}", d.join("rsa.pub").display()))
            .arg(format!("oci:{}:v1", d.join("plain").display()))
            .arg(format!("oci:{}:v1", d.join("enc").display()))),
        "skopeo encrypt",
    );
    let kek = [0x5au8; 32];
    fs::write(d.join("kek.bin"), kek).unwrap();
    let key = cloister_ocicrypt::JwePrivateKey::from_bytes(&fs::read(d.join("rsa.pem")).unwrap()).unwrap();
    let (_, n) = cloister_image::layout::rewrap_to_attestation_agent(
        &d.join("enc"),
        "v1",
        &[key],
        &kek,
        "kbs:///default/key/image-kek",
    )
    .unwrap();
    assert_eq!(n, 1);
    let reg = Registry::start(d).unwrap();
    ok(
        &run(Command::new("skopeo")
            .args(["--insecure-policy", "copy", "-q", "--dest-tls-verify=false"])
            .arg(format!("oci:{}:v1", d.join("enc").display()))
            .arg(format!("docker://{}/tenant/app:v1", reg.host))),
        "skopeo push",
    );

    // The key broker with the emulated platform's root, the KEK and an image policy.
    ok(&run(Command::new(&cloister).args(["emulate", "init", "--dir"]).arg(d.join("platform"))), "emulate init");
    let roots = ok(
        &run(Command::new(&cloister).args(["emulate", "kbs-config", "--dir"]).arg(d.join("platform"))),
        "kbs-config",
    );
    let kbs = KbsProcess::start(
        &kbs_bin,
        d,
        &format!("[http_server]\nsockets = [\"127.0.0.1:0\"]\nauth_rate_limit = 0\n{roots}"),
    )
    .unwrap();
    let fp = kbs.cert_sha256.clone().unwrap();
    let admin = |args: &[&str]| {
        let mut c = Command::new(&cloister);
        c.args(["kbs", "--url", &kbs.url, "--cert-sha256", &fp, "config", "--admin-key"])
            .arg(&kbs.admin_key)
            .args(args);
        run(&mut c)
    };
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
    fs::write(d.join("measure.json"), &m).unwrap();
    let measurement = serde_json::from_str::<Value>(&m).unwrap()["measurement"].as_str().unwrap().to_owned();
    ok(&admin(&["set-reference-values", "--file", d.join("measure.json").to_str().unwrap()]), "reference values");
    ok(
        &admin(&[
            "set-resource",
            "--path",
            "default/key/image-kek",
            "--resource-file",
            d.join("kek.bin").to_str().unwrap(),
        ]),
        "kek",
    );
    let policy = format!(
        r#"{{"default":[{{"type":"reject"}}],"transports":{{"docker":{{"{}/tenant":[{{"type":"insecureAcceptAnything"}}]}}}}}}"#,
        reg.host
    );
    fs::write(d.join("policy.json"), policy).unwrap();
    ok(
        &admin(&[
            "set-resource",
            "--path",
            "default/policy/images",
            "--resource-file",
            d.join("policy.json").to_str().unwrap(),
        ]),
        "policy",
    );

    let pull = |policy: &str, out: &Path| {
        let mut c = Command::new(&cloister);
        c.args([
            "image",
            "pull",
            "--kbs",
            &kbs.url,
            "--kbs-cert-sha256",
            &fp,
            "--tee",
            "emulated-snp",
            "--measurement",
            &measurement,
        ])
        .arg("--emulated-dir")
        .arg(d.join("platform"))
        .args(["--insecure-registry", &reg.host, "--policy", policy])
        .arg(format!("docker://{}/tenant/app:v1", reg.host))
        .arg("--rootfs")
        .arg(out);
        run(&mut c)
    };

    // 1. Default broker policies: the emulated guest is not trusted, the KEK is withheld, the
    //    layer stays sealed and no rootfs appears.
    let out = d.join("rootfs");
    let o = pull("kbs:///default/policy/images", &out);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("403") || err.contains("PolicyDeny"), "{err}");
    assert!(!out.exists());

    // 2. Policies trusting the emulated TEE: the guest attests, gets the policy and the KEK,
    //    and the image opens.
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../policies");
    ok(
        &admin(&[
            "set-attestation-policy",
            "--policy-file",
            repo.join("attestation/emulated_cpu.rego").to_str().unwrap(),
        ]),
        "att policy",
    );
    ok(
        &admin(&["set-resource-policy", "--policy-file", repo.join("resource/emulated.rego").to_str().unwrap()]),
        "res policy",
    );
    let report = ok(&pull("kbs:///default/policy/images", &out), "image pull");
    let v: Value = serde_json::from_str(&report).unwrap();
    assert_eq!(v["layers"][0]["encrypted"], true, "{report}");
    assert_eq!(fs::read_to_string(out.join("app/config.txt")).unwrap(), "the confidential workload\n");

    // 3. The same key through the ocicrypt `cmd` key-provider protocol: `cloister image
    //    keyprovider` attests and unwraps; the pull itself has no KBS access.
    let script = d.join("keyprovider.sh");
    fs::write(
        &script,
        format!(
            "#!/bin/sh\nexec '{}' image keyprovider --kbs '{}' --kbs-cert-sha256 '{}' --tee emulated-snp --measurement '{}' --emulated-dir '{}'\n",
            cloister.display(),
            kbs.url,
            fp,
            measurement,
            d.join("platform").display()
        ),
    )
    .unwrap();
    fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    fs::write(
        d.join("ocicrypt.json"),
        format!(r#"{{"key-providers":{{"attestation-agent":{{"cmd":{{"path":"{}","args":[]}}}}}}}}"#, script.display()),
    )
    .unwrap();
    let out3 = d.join("rootfs3");
    let o = run(Command::new(&cloister)
        .args(["image", "pull", "--keyprovider-config"])
        .arg(d.join("ocicrypt.json"))
        .args(["--insecure-registry", &reg.host])
        .arg(format!("docker://{}/tenant/app:v1", reg.host))
        .arg("--rootfs")
        .arg(&out3));
    ok(&o, "image pull through the keyprovider command");
    assert_eq!(fs::read_to_string(out3.join("app/config.txt")).unwrap(), "the confidential workload\n");

    // 4. A signature policy that cannot be fetched: fail closed, before any layer.
    let out2 = d.join("rootfs2");
    let o = pull("kbs:///default/policy/missing", &out2);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("signature policy"), "{err}");
    assert!(!out2.exists());
}
