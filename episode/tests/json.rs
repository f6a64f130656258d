//! Episode JSON validation, from the outside: what `Episode::from_json` accepts, what it
//! refuses and how its errors read (`shared/interfaces.md`, `shared/pathway.md`).

use episode::pathway::{self, Calendar, WarningCode};
use episode::{
    Episode, EventBody, FactField, FactValue, LegalStatus, Pathway, Risk, Safeguarding, Strictness, ValidationError,
};
use serde_json::{Value, json};

const EPISODE_ID: &str = "01950000-0000-7000-8000-000000000001";
const PATIENT_REF: &str = "NHS-943-476-5919";
const MISSED: &str = "01950000-0000-7000-8000-0000000000a1";
const CALL: &str = "01950000-0000-7000-8000-0000000000a2";
const VISIT: &str = "01950000-0000-7000-8000-0000000000a3";
const BAD: &str = "01950000-0000-7000-8000-0000000000b1";
const UNKNOWN_RECORD: &str = "01950000-0000-7000-8000-0000000000ff";

/// An episode with every fact given and no events.
fn episode_json() -> Value {
    json!({
        "id": EPISODE_ID,
        "patient_ref": PATIENT_REF,
        "team": "team-north",
        "opened_at": "2026-03-02T09:00:00Z",
        "opened_by": "user-alice",
        "pathway": "urgent_referral",
        "risk": "low",
        "children": false,
        "referrer_child_concern": false,
        "immediate_risk": false,
        "known_disengager": false,
        "legal_status": "none",
        "safeguarding": "none",
        "childrens_services_involved": false,
        "care_coordinator": null,
        "plan": "",
        "events": []
    })
}

/// The same episode holding `events`.
fn with_events(events: Vec<Value>) -> Value {
    let mut episode = episode_json();
    episode["events"] = Value::Array(events);
    episode
}

/// A record of `kind` with the fields every record has, plus `fields`.
fn event(id: &str, kind: &str, at: &str, fields: Value) -> Value {
    let mut event = json!({
        "id": id,
        "kind": kind,
        "at": at,
        "by": "user-alice",
        "device": "phone-1",
        "note": null
    });
    let object = event.as_object_mut().expect("an event is an object");
    for (key, value) in fields.as_object().expect("fields are an object") {
        object.insert(key.clone(), value.clone());
    }
    event
}

fn appointment_missed(id: &str) -> Value {
    event(id, "appointment_missed", "2026-03-02T10:00:00Z", json!({"appointment": "initial"}))
}

/// Reads strictly and returns the error's Display, failing if the episode is accepted.
fn refused(document: &Value) -> String {
    match Episode::from_json(&document.to_string()) {
        Ok(_) => panic!("accepted an invalid episode: {document}"),
        Err(error) => error.to_string(),
    }
}

/// Asserts that one bad record is refused with an error naming its id and `field`.
fn assert_event_refused(bad: Value, field: &str) -> String {
    let document = with_events(vec![appointment_missed(MISSED), bad]);
    let error = Episode::from_json(&document.to_string()).expect_err("accepted an invalid record");
    let message = error.to_string();
    assert!(
        matches!(&error, ValidationError::Event { event, field: f, .. } if event == BAD && f == field),
        "expected an error on event {BAD}, field `{field}`; got {error:?}"
    );
    assert!(message.contains(BAD), "message does not name the event id: {message}");
    assert!(message.contains(&format!("`{field}`")), "message does not name `{field}`: {message}");
    message
}

#[test]
fn valid_episode_with_several_kinds_of_events_round_trips_through_json() {
    let mut document = episode_json();
    document["opened_at"] = json!("2026-06-01T10:30:00+01:00");
    document["care_coordinator"] = json!("user-bob");
    document["plan"] = json!("Call daily; visit if no answer.");
    document["risk"] = json!(["high", "low"]);
    document["events"] = json!([
        event(
            MISSED,
            "appointment_missed",
            "2026-06-01T11:00:00+01:00",
            json!({"appointment": "initial", "reason": "did_not_attend"})
        ),
        event(
            CALL,
            "contact_attempt",
            "2026-06-01T12:00:00+01:00",
            json!({"method": "phone", "target": "patient", "outcome": "no_answer"})
        ),
        event(
            VISIT,
            "home_visit",
            "2026-06-01T14:00:00Z",
            json!({"announced": false, "outcome": "no_answer", "location": {"lat": 51.5, "lon": -0.12, "accuracy": 15.0}})
        ),
        event(
            "01950000-0000-7000-8000-0000000000a4",
            "calling_card_left",
            "2026-06-01T14:05:00Z",
            json!({"visit": VISIT})
        ),
        event(
            "01950000-0000-7000-8000-0000000000a5",
            "communication",
            "2026-06-01T15:00:00Z",
            json!({"party": "gp", "channel": "phone"})
        ),
        event(
            "01950000-0000-7000-8000-0000000000a6",
            "decision",
            "2026-06-01T15:30:00Z",
            json!({"topic": "cold_call", "outcome": "yes", "rationale": "No answer by phone."})
        ),
        event(
            "01950000-0000-7000-8000-0000000000a7",
            "fact_changed",
            "2026-06-01T16:00:00Z",
            json!({"field": "risk", "value": "high"})
        ),
        event(
            "01950000-0000-7000-8000-0000000000a8",
            "appointment_booked",
            "2026-06-01T16:30:00Z",
            json!({"for": "2026-06-03T10:00:00+01:00"})
        ),
        event(
            "01950000-0000-7000-8000-0000000000a9",
            "entered_in_error",
            "2026-06-01T17:00:00Z",
            json!({"record": CALL, "reason": "wrong patient"})
        ),
        event("01950000-0000-7000-8000-0000000000aa", "reengaged", "2026-06-02T09:00:00Z", json!({})),
    ]);

    let episode = Episode::from_json(&document.to_string()).expect("a valid episode");
    assert_eq!(episode.events.len(), 10);
    assert!(episode.invalid_records.is_empty());
    assert_eq!(episode.patient_ref.as_str(), PATIENT_REF);
    assert_eq!(episode.facts.pathway.values(), [Pathway::UrgentReferral]);
    assert_eq!(episode.facts.care_coordinator.values(), [Some("user-bob".to_string())]);
    assert_eq!(episode.plan, "Call daily; visit if no answer.");
    let kinds: Vec<&str> = episode.events.iter().map(|e| e.body.kind()).collect();
    assert_eq!(
        kinds,
        [
            "appointment_missed",
            "contact_attempt",
            "home_visit",
            "calling_card_left",
            "communication",
            "decision",
            "fact_changed",
            "appointment_booked",
            "entered_in_error",
            "reengaged"
        ]
    );
    match &episode.events[6].body {
        EventBody::FactChanged(change) => {
            assert_eq!(change.field, FactField::Risk);
            assert_eq!(change.value, FactValue::Risk(Risk::High));
        }
        other => panic!("expected a fact_changed, got {other:?}"),
    }

    let out = episode.to_json();
    assert_eq!(out["opened_at"], "2026-06-01T09:30:00Z");
    assert_eq!(out["events"][0]["at"], "2026-06-01T10:00:00Z");
    assert_eq!(out["events"][1]["at"], "2026-06-01T11:00:00Z");
    assert_eq!(out["events"][7]["for"], "2026-06-03T09:00:00Z");
    assert_eq!(out["events"][0]["kind"], "appointment_missed");
    assert_eq!(out["risk"], json!(["low", "high"]));
    assert_eq!(out["care_coordinator"], "user-bob");

    let again = Episode::from_json(&out.to_string()).expect("the output reads back");
    assert_eq!(again, episode);
    assert_eq!(again.to_json(), out);
}

#[test]
fn missing_facts_take_the_defaults_of_interfaces_md() {
    let document = json!({
        "id": EPISODE_ID,
        "patient_ref": PATIENT_REF,
        "team": "team-north",
        "opened_at": "2026-03-02T09:00:00Z",
        "opened_by": "user-alice",
        "pathway": "routine_referral"
    });
    let episode = Episode::from_json(&document.to_string()).expect("facts may be left out");
    let facts = &episode.facts;
    assert_eq!(facts.pathway.values(), [Pathway::RoutineReferral]);
    assert_eq!(facts.risk.values(), [Risk::Low]);
    assert_eq!(facts.children.values(), [false]);
    assert_eq!(facts.referrer_child_concern.values(), [false]);
    assert_eq!(facts.immediate_risk.values(), [false]);
    assert_eq!(facts.known_disengager.values(), [false]);
    assert_eq!(facts.legal_status.values(), [LegalStatus::None]);
    assert_eq!(facts.safeguarding.values(), [Safeguarding::None]);
    assert_eq!(facts.childrens_services_involved.values(), [false]);
    assert_eq!(facts.care_coordinator.values(), [None]);
    assert_eq!(episode.plan, "");
    assert!(episode.events.is_empty());
    assert!(facts.conflicts().is_empty());
}

#[test]
fn missing_pathway_is_an_error_naming_pathway() {
    let mut document = episode_json();
    document.as_object_mut().unwrap().remove("pathway");
    let error = Episode::from_json(&document.to_string()).expect_err("a pathway is required");
    assert!(matches!(&error, ValidationError::Episode { field, .. } if field == "pathway"), "{error:?}");
    assert!(error.to_string().contains("pathway"), "{error}");
}

#[test]
fn fact_given_as_array_is_a_conflict_with_sorted_values() {
    let mut document = episode_json();
    document["risk"] = json!(["high", "low"]);
    document["safeguarding"] = json!(["both", "none", "child"]);
    document["children"] = json!([true, false]);
    let episode = Episode::from_json(&document.to_string()).expect("concurrent values are valid");
    assert!(episode.facts.risk.is_conflict());
    assert_eq!(episode.facts.risk.values(), [Risk::Low, Risk::High]);
    assert_eq!(*episode.facts.risk.safest(), Risk::High);
    assert_eq!(episode.facts.safeguarding.values(), [Safeguarding::None, Safeguarding::Child, Safeguarding::Both]);
    assert_eq!(episode.facts.children.values(), [false, true]);
    assert!(!episode.facts.pathway.is_conflict());
    let conflicting: Vec<FactField> = episode.facts.conflicts().into_iter().map(|(f, _)| f).collect();
    assert_eq!(conflicting, [FactField::Risk, FactField::Children, FactField::Safeguarding]);
}

#[test]
fn fact_given_as_empty_array_is_an_error_naming_the_fact() {
    let mut document = episode_json();
    document["risk"] = json!([]);
    let error = Episode::from_json(&document.to_string()).expect_err("an empty list is no value");
    assert!(matches!(&error, ValidationError::Episode { field, .. } if field == "risk"), "{error:?}");
    assert!(error.to_string().contains("risk"), "{error}");
}

#[test]
fn unknown_event_kind_is_refused_naming_id_and_kind() {
    let bad = event(BAD, "telepathy", "2026-03-02T11:00:00Z", json!({}));
    assert_event_refused(bad, "kind");
}

#[test]
fn unknown_enum_value_is_refused_naming_id_and_field() {
    let bad = event(
        BAD,
        "contact_attempt",
        "2026-03-02T11:00:00Z",
        json!({"method": "phone", "target": "patient", "outcome": "maybe"}),
    );
    assert_event_refused(bad, "outcome");
}

#[test]
fn missing_required_field_is_refused_naming_id_and_field() {
    let bad = event(BAD, "contact_attempt", "2026-03-02T11:00:00Z", json!({"method": "phone", "target": "patient"}));
    assert_event_refused(bad, "outcome");
}

#[test]
fn time_without_offset_is_refused_naming_id_at_and_the_offset() {
    let bad = event(
        BAD,
        "contact_attempt",
        "2026-03-02T11:00:00",
        json!({"method": "phone", "target": "patient", "outcome": "no_answer"}),
    );
    let message = assert_event_refused(bad, "at");
    assert!(message.contains("offset"), "{message}");
}

#[test]
fn decision_without_rationale_is_refused() {
    let bad = event(BAD, "decision", "2026-03-02T11:00:00Z", json!({"topic": "cold_call", "outcome": "no"}));
    assert_event_refused(bad, "rationale");
}

#[test]
fn decision_with_empty_or_blank_rationale_is_refused() {
    for rationale in ["", "   \t\n"] {
        let bad = event(
            BAD,
            "decision",
            "2026-03-02T11:00:00Z",
            json!({"topic": "cold_call", "outcome": "no", "rationale": rationale}),
        );
        assert_event_refused(bad, "rationale");
    }
}

#[test]
fn entered_in_error_naming_no_known_record_is_refused() {
    let bad = event(
        BAD,
        "entered_in_error",
        "2026-03-02T11:00:00Z",
        json!({"record": UNKNOWN_RECORD, "reason": "typed on the wrong episode"}),
    );
    assert_event_refused(bad, "record");
}

#[test]
fn unknown_extra_field_on_an_event_is_refused() {
    let bad = event(
        BAD,
        "contact_attempt",
        "2026-03-02T11:00:00Z",
        json!({"method": "phone", "target": "patient", "outcome": "no_answer", "mood": "low"}),
    );
    assert_event_refused(bad, "mood");

    let bad = event(BAD, "appointment_attended", "2026-03-02T11:00:00Z", json!({"room": "3"}));
    assert_event_refused(bad, "room");
}

#[test]
fn two_events_with_the_same_id_are_refused() {
    let first = event(
        BAD,
        "contact_attempt",
        "2026-03-02T11:00:00Z",
        json!({"method": "phone", "target": "patient", "outcome": "no_answer"}),
    );
    let second = event(BAD, "reengaged", "2026-03-02T12:00:00Z", json!({}));
    let document = with_events(vec![first, second]);
    let error = Episode::from_json(&document.to_string()).expect_err("ids must be unique");
    let message = error.to_string();
    assert!(
        matches!(&error, ValidationError::Event { event, field, .. } if event == BAD && field == "id"),
        "{error:?}"
    );
    assert!(message.contains(BAD) && message.contains("`id`"), "{message}");
}

#[test]
fn deterioration_on_a_contact_attempt_without_contact_is_refused() {
    let bad = event(
        BAD,
        "contact_attempt",
        "2026-03-02T11:00:00Z",
        json!({"method": "phone", "target": "patient", "outcome": "no_answer", "deterioration": "suspected"}),
    );
    assert_event_refused(bad, "deterioration");

    // The same field is accepted when contact was made.
    let good = event(
        BAD,
        "contact_attempt",
        "2026-03-02T11:00:00Z",
        json!({"method": "phone", "target": "patient", "outcome": "contact_made", "deterioration": "suspected"}),
    );
    let document = with_events(vec![good]);
    Episode::from_json(&document.to_string()).expect("deterioration is valid on contact_made");
}

#[test]
fn fact_changed_with_an_unknown_fact_is_refused() {
    let bad = event(BAD, "fact_changed", "2026-03-02T11:00:00Z", json!({"field": "mood", "value": "low"}));
    assert_event_refused(bad, "field");
}

#[test]
fn fact_changed_with_a_value_of_the_wrong_type_is_refused() {
    let bad = event(BAD, "fact_changed", "2026-03-02T11:00:00Z", json!({"field": "children", "value": "yes"}));
    assert_event_refused(bad, "value");

    let bad = event(BAD, "fact_changed", "2026-03-02T11:00:00Z", json!({"field": "risk", "value": "medium"}));
    assert_event_refused(bad, "value");
}

#[test]
fn patient_ref_in_a_boolean_fact_is_not_repeated_in_the_error() {
    for value in [json!(PATIENT_REF), json!([false, PATIENT_REF])] {
        let mut document = episode_json();
        document["children"] = value;
        let message = refused(&document);
        assert!(message.contains("children"), "{message}");
        assert!(!message.contains(PATIENT_REF), "error repeats the patient ref: {message}");
    }
}

#[test]
fn patient_ref_in_an_enum_fact_is_not_repeated_in_the_error() {
    for fact in ["risk", "legal_status", "pathway"] {
        let mut document = episode_json();
        document[fact] = json!(PATIENT_REF);
        let message = refused(&document);
        assert!(message.contains(fact), "{message}");
        assert!(!message.contains(PATIENT_REF), "error repeats the patient ref: {message}");
    }
}

#[test]
fn patient_ref_in_a_bad_fact_changed_value_is_not_repeated_in_the_error() {
    let bad =
        event(BAD, "fact_changed", "2026-03-02T11:00:00Z", json!({"field": "immediate_risk", "value": PATIENT_REF}));
    let message = assert_event_refused(bad, "value");
    assert!(!message.contains(PATIENT_REF), "error repeats the patient ref: {message}");
}

#[test]
fn patient_ref_in_a_bad_boolean_event_field_is_not_repeated_in_the_error() {
    let bad = event(BAD, "home_visit", "2026-03-02T11:00:00Z", json!({"announced": PATIENT_REF, "outcome": "seen"}));
    let message = assert_event_refused(bad, "announced");
    assert!(!message.contains(PATIENT_REF), "error repeats the patient ref: {message}");
}

#[test]
fn patient_ref_as_an_unknown_enum_value_is_not_repeated_in_the_error() {
    let bad = event(
        BAD,
        "contact_attempt",
        "2026-03-02T11:00:00Z",
        json!({"method": "phone", "target": PATIENT_REF, "outcome": "no_answer"}),
    );
    let message = assert_event_refused(bad, "target");
    assert!(!message.contains(PATIENT_REF), "error repeats the patient ref: {message}");
}

#[test]
fn patient_ref_as_an_event_kind_is_not_repeated_in_the_error() {
    let bad = event(BAD, PATIENT_REF, "2026-03-02T11:00:00Z", json!({}));
    let message = assert_event_refused(bad, "kind");
    assert!(!message.contains(PATIENT_REF), "error repeats the patient ref: {message}");
}

#[test]
fn patient_ref_as_an_event_time_is_not_repeated_in_the_error() {
    let bad = event(BAD, "reengaged", PATIENT_REF, json!({}));
    let message = assert_event_refused(bad, "at");
    assert!(!message.contains(PATIENT_REF), "error repeats the patient ref: {message}");
}

#[test]
fn patient_ref_as_an_event_id_is_not_repeated_in_the_error() {
    let bad = event(PATIENT_REF, "reengaged", "2026-03-02T11:00:00Z", json!({}));
    let document = with_events(vec![bad]);
    let message = refused(&document);
    assert!(message.contains("`id`"), "{message}");
    assert!(!message.contains(PATIENT_REF), "error repeats the patient ref: {message}");
}

#[test]
fn patient_ref_as_a_fact_changed_field_is_not_repeated_in_the_error() {
    let bad = event(BAD, "fact_changed", "2026-03-02T11:00:00Z", json!({"field": PATIENT_REF, "value": true}));
    let message = assert_event_refused(bad, "field");
    assert!(!message.contains(PATIENT_REF), "error repeats the patient ref: {message}");
}

#[test]
fn debug_of_an_episode_does_not_show_the_patient_ref() {
    let document = with_events(vec![appointment_missed(MISSED)]);
    let episode = Episode::from_json(&document.to_string()).expect("a valid episode");
    let debug = format!("{episode:?}");
    assert!(!debug.contains(PATIENT_REF), "Debug shows the patient ref: {debug}");
    let pretty = format!("{episode:#?}");
    assert!(!pretty.contains(PATIENT_REF), "Debug shows the patient ref: {pretty}");
    assert!(!format!("{:?}", episode.patient_ref).contains(PATIENT_REF));
}

#[test]
fn lenient_mode_sets_a_bad_record_aside_and_keeps_the_rest() {
    let bad = event(
        BAD,
        "contact_attempt",
        "2026-03-02T11:00:00Z",
        json!({"method": "phone", "target": "patient", "outcome": "maybe"}),
    );
    let good_after = event(
        CALL,
        "contact_attempt",
        "2026-03-02T11:30:00Z",
        json!({"method": "phone", "target": "patient", "outcome": "no_answer"}),
    );
    let document = with_events(vec![appointment_missed(MISSED), bad, good_after]);

    assert!(Episode::from_value(&document, Strictness::Strict).is_err());
    let episode = Episode::from_value(&document, Strictness::Lenient).expect("lenient keeps the episode");
    let kept: Vec<String> = episode.events.iter().map(|e| e.id.to_string()).collect();
    assert_eq!(kept, [MISSED, CALL]);
    assert_eq!(episode.invalid_records.len(), 1);
    let invalid = &episode.invalid_records[0];
    assert_eq!(invalid.id, BAD);
    assert!(invalid.error.contains("outcome"), "{}", invalid.error);

    let now = "2026-03-02T12:00:00Z".parse().unwrap();
    let evaluation = pathway::evaluate(&episode, now, &Calendar::england_and_wales());
    let warnings: Vec<_> = evaluation.warnings.iter().filter(|w| w.code == WarningCode::InvalidRecord).collect();
    assert_eq!(warnings.len(), 1, "{:?}", evaluation.warnings);
    assert_eq!(warnings[0].record.as_deref(), Some(BAD));
    // The kept records still count: the missed initial appointment raised actions.
    assert!(!evaluation.actions.is_empty());
}

#[test]
fn lenient_mode_sets_aside_an_entered_in_error_naming_no_known_record() {
    let bad = event(
        BAD,
        "entered_in_error",
        "2026-03-02T11:00:00Z",
        json!({"record": UNKNOWN_RECORD, "reason": "typed on the wrong episode"}),
    );
    let document = with_events(vec![appointment_missed(MISSED), bad]);
    let episode = Episode::from_value(&document, Strictness::Lenient).expect("lenient keeps the episode");
    assert_eq!(episode.events.len(), 1);
    assert_eq!(episode.events[0].id.to_string(), MISSED);
    assert_eq!(episode.invalid_records.len(), 1);
    assert_eq!(episode.invalid_records[0].id, BAD);

    let now = "2026-03-02T12:00:00Z".parse().unwrap();
    let evaluation = pathway::evaluate(&episode, now, &Calendar::england_and_wales());
    assert!(
        evaluation.warnings.iter().any(|w| w.code == WarningCode::InvalidRecord && w.record.as_deref() == Some(BAD)),
        "{:?}",
        evaluation.warnings
    );
}

#[test]
fn times_outside_2000_to_2100_are_refused_saying_so() {
    for at in ["1999-12-31T23:59:59Z", "2101-01-01T00:00:00Z", "2206-03-02T11:00:00Z", "1026-03-02T11:00:00Z"] {
        let bad =
            event(BAD, "contact_attempt", at, json!({"method": "phone", "target": "patient", "outcome": "no_answer"}));
        let message = assert_event_refused(bad, "at");
        assert!(message.contains("outside the years 2000 to 2100"), "{at}: {message}");
    }
    // A time inside the years by its offset's reading but outside in UTC is refused too.
    let bad = event(
        BAD,
        "contact_attempt",
        "2100-12-31T23:30:00-01:00",
        json!({"method": "phone", "target": "patient", "outcome": "no_answer"}),
    );
    assert_event_refused(bad, "at");
    // The ends of the range are in it.
    for at in ["2000-01-01T00:00:00Z", "2100-12-31T23:59:59Z"] {
        let ok =
            event(CALL, "contact_attempt", at, json!({"method": "phone", "target": "patient", "outcome": "no_answer"}));
        Episode::from_json(&with_events(vec![ok]).to_string()).unwrap_or_else(|e| panic!("{at}: {e}"));
    }
    // A booked appointment's own time is a time like any other.
    let bad = event(BAD, "appointment_booked", "2026-03-02T11:00:00Z", json!({"for": "2260-03-09T10:00:00Z"}));
    let message = assert_event_refused(bad, "for");
    assert!(message.contains("2000 to 2100"), "{message}");
}

#[test]
fn an_opening_outside_the_years_is_refused_as_input_and_still_loads_when_stored() {
    let mut document = episode_json();
    document["opened_at"] = json!("1999-06-01T10:00:00Z");
    let message = refused(&document);
    assert!(message.contains("opened_at") && message.contains("outside the years 2000 to 2100"), "{message}");
    // A stored document an earlier version accepted (1900 to 2999) is read, not lost.
    let episode = Episode::from_value(&document, Strictness::Lenient).expect("a stored episode still loads");
    assert_eq!(episode.opened_at.to_string(), "1999-06-01T10:00:00Z");
}

#[test]
fn a_computed_deadline_after_2100_reads_back() {
    // A record late in 2100 raises actions due in 2101: the evaluation must round-trip.
    let missed = event(MISSED, "appointment_missed", "2100-12-31T10:00:00Z", json!({"appointment": "initial"}));
    let episode = Episode::from_json(&with_events(vec![missed]).to_string()).expect("valid");
    let now = "2100-12-31T12:00:00Z".parse().expect("a time");
    let evaluation = pathway::evaluate(&episode, now, &Calendar::england_and_wales());
    assert!(evaluation.actions.iter().any(|a| a.due.to_string().starts_with("2101")), "{evaluation:?}");
    let json = serde_json::to_string(&evaluation).expect("JSON");
    let back: pathway::Evaluation = serde_json::from_str(&json).expect("reads back");
    assert_eq!(back, evaluation);
}

#[test]
fn a_key_given_twice_in_a_record_is_refused() {
    // serde_json alone would keep the last `by`: the record would say maya to one reader.
    let mut text = with_events(vec![appointment_missed(MISSED)]).to_string();
    text = text.replacen("\"by\":\"user-alice\"", "\"by\":\"user-alice\",\"by\":\"user-maya\"", 1);
    assert!(text.contains("user-maya"), "the test edits the text: {text}");
    let error = Episode::from_json(&text).expect_err("a duplicate key");
    let message = error.to_string();
    assert!(message.contains("the key `by` appears twice"), "{message}");
    // Twice at the episode's level too.
    let text = episode_json().to_string().replacen("\"risk\":\"low\"", "\"risk\":\"low\",\"risk\":\"high\"", 1);
    assert!(Episode::from_json(&text).expect_err("a duplicate key").to_string().contains("`risk`"));
    // A key that is not a field name (it could be anything typed) is not repeated.
    let text = episode_json().to_string().replacen("{", &format!("{{\"{PATIENT_REF}\":1,\"{PATIENT_REF}\":2,"), 1);
    let message = Episode::from_json(&text).expect_err("a duplicate key").to_string();
    assert!(message.contains("a key appears twice") && !message.contains(PATIENT_REF), "{message}");
    // Distinct keys in sibling objects are fine.
    assert!(episode::json::check_unique_keys(br#"[{"a": 1}, {"a": 2}, {"b": {"a": 3}}]"#).is_ok());
    assert!(episode::json::check_unique_keys(br#"{"a": {"b": 1, "b": 2}}"#).is_err());
}
