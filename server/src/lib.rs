//! The Tether server: an axum service over an embedded SQLite database or PostgreSQL, and
//! the library behind the `tether` binary's `serve`, `team` and `user` commands.
//!
//! `app(state)` is the whole HTTP service as a `Router`, so tests call it with
//! `tower::ServiceExt::oneshot` and no socket; `serve::run` puts it on a port.
//!
//! - `accounts`: teams and users, the names they go by, and their rows.
//! - `auth`: sign-in, access and refresh tokens, and the `AuthUser` extractor.
//! - `commit`: group commit of sync requests (one transaction, one fsync, a savepoint
//!   each).
//! - `clock`: the injectable clock that token expiry and throttling read.
//! - `config`: `tether serve`'s flags and environment, as one typed struct.
//! - `db`: opening the SQLite database, its schema (`schema/*.sql`) and migrations.
//! - `store`: the storage boundary: every statement, behind one trait, on SQLite and on
//!   PostgreSQL (`schema/postgres/*.sql`); `Db`, the handle; `--db`'s `Target`.
//! - `error`: `AppError`, the one error body every route answers with.
//! - `json`: the `Json` extractor, whose rejections use that body.
//! - `manage`: revoking devices and transferring episodes.
//! - `office`: the team base's and the manager's episode API (caseload, timeline,
//!   recording, facts, plan, reconciliation), shared by the JSON routes and the dashboard.
//! - `caseload`: each episode's summary (open and overdue actions, conflicts, duplicates,
//!   records to file), kept current as episodes change and as the clock moves.
//! - `audit`: the append-only log of every read and write of an episode.
//! - `dashboard`: the manager's HTML pages under `/dashboard` (sign-in, caseload, episode).
//! - `oidc`: signing in with the trust's OpenID provider (NHS CIS2, Entra ID): settings,
//!   the claims mapping, the code exchange and ID token checks, the phones' routes.
//! - `fhir`: an episode as a FHIR R4 Bundle shaped to UK Core (`GET /v1/episodes/{id}/fhir`),
//!   and records as a transaction of conditional creates for an EPR; pure.
//! - `metrics`: `GET /metrics`, Prometheus text.
//! - `me`, `health`: `GET /v1/me`, `GET /healthz`.
//! - `episodes`: episode documents in the database, sync states, receipts.
//! - `sync`: `POST /v1/sync`, the sync protocol's server side.
//! - `demo`: `tether serve --demo`'s teams, users and episodes.
//! - `serve`: binding, logging, and graceful shutdown on ctrl-c and SIGTERM.

pub mod accounts;
pub mod audit;
pub mod auth;
pub mod caseload;
pub mod clock;
pub mod commit;
pub mod config;
pub mod dashboard;
pub mod db;
pub mod demo;
pub mod episodes;
pub mod error;
pub mod fhir;
mod health;
pub mod json;
mod manage;
mod me;
pub mod metrics;
pub mod office;
pub mod oidc;
pub mod serve;
pub mod store;
mod sync;

use std::sync::Arc;

use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::middleware::{self, Next};
use axum::response::Response;
use tracing::Instrument;

pub use auth::AuthUser;
use auth::token::{Keys, MIN_SECRET_BYTES, random_bytes, to_hex};
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
}

/// The meta key of the generated signing secret.
const JWT_SECRET_KEY: &str = "jwt_secret";

impl AppState {
    /// The state over an open, migrated database. The access tokens' signing secret is
    /// `jwt_secret` if given, else the one kept in the database, generated at first start.
    pub fn new(db: Db, jwt_secret: Option<&Secret>, clock: Clock) -> anyhow::Result<Self> {
        Self::with_sync_batch(db, jwt_secret, clock, commit::DEFAULT_BATCH)
    }

    /// The same, writing at most `sync_batch` sync requests in one transaction.
    pub fn with_sync_batch(
        db: Db,
        jwt_secret: Option<&Secret>,
        clock: Clock,
        sync_batch: usize,
    ) -> anyhow::Result<Self> {
        let secret = match jwt_secret {
            Some(secret) => {
                let bytes = secret.expose().as_bytes();
                anyhow::ensure!(
                    bytes.len() >= MIN_SECRET_BYTES,
                    "TETHER_JWT_SECRET must be at least {MIN_SECRET_BYTES} bytes long"
                );
                bytes.to_vec()
            }
            None => db.call_blocking(stored_secret)?,
        };
        let docs: Arc<std::sync::Mutex<episodes::Cache>> = Arc::default();
        let committer = commit::Committer::start(db.clone(), Arc::clone(&docs), sync_batch)?;
        Ok(Self {
            db,
            docs,
            keys: Arc::new(Keys::from_secret(&secret)),
            clock,
            metrics: metrics::Metrics::shared(),
            committer,
            sign_in: Arc::default(),
            fhir: Arc::default(),
        })
    }

    /// The same state, signing people in as `sign_in` says (identity providers, and
    /// whether passwords may be used).
    pub fn with_sign_in(mut self, sign_in: oidc::SignIn) -> Self {
        self.sign_in = Arc::new(sign_in);
        self
    }
}

fn stored_secret(conn: &mut dyn store::Conn) -> anyhow::Result<Vec<u8>> {
    let mut tx = conn.transaction()?;
    if let Some(hex) = tx.meta(JWT_SECRET_KEY)? {
        return auth::token::from_hex(&hex).ok_or_else(|| anyhow::anyhow!("the stored signing secret is damaged"));
    }
    let secret = random_bytes::<32>().map_err(|_| anyhow::anyhow!("no random numbers for the signing secret"))?;
    tx.set_meta(JWT_SECRET_KEY, &to_hex(&secret))?;
    tx.commit()?;
    Ok(secret.to_vec())
}

/// The whole HTTP service.
pub fn app(state: AppState) -> Router {
    Router::new()
        .merge(health::router())
        .merge(auth::router())
        .merge(oidc::routes::router())
        .merge(me::router())
        .merge(sync::router())
        .merge(manage::router())
        .merge(office::router())
        .merge(audit::router())
        .merge(dashboard::router())
        .merge(metrics::router())
        .fallback(|| async { AppError::NotFound })
        .method_not_allowed_fallback(|| async { AppError::MethodNotAllowed })
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(middleware::from_fn_with_state(state.clone(), trace))
        .with_state(state)
}

/// One span per request, named by its route pattern (never the concrete path, which may
/// one day carry an identifier), and one line when it is answered.
/// Each answer is counted in the metrics under the same pattern.
async fn trace(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let route = request.extensions().get::<MatchedPath>().map_or("unmatched", |p| p.as_str()).to_owned();
    let method = request.method().clone();
    let span = tracing::info_span!("request", method = %method, route = %route);
    let started = std::time::Instant::now();
    async move {
        let response = next.run(request).await;
        let elapsed = started.elapsed();
        let status = response.status().as_u16();
        state.metrics.observe(&route, method.as_str(), status, elapsed);
        tracing::info!(status, ms = elapsed.as_millis() as u64, "answered");
        response
    }
    .instrument(span)
    .await
}
