//! An episode as FHIR R4 (4.0.1), shaped to UK Core: pure functions from an episode (its
//! records carry their receipts) and its evaluation to a `serde_json::Value`.
//!
//! - [`export`]: the whole episode as a `collection` Bundle, for
//!   `GET /v1/episodes/{id}/fhir`.
//! - [`transaction`]: chosen records as a `transaction` Bundle of conditional creates, the
//!   shape in which they are filed to an EPR: a retry never files anything twice.
//! - `codes`: the national and HL7 codes used, and the action-state mapping.
//! - `nhs_number`: the NHS number and its modulus 11 check.
//!
//! Every resource has a stable identifier derived from Tether's own ids (episode, record,
//! action) under the deployment's [`Settings::base`], and a `fullUrl` derived from the
//! same (a UUID from a SHA-256 of the resource type and the identifier), so the same
//! episode gives the same Bundle, entry for entry, on every call. Nothing here reads a
//! clock, a database or the network. `docs/fhir.md` is the mapping, field by field.

pub mod codes;
pub mod nhs_number;

use std::collections::{BTreeMap, HashMap, HashSet};

use episode::pathway::{Action, Evaluation, State};
use episode::{
    Appointment, Channel, Deterioration, Episode, Event, EventBody, EventId, FactField, FactValue, Letter, Method,
    Outcome, Party, ReferralTo, Safeguarding, Target, VisitOutcome,
};
use jiff::Timestamp;
use serde_json::{Map, Value, json};
use uuid::Uuid;

use codes::NationalCode;
pub use nhs_number::NhsNumber;

/// The base of the URIs a deployment mints when no trust has set its own. `.invalid`
/// (RFC 2606) can never resolve, which says plainly that nobody configured it.
pub const DEFAULT_BASE: &str = "https://tether.invalid/fhir";

/// A deployment's FHIR settings: the base of the identifier systems, code systems and
/// extensions Tether mints, and the system of the trust's local patient identifier (used
/// when `patient_ref` is not an NHS number).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settings {
    pub base: String,
    pub patient_system: String,
}

impl Default for Settings {
    fn default() -> Self {
        Self { base: DEFAULT_BASE.into(), patient_system: format!("{DEFAULT_BASE}/Id/patient-ref") }
    }
}

impl Settings {
    /// Settings from a trust's configuration: either may be left out for its default (the
    /// patient system then follows the base). Each must be an absolute URI.
    pub fn new(base: Option<&str>, patient_system: Option<&str>) -> Result<Self, String> {
        let base = base.unwrap_or(DEFAULT_BASE).trim_end_matches('/').to_owned();
        check_uri("--fhir-base", &base)?;
        let patient_system = patient_system.map_or_else(|| format!("{base}/Id/patient-ref"), str::to_owned);
        check_uri("--fhir-patient-system", &patient_system)?;
        Ok(Self { base, patient_system })
    }

    fn id_system(&self, what: &str) -> String {
        format!("{}/Id/{what}", self.base)
    }

    fn code_system(&self, what: &str) -> String {
        format!("{}/CodeSystem/{what}", self.base)
    }

    fn extension(&self, what: &str) -> String {
        format!("{}/StructureDefinition/{what}", self.base)
    }
}

/// An absolute URI with a scheme, and nothing a search parameter or a log would choke on.
fn check_uri(name: &str, uri: &str) -> Result<(), String> {
    let scheme_ok = uri.split_once(':').is_some_and(|(scheme, rest)| {
        !scheme.is_empty()
            && scheme.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
            && !rest.is_empty()
    });
    let chars_ok = uri.len() <= 512 && uri.chars().all(|c| c.is_ascii_graphic() && !matches!(c, '|' | ',' | '$'));
    if scheme_ok && chars_ok {
        Ok(())
    } else {
        Err(format!(
            "{name} must be an absolute URI (such as https://fhir.example-trust.nhs.uk/tether), at most 512 characters, without spaces, `|`, `,` or `$`"
        ))
    }
}

/// Why a transaction cannot be built for the records asked for.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TransactionError {
    #[error("record {0} is no valid record of this episode")]
    UnknownRecord(EventId),
    #[error("record {0} is a filing record: the EPR keeps its own")]
    NotFiled(EventId),
}

/// The whole episode as a `collection` Bundle at `now`: the patient, the episode of care,
/// a resource (or two) per record with its Provenance, a Task per action, a Flag per
/// current risk or safeguarding concern, and the joint and crisis plans.
pub fn export(episode: &Episode, evaluation: &Evaluation, settings: &Settings, now: Timestamp) -> Value {
    let all: HashSet<EventId> = episode.events.iter().map(|e| e.id).collect();
    let mut b = Builder::new(episode, settings, all);
    b.push(b.patient(), None);
    b.push(b.episode_of_care(), None);
    for event in &episode.events {
        for resource in b.record_resources(event) {
            b.push(resource, None);
        }
        if let Some(provenance) = b.provenance(event) {
            b.push(provenance, None);
        }
    }
    for action in &evaluation.actions {
        b.push(b.task(action), None);
    }
    for flag in b.flags() {
        b.push(flag, None);
    }
    for plan in b.care_plans() {
        b.push(plan, None);
    }
    json!({
        "resourceType": "Bundle",
        "id": uuid_for("Bundle", &format!("export/{}", episode.id)).to_string(),
        "meta": {"lastUpdated": time(now)},
        "identifier": {"system": settings.id_system("episode"), "value": episode.id.to_string()},
        "type": "collection",
        "timestamp": time(now),
        "entry": b.entries(false),
    })
}

/// The records `records` of `episode` as a `transaction` Bundle for an EPR:
///
/// - the patient, created only if no patient has its identifier (NHS number or local);
/// - the episode of care, created or brought up to date by its identifier (a conditional
///   update, so a discharge reaches the EPR);
/// - each record's resources, created only if none of that type has the record's
///   identifier, and its Provenance, created only if none names the record as its source;
/// - for an `entered_in_error`, the corrected record's resources marked `entered-in-error`
///   by their identifier (conditional updates), and the correction's Provenance.
///
/// Sent twice, it changes nothing the second time. A record whose resources are not in
/// the Bundle (a visit filed earlier, say) is referred to by its identifier.
pub fn transaction(episode: &Episode, records: &[EventId], settings: &Settings) -> Result<Value, TransactionError> {
    let mut chosen = Vec::with_capacity(records.len());
    let mut seen = HashSet::new();
    for id in records {
        let event = episode.events.iter().find(|e| e.id == *id).ok_or(TransactionError::UnknownRecord(*id))?;
        if matches!(event.body, EventBody::FiledToEpr(_)) {
            return Err(TransactionError::NotFiled(*id));
        }
        if seen.insert(*id) {
            chosen.push(event);
        }
    }
    chosen.sort_by_key(|e| (e.at, e.id));
    let present: HashSet<EventId> = chosen
        .iter()
        .flat_map(|e| match &e.body {
            // A correction's Bundle holds the corrected record's resources.
            EventBody::EnteredInError(eie) => vec![e.id, eie.record],
            _ => vec![e.id],
        })
        .collect();
    // A record corrected in this same Bundle is written once, by the correction's
    // conditional update: that creates it (already marked) if the EPR lacks it, and
    // marks it if an earlier attempt filed it before the correction was made.
    let corrected_here: HashSet<EventId> = chosen
        .iter()
        .filter_map(|e| match &e.body {
            EventBody::EnteredInError(eie) => Some(eie.record),
            _ => None,
        })
        .collect();
    let mut b = Builder::new(episode, settings, present);
    let patient = b.patient();
    let if_none = format!("identifier={}", token(&patient.identifier.0, &patient.identifier.1));
    b.push(patient, Some(post("Patient", if_none)));
    let care = b.episode_of_care();
    let url = format!("EpisodeOfCare?identifier={}", token(&care.identifier.0, &care.identifier.1));
    b.push(care, Some(put(url)));
    for event in chosen {
        if let EventBody::EnteredInError(eie) = &event.body {
            if let Some(target) = episode.events.iter().find(|e| e.id == eie.record) {
                for resource in b.record_resources(target) {
                    let url = format!(
                        "{}?identifier={}",
                        resource.kind,
                        token(&resource.identifier.0, &resource.identifier.1)
                    );
                    b.push(resource, Some(put(url)));
                }
            }
        } else if !corrected_here.contains(&event.id) {
            for resource in b.record_resources(event) {
                let if_none = format!("identifier={}", token(&resource.identifier.0, &resource.identifier.1));
                let kind = resource.kind;
                b.push(resource, Some(post(kind, if_none)));
            }
        }
        if let Some(provenance) = b.provenance(event) {
            let if_none = format!("entity:identifier={}", token(&settings.id_system("record"), &event.id.to_string()));
            b.push(provenance, Some(post("Provenance", if_none)));
        }
    }
    Ok(json!({
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": b.entries(true),
    }))
}

fn post(kind: &str, if_none_exist: String) -> Value {
    json!({"method": "POST", "url": kind, "ifNoneExist": if_none_exist})
}

fn put(url: String) -> Value {
    json!({"method": "PUT", "url": url})
}

/// A token search value, `system|value`, escaped as FHIR search requires (`\`, `,`, `$`
/// and `|` inside a value take a backslash) and percent-encoded for a URL's query.
pub fn token(system: &str, value: &str) -> String {
    format!("{}|{}", percent(&escape(system)), percent(&escape(value)))
}

fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '\\' | ',' | '$' | '|') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

fn percent(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~' | b':' | b'/' | b'@') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// A resource on its way into a Bundle: its type, its identifier (system, value), and
/// its JSON.
#[derive(Debug)]
struct Resource {
    kind: &'static str,
    identifier: (String, String),
    body: Value,
}

/// Builds one Bundle's entries for one episode.
struct Builder<'a> {
    episode: &'a Episode,
    settings: &'a Settings,
    /// The records whose resources are in this Bundle (others are referred to by
    /// identifier).
    present: HashSet<EventId>,
    /// Each record entered in error, with the correction.
    in_error: HashMap<EventId, &'a Event>,
    entries: Vec<(String, Value, Option<Value>)>,
}

impl<'a> Builder<'a> {
    fn new(episode: &'a Episode, settings: &'a Settings, present: HashSet<EventId>) -> Self {
        let in_error = episode
            .events
            .iter()
            .filter_map(|e| match &e.body {
                EventBody::EnteredInError(eie) => Some((eie.record, e)),
                _ => None,
            })
            .collect();
        Self { episode, settings, present, in_error, entries: Vec::new() }
    }

    fn push(&mut self, resource: Resource, request: Option<Value>) {
        let url = full_url(resource.kind, &resource.identifier.1);
        let mut body = resource.body;
        body["resourceType"] = json!(resource.kind);
        // Provenance has no identifier element in R4: its source record is its `entity`.
        if resource.kind != "Provenance" {
            body["identifier"] = json!([{"system": resource.identifier.0, "value": resource.identifier.1}]);
        }
        if let Some(profile) = codes::profile(resource.kind) {
            body["meta"] = json!({"profile": [profile]});
        }
        self.entries.push((url, tidy(body), request));
    }

    fn entries(self, with_requests: bool) -> Vec<Value> {
        self.entries
            .into_iter()
            .map(|(url, resource, request)| {
                let mut entry = json!({"fullUrl": url, "resource": resource});
                if with_requests && let Some(request) = request {
                    entry["request"] = request;
                }
                entry
            })
            .collect()
    }

    // References.

    fn patient_ref(&self) -> Value {
        let (system, value) = self.patient_identifier();
        json!({"reference": full_url("Patient", &value), "identifier": {"system": system, "value": value}})
    }

    fn episode_ref(&self) -> Value {
        json!({"reference": full_url("EpisodeOfCare", &self.episode.id.to_string())})
    }

    /// The identifier every resource made from record `id` carries.
    fn record_identifier(&self, id: EventId) -> (String, String) {
        (self.settings.id_system("record"), id.to_string())
    }

    /// A reference to the `kind` resource made from record `id`: within the Bundle if it
    /// is there, else by the identifier it was filed under.
    fn record_ref(&self, id: EventId, kind: &str) -> Value {
        if self.present.contains(&id) {
            json!({"reference": full_url(kind, &id.to_string())})
        } else {
            let (system, value) = self.record_identifier(id);
            json!({"type": kind, "identifier": {"system": system, "value": value}})
        }
    }

    /// A reference to the first resource a record (or the episode's opening) made.
    fn trigger_ref(&self, trigger: Uuid) -> Value {
        match self.episode.events.iter().find(|e| *e.id.as_uuid() == trigger) {
            Some(event) => match resource_kinds(&event.body).first() {
                Some(kind) => self.record_ref(event.id, kind),
                None => json!({"display": format!("Tether record {}", event.id)}),
            },
            None => self.episode_ref(),
        }
    }

    /// A member of staff, by their Tether username (the EPR may know them by it from the
    /// trust's single sign-on; Tether has no Practitioner resource of its own).
    fn practitioner(&self, username: &str) -> Value {
        json!({"type": "Practitioner", "identifier": {"system": self.settings.id_system("user"), "value": username},
               "display": username})
    }

    fn device(&self, device: &str) -> Value {
        json!({"type": "Device", "identifier": {"system": self.settings.id_system("device"), "value": device},
               "display": device})
    }

    fn tether_code(&self, system: &str, code: &str, display: String) -> Value {
        json!({"coding": [{"system": self.settings.code_system(system), "code": code, "display": display}],
               "text": display})
    }

    // The patient and the episode.

    fn patient_identifier(&self) -> (String, String) {
        let reference = self.episode.patient_ref.as_str();
        match NhsNumber::parse(reference) {
            Some(number) => (codes::NHS_NUMBER_SYSTEM.to_owned(), number.as_str().to_owned()),
            None => (self.settings.patient_system.clone(), reference.to_owned()),
        }
    }

    fn patient(&self) -> Resource {
        Resource { kind: "Patient", identifier: self.patient_identifier(), body: json!({}) }
    }

    fn discharge(&self) -> Option<&'a Event> {
        self.episode
            .events
            .iter()
            .filter(|e| matches!(e.body, EventBody::Discharged(_)) && !self.in_error.contains_key(&e.id))
            .max_by_key(|e| (e.at, e.id))
    }

    fn episode_of_care(&self) -> Resource {
        let ep = self.episode;
        let discharge = self.discharge();
        let pathways: Vec<Value> = ep
            .facts
            .pathway
            .values()
            .iter()
            .map(|p| {
                let code = enum_name(p);
                json!({"system": self.settings.code_system("pathway"), "code": code, "display": pathway_title(&code)})
            })
            .collect();
        let mut body = json!({
            "status": if discharge.is_some() { "finished" } else { "active" },
            "type": [{"coding": pathways, "text": "Disengagement pathway"}],
            "patient": self.patient_ref(),
            "managingOrganization": {"type": "Organization",
                                     "identifier": {"system": self.settings.id_system("team"), "value": ep.team},
                                     "display": ep.team},
            "period": {"start": time(ep.opened_at), "end": discharge.map(|d| time(d.at))},
        });
        if let Some(Some(coordinator)) = ep.facts.care_coordinator.values().last() {
            body["careManager"] = self.practitioner(coordinator);
        }
        Resource { kind: "EpisodeOfCare", identifier: (self.settings.id_system("episode"), ep.id.to_string()), body }
    }

    // Records.

    /// The resources one record makes (none for filing and correction records, which
    /// change others). A record entered in error makes them with the status
    /// `entered-in-error`.
    fn record_resources(&self, event: &Event) -> Vec<Resource> {
        let in_error = self.in_error.contains_key(&event.id);
        let identifier = self.record_identifier(event.id);
        let made = |kind: &'static str, mut body: Value| {
            if in_error {
                body["status"] = json!("entered-in-error");
            }
            // The note goes where the resource keeps one; R4's Encounter has no note, so
            // there it is the narrative, so that no word recorded in the field is lost.
            if let Some(note) = &event.note {
                match kind {
                    "Appointment" => body["comment"] = json!(note),
                    "Encounter" => body["text"] = narrative(&format!("Note: {note}")),
                    _ => body["note"] = json!([{"text": note}]),
                }
            }
            Resource { kind, identifier: identifier.clone(), body }
        };
        let at = time(event.at);
        match &event.body {
            EventBody::AppointmentMissed(missed) => {
                let code = codes::missed(missed.reason);
                let reason = enum_name(&missed.reason);
                let kind_text = match missed.appointment {
                    Appointment::Initial => "initial",
                    Appointment::FollowUp => "follow-up",
                };
                let attendance = self.attendance(code, Some(&reason));
                vec![
                    made(
                        "Appointment",
                        self.appointment(
                            "noshow",
                            "accepted",
                            &attendance,
                            missed.appointment,
                            &at,
                            &format!("Missed {kind_text} appointment: {}", words(&reason)),
                        ),
                    ),
                    made("Encounter", self.encounter(event, "cancelled", ("AMB", "ambulatory"), &attendance, true)),
                ]
            }
            EventBody::AppointmentAttended(_) => {
                let attendance = self.attendance(codes::ATTENDED, None);
                vec![
                    made(
                        "Appointment",
                        json!({
                            "status": "fulfilled",
                            "extension": [attendance],
                            "description": "Appointment attended",
                            "start": at, "end": at,
                            "participant": [{"actor": self.patient_ref(), "status": "accepted"}],
                            "supportingInformation": [self.episode_ref()],
                        }),
                    ),
                    made("Encounter", self.encounter(event, "finished", ("AMB", "ambulatory"), &attendance, true)),
                ]
            }
            EventBody::AppointmentBooked(booked) => {
                let start = time(booked.r#for);
                vec![made(
                    "Appointment",
                    json!({
                        "status": "booked",
                        "description": "Appointment offered and booked",
                        // The length of an appointment is not recorded: it ends as it starts.
                        "start": start, "end": start,
                        "created": at.get(..10),
                        "participant": [{"actor": self.patient_ref(), "status": "needs-action"}],
                        "supportingInformation": [self.episode_ref()],
                    }),
                )]
            }
            EventBody::ContactAttempt(attempt) => {
                let done = matches!(
                    attempt.outcome,
                    Outcome::ContactMade | Outcome::MessageLeft | Outcome::Sent | Outcome::Declined
                );
                let (code, display) = codes::medium(attempt.method);
                let mut payload = vec![json!({"contentString": format!(
                    "{} to the {}: {}",
                    method_text(attempt.method),
                    words(&enum_name(&attempt.target)),
                    words(&enum_name(&attempt.outcome))
                )})];
                if let Some(letter) = attempt.letter {
                    payload.push(json!({"contentString": letter_text(letter)}));
                }
                if attempt.crisis_plan == Some(true) {
                    payload.push(json!({"contentString": "The crisis plan was sent with it."}));
                }
                if let Some(deterioration) = attempt.deterioration {
                    payload.push(json!({"contentString": match deterioration {
                        Deterioration::None => "No deterioration seen.",
                        Deterioration::Suspected => "Deterioration suspected.",
                        Deterioration::Confirmed => "Deterioration confirmed.",
                    }}));
                }
                if attempt.wishes_discharge == Some(true) {
                    payload.push(json!({"contentString": "The patient wishes to be discharged."}));
                }
                let mut body = json!({
                    "status": if done { "completed" } else { "not-done" },
                    "category": [self.tether_code("record-kind", "contact_attempt", "Contact attempt".into())],
                    "medium": [{"coding": [{"system": codes::PARTICIPATION_MODE, "code": code, "display": display}]}],
                    "subject": self.patient_ref(),
                    "about": [self.episode_ref()],
                    "sent": at,
                    "recipient": [self.target(attempt.target)],
                    "sender": self.practitioner(&event.by),
                    "payload": payload,
                });
                if !done {
                    let outcome = enum_name(&attempt.outcome);
                    body["statusReason"] = self.tether_code("contact-outcome", &outcome, capitalise(&words(&outcome)));
                }
                vec![made("Communication", body)]
            }
            EventBody::HomeVisit(visit) => {
                let mut body = self.encounter(
                    event,
                    if visit.outcome == VisitOutcome::Seen { "finished" } else { "cancelled" },
                    ("HH", "home health"),
                    &Value::Null,
                    false,
                );
                body["type"] = json!([{"text": if visit.announced { "Announced home visit" } else { "Unannounced home visit (cold call)" }}]);
                body["reasonCode"] = json!([{"text": format!("Outcome: {}", words(&enum_name(&visit.outcome)))}]);
                if let Some(location) = visit.location {
                    body["contained"] = json!([{
                        "resourceType": "Location",
                        "id": "visit-location",
                        "description": format!("Where the device was when the visit was recorded (within {:.0} m)", location.accuracy),
                        "position": {"latitude": location.lat, "longitude": location.lon},
                    }]);
                    body["location"] = json!([{"location": {"reference": "#visit-location"}}]);
                }
                vec![made("Encounter", body)]
            }
            EventBody::CallingCardLeft(card) => vec![made(
                "Communication",
                json!({
                    "status": "completed",
                    "category": [self.tether_code("record-kind", "calling_card_left", "Calling card left".into())],
                    "medium": [{"coding": [{"system": codes::PARTICIPATION_MODE, "code": "WRITTEN", "display": "written"}],
                                "text": "calling card through the letter box"}],
                    "subject": self.patient_ref(),
                    "about": [self.episode_ref()],
                    "encounter": self.record_ref(card.visit, "Encounter"),
                    "sent": at,
                    "recipient": [self.patient_ref()],
                    "sender": self.practitioner(&event.by),
                    "payload": [{"contentString": "A calling card was left asking the patient to get in touch."}],
                }),
            )],
            EventBody::Communication(communication) => {
                let party = enum_name(&communication.party);
                vec![made(
                    "Communication",
                    json!({
                        "status": "completed",
                        "category": [self.tether_code("record-kind", "communication", "Communication with others involved".into())],
                        "medium": [channel_medium(communication.channel)],
                        "subject": self.patient_ref(),
                        "about": [self.episode_ref()],
                        "sent": at,
                        "recipient": [party_ref(communication.party, &party)],
                        "sender": self.practitioner(&event.by),
                        "payload": [{"contentString": format!("Told the {} ({})", words(&party), words(&enum_name(&communication.channel)))}],
                    }),
                )]
            }
            EventBody::ReferralMade(referral) => {
                let to = enum_name(&referral.to);
                let mut body = json!({
                    "status": "active",
                    "intent": "order",
                    "code": self.tether_code("referral", &to, format!("Referral to {}", referral_text(referral.to))),
                    "subject": self.patient_ref(),
                    "supportingInfo": [self.episode_ref()],
                    "authoredOn": at,
                    "requester": self.practitioner(&event.by),
                    "performerType": {"text": referral_text(referral.to)},
                });
                let mut reasons = Vec::new();
                if let Some(reason) = &referral.reason {
                    reasons.push(json!({"text": words(reason)}));
                }
                if referral.transfer {
                    reasons.push(json!({"text": "A full transfer of care"}));
                }
                if !reasons.is_empty() {
                    body["reasonCode"] = json!(reasons);
                }
                vec![made("ServiceRequest", body)]
            }
            EventBody::Decision(decision) => {
                let topic = enum_name(&decision.topic);
                vec![made(
                    "ClinicalImpression",
                    self.impression(
                        event,
                        "decision",
                        format!("Decision: {}", words(&topic)),
                        format!(
                            "{}. Rationale: {}",
                            capitalise(&words(&enum_name(&decision.outcome))),
                            decision.rationale.as_str()
                        ),
                    ),
                )]
            }
            EventBody::MdtMeeting(meeting) => {
                let mut summary = format!(
                    "Outcome: {}. Present: {}.",
                    words(&enum_name(&meeting.outcome)),
                    meeting.attendees.iter().map(|a| words(a)).collect::<Vec<_>>().join(", ")
                );
                if let Some(plan) = &meeting.plan {
                    summary.push_str(&format!(" Plan: {plan}"));
                }
                vec![made(
                    "ClinicalImpression",
                    self.impression(event, "mdt_meeting", "Team (MDT) meeting".into(), summary),
                )]
            }
            EventBody::Reengaged(_) => vec![made(
                "ClinicalImpression",
                self.impression(event, "reengaged", "Re-engaged".into(), "The patient is back in contact.".into()),
            )],
            EventBody::AssessmentCompleted(_) => vec![made(
                "ClinicalImpression",
                self.impression(
                    event,
                    "assessment_completed",
                    "Full assessment of needs and risk".into(),
                    "A full assessment of needs and risk was completed.".into(),
                ),
            )],
            EventBody::Discharged(discharged) => vec![made(
                "ClinicalImpression",
                self.impression(
                    event,
                    "discharged",
                    "Discharged".into(),
                    if discharged.crisis_plan_sent {
                        "Discharged; the crisis plan was sent.".into()
                    } else {
                        "Discharged; no crisis plan was sent.".into()
                    },
                ),
            )],
            EventBody::FactChanged(change) => vec![made(
                "ClinicalImpression",
                self.impression(
                    event,
                    "fact_changed",
                    format!("{} recorded", capitalise(&words(change.field.as_str()))),
                    format!("{} set to {}", capitalise(&words(change.field.as_str())), fact_text(&change.value)),
                ),
            )],
            EventBody::FiledToEpr(_) | EventBody::EnteredInError(_) => Vec::new(),
        }
    }

    fn attendance(&self, code: NationalCode, reason: Option<&str>) -> Value {
        let mut codings = vec![
            json!({"system": codes::ATTENDED_OR_DID_NOT_ATTEND_SYSTEM, "code": code.code, "display": code.display}),
            json!({"system": codes::ATTENDANCE_STATUS_SYSTEM, "code": code.code, "display": code.display}),
        ];
        if let Some(reason) = reason {
            codings.push(json!({"system": self.settings.code_system("miss-reason"), "code": reason,
                                "display": capitalise(&words(reason))}));
        }
        json!({"url": self.settings.extension("attendance-status"),
               "valueCodeableConcept": {"coding": codings, "text": code.display}})
    }

    fn appointment(
        &self,
        status: &str,
        participant: &str,
        attendance: &Value,
        kind: Appointment,
        at: &str,
        description: &str,
    ) -> Value {
        let appointment_type = match kind {
            Appointment::FollowUp => {
                json!({"coding": [{"system": codes::APPOINTMENT_TYPE, "code": "FOLLOWUP", "display": "A follow up visit from a previous appointment"}],
                       "text": "Follow-up appointment"})
            }
            Appointment::Initial => json!({"text": "Initial appointment"}),
        };
        json!({
            "status": status,
            "extension": [attendance],
            "appointmentType": appointment_type,
            "description": description,
            // Recorded when it was missed, which is when it was due; its length is not
            // recorded, so it ends as it starts.
            "start": at, "end": at,
            "participant": [{"actor": self.patient_ref(), "status": participant}],
            "supportingInformation": [self.episode_ref()],
        })
    }

    fn encounter(
        &self,
        event: &Event,
        status: &str,
        class: (&str, &str),
        attendance: &Value,
        appointment: bool,
    ) -> Value {
        let mut body = json!({
            "status": status,
            "class": {"system": codes::ACT_CODE, "code": class.0, "display": class.1},
            "subject": self.patient_ref(),
            "episodeOfCare": [self.episode_ref()],
            "participant": [{"individual": self.practitioner(&event.by)}],
            "period": {"start": time(event.at)},
        });
        if !attendance.is_null() {
            body["extension"] = json!([attendance]);
        }
        if appointment {
            body["appointment"] = json!([self.record_ref(event.id, "Appointment")]);
        }
        body
    }

    fn impression(&self, event: &Event, kind: &str, description: String, summary: String) -> Value {
        json!({
            "status": "completed",
            "code": self.tether_code("record-kind", kind, capitalise(&words(kind))),
            "description": description,
            "subject": self.patient_ref(),
            "effectiveDateTime": time(event.at),
            "date": time(event.at),
            "assessor": self.practitioner(&event.by),
            "summary": summary,
            "supportingInfo": [self.episode_ref()],
        })
    }

    fn target(&self, target: Target) -> Value {
        match target {
            Target::Patient => self.patient_ref(),
            Target::OtherProvider => json!({"type": "Organization", "display": "another provider involved"}),
            other => json!({"type": "RelatedPerson", "display": words(&enum_name(&other))}),
        }
    }

    /// Who recorded a record, on which device, and when the server received it.
    fn provenance(&self, event: &Event) -> Option<Resource> {
        let (targets, activity, reason) = match &event.body {
            EventBody::FiledToEpr(_) => return None,
            EventBody::EnteredInError(eie) => {
                let target = self.episode.events.iter().find(|e| e.id == eie.record)?;
                let refs: Vec<Value> =
                    resource_kinds(&target.body).iter().map(|kind| self.record_ref(target.id, kind)).collect();
                (refs, ("NULLIFY", "nullify"), Some(eie.reason.clone()))
            }
            body => (
                resource_kinds(body).iter().map(|kind| self.record_ref(event.id, kind)).collect(),
                ("CREATE", "create"),
                None,
            ),
        };
        if targets.is_empty() {
            return None;
        }
        let (system, value) = self.record_identifier(event.id);
        let mut body = json!({
            "target": targets,
            "occurredDateTime": time(event.at),
            // When the server received the record; a record made at the server was
            // received as it was made.
            "recorded": time(event.received_at.unwrap_or(event.at)),
            "activity": {"coding": [{"system": codes::DATA_OPERATION, "code": activity.0, "display": activity.1}]},
            "agent": [
                {"type": {"coding": [{"system": codes::PROVENANCE_PARTICIPANT, "code": "author", "display": "Author"}]},
                 "who": self.practitioner(&event.by)},
                {"type": {"text": "the device the record was made on"}, "who": self.device(&event.device),
                 "onBehalfOf": self.practitioner(&event.by)},
            ],
            "entity": [{"role": "source",
                        "what": {"identifier": {"system": system, "value": value},
                                 "display": format!("Tether record ({})", words(event.body.kind()))}}],
        });
        if let Some(reason) = reason {
            body["reason"] = json!([{"text": reason}]);
        }
        Some(Resource {
            kind: "Provenance",
            identifier: (self.settings.id_system("provenance"), event.id.to_string()),
            body,
        })
    }

    // What is derived from the records: tasks, flags and plans.

    fn task(&self, action: &Action) -> Resource {
        let owner = action.owner.to_string();
        let mut body = json!({
            "groupIdentifier": {"system": self.settings.id_system("episode"), "value": self.episode.id.to_string()},
            "status": codes::task_status(action.state),
            "businessStatus": {"text": match action.state {
                State::Done if action.late => "done late".to_owned(),
                state => enum_name(&state),
            }},
            "intent": "order",
            "priority": codes::task_priority(action.priority),
            "code": self.tether_code("action", action.code.as_str(), action.title.to_string()),
            "description": action.title,
            "for": self.patient_ref(),
            "authoredOn": time(self.episode.events.iter().find(|e| *e.id.as_uuid() == action.trigger).map_or(self.episode.opened_at, |e| e.at)),
            "restriction": {"period": {"start": time(action.active_from), "end": time(action.due)}},
            "performerType": [self.tether_code("role", &owner, capitalise(&words(&owner)))],
            "owner": {"type": "PractitionerRole",
                      "identifier": {"system": self.settings.id_system("team-role"),
                                     "value": format!("{}/{owner}", self.episode.team)},
                      "display": format!("{} ({})", capitalise(&words(&owner)), self.episode.team)},
            "reasonCode": {"text": format!("Disengagement policy, section {}", action.cites)},
            "reasonReference": self.trigger_ref(action.trigger),
        });
        if action.code == episode::pathway::Code::FileToEpr {
            body["focus"] = self.trigger_ref(action.trigger);
        }
        if let Some(by) = action.resolved_by {
            body["output"] = json!([{"type": {"text": "done by"}, "valueReference": self.trigger_ref(by.into())}]);
            if let Some(done) = self.episode.events.iter().find(|e| e.id == by) {
                body["executionPeriod"] = json!({"start": time(action.active_from), "end": time(done.at)});
            }
        }
        Resource { kind: "Task", identifier: (self.settings.id_system("action"), action.id.to_string()), body }
    }

    /// A Flag for each risk or safeguarding concern the facts hold now (the safer side of
    /// a conflict, as the rules read it).
    fn flags(&self) -> Vec<Resource> {
        let facts = &self.episode.facts;
        let safeguarding = facts.safeguarding.values();
        let mut flags: Vec<(&str, &str, &str, FactField)> = Vec::new();
        if *facts.risk.safest() == episode::Risk::High {
            flags.push(("high_risk", "clinical", "High risk (disengagement policy)", FactField::Risk));
        }
        if *facts.immediate_risk.safest() {
            flags.push((
                "immediate_risk",
                "safety",
                "Real and immediate risk to life, or of significant harm to others",
                FactField::ImmediateRisk,
            ));
        }
        if *facts.referrer_child_concern.safest() {
            flags.push((
                "referrer_child_concern",
                "safety",
                "The referrer is concerned about the impact on children",
                FactField::ReferrerChildConcern,
            ));
        }
        if safeguarding.iter().any(|s| s.includes_adult()) {
            flags.push(("safeguarding_adult", "safety", "Safeguarding concern: adult", FactField::Safeguarding));
        }
        if safeguarding.iter().any(|s| s.includes_child()) {
            flags.push(("safeguarding_child", "safety", "Safeguarding concern: child", FactField::Safeguarding));
        }
        flags
            .into_iter()
            .map(|(code, category, display, field)| {
                let since = self.set_by(field);
                let mut body = json!({
                    "status": "active",
                    "category": [{"coding": [{"system": codes::FLAG_CATEGORY, "code": category,
                                              "display": capitalise(category)}]}],
                    "code": self.tether_code("flag", code, display.to_owned()),
                    "subject": self.patient_ref(),
                    "period": {"start": time(since.map_or(self.episode.opened_at, |e| e.at))},
                });
                if let Some(event) = since {
                    body["author"] = self.practitioner(&event.by);
                }
                Resource {
                    kind: "Flag",
                    identifier: (self.settings.id_system("flag"), format!("{}/{code}", self.episode.id)),
                    body,
                }
            })
            .collect()
    }

    /// The latest record that set `field` to a concerning value, if a record did (else
    /// the episode was opened with it).
    fn set_by(&self, field: FactField) -> Option<&'a Event> {
        self.episode
            .events
            .iter()
            .filter(|e| !self.in_error.contains_key(&e.id))
            .filter(|e| match &e.body {
                EventBody::FactChanged(change) if change.field == field => match &change.value {
                    FactValue::Risk(risk) => *risk == episode::Risk::High,
                    FactValue::Flag(on) => *on,
                    FactValue::Safeguarding(s) => *s != Safeguarding::None,
                    _ => true,
                },
                _ => false,
            })
            .max_by_key(|e| (e.at, e.id))
    }

    /// The joint plan of action (5.1, 5.6), if written, and the crisis plan, if one was
    /// sent (Tether records that it was sent, not what it says).
    fn care_plans(&self) -> Vec<Resource> {
        let ep = self.episode;
        let status = if self.discharge().is_some() { "completed" } else { "active" };
        let mut plans = Vec::new();
        if !ep.plan.trim().is_empty() {
            plans.push(Resource {
                kind: "CarePlan",
                identifier: (self.settings.id_system("plan"), format!("{}/joint", ep.id)),
                body: json!({
                    "status": status,
                    "intent": "plan",
                    "category": [self.tether_code("plan", "joint", "Joint plan of action".into())],
                    "title": "Joint plan of action",
                    "description": ep.plan,
                    "subject": self.patient_ref(),
                    "period": {"start": time(ep.opened_at)},
                    "supportingInfo": [self.episode_ref()],
                }),
            });
        }
        let sent: Vec<&Event> = ep
            .events
            .iter()
            .filter(|e| !self.in_error.contains_key(&e.id))
            .filter(|e| match &e.body {
                EventBody::ContactAttempt(a) => a.crisis_plan == Some(true),
                EventBody::Discharged(d) => d.crisis_plan_sent,
                _ => false,
            })
            .collect();
        if let Some(first) = sent.iter().min_by_key(|e| (e.at, e.id)) {
            let support: Vec<Value> =
                sent.iter().filter_map(|e| resource_kinds(&e.body).first().map(|k| self.record_ref(e.id, k))).collect();
            plans.push(Resource {
                kind: "CarePlan",
                identifier: (self.settings.id_system("plan"), format!("{}/crisis", ep.id)),
                body: json!({
                    "status": status,
                    "intent": "plan",
                    "category": [self.tether_code("plan", "crisis", "Crisis plan".into())],
                    "title": "Crisis plan",
                    "description": "A crisis plan was sent to the patient. Tether records when it was sent, not what it says: the plan itself is in the EPR.",
                    "subject": self.patient_ref(),
                    "period": {"start": time(first.at)},
                    "supportingInfo": support,
                }),
            });
        }
        plans
    }
}

/// The resource types a record makes, in the order they are made; the first is the one
/// others refer to.
fn resource_kinds(body: &EventBody) -> &'static [&'static str] {
    match body {
        EventBody::AppointmentMissed(_) | EventBody::AppointmentAttended(_) => &["Appointment", "Encounter"],
        EventBody::AppointmentBooked(_) => &["Appointment"],
        EventBody::ContactAttempt(_) | EventBody::CallingCardLeft(_) | EventBody::Communication(_) => {
            &["Communication"]
        }
        EventBody::HomeVisit(_) => &["Encounter"],
        EventBody::ReferralMade(_) => &["ServiceRequest"],
        EventBody::Decision(_)
        | EventBody::MdtMeeting(_)
        | EventBody::Reengaged(_)
        | EventBody::AssessmentCompleted(_)
        | EventBody::Discharged(_)
        | EventBody::FactChanged(_) => &["ClinicalImpression"],
        EventBody::FiledToEpr(_) | EventBody::EnteredInError(_) => &[],
    }
}

/// A resource's `fullUrl`: a UUID from a SHA-256 of its type and identifier, so that the
/// same resource has the same `fullUrl` in every Bundle.
fn full_url(kind: &str, key: &str) -> String {
    format!("urn:uuid:{}", uuid_for(kind, key))
}

fn uuid_for(kind: &str, key: &str) -> Uuid {
    let digest = <sha2::Sha256 as sha2::Digest>::digest(format!("tether/fhir/{kind}/{key}").as_bytes());
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    uuid::Builder::from_custom_bytes(bytes).into_uuid()
}

/// A FHIR instant: RFC 3339 in UTC, to the second.
fn time(at: Timestamp) -> String {
    at.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// A resource's narrative (`additional`: it adds to the structured data), `text` escaped.
fn narrative(text: &str) -> Value {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => escaped.push_str("&amp;"),
            '<' => escaped.push_str("&lt;"),
            '>' => escaped.push_str("&gt;"),
            '"' => escaped.push_str("&quot;"),
            c => escaped.push(c),
        }
    }
    json!({"status": "additional", "div": format!("<div xmlns=\"http://www.w3.org/1999/xhtml\"><p>{escaped}</p></div>")})
}

/// Drops the `null`s a `json!` left for absent optional values: FHIR has no nulls.
fn tidy(value: Value) -> Value {
    match value {
        Value::Object(map) => {
            let kept: Map<String, Value> =
                map.into_iter().filter(|(_, v)| !v.is_null()).map(|(k, v)| (k, tidy(v))).collect();
            Value::Object(kept)
        }
        Value::Array(items) => Value::Array(items.into_iter().filter(|v| !v.is_null()).map(tidy).collect()),
        other => other,
    }
}

fn enum_name<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_value(value).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default()
}

fn words(name: &str) -> String {
    name.replace('_', " ")
}

fn capitalise(text: &str) -> String {
    let mut chars = text.chars();
    chars.next().map_or_else(String::new, |first| first.to_uppercase().chain(chars).collect())
}

fn pathway_title(code: &str) -> &'static str {
    match code {
        "urgent_referral" => "Urgent and emergency referral (5.1.1)",
        "routine_referral" => "Routine referral (5.1.2)",
        "in_service" => "In receipt of services (5.2, 5.3)",
        "home_treatment" => "Home treatment, high risk (Appendix A)",
        "child_not_brought" => "Child not brought (was not brought guidance)",
        _ => "Disengagement pathway",
    }
}

fn method_text(method: Method) -> &'static str {
    match method {
        Method::Phone => "Phone call",
        Method::Sms => "Text message",
        Method::Email => "Email",
        Method::Letter => "Letter",
        Method::LetterFirstClass => "First class letter",
    }
}

fn letter_text(letter: Letter) -> &'static str {
    match letter {
        Letter::RequestContact => "Letter asking the patient to get in touch.",
        Letter::DischargeWarning => {
            "Discharge warning letter: another venue and time offered; discharge after 3 weeks without contact."
        }
        Letter::WasNotBrought => "'Was not brought' letter to the parent or carer.",
        Letter::Discharge => "Discharge letter.",
    }
}

fn referral_text(to: ReferralTo) -> &'static str {
    match to {
        ReferralTo::ChildrensServices => "Children's Services",
        ReferralTo::CommunityTreatmentTeam => "the community treatment team",
        ReferralTo::AnotherService => "another service",
        ReferralTo::HomeTreatment => "home treatment",
        ReferralTo::AssertiveOutreach => "assertive outreach",
        ReferralTo::MhaAssessment => "a Mental Health Act assessment",
    }
}

fn channel_medium(channel: Channel) -> Value {
    let (code, display) = match channel {
        Channel::Phone => ("PHONE", "telephone"),
        Channel::Writing => ("WRITTEN", "written"),
        Channel::Meeting => ("FACE", "face-to-face"),
        Channel::Electronic => ("ELECTRONIC", "electronic data"),
    };
    json!({"coding": [{"system": codes::PARTICIPATION_MODE, "code": code, "display": display}]})
}

fn party_ref(party: Party, name: &str) -> Value {
    let kind = match party {
        Party::Police
        | Party::OtherAgency
        | Party::ChildrensServices
        | Party::SafeguardingChildrenTeam
        | Party::Education => "Organization",
        Party::FamilyCarer => "RelatedPerson",
        _ => "Practitioner",
    };
    json!({"type": kind, "display": words(name)})
}

fn fact_text(value: &FactValue) -> String {
    match value.to_json() {
        Value::Bool(true) => "yes".into(),
        Value::Bool(false) => "no".into(),
        Value::Null => "nobody".into(),
        Value::String(s) => words(&s),
        other => other.to_string(),
    }
}

/// Counts a Bundle's resources by type, for tests and logs (which never see the
/// resources themselves).
pub fn resource_counts(bundle: &Value) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for entry in bundle["entry"].as_array().into_iter().flatten() {
        if let Some(kind) = entry["resource"]["resourceType"].as_str() {
            *counts.entry(kind.to_owned()).or_default() += 1;
        }
    }
    counts
}
