//! Episode documents: one Automerge document per episode (`shared/design.md`,
//! "Documents"), changed only through typed operations and read back as an [`Episode`].
//!
//! Layout (schema 1):
//!
//! ```text
//! ROOT  schema: 1, id, patient_ref, team, opened_at, opened_by   (set once, at opening)
//!       facts:  map of registers, one per fact: concurrent writes are conflicts, read
//!               with `get_all` and reported, never silently resolved
//!       plan:   text: concurrent edits of the joint plan merge
//!       events: map of event id -> the record's JSON: grow-only, so nothing recorded
//!               offline can be lost or overwritten by a merge
//! ```
//!
//! A record is immutable JSON: a merge can add records but never alter one. Every fact
//! change is also recorded as a `fact_changed` record, in the same change, for the
//! timeline. The pathway never sees this module: it reads the typed [`Episode`].

use automerge::transaction::{CommitOptions, Transactable};
use automerge::{ActorId, AutoCommit, ChangeHash, ObjId, ObjType, ROOT, ReadDoc, ScalarValue, Value};
use jiff::Timestamp;
use serde_json::{Map, Value as Json};

use crate::Strictness;
use crate::json::ValidationError;
use crate::limits::{self, EPISODE_BUDGET_BYTES};
use crate::model::*;

/// The document schema this build reads and writes.
pub const SCHEMA: i64 = 1;

/// The largest document this build loads from another party (a device's upload, a peer's
/// copy): far beyond any real episode (a year of daily records is well under a
/// megabyte) and four times an episode's budget ([`EPISODE_BUDGET_BYTES`]), small enough
/// that hostile bytes cannot make a device or the server allocate without bound. What a
/// side stored itself, or its own server sends it, loads whatever its size
/// ([`EpisodeDoc::load_trusted`], [`EpisodeDoc::load_with_changes`]): it was checked when
/// it arrived, and refusing it later would make an episode unreadable.
pub const MAX_DOCUMENT_BYTES: usize = 16 * 1024 * 1024;

/// The first bytes of every Automerge chunk (document or change).
const CHUNK_MAGIC: [u8; 4] = [0x85, 0x6f, 0x4a, 0x83];

/// The most records one document may hold.
pub const MAX_EVENTS: usize = 20_000;

/// Why a document could not be read or changed.
#[derive(Debug, thiserror::Error)]
pub enum DocumentError {
    /// The bytes are not an Automerge document (corrupt, truncated or hostile): `what`
    /// says where it failed (`None`: Automerge's error says it all), `cause` is
    /// Automerge's error when it gave one. The message quotes the cause too, because it
    /// is what a device is told when the server refuses its changes
    /// (`sync::Refusal::Invalid`), and that sentence is unchanged from when the cause was
    /// kept only as text.
    #[error("not a valid episode document: {}", corrupt_message(*what, cause.as_deref()))]
    Corrupt {
        what: Option<&'static str>,
        #[source]
        cause: Option<Cause>,
    },
    /// Too large to load safely.
    #[error("the episode document is {0} bytes, more than the {MAX_DOCUMENT_BYTES} allowed")]
    TooLarge(usize),
    /// A document written by a newer version of Tether.
    #[error("the episode document has schema {0}, newer than the {SCHEMA} this version reads: update the app")]
    NewerSchema(i64),
    /// An Automerge document, but not an episode.
    #[error("not an episode document: {0}")]
    NotAnEpisode(&'static str),
    /// The change was refused: it would store a record that is not valid.
    #[error(transparent)]
    Invalid(#[from] ValidationError),
    /// A new value is over its limit (`limits`): nothing was stored.
    #[error(transparent)]
    TooLong(#[from] limits::TooLong),
    /// The change would take the episode past its budget (`limits::EPISODE_BUDGET_BYTES`):
    /// `bytes` is what it would take. Nothing was stored; the episode still reads.
    #[error(
        "the episode would take {bytes} bytes, past its budget of {EPISODE_BUDGET_BYTES}: record this in a new episode"
    )]
    Full { bytes: usize },
    /// The change was refused for another reason, named.
    #[error("{0}")]
    Refused(String),
}

/// The error behind a [`DocumentError::Corrupt`]: Automerge's, whatever its type.
pub type Cause = Box<dyn std::error::Error + Send + Sync + 'static>;

impl DocumentError {
    /// Damage found by this crate's own checks: no library error behind it.
    pub fn corrupt(what: &'static str) -> Self {
        Self::Corrupt { what: Some(what), cause: None }
    }

    /// Damage Automerge found, in its own words.
    pub fn corrupt_by(cause: impl Into<Cause>) -> Self {
        Self::Corrupt { what: None, cause: Some(cause.into()) }
    }

    /// Damage Automerge found, and where.
    pub fn corrupt_at(what: &'static str, cause: impl Into<Cause>) -> Self {
        Self::Corrupt { what: Some(what), cause: Some(cause.into()) }
    }
}

/// The sentence of a [`DocumentError::Corrupt`]: where, then the cause.
fn corrupt_message(what: Option<&str>, cause: Option<&(dyn std::error::Error + Send + Sync)>) -> String {
    match (what, cause) {
        (Some(what), Some(cause)) => format!("{what}: {cause}"),
        (Some(what), None) => what.to_string(),
        (None, Some(cause)) => cause.to_string(),
        (None, None) => "damaged".to_string(),
    }
}

/// The facts of a new episode, as opened on a device.
#[derive(Clone, Debug)]
pub struct Opening {
    pub id: EpisodeId,
    pub patient_ref: PatientRef,
    pub team: String,
    pub opened_at: Timestamp,
    pub opened_by: String,
    pub pathway: Pathway,
    /// Facts other than the defaults.
    pub facts: Vec<(FactField, FactValue)>,
    pub plan: String,
}

/// One episode's Automerge document.
#[derive(Debug)]
pub struct EpisodeDoc {
    doc: AutoCommit,
    facts: ObjId,
    plan: ObjId,
    events: ObjId,
    /// The heads as of the last `save` or `save_incremental`. Kept here, not left to
    /// Automerge: a merge or a received message is applied to a fork, which forgets
    /// Automerge's own cursor, and the next incremental save would hold the whole history.
    saved: Vec<ChangeHash>,
    /// The bytes the document takes where it is kept: its last whole save (or the bytes
    /// it was loaded from) plus every incremental save since. What the budget counts.
    stored: usize,
    /// The typed episode as a check just read it, while the document has not changed
    /// since: a received change is read once (to check it), not again by whoever stores
    /// and evaluates it. Cleared by anything that can change the document.
    pub(crate) read: Option<Episode>,
}

impl EpisodeDoc {
    /// Opens a new episode, written by `actor` (one actor per device).
    pub fn open(opening: &Opening, actor: ActorId) -> Result<Self, DocumentError> {
        if opening.team.trim().is_empty() || opening.opened_by.trim().is_empty() {
            return Err(DocumentError::Refused("an episode needs a team and who opened it".into()));
        }
        crate::json::time::check(opening.opened_at).map_err(|message| {
            DocumentError::Invalid(ValidationError::Episode { field: "opened_at".into(), message })
        })?;
        limits::check_opening(opening)?;
        let mut doc = AutoCommit::new().with_actor(actor);
        let am = |e: automerge::AutomergeError| DocumentError::Refused(format!("cannot write the document: {e}"));
        doc.put(ROOT, "schema", SCHEMA).map_err(am)?;
        doc.put(ROOT, "id", opening.id.to_string()).map_err(am)?;
        doc.put(ROOT, "patient_ref", opening.patient_ref.as_str()).map_err(am)?;
        doc.put(ROOT, "team", opening.team.as_str()).map_err(am)?;
        doc.put(ROOT, "opened_at", opening.opened_at.to_string()).map_err(am)?;
        doc.put(ROOT, "opened_by", opening.opened_by.as_str()).map_err(am)?;
        let facts = doc.put_object(ROOT, "facts", ObjType::Map).map_err(am)?;
        doc.put(&facts, FactField::Pathway.as_str(), scalar(&FactValue::Pathway(opening.pathway).to_json()))
            .map_err(am)?;
        for (field, value) in &opening.facts {
            if *field == FactField::Pathway {
                return Err(DocumentError::Refused("give the pathway once, as the opening's pathway".into()));
            }
            check_fact(*field, value)?;
            doc.put(&facts, field.as_str(), scalar(&value.to_json())).map_err(am)?;
        }
        let plan = doc.put_object(ROOT, "plan", ObjType::Text).map_err(am)?;
        doc.splice_text(&plan, 0, 0, &opening.plan).map_err(am)?;
        let events = doc.put_object(ROOT, "events", ObjType::Map).map_err(am)?;
        doc.commit_with(CommitOptions::default().with_time(opening.opened_at.as_second()).with_message("open"));
        Ok(Self { doc, facts, plan, events, saved: Vec::new(), stored: 0, read: None })
    }

    /// Loads a document saved by [`EpisodeDoc::save`] and received from another party (a
    /// device's upload, a peer's copy), as `actor`.
    ///
    /// Refuses bytes over [`MAX_DOCUMENT_BYTES`], bytes that are not a document, a newer
    /// schema and a document without the episode's structure, with an error; never
    /// panics.
    pub fn load(bytes: &[u8], actor: ActorId) -> Result<Self, DocumentError> {
        if bytes.len() > MAX_DOCUMENT_BYTES {
            return Err(DocumentError::TooLarge(bytes.len()));
        }
        refuse_bombs(bytes)?;
        Self::load_trusted(bytes, actor)
    }

    /// Loads a document this side trusts whatever its size: one it stored itself, or one
    /// its own server sends it (which the server checked when it arrived, and which may
    /// be older than a limit). Still refuses bytes that are not an episode document.
    pub fn load_trusted(bytes: &[u8], actor: ActorId) -> Result<Self, DocumentError> {
        // Automerge returns an error for malformed input; the guard is defence in depth,
        // so that bad bytes can never take a device or the server down.
        let loaded = std::panic::catch_unwind(|| AutoCommit::load(bytes))
            .map_err(|_| DocumentError::corrupt("the document could not be decoded"))?
            .map_err(DocumentError::corrupt_by)?;
        let mut this = Self::from_automerge(loaded.with_actor(actor))?;
        // What was loaded is saved already (where it came from): the next incremental
        // save holds only new changes, and the budget counts from its bytes.
        this.saved = this.doc.get_heads();
        this.stored = bytes.len();
        Ok(this)
    }

    /// Loads a document kept as a snapshot and the changes saved since, in order (how
    /// a device and the server store their documents). The result is checked once, at
    /// the end. What a side stored it checked when it arrived: no size limit applies here,
    /// so that an episode accepted before a limit was lowered still loads.
    pub fn load_with_changes<'c>(
        snapshot: &[u8],
        changes: impl IntoIterator<Item = &'c [u8]>,
        actor: ActorId,
    ) -> Result<Self, DocumentError> {
        let mut doc = std::panic::catch_unwind(|| AutoCommit::load(snapshot))
            .map_err(|_| DocumentError::corrupt("the document could not be decoded"))?
            .map_err(DocumentError::corrupt_by)?
            .with_actor(actor);
        let mut stored = snapshot.len();
        for change in changes {
            stored += change.len();
            if !change.starts_with(&CHUNK_MAGIC) {
                return Err(DocumentError::corrupt("a stored change is not Automerge changes"));
            }
            let applied = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| doc.load_incremental(change)))
                .map_err(|_| DocumentError::corrupt("a stored change could not be decoded"))?;
            applied.map_err(DocumentError::corrupt_by)?;
        }
        let mut this = Self::from_automerge(doc)?;
        // What was loaded is saved already: the next incremental save holds only new changes.
        this.saved = this.doc.get_heads();
        this.stored = stored;
        Ok(this)
    }

    /// Applies changes saved by [`EpisodeDoc::save_incremental`] (or another device's)
    /// on top of this document. Each change is applied whole or not at all: bytes cut off
    /// part-way apply the complete changes before the cut. The result is checked before
    /// it is kept; a refusal changes nothing.
    pub fn load_incremental(&mut self, bytes: &[u8]) -> Result<(), DocumentError> {
        if bytes.len() > MAX_DOCUMENT_BYTES {
            return Err(DocumentError::TooLarge(bytes.len()));
        }
        // Automerge skips what it cannot parse; bytes that do not even start as an
        // Automerge chunk are an error worth reporting.
        if !bytes.is_empty() && !bytes.starts_with(&CHUNK_MAGIC) {
            return Err(DocumentError::corrupt("these bytes are not Automerge changes"));
        }
        refuse_bombs(bytes)?;
        // Apply to a copy, check it, and only then keep it.
        let mut copy = self.doc.fork();
        copy.set_actor(self.doc.get_actor().clone());
        let applied = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| copy.load_incremental(bytes)))
            .map_err(|_| DocumentError::corrupt("the changes could not be decoded"))?;
        applied.map_err(DocumentError::corrupt_by)?;
        let mut checked = Self::from_automerge(copy)?;
        checked.read = Some(self.check_merge(&checked)?);
        checked.saved = std::mem::take(&mut self.saved);
        checked.stored = self.stored;
        *self = checked;
        Ok(())
    }

    fn from_automerge(doc: AutoCommit) -> Result<Self, DocumentError> {
        match doc.get(ROOT, "schema") {
            Ok(Some((Value::Scalar(s), _))) => match s.as_i64() {
                Some(SCHEMA) => {}
                Some(n) if n > SCHEMA => return Err(DocumentError::NewerSchema(n)),
                _ => return Err(DocumentError::NotAnEpisode("unknown schema")),
            },
            _ => return Err(DocumentError::NotAnEpisode("no schema")),
        }
        let object = |key: &'static str, kind: ObjType| match doc.get(ROOT, key) {
            Ok(Some((Value::Object(t), id))) if t == kind => Ok(id),
            _ => Err(DocumentError::NotAnEpisode(key)),
        };
        let facts = object("facts", ObjType::Map)?;
        let plan = object("plan", ObjType::Text)?;
        let events = object("events", ObjType::Map)?;
        if doc.length(&events) > MAX_EVENTS {
            return Err(DocumentError::Refused(format!("the document holds more than {MAX_EVENTS} records")));
        }
        let this = Self { doc, facts, plan, events, saved: Vec::new(), stored: 0, read: None };
        // The identity must read: an episode without it cannot be shown or synced.
        this.identity()?;
        Ok(this)
    }

    /// Records an event: validated first, and refused (storing nothing) if invalid, if
    /// its id is taken, or if it is a `fact_changed` (use [`EpisodeDoc::set_fact`]).
    pub fn record(&mut self, event: &Event) -> Result<(), DocumentError> {
        event.check_recordable()?;
        self.put_event(event)?;
        self.commit(event.at, event.body.kind());
        Ok(())
    }

    /// Sets a fact, and records the change as the `fact_changed` event given, in one
    /// change: either both are stored or neither.
    pub fn set_fact(&mut self, event: &Event) -> Result<(), DocumentError> {
        let EventBody::FactChanged(change) = &event.body else {
            return Err(DocumentError::Refused("set_fact takes a fact_changed event".into()));
        };
        check_fact(change.field, &change.value)?;
        self.put_event(event)?;
        let key = change.field.as_str();
        let value = scalar(&change.value.to_json());
        // Automerge writes nothing when a register already holds exactly the value put.
        // But setting a fact to what it is says "it is this" against any concurrent
        // change: confirming `risk: high` while another device lowers it must merge as a
        // conflict (resolved to the safer side), not as the lowering alone. So a put of
        // the same value goes through another value first, in the same change.
        let unchanged = matches!(
            self.doc.get_all(&self.facts, key).as_deref(),
            Ok([(automerge::Value::Scalar(current), _)]) if current.as_ref() == &value
        );
        let written = if unchanged { self.doc.put(&self.facts, key, ScalarValue::Null) } else { Ok(()) }
            .and_then(|()| self.doc.put(&self.facts, key, value));
        if let Err(e) = written {
            self.doc.rollback();
            return Err(DocumentError::Refused(format!("cannot write the document: {e}")));
        }
        self.commit(event.at, "fact_changed");
        Ok(())
    }

    /// Replaces the joint plan's text. Stored as the edits that turn the old text into
    /// the new, so that another device's concurrent edits merge with these.
    pub fn set_plan(&mut self, text: &str, at: Timestamp) -> Result<(), DocumentError> {
        limits::check_plan(text)?;
        self.doc
            .update_text(&self.plan, text)
            .map_err(|e| DocumentError::Refused(format!("cannot edit the plan: {e}")))?;
        self.commit(at, "plan");
        Ok(())
    }

    /// Corrects a mistake: records an `entered_in_error` naming `record`.
    pub fn mark_in_error(&mut self, event: &Event) -> Result<(), DocumentError> {
        if !matches!(event.body, EventBody::EnteredInError(_)) {
            return Err(DocumentError::Refused("mark_in_error takes an entered_in_error event".into()));
        }
        self.record(event)
    }

    /// Validates a record against the document and stages it (uncommitted).
    fn put_event(&mut self, event: &Event) -> Result<(), DocumentError> {
        limits::check_record(event)?;
        let key = event.id.to_string();
        if self.doc.get(&self.events, key.as_str()).ok().flatten().is_some() {
            return Err(DocumentError::Refused(format!("event {key}: a record with this id exists already")));
        }
        if self.doc.length(&self.events) >= MAX_EVENTS {
            return Err(DocumentError::Refused(format!("the episode holds {MAX_EVENTS} records, the most allowed")));
        }
        // A correction must name a record that is here, and not another correction.
        if let EventBody::EnteredInError(eie) = &event.body {
            let named = self.stored_event(&eie.record.to_string());
            let message = match named {
                None => Some("names no known record"),
                Some(named) if matches!(named.body, EventBody::EnteredInError(_)) => {
                    Some("names another entered_in_error: a correction cannot be undone; record the original again")
                }
                Some(_) => None,
            };
            if let Some(message) = message {
                return Err(
                    ValidationError::Event { event: key, field: "record".into(), message: message.into() }.into()
                );
            }
        }
        let json = serde_json::to_string(event)
            .map_err(|e| DocumentError::Refused(format!("cannot write the record: {e}")))?;
        self.doc
            .put(&self.events, key.as_str(), json)
            .map_err(|e| DocumentError::Refused(format!("cannot write the document: {e}")))?;
        Ok(())
    }

    /// One stored record, if it is here and valid.
    fn stored_event(&self, key: &str) -> Option<Event> {
        match self.doc.get(&self.events, key) {
            Ok(Some((Value::Scalar(s), _))) => {
                let json = crate::json::parse_value(s.as_str()?.as_bytes()).ok()?;
                Event::from_value(&json, 0).ok()
            }
            _ => None,
        }
    }

    fn commit(&mut self, at: Timestamp, message: &str) {
        self.read = None;
        self.doc.commit_with(CommitOptions::default().with_time(at.as_second()).with_message(message));
    }

    /// The typed episode, conflicts included. A record that fails validation is kept in
    /// the document, left out of [`Episode::events`] and listed in
    /// [`Episode::invalid_records`].
    pub fn episode(&self) -> Result<Episode, DocumentError> {
        if let Some(read) = &self.read {
            return Ok(read.clone());
        }
        let identity = self.identity()?;
        let mut json = identity;
        for field in FactField::ALL {
            let values: Vec<Json> = self
                .doc
                .get_all(&self.facts, field.as_str())
                .map_err(DocumentError::corrupt_by)?
                .into_iter()
                .filter_map(|(value, _)| match value {
                    Value::Scalar(s) => Some(to_json(&s)),
                    Value::Object(_) => None,
                })
                // A value this version cannot read (from a faulty client) is left out
                // rather than failing the whole episode.
                .filter(|v| FactValue::from_json(field, v).is_ok())
                .collect();
            match values.len() {
                0 => {}
                1 => {
                    json.insert(field.as_str().into(), values.into_iter().next().unwrap_or(Json::Null));
                }
                _ => {
                    json.insert(field.as_str().into(), Json::Array(values));
                }
            }
        }
        if !json.contains_key("pathway") {
            return Err(DocumentError::NotAnEpisode("no readable pathway"));
        }
        json.insert("plan".into(), Json::String(self.plan_text()?));
        let raw = self.raw_events();
        let unreadable: Vec<String> = raw.iter().filter(|(_, v)| v.is_none()).map(|(key, _)| key.clone()).collect();
        json.insert("events".into(), Json::Array(raw.into_iter().filter_map(|(_, v)| v).collect()));
        let mut episode = Episode::from_value(&Json::Object(json), Strictness::Lenient)?;
        for key in unreadable {
            let error = "the stored record is not JSON (or names a key twice), or not under its own id".to_string();
            episode.invalid_records.push(InvalidRecord { id: key, error });
        }
        episode.invalid_records.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(episode)
    }

    /// The records as stored: each key with its JSON, or `None` when the stored value is
    /// not JSON or names another id.
    fn raw_events(&self) -> Vec<(String, Option<Json>)> {
        let mut raw = Vec::with_capacity(self.doc.length(&self.events));
        for key in self.doc.keys(&self.events) {
            let value = match self.doc.get(&self.events, key.as_str()) {
                // A key named twice reads as unreadable: two readers could disagree on it.
                Ok(Some((Value::Scalar(s), _))) => {
                    s.as_str().and_then(|text| crate::json::parse_value(text.as_bytes()).ok())
                }
                _ => None,
            };
            let value = value.filter(|v| v.get("id").and_then(Json::as_str) == Some(key.as_str()));
            raw.push((key, value));
        }
        raw
    }

    fn identity(&self) -> Result<Map<String, Json>, DocumentError> {
        let mut json = Map::new();
        for key in ["id", "patient_ref", "team", "opened_at", "opened_by"] {
            match self.doc.get(ROOT, key) {
                Ok(Some((Value::Scalar(s), _))) if s.is_str() => {
                    json.insert(key.into(), to_json(&s));
                }
                _ => return Err(DocumentError::NotAnEpisode("its identity (id, patient, team, opening) is missing")),
            }
        }
        Ok(json)
    }

    /// The joint plan.
    pub fn plan_text(&self) -> Result<String, DocumentError> {
        self.doc.text(&self.plan).map_err(DocumentError::corrupt_by)
    }

    /// Checks that `next` (this document with changes applied) keeps what may never
    /// change: the identity, and every record exactly as it was.
    fn check_successor(&self, next: &Self) -> Result<(), DocumentError> {
        if self.identity()? != next.identity()? {
            return Err(DocumentError::Refused("the changes alter the episode's id, patient, team or opening".into()));
        }
        // The facts, the plan and the records stay the objects they were: a change that
        // puts a new map or text in their place (even a copy) would hide every later
        // change made to the originals.
        for (key, before, after) in [
            ("facts", &self.facts, &next.facts),
            ("plan", &self.plan, &next.plan),
            ("events", &self.events, &next.events),
        ] {
            let all = next.doc.get_all(ROOT, key).map_err(DocumentError::corrupt_by)?;
            if before != after || all.len() != 1 {
                return Err(DocumentError::Refused(format!("the changes replace the episode's {key}")));
            }
        }
        for key in self.doc.keys(&self.events) {
            let before = self.doc.get_all(&self.events, key.as_str()).map_err(DocumentError::corrupt_by)?;
            let after = next.doc.get_all(&next.events, key.as_str()).map_err(DocumentError::corrupt_by)?;
            let text = |v: &[(Value<'_>, ObjId)]| v.iter().map(|(v, _)| v.to_string()).collect::<Vec<_>>();
            if text(&before) != text(&after) {
                return Err(DocumentError::Refused(format!("the changes alter or delete the record {key}")));
            }
        }
        Ok(())
    }

    /// Checks that `next` (this document with another copy's changes merged in) keeps
    /// the identity and every record, and that every record it adds is valid.
    pub(crate) fn check_merge(&self, next: &Self) -> Result<Episode, DocumentError> {
        self.check_successor(next)?;
        let episode = next.episode()?;
        for invalid in &episode.invalid_records {
            let known = self.doc.get(&self.events, invalid.id.as_str()).ok().flatten().is_some();
            if !known {
                return Err(DocumentError::Refused(format!(
                    "the record {} is not valid: {}",
                    invalid.id, invalid.error
                )));
            }
        }
        Ok(episode)
    }

    /// Checks a document received whole (a new episode): every record valid. The reading
    /// is kept as the episode (see `read`).
    pub fn check_new(&mut self) -> Result<(), DocumentError> {
        let episode = self.episode()?;
        // Read leniently, as every stored document is; as new input, its opening must
        // fall in the years input may.
        crate::json::time::check(episode.opened_at).map_err(|message| {
            DocumentError::Invalid(ValidationError::Episode { field: "opened_at".into(), message })
        })?;
        if let Some(invalid) = episode.invalid_records.first() {
            return Err(DocumentError::Refused(format!("the record {} is not valid: {}", invalid.id, invalid.error)));
        }
        self.read = Some(episode);
        Ok(())
    }

    /// A copy of this document, written by the same actor, to change and check before
    /// keeping.
    pub(crate) fn fork_checked(&mut self) -> Self {
        let mut doc = self.doc.fork();
        doc.set_actor(self.doc.get_actor().clone());
        Self {
            doc,
            facts: self.facts.clone(),
            plan: self.plan.clone(),
            events: self.events.clone(),
            saved: self.saved.clone(),
            stored: self.stored,
            read: None,
        }
    }

    /// Reads the structure again after changes from elsewhere (schema, objects, limits).
    pub(crate) fn recheck(self) -> Result<Self, DocumentError> {
        let mut this = Self::from_automerge(self.doc)?;
        this.saved = self.saved;
        this.stored = self.stored;
        Ok(this)
    }

    /// Merges another copy of this episode (another device's) into this one.
    pub fn merge(&mut self, other: &mut Self) -> Result<(), DocumentError> {
        let mut copy = self.doc.fork();
        copy.set_actor(self.doc.get_actor().clone());
        copy.merge(&mut other.doc).map_err(DocumentError::corrupt_by)?;
        let mut merged = Self::from_automerge(copy)?;
        merged.read = Some(self.check_merge(&merged)?);
        merged.saved = std::mem::take(&mut self.saved);
        merged.stored = self.stored;
        *self = merged;
        Ok(())
    }

    /// The whole document, compacted.
    pub fn save(&mut self) -> Vec<u8> {
        let bytes = self.doc.save();
        self.saved = self.doc.get_heads();
        self.stored = bytes.len();
        bytes
    }

    /// The whole document, compacted, to send: unlike [`EpisodeDoc::save`], it changes
    /// neither what counts as saved nor the bytes counted as stored.
    pub fn save_copy(&mut self) -> Vec<u8> {
        self.doc.save()
    }

    /// The changes made (or merged in) since the last `save` or `save_incremental`, and
    /// only those.
    pub fn save_incremental(&mut self) -> Vec<u8> {
        let bytes = self.doc.save_after(&self.saved);
        if !bytes.is_empty() {
            self.saved = self.doc.get_heads();
            self.stored += bytes.len();
        }
        bytes
    }

    /// The changes since the last save, as [`EpisodeDoc::save_incremental`], if storing
    /// them keeps the episode within its budget (`limits::EPISODE_BUDGET_BYTES`); else
    /// [`DocumentError::Full`], with nothing marked as saved: the caller discards this
    /// copy of the document (the changes are in it, but in no store).
    pub fn save_incremental_within_budget(&mut self) -> Result<Vec<u8>, DocumentError> {
        let bytes = self.doc.save_after(&self.saved);
        if !bytes.is_empty() {
            let total = self.stored + bytes.len();
            if total > EPISODE_BUDGET_BYTES {
                return Err(DocumentError::Full { bytes: total });
            }
            self.saved = self.doc.get_heads();
            self.stored += bytes.len();
        }
        Ok(bytes)
    }

    /// The bytes this document takes where it is kept: its last whole save, or the bytes
    /// it was loaded from, plus every incremental save since. What the budget counts.
    pub fn stored_bytes(&self) -> usize {
        self.stored
    }

    /// The ids of the records this document holds, as their keys (without reading them):
    /// to tell, after a merge, which records are new.
    pub fn record_keys(&self) -> std::collections::HashSet<String> {
        self.doc.keys(&self.events).collect()
    }

    /// The document's heads: equal heads, equal documents.
    pub fn heads(&mut self) -> Vec<ChangeHash> {
        self.doc.get_heads()
    }

    /// The underlying Automerge document, for the sync protocol. Whatever the caller
    /// does with it, the document may have changed: the episode is read afresh.
    pub fn automerge(&mut self) -> &mut AutoCommit {
        self.read = None;
        &mut self.doc
    }

    /// The Automerge document for what cannot change its content (a sync message built,
    /// a message without changes received): the episode as read stays.
    pub(crate) fn automerge_unchanged(&mut self) -> &mut AutoCommit {
        &mut self.doc
    }
}

/// Refuses bytes whose deflated parts inflate past [`crate::inflate::MAX_INFLATED_BYTES`].
pub(crate) fn refuse_bombs(bytes: &[u8]) -> Result<(), DocumentError> {
    if crate::inflate::exceeds_cap(bytes) {
        return Err(DocumentError::Refused(format!(
            "the document's compressed parts inflate to more than {} bytes",
            crate::inflate::MAX_INFLATED_BYTES
        )));
    }
    Ok(())
}

/// Refuses a fact value that does not belong to its field.
fn check_fact(field: FactField, value: &FactValue) -> Result<(), DocumentError> {
    FactValue::from_json(field, &value.to_json())
        .map_err(|m| DocumentError::Invalid(ValidationError::Episode { field: field.as_str().into(), message: m }))?;
    if let FactValue::User(Some(name)) = value {
        limits::check_name(field.as_str(), name)?;
    }
    Ok(())
}

fn scalar(value: &Json) -> ScalarValue {
    match value {
        Json::Bool(b) => ScalarValue::Boolean(*b),
        Json::String(s) => ScalarValue::Str(s.as_str().into()),
        Json::Number(n) => n.as_i64().map(ScalarValue::Int).unwrap_or(ScalarValue::Null),
        _ => ScalarValue::Null,
    }
}

fn to_json(value: &ScalarValue) -> Json {
    match value {
        ScalarValue::Str(s) => Json::String(s.to_string()),
        ScalarValue::Boolean(b) => Json::Bool(*b),
        ScalarValue::Int(i) => Json::from(*i),
        ScalarValue::Uint(u) => Json::from(*u),
        _ => Json::Null,
    }
}
