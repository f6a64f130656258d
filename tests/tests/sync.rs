//! Devices syncing through a real server on loopback.

use client_core::NewEpisode;
use episode::{FactField, FactValue, Pathway, PatientRef};
use jiff::Timestamp;
use serde_json::{Map, Value, json};
use server::accounts::Role;
use tests::{Device, Server, User};

#[test]
#[ignore = "the server process of the end-to-end tests, started by them"]
fn server_child() {
    tests::server_child();
}

const USERS: &[User] = &[
    User { username: "alice", role: Role::Practitioner, teams: &["north"] },
    User { username: "bob", role: Role::Practitioner, teams: &["north"] },
    User { username: "carol", role: Role::Practitioner, teams: &["south"] },
    User { username: "maria", role: Role::TeamManager, teams: &["north"] },
];

fn fields(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        _ => panic!("fields are an object"),
    }
}

fn open(device: &mut Device, team: &str) -> episode::EpisodeId {
    let new = NewEpisode {
        patient_ref: PatientRef::new("RX-E2E-1").expect("a reference"),
        pathway: Pathway::UrgentReferral,
        team: team.into(),
        facts: vec![(FactField::Children, FactValue::Flag(false))],
        plan: "Visit on Monday.".into(),
    };
    device.core.open_episode(new, "alice", Timestamp::now()).expect("open")
}

fn no_answer(device: &mut Device, episode: episode::EpisodeId, by: &str) -> episode::EventId {
    let visit = fields(json!({"announced": false, "outcome": "no_answer"}));
    device.core.record(episode, "home_visit", Timestamp::now(), visit, by).expect("record a visit")
}

#[test]
fn offline_records_on_every_device_converge_with_the_servers_actions() {
    let (_dir, server) = tests::start(USERS);
    let mut a = Device::new(&server, "alice");
    let mut b = Device::new(&server, "bob");
    let mut c = Device::new(&server, "carol");

    let episode = open(&mut a, "north");
    no_answer(&mut a, episode, "alice");
    let first = a.sync().expect("a syncs");
    assert!(first.complete, "{first:?}");
    let got = b.sync().expect("b syncs");
    assert_eq!(got.new_episodes, 1, "{got:?}");
    assert_eq!(b.core.episode(episode).expect("b has it").events.len(), 1);

    // Both record offline, and both change the risk differently.
    no_answer(&mut a, episode, "alice");
    no_answer(&mut b, episode, "bob");
    a.core.set_fact(episode, FactField::Risk, &json!("high"), "alice", Timestamp::now()).expect("a sets risk");
    b.core.set_fact(episode, FactField::Risk, &json!("low"), "bob", Timestamp::now()).expect("b sets risk");
    b.sync().expect("b syncs");
    a.sync().expect("a syncs");
    b.sync().expect("b syncs again");

    let ea = a.core.episode(episode).expect("on a").clone();
    let eb = b.core.episode(episode).expect("on b").clone();
    assert_eq!(ea.to_json(), eb.to_json(), "both devices hold the same episode");
    assert_eq!(ea.events.len(), 5);
    assert_eq!(ea.facts.risk.values().len(), 2, "the concurrent risks are a conflict");

    // The server's actions equal what each device computes at the server's moment.
    for device in [&a, &b] {
        let server = device.core.server_actions(episode).expect("read").expect("the server's actions");
        let local = device.core.actions(episode, server.evaluated_at).expect("local actions");
        assert_eq!(local.evaluation.actions, server.evaluation.actions);
    }

    // Carol, in another team, never sees it.
    let summary = c.sync().expect("c syncs");
    assert_eq!(summary.new_episodes, 0);
    assert!(c.core.episode(episode).is_err());
}

#[test]
fn a_device_with_a_wrong_clock_learns_the_servers_and_its_deadlines_follow_it() {
    let (_dir, server) = tests::start(USERS);
    let mut a = Device::new(&server, "alice");
    // The phone's clock is two hours slow.
    let slow = jiff::SignedDuration::from_hours(2);
    let episode = open(&mut a, "north");
    no_answer(&mut a, episode, "alice");
    a.http.sync(&mut a.core, || Timestamp::now() - slow).expect("a syncs with a slow clock");
    let offset = a.core.clock_offset_ms().expect("the offset");
    assert!((offset - slow.as_millis() as i64).abs() < 60_000, "the offset is about two hours: {offset} ms");
    // What the phone shows is evaluated at the server's time, not its own: the same
    // actions as the server gave, at the server's moment.
    // (A minute on: the server's clock is read to the whole second.)
    let device_now = Timestamp::now() - slow + jiff::SignedDuration::from_mins(1);
    let corrected = a.core.corrected_now(device_now).expect("corrected");
    let minute_on = Timestamp::now() + jiff::SignedDuration::from_mins(1);
    assert!(corrected.duration_since(minute_on).as_secs().abs() < 30, "corrected to the real time");
    let server_actions = a.core.server_actions(episode).expect("read").expect("the server's actions");
    let local = a.core.actions(episode, server_actions.evaluated_at).expect("local");
    assert_eq!(local.evaluation.actions, server_actions.evaluation.actions);
    let at_device_time = a.core.actions(episode, device_now).expect("at the device's time");
    let at_corrected = a.core.actions(episode, corrected).expect("at the corrected time");
    let card_open = |p: &client_core::Provisional| {
        p.evaluation
            .actions
            .iter()
            .any(|x| x.code == episode::pathway::Code::LeaveCallingCard && x.state == episode::pathway::State::Open)
    };
    // At the phone's own (slow) time the visit has not happened yet and nothing is due;
    // at the corrected time the calling card is.
    assert!(card_open(&at_corrected), "{:?}", at_corrected.evaluation.actions);
    assert!(!card_open(&at_device_time), "a slow clock would hide what is due");
}

/// The heads the server has stored as shared with `device` for `episode`, sorted hex.
fn shared_on_server(server: &Server, episode: episode::EpisodeId, device: &str) -> Vec<String> {
    let bytes = tests::open_db(server.db())
        .call_blocking(|conn| conn.sync_state(episode, device))
        .expect("read")
        .expect("a sync state");
    let state = automerge::sync::State::decode(&bytes).expect("a state");
    let mut heads: Vec<String> = state.shared_heads.iter().map(ToString::to_string).collect();
    heads.sort();
    heads
}

/// A teammate's record reaches a device in one round trip: once the server's changes are
/// applied there is nothing else to say, and the word that the device holds them goes
/// with its next sync's first request (kept in the store meanwhile, across a restart),
/// after which the server knows the device has everything.
#[test]
fn a_teammates_record_arrives_in_one_round_trip_and_the_next_sync_says_so() {
    let (_dir, server) = tests::start(USERS);
    let mut a = Device::new(&server, "alice");
    let mut b = Device::new(&server, "bob");
    let episode = open(&mut a, "north");
    assert!(a.sync().expect("a syncs").complete);
    assert!(b.sync().expect("b syncs").complete);
    let b_device = b.core.device().to_string();
    assert_eq!(shared_on_server(&server, episode, &b_device), tests::server_heads(server.db(), episode));

    let visit = no_answer(&mut a, episode, "alice");
    assert!(a.sync().expect("a syncs").complete);
    let summary = b.sync().expect("b syncs");
    assert!(summary.complete, "{summary:?}");
    assert_eq!((summary.round_trips, summary.sent, summary.received), (1, 0, 1), "{summary:?}");
    assert!(tests::event_ids(&b.core, episode).contains(&visit));
    assert_eq!(tests::device_heads(&mut b.core, episode), tests::server_heads(server.db(), episode));
    // The server does not know yet.
    assert_ne!(shared_on_server(&server, episode, &b_device), tests::server_heads(server.db(), episode));

    // The store remembers what is owed: the next sync, from a reopened store, says it in
    // its one request, and sends and receives no change.
    b.core = client_core::Core::open(b.dir.path(), &b.key).expect("open b's store again");
    let summary = b.sync().expect("b syncs");
    assert_eq!((summary.round_trips, summary.sent, summary.received), (1, 0, 0), "{summary:?}");
    assert_eq!(shared_on_server(&server, episode, &b_device), tests::server_heads(server.db(), episode));

    // Then there is nothing to say at all: the up-to-date request is a few bytes.
    let summary = b.sync().expect("b syncs");
    assert_eq!((summary.round_trips, summary.sent, summary.received), (1, 0, 0), "{summary:?}");
    assert!(summary.bytes_sent < 64, "{summary:?}");
}
