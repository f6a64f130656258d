//! Every limit on what an episode may hold, stated once for the phone's core and the
//! server alike, so that what one side accepts the other can always read.
//!
//! | What | Limit |
//! |---|---|
//! | Any free text inside a record (`note`, `rationale`, `reason`, `epr_ref`, an MDT's `plan`, each of its `attendees`, …) | [`MAX_TEXT_BYTES`]: 8 KiB |
//! | A name: a record's `by` and `device`; an episode's `team`, `opened_by` and `patient_ref`; the `care_coordinator` fact | [`MAX_NAME_BYTES`]: 128 bytes |
//! | A record as a whole, as the JSON stored in the document | [`MAX_RECORD_BYTES`]: 16 KiB |
//! | The joint plan (within what one API request carries) | [`MAX_PLAN_BYTES`]: 32 KiB |
//! | An episode's document as stored (its last snapshot plus the changes since) | [`EPISODE_BUDGET_BYTES`]: 4 MiB |
//!
//! The budget is a quarter of the load limit ([`crate::document::MAX_DOCUMENT_BYTES`],
//! 16 MiB), so that an episode at its budget still loads everywhere with room to spare.
//! A change that would take an episode past its budget is refused
//! ([`DocumentError::Full`]); what is stored already is never refused on reading. A year
//! of daily visits with a paragraph each is under a megabyte.
//!
//! These limits bound what is *made*: a new record, an opening, a plan edit, a change to
//! a stored episode. Reading never applies them, so a record accepted before a limit
//! existed (or was lowered) still reads, and an episode over its budget still loads; it
//! only takes no more changes. A value over its limit is [`TooLong`].

use serde_json::Value;

use crate::document::Opening;
use crate::model::{Event, EventId};

/// The most bytes (UTF-8) of any one free-text value inside a record.
pub const MAX_TEXT_BYTES: usize = 8 * 1024;

/// The most bytes of a name: who, on which device, which team, which patient.
pub const MAX_NAME_BYTES: usize = 128;

/// The most bytes of a record's JSON, as the document stores it.
pub const MAX_RECORD_BYTES: usize = 16 * 1024;

/// The most bytes of the joint plan's text.
pub const MAX_PLAN_BYTES: usize = 32 * 1024;

/// The most bytes an episode's document may take as stored (its last whole save plus the
/// incremental saves since); a change that would take it past is refused.
pub const EPISODE_BUDGET_BYTES: usize = 4 * 1024 * 1024;

/// The record's fields that are names, not free text.
const NAME_FIELDS: [&str; 2] = ["by", "device"];

/// A value over its limit: which record (none: the episode itself), which field (empty:
/// the record as a whole), how long it is and how long it may be. Never the value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TooLong {
    pub record: Option<EventId>,
    pub field: String,
    pub len: usize,
    pub limit: usize,
}

impl std::fmt::Display for TooLong {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let Self { record, field, len, limit } = self;
        match (record, field.is_empty()) {
            (Some(record), true) => {
                write!(f, "record {record} takes {len} bytes, more than the {limit} a record may take")
            }
            (Some(record), false) => {
                write!(f, "record {record}: `{field}` is {len} bytes long, more than the {limit} allowed")
            }
            (None, _) => write!(f, "`{field}` is {len} bytes long, more than the {limit} allowed"),
        }
    }
}

impl std::error::Error for TooLong {}

/// Checks a new record against the limits: its names, every text inside it, and its size
/// as stored.
pub fn check_record(event: &Event) -> Result<(), TooLong> {
    let too_long =
        |field: &str, len: usize, limit: usize| TooLong { record: Some(event.id), field: field.into(), len, limit };
    // Serialising plain data (strings, enums, UUIDs, times) cannot fail.
    let json = serde_json::to_value(event).unwrap_or(Value::Null);
    if let Value::Object(fields) = &json {
        for (field, value) in fields {
            let limit = if NAME_FIELDS.contains(&field.as_str()) { MAX_NAME_BYTES } else { MAX_TEXT_BYTES };
            if let Some(len) = longest_text(value)
                && len > limit
            {
                return Err(too_long(field, len, limit));
            }
        }
    }
    let stored = serde_json::to_string(event).map_or(0, |s| s.len());
    if stored > MAX_RECORD_BYTES {
        return Err(too_long("", stored, MAX_RECORD_BYTES));
    }
    Ok(())
}

/// Checks a new episode's opening: its names and its plan.
pub fn check_opening(opening: &Opening) -> Result<(), TooLong> {
    for (field, text) in [
        ("patient_ref", opening.patient_ref.as_str()),
        ("team", opening.team.as_str()),
        ("opened_by", opening.opened_by.as_str()),
    ] {
        check_name(field, text)?;
    }
    check_plan(&opening.plan)
}

/// Checks a name (an episode-level field) against [`MAX_NAME_BYTES`].
pub fn check_name(field: &str, text: &str) -> Result<(), TooLong> {
    if text.len() > MAX_NAME_BYTES {
        return Err(TooLong { record: None, field: field.into(), len: text.len(), limit: MAX_NAME_BYTES });
    }
    Ok(())
}

/// Checks the joint plan's text against [`MAX_PLAN_BYTES`].
pub fn check_plan(text: &str) -> Result<(), TooLong> {
    if text.len() > MAX_PLAN_BYTES {
        return Err(TooLong { record: None, field: "plan".into(), len: text.len(), limit: MAX_PLAN_BYTES });
    }
    Ok(())
}

/// The length of the longest string anywhere in `value`.
fn longest_text(value: &Value) -> Option<usize> {
    match value {
        Value::String(s) => Some(s.len()),
        Value::Array(items) => items.iter().filter_map(longest_text).max(),
        Value::Object(fields) => fields.values().filter_map(longest_text).max(),
        _ => None,
    }
}
