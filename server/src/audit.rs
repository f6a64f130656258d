//! The audit log: every read and write of an episode, by the API, the dashboard or a
//! device's sync — who, on which device, when, and what. Kept in the database, in the
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

use axum::Router;
use axum::extract::{Query, State};
use axum::routing::get;
use episode::EpisodeId;
use rusqlite::{Connection, Transaction, params};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::AppState;
use crate::accounts::Role;
use crate::auth::AuthUser;
use crate::error::AppError;
use crate::office;

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
    fn as_str(self) -> &'static str {
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

/// Appends one entry to the chain. `action` is a fixed name (`read_episode`,
/// `record_event`, …); `detail` is a record id or a fact's name, never a value a patient
/// could be known by.
pub fn log(
    tx: &Transaction<'_>,
    who: &Who,
    at_ms: i64,
    action: &'static str,
    episode: Option<EpisodeId>,
    detail: Option<&str>,
) -> rusqlite::Result<()> {
    // The head, read and moved in this transaction (`SELECT … FOR UPDATE` on PostgreSQL):
    // two appends never chain from the same entry.
    let (last, prev): (i64, Vec<u8>) = tx
        .prepare_cached("SELECT n, hash FROM audit_head WHERE id = 1")?
        .query_row([], |r| Ok((r.get(0)?, r.get(1)?)))?;
    let row = Row {
        n: last + 1,
        at: at_ms,
        user_id: who.user_id.clone(),
        username: who.username.clone(),
        device: who.device.clone(),
        via: who.via.as_str().to_owned(),
        action: action.to_owned(),
        episode: episode.map(|e| e.to_string()),
        detail: detail.map(str::to_owned),
    };
    let hash = entry_hash(&prev, &row);
    tx.prepare_cached(
        "INSERT INTO audit (n, at, user_id, username, device, via, action, episode, detail, prev_hash, hash)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
    )?
    .execute(params![
        row.n,
        row.at,
        row.user_id,
        row.username,
        row.device,
        row.via,
        row.action,
        row.episode,
        row.detail,
        prev,
        hash
    ])?;
    tx.prepare_cached("UPDATE audit_head SET n = ?1, hash = ?2 WHERE id = 1")?.execute(params![row.n, hash])?;
    Ok(())
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

fn read_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<(Row, Vec<u8>, Vec<u8>)> {
    Ok((
        Row {
            n: r.get(0)?,
            at: r.get(1)?,
            user_id: r.get(2)?,
            username: r.get(3)?,
            device: r.get(4)?,
            via: r.get(5)?,
            action: r.get(6)?,
            episode: r.get(7)?,
            detail: r.get(8)?,
        },
        r.get(9)?,
        r.get(10)?,
    ))
}

const CHAIN_COLUMNS: &str = "n, at, user_id, username, device, via, action, episode, detail, prev_hash, hash";

/// Chains the entries written before the log was a chain (schema 6's upgrade), in the
/// upgrade's transaction, and puts the trigger that refuses updates back.
pub fn chain_existing(tx: &Transaction<'_>) -> rusqlite::Result<()> {
    let rows = {
        let mut statement = tx.prepare(&format!("SELECT {CHAIN_COLUMNS} FROM audit ORDER BY n"))?;
        statement.query_map([], read_row)?.collect::<rusqlite::Result<Vec<_>>>()?
    };
    let mut prev = GENESIS.to_vec();
    let mut last = 0;
    for (row, _, _) in rows {
        let hash = entry_hash(&prev, &row);
        tx.prepare_cached("UPDATE audit SET prev_hash = ?1, hash = ?2 WHERE n = ?3")?
            .execute(params![prev, hash, row.n])?;
        (prev, last) = (hash, row.n);
    }
    if last > 0 {
        tx.execute("UPDATE audit_head SET n = ?1, hash = ?2 WHERE id = 1", params![last, prev])?;
    }
    tx.execute_batch(
        "CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit
         BEGIN
             SELECT RAISE(ABORT, 'the audit log is append-only');
         END;",
    )
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
/// at the last entry. `Err(Ok(broken))` names the first entry that is not as written.
pub fn verify(conn: &Connection) -> Result<Result<Chain, Broken>, rusqlite::Error> {
    let mut statement = conn.prepare(&format!("SELECT {CHAIN_COLUMNS} FROM audit ORDER BY n"))?;
    let mut rows = statement.query([])?;
    let (mut prev, mut last) = (GENESIS.to_vec(), 0i64);
    while let Some(r) = rows.next()? {
        let (row, prev_hash, hash) = read_row(r)?;
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
    let (head_n, head_hash): (i64, Vec<u8>) =
        conn.query_row("SELECT n, hash FROM audit_head WHERE id = 1", [], |r| Ok((r.get(0)?, r.get(1)?)))?;
    if head_n != last || head_hash != prev {
        return Ok(Err(Broken {
            n: last + 1,
            why: format!(
                "the head says the log ends at entry {head_n}, but it ends at entry {last}: entries at the end deleted"
            ),
        }));
    }
    Ok(Ok(Chain { entries: last, head: prev }))
}

/// The head as stored (the last entry's number and hash), for the server's log at start.
pub fn head(conn: &Connection) -> rusqlite::Result<Chain> {
    conn.query_row("SELECT n, hash FROM audit_head WHERE id = 1", [], |r| {
        Ok(Chain { entries: r.get(0)?, head: r.get(1)? })
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
pub fn entries(conn: &Connection, episode: EpisodeId) -> rusqlite::Result<Vec<Entry>> {
    let mut statement =
        conn.prepare_cached(&format!("SELECT {ENTRY_COLUMNS} FROM audit a WHERE a.episode = ?1 ORDER BY a.n"))?;
    let rows = statement.query_map([episode.to_string()], read_entry)?;
    rows.collect()
}

const ENTRY_COLUMNS: &str = "a.n, a.at, a.user_id, a.username, a.device, a.via, a.action, a.episode, a.detail";

fn read_entry(r: &rusqlite::Row<'_>) -> rusqlite::Result<Entry> {
    let via: String = r.get(5)?;
    Ok(Entry {
        n: r.get(0)?,
        at: jiff::Timestamp::from_millisecond(r.get(1)?).unwrap_or(jiff::Timestamp::UNIX_EPOCH),
        user_id: r.get(2)?,
        username: r.get(3)?,
        device: r.get(4)?,
        via: match via.as_str() {
            "dashboard" => Via::Dashboard,
            "sync" => Via::Sync,
            _ => Via::Api,
        },
        action: r.get(6)?,
        episode: r.get(7)?,
        detail: r.get(8)?,
    })
}

/// Whose entries a reader may see: those of the episodes of `teams` (by each episode's
/// team now), and, for an admin, the entries that name no episode (sign-ins through the
/// identity provider); narrowed to one episode when given.
#[derive(Debug, Clone, Copy)]
pub struct Scope<'a> {
    pub teams: &'a [String],
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
pub fn page(conn: &Connection, scope: Scope<'_>, cursor: Cursor, limit: usize) -> rusqlite::Result<Vec<Entry>> {
    use rusqlite::types::Value;
    let mut params: Vec<Value> = Vec::new();
    let mut wanted = Vec::new();
    if !scope.teams.is_empty() {
        let slots: Vec<String> = scope
            .teams
            .iter()
            .map(|team| {
                params.push(Value::Text(team.clone()));
                format!("?{}", params.len())
            })
            .collect();
        wanted.push(format!("e.team IN ({})", slots.join(", ")));
    }
    if scope.unscoped {
        wanted.push("a.episode IS NULL".to_owned());
    }
    if wanted.is_empty() {
        return Ok(Vec::new());
    }
    let mut filter = format!("({})", wanted.join(" OR "));
    if let Some(episode) = scope.episode {
        params.push(Value::Text(episode.to_string()));
        filter.push_str(&format!(" AND a.episode = ?{}", params.len()));
    }
    let order = match cursor {
        Cursor::After(n) => {
            params.push(Value::Integer(n));
            format!(" AND a.n > ?{} ORDER BY a.n ASC", params.len())
        }
        Cursor::Before(Some(n)) => {
            params.push(Value::Integer(n));
            format!(" AND a.n < ?{} ORDER BY a.n DESC", params.len())
        }
        Cursor::Before(None) => " ORDER BY a.n DESC".to_owned(),
    };
    params.push(Value::Integer(i64::try_from(limit).unwrap_or(i64::MAX)));
    let sql = format!(
        "SELECT {ENTRY_COLUMNS} FROM audit a LEFT JOIN episodes e ON e.id = a.episode WHERE {filter}{order} LIMIT ?{}",
        params.len()
    );
    let mut statement = conn.prepare_cached(&sql)?;
    let rows = statement.query_map(rusqlite::params_from_iter(params), read_entry)?;
    rows.collect()
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

#[derive(Serialize)]
struct AuditAnswer {
    episode: Option<EpisodeId>,
    entries: Vec<Entry>,
    /// The `after` of the next page, when there may be one.
    next_after: Option<i64>,
}

/// `GET /v1/audit[?episode=ID][&after=N][&limit=N]`: for team managers and admins, the
/// entries of their teams' episodes, oldest first, a page at a time (`next_after` gives
/// the next page); `episode` narrows it to one of those episodes.
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
