//! The `tether` binary, run as a user would: `tether pathway evaluate` and
//! `tether pathway rules` (`shared/interfaces.md`).

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

use episode::pathway::Code;
use serde_json::{Value, json};

const NOW: &str = "2026-03-02T12:00:00Z";
const MISSED: &str = "01950000-0000-7000-8000-0000000000a1";
const BAD: &str = "01950000-0000-7000-8000-0000000000b1";

fn tether(args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_tether"))
        .args(args)
        .env_remove("TETHER_PATHWAY_DEFAULTS")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run tether");
    let mut pipe = child.stdin.take().expect("stdin is piped");
    // The binary may exit before reading stdin (a bad `--now`): ignore a broken pipe.
    let _ = pipe.write_all(stdin.as_bytes());
    drop(pipe);
    child.wait_with_output().expect("wait for tether")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// An urgent referral whose initial appointment was missed at 10:00 on Monday 2 March 2026.
fn urgent_episode(events: Vec<Value>) -> String {
    json!({
        "id": "01950000-0000-7000-8000-000000000001",
        "patient_ref": "NHS-943-476-5919",
        "team": "team-north",
        "opened_at": "2026-03-02T09:00:00Z",
        "opened_by": "user-alice",
        "pathway": "urgent_referral",
        "events": events
    })
    .to_string()
}

fn missed_initial() -> Value {
    json!({
        "id": MISSED, "kind": "appointment_missed", "at": "2026-03-02T10:00:00Z",
        "by": "user-alice", "device": "phone-1", "appointment": "initial"
    })
}

/// Asserts a refusal: non-zero exit, nothing on stdout, and returns stderr.
fn assert_refused(output: &Output) -> String {
    let err = stderr(output);
    assert!(!output.status.success(), "expected failure; stdout: {}", stdout(output));
    assert!(output.stdout.is_empty(), "stdout not empty: {}", stdout(output));
    assert!(!err.trim().is_empty(), "no message on stderr");
    err
}

fn evaluation(output: &Output) -> Value {
    assert!(output.status.success(), "tether failed: {}", stderr(output));
    serde_json::from_str(&stdout(output)).expect("stdout is JSON")
}

fn action<'a>(evaluation: &'a Value, code: &str) -> &'a Value {
    let actions = evaluation["actions"].as_array().expect("an actions array");
    let found: Vec<&Value> = actions.iter().filter(|a| a["code"] == code).collect();
    assert_eq!(found.len(), 1, "expected one {code} in {actions:#?}");
    found[0]
}

/// A file under cargo's per-test temporary directory.
fn temp_file(name: &str, contents: &str) -> PathBuf {
    let path = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(name);
    std::fs::write(&path, contents).expect("write a temporary file");
    path
}

#[test]
fn evaluate_urgent_referral_missed_initial_opens_contact_patient_due_same_day() {
    let output = tether(&["pathway", "evaluate", "--now", NOW], &urgent_episode(vec![missed_initial()]));
    let evaluation = evaluation(&output);
    assert!(evaluation["warnings"].is_array(), "no warnings array: {evaluation}");
    let contact = action(&evaluation, "contact_patient");
    assert_eq!(contact["state"], "open", "{contact}");
    assert_eq!(contact["due"], "2026-03-02T23:59:59Z", "{contact}");
    assert_eq!(contact["active_from"], "2026-03-02T10:00:00Z", "{contact}");
    assert_eq!(contact["cites"], "5.1.1", "{contact}");
    assert_eq!(contact["resolved_by"], Value::Null, "{contact}");
    let family = action(&evaluation, "contact_family_carers");
    assert_eq!(family["due"], "2026-03-02T23:59:59Z", "{family}");
}

#[test]
fn evaluate_refuses_invalid_json() {
    let output = tether(&["pathway", "evaluate", "--now", NOW], "{\"id\": ");
    let err = assert_refused(&output);
    assert!(err.contains("not a valid episode document"), "{err}");
}

#[test]
fn evaluate_refuses_an_event_of_unknown_kind_naming_the_field_and_the_event() {
    let mut bad = missed_initial();
    bad["id"] = json!(BAD);
    bad["kind"] = json!("telepathy");
    let output = tether(&["pathway", "evaluate", "--now", NOW], &urgent_episode(vec![missed_initial(), bad]));
    let err = assert_refused(&output);
    assert!(err.contains("`kind`"), "{err}");
    assert!(err.contains(BAD), "{err}");
}

#[test]
fn evaluate_refusal_does_not_repeat_the_patient_ref() {
    let mut episode: Value = serde_json::from_str(&urgent_episode(vec![missed_initial()])).unwrap();
    episode["children"] = json!("NHS-943-476-5919");
    let output = tether(&["pathway", "evaluate", "--now", NOW], &episode.to_string());
    let err = assert_refused(&output);
    assert!(err.contains("children"), "{err}");
    assert!(!err.contains("NHS-943-476-5919"), "stderr repeats the patient ref: {err}");
}

#[test]
fn evaluate_refuses_now_without_an_offset() {
    let output =
        tether(&["pathway", "evaluate", "--now", "2026-03-02T12:00:00"], &urgent_episode(vec![missed_initial()]));
    let err = assert_refused(&output);
    assert!(err.contains("--now"), "{err}");
    assert!(err.contains("offset"), "{err}");
}

#[test]
fn evaluate_with_defaults_file_changes_contact_family_carers_due() {
    let defaults =
        temp_file("cli-defaults-family-one-working-day.json", r#"{"urgent_contact_family_carers": "1 working day"}"#);
    let output = tether(
        &["pathway", "evaluate", "--now", NOW, "--defaults", defaults.to_str().unwrap()],
        &urgent_episode(vec![missed_initial()]),
    );
    let evaluation = evaluation(&output);
    let family = action(&evaluation, "contact_family_carers");
    assert_eq!(family["due"], "2026-03-03T17:00:00Z", "{family}");
    // Other deadlines keep their defaults.
    let contact = action(&evaluation, "contact_patient");
    assert_eq!(contact["due"], "2026-03-02T23:59:59Z", "{contact}");
}

#[test]
fn evaluate_refuses_a_defaults_file_with_an_unknown_name() {
    let defaults = temp_file("cli-defaults-unknown-name.json", r#"{"weekend_visit_deadline": "1 working day"}"#);
    let output = tether(
        &["pathway", "evaluate", "--now", NOW, "--defaults", defaults.to_str().unwrap()],
        &urgent_episode(vec![missed_initial()]),
    );
    let err = assert_refused(&output);
    assert!(err.contains("weekend_visit_deadline"), "{err}");
}

#[test]
fn rules_refuses_a_defaults_file_with_an_unknown_name() {
    let defaults = temp_file("cli-rules-defaults-unknown-name.json", r#"{"weekend_visit_deadline": "1 working day"}"#);
    let output = tether(&["pathway", "rules", "--defaults", defaults.to_str().unwrap()], "");
    let err = assert_refused(&output);
    assert!(err.contains("weekend_visit_deadline"), "{err}");
}

/// Whether some line of the table reads `name value`, ignoring the table's punctuation.
fn has_default_line(table: &str, name: &str, value: &str) -> bool {
    let wanted: Vec<&str> = std::iter::once(name).chain(value.split_whitespace()).collect();
    table.lines().any(|line| {
        let words: Vec<&str> = line.split(|c: char| c == '|' || c.is_whitespace()).filter(|w| !w.is_empty()).collect();
        words == wanted
    })
}

#[test]
fn rules_prints_every_code_and_every_local_default() {
    let output = tether(&["pathway", "rules"], "");
    assert!(output.status.success(), "tether failed: {}", stderr(&output));
    let table = stdout(&output);
    for code in Code::ALL {
        assert!(table.contains(code.as_str()), "no row for {code}:\n{table}");
    }
    assert!(
        has_default_line(&table, "routine_phone_patient", "2 working days"),
        "no line for routine_phone_patient:\n{table}"
    );
    assert!(has_default_line(&table, "leave_calling_card", "1 hour"), "no line for leave_calling_card:\n{table}");
}

#[test]
fn rules_with_defaults_file_prints_the_overridden_value() {
    let defaults = temp_file("cli-rules-defaults-routine-phone.json", r#"{"routine_phone_patient": "3 working days"}"#);
    let output = tether(&["pathway", "rules", "--defaults", defaults.to_str().unwrap()], "");
    assert!(output.status.success(), "tether failed: {}", stderr(&output));
    let table = stdout(&output);
    assert!(
        has_default_line(&table, "routine_phone_patient", "3 working days"),
        "no overridden line for routine_phone_patient:\n{table}"
    );
}
