//! The audit log: every read and write of an episode, by the API, the dashboard or a
//! device's sync — who, on which device, when, and what. Kept in the database, in the
//! same transaction as what it records, and append-only (the schema's triggers refuse to
//! change or delete a row). `GET /v1/audit?episode=ID` shows an episode's entries to team
//! managers and admins.

use axum::Router;
use axum::extract::{Query, State};
use axum::routing::get;
use episode::EpisodeId;
use serde::{Deserialize, Serialize};

use crate::AppState;
use crate::accounts::Role;
use crate::auth::AuthUser;
use crate::error::AppError;
use crate::store::{AuditRecord, StoreError, Tx};

pub(crate) fn router() -> Router<AppState> {
    Router::new().route("/v1/audit", get(audit))
}

/// Where a read or write came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Via {
    Api,
    Dashboard,
    Sync,
}

impl Via {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Api => "api",
            Self::Dashboard => "dashboard",
            Self::Sync => "sync",
        }
    }
}

/// Who is reading or writing, as the audit log names them.
#[derive(Clone, Debug)]
pub struct Who {
    pub user_id: String,
    pub username: String,
    pub device: String,
    pub via: Via,
}

impl Who {
    pub fn new(user: &AuthUser, via: Via) -> Self {
        Self { user_id: user.user_id.clone(), username: user.username.clone(), device: user.device_id.clone(), via }
    }
}

/// Appends one entry. `action` is a fixed name (`read_episode`, `record_event`, …);
/// `detail` is a record id or a fact's name, never a value a patient could be known by.
pub fn log(
    tx: &mut dyn Tx,
    who: &Who,
    at_ms: i64,
    action: &'static str,
    episode: Option<EpisodeId>,
    detail: Option<&str>,
) -> Result<(), StoreError> {
    tx.audit_log(&AuditRecord {
        at_ms,
        user_id: &who.user_id,
        username: &who.username,
        device: &who.device,
        via: who.via.as_str(),
        action,
        episode,
        detail,
    })
}

/// One entry of the log.
#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Entry {
    pub n: i64,
    #[serde(with = "episode::json::time")]
    pub at: jiff::Timestamp,
    pub user_id: String,
    pub username: String,
    pub device: String,
    pub via: Via,
    pub action: String,
    pub episode: Option<String>,
    pub detail: Option<String>,
}

/// An episode's entries, oldest first.
pub fn entries(tx: &mut dyn Tx, episode: EpisodeId) -> Result<Vec<Entry>, StoreError> {
    tx.audit_entries(episode)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AuditQuery {
    episode: EpisodeId,
}

#[derive(Serialize)]
struct AuditAnswer {
    episode: EpisodeId,
    entries: Vec<Entry>,
}

/// `GET /v1/audit?episode=ID`: team managers and admins, for an episode of their teams.
async fn audit(
    State(state): State<AppState>,
    user: AuthUser,
    query: Result<Query<AuditQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<axum::Json<AuditAnswer>, AppError> {
    if !matches!(user.role, Role::TeamManager | Role::Admin) {
        return Err(AppError::Forbidden("only a team manager or an admin may read the audit log"));
    }
    let Query(query) =
        query.map_err(|_| AppError::InvalidQuery("`episode` must be given, as an episode id (a UUID)".into()))?;
    let id = query.episode;
    let entries = state
        .db
        .call(move |conn| {
            match conn.team_of(id)? {
                Some((team, _)) if user.teams.contains(&team) => {}
                _ => return Err(AppError::EpisodeNotFound(id)),
            }
            Ok(entries(conn, id)?)
        })
        .await?;
    Ok(axum::Json(AuditAnswer { episode: id, entries }))
}
