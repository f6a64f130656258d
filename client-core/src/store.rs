//! The SQLite store: encrypted at rest with SQLCipher, one writer connection in WAL mode,
//! and every commit durable (synced) before the call that made it returns.
//!
//! Functions that write take a `&Transaction`, readers a `&Connection`, so transaction
//! boundaries are in the types (mozilla/application-services' component shape).

use std::path::Path;

use rusqlite::{Connection, OptionalExtension, Transaction, params};

use crate::error::{Error, Result};

/// Each schema's upgrade from the one before, in order: the schema this build writes is
/// the last (`PRAGMA user_version` holds the store's).
const UPGRADES: [&str; 5] = [
    include_str!("schema/v1.sql"),
    include_str!("schema/v2.sql"),
    include_str!("schema/v3.sql"),
    include_str!("schema/v4.sql"),
    include_str!("schema/v5.sql"),
];

/// The 32-byte key the host app supplies (Android Keystore, iOS Keychain).
#[derive(Clone)]
pub struct StoreKey([u8; 32]);

impl StoreKey {
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// A new random key, from the operating system's generator.
    pub fn generate() -> Result<Self> {
        let mut bytes = [0u8; 32];
        getrandom::fill(&mut bytes).map_err(Error::Random)?;
        Ok(Self(bytes))
    }

    /// A key written as 64 hexadecimal digits.
    pub fn from_hex(text: &str) -> Option<Self> {
        let text = text.trim();
        if text.len() != 64 || !text.is_ascii() {
            return None;
        }
        let mut bytes = [0u8; 32];
        for (i, byte) in bytes.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).ok()?;
        }
        Some(Self(bytes))
    }

    /// The key as 64 hexadecimal digits.
    pub fn to_hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }
}

impl std::fmt::Debug for StoreKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StoreKey(<secret>)")
    }
}

/// Opens (creating if need be) the store at `path` with `key`, and brings its schema up
/// to date.
pub(crate) fn open(path: &Path, key: &StoreKey) -> Result<Connection> {
    let mut conn = keyed(path, key)?;
    // The first read fails here if the key is wrong or the file is not a store.
    conn.query_row("SELECT count(*) FROM sqlite_master", [], |row| row.get::<_, i64>(0))?;
    // WAL with synchronous=FULL: a commit is on disk, WAL synced, before it returns,
    // so a record survives power loss the moment the call that made it returns.
    let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(Error::Setup(format!("WAL, but the journal mode is {mode}")));
    }
    conn.execute_batch("PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON;")?;
    let integrity: String = conn.query_row("PRAGMA quick_check", [], |row| row.get(0))?;
    if integrity != "ok" {
        return Err(Error::corrupt(integrity));
    }
    migrate(&mut conn)?;
    Ok(conn)
}

/// Opens `path` and attaches `key`, retrying a failed attach on a fresh connection.
///
/// Attaching a key reads no page, so its failure is never a wrong key (that shows at the
/// first read). SQLCipher's attach has failed once in CI, transiently, with several
/// stores opening at the same moment in one process; attaching under one process-wide
/// lock, and retrying twice, keeps that from reaching the practitioner as "cannot open".
fn keyed(path: &Path, key: &StoreKey) -> Result<Connection> {
    static ATTACH: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let mut attempt = 0;
    loop {
        let conn = Connection::open(path)?;
        // SQLCipher would otherwise log a wrong key's failed page checks to stderr itself;
        // the caller gets `Error::WrongKey` instead.
        conn.execute_batch("PRAGMA cipher_log_level = NONE;")?;
        let attached = {
            let _one_at_a_time = ATTACH.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            // A raw key: no passphrase derivation, the host's key is already random.
            conn.execute_batch(&format!("PRAGMA key = \"x'{}'\";", key.to_hex()))
        };
        match attached {
            Ok(()) => return Ok(conn),
            Err(error) if attempt >= 2 => {
                return Err(Error::Storage(error));
            }
            Err(_) => {
                attempt += 1;
                drop(conn);
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
        }
    }
}

/// Brings the store's schema up to date with the runner the server shares.
fn migrate(conn: &mut Connection) -> Result<()> {
    match migrate::run(conn, &UPGRADES) {
        Ok(_) => Ok(()),
        Err(migrate::Error::Newer { found, .. }) => Err(Error::NewerStore(found)),
        Err(migrate::Error::Damaged(version)) => {
            Err(Error::corrupt(format!("the schema version is damaged (it reads {version})")))
        }
        Err(migrate::Error::Database(e)) => Err(e.into()),
    }
}

pub(crate) fn meta(conn: &Connection, key: &str) -> Result<Option<String>> {
    Ok(conn.query_row("SELECT value FROM meta WHERE key = ?1", [key], |row| row.get(0)).optional()?)
}

pub(crate) fn set_meta(tx: &Transaction<'_>, key: &str, value: &str) -> Result<()> {
    tx.execute(
        "INSERT INTO meta (key, value) VALUES (?1, ?2) ON CONFLICT (key) DO UPDATE SET value = ?2",
        [key, value],
    )?;
    Ok(())
}

pub(crate) fn delete_meta(tx: &Transaction<'_>, key: &str) -> Result<()> {
    tx.execute("DELETE FROM meta WHERE key = ?1", [key])?;
    Ok(())
}

/// One stored episode: its snapshot and the changes since, in order.
pub(crate) struct Stored {
    pub(crate) id: String,
    /// The team that holds the episode now (after a transfer, not the document's own).
    pub(crate) team: String,
    pub(crate) snapshot: Vec<u8>,
    pub(crate) changes: Vec<Vec<u8>>,
    /// The typed view kept beside the document, if any: the heads it was built at and
    /// its JSON. To be read only if those heads are the loaded document's.
    pub(crate) view: Option<View>,
    /// When the server first stored each record, as far as the device knows: (event id,
    /// Unix milliseconds).
    pub(crate) receipts: Vec<(String, i64)>,
}

/// An episode's typed view as stored: only a cache of what its document gives.
pub(crate) struct View {
    /// The document's heads when the view was built, as [`encode_heads`] writes them.
    pub(crate) heads: Vec<u8>,
    /// The view's JSON, deflated.
    pub(crate) bytes: Vec<u8>,
}

pub(crate) fn all_episodes(conn: &Connection) -> Result<Vec<Stored>> {
    let mut episodes: Vec<Stored> = conn
        .prepare(
            "SELECT e.id, e.team, e.snapshot, v.heads, v.view
             FROM episodes e LEFT JOIN views v ON v.episode = e.id ORDER BY e.id",
        )?
        .query_map([], |row| {
            let heads: Option<Vec<u8>> = row.get(3)?;
            let bytes: Option<Vec<u8>> = row.get(4)?;
            Ok(Stored {
                id: row.get(0)?,
                team: row.get(1)?,
                snapshot: row.get(2)?,
                changes: Vec::new(),
                view: heads.zip(bytes).map(|(heads, bytes)| View { heads, bytes }),
                receipts: Vec::new(),
            })
        })?
        .collect::<Result<_, _>>()?;
    let mut statement = conn.prepare("SELECT episode, bytes FROM changes ORDER BY seq")?;
    let mut rows = statement.query([])?;
    while let Some(row) = rows.next()? {
        let episode: String = row.get(0)?;
        let bytes: Vec<u8> = row.get(1)?;
        match episodes.binary_search_by(|e| e.id.as_str().cmp(&episode)) {
            Ok(i) => episodes[i].changes.push(bytes),
            Err(_) => return Err(Error::corrupt("a change names no stored episode")),
        }
    }
    let mut statement = conn.prepare("SELECT episode, event, received_at FROM receipts")?;
    let mut rows = statement.query([])?;
    while let Some(row) = rows.next()? {
        let episode: String = row.get(0)?;
        // The foreign key keeps every receipt's episode stored.
        if let Ok(i) = episodes.binary_search_by(|e| e.id.as_str().cmp(&episode)) {
            episodes[i].receipts.push((row.get(1)?, row.get(2)?));
        }
    }
    Ok(episodes)
}

pub(crate) fn insert_episode(tx: &Transaction<'_>, id: &str, team: &str, snapshot: &[u8]) -> Result<()> {
    tx.execute("INSERT INTO episodes (id, team, snapshot) VALUES (?1, ?2, ?3)", params![id, team, snapshot])?;
    Ok(())
}

pub(crate) fn set_team(tx: &Transaction<'_>, id: &str, team: &str) -> Result<()> {
    tx.execute("UPDATE episodes SET team = ?2 WHERE id = ?1", params![id, team])?;
    Ok(())
}

pub(crate) fn append_change(tx: &Transaction<'_>, episode: &str, bytes: &[u8]) -> Result<()> {
    tx.execute("INSERT INTO changes (episode, bytes) VALUES (?1, ?2)", params![episode, bytes])?;
    Ok(())
}

/// Keeps an episode's typed view, built from its document at `heads`.
pub(crate) fn put_view(tx: &Transaction<'_>, episode: &str, view: &View) -> Result<()> {
    tx.execute(
        "INSERT INTO views (episode, heads, view) VALUES (?1, ?2, ?3)
         ON CONFLICT (episode) DO UPDATE SET heads = ?2, view = ?3",
        params![episode, view.heads, view.bytes],
    )?;
    Ok(())
}

/// A document's heads as stored beside it: sorted, 32 bytes each.
pub(crate) fn encode_heads(heads: &[automerge::ChangeHash]) -> Vec<u8> {
    let mut sorted = heads.to_vec();
    sorted.sort();
    sorted.iter().flat_map(|h| h.0).collect()
}

/// Replaces an episode's snapshot and drops the changes it now holds: in one
/// transaction, so a crash leaves either the old snapshot and its changes or the new.
pub(crate) fn compact(tx: &Transaction<'_>, episode: &str, snapshot: &[u8]) -> Result<()> {
    tx.execute("UPDATE episodes SET snapshot = ?2 WHERE id = ?1", params![episode, snapshot])?;
    tx.execute("DELETE FROM changes WHERE episode = ?1", [episode])?;
    Ok(())
}

/// The store's size on disk in bytes (pages in use).
pub(crate) fn size(conn: &Connection) -> Result<i64> {
    Ok(conn.query_row("SELECT page_count * page_size FROM pragma_page_count, pragma_page_size", [], |row| row.get(0))?)
}

/// Each episode's sync state, and whether the server is owed word that the device holds
/// what it last sent.
pub(crate) fn sync_states(conn: &Connection) -> Result<Vec<(String, Vec<u8>, bool)>> {
    let mut statement = conn.prepare("SELECT episode, state, owed FROM sync_states")?;
    let rows = statement.query_map([], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

pub(crate) fn put_sync_state(tx: &Transaction<'_>, episode: &str, state: &[u8], owed: bool) -> Result<()> {
    tx.execute(
        "INSERT INTO sync_states (episode, state, owed) VALUES (?1, ?2, ?3)
         ON CONFLICT (episode) DO UPDATE SET state = ?2, owed = ?3",
        params![episode, state, owed],
    )?;
    Ok(())
}

pub(crate) fn put_server_actions(tx: &Transaction<'_>, episode: &str, at_ms: i64, evaluation: &str) -> Result<()> {
    tx.execute(
        "INSERT INTO server_actions (episode, evaluated_at, evaluation) VALUES (?1, ?2, ?3)
         ON CONFLICT (episode) DO UPDATE SET evaluated_at = ?2, evaluation = ?3",
        params![episode, at_ms, evaluation],
    )?;
    Ok(())
}

pub(crate) fn server_actions(conn: &Connection, episode: &str) -> Result<Option<(i64, String)>> {
    Ok(conn
        .query_row("SELECT evaluated_at, evaluation FROM server_actions WHERE episode = ?1", [episode], |row| {
            Ok((row.get(0)?, row.get(1)?))
        })
        .optional()?)
}

/// Keeps when the server first stored a record of an episode (the server's word wins).
pub(crate) fn put_receipt(tx: &Transaction<'_>, episode: &str, event: &str, received_at_ms: i64) -> Result<()> {
    tx.prepare_cached(
        "INSERT INTO receipts (episode, event, received_at) VALUES (?1, ?2, ?3)
         ON CONFLICT (episode, event) DO UPDATE SET received_at = ?3",
    )?
    .execute(params![episode, event, received_at_ms])?;
    Ok(())
}

pub(crate) fn held_back(conn: &Connection) -> Result<Vec<(String, Vec<u8>, String)>> {
    let mut statement = conn.prepare("SELECT episode, heads, reason FROM held_back ORDER BY episode")?;
    let rows = statement.query_map([], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Offers an episode to the server again at the next sync (the server's copy changed).
pub(crate) fn release_held_back(tx: &Transaction<'_>, episode: &str) -> Result<()> {
    tx.execute("DELETE FROM held_back WHERE episode = ?1", [episode])?;
    Ok(())
}

/// Offers every held-back episode to the server again at the next sync (a user signed in).
pub(crate) fn release_all_held_back(tx: &Transaction<'_>) -> Result<()> {
    tx.execute("DELETE FROM held_back", [])?;
    Ok(())
}

/// Holds an episode back at `heads`, with the reason (`episode::sync::Refusal` as JSON).
pub(crate) fn hold_back(tx: &Transaction<'_>, episode: &str, heads: &[u8], reason: &str) -> Result<()> {
    tx.execute(
        "INSERT INTO held_back (episode, heads, reason) VALUES (?1, ?2, ?3)
         ON CONFLICT (episode) DO UPDATE SET heads = ?2, reason = ?3",
        params![episode, heads, reason],
    )?;
    Ok(())
}

/// Forgets an episode entirely (after the server has taken everything of it).
pub(crate) fn delete_episode(tx: &Transaction<'_>, episode: &str) -> Result<()> {
    for table in ["changes", "sync_states", "server_actions", "held_back", "views", "receipts"] {
        tx.execute(&format!("DELETE FROM {table} WHERE episode = ?1"), [episode])?;
    }
    tx.execute("DELETE FROM episodes WHERE id = ?1", [episode])?;
    Ok(())
}
