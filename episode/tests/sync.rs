//! The sync protocol on real Automerge documents: a device and the server, each with its
//! own sync state per document, exchanging real sync messages. Round trips are counted,
//! because the design promises how many a sync takes; refusals are checked to change
//! nothing, and hostile bytes to be refused without a panic.

use std::cell::Cell;
use std::sync::Once;
use std::time::Instant;

use automerge::sync::{self, SyncDoc};
use automerge::transaction::Transactable;
use automerge::{ActorId, AutoCommit, ObjId, ROOT, ReadDoc};
use episode::document::{DocumentError, EpisodeDoc, Opening};
use episode::sync::{
    Body, DecodeError, Document, MAX_DOCUMENTS_PER_REQUEST, MAX_REQUEST_BYTES, PROTOCOL, Request, Response,
    decode_state, has_all, has_unconfirmed, prime,
};
use episode::*;
use jiff::Timestamp;
use serde_json::json;
use uuid::Uuid;

const EPISODE: &str = "0195a1b2-0000-7000-8000-0000000000e1";

fn t(text: &str) -> Timestamp {
    text.parse().unwrap()
}

fn actor(n: u8) -> ActorId {
    ActorId::from(vec![n; 16])
}

fn opening() -> Opening {
    Opening {
        id: EPISODE.parse().unwrap(),
        patient_ref: PatientRef::new("RX-SYNC-1").unwrap(),
        team: "north".into(),
        opened_at: t("2026-03-02T08:00:00Z"),
        opened_by: "u-duty".into(),
        pathway: Pathway::UrgentReferral,
        facts: vec![(FactField::Children, FactValue::Flag(true))],
        plan: "Visit on Monday.".into(),
    }
}

fn event_id(n: u128) -> String {
    Uuid::from_u128(0x0195a1b2_0000_7000_8000_000000000000 + n).to_string()
}

fn event(n: u128, at: &str, body: serde_json::Value) -> Event {
    let mut value = body;
    value["id"] = json!(event_id(n));
    value["at"] = json!(at);
    value["by"] = json!("u-asha");
    value["device"] = json!("d-1");
    Event::from_value(&value, 0).unwrap()
}

fn missed(n: u128, at: &str) -> Event {
    event(n, at, json!({"kind": "appointment_missed", "appointment": "initial"}))
}

fn called(n: u128, at: &str) -> Event {
    event(n, at, json!({"kind": "contact_attempt", "method": "phone", "target": "patient", "outcome": "no_answer"}))
}

/// One side of the sync of one document: the document and its state for the other side.
struct Peer {
    doc: EpisodeDoc,
    state: sync::State,
}

impl Peer {
    /// A session that starts as the protocol starts every request: from the stored state,
    /// decoded and primed.
    fn resume(doc: EpisodeDoc, stored: &[u8]) -> Self {
        let mut state = decode_state(Some(stored));
        prime(&mut state);
        Self { doc, state }
    }

    fn send(&mut self) -> Option<Vec<u8>> {
        self.doc.generate_sync_message(&mut self.state)
    }

    fn receive(&mut self, message: &[u8]) -> bool {
        self.doc.receive_sync_message(&mut self.state, message).unwrap()
    }

    /// Ends the session: what each side persists.
    fn stored(&self) -> Vec<u8> {
        self.state.encode()
    }
}

/// A device with a new episode, and the server with a copy of it, never synced.
fn device_and_server() -> (EpisodeDoc, EpisodeDoc) {
    let mut device = EpisodeDoc::open(&opening(), actor(1)).unwrap();
    let server = EpisodeDoc::load(&device.save(), actor(2)).unwrap();
    (device, server)
}

/// One round trip: the device's message (if any) to the server, then the server's reply
/// (if any) to the device. Returns how many messages crossed (0, 1 or 2).
fn round_trip(device: &mut Peer, server: &mut Peer) -> usize {
    let mut crossed = 0;
    if let Some(message) = device.send() {
        server.receive(&message);
        crossed += 1;
    }
    if let Some(reply) = server.send() {
        device.receive(&reply);
        crossed += 1;
    }
    crossed
}

/// Round trips until one carries nothing either way; returns how many carried something.
/// Panics after `limit` of them: a sync that never ends is a failure, not a hang.
fn sync_until_quiet(device: &mut Peer, server: &mut Peer, limit: usize) -> usize {
    let mut trips = 0;
    while round_trip(device, server) > 0 {
        trips += 1;
        assert!(trips <= limit, "the sync did not settle within {limit} round trips");
    }
    trips
}

fn assert_converged(device: &mut Peer, server: &mut Peer) {
    assert_eq!(device.doc.heads(), server.doc.heads());
    assert_eq!(device.doc.episode().unwrap(), server.doc.episode().unwrap());
    assert!(device.send().is_none(), "the device still has something to say");
    assert!(server.send().is_none(), "the server still has something to say");
    assert!(!has_unconfirmed(&mut device.doc, &device.state));
    assert!(!has_unconfirmed(&mut server.doc, &server.state));
}

/// A device and the server that have synced the opened episode once, with the states
/// each stored at the end of that session.
fn synced_pair() -> (Peer, Peer) {
    let (device, server) = device_and_server();
    let mut device = Peer { doc: device, state: decode_state(None) };
    let mut server = Peer { doc: server, state: decode_state(None) };
    sync_until_quiet(&mut device, &mut server, 3);
    assert_converged(&mut device, &mut server);
    let (device_stored, server_stored) = (device.stored(), server.stored());
    (Peer::resume(device.doc, &device_stored), Peer::resume(server.doc, &server_stored))
}

fn events_of(doc: &mut AutoCommit) -> ObjId {
    match doc.get(ROOT, "events").unwrap() {
        Some((_, id)) => id,
        None => panic!("no events map"),
    }
}

#[test]
fn one_sides_record_crosses_in_one_message_and_one_round_trip() {
    let (mut device, mut server) = synced_pair();
    device.doc.record(&missed(1, "2026-03-02T10:00:00Z")).unwrap();
    assert!(!has_all(&mut server.doc, &device.doc.heads()));

    // The device's first message carries the record: the server gains it at once.
    let message = device.send().expect("the device has a record to send");
    assert!(server.receive(&message), "the first message carries the change");
    assert_eq!(server.doc.heads(), device.doc.heads());
    assert!(has_all(&mut server.doc, &device.doc.heads()));
    assert_eq!(server.doc.episode().unwrap().events.len(), 1);

    // The server's reply confirms it; the device gains nothing.
    let reply = server.send().expect("the server answers");
    assert!(!device.receive(&reply));
    let mut trips = 1;

    // And then there is nothing more to say, either way.
    trips += sync_until_quiet(&mut device, &mut server, 3);
    assert_eq!(trips, 1, "one side's change must cross in one round trip");
    assert_converged(&mut device, &mut server);
}

#[test]
fn a_server_change_also_crosses_in_one_round_trip() {
    let (mut device, mut server) = synced_pair();
    server.doc.record(&called(1, "2026-03-02T10:00:00Z")).unwrap();
    // The device speaks first, as every request does; the answer carries the change.
    let message = device.send().expect("a session starts with a message");
    assert!(!server.receive(&message));
    let reply = server.send().expect("the server has a change to send");
    assert!(device.receive(&reply));
    assert_eq!(device.doc.heads(), server.doc.heads(), "the change crossed in one round trip");
    // The server learns that the device has it from the device's next message, which
    // carries no change; after that, silence.
    let ack = device.send().expect("the device confirms what it received");
    assert!(!server.receive(&ack));
    assert!(server.send().is_none());
    assert_converged(&mut device, &mut server);
}

#[test]
fn concurrent_changes_on_both_sides_converge_within_two_round_trips() {
    let (mut device, mut server) = synced_pair();
    device.doc.record(&missed(1, "2026-03-02T10:00:00Z")).unwrap();
    device.doc.set_plan("Visit on Monday. Sister is the named contact.", t("2026-03-02T10:01:00Z")).unwrap();
    server.doc.record(&called(2, "2026-03-02T10:30:00Z")).unwrap();
    server.doc.set_plan("Urgent: visit on Monday.", t("2026-03-02T10:31:00Z")).unwrap();

    let trips = sync_until_quiet(&mut device, &mut server, 5);
    assert!(trips <= 2, "concurrent changes took {trips} round trips");
    assert_converged(&mut device, &mut server);
    let episode = device.doc.episode().unwrap();
    let mut ids: Vec<String> = episode.events.iter().map(|e| e.id.to_string()).collect();
    ids.sort();
    assert_eq!(ids, [event_id(1), event_id(2)]);
    assert!(episode.plan.contains("Urgent") && episode.plan.contains("named contact"), "{}", episode.plan);
}

#[test]
fn a_first_sync_from_fresh_states_converges() {
    // A server that has never seen the device's changes beyond the opening, and states
    // that have never been stored: fresh, unprimed, as on a first sync.
    let (mut device, server) = device_and_server();
    device.record(&missed(1, "2026-03-02T10:00:00Z")).unwrap();
    device.record(&called(2, "2026-03-02T10:30:00Z")).unwrap();
    device.record(&called(3, "2026-03-02T11:30:00Z")).unwrap();
    let mut device = Peer { doc: device, state: decode_state(None) };
    let mut server = Peer { doc: server, state: decode_state(None) };
    let trips = sync_until_quiet(&mut device, &mut server, 5);
    assert!(trips <= 2, "a first sync took {trips} round trips");
    assert_converged(&mut device, &mut server);
    assert_eq!(server.doc.episode().unwrap().events.len(), 3);
}

#[test]
fn a_lost_request_is_made_good_by_the_next_session() {
    let (mut device, mut server) = synced_pair();
    let (device_stored, server_stored) = (device.stored(), server.stored());
    device.doc.record(&missed(1, "2026-03-02T10:00:00Z")).unwrap();
    // The request is sent and lost on the way.
    let lost = device.send().expect("a record to send");
    drop(lost);
    // Both sides go on changing the episode before the next sync.
    device.doc.record(&called(2, "2026-03-02T10:30:00Z")).unwrap();
    server.doc.record(&called(3, "2026-03-02T10:45:00Z")).unwrap();

    // The next request starts from the stored states, not from the in-flight one.
    let mut device = Peer::resume(device.doc, &device_stored);
    let mut server = Peer::resume(server.doc, &server_stored);
    let trips = sync_until_quiet(&mut device, &mut server, 5);
    assert!(trips <= 2, "took {trips} round trips");
    assert_converged(&mut device, &mut server);
    assert_eq!(device.doc.episode().unwrap().events.len(), 3);
}

#[test]
fn a_lost_response_is_made_good_by_the_next_session() {
    let (mut device, mut server) = synced_pair();
    let device_stored = device.stored();
    device.doc.record(&missed(1, "2026-03-02T10:00:00Z")).unwrap();
    server.doc.record(&called(2, "2026-03-02T10:10:00Z")).unwrap();
    // The server applies the request, stores its state, answers, and the answer is lost:
    // the device never stores a new state.
    let message = device.send().unwrap();
    assert!(server.receive(&message));
    let lost = server.send().expect("the server has a change to send");
    drop(lost);
    let server_stored = server.stored();
    assert_ne!(server_stored, device_stored, "the server stored what it learnt");
    device.doc.record(&called(3, "2026-03-02T10:20:00Z")).unwrap();

    let mut device = Peer::resume(device.doc, &device_stored);
    let mut server = Peer::resume(server.doc, &server_stored);
    let trips = sync_until_quiet(&mut device, &mut server, 5);
    assert!(trips <= 2, "took {trips} round trips");
    assert_converged(&mut device, &mut server);
    assert_eq!(server.doc.episode().unwrap().events.len(), 3);
}

#[test]
fn a_stored_state_that_does_not_decode_costs_a_longer_sync_not_a_change() {
    let (mut device, server) = synced_pair();
    device.doc.record(&missed(1, "2026-03-02T10:00:00Z")).unwrap();
    for stored in [&b""[..], b"\xff\xff\xff", b"garbage that is not a state"] {
        assert_eq!(decode_state(Some(stored)), sync::State::new());
    }
    let mut device = Peer::resume(device.doc, b"not a state");
    let mut server = Peer::resume(server.doc, &[0x43, 0x05]);
    sync_until_quiet(&mut device, &mut server, 5);
    assert_converged(&mut device, &mut server);
    assert_eq!(server.doc.episode().unwrap().events.len(), 1);
}

/// A faulty or hostile peer's copy of `target`, changed by `change`, and the sync message
/// that carries that change (and only it) to `target`.
fn rogue_message(target: &mut Peer, change: impl FnOnce(&mut AutoCommit)) -> Vec<u8> {
    let mut rogue = target.doc.automerge().fork();
    change(&mut rogue);
    rogue.commit();
    let mut state = sync::State::new();
    state.shared_heads = target.doc.heads();
    prime(&mut state);
    let message = rogue.sync().generate_sync_message(&mut state).expect("the rogue has a change to send");
    assert_eq!(message.changes.len(), 1, "the message carries the rogue change");
    message.encode()
}

/// Asserts that `message` is refused by `peer` and changes neither its document nor its
/// state, and that the peer then still syncs with an honest device.
fn assert_refused(server: &mut Peer, device: &mut Peer, message: &[u8], what: &str) {
    let heads = server.doc.heads();
    let episode = server.doc.episode().unwrap();
    let state = server.state.clone();
    let stored = server.state.encode();
    match server.doc.receive_sync_message(&mut server.state, message) {
        Err(DocumentError::Refused(reason)) => assert!(!reason.is_empty()),
        other => panic!("{what}: expected a refusal, got {other:?}"),
    }
    assert_eq!(server.doc.heads(), heads, "{what}: the document changed");
    assert_eq!(server.doc.episode().unwrap(), episode, "{what}: the episode changed");
    assert_eq!(server.state, state, "{what}: the state changed");
    assert_eq!(server.state.encode(), stored, "{what}: the stored state changed");
    // Refusing once does not break the next honest sync.
    sync_until_quiet(device, server, 5);
    assert_converged(device, server);
}

fn synced_pair_with_a_record() -> (Peer, Peer) {
    let (mut device, mut server) = synced_pair();
    device.doc.record(&missed(1, "2026-03-02T10:00:00Z")).unwrap();
    sync_until_quiet(&mut device, &mut server, 3);
    assert_converged(&mut device, &mut server);
    (device, server)
}

#[test]
fn a_message_that_alters_a_record_is_refused_and_changes_nothing() {
    let (mut device, mut server) = synced_pair_with_a_record();
    let message = rogue_message(&mut server, |rogue| {
        let events = events_of(rogue);
        let altered = json!({"id": event_id(1), "kind": "appointment_missed", "appointment": "follow_up",
                             "at": "2026-03-02T10:00:00Z", "by": "u-asha", "device": "d-1"});
        rogue.put(&events, event_id(1).as_str(), altered.to_string()).unwrap();
    });
    device.doc.record(&called(2, "2026-03-02T11:00:00Z")).unwrap();
    assert_refused(&mut server, &mut device, &message, "an altered record");
    assert_eq!(server.doc.episode().unwrap().events.len(), 2);
}

#[test]
fn a_message_that_deletes_a_record_is_refused_and_changes_nothing() {
    let (mut device, mut server) = synced_pair_with_a_record();
    let message = rogue_message(&mut server, |rogue| {
        let events = events_of(rogue);
        rogue.delete(&events, event_id(1).as_str()).unwrap();
    });
    assert_refused(&mut server, &mut device, &message, "a deleted record");
}

#[test]
fn a_message_that_adds_an_invalid_record_is_refused_and_changes_nothing() {
    let (mut device, mut server) = synced_pair_with_a_record();
    // Missing `at`, `by` and `device`.
    let message = rogue_message(&mut server, |rogue| {
        let events = events_of(rogue);
        let invalid = json!({"id": event_id(7), "kind": "appointment_missed", "appointment": "initial"});
        rogue.put(&events, event_id(7).as_str(), invalid.to_string()).unwrap();
    });
    assert_refused(&mut server, &mut device, &message, "a record missing fields");
    // Not JSON at all.
    let message = rogue_message(&mut server, |rogue| {
        let events = events_of(rogue);
        rogue.put(&events, event_id(8).as_str(), "{not json").unwrap();
    });
    assert_refused(&mut server, &mut device, &message, "a record that is not JSON");
}

#[test]
fn a_message_that_changes_the_identity_is_refused_and_changes_nothing() {
    let (mut device, mut server) = synced_pair_with_a_record();
    let message = rogue_message(&mut server, |rogue| {
        rogue.put(ROOT, "team", "south").unwrap();
    });
    assert_refused(&mut server, &mut device, &message, "another team");
    let message = rogue_message(&mut server, |rogue| {
        rogue.put(ROOT, "patient_ref", "RX-OTHER").unwrap();
    });
    assert_refused(&mut server, &mut device, &message, "another patient");
    assert_eq!(server.doc.episode().unwrap().patient_ref.as_str(), "RX-SYNC-1");
}

#[test]
fn a_message_that_replaces_the_events_map_is_refused() {
    let (mut device, mut server) = synced_pair_with_a_record();
    // A device records offline into the events map it has.
    device.doc.record(&called(2, "2026-03-02T11:00:00Z")).unwrap();
    // A faulty peer replaces the events map by a new map holding a copy of every record.
    // Each record reads the same, but the map is another object: what other devices
    // record into the original map no longer shows. Were it accepted, the server would
    // then take the device's record with `Ok(true)` but not show it, and the device would
    // refuse every later message from the server ("the changes alter or delete the record
    // ..."), so the two would never converge again. So the receive refuses it, and the
    // device's offline record still reaches the server.
    let message = rogue_message(&mut server, |rogue| {
        let events = events_of(rogue);
        let records: Vec<(String, String)> = rogue
            .keys(&events)
            .map(|key| {
                let (value, _) = rogue.get(&events, key.as_str()).unwrap().unwrap();
                (key, value.into_string().unwrap())
            })
            .collect();
        let copy = rogue.put_object(ROOT, "events", automerge::ObjType::Map).unwrap();
        for (key, value) in records {
            rogue.put(&copy, key.as_str(), value).unwrap();
        }
    });
    assert_refused(&mut server, &mut device, &message, "a replaced events map");
    assert_eq!(server.doc.episode().unwrap().events.len(), 2, "the device's offline record is on the server");
}

#[test]
fn a_message_that_replaces_the_plan_or_the_facts_is_refused() {
    let (mut device, mut server) = synced_pair_with_a_record();
    device.doc.set_plan("Visit on Monday. Sister is the named contact.", t("2026-03-02T11:00:00Z")).unwrap();
    let message = rogue_message(&mut server, |rogue| {
        let plan = rogue.put_object(ROOT, "plan", automerge::ObjType::Text).unwrap();
        rogue.splice_text(&plan, 0, 0, "Replaced.").unwrap();
        let facts = rogue.put_object(ROOT, "facts", automerge::ObjType::Map).unwrap();
        rogue.put(&facts, "pathway", "urgent_referral").unwrap();
    });
    assert_refused(&mut server, &mut device, &message, "a replaced plan and facts");
    let episode = server.doc.episode().unwrap();
    assert!(episode.plan.contains("named contact"), "{}", episode.plan);
    assert_eq!(episode.facts.children.values(), [true]);
}

#[test]
fn hostile_bytes_are_refused_with_an_error_not_a_panic() {
    let (mut device, mut server) = synced_pair();
    device.doc.record(&missed(1, "2026-03-02T10:00:00Z")).unwrap();
    let message = device.send().unwrap();
    let heads = server.doc.heads();
    let state = server.state.clone();

    let mut refuse = |bytes: &[u8], what: &str| {
        let mut result = Ok(false);
        let panics = panics_during(|| result = server.doc.receive_sync_message(&mut server.state, bytes));
        assert!(result.is_err(), "{what}: {result:?}");
        assert_eq!(panics, 0, "{what}: refused only by catching a panic");
        assert_eq!(server.doc.heads(), heads, "{what}");
        assert_eq!(server.state, state, "{what}");
    };
    refuse(b"", "empty");
    refuse(b"garbage, not a sync message", "garbage");
    refuse(&[0x42], "a message type and nothing else");
    refuse(&[0x42, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f], "a huge count of heads");
    refuse(&[0x42, 0x00, 0x00, 0x00, 0x01, 0xff, 0xff, 0xff, 0xff, 0x0f], "a change claiming 4 GB");
    refuse(&vec![0x42; 64 * 1024], "a wall of one byte");
    // Cut anywhere in the heads, the have or the changes. (Cut exactly where the
    // trailing flags begin, it is a valid message of the older format.)
    let flags_start = flags_start(&message);
    for cut in 0..flags_start {
        refuse(&message[..cut], &format!("cut at {cut} of {}", message.len()));
    }
    for cut in flags_start + 1..message.len() {
        refuse(&message[..cut], &format!("cut in the flags at {cut} of {}", message.len()));
    }
    // The message whole is still taken.
    assert!(server.receive(&message));
}

/// Where the trailing flags of an encoded sync message begin: the message re-encoded
/// without them is exactly that long.
fn flags_start(message: &[u8]) -> usize {
    let mut decoded = sync::Message::decode(message).unwrap();
    assert!(decoded.flags.is_some(), "this Automerge sends flags");
    decoded.flags = None;
    decoded.encode().len()
}

#[test]
fn bit_flips_anywhere_in_a_message_never_panic_or_break_the_next_sync() {
    let (mut device, mut server) = synced_pair();
    device.doc.record(&missed(1, "2026-03-02T10:00:00Z")).unwrap();
    let device_stored = device.stored();
    let message = device.send().unwrap();
    let server_stored = server.stored();
    let saved = server.doc.save();
    let mut accepted = 0;
    for i in 0..message.len() {
        for mask in [0x01, 0x80, 0xff] {
            let mut flipped = message.clone();
            flipped[i] ^= mask;
            let mut peer = Peer::resume(EpisodeDoc::load(&saved, actor(2)).unwrap(), &server_stored);
            let heads = peer.doc.heads();
            let panics = panics_during(|| match peer.doc.receive_sync_message(&mut peer.state, &flipped) {
                // A flip Automerge cannot see (in a hash it does not check, a bloom
                // filter, the flags) may be taken, but must leave a readable episode.
                Ok(gained) => {
                    accepted += 1;
                    peer.doc.episode().unwrap();
                    if !gained {
                        assert_eq!(peer.doc.heads(), heads);
                    }
                }
                Err(_) => assert_eq!(peer.doc.heads(), heads, "a refusal changed the document"),
            });
            assert_eq!(panics, 0, "byte {i} ^ {mask:#x}: refused only by catching a panic");
            // Whatever the damaged message did to the state, the next message is built
            // without a panic.
            assert_eq!(panics_during(|| drop(peer.send())), 0, "byte {i} ^ {mask:#x}: generating panicked");
        }
    }
    assert!(accepted < message.len() * 3, "no flip was noticed");
    // The real message still syncs.
    let mut device = Peer::resume(device.doc, &device_stored);
    let mut server = Peer::resume(server.doc, &server_stored);
    sync_until_quiet(&mut device, &mut server, 3);
    assert_converged(&mut device, &mut server);
}

thread_local! {
    static PANICS: Cell<usize> = const { Cell::new(0) };
}

/// How many panics `f` raised on this thread, caught or not. The sync steps catch
/// Automerge's panics as a last defence; a build with `panic = "abort"` (as mobile builds
/// often are) would not survive them, so hostile bytes must be refused without one.
fn panics_during(f: impl FnOnce()) -> usize {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            PANICS.with(|p| p.set(p.get() + 1));
            previous(info);
        }));
    });
    let before = PANICS.with(Cell::get);
    f();
    PANICS.with(Cell::get) - before
}

fn request(documents: Vec<Document>) -> Request {
    Request { protocol: PROTOCOL, cursor: 1_234_567, device_time_ms: 1_772_438_400_000, documents }
}

#[test]
fn a_request_round_trips_and_an_up_to_date_one_is_tiny() {
    let (mut device, _server) = device_and_server();
    let whole = device.save();
    let message = Peer { doc: device, state: sync::State::new() }.send().unwrap();
    let full = request(vec![
        Document { episode: EPISODE.parse().unwrap(), body: Body::Whole(whole) },
        Document { episode: Uuid::from_u128(7).into(), body: Body::Message(message) },
    ]);
    assert_eq!(Request::decode(&full.encode()).unwrap(), full);

    let up_to_date = request(Vec::new());
    let bytes = up_to_date.encode();
    assert!(bytes.len() < 32, "an up-to-date request is {} bytes", bytes.len());
    assert_eq!(Request::decode(&bytes).unwrap(), up_to_date);

    let response = Response {
        protocol: PROTOCOL,
        cursor: 99,
        server_time_ms: 1_772_438_400_123,
        documents: full.documents.clone(),
        actions: vec![episode::sync::Authoritative::new(
            Uuid::from_u128(7).into(),
            &episode::pathway::Evaluation { actions: vec![], warnings: vec![] },
        )],
        teams: vec![episode::sync::EpisodeTeam { episode: Uuid::from_u128(7).into(), team: "north".into() }],
        leaving: vec![Uuid::from_u128(8).into()],
        dropped: vec![Uuid::from_u128(9).into()],
        more: true,
        refused: vec![
            episode::sync::Refused { episode: Uuid::from_u128(10).into(), reason: episode::sync::Refusal::NotFound },
            episode::sync::Refused {
                episode: Uuid::from_u128(11).into(),
                reason: episode::sync::Refusal::NotSignedInHere {
                    record: Some(Uuid::from_u128(12).into()),
                    by: "maya".into(),
                },
            },
            episode::sync::Refused {
                episode: Uuid::from_u128(13).into(),
                reason: episode::sync::Refusal::EpisodeFull { bytes: 5_000_000, budget: 4_194_304 },
            },
        ],
    };
    assert_eq!(Response::decode(&response.encode()).unwrap(), response);
}

#[test]
fn bad_request_and_response_bodies_are_refused_with_the_right_error() {
    for garbage in [&b""[..], b"\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff", b"GET / HTTP/1.1\r\n"] {
        assert!(matches!(Request::decode(garbage), Err(DecodeError::Malformed(_))), "{garbage:?}");
        assert!(matches!(Response::decode(garbage), Err(DecodeError::Malformed(_))), "{garbage:?}");
    }

    let mut other = request(Vec::new());
    other.protocol = PROTOCOL + 1;
    assert!(matches!(Request::decode(&other.encode()), Err(DecodeError::Protocol(p)) if p == PROTOCOL + 1));
    let response = Response {
        protocol: 0,
        cursor: 0,
        server_time_ms: 0,
        documents: vec![],
        actions: vec![],
        teams: vec![],
        leaving: vec![],
        dropped: vec![],
        more: false,
        refused: vec![],
    };
    assert!(matches!(Response::decode(&response.encode()), Err(DecodeError::Protocol(0))));

    let document = |n: u128| Document { episode: Uuid::from_u128(n).into(), body: Body::Message(vec![0x42]) };
    let most = request((0..MAX_DOCUMENTS_PER_REQUEST as u128).map(document).collect());
    assert_eq!(Request::decode(&most.encode()).unwrap(), most);
    let too_many = request((0..=MAX_DOCUMENTS_PER_REQUEST as u128).map(document).collect());
    match Request::decode(&too_many.encode()) {
        Err(DecodeError::TooManyDocuments(n)) => assert_eq!(n, MAX_DOCUMENTS_PER_REQUEST + 1),
        other => panic!("expected too many documents, got {other:?}"),
    }

    // A body over the limit is refused before it is read.
    let huge = vec![0u8; MAX_REQUEST_BYTES + 1];
    assert!(matches!(Request::decode(&huge), Err(DecodeError::TooLarge(n)) if n == MAX_REQUEST_BYTES + 1));
}

#[test]
fn length_prefixes_claiming_huge_sizes_are_refused_without_allocating_them() {
    // protocol 1, cursor 0, device time 0, then a count of documents near u64::MAX.
    let huge_count = [0x01, 0x00, 0x00, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01];
    assert!(matches!(Request::decode(&huge_count), Err(DecodeError::Malformed(_))));
    // One document whose message claims 2^62 bytes.
    let one = request(vec![Document { episode: Uuid::from_u128(1).into(), body: Body::Message(vec![7]) }]);
    let mut bytes = one.encode();
    assert_eq!(bytes.pop(), Some(7));
    assert_eq!(bytes.pop(), Some(1), "the message's length");
    bytes.extend([0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x40, 7]);
    assert!(matches!(Request::decode(&bytes), Err(DecodeError::Malformed(_))));
    // The same in a response's documents, and in its list of actions.
    let start = Instant::now();
    let mut response = vec![0x01, 0x00, 0x00];
    response.extend([0xff, 0xff, 0xff, 0xff, 0x0f]);
    assert!(matches!(Response::decode(&response), Err(DecodeError::Malformed(_))));
    let mut response = vec![0x01, 0x00, 0x00, 0x00];
    response.extend([0xff, 0xff, 0xff, 0xff, 0x0f]);
    assert!(matches!(Response::decode(&response), Err(DecodeError::Malformed(_))));
    assert!(start.elapsed().as_secs() < 1, "refusing huge claims should not take long");
}

#[test]
fn has_unconfirmed_tells_whether_the_peer_has_confirmed_everything() {
    let (mut device, mut server) = synced_pair();
    assert!(!has_unconfirmed(&mut device.doc, &device.state));
    assert!(!has_unconfirmed(&mut server.doc, &server.state));
    device.doc.record(&missed(1, "2026-03-02T10:00:00Z")).unwrap();
    assert!(has_unconfirmed(&mut device.doc, &device.state));
    assert!(!has_unconfirmed(&mut server.doc, &server.state), "the server has nothing new");
    // Sent but not yet confirmed: still unconfirmed.
    let message = device.send().unwrap();
    assert!(has_unconfirmed(&mut device.doc, &device.state));
    server.receive(&message);
    let reply = server.send().unwrap();
    device.receive(&reply);
    assert!(!has_unconfirmed(&mut device.doc, &device.state));
    // And it survives being stored and decoded.
    let stored = decode_state(Some(&device.stored()));
    assert!(!has_unconfirmed(&mut device.doc, &stored));
    // A fresh state has confirmed nothing.
    assert!(has_unconfirmed(&mut device.doc, &sync::State::new()));
}

#[test]
fn an_authoritative_evaluation_round_trips_and_is_small() {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/examples/urgent-referral.json"))
        .expect("the example episode");
    let episode = episode::Episode::from_json(&text).expect("a valid episode");
    let now: jiff::Timestamp = "2026-03-03T12:00:00Z".parse().expect("a time");
    let evaluation = episode::pathway::evaluate(&episode, now, &episode::pathway::Calendar::england_and_wales());
    assert!(!evaluation.actions.is_empty());
    let wire = episode::sync::Authoritative::new(episode.id, &evaluation);
    assert_eq!(wire.evaluation().expect("it inflates"), evaluation, "titles come back from the codes");
    let json = serde_json::to_vec(&evaluation).expect("JSON");
    assert!(
        wire.evaluation.len() * 3 < json.len(),
        "{} deflated bytes for {} of JSON",
        wire.evaluation.len(),
        json.len()
    );
}

#[test]
fn what_a_message_brings_is_saved_incrementally_as_its_changes_alone() {
    // The server stores each synced change as a row; a received message is applied to a
    // fork, which must not make the next incremental save hold the whole history again.
    let (mut device, mut server) = synced_pair();
    for n in 1..=20 {
        device.doc.record(&called(n, "2026-03-02T10:00:00Z")).unwrap();
    }
    sync_until_quiet(&mut device, &mut server, 3);
    device.doc.save_incremental();
    let snapshot = server.doc.save();
    device.doc.record(&missed(100, "2026-03-02T11:00:00Z")).unwrap();
    let own = device.doc.save_incremental().len();
    sync_until_quiet(&mut device, &mut server, 3);
    let received = server.doc.save_incremental();
    assert!(received.len() <= own + 16, "one record's change: {} bytes, its own {own}", received.len());
    // (Before, both sides' incremental saves held all twenty-one records: over 7 KB.)
    assert!(own < 1_000 && received.len() < 1_000, "one record, not the history: {own} and {} bytes", received.len());
    // Nothing was left out: the snapshot and that change make the server's document.
    let mut reloaded = EpisodeDoc::load_with_changes(&snapshot, [received.as_slice()], actor(9)).unwrap();
    assert_eq!(reloaded.heads(), server.doc.heads());
    assert_eq!(server.doc.save_incremental(), Vec::<u8>::new(), "saved once");
}

/// A peer's message whose Bloom filter Automerge would trust blindly when it next builds
/// a message for that peer: entries but no bits (it divides by zero; found by fuzzing
/// `POST /v1/sync`), or billions of probes (it allocates without bound). Refused whole.
#[test]
fn a_message_with_a_malformed_bloom_filter_is_refused_and_changes_nothing() {
    let (mut device, mut server) = synced_pair_with_a_record();
    let honest = device.doc.automerge().sync().generate_sync_message(&mut sync::State::new()).expect("a message");
    let hash = device.doc.heads()[0];
    let mut message = sync::Message::decode(&honest.encode()).expect("an honest message");
    message.have =
        vec![sync::Have { last_sync: Vec::new(), bloom: sync::BloomFilter::from_hashes(std::iter::once(hash)) }];
    let bytes = message.encode();
    // The filter as encoded: its length (5), one entry, 10 bits per entry, 7 probes, and
    // two bytes of bits.
    let at = bytes.windows(4).position(|w| w == [0x05, 0x01, 0x0a, 0x07]).expect("the filter in the message");
    let patched = |filter: &[u8]| [&bytes[..at], filter, &bytes[at + 6..]].concat();
    let (b0, b1) = (bytes[at + 4], bytes[at + 5]);
    for (what, filter) in [
        ("no bits", vec![0x03, 0x01, 0x00, 0x07]),
        ("no probes", vec![0x05, 0x01, 0x0a, 0x00, b0, b1]),
        ("four billion probes", vec![0x09, 0x01, 0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f, b0, b1]),
    ] {
        let hostile = patched(&filter);
        assert!(sync::Message::decode(&hostile).is_ok(), "{what}: Automerge itself reads it");
        let (heads, state) = (server.doc.heads(), server.state.clone());
        match server.doc.receive_sync_message(&mut server.state, &hostile) {
            Err(DocumentError::Corrupt { what: Some(reason), cause: None }) => {
                assert!(reason.contains("Bloom filter"), "{what}: {reason}")
            }
            other => panic!("{what}: expected a refusal, got {other:?}"),
        }
        assert_eq!((server.doc.heads(), &server.state), (heads, &state), "{what}: something changed");
    }
    // The honest filter passes, and the pair still syncs.
    server.doc.receive_sync_message(&mut server.state, &bytes).expect("an honest filter");
    sync_until_quiet(&mut device, &mut server, 5);
    assert_converged(&mut device, &mut server);
}

/// A received change is read once, to check it, and that reading is what the episode
/// shows until the document changes again: it must equal a fresh reading of the same
/// document, and must not outlive a local record or a change made through Automerge.
#[test]
fn the_episode_read_by_a_check_is_the_episode_and_goes_stale_with_any_change() {
    let (mut device, mut server) = synced_pair();
    device.doc.record(&missed(1, "2026-03-02T10:00:00Z")).unwrap();
    let message = device.send().expect("a record to send");
    assert!(server.receive(&message));
    let fresh = |doc: &mut EpisodeDoc| EpisodeDoc::load(&doc.save(), actor(9)).unwrap().episode().unwrap();
    let checked = server.doc.episode().unwrap();
    assert_eq!(checked.events.len(), 1);
    assert_eq!(checked, fresh(&mut server.doc), "the checked reading is the document's");

    // A local record after it is read.
    server.doc.record(&called(2, "2026-03-02T11:00:00Z")).unwrap();
    assert_eq!(server.doc.episode().unwrap().events.len(), 2);
    assert_eq!(server.doc.episode().unwrap(), fresh(&mut server.doc));

    // A merge reads the result; a change through Automerge itself reads afresh.
    let mut other = EpisodeDoc::load(&device.doc.save(), actor(3)).unwrap();
    other.record(&called(3, "2026-03-02T12:00:00Z")).unwrap();
    server.doc.merge(&mut other).unwrap();
    assert_eq!(server.doc.episode().unwrap().events.len(), 3);
    let am = server.doc.automerge();
    let facts = match am.get(ROOT, "facts").unwrap() {
        Some((_, id)) => id,
        None => panic!("no facts map"),
    };
    am.put(&facts, "children", false).unwrap();
    am.commit();
    let read = server.doc.episode().unwrap();
    assert_eq!(read, fresh(&mut server.doc));
    assert_eq!(read.facts.children, Fact::new(false), "a change made through Automerge shows");
}
