//! The team base and the devices, through a real server on loopback: what the office
//! records reaches the phones at their next sync, merges with what they recorded offline
//! meanwhile, and the caseload's counts agree with the devices' own evaluation.

use client_core::NewEpisode;
use episode::{FactField, FactValue, Pathway, PatientRef};
use jiff::Timestamp;
use serde_json::json;
use server::accounts::Role;
use tests::{Device, Server, User, call_json, create_accounts, sign_in};

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
    let visit = a.core.record(episode, "home_visit", visit, Timestamp::now()).expect("record");
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
    a.core.record(episode, "calling_card_left", card, Timestamp::now()).expect("a card");

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

/// The phone's caseload (`tether-field episodes`, `Core::episodes`, the FFI's
/// `episodes`) and the server's `GET /v1/episodes` say the same thing of the same
/// episodes, field by field: `open_actions` counts open and overdue actions alike,
/// `overdue_actions` the overdue ones, `pathway` is one string (the safer value the
/// rules take, also on a conflict) and `conflicts` a count, on both.
#[test]
fn the_phones_caseload_and_the_servers_say_the_same_of_every_episode() {
    let dir = tempfile::tempdir().expect("a directory");
    let db = dir.path().join("tether.db");
    create_accounts(&db, USERS);
    let server = Server::start(&db);
    let mut a = Device::new(&server, "alice");
    let mut b = Device::new(&server, "bob");
    let now = Timestamp::now();
    let ago = |hours: i64| now - jiff::SignedDuration::from_hours(hours);
    let fields = |value: serde_json::Value| serde_json::from_value(value).expect("fields");
    let open = |device: &mut Device, patient: &str, pathway: Pathway| {
        let new = NewEpisode {
            patient_ref: PatientRef::new(patient).expect("a reference"),
            pathway,
            team: "north".into(),
            facts: Vec::new(),
            plan: String::new(),
        };
        device.core.open_episode(new, ago(80)).expect("open")
    };
    // A routine referral whose initial appointment was missed three days ago: overdue.
    let missed = open(&mut a, "RX-LIST-1", Pathway::RoutineReferral);
    let dna = fields(json!({"appointment": "initial"}));
    a.core.record(missed, "appointment_missed", dna, ago(72)).expect("record");
    // In service, a visit with no answer yesterday; then the pathway set two ways at once.
    let visited = open(&mut a, "RX-LIST-2", Pathway::InService);
    let visit = fields(json!({"announced": false, "outcome": "no_answer"}));
    a.core.record(visited, "home_visit", visit, ago(26)).expect("record");
    // A child not brought, later also set to in-service by one phone.
    let child = open(&mut a, "RX-LIST-3", Pathway::ChildNotBrought);
    let not_brought = fields(json!({"appointment": "follow_up", "reason": "not_brought"}));
    a.core.record(child, "appointment_missed", not_brought, ago(50)).expect("record");
    a.sync().expect("a syncs");
    b.sync().expect("b syncs");
    let set = |device: &mut Device, episode, field, value: serde_json::Value| {
        device.core.set_fact(episode, field, &value, ago(1)).expect("set a fact");
    };
    set(&mut a, visited, FactField::Pathway, json!("home_treatment"));
    set(&mut b, visited, FactField::Pathway, json!("urgent_referral"));
    set(&mut a, missed, FactField::Risk, json!("high"));
    set(&mut b, missed, FactField::Risk, json!("low"));
    set(&mut a, child, FactField::Pathway, json!("in_service"));
    set(&mut b, child, FactField::Pathway, json!("child_not_brought"));
    assert!(a.sync().expect("a syncs").complete);
    assert!(b.sync().expect("b syncs").complete);
    assert!(a.sync().expect("a syncs again").complete);

    let maria = sign_in(&server, "maria");
    let (status, list) = call_json(&server, "GET", "/v1/episodes", Some(&maria), None);
    assert_eq!(status, 200, "{list}");
    let phones = [(&a, "alice's phone"), (&b, "bob's phone")];
    for (device, name) in phones {
        let lines = serde_json::to_value(device.core.episodes(Timestamp::now())).expect("JSON");
        let lines = lines.as_array().expect("a list");
        assert_eq!(lines.len(), 3, "{name}: {lines:?}");
        for line in lines {
            let line = line.as_object().expect("an object");
            let fields: Vec<&str> = line.keys().map(String::as_str).collect();
            let mut expected = ["id", "team", "pathway", "patient_ref", "open_actions", "overdue_actions", "conflicts"];
            expected.sort_unstable();
            let mut fields_sorted = fields.clone();
            fields_sorted.sort_unstable();
            assert_eq!(fields_sorted, expected, "{name}: the listing's fields");
            let entry = list
                .as_array()
                .expect("a list")
                .iter()
                .find(|e| e["id"] == line["id"])
                .unwrap_or_else(|| panic!("{name}: {} is on the server's list", line["id"]));
            for field in fields {
                assert_eq!(
                    line[field], entry[field],
                    "{name}: `{field}` of {}: phone {line:?}, server {entry}",
                    line["id"]
                );
            }
        }
    }

    // What the lines say, read once: open counts the overdue too, and a conflicted
    // pathway is the one the rules take.
    let line = |episode: episode::EpisodeId| {
        list.as_array().expect("a list").iter().find(|e| e["id"] == episode.to_string()).expect("listed").clone()
    };
    let (missed, visited, child) = (line(missed), line(visited), line(child));
    assert!(missed["overdue_actions"].as_i64() > Some(0), "{missed}");
    assert!(missed["open_actions"].as_i64() >= missed["overdue_actions"].as_i64(), "{missed}");
    assert_eq!((visited["pathway"].as_str(), visited["conflicts"].as_i64()), (Some("home_treatment"), Some(1)));
    assert_eq!((child["pathway"].as_str(), child["conflicts"].as_i64()), (Some("child_not_brought"), Some(1)));
    assert_eq!(missed["conflicts"], 1, "{missed}");
}
