//! Asks containerd which image a container was created from (`Containers.Get` of containerd's
//! gRPC API over its UNIX socket), for `ctr run IMAGE ID` where no CRI annotation names it.
//! One unary gRPC call over HTTP/2 (h2): no generated client needed for two fields.
//!
//! containerd is on the host, outside the guest's trust boundary: the answer is only the
//! reference the guest is *asked* to pull; the agent policy in the guest decides.

#![forbid(unsafe_code)]

use std::path::Path;
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use prost::Message;

/// Largest response accepted.
const MAX_RESPONSE: usize = 1 << 20;

#[derive(Clone, PartialEq, Message)]
struct GetContainerRequest {
    #[prost(string, tag = "1")]
    id: String,
}

#[derive(Clone, PartialEq, Message)]
struct Container {
    #[prost(string, tag = "1")]
    id: String,
    #[prost(string, tag = "3")]
    image: String,
}

#[derive(Clone, PartialEq, Message)]
struct GetContainerResponse {
    #[prost(message, optional, tag = "1")]
    container: Option<Container>,
}

/// Why the lookup failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LookupError {
    /// Connecting or talking HTTP/2 failed.
    #[error("containerd at {address}: {why}")]
    Transport {
        /// The socket.
        address: String,
        /// Why.
        why: String,
    },
    /// containerd answered with an error status.
    #[error("containerd: {message} (gRPC status {code})")]
    Status {
        /// gRPC status code.
        code: u32,
        /// Message.
        message: String,
    },
    /// The answer is malformed.
    #[error("containerd answered a malformed message: {0}")]
    Malformed(String),
}

/// The image of container `id` in `namespace`, from containerd at `address` (`unix://` prefix
/// optional). `Ok(None)` when the container has no image (e.g. `ctr run --rootfs`).
pub async fn container_image(
    address: &str,
    namespace: &str,
    id: &str,
    timeout: Duration,
) -> Result<Option<String>, LookupError> {
    tokio::time::timeout(timeout, lookup(address, namespace, id)).await.map_err(|_| LookupError::Transport {
        address: address.to_owned(),
        why: format!("no answer within {timeout:?}"),
    })?
}

async fn lookup(address: &str, namespace: &str, id: &str) -> Result<Option<String>, LookupError> {
    let path = address.strip_prefix("unix://").unwrap_or(address);
    let transport = |why: String| LookupError::Transport { address: path.to_owned(), why };
    let io = tokio::net::UnixStream::connect(Path::new(path)).await.map_err(|e| transport(e.to_string()))?;
    let (mut client, connection) = h2::client::handshake(io).await.map_err(|e| transport(e.to_string()))?;
    let driver = tokio::spawn(async move {
        let _ = connection.await;
    });
    let result = async {
        let req = http::Request::builder()
            .method("POST")
            .uri("http://containerd/containerd.services.containers.v1.Containers/Get")
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .header("containerd-namespace", namespace)
            .body(())
            .map_err(|e| transport(e.to_string()))?;
        let (response, mut send) = client.send_request(req, false).map_err(|e| transport(e.to_string()))?;
        let msg = GetContainerRequest { id: id.to_owned() }.encode_to_vec();
        let mut frame = BytesMut::with_capacity(5 + msg.len());
        frame.put_u8(0);
        frame.put_u32(u32::try_from(msg.len()).map_err(|_| transport("request too large".into()))?);
        frame.put_slice(&msg);
        send.send_data(frame.freeze(), true).map_err(|e| transport(e.to_string()))?;
        let response = response.await.map_err(|e| transport(e.to_string()))?;
        let (head, mut body) = response.into_parts();
        if head.status != http::StatusCode::OK {
            return Err(transport(format!("HTTP status {}", head.status)));
        }
        // A trailers-only response carries the status in the headers.
        if let Some(status) = grpc_status(&head.headers) {
            return Err(status);
        }
        let mut data = BytesMut::new();
        while let Some(chunk) = body.data().await {
            let chunk: Bytes = chunk.map_err(|e| transport(e.to_string()))?;
            let _ = body.flow_control().release_capacity(chunk.len());
            if data.len() + chunk.len() > MAX_RESPONSE {
                return Err(LookupError::Malformed("response too large".into()));
            }
            data.extend_from_slice(&chunk);
        }
        if let Some(trailers) = body.trailers().await.map_err(|e| transport(e.to_string()))?
            && let Some(status) = grpc_status(&trailers)
        {
            return Err(status);
        }
        let mut data = data.freeze();
        if data.len() < 5 {
            return Err(LookupError::Malformed(format!("{}-byte message", data.len())));
        }
        let compressed = data.get_u8();
        let len = data.get_u32() as usize;
        if compressed != 0 || len != data.len() {
            return Err(LookupError::Malformed("unexpected gRPC framing".into()));
        }
        let resp = GetContainerResponse::decode(data).map_err(|e| LookupError::Malformed(e.to_string()))?;
        let image = resp.container.map(|c| c.image).unwrap_or_default();
        Ok((!image.is_empty()).then_some(image))
    }
    .await;
    driver.abort();
    result
}

/// The error a `grpc-status` header or trailer carries (none for status 0).
fn grpc_status(h: &http::HeaderMap) -> Option<LookupError> {
    let code: u32 = h.get("grpc-status")?.to_str().ok()?.parse().ok()?;
    if code == 0 {
        return None;
    }
    let message = h.get("grpc-message").and_then(|m| m.to_str().ok()).map(percent_decode).unwrap_or_default();
    Some(LookupError::Status { code, message })
}

/// gRPC messages are percent-encoded.
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && i + 2 < b.len()
            && let Some(v) = std::str::from_utf8(&b[i + 1..i + 3]).ok().and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(v);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn decodes_messages() {
        assert_eq!(percent_decode("container%20%22x%22%3A not found"), "container \"x\": not found");
        assert_eq!(percent_decode("100%"), "100%");
        let mut h = http::HeaderMap::new();
        h.insert("grpc-status", "5".parse().unwrap());
        h.insert("grpc-message", "not%20found".parse().unwrap());
        let e = grpc_status(&h).unwrap();
        assert_eq!(e.to_string(), "containerd: not found (gRPC status 5)");
        h.insert("grpc-status", "0".parse().unwrap());
        assert!(grpc_status(&h).is_none());
    }

    #[tokio::test]
    async fn missing_socket_is_a_transport_error() {
        let e = container_image("unix:///nonexistent/containerd.sock", "default", "x", Duration::from_secs(2))
            .await
            .unwrap_err();
        assert!(matches!(e, LookupError::Transport { .. }), "{e}");
    }
}
