//! The storage boundary: every statement the server runs is behind [`Tx`], implemented
//! for SQLite (`sqlite`, the embedded default) and PostgreSQL (`postgres`). Nothing
//! outside this module writes SQL; the rest of the server calls typed methods.
//!
//! [`Db`] is the shared handle. `Db::call` runs a closure on tokio's blocking pool with a
//! [`Conn`]: its methods run in autocommit, and `conn.transaction()` begins a
//! [`Transaction`] that rolls back unless committed. SQLite is one connection behind a
//! mutex; PostgreSQL a small pool. See `docs/adr/0004-storage.md` for why the interface
//! is synchronous, how `seq` stays in commit order, and how writes compare-and-set.
//!
//! - `mod.rs`: the traits, the rows they carry, [`StoreError`], [`Db`].
//! - `target.rs`: `--db`, a path or a `postgres://` URL whose password never shows.
//! - `sqlite.rs`, `postgres.rs`: the two implementations.
//! - `notify.rs`: on PostgreSQL, each transaction's changed episodes announced at commit,
//!   and the listener that hears other replicas' announcements ([`Db::listen`]).

mod notify;
mod postgres;
mod sqlite;
mod target;

use std::sync::{Arc, Mutex, PoisonError};

use automerge::ActorId;
use episode::EpisodeId;

pub use self::notify::{LISTENER_APPLICATION, Listener};
pub use self::postgres::{PgError, SCHEMA_FILES as POSTGRES_SCHEMA};
pub use target::Target;

use crate::accounts::{DeviceId, TeamId, UserId};
use crate::audit::{Cursor as AuditCursor, Entry, Row as AuditRow, Scope as AuditScope};
pub use crate::auth::store::PendingSignIn;
use crate::caseload::{OpenAction, Rates, Summary};
use crate::error::AppError;

/// Why a storage operation failed. None of these carries patient data: a damaged value
/// is named by its table and column, never quoted.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("SQLite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("PostgreSQL: {0}")]
    Postgres(#[from] PgError),
    /// A stored value no build writes: the database was changed by hand or damaged.
    #[error("the database is damaged: {0}")]
    Damaged(String),
    /// The stored document of an episode does not load.
    #[error("the stored document of episode {id} is damaged: {error}")]
    Document { id: EpisodeId, error: episode::document::DocumentError },
    /// Another writer changed the episode since it was loaded: load it again and retry.
    #[error("episode {0} was changed by another writer meanwhile")]
    Conflict(EpisodeId),
    /// A row with the same key exists (a team id, a username).
    #[error("already exists")]
    Duplicate,
    /// No connection came free in time.
    #[error("the database is busy: no connection came free within {0} seconds")]
    Busy(u64),
}

impl StoreError {
    /// A damaged value, named by where it is kept.
    pub fn damaged(table: &str, column: &str, what: &str) -> Self {
        Self::Damaged(format!("{table}.{column} holds {what}"))
    }

    /// A failure of the transaction that passes: PostgreSQL broke a deadlock or a
    /// serialization conflict by failing it. Nothing of it was stored, and the same
    /// work tried again may succeed.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Postgres(error) => postgres::is_transient(error),
            _ => false,
        }
    }
}

impl From<StoreError> for AppError {
    fn from(error: StoreError) -> Self {
        Self::Store(error)
    }
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Parses a stored episode id; one that is not a UUID is damage, never skipped.
pub(crate) fn parse_id(text: &str, table: &str, column: &str) -> Result<EpisodeId> {
    text.parse().map_err(|_| StoreError::damaged(table, column, "an episode id that is not a UUID"))
}

/// An episode as stored: its team, its `seq`, its snapshot and the changes since.
#[derive(Debug)]
pub struct EpisodeRow {
    pub team: TeamId,
    pub seq: i64,
    pub snapshot: Vec<u8>,
    pub changes: Vec<Vec<u8>>,
}

/// What a sign-in needs to know about a username.
#[derive(Debug)]
pub struct Login {
    pub user_id: UserId,
    pub password_hash: String,
    pub disabled: bool,
}

/// A presented refresh token's row, with its session's and user's.
#[derive(Debug)]
pub struct PresentedToken {
    pub session: String,
    pub expires_at: i64,
    pub rotated_at: Option<i64>,
    pub user_id: UserId,
    pub session_device: String,
    pub revoked_at: Option<i64>,
    pub disabled: bool,
}

/// A user as listed: id, username, role, disabled, and the identity provider they sign
/// in with, if any.
pub type UserRow = (UserId, String, String, bool, Option<String>);

/// An audit entry as the chain holds it: its columns (`audit::Row`), the hash of the
/// entry before it, and its own hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainedEntry {
    pub row: AuditRow,
    pub prev_hash: Vec<u8>,
    pub hash: Vec<u8>,
}

/// A device's registration: the user it is registered to, and the SHA-256 of its key
/// (`None`: registered without one).
#[derive(Debug)]
pub struct Registration {
    pub user_id: UserId,
    pub key_hash: Option<Vec<u8>>,
}

/// An episode's summary as stored, with its open actions and appointments.
#[derive(Debug)]
pub struct SummaryRecord<'a> {
    pub episode: EpisodeId,
    pub seq: i64,
    pub pathway: &'a str,
    pub patient_ref: &'a str,
    pub open_actions: i64,
    pub overdue_actions: i64,
    pub conflicts: i64,
    pub duplicates: i64,
    pub unfiled: i64,
    pub next_due: i64,
    pub evaluated_at: i64,
    pub actions: Vec<ActionRecord>,
    pub appointments: Vec<AppointmentRecord>,
}

/// An open or overdue action of a summary.
#[derive(Debug)]
pub struct ActionRecord {
    pub action: String,
    pub code: &'static str,
    pub owner: String,
    pub priority: String,
    pub state: String,
    pub due: i64,
}

/// An appointment of a summary: attended, or the reason it was missed.
#[derive(Debug)]
pub struct AppointmentRecord {
    pub event: String,
    pub at: i64,
    pub outcome: String,
}

/// A message the server comes to owe a system outside it (schema 9; `crate::outbox`).
#[derive(Debug, Clone, Copy)]
pub struct NewOutboxItem<'a> {
    /// What it is, and so which sender sends it (`epr`, `alert_webhook`, …).
    pub kind: &'a str,
    /// What makes it one message: owing it again changes nothing.
    pub dedupe_key: &'a str,
    pub team: Option<&'a str>,
    pub episode: Option<EpisodeId>,
    /// What the sender needs to send it, as the sender reads it (JSON).
    pub payload: &'a str,
    /// When it is owed (Unix milliseconds): due from then.
    pub now_ms: i64,
}

/// A message claimed from the outbox to be sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxItem {
    pub id: i64,
    pub kind: String,
    pub dedupe_key: String,
    pub team: Option<String>,
    pub episode: Option<EpisodeId>,
    pub payload: String,
    /// The claims made of it, this one included: a claim is finished only at its own count.
    pub attempts: i64,
}

/// One message of an episode, as the dashboard shows it (times in Unix milliseconds).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxRow {
    pub kind: String,
    pub dedupe_key: String,
    pub state: String,
    pub attempts: i64,
    pub last_error: Option<String>,
    pub created_at: i64,
    pub next_attempt_at: i64,
    pub sent_at: Option<i64>,
}

/// How many of an episode's messages of a kind are in a state not yet sent, and why the
/// last attempt of one of them failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxCount {
    pub episode: EpisodeId,
    pub kind: String,
    pub state: String,
    pub count: i64,
    pub last_error: Option<String>,
}

/// A scheduled job, which one replica at a time runs ([`Tx::try_job_lock`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Job {
    /// Remaking the summaries the clock has moved on (`serve::spawn_reevaluation`).
    Reevaluation,
}

impl Job {
    /// The job's advisory lock key: distinct from the schema upgrades' lock.
    pub fn key(self) -> i64 {
        match self {
            Self::Reevaluation => 0x7e74_6865_7202,
        }
    }
}

/// Every statement the server runs, typed. Both backends implement it for a connection in
/// autocommit and for a transaction.
pub trait Tx {
    // Server-wide settings.
    fn meta(&mut self, key: &str) -> Result<Option<String>>;
    fn set_meta(&mut self, key: &str, value: &str) -> Result<()>;
    /// Sets a setting only if it has no value yet (`ON CONFLICT DO NOTHING`): of two
    /// processes setting it at once, the first to commit wins and both read its value.
    fn add_meta(&mut self, key: &str, value: &str) -> Result<()>;
    /// The schema version the database is at.
    fn schema_version(&mut self) -> Result<i64>;
    /// Takes `job`'s lock for the rest of the transaction if no one holds it, else says
    /// no at once: so that of several replicas on one database one at a time runs each
    /// scheduled job (PostgreSQL's `pg_try_advisory_xact_lock`; on SQLite the one
    /// process is the only runner, and this is always yes).
    fn try_job_lock(&mut self, job: Job) -> Result<bool>;

    // Savepoints: group commit writes each request inside one.
    fn savepoint(&mut self) -> Result<()>;
    fn release_savepoint(&mut self) -> Result<()>;
    fn rollback_to_savepoint(&mut self) -> Result<()>;

    // The change sequence: taken in commit order (ADR 0004).
    /// Takes the next `seq`, holding the counter until the transaction ends.
    fn next_seq(&mut self) -> Result<i64>;
    /// The highest `seq` committed (or taken by this transaction).
    fn current_seq(&mut self) -> Result<i64>;
    /// Holds the counter until the transaction ends without taking a `seq`: no other
    /// writer can store a change of any episode meanwhile (the audit head is taken after
    /// it, `lock_audit_head`).
    fn lock_seq(&mut self) -> Result<()>;
    /// Holds the episode's row until the transaction ends: no other writer can change it
    /// meanwhile; unlike [`Tx::lock_seq`] it does not stop writers of other episodes (on
    /// SQLite, whose one writer holds everything, the same thing). Every writer of an
    /// episode takes its row before the counter: a sync writer holding the row takes the
    /// counter only when it commits, so one taking them the other way round deadlocks
    /// with it. The office, a transfer and the outbox take it first; a sync request
    /// retried after a conflict takes it first, so that it cannot lose the race again.
    fn lock_episode(&mut self, _id: EpisodeId) -> Result<()> {
        self.lock_seq()
    }

    // Episodes.
    /// Reads ahead, in one statement where a round trip is dear (PostgreSQL), what a sync
    /// request is about to ask of these episodes for `device`: each one's team and
    /// `seq`, the device's sync state and drop, the receipts; and who has signed in on
    /// the device. The answers serve [`Tx::team_of`], [`Tx::sync_state`], [`Tx::dropped`],
    /// [`Tx::receipts`], [`Tx::receipts_since`] and [`Tx::device_users`] until the next
    /// savepoint, kept current by this transaction's own writes. SQLite reads each when
    /// asked (a function call): nothing to do.
    fn prefetch(&mut self, _ids: &[EpisodeId], _device: &DeviceId) -> Result<()> {
        Ok(())
    }
    fn team_of(&mut self, id: EpisodeId) -> Result<Option<(TeamId, i64)>>;
    fn load_episode(&mut self, id: EpisodeId) -> Result<Option<EpisodeRow>>;
    /// Stores a new episode; one stored meanwhile by another writer is a `Conflict`.
    fn insert_episode(
        &mut self,
        id: EpisodeId,
        team: &TeamId,
        seq: i64,
        snapshot: &[u8],
        created_at: i64,
    ) -> Result<()>;
    /// Appends a change to an episode still at `loaded`, moving it to `seq`.
    fn append_change(&mut self, id: EpisodeId, loaded: i64, seq: i64, bytes: &[u8]) -> Result<()>;
    /// Replaces the snapshot (and drops the changes) of an episode still at `loaded`.
    fn replace_snapshot(&mut self, id: EpisodeId, loaded: i64, seq: i64, snapshot: &[u8]) -> Result<()>;
    /// Moves an episode still at `loaded` to another team, at `seq`.
    fn set_team(&mut self, id: EpisodeId, loaded: i64, seq: i64, team: &TeamId) -> Result<()>;
    /// The episodes of `teams` with `cursor < seq <= upto`, oldest change first.
    fn changed_since(
        &mut self,
        teams: &[TeamId],
        cursor: i64,
        upto: i64,
        limit: usize,
    ) -> Result<Vec<(EpisodeId, i64)>>;
    /// The episodes (of `teams`, or of every team) whose summary is missing, older than
    /// the episode, or due by the clock at `now` (Unix seconds), oldest change first; at
    /// most `limit`.
    fn stale_summaries(&mut self, now: i64, teams: Option<&[TeamId]>, limit: usize) -> Result<Vec<EpisodeId>>;

    // Sync states, drops and receipts, by `DeviceId`. Receipts are noted on the server's
    // own device (`server:…`) too: a `DeviceId` the server made for itself
    // (`DeviceId::server_made`), which reads back from its column like a phone's.
    fn sync_state(&mut self, id: EpisodeId, device: &DeviceId) -> Result<Option<Vec<u8>>>;
    fn put_sync_state(&mut self, id: EpisodeId, device: &DeviceId, state: &[u8]) -> Result<()>;
    /// The episodes the device holds, with their teams now.
    fn held_episodes(&mut self, device: &DeviceId) -> Result<Vec<(EpisodeId, TeamId)>>;
    /// The episodes the device holds that are in none of `teams` now (asked by every
    /// sync request: PostgreSQL filters them where they are, not each held episode sent).
    fn held_outside(&mut self, device: &DeviceId, teams: &[TeamId]) -> Result<Vec<EpisodeId>> {
        Ok(self
            .held_episodes(device)?
            .into_iter()
            .filter(|(_, team)| !teams.contains(team))
            .map(|(id, _)| id)
            .collect())
    }
    fn record_drop(&mut self, id: EpisodeId, device: &DeviceId, seq: i64) -> Result<()>;
    fn dropped(&mut self, id: EpisodeId, device: &DeviceId) -> Result<bool>;
    fn drops_since(&mut self, device: &DeviceId, cursor: i64, upto: i64) -> Result<Vec<EpisodeId>>;
    /// Notes the receipt of each event not yet noted, at `seq` (the one the episode was
    /// just given, from [`Tx::next_seq`]; schema 8).
    fn record_receipts(
        &mut self,
        id: EpisodeId,
        events: &[String],
        device: &DeviceId,
        at_ms: i64,
        seq: i64,
    ) -> Result<()>;
    /// Each noted event's receipt time (Unix milliseconds).
    fn receipts(&mut self, id: EpisodeId) -> Result<Vec<(String, i64)>>;
    /// The events noted with `seq > after` and their receipt times, by event.
    fn receipts_since(&mut self, id: EpisodeId, after: i64) -> Result<Vec<(String, i64)>>;

    // Teams and users. Every team a method takes is a `TeamId`, and so is each read
    // off an episode (`team_of`, `held_episodes`, `stale_summaries`, `EpisodeRow`),
    // unchecked (`TeamId::stored`) so that one stored before today's check still loads.
    // What a summary, rate or outbox item reports keeps its team as text, to show.
    fn add_team(&mut self, id: &TeamId, name: &str, created_at: &str) -> Result<()>;
    fn team_exists(&mut self, id: &TeamId) -> Result<bool>;
    fn team_name(&mut self, id: &TeamId) -> Result<Option<String>>;
    fn count_teams(&mut self) -> Result<i64>;
    fn add_user(
        &mut self,
        id: &UserId,
        username: &str,
        password_hash: &str,
        role: &str,
        created_at: &str,
    ) -> Result<()>;
    fn add_user_team(&mut self, user_id: &UserId, team: &TeamId) -> Result<()>;
    /// Returns the user's id, if such a user exists.
    fn set_disabled(&mut self, username: &str, disabled: bool) -> Result<Option<UserId>>;
    fn set_password_hash(&mut self, username: &str, hash: &str) -> Result<()>;
    fn login(&mut self, username: &str) -> Result<Option<Login>>;
    /// An enabled user's username and role.
    fn active_user(&mut self, user_id: &UserId) -> Result<Option<(String, String)>>;
    fn user_teams(&mut self, user_id: &UserId) -> Result<Vec<TeamId>>;

    /// Every user, by username.
    fn list_users(&mut self) -> Result<Vec<UserRow>>;
    fn set_role(&mut self, user_id: &UserId, role: &str) -> Result<()>;
    fn clear_user_teams(&mut self, user_id: &UserId) -> Result<()>;
    /// The usernames of the team's managers who may act (not disabled), sorted.
    fn team_managers(&mut self, team: &TeamId) -> Result<Vec<String>>;
    /// The username of the user with this id, else of the user with this username.
    fn username_of(&mut self, id_or_username: &str) -> Result<Option<String>>;

    // People who sign in with an identity provider, and sign-ins under way (schema 5).
    /// The user a provider's subject is, and whether they are disabled.
    fn identity_user(&mut self, provider: &str, subject: &str) -> Result<Option<(UserId, bool)>>;
    fn add_identity(&mut self, provider: &str, subject: &str, user_id: &UserId, now: i64) -> Result<()>;
    fn touch_identity(&mut self, provider: &str, subject: &str, now: i64) -> Result<()>;
    /// Forgets the pending sign-ins expired at `now`; returns how many are left.
    fn prune_pending_sign_ins(&mut self, now: i64) -> Result<i64>;
    fn put_pending_sign_in(&mut self, state_hash: &str, pending: &PendingSignIn) -> Result<()>;
    /// Takes (deletes and returns) the pending sign-in of a `state`.
    fn take_pending_sign_in(&mut self, state_hash: &str) -> Result<Option<PendingSignIn>>;

    // Sessions, refresh tokens, revoked devices, the sign-in throttle.
    fn insert_session(&mut self, id: &str, user_id: &UserId, device: &DeviceId, now: i64) -> Result<()>;
    fn insert_refresh_token(&mut self, hash: &[u8], session: &str, issued_at: i64, expires_at: i64) -> Result<()>;
    fn presented_token(&mut self, hash: &[u8]) -> Result<Option<PresentedToken>>;
    fn mark_rotated(&mut self, hash: &[u8], now: i64) -> Result<()>;
    fn revoke_session(&mut self, session: &str, because: &str, now: i64) -> Result<()>;
    fn session_is_live(&mut self, session: &str, user_id: &UserId) -> Result<bool>;
    /// Revokes every live session of a user and ends their dashboard sign-ins; returns
    /// how many sessions it revoked.
    fn end_all_sessions(&mut self, user_id: &UserId, because: &str, now: i64) -> Result<u64>;
    fn device_revoked(&mut self, device: &DeviceId) -> Result<bool>;
    fn revoke_device(&mut self, device: &DeviceId, by: &UserId, now: i64) -> Result<()>;

    // Devices, registered to the user of their first sign-in (schema 7).
    fn device_registration(&mut self, device: &DeviceId) -> Result<Option<Registration>>;
    /// Registers a new device; `false` if it was registered meanwhile (nothing changed).
    fn register_device(
        &mut self,
        device: &DeviceId,
        user_id: &UserId,
        key_hash: Option<&[u8]>,
        now: i64,
    ) -> Result<bool>;
    /// Gives a device registered without a key the key `key_hash`.
    fn set_device_key(&mut self, device: &DeviceId, key_hash: &[u8]) -> Result<()>;
    /// Whether two users share a team.
    fn share_a_team(&mut self, a: &UserId, b: &UserId) -> Result<bool>;
    /// Whether `device` is registered by a user of one of `user_id`'s teams (any team,
    /// for an admin).
    fn device_in_reach(&mut self, device: &DeviceId, user_id: &UserId, admin: bool) -> Result<bool>;
    /// The usernames of everyone who has signed in on `device`.
    fn device_users(&mut self, device: &DeviceId) -> Result<Vec<String>>;

    // The failed sign-in throttle: per (username, client) and per client (schema 6).
    /// (window start, failures) of a client address.
    fn client_failures(&mut self, client: &str) -> Result<Option<(i64, i64)>>;
    /// Counts a failure against a client: one more in its window, or the first of a new
    /// window starting `now` if the last began `window_secs` or more ago.
    fn count_client_failure(&mut self, client: &str, now: i64, window_secs: i64) -> Result<()>;
    /// (failures, locked until) of a username from a client.
    fn login_failures(&mut self, username: &str, client: &str) -> Result<Option<(i64, i64)>>;
    fn put_login_failures(
        &mut self,
        username: &str,
        client: &str,
        failures: i64,
        locked_until: i64,
        now: i64,
    ) -> Result<()>;
    /// Forgets a few throttle rows not touched since `before` (at most `limit` of each
    /// table).
    fn prune_failures(&mut self, before: i64, limit: i64) -> Result<()>;
    fn clear_login_failures(&mut self, username: &str, client: &str) -> Result<()>;
    /// Clears a username's failures from every client.
    fn clear_username_failures(&mut self, username: &str) -> Result<()>;

    // Dashboard sessions.
    fn start_dashboard_session(
        &mut self,
        hash: &str,
        user_id: &UserId,
        csrf: &str,
        now: i64,
        expires_at: i64,
    ) -> Result<()>;
    fn end_dashboard_session(&mut self, hash: &str) -> Result<()>;
    /// A live dashboard session's (user id, CSRF token).
    fn dashboard_session(&mut self, hash: &str, now: i64) -> Result<Option<(UserId, String)>>;

    // The audit log, a hash chain (schema 6; `audit`).
    /// The head: the last entry's number and hash, as committed.
    fn audit_head(&mut self) -> Result<(i64, Vec<u8>)>;
    /// The head, locked until the transaction ends (on PostgreSQL a row lock, taken after
    /// the `seq` counter's so that two writers never wait on each other in turn): no one
    /// else appends meanwhile.
    fn lock_audit_head(&mut self) -> Result<(i64, Vec<u8>)>;
    /// Appends an entry numbered `row.n` and moves the head to it.
    fn append_audit(&mut self, entry: &ChainedEntry) -> Result<()>;
    /// Appends an entry after the head (`row.n` is ignored): chained now, or by a
    /// transaction that numbers at commit ([`Transaction::number_at_commit`]) only then.
    fn log_audit(&mut self, row: AuditRow) -> Result<()> {
        chain_audit(self, row)
    }
    /// Up to `limit` entries with `n > after`, in order.
    fn audit_chain(&mut self, after: i64, limit: usize) -> Result<Vec<ChainedEntry>>;
    /// Sets an entry's hashes and moves the head to it: only while schema 6's upgrade
    /// chains the entries written before (the update trigger is dropped then).
    fn rechain_audit(&mut self, entry: &ChainedEntry, head: bool) -> Result<()>;
    fn audit_entries(&mut self, episode: EpisodeId) -> Result<Vec<Entry>>;
    /// Up to `limit` entries of `scope` from `cursor`, in the cursor's order (`audit`'s
    /// pages: a team's log, or one episode's).
    fn audit_page(&mut self, scope: AuditScope<'_>, cursor: AuditCursor, limit: usize) -> Result<Vec<Entry>>;

    // Summaries.
    fn put_summary(&mut self, summary: &SummaryRecord<'_>) -> Result<()>;
    fn summaries(&mut self, team: &TeamId) -> Result<Vec<Summary>>;
    fn open_actions(&mut self, team: &TeamId) -> Result<Vec<OpenAction>>;
    /// A team's appointments in `(since, until]` (Unix seconds).
    fn rates(&mut self, team: &TeamId, since: i64, until: i64) -> Result<Rates>;
    /// Open and overdue actions per team.
    fn counts_by_team(&mut self) -> Result<Vec<(String, i64, i64)>>;

    // The outbox (schema 9; `crate::outbox`).
    /// Owes a message, unless one with its `dedupe_key` is owed or sent already; returns
    /// whether it is new.
    fn enqueue(&mut self, item: &NewOutboxItem<'_>) -> Result<bool>;
    /// Claims up to `limit` messages of `kind` that are due at `now_ms`, or whose claim
    /// lapsed by then, until `lease_until_ms`: each is `sending`, with one more attempt.
    /// Two claims at once (two replicas) never take the same message.
    fn claim_outbox(&mut self, kind: &str, now_ms: i64, lease_until_ms: i64, limit: usize) -> Result<Vec<OutboxItem>>;
    /// Marks a claimed message sent; `false` if the claim (its `attempts`) was no longer
    /// held, and nothing changed.
    fn outbox_sent(&mut self, id: i64, attempts: i64, now_ms: i64) -> Result<bool>;
    /// Marks a claimed message's attempt failed with `error` (never a patient's
    /// identifier): to be tried again at `retry_at`, or `failed` with `None`. `false` if
    /// the claim was no longer held, and nothing changed.
    fn outbox_failed(&mut self, id: i64, attempts: i64, retry_at: Option<i64>, error: &str) -> Result<bool>;
    /// Makes the `failed` messages of `kind` (of one episode, or all) due again at
    /// `now_ms`, their attempts counted afresh; returns how many.
    fn retry_outbox(&mut self, kind: &str, episode: Option<EpisodeId>, now_ms: i64) -> Result<u64>;
    /// The messages not yet sent of `team`'s episodes (their team now), by episode, kind
    /// and state.
    fn outbox_counts(&mut self, team: &TeamId) -> Result<Vec<OutboxCount>>;
    /// One episode's messages whose kind starts with `kind_prefix` (`alert_`), sent or
    /// not, oldest first: what the episode's page shows of them.
    fn outbox_of(&mut self, episode: EpisodeId, kind_prefix: &str) -> Result<Vec<OutboxRow>>;

    /// For tests only: the rows of a query, each value as text (NULL as `None`). Tests
    /// look at what is stored on either backend with this; the server never calls it.
    #[doc(hidden)]
    fn inspect(&mut self, sql: &str) -> Result<Vec<Vec<Option<String>>>>;
    /// For tests only: runs a statement; returns the rows it changed.
    #[doc(hidden)]
    fn inspect_execute(&mut self, sql: &str) -> Result<u64>;
}

/// A transaction: dropped without `commit`, it rolls back.
pub trait Transaction: Tx {
    fn commit(self: Box<Self>) -> Result<()>;
    /// From now on the changes this transaction stores are numbered when it commits, not
    /// when they are stored, and its audit entries chained then: it holds the `seq`
    /// counter and the audit head only while it commits, so that other writers (other
    /// replicas) are not held up while it does its work. Until then [`Tx::next_seq`]
    /// gives provisional numbers ([`PROVISIONAL_SEQ`] and up), which
    /// [`Transaction::commit_numbered`] says the final numbers of. On SQLite, whose one
    /// writer orders everything, nothing changes. See docs/adr/0004-storage.md.
    fn number_at_commit(&mut self) {}
    /// The provisional `seq` the next [`Tx::next_seq`] gives: the numbers a request took
    /// are those between its marks.
    fn provisional_mark(&self) -> i64 {
        PROVISIONAL_SEQ
    }
    /// Commits, and says which final `seq` each provisional one became.
    fn commit_numbered(self: Box<Self>) -> Result<Numbered> {
        self.commit()?;
        Ok(Numbered::default())
    }
}

/// The provisional `seq`s of a transaction that numbers at commit start here: above any
/// final one, so that `seq > cursor` holds of them for every cursor (a request's own
/// receipts are answered) and `seq <= horizon` of none (no one is answered them).
pub const PROVISIONAL_SEQ: i64 = 1 << 62;

/// What a transaction that numbered at commit gave its changes.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Numbered {
    /// The counter when the transaction took it: every change with a `seq` up to this
    /// was committed before, and the transaction's own come right after it.
    pub before: i64,
    /// Each provisional `seq` used, with its final one, in order.
    pub seqs: Vec<(i64, i64)>,
}

impl Numbered {
    /// The final `seq` of a provisional one this transaction used.
    pub fn final_of(&self, provisional: i64) -> Option<i64> {
        self.seqs.binary_search_by_key(&provisional, |&(p, _)| p).ok().map(|i| self.seqs[i].1)
    }
}

/// Chains an entry on the head, locked until the transaction ends, and appends it.
pub(crate) fn chain_audit<T: Tx + ?Sized>(tx: &mut T, mut row: AuditRow) -> Result<()> {
    let (last, prev) = tx.lock_audit_head()?;
    row.n = last + 1;
    let hash = crate::audit::entry_hash(&prev, &row);
    tx.append_audit(&ChainedEntry { row, prev_hash: prev, hash })
}

/// A connection: statements in autocommit, or a transaction.
pub trait Conn: Tx {
    fn transaction(&mut self) -> Result<Box<dyn Transaction + '_>>;
    /// A transaction whose commit need not wait for the disk: for writes whose loss in a
    /// power cut costs a repeated message, never a record (group commit's light batches).
    fn light_transaction(&mut self) -> Result<Box<dyn Transaction + '_>>;
    /// Deletes a server-wide setting so that no copy of it is left behind: for a secret
    /// an earlier version kept there. On SQLite its page is overwritten
    /// (`secure_delete`) and the WAL checkpointed into the file and emptied.
    fn forget_meta(&mut self, key: &str) -> Result<()>;
}

/// The schema whose upgrade chains the audit entries already there: a hash SQL cannot
/// compute, so each backend's migration runs [`after_upgrade`] in that upgrade's
/// transaction, then puts the audit log's update trigger back.
pub(crate) const AUDIT_CHAIN_SCHEMA: i64 = 6;

/// What an upgrade to `to` does beyond its SQL, in its transaction.
pub(crate) fn after_upgrade(tx: &mut dyn Tx, to: i64) -> Result<()> {
    if to == AUDIT_CHAIN_SCHEMA {
        crate::audit::chain_existing(tx)?;
    }
    Ok(())
}

/// The server's own Automerge actor, generated at first use, for the changes the server
/// makes itself.
pub fn server_actor(tx: &mut dyn Tx) -> Result<ActorId> {
    Ok(ActorId::from(server_id(tx)?.as_bytes().as_slice()))
}

/// The id the server's actor and device name (`episodes::server_device`) are made from,
/// generated at first use. Replicas starting at once on an empty database must agree on
/// it (their changes would otherwise carry two actors as one server), so a new id is
/// only added if there is none, and the id is read back after: whoever committed first.
pub fn server_id(tx: &mut dyn Tx) -> Result<uuid::Uuid> {
    let id = match tx.meta("actor")? {
        Some(id) => id,
        None => {
            tx.add_meta("actor", &uuid::Uuid::now_v7().to_string())?;
            tx.meta("actor")?.ok_or_else(|| StoreError::Damaged("meta.actor was added and is missing".into()))?
        }
    };
    id.parse().map_err(|_| StoreError::damaged("meta", "actor", "no UUID"))
}

/// Why the database could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("the database was written by a newer tether (schema {found}, this build knows {known})")]
    Newer { found: i64, known: i64 },
    #[error("the database could not use WAL (journal mode {0})")]
    NoWal(String),
    #[error("the database is damaged: {0}")]
    Corrupt(String),
    #[error(transparent)]
    Sqlite(#[from] rusqlite::Error),
    #[error(transparent)]
    Postgres(#[from] PgError),
    #[error("{0:#}")]
    Files(anyhow::Error),
}

impl From<StoreError> for OpenError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::Sqlite(e) => Self::Sqlite(e),
            StoreError::Postgres(e) => Self::Postgres(e),
            other => Self::Corrupt(other.to_string()),
        }
    }
}

impl<E: std::error::Error + Into<OpenError> + 'static> From<migrate::Error<E>> for OpenError {
    fn from(error: migrate::Error<E>) -> Self {
        match error {
            migrate::Error::Newer { found, known } => Self::Newer { found, known },
            damaged @ migrate::Error::Damaged(_) => Self::Corrupt(damaged.to_string()),
            migrate::Error::Database(e) => e.into(),
        }
    }
}

/// Brings a SQLite database up to the last of `upgrades` (`crate::db::UPGRADES`, or the
/// first of them for the upgrade tests); returns the version it had.
pub(crate) fn migrate_sqlite(conn: &mut rusqlite::Connection, upgrades: &[&str]) -> Result<i64, OpenError> {
    Ok(migrate::run(&mut sqlite::Migrating(conn), upgrades)?)
}

/// The shared handle on the database.
#[derive(Clone, Debug)]
pub struct Db {
    backend: Arc<Backend>,
}

#[derive(Debug)]
enum Backend {
    Sqlite(Mutex<rusqlite::Connection>),
    Postgres(Box<postgres::Pool>),
}

impl Db {
    /// Opens (creating a SQLite file if need be) the database `target` names and brings
    /// its schema up to date.
    pub fn open(target: &Target) -> Result<Self, OpenError> {
        match target {
            Target::Sqlite(path) => Ok(Self::sqlite(crate::db::open(path)?)),
            Target::Postgres(url) => {
                Ok(Self { backend: Arc::new(Backend::Postgres(Box::new(postgres::Pool::open(url)?))) })
            }
        }
    }

    /// Creates the database `target` names at an old schema `version` (its first
    /// `version` upgrades), for the upgrade tests.
    #[doc(hidden)]
    pub fn create_at_version(target: &Target, version: usize) -> Result<(), OpenError> {
        match target {
            Target::Sqlite(path) => {
                let mut conn = rusqlite::Connection::open(path)?;
                let upgrades = crate::db::UPGRADES.get(..version).unwrap_or(&crate::db::UPGRADES);
                migrate_sqlite(&mut conn, upgrades)?;
                Ok(())
            }
            Target::Postgres(url) => postgres::create_at_version(url, version),
        }
    }

    /// The SQLite file this handle is on; `None` on PostgreSQL, or for a database held in
    /// memory. The signing keys' file is kept beside it (`auth::keys`).
    pub fn file(&self) -> Option<std::path::PathBuf> {
        match &*self.backend {
            Backend::Sqlite(conn) => {
                let conn = conn.lock().unwrap_or_else(PoisonError::into_inner);
                conn.path().filter(|p| !p.is_empty()).map(std::path::PathBuf::from)
            }
            Backend::Postgres(_) => None,
        }
    }

    /// The handle on an open, migrated SQLite connection.
    pub fn sqlite(conn: rusqlite::Connection) -> Self {
        Self { backend: Arc::new(Backend::Sqlite(Mutex::new(conn))) }
    }

    /// Whether transactions on several of its connections can write at once
    /// (PostgreSQL); SQLite has one connection, and one writer.
    pub fn writes_concurrently(&self) -> bool {
        matches!(&*self.backend, Backend::Postgres(_))
    }

    /// Hears of the episodes other server processes on this database change: `changed`
    /// is called, on a thread of its own, with each announced episode and its new `seq`
    /// (`notify`). `None` on SQLite, which one process serves alone. The listener
    /// stops when the handle is dropped.
    pub fn listen(
        &self,
        changed: impl FnMut(&[(EpisodeId, i64)]) + Send + 'static,
    ) -> std::io::Result<Option<Listener>> {
        match &*self.backend {
            Backend::Sqlite(_) => Ok(None),
            Backend::Postgres(pool) => {
                let (config, url, own) = pool.listener();
                notify::listen(config, url, own, changed).map(Some)
            }
        }
    }

    /// Runs `f` with a connection on the blocking pool.
    pub async fn call<T, F>(&self, f: F) -> Result<T, AppError>
    where
        T: Send + 'static,
        F: FnOnce(&mut dyn Conn) -> Result<T, AppError> + Send + 'static,
    {
        let db = self.clone();
        // The request's span goes along, so that what the database logs carries its id.
        let span = tracing::Span::current();
        tokio::task::spawn_blocking(move || span.in_scope(|| db.with_conn(f))).await?
    }

    /// Runs `f` with a connection on the current thread (the command line, the sync
    /// writer). Inside an async context (a test) PostgreSQL's blocking client runs on a
    /// thread of its own.
    pub fn call_blocking<T: Send, E: From<StoreError> + Send>(
        &self,
        f: impl FnOnce(&mut dyn Conn) -> Result<T, E> + Send,
    ) -> Result<T, E> {
        match &*self.backend {
            Backend::Sqlite(_) => self.with_conn(f),
            Backend::Postgres(_) => postgres::off_runtime(|| self.with_conn(f)),
        }
    }

    fn with_conn<T, E: From<StoreError>>(&self, f: impl FnOnce(&mut dyn Conn) -> Result<T, E>) -> Result<T, E> {
        match &*self.backend {
            Backend::Sqlite(conn) => {
                // A panic while the lock was held leaves no half-done transaction behind
                // (rusqlite rolls back on drop), so a poisoned lock is safe to take over.
                let conn = conn.lock().unwrap_or_else(PoisonError::into_inner);
                f(&mut sqlite::Sqlite::conn(&conn))
            }
            Backend::Postgres(pool) => {
                let mut pooled = pool.get()?;
                f(&mut pooled.conn())
            }
        }
    }
}
