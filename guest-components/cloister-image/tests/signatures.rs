//! The signature policy in the pull, before any layer is fetched: cosign signatures stored in the
//! registry (`sha256-<hex>.sig`, signed with openssl), GPG simple signing written by
//! `skopeo copy --sign-by` into a lookaside store, and the refusals (unsigned, wrong key,
//! `reject`, a key that cannot be fetched).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod common;

use std::fs;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use base64::Engine;
use cloister_image::signature::SignatureCheck;
use cloister_image::{ImageError, PullOptions, Puller, Reference, Registry, RegistryOptions};
use cloister_signature::{FsKeySource, Policy, RegistriesD};
use common::*;

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
}

fn pull(
    reg: &TestRegistry,
    repo: &str,
    check: SignatureCheck,
    out: &Path,
) -> Result<cloister_image::PulledImage, ImageError> {
    let ro = RegistryOptions { insecure_http_hosts: vec![reg.host.clone()], ..RegistryOptions::default() };
    let p = Puller::new(Registry::new(ro).unwrap(), PullOptions { signatures: Some(check), ..PullOptions::default() });
    rt().block_on(p.pull(&Reference::parse(&format!("{}/{repo}", reg.host)).unwrap(), out))
}

fn check(policy: &str, registries_d: Option<&Path>) -> SignatureCheck {
    SignatureCheck {
        policy: Policy::from_json(policy.as_bytes()).unwrap(),
        keys: Arc::new(FsKeySource),
        registries_d: registries_d.map(|d| RegistriesD::from_dir(d).unwrap()),
    }
}

fn small_image(work: &Path, name: &str, content: &str) -> std::path::PathBuf {
    let src = work.join(format!("src-{name}"));
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("hello.txt"), content).unwrap();
    let layout = work.join(format!("oci-{name}"));
    write_layout(&layout, "v1", &[(tar_dir(&src), Comp::Gzip)], "amd64");
    layout
}

fn manifest_digest(reg: &TestRegistry, repo_tag: &str) -> String {
    let (repo, tag) = repo_tag.split_once(':').unwrap();
    let out = run(Command::new("skopeo")
        .args(["inspect", "--raw", "--tls-verify=false"])
        .arg(format!("docker://{}/{repo}:{tag}", reg.host)));
    format!("sha256:{}", sha256_hex(out.as_bytes()))
}

/// Pushes a cosign-format signature for `repo`@`digest` signed with `ec_pem` (openssl).
fn cosign_sign(reg: &TestRegistry, work: &Path, repo: &str, digest: &str, ec_pem: &Path) {
    let payload = format!(
        r#"{{"critical":{{"identity":{{"docker-reference":"{}/{repo}"}},"image":{{"docker-manifest-digest":"{digest}"}},"type":"cosign container image signature"}},"optional":null}}"#,
        reg.host
    );
    let pfile = work.join("payload.json");
    fs::write(&pfile, &payload).unwrap();
    let sig = Command::new("openssl").args(["dgst", "-sha256", "-sign"]).arg(ec_pem).arg(&pfile).output().unwrap();
    assert!(sig.status.success());
    let sig_b64 = base64::engine::general_purpose::STANDARD.encode(&sig.stdout);
    let layout = work.join(format!("sig-{}", &digest[7..19]));
    let blobs = layout.join("blobs/sha256");
    fs::create_dir_all(&blobs).unwrap();
    let ph = sha256_hex(payload.as_bytes());
    fs::write(blobs.join(&ph), &payload).unwrap();
    let config = r#"{"architecture":"","os":"","config":{},"rootfs":{"type":"layers","diff_ids":[]}}"#;
    let ch = sha256_hex(config.as_bytes());
    fs::write(blobs.join(&ch), config).unwrap();
    let manifest = format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:{ch}","size":{}}},"layers":[{{"mediaType":"application/vnd.dev.cosign.simplesigning.v1+json","digest":"sha256:{ph}","size":{},"annotations":{{"dev.cosignproject.cosign/signature":"{sig_b64}"}}}}]}}"#,
        config.len(),
        payload.len()
    );
    let mh = sha256_hex(manifest.as_bytes());
    fs::write(blobs.join(&mh), &manifest).unwrap();
    fs::write(
        layout.join("index.json"),
        format!(
            r#"{{"schemaVersion":2,"manifests":[{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:{mh}","size":{},"annotations":{{"org.opencontainers.image.ref.name":"sig"}}}}]}}"#,
            manifest.len()
        ),
    )
    .unwrap();
    fs::write(layout.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    let tag = format!("sha256-{}.sig", &digest[7..]);
    reg.push(&layout, "sig", &format!("{repo}:{tag}"), &["--preserve-digests"]);
}

#[test]
fn cosign_signatures_from_the_registry() {
    if skip_without(&["skopeo", "docker-registry", "openssl", "gzip", "tar"]) {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let reg = TestRegistry::start();
    run(Command::new("openssl")
        .args(["ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out"])
        .arg(w.join("ec.pem")));
    run(Command::new("openssl").args(["ec", "-pubout", "-in"]).arg(w.join("ec.pem")).arg("-out").arg(w.join("ec.pub")));
    run(Command::new("openssl")
        .args(["ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out"])
        .arg(w.join("other.pem")));
    run(Command::new("openssl")
        .args(["ec", "-pubout", "-in"])
        .arg(w.join("other.pem"))
        .arg("-out")
        .arg(w.join("other.pub")));

    reg.push(&small_image(w, "signed", "signed\n"), "v1", "demo/signed:v1", &[]);
    reg.push(&small_image(w, "unsigned", "unsigned\n"), "v1", "demo/unsigned:v1", &[]);
    let digest = manifest_digest(&reg, "demo/signed:v1");
    cosign_sign(&reg, w, "demo/signed", &digest, &w.join("ec.pem"));

    let policy = |key: &Path| {
        format!(
            r#"{{"default":[{{"type":"reject"}}],"transports":{{"docker":{{"{}/demo":[{{"type":"sigstoreSigned","keyPath":"{}","signedIdentity":{{"type":"matchRepository"}}}}]}}}}}}"#,
            reg.host,
            key.display()
        )
    };
    // Signed, right key: pulled.
    let out = w.join("rootfs");
    pull(&reg, "demo/signed:v1", check(&policy(&w.join("ec.pub")), None), &out).unwrap();
    assert_eq!(fs::read_to_string(out.join("hello.txt")).unwrap(), "signed\n");
    fs::remove_dir_all(&out).unwrap();
    // Another key: refused, naming the requirement.
    let err = pull(&reg, "demo/signed:v1", check(&policy(&w.join("other.pub")), None), &out).unwrap_err();
    assert!(matches!(&err, ImageError::Policy(m) if m.contains("sigstoreSigned")), "{err}");
    // Unsigned: refused.
    let err = pull(&reg, "demo/unsigned:v1", check(&policy(&w.join("ec.pub")), None), &out).unwrap_err();
    assert!(matches!(err, ImageError::Policy(_)), "{err}");
    // Outside the scope: the default `reject`.
    reg.push(&small_image(w, "elsewhere", "x\n"), "v1", "other/img:v1", &[]);
    let err = pull(&reg, "other/img:v1", check(&policy(&w.join("ec.pub")), None), &out).unwrap_err();
    assert!(matches!(&err, ImageError::Policy(m) if m.contains("reject")), "{err}");
    // A key that cannot be read: fail closed.
    let err = pull(&reg, "demo/signed:v1", check(&policy(&w.join("missing.pub")), None), &out).unwrap_err();
    assert!(matches!(err, ImageError::Policy(_)), "{err}");
    assert!(!out.exists());
}

#[test]
fn gpg_simple_signing_from_a_lookaside_store() {
    if skip_without(&["skopeo", "docker-registry", "gpg", "gzip", "tar"]) {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let reg = TestRegistry::start();
    let gnupg = w.join("gnupg");
    fs::create_dir(&gnupg).unwrap();
    fs::set_permissions(&gnupg, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
    let gpg = |args: &[&str]| {
        let mut c = Command::new("gpg");
        c.env("GNUPGHOME", &gnupg).args(["--batch", "--passphrase", ""]).args(args);
        c
    };
    run(&mut gpg(&["--quick-gen-key", "Signer <s@example.test>", "ed25519", "sign", "never"]));
    let fpr = run(&mut gpg(&["--list-keys", "--with-colons"]))
        .lines()
        .find(|l| l.starts_with("fpr"))
        .and_then(|l| l.split(':').nth(9))
        .unwrap()
        .to_owned();
    let key = gpg(&["--export", &fpr]).output().unwrap().stdout;
    fs::write(w.join("signer.gpg"), key).unwrap();
    let regd = w.join("registries.d");
    fs::create_dir(&regd).unwrap();
    fs::write(
        regd.join("default.yaml"),
        format!(
            "default-docker:\n  sigstore-staging: file://{0}/sigstore\n  sigstore: file://{0}/sigstore\n",
            w.display()
        ),
    )
    .unwrap();
    let layout = small_image(w, "gpg", "gpg signed\n");
    let mut c = Command::new("skopeo");
    c.env("GNUPGHOME", &gnupg)
        .args(["--insecure-policy", "--registries.d"])
        .arg(&regd)
        .args(["copy", "-q", "--dest-tls-verify=false", "--sign-by", &fpr])
        .arg(format!("oci:{}:v1", layout.display()))
        .arg(format!("docker://{}/demo/gpg:v1", reg.host));
    run(&mut c);
    let _ = gpg(&["--kill"]).output();
    let _ = Command::new("gpgconf").env("GNUPGHOME", &gnupg).args(["--kill", "gpg-agent"]).output();

    let policy = format!(
        r#"{{"default":[{{"type":"reject"}}],"transports":{{"docker":{{"{}/demo/gpg":[{{"type":"signedBy","keyType":"GPGKeys","keyPath":"{}"}}]}}}}}}"#,
        reg.host,
        w.join("signer.gpg").display()
    );
    let out = w.join("rootfs");
    pull(&reg, "demo/gpg:v1", check(&policy, Some(&regd)), &out).unwrap();
    assert_eq!(fs::read_to_string(out.join("hello.txt")).unwrap(), "gpg signed\n");
    fs::remove_dir_all(&out).unwrap();
    // Without the lookaside configuration there is no signature: refused.
    let err = pull(&reg, "demo/gpg:v1", check(&policy, None), &out).unwrap_err();
    assert!(matches!(err, ImageError::Policy(_)), "{err}");
    assert!(!out.exists());
}
