//! The HTTP service through `app(state)` and `oneshot`, on a real database (SQLite, and
//! PostgreSQL in `needs_postgres`) and a clock the tests move: health, sign-in, refresh rotation and reuse,
//! the `AuthUser` extractor's refusals, error bodies and the sign-in throttle. Forged,
//! expired and tampered tokens, disabled users, team scoping and password hashes are in
//! `security.rs`; the shared set-up is in `common/mod.rs`.

use std::sync::{Arc, PoisonError};

use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use serde_json::json;
use server::accounts::Role;
use server::auth::token::{AUDIENCE, ISSUER};
use server::listen::PeerAddr;
use server::{AppState, Clock, db};

mod common;

use common::*;

async fn healthz_answers_with_the_schema() {
    let server = Server::new();
    let request = Request::builder().uri("/healthz").body(Body::empty()).expect("a request");
    let (status, _, body) = server.send(request).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, json!({"status": "ok", "schema": db::SCHEMA}));
}

async fn login_gives_tokens_and_me_names_the_caller() {
    let server = Server::new();
    let (status, body) = server.login("alice", PASSWORD, "phone-1").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["expires_in"], 900);
    let refresh = text(&body["refresh_token"]);
    assert_eq!(refresh.len(), 64, "32 random bytes in hexadecimal");
    let access = text(&body["access_token"]);
    let claims = claims(&access);
    assert_eq!((claims.iss.as_str(), claims.aud.as_str()), (ISSUER, AUDIENCE));
    assert_eq!(claims.exp - claims.iat, 15 * 60);
    assert_eq!(claims.role, Role::Practitioner);
    assert_eq!(claims.teams, ["team-north", "team-south"]);
    assert_eq!(claims.device, "phone-1");

    let (status, me) = server.me_with(&access).await;
    assert_eq!(status, StatusCode::OK, "{me}");
    assert_eq!(
        me,
        json!({"user_id": claims.sub, "username": "alice", "role": "practitioner",
               "teams": ["team-north", "team-south"], "device_id": "phone-1"})
    );
}

async fn a_wrong_password_and_an_unknown_user_get_the_same_answer() {
    let server = Server::new();
    let (status, wrong_password) = server.login("alice", "not the password", "phone-1").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, unknown_user) = server.login("mallory", PASSWORD, "phone-1").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(wrong_password, unknown_user, "the answer must not tell whether the user exists");
    let (code, message) = error(&wrong_password);
    assert_eq!(code, "invalid_credentials");
    assert_eq!(message, "the username or the password is wrong");
    let (status, body) = server.login("alice", "", "phone-1").await;
    assert_eq!((status, &body), (StatusCode::UNAUTHORIZED, &wrong_password));
}

async fn refresh_rotates_and_the_old_token_then_fails() {
    let server = Server::new();
    let (_, first) = server.alice("phone-1").await;
    server.advance(60);
    let (status, body) = server.refresh(&first, "phone-1").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let second = text(&body["refresh_token"]);
    assert_ne!(second, first);
    assert_eq!(body["expires_in"], 900);
    let (status, me) = server.me_with(&text(&body["access_token"])).await;
    assert_eq!((status, &me["username"]), (StatusCode::OK, &json!("alice")));

    // Only a hash is kept: neither token is in the database as such.
    let stored: Vec<String> = server.rows("SELECT hash FROM refresh_tokens").into_iter().flatten().flatten().collect();
    assert_eq!(stored.len(), 2);
    let hex = |token: &str| token.bytes().map(|b| format!("{b:02x}")).collect::<String>();
    assert!(stored.iter().all(|h| h.len() == 64 && *h != hex(&first) && *h != hex(&second)), "{stored:?}");

    let (status, body) = server.refresh(&first, "phone-1").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(error(&body).0, "invalid_refresh_token");
}

async fn reusing_a_rotated_refresh_token_revokes_the_whole_family() {
    let server = Server::new();
    let (_, first) = server.alice("phone-1").await;
    let (_, body) = server.refresh(&first, "phone-1").await;
    let second = text(&body["refresh_token"]);
    let (_, body) = server.refresh(&second, "phone-1").await;
    let third = text(&body["refresh_token"]);
    let access = text(&body["access_token"]);
    // Alice's other sign-in, on another phone, is another family.
    let (other_access, other_refresh) = server.alice("phone-2").await;

    // Someone replays the first token: the whole family is revoked.
    let (status, _) = server.refresh(&first, "phone-1").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, body) = server.refresh(&third, "phone-1").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "the newest token of the family must fail too");
    assert_eq!(error(&body).0, "invalid_refresh_token");
    let (status, body) = server.me_with(&access).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "the family's access tokens stop too");
    assert_eq!(error(&body).0, "unauthenticated");

    let (status, _) = server.me_with(&other_access).await;
    assert_eq!(status, StatusCode::OK, "another family is untouched");
    let (status, _) = server.refresh(&other_refresh, "phone-2").await;
    assert_eq!(status, StatusCode::OK);
}

async fn refresh_from_another_device_is_refused() {
    let server = Server::new();
    let (_, refresh) = server.alice("phone-1").await;
    let (status, body) = server.refresh(&refresh, "phone-2").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(error(&body).0, "invalid_refresh_token");
    // A token that has left its device is treated as stolen: its family is revoked.
    let (status, _) = server.refresh(&refresh, "phone-1").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

async fn refresh_tokens_expire_after_thirty_days_unused() {
    let server = Server::new();
    let (_, refresh) = server.alice("phone-1").await;
    server.advance(30 * 24 * 3600);
    let (status, _) = server.refresh(&refresh, "phone-1").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) = server.refresh("not a token", "phone-1").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

async fn me_needs_a_bearer_token() {
    let server = Server::new();
    let (status, headers, body) = server.me(None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(headers.get(header::WWW_AUTHENTICATE).map(|v| v.as_bytes()), Some(&b"Bearer"[..]));
    let (code, message) = error(&body);
    assert_eq!(code, "unauthenticated");
    assert!(message.contains("Authorization: Bearer"), "{message}");
    let (status, _, _) = server.me(Some("Basic YWxpY2U6cHc=")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

async fn me_refuses_a_garbage_token() {
    let server = Server::new();
    for garbage in ["garbage", "a.b.c", "eyJhbGciOiJIUzI1NiJ9.e30.", ""] {
        let (status, body) = server.me_with(garbage).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{garbage:?}");
        assert_eq!(error(&body).0, "unauthenticated");
    }
}

async fn a_deleted_users_tokens_stop_working() {
    let server = Server::new();
    let (access, refresh) = server.alice("phone-1").await;
    server.db(|conn| conn.inspect_execute("DELETE FROM users WHERE username = 'alice'").expect("delete"));
    assert_eq!(server.me_with(&access).await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(server.refresh(&refresh, "phone-1").await.0, StatusCode::UNAUTHORIZED);
}

async fn repeated_failures_lock_a_username_for_longer_each_time() {
    let server = Server::new();
    for _ in 0..4 {
        assert_eq!(server.login("alice", "wrong", "phone-1").await.0, StatusCode::UNAUTHORIZED);
    }
    // The fifth failure locks alice out for 30 seconds, even with the right password.
    assert_eq!(server.login("alice", "wrong", "phone-1").await.0, StatusCode::UNAUTHORIZED);
    let request = Request::builder()
        .method(Method::POST)
        .uri("/v1/auth/login")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(json!({"username": "alice", "password": PASSWORD, "device_id": "phone-1"}).to_string()))
        .expect("a request");
    let (status, headers, body) = server.send(request).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(headers.get(header::RETRY_AFTER).map(|v| v.as_bytes()), Some(&b"30"[..]));
    assert_eq!(error(&body).0, "too_many_attempts");

    server.advance(30);
    // One more failure doubles the lockout.
    assert_eq!(server.login("alice", "wrong", "phone-1").await.0, StatusCode::UNAUTHORIZED);
    server.advance(59);
    assert_eq!(server.login("alice", PASSWORD, "phone-1").await.0, StatusCode::TOO_MANY_REQUESTS);
    server.advance(1);
    assert_eq!(server.login("alice", PASSWORD, "phone-1").await.0, StatusCode::OK);
    // Success clears the count.
    assert_eq!(server.login("alice", "wrong", "phone-1").await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(server.login("alice", PASSWORD, "phone-1").await.0, StatusCode::OK);

    // An unknown username is throttled exactly the same, so the lockout tells nothing.
    for _ in 0..5 {
        assert_eq!(server.login("nobody", "wrong", "phone-1").await.0, StatusCode::UNAUTHORIZED);
    }
    assert_eq!(server.login("nobody", "wrong", "phone-1").await.0, StatusCode::TOO_MANY_REQUESTS);
}

/// Signs in from the client address `from` (as the accept loop marks each request),
/// with extra headers.
async fn login_from(
    server: &Server,
    from: &str,
    username: &str,
    password: &str,
    headers: &[(&str, &str)],
) -> (StatusCode, serde_json::Value) {
    let mut request = Request::builder()
        .method(Method::POST)
        .uri("/v1/auth/login")
        .header(header::CONTENT_TYPE, "application/json")
        .extension(PeerAddr(std::net::SocketAddr::new(from.parse().expect("an address"), 50000)));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let body = json!({"username": username, "password": password, "device_id": "phone-1"}).to_string();
    let (status, _, body) = server.send(request.body(Body::from(body)).expect("a request")).await;
    (status, body)
}

async fn one_client_cannot_lock_a_user_out_everywhere() {
    let server = Server::new();
    // Someone at 203.0.113.9 guesses alice's password until locked out.
    for _ in 0..server::auth::store::FREE_FAILURES {
        assert_eq!(login_from(&server, "203.0.113.9", "alice", "guess", &[]).await.0, StatusCode::UNAUTHORIZED);
    }
    let (status, body) = login_from(&server, "203.0.113.9", "alice", PASSWORD, &[]).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert!(error(&body).1.contains("for this username from this address"), "{body}");
    // alice, from where she is, signs in; and from IPv6, the same /64 is one client.
    assert_eq!(login_from(&server, "192.0.2.44", "alice", PASSWORD, &[]).await.0, StatusCode::OK);
    for _ in 0..server::auth::store::FREE_FAILURES {
        login_from(&server, "2001:db8:5:6::1", "cai", "guess", &[]).await;
    }
    assert_eq!(login_from(&server, "2001:db8:5:6::99", "cai", PASSWORD, &[]).await.0, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(login_from(&server, "2001:db8:5:7::1", "cai", PASSWORD, &[]).await.0, StatusCode::OK);
}

async fn one_password_cannot_be_sprayed_across_usernames() {
    let server = Server::new();
    // One password tried against 60 usernames (most of which do not exist) from one
    // address: the address is stopped after its allowance, whatever the names.
    let mut refused_at = None;
    for i in 0..60 {
        let (status, body) = login_from(&server, "198.51.100.23", &format!("user{i}"), "Winter2026!", &[]).await;
        if status == StatusCode::TOO_MANY_REQUESTS {
            assert!(error(&body).1.contains("from this address"), "{body}");
            refused_at = Some(i);
            break;
        }
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    }
    assert_eq!(refused_at, Some(server::auth::store::CLIENT_FREE_FAILURES), "stopped after the allowance");
    // Names no user can have count too, and a right password does not get through.
    assert_eq!(login_from(&server, "198.51.100.23", "alice", PASSWORD, &[]).await.0, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(login_from(&server, "198.51.100.23", "not a name!", "x", &[]).await.0, StatusCode::TOO_MANY_REQUESTS);
    // Another client is unaffected; after the window, the address may try again.
    assert_eq!(login_from(&server, "198.51.100.24", "alice", PASSWORD, &[]).await.0, StatusCode::OK);
    server.advance(server::auth::store::CLIENT_WINDOW_SECS);
    assert_eq!(login_from(&server, "198.51.100.23", "alice", PASSWORD, &[]).await.0, StatusCode::OK);
}

async fn x_forwarded_for_counts_only_from_a_trusted_proxy() {
    let mut server = Server::new();
    // Not trusted: a client cannot dodge its throttle by naming another address.
    for i in 0..server::auth::store::FREE_FAILURES {
        let forged = format!("10.9.9.{i}");
        login_from(&server, "203.0.113.7", "alice", "guess", &[("x-forwarded-for", &forged)]).await;
    }
    let (status, _) = login_from(&server, "203.0.113.7", "alice", PASSWORD, &[("x-forwarded-for", "10.1.1.1")]).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "X-Forwarded-For from a client is ignored");

    // Behind a trusted proxy at 10.0.0.2, each client is the hop the proxy saw.
    let mut state = server.state.clone();
    state.options = Arc::new(server::config::Options {
        trusted_proxies: vec!["10.0.0.2".parse().expect("an address")],
        ..Default::default()
    });
    server.app = server::app(state);
    for _ in 0..server::auth::store::FREE_FAILURES {
        login_from(&server, "10.0.0.2", "cai", "guess", &[("x-forwarded-for", "1.2.3.4, 198.51.100.50")]).await;
    }
    let from = |client: &'static str| [("x-forwarded-for", client)];
    assert_eq!(
        login_from(&server, "10.0.0.2", "cai", PASSWORD, &from("198.51.100.50")).await.0,
        StatusCode::TOO_MANY_REQUESTS
    );
    assert_eq!(login_from(&server, "10.0.0.2", "cai", PASSWORD, &from("198.51.100.51")).await.0, StatusCode::OK);
}

async fn bad_bodies_get_the_error_shape_naming_the_problem() {
    let server = Server::new();
    let (status, body) = server.post_raw("/v1/auth/login", Some("application/json"), "{\"username\": ").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(error(&body).0, "malformed_json");

    let (status, body) = server.post_raw("/v1/auth/login", Some("application/json"), "not json").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (code, message) = error(&body);
    assert_eq!(code, "malformed_json");
    assert!(message.contains("line 1 column"), "{message}");

    let (status, body) = server.post("/v1/auth/login", json!({"username": "alice", "password": PASSWORD})).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(error(&body), ("invalid_body".into(), "missing field `device_id`".into()));

    let (status, body) = server
        .post("/v1/auth/login", json!({"username": "NHS-943-476-5919", "password": 943_476, "device_id": "p"}))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let (code, message) = error(&body);
    assert_eq!(code, "invalid_body");
    assert!(message.starts_with("`password`:") && message.contains("expected a string"), "{message}");
    assert!(!body.to_string().contains("943"), "an error must not repeat the input: {body}");

    let (status, body) =
        server.post("/v1/auth/login", json!({"username": "a", "password": "b", "device_id": ""})).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(error(&body).1.starts_with("`device_id`: must not be empty"), "{body}");

    let (status, body) =
        server.post("/v1/auth/refresh", json!({"refresh_token": "x", "device_id": "p", "extra": 1})).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(error(&body).1.contains("unknown field `extra`"), "{body}");

    let (status, body) = server.post("/v1/auth/refresh", json!(["refresh_token"])).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(error(&body).0, "invalid_body");

    let (status, body) = server.post_raw("/v1/auth/login", None, json!({"username": "a"}).to_string()).await;
    assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert_eq!(error(&body).0, "unsupported_media_type");

    let huge = json!({"username": "a".repeat(server::MAX_BODY_BYTES), "password": "b", "device_id": "p"});
    let (status, body) = server.post("/v1/auth/login", huge).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(error(&body).0, "payload_too_large");
}

async fn unknown_routes_and_methods_get_the_error_shape() {
    let server = Server::new();
    let (status, _, body) = server.send(Request::builder().uri("/v1/nothing").body(Body::empty()).expect("req")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(error(&body).0, "not_found");
    let request = Request::builder().method(Method::GET).uri("/v1/auth/login").body(Body::empty()).expect("req");
    let (status, _, body) = server.send(request).await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(error(&body).0, "method_not_allowed");
}

async fn the_signing_secret_is_kept_across_restarts() {
    let server = Server::new();
    let (access, _) = server.alice("phone-1").await;
    let now = Arc::clone(&server.now);
    let clock = Clock::from_fn(move || *now.lock().unwrap_or_else(PoisonError::into_inner));
    let restarted = AppState::new(server.dir.open(), server.dir.jwt_secret().as_ref(), clock.clone()).expect("state");
    let claims = restarted.keys.verify(&access, clock.unix()).expect("a token from before the restart");
    assert_eq!(claims.device, "phone-1");

    // Another secret from the environment replaces the key file's (or the one given
    // before, on PostgreSQL), and must be long enough.
    let given = server::Secret::from("a secret from the environment, 32+ bytes".to_string());
    let other = AppState::new(server.dir.open(), Some(&given), clock.clone()).expect("state");
    assert!(other.keys.verify(&access, clock.unix()).is_err());
    let short = server::Secret::from("short".to_string());
    let refused = AppState::new(server.dir.open(), Some(&short), clock).expect_err("too short");
    assert!(!refused.to_string().contains("short"), "the error must not print the secret");
}

#[tokio::test]
async fn the_database_refuses_a_newer_schema() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let path = dir.path().join("tether.db");
    let conn = db::open(&path).expect("create");
    let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0)).expect("version");
    assert_eq!(version, db::SCHEMA);
    let mode: String = conn.query_row("PRAGMA journal_mode", [], |r| r.get(0)).expect("mode");
    assert_eq!(mode, "wal");
    let synchronous: i64 = conn.query_row("PRAGMA synchronous", [], |r| r.get(0)).expect("synchronous");
    assert_eq!(synchronous, 2, "FULL");
    conn.pragma_update(None, "user_version", db::SCHEMA + 1).expect("bump");
    drop(conn);
    let error = db::open(&path).expect_err("a newer schema");
    assert!(error.to_string().contains("newer"), "{error}");
}

common::backends!(
    healthz_answers_with_the_schema,
    login_gives_tokens_and_me_names_the_caller,
    a_wrong_password_and_an_unknown_user_get_the_same_answer,
    refresh_rotates_and_the_old_token_then_fails,
    reusing_a_rotated_refresh_token_revokes_the_whole_family,
    refresh_from_another_device_is_refused,
    refresh_tokens_expire_after_thirty_days_unused,
    me_needs_a_bearer_token,
    me_refuses_a_garbage_token,
    a_deleted_users_tokens_stop_working,
    repeated_failures_lock_a_username_for_longer_each_time,
    bad_bodies_get_the_error_shape_naming_the_problem,
    unknown_routes_and_methods_get_the_error_shape,
    the_signing_secret_is_kept_across_restarts,
    one_client_cannot_lock_a_user_out_everywhere,
    one_password_cannot_be_sprayed_across_usernames,
    x_forwarded_for_counts_only_from_a_trusted_proxy,
);
