//! Alerts across a crash: a real `tether serve` child process, killed with SIGKILL while
//! it is sending an alert to a webhook receiver on loopback, and started again. Every
//! alert is delivered, and the only one delivered twice is the one cut short, under the
//! same idempotency key, so a receiver that keeps the keys takes each once.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use episode::document::{EpisodeDoc, Opening};
use episode::{Event, Pathway, PatientRef};
use jiff::{SignedDuration, Timestamp};
use serde_json::{Value, json};
use server::accounts::Role;
use tests::{Server, User};

const SECRET: &str = "the-receivers-shared-secret-0123456789";

#[test]
#[ignore = "the server process of the end-to-end tests, started by them"]
fn server_child() {
    tests::server_child();
}

/// The keys the receiver got, in order; the first request is held unanswered until the
/// test lets it go (the server is killed meanwhile).
#[derive(Clone, Default)]
struct Receiver {
    keys: Arc<Mutex<Vec<String>>>,
}

impl Receiver {
    fn keys(&self) -> Vec<String> {
        self.keys.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }
}

fn start_receiver(receiver: Receiver) -> (u16, tokio::runtime::Runtime) {
    let runtime =
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("a runtime");
    let listener = runtime.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).expect("a port");
    let port = listener.local_addr().expect("an address").port();
    let handler = move |headers: HeaderMap, body: Bytes| {
        let receiver = receiver.clone();
        async move {
            let signature = headers.get("x-tether-signature").and_then(|v| v.to_str().ok()).unwrap_or("");
            assert_eq!(signature, server::alerts::send::signature(SECRET.as_bytes(), &body), "signed");
            let key = headers.get("idempotency-key").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
            let first = {
                let mut keys = receiver.keys.lock().unwrap_or_else(PoisonError::into_inner);
                keys.push(key);
                keys.len() == 1
            };
            if first {
                // Taken, never answered: the server dies waiting.
                std::future::pending::<()>().await;
            }
            StatusCode::NO_CONTENT
        }
    };
    let router = axum::Router::new().route("/hook", axum::routing::post(handler));
    runtime.spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    (port, runtime)
}

/// A home-treatment episode of `south` whose patient did not answer a phone call half an
/// hour ago (Appendix A: urgent actions due within the hour and later).
fn home_treatment(db: &std::path::Path) {
    let now = Timestamp::now();
    let id = episode::EpisodeId::from_uuid(uuid::Uuid::now_v7());
    let opening = Opening {
        id,
        patient_ref: PatientRef::new("RX-KILL-1").expect("a reference"),
        team: "south".into(),
        opened_at: now - SignedDuration::from_hours(24),
        opened_by: "cai".into(),
        pathway: Pathway::HomeTreatment,
        facts: vec![],
        plan: String::new(),
    };
    let mut doc = EpisodeDoc::open(&opening, automerge::ActorId::random()).expect("a document");
    let Value::Object(fields) = json!({"method": "phone", "target": "patient", "outcome": "no_answer"}) else {
        unreachable!()
    };
    let at = now - SignedDuration::from_mins(30);
    let call = Event::new_record(uuid::Uuid::now_v7().into(), "contact_attempt", at, "cai", "phone-cai", fields)
        .expect("a record");
    doc.record(&call).expect("recorded");
    tests::in_transaction(db, |tx| {
        server::episodes::insert(tx, id, &"south".parse().expect("a team"), &mut doc, now.as_second()).expect("stored");
    });
}

fn outbox(db: &std::path::Path) -> BTreeMap<String, String> {
    let rows = tests::open_db(db)
        .call_blocking(|conn| conn.inspect("SELECT dedupe_key, state FROM outbox WHERE kind = 'alert_webhook'"))
        .expect("the outbox");
    rows.into_iter().map(|row| (row[0].clone().unwrap_or_default(), row[1].clone().unwrap_or_default())).collect()
}

fn wait_for(what: &str, within: Duration, mut done: impl FnMut() -> bool) {
    let started = Instant::now();
    while !done() {
        assert!(started.elapsed() < within, "waited {within:?} for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn a_server_killed_while_sending_an_alert_sends_it_once_more_after_restart() {
    let dir = tempfile::tempdir().expect("a directory");
    let db = dir.path().join("tether.db");
    tests::create_accounts(&db, &[User { username: "cai", role: Role::Practitioner, teams: &["south"] }]);
    home_treatment(&db);
    let receiver = Receiver::default();
    let (port, _runtime) = start_receiver(receiver.clone());
    // Every contact at the one receiver, in and out of hours alike.
    let hook = format!("webhook = \"http://127.0.0.1:{port}/hook\"\nsecret_env = \"TETHER_TEST_HOOK_SECRET\"\n");
    let file = dir.path().join("alerts.toml");
    std::fs::write(
        &file,
        format!(
            "dashboard_url = \"https://tether.trust.example\"\n[teams.south]\n[teams.south.on_call]\n{hook}\
             [teams.south.contacts.care_coordinator]\n{hook}[teams.south.contacts.team_manager]\n{hook}"
        ),
    )
    .expect("the alerts file");
    let file = file.to_str().expect("a path");
    let env = [("TETHER_E2E_ALERTS", file), ("TETHER_TEST_HOOK_SECRET", SECRET), ("TETHER_OUTBOX_LEASE_SECS", "20")];
    let mut server = Server::start_at(&db, tests::free_addr(), None, &env);

    // The first alert reaches the receiver, which holds it: kill the server mid-send.
    wait_for("the first alert", Duration::from_secs(60), || !receiver.keys().is_empty());
    server.kill();
    let owed = outbox(&db);
    assert_eq!(owed.len(), 4, "the four urgent actions of Appendix A: {owed:?}");
    assert!(owed.values().any(|state| state == "sending"), "one was being sent: {owed:?}");

    // Restarted: once the dead claim lapses, everything is delivered and marked sent.
    server.restart();
    wait_for("every alert sent", Duration::from_secs(90), || outbox(&db).values().all(|s| s == "sent"));
    server.kill();
    let keys = receiver.keys();
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for key in &keys {
        *counts.entry(key.as_str()).or_default() += 1;
    }
    assert_eq!(counts.len(), 4, "every alert delivered: {keys:?}");
    assert_eq!(counts[keys[0].as_str()], 2, "the one cut short, once more: {keys:?}");
    assert_eq!(counts.values().filter(|n| **n > 1).count(), 1, "no other twice: {keys:?}");
    let owed: Vec<String> =
        outbox(&db).into_keys().map(|k| k.trim_start_matches("alert_webhook:").to_owned()).collect();
    let mut delivered: Vec<String> = counts.keys().map(|k| (*k).to_owned()).collect();
    delivered.sort();
    assert_eq!(delivered, owed, "the keys delivered are the ones owed");
}
