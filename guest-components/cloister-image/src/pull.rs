//! The pull: resolve the reference, check the signature policy on the top-level manifest before
//! any layer is fetched, fetch and verify the config, unwrap the layer keys, then stream every
//! layer (bounded concurrency) into a content-addressed layer directory, and finally assemble the
//! rootfs atomically (built beside the destination, renamed into place).
//!
//! Nothing partial survives a failure: layer directories are private until verified, the rootfs
//! appears only complete, and temporary directories are removed.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use cloister_ocicrypt::{DecryptConfig, EncryptedLayer};
use tokio::sync::{Semaphore, mpsc, watch};
use tokio::task::JoinSet;

use crate::digest::Digest;
use crate::error::ImageError;
use crate::manifest::{Descriptor, Fetched, ImageConfig, MAX_MANIFEST, Manifest, Platform, compression_of};
use crate::merge::{MergeMode, merge_layer};
use crate::pipeline::{CHANNEL_DEPTH, DecryptWrap, LayerJob, download, run_layer};
use crate::reference::Reference;
use crate::registry::Registry;
use crate::signature::SignatureCheck;
use crate::unpack::{LayerStats, UnpackOptions};

/// How to pull.
pub struct PullOptions {
    /// The platform to select from an index.
    pub platform: Platform,
    /// Keys and key providers for encrypted layers.
    pub decrypt: DecryptConfig,
    /// The signature policy; `None` accepts any image (logged loudly).
    pub signatures: Option<SignatureCheck>,
    /// Layers downloaded and unpacked at once.
    pub max_concurrent_layers: usize,
    /// Ownership handling.
    pub unpack: UnpackOptions,
    /// A directory keeping unpacked layers by diff_id for reuse; `None` → layers are moved into
    /// the rootfs and nothing is kept.
    pub layer_store: Option<PathBuf>,
}

impl Default for PullOptions {
    fn default() -> Self {
        Self {
            platform: Platform::host(),
            decrypt: DecryptConfig::default(),
            signatures: None,
            max_concurrent_layers: 3,
            unpack: UnpackOptions::default(),
            layer_store: None,
        }
    }
}

/// One layer of a pulled image.
#[derive(Debug, Clone)]
pub struct LayerReport {
    /// Blob digest.
    pub digest: Digest,
    /// Uncompressed digest.
    pub diff_id: Digest,
    /// Whether it was encrypted.
    pub encrypted: bool,
    /// Taken from the layer store instead of downloaded.
    pub reused: bool,
    /// What it contained (zero when reused).
    pub stats: LayerStats,
}

/// What a pull produced.
#[derive(Debug, Clone)]
pub struct PulledImage {
    /// The reference pulled.
    pub reference: Reference,
    /// Digest of the manifest (or index) the reference resolved to: what signatures cover.
    pub manifest_digest: Digest,
    /// Digest of the platform manifest used (equal to `manifest_digest` without an index).
    pub image_manifest_digest: Digest,
    /// Digest of the config blob (the image id).
    pub config_digest: Digest,
    /// The config.
    pub config: ImageConfig,
    /// The layers, bottom first.
    pub layers: Vec<LayerReport>,
    /// The unpacked rootfs.
    pub rootfs: PathBuf,
}

/// A resolved image: verified manifest and config, policy checked.
#[derive(Debug, Clone)]
pub struct Resolved {
    /// The reference.
    pub reference: Reference,
    /// Top-level digest.
    pub manifest_digest: Digest,
    /// Platform manifest digest.
    pub image_manifest_digest: Digest,
    /// The platform manifest.
    pub manifest: Manifest,
    /// Config digest.
    pub config_digest: Digest,
    /// The config.
    pub config: ImageConfig,
}

/// Pulls images with one registry client and one set of options.
pub struct Puller {
    registry: Registry,
    opts: PullOptions,
}

static UNIQUE: AtomicU64 = AtomicU64::new(0);

fn unique_name(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
    format!("{prefix}-{}-{nanos:x}-{}", std::process::id(), UNIQUE.fetch_add(1, Ordering::Relaxed))
}

/// Removes a path when dropped, unless disarmed.
struct Cleanup(Option<PathBuf>);

impl Cleanup {
    fn disarm(&mut self) {
        self.0 = None;
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        if let Some(p) = self.0.take()
            && let Err(e) = std::fs::remove_dir_all(&p)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(path = %p.display(), error = %e, "could not remove a temporary directory");
        }
    }
}

/// The destination must not exist or be an empty directory.
fn check_destination(rootfs: &Path) -> Result<(), ImageError> {
    match std::fs::symlink_metadata(rootfs) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(ImageError::io(rootfs, e)),
        Ok(m) if m.is_dir() => {
            let mut rd = std::fs::read_dir(rootfs).map_err(|e| ImageError::io(rootfs, e))?;
            if rd.next().is_none() { Ok(()) } else { Err(ImageError::DestinationExists(rootfs.to_path_buf())) }
        }
        Ok(_) => Err(ImageError::DestinationExists(rootfs.to_path_buf())),
    }
}

impl Puller {
    /// A puller.
    pub fn new(registry: Registry, opts: PullOptions) -> Self {
        Self { registry, opts }
    }

    /// The registry client.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Resolves `r` to a verified manifest and config, with the signature policy checked.
    pub async fn resolve(&self, r: &Reference) -> Result<Resolved, ImageError> {
        let (body, ct) = self.registry.manifest(r, &r.manifest_reference()).await?;
        let top = Digest::of(&body);
        if let Some(pinned) = r.digest
            && pinned != top
        {
            return Err(ImageError::DigestMismatch { what: format!("manifest of {r}"), expected: pinned, actual: top });
        }
        // The policy is evaluated on what the reference resolved to, before anything else is used.
        match &self.opts.signatures {
            Some(check) => check.evaluate(&self.registry, r, &top).await?,
            None => tracing::warn!(image = %r, "no signature policy configured: accepting the image unverified"),
        }
        let (manifest, image_digest) = match crate::manifest::parse_manifest(ct.as_deref(), &body)? {
            Fetched::Manifest(m) => (*m, top),
            Fetched::Index(idx) => {
                let d = crate::manifest::select_platform(&idx, &self.opts.platform)?.clone();
                let body = self.registry.blob_manifest(r, &d).await?;
                match crate::manifest::parse_manifest(Some(&d.media_type), &body)? {
                    Fetched::Manifest(m) => (*m, d.digest),
                    Fetched::Index(_) => return Err(ImageError::BadManifest("an index inside an index".into())),
                }
            }
        };
        let config_bytes =
            self.registry.blob_bytes(r, &manifest.config.digest, manifest.config.size, MAX_MANIFEST).await?;
        let config: ImageConfig = serde_json::from_slice(&config_bytes)
            .map_err(|e| ImageError::BadManifest(format!("image config {}: {e}", manifest.config.digest)))?;
        if config.rootfs.diff_ids.len() != manifest.layers.len() {
            return Err(ImageError::LayerCount {
                diff_ids: config.rootfs.diff_ids.len(),
                layers: manifest.layers.len(),
            });
        }
        Ok(Resolved {
            reference: r.clone(),
            manifest_digest: top,
            image_manifest_digest: image_digest,
            config_digest: manifest.config.digest,
            manifest,
            config,
        })
    }

    /// Pulls `r` and unpacks it at `rootfs` (which must not exist or be an empty directory).
    pub async fn pull(&self, r: &Reference, rootfs: &Path) -> Result<PulledImage, ImageError> {
        check_destination(rootfs)?;
        let parent = rootfs.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new(".")).to_path_buf();
        std::fs::create_dir_all(&parent).map_err(|e| ImageError::io(&parent, e))?;
        let resolved = self.resolve(r).await?;

        // Layer directories: the persistent store, or a temporary one beside the rootfs.
        let (store, _store_cleanup) = match &self.opts.layer_store {
            Some(s) => (s.clone(), Cleanup(None)),
            None => {
                let p = parent.join(format!(".{}", unique_name("cloister-layers")));
                (p.clone(), Cleanup(Some(p)))
            }
        };
        let (reports, layers_dir) = self.fetch_into(&resolved, &store).await?;

        // Assemble the rootfs beside its destination, then rename it into place.
        // Layers are moved in when nothing keeps them (and they do not occur again higher up).
        let keep = self.opts.layer_store.is_some();
        let same_owner = self.opts.unpack.same_owner;
        let partial = parent.join(format!(".{}", unique_name("cloister-rootfs")));
        let dirs: Vec<(PathBuf, MergeMode)> = reports
            .iter()
            .enumerate()
            .map(|(i, l)| {
                let again = reports[i + 1..].iter().any(|h| h.diff_id == l.diff_id);
                (layers_dir.join(l.diff_id.hex()), if keep || again { MergeMode::Copy } else { MergeMode::Move })
            })
            .collect();
        let dest = rootfs.to_path_buf();
        tokio::task::spawn_blocking(move || -> Result<(), ImageError> {
            let mut guard = Cleanup(Some(partial.clone()));
            std::fs::create_dir(&partial).map_err(|e| ImageError::io(&partial, e))?;
            std::fs::set_permissions(&partial, std::os::unix::fs::PermissionsExt::from_mode(0o755))
                .map_err(|e| ImageError::io(&partial, e))?;
            for (d, mode) in &dirs {
                merge_layer(d, &partial, *mode, same_owner)?;
            }
            check_destination(&dest)?;
            if dest.exists() {
                std::fs::remove_dir(&dest).map_err(|e| ImageError::io(&dest, e))?;
            }
            std::fs::rename(&partial, &dest).map_err(|e| ImageError::io(&dest, e))?;
            guard.disarm();
            Ok(())
        })
        .await
        .map_err(|e| ImageError::Config(format!("rootfs assembly task: {e}")))??;
        Ok(PulledImage {
            reference: resolved.reference,
            manifest_digest: resolved.manifest_digest,
            image_manifest_digest: resolved.image_manifest_digest,
            config_digest: resolved.config_digest,
            config: resolved.config,
            layers: reports,
            rootfs: rootfs.to_path_buf(),
        })
    }

    /// Unwraps the layer keys, then downloads and unpacks the missing layers into
    /// `<store>/layers/<diff_id hex>`.
    async fn fetch_into(&self, resolved: &Resolved, store: &Path) -> Result<(Vec<LayerReport>, PathBuf), ImageError> {
        // Unwrap every layer key before downloading anything: a missing key fails fast.
        let mut wraps: Vec<Option<DecryptWrap>> = Vec::new();
        for l in &resolved.manifest.layers {
            wraps.push(self.decryptor(l).await?);
        }
        let layers_dir = store.join("layers");
        let tmp_dir = store.join("tmp");
        for d in [&layers_dir, &tmp_dir] {
            std::fs::create_dir_all(d).map_err(|e| ImageError::io(d, e))?;
        }
        let reports = self.fetch_layers(resolved, wraps, &layers_dir, &tmp_dir).await?;
        Ok((reports, layers_dir))
    }

    /// Pulls `r` into the layer store only (which must be configured), for mounting with
    /// [`crate::overlay::mount_overlay`]: returns the resolved image, the layer reports and the
    /// layer directories, bottom first.
    pub async fn pull_layers(&self, r: &Reference) -> Result<(Resolved, Vec<LayerReport>, Vec<PathBuf>), ImageError> {
        let store = self
            .opts
            .layer_store
            .clone()
            .ok_or_else(|| ImageError::Config("pulling for an overlay needs a layer store".into()))?;
        let resolved = self.resolve(r).await?;
        let (reports, layers_dir) = self.fetch_into(&resolved, &store).await?;
        let dirs = reports.iter().map(|l| layers_dir.join(l.diff_id.hex())).collect();
        Ok((resolved, reports, dirs))
    }

    async fn decryptor(&self, l: &Descriptor) -> Result<Option<DecryptWrap>, ImageError> {
        let enc = EncryptedLayer::parse(&l.media_type, &l.annotations)
            .map_err(|cause| ImageError::Decrypt { layer: l.digest, cause })?;
        let Some(enc) = enc else { return Ok(None) };
        if self.opts.decrypt.is_empty() {
            return Err(ImageError::EncryptedNoKey(l.digest));
        }
        let private = cloister_ocicrypt::unwrap_private_options(&enc, &self.opts.decrypt)
            .await
            .map_err(|cause| ImageError::Decrypt { layer: l.digest, cause })?;
        let public = enc.public_options.clone();
        let layer = l.digest;
        Ok(Some(Box::new(move |r| {
            // The private options' `digest` of a layer recompressed while being encrypted (skopeo
            // `--dest-compress-format … --encryption-key …`) is that of the blob *before*
            // recompression (containers/image records the source digest); Go ocicrypt and
            // containers/image never check it. We check it but only warn when it alone fails:
            // the HMAC over the whole ciphertext has verified under the unwrapped key by then,
            // and the diff_id (chained to the manifest) is verified after decompression.
            let reader = cloister_ocicrypt::LayerDecryptReader::new(r, &public, &private)
                .map_err(|cause| ImageError::Decrypt { layer, cause })?
                .with_digest_check(cloister_ocicrypt::cipher::DigestCheck::WarnOnly);
            Ok(Box::new(reader) as Box<dyn std::io::Read + Send>)
        })))
    }

    /// Downloads and unpacks the layers not yet in the store; returns reports in layer order.
    async fn fetch_layers(
        &self,
        resolved: &Resolved,
        wraps: Vec<Option<DecryptWrap>>,
        layers_dir: &Path,
        tmp_dir: &Path,
    ) -> Result<Vec<LayerReport>, ImageError> {
        let sem = Arc::new(Semaphore::new(self.opts.max_concurrent_layers.max(1)));
        let (cancel_tx, cancel_rx) = watch::channel(false);
        let mut set = JoinSet::new();
        let mut reports = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for (i, (l, wrap)) in resolved.manifest.layers.iter().zip(wraps).enumerate() {
            let diff_id = resolved.config.rootfs.diff_ids[i];
            let final_dir = layers_dir.join(diff_id.hex());
            let encrypted = wrap.is_some();
            let reused = final_dir.is_dir() || !seen.insert(diff_id);
            reports.push(LayerReport { digest: l.digest, diff_id, encrypted, reused, stats: LayerStats::default() });
            if reused {
                tracing::info!(layer = %l.digest, "layer already unpacked; reusing it");
                continue;
            }
            let job_dir = tmp_dir.join(unique_name(&diff_id.hex()));
            let job = LayerJob {
                digest: l.digest,
                size: l.size,
                diff_id,
                compression: compression_of(&l.media_type),
                decrypt: wrap,
                dest: job_dir.clone(),
                opts: self.opts.unpack,
            };
            let reg = self.registry.clone();
            let reference = resolved.reference.clone();
            let sem = sem.clone();
            let mut cancel = cancel_rx.clone();
            set.spawn(async move {
                let _permit = sem.acquire_owned().await.map_err(|_| ImageError::Config("semaphore closed".into()))?;
                if *cancel.borrow() {
                    return Ok((i, LayerStats::default()));
                }
                let (tx, rx) = mpsc::channel(CHANNEL_DEPTH);
                let (digest, size) = (job.digest, job.size);
                let dl = tokio::spawn(async move {
                    tokio::select! {
                        () = download(reg, reference, digest, size, tx) => {}
                        _ = cancel.changed() => {}
                    }
                });
                let started = std::time::Instant::now();
                let result = tokio::task::spawn_blocking(move || {
                    let mut guard = Cleanup(Some(job.dest.clone()));
                    std::fs::create_dir(&job.dest).map_err(|e| ImageError::io(&job.dest, e))?;
                    let stats = run_layer(job, rx)?;
                    match std::fs::rename(&job_dir, &final_dir) {
                        Ok(()) => guard.disarm(),
                        // Someone else (a concurrent pull) finished the same layer first.
                        Err(_) if final_dir.is_dir() => {}
                        Err(e) => return Err(ImageError::io(&final_dir, e)),
                    }
                    Ok::<_, ImageError>(stats)
                })
                .await
                .map_err(|e| ImageError::Config(format!("layer task: {e}")))?;
                dl.abort();
                let stats = result?;
                tracing::info!(layer = %digest, bytes = stats.bytes, entries = stats.entries,
                    ms = started.elapsed().as_millis() as u64, "layer unpacked and verified");
                Ok::<_, ImageError>((i, stats))
            });
        }
        let mut first_err = None;
        while let Some(joined) = set.join_next().await {
            match joined {
                Ok(Ok((i, stats))) => reports[i].stats = stats,
                Ok(Err(e)) => {
                    if first_err.is_none() {
                        let _ = cancel_tx.send(true);
                        first_err = Some(e);
                    }
                }
                Err(e) => {
                    if first_err.is_none() {
                        let _ = cancel_tx.send(true);
                        first_err = Some(ImageError::Config(format!("layer task: {e}")));
                    }
                }
            }
        }
        match first_err {
            Some(e) => Err(e),
            None => Ok(reports),
        }
    }
}
