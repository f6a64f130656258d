//! `tether backup` and `tether restore` as a user runs them: a round trip through the
//! command line, and each refusal (PostgreSQL, a file that is not Tether's, a schema
//! newer than the build, an existing database without --force).

use std::path::Path;
use std::process::{Command, Output};

fn tether(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tether"))
        .args(args)
        .env_remove("TETHER_DB")
        .env("TETHER_PASSWORD", "a long enough password")
        .output()
        .expect("run tether")
}

fn ok(output: &Output) -> String {
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn refused(output: &Output) -> String {
    assert_eq!(output.status.code(), Some(2), "{}", String::from_utf8_lossy(&output.stdout));
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn s(path: &Path) -> &str {
    path.to_str().expect("a UTF-8 path")
}

#[test]
fn a_backup_restores_through_the_command_line_and_bad_ones_are_refused() {
    let dir = tempfile::tempdir().expect("a directory");
    let db = dir.path().join("tether.db");
    let copy = dir.path().join("copy.db");
    let restored = dir.path().join("restored.db");
    ok(&tether(&["team", "add", "--db", s(&db), "--id", "north", "--name", "North"]));
    ok(&tether(&["user", "add", "--db", s(&db), "--username", "ada", "--role", "practitioner", "--team", "north"]));

    let said = ok(&tether(&["backup", "--db", s(&db), "--to", s(&copy)]));
    assert!(said.contains("backed up"), "{said}");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&copy).expect("the copy").permissions().mode();
        assert_eq!(mode & 0o077, 0, "the backup is the owner's only: {mode:o}");
    }
    assert!(refused(&tether(&["backup", "--db", s(&db), "--to", s(&copy)])).contains("--force"));
    ok(&tether(&["backup", "--db", s(&db), "--to", s(&copy), "--force"]));

    ok(&tether(&["restore", "--from", s(&copy), "--db", s(&restored)]));
    let users = ok(&tether(&["user", "list", "--db", s(&restored)]));
    assert!(users.contains("ada"), "{users}");
    assert!(refused(&tether(&["restore", "--from", s(&copy), "--db", s(&restored)])).contains("--force"));
    ok(&tether(&["restore", "--from", s(&copy), "--db", s(&restored), "--force"]));

    // Not a database, a database that is not Tether's, one from a newer build.
    let junk = dir.path().join("junk.db");
    std::fs::write(&junk, "not a database at all, just text").expect("write");
    assert!(
        refused(&tether(&["restore", "--from", s(&junk), "--db", s(&restored), "--force"])).contains("not a Tether")
    );
    let other = dir.path().join("other.db");
    rusqlite::Connection::open(&other)
        .expect("open")
        .execute_batch("CREATE TABLE t (x); PRAGMA user_version = 3;")
        .expect("make");
    assert!(
        refused(&tether(&["restore", "--from", s(&other), "--db", s(&restored), "--force"]))
            .contains("Tether's tables")
    );
    let newer = dir.path().join("newer.db");
    std::fs::copy(&copy, &newer).expect("copy");
    rusqlite::Connection::open(&newer).expect("open").execute_batch("PRAGMA user_version = 99;").expect("bump");
    let said = refused(&tether(&["restore", "--from", s(&newer), "--db", s(&restored), "--force"]));
    assert!(said.contains("version 99"), "{said}");
    assert!(
        refused(&tether(&["backup", "--db", s(&dir.path().join("missing.db")), "--to", s(&junk)])).contains("--force")
    );
    assert!(
        refused(&tether(&["backup", "--db", s(&dir.path().join("missing.db")), "--to", s(&dir.path().join("m"))]))
            .contains("cannot open")
    );

    // PostgreSQL has its own tools, named; the password is never echoed.
    let url = "postgres://tether:hunter2-secret@db.example/tether";
    let said = refused(&tether(&["backup", "--db", url, "--to", s(&dir.path().join("pg.dump"))]));
    assert!(said.contains("pg_dump") && !said.contains("hunter2"), "{said}");
    let said = refused(&tether(&["restore", "--from", s(&copy), "--db", url]));
    assert!(said.contains("pg_restore") && !said.contains("hunter2"), "{said}");
    // The restored copy still passes the audit check.
    ok(&tether(&["audit", "verify", "--db", s(&restored)]));
}
