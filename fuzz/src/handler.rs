//! The whole `POST /v1/sync` through `server::app`, on a database in a temporary
//! directory, as a signed-in practitioner whose team holds one episode: whatever the
//! body, the answer is never a 5xx, and a 200 is a sync response.
//!
//! The first byte of an input chooses what the rest is: the raw body, or, wrapped in a
//! well-formed request, a sync message for the stored episode, a whole copy of it, or a
//! whole document for a new episode. Wrapping lets the fuzzer reach the merge checks
//! instead of spending its time on postcard's framing.
//!
//! Also compiled into `server/tests/fuzz_regressions.rs` (by path).

use std::sync::OnceLock;

use axum::body::Body;
use axum::http::{Method, Request, header};
use episode::sync::{self as protocol, Body as SyncBody, Document};
use server::accounts::{self, Password, Role, TeamId, Username};
use server::{AppState, Clock};
use tower::ServiceExt;

use crate::checks::{NEW, STORED};

const PASSWORD: &str = "correct horse battery staple";

struct Harness {
    runtime: tokio::runtime::Runtime,
    app: axum::Router,
    token: String,
    _dir: tempfile::TempDir,
}

fn harness() -> &'static Harness {
    static HARNESS: OnceLock<Harness> = OnceLock::new();
    HARNESS.get_or_init(|| {
        // A memory-backed directory where there is one: fsync costs nothing there.
        let dir = match std::path::Path::new("/dev/shm").is_dir() {
            true => tempfile::tempdir_in("/dev/shm"),
            false => tempfile::tempdir(),
        }
        .expect("a temporary directory");
        let now: jiff::Timestamp = "2026-03-02T12:00:00Z".parse().expect("a time");
        let db = server::Db::open(&server::Target::path(dir.path().join("tether.db"))).expect("open the database");
        let hash = server::auth::password::hash(&Password::new(PASSWORD.into()).expect("a password")).expect("hash");
        db.call_blocking(|conn| {
            let mut tx = conn.transaction()?;
            let team: TeamId = "team-north".parse().expect("a team id");
            accounts::add_team(&mut *tx, &team, "North", now).expect("add a team");
            let username: Username = "u-fuzz".parse().expect("a username");
            accounts::add_user(&mut *tx, &username, &hash, Role::Practitioner, &[team], now).expect("add a user");
            tx.commit()
        })
        .expect("the accounts");
        // A clock that stands still: the token never expires, however long the run.
        let state = AppState::new(db, None, Clock::from_fn(move || now)).expect("the state");
        let app = server::app(state);
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime");
        let login = serde_json::json!({"username": "u-fuzz", "password": PASSWORD, "device_id": "phone-fuzz"});
        let token = runtime.block_on(async {
            let request = Request::builder()
                .method(Method::POST)
                .uri("/v1/auth/login")
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(login.to_string()))
                .expect("a request");
            let (status, body) = send(&app, request).await;
            assert!(status.is_success(), "sign in: {}", String::from_utf8_lossy(&body));
            let body: serde_json::Value = serde_json::from_slice(&body).expect("tokens");
            body["access_token"].as_str().expect("an access token").to_owned()
        });
        let harness = Harness { runtime, app, token, _dir: dir };
        let mut doc = crate::checks::fixture();
        let (status, body) = post_sync(&harness, wrap(STORED, SyncBody::Whole(doc.save())));
        assert!(status.is_success(), "store the episode: {}", String::from_utf8_lossy(&body));
        harness
    })
}

async fn send(app: &axum::Router, request: Request<Body>) -> (axum::http::StatusCode, Vec<u8>) {
    let response = app.clone().oneshot(request).await.expect("a response");
    let status = response.status();
    let body = axum::body::to_bytes(response.into_body(), usize::MAX).await.expect("the body");
    (status, body.to_vec())
}

fn post_sync(harness: &Harness, body: Vec<u8>) -> (axum::http::StatusCode, Vec<u8>) {
    let request = Request::builder()
        .method(Method::POST)
        .uri("/v1/sync")
        .header(header::AUTHORIZATION, format!("Bearer {}", harness.token))
        .header(header::CONTENT_TYPE, protocol::CONTENT_TYPE)
        .body(Body::from(body))
        .expect("a request");
    harness.runtime.block_on(send(&harness.app, request))
}

/// A well-formed request carrying one document.
pub fn wrap(episode: episode::EpisodeId, body: SyncBody) -> Vec<u8> {
    let request = protocol::Request {
        protocol: protocol::PROTOCOL,
        cursor: 0,
        device_time_ms: 0,
        documents: vec![Document { episode, body }],
    };
    request.encode()
}

/// The body an input stands for (see the module's comment).
pub fn body_of(data: &[u8]) -> Vec<u8> {
    let Some((&mode, rest)) = data.split_first() else { return Vec::new() };
    match mode % 4 {
        0 => rest.to_vec(),
        1 => wrap(STORED, SyncBody::Message(rest.to_vec())),
        2 => wrap(STORED, SyncBody::Whole(rest.to_vec())),
        _ => wrap(NEW, SyncBody::Whole(rest.to_vec())),
    }
}

pub fn sync_handler(data: &[u8]) {
    let harness = harness();
    let (status, body) = post_sync(harness, body_of(data));
    assert!(!status.is_server_error(), "{status}: {}", String::from_utf8_lossy(&body));
    if status.is_success() {
        protocol::Response::decode(&body).expect("a 200 is a sync response");
    } else {
        let error: serde_json::Value = serde_json::from_slice(&body).expect("an error is the JSON error body");
        assert!(error["error"]["code"].is_string(), "{error}");
    }
}
