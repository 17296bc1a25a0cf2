//! Adversaries for bad-input tests: a hostile registry (an HTTP/1.1 server answering from a
//! closure: wrong bodies, errors, hangs) and a proxy in front of a real registry that cuts the
//! first large response mid-way (to exercise resumption).
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// What the hostile registry does with one request.
pub enum Answer {
    /// Status, content type, body.
    Body(u16, &'static str, Vec<u8>),
    /// Accept and never answer.
    Hang,
}

pub struct Hostile {
    pub host: String,
    pub requests: Arc<Mutex<Vec<String>>>,
    _rt: tokio::runtime::Runtime,
}

async fn read_head(s: &mut TcpStream) -> Option<String> {
    let mut buf = Vec::new();
    let mut b = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        if s.read(&mut b).await.ok()? == 0 {
            return None;
        }
        buf.push(b[0]);
        if buf.len() > 64 * 1024 {
            return None;
        }
    }
    Some(String::from_utf8_lossy(&buf).into_owned())
}

impl Hostile {
    pub fn start(answer: impl Fn(&str) -> Answer + Send + Sync + 'static) -> Self {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        let listener = rt.block_on(TcpListener::bind("127.0.0.1:0")).unwrap();
        let host = listener.local_addr().unwrap().to_string();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let answer = Arc::new(answer);
        let reqs = requests.clone();
        rt.spawn(async move {
            loop {
                let Ok((mut s, _)) = listener.accept().await else { return };
                let answer = answer.clone();
                let reqs = reqs.clone();
                tokio::spawn(async move {
                    while let Some(head) = read_head(&mut s).await {
                        let line = head.lines().next().unwrap_or_default().to_owned();
                        let path = line.split_whitespace().nth(1).unwrap_or_default().to_owned();
                        reqs.lock().unwrap().push(line);
                        match answer(&path) {
                            Answer::Hang => {
                                tokio::time::sleep(Duration::from_secs(3600)).await;
                                return;
                            }
                            Answer::Body(status, ct, body) => {
                                let head = format!(
                                    "HTTP/1.1 {status} X\r\nContent-Type: {ct}\r\nContent-Length: {}\r\nDocker-Distribution-Api-Version: registry/2.0\r\n\r\n",
                                    body.len()
                                );
                                if s.write_all(head.as_bytes()).await.is_err() || s.write_all(&body).await.is_err() {
                                    return;
                                }
                            }
                        }
                    }
                });
            }
        });
        Self { host, requests, _rt: rt }
    }
}

/// A TCP proxy to `upstream` that cuts the first connection whose response passes `cut_after`
/// bytes, and records whether a later request asked for a `Range`.
pub struct CuttingProxy {
    pub host: String,
    pub cuts: Arc<AtomicUsize>,
    pub saw_range: Arc<AtomicBool>,
    _rt: tokio::runtime::Runtime,
}

impl CuttingProxy {
    pub fn start(upstream: String, cut_after: usize) -> Self {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        let listener = rt.block_on(TcpListener::bind("127.0.0.1:0")).unwrap();
        let host = listener.local_addr().unwrap().to_string();
        let cuts = Arc::new(AtomicUsize::new(0));
        let saw_range = Arc::new(AtomicBool::new(false));
        let (c2, r2) = (cuts.clone(), saw_range.clone());
        rt.spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else { return };
                let upstream = upstream.clone();
                let (cuts, saw_range) = (c2.clone(), r2.clone());
                tokio::spawn(async move {
                    let Ok(server) = TcpStream::connect(&upstream).await else { return };
                    let (mut cr, mut cw) = client.into_split();
                    let (mut sr, mut sw) = server.into_split();
                    let up = tokio::spawn(async move {
                        let mut buf = vec![0u8; 16 * 1024];
                        loop {
                            let n = match cr.read(&mut buf).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => n,
                            };
                            if String::from_utf8_lossy(&buf[..n]).to_ascii_lowercase().contains("\r\nrange: bytes=") {
                                saw_range.store(true, Ordering::SeqCst);
                            }
                            if sw.write_all(&buf[..n]).await.is_err() {
                                return;
                            }
                        }
                    });
                    let mut buf = vec![0u8; 16 * 1024];
                    let mut sent = 0usize;
                    loop {
                        let n = match sr.read(&mut buf).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => n,
                        };
                        if sent + n > cut_after && cuts.load(Ordering::SeqCst) == 0 {
                            cuts.fetch_add(1, Ordering::SeqCst);
                            let _ = cw.write_all(&buf[..cut_after - sent]).await;
                            break;
                        }
                        sent += n;
                        if cw.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                    up.abort();
                });
            }
        });
        Self { host, cuts, saw_range, _rt: rt }
    }
}
