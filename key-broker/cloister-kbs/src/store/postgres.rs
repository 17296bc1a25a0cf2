//! [`PgStore`]: the store of replicated deployments, in PostgreSQL.
//!
//! Every record is one row of `kbs_records (namespace, key, value)`; writes are single
//! `INSERT … ON CONFLICT` / `DELETE` statements, so each is its own transaction and a reader
//! (on any replica) sees the old value or the new one, never a mix. Values are sealed with
//! AES-256-GCM under a key from the configuration before they leave the process; the row's
//! namespace and key are the associated data, so a row copied under another name does not
//! open. The database is therefore trusted for availability, not for confidentiality.
//!
//! Two small connection pools share one server: reads and relaxed writes (sessions) run with
//! `synchronous_commit = off`, durable writes (resources, policies, reference values, keys)
//! with the server's default, so they are on disk when acknowledged. Nothing is cached: every
//! read goes to the database, so a change made through one replica is seen by every replica
//! on its next request, and a replica that lost the database refuses requests with
//! [`StoreError::Unavailable`] (HTTP 503) instead of serving stale state. Lost connections are
//! re-established on the next request; no restart is needed after the database comes back.
//!
//! The [`ResourceStore`] trait is synchronous; this store runs its connections on a small
//! private Tokio runtime and blocks the caller until the answer (or the request timeout).

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};
use tokio::sync::Mutex;
use tokio_postgres::{Client, Statement};
use tokio_postgres_rustls::MakeRustlsConnect;
use zeroize::Zeroizing;

use super::{Durability, Namespace, ResourceStore, check_key};
use crate::error::StoreError;

/// Schema migrations, applied in order at start (under an advisory lock, so replicas starting
/// together do not race). Never edit a released entry; append.
const MIGRATIONS: &[&str] = &["CREATE TABLE kbs_records (
        namespace  TEXT        NOT NULL,
        key        TEXT        NOT NULL,
        value      BYTEA       NOT NULL,
        updated_at TIMESTAMPTZ NOT NULL DEFAULT now(),
        PRIMARY KEY (namespace, key)
    )"];

/// Advisory lock id that serialises migrations ("CLKBS" in ASCII).
const MIGRATION_LOCK: i64 = 0x0043_4c4b_4253;

/// Format byte of a sealed value.
const SEAL_V1: u8 = 1;

/// How to reach the database and seal its rows.
#[derive(Clone)]
pub struct PgOptions {
    /// libpq-style connection string or `postgresql://` URL.
    pub url: String,
    /// The 32-byte AES-256-GCM key that seals every value.
    pub encryption_key: Zeroizing<[u8; 32]>,
    /// Connections for reads and relaxed writes.
    pub pool_size: usize,
    /// Connect timeout.
    pub connect_timeout: Duration,
    /// Longest wait for one store operation (and the server-side statement timeout).
    pub request_timeout: Duration,
    /// Extra CA certificates (PEM) for TLS to the server, besides the webpki roots. TLS is used
    /// as the connection string's `sslmode` says (`disable`, `prefer`, `require`); whenever it
    /// is used the server's chain and host name are verified.
    pub ca_certs_pem: Option<Vec<u8>>,
}

impl std::fmt::Debug for PgOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgOptions")
            .field("url", &redact_url(&self.url))
            .field("pool_size", &self.pool_size)
            .field("connect_timeout", &self.connect_timeout)
            .field("request_timeout", &self.request_timeout)
            .finish_non_exhaustive()
    }
}

/// The URL with any password replaced, for logs and errors.
pub fn redact_url(url: &str) -> String {
    // postgresql://user:secret@host/db → postgresql://user:***@host/db
    if let Some((scheme, rest)) = url.split_once("://")
        && let Some((userinfo, host)) = rest.split_once('@')
        && let Some((user, _)) = userinfo.split_once(':')
    {
        return format!("{scheme}://{user}:***@{host}");
    }
    // key=value form: drop password=…
    url.split_whitespace()
        .map(|kv| if kv.starts_with("password=") { "password=***" } else { kv })
        .collect::<Vec<_>>()
        .join(" ")
}

/// One connection and its prepared statements.
struct Conn {
    client: Client,
    get: Statement,
    put: Statement,
    delete: Statement,
    list: Statement,
    create: Statement,
}

/// A fixed set of lazily (re)connected connections.
struct Pool {
    slots: Vec<Mutex<Option<Arc<Conn>>>>,
    next: AtomicUsize,
    config: tokio_postgres::Config,
    tls: MakeRustlsConnect,
}

impl Pool {
    fn new(config: tokio_postgres::Config, tls: MakeRustlsConnect, size: usize) -> Self {
        Self { slots: (0..size.max(1)).map(|_| Mutex::new(None)).collect(), next: AtomicUsize::new(0), config, tls }
    }

    /// A live connection (round robin), connecting if the slot is empty or its connection died.
    async fn get(&self) -> Result<Arc<Conn>, StoreError> {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.slots.len();
        let mut slot = self.slots[i].lock().await;
        if let Some(c) = slot.as_ref()
            && !c.client.is_closed()
        {
            return Ok(c.clone());
        }
        *slot = None;
        let conn = Arc::new(connect(&self.config, self.tls.clone()).await?);
        *slot = Some(conn.clone());
        Ok(conn)
    }
}

fn unavailable(e: &tokio_postgres::Error) -> StoreError {
    // The error's Display omits the server's detail; include the database error text if any.
    let detail = match e.as_db_error() {
        Some(db) => format!("{}: {}", db.code().code(), db.message()),
        None => match std::error::Error::source(e) {
            Some(s) => format!("{e}: {s}"),
            None => e.to_string(),
        },
    };
    StoreError::Unavailable(format!("PostgreSQL: {detail}"))
}

async fn connect(config: &tokio_postgres::Config, tls: MakeRustlsConnect) -> Result<Conn, StoreError> {
    let (client, connection) = config.connect(tls).await.map_err(|e| unavailable(&e))?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::warn!(error = %e, "PostgreSQL connection closed");
        }
    });
    let prep = |sql: &'static str| {
        let client = &client;
        async move { client.prepare(sql).await.map_err(|e| unavailable(&e)) }
    };
    let get = prep("SELECT value FROM kbs_records WHERE namespace = $1 AND key = $2").await?;
    let put = prep(
        "INSERT INTO kbs_records (namespace, key, value) VALUES ($1, $2, $3)
         ON CONFLICT (namespace, key) DO UPDATE SET value = EXCLUDED.value, updated_at = now()",
    )
    .await?;
    let delete = prep("DELETE FROM kbs_records WHERE namespace = $1 AND key = $2").await?;
    let list = prep("SELECT key FROM kbs_records WHERE namespace = $1 ORDER BY key").await?;
    let create = prep(
        "INSERT INTO kbs_records (namespace, key, value) VALUES ($1, $2, $3)
         ON CONFLICT (namespace, key) DO NOTHING",
    )
    .await?;
    Ok(Conn { client, get, put, delete, list, create })
}

/// AES-256-GCM sealing of values, bound to their namespace and key.
struct Sealer {
    key: LessSafeKey,
    rng: SystemRandom,
}

impl Sealer {
    fn new(key: &[u8; 32]) -> Result<Self, StoreError> {
        let key = LessSafeKey::new(
            UnboundKey::new(&AES_256_GCM, key)
                .map_err(|_| StoreError::Config("storage encryption key rejected".into()))?,
        );
        Ok(Self { key, rng: SystemRandom::new() })
    }

    fn aad(ns: Namespace, key: &str) -> Vec<u8> {
        let mut a = Vec::with_capacity(32 + key.len());
        a.extend_from_slice(b"cloister-kbs/v1\0");
        a.extend_from_slice(ns.name().as_bytes());
        a.push(0);
        a.extend_from_slice(key.as_bytes());
        a
    }

    /// `1 || nonce || ciphertext || tag`.
    fn seal(&self, ns: Namespace, key: &str, value: &[u8]) -> Result<Vec<u8>, StoreError> {
        let mut nonce = [0u8; NONCE_LEN];
        self.rng.fill(&mut nonce).map_err(|_| StoreError::Config("no randomness".into()))?;
        let mut out = Vec::with_capacity(1 + NONCE_LEN + value.len() + 16);
        out.push(SEAL_V1);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(value);
        let tag = self
            .key
            .seal_in_place_separate_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(Self::aad(ns, key)),
                &mut out[1 + NONCE_LEN..],
            )
            .map_err(|_| StoreError::Config("sealing failed".into()))?;
        out.extend_from_slice(tag.as_ref());
        Ok(out)
    }

    fn open(&self, ns: Namespace, key: &str, sealed: Vec<u8>) -> Result<Zeroizing<Vec<u8>>, StoreError> {
        let mut sealed = Zeroizing::new(sealed);
        let corrupt =
            |detail: &str| StoreError::Corrupt { what: format!("{}/{key}", ns.name()), detail: detail.into() };
        if sealed.len() < 1 + NONCE_LEN + 16 || sealed[0] != SEAL_V1 {
            return Err(corrupt("not a sealed record of this version"));
        }
        let mut nonce = [0u8; NONCE_LEN];
        nonce.copy_from_slice(&sealed[1..1 + NONCE_LEN]);
        let plain_len = self
            .key
            .open_in_place(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(Self::aad(ns, key)),
                &mut sealed[1 + NONCE_LEN..],
            )
            .map_err(|_| {
                corrupt("does not open with the configured storage encryption key (wrong key, or the row was altered)")
            })?
            .len();
        Ok(Zeroizing::new(sealed[1 + NONCE_LEN..1 + NONCE_LEN + plain_len].to_vec()))
    }
}

/// The PostgreSQL store.
pub struct PgStore {
    /// Always `Some` until dropped (then shut down without blocking, which is allowed even
    /// when the last reference goes away on an async worker).
    rt: Option<tokio::runtime::Runtime>,
    fast: Arc<Pool>,
    durable: Arc<Pool>,
    sealer: Sealer,
    timeout: Duration,
    url: String,
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStore").field("url", &redact_url(&self.url)).finish_non_exhaustive()
    }
}

impl PgStore {
    /// Connects, applies the schema migrations and checks that the encryption key opens what
    /// the database already holds (so a wrong key fails at start, not on the first request).
    pub fn open(options: &PgOptions) -> Result<Self, StoreError> {
        let mut config: tokio_postgres::Config = options
            .url
            .parse()
            .map_err(|e| StoreError::Config(format!("PostgreSQL URL {}: {e}", redact_url(&options.url))))?;
        config.connect_timeout(options.connect_timeout);
        if config.get_application_name().is_none() {
            config.application_name("cloister-kbs");
        }
        let ms = options.request_timeout.as_millis();
        let mut fast = config.clone();
        fast.options(format!("-c statement_timeout={ms} -c synchronous_commit=off"));
        let mut durable = config.clone();
        durable.options(format!("-c statement_timeout={ms}"));
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("kbs-postgres")
            .enable_all()
            .build()
            .map_err(|e| StoreError::Config(format!("PostgreSQL runtime: {e}")))?;
        let sealer = Sealer::new(&options.encryption_key)?;
        let tls = tls_connector(options.ca_certs_pem.as_deref())?;
        let store = Self {
            rt: Some(rt),
            fast: Arc::new(Pool::new(fast, tls.clone(), options.pool_size)),
            durable: Arc::new(Pool::new(durable.clone(), tls.clone(), 2)),
            sealer,
            timeout: options.request_timeout + options.connect_timeout,
            url: options.url.clone(),
        };
        store.block(async move { migrate(durable, tls).await })?;
        store.check_key()?;
        tracing::info!(url = %redact_url(&options.url), "PostgreSQL store ready");
        Ok(store)
    }

    /// Runs `fut` on the store's runtime and waits for it (at most the request timeout).
    fn block<T: Send + 'static>(
        &self,
        fut: impl Future<Output = Result<T, StoreError>> + Send + 'static,
    ) -> Result<T, StoreError> {
        let rt = self.rt.as_ref().ok_or_else(|| StoreError::Unavailable("store is shutting down".into()))?;
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let task = rt.spawn(async move {
            let _ = tx.send(fut.await);
        });
        match rx.recv_timeout(self.timeout) {
            Ok(r) => r,
            Err(_) => {
                task.abort();
                Err(StoreError::Unavailable(format!(
                    "PostgreSQL did not answer within {} ms",
                    self.timeout.as_millis()
                )))
            }
        }
    }

    fn pool(&self, durable: bool) -> Arc<Pool> {
        if durable { self.durable.clone() } else { self.fast.clone() }
    }

    /// Opens one existing record, if any, to fail early on a wrong encryption key.
    fn check_key(&self) -> Result<(), StoreError> {
        let pool = self.pool(true);
        let row: Option<(String, String, Vec<u8>)> = self.block(async move {
            let c = pool.get().await?;
            let r = c
                .client
                .query_opt("SELECT namespace, key, value FROM kbs_records ORDER BY updated_at LIMIT 1", &[])
                .await
                .map_err(|e| unavailable(&e))?;
            Ok(r.map(|r| (r.get(0), r.get(1), r.get(2))))
        })?;
        if let Some((ns, key, value)) = row
            && let Some(ns) = Namespace::from_name(&ns)
        {
            self.sealer.open(ns, &key, value)?;
        }
        Ok(())
    }
}

impl Drop for PgStore {
    fn drop(&mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

/// A rustls connector trusting the webpki roots and `extra_pem`.
fn tls_connector(extra_pem: Option<&[u8]>) -> Result<MakeRustlsConnect, StoreError> {
    let mut roots = rustls::RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.to_vec() };
    if let Some(pem) = extra_pem {
        let mut n = 0;
        for cert in rustls::pki_types::pem::PemObject::pem_slice_iter(pem) {
            let cert: rustls::pki_types::CertificateDer<'static> =
                cert.map_err(|e| StoreError::Config(format!("PostgreSQL CA certificates: {e}")))?;
            roots.add(cert).map_err(|e| StoreError::Config(format!("PostgreSQL CA certificate: {e}")))?;
            n += 1;
        }
        if n == 0 {
            return Err(StoreError::Config("PostgreSQL CA file holds no certificate".into()));
        }
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| StoreError::Config(format!("TLS: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(MakeRustlsConnect::new(config))
}

async fn migrate(config: tokio_postgres::Config, tls: MakeRustlsConnect) -> Result<(), StoreError> {
    let (mut client, connection) = config.connect(tls).await.map_err(|e| unavailable(&e))?;
    let conn = tokio::spawn(connection);
    let result = async {
        let tx = client.transaction().await.map_err(|e| unavailable(&e))?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK]).await.map_err(|e| unavailable(&e))?;
        tx.batch_execute(
            "CREATE TABLE IF NOT EXISTS cloister_kbs_migrations (
                 version INTEGER PRIMARY KEY, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())",
        )
        .await
        .map_err(|e| unavailable(&e))?;
        let done: i32 = tx
            .query_one("SELECT COALESCE(MAX(version), 0) FROM cloister_kbs_migrations", &[])
            .await
            .map_err(|e| unavailable(&e))?
            .get(0);
        let known = i32::try_from(MIGRATIONS.len()).unwrap_or(i32::MAX);
        if done > known {
            return Err(StoreError::Config(format!(
                "the database schema is version {done}, newer than this cloister-kbs knows ({known}); upgrade the binary"
            )));
        }
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(usize::try_from(done).unwrap_or(0)) {
            let version = i32::try_from(i + 1).unwrap_or(i32::MAX);
            tx.batch_execute(sql).await.map_err(|e| unavailable(&e))?;
            tx.execute("INSERT INTO cloister_kbs_migrations (version) VALUES ($1)", &[&version])
                .await
                .map_err(|e| unavailable(&e))?;
            tracing::info!(version, "applied a store schema migration");
        }
        tx.commit().await.map_err(|e| unavailable(&e))
    }
    .await;
    drop(client);
    let _ = conn.await;
    result
}

impl ResourceStore for PgStore {
    fn get(&self, ns: Namespace, key: &str) -> Result<Option<Zeroizing<Vec<u8>>>, StoreError> {
        check_key(key)?;
        let pool = self.pool(false);
        let k = key.to_owned();
        let row: Option<Vec<u8>> = self.block(async move {
            let c = pool.get().await?;
            let r = c.client.query_opt(&c.get, &[&ns.name(), &k]).await.map_err(|e| unavailable(&e))?;
            Ok(r.map(|r| r.get(0)))
        })?;
        row.map(|v| self.sealer.open(ns, key, v)).transpose()
    }

    fn put(&self, ns: Namespace, key: &str, value: &[u8], durability: Durability) -> Result<(), StoreError> {
        check_key(key)?;
        let sealed = self.sealer.seal(ns, key, value)?;
        let pool = self.pool(durability == Durability::Durable);
        let k = key.to_owned();
        self.block(async move {
            let c = pool.get().await?;
            c.client.execute(&c.put, &[&ns.name(), &k, &sealed]).await.map_err(|e| unavailable(&e))?;
            Ok(())
        })
    }

    fn create(&self, ns: Namespace, key: &str, value: &[u8]) -> Result<bool, StoreError> {
        check_key(key)?;
        let sealed = self.sealer.seal(ns, key, value)?;
        let pool = self.pool(true);
        let k = key.to_owned();
        self.block(async move {
            let c = pool.get().await?;
            let n = c.client.execute(&c.create, &[&ns.name(), &k, &sealed]).await.map_err(|e| unavailable(&e))?;
            Ok(n == 1)
        })
    }

    fn delete(&self, ns: Namespace, key: &str) -> Result<bool, StoreError> {
        check_key(key)?;
        let pool = self.pool(ns != Namespace::Session);
        let k = key.to_owned();
        self.block(async move {
            let c = pool.get().await?;
            let n = c.client.execute(&c.delete, &[&ns.name(), &k]).await.map_err(|e| unavailable(&e))?;
            Ok(n > 0)
        })
    }

    fn list(&self, ns: Namespace) -> Result<Vec<String>, StoreError> {
        let pool = self.pool(false);
        self.block(async move {
            let c = pool.get().await?;
            let rows = c.client.query(&c.list, &[&ns.name()]).await.map_err(|e| unavailable(&e))?;
            Ok(rows.iter().map(|r| r.get(0)).collect())
        })
    }

    fn sweep_untouched(&self, ns: Namespace, age_secs: u64) -> Result<Option<(usize, usize)>, StoreError> {
        let pool = self.pool(false);
        let age = f64::from(u32::try_from(age_secs).unwrap_or(u32::MAX));
        self.block(async move {
            let c = pool.get().await?;
            let deleted = c
                .client
                .execute(
                    "DELETE FROM kbs_records WHERE namespace = $1 AND updated_at < now() - make_interval(secs => $2)",
                    &[&ns.name(), &age],
                )
                .await
                .map_err(|e| unavailable(&e))?;
            let remaining: i64 = c
                .client
                .query_one("SELECT count(*) FROM kbs_records WHERE namespace = $1", &[&ns.name()])
                .await
                .map_err(|e| unavailable(&e))?
                .get(0);
            Ok(Some((usize::try_from(deleted).unwrap_or(usize::MAX), usize::try_from(remaining).unwrap_or(usize::MAX))))
        })
    }

    fn health(&self) -> Result<(), StoreError> {
        let pool = self.pool(false);
        self.block(async move {
            let c = pool.get().await?;
            c.client.simple_query("SELECT 1").await.map_err(|e| unavailable(&e))?;
            Ok(())
        })
    }

    fn is_remote(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_values_open_only_under_their_name_and_key() {
        let s = Sealer::new(&[7; 32]).unwrap();
        let sealed = s.seal(Namespace::Repository, "a/b/c", b"secret").unwrap();
        assert!(!sealed.windows(6).any(|w| w == b"secret"), "the plaintext is not in the row");
        assert_eq!(&s.open(Namespace::Repository, "a/b/c", sealed.clone()).unwrap()[..], b"secret");
        assert!(matches!(s.open(Namespace::Repository, "a/b/d", sealed.clone()), Err(StoreError::Corrupt { .. })));
        assert!(matches!(s.open(Namespace::Kbs, "a/b/c", sealed.clone()), Err(StoreError::Corrupt { .. })));
        let other = Sealer::new(&[8; 32]).unwrap();
        assert!(matches!(other.open(Namespace::Repository, "a/b/c", sealed.clone()), Err(StoreError::Corrupt { .. })));
        let mut flipped = sealed.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 1;
        assert!(s.open(Namespace::Repository, "a/b/c", flipped).is_err());
        assert!(s.open(Namespace::Repository, "a/b/c", sealed[..20].to_vec()).is_err());
        // Two seals of one value differ (fresh nonce).
        assert_ne!(s.seal(Namespace::Repository, "a/b/c", b"secret").unwrap(), sealed);
    }

    #[test]
    fn urls_are_redacted() {
        assert_eq!(redact_url("postgresql://kbs:hunter2@db:5432/kbs"), "postgresql://kbs:***@db:5432/kbs");
        assert_eq!(redact_url("postgresql://kbs@db/kbs"), "postgresql://kbs@db/kbs");
        assert_eq!(redact_url("host=db user=kbs password=hunter2"), "host=db user=kbs password=***");
    }
}
