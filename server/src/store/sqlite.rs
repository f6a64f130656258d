//! The SQLite backend: the embedded default. One connection (`crate::db::open`: WAL,
//! `synchronous = FULL`, the schema in `schema/*.sql`), so one writer at a time, which
//! already keeps `seq` in commit order; `seq` is kept in the `meta` table.

use episode::EpisodeId;
use rusqlite::types::ValueRef;
use rusqlite::{Connection, ErrorCode, OptionalExtension, params};

use super::{
    AUDIT_CHAIN_SCHEMA, ChainedEntry, Conn, EpisodeRow, Login, NewOutboxItem, OutboxCount, OutboxItem, OutboxRow,
    PendingSignIn, PresentedToken, Registration, Result, StoreError, SummaryRecord, Transaction, Tx, UserRow, parse_id,
};
use crate::accounts::{DeviceId, TeamId, UserId};
use crate::audit::{Cursor as AuditCursor, Entry, Row as AuditRow, Scope as AuditScope, Via};
use crate::caseload::{OpenAction, Rates, Summary};

/// A connection in autocommit (`tx` is `None`) or a transaction, rolled back when
/// dropped uncommitted.
pub(super) struct Sqlite<'a> {
    conn: &'a Connection,
    tx: Option<rusqlite::Transaction<'a>>,
    /// Began with `synchronous = NORMAL`, restored to `FULL` at its end.
    light: bool,
}

impl<'a> Sqlite<'a> {
    pub(super) fn conn(conn: &'a Connection) -> Self {
        Self { conn, tx: None, light: false }
    }

    fn c(&self) -> &Connection {
        self.conn
    }
}

impl Conn for Sqlite<'_> {
    fn transaction(&mut self) -> Result<Box<dyn Transaction + '_>> {
        let conn = self.conn;
        Ok(Box::new(Sqlite { conn, tx: Some(conn.unchecked_transaction()?), light: false }))
    }

    fn light_transaction(&mut self) -> Result<Box<dyn Transaction + '_>> {
        let conn = self.conn;
        // WAL with `synchronous = NORMAL`: the commit is in the WAL but not yet synced;
        // the next full commit syncs it too. A process that dies loses nothing.
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        match conn.unchecked_transaction() {
            Ok(tx) => Ok(Box::new(Sqlite { conn, tx: Some(tx), light: true })),
            Err(e) => {
                restore_full(conn);
                Err(e.into())
            }
        }
    }

    fn forget_meta(&mut self, key: &str) -> Result<()> {
        let conn = self.conn;
        conn.pragma_update(None, "secure_delete", true)?;
        let deleted = (|| {
            let tx = conn.unchecked_transaction()?;
            tx.prepare_cached("DELETE FROM meta WHERE key = ?1")?.execute([key])?;
            tx.commit()
        })();
        conn.pragma_update(None, "secure_delete", false)?;
        deleted?;
        conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
        Ok(())
    }
}

/// Schema upgrades on SQLite: each in a transaction with the `user_version` it reaches,
/// and the work beyond its SQL (`super::after_upgrade`) inside it.
pub(super) struct Migrating<'a>(pub(super) &'a mut Connection);

/// The audit log's update trigger, put back once schema 6's upgrade has chained the
/// entries already there.
const AUDIT_NO_UPDATE: &str = "CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit
BEGIN
    SELECT RAISE(ABORT, 'the audit log is append-only');
END;";

impl migrate::Versioned for Migrating<'_> {
    type Error = StoreError;

    fn version(&mut self) -> Result<i64> {
        Ok(self.0.query_row("PRAGMA user_version", [], |row| row.get(0))?)
    }

    fn upgrade(&mut self, sql: &str, to: i64) -> Result<()> {
        let conn: &Connection = self.0;
        let mut tx = Box::new(Sqlite { conn, tx: Some(conn.unchecked_transaction()?), light: false });
        conn.execute_batch(sql)?;
        super::after_upgrade(&mut *tx, to)?;
        if to == AUDIT_CHAIN_SCHEMA {
            conn.execute_batch(AUDIT_NO_UPDATE)?;
        }
        conn.pragma_update(None, "user_version", to)?;
        tx.commit()
    }
}

fn restore_full(conn: &Connection) {
    if let Err(e) = conn.pragma_update(None, "synchronous", "FULL") {
        tracing::error!(error = %e, "cannot restore synchronous = FULL");
    }
}

impl Transaction for Sqlite<'_> {
    fn commit(mut self: Box<Self>) -> Result<()> {
        match self.tx.take() {
            Some(tx) => Ok(tx.commit()?),
            None => Ok(()),
        }
    }
}

impl Drop for Sqlite<'_> {
    fn drop(&mut self) {
        // An uncommitted transaction rolls back as it drops, before the pragma is restored.
        drop(self.tx.take());
        if self.light {
            restore_full(self.conn);
        }
    }
}

fn is_unique_violation(error: &rusqlite::Error) -> bool {
    matches!(error, rusqlite::Error::SqliteFailure(e, _) if e.code == ErrorCode::ConstraintViolation)
}

/// A compare-and-set write: no row changed means another writer moved the episode on.
fn checked(id: EpisodeId, changed: usize) -> Result<()> {
    if changed == 0 { Err(StoreError::Conflict(id)) } else { Ok(()) }
}

impl Tx for Sqlite<'_> {
    fn meta(&mut self, key: &str) -> Result<Option<String>> {
        Ok(self
            .c()
            .prepare_cached("SELECT value FROM meta WHERE key = ?1")?
            .query_row([key], |r| r.get(0))
            .optional()?)
    }

    fn set_meta(&mut self, key: &str, value: &str) -> Result<()> {
        self.c()
            .prepare_cached(
                "INSERT INTO meta (key, value) VALUES (?1, ?2) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            )?
            .execute([key, value])?;
        Ok(())
    }

    fn add_meta(&mut self, key: &str, value: &str) -> Result<()> {
        self.c()
            .prepare_cached("INSERT INTO meta (key, value) VALUES (?1, ?2) ON CONFLICT (key) DO NOTHING")?
            .execute([key, value])?;
        Ok(())
    }

    fn try_job_lock(&mut self, _job: super::Job) -> Result<bool> {
        Ok(true)
    }

    fn schema_version(&mut self) -> Result<i64> {
        Ok(self.c().query_row("PRAGMA user_version", [], |r| r.get(0))?)
    }

    fn savepoint(&mut self) -> Result<()> {
        Ok(self.c().execute_batch("SAVEPOINT request")?)
    }

    fn release_savepoint(&mut self) -> Result<()> {
        Ok(self.c().execute_batch("RELEASE request")?)
    }

    fn rollback_to_savepoint(&mut self) -> Result<()> {
        Ok(self.c().execute_batch("ROLLBACK TO request; RELEASE request")?)
    }

    fn next_seq(&mut self) -> Result<i64> {
        // One writer at a time: the `meta` row is the counter, and the order in which
        // `seq` values are taken is the order in which they commit.
        let seq = self.current_seq()? + 1;
        self.set_meta("seq", &seq.to_string())?;
        Ok(seq)
    }

    fn current_seq(&mut self) -> Result<i64> {
        match self.meta("seq")? {
            None => Ok(0),
            Some(text) => text.parse().map_err(|_| StoreError::damaged("meta", "seq", "no number")),
        }
    }

    fn lock_seq(&mut self) -> Result<()> {
        // One writer at a time already.
        Ok(())
    }

    fn team_of(&mut self, id: EpisodeId) -> Result<Option<(TeamId, i64)>> {
        Ok(self
            .c()
            .prepare_cached("SELECT team, seq FROM episodes WHERE id = ?1")?
            .query_row([id.to_string()], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?)
    }

    fn load_episode(&mut self, id: EpisodeId) -> Result<Option<EpisodeRow>> {
        let key = id.to_string();
        let Some((team, seq, snapshot)) = self
            .c()
            .prepare_cached("SELECT team, seq, snapshot FROM episodes WHERE id = ?1")?
            .query_row([&key], |r| Ok((r.get::<_, TeamId>(0)?, r.get::<_, i64>(1)?, r.get::<_, Vec<u8>>(2)?)))
            .optional()?
        else {
            return Ok(None);
        };
        let mut statement =
            self.c().prepare_cached("SELECT bytes FROM episode_changes WHERE episode = ?1 ORDER BY n")?;
        let changes: Vec<Vec<u8>> = statement.query_map([&key], |r| r.get(0))?.collect::<Result<_, _>>()?;
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
        self.c()
            .prepare_cached("INSERT INTO episodes (id, team, seq, snapshot, created_at) VALUES (?1, ?2, ?3, ?4, ?5)")?
            .execute(params![id.to_string(), team, seq, snapshot, created_at])
            .map_err(|e| if is_unique_violation(&e) { StoreError::Conflict(id) } else { e.into() })?;
        Ok(())
    }

    fn append_change(&mut self, id: EpisodeId, loaded: i64, seq: i64, bytes: &[u8]) -> Result<()> {
        let key = id.to_string();
        let changed = self
            .c()
            .prepare_cached("UPDATE episodes SET seq = ?1 WHERE id = ?2 AND seq = ?3")?
            .execute(params![seq, key, loaded])?;
        checked(id, changed)?;
        self.c()
            .prepare_cached("INSERT INTO episode_changes (episode, bytes) VALUES (?1, ?2)")?
            .execute(params![key, bytes])?;
        Ok(())
    }

    fn replace_snapshot(&mut self, id: EpisodeId, loaded: i64, seq: i64, snapshot: &[u8]) -> Result<()> {
        let key = id.to_string();
        let changed = self
            .c()
            .prepare_cached("UPDATE episodes SET snapshot = ?1, seq = ?2 WHERE id = ?3 AND seq = ?4")?
            .execute(params![snapshot, seq, key, loaded])?;
        checked(id, changed)?;
        self.c().prepare_cached("DELETE FROM episode_changes WHERE episode = ?1")?.execute([&key])?;
        Ok(())
    }

    fn set_team(&mut self, id: EpisodeId, loaded: i64, seq: i64, team: &TeamId) -> Result<()> {
        let changed = self
            .c()
            .prepare_cached("UPDATE episodes SET team = ?1, seq = ?2 WHERE id = ?3 AND seq = ?4")?
            .execute(params![team, seq, id.to_string(), loaded])?;
        checked(id, changed)
    }

    fn changed_since(
        &mut self,
        teams: &[TeamId],
        cursor: i64,
        upto: i64,
        limit: usize,
    ) -> Result<Vec<(EpisodeId, i64)>> {
        let mut out = Vec::new();
        let mut statement = self.c().prepare_cached(
            "SELECT id, seq FROM episodes WHERE team = ?1 AND seq > ?2 AND seq <= ?3 ORDER BY seq LIMIT ?4",
        )?;
        for team in teams {
            let rows = statement.query_map(params![team, cursor, upto, limit as i64], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?))
            })?;
            for row in rows {
                let (id, seq) = row?;
                out.push((parse_id(&id, "episodes", "id")?, seq));
            }
        }
        out.sort_by_key(|&(id, seq)| (seq, id));
        out.truncate(limit);
        Ok(out)
    }

    fn stale_summaries(&mut self, now: i64, teams: Option<&[TeamId]>, limit: usize) -> Result<Vec<EpisodeId>> {
        let mut statement = self.c().prepare_cached(
            "SELECT e.id, e.team FROM episodes e LEFT JOIN summaries s ON s.episode = e.id
             WHERE s.episode IS NULL OR s.seq != e.seq OR s.next_due <= ?1
             ORDER BY e.seq",
        )?;
        let mut rows = statement.query([now])?;
        let mut out = Vec::new();
        while out.len() < limit
            && let Some(row) = rows.next()?
        {
            let team: TeamId = row.get(1)?;
            if teams.is_none_or(|teams| teams.contains(&team)) {
                out.push(parse_id(&row.get::<_, String>(0)?, "episodes", "id")?);
            }
        }
        Ok(out)
    }

    fn sync_state(&mut self, id: EpisodeId, device: &DeviceId) -> Result<Option<Vec<u8>>> {
        Ok(self
            .c()
            .prepare_cached("SELECT state FROM sync_states WHERE episode = ?1 AND device = ?2")?
            .query_row(params![id.to_string(), device], |r| r.get(0))
            .optional()?)
    }

    fn put_sync_state(&mut self, id: EpisodeId, device: &DeviceId, state: &[u8]) -> Result<()> {
        self.c()
            .prepare_cached(
                "INSERT INTO sync_states (episode, device, state) VALUES (?1, ?2, ?3)
                 ON CONFLICT (episode, device) DO UPDATE SET state = excluded.state",
            )?
            .execute(params![id.to_string(), device, state])?;
        Ok(())
    }

    fn held_episodes(&mut self, device: &DeviceId) -> Result<Vec<(EpisodeId, TeamId)>> {
        let mut statement = self.c().prepare_cached(
            "SELECT s.episode, e.team FROM sync_states s JOIN episodes e ON e.id = s.episode WHERE s.device = ?1",
        )?;
        let rows = statement.query_map([device], |r| Ok((r.get::<_, String>(0)?, r.get::<_, TeamId>(1)?)))?;
        let mut out = Vec::new();
        for row in rows {
            let (id, team) = row?;
            out.push((parse_id(&id, "sync_states", "episode")?, team));
        }
        Ok(out)
    }

    fn record_drop(&mut self, id: EpisodeId, device: &DeviceId, seq: i64) -> Result<()> {
        self.c()
            .prepare_cached("DELETE FROM sync_states WHERE episode = ?1 AND device = ?2")?
            .execute(params![id.to_string(), device])?;
        self.c()
            .prepare_cached(
                "INSERT INTO drops (episode, device, seq) VALUES (?1, ?2, ?3)
                 ON CONFLICT (episode, device) DO UPDATE SET seq = excluded.seq",
            )?
            .execute(params![id.to_string(), device, seq])?;
        Ok(())
    }

    fn dropped(&mut self, id: EpisodeId, device: &DeviceId) -> Result<bool> {
        Ok(self
            .c()
            .prepare_cached("SELECT 1 FROM drops WHERE episode = ?1 AND device = ?2")?
            .query_row(params![id.to_string(), device], |_| Ok(()))
            .optional()?
            .is_some())
    }

    fn drops_since(&mut self, device: &DeviceId, cursor: i64, upto: i64) -> Result<Vec<EpisodeId>> {
        let mut statement =
            self.c().prepare_cached("SELECT episode FROM drops WHERE device = ?1 AND seq > ?2 AND seq <= ?3")?;
        let rows = statement.query_map(params![device, cursor, upto], |r| r.get::<_, String>(0))?;
        let mut out = Vec::new();
        for row in rows {
            out.push(parse_id(&row?, "drops", "episode")?);
        }
        Ok(out)
    }

    fn record_receipts(
        &mut self,
        id: EpisodeId,
        events: &[String],
        device: &DeviceId,
        at_ms: i64,
        seq: i64,
    ) -> Result<()> {
        let mut statement = self.c().prepare_cached(
            "INSERT INTO receipts (episode, event, received_at, device, seq) VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT (episode, event) DO NOTHING",
        )?;
        let id = id.to_string();
        for event in events {
            statement.execute(params![id, event, at_ms, device, seq])?;
        }
        Ok(())
    }

    fn receipts(&mut self, id: EpisodeId) -> Result<Vec<(String, i64)>> {
        let mut statement = self.c().prepare_cached("SELECT event, received_at FROM receipts WHERE episode = ?1")?;
        let rows = statement.query_map([id.to_string()], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn receipts_since(&mut self, id: EpisodeId, after: i64) -> Result<Vec<(String, i64)>> {
        let mut statement = self
            .c()
            .prepare_cached("SELECT event, received_at FROM receipts WHERE episode = ?1 AND seq > ?2 ORDER BY event")?;
        let rows = statement.query_map(params![id.to_string(), after], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn add_team(&mut self, id: &TeamId, name: &str, created_at: &str) -> Result<()> {
        self.c()
            .execute("INSERT INTO teams (id, name, created_at) VALUES (?1, ?2, ?3)", params![id, name, created_at])
            .map_err(|e| if is_unique_violation(&e) { StoreError::Duplicate } else { e.into() })?;
        Ok(())
    }

    fn team_exists(&mut self, id: &TeamId) -> Result<bool> {
        Ok(self.c().query_row("SELECT 1 FROM teams WHERE id = ?1", [id], |_| Ok(())).optional()?.is_some())
    }

    fn team_name(&mut self, id: &TeamId) -> Result<Option<String>> {
        Ok(self.c().prepare_cached("SELECT name FROM teams WHERE id = ?1")?.query_row([id], |r| r.get(0)).optional()?)
    }

    fn count_teams(&mut self) -> Result<i64> {
        Ok(self.c().query_row("SELECT COUNT(*) FROM teams", [], |r| r.get(0))?)
    }

    fn add_user(
        &mut self,
        id: &UserId,
        username: &str,
        password_hash: &str,
        role: &str,
        created_at: &str,
    ) -> Result<()> {
        self.c()
            .execute(
                "INSERT INTO users (id, username, password_hash, role, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![id, username, password_hash, role, created_at],
            )
            .map_err(|e| if is_unique_violation(&e) { StoreError::Duplicate } else { e.into() })?;
        Ok(())
    }

    fn add_user_team(&mut self, user_id: &UserId, team: &TeamId) -> Result<()> {
        self.c()
            .execute("INSERT OR IGNORE INTO user_teams (user_id, team_id) VALUES (?1, ?2)", params![user_id, team])?;
        Ok(())
    }

    fn set_disabled(&mut self, username: &str, disabled: bool) -> Result<Option<UserId>> {
        Ok(self
            .c()
            .query_row(
                "UPDATE users SET disabled = ?1 WHERE username = ?2 RETURNING id",
                params![disabled, username],
                |r| r.get(0),
            )
            .optional()?)
    }

    fn set_password_hash(&mut self, username: &str, hash: &str) -> Result<()> {
        self.c().execute("UPDATE users SET password_hash = ?1 WHERE username = ?2", params![hash, username])?;
        Ok(())
    }

    fn login(&mut self, username: &str) -> Result<Option<Login>> {
        Ok(self
            .c()
            .prepare_cached("SELECT id, password_hash, disabled FROM users WHERE username = ?1")?
            .query_row([username], |row| {
                Ok(Login { user_id: row.get(0)?, password_hash: row.get(1)?, disabled: row.get(2)? })
            })
            .optional()?)
    }

    fn active_user(&mut self, user_id: &UserId) -> Result<Option<(String, String)>> {
        Ok(self
            .c()
            .prepare_cached("SELECT username, role FROM users WHERE id = ?1 AND disabled = 0")?
            .query_row([user_id], |row| Ok((row.get(0)?, row.get(1)?)))
            .optional()?)
    }

    fn user_teams(&mut self, user_id: &UserId) -> Result<Vec<TeamId>> {
        let mut stmt = self.c().prepare_cached("SELECT team_id FROM user_teams WHERE user_id = ?1 ORDER BY team_id")?;
        Ok(stmt.query_map([user_id], |row| row.get(0))?.collect::<rusqlite::Result<Vec<TeamId>>>()?)
    }

    fn list_users(&mut self) -> Result<Vec<UserRow>> {
        let mut statement = self.c().prepare(
            "SELECT u.id, u.username, u.role, u.disabled, i.provider FROM users u
             LEFT JOIN identities i ON i.user_id = u.id ORDER BY u.username",
        )?;
        let rows = statement.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn set_role(&mut self, user_id: &UserId, role: &str) -> Result<()> {
        self.c().execute("UPDATE users SET role = ?1 WHERE id = ?2", params![role, user_id])?;
        Ok(())
    }

    fn team_managers(&mut self, team: &TeamId) -> Result<Vec<String>> {
        let mut statement = self.c().prepare_cached(
            "SELECT u.username FROM users u JOIN user_teams t ON t.user_id = u.id
             WHERE t.team_id = ?1 AND u.role = 'team_manager' AND u.disabled = 0 ORDER BY u.username",
        )?;
        let rows = statement.query_map([team], |r| r.get(0))?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    fn username_of(&mut self, id_or_username: &str) -> Result<Option<String>> {
        Ok(self
            .c()
            .prepare_cached("SELECT username FROM users WHERE id = ?1 OR username = ?1 ORDER BY id = ?1 DESC LIMIT 1")?
            .query_row([id_or_username], |r| r.get(0))
            .optional()?)
    }

    fn clear_user_teams(&mut self, user_id: &UserId) -> Result<()> {
        self.c().execute("DELETE FROM user_teams WHERE user_id = ?1", [user_id])?;
        Ok(())
    }

    fn identity_user(&mut self, provider: &str, subject: &str) -> Result<Option<(UserId, bool)>> {
        Ok(self
            .c()
            .prepare_cached(
                "SELECT u.id, u.disabled FROM identities i JOIN users u ON u.id = i.user_id
                 WHERE i.provider = ?1 AND i.subject = ?2",
            )?
            .query_row([provider, subject], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?)
    }

    fn add_identity(&mut self, provider: &str, subject: &str, user_id: &UserId, now: i64) -> Result<()> {
        self.c().execute(
            "INSERT INTO identities (provider, subject, user_id, created_at, last_sign_in) VALUES (?1, ?2, ?3, ?4, ?4)",
            params![provider, subject, user_id, now],
        )?;
        Ok(())
    }

    fn touch_identity(&mut self, provider: &str, subject: &str, now: i64) -> Result<()> {
        self.c().execute(
            "UPDATE identities SET last_sign_in = ?1 WHERE provider = ?2 AND subject = ?3",
            params![now, provider, subject],
        )?;
        Ok(())
    }

    fn prune_pending_sign_ins(&mut self, now: i64) -> Result<i64> {
        self.c().prepare_cached("DELETE FROM oidc_pending WHERE expires_at <= ?1")?.execute([now])?;
        Ok(self.c().prepare_cached("SELECT COUNT(*) FROM oidc_pending")?.query_row([], |r| r.get(0))?)
    }

    fn put_pending_sign_in(&mut self, state_hash: &str, p: &PendingSignIn) -> Result<()> {
        self.c()
            .prepare_cached(
                "INSERT INTO oidc_pending (state_hash, browser_hash, provider, nonce, verifier, expires_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?
            .execute(params![state_hash, p.browser_hash, p.provider, p.nonce, p.verifier, p.expires_at])?;
        Ok(())
    }

    fn take_pending_sign_in(&mut self, state_hash: &str) -> Result<Option<PendingSignIn>> {
        Ok(self
            .c()
            .prepare_cached(
                "DELETE FROM oidc_pending WHERE state_hash = ?1
                 RETURNING provider, browser_hash, nonce, verifier, expires_at",
            )?
            .query_row([state_hash], |r| {
                Ok(PendingSignIn {
                    provider: r.get(0)?,
                    browser_hash: r.get(1)?,
                    nonce: r.get(2)?,
                    verifier: r.get(3)?,
                    expires_at: r.get(4)?,
                })
            })
            .optional()?)
    }

    fn insert_session(&mut self, id: &str, user_id: &UserId, device: &DeviceId, now: i64) -> Result<()> {
        self.c()
            .prepare_cached("INSERT INTO sessions (id, user_id, device_id, created_at) VALUES (?1, ?2, ?3, ?4)")?
            .execute(params![id, user_id, device, now])?;
        Ok(())
    }

    fn insert_refresh_token(&mut self, hash: &[u8], session: &str, issued_at: i64, expires_at: i64) -> Result<()> {
        self.c()
            .prepare_cached(
                "INSERT INTO refresh_tokens (hash, session_id, issued_at, expires_at) VALUES (?1, ?2, ?3, ?4)",
            )?
            .execute(params![hash, session, issued_at, expires_at])?;
        Ok(())
    }

    fn presented_token(&mut self, hash: &[u8]) -> Result<Option<PresentedToken>> {
        Ok(self
            .c()
            .prepare_cached(
                "SELECT t.session_id, t.expires_at, t.rotated_at, s.user_id, s.device_id, s.revoked_at, u.disabled
                 FROM refresh_tokens t JOIN sessions s ON s.id = t.session_id JOIN users u ON u.id = s.user_id
                 WHERE t.hash = ?1",
            )?
            .query_row([hash], |r| {
                Ok(PresentedToken {
                    session: r.get(0)?,
                    expires_at: r.get(1)?,
                    rotated_at: r.get(2)?,
                    user_id: r.get(3)?,
                    session_device: r.get(4)?,
                    revoked_at: r.get(5)?,
                    disabled: r.get(6)?,
                })
            })
            .optional()?)
    }

    fn mark_rotated(&mut self, hash: &[u8], now: i64) -> Result<()> {
        self.c()
            .prepare_cached("UPDATE refresh_tokens SET rotated_at = ?1 WHERE hash = ?2")?
            .execute(params![now, hash])?;
        Ok(())
    }

    fn revoke_session(&mut self, session: &str, because: &str, now: i64) -> Result<()> {
        self.c()
            .prepare_cached(
                "UPDATE sessions SET revoked_at = ?1, revoked_because = ?2 WHERE id = ?3 AND revoked_at IS NULL",
            )?
            .execute(params![now, because, session])?;
        Ok(())
    }

    fn session_is_live(&mut self, session: &str, user_id: &UserId) -> Result<bool> {
        Ok(self
            .c()
            .prepare_cached("SELECT revoked_at IS NULL FROM sessions WHERE id = ?1 AND user_id = ?2")?
            .query_row(params![session, user_id], |r| r.get(0))
            .optional()?
            .unwrap_or(false))
    }

    fn device_revoked(&mut self, device: &DeviceId) -> Result<bool> {
        Ok(self
            .c()
            .prepare_cached("SELECT 1 FROM revoked_devices WHERE device = ?1")?
            .query_row([device], |_| Ok(()))
            .optional()?
            .is_some())
    }

    fn revoke_device(&mut self, device: &DeviceId, by: &UserId, now: i64) -> Result<()> {
        self.c()
            .prepare_cached(
                "INSERT INTO revoked_devices (device, revoked_at, revoked_by) VALUES (?1, ?2, ?3) ON CONFLICT DO NOTHING",
            )?
            .execute(params![device, now, by])?;
        self.c()
            .prepare_cached(
                "UPDATE sessions SET revoked_at = ?1, revoked_because = 'device_revoked'
                 WHERE device_id = ?2 AND revoked_at IS NULL",
            )?
            .execute(params![now, device])?;
        Ok(())
    }

    fn end_all_sessions(&mut self, user_id: &UserId, because: &str, now: i64) -> Result<u64> {
        let ended = self
            .c()
            .prepare_cached(
                "UPDATE sessions SET revoked_at = ?1, revoked_because = ?2 WHERE user_id = ?3 AND revoked_at IS NULL",
            )?
            .execute(params![now, because, user_id])?;
        self.c().prepare_cached("DELETE FROM dashboard_sessions WHERE user_id = ?1")?.execute([user_id])?;
        Ok(ended as u64)
    }

    fn device_registration(&mut self, device: &DeviceId) -> Result<Option<Registration>> {
        Ok(self
            .c()
            .prepare_cached("SELECT user_id, key_hash FROM devices WHERE id = ?1")?
            .query_row([device], |r| Ok(Registration { user_id: r.get(0)?, key_hash: r.get(1)? }))
            .optional()?)
    }

    fn register_device(
        &mut self,
        device: &DeviceId,
        user_id: &UserId,
        key_hash: Option<&[u8]>,
        now: i64,
    ) -> Result<bool> {
        let inserted = self
            .c()
            .prepare_cached(
                "INSERT INTO devices (id, user_id, key_hash, registered_at) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (id) DO NOTHING",
            )?
            .execute(params![device, user_id, key_hash, now])?;
        Ok(inserted > 0)
    }

    fn set_device_key(&mut self, device: &DeviceId, key_hash: &[u8]) -> Result<()> {
        self.c()
            .prepare_cached("UPDATE devices SET key_hash = ?1 WHERE id = ?2 AND key_hash IS NULL")?
            .execute(params![key_hash, device])?;
        Ok(())
    }

    fn share_a_team(&mut self, a: &UserId, b: &UserId) -> Result<bool> {
        Ok(self
            .c()
            .prepare_cached(
                "SELECT EXISTS (SELECT 1 FROM user_teams a JOIN user_teams b ON a.team_id = b.team_id
                 WHERE a.user_id = ?1 AND b.user_id = ?2)",
            )?
            .query_row(params![a, b], |r| r.get(0))?)
    }

    fn device_in_reach(&mut self, device: &DeviceId, user_id: &UserId, admin: bool) -> Result<bool> {
        Ok(self
            .c()
            .prepare_cached(
                "SELECT EXISTS (SELECT 1 FROM devices d
                 WHERE d.id = ?1 AND (?2 OR EXISTS (SELECT 1 FROM user_teams a JOIN user_teams b ON a.team_id = b.team_id
                                                    WHERE a.user_id = d.user_id AND b.user_id = ?3)))",
            )?
            .query_row(params![device, admin, user_id], |r| r.get(0))?)
    }

    fn device_users(&mut self, device: &DeviceId) -> Result<Vec<String>> {
        let mut statement = self.c().prepare_cached(
            "SELECT DISTINCT u.username FROM sessions s JOIN users u ON u.id = s.user_id WHERE s.device_id = ?1",
        )?;
        let rows = statement.query_map([device], |r| r.get(0))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn client_failures(&mut self, client: &str) -> Result<Option<(i64, i64)>> {
        Ok(self
            .c()
            .prepare_cached("SELECT window_start, failures FROM client_failures WHERE client = ?1")?
            .query_row([client], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?)
    }

    fn count_client_failure(&mut self, client: &str, now: i64, window_secs: i64) -> Result<()> {
        self.c()
            .prepare_cached(
                "INSERT INTO client_failures (client, window_start, failures) VALUES (?1, ?2, 1)
                 ON CONFLICT (client) DO UPDATE SET
                     failures = CASE WHEN window_start + ?3 <= ?2 THEN 1 ELSE failures + 1 END,
                     window_start = CASE WHEN window_start + ?3 <= ?2 THEN ?2 ELSE window_start END",
            )?
            .execute(params![client, now, window_secs])?;
        Ok(())
    }

    fn login_failures(&mut self, username: &str, client: &str) -> Result<Option<(i64, i64)>> {
        Ok(self
            .c()
            .prepare_cached("SELECT failures, locked_until FROM login_failures WHERE username = ?1 AND client = ?2")?
            .query_row([username, client], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?)
    }

    fn put_login_failures(
        &mut self,
        username: &str,
        client: &str,
        failures: i64,
        locked_until: i64,
        now: i64,
    ) -> Result<()> {
        self.c()
            .prepare_cached(
                "INSERT INTO login_failures (username, client, failures, locked_until, updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (username, client) DO UPDATE SET failures = ?3, locked_until = ?4, updated_at = ?5",
            )?
            .execute(params![username, client, failures, locked_until, now])?;
        Ok(())
    }

    fn prune_failures(&mut self, before: i64, limit: i64) -> Result<()> {
        self.c()
            .prepare_cached(
                "DELETE FROM login_failures WHERE (username, client) IN
                     (SELECT username, client FROM login_failures WHERE updated_at < ?1 LIMIT ?2)",
            )?
            .execute(params![before, limit])?;
        self.c()
            .prepare_cached(
                "DELETE FROM client_failures WHERE client IN
                     (SELECT client FROM client_failures WHERE window_start < ?1 LIMIT ?2)",
            )?
            .execute(params![before, limit])?;
        Ok(())
    }

    fn clear_login_failures(&mut self, username: &str, client: &str) -> Result<()> {
        self.c()
            .prepare_cached("DELETE FROM login_failures WHERE username = ?1 AND client = ?2")?
            .execute([username, client])?;
        Ok(())
    }

    fn clear_username_failures(&mut self, username: &str) -> Result<()> {
        self.c().prepare_cached("DELETE FROM login_failures WHERE username = ?1")?.execute([username])?;
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
        self.c().prepare_cached("DELETE FROM dashboard_sessions WHERE expires_at <= ?1")?.execute([now])?;
        self.c()
            .prepare_cached(
                "INSERT INTO dashboard_sessions (hash, user_id, csrf, created_at, expires_at) VALUES (?1, ?2, ?3, ?4, ?5)",
            )?
            .execute(params![hash, user_id, csrf, now, expires_at])?;
        Ok(())
    }

    fn end_dashboard_session(&mut self, hash: &str) -> Result<()> {
        self.c().prepare_cached("DELETE FROM dashboard_sessions WHERE hash = ?1")?.execute([hash])?;
        Ok(())
    }

    fn dashboard_session(&mut self, hash: &str, now: i64) -> Result<Option<(UserId, String)>> {
        Ok(self
            .c()
            .prepare_cached("SELECT user_id, csrf FROM dashboard_sessions WHERE hash = ?1 AND expires_at > ?2")?
            .query_row(params![hash, now], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?)
    }

    fn audit_head(&mut self) -> Result<(i64, Vec<u8>)> {
        Ok(self
            .c()
            .prepare_cached("SELECT n, hash FROM audit_head WHERE id = 1")?
            .query_row([], |r| Ok((r.get(0)?, r.get(1)?)))?)
    }

    fn lock_audit_head(&mut self) -> Result<(i64, Vec<u8>)> {
        // One writer at a time already.
        self.audit_head()
    }

    fn append_audit(&mut self, e: &ChainedEntry) -> Result<()> {
        let r = &e.row;
        self.c()
            .prepare_cached(
                "INSERT INTO audit (n, at, user_id, username, device, via, action, episode, detail, prev_hash, hash)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
            )?
            .execute(params![
                r.n,
                r.at,
                r.user_id,
                r.username,
                r.device,
                r.via,
                r.action,
                r.episode,
                r.detail,
                e.prev_hash,
                e.hash
            ])?;
        self.c()
            .prepare_cached("UPDATE audit_head SET n = ?1, hash = ?2 WHERE id = 1")?
            .execute(params![r.n, e.hash])?;
        Ok(())
    }

    fn audit_chain(&mut self, after: i64, limit: usize) -> Result<Vec<ChainedEntry>> {
        let mut statement = self.c().prepare_cached(
            "SELECT n, at, user_id, username, device, via, action, episode, detail, prev_hash, hash FROM audit
             WHERE n > ?1 ORDER BY n LIMIT ?2",
        )?;
        let rows = statement.query_map(params![after, i64::try_from(limit).unwrap_or(i64::MAX)], |r| {
            Ok(ChainedEntry {
                row: AuditRow {
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
                prev_hash: r.get(9)?,
                hash: r.get(10)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn rechain_audit(&mut self, e: &ChainedEntry, head: bool) -> Result<()> {
        self.c().prepare_cached("UPDATE audit SET prev_hash = ?1, hash = ?2 WHERE n = ?3")?.execute(params![
            e.prev_hash,
            e.hash,
            e.row.n
        ])?;
        if head {
            self.c()
                .prepare_cached("UPDATE audit_head SET n = ?1, hash = ?2 WHERE id = 1")?
                .execute(params![e.row.n, e.hash])?;
        }
        Ok(())
    }

    fn audit_page(&mut self, scope: AuditScope<'_>, cursor: AuditCursor, limit: usize) -> Result<Vec<Entry>> {
        use rusqlite::types::Value;
        // SQLite has no arrays: one placeholder a team. The statement varies only with
        // the number of teams, so the cache keeps a few.
        let mut params: Vec<Value> = Vec::new();
        let mut wanted = Vec::new();
        if !scope.teams.is_empty() {
            let slots: Vec<String> = scope
                .teams
                .iter()
                .map(|team| {
                    params.push(Value::Text(team.to_string()));
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
            AuditCursor::After(n) => {
                params.push(Value::Integer(n));
                format!(" AND a.n > ?{} ORDER BY a.n ASC", params.len())
            }
            AuditCursor::Before(Some(n)) => {
                params.push(Value::Integer(n));
                format!(" AND a.n < ?{} ORDER BY a.n DESC", params.len())
            }
            AuditCursor::Before(None) => " ORDER BY a.n DESC".to_owned(),
        };
        params.push(Value::Integer(i64::try_from(limit).unwrap_or(i64::MAX)));
        let sql = format!(
            "SELECT a.n, a.at, a.user_id, a.username, a.device, a.via, a.action, a.episode, a.detail
             FROM audit a LEFT JOIN episodes e ON e.id = a.episode WHERE {filter}{order} LIMIT ?{}",
            params.len()
        );
        let mut statement = self.c().prepare_cached(&sql)?;
        let rows = statement.query_map(rusqlite::params_from_iter(params), audit_row)?;
        rows.map(|row| row.map_err(Into::into).and_then(audit_entry)).collect()
    }

    fn audit_entries(&mut self, episode: EpisodeId) -> Result<Vec<Entry>> {
        let mut statement = self.c().prepare_cached(
            "SELECT n, at, user_id, username, device, via, action, episode, detail FROM audit
             WHERE episode = ?1 ORDER BY n",
        )?;
        let rows = statement.query_map([episode.to_string()], audit_row)?;
        rows.map(|row| row.map_err(Into::into).and_then(audit_entry)).collect()
    }

    fn put_summary(&mut self, s: &SummaryRecord<'_>) -> Result<()> {
        let key = s.episode.to_string();
        self.c()
            .prepare_cached(
                "INSERT INTO summaries (episode, seq, pathway, patient_ref, open_actions, overdue_actions, conflicts,
                                        duplicates, unfiled, next_due, evaluated_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)
                 ON CONFLICT (episode) DO UPDATE SET seq = excluded.seq, pathway = excluded.pathway,
                    patient_ref = excluded.patient_ref, open_actions = excluded.open_actions,
                    overdue_actions = excluded.overdue_actions, conflicts = excluded.conflicts,
                    duplicates = excluded.duplicates, unfiled = excluded.unfiled, next_due = excluded.next_due,
                    evaluated_at = excluded.evaluated_at",
            )?
            .execute(params![
                key,
                s.seq,
                s.pathway,
                s.patient_ref,
                s.open_actions,
                s.overdue_actions,
                s.conflicts,
                s.duplicates,
                s.unfiled,
                s.next_due,
                s.evaluated_at,
            ])?;
        self.c().prepare_cached("DELETE FROM summary_actions WHERE episode = ?1")?.execute([&key])?;
        let mut insert = self.c().prepare_cached(
            "INSERT INTO summary_actions (episode, action, code, owner, priority, state, due)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        )?;
        for a in &s.actions {
            insert.execute(params![key, a.action, a.code, a.owner, a.priority, a.state, a.due])?;
        }
        self.c().prepare_cached("DELETE FROM summary_appointments WHERE episode = ?1")?.execute([&key])?;
        let mut insert = self
            .c()
            .prepare_cached("INSERT INTO summary_appointments (episode, event, at, outcome) VALUES (?1, ?2, ?3, ?4)")?;
        for a in &s.appointments {
            insert.execute(params![key, a.event, a.at, a.outcome])?;
        }
        Ok(())
    }

    fn summaries(&mut self, team: &TeamId) -> Result<Vec<Summary>> {
        let mut statement = self.c().prepare_cached(
            "SELECT s.episode, e.team, s.pathway, s.patient_ref, s.open_actions, s.overdue_actions, s.conflicts,
                    s.duplicates, s.unfiled
             FROM summaries s JOIN episodes e ON e.id = s.episode WHERE e.team = ?1",
        )?;
        let rows = statement.query_map([team], |r| {
            Ok((
                r.get::<_, String>(0)?,
                Summary {
                    id: EpisodeId::from_uuid(uuid::Uuid::nil()),
                    team: r.get(1)?,
                    pathway: r.get(2)?,
                    patient_ref: r.get(3)?,
                    open_actions: r.get(4)?,
                    overdue_actions: r.get(5)?,
                    conflicts: r.get(6)?,
                    duplicates: r.get(7)?,
                    unfiled: r.get(8)?,
                },
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (id, mut summary) = row?;
            summary.id = parse_id(&id, "summaries", "episode")?;
            out.push(summary);
        }
        Ok(out)
    }

    fn open_actions(&mut self, team: &TeamId) -> Result<Vec<OpenAction>> {
        let mut statement = self.c().prepare_cached(
            "SELECT a.episode, s.patient_ref, a.action, a.code, a.owner, a.priority, a.state, a.due
             FROM summary_actions a JOIN summaries s ON s.episode = a.episode JOIN episodes e ON e.id = a.episode
             WHERE e.team = ?1",
        )?;
        let rows = statement.query_map([team], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, String>(3)?,
                r.get::<_, String>(4)?,
                r.get::<_, String>(5)?,
                r.get::<_, String>(6)?,
                r.get::<_, i64>(7)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (episode, patient_ref, action, code, owner, priority, state, due) = row?;
            out.push(open_action(episode, patient_ref, action, code, owner, priority, &state, due)?);
        }
        Ok(out)
    }

    fn rates(&mut self, team: &TeamId, since: i64, until: i64) -> Result<Rates> {
        Ok(self
            .c()
            .prepare_cached(
                "SELECT COUNT(*), COALESCE(SUM(a.outcome = 'not_brought'), 0), COALESCE(SUM(a.outcome = 'did_not_attend'), 0)
                 FROM summary_appointments a JOIN episodes e ON e.id = a.episode
                 WHERE e.team = ?1 AND a.at > ?2 AND a.at <= ?3",
            )?
            .query_row(params![team, since, until], |r| {
                Ok(Rates {
                    team: team.to_string(),
                    days: 0,
                    appointments: r.get(0)?,
                    not_brought: r.get(1)?,
                    did_not_attend: r.get(2)?,
                })
            })?)
    }

    fn counts_by_team(&mut self) -> Result<Vec<(String, i64, i64)>> {
        let mut statement = self.c().prepare_cached(
            "SELECT t.id, COALESCE(SUM(s.open_actions), 0), COALESCE(SUM(s.overdue_actions), 0)
             FROM teams t LEFT JOIN episodes e ON e.team = t.id LEFT JOIN summaries s ON s.episode = e.id
             GROUP BY t.id ORDER BY t.id",
        )?;
        let rows = statement.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn enqueue(&mut self, item: &NewOutboxItem<'_>) -> Result<bool> {
        let added = self
            .c()
            .prepare_cached(
                "INSERT INTO outbox (kind, dedupe_key, team, episode, payload, next_attempt_at, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6)
                 ON CONFLICT (dedupe_key) DO NOTHING",
            )?
            .execute(params![
                item.kind,
                item.dedupe_key,
                item.team,
                item.episode.map(|e| e.to_string()),
                item.payload,
                item.now_ms
            ])?;
        Ok(added > 0)
    }

    fn claim_outbox(&mut self, kind: &str, now_ms: i64, lease_until_ms: i64, limit: usize) -> Result<Vec<OutboxItem>> {
        // One writer at a time: the statement is the whole claim.
        let mut statement = self.c().prepare_cached(
            "UPDATE outbox SET state = 'sending', attempts = attempts + 1, claimed_until = ?3
             WHERE id IN (SELECT id FROM outbox
                          WHERE kind = ?1 AND ((state IN ('pending', 'retrying') AND next_attempt_at <= ?2)
                                               OR (state = 'sending' AND claimed_until <= ?2))
                          ORDER BY next_attempt_at, id LIMIT ?4)
             RETURNING id, kind, dedupe_key, team, episode, payload, attempts",
        )?;
        let rows = statement.query_map(params![kind, now_ms, lease_until_ms, limit as i64], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, Option<String>>(3)?,
                r.get::<_, Option<String>>(4)?,
                r.get::<_, String>(5)?,
                r.get::<_, i64>(6)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (id, kind, dedupe_key, team, episode, payload, attempts) = row?;
            let episode = episode.map(|e| parse_id(&e, "outbox", "episode")).transpose()?;
            out.push(OutboxItem { id, kind, dedupe_key, team, episode, payload, attempts });
        }
        out.sort_by_key(|item| item.id);
        Ok(out)
    }

    fn outbox_sent(&mut self, id: i64, attempts: i64, now_ms: i64) -> Result<bool> {
        let changed = self
            .c()
            .prepare_cached(
                "UPDATE outbox SET state = 'sent', sent_at = ?3, claimed_until = NULL, last_error = NULL
                 WHERE id = ?1 AND attempts = ?2 AND state = 'sending'",
            )?
            .execute(params![id, attempts, now_ms])?;
        Ok(changed > 0)
    }

    fn outbox_failed(&mut self, id: i64, attempts: i64, retry_at: Option<i64>, error: &str) -> Result<bool> {
        let changed = self
            .c()
            .prepare_cached(
                "UPDATE outbox SET state = CASE WHEN ?3 IS NULL THEN 'failed' ELSE 'retrying' END,
                                   next_attempt_at = COALESCE(?3, next_attempt_at), claimed_until = NULL,
                                   last_error = ?4
                 WHERE id = ?1 AND attempts = ?2 AND state = 'sending'",
            )?
            .execute(params![id, attempts, retry_at, error])?;
        Ok(changed > 0)
    }

    fn retry_outbox(&mut self, kind: &str, episode: Option<EpisodeId>, now_ms: i64) -> Result<u64> {
        let changed = self
            .c()
            .prepare_cached(
                "UPDATE outbox SET state = 'pending', attempts = 0, next_attempt_at = ?3
                 WHERE kind = ?1 AND state = 'failed' AND (?2 IS NULL OR episode = ?2)",
            )?
            .execute(params![kind, episode.map(|e| e.to_string()), now_ms])?;
        Ok(changed as u64)
    }

    fn outbox_counts(&mut self, team: &TeamId) -> Result<Vec<OutboxCount>> {
        let mut statement = self.c().prepare_cached(
            "SELECT o.episode, o.kind, o.state, COUNT(*), MAX(o.last_error)
             FROM outbox o JOIN episodes e ON e.id = o.episode
             WHERE e.team = ?1 AND o.state != 'sent'
             GROUP BY o.episode, o.kind, o.state ORDER BY o.episode, o.kind, o.state",
        )?;
        let rows = statement.query_map([team], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, i64>(3)?,
                r.get::<_, Option<String>>(4)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (episode, kind, state, count, last_error) = row?;
            out.push(OutboxCount { episode: parse_id(&episode, "outbox", "episode")?, kind, state, count, last_error });
        }
        Ok(out)
    }

    fn outbox_of(&mut self, episode: EpisodeId, kind_prefix: &str) -> Result<Vec<OutboxRow>> {
        let mut statement = self.c().prepare_cached(
            "SELECT kind, dedupe_key, state, attempts, last_error, created_at, next_attempt_at, sent_at
             FROM outbox WHERE episode = ?1 AND substr(kind, 1, length(?2)) = ?2 ORDER BY created_at, id",
        )?;
        let rows = statement.query_map(params![episode.to_string(), kind_prefix], |r| {
            Ok(OutboxRow {
                kind: r.get(0)?,
                dedupe_key: r.get(1)?,
                state: r.get(2)?,
                attempts: r.get(3)?,
                last_error: r.get(4)?,
                created_at: r.get(5)?,
                next_attempt_at: r.get(6)?,
                sent_at: r.get(7)?,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    fn inspect(&mut self, sql: &str) -> Result<Vec<Vec<Option<String>>>> {
        let mut statement = self.c().prepare(sql)?;
        let columns = statement.column_count();
        let rows = statement.query_map([], |r| {
            (0..columns)
                .map(|i| {
                    Ok(match r.get_ref(i)? {
                        ValueRef::Null => None,
                        ValueRef::Integer(n) => Some(n.to_string()),
                        ValueRef::Real(x) => Some(x.to_string()),
                        ValueRef::Text(t) => Some(String::from_utf8_lossy(t).into_owned()),
                        ValueRef::Blob(b) => Some(b.iter().map(|b| format!("{b:02x}")).collect()),
                    })
                })
                .collect::<rusqlite::Result<Vec<_>>>()
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn inspect_execute(&mut self, sql: &str) -> Result<u64> {
        Ok(self.c().execute(sql, [])? as u64)
    }
}

/// An audit row as an entry; a time or channel no build writes is damage.
#[allow(clippy::too_many_arguments)]
pub(super) fn entry(
    n: i64,
    at: i64,
    user_id: String,
    username: String,
    device: String,
    via: &str,
    action: String,
    episode: Option<String>,
    detail: Option<String>,
) -> Result<Entry> {
    let at = jiff::Timestamp::from_millisecond(at).map_err(|_| StoreError::damaged("audit", "at", "no time"))?;
    let via = match via {
        "api" => Via::Api,
        "dashboard" => Via::Dashboard,
        "sync" => Via::Sync,
        "server" => Via::Server,
        _ => return Err(StoreError::damaged("audit", "via", "an unknown channel")),
    };
    Ok(Entry { n, at, user_id, username, device, via, action, episode, detail })
}

/// A summary action row as an open action; an id or time no build writes is damage.
#[allow(clippy::too_many_arguments)]
pub(super) fn open_action(
    episode: String,
    patient_ref: String,
    action: String,
    code: String,
    owner: String,
    priority: String,
    state: &str,
    due: i64,
) -> Result<OpenAction> {
    Ok(OpenAction {
        episode: parse_id(&episode, "summary_actions", "episode")?,
        patient_ref,
        action,
        code,
        owner,
        priority,
        overdue: state == "overdue",
        due: jiff::Timestamp::from_second(due).map_err(|_| StoreError::damaged("summary_actions", "due", "no time"))?,
    })
}

/// An audit row as read: n, at, user id, username, device, via, action, episode, detail.
type AuditFields = (i64, i64, String, String, String, String, String, Option<String>, Option<String>);

/// Reads an audit row selected as `n, at, user_id, username, device, via, action,
/// episode, detail`, the order every audit query here selects.
fn audit_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<AuditFields> {
    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?, r.get(6)?, r.get(7)?, r.get(8)?))
}

fn audit_entry((n, at, user_id, username, device, via, action, episode, detail): AuditFields) -> Result<Entry> {
    entry(n, at, user_id, username, device, &via, action, episode, detail)
}
