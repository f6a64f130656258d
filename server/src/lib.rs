//! The Tether server: an axum service over an embedded SQLite database or PostgreSQL, and
//! the library behind the `tether` binary's `serve`, `team` and `user` commands.
//!
//! `app(state)` is the whole HTTP service as a `Router`, so tests call it with
//! `tower::ServiceExt::oneshot` and no socket; `serve::run` puts it on a port.
//!
//! - `accounts`: teams and users, the names they go by, and their rows.
//! - `alerts`: alerts to an urgent action's owner (webhook, email) when it starts, nears
//!   its deadline and falls overdue, raised by the evaluation into the outbox.
//! - `auth`: sign-in, access and refresh tokens, and the `AuthUser` extractor.
//! - `commit`: group commit of sync requests (one transaction, one fsync, a savepoint
//!   each).
//! - `clock`: the injectable clock that token expiry and throttling read.
//! - `client`: the client's address (the socket's peer, or behind a trusted proxy, its
//!   `X-Forwarded-For`), as the failed sign-in throttle counts it.
//! - `config`: `tether serve`'s settings from flags, environment and a TOML file, as one
//!   typed struct.
//! - `db`: opening the SQLite database, its schema (`schema/*.sql`) and migrations.
//! - `store`: the storage boundary: every statement, behind one trait, on SQLite and on
//!   PostgreSQL (`schema/postgres/*.sql`); `Db`, the handle; `--db`'s `Target`.
//! - `error`: `AppError`, the one error body every route answers with.
//! - `files`: files only their owner may read (the database's, the key file).
//! - `json`: the `Json` extractor, whose rejections use that body.
//! - `manage`: revoking devices and transferring episodes.
//! - `office`: the team base's and the manager's episode API (caseload, timeline,
//!   recording, facts, plan, reconciliation), shared by the JSON routes and the dashboard.
//! - `caseload`: each episode's summary (open and overdue actions, conflicts, duplicates,
//!   records to file), kept current as episodes change and as the clock moves.
//! - `audit`: the append-only log of every read and write of an episode, and its pages
//!   (`GET /v1/audit`: a team's, or an episode's).
//! - `owners`: who answers for an action: the role the rules give it, as the people it
//!   means for the episode (its care coordinator, its opener, the team's managers).
//! - `audit`: the append-only log of every read and write of an episode.
//! - `epr`: filing records in the trust's EPR (`--epr-fhir`): each record owed to it as
//!   it is stored, sent as a FHIR transaction of conditional creates, and its
//!   `filed_to_epr` recorded by the server.
//! - `outbox`: messages owed to systems outside the server (records to file, alerts),
//!   owed in the transaction of their cause, and the worker that sends and retries them.
//! - `dashboard`: the manager's HTML pages under `/dashboard` (sign-in, caseload, episode).
//! - `oidc`: signing in with the trust's OpenID provider (NHS CIS2, Entra ID): settings,
//!   the claims mapping, the code exchange and ID token checks, the phones' routes.
//! - `fhir`: an episode as a FHIR R4 Bundle shaped to UK Core (`GET /v1/episodes/{id}/fhir`),
//!   and records as a transaction of conditional creates for an EPR; pure.
//! - `metrics`: `GET /metrics`, Prometheus text.
//! - `openapi`: the OpenAPI 3.1 document of every JSON route, generated from the
//!   handlers' `#[utoipa::path]` attributes, at `GET /openapi.json`.
//! - `me`, `health`: `GET /v1/me`, `GET /healthz`.
//! - `episodes`: episode documents in the database, sync states, receipts.
//! - `sync`: `POST /v1/sync`, the sync protocol's server side.
//! - `demo`: `tether serve --demo`'s teams, users and episodes.
//! - `listen`: the accept loop: a cap on connections (the idlest closed to make room),
//!   header-read and idle timeouts, the peer's address on every request.
//! - `bodies`: request bodies at the edge: a budget of bytes in flight, a minimum rate.
//! - `serve`: binding, logging, and graceful shutdown on ctrl-c and SIGTERM.
//! - `backup`: `tether backup` and `tether restore`, SQLite's online backup.
//! - `tls`: HTTPS with rustls (ring), the certificate reloaded when its files change.

pub mod accounts;
pub mod alerts;
pub mod audit;
pub mod auth;
pub mod backup;
pub mod bodies;
pub mod caseload;
pub mod client;
pub mod clock;
pub mod commit;
pub mod config;
pub mod dashboard;
pub mod db;
pub mod demo;
pub mod episodes;
pub mod epr;
pub mod error;
pub mod fhir;
pub mod files;
mod health;
pub mod json;
pub mod listen;
mod manage;
mod me;
pub mod metrics;
pub mod office;
pub mod oidc;
pub mod openapi;
pub mod outbox;
pub mod owners;
pub mod serve;
pub mod store;
mod sync;
pub mod tls;

use std::sync::Arc;

use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::middleware::{self, Next};
use axum::response::Response;
use tracing::Instrument;

pub use auth::AuthUser;
use auth::token::Keys;
pub use clock::Clock;
pub use config::Secret;
pub use error::AppError;
pub use store::{Db, Target};

/// The largest request body any route takes, for now (the sync route will set its own).
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// Everything a request handler shares.
#[derive(Clone, Debug)]
pub struct AppState {
    pub db: Db,
    /// Episode documents kept in memory between sync requests.
    pub docs: Arc<std::sync::Mutex<episodes::Cache>>,
    pub keys: Arc<Keys>,
    pub clock: Clock,
    pub metrics: Arc<metrics::Metrics>,
    /// The sync writer, which commits concurrent sync requests together.
    pub committer: commit::Committer,
    /// How people sign in: passwords, and the trust's identity providers.
    pub sign_in: Arc<oidc::SignIn>,
    /// The identifier systems this deployment's FHIR resources use.
    pub fhir: Arc<fhir::Settings>,
    /// What the routes read of the configuration (trusted proxies, …).
    pub options: Arc<config::Options>,
    /// Whom urgent actions alert (`--alerts`); none by default.
    pub alerts: Arc<alerts::Alerts>,
}

impl AppState {
    /// The state over an open, migrated database. The access tokens' signing key is
    /// `jwt_secret` if given, else the key file beside the database, made at first start
    /// (`auth::keys`); a database without a file (PostgreSQL) needs `jwt_secret`.
    pub fn new(db: Db, jwt_secret: Option<&Secret>, clock: Clock) -> anyhow::Result<Self> {
        let keys = auth::keys::load(&db, jwt_secret, None)?;
        Self::with_keys(db, keys, clock, commit::DEFAULT_BATCH)
    }

    /// The same with the keys given, writing at most `sync_batch` sync requests in one
    /// transaction.
    pub fn with_keys(db: Db, keys: Keys, clock: Clock, sync_batch: usize) -> anyhow::Result<Self> {
        let docs: Arc<std::sync::Mutex<episodes::Cache>> = Arc::default();
        let committer = commit::Committer::start(db.clone(), Arc::clone(&docs), sync_batch)?;
        Ok(Self {
            db,
            docs,
            keys: Arc::new(keys),
            clock,
            metrics: metrics::Metrics::shared(),
            committer,
            sign_in: Arc::default(),
            fhir: Arc::default(),
            options: Arc::default(),
            alerts: Arc::default(),
        })
    }

    /// The same state, signing people in as `sign_in` says (identity providers, and
    /// whether passwords may be used).
    pub fn with_sign_in(mut self, sign_in: oidc::SignIn) -> Self {
        self.sign_in = Arc::new(sign_in);
        self
    }
}

/// The whole HTTP service.
pub fn app(state: AppState) -> Router {
    let (api, document) = openapi::routes().split_for_parts();
    Router::new()
        .merge(api)
        .merge(openapi::router(document))
        .merge(dashboard::router())
        .merge(metrics::router())
        .fallback(|| async { AppError::NotFound })
        .method_not_allowed_fallback(|| async { AppError::MethodNotAllowed })
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(middleware::from_fn_with_state(state.clone(), trace))
        .with_state(state)
}

/// The header that carries a request's id back to the caller.
pub const REQUEST_ID: &str = "x-request-id";

/// One span per request, named by its route pattern (never the concrete path, which may
/// one day carry an identifier) and carrying a new request id, and one line when it is
/// answered; the id goes back in `x-request-id`, so that a report of a failure can be
/// found in the logs. A caller's own `x-request-id` is not taken: whatever a client puts
/// there (a patient's reference, say) would be written into every line.
/// Each answer is counted in the metrics under the same pattern.
async fn trace(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let route = request.extensions().get::<MatchedPath>().map_or("unmatched", |p| p.as_str()).to_owned();
    let method = request.method().clone();
    let id = uuid::Uuid::now_v7().to_string();
    let span = tracing::info_span!("request", request_id = %id, method = %method, route = %route);
    let started = std::time::Instant::now();
    async move {
        let mut response = next.run(request).await;
        if let Ok(value) = axum::http::HeaderValue::from_str(&id) {
            response.headers_mut().insert(REQUEST_ID, value);
        }
        let elapsed = started.elapsed();
        let status = response.status().as_u16();
        state.metrics.observe(&route, method.as_str(), status, elapsed);
        tracing::info!(status, ms = elapsed.as_millis() as u64, "answered");
        response
    }
    .instrument(span)
    .await
}
