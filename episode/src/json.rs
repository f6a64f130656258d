//! Episode JSON in and out, as `shared/interfaces.md` shows it, with validation.
//!
//! Reading is strict about shape and values: an unknown kind, field or value, a missing
//! field, a time without an offset, a decision without a rationale or an
//! `entered_in_error` naming no known record is an error that names the event id and the
//! field. No message ever repeats a patient identifier or a free-text value.

use std::collections::{HashMap, HashSet};

use jiff::Timestamp;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use crate::model::*;

/// What was wrong with an episode or one of its records.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValidationError {
    /// The text is not JSON, or not a JSON object.
    #[error("not a valid episode document: {0}")]
    Syntax(String),
    /// A fact or another episode-level field is missing or wrong.
    #[error("episode field `{field}`: {message}")]
    Episode { field: String, message: String },
    /// A record is wrong; `event` is its id, or its position when it has no usable id.
    #[error("event {event}: field `{field}`: {message}")]
    Event { event: String, field: String, message: String },
}

impl ValidationError {
    fn episode(field: &str, message: impl Into<String>) -> Self {
        Self::Episode { field: field.into(), message: message.into() }
    }

    fn event(event: &str, field: &str, message: impl Into<String>) -> Self {
        Self::Event { event: event.into(), field: field.into(), message: message.into() }
    }
}

/// How to treat a record that fails validation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strictness {
    /// Refuse the whole episode (a checking tool, an API that takes new input).
    Strict,
    /// Keep the episode and set the record aside in [`Episode::invalid_records`]: one bad
    /// record in a stored document must never blank a worklist.
    Lenient,
}

/// Keys of the episode object that are output only: accepted and ignored on input.
const OUTPUT_ONLY: [&str; 1] = ["conflicts"];

impl Episode {
    /// Reads episode JSON, refusing any invalid record.
    pub fn from_json(text: &str) -> Result<Self, ValidationError> {
        let value = parse_value(text.as_bytes()).map_err(ValidationError::Syntax)?;
        Self::from_value(&value, Strictness::Strict)
    }

    /// Reads an episode from a JSON value.
    pub fn from_value(value: &Value, strictness: Strictness) -> Result<Self, ValidationError> {
        let Some(obj) = value.as_object() else {
            return Err(ValidationError::Syntax("an episode is a JSON object".into()));
        };
        for key in obj.keys() {
            let known =
                matches!(key.as_str(), "id" | "patient_ref" | "team" | "opened_at" | "opened_by" | "plan" | "events")
                    || FactField::from_name(key).is_some()
                    || OUTPUT_ONLY.contains(&key.as_str());
            if !known {
                return Err(ValidationError::episode(key, "unknown field"));
            }
        }

        let id = uuid_field(obj, "id").map_err(|m| ValidationError::episode("id", m))?;
        let patient_ref = match obj.get("patient_ref") {
            Some(Value::String(s)) => PatientRef::new(s.clone()),
            _ => None,
        }
        .ok_or_else(|| {
            ValidationError::episode("patient_ref", "required: the patient's identifier as a non-empty string")
        })?;
        let team = text_field(obj, "team").map_err(|m| ValidationError::episode("team", m))?;
        let opened_at = opening_time(obj, strictness).map_err(|m| ValidationError::episode("opened_at", m))?;
        let opened_by = text_field(obj, "opened_by").map_err(|m| ValidationError::episode("opened_by", m))?;
        // `pathway` has no default: defaulting a missing pathway to the routine one would
        // silently give the patient the longest deadlines.
        if !obj.contains_key("pathway") {
            return Err(ValidationError::episode(
                "pathway",
                "required: one of urgent_referral, routine_referral, in_service, home_treatment, child_not_brought",
            ));
        }
        let facts = Facts {
            pathway: fact(obj, FactField::Pathway)?,
            risk: fact(obj, FactField::Risk)?,
            children: fact(obj, FactField::Children)?,
            referrer_child_concern: fact(obj, FactField::ReferrerChildConcern)?,
            immediate_risk: fact(obj, FactField::ImmediateRisk)?,
            known_disengager: fact(obj, FactField::KnownDisengager)?,
            legal_status: fact(obj, FactField::LegalStatus)?,
            safeguarding: fact(obj, FactField::Safeguarding)?,
            childrens_services_involved: fact(obj, FactField::ChildrensServicesInvolved)?,
            care_coordinator: fact(obj, FactField::CareCoordinator)?,
        };
        let plan = match obj.get("plan") {
            None | Some(Value::Null) => String::new(),
            Some(Value::String(s)) => s.clone(),
            Some(_) => return Err(ValidationError::episode("plan", "must be text")),
        };
        let raw_events = match obj.get("events") {
            None | Some(Value::Null) => &[][..],
            Some(Value::Array(events)) => events.as_slice(),
            Some(_) => return Err(ValidationError::episode("events", "must be a list of records")),
        };

        let mut events = Vec::with_capacity(raw_events.len());
        let mut invalid_records = Vec::new();
        for (index, raw) in raw_events.iter().enumerate() {
            match Event::from_value(raw, index) {
                Ok(event) => events.push(event),
                Err(error) if strictness == Strictness::Lenient => {
                    invalid_records.push(InvalidRecord { id: record_label(raw, index), error: error.to_string() })
                }
                Err(error) => return Err(error),
            }
        }
        let problems = check_references(&events);
        if let Some((_, error)) = problems.first()
            && strictness == Strictness::Strict
        {
            return Err(error.clone());
        }
        let set_aside: HashSet<usize> = problems.iter().map(|(index, _)| *index).collect();
        for (index, error) in problems {
            invalid_records.push(InvalidRecord { id: events[index].id.to_string(), error: error.to_string() });
        }
        let events = events.into_iter().enumerate().filter(|(i, _)| !set_aside.contains(i)).map(|(_, e)| e).collect();
        let episode =
            Self { id: id.into(), patient_ref, team, opened_at, opened_by, facts, plan, events, invalid_records };
        Ok(episode)
    }

    /// The episode as JSON.
    pub fn to_json(&self) -> Value {
        // Serialising plain data (strings, enums, UUIDs, times) cannot fail.
        serde_json::to_value(self).unwrap_or(Value::Null)
    }
}

impl Event {
    /// Whether this may be recorded on its own (`EpisodeDoc::record`). A `fact_changed`
    /// may not: a fact is changed by setting it (`EpisodeDoc::set_fact`), which writes the
    /// fact and its record in one change, so a bare record would claim a change the facts
    /// do not show. The one statement of the rule, for the document, the phone's core and
    /// the server's API alike.
    pub fn check_recordable(&self) -> Result<(), ValidationError> {
        if matches!(self.body, EventBody::FactChanged(_)) {
            return Err(ValidationError::event(
                &self.id.to_string(),
                "kind",
                "a fact is changed by setting it, which records the change",
            ));
        }
        Ok(())
    }

    /// A new record of `kind` with the kind's own `fields` (as in the episode JSON): the
    /// id, time, author and device are the caller's, never the fields'. Validated as any
    /// record is; an error names the new id and the field.
    pub fn new_record(
        id: EventId,
        kind: &str,
        at: Timestamp,
        by: &str,
        device: &str,
        fields: Map<String, Value>,
    ) -> Result<Self, ValidationError> {
        let mut json = fields;
        for reserved in ["id", "kind", "at", "by", "device", "received_at"] {
            if json.contains_key(reserved) {
                return Err(ValidationError::Event {
                    event: id.to_string(),
                    field: reserved.into(),
                    message: "is set by whoever records, not given".into(),
                });
            }
        }
        json.insert("id".into(), Value::String(id.to_string()));
        json.insert("kind".into(), Value::String(kind.into()));
        json.insert("at".into(), Value::String(at.to_string()));
        json.insert("by".into(), Value::String(by.into()));
        json.insert("device".into(), Value::String(device.into()));
        Self::from_value(&Value::Object(json), 0)
    }

    /// Reads one record; `index` names it in errors when its id is unusable.
    pub fn from_value(value: &Value, index: usize) -> Result<Self, ValidationError> {
        let label = record_label(value, index);
        let err = |field: &str, message: String| ValidationError::event(&label, field, message);
        let Some(obj) = value.as_object() else {
            return Err(err("", "a record is a JSON object".into()));
        };
        let id = uuid_field(obj, "id").map_err(|m| err("id", m))?;
        let kind = match obj.get("kind") {
            Some(Value::String(kind)) => kind.as_str(),
            Some(_) => return Err(err("kind", "must be a string".into())),
            None => return Err(err("kind", "required".into())),
        };
        if !EventBody::KINDS.contains(&kind) {
            return Err(err("kind", format!("unknown kind, expected one of {}", EventBody::KINDS.join(", "))));
        }
        let at = time_field(obj, "at").map_err(|m| err("at", m))?;
        let by = text_field(obj, "by").map_err(|m| err("by", m))?;
        let device = text_field(obj, "device").map_err(|m| err("device", m))?;
        let note = match obj.get("note") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(_) => return Err(err("note", "must be text or null".into())),
        };
        let received_at = match obj.get("received_at") {
            None | Some(Value::Null) => None,
            Some(_) => Some(time_field(obj, "received_at").map_err(|m| err("received_at", m))?),
        };

        let mut rest = Map::new();
        for (key, value) in obj {
            if !matches!(key.as_str(), "id" | "kind" | "at" | "by" | "device" | "note" | "received_at") {
                rest.insert(key.clone(), value.clone());
            }
        }
        let body = parse_body(kind, rest).map_err(|(field, message)| err(&field, message))?;
        Ok(Self { id: id.into(), at, by, device, body, note, received_at })
    }
}

fn parse_body(kind: &str, fields: Map<String, Value>) -> Result<EventBody, (String, String)> {
    fn body<T: DeserializeOwned>(fields: Map<String, Value>) -> Result<T, (String, String)> {
        serde_path_to_error::deserialize(Value::Object(fields)).map_err(|e| {
            let message = redact(&e.inner().to_string());
            let path = e.path().to_string();
            let field = if path == "." { backticked(&message).unwrap_or_default() } else { path };
            (field, message)
        })
    }
    let rule = |field: &str, message: &str| Err((field.to_string(), message.to_string()));
    Ok(match kind {
        "appointment_missed" => EventBody::AppointmentMissed(body(fields)?),
        "appointment_attended" => EventBody::AppointmentAttended(body(fields)?),
        "appointment_booked" => EventBody::AppointmentBooked(body(fields)?),
        "contact_attempt" => {
            let attempt: ContactAttempt = body(fields)?;
            if attempt.outcome != Outcome::ContactMade {
                if attempt.deterioration.is_some() {
                    return rule(
                        "deterioration",
                        "only a contact_attempt with outcome contact_made records deterioration",
                    );
                }
                if attempt.wishes_discharge.is_some() {
                    return rule(
                        "wishes_discharge",
                        "only a contact_attempt with outcome contact_made records wishes_discharge",
                    );
                }
            }
            if attempt.letter.is_some() && !attempt.is_letter() {
                return rule("letter", "only a letter (method letter or letter_first_class) has a letter type");
            }
            EventBody::ContactAttempt(attempt)
        }
        "home_visit" => EventBody::HomeVisit(body(fields)?),
        "calling_card_left" => EventBody::CallingCardLeft(body(fields)?),
        "communication" => EventBody::Communication(body(fields)?),
        "decision" => {
            if !fields.contains_key("rationale") {
                return rule("rationale", "a decision needs a rationale: it is required");
            }
            EventBody::Decision(body(fields)?)
        }
        "referral_made" => {
            let referral: ReferralMade = body(fields)?;
            if referral.reason.as_deref().is_some_and(|r| r.trim().is_empty()) {
                return rule("reason", "may not be empty: leave it out instead");
            }
            EventBody::ReferralMade(referral)
        }
        "mdt_meeting" => {
            let meeting: MdtMeeting = body(fields)?;
            if meeting.attendees.is_empty() || meeting.attendees.iter().any(|a| a.trim().is_empty()) {
                return rule("attendees", "must list the roles present, none empty");
            }
            EventBody::MdtMeeting(meeting)
        }
        "reengaged" => EventBody::Reengaged(body(fields)?),
        "assessment_completed" => EventBody::AssessmentCompleted(body(fields)?),
        "discharged" => EventBody::Discharged(body(fields)?),
        "fact_changed" => {
            for key in fields.keys() {
                if key != "field" && key != "value" {
                    return Err((key.clone(), "unknown field, expected `field` or `value`".into()));
                }
            }
            let field = match fields.get("field") {
                Some(Value::String(name)) => FactField::from_name(name).ok_or_else(|| {
                    let names: Vec<_> = FactField::ALL.iter().map(|f| f.as_str()).collect();
                    ("field".to_string(), format!("unknown fact, expected one of {}", names.join(", ")))
                })?,
                Some(_) => return rule("field", "must be the name of a fact"),
                None => return rule("field", "required"),
            };
            let Some(value) = fields.get("value") else {
                return rule("value", "required");
            };
            let value = FactValue::from_json(field, value).map_err(|m| ("value".to_string(), m))?;
            EventBody::FactChanged(FactChanged { field, value })
        }
        "filed_to_epr" => {
            let filed: FiledToEpr = body(fields)?;
            if filed.records.is_empty() {
                return rule("records", "must list at least one record");
            }
            if filed.epr_ref.trim().is_empty() {
                return rule("epr_ref", "required: the reference in the electronic patient record");
            }
            EventBody::FiledToEpr(filed)
        }
        "entered_in_error" => {
            let eie: EnteredInError = body(fields)?;
            if eie.reason.trim().is_empty() {
                return rule("reason", "required: say why the record is in error");
            }
            EventBody::EnteredInError(eie)
        }
        _ => return rule("kind", "unknown kind"),
    })
}

/// Checks what one record says about others: ids are unique, and an
/// `entered_in_error` names a known record that is not itself an `entered_in_error`.
/// Returns the index of each offending record with its error.
pub fn check_references(events: &[Event]) -> Vec<(usize, ValidationError)> {
    let mut problems = Vec::new();
    let mut kinds: HashMap<EventId, &'static str> = HashMap::with_capacity(events.len());
    for (index, event) in events.iter().enumerate() {
        if kinds.insert(event.id, event.body.kind()).is_some() {
            problems
                .push((index, ValidationError::event(&event.id.to_string(), "id", "another record has the same id")));
        }
    }
    for (index, event) in events.iter().enumerate() {
        if let EventBody::EnteredInError(eie) = &event.body {
            let message = match kinds.get(&eie.record) {
                None => "names no known record",
                Some(&"entered_in_error") => {
                    "names another entered_in_error: a correction cannot be undone; record the original again"
                }
                Some(_) => continue,
            };
            problems.push((index, ValidationError::event(&event.id.to_string(), "record", message)));
        }
    }
    problems
}

fn fact<T: DeserializeOwned + Ord + Default>(
    obj: &Map<String, Value>,
    field: FactField,
) -> Result<Fact<T>, ValidationError> {
    let name = field.as_str();
    let parse =
        |value: &Value| T::deserialize(value).map_err(|e| ValidationError::episode(name, redact(&e.to_string())));
    match obj.get(name) {
        None => Ok(Fact::default()),
        Some(Value::Array(values)) => {
            let values = values.iter().map(parse).collect::<Result<Vec<T>, _>>()?;
            Fact::concurrent(values)
                .ok_or_else(|| ValidationError::episode(name, "a list of concurrent values may not be empty"))
        }
        Some(value) => Ok(Fact::new(parse(value)?)),
    }
}

fn uuid_field(obj: &Map<String, Value>, name: &str) -> Result<uuid::Uuid, String> {
    match obj.get(name) {
        Some(Value::String(s)) => s.parse().map_err(|_| "is not a UUID".to_string()),
        Some(_) => Err("must be a UUID string".into()),
        None => Err("required".into()),
    }
}

fn text_field(obj: &Map<String, Value>, name: &str) -> Result<String, String> {
    match obj.get(name) {
        Some(Value::String(s)) if !s.trim().is_empty() => Ok(s.clone()),
        Some(Value::String(_)) => Err("may not be empty".into()),
        Some(_) => Err("must be a string".into()),
        None => Err("required".into()),
    }
}

fn time_field(obj: &Map<String, Value>, name: &str) -> Result<Timestamp, String> {
    match obj.get(name) {
        Some(Value::String(s)) => time::parse(s),
        Some(_) => Err("must be an RFC 3339 time string".into()),
        None => Err("required".into()),
    }
}

/// An episode's opening time: new input must fall in [`time::YEARS`]; a stored document
/// read leniently keeps what an earlier version accepted, so that it still loads.
fn opening_time(obj: &Map<String, Value>, strictness: Strictness) -> Result<Timestamp, String> {
    match (obj.get("opened_at"), strictness) {
        (Some(Value::String(s)), Strictness::Lenient) => time::parse_stored(s),
        (Some(Value::String(s)), Strictness::Strict) => time::parse(s),
        (Some(_), _) => Err("must be an RFC 3339 time string".into()),
        (None, _) => Err("required".into()),
    }
}

/// Parses JSON text, refusing an object that names a key twice.
///
/// serde_json keeps the last of two equal keys, another reader may keep the first: a
/// record reading `"by": "ana", …, "by": "maya"` could say one thing to the server and
/// another to whoever reads it next. So every record, and every JSON body the server
/// takes, is refused unless each object's keys are distinct.
pub fn parse_value(text: &[u8]) -> Result<Value, String> {
    let value = serde_json::from_slice(text).map_err(|e| e.to_string())?;
    check_unique_keys(text)?;
    Ok(value)
}

/// Refuses JSON text in which an object names a key twice (see [`parse_value`]); the
/// text is otherwise taken to be JSON already.
pub fn check_unique_keys(text: &[u8]) -> Result<(), String> {
    use serde::Deserialize as _;
    let mut de = serde_json::Deserializer::from_slice(text);
    UniqueKeys::deserialize(&mut de).map(|_| ()).map_err(|e| {
        let message = e.to_string();
        // serde_json appends the position; keep the message our visitor wrote.
        match message.rfind(" at line ") {
            Some(end) => message[..end].to_string(),
            None => message,
        }
    })
}

/// Walks a JSON value, keeping nothing but the keys of the object being read.
struct UniqueKeys;

impl<'de> serde::Deserialize<'de> for UniqueKeys {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(UniqueKeysVisitor)
    }
}

struct UniqueKeysVisitor;

impl<'de> serde::de::Visitor<'de> for UniqueKeysVisitor {
    type Value = UniqueKeys;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<UniqueKeys, E> {
        Ok(UniqueKeys)
    }

    fn visit_i64<E>(self, _: i64) -> Result<UniqueKeys, E> {
        Ok(UniqueKeys)
    }

    fn visit_u64<E>(self, _: u64) -> Result<UniqueKeys, E> {
        Ok(UniqueKeys)
    }

    fn visit_f64<E>(self, _: f64) -> Result<UniqueKeys, E> {
        Ok(UniqueKeys)
    }

    fn visit_str<E>(self, _: &str) -> Result<UniqueKeys, E> {
        Ok(UniqueKeys)
    }

    fn visit_unit<E>(self) -> Result<UniqueKeys, E> {
        Ok(UniqueKeys)
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<UniqueKeys, A::Error> {
        while seq.next_element::<UniqueKeys>()?.is_some() {}
        Ok(UniqueKeys)
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<UniqueKeys, A::Error> {
        let mut keys = HashSet::new();
        while let Some(key) = map.next_key::<String>()? {
            if keys.contains(&key) {
                return Err(serde::de::Error::custom(duplicate_key_message(&key)));
            }
            map.next_value::<UniqueKeys>()?;
            keys.insert(key);
        }
        Ok(UniqueKeys)
    }
}

/// Names a repeated key if it looks like a field name; any other key might be a value
/// someone typed (a patient's identifier), and is not repeated.
fn duplicate_key_message(key: &str) -> String {
    let field_like = !key.is_empty()
        && key.len() <= 40
        && key.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if field_like {
        format!("the key `{key}` appears twice in one object: give each key once")
    } else {
        "a key appears twice in one object: give each key once".to_string()
    }
}

/// How a record is named in errors: its id when it has a string one, else its position.
fn record_label(value: &Value, index: usize) -> String {
    match value.get("id") {
        Some(Value::String(id)) if id.parse::<uuid::Uuid>().is_ok() => id.clone(),
        _ => format!("#{index} (no valid id)"),
    }
}

/// The first name between backticks in a serde message (`missing field `x``).
fn backticked(message: &str) -> Option<String> {
    let start = message.find('`')? + 1;
    let len = message[start..].find('`')?;
    Some(message[start..start + len].to_string())
}

/// Removes input values from a serde message (`invalid type: string "…"`, `unknown
/// variant `…``), keeping what was expected, so that an error never repeats what might be
/// a patient's name or identifier.
pub(crate) fn redact(message: &str) -> String {
    let message = match message.strip_prefix("unknown variant `") {
        Some(rest) => match rest.find("`, ") {
            Some(end) => format!("unknown value, {}", &rest[end + 3..]),
            None => "unknown value".to_string(),
        },
        None => message.to_string(),
    };
    let message = message.as_str();
    let mut out = String::with_capacity(message.len());
    let mut rest = message;
    while let Some(start) = rest.find("string \"") {
        out.push_str(&rest[..start]);
        out.push_str("a string");
        let after = &rest[start + "string \"".len()..];
        // serde escapes quotes inside the value, so the next unescaped quote ends it.
        let mut end = after.len();
        let mut escaped = false;
        for (i, c) in after.char_indices() {
            match c {
                '\\' if !escaped => escaped = true,
                '"' if !escaped => {
                    end = i + 1;
                    break;
                }
                _ => escaped = false,
            }
        }
        rest = &after[end.min(after.len())..];
    }
    out.push_str(rest);
    out
}

/// Times as RFC 3339 strings: any offset in, UTC `Z` out.
pub mod time {
    use jiff::Timestamp;
    use serde::{Deserialize, Deserializer, Serializer};

    /// The years a time given as input may fall in (UTC): a mistyped year (2206, 1026)
    /// is caught where it is typed, not years later as an action never due.
    pub const YEARS: std::ops::RangeInclusive<i16> = 2000..=2100;

    /// The years a stored or computed time may fall in: wider than [`YEARS`], so that
    /// what an earlier version accepted (1900 to 2999) still reads, and a deadline
    /// computed from a record late in 2100 is written and read back. Deadline arithmetic
    /// never overflows inside it.
    pub const STORED_YEARS: std::ops::RangeInclusive<i16> = 1900..=2999;

    /// Parses an RFC 3339 time given as input, which must carry an offset and fall in
    /// [`YEARS`].
    pub fn parse(text: &str) -> Result<Timestamp, String> {
        let ts = parse_any(text)?;
        check(ts)?;
        Ok(ts)
    }

    /// Parses a stored or computed time: an offset, and a year in [`STORED_YEARS`].
    pub fn parse_stored(text: &str) -> Result<Timestamp, String> {
        let ts = parse_any(text)?;
        if !STORED_YEARS.contains(&year(ts)) {
            return Err(format!("the time is outside the years {} to {}", STORED_YEARS.start(), STORED_YEARS.end()));
        }
        Ok(ts)
    }

    /// Refuses a time outside [`YEARS`], saying so.
    pub fn check(ts: Timestamp) -> Result<(), String> {
        if !YEARS.contains(&year(ts)) {
            return Err(format!("the time is outside the years {} to {}: check its year", YEARS.start(), YEARS.end()));
        }
        Ok(())
    }

    fn year(ts: Timestamp) -> i16 {
        jiff::tz::TimeZone::UTC.to_datetime(ts).year()
    }

    fn parse_any(text: &str) -> Result<Timestamp, String> {
        text.parse().map_err(|_| {
            if text.parse::<jiff::civil::DateTime>().is_ok() {
                "the time has no UTC offset: write it as RFC 3339 with an offset, e.g. 2026-03-02T09:30:00Z or 2026-06-01T10:30:00+01:00".to_string()
            } else {
                "not an RFC 3339 time with an offset, e.g. 2026-03-02T09:30:00Z".to_string()
            }
        })
    }

    pub fn serialize<S: Serializer>(ts: &Timestamp, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(ts)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Timestamp, D::Error> {
        let text = String::deserialize(deserializer)?;
        parse(&text).map_err(serde::de::Error::custom)
    }

    /// Stored or computed times (an action's `active_from` and `due`): read with
    /// [`parse_stored`].
    pub mod stored {
        use jiff::Timestamp;
        use serde::{Deserialize, Deserializer, Serializer};

        pub fn serialize<S: Serializer>(ts: &Timestamp, serializer: S) -> Result<S::Ok, S::Error> {
            serializer.collect_str(ts)
        }

        pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Timestamp, D::Error> {
            let text = String::deserialize(deserializer)?;
            super::parse_stored(&text).map_err(serde::de::Error::custom)
        }
    }

    /// The same, for an optional time.
    pub mod option {
        use jiff::Timestamp;
        use serde::{Deserialize, Deserializer, Serializer};

        pub fn serialize<S: Serializer>(ts: &Option<Timestamp>, serializer: S) -> Result<S::Ok, S::Error> {
            match ts {
                Some(ts) => serializer.collect_str(ts),
                None => serializer.serialize_none(),
            }
        }

        pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<Timestamp>, D::Error> {
            match Option::<String>::deserialize(deserializer)? {
                Some(text) => super::parse(&text).map(Some).map_err(serde::de::Error::custom),
                None => Ok(None),
            }
        }
    }
}
