//! The audit log: every read and write of an episode, by the API, the dashboard or a
//! device's sync, and what the server sends and changes itself (`outbox`, `Via::Server`)
//! — who, on which device, when, and what. Kept in the database, in the
//! same transaction as what it records, and append-only (the schema's triggers refuse to
//! change or delete a row). `GET /v1/audit` shows team managers and admins the entries of
//! their teams' episodes a page at a time, and `?episode=ID` one episode's; reading it is
//! itself an entry (`read_audit`).
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

use axum::extract::{Query, State};
use episode::EpisodeId;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::AppState;
use crate::accounts::Role;
use crate::auth::AuthUser;
use crate::error::AppError;
use crate::office;
use crate::store::{ChainedEntry, StoreError, Tx};

pub(crate) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(audit))
}

/// The user id and name the server's own entries carry.
pub const SERVER: &str = "tether server";

/// Where a read or write came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Via {
    Api,
    Dashboard,
    Sync,
    /// The server itself: what its own workers do (`outbox`), for no one signed in.
    Server,
}

impl Via {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Api => "api",
            Self::Dashboard => "dashboard",
            Self::Sync => "sync",
            Self::Server => "server",
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
    /// A manager read the audit log (of an episode, or of the teams).
    ReadAudit,
    /// The outbox delivered a message (detail: its kind and key).
    OutboxSent,
    /// A message's send failed and will be tried again.
    OutboxRetry,
    /// A message's send failed for good (until retried by hand).
    OutboxFailed,
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
            Self::ReadAudit => "read_audit",
            Self::OutboxSent => "outbox_sent",
            Self::OutboxRetry => "outbox_retry",
            Self::OutboxFailed => "outbox_failed",
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
        Self {
            user_id: user.user_id.to_string(),
            username: user.username.clone(),
            device: user.device_id.to_string(),
            via,
        }
    }

    /// The server itself, on its own device (`episodes::server_device`): its user id and
    /// name are [`SERVER`], which no account can have (a username holds no space;
    /// `accounts::Username`).
    pub fn server(tx: &mut dyn Tx) -> Result<Self, StoreError> {
        let device = crate::episodes::server_device(tx)?;
        Ok(Self { user_id: SERVER.into(), username: SERVER.into(), device: device.into(), via: Via::Server })
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
    // appends never chain from the same entry, whichever replica makes them. A sync batch
    // on PostgreSQL chains its entries when it commits (`Transaction::number_at_commit`).
    tx.log_audit(Row {
        n: 0,
        at: at_ms,
        user_id: who.user_id.clone(),
        username: who.username.clone(),
        device: who.device.clone(),
        via: who.via.as_str().to_owned(),
        action: action.as_str().to_owned(),
        episode: episode.map(|e| e.to_string()),
        detail: detail.map(str::to_owned),
    })
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
#[derive(Debug, Serialize, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct Entry {
    pub n: i64,
    #[serde(with = "episode::json::time")]
    #[schema(value_type = String, format = DateTime)]
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

/// Whose entries a reader may see: those of the episodes of `teams` (by each episode's
/// team now), and, for an admin, the entries that name no episode (sign-ins through the
/// identity provider); narrowed to one episode when given.
#[derive(Debug, Clone, Copy)]
pub struct Scope<'a> {
    pub teams: &'a [crate::accounts::TeamId],
    pub unscoped: bool,
    pub episode: Option<EpisodeId>,
}

/// Where a page starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cursor {
    /// The entries after entry `n`, oldest first: reading the whole log in turn (the
    /// API's order; `After(0)` is the start).
    After(i64),
    /// The entries before entry `n`, newest first (the dashboard's order; `None`: from the
    /// newest).
    Before(Option<i64>),
}

/// Up to `limit` entries of `scope` from `cursor`, in the cursor's order.
pub fn page(tx: &mut dyn Tx, scope: Scope<'_>, cursor: Cursor, limit: usize) -> Result<Vec<Entry>, StoreError> {
    tx.audit_page(scope, cursor, limit)
}

/// Whether a user of `role` may read the audit log: team managers and admins.
pub fn may_read(role: Role) -> bool {
    matches!(role, Role::TeamManager | Role::Admin)
}

/// Why anyone else may not.
pub const MAY_READ: &str = "only a team manager or an admin may read the audit log";

/// The most entries one page may hold, and how many a page holds when the reader does not
/// say.
pub const MAX_PAGE: usize = 1000;
pub const DEFAULT_PAGE: usize = 100;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AuditQuery {
    episode: Option<String>,
    after: Option<String>,
    limit: Option<String>,
}

/// A page of the audit log.
#[derive(Serialize, utoipa::ToSchema)]
struct AuditAnswer {
    #[schema(value_type = Option<String>, format = "uuid")]
    episode: Option<EpisodeId>,
    entries: Vec<Entry>,
    /// The `after` of the next page, when there may be one.
    next_after: Option<i64>,
}

/// `GET /v1/audit[?episode=ID][&after=N][&limit=N]`: for team managers and admins, the
/// entries of their teams' episodes, oldest first, a page at a time (`next_after` gives
/// the next page); `episode` narrows it to one of those episodes.
#[utoipa::path(
    get,
    path = "/v1/audit",
    tag = "audit",
    security(("bearer" = [])),
    params(
        ("episode" = Option<String>, Query, format = "uuid", description = "Only this episode's entries"),
        ("after" = Option<i64>, Query, minimum = 0, description = "The `next_after` of the page before"),
        ("limit" = Option<i64>, Query, minimum = 1, maximum = 1000, description = "Entries a page holds (100 if not given)"),
    ),
    responses(
        (status = 200, description = "A page of entries, oldest first", body = AuditAnswer),
        (status = 400, description = "The query is not what this route takes", body = crate::error::ErrorBody),
        crate::error::responses::Unauthorized,
        (status = 403, description = "Only a team manager or an admin may read the audit log", body = crate::error::ErrorBody),
        crate::error::responses::EpisodeNotFound,
    )
)]
async fn audit(
    State(state): State<AppState>,
    user: AuthUser,
    query: Result<Query<AuditQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<axum::Json<AuditAnswer>, AppError> {
    if !may_read(user.role) {
        return Err(AppError::Forbidden(MAY_READ));
    }
    let Query(query) = query.map_err(|_| {
        AppError::InvalidQuery("the audit log takes `episode`, `after` and `limit`, and nothing else".into())
    })?;
    let episode = match query.episode.as_deref() {
        None => None,
        Some(text) => Some(
            text.parse::<EpisodeId>()
                .map_err(|_| AppError::InvalidQuery("`episode` must be an episode id (a UUID)".into()))?,
        ),
    };
    let after = match query.after.as_deref() {
        None => 0,
        Some(text) => text
            .parse::<i64>()
            .ok()
            .filter(|n| *n >= 0)
            .ok_or_else(|| AppError::InvalidQuery("`after` must be an entry's number (0 or more)".into()))?,
    };
    let limit = match query.limit.as_deref() {
        None => DEFAULT_PAGE,
        Some(text) => text
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=MAX_PAGE).contains(n))
            .ok_or_else(|| AppError::InvalidQuery(format!("`limit` must be a number from 1 to {MAX_PAGE}")))?,
    };
    let role = user.role;
    let who = Who::new(&user, Via::Api);
    let read = office::audit(
        &state,
        who,
        role,
        user.teams,
        office::AuditRequest { episode, cursor: Cursor::After(after), limit },
    )
    .await?;
    let next_after = if read.more { read.entries.last().map(|e| e.n) } else { None };
    Ok(axum::Json(AuditAnswer { episode, entries: read.entries, next_after }))
}
