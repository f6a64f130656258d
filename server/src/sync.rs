//! `POST /v1/sync`: the sync protocol's server side (messages in `episode::sync`).
//!
//! One request is one SQLite savepoint, in a transaction written with whatever other
//! requests arrived meanwhile (`commit`: group commit). Every incoming document is applied to a copy
//! and checked (its identity, team and patient unchanged; no record deleted or altered;
//! every new record valid; the schema known) before anything is written; one that fails
//! refuses the whole request with a 4xx naming the episode, and nothing of it is stored.
//! Only after the transaction has committed — on disk, with `synchronous = FULL` — is the
//! response sent, so whatever a device is told the server has, it has.

use std::collections::BTreeMap;

use automerge::ActorId;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use episode::EpisodeId;
use episode::document::{DocumentError, EpisodeDoc};
use episode::pathway::{self, Calendar};
use episode::sync::{self as protocol, Body, Document};

use crate::AppState;
use crate::audit::{self, Via, Who};
use crate::auth::AuthUser;
use crate::episodes::{self, Cache, Evaluated, Stored};
use crate::error::AppError;
use crate::store::Tx;

/// The most documents one response carries before it says `more`.
const MAX_RESPONSE_DOCUMENTS: usize = 100;

pub(crate) fn router() -> Router<AppState> {
    Router::new().route("/v1/sync", post(sync)).layer(DefaultBodyLimit::max(protocol::MAX_REQUEST_BYTES))
}

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
}

pub(crate) fn handle(
    tx: &mut dyn Tx,
    cache: &mut Cache,
    user: &AuthUser,
    request: &protocol::Request,
    now: jiff::Timestamp,
) -> Result<(protocol::Response, Vec<Stored>), AppError> {
    let actor = episodes::server_actor(tx)?;
    let device = user.device_id.as_str();
    let now_ms = now.as_millisecond();
    let cursor = i64::try_from(request.cursor).unwrap_or(i64::MAX);
    let mut touched: BTreeMap<EpisodeId, Touched> = BTreeMap::new();
    let mut used = Vec::new();
    let mut dropped = Vec::new();
    let who = Who::new(user, Via::Sync);

    for Document { episode: id, body } in &request.documents {
        let id = *id;
        if touched.contains_key(&id) {
            return Err(refused(id, "the request carries this episode twice"));
        }
        let existing = load(tx, cache, id, &actor)?;
        // Another team's episode is "not found", unless this device held it before a
        // transfer: then it may still hand over what it has.
        let held = tx.sync_state(id, device)?;
        let visible = existing.as_ref().is_some_and(|s| user.teams.iter().any(|t| t == s.team()));
        // Held now, or handed over before (a repeat of a hand-over whose answer was lost).
        let leaving = existing.is_some() && !visible && (held.is_some() || tx.dropped(id, device)?);
        if existing.is_some() && !visible && !leaving {
            return Err(AppError::EpisodeNotFound(id));
        }
        match body {
            Body::Whole(bytes) => {
                let mut theirs = EpisodeDoc::load(bytes, actor.clone()).map_err(|e| refused_doc(id, e))?;
                let their_episode = theirs.episode().map_err(|e| refused_doc(id, e))?;
                if their_episode.id != id {
                    return Err(refused(id, "the document is of another episode"));
                }
                let their_heads = theirs.heads();
                let (stored, changed, inserted) = match existing {
                    Some(mut stored) => {
                        let changed = stored.with_doc(|doc| {
                            let before = doc.heads();
                            doc.merge(&mut theirs).map(|()| doc.heads() != before)
                        });
                        (stored, changed.map_err(|e| refused_doc(id, e))?, false)
                    }
                    None => {
                        theirs.check_new().map_err(|e| refused_doc(id, e))?;
                        if !user.teams.contains(&their_episode.team) {
                            return Err(refused(id, "the episode's team is not one of yours"));
                        }
                        let seq = episodes::insert(tx, id, &their_episode.team, &mut theirs, now_ms / 1000)?;
                        // The snapshot holds it all: later changes are saved from here.
                        theirs.save_incremental();
                        let stored = Stored::new(id, their_episode.team.clone(), seq, theirs);
                        (stored, true, true)
                    }
                };
                let mut state = automerge::sync::State::new();
                state.shared_heads = their_heads;
                if leaving {
                    // Everything the device held is here now: it may drop the episode.
                    // (Leaving means it existed: never inserted by this request.)
                    let mut stored = stored;
                    if changed {
                        episodes::store_changes(tx, &mut stored, device, now_ms)?;
                        audit::log(tx, &who, now_ms, "sync_handover", Some(id), None)?;
                    }
                    episodes::record_drop(tx, id, device)?;
                    used.push(stored);
                    dropped.push(id);
                    continue;
                }
                touched.insert(id, Touched { stored, state, changed, inserted });
            }
            Body::Message(bytes) => {
                let Some(mut stored) = existing else {
                    return Err(AppError::EpisodeNotFound(id));
                };
                let mut state = protocol::decode_state(held.as_deref());
                let changed = stored
                    .with_doc(|doc| doc.receive_sync_message(&mut state, bytes))
                    .map_err(|e| refused_doc(id, e))?;
                if leaving {
                    // Only a whole copy can prove the device handed everything over.
                    if changed {
                        episodes::store_changes(tx, &mut stored, device, now_ms)?;
                        audit::log(tx, &who, now_ms, "sync_handover", Some(id), None)?;
                    }
                    used.push(stored);
                    continue;
                }
                touched.insert(id, Touched { stored, state, changed, inserted: false });
            }
        }
    }

    // Store what changed. A new episode was stored whole on insert; anything merged into
    // an existing one is stored as its changes.
    for (id, touched) in &mut touched {
        if touched.inserted {
            // Stored whole on insert: only its receipts remain.
            episodes::note_receipts(tx, &mut touched.stored, device, now_ms)?;
            audit::log(tx, &who, now_ms, "sync_open", Some(*id), None)?;
        } else if touched.changed {
            episodes::store_changes(tx, &mut touched.stored, device, now_ms)?;
            audit::log(tx, &who, now_ms, "sync_write", Some(*id), None)?;
        }
    }

    // Everything visible that changed after the device's cursor, with room for a page.
    // The episodes this request brought are answered above already: they neither fill the
    // page nor come again (with their evaluations) in the next one.
    // The horizon is read before the episodes, and the answer covers `seq` up to it and
    // no further: so the cursor it gives never passes a change that a slower writer had
    // not committed when the episodes were read (docs/adr/0004-storage.md). If this
    // transaction has written, it holds the counter: every lower `seq` is committed.
    let horizon = tx.current_seq()?;
    let since: Vec<_> = tx
        .changed_since(&user.teams, cursor, horizon, MAX_RESPONSE_DOCUMENTS + 1 + touched.len())?
        .into_iter()
        .filter(|(id, _)| !touched.contains_key(id))
        .collect();
    let more = since.len() > MAX_RESPONSE_DOCUMENTS;
    let page: Vec<_> = since.into_iter().take(MAX_RESPONSE_DOCUMENTS).collect();
    let next_cursor = if more { page.last().map_or(cursor, |&(_, seq)| seq) } else { horizon };

    let mut documents = Vec::new();
    let mut actions = Vec::new();
    let mut teams = Vec::new();
    for (id, touched) in &mut touched {
        if let Some(message) = touched.stored.with_doc(|doc| doc.generate_sync_message(&mut touched.state)) {
            if protocol::carries_changes(&message) {
                audit::log(tx, &who, now_ms, "sync_read", Some(*id), None)?;
            }
            documents.push(Document { episode: *id, body: Body::Message(message) });
        }
        tx.put_sync_state(*id, device, &touched.state.encode())?;
        let changed_for_device = touched.changed || touched.stored.seq() > cursor;
        if changed_for_device {
            let (evaluation, team) = authoritative(tx, &mut touched.stored, now)?;
            actions.push(evaluation);
            teams.push(team);
        }
    }
    for (id, _) in page {
        let Some(mut stored) = load(tx, cache, id, &actor)? else { continue };
        let mut state = protocol::decode_state(tx.sync_state(id, device)?.as_deref());
        if state.shared_heads.is_empty() {
            // The device has never confirmed having it: it goes whole (again, if an
            // answer was lost), and the device counts as holding it from now on, so that
            // a transfer asks for what it records before it confirms.
            audit::log(tx, &who, now_ms, "sync_read", Some(id), None)?;
            documents.push(Document { episode: id, body: Body::Whole(stored.with_doc(|doc| doc.save())) });
            tx.put_sync_state(id, device, &state.encode())?;
        } else {
            protocol::prime(&mut state);
            if let Some(message) = stored.with_doc(|doc| doc.generate_sync_message(&mut state)) {
                if protocol::carries_changes(&message) {
                    audit::log(tx, &who, now_ms, "sync_read", Some(id), None)?;
                }
                documents.push(Document { episode: id, body: Body::Message(message) });
            }
        }
        let (evaluation, team) = authoritative(tx, &mut stored, now)?;
        actions.push(evaluation);
        teams.push(team);
        used.push(stored);
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
    };
    Ok((response, used))
}

fn load(tx: &mut dyn Tx, cache: &mut Cache, id: EpisodeId, actor: &ActorId) -> Result<Option<Stored>, AppError> {
    Ok(cache.take(tx, id, actor)?)
}

fn authoritative(
    tx: &mut dyn Tx,
    stored: &mut Stored,
    now: jiff::Timestamp,
) -> Result<(protocol::Authoritative, protocol::EpisodeTeam), AppError> {
    let team = protocol::EpisodeTeam { episode: stored.id(), team: stored.team().to_owned() };
    // Evaluated at the whole second, so that every device asking within it shares the work.
    let second = now.as_second();
    if let Some(evaluated) = stored.evaluated()
        && evaluated.second == second
    {
        return Ok((protocol::Authoritative { episode: stored.id(), evaluation: evaluated.wire.clone() }, team));
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
    Ok((protocol::Authoritative { episode: stored.id(), evaluation: wire }, team))
}

fn refused(episode: EpisodeId, message: &str) -> AppError {
    AppError::SyncRefused { episode, message: message.into() }
}

fn refused_doc(episode: EpisodeId, error: DocumentError) -> AppError {
    AppError::SyncRefused { episode, message: error.to_string() }
}
