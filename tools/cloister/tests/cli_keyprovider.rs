//! `cloister image keyprovider` as the ocicrypt `cmd` provider an encoder calls (`keywrap`): the
//! packet it returns opens with the same KEK under CoCo's attestation-agent provider, and a KEK
//! file or key id that does not fit is refused.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write;
use std::process::{Command, Stdio};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Value, json};

fn keywrap(args: &[&str], params: &str, opts: &[u8]) -> std::process::Output {
    let req = json!({
        "op": "keywrap",
        "keywrapparams": {
            "ec": {"Parameters": {"attestation-agent": [STANDARD.encode(params)]}, "DecryptConfig": null},
            "optsdata": STANDARD.encode(opts),
        },
        "keyunwrapparams": {"dc": null, "annotation": null},
    });
    let mut child = Command::new(env!("CARGO_BIN_EXE_cloister"))
        .args(["image", "keyprovider"])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(req.to_string().as_bytes()).unwrap();
    child.wait_with_output().unwrap()
}

#[test]
fn keywrap_packets_open_with_the_kek() {
    let dir = tempfile::tempdir().unwrap();
    let kek = dir.path().join("kek.bin");
    std::fs::write(&kek, [7u8; 32]).unwrap();
    let kek_arg = kek.display().to_string();
    let args = ["--wrap-kek", kek_arg.as_str(), "--wrap-kid", "kbs:///default/key/k1"];
    let opts = br#"{"cipher":"AES_256_CTR_HMAC_SHA256","symkey":"c2VjcmV0","digest":"","cipheroptions":{}}"#;

    let o = keywrap(&args, "keyid=kbs:///default/key/k1::algorithm=A256GCM", opts);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let out: Value = serde_json::from_slice(&o.stdout).unwrap();
    let packet = STANDARD.decode(out["keywrapresults"]["annotation"].as_str().unwrap()).unwrap();
    let p: Value = serde_json::from_slice(&packet).unwrap();
    assert_eq!(p["kid"], "kbs:///default/key/k1");
    assert_eq!(p["wrap_type"], "A256GCM");

    // The guest side: the same KEK, released for that kid, opens it.
    let mut src = cloister_ocicrypt::OfflineKekSource::new();
    src.insert("kbs:///default/key/k1", zeroize::Zeroizing::new(vec![7u8; 32])).unwrap();
    let provider = cloister_ocicrypt::AttestationAgentProvider::new(src);
    let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    let opened = rt.block_on(provider.unwrap_packet(&packet)).unwrap();
    assert_eq!(&opened[..], &opts[..]);

    // Another key id than the configured KEK's, and a KEK file of the wrong size: exit 1.
    let o = keywrap(&args, "keyid=kbs:///default/key/other", opts);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("the configured KEK is kbs:///default/key/k1"));
    std::fs::write(&kek, [7u8; 31]).unwrap();
    let o = keywrap(&args, "keyid=kbs:///default/key/k1", opts);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("a KEK is 32 bytes"), "{}", String::from_utf8_lossy(&o.stderr));
}
