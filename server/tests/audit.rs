//! The audit log as a hash chain: `tether audit verify` holds on a real database and
//! names the first broken entry in copies where rows were edited, deleted or inserted
//! with the triggers dropped; an upgrade chains the entries written before it.
//!
//! The copies are of a SQLite file (as someone who took the file would edit it), so that
//! test runs on SQLite; on PostgreSQL the same edits are made in the database itself,
//! its trigger dropped, and `tether audit verify --db postgres://…` names them. The head's
//! guard and the upgrade's chaining run on both backends.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use common::{Demo, TestDb};
use rusqlite::{Connection, params};
use serde_json::{Value, json};
use server::audit::{GENESIS, Row, entry_hash};
use tower::ServiceExt;

fn verify(db: &Path) -> Output {
    verify_at(db.to_str().expect("a UTF-8 path"))
}

/// `tether audit verify --db DB`, a path or a `postgres://` URL.
fn verify_at(db: &str) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tether"))
        .args(["audit", "verify", "--db", db])
        .env_remove("TETHER_DB")
        .output()
        .expect("run tether audit verify")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

async fn call(demo: &Demo, method: Method, path: &str, token: &str, body: Option<Value>) -> (StatusCode, Value) {
    let mut request =
        Request::builder().method(method).uri(path).header(header::AUTHORIZATION, format!("Bearer {token}"));
    if body.is_some() {
        request = request.header(header::CONTENT_TYPE, "application/json");
    }
    let body = body.map_or_else(Body::empty, |b| Body::from(b.to_string()));
    let response = demo.app.clone().oneshot(request.body(body).expect("a request")).await.expect("a response");
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX).await.expect("a body");
    (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

/// A database with a real audit log: maya signs in, lists the caseload, reads an
/// episode and its timeline, and records on it. Returns the demo (still open) and a
/// consistent copy of its database taken while it runs.
async fn audited() -> (Demo, PathBuf) {
    let demo = audited_demo().await;
    let copy = demo.dir.path().join("copy.db");
    let target = copy.to_str().expect("a UTF-8 path").to_owned();
    demo.state.db.call_blocking(move |conn| conn.inspect_execute(&format!("VACUUM INTO '{target}'"))).expect("a copy");
    (demo, copy)
}

/// The demo (on this test's backend) with maya's reads and record in the audit log.
async fn audited_demo() -> Demo {
    let demo = Demo::new();
    let login = json!({"username": "maya", "password": demo.passwords["maya"], "device_id": "desk-1"});
    let request = Request::post("/v1/auth/login")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(login.to_string()))
        .expect("a request");
    let response = demo.app.clone().oneshot(request).await.expect("a response");
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX).await.expect("a body");
    let token =
        serde_json::from_slice::<Value>(&bytes).expect("JSON")["access_token"].as_str().expect("a token").to_owned();
    let (status, list) = call(&demo, Method::GET, "/v1/episodes", &token, None).await;
    assert_eq!(status, StatusCode::OK);
    let id = list[0]["id"].as_str().expect("an id").to_owned();
    call(&demo, Method::GET, &format!("/v1/episodes/{id}"), &token, None).await;
    call(&demo, Method::GET, &format!("/v1/episodes/{id}/timeline"), &token, None).await;
    let record = json!({"kind": "contact_attempt", "method": "phone", "target": "patient", "outcome": "no_answer"});
    let (status, _) = call(&demo, Method::POST, &format!("/v1/episodes/{id}/events"), &token, Some(record)).await;
    assert_eq!(status, StatusCode::CREATED);
    demo
}

/// A copy of `original` with the audit triggers dropped, as someone with the file would.
fn tampered(original: &Path, name: &str, tamper: impl FnOnce(&Connection)) -> PathBuf {
    let path = original.with_file_name(name);
    std::fs::copy(original, &path).expect("copy");
    let conn = Connection::open(&path).expect("open the copy");
    conn.execute_batch("DROP TRIGGER audit_no_update; DROP TRIGGER audit_no_delete;").expect("drop the triggers");
    tamper(&conn);
    path
}

/// A way of changing a copy of the database behind the server's back.
type Tamper = Box<dyn FnOnce(&Connection)>;

fn count(conn: &Connection) -> i64 {
    conn.query_row("SELECT max(n) FROM audit", [], |r| r.get(0)).expect("a count")
}

/// On SQLite only: it edits copies of the database file.
#[tokio::test]
async fn verify_holds_on_a_real_log_and_names_the_first_edited_deleted_or_inserted_entry() {
    let (_demo, copy) = audited().await;
    let holds = verify(&copy);
    assert!(holds.status.success(), "{}", stderr(&holds));
    let entries = count(&Connection::open(&copy).expect("open"));
    assert!(entries >= 5, "{entries} entries");
    assert!(stdout(&holds).contains(&format!("holds: {entries} entries")), "{}", stdout(&holds));

    let cases: Vec<(&str, Tamper, String, &str)> = vec![
        (
            "an entry's detail edited",
            Box::new(|c: &Connection| {
                c.execute("UPDATE audit SET detail = 'nothing to see' WHERE n = 3", []).expect("edit");
            }),
            "entry 3".into(),
            "edited",
        ),
        (
            "who did it changed",
            Box::new(|c: &Connection| {
                c.execute("UPDATE audit SET username = 'sol', user_id = 'someone' WHERE n = 2", []).expect("edit");
            }),
            "entry 2".into(),
            "edited",
        ),
        (
            "an entry deleted from the middle",
            Box::new(|c: &Connection| {
                c.execute("DELETE FROM audit WHERE n = 4", []).expect("delete");
            }),
            "entry 4".into(),
            "missing",
        ),
        (
            "the last entry deleted",
            Box::new(|c: &Connection| {
                c.execute("DELETE FROM audit WHERE n = (SELECT max(n) FROM audit)", []).expect("delete");
            }),
            format!("entry {entries}"),
            "deleted",
        ),
        (
            "an entry inserted at the end with another's hash",
            Box::new(move |c: &Connection| {
                c.execute(
                    "INSERT INTO audit (n, at, user_id, username, device, via, action, episode, detail, prev_hash, hash)
                     SELECT n + 1, at, user_id, username, device, via, 'read_episode', episode, NULL, hash, hash
                     FROM audit WHERE n = (SELECT max(n) FROM audit)",
                    [],
                )
                .expect("insert");
            }),
            format!("entry {}", entries + 1),
            "edited",
        ),
        (
            // Made with the published algorithm and numbered in: it hashes right, and
            // breaks the link of the entry after it.
            "an entry inserted in the middle, hashed correctly",
            Box::new(|c: &Connection| {
                c.execute("UPDATE audit SET n = -n WHERE n > 3", []).expect("make room");
                c.execute("UPDATE audit SET n = -n + 1 WHERE n < 0", []).expect("renumber");
                let prev: Vec<u8> = c.query_row("SELECT hash FROM audit WHERE n = 3", [], |r| r.get(0)).expect("3");
                let row = Row {
                    n: 4,
                    at: 1,
                    user_id: "x".into(),
                    username: "sol".into(),
                    device: "desk-9".into(),
                    via: "api".into(),
                    action: "read_episode".into(),
                    episode: None,
                    detail: None,
                };
                let hash = entry_hash(&prev, &row);
                c.execute(
                    "INSERT INTO audit (n, at, user_id, username, device, via, action, episode, detail, prev_hash, hash)
                     VALUES (4, 1, 'x', 'sol', 'desk-9', 'api', 'read_episode', NULL, NULL, ?1, ?2)",
                    params![prev, hash],
                )
                .expect("insert");
            }),
            "entry 5".into(),
            "does not follow entry 4",
        ),
    ];
    for (i, (what, tamper, entry, says)) in cases.into_iter().enumerate() {
        let path = tampered(&copy, &format!("tampered-{i}.db"), tamper);
        let output = verify(&path);
        assert_eq!(output.status.code(), Some(1), "{what}: {}{}", stdout(&output), stderr(&output));
        let message = stderr(&output);
        assert!(message.contains(&format!("broken at {entry}:")), "{what}: {message}");
        assert!(message.contains(says), "{what}: {message}");
    }
}

/// On PostgreSQL the log is edited in the database itself, its trigger dropped: verify
/// names the edited, the deleted and the last entry deleted, and holds again once each
/// is put back.
async fn verify_on_postgres_names_the_entry_edited_or_deleted_in_the_database() {
    let demo = audited_demo().await;
    let url = demo.dir.arg.clone();
    let holds = verify_at(&url);
    assert!(holds.status.success(), "{}", stderr(&holds));
    let entries = demo.number("SELECT max(n) FROM audit");
    assert!(entries >= 5, "{entries} entries");
    assert!(stdout(&holds).contains(&format!("holds: {entries} entries")), "{}", stdout(&holds));
    assert!(!stdout(&holds).contains("tether-test-password") && !stderr(&holds).contains("tether-test-password"));

    let sql = |statements: &[&str]| demo.dir.write_raw(&statements.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>());
    sql(&["DROP TRIGGER audit_no_change ON audit", "CREATE TABLE kept AS SELECT * FROM audit"]);
    let last = entries.to_string();
    let cases: Vec<(&str, String, String, &str)> = vec![
        (
            "an entry's detail edited",
            "UPDATE audit SET detail = 'nothing to see' WHERE n = 3".into(),
            "entry 3".into(),
            "edited",
        ),
        ("who did it changed", "UPDATE audit SET username = 'sol' WHERE n = 2".into(), "entry 2".into(), "edited"),
        ("an entry deleted from the middle", "DELETE FROM audit WHERE n = 4".into(), "entry 4".into(), "missing"),
        ("the last entry deleted", format!("DELETE FROM audit WHERE n = {last}"), format!("entry {last}"), "deleted"),
    ];
    for (what, tamper, entry, says) in cases {
        sql(&[&tamper]);
        let output = verify_at(&url);
        assert_eq!(output.status.code(), Some(1), "{what}: {}{}", stdout(&output), stderr(&output));
        let message = stderr(&output);
        assert!(message.contains(&format!("broken at {entry}:")), "{what}: {message}");
        assert!(message.contains(says), "{what}: {message}");
        // Put back as it was.
        sql(&["DELETE FROM audit", "INSERT INTO audit SELECT * FROM kept"]);
        let output = verify_at(&url);
        assert!(output.status.success(), "{what}, put back: {}", stderr(&output));
    }
}

mod needs_postgres {
    #[tokio::test]
    async fn verify_on_postgres_names_the_entry_edited_or_deleted_in_the_database() {
        crate::common::set_backend(crate::common::Backend::Postgres);
        super::verify_on_postgres_names_the_entry_edited_or_deleted_in_the_database().await
    }
}

/// The log reads back the same through both of its readers, an episode's entries and a
/// page of a team's, on either database.
async fn an_episodes_entries_read_the_same_by_episode_and_by_page() {
    use server::audit::{Cursor, Scope};
    let demo = audited_demo().await;
    let teams: Vec<server::accounts::TeamId> = vec!["north".parse().expect("a team")];
    let (by_page, by_episode) = demo
        .state
        .db
        .call_blocking(|conn| -> Result<_, server::store::StoreError> {
            let all = server::audit::page(
                conn,
                Scope { teams: &teams, unscoped: false, episode: None },
                Cursor::After(0),
                100,
            )?;
            let episode = all.iter().find_map(|e| e.episode.clone()).expect("an entry about an episode");
            let id: episode::EpisodeId = episode.parse().expect("an episode id");
            let scope = Scope { teams: &teams, unscoped: false, episode: Some(id) };
            Ok((server::audit::page(conn, scope, Cursor::After(0), 100)?, server::audit::entries(conn, id)?))
        })
        .expect("read");
    assert_eq!(by_page, by_episode);
    let actions: Vec<&str> = by_episode.iter().map(|e| e.action.as_str()).collect();
    assert!(actions.contains(&"record_event"), "{actions:?}");
    assert!(by_episode.iter().all(|e| e.username == "maya" && e.device == "desk-1"), "{by_episode:?}");
}

async fn every_append_moves_the_head_and_the_server_keeps_the_chain_through_restarts() {
    let demo = audited_demo().await;
    let chain =
        demo.state.db.call_blocking(|conn| server::audit::verify(conn)).expect("read").expect("the chain holds");
    let head = demo.state.db.call_blocking(|conn| server::audit::head(conn)).expect("the head");
    assert_eq!(head, chain);
    // The head only moves on.
    let back = demo.state.db.call_blocking(|conn| conn.inspect_execute("UPDATE audit_head SET n = n - 1"));
    assert!(back.is_err(), "the head moved back");
    let gone = demo.state.db.call_blocking(|conn| conn.inspect_execute("DELETE FROM audit_head"));
    assert!(gone.is_err(), "the head was deleted");
    // And it survives a restart: a new server on the same database appends to it.
    let state = server::AppState::new(demo.dir.open(), demo.dir.jwt_secret().as_ref(), demo.state.clock.clone())
        .expect("a restarted server");
    let who = server::audit::Who {
        user_id: "u-1".into(),
        username: "maya".into(),
        device: "desk-1".into(),
        via: server::audit::Via::Api,
    };
    state
        .db
        .call_blocking(|conn| {
            let mut tx = conn.transaction()?;
            server::audit::log(&mut *tx, &who, 1, server::audit::AuditAction::ListEpisode, None, None)?;
            tx.commit()
        })
        .expect("an entry");
    let after = state.db.call_blocking(|conn| server::audit::verify(conn)).expect("read").expect("it holds");
    assert_eq!(after.entries, chain.entries + 1);
}

async fn the_upgrade_chains_the_entries_written_before_it() {
    // A database of schema 4, with audit entries written as schema 4 wrote them.
    let test_db = TestDb::new();
    server::Db::create_at_version(&test_db.target, 4).expect("a database of schema 4");
    let old: Vec<String> = [(1000, "list_episode"), (2000, "read_episode"), (3000, "record_event")]
        .iter()
        .map(|(at, action)| {
            format!(
                "INSERT INTO audit (at, user_id, username, device, via, action, episode, detail)
                 VALUES ({at}, 'u-1', 'maya', 'desk-1', 'api', '{action}', NULL, NULL)"
            )
        })
        .collect();
    test_db.write_raw(&old);
    let db = test_db.open();
    assert_eq!(db.call_blocking(|conn| conn.schema_version()).expect("a version"), server::db::SCHEMA);
    let chain =
        db.call_blocking(|conn| server::audit::verify(conn)).expect("read").expect("the old entries are chained");
    assert_eq!(chain.entries, 3);
    let first = db.call_blocking(|conn| conn.inspect("SELECT prev_hash FROM audit WHERE n = 1")).expect("entry 1");
    assert_eq!(first, [[Some(GENESIS.iter().map(|b| format!("{b:02x}")).collect::<String>())]]);
    // The update trigger is back after the upgrade's own updates.
    let edit = db.call_blocking(|conn| conn.inspect_execute("UPDATE audit SET detail = 'x' WHERE n = 1"));
    assert!(edit.is_err(), "the log is append-only again");
    drop(db);
    let output = verify_at(&test_db.arg);
    assert!(output.status.success(), "{}", stderr(&output));
}

/// On both backends, as `both::sqlite::NAME` and `both::needs_postgres::NAME`.
mod both {
    use super::{
        an_episodes_entries_read_the_same_by_episode_and_by_page,
        every_append_moves_the_head_and_the_server_keeps_the_chain_through_restarts,
        the_upgrade_chains_the_entries_written_before_it,
    };

    crate::common::backends!(
        an_episodes_entries_read_the_same_by_episode_and_by_page,
        every_append_moves_the_head_and_the_server_keeps_the_chain_through_restarts,
        the_upgrade_chains_the_entries_written_before_it,
    );
}
