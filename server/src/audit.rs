//! The audit log: every read and write of an episode, by the API, the dashboard or a
//! device's sync — who, on which device, when, and what. Kept in the database, in the
//! same transaction as what it records, and append-only (the schema's triggers refuse to
//! change or delete a row). `GET /v1/audit?episode=ID` shows an episode's entries to team
//! managers and admins.
//!
//! Triggers stop a mistake, not someone with the file: so the log is also a hash chain.
//! Each entry carries the hash of the one before (`prev_hash`) and its own (`hash`), a
//! SHA-256 over a canonical encoding of every column ([`entry_hash`]); `audit_head`
//! holds the last entry's number and hash, and each append reads and moves it in the
//! same transaction (on PostgreSQL the read takes the row's lock, so replicas append one
//! after another to one chain). [`verify`] walks the chain (`tether audit verify`) and
//! names the first entry that was edited, deleted or inserted. Someone who rewrites
//! every entry after a point, and the head, can only be caught against a head recorded
//! elsewhere: the server logs the head when it starts, and `verify` prints it.

use axum::Router;
use axum::extract::{Query, State};
use axum::routing::get;
use episode::EpisodeId;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::AppState;
use crate::accounts::Role;
use crate::auth::AuthUser;
use crate::error::AppError;
use crate::store::{ChainedEntry, StoreError, Tx};

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

/// What an entry records. The names `as_str` gives are what the log stores and hashes,
/// and what auditors search by: they never change, and a new action is a new variant.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AuditAction {
    /// A caseload listed the episode (`GET /v1/episodes`, the dashboard's list).
    ListEpisode,
    ReadEpisode,
    ReadTimeline,
    /// The episode as a FHIR Bundle.
    ReadFhir,
    /// The reconciliation lists read the episode.
    Reconcile,
    RecordEvent,
    SetFact,
    EditPlan,
    /// A manager moved the episode to another team (detail: the team).
    Transfer,
    /// A device received changes of the episode, or the whole of it.
    SyncRead,
    /// A device brought a new episode.
    SyncOpen,
    /// A device's changes were stored.
    SyncWrite,
    /// A device handed over what it recorded of an episode that left its teams.
    SyncHandover,
    /// A person signed in through the identity provider (no episode).
    OidcSignIn,
    /// The identity provider's sign-in was refused (no episode).
    OidcSignInRefused,
}

impl AuditAction {
    /// The name stored in the log.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ListEpisode => "list_episode",
            Self::ReadEpisode => "read_episode",
            Self::ReadTimeline => "read_timeline",
            Self::ReadFhir => "read_fhir",
            Self::Reconcile => "reconcile",
            Self::RecordEvent => "record_event",
            Self::SetFact => "set_fact",
            Self::EditPlan => "edit_plan",
            Self::Transfer => "transfer",
            Self::SyncRead => "sync_read",
            Self::SyncOpen => "sync_open",
            Self::SyncWrite => "sync_write",
            Self::SyncHandover => "sync_handover",
            Self::OidcSignIn => "oidc_sign_in",
            Self::OidcSignInRefused => "oidc_sign_in_refused",
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

/// Appends one entry to the chain, of `action`; `detail` is a record id or a fact's name, never a value a patient
/// could be known by.
pub fn log(
    tx: &mut dyn Tx,
    who: &Who,
    at_ms: i64,
    action: AuditAction,
    episode: Option<EpisodeId>,
    detail: Option<&str>,
) -> Result<(), StoreError> {
    // The head, read and moved in this transaction (under a row lock on PostgreSQL): two
    // appends never chain from the same entry, whichever replica makes them.
    let (last, prev) = tx.lock_audit_head()?;
    let row = Row {
        n: last + 1,
        at: at_ms,
        user_id: who.user_id.clone(),
        username: who.username.clone(),
        device: who.device.clone(),
        via: who.via.as_str().to_owned(),
        action: action.as_str().to_owned(),
        episode: episode.map(|e| e.to_string()),
        detail: detail.map(str::to_owned),
    };
    let hash = entry_hash(&prev, &row);
    tx.append_audit(&ChainedEntry { row, prev_hash: prev, hash })
}

/// An entry's columns, as the chain hashes them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    pub n: i64,
    pub at: i64,
    pub user_id: String,
    pub username: String,
    pub device: String,
    pub via: String,
    pub action: String,
    pub episode: Option<String>,
    pub detail: Option<String>,
}

/// The hash before the first entry.
pub const GENESIS: [u8; 32] = [0; 32];

/// An entry's hash: SHA-256 of a version tag, the previous entry's hash, and every
/// column in a fixed order, each number as 8 bytes big-endian and each text as its
/// length (4 bytes big-endian) and its UTF-8 bytes, an absent text as one 0 byte and a
/// present one as a 1 byte before it. No two different entries encode alike.
pub fn entry_hash(prev: &[u8], row: &Row) -> Vec<u8> {
    fn text(hasher: &mut Sha256, text: &str) {
        hasher.update((text.len() as u32).to_be_bytes());
        hasher.update(text.as_bytes());
    }
    fn optional(hasher: &mut Sha256, value: Option<&str>) {
        match value {
            None => hasher.update([0u8]),
            Some(value) => {
                hasher.update([1u8]);
                text(hasher, value);
            }
        }
    }
    let mut hasher = Sha256::new();
    hasher.update(b"tether-audit-v1\0");
    hasher.update((prev.len() as u32).to_be_bytes());
    hasher.update(prev);
    hasher.update(row.n.to_be_bytes());
    hasher.update(row.at.to_be_bytes());
    for value in [&row.user_id, &row.username, &row.device, &row.via, &row.action] {
        text(&mut hasher, value);
    }
    optional(&mut hasher, row.episode.as_deref());
    optional(&mut hasher, row.detail.as_deref());
    hasher.finalize().to_vec()
}

/// How many entries are read at a time when the whole chain is walked.
const CHAIN_PAGE: usize = 1000;

/// Chains the entries written before the log was a chain (schema 6's upgrade), in the
/// upgrade's transaction; the migration then puts the trigger that refuses updates back.
pub fn chain_existing(tx: &mut dyn Tx) -> Result<(), StoreError> {
    let mut prev = GENESIS.to_vec();
    // Each entry is written once its successor is known to exist: the last one also
    // moves the head, which only moves on.
    let mut held: Option<ChainedEntry> = None;
    loop {
        let after = held.as_ref().map_or(0, |e| e.row.n);
        let page = tx.audit_chain(after, CHAIN_PAGE)?;
        if page.is_empty() {
            break;
        }
        for entry in page {
            let hash = entry_hash(&prev, &entry.row);
            let chained = ChainedEntry { row: entry.row, prev_hash: std::mem::replace(&mut prev, hash.clone()), hash };
            if let Some(before) = held.replace(chained) {
                tx.rechain_audit(&before, false)?;
            }
        }
    }
    if let Some(last) = held {
        tx.rechain_audit(&last, true)?;
    }
    Ok(())
}

/// The chain as it should be: how many entries, and the last one's hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chain {
    pub entries: i64,
    pub head: Vec<u8>,
}

/// Where the chain breaks: the first entry that is not as it was written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the audit log is broken at entry {n}: {why}")]
pub struct Broken {
    pub n: i64,
    pub why: String,
}

/// Walks the whole chain from the first entry: every number in turn, every entry's
/// `prev_hash` the hash of the one before, every hash that of its columns, and the head
/// at the last entry. `Ok(Err(broken))` names the first entry that is not as written.
///
/// The server may be appending meanwhile (PostgreSQL's replicas): an entry and the head
/// that points at it commit together, so the walk reads pages until there are no more
/// entries, then the head, and goes on walking if the head has moved past them.
pub fn verify(tx: &mut dyn Tx) -> Result<Result<Chain, Broken>, StoreError> {
    let (mut prev, mut last) = (GENESIS.to_vec(), 0i64);
    loop {
        let page = tx.audit_chain(last, CHAIN_PAGE)?;
        if page.is_empty() {
            let (head_n, head_hash) = tx.audit_head()?;
            if head_n > last {
                // Appended since the walk read its last page, or deleted: read on.
                if !tx.audit_chain(last, 1)?.is_empty() {
                    continue;
                }
            }
            if head_n != last || head_hash != prev {
                return Ok(Err(Broken {
                    n: last + 1,
                    why: format!(
                        "the head says the log ends at entry {head_n}, but it ends at entry {last}: entries at the end deleted"
                    ),
                }));
            }
            return Ok(Ok(Chain { entries: last, head: prev }));
        }
        for ChainedEntry { row, prev_hash, hash } in page {
            let broken = |n: i64, why: String| Ok(Err(Broken { n, why }));
            if row.n != last + 1 {
                return broken(last + 1, format!("it is missing (entry {} follows entry {last}): deleted", row.n));
            }
            if prev_hash != prev {
                let before = if last == 0 { "the chain's start".to_owned() } else { format!("entry {last}") };
                return broken(
                    row.n,
                    format!(
                        "it does not follow {before} (its prev_hash is not that hash): inserted, or an entry before it replaced"
                    ),
                );
            }
            if hash != entry_hash(&prev_hash, &row) {
                return broken(row.n, "its columns do not match its hash: edited".to_owned());
            }
            (prev, last) = (hash, row.n);
        }
    }
}

/// The head as stored (the last entry's number and hash), for the server's log at start.
pub fn head(tx: &mut dyn Tx) -> Result<Chain, StoreError> {
    let (entries, head) = tx.audit_head()?;
    Ok(Chain { entries, head })
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
