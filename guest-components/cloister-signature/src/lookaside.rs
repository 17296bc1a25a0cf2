//! Simple-signing lookaside stores configured by containers-registries.d YAML.
//!
//! Each file may hold `default-docker: {lookaside: URL}` and `docker: {<scope>: {lookaside: URL}}`
//! (`sigstore` is the older name of `lookaside`; the `-staging` variants are for writing and
//! ignored here). The most specific scope that sets a URL wins (same scope order as the policy),
//! then `default-docker`. A scope may be defined in only one file. Signatures live at
//! `<URL>/<repository path>@<algorithm>=<hex>/signature-<n>`, n = 1, 2, … until one is missing.
//! `file://` stores are read here; `http(s)://` stores go through a caller-supplied
//! [`LookasideFetcher`].

use std::collections::BTreeMap;
use std::io::Read as _;
use std::path::Path;
use std::sync::Arc;

use serde::Deserialize;

use crate::error::SourceError;
use crate::identity::{ImageIdentity, is_sha256_digest};
use crate::simple::MAX_SIGNATURE_SIZE;
use crate::source::{BoxFuture, CosignSignature, SignatureSource};

/// Most signatures read for one image (containers/image's limit); more is an error.
pub const MAX_LOOKASIDE_SIGNATURES: usize = 128;

/// Largest registries.d file accepted.
const MAX_CONFIG_SIZE: usize = 1 << 20;

/// A registries.d configuration problem.
#[derive(Debug, thiserror::Error)]
pub enum LookasideError {
    /// A file could not be read.
    #[error("registries.d: {path}: {source}")]
    Io {
        /// The file or directory.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A file is not valid registries.d YAML.
    #[error("registries.d: {name}: {reason}")]
    Parse {
        /// The file (or label) the YAML came from.
        name: String,
        /// Why.
        reason: String,
    },
    /// A scope is defined in two files, or a URL is not usable.
    #[error("registries.d: {0}")]
    Invalid(String),
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawNamespace {
    lookaside: Option<String>,
    lookaside_staging: Option<String>,
    sigstore: Option<String>,
    sigstore_staging: Option<String>,
    use_sigstore_attachments: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawFile {
    default_docker: Option<RawNamespace>,
    docker: Option<BTreeMap<String, RawNamespace>>,
}

/// One scope's settings.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Namespace {
    lookaside: Option<String>,
    use_sigstore_attachments: Option<bool>,
}

impl Namespace {
    fn from_raw(raw: RawNamespace, what: &str) -> Result<Self, LookasideError> {
        let _ = (raw.lookaside_staging, raw.sigstore_staging);
        let lookaside = match (raw.lookaside, raw.sigstore) {
            (Some(_), Some(_)) => {
                return Err(LookasideError::Invalid(format!("{what}: both \"lookaside\" and \"sigstore\" are set")));
            }
            (a, b) => a.or(b),
        };
        if let Some(u) = &lookaside {
            validate_url(u).map_err(|e| LookasideError::Invalid(format!("{what}: {e}")))?;
        }
        Ok(Self { lookaside, use_sigstore_attachments: raw.use_sigstore_attachments })
    }
}

fn validate_url(u: &str) -> Result<(), String> {
    if u.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!("lookaside URL {u:?} contains whitespace"));
    }
    if let Some(path) = u.strip_prefix("file://") {
        if !path.starts_with('/') {
            return Err(format!("lookaside URL {u:?}: a file:// URL needs an absolute path (file:///…)"));
        }
        return Ok(());
    }
    for scheme in ["http://", "https://"] {
        if let Some(rest) = u.strip_prefix(scheme) {
            if rest.is_empty() || rest.starts_with('/') {
                return Err(format!("lookaside URL {u:?} has no host"));
            }
            return Ok(());
        }
    }
    Err(format!("lookaside URL {u:?}: only file://, http:// and https:// are supported"))
}

/// Merged registries.d configuration.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RegistriesD {
    default_docker: Option<Namespace>,
    docker: BTreeMap<String, Namespace>,
}

impl RegistriesD {
    /// Parses and merges YAML documents (`(name, text)`, the name is for messages). A scope
    /// (including `default-docker`) defined in two documents is an error, as in containers/image.
    pub fn from_yaml_documents<'a>(docs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Result<Self, LookasideError> {
        let mut out = Self::default();
        for (name, text) in docs {
            if text.len() > MAX_CONFIG_SIZE {
                return Err(LookasideError::Parse { name: name.into(), reason: "file too large".into() });
            }
            let raw: Option<RawFile> = yaml_serde::from_str(text)
                .map_err(|e| LookasideError::Parse { name: name.into(), reason: e.to_string() })?;
            let Some(raw) = raw else { continue };
            if let Some(d) = raw.default_docker {
                if out.default_docker.is_some() {
                    return Err(LookasideError::Invalid(format!(
                        "{name}: default-docker is defined in more than one file"
                    )));
                }
                out.default_docker = Some(Namespace::from_raw(d, &format!("{name}: default-docker"))?);
            }
            for (scope, ns) in raw.docker.unwrap_or_default() {
                if out.docker.contains_key(&scope) {
                    return Err(LookasideError::Invalid(format!(
                        "{name}: docker scope {scope:?} is defined in more than one file"
                    )));
                }
                let ns = Namespace::from_raw(ns, &format!("{name}: docker[{scope:?}]"))?;
                out.docker.insert(scope, ns);
            }
        }
        Ok(out)
    }

    /// Reads every `*.yaml` file of a registries.d directory (in name order). A missing
    /// directory is an empty configuration (no lookaside stores); an unreadable one is an error.
    pub fn from_dir(dir: &Path) -> Result<Self, LookasideError> {
        let io = |path: &Path, source| LookasideError::Io { path: path.display().to_string(), source };
        let entries = match std::fs::read_dir(dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Self::default()),
            Err(e) => return Err(io(dir, e)),
        };
        let mut files = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| io(dir, e))?;
            let path = entry.path();
            if path.extension().is_some_and(|x| x == "yaml") && path.is_file() {
                files.push(path);
            }
        }
        files.sort();
        let mut texts = Vec::new();
        for f in &files {
            let mut data = String::new();
            std::fs::File::open(f)
                .and_then(|h| h.take(MAX_CONFIG_SIZE as u64 + 1).read_to_string(&mut data))
                .map_err(|e| io(f, e))?;
            texts.push((f.display().to_string(), data));
        }
        Self::from_yaml_documents(texts.iter().map(|(n, t)| (n.as_str(), t.as_str())))
    }

    fn lookup<T>(
        &self,
        image: &ImageIdentity,
        get: impl Fn(&Namespace) -> Option<T>,
    ) -> Result<Option<T>, SourceError> {
        let scopes = image.policy_scopes().map_err(|e| SourceError::new(e.to_string()))?;
        for s in scopes {
            if let Some(v) = self.docker.get(&s).and_then(&get) {
                return Ok(Some(v));
            }
        }
        Ok(self.default_docker.as_ref().and_then(get))
    }

    /// The lookaside base URL for an image, if any scope configures one.
    pub fn lookaside_base(&self, image: &ImageIdentity) -> Result<Option<String>, SourceError> {
        self.lookup(image, |n| n.lookaside.clone())
    }

    /// `use-sigstore-attachments` for an image (most specific scope that sets it; default false).
    /// The image crate uses this to decide whether to look for cosign `sha256-<hex>.sig` tags.
    pub fn use_sigstore_attachments(&self, image: &ImageIdentity) -> Result<bool, SourceError> {
        Ok(self.lookup(image, |n| n.use_sigstore_attachments)?.unwrap_or(false))
    }

    /// The URL of signature number `n` (1-based) of an image in its lookaside store, or `None`
    /// if no store is configured.
    pub fn signature_url(
        &self,
        image: &ImageIdentity,
        manifest_digest: &str,
        n: usize,
    ) -> Result<Option<String>, SourceError> {
        let Some(base) = self.lookaside_base(image)? else { return Ok(None) };
        signature_url(&base, image, manifest_digest, n).map(Some)
    }
}

/// `<base>/<repository path>@<alg>=<hex>/signature-<n>` (n 1-based).
pub fn signature_url(
    base: &str,
    image: &ImageIdentity,
    manifest_digest: &str,
    n: usize,
) -> Result<String, SourceError> {
    if !is_sha256_digest(manifest_digest) {
        return Err(SourceError::new(format!("manifest digest {manifest_digest:?} is not sha256:<hex>")));
    }
    if n == 0 {
        return Err(SourceError::new("signature numbers start at 1"));
    }
    let r = image.reference().map_err(|e| SourceError::new(e.to_string()))?;
    let (alg, hex) = manifest_digest.split_once(':').unwrap_or(("sha256", ""));
    Ok(format!("{}/{}@{alg}={hex}/signature-{n}", base.trim_end_matches('/'), r.path()))
}

/// Fetches lookaside signatures over HTTP(S) for [`LookasideSignatureSource`] (the image crate
/// implements this with its HTTP client and proxy/TLS settings).
pub trait LookasideFetcher: Send + Sync {
    /// GETs `url`. `Ok(None)` means "not found" (HTTP 404): the end of the signature list. Any
    /// other failure must be an error (it denies the image). Bodies over
    /// [`crate::simple::MAX_SIGNATURE_SIZE`] bytes should be refused.
    fn fetch<'a>(&'a self, url: &'a str) -> BoxFuture<'a, Result<Option<Vec<u8>>, SourceError>>;
}

/// A [`SignatureSource`] for simple signing from lookaside stores. It has no cosign signatures
/// (the image crate fetches those from the registry and can wrap this source).
#[derive(Clone)]
pub struct LookasideSignatureSource {
    config: RegistriesD,
    http: Option<Arc<dyn LookasideFetcher>>,
}

impl std::fmt::Debug for LookasideSignatureSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LookasideSignatureSource")
            .field("config", &self.config)
            .field("http", &self.http.is_some())
            .finish()
    }
}

impl LookasideSignatureSource {
    /// A source over `config`; `http(s)://` stores fail until a fetcher is set.
    pub fn new(config: RegistriesD) -> Self {
        Self { config, http: None }
    }

    /// Sets the HTTP(S) fetcher.
    pub fn with_fetcher(mut self, fetcher: Arc<dyn LookasideFetcher>) -> Self {
        self.http = Some(fetcher);
        self
    }

    /// The configuration.
    pub fn config(&self) -> &RegistriesD {
        &self.config
    }

    /// Reads all simple signatures of an image (see [`SignatureSource::simple_signatures`]).
    pub async fn read(&self, image: &ImageIdentity, manifest_digest: &str) -> Result<Vec<Vec<u8>>, SourceError> {
        let Some(base) = self.config.lookaside_base(image)? else {
            tracing::debug!(image = %image, "no lookaside store configured");
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        for n in 1..=MAX_LOOKASIDE_SIGNATURES + 1 {
            let url = signature_url(&base, image, manifest_digest, n)?;
            let got = if let Some(path) = url.strip_prefix("file://") {
                read_signature_file(Path::new(path))?
            } else {
                let Some(http) = &self.http else {
                    return Err(SourceError::new(format!(
                        "{url}: HTTP lookaside store configured but no fetcher is set"
                    )));
                };
                http.fetch(&url).await?
            };
            let Some(sig) = got else { break };
            if n > MAX_LOOKASIDE_SIGNATURES {
                return Err(SourceError::new(format!("more than {MAX_LOOKASIDE_SIGNATURES} lookaside signatures")));
            }
            if sig.len() > MAX_SIGNATURE_SIZE {
                return Err(SourceError::new(format!("{url}: signature larger than {MAX_SIGNATURE_SIZE} bytes")));
            }
            tracing::debug!(%url, "read lookaside signature");
            out.push(sig);
        }
        Ok(out)
    }
}

fn read_signature_file(path: &Path) -> Result<Option<Vec<u8>>, SourceError> {
    let f = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(SourceError::with_source(path.display().to_string(), e)),
    };
    let mut data = Vec::new();
    f.take(MAX_SIGNATURE_SIZE as u64 + 1)
        .read_to_end(&mut data)
        .map_err(|e| SourceError::with_source(path.display().to_string(), e))?;
    Ok(Some(data))
}

impl SignatureSource for LookasideSignatureSource {
    fn simple_signatures<'a>(
        &'a self,
        image: &'a ImageIdentity,
        manifest_digest: &'a str,
    ) -> BoxFuture<'a, Result<Vec<Vec<u8>>, SourceError>> {
        Box::pin(self.read(image, manifest_digest))
    }

    fn cosign_signatures<'a>(
        &'a self,
        _image: &'a ImageIdentity,
        _manifest_digest: &'a str,
    ) -> BoxFuture<'a, Result<Vec<CosignSignature>, SourceError>> {
        Box::pin(async { Ok(Vec::new()) })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    const D: &str = "sha256:ef3a0b8e1cb2e64f17653d566237f2fc20cf04cece5062b7dd10a78f9def7ee0";

    fn img(s: &str) -> ImageIdentity {
        ImageIdentity::parse(s).unwrap()
    }

    #[test]
    fn scope_resolution_and_urls() {
        let c = RegistriesD::from_yaml_documents([
            ("a.yaml", "default-docker:\n  sigstore-staging: file:///staging\n  sigstore: file:///var/lib/sigstore/\n"),
            (
                "b.yaml",
                "docker:\n  reg.example.com:\n    lookaside: https://sigs.example.com/store\n  reg.example.com/team/app:\n    use-sigstore-attachments: true\n  quay.io/x:\n    lookaside: http://q.example/s\n    use-sigstore-attachments: false\n",
            ),
            ("empty.yaml", "# nothing here\n"),
        ])
        .unwrap();
        assert_eq!(
            c.signature_url(&img("busybox:1"), D, 1).unwrap().unwrap(),
            format!("file:///var/lib/sigstore/library/busybox@sha256={}/signature-1", &D[7..])
        );
        // A matching scope without a URL falls through to the next one.
        assert_eq!(
            c.signature_url(&img("reg.example.com/team/app:1"), D, 3).unwrap().unwrap(),
            format!("https://sigs.example.com/store/team/app@sha256={}/signature-3", &D[7..])
        );
        assert!(c.use_sigstore_attachments(&img("reg.example.com/team/app:1")).unwrap());
        assert!(!c.use_sigstore_attachments(&img("reg.example.com/other")).unwrap());
        assert!(!c.use_sigstore_attachments(&img("quay.io/x/y")).unwrap());
        assert_eq!(c.lookaside_base(&img("quay.io/x")).unwrap().unwrap(), "http://q.example/s");
        assert!(c.signature_url(&img("busybox"), "sha256:bad", 1).is_err());
        assert!(c.signature_url(&img("busybox"), D, 0).is_err());
        assert_eq!(RegistriesD::default().signature_url(&img("busybox"), D, 1).unwrap(), None);
    }

    #[test]
    fn config_errors() {
        let cases: &[&[(&str, &str)]] = &[
            &[("a", "default-docker:\n  lookaside: file:///a\n"), ("b", "default-docker:\n  lookaside: file:///b\n")],
            &[
                ("a", "docker:\n  x.io:\n    lookaside: file:///a\n"),
                ("b", "docker:\n  x.io:\n    sigstore: file:///b\n"),
            ],
            &[("a", "default-docker:\n  lookaside: file:///a\n  sigstore: file:///b\n")],
            &[("a", "default-docker:\n  lookaside: file://relative/path\n")],
            &[("a", "default-docker:\n  lookaside: ftp://x/y\n")],
            &[("a", "default-docker:\n  lookaside: https:///nohost\n")],
            &[("a", "default-docker:\n  lookaside: file:///a b\n")],
            &[("a", "default-docker:\n  lookasid: file:///a\n")],
            &[("a", "other-key: 1\n")],
            &[("a", "docker: [1, 2]\n")],
            &[("a", "default-docker:\n  use-sigstore-attachments: maybe\n")],
            &[("a", ": : :\n\t- bad yaml")],
        ];
        for docs in cases {
            assert!(RegistriesD::from_yaml_documents(docs.iter().copied()).is_err(), "{docs:?}");
        }
    }

    #[test]
    fn from_dir_reads_yaml_files_only() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("default.yaml"), "default-docker:\n  lookaside: file:///x\n").unwrap();
        std::fs::write(dir.path().join("ignored.yml"), "this is: [not parsed").unwrap();
        let c = RegistriesD::from_dir(dir.path()).unwrap();
        assert_eq!(c.lookaside_base(&img("a.io/b")).unwrap().unwrap(), "file:///x");
        assert_eq!(RegistriesD::from_dir(&dir.path().join("missing")).unwrap(), RegistriesD::default());
        std::fs::write(dir.path().join("broken.yaml"), "default-docker: [").unwrap();
        assert!(RegistriesD::from_dir(dir.path()).is_err());
    }

    #[tokio::test]
    async fn file_store_reads_until_missing() {
        let dir = tempfile::tempdir().unwrap();
        let store = dir.path().join("sigstore");
        let sigdir = store.join(format!("demo/signed@sha256={}", &D[7..]));
        std::fs::create_dir_all(&sigdir).unwrap();
        std::fs::write(sigdir.join("signature-1"), b"one").unwrap();
        std::fs::write(sigdir.join("signature-2"), b"two").unwrap();
        std::fs::write(sigdir.join("signature-4"), b"after a gap: not read").unwrap();
        let yaml = format!("default-docker:\n  sigstore: file://{}\n", store.display());
        let src = LookasideSignatureSource::new(RegistriesD::from_yaml_documents([("t", yaml.as_str())]).unwrap());
        let image = img("127.0.0.1:5055/demo/signed:v1");
        let sigs = src.simple_signatures(&image, D).await.unwrap();
        assert_eq!(sigs, [b"one".to_vec(), b"two".to_vec()]);
        assert!(src.cosign_signatures(&image, D).await.unwrap().is_empty());
        // Another image: nothing there.
        assert!(src.simple_signatures(&img("127.0.0.1:5055/demo/other:v1"), D).await.unwrap().is_empty());
        // No store configured at all: no signatures.
        let none = LookasideSignatureSource::new(RegistriesD::default());
        assert!(none.simple_signatures(&image, D).await.unwrap().is_empty());
        // An unreadable entry (a directory where a file should be) fails closed.
        std::fs::create_dir(sigdir.join("signature-3")).unwrap();
        assert!(src.simple_signatures(&image, D).await.is_err());
        std::fs::remove_dir(sigdir.join("signature-3")).unwrap();
        // Oversized signature.
        std::fs::write(sigdir.join("signature-3"), vec![0u8; MAX_SIGNATURE_SIZE + 1]).unwrap();
        assert!(src.simple_signatures(&image, D).await.unwrap_err().to_string().contains("larger"));
        // Too many signatures.
        for n in 3..=MAX_LOOKASIDE_SIGNATURES + 1 {
            std::fs::write(sigdir.join(format!("signature-{n}")), b"x").unwrap();
        }
        assert!(src.simple_signatures(&image, D).await.unwrap_err().to_string().contains("more than"));
        std::fs::remove_file(sigdir.join(format!("signature-{}", MAX_LOOKASIDE_SIGNATURES + 1))).unwrap();
        assert_eq!(src.simple_signatures(&image, D).await.unwrap().len(), MAX_LOOKASIDE_SIGNATURES);
    }

    struct FakeHttp {
        have: usize,
        fail_at: Option<usize>,
        seen: Mutex<Vec<String>>,
    }

    impl LookasideFetcher for FakeHttp {
        fn fetch<'a>(&'a self, url: &'a str) -> BoxFuture<'a, Result<Option<Vec<u8>>, SourceError>> {
            Box::pin(async move {
                self.seen.lock().unwrap().push(url.to_string());
                let n: usize = url.rsplit('-').next().unwrap().parse().unwrap();
                if Some(n) == self.fail_at {
                    return Err(SourceError::new("HTTP 500"));
                }
                Ok((n <= self.have).then(|| format!("sig{n}").into_bytes()))
            })
        }
    }

    #[tokio::test]
    async fn http_store_uses_the_fetcher() {
        let yaml = "docker:\n  reg.example.com:\n    lookaside: https://sigs.example.com/s/\n";
        let cfg = RegistriesD::from_yaml_documents([("t", yaml)]).unwrap();
        let image = img("reg.example.com/a/b:1");
        let e = LookasideSignatureSource::new(cfg.clone()).simple_signatures(&image, D).await.unwrap_err();
        assert!(e.to_string().contains("no fetcher"), "{e}");
        let http = Arc::new(FakeHttp { have: 2, fail_at: None, seen: Mutex::new(Vec::new()) });
        let src = LookasideSignatureSource::new(cfg.clone()).with_fetcher(http.clone());
        assert_eq!(src.simple_signatures(&image, D).await.unwrap(), [b"sig1".to_vec(), b"sig2".to_vec()]);
        assert_eq!(
            http.seen.lock().unwrap()[0],
            format!("https://sigs.example.com/s/a/b@sha256={}/signature-1", &D[7..])
        );
        assert_eq!(http.seen.lock().unwrap().len(), 3);
        let failing = Arc::new(FakeHttp { have: 5, fail_at: Some(2), seen: Mutex::new(Vec::new()) });
        let src = LookasideSignatureSource::new(cfg).with_fetcher(failing);
        assert!(src.simple_signatures(&image, D).await.unwrap_err().to_string().contains("HTTP 500"));
    }
}
