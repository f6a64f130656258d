//! The phone's core: everything a practitioner records on a home visit with no signal,
//! stored durably and encrypted, with what is due next computed on the spot.
//!
//! [`Core`] is the entry point: it owns the store (SQLite encrypted with SQLCipher, one
//! writer connection in WAL mode) and keeps the device's episode documents in memory, so
//! that the caseload's next actions need no disk reads. A record is validated first (its
//! fields, and the limits of `episode::limits`), then applied to its document, checked
//! against the episode's budget and committed to disk before the call returns; a record
//! that is refused stores nothing. Every record is by the user signed in on the device
//! and on the device itself: the core stamps both, the caller gives neither.
//!
//! - `store`: the SQLite schema, migrations, and reading and writing documents.
//! - `error`: the errors a caller may see.
//! - `bin/tether-field.rs`: the command line, a phone on the command line.
//!
//! - `sync`: the sync engine, sans-IO: build a request, apply a response, repeat.
//! - `remote`: sign-in, token refresh and whole sync sessions over any [`remote::Transport`].
//! - `identity`: sign-in with the trust's identity provider through the system browser
//!   (RFC 8252), the PKCE verifier, `state` and `nonce` kept in the store.
//! - `http`: the blocking HTTP transport (ureq) for the command line and tests.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use automerge::ActorId;
use episode::document::{EpisodeDoc, Opening};
use episode::pathway::{self, Action, Calendar, Evaluation, State};
use episode::{
    Episode, EpisodeId, Event, EventId, FactField, FactValue, Pathway, PatientRef, Strictness, ValidationError,
};
use jiff::Timestamp;
use rusqlite::Connection;
use serde::Serialize;
use serde_json::{Map, Value};

mod error;
#[cfg(feature = "http")]
pub mod http;
pub mod identity;
pub mod remote;
mod store;
mod sync;

pub use error::{Cause, Error, Result};
pub use store::StoreKey;
pub use sync::{HeldBack, ServerActions, SyncSession, SyncSummary};

/// After this many stored changes an episode's document is compacted into a new
/// snapshot (in the same transaction that drops the changes).
pub(crate) const COMPACT_AFTER: usize = 64;

/// The format of the typed views kept in the store. Raise it whenever
/// `EpisodeDoc::episode` would read the same document differently (a fact value or a
/// record it used to leave out, say): views of another format are built again.
const VIEW_FORMAT: u64 = 1;

/// The most a stored view may inflate to: a view that would be larger is not read (the
/// document is, instead).
const MAX_VIEW_BYTES: u64 = 64 << 20;

/// The store file's name inside the store directory.
pub const STORE_FILE: &str = "tether.db";

/// The setting that holds the user signed in on this device (`remote::sign_in` sets it).
pub(crate) const SIGNED_IN: &str = "sync.username";

/// The meta key of the name a store that has never signed in records under.
const OFFLINE_USER: &str = "offline_user";

/// The meta key of the device's own secret, which it signs in with (see `remote`).
const DEVICE_KEY: &str = "device_key";

/// A practitioner's device: its store and its episodes.
#[derive(Debug)]
pub struct Core {
    conn: Connection,
    dir: std::path::PathBuf,
    device: String,
    actor: ActorId,
    calendar: Calendar,
    episodes: BTreeMap<EpisodeId, Kept>,
}

/// An episode's document, its typed view, how many changes follow its snapshot, and
/// when the server first stored its records.
#[derive(Debug)]
struct Kept {
    doc: EpisodeDoc,
    /// The document's reading, each record with its `received_at` once known.
    episode: Episode,
    changes: usize,
    /// The receipt times the server has sent, kept beside the document (never in it).
    receipts: HashMap<EventId, Timestamp>,
}

impl Kept {
    fn new(doc: EpisodeDoc, episode: Episode, changes: usize) -> Self {
        let mut kept = Self { doc, episode, changes, receipts: HashMap::new() };
        kept.show_receipts();
        kept
    }

    /// Reads the typed view from the document again, keeping the team that holds the
    /// episode now (after a transfer, not the document's own) and the receipt times.
    fn reread(&mut self) -> Result<()> {
        let team = std::mem::take(&mut self.episode.team);
        self.episode = self.doc.episode()?;
        self.episode.team = team;
        self.show_receipts();
        Ok(())
    }

    /// Gives each record of the typed view its receipt time, if the server has sent it.
    /// Only the server's word counts: a `received_at` written into a document (no client
    /// of ours writes one; a forged record might) is not shown or evaluated.
    fn show_receipts(&mut self) {
        for event in &mut self.episode.events {
            event.received_at = self.receipts.get(&event.id).copied();
        }
    }
}

/// A new episode, as the practitioner opens it.
#[derive(Clone, Debug)]
pub struct NewEpisode {
    pub patient_ref: PatientRef,
    pub pathway: Pathway,
    pub team: String,
    pub facts: Vec<(FactField, FactValue)>,
    pub plan: String,
}

/// One line of the device's caseload: each field means what it means in a line of the
/// server's `GET /v1/episodes`, in the same JSON shape, so that phone and server never
/// say two things of one episode.
#[derive(Clone, Debug, Serialize)]
pub struct EpisodeSummary {
    pub id: EpisodeId,
    pub team: String,
    /// The pathway the rules take: on a conflict, the safer value (`conflicts` counts it).
    pub pathway: Pathway,
    pub patient_ref: PatientRef,
    /// Actions still to be done: open or overdue.
    pub open_actions: usize,
    /// Of those, the overdue ones.
    pub overdue_actions: usize,
    /// How many facts hold concurrent values (the episode itself says which).
    pub conflicts: usize,
}

/// An action due across the caseload, for the phone's home screen.
#[derive(Clone, Debug, Serialize)]
pub struct NextAction {
    pub episode: EpisodeId,
    pub patient_ref: PatientRef,
    #[serde(flatten)]
    pub action: Action,
}

/// When the next action on the device falls due, for the host to schedule a local
/// notification that fires offline. It names the episode and the action, never the
/// patient: a notification shows on a locked screen.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct NextDue {
    pub episode: EpisodeId,
    pub action: uuid::Uuid,
    pub code: pathway::Code,
    pub title: String,
    pub priority: pathway::Priority,
    #[serde(with = "episode::json::time")]
    pub due: Timestamp,
}

/// What the device computes offline: provisional until the server's evaluation arrives.
#[derive(Clone, Debug, Serialize)]
pub struct Provisional {
    pub provisional: bool,
    #[serde(with = "episode::json::time")]
    pub evaluated_at: Timestamp,
    #[serde(flatten)]
    pub evaluation: Evaluation,
}

impl Core {
    /// Opens the device's store in `dir` (creating both if need be) with the host's key,
    /// and loads its episodes. A wrong key is [`Error::WrongKey`]; a damaged file is
    /// [`Error::Corrupt`] or [`Error::WrongKey`], never a panic.
    pub fn open(dir: &Path, key: &StoreKey) -> Result<Self> {
        std::fs::create_dir_all(dir).map_err(|source| Error::Io { doing: "create the store directory", source })?;
        let mut conn = store::open(&dir.join(STORE_FILE), key)?;
        let device = match store::meta(&conn, "device")? {
            Some(device) => device,
            None => {
                let device = uuid::Uuid::now_v7().to_string();
                let tx = conn.transaction()?;
                store::set_meta(&tx, "device", &device)?;
                tx.commit()?;
                device
            }
        };
        // The device's secret, made once (stores made before it existed get one now): the
        // server registers the device id with it at the first sign-in, and takes no
        // sign-in under that id without it.
        if store::meta(&conn, DEVICE_KEY)?.is_none() {
            let key = StoreKey::generate()?.to_hex();
            let tx = conn.transaction()?;
            store::set_meta(&tx, DEVICE_KEY, &key)?;
            tx.commit()?;
        }
        let actor = actor_for(&device)?;
        // Documents load independently: spread them over the device's cores, each thread
        // taking the next one as it finishes (so a busy core holds none of them up).
        let stored = store::all_episodes(&conn)?;
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).clamp(1, 8).min(stored.len().max(1));
        let next = std::sync::atomic::AtomicUsize::new(0);
        let loaded: Vec<Result<Loaded>> = std::thread::scope(|scope| {
            let workers: Vec<_> = (0..threads)
                .map(|_| {
                    scope.spawn(|| {
                        let mut loaded = Vec::new();
                        while let Some(s) = stored.get(next.fetch_add(1, std::sync::atomic::Ordering::Relaxed)) {
                            loaded.push(load(s, actor.clone()));
                        }
                        loaded
                    })
                })
                .collect();
            workers
                .into_iter()
                .flat_map(|w| w.join().unwrap_or_else(|_| vec![Err(Error::corrupt("a document could not be loaded"))]))
                .collect()
        });
        let mut episodes = BTreeMap::new();
        let mut views = Vec::new();
        for loaded in loaded {
            let Loaded { kept, view } = loaded?;
            if let Some(view) = view {
                views.push((kept.episode.id.to_string(), view));
            }
            episodes.insert(kept.episode.id, kept);
        }
        // Views built afresh are kept for the next opening. They are only a cache: if
        // they cannot be written, this opening is no worse and the next builds them again.
        if !views.is_empty() {
            let _ = (|| -> Result<()> {
                let tx = conn.transaction()?;
                for (id, view) in &views {
                    store::put_view(&tx, id, view)?;
                }
                tx.commit()?;
                Ok(())
            })();
        }
        Ok(Self { conn, dir: dir.to_path_buf(), device, actor, calendar: Calendar::england_and_wales(), episodes })
    }

    /// This device's id (it is in every record made here).
    pub fn device(&self) -> &str {
        &self.device
    }

    /// The device's own secret, sent with every sign-in (never shown, never logged).
    pub(crate) fn device_key(&self) -> Result<String> {
        store::meta(&self.conn, DEVICE_KEY)?.ok_or_else(|| Error::corrupt("the device has no key"))
    }

    /// Who records on this device: the user signed in here, or, on a store that has never
    /// signed in, the name given to [`Core::set_offline_user`]. `None`: nobody yet.
    pub fn user(&self) -> Result<Option<String>> {
        match self.setting(SIGNED_IN)? {
            Some(user) => Ok(Some(user)),
            None => store::meta(&self.conn, OFFLINE_USER),
        }
    }

    /// Names who records on a store that has never signed in (a demonstration, a test,
    /// records made before the first sign-in). The server takes such records only once
    /// that user has signed in on this device. Refused once anyone has signed in here:
    /// from then on every record is by the signed-in user.
    pub fn set_offline_user(&mut self, name: &str) -> Result<()> {
        if let Some(user) = self.setting(SIGNED_IN)? {
            return Err(Error::SignedIn(user));
        }
        if name.trim().is_empty() {
            return Err(Error::Invalid(ValidationError::Episode {
                field: "user".into(),
                message: "who records may not be empty".into(),
            }));
        }
        episode::limits::check_name("user", name).map_err(episode::document::DocumentError::from)?;
        let tx = self.conn.transaction()?;
        store::set_meta(&tx, OFFLINE_USER, name)?;
        tx.commit()?;
        Ok(())
    }

    /// Notes that `username` has signed in on this device: every record from now on is
    /// theirs. Episodes held back are offered to the server again at the next sync: the
    /// sign-in may be what they were waiting for (a record by this user, made before).
    pub(crate) fn signed_in_as(&mut self, username: &str) -> Result<()> {
        let tx = self.conn.transaction()?;
        store::set_meta(&tx, &format!("setting.{SIGNED_IN}"), username)?;
        store::release_all_held_back(&tx)?;
        tx.commit()?;
        Ok(())
    }

    /// The author of a record made now: the user signed in here (or named before any
    /// sign-in), else [`Error::NotSignedIn`].
    fn author(&self) -> Result<String> {
        self.user()?.ok_or(Error::NotSignedIn)
    }

    /// A value kept in the store for the host (the signed-in user, say).
    pub fn setting(&self, key: &str) -> Result<Option<String>> {
        store::meta(&self.conn, &format!("setting.{key}"))
    }

    /// Keeps a value for the host.
    pub fn set_setting(&mut self, key: &str, value: &str) -> Result<()> {
        let tx = self.conn.transaction()?;
        store::set_meta(&tx, &format!("setting.{key}"), value)?;
        tx.commit()?;
        Ok(())
    }

    /// Forgets a value kept for the host.
    pub fn clear_setting(&mut self, key: &str) -> Result<()> {
        let tx = self.conn.transaction()?;
        store::delete_meta(&tx, &format!("setting.{key}"))?;
        tx.commit()?;
        Ok(())
    }

    /// Opens an episode, offline, as the signed-in user; returns its new id.
    pub fn open_episode(&mut self, new: NewEpisode, at: Timestamp) -> Result<EpisodeId> {
        let id = EpisodeId::from_uuid(uuid::Uuid::now_v7());
        let opening = Opening {
            id,
            patient_ref: new.patient_ref,
            team: new.team,
            opened_at: at,
            opened_by: self.author()?,
            pathway: new.pathway,
            facts: new.facts,
            plan: new.plan,
        };
        let mut doc = EpisodeDoc::open(&opening, self.actor.clone())?;
        let episode = doc.episode()?;
        let snapshot = doc.save();
        let view = view_of(&mut doc, &episode);
        let tx = self.conn.transaction()?;
        store::insert_episode(&tx, &id.to_string(), &opening.team, &snapshot)?;
        if let Some(view) = &view {
            store::put_view(&tx, &id.to_string(), view)?;
        }
        tx.commit()?;
        self.episodes.insert(id, Kept::new(doc, episode, 0));
        Ok(id)
    }

    /// Records an event on an episode: `fields` are the kind's own fields (as in the
    /// episode JSON); id, `by` (the signed-in user) and `device` (this one) are filled in
    /// here. Validated first: a bad record is refused with an error naming the field, and
    /// nothing is stored; so is one that would take the episode past its budget.
    ///
    /// Every call that changes an episode takes the episode first, then what changes,
    /// then when: `record`, `set_fact`, `set_plan` (and `open_episode`, the new episode
    /// then when).
    pub fn record(
        &mut self,
        episode: EpisodeId,
        kind: &str,
        fields: Map<String, Value>,
        at: Timestamp,
    ) -> Result<EventId> {
        let event = self.new_event(kind, at, fields)?;
        event.check_recordable()?;
        self.apply(episode, |doc| doc.record(&event))?;
        // The typed view gains the one record: no need to read the document again.
        if let Some(kept) = self.episodes.get_mut(&episode) {
            kept.episode.events.push(event.clone());
        }
        Ok(event.id)
    }

    /// Sets a fact (recording a `fact_changed` event for the timeline, by the signed-in
    /// user).
    pub fn set_fact(&mut self, episode: EpisodeId, field: FactField, value: &Value, at: Timestamp) -> Result<EventId> {
        FactValue::from_json(field, value)
            .map_err(|message| ValidationError::Episode { field: field.as_str().into(), message })?;
        let mut fields = Map::new();
        fields.insert("field".into(), Value::String(field.as_str().into()));
        fields.insert("value".into(), value.clone());
        let event = self.new_event("fact_changed", at, fields)?;
        self.apply(episode, |doc| doc.set_fact(&event))?;
        self.refresh(episode)?;
        Ok(event.id)
    }

    /// Replaces the joint plan's text (stored as edits, so concurrent edits merge).
    pub fn set_plan(&mut self, episode: EpisodeId, text: &str, at: Timestamp) -> Result<()> {
        self.apply(episode, |doc| doc.set_plan(text, at))?;
        self.refresh(episode)
    }

    /// Reads an episode's typed view from its document again.
    fn refresh(&mut self, id: EpisodeId) -> Result<()> {
        self.episodes.get_mut(&id).ok_or_else(|| Error::NotFound(id.to_string()))?.reread()
    }

    fn new_event(&self, kind: &str, at: Timestamp, fields: Map<String, Value>) -> Result<Event> {
        Ok(Event::new_record(uuid::Uuid::now_v7().into(), kind, at, &self.author()?, &self.device, fields)?)
    }

    /// Applies a change to an episode's document and commits it to disk before
    /// returning. If the disk write fails, the document is reloaded from the store, so
    /// memory never holds what the disk does not.
    fn apply(
        &mut self,
        id: EpisodeId,
        change: impl FnOnce(&mut EpisodeDoc) -> Result<(), episode::document::DocumentError>,
    ) -> Result<()> {
        let kept = self.episodes.get_mut(&id).ok_or_else(|| Error::NotFound(id.to_string()))?;
        change(&mut kept.doc)?;
        let bytes = match kept.doc.save_incremental_within_budget() {
            Ok(bytes) => bytes,
            Err(full) => {
                // The change is in memory only: put the document back as the store has it.
                self.reload(id)?;
                return Err(full.into());
            }
        };
        let key = id.to_string();
        let written = (|| -> Result<()> {
            let tx = self.conn.transaction()?;
            store::append_change(&tx, &key, &bytes)?;
            tx.commit()?;
            Ok(())
        })();
        if let Err(error) = written {
            self.reload(id)?;
            return Err(error);
        }
        let kept = self.episodes.get_mut(&id).ok_or_else(|| Error::NotFound(id.to_string()))?;
        kept.changes += 1;
        if kept.changes >= COMPACT_AFTER {
            self.compact(id)?;
        }
        Ok(())
    }

    /// Folds an episode's changes into a new snapshot. The record is already durable
    /// when this runs; a crash here leaves the old snapshot and its changes.
    fn compact(&mut self, id: EpisodeId) -> Result<()> {
        let kept = self.episodes.get_mut(&id).ok_or_else(|| Error::NotFound(id.to_string()))?;
        let snapshot = kept.doc.save();
        let tx = self.conn.transaction()?;
        store::compact(&tx, &id.to_string(), &snapshot)?;
        tx.commit()?;
        kept.changes = 0;
        Ok(())
    }

    fn reload(&mut self, id: EpisodeId) -> Result<()> {
        let stored = store::all_episodes(&self.conn)?.into_iter().find(|s| s.id == id.to_string());
        match stored {
            Some(stored) => {
                self.episodes.insert(id, load(&stored, self.actor.clone())?.kept);
            }
            None => {
                self.episodes.remove(&id);
            }
        }
        Ok(())
    }

    /// An episode's whole document, to hand to another device or the server.
    pub fn export_episode(&mut self, id: EpisodeId) -> Result<Vec<u8>> {
        let kept = self.episodes.get_mut(&id).ok_or_else(|| Error::NotFound(id.to_string()))?;
        Ok(kept.doc.save_copy())
    }

    /// Takes another device's copy of an episode: merged into ours (checked: nothing
    /// recorded may change) or, if new here, kept as it is. Durable before it returns.
    ///
    /// The other device's records stay its own: the server takes one that is new to it
    /// only from the device that made it, so an episode that carries one is held back at
    /// this device's sync until that device has synced it (`docs/adr/0002-sync.md`).
    pub fn merge_episode(&mut self, bytes: &[u8]) -> Result<EpisodeId> {
        let mut theirs = EpisodeDoc::load(bytes, self.actor.clone())?;
        let id = theirs.episode()?.id;
        if self.episodes.contains_key(&id) {
            self.apply(id, |ours| ours.merge(&mut theirs))?;
            self.refresh(id)?;
            return Ok(id);
        }
        let episode = theirs.episode()?;
        let snapshot = theirs.save();
        let view = view_of(&mut theirs, &episode);
        let tx = self.conn.transaction()?;
        store::insert_episode(&tx, &id.to_string(), &episode.team, &snapshot)?;
        if let Some(view) = &view {
            store::put_view(&tx, &id.to_string(), view)?;
        }
        tx.commit()?;
        self.episodes.insert(id, Kept::new(theirs, episode, 0));
        Ok(id)
    }

    /// The device's episodes, with their open and overdue actions at `now`: each line as
    /// the server's caseload gives it.
    pub fn episodes(&self, now: Timestamp) -> Vec<EpisodeSummary> {
        self.episodes
            .values()
            .map(|kept| {
                let e = &kept.episode;
                let evaluation = pathway::evaluate(e, now, &self.calendar);
                let count = |open: fn(&State) -> bool| evaluation.actions.iter().filter(|a| open(&a.state)).count();
                EpisodeSummary {
                    id: e.id,
                    team: e.team.clone(),
                    pathway: *e.facts.pathway.safest(),
                    patient_ref: e.patient_ref.clone(),
                    open_actions: count(|s| matches!(s, State::Open | State::Overdue)),
                    overdue_actions: count(|s| *s == State::Overdue),
                    conflicts: e.facts.conflicts().len(),
                }
            })
            .collect()
    }

    /// One episode, as its facts and records.
    pub fn episode(&self, id: EpisodeId) -> Result<&Episode> {
        self.episodes.get(&id).map(|k| &k.episode).ok_or_else(|| Error::NotFound(id.to_string()))
    }

    /// An episode's records in the order they happened.
    pub fn timeline(&self, id: EpisodeId) -> Result<Vec<Event>> {
        let mut events = self.episode(id)?.events.clone();
        events.sort_by_key(|e| (e.at, e.id));
        Ok(events)
    }

    /// An episode's actions at the device's clock: provisional, until the server's.
    pub fn actions(&self, id: EpisodeId, now: Timestamp) -> Result<Provisional> {
        let evaluation = pathway::evaluate(self.episode(id)?, now, &self.calendar);
        Ok(Provisional { provisional: true, evaluated_at: now, evaluation })
    }

    /// The caseload's next actions: every open and overdue action across the device's
    /// episodes, soonest due first (what the phone's home screen shows).
    pub fn next_actions(&self, now: Timestamp) -> Vec<NextAction> {
        let mut next: Vec<NextAction> = self
            .episodes
            .values()
            .flat_map(|kept| {
                let e = &kept.episode;
                pathway::evaluate(e, now, &self.calendar)
                    .actions
                    .into_iter()
                    .filter(|a| matches!(a.state, State::Open | State::Overdue))
                    .map(|action| NextAction { episode: e.id, patient_ref: e.patient_ref.clone(), action })
            })
            .collect();
        next.sort_by_key(|n| (n.action.due, n.episode, n.action.id));
        next
    }

    /// The next moment an action on the device falls due after `now`: the earliest
    /// deadline of the actions still to be done (open, or upcoming: an action not yet
    /// active falls due too) that is not already past. Overdue actions are left out: they
    /// are due already, and `next_actions` lists them. `None`: nothing is to come.
    pub fn next_due(&self, now: Timestamp) -> Option<NextDue> {
        self.episodes
            .values()
            .flat_map(|kept| {
                let e = &kept.episode;
                pathway::evaluate(e, now, &self.calendar)
                    .actions
                    .into_iter()
                    .filter(|a| matches!(a.state, State::Upcoming | State::Open) && a.due >= now)
                    .map(|a| NextDue {
                        episode: e.id,
                        action: a.id,
                        code: a.code,
                        title: a.title.to_string(),
                        priority: a.priority,
                        due: a.due,
                    })
            })
            .min_by_key(|n| (n.due, n.episode, n.action))
    }

    /// The store's size on disk, in bytes.
    pub fn store_size(&self) -> Result<i64> {
        store::size(&self.conn)
    }
}

/// One stored episode as loaded, with its typed view to store if it was built afresh.
struct Loaded {
    kept: Kept,
    view: Option<store::View>,
}

/// Loads one stored episode: its snapshot, its changes, and its typed view.
///
/// The view kept in the store is used only if it was built at exactly the loaded
/// document's heads (equal heads, equal documents) and reads back; otherwise it is built
/// from the document, which is always the authority.
fn load(stored: &store::Stored, actor: ActorId) -> Result<Loaded> {
    let mut doc = EpisodeDoc::load_with_changes(&stored.snapshot, stored.changes.iter().map(Vec::as_slice), actor)
        .map_err(|e| Error::corrupt_by(format!("episode {}", stored.id), e))?;
    let heads = store::encode_heads(&doc.heads());
    let cached = stored.view.as_ref().filter(|v| v.heads == heads).and_then(|v| read_view(&v.bytes));
    let (mut episode, view) = match cached {
        Some(episode) => (episode, None),
        None => {
            let episode = doc.episode()?;
            let view = write_view(&episode).map(|bytes| store::View { heads, bytes });
            (episode, view)
        }
    };
    episode.team.clone_from(&stored.team);
    let mut kept = Kept::new(doc, episode, stored.changes.len());
    // The view above is stored without receipt times (they change without the document
    // changing); they are laid over it here. A row that does not read is left out: it
    // is only a time the server sent, and the store writes none such.
    kept.receipts = stored
        .receipts
        .iter()
        .filter_map(|(event, ms)| Some((event.parse().ok()?, Timestamp::from_millisecond(*ms).ok()?)))
        .collect();
    kept.show_receipts();
    Ok(Loaded { kept, view })
}

/// The view to store for a document and the episode it gives.
fn view_of(doc: &mut EpisodeDoc, episode: &Episode) -> Option<store::View> {
    write_view(episode).map(|bytes| store::View { heads: store::encode_heads(&doc.heads()), bytes })
}

/// An episode's typed view as deflated JSON. `None` if it would not read back as exactly
/// this episode, so that a stored view never differs from what its document gives.
///
/// An episode with records set aside as invalid is not kept: a later version of the app
/// might read those records, and only its document can say so.
fn write_view(episode: &Episode) -> Option<Vec<u8>> {
    use std::io::Write;
    if !episode.invalid_records.is_empty() {
        return None;
    }
    let json = serde_json::json!({"format": VIEW_FORMAT, "episode": episode.to_json()}).to_string();
    let mut deflate = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::fast());
    deflate.write_all(json.as_bytes()).ok()?;
    let bytes = deflate.finish().ok()?;
    (read_view(&bytes).as_ref() == Some(episode)).then_some(bytes)
}

/// Reads a view written by [`write_view`]; `None` if it does not read, is of another
/// format, or holds a record that is no longer valid.
fn read_view(bytes: &[u8]) -> Option<Episode> {
    use std::io::Read;
    let mut json = Vec::new();
    flate2::read::DeflateDecoder::new(bytes).take(MAX_VIEW_BYTES).read_to_end(&mut json).ok()?;
    let value: Value = serde_json::from_slice(&json).ok()?;
    if value.get("format")?.as_u64()? != VIEW_FORMAT {
        return None;
    }
    let episode = Episode::from_value(value.get("episode")?, Strictness::Lenient).ok()?;
    episode.invalid_records.is_empty().then_some(episode)
}

/// The Automerge actor of a device: its id's bytes, one actor per device, so that loading
/// a document never grows it with new actors.
fn actor_for(device: &str) -> Result<ActorId> {
    let id: uuid::Uuid = device.parse().map_err(|e| Error::corrupt_by("the device id is not a UUID", e))?;
    Ok(ActorId::from(id.as_bytes().as_slice()))
}
