//! The TOML configuration. Section and key names follow trustee's `kbs-config.toml` where the
//! concept is the same; unknown keys are rejected so that a typo cannot silently weaken a
//! deployment. Every field has a default, so no file at all is a valid configuration.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::error::ConfigError;

/// The whole configuration.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Listener, TLS and request limits.
    pub http_server: HttpServer,
    /// Trust anchors for tokens presented as `Authorization: Bearer`.
    pub attestation_token: AttestationTokenConfig,
    /// The built-in attestation service.
    pub attestation_service: AttestationService,
    /// Admin API authorisation.
    pub admin: Admin,
    /// Where resources, policies, reference values and sessions live.
    pub storage_backend: StorageBackend,
    /// Resource policy file (trustee: `[policy_engine] policy_path`).
    pub policy_engine: PolicyEngine,
    /// Plugins (only `resource` exists).
    pub plugins: Vec<Plugin>,
}

/// `[http_server]`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct HttpServer {
    /// Addresses to listen on.
    pub sockets: Vec<SocketAddr>,
    /// Serve plain HTTP (development only).
    pub insecure_http: bool,
    /// TLS private key (PEM). Without it (and without `insecure_http`) a self-signed
    /// certificate is generated in the data directory on first start.
    pub private_key: Option<PathBuf>,
    /// TLS certificate chain (PEM).
    pub certificate: Option<PathBuf>,
    /// Request body limit in MiB (trustee's name).
    pub payload_request_size: u32,
    /// `/kbs/v0/auth` requests per second allowed per client IP (0: unlimited).
    pub auth_rate_limit: u32,
    /// Burst size of the `/auth` rate limit.
    pub auth_rate_burst: u32,
    /// Most sessions kept at once (new `/auth` requests get 503 beyond it).
    pub max_sessions: usize,
}

impl Default for HttpServer {
    fn default() -> Self {
        Self {
            sockets: vec![SocketAddr::from(([127, 0, 0, 1], 8080))],
            insecure_http: false,
            private_key: None,
            certificate: None,
            payload_request_size: 2,
            auth_rate_limit: 100,
            auth_rate_burst: 400,
            max_sessions: 1_000_000,
        }
    }
}

/// `[attestation_token]`: how Bearer tokens are verified.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AttestationTokenConfig {
    /// JWK set files (JSON `{"keys":[…]}`) of other token issuers (passport mode).
    pub trusted_jwk_sets: Vec<PathBuf>,
    /// Development only: trust the key carried in the token header.
    pub insecure_header_jwk: bool,
}

/// `[attestation_service]`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AttestationService {
    /// Only `coco_as_builtin`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Session lifetime, minutes.
    pub timeout: u64,
    /// Token issuing.
    pub attestation_token_broker: TokenBroker,
    /// Verifier settings (Cloister-specific).
    pub verifier: VerifierConfig,
    /// Reference value provider (only `BuiltIn`).
    pub rvps_config: RvpsConfig,
}

impl Default for AttestationService {
    fn default() -> Self {
        Self {
            kind: "coco_as_builtin".into(),
            timeout: 5,
            attestation_token_broker: TokenBroker::default(),
            verifier: VerifierConfig::default(),
            rvps_config: RvpsConfig::default(),
        }
    }
}

/// `[attestation_service.attestation_token_broker]`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct TokenBroker {
    /// Token lifetime, minutes.
    pub duration_min: u64,
    /// Signing key.
    pub signer: Option<Signer>,
}

impl Default for TokenBroker {
    fn default() -> Self {
        Self { duration_min: 5, signer: None }
    }
}

/// `[attestation_service.attestation_token_broker.signer]`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Signer {
    /// P-256 private key, PKCS#8 (PEM or DER).
    pub key_path: PathBuf,
}

/// `[attestation_service.rvps_config]`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RvpsConfig {
    /// Only `BuiltIn`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Reference values loaded at start: files printed by `cloister measure --output json`, or
    /// `{"name": [values]}` objects.
    pub reference_value_files: Vec<PathBuf>,
}

impl Default for RvpsConfig {
    fn default() -> Self {
        Self { kind: "BuiltIn".into(), reference_value_files: Vec::new() }
    }
}

/// `[attestation_service.verifier]`: which roots and options the bundled verifier uses.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct VerifierConfig {
    /// Additional SNP roots (the emulated TEE's ARK). Evidence chaining to them is labelled
    /// `emulated_snp`, never `snp`.
    pub snp_emulated_roots: Vec<EmulatedRoot>,
    /// Directory with VCEKs and chains in the AMD KDS layout (fetched certificates are stored
    /// there too).
    pub snp_cert_cache: Option<PathBuf>,
    /// Fetch missing VCEKs and chains from AMD KDS (off by default: no outbound calls unless
    /// asked). Fetched certificates are verified against the pinned roots like any other.
    pub snp_kds_fetch: bool,
    /// KDS base URL (default `https://kdsintf.amd.com`; e.g. a caching proxy).
    pub snp_kds_url: Option<String>,
    /// Additional TDX roots (the emulated TEE's); evidence is labelled `emulated_tdx`.
    pub tdx_emulated_roots: Vec<EmulatedRoot>,
    /// TDX collateral JSON (`QuoteCollateralV3` shape) for real Intel roots.
    pub tdx_collateral: Option<PathBuf>,
    /// Accept debuggable guests (off by default; named so because it weakens security).
    pub insecure_allow_debug: bool,
    /// IBM Secure Execution (`[attestation_service.verifier.se]`); without it `se` is refused.
    pub se: Option<SeConfig>,
}

/// `[attestation_service.verifier.se]`: the machines SE guests may run on, the chain their
/// host-key documents are checked against, and the image the guests run.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct SeConfig {
    /// Host-key documents (PEM or DER): attestation requests are encrypted to these hosts only.
    pub host_key_documents: Vec<PathBuf>,
    /// Intermediate CA and IBM Z host key signing key certificates (PEM, any number per file).
    pub certs: Vec<PathBuf>,
    /// Root certificates of IBM's chain (DigiCert); hosts under them give `se` evidence.
    pub roots: Vec<PathBuf>,
    /// Emulated roots (pinned by SHA-256); hosts under them give `emulated_se` evidence.
    pub emulated_roots: Vec<EmulatedRoot>,
    /// CRLs of the host key signing keys (PEM or DER).
    pub crls: Vec<PathBuf>,
    /// The SE header (`hdr.bin`, or the whole SE image) of the image guests run.
    pub image_header: PathBuf,
}

/// An explicitly named root certificate.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct EmulatedRoot {
    /// The certificate (PEM or DER).
    pub cert: PathBuf,
    /// Its SHA-256, hex (the pin).
    pub sha256: String,
    /// SNP product (`Milan`, `Genoa`, `Turin`); ignored for TDX.
    #[serde(default)]
    pub product: Option<String>,
    /// TDX collateral JSON signed under this root.
    #[serde(default)]
    pub collateral: Option<PathBuf>,
}

/// `[admin]`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Admin {
    /// `AuthenticatedAuthorization` (default here), `DenyAll`, or `InsecureAllowAll`.
    pub authorization_mode: String,
    /// Bearer-JWT identity providers.
    pub authentication: AdminAuthentication,
    /// Role-based ACLs.
    pub authorization: AdminAuthorization,
}

impl Default for Admin {
    fn default() -> Self {
        Self {
            authorization_mode: "AuthenticatedAuthorization".into(),
            authentication: AdminAuthentication::default(),
            authorization: AdminAuthorization::default(),
        }
    }
}

/// `[admin.authentication]`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AdminAuthentication {
    /// `[admin.authentication.bearer_jwt]`.
    pub bearer_jwt: BearerJwt,
}

/// `[admin.authentication.bearer_jwt]`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct BearerJwt {
    /// Who may mint admin tokens.
    pub identity_providers: Vec<IdentityProvider>,
}

/// One admin token issuer.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct IdentityProvider {
    /// Required `iss`, when set.
    #[serde(default)]
    pub issuer: Option<String>,
    /// Required `aud` member, when set.
    #[serde(default)]
    pub audience: Option<String>,
    /// Public key PEM (SPKI; Ed25519 or P-256): a path or `file://` URI.
    pub public_key_uri: String,
}

/// `[admin.authorization]`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AdminAuthorization {
    /// `[admin.authorization.regex_acl]`.
    pub regex_acl: RegexAcl,
}

/// `[admin.authorization.regex_acl]`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RegexAcl {
    /// ACL entries; a request is allowed when an entry for the token's role matches its path.
    pub acls: Vec<Acl>,
}

impl Default for RegexAcl {
    fn default() -> Self {
        Self { acls: vec![Acl { role: "admin".into(), allowed_endpoints: "^/kbs/.+$".into() }] }
    }
}

/// One ACL entry.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Acl {
    /// Role claim value.
    pub role: String,
    /// Regex over the request path; must start with `^/kbs` and end with `$`.
    pub allowed_endpoints: String,
}

/// `[storage_backend]`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct StorageBackend {
    /// `LocalFs` (default here), `Postgres` or `Memory`.
    pub storage_type: String,
    /// Backend settings.
    pub backends: Backends,
    /// Where protocol sessions (the `/auth` → `/attest` state) live; a Cloister extension.
    pub sessions: SessionStorage,
}

impl Default for StorageBackend {
    fn default() -> Self {
        Self { storage_type: "LocalFs".into(), backends: Backends::default(), sessions: SessionStorage::Auto }
    }
}

impl StorageBackend {
    /// Whether sessions go to the store: `store`, or `auto` with the PostgreSQL backend (the
    /// replicated deployment). `auto` keeps them in memory with the local backends, as trustee
    /// does: a session lives for minutes and a single broker gains nothing from writing it to
    /// disk twice per attestation.
    pub fn shared_sessions(&self) -> bool {
        match self.sessions {
            SessionStorage::Store => true,
            SessionStorage::Memory => false,
            SessionStorage::Auto => self.storage_type == "Postgres",
        }
    }
}

/// `[storage_backend] sessions`.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum SessionStorage {
    /// `store` with PostgreSQL, `memory` otherwise.
    #[default]
    Auto,
    /// In the broker's memory: `/attest` must reach the broker that answered `/auth`.
    Memory,
    /// In the store: any replica using the same store (and token key) continues a session.
    Store,
}

/// `[storage_backend.backends]`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Backends {
    /// `[storage_backend.backends.local_fs]`.
    pub local_fs: Option<LocalFs>,
    /// `[storage_backend.backends.postgres]`.
    pub postgres: Option<Postgres>,
}

/// A string that never appears in `Debug` output (passwords).
#[derive(Clone, Deserialize, PartialEq)]
#[serde(transparent)]
pub struct Redacted(pub String);

impl std::fmt::Debug for Redacted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("\"***\"")
    }
}

/// `[storage_backend.backends.postgres]`: trustee's fields (`host`, `port`, `db`, `username`,
/// `password`) or one `url`; the environment variable `POSTGRES_URL` overrides both, as in
/// trustee.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Postgres {
    /// `postgresql://user[:password]@host[:port]/db[?options]` or a libpq key=value string.
    pub url: Option<Redacted>,
    /// Server host (default `localhost`).
    pub host: String,
    /// Server port (default 5432).
    pub port: u16,
    /// Database (default `postgres`).
    pub db: String,
    /// Role (default `postgres`).
    pub username: String,
    /// Password, if the server asks for one.
    pub password: Option<Redacted>,
    /// File holding the 32-byte key that seals every stored value (raw 32 bytes, or 64 hex
    /// digits). Required: a database dump alone must not reveal resources or keys.
    pub encryption_key_path: Option<PathBuf>,
    /// PEM file of CA certificates for TLS to the server (besides the webpki roots). TLS follows
    /// the connection string's `sslmode`; when used, chain and host name are always verified.
    pub ca_cert_path: Option<PathBuf>,
    /// Connections for reads and session writes (durable writes use two more).
    pub pool_size: usize,
    /// Connect timeout in seconds.
    pub connect_timeout_secs: u64,
    /// Longest wait for one store operation, in seconds.
    pub request_timeout_secs: u64,
}

impl Default for Postgres {
    fn default() -> Self {
        Self {
            url: None,
            host: "localhost".into(),
            port: 5432,
            db: "postgres".into(),
            username: "postgres".into(),
            password: None,
            encryption_key_path: None,
            ca_cert_path: None,
            pool_size: 8,
            connect_timeout_secs: 5,
            request_timeout_secs: 10,
        }
    }
}

impl Postgres {
    /// The connection string: `POSTGRES_URL`, else `url`, else one built from the fields
    /// (as a libpq key=value string, so that no value needs URL escaping).
    pub fn connection_string(&self) -> String {
        if let Ok(u) = std::env::var("POSTGRES_URL")
            && !u.is_empty()
        {
            return u;
        }
        if let Some(u) = &self.url {
            return u.0.clone();
        }
        let q = |v: &str| format!("'{}'", v.replace('\\', "\\\\").replace('\'', "\\'"));
        let mut s =
            format!("host={} port={} dbname={} user={}", q(&self.host), self.port, q(&self.db), q(&self.username));
        if let Some(p) = &self.password {
            s.push_str(&format!(" password={}", q(&p.0)));
        }
        s
    }
}

/// `[storage_backend.backends.local_fs]`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LocalFs {
    /// Root directory of the store.
    pub dir_path: PathBuf,
}

/// `[policy_engine]`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct PolicyEngine {
    /// A Rego resource policy installed at start-up when the store holds none.
    pub policy_path: Option<PathBuf>,
}

/// `[[plugins]]`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Plugin {
    /// Only `resource`.
    pub name: String,
    /// Only `kvstorage`.
    #[serde(default)]
    pub storage_backend_type: Option<String>,
}

impl Config {
    /// Parses and checks a TOML text.
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        let c: Config = toml::from_str(text).map_err(|e| ConfigError::Parse(e.to_string()))?;
        c.check()?;
        Ok(c)
    }

    /// Reads a file.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError::Io { path: path.display().to_string(), error: e.to_string() })?;
        Self::from_toml(&text)
    }

    fn check(&self) -> Result<(), ConfigError> {
        let bad = |m: String| Err(ConfigError::Invalid(m));
        if self.attestation_service.kind != "coco_as_builtin" {
            return bad(format!(
                "attestation_service.type {:?} is not supported (only \"coco_as_builtin\")",
                self.attestation_service.kind
            ));
        }
        if self.attestation_service.rvps_config.kind != "BuiltIn" {
            return bad("attestation_service.rvps_config.type must be \"BuiltIn\"".into());
        }
        if !matches!(
            self.admin.authorization_mode.as_str(),
            "AuthenticatedAuthorization" | "DenyAll" | "InsecureAllowAll"
        ) {
            return bad(format!("admin.authorization_mode {:?} is unknown", self.admin.authorization_mode));
        }
        for acl in &self.admin.authorization.regex_acl.acls {
            if !acl.allowed_endpoints.starts_with("^/kbs") || !acl.allowed_endpoints.ends_with('$') {
                return bad(format!("ACL {:?} must start with ^/kbs and end with $", acl.allowed_endpoints));
            }
            regex::Regex::new(&acl.allowed_endpoints).map_err(|e| ConfigError::Invalid(format!("ACL regex: {e}")))?;
        }
        match self.storage_backend.storage_type.as_str() {
            "LocalFs" | "Memory" => {}
            "Postgres" => {
                let pg = self.storage_backend.backends.postgres.as_ref().ok_or_else(|| {
                    ConfigError::Invalid("storage_type \"Postgres\" needs [storage_backend.backends.postgres]".into())
                })?;
                if pg.encryption_key_path.is_none() {
                    return bad("storage_backend.backends.postgres.encryption_key_path is required: every value is \
                                sealed with it before it reaches the database"
                        .into());
                }
                if pg.pool_size == 0 || pg.pool_size > 256 {
                    return bad("storage_backend.backends.postgres.pool_size must be 1..=256".into());
                }
                if pg.request_timeout_secs == 0 || pg.connect_timeout_secs == 0 {
                    return bad("storage_backend.backends.postgres timeouts must be at least 1 s".into());
                }
            }
            other => {
                return bad(format!(
                    "storage_backend.storage_type {other:?} is not supported (LocalFs, Postgres, Memory)"
                ));
            }
        }
        for p in &self.plugins {
            if p.name != "resource" {
                return bad(format!("plugin {:?} is not available (only \"resource\")", p.name));
            }
            if p.storage_backend_type.as_deref().is_some_and(|t| t != "kvstorage") {
                return bad("plugin resource: storage_backend_type must be \"kvstorage\"".into());
            }
        }
        if self.http_server.sockets.is_empty() {
            return bad("http_server.sockets is empty".into());
        }
        if self.http_server.private_key.is_some() != self.http_server.certificate.is_some() {
            return bad("http_server.private_key and certificate go together".into());
        }
        if self.attestation_service.timeout == 0 || self.attestation_service.attestation_token_broker.duration_min == 0
        {
            return bad("session timeout and token duration must be at least one minute".into());
        }
        if self.http_server.payload_request_size == 0 {
            return bad("http_server.payload_request_size must be at least 1 (MiB)".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_is_the_default() {
        assert_eq!(Config::from_toml("").unwrap(), Config::default());
    }

    #[test]
    fn trustee_dev_config_parses() {
        let c = Config::from_toml(
            r#"
[http_server]
sockets = ["127.0.0.1:8080"]
insecure_http = true
[attestation_token]
insecure_header_jwk = true
[attestation_service]
type = "coco_as_builtin"
timeout = 5
[attestation_service.attestation_token_broker]
duration_min = 5
[attestation_service.rvps_config]
type = "BuiltIn"
[admin]
authorization_mode = "InsecureAllowAll"
[storage_backend]
storage_type = "LocalFs"
[storage_backend.backends.local_fs]
dir_path = "/opt/confidential-containers/storage"
[[plugins]]
name = "resource"
storage_backend_type = "kvstorage"
"#,
        )
        .unwrap();
        assert!(c.http_server.insecure_http);
        assert_eq!(c.admin.authorization_mode, "InsecureAllowAll");
    }

    #[test]
    fn unknown_keys_and_bad_values_are_rejected() {
        assert!(matches!(Config::from_toml("[http_server]\nsocket = []\n"), Err(ConfigError::Parse(_))));
        assert!(matches!(Config::from_toml("[typo]\n"), Err(ConfigError::Parse(_))));
        assert!(matches!(
            Config::from_toml("[storage_backend]\nstorage_type = \"Redis\"\n"),
            Err(ConfigError::Invalid(_))
        ));
        assert!(matches!(
            Config::from_toml("[[admin.authorization.regex_acl.acls]]\nrole = \"a\"\nallowed_endpoints = \".*\"\n"),
            Err(ConfigError::Invalid(_))
        ));
    }

    #[test]
    fn postgres_backend() {
        let base = "[storage_backend]\nstorage_type = \"Postgres\"\n";
        // The section and the encryption key are required.
        assert!(matches!(Config::from_toml(base), Err(ConfigError::Invalid(_))));
        let no_key = format!("{base}[storage_backend.backends.postgres]\nhost = \"db\"\n");
        assert!(
            matches!(Config::from_toml(&no_key), Err(ConfigError::Invalid(e)) if e.contains("encryption_key_path"))
        );
        let typo = format!("{base}[storage_backend.backends.postgres]\nhots = \"db\"\n");
        assert!(matches!(Config::from_toml(&typo), Err(ConfigError::Parse(_))));
        let c = Config::from_toml(&format!(
            "{base}[storage_backend.backends.postgres]\nhost = \"db\"\nusername = \"kbs\"\n\
             password = \"it's secret\"\nencryption_key_path = \"/k\"\n"
        ))
        .unwrap();
        // Replicas share a PostgreSQL store: sessions go there unless told otherwise.
        assert!(c.storage_backend.shared_sessions());
        let pg = c.storage_backend.backends.postgres.unwrap();
        assert!(!format!("{pg:?}").contains("secret"), "passwords stay out of Debug output");
        if std::env::var_os("POSTGRES_URL").is_none() {
            assert_eq!(
                pg.connection_string(),
                "host='db' port=5432 dbname='postgres' user='kbs' password='it\\'s secret'"
            );
            let parsed: tokio_postgres::Config = pg.connection_string().parse().unwrap();
            assert_eq!(parsed.get_password(), Some(&b"it's secret"[..]));
        }
    }

    #[test]
    fn where_sessions_live() {
        let local = |extra: &str| Config::from_toml(&format!("[storage_backend]\n{extra}")).map(|c| c.storage_backend);
        assert!(!Config::default().storage_backend.shared_sessions());
        assert!(!local("sessions = \"memory\"\n").unwrap().shared_sessions());
        assert!(local("sessions = \"store\"\n").unwrap().shared_sessions());
        assert!(local("storage_type = \"Memory\"\nsessions = \"auto\"\n").is_ok());
        assert!(matches!(local("sessions = \"disk\"\n"), Err(ConfigError::Parse(_))));
    }

    #[test]
    fn the_shipped_deployment_config_parses() {
        // deploy/config/kbs-postgres.toml is what docs/operations.md and the Kubernetes base use.
        let c = Config::from_toml(include_str!("../../../deploy/config/kbs-postgres.toml")).unwrap();
        assert_eq!(c.storage_backend.storage_type, "Postgres");
        assert!(!c.http_server.insecure_http);
        let k8s = include_str!("../../../deploy/kubernetes/base/kbs.toml");
        assert_eq!(Config::from_toml(k8s).unwrap(), c);
    }
}
