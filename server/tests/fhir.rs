//! The FHIR mapping (`server::fhir`) and `GET /v1/episodes/{id}/fhir`: every Bundle —
//! each demo episode's through the route, and exports and transactions of scenario
//! episodes on every pathway that hold every kind of record — checked by a real FHIR R4
//! model (PyPI `fhir.resources` 6.4.0, FHIR 4.0.1, through `tests/fhir/check_bundles.py`),
//! plus the patient's identifier (NHS number or local), the attendance codes, the
//! action-state mapping, conditional creates, and the route's audit and team scoping.
//!
//! The model runs in Python: `TETHER_FHIR_PYTHON`, else `target/fhir-venv/bin/python`
//! (what `.ci/run` makes), else `python3`. Without `fhir.resources` 6.4.0 the model check
//! is skipped with a message saying what to install, except under CI (`CI` set), where it
//! fails.

mod common;

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::process::Command;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use episode::pathway::{Calendar, evaluate};
use episode::{Episode, Strictness};
use jiff::Timestamp;
use serde_json::{Value, json};
use server::fhir::{self, Settings, TransactionError, codes};
use tower::ServiceExt;

use common::Demo;

const INSTALL: &str = "python3 -m venv target/fhir-venv && target/fhir-venv/bin/pip install \
                       fhir.resources==6.4.0 pydantic==1.10.27 email-validator==2.2.0";

/// A Python that has `fhir.resources` at FHIR 4.0.1; without one the test fails, saying
/// what to install (`scripts/test` skips the `needs_fhir_model` tests on such a machine).
fn python() -> PathBuf {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("the workspace");
    let candidates: Vec<PathBuf> = match std::env::var_os("TETHER_FHIR_PYTHON") {
        Some(given) => vec![PathBuf::from(given)],
        None => vec![workspace.join("target/fhir-venv/bin/python"), PathBuf::from("python3")],
    };
    let found = candidates.into_iter().find(|python| {
        Command::new(python)
            .args(["-c", "import fhir.resources as f, sys; sys.exit(f.__fhir_version__ != '4.0.1')"])
            .output()
            .is_ok_and(|out| out.status.success())
    });
    found.unwrap_or_else(|| panic!("no Python with fhir.resources 6.4.0 (FHIR 4.0.1): install it with: {INSTALL}"))
}

/// Runs the model over `bundles` (name, Bundle); returns each name's errors.
fn model_check(python: &Path, bundles: &[(String, Value)]) -> HashMap<String, Vec<String>> {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let input = dir.path().join("bundles.json");
    let list: Vec<Value> = bundles.iter().map(|(name, bundle)| json!({"name": name, "bundle": bundle})).collect();
    std::fs::write(&input, serde_json::to_vec(&list).expect("JSON")).expect("write the bundles");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fhir/check_bundles.py");
    let output = Command::new(python).arg(script).arg(&input).output().expect("run the model check");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "the model check could not run: {stderr}");
    let report: Value = serde_json::from_slice(&output.stdout).expect("the report is JSON");
    assert_eq!(report["fhir_version"], "4.0.1", "{report}");
    assert_eq!(report["package"], "6.4.0", "{report}");
    report["results"]
        .as_array()
        .expect("results")
        .iter()
        .map(|r| {
            let errors = r["errors"].as_array().expect("errors").iter().map(|e| e.as_str().unwrap_or("").to_owned());
            (r["name"].as_str().expect("a name").to_owned(), errors.collect())
        })
        .collect()
}

const NOW: &str = "2026-03-20T12:00:00Z";

fn now() -> Timestamp {
    NOW.parse().expect("a time")
}

fn rid(n: usize) -> String {
    format!("0195a1b2-0000-7000-8000-{n:012}")
}

/// An episode on `pathway` for `patient` with every kind of record, receipts on most,
/// one record entered in error and two filed.
fn scenario(pathway: &str, patient: &str, facts: Value) -> Episode {
    let mut n = 0;
    let mut event = |minutes: i64, body: Value| {
        n += 1;
        let at: Timestamp =
            "2026-03-02T09:00:00Z".parse::<Timestamp>().expect("a time") + jiff::SignedDuration::from_mins(minutes);
        let mut event = body;
        event["id"] = json!(rid(n));
        event["at"] = json!(at.to_string());
        event["by"] = json!(if n % 2 == 0 { "ana" } else { "ben" });
        event["device"] = json!(if n % 2 == 0 { "phone-ana" } else { "phone-ben" });
        if n % 5 != 0 {
            event["received_at"] = json!((at + jiff::SignedDuration::from_mins(7)).to_string());
        }
        event
    };
    let events = vec![
        event(0, json!({"kind": "appointment_missed", "appointment": "initial"})), // 1
        event(30, json!({"kind": "contact_attempt", "method": "phone", "target": "patient", "outcome": "no_answer"})),
        event(45, json!({"kind": "contact_attempt", "method": "sms", "target": "patient", "outcome": "sent"})), // 3
        event(
            60,
            json!({"kind": "home_visit", "announced": false, "outcome": "no_answer",
                         "location": {"lat": 53.4808, "lon": -2.2426, "accuracy": 12.0},
                         "note": "Curtains drawn <no> answer & a dog barking."}),
        ), // 4
        event(62, json!({"kind": "calling_card_left", "visit": rid(4), "note": "Card through the door."})),
        event(90, json!({"kind": "communication", "party": "gp", "channel": "writing"})),
        event(95, json!({"kind": "communication", "party": "police", "channel": "phone"})),
        event(
            120,
            json!({"kind": "decision", "topic": "cold_call", "outcome": "yes",
                          "rationale": "Not seen since the referral; risk unknown."}),
        ),
        event(
            600,
            json!({"kind": "contact_attempt", "method": "letter_first_class", "target": "parent_carer",
                          "outcome": "sent", "letter": "was_not_brought", "crisis_plan": true}),
        ),
        event(1440, json!({"kind": "appointment_missed", "appointment": "follow_up", "reason": "not_brought"})), // 10
        event(1500, json!({"kind": "fact_changed", "field": "risk", "value": "high"})),
        event(1510, json!({"kind": "fact_changed", "field": "safeguarding", "value": "child"})),
        event(1520, json!({"kind": "referral_made", "to": "childrens_services", "reason": "neglect_of_health_needs"})),
        event(
            1600,
            json!({"kind": "contact_attempt", "method": "phone", "target": "patient",
                           "outcome": "contact_made", "deterioration": "suspected", "wishes_discharge": false}),
        ),
        event(1610, json!({"kind": "appointment_booked", "for": "2026-03-06T10:00:00Z"})), // 15
        event(2880, json!({"kind": "appointment_attended"})),
        event(2900, json!({"kind": "reengaged"})),
        event(2950, json!({"kind": "assessment_completed"})),
        event(
            3000,
            json!({"kind": "mdt_meeting", "attendees": ["senior_clinician", "team_manager"],
                           "outcome": "discharge", "plan": "Discharge to the GP with the crisis plan."}),
        ),
        event(3010, json!({"kind": "entered_in_error", "record": rid(3), "reason": "Sent to the wrong number."})), // 20
        event(3020, json!({"kind": "filed_to_epr", "records": [rid(1), rid(2), rid(3)], "epr_ref": "EPR-1"})),
        event(3100, json!({"kind": "discharged", "crisis_plan_sent": true})),
    ];
    let mut episode = json!({
        "id": "0195a1b2-0000-7000-8000-0000000000ff",
        "patient_ref": patient,
        "team": "north",
        "opened_at": "2026-03-01T08:00:00Z",
        "opened_by": "maya",
        "pathway": pathway,
        "plan": "See weekly; the sister is the named contact.",
        "care_coordinator": "ana",
        // As the two fact_changed records left them.
        "risk": "high",
        "safeguarding": "child",
        "events": events,
    });
    for (field, value) in facts.as_object().into_iter().flatten() {
        episode[field] = value.clone();
    }
    Episode::from_value(&episode, Strictness::Strict).expect("a valid scenario episode")
}

/// A scenario on every pathway (and a conflict across two), some with NHS numbers.
fn scenarios() -> Vec<(String, Episode)> {
    vec![
        ("urgent_referral".into(), scenario("urgent_referral", "9434765919", json!({"immediate_risk": true}))),
        ("routine_referral".into(), scenario("routine_referral", "RX-LOCAL-0001", json!({}))),
        (
            "in_service".into(),
            scenario("in_service", "943 476 5919", json!({"children": true, "safeguarding": "adult"})),
        ),
        ("home_treatment".into(), scenario("home_treatment", "RX|with,odd$chars\\", json!({"legal_status": "cto"}))),
        (
            "child_not_brought".into(),
            scenario("child_not_brought", "4010232137", json!({"referrer_child_concern": true})),
        ),
        (
            "conflict".into(),
            scenario(
                "child_not_brought",
                "9434765918",
                json!({"pathway": ["child_not_brought", "in_service"],
                                                               "risk": ["low", "high"]}),
            ),
        ),
    ]
}

fn export(episode: &Episode) -> Value {
    fhir::export(episode, &evaluate(episode, now(), &Calendar::england_and_wales()), &Settings::default(), now())
}

fn resources<'a>(bundle: &'a Value, kind: &str) -> Vec<&'a Value> {
    bundle["entry"]
        .as_array()
        .expect("entries")
        .iter()
        .map(|e| &e["resource"])
        .filter(|r| r["resourceType"] == kind)
        .collect()
}

/// The resource made from record `id` of type `kind`.
fn made_from<'a>(bundle: &'a Value, kind: &str, id: &str) -> &'a Value {
    resources(bundle, kind)
        .into_iter()
        .find(|r| r["identifier"][0]["value"] == id)
        .unwrap_or_else(|| panic!("no {kind} from {id}"))
}

fn attendance_codes(resource: &Value) -> BTreeSet<(String, String)> {
    resource["extension"][0]["valueCodeableConcept"]["coding"]
        .as_array()
        .expect("codings")
        .iter()
        .map(|c| (c["system"].as_str().expect("a system").to_owned(), c["code"].as_str().expect("a code").to_owned()))
        .collect()
}

#[test]
fn the_patient_is_known_by_nhs_number_when_it_is_one_and_by_the_local_identifier_otherwise() {
    let settings = Settings::new(Some("https://fhir.trust.example/tether/"), None).expect("settings");
    assert_eq!(settings.patient_system, "https://fhir.trust.example/tether/Id/patient-ref");
    for (patient, system, value) in [
        ("9434765919", codes::NHS_NUMBER_SYSTEM, "9434765919"),
        ("943 476 5919", codes::NHS_NUMBER_SYSTEM, "9434765919"),
        // A wrong check digit, eleven digits: the trust's own identifier, as given.
        ("9434765918", "https://fhir.trust.example/tether/Id/patient-ref", "9434765918"),
        ("94347659190", "https://fhir.trust.example/tether/Id/patient-ref", "94347659190"),
        ("RX-LOCAL-0001", "https://fhir.trust.example/tether/Id/patient-ref", "RX-LOCAL-0001"),
    ] {
        let episode = scenario("routine_referral", patient, json!({}));
        let evaluation = evaluate(&episode, now(), &Calendar::england_and_wales());
        let bundle = fhir::export(&episode, &evaluation, &settings, now());
        let patients = resources(&bundle, "Patient");
        assert_eq!(patients.len(), 1);
        assert_eq!(patients[0]["identifier"], json!([{"system": system, "value": value}]), "{patient}");
        assert_eq!(
            patients[0]["meta"]["profile"],
            json!(["https://fhir.hl7.org.uk/StructureDefinition/UKCore-Patient"])
        );
    }
    let trust = Settings::new(None, Some("https://fhir.trust.example/Id/local-patient")).expect("settings");
    let bundle = fhir::export(
        &scenario("in_service", "RX-1", json!({})),
        &evaluate(&scenario("in_service", "RX-1", json!({})), now(), &Calendar::england_and_wales()),
        &trust,
        now(),
    );
    assert_eq!(
        resources(&bundle, "Patient")[0]["identifier"][0]["system"],
        "https://fhir.trust.example/Id/local-patient"
    );
    for bad in ["", "not a uri", "https://x.example/a|b", "no-scheme"] {
        assert!(Settings::new(Some(bad), None).is_err(), "{bad:?}");
        assert!(Settings::new(None, Some(bad)).is_err(), "{bad:?}");
    }
}

#[test]
fn appointments_and_encounters_carry_the_data_dictionary_attendance_codes() {
    let episode = scenario("child_not_brought", "RX-1", json!({}));
    let bundle = export(&episode);
    let dd = |code: &str| -> BTreeSet<(String, String)> {
        [codes::ATTENDED_OR_DID_NOT_ATTEND_SYSTEM, codes::ATTENDANCE_STATUS_SYSTEM]
            .iter()
            .map(|s| ((*s).to_owned(), code.to_owned()))
            .collect()
    };
    let miss_reason =
        |reason: &str| ("https://tether.invalid/fhir/CodeSystem/miss-reason".to_owned(), reason.to_owned());

    // Did not attend: 3, the appointment a no-show, the encounter that never happened.
    let dna = made_from(&bundle, "Appointment", &rid(1));
    assert_eq!(dna["status"], "noshow");
    let mut expected = dd("3");
    expected.insert(miss_reason("did_not_attend"));
    assert_eq!(attendance_codes(dna), expected);
    assert_eq!(made_from(&bundle, "Encounter", &rid(1))["status"], "cancelled");
    assert_eq!(attendance_codes(made_from(&bundle, "Encounter", &rid(1))), expected);

    // Not brought: also 3 nationally, with Tether's reason beside it.
    let not_brought = made_from(&bundle, "Appointment", &rid(10));
    let mut expected = dd("3");
    expected.insert(miss_reason("not_brought"));
    assert_eq!(attendance_codes(not_brought), expected);
    assert_eq!(not_brought["appointmentType"]["coding"][0]["code"], "FOLLOWUP");

    // Attended: 5, fulfilled and finished.
    let attended = made_from(&bundle, "Appointment", &rid(16));
    assert_eq!(attended["status"], "fulfilled");
    assert_eq!(attendance_codes(attended), dd("5"));
    let encounter = made_from(&bundle, "Encounter", &rid(16));
    assert_eq!((encounter["status"].as_str(), attendance_codes(encounter)), (Some("finished"), dd("5")));
    assert_eq!(encounter["appointment"][0]["reference"], json!(fhir_url(&bundle, "Appointment", &rid(16))));

    // The displays are the Data Dictionary's words.
    let display = &dna["extension"][0]["valueCodeableConcept"]["coding"][0]["display"];
    assert_eq!(display, "Did not attend - no advance warning given");
    let display = &attended["extension"][0]["valueCodeableConcept"]["coding"][0]["display"];
    assert_eq!(
        display,
        "Attended on time or, if late, before the relevant CARE PROFESSIONAL was ready to see the PATIENT"
    );
}

/// The fullUrl of the `kind` resource made from record `id`.
fn fhir_url(bundle: &Value, kind: &str, id: &str) -> String {
    bundle["entry"]
        .as_array()
        .expect("entries")
        .iter()
        .find(|e| e["resource"]["resourceType"] == kind && e["resource"]["identifier"][0]["value"] == id)
        .and_then(|e| e["fullUrl"].as_str())
        .expect("a fullUrl")
        .to_owned()
}

#[test]
fn every_record_action_risk_and_plan_has_its_resource() {
    let episode = scenario("urgent_referral", "9434765919", json!({"immediate_risk": true, "safeguarding": "both"}));
    let evaluation = evaluate(&episode, now(), &Calendar::england_and_wales());
    let bundle = export(&episode);
    assert_eq!(bundle["type"], "collection");
    let counts = fhir::resource_counts(&bundle);
    assert_eq!(counts["Patient"], 1);
    assert_eq!(counts["EpisodeOfCare"], 1);
    // Two appointments missed, one booked, one attended; two missed and one attended
    // encounters plus the home visit.
    assert_eq!(counts["Appointment"], 4);
    assert_eq!(counts["Encounter"], 4);
    // Four contact attempts (one of them entered in error), the card and two messages.
    assert_eq!(counts["Communication"], 7);
    assert_eq!(counts["ServiceRequest"], 1);
    // Decision, two fact changes, re-engaged, assessment, MDT, discharge.
    assert_eq!(counts["ClinicalImpression"], 7);
    // A Provenance for every record but the filing (the correction has its own).
    assert_eq!(counts["Provenance"], episode.events.len() - 1);
    assert_eq!(counts["Task"], evaluation.actions.len());
    // High risk (set by a record), immediate risk, safeguarding adult and child.
    assert_eq!(counts["Flag"], 4);
    assert_eq!(counts["CarePlan"], 2, "the joint plan and the crisis plan");

    // Every action's Task, its status by the stated mapping.
    for action in &evaluation.actions {
        let task = resources(&bundle, "Task")
            .into_iter()
            .find(|t| t["identifier"][0]["value"] == action.id.to_string())
            .expect("the action's task");
        assert_eq!(task["status"], codes::task_status(action.state), "{:?}", action.state);
        assert_eq!(task["priority"], codes::task_priority(action.priority));
        assert_eq!(task["restriction"]["period"]["end"], action.due.strftime("%Y-%m-%dT%H:%M:%SZ").to_string());
        assert_eq!(task["code"]["coding"][0]["code"], action.code.as_str());
        assert!(task["owner"]["display"].as_str().is_some_and(|d| d.contains("north")), "{task}");
    }
    let states: BTreeSet<&str> = resources(&bundle, "Task").iter().filter_map(|t| t["status"].as_str()).collect();
    assert!(states.contains("completed") && states.contains("ready"), "{states:?}");

    // The record entered in error is marked so, and its correction's Provenance nullifies it.
    let sms = made_from(&bundle, "Communication", &rid(3));
    assert_eq!(sms["status"], "entered-in-error");
    let nullify = resources(&bundle, "Provenance")
        .into_iter()
        .find(|p| p["activity"]["coding"][0]["code"] == "NULLIFY")
        .expect("the correction's provenance");
    assert_eq!(nullify["target"][0]["reference"], json!(fhir_url(&bundle, "Communication", &rid(3))));
    assert_eq!(nullify["entity"][0]["what"]["identifier"]["value"], rid(20));

    // Provenance: author, device, and the server's receipt.
    let first = episode.events.iter().find(|e| e.id.to_string() == rid(1)).expect("record 1");
    let provenance = resources(&bundle, "Provenance")
        .into_iter()
        .find(|p| p["entity"][0]["what"]["identifier"]["value"] == rid(1))
        .expect("record 1's provenance");
    assert_eq!(provenance["agent"][0]["who"]["identifier"]["value"], first.by.as_str());
    assert_eq!(provenance["agent"][1]["who"]["identifier"]["value"], first.device.as_str());
    assert_eq!(
        provenance["recorded"],
        first.received_at.expect("a receipt").strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
    );
    assert_eq!(provenance["target"].as_array().map(Vec::len), Some(2), "the appointment and the encounter");

    // Contact attempts: medium and status by what happened.
    let call = made_from(&bundle, "Communication", &rid(2));
    assert_eq!(
        (call["status"].as_str(), call["medium"][0]["coding"][0]["code"].as_str()),
        (Some("not-done"), Some("PHONE"))
    );
    let letter = made_from(&bundle, "Communication", &rid(9));
    assert_eq!(
        (letter["status"].as_str(), letter["medium"][0]["coding"][0]["code"].as_str()),
        (Some("completed"), Some("MAILWRIT"))
    );
    let card = made_from(&bundle, "Communication", &rid(5));
    assert_eq!(card["encounter"]["reference"], json!(fhir_url(&bundle, "Encounter", &rid(4))));
    let visit = made_from(&bundle, "Encounter", &rid(4));
    assert_eq!((visit["class"]["code"].as_str(), visit["status"].as_str()), (Some("HH"), Some("cancelled")));
    assert_eq!(visit["contained"][0]["position"]["latitude"], 53.4808);
    assert_eq!(
        visit["text"]["div"],
        "<div xmlns=\"http://www.w3.org/1999/xhtml\"><p>Note: Curtains drawn &lt;no&gt; answer &amp; a dog barking.</p></div>"
    );
    assert_eq!(card["note"][0]["text"], "Card through the door.");

    // The episode of care ends with the discharge.
    let care = &resources(&bundle, "EpisodeOfCare")[0];
    assert_eq!(care["status"], "finished");
    assert_eq!(care["careManager"]["identifier"]["value"], "ana");

    // Nothing is null, and the same episode gives the same Bundle.
    fn has_null(value: &Value) -> bool {
        match value {
            Value::Null => true,
            Value::Array(items) => items.iter().any(has_null),
            Value::Object(map) => map.values().any(has_null),
            _ => false,
        }
    }
    assert!(!has_null(&bundle), "FHIR has no nulls");
    assert_eq!(export(&episode), bundle);
}

#[test]
fn a_transaction_files_records_with_conditional_creates_on_stable_identifiers() {
    let episode = scenario("home_treatment", "9434765919", json!({}));
    let settings = Settings::default();
    let ids = |ns: &[usize]| -> Vec<episode::EventId> { ns.iter().map(|n| rid(*n).parse().expect("an id")).collect() };

    // The card alone: its visit is referred to by the identifier it was filed under.
    let bundle = fhir::transaction(&episode, &ids(&[5]), &settings).expect("a transaction");
    assert_eq!(bundle["type"], "transaction");
    let entries = bundle["entry"].as_array().expect("entries");
    let requests: Vec<(&str, &str)> = entries
        .iter()
        .map(|e| (e["resource"]["resourceType"].as_str().unwrap_or(""), e["request"]["method"].as_str().unwrap_or("")))
        .collect();
    assert_eq!(
        requests,
        [("Patient", "POST"), ("EpisodeOfCare", "PUT"), ("Communication", "POST"), ("Provenance", "POST")]
    );
    assert_eq!(entries[0]["request"]["ifNoneExist"], "identifier=https://fhir.nhs.uk/Id/nhs-number|9434765919");
    assert_eq!(
        entries[1]["request"]["url"],
        "EpisodeOfCare?identifier=https://tether.invalid/fhir/Id/episode|0195a1b2-0000-7000-8000-0000000000ff"
    );
    assert_eq!(
        entries[2]["request"]["ifNoneExist"],
        format!("identifier=https://tether.invalid/fhir/Id/record|{}", rid(5))
    );
    assert_eq!(
        entries[3]["request"]["ifNoneExist"],
        format!("entity:identifier=https://tether.invalid/fhir/Id/record|{}", rid(5))
    );
    assert_eq!(
        entries[2]["resource"]["encounter"],
        json!({"type": "Encounter", "identifier": {"system": "https://tether.invalid/fhir/Id/record", "value": rid(4)}})
    );

    // The same records give the same Bundle, whatever their order or repeats: a retry is
    // the same request, and the conditional creates make it change nothing.
    let all: Vec<episode::EventId> =
        episode.events.iter().filter(|e| !matches!(e.body, episode::EventBody::FiledToEpr(_))).map(|e| e.id).collect();
    let once = fhir::transaction(&episode, &all, &settings).expect("a transaction");
    let mut shuffled = all.clone();
    shuffled.reverse();
    shuffled.push(all[0]);
    assert_eq!(fhir::transaction(&episode, &shuffled, &settings).expect("a transaction"), once);
    for entry in once["entry"].as_array().expect("entries") {
        let request = &entry["request"];
        match request["method"].as_str() {
            Some("POST") => assert!(request["ifNoneExist"].as_str().is_some_and(|q| q.contains('|')), "{entry}"),
            Some("PUT") => assert!(request["url"].as_str().is_some_and(|u| u.contains("?identifier=")), "{entry}"),
            other => panic!("{other:?}"),
        }
    }
    // The correction marks the corrected record's resources by their identifier.
    let correction = fhir::transaction(&episode, &ids(&[20]), &settings).expect("a transaction");
    let corrected: Vec<&Value> = correction["entry"]
        .as_array()
        .expect("entries")
        .iter()
        .filter(|e| e["resource"]["resourceType"] == "Communication")
        .collect();
    assert_eq!(corrected.len(), 1);
    assert_eq!(
        corrected[0]["request"]["url"],
        format!("Communication?identifier=https://tether.invalid/fhir/Id/record|{}", rid(3))
    );
    assert_eq!(corrected[0]["resource"]["status"], "entered-in-error");

    // Records it cannot file are refused by name.
    let stranger = episode::EventId::from_uuid(uuid::Uuid::now_v7());
    assert_eq!(fhir::transaction(&episode, &[stranger], &settings), Err(TransactionError::UnknownRecord(stranger)));
    let filing = ids(&[21])[0];
    assert_eq!(fhir::transaction(&episode, &[filing], &settings), Err(TransactionError::NotFiled(filing)));
}

#[test]
fn search_values_are_escaped_and_percent_encoded() {
    assert_eq!(fhir::token("https://a.example/Id/x", "RX-1"), "https://a.example/Id/x|RX-1");
    assert_eq!(fhir::token("urn:x", "a|b,c$d\\e f&g=h#i"), "urn:x|a%5C%7Cb%5C%2Cc%5C%24d%5C%5Ce%20f%26g%3Dh%23i");
    let episode = scenario("home_treatment", "RX|with,odd$chars\\", json!({}));
    let bundle = fhir::transaction(&episode, &[], &Settings::default()).expect("a transaction");
    assert_eq!(
        bundle["entry"][0]["request"]["ifNoneExist"],
        "identifier=https://tether.invalid/fhir/Id/patient-ref|RX%5C%7Cwith%5C%2Codd%5C%24chars%5C%5C"
    );
}

/// Sends a GET as `token`; returns the status, the content type and the body.
async fn get(app: &axum::Router, path: &str, token: Option<&str>) -> (StatusCode, String, Value) {
    let mut request = Request::builder().method(Method::GET).uri(path);
    if let Some(token) = token {
        request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
    }
    let response = app.clone().oneshot(request.body(Body::empty()).expect("a request")).await.expect("a response");
    let status = response.status();
    let content_type =
        response.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX).await.expect("the body");
    (status, content_type, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

async fn login(demo: &Demo, username: &str) -> String {
    let body =
        json!({"username": username, "password": demo.passwords[username], "device_id": format!("desk-{username}")});
    let request = Request::builder()
        .method(Method::POST)
        .uri("/v1/auth/login")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body.to_string()))
        .expect("a request");
    let response = demo.app.clone().oneshot(request).await.expect("a response");
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX).await.expect("the body");
    let body: Value = serde_json::from_slice(&bytes).expect("JSON");
    body["access_token"].as_str().expect("a token").to_owned()
}

/// Every demo episode's Bundle through the route, as sam (both teams) reads them.
async fn demo_bundles(demo: &Demo) -> Vec<(String, Value)> {
    let sam = login(demo, "sam").await;
    let (status, _, list) = get(&demo.app, "/v1/episodes", Some(&sam)).await;
    assert_eq!(status, StatusCode::OK);
    let mut out = Vec::new();
    for episode in list.as_array().expect("a list") {
        let id = episode["id"].as_str().expect("an id");
        let (status, content_type, bundle) = get(&demo.app, &format!("/v1/episodes/{id}/fhir"), Some(&sam)).await;
        assert_eq!(status, StatusCode::OK, "{bundle}");
        assert_eq!(content_type, "application/fhir+json");
        out.push((format!("demo {}", episode["patient_ref"].as_str().expect("a ref")), bundle));
    }
    assert_eq!(out.len(), 9, "every demo episode of both teams");
    out
}

async fn the_route_answers_a_bundle_audited_as_read_fhir_and_another_teams_episode_as_none() {
    let demo = Demo::new();
    let maya = login(&demo, "maya").await;
    let id_of = |patient: &'static str| {
        let rows = demo.rows(&format!("SELECT episode FROM summaries WHERE patient_ref = '{patient}'"));
        rows.first().and_then(|row| row[0].clone()).expect("the demo episode")
    };
    let north = id_of("DEMO-1002");
    let (status, _, bundle) = get(&demo.app, &format!("/v1/episodes/{north}/fhir"), Some(&maya)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(resources(&bundle, "Patient")[0]["identifier"][0]["value"], "DEMO-1002");
    assert!(!resources(&bundle, "Task").is_empty() && !resources(&bundle, "Communication").is_empty());
    // The read is in the audit log under its own name, as maya's, through the API.
    let episode: episode::EpisodeId = north.parse().expect("an id");
    let logged = demo.db(move |conn| server::audit::entries(conn, episode).expect("the audit log"));
    let reads: Vec<(&str, &str)> =
        logged.iter().filter(|e| e.action == "read_fhir").map(|e| (e.username.as_str(), e.device.as_str())).collect();
    assert_eq!(reads, [("maya", "desk-maya")]);

    // Another team's episode answers as one that does not exist; no token, 401.
    let south = id_of("DEMO-2001");
    let (status, _, other) = get(&demo.app, &format!("/v1/episodes/{south}/fhir"), Some(&maya)).await;
    let unknown = uuid::Uuid::now_v7();
    let (unknown_status, _, none) = get(&demo.app, &format!("/v1/episodes/{unknown}/fhir"), Some(&maya)).await;
    assert_eq!((status, unknown_status), (StatusCode::NOT_FOUND, StatusCode::NOT_FOUND));
    assert_eq!(other["error"]["code"], none["error"]["code"]);
    assert!(!other.to_string().contains("DEMO-2001"));
    let (status, _, _) = get(&demo.app, &format!("/v1/episodes/{north}/fhir"), None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

/// The checks by the real FHIR R4 model, which needs Python with `fhir.resources`. They
/// check the Bundles, not the storage (which the tests above run on both backends), so
/// they run on SQLite.
mod needs_fhir_model {
    use super::*;

    #[tokio::test]
    async fn every_bundle_passes_the_fhir_r4_model() {
        let python = python();
        let demo = Demo::new();
        let mut bundles = demo_bundles(&demo).await;
        for (name, episode) in scenarios() {
            let ids: Vec<episode::EventId> = episode
                .events
                .iter()
                .filter(|e| !matches!(e.body, episode::EventBody::FiledToEpr(_)))
                .map(|e| e.id)
                .collect();
            bundles.push((format!("{name} export"), export(&episode)));
            let settings = Settings::default();
            bundles.push((
                format!("{name} transaction"),
                fhir::transaction(&episode, &ids, &settings).expect("a transaction"),
            ));
            for id in &ids {
                let one = fhir::transaction(&episode, &[*id], &settings).expect("a transaction");
                bundles.push((format!("{name} transaction of {id}"), one));
            }
        }
        let report = model_check(&python, &bundles);
        assert_eq!(report.len(), bundles.len());
        let failed: Vec<(&String, &Vec<String>)> = report.iter().filter(|(_, errors)| !errors.is_empty()).collect();
        assert!(failed.is_empty(), "{failed:#?}");
        println!("the FHIR R4 model passed {} Bundles", bundles.len());
    }

    #[test]
    fn the_model_check_refuses_what_fhir_r4_does_not_allow() {
        let python = python();
        let good = export(&scenario("routine_referral", "RX-1", json!({})));
        let task = |bundle: &mut Value| -> usize {
            bundle["entry"]
                .as_array()
                .expect("entries")
                .iter()
                .position(|e| e["resource"]["resourceType"] == "Task")
                .expect("a task")
        };
        let mut unknown_element = good.clone();
        unknown_element["entry"][0]["resource"]["nhsNumber"] = json!("9434765919");
        let mut bad_status = good.clone();
        let i = task(&mut bad_status);
        bad_status["entry"][i]["resource"]["status"] = json!("overdue");
        let mut bad_date = good.clone();
        let i = task(&mut bad_date);
        bad_date["entry"][i]["resource"]["restriction"]["period"]["end"] = json!("2026-02-30T17:00:00Z");
        let mut dangling = good.clone();
        let i = task(&mut dangling);
        dangling["entry"][i]["resource"]["for"]["reference"] = json!("urn:uuid:00000000-0000-0000-0000-000000000000");
        let mut missing_status = good.clone();
        let i = task(&mut missing_status);
        missing_status["entry"][i]["resource"].as_object_mut().expect("a task").remove("status");
        let mut wrong_code = good.clone();
        let appointment = wrong_code["entry"]
            .as_array()
            .expect("entries")
            .iter()
            .position(|e| e["resource"]["resourceType"] == "Appointment" && e["resource"]["status"] == "noshow")
            .expect("a missed appointment");
        wrong_code["entry"][appointment]["resource"]["extension"][0]["valueCodeableConcept"]["coding"][0]["code"] =
            json!("5");
        let bundles = vec![
            ("good".to_owned(), good),
            ("unknown element".to_owned(), unknown_element),
            ("bad status".to_owned(), bad_status),
            ("bad date".to_owned(), bad_date),
            ("dangling reference".to_owned(), dangling),
            ("missing status".to_owned(), missing_status),
            ("attendance code against the status".to_owned(), wrong_code),
        ];
        let report = model_check(&python, &bundles);
        assert!(report["good"].is_empty(), "{:?}", report["good"]);
        for (name, _) in &bundles[1..] {
            assert!(!report[name].is_empty(), "{name} passed");
        }
    }
}

common::backends!(the_route_answers_a_bundle_audited_as_read_fhir_and_another_teams_episode_as_none);
