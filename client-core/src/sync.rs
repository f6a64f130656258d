//! The sync engine, sans-IO: [`Core::sync_request`] builds a request body,
//! [`Core::apply_sync_response`] applies the server's answer, and the host repeats until
//! there is nothing left to say. The host carries the bytes with its own HTTP stack
//! (OkHttp, URLSession); `http` does it with ureq for the command line and the tests.
//!
//! What crosses is described in `episode::sync`. On this side:
//!
//! - A response is applied in one transaction (documents, sync states, the server's
//!   actions and receipt times, the cursor), so a crash leaves the store before or after
//!   it, never between. Receipt times are kept beside the documents, and the typed views
//!   show them, so that the device's own evaluation flags `clock_skew` as the server's.
//!   A lost response costs a repeat, never a record: the device's changes stay until the
//!   server confirms them, and a repeat changes nothing twice.
//! - Sync states persist as their shared heads only, and each session starts from them
//!   (primed: the server is taken to have exactly those heads), so a message lost in
//!   flight can never stall a later sync.
//! - An episode the server refuses (named in the answer's `refused`, with a typed
//!   `episode::sync::Refusal`) is held back with the reason, kept whole on the device, and
//!   not sent again until it could succeed: it changes, a user signs in on the device (a
//!   record by them was waiting), or the server's copy changes (another device synced
//!   the records it was waiting for). Nothing else in the sync waits for it.
//! - An episode that left the user's teams goes to the server whole, and is dropped only
//!   when the server confirms it holds every change the device sent.
//! - When the server's changes are applied and nothing else is left to say of an episode,
//!   the word that the device now holds them does not cost a round trip of its own: the
//!   episode is marked as owed (in the same transaction), and the next session's first
//!   request says it, with whatever the device recorded since. Until then the server
//!   sends at worst some changes twice, never too few.

use std::collections::{BTreeSet, HashMap, HashSet};

use automerge::ChangeHash;
use automerge::sync::State;
use episode::EpisodeId;
use episode::document::EpisodeDoc;
use episode::sync::{self as protocol, Body, Document, Refusal};
use jiff::Timestamp;
use serde::Serialize;

use crate::error::{Error, Result};
use crate::store::encode_heads;
use crate::{COMPACT_AFTER, Core, Kept, store};

/// The most round trips one session makes before it stops (and the next one goes on).
const MAX_ROUNDS: usize = 32;

const CURSOR: &str = "sync.cursor";
const CLOCK_OFFSET: &str = "sync.clock_offset_ms";

/// One sync session: the states of this session's exchanges and what it has learnt.
#[derive(Debug, Default)]
pub struct SyncSession {
    states: HashMap<EpisodeId, State>,
    /// The heads of each episode sent whole in this session.
    sent_whole: HashMap<EpisodeId, Vec<ChangeHash>>,
    leaving: BTreeSet<EpisodeId>,
    /// Episodes whose latest changes from the server the server does not know we hold.
    owed: HashSet<EpisodeId>,
    /// Episodes the last request carried a message for.
    in_request: HashSet<EpisodeId>,
    more: bool,
    rounds: usize,
    done: bool,
    pub summary: SyncSummary,
}

impl SyncSession {
    /// The last request was refused or lost before an answer: build the next one as if
    /// it had never been sent.
    pub fn retry(&mut self) {
        self.states.clear();
        self.sent_whole.clear();
        // What it said may not have arrived: whatever was owed still is.
        self.in_request.clear();
        self.rounds += 1;
    }
}

/// What a sync did, for the practitioner (and `tether-field sync`).
#[derive(Clone, Debug, Default, Serialize)]
pub struct SyncSummary {
    pub round_trips: usize,
    pub bytes_sent: usize,
    pub bytes_received: usize,
    /// Episodes this device sent changes or whole copies of.
    pub sent: usize,
    /// Episodes that gained changes from the server.
    pub received: usize,
    /// Episodes new to this device.
    pub new_episodes: usize,
    /// Episodes dropped after a transfer, once the server held all of them.
    pub dropped: usize,
    /// Episodes the server refused, with its reason; kept here, not sent until they change.
    pub held_back: Vec<HeldBack>,
    /// The server's clock minus the device's, in milliseconds.
    pub clock_offset_ms: i64,
    pub cursor: u64,
    /// Whether the session finished (nothing left to say) rather than stopping early.
    pub complete: bool,
}

/// An episode kept on the device and not sent, and why: the server's typed reason (or,
/// for a message from the server that did not check out here, `Refusal::Invalid`), and
/// the same as a sentence for the practitioner. Never a patient identifier.
#[derive(Clone, Debug, Serialize)]
pub struct HeldBack {
    pub episode: EpisodeId,
    pub reason: Refusal,
    pub message: String,
}

impl HeldBack {
    pub fn new(episode: EpisodeId, reason: Refusal) -> Self {
        let message = reason.to_string();
        Self { episode, reason, message }
    }
}

/// The server's actions for one episode, as of its last sync.
#[derive(Clone, Debug, Serialize)]
pub struct ServerActions {
    pub provisional: bool,
    #[serde(with = "episode::json::time")]
    pub evaluated_at: Timestamp,
    #[serde(flatten)]
    pub evaluation: episode::pathway::Evaluation,
}

impl Core {
    /// Starts a sync session.
    pub fn begin_sync(&self) -> SyncSession {
        SyncSession::default()
    }

    /// The next request body of `session`, or `None` when there is nothing left to say.
    /// The first call always gives a request (it asks the server what is new).
    pub fn sync_request(&mut self, session: &mut SyncSession, device_now: Timestamp) -> Result<Option<Vec<u8>>> {
        if session.done || session.rounds >= MAX_ROUNDS {
            session.summary.complete = session.done;
            return Ok(None);
        }
        let held: HashMap<String, Vec<u8>> =
            store::held_back(&self.conn)?.into_iter().map(|(id, heads, _)| (id, heads)).collect();
        let persisted: HashMap<String, (Vec<u8>, bool)> =
            store::sync_states(&self.conn)?.into_iter().map(|(id, state, owed)| (id, (state, owed))).collect();
        session.in_request.clear();
        let mut documents = Vec::new();
        let mut full = false;
        for (id, kept) in &mut self.episodes {
            if documents.len() >= protocol::MAX_DOCUMENTS_PER_REQUEST {
                full = true;
                break;
            }
            let key = id.to_string();
            let heads = kept.doc.heads();
            if held.get(&key).is_some_and(|h| *h == encode_heads(&heads)) {
                continue;
            }
            if session.leaving.contains(id) {
                if session.sent_whole.get(id) != Some(&heads) {
                    documents.push(Document { episode: *id, body: Body::Whole(kept.doc.save_copy()) });
                    session.sent_whole.insert(*id, heads);
                }
                continue;
            }
            if let Some(state) = session.states.get_mut(id) {
                // The server's changes are applied and nothing else needs saying: that we
                // hold them is said by the next session's first request.
                if session.owed.contains(id) && protocol::in_step(&mut kept.doc, state) {
                    continue;
                }
                if let Some(message) = kept.doc.generate_sync_message(state) {
                    documents.push(Document { episode: *id, body: Body::Message(message) });
                    session.in_request.insert(*id);
                }
                continue;
            }
            match persisted.get(&key) {
                // Never confirmed by the server: it goes whole (once a session).
                None => {
                    if !session.sent_whole.contains_key(id) {
                        documents.push(Document { episode: *id, body: Body::Whole(kept.doc.save_copy()) });
                        // Sent whole: nothing more to say until the server answers.
                        let mut state = State::new();
                        state.last_sent_heads.clone_from(&heads);
                        state.have_responded = true;
                        session.states.insert(*id, state);
                        session.sent_whole.insert(*id, heads);
                    }
                }
                Some((bytes, owed)) => {
                    let mut state = protocol::decode_state(Some(bytes));
                    if *owed || protocol::has_unconfirmed(&mut kept.doc, &state) {
                        protocol::prime(&mut state);
                        if let Some(message) = kept.doc.generate_sync_message(&mut state) {
                            documents.push(Document { episode: *id, body: Body::Message(message) });
                            session.in_request.insert(*id);
                        }
                        if *owed {
                            session.owed.insert(*id);
                        }
                        session.states.insert(*id, state);
                    }
                }
            }
        }
        if session.summary.round_trips > 0 && documents.is_empty() && !session.more && !full {
            session.done = true;
            session.summary.complete = true;
            return Ok(None);
        }
        // Episodes whose changes (or whole copy) go: not the word that we hold the server's.
        session.summary.sent += documents
            .iter()
            .filter(|d| match &d.body {
                Body::Whole(_) => true,
                Body::Message(message) => protocol::carries_changes(message),
            })
            .count();
        let request = protocol::Request {
            protocol: protocol::PROTOCOL,
            cursor: self.cursor()?,
            device_time_ms: device_now.as_millisecond(),
            documents,
        };
        let body = request.encode();
        session.summary.bytes_sent += body.len();
        // A full request leaves more to send: go on even if the server has nothing.
        session.more = full;
        Ok(Some(body))
    }

    /// Applies the server's response to the last request of `session`, in one
    /// transaction. `device_now` is the device's clock when the response arrived.
    pub fn apply_sync_response(&mut self, session: &mut SyncSession, body: &[u8], device_now: Timestamp) -> Result<()> {
        let response = protocol::Response::decode(body).map_err(|e| Error::Sync(e.to_string()))?;
        session.rounds += 1;
        session.summary.round_trips += 1;
        session.summary.bytes_received += body.len();
        let offset = response.server_time_ms - device_now.as_millisecond();

        let mut persisted: HashMap<String, (Vec<u8>, bool)> =
            store::sync_states(&self.conn)?.into_iter().map(|(id, state, owed)| (id, (state, owed))).collect();
        // The server has what the request said: nothing of it is owed any more.
        for id in session.in_request.drain() {
            session.owed.remove(&id);
        }
        // Apply to the documents in memory, collecting what to write.
        let mut writes: Vec<(EpisodeId, Write)> = Vec::new();
        for Document { episode: id, body } in response.documents {
            match body {
                Body::Whole(bytes) => {
                    // The server's own copy: it loads whatever its size (the server took it
                    // in, perhaps before a limit).
                    let mut theirs = EpisodeDoc::load_trusted(&bytes, self.actor.clone())?;
                    if theirs.episode()?.id != id {
                        return Err(Error::Sync(format!("the server sent another episode as {id}")));
                    }
                    if let Some(kept) = self.episodes.get_mut(&id) {
                        let before = kept.doc.heads();
                        kept.doc.merge(&mut theirs)?;
                        if kept.doc.heads() != before {
                            writes.push((id, Write::Changes(kept.doc.save_incremental())));
                            session.summary.received += 1;
                        }
                    } else {
                        let episode = theirs.episode()?;
                        let snapshot = theirs.save();
                        writes.push((id, Write::New(episode.team.clone(), snapshot)));
                        self.episodes.insert(id, Kept::new(theirs, episode, 0));
                        session.summary.new_episodes += 1;
                    }
                    // Tell the server we hold it: a message with our heads, next round.
                    session.states.insert(id, State::new());
                }
                Body::Message(message) => {
                    let Some(kept) = self.episodes.get_mut(&id) else { continue };
                    let state = match session.states.get_mut(&id) {
                        Some(state) => state,
                        None => {
                            let (stored, owed) = persisted.remove(&id.to_string()).unzip();
                            if owed == Some(true) {
                                session.owed.insert(id);
                            }
                            session.states.entry(id).or_insert(protocol::decode_state(stored.as_deref()))
                        }
                    };
                    match kept.doc.receive_trusted_sync_message(state, &message) {
                        Ok(true) => {
                            writes.push((id, Write::Changes(kept.doc.save_incremental())));
                            session.summary.received += 1;
                            if protocol::in_step(&mut kept.doc, state) {
                                session.owed.insert(id);
                            }
                        }
                        Ok(false) => {}
                        Err(error) => {
                            // The server's own message does not check out here: keep
                            // everything, say so, and stop talking about it this session.
                            session.states.remove(&id);
                            let reason = Refusal::Invalid { message: error.to_string() };
                            session.summary.held_back.push(HeldBack::new(id, reason));
                        }
                    }
                }
            }
        }
        let mut drops = Vec::new();
        for id in response.dropped {
            let Some(kept) = self.episodes.get_mut(&id) else { continue };
            // Drop only what the server has confirmed holding: the copy sent whole, with
            // nothing recorded since. Otherwise it goes whole again.
            if session.sent_whole.get(&id) == Some(&kept.doc.heads()) {
                drops.push(id);
            } else {
                session.leaving.insert(id);
            }
        }
        session.leaving.extend(response.leaving.iter().copied().filter(|id| self.episodes.contains_key(id)));

        // Episodes whose team changed (a transfer), for the store and the typed view.
        let moved: Vec<(EpisodeId, String)> = response
            .teams
            .iter()
            .filter(|t| self.episodes.get(&t.episode).is_some_and(|k| k.episode.team != t.team))
            .map(|t| (t.episode, t.team.clone()))
            .collect();
        // Episodes the server refused: held back, in this transaction, at the heads sent.
        // Any other episode the server sends news of is offered again (its copy changed:
        // what a held-back episode waited for may have arrived).
        let refused: Vec<(EpisodeId, Vec<u8>, Refusal)> = response
            .refused
            .iter()
            .filter_map(|r| {
                let kept = self.episodes.get_mut(&r.episode)?;
                Some((r.episode, encode_heads(&kept.doc.heads()), r.reason.clone()))
            })
            .collect();
        // A refused episode's state is not kept: the server holds nothing of what was sent.
        for (id, _, _) in &refused {
            session.states.remove(id);
        }
        let released: Vec<EpisodeId> = response
            .actions
            .iter()
            .map(|a| a.episode)
            .filter(|id| !response.refused.iter().any(|r| r.episode == *id))
            .collect();
        let mut evaluations = Vec::new();
        let mut receipts = Vec::new();
        for action in &response.actions {
            if self.episodes.contains_key(&action.episode) {
                let evaluation = action.evaluation().map_err(|e| Error::Sync(e.to_string()))?;
                let json = serde_json::to_string(&evaluation).map_err(|e| Error::Sync(e.to_string()))?;
                evaluations.push((action.episode, json));
                for receipt in &action.received {
                    let at = Timestamp::from_millisecond(receipt.received_at_ms)
                        .map_err(|_| Error::Sync("the server sent a receipt time out of range".into()))?;
                    receipts.push((action.episode, receipt.event, at));
                }
            }
        }
        let written = (|| -> Result<()> {
            let tx = self.conn.transaction()?;
            for (id, write) in &writes {
                match write {
                    Write::New(team, snapshot) => store::insert_episode(&tx, &id.to_string(), team, snapshot)?,
                    Write::Changes(bytes) => store::append_change(&tx, &id.to_string(), bytes)?,
                }
            }
            for (id, state) in &session.states {
                if self.episodes.contains_key(id) {
                    store::put_sync_state(&tx, &id.to_string(), &state.encode(), session.owed.contains(id))?;
                }
            }
            for (episode, evaluation) in &evaluations {
                store::put_server_actions(&tx, &episode.to_string(), response.server_time_ms, evaluation)?;
            }
            for id in &released {
                store::release_held_back(&tx, &id.to_string())?;
            }
            for (id, heads, reason) in &refused {
                let reason = serde_json::to_string(reason).map_err(|e| Error::Sync(e.to_string()))?;
                store::hold_back(&tx, &id.to_string(), heads, &reason)?;
            }
            for (episode, event, at) in &receipts {
                store::put_receipt(&tx, &episode.to_string(), &event.to_string(), at.as_millisecond())?;
            }
            for id in &drops {
                store::delete_episode(&tx, &id.to_string())?;
            }
            for (id, team) in &moved {
                store::set_team(&tx, &id.to_string(), team)?;
            }
            store::set_meta(&tx, CURSOR, &response.cursor.to_string())?;
            store::set_meta(&tx, CLOCK_OFFSET, &offset.to_string())?;
            tx.commit()?;
            Ok(())
        })();
        if let Err(error) = written {
            // Memory must never hold what the disk does not.
            let touched: BTreeSet<EpisodeId> = writes.iter().map(|(id, _)| *id).collect();
            for id in touched {
                self.reload(id)?;
            }
            return Err(error);
        }
        for (id, team) in &moved {
            if let Some(kept) = self.episodes.get_mut(id) {
                kept.episode.team.clone_from(team);
            }
        }
        let mut timed = BTreeSet::new();
        for (episode, event, at) in receipts {
            if let Some(kept) = self.episodes.get_mut(&episode) {
                kept.receipts.insert(event, at);
                timed.insert(episode);
            }
        }
        for id in timed {
            if let Some(kept) = self.episodes.get_mut(&id) {
                kept.show_receipts();
            }
        }
        for id in &drops {
            self.episodes.remove(id);
            session.states.remove(id);
            session.leaving.remove(id);
            session.sent_whole.remove(id);
            session.summary.dropped += 1;
        }
        let mut compact = Vec::new();
        for (id, write) in &writes {
            if let (Some(kept), Write::Changes(_)) = (self.episodes.get_mut(id), write) {
                kept.changes += 1;
                kept.reread()?;
                if kept.changes >= COMPACT_AFTER {
                    compact.push(*id);
                }
            }
        }
        for id in compact {
            self.compact(id)?;
        }
        for (id, _, reason) in refused {
            session.sent_whole.remove(&id);
            session.leaving.remove(&id);
            session.summary.held_back.push(HeldBack::new(id, reason));
        }
        session.more |= response.more || !session.leaving.is_empty();
        session.summary.clock_offset_ms = offset;
        session.summary.cursor = response.cursor;
        Ok(())
    }

    /// The server refused `episode` with an error status naming it (a server older than
    /// per-episode refusals): keep it, with the reason, and do not send it again until it
    /// could succeed. The session goes on without it.
    pub fn hold_back(&mut self, session: &mut SyncSession, episode: EpisodeId, reason: Refusal) -> Result<()> {
        let kept = self.episodes.get_mut(&episode).ok_or_else(|| Error::NotFound(episode.to_string()))?;
        let heads = encode_heads(&kept.doc.heads());
        let stored = serde_json::to_string(&reason).map_err(|e| Error::Sync(e.to_string()))?;
        let tx = self.conn.transaction()?;
        store::hold_back(&tx, &episode.to_string(), &heads, &stored)?;
        tx.commit()?;
        session.states.remove(&episode);
        session.sent_whole.remove(&episode);
        session.leaving.remove(&episode);
        session.summary.held_back.push(HeldBack::new(episode, reason));
        Ok(())
    }

    /// The episodes the server has refused and the device holds back, with its reasons.
    pub fn held_back(&self) -> Result<Vec<HeldBack>> {
        Ok(store::held_back(&self.conn)?
            .into_iter()
            .filter_map(|(id, _, stored)| {
                // A reason kept before they were typed is the server's sentence.
                let reason = serde_json::from_str(&stored).unwrap_or(Refusal::Invalid { message: stored });
                Some(HeldBack::new(id.parse().ok()?, reason))
            })
            .collect())
    }

    /// The server's cursor this device has everything up to.
    pub fn cursor(&self) -> Result<u64> {
        Ok(store::meta(&self.conn, CURSOR)?.and_then(|c| c.parse().ok()).unwrap_or(0))
    }

    /// The server's clock minus the device's, as of the last sync, in milliseconds.
    pub fn clock_offset_ms(&self) -> Result<i64> {
        Ok(store::meta(&self.conn, CLOCK_OFFSET)?.and_then(|c| c.parse().ok()).unwrap_or(0))
    }

    /// The device's clock corrected by the server's offset (the time the server would
    /// say it is).
    pub fn corrected_now(&self, device_now: Timestamp) -> Result<Timestamp> {
        let offset = jiff::SignedDuration::from_millis(self.clock_offset_ms()?);
        Ok(device_now.checked_add(offset).unwrap_or(device_now))
    }

    /// The server's actions for an episode, as of the last sync (`None` before any).
    pub fn server_actions(&self, id: EpisodeId) -> Result<Option<ServerActions>> {
        self.episode(id)?;
        let Some((at_ms, json)) = store::server_actions(&self.conn, &id.to_string())? else { return Ok(None) };
        let evaluation = serde_json::from_str(&json)
            .map_err(|e| Error::Corrupt(format!("the server's stored actions do not read: {e}")))?;
        let evaluated_at = Timestamp::from_millisecond(at_ms).map_err(|e| Error::Corrupt(e.to_string()))?;
        Ok(Some(ServerActions { provisional: false, evaluated_at, evaluation }))
    }

    /// Wipes the store (a revoked device): the file and its journal are deleted.
    pub fn wipe(self) -> Result<()> {
        let Self { conn, dir, .. } = self;
        conn.close().map_err(|(_, e)| Error::Storage(format!("cannot close the store to wipe it: {e}")))?;
        for suffix in ["", "-wal", "-shm"] {
            let path = dir.join(format!("{}{suffix}", crate::STORE_FILE));
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::Storage(format!("cannot wipe the store: {e}"))),
            }
        }
        Ok(())
    }
}

enum Write {
    New(String, Vec<u8>),
    Changes(Vec<u8>),
}
