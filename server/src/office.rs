//! The team base's and the manager's episode API: the caseload, one episode with its
//! conflicts, its merged timeline, recording an event, setting a fact, editing the plan,
//! and reconciliation.
//!
//! Every operation here is a plain function over the connection and the document cache,
//! called by the JSON routes below and by the dashboard alike, and every one writes its
//! audit entry in the same transaction as what it reads or writes. The office's writes
//! are the server's own Automerge changes: stored like a device's, with a new `seq`, so
//! devices receive them at their next sync. A record made here is by the signed-in
//! caller, on the server's own device (`episodes::server_device`), never on whatever
//! device the caller signed in from.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::extract::{FromRequestParts, Path, State};
use axum::http::StatusCode;
use axum::http::request::Parts;
use episode::document::DocumentError;
use episode::pathway::Evaluation;
use episode::{Episode, EpisodeId, Event, EventBody, EventId, FactField, FactValue};
use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::AppState;
use crate::accounts::{Role, TeamId};
use crate::alerts::Alerts;
use crate::audit::{self, AuditAction, Via, Who};
use crate::auth::AuthUser;
use crate::caseload::{self, Duplicate, Summary, Unfiled};
use crate::episodes::{self, Cache, Stored, Working};
use crate::error::AppError;
use crate::json::Json;
use crate::owners::{self, Owner};
use crate::store::{Conn, StoreError, Tx};

pub(crate) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_route))
        .routes(routes!(episode_route))
        .routes(routes!(timeline_route))
        .routes(routes!(fhir_route))
        .routes(routes!(record_route))
        .routes(routes!(fact_route))
        .routes(routes!(plan_route))
        .routes(routes!(reconcile_route))
}

/// A fact that devices set to different values at once.
#[derive(Clone, Debug, Serialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct Conflict {
    pub field: &'static str,
    /// The values set, each as the fact's JSON.
    pub values: Vec<Value>,
}

/// One episode as read: its typed view (every record with its receipt), its evaluation
/// at the moment of reading, and what the team base has to reconcile in it.
#[derive(Debug)]
pub struct Read {
    pub episode: Episode,
    pub evaluation: Evaluation,
    pub conflicts: Vec<Conflict>,
    pub duplicates: Vec<Duplicate>,
    pub unfiled: Vec<Unfiled>,
}

impl Read {
    /// The merged timeline: every record in the order it happened (then as received).
    pub fn timeline(&self) -> Vec<&Event> {
        let mut events: Vec<&Event> = self.episode.events.iter().collect();
        events.sort_by_key(|e| (e.at, e.received_at, e.id));
        events
    }
}

fn conflicts(episode: &Episode) -> Vec<Conflict> {
    episode.facts.conflicts().into_iter().map(|(field, values)| Conflict { field: field.as_str(), values }).collect()
}

/// Who is at the desk, and what they work with: the connection, the document cache, the
/// caller as the audit log names them, their teams, and the moment.
pub struct Desk<'a> {
    pub conn: &'a mut dyn Conn,
    pub cache: &'a Mutex<Cache>,
    pub who: &'a Who,
    pub teams: &'a [TeamId],
    pub now: Timestamp,
    /// Whom the evaluations made here alert.
    pub alerts: &'a Alerts,
}

impl std::fmt::Debug for Desk<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Desk").field("who", self.who).field("teams", &self.teams).field("now", &self.now).finish()
    }
}

impl<'a> Desk<'a> {
    pub fn new(
        conn: &'a mut dyn Conn,
        cache: &'a Mutex<Cache>,
        who: &'a Who,
        teams: &'a [TeamId],
        now: Timestamp,
        alerts: &'a Alerts,
    ) -> Self {
        Self { conn, cache, who, teams, now, alerts }
    }

    fn parts(&mut self) -> (&mut dyn Conn, &'a Mutex<Cache>, &'a Who, &'a [TeamId], Timestamp) {
        (&mut *self.conn, self.cache, self.who, self.teams, self.now)
    }
}

/// The caseload of `teams`, its summaries brought up to date first.
pub fn list(desk: &mut Desk<'_>) -> Result<Vec<Summary>, AppError> {
    let alerts = desk.alerts;
    let (conn, cache, who, teams, now) = desk.parts();
    caseload::refresh_all(conn, cache, alerts, Some(teams), now)?;
    let mut tx = conn.transaction()?;
    let summaries = caseload::summaries(&mut *tx, teams)?;
    // Listing shows each episode's patient reference: each is a read.
    for summary in &summaries {
        audit::log(&mut *tx, who, now.as_millisecond(), AuditAction::ListEpisode, Some(summary.id), None)?;
    }
    tx.commit()?;
    Ok(summaries)
}

/// Reads one episode of `teams`, noting the read as `action` in the audit log.
pub fn read(desk: &mut Desk<'_>, id: EpisodeId, action: AuditAction) -> Result<Read, AppError> {
    let (conn, cache, who, teams, now) = desk.parts();
    let mut cache = Working::new(cache);
    let mut tx = conn.transaction()?;
    let actor = episodes::server_actor(&mut *tx)?;
    let mut stored = caseload::visible(&mut *tx, &mut cache, &actor, teams, id)?;
    let read = (|| {
        let episode = stored.view(&mut *tx)?.clone();
        let evaluation = caseload::evaluate(&episode, now);
        audit::log(&mut *tx, who, now.as_millisecond(), action, Some(id), None)?;
        Ok::<_, AppError>(Read {
            conflicts: conflicts(&episode),
            duplicates: caseload::duplicates(&episode),
            unfiled: caseload::unfiled(&evaluation),
            episode,
            evaluation,
        })
    })();
    let read = read.and_then(|read| {
        tx.commit()?;
        Ok(read)
    });
    // Nothing was changed: the document goes back whatever happened.
    cache.put(stored);
    cache.commit();
    read
}

/// Who answers for each action of the episodes `ids` (of the desk's teams), by episode
/// and action id (`owners`): each episode's view and its evaluation at the desk's moment,
/// through the document cache. It names people for a page that lists these episodes,
/// whose `list` noted each in the audit log; an episode not among the teams' is left out.
pub fn owners(
    desk: &mut Desk<'_>,
    ids: &[EpisodeId],
) -> Result<HashMap<EpisodeId, HashMap<uuid::Uuid, Owner>>, AppError> {
    let (conn, cache, _, teams, now) = desk.parts();
    let mut cache = Working::new(cache);
    let mut tx = conn.transaction()?;
    let actor = episodes::server_actor(&mut *tx)?;
    let mut out = HashMap::with_capacity(ids.len());
    let mut taken = Vec::with_capacity(ids.len());
    let named = (|| {
        for id in ids {
            let mut stored = match caseload::visible(&mut *tx, &mut cache, &actor, teams, *id) {
                Ok(stored) => stored,
                Err(AppError::EpisodeNotFound(_)) => continue,
                Err(other) => return Err(other),
            };
            let episode = stored.view(&mut *tx);
            let made = episode.map_err(AppError::from).and_then(|episode| {
                let evaluation = caseload::evaluate(episode, now);
                let directory = owners::Directory::load(&mut *tx, episode)?;
                Ok(owners::owners(episode, &evaluation, &directory))
            });
            taken.push(stored);
            out.insert(*id, made?);
        }
        Ok::<_, AppError>(())
    })();
    // Nothing was changed: the documents go back whatever happened.
    for stored in taken {
        cache.put(stored);
    }
    cache.commit();
    named?;
    Ok(out)
}

/// A record made at the team base: the kind's own fields, and optionally when it
/// happened (else now).
#[derive(Debug, Clone)]
pub struct NewRecord {
    pub kind: String,
    pub at: Option<Timestamp>,
    pub fields: Map<String, Value>,
}

impl NewRecord {
    /// Reads the body of `POST /v1/episodes/{id}/events`: event JSON without id, by or
    /// device.
    pub fn from_json(value: Value) -> Result<Self, AppError> {
        let Value::Object(mut fields) = value else {
            return Err(AppError::InvalidBody(
                "the body must be a JSON object: a record without id, by or device".into(),
            ));
        };
        let kind = match fields.remove("kind") {
            Some(Value::String(kind)) => kind,
            Some(_) => return Err(AppError::InvalidBody("kind: must be a string".into())),
            None => return Err(AppError::InvalidBody("kind: required".into())),
        };
        let at = match fields.remove("at") {
            None | Some(Value::Null) => None,
            Some(Value::String(text)) => Some(
                episode::json::time::parse(&text).map_err(|message| AppError::InvalidBody(format!("at: {message}")))?,
            ),
            Some(_) => return Err(AppError::InvalidBody("at: must be an RFC 3339 time with an offset".into())),
        };
        Ok(Self { kind, at, fields })
    }
}

/// Records an event on an episode of `teams`, as `who`; returns its id.
pub fn record(desk: &mut Desk<'_>, id: EpisodeId, new: NewRecord) -> Result<EventId, AppError> {
    let (who, now) = (desk.who, desk.now);
    let event_id = EventId::from_uuid(uuid::Uuid::now_v7());
    write(desk, id, AuditAction::RecordEvent, Some(&event_id.to_string()), |stored, tx, device| {
        let at = new.at.unwrap_or(now);
        let event = Event::new_record(event_id, &new.kind, at, &who.username, device, new.fields.clone())
            .map_err(|e| AppError::InvalidBody(e.to_string()))?;
        event.check_recordable().map_err(|e| AppError::InvalidBody(format!("{e} (POST /v1/episodes/{{id}}/facts)")))?;
        if let EventBody::FiledToEpr(filed) = &event.body {
            let episode = stored.view(tx)?;
            if let Some(unknown) = filed.records.iter().find(|r| !episode.events.iter().any(|e| e.id == **r)) {
                return Err(AppError::InvalidBody(format!("records: {unknown} is no record of this episode")));
            }
        }
        stored.with_doc(|doc| doc.record(&event)).map_err(refused)
    })?;
    Ok(event_id)
}

/// Sets a fact on an episode of `teams` (resolving a conflict, if it had one), recording
/// the change; returns the `fact_changed` record's id.
pub fn set_fact(desk: &mut Desk<'_>, id: EpisodeId, field: &str, value: Value) -> Result<EventId, AppError> {
    let (who, now) = (desk.who, desk.now);
    let Some(field) = FactField::from_name(field) else {
        let names: Vec<_> = FactField::ALL.iter().map(|f| f.as_str()).collect();
        return Err(AppError::InvalidBody(format!("field: unknown fact, expected one of {}", names.join(", "))));
    };
    FactValue::from_json(field, &value).map_err(|m| AppError::InvalidBody(format!("value: {m}")))?;
    let mut fields = Map::new();
    fields.insert("field".into(), Value::String(field.as_str().into()));
    fields.insert("value".into(), value);
    let event_id = EventId::from_uuid(uuid::Uuid::now_v7());
    write(desk, id, AuditAction::SetFact, Some(field.as_str()), |stored, _, device| {
        let event = Event::new_record(event_id, "fact_changed", now, &who.username, device, fields.clone())
            .map_err(|e| AppError::InvalidBody(e.to_string()))?;
        stored.with_doc(|doc| doc.set_fact(&event)).map_err(refused)
    })?;
    Ok(event_id)
}

/// Replaces the joint plan's text (as edits, which merge with a device's).
pub fn set_plan(desk: &mut Desk<'_>, id: EpisodeId, text: &str) -> Result<(), AppError> {
    let now = desk.now;
    write(desk, id, AuditAction::EditPlan, None, |stored, _, _| {
        stored.with_doc(|doc| doc.set_plan(text, now)).map_err(refused)
    })
}

/// How often a change whose episode another writer changed meanwhile is made again.
const CONFLICT_TRIES: usize = 8;

/// Makes one change to an episode of `teams` as the server, and stores it — with the
/// receipt of any new record, the episode's summary and the audit entry — in one
/// transaction. `change` gets the server's own device name, which the records it makes
/// carry (their author is the caller; the audit entry names the caller's own device). A
/// change that is refused, would take the episode past its budget, or is not stored,
/// never reaches the cache. If another writer changed the episode meanwhile, the change
/// is made again on what is stored now.
fn write(
    desk: &mut Desk<'_>,
    id: EpisodeId,
    action: AuditAction,
    detail: Option<&str>,
    change: impl Fn(&mut Stored, &mut dyn Tx, &str) -> Result<(), AppError>,
) -> Result<(), AppError> {
    let alerts = desk.alerts;
    let (conn, shared, who, teams, now) = desk.parts();
    let mut tries = 0;
    loop {
        tries += 1;
        // The cache's lock is never held while this waits on the database: a sync
        // writer holding the episode's row may want it meanwhile.
        let mut cache = Working::new(shared);
        let written = (|| {
            let mut tx = conn.transaction()?;
            // The episode's row before anything else, on every try: a sync writer that
            // holds it takes the counter only when it commits, so a writer that took the
            // counter first and then waited for the row would deadlock with it. Held, it
            // also means no one else changes the episode before this commits.
            tx.lock_episode(id)?;
            let actor = episodes::server_actor(&mut *tx)?;
            let device = episodes::server_device(&mut *tx)?;
            let mut stored = caseload::visible(&mut *tx, &mut cache, &actor, teams, id)?;
            change(&mut stored, &mut *tx, &device)?;
            let bytes = episodes::pending_changes(&mut stored).map_err(refused)?;
            episodes::store_changes(&mut *tx, &mut stored, &bytes, &device, now.as_millisecond())?;
            caseload::summarize(&mut *tx, &mut stored, now, alerts)?;
            audit::log(&mut *tx, who, now.as_millisecond(), action, Some(id), detail)?;
            tx.commit()?;
            Ok::<_, AppError>(stored)
        })();
        match written {
            Ok(stored) => {
                cache.put(stored);
                cache.commit();
                return Ok(());
            }
            // The working set, and the document another writer moved on, are dropped.
            Err(AppError::Store(StoreError::Conflict(_))) if tries < CONFLICT_TRIES => {}
            Err(error) => return Err(error),
        }
    }
}

fn refused(error: DocumentError) -> AppError {
    match error {
        DocumentError::Invalid(e) => AppError::InvalidBody(e.to_string()),
        DocumentError::TooLong(e) => AppError::InvalidBody(e.to_string()),
        DocumentError::Full { bytes } => AppError::EpisodeFull { bytes },
        DocumentError::Refused(m) => AppError::InvalidBody(m),
        other => AppError::internal(other),
    }
}

/// What the team base has to reconcile across `teams`.
#[derive(Debug, Default, Serialize, utoipa::ToSchema)]
pub struct Reconcile {
    #[schema(value_type = Vec<Object>)]
    pub conflicts: Vec<Value>,
    #[schema(value_type = Vec<Object>)]
    pub duplicates: Vec<Value>,
    #[schema(value_type = Vec<Object>)]
    pub unfiled: Vec<Value>,
}

/// Conflicts to resolve, likely duplicates and records to file, across `teams`: only
/// the episodes whose summary has any are opened.
pub fn reconcile(desk: &mut Desk<'_>) -> Result<Reconcile, AppError> {
    let teams = desk.teams;
    caseload::refresh_all(desk.conn, desk.cache, desk.alerts, Some(teams), desk.now)?;
    let ids: Vec<EpisodeId> = caseload::summaries(desk.conn, teams)?
        .into_iter()
        .filter(|s| s.conflicts > 0 || s.duplicates > 0 || s.unfiled > 0)
        .map(|s| s.id)
        .collect();
    let mut out = Reconcile::default();
    for id in ids {
        let read = read(desk, id, AuditAction::Reconcile)?;
        let patient_ref = read.episode.patient_ref.as_str();
        for conflict in &read.conflicts {
            out.conflicts.push(
                json!({"episode": id, "patient_ref": patient_ref, "field": conflict.field, "values": conflict.values}),
            );
        }
        for duplicate in &read.duplicates {
            out.duplicates.push(json!({"episode": id, "patient_ref": patient_ref, "kind": duplicate.kind,
                                       "target_field": duplicate.target_field, "target": duplicate.target,
                                       "records": duplicate.records}));
        }
        for unfiled in &read.unfiled {
            let Some(event) = read.episode.events.iter().find(|e| e.id == unfiled.record) else { continue };
            out.unfiled.push(json!({"episode": id, "patient_ref": patient_ref, "record": event.id,
                                    "kind": event.body.kind(), "at": json_time(event.at), "by": event.by,
                                    "device": event.device, "received_at": event.received_at.map(json_time),
                                    "due": json_time(unfiled.due), "overdue": unfiled.overdue}));
        }
    }
    Ok(out)
}

/// What a reader of the audit log asks for: one episode's entries or the whole team's,
/// from where, and how many.
#[derive(Debug, Clone, Copy)]
pub struct AuditRequest {
    pub episode: Option<EpisodeId>,
    pub cursor: audit::Cursor,
    pub limit: usize,
}

/// A page of the audit log, and whether more follow in its order.
#[derive(Debug)]
pub struct AuditRead {
    pub entries: Vec<audit::Entry>,
    pub more: bool,
}

/// Reads a page of the audit log for a team manager or an admin (anyone else: 403): the
/// entries of their teams' episodes (an admin's also those of no episode), or of one of
/// those episodes (another answers 404, as one that does not exist). The reading is
/// itself an entry, `read_audit`, written after the page is read.
pub fn read_audit(desk: &mut Desk<'_>, role: Role, request: AuditRequest) -> Result<AuditRead, AppError> {
    if !audit::may_read(role) {
        return Err(AppError::Forbidden(audit::MAY_READ));
    }
    let (conn, _, who, teams, now) = desk.parts();
    let mut tx = conn.transaction()?;
    if let Some(id) = request.episode {
        match tx.team_of(id)? {
            Some((team, _)) if teams.contains(&team) => {}
            _ => return Err(AppError::EpisodeNotFound(id)),
        }
    }
    let scope = audit::Scope { teams, unscoped: role == Role::Admin, episode: request.episode };
    let mut entries = audit::page(&mut *tx, scope, request.cursor, request.limit.saturating_add(1))?;
    let more = entries.len() > request.limit;
    entries.truncate(request.limit);
    audit::log(&mut *tx, who, now.as_millisecond(), AuditAction::ReadAudit, request.episode, None)?;
    tx.commit()?;
    Ok(AuditRead { entries, more })
}

/// [`read_audit`] at the caller's desk.
pub async fn audit(
    state: &AppState,
    who: Who,
    role: Role,
    teams: Vec<TeamId>,
    request: AuditRequest,
) -> Result<AuditRead, AppError> {
    at_desk(state, who, teams, move |desk| read_audit(desk, role, request)).await
}

/// A time as the JSON everywhere shows it: RFC 3339 in UTC.
pub fn json_time(at: Timestamp) -> String {
    at.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

// The JSON routes.

/// The `{id}` of an episode route. A path that is not an episode id names no episode: it
/// answers 404, as any unknown episode does.
#[derive(Debug)]
pub struct EpisodePath(pub EpisodeId);

impl<S: Send + Sync> FromRequestParts<S> for EpisodePath {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match Path::<EpisodeId>::from_request_parts(parts, state).await {
            Ok(Path(id)) => Ok(Self(id)),
            Err(_) => Err(AppError::NotFound),
        }
    }
}

/// Runs `f` at the desk of the caller `who` (with `teams`), on the blocking pool, at the
/// clock's moment: what every route of the API and the dashboard does.
pub async fn at_desk<T: Send + 'static>(
    state: &AppState,
    who: Who,
    teams: Vec<TeamId>,
    f: impl FnOnce(&mut Desk<'_>) -> Result<T, AppError> + Send + 'static,
) -> Result<T, AppError> {
    let now = state.clock.now();
    let docs = Arc::clone(&state.docs);
    let alerts = Arc::clone(&state.alerts);
    state.db.call(move |conn| f(&mut Desk::new(conn, &docs, &who, &teams, now, &alerts))).await
}

/// An API caller's desk.
async fn api<T: Send + 'static>(
    state: &AppState,
    user: AuthUser,
    f: impl FnOnce(&mut Desk<'_>) -> Result<T, AppError> + Send + 'static,
) -> Result<T, AppError> {
    let who = Who::new(&user, Via::Api);
    at_desk(state, who, user.teams, f).await
}

/// The caseload of the caller's teams.
#[utoipa::path(
    get,
    path = "/v1/episodes",
    tag = "episodes",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Each episode's summary", body = Vec<Summary>),
        crate::error::responses::Unauthorized,
    )
)]
async fn list_route(State(state): State<AppState>, user: AuthUser) -> Result<axum::Json<Vec<Summary>>, AppError> {
    let summaries = api(&state, user, list).await?;
    Ok(axum::Json(summaries))
}

/// One episode: its facts, plan and records, and its conflicting facts.
#[utoipa::path(
    get,
    path = "/v1/episodes/{id}",
    tag = "episodes",
    security(("bearer" = [])),
    params(("id" = String, Path, format = "uuid", description = "The episode's id")),
    responses(
        (status = 200, description = "The episode", body = Object),
        crate::error::responses::Unauthorized,
        crate::error::responses::EpisodeNotFound,
    )
)]
async fn episode_route(
    State(state): State<AppState>,
    user: AuthUser,
    EpisodePath(id): EpisodePath,
) -> Result<axum::Json<Value>, AppError> {
    let read = api(&state, user, move |desk| read(desk, id, AuditAction::ReadEpisode)).await?;
    let mut body = read.episode.to_json();
    body["conflicts"] = json!(read.conflicts);
    Ok(axum::Json(body))
}

/// An episode's merged timeline, and what the team base has to act on in it.
#[derive(Serialize, utoipa::ToSchema)]
struct Timeline {
    #[schema(value_type = String, format = "uuid")]
    episode: EpisodeId,
    /// Every record in the order it happened (then as received), as devices write them,
    /// each with `received_at` (null when the server has no receipt).
    #[schema(value_type = Vec<Object>)]
    events: Vec<Value>,
    /// The pathway's actions at the moment of reading.
    #[schema(value_type = Vec<Object>)]
    actions: Value,
    /// The pathway's warnings at the moment of reading.
    #[schema(value_type = Vec<Object>)]
    warnings: Value,
    conflicts: Vec<Conflict>,
    duplicates: Vec<Duplicate>,
    unfiled: Vec<Unfiled>,
}

/// An episode's merged timeline, with its actions, warnings and what is to reconcile.
#[utoipa::path(
    get,
    path = "/v1/episodes/{id}/timeline",
    tag = "episodes",
    security(("bearer" = [])),
    params(("id" = String, Path, format = "uuid", description = "The episode's id")),
    responses(
        (status = 200, description = "The timeline", body = Timeline),
        crate::error::responses::Unauthorized,
        crate::error::responses::EpisodeNotFound,
    )
)]
async fn timeline_route(
    State(state): State<AppState>,
    user: AuthUser,
    EpisodePath(id): EpisodePath,
) -> Result<axum::Json<Timeline>, AppError> {
    let read = api(&state, user, move |desk| read(desk, id, AuditAction::ReadTimeline)).await?;
    let events: Vec<Value> = read
        .timeline()
        .into_iter()
        .map(|e| {
            let mut event = serde_json::to_value(e).unwrap_or(Value::Null);
            // Always present, null when the server has no receipt (none is missing today).
            event["received_at"] = json!(e.received_at.map(json_time));
            event
        })
        .collect();
    Ok(axum::Json(Timeline {
        episode: id,
        events,
        actions: json!(read.evaluation.actions),
        warnings: json!(read.evaluation.warnings),
        conflicts: read.conflicts,
        duplicates: read.duplicates,
        unfiled: read.unfiled,
    }))
}

/// The episode as a FHIR R4 Bundle (`application/fhir+json`), read and audited as
/// `read_fhir`.
#[utoipa::path(
    get,
    path = "/v1/episodes/{id}/fhir",
    tag = "episodes",
    security(("bearer" = [])),
    params(("id" = String, Path, format = "uuid", description = "The episode's id")),
    responses(
        (status = 200, description = "A FHIR R4 Bundle (UK Core)", content_type = "application/fhir+json", body = Object),
        crate::error::responses::Unauthorized,
        crate::error::responses::EpisodeNotFound,
    )
)]
async fn fhir_route(
    State(state): State<AppState>,
    user: AuthUser,
    EpisodePath(id): EpisodePath,
) -> Result<axum::response::Response, AppError> {
    use axum::response::IntoResponse;
    let settings = Arc::clone(&state.fhir);
    let (read, now) = api(&state, user, move |desk| Ok((read(desk, id, AuditAction::ReadFhir)?, desk.now))).await?;
    let bundle = crate::fhir::export(&read.episode, &read.evaluation, &settings, now);
    Ok(([(axum::http::header::CONTENT_TYPE, "application/fhir+json")], axum::Json(bundle)).into_response())
}

/// The id of the record a write made.
#[derive(Serialize, utoipa::ToSchema)]
struct Recorded {
    #[schema(value_type = String, format = "uuid")]
    id: EventId,
}

/// Records an event on an episode, by the caller, on the server's own device.
#[utoipa::path(
    post,
    path = "/v1/episodes/{id}/events",
    tag = "episodes",
    security(("bearer" = [])),
    params(("id" = String, Path, format = "uuid", description = "The episode's id")),
    request_body(content = Object, description = "A record as devices make them, without `id`, `by` or `device`: its `kind`, the kind's own fields, and optionally `at` (RFC 3339; now if left out)"),
    responses(
        (status = 201, description = "Recorded", body = Recorded),
        crate::error::responses::EpisodeWrite,
    )
)]
async fn record_route(
    State(state): State<AppState>,
    user: AuthUser,
    EpisodePath(id): EpisodePath,
    Json(body): Json<Value>,
) -> Result<(StatusCode, axum::Json<Recorded>), AppError> {
    let new = NewRecord::from_json(body)?;
    let id = api(&state, user, move |desk| record(desk, id, new)).await?;
    Ok((StatusCode::CREATED, axum::Json(Recorded { id })))
}

/// A fact to set: its field's name, and its value (`null` clears it).
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct SetFact {
    field: String,
    value: Value,
}

/// Sets a fact of an episode, recording the change.
#[utoipa::path(
    post,
    path = "/v1/episodes/{id}/facts",
    tag = "episodes",
    security(("bearer" = [])),
    params(("id" = String, Path, format = "uuid", description = "The episode's id")),
    request_body = SetFact,
    responses(
        (status = 200, description = "Set; the id of the record of the change", body = Recorded),
        crate::error::responses::EpisodeWrite,
    )
)]
async fn fact_route(
    State(state): State<AppState>,
    user: AuthUser,
    EpisodePath(id): EpisodePath,
    Json(body): Json<SetFact>,
) -> Result<axum::Json<Recorded>, AppError> {
    let id = api(&state, user, move |desk| set_fact(desk, id, &body.field, body.value)).await?;
    Ok(axum::Json(Recorded { id }))
}

/// The episode's plan, as text.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct SetPlan {
    text: String,
}

/// Replaces an episode's plan.
#[utoipa::path(
    put,
    path = "/v1/episodes/{id}/plan",
    tag = "episodes",
    security(("bearer" = [])),
    params(("id" = String, Path, format = "uuid", description = "The episode's id")),
    request_body = SetPlan,
    responses(
        (status = 200, description = "Set (an empty object)", body = Object),
        crate::error::responses::EpisodeWrite,
    )
)]
async fn plan_route(
    State(state): State<AppState>,
    user: AuthUser,
    EpisodePath(id): EpisodePath,
    Json(body): Json<SetPlan>,
) -> Result<axum::Json<Value>, AppError> {
    api(&state, user, move |desk| set_plan(desk, id, &body.text)).await?;
    Ok(axum::Json(json!({})))
}

/// Conflicts to resolve, likely duplicates and records to file, across the caller's teams.
#[utoipa::path(
    get,
    path = "/v1/reconcile",
    tag = "episodes",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "What there is to reconcile", body = Reconcile),
        crate::error::responses::Unauthorized,
    )
)]
async fn reconcile_route(State(state): State<AppState>, user: AuthUser) -> Result<axum::Json<Reconcile>, AppError> {
    let out = api(&state, user, reconcile).await?;
    Ok(axum::Json(out))
}
