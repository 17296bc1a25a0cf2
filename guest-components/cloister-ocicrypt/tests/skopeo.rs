//! Interoperability with containers/ocicrypt as shipped in skopeo: layers skopeo encrypts (JWE to
//! RSA and EC keys, flattened and general serialisations, gzip and zstd) are unwrapped and
//! stream-decrypted here, and layers encrypted here are decrypted by skopeo.
//!
//! Each test prints `skipping: … not found` and passes when `skopeo` or `openssl` is missing.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use cloister_ocicrypt::{
    AttestationAgentProvider, DecryptConfig, DigestCheck, EncryptConfig, EncryptedLayer, JwePrivateKey, JwePublicKey,
    KeyScheme, LayerDecryptReader, OcicryptError, OfflineKekSource, encrypt_layer, encrypted_media_type,
    unwrap_private_options, wrap_attestation_agent,
};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

const GZIP_LAYER: &str = "application/vnd.oci.image.layer.v1.tar+gzip";

fn have(tool: &str) -> bool {
    // `skopeo --version`, `openssl version`.
    let arg = if tool == "openssl" { "version" } else { "--version" };
    let ok = Command::new(tool).arg(arg).output().map(|o| o.status.success()).unwrap_or(false);
    if !ok {
        println!("skipping: {tool} not found");
    }
    ok
}

fn tools_present() -> bool {
    have("skopeo") && have("openssl")
}

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn skopeo(dir: &Path, args: &[&str]) {
    run(Command::new("skopeo").current_dir(dir).arg("--insecure-policy").arg("copy").args(args));
}

fn sha256_hex(data: &[u8]) -> String {
    Sha256::digest(data).iter().map(|b| format!("{b:02x}")).collect()
}

struct Keys {
    rsa_pkcs8: PathBuf,
    rsa_pkcs1: PathBuf,
    rsa_pub: PathBuf,
    ec_pkcs8: PathBuf,
    ec_sec1: PathBuf,
    ec_pub: PathBuf,
}

fn openssl(dir: &Path, args: &[&str]) {
    run(Command::new("openssl").current_dir(dir).args(args));
}

fn make_keys(dir: &Path) -> Keys {
    openssl(dir, &["genrsa", "-out", "rsa-gen.pem", "2048"]);
    openssl(dir, &["pkcs8", "-topk8", "-nocrypt", "-in", "rsa-gen.pem", "-out", "rsa.pem"]);
    openssl(dir, &["rsa", "-in", "rsa-gen.pem", "-traditional", "-out", "rsa-pkcs1.pem"]);
    openssl(dir, &["rsa", "-in", "rsa-gen.pem", "-pubout", "-out", "rsa.pub"]);
    openssl(dir, &["ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", "ec-sec1.pem"]);
    openssl(dir, &["ec", "-in", "ec-sec1.pem", "-pubout", "-out", "ec.pub"]);
    openssl(dir, &["pkcs8", "-topk8", "-nocrypt", "-in", "ec-sec1.pem", "-out", "ec.pem"]);
    Keys {
        rsa_pkcs8: dir.join("rsa.pem"),
        rsa_pkcs1: dir.join("rsa-pkcs1.pem"),
        rsa_pub: dir.join("rsa.pub"),
        ec_pkcs8: dir.join("ec.pem"),
        ec_sec1: dir.join("ec-sec1.pem"),
        ec_pub: dir.join("ec.pub"),
    }
}

fn private_key(p: &Path) -> JwePrivateKey {
    JwePrivateKey::from_file(p).unwrap()
}

fn public_key(p: &Path) -> JwePublicKey {
    JwePublicKey::from_file(p).unwrap()
}

/// The plaintext layer: a small tar (with ~300 KiB of poorly compressible data so the stream spans
/// many reads), gzip-compressed. Returns (tar, tar.gz).
fn make_layer() -> (Vec<u8>, Vec<u8>) {
    let mut builder = tar::Builder::new(Vec::new());
    let mut add = |path: &str, data: &[u8], mode: u32| {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(mode);
        h.set_mtime(1_577_836_800);
        h.set_uid(0);
        h.set_gid(0);
        h.set_cksum();
        builder.append_data(&mut h, path, data).unwrap();
    };
    add("hello.txt", b"hello\n", 0o644);
    add("bin/hi", b"#!/bin/sh\necho hi\n", 0o755);
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let noise: Vec<u8> = (0..300 * 1024)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 56) as u8
        })
        .collect();
    add("data.bin", &noise, 0o644);
    let tar = builder.into_inner().unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&tar).unwrap();
    (tar, gz.finish().unwrap())
}

struct LayerDesc {
    media_type: String,
    blob: Vec<u8>,
    annotations: BTreeMap<String, String>,
}

fn put_blob(layout: &Path, data: &[u8]) -> (String, u64) {
    let hex = sha256_hex(data);
    std::fs::create_dir_all(layout.join("blobs/sha256")).unwrap();
    std::fs::write(layout.join("blobs/sha256").join(&hex), data).unwrap();
    (format!("sha256:{hex}"), data.len() as u64)
}

/// Writes an OCI layout with one image tagged `v1`.
fn write_layout(layout: &Path, diff_ids: &[String], layers: &[LayerDesc]) {
    let config = json!({"architecture":"amd64","os":"linux","config":{"Cmd":["/bin/hi"]},
        "rootfs":{"type":"layers","diff_ids":diff_ids}})
    .to_string();
    let (cdig, csize) = put_blob(layout, config.as_bytes());
    let layer_descs: Vec<Value> = layers
        .iter()
        .map(|l| {
            let (d, s) = put_blob(layout, &l.blob);
            let mut v = json!({"mediaType": l.media_type, "digest": d, "size": s});
            if !l.annotations.is_empty() {
                v["annotations"] = json!(l.annotations);
            }
            v
        })
        .collect();
    let manifest = json!({"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json",
        "config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":cdig,"size":csize},
        "layers": layer_descs})
    .to_string();
    let (mdig, msize) = put_blob(layout, manifest.as_bytes());
    let index = json!({"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json",
        "digest":mdig,"size":msize,"annotations":{"org.opencontainers.image.ref.name":"v1"}}]});
    std::fs::write(layout.join("index.json"), index.to_string()).unwrap();
    std::fs::write(layout.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
}

fn read_blob(layout: &Path, digest: &str) -> Vec<u8> {
    let hex = digest.strip_prefix("sha256:").unwrap();
    std::fs::read(layout.join("blobs/sha256").join(hex)).unwrap()
}

/// The layers of the image tagged `v1`.
fn read_layers(layout: &Path) -> Vec<LayerDesc> {
    let index: Value = serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    let mdig = index["manifests"][0]["digest"].as_str().unwrap();
    let manifest: Value = serde_json::from_slice(&read_blob(layout, mdig)).unwrap();
    manifest["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            let digest = l["digest"].as_str().unwrap();
            let blob = read_blob(layout, digest);
            assert_eq!(format!("sha256:{}", sha256_hex(&blob)), digest);
            assert_eq!(blob.len() as u64, l["size"].as_u64().unwrap());
            LayerDesc {
                media_type: l["mediaType"].as_str().unwrap().to_owned(),
                blob,
                annotations: serde_json::from_value(l.get("annotations").cloned().unwrap_or(json!({}))).unwrap(),
            }
        })
        .collect()
}

/// Sets up keys and the plaintext image `img:v1` in a fresh directory.
fn setup() -> (tempfile::TempDir, Keys, Vec<u8>, Vec<u8>) {
    let dir = tempfile::tempdir().unwrap();
    let keys = make_keys(dir.path());
    let (tar, gz) = make_layer();
    let diff_id = format!("sha256:{}", sha256_hex(&tar));
    write_layout(
        &dir.path().join("img"),
        &[diff_id],
        &[LayerDesc { media_type: GZIP_LAYER.into(), blob: gz.clone(), annotations: BTreeMap::new() }],
    );
    (dir, keys, tar, gz)
}

/// Unwraps with `keys` and stream-decrypts; returns the plaintext.
async fn decrypt_with(layer: &LayerDesc, keys: Vec<JwePrivateKey>) -> Vec<u8> {
    let enc = EncryptedLayer::parse(&layer.media_type, &layer.annotations).unwrap().unwrap();
    let opts = unwrap_private_options(&enc, &DecryptConfig { jwe_keys: keys, providers: vec![] }).await.unwrap();
    let mut r = LayerDecryptReader::new(&layer.blob[..], &enc.public_options, &opts)
        .unwrap()
        .with_expected_size(layer.blob.len() as u64);
    // Small reads, as an unpacker would do.
    let mut out = Vec::new();
    let mut buf = vec![0u8; 8192];
    loop {
        let n = r.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        out.extend_from_slice(&buf[..n]);
    }
    assert!(r.is_verified());
    assert_eq!(opts.digest, format!("sha256:{}", sha256_hex(&out)));
    out
}

fn jwe_json(layer: &LayerDesc) -> Value {
    let enc = EncryptedLayer::parse(&layer.media_type, &layer.annotations).unwrap().unwrap();
    let blobs = &enc.keys_for(&KeyScheme::Jwe).unwrap().blobs;
    assert_eq!(blobs.len(), 1);
    serde_json::from_slice(&blobs[0]).unwrap()
}

#[tokio::test]
async fn skopeo_rsa_single_recipient_flattened() {
    if !tools_present() {
        return;
    }
    let (dir, keys, _tar, gz) = setup();
    let rsa_pub = format!("jwe:{}", keys.rsa_pub.display());
    skopeo(dir.path(), &["--encryption-key", &rsa_pub, "oci:img:v1", "oci:enc1:v1"]);
    let layers = read_layers(&dir.path().join("enc1"));
    assert_eq!(layers.len(), 1);
    let layer = &layers[0];
    assert_eq!(layer.media_type, format!("{GZIP_LAYER}+encrypted"));
    let jwe = jwe_json(layer);
    assert!(jwe.get("recipients").is_none(), "one recipient: flattened JSON");
    let hdr: Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(jwe["protected"].as_str().unwrap()).unwrap(),
    )
    .unwrap();
    assert_eq!(hdr["alg"], "RSA-OAEP");
    assert_eq!(hdr["enc"], "A256GCM");

    // PKCS#8 (what skopeo accepts) and PKCS#1 (our leniency) both decrypt to the gzip blob.
    assert_eq!(decrypt_with(layer, vec![private_key(&keys.rsa_pkcs8)]).await, gz);
    assert_eq!(decrypt_with(layer, vec![private_key(&keys.rsa_pkcs1)]).await, gz);

    // The EC key is not a recipient: nothing to try.
    let enc = EncryptedLayer::parse(&layer.media_type, &layer.annotations).unwrap().unwrap();
    let cfg = DecryptConfig { jwe_keys: vec![private_key(&keys.ec_pkcs8)], providers: vec![] };
    assert!(matches!(unwrap_private_options(&enc, &cfg).await, Err(OcicryptError::NoKeyForRecipients { .. })));

    // Spec §6.3: re-wrap skopeo's private options as a CoCo attestation-agent packet, drop the JWE
    // annotation, and unwrap through the provider with an offline KEK.
    let opts = unwrap_private_options(
        &enc,
        &DecryptConfig { jwe_keys: vec![private_key(&keys.rsa_pkcs8)], providers: vec![] },
    )
    .await
    .unwrap();
    let kek = [0x42u8; 32];
    let packet = wrap_attestation_agent(&kek, "kbs:///default/key/k1", &opts.to_json()).unwrap();
    let mut annotations = layer.annotations.clone();
    annotations.remove("org.opencontainers.image.enc.keys.jwe");
    annotations.insert("org.opencontainers.image.enc.keys.provider.attestation-agent".into(), STANDARD.encode(&packet));
    let kek_file = dir.path().join("offline-keys.json");
    std::fs::write(&kek_file, json!({"default/key/k1": STANDARD.encode(kek)}).to_string()).unwrap();
    let provider = AttestationAgentProvider::new(OfflineKekSource::from_files(&[&kek_file]).unwrap());
    let enc = EncryptedLayer::parse(&layer.media_type, &annotations).unwrap().unwrap();
    let cfg = DecryptConfig { jwe_keys: vec![], providers: vec![Arc::new(provider)] };
    let via_provider = unwrap_private_options(&enc, &cfg).await.unwrap();
    assert_eq!(via_provider, opts);
}

#[tokio::test]
async fn skopeo_ec_and_rsa_general() {
    if !tools_present() {
        return;
    }
    let (dir, keys, _tar, gz) = setup();
    let ec_pub = format!("jwe:{}", keys.ec_pub.display());
    let rsa_pub = format!("jwe:{}", keys.rsa_pub.display());
    skopeo(dir.path(), &["--encryption-key", &ec_pub, "--encryption-key", &rsa_pub, "oci:img:v1", "oci:enc2:v1"]);
    let layers = read_layers(&dir.path().join("enc2"));
    let layer = &layers[0];
    let jwe = jwe_json(layer);
    let recipients = jwe["recipients"].as_array().expect("general JSON");
    assert_eq!(recipients.len(), 2);
    let algs: Vec<&str> = recipients.iter().map(|r| r["header"]["alg"].as_str().unwrap()).collect();
    assert!(algs.contains(&"ECDH-ES+A256KW") && algs.contains(&"RSA-OAEP"), "{algs:?}");
    for key in [&keys.ec_pkcs8, &keys.ec_sec1, &keys.rsa_pkcs8] {
        assert_eq!(decrypt_with(layer, vec![private_key(key)]).await, gz, "{}", key.display());
    }
    // A wrong EC key of the right curve: tried and reported.
    let other = JwePrivateKey::generate_ec(cloister_ocicrypt::EcCurve::P256).with_label("stranger");
    let enc = EncryptedLayer::parse(&layer.media_type, &layer.annotations).unwrap().unwrap();
    match unwrap_private_options(&enc, &DecryptConfig { jwe_keys: vec![other], providers: vec![] }).await {
        Err(OcicryptError::UnwrapFailed { attempts }) => assert!(attempts.iter().any(|a| a.contains("stranger"))),
        other => panic!("{other:?}"),
    }
}

/// `--dest-compress-format zstd`: skopeo re-compresses, then encrypts, but records the digest of
/// the *source* gzip blob in the private options. The HMAC verifies; the digest check fails unless
/// relaxed to [`DigestCheck::WarnOnly`], after which the config's `diff_id` must be (and is) checked.
#[tokio::test]
async fn skopeo_zstd() {
    if !tools_present() {
        return;
    }
    let (dir, keys, tar, gz) = setup();
    let rsa_pub = format!("jwe:{}", keys.rsa_pub.display());
    skopeo(dir.path(), &["--dest-compress-format", "zstd", "--encryption-key", &rsa_pub, "oci:img:v1", "oci:encz:v1"]);
    let layers = read_layers(&dir.path().join("encz"));
    let layer = &layers[0];
    assert_eq!(layer.media_type, "application/vnd.oci.image.layer.v1.tar+zstd+encrypted");
    let enc = EncryptedLayer::parse(&layer.media_type, &layer.annotations).unwrap().unwrap();
    let opts = unwrap_private_options(
        &enc,
        &DecryptConfig { jwe_keys: vec![private_key(&keys.rsa_pkcs8)], providers: vec![] },
    )
    .await
    .unwrap();
    assert_eq!(opts.digest, format!("sha256:{}", sha256_hex(&gz)), "skopeo 1.9.3 records the source blob's digest");

    let mut strict = LayerDecryptReader::new(&layer.blob[..], &enc.public_options, &opts).unwrap();
    let e = strict.read_to_end(&mut Vec::new()).unwrap_err();
    assert!(matches!(OcicryptError::from_io(&e), Some(OcicryptError::DigestMismatch { .. })), "{e}");

    let mut lenient = LayerDecryptReader::new(&layer.blob[..], &enc.public_options, &opts)
        .unwrap()
        .with_expected_size(layer.blob.len() as u64)
        .with_digest_check(DigestCheck::WarnOnly);
    let mut plain = Vec::new();
    lenient.read_to_end(&mut plain).unwrap();
    assert!(lenient.is_verified());
    assert_eq!(&plain[..4], &[0x28, 0xb5, 0x2f, 0xfd], "zstd frame magic");
    assert_eq!(zstd::decode_all(&plain[..]).unwrap(), tar, "decompressed layer = diff_id's tar");

    // Tampering with skopeo's blob is still caught (HMAC) in the lenient mode.
    let mut bad = layer.blob.clone();
    bad[layer.blob.len() / 2] ^= 0x80;
    let mut r =
        LayerDecryptReader::new(&bad[..], &enc.public_options, &opts).unwrap().with_digest_check(DigestCheck::WarnOnly);
    let e = r.read_to_end(&mut Vec::new()).unwrap_err();
    assert!(matches!(OcicryptError::from_io(&e), Some(OcicryptError::HmacMismatch)));
}

/// Our encryptor → skopeo decrypts: one layout with a general JWE (EC + RSA), one with a flattened
/// JWE (RSA only).
#[tokio::test]
async fn ours_decrypted_by_skopeo() {
    if !tools_present() {
        return;
    }
    let (dir, keys, tar, gz) = setup();
    let diff_id = format!("sha256:{}", sha256_hex(&tar));
    for (name, recipients, key) in [
        ("ours2", vec![public_key(&keys.ec_pub), public_key(&keys.rsa_pub)], &keys.ec_pkcs8),
        ("ours1", vec![public_key(&keys.rsa_pub)], &keys.rsa_pkcs8),
    ] {
        let mut blob = Vec::new();
        let config = EncryptConfig { jwe_recipients: recipients, attestation_agent: vec![] };
        let out = encrypt_layer(&gz[..], &mut blob, &config).unwrap();
        assert_eq!(out.digest, format!("sha256:{}", sha256_hex(&blob)));
        write_layout(
            &dir.path().join(name),
            std::slice::from_ref(&diff_id),
            &[LayerDesc { media_type: encrypted_media_type(GZIP_LAYER), blob, annotations: out.annotations }],
        );
        let src = format!("oci:{name}:v1");
        let dst = format!("oci:dec-{name}:v1");
        skopeo(dir.path(), &["--decryption-key", &key.display().to_string(), &src, &dst]);
        let layers = read_layers(&dir.path().join(format!("dec-{name}")));
        assert_eq!(layers[0].media_type, GZIP_LAYER);
        assert_eq!(layers[0].blob, gz, "{name}: skopeo's decryption must give back the gzip blob");
        assert!(layers[0].annotations.keys().all(|k| !k.starts_with("org.opencontainers.image.enc.")));
    }
}
