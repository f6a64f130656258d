//! The host's HTTP stack, as the core sees it: the host implements [`Transport`] (OkHttp
//! or Ktor, URLSession, aiohttp or urllib in a thread) and the core drives sign-in and
//! sync through it, so the library carries no TLS of its own and the host keeps its
//! certificate pinning, proxies and background transfers.
//!
//! `post` is async (a Kotlin `suspend fun`, a Swift `async` function, a Python
//! coroutine): the library awaits the host's answer without holding the core and without
//! any thread of the host's blocked on the network.

use std::sync::Arc;

use client_core::remote::{Reply, Request};

use crate::error::TetherError;

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
#[uniffi::export(Display)]
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

/// POSTs bytes to the server and brings back its answer, asynchronously: the host's own
/// HTTP client, awaited by the library's `async` calls (`sign_in`, `sync`, the identity
/// provider's sign-in). Cancelling the call that awaits it cancels it too.
#[uniffi::export(with_foreign)]
#[async_trait::async_trait]
pub trait Transport: Send + Sync {
    async fn post(&self, request: HttpRequest) -> Result<HttpResponse, TransportError>;
}

/// Carries one request of the core's over the host's transport.
pub(crate) async fn send(transport: &Arc<dyn Transport>, request: Request) -> Result<Reply, TetherError> {
    let request = HttpRequest {
        path: request.path.to_string(),
        content_type: request.content_type.to_string(),
        body: request.body,
        bearer: request.bearer,
    };
    match transport.post(request).await {
        Ok(HttpResponse { status, body }) => Ok(Reply { status, body }),
        Err(TransportError::Failed { reason }) => Err(client_core::Error::Network(reason).into()),
    }
}
