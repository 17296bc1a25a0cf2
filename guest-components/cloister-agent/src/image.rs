//! Where a container's root filesystem comes from. The host only names the image (a
//! reference string, checked by the policy first); the guest obtains the bytes itself:
//!
//! * [`PullerImages`]: pulls with [`cloister_image::Puller`] (signature policy, decryption,
//!   digest checks) into a private rootfs per container under the state directory;
//! * [`LocalImages`]: images already present in the guest image, by plain name, under a
//!   catalogue directory (development, tests, and images baked into a measured guest image).

#![forbid(unsafe_code)]

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;

use crate::metrics::{Step, StepMetrics};

/// Longest image reference accepted.
pub const MAX_REFERENCE: usize = 512;

/// Why an image could not be provided.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ImageError {
    /// The reference is malformed or not known here.
    #[error("image {reference}: {why}")]
    Reference {
        /// The reference.
        reference: String,
        /// Why.
        why: String,
    },
    /// The pull failed.
    #[error("pulling {reference}: {source}")]
    Pull {
        /// The reference.
        reference: String,
        /// The error.
        source: cloister_image::ImageError,
    },
    /// Attestation to the key broker failed, so nothing is pulled.
    #[error("attestation to the key broker failed: {0}")]
    Attestation(String),
    /// A file operation failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The error.
        source: std::io::Error,
    },
}

/// A root filesystem ready for a container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreparedRootfs {
    /// The directory.
    pub path: PathBuf,
    /// Whether it belongs to the container (deleted with it) or is shared (kept).
    pub owned: bool,
}

/// A boxed future (keeps [`ImageProvider`] object-safe).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Provides root filesystems by image reference.
pub trait ImageProvider: Send + Sync {
    /// Prepares the rootfs of `reference` for a container whose private directory is
    /// `container_dir` (exists, empty).
    fn prepare<'a>(
        &'a self,
        reference: &'a str,
        container_dir: &'a Path,
    ) -> BoxFuture<'a, Result<PreparedRootfs, ImageError>>;
}

fn check_reference(reference: &str) -> Result<(), ImageError> {
    let bad =
        |why: &str| Err(ImageError::Reference { reference: reference.chars().take(100).collect(), why: why.into() });
    if reference.is_empty() || reference.len() > MAX_REFERENCE {
        return bad("empty or too long");
    }
    if reference.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return bad("control or space characters");
    }
    Ok(())
}

/// Pulls images from registries with [`cloister_image::Puller`].
pub struct PullerImages {
    puller: cloister_image::Puller,
    metrics: Arc<StepMetrics>,
    signed: Option<(BrokerPolicy, PullerFactory)>,
}

/// Builds a puller around a signature check (a registry client and options are cheap to build).
pub type PullerFactory =
    Box<dyn Fn(Option<cloister_image::signature::SignatureCheck>) -> cloister_image::Puller + Send + Sync>;

/// The signature policy (containers-policy.json) of CoCo's `image_security_policy_uri`: a key
/// broker resource fetched before every pull (so the tenant can change it), whose `kbs:///` keys
/// come from the broker too. A policy that cannot be fetched or parsed stops the pull.
pub struct BrokerPolicy {
    /// `kbs:///repo/type/tag`.
    pub uri: String,
    /// The data hub over the attested key-broker client.
    pub secrets: cloister_image::secrets::CdhSecrets,
}

impl PullerImages {
    /// Uses `puller` (its options carry the signature policy and decryption keys).
    pub fn new(puller: cloister_image::Puller) -> Self {
        PullerImages { puller, metrics: Arc::default(), signed: None }
    }

    /// Records pull timings in `metrics`.
    pub fn with_metrics(mut self, metrics: Arc<StepMetrics>) -> Self {
        self.metrics = metrics;
        self
    }

    /// Checks every image against `policy`, fetched before each pull; `make` builds the puller
    /// that applies it.
    pub fn with_broker_policy(mut self, policy: BrokerPolicy, make: PullerFactory) -> Self {
        self.signed = Some((policy, make));
        self
    }

    async fn puller_for(&self) -> Result<Option<cloister_image::Puller>, cloister_image::ImageError> {
        let Some((p, make)) = &self.signed else { return Ok(None) };
        let bytes = p.secrets.fetch(&p.uri, "signature policy").await?;
        let policy = cloister_signature::Policy::from_json(&bytes)
            .map_err(|e| cloister_image::ImageError::Policy(format!("{}: {e}", p.uri)))?;
        let keys: Arc<dyn cloister_signature::KeySource> = Arc::new(p.secrets.clone());
        Ok(Some(make(Some(cloister_image::signature::SignatureCheck { policy, keys, registries_d: None }))))
    }

    /// Parses a reference the way the pull will (exposed for checks and tests).
    pub fn parse(reference: &str) -> Result<cloister_image::Reference, ImageError> {
        check_reference(reference)?;
        cloister_image::Reference::parse(reference)
            .map_err(|e| ImageError::Reference { reference: reference.to_owned(), why: e.to_string() })
    }
}

impl ImageProvider for PullerImages {
    fn prepare<'a>(
        &'a self,
        reference: &'a str,
        container_dir: &'a Path,
    ) -> BoxFuture<'a, Result<PreparedRootfs, ImageError>> {
        Box::pin(async move {
            let r = Self::parse(reference)?;
            let rootfs = container_dir.join("rootfs");
            let started = std::time::Instant::now();
            let checked = self
                .puller_for()
                .await
                .map_err(|source| ImageError::Pull { reference: reference.to_owned(), source })?;
            let pulled = checked
                .as_ref()
                .unwrap_or(&self.puller)
                .pull(&r, &rootfs)
                .await
                .map_err(|source| ImageError::Pull { reference: reference.to_owned(), source })?;
            self.metrics.record(Step::ImagePull, started.elapsed());
            let encrypted = pulled.layers.iter().filter(|l| l.encrypted).count();
            tracing::info!(image = %r, manifest = %pulled.manifest_digest, encrypted_layers = encrypted,
                elapsed = ?started.elapsed(), "image pulled");
            Ok(PreparedRootfs { path: pulled.rootfs, owned: true })
        })
    }
}

/// Images present in the guest: `<dir>/<name>` for a reference that is a plain name
/// (`[A-Za-z0-9][A-Za-z0-9._-]*`, optionally `:tag`, which selects `<dir>/<name>:<tag>` when
/// that exists). Shared between containers and never deleted.
#[derive(Debug, Clone)]
pub struct LocalImages {
    dir: PathBuf,
}

impl LocalImages {
    /// A catalogue directory.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        LocalImages { dir: dir.into() }
    }

    /// The directory of `reference`.
    pub fn lookup(&self, reference: &str) -> Result<PathBuf, ImageError> {
        check_reference(reference)?;
        let bad = |why: &str| ImageError::Reference { reference: reference.to_owned(), why: why.into() };
        let (name, tag) = match reference.split_once(':') {
            Some((n, t)) => (n, Some(t)),
            None => (reference, None),
        };
        let plain = |s: &str| {
            s.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
                && s.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        };
        if !plain(name) || tag.is_some_and(|t| !plain(t)) {
            return Err(bad("a local image is a plain name[:tag]"));
        }
        let candidates = [tag.map(|_| self.dir.join(reference)), Some(self.dir.join(name))];
        for c in candidates.into_iter().flatten() {
            if std::fs::symlink_metadata(&c).is_ok_and(|m| m.is_dir()) {
                return Ok(c);
            }
        }
        Err(bad("no such local image"))
    }
}

impl ImageProvider for LocalImages {
    fn prepare<'a>(
        &'a self,
        reference: &'a str,
        _container_dir: &'a Path,
    ) -> BoxFuture<'a, Result<PreparedRootfs, ImageError>> {
        Box::pin(async move { Ok(PreparedRootfs { path: self.lookup(reference)?, owned: false }) })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn local_lookup() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir(d.path().join("busybox")).unwrap();
        std::fs::create_dir(d.path().join("busybox:1.36")).unwrap();
        std::fs::write(d.path().join("file"), b"").unwrap();
        let l = LocalImages::new(d.path());
        assert_eq!(l.lookup("busybox").unwrap(), d.path().join("busybox"));
        assert_eq!(l.lookup("busybox:1.36").unwrap(), d.path().join("busybox:1.36"));
        assert_eq!(l.lookup("busybox:latest").unwrap(), d.path().join("busybox"));
        for bad in ["", "../etc", "a/b", ".hidden", "file", "missing", "busybox:../x", "a b", "x\n"] {
            assert!(l.lookup(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn puller_references() {
        let r = PullerImages::parse(
            "registry.example:5000/app/web@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
        )
        .unwrap();
        assert_eq!(r.registry, "registry.example:5000");
        assert!(r.digest.is_some());
        let r = PullerImages::parse("busybox").unwrap();
        assert_eq!(r.repository, "library/busybox");
        for bad in ["", "a b", "http://x/y", &"a".repeat(MAX_REFERENCE + 1)] {
            assert!(PullerImages::parse(bad).is_err(), "{bad:?}");
        }
    }
}
