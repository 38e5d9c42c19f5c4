//! A step's connection, shared between hyper and the request it carries, so that the
//! request can see the step shut its sending side. Go's server cancels a request when its
//! client does that (busybox `nc` does it at the end of its input), and the real proxy
//! then answers 502 instead of forwarding the server's answer.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// How often a connection with unread bytes is looked at again.
const UNREAD_POLL: Duration = Duration::from_millis(10);

/// One TCP connection; hyper reads and writes it, the request handler peeks at it.
#[derive(Clone)]
pub(super) struct SharedStream(Arc<TcpStream>);

impl SharedStream {
    /// Wraps an accepted connection.
    pub(super) fn new(stream: TcpStream) -> Self {
        Self(Arc::new(stream))
    }

    /// Resolves when the client has shut its sending side and hyper has read all it sent;
    /// never on an error.
    pub(super) async fn client_done(&self) {
        let mut byte = [0u8; 1];
        loop {
            match self.0.peek(&mut byte).await {
                Ok(0) => return,
                // Unread bytes (the rest of a body, a next request) keep the socket readable:
                // look again later rather than spin.
                Ok(_) => tokio::time::sleep(UNREAD_POLL).await,
                Err(_) => std::future::pending::<()>().await,
            }
        }
    }
}

impl AsyncRead for SharedStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        loop {
            ready!(self.0.poll_read_ready(cx))?;
            match self.0.try_read(buf.initialize_unfilled()) {
                Ok(n) => {
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
                // Readiness was stale: wait for the next.
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
}

impl AsyncWrite for SharedStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        loop {
            ready!(self.0.poll_write_ready(cx))?;
            match self.0.try_write(buf) {
                Ok(n) => return Poll::Ready(Ok(n)),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    // The socket closes when its last handle drops, which follows hyper's shutdown at once:
    // the handler's handle goes with the connection's service.
    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}
