//! What every listener bounds, so that slow, idle and half-open
//! connections cannot pile up: every connection, on the HTTP and both gRPC
//! ports, must send its first byte within `api.header_read_timeout_ms`
//! (protocol detection and the HTTP/2 preface would otherwise wait for
//! ever); HTTP/1 connections must send a request's complete headers within
//! that time (from connecting, and again after each response); and HTTP/2
//! connections, gRPC's included, are pinged when idle and closed when a
//! ping goes unanswered.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum_server::accept::Accept;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Sleep;

/// A gRPC server whose idle connections are pinged every `timeout` and
/// closed when a ping goes unanswered for as long.
pub fn grpc_server(timeout: Duration) -> tonic::transport::Server {
    tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(timeout))
        .http2_keepalive_timeout(Some(timeout))
}

/// The HTTP server's per-connection limits.
pub fn bound_http(
    builder: &mut hyper_util::server::conn::auto::Builder<hyper_util::rt::TokioExecutor>,
    timeout: Duration,
) {
    builder
        .http1()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(timeout);
    builder
        .http2()
        .timer(hyper_util::rt::TokioTimer::new())
        .keep_alive_interval(timeout)
        .keep_alive_timeout(timeout);
}

/// Wraps what `A` accepts (a TCP stream, or a TLS stream after its
/// handshake) so that a connection sending nothing within the timeout is
/// closed.
#[derive(Debug, Clone)]
pub struct FirstByte<A> {
    pub inner: A,
    pub timeout: Duration,
}

impl<A, I, S> Accept<I, S> for FirstByte<A>
where
    A: Accept<I, S>,
    A::Future: Send + 'static,
    A::Stream: Unpin,
{
    type Stream = FirstRead<A::Stream>;
    type Service = A::Service;
    type Future = Pin<Box<dyn Future<Output = io::Result<(Self::Stream, Self::Service)>> + Send>>;

    fn accept(&self, stream: I, service: S) -> Self::Future {
        let accepted = self.inner.accept(stream, service);
        let timeout = self.timeout;
        Box::pin(async move {
            let (stream, service) = accepted.await?;
            Ok((FirstRead::new(stream, timeout), service))
        })
    }
}

/// A stream whose reads fail with `TimedOut` if its first byte does not
/// arrive before the deadline.
#[derive(Debug)]
pub struct FirstRead<S> {
    inner: S,
    deadline: Option<Pin<Box<Sleep>>>,
}

impl<S> FirstRead<S> {
    pub fn new(inner: S, timeout: Duration) -> FirstRead<S> {
        FirstRead {
            inner,
            deadline: Some(Box::pin(tokio::time::sleep(timeout))),
        }
    }
}

/// A gRPC listener's connections, each closed if it sends nothing within
/// `timeout` (TLS, when configured, is layered on top by tonic).
pub fn grpc_incoming(
    listener: tokio::net::TcpListener,
    timeout: Duration,
) -> impl futures_util::Stream<Item = io::Result<FirstRead<tokio::net::TcpStream>>> {
    use futures_util::StreamExt;
    tokio_stream::wrappers::TcpListenerStream::new(listener)
        .map(move |accepted| accepted.map(|stream| FirstRead::new(stream, timeout)))
}

impl<S: tonic::transport::server::Connected> tonic::transport::server::Connected for FirstRead<S> {
    type ConnectInfo = S::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.inner.connect_info()
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for FirstRead<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before {
                    this.deadline = None;
                }
                Poll::Ready(Ok(()))
            }
            Poll::Pending => {
                let expired = this
                    .deadline
                    .as_mut()
                    .is_some_and(|d| d.as_mut().poll(cx).is_ready());
                if expired {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "the connection sent nothing in time",
                    )));
                }
                Poll::Pending
            }
            other => other,
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for FirstRead<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}
