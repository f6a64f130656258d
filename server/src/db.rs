//! The server's SQLite database: one connection behind a mutex, WAL with
//! `synchronous = FULL`, and a schema in `schema/*.sql` keyed on `PRAGMA user_version`.
//!
//! Queries run on tokio's blocking pool (`Db::call`), so a slow disk never stalls the
//! request threads. One connection is enough for now: SQLite has one writer anyway, and
//! a pool crate would pin an older rusqlite.

use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};

use rusqlite::{Connection, OptionalExtension, Transaction};

use crate::error::AppError;
use crate::files;

/// The schema this build writes; `PRAGMA user_version` holds the database's.
pub const SCHEMA: i64 = 8;

/// Each schema's upgrade from the one before, in order.
const UPGRADES: [&str; 8] = [
    include_str!("schema/v1.sql"),
    include_str!("schema/v2.sql"),
    include_str!("schema/v3.sql"),
    include_str!("schema/v4.sql"),
    include_str!("schema/v5.sql"),
    include_str!("schema/v6.sql"),
    include_str!("schema/v7.sql"),
    include_str!("schema/v8.sql"),
];

/// Why the database could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("the database was written by a newer tether (schema {0}, this build knows {SCHEMA})")]
    Newer(i64),
    #[error("the database could not use WAL (journal mode {0})")]
    NoWal(String),
    #[error("the database is damaged: {0}")]
    Corrupt(String),
    #[error("{0:#}")]
    Files(anyhow::Error),
    #[error(transparent)]
    Sqlite(#[from] rusqlite::Error),
}

/// Opens (creating if need be) the database at `path` and brings its schema up to date.
/// No SQLCipher key is set: the server's database is a plain SQLite file, so it and the
/// files SQLite keeps beside it are the owner's only (0600).
pub fn open(path: &Path) -> Result<Connection, OpenError> {
    private_files(path).map_err(OpenError::Files)?;
    let conn = Connection::open(path)?;
    // Every hot statement is prepared once and kept.
    conn.set_prepared_statement_cache_capacity(64);
    // The first read fails here if the file is not a database.
    conn.prepare_cached("SELECT count(*) FROM sqlite_master")?.query_row([], |row| row.get::<_, i64>(0))?;
    // WAL with synchronous=FULL: a commit is on disk before the request that made it is
    // answered, and readers never block the writer.
    let mode: String = conn.prepare_cached("PRAGMA journal_mode = WAL")?.query_row([], |row| row.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(OpenError::NoWal(mode));
    }
    conn.execute_batch("PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON; PRAGMA busy_timeout = 5000;")?;
    let integrity: String = conn.prepare_cached("PRAGMA quick_check")?.query_row([], |row| row.get(0))?;
    if integrity != "ok" {
        return Err(OpenError::Corrupt(integrity));
    }
    migrate(&conn)?;
    Ok(conn)
}

/// Creates the database file 0600 if it is new, and makes an existing one and its WAL,
/// shared-memory and journal files 0600 if they are not. SQLite gives the WAL and
/// shared-memory files it creates the database file's own mode, so they follow.
fn private_files(path: &Path) -> anyhow::Result<()> {
    if path.as_os_str().is_empty() || path == Path::new(":memory:") {
        return Ok(());
    }
    match files::create_private(path) {
        Ok(_) => files::sync_dir(path),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(anyhow::Error::new(e).context(format!("cannot create {}", path.display()))),
    }
    for suffix in ["", "-wal", "-shm", "-journal"] {
        let mut name = path.as_os_str().to_owned();
        name.push(suffix);
        let file = std::path::PathBuf::from(name);
        if file.exists() {
            files::restrict(&file)?;
        }
    }
    Ok(())
}

fn migrate(conn: &Connection) -> Result<(), OpenError> {
    let version: i64 = conn.prepare_cached("PRAGMA user_version")?.query_row([], |row| row.get(0))?;
    if version > SCHEMA {
        return Err(OpenError::Newer(version));
    }
    for (i, upgrade) in UPGRADES.iter().enumerate().skip(usize::try_from(version).unwrap_or(0)) {
        let tx = conn.unchecked_transaction()?;
        tx.execute_batch(upgrade)?;
        // Schema 6 chains the audit entries already there: a hash SQL cannot compute.
        if i + 1 == 6 {
            crate::audit::chain_existing(&tx)?;
        }
        tx.pragma_update(None, "user_version", i as i64 + 1)?;
        tx.commit()?;
    }
    Ok(())
}

/// The value of a server-wide setting.
pub fn meta(conn: &Connection, key: &str) -> rusqlite::Result<Option<String>> {
    conn.prepare_cached("SELECT value FROM meta WHERE key = ?1")?.query_row([key], |row| row.get(0)).optional()
}

pub fn set_meta(tx: &Transaction<'_>, key: &str, value: &str) -> rusqlite::Result<()> {
    tx.prepare_cached("INSERT INTO meta (key, value) VALUES (?1, ?2) ON CONFLICT (key) DO UPDATE SET value = ?2")?
        .execute([key, value])?;
    Ok(())
}

/// Deletes a server-wide setting so that no copy of it stays in the file: its page is
/// overwritten (`secure_delete`) and the WAL checkpointed into the database and emptied.
/// For a secret an earlier version kept there.
pub fn forget_meta(conn: &mut Connection, key: &str) -> rusqlite::Result<()> {
    conn.pragma_update(None, "secure_delete", true)?;
    let tx = conn.transaction()?;
    tx.prepare_cached("DELETE FROM meta WHERE key = ?1")?.execute([key])?;
    tx.commit()?;
    conn.pragma_update(None, "secure_delete", false)?;
    conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
    Ok(())
}

/// The shared handle on the database connection.
#[derive(Clone, Debug)]
pub struct Db {
    conn: Arc<Mutex<Connection>>,
}

impl Db {
    pub fn new(conn: Connection) -> Self {
        Self { conn: Arc::new(Mutex::new(conn)) }
    }

    /// Runs `f` with the connection on the blocking pool.
    pub async fn call<T, F>(&self, f: F) -> Result<T, AppError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, AppError> + Send + 'static,
    {
        let conn = Arc::clone(&self.conn);
        tokio::task::spawn_blocking(move || {
            // A panic while the lock was held leaves no half-done transaction behind
            // (rusqlite rolls back on drop), so a poisoned lock is safe to take over.
            let mut conn = conn.lock().unwrap_or_else(PoisonError::into_inner);
            f(&mut conn)
        })
        .await?
    }

    /// Runs `f` with the connection on the current thread (for the command line).
    pub fn call_blocking<T>(&self, f: impl FnOnce(&mut Connection) -> T) -> T {
        let mut conn = self.conn.lock().unwrap_or_else(PoisonError::into_inner);
        f(&mut conn)
    }
}
