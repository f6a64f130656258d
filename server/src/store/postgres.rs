//! The PostgreSQL backend: the blocking `postgres` client (the same project as
//! `tokio-postgres`, driven on a small runtime of its own per connection), a small pool,
//! and a statement cache per connection. Transactions are `READ COMMITTED`; `seq` comes
//! from the locked `change_seq` row so that it becomes visible in commit order, and every
//! write of an episode compares its `seq` (docs/adr/0004-storage.md).
//!
//! The client blocks on its own runtime, which tokio forbids inside an async context:
//! everything here runs on the blocking pool, the sync writer's thread, the command
//! line's thread, or (in tests, opening and dropping) a thread of its own ([`off_runtime`]).

use std::collections::HashMap;
use std::sync::{Condvar, Mutex, PoisonError};
use std::time::Duration;

use ::postgres::types::{ToSql, Type};
use ::postgres::{Client, NoTls, Row, Statement};
use episode::EpisodeId;

use super::target::PgUrl;
use super::{
    AUDIT_CHAIN_SCHEMA, ChainedEntry, Conn, EpisodeRow, Login, NewOutboxItem, Numbered, OpenError, OutboxCount,
    OutboxItem, OutboxRow, PROVISIONAL_SEQ, PendingSignIn, PresentedToken, Registration, Result, StoreError,
    SummaryRecord, Transaction, Tx, UserRow, parse_id,
};
use crate::accounts::{DeviceId, TeamId, UserId};
use crate::audit::{Cursor as AuditCursor, Entry, Row as AuditRow, Scope as AuditScope};
use crate::caseload::{OpenAction, Rates, Summary};

/// Each schema's upgrade from the one before, as PostgreSQL reads them: version for
/// version the same tables as SQLite's (`crate::db::UPGRADES`).
pub const SCHEMA_FILES: [&str; 9] = [
    include_str!("../schema/postgres/v1.sql"),
    include_str!("../schema/postgres/v2.sql"),
    include_str!("../schema/postgres/v3.sql"),
    include_str!("../schema/postgres/v4.sql"),
    include_str!("../schema/postgres/v5.sql"),
    include_str!("../schema/postgres/v6.sql"),
    include_str!("../schema/postgres/v7.sql"),
    include_str!("../schema/postgres/v8.sql"),
    include_str!("../schema/postgres/v9.sql"),
];

/// The audit log's trigger against updates and deletes, put back once schema 6's
/// upgrade has chained the entries already there.
const AUDIT_NO_CHANGE: &str = "CREATE TRIGGER audit_no_change BEFORE UPDATE OR DELETE ON audit
    FOR EACH ROW EXECUTE FUNCTION audit_append_only();";

/// The most connections one server opens.
const MAX_CONNECTIONS: usize = 16;
/// How long a request waits for a free connection before it is answered "busy".
const CHECKOUT_SECS: u64 = 30;
/// How long opening a connection may take.
const CONNECT_SECS: u64 = 10;
/// The `meta` key of the server's actor, which a connection memoises once committed.
const ACTOR: &str = "actor";
/// The advisory lock that orders schema upgrades between processes.
const MIGRATION_LOCK: i64 = 0x7e74_6865_7201;

/// A PostgreSQL error, its text free of the URL's password.
#[derive(Debug, thiserror::Error)]
pub enum PgError {
    #[error("{}", chain(.0))]
    Query(::postgres::Error),
    #[error("cannot connect to {target}: {message}")]
    Connect { target: String, message: String },
    #[error("{0}")]
    Url(String),
}

/// An error and every cause under it, on one line: the client's own `Display` says only
/// "db error" and leaves the server's words to the cause.
pub(super) fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(inner) = cause {
        text.push_str(": ");
        text.push_str(&inner.to_string());
        cause = inner.source();
    }
    text
}

impl From<::postgres::Error> for StoreError {
    fn from(error: ::postgres::Error) -> Self {
        Self::Postgres(PgError::Query(error))
    }
}

impl From<::postgres::Error> for OpenError {
    fn from(error: ::postgres::Error) -> Self {
        Self::Postgres(PgError::Query(error))
    }
}

/// Runs `f` where the blocking client may block: here, unless this thread is inside an
/// async context, where it runs on a scoped thread of its own.
pub(super) fn off_runtime<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    if tokio::runtime::Handle::try_current().is_err() {
        return f();
    }
    std::thread::scope(|scope| match scope.spawn(f).join() {
        Ok(value) => value,
        Err(panic) => std::panic::resume_unwind(panic),
    })
}

/// One connection and the statements prepared on it.
struct Connection {
    client: Client,
    statements: HashMap<&'static str, Statement>,
    /// The server's actor (`meta.actor`) once read committed: set once, never changed
    /// (`store::server_id`), and asked for by every sync request.
    actor: Option<String>,
}

/// A capped set of connections: taken one per call, given back after it.
pub(super) struct Pool {
    url: PgUrl,
    config: ::postgres::Config,
    /// This pool's name in the notifications its transactions send (`notify`), so that
    /// its own listener knows them for its own.
    replica: String,
    state: Mutex<PoolState>,
    freed: Condvar,
}

#[derive(Default)]
struct PoolState {
    idle: Vec<Connection>,
    /// Connections open, idle or taken.
    open: usize,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Pool({}, at most {MAX_CONNECTIONS})", self.url)
    }
}

impl Pool {
    /// Connects to the database the URL names and brings its schema up to date.
    pub(super) fn open(url: &PgUrl) -> Result<Self, OpenError> {
        off_runtime(|| {
            let mut config = url.config().map_err(PgError::Url)?;
            if config.get_connect_timeout().is_none() {
                config.connect_timeout(Duration::from_secs(CONNECT_SECS));
            }
            if config.get_application_name().is_none() {
                config.application_name("tether");
            }
            let pool = Self {
                url: url.clone(),
                config,
                replica: super::notify::replica_name(),
                state: Mutex::default(),
                freed: Condvar::new(),
            };
            let mut first = pool.connect()?;
            migrate::run(&mut Migrating(&mut first.client), &SCHEMA_FILES)?;
            let mut state = pool.state.lock().unwrap_or_else(PoisonError::into_inner);
            state.open = 1;
            state.idle.push(first);
            drop(state);
            Ok(pool)
        })
    }

    fn connect(&self) -> Result<Connection, PgError> {
        match self.config.connect(NoTls) {
            Ok(client) => Ok(Connection { client, statements: HashMap::new(), actor: None }),
            Err(error) => {
                Err(PgError::Connect { target: self.url.to_string(), message: self.url.redact(&chain(&error)) })
            }
        }
    }

    /// What the listener of other replicas' changes connects with (`notify`): this
    /// pool's settings, the URL as it may be shown, and the pool's name in notifications.
    pub(super) fn listener(&self) -> (::postgres::Config, PgUrl, String) {
        (self.config.clone(), self.url.clone(), self.replica.clone())
    }

    /// A connection, waiting for one to come free if all are taken.
    pub(super) fn get(&self) -> Result<Pooled<'_>> {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let deadline = std::time::Instant::now() + Duration::from_secs(CHECKOUT_SECS);
        loop {
            while let Some(conn) = state.idle.pop() {
                if conn.client.is_closed() {
                    // The server went away (a restart, a failover): open a new one.
                    state.open -= 1;
                    drop(state);
                    drop(conn);
                    state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
                    continue;
                }
                return Ok(Pooled { pool: self, conn: Some(conn) });
            }
            if state.open < MAX_CONNECTIONS {
                state.open += 1;
                drop(state);
                return match self.connect() {
                    Ok(conn) => Ok(Pooled { pool: self, conn: Some(conn) }),
                    Err(error) => {
                        self.state.lock().unwrap_or_else(PoisonError::into_inner).open -= 1;
                        self.freed.notify_one();
                        Err(error.into())
                    }
                };
            }
            let now = std::time::Instant::now();
            if now >= deadline {
                return Err(StoreError::Busy(CHECKOUT_SECS));
            }
            state = self.freed.wait_timeout(state, deadline - now).unwrap_or_else(PoisonError::into_inner).0;
        }
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        // A client closes its connection as it drops, blocking on its own runtime.
        let idle = std::mem::take(&mut self.state.get_mut().unwrap_or_else(PoisonError::into_inner).idle);
        off_runtime(move || drop(idle));
    }
}

/// Creates the database at an old schema `version`, for the upgrade tests.
pub(super) fn create_at_version(url: &PgUrl, version: usize) -> Result<(), OpenError> {
    off_runtime(|| {
        let config = url.config().map_err(PgError::Url)?;
        let pool =
            Pool { url: url.clone(), config, replica: String::new(), state: Mutex::default(), freed: Condvar::new() };
        let mut conn = pool.connect()?;
        migrate::run(&mut Migrating(&mut conn.client), SCHEMA_FILES.get(..version).unwrap_or(&SCHEMA_FILES))?;
        Ok(())
    })
}

/// A connection taken from the pool; given back when dropped, unless it broke.
pub(super) struct Pooled<'a> {
    pool: &'a Pool,
    conn: Option<Connection>,
}

impl Pooled<'_> {
    /// The connection, in autocommit.
    pub(super) fn conn(&mut self) -> Pg<'_> {
        match self.conn.as_mut() {
            Some(conn) => Pg {
                link: Link::Client(&mut conn.client),
                statements: &mut conn.statements,
                actor: &mut conn.actor,
                replica: &self.pool.replica,
                held: Held::default(),
            },
            // Only `drop` takes it.
            None => unreachable!("a pooled connection is present until dropped"),
        }
    }
}

impl Drop for Pooled<'_> {
    fn drop(&mut self) {
        let Some(conn) = self.conn.take() else { return };
        let mut state = self.pool.state.lock().unwrap_or_else(PoisonError::into_inner);
        if conn.client.is_closed() {
            state.open -= 1;
            drop(state);
            drop(conn);
        } else {
            state.idle.push(conn);
            drop(state);
        }
        self.pool.freed.notify_one();
    }
}

/// Schema upgrades, one transaction each, under an advisory lock so that two processes
/// starting at once upgrade once.
struct Migrating<'a>(&'a mut Client);

impl migrate::Versioned for Migrating<'_> {
    type Error = StoreError;

    fn version(&mut self) -> Result<i64> {
        let row = self.0.query_one("SELECT to_regclass('schema_version') IS NOT NULL", &[])?;
        let exists: bool = get(&row, 0)?;
        if !exists {
            return Ok(0);
        }
        get(&self.0.query_one("SELECT COALESCE(MAX(version), 0) FROM schema_version", &[])?, 0)
    }

    fn upgrade(&mut self, sql: &str, to: i64) -> Result<()> {
        let (mut statements, mut actor) = (HashMap::new(), None);
        let mut tx = Box::new(Pg {
            link: Link::Tx(Some(self.0.transaction()?)),
            statements: &mut statements,
            actor: &mut actor,
            replica: "",
            held: Held::default(),
        });
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])?;
        tx.batch("CREATE TABLE IF NOT EXISTS schema_version (version bigint NOT NULL)")?;
        let at: i64 = get(&tx.query_one("SELECT COALESCE(MAX(version), 0) FROM schema_version", &[])?, 0)?;
        if at >= to {
            // Another process got there first.
            return tx.commit();
        }
        tx.batch(sql)?;
        super::after_upgrade(&mut *tx, to)?;
        if to == AUDIT_CHAIN_SCHEMA {
            tx.batch(AUDIT_NO_CHANGE)?;
        }
        tx.execute("DELETE FROM schema_version", &[])?;
        tx.execute("INSERT INTO schema_version (version) VALUES ($1)", &[&to])?;
        tx.commit()
    }
}

enum Link<'a> {
    Client(&'a mut Client),
    Tx(Option<::postgres::Transaction<'a>>),
}

/// A connection in autocommit, or a transaction (rolled back when dropped uncommitted).
pub(super) struct Pg<'a> {
    link: Link<'a>,
    statements: &'a mut HashMap<&'static str, Statement>,
    /// The connection's memo of the server's actor.
    actor: &'a mut Option<String>,
    /// The pool's name in the notifications it sends.
    replica: &'a str,
    held: Held,
}

/// What a transaction already holds, so that it is not asked for again: each round trip
/// to PostgreSQL is most of a statement's cost, and a sync request logs an audit entry
/// for every episode it reads (up to one for each teammate's change).
///
/// - `change_seq`'s row lock, once taken (`lock_seq`, `next_seq`), is held to commit.
/// - The audit head, once locked, is this transaction's to move: its entries are kept
///   here and written at commit in one statement, with the head moved once.
/// - Sync states written are kept and written at commit (or before a statement that
///   must see them) in one statement; reads look here first.
/// - What [`Tx::prefetch`] read for the request under way ([`Memo`]).
///
/// A savepoint notes what was held when it was made; rolling back to it gives back the
/// locks taken since (PostgreSQL releases a rolled-back subtransaction's row locks) and
/// drops the entries and sync states written since. The savepoint itself is sent with
/// the request's first statement that writes or locks (a request that only reads and
/// keeps what it writes here needs none), and never released: a later request's
/// savepoint of the same name nests inside it, and `ROLLBACK TO` names the latest.
#[derive(Default)]
struct Held {
    /// This transaction added the server's actor: not committed, so not yet memoised.
    added_actor: bool,
    seq_locked: bool,
    /// The audit head as this transaction has moved it: its number and hash.
    audit_head: Option<(i64, Vec<u8>)>,
    /// Entries chained on the head and not yet written.
    audit: Vec<ChainedEntry>,
    /// Sync states written by this transaction, in order; those from `states_sent` on
    /// are not yet sent.
    states: Vec<(EpisodeId, String, Vec<u8>)>,
    states_sent: usize,
    /// The episodes this transaction moved to a new `seq`, with it: other replicas are
    /// told at commit (`notify`).
    changed: Vec<(EpisodeId, i64)>,
    /// What was held at the open savepoint.
    at_savepoint: Option<AtSavepoint>,
    /// The open savepoint has been sent (with the request's first write).
    savepoint_sent: bool,
    /// The request's reads, from [`Tx::prefetch`].
    memo: Memo,
    /// Settings read in this transaction (`meta`): the EPR filing switch is asked for
    /// by every change stored.
    meta: HashMap<String, Option<String>>,
    /// Changes are numbered, and audit entries chained, at commit
    /// (`Transaction::number_at_commit`).
    at_commit: bool,
    /// The next provisional `seq`.
    provisional: i64,
    /// Each row written with a provisional `seq`: the `seq` and its episode.
    numbered: Vec<(i64, EpisodeId)>,
    /// Audit entries to chain at commit.
    unchained: Vec<AuditRow>,
}

/// What a transaction held when it made its savepoint.
struct AtSavepoint {
    seq_locked: bool,
    audit_head: Option<(i64, Vec<u8>)>,
    audit: usize,
    states: usize,
    states_sent: usize,
    numbered: usize,
    unchained: usize,
    changed: usize,
}

/// What one statement read ahead for the request under way ([`Tx::prefetch`]): for each
/// episode asked about, its team and `seq`, the device's sync state, whether it dropped
/// it, and its receipts; and who has signed in on the device. Cleared at every savepoint
/// and rollback, and kept current by this transaction's own writes, so that a read
/// answered from here is what a statement would have read at the prefetch; the request
/// reads ahead at its start (its documents) and again after it has read the horizon
/// (the page it answers), never earlier than it would have read each.
#[derive(Default)]
struct Memo {
    device: String,
    episodes: HashMap<EpisodeId, Option<(TeamId, i64)>>,
    states: HashMap<EpisodeId, Option<Vec<u8>>>,
    dropped: HashMap<EpisodeId, bool>,
    /// Every receipt of the episode: event, time, `seq`.
    receipts: HashMap<EpisodeId, Vec<(String, i64, i64)>>,
    device_users: Option<Vec<String>>,
}

type Params<'p> = &'p [&'p (dyn ToSql + Sync)];

/// Runs `$call` on whichever client the link holds.
macro_rules! on {
    ($self:ident, $c:ident => $call:expr) => {
        match &mut $self.link {
            Link::Client($c) => $call,
            Link::Tx(Some($c)) => $call,
            Link::Tx(None) => return Err(StoreError::Damaged("a finished transaction was used".into())),
        }
    };
}

impl Pg<'_> {
    fn in_transaction(&self) -> bool {
        matches!(self.link, Link::Tx(_))
    }

    /// Writes the audit entries kept since the head was locked, in one statement, and
    /// moves the head to the last of them.
    fn flush_audit(&mut self) -> Result<()> {
        if self.held.audit.is_empty() {
            return Ok(());
        }
        let entries = std::mem::take(&mut self.held.audit);
        let column = |f: &dyn Fn(&ChainedEntry) -> Option<String>| entries.iter().map(f).collect::<Vec<_>>();
        let n: Vec<i64> = entries.iter().map(|e| e.row.n).collect();
        let at: Vec<i64> = entries.iter().map(|e| e.row.at).collect();
        let user_id = column(&|e| Some(e.row.user_id.clone()));
        let username = column(&|e| Some(e.row.username.clone()));
        let device = column(&|e| Some(e.row.device.clone()));
        let via = column(&|e| Some(e.row.via.clone()));
        let action = column(&|e| Some(e.row.action.clone()));
        let episode = column(&|e| e.row.episode.clone());
        let detail = column(&|e| e.row.detail.clone());
        let prev: Vec<&[u8]> = entries.iter().map(|e| e.prev_hash.as_slice()).collect();
        let hash: Vec<&[u8]> = entries.iter().map(|e| e.hash.as_slice()).collect();
        let Some((last_n, last_hash)) = entries.last().map(|e| (e.row.n, e.hash.clone())) else { return Ok(()) };
        // The entries and the head that points at the last of them, in one statement.
        self.execute(
            "WITH added AS (
                 INSERT INTO audit (n, at, user_id, username, device, via, action, episode, detail, prev_hash, hash)
                 SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::text[], $4::text[], $5::text[], $6::text[],
                                      $7::text[], $8::text[], $9::text[], $10::bytea[], $11::bytea[]))
             UPDATE audit_head SET n = $12, hash = $13 WHERE id = 1",
            &[
                &n, &at, &user_id, &username, &device, &via, &action, &episode, &detail, &prev, &hash, &last_n,
                &last_hash,
            ],
        )?;
        Ok(())
    }

    /// Writes the sync states kept since the last flush, in one statement (the last
    /// written of each episode and device).
    fn flush_states(&mut self) -> Result<()> {
        if self.held.states_sent >= self.held.states.len() {
            return Ok(());
        }
        let mut latest: HashMap<(EpisodeId, String), Vec<u8>> = HashMap::new();
        for (id, device, state) in &self.held.states[self.held.states_sent..] {
            latest.insert((*id, device.clone()), state.clone());
        }
        // In one order, so that two writers' row locks never wait on each other in turn.
        let mut rows: Vec<_> = latest.into_iter().collect();
        rows.sort_by(|a, b| a.0.cmp(&b.0));
        let episodes: Vec<String> = rows.iter().map(|((id, _), _)| id.to_string()).collect();
        let devices: Vec<&str> = rows.iter().map(|((_, device), _)| device.as_str()).collect();
        let states: Vec<&[u8]> = rows.iter().map(|(_, state)| state.as_slice()).collect();
        let sent = self.held.states.len();
        self.execute(
            "INSERT INTO sync_states (episode, device, state)
             SELECT * FROM unnest($1::text[], $2::text[], $3::bytea[])
             ON CONFLICT (episode, device) DO UPDATE SET state = excluded.state",
            &[&episodes, &devices, &states],
        )?;
        self.held.states_sent = sent;
        Ok(())
    }

    /// Notes a row written with a provisional `seq`, to be given its final one at commit.
    fn note_numbered(&mut self, seq: i64, id: EpisodeId) {
        if seq >= PROVISIONAL_SEQ {
            self.held.numbered.push((seq, id));
        }
    }

    /// Numbers this transaction's changes and chains its audit entries: takes the
    /// counter (then the head), so for as short a time as commit needs them.
    fn number(&mut self) -> Result<Numbered> {
        let mut provisional: Vec<i64> = self.held.numbered.iter().map(|&(seq, _)| seq).collect();
        provisional.sort_unstable();
        provisional.dedup();
        let mut numbered = Numbered::default();
        if !provisional.is_empty() {
            let count = i64::try_from(provisional.len()).unwrap_or(i64::MAX);
            let row = self
                .query_opt("UPDATE change_seq SET seq = seq + $1 RETURNING seq", &[&count])?
                .ok_or_else(|| StoreError::damaged("change_seq", "seq", "no row"))?;
            let top: i64 = get(&row, 0)?;
            self.held.seq_locked = true;
            numbered.before = top - count;
            numbered.seqs = provisional.iter().zip(numbered.before + 1..).map(|(&p, f)| (p, f)).collect();
            let mut ids: Vec<String> = self.held.numbered.iter().map(|(_, id)| id.to_string()).collect();
            ids.sort_unstable();
            ids.dedup();
            let from: Vec<i64> = numbered.seqs.iter().map(|&(p, _)| p).collect();
            let to: Vec<i64> = numbered.seqs.iter().map(|&(_, f)| f).collect();
            // Every row this transaction wrote with a provisional `seq`, in one statement.
            self.execute(
                "WITH m AS (SELECT * FROM unnest($1::bigint[], $2::bigint[]) AS m(p, f)),
                 e AS (UPDATE episodes SET seq = m.f FROM m WHERE episodes.id = ANY($3) AND episodes.seq = m.p),
                 r AS (UPDATE receipts SET seq = m.f FROM m WHERE receipts.episode = ANY($3) AND receipts.seq = m.p)
                 UPDATE drops SET seq = m.f FROM m WHERE drops.episode = ANY($3) AND drops.seq = m.p",
                &[&from, &to, &ids],
            )?;
            self.held.numbered.clear();
        } else if !self.held.unchained.is_empty() {
            self.lock_seq()?;
        }
        let unchained = std::mem::take(&mut self.held.unchained);
        for row in unchained {
            super::chain_audit(self, row)?;
        }
        Ok(numbered)
    }

    /// Keeps what was read ahead of an episode current after this transaction moved it.
    fn memo_moved(&mut self, id: EpisodeId, seq: i64, team: Option<&TeamId>) {
        if let Some(Some((known_team, known_seq))) = self.held.memo.episodes.get_mut(&id) {
            *known_seq = seq;
            if let Some(team) = team {
                known_team.clone_from(team);
            }
        } else {
            self.held.memo.episodes.remove(&id);
        }
    }

    /// Sends the open savepoint, if not yet: before a statement that writes or locks.
    fn ensure_savepoint(&mut self) -> Result<()> {
        if self.held.at_savepoint.is_some() && !self.held.savepoint_sent {
            self.held.savepoint_sent = true;
            self.batch("SAVEPOINT request")?;
        }
        Ok(())
    }

    /// Notes that an episode moved to `seq`: told at commit, or at once in autocommit.
    fn note_changed(&mut self, id: EpisodeId, seq: i64) -> Result<()> {
        self.held.changed.push((id, seq));
        if self.in_transaction() { Ok(()) } else { self.notify_changed() }
    }

    /// Tells the other replicas which episodes this transaction moved on, in one
    /// statement: `pg_notify` in the transaction, which PostgreSQL delivers only if and
    /// when it commits (`notify`).
    fn notify_changed(&mut self) -> Result<()> {
        if self.held.changed.is_empty() {
            return Ok(());
        }
        let changed = std::mem::take(&mut self.held.changed);
        let payloads = super::notify::payloads(self.replica, &changed);
        self.execute("SELECT pg_notify($1, p) FROM unnest($2::text[]) AS p", &[&super::notify::CHANNEL, &payloads])?;
        Ok(())
    }

    fn statement(&mut self, sql: &'static str) -> Result<Statement> {
        if let Some(statement) = self.statements.get(sql) {
            return Ok(statement.clone());
        }
        let statement = on!(self, c => c.prepare(sql)?);
        self.statements.insert(sql, statement.clone());
        Ok(statement)
    }

    /// A statement that only reads: it needs no savepoint.
    fn read(&mut self, sql: &'static str, params: Params<'_>) -> Result<Vec<Row>> {
        let statement = self.statement(sql)?;
        Ok(on!(self, c => c.query(&statement, params)?))
    }

    /// A statement that only reads, at most one row.
    fn read_opt(&mut self, sql: &'static str, params: Params<'_>) -> Result<Option<Row>> {
        let statement = self.statement(sql)?;
        Ok(on!(self, c => c.query_opt(&statement, params)?))
    }

    fn query(&mut self, sql: &'static str, params: Params<'_>) -> Result<Vec<Row>> {
        self.ensure_savepoint()?;
        let statement = self.statement(sql)?;
        Ok(on!(self, c => c.query(&statement, params)?))
    }

    fn query_opt(&mut self, sql: &'static str, params: Params<'_>) -> Result<Option<Row>> {
        self.ensure_savepoint()?;
        let statement = self.statement(sql)?;
        Ok(on!(self, c => c.query_opt(&statement, params)?))
    }

    fn query_one(&mut self, sql: &'static str, params: Params<'_>) -> Result<Row> {
        self.ensure_savepoint()?;
        let statement = self.statement(sql)?;
        Ok(on!(self, c => c.query_one(&statement, params)?))
    }

    fn execute(&mut self, sql: &'static str, params: Params<'_>) -> Result<u64> {
        self.ensure_savepoint()?;
        let statement = self.statement(sql)?;
        Ok(on!(self, c => c.execute(&statement, params)?))
    }

    fn batch(&mut self, sql: &str) -> Result<()> {
        on!(self, c => c.batch_execute(sql)?);
        Ok(())
    }

    fn begin(&mut self, light: bool) -> Result<Box<dyn Transaction + '_>> {
        let Link::Client(client) = &mut self.link else {
            return Err(StoreError::Damaged("a transaction was begun inside a transaction".into()));
        };
        let mut tx = client.transaction()?;
        if light {
            // Its loss in a power cut costs a repeated message, never a record.
            tx.batch_execute("SET LOCAL synchronous_commit = off")?;
        }
        Ok(Box::new(Pg {
            link: Link::Tx(Some(tx)),
            statements: &mut *self.statements,
            actor: &mut *self.actor,
            replica: self.replica,
            held: Held::default(),
        }))
    }
}

/// A column's value, or the error that says which could not be read.
fn get<'r, T: ::postgres::types::FromSql<'r>>(row: &'r Row, i: usize) -> Result<T> {
    Ok(row.try_get(i)?)
}

/// A write of an episode that PostgreSQL chose to break a deadlock with (two writers
/// each holding a row the other wants; rolled back to its savepoint, the request is
/// handled again, as after any conflict).
fn conflict_on_deadlock(error: StoreError, id: EpisodeId) -> StoreError {
    match &error {
        StoreError::Postgres(PgError::Query(e))
            if e.code() == Some(&::postgres::error::SqlState::T_R_DEADLOCK_DETECTED) =>
        {
            StoreError::Conflict(id)
        }
        _ => error,
    }
}

/// A deadlock broken by failing this side, or a serialization failure: the transaction
/// is lost, and trying it again may succeed (`StoreError::is_transient`).
pub(super) fn is_transient(error: &PgError) -> bool {
    use ::postgres::error::SqlState;
    match error {
        PgError::Query(e) => {
            e.code().is_some_and(|c| *c == SqlState::T_R_DEADLOCK_DETECTED || *c == SqlState::T_R_SERIALIZATION_FAILURE)
        }
        PgError::Connect { .. } | PgError::Url(_) => false,
    }
}

/// A compare-and-set write: no row changed means another writer moved the episode on.
fn checked(id: EpisodeId, changed: u64) -> Result<()> {
    if changed == 0 { Err(StoreError::Conflict(id)) } else { Ok(()) }
}

impl Conn for Pg<'_> {
    fn transaction(&mut self) -> Result<Box<dyn Transaction + '_>> {
        self.begin(false)
    }

    fn light_transaction(&mut self) -> Result<Box<dyn Transaction + '_>> {
        self.begin(true)
    }

    fn forget_meta(&mut self, key: &str) -> Result<()> {
        // A deleted row's tuple stays in its page until vacuumed: nothing here can wipe
        // it. No build keeps a secret in `meta` on PostgreSQL (`auth::keys`).
        self.held.meta.remove(key);
        self.execute("DELETE FROM meta WHERE key = $1", &[&key])?;
        Ok(())
    }
}

impl Transaction for Pg<'_> {
    fn commit(self: Box<Self>) -> Result<()> {
        self.commit_numbered().map(drop)
    }

    fn provisional_mark(&self) -> i64 {
        PROVISIONAL_SEQ + self.held.provisional
    }

    fn number_at_commit(&mut self) {
        self.held.at_commit = self.in_transaction();
    }

    fn commit_numbered(mut self: Box<Self>) -> Result<Numbered> {
        // Numbered first: the sync states after the counter is held, so that two
        // committing writers never hold each other's rows while waiting for it.
        let numbered = self.number()?;
        self.flush_states()?;
        self.flush_audit()?;
        // Other replicas are told of the final numbers, not the provisional ones.
        for (_, seq) in &mut self.held.changed {
            if let Some(final_seq) = numbered.final_of(*seq) {
                *seq = final_seq;
            }
        }
        self.notify_changed()?;
        self.finish()?;
        Ok(numbered)
    }
}

impl Pg<'_> {
    fn finish(&mut self) -> Result<()> {
        match &mut self.link {
            Link::Tx(tx) => match tx.take() {
                Some(tx) => Ok(tx.commit()?),
                None => Ok(()),
            },
            Link::Client(_) => Ok(()),
        }
    }
}

impl Tx for Pg<'_> {
    fn meta(&mut self, key: &str) -> Result<Option<String>> {
        if key == ACTOR
            && let Some(actor) = self.actor.as_ref()
        {
            return Ok(Some(actor.clone()));
        }
        if let Some(known) = self.held.meta.get(key) {
            return Ok(known.clone());
        }
        let value = match self.read_opt("SELECT value FROM meta WHERE key = $1", &[&key])? {
            Some(row) => {
                let value: String = get(&row, 0)?;
                if key == ACTOR && !self.held.added_actor {
                    *self.actor = Some(value.clone());
                }
                Some(value)
            }
            None => None,
        };
        if self.in_transaction() {
            self.held.meta.insert(key.to_owned(), value.clone());
        }
        Ok(value)
    }

    fn set_meta(&mut self, key: &str, value: &str) -> Result<()> {
        self.held.meta.remove(key);
        self.execute(
            "INSERT INTO meta (key, value) VALUES ($1, $2) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            &[&key, &value],
        )?;
        Ok(())
    }

    fn add_meta(&mut self, key: &str, value: &str) -> Result<()> {
        self.held.added_actor |= key == ACTOR;
        self.held.meta.remove(key);
        self.execute("INSERT INTO meta (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING", &[&key, &value])?;
        Ok(())
    }

    fn try_job_lock(&mut self, job: super::Job) -> Result<bool> {
        if matches!(self.link, Link::Client(_)) {
            // In autocommit the lock would end with its statement: it must be asked for
            // inside the transaction that does the job's work.
            return Err(StoreError::Damaged("a job's lock was asked for outside a transaction".into()));
        }
        get(&self.query_one("SELECT pg_try_advisory_xact_lock($1)", &[&job.key()])?, 0)
    }

    fn schema_version(&mut self) -> Result<i64> {
        get(&self.query_one("SELECT COALESCE(MAX(version), 0) FROM schema_version", &[])?, 0)
    }

    fn savepoint(&mut self) -> Result<()> {
        // Sent with the request's first write or lock (`ensure_savepoint`).
        self.held.at_savepoint = Some(AtSavepoint {
            seq_locked: self.held.seq_locked,
            audit_head: self.held.audit_head.clone(),
            audit: self.held.audit.len(),
            states: self.held.states.len(),
            states_sent: self.held.states_sent,
            numbered: self.held.numbered.len(),
            unchained: self.held.unchained.len(),
            changed: self.held.changed.len(),
        });
        self.held.savepoint_sent = false;
        self.held.memo = Memo::default();
        Ok(())
    }

    fn release_savepoint(&mut self) -> Result<()> {
        // Not released: what it holds is the transaction's at commit all the same, and a
        // release is a round trip. The next request's savepoint nests inside it.
        self.held.at_savepoint = None;
        self.held.savepoint_sent = false;
        self.held.memo = Memo::default();
        Ok(())
    }

    fn rollback_to_savepoint(&mut self) -> Result<()> {
        if self.held.savepoint_sent {
            self.batch("ROLLBACK TO SAVEPOINT request; RELEASE SAVEPOINT request")?;
        }
        // Without a savepoint sent the request wrote nothing to the database: what it
        // kept here is all there is to undo.
        if let Some(at) = self.held.at_savepoint.take() {
            self.held.seq_locked = at.seq_locked;
            self.held.audit_head = at.audit_head;
            self.held.audit.truncate(at.audit);
            self.held.states.truncate(at.states);
            self.held.states_sent = at.states_sent;
            self.held.numbered.truncate(at.numbered);
            self.held.unchained.truncate(at.unchained);
            self.held.changed.truncate(at.changed);
        }
        self.held.savepoint_sent = false;
        self.held.memo = Memo::default();
        self.held.meta.clear();
        Ok(())
    }

    fn next_seq(&mut self) -> Result<i64> {
        if self.held.at_commit && !self.held.seq_locked {
            // Numbered at commit (`number_at_commit`); the rows written with it are noted.
            let seq = PROVISIONAL_SEQ + self.held.provisional;
            self.held.provisional += 1;
            return Ok(seq);
        }
        // The row stays locked until this transaction ends: a writer that takes the next
        // `seq` waits, so `seq` values become visible in the order they were taken.
        if self.held.at_savepoint.is_some() && !self.held.savepoint_sent {
            // A request's first write: its savepoint goes in the same round trip.
            let messages =
                on!(self, c => c.simple_query("SAVEPOINT request; UPDATE change_seq SET seq = seq + 1 RETURNING seq")?);
            self.held.savepoint_sent = true;
            self.held.seq_locked = true;
            let seq = messages.iter().find_map(|m| match m {
                ::postgres::SimpleQueryMessage::Row(row) => row.get(0).and_then(|v| v.parse::<i64>().ok()),
                _ => None,
            });
            return seq.ok_or_else(|| StoreError::damaged("change_seq", "seq", "no row"));
        }
        match self.query_opt("UPDATE change_seq SET seq = seq + 1 RETURNING seq", &[])? {
            Some(row) => {
                self.held.seq_locked = self.in_transaction();
                get(&row, 0)
            }
            None => Err(StoreError::damaged("change_seq", "seq", "no row")),
        }
    }

    fn current_seq(&mut self) -> Result<i64> {
        match self.read_opt("SELECT seq FROM change_seq", &[])? {
            Some(row) => get(&row, 0),
            None => Err(StoreError::damaged("change_seq", "seq", "no row")),
        }
    }

    fn lock_seq(&mut self) -> Result<()> {
        if self.held.seq_locked {
            return Ok(());
        }
        match self.query_opt("SELECT seq FROM change_seq FOR UPDATE", &[])? {
            Some(_) => {
                self.held.seq_locked = self.in_transaction();
                Ok(())
            }
            None => Err(StoreError::damaged("change_seq", "seq", "no row")),
        }
    }

    fn prefetch(&mut self, ids: &[EpisodeId], device: &DeviceId) -> Result<()> {
        if !self.in_transaction() || ids.is_empty() {
            return Ok(());
        }
        if self.held.memo.device != device.as_str() {
            self.held.memo = Memo { device: device.to_string(), ..Memo::default() };
        }
        let keys: Vec<String> = ids.iter().map(EpisodeId::to_string).collect();
        let rows = self.read(
            "SELECT i.id, e.team, e.seq, s.state, d.episode IS NOT NULL, r.events, r.times, r.seqs,
                    (SELECT array_agg(DISTINCT u.username) FROM sessions x JOIN users u ON u.id = x.user_id
                     WHERE x.device_id = $2)
             FROM unnest($1::text[]) AS i(id)
             LEFT JOIN episodes e ON e.id = i.id
             LEFT JOIN sync_states s ON s.episode = i.id AND s.device = $2
             LEFT JOIN drops d ON d.episode = i.id AND d.device = $2
             LEFT JOIN LATERAL (SELECT array_agg(event) AS events, array_agg(received_at) AS times,
                                       array_agg(seq) AS seqs
                                FROM receipts WHERE episode = i.id) r ON true",
            &[&keys, &device],
        )?;
        for row in &rows {
            let id: String = get(row, 0)?;
            let id = parse_id(&id, "episodes", "id")?;
            let team: Option<TeamId> = get(row, 1)?;
            let seq: Option<i64> = get(row, 2)?;
            let memo = &mut self.held.memo;
            memo.episodes.insert(id, team.zip(seq));
            memo.states.insert(id, get(row, 3)?);
            memo.dropped.insert(id, get(row, 4)?);
            let events: Option<Vec<String>> = get(row, 5)?;
            let times: Option<Vec<i64>> = get(row, 6)?;
            let seqs: Option<Vec<i64>> = get(row, 7)?;
            let receipts = match (events, times, seqs) {
                (Some(events), Some(times), Some(seqs)) if events.len() == times.len() && times.len() == seqs.len() => {
                    events.into_iter().zip(times).zip(seqs).map(|((e, t), s)| (e, t, s)).collect()
                }
                (None, None, None) => Vec::new(),
                _ => return Err(StoreError::damaged("receipts", "event", "rows that do not line up")),
            };
            memo.receipts.insert(id, receipts);
            let users: Option<Vec<String>> = get(row, 8)?;
            memo.device_users = Some(users.unwrap_or_default());
        }
        Ok(())
    }

    fn lock_episode(&mut self, id: EpisodeId) -> Result<()> {
        self.query_opt("SELECT 1 FROM episodes WHERE id = $1 FOR UPDATE", &[&id.to_string()])
            .map_err(|e| conflict_on_deadlock(e, id))?;
        Ok(())
    }

    fn team_of(&mut self, id: EpisodeId) -> Result<Option<(TeamId, i64)>> {
        if let Some(known) = self.held.memo.episodes.get(&id) {
            return Ok(known.clone());
        }
        match self.read_opt("SELECT team, seq FROM episodes WHERE id = $1", &[&id.to_string()])? {
            Some(row) => Ok(Some((get(&row, 0)?, get(&row, 1)?))),
            None => Ok(None),
        }
    }

    fn load_episode(&mut self, id: EpisodeId) -> Result<Option<EpisodeRow>> {
        let key = id.to_string();
        let Some(row) = self.read_opt("SELECT team, seq, snapshot FROM episodes WHERE id = $1", &[&key])? else {
            return Ok(None);
        };
        let (team, seq, snapshot) = (get(&row, 0)?, get(&row, 1)?, get(&row, 2)?);
        let changes = self
            .read("SELECT bytes FROM episode_changes WHERE episode = $1 ORDER BY n", &[&key])?
            .iter()
            .map(|r| get(r, 0))
            .collect::<Result<_>>()?;
        Ok(Some(EpisodeRow { team, seq, snapshot, changes }))
    }

    fn insert_episode(
        &mut self,
        id: EpisodeId,
        team: &TeamId,
        seq: i64,
        snapshot: &[u8],
        created_at: i64,
    ) -> Result<()> {
        // DO NOTHING rather than a unique violation, which would abort the transaction.
        let inserted = self
            .execute(
                "INSERT INTO episodes (id, team, seq, snapshot, created_at) VALUES ($1, $2, $3, $4, $5)
                 ON CONFLICT (id) DO NOTHING",
                &[&id.to_string(), &team, &seq, &snapshot, &created_at],
            )
            .map_err(|e| conflict_on_deadlock(e, id))?;
        checked(id, inserted)?;
        self.note_numbered(seq, id);
        self.held.memo.episodes.insert(id, Some((team.to_owned(), seq)));
        Ok(())
    }

    fn append_change(&mut self, id: EpisodeId, loaded: i64, seq: i64, bytes: &[u8]) -> Result<()> {
        // One statement: the change is inserted only if the compare-and-set moved the row.
        let inserted = self
            .execute(
                "WITH moved AS (UPDATE episodes SET seq = $1 WHERE id = $2 AND seq = $3 RETURNING id)
             INSERT INTO episode_changes (episode, bytes) SELECT id, $4 FROM moved",
                &[&seq, &id.to_string(), &loaded, &bytes],
            )
            .map_err(|e| conflict_on_deadlock(e, id))?;
        checked(id, inserted)?;
        self.note_changed(id, seq)?;
        self.note_numbered(seq, id);
        self.memo_moved(id, seq, None);
        Ok(())
    }

    fn replace_snapshot(&mut self, id: EpisodeId, loaded: i64, seq: i64, snapshot: &[u8]) -> Result<()> {
        let key = id.to_string();
        let changed = self
            .execute(
                "UPDATE episodes SET snapshot = $1, seq = $2 WHERE id = $3 AND seq = $4",
                &[&snapshot, &seq, &key, &loaded],
            )
            .map_err(|e| conflict_on_deadlock(e, id))?;
        checked(id, changed)?;
        self.note_changed(id, seq)?;
        self.execute("DELETE FROM episode_changes WHERE episode = $1", &[&key])?;
        self.note_numbered(seq, id);
        self.memo_moved(id, seq, None);
        Ok(())
    }

    fn set_team(&mut self, id: EpisodeId, loaded: i64, seq: i64, team: &TeamId) -> Result<()> {
        let changed = self
            .execute(
                "UPDATE episodes SET team = $1, seq = $2 WHERE id = $3 AND seq = $4",
                &[&team, &seq, &id.to_string(), &loaded],
            )
            .map_err(|e| conflict_on_deadlock(e, id))?;
        checked(id, changed)?;
        self.note_changed(id, seq)?;
        self.note_numbered(seq, id);
        self.memo_moved(id, seq, Some(team));
        Ok(())
    }

    fn changed_since(
        &mut self,
        teams: &[TeamId],
        cursor: i64,
        upto: i64,
        limit: usize,
    ) -> Result<Vec<(EpisodeId, i64)>> {
        let limit_param = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = self.read(
            "SELECT id, seq FROM episodes WHERE team = ANY($1) AND seq > $2 AND seq <= $3 ORDER BY seq, id LIMIT $4",
            &[&teams, &cursor, &upto, &limit_param],
        )?;
        let mut out = Vec::with_capacity(rows.len());
        for row in &rows {
            let id: String = get(row, 0)?;
            out.push((parse_id(&id, "episodes", "id")?, get(row, 1)?));
        }
        out.sort_by_key(|&(id, seq)| (seq, id));
        Ok(out)
    }

    fn stale_summaries(&mut self, now: i64, teams: Option<&[TeamId]>, limit: usize) -> Result<Vec<EpisodeId>> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = self.query(
            "SELECT e.id FROM episodes e LEFT JOIN summaries s ON s.episode = e.id
             WHERE (s.episode IS NULL OR s.seq <> e.seq OR s.next_due <= $1)
               AND ($2::text[] IS NULL OR e.team = ANY($2))
             ORDER BY e.seq LIMIT $3",
            &[&now, &teams, &limit],
        )?;
        rows.iter()
            .map(|row| {
                let id: String = get(row, 0)?;
                parse_id(&id, "episodes", "id")
            })
            .collect()
    }

    fn sync_state(&mut self, id: EpisodeId, device: &DeviceId) -> Result<Option<Vec<u8>>> {
        if let Some((_, _, state)) = self.held.states.iter().rev().find(|(e, d, _)| *e == id && d == device.as_str()) {
            return Ok(Some(state.clone()));
        }
        if self.held.memo.device == device.as_str()
            && let Some(known) = self.held.memo.states.get(&id)
        {
            return Ok(known.clone());
        }
        match self
            .read_opt("SELECT state FROM sync_states WHERE episode = $1 AND device = $2", &[&id.to_string(), &device])?
        {
            Some(row) => Ok(Some(get(&row, 0)?)),
            None => Ok(None),
        }
    }

    fn put_sync_state(&mut self, id: EpisodeId, device: &DeviceId, state: &[u8]) -> Result<()> {
        if self.in_transaction() {
            // Written at commit with the others (`flush_states`).
            self.held.states.push((id, device.to_string(), state.to_vec()));
            return Ok(());
        }
        self.execute(
            "INSERT INTO sync_states (episode, device, state) VALUES ($1, $2, $3)
             ON CONFLICT (episode, device) DO UPDATE SET state = excluded.state",
            &[&id.to_string(), &device, &state],
        )?;
        Ok(())
    }

    fn held_episodes(&mut self, device: &DeviceId) -> Result<Vec<(EpisodeId, TeamId)>> {
        self.flush_states()?;
        let rows = self.read(
            "SELECT s.episode, e.team FROM sync_states s JOIN episodes e ON e.id = s.episode WHERE s.device = $1",
            &[&device],
        )?;
        rows.iter()
            .map(|row| {
                let id: String = get(row, 0)?;
                Ok((parse_id(&id, "sync_states", "episode")?, get(row, 1)?))
            })
            .collect()
    }

    fn held_outside(&mut self, device: &DeviceId, teams: &[TeamId]) -> Result<Vec<EpisodeId>> {
        // The device's sync states not yet sent count too: with their teams as read
        // ahead, else sent first.
        let mut unsent = Vec::new();
        for (id, _, _) in self.held.states[self.held.states_sent..].iter().filter(|(_, d, _)| d == device.as_str()) {
            match self.held.memo.episodes.get(id) {
                Some(Some((team, _))) => {
                    if !teams.contains(team) {
                        unsent.push(*id);
                    }
                }
                _ => {
                    unsent.clear();
                    self.flush_states()?;
                    break;
                }
            }
        }
        let rows = self.read(
            // Each held episode's team by its key: a join would read every episode.
            "SELECT s.episode FROM sync_states s
             WHERE s.device = $1 AND (SELECT e.team FROM episodes e WHERE e.id = s.episode) <> ALL($2)",
            &[&device, &teams],
        )?;
        let mut outside = rows
            .iter()
            .map(|row| {
                let id: String = get(row, 0)?;
                parse_id(&id, "sync_states", "episode")
            })
            .collect::<Result<Vec<_>>>()?;
        for id in unsent {
            if !outside.contains(&id) {
                outside.push(id);
            }
        }
        Ok(outside)
    }

    fn record_drop(&mut self, id: EpisodeId, device: &DeviceId, seq: i64) -> Result<()> {
        // A sync state kept for later would come back after the delete.
        self.flush_states()?;
        self.held.memo.states.remove(&id);
        self.held.memo.dropped.remove(&id);
        let key = id.to_string();
        self.execute("DELETE FROM sync_states WHERE episode = $1 AND device = $2", &[&key, &device])?;
        self.execute(
            "INSERT INTO drops (episode, device, seq) VALUES ($1, $2, $3)
             ON CONFLICT (episode, device) DO UPDATE SET seq = excluded.seq",
            &[&key, &device, &seq],
        )?;
        self.note_numbered(seq, id);
        Ok(())
    }

    fn dropped(&mut self, id: EpisodeId, device: &DeviceId) -> Result<bool> {
        if self.held.memo.device == device.as_str()
            && let Some(&known) = self.held.memo.dropped.get(&id)
        {
            return Ok(known);
        }
        Ok(self
            .read_opt("SELECT 1 FROM drops WHERE episode = $1 AND device = $2", &[&id.to_string(), &device])?
            .is_some())
    }

    fn drops_since(&mut self, device: &DeviceId, cursor: i64, upto: i64) -> Result<Vec<EpisodeId>> {
        let rows = self.read(
            "SELECT episode FROM drops WHERE device = $1 AND seq > $2 AND seq <= $3",
            &[&device, &cursor, &upto],
        )?;
        rows.iter()
            .map(|row| {
                let id: String = get(row, 0)?;
                parse_id(&id, "drops", "episode")
            })
            .collect()
    }

    fn record_receipts(
        &mut self,
        id: EpisodeId,
        events: &[String],
        device: &DeviceId,
        at_ms: i64,
        seq: i64,
    ) -> Result<()> {
        if events.is_empty() {
            return Ok(());
        }
        // One statement for all of them: a round trip each would dominate a sync.
        self.execute(
            "INSERT INTO receipts (episode, event, received_at, device, seq)
             SELECT $1, event, $3, $4, $5 FROM unnest($2::text[]) AS event
             ON CONFLICT (episode, event) DO NOTHING",
            &[&id.to_string(), &events, &at_ms, &device, &seq],
        )?;
        self.note_numbered(seq, id);
        if let Some(known) = self.held.memo.receipts.get_mut(&id) {
            // What the statement added: the events not noted before (the episode's row
            // is this transaction's, so no one else notes its receipts meanwhile).
            for event in events {
                if !known.iter().any(|(e, _, _)| e == event) {
                    known.push((event.clone(), at_ms, seq));
                }
            }
        }
        Ok(())
    }

    fn receipts(&mut self, id: EpisodeId) -> Result<Vec<(String, i64)>> {
        if let Some(known) = self.held.memo.receipts.get(&id) {
            return Ok(known.iter().map(|(event, at, _)| (event.clone(), *at)).collect());
        }
        let rows = self.read("SELECT event, received_at FROM receipts WHERE episode = $1", &[&id.to_string()])?;
        rows.iter().map(|row| Ok((get(row, 0)?, get(row, 1)?))).collect()
    }

    fn receipts_since(&mut self, id: EpisodeId, after: i64) -> Result<Vec<(String, i64)>> {
        if let Some(known) = self.held.memo.receipts.get(&id) {
            let mut since: Vec<_> =
                known.iter().filter(|(_, _, seq)| *seq > after).map(|(event, at, _)| (event.clone(), *at)).collect();
            since.sort();
            return Ok(since);
        }
        let rows = self.read(
            "SELECT event, received_at FROM receipts WHERE episode = $1 AND seq > $2 ORDER BY event",
            &[&id.to_string(), &after],
        )?;
        rows.iter().map(|row| Ok((get(row, 0)?, get(row, 1)?))).collect()
    }

    fn add_team(&mut self, id: &TeamId, name: &str, created_at: &str) -> Result<()> {
        let inserted = self.execute(
            "INSERT INTO teams (id, name, created_at) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
            &[&id, &name, &created_at],
        )?;
        if inserted == 0 { Err(StoreError::Duplicate) } else { Ok(()) }
    }

    fn team_exists(&mut self, id: &TeamId) -> Result<bool> {
        Ok(self.query_opt("SELECT 1 FROM teams WHERE id = $1", &[&id])?.is_some())
    }

    fn team_name(&mut self, id: &TeamId) -> Result<Option<String>> {
        match self.query_opt("SELECT name FROM teams WHERE id = $1", &[&id])? {
            Some(row) => Ok(Some(get(&row, 0)?)),
            None => Ok(None),
        }
    }

    fn count_teams(&mut self) -> Result<i64> {
        get(&self.query_one("SELECT COUNT(*) FROM teams", &[])?, 0)
    }

    fn add_user(
        &mut self,
        id: &UserId,
        username: &str,
        password_hash: &str,
        role: &str,
        created_at: &str,
    ) -> Result<()> {
        let inserted = self.execute(
            "INSERT INTO users (id, username, password_hash, role, created_at) VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT DO NOTHING",
            &[&id, &username, &password_hash, &role, &created_at],
        )?;
        if inserted == 0 { Err(StoreError::Duplicate) } else { Ok(()) }
    }

    fn add_user_team(&mut self, user_id: &UserId, team: &TeamId) -> Result<()> {
        self.execute(
            "INSERT INTO user_teams (user_id, team_id) VALUES ($1, $2) ON CONFLICT DO NOTHING",
            &[&user_id, &team],
        )?;
        Ok(())
    }

    fn set_disabled(&mut self, username: &str, disabled: bool) -> Result<Option<UserId>> {
        match self
            .query_opt("UPDATE users SET disabled = $1 WHERE username = $2 RETURNING id", &[&disabled, &username])?
        {
            Some(row) => Ok(Some(get(&row, 0)?)),
            None => Ok(None),
        }
    }

    fn set_password_hash(&mut self, username: &str, hash: &str) -> Result<()> {
        self.execute("UPDATE users SET password_hash = $1 WHERE username = $2", &[&hash, &username])?;
        Ok(())
    }

    fn login(&mut self, username: &str) -> Result<Option<Login>> {
        match self.query_opt("SELECT id, password_hash, disabled FROM users WHERE username = $1", &[&username])? {
            Some(row) => {
                Ok(Some(Login { user_id: get(&row, 0)?, password_hash: get(&row, 1)?, disabled: get(&row, 2)? }))
            }
            None => Ok(None),
        }
    }

    fn active_user(&mut self, user_id: &UserId) -> Result<Option<(String, String)>> {
        match self.query_opt("SELECT username, role FROM users WHERE id = $1 AND NOT disabled", &[&user_id])? {
            Some(row) => Ok(Some((get(&row, 0)?, get(&row, 1)?))),
            None => Ok(None),
        }
    }

    fn user_teams(&mut self, user_id: &UserId) -> Result<Vec<TeamId>> {
        let rows = self.query("SELECT team_id FROM user_teams WHERE user_id = $1 ORDER BY team_id", &[&user_id])?;
        rows.iter().map(|row| get(row, 0)).collect()
    }

    fn list_users(&mut self) -> Result<Vec<UserRow>> {
        let rows = self.query(
            "SELECT u.id, u.username, u.role, u.disabled, i.provider FROM users u
             LEFT JOIN identities i ON i.user_id = u.id ORDER BY u.username",
            &[],
        )?;
        rows.iter().map(|r| Ok((get(r, 0)?, get(r, 1)?, get(r, 2)?, get(r, 3)?, get(r, 4)?))).collect()
    }

    fn set_role(&mut self, user_id: &UserId, role: &str) -> Result<()> {
        self.execute("UPDATE users SET role = $1 WHERE id = $2", &[&role, &user_id])?;
        Ok(())
    }

    fn team_managers(&mut self, team: &TeamId) -> Result<Vec<String>> {
        self.query(
            "SELECT u.username FROM users u JOIN user_teams t ON t.user_id = u.id
             WHERE t.team_id = $1 AND u.role = 'team_manager' AND NOT u.disabled ORDER BY u.username",
            &[&team],
        )?
        .iter()
        .map(|r| get(r, 0))
        .collect()
    }

    fn username_of(&mut self, id_or_username: &str) -> Result<Option<String>> {
        match self.query_opt(
            "SELECT username FROM users WHERE id = $1 OR username = $1 ORDER BY id = $1 DESC LIMIT 1",
            &[&id_or_username],
        )? {
            Some(row) => Ok(Some(get(&row, 0)?)),
            None => Ok(None),
        }
    }

    fn clear_user_teams(&mut self, user_id: &UserId) -> Result<()> {
        self.execute("DELETE FROM user_teams WHERE user_id = $1", &[&user_id])?;
        Ok(())
    }

    fn identity_user(&mut self, provider: &str, subject: &str) -> Result<Option<(UserId, bool)>> {
        match self.query_opt(
            "SELECT u.id, u.disabled FROM identities i JOIN users u ON u.id = i.user_id
             WHERE i.provider = $1 AND i.subject = $2",
            &[&provider, &subject],
        )? {
            Some(row) => Ok(Some((get(&row, 0)?, get(&row, 1)?))),
            None => Ok(None),
        }
    }

    fn add_identity(&mut self, provider: &str, subject: &str, user_id: &UserId, now: i64) -> Result<()> {
        self.execute(
            "INSERT INTO identities (provider, subject, user_id, created_at, last_sign_in) VALUES ($1, $2, $3, $4, $4)",
            &[&provider, &subject, &user_id, &now],
        )?;
        Ok(())
    }

    fn touch_identity(&mut self, provider: &str, subject: &str, now: i64) -> Result<()> {
        self.execute(
            "UPDATE identities SET last_sign_in = $1 WHERE provider = $2 AND subject = $3",
            &[&now, &provider, &subject],
        )?;
        Ok(())
    }

    fn prune_pending_sign_ins(&mut self, now: i64) -> Result<i64> {
        self.execute("DELETE FROM oidc_pending WHERE expires_at <= $1", &[&now])?;
        get(&self.query_one("SELECT COUNT(*) FROM oidc_pending", &[])?, 0)
    }

    fn put_pending_sign_in(&mut self, state_hash: &str, p: &PendingSignIn) -> Result<()> {
        self.execute(
            "INSERT INTO oidc_pending (state_hash, browser_hash, provider, nonce, verifier, expires_at)
             VALUES ($1, $2, $3, $4, $5, $6)",
            &[&state_hash, &p.browser_hash, &p.provider, &p.nonce, &p.verifier, &p.expires_at],
        )?;
        Ok(())
    }

    fn take_pending_sign_in(&mut self, state_hash: &str) -> Result<Option<PendingSignIn>> {
        match self.query_opt(
            "DELETE FROM oidc_pending WHERE state_hash = $1
             RETURNING provider, browser_hash, nonce, verifier, expires_at",
            &[&state_hash],
        )? {
            Some(r) => Ok(Some(PendingSignIn {
                provider: get(&r, 0)?,
                browser_hash: get(&r, 1)?,
                nonce: get(&r, 2)?,
                verifier: get(&r, 3)?,
                expires_at: get(&r, 4)?,
            })),
            None => Ok(None),
        }
    }

    fn insert_session(&mut self, id: &str, user_id: &UserId, device: &DeviceId, now: i64) -> Result<()> {
        self.execute(
            "INSERT INTO sessions (id, user_id, device_id, created_at) VALUES ($1, $2, $3, $4)",
            &[&id, &user_id, &device, &now],
        )?;
        Ok(())
    }

    fn insert_refresh_token(&mut self, hash: &[u8], session: &str, issued_at: i64, expires_at: i64) -> Result<()> {
        self.execute(
            "INSERT INTO refresh_tokens (hash, session_id, issued_at, expires_at) VALUES ($1, $2, $3, $4)",
            &[&hash, &session, &issued_at, &expires_at],
        )?;
        Ok(())
    }

    fn presented_token(&mut self, hash: &[u8]) -> Result<Option<PresentedToken>> {
        let Some(r) = self.query_opt(
            "SELECT t.session_id, t.expires_at, t.rotated_at, s.user_id, s.device_id, s.revoked_at, u.disabled
             FROM refresh_tokens t JOIN sessions s ON s.id = t.session_id JOIN users u ON u.id = s.user_id
             WHERE t.hash = $1",
            &[&hash],
        )?
        else {
            return Ok(None);
        };
        Ok(Some(PresentedToken {
            session: get(&r, 0)?,
            expires_at: get(&r, 1)?,
            rotated_at: get(&r, 2)?,
            user_id: get(&r, 3)?,
            session_device: get(&r, 4)?,
            revoked_at: get(&r, 5)?,
            disabled: get(&r, 6)?,
        }))
    }

    fn mark_rotated(&mut self, hash: &[u8], now: i64) -> Result<()> {
        self.execute("UPDATE refresh_tokens SET rotated_at = $1 WHERE hash = $2", &[&now, &hash])?;
        Ok(())
    }

    fn revoke_session(&mut self, session: &str, because: &str, now: i64) -> Result<()> {
        self.execute(
            "UPDATE sessions SET revoked_at = $1, revoked_because = $2 WHERE id = $3 AND revoked_at IS NULL",
            &[&now, &because, &session],
        )?;
        Ok(())
    }

    fn session_is_live(&mut self, session: &str, user_id: &UserId) -> Result<bool> {
        match self.query_opt(
            "SELECT revoked_at IS NULL FROM sessions WHERE id = $1 AND user_id = $2",
            &[&session, &user_id],
        )? {
            Some(row) => get(&row, 0),
            None => Ok(false),
        }
    }

    fn device_revoked(&mut self, device: &DeviceId) -> Result<bool> {
        Ok(self.query_opt("SELECT 1 FROM revoked_devices WHERE device = $1", &[&device])?.is_some())
    }

    fn revoke_device(&mut self, device: &DeviceId, by: &UserId, now: i64) -> Result<()> {
        self.execute(
            "INSERT INTO revoked_devices (device, revoked_at, revoked_by) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
            &[&device, &now, &by],
        )?;
        self.execute(
            "UPDATE sessions SET revoked_at = $1, revoked_because = 'device_revoked'
             WHERE device_id = $2 AND revoked_at IS NULL",
            &[&now, &device],
        )?;
        Ok(())
    }

    fn end_all_sessions(&mut self, user_id: &UserId, because: &str, now: i64) -> Result<u64> {
        let ended = self.execute(
            "UPDATE sessions SET revoked_at = $1, revoked_because = $2 WHERE user_id = $3 AND revoked_at IS NULL",
            &[&now, &because, &user_id],
        )?;
        self.execute("DELETE FROM dashboard_sessions WHERE user_id = $1", &[&user_id])?;
        Ok(ended)
    }

    fn device_registration(&mut self, device: &DeviceId) -> Result<Option<Registration>> {
        match self.query_opt("SELECT user_id, key_hash FROM devices WHERE id = $1", &[&device])? {
            Some(row) => Ok(Some(Registration { user_id: get(&row, 0)?, key_hash: get(&row, 1)? })),
            None => Ok(None),
        }
    }

    fn register_device(
        &mut self,
        device: &DeviceId,
        user_id: &UserId,
        key_hash: Option<&[u8]>,
        now: i64,
    ) -> Result<bool> {
        // DO NOTHING rather than a unique violation, which would abort the transaction.
        let inserted = self.execute(
            "INSERT INTO devices (id, user_id, key_hash, registered_at) VALUES ($1, $2, $3, $4)
             ON CONFLICT (id) DO NOTHING",
            &[&device, &user_id, &key_hash, &now],
        )?;
        Ok(inserted > 0)
    }

    fn set_device_key(&mut self, device: &DeviceId, key_hash: &[u8]) -> Result<()> {
        self.execute("UPDATE devices SET key_hash = $1 WHERE id = $2 AND key_hash IS NULL", &[&key_hash, &device])?;
        Ok(())
    }

    fn share_a_team(&mut self, a: &UserId, b: &UserId) -> Result<bool> {
        get(
            &self.query_one(
                "SELECT EXISTS (SELECT 1 FROM user_teams a JOIN user_teams b ON a.team_id = b.team_id
                 WHERE a.user_id = $1 AND b.user_id = $2)",
                &[&a, &b],
            )?,
            0,
        )
    }

    fn device_in_reach(&mut self, device: &DeviceId, user_id: &UserId, admin: bool) -> Result<bool> {
        get(
            &self.query_one(
                "SELECT EXISTS (SELECT 1 FROM devices d
                 WHERE d.id = $1 AND ($2 OR EXISTS (SELECT 1 FROM user_teams a JOIN user_teams b ON a.team_id = b.team_id
                                                    WHERE a.user_id = d.user_id AND b.user_id = $3)))",
                &[&device, &admin, &user_id],
            )?,
            0,
        )
    }

    fn device_users(&mut self, device: &DeviceId) -> Result<Vec<String>> {
        if self.held.memo.device == device.as_str()
            && let Some(known) = &self.held.memo.device_users
        {
            return Ok(known.clone());
        }
        let rows = self.read(
            "SELECT DISTINCT u.username FROM sessions s JOIN users u ON u.id = s.user_id WHERE s.device_id = $1",
            &[&device],
        )?;
        rows.iter().map(|row| get(row, 0)).collect()
    }

    fn client_failures(&mut self, client: &str) -> Result<Option<(i64, i64)>> {
        match self.query_opt("SELECT window_start, failures FROM client_failures WHERE client = $1", &[&client])? {
            Some(row) => Ok(Some((get(&row, 0)?, get(&row, 1)?))),
            None => Ok(None),
        }
    }

    fn count_client_failure(&mut self, client: &str, now: i64, window_secs: i64) -> Result<()> {
        self.execute(
            "INSERT INTO client_failures AS f (client, window_start, failures) VALUES ($1, $2, 1)
             ON CONFLICT (client) DO UPDATE SET
                 failures = CASE WHEN f.window_start + $3 <= $2 THEN 1 ELSE f.failures + 1 END,
                 window_start = CASE WHEN f.window_start + $3 <= $2 THEN $2 ELSE f.window_start END",
            &[&client, &now, &window_secs],
        )?;
        Ok(())
    }

    fn login_failures(&mut self, username: &str, client: &str) -> Result<Option<(i64, i64)>> {
        match self.query_opt(
            "SELECT failures, locked_until FROM login_failures WHERE username = $1 AND client = $2",
            &[&username, &client],
        )? {
            Some(row) => Ok(Some((get(&row, 0)?, get(&row, 1)?))),
            None => Ok(None),
        }
    }

    fn put_login_failures(
        &mut self,
        username: &str,
        client: &str,
        failures: i64,
        locked_until: i64,
        now: i64,
    ) -> Result<()> {
        self.execute(
            "INSERT INTO login_failures (username, client, failures, locked_until, updated_at)
             VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (username, client) DO UPDATE SET failures = $3, locked_until = $4, updated_at = $5",
            &[&username, &client, &failures, &locked_until, &now],
        )?;
        Ok(())
    }

    fn prune_failures(&mut self, before: i64, limit: i64) -> Result<()> {
        self.execute(
            "DELETE FROM login_failures WHERE (username, client) IN
                 (SELECT username, client FROM login_failures WHERE updated_at < $1 LIMIT $2)",
            &[&before, &limit],
        )?;
        self.execute(
            "DELETE FROM client_failures WHERE client IN
                 (SELECT client FROM client_failures WHERE window_start < $1 LIMIT $2)",
            &[&before, &limit],
        )?;
        Ok(())
    }

    fn clear_login_failures(&mut self, username: &str, client: &str) -> Result<()> {
        self.execute("DELETE FROM login_failures WHERE username = $1 AND client = $2", &[&username, &client])?;
        Ok(())
    }

    fn clear_username_failures(&mut self, username: &str) -> Result<()> {
        self.execute("DELETE FROM login_failures WHERE username = $1", &[&username])?;
        Ok(())
    }

    fn start_dashboard_session(
        &mut self,
        hash: &str,
        user_id: &UserId,
        csrf: &str,
        now: i64,
        expires_at: i64,
    ) -> Result<()> {
        self.execute("DELETE FROM dashboard_sessions WHERE expires_at <= $1", &[&now])?;
        self.execute(
            "INSERT INTO dashboard_sessions (hash, user_id, csrf, created_at, expires_at) VALUES ($1, $2, $3, $4, $5)",
            &[&hash, &user_id, &csrf, &now, &expires_at],
        )?;
        Ok(())
    }

    fn end_dashboard_session(&mut self, hash: &str) -> Result<()> {
        self.execute("DELETE FROM dashboard_sessions WHERE hash = $1", &[&hash])?;
        Ok(())
    }

    fn dashboard_session(&mut self, hash: &str, now: i64) -> Result<Option<(UserId, String)>> {
        match self.query_opt(
            "SELECT user_id, csrf FROM dashboard_sessions WHERE hash = $1 AND expires_at > $2",
            &[&hash, &now],
        )? {
            Some(row) => Ok(Some((get(&row, 0)?, get(&row, 1)?))),
            None => Ok(None),
        }
    }

    fn audit_head(&mut self) -> Result<(i64, Vec<u8>)> {
        self.flush_audit()?;
        match self.query_opt("SELECT n, hash FROM audit_head WHERE id = 1", &[])? {
            Some(row) => Ok((get(&row, 0)?, get(&row, 1)?)),
            None => Err(StoreError::damaged("audit_head", "n", "no row")),
        }
    }

    fn lock_audit_head(&mut self) -> Result<(i64, Vec<u8>)> {
        // The counter first: a writer takes it before the head (an episode's change, then
        // its audit entry), so a transaction that reads and logs before it writes must
        // not hold the head while waiting for the counter, nor the other way round.
        self.lock_seq()?;
        if let Some(head) = &self.held.audit_head {
            return Ok(head.clone());
        }
        match self.query_opt("SELECT n, hash FROM audit_head WHERE id = 1 FOR UPDATE", &[])? {
            Some(row) => {
                let head: (i64, Vec<u8>) = (get(&row, 0)?, get(&row, 1)?);
                if self.in_transaction() {
                    self.held.audit_head = Some(head.clone());
                }
                Ok(head)
            }
            None => Err(StoreError::damaged("audit_head", "n", "no row")),
        }
    }

    fn log_audit(&mut self, row: AuditRow) -> Result<()> {
        if self.held.at_commit && self.held.audit_head.is_none() {
            // Chained when the transaction commits (`number`), on the head as it is then.
            self.held.unchained.push(row);
            return Ok(());
        }
        super::chain_audit(self, row)
    }

    fn append_audit(&mut self, e: &ChainedEntry) -> Result<()> {
        if let Some(head) = &mut self.held.audit_head {
            // Chained on the head this transaction holds: kept, and written at commit.
            if e.row.n != head.0 + 1 || e.prev_hash != head.1 {
                return Err(StoreError::Damaged("an audit entry was not chained on the head".into()));
            }
            *head = (e.row.n, e.hash.clone());
            self.held.audit.push(e.clone());
            return Ok(());
        }
        let r = &e.row;
        self.execute(
            "INSERT INTO audit (n, at, user_id, username, device, via, action, episode, detail, prev_hash, hash)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
            &[
                &r.n,
                &r.at,
                &r.user_id,
                &r.username,
                &r.device,
                &r.via,
                &r.action,
                &r.episode,
                &r.detail,
                &e.prev_hash,
                &e.hash,
            ],
        )?;
        self.execute("UPDATE audit_head SET n = $1, hash = $2 WHERE id = 1", &[&r.n, &e.hash])?;
        Ok(())
    }

    fn audit_chain(&mut self, after: i64, limit: usize) -> Result<Vec<ChainedEntry>> {
        self.flush_audit()?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = self.query(
            "SELECT n, at, user_id, username, device, via, action, episode, detail, prev_hash, hash FROM audit
             WHERE n > $1 ORDER BY n LIMIT $2",
            &[&after, &limit],
        )?;
        rows.iter()
            .map(|r| {
                Ok(ChainedEntry {
                    row: AuditRow {
                        n: get(r, 0)?,
                        at: get(r, 1)?,
                        user_id: get(r, 2)?,
                        username: get(r, 3)?,
                        device: get(r, 4)?,
                        via: get(r, 5)?,
                        action: get(r, 6)?,
                        episode: get(r, 7)?,
                        detail: get(r, 8)?,
                    },
                    prev_hash: get(r, 9)?,
                    hash: get(r, 10)?,
                })
            })
            .collect()
    }

    fn rechain_audit(&mut self, e: &ChainedEntry, head: bool) -> Result<()> {
        self.flush_audit()?;
        self.execute("UPDATE audit SET prev_hash = $1, hash = $2 WHERE n = $3", &[&e.prev_hash, &e.hash, &e.row.n])?;
        if head {
            self.execute("UPDATE audit_head SET n = $1, hash = $2 WHERE id = 1", &[&e.row.n, &e.hash])?;
        }
        Ok(())
    }

    fn audit_page(&mut self, scope: AuditScope<'_>, cursor: AuditCursor, limit: usize) -> Result<Vec<Entry>> {
        // The teams as one array parameter; no episode is `NULL`. Two statements, one
        // for each direction.
        let teams: Vec<TeamId> = scope.teams.to_vec();
        let episode: Option<String> = scope.episode.map(|e| e.to_string());
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = match cursor {
            AuditCursor::After(n) => self.query(
                "SELECT a.n, a.at, a.user_id, a.username, a.device, a.via, a.action, a.episode, a.detail
                 FROM audit a LEFT JOIN episodes e ON e.id = a.episode
                 WHERE (e.team = ANY($1) OR ($2 AND a.episode IS NULL))
                   AND ($3::text IS NULL OR a.episode = $3) AND a.n > $4
                 ORDER BY a.n ASC LIMIT $5",
                &[&teams, &scope.unscoped, &episode, &n, &limit],
            )?,
            AuditCursor::Before(before) => self.query(
                "SELECT a.n, a.at, a.user_id, a.username, a.device, a.via, a.action, a.episode, a.detail
                 FROM audit a LEFT JOIN episodes e ON e.id = a.episode
                 WHERE (e.team = ANY($1) OR ($2 AND a.episode IS NULL))
                   AND ($3::text IS NULL OR a.episode = $3) AND a.n < $4
                 ORDER BY a.n DESC LIMIT $5",
                &[&teams, &scope.unscoped, &episode, &before.unwrap_or(i64::MAX), &limit],
            )?,
        };
        rows.iter().map(audit_entry).collect()
    }

    fn audit_entries(&mut self, episode: EpisodeId) -> Result<Vec<Entry>> {
        self.flush_audit()?;
        let rows = self.query(
            "SELECT n, at, user_id, username, device, via, action, episode, detail FROM audit
             WHERE episode = $1 ORDER BY n",
            &[&episode.to_string()],
        )?;
        rows.iter().map(audit_entry).collect()
    }

    fn put_summary(&mut self, s: &SummaryRecord<'_>) -> Result<()> {
        let key = s.episode.to_string();
        // The summary, its open actions and its appointments as they are now, in one
        // statement: rows no longer there are deleted and the rest written over (a delete
        // and an insert touch different rows, so their order within the statement does
        // not matter; the foreign keys are checked at its end).
        let (mut actions, mut codes, mut owners, mut priorities, mut states, mut dues) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for a in &s.actions {
            actions.push(a.action.as_str());
            codes.push(a.code);
            owners.push(a.owner.as_str());
            priorities.push(a.priority.as_str());
            states.push(a.state.as_str());
            dues.push(a.due);
        }
        let (mut events, mut ats, mut outcomes) = (Vec::new(), Vec::new(), Vec::new());
        for a in &s.appointments {
            events.push(a.event.as_str());
            ats.push(a.at);
            outcomes.push(a.outcome.as_str());
        }
        self.execute(
            "WITH summary AS (
                 INSERT INTO summaries (episode, seq, pathway, patient_ref, open_actions, overdue_actions,
                                        conflicts, duplicates, unfiled, next_due, evaluated_at)
                 VALUES ($1, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20)
                 ON CONFLICT (episode) DO UPDATE SET seq = excluded.seq, pathway = excluded.pathway,
                    patient_ref = excluded.patient_ref, open_actions = excluded.open_actions,
                    overdue_actions = excluded.overdue_actions, conflicts = excluded.conflicts,
                    duplicates = excluded.duplicates, unfiled = excluded.unfiled,
                    next_due = excluded.next_due, evaluated_at = excluded.evaluated_at),
             gone_actions AS (
                 DELETE FROM summary_actions WHERE episode = $1 AND action <> ALL($2::text[])),
             gone_appointments AS (
                 DELETE FROM summary_appointments WHERE episode = $1 AND event <> ALL($8::text[])),
             actions AS (
                 INSERT INTO summary_actions (episode, action, code, owner, priority, state, due)
                 SELECT $1, * FROM unnest($2::text[], $3::text[], $4::text[], $5::text[], $6::text[],
                                          $7::bigint[])
                 ON CONFLICT (episode, action) DO UPDATE SET code = excluded.code, owner = excluded.owner,
                    priority = excluded.priority, state = excluded.state, due = excluded.due)
             INSERT INTO summary_appointments (episode, event, at, outcome)
             SELECT $1, * FROM unnest($8::text[], $9::bigint[], $10::text[])
             ON CONFLICT (episode, event) DO UPDATE SET at = excluded.at, outcome = excluded.outcome",
            &[
                &key,
                &actions,
                &codes,
                &owners,
                &priorities,
                &states,
                &dues,
                &events,
                &ats,
                &outcomes,
                &s.seq,
                &s.pathway,
                &s.patient_ref,
                &s.open_actions,
                &s.overdue_actions,
                &s.conflicts,
                &s.duplicates,
                &s.unfiled,
                &s.next_due,
                &s.evaluated_at,
            ],
        )?;
        Ok(())
    }

    fn summaries(&mut self, team: &TeamId) -> Result<Vec<Summary>> {
        let rows = self.query(
            "SELECT s.episode, e.team, s.pathway, s.patient_ref, s.open_actions, s.overdue_actions, s.conflicts,
                    s.duplicates, s.unfiled
             FROM summaries s JOIN episodes e ON e.id = s.episode WHERE e.team = $1",
            &[&team],
        )?;
        rows.iter()
            .map(|r| {
                let id: String = get(r, 0)?;
                Ok(Summary {
                    id: parse_id(&id, "summaries", "episode")?,
                    team: get(r, 1)?,
                    pathway: get(r, 2)?,
                    patient_ref: get(r, 3)?,
                    open_actions: get(r, 4)?,
                    overdue_actions: get(r, 5)?,
                    conflicts: get(r, 6)?,
                    duplicates: get(r, 7)?,
                    unfiled: get(r, 8)?,
                })
            })
            .collect()
    }

    fn open_actions(&mut self, team: &TeamId) -> Result<Vec<OpenAction>> {
        let rows = self.query(
            "SELECT a.episode, s.patient_ref, a.action, a.code, a.owner, a.priority, a.state, a.due
             FROM summary_actions a JOIN summaries s ON s.episode = a.episode JOIN episodes e ON e.id = a.episode
             WHERE e.team = $1",
            &[&team],
        )?;
        rows.iter()
            .map(|r| {
                let state: String = get(r, 6)?;
                super::sqlite::open_action(
                    get(r, 0)?,
                    get(r, 1)?,
                    get(r, 2)?,
                    get(r, 3)?,
                    get(r, 4)?,
                    get(r, 5)?,
                    &state,
                    get(r, 7)?,
                )
            })
            .collect()
    }

    fn rates(&mut self, team: &TeamId, since: i64, until: i64) -> Result<Rates> {
        let r = self.query_one(
            "SELECT COUNT(*), COUNT(*) FILTER (WHERE a.outcome = 'not_brought'),
                    COUNT(*) FILTER (WHERE a.outcome = 'did_not_attend')
             FROM summary_appointments a JOIN episodes e ON e.id = a.episode
             WHERE e.team = $1 AND a.at > $2 AND a.at <= $3",
            &[&team, &since, &until],
        )?;
        Ok(Rates {
            team: team.to_string(),
            days: 0,
            appointments: get(&r, 0)?,
            not_brought: get(&r, 1)?,
            did_not_attend: get(&r, 2)?,
        })
    }

    fn counts_by_team(&mut self) -> Result<Vec<(String, i64, i64)>> {
        let rows = self.query(
            "SELECT t.id, COALESCE(SUM(s.open_actions), 0)::bigint, COALESCE(SUM(s.overdue_actions), 0)::bigint
             FROM teams t LEFT JOIN episodes e ON e.team = t.id LEFT JOIN summaries s ON s.episode = e.id
             GROUP BY t.id ORDER BY t.id",
            &[],
        )?;
        rows.iter().map(|r| Ok((get(r, 0)?, get(r, 1)?, get(r, 2)?))).collect()
    }

    fn enqueue(&mut self, item: &NewOutboxItem<'_>) -> Result<bool> {
        let episode = item.episode.map(|e| e.to_string());
        let added = self.execute(
            "INSERT INTO outbox (kind, dedupe_key, team, episode, payload, next_attempt_at, created_at)
             VALUES ($1, $2, $3, $4, $5, $6, $6)
             ON CONFLICT (dedupe_key) DO NOTHING",
            &[&item.kind, &item.dedupe_key, &item.team, &episode, &item.payload, &item.now_ms],
        )?;
        Ok(added > 0)
    }

    fn claim_outbox(&mut self, kind: &str, now_ms: i64, lease_until_ms: i64, limit: usize) -> Result<Vec<OutboxItem>> {
        // The rows are locked as they are chosen, and a row another replica has locked
        // (claiming it now) is passed over rather than waited for: two claims at once
        // take different rows, and neither blocks the other.
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = self.query(
            "UPDATE outbox SET state = 'sending', attempts = attempts + 1, claimed_until = $3
             WHERE id IN (SELECT id FROM outbox
                          WHERE kind = $1 AND ((state IN ('pending', 'retrying') AND next_attempt_at <= $2)
                                               OR (state = 'sending' AND claimed_until <= $2))
                          ORDER BY next_attempt_at, id LIMIT $4
                          FOR UPDATE SKIP LOCKED)
             RETURNING id, kind, dedupe_key, team, episode, payload, attempts",
            &[&kind, &now_ms, &lease_until_ms, &limit],
        )?;
        let mut out = rows
            .iter()
            .map(|r| {
                let episode: Option<String> = get(r, 4)?;
                Ok(OutboxItem {
                    id: get(r, 0)?,
                    kind: get(r, 1)?,
                    dedupe_key: get(r, 2)?,
                    team: get(r, 3)?,
                    episode: episode.map(|e| parse_id(&e, "outbox", "episode")).transpose()?,
                    payload: get(r, 5)?,
                    attempts: get(r, 6)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        out.sort_by_key(|item| item.id);
        Ok(out)
    }

    fn outbox_sent(&mut self, id: i64, attempts: i64, now_ms: i64) -> Result<bool> {
        let changed = self.execute(
            "UPDATE outbox SET state = 'sent', sent_at = $3, claimed_until = NULL, last_error = NULL
             WHERE id = $1 AND attempts = $2 AND state = 'sending'",
            &[&id, &attempts, &now_ms],
        )?;
        Ok(changed > 0)
    }

    fn outbox_failed(&mut self, id: i64, attempts: i64, retry_at: Option<i64>, error: &str) -> Result<bool> {
        let changed = self.execute(
            "UPDATE outbox SET state = CASE WHEN $3::bigint IS NULL THEN 'failed' ELSE 'retrying' END,
                               next_attempt_at = COALESCE($3::bigint, next_attempt_at), claimed_until = NULL,
                               last_error = $4
             WHERE id = $1 AND attempts = $2 AND state = 'sending'",
            &[&id, &attempts, &retry_at, &error],
        )?;
        Ok(changed > 0)
    }

    fn retry_outbox(&mut self, kind: &str, episode: Option<EpisodeId>, now_ms: i64) -> Result<u64> {
        let episode = episode.map(|e| e.to_string());
        self.execute(
            "UPDATE outbox SET state = 'pending', attempts = 0, next_attempt_at = $3
             WHERE kind = $1 AND state = 'failed' AND ($2::text IS NULL OR episode = $2)",
            &[&kind, &episode, &now_ms],
        )
    }

    fn outbox_counts(&mut self, team: &TeamId) -> Result<Vec<OutboxCount>> {
        let rows = self.query(
            "SELECT o.episode, o.kind, o.state, COUNT(*), MAX(o.last_error)
             FROM outbox o JOIN episodes e ON e.id = o.episode
             WHERE e.team = $1 AND o.state != 'sent'
             GROUP BY o.episode, o.kind, o.state ORDER BY o.episode, o.kind, o.state",
            &[&team],
        )?;
        rows.iter()
            .map(|r| {
                let episode: String = get(r, 0)?;
                Ok(OutboxCount {
                    episode: parse_id(&episode, "outbox", "episode")?,
                    kind: get(r, 1)?,
                    state: get(r, 2)?,
                    count: get(r, 3)?,
                    last_error: get(r, 4)?,
                })
            })
            .collect()
    }

    fn outbox_of(&mut self, episode: EpisodeId, kind_prefix: &str) -> Result<Vec<OutboxRow>> {
        let rows = self.query(
            "SELECT kind, dedupe_key, state, attempts, last_error, created_at, next_attempt_at, sent_at
             FROM outbox WHERE episode = $1 AND starts_with(kind, $2) ORDER BY created_at, id",
            &[&episode.to_string(), &kind_prefix],
        )?;
        rows.iter()
            .map(|r| {
                Ok(OutboxRow {
                    kind: get(r, 0)?,
                    dedupe_key: get(r, 1)?,
                    state: get(r, 2)?,
                    attempts: get(r, 3)?,
                    last_error: get(r, 4)?,
                    created_at: get(r, 5)?,
                    next_attempt_at: get(r, 6)?,
                    sent_at: get(r, 7)?,
                })
            })
            .collect()
    }

    fn inspect(&mut self, sql: &str) -> Result<Vec<Vec<Option<String>>>> {
        let rows = on!(self, c => c.query(sql, &[])?);
        rows.iter()
            .map(|row| {
                (0..row.len())
                    .map(|i| {
                        let ty = row.columns()[i].type_().clone();
                        Ok(if ty == Type::BOOL {
                            get::<Option<bool>>(row, i)?.map(|b| if b { "1" } else { "0" }.to_owned())
                        } else if ty == Type::INT8 {
                            get::<Option<i64>>(row, i)?.map(|n| n.to_string())
                        } else if ty == Type::INT4 {
                            get::<Option<i32>>(row, i)?.map(|n| n.to_string())
                        } else if ty == Type::BYTEA {
                            get::<Option<Vec<u8>>>(row, i)?.map(|b| b.iter().map(|b| format!("{b:02x}")).collect())
                        } else {
                            get::<Option<String>>(row, i)?
                        })
                    })
                    .collect()
            })
            .collect()
    }

    fn inspect_execute(&mut self, sql: &str) -> Result<u64> {
        Ok(on!(self, c => c.execute(sql, &[])?))
    }
}

/// An audit entry from a row of `n, at, user_id, username, device, via, action, episode,
/// detail`, as both of the log's readers select them (the SQLite store reads them the
/// same way, through its own `audit_entry`).
fn audit_entry(r: &Row) -> Result<Entry> {
    let via: String = get(r, 5)?;
    super::sqlite::entry(
        get(r, 0)?,
        get(r, 1)?,
        get(r, 2)?,
        get(r, 3)?,
        get(r, 4)?,
        &via,
        get(r, 6)?,
        get(r, 7)?,
        get(r, 8)?,
    )
}
