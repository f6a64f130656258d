//! `POST /v1/sync`: the sync protocol's server side (messages in `episode::sync`).
//!
//! One request is one savepoint, in a transaction written with whatever other requests
//! arrived meanwhile (`commit`: group commit). Every incoming document is applied
//! to a copy and checked before anything of it is written: its identity, team and patient
//! unchanged; no record deleted or altered; every new record valid, within the limits of
//! `episode::limits`, made on the syncing device and by someone who has signed in on it;
//! the episode within its budget; the schema known. One that fails is refused **for that
//! episode**, with a typed reason (`episode::sync::Refusal`) in a successful answer:
//! nothing of it is stored, and the rest of the request is stored and answered as usual.
//! Only after the transaction has committed — on disk — is the response sent, so whatever
//! a device is told the server has, it has. A request is handled from a borrowed copy, so
//! that one whose episode another writer changed meanwhile can be handled again
//! (`commit`, docs/adr/0004-storage.md).

use std::collections::{BTreeMap, BTreeSet, HashSet};

use automerge::ActorId;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use episode::EpisodeId;
use episode::document::EpisodeDoc;
use episode::limits::{self, EPISODE_BUDGET_BYTES};
use episode::pathway::{self, Calendar};
use episode::sync::{self as protocol, Body, Document, Refusal};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::AppState;
use crate::accounts::{DeviceId, TeamId};
use crate::audit::{self, AuditAction, Via, Who};
use crate::auth::AuthUser;
use crate::episodes::{self, Evaluated, Stored, Working};
use crate::error::AppError;
use crate::store::{StoreError, Tx};

/// The most documents one response carries before it says `more`.
const MAX_RESPONSE_DOCUMENTS: usize = 100;

/// The bytes of documents after which a response says `more` rather than carry another
/// (a soft limit: one document always goes). Well under what a device reads
/// (`episode::sync::Response::decode`), whatever the size of the episodes.
const MAX_RESPONSE_BYTES: usize = 24 * 1024 * 1024;

pub(crate) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(sync)).layer(DefaultBodyLimit::max(protocol::MAX_REQUEST_BYTES))
}

/// The sync protocol: a device's documents and sync messages in, the server's out. Both
/// bodies are the protocol's postcard encoding (`episode::sync`), not JSON; only the
/// errors are JSON.
#[utoipa::path(
    post,
    path = "/v1/sync",
    tag = "sync",
    security(("bearer" = [])),
    request_body(
        content = Vec<u8>,
        content_type = "application/vnd.tether.sync+postcard",
        description = "A sync request (postcard)"
    ),
    responses(
        (status = 200, description = "A sync response (postcard)", content_type = "application/vnd.tether.sync+postcard", body = Vec<u8>),
        (status = 400, description = "Not a sync request of this protocol", body = crate::error::ErrorBody),
        crate::error::responses::Unauthorized,
        (status = 403, description = "The device has been revoked", body = crate::error::ErrorBody),
        (status = 413, description = "The body is too large", body = crate::error::ErrorBody),
        (status = 422, description = "A change would break an episode's invariants; nothing was stored", body = crate::error::ErrorBody),
        (status = 503, description = "Busy; try again", body = crate::error::ErrorBody),
    )
)]
async fn sync(State(state): State<AppState>, user: AuthUser, body: Bytes) -> Result<Response, AppError> {
    let started = std::time::Instant::now();
    let request = protocol::Request::decode(&body).map_err(|e| AppError::MalformedSync(e.to_string()))?;
    let documents_in = request.documents.len();
    let light = request.documents.iter().all(|d| matches!(&d.body, Body::Message(m) if !protocol::carries_changes(m)));
    let now = state.clock.now();
    // Written with whatever other requests are waiting, and answered once committed.
    let response = state.committer.submit(user, request, now, light).await?;
    tracing::info!(
        documents_in,
        documents_out = response.documents.len(),
        actions = response.actions.len(),
        more = response.more,
        ms = started.elapsed().as_millis() as u64,
        "synced"
    );
    let mut answer = response.encode().into_response();
    answer.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(protocol::CONTENT_TYPE));
    Ok(answer)
}

/// What a request did to one episode, to answer for it.
struct Touched {
    stored: Stored,
    state: automerge::sync::State,
    /// The request changed the episode (or brought it new).
    changed: bool,
    /// The request brought it new: stored whole already.
    inserted: bool,
    /// The changes to store (from `episodes::pending_changes`: within the budget).
    pending: Vec<u8>,
    /// The device sent it whole: it may lack any of its receipts.
    whole: bool,
    /// What is to be written of it, decided by [`decide_writes`].
    writes: Vec<Step>,
}

impl Touched {
    fn outcome(&self) -> Outcome {
        Outcome { changed: self.changed, inserted: self.inserted, form: Form::of_whole(self.whole) }
    }
}

/// What a device may add to an episode: who it is, and who has signed in on it (read
/// once a request, when a new record first needs it).
struct Syncer<'a> {
    device: &'a DeviceId,
    teams: &'a [TeamId],
    authors: Option<Vec<String>>,
}

impl Syncer<'_> {
    /// The usernames of everyone who has signed in on the syncing device.
    fn authors(&mut self, tx: &mut dyn Tx) -> Result<&[String], StoreError> {
        if self.authors.is_none() {
            self.authors = Some(crate::auth::store::device_users(tx, self.device)?);
        }
        Ok(self.authors.as_deref().unwrap_or_default())
    }
}

pub(crate) fn handle(
    tx: &mut dyn Tx,
    cache: &mut Working<'_>,
    user: &AuthUser,
    request: &protocol::Request,
    now: jiff::Timestamp,
) -> Result<(protocol::Response, Vec<Stored>), AppError> {
    let actor = episodes::server_actor(tx)?;
    let device = &user.device_id;
    let now_ms = now.as_millisecond();
    let cursor = i64::try_from(request.cursor).unwrap_or(i64::MAX);
    let mut touched: BTreeMap<EpisodeId, Touched> = BTreeMap::new();
    let mut refused: Vec<protocol::Refused> = Vec::new();
    let mut seen = BTreeSet::new();
    let mut used = Vec::new();
    let mut dropped = Vec::new();
    let who = Who::new(user, Via::Sync);
    let mut syncer = Syncer { device, teams: &user.teams, authors: None };

    // What the loop below asks of each document's episode, read in one go where that
    // saves round trips (PostgreSQL).
    let ids: Vec<EpisodeId> = request.documents.iter().map(|d| d.episode).collect();
    tx.prefetch(&ids, device)?;
    for Document { episode: id, body } in &request.documents {
        let id = *id;
        if !seen.insert(id) {
            return Err(AppError::SyncRefused {
                episode: id,
                message: "the request carries this episode twice".into(),
            });
        }
        let existing = load(tx, cache, id, &actor)?;
        let held = tx.sync_state(id, device)?;
        let standing = match &existing {
            None => Standing::Absent,
            Some(stored) if user.teams.iter().any(|t| t == stored.team()) => Standing::Member,
            // Held now, or handed over before (a repeat of a hand-over whose answer was
            // lost): asked only of another team's episode.
            Some(_) if held.is_some() || tx.dropped(id, device)? => Standing::Leaving,
            Some(_) => Standing::Hidden,
        };
        let form = Form::of(body);
        if let Admit::Refuse(reason) = admit(standing, form) {
            // Unchanged: it goes back to the cache.
            used.extend(existing);
            refused.push(protocol::Refused { episode: id, reason });
            continue;
        }
        // Everything is checked before anything of the episode is written: a refusal
        // stores nothing of it (its copy, changed in memory, is dropped) and the rest of
        // the request goes on.
        let accepted = match body {
            Body::Whole(bytes) => accept_whole(tx, &mut syncer, id, bytes, existing, &actor, now_ms)?,
            Body::Message(bytes) => accept_message(tx, &mut syncer, id, bytes, existing, held.as_deref())?,
        };
        let mut touched_now = match accepted {
            Ok(accepted) => accepted,
            Err(reason) => {
                tracing::info!(reason = reason_code(&reason), "sync refused an episode");
                refused.push(protocol::Refused { episode: id, reason });
                continue;
            }
        };
        let writes = decide_writes(standing, touched_now.outcome());
        // A hand-over is written at once and answered with nothing but `dropped`; the
        // team's episodes are written below, together.
        if standing == Standing::Leaving {
            apply_writes(tx, &who, &writes, &mut touched_now, device, now_ms)?;
            if writes.contains(&Step::RecordDrop) {
                dropped.push(id);
            }
            used.push(touched_now.stored);
            continue;
        }
        touched_now.writes = writes;
        touched.insert(id, touched_now);
    }

    // Store what changed. A new episode was stored whole on insert; anything merged into
    // an existing one is stored as its changes.
    for touched in touched.values_mut() {
        let writes = std::mem::take(&mut touched.writes);
        apply_writes(tx, &who, &writes, touched, device, now_ms)?;
    }

    // Everything visible that changed after the device's cursor, with room for a page.
    // The episodes this request brought are answered above already: they neither fill the
    // page nor come again (with their evaluations) in the next one.
    // The horizon is read before the episodes, and the answer covers `seq` up to it and
    // no further: so the cursor it gives never passes a change that a slower writer had
    // not committed when the episodes were read (docs/adr/0004-storage.md). On SQLite,
    // and for writers that number as they go, a transaction that has written holds the
    // counter, so every lower `seq` is committed; the sync writer on PostgreSQL numbers
    // its changes at commit, above this horizon (`commit::advance_cursors`).
    let horizon = tx.current_seq()?;
    let mut since = tx.changed_since(&user.teams, cursor, horizon, MAX_RESPONSE_DOCUMENTS + 1 + touched.len())?;
    // An episode of this request that another replica changed after it was loaded here
    // (PostgreSQL reads each statement afresh) is answered from the older copy: the
    // cursor must stop short of that change, or the device would not hear of it until
    // the episode changed again. One this request wrote cannot have moved on: its write
    // checked the version it loaded.
    let overtaken = since
        .iter()
        .filter(|(id, seq)| touched.get(id).is_some_and(|t| t.stored.seq() < *seq))
        .map(|&(_, seq)| seq)
        .min();
    since.retain(|(id, _)| !touched.contains_key(id));
    let mut more = since.len() > MAX_RESPONSE_DOCUMENTS;
    let page: Vec<_> = since.into_iter().take(MAX_RESPONSE_DOCUMENTS).collect();
    // Read after the horizon, as each would have been read below.
    let ids: Vec<EpisodeId> = page.iter().map(|&(id, _)| id).collect();
    tx.prefetch(&ids, device)?;

    let mut documents = Vec::new();
    let mut actions = Vec::new();
    let mut teams = Vec::new();
    for (id, touched) in &mut touched {
        if let Some(message) = touched.stored.with_doc(|doc| doc.generate_sync_message(&mut touched.state)) {
            if protocol::carries_changes(&message) {
                audit::log(tx, &who, now_ms, AuditAction::SyncRead, Some(*id), None)?;
            }
            documents.push(Document { episode: *id, body: Body::Message(message) });
        }
        tx.put_sync_state(*id, device, &touched.state.encode())?;
        if touched.changed || touched.stored.seq() > cursor {
            let since = receipts_since(Form::of_whole(touched.whole), cursor);
            let (evaluation, team) = authoritative(tx, &mut touched.stored, now, since)?;
            actions.push(evaluation);
            teams.push(team);
        }
    }
    // The page is cut short once the answer holds `MAX_RESPONSE_BYTES` of documents (a
    // device's first sync of a caseload of large episodes), but always takes one: the
    // cursor then stops at the last episode answered, and `more` asks for the rest.
    let mut answered = None;
    for (id, seq) in page {
        let bytes: usize = documents.iter().map(|d: &Document| body_len(&d.body)).sum();
        if bytes >= MAX_RESPONSE_BYTES {
            more = true;
            break;
        }
        answered = Some(seq);
        let Some(mut stored) = load(tx, cache, id, &actor)? else { continue };
        let mut state = protocol::decode_state(tx.sync_state(id, device)?.as_deref());
        let form = page_form(&state);
        if form == Form::Whole {
            // The device has never confirmed having it: it goes whole (again, if an
            // answer was lost), and the device counts as holding it from now on, so that
            // a transfer asks for what it records before it confirms.
            audit::log(tx, &who, now_ms, AuditAction::SyncRead, Some(id), None)?;
            documents.push(Document { episode: id, body: Body::Whole(stored.with_doc(|doc| doc.save_copy())) });
            tx.put_sync_state(id, device, &state.encode())?;
        } else {
            protocol::prime(&mut state);
            if let Some(message) = stored.with_doc(|doc| doc.generate_sync_message(&mut state)) {
                if protocol::carries_changes(&message) {
                    audit::log(tx, &who, now_ms, AuditAction::SyncRead, Some(id), None)?;
                }
                documents.push(Document { episode: id, body: Body::Message(message) });
            }
        }
        let (evaluation, team) = authoritative(tx, &mut stored, now, receipts_since(form, cursor))?;
        actions.push(evaluation);
        teams.push(team);
        used.push(stored);
    }

    let mut next_cursor = if more { answered.unwrap_or(cursor) } else { horizon };
    if let Some(seq) = overtaken {
        // Asked again at once, from before the change, the device is sent it.
        next_cursor = next_cursor.min(seq - 1);
        more = true;
    }

    let leaving = episodes::leaving(tx, device, &user.teams)?;
    dropped.extend(tx.drops_since(device, cursor, horizon)?);
    dropped.sort();
    dropped.dedup();
    used.extend(touched.into_values().map(|t| t.stored));
    let response = protocol::Response {
        protocol: protocol::PROTOCOL,
        cursor: u64::try_from(next_cursor).unwrap_or(0),
        // The evaluations are made at the whole second: so is the time they are given at.
        server_time_ms: now.as_second() * 1000,
        documents,
        actions,
        teams,
        leaving,
        dropped,
        more,
        refused,
    };
    Ok((response, used))
}

/// Where an episode a device sends stands between the server and that device. Decided
/// from the store's facts before anything is checked; what follows is decided from it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Standing {
    /// The server has no such episode: a whole copy may bring it.
    Absent,
    /// One of the user's teams holds it: changes are checked and stored.
    Member,
    /// Another team holds it, and this device held it before the transfer (or has
    /// handed it over already): it may still hand over what it recorded.
    Leaving,
    /// Another team's episode this device never held: "not found", as if it did not
    /// exist, so that ids of other teams' episodes cannot be probed.
    Hidden,
}

/// How a document crossed: whole, or as an Automerge sync message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Form {
    Whole,
    Message,
}

impl Form {
    fn of(body: &Body) -> Self {
        Self::of_whole(matches!(body, Body::Whole(_)))
    }

    fn of_whole(whole: bool) -> Self {
        if whole { Self::Whole } else { Self::Message }
    }
}

/// Whether a document is checked at all.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Admit {
    /// Apply it to a copy and check it.
    Check,
    /// Refuse it unread.
    Refuse(Refusal),
}

/// The first decision on a document: a message needs a copy on the server to apply to,
/// and another team's episode is not found unless the device is handing it over.
fn admit(standing: Standing, form: Form) -> Admit {
    match (standing, form) {
        (Standing::Hidden, _) | (Standing::Absent, Form::Message) => Admit::Refuse(Refusal::NotFound),
        (Standing::Absent, Form::Whole) | (Standing::Member | Standing::Leaving, _) => Admit::Check,
    }
}

/// What a document that passed its checks did to the server's copy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Outcome {
    /// The copy changed (or the episode is new).
    changed: bool,
    /// The episode is new, inserted whole already.
    inserted: bool,
    form: Form,
}

/// One write of an accepted document, applied by [`apply_writes`] in this order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Step {
    /// Store the changes it brought (`episodes::store_changes`; notes their receipts).
    StoreChanges,
    /// Note the receipts of a new episode's records (its document is stored already).
    NoteReceipts,
    /// The device handed everything over: record that it may drop the episode.
    RecordDrop,
    /// Append this action to the audit log.
    Audit(AuditAction),
}

/// What to write of an accepted document. A team's episode stores what changed; a
/// hand-over stores what changed, and only a whole copy proves the device handed over
/// everything, so only then may it drop the episode.
fn decide_writes(standing: Standing, outcome: Outcome) -> Vec<Step> {
    match standing {
        Standing::Leaving => {
            let mut steps = Vec::new();
            // Leaving means it existed: never inserted by this request.
            if outcome.changed {
                steps.extend([Step::StoreChanges, Step::Audit(AuditAction::SyncHandover)]);
            }
            if outcome.form == Form::Whole {
                steps.push(Step::RecordDrop);
            }
            steps
        }
        Standing::Absent | Standing::Member if outcome.inserted => {
            vec![Step::NoteReceipts, Step::Audit(AuditAction::SyncOpen)]
        }
        Standing::Absent | Standing::Member if outcome.changed => {
            vec![Step::StoreChanges, Step::Audit(AuditAction::SyncWrite)]
        }
        Standing::Absent | Standing::Member | Standing::Hidden => Vec::new(),
    }
}

/// How an episode of the page goes to the device: whole while the device has never
/// confirmed holding it (again, if an answer was lost), else as a message.
fn page_form(state: &automerge::sync::State) -> Form {
    Form::of_whole(state.shared_heads.is_empty())
}

/// The receipts to send beside an episode's evaluation: those noted after the device's
/// cursor (it holds the rest), or all of them when the document crossed whole or the
/// device has never synced (cursor 0), since it may then lack any.
fn receipts_since(form: Form, cursor: i64) -> Option<i64> {
    (form == Form::Message && cursor > 0).then_some(cursor)
}

/// Applies the writes [`decide_writes`] chose for one episode.
fn apply_writes(
    tx: &mut dyn Tx,
    who: &Who,
    writes: &[Step],
    touched: &mut Touched,
    device: &DeviceId,
    now_ms: i64,
) -> Result<(), AppError> {
    let id = touched.stored.id();
    for step in writes {
        match step {
            Step::StoreChanges => {
                episodes::store_changes(tx, &mut touched.stored, &touched.pending, device, now_ms)?;
            }
            Step::NoteReceipts => episodes::note_receipts(tx, &mut touched.stored, device, now_ms)?,
            Step::RecordDrop => episodes::record_drop(tx, id, device)?,
            Step::Audit(action) => audit::log(tx, who, now_ms, *action, Some(id), None)?,
        }
    }
    Ok(())
}

fn load(tx: &mut dyn Tx, cache: &mut Working<'_>, id: EpisodeId, actor: &ActorId) -> Result<Option<Stored>, AppError> {
    Ok(cache.take(tx, id, actor)?)
}

/// The server's word on an episode for the device: its evaluation now, and the receipts
/// noted after `since` (the device's cursor; `None` when the document crossed whole).
fn authoritative(
    tx: &mut dyn Tx,
    stored: &mut Stored,
    now: jiff::Timestamp,
    since: Option<i64>,
) -> Result<(protocol::Authoritative, protocol::EpisodeTeam), AppError> {
    let team = protocol::EpisodeTeam { episode: stored.id(), team: stored.team().to_owned() };
    let received = episodes::receipts_since(tx, stored.id(), since)?;
    // Evaluated at the whole second, so that every device asking within it shares the work.
    let second = now.as_second();
    if let Some(evaluated) = stored.evaluated()
        && evaluated.second == second
    {
        let evaluation = evaluated.wire.clone();
        return Ok((protocol::Authoritative { episode: stored.id(), evaluation, received }, team));
    }
    let at = jiff::Timestamp::from_second(second).unwrap_or(now);
    let episode = stored.view(tx)?;
    let evaluation = pathway::evaluate(episode, at, &Calendar::england_and_wales());
    // Encoding costs far more than evaluating: an unchanged evaluation keeps its bytes.
    let wire = match stored.take_evaluated() {
        Some(last) if last.evaluation == evaluation => last.wire,
        _ => protocol::Authoritative::new(stored.id(), &evaluation).evaluation,
    };
    stored.set_evaluated(Evaluated { second, evaluation, wire: wire.clone() });
    Ok((protocol::Authoritative { episode: stored.id(), evaluation: wire, received }, team))
}

/// A document brought whole: a new episode (checked whole, and inserted), or another
/// copy of one the server has (merged into it). `Ok(Err(_))`: refused, nothing written.
fn accept_whole(
    tx: &mut dyn Tx,
    syncer: &mut Syncer<'_>,
    id: EpisodeId,
    bytes: &[u8],
    existing: Option<Stored>,
    actor: &ActorId,
    now_ms: i64,
) -> Result<Result<Touched, Refusal>, AppError> {
    let mut theirs = match EpisodeDoc::load(bytes, actor.clone()) {
        Ok(doc) => doc,
        Err(error) => return Ok(Err(Refusal::from_document(&error))),
    };
    let their_episode = match theirs.episode() {
        Ok(episode) => episode,
        Err(error) => return Ok(Err(Refusal::from_document(&error))),
    };
    if their_episode.id != id {
        return Ok(Err(invalid("the document is of another episode")));
    }
    let their_heads = theirs.heads();
    let mut state = automerge::sync::State::new();
    state.shared_heads = their_heads;
    match existing {
        Some(mut stored) => {
            let before = Before::of(stored.doc());
            let merged = stored.with_doc(|doc| {
                let heads = doc.heads();
                doc.merge(&mut theirs).map(|()| doc.heads() != heads)
            });
            let changed = match merged {
                Ok(changed) => changed,
                Err(error) => return Ok(Err(Refusal::from_document(&error))),
            };
            let mut pending = Vec::new();
            if changed {
                if let Err(refusal) = check_new(tx, syncer, stored.doc(), Some(&before))? {
                    return Ok(Err(refusal));
                }
                pending = match episodes::pending_changes(&mut stored) {
                    Ok(pending) => pending,
                    Err(error) => return Ok(Err(Refusal::from_document(&error))),
                };
            }
            Ok(Ok(Touched { stored, state, changed, inserted: false, pending, whole: true, writes: Vec::new() }))
        }
        None => {
            if let Err(error) = theirs.check_new() {
                return Ok(Err(Refusal::from_document(&error)));
            }
            let Some(team) = syncer.teams.iter().find(|team| **team == *their_episode.team) else {
                return Ok(Err(invalid("the episode's team is not one of yours")));
            };
            if let Err(refusal) = check_new(tx, syncer, &theirs, None)? {
                return Ok(Err(refusal));
            }
            if bytes.len() > EPISODE_BUDGET_BYTES {
                return Ok(Err(Refusal::EpisodeFull {
                    bytes: bytes.len() as u64,
                    budget: EPISODE_BUDGET_BYTES as u64,
                }));
            }
            let seq = episodes::insert(tx, id, team, &mut theirs, now_ms / 1000)?;
            // The snapshot holds it all: later changes are saved from here.
            theirs.save_incremental();
            let stored = Stored::new(id, team.clone(), seq, theirs);
            Ok(Ok(Touched {
                stored,
                state,
                changed: true,
                inserted: true,
                pending: Vec::new(),
                whole: true,
                writes: Vec::new(),
            }))
        }
    }
}

/// An Automerge sync message for an episode the server has. `Ok(Err(_))`: refused,
/// nothing written.
fn accept_message(
    tx: &mut dyn Tx,
    syncer: &mut Syncer<'_>,
    id: EpisodeId,
    message: &[u8],
    existing: Option<Stored>,
    held: Option<&[u8]>,
) -> Result<Result<Touched, Refusal>, AppError> {
    let Some(mut stored) = existing else { return Ok(Err(Refusal::NotFound)) };
    debug_assert_eq!(stored.id(), id);
    let mut state = protocol::decode_state(held);
    let before = Before::of(stored.doc());
    let changed = match stored.with_doc(|doc| doc.receive_sync_message(&mut state, message)) {
        Ok(changed) => changed,
        Err(error) => return Ok(Err(Refusal::from_document(&error))),
    };
    let mut pending = Vec::new();
    if changed {
        if let Err(refusal) = check_new(tx, syncer, stored.doc(), Some(&before))? {
            return Ok(Err(refusal));
        }
        pending = match episodes::pending_changes(&mut stored) {
            Ok(pending) => pending,
            Err(error) => return Ok(Err(Refusal::from_document(&error))),
        };
    }
    Ok(Ok(Touched { stored, state, changed, inserted: false, pending, whole: false, writes: Vec::new() }))
}

/// What an episode held before a device's changes: which records, and how long a plan.
struct Before {
    records: HashSet<String>,
    plan_bytes: usize,
}

impl Before {
    fn of(doc: &EpisodeDoc) -> Self {
        Self { records: doc.record_keys(), plan_bytes: doc.plan_text().map_or(0, |p| p.len()) }
    }
}

/// Checks what a device adds to an episode (`before`: what the server held; `None`: the
/// episode is new): every record new to the server was made on the syncing device, by
/// someone who has signed in on it, within the limits; so is a new episode's opening;
/// and the plan stays within its limit. Records the server has already are not checked
/// again: an episode received from the server, merged from a peer or handed over carries
/// them legitimately.
fn check_new(
    tx: &mut dyn Tx,
    syncer: &mut Syncer<'_>,
    doc: &EpisodeDoc,
    before: Option<&Before>,
) -> Result<Result<(), Refusal>, AppError> {
    let episode = match doc.episode() {
        Ok(episode) => episode,
        Err(error) => return Ok(Err(Refusal::from_document(&error))),
    };
    let device = syncer.device;
    let authors = syncer.authors(tx)?;
    for event in &episode.events {
        if before.is_some_and(|b| b.records.contains(&event.id.to_string())) {
            continue;
        }
        if event.device != device.as_str() {
            return Ok(Err(Refusal::OtherDevice { record: event.id }));
        }
        if !authors.contains(&event.by) {
            return Ok(Err(Refusal::NotSignedInHere { record: Some(event.id), by: event.by.clone() }));
        }
        if let Err(too_long) = limits::check_record(event) {
            return Ok(Err(Refusal::from_document(&too_long.into())));
        }
    }
    if before.is_none() {
        if !authors.contains(&episode.opened_by) {
            return Ok(Err(Refusal::NotSignedInHere { record: None, by: episode.opened_by.clone() }));
        }
        for (field, text) in
            [("patient_ref", episode.patient_ref.as_str()), ("team", &episode.team), ("opened_by", &episode.opened_by)]
        {
            if let Err(too_long) = limits::check_name(field, text) {
                return Ok(Err(invalid(&too_long.to_string())));
            }
        }
    }
    let plan_grew = before.is_none_or(|b| episode.plan.len() > b.plan_bytes);
    if plan_grew && let Err(too_long) = limits::check_plan(&episode.plan) {
        return Ok(Err(invalid(&too_long.to_string())));
    }
    Ok(Ok(()))
}

fn invalid(message: &str) -> Refusal {
    Refusal::Invalid { message: message.into() }
}

/// A refusal's kind, for the log (never its message, which names records and people).
fn reason_code(reason: &Refusal) -> &'static str {
    match reason {
        Refusal::NotFound => "not_found",
        Refusal::OtherDevice { .. } => "other_device",
        Refusal::NotSignedInHere { .. } => "not_signed_in_here",
        Refusal::TooLarge { .. } => "too_large",
        Refusal::EpisodeFull { .. } => "episode_full",
        Refusal::Invalid { .. } => "invalid",
    }
}

fn body_len(body: &Body) -> usize {
    match body {
        Body::Whole(bytes) | Body::Message(bytes) => bytes.len(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome(changed: bool, inserted: bool, form: Form) -> Outcome {
        Outcome { changed, inserted, form }
    }

    #[test]
    fn another_teams_episode_is_not_found_unless_the_device_is_handing_it_over() {
        for form in [Form::Whole, Form::Message] {
            assert_eq!(admit(Standing::Hidden, form), Admit::Refuse(Refusal::NotFound));
            assert_eq!(admit(Standing::Leaving, form), Admit::Check);
            assert_eq!(admit(Standing::Member, form), Admit::Check);
        }
    }

    #[test]
    fn only_a_whole_copy_can_bring_a_new_episode() {
        assert_eq!(admit(Standing::Absent, Form::Whole), Admit::Check);
        assert_eq!(admit(Standing::Absent, Form::Message), Admit::Refuse(Refusal::NotFound));
    }

    #[test]
    fn a_new_episode_notes_its_receipts_and_is_audited_as_opened() {
        let writes = decide_writes(Standing::Absent, outcome(true, true, Form::Whole));
        assert_eq!(writes, [Step::NoteReceipts, Step::Audit(AuditAction::SyncOpen)]);
    }

    #[test]
    fn a_teams_episode_stores_its_changes_only_when_it_changed() {
        for form in [Form::Whole, Form::Message] {
            let changed = decide_writes(Standing::Member, outcome(true, false, form));
            assert_eq!(changed, [Step::StoreChanges, Step::Audit(AuditAction::SyncWrite)]);
            assert_eq!(decide_writes(Standing::Member, outcome(false, false, form)), []);
        }
    }

    #[test]
    fn only_a_whole_hand_over_lets_the_device_drop_the_episode() {
        let whole = decide_writes(Standing::Leaving, outcome(true, false, Form::Whole));
        assert_eq!(whole, [Step::StoreChanges, Step::Audit(AuditAction::SyncHandover), Step::RecordDrop]);
        // A repeat of a hand-over whose answer was lost changes nothing, and drops again.
        assert_eq!(decide_writes(Standing::Leaving, outcome(false, false, Form::Whole)), [Step::RecordDrop]);
        // A message may not carry everything: the episode stays on the device.
        let message = decide_writes(Standing::Leaving, outcome(true, false, Form::Message));
        assert_eq!(message, [Step::StoreChanges, Step::Audit(AuditAction::SyncHandover)]);
    }

    #[test]
    fn an_episode_the_device_never_confirmed_goes_whole() {
        let mut state = automerge::sync::State::new();
        assert_eq!(page_form(&state), Form::Whole);
        state.shared_heads = vec![automerge::ChangeHash([7; 32])];
        assert_eq!(page_form(&state), Form::Message);
    }

    #[test]
    fn receipts_go_whole_unless_a_message_crossed_after_a_cursor() {
        assert_eq!(receipts_since(Form::Message, 42), Some(42));
        assert_eq!(receipts_since(Form::Whole, 42), None);
        assert_eq!(receipts_since(Form::Message, 0), None);
    }
}
