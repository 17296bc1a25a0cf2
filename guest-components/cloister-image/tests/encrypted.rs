//! Encrypted images made by Debian's skopeo (`--encryption-key jwe:…`, gzip and zstd, RSA and EC,
//! one and two recipients), pulled and decrypted in one streaming pass; the same image re-wrapped
//! for CoCo's `attestation-agent` key provider; and the failure cases: no key, wrong key,
//! tampered ciphertext (with a digest that matches, so only the HMAC can catch it).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod common;

use std::fs;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use cloister_image::{ImageError, PullOptions, Puller, Reference, Registry, RegistryOptions};
use cloister_ocicrypt::{AttestationAgentProvider, DecryptConfig, JwePrivateKey, KeyProvider, OfflineKekSource};
use common::fixture::fixture as pull_fixture;
use common::*;

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
}

struct Keys {
    rsa_pem: std::path::PathBuf,
    rsa_pub: std::path::PathBuf,
    ec_pem: std::path::PathBuf,
    ec_pub: std::path::PathBuf,
}

fn keys(dir: &Path) -> Keys {
    let p = |n: &str| dir.join(n);
    run(Command::new("openssl").args(["genrsa", "-out"]).arg(p("rsa.pem")).arg("2048"));
    run(Command::new("openssl").args(["rsa", "-pubout", "-in"]).arg(p("rsa.pem")).arg("-out").arg(p("rsa.pub")));
    run(Command::new("openssl")
        .args(["ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out"])
        .arg(p("ec1.pem")));
    run(Command::new("openssl").args(["ec", "-pubout", "-in"]).arg(p("ec1.pem")).arg("-out").arg(p("ec.pub")));
    run(Command::new("openssl")
        .args(["pkcs8", "-topk8", "-nocrypt", "-in"])
        .arg(p("ec1.pem"))
        .arg("-out")
        .arg(p("ec.pem")));
    Keys { rsa_pem: p("rsa.pem"), rsa_pub: p("rsa.pub"), ec_pem: p("ec.pem"), ec_pub: p("ec.pub") }
}

fn key(path: &Path) -> JwePrivateKey {
    JwePrivateKey::from_bytes(&fs::read(path).unwrap()).unwrap()
}

fn pull_with(
    reg: &TestRegistry,
    repo: &str,
    decrypt: DecryptConfig,
    out: &Path,
) -> Result<cloister_image::PulledImage, ImageError> {
    let ro = RegistryOptions { insecure_http_hosts: vec![reg.host.clone()], ..RegistryOptions::default() };
    let p = Puller::new(Registry::new(ro).unwrap(), PullOptions { decrypt, ..PullOptions::default() });
    rt().block_on(p.pull(&Reference::parse(&format!("{}/{repo}", reg.host)).unwrap(), out))
}

fn jwe(keys: &[&Path]) -> DecryptConfig {
    DecryptConfig { jwe_keys: keys.iter().map(|k| key(k)).collect(), ..DecryptConfig::default() }
}

#[test]
fn skopeo_encrypted_images_decrypt_to_the_source_tree() {
    if skip_without(&["skopeo", "docker-registry", "openssl", "gzip", "zstd", "tar"]) {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let k = keys(work.path());
    let fx = pull_fixture();
    let reg = TestRegistry::start();
    let layout = work.path().join("plain");
    write_layout(&layout, "v1", &[(tar_dir(&fx.l1), Comp::Gzip), (tar_dir(&fx.l2), Comp::Gzip)], "amd64");
    let rsa_pub = format!("jwe:{}", k.rsa_pub.display());
    let ec_pub = format!("jwe:{}", k.ec_pub.display());
    // RSA only (flattened JWE), gzip.
    reg.push(&layout, "v1", "demo/enc:rsa", &["--encryption-key", &rsa_pub]);
    // EC + RSA (general JWE, two recipients).
    reg.push(&layout, "v1", "demo/enc:two", &["--encryption-key", &ec_pub, "--encryption-key", &rsa_pub]);
    // Recompressed as zstd and encrypted: tar+zstd+encrypted.
    reg.push(&layout, "v1", "demo/enc:zstd", &["--dest-compress-format", "zstd", "--encryption-key", &ec_pub]);

    for (repo, keys) in [
        ("demo/enc:rsa", vec![k.rsa_pem.as_path()]),
        ("demo/enc:two", vec![k.ec_pem.as_path()]),
        ("demo/enc:two", vec![k.rsa_pem.as_path()]),
        ("demo/enc:zstd", vec![k.ec_pem.as_path()]),
    ] {
        let out = work.path().join("rootfs");
        let pulled = pull_with(&reg, repo, jwe(&keys), &out).unwrap_or_else(|e| panic!("{repo}: {e}"));
        assert!(pulled.layers.iter().all(|l| l.encrypted), "{repo}");
        let d = diff(&describe(&fx.expected), &describe(&out));
        assert!(d.is_empty(), "{repo}: {}", d.join("\n"));
        fs::remove_dir_all(&out).unwrap();
    }

    // No key: refused before anything is downloaded.
    let out = work.path().join("rootfs");
    let err = pull_with(&reg, "demo/enc:rsa", DecryptConfig::default(), &out).unwrap_err();
    assert!(matches!(err, ImageError::EncryptedNoKey(_)), "{err}");
    // The wrong key: a decryption error naming the layer.
    let err = pull_with(&reg, "demo/enc:rsa", jwe(&[&k.ec_pem]), &out).unwrap_err();
    assert!(matches!(err, ImageError::Decrypt { .. }), "{err}");
    assert!(!out.exists());
}

#[test]
fn tampered_ciphertext_is_caught_by_the_hmac() {
    if skip_without(&["skopeo", "docker-registry", "openssl", "gzip", "tar"]) {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let k = keys(work.path());
    let fx = pull_fixture();
    let layout = work.path().join("plain");
    write_layout(&layout, "v1", &[(tar_dir(&fx.l2), Comp::Gzip)], "amd64");
    let enc = work.path().join("enc");
    run(Command::new("skopeo")
        .args(["--insecure-policy", "copy", "-q", "--encryption-key"])
        .arg(format!("jwe:{}", k.rsa_pub.display()))
        .arg(format!("oci:{}:v1", layout.display()))
        .arg(format!("oci:{}:v1", enc.display())));
    // The host (or registry) flips a ciphertext byte and fixes up the digests, so every
    // content-addressed check passes: only the ocicrypt HMAC can notice.
    let index: serde_json::Value = serde_json::from_str(&fs::read_to_string(enc.join("index.json")).unwrap()).unwrap();
    let mh = index["manifests"][0]["digest"].as_str().unwrap().trim_start_matches("sha256:").to_owned();
    let manifest = fs::read_to_string(enc.join("blobs/sha256").join(&mh)).unwrap();
    let m: serde_json::Value = serde_json::from_str(&manifest).unwrap();
    let lh = m["layers"][0]["digest"].as_str().unwrap().trim_start_matches("sha256:").to_owned();
    let mut blob = fs::read(enc.join("blobs/sha256").join(&lh)).unwrap();
    let mid = blob.len() / 2;
    blob[mid] ^= 0x40;
    let nh = sha256_hex(&blob);
    fs::write(enc.join("blobs/sha256").join(&nh), &blob).unwrap();
    let manifest2 = manifest.replace(&lh, &nh);
    let mh2 = sha256_hex(manifest2.as_bytes());
    fs::write(enc.join("blobs/sha256").join(&mh2), &manifest2).unwrap();
    fs::write(enc.join("index.json"), fs::read_to_string(enc.join("index.json")).unwrap().replace(&mh, &mh2)).unwrap();

    let reg = TestRegistry::start();
    reg.push(&enc, "v1", "demo/tampered:v1", &[]);
    let out = work.path().join("rootfs");
    let err = pull_with(&reg, "demo/tampered:v1", jwe(&[&k.rsa_pem]), &out).unwrap_err();
    match &err {
        ImageError::Decrypt { cause, .. } => assert!(cause.to_string().to_lowercase().contains("hmac"), "{err}"),
        other => panic!("expected an HMAC failure, got {other}"),
    }
    assert!(!out.exists());
    assert!(
        fs::read_dir(work.path()).unwrap().all(|e| !e.unwrap().file_name().to_string_lossy().starts_with(".cloister"))
    );
}

#[test]
fn attestation_agent_provider_layers_unwrap_through_a_kek_source() {
    if skip_without(&["skopeo", "docker-registry", "openssl", "gzip", "tar"]) {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let k = keys(work.path());
    let fx = pull_fixture();
    let layout = work.path().join("plain");
    write_layout(&layout, "v1", &[(tar_dir(&fx.l1), Comp::Gzip), (tar_dir(&fx.l2), Comp::Gzip)], "amd64");
    let enc = work.path().join("enc");
    run(Command::new("skopeo")
        .args(["--insecure-policy", "copy", "-q", "--encryption-key"])
        .arg(format!("jwe:{}", k.rsa_pub.display()))
        .arg(format!("oci:{}:v1", layout.display()))
        .arg(format!("oci:{}:v1", enc.display())));
    let kek = [7u8; 32];
    let (_, n) = cloister_image::layout::rewrap_to_attestation_agent(
        &enc,
        "v1",
        &[key(&k.rsa_pem)],
        &kek,
        "kbs:///default/key/k1",
    )
    .unwrap();
    assert_eq!(n, 2);
    let anns = cloister_image::layout::layer_annotations(&enc, "v1").unwrap();
    assert!(anns.iter().all(|a| a.contains_key("org.opencontainers.image.enc.keys.provider.attestation-agent")
        && !a.contains_key("org.opencontainers.image.enc.keys.jwe")));
    let reg = TestRegistry::start();
    reg.push(&enc, "v1", "demo/aa:v1", &[]);

    // The KEK from an offline map (CoCo's offline_fs_kbc format).
    let map = work.path().join("keys.json");
    fs::write(&map, format!(r#"{{"default/key/k1":"{}"}}"#, base64_std(&kek))).unwrap();
    let provider = AttestationAgentProvider::new(OfflineKekSource::from_files(&[&map]).unwrap());
    let cfg = DecryptConfig { providers: vec![Arc::new(provider) as Arc<dyn KeyProvider>], ..DecryptConfig::default() };
    let out = work.path().join("rootfs");
    pull_with(&reg, "demo/aa:v1", cfg, &out).unwrap();
    let d = diff(&describe(&fx.expected), &describe(&out));
    assert!(d.is_empty(), "{}", d.join("\n"));

    // A different KEK under the same id: the unwrap fails, nothing is unpacked.
    fs::write(&map, format!(r#"{{"default/key/k1":"{}"}}"#, base64_std(&[8u8; 32]))).unwrap();
    let provider = AttestationAgentProvider::new(OfflineKekSource::from_files(&[&map]).unwrap());
    let cfg = DecryptConfig { providers: vec![Arc::new(provider) as Arc<dyn KeyProvider>], ..DecryptConfig::default() };
    let out2 = work.path().join("rootfs2");
    let err = pull_with(&reg, "demo/aa:v1", cfg, &out2).unwrap_err();
    assert!(matches!(err, ImageError::Decrypt { .. }), "{err}");
    assert!(!out2.exists());
}

fn base64_std(b: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(b)
}
