//! Where the agent listens: a UNIX socket (tests, development), an AF_VSOCK port (Kata's
//! default, port 1024), or a virtio-serial port (`/dev/vportNpM`, the fastest channel on the
//! project's machines). A serial port is one byte stream with no connections: the agent serves
//! it, and when the host side goes away (end of stream or an error) reopens it and serves again.
//! A serial device that is a terminal (`/dev/ttyS1`, a pty) is put in raw mode first.

#![forbid(unsafe_code)]

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::PathBuf;
use std::pin::Pin;
use std::str::FromStr;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::server::{Handler, serve_connection, serve_unix};
use crate::sys;

/// A listening address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Listen {
    /// `unix:PATH`.
    Unix(PathBuf),
    /// `vsock:PORT`.
    Vsock(u32),
    /// `serial:PATH` (a virtio-serial port device).
    Serial(PathBuf),
}

impl FromStr for Listen {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if let Some(p) = s.strip_prefix("unix:") {
            if p.is_empty() {
                return Err("unix: needs a path".into());
            }
            Ok(Listen::Unix(PathBuf::from(p)))
        } else if let Some(p) = s.strip_prefix("vsock:") {
            let port = p.rsplit(':').next().unwrap_or(p);
            port.parse().map(Listen::Vsock).map_err(|_| format!("bad vsock port {p:?}"))
        } else if let Some(p) = s.strip_prefix("serial:") {
            if p.is_empty() {
                return Err("serial: needs a device path".into());
            }
            Ok(Listen::Serial(PathBuf::from(p)))
        } else {
            Err(format!("{s:?}: expected unix:PATH, vsock:PORT or serial:DEVICE"))
        }
    }
}

/// A non-blocking file descriptor (stream socket or character device) as a tokio stream.
#[derive(Debug)]
pub struct FdStream(AsyncFd<OwnedFd>);

impl FdStream {
    /// Wraps `fd`, which must be in non-blocking mode.
    pub fn new(fd: OwnedFd) -> io::Result<Self> {
        Ok(FdStream(sys::async_fd(fd)?))
    }
}

impl AsyncRead for FdStream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        loop {
            let mut guard = ready!(self.0.poll_read_ready(cx))?;
            let unfilled = buf.initialize_unfilled();
            match guard.try_io(|fd| rustix::io::read(fd.get_ref().as_fd(), &mut *unfilled).map_err(io::Error::from)) {
                Ok(Ok(n)) => {
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
                Ok(Err(e)) => return Poll::Ready(Err(e)),
                Err(_would_block) => continue,
            }
        }
    }
}

impl AsyncWrite for FdStream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        loop {
            let mut guard = ready!(self.0.poll_write_ready(cx))?;
            match guard.try_io(|fd| rustix::io::write(fd.get_ref().as_fd(), data).map_err(io::Error::from)) {
                Ok(r) => return Poll::Ready(r),
                Err(_would_block) => continue,
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// Puts a terminal in raw mode (no echo, no line editing, 8-bit clean); other devices as they are.
fn raw_if_tty(fd: OwnedFd) -> io::Result<OwnedFd> {
    if rustix::termios::isatty(&fd) {
        let mut t = rustix::termios::tcgetattr(&fd)?;
        t.make_raw();
        rustix::termios::tcsetattr(&fd, rustix::termios::OptionalActions::Now, &t)?;
    }
    Ok(fd)
}

/// Serves `handler` on `listen` until an unrecoverable error.
pub async fn serve<H: Handler>(handler: Arc<H>, listen: &Listen) -> io::Result<()> {
    match listen {
        Listen::Unix(path) => {
            match std::fs::remove_file(path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
            let l = tokio::net::UnixListener::bind(path)?;
            tracing::info!(path = %path.display(), "listening on a UNIX socket");
            serve_unix(handler, l).await
        }
        Listen::Vsock(port) => {
            let l = sys::async_fd(sys::vsock_listen(*port)?)?;
            tracing::info!(port, "listening on vsock");
            loop {
                let mut guard = l.readable().await?;
                match guard.try_io(|fd| sys::vsock_accept(fd.get_ref())) {
                    Ok(Ok(conn)) => {
                        tracing::info!("host connected over vsock");
                        tokio::spawn(serve_connection(handler.clone(), FdStream::new(conn)?));
                    }
                    Ok(Err(e)) => tracing::warn!(error = %e, "vsock accept failed"),
                    Err(_would_block) => {}
                }
            }
        }
        Listen::Serial(path) => {
            // With no host on the other end a virtio-serial read returns end of stream at once, so
            // the port is reopened every 200 ms until the host connects: only the first open is
            // worth an info line.
            let mut announced = false;
            loop {
                let file = std::fs::OpenOptions::new()
                    .read(true)
                    .write(true)
                    .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY | libc::O_CLOEXEC)
                    .open(path);
                match file.map(OwnedFd::from).and_then(raw_if_tty).and_then(FdStream::new) {
                    Ok(stream) => {
                        if announced {
                            tracing::debug!(path = %path.display(), "serving the serial port");
                        } else {
                            tracing::info!(path = %path.display(), "serving the serial port");
                            announced = true;
                        }
                        serve_connection(handler.clone(), stream).await;
                        tracing::debug!(path = %path.display(), "serial port closed; reopening");
                    }
                    Err(e) => tracing::warn!(path = %path.display(), error = %e, "cannot open the serial port"),
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::ttrpc::{Code, Status};

    struct Echo;

    impl Handler for Echo {
        fn service(&self) -> &str {
            crate::proto::SERVICE
        }

        async fn handle(&self, method: String, payload: Vec<u8>) -> Result<Vec<u8>, Status> {
            match method.as_str() {
                "Echo" => Ok(payload),
                _ => Err(Status::new(Code::Unimplemented, method)),
            }
        }
    }

    /// The raw-fd stream (used for vsock connections and serial ports) carries ttRPC both ways.
    #[tokio::test]
    async fn fd_stream_serves_ttrpc() {
        let (agent_end, host_end) = std::os::unix::net::UnixStream::pair().unwrap();
        agent_end.set_nonblocking(true).unwrap();
        host_end.set_nonblocking(true).unwrap();
        let stream = FdStream::new(OwnedFd::from(agent_end)).unwrap();
        let server = tokio::spawn(serve_connection(Arc::new(Echo), stream));
        let client = crate::AgentClient::new(tokio::net::UnixStream::from_std(host_end).unwrap());
        let req = crate::proto::ReadStreamResponse { data: vec![42; 100_000] };
        let back: crate::proto::ReadStreamResponse = client.call("Echo", &req).await.unwrap();
        assert_eq!(back, req);
        let e = client.call::<_, crate::proto::Empty>("Nope", &crate::proto::Empty {}).await.unwrap_err();
        assert_eq!(e.code(), Some(Code::Unimplemented.as_i32()));
        drop(client);
        tokio::time::timeout(Duration::from_secs(5), server).await.unwrap().unwrap();
    }

    #[test]
    fn addresses() {
        assert_eq!("unix:/run/a.sock".parse(), Ok(Listen::Unix("/run/a.sock".into())));
        assert_eq!("vsock:1024".parse(), Ok(Listen::Vsock(1024)));
        assert_eq!("vsock:-1:1024".parse(), Ok(Listen::Vsock(1024)));
        assert_eq!("serial:/dev/vport1p1".parse(), Ok(Listen::Serial("/dev/vport1p1".into())));
        for bad in ["", "unix:", "tcp:1", "vsock:x", "serial:"] {
            assert!(bad.parse::<Listen>().is_err(), "{bad}");
        }
    }
}
