//! Devices belong to their registration: a device id read off a record lets no one sign
//! in as that device, nor revoke it (issue 12, item 2); device ids are a safe set of
//! characters (item 9). Through `app(state)` on a real database, on both backends.

mod common;

use axum::http::StatusCode;
use common::{PASSWORD, Server, error, text};
use serde_json::{Value, json};
use server::accounts::{self, Role, TeamId, Username};

/// A key of the shape the core sends: 64 hexadecimal digits.
const KEY: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
const OTHER_KEY: &str = "fedcba9876543210fedcba9876543210fedcba9876543210fedcba9876543210";

/// The common server (alice in both teams, cai a practitioner in south, sol south's
/// manager) with ben, a practitioner in north, and mia, north's manager.
async fn server() -> Server {
    let server = Server::new();
    server
        .state
        .db
        .call(|conn| {
            let mut tx = conn.transaction()?;
            let hash = server::auth::password::hash(&accounts::Password::new(PASSWORD.into()).expect("a password"))
                .expect("hash");
            let north: TeamId = "team-north".parse().expect("a team id");
            for (name, role) in [("ben", Role::Practitioner), ("mia", Role::TeamManager)] {
                let username: Username = name.parse().expect("a username");
                let now = jiff::Timestamp::now();
                accounts::add_user(&mut *tx, &username, &hash, role, std::slice::from_ref(&north), now)
                    .expect("a user");
            }
            tx.commit()?;
            Ok(())
        })
        .await
        .expect("add ben and mia");
    server
}

async fn login(server: &Server, username: &str, device: &str, key: Option<&str>) -> (StatusCode, Value) {
    let mut body = json!({"username": username, "password": PASSWORD, "device_id": device});
    if let Some(key) = key {
        body["device_key"] = json!(key);
    }
    server.post("/v1/auth/login", body).await
}

async fn token(server: &Server, username: &str, device: &str, key: Option<&str>) -> String {
    let (status, body) = login(server, username, device, key).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    text(&body["access_token"])
}

async fn revoke(server: &Server, token: &str, device: &str) -> StatusCode {
    let request = axum::http::Request::builder()
        .method("POST")
        .uri(format!("/v1/devices/{device}/revoke"))
        .header("authorization", format!("Bearer {token}"))
        .body(axum::body::Body::empty())
        .expect("a request");
    server.send(request).await.0
}

async fn another_teams_manager_can_neither_sign_in_as_a_device_nor_revoke_it() {
    let server = server().await;
    // Ben's phone registers itself at his first sign-in, with its key.
    token(&server, "ben", "phone-ben", Some(KEY)).await;

    // Sol, south's manager, read the id off a transferred episode's timeline: he cannot
    // sign in under it, with no key or a guessed one, and nothing of his is kept.
    for key in [None, Some(OTHER_KEY)] {
        let (status, body) = login(&server, "sol", "phone-ben", key).await;
        assert_eq!((status, error(&body).0.as_str()), (StatusCode::FORBIDDEN, "device_taken"), "{body}");
    }
    let sessions = server.number("SELECT count(*) FROM sessions WHERE device_id = 'phone-ben'");
    assert_eq!(sessions, 1, "only ben's sign-in");

    // Nor revoke it from his own console: another team's device answers as an unknown one.
    let sol = token(&server, "sol", "console-sol", None).await;
    assert_eq!(revoke(&server, &sol, "phone-ben").await, StatusCode::NOT_FOUND);
    assert_eq!(revoke(&server, &sol, "no-such-phone").await, StatusCode::NOT_FOUND);
    // Ben's own manager can.
    let mia = token(&server, "mia", "console-mia", None).await;
    assert_eq!(revoke(&server, &mia, "phone-ben").await, StatusCode::NO_CONTENT);
    let (status, body) = login(&server, "ben", "phone-ben", Some(KEY)).await;
    assert_eq!((status, error(&body).0.as_str()), (StatusCode::FORBIDDEN, "device_revoked"), "{body}");
}

async fn a_device_with_a_key_takes_whoever_holds_it_and_no_one_else() {
    let server = server().await;
    token(&server, "ben", "tablet-1", Some(KEY)).await;
    // A shift change on the shared tablet: mia signs in on it, with its key.
    token(&server, "mia", "tablet-1", Some(KEY)).await;
    // Even a colleague cannot sign in under it without the key.
    let (status, body) = login(&server, "mia", "tablet-1", None).await;
    assert_eq!((status, error(&body).0.as_str()), (StatusCode::FORBIDDEN, "device_taken"), "{body}");
    // A wrong password says nothing about the device.
    let (status, body) =
        server.post("/v1/auth/login", json!({"username": "sol", "password": "wrong", "device_id": "tablet-1"})).await;
    assert_eq!((status, error(&body).0.as_str()), (StatusCode::UNAUTHORIZED, "invalid_credentials"), "{body}");
}

async fn a_device_registered_without_a_key_takes_only_its_teams_users_until_it_has_one() {
    let server = server().await;
    // An older client (or a console) signs in with no key.
    token(&server, "mia", "desk-1", None).await;
    token(&server, "ben", "desk-1", None).await;
    let (status, body) = login(&server, "cai", "desk-1", None).await;
    assert_eq!((status, error(&body).0.as_str()), (StatusCode::FORBIDDEN, "device_taken"), "{body}");
    // The first key presented by one of its teams becomes its key.
    token(&server, "ben", "desk-1", Some(KEY)).await;
    let (status, body) = login(&server, "mia", "desk-1", None).await;
    assert_eq!((status, error(&body).0.as_str()), (StatusCode::FORBIDDEN, "device_taken"), "{body}");
    token(&server, "mia", "desk-1", Some(KEY)).await;
}

async fn device_ids_and_keys_are_a_safe_set_of_characters() {
    let server = server().await;
    for bad in
        ["", "phone 1", "phone\u{202e}1", "ph\u{0430}ne", "server:north", "dashboard:1234", "a/b", &"x".repeat(129)]
    {
        let (status, body) = login(&server, "ben", bad, None).await;
        assert_eq!((status, error(&body).0.as_str()), (StatusCode::UNPROCESSABLE_ENTITY, "invalid_body"), "{bad:?}");
        let message = error(&body).1;
        assert!(message.contains("device_id") && message.contains("device id"), "{message}");
    }
    for bad_key in ["short", &"k".repeat(257), &format!("{}\u{202e}", &KEY[..40])] {
        let (status, body) = login(&server, "ben", "phone-ben", Some(bad_key)).await;
        assert_eq!((status, error(&body).0.as_str()), (StatusCode::UNPROCESSABLE_ENTITY, "invalid_body"), "{body}");
        assert!(!error(&body).1.contains(bad_key), "the key is not repeated");
    }
    token(&server, "ben", "Phone_1.b-9", None).await;
    token(&server, "ben", &"x".repeat(128), None).await;
    token(&server, "ben", "0195a1b2-0000-7000-8000-0000000000e0", Some(KEY)).await;
}

async fn a_database_of_schema_4_registers_each_device_to_its_first_user() {
    // A database as schema 4 left it: ben signed in on his phone first, then sol named it.
    let test_db = common::TestDb::new();
    server::Db::create_at_version(&test_db.target, 4).expect("a database of schema 4");
    test_db.write_raw(&[
        "INSERT INTO teams VALUES ('team-north', 'North', '2026-01-01T00:00:00Z'),
                                  ('team-south', 'South', '2026-01-01T00:00:00Z')"
            .to_owned(),
        "INSERT INTO users (id, username, password_hash, role, created_at) VALUES
            ('u-ben', 'ben', 'x', 'practitioner', '2026-01-01T00:00:00Z'),
            ('u-sol', 'sol', 'x', 'team_manager', '2026-01-01T00:00:00Z')"
            .to_owned(),
        "INSERT INTO user_teams VALUES ('u-ben', 'team-north'), ('u-sol', 'team-south')".to_owned(),
        "INSERT INTO sessions (id, user_id, device_id, created_at) VALUES
            ('s-2', 'u-sol', 'phone-ben', 200), ('s-1', 'u-ben', 'phone-ben', 100), ('s-3', 'u-sol', 'console-sol', 300)"
            .to_owned(),
    ]);
    let db = test_db.open();
    let devices = db
        .call_blocking(|conn| {
            conn.inspect("SELECT id, user_id, key_hash IS NULL, registered_at FROM devices ORDER BY id")
        })
        .expect("the devices");
    let row = |cells: [&str; 4]| cells.map(|c| Some(c.to_owned())).to_vec();
    assert_eq!(devices, [row(["console-sol", "u-sol", "1", "300"]), row(["phone-ben", "u-ben", "1", "100"])]);
    db.call_blocking(|conn| {
        use server::accounts::{DeviceId, UserId};
        let ben: DeviceId = "phone-ben".parse().expect("a device id");
        assert!(server::auth::store::device_in_reach(conn, &ben, &UserId::new("u-ben"), false)?);
        assert!(!server::auth::store::device_in_reach(conn, &ben, &UserId::new("u-sol"), false)?);
        Ok::<_, server::store::StoreError>(())
    })
    .expect("reach");
}

common::backends!(
    another_teams_manager_can_neither_sign_in_as_a_device_nor_revoke_it,
    a_device_with_a_key_takes_whoever_holds_it_and_no_one_else,
    a_device_registered_without_a_key_takes_only_its_teams_users_until_it_has_one,
    device_ids_and_keys_are_a_safe_set_of_characters,
    a_database_of_schema_4_registers_each_device_to_its_first_user,
);
