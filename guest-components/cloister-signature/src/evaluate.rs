//! Policy evaluation for the `docker` transport.

use crate::cosign::CosignKey;
use crate::error::{DenyReason, MatchedScope, PolicyError, SignatureRejection};
use crate::identity::{DockerReference, ImageIdentity, NameOnlySignature, is_sha256_digest};
use crate::payload::{PayloadKind, check_payload};
use crate::policy::{GpgKeyType, KeySpec, Policy, Requirement, SignedBy, SigstoreSigned, SigstoreTrust};
use crate::simple::{Keyring, verify_message};
use crate::source::{CosignSignature, KeySource, SignatureSource, fetch_key};

/// Most signatures examined for one requirement; a source returning more denies.
pub const MAX_SIGNATURES: usize = 128;

/// The policy accepted the image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// The image, as the normalised docker reference it was evaluated as.
    pub image: String,
    /// The scope whose requirements applied.
    pub scope: MatchedScope,
    /// One entry per requirement of that scope, in order (all accepted).
    pub accepted_by: Vec<Acceptance>,
}

impl Decision {
    /// True if nothing was verified: every requirement was `insecureAcceptAnything`.
    pub fn is_unverified(&self) -> bool {
        self.accepted_by.iter().all(|a| matches!(a, Acceptance::InsecureAcceptAnything { .. }))
    }
}

/// How one requirement accepted the image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Acceptance {
    /// `insecureAcceptAnything` (nothing checked).
    InsecureAcceptAnything {
        /// Position in the scope's list.
        index: usize,
    },
    /// `signedBy`: an OpenPGP signature verified and its claims matched.
    SignedBy {
        /// Position in the scope's list.
        index: usize,
        /// Fingerprint of the signing key (uppercase hex; a subkey or the primary).
        signer: String,
        /// Fingerprint of its primary key.
        primary_key: String,
        /// 1-based position of the accepted signature in the source's list.
        signature: usize,
        /// The identity the signature claims.
        signed_reference: String,
    },
    /// `sigstoreSigned`: a cosign signature verified and its claims matched.
    SigstoreSigned {
        /// Position in the scope's list.
        index: usize,
        /// Which trusted key verified it (its `keyPath`, or `keyData[#n]`).
        key: String,
        /// 1-based position of the accepted signature in the source's list.
        signature: usize,
        /// The identity the signature claims.
        signed_reference: String,
    },
}

/// Evaluates `policy` for a `docker` image: picks the most specific scope, then requires every
/// requirement in it to accept (AND). `manifest_digest` must be `sha256:<hex>` of the exact
/// manifest bytes the caller will use; signatures are fetched from `sigs` and trusted keys from
/// `keys` only when a requirement needs them. Any failure — unparseable input, unreachable key
/// or signature store, unsupported feature — denies.
///
/// The image is identified by [`ImageIdentity::reference`]: when the caller knows a digest it is
/// `repo@digest` (the caller must have checked that the content it pulls matches that digest),
/// otherwise `repo:tag`.
pub async fn evaluate(
    policy: &Policy,
    image: &ImageIdentity,
    manifest_digest: &str,
    sigs: &dyn SignatureSource,
    keys: &dyn KeySource,
) -> Result<Decision, PolicyError> {
    let result = evaluate_inner(policy, image, manifest_digest, sigs, keys).await;
    match &result {
        Ok(d) => {
            tracing::info!(image = %d.image, scope = %d.scope, accepted_by = ?d.accepted_by, "signature policy accepted the image")
        }
        Err(e) => tracing::warn!(image = %image, error = %e, "signature policy denied the image"),
    }
    result
}

#[derive(Default)]
struct Cache {
    simple: Option<Vec<Vec<u8>>>,
    cosign: Option<Vec<CosignSignature>>,
}

struct Ctx<'a> {
    image: &'a ImageIdentity,
    intended: DockerReference,
    manifest_digest: &'a str,
    sigs: &'a dyn SignatureSource,
    keys: &'a dyn KeySource,
}

async fn evaluate_inner(
    policy: &Policy,
    image: &ImageIdentity,
    manifest_digest: &str,
    sigs: &dyn SignatureSource,
    keys: &dyn KeySource,
) -> Result<Decision, PolicyError> {
    if !is_sha256_digest(manifest_digest) {
        return Err(PolicyError::InvalidManifestDigest(manifest_digest.chars().take(140).collect()));
    }
    let intended = image.reference()?;
    let image_str = intended.to_string();
    let (scope, reqs) = policy.requirements_for(image)?;
    tracing::debug!(image = %image_str, %scope, requirements = reqs.len(), "signature policy scope");
    if reqs.is_empty() {
        return Err(PolicyError::EmptyRequirements { scope });
    }
    let deny = |index: usize, req: &Requirement, reason: DenyReason| PolicyError::Denied {
        image: image_str.clone(),
        scope: scope.clone(),
        index,
        requirement: req.type_name(),
        reason: Box::new(reason),
    };
    // Everything that denies without looking at signatures or keys, first: no fetches for an
    // image that cannot be accepted anyway.
    for (i, req) in reqs.iter().enumerate() {
        if let Some(reason) = static_denial(req) {
            return Err(deny(i, req, reason));
        }
    }
    let ctx = Ctx { image, intended, manifest_digest, sigs, keys };
    let mut cache = Cache::default();
    let mut accepted_by = Vec::with_capacity(reqs.len());
    for (index, req) in reqs.iter().enumerate() {
        let a = match req {
            Requirement::InsecureAcceptAnything => Acceptance::InsecureAcceptAnything { index },
            Requirement::Reject => return Err(deny(index, req, DenyReason::Reject)),
            Requirement::SignedBy(sb) => {
                signed_by(&ctx, &mut cache, index, sb).await.map_err(|r| deny(index, req, r))?
            }
            Requirement::SigstoreSigned(ss) => {
                sigstore_signed(&ctx, &mut cache, index, ss).await.map_err(|r| deny(index, req, r))?
            }
        };
        accepted_by.push(a);
    }
    Ok(Decision { image: image_str, scope, accepted_by })
}

fn static_denial(req: &Requirement) -> Option<DenyReason> {
    match req {
        Requirement::Reject => Some(DenyReason::Reject),
        Requirement::InsecureAcceptAnything => None,
        Requirement::SignedBy(sb) if sb.key_type != GpgKeyType::GpgKeys => {
            Some(DenyReason::Unsupported(format!("signedBy keyType {}", sb.key_type)))
        }
        Requirement::SignedBy(_) => None,
        Requirement::SigstoreSigned(ss) => match (&ss.trust, &ss.rekor_public_key) {
            (SigstoreTrust::Fulcio(_), _) => {
                Some(DenyReason::Unsupported("sigstoreSigned with fulcio (keyless certificates and Rekor)".into()))
            }
            (SigstoreTrust::Pki(_), _) => {
                Some(DenyReason::Unsupported("sigstoreSigned with pki (X.509 certificates)".into()))
            }
            (_, Some(_)) => Some(DenyReason::Unsupported(
                "sigstoreSigned with a Rekor public key (transparency-log inclusion proofs)".into(),
            )),
            (SigstoreTrust::Keys(_), None) => None,
        },
    }
}

/// `(label, bytes)` for each key of a spec.
async fn load_keys(keys: &dyn KeySource, spec: &KeySpec) -> Result<Vec<(String, Vec<u8>)>, DenyReason> {
    let fetch = |loc: String| async move {
        match fetch_key(keys, &loc).await {
            Ok(data) => Ok((loc, data)),
            Err(e) => Err(DenyReason::KeyUnavailable { key: loc, reason: e.to_string() }),
        }
    };
    match spec {
        KeySpec::Path(p) => Ok(vec![fetch(p.clone()).await?]),
        KeySpec::Paths(ps) => {
            let mut out = Vec::with_capacity(ps.len());
            for p in ps {
                out.push(fetch(p.clone()).await?);
            }
            Ok(out)
        }
        KeySpec::Data(d) => Ok(vec![("keyData".to_string(), d.clone())]),
        KeySpec::Datas(ds) => Ok(ds.iter().enumerate().map(|(i, d)| (format!("keyDatas[{i}]"), d.clone())).collect()),
    }
}

fn key_label(spec: &KeySpec) -> String {
    match spec {
        KeySpec::Path(p) => p.clone(),
        KeySpec::Paths(ps) => ps.join(", "),
        KeySpec::Data(_) => "keyData".into(),
        KeySpec::Datas(_) => "keyDatas".into(),
    }
}

fn source_error(kind: &'static str, e: impl std::fmt::Display) -> DenyReason {
    DenyReason::SignatureSource { kind, reason: e.to_string() }
}

async fn signed_by(ctx: &Ctx<'_>, cache: &mut Cache, index: usize, sb: &SignedBy) -> Result<Acceptance, DenyReason> {
    let mut ring = Keyring::default();
    for (label, data) in load_keys(ctx.keys, &sb.keys).await? {
        let r = Keyring::parse(&data).map_err(|reason| DenyReason::InvalidKey { key: label, reason })?;
        ring.extend(r);
    }
    if ring.is_empty() {
        let mut reason = "no usable OpenPGP signing key".to_string();
        let why = ring.unusable_reasons();
        if !why.is_empty() {
            reason = format!("{reason} ({})", why.join("; "));
        }
        return Err(DenyReason::InvalidKey { key: key_label(&sb.keys), reason });
    }
    if cache.simple.is_none() {
        let got = ctx
            .sigs
            .simple_signatures(ctx.image, ctx.manifest_digest)
            .await
            .map_err(|e| source_error("simple signing", e))?;
        if got.len() > MAX_SIGNATURES {
            return Err(source_error(
                "simple signing",
                format!("{} signatures, more than {MAX_SIGNATURES}", got.len()),
            ));
        }
        cache.simple = Some(got);
    }
    let sigs = cache.simple.as_deref().unwrap_or_default();
    if sigs.is_empty() {
        return Err(DenyReason::NoSignatures);
    }
    let mut rejections = Vec::new();
    for (i, blob) in sigs.iter().enumerate() {
        let n = i + 1;
        let outcome = verify_message(&ring, blob).and_then(|v| {
            check_payload(
                PayloadKind::Simple,
                &v.payload,
                ctx.manifest_digest,
                &ctx.intended,
                &sb.signed_identity,
                NameOnlySignature::Refuse,
            )
            .map(|signed| (v, signed))
        });
        match outcome {
            Ok((v, signed_reference)) => {
                tracing::debug!(signature = n, signer = %v.signer, "simple signature accepted");
                return Ok(Acceptance::SignedBy {
                    index,
                    signer: v.signer,
                    primary_key: v.primary,
                    signature: n,
                    signed_reference,
                });
            }
            Err(reason) => {
                tracing::debug!(signature = n, %reason, "simple signature rejected");
                rejections.push(SignatureRejection { index: n, reason });
            }
        }
    }
    Err(DenyReason::NoneAccepted(rejections))
}

async fn sigstore_signed(
    ctx: &Ctx<'_>,
    cache: &mut Cache,
    index: usize,
    ss: &SigstoreSigned,
) -> Result<Acceptance, DenyReason> {
    let SigstoreTrust::Keys(spec) = &ss.trust else {
        return Err(static_denial(&Requirement::SigstoreSigned(ss.clone()))
            .unwrap_or_else(|| DenyReason::Unsupported("sigstoreSigned trust root".into())));
    };
    let mut trusted = Vec::new();
    for (label, data) in load_keys(ctx.keys, spec).await? {
        let k = CosignKey::from_pem(&data).map_err(|reason| DenyReason::InvalidKey { key: label.clone(), reason })?;
        trusted.push((label, k));
    }
    if cache.cosign.is_none() {
        let got =
            ctx.sigs.cosign_signatures(ctx.image, ctx.manifest_digest).await.map_err(|e| source_error("cosign", e))?;
        if got.len() > MAX_SIGNATURES {
            return Err(source_error("cosign", format!("{} signatures, more than {MAX_SIGNATURES}", got.len())));
        }
        cache.cosign = Some(got);
    }
    let sigs = cache.cosign.as_deref().unwrap_or_default();
    if sigs.is_empty() {
        return Err(DenyReason::NoSignatures);
    }
    let mut rejections = Vec::new();
    for (i, sig) in sigs.iter().enumerate() {
        let n = i + 1;
        let mut crypto_errors = Vec::new();
        let verified_by = trusted.iter().find_map(|(label, k)| match k.verify(&sig.payload, &sig.signature_b64) {
            Ok(()) => Some(label.clone()),
            Err(e) => {
                crypto_errors.push(e);
                None
            }
        });
        let outcome = match verified_by {
            None => {
                crypto_errors.dedup();
                Err(format!("not signed by a trusted key: {}", crypto_errors.join("; ")))
            }
            Some(label) => check_payload(
                PayloadKind::Cosign,
                &sig.payload,
                ctx.manifest_digest,
                &ctx.intended,
                &ss.signed_identity,
                NameOnlySignature::AllowForDigest,
            )
            .map(|signed| (label, signed)),
        };
        match outcome {
            Ok((key, signed_reference)) => {
                tracing::debug!(signature = n, %key, "cosign signature accepted");
                return Ok(Acceptance::SigstoreSigned { index, key, signature: n, signed_reference });
            }
            Err(reason) => {
                tracing::debug!(signature = n, %reason, "cosign signature rejected");
                rejections.push(SignatureRejection { index: n, reason });
            }
        }
    }
    Err(DenyReason::NoneAccepted(rejections))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::cosign::tests::{sign, test_key};
    use crate::error::SourceError;
    use crate::source::{BoxFuture, FsKeySource, NoSignatures};
    use std::collections::HashMap;
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicUsize, Ordering};

    macro_rules! fixture {
        ($name:literal) => {
            include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/", $name)).as_slice()
        };
    }

    const REF: &str = "127.0.0.1:5055/demo/signed:v1";

    fn digest() -> String {
        std::str::from_utf8(fixture!("manifest.digest")).unwrap().trim().to_string()
    }

    fn image(s: &str) -> ImageIdentity {
        ImageIdentity::parse(s).unwrap()
    }

    #[derive(Default)]
    struct Sigs {
        simple: Option<Result<Vec<Vec<u8>>, String>>,
        cosign: Option<Result<Vec<CosignSignature>, String>>,
        calls: AtomicUsize,
    }

    impl SignatureSource for Sigs {
        fn simple_signatures<'a>(
            &'a self,
            _image: &'a ImageIdentity,
            _manifest_digest: &'a str,
        ) -> BoxFuture<'a, Result<Vec<Vec<u8>>, SourceError>> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            Box::pin(async move {
                match &self.simple {
                    None => Ok(Vec::new()),
                    Some(Ok(v)) => Ok(v.clone()),
                    Some(Err(e)) => Err(SourceError::new(e.clone())),
                }
            })
        }

        fn cosign_signatures<'a>(
            &'a self,
            _image: &'a ImageIdentity,
            _manifest_digest: &'a str,
        ) -> BoxFuture<'a, Result<Vec<CosignSignature>, SourceError>> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            Box::pin(async move {
                match &self.cosign {
                    None => Ok(Vec::new()),
                    Some(Ok(v)) => Ok(v.clone()),
                    Some(Err(e)) => Err(SourceError::new(e.clone())),
                }
            })
        }
    }

    fn simple(blobs: &[&[u8]]) -> Sigs {
        Sigs { simple: Some(Ok(blobs.iter().map(|b| b.to_vec()).collect())), ..Sigs::default() }
    }

    #[derive(Default)]
    struct Kbs {
        resources: HashMap<String, Vec<u8>>,
        fetched: Mutex<Vec<String>>,
    }

    impl KeySource for Kbs {
        fn fetch_kbs<'a>(&'a self, uri: &'a str) -> BoxFuture<'a, Result<Vec<u8>, SourceError>> {
            Box::pin(async move {
                self.fetched.lock().unwrap().push(uri.to_string());
                self.resources.get(uri).cloned().ok_or_else(|| SourceError::new(format!("{uri}: 404 not found")))
            })
        }
    }

    struct Keys {
        _dir: tempfile::TempDir,
        ed: String,
        rsa: String,
        other: String,
        garbage: String,
        expired: String,
    }

    fn key_files() -> Keys {
        let dir = tempfile::tempdir().unwrap();
        let w = |name: &str, data: &[u8]| {
            let p = dir.path().join(name);
            std::fs::write(&p, data).unwrap();
            p.to_str().unwrap().to_string()
        };
        Keys {
            ed: w("ed.gpg", fixture!("ed25519.gpg")),
            rsa: w("rsa.gpg", fixture!("rsa2048.gpg")),
            other: w("other.gpg", fixture!("other.gpg")),
            garbage: w("garbage", b"this is not a key"),
            expired: w("expired.gpg", fixture!("expired.gpg")),
            _dir: dir,
        }
    }

    fn policy(scope_reqs: &str) -> Policy {
        let doc = format!(
            r#"{{"default":[{{"type":"reject"}}],"transports":{{"docker":{{"127.0.0.1:5055/demo":{scope_reqs}}}}}}}"#
        );
        Policy::from_json(doc.as_bytes()).unwrap()
    }

    fn signed_by(path: &str, identity: &str) -> String {
        format!(r#"{{"type":"signedBy","keyType":"GPGKeys","keyPath":"{path}"{identity}}}"#)
    }

    async fn eval(p: &Policy, img: &str, sigs: &Sigs, keys: &dyn KeySource) -> Result<Decision, PolicyError> {
        evaluate(p, &image(img), &digest(), sigs, keys).await
    }

    fn reason(e: PolicyError) -> DenyReason {
        match e {
            PolicyError::Denied { reason, .. } => *reason,
            other => panic!("not a denial: {other}"),
        }
    }

    #[tokio::test]
    async fn reject_and_insecure_accept() {
        let p = Policy::from_json(
            br#"{"default":[{"type":"reject"}],"transports":{"docker":{"a.io":[{"type":"insecureAcceptAnything"}]}}}"#,
        )
        .unwrap();
        let e = eval(&p, "b.io/x:1", &Sigs::default(), &FsKeySource).await.unwrap_err();
        assert!(matches!(
            &e,
            PolicyError::Denied {
                scope: MatchedScope::Default,
                index: 0,
                requirement: "reject",
                reason,
                ..
            } if **reason == DenyReason::Reject
        ));
        assert!(e.to_string().contains("b.io/x:1"), "{e}");
        let d = eval(&p, "a.io/x:1", &Sigs::default(), &FsKeySource).await.unwrap();
        assert_eq!(d.accepted_by, [Acceptance::InsecureAcceptAnything { index: 0 }]);
        assert!(d.is_unverified());
        assert_eq!(d.scope, MatchedScope::Docker("a.io".into()));
    }

    #[tokio::test]
    async fn signed_by_accepts_the_skopeo_signature() {
        let k = key_files();
        let p = policy(&format!("[{}]", signed_by(&k.ed, "")));
        let sigs = simple(&[fixture!("sig-other"), fixture!("sig-ed25519")]);
        let d = eval(&p, REF, &sigs, &FsKeySource).await.unwrap();
        match &d.accepted_by[..] {
            [Acceptance::SignedBy { index: 0, signature: 2, signed_reference, signer, .. }] => {
                assert_eq!(signed_reference, REF);
                assert!(std::str::from_utf8(fixture!("fingerprints.txt")).unwrap().contains(signer.as_str()));
            }
            other => panic!("{other:?}"),
        }
        assert!(!d.is_unverified());
        // By digest, matchRepoDigestOrExact only compares the repository.
        let by_digest = format!("127.0.0.1:5055/demo/signed@{}", digest());
        assert!(eval(&p, &by_digest, &sigs, &FsKeySource).await.is_ok());
    }

    #[tokio::test]
    async fn signed_by_rejections_are_explained() {
        let k = key_files();
        let p = policy(&format!("[{}]", signed_by(&k.ed, "")));
        // Wrong manifest digest.
        let sigs = simple(&[fixture!("sig-ed25519")]);
        let other_digest = "sha256:0000000000000000000000000000000000000000000000000000000000000000";
        let e = evaluate(&p, &image(REF), other_digest, &sigs, &FsKeySource).await.unwrap_err();
        let DenyReason::NoneAccepted(r) = reason(e) else { panic!() };
        assert!(r[0].reason.contains("does not match the image's manifest digest"), "{r:?}");
        // Other tag under the default (matchRepoDigestOrExact) and under matchExact.
        let e = eval(&p, "127.0.0.1:5055/demo/signed:v2", &sigs, &FsKeySource).await.unwrap_err();
        assert!(e.to_string().contains("does not match"), "{e}");
        let p2 = policy(&format!("[{}]", signed_by(&k.ed, r#","signedIdentity":{"type":"matchExact"}"#)));
        let by_digest = format!("127.0.0.1:5055/demo/signed@{}", digest());
        assert!(eval(&p2, &by_digest, &sigs, &FsKeySource).await.is_err());
        assert!(eval(&p2, REF, &sigs, &FsKeySource).await.is_ok());
        // matchRepository accepts any tag; exactReference pins one.
        let p3 = policy(&format!("[{}]", signed_by(&k.ed, r#","signedIdentity":{"type":"matchRepository"}"#)));
        assert!(eval(&p3, "127.0.0.1:5055/demo/signed:v9", &sigs, &FsKeySource).await.is_ok());
        let p4 = policy(&format!(
            "[{}]",
            signed_by(
                &k.ed,
                r#","signedIdentity":{"type":"exactReference","dockerReference":"127.0.0.1:5055/demo/signed:v1"}"#
            )
        ));
        assert!(eval(&p4, "127.0.0.1:5055/demo/renamed:x", &sigs, &FsKeySource).await.is_ok());
        let p5 = policy(&format!(
            "[{}]",
            signed_by(
                &k.ed,
                r#","signedIdentity":{"type":"remapIdentity","prefix":"127.0.0.1:5055/demo/mirror","signedPrefix":"127.0.0.1:5055/demo/signed"}"#
            )
        ));
        assert!(eval(&p5, "127.0.0.1:5055/demo/mirror:v1", &sigs, &FsKeySource).await.is_ok());
        assert!(eval(&p5, "127.0.0.1:5055/demo/mirror:v2", &sigs, &FsKeySource).await.is_err());
        // Several bad signatures: each reason is listed.
        let mut flipped = fixture!("sig-ed25519-uncompressed").to_vec();
        let at = flipped.windows(8).position(|w| w == b"critical").unwrap();
        flipped[at] = b'C';
        let sigs = simple(&[fixture!("sig-other"), &flipped, b"junk"]);
        let e = eval(&p, REF, &sigs, &FsKeySource).await.unwrap_err().to_string();
        assert!(e.contains("none of the 3 signature(s) were accepted"), "{e}");
        assert!(e.contains("signature 1: signed by") && e.contains("not a trusted key"), "{e}");
        assert!(e.contains("signature 2:") && e.contains("signature 3: not an OpenPGP message"), "{e}");
    }

    #[tokio::test]
    async fn signed_by_fail_closed_paths() {
        let k = key_files();
        let p = policy(&format!("[{}]", signed_by(&k.ed, "")));
        // No signatures.
        let e = eval(&p, REF, &Sigs::default(), &FsKeySource).await.unwrap_err();
        assert_eq!(reason(e), DenyReason::NoSignatures);
        // Signature store unreadable.
        let broken = Sigs { simple: Some(Err("lookaside store: permission denied".into())), ..Sigs::default() };
        let e = eval(&p, REF, &broken, &FsKeySource).await.unwrap_err();
        assert!(
            matches!(reason(e), DenyReason::SignatureSource { kind: "simple signing", reason } if reason.contains("permission denied"))
        );
        // Too many signatures.
        let many = Sigs { simple: Some(Ok(vec![b"x".to_vec(); MAX_SIGNATURES + 1])), ..Sigs::default() };
        assert!(matches!(
            reason(eval(&p, REF, &many, &FsKeySource).await.unwrap_err()),
            DenyReason::SignatureSource { .. }
        ));
        // Missing key file.
        let p_missing = policy(&format!("[{}]", signed_by("/nonexistent/key.gpg", "")));
        let sigs = simple(&[fixture!("sig-ed25519")]);
        let e = eval(&p_missing, REF, &sigs, &FsKeySource).await.unwrap_err();
        assert!(matches!(reason(e), DenyReason::KeyUnavailable { key, .. } if key == "/nonexistent/key.gpg"));
        // Key file that is not a key.
        let p_garbage = policy(&format!("[{}]", signed_by(&k.garbage, "")));
        assert!(matches!(
            reason(eval(&p_garbage, REF, &sigs, &FsKeySource).await.unwrap_err()),
            DenyReason::InvalidKey { .. }
        ));
        // Only expired keys.
        let p_expired = policy(&format!("[{}]", signed_by(&k.expired, "")));
        let e = eval(&p_expired, REF, &sigs, &FsKeySource).await.unwrap_err();
        assert!(matches!(reason(e), DenyReason::InvalidKey { reason, .. } if reason.contains("expired")));
        // A key not in the keyring.
        let p_other = policy(&format!("[{}]", signed_by(&k.other, "")));
        assert!(matches!(
            reason(eval(&p_other, REF, &sigs, &FsKeySource).await.unwrap_err()),
            DenyReason::NoneAccepted(_)
        ));
        // kbs:// key without a KBS.
        let p_kbs = policy(&format!("[{}]", signed_by("kbs:///default/keys/signer", "")));
        let e = eval(&p_kbs, REF, &sigs, &FsKeySource).await.unwrap_err();
        assert!(matches!(reason(e), DenyReason::KeyUnavailable { reason, .. } if reason.contains("no key broker")));
    }

    #[tokio::test]
    async fn keys_from_kbs_paths_and_data() {
        let k = key_files();
        let sigs = simple(&[fixture!("sig-rsa2048")]);
        let mut kbs = Kbs::default();
        kbs.resources.insert("kbs:///default/keys/rsa".into(), fixture!("rsa2048.gpg").to_vec());
        let p = policy(&format!("[{}]", signed_by("kbs:///default/keys/rsa", "")));
        assert!(eval(&p, REF, &sigs, &kbs).await.is_ok());
        assert_eq!(*kbs.fetched.lock().unwrap(), ["kbs:///default/keys/rsa"]);
        let p = policy(&format!("[{}]", signed_by("kbs:///default/keys/missing", "")));
        let e = eval(&p, REF, &sigs, &kbs).await.unwrap_err();
        assert!(matches!(reason(e), DenyReason::KeyUnavailable { reason, .. } if reason.contains("404")));
        // keyPaths: all keys are trusted; one unavailable path denies.
        let p = policy(&format!(r#"[{{"type":"signedBy","keyType":"GPGKeys","keyPaths":["{}","{}"]}}]"#, k.ed, k.rsa));
        assert!(eval(&p, REF, &sigs, &FsKeySource).await.is_ok());
        assert!(eval(&p, REF, &simple(&[fixture!("sig-ed25519")]), &FsKeySource).await.is_ok());
        let p = policy(&format!(r#"[{{"type":"signedBy","keyType":"GPGKeys","keyPaths":["{}","/missing"]}}]"#, k.rsa));
        assert!(matches!(
            reason(eval(&p, REF, &sigs, &FsKeySource).await.unwrap_err()),
            DenyReason::KeyUnavailable { .. }
        ));
        // keyData (base64 of an armored keyring).
        use base64::Engine as _;
        let b64 = base64::engine::general_purpose::STANDARD.encode(fixture!("ed25519.asc"));
        let p = policy(&format!(r#"[{{"type":"signedBy","keyType":"GPGKeys","keyData":"{b64}"}}]"#));
        assert!(eval(&p, REF, &simple(&[fixture!("sig-ed25519.asc")]), &FsKeySource).await.is_ok());
    }

    #[tokio::test]
    async fn requirements_are_anded_and_signatures_fetched_once() {
        let k = key_files();
        let p = policy(&format!("[{{\"type\":\"insecureAcceptAnything\"}},{}]", signed_by(&k.ed, "")));
        let e = eval(&p, REF, &Sigs::default(), &FsKeySource).await.unwrap_err();
        assert!(matches!(&e, PolicyError::Denied { index: 1, requirement: "signedBy", .. }), "{e}");
        let p = policy(&format!("[{},{}]", signed_by(&k.ed, ""), signed_by(&k.rsa, "")));
        let sigs = simple(&[fixture!("sig-ed25519"), fixture!("sig-rsa2048")]);
        let d = eval(&p, REF, &sigs, &FsKeySource).await.unwrap();
        assert_eq!(d.accepted_by.len(), 2);
        assert_eq!(sigs.calls.load(Ordering::SeqCst), 1);
        let sigs = simple(&[fixture!("sig-ed25519")]);
        let e = eval(&p, REF, &sigs, &FsKeySource).await.unwrap_err();
        assert!(matches!(&e, PolicyError::Denied { index: 1, .. }), "{e}");
    }

    #[tokio::test]
    async fn unsupported_features_deny_without_fetching() {
        for req in [
            r#"{"type":"signedBy","keyType":"X509Certificates","keyPath":"/k"}"#,
            r#"{"type":"signedBy","keyType":"signedByGPGKeys","keyPath":"/k"}"#,
            r#"{"type":"sigstoreSigned","fulcio":{"caPath":"/c","oidcIssuer":"https://i","subjectEmail":"a@b"},"rekorPublicKeyPath":"/r"}"#,
            r#"{"type":"sigstoreSigned","pki":{"caRootsPath":"/c"}}"#,
            r#"{"type":"sigstoreSigned","keyPath":"/k","rekorPublicKeyPath":"/r"}"#,
        ] {
            let p = policy(&format!(r#"[{{"type":"insecureAcceptAnything"}},{req}]"#));
            let sigs = Sigs::default();
            let kbs = Kbs::default();
            let e = eval(&p, REF, &sigs, &kbs).await.unwrap_err();
            assert!(
                matches!(&e, PolicyError::Denied { index: 1, reason, .. } if matches!(**reason, DenyReason::Unsupported(_))),
                "{e}"
            );
            assert!(e.to_string().contains("unsupported in the guest"), "{e}");
            assert_eq!(sigs.calls.load(Ordering::SeqCst), 0);
        }
        // A reject later in the list also denies before anything is fetched.
        let p = policy(r#"[{"type":"signedBy","keyType":"GPGKeys","keyPath":"/k"},{"type":"reject"}]"#);
        let sigs = Sigs::default();
        let e = eval(&p, REF, &sigs, &FsKeySource).await.unwrap_err();
        assert!(matches!(&e, PolicyError::Denied { index: 1, reason, .. } if **reason == DenyReason::Reject), "{e}");
        assert_eq!(sigs.calls.load(Ordering::SeqCst), 0);
    }

    fn cosign_payload(reference: &str, digest: &str) -> Vec<u8> {
        format!(
            r#"{{"critical":{{"identity":{{"docker-reference":"{reference}"}},"image":{{"docker-manifest-digest":"{digest}"}},"type":"cosign container image signature"}},"optional":null}}"#
        )
        .into_bytes()
    }

    fn cosign(sigs: Vec<CosignSignature>) -> Sigs {
        Sigs { cosign: Some(Ok(sigs)), ..Sigs::default() }
    }

    #[tokio::test]
    async fn sigstore_signed_with_keys() {
        let (sk, pem) = test_key(11);
        let (other_sk, other_pem) = test_key(12);
        let mut kbs = Kbs::default();
        kbs.resources.insert("kbs:///default/cosign/pub".into(), pem.clone().into_bytes());
        kbs.resources.insert("kbs:///default/cosign/other".into(), other_pem.clone().into_bytes());
        kbs.resources.insert("kbs:///default/cosign/garbage".into(), b"nope".to_vec());
        let repo = "127.0.0.1:5055/demo/signed";
        let payload = cosign_payload(repo, &digest());
        let good = CosignSignature { payload: payload.clone(), signature_b64: sign(&sk, &payload) };
        let by_digest = format!("{repo}@{}", digest());

        let req = |path: &str, identity: &str| format!(r#"[{{"type":"sigstoreSigned","keyPath":"{path}"{identity}}}]"#);
        // Default identity rule: a repository-only signed identity matches a digest reference …
        let p = policy(&req("kbs:///default/cosign/pub", ""));
        let d = eval(&p, &by_digest, &cosign(vec![good.clone()]), &kbs).await.unwrap();
        assert_eq!(
            d.accepted_by,
            [Acceptance::SigstoreSigned {
                index: 0,
                key: "kbs:///default/cosign/pub".into(),
                signature: 1,
                signed_reference: repo.into()
            }]
        );
        // … and not a tag reference (containers/image semantics), with a hint.
        let e = eval(&p, REF, &cosign(vec![good.clone()]), &kbs).await.unwrap_err().to_string();
        assert!(e.contains("matchRepository"), "{e}");
        // matchRepository accepts the tag reference.
        let p_repo = policy(&req("kbs:///default/cosign/pub", r#","signedIdentity":{"type":"matchRepository"}"#));
        assert!(eval(&p_repo, REF, &cosign(vec![good.clone()]), &kbs).await.is_ok());
        // Another repository is refused even with matchRepository.
        assert!(eval(&p_repo, "127.0.0.1:5055/demo/evil:v1", &cosign(vec![good.clone()]), &kbs).await.is_err());
        // Wrong digest in the payload.
        let bad_payload =
            cosign_payload(repo, "sha256:0000000000000000000000000000000000000000000000000000000000000000");
        let wrong_digest = CosignSignature { signature_b64: sign(&sk, &bad_payload), payload: bad_payload };
        let e = eval(&p, &by_digest, &cosign(vec![wrong_digest]), &kbs).await.unwrap_err().to_string();
        assert!(e.contains("manifest digest"), "{e}");
        // Tampered payload, wrong key, garbage signature: each explained.
        let mut tampered = good.clone();
        tampered.payload[5] ^= 1;
        let foreign = CosignSignature { payload: payload.clone(), signature_b64: sign(&other_sk, &payload) };
        let junk = CosignSignature { payload: payload.clone(), signature_b64: "%%%".into() };
        let e = eval(&p, &by_digest, &cosign(vec![tampered, foreign, junk]), &kbs).await.unwrap_err();
        let DenyReason::NoneAccepted(r) = reason(e) else { panic!() };
        assert_eq!(r.len(), 3);
        assert!(r[0].reason.contains("verification failed") && r[1].reason.contains("verification failed"), "{r:?}");
        assert!(r[2].reason.contains("base64"), "{r:?}");
        // keyDatas: any of the keys.
        use base64::Engine as _;
        let b = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        let p_datas =
            policy(&format!(r#"[{{"type":"sigstoreSigned","keyDatas":["{}","{}"]}}]"#, b(&other_pem), b(&pem)));
        let d = eval(&p_datas, &by_digest, &cosign(vec![good.clone()]), &kbs).await.unwrap();
        assert!(matches!(&d.accepted_by[0], Acceptance::SigstoreSigned { key, .. } if key == "keyDatas[1]"));
        // Fail closed: key unavailable, key unusable, no signatures, source error.
        let e = eval(&policy(&req("kbs:///default/cosign/none", "")), &by_digest, &cosign(vec![good.clone()]), &kbs)
            .await
            .unwrap_err();
        assert!(matches!(reason(e), DenyReason::KeyUnavailable { .. }));
        let e = eval(&policy(&req("kbs:///default/cosign/garbage", "")), &by_digest, &cosign(vec![good.clone()]), &kbs)
            .await
            .unwrap_err();
        assert!(matches!(reason(e), DenyReason::InvalidKey { .. }));
        let e = eval(&p, &by_digest, &Sigs::default(), &kbs).await.unwrap_err();
        assert_eq!(reason(e), DenyReason::NoSignatures);
        let broken = Sigs { cosign: Some(Err("registry: 500".into())), ..Sigs::default() };
        let e = eval(&p, &by_digest, &broken, &kbs).await.unwrap_err();
        assert!(matches!(reason(e), DenyReason::SignatureSource { kind: "cosign", .. }));
        // A simple-signing payload signed with the cosign key is not a cosign signature.
        let simple_payload = fixture!("payload.json").to_vec();
        let wrong_kind = CosignSignature { signature_b64: sign(&sk, &simple_payload), payload: simple_payload };
        assert!(eval(&p_repo, REF, &cosign(vec![wrong_kind]), &kbs).await.unwrap_err().to_string().contains("is not"));
    }

    #[tokio::test]
    async fn bad_inputs_from_the_caller() {
        let p = Policy::from_json(br#"{"default":[{"type":"insecureAcceptAnything"}]}"#).unwrap();
        for d in
            ["", "sha256:abc", "sha512:00", "SHA256:ef3a0b8e1cb2e64f17653d566237f2fc20cf04cece5062b7dd10a78f9def7ee0"]
        {
            let e = evaluate(&p, &image(REF), d, &NoSignatures, &FsKeySource).await.unwrap_err();
            assert!(matches!(e, PolicyError::InvalidManifestDigest(_)), "{d}: {e}");
        }
        let bad = ImageIdentity { registry: "".into(), repository: "x".into(), tag: None, digest: None };
        let e = evaluate(&p, &bad, &digest(), &NoSignatures, &FsKeySource).await.unwrap_err();
        assert!(matches!(e, PolicyError::InvalidReference(_)), "{e}");
        let empty = Policy { default: Vec::new(), transports: Default::default() };
        let e = evaluate(&empty, &image(REF), &digest(), &NoSignatures, &FsKeySource).await.unwrap_err();
        assert!(matches!(e, PolicyError::EmptyRequirements { scope: MatchedScope::Default }), "{e}");
    }
}
