//! Episode documents in the server's database: each kept as a compacted snapshot plus the
//! changes since, with the server-wide change sequence number (`seq`) that devices' sync
//! cursors count in, the sync state per (episode, device), and the receipt time of every
//! record.
//!
//! Functions that write take a `&Transaction`, so a sync request's writes commit together
//! or not at all.

use std::collections::HashMap;

use automerge::ActorId;
use episode::document::{DocumentError, EpisodeDoc};
use episode::{Episode, EpisodeId};
use rusqlite::{Connection, OptionalExtension, Transaction, params};

use crate::db;

/// After this many stored changes an episode is compacted into a new snapshot.
const COMPACT_AFTER: i64 = 64;

/// An episode as stored: its current team, its `seq`, and its document.
#[derive(Debug)]
pub struct Stored {
    pub id: EpisodeId,
    pub team: String,
    pub seq: i64,
    pub doc: EpisodeDoc,
    pub changes: i64,
    /// The typed view with each record's receipt, once read; `None` after a change.
    pub view: Option<Episode>,
    /// The evaluation last sent; `None` after a change.
    pub evaluated: Option<Evaluated>,
}

/// An evaluation as sent: every device asking within the second it was made at gets the
/// same bytes, and a later one equal to it (no deadline passed) is not encoded again.
#[derive(Debug)]
pub struct Evaluated {
    pub second: i64,
    pub evaluation: episode::pathway::Evaluation,
    /// Its bytes on the wire (`episode::sync::Authoritative::evaluation`).
    pub wire: Vec<u8>,
}

impl Stored {
    pub fn new(id: EpisodeId, team: String, seq: i64, doc: EpisodeDoc) -> Self {
        Self { id, team, seq, doc, changes: 0, view: None, evaluated: None }
    }

    /// The typed view, receipts included (read once per change).
    pub fn view(&mut self, conn: &Connection) -> Result<&Episode, StoreError> {
        if self.view.is_none() {
            let mut episode = self.doc.episode()?;
            episode.team.clone_from(&self.team);
            self.view = Some(with_receipts(conn, episode)?);
        }
        self.view.as_ref().ok_or_else(|| StoreError::Damaged(episode::document::DocumentError::NotAnEpisode("no view")))
    }
}

/// The most documents kept in memory between requests.
const CACHE_CAPACITY: usize = 4096;

/// Episode documents kept in memory between requests, each at the `seq` it was stored
/// with and with its typed view once read. Requests run one at a time (under the
/// database's lock); each takes what it uses out of the cache and puts it back only after
/// its transaction has committed, so the cache never holds what the disk does not.
#[derive(Debug, Default)]
pub struct Cache {
    docs: HashMap<EpisodeId, Stored>,
}

impl Cache {
    /// Takes an episode out of the cache if it is current, else loads it.
    pub fn take(&mut self, conn: &Connection, id: EpisodeId, actor: &ActorId) -> Result<Option<Stored>, StoreError> {
        let Some((team, seq)) = team_of(conn, id)? else {
            self.docs.remove(&id);
            return Ok(None);
        };
        if let Some(mut cached) = self.docs.remove(&id)
            && cached.seq == seq
        {
            if cached.team != team {
                cached.team = team;
                cached.view = None;
                cached.evaluated = None;
            }
            return Ok(Some(cached));
        }
        load(conn, id, actor)
    }

    /// Forgets every document (after a transaction that may have changed them failed).
    pub fn clear(&mut self) {
        self.docs.clear();
    }

    /// Puts back an episode whose state is committed.
    pub fn put(&mut self, stored: Stored) {
        if self.docs.len() >= CACHE_CAPACITY
            && let Some(&evict) = self.docs.keys().next()
        {
            self.docs.remove(&evict);
        }
        self.docs.insert(stored.id, stored);
    }
}

/// Why a stored episode could not be read.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(transparent)]
    Sqlite(#[from] rusqlite::Error),
    #[error("the stored document of an episode is damaged: {0}")]
    Damaged(#[from] episode::document::DocumentError),
}

impl From<StoreError> for crate::AppError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::Sqlite(e) => Self::from(e),
            damaged @ StoreError::Damaged(_) => Self::internal(damaged),
        }
    }
}

/// The server's own Automerge actor (generated at first use), for the changes the server
/// makes itself.
pub fn server_actor(tx: &Transaction<'_>) -> rusqlite::Result<ActorId> {
    Ok(ActorId::from(server_id(tx)?.as_bytes().as_slice()))
}

/// The server's own device name, which the records the team base makes on the server
/// carry (`server:` and the end of its actor's id). The `:` keeps it apart from every
/// device's id, which may not hold one (`accounts::DeviceId`), so no device can sign in
/// as the server.
pub fn server_device(tx: &Transaction<'_>) -> rusqlite::Result<String> {
    // The end of the id: its start is a time, shared by servers made the same moment.
    let id = server_id(tx)?.simple().to_string();
    Ok(format!("server:{}", &id[id.len() - 8..]))
}

/// The id the server's actor and device name are made from (generated at first use).
fn server_id(tx: &Transaction<'_>) -> rusqlite::Result<uuid::Uuid> {
    let id = match db::meta(tx, "actor")? {
        Some(id) => id,
        None => {
            let id = uuid::Uuid::now_v7().to_string();
            db::set_meta(tx, "actor", &id)?;
            id
        }
    };
    Ok(id.parse().unwrap_or_else(|_| uuid::Uuid::nil()))
}

/// The next change sequence number (and takes it).
pub fn next_seq(tx: &Transaction<'_>) -> rusqlite::Result<i64> {
    let seq = current_seq(tx)? + 1;
    db::set_meta(tx, "seq", &seq.to_string())?;
    Ok(seq)
}

/// The highest change sequence number given so far.
pub fn current_seq(conn: &Connection) -> rusqlite::Result<i64> {
    Ok(db::meta(conn, "seq")?.and_then(|s| s.parse().ok()).unwrap_or(0))
}

/// An episode's team and `seq`, without its document.
pub fn team_of(conn: &Connection, id: EpisodeId) -> rusqlite::Result<Option<(String, i64)>> {
    conn.prepare_cached("SELECT team, seq FROM episodes WHERE id = ?1")?
        .query_row([id.to_string()], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()
}

/// Loads an episode's document.
pub fn load(conn: &Connection, id: EpisodeId, actor: &ActorId) -> Result<Option<Stored>, StoreError> {
    let key = id.to_string();
    let Some((team, seq, snapshot)) = conn
        .prepare_cached("SELECT team, seq, snapshot FROM episodes WHERE id = ?1")?
        .query_row([&key], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?, r.get::<_, Vec<u8>>(2)?)))
        .optional()?
    else {
        return Ok(None);
    };
    let mut statement = conn.prepare_cached("SELECT bytes FROM episode_changes WHERE episode = ?1 ORDER BY n")?;
    let changes: Vec<Vec<u8>> = statement.query_map([&key], |r| r.get(0))?.collect::<Result<_, _>>()?;
    let doc = EpisodeDoc::load_with_changes(&snapshot, changes.iter().map(Vec::as_slice), actor.clone())?;
    Ok(Some(Stored { id, team, seq, doc, changes: changes.len() as i64, view: None, evaluated: None }))
}

/// Stores a new episode.
pub fn insert(
    tx: &Transaction<'_>,
    id: EpisodeId,
    team: &str,
    doc: &mut EpisodeDoc,
    now: i64,
) -> rusqlite::Result<i64> {
    let seq = next_seq(tx)?;
    tx.prepare_cached("INSERT INTO episodes (id, team, seq, snapshot, created_at) VALUES (?1, ?2, ?3, ?4, ?5)")?
        .execute(params![id.to_string(), team, seq, doc.save(), now])?;
    Ok(seq)
}

/// The changes made to a loaded episode since it was stored, if storing them keeps it
/// within its budget (`episode::limits::EPISODE_BUDGET_BYTES`); else
/// `DocumentError::Full`, and the caller discards this copy (it is not stored, and must
/// not go back to the cache). An episode already past its budget (stored before there was
/// one) takes no more changes, and still reads.
pub fn pending_changes(stored: &mut Stored) -> Result<Vec<u8>, DocumentError> {
    stored.doc.save_incremental_within_budget()
}

/// Stores `bytes`, the changes made to a loaded episode since it was stored (from
/// [`pending_changes`]), and gives it a new `seq`. Compacts it when enough changes have
/// gathered.
pub fn save_changes(tx: &Transaction<'_>, stored: &mut Stored, bytes: &[u8]) -> rusqlite::Result<()> {
    let key = stored.id.to_string();
    stored.seq = next_seq(tx)?;
    stored.view = None;
    stored.evaluated = None;
    if stored.changes + 1 >= COMPACT_AFTER {
        tx.prepare_cached("DELETE FROM episode_changes WHERE episode = ?1")?.execute([&key])?;
        tx.prepare_cached("UPDATE episodes SET snapshot = ?1, seq = ?2 WHERE id = ?3")?.execute(params![
            stored.doc.save(),
            stored.seq,
            key
        ])?;
        stored.changes = 0;
    } else {
        tx.prepare_cached("INSERT INTO episode_changes (episode, bytes) VALUES (?1, ?2)")?
            .execute(params![key, bytes])?;
        tx.prepare_cached("UPDATE episodes SET seq = ?1 WHERE id = ?2")?.execute(params![stored.seq, key])?;
        stored.changes += 1;
    }
    Ok(())
}

/// Stores what was changed in a loaded episode (by a device's sync or the server's own
/// change), `bytes` from [`pending_changes`], with the receipt of each new record as made
/// by `device` at `now_ms`.
pub fn store_changes(
    tx: &Transaction<'_>,
    stored: &mut Stored,
    bytes: &[u8],
    device: &str,
    now_ms: i64,
) -> Result<(), StoreError> {
    save_changes(tx, stored, bytes)?;
    note_receipts(tx, stored, device, now_ms)
}

/// Notes the receipt of every record of a stored episode not yet noted, at the `seq`
/// the episode was just given (so that devices past it are not sent them again).
pub fn note_receipts(tx: &Transaction<'_>, stored: &mut Stored, device: &str, now_ms: i64) -> Result<(), StoreError> {
    record_receipts(tx, &stored.doc.episode()?, device, now_ms, stored.seq)?;
    stored.view = None;
    stored.evaluated = None;
    Ok(())
}

/// Moves an episode to another team (a transfer), with a new `seq` so that the new
/// team's devices learn of it.
pub fn set_team(tx: &Transaction<'_>, id: EpisodeId, team: &str) -> rusqlite::Result<()> {
    let seq = next_seq(tx)?;
    tx.prepare_cached("UPDATE episodes SET team = ?1, seq = ?2 WHERE id = ?3")?.execute(params![
        team,
        seq,
        id.to_string()
    ])?;
    Ok(())
}

/// The stored sync state of (episode, device), if the device holds the episode.
pub fn sync_state(conn: &Connection, id: EpisodeId, device: &str) -> rusqlite::Result<Option<Vec<u8>>> {
    conn.prepare_cached("SELECT state FROM sync_states WHERE episode = ?1 AND device = ?2")?
        .query_row(params![id.to_string(), device], |r| r.get(0))
        .optional()
}

pub fn put_sync_state(tx: &Transaction<'_>, id: EpisodeId, device: &str, state: &[u8]) -> rusqlite::Result<()> {
    tx.prepare_cached(
        "INSERT INTO sync_states (episode, device, state) VALUES (?1, ?2, ?3)
         ON CONFLICT (episode, device) DO UPDATE SET state = excluded.state",
    )?
    .execute(params![id.to_string(), device, state])?;
    Ok(())
}

/// The visible episodes changed after `cursor`, oldest change first, at most `limit`.
pub fn changed_since(
    conn: &Connection,
    teams: &[String],
    cursor: i64,
    limit: usize,
) -> rusqlite::Result<Vec<(EpisodeId, i64)>> {
    let mut out = Vec::new();
    let mut statement =
        conn.prepare_cached("SELECT id, seq FROM episodes WHERE team = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3")?;
    for team in teams {
        let rows =
            statement.query_map(params![team, cursor, limit as i64], |r| Ok((r.get::<_, String>(0)?, r.get(1)?)))?;
        for row in rows {
            let (id, seq) = row?;
            if let Ok(id) = id.parse() {
                out.push((id, seq));
            }
        }
    }
    out.sort_by_key(|&(id, seq)| (seq, id));
    out.truncate(limit);
    Ok(out)
}

/// Episodes the device holds that are no longer in any of `teams` (transferred away).
pub fn leaving(conn: &Connection, device: &str, teams: &[String]) -> rusqlite::Result<Vec<EpisodeId>> {
    let mut statement = conn.prepare_cached(
        "SELECT s.episode, e.team FROM sync_states s JOIN episodes e ON e.id = s.episode WHERE s.device = ?1",
    )?;
    let rows = statement.query_map([device], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?;
    let mut out = Vec::new();
    for row in rows {
        let (id, team) = row?;
        if !teams.contains(&team)
            && let Ok(id) = id.parse()
        {
            out.push(id);
        }
    }
    Ok(out)
}

/// The device has handed over everything it held of a leaving episode: it may drop it.
pub fn record_drop(tx: &Transaction<'_>, id: EpisodeId, device: &str) -> rusqlite::Result<()> {
    let seq = next_seq(tx)?;
    tx.prepare_cached("DELETE FROM sync_states WHERE episode = ?1 AND device = ?2")?
        .execute(params![id.to_string(), device])?;
    tx.prepare_cached(
        "INSERT INTO drops (episode, device, seq) VALUES (?1, ?2, ?3)
         ON CONFLICT (episode, device) DO UPDATE SET seq = excluded.seq",
    )?
    .execute(params![id.to_string(), device, seq])?;
    Ok(())
}

/// Whether the device has handed this episode over before (after a transfer).
pub fn dropped(conn: &Connection, id: EpisodeId, device: &str) -> rusqlite::Result<bool> {
    conn.prepare_cached("SELECT 1 FROM drops WHERE episode = ?1 AND device = ?2")?
        .query_row(params![id.to_string(), device], |_| Ok(()))
        .optional()
        .map(|r| r.is_some())
}

/// Drops the device has not yet seen (recorded after its cursor).
pub fn drops_since(conn: &Connection, device: &str, cursor: i64) -> rusqlite::Result<Vec<EpisodeId>> {
    let mut statement = conn.prepare_cached("SELECT episode FROM drops WHERE device = ?1 AND seq > ?2")?;
    let rows = statement.query_map(params![device, cursor], |r| r.get::<_, String>(0))?;
    let mut out = Vec::new();
    for row in rows {
        if let Ok(id) = row?.parse() {
            out.push(id);
        }
    }
    Ok(out)
}

/// Notes when the server first received each of the episode's records, in the
/// transaction that gave the episode `seq`.
pub fn record_receipts(
    tx: &Transaction<'_>,
    episode: &Episode,
    device: &str,
    now_ms: i64,
    seq: i64,
) -> rusqlite::Result<()> {
    let mut statement = tx.prepare_cached(
        "INSERT INTO receipts (episode, event, received_at, device, seq) VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT (episode, event) DO NOTHING",
    )?;
    let id = episode.id.to_string();
    for event in &episode.events {
        statement.execute(params![id, event.id.to_string(), now_ms, device, seq])?;
    }
    Ok(())
}

/// The receipts of an episode's records noted after `cursor` (all of them with `None`),
/// for a device to keep: a device whose cursor is past a receipt's `seq` has it.
pub fn receipts_since(
    conn: &Connection,
    id: EpisodeId,
    cursor: Option<i64>,
) -> rusqlite::Result<Vec<episode::sync::Receipt>> {
    let mut statement =
        conn.prepare_cached("SELECT event, received_at FROM receipts WHERE episode = ?1 AND seq > ?2 ORDER BY event")?;
    let rows = statement.query_map(params![id.to_string(), cursor.unwrap_or(-1)], |r| {
        Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (event, received_at_ms) = row?;
        // Every receipt is noted from a record's id, which is a UUID.
        if let Ok(event) = event.parse() {
            out.push(episode::sync::Receipt { event, received_at_ms });
        }
    }
    Ok(out)
}

/// The episode with each record's `received_at` filled in from the receipts.
pub fn with_receipts(conn: &Connection, mut episode: Episode) -> rusqlite::Result<Episode> {
    let mut statement = conn.prepare_cached("SELECT event, received_at FROM receipts WHERE episode = ?1")?;
    let rows = statement.query_map([episode.id.to_string()], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?;
    let mut receipts = HashMap::new();
    for row in rows {
        let (event, ms) = row?;
        receipts.insert(event, ms);
    }
    // Only the receipts count: a `received_at` written into a document (no client of
    // ours writes one; a forged record might) is not the server's word.
    for event in &mut episode.events {
        event.received_at =
            receipts.get(&event.id.to_string()).and_then(|ms| jiff::Timestamp::from_millisecond(*ms).ok());
    }
    Ok(episode)
}
