//! An async ttRPC server over any byte stream: requests are dispatched concurrently (one task
//! per stream id, at most [`MAX_IN_FLIGHT`] per connection) and each response is written back
//! as one frame on the request's stream id.
//!
//! Nothing a peer sends stops the server: an oversized frame is answered `RESOURCE_EXHAUSTED`,
//! an undecodable envelope `INVALID_ARGUMENT`, an unknown service `UNIMPLEMENTED`; frames of
//! other types are ignored. Only a transport error or a frame cut short ends the connection.

#![forbid(unsafe_code)]

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use prost::Message;
use tokio::io::{AsyncRead, AsyncWrite, WriteHalf};
use tokio::sync::{Mutex, Semaphore};
use tokio::task::JoinSet;

use crate::ttrpc::{
    Code, FrameError, MAX_FRAME, Request, Response, Status, TYPE_REQUEST, TYPE_RESPONSE, decode, read_frame,
    write_frame,
};

/// Requests handled at once per connection; further frames wait to be read.
pub const MAX_IN_FLIGHT: usize = 64;

/// What serves the requests of one ttRPC service.
pub trait Handler: Send + Sync + 'static {
    /// The ttRPC service name (`grpc.AgentService`).
    fn service(&self) -> &str;

    /// Handles `method` with its encoded request; returns the encoded response or a status.
    fn handle(&self, method: String, payload: Vec<u8>) -> impl Future<Output = Result<Vec<u8>, Status>> + Send;
}

type Writer<S> = Arc<Mutex<WriteHalf<S>>>;

async fn respond<S: AsyncWrite>(writer: &Writer<S>, stream_id: u32, result: Result<Vec<u8>, Status>) {
    let mut resp = match result {
        Ok(payload) => Response { status: Some(Status::new(Code::Ok, "")), payload },
        Err(status) => Response { status: Some(status), payload: Vec::new() },
    };
    let mut bytes = resp.encode_to_vec();
    if bytes.len() > MAX_FRAME {
        resp = Response {
            status: Some(Status::new(Code::ResourceExhausted, "response larger than the frame limit")),
            payload: Vec::new(),
        };
        bytes = resp.encode_to_vec();
    }
    let mut w = writer.lock().await;
    if let Err(e) = write_frame(&mut *w, stream_id, TYPE_RESPONSE, &bytes).await {
        tracing::debug!(stream_id, error = %e, "could not send a response");
    }
}

async fn dispatch<H: Handler>(handler: Arc<H>, frame_payload: Vec<u8>) -> Result<Vec<u8>, Status> {
    let req: Request =
        decode("ttrpc request", &frame_payload).map_err(|e| Status::new(Code::InvalidArgument, e.to_string()))?;
    if req.service != handler.service() {
        return Err(Status::new(Code::Unimplemented, format!("unknown service {:.100}", req.service)));
    }
    let method = req.method;
    let fut = handler.handle(method.clone(), req.payload);
    if req.timeout_nano > 0 {
        let d = Duration::from_nanos(u64::try_from(req.timeout_nano).unwrap_or(u64::MAX));
        tokio::time::timeout(d, fut)
            .await
            .map_err(|_| Status::new(Code::DeadlineExceeded, format!("{method:.100} exceeded its deadline")))?
    } else {
        fut.await
    }
}

/// Serves one connection until the peer closes it or the transport fails. Requests still
/// running when it ends are cancelled.
pub async fn serve_connection<H, S>(handler: Arc<H>, stream: S)
where
    H: Handler,
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let (mut reader, writer) = tokio::io::split(stream);
    let writer: Writer<S> = Arc::new(Mutex::new(writer));
    let permits = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    let mut tasks = JoinSet::new();
    loop {
        // Reap finished tasks so the set does not grow with the connection's lifetime.
        while tasks.try_join_next().is_some() {}
        let frame = match read_frame(&mut reader).await {
            Ok(f) => f,
            Err(FrameError::Closed) => break,
            Err(FrameError::Oversized { stream_id, kind: TYPE_REQUEST, length }) => {
                tracing::warn!(stream_id, length, "oversized request refused");
                let status =
                    Status::new(Code::ResourceExhausted, format!("request of {length} bytes exceeds {MAX_FRAME}"));
                respond(&writer, stream_id, Err(status)).await;
                continue;
            }
            Err(e) if e.is_recoverable() => {
                tracing::warn!(error = %e, "ignoring a frame");
                continue;
            }
            Err(e) => {
                tracing::warn!(error = %e, "connection ended");
                break;
            }
        };
        if frame.header.kind != TYPE_REQUEST {
            tracing::debug!(kind = frame.header.kind, "ignoring a non-request frame");
            continue;
        }
        let Ok(permit) = permits.clone().acquire_owned().await else { break };
        let (handler, writer) = (handler.clone(), writer.clone());
        let stream_id = frame.header.stream_id;
        tasks.spawn(async move {
            let result = dispatch(handler, frame.payload).await;
            respond(&writer, stream_id, result).await;
            drop(permit);
        });
    }
    tasks.shutdown().await;
}

/// Accepts connections on a UNIX socket forever, one task per connection.
pub async fn serve_unix<H: Handler>(handler: Arc<H>, listener: tokio::net::UnixListener) -> std::io::Result<()> {
    loop {
        let (stream, _) = listener.accept().await?;
        tracing::info!("host connected");
        tokio::spawn(serve_connection(handler.clone(), stream));
    }
}
