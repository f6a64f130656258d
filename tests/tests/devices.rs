//! A device can't be claimed (issue 12, item 2), end to end: the cross-team wipe, as it
//! was done, replayed against a real server on loopback and a real phone's core.

use client_core::{NewEpisode, STORE_FILE};
use episode::{Pathway, PatientRef};
use jiff::Timestamp;
use serde_json::{Map, json};
use server::accounts::Role;
use tests::{Device, PASSWORD, User, call_json, event_ids, sign_in};

const USERS: &[User] = &[
    User { username: "ben", role: Role::Practitioner, teams: &["north"] },
    User { username: "mia", role: Role::TeamManager, teams: &["north"] },
    User { username: "sol", role: Role::TeamManager, teams: &["south"] },
];

fn open(device: &mut Device, patient: &str) -> episode::EpisodeId {
    let new = NewEpisode {
        patient_ref: PatientRef::new(patient).expect("a reference"),
        pathway: Pathway::RoutineReferral,
        team: "north".into(),
        facts: Vec::new(),
        plan: String::new(),
    };
    device.core.open_episode(new, Timestamp::now()).expect("open")
}

fn reengaged(device: &mut Device, episode: episode::EpisodeId) -> episode::EventId {
    device.core.record(episode, "reengaged", Map::new(), Timestamp::now()).expect("record")
}

#[test]
fn another_teams_manager_cannot_claim_or_wipe_a_phone_and_its_records_survive_and_sync() {
    let (_dir, server) = tests::start(USERS);
    let mut ben = Device::new(&server, "ben");
    let phone = ben.core.device().to_string();

    // Ben's episode is transferred to south: its timeline, which sol now reads, names
    // ben's phone on every record.
    let transferred = open(&mut ben, "RX-WIPE-1");
    reengaged(&mut ben, transferred);
    ben.sync().expect("ben syncs");
    let mia = sign_in(&server, "mia");
    let (status, body) = call_json(
        &server,
        "POST",
        &format!("/v1/episodes/{transferred}/transfer"),
        Some(&mia),
        Some(json!({"team": "south"})),
    );
    assert_eq!(status, 204, "{body}");
    let sol = sign_in(&server, "sol");
    let (status, timeline) =
        call_json(&server, "GET", &format!("/v1/episodes/{transferred}/timeline"), Some(&sol), None);
    assert_eq!(status, 200, "{timeline}");
    assert_eq!(timeline["events"][0]["device"], json!(phone), "the device id is on the record");

    // Out of signal, ben records on another episode: not yet synced.
    let unsynced_episode = open(&mut ben, "RX-WIPE-2");
    let unsynced = reengaged(&mut ben, unsynced_episode);

    // Sol signs in naming ben's phone (without its key, or with a guess) and is refused;
    // nothing of him is registered to the phone.
    for key in [None, Some("0".repeat(64))] {
        let mut login = json!({"username": "sol", "password": PASSWORD, "device_id": phone});
        if let Some(key) = key {
            login["device_key"] = json!(key);
        }
        let (status, body) = call_json(&server, "POST", "/v1/auth/login", None, Some(login));
        assert_eq!((status, body["error"]["code"].as_str()), (403, Some("device_taken")), "{body}");
    }
    // Nor can he revoke it from his own console: to him it is a device that does not exist.
    let (status, body) = call_json(&server, "POST", &format!("/v1/devices/{phone}/revoke"), Some(&sol), None);
    assert_eq!((status, body["error"]["code"].as_str()), (404, Some("not_found")), "{body}");

    // Ben's phone syncs as ever: not wiped, its unsynced record reaches the server.
    ben.sync().expect("ben's phone is not revoked");
    assert!(ben.dir.path().join(STORE_FILE).exists(), "the store is still there");
    assert!(event_ids(&ben.core, unsynced_episode).contains(&unsynced), "the record is intact");
    let (status, episode) = call_json(&server, "GET", &format!("/v1/episodes/{unsynced_episode}"), Some(&mia), None);
    assert_eq!(status, 200, "{episode}");
    assert!(
        episode["events"].as_array().expect("events").iter().any(|e| e["id"] == json!(unsynced.to_string())),
        "the server holds ben's record: {episode}"
    );
    // Ben's own manager still reaches the phone.
    let (status, body) = call_json(&server, "POST", &format!("/v1/devices/{phone}/revoke"), Some(&mia), None);
    assert_eq!(status, 204, "{body}");
}
