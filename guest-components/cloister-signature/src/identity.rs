//! Docker references and image identities: parsing and normalisation (the distribution reference
//! grammar, as containers/image applies it), the policy scopes an image falls under, and the
//! `signedIdentity` rules that compare the identity a signature claims with the image being pulled.

use std::fmt;

/// A docker reference string that is not valid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid docker reference {reference:?}: {reason}")]
pub struct ReferenceError {
    /// The text that was parsed.
    pub reference: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

fn ref_err(reference: &str, reason: &'static str) -> ReferenceError {
    ReferenceError { reference: reference.to_owned(), reason }
}

const DEFAULT_DOMAIN: &str = "docker.io";
const LEGACY_DEFAULT_DOMAIN: &str = "index.docker.io";
const OFFICIAL_REPO_PREFIX: &str = "library/";
const MAX_NAME_LEN: usize = 255;

/// A parsed, normalised docker reference: `domain/path[:tag][@digest]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DockerReference {
    domain: String,
    path: String,
    tag: Option<String>,
    digest: Option<String>,
}

impl DockerReference {
    /// Parses a reference the way `reference.ParseNormalizedNamed` does: a missing registry means
    /// `docker.io`, `index.docker.io` becomes `docker.io`, and single-component docker.io names get
    /// `library/`. The repository must be lowercase.
    pub fn parse_normalized(s: &str) -> Result<Self, ReferenceError> {
        if s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return Err(ref_err(s, "cannot specify 64-byte hexadecimal strings"));
        }
        let (domain, remainder) = match s.find('/') {
            Some(i) => {
                let first = &s[..i];
                if first.contains(['.', ':']) || first == "localhost" || first.bytes().any(|b| b.is_ascii_uppercase()) {
                    (first, &s[i + 1..])
                } else {
                    (DEFAULT_DOMAIN, s)
                }
            }
            None => (DEFAULT_DOMAIN, s),
        };
        let name_part = remainder.split(['@', ':']).next().unwrap_or("");
        if name_part.bytes().any(|b| b.is_ascii_uppercase()) {
            return Err(ref_err(s, "repository name must be lowercase"));
        }
        Self::parse_parts(s, domain, remainder)
    }

    /// Parses a reference that must already be in normalised form (`reference.ParseNamed`): the
    /// result printed back must equal the input.
    pub fn parse_exact(s: &str) -> Result<Self, ReferenceError> {
        let r = Self::parse_normalized(s)?;
        if r.to_string() != s {
            return Err(ref_err(s, "reference is not in normalized form (registry, full repository path)"));
        }
        Ok(r)
    }

    /// `domain` / `remainder` where remainder is `path[:tag][@digest]`; `whole` is for messages.
    fn parse_parts(whole: &str, domain: &str, remainder: &str) -> Result<Self, ReferenceError> {
        let domain = if domain == LEGACY_DEFAULT_DOMAIN { DEFAULT_DOMAIN } else { domain };
        let (rest, digest) = match remainder.split_once('@') {
            Some((r, d)) => {
                validate_digest(whole, d)?;
                (r, Some(d.to_owned()))
            }
            None => (remainder, None),
        };
        let (path, tag) = match rest.rfind(':') {
            Some(i) if !rest[i..].contains('/') => {
                let t = &rest[i + 1..];
                validate_tag(whole, t)?;
                (&rest[..i], Some(t.to_owned()))
            }
            _ => (rest, None),
        };
        validate_domain(whole, domain)?;
        validate_path(whole, path)?;
        let path = if domain == DEFAULT_DOMAIN && !path.contains('/') {
            format!("{OFFICIAL_REPO_PREFIX}{path}")
        } else {
            path.to_owned()
        };
        if domain.len() + 1 + path.len() > MAX_NAME_LEN {
            return Err(ref_err(whole, "repository name must not be more than 255 characters"));
        }
        Ok(Self { domain: domain.to_owned(), path, tag, digest })
    }

    /// The registry host (with port, if any).
    pub fn domain(&self) -> &str {
        &self.domain
    }

    /// The repository path inside the registry (e.g. `library/busybox`).
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The tag, if any.
    pub fn tag(&self) -> Option<&str> {
        self.tag.as_deref()
    }

    /// The digest, if any.
    pub fn digest(&self) -> Option<&str> {
        self.digest.as_deref()
    }

    /// `domain/path`, without tag or digest.
    pub fn name(&self) -> String {
        format!("{}/{}", self.domain, self.path)
    }

    /// True if there is neither a tag nor a digest.
    pub fn is_name_only(&self) -> bool {
        self.tag.is_none() && self.digest.is_none()
    }

    fn without_tag(&self) -> Self {
        Self { tag: None, ..self.clone() }
    }

    fn without_digest(&self) -> Self {
        Self { digest: None, ..self.clone() }
    }
}

impl fmt::Display for DockerReference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.domain, self.path)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

fn is_alnum_lower(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit()
}

/// `[a-z0-9]+(?:(?:[._]|__|[-]+)[a-z0-9]+)*`
fn valid_path_component(c: &str) -> bool {
    let b = c.as_bytes();
    if b.is_empty() || !is_alnum_lower(b[0]) || !is_alnum_lower(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if is_alnum_lower(b[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && !is_alnum_lower(b[i]) {
            i += 1;
        }
        let sep = &c[start..i];
        let ok = sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|x| x == b'-');
        if !ok {
            return false;
        }
    }
    true
}

/// `[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9]`
fn valid_domain_component(c: &str) -> bool {
    let b = c.as_bytes();
    !b.is_empty()
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter().all(|&x| x.is_ascii_alphanumeric() || x == b'-')
}

/// `host[:port]` where host is dot-separated components or a bracketed IPv6 address.
pub(crate) fn is_valid_domain(d: &str) -> bool {
    let (host, port) = if let Some(rest) = d.strip_prefix('[') {
        let Some(end) = rest.find(']') else { return false };
        let addr = &rest[..end];
        if addr.is_empty() || !addr.bytes().all(|b| b.is_ascii_hexdigit() || b == b':') {
            return false;
        }
        let after = &rest[end + 1..];
        match after.strip_prefix(':') {
            Some(p) => (None, Some(p)),
            None if after.is_empty() => (None, None),
            None => return false,
        }
    } else {
        match d.split_once(':') {
            Some((h, p)) => (Some(h), Some(p)),
            None => (Some(d), None),
        }
    };
    if let Some(h) = host
        && !h.split('.').all(valid_domain_component)
    {
        return false;
    }
    if let Some(p) = port
        && (p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()))
    {
        return false;
    }
    true
}

fn validate_domain(whole: &str, d: &str) -> Result<(), ReferenceError> {
    if is_valid_domain(d) { Ok(()) } else { Err(ref_err(whole, "invalid registry host")) }
}

pub(crate) fn is_valid_path(p: &str) -> bool {
    !p.is_empty() && p.split('/').all(valid_path_component)
}

fn validate_path(whole: &str, p: &str) -> Result<(), ReferenceError> {
    if is_valid_path(p) { Ok(()) } else { Err(ref_err(whole, "invalid repository path")) }
}

/// `[\w][\w.-]{0,127}`
fn validate_tag(whole: &str, t: &str) -> Result<(), ReferenceError> {
    let b = t.as_bytes();
    let word = |x: u8| x.is_ascii_alphanumeric() || x == b'_';
    if b.is_empty() || b.len() > 128 || !word(b[0]) || !b.iter().all(|&x| word(x) || x == b'.' || x == b'-') {
        return Err(ref_err(whole, "invalid tag"));
    }
    Ok(())
}

/// `algorithm:hex` with a known algorithm and the right length of lowercase hex.
fn validate_digest(whole: &str, d: &str) -> Result<(), ReferenceError> {
    let Some((alg, hex)) = d.split_once(':') else { return Err(ref_err(whole, "invalid digest")) };
    let len = match alg {
        "sha256" => 64,
        "sha384" => 96,
        "sha512" => 128,
        _ => return Err(ref_err(whole, "unsupported digest algorithm")),
    };
    if hex.len() != len || !hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return Err(ref_err(whole, "invalid digest"));
    }
    Ok(())
}

/// True if `d` is `sha256:` followed by 64 lowercase hex digits.
pub(crate) fn is_sha256_digest(d: &str) -> bool {
    d.strip_prefix("sha256:")
        .is_some_and(|h| h.len() == 64 && h.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')))
}

/// The image being pulled, as the caller resolved it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageIdentity {
    /// Registry `host[:port]`, e.g. `127.0.0.1:5055` or `docker.io`.
    pub registry: String,
    /// Repository path in the registry, e.g. `library/busybox`.
    pub repository: String,
    /// Tag, if the image was referenced by tag.
    pub tag: Option<String>,
    /// Digest (`sha256:<hex>`), if the image was referenced by digest.
    pub digest: Option<String>,
}

impl ImageIdentity {
    /// Splits a full reference (`host[:port]/repo[:tag][@digest]`, normalised as docker does, so
    /// `busybox` is `docker.io/library/busybox`) into an identity.
    pub fn parse(reference: &str) -> Result<Self, ReferenceError> {
        let r = DockerReference::parse_normalized(reference)?;
        Ok(Self { registry: r.domain, repository: r.path, tag: r.tag, digest: r.digest })
    }

    /// The docker reference the policy and signatures are checked against:
    /// `registry/repository@digest` when a digest is known (a digest pins the content, so it wins
    /// over a tag), else `registry/repository:tag` (`:latest` when neither is given, as docker
    /// does). Not normalised: see [`ImageIdentity::reference`].
    pub fn docker_reference(&self) -> String {
        match (&self.digest, &self.tag) {
            (Some(d), _) => format!("{}/{}@{d}", self.registry, self.repository),
            (None, Some(t)) => format!("{}/{}:{t}", self.registry, self.repository),
            (None, None) => format!("{}/{}:latest", self.registry, self.repository),
        }
    }

    /// The normalised, validated reference used for evaluation (see [`Self::docker_reference`]).
    pub fn reference(&self) -> Result<DockerReference, ReferenceError> {
        self.full_reference().map(|r| if r.digest.is_some() { r.without_tag() } else { r })
    }

    /// Like [`Self::reference`] but keeping both tag and digest when both are given.
    fn full_reference(&self) -> Result<DockerReference, ReferenceError> {
        let whole = format!(
            "{}/{}{}{}",
            self.registry,
            self.repository,
            self.tag.as_ref().map(|t| format!(":{t}")).unwrap_or_default(),
            self.digest.as_ref().map(|d| format!("@{d}")).unwrap_or_default()
        );
        if self.repository.contains([':', '@']) {
            return Err(ref_err(&whole, "the repository must not contain a tag or digest"));
        }
        let mut r = DockerReference::parse_parts(&whole, &self.registry, &self.repository)?;
        if let Some(t) = &self.tag {
            validate_tag(&whole, t)?;
            r.tag = Some(t.clone());
        }
        if let Some(d) = &self.digest {
            validate_digest(&whole, d)?;
            r.digest = Some(d.clone());
        }
        if r.is_name_only() {
            r.tag = Some("latest".to_owned());
        }
        Ok(r)
    }

    /// The policy scopes this image falls under, most specific first (containers/image order):
    /// the full reference (`host/repo@digest` and, when a tag was also given, `host/repo:tag`),
    /// the repository, each parent namespace up to the host, then `*.` wildcards of the host name
    /// (port dropped). The transport default `""` and the global default are not included.
    pub fn policy_scopes(&self) -> Result<Vec<String>, ReferenceError> {
        let full = self.full_reference()?;
        let mut out = Vec::new();
        if full.digest.is_some() {
            out.push(full.without_tag().to_string());
            if full.tag.is_some() {
                out.push(full.without_digest().to_string());
            }
        } else {
            out.push(full.to_string());
        }
        let mut name = full.name();
        loop {
            out.push(name.clone());
            match name.rfind('/') {
                Some(i) => name.truncate(i),
                None => break,
            }
        }
        // `name` is now the host[:port]; wildcards are formed from the host name only.
        let mut host =
            if name.starts_with('[') { String::new() } else { name.split(':').next().unwrap_or("").to_owned() };
        while let Some(i) = host.find('.') {
            host = host[i + 1..].to_owned();
            out.push(format!("*.{host}"));
        }
        Ok(out)
    }
}

impl fmt::Display for ImageIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.docker_reference())
    }
}

/// What identity a signature must claim (`signedIdentity` in the policy).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SignedIdentity {
    /// The signed reference must equal the image reference (both tagged or digested).
    MatchExact,
    /// Tagged image: the signed reference must equal it. Digested image: same repository. The
    /// default for `signedBy` and `sigstoreSigned`.
    MatchRepoDigestOrExact,
    /// Same repository, any tag or digest.
    MatchRepository,
    /// The signed reference must equal this fixed reference (tagged or digested).
    ExactReference {
        /// `dockerReference`.
        docker_reference: String,
    },
    /// The signed reference must be in this fixed repository.
    ExactRepository {
        /// `dockerRepository`.
        docker_repository: String,
    },
    /// Rewrite the image reference's `prefix` to `signed_prefix`, then apply
    /// [`SignedIdentity::MatchRepoDigestOrExact`].
    RemapIdentity {
        /// `prefix`: a host, host/namespace or repository.
        prefix: String,
        /// `signedPrefix`: what `prefix` is replaced by.
        signed_prefix: String,
    },
}

/// Whether a repository-only signed identity (what cosign writes) may satisfy
/// `matchRepoDigestOrExact` for an image referenced by digest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NameOnlySignature {
    /// containers/image: a signed identity without tag or digest never matches (simple signing).
    Refuse,
    /// cosign: a repository-only identity matches an image referenced by digest (the digest is
    /// checked separately against the signed manifest digest); never a tag-only image.
    AllowForDigest,
}

impl SignedIdentity {
    /// The JSON `type` of this rule.
    pub fn type_name(&self) -> &'static str {
        match self {
            Self::MatchExact => "matchExact",
            Self::MatchRepoDigestOrExact => "matchRepoDigestOrExact",
            Self::MatchRepository => "matchRepository",
            Self::ExactReference { .. } => "exactReference",
            Self::ExactRepository { .. } => "exactRepository",
            Self::RemapIdentity { .. } => "remapIdentity",
        }
    }

    /// Checks the structural validity of the rule's parameters (done when the policy is parsed).
    pub(crate) fn validate(&self) -> Result<(), String> {
        match self {
            Self::MatchExact | Self::MatchRepoDigestOrExact | Self::MatchRepository => Ok(()),
            Self::ExactReference { docker_reference } => {
                let r = DockerReference::parse_normalized(docker_reference).map_err(|e| e.to_string())?;
                if r.is_name_only() {
                    return Err(format!("exactReference {docker_reference:?} has neither a tag nor a digest"));
                }
                Ok(())
            }
            Self::ExactRepository { docker_repository } => {
                let r = DockerReference::parse_normalized(docker_repository).map_err(|e| e.to_string())?;
                if !r.is_name_only() {
                    return Err(format!("exactRepository {docker_repository:?} must not have a tag or digest"));
                }
                Ok(())
            }
            Self::RemapIdentity { prefix, signed_prefix } => {
                for (field, p) in [("prefix", prefix), ("signedPrefix", signed_prefix)] {
                    if !is_valid_remap_prefix(p) {
                        return Err(format!(
                            "remapIdentity {field} {p:?} is not a host[:port], host/namespace or repository"
                        ));
                    }
                }
                Ok(())
            }
        }
    }

    /// Does a signature claiming `signed` satisfy this rule for the image `intended`?
    /// `Err` carries a human-readable reason.
    pub(crate) fn check(
        &self,
        intended: &DockerReference,
        signed: &str,
        name_only: NameOnlySignature,
    ) -> Result<(), String> {
        let sig = DockerReference::parse_normalized(signed).map_err(|e| format!("signed identity: {e}"))?;
        let mismatch = || format!("signed identity {signed:?} does not match {intended} under {}", self.type_name());
        match self {
            Self::MatchExact => {
                if intended.is_name_only() || sig.is_name_only() || sig.to_string() != intended.to_string() {
                    return Err(mismatch());
                }
                Ok(())
            }
            Self::MatchRepoDigestOrExact => match_repo_digest_or_exact(intended, &sig, name_only)
                .map_err(|hint| if hint.is_empty() { mismatch() } else { format!("{}{hint}", mismatch()) }),
            Self::MatchRepository => {
                if sig.name() == intended.name() {
                    Ok(())
                } else {
                    Err(mismatch())
                }
            }
            Self::ExactReference { docker_reference } => {
                let want = DockerReference::parse_normalized(docker_reference).map_err(|e| e.to_string())?;
                if want.is_name_only() || sig.is_name_only() || want.to_string() != sig.to_string() {
                    return Err(format!("signed identity {signed:?} is not exactReference {docker_reference:?}"));
                }
                Ok(())
            }
            Self::ExactRepository { docker_repository } => {
                let want = DockerReference::parse_normalized(docker_repository).map_err(|e| e.to_string())?;
                if want.name() != sig.name() {
                    return Err(format!("signed identity {signed:?} is not in exactRepository {docker_repository:?}"));
                }
                Ok(())
            }
            Self::RemapIdentity { prefix, signed_prefix } => {
                let s = intended.to_string();
                let remapped = if ref_matches_prefix(&s, prefix) {
                    let new = format!("{signed_prefix}{}", &s[prefix.len()..]);
                    DockerReference::parse_exact(&new).map_err(|e| format!("remapIdentity produced {new:?}: {e}"))?
                } else {
                    intended.clone()
                };
                match_repo_digest_or_exact(&remapped, &sig, name_only).map_err(|hint| {
                    format!("signed identity {signed:?} does not match {remapped} (remapped from {intended}){hint}")
                })
            }
        }
    }
}

/// `Err(hint)`: no match, with an optional explanation suffix.
fn match_repo_digest_or_exact(
    intended: &DockerReference,
    sig: &DockerReference,
    name_only: NameOnlySignature,
) -> Result<(), &'static str> {
    if sig.is_name_only() {
        // containers/image refuses a name-only signed identity here. cosign writes exactly that,
        // so for cosign we accept it when the image is pinned by digest (the signed manifest
        // digest is checked against the manifest separately); a tag-only image needs
        // matchRepository or exactRepository in the policy.
        return match (name_only, intended.digest.is_some()) {
            (NameOnlySignature::AllowForDigest, true) if sig.name() == intended.name() => Ok(()),
            (NameOnlySignature::AllowForDigest, false) => Err(
                " (the signature names only a repository; an image referenced by tag needs signedIdentity matchRepository or exactRepository)",
            ),
            _ => Err(""),
        };
    }
    if intended.digest.is_some() {
        if sig.name() == intended.name() { Ok(()) } else { Err("") }
    } else if intended.tag.is_some() && sig.to_string() == intended.to_string() {
        Ok(())
    } else {
        Err("")
    }
}

/// containers/image `refMatchesPrefix`: `prefix` matches the whole string, or is followed by
/// `:`, `/` or `@`.
fn ref_matches_prefix(s: &str, prefix: &str) -> bool {
    match s.strip_prefix(prefix) {
        Some("") => true,
        Some(rest) => rest.starts_with([':', '/', '@']),
        None => false,
    }
}

/// `host[:port]`, or `host[:port]/path` (no tag, no digest, no normalisation).
fn is_valid_remap_prefix(p: &str) -> bool {
    match p.split_once('/') {
        None => is_valid_domain(p),
        Some((host, path)) => is_valid_domain(host) && is_valid_path(path),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    const D1: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";

    fn id(s: &str) -> ImageIdentity {
        ImageIdentity::parse(s).unwrap()
    }

    #[test]
    fn normalisation() {
        let r = DockerReference::parse_normalized("busybox").unwrap();
        assert_eq!(r.to_string(), "docker.io/library/busybox");
        assert!(r.is_name_only());
        let r = DockerReference::parse_normalized("index.docker.io/foo/bar:1").unwrap();
        assert_eq!(r.to_string(), "docker.io/foo/bar:1");
        let r = DockerReference::parse_normalized("localhost/x").unwrap();
        assert_eq!(r.domain(), "localhost");
        let r = DockerReference::parse_normalized("127.0.0.1:5055/demo/signed:v1").unwrap();
        assert_eq!((r.domain(), r.path(), r.tag()), ("127.0.0.1:5055", "demo/signed", Some("v1")));
        let r = DockerReference::parse_normalized(&format!("quay.io/a/b:t@{D1}")).unwrap();
        assert_eq!(r.tag(), Some("t"));
        assert_eq!(r.digest(), Some(D1));
        assert_eq!(r.name(), "quay.io/a/b");
        // An upper-case first component is a registry host, as in docker.
        assert_eq!(DockerReference::parse_normalized("UPPER/case").unwrap().domain(), "UPPER");
        let r = DockerReference::parse_normalized("Example.com/a").unwrap();
        assert_eq!(r.domain(), "Example.com");
        let r = DockerReference::parse_normalized("[::1]:5000/a").unwrap();
        assert_eq!(r.domain(), "[::1]:5000");
    }

    #[test]
    fn invalid_references() {
        for bad in [
            "",
            "upper/Case",
            "docker.io/Upper",
            "a//b",
            "a/b:",
            "a/b@sha256:abc",
            "a/b@md5:00000000000000000000000000000000",
            "a/-b",
            "a/b..c",
            "a/b:-tag",
            "host:port/a",
            "-bad.com/a",
            "1111111111111111111111111111111111111111111111111111111111111111",
            "a/b:t@",
        ] {
            assert!(DockerReference::parse_normalized(bad).is_err(), "{bad:?} accepted");
        }
        let long = format!("example.com/{}", "a".repeat(250));
        assert!(DockerReference::parse_normalized(&long).is_err());
        assert!(DockerReference::parse_normalized("a/b___c").is_err());
        assert!(DockerReference::parse_normalized("a/b---c").is_ok());
        assert!(DockerReference::parse_normalized("a/b__c.d_e").is_ok());
    }

    #[test]
    fn parse_exact_requires_normal_form() {
        assert!(DockerReference::parse_exact("docker.io/library/busybox:1").is_ok());
        assert!(DockerReference::parse_exact("busybox:1").is_err());
        assert!(DockerReference::parse_exact("docker.io/busybox").is_err());
    }

    #[test]
    fn image_identity() {
        let i = ImageIdentity { registry: "docker.io".into(), repository: "busybox".into(), tag: None, digest: None };
        assert_eq!(i.docker_reference(), "docker.io/busybox:latest");
        assert_eq!(i.reference().unwrap().to_string(), "docker.io/library/busybox:latest");
        let i = ImageIdentity { tag: Some("v1".into()), digest: Some(D1.into()), ..id("127.0.0.1:5055/demo/x") };
        assert_eq!(i.docker_reference(), format!("127.0.0.1:5055/demo/x@{D1}"));
        assert_eq!(i.reference().unwrap().to_string(), format!("127.0.0.1:5055/demo/x@{D1}"));
        // A registry without a dot is still the registry (no docker.io guessing for structured input).
        let i = ImageIdentity { registry: "registry".into(), repository: "app".into(), tag: None, digest: None };
        assert_eq!(i.reference().unwrap().to_string(), "registry/app:latest");
        for bad in [
            ImageIdentity { registry: "".into(), ..id("a.io/b") },
            ImageIdentity { repository: "b:1".into(), ..id("a.io/b") },
            ImageIdentity { repository: "B".into(), ..id("a.io/b") },
            ImageIdentity { tag: Some("bad tag".into()), ..id("a.io/b") },
            ImageIdentity { digest: Some("sha256:12".into()), ..id("a.io/b") },
        ] {
            assert!(bad.reference().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn scopes_most_specific_first() {
        assert_eq!(
            id("my.reg.example.com:8443/ns/sub/repo:v1").policy_scopes().unwrap(),
            [
                "my.reg.example.com:8443/ns/sub/repo:v1",
                "my.reg.example.com:8443/ns/sub/repo",
                "my.reg.example.com:8443/ns/sub",
                "my.reg.example.com:8443/ns",
                "my.reg.example.com:8443",
                "*.reg.example.com",
                "*.example.com",
                "*.com",
            ]
        );
        assert_eq!(
            id("busybox").policy_scopes().unwrap(),
            ["docker.io/library/busybox:latest", "docker.io/library/busybox", "docker.io/library", "docker.io", "*.io"]
        );
        let both = id(&format!("localhost:5000/a:v2@{D1}"));
        assert_eq!(
            both.policy_scopes().unwrap(),
            [
                format!("localhost:5000/a@{D1}"),
                "localhost:5000/a:v2".into(),
                "localhost:5000/a".into(),
                "localhost:5000".into()
            ]
        );
    }

    fn check(rule: &SignedIdentity, image: &str, signed: &str) -> Result<(), String> {
        rule.check(&id(image).reference().unwrap(), signed, NameOnlySignature::Refuse)
    }

    #[test]
    fn match_exact() {
        let r = SignedIdentity::MatchExact;
        assert!(check(&r, "example.com/a:1", "example.com/a:1").is_ok());
        assert!(check(&r, "busybox:1", "docker.io/library/busybox:1").is_ok());
        assert!(check(&r, "busybox:1", "busybox:1").is_ok());
        assert!(check(&r, "example.com/a:1", "example.com/a:2").is_err());
        assert!(check(&r, "example.com/a:1", "example.com/a").is_err());
        assert!(check(&r, "example.com/a:1", "example.com/b:1").is_err());
        assert!(check(&r, &format!("example.com/a@{D1}"), &format!("example.com/a@{D1}")).is_ok());
        assert!(check(&r, &format!("example.com/a@{D1}"), "example.com/a:1").is_err());
        assert!(check(&r, "example.com/a:1", "not a reference").is_err());
    }

    #[test]
    fn match_repo_digest_or_exact() {
        let r = SignedIdentity::MatchRepoDigestOrExact;
        assert!(check(&r, "example.com/a:1", "example.com/a:1").is_ok());
        assert!(check(&r, "example.com/a:1", "example.com/a:2").is_err());
        assert!(check(&r, &format!("example.com/a@{D1}"), "example.com/a:whatever").is_ok());
        assert!(check(&r, &format!("example.com/a@{D1}"), "example.com/b:whatever").is_err());
        // containers/image: a repository-only signed identity never matches …
        assert!(check(&r, &format!("example.com/a@{D1}"), "example.com/a").is_err());
        assert!(check(&r, "example.com/a:1", "example.com/a").is_err());
        // … except for cosign with an image pinned by digest.
        let intended = id(&format!("example.com/a@{D1}")).reference().unwrap();
        assert!(r.check(&intended, "example.com/a", NameOnlySignature::AllowForDigest).is_ok());
        assert!(r.check(&intended, "example.com/b", NameOnlySignature::AllowForDigest).is_err());
        let tagged = id("example.com/a:1").reference().unwrap();
        let e = r.check(&tagged, "example.com/a", NameOnlySignature::AllowForDigest).unwrap_err();
        assert!(e.contains("matchRepository"), "{e}");
    }

    #[test]
    fn match_repository_and_exact_rules() {
        let r = SignedIdentity::MatchRepository;
        assert!(check(&r, "example.com/a:1", "example.com/a").is_ok());
        assert!(check(&r, "example.com/a:1", "example.com/a:7").is_ok());
        assert!(check(&r, "example.com/a:1", "example.com/ab:1").is_err());

        let r = SignedIdentity::ExactReference { docker_reference: "example.com/x:1".into() };
        assert!(r.validate().is_ok());
        assert!(check(&r, "other.com/y:2", "example.com/x:1").is_ok());
        assert!(check(&r, "other.com/y:2", "example.com/x:2").is_err());
        assert!(check(&r, "other.com/y:2", "example.com/x").is_err());
        assert!(SignedIdentity::ExactReference { docker_reference: "example.com/x".into() }.validate().is_err());

        let r = SignedIdentity::ExactRepository { docker_repository: "example.com/x".into() };
        assert!(r.validate().is_ok());
        assert!(check(&r, "other.com/y:2", "example.com/x:9").is_ok());
        assert!(check(&r, "other.com/y:2", "example.com/x").is_ok());
        assert!(check(&r, "other.com/y:2", "example.com/z:9").is_err());
        assert!(SignedIdentity::ExactRepository { docker_repository: "example.com/x:1".into() }.validate().is_err());
    }

    #[test]
    fn remap_identity() {
        let r = SignedIdentity::RemapIdentity {
            prefix: "mirror.local/ns".into(),
            signed_prefix: "quay.io/upstream".into(),
        };
        assert!(r.validate().is_ok());
        assert!(check(&r, "mirror.local/ns/app:1", "quay.io/upstream/app:1").is_ok());
        assert!(check(&r, "mirror.local/ns/app:1", "mirror.local/ns/app:1").is_err());
        assert!(check(&r, "mirror.local/ns/app:1", "quay.io/upstream/app:2").is_err());
        // Prefix must end at a component boundary: nsx is not under ns.
        assert!(check(&r, "mirror.local/nsx/app:1", "quay.io/upstream/app:1").is_err());
        assert!(check(&r, "mirror.local/nsx/app:1", "mirror.local/nsx/app:1").is_ok());
        let by_digest = format!("mirror.local/ns/app@{D1}");
        assert!(check(&r, &by_digest, "quay.io/upstream/app:any").is_ok());
        for (p, s) in [("", "a.io"), ("a.io/B", "b.io"), ("a.io/x:1", "b.io"), ("a.io", "b.io/x@sha256:00")] {
            let r = SignedIdentity::RemapIdentity { prefix: p.into(), signed_prefix: s.into() };
            assert!(r.validate().is_err(), "{p} {s}");
        }
        // Remapping into a non-normalised reference fails closed.
        let r = SignedIdentity::RemapIdentity { prefix: "mirror.local".into(), signed_prefix: "docker.io".into() };
        assert!(check(&r, "mirror.local/app:1", "docker.io/app:1").is_err());
        assert!(check(&r, "mirror.local/library/app:1", "docker.io/library/app:1").is_ok());
    }

    #[test]
    fn prefix_boundaries() {
        assert!(ref_matches_prefix("a.io/x", "a.io"));
        assert!(ref_matches_prefix("a.io", "a.io"));
        assert!(ref_matches_prefix("a.io:5000/x", "a.io"));
        assert!(!ref_matches_prefix("a.iox/x", "a.io"));
        assert!(!ref_matches_prefix("a.i", "a.io"));
    }

    #[test]
    fn sha256_digest_check() {
        assert!(is_sha256_digest(D1));
        assert!(!is_sha256_digest("sha256:ABCD"));
        assert!(!is_sha256_digest(&D1.to_uppercase()));
        assert!(!is_sha256_digest(&D1.replace("sha256", "sha512")));
    }
}
