//! What the server's integration tests share: a server on a fresh database in a temporary
//! directory, called through `app(state)` and `oneshot` with no socket, and a clock the
//! tests move; and helpers for JSON bodies, error bodies and access tokens.
//!
//! Each test binary uses only some of it.
#![allow(dead_code, unreachable_pub)]

use std::sync::{Arc, Mutex, PoisonError};

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, StatusCode, header};
use jiff::{SignedDuration, Timestamp};
use serde_json::{Value, json};
use server::accounts::{self, Password, Role, TeamId, Username};
use server::auth::token::{Claims, Keys};
use server::{AppState, Clock, app, db};
use tempfile::TempDir;
use tower::ServiceExt;

pub const PASSWORD: &str = "correct horse battery staple";

/// A server on a fresh database with teams `team-north` and `team-south`; `alice`, a
/// practitioner in both; `cai`, a practitioner in south; `sol`, south's team manager.
pub struct Server {
    pub app: Router,
    pub state: AppState,
    pub now: Arc<Mutex<Timestamp>>,
    pub dir: TempDir,
}

impl Server {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let mut conn = db::open(&dir.path().join("tether.db")).expect("open the database");
        let start: Timestamp = "2026-03-02T09:00:00Z".parse().expect("a time");
        let tx = conn.transaction().expect("a transaction");
        for (id, name) in [("team-north", "North"), ("team-south", "South")] {
            accounts::add_team(&tx, &id.parse().expect("a team id"), name, start).expect("add a team");
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
            accounts::add_user(&tx, &username, &hash, role, &teams, start).expect("add a user");
        }
        tx.commit().expect("commit");
        let now = Arc::new(Mutex::new(start));
        let clock_now = Arc::clone(&now);
        let clock = Clock::from_fn(move || *clock_now.lock().unwrap_or_else(PoisonError::into_inner));
        let state = AppState::new(conn, None, clock).expect("the state");
        Self { app: app(state.clone()), state, now, dir }
    }

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

    /// The signing secret, read from the key file beside the database.
    pub fn secret(&self) -> Vec<u8> {
        let file = server::auth::keys::key_file_for(&self.dir.path().join("tether.db"));
        server::auth::keys::read(&file).expect("the key file").swap_remove(0)
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
    pub dir: TempDir,
}

impl Demo {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let mut conn = db::open(&dir.path().join("tether.db")).expect("open the database");
        let start: Timestamp = DEMO_START.parse().expect("a time");
        let accounts =
            server::demo::seed(&mut conn, start).expect("seed").new_accounts().expect("a new database is seeded");
        let passwords = accounts.into_iter().map(|a| (a.username, a.password)).collect();
        let now = Arc::new(Mutex::new(start));
        let clock_now = Arc::clone(&now);
        let clock = Clock::from_fn(move || *clock_now.lock().unwrap_or_else(PoisonError::into_inner));
        let state = AppState::new(conn, None, clock).expect("the state");
        Self { app: app(state.clone()), state, now, passwords, dir }
    }

    pub fn advance(&self, seconds: i64) {
        let mut now = self.now.lock().unwrap_or_else(PoisonError::into_inner);
        *now = now.checked_add(SignedDuration::from_secs(seconds)).expect("a time");
    }
}
