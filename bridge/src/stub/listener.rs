//! The stand-in's TCP listener, which can be taken down for a while so that connections are
//! refused by the kernel, as when Twinzo or the network in between is down.
//!
//! [`Gate`] owns the `TcpListener` in a slot. Refusing drops it at once (so the very next
//! connect is refused) and closes the connections already open, because a pooled keep-alive
//! connection would otherwise keep working through the outage. A task binds the same address
//! again when the window ends. If another process took the port meanwhile, binding is retried
//! every 100 ms until it succeeds or the stand-in shuts down.

use std::future::{poll_fn, Future};
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::runtime::Handle;
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};
use tracing::{info, warn};

pub(crate) struct Gate {
    addr: SocketAddr,
    shutdown: CancellationToken,
    inner: Mutex<GateInner>,
}

struct GateInner {
    listener: Option<TcpListener>,
    /// The accept loop waiting for a listener to come back.
    waker: Option<Waker>,
    /// Cancelled to close every connection accepted before a refusal.
    connections: CancellationToken,
    /// Bumped by every refusal so a stale re-bind task gives up.
    epoch: u64,
}

impl Gate {
    pub fn new(listener: TcpListener, shutdown: CancellationToken) -> io::Result<Arc<Self>> {
        let addr = listener.local_addr()?;
        Ok(Arc::new(Self {
            addr,
            inner: Mutex::new(GateInner {
                listener: Some(listener),
                waker: None,
                connections: shutdown.child_token(),
                epoch: 0,
            }),
            shutdown,
        }))
    }

    fn lock(&self) -> MutexGuard<'_, GateInner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Drops the listener now and the open connections after `grace` (zero: now, so that
    /// nothing is served during the window); listens again after `window`.
    ///
    /// The grace lets the control endpoint answer before its own connection is closed.
    pub fn refuse_for(self: &Arc<Self>, window: Duration, grace: Duration, runtime: &Handle) {
        let (epoch, open) = {
            let mut inner = self.lock();
            inner.listener = None;
            inner.epoch += 1;
            let open = std::mem::replace(&mut inner.connections, self.shutdown.child_token());
            (inner.epoch, open)
        };
        if grace.is_zero() {
            open.cancel();
        } else {
            runtime.spawn(async move {
                tokio::time::sleep(grace).await;
                open.cancel();
            });
        }
        info!(addr = %self.addr, window_ms = window.as_millis(), "stub refusing connections");

        let gate = Arc::clone(self);
        runtime.spawn(async move {
            tokio::select! {
                () = gate.shutdown.cancelled() => {}
                () = tokio::time::sleep(window) => gate.reopen(epoch).await,
            }
        });
    }

    /// Listens again now if a refusal is in progress.
    pub fn reopen_now(self: &Arc<Self>, runtime: &Handle) {
        let epoch = {
            let mut inner = self.lock();
            if inner.listener.is_some() {
                return;
            }
            inner.epoch += 1;
            inner.epoch
        };
        let gate = Arc::clone(self);
        runtime.spawn(async move { gate.reopen(epoch).await });
    }

    /// Stops listening for good (on shutdown).
    pub fn close(&self) {
        let mut inner = self.lock();
        inner.listener = None;
        inner.connections.cancel();
        inner.epoch += 1;
    }

    async fn reopen(&self, epoch: u64) {
        loop {
            if self.lock().epoch != epoch || self.shutdown.is_cancelled() {
                return;
            }
            match TcpListener::bind(self.addr).await {
                Ok(listener) => {
                    let mut inner = self.lock();
                    if inner.epoch != epoch {
                        return;
                    }
                    inner.listener = Some(listener);
                    if let Some(waker) = inner.waker.take() {
                        waker.wake();
                    }
                    info!(addr = %self.addr, "stub listening again");
                    return;
                }
                Err(err) => {
                    warn!(addr = %self.addr, error = %err, "stub cannot listen again, retrying");
                    tokio::select! {
                        () = self.shutdown.cancelled() => return,
                        () = tokio::time::sleep(Duration::from_millis(100)) => {}
                    }
                }
            }
        }
    }

    fn poll_accept(
        &self,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<(TcpStream, SocketAddr, CancellationToken)>> {
        let mut inner = self.lock();
        let polled = match &inner.listener {
            Some(listener) => listener.poll_accept(cx),
            None => Poll::Pending,
        };
        match polled {
            Poll::Ready(Ok((stream, peer))) => {
                Poll::Ready(Ok((stream, peer, inner.connections.clone())))
            }
            Poll::Ready(Err(err)) => Poll::Ready(Err(err)),
            Poll::Pending => {
                inner.waker = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }
}

/// The listener handed to `axum::serve`.
pub(crate) struct GatedListener(pub Arc<Gate>);

impl axum::serve::Listener for GatedListener {
    type Io = GatedStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            match poll_fn(|cx| self.0.poll_accept(cx)).await {
                Ok((stream, peer, closed)) => return (GatedStream::new(stream, closed), peer),
                Err(err) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    warn!(error = %err, "stub accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        Ok(self.0.addr)
    }
}

/// A connection that fails its reads and writes once its generation is closed, so hyper
/// drops it even while it idles in keep-alive.
pub(crate) struct GatedStream {
    inner: TcpStream,
    closed: Pin<Box<WaitForCancellationFutureOwned>>,
}

impl GatedStream {
    fn new(inner: TcpStream, closed: CancellationToken) -> Self {
        Self {
            inner,
            closed: Box::pin(closed.cancelled_owned()),
        }
    }

    fn poll_closed(&mut self, cx: &mut Context<'_>) -> Option<io::Error> {
        self.closed.as_mut().poll(cx).is_ready().then(|| {
            io::Error::new(
                io::ErrorKind::ConnectionReset,
                "stub is refusing connections",
            )
        })
    }
}

impl AsyncRead for GatedStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if let Some(err) = self.poll_closed(cx) {
            return Poll::Ready(Err(err));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for GatedStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if let Some(err) = self.poll_closed(cx) {
            return Poll::Ready(Err(err));
        }
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        if let Some(err) = self.poll_closed(cx) {
            return Poll::Ready(Err(err));
        }
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
