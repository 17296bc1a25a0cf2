//! Start-up: configuration → store, keys, verifiers, policies → listeners. Also creates what the
//! embedded defaults need on first start (token key, admin key, self-signed TLS certificate),
//! persisted in the data directory so a restart keeps tokens, admin access and pins valid.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use cloister_kbs_protocol::admin::{AdminPublicKey, AdminSigningKey};
use cloister_verifier::ear::EarSigner;
use zeroize::Zeroizing;

use crate::admin::AdminAuth;
use crate::broker::{Broker, BrokerSettings};
use crate::config::Config;
use crate::error::{ConfigError, KbsError};
use crate::evidence::Verifiers;
use crate::http::{AppState, RateLimiter, router};
use crate::store::{Durability, FsStore, MemoryStore, Namespace, PgOptions, PgStore, ResourceStore};

/// Start-up failures.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// Bad configuration.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A broker operation failed during set-up.
    #[error(transparent)]
    Kbs(#[from] KbsError),
    /// I/O (data directory, sockets).
    #[error("{what}: {error}")]
    Io {
        /// What was being done.
        what: String,
        /// The error.
        error: String,
    },
}

fn io_err(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> StartError {
    let what = what.into();
    move |e| StartError::Io { what, error: e.to_string() }
}

/// Writes a secret file with mode 0600 (atomically).
fn write_private(path: &Path, bytes: &[u8]) -> Result<(), StartError> {
    let tmp = path.with_extension("tmp");
    {
        use std::io::Write;
        let mut o = std::fs::OpenOptions::new();
        o.write(true).create(true).truncate(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            o.mode(0o600);
        }
        let mut f = o.open(&tmp).map_err(io_err(format!("create {}", tmp.display())))?;
        f.write_all(bytes).and_then(|()| f.sync_all()).map_err(io_err(format!("write {}", tmp.display())))?;
    }
    std::fs::rename(&tmp, path).map_err(io_err(format!("rename to {}", path.display())))
}

/// What `prepare` produced.
pub struct Prepared {
    /// The router state.
    pub state: Arc<AppState>,
    /// TLS material (cert chain PEM, key PEM) unless plain HTTP.
    pub tls: Option<(Vec<u8>, Zeroizing<Vec<u8>>)>,
    /// A freshly generated admin private key (PEM), to be shown once.
    pub new_admin_key: Option<Zeroizing<String>>,
    /// SHA-256 of the TLS certificate (hex), for pinning.
    pub tls_fingerprint: Option<String>,
}

/// Builds everything from `config` with state under `data_dir`.
pub fn prepare(config: &Config, data_dir: &Path) -> Result<Prepared, StartError> {
    std::fs::create_dir_all(data_dir).map_err(io_err(format!("create {}", data_dir.display())))?;
    let store = open_store(config, data_dir)?;
    // With a shared database, generated key material lives in the store so that every replica
    // signs and admits with the same keys; otherwise in the data directory.
    let shared = store.is_remote();
    // Token signer: configured key, or one generated once and kept in the data directory.
    let signer = match &config.attestation_service.attestation_token_broker.signer {
        Some(s) => {
            let bytes = std::fs::read(&s.key_path).map_err(io_err(format!("read {}", s.key_path.display())))?;
            let der =
                cloister_kbs_protocol::admin::pem_or_der(&bytes).map_err(|e| ConfigError::Invalid(e.to_string()))?;
            EarSigner::from_pkcs8(&der).map_err(|e| ConfigError::Invalid(format!("token signer: {e}")))?
        }
        None if shared => {
            let (der, created) = shared_once(store.as_ref(), "token-signer.pk8", || {
                let (_, der) = EarSigner::generate().map_err(|e| KbsError::Internal(e.to_string()))?;
                Ok(Zeroizing::new(der.to_vec()))
            })?;
            if created {
                tracing::info!("generated the token signing key (kept sealed in the shared store)");
            }
            EarSigner::from_pkcs8(&der).map_err(|e| ConfigError::Invalid(format!("stored token signer: {e}")))?
        }
        None => {
            let path = data_dir.join("token-signer.pk8");
            match std::fs::read(&path) {
                Ok(der) => {
                    EarSigner::from_pkcs8(&der).map_err(|e| ConfigError::Invalid(format!("{}: {e}", path.display())))?
                }
                Err(_) => {
                    let (s, der) = EarSigner::generate().map_err(|e| KbsError::Internal(e.to_string()))?;
                    write_private(&path, &der)?;
                    tracing::info!(path = %path.display(), "generated the token signing key");
                    s
                }
            }
        }
    };

    // Admin key for the embedded default (JWT mode, no identity provider configured).
    let mut new_admin_key = None;
    let default_admin = if config.admin.authorization_mode == "AuthenticatedAuthorization"
        && config.admin.authentication.bearer_jwt.identity_providers.is_empty()
    {
        let path = data_dir.join("admin.pub");
        if shared {
            let mut pem = None;
            let (spki, created) = shared_once(store.as_ref(), "admin.pub", || {
                let (k, p) = AdminSigningKey::generate().map_err(|e| KbsError::Internal(e.to_string()))?;
                pem = Some(p);
                Ok(Zeroizing::new(k.public().to_spki_pem().into_bytes()))
            })?;
            if created {
                new_admin_key = pem;
            }
            Some(AdminPublicKey::from_spki(&spki).map_err(|e| ConfigError::Invalid(format!("stored admin.pub: {e}")))?)
        } else {
            match std::fs::read(&path) {
                Ok(b) => Some(
                    AdminPublicKey::from_spki(&b)
                        .map_err(|e| ConfigError::Invalid(format!("{}: {e}", path.display())))?,
                ),
                Err(_) => {
                    let (k, pem) = AdminSigningKey::generate().map_err(|e| KbsError::Internal(e.to_string()))?;
                    let public = k.public();
                    write_private(&path, public.to_spki_pem().as_bytes())?;
                    new_admin_key = Some(pem);
                    Some(public)
                }
            }
        }
    } else {
        None
    };
    let admin = AdminAuth::from_config(&config.admin, default_admin)?;

    let mut trusted_jwks = Vec::new();
    for p in &config.attestation_token.trusted_jwk_sets {
        let bytes = std::fs::read(p).map_err(io_err(format!("read {}", p.display())))?;
        let v: serde_json::Value =
            serde_json::from_slice(&bytes).map_err(|e| ConfigError::Invalid(format!("{}: {e}", p.display())))?;
        match v.get("keys").and_then(serde_json::Value::as_array) {
            Some(keys) => trusted_jwks.extend(keys.iter().cloned()),
            None => return Err(ConfigError::Invalid(format!("{}: not a JWK set", p.display())).into()),
        }
    }
    if config.attestation_token.insecure_header_jwk {
        tracing::warn!("attestation_token.insecure_header_jwk = true: any self-signed token is accepted");
    }
    let settings = BrokerSettings {
        session_lifetime: config.attestation_service.timeout * 60,
        token_lifetime: config.attestation_service.attestation_token_broker.duration_min * 60,
        trusted_jwks,
        insecure_header_jwk: config.attestation_token.insecure_header_jwk,
        shared_sessions: config.storage_backend.shared_sessions(),
    };
    let verifiers = Verifiers::from_config(&config.attestation_service.verifier)?;
    let broker = Arc::new(Broker::new(store.clone(), verifiers, signer, settings));

    if let Some(p) = &config.policy_engine.policy_path
        && store.get(Namespace::Kbs, crate::broker::RESOURCE_POLICY_KEY).map_err(KbsError::from)?.is_none()
    {
        let text = std::fs::read_to_string(p).map_err(io_err(format!("read {}", p.display())))?;
        cloister_policy::Policy::new("resource", text.clone()).map_err(|e| ConfigError::Invalid(e.to_string()))?;
        store
            .put(Namespace::Kbs, crate::broker::RESOURCE_POLICY_KEY, text.as_bytes(), Durability::Durable)
            .map_err(KbsError::from)?;
    }
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    for p in &config.attestation_service.rvps_config.reference_value_files {
        let bytes = std::fs::read(p).map_err(io_err(format!("read {}", p.display())))?;
        let names = broker.register_reference_values(&bytes, now)?;
        tracing::info!(file = %p.display(), ?names, "reference values loaded");
    }
    broker.sweep_sessions(now)?;

    let (tls, tls_fingerprint) = if config.http_server.insecure_http {
        tracing::warn!("http_server.insecure_http = true: plain HTTP, for development only");
        (None, None)
    } else {
        let (cert, key) = match (&config.http_server.certificate, &config.http_server.private_key) {
            (Some(c), Some(k)) => (
                std::fs::read(c).map_err(io_err(format!("read {}", c.display())))?,
                Zeroizing::new(std::fs::read(k).map_err(io_err(format!("read {}", k.display())))?),
            ),
            _ => self_signed(data_dir)?,
        };
        let der = cloister_kbs_protocol::admin::pem_or_der(&cert).map_err(|e| ConfigError::Invalid(e.to_string()))?;
        let fp = hex::encode(ring::digest::digest(&ring::digest::SHA256, &der).as_ref());
        (Some((cert, key)), Some(fp))
    };

    let state = Arc::new(AppState {
        broker,
        admin,
        body_limit: config.http_server.payload_request_size as usize * 1024 * 1024,
        limiter: RateLimiter::new(config.http_server.auth_rate_limit, config.http_server.auth_rate_burst),
        max_sessions: config.http_server.max_sessions,
    });
    Ok(Prepared { state, tls, new_admin_key, tls_fingerprint })
}

/// Opens the configured store.
fn open_store(config: &Config, data_dir: &Path) -> Result<Arc<dyn ResourceStore>, StartError> {
    let backends = &config.storage_backend.backends;
    Ok(match config.storage_backend.storage_type.as_str() {
        "Memory" => Arc::new(MemoryStore::default()),
        "Postgres" => {
            let pg = backends.postgres.as_ref().ok_or_else(|| ConfigError::Invalid("no postgres section".into()))?;
            let key_path =
                pg.encryption_key_path.as_ref().ok_or_else(|| ConfigError::Invalid("no encryption_key_path".into()))?;
            let encryption_key = read_key32(key_path)?;
            let options = PgOptions {
                url: pg.connection_string(),
                encryption_key,
                pool_size: pg.pool_size,
                connect_timeout: Duration::from_secs(pg.connect_timeout_secs),
                request_timeout: Duration::from_secs(pg.request_timeout_secs),
                ca_certs_pem: match &pg.ca_cert_path {
                    Some(p) => Some(std::fs::read(p).map_err(io_err(format!("read {}", p.display())))?),
                    None => None,
                },
            };
            Arc::new(PgStore::open(&options).map_err(KbsError::from)?)
        }
        _ => {
            let dir = backends.local_fs.as_ref().map(|l| l.dir_path.clone()).unwrap_or_else(|| data_dir.join("store"));
            Arc::new(FsStore::open(dir).map_err(KbsError::from)?)
        }
    })
}

/// Reads a 32-byte key file: raw bytes, or 64 hex digits (surrounding whitespace ignored).
fn read_key32(path: &Path) -> Result<Zeroizing<[u8; 32]>, StartError> {
    let bytes = Zeroizing::new(std::fs::read(path).map_err(io_err(format!("read {}", path.display())))?);
    let mut key = Zeroizing::new([0u8; 32]);
    if bytes.len() == 32 {
        key.copy_from_slice(&bytes);
        return Ok(key);
    }
    let text = std::str::from_utf8(&bytes).map(str::trim).unwrap_or("");
    if text.len() == 64 && hex::decode_to_slice(text, key.as_mut()).is_ok() {
        return Ok(key);
    }
    Err(ConfigError::Invalid(format!(
        "{}: a storage encryption key is 32 raw bytes or 64 hex digits (e.g. `openssl rand -hex 32`)",
        path.display()
    ))
    .into())
}

/// Reads the shared record `key` (namespace `Keys`), creating it with `make` if absent. When
/// replicas start together exactly one creation wins and all use its value. Returns the value
/// and whether this call created it.
fn shared_once(
    store: &dyn ResourceStore,
    key: &str,
    make: impl FnOnce() -> Result<Zeroizing<Vec<u8>>, StartError>,
) -> Result<(Zeroizing<Vec<u8>>, bool), StartError> {
    if let Some(v) = store.get(Namespace::Keys, key).map_err(KbsError::from)? {
        return Ok((v, false));
    }
    let value = make()?;
    if store.create(Namespace::Keys, key, &value).map_err(KbsError::from)? {
        return Ok((value, true));
    }
    let v = store
        .get(Namespace::Keys, key)
        .map_err(KbsError::from)?
        .ok_or_else(|| KbsError::Internal(format!("shared key {key} vanished")))?;
    Ok((v, false))
}

/// The self-signed certificate of the embedded default (created once, for `localhost`,
/// `127.0.0.1` and `::1`).
fn self_signed(data_dir: &Path) -> Result<(Vec<u8>, Zeroizing<Vec<u8>>), StartError> {
    let cert_path = data_dir.join("tls-cert.pem");
    let key_path = data_dir.join("tls-key.pem");
    if let (Ok(c), Ok(k)) = (std::fs::read(&cert_path), std::fs::read(&key_path)) {
        return Ok((c, Zeroizing::new(k)));
    }
    let names = vec!["localhost".to_owned(), "127.0.0.1".to_owned(), "::1".to_owned()];
    let ck =
        rcgen::generate_simple_self_signed(names).map_err(|e| KbsError::Internal(format!("TLS certificate: {e}")))?;
    let key = Zeroizing::new(ck.key_pair.serialize_pem().into_bytes());
    let cert = ck.cert.pem().into_bytes();
    write_private(&key_path, &key)?;
    write_private(&cert_path, &cert)?;
    tracing::info!(cert = %cert_path.display(), "generated a self-signed TLS certificate");
    Ok((cert, key))
}

/// Binds every configured socket (port 0 picks a free port) and returns the listeners.
pub fn bind(config: &Config) -> Result<Vec<std::net::TcpListener>, StartError> {
    config
        .http_server
        .sockets
        .iter()
        .map(|a| {
            let l = std::net::TcpListener::bind(a).map_err(io_err(format!("bind {a}")))?;
            l.set_nonblocking(true).map_err(io_err("set_nonblocking"))?;
            Ok(l)
        })
        .collect()
}

/// Serves on `listeners` until `shutdown` resolves; also sweeps expired sessions every 60 s.
pub async fn serve(
    prepared: Prepared,
    listeners: Vec<std::net::TcpListener>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), StartError> {
    let app = router(prepared.state.clone());
    let broker = prepared.state.broker.clone();
    let sweeper = tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(60));
        loop {
            tick.tick().await;
            let b = broker.clone();
            let now =
                std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
            let _ = tokio::task::spawn_blocking(move || b.sweep_sessions(now)).await;
        }
    });
    let handle = axum_server::Handle::new();
    let mut tasks = Vec::new();
    let tls = match &prepared.tls {
        Some((cert, key)) => Some(
            axum_server::tls_rustls::RustlsConfig::from_pem(cert.clone(), key.to_vec())
                .await
                .map_err(io_err("TLS configuration"))?,
        ),
        None => None,
    };
    for l in listeners {
        let app = app.clone().into_make_service_with_connect_info::<SocketAddr>();
        let h = handle.clone();
        let t = match &tls {
            Some(tls) => {
                let server = axum_server::from_tcp_rustls(l, tls.clone()).handle(h);
                tokio::spawn(async move { server.serve(app).await })
            }
            None => {
                let server = axum_server::from_tcp(l).handle(h);
                tokio::spawn(async move { server.serve(app).await })
            }
        };
        tasks.push(t);
    }
    shutdown.await;
    handle.graceful_shutdown(Some(Duration::from_secs(5)));
    for t in tasks {
        let _ = t.await;
    }
    sweeper.abort();
    Ok(())
}

/// The default data directory: `$CLOISTER_KBS_DATA`, else `$XDG_DATA_HOME/cloister-kbs`, else
/// `~/.local/share/cloister-kbs`.
pub fn default_data_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("CLOISTER_KBS_DATA") {
        return PathBuf::from(d);
    }
    let base = std::env::var_os("XDG_DATA_HOME").map(PathBuf::from).unwrap_or_else(|| {
        std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(|| PathBuf::from(".")).join(".local/share")
    });
    base.join("cloister-kbs")
}
