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

use std::collections::{BTreeSet, HashMap};

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

/// One sync session: the Automerge states of this session's exchanges, where each
/// episode stands, and what the session has learnt.
#[derive(Debug, Default)]
pub struct SyncSession {
    states: HashMap<EpisodeId, State>,
    /// Where each episode that has said or heard something this session stands; an
    /// episode absent has said nothing yet (what persists of it is read from the store).
    standings: HashMap<EpisodeId, Standing>,
    /// The last request or answer left more to say: go on even if nothing else is due.
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
        self.standings = std::mem::take(&mut self.standings)
            .into_iter()
            .filter_map(|(id, standing)| Some((id, standing.retried()?)))
            .collect();
        self.rounds += 1;
    }

    fn standing(&self, id: &EpisodeId) -> Option<&Standing> {
        self.standings.get(id)
    }

    fn set(&mut self, id: EpisodeId, standing: Option<Standing>) {
        match standing {
            Some(standing) => self.standings.insert(id, standing),
            None => self.standings.remove(&id),
        };
    }

    /// Whether the word that the device holds the server's changes of `id` is owed.
    fn owed(&self, id: &EpisodeId) -> bool {
        matches!(self.standing(id), Some(Standing::Talking { owed: true }))
    }
}

/// Where one episode stands in a sync session: the state machine of the sync on this
/// side. The decisions below ([`Standing::to_say`], [`Standing::said`],
/// [`Standing::received`], …) are pure; `sync_request` and `apply_sync_response` gather
/// the facts, apply the decisions to the documents and the store, and keep the result.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Standing {
    /// Never confirmed by the server, and sent whole this session at these heads:
    /// nothing more is said until the server answers, and a `dropped` at these heads
    /// may drop it.
    Unconfirmed { heads: Vec<ChangeHash> },
    /// Talking by sync messages. `owed`: the server's changes are applied, the device is
    /// in step with it, and the word that it holds them waits for the next session's
    /// first request (persisted as `sync_states.owed`).
    Talking { owed: bool },
    /// A message went in the last request: its answer confirms what it said. `owed`:
    /// the word was owed before it went, and still is if the request is lost.
    InFlight { owed: bool },
    /// It left the user's teams: it goes whole (`sent`: the heads last sent whole this
    /// session, not sent again unless it changes) until the server confirms holding
    /// every change, and then it is dropped.
    Leaving { sent: Option<Vec<ChangeHash>> },
    /// The server's message for it did not check out here: kept whole, and nothing more
    /// said of it this session.
    HeldBack,
}

/// What the device knows of an episode when it builds a request.
#[derive(Clone, Copy, Debug)]
pub(crate) struct RequestFacts<'a> {
    /// Its current heads.
    pub(crate) heads: &'a [ChangeHash],
    /// The server refused it at exactly these heads (it waits for a change).
    pub(crate) held_back: bool,
    /// This session has an Automerge sync state for it.
    pub(crate) in_session: bool,
    /// The session's state says the device is in step with the server
    /// (`episode::sync::in_step`); false without one.
    pub(crate) in_step: bool,
    /// Its persisted sync state, if the server ever confirmed holding it.
    pub(crate) persisted: Option<Persisted>,
}

/// What persists of an episode's sync between sessions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Persisted {
    /// The word that the device holds the server's changes is owed.
    pub(crate) owed: bool,
    /// The device has changes the server has not confirmed holding.
    pub(crate) unconfirmed: bool,
}

/// What a request says of an episode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Say {
    Nothing,
    /// Its whole document.
    Whole,
    /// A message from this session's sync state (if Automerge has anything to say).
    Message,
    /// A message from the persisted state, primed: the first of this session.
    Resume,
}

/// What became of a sync message from the server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Received {
    /// It brought changes; `in_step`: the device now holds exactly what the server has.
    Changed {
        in_step: bool,
    },
    Unchanged,
    /// It does not check out here.
    Broken,
}

/// What a `dropped` from the server does to an episode.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum OnDropped {
    /// The server holds the very copy the device sent whole: delete it here.
    Drop,
    /// The device recorded more since (or never sent it whole): it goes whole again.
    Resend(Standing),
}

impl Standing {
    /// What to say of an episode in the next request. An episode held back at its
    /// current heads waits; one leaving goes whole once per change; one talking says
    /// what Automerge has to say, unless all it could say is the owed word; one never
    /// confirmed goes whole; one the server confirmed resumes only if it has something
    /// to say (changes of its own, or the owed word).
    pub(crate) fn to_say(standing: Option<&Self>, facts: &RequestFacts<'_>) -> Say {
        if facts.held_back {
            return Say::Nothing;
        }
        match standing {
            Some(Self::HeldBack) => Say::Nothing,
            Some(Self::Leaving { sent }) if sent.as_deref() == Some(facts.heads) => Say::Nothing,
            Some(Self::Leaving { .. }) => Say::Whole,
            Some(Self::Talking { owed: true }) if facts.in_step => Say::Nothing,
            _ if facts.in_session => Say::Message,
            _ => match facts.persisted {
                None => Say::Whole,
                Some(Persisted { owed, unconfirmed }) if owed || unconfirmed => Say::Resume,
                Some(_) => Say::Nothing,
            },
        }
    }

    /// Where an episode stands once the request says `say` of it; `went`: Automerge had
    /// a message to send.
    pub(crate) fn said(standing: Option<Self>, say: Say, facts: &RequestFacts<'_>, went: bool) -> Option<Self> {
        let heads = facts.heads.to_vec();
        match (say, standing) {
            (Say::Nothing, standing) => standing,
            (Say::Whole, Some(Self::Leaving { .. })) => Some(Self::Leaving { sent: Some(heads) }),
            (Say::Whole, _) => Some(Self::Unconfirmed { heads }),
            (Say::Message, standing) if went => Some(Self::InFlight { owed: owed(standing.as_ref()) }),
            (Say::Message, standing) => standing,
            (Say::Resume, _) => {
                let owed = facts.persisted.is_some_and(|p| p.owed);
                Some(if went { Self::InFlight { owed } } else { Self::Talking { owed } })
            }
        }
    }

    /// A new request is built while the last one had no answer: what it said may not
    /// have arrived, so whatever was owed still is.
    pub(crate) fn unanswered(self) -> Self {
        match self {
            Self::InFlight { owed } => Self::Talking { owed },
            other => other,
        }
    }

    /// The answer to the request arrived: the server has what the request said.
    pub(crate) fn answered(self) -> Self {
        match self {
            Self::InFlight { .. } => Self::Talking { owed: false },
            other => other,
        }
    }

    /// The last request was lost: this session's sync states are forgotten, so what
    /// stood on them is read from the store again; an episode leaving still leaves (and
    /// goes whole again), and one held back stays so.
    pub(crate) fn retried(self) -> Option<Self> {
        match self {
            Self::Leaving { .. } => Some(Self::Leaving { sent: None }),
            Self::HeldBack => Some(Self::HeldBack),
            Self::Unconfirmed { .. } | Self::Talking { .. } | Self::InFlight { .. } => None,
        }
    }

    /// The server sent the episode whole: the device answers with its heads next round.
    pub(crate) fn took_whole(standing: Option<Self>) -> Self {
        match standing {
            Some(leaving @ Self::Leaving { .. }) => leaving,
            Some(Self::Talking { owed }) => Self::Talking { owed },
            _ => Self::Talking { owed: false },
        }
    }

    /// The server's message was applied (`standing`: as before it, with the persisted
    /// owed word read in if the session had not yet spoken of the episode).
    pub(crate) fn received(standing: Option<Self>, received: Received) -> Option<Self> {
        match (received, standing) {
            (Received::Broken, _) => Some(Self::HeldBack),
            (Received::Changed { in_step: true }, Some(leaving @ Self::Leaving { .. })) => Some(leaving),
            (Received::Changed { in_step: true }, _) => Some(Self::Talking { owed: true }),
            (Received::Changed { in_step: false } | Received::Unchanged, standing) => standing,
        }
    }

    /// The server says the device may drop the episode: only if it holds the very copy
    /// sent whole, with nothing recorded since.
    pub(crate) fn dropped(standing: Option<&Self>, heads: &[ChangeHash]) -> OnDropped {
        match standing {
            Some(Self::Unconfirmed { heads: sent } | Self::Leaving { sent: Some(sent) }) if sent == heads => {
                OnDropped::Drop
            }
            _ => OnDropped::Resend(Self::Leaving { sent: None }),
        }
    }

    /// The server says the episode left the user's teams: it goes whole, unless that
    /// very copy went whole this session already.
    pub(crate) fn leaving(standing: Option<Self>) -> Self {
        match standing {
            Some(leaving @ Self::Leaving { .. }) => leaving,
            Some(Self::Unconfirmed { heads }) => Self::Leaving { sent: Some(heads) },
            _ => Self::Leaving { sent: None },
        }
    }
}

fn owed(standing: Option<&Standing>) -> bool {
    matches!(standing, Some(Standing::Talking { owed: true } | Standing::InFlight { owed: true }))
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
        session.standings = std::mem::take(&mut session.standings)
            .into_iter()
            .map(|(id, standing)| (id, standing.unanswered()))
            .collect();
        let mut documents = Vec::new();
        let mut full = false;
        for (id, kept) in &mut self.episodes {
            if documents.len() >= protocol::MAX_DOCUMENTS_PER_REQUEST {
                full = true;
                break;
            }
            let key = id.to_string();
            let heads = kept.doc.heads();
            let persisted = persisted.get(&key);
            let state = session.states.get(id);
            let facts = RequestFacts {
                heads: &heads,
                held_back: held.get(&key).is_some_and(|h| *h == encode_heads(&heads)),
                in_session: state.is_some(),
                in_step: state.is_some_and(|state| protocol::in_step(&mut kept.doc, state)),
                persisted: persisted.map(|(bytes, owed)| Persisted {
                    owed: *owed,
                    unconfirmed: protocol::has_unconfirmed(&mut kept.doc, &protocol::decode_state(Some(bytes))),
                }),
            };
            let standing = session.standings.remove(id);
            let say = Standing::to_say(standing.as_ref(), &facts);
            let message = match say {
                Say::Nothing => None,
                Say::Whole => {
                    documents.push(Document { episode: *id, body: Body::Whole(kept.doc.save_copy()) });
                    if !matches!(standing, Some(Standing::Leaving { .. })) {
                        // Sent whole: nothing more to say until the server answers.
                        let mut state = State::new();
                        state.last_sent_heads.clone_from(&heads);
                        state.have_responded = true;
                        session.states.insert(*id, state);
                    }
                    None
                }
                Say::Message => session.states.get_mut(id).and_then(|state| kept.doc.generate_sync_message(state)),
                Say::Resume => {
                    let mut state = protocol::decode_state(persisted.map(|(bytes, _)| bytes.as_slice()));
                    protocol::prime(&mut state);
                    let message = kept.doc.generate_sync_message(&mut state);
                    session.states.insert(*id, state);
                    message
                }
            };
            let went = message.is_some();
            if let Some(message) = message {
                documents.push(Document { episode: *id, body: Body::Message(message) });
            }
            session.set(*id, Standing::said(standing, say, &facts, went));
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
        let response = protocol::Response::decode(body).map_err(|e| Error::sync_by("it does not decode", e))?;
        session.rounds += 1;
        session.summary.round_trips += 1;
        session.summary.bytes_received += body.len();
        let offset = response.server_time_ms - device_now.as_millisecond();

        let mut persisted: HashMap<String, (Vec<u8>, bool)> =
            store::sync_states(&self.conn)?.into_iter().map(|(id, state, owed)| (id, (state, owed))).collect();
        // The server has what the request said: nothing of it is owed any more.
        session.standings = std::mem::take(&mut session.standings)
            .into_iter()
            .map(|(id, standing)| (id, standing.answered()))
            .collect();
        // Apply to the documents in memory, collecting what to write.
        let mut writes: Vec<(EpisodeId, Write)> = Vec::new();
        for Document { episode: id, body } in response.documents {
            match body {
                Body::Whole(bytes) => {
                    // The server's own copy: it loads whatever its size (the server took it
                    // in, perhaps before a limit).
                    let mut theirs = EpisodeDoc::load_trusted(&bytes, self.actor.clone())?;
                    if theirs.episode()?.id != id {
                        return Err(Error::sync(format!("the server sent another episode as {id}")));
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
                    let standing = session.standings.remove(&id);
                    session.set(id, Some(Standing::took_whole(standing)));
                }
                Body::Message(message) => {
                    let Some(kept) = self.episodes.get_mut(&id) else { continue };
                    if session.standing(&id) == Some(&Standing::HeldBack) {
                        continue;
                    }
                    let state = match session.states.get_mut(&id) {
                        Some(state) => state,
                        None => {
                            let (stored, owed) = persisted.remove(&id.to_string()).unzip();
                            if owed == Some(true) && session.standing(&id).is_none() {
                                session.standings.insert(id, Standing::Talking { owed: true });
                            }
                            session.states.entry(id).or_insert(protocol::decode_state(stored.as_deref()))
                        }
                    };
                    let received = match kept.doc.receive_trusted_sync_message(state, &message) {
                        Ok(true) => {
                            writes.push((id, Write::Changes(kept.doc.save_incremental())));
                            session.summary.received += 1;
                            Received::Changed { in_step: protocol::in_step(&mut kept.doc, state) }
                        }
                        Ok(false) => Received::Unchanged,
                        Err(error) => {
                            // The server's own message does not check out here: keep
                            // everything, say so, and stop talking about it this session.
                            session.states.remove(&id);
                            let reason = Refusal::Invalid { message: error.to_string() };
                            session.summary.held_back.push(HeldBack::new(id, reason));
                            Received::Broken
                        }
                    };
                    let standing = session.standings.remove(&id);
                    session.set(id, Standing::received(standing, received));
                }
            }
        }
        let mut drops = Vec::new();
        for id in response.dropped {
            let Some(kept) = self.episodes.get_mut(&id) else { continue };
            // Drop only what the server has confirmed holding: the copy sent whole, with
            // nothing recorded since. Otherwise it goes whole again.
            match Standing::dropped(session.standing(&id), &kept.doc.heads()) {
                OnDropped::Drop => drops.push(id),
                OnDropped::Resend(standing) => session.set(id, Some(standing)),
            }
        }
        for &id in response.leaving.iter().filter(|id| self.episodes.contains_key(id)) {
            if !drops.contains(&id) {
                let standing = session.standings.remove(&id);
                session.set(id, Some(Standing::leaving(standing)));
            }
        }

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
                let evaluation = action.evaluation().map_err(|e| Error::sync_by("an evaluation does not decode", e))?;
                let json = serde_json::to_string(&evaluation).map_err(Error::Encode)?;
                evaluations.push((action.episode, json));
                for receipt in &action.received {
                    let at = Timestamp::from_millisecond(receipt.received_at_ms)
                        .map_err(|e| Error::sync_by("the server sent a receipt time out of range", e))?;
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
                    store::put_sync_state(&tx, &id.to_string(), &state.encode(), session.owed(id))?;
                }
            }
            for (episode, evaluation) in &evaluations {
                store::put_server_actions(&tx, &episode.to_string(), response.server_time_ms, evaluation)?;
            }
            for id in &released {
                store::release_held_back(&tx, &id.to_string())?;
            }
            for (id, heads, reason) in &refused {
                let reason = serde_json::to_string(reason).map_err(Error::Encode)?;
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
            session.standings.remove(id);
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
            session.standings.remove(&id);
            session.summary.held_back.push(HeldBack::new(id, reason));
        }
        let leaving = session.standings.values().any(|s| matches!(s, Standing::Leaving { .. }));
        session.more |= response.more || leaving;
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
        let stored = serde_json::to_string(&reason).map_err(Error::Encode)?;
        let tx = self.conn.transaction()?;
        store::hold_back(&tx, &episode.to_string(), &heads, &stored)?;
        tx.commit()?;
        session.states.remove(&episode);
        session.standings.remove(&episode);
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
        let evaluation =
            serde_json::from_str(&json).map_err(|e| Error::corrupt_by("the server's stored actions do not read", e))?;
        let evaluated_at = Timestamp::from_millisecond(at_ms)
            .map_err(|e| Error::corrupt_by("a stored evaluation time is out of range", e))?;
        Ok(Some(ServerActions { provisional: false, evaluated_at, evaluation }))
    }

    /// Wipes the store (a revoked device): the file and its journal are deleted.
    pub fn wipe(self) -> Result<()> {
        let Self { conn, dir, .. } = self;
        conn.close().map_err(|(_, e)| Error::Storage(e))?;
        for suffix in ["", "-wal", "-shm"] {
            let path = dir.join(format!("{}{suffix}", crate::STORE_FILE));
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(source) => return Err(Error::Io { doing: "wipe the store", source }),
            }
        }
        Ok(())
    }
}

enum Write {
    New(String, Vec<u8>),
    Changes(Vec<u8>),
}

#[cfg(test)]
mod tests {
    use automerge::ChangeHash;

    use super::{OnDropped, Persisted, Received, RequestFacts, Say, Standing};

    const A: ChangeHash = ChangeHash([1; 32]);
    const B: ChangeHash = ChangeHash([2; 32]);

    fn facts(heads: &[ChangeHash]) -> RequestFacts<'_> {
        RequestFacts { heads, held_back: false, in_session: false, in_step: false, persisted: None }
    }

    #[test]
    fn an_episode_never_confirmed_goes_whole_once_a_session() {
        let facts = facts(&[A]);
        assert_eq!(Standing::to_say(None, &facts), Say::Whole);
        let standing = Standing::said(None, Say::Whole, &facts, false);
        assert_eq!(standing, Some(Standing::Unconfirmed { heads: vec![A] }));
        // Its sync state now says the copy went: Automerge has nothing more to say.
        let in_session = RequestFacts { in_session: true, ..facts };
        assert_eq!(Standing::to_say(standing.as_ref(), &in_session), Say::Message);
        assert_eq!(Standing::said(standing.clone(), Say::Message, &in_session, false), standing);
    }

    #[test]
    fn an_episode_held_back_at_its_heads_says_nothing_until_it_changes() {
        let held = RequestFacts { held_back: true, ..facts(&[A]) };
        assert_eq!(Standing::to_say(None, &held), Say::Nothing);
        assert_eq!(Standing::to_say(Some(&Standing::HeldBack), &facts(&[A])), Say::Nothing);
    }

    #[test]
    fn a_confirmed_episode_resumes_only_with_something_to_say() {
        let quiet = RequestFacts { persisted: Some(Persisted { owed: false, unconfirmed: false }), ..facts(&[A]) };
        assert_eq!(Standing::to_say(None, &quiet), Say::Nothing);
        let changed = RequestFacts { persisted: Some(Persisted { owed: false, unconfirmed: true }), ..facts(&[A]) };
        assert_eq!(Standing::to_say(None, &changed), Say::Resume);
        let owed = RequestFacts { persisted: Some(Persisted { owed: true, unconfirmed: false }), ..facts(&[A]) };
        assert_eq!(Standing::to_say(None, &owed), Say::Resume);
        assert_eq!(Standing::said(None, Say::Resume, &owed, true), Some(Standing::InFlight { owed: true }));
        assert_eq!(Standing::said(None, Say::Resume, &owed, false), Some(Standing::Talking { owed: true }));
    }

    #[test]
    fn the_owed_word_waits_while_the_device_is_in_step() {
        let in_step = RequestFacts { in_session: true, in_step: true, ..facts(&[A]) };
        assert_eq!(Standing::to_say(Some(&Standing::Talking { owed: true }), &in_step), Say::Nothing);
        // Something else to say carries the word with it.
        let moved_on = RequestFacts { in_step: false, ..in_step };
        assert_eq!(Standing::to_say(Some(&Standing::Talking { owed: true }), &moved_on), Say::Message);
        let sent = Standing::said(Some(Standing::Talking { owed: true }), Say::Message, &moved_on, true);
        assert_eq!(sent, Some(Standing::InFlight { owed: true }));
    }

    #[test]
    fn an_answer_settles_the_owed_word_and_a_lost_request_keeps_it() {
        assert_eq!(Standing::InFlight { owed: true }.answered(), Standing::Talking { owed: false });
        assert_eq!(Standing::InFlight { owed: true }.unanswered(), Standing::Talking { owed: true });
        // A retry forgets the session's states: the owed word is read from the store again.
        assert_eq!(Standing::InFlight { owed: true }.retried(), None);
        assert_eq!(Standing::HeldBack.retried(), Some(Standing::HeldBack));
        let leaving = Standing::Leaving { sent: Some(vec![A]) };
        assert_eq!(leaving.retried(), Some(Standing::Leaving { sent: None }));
    }

    #[test]
    fn the_servers_changes_in_step_make_the_word_owed() {
        let owed = Standing::received(None, Received::Changed { in_step: true });
        assert_eq!(owed, Some(Standing::Talking { owed: true }));
        let behind = Standing::received(Some(Standing::Talking { owed: false }), Received::Changed { in_step: false });
        assert_eq!(behind, Some(Standing::Talking { owed: false }));
        assert_eq!(Standing::received(None, Received::Unchanged), None);
    }

    #[test]
    fn a_message_that_does_not_check_out_holds_the_episode_back_for_the_session() {
        let standing = Standing::received(Some(Standing::Talking { owed: true }), Received::Broken);
        assert_eq!(standing, Some(Standing::HeldBack));
        let in_session = RequestFacts { in_session: true, ..facts(&[A]) };
        assert_eq!(Standing::to_say(standing.as_ref(), &in_session), Say::Nothing);
    }

    #[test]
    fn a_leaving_episode_goes_whole_once_per_change() {
        let leaving = Standing::leaving(Some(Standing::Talking { owed: true }));
        assert_eq!(leaving, Standing::Leaving { sent: None });
        assert_eq!(Standing::to_say(Some(&leaving), &facts(&[A])), Say::Whole);
        let sent = Standing::said(Some(leaving), Say::Whole, &facts(&[A]), false);
        assert_eq!(sent, Some(Standing::Leaving { sent: Some(vec![A]) }));
        assert_eq!(Standing::to_say(sent.as_ref(), &facts(&[A])), Say::Nothing);
        assert_eq!(Standing::to_say(sent.as_ref(), &facts(&[B])), Say::Whole);
        // A copy already sent whole this session counts as sent for the hand-over.
        let unconfirmed = Standing::Unconfirmed { heads: vec![A] };
        assert_eq!(Standing::leaving(Some(unconfirmed)), Standing::Leaving { sent: Some(vec![A]) });
    }

    #[test]
    fn an_episode_is_dropped_only_at_the_heads_it_went_whole_at() {
        let sent = Standing::Leaving { sent: Some(vec![A]) };
        assert_eq!(Standing::dropped(Some(&sent), &[A]), OnDropped::Drop);
        let recorded_since = Standing::dropped(Some(&sent), &[B]);
        assert_eq!(recorded_since, OnDropped::Resend(Standing::Leaving { sent: None }));
        assert_eq!(Standing::dropped(Some(&Standing::Unconfirmed { heads: vec![A] }), &[A]), OnDropped::Drop);
        let never_sent = Standing::dropped(Some(&Standing::Talking { owed: false }), &[A]);
        assert_eq!(never_sent, OnDropped::Resend(Standing::Leaving { sent: None }));
    }

    #[test]
    fn a_whole_copy_from_the_server_is_answered_by_message() {
        assert_eq!(Standing::took_whole(None), Standing::Talking { owed: false });
        let leaving = Standing::Leaving { sent: None };
        assert_eq!(Standing::took_whole(Some(leaving.clone())), leaving);
    }
}
