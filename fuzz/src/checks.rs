//! The pure targets: what arbitrary bytes do to the document loader and to the sync
//! protocol's decoders. Each must refuse bad input with an error and never panic; what
//! it accepts must survive a round trip.
//!
//! Also compiled into `episode/tests/fuzz_regressions.rs` (by path), so it uses only
//! `episode`, `automerge` and `serde_json`.

use automerge::ActorId;
use automerge::sync::State;
use episode::document::{EpisodeDoc, Opening};
use episode::sync::{self as protocol, Request, Response};
use episode::{Event, Pathway, PatientRef};

/// The fixture's episode (which the `sync_handler` target's team holds).
pub const STORED: episode::EpisodeId =
    episode::EpisodeId::from_uuid(uuid::Uuid::from_u128(0x0196_0000_0000_7000_8000_0000_0000_0001));
/// The id the `sync_handler` target sends a whole new document under.
pub const NEW: episode::EpisodeId =
    episode::EpisodeId::from_uuid(uuid::Uuid::from_u128(0x0196_0000_0000_7000_8000_0000_0000_0003));

/// A small real episode: opened, with one record. Messages are received on it.
pub fn fixture() -> EpisodeDoc {
    let at: jiff::Timestamp = "2026-03-02T09:00:00Z".parse().expect("a time");
    let opening = Opening {
        id: STORED,
        patient_ref: PatientRef::new("RX-FUZZ-1").expect("a patient reference"),
        team: "team-north".into(),
        opened_at: at,
        opened_by: "u-fuzz".into(),
        pathway: Pathway::RoutineReferral,
        facts: Vec::new(),
        plan: "call on Tuesday".into(),
    };
    let mut doc = EpisodeDoc::open(&opening, ActorId::from(vec![1; 16])).expect("open the fixture");
    let record = serde_json::json!({
        "id": "0196a000-0000-7000-8000-000000000002", "kind": "appointment_missed",
        "appointment": "initial", "at": "2026-03-02T10:00:00Z", "by": "u-fuzz", "device": "phone-fuzz",
    });
    doc.record(&Event::from_value(&record, 0).expect("a valid record")).expect("record");
    doc
}

/// `EpisodeDoc::load` of arbitrary bytes (and the same bytes as incremental changes on a
/// real episode): an error or a document that reads, saves and loads again unchanged.
pub fn document_load(data: &[u8]) {
    if let Ok(mut doc) = EpisodeDoc::load(data, ActorId::from(vec![2; 16])) {
        let episode = doc.episode();
        let saved = doc.save();
        let mut again = EpisodeDoc::load(&saved, ActorId::from(vec![3; 16])).expect("a saved document loads again");
        assert_eq!(again.heads().len(), doc.heads().len(), "the same heads after a round trip");
        assert_eq!(format!("{:?}", again.episode()), format!("{episode:?}"), "the same episode after a round trip");
    }
    let mut doc = fixture();
    let before = doc.heads();
    if doc.load_incremental(data).is_err() {
        assert_eq!(doc.heads(), before, "a refused change leaves the document as it was");
    } else {
        assert!(doc.episode().is_ok(), "an accepted change leaves a readable episode");
    }
}

/// The sync protocol's decoders on arbitrary bytes: the request and response bodies,
/// a stored sync state, and an Automerge sync message received on a real episode from a
/// fresh and from a primed state.
pub fn sync_decode(data: &[u8]) {
    if let Ok(request) = Request::decode(data) {
        assert_eq!(Request::decode(&request.encode()).ok(), Some(request), "a request survives a round trip");
    }
    if let Ok(response) = Response::decode(data) {
        for authoritative in &response.actions {
            let _ = authoritative.evaluation();
        }
        assert_eq!(Response::decode(&response.encode()).ok(), Some(response), "a response survives a round trip");
    }
    let _ = protocol::carries_changes(data);
    let mut doc = fixture();
    let mut stored = protocol::decode_state(Some(data));
    let _ = doc.generate_sync_message(&mut stored);
    for primed in [false, true] {
        let mut doc = fixture();
        let before = doc.heads();
        let mut state = State::new();
        state.shared_heads = before.clone();
        if primed {
            protocol::prime(&mut state);
        }
        match doc.receive_sync_message(&mut state, data) {
            Ok(_) => {
                assert!(doc.episode().is_ok(), "an accepted message leaves a readable episode");
                let _ = doc.generate_sync_message(&mut state);
            }
            Err(_) => assert_eq!(doc.heads(), before, "a refused message leaves the document as it was"),
        }
    }
}
