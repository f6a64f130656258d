//! Episodes stay readable (issue 12, item 3), end to end against the real server in a
//! child process: an episode grown to its budget through the API and through sync, and
//! one stored past the load limit before there was a budget, each still read, recorded
//! (refused with a clear error), reconciled and first-synced after a restart.

use client_core::NewEpisode;
use episode::document::{DocumentError, MAX_DOCUMENT_BYTES};
use episode::limits::{EPISODE_BUDGET_BYTES, MAX_TEXT_BYTES};
use episode::sync::Refusal;
use episode::{EpisodeId, Pathway, PatientRef};
use jiff::Timestamp;
use serde_json::{Map, Value, json};
use server::accounts::Role;
use tests::{Device, Server, User, call_json, event_ids, sign_in};

const USERS: &[User] = &[
    User { username: "alice", role: Role::Practitioner, teams: &["north"] },
    User { username: "maria", role: Role::TeamManager, teams: &["north"] },
];

/// Text of `len` letters and digits that deflate barely at all, so that what is stored
/// grows with what is recorded (a note typed by hand compresses; the budget must hold
/// for the worst case).
fn incompressible(len: usize, seed: &mut u64) -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    (0..len)
        .map(|_| {
            *seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            char::from(ALPHABET[(*seed >> 58) as usize % ALPHABET.len()])
        })
        .collect()
}

/// A decision with a rationale and a note each of nearly the largest size: about 16 KiB.
fn large_decision(seed: &mut u64) -> Map<String, Value> {
    let value = json!({"topic": "cold_call", "outcome": "yes", "rationale": incompressible(MAX_TEXT_BYTES - 300, seed),
                       "note": incompressible(MAX_TEXT_BYTES - 300, seed)});
    match value {
        Value::Object(map) => map,
        _ => unreachable!("an object"),
    }
}

fn open(device: &mut Device) -> EpisodeId {
    let new = NewEpisode {
        patient_ref: PatientRef::new("RX-BUDGET-1").expect("a reference"),
        pathway: Pathway::RoutineReferral,
        team: "north".into(),
        facts: Vec::new(),
        plan: String::new(),
    };
    let id = device.core.open_episode(new, Timestamp::now()).expect("open");
    let missed = json!({"appointment": "initial"}).as_object().cloned().unwrap_or_default();
    device.core.record(id, "appointment_missed", missed, Timestamp::now()).expect("record");
    id
}

/// Posts a large decision through the API: the status and the answer.
fn post_large(server: &Server, token: &str, episode: EpisodeId, seed: &mut u64) -> (u16, Value) {
    let mut body = Value::Object(large_decision(seed));
    body["kind"] = json!("decision");
    call_json(server, "POST", &format!("/v1/episodes/{episode}/events"), Some(token), Some(body))
}

/// After a restart: the episode reads, its timeline reads, the team's reconciliation
/// reads, a record is refused with a clear error (never a 500), and a new phone's first
/// sync brings it whole. Returns how many records the server holds.
fn still_readable(server: &Server, episode: EpisodeId, seed: &mut u64) -> usize {
    let maria = sign_in(server, "maria");
    let (status, read) = call_json(server, "GET", &format!("/v1/episodes/{episode}"), Some(&maria), None);
    assert_eq!(status, 200, "read: {}", read["error"]);
    let records = read["events"].as_array().expect("events").len();
    let (status, timeline) = call_json(server, "GET", &format!("/v1/episodes/{episode}/timeline"), Some(&maria), None);
    assert_eq!(status, 200, "the timeline: {}", timeline["error"]);
    assert_eq!(timeline["events"].as_array().expect("events").len(), records);
    let (status, reconcile) = call_json(server, "GET", "/v1/reconcile", Some(&maria), None);
    assert_eq!(status, 200, "reconcile: {}", reconcile["error"]);
    let (status, list) = call_json(server, "GET", "/v1/episodes", Some(&maria), None);
    assert_eq!(status, 200, "the caseload: {}", list["error"]);
    let (status, answer) = post_large(server, &maria, episode, seed);
    assert_eq!((status, answer["error"]["code"].as_str()), (422, Some("episode_full")), "{answer}");
    assert!(answer["error"]["message"].as_str().is_some_and(|m| m.contains("new episode")), "{answer}");

    let mut phone = Device::new(server, "alice");
    let summary = phone.sync().expect("a new phone's first sync");
    assert!(summary.complete && summary.held_back.is_empty(), "{summary:?}");
    assert_eq!(event_ids(&phone.core, episode).len(), records, "the new phone holds every record");
    records
}

#[test]
fn an_episode_grown_to_its_budget_through_the_api_and_sync_still_reads_records_reconciles_and_first_syncs() {
    let (_dir, mut server) = tests::start(USERS);
    let mut phone = Device::new(&server, "alice");
    let episode = open(&mut phone);
    phone.sync().expect("the first sync");
    let maria = sign_in(&server, "maria");
    let mut seed = 11;

    // Through the API, to about half the budget.
    for _ in 0..EPISODE_BUDGET_BYTES / 2 / (2 * MAX_TEXT_BYTES) {
        let (status, answer) = post_large(&server, &maria, episode, &mut seed);
        assert_eq!(status, 201, "{answer}");
    }
    // Through sync, the rest: the phone records until its own check refuses, syncing as
    // it goes; the server's check may stop it first (then the last records wait, held
    // back, and the server's copy is at its budget).
    phone.sync().expect("the phone receives the office's records");
    let mut server_full = false;
    'grow: loop {
        for _ in 0..8 {
            match phone.core.record(episode, "decision", large_decision(&mut seed), Timestamp::now()) {
                Ok(_) => {}
                Err(client_core::Error::Document(DocumentError::Full { .. })) => break 'grow,
                Err(other) => panic!("unexpected refusal: {other}"),
            }
        }
        let summary = phone.sync().expect("a sync");
        if let Some(held) = summary.held_back.first() {
            assert!(matches!(held.reason, Refusal::EpisodeFull { .. }), "{held:?}");
            server_full = true;
            break;
        }
    }
    if !server_full {
        let summary = phone.sync().expect("the last records");
        assert!(summary.held_back.iter().all(|h| matches!(h.reason, Refusal::EpisodeFull { .. })), "{summary:?}");
    }
    // The office's large records fill what room is left (each side counts its own
    // copy's stored bytes, and the server compacts its copy more often), until one is
    // refused.
    for n in 0.. {
        let (status, answer) = post_large(&server, &maria, episode, &mut seed);
        if status == 422 {
            assert_eq!(answer["error"]["code"], "episode_full", "{answer}");
            break;
        }
        assert_eq!(status, 201, "{answer}");
        assert!(n < EPISODE_BUDGET_BYTES / (2 * MAX_TEXT_BYTES) / 4, "the server never said full");
    }
    let stored = tests::server_document(server.db(), episode).expect("the server's copy");
    let grown = stored.episode().expect("it reads").events.len();
    assert!(grown > EPISODE_BUDGET_BYTES / (2 * MAX_TEXT_BYTES) * 8 / 10, "{grown} records");

    server.kill();
    server.restart();
    assert_eq!(still_readable(&server, episode, &mut seed), grown);
}

#[test]
fn an_episode_stored_past_the_load_limit_before_there_was_a_budget_still_reads_and_first_syncs() {
    let (_dir, mut server) = tests::start(USERS);
    let mut phone = Device::new(&server, "alice");
    let episode = open(&mut phone);
    phone.sync().expect("the first sync");

    // As an older server took it in: a practitioner's notes of a megabyte each, past the
    // load limit in all, stored while the server was down.
    server.kill();
    let added = 20;
    {
        let device: server::accounts::DeviceId = phone.core.device().parse().expect("a device id");
        let size = tests::open_db(server.db())
            .call_blocking(|conn| {
                let mut tx = conn.transaction()?;
                let actor = server::episodes::server_actor(&mut *tx)?;
                let mut stored = server::episodes::load(&mut *tx, episode, &actor)?.expect("the episode");
                let bytes = stored.with_doc(|doc| {
                    let am = doc.automerge();
                    let events = match automerge::ReadDoc::get(am, automerge::ROOT, "events").expect("the records") {
                        Some((automerge::Value::Object(_), events)) => events,
                        other => panic!("no records map: {other:?}"),
                    };
                    let mut seed = 5;
                    for n in 0..added {
                        let id = uuid::Uuid::now_v7();
                        let record = json!({"id": id.to_string(), "kind": "home_visit", "at": format!("2026-03-02T1{}:00:00Z", n % 10),
                                            "by": "alice", "device": device, "announced": false, "outcome": "no_answer",
                                            "note": incompressible(1 << 20, &mut seed)});
                        automerge::transaction::Transactable::put(am, &events, id.to_string(), record.to_string())
                            .expect("put");
                        am.commit();
                    }
                    doc.save_incremental()
                });
                server::episodes::store_changes(&mut *tx, &mut stored, &bytes, &device, 0)?;
                tx.commit()?;
                let stored = server::episodes::load(conn, episode, &actor)?.expect("the episode");
                Ok::<_, server::store::StoreError>(stored.doc().stored_bytes())
            })
            .expect("grow the episode");
        assert!(size > MAX_DOCUMENT_BYTES, "stored {size} bytes");
    }
    server.restart();
    let mut seed = 13;
    assert_eq!(still_readable(&server, episode, &mut seed), added + 1);
    // The phone that held it before gets the new records as changes.
    let summary = phone.sync().expect("the old phone syncs");
    assert!(summary.held_back.is_empty(), "{summary:?}");
    assert_eq!(event_ids(&phone.core, episode).len(), added + 1);
}
