//! The server's security properties, through `app(state)` and `oneshot` (issue 7):
//! forged, expired, not-yet-valid and tampered access tokens are refused with 401; a
//! disabled user's next request fails; every `/v1` route answers another team's episode
//! exactly as one that does not exist (404); stored password hashes are argon2id with at
//! least OWASP's parameters.
//!
//! Elsewhere: a reused refresh token revoking its whole family is
//! `reusing_a_rotated_refresh_token_revokes_the_whole_family` in `http.rs` (and end to end
//! in `tests/tests/faults.rs`); garbage and missing bearer tokens are in `http.rs` too.

mod common;

use automerge::ActorId;
use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use common::*;
use episode::document::{EpisodeDoc, Opening};
use episode::sync::{self as protocol, Body as SyncBody, Document};
use episode::{Pathway, PatientRef};
use jiff::{SignedDuration, Timestamp};
use serde_json::{Value, json};
use server::accounts;
use server::auth::token::{ACCESS_TTL_SECS, CLOCK_LEEWAY_SECS, Claims, Keys};
use uuid::Uuid;

/// A token with `claims`' payload under a hand-made header and no signature.
fn unsigned(header: &Value, claims: &Claims) -> String {
    let payload = serde_json::to_vec(claims).expect("claims as JSON");
    format!("{}.{}.", base64url(header.to_string().as_bytes()), base64url(&payload))
}

/// `token` with its payload replaced by `claims` and its genuine signature kept.
fn with_payload(token: &str, claims: &Value) -> String {
    let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
    parts[1] = base64url(claims.to_string().as_bytes());
    parts.join(".")
}

async fn forged_and_tampered_access_tokens_are_refused_with_401() {
    let server = Server::new();
    let (access, _) = server.alice("phone-1").await;
    let genuine = claims(&access);
    let keys = server.keys().await;
    let now = genuine.iat;
    // The machinery is right: the genuine claims, signed again with the server's key, pass.
    assert_eq!(server.me_with(&keys.sign(&genuine).expect("sign")).await.0, StatusCode::OK);

    let other_key = Keys::from_secret(b"another key that is at least 32 bytes long");
    let mut cases: Vec<(&str, String, &str)> = Vec::new();
    // `none` is no algorithm the library knows at all: such a header does not even read.
    for (header, says) in [
        (json!({"alg": "none", "typ": "JWT"}), "not valid"),
        (json!({"alg": "None"}), "not valid"),
        (json!({"alg": "HS512", "typ": "JWT"}), "algorithm"),
    ] {
        cases.push(("an unsigned token", unsigned(&header, &genuine), says));
    }
    // `alg: none` with the genuine signature left on.
    let none_header = base64url(json!({"alg": "none", "typ": "JWT"}).to_string().as_bytes());
    let mut parts: Vec<&str> = access.split('.').collect();
    parts[0] = &none_header;
    cases.push(("alg none, signature kept", parts.join("."), "not valid"));
    cases.push(("another key", other_key.sign(&genuine).expect("sign"), "signature"));
    cases.extend([
        ("another audience", keys.sign(&Claims { aud: "another-api".into(), ..genuine.clone() }).expect("s"), "issued"),
        ("another issuer", keys.sign(&Claims { iss: "someone-else".into(), ..genuine.clone() }).expect("s"), "issued"),
        (
            "nbf in the future",
            keys.sign(&Claims { nbf: now + CLOCK_LEEWAY_SECS + 1, ..genuine.clone() }).expect("s"),
            "not valid yet",
        ),
        (
            "iat in the future",
            keys.sign(&Claims { iat: now + 3600, nbf: now, ..genuine.clone() }).expect("s"),
            "not valid yet",
        ),
        ("already expired", keys.sign(&Claims { exp: now, ..genuine.clone() }).expect("s"), "expired"),
    ]);
    // Tampered payloads under the genuine signature: a role raised, a team added, a
    // lifetime stretched.
    let mut tampered = serde_json::to_value(&genuine).expect("claims as JSON");
    tampered["role"] = json!("admin");
    cases.push(("role raised", with_payload(&access, &tampered), "signature"));
    let mut tampered = serde_json::to_value(&genuine).expect("claims as JSON");
    tampered["teams"] = json!(["team-north", "team-south", "team-west"]);
    cases.push(("team added", with_payload(&access, &tampered), "signature"));
    let mut tampered = serde_json::to_value(&genuine).expect("claims as JSON");
    tampered["exp"] = json!(now + 365 * 24 * 3600);
    cases.push(("lifetime stretched", with_payload(&access, &tampered), "signature"));
    // A token without `nbf`, correctly signed, lacks a required claim.
    let mut without_nbf = serde_json::to_value(&genuine).expect("claims as JSON");
    without_nbf.as_object_mut().expect("an object").remove("nbf");
    let encoding = jsonwebtoken::EncodingKey::from_secret(&server.secret());
    let header = jsonwebtoken::Header { kid: Some(keys.kid().to_owned()), ..Default::default() };
    let no_nbf = jsonwebtoken::encode(&header, &without_nbf, &encoding).expect("sign");
    cases.push(("no nbf", no_nbf, "not valid"));
    // The right key without its `kid`: a token names the key it was signed with.
    let no_kid = jsonwebtoken::encode(&jsonwebtoken::Header::default(), &genuine, &encoding).expect("sign");
    cases.push(("no kid", no_kid, "not by a key this server holds"));
    // Signed with the server's own key, but for longer than the server gives: only
    // someone holding a key makes one, and it would outlive a revocation's reach.
    for (what, claims) in [
        ("a day's lifetime", Claims { exp: now + 24 * 3600, ..genuine.clone() }),
        ("iat back-dated", Claims { iat: now - 3600, nbf: now - 3600, exp: now + 60, ..genuine.clone() }),
        ("nbf back-dated", Claims { nbf: now - ACCESS_TTL_SECS, exp: now + 60, ..genuine.clone() }),
    ] {
        cases.push((what, keys.sign(&claims).expect("sign"), "lifetime is longer"));
    }

    let mut wrong = Vec::new();
    for (what, token, says) in &cases {
        let (status, headers, body) = server.me(Some(&format!("Bearer {token}"))).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{what}: {body}");
        assert_eq!(headers.get(header::WWW_AUTHENTICATE).map(|v| v.as_bytes()), Some(&b"Bearer"[..]), "{what}");
        let (code, message) = error(&body);
        assert_eq!(code, "unauthenticated", "{what}");
        if !message.contains(says) {
            wrong.push(format!("{what}: {message}"));
        }
    }
    assert!(wrong.is_empty(), "refused for another reason than expected: {wrong:#?}");
    // The genuine token still works: nothing above revoked anything.
    assert_eq!(server.me_with(&access).await.0, StatusCode::OK);
}

async fn a_token_is_valid_from_its_nbf_within_the_leeway_and_until_its_exp() {
    let server = Server::new();
    let (access, _) = server.alice("phone-1").await;
    let genuine = claims(&access);
    let keys = server.keys().await;
    let now = genuine.iat;

    let early = keys.sign(&Claims { nbf: now + 120, iat: now + 120, ..genuine.clone() }).expect("sign");
    let (status, body) = server.me_with(&early).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(error(&body).1.contains("not valid yet"), "{body}");
    // Another replica's clock may run a little fast: up to the leeway is accepted.
    let slightly = keys.sign(&Claims { nbf: now + CLOCK_LEEWAY_SECS, ..genuine.clone() }).expect("sign");
    assert_eq!(server.me_with(&slightly).await.0, StatusCode::OK);
    server.advance(120 - CLOCK_LEEWAY_SECS);
    assert_eq!(server.me_with(&early).await.0, StatusCode::OK, "valid once the clock reaches it");

    // Expiry has no leeway.
    let (access, _) = server.alice("phone-2").await;
    server.advance(15 * 60 - 1);
    assert_eq!(server.me_with(&access).await.0, StatusCode::OK);
    server.advance(1);
    let (status, body) = server.me_with(&access).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(error(&body).1.contains("expired"), "{body}");
}

async fn a_disabled_users_next_request_fails() {
    let server = Server::new();
    let (access, refresh) = server.alice("phone-1").await;
    assert_eq!(server.me_with(&access).await.0, StatusCode::OK);
    let set_disabled = |disabled: bool| {
        server.state.db.call(move |conn| {
            let mut tx = conn.transaction()?;
            accounts::set_disabled(&mut *tx, &"alice".parse().expect("name"), disabled, 0)
                .map_err(server::AppError::internal)?;
            tx.commit()?;
            Ok(())
        })
    };
    // As `tether user disable --username alice` does.
    set_disabled(true).await.expect("disable alice");
    let (status, body) = server.me_with(&access).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "the unexpired access token stops at once");
    assert_eq!(error(&body).0, "unauthenticated");
    let (status, body) = server.refresh(&refresh, "phone-1").await;
    assert_eq!((status, error(&body).0.as_str()), (StatusCode::UNAUTHORIZED, "invalid_refresh_token"));
    let (status, body) = server.login("alice", PASSWORD, "phone-1").await;
    assert_eq!((status, error(&body).0.as_str()), (StatusCode::UNAUTHORIZED, "invalid_credentials"));

    // Enabled again, alice signs in afresh; the access and refresh tokens of before stay
    // dead for good: disabling ended their session, and enabling revives none.
    set_disabled(false).await.expect("enable alice");
    assert_eq!(server.me_with(&access).await.0, StatusCode::UNAUTHORIZED, "the old access token stays dead");
    let (status, body) = server.refresh(&refresh, "phone-1").await;
    assert_eq!((status, error(&body).0.as_str()), (StatusCode::UNAUTHORIZED, "invalid_refresh_token"));
    let (status, body) = server.login("alice", PASSWORD, "phone-1").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let fresh = body["access_token"].as_str().expect("a token").to_owned();
    assert_eq!(server.me_with(&fresh).await.0, StatusCode::OK);
    let ended = server.rows("SELECT revoked_because FROM sessions WHERE revoked_at IS NOT NULL");
    assert_eq!(ended, [[Some("user_disabled".to_owned())]]);
}

async fn stored_password_hashes_are_argon2id_with_at_least_owasp_parameters() {
    let server = Server::new();
    let hashes: Vec<(String, String)> = server
        .rows("SELECT username, password_hash FROM users ORDER BY username")
        .into_iter()
        .map(|row| (row[0].clone().expect("a name"), row[1].clone().expect("a hash")))
        .collect();
    assert_eq!(hashes.len(), 3);
    for (user, hash) in hashes {
        // PHC: $argon2id$v=19$m=19456,t=2,p=1$<salt>$<hash>
        let fields: Vec<&str> = hash.split('$').collect();
        assert_eq!(fields.len(), 6, "{user}: not a PHC string");
        assert_eq!((fields[0], fields[1], fields[2]), ("", "argon2id", "v=19"), "{user}");
        let params: std::collections::BTreeMap<&str, u32> = fields[3]
            .split(',')
            .map(|kv| {
                let (k, v) = kv.split_once('=').expect("key=value");
                (k, v.parse().expect("a number"))
            })
            .collect();
        assert!(params["m"] >= 19_456, "{user}: memory {} KiB", params["m"]);
        assert!(params["t"] >= 2, "{user}: {} passes", params["t"]);
        assert!(params["p"] >= 1, "{user}: {} lanes", params["p"]);
        assert!(fields[4].len() >= 22, "{user}: a salt of at least 16 bytes");
        assert!(fields[5].len() >= 43, "{user}: a hash of at least 32 bytes");
        assert!(!hash.contains(PASSWORD));
    }
}

/// A request body: its content type and its bytes.
type Payload = (&'static str, Vec<u8>);

/// A request of `method` to `path` with a body.
fn request(method: &Method, path: &str, token: &str, body: &Payload) -> Request<Body> {
    Request::builder()
        .method(method.clone())
        .uri(path)
        .header(header::AUTHORIZATION, format!("Bearer {token}"))
        .header(header::CONTENT_TYPE, body.0)
        .body(Body::from(body.1.clone()))
        .expect("a request")
}

/// Every `/v1` route that names an episode, for episode `id`, whose document (as another
/// team's device might hold a copy) is `doc`: method, path, and body.
///
/// A new route that takes an episode belongs here. (GET routes ignore the body.)
fn episode_routes(id: episode::EpisodeId, doc: &mut EpisodeDoc) -> Vec<(Method, String, Payload)> {
    let sync = |body: SyncBody| {
        let request = protocol::Request {
            protocol: protocol::PROTOCOL,
            cursor: 0,
            device_time_ms: 0,
            documents: vec![Document { episode: id, body }],
        };
        (protocol::CONTENT_TYPE, request.encode())
    };
    let message = doc.generate_sync_message(&mut automerge::sync::State::new()).expect("a sync message");
    let json = |value: Value| ("application/json", value.to_string().into_bytes());
    vec![
        (Method::POST, "/v1/sync".into(), sync(SyncBody::Message(message))),
        (Method::POST, "/v1/sync".into(), sync(SyncBody::Whole(doc.save()))),
        (Method::POST, format!("/v1/episodes/{id}/transfer"), json(json!({"team": "team-south"}))),
        (Method::GET, format!("/v1/episodes/{id}"), json(Value::Null)),
        (Method::GET, format!("/v1/episodes/{id}/timeline"), json(Value::Null)),
        (Method::GET, format!("/v1/episodes/{id}/fhir"), json(Value::Null)),
        (Method::POST, format!("/v1/episodes/{id}/events"), json(json!({"kind": "appointment_attended"}))),
        (Method::POST, format!("/v1/episodes/{id}/facts"), json(json!({"field": "risk", "value": "high"}))),
        (Method::PUT, format!("/v1/episodes/{id}/plan"), json(json!({"text": "a plan"}))),
        (Method::GET, format!("/v1/audit?episode={id}"), json(Value::Null)),
    ]
}

/// The team and sequence number of every episode: what a refused request must not change.
async fn episodes(server: &Server) -> Vec<(String, String, i64)> {
    server
        .rows("SELECT id, team, seq FROM episodes ORDER BY id")
        .into_iter()
        .map(|row| (row[0].clone().expect("an id"), row[1].clone().expect("a team"), number(&[vec![row[2].clone()]])))
        .collect()
}

async fn every_episode_route_answers_another_teams_episode_as_not_found() {
    let server = Server::new();
    // Alice (north and south) opens an episode in north, and the server stores it.
    let now: Timestamp = "2026-03-02T09:00:00Z".parse().expect("a time");
    let id = episode::EpisodeId::from_uuid(Uuid::now_v7());
    let opening = Opening {
        id,
        patient_ref: PatientRef::new("RX-SEC-1").expect("a patient reference"),
        team: "team-north".into(),
        opened_at: now - SignedDuration::from_hours(1),
        opened_by: "alice".into(),
        pathway: Pathway::RoutineReferral,
        facts: Vec::new(),
        plan: String::new(),
    };
    let mut doc = EpisodeDoc::open(&opening, ActorId::from(vec![1; 16])).expect("open an episode");
    let alice = server.access("alice", "phone-alice").await;
    let stored = protocol::Request {
        protocol: protocol::PROTOCOL,
        cursor: 0,
        device_time_ms: now.as_millisecond(),
        documents: vec![Document { episode: id, body: SyncBody::Whole(doc.save()) }],
    };
    let (status, _, bytes) =
        server.send_raw(request(&Method::POST, "/v1/sync", &alice, &(protocol::CONTENT_TYPE, stored.encode()))).await;
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&bytes));
    let before = episodes(&server).await;
    assert_eq!(before.len(), 1);

    // South's team manager (whose role may use every route) and a practitioner hold a
    // copy of north's episode. The answer is the one an episode that exists nowhere gets
    // (`no such episode`), unless the caller's role is refused before any episode is
    // looked up, which tells nothing either.
    let mut copy = EpisodeDoc::load(&doc.save(), ActorId::from(vec![2; 16])).expect("a copy");
    let unknown = episode::EpisodeId::from_uuid(Uuid::now_v7());
    let not_found = json!({"error": {"code": "not_found", "message": format!("no such episode: {id}"), "episode": id}});
    for (username, role_may_use_all) in [("sol", true), ("cai", false)] {
        let token = server.access(username, &format!("phone-{username}")).await;
        for (method, path, body) in episode_routes(id, &mut copy) {
            let what = format!("{username}: {method} {path}");
            if path == "/v1/sync" {
                // A sync is answered, with the episode refused as one that does not exist.
                let (status, _, bytes) = server.send_raw(request(&method, &path, &token, &body)).await;
                assert_eq!(status, StatusCode::OK, "{what}");
                let response = protocol::Response::decode(&bytes).expect("a sync response");
                let refused = protocol::Refused { episode: id, reason: protocol::Refusal::NotFound };
                assert_eq!(response.refused, [refused], "{what}");
                assert!(response.documents.is_empty() && response.actions.is_empty(), "{what}");
                continue;
            }
            let (status, _, answer) = server.send(request(&method, &path, &token, &body)).await;
            if status == StatusCode::FORBIDDEN && !role_may_use_all {
                let unknown_path = path.replace(&id.to_string(), &unknown.to_string());
                let (_, _, for_unknown) = server.send(request(&method, &unknown_path, &token, &body)).await;
                assert_eq!(answer, for_unknown, "{what}");
                continue;
            }
            assert_eq!(status, StatusCode::NOT_FOUND, "{what}: {answer}");
            assert_eq!(answer, not_found, "{what}");
        }
    }
    assert_eq!(episodes(&server).await, before, "nothing was stored or moved");
}

common::backends!(
    forged_and_tampered_access_tokens_are_refused_with_401,
    a_token_is_valid_from_its_nbf_within_the_leeway_and_until_its_exp,
    a_disabled_users_next_request_fails,
    stored_password_hashes_are_argon2id_with_at_least_owasp_parameters,
    every_episode_route_answers_another_teams_episode_as_not_found,
);
