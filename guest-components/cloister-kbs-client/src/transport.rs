//! The protocol client's HTTP/1.1 transport: hyper's connection API on a few kept-alive
//! connections to the one key broker, over TLS (rustls, pinned certificate or CA) or — for
//! development only — plain TCP.
//!
//! A guest talks to exactly one KBS, a handful of requests per attestation, so a general HTTP
//! client's machinery (a pool keyed by host, proxies, redirects, per-request URL parsing and
//! timer wheels) is cost without use: measured with the flow bench, reqwest spent about 70 µs
//! of CPU per request. This transport parses the KBS URL once, keeps at most [`MAX_IDLE`]
//! idle connections, bounds every response body ([`MAX_BODY`]) and every exchange (the
//! client's timeout, connecting included). It follows no redirects and uses no proxy: the KBS
//! protocol has no redirects, and the guest reaches its KBS directly.
//!
//! A connection is driven by the request that uses it, not by a task of its own: the caller's
//! future polls hyper's connection state machine beside the request. A request then costs no
//! wake-up of another task or thread (the spawned-task design cost two per request, about 50 µs
//! each on the flow bench's machine); an idle connection is not polled, and one the KBS closed
//! meanwhile is noticed on its next use and replaced.

use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use http::header::{CONTENT_TYPE, HOST, HeaderName, HeaderValue, SET_COOKIE};
use http::{Method, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full, Limited};
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use crate::client::{ClientError, TrustMode};

/// Largest response body read from the KBS (resources are keys and small configuration).
pub(crate) const MAX_BODY: usize = 16 << 20;

/// Most idle connections kept.
const MAX_IDLE: usize = 4;

/// A response read to its end.
pub(crate) struct Reply {
    pub(crate) status: StatusCode,
    /// `name=value` of the first `Set-Cookie` named `cookie` was asked for, if any.
    pub(crate) cookie: Option<String>,
    pub(crate) body: Bytes,
}

/// A request body and its media type.
pub(crate) struct Body {
    pub(crate) content_type: &'static str,
    pub(crate) bytes: Vec<u8>,
}

impl Body {
    /// `v` as JSON.
    pub(crate) fn json(v: &impl serde::Serialize) -> Result<Self, ClientError> {
        let bytes = serde_json::to_vec(v).map_err(|e| config(format!("cannot serialise a request: {e}")))?;
        Ok(Self { content_type: "application/json", bytes })
    }
}

/// The transport to one KBS.
pub(crate) struct Transport {
    /// `host:port` to connect to (brackets removed from an IPv6 literal).
    host: String,
    port: u16,
    /// The `Host` header.
    authority: HeaderValue,
    /// Path prefix of the base URL, without a trailing slash (usually empty).
    prefix: String,
    tls: Option<(tokio_rustls::TlsConnector, ServerName<'static>)>,
    timeout: Duration,
    idle: Mutex<Vec<Conn>>,
}

/// The byte stream to the KBS: TCP, or TLS over TCP.
trait Io: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Io for T {}
type Stream = Box<dyn Io>;

/// One HTTP/1.1 connection: the request handle and the connection state machine, which the
/// request using the connection polls (see the module doc).
struct Conn {
    sender: SendRequest<Full<Bytes>>,
    driver: Pin<Box<http1::Connection<TokioIo<Stream>, Full<Bytes>>>>,
}

/// Why an exchange on a connection failed.
enum Failure {
    /// The request was not answered: hyper's error, to tell a dead kept-alive connection apart.
    Send(hyper::Error),
    /// The response could not be read whole.
    Body(ClientError),
}

impl Conn {
    /// Sends `req` and reads the response whole, polling the connection meanwhile. The flag
    /// says whether the connection may carry another request.
    async fn exchange(&mut self, req: Request<Full<Bytes>>) -> (Result<(http::response::Parts, Bytes), Failure>, bool) {
        let Conn { sender, driver } = self;
        let mut driving = true;
        let result = {
            let work = async {
                sender.ready().await.map_err(Failure::Send)?;
                let resp = sender.send_request(req).await.map_err(Failure::Send)?;
                let (parts, body) = resp.into_parts();
                let body = Limited::new(body, MAX_BODY).collect().await.map_err(|e| {
                    Failure::Body(ClientError::Transport(format!("reading the KBS response: {}", chain(&*e))))
                })?;
                Ok((parts, body.to_bytes()))
            };
            tokio::pin!(work);
            loop {
                tokio::select! {
                    biased;
                    r = &mut work => break r,
                    ended = driver.as_mut(), if driving => {
                        // Closed by the KBS (or failed): the request's future now completes
                        // or fails on its own.
                        driving = false;
                        if let Err(e) = ended {
                            tracing::debug!(error = %e, "KBS connection ended");
                        }
                    }
                }
            }
        };
        let alive = driving && !sender.is_closed();
        (result, alive)
    }
}

impl std::fmt::Debug for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transport").field("host", &self.host).field("port", &self.port).finish_non_exhaustive()
    }
}

fn config(e: impl std::fmt::Display) -> ClientError {
    ClientError::Config(e.to_string())
}

/// The error and its causes on one line.
pub(crate) fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(x) = src {
        s.push_str(": ");
        s.push_str(&x.to_string());
        src = x.source();
    }
    s
}

fn transport(e: impl std::error::Error) -> ClientError {
    ClientError::Transport(chain(&e))
}

impl Transport {
    /// The transport for the KBS at `url` (`https://host[:port][/prefix]`, or `http://` with
    /// [`TrustMode::PlainHttpOnly`] only: a certificate or CA is never silently dropped).
    pub(crate) fn new(url: &str, trust: &TrustMode, timeout: Duration) -> Result<Self, ClientError> {
        let uri: Uri = url.parse().map_err(|e| config(format!("KBS URL {url:?}: {e}")))?;
        let https = match uri.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            _ => return Err(config(format!("KBS URL {url:?} must be http:// or https://"))),
        };
        let authority = uri.authority().ok_or_else(|| config(format!("KBS URL {url:?} has no host")))?;
        if authority.as_str().contains('@') {
            return Err(config(format!("KBS URL {url:?} must not carry credentials")));
        }
        if uri.query().is_some() {
            return Err(config(format!("KBS URL {url:?} must not have a query")));
        }
        let host = authority.host().trim_start_matches('[').trim_end_matches(']').to_owned();
        let port = authority.port_u16().unwrap_or(if https { 443 } else { 80 });
        let prefix = uri.path().trim_end_matches('/').to_owned();
        let tls = match (https, trust) {
            (false, TrustMode::PlainHttpOnly) => None,
            (false, _) => {
                return Err(config(format!(
                    "a KBS certificate or CA is configured but {url:?} is plain http: refusing to drop TLS"
                )));
            }
            (true, TrustMode::PlainHttpOnly) => return Err(config("https needs a pinned certificate or a CA")),
            (true, TrustMode::Pinned(fp)) => Some(crate::tls::config_pinned(*fp).map_err(config)?),
            (true, TrustMode::Ca(ders)) => {
                Some(crate::tls::config_ca(ders.iter().map(|d| d.clone().into()).collect()).map_err(config)?)
            }
        };
        let tls = match tls {
            None => None,
            Some(mut cfg) => {
                cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
                let name = ServerName::try_from(host.clone()).map_err(|e| config(format!("KBS host {host:?}: {e}")))?;
                Some((tokio_rustls::TlsConnector::from(Arc::new(cfg)), name))
            }
        };
        Ok(Self {
            authority: HeaderValue::from_str(authority.as_str()).map_err(config)?,
            host,
            port,
            prefix,
            tls,
            timeout,
            idle: Mutex::new(Vec::new()),
        })
    }

    async fn connect(&self) -> Result<Conn, ClientError> {
        let tcp = TcpStream::connect((self.host.as_str(), self.port)).await.map_err(transport)?;
        // Requests are small and answered at once: no Nagle delay on the second segment.
        tcp.set_nodelay(true).map_err(transport)?;
        let stream: Stream = match &self.tls {
            None => Box::new(tcp),
            Some((connector, name)) => Box::new(connector.connect(name.clone(), tcp).await.map_err(transport)?),
        };
        let (sender, driver) = http1::handshake(TokioIo::new(stream)).await.map_err(transport)?;
        Ok(Conn { sender, driver: Box::pin(driver) })
    }

    /// An idle connection, or a new one; the flag says whether it was kept from before.
    async fn checkout(&self) -> Result<(Conn, bool), ClientError> {
        let kept = self.idle.lock().unwrap_or_else(PoisonError::into_inner).pop();
        match kept {
            Some(c) => Ok((c, true)),
            None => self.connect().await.map(|c| (c, false)),
        }
    }

    fn checkin(&self, conn: Conn) {
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        if idle.len() < MAX_IDLE {
            idle.push(conn);
        }
    }

    /// One request to `path` (below the base URL), its response read to the end. A kept-alive
    /// connection the KBS closed meanwhile is replaced once, transparently.
    pub(crate) async fn send(
        &self,
        method: Method,
        path: &str,
        header: Option<(HeaderName, &str)>,
        body: Option<Body>,
        cookie: Option<&str>,
    ) -> Result<Reply, ClientError> {
        let uri = format!("{}{path}", self.prefix);
        let content_type = body.as_ref().map(|b| b.content_type);
        let body = body.map(|b| Bytes::from(b.bytes)).unwrap_or_default();
        let exchange = async {
            let (mut conn, mut reused) = self.checkout().await?;
            loop {
                let mut req = Request::builder().method(method.clone()).uri(uri.as_str()).header(HOST, &self.authority);
                if let Some((name, value)) = &header {
                    req = req.header(name, *value);
                }
                if let Some(t) = content_type {
                    req = req.header(CONTENT_TYPE, HeaderValue::from_static(t));
                }
                let req = req
                    .body(Full::new(body.clone()))
                    .map_err(|e| ClientError::Config(format!("request to {uri}: {e}")))?;
                let (parts, body) = match conn.exchange(req).await {
                    (Ok(r), alive) => {
                        if alive {
                            self.checkin(conn);
                        }
                        r
                    }
                    // The request never reached a live connection (the KBS had closed it
                    // while idle): once more on a fresh one.
                    (Err(Failure::Send(e)), _)
                        if reused && (e.is_canceled() || e.is_closed() || e.is_incomplete_message()) =>
                    {
                        tracing::debug!(error = %e, "kept-alive KBS connection was closed; reconnecting");
                        conn = self.connect().await?;
                        reused = false;
                        continue;
                    }
                    (Err(Failure::Send(e)), _) => return Err(transport(e)),
                    (Err(Failure::Body(e)), _) => return Err(e),
                };
                let cookie = cookie.and_then(|name| {
                    parts.headers.get_all(SET_COOKIE).iter().filter_map(|v| v.to_str().ok()).find_map(|v| {
                        let kv = v.split(';').next()?.trim();
                        (kv.split_once('=')?.0 == name).then(|| kv.to_owned())
                    })
                });
                return Ok(Reply { status: parts.status, cookie, body });
            }
        };
        match tokio::time::timeout(self.timeout, exchange).await {
            Ok(r) => r,
            Err(_) => Err(ClientError::Transport(format!("no answer from the KBS within {:?}", self.timeout))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    /// Reads one request head (these tests send no bodies).
    async fn read_head(s: &mut TcpStream) -> Option<String> {
        let mut buf = Vec::new();
        let mut byte = [0u8; 1];
        while !buf.ends_with(b"\r\n\r\n") {
            if s.read(&mut byte).await.ok()? == 0 {
                return None;
            }
            buf.push(byte[0]);
        }
        String::from_utf8(buf).ok()
    }

    /// A server answering `answers[i]` to the i-th request on each connection and then closing
    /// that connection; returns its URL and the number of connections it accepted.
    async fn server(answers: &'static [&'static str]) -> (String, Arc<std::sync::atomic::AtomicUsize>) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", l.local_addr().unwrap());
        let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let count = accepted.clone();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                tokio::spawn(async move {
                    for a in answers {
                        if read_head(&mut s).await.is_none() {
                            return;
                        }
                        s.write_all(a.as_bytes()).await.unwrap();
                    }
                });
            }
        });
        (url, accepted)
    }

    const OK: &str = "HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";

    fn plain(url: &str) -> Transport {
        Transport::new(url, &TrustMode::PlainHttpOnly, Duration::from_secs(5)).unwrap()
    }

    #[tokio::test]
    async fn a_connection_is_kept_and_reused() {
        let (url, accepted) = server(&[OK, OK, OK]).await;
        let t = plain(&url);
        for _ in 0..3 {
            let r = t.send(Method::GET, "/x", None, None, None).await.unwrap();
            assert_eq!((r.status, &r.body[..]), (StatusCode::OK, &b"ok"[..]));
        }
        assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_kept_connection_the_server_closed_is_replaced_transparently() {
        // Each connection answers once and is then closed by the server while idle.
        let (url, accepted) = server(&[OK]).await;
        let t = plain(&url);
        for _ in 0..3 {
            let r = t.send(Method::GET, "/x", None, None, None).await.unwrap();
            assert_eq!(&r.body[..], b"ok");
        }
        assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn a_connection_closed_by_the_answer_is_not_kept() {
        const CLOSE: &str = "HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 2\r\n\r\nok";
        let (url, accepted) = server(&[CLOSE, OK]).await;
        let t = plain(&url);
        for _ in 0..2 {
            assert_eq!(&t.send(Method::GET, "/x", None, None, None).await.unwrap().body[..], b"ok");
        }
        assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn garbage_and_truncated_answers_are_transport_errors() {
        for answer in [
            &["garbage\r\n\r\n"][..],
            &["HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nshort"][..],
            &["HTTP/1.1 200 OK\r\ncontent-length: 999999999999\r\n\r\n"][..],
        ] {
            let answer: &'static [&'static str] = Box::leak(answer.to_vec().into_boxed_slice());
            let (url, _) = server(answer).await;
            match plain(&url).send(Method::GET, "/x", None, None, None).await {
                Err(ClientError::Transport(_)) => {}
                Err(e) => panic!("{answer:?}: {e}"),
                Ok(r) => panic!("{answer:?}: answered {}", r.status),
            }
        }
    }

    #[test]
    fn urls_are_parsed_once_and_strictly() {
        let t = Transport::new("http://127.0.0.1:8080/", &TrustMode::PlainHttpOnly, Duration::from_secs(1)).unwrap();
        assert_eq!((t.host.as_str(), t.port, t.prefix.as_str()), ("127.0.0.1", 8080, ""));
        let t = Transport::new("http://[::1]/kbs-front", &TrustMode::PlainHttpOnly, Duration::from_secs(1)).unwrap();
        assert_eq!((t.host.as_str(), t.port, t.prefix.as_str()), ("::1", 80, "/kbs-front"));
        assert_eq!(t.authority, "[::1]");
        let t = Transport::new("https://kbs.example", &TrustMode::Pinned([7; 32]), Duration::from_secs(1)).unwrap();
        assert_eq!((t.host.as_str(), t.port), ("kbs.example", 443));
        assert!(t.tls.is_some());
        for (url, trust, why) in [
            ("https://kbs.example", TrustMode::PlainHttpOnly, "https needs"),
            ("http://kbs.example", TrustMode::Pinned([7; 32]), "refusing to drop TLS"),
            ("http://kbs.example", TrustMode::Ca(Vec::new()), "refusing to drop TLS"),
            ("ftp://kbs.example", TrustMode::PlainHttpOnly, "must be http"),
            ("kbs.example:8080", TrustMode::PlainHttpOnly, "must be http"),
            ("http://user:pw@kbs.example", TrustMode::PlainHttpOnly, "credentials"),
            ("http://kbs.example/?a=b", TrustMode::PlainHttpOnly, "query"),
        ] {
            let e = Transport::new(url, &trust, Duration::from_secs(1)).unwrap_err();
            assert!(matches!(&e, ClientError::Config(m) if m.contains(why)), "{url}: {e}");
        }
    }
}
