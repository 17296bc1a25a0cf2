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

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use http::header::{CONTENT_TYPE, HOST, HeaderName, HeaderValue, SET_COOKIE};
use http::{Method, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full, Limited};
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
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
    idle: Mutex<Vec<SendRequest<Full<Bytes>>>>,
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

    async fn connect(&self) -> Result<SendRequest<Full<Bytes>>, ClientError> {
        let tcp = TcpStream::connect((self.host.as_str(), self.port)).await.map_err(transport)?;
        // Requests are small and answered at once: no Nagle delay on the second segment.
        tcp.set_nodelay(true).map_err(transport)?;
        let sender = match &self.tls {
            None => {
                let (sender, conn) = http1::handshake(TokioIo::new(tcp)).await.map_err(transport)?;
                tokio::spawn(async move {
                    if let Err(e) = conn.await {
                        tracing::debug!(error = %e, "KBS connection ended");
                    }
                });
                sender
            }
            Some((connector, name)) => {
                let tls = connector.connect(name.clone(), tcp).await.map_err(transport)?;
                let (sender, conn) = http1::handshake(TokioIo::new(tls)).await.map_err(transport)?;
                tokio::spawn(async move {
                    if let Err(e) = conn.await {
                        tracing::debug!(error = %e, "KBS connection ended");
                    }
                });
                sender
            }
        };
        Ok(sender)
    }

    /// An idle connection, or a new one; the flag says whether it was kept from before.
    async fn checkout(&self) -> Result<(SendRequest<Full<Bytes>>, bool), ClientError> {
        loop {
            let kept = self.idle.lock().unwrap_or_else(PoisonError::into_inner).pop();
            match kept {
                Some(s) if s.is_closed() => continue,
                Some(s) => return Ok((s, true)),
                None => return self.connect().await.map(|s| (s, false)),
            }
        }
    }

    fn checkin(&self, sender: SendRequest<Full<Bytes>>) {
        if sender.is_closed() {
            return;
        }
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        if idle.len() < MAX_IDLE {
            idle.push(sender);
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
            let (mut sender, mut reused) = self.checkout().await?;
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
                let sent = match sender.ready().await {
                    Ok(()) => sender.send_request(req).await,
                    Err(e) => Err(e),
                };
                let resp = match sent {
                    Ok(r) => r,
                    // The request never reached a live connection (the KBS had closed it
                    // while idle): once more on a fresh one.
                    Err(e) if reused && (e.is_canceled() || e.is_closed() || e.is_incomplete_message()) => {
                        tracing::debug!(error = %e, "kept-alive KBS connection was closed; reconnecting");
                        sender = self.connect().await?;
                        reused = false;
                        continue;
                    }
                    Err(e) => return Err(transport(e)),
                };
                let (parts, body) = resp.into_parts();
                let body = Limited::new(body, MAX_BODY)
                    .collect()
                    .await
                    .map_err(|e| ClientError::Transport(format!("reading the KBS response: {}", chain(&*e))))?
                    .to_bytes();
                let cookie = cookie.and_then(|name| {
                    parts.headers.get_all(SET_COOKIE).iter().filter_map(|v| v.to_str().ok()).find_map(|v| {
                        let kv = v.split(';').next()?.trim();
                        (kv.split_once('=')?.0 == name).then(|| kv.to_owned())
                    })
                });
                self.checkin(sender);
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
