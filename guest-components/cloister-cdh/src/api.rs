//! The data hub's local API: JSON lines over a unix socket (what workloads and the guest agent
//! call). Requests `{"op":"get-resource","uri":"kbs:///repo/type/tag"}` and
//! `{"op":"unseal","secret":"sealed.…"}`; replies `{"data":"<base64>"}` or
//! `{"error":{"kind":…,"detail":…}}`. One request per line, lines up to [`MAX_LINE`] bytes; the
//! socket's file permissions are the access control (create it 0600 in a private directory).

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

use crate::{Cdh, CdhError};

/// Longest request line.
pub const MAX_LINE: usize = 256 * 1024;

fn error(kind: &str, detail: String) -> Value {
    json!({"error": {"kind": kind, "detail": detail}})
}

fn kind(e: &CdhError) -> &'static str {
    match e {
        CdhError::BadUri(_) => "BadUri",
        CdhError::Kbs(_) => "Kbs",
        CdhError::Malformed(_) => "Malformed",
        CdhError::Signature { .. } => "Signature",
        CdhError::Unsupported(_) => "Unsupported",
    }
}

/// Answers one request line.
pub async fn answer(cdh: &Cdh, line: &str) -> Value {
    let req: Value = match serde_json::from_str(line) {
        Ok(v) => v,
        Err(e) => return error("BadRequest", format!("not JSON: {e}")),
    };
    let arg = |name: &str| req.get(name).and_then(Value::as_str).map(str::to_owned);
    let result = match req.get("op").and_then(Value::as_str) {
        Some("get-resource") => match arg("uri") {
            Some(uri) => cdh.get_resource(&uri).await,
            None => return error("BadRequest", "get-resource needs \"uri\"".into()),
        },
        Some("unseal") => match arg("secret") {
            Some(s) => cdh.unseal_secret(&s).await,
            None => return error("BadRequest", "unseal needs \"secret\"".into()),
        },
        other => return error("BadRequest", format!("unknown op {other:?} (get-resource, unseal)")),
    };
    match result {
        Ok(data) => json!({"data": STANDARD.encode(&data[..])}),
        Err(e) => error(kind(&e), e.to_string()),
    }
}

/// Serves one connection until it closes; an oversized line ends it.
pub async fn serve_connection<S>(cdh: &Cdh, stream: S) -> std::io::Result<()>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let (r, mut w) = tokio::io::split(stream);
    let mut reader = BufReader::new(r);
    loop {
        let mut line = Vec::new();
        let n = (&mut reader).take(MAX_LINE as u64 + 1).read_until(b'\n', &mut line).await?;
        if n == 0 {
            return Ok(());
        }
        if line.len() > MAX_LINE {
            let reply = error("BadRequest", "request line too long".into());
            w.write_all(format!("{reply}\n").as_bytes()).await?;
            return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, "request line too long"));
        }
        let reply = answer(cdh, String::from_utf8_lossy(&line).trim()).await;
        w.write_all(format!("{reply}\n").as_bytes()).await?;
        w.flush().await?;
    }
}
