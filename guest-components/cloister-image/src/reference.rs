//! Image references: `[docker://][registry/]repository[:tag][@sha256:<hex>]`, normalised as
//! the Docker tools do (`busybox` → `docker.io/library/busybox:latest`).

use std::fmt;

use crate::digest::Digest;
use crate::error::ImageError;

/// The registry Docker Hub references name.
pub const DOCKER_HUB: &str = "docker.io";
/// The host serving Docker Hub's API.
const DOCKER_HUB_API: &str = "registry-1.docker.io";

/// A parsed, normalised image reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    /// `host[:port]`, e.g. `127.0.0.1:5055` or `docker.io`.
    pub registry: String,
    /// The repository path, e.g. `library/busybox`.
    pub repository: String,
    /// The tag, if any (`latest` when neither tag nor digest is given).
    pub tag: Option<String>,
    /// The manifest digest, if pinned.
    pub digest: Option<Digest>,
}

fn valid_component(c: &str) -> bool {
    // distribution's grammar: lowercase alphanumerics separated by `.`, `_`, `__` or `-`s.
    !c.is_empty()
        && c.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-'))
        && c.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
        && c.bytes().last().is_some_and(|b| b.is_ascii_alphanumeric())
}

fn valid_tag(t: &str) -> bool {
    (1..=128).contains(&t.len())
        && t.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        && t.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_')
}

impl Reference {
    /// Parses `[docker://]name[:tag][@digest]`.
    pub fn parse(s: &str) -> Result<Self, ImageError> {
        let bad = |why: &str| ImageError::BadReference { reference: s.to_owned(), why: why.to_owned() };
        let rest = s.strip_prefix("docker://").unwrap_or(s);
        if rest.contains("://") {
            return Err(bad("only the docker:// transport is supported"));
        }
        let (name_tag, digest) = match rest.split_once('@') {
            Some((n, d)) => (n, Some(Digest::parse(d).map_err(|_| bad("the digest is not sha256:<64 hex>"))?)),
            None => (rest, None),
        };
        // The tag follows the last ':' after the last '/' (a ':' before it is a port).
        let last_slash = name_tag.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match name_tag[last_slash..].find(':') {
            Some(i) => (&name_tag[..last_slash + i], Some(&name_tag[last_slash + i + 1..])),
            None => (name_tag, None),
        };
        if let Some(t) = tag
            && !valid_tag(t)
        {
            return Err(bad("invalid tag"));
        }
        let (registry, repository) = match name.split_once('/') {
            Some((first, path)) if first.contains(['.', ':']) || first == "localhost" => {
                (first.to_owned(), path.to_owned())
            }
            _ => (DOCKER_HUB.to_owned(), name.to_owned()),
        };
        if registry.is_empty() || registry.bytes().any(|b| b.is_ascii_whitespace() || b == b'@') {
            return Err(bad("invalid registry host"));
        }
        let repository = if registry == DOCKER_HUB && !repository.contains('/') {
            format!("library/{repository}")
        } else {
            repository
        };
        if repository.len() > 255 || !repository.split('/').all(valid_component) {
            return Err(bad("invalid repository name (lowercase letters, digits and . _ - separated by /)"));
        }
        let tag = match (tag, &digest) {
            (Some(t), _) => Some(t.to_owned()),
            (None, None) => Some("latest".to_owned()),
            (None, Some(_)) => None,
        };
        Ok(Self { registry, repository, tag, digest })
    }

    /// What the registry API is asked for: the digest if pinned, else the tag.
    pub fn manifest_reference(&self) -> String {
        match (&self.digest, &self.tag) {
            (Some(d), _) => d.to_string(),
            (None, Some(t)) => t.clone(),
            (None, None) => "latest".to_owned(),
        }
    }

    /// The host the registry API is served from.
    pub fn api_host(&self) -> &str {
        if self.registry == DOCKER_HUB { DOCKER_HUB_API } else { &self.registry }
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn normalises_like_docker() {
        let r = Reference::parse("busybox").unwrap();
        assert_eq!(r.to_string(), "docker.io/library/busybox:latest");
        assert_eq!(r.api_host(), "registry-1.docker.io");
        let r = Reference::parse("docker://127.0.0.1:5055/demo/enc:v1").unwrap();
        assert_eq!(
            (r.registry.as_str(), r.repository.as_str(), r.tag.as_deref()),
            ("127.0.0.1:5055", "demo/enc", Some("v1"))
        );
        let r = Reference::parse("localhost/a/b").unwrap();
        assert_eq!(r.registry, "localhost");
        let d = "sha256:".to_owned() + &"ab".repeat(32);
        let r = Reference::parse(&format!("quay.io/x/y@{d}")).unwrap();
        assert_eq!(r.tag, None);
        assert_eq!(r.manifest_reference(), d);
        let r = Reference::parse(&format!("quay.io/x/y:t@{d}")).unwrap();
        assert_eq!(r.manifest_reference(), d);
        assert_eq!(r.tag.as_deref(), Some("t"));
    }

    #[test]
    fn rejects_bad_names() {
        for s in ["", "UPPER/case", "a//b", "quay.io/x/y:", "x@sha256:12", "oci://dir", "a/b:bad/tag", "quay.io/../x"] {
            assert!(Reference::parse(s).is_err(), "{s}");
        }
    }
}
