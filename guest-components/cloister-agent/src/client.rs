//! The host side: an async ttRPC client for `grpc.AgentService` over any byte stream, with
//! concurrent calls multiplexed by stream id (odd ids, as ttRPC clients use).

#![forbid(unsafe_code)]

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex as StdMutex, PoisonError};
use std::time::Duration;

use prost::Message;
use tokio::io::{AsyncRead, AsyncWrite, WriteHalf};
use tokio::sync::{Mutex, oneshot};
use tokio::task::JoinHandle;

use crate::proto::{self, SERVICE};
use crate::ttrpc::{Code, FrameError, Request, Response, TYPE_REQUEST, TYPE_RESPONSE, decode, read_frame, write_frame};

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The agent answered with an error status.
    #[error("agent returned {} ({code}): {message}", Code::name_of(*code))]
    Status {
        /// The status code (see [`Code`]).
        code: i32,
        /// The message.
        message: String,
    },
    /// The connection is gone.
    #[error("connection to the agent closed")]
    Closed,
    /// The call's deadline passed on the client side.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// A framing or decoding error.
    #[error(transparent)]
    Frame(#[from] FrameError),
}

impl ClientError {
    /// The status code, when the agent answered with one.
    pub fn code(&self) -> Option<i32> {
        match self {
            ClientError::Status { code, .. } => Some(*code),
            _ => None,
        }
    }
}

type Pending = Arc<StdMutex<Option<HashMap<u32, oneshot::Sender<Response>>>>>;

trait Io: AsyncWrite + Send + Unpin {}
impl<T: AsyncWrite + Send + Unpin> Io for T {}

/// A client of the agent.
pub struct AgentClient {
    writer: Mutex<Box<dyn Io>>,
    pending: Pending,
    next_id: AtomicU32,
    reader: JoinHandle<()>,
    timeout: Option<Duration>,
}

impl Drop for AgentClient {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

impl std::fmt::Debug for AgentClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentClient").field("timeout", &self.timeout).finish_non_exhaustive()
    }
}

async fn read_responses<R: AsyncRead + Unpin>(mut r: R, pending: Pending) {
    loop {
        match read_frame(&mut r).await {
            Ok(f) if f.header.kind == TYPE_RESPONSE => {
                let Ok(resp) = decode::<Response>("ttrpc response", &f.payload) else {
                    tracing::warn!(stream_id = f.header.stream_id, "undecodable response");
                    continue;
                };
                let tx = pending
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .as_mut()
                    .and_then(|p| p.remove(&f.header.stream_id));
                if let Some(tx) = tx {
                    let _ = tx.send(resp);
                }
            }
            Ok(_) => {}
            Err(e) if e.is_recoverable() => tracing::warn!(error = %e, "ignoring a frame from the agent"),
            Err(_) => break,
        }
    }
    // Dropping the senders fails every pending call with `Closed`; later calls fail at once.
    pending.lock().unwrap_or_else(PoisonError::into_inner).take();
}

impl AgentClient {
    /// A client over `stream` (e.g. a connected `tokio::net::UnixStream`).
    pub fn new<S: AsyncRead + AsyncWrite + Send + 'static>(stream: S) -> Self {
        let (r, w): (_, WriteHalf<S>) = tokio::io::split(stream);
        let pending: Pending = Arc::new(StdMutex::new(Some(HashMap::new())));
        let reader = tokio::spawn(read_responses(r, pending.clone()));
        AgentClient { writer: Mutex::new(Box::new(w)), pending, next_id: AtomicU32::new(1), reader, timeout: None }
    }

    /// Connects to a UNIX socket.
    pub async fn connect_unix(path: impl AsRef<std::path::Path>) -> std::io::Result<Self> {
        Ok(Self::new(tokio::net::UnixStream::connect(path).await?))
    }

    /// Sets a deadline sent with every call (and enforced locally too); `None` (the default):
    /// none.
    pub fn with_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.timeout = timeout;
        self
    }

    /// Calls `method` of `grpc.AgentService`.
    pub async fn call<Q: Message, P: Message + Default>(&self, method: &str, req: &Q) -> Result<P, ClientError> {
        let id = self.next_id.fetch_add(2, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        match self.pending.lock().unwrap_or_else(PoisonError::into_inner).as_mut() {
            Some(p) => p.insert(id, tx),
            None => return Err(ClientError::Closed),
        };
        let envelope = Request {
            service: SERVICE.to_owned(),
            method: method.to_owned(),
            payload: req.encode_to_vec(),
            timeout_nano: self.timeout.map_or(0, |t| i64::try_from(t.as_nanos()).unwrap_or(i64::MAX)),
            metadata: Vec::new(),
        };
        let sent = {
            let mut w = self.writer.lock().await;
            write_frame(&mut *w, id, TYPE_REQUEST, &envelope.encode_to_vec()).await
        };
        if let Err(e) = sent {
            if let Some(p) = self.pending.lock().unwrap_or_else(PoisonError::into_inner).as_mut() {
                p.remove(&id);
            }
            return Err(e.into());
        }
        let resp = match self.timeout {
            // A little slack so the agent's own DEADLINE_EXCEEDED normally arrives first.
            Some(t) => match tokio::time::timeout(t + Duration::from_millis(500), rx).await {
                Ok(r) => r,
                Err(_) => {
                    if let Some(p) = self.pending.lock().unwrap_or_else(PoisonError::into_inner).as_mut() {
                        p.remove(&id);
                    }
                    return Err(ClientError::Timeout(t));
                }
            },
            None => rx.await,
        }
        .map_err(|_| ClientError::Closed)?;
        match resp.status {
            Some(s) if s.code != Code::Ok.as_i32() => Err(ClientError::Status { code: s.code, message: s.message }),
            _ => Ok(decode("agent response", &resp.payload)?),
        }
    }

    /// `CreateContainer`.
    pub async fn create_container(&self, req: &proto::CreateContainerRequest) -> Result<(), ClientError> {
        self.call::<_, proto::Empty>("CreateContainer", req).await.map(drop)
    }

    /// `StartContainer`.
    pub async fn start_container(&self, container_id: &str) -> Result<(), ClientError> {
        let req = proto::StartContainerRequest { container_id: container_id.to_owned() };
        self.call::<_, proto::Empty>("StartContainer", &req).await.map(drop)
    }

    /// `ExecProcess`.
    pub async fn exec_process(&self, req: &proto::ExecProcessRequest) -> Result<(), ClientError> {
        self.call::<_, proto::Empty>("ExecProcess", req).await.map(drop)
    }

    /// `WaitProcess`: the exit code, or 128 + signal.
    pub async fn wait_process(&self, container_id: &str, exec_id: &str) -> Result<i32, ClientError> {
        let req = proto::WaitProcessRequest { container_id: container_id.to_owned(), exec_id: exec_id.to_owned() };
        Ok(self.call::<_, proto::WaitProcessResponse>("WaitProcess", &req).await?.status)
    }

    /// `SignalProcess` (empty `exec_id`: every process of the container).
    pub async fn signal_process(&self, container_id: &str, exec_id: &str, signal: u32) -> Result<(), ClientError> {
        let req =
            proto::SignalProcessRequest { container_id: container_id.to_owned(), exec_id: exec_id.to_owned(), signal };
        self.call::<_, proto::Empty>("SignalProcess", &req).await.map(drop)
    }

    async fn read_stream(
        &self,
        method: &str,
        container_id: &str,
        exec_id: &str,
        len: u32,
    ) -> Result<Vec<u8>, ClientError> {
        let req = proto::ReadStreamRequest { container_id: container_id.to_owned(), exec_id: exec_id.to_owned(), len };
        Ok(self.call::<_, proto::ReadStreamResponse>(method, &req).await?.data)
    }

    /// `ReadStdout`: up to `len` bytes, waiting for at least one; empty at end of stream.
    pub async fn read_stdout(&self, container_id: &str, exec_id: &str, len: u32) -> Result<Vec<u8>, ClientError> {
        self.read_stream("ReadStdout", container_id, exec_id, len).await
    }

    /// `ReadStderr`: up to `len` bytes, waiting for at least one; empty at end of stream.
    pub async fn read_stderr(&self, container_id: &str, exec_id: &str, len: u32) -> Result<Vec<u8>, ClientError> {
        self.read_stream("ReadStderr", container_id, exec_id, len).await
    }

    /// Reads stdout (`stderr = false`) or stderr to its end, keeping at most `limit` bytes.
    pub async fn read_to_end(
        &self,
        container_id: &str,
        exec_id: &str,
        stderr: bool,
        limit: usize,
    ) -> Result<Vec<u8>, ClientError> {
        let method = if stderr { "ReadStderr" } else { "ReadStdout" };
        let mut out = Vec::new();
        loop {
            let chunk = self.read_stream(method, container_id, exec_id, 64 * 1024).await?;
            if chunk.is_empty() {
                return Ok(out);
            }
            let room = limit.saturating_sub(out.len());
            out.extend_from_slice(&chunk[..chunk.len().min(room)]);
        }
    }

    /// `WriteStdin`: the bytes accepted.
    pub async fn write_stdin(&self, container_id: &str, exec_id: &str, data: &[u8]) -> Result<u32, ClientError> {
        let req = proto::WriteStreamRequest {
            container_id: container_id.to_owned(),
            exec_id: exec_id.to_owned(),
            data: data.to_vec(),
        };
        Ok(self.call::<_, proto::WriteStreamResponse>("WriteStdin", &req).await?.len)
    }

    /// `CloseStdin`.
    pub async fn close_stdin(&self, container_id: &str, exec_id: &str) -> Result<(), ClientError> {
        let req = proto::CloseStdinRequest { container_id: container_id.to_owned(), exec_id: exec_id.to_owned() };
        self.call::<_, proto::Empty>("CloseStdin", &req).await.map(drop)
    }

    /// `RemoveContainer`.
    pub async fn remove_container(&self, container_id: &str, timeout_secs: u32) -> Result<(), ClientError> {
        let req = proto::RemoveContainerRequest { container_id: container_id.to_owned(), timeout: timeout_secs };
        self.call::<_, proto::Empty>("RemoveContainer", &req).await.map(drop)
    }

    /// `StatsContainer`.
    pub async fn stats_container(&self, container_id: &str) -> Result<proto::StatsContainerResponse, ClientError> {
        let req = proto::StatsContainerRequest { container_id: container_id.to_owned() };
        self.call("StatsContainer", &req).await
    }

    /// `GetMetrics`: the agent's metrics (Prometheus text).
    pub async fn get_metrics(&self) -> Result<String, ClientError> {
        self.call::<_, proto::Metrics>("GetMetrics", &proto::GetMetricsRequest {}).await.map(|m| m.metrics)
    }

    /// `DestroySandbox`.
    pub async fn destroy_sandbox(&self) -> Result<(), ClientError> {
        self.call::<_, proto::Empty>("DestroySandbox", &proto::DestroySandboxRequest {}).await.map(drop)
    }
}
