//! The HTTP surface (axum): routes of the CoCo KBS protocol and admin API, JSON errors,
//! request-body limit, per-IP rate limit on `/auth`, `/metrics` and `/healthz`.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{ConnectInfo, DefaultBodyLimit, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use cloister_kbs_protocol::SESSION_COOKIE;
use serde_json::json;

use crate::admin::AdminAuth;
use crate::broker::{Broker, Credential, ResourcePath};
use crate::error::KbsError;

/// Shared state of the handlers.
pub struct AppState {
    /// The broker.
    pub broker: Arc<Broker>,
    /// Admin authorisation.
    pub admin: AdminAuth,
    /// Body limit, bytes.
    pub body_limit: usize,
    /// `/auth` limiter.
    pub limiter: RateLimiter,
    /// Most sessions.
    pub max_sessions: usize,
}

/// Token-bucket rate limiter per client IP.
#[derive(Debug)]
pub struct RateLimiter {
    per_second: f64,
    burst: f64,
    buckets: Mutex<HashMap<IpAddr, (f64, Instant)>>,
}

impl RateLimiter {
    /// `per_second` = 0 disables it.
    pub fn new(per_second: u32, burst: u32) -> Self {
        Self { per_second: f64::from(per_second), burst: f64::from(burst.max(1)), buckets: Mutex::new(HashMap::new()) }
    }

    /// Takes one token for `ip`; false when empty.
    pub fn allow(&self, ip: IpAddr) -> bool {
        if self.per_second <= 0.0 {
            return true;
        }
        let now = Instant::now();
        let mut b = self.buckets.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if b.len() > 100_000 {
            // Bound memory: forget idle clients (their buckets would be full anyway).
            b.retain(|_, (_, t)| now.duration_since(*t).as_secs_f64() * self.per_second < self.burst);
        }
        let e = b.entry(ip).or_insert((self.burst, now));
        e.0 = (e.0 + now.duration_since(e.1).as_secs_f64() * self.per_second).min(self.burst);
        e.1 = now;
        if e.0 >= 1.0 {
            e.0 -= 1.0;
            true
        } else {
            false
        }
    }
}

type Shared = Arc<AppState>;

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

impl IntoResponse for KbsError {
    fn into_response(self) -> Response {
        let status = self.status();
        if status.is_server_error() {
            tracing::error!(error = %self, "request failed");
        } else {
            tracing::info!(kind = self.kind(), detail = %self, "request refused");
        }
        (status, axum::Json(self.info())).into_response()
    }
}

fn body(b: Result<Bytes, BytesRejection>, limit: usize) -> Result<Bytes, KbsError> {
    b.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            KbsError::PayloadTooLarge(limit)
        } else {
            KbsError::Serde(e.body_text())
        }
    })
}

fn session_cookie(headers: &HeaderMap) -> Option<String> {
    headers.get_all(header::COOKIE).iter().filter_map(|v| v.to_str().ok()).flat_map(|v| v.split(';')).find_map(|kv| {
        let (k, v) = kv.trim().split_once('=')?;
        (k == SESSION_COOKIE).then(|| v.to_owned())
    })
}

fn bearer(headers: &HeaderMap) -> Option<String> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(|t| t.trim().to_owned())
}

/// RFC 7231 IMF-fixdate, e.g. `Sat, 28 Nov 2026 22:00:00 GMT`.
fn http_date(unix: u64) -> String {
    const DAYS: [&str; 7] = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];
    const MONTHS: [&str; 12] = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
    let Ok(t) = time::OffsetDateTime::from_unix_timestamp(i64::try_from(unix).unwrap_or(0)) else {
        return String::new();
    };
    format!(
        "{}, {:02} {} {} {:02}:{:02}:{:02} GMT",
        DAYS[t.weekday().number_days_from_monday() as usize],
        t.day(),
        MONTHS[(u8::from(t.month()) - 1) as usize],
        t.year(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

async fn auth(
    State(st): State<Shared>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    b: Result<Bytes, BytesRejection>,
) -> Result<Response, KbsError> {
    let m = &st.broker.metrics;
    m.inc(&m.auth_requests);
    let result = (|| -> Result<_, KbsError> {
        if !st.limiter.allow(peer.ip()) {
            return Err(KbsError::RateLimited);
        }
        let b = body(b, st.body_limit)?;
        if st.broker.session_count_hint() >= st.max_sessions {
            return Err(KbsError::TooManySessions);
        }
        Ok(b)
    })();
    let result = match result {
        Ok(b) => blocking_if_remote(&st, move |broker| broker.auth(&b, now())).await,
        Err(e) => Err(e),
    };
    let (id, challenge, expires) = result.inspect_err(|_| m.inc(&m.auth_errors))?;
    m.inc(&m.auth_successes);
    let cookie = format!("{SESSION_COOKIE}={id}; Expires={}", http_date(expires));
    let mut resp = axum::Json(challenge).into_response();
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        resp.headers_mut().insert(header::SET_COOKIE, v);
    }
    Ok(resp)
}

async fn attest(
    State(st): State<Shared>,
    headers: HeaderMap,
    b: Result<Bytes, BytesRejection>,
) -> Result<Response, KbsError> {
    let m = &st.broker.metrics;
    m.inc(&m.attestation_requests);
    let result = async {
        let b = body(b, st.body_limit)?;
        let id = session_cookie(&headers).ok_or(KbsError::TokenNotFound)?;
        // Verification is CPU work (and may fetch certificates): keep it off the async workers.
        let broker = st.broker.clone();
        let sid = id.clone();
        let token = tokio::task::spawn_blocking(move || broker.attest(&sid, &b, now()))
            .await
            .map_err(|e| KbsError::Internal(e.to_string()))??;
        Ok::<_, KbsError>((id, token))
    }
    .await;
    let (id, token) = result.inspect_err(|_| m.inc(&m.attestation_failures))?;
    m.inc(&m.attestation_successes);
    let mut resp = axum::Json(json!({ "token": token })).into_response();
    if let Ok(v) = HeaderValue::from_str(&format!("{SESSION_COOKIE}={id}")) {
        resp.headers_mut().insert(header::SET_COOKIE, v);
    }
    Ok(resp)
}

/// Runs `f` on the blocking pool when the store waits on the network (PostgreSQL), inline
/// otherwise (the embedded store answers from the page cache in microseconds).
async fn blocking_if_remote<T: Send + 'static>(
    st: &AppState,
    f: impl FnOnce(&Broker) -> Result<T, KbsError> + Send + 'static,
) -> Result<T, KbsError> {
    if st.broker.store().is_remote() {
        let broker = st.broker.clone();
        tokio::task::spawn_blocking(move || f(&broker)).await.map_err(|e| KbsError::Internal(e.to_string()))?
    } else {
        f(&st.broker)
    }
}

/// `/healthz`: 200 when the store answers, 503 with the reason otherwise.
async fn healthz(State(st): State<Shared>) -> Result<&'static str, KbsError> {
    blocking_if_remote(&st, |b| Ok(b.store().health()?)).await?;
    Ok("ok")
}

fn admin_check(st: &AppState, headers: &HeaderMap, uri: &Uri) -> Result<(), KbsError> {
    st.admin.check(headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()), uri.path(), now())
}

async fn resource(
    State(st): State<Shared>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    Path(path): Path<String>,
    Query(query): Query<BTreeMap<String, String>>,
    b: Result<Bytes, BytesRejection>,
) -> Result<Response, KbsError> {
    let path = ResourcePath::parse(&path)?;
    let broker = st.broker.clone();
    match method {
        Method::GET => {
            let cred = match (session_cookie(&headers), bearer(&headers)) {
                (Some(c), Some(t)) => Credential::Both(c, t),
                (Some(c), None) => Credential::Session(c),
                (None, Some(t)) => Credential::Bearer(t),
                (None, None) => return Err(KbsError::TokenNotFound),
            };
            let jwe = blocking_if_remote(&st, move |b| b.get_resource(&cred, &path, &query, now())).await?;
            Ok(axum::Json(jwe).into_response())
        }
        Method::POST | Method::PUT => {
            admin_check(&st, &headers, &uri)?;
            let b = body(b, st.body_limit)?;
            tokio::task::spawn_blocking(move || broker.set_resource(&path, &b))
                .await
                .map_err(|e| KbsError::Internal(e.to_string()))??;
            Ok(StatusCode::OK.into_response())
        }
        Method::DELETE => {
            admin_check(&st, &headers, &uri)?;
            tokio::task::spawn_blocking(move || broker.delete_resource(&path))
                .await
                .map_err(|e| KbsError::Internal(e.to_string()))??;
            Ok(StatusCode::OK.into_response())
        }
        other => Err(KbsError::InvalidRequestPath(format!("method {other} on a resource"))),
    }
}

async fn admin_write<F>(
    st: Shared,
    headers: HeaderMap,
    uri: Uri,
    b: Result<Bytes, BytesRejection>,
    f: F,
) -> Result<Response, KbsError>
where
    F: FnOnce(&Broker, &[u8]) -> Result<serde_json::Value, KbsError> + Send + 'static,
{
    admin_check(&st, &headers, &uri)?;
    let b = body(b, st.body_limit)?;
    let broker = st.broker.clone();
    let v =
        tokio::task::spawn_blocking(move || f(&broker, &b)).await.map_err(|e| KbsError::Internal(e.to_string()))??;
    Ok(if v.is_null() { StatusCode::OK.into_response() } else { axum::Json(v).into_response() })
}

async fn set_resource_policy(
    State(st): State<Shared>,
    headers: HeaderMap,
    uri: Uri,
    b: Result<Bytes, BytesRejection>,
) -> Result<Response, KbsError> {
    admin_write(st, headers, uri, b, |br, b| br.set_resource_policy(b).map(|()| serde_json::Value::Null)).await
}

async fn get_resource_policy(State(st): State<Shared>, headers: HeaderMap, uri: Uri) -> Result<Response, KbsError> {
    admin_check(&st, &headers, &uri)?;
    Ok(axum::Json(blocking_if_remote(&st, |b| b.get_resource_policy()).await?).into_response())
}

async fn set_attestation_policy(
    State(st): State<Shared>,
    headers: HeaderMap,
    uri: Uri,
    b: Result<Bytes, BytesRejection>,
) -> Result<Response, KbsError> {
    admin_write(st, headers, uri, b, |br, b| br.set_attestation_policy(b).map(|()| serde_json::Value::Null)).await
}

async fn set_reference_value(
    State(st): State<Shared>,
    headers: HeaderMap,
    uri: Uri,
    b: Result<Bytes, BytesRejection>,
) -> Result<Response, KbsError> {
    admin_write(st, headers, uri, b, |br, b| br.register_reference_values(b, now()).map(|n| json!({"registered": n})))
        .await
}

async fn get_reference_value(
    State(st): State<Shared>,
    headers: HeaderMap,
    uri: Uri,
    Path(name): Path<String>,
) -> Result<Response, KbsError> {
    admin_check(&st, &headers, &uri)?;
    Ok(axum::Json(blocking_if_remote(&st, move |b| b.reference_value(&name, now())).await?).into_response())
}

async fn explain(
    State(st): State<Shared>,
    headers: HeaderMap,
    uri: Uri,
    b: Result<Bytes, BytesRejection>,
) -> Result<Response, KbsError> {
    admin_check(&st, &headers, &uri)?;
    let b = body(b, st.body_limit)?;
    Ok(axum::Json(blocking_if_remote(&st, move |br| br.explain(&b, now())).await?).into_response())
}

async fn metrics(State(st): State<Shared>) -> Response {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], st.broker.metrics.render()).into_response()
}

async fn fallback(uri: Uri) -> KbsError {
    match uri.path().strip_prefix("/kbs/v0/") {
        Some(rest) => KbsError::PluginNotFound(rest.split('/').next().unwrap_or_default().chars().take(40).collect()),
        None => KbsError::InvalidRequestPath(uri.path().chars().take(80).collect()),
    }
}

async fn track(State(st): State<Shared>, req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let t = Instant::now();
    let resp = next.run(req).await;
    let m = &st.broker.metrics;
    m.inc(&m.http_requests);
    m.observe(t.elapsed().as_secs_f64());
    resp
}

/// The router.
pub fn router(state: Arc<AppState>) -> Router {
    let limit = state.body_limit;
    Router::new()
        .route("/kbs/v0/auth", post(auth))
        .route("/kbs/v0/attest", post(attest))
        .route("/kbs/v0/resource/{*path}", get(resource).post(resource).put(resource).delete(resource))
        .route("/kbs/v0/resource-policy", post(set_resource_policy).get(get_resource_policy))
        .route("/kbs/v0/attestation-policy", post(set_attestation_policy))
        .route("/kbs/v0/reference-value", post(set_reference_value))
        .route("/kbs/v0/reference-value/{name}", get(get_reference_value))
        .route("/kbs/v0/debug/explain", post(explain))
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .fallback(fallback)
        .layer(axum::middleware::from_fn_with_state(state.clone(), track))
        .layer(DefaultBodyLimit::max(limit))
        .with_state(state)
}
