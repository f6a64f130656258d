//! `--log-format json` on a real server: every line logged while a request is handled
//! carries that request's id, the answer gives the same id in `x-request-id`, and no
//! line holds a patient's reference, whatever a client sends.

use std::collections::BTreeSet;

use client_core::NewEpisode;
use episode::{FactField, FactValue, Pathway, PatientRef};
use jiff::Timestamp;
use serde_json::{Value, json};
use server::accounts::Role;
use tests::{Device, Server, User};

#[test]
#[ignore = "the server process of the end-to-end tests, started by them"]
fn server_child() {
    tests::server_child();
}

const PATIENT: &str = "RX-LOGGED-NEVER-4711";

#[test]
fn json_lines_carry_the_request_id_and_never_the_patient_ref() {
    let dir = tempfile::tempdir().expect("a directory");
    let db = dir.path().join("tether.db");
    let log = dir.path().join("server.log");
    tests::create_accounts(&db, &[User { username: "alice", role: Role::Practitioner, teams: &["north"] }]);
    let log_path = log.to_str().expect("a UTF-8 path");
    let mut server = Server::start_at(
        &db,
        tests::free_addr(),
        None,
        &[("TETHER_LOG", "debug"), ("TETHER_LOG_FORMAT", "json"), (tests::STDERR_VAR, log_path)],
    );

    // A sync that carries the patient's reference, twice (the second a retry).
    let mut device = Device::new(&server, "alice");
    let new = NewEpisode {
        patient_ref: PatientRef::new(PATIENT).expect("a reference"),
        pathway: Pathway::UrgentReferral,
        team: "north".into(),
        facts: vec![(FactField::Children, FactValue::Flag(false))],
        plan: "Visit on Monday.".into(),
    };
    device.core.open_episode(new, Timestamp::now()).expect("open");
    assert!(device.sync().expect("sync").complete);
    device.sync().expect("sync again");

    // Hostile requests: the reference as a username, in a request id, in a query, in a
    // path, and a body that is not JSON.
    let agent = tests::agent();
    let mut answered_ids = BTreeSet::new();
    let mut remember = |response: &ureq::http::Response<ureq::Body>| {
        let id = response.headers().get("x-request-id").expect("an x-request-id").to_str().expect("text");
        assert_ne!(id, PATIENT, "the caller's request id is not echoed");
        answered_ids.insert(id.to_string());
    };
    let login = agent
        .post(format!("{}/v1/auth/login", server.url()))
        .header("x-request-id", PATIENT)
        .send_json(json!({"username": PATIENT, "password": "wrong", "device_id": PATIENT}))
        .expect("an answer");
    assert_eq!(login.status().as_u16(), 401);
    remember(&login);
    let token = tests::sign_in(&server, "alice");
    for path in [format!("/v1/audit?episode={PATIENT}"), format!("/v1/episodes/{PATIENT}"), format!("/{PATIENT}")] {
        let answer = agent
            .get(format!("{}{path}", server.url()))
            .header("Authorization", format!("Bearer {token}"))
            .call()
            .expect("an answer");
        assert!(answer.status().is_client_error(), "{path}: {}", answer.status());
        remember(&answer);
    }
    let junk = agent
        .post(format!("{}/v1/sync", server.url()))
        .header("Authorization", format!("Bearer {token}"))
        .header("Content-Type", "application/json")
        .send(format!("{{\"patient_ref\": \"{PATIENT}\""))
        .expect("an answer");
    assert!(junk.status().is_client_error(), "{}", junk.status());
    remember(&junk);
    server.kill();

    let text = std::fs::read_to_string(&log).expect("the server's log");
    assert!(!text.contains(PATIENT), "a patient's reference in the log:\n{text}");
    let mut logged_ids = BTreeSet::new();
    let mut request_lines = 0;
    for line in text.lines() {
        let value: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}"));
        let Some(spans) = value["spans"].as_array() else { continue };
        let Some(request) = spans.iter().find(|s| s["name"] == "request") else { continue };
        let id = request["request_id"].as_str().unwrap_or_else(|| panic!("a request's line with no id: {line}"));
        assert_eq!(id.len(), 36, "{line}");
        logged_ids.insert(id.to_string());
        request_lines += 1;
    }
    assert!(request_lines > 10, "the requests were logged ({request_lines} lines):\n{text}");
    // Each answer's id is the one its lines carry (the "answered" line at least).
    for id in &answered_ids {
        assert!(logged_ids.contains(id), "{id} answered but not in the log");
    }
    // A line logged on the database's thread, within a request, carries its id too:
    // every "answered" line and every line of a sync share an id with some other line.
    assert!(logged_ids.len() >= answered_ids.len() + 3, "{logged_ids:?}");
}
