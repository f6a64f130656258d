//! The team base and the devices, through a real server on loopback: what the office
//! records reaches the phones at their next sync, merges with what they recorded offline
//! meanwhile, and the caseload's counts agree with the devices' own evaluation.

use client_core::NewEpisode;
use episode::{FactField, FactValue, Pathway, PatientRef};
use jiff::Timestamp;
use serde_json::json;
use server::accounts::Role;
use tests::{Device, Server, User, call_json, create_accounts, sign_in};

#[test]
#[ignore = "the server process of the end-to-end tests, started by them"]
fn server_child() {
    tests::server_child();
}

const USERS: &[User] = &[
    User { username: "alice", role: Role::Practitioner, teams: &["north"] },
    User { username: "bob", role: Role::Practitioner, teams: &["north"] },
    User { username: "maria", role: Role::TeamManager, teams: &["north"] },
];

#[test]
fn the_offices_records_and_facts_reach_the_devices_and_merge_with_theirs() {
    let dir = tempfile::tempdir().expect("a directory");
    let db = dir.path().join("tether.db");
    create_accounts(&db, USERS);
    let server = Server::start(&db);
    let mut a = Device::new(&server, "alice");
    let mut b = Device::new(&server, "bob");

    let new = NewEpisode {
        patient_ref: PatientRef::new("RX-OFFICE-1").expect("a reference"),
        pathway: Pathway::InService,
        team: "north".into(),
        facts: vec![(FactField::Risk, FactValue::Risk(episode::Risk::Low))],
        plan: String::new(),
    };
    let episode = a.core.open_episode(new, Timestamp::now()).expect("open");
    let visit = serde_json::from_value(json!({"announced": false, "outcome": "no_answer"})).expect("fields");
    let visit = a.core.record(episode, "home_visit", Timestamp::now(), visit).expect("record");
    a.sync().expect("a syncs");
    b.sync().expect("b syncs");
    // Both phones set the risk while offline: a conflict.
    a.core.set_fact(episode, FactField::Risk, &json!("high"), Timestamp::now()).expect("a sets");
    b.core.set_fact(episode, FactField::Risk, &json!("low"), Timestamp::now()).expect("b sets");
    a.sync().expect("a syncs");
    b.sync().expect("b syncs");

    let maria = sign_in(&server, "maria");
    let (status, reconcile) = call_json(&server, "GET", "/v1/reconcile", Some(&maria), None);
    assert_eq!(status, 200, "{reconcile}");
    assert_eq!(reconcile["conflicts"][0]["field"], "risk", "{reconcile}");
    assert!(reconcile["unfiled"].as_array().expect("unfiled").iter().any(|u| u["record"] == visit.to_string()));

    // The office resolves the conflict and files the visit, while alice records offline.
    let path = format!("/v1/episodes/{episode}/facts");
    let (status, body) =
        call_json(&server, "POST", &path, Some(&maria), Some(json!({"field": "risk", "value": "high"})));
    assert_eq!(status, 200, "{body}");
    let path = format!("/v1/episodes/{episode}/events");
    let filing = json!({"kind": "filed_to_epr", "records": [visit], "epr_ref": "EPR-77"});
    let (status, body) = call_json(&server, "POST", &path, Some(&maria), Some(filing));
    assert_eq!(status, 201, "{body}");
    let filed = body["id"].as_str().expect("an id").to_owned();
    let card = serde_json::from_value(json!({"visit": visit})).expect("fields");
    a.core.record(episode, "calling_card_left", Timestamp::now(), card).expect("a card");

    a.sync().expect("a syncs");
    b.sync().expect("b syncs");
    a.sync().expect("a syncs again");
    let ea = a.core.episode(episode).expect("on a").clone();
    let eb = b.core.episode(episode).expect("on b").clone();
    assert_eq!(ea.to_json(), eb.to_json(), "both phones hold the same episode");
    assert_eq!(ea.facts.risk.values(), [episode::Risk::High], "the office's choice resolved the conflict");
    assert!(ea.events.iter().any(|e| e.id.to_string() == filed), "the filing reached the phone");
    assert!(ea.events.iter().any(|e| e.body.kind() == "calling_card_left"), "and the phone's card is kept");

    // The server's timeline holds all of it, and the caseload's counts are the devices'.
    let (_, timeline) = call_json(&server, "GET", &format!("/v1/episodes/{episode}/timeline"), Some(&maria), None);
    assert_eq!(timeline["events"].as_array().map(Vec::len), Some(ea.events.len()));
    let server_actions = a.core.server_actions(episode).expect("read").expect("the server's actions");
    let local = a.core.actions(episode, server_actions.evaluated_at).expect("local");
    assert_eq!(local.evaluation.actions, server_actions.evaluation.actions);
    let (_, list) = call_json(&server, "GET", "/v1/episodes", Some(&maria), None);
    let entry =
        list.as_array().expect("a list").iter().find(|e| e["id"] == episode.to_string()).expect("listed").clone();
    let now = Timestamp::now();
    let actions = a.core.actions(episode, now).expect("local").evaluation.actions;
    let open =
        actions.iter().filter(|a| matches!(a.state, episode::pathway::State::Open | episode::pathway::State::Overdue));
    assert_eq!(entry["open_actions"].as_i64(), Some(open.count() as i64));
    assert_eq!(entry["conflicts"], 0);

    // The audit log names the phones' syncs and the office's writes.
    let (_, audit) = call_json(&server, "GET", &format!("/v1/audit?episode={episode}"), Some(&maria), None);
    let entries = audit["entries"].as_array().expect("entries");
    let has = |user: &str, action: &str| entries.iter().any(|e| e["username"] == user && e["action"] == action);
    assert!(has("alice", "sync_open") && has("bob", "sync_write") && has("alice", "sync_read"), "{audit}");
    assert!(has("maria", "set_fact") && has("maria", "record_event") && has("maria", "reconcile"), "{audit}");
}
