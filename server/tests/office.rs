//! The team base's and the manager's API (`/v1/episodes…`, `/v1/reconcile`, `/v1/audit`,
//! `/metrics`) through `app(state)` and `oneshot`, on a real database seeded by
//! `tether serve --demo`'s seeder, with a clock the tests move.

mod common;

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use jiff::Timestamp;
use serde_json::{Value, json};
use server::demo;
use tower::ServiceExt;

use common::{DEMO_START, Demo as Office};

impl Office {
    async fn send(&self, method: Method, path: &str, token: Option<&str>, body: Option<&str>) -> (StatusCode, Value) {
        let (status, bytes) = self.send_raw(method, path, token, body).await;
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()))
        };
        (status, body)
    }

    async fn send_raw(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<&str>,
    ) -> (StatusCode, Vec<u8>) {
        let mut request = Request::builder().method(method).uri(path);
        if let Some(token) = token {
            request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        if body.is_some() {
            request = request.header(header::CONTENT_TYPE, "application/json");
        }
        let request = request.body(body.map_or_else(Body::empty, |b| Body::from(b.to_owned()))).expect("a request");
        let response = self.app.clone().oneshot(request).await.expect("a response");
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX).await.expect("the body");
        (status, bytes.to_vec())
    }

    async fn get(&self, path: &str, token: &str) -> (StatusCode, Value) {
        self.send(Method::GET, path, Some(token), None).await
    }

    async fn post(&self, path: &str, token: &str, body: Value) -> (StatusCode, Value) {
        self.send(Method::POST, path, Some(token), Some(&body.to_string())).await
    }

    /// Signs a demo user in on the device `desk-NAME`; returns the access token.
    async fn login(&self, username: &str) -> String {
        let password = &self.passwords[username];
        let body = json!({"username": username, "password": password, "device_id": format!("desk-{username}")});
        let (status, body) = self.send(Method::POST, "/v1/auth/login", None, Some(&body.to_string())).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body["access_token"].as_str().expect("a token").to_owned()
    }

    /// The caseload as `token` sees it, by patient reference.
    async fn caseload(&self, token: &str) -> HashMap<String, Value> {
        let (status, body) = self.get("/v1/episodes", token).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body.as_array()
            .expect("a list")
            .iter()
            .map(|e| (e["patient_ref"].as_str().expect("a ref").to_owned(), e.clone()))
            .collect()
    }

    async fn id_of(&self, token: &str, patient: &str) -> String {
        self.caseload(token).await[patient]["id"].as_str().expect("an id").to_owned()
    }
}

fn code(body: &Value) -> &str {
    body["error"]["code"].as_str().unwrap_or_else(|| panic!("an error body, got {body}"))
}

fn message(body: &Value) -> &str {
    body["error"]["message"].as_str().unwrap_or_else(|| panic!("an error body, got {body}"))
}

async fn the_caseload_lists_only_the_callers_teams_with_counts_that_match_each_timeline() {
    let office = Office::new();
    let maya = office.login("maya").await;
    let (status, list) = office.get("/v1/episodes", &maya).await;
    assert_eq!(status, StatusCode::OK);
    let list = list.as_array().expect("a list");
    let refs: Vec<&str> = list.iter().map(|e| e["patient_ref"].as_str().expect("a ref")).collect();
    assert_eq!(list.len(), 6, "{refs:?}");
    assert!(refs.iter().all(|r| r.starts_with("DEMO-1")), "only north's: {refs:?}");
    // Overdue first.
    let overdue: Vec<i64> = list.iter().map(|e| e["overdue_actions"].as_i64().expect("a count")).collect();
    assert!(overdue.windows(2).all(|w| w[0] >= w[1]), "{overdue:?}");
    assert!(overdue[0] > 0, "the demo has overdue actions");
    for entry in list {
        for field in ["id", "team", "pathway", "patient_ref", "open_actions", "overdue_actions", "conflicts"] {
            assert!(entry.get(field).is_some(), "{field} missing from {entry}");
        }
        // The counts are the timeline's own evaluation.
        let (status, timeline) =
            office.get(&format!("/v1/episodes/{}/timeline", entry["id"].as_str().expect("id")), &maya).await;
        assert_eq!(status, StatusCode::OK);
        let actions = timeline["actions"].as_array().expect("actions");
        let open = actions.iter().filter(|a| a["state"] == "open" || a["state"] == "overdue").count() as i64;
        let late = actions.iter().filter(|a| a["state"] == "overdue").count() as i64;
        assert_eq!((entry["open_actions"].as_i64(), entry["overdue_actions"].as_i64()), (Some(open), Some(late)));
    }
    let conflicted = list.iter().find(|e| e["patient_ref"] == "DEMO-1003").expect("DEMO-1003");
    assert_eq!(conflicted["conflicts"], 1);
    assert_eq!(conflicted["pathway"], "in_service");

    let priya = office.login("priya").await;
    let south = office.caseload(&priya).await;
    assert_eq!(south.len(), 3);
    assert!(south.keys().all(|r| r.starts_with("DEMO-2")));
}

async fn every_route_needs_a_token() {
    let office = Office::new();
    let maya = office.login("maya").await;
    let id = office.id_of(&maya, "DEMO-1001").await;
    for (method, path) in [
        (Method::GET, "/v1/episodes".to_owned()),
        (Method::GET, format!("/v1/episodes/{id}")),
        (Method::GET, format!("/v1/episodes/{id}/timeline")),
        (Method::POST, format!("/v1/episodes/{id}/events")),
        (Method::POST, format!("/v1/episodes/{id}/facts")),
        (Method::PUT, format!("/v1/episodes/{id}/plan")),
        (Method::GET, "/v1/reconcile".to_owned()),
        (Method::GET, format!("/v1/audit?episode={id}")),
    ] {
        let (status, body) = office.send(method.clone(), &path, None, Some("{}")).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{method} {path}: {body}");
        assert_eq!(code(&body), "unauthenticated");
    }
}

async fn another_teams_episode_answers_exactly_like_one_that_does_not_exist() {
    let office = Office::new();
    let maya = office.login("maya").await;
    let priya = office.login("priya").await;
    let theirs = office.id_of(&priya, "DEMO-2001").await;
    let nobodys = uuid::Uuid::now_v7().to_string();
    for id in [&theirs, &nobodys] {
        for (method, path, body) in [
            (Method::GET, format!("/v1/episodes/{id}"), None),
            (Method::GET, format!("/v1/episodes/{id}/timeline"), None),
            (Method::POST, format!("/v1/episodes/{id}/events"), Some(json!({"kind": "appointment_attended"}))),
            (Method::POST, format!("/v1/episodes/{id}/facts"), Some(json!({"field": "risk", "value": "high"}))),
            (Method::PUT, format!("/v1/episodes/{id}/plan"), Some(json!({"text": "a plan"}))),
        ] {
            let body = body.map(|b| b.to_string());
            let (status, answer) = office.send(method.clone(), &path, Some(&maya), body.as_deref()).await;
            assert_eq!(status, StatusCode::NOT_FOUND, "{method} {path}: {answer}");
            assert_eq!(message(&answer), format!("no such episode: {id}"));
        }
    }
    // A path that is no episode id at all is no episode either.
    let (status, body) = office.get("/v1/episodes/not-an-id/timeline", &maya).await;
    assert_eq!((status, code(&body)), (StatusCode::NOT_FOUND, "not_found"));
    // And nothing of theirs was changed or read by the attempts.
    let tom = office.login("tom").await;
    let (_, audit) = office.get(&format!("/v1/audit?episode={theirs}"), &tom).await;
    assert!(audit["entries"].as_array().expect("entries").iter().all(|e| e["username"] != "maya"), "{audit}");
}

async fn one_episode_shows_its_conflicts_and_the_timeline_every_record_with_its_provenance() {
    let office = Office::new();
    let maya = office.login("maya").await;
    let id = office.id_of(&maya, "DEMO-1003").await;
    let (status, episode) = office.get(&format!("/v1/episodes/{id}"), &maya).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(episode["id"], id.as_str());
    assert_eq!(episode["risk"], json!(["low", "high"]), "a conflict shows both values");
    assert_eq!(episode["conflicts"], json!([{"field": "risk", "values": ["low", "high"]}]));

    let id = office.id_of(&maya, "DEMO-1002").await;
    let (status, timeline) = office.get(&format!("/v1/episodes/{id}/timeline"), &maya).await;
    assert_eq!(status, StatusCode::OK);
    let events = timeline["events"].as_array().expect("events");
    assert_eq!(events.len(), 3);
    let times: Vec<Timestamp> = events.iter().map(|e| e["at"].as_str().expect("at").parse().expect("a time")).collect();
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "in the order things happened");
    for event in events {
        assert_eq!(event["by"], "ben");
        assert_eq!(event["device"], "phone-ben");
        let received: Timestamp = event["received_at"].as_str().expect("received_at").parse().expect("a time");
        let at: Timestamp = event["at"].as_str().expect("at").parse().expect("a time");
        assert!(received >= at, "received after it happened");
    }
    let visit = events.iter().find(|e| e["kind"] == "home_visit").expect("the visit");
    assert_eq!(visit["location"]["lat"], 53.4808);
    assert!(timeline["actions"].as_array().expect("actions").iter().any(|a| a["code"] == "leave_calling_card"));
    assert!(timeline["warnings"].is_array());
}

async fn recording_from_the_office_is_the_servers_own_change_and_files_a_record() {
    let office = Office::new();
    let maya = office.login("maya").await;
    let id = office.id_of(&maya, "DEMO-1001").await;
    let (_, before) = office.get(&format!("/v1/episodes/{id}/timeline"), &maya).await;
    let missed = before["events"][0]["id"].as_str().expect("the miss").to_owned();
    let unfiled_before = office.caseload(&maya).await["DEMO-1001"]["unfiled"].as_i64().expect("a count");
    assert!(before["unfiled"].as_array().expect("unfiled").iter().any(|u| u["record"] == missed.as_str()));

    let (status, body) = office
        .post(
            &format!("/v1/episodes/{id}/events"),
            &maya,
            json!({"kind": "filed_to_epr", "records": [missed], "epr_ref": "EPR-1"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let filed = body["id"].as_str().expect("an id").to_owned();

    let (_, after) = office.get(&format!("/v1/episodes/{id}/timeline"), &maya).await;
    let record = after["events"].as_array().expect("events").iter().find(|e| e["id"] == filed.as_str()).expect("filed");
    // By the signed-in caller, on the server's own device (not the desk she signed in
    // from, which no record of hers was made on); the audit log names her desk.
    let server_device = record["device"].as_str().expect("a device");
    assert_eq!(record["by"].as_str(), Some("maya"));
    assert!(server_device.starts_with("server:") && server_device.len() == "server:".len() + 8, "{server_device}");
    let (_, audit) = office.get(&format!("/v1/audit?episode={id}"), &maya).await;
    let entry = audit["entries"]
        .as_array()
        .expect("audit entries")
        .iter()
        .find(|e| e["action"] == "record_event" && e["detail"] == filed.as_str())
        .cloned()
        .expect("the record's audit entry");
    assert_eq!((entry["username"].as_str(), entry["device"].as_str()), (Some("maya"), Some("desk-maya")), "{entry}");
    assert!(record["received_at"].is_string());
    assert!(!after["unfiled"].as_array().expect("unfiled").iter().any(|u| u["record"] == missed.as_str()));
    assert_eq!(office.caseload(&maya).await["DEMO-1001"]["unfiled"].as_i64(), Some(unfiled_before - 1));

    // A practitioner records a phone call from the base; `at` is optional and kept.
    let ana = office.login("ana").await;
    let at = "2026-03-04T09:30:00+00:00";
    let (status, body) = office
        .post(
            &format!("/v1/episodes/{id}/events"),
            &ana,
            json!({"kind": "contact_attempt", "at": at,
              "method": "phone", "target": "patient", "outcome": "contact_made", "note": "will come on Friday"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (_, after) = office.get(&format!("/v1/episodes/{id}"), &ana).await;
    let call = after["events"].as_array().expect("events").iter().find(|e| e["id"] == body["id"]).expect("the call");
    assert_eq!(call["at"], "2026-03-04T09:30:00Z");
    assert_eq!(call["note"], "will come on Friday");
}

async fn bad_records_are_refused_naming_the_field_and_nothing_is_stored() {
    let office = Office::new();
    let maya = office.login("maya").await;
    let id = office.id_of(&maya, "DEMO-1001").await;
    let (_, before) = office.get(&format!("/v1/episodes/{id}/timeline"), &maya).await;
    let path = format!("/v1/episodes/{id}/events");
    for (body, names) in [
        (json!({"method": "phone"}), "kind"),
        (json!({"kind": "teleport"}), "kind"),
        (json!({"kind": "decision", "topic": "cold_call", "outcome": "yes"}), "rationale"),
        (json!({"kind": "contact_attempt", "method": "phone", "target": "patient"}), "outcome"),
        (json!({"kind": "contact_attempt", "method": "pigeon", "target": "patient", "outcome": "sent"}), "method"),
        (json!({"kind": "appointment_attended", "at": "2026-03-04T09:30:00"}), "at"),
        (json!({"kind": "appointment_attended", "at": "2206-03-04T09:30:00Z"}), "outside the years 2000 to 2100"),
        (json!({"kind": "appointment_booked", "for": "1926-03-11T09:30:00Z"}), "outside the years 2000 to 2100"),
        (json!({"kind": "appointment_attended", "id": uuid::Uuid::nil()}), "id"),
        (json!({"kind": "appointment_attended", "by": "someone"}), "by"),
        (json!({"kind": "entered_in_error", "record": uuid::Uuid::nil(), "reason": "wrong patient"}), "record"),
        (json!({"kind": "filed_to_epr", "records": [uuid::Uuid::nil()], "epr_ref": "EPR-1"}), "records"),
        (json!({"kind": "fact_changed", "field": "risk", "value": "high"}), "facts"),
        (json!(["not", "an", "object"]), "object"),
        // Past the limits of `episode::limits`: a text field, a list's text, the plan.
        (json!({"kind": "reengaged", "note": "N".repeat(episode::limits::MAX_TEXT_BYTES + 1)}), "`note`"),
        (
            json!({"kind": "mdt_meeting", "attendees": ["team_manager", "A".repeat(episode::limits::MAX_TEXT_BYTES + 1)],
                   "outcome": "continue"}),
            "`attendees`",
        ),
    ] {
        let (status, answer) = office.post(&path, &maya, body.clone()).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}: {answer}");
        assert!(message(&answer).contains(names), "{body}: {answer} should name {names}");
        assert!(!message(&answer).contains("NNNN") && !message(&answer).contains("AAAA"), "{answer}");
    }
    let plan = json!({"text": "P".repeat(episode::limits::MAX_PLAN_BYTES + 1)});
    let (status, answer) =
        office.send(Method::PUT, &format!("/v1/episodes/{id}/plan"), Some(&maya), Some(&plan.to_string())).await;
    assert_eq!((status, code(&answer)), (StatusCode::UNPROCESSABLE_ENTITY, "invalid_body"), "{answer}");
    assert!(message(&answer).contains("`plan`"), "{answer}");
    let (status, answer) = office.send(Method::POST, &path, Some(&maya), Some("{not json")).await;
    assert_eq!((status, code(&answer)), (StatusCode::BAD_REQUEST, "malformed_json"));
    // A key given twice: serde_json alone would keep the last and store a record the
    // sender may not have meant.
    let twice = r#"{"kind": "contact_attempt", "method": "phone", "target": "patient", "outcome": "no_answer", "outcome": "contact_made"}"#;
    let (status, answer) = office.send(Method::POST, &path, Some(&maya), Some(twice)).await;
    assert_eq!((status, code(&answer)), (StatusCode::UNPROCESSABLE_ENTITY, "invalid_body"));
    assert!(message(&answer).contains("the key `outcome` appears twice"), "{answer}");
    let (_, after) = office.get(&format!("/v1/episodes/{id}/timeline"), &maya).await;
    assert_eq!(before["events"], after["events"], "nothing stored");
}

async fn setting_a_fact_resolves_a_conflict_and_bad_facts_are_refused() {
    let office = Office::new();
    let ana = office.login("ana").await;
    let id = office.id_of(&ana, "DEMO-1003").await;
    let path = format!("/v1/episodes/{id}/facts");
    for (body, names) in [
        (json!({"field": "mood", "value": "low"}), "field"),
        (json!({"field": "risk", "value": "medium"}), "value"),
        (json!({"field": "risk"}), "value"),
        (json!({"field": "risk", "value": "high", "why": "x"}), "why"),
    ] {
        let (status, answer) = office.post(&path, &ana, body.clone()).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}: {answer}");
        assert!(message(&answer).contains(names), "{answer} should name {names}");
    }
    let (status, body) = office.post(&path, &ana, json!({"field": "risk", "value": "high"})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (_, episode) = office.get(&format!("/v1/episodes/{id}"), &ana).await;
    assert_eq!(episode["risk"], "high");
    assert_eq!(episode["conflicts"], json!([]));
    let change =
        episode["events"].as_array().expect("events").iter().find(|e| e["id"] == body["id"]).expect("recorded");
    assert_eq!((change["kind"].as_str(), change["field"].as_str()), (Some("fact_changed"), Some("risk")));
    assert_eq!(office.caseload(&ana).await["DEMO-1003"]["conflicts"], 0);
}

async fn the_plan_is_edited_from_the_office() {
    let office = Office::new();
    let ana = office.login("ana").await;
    let id = office.id_of(&ana, "DEMO-1005").await;
    let path = format!("/v1/episodes/{id}/plan");
    let (status, body) = office.send(Method::PUT, &path, Some(&ana), Some(r#"{"text": "Visit on Tuesdays."}"#)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (_, episode) = office.get(&format!("/v1/episodes/{id}"), &ana).await;
    assert_eq!(episode["plan"], "Visit on Tuesdays.");
    let (status, body) = office.send(Method::PUT, &path, Some(&ana), Some(r#"{"plan": "x"}"#)).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(message(&body).contains("plan"), "{body}");
}

async fn reconcile_lists_conflicts_duplicates_and_unfiled_records_of_the_callers_teams() {
    let office = Office::new();
    let maya = office.login("maya").await;
    let (status, body) = office.get("/v1/reconcile", &maya).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let conflicts = body["conflicts"].as_array().expect("conflicts");
    assert_eq!(conflicts.len(), 1, "{conflicts:?}");
    assert_eq!(
        (conflicts[0]["patient_ref"].as_str(), conflicts[0]["field"].as_str()),
        (Some("DEMO-1003"), Some("risk"))
    );
    let duplicates = body["duplicates"].as_array().expect("duplicates");
    assert_eq!(duplicates.len(), 1, "{duplicates:?}");
    assert_eq!(duplicates[0]["patient_ref"], "DEMO-1006");
    assert_eq!(duplicates[0]["kind"], "contact_attempt");
    // The field the records share, and its value: each said once.
    assert_eq!((&duplicates[0]["target_field"], &duplicates[0]["target"]), (&json!("target"), &json!("patient")));
    assert_eq!(duplicates[0]["records"].as_array().map(Vec::len), Some(2));
    let unfiled = body["unfiled"].as_array().expect("unfiled");
    assert!(unfiled.iter().all(|u| u["patient_ref"].as_str().is_some_and(|r| r.starts_with("DEMO-1"))));
    assert!(unfiled.iter().all(|u| u["kind"] != "filed_to_epr"));
    // DEMO-1005's filed record is not among them; its others are.
    let filed_episode = office.id_of(&maya, "DEMO-1005").await;
    let (_, timeline) = office.get(&format!("/v1/episodes/{filed_episode}/timeline"), &maya).await;
    let filed = timeline["events"]
        .as_array()
        .expect("events")
        .iter()
        .find(|e| e["kind"] == "filed_to_epr")
        .expect("filed")["records"][0]
        .clone();
    assert!(!unfiled.iter().any(|u| u["record"] == filed));
    assert!(unfiled.iter().any(|u| u["episode"] == filed_episode.as_str()));

    // Resolving the conflict takes it off the list.
    let id = conflicts[0]["episode"].as_str().expect("id");
    office.post(&format!("/v1/episodes/{id}/facts"), &maya, json!({"field": "risk", "value": "high"})).await;
    let (_, body) = office.get("/v1/reconcile", &maya).await;
    assert_eq!(body["conflicts"], json!([]));
}

async fn the_audit_log_holds_every_read_and_write_for_managers_only() {
    let office = Office::new();
    let maya = office.login("maya").await;
    let ana = office.login("ana").await;
    let id = office.id_of(&ana, "DEMO-1002").await;
    office.get(&format!("/v1/episodes/{id}"), &ana).await;
    office.get(&format!("/v1/episodes/{id}/timeline"), &ana).await;
    office.post(&format!("/v1/episodes/{id}/events"), &ana, json!({"kind": "appointment_attended"})).await;
    office.post(&format!("/v1/episodes/{id}/facts"), &ana, json!({"field": "risk", "value": "low"})).await;
    office.send(Method::PUT, &format!("/v1/episodes/{id}/plan"), Some(&ana), Some(r#"{"text": "t"}"#)).await;

    let (status, body) = office.get(&format!("/v1/audit?episode={id}"), &maya).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let by_ana: Vec<&str> = body["entries"]
        .as_array()
        .expect("entries")
        .iter()
        .filter(|e| e["username"] == "ana")
        .map(|e| {
            assert_eq!((e["device"].as_str(), e["via"].as_str()), (Some("desk-ana"), Some("api")));
            assert!(e["at"].is_string());
            e["action"].as_str().expect("action")
        })
        .collect();
    assert_eq!(by_ana, ["list_episode", "read_episode", "read_timeline", "record_event", "set_fact", "edit_plan"]);

    let (status, body) = office.get(&format!("/v1/audit?episode={id}"), &ana).await;
    assert_eq!((status, code(&body)), (StatusCode::FORBIDDEN, "forbidden"));
    let tom = office.login("tom").await;
    let (status, _) = office.get(&format!("/v1/audit?episode={id}"), &tom).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    // Without an episode: the whole team's log, a page at a time (below).
    let (status, _) = office.get("/v1/audit", &maya).await;
    assert_eq!(status, StatusCode::OK);

    // Append-only, in the database itself.
    office.db(|conn| {
        assert!(conn.inspect_execute("UPDATE audit SET username = 'x'").is_err());
        assert!(conn.inspect_execute("DELETE FROM audit").is_err());
    });
    assert!(office.number("SELECT COUNT(*) FROM audit") > 0, "nothing was deleted");
}

async fn overdue_counts_follow_the_clock_without_any_write() {
    let office = Office::new();
    let maya = office.login("maya").await;
    let before = office.caseload(&maya).await;
    let total =
        |c: &HashMap<String, Value>| c.values().map(|e| e["overdue_actions"].as_i64().unwrap_or(0)).sum::<i64>();
    // A week later, with nobody recording anything, more is overdue.
    office.advance(7 * 24 * 3600);
    let tokens_expired = office.login("maya").await;
    let after = office.caseload(&tokens_expired).await;
    assert!(total(&after) > total(&before), "{} then {}", total(&before), total(&after));

    // The scheduled re-evaluation makes the same summaries with no read at all.
    let office = Office::new();
    office.advance(7 * 24 * 3600);
    let now = office.state.clock.now();
    let docs = Arc::clone(&office.state.docs);
    let made =
        office.db(|conn| server::caseload::refresh_all(conn, &docs, &Default::default(), None, now)).expect("refresh");
    assert!(made > 0);
    let stored = office.number(
        "SELECT CAST(SUM(overdue_actions) AS BIGINT) FROM summaries s JOIN episodes e ON e.id = s.episode WHERE e.team = 'north'",
    );
    assert_eq!(stored, total(&after));
    let again =
        office.db(|conn| server::caseload::refresh_all(conn, &docs, &Default::default(), None, now)).expect("refresh");
    assert_eq!(again, 0, "nothing is re-evaluated twice at the same moment");
}

async fn the_background_task_re_evaluates_on_its_schedule() {
    let office = Office::new();
    // The seed summarised every episode at START; a week on, the clock has changed them.
    office.advance(7 * 24 * 3600);
    let stale = |office: &Office| -> i64 {
        let now = office.state.clock.now().as_second();
        office.number(&format!("SELECT COUNT(*) FROM summaries WHERE next_due <= {now}"))
    };
    assert!(stale(&office) > 0);
    // Tokio's clock is paused: it moves only when every task waits on a timer (not while
    // the task's database work runs on the blocking pool), so the schedule's minutes pass
    // at once and the test shows exactly when it runs.
    tokio::time::pause();
    let every = std::time::Duration::from_secs(60);
    let _task = server::serve::spawn_reevaluation(office.state.clone(), every);
    // The first run is at once.
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    assert_eq!(stale(&office), 0, "the first run re-evaluates what the clock changed");
    // Another week passes on the server's clock: nothing runs until the next tick.
    office.advance(7 * 24 * 3600);
    tokio::time::sleep(every / 2).await;
    assert!(stale(&office) > 0, "the task ran before its time");
    tokio::time::sleep(every / 2 + std::time::Duration::from_secs(1)).await;
    assert_eq!(stale(&office), 0, "the next run re-evaluates on its schedule");
}

async fn metrics_count_requests_and_show_open_and_overdue_actions_per_team() {
    let office = Office::new();
    let maya = office.login("maya").await;
    let north = office.caseload(&maya).await;
    let (status, body) = office.send_raw(Method::POST, "/v1/sync", Some(&maya), Some("not postcard")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{}", String::from_utf8_lossy(&body));
    // On the main port there is no /metrics without a token configured.
    let (status, body) = office.send(Method::GET, "/metrics", None, None).await;
    assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::NOT_FOUND, Some("not_found")));
    let (status, _) = office.send(Method::GET, "/metrics", Some(&maya), None).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "an access token is no metrics token");
    // The metrics listener's service answers it.
    let request = Request::builder().uri("/metrics").body(Body::empty()).expect("a request");
    let response = server::metrics::metrics_app(office.state.clone()).oneshot(request).await.expect("a response");
    assert_eq!(response.status(), StatusCode::OK);
    let text = axum::body::to_bytes(response.into_body(), usize::MAX).await.expect("the body");
    let text = String::from_utf8(text.to_vec()).expect("text");
    assert!(text.contains(r#"tether_http_requests_total{route="/v1/episodes",method="GET",status="200"} 1"#), "{text}");
    assert!(text.contains(r#"tether_http_requests_total{route="/v1/auth/login",method="POST",status="200"} 1"#));
    assert!(text.contains(r#"tether_sync_duration_seconds_bucket{le="+Inf"} 1"#), "{text}");
    assert!(text.contains("tether_sync_duration_seconds_count 1"));
    let open: i64 = north.values().map(|e| e["open_actions"].as_i64().unwrap_or(0)).sum();
    let overdue: i64 = north.values().map(|e| e["overdue_actions"].as_i64().unwrap_or(0)).sum();
    assert!(text.contains(&format!("tether_open_actions{{team=\"north\"}} {open}")), "{text}");
    assert!(text.contains(&format!("tether_overdue_actions{{team=\"north\"}} {overdue}")), "{text}");
    assert!(!text.contains("DEMO-"), "no patient reference in the metrics");
}

async fn metrics_on_the_main_port_need_the_metrics_token() {
    let office = Office::new();
    let mut state = office.state.clone();
    let token = "a metrics token of some length";
    state.options = Arc::new(server::config::Options {
        metrics_token: Some(server::Secret::from(token.to_owned())),
        ..Default::default()
    });
    let app = server::app(state);
    let get = |authorization: Option<String>| {
        let mut request = Request::builder().uri("/metrics");
        if let Some(value) = authorization {
            request = request.header(header::AUTHORIZATION, value);
        }
        app.clone().oneshot(request.body(Body::empty()).expect("a request"))
    };
    assert_eq!(get(None).await.expect("a response").status(), StatusCode::UNAUTHORIZED);
    let wrong = get(Some("Bearer not the token".into())).await.expect("a response");
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
    let right = get(Some(format!("Bearer {token}"))).await.expect("a response");
    assert_eq!(right.status(), StatusCode::OK);
    let text = axum::body::to_bytes(right.into_body(), usize::MAX).await.expect("the body");
    assert!(String::from_utf8_lossy(&text).contains("tether_open_actions"));
}

async fn the_demo_seeds_once_and_keeps_passwords_when_run_again() {
    let test_db = common::TestDb::new();
    let db = test_db.open();
    let start: Timestamp = DEMO_START.parse().expect("a time");
    let seed = || db.call_blocking(|conn| demo::seed(conn, start)).expect("seed");
    let first = seed().new_accounts().expect("seeded");
    let roles: std::collections::BTreeSet<&str> = first.iter().map(|a| a.role.as_str()).collect();
    assert_eq!(roles.into_iter().collect::<Vec<_>>(), ["admin", "practitioner", "safeguarding_lead", "team_manager"]);
    let rows = |db: &server::Db, sql: &str| {
        let sql = sql.to_owned();
        db.call_blocking(move |conn| conn.inspect(&sql)).expect("a query")
    };
    let count = |db: &server::Db| common::number(&rows(db, "SELECT COUNT(*) FROM episodes"));
    let hashes = |db: &server::Db| rows(db, "SELECT password_hash FROM users ORDER BY username");
    let (episodes, before) = (count(&db), hashes(&db));
    assert!(matches!(seed(), demo::Seeded::Before));
    assert_eq!(count(&db), episodes, "seeded once");
    assert_eq!(hashes(&db), before, "the passwords are kept");
    let hash = rows(&db, &format!("SELECT password_hash FROM users WHERE username = '{}'", first[0].username))
        .first()
        .and_then(|row| row[0].clone())
        .expect("a hash");
    assert!(
        server::auth::password::verify(first[0].password.as_bytes(), &hash).is_ok_and(|ok| ok),
        "the password printed the first time still works"
    );
    // Every pathway is there.
    let pathways = rows(&db, "SELECT DISTINCT pathway FROM summaries");
    assert_eq!(pathways.len(), 5, "{pathways:?}");

    // A database with teams of its own is never seeded.
    let other_db = common::TestDb::new();
    let other = other_db.open();
    other
        .call_blocking(|conn| {
            let mut tx = conn.transaction()?;
            server::accounts::add_team(&mut *tx, &"mine".parse().expect("id"), "Mine", start).expect("team");
            tx.commit()
        })
        .expect("a team");
    assert!(matches!(other.call_blocking(|conn| demo::seed(conn, start)).expect("no error"), demo::Seeded::NotTheDemo));
    assert_eq!(count(&other), 0);
}

async fn managers_read_their_teams_audit_log_a_page_at_a_time_oldest_first() {
    let office = Office::new();
    let maya = office.login("maya").await;
    let ana = office.login("ana").await;
    let tom = office.login("tom").await;
    let ada = office.login("ada").await;
    let north = office.id_of(&maya, "DEMO-1002").await;
    let south = office.id_of(&tom, "DEMO-2001").await;
    for _ in 0..10 {
        office.get(&format!("/v1/episodes/{north}"), &ana).await;
        office.get(&format!("/v1/episodes/{south}"), &tom).await;
    }

    // Every page, in turn, by `next_after`: north's entries only, each once, in order.
    let mut seen: Vec<i64> = Vec::new();
    let mut after = 0;
    loop {
        let (status, page) = office.get(&format!("/v1/audit?after={after}&limit=7"), &maya).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        assert_eq!(page["episode"], Value::Null);
        let entries = page["entries"].as_array().expect("entries");
        assert!(entries.len() <= 7);
        for entry in entries {
            assert_ne!(entry["episode"], json!(south), "another team's episode: {entry}");
            assert!(entry["episode"].is_string(), "a manager sees entries of episodes: {entry}");
            seen.push(entry["n"].as_i64().expect("n"));
        }
        match page["next_after"].as_i64() {
            Some(next) => after = next,
            None => break,
        }
    }
    assert!(seen.windows(2).all(|w| w[0] < w[1]), "oldest first, each once: {seen:?}");
    assert!(seen.len() > 14, "more than two pages: {}", seen.len());
    let (_, narrowed) = office.get(&format!("/v1/audit?episode={north}"), &maya).await;
    assert_eq!(narrowed["episode"], json!(north));
    let reads_by_ana =
        narrowed["entries"].as_array().expect("entries").iter().filter(|e| e["username"] == "ana").count();
    assert!(reads_by_ana >= 3, "{narrowed}");

    // An admin also sees the entries of no episode (her own reads of the log, here).
    let (_, page) = office.get("/v1/audit?limit=1000", &ada).await;
    let unscoped = page["entries"].as_array().expect("entries").iter().filter(|e| e["episode"].is_null()).count();
    assert!(unscoped >= 1, "{page}");
    // Reading the log is in it: maya's reads, by the API.
    let (_, page) = office.get("/v1/audit?limit=1000", &ada).await;
    assert!(
        page["entries"]
            .as_array()
            .expect("entries")
            .iter()
            .any(|e| e["action"] == "read_audit" && e["username"] == "maya"),
        "{page}"
    );

    // Bad pages are refused, naming what was wrong; a practitioner is refused first.
    for (query, named) in [
        ("limit=0", "limit"),
        ("limit=1001", "limit"),
        ("limit=ten", "limit"),
        ("after=-1", "after"),
        ("episode=not-an-id", "episode"),
        ("colour=red", "episode"),
    ] {
        let (status, body) = office.get(&format!("/v1/audit?{query}"), &maya).await;
        assert_eq!((status, code(&body)), (StatusCode::BAD_REQUEST, "invalid_query"), "{query}");
        assert!(message(&body).contains(named), "{query}: {body}");
    }
    let (status, body) = office.get("/v1/audit?limit=0", &ana).await;
    assert_eq!((status, code(&body)), (StatusCode::FORBIDDEN, "forbidden"));
}

common::backends!(
    the_caseload_lists_only_the_callers_teams_with_counts_that_match_each_timeline,
    every_route_needs_a_token,
    another_teams_episode_answers_exactly_like_one_that_does_not_exist,
    one_episode_shows_its_conflicts_and_the_timeline_every_record_with_its_provenance,
    recording_from_the_office_is_the_servers_own_change_and_files_a_record,
    bad_records_are_refused_naming_the_field_and_nothing_is_stored,
    setting_a_fact_resolves_a_conflict_and_bad_facts_are_refused,
    the_plan_is_edited_from_the_office,
    reconcile_lists_conflicts_duplicates_and_unfiled_records_of_the_callers_teams,
    the_audit_log_holds_every_read_and_write_for_managers_only,
    overdue_counts_follow_the_clock_without_any_write,
    the_background_task_re_evaluates_on_its_schedule,
    metrics_count_requests_and_show_open_and_overdue_actions_per_team,
    the_demo_seeds_once_and_keeps_passwords_when_run_again,
    metrics_on_the_main_port_need_the_metrics_token,
    managers_read_their_teams_audit_log_a_page_at_a_time_oldest_first,
);
