//! Interop with the real tools: signatures made by gpg + `skopeo standalone-sign` (simple signing)
//! and by `openssl dgst -sha256 -sign` (cosign format) are verified by this crate, and the
//! negative cases are refused. Skips (with a message) when a tool is missing.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::Command;

use base64::Engine as _;
use cloister_signature::{
    Acceptance, BoxFuture, CosignSignature, DenyReason, FsKeySource, ImageIdentity, LookasideSignatureSource, Policy,
    PolicyError, RegistriesD, SignatureSource, SourceError, evaluate,
};
use sha2::Digest as _;

fn have(tool: &str) -> bool {
    let found =
        std::env::var_os("PATH").map(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file())).unwrap_or(false);
    if !found {
        println!("skipping: {tool} not found");
    }
    found
}

fn run(cmd: &mut Command) -> Vec<u8> {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(out.status.success(), "{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    out.stdout
}

/// A throwaway GnuPG home; the agent is stopped on drop.
struct Gpg {
    home: PathBuf,
}

impl Gpg {
    fn new(dir: &Path) -> Self {
        let home = dir.join("gnupg");
        std::fs::create_dir(&home).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            std::fs::set_permissions(&home, std::fs::Permissions::from_mode(0o700)).unwrap();
        }
        Self { home }
    }

    fn cmd(&self, program: &str) -> Command {
        let mut c = Command::new(program);
        c.env("GNUPGHOME", &self.home);
        c
    }

    fn gen_key(&self, uid: &str, algo: &str) -> String {
        run(self.cmd("gpg").args([
            "--batch",
            "--quiet",
            "--passphrase",
            "",
            "--quick-gen-key",
            uid,
            algo,
            "sign",
            "never",
        ]));
        let list = run(self.cmd("gpg").args(["--batch", "--with-colons", "--list-keys", uid]));
        let text = String::from_utf8(list).unwrap();
        let line = text.lines().find(|l| l.starts_with("fpr:")).expect("fingerprint line");
        line.split(':').nth(9).unwrap().to_string()
    }

    fn export(&self, fpr: &str, armor: bool) -> Vec<u8> {
        let mut c = self.cmd("gpg");
        c.args(["--batch", "--export"]);
        if armor {
            c.arg("--armor");
        }
        run(c.arg(fpr))
    }

    fn standalone_sign(&self, manifest: &Path, reference: &str, fpr: &str, out: &Path) {
        run(self.cmd("skopeo").arg("standalone-sign").arg(manifest).args([reference, fpr]).arg("-o").arg(out));
    }

    fn standalone_verify(&self, manifest: &Path, reference: &str, fpr: &str, sig: &Path) -> bool {
        self.cmd("skopeo")
            .arg("standalone-verify")
            .arg(manifest)
            .args([reference, fpr])
            .arg(sig)
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false)
    }
}

impl Drop for Gpg {
    fn drop(&mut self) {
        let _ = self.cmd("gpgconf").args(["--kill", "all"]).output();
    }
}

/// A signature source returning fixed signatures, whatever the image.
struct Fixed {
    simple: Vec<Vec<u8>>,
    cosign: Vec<CosignSignature>,
}

impl SignatureSource for Fixed {
    fn simple_signatures<'a>(
        &'a self,
        _: &'a ImageIdentity,
        _: &'a str,
    ) -> BoxFuture<'a, Result<Vec<Vec<u8>>, SourceError>> {
        Box::pin(async move { Ok(self.simple.clone()) })
    }
    fn cosign_signatures<'a>(
        &'a self,
        _: &'a ImageIdentity,
        _: &'a str,
    ) -> BoxFuture<'a, Result<Vec<CosignSignature>, SourceError>> {
        Box::pin(async move { Ok(self.cosign.clone()) })
    }
}

fn simple_only(blobs: Vec<Vec<u8>>) -> Fixed {
    Fixed { simple: blobs, cosign: Vec::new() }
}

const REPO: &str = "127.0.0.1:5055/demo/signed";
const MANIFEST: &str = r#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:1111111111111111111111111111111111111111111111111111111111111111","size":2},"layers":[]}"#;

fn sha256(data: &[u8]) -> String {
    let d = sha2::Sha256::digest(data);
    format!("sha256:{}", d.iter().map(|b| format!("{b:02x}")).collect::<String>())
}

fn image(s: &str) -> ImageIdentity {
    ImageIdentity::parse(s).unwrap()
}

fn deny_reason(e: PolicyError) -> DenyReason {
    match e {
        PolicyError::Denied { reason, .. } => *reason,
        other => panic!("expected a denial, got {other}"),
    }
}

#[tokio::test]
async fn skopeo_simple_signing_interop() {
    if !have("gpg") || !have("skopeo") || !have("gpgconf") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let gpg = Gpg::new(dir.path());
    let ed = gpg.gen_key("Signer <s@example.test>", "ed25519");
    let rsa = gpg.gen_key("Rsa Signer <rsa@example.test>", "rsa2048");
    let stranger = gpg.gen_key("Stranger <x@example.test>", "ed25519");
    let keyring = dir.path().join("signer.gpg");
    std::fs::write(&keyring, gpg.export(&ed, false)).unwrap();
    let armored = dir.path().join("signers.asc");
    let mut both = gpg.export(&ed, true);
    both.extend(gpg.export(&rsa, true));
    std::fs::write(&armored, both).unwrap();

    let manifest = dir.path().join("manifest.json");
    std::fs::write(&manifest, MANIFEST).unwrap();
    let digest = sha256(MANIFEST.as_bytes());
    let reference = format!("{REPO}:v1");

    // Sign into a lookaside store laid out as skopeo would (`<repo path>@sha256=<hex>/signature-1`).
    let store = dir.path().join("sigstore");
    let sigdir = store.join(format!("demo/signed@sha256={}", &digest[7..]));
    std::fs::create_dir_all(&sigdir).unwrap();
    let sig_ed = sigdir.join("signature-1");
    gpg.standalone_sign(&manifest, &reference, &ed, &sig_ed);
    let sig_rsa = dir.path().join("sig-rsa");
    gpg.standalone_sign(&manifest, &reference, &rsa, &sig_rsa);
    let sig_stranger = dir.path().join("sig-stranger");
    gpg.standalone_sign(&manifest, &reference, &stranger, &sig_stranger);
    assert!(gpg.standalone_verify(&manifest, &reference, &ed, &sig_ed), "skopeo itself rejects its signature");

    let regd = format!("default-docker:\n  sigstore-staging: file://{0}\n  sigstore: file://{0}\n", store.display());
    let lookaside =
        LookasideSignatureSource::new(RegistriesD::from_yaml_documents([("default.yaml", regd.as_str())]).unwrap());
    let policy = |key: &Path, identity: &str| {
        Policy::from_json(
            format!(
                r#"{{"default":[{{"type":"reject"}}],"transports":{{"docker":{{"{REPO}":[{{"type":"signedBy","keyType":"GPGKeys","keyPath":"{}"{identity}}}]}}}}}}"#,
                key.display()
            )
            .as_bytes(),
        )
        .unwrap()
    };
    let p = policy(&keyring, "");

    // Accepted: the right digest and reference, through the lookaside store.
    let d = evaluate(&p, &image(&reference), &digest, &lookaside, &FsKeySource).await.unwrap();
    assert!(
        matches!(&d.accepted_by[..], [Acceptance::SignedBy { signer, signed_reference, .. }] if *signer == ed && *signed_reference == reference),
        "{d:?}"
    );
    // By digest too (matchRepoDigestOrExact compares the repository only).
    let by_digest = format!("{REPO}@{digest}");
    assert!(evaluate(&p, &image(&by_digest), &digest, &lookaside, &FsKeySource).await.is_ok());
    // An RSA signature, with an armored two-key keyring.
    let p_both = policy(&armored, "");
    let rsa_sigs = simple_only(vec![std::fs::read(&sig_rsa).unwrap()]);
    assert!(evaluate(&p_both, &image(&reference), &digest, &rsa_sigs, &FsKeySource).await.is_ok());

    let ed_sigs = simple_only(vec![std::fs::read(&sig_ed).unwrap()]);
    // Rejected: a different manifest digest.
    let other_digest = sha256(b"another manifest");
    let e = evaluate(&p, &image(&reference), &other_digest, &ed_sigs, &FsKeySource).await.unwrap_err();
    assert!(e.to_string().contains("does not match the image's manifest digest"), "{e}");
    // The lookaside store has nothing for another digest: unsigned.
    let e = evaluate(&p, &image(&reference), &other_digest, &lookaside, &FsKeySource).await.unwrap_err();
    assert_eq!(deny_reason(e), DenyReason::NoSignatures);
    // Rejected: a different reference under matchExact (and under the default rule).
    let p_exact = policy(&keyring, r#","signedIdentity":{"type":"matchExact"}"#);
    let v2 = format!("{REPO}:v2");
    let e = evaluate(&p_exact, &image(&v2), &digest, &ed_sigs, &FsKeySource).await.unwrap_err();
    assert!(e.to_string().contains("does not match"), "{e}");
    assert!(evaluate(&p, &image(&v2), &digest, &ed_sigs, &FsKeySource).await.is_err());
    assert!(evaluate(&p_exact, &image(&reference), &digest, &ed_sigs, &FsKeySource).await.is_ok());
    // Rejected: a key that is not in the keyring.
    let e = evaluate(
        &p,
        &image(&reference),
        &digest,
        &simple_only(vec![std::fs::read(&sig_stranger).unwrap()]),
        &FsKeySource,
    )
    .await
    .unwrap_err();
    assert!(e.to_string().contains("not a trusted key"), "{e}");
    assert!(!gpg.standalone_verify(&manifest, &reference, &ed, &sig_stranger));
    // Rejected: flipped bytes in the signed (compressed) content.
    let good = std::fs::read(&sig_ed).unwrap();
    for at in [good.len() / 4, good.len() / 3, good.len() / 2] {
        let mut bad = good.clone();
        bad[at] ^= 0x10;
        let e =
            evaluate(&p, &image(&reference), &digest, &simple_only(vec![bad.clone()]), &FsKeySource).await.unwrap_err();
        assert!(matches!(deny_reason(e), DenyReason::NoneAccepted(_)), "flip at {at}");
        let bad_path = dir.path().join(format!("bad-{at}"));
        std::fs::write(&bad_path, &bad).unwrap();
        assert!(!gpg.standalone_verify(&manifest, &reference, &ed, &bad_path), "skopeo accepted a flip at {at}");
    }
}

#[tokio::test]
async fn openssl_cosign_interop() {
    if !have("openssl") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let p = |name: &str| dir.path().join(name);
    run(Command::new("openssl").args(["ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out"]).arg(p("ec.pem")));
    run(Command::new("openssl").args(["ec", "-in"]).arg(p("ec.pem")).args(["-pubout", "-out"]).arg(p("ec.pub")));
    run(Command::new("openssl")
        .args(["ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out"])
        .arg(p("other.pem")));
    run(Command::new("openssl").args(["ec", "-in"]).arg(p("other.pem")).args(["-pubout", "-out"]).arg(p("other.pub")));

    let digest = sha256(MANIFEST.as_bytes());
    let payload = format!(
        r#"{{"critical":{{"identity":{{"docker-reference":"{REPO}"}},"image":{{"docker-manifest-digest":"{digest}"}},"type":"cosign container image signature"}},"optional":null}}"#
    );
    std::fs::write(p("payload.json"), &payload).unwrap();
    let sign = |key: &str| {
        let der = run(Command::new("openssl").args(["dgst", "-sha256", "-sign"]).arg(p(key)).arg(p("payload.json")));
        base64::engine::general_purpose::STANDARD.encode(der)
    };
    let good = CosignSignature { payload: payload.clone().into_bytes(), signature_b64: sign("ec.pem") };
    let foreign = CosignSignature { payload: payload.clone().into_bytes(), signature_b64: sign("other.pem") };

    let policy = |identity: &str| {
        Policy::from_json(
            format!(
                r#"{{"default":[{{"type":"reject"}}],"transports":{{"docker":{{"{REPO}":[{{"type":"sigstoreSigned","keyPath":"{}"{identity}}}]}}}}}}"#,
                p("ec.pub").display()
            )
            .as_bytes(),
        )
        .unwrap()
    };
    let by_digest = image(&format!("{REPO}@{digest}"));
    let tagged = image(&format!("{REPO}:v1"));
    let sigs = |s: Vec<CosignSignature>| Fixed { simple: Vec::new(), cosign: s };

    let pol = policy("");
    let d =
        evaluate(&pol, &by_digest, &digest, &sigs(vec![foreign.clone(), good.clone()]), &FsKeySource).await.unwrap();
    assert!(matches!(&d.accepted_by[..], [Acceptance::SigstoreSigned { signature: 2, .. }]), "{d:?}");
    // Tag reference with a repository-only identity: refused under the default rule, accepted
    // with matchRepository.
    assert!(evaluate(&pol, &tagged, &digest, &sigs(vec![good.clone()]), &FsKeySource).await.is_err());
    let pol_repo = policy(r#","signedIdentity":{"type":"matchRepository"}"#);
    assert!(evaluate(&pol_repo, &tagged, &digest, &sigs(vec![good.clone()]), &FsKeySource).await.is_ok());
    // Tampering: payload byte, signature byte, foreign key, another digest.
    let mut tampered_payload = good.clone();
    let at = tampered_payload.payload.len() / 2;
    tampered_payload.payload[at] ^= 0x01;
    let mut der = base64::engine::general_purpose::STANDARD.decode(&good.signature_b64).unwrap();
    let last = der.len() - 1;
    der[last] ^= 0x01;
    let tampered_sig = CosignSignature {
        payload: good.payload.clone(),
        signature_b64: base64::engine::general_purpose::STANDARD.encode(der),
    };
    for bad in [tampered_payload, tampered_sig, foreign] {
        let e = evaluate(&pol, &by_digest, &digest, &sigs(vec![bad]), &FsKeySource).await.unwrap_err();
        assert!(matches!(deny_reason(e), DenyReason::NoneAccepted(_)));
    }
    let other_digest = sha256(b"x");
    let e = evaluate(&pol, &image(&format!("{REPO}@{other_digest}")), &other_digest, &sigs(vec![good]), &FsKeySource)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("manifest digest"), "{e}");
}
