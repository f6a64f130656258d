//! Episode documents: typed operations, merging two devices' copies, and refusing bad
//! bytes and bad records.

use automerge::ActorId;
use episode::document::{DocumentError, EpisodeDoc, MAX_DOCUMENT_BYTES, Opening};
use episode::pathway::WarningCode;
use episode::pathway::{Calendar, evaluate};
use episode::*;
use jiff::Timestamp;
use serde_json::json;
use uuid::Uuid;

const EPISODE: &str = "0195a1b2-0000-7000-8000-0000000000e0";

fn t(text: &str) -> Timestamp {
    text.parse().unwrap()
}

fn actor(n: u8) -> ActorId {
    ActorId::from(vec![n; 16])
}

fn opening() -> Opening {
    Opening {
        id: EPISODE.parse().unwrap(),
        patient_ref: PatientRef::new("RX-DOC-1").unwrap(),
        team: "north".into(),
        opened_at: t("2026-03-02T08:00:00Z"),
        opened_by: "u-duty".into(),
        pathway: Pathway::UrgentReferral,
        facts: vec![(FactField::Children, FactValue::Flag(true))],
        plan: "Visit on Monday.".into(),
    }
}

fn event(n: u128, at: &str, body: serde_json::Value) -> Event {
    let mut value = body;
    value["id"] = json!(Uuid::from_u128(0x0195a1b2_0000_7000_8000_000000000000 + n).to_string());
    value["at"] = json!(at);
    value["by"] = json!("u-asha");
    value["device"] = json!("d-1");
    Event::from_value(&value, 0).unwrap()
}

fn missed(n: u128, at: &str) -> Event {
    event(n, at, json!({"kind": "appointment_missed", "appointment": "initial"}))
}

fn risk(n: u128, at: &str, value: &str) -> Event {
    event(n, at, json!({"kind": "fact_changed", "field": "risk", "value": value}))
}

#[test]
fn an_opened_episode_reads_back_with_its_facts_plan_and_records() {
    let mut doc = EpisodeDoc::open(&opening(), actor(1)).unwrap();
    doc.record(&missed(1, "2026-03-02T10:00:00Z")).unwrap();
    doc.set_fact(&risk(2, "2026-03-02T10:05:00Z", "high")).unwrap();
    let episode = doc.episode().unwrap();
    assert_eq!(episode.id.to_string(), EPISODE);
    assert_eq!(episode.patient_ref.as_str(), "RX-DOC-1");
    assert_eq!(episode.facts.pathway.values(), [Pathway::UrgentReferral]);
    assert_eq!(episode.facts.children.values(), [true]);
    assert_eq!(episode.facts.risk.values(), [Risk::High]);
    assert_eq!(episode.plan, "Visit on Monday.");
    assert_eq!(episode.events.len(), 2, "the fact change is recorded too");

    // Saved and loaded on another device: the same episode.
    let bytes = doc.save();
    let loaded = EpisodeDoc::load(&bytes, actor(2)).unwrap();
    assert_eq!(loaded.episode().unwrap(), episode);
}

#[test]
fn two_devices_merge_to_the_same_episode_whatever_the_order() {
    let mut a = EpisodeDoc::open(&opening(), actor(1)).unwrap();
    let mut b = EpisodeDoc::load(&a.save(), actor(2)).unwrap();
    // Offline on both: records, concurrent fact changes, concurrent plan edits.
    a.record(&missed(1, "2026-03-02T10:00:00Z")).unwrap();
    b.record(&event(
        2,
        "2026-03-02T10:30:00Z",
        json!({"kind": "contact_attempt", "method": "phone", "target": "patient", "outcome": "no_answer"}),
    ))
    .unwrap();
    a.set_fact(&risk(3, "2026-03-02T11:00:00Z", "low")).unwrap();
    b.set_fact(&risk(4, "2026-03-02T11:01:00Z", "high")).unwrap();
    a.set_plan("Visit on Monday. Sister is the named contact.", t("2026-03-02T11:02:00Z")).unwrap();
    b.set_plan("Urgent: visit on Monday.", t("2026-03-02T11:03:00Z")).unwrap();

    let (mut a2, mut b2) =
        (EpisodeDoc::load(&a.save(), actor(1)).unwrap(), EpisodeDoc::load(&b.save(), actor(2)).unwrap());
    a.merge(&mut b).unwrap();
    b2.merge(&mut a2).unwrap();
    let (one, two) = (a.episode().unwrap(), b2.episode().unwrap());
    assert_eq!(a.heads(), b2.heads());
    assert_eq!(one, two);
    assert_eq!(one.events.len(), 4);
    // The concurrent fact changes are a conflict on both, resolved to the safer side.
    assert_eq!(one.facts.risk.values(), [Risk::Low, Risk::High]);
    // Both plan edits survive.
    assert!(one.plan.contains("Urgent") && one.plan.contains("named contact"), "{}", one.plan);
    let now = t("2026-03-02T12:00:00Z");
    let calendar = Calendar::england_and_wales();
    assert_eq!(evaluate(&one, now, &calendar), evaluate(&two, now, &calendar));
    assert!(evaluate(&one, now, &calendar).warnings.iter().any(|w| w.field == Some(FactField::Risk)));
}

#[test]
fn incremental_changes_load_on_top_and_bad_ones_change_nothing() {
    let mut a = EpisodeDoc::open(&opening(), actor(1)).unwrap();
    let opened = a.save();
    let mut b = EpisodeDoc::load(&opened, actor(2)).unwrap();
    a.save_incremental();
    a.record(&missed(1, "2026-03-02T10:00:00Z")).unwrap();
    let changes = a.save_incremental();

    // Cut off half-way: refused, or nothing applied; never half a record.
    let mut c = EpisodeDoc::load(&opened, actor(3)).unwrap();
    let before = c.heads();
    if c.load_incremental(&changes[..changes.len() / 2]).is_ok() {
        assert_eq!(c.heads(), before);
    }
    assert!(c.load_incremental(b"not automerge").is_err());
    assert_eq!(c.heads(), before);
    assert_eq!(c.episode().unwrap().events.len(), 0);

    b.load_incremental(&changes).unwrap();
    assert_eq!(b.episode().unwrap().events.len(), 1);
    // Applying the same changes twice changes nothing.
    let heads = b.heads();
    b.load_incremental(&changes).unwrap();
    assert_eq!(b.heads(), heads);
}

#[test]
fn an_invalid_record_is_refused_and_nothing_is_stored() {
    let mut doc = EpisodeDoc::open(&opening(), actor(1)).unwrap();
    doc.record(&missed(1, "2026-03-02T10:00:00Z")).unwrap();
    let heads = doc.heads();
    // The same id again.
    let err = doc.record(&missed(1, "2026-03-02T11:00:00Z")).unwrap_err();
    assert!(err.to_string().contains("exists already"), "{err}");
    // A correction naming no record.
    let eie = event(
        2,
        "2026-03-02T11:00:00Z",
        json!({"kind": "entered_in_error", "record": Uuid::from_u128(99).to_string(), "reason": "typo"}),
    );
    let err = doc.mark_in_error(&eie).unwrap_err();
    assert!(err.to_string().contains("record"), "{err}");
    // A fact change given as a plain record.
    assert!(doc.record(&risk(3, "2026-03-02T11:00:00Z", "high")).is_err());
    assert_eq!(doc.heads(), heads);
    assert_eq!(doc.episode().unwrap().events.len(), 1);
}

#[test]
fn bad_bytes_are_refused_with_an_error_not_a_panic() {
    let mut doc = EpisodeDoc::open(&opening(), actor(1)).unwrap();
    doc.record(&missed(1, "2026-03-02T10:00:00Z")).unwrap();
    let bytes = doc.save();
    for cut in [0, 1, 8, bytes.len() / 3, bytes.len() / 2, bytes.len() - 1] {
        assert!(EpisodeDoc::load(&bytes[..cut], actor(2)).is_err(), "truncated at {cut}");
    }
    let mut flipped = bytes.clone();
    for i in (0..flipped.len()).step_by(7) {
        flipped[i] ^= 0x5a;
    }
    assert!(EpisodeDoc::load(&flipped, actor(2)).is_err());
    // Automerge's own error is kept as the cause, and the sentence still quotes it.
    match EpisodeDoc::load(&bytes[..bytes.len() / 2], actor(2)) {
        Err(error @ DocumentError::Corrupt { what: None, cause: Some(_) }) => {
            let cause = std::error::Error::source(&error).expect("the cause").to_string();
            assert_eq!(error.to_string(), format!("not a valid episode document: {cause}"));
        }
        other => panic!("expected Automerge's error as the cause, got {other:?}"),
    }
    assert!(matches!(EpisodeDoc::load(&vec![0u8; MAX_DOCUMENT_BYTES + 1], actor(2)), Err(DocumentError::TooLarge(_))));
    // An Automerge document that is not an episode.
    let mut other = automerge::AutoCommit::new();
    assert!(matches!(EpisodeDoc::load(&other.save(), actor(2)), Err(DocumentError::NotAnEpisode(_))));
}

#[test]
fn a_newer_schema_is_refused() {
    use automerge::transaction::Transactable;
    let mut doc = EpisodeDoc::open(&opening(), actor(1)).unwrap();
    doc.automerge().put(automerge::ROOT, "schema", 2).unwrap();
    let bytes = doc.save();
    match EpisodeDoc::load(&bytes, actor(2)) {
        Err(DocumentError::NewerSchema(2)) => {}
        other => panic!("expected a newer-schema error, got {other:?}"),
    }
}

#[test]
fn a_stored_record_that_fails_validation_is_kept_aside_not_fatal() {
    use automerge::ReadDoc;
    use automerge::transaction::Transactable;
    let mut doc = EpisodeDoc::open(&opening(), actor(1)).unwrap();
    doc.record(&missed(1, "2026-03-02T10:00:00Z")).unwrap();
    // An older or faulty client wrote a record with a value this version does not know.
    let am = doc.automerge();
    let (_, events) = am.get(automerge::ROOT, "events").unwrap().unwrap();
    let id = Uuid::from_u128(0x0195a1b2_0000_7000_8000_0000000000ff).to_string();
    let bad = json!({"id": id, "kind": "contact_attempt", "at": "2026-03-02T10:10:00Z", "by": "u", "device": "d",
                     "method": "pigeon", "target": "patient", "outcome": "no_answer"});
    am.put(&events, id.as_str(), bad.to_string()).unwrap();
    am.put(&events, "garbage", "{not json").unwrap();
    am.commit();
    let episode = doc.episode().unwrap();
    assert_eq!(episode.events.len(), 1);
    let ids: Vec<&str> = episode.invalid_records.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(ids, vec![id.as_str(), "garbage"]);
    let evaluation = evaluate(&episode, t("2026-03-02T12:00:00Z"), &Calendar::england_and_wales());
    assert_eq!(evaluation.warnings.iter().filter(|w| w.code == WarningCode::InvalidRecord).count(), 2);
}

#[test]
fn a_merge_that_alters_a_record_is_refused() {
    use automerge::ReadDoc;
    use automerge::transaction::Transactable;
    let mut a = EpisodeDoc::open(&opening(), actor(1)).unwrap();
    a.record(&missed(1, "2026-03-02T10:00:00Z")).unwrap();
    let mut b = EpisodeDoc::load(&a.save(), actor(2)).unwrap();
    // A faulty device rewrites the record in place.
    let am = b.automerge();
    let (_, events) = am.get(automerge::ROOT, "events").unwrap().unwrap();
    let key = Uuid::from_u128(0x0195a1b2_0000_7000_8000_000000000001).to_string();
    am.put(&events, key.as_str(), "{}").unwrap();
    am.commit();
    let heads = a.heads();
    assert!(matches!(a.merge(&mut b), Err(DocumentError::Refused(_))));
    assert_eq!(a.heads(), heads);
}

#[test]
fn setting_a_fact_to_its_current_value_still_counts_against_a_concurrent_change() {
    // One device lowers the risk while another confirms it is high: the confirmation is
    // a change too, or the merge would quietly keep the lower (less safe) value.
    let mut a = EpisodeDoc::open(&opening(), actor(1)).unwrap();
    a.set_fact(&risk(1, "2026-03-02T10:00:00Z", "high")).unwrap();
    let mut b = EpisodeDoc::load(&a.save(), actor(2)).unwrap();
    a.set_fact(&risk(2, "2026-03-02T11:00:00Z", "low")).unwrap();
    b.set_fact(&risk(3, "2026-03-02T11:01:00Z", "high")).unwrap();
    a.merge(&mut b).unwrap();
    let episode = a.episode().unwrap();
    assert_eq!(episode.facts.risk.values(), [Risk::Low, Risk::High]);
    assert_eq!(*episode.facts.risk.safest(), Risk::High);
}

#[test]
fn a_merged_record_naming_a_key_twice_is_refused() {
    use automerge::ReadDoc;
    use automerge::transaction::Transactable;
    let mut a = EpisodeDoc::open(&opening(), actor(1)).unwrap();
    let mut b = EpisodeDoc::load(&a.save(), actor(2)).unwrap();
    // A hostile device writes a record whose text says `by` twice: serde_json alone would
    // read the last, another reader the first.
    let am = b.automerge();
    let (_, events) = am.get(automerge::ROOT, "events").unwrap().unwrap();
    let id = Uuid::from_u128(0x0195a1b2_0000_7000_8000_0000000000d1).to_string();
    let text = format!(
        r#"{{"id":"{id}","kind":"appointment_missed","at":"2026-03-02T10:00:00Z","by":"u-asha","by":"u-maya","device":"d-2","appointment":"initial"}}"#
    );
    am.put(&events, id.as_str(), text).unwrap();
    am.commit();
    let heads = a.heads();
    let error = a.merge(&mut b).expect_err("a record with a key twice");
    assert!(error.to_string().contains("names a key twice"), "{error}");
    assert_eq!(a.heads(), heads);
}

#[test]
fn an_episode_opened_outside_the_years_is_refused() {
    let opening = Opening { opened_at: t("2126-03-02T08:00:00Z"), ..opening() };
    let error = EpisodeDoc::open(&opening, actor(1)).expect_err("2126");
    assert!(error.to_string().contains("outside the years 2000 to 2100"), "{error}");
}
