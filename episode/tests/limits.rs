//! The limits of `episode::limits`: a text field, a name, a record, the plan and an
//! episode's budget are refused past their limit, naming what and never the text; and
//! what is stored already reads whatever its size.

use automerge::transaction::Transactable;
use automerge::{ActorId, ROOT, ReadDoc, Value as AmValue};
use episode::document::{DocumentError, EpisodeDoc, Opening};
use episode::limits::{
    EPISODE_BUDGET_BYTES, MAX_NAME_BYTES, MAX_PLAN_BYTES, MAX_RECORD_BYTES, MAX_TEXT_BYTES, TooLong,
};
use episode::sync::Refusal;
use episode::*;
use jiff::Timestamp;
use serde_json::json;
use uuid::Uuid;

/// A new id: episode's uuid has no clock feature, so ids are counted.
fn new_id() -> Uuid {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    Uuid::from_u128(
        0x0195a1b2_0000_7000_8000_000000000000 + u128::from(NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)),
    )
}

fn t(text: &str) -> Timestamp {
    text.parse().unwrap()
}

fn opening(plan: &str) -> Opening {
    Opening {
        id: new_id().into(),
        patient_ref: PatientRef::new("RX-LIMIT-1").unwrap(),
        team: "north".into(),
        opened_at: t("2026-03-02T08:00:00Z"),
        opened_by: "asha".into(),
        pathway: Pathway::RoutineReferral,
        facts: vec![],
        plan: plan.into(),
    }
}

fn visit(note: &str, by: &str) -> Event {
    let value = json!({"id": new_id().to_string(), "kind": "home_visit", "at": "2026-03-02T10:00:00Z",
                       "by": by, "device": "d-1", "announced": false, "outcome": "no_answer", "note": note});
    Event::from_value(&value, 0).unwrap()
}

#[test]
fn a_text_field_a_name_and_a_record_are_refused_past_their_limits_naming_what() {
    let mut doc = EpisodeDoc::open(&opening(""), ActorId::random()).unwrap();
    // At the limit: stored.
    doc.record(&visit(&"a".repeat(MAX_TEXT_BYTES), "asha")).unwrap();
    let before = doc.episode().unwrap().events.len();

    // One byte over: refused, naming the record and the field, and nothing stored.
    let long = visit(&"SECRET-NOTE-".repeat(MAX_TEXT_BYTES / 12 + 1), "asha");
    match doc.record(&long) {
        Err(DocumentError::TooLong(TooLong { record, field, len, limit })) => {
            assert_eq!((record, field.as_str(), limit), (Some(long.id), "note", MAX_TEXT_BYTES));
            assert!(len > MAX_TEXT_BYTES);
        }
        other => panic!("expected the note refused, got {other:?}"),
    }
    let message = doc.record(&long).unwrap_err().to_string();
    assert!(message.contains("`note`") && !message.contains("SECRET"), "{message}");

    // A name past its limit, and a record whose fields are each allowed but not together.
    let by = visit("", &"b".repeat(MAX_NAME_BYTES + 1));
    assert!(matches!(doc.record(&by), Err(DocumentError::TooLong(TooLong { ref field, .. })) if field == "by"));
    let text = "c".repeat(MAX_TEXT_BYTES);
    let decision = Event::from_value(
        &json!({"id": new_id().to_string(), "kind": "decision", "at": "2026-03-02T10:00:00Z", "by": "asha",
                "device": "d-1", "topic": "cold_call", "outcome": "yes", "rationale": text, "note": text}),
        0,
    )
    .unwrap();
    match doc.record(&decision) {
        Err(DocumentError::TooLong(TooLong { field, limit, .. })) => {
            assert_eq!((field.as_str(), limit), ("", MAX_RECORD_BYTES));
        }
        other => panic!("expected the record refused as a whole, got {other:?}"),
    }
    assert_eq!(doc.episode().unwrap().events.len(), before, "nothing refused was stored");

    // The typed refusal a server sends for it.
    let refusal = Refusal::from_document(&doc.record(&long).unwrap_err());
    assert_eq!(refusal, Refusal::TooLarge { record: long.id, field: "note".into(), limit: MAX_TEXT_BYTES as u64 });
}

#[test]
fn the_plan_and_the_opening_are_refused_past_their_limits() {
    let mut doc = EpisodeDoc::open(&opening(&"p".repeat(MAX_PLAN_BYTES)), ActorId::random()).unwrap();
    let refused = doc.set_plan(&"p".repeat(MAX_PLAN_BYTES + 1), t("2026-03-02T09:00:00Z"));
    assert!(
        matches!(refused, Err(DocumentError::TooLong(TooLong { ref field, .. })) if field == "plan"),
        "{refused:?}"
    );
    assert_eq!(doc.plan_text().unwrap().len(), MAX_PLAN_BYTES);
    let mut long = opening("");
    long.patient_ref = PatientRef::new("R".repeat(MAX_NAME_BYTES + 1)).unwrap();
    let error = EpisodeDoc::open(&long, ActorId::random()).unwrap_err();
    assert!(matches!(&error, DocumentError::TooLong(TooLong { field, .. }) if field == "patient_ref"));
    assert!(!error.to_string().contains("RRRR"), "{error}");
}

#[test]
fn a_change_past_the_budget_is_refused_and_what_is_stored_still_loads() {
    let actor = ActorId::random();
    let mut doc = EpisodeDoc::open(&opening(""), actor.clone()).unwrap();
    let snapshot = doc.save();
    let mut changes = Vec::new();
    // Incompressible notes of nearly the largest size, until the budget refuses one.
    let mut seed = 1u64;
    let full = loop {
        let note: String = (0..MAX_TEXT_BYTES - 64)
            .map(|_| {
                seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                char::from(b'a' + (seed >> 59) as u8 % 26)
            })
            .collect();
        doc.record(&visit(&note, "asha")).unwrap();
        match doc.save_incremental_within_budget() {
            Ok(bytes) => changes.push(bytes),
            Err(error) => break error,
        }
        assert!(changes.len() < 2 * EPISODE_BUDGET_BYTES / MAX_TEXT_BYTES, "the budget never refused");
    };
    let DocumentError::Full { bytes } = full else { panic!("expected Full, got {full:?}") };
    assert!(bytes > EPISODE_BUDGET_BYTES);
    assert_eq!(
        Refusal::from_document(&full),
        Refusal::EpisodeFull { bytes: bytes as u64, budget: EPISODE_BUDGET_BYTES as u64 }
    );
    let stored: usize = snapshot.len() + changes.iter().map(Vec::len).sum::<usize>();
    assert!(stored <= EPISODE_BUDGET_BYTES && stored > EPISODE_BUDGET_BYTES * 9 / 10, "stored {stored}");

    // What was stored loads, as snapshot and changes or compacted, and reads every record.
    let mut loaded =
        EpisodeDoc::load_with_changes(&snapshot, changes.iter().map(Vec::as_slice), actor.clone()).unwrap();
    assert_eq!(loaded.stored_bytes(), stored);
    assert_eq!(loaded.episode().unwrap().events.len(), changes.len());
    let whole = loaded.save();
    assert!(whole.len() <= stored);
    let mut again = EpisodeDoc::load(&whole, actor).unwrap();
    assert_eq!(again.episode().unwrap().events.len(), changes.len());
    // A small change still fits only if there is room: the budget counts what is stored.
    again.record(&visit("one more", "asha")).unwrap();
    let room = EPISODE_BUDGET_BYTES.saturating_sub(again.stored_bytes());
    assert_eq!(again.save_incremental_within_budget().is_ok(), room > 200, "room {room}");
}

#[test]
fn a_stored_document_past_every_limit_still_loads_and_reads() {
    // Written before the limits existed: a note of 60 KB, put into the document directly.
    let actor = ActorId::random();
    let mut doc = EpisodeDoc::open(&opening(""), actor.clone()).unwrap();
    let id = new_id();
    let record = json!({"id": id.to_string(), "kind": "home_visit", "at": "2026-03-02T10:00:00Z", "by": "asha",
                        "device": "d-1", "announced": false, "outcome": "no_answer", "note": "n".repeat(60_000)});
    let am = doc.automerge();
    let events = match am.get(ROOT, "events").unwrap() {
        Some((AmValue::Object(_), events)) => events,
        other => panic!("no events map: {other:?}"),
    };
    am.put(&events, id.to_string(), record.to_string()).unwrap();
    am.commit();
    let bytes = doc.save();
    for loaded in [
        EpisodeDoc::load(&bytes, actor.clone()).unwrap(),
        EpisodeDoc::load_trusted(&bytes, actor.clone()).unwrap(),
        EpisodeDoc::load_with_changes(&bytes, [], actor.clone()).unwrap(),
    ] {
        let episode = loaded.episode().unwrap();
        assert!(episode.invalid_records.is_empty(), "{:?}", episode.invalid_records);
        assert_eq!(episode.events.len(), 1);
        assert_eq!(episode.events[0].note.as_deref().map(str::len), Some(60_000));
    }
}
