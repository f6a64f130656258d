//! The sync protocol of `POST /v1/sync` (`shared/design.md`, "Sync"): the messages a
//! device and the server exchange, and the checked Automerge sync steps on an
//! [`EpisodeDoc`].
//!
//! One request carries many documents. A device sends, for each episode that changed
//! since the server last confirmed it, an Automerge sync message; an episode the server
//! has never confirmed goes whole. It also sends the server's cursor (the change sequence
//! number it has seen up to), so that an up-to-date device learns "nothing new" in one
//! round trip of a few dozen bytes, whatever its caseload. The response carries the
//! server's sync messages, the team's episodes the device does not have yet, the
//! authoritative actions of every episode that changed with the receipt times of its
//! records that the device lacks (never in the document), and the server's clock.
//!
//! The body is [postcard](https://docs.rs/postcard): compact, and decoded without
//! trusting any length it declares. Errors are JSON, as on every route.
//!
//! Sync states: [`automerge::sync::State::encode`] keeps only the shared heads, and both
//! sides persist that per (document, peer) and start each request from the decoded state,
//! so a lost message can never leave a stale in-flight flag behind (automerge #772).
//! Each side [primes](prime) a decoded state with what the other side is known to have,
//! so that one side's changes cross in one round trip rather than two.

use crate::model::{EpisodeId, EventId};
use automerge::ChangeHash;
use automerge::sync::{self, BloomFilter, Have, SyncDoc};
use serde::{Deserialize, Serialize};

use crate::document::{DocumentError, EpisodeDoc, MAX_DOCUMENT_BYTES};
use crate::pathway::{Code, Evaluation};

/// The protocol version this build speaks.
pub const PROTOCOL: u32 = 2;

/// The largest request body the server reads.
pub const MAX_REQUEST_BYTES: usize = 32 * 1024 * 1024;

/// The most documents (whole or as sync messages) one request may carry; a device with
/// more sends them over several requests.
pub const MAX_DOCUMENTS_PER_REQUEST: usize = 200;

/// The most changes one sync message may carry.
pub const MAX_CHANGES_PER_MESSAGE: usize = 5_000;

/// The media type of a sync body.
pub const CONTENT_TYPE: &str = "application/vnd.tether.sync+postcard";

/// What a device sends.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    pub protocol: u32,
    /// The server's change sequence number up to which the device has everything.
    pub cursor: u64,
    /// The device's clock when it built the request, in Unix milliseconds.
    pub device_time_ms: i64,
    pub documents: Vec<Document>,
}

/// What the server answers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Response {
    pub protocol: u32,
    /// The cursor to send next time (once this response is applied and stored).
    pub cursor: u64,
    /// The server's clock when it answered, in Unix milliseconds.
    pub server_time_ms: i64,
    pub documents: Vec<Document>,
    /// The server's evaluation of every episode that changed.
    pub actions: Vec<Authoritative>,
    /// The team that holds each of those episodes now (a transfer changes it; the
    /// document keeps the team it was opened in).
    pub teams: Vec<EpisodeTeam>,
    /// Episodes that have left the user's teams: send them whole, then they are dropped.
    pub leaving: Vec<EpisodeId>,
    /// Episodes the server holds everything of, and that the device must now drop.
    pub dropped: Vec<EpisodeId>,
    /// More is waiting: sync again.
    pub more: bool,
    /// Episodes of the request the server refused, each with its reason. Nothing of a
    /// refused episode was stored; everything else in the request was. The device holds
    /// each back, with its reason, until it could succeed (it changes, a user signs in,
    /// or the server's copy changes).
    pub refused: Vec<Refused>,
}

/// One episode of a request that the server refused, and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refused {
    pub episode: EpisodeId,
    pub reason: Refusal,
}

/// Why the server refused an episode of a sync request. Typed, so that a device can say
/// what to do about it; never holds a patient identifier or a record's text.
///
/// A new case changes the wire: add one only with a new [`PROTOCOL`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Refusal {
    /// No such episode among the user's teams' (another team's answers the same).
    NotFound,
    /// A record new to the server was made on another device than the one syncing it:
    /// only the device that made a record may bring it to the server.
    OtherDevice { record: EventId },
    /// A record new to the server (or, with no record, a new episode's opening) is by
    /// `by`, who has never signed in on the syncing device.
    NotSignedInHere { record: Option<EventId>, by: String },
    /// A record new to the server is over a limit of `episode::limits`: `field` names
    /// what (empty: the record as a whole), `limit` the bytes allowed.
    TooLarge { record: EventId, field: String, limit: u64 },
    /// The changes would take the episode past its budget
    /// (`episode::limits::EPISODE_BUDGET_BYTES`): `bytes` is what it would take.
    EpisodeFull { bytes: u64, budget: u64 },
    /// The document or message breaks the episode's rules (a record altered or deleted,
    /// the identity changed, an invalid record, bytes that are not a document); the
    /// message says which.
    Invalid { message: String },
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::NotFound => f.write_str("no such episode among your teams'"),
            Self::OtherDevice { record } => write!(
                f,
                "the record {record} was made on another device: it reaches the server from that device's own sync"
            ),
            Self::NotSignedInHere { record: Some(record), by } => {
                write!(
                    f,
                    "the record {record} is by {by}, who has not signed in on this device: sign in as {by} to send it"
                )
            }
            Self::NotSignedInHere { record: None, by } => {
                write!(
                    f,
                    "the episode was opened by {by}, who has not signed in on this device: sign in as {by} to send it"
                )
            }
            Self::TooLarge { record, field, limit } if field.is_empty() => {
                write!(f, "the record {record} is larger than the {limit} bytes a record may take")
            }
            Self::TooLarge { record, field, limit } => {
                write!(f, "the record {record}: `{field}` is longer than the {limit} bytes allowed")
            }
            Self::EpisodeFull { bytes, budget } => write!(
                f,
                "the episode would take {bytes} bytes, past its budget of {budget}: record this in a new episode"
            ),
            Self::Invalid { message } => f.write_str(message),
        }
    }
}

impl Refusal {
    /// The refusal a document error amounts to.
    pub fn from_document(error: &DocumentError) -> Self {
        match error {
            DocumentError::Full { bytes } => {
                Self::EpisodeFull { bytes: *bytes as u64, budget: crate::limits::EPISODE_BUDGET_BYTES as u64 }
            }
            DocumentError::TooLong(crate::limits::TooLong { record: Some(record), field, limit, .. }) => {
                Self::TooLarge { record: *record, field: field.clone(), limit: *limit as u64 }
            }
            other => Self::Invalid { message: other.to_string() },
        }
    }
}

/// One episode's part of a request or a response.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Document {
    pub episode: EpisodeId,
    pub body: Body,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Body {
    /// The whole document: an episode the other side has never had.
    Whole(Vec<u8>),
    /// An Automerge sync message.
    Message(Vec<u8>),
}

/// The server's word on one episode: its evaluation at `Response::server_time_ms`, and
/// the receipt times the device does not have yet.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Authoritative {
    pub episode: EpisodeId,
    /// The evaluation JSON of `shared/interfaces.md`, deflated (its keys repeat for
    /// every action: it shrinks about fivefold).
    pub evaluation: Vec<u8>,
    /// When the server first stored each record of the episode that the device lacks
    /// the time of: every record when the document crossed whole, else those stored
    /// after the device's cursor. The evaluation used them (`clock_skew`); the device
    /// keeps them beside its document, never in it, so that its own evaluation uses them
    /// too.
    pub received: Vec<Receipt>,
}

/// When the server first stored a record: its `received_at`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Receipt {
    pub event: EventId,
    /// Unix milliseconds.
    pub received_at_ms: i64,
}

/// The team that holds an episode now.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EpisodeTeam {
    pub episode: EpisodeId,
    pub team: String,
}

/// The most bytes an evaluation may inflate to.
const MAX_EVALUATION_BYTES: u64 = 4 * 1024 * 1024;

thread_local! {
    /// One deflate state per thread, reset for each evaluation. A new state is a few
    /// hundred KiB allocated and freed at once; made for every evaluation, its freeing
    /// around the long-lived evaluations and documents left the server's heap
    /// fragmented by about that much per cached document (BENCHMARKS.md, "Server
    /// memory").
    static DEFLATE: std::cell::RefCell<flate2::Compress> =
        std::cell::RefCell::new(flate2::Compress::new(flate2::Compression::default(), false));
}

/// `bytes` as raw deflate (what `flate2::write::DeflateEncoder` writes).
fn deflate(bytes: &[u8]) -> Vec<u8> {
    DEFLATE.with_borrow_mut(|state| {
        state.reset();
        let mut out = Vec::with_capacity(bytes.len() / 2 + 64);
        loop {
            let read = usize::try_from(state.total_in()).unwrap_or(usize::MAX).min(bytes.len());
            match state.compress_vec(&bytes[read..], &mut out, flate2::FlushCompress::Finish) {
                Ok(flate2::Status::StreamEnd) => break,
                // Out of room: more, and go on.
                Ok(_) => out.reserve(out.capacity().max(64)),
                // Compressing into a Vec with room does not fail; nothing is sent if it did.
                Err(_) => return Vec::new(),
            }
        }
        out.shrink_to_fit();
        out
    })
}

impl Authoritative {
    pub fn new(episode: EpisodeId, evaluation: &Evaluation) -> Self {
        // A title the code gives anyway is left out (the reader puts it back): titles are
        // most of an evaluation's bytes, and both sides share the rules.
        let mut value = serde_json::to_value(evaluation).unwrap_or_default();
        if let Some(actions) = value.get_mut("actions").and_then(|a| a.as_array_mut()) {
            for (json, action) in actions.iter_mut().zip(&evaluation.actions) {
                let Some(object) = json.as_object_mut() else { continue };
                if action.title == action.code.title() {
                    object.remove("title");
                }
                // As are the fields at their usual value.
                for field in ["late", "was_overdue", "resolved_by"] {
                    if matches!(object.get(field), Some(serde_json::Value::Bool(false) | serde_json::Value::Null)) {
                        object.remove(field);
                    }
                }
            }
        }
        let json = serde_json::to_vec(&value).unwrap_or_default();
        Self { episode, evaluation: deflate(&json), received: Vec::new() }
    }

    /// The evaluation, inflated (at most 4 MiB) and read.
    pub fn evaluation(&self) -> Result<Evaluation, DecodeError> {
        use std::io::Read;
        let mut json = Vec::new();
        flate2::read::DeflateDecoder::new(self.evaluation.as_slice())
            .take(MAX_EVALUATION_BYTES)
            .read_to_end(&mut json)
            .map_err(|e| DecodeError::Malformed(format!("the evaluation does not inflate: {e}")))?;
        let mut value: serde_json::Value = serde_json::from_slice(&json)
            .map_err(|e| DecodeError::Malformed(format!("the evaluation does not read: {e}")))?;
        if let Some(actions) = value.get_mut("actions").and_then(|a| a.as_array_mut()) {
            for action in actions {
                let code = action.get("code").cloned().and_then(|c| serde_json::from_value::<Code>(c).ok());
                let Some(object) = action.as_object_mut() else { continue };
                if let Some(code) = code
                    && !object.contains_key("title")
                {
                    object.insert("title".into(), code.title().into());
                }
                for (field, usual) in
                    [("late", false.into()), ("was_overdue", false.into()), ("resolved_by", None::<()>.into())]
                {
                    object.entry(field).or_insert(usual);
                }
            }
        }
        serde_json::from_value(value).map_err(|e| DecodeError::Malformed(format!("the evaluation does not read: {e}")))
    }
}

/// Why a body could not be read.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("the sync body is {0} bytes, more than the {MAX_REQUEST_BYTES} allowed")]
    TooLarge(usize),
    #[error("the sync body is not a sync message of this protocol: {0}")]
    Malformed(String),
    #[error("the sync body speaks protocol {0}; this build speaks {PROTOCOL}")]
    Protocol(u32),
    #[error("the sync body carries {0} documents, more than the {MAX_DOCUMENTS_PER_REQUEST} allowed")]
    TooManyDocuments(usize),
}

impl Request {
    pub fn encode(&self) -> Vec<u8> {
        postcard::to_allocvec(self).unwrap_or_default()
    }

    /// Reads a request, refusing oversized or malformed bodies and other protocols.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        if bytes.len() > MAX_REQUEST_BYTES {
            return Err(DecodeError::TooLarge(bytes.len()));
        }
        let request: Self = postcard::from_bytes(bytes).map_err(|e| DecodeError::Malformed(e.to_string()))?;
        if request.protocol != PROTOCOL {
            return Err(DecodeError::Protocol(request.protocol));
        }
        if request.documents.len() > MAX_DOCUMENTS_PER_REQUEST {
            return Err(DecodeError::TooManyDocuments(request.documents.len()));
        }
        Ok(request)
    }
}

impl Response {
    pub fn encode(&self) -> Vec<u8> {
        postcard::to_allocvec(self).unwrap_or_default()
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        if bytes.len() > MAX_REQUEST_BYTES * 4 {
            return Err(DecodeError::TooLarge(bytes.len()));
        }
        let response: Self = postcard::from_bytes(bytes).map_err(|e| DecodeError::Malformed(e.to_string()))?;
        if response.protocol != PROTOCOL {
            return Err(DecodeError::Protocol(response.protocol));
        }
        Ok(response)
    }
}

/// A sync state decoded from its stored bytes (none stored: a fresh state). Bytes that
/// do not decode give a fresh state: the cost is a longer sync, never a lost change.
///
/// The shared heads come out sorted and without repeats, as Automerge keeps them: it
/// asserts that order when it encodes them into a message (found by fuzzing: damaged
/// bytes that decode with the heads out of order made `generate_sync_message` panic
/// inside Automerge in a debug build).
pub fn decode_state(stored: Option<&[u8]>) -> sync::State {
    let mut state = stored.and_then(|bytes| sync::State::decode(bytes).ok()).unwrap_or_default();
    state.shared_heads.sort();
    state.shared_heads.dedup();
    state
}

/// Primes a freshly decoded state: the peer is taken to have exactly the shared heads,
/// so the next message sends every change since them at once, instead of first
/// exchanging summaries. A peer that has more just receives some changes twice.
pub fn prime(state: &mut sync::State) {
    let shared = state.shared_heads.clone();
    state.their_heads = Some(shared.clone());
    state.their_need = Some(Vec::new());
    state.their_have = Some(vec![Have { last_sync: shared, bloom: BloomFilter::default() }]);
}

/// Whether a sync message carries changes (or cannot be read: then it may).
pub fn carries_changes(message: &[u8]) -> bool {
    match std::panic::catch_unwind(|| sync::Message::decode(message)) {
        Ok(Ok(decoded)) => !decoded.changes.is_empty(),
        _ => true,
    }
}

/// Whether `doc` has changes the peer of `state` has not confirmed.
pub fn has_unconfirmed(doc: &mut EpisodeDoc, state: &sync::State) -> bool {
    sorted(&doc.heads()) != sorted(&state.shared_heads)
}

/// Whether `doc` holds exactly the changes the peer of `state` last said it holds, the
/// peer needs nothing, and both know it of the shared heads: a message now could only
/// tell the peer that we hold what it sent. Such a word can wait for the next session's
/// first request instead of costing a round trip of its own.
pub fn in_step(doc: &mut EpisodeDoc, state: &sync::State) -> bool {
    !has_unconfirmed(doc, state)
        && state.their_heads.as_ref().is_some_and(|theirs| sorted(theirs) == sorted(&state.shared_heads))
        && state.their_need.as_ref().is_none_or(Vec::is_empty)
}

fn sorted(heads: &[ChangeHash]) -> Vec<ChangeHash> {
    let mut heads = heads.to_vec();
    heads.sort();
    heads
}

/// Whether every one of `heads` is in `doc`.
pub fn has_all(doc: &mut EpisodeDoc, heads: &[ChangeHash]) -> bool {
    let am = doc.automerge_unchanged();
    heads.iter().all(|h| am.get_change_by_hash(h).is_some())
}

/// The most probes a peer's Bloom filter may ask for (Automerge uses 7).
const MAX_BLOOM_PROBES: u64 = 64;

/// Whether a peer's Bloom filter is one Automerge can check hashes against safely: empty,
/// or with at least one bit per entry, a bit array, and a modest number of probes.
/// Automerge trusts the filter's parameters: no bits divides by zero (found by fuzzing
/// `POST /v1/sync`), and a huge probe count allocates without bound, on the next message
/// it builds for that peer.
fn sane_bloom(bloom: &BloomFilter) -> bool {
    let bytes = bloom.to_bytes();
    if bytes.is_empty() {
        return true;
    }
    let mut rest = bytes.as_slice();
    let (Some(entries), Some(bits_per_entry), Some(probes)) = (leb128(&mut rest), leb128(&mut rest), leb128(&mut rest))
    else {
        return false;
    };
    entries > 0 && bits_per_entry > 0 && (1..=MAX_BLOOM_PROBES).contains(&probes) && !rest.is_empty()
}

/// Reads one unsigned LEB128 number of at most 32 bits from the front of `bytes`.
fn leb128(bytes: &mut &[u8]) -> Option<u64> {
    let mut value = 0u64;
    for (i, &byte) in bytes.iter().enumerate().take(5) {
        value |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            *bytes = &bytes[i + 1..];
            return (value <= u64::from(u32::MAX)).then_some(value);
        }
    }
    None
}

impl EpisodeDoc {
    /// The next sync message to the peer of `state`, if there is anything to say.
    pub fn generate_sync_message(&mut self, state: &mut sync::State) -> Option<Vec<u8>> {
        let am = self.automerge_unchanged();
        // Automerge asserts its own invariants while building a message; a state that
        // does not fit the document (a peer's claim we cannot check) must not take the
        // caller down, so a failure here sends nothing and the next sync starts afresh.
        // Encoding is inside the guard too: Automerge asserts its invariants there as well.
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            am.sync().generate_sync_message(state).map(sync::Message::encode)
        }))
        .ok()
        .flatten()
    }

    /// Applies a peer's sync message: to a copy first, checked like any merge (the
    /// identity and every record unchanged, every new record valid, the schema known),
    /// and kept only if the check passes. On a refusal neither the document nor `state`
    /// changes. Returns whether the document gained changes.
    pub fn receive_sync_message(&mut self, state: &mut sync::State, message: &[u8]) -> Result<bool, DocumentError> {
        if message.len() > MAX_DOCUMENT_BYTES {
            return Err(DocumentError::TooLarge(message.len()));
        }
        self.receive_trusted_sync_message(state, message)
    }

    /// [`EpisodeDoc::receive_sync_message`] from a peer this side trusts with any size (a
    /// device, from its own server: an episode the server took in before there was a
    /// budget may bring changes larger than the load limit). Checked all the same.
    pub fn receive_trusted_sync_message(
        &mut self,
        state: &mut sync::State,
        message: &[u8],
    ) -> Result<bool, DocumentError> {
        let decoded = std::panic::catch_unwind(|| sync::Message::decode(message))
            .map_err(|_| DocumentError::corrupt("the sync message could not be decoded"))?
            .map_err(|e| DocumentError::corrupt_at("not a sync message", e))?;
        for chunk in decoded.changes.iter() {
            crate::document::refuse_bombs(chunk)?;
        }
        if !decoded.have.iter().all(|have| sane_bloom(&have.bloom)) {
            return Err(DocumentError::corrupt("the sync message's Bloom filter is malformed"));
        }
        if decoded.changes.len() > MAX_CHANGES_PER_MESSAGE {
            return Err(DocumentError::Refused(format!(
                "the sync message carries {} changes, more than the {MAX_CHANGES_PER_MESSAGE} allowed",
                decoded.changes.len()
            )));
        }
        if decoded.changes.is_empty() {
            // No changes: only the state learns something, the document cannot change.
            let mut next_state = state.clone();
            let received = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                self.automerge_unchanged().sync().receive_sync_message(&mut next_state, decoded)
            }))
            .map_err(|_| DocumentError::corrupt("the sync message could not be applied"))?;
            received.map_err(|e| DocumentError::corrupt_at("the sync message could not be applied", e))?;
            *state = next_state;
            return Ok(false);
        }
        let before = self.heads();
        let mut copy = self.fork_checked();
        let mut next_state = state.clone();
        let received = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            copy.automerge().sync().receive_sync_message(&mut next_state, decoded)
        }))
        .map_err(|_| DocumentError::corrupt("the sync message could not be applied"))?;
        received.map_err(|e| DocumentError::corrupt_at("the sync message could not be applied", e))?;
        let changed = copy.heads() != before;
        if changed {
            let mut checked = copy.recheck()?;
            checked.read = Some(self.check_merge(&checked)?);
            *self = checked;
        }
        *state = next_state;
        Ok(changed)
    }
}
