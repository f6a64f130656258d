//! Opening the server's SQLite database: one connection (behind `store::Db`'s mutex),
//! WAL with `synchronous = FULL`, and a schema in `schema/*.sql` keyed on
//! `PRAGMA user_version`, brought up to date by the `migrate` runner. The statements
//! themselves are in `store::sqlite`; PostgreSQL's schema is in `schema/postgres/`, one
//! file for each of these.
//!
//! One connection is enough: SQLite has one writer anyway, and a pool crate would pin an
//! older rusqlite.

use std::path::Path;

use rusqlite::Connection;

use crate::files;

/// The schema this build writes; `PRAGMA user_version` holds the database's.
pub const SCHEMA: i64 = 9;

/// Each schema's upgrade from the one before, in order. Schema 6's upgrade also chains
/// the audit entries already there, in Rust (`store::after_upgrade`).
pub const UPGRADES: [&str; 9] = [
    include_str!("schema/v1.sql"),
    include_str!("schema/v2.sql"),
    include_str!("schema/v3.sql"),
    include_str!("schema/v4.sql"),
    include_str!("schema/v5.sql"),
    include_str!("schema/v6.sql"),
    include_str!("schema/v7.sql"),
    include_str!("schema/v8.sql"),
    include_str!("schema/v9.sql"),
];

pub use crate::store::OpenError;

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
    let mut conn = conn;
    crate::store::migrate_sqlite(&mut conn, &UPGRADES)?;
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
