//! The accept loop: `tether serve`'s own, in place of `axum::serve`, so that no kind of
//! client (slow, idle or greedy) can take the server off the air for the others.
//!
//! - **A cap on open connections** (`--max-connections`; by default the open-file limit
//!   less a reserve for the database and logs). At the cap, the connection idle longest
//!   (no request in progress: waiting between requests or still sending its headers) is
//!   closed to make room, so that a new client — a health check, a phone — gets in at
//!   once. Only when every connection is busy does a new one wait in the kernel's queue.
//!   A failed accept (out of file descriptors) closes the idlest connection too.
//! - **A header-read timeout** (`--header-timeout-secs`): a request's headers must
//!   arrive whole within it of their first byte (or of the connection's opening).
//! - **An idle keep-alive timeout** (`--idle-timeout-secs`): a connection with no
//!   request in progress is closed after it; so is one whose client stops reading its
//!   answer (no byte written for as long). A slow client that keeps reading keeps going.
//! - **Request bodies** are metered by `bodies`: a budget of bytes in flight across all
//!   requests, and a minimum rate.
//!
//! Each connection is served by hyper's HTTP/1 over any `AsyncRead + AsyncWrite` stream:
//! with TLS (`tls`), each connection's task handshakes first (under the header timeout,
//! holding its slot) and hands the TLS stream to [`connection`], so the idle and header
//! timeouts and the cap hold alike. Every request carries the socket's peer
//! address as a [`PeerAddr`] extension.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::http::Request;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tower::ServiceExt;

use crate::bodies::{self, Budget};

/// File descriptors kept back from the connection cap: the database, its WAL and
/// shared-memory files, the key file, the listeners, logs, the blocking pool's files.
pub const RESERVED_FDS: usize = 64;
/// The default cap when the open-file limit is unknown or very high.
pub const MAX_DEFAULT_CONNECTIONS: usize = 4096;
/// The most a connection may buffer of a request's headers (and of a body, per read):
/// 64 KiB, not hyper's 400 KiB, so that many slow connections cannot hold much memory.
const MAX_BUF_BYTES: usize = 64 * 1024;
/// How long `serve` waits, after a shutdown signal, for requests in progress.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

/// The edges' limits.
#[derive(Clone, Debug)]
pub struct Limits {
    pub max_connections: usize,
    pub header_timeout: Duration,
    pub idle_timeout: Duration,
    pub bodies: bodies::Limits,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_connections: default_max_connections(),
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            bodies: bodies::Limits::default(),
        }
    }
}

/// The open-file limit less [`RESERVED_FDS`], at least 16 and at most
/// [`MAX_DEFAULT_CONNECTIONS`]: a server at `ulimit -n 1024` takes 960 connections and
/// never runs out of descriptors for its own files.
pub fn default_max_connections() -> usize {
    let soft = open_file_limit().unwrap_or(1024);
    soft.saturating_sub(RESERVED_FDS as u64).clamp(16, MAX_DEFAULT_CONNECTIONS as u64) as usize
}

#[cfg(unix)]
fn open_file_limit() -> Option<u64> {
    // No soft limit (`None`, RLIM_INFINITY) is the most there can be.
    Some(rustix::process::getrlimit(rustix::process::Resource::Nofile).current.unwrap_or(u64::MAX))
}

#[cfg(not(unix))]
fn open_file_limit() -> Option<u64> {
    None
}

/// The socket's peer address of the connection a request came on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PeerAddr(pub SocketAddr);

/// Milliseconds since the server started, for the connections' clocks.
#[derive(Clone, Copy, Debug)]
struct Epoch(Instant);

impl Epoch {
    fn now(self) -> u64 {
        self.0.elapsed().as_millis() as u64
    }
}

/// What the accept loop knows of one open connection.
#[derive(Debug)]
struct Tracked {
    /// Requests being answered on it now.
    in_flight: AtomicUsize,
    /// When it last had no request in progress (ms since the epoch): opened, or answered.
    idle_since: AtomicU64,
    /// When the first byte after `idle_since` arrived (ms + 1, so 0 means none yet).
    first_byte: AtomicU64,
    /// Requests answered on it.
    served: AtomicU64,
    /// Its answer is being sent (the handler has answered; the body is being written).
    sending: AtomicBool,
    /// When bytes were last written to it (ms since the epoch).
    last_write: AtomicU64,
    /// Told to close (to make room for a new connection).
    evict: tokio::sync::Notify,
}

impl Tracked {
    fn new(now: u64) -> Self {
        Self {
            in_flight: AtomicUsize::new(0),
            idle_since: AtomicU64::new(now),
            first_byte: AtomicU64::new(0),
            served: AtomicU64::new(0),
            sending: AtomicBool::new(false),
            last_write: AtomicU64::new(now),
            evict: tokio::sync::Notify::new(),
        }
    }

    fn idle(&self) -> bool {
        self.in_flight.load(Ordering::SeqCst) == 0
    }

    /// When it must be closed if nothing changes, with why. None while a request is being
    /// answered (the body's deadline is `bodies`', the handler's its own); while the answer
    /// is sent, the client must keep reading it: no byte written for the idle timeout, and
    /// it is closed.
    fn deadline(&self, limits: &Limits) -> Option<(u64, &'static str)> {
        let ms = |d: Duration| d.as_millis() as u64;
        if !self.idle() {
            return self
                .sending
                .load(Ordering::SeqCst)
                .then(|| (self.last_write.load(Ordering::SeqCst) + ms(limits.idle_timeout), "answer not read"));
        }
        match self.first_byte.load(Ordering::SeqCst) {
            0 if self.served.load(Ordering::SeqCst) == 0 => {
                Some((self.idle_since.load(Ordering::SeqCst) + ms(limits.header_timeout), "no request in time"))
            }
            0 => Some((self.idle_since.load(Ordering::SeqCst) + ms(limits.idle_timeout), "idle")),
            first => Some((first - 1 + ms(limits.header_timeout), "headers too slow")),
        }
    }
}

/// The open connections, to find the idlest when room is needed.
#[derive(Debug, Default)]
struct Registry {
    next: AtomicU64,
    open: Mutex<HashMap<u64, Arc<Tracked>>>,
}

impl Registry {
    fn add(&self, tracked: Arc<Tracked>) -> u64 {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        self.open.lock().unwrap_or_else(PoisonError::into_inner).insert(id, tracked);
        id
    }

    fn remove(&self, id: u64) {
        self.open.lock().unwrap_or_else(PoisonError::into_inner).remove(&id);
    }

    /// Tells the connection idle longest to close; false if every one is busy.
    fn evict_idlest(&self) -> bool {
        let open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        let idlest = open
            .values()
            .filter(|t| t.idle())
            .min_by_key(|t| t.idle_since.load(Ordering::SeqCst).max(t.first_byte.load(Ordering::SeqCst)));
        match idlest {
            Some(tracked) => {
                tracked.evict.notify_one();
                true
            }
            None => false,
        }
    }
}

/// Serves `app` on `listener` until `shutdown` resolves, then lets requests in progress
/// finish (for up to 30 seconds) and returns.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: Limits,
    tls: Option<tokio_rustls::TlsAcceptor>,
    shutdown: impl Future<Output = ()> + Send,
) -> std::io::Result<()> {
    let epoch = Epoch(Instant::now());
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let registry = Arc::new(Registry::default());
    let budget = Budget::new(limits.bodies.clone());
    let limits = Arc::new(limits);
    let (stop, stopping) = watch::channel(false);
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of descriptors (EMFILE, ENFILE) or a connection reset before it
                    // was accepted: make room if that is the cause, and go on.
                    if matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE)) {
                        registry.evict_idlest();
                        tracing::warn!(error = %e, "accept failed: out of file descriptors");
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
        };
        let slot = match Arc::clone(&slots).try_acquire_owned() {
            Ok(slot) => slot,
            Err(_) => {
                // At the cap: the idlest connection makes room; if all are busy, this one
                // waits (and so does the queue behind it) for one to finish.
                registry.evict_idlest();
                tokio::select! {
                    () = &mut shutdown => break,
                    slot = Arc::clone(&slots).acquire_owned() => match slot {
                        Ok(slot) => slot,
                        Err(_) => break,
                    },
                }
            }
        };
        let _ = stream.set_nodelay(true);
        let context = Shared {
            app: app.clone(),
            limits: Arc::clone(&limits),
            budget: budget.clone(),
            registry: Arc::clone(&registry),
            epoch,
        };
        match &tls {
            None => drop(tokio::spawn(connection(stream, peer, context, slot, stopping.clone()))),
            Some(acceptor) => {
                // The handshake holds a slot and must finish within the header timeout,
                // so a client that opens TLS and stalls is no better off than one that
                // stalls on plain HTTP.
                let (handshake, stopping) = (acceptor.accept(stream), stopping.clone());
                let timeout = limits.header_timeout;
                drop(tokio::spawn(async move {
                    match tokio::time::timeout(timeout, handshake).await {
                        Ok(Ok(stream)) => connection(stream, peer, context, slot, stopping).await,
                        Ok(Err(e)) => tracing::debug!(error = %e, "TLS handshake failed"),
                        Err(_) => tracing::debug!("TLS handshake timed out"),
                    }
                }));
            }
        }
    }
    drop(listener);
    let _ = stop.send(true);
    // Every connection holds a slot: all slots back means every connection closed.
    let all = u32::try_from(limits.max_connections).unwrap_or(u32::MAX);
    let _ = tokio::time::timeout(SHUTDOWN_GRACE, slots.acquire_many(all)).await;
    Ok(())
}

/// What every connection shares.
#[derive(Clone)]
struct Shared {
    app: Router,
    limits: Arc<Limits>,
    budget: Budget,
    registry: Arc<Registry>,
    epoch: Epoch,
}

/// Serves one connection until it closes, times out, is evicted, or the server stops.
/// `stream` may be a TCP stream or, later, a TLS stream over one.
async fn connection<S>(
    stream: S,
    peer: SocketAddr,
    shared: Shared,
    _slot: OwnedSemaphorePermit,
    mut stopping: watch::Receiver<bool>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let tracked = Arc::new(Tracked::new(shared.epoch.now()));
    let id = shared.registry.add(Arc::clone(&tracked));
    let io = TokioIo::new(Watched { inner: stream, tracked: Arc::clone(&tracked), epoch: shared.epoch });
    let service = {
        let tracked = Arc::clone(&tracked);
        let shared = shared.clone();
        hyper::service::service_fn(move |request: Request<Incoming>| {
            let (tracked, shared) = (Arc::clone(&tracked), shared.clone());
            async move { Ok::<_, Infallible>(answer(request, peer, &tracked, &shared).await) }
        })
    };
    let connection = hyper::server::conn::http1::Builder::new()
        .max_buf_size(MAX_BUF_BYTES)
        .keep_alive(true)
        .serve_connection(io, service);
    tokio::pin!(connection);
    let mut draining = false;
    loop {
        let wait = match tracked.deadline(&shared.limits) {
            Some((at, _)) => Duration::from_millis(at.saturating_sub(shared.epoch.now())),
            // A request is in progress: look again in a while (its end resets the clock).
            None => shared.limits.header_timeout,
        };
        tokio::select! {
            result = connection.as_mut() => {
                if let Err(e) = result {
                    tracing::debug!(error = %e, "connection ended with an error");
                }
                break;
            }
            () = tracked.evict.notified() => {
                tracing::debug!("connection closed to make room");
                break;
            }
            changed = stopping.changed(), if !draining => {
                // Idle connections close now; one answering finishes its request first.
                let _ = changed;
                draining = true;
                connection.as_mut().graceful_shutdown();
            }
            () = tokio::time::sleep(wait) => {
                if let Some((at, why)) = tracked.deadline(&shared.limits)
                    && shared.epoch.now() >= at
                {
                    tracing::debug!(why, "connection closed");
                    break;
                }
            }
        }
    }
    shared.registry.remove(id);
}

/// One request: metered body, the peer's address, the app's answer (or the edges' own,
/// if the body was too slow, too long, or had to wait too long for the budget).
async fn answer(
    request: Request<Incoming>,
    peer: SocketAddr,
    tracked: &Arc<Tracked>,
    shared: &Shared,
) -> axum::response::Response {
    tracked.in_flight.fetch_add(1, Ordering::SeqCst);
    tracked.first_byte.store(0, Ordering::SeqCst);
    // Dropped when the answer has been sent whole, or the request abandoned.
    let done = Done { tracked: Arc::clone(tracked), epoch: shared.epoch };
    let (mut parts, body) = request.into_parts();
    parts.extensions.insert(PeerAddr(peer));
    let response = match shared.budget.meter(parts.uri.path(), body) {
        Ok((body, meter)) => {
            let response = match shared.app.clone().oneshot(Request::from_parts(parts, Body::new(body))).await {
                Ok(response) => response,
                Err(never) => match never {},
            };
            meter.finish(response)
        }
        Err(refusal) => refusal.into_response(),
    };
    tracked.last_write.store(shared.epoch.now(), Ordering::SeqCst);
    tracked.sending.store(true, Ordering::SeqCst);
    response.map(|body| Body::new(Sending { body, _done: done }))
}

/// Marks a request done when its answer has been sent (hyper drops the body after its
/// last frame) or abandoned.
struct Done {
    tracked: Arc<Tracked>,
    epoch: Epoch,
}

impl Drop for Done {
    fn drop(&mut self) {
        self.tracked.served.fetch_add(1, Ordering::SeqCst);
        self.tracked.idle_since.store(self.epoch.now(), Ordering::SeqCst);
        self.tracked.first_byte.store(0, Ordering::SeqCst);
        self.tracked.sending.store(false, Ordering::SeqCst);
        self.tracked.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

/// An answer's body, holding its request's [`Done`] until it is sent.
struct Sending {
    body: Body,
    _done: Done,
}

impl http_body::Body for Sending {
    type Data = axum::body::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

/// A connection's stream, noting when bytes arrive while no request is in progress (the
/// start of the next request's headers).
struct Watched<S> {
    inner: S,
    tracked: Arc<Tracked>,
    epoch: Epoch,
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let result = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before && self.tracked.idle() {
            let now = self.epoch.now() + 1;
            let _ = self.tracked.first_byte.compare_exchange(0, now, Ordering::SeqCst, Ordering::SeqCst);
        }
        result
    }
}

impl<S> Watched<S> {
    /// Notes progress: the client is reading what is written.
    fn wrote(&self, result: &Poll<std::io::Result<usize>>) {
        if let Poll::Ready(Ok(n)) = result
            && *n > 0
        {
            self.tracked.last_write.store(self.epoch.now(), Ordering::SeqCst);
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watched<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.wrote(&result);
        result
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.wrote(&result);
        result
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}
