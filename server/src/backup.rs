//! `tether backup` and `tether restore`: a consistent copy of a live SQLite database, and
//! putting one back.
//!
//! The copy is SQLite's online backup, a few pages a step, inside one read transaction
//! that this connection holds from the first step to the last: in WAL mode a reader never
//! blocks the server's writer, and the held snapshot means a commit during the copy
//! neither tears it nor restarts it. The copy is what the database held when the backup
//! began, so every sync answered before then is in it. It is written beside its final name
//! and renamed into place only when whole and synced.
//!
//! PostgreSQL has its own tools (`pg_dump`, `pg_restore`); both commands refuse a
//! `postgres://` URL and say so.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail, ensure};
use rusqlite::backup::{Backup, StepResult};
use rusqlite::{Connection, OpenFlags};

use crate::Target;
use crate::db::SCHEMA;
use crate::files;

/// How a copy proceeds: pages a step, and the pause between steps.
#[derive(Debug, Clone, Copy)]
pub struct Pace {
    pub pages_per_step: i32,
    pub pause: Duration,
}

impl Default for Pace {
    fn default() -> Self {
        Self { pages_per_step: 256, pause: Duration::from_millis(1) }
    }
}

/// What a backup copied.
#[derive(Debug, Clone, Copy)]
pub struct Copied {
    pub pages: i64,
    pub schema: i64,
}

/// The message for a PostgreSQL URL.
const POSTGRES: &str = "on PostgreSQL, back up with `pg_dump --format=custom` and restore with `pg_restore` \
                        (see the README's \"Backups\"); `tether backup` and `tether restore` copy SQLite files";

fn sqlite_path(target: &Target) -> anyhow::Result<PathBuf> {
    match target {
        Target::Sqlite(path) => Ok(path.clone()),
        Target::Postgres(_) => bail!("{POSTGRES}"),
    }
}

/// Copies the database `db` (which a server may be writing) to `to`, refusing to replace
/// an existing `to` unless `force`.
pub fn backup(db: &Target, to: &Path, force: bool, pace: Pace) -> anyhow::Result<Copied> {
    let from = sqlite_path(db)?;
    ensure!(force || !to.exists(), "{} exists: give --force to replace it", to.display());
    // Never create the source: a mistyped path is an error, not an empty backup.
    let source =
        Connection::open_with_flags(&from, OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX)
            .with_context(|| format!("cannot open the database {}", from.display()))?;
    source.busy_timeout(Duration::from_secs(5))?;
    // The read transaction that pins the snapshot for the whole copy.
    source.execute_batch("BEGIN")?;
    let schema = check_tether(&source).with_context(|| format!("{} is not a Tether database", from.display()))?;
    let partial = sibling(to, ".partial");
    let _ = std::fs::remove_file(&partial);
    files::create_private(&partial).with_context(|| format!("cannot create {}", partial.display()))?;
    let mut dest = Connection::open(&partial).with_context(|| format!("cannot open {}", partial.display()))?;
    let pages = copy(&source, &mut dest, pace)?;
    source.execute_batch("COMMIT")?;
    drop(source);
    // The copy's own check before it takes the final name.
    let check: String = dest.query_row("PRAGMA quick_check", [], |r| r.get(0))?;
    ensure!(check == "ok", "the copy failed its check: {check}");
    dest.close().map_err(|(_, e)| e)?;
    std::fs::File::open(&partial).and_then(|f| f.sync_all())?;
    std::fs::rename(&partial, to)
        .with_context(|| format!("cannot rename {} to {}", partial.display(), to.display()))?;
    files::sync_dir(to);
    Ok(Copied { pages, schema })
}

/// Puts the backup `from` in place as the database `db`: refuses a file that is not a
/// Tether database of a schema this build knows, a database a server has open, and an
/// existing database unless `force`.
pub fn restore(from: &Path, db: &Target, force: bool) -> anyhow::Result<Copied> {
    let to = sqlite_path(db)?;
    ensure!(from.is_file(), "{} is not a file", from.display());
    let source = Connection::open_with_flags(from, OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX)
        .with_context(|| format!("cannot open the backup {}", from.display()))?;
    let schema = check_tether(&source).with_context(|| format!("{} is not a Tether backup", from.display()))?;
    let check: String = source.query_row("PRAGMA quick_check", [], |r| r.get(0))?;
    ensure!(check == "ok", "the backup {} is damaged: {check}", from.display());
    if to.exists() {
        ensure!(force, "{} exists: give --force to replace it with the backup", to.display());
        ensure_unused(&to)?;
    }
    let partial = sibling(&to, ".restoring");
    let _ = std::fs::remove_file(&partial);
    files::create_private(&partial).with_context(|| format!("cannot create {}", partial.display()))?;
    let mut dest = Connection::open(&partial)?;
    let pages = copy(&source, &mut dest, Pace { pages_per_step: 1024, pause: Duration::ZERO })?;
    dest.close().map_err(|(_, e)| e)?;
    std::fs::File::open(&partial).and_then(|f| f.sync_all())?;
    // The old database's WAL must not outlive it: SQLite would replay it into the copy.
    for suffix in ["-wal", "-shm", "-journal"] {
        let file = sibling(&to, suffix);
        match std::fs::remove_file(&file) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("cannot remove {}", file.display())),
        }
    }
    std::fs::rename(&partial, &to)
        .with_context(|| format!("cannot rename {} to {}", partial.display(), to.display()))?;
    files::sync_dir(&to);
    Ok(Copied { pages, schema })
}

/// The backup API's loop, `pace.pages_per_step` pages at a time.
fn copy(source: &Connection, dest: &mut Connection, pace: Pace) -> anyhow::Result<i64> {
    let backup = Backup::new(source, dest)?;
    loop {
        match backup.step(pace.pages_per_step)? {
            StepResult::Done => break,
            StepResult::More | StepResult::Busy | StepResult::Locked => std::thread::sleep(pace.pause),
            _ => std::thread::sleep(pace.pause),
        }
    }
    Ok(i64::from(backup.progress().pagecount))
}

/// The schema of a Tether database on `conn`, or why it is not one.
fn check_tether(conn: &Connection) -> anyhow::Result<i64> {
    let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0)).context("not a SQLite database")?;
    ensure!(version != 0, "it has no Tether schema (user_version 0)");
    ensure!(
        (1..=SCHEMA).contains(&version),
        "its schema is version {version}, and this build of tether knows versions 1 to {SCHEMA}"
    );
    let tables: i64 = conn.query_row(
        "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name IN ('meta', 'users')",
        [],
        |r| r.get(0),
    )?;
    ensure!(tables == 2, "it lacks Tether's tables");
    Ok(version)
}

/// Refuses a database some process has open: leaving WAL mode needs the only connection.
fn ensure_unused(path: &Path) -> anyhow::Result<()> {
    let conn = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX)
        .with_context(|| format!("cannot open {}", path.display()))?;
    let mode: Result<String, _> = conn.query_row("PRAGMA journal_mode = DELETE", [], |r| r.get(0));
    match mode {
        Ok(mode) if mode.eq_ignore_ascii_case("delete") => Ok(()),
        _ => bail!("{} is in use (is a server running on it?): stop it first", path.display()),
    }
}

fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}
