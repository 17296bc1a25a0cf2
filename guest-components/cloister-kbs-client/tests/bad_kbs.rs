//! A KBS that answers garbage: the client fails with a typed error, never panics, and returns
//! no secret.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;

use cloister_kbs_client::{ClientError, ClientOptions, KbsClient, SampleAttester};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Serves `response` (raw HTTP) to every connection.
async fn serve(response: &'static str) -> String {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", l.local_addr().unwrap());
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = l.accept().await else { return };
            tokio::spawn(async move {
                let mut buf = vec![0u8; 65536];
                let _ = s.read(&mut buf).await;
                let _ = s.write_all(response.as_bytes()).await;
                let _ = s.shutdown().await;
            });
        }
    });
    url
}

async fn attempt(response: &'static str) -> ClientError {
    let url = serve(response).await;
    let opts = ClientOptions { handshake_attempts: 1, ..ClientOptions::default() };
    let c = KbsClient::new(&url, Arc::new(SampleAttester), opts).unwrap();
    c.get_resource("a/b/c").await.expect_err("garbage must not yield a secret")
}

#[tokio::test]
async fn garbage_answers_are_typed_errors() {
    // 200 without a session cookie.
    let e = attempt("HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\n{}").await;
    assert!(matches!(e, ClientError::Protocol { what: "auth response", .. }), "{e}");
    // A cookie, then a body that is not a challenge.
    let e = attempt(
        "HTTP/1.1 200 OK\r\nset-cookie: kbs-session-id=ab\r\ncontent-length: 5\r\nconnection: close\r\n\r\nhello",
    )
    .await;
    assert!(matches!(e, ClientError::Protocol { what: "challenge", .. }), "{e}");
    // An error status with a non-JSON body.
    let e = attempt("HTTP/1.1 500 Oops\r\ncontent-length: 4\r\nconnection: close\r\n\r\n\x00\x01\x02\x03").await;
    assert!(matches!(e, ClientError::Refused { status: 500, .. }), "{e}");
    // Not HTTP at all.
    let e = attempt("\x16\x03\x01garbage").await;
    assert!(matches!(e, ClientError::Transport(_)), "{e}");
}
