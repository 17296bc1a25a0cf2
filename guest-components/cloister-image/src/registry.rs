//! A client of the OCI distribution API (`/v2/`): manifests and blobs, anonymous, Basic and
//! Bearer-token authentication (the `WWW-Authenticate` challenge flow), HTTPS with the webpki
//! roots plus extra CA certificates, plain HTTP only for hosts named insecure, retries with
//! back-off on 5xx and transport errors, and ranged requests so a broken blob download resumes
//! where it stopped.
//!
//! The registry is untrusted: everything it returns is checked against digests by the caller.
//! Credentials are sent only to the registry host (and its token realm), never logged.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use reqwest::StatusCode;
use reqwest::header::{ACCEPT, CONTENT_TYPE, RANGE, WWW_AUTHENTICATE};
use serde::Deserialize;
use zeroize::Zeroizing;

use crate::digest::Digest;
use crate::error::ImageError;
use crate::reference::{DOCKER_HUB, Reference};

/// Username and password for one registry.
#[derive(Clone)]
pub struct BasicCredentials {
    /// User name.
    pub username: String,
    /// Password or identity token.
    pub password: Zeroizing<String>,
}

impl std::fmt::Debug for BasicCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BasicCredentials").field("username", &self.username).finish_non_exhaustive()
    }
}

/// Credentials per registry host, e.g. from a containers `auth.json`.
#[derive(Debug, Clone, Default)]
pub struct Credentials(HashMap<String, BasicCredentials>);

#[derive(Deserialize)]
struct AuthJson {
    auths: HashMap<String, AuthEntry>,
}

#[derive(Deserialize)]
struct AuthEntry {
    #[serde(default)]
    auth: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
}

fn normalise_host(key: &str) -> String {
    let k = key.split_once("://").map_or(key, |x| x.1);
    let k = k.split('/').next().unwrap_or(k);
    match k {
        "index.docker.io" | "registry-1.docker.io" => DOCKER_HUB.to_owned(),
        other => other.to_owned(),
    }
}

impl Credentials {
    /// No credentials (anonymous pulls).
    pub fn none() -> Self {
        Self::default()
    }

    /// Adds `user:password` for `host`.
    pub fn insert(&mut self, host: &str, username: &str, password: &str) {
        self.0.insert(
            normalise_host(host),
            BasicCredentials { username: username.to_owned(), password: Zeroizing::new(password.to_owned()) },
        );
    }

    /// Parses a containers/docker `auth.json` (`{"auths":{"host":{"auth":"<b64 user:pass>"}}}`).
    pub fn from_auth_json(bytes: &[u8]) -> Result<Self, ImageError> {
        let bad = |why: &str| ImageError::Config(format!("auth.json: {why}"));
        let parsed: AuthJson = serde_json::from_slice(bytes).map_err(|e| bad(&e.to_string()))?;
        let mut out = Self::default();
        for (host, entry) in parsed.auths {
            match (entry.auth, entry.username, entry.password) {
                (Some(auth), _, _) => {
                    let decoded =
                        Zeroizing::new(B64.decode(auth.trim()).map_err(|_| bad("an auth value is not base64"))?);
                    let text = std::str::from_utf8(&decoded).map_err(|_| bad("an auth value is not UTF-8"))?;
                    let (u, p) = text.split_once(':').ok_or_else(|| bad("an auth value is not user:password"))?;
                    out.insert(&host, u, p);
                }
                (None, Some(u), Some(p)) => out.insert(&host, &u, &p),
                _ => return Err(bad("an entry has neither auth nor username/password")),
            }
        }
        Ok(out)
    }

    fn get(&self, registry: &str) -> Option<&BasicCredentials> {
        self.0.get(registry)
    }
}

/// How to reach registries.
#[derive(Debug, Clone)]
pub struct RegistryOptions {
    /// Hosts (`host[:port]`, or `host:*` for any port) spoken to over plain HTTP. Named
    /// insecure on purpose: nothing but digests protects what comes from them.
    pub insecure_http_hosts: Vec<String>,
    /// Extra trusted CA certificates (DER), added to the webpki roots.
    pub extra_ca_der: Vec<Vec<u8>>,
    /// Credentials.
    pub credentials: Credentials,
    /// TCP+TLS connect timeout.
    pub connect_timeout: Duration,
    /// How long a response may stall before the attempt counts as failed.
    pub read_timeout: Duration,
    /// Attempts after the first for 5xx, 429 and transport errors (with resumption for blobs).
    pub retries: u32,
    /// First back-off delay (doubles per attempt).
    pub backoff: Duration,
    /// Where to reach a registry instead of its own name (`registry` → `host[:port]`), like a
    /// `location` in containers' registries.conf. The reference, its digests and the
    /// credentials stay keyed by the registry's name.
    pub endpoints: HashMap<String, String>,
    /// Reach loopback registries (`localhost[:port]`, `127.0.0.1[:port]`) at this host instead,
    /// same port: inside a VM on QEMU user networking the host's loopback is `10.0.2.2`.
    pub loopback_via: Option<String>,
}

impl RegistryOptions {
    /// Whether `registry` is spoken to over plain HTTP.
    pub fn is_insecure(&self, registry: &str) -> bool {
        self.insecure_http_hosts.iter().any(|h| {
            h == registry
                || h.strip_suffix(":*").is_some_and(|host| {
                    registry
                        .strip_prefix(host)
                        .and_then(|p| p.strip_prefix(':'))
                        .is_some_and(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
                })
        })
    }

    /// The `host[:port]` requests for `r` go to.
    pub fn endpoint(&self, r: &Reference) -> String {
        if let Some(e) = self.endpoints.get(&r.registry) {
            return e.clone();
        }
        if let Some(via) = &self.loopback_via {
            let (host, port) = match r.registry.rsplit_once(':') {
                Some((h, p)) if !h.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => (h, Some(p)),
                _ => (r.registry.as_str(), None),
            };
            if host == "localhost" || host == "127.0.0.1" {
                return match port {
                    Some(p) => format!("{via}:{p}"),
                    None => via.clone(),
                };
            }
        }
        r.api_host().to_owned()
    }
}

impl Default for RegistryOptions {
    fn default() -> Self {
        Self {
            insecure_http_hosts: Vec::new(),
            extra_ca_der: Vec::new(),
            credentials: Credentials::none(),
            connect_timeout: Duration::from_secs(10),
            read_timeout: Duration::from_secs(30),
            retries: 3,
            backoff: Duration::from_millis(250),
            endpoints: HashMap::new(),
            loopback_via: None,
        }
    }
}

/// A registry API client (cheap to clone).
#[derive(Clone)]
pub struct Registry {
    http: reqwest::Client,
    opts: Arc<RegistryOptions>,
    /// (registry, repository) → bearer token; registries answered with Basic → marked here too.
    auth: Arc<Mutex<HashMap<(String, String), AuthState>>>,
}

#[derive(Clone)]
enum AuthState {
    Basic,
    Bearer(Zeroizing<String>),
}

/// One parsed `WWW-Authenticate` challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    /// `bearer` or `basic` (lowercase).
    pub scheme: String,
    /// Parameters (`realm`, `service`, `scope`), keys lowercase.
    pub params: HashMap<String, String>,
}

/// Parses `Bearer realm="…",service="…",scope="…"` (RFC 7235 auth-params, quoted or token).
pub fn parse_challenge(header: &str) -> Option<Challenge> {
    let header = header.trim();
    let (scheme, rest) = header.split_once(' ').unwrap_or((header, ""));
    let mut params = HashMap::new();
    let mut s = rest.trim();
    while !s.is_empty() {
        let (key, after) = s.split_once('=')?;
        let key = key.trim().trim_start_matches(',').trim().to_ascii_lowercase();
        let after = after.trim_start();
        let (value, rest) = if let Some(q) = after.strip_prefix('"') {
            let mut v = String::new();
            let mut chars = q.char_indices();
            let mut end = None;
            while let Some((i, c)) = chars.next() {
                match c {
                    '\\' => {
                        if let Some((_, n)) = chars.next() {
                            v.push(n);
                        }
                    }
                    '"' => {
                        end = Some(i);
                        break;
                    }
                    c => v.push(c),
                }
            }
            let end = end?;
            (v, &q[end + 1..])
        } else {
            let end = after.find(',').unwrap_or(after.len());
            (after[..end].trim().to_owned(), &after[end..])
        };
        params.insert(key, value);
        s = rest.trim_start().trim_start_matches(',').trim_start();
    }
    Some(Challenge { scheme: scheme.to_ascii_lowercase(), params })
}

#[derive(Deserialize)]
struct TokenResponse {
    #[serde(default)]
    token: Option<String>,
    #[serde(default)]
    access_token: Option<String>,
}

fn short(body: &[u8]) -> String {
    let s = String::from_utf8_lossy(&body[..body.len().min(300)]);
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn transport(url: &str, e: &reqwest::Error) -> ImageError {
    let mut why = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(s) = src {
        why.push_str(": ");
        why.push_str(&s.to_string());
        src = s.source();
    }
    ImageError::Transport { url: url.to_owned(), why }
}

/// Whether a failure is worth another attempt.
pub(crate) fn retryable(e: &ImageError) -> bool {
    match e {
        ImageError::Transport { .. } | ImageError::Timeout { .. } => true,
        ImageError::Status { status, .. } => *status >= 500 || *status == 429 || *status == 408,
        _ => false,
    }
}

impl Registry {
    /// A client with `opts`.
    pub fn new(opts: RegistryOptions) -> Result<Self, ImageError> {
        let mut roots = rustls::RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        for der in &opts.extra_ca_der {
            roots
                .add(rustls::pki_types::CertificateDer::from(der.clone()))
                .map_err(|e| ImageError::Config(format!("extra CA certificate: {e}")))?;
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| ImageError::Config(format!("TLS: {e}")))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let http = reqwest::Client::builder()
            .use_preconfigured_tls(tls)
            .connect_timeout(opts.connect_timeout)
            .pool_max_idle_per_host(8)
            .user_agent(concat!("cloister-image/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| ImageError::Config(format!("HTTP client: {e}")))?;
        Ok(Self { http, opts: Arc::new(opts), auth: Arc::new(Mutex::new(HashMap::new())) })
    }

    /// The options.
    pub fn options(&self) -> &RegistryOptions {
        &self.opts
    }

    fn base(&self, r: &Reference) -> String {
        let scheme = if self.opts.is_insecure(&r.registry) { "http" } else { "https" };
        format!("{scheme}://{}/v2/{}", self.opts.endpoint(r), r.repository)
    }

    fn auth_key(r: &Reference) -> (String, String) {
        (r.registry.clone(), r.repository.clone())
    }

    /// Sends `req` (for `url`), with the read timeout on the response head.
    async fn send(&self, req: reqwest::RequestBuilder, url: &str) -> Result<reqwest::Response, ImageError> {
        tokio::time::timeout(self.opts.read_timeout, req.send())
            .await
            .map_err(|_| ImageError::Timeout { url: url.to_owned(), secs: self.opts.read_timeout.as_secs() })?
            .map_err(|e| transport(url, &e))
    }

    /// One GET with authentication, no retries. `range_from` asks for `bytes=<n>-`.
    async fn get_once(
        &self,
        r: &Reference,
        url: &str,
        accept: Option<&str>,
        range_from: Option<u64>,
    ) -> Result<reqwest::Response, ImageError> {
        let mut challenged = false;
        loop {
            let mut req = self.http.get(url);
            if let Some(a) = accept {
                req = req.header(ACCEPT, a);
            }
            if let Some(off) = range_from.filter(|o| *o > 0) {
                req = req.header(RANGE, format!("bytes={off}-"));
            }
            let state = self.auth.lock().ok().and_then(|m| m.get(&Self::auth_key(r)).cloned());
            match state {
                Some(AuthState::Bearer(t)) => req = req.bearer_auth(t.as_str()),
                Some(AuthState::Basic) => {
                    if let Some(c) = self.opts.credentials.get(&r.registry) {
                        req = req.basic_auth(&c.username, Some(c.password.as_str()));
                    }
                }
                None => {}
            }
            let resp = self.send(req, url).await?;
            let status = resp.status();
            if status == StatusCode::UNAUTHORIZED && !challenged {
                challenged = true;
                let header = resp.headers().get(WWW_AUTHENTICATE).and_then(|v| v.to_str().ok()).map(str::to_owned);
                let challenge = header.as_deref().and_then(parse_challenge).ok_or_else(|| ImageError::Auth {
                    registry: r.registry.clone(),
                    why: "HTTP 401 without a usable WWW-Authenticate challenge".into(),
                })?;
                let new_state = self.answer(r, &challenge).await?;
                if let Ok(mut m) = self.auth.lock() {
                    m.insert(Self::auth_key(r), new_state);
                }
                continue;
            }
            if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
                let body = resp.bytes().await.unwrap_or_default();
                return Err(ImageError::Auth {
                    registry: r.registry.clone(),
                    why: format!("HTTP {} for {url}: {}", status.as_u16(), short(&body)),
                });
            }
            if !(status.is_success()) {
                let body = tokio::time::timeout(Duration::from_secs(2), resp.bytes()).await.ok().and_then(Result::ok);
                return Err(ImageError::Status {
                    url: url.to_owned(),
                    status: status.as_u16(),
                    detail: body.map(|b| short(&b)).unwrap_or_default(),
                });
            }
            return Ok(resp);
        }
    }

    /// Answers a 401 challenge: Basic with our credentials, or fetch a Bearer token.
    async fn answer(&self, r: &Reference, ch: &Challenge) -> Result<AuthState, ImageError> {
        let creds = self.opts.credentials.get(&r.registry);
        match ch.scheme.as_str() {
            "basic" => {
                if creds.is_none() {
                    return Err(ImageError::Auth {
                        registry: r.registry.clone(),
                        why: "the registry asks for Basic credentials and none are configured".into(),
                    });
                }
                Ok(AuthState::Basic)
            }
            "bearer" => {
                let realm = ch.params.get("realm").ok_or_else(|| ImageError::Auth {
                    registry: r.registry.clone(),
                    why: "Bearer challenge without a realm".into(),
                })?;
                let realm_url = reqwest::Url::parse(realm).map_err(|_| ImageError::Auth {
                    registry: r.registry.clone(),
                    why: format!("Bearer realm {realm:?} is not a URL"),
                })?;
                if realm_url.scheme() != "https"
                    && !(realm_url.scheme() == "http" && self.opts.is_insecure(&r.registry))
                {
                    return Err(ImageError::Auth {
                        registry: r.registry.clone(),
                        why: format!("refusing to send credentials to the non-https token realm {realm}"),
                    });
                }
                let mut url = realm_url.clone();
                {
                    let mut q = url.query_pairs_mut();
                    if let Some(s) = ch.params.get("service") {
                        q.append_pair("service", s);
                    }
                    let scope =
                        ch.params.get("scope").cloned().unwrap_or_else(|| format!("repository:{}:pull", r.repository));
                    q.append_pair("scope", &scope);
                }
                let mut req = self.http.get(url.clone());
                if let Some(c) = creds {
                    req = req.basic_auth(&c.username, Some(c.password.as_str()));
                }
                let resp = self.send(req, realm).await?;
                let status = resp.status();
                let body = resp.bytes().await.map_err(|e| transport(realm, &e))?;
                if !status.is_success() {
                    return Err(ImageError::Auth {
                        registry: r.registry.clone(),
                        why: format!("token endpoint {realm} answered HTTP {}: {}", status.as_u16(), short(&body)),
                    });
                }
                let t: TokenResponse = serde_json::from_slice(&body).map_err(|_| ImageError::Auth {
                    registry: r.registry.clone(),
                    why: format!("token endpoint {realm} did not return a token JSON"),
                })?;
                let token = t.token.or(t.access_token).filter(|t| !t.is_empty()).ok_or_else(|| ImageError::Auth {
                    registry: r.registry.clone(),
                    why: format!("token endpoint {realm} returned no token"),
                })?;
                Ok(AuthState::Bearer(Zeroizing::new(token)))
            }
            other => Err(ImageError::Auth {
                registry: r.registry.clone(),
                why: format!("unsupported authentication scheme {other:?}"),
            }),
        }
    }

    /// GET with retries on retryable failures.
    async fn get(
        &self,
        r: &Reference,
        url: &str,
        accept: Option<&str>,
        range_from: Option<u64>,
    ) -> Result<reqwest::Response, ImageError> {
        let mut attempt = 0;
        loop {
            match self.get_once(r, url, accept, range_from).await {
                Err(e) if retryable(&e) && attempt < self.opts.retries => {
                    tracing::warn!(%url, error = %e, attempt, "registry request failed; retrying");
                    tokio::time::sleep(self.opts.backoff * 2u32.saturating_pow(attempt)).await;
                    attempt += 1;
                }
                other => return other,
            }
        }
    }

    /// Reads a whole (small) body with a size cap and the read timeout.
    async fn read_capped(&self, url: &str, mut resp: reqwest::Response, cap: usize) -> Result<Vec<u8>, ImageError> {
        let mut out = Vec::new();
        loop {
            let Some(chunk) = self.next_chunk(url, &mut resp).await? else { return Ok(out) };
            if out.len() + chunk.len() > cap {
                return Err(ImageError::SizeMismatch {
                    what: url.to_owned(),
                    declared: cap as u64,
                    actual: (out.len() + chunk.len()) as u64,
                    more: true,
                });
            }
            out.extend_from_slice(&chunk);
        }
    }

    /// `GET /v2/<repo>/manifests/<reference>` → (body, Content-Type). Not digest-checked here.
    pub async fn manifest(&self, r: &Reference, reference: &str) -> Result<(Vec<u8>, Option<String>), ImageError> {
        let url = format!("{}/manifests/{reference}", self.base(r));
        let mut attempt = 0;
        loop {
            // `get` retries the request itself; here only a body that breaks off is retried.
            let resp = self.get(r, &url, Some(crate::manifest::ACCEPT), None).await?;
            let ct = resp.headers().get(CONTENT_TYPE).and_then(|v| v.to_str().ok()).map(str::to_owned);
            match self.read_capped(&url, resp, crate::manifest::MAX_MANIFEST).await {
                Ok(body) => return Ok((body, ct)),
                Err(e) if retryable(&e) && attempt < self.opts.retries => {
                    attempt += 1;
                    tokio::time::sleep(self.opts.backoff).await;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// A manifest by tag, or `None` when the registry says it does not exist (404).
    pub async fn manifest_if_exists(
        &self,
        r: &Reference,
        reference: &str,
    ) -> Result<Option<(Vec<u8>, Option<String>)>, ImageError> {
        match self.manifest(r, reference).await {
            Ok(x) => Ok(Some(x)),
            Err(ImageError::Status { status: 404, .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// A manifest named by an index descriptor, checked against its digest and size.
    pub async fn blob_manifest(&self, r: &Reference, d: &crate::manifest::Descriptor) -> Result<Vec<u8>, ImageError> {
        if d.size > crate::manifest::MAX_MANIFEST as u64 {
            return Err(ImageError::BadManifest(format!("{} declares {} bytes, over the limit", d.digest, d.size)));
        }
        let (body, _) = self.manifest(r, &d.digest.to_string()).await?;
        if body.len() as u64 != d.size {
            return Err(ImageError::SizeMismatch {
                what: format!("manifest {}", d.digest),
                declared: d.size,
                actual: body.len() as u64,
                more: false,
            });
        }
        let actual = Digest::of(&body);
        if actual != d.digest {
            return Err(ImageError::DigestMismatch {
                what: format!("manifest {}", d.digest),
                expected: d.digest,
                actual,
            });
        }
        Ok(body)
    }

    /// A small blob (config, signature payload), read whole and checked against `digest`/`size`.
    pub async fn blob_bytes(
        &self,
        r: &Reference,
        digest: &Digest,
        size: u64,
        cap: usize,
    ) -> Result<Vec<u8>, ImageError> {
        let url = self.blob_url(r, digest);
        if size > cap as u64 {
            return Err(ImageError::SizeMismatch {
                what: format!("blob {digest}"),
                declared: size,
                actual: size,
                more: false,
            });
        }
        let resp = self.get(r, &url, None, None).await?;
        let body = self.read_capped(&url, resp, size as usize).await?;
        if body.len() as u64 != size {
            return Err(ImageError::SizeMismatch {
                what: format!("blob {digest}"),
                declared: size,
                actual: body.len() as u64,
                more: false,
            });
        }
        let actual = Digest::of(&body);
        if actual != *digest {
            return Err(ImageError::DigestMismatch { what: format!("blob {digest}"), expected: *digest, actual });
        }
        Ok(body)
    }

    /// GET an arbitrary URL (a lookaside signature store) without registry credentials:
    /// `None` on 404, the body (at most `cap` bytes) on success, an error otherwise.
    pub async fn fetch_url(&self, url: &str, cap: usize) -> Result<Option<Vec<u8>>, ImageError> {
        let resp = self.send(self.http.get(url), url).await?;
        if resp.status() == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if !resp.status().is_success() {
            return Err(ImageError::Status {
                url: url.to_owned(),
                status: resp.status().as_u16(),
                detail: String::new(),
            });
        }
        self.read_capped(url, resp, cap).await.map(Some)
    }

    /// The URL of a blob.
    pub fn blob_url(&self, r: &Reference, digest: &Digest) -> String {
        format!("{}/blobs/{digest}", self.base(r))
    }

    /// Starts (or resumes at `offset`) a blob download. Returns the response and the offset it
    /// actually starts at (0 when the registry ignored the range).
    pub(crate) async fn blob_response(
        &self,
        r: &Reference,
        digest: &Digest,
        offset: u64,
    ) -> Result<(reqwest::Response, u64), ImageError> {
        let url = self.blob_url(r, digest);
        let resp = self.get(r, &url, None, Some(offset)).await?;
        let start = if offset > 0 && resp.status() == StatusCode::PARTIAL_CONTENT { offset } else { 0 };
        Ok((resp, start))
    }

    /// Reads the next chunk of a streaming response, with the read timeout.
    pub(crate) async fn next_chunk(
        &self,
        url: &str,
        resp: &mut reqwest::Response,
    ) -> Result<Option<bytes::Bytes>, ImageError> {
        tokio::time::timeout(self.opts.read_timeout, resp.chunk())
            .await
            .map_err(|_| ImageError::Timeout { url: url.to_owned(), secs: self.opts.read_timeout.as_secs() })?
            .map_err(|e| transport(url, &e))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_and_loopback_alias() {
        let r = |s: &str| Reference::parse(s).unwrap();
        let mut o = RegistryOptions::default();
        assert_eq!(o.endpoint(&r("127.0.0.1:5000/app:1")), "127.0.0.1:5000");
        assert_eq!(o.endpoint(&r("busybox")), "registry-1.docker.io");
        o.loopback_via = Some("10.0.2.2".into());
        assert_eq!(o.endpoint(&r("127.0.0.1:5000/app:1")), "10.0.2.2:5000");
        assert_eq!(o.endpoint(&r("localhost/app:1")), "10.0.2.2");
        assert_eq!(o.endpoint(&r("registry.example:5000/app:1")), "registry.example:5000");
        assert_eq!(o.endpoint(&r("127.0.0.10:5000/app:1")), "127.0.0.10:5000");
        o.endpoints.insert("registry.example:5000".into(), "mirror.internal".into());
        o.insecure_http_hosts = vec!["127.0.0.1:*".into(), "plain.example".into()];
        assert!(o.is_insecure("127.0.0.1:5000") && o.is_insecure("plain.example"));
        assert!(!o.is_insecure("127.0.0.1") && !o.is_insecure("127.0.0.10:5000") && !o.is_insecure("127.0.0.1:x"));
        assert!(!o.is_insecure("plain.example:80"));
        assert_eq!(o.endpoint(&r("registry.example:5000/app:1")), "mirror.internal");
    }

    #[test]
    fn challenges() {
        let c = parse_challenge(
            r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/busybox:pull,push""#,
        )
        .unwrap();
        assert_eq!(c.scheme, "bearer");
        assert_eq!(c.params["realm"], "https://auth.docker.io/token");
        assert_eq!(c.params["scope"], "repository:library/busybox:pull,push");
        let c = parse_challenge(r#"Basic realm="test""#).unwrap();
        assert_eq!((c.scheme.as_str(), c.params["realm"].as_str()), ("basic", "test"));
        let c = parse_challenge("Bearer realm=https://x/t, service=reg").unwrap();
        assert_eq!(c.params["service"], "reg");
        assert!(parse_challenge(r#"Bearer realm="unterminated"#).is_none());
    }

    #[test]
    fn auth_json() {
        let j = format!(
            r#"{{"auths":{{"https://index.docker.io/v1/":{{"auth":"{}"}},"127.0.0.1:5055":{{"username":"u","password":"p"}}}}}}"#,
            B64.encode("alice:s3:cret")
        );
        let c = Credentials::from_auth_json(j.as_bytes()).unwrap();
        let d = c.get("docker.io").unwrap();
        assert_eq!((d.username.as_str(), d.password.as_str()), ("alice", "s3:cret"));
        assert_eq!(c.get("127.0.0.1:5055").unwrap().username, "u");
        assert!(!format!("{c:?}").contains("s3:cret"));
        assert!(Credentials::from_auth_json(br#"{"auths":{"h":{"auth":"!!"}}}"#).is_err());
    }
}
