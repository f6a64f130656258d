//! What the server's integration tests share: a server on a fresh database (a SQLite file
//! in a temporary directory, or a PostgreSQL database made for the test and dropped after
//! it), called through `app(state)` and `oneshot` with no socket, and a clock the tests
//! move; helpers for JSON bodies, error bodies and access tokens; and [`backends!`], which
//! runs each test on both backends.
//!
//! Each test binary uses only some of it.
#![allow(dead_code, unreachable_pub, unused_macros, unused_imports)]

pub mod fhir_receiver;

use std::io::{BufRead, BufReader};
use std::process::{Child, ChildStdout, Command, Stdio};

use std::cell::Cell;

use std::sync::{Arc, Mutex, PoisonError};

use automerge::ActorId;
use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, StatusCode, header};
use episode::document::{EpisodeDoc, Opening};
use episode::{Pathway, PatientRef};
use jiff::{SignedDuration, Timestamp};
use serde_json::{Value, json};
use server::accounts::{self, Password, Role, TeamId, Username};
use server::auth::token::{Claims, Keys};
use server::store::Tx;
use server::{AppState, Clock, Db, Target, app, episodes};
use tempfile::TempDir;
use tower::ServiceExt;

pub const PASSWORD: &str = "correct horse battery staple";

/// A server on a fresh database with teams `team-north` and `team-south`; `alice`, a
/// practitioner in both; `cai`, a practitioner in south; `sol`, south's team manager.
pub struct Server {
    pub app: Router,
    pub state: AppState,
    pub now: Arc<Mutex<Timestamp>>,
    /// Last: the database outlives the state that uses it.
    pub dir: TestDb,
}

impl Server {
    pub fn new() -> Self {
        let test_db = TestDb::new();
        let db = test_db.open();
        let start: Timestamp = "2026-03-02T09:00:00Z".parse().expect("a time");
        db.call_blocking(|conn| {
            let mut tx = conn.transaction()?;
            add_accounts(&mut *tx, start);
            tx.commit()
        })
        .expect("the accounts");
        let now = Arc::new(Mutex::new(start));
        let clock_now = Arc::clone(&now);
        let clock = Clock::from_fn(move || *clock_now.lock().unwrap_or_else(PoisonError::into_inner));
        let state = AppState::new(db, test_db.jwt_secret().as_ref(), clock).expect("the state");
        Self { app: app(state.clone()), state, now, dir: test_db }
    }

    /// Runs `f` with a connection, on either backend.
    pub fn db<T: Send>(&self, f: impl FnOnce(&mut dyn server::store::Conn) -> T + Send) -> T {
        self.state.db.call_blocking(|conn| Ok::<_, server::store::StoreError>(f(conn))).expect("a connection")
    }

    /// The rows of a query (test inspection), each value as text.
    pub fn rows(&self, sql: &str) -> Vec<Vec<Option<String>>> {
        self.db(|conn| conn.inspect(sql).expect("the query"))
    }

    /// The one number a query answers.
    pub fn number(&self, sql: &str) -> i64 {
        number(&self.rows(sql))
    }
}

/// Teams `team-north` and `team-south`; `alice`, a practitioner in both; `cai`, a
/// practitioner in south; `sol`, south's team manager.
fn add_accounts(tx: &mut dyn Tx, start: Timestamp) {
    {
        for (id, name) in [("team-north", "North"), ("team-south", "South")] {
            accounts::add_team(tx, &id.parse().expect("a team id"), name, start).expect("add a team");
        }
        let password = Password::new(PASSWORD.into()).expect("a password");
        let hash = server::auth::password::hash(&password).expect("hash");
        for (name, role, teams) in [
            ("alice", Role::Practitioner, &["team-south", "team-north"][..]),
            ("cai", Role::Practitioner, &["team-south"][..]),
            ("sol", Role::TeamManager, &["team-south"][..]),
        ] {
            let teams: Vec<TeamId> = teams.iter().map(|t| t.parse().expect("a team id")).collect();
            let username: Username = name.parse().expect("a username");
            accounts::add_user(tx, &username, &hash, role, &teams, start).expect("add a user");
        }
    }
}

impl Server {
    pub fn advance(&self, seconds: i64) {
        let mut now = self.now.lock().unwrap_or_else(PoisonError::into_inner);
        *now = now.checked_add(SignedDuration::from_secs(seconds)).expect("a time");
    }

    /// Sends a request; returns the status, the headers and the raw body.
    pub async fn send_raw(&self, request: Request<Body>) -> (StatusCode, HeaderMap, Vec<u8>) {
        let response = self.app.clone().oneshot(request).await.expect("a response");
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX).await.expect("the body");
        (status, headers, bytes.to_vec())
    }

    /// Sends a request whose answer is JSON (or empty: `Null`).
    pub async fn send(&self, request: Request<Body>) -> (StatusCode, HeaderMap, Value) {
        let (status, headers, bytes) = self.send_raw(request).await;
        let body = if bytes.is_empty() { Value::Null } else { serde_json::from_slice(&bytes).expect("a JSON body") };
        (status, headers, body)
    }

    pub async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        let request = Request::builder()
            .method(Method::POST)
            .uri(path)
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(body.to_string()))
            .expect("a request");
        let (status, _, body) = self.send(request).await;
        (status, body)
    }

    pub async fn post_raw(&self, path: &str, content_type: Option<&str>, body: impl Into<Body>) -> (StatusCode, Value) {
        let mut request = Request::builder().method(Method::POST).uri(path);
        if let Some(content_type) = content_type {
            request = request.header(header::CONTENT_TYPE, content_type);
        }
        let (status, _, body) = self.send(request.body(body.into()).expect("a request")).await;
        (status, body)
    }

    pub async fn login(&self, username: &str, password: &str, device: &str) -> (StatusCode, Value) {
        self.post("/v1/auth/login", json!({"username": username, "password": password, "device_id": device})).await
    }

    /// Signs alice in on `device`; returns (access token, refresh token).
    pub async fn alice(&self, device: &str) -> (String, String) {
        let (status, body) = self.login("alice", PASSWORD, device).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        (text(&body["access_token"]), text(&body["refresh_token"]))
    }

    /// Signs `username` in on `device`; returns its access token.
    pub async fn access(&self, username: &str, device: &str) -> String {
        let (status, body) = self.login(username, PASSWORD, device).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        text(&body["access_token"])
    }

    /// The keys this server signs access tokens with (from its key file).
    pub async fn keys(&self) -> Keys {
        Keys::from_secret(&self.secret())
    }

    /// The signing secret: on SQLite read from the key file beside the database, on
    /// PostgreSQL (which has no file to be beside) the one the test gave.
    pub fn secret(&self) -> Vec<u8> {
        self.dir.secret_bytes()
    }

    pub async fn refresh(&self, refresh_token: &str, device: &str) -> (StatusCode, Value) {
        self.post("/v1/auth/refresh", json!({"refresh_token": refresh_token, "device_id": device})).await
    }

    pub async fn me(&self, authorization: Option<&str>) -> (StatusCode, HeaderMap, Value) {
        let mut request = Request::builder().uri("/v1/me");
        if let Some(value) = authorization {
            request = request.header(header::AUTHORIZATION, value);
        }
        self.send(request.body(Body::empty()).expect("a request")).await
    }

    pub async fn me_with(&self, access_token: &str) -> (StatusCode, Value) {
        let (status, _, body) = self.me(Some(&format!("Bearer {access_token}"))).await;
        (status, body)
    }
}

pub fn text(value: &Value) -> String {
    value.as_str().unwrap_or_else(|| panic!("expected a string, got {value}")).to_string()
}

/// Asserts the shared error body and returns its code and message.
pub fn error(body: &Value) -> (String, String) {
    let error = &body["error"];
    assert!(error.is_object(), "not an error body: {body}");
    (text(&error["code"]), text(&error["message"]))
}

pub fn claims(access_token: &str) -> Claims {
    jsonwebtoken::dangerous::insecure_decode::<Claims>(access_token).expect("readable claims").claims
}

/// Unpadded base64url, for hand-made tokens.
pub fn base64url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().enumerate().fold(0u32, |n, (i, &b)| n | u32::from(b) << (16 - 8 * i));
        for i in 0..=chunk.len() {
            out.push(char::from(ALPHABET[(n >> (18 - 6 * i) & 63) as usize]));
        }
    }
    out
}

/// When [`Demo`] starts: a Wednesday morning.
pub const DEMO_START: &str = "2026-03-04T10:00:00Z";

/// A server on a database seeded by `tether serve --demo`'s seeder at [`DEMO_START`],
/// with the demo users' passwords and a clock the tests move.
pub struct Demo {
    pub app: Router,
    pub state: AppState,
    pub now: Arc<Mutex<Timestamp>>,
    pub passwords: std::collections::HashMap<&'static str, String>,
    /// Last: the database outlives the state that uses it.
    pub dir: TestDb,
}

impl Demo {
    pub fn new() -> Self {
        let dir = TestDb::new();
        let db = dir.open();
        let start: Timestamp = DEMO_START.parse().expect("a time");
        let accounts = db
            .call_blocking(|conn| server::demo::seed(conn, start))
            .expect("seed")
            .new_accounts()
            .expect("a new database is seeded");
        let passwords = accounts.into_iter().map(|a| (a.username, a.password)).collect();
        let now = Arc::new(Mutex::new(start));
        let clock_now = Arc::clone(&now);
        let clock = Clock::from_fn(move || *clock_now.lock().unwrap_or_else(PoisonError::into_inner));
        let state = AppState::new(db, dir.jwt_secret().as_ref(), clock).expect("the state");
        Self { app: app(state.clone()), state, now, passwords, dir }
    }

    /// Runs `f` with a connection, on either backend.
    pub fn db<T: Send>(&self, f: impl FnOnce(&mut dyn server::store::Conn) -> T + Send) -> T {
        self.state.db.call_blocking(|conn| Ok::<_, server::store::StoreError>(f(conn))).expect("a connection")
    }

    /// The rows of a query (test inspection), each value as text.
    pub fn rows(&self, sql: &str) -> Vec<Vec<Option<String>>> {
        self.db(|conn| conn.inspect(sql).expect("the query"))
    }

    /// The one number a query answers.
    pub fn number(&self, sql: &str) -> i64 {
        number(&self.rows(sql))
    }

    pub fn advance(&self, seconds: i64) {
        let mut now = self.now.lock().unwrap_or_else(PoisonError::into_inner);
        *now = now.checked_add(SignedDuration::from_secs(seconds)).expect("a time");
    }
}

/// The one number in a query's rows.
pub fn number(rows: &[Vec<Option<String>>]) -> i64 {
    rows.first()
        .and_then(|row| row.first())
        .and_then(|value| value.as_deref())
        .and_then(|text| text.parse().ok())
        .unwrap_or_else(|| panic!("expected one number, got {rows:?}"))
}

/// Which database a test runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

thread_local! {
    static BACKEND: Cell<Backend> = const { Cell::new(Backend::Sqlite) };
}

/// Sets the backend the tests on this thread make their databases on.
pub fn set_backend(backend: Backend) {
    BACKEND.with(|b| b.set(backend));
}

pub fn backend() -> Backend {
    BACKEND.with(Cell::get)
}

/// The variable naming the PostgreSQL server the tests make their databases on, as a URL
/// of a role that may create databases, and its default: the role `.ci/run` creates on a
/// local `pg_ctlcluster 15 main start`.
pub const POSTGRES_VAR: &str = "TETHER_TEST_POSTGRES";
pub const POSTGRES_DEFAULT: &str = "postgres://tether_test:tether-test-password@127.0.0.1:5432/postgres";

/// A fresh database for one test: a SQLite file in a temporary directory, or a PostgreSQL
/// database created for it and dropped after it.
pub struct TestDb {
    pub target: Target,
    /// `--db` as a command line gives it (a path, or the URL with its password).
    pub arg: String,
    scratch: Option<Scratch>,
    pub dir: TempDir,
}

struct Scratch {
    admin: String,
    name: String,
}

impl TestDb {
    /// A fresh database on this thread's backend.
    pub fn new() -> Self {
        Self::on(backend())
    }

    pub fn on(backend: Backend) -> Self {
        let dir = tempfile::tempdir().expect("a temporary directory");
        match backend {
            Backend::Sqlite => {
                let path = dir.path().join("tether.db");
                let arg = path.to_str().expect("a UTF-8 path").to_owned();
                Self { target: Target::path(path), arg, scratch: None, dir }
            }
            Backend::Postgres => {
                let admin = std::env::var(POSTGRES_VAR).unwrap_or_else(|_| POSTGRES_DEFAULT.to_owned());
                let name = format!("tether_test_{}", uuid::Uuid::now_v7().simple());
                let url = with_database(&admin, &name);
                let created = {
                    let (admin, name) = (admin.clone(), name.clone());
                    std::thread::spawn(move || {
                        let mut client = postgres::Client::connect(&admin, postgres::NoTls)?;
                        client.batch_execute(&format!("CREATE DATABASE \"{name}\""))
                    })
                    .join()
                    .expect("no panic")
                };
                if let Err(error) = created {
                    panic!(
                        "this test needs PostgreSQL: none usable at {} ({error}). Install and start it \
                         (`apt-get install postgresql-15 && pg_ctlcluster 15 main start`), create a role that \
                         may create databases (see README, \"Tests on PostgreSQL\"), and name it in {POSTGRES_VAR} \
                         (default {POSTGRES_DEFAULT}); or skip these tests with `-- --skip needs_postgres`",
                        Target::from(admin.as_str())
                    );
                }
                Self { target: Target::from(url.as_str()), arg: url, scratch: Some(Scratch { admin, name }), dir }
            }
        }
    }

    /// Opens (and migrates) the database.
    pub fn open(&self) -> Db {
        Db::open(&self.target).expect("open the database")
    }

    pub fn backend(&self) -> Backend {
        if self.scratch.is_some() { Backend::Postgres } else { Backend::Sqlite }
    }

    /// The test's temporary directory (for files beside the database).
    pub fn path(&self) -> &std::path::Path {
        self.dir.path()
    }

    /// The `TETHER_JWT_SECRET` a server on this database is given: none on SQLite (it
    /// makes the key file beside the database), [`POSTGRES_JWT_SECRET`] on PostgreSQL
    /// (which has no file to be beside, so the secret is required there).
    pub fn jwt_secret(&self) -> Option<server::Secret> {
        (self.backend() == Backend::Postgres).then(|| server::Secret::from(POSTGRES_JWT_SECRET.to_owned()))
    }

    /// The secret a server on this database signs with: the key file's first key on
    /// SQLite, [`POSTGRES_JWT_SECRET`] on PostgreSQL.
    pub fn secret_bytes(&self) -> Vec<u8> {
        match self.backend() {
            Backend::Sqlite => {
                let file = server::auth::keys::key_file_for(&self.dir.path().join("tether.db"));
                server::auth::keys::read(&file).expect("the key file").swap_remove(0)
            }
            Backend::Postgres => POSTGRES_JWT_SECRET.as_bytes().to_vec(),
        }
    }
}

impl TestDb {
    /// Runs statements on the database as it is, even at an old schema (no migration).
    pub fn write_raw(&self, statements: &[String]) {
        match &self.target {
            Target::Sqlite(path) => {
                let conn = rusqlite::Connection::open(path).expect("the database");
                for sql in statements {
                    conn.execute_batch(sql).unwrap_or_else(|e| panic!("{sql}: {e}"));
                }
            }
            Target::Postgres(_) => {
                std::thread::scope(|scope| {
                    scope.spawn(|| {
                        let mut client = postgres::Client::connect(&self.arg, postgres::NoTls).expect("the database");
                        for sql in statements {
                            client.batch_execute(sql).unwrap_or_else(|e| panic!("{sql}: {e}"));
                        }
                    });
                });
            }
        }
    }
}

/// The signing secret of the servers the tests run on PostgreSQL.
pub const POSTGRES_JWT_SECRET: &str = "the signing secret of tests on PostgreSQL, 32 bytes or more";

/// The URL `admin` with its database replaced by `name`.
pub fn with_database(admin: &str, name: &str) -> String {
    let (base, query) = admin.split_once('?').map_or((admin, None), |(b, q)| (b, Some(q)));
    let rest = base.split_once("://").map_or(base, |(_, rest)| rest);
    let base = if rest.contains('/') { base.rsplit_once('/').map_or(base, |(b, _)| b) } else { base };
    match query {
        Some(query) => format!("{base}/{name}?{query}"),
        None => format!("{base}/{name}"),
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let (admin, name) = (self.admin.clone(), self.name.clone());
        // The blocking client may not block inside the test's runtime.
        let _ = std::thread::spawn(move || {
            if let Ok(mut client) = postgres::Client::connect(&admin, postgres::NoTls) {
                let _ = client.batch_execute(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"));
            }
        })
        .join();
    }
}

/// Runs each named test (an `async fn NAME()` without `#[tokio::test]`) on SQLite, as
/// `sqlite::NAME`, and on PostgreSQL, as `needs_postgres::NAME`, which fails, naming what
/// to install, when no PostgreSQL is reachable (`-- --skip needs_postgres` skips them).
/// Names after `; multi_thread:` run on a runtime with four worker threads.
macro_rules! backends {
    ($($name:ident),* $(,)? $(; multi_thread: $($multi:ident),* $(,)?)?) => {
        mod sqlite {
            $(
                #[tokio::test]
                async fn $name() {
                    crate::common::set_backend(crate::common::Backend::Sqlite);
                    super::$name().await
                }
            )*
            $($(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $multi() {
                    crate::common::set_backend(crate::common::Backend::Sqlite);
                    super::$multi().await
                }
            )*)?
        }

        mod needs_postgres {
            $(
                #[tokio::test]
                async fn $name() {
                    crate::common::set_backend(crate::common::Backend::Postgres);
                    super::$name().await
                }
            )*
            $($(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $multi() {
                    crate::common::set_backend(crate::common::Backend::Postgres);
                    super::$multi().await
                }
            )*)?
        }
    };
}
pub(crate) use backends;

/// [`backends!`] for tests that are not async (`fn NAME()` without `#[test]`).
macro_rules! backends_blocking {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[test]
                fn $name() {
                    crate::common::set_backend(crate::common::Backend::Sqlite);
                    super::$name()
                }
            )*
        }

        mod needs_postgres {
            $(
                #[test]
                fn $name() {
                    crate::common::set_backend(crate::common::Backend::Postgres);
                    super::$name()
                }
            )*
        }
    };
}
pub(crate) use backends_blocking;

/// A record made through the office on an episode of team-north, as `writer-n` (its
/// audit entry names `replica-n`), through the state's own `Db` handle; its id.
pub fn record_on(state: &AppState, id: episode::EpisodeId, n: usize) -> Result<episode::EventId, server::AppError> {
    let who = server::audit::Who {
        user_id: "writer".into(),
        username: format!("writer-{n}"),
        device: format!("replica-{n}"),
        via: server::audit::Via::Api,
    };
    let teams: Vec<TeamId> = vec!["team-north".parse().expect("a team")];
    let fields = json!({"method": "phone", "target": "patient", "outcome": "no_answer"});
    let new = server::office::NewRecord {
        kind: "contact_attempt".into(),
        at: None,
        fields: fields.as_object().expect("an object").clone(),
    };
    let now = state.clock.now();
    state.db.call_blocking(|conn| {
        server::office::record(
            &mut server::office::Desk::new(conn, &state.docs, &who, &teams, now, &state.alerts),
            id,
            new,
        )
    })
}

/// A new episode of `team`, opened at `opened_at` and stored as a device's first sync
/// would store it.
pub fn store_new_episode(db: &Db, team: &str, patient: &str, opened_at: Timestamp) -> episode::EpisodeId {
    let id = episode::EpisodeId::from_uuid(uuid::Uuid::now_v7());
    let opening = Opening {
        id,
        patient_ref: PatientRef::new(patient).expect("a reference"),
        team: team.into(),
        opened_at,
        opened_by: "alice".into(),
        pathway: Pathway::RoutineReferral,
        facts: Vec::new(),
        plan: String::new(),
    };
    let mut doc = EpisodeDoc::open(&opening, ActorId::from(vec![1; 16])).expect("a document");
    db.call_blocking(|conn| {
        let mut tx = conn.transaction()?;
        episodes::insert(&mut *tx, id, &team.parse().expect("a team"), &mut doc, opened_at.as_second())?;
        tx.commit()
    })
    .expect("stored");
    id
}

/// A process a test started (`tether serve`), killed and reaped when dropped, so that a
/// failing test leaves none behind.
pub struct Running(pub Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `command`, a `tether serve` on `--addr 127.0.0.1:0`, with stdin closed and
/// stdout piped, and reads its first line: the process, the rest of its stdout, and the
/// URL it serves on (`tether: listening on …`).
pub fn serve(command: &mut Command) -> (Running, BufReader<ChildStdout>, String) {
    let mut running = Running(command.stdin(Stdio::null()).stdout(Stdio::piped()).spawn().expect("start tether serve"));
    let mut stdout = BufReader::new(running.0.stdout.take().expect("stdout is piped"));
    let mut line = String::new();
    stdout.read_line(&mut line).expect("the listening line");
    let base = line.trim().strip_prefix("tether: listening on ").unwrap_or_else(|| panic!("unexpected: {line:?}"));
    let base = base.to_owned();
    (running, stdout, base)
}
