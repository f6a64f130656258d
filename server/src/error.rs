//! `AppError`: every way a request can fail, and the one JSON body they all answer with,
//! `{"error": {"code": "...", "message": "..."}}`.
//!
//! A client error says what was wrong (without repeating input values, which may be a
//! patient's identifier). An internal error answers a generic message and is logged,
//! inside the request's span, with its cause.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::auth::store::Throttled;

/// The body every error answers with; the OpenAPI document's `ErrorBody`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

/// The error answers that many routes share, named once for their OpenAPI
/// descriptions: `#[utoipa::path(responses((status = 200, …), Unauthorized, …))]`. Each
/// is the [`ErrorBody`] under its status; none is ever built (answers are [`AppError`]s).
pub mod responses {
    use std::collections::BTreeMap;

    use utoipa::IntoResponses;
    use utoipa::openapi::{RefOr, Response};

    use super::ErrorBody;

    /// 401: the route needs a valid access token.
    #[derive(Debug, IntoResponses)]
    #[response(status = 401, description = "No valid access token")]
    pub struct Unauthorized(pub ErrorBody);

    /// 400: the body does not parse as JSON.
    #[derive(Debug, IntoResponses)]
    #[response(status = 400, description = "The body is not JSON")]
    pub struct NotJson(pub ErrorBody);

    /// 404: no such episode among the caller's teams' (one of another team's answers the same).
    #[derive(Debug, IntoResponses)]
    #[response(status = 404, description = "No such episode among the caller's teams'")]
    pub struct EpisodeNotFound(pub ErrorBody);

    /// 415: the body's `Content-Type` is not `application/json`.
    #[derive(Debug, IntoResponses)]
    #[response(status = 415, description = "The body is not declared as JSON")]
    pub struct NotDeclaredJson(pub ErrorBody);

    /// 422: a body that is not what the route takes, or a change refused; nothing stored.
    #[derive(Debug, IntoResponses)]
    #[response(
        status = 422,
        description = "The body is not what this route takes, or the change is refused; nothing was stored"
    )]
    pub struct Refused(pub ErrorBody);

    /// 403: the caller's role may not do this.
    #[derive(Debug, IntoResponses)]
    #[response(status = 403, description = "The caller's role may not do this")]
    pub struct RoleForbidden(pub ErrorBody);

    /// 503: the episode was changed by others at the same moment, every try.
    #[derive(Debug, IntoResponses)]
    #[response(status = 503, description = "The episode was being changed by others at the same moment; try again")]
    pub struct EpisodeBusy(pub ErrorBody);

    /// Every error a route that changes an episode from a JSON body answers: the seven
    /// above.
    #[derive(Debug)]
    pub struct EpisodeWrite;

    impl IntoResponses for EpisodeWrite {
        fn responses() -> BTreeMap<String, RefOr<Response>> {
            let mut all = NotJson::responses();
            all.extend(Unauthorized::responses());
            all.extend(RoleForbidden::responses());
            all.extend(EpisodeNotFound::responses());
            all.extend(NotDeclaredJson::responses());
            all.extend(Refused::responses());
            all.extend(EpisodeBusy::responses());
            all
        }
    }
}

/// What went wrong: a stable code to act on, and a message for a person.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ErrorDetail {
    /// A stable, machine-readable code: `invalid_body`, `not_found`, `unauthenticated`, …
    pub code: &'static str,
    /// What was wrong, in words; never an input value.
    pub message: String,
    /// The episode concerned, for `sync_refused` and an episode's `not_found`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, format = "uuid")]
    pub episode: Option<episode::EpisodeId>,
}

#[derive(Debug)]
pub enum AppError {
    /// The body is not JSON at all (400).
    MalformedJson(String),
    /// The body is JSON but not what the route takes (422).
    InvalidBody(String),
    /// The query string is not what the route takes (400).
    InvalidQuery(String),
    /// The body is not declared as JSON (415).
    UnsupportedMediaType,
    /// The body is larger than the route accepts (413).
    PayloadTooLarge,
    /// A body without a `Content-Length` longer than such a body may be (411).
    LengthRequired,
    /// The body arrived too slowly (408).
    RequestTimeout,
    /// The server holds as many request bodies as it may; try again shortly (503).
    Busy { retry_after_secs: u64 },
    /// No access token, or one that is not valid (401). The message says which.
    Unauthenticated(&'static str),
    /// A sign-in with a wrong username or password (401); it never says which.
    InvalidCredentials,
    /// A refresh token that is unknown, expired, revoked, already used, or presented by
    /// another device (401).
    InvalidRefreshToken,
    /// Too many failed sign-ins for this username from this client, or from this client
    /// at all (429).
    TooManyAttempts(crate::auth::store::Throttled),
    /// Passwords are switched off: people sign in with the trust's identity provider (403).
    PasswordsOff,
    /// A sign-in with the trust's identity provider that did not succeed: its status
    /// (401 for an answer that could not be trusted, 403 for a person refused, 502 for a
    /// provider out of reach), a code and what went wrong.
    SignInFailed { status: StatusCode, code: &'static str, message: String },
    /// No such route (404).
    NotFound,
    /// No such episode among the caller's teams' (404): another team's answers exactly
    /// like one that does not exist.
    EpisodeNotFound(episode::EpisodeId),
    /// The caller's role may not do this (403).
    Forbidden(&'static str),
    /// The device has been revoked (403): it must wipe its store.
    DeviceRevoked,
    /// A sign-in named a device id registered to another device (403): without its key,
    /// or (for a device registered without one) by a user outside its teams.
    DeviceTaken,
    /// A sync body that is not a sync request of this protocol (400).
    MalformedSync(String),
    /// A sync request that would break an episode's invariants (422), naming the episode.
    /// Nothing of the request was stored.
    SyncRefused { episode: episode::EpisodeId, message: String },
    /// The change would take the episode past its budget (422); nothing was stored, and
    /// the episode still reads.
    EpisodeFull { bytes: usize },
    /// The route exists but not with this method (405).
    MethodNotAllowed,
    /// The database failed (500), or another writer kept changing the episode (503):
    /// logged, never shown. Kept apart so that a conflict can be retried.
    Store(crate::store::StoreError),
    /// Anything the client cannot act on (500): logged, never shown.
    Internal(anyhow::Error),
}

impl AppError {
    pub fn internal(error: impl Into<anyhow::Error>) -> Self {
        Self::Internal(error.into())
    }

    fn parts(&self) -> (StatusCode, &'static str, String) {
        match self {
            Self::MalformedJson(m) => {
                (StatusCode::BAD_REQUEST, "malformed_json", format!("the body is not valid JSON: {m}"))
            }
            Self::InvalidBody(m) => (StatusCode::UNPROCESSABLE_ENTITY, "invalid_body", m.clone()),
            Self::InvalidQuery(m) => (StatusCode::BAD_REQUEST, "invalid_query", m.clone()),
            Self::UnsupportedMediaType => (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "the body must be JSON, sent with `Content-Type: application/json`".into(),
            ),
            Self::PayloadTooLarge => {
                (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", "the body is too large".into())
            }
            Self::LengthRequired => (
                StatusCode::LENGTH_REQUIRED,
                "length_required",
                format!("a body over {} bytes must be sent with its Content-Length", crate::MAX_BODY_BYTES),
            ),
            Self::RequestTimeout => (
                StatusCode::REQUEST_TIMEOUT,
                "request_timeout",
                "the request's body arrived too slowly; send it again".into(),
            ),
            Self::Busy { retry_after_secs } => (
                StatusCode::SERVICE_UNAVAILABLE,
                "busy",
                format!("the server is receiving as much as it may at once; try again in {retry_after_secs} seconds"),
            ),
            Self::Unauthenticated(m) => (StatusCode::UNAUTHORIZED, "unauthenticated", (*m).into()),
            Self::InvalidCredentials => {
                (StatusCode::UNAUTHORIZED, "invalid_credentials", "the username or the password is wrong".into())
            }
            Self::InvalidRefreshToken => (
                StatusCode::UNAUTHORIZED,
                "invalid_refresh_token",
                "the refresh token is not valid for this device; sign in again".into(),
            ),
            Self::TooManyAttempts(throttled) => (
                StatusCode::TOO_MANY_REQUESTS,
                "too_many_attempts",
                match throttled {
                    Throttled::Username { retry_after_secs } => format!(
                        "too many failed sign-ins for this username from this address; try again in {retry_after_secs} seconds"
                    ),
                    Throttled::Client { retry_after_secs } => {
                        format!("too many failed sign-ins from this address; try again in {retry_after_secs} seconds")
                    }
                },
            ),
            Self::PasswordsOff => (
                StatusCode::FORBIDDEN,
                "passwords_off",
                "password sign-in is switched off here: sign in with the trust's identity provider".into(),
            ),
            Self::SignInFailed { status, code, message } => (*status, code, message.clone()),
            Self::NotFound => (StatusCode::NOT_FOUND, "not_found", "no such resource".into()),
            Self::EpisodeNotFound(id) => (StatusCode::NOT_FOUND, "not_found", format!("no such episode: {id}")),
            Self::Forbidden(m) => (StatusCode::FORBIDDEN, "forbidden", (*m).into()),
            Self::DeviceRevoked => (
                StatusCode::FORBIDDEN,
                "device_revoked",
                "this device has been revoked: wipe its store, and sign in on a new one".into(),
            ),
            Self::DeviceTaken => (
                StatusCode::FORBIDDEN,
                "device_taken",
                "this device id is registered to another device: sign in from that device, or under a new device id"
                    .into(),
            ),
            Self::MalformedSync(m) => (StatusCode::BAD_REQUEST, "malformed_sync", m.clone()),
            Self::SyncRefused { episode, message } => {
                (StatusCode::UNPROCESSABLE_ENTITY, "sync_refused", format!("episode {episode}: {message}"))
            }
            Self::EpisodeFull { bytes } => (
                StatusCode::UNPROCESSABLE_ENTITY,
                "episode_full",
                format!(
                    "the episode would take {bytes} bytes, past its budget of {}: record this in a new episode",
                    episode::limits::EPISODE_BUDGET_BYTES
                ),
            ),
            Self::MethodNotAllowed => {
                (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", "this resource does not take that method".into())
            }
            Self::Store(crate::store::StoreError::Conflict(_)) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "busy",
                "the episode was being changed by others at the same moment; try again".into(),
            ),
            Self::Store(crate::store::StoreError::Busy(_)) => {
                (StatusCode::SERVICE_UNAVAILABLE, "busy", "the server is busy; try again".into())
            }
            Self::Store(_) | Self::Internal(_) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "something went wrong on the server; it has been logged".into(),
            ),
        }
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        if let Self::Internal(cause) = &self {
            // `{:#}` prints the whole chain of causes on one line.
            tracing::error!(error = format!("{cause:#}"), "internal error");
        }
        if let Self::Store(cause) = &self {
            tracing::error!(error = %cause, "database error");
        }
        let (status, code, message) = self.parts();
        let episode = match &self {
            Self::SyncRefused { episode, .. } | Self::EpisodeNotFound(episode) => Some(*episode),
            _ => None,
        };
        let body = ErrorBody { error: ErrorDetail { code, message, episode } };
        let mut response = (status, axum::Json(body)).into_response();
        match self {
            Self::Unauthenticated(_)
            | Self::InvalidCredentials
            | Self::InvalidRefreshToken
            | Self::SignInFailed { status: StatusCode::UNAUTHORIZED, .. } => {
                response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            Self::TooManyAttempts(throttled) => {
                response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(throttled.retry_after_secs()));
            }
            Self::Busy { retry_after_secs } => {
                response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(retry_after_secs.max(1)));
            }
            _ => {}
        }
        response
    }
}

impl From<tokio::task::JoinError> for AppError {
    fn from(error: tokio::task::JoinError) -> Self {
        Self::internal(error)
    }
}
