//! The stand-in's response body: whole, cut off mid-way (truncation fault), or huge and
//! generated lazily (so a "huge" fault costs the stand-in no memory).

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};
use tokio::time::Sleep;

/// Bytes a huge body is made of, one chunk at a time.
static FILLER: [u8; 64 * 1024] = [b' '; 64 * 1024];

/// How long a truncated body waits after its first part, so that part reaches the client.
const TRUNCATE_PAUSE: Duration = Duration::from_millis(50);

/// A response body of the stand-in.
pub(crate) enum StandInBody {
    /// The whole body, sent at once.
    Full(Option<Bytes>),
    /// The first part of a body, then a pause, then an error that aborts the connection.
    Truncated {
        first: Option<Bytes>,
        pause: Option<Pin<Box<Sleep>>>,
    },
    /// `remaining` filler bytes, without a length (chunked).
    Huge { remaining: usize },
}

impl StandInBody {
    /// A complete body.
    pub(crate) fn full(bytes: impl Into<Bytes>) -> Self {
        StandInBody::Full(Some(bytes.into()))
    }

    /// No body.
    pub(crate) fn empty() -> Self {
        StandInBody::Full(None)
    }
}

impl Body for StandInBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        match self.get_mut() {
            StandInBody::Full(data) => Poll::Ready(data.take().map(|d| Ok(Frame::data(d)))),
            StandInBody::Truncated { first, pause } => {
                if let Some(part) = first.take() {
                    return Poll::Ready(Some(Ok(Frame::data(part))));
                }
                let sleep =
                    pause.get_or_insert_with(|| Box::pin(tokio::time::sleep(TRUNCATE_PAUSE)));
                match sleep.as_mut().poll(cx) {
                    Poll::Pending => Poll::Pending,
                    Poll::Ready(()) => Poll::Ready(Some(Err(io::Error::other(
                        "body truncated by an injected fault",
                    )))),
                }
            }
            StandInBody::Huge { remaining } => {
                if *remaining == 0 {
                    return Poll::Ready(None);
                }
                let n = (*remaining).min(FILLER.len());
                *remaining -= n;
                Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(&FILLER[..n])))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            StandInBody::Full(data) => data.is_none(),
            StandInBody::Truncated { .. } => false,
            StandInBody::Huge { remaining } => *remaining == 0,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            StandInBody::Full(Some(data)) => SizeHint::with_exact(data.len() as u64),
            StandInBody::Full(None) => SizeHint::with_exact(0),
            _ => SizeHint::default(),
        }
    }
}
