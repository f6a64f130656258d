//! Devices syncing through a real server on loopback.

use client_core::NewEpisode;
use episode::{FactField, FactValue, Pathway, PatientRef};
use jiff::Timestamp;
use serde_json::{Map, Value, json};
use server::accounts::Role;
use tests::{Device, Server, User};

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
    device.core.open_episode(new, Timestamp::now()).expect("open")
}

fn no_answer(device: &mut Device, episode: episode::EpisodeId) -> episode::EventId {
    let visit = fields(json!({"announced": false, "outcome": "no_answer"}));
    device.core.record(episode, "home_visit", visit, Timestamp::now()).expect("record a visit")
}

#[test]
fn offline_records_on_every_device_converge_with_the_servers_actions() {
    let (_dir, server) = tests::start(USERS);
    let mut a = Device::new(&server, "alice");
    let mut b = Device::new(&server, "bob");
    let mut c = Device::new(&server, "carol");

    let episode = open(&mut a, "north");
    no_answer(&mut a, episode);
    let first = a.sync().expect("a syncs");
    assert!(first.complete, "{first:?}");
    let got = b.sync().expect("b syncs");
    assert_eq!(got.new_episodes, 1, "{got:?}");
    assert_eq!(b.core.episode(episode).expect("b has it").events.len(), 1);

    // Both record offline, and both change the risk differently.
    no_answer(&mut a, episode);
    no_answer(&mut b, episode);
    a.core.set_fact(episode, FactField::Risk, &json!("high"), Timestamp::now()).expect("a sets risk");
    b.core.set_fact(episode, FactField::Risk, &json!("low"), Timestamp::now()).expect("b sets risk");
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
    no_answer(&mut a, episode);
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
        .call_blocking(|conn| conn.sync_state(episode, &device.parse().expect("a device id")))
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

    let visit = no_answer(&mut a, episode);
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

/// A copy of the device's `episode` with a record claiming `by` on the device itself,
/// taken into the device's store as a peer's copy would be: what a tampered app, or a
/// copy passed phone to phone, could hold.
fn with_a_record_by(device: &mut Device, episode: episode::EpisodeId, by: &str) -> episode::EventId {
    use episode::document::EpisodeDoc;
    let bytes = device.core.export_episode(episode).expect("export");
    let mut doc = EpisodeDoc::load(&bytes, automerge::ActorId::random()).expect("a copy");
    let mut fields = fields(json!({"announced": false, "outcome": "no_answer"}));
    fields.remove("kind");
    let event = episode::Event::new_record(
        uuid::Uuid::now_v7().into(),
        "home_visit",
        Timestamp::now(),
        by,
        device.core.device(),
        fields,
    )
    .expect("a record");
    doc.record(&event).expect("recorded in the copy");
    device.core.merge_episode(&doc.save()).expect("merged");
    event.id
}

#[test]
fn a_record_by_someone_not_signed_in_here_is_held_back_typed_until_they_sign_in_here() {
    use episode::sync::Refusal;
    let (_dir, server) = tests::start(USERS);
    let mut a = Device::new(&server, "alice");
    let by_maria = open(&mut a, "north");
    let forged = with_a_record_by(&mut a, by_maria, "maria");
    let by_carol = open(&mut a, "north");
    let carols = with_a_record_by(&mut a, by_carol, "carol");
    let honest = open(&mut a, "north");
    no_answer(&mut a, honest);

    let summary = a.sync().expect("the sync succeeds");
    let held: Vec<_> = summary.held_back.iter().map(|h| (h.episode, h.reason.clone())).collect();
    assert_eq!(
        held.iter().find(|(e, _)| *e == by_maria).map(|(_, r)| r),
        Some(&Refusal::NotSignedInHere { record: Some(forged), by: "maria".into() }),
        "{held:?}"
    );
    assert_eq!(
        held.iter().find(|(e, _)| *e == by_carol).map(|(_, r)| r),
        Some(&Refusal::NotSignedInHere { record: Some(carols), by: "carol".into() })
    );
    assert_eq!(held.len(), 2, "{held:?}");
    assert!(summary.held_back.iter().all(|h| h.message.contains("has not signed in on this device")));
    assert_eq!(a.core.held_back().expect("read").len(), 2, "kept so, with the reasons");
    assert!(a.core.server_actions(honest).expect("read").is_some(), "the rest of the sync went through");
    // Held back: the next sync does not send them again.
    let again = a.sync().expect("again");
    assert_eq!(again.sent, 0, "{again:?}");

    // A shift change: maria signs in on alice's phone. Her record goes; carol's does not.
    a.http.login(&mut a.core, "maria", tests::PASSWORD, Timestamp::now()).expect("maria signs in here");
    let summary = a.sync().expect("the sync succeeds");
    let held: Vec<_> = summary.held_back.iter().map(|h| h.episode).collect();
    assert_eq!(held, [by_carol], "{summary:?}");
    assert!(a.core.server_actions(by_maria).expect("read").is_some(), "maria's episode reached the server");
    let maria = tests::sign_in(&server, "maria");
    let (status, timeline) =
        tests::call_json(&server, "GET", &format!("/v1/episodes/{by_maria}/timeline"), Some(&maria), None);
    assert_eq!(status, 200);
    let record = timeline["events"].as_array().expect("events").iter().find(|e| e["id"] == json!(forged.to_string()));
    assert_eq!(record.map(|r| (&r["by"], &r["device"])), Some((&json!("maria"), &json!(a.core.device()))));
    let (status, _) = tests::call_json(&server, "GET", &format!("/v1/episodes/{by_carol}"), Some(&maria), None);
    assert_eq!(status, 404, "carol's claimed episode is not on the server");
}

#[test]
fn a_colleagues_record_relayed_by_a_peer_waits_for_its_own_device() {
    use episode::sync::Refusal;
    let (_dir, server) = tests::start(USERS);
    let mut a = Device::new(&server, "alice");
    let mut b = Device::new(&server, "bob");
    let episode = open(&mut a, "north");
    no_answer(&mut a, episode);
    a.sync().expect("a syncs");
    b.sync().expect("b receives it");
    // Bob records out of signal; his copy reaches alice's phone directly (peer exchange),
    // and she records too.
    let bobs = no_answer(&mut b, episode);
    let bytes = b.core.export_episode(episode).expect("bob's copy");
    a.core.merge_episode(&bytes).expect("alice takes bob's copy");
    let alices = no_answer(&mut a, episode);

    let summary = a.sync().expect("the sync succeeds");
    let held: Vec<_> = summary.held_back.iter().map(|h| (h.episode, h.reason.clone())).collect();
    assert_eq!(held, [(episode, Refusal::OtherDevice { record: bobs })]);
    // Bob's own sync brings his record; alice's next sync hears of it and sends hers.
    b.sync().expect("b syncs");
    let summary = a.sync().expect("a syncs again");
    assert!(summary.held_back.is_empty(), "{summary:?}");
    assert!(a.core.held_back().expect("read").is_empty());
    let on_server = tests::server_document(server.db(), episode).expect("the server's copy").episode().expect("read");
    let ids: Vec<_> = on_server.events.iter().map(|e| e.id).collect();
    assert!(ids.contains(&bobs) && ids.contains(&alices), "{ids:?}");
}

/// The receipt times of `device`'s records of `episode`, by record id.
fn receipts(device: &Device, episode: episode::EpisodeId) -> Vec<(String, Option<Timestamp>)> {
    let mut times: Vec<_> = device
        .core
        .episode(episode)
        .expect("the episode")
        .events
        .iter()
        .map(|e| (e.id.to_string(), e.received_at))
        .collect();
    times.sort();
    times
}

/// A record made on a phone whose clock is far ahead is flagged `clock_skew` by the
/// server, which knows when it received it. The phone learns that receipt time with the
/// sync's answer (beside the document, never in it), so its own evaluation, offline,
/// says what the server says; a teammate's phone receiving the episode gets the times too,
/// and so does a phone receiving a later record. An up-to-date sync stays a few bytes.
#[test]
fn receipt_times_reach_the_phones_and_their_evaluation_flags_clock_skew_as_the_server_does() {
    let (_dir, server) = tests::start(USERS);
    let mut a = Device::new(&server, "alice");
    let mut b = Device::new(&server, "bob");
    let episode = open(&mut a, "north");
    let on_time = no_answer(&mut a, episode);
    // The phone's clock is three hours ahead when it records this visit.
    let ahead = Timestamp::now() + jiff::SignedDuration::from_hours(3);
    let visit = fields(json!({"announced": false, "outcome": "no_answer"}));
    let skewed = a.core.record(episode, "home_visit", visit, ahead).expect("record ahead");
    assert!(receipts(&a, episode).iter().all(|(_, at)| at.is_none()), "no receipts before a sync");
    let now = Timestamp::now();
    let flagged = |p: &client_core::Provisional| -> Vec<String> {
        let skew = p.evaluation.warnings.iter().filter(|w| w.code == episode::pathway::WarningCode::ClockSkew);
        skew.filter_map(|w| w.record.clone()).collect()
    };
    assert!(flagged(&a.core.actions(episode, now).expect("actions")).is_empty(), "no receipt, no skew known");

    let before = Timestamp::now();
    assert!(a.sync().expect("a syncs").complete);
    let after = Timestamp::now();
    let times = receipts(&a, episode);
    assert_eq!(times.len(), 2);
    for (id, at) in &times {
        let at = at.unwrap_or_else(|| panic!("record {id} has its receipt time"));
        assert!(before - jiff::SignedDuration::from_secs(1) <= at && at <= after, "{id}: {at}");
    }

    // The server's timeline and the phone's own evaluation flag the same record.
    let maria = tests::sign_in(&server, "maria");
    let (status, timeline) =
        tests::call_json(&server, "GET", &format!("/v1/episodes/{episode}/timeline"), Some(&maria), None);
    assert_eq!(status, 200, "{timeline}");
    let local = a.core.actions(episode, Timestamp::now()).expect("the phone's actions");
    assert_eq!(flagged(&local), [skewed.to_string()]);
    assert_eq!(serde_json::to_value(&local.evaluation.warnings).expect("JSON"), timeline["warnings"]);
    // The timeline gives receipt times to the second.
    let to_second = |at: Timestamp| Timestamp::from_second(at.as_second()).expect("a time");
    let mut server_times: Vec<(String, Option<Timestamp>)> = timeline["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|e| {
            (e["id"].as_str().expect("an id").to_owned(), e["received_at"].as_str().map(|t| t.parse().expect("a time")))
        })
        .collect();
    server_times.sort();
    let phone_times: Vec<_> = times.iter().map(|(id, at)| (id.clone(), at.map(to_second))).collect();
    assert_eq!(phone_times, server_times, "the phone holds the server's receipt times");
    assert!(times.iter().any(|(id, _)| *id == on_time.to_string()));
    // `tether-field show`'s episode JSON carries them, exactly as the server's episode JSON.
    let by_id = |json: &serde_json::Value| {
        let mut events = json["events"].as_array().expect("events").clone();
        events.sort_by_key(|e| e["id"].as_str().unwrap_or_default().to_owned());
        events
    };
    let shown = a.core.episode(episode).expect("the episode").to_json();
    let (status, on_server) = tests::call_json(&server, "GET", &format!("/v1/episodes/{episode}"), Some(&maria), None);
    assert_eq!(status, 200, "{on_server}");
    assert_eq!(by_id(&shown), by_id(&on_server));
    assert!(by_id(&shown).iter().all(|e| e["received_at"].is_string()), "{shown}");

    // A teammate's phone receiving the episode whole gets every receipt time with it.
    let got = b.sync().expect("b syncs");
    assert_eq!(got.new_episodes, 1, "{got:?}");
    assert_eq!(receipts(&b, episode), times);
    assert_eq!(flagged(&b.core.actions(episode, Timestamp::now()).expect("b's actions")), [skewed.to_string()]);

    // A later record from the teammate reaches the first phone, its time with it.
    let later = no_answer(&mut b, episode);
    assert!(b.sync().expect("b syncs").complete);
    let summary = a.sync().expect("a syncs");
    assert_eq!(summary.received, 1, "{summary:?}");
    let with_later = receipts(&a, episode);
    assert_eq!(with_later, receipts(&b, episode));
    assert!(with_later.iter().any(|(id, at)| *id == later.to_string() && at.is_some()), "{with_later:?}");
    assert_eq!(a.core.episode(episode).expect("on a").to_json(), b.core.episode(episode).expect("on b").to_json());

    // The store keeps them: a reopened store shows the same, offline.
    let reopened = client_core::Core::open(a.dir.path(), &a.key).expect("open a's store again");
    assert_eq!(reopened.episode(episode).expect("the episode"), a.core.episode(episode).expect("the episode"));

    // Nothing new: the answer says so in a few bytes, receipts or not.
    a.sync().expect("a says it holds b's record");
    let summary = a.sync().expect("an up-to-date sync");
    assert_eq!((summary.round_trips, summary.sent, summary.received), (1, 0, 0), "{summary:?}");
    assert!(summary.bytes_sent + summary.bytes_received < 64, "{summary:?}");
}
