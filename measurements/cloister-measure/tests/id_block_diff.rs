//! Differential test of the SNP ID block / ID auth builder against sev-snp-measure's
//! `snp-create-id-block` (installed at /tmp/ssm; the test is skipped with a message when absent).
//!
//! Keys are made in-process with p384 from fixed seeds and written as PKCS#8 PEM to a private
//! temporary directory. ECDSA signatures differ (the Python tool uses random nonces, this crate
//! RFC 6979), so the ID block is compared byte for byte, the ID auth structure byte for byte outside
//! the two signature areas, and both sides' signatures are verified with p384 over the same
//! messages. The key digests the tool prints are compared with ours.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::Command;

use cloister_measure::digest::sha384;
use cloister_measure::id_block::{
    DEFAULT_POLICY, IdAuth, IdBlock, SignedIdBlock, SnpPublicKey, SnpSigningKey, auth_offsets,
};
use p384::ecdsa::signature::Verifier;
use p384::ecdsa::{Signature, VerifyingKey};
use p384::pkcs8::{EncodePrivateKey, LineEnding};

const TOOL: &str = "/tmp/ssm/bin/snp-create-id-block";

/// A fresh private directory under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> Self {
        let nanos =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
        let dir = std::env::temp_dir().join(format!("cloister-{tag}-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
        }
        Self(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn secret(seed: &str) -> p384::SecretKey {
    p384::SecretKey::from_slice(sha384(seed.as_bytes()).as_bytes()).unwrap()
}

fn write_pkcs8(dir: &Path, name: &str, key: &p384::SecretKey) -> PathBuf {
    let path = dir.join(name);
    let pem = key.to_pkcs8_pem(LineEnding::LF).unwrap();
    std::fs::write(&path, pem.as_bytes()).unwrap();
    path
}

/// Plain standard-alphabet base64 decoder, independent of the crate's.
fn b64(s: &str) -> Vec<u8> {
    let val = |c: u8| -> u32 {
        match c {
            b'A'..=b'Z' => u32::from(c - b'A'),
            b'a'..=b'z' => u32::from(c - b'a') + 26,
            b'0'..=b'9' => u32::from(c - b'0') + 52,
            b'+' => 62,
            b'/' => 63,
            _ => panic!("bad base64 character {c:#x}"),
        }
    };
    let s = s.trim().trim_end_matches('=').as_bytes();
    let mut out = Vec::new();
    let (mut acc, mut bits) = (0u32, 0u32);
    for &c in s {
        acc = (acc << 6) | val(c);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    out
}

/// Verifies an AMD-format signature area with p384 alone.
fn p384_verifies(key: &VerifyingKey, message: &[u8], area: &[u8]) -> bool {
    assert_eq!(area.len(), 0x200);
    assert!(area[48..72].iter().all(|&b| b == 0), "R wider than 48 bytes");
    assert!(area[72 + 48..].iter().all(|&b| b == 0), "S or reserved non-zero");
    let mut r = area[0..48].to_vec();
    r.reverse();
    let mut s = area[72..120].to_vec();
    s.reverse();
    let sig = Signature::from_slice(&[r, s].concat()).unwrap();
    key.verify(message, &sig).is_ok()
}

struct ToolOutput {
    id_block: String,
    id_auth: String,
    id_key_hash: Vec<u8>,
    author_key_hash: Vec<u8>,
}

fn run_tool(measurement_b64: &str, id_pem: &Path, author_pem: &Path) -> ToolOutput {
    let out = Command::new(TOOL)
        .arg("--measurement")
        .arg(measurement_b64)
        .arg("--idkey")
        .arg(id_pem)
        .arg("--authorkey")
        .arg(author_pem)
        .output()
        .unwrap();
    assert!(out.status.success(), "{TOOL} failed: {}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    let mut lines = text.lines();
    let first = lines.next().unwrap();
    let (block_part, auth_part) = first.split_once(',').unwrap();
    let id_block = block_part.strip_prefix("id-block=").unwrap().to_owned();
    let id_auth = auth_part.strip_prefix("id-auth=").unwrap().to_owned();
    let id_key_hash = b64(lines.next().unwrap().strip_prefix("id_key_hash: ").unwrap());
    let author_key_hash = b64(lines.next().unwrap().strip_prefix("author_key: ").unwrap());
    ToolOutput { id_block, id_auth, id_key_hash, author_key_hash }
}

#[test]
fn matches_snp_create_id_block() {
    if !Path::new(TOOL).exists() {
        eprintln!("skipping: {TOOL} is not installed (pip install sev-snp-measure into /tmp/ssm)");
        return;
    }
    let dir = TempDir::new("idblock");
    let id_secret = secret("cloister id key");
    let author_secret = secret("cloister author key");
    let id_pem = write_pkcs8(&dir.0, "id.pem", &id_secret);
    let author_pem = write_pkcs8(&dir.0, "author.pem", &author_secret);

    let id_key = SnpSigningKey::from_pem(&std::fs::read_to_string(&id_pem).unwrap()).unwrap();
    let author_key = SnpSigningKey::from_pem(&std::fs::read_to_string(&author_pem).unwrap()).unwrap();
    let id_vk = VerifyingKey::from(id_secret.public_key());
    let author_vk = VerifyingKey::from(author_secret.public_key());
    assert_eq!(id_key.public_key(), SnpPublicKey::from(id_vk));

    let digests = [sha384(b"measurement one"), sha384(b"measurement two"), cloister_measure::Sha384Digest::ZERO];
    for ld in digests {
        let block = IdBlock::new(ld, DEFAULT_POLICY);
        let ours = SignedIdBlock::sign(block, &id_key, Some(&author_key)).unwrap();
        let theirs = run_tool(&block_b64(&ld), &id_pem, &author_pem);

        // ID block: identical bytes, identical base64 string.
        assert_eq!(ours.id_block_base64(), theirs.id_block);
        assert_eq!(IdBlock::from_base64(&theirs.id_block).unwrap(), block);

        // ID auth: identical outside the signatures.
        let their_auth = IdAuth::from_base64(&theirs.id_auth).unwrap();
        let a = ours.auth.as_bytes();
        let b = their_auth.as_bytes();
        let sig_len = 0x200;
        for (start, end, what) in [
            (0, auth_offsets::ID_BLOCK_SIG, "algorithms + reserved1"),
            (auth_offsets::ID_KEY, auth_offsets::ID_KEY_SIG, "ID key + reserved2"),
            (auth_offsets::AUTHOR_KEY, 0x1000, "author key + reserved3"),
        ] {
            assert_eq!(&a[start..end], &b[start..end], "{what} differs");
        }

        // Both sides' signatures verify with p384 over the same messages.
        let block_bytes = block.to_bytes();
        let id_key_area = &a[auth_offsets::ID_KEY..auth_offsets::ID_KEY + 0x404];
        for (name, bytes) in [("ours", a), ("theirs", b)] {
            let block_sig = &bytes[auth_offsets::ID_BLOCK_SIG..auth_offsets::ID_BLOCK_SIG + sig_len];
            let key_sig = &bytes[auth_offsets::ID_KEY_SIG..auth_offsets::ID_KEY_SIG + sig_len];
            assert!(p384_verifies(&id_vk, &block_bytes, block_sig), "{name}: ID block signature");
            assert!(p384_verifies(&author_vk, id_key_area, key_sig), "{name}: ID key signature");
            // And wrong messages are refused.
            assert!(!p384_verifies(&id_vk, &block_bytes[1..], block_sig));
        }
        ours.auth.verify(&block).unwrap();
        their_auth.verify(&block).unwrap();

        // Key digests as the tool prints them (what the report carries).
        let summary = ours.summary();
        assert_eq!(summary.id_key_digest.as_bytes().as_slice(), &theirs.id_key_hash[..]);
        assert_eq!(summary.author_key_digest.unwrap().as_bytes().as_slice(), &theirs.author_key_hash[..]);
        assert_eq!(their_auth.id_key_digest(), summary.id_key_digest);
        assert_eq!(their_auth.author_key_digest(), summary.author_key_digest);
    }
}

/// Base64 of a launch digest, the form `--measurement` takes.
fn block_b64(ld: &cloister_measure::Sha384Digest) -> String {
    // Reuse the crate's encoder through the ID block: its first 48 bytes are the digest, and
    // 48 is a multiple of 3, so the first 64 characters encode exactly the digest.
    IdBlock::new(*ld, DEFAULT_POLICY).to_base64()[..64].to_owned()
}

#[test]
fn loads_openssl_written_sec1_key() {
    let have_openssl = Command::new("openssl").arg("version").output().map(|o| o.status.success()).unwrap_or(false);
    if !have_openssl {
        eprintln!("skipping: openssl is not available");
        return;
    }
    let dir = TempDir::new("sec1");
    let key = secret("sec1 via openssl");
    let pkcs8 = write_pkcs8(&dir.0, "k8.pem", &key);
    let sec1 = dir.0.join("sec1.pem");
    let status = Command::new("openssl").args(["ec", "-in"]).arg(&pkcs8).arg("-out").arg(&sec1).output().unwrap();
    assert!(status.status.success(), "{}", String::from_utf8_lossy(&status.stderr));
    let text = std::fs::read_to_string(&sec1).unwrap();
    assert!(text.contains("BEGIN EC PRIVATE KEY"));
    let loaded = SnpSigningKey::from_pem(&text).unwrap();
    assert_eq!(loaded.public_key(), SnpPublicKey::from(VerifyingKey::from(key.public_key())));
}
