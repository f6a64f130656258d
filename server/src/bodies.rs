//! Request bodies at the edge: a budget of bytes in flight across all requests, and a
//! minimum rate, so that large or slow bodies cannot starve the rest.
//!
//! - **The budget** (`--body-bytes-in-flight`, 64 MiB by default) is a semaphore of
//!   bytes. A body takes its whole declared length (`Content-Length`) from it when the
//!   handler first reads it — all or nothing, so that many half-read bodies can never
//!   hold the budget between them and wait for each other for ever — and gives it back
//!   when the request is answered (handlers hold the bytes until then). Requests without
//!   a body, or whose handler never reads it (a 401), take nothing.
//! - **Large bodies** (over [`LARGE_BODY_BYTES`]) also take from a second semaphore of
//!   half the budget (at least one largest body): together they never hold more, so the
//!   small bodies nearly every sync and sign-in sends always find room, however many
//!   31 MiB bodies arrive at once.
//! - **What a route takes**: only `POST /v1/sync` takes a body over 64 KiB (up to
//!   [`episode::sync::MAX_REQUEST_BYTES`]); a longer declared length is answered 413
//!   before a byte is read, so a route anyone may call (sign-in) can reserve at most 64
//!   KiB. A body without a length takes 64 KiB and may not grow past it (411).
//! - A body waits its turn for at most [`Limits::wait`], then is answered 503 with
//!   `Retry-After`.
//! - **The rate**: after [`Limits::slow_after`] a body must have arrived at
//!   [`Limits::min_rate`] bytes a second on average, or it is answered 408 and the
//!   connection closed. One byte a second holds nothing for long.
//!
//! The memory this bounds is the bodies' own; what a handler makes of them (a decoded
//! sync request) comes on top, but only for bodies that hold budget.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use http_body::{Body as HttpBody, Frame, SizeHint};
use hyper::body::Incoming;
use tokio::sync::{AcquireError, OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};

use crate::error::AppError;

/// The largest body any route takes.
pub const MAX_DECLARED_BYTES: u64 = episode::sync::MAX_REQUEST_BYTES as u64;
/// A body over this is large: large bodies share at most half the budget.
pub const LARGE_BODY_BYTES: u64 = 1024 * 1024;

/// The largest body the route at `path` takes. Only the sync route takes more than
/// [`crate::MAX_BODY_BYTES`] (it sets its own `DefaultBodyLimit` to the same figure).
pub fn largest_body(path: &str) -> u64 {
    if path == "/v1/sync" { MAX_DECLARED_BYTES } else { crate::MAX_BODY_BYTES as u64 }
}

/// The bodies' limits.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Request body bytes held at once, across all requests.
    pub bytes_in_flight: usize,
    /// How long a body may take before it must keep up `min_rate`.
    pub slow_after: Duration,
    /// Bytes a second a body must average after `slow_after`.
    pub min_rate: u64,
    /// How long a body waits for room in the budget.
    pub wait: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            bytes_in_flight: 64 * 1024 * 1024,
            slow_after: Duration::from_secs(10),
            min_rate: 1024,
            wait: Duration::from_secs(30),
        }
    }
}

/// The shared budget of bytes in flight.
#[derive(Clone, Debug)]
pub struct Budget {
    bytes: Arc<Semaphore>,
    /// What large bodies may hold between them.
    large: Arc<Semaphore>,
    limits: Arc<Limits>,
}

/// Why the edge answered a request itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// Declared longer than any route takes (413).
    TooLarge,
    /// Sent without a length and longer than a body without one may be (411).
    NeedsLength,
    /// No room in the budget in time (503).
    Busy,
    /// Arrived too slowly (408).
    TooSlow,
}

impl Refusal {
    /// The answer, closing the connection: the rest of the body is not read.
    pub fn into_response(self) -> Response {
        let error = match self {
            Self::TooLarge => AppError::PayloadTooLarge,
            Self::NeedsLength => AppError::LengthRequired,
            Self::Busy => AppError::Busy { retry_after_secs: 5 },
            Self::TooSlow => AppError::RequestTimeout,
        };
        let mut response = error.into_response();
        response.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
        response
    }
}

impl Budget {
    pub fn new(limits: Limits) -> Self {
        // Tokio's semaphore holds at most `usize::MAX >> 3` permits.
        let bytes = limits.bytes_in_flight.min(Semaphore::MAX_PERMITS);
        let large = (bytes / 2).max(MAX_DECLARED_BYTES as usize).min(bytes);
        Self {
            bytes: Arc::new(Semaphore::new(bytes)),
            large: Arc::new(Semaphore::new(large)),
            limits: Arc::new(limits),
        }
    }

    /// Meters the body of a request to `path`; refuses at once one declared longer than
    /// the route takes. The [`Meter`] gives the budget back, and says what became of the
    /// body, once the request is answered.
    pub fn meter(&self, path: &str, body: Incoming) -> Result<(Metered, Meter), Refusal> {
        // hyper's hint is exact for a `Content-Length` (and for no body at all), open for a
        // chunked body.
        let (reserve, declared) = match body.size_hint().exact() {
            Some(length) if length > largest_body(path) => return Err(Refusal::TooLarge),
            Some(length) => (length, true),
            None => (crate::MAX_BODY_BYTES as u64, false),
        };
        let outcome = Arc::new(Outcome::default());
        let metered = Metered {
            inner: body,
            budget: self.clone(),
            reserve: u32::try_from(reserve).unwrap_or(u32::MAX),
            declared,
            outcome: Arc::clone(&outcome),
            acquiring: None,
            started: None,
            received: 0,
            deadline: None,
        };
        Ok((metered, Meter { outcome, has_body: reserve > 0 }))
    }
}

/// What a body came to, shared by the body and whoever answers its request.
#[derive(Debug, Default)]
struct Outcome {
    permit: Mutex<Option<Permits>>,
    refusal: Mutex<Option<Refusal>>,
    /// The body was read to its end.
    ended: std::sync::atomic::AtomicBool,
}

/// A body's share of the budget, and of the large bodies' share if it is large.
#[derive(Debug)]
struct Permits {
    _large: Option<OwnedSemaphorePermit>,
    _bytes: OwnedSemaphorePermit,
}

/// Held while a request is answered.
#[derive(Debug)]
pub struct Meter {
    outcome: Arc<Outcome>,
    /// The request has a body (a length over 0, or chunked).
    has_body: bool,
}

impl Meter {
    /// Gives the body's bytes back to the budget, and answers in the app's place if the
    /// body was refused on the way in (the app saw only a body that failed to read).
    ///
    /// An answer given without reading the body (a 401 before a sync's body) says
    /// `Connection: close`: hyper closes such a connection unless the rest of the body
    /// happens to have arrived already, and a client that pooled it would find it closed
    /// under its next request.
    pub fn finish(self, response: Response) -> Response {
        self.outcome.permit.lock().unwrap_or_else(PoisonError::into_inner).take();
        if let Some(refusal) = *self.outcome.refusal.lock().unwrap_or_else(PoisonError::into_inner) {
            return refusal.into_response();
        }
        let mut response = response;
        if self.has_body && !self.outcome.ended.load(std::sync::atomic::Ordering::SeqCst) {
            response.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        response
    }
}

type Acquiring = Pin<Box<dyn Future<Output = Result<Permits, AcquireError>> + Send>>;

/// A request body that takes its bytes from the budget and must keep up a rate.
pub struct Metered {
    inner: Incoming,
    budget: Budget,
    reserve: u32,
    /// The length was declared (else the body may not grow past `reserve`).
    declared: bool,
    outcome: Arc<Outcome>,
    acquiring: Option<Acquiring>,
    /// When the budget let it in.
    started: Option<Instant>,
    received: u64,
    deadline: Option<Pin<Box<Sleep>>>,
}

impl std::fmt::Debug for Metered {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metered").field("reserve", &self.reserve).field("received", &self.received).finish()
    }
}

/// The error a refused body ends with; the request is then answered by [`Meter::finish`].
#[derive(Debug, thiserror::Error)]
#[error("the request body was refused at the edge: {0:?}")]
pub struct Refused(Refusal);

impl Metered {
    fn refuse(&mut self, refusal: Refusal) -> Poll<Option<Result<Frame<Bytes>, axum::BoxError>>> {
        *self.outcome.refusal.lock().unwrap_or_else(PoisonError::into_inner) = Some(refusal);
        Poll::Ready(Some(Err(Box::new(Refused(refusal)))))
    }

    /// When the body must have arrived whole if it stops now: `slow_after`, plus the
    /// time `received` bytes are allowed at `min_rate`.
    fn rate_deadline(&self, started: Instant) -> Instant {
        let limits = &self.budget.limits;
        let allowed = Duration::from_millis(self.received.saturating_mul(1000) / limits.min_rate.max(1));
        started + limits.slow_after + allowed
    }

    fn set_deadline(&mut self, at: Instant) {
        match &mut self.deadline {
            Some(sleep) => sleep.as_mut().reset(at),
            None => self.deadline = Some(Box::pin(tokio::time::sleep_until(at))),
        }
    }

    fn deadline_passed(&mut self, cx: &mut Context<'_>) -> bool {
        self.deadline.as_mut().is_some_and(|sleep| sleep.as_mut().poll(cx).is_ready())
    }
}

impl HttpBody for Metered {
    type Data = Bytes;
    type Error = axum::BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        if this.started.is_none() && this.reserve > 0 {
            if this.acquiring.is_none() {
                let (bytes, large) = (Arc::clone(&this.budget.bytes), Arc::clone(&this.budget.large));
                let reserve = this.reserve;
                // The large share first, then the budget: a large body waiting for the
                // budget holds no more than its own share of the large bodies' half.
                this.acquiring = Some(Box::pin(async move {
                    let large = match u64::from(reserve) > LARGE_BODY_BYTES {
                        true => Some(large.acquire_many_owned(reserve).await?),
                        false => None,
                    };
                    Ok(Permits { _large: large, _bytes: bytes.acquire_many_owned(reserve).await? })
                }));
                let wait = Instant::now() + this.budget.limits.wait;
                this.set_deadline(wait);
            }
            let Some(acquiring) = this.acquiring.as_mut() else { return Poll::Pending };
            match acquiring.as_mut().poll(cx) {
                Poll::Ready(Ok(permit)) => {
                    this.acquiring = None;
                    *this.outcome.permit.lock().unwrap_or_else(PoisonError::into_inner) = Some(permit);
                    let now = Instant::now();
                    this.started = Some(now);
                    let at = this.rate_deadline(now);
                    this.set_deadline(at);
                }
                // Closed only if the budget were dropped, which it is not while serving.
                Poll::Ready(Err(_)) => return this.refuse(Refusal::Busy),
                Poll::Pending => {
                    if this.deadline_passed(cx) {
                        this.acquiring = None;
                        return this.refuse(Refusal::Busy);
                    }
                    return Poll::Pending;
                }
            }
        }
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.received += data.len() as u64;
                    if !this.declared && this.received > u64::from(this.reserve) {
                        return this.refuse(Refusal::NeedsLength);
                    }
                    if let Some(started) = this.started {
                        let at = this.rate_deadline(started);
                        this.set_deadline(at);
                    }
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(Box::new(e)))),
            Poll::Ready(None) => {
                this.outcome.ended.store(true, std::sync::atomic::Ordering::SeqCst);
                Poll::Ready(None)
            }
            Poll::Pending => {
                if this.started.is_some() && this.deadline_passed(cx) {
                    return this.refuse(Refusal::TooSlow);
                }
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
