//! The one schema migration runner of every Tether database: the phone's encrypted store
//! (`client-core`) and the server's SQLite and PostgreSQL backends.
//!
//! A schema is a list of upgrades, each the SQL that takes a database from the version
//! before to its own (upgrade 0 makes version 1 from nothing). [`run`] reads the
//! database's version, refuses one newer than the list, and applies each later upgrade in
//! its own transaction together with the version it reaches, so that a crash between two
//! upgrades leaves a database at a version it really has. Where the version is kept is
//! the database's business ([`Versioned`]): SQLite's `PRAGMA user_version`
//! ([`Versioned`] for `rusqlite::Connection`, here) or the server's `schema_version`
//! table on PostgreSQL.
//!
//! - `lib.rs`: [`Versioned`], [`run`], [`Error`], and the SQLite implementation.

/// A database that knows its schema version and can move it forward atomically.
pub trait Versioned {
    type Error: std::error::Error + Send + Sync + 'static;

    /// The version the database has (0 for an empty one).
    fn version(&mut self) -> Result<i64, Self::Error>;

    /// Applies `sql`, the upgrade from `to - 1`, and records `to`, in one transaction.
    /// An implementation shared by several processes (a server's replicas) re-reads the
    /// version under a lock inside that transaction and does nothing if another process
    /// got there first.
    fn upgrade(&mut self, sql: &str, to: i64) -> Result<(), Self::Error>;
}

/// Why a schema could not be brought up to date.
#[derive(Debug, thiserror::Error)]
pub enum Error<E: std::error::Error + 'static> {
    /// Written by a newer build: never read half-understood.
    #[error("the database was written by a newer build (schema {found}, this build knows {known})")]
    Newer { found: i64, known: i64 },
    /// The version itself is not one any build writes.
    #[error("the database's schema version is damaged (it reads {0})")]
    Damaged(i64),
    #[error(transparent)]
    Database(E),
}

/// Brings `db` up to the last of `upgrades`; returns the version it had before.
pub fn run<D: Versioned>(db: &mut D, upgrades: &[&str]) -> Result<i64, Error<D::Error>> {
    let known = i64::try_from(upgrades.len()).map_err(|_| Error::Damaged(i64::MAX))?;
    let found = db.version().map_err(Error::Database)?;
    if found < 0 {
        return Err(Error::Damaged(found));
    }
    if found > known {
        return Err(Error::Newer { found, known });
    }
    for (to, sql) in (found + 1..).zip(upgrades.iter().skip(usize::try_from(found).unwrap_or(usize::MAX))) {
        db.upgrade(sql, to).map_err(Error::Database)?;
    }
    Ok(found)
}

/// SQLite keeps the version in `PRAGMA user_version`.
impl Versioned for rusqlite::Connection {
    type Error = rusqlite::Error;

    fn version(&mut self) -> Result<i64, rusqlite::Error> {
        self.query_row("PRAGMA user_version", [], |row| row.get(0))
    }

    fn upgrade(&mut self, sql: &str, to: i64) -> Result<(), rusqlite::Error> {
        let tx = self.transaction()?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", to)?;
        tx.commit()
    }
}

impl<E: std::error::Error + 'static> Error<E> {
    /// The same error with the database's error converted.
    pub fn map<F: std::error::Error + 'static>(self, f: impl FnOnce(E) -> F) -> Error<F> {
        match self {
            Self::Newer { found, known } => Error::Newer { found, known },
            Self::Damaged(v) => Error::Damaged(v),
            Self::Database(e) => Error::Database(f(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const UPGRADES: [&str; 3] = [
        "CREATE TABLE a (x INTEGER NOT NULL);",
        "ALTER TABLE a ADD COLUMN y TEXT;",
        "CREATE TABLE b (z INTEGER NOT NULL); INSERT INTO b SELECT x FROM a;",
    ];

    #[test]
    fn a_new_database_gets_every_upgrade_and_an_old_one_the_rest_with_its_rows() {
        let mut conn = rusqlite::Connection::open_in_memory().expect("a database");
        assert_eq!(run(&mut conn, &UPGRADES[..1]).expect("to 1"), 0);
        conn.execute("INSERT INTO a (x) VALUES (7)", []).expect("a row");
        assert_eq!(run(&mut conn, &UPGRADES).expect("to 3"), 1);
        assert_eq!(conn.version().expect("a version"), 3);
        let z: i64 = conn.query_row("SELECT z FROM b", [], |r| r.get(0)).expect("the row, carried");
        assert_eq!(z, 7);
        assert_eq!(run(&mut conn, &UPGRADES).expect("again"), 3, "nothing to do twice");
    }

    #[test]
    fn a_newer_or_damaged_version_is_refused_and_nothing_is_changed() {
        let mut conn = rusqlite::Connection::open_in_memory().expect("a database");
        conn.pragma_update(None, "user_version", 9).expect("bump");
        assert!(matches!(run(&mut conn, &UPGRADES), Err(Error::Newer { found: 9, known: 3 })));
        conn.pragma_update(None, "user_version", -2).expect("damage");
        let error = run(&mut conn, &UPGRADES).expect_err("damaged");
        assert_eq!(error.to_string(), "the database's schema version is damaged (it reads -2)");
        let tables: i64 = conn.query_row("SELECT COUNT(*) FROM sqlite_master", [], |r| r.get(0)).expect("count");
        assert_eq!(tables, 0);
    }

    #[test]
    fn a_failing_upgrade_keeps_the_version_it_had() {
        let mut conn = rusqlite::Connection::open_in_memory().expect("a database");
        let broken = [UPGRADES[0], "ALTER TABLE missing ADD COLUMN y TEXT;"];
        assert!(matches!(run(&mut conn, &broken), Err(Error::Database(_))));
        assert_eq!(conn.version().expect("a version"), 1, "the first upgrade stays, the second left nothing");
    }
}
