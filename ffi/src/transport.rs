//! The host's HTTP stack, as the core sees it: the host implements [`Transport`] (OkHttp,
//! URLSession, urllib) and the core drives sign-in and sync through it, so the library
//! carries no TLS of its own and the host keeps its certificate pinning, proxies and
//! background transfers.

use std::sync::Arc;

use client_core::remote::{self, Reply};

/// One request to the server. `path` is the route (`/v1/auth/login`, `/v1/auth/refresh`,
/// `/v1/sync`): the transport knows the server's address and joins them.
#[derive(Clone, Debug, PartialEq, Eq, uniffi::Record)]
pub struct HttpRequest {
    pub path: String,
    pub content_type: String,
    pub body: Vec<u8>,
    /// Sent as `Authorization: Bearer <token>` when present.
    pub bearer: Option<String>,
}

/// The server's answer, whatever its status (a 401 or a 422 is an answer, not a failure).
#[derive(Clone, Debug, PartialEq, Eq, uniffi::Record)]
pub struct HttpResponse {
    pub status: u16,
    pub body: Vec<u8>,
}

/// Why no answer came (no network, a timeout, TLS refused). Nothing is lost: the core
/// reports `TetherError::TransportFailed` and the next sync goes on from there.
#[derive(Debug, thiserror::Error, uniffi::Error)]
pub enum TransportError {
    #[error("{reason}")]
    Failed { reason: String },
}

impl From<uniffi::UnexpectedUniFFICallbackError> for TransportError {
    // The host's code threw something other than a `TransportError`.
    fn from(error: uniffi::UnexpectedUniFFICallbackError) -> Self {
        Self::Failed { reason: format!("the transport failed unexpectedly: {}", error.reason) }
    }
}

/// POSTs bytes to the server and brings back its answer. Called from whichever thread
/// called `sign_in` or `sync` (never the main thread, in a well-behaved app), and
/// blocking until the answer is in.
#[uniffi::export(with_foreign)]
pub trait Transport: Send + Sync {
    fn post(&self, request: HttpRequest) -> Result<HttpResponse, TransportError>;
}

/// The host's transport as the core's.
pub(crate) struct Host(pub(crate) Arc<dyn Transport>);

impl remote::Transport for Host {
    fn post(&self, path: &str, content_type: &str, body: Vec<u8>, bearer: Option<&str>) -> client_core::Result<Reply> {
        let request = HttpRequest {
            path: path.to_string(),
            content_type: content_type.to_string(),
            body,
            bearer: bearer.map(str::to_string),
        };
        match self.0.post(request) {
            Ok(HttpResponse { status, body }) => Ok(Reply { status, body }),
            Err(TransportError::Failed { reason }) => Err(client_core::Error::Network(reason)),
        }
    }
}
