//! The signature policy step of a pull: builds the image identity, supplies signatures from the
//! registry (cosign: the `sha256-<hex>.sig` tag of the same repository) and from a lookaside
//! store (simple signing), and evaluates the containers-policy.json with
//! [`cloister_signature`]. Any failure to fetch what the policy needs denies the image.

use std::sync::Arc;

use cloister_signature::{
    BoxFuture, CosignSignature, ImageIdentity, KeySource, LookasideFetcher, LookasideSignatureSource, Policy,
    RegistriesD, SignatureSource, SourceError,
};

use crate::digest::Digest;
use crate::error::ImageError;
use crate::manifest::Fetched;
use crate::reference::Reference;
use crate::registry::Registry;

/// The cosign payload media type.
pub const COSIGN_PAYLOAD: &str = "application/vnd.dev.cosign.simplesigning.v1+json";
/// The cosign signature annotation.
pub const COSIGN_ANNOTATION: &str = "dev.cosignproject.cosign/signature";
/// Largest signature payload accepted.
const MAX_PAYLOAD: usize = 64 * 1024;
/// Most signatures considered per image.
const MAX_SIGNATURES: usize = 16;

/// A policy and where its keys and signatures come from.
pub struct SignatureCheck {
    /// The containers-policy.json.
    pub policy: Policy,
    /// Keys named by the policy (files, or `kbs:///` resources through the data hub).
    pub keys: Arc<dyn KeySource>,
    /// Where simple-signing signatures live (registries.d), if anywhere.
    pub registries_d: Option<RegistriesD>,
}

/// Lookaside signatures over HTTP(S) with the registry client's TLS settings.
struct HttpLookaside(Registry);

impl LookasideFetcher for HttpLookaside {
    fn fetch<'a>(&'a self, url: &'a str) -> BoxFuture<'a, Result<Option<Vec<u8>>, SourceError>> {
        Box::pin(async move {
            self.0
                .fetch_url(url, cloister_signature::simple::MAX_SIGNATURE_SIZE)
                .await
                .map_err(|e| SourceError::new(e.to_string()))
        })
    }
}

impl std::fmt::Debug for SignatureCheck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SignatureCheck").finish_non_exhaustive()
    }
}

/// The identity the policy sees for `r`.
pub fn identity(r: &Reference) -> ImageIdentity {
    ImageIdentity {
        registry: r.registry.clone(),
        repository: r.repository.clone(),
        tag: r.tag.clone(),
        digest: r.digest.map(|d| d.to_string()),
    }
}

impl SignatureCheck {
    /// Evaluates the policy for `r` whose top-level manifest has `digest`.
    pub async fn evaluate(&self, reg: &Registry, r: &Reference, digest: &Digest) -> Result<(), ImageError> {
        let id = identity(r);
        let lookaside = self
            .registries_d
            .clone()
            .map(|d| LookasideSignatureSource::new(d).with_fetcher(Arc::new(HttpLookaside(reg.clone()))));
        let sigs = RegistrySignatures { reg, reference: r, lookaside: lookaside.as_ref() };
        let decision = cloister_signature::evaluate(&self.policy, &id, &digest.to_string(), &sigs, self.keys.as_ref())
            .await
            .map_err(|e| ImageError::Policy(e.to_string()))?;
        tracing::info!(image = %r, %digest, ?decision, "signature policy accepted the image");
        Ok(())
    }
}

struct RegistrySignatures<'a> {
    reg: &'a Registry,
    reference: &'a Reference,
    lookaside: Option<&'a LookasideSignatureSource>,
}

impl RegistrySignatures<'_> {
    async fn cosign(&self, manifest_digest: &str) -> Result<Vec<CosignSignature>, ImageError> {
        let d = Digest::parse(manifest_digest)?;
        let tag = format!("sha256-{}.sig", d.hex());
        let sig_ref = Reference { tag: Some(tag.clone()), digest: None, ..self.reference.clone() };
        let Some((body, ct)) = self.reg.manifest_if_exists(&sig_ref, &tag).await? else {
            return Ok(Vec::new());
        };
        let Fetched::Manifest(m) = crate::manifest::parse_manifest_any(ct.as_deref(), &body)? else {
            return Err(ImageError::BadManifest(format!("{tag} is an index, not a cosign signature manifest")));
        };
        let mut out = Vec::new();
        for l in m.layers.iter().filter(|l| l.media_type == COSIGN_PAYLOAD).take(MAX_SIGNATURES) {
            let Some(sig) = l.annotations.get(COSIGN_ANNOTATION) else { continue };
            let payload = self.reg.blob_bytes(&sig_ref, &l.digest, l.size, MAX_PAYLOAD).await?;
            out.push(CosignSignature { payload, signature_b64: sig.clone() });
        }
        Ok(out)
    }
}

impl SignatureSource for RegistrySignatures<'_> {
    fn simple_signatures<'a>(
        &'a self,
        image: &'a ImageIdentity,
        manifest_digest: &'a str,
    ) -> BoxFuture<'a, Result<Vec<Vec<u8>>, SourceError>> {
        Box::pin(async move {
            match self.lookaside {
                Some(l) => l.read(image, manifest_digest).await,
                None => Ok(Vec::new()),
            }
        })
    }

    fn cosign_signatures<'a>(
        &'a self,
        _image: &'a ImageIdentity,
        manifest_digest: &'a str,
    ) -> BoxFuture<'a, Result<Vec<CosignSignature>, SourceError>> {
        Box::pin(async move {
            self.cosign(manifest_digest)
                .await
                .map_err(|e| SourceError::new(format!("reading cosign signatures from the registry: {e}")))
        })
    }
}
