//! What the caller supplies: trusted keys ([`KeySource`]) and the image's signatures
//! ([`SignatureSource`]). Both are object-safe async traits returning boxed futures, so the image
//! crate can implement them over its registry client and KBS client.

use std::future::Future;
use std::path::Path;
use std::pin::Pin;

use crate::error::SourceError;
use crate::identity::ImageIdentity;

/// A boxed, sendable future (what the source traits return).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Largest key file accepted from any source.
pub const MAX_KEY_SIZE: usize = 1 << 20;

/// Fetches trusted key material named by the policy.
///
/// `keyPath` values starting with `kbs://` (CoCo extension, `kbs:///repo/type/tag` or
/// `kbs://host/repo/type/tag`) go to [`KeySource::fetch_kbs`]; anything else is a local file and
/// goes to [`KeySource::read_file`], whose default implementation reads it from the filesystem.
/// Every failure denies the image.
pub trait KeySource: Send + Sync {
    /// Fetches a KBS resource (the full `kbs://…` URI, already syntax-checked).
    fn fetch_kbs<'a>(&'a self, uri: &'a str) -> BoxFuture<'a, Result<Vec<u8>, SourceError>>;

    /// Reads a key file. The default reads the local filesystem (blocking; key files are small).
    fn read_file<'a>(&'a self, path: &'a Path) -> BoxFuture<'a, Result<Vec<u8>, SourceError>> {
        Box::pin(async move { read_small_file(path) })
    }
}

/// A [`KeySource`] for plain file paths only: `kbs://` key paths fail (deny).
#[derive(Debug, Clone, Copy, Default)]
pub struct FsKeySource;

impl KeySource for FsKeySource {
    fn fetch_kbs<'a>(&'a self, uri: &'a str) -> BoxFuture<'a, Result<Vec<u8>, SourceError>> {
        Box::pin(
            async move { Err(SourceError::new(format!("{uri}: no key broker is configured for kbs:// key paths"))) },
        )
    }
}

fn read_small_file(path: &Path) -> Result<Vec<u8>, SourceError> {
    use std::io::Read as _;
    let f = std::fs::File::open(path).map_err(|e| SourceError::with_source(format!("{}", path.display()), e))?;
    let mut data = Vec::new();
    f.take(MAX_KEY_SIZE as u64 + 1)
        .read_to_end(&mut data)
        .map_err(|e| SourceError::with_source(format!("{}", path.display()), e))?;
    if data.len() > MAX_KEY_SIZE {
        return Err(SourceError::new(format!("{}: larger than {MAX_KEY_SIZE} bytes", path.display())));
    }
    Ok(data)
}

/// Checks the syntax of a `kbs://[host]/repo/type/tag` resource URI.
pub(crate) fn validate_kbs_uri(uri: &str) -> Result<(), String> {
    let bad = |why: &str| Err(format!("key path {uri:?} is not a kbs:///repo/type/tag URI: {why}"));
    let Some(rest) = uri.strip_prefix("kbs://") else { return bad("missing kbs:// prefix") };
    let Some((_host, path)) = rest.split_once('/') else { return bad("no resource path") };
    let parts: Vec<&str> = path.split('/').collect();
    if parts.len() != 3 {
        return bad("expected exactly three path segments");
    }
    if parts.iter().any(|p| p.is_empty() || *p == "." || *p == "..") {
        return bad("empty or relative path segment");
    }
    if uri.contains(['?', '#']) || uri.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return bad("query, fragment or whitespace");
    }
    Ok(())
}

/// Fetches the key named by one `keyPath` entry through `keys`.
pub(crate) async fn fetch_key(keys: &dyn KeySource, location: &str) -> Result<Vec<u8>, SourceError> {
    let data = if location.starts_with("kbs:") {
        validate_kbs_uri(location).map_err(SourceError::new)?;
        keys.fetch_kbs(location).await?
    } else {
        keys.read_file(Path::new(location)).await?
    };
    if data.len() > MAX_KEY_SIZE {
        return Err(SourceError::new(format!("{location}: larger than {MAX_KEY_SIZE} bytes")));
    }
    if data.is_empty() {
        return Err(SourceError::new(format!("{location}: empty")));
    }
    Ok(data)
}

/// One cosign signature: the payload (the layer blob of the `sha256-<hex>.sig` manifest) and the
/// `dev.cosignproject.cosign/signature` annotation (base64 of the DER ECDSA signature).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CosignSignature {
    /// The exact payload bytes that were signed.
    pub payload: Vec<u8>,
    /// Base64 (standard alphabet) of the DER-encoded ECDSA P-256 signature over `payload`.
    pub signature_b64: String,
}

/// Supplies the signatures of an image. Called only when a requirement needs them, at most once
/// per kind per evaluation. An error denies the image; an empty list means "unsigned".
pub trait SignatureSource: Send + Sync {
    /// Simple-signing signatures: raw OpenPGP signed-message blobs (binary or armored), e.g. from a
    /// lookaside store ([`crate::LookasideSignatureSource`]).
    fn simple_signatures<'a>(
        &'a self,
        image: &'a ImageIdentity,
        manifest_digest: &'a str,
    ) -> BoxFuture<'a, Result<Vec<Vec<u8>>, SourceError>>;

    /// Cosign signatures (from the registry tag `sha256-<hex>.sig`).
    fn cosign_signatures<'a>(
        &'a self,
        image: &'a ImageIdentity,
        manifest_digest: &'a str,
    ) -> BoxFuture<'a, Result<Vec<CosignSignature>, SourceError>>;
}

/// A [`SignatureSource`] that has no signatures (for policies that do not require any; a
/// signature requirement then denies with "no signature exists").
#[derive(Debug, Clone, Copy, Default)]
pub struct NoSignatures;

impl SignatureSource for NoSignatures {
    fn simple_signatures<'a>(
        &'a self,
        _image: &'a ImageIdentity,
        _manifest_digest: &'a str,
    ) -> BoxFuture<'a, Result<Vec<Vec<u8>>, SourceError>> {
        Box::pin(async { Ok(Vec::new()) })
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

    #[test]
    fn kbs_uri_syntax() {
        for ok in ["kbs:///default/key/k1", "kbs://kbs.example:8080/repo/type/tag"] {
            assert!(validate_kbs_uri(ok).is_ok(), "{ok}");
        }
        for bad in [
            "kbs:/default/key/k1",
            "kbs://",
            "kbs:///a/b",
            "kbs:///a/b/c/d",
            "kbs:///a//c",
            "kbs:///a/../c",
            "kbs:///a/b/c?x=1",
            "kbs:///a/b/c d",
        ] {
            assert!(validate_kbs_uri(bad).is_err(), "{bad}");
        }
    }

    #[tokio::test]
    async fn fs_key_source() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("k");
        std::fs::write(&p, b"key").unwrap();
        assert_eq!(fetch_key(&FsKeySource, p.to_str().unwrap()).await.unwrap(), b"key");
        let e = fetch_key(&FsKeySource, "kbs:///default/key/k1").await.unwrap_err();
        assert!(e.to_string().contains("no key broker"), "{e}");
        let e = fetch_key(&FsKeySource, dir.path().join("missing").to_str().unwrap()).await.unwrap_err();
        assert!(e.to_string().contains("missing"), "{e}");
        std::fs::write(&p, b"").unwrap();
        assert!(fetch_key(&FsKeySource, p.to_str().unwrap()).await.unwrap_err().to_string().contains("empty"));
        std::fs::write(&p, vec![0u8; MAX_KEY_SIZE + 1]).unwrap();
        assert!(fetch_key(&FsKeySource, p.to_str().unwrap()).await.unwrap_err().to_string().contains("larger"));
        assert!(fetch_key(&FsKeySource, "kbs:///bad").await.is_err());
    }
}
