//! The caseload as the team base and the manager see it: each episode's summary (open and
//! overdue actions, conflicts, likely duplicates, records to file), kept current, and the
//! reconciliation lists made from an episode's document.
//!
//! Overdue depends on the clock, not only on what was recorded, so a summary is remade
//! when its episode changes (its `seq` moves on) **and** when the clock passes the first
//! moment at which an action starts or falls overdue (`next_due`). The server does this on
//! a schedule ([`refresh_due`], from `serve`), and every route that shows counts refreshes
//! its teams' due summaries first, so counts are right at any moment. Remaking a summary
//! is the evaluation that raises alerts (`alerts::raise`), in the same transaction.

use std::collections::BTreeMap;

use automerge::ActorId;
use episode::pathway::{self, Action, Calendar, Code, Evaluation, State};
use episode::{Episode, EpisodeId, Event, EventBody};
use jiff::Timestamp;
use serde::Serialize;

use crate::accounts::TeamId;
use crate::alerts::Alerts;
use crate::episodes::{self, Cache, Stored, Working};
use crate::error::AppError;
use crate::store::{ActionRecord, AppointmentRecord, Conn, StoreError, SummaryRecord, Tx};

/// Two records of the same kind and target from two devices within this long are a
/// likely duplicate.
pub const DUPLICATE_WINDOW_SECS: i64 = 10 * 60;

/// A summary is remade at least this often, whatever its actions say.
const MAX_SUMMARY_AGE_SECS: i64 = 6 * 60 * 60;

/// At most this many summaries are remade under one hold of the database, so that a
/// large caseload coming due never stalls syncs for long.
pub const REFRESH_BATCH: usize = 64;

/// One episode as the caseload lists it.
#[derive(Clone, Debug, Serialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct Summary {
    #[schema(value_type = String, format = "uuid")]
    pub id: EpisodeId,
    pub team: String,
    pub pathway: String,
    pub patient_ref: String,
    pub open_actions: i64,
    pub overdue_actions: i64,
    pub conflicts: i64,
    pub duplicates: i64,
    pub unfiled: i64,
}

/// An open or overdue action on the caseload.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct OpenAction {
    pub episode: EpisodeId,
    pub patient_ref: String,
    pub action: String,
    pub code: String,
    pub owner: String,
    pub priority: String,
    pub overdue: bool,
    #[serde(with = "episode::json::time")]
    pub due: Timestamp,
}

/// Two or more records that look like the same thing recorded twice.
#[derive(Clone, Debug, Serialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct Duplicate {
    pub kind: &'static str,
    /// The field the records share (`target`, `party`, `visit`, …), if the kind has one.
    pub target_field: Option<&'static str>,
    /// That field's value (`patient`, `gp`, a visit's record id).
    pub target: Option<String>,
    /// The records' ids.
    #[schema(value_type = Vec<String>)]
    pub records: Vec<episode::EventId>,
}

/// A field record not yet filed in the electronic patient record.
#[derive(Clone, Debug, Serialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct Unfiled {
    #[schema(value_type = String, format = "uuid")]
    pub record: episode::EventId,
    /// The `file_to_epr` action that asks for it.
    #[schema(value_type = String, format = "uuid")]
    pub action: uuid::Uuid,
    #[serde(with = "episode::json::time")]
    #[schema(value_type = String, format = DateTime)]
    pub due: Timestamp,
    pub overdue: bool,
}

/// The pathway's evaluation of an episode at `now` (the server's calendar).
pub fn evaluate(episode: &Episode, now: Timestamp) -> Evaluation {
    pathway::evaluate(episode, now, &Calendar::england_and_wales())
}

/// Open means active and not done: open or overdue.
pub fn is_open(action: &Action) -> bool {
    matches!(action.state, State::Open | State::Overdue)
}

/// The field records the evaluation still asks to be filed.
pub fn unfiled(evaluation: &Evaluation) -> Vec<Unfiled> {
    evaluation
        .actions
        .iter()
        .filter(|a| a.code == Code::FileToEpr && matches!(a.state, State::Upcoming | State::Open | State::Overdue))
        .map(|a| Unfiled { record: a.trigger.into(), action: a.id, due: a.due, overdue: a.state == State::Overdue })
        .collect()
}

/// Likely duplicates: records of the same kind and target, from two or more devices, each
/// within [`DUPLICATE_WINDOW_SECS`] of the one before. Records entered in error, and the
/// team base's own bookkeeping (`filed_to_epr`, `entered_in_error`, `fact_changed`), are
/// left out.
pub fn duplicates(episode: &Episode) -> Vec<Duplicate> {
    let in_error: std::collections::HashSet<_> = episode
        .events
        .iter()
        .filter_map(|e| match &e.body {
            EventBody::EnteredInError(eie) => Some(eie.record),
            _ => None,
        })
        .collect();
    type Target = Option<(&'static str, String)>;
    let mut groups: BTreeMap<(&'static str, Target), Vec<&Event>> = BTreeMap::new();
    for event in &episode.events {
        if in_error.contains(&event.id)
            || matches!(event.body, EventBody::FiledToEpr(_) | EventBody::EnteredInError(_) | EventBody::FactChanged(_))
        {
            continue;
        }
        groups.entry((event.body.kind(), target_of(event))).or_default().push(event);
    }
    let mut out = Vec::new();
    for ((kind, target), mut events) in groups {
        events.sort_by_key(|e| (e.at, e.id));
        let mut run: Vec<&Event> = Vec::new();
        let mut flush = |run: &mut Vec<&Event>| {
            let devices: std::collections::HashSet<_> = run.iter().map(|e| e.device.as_str()).collect();
            if run.len() > 1 && devices.len() > 1 {
                out.push(Duplicate {
                    kind,
                    target_field: target.as_ref().map(|(field, _)| *field),
                    target: target.as_ref().map(|(_, value)| value.clone()),
                    records: run.iter().map(|e| e.id).collect(),
                });
            }
            run.clear();
        };
        for event in events {
            if let Some(last) = run.last()
                && event.at.duration_since(last.at).as_secs().abs() > DUPLICATE_WINDOW_SECS
            {
                flush(&mut run);
            }
            run.push(event);
        }
        flush(&mut run);
    }
    out
}

/// What a record is about, for spotting duplicates: the first of the fields that name
/// whom or what it concerns, and its value.
fn target_of(event: &Event) -> Option<(&'static str, String)> {
    let json = serde_json::to_value(&event.body).ok()?;
    ["target", "party", "visit", "topic", "to", "appointment"]
        .into_iter()
        .find_map(|field| json.get(field).map(|v| (field, v.as_str().map_or_else(|| v.to_string(), str::to_owned))))
}

/// The moment the clock alone next changes the evaluation's counts: an upcoming action
/// starts, or an open one falls overdue.
fn next_due(evaluation: &Evaluation, now: Timestamp) -> i64 {
    let clock = evaluation
        .actions
        .iter()
        .filter_map(|a| match a.state {
            State::Upcoming => Some(a.active_from.as_second()),
            // Overdue once `now > due`: the second after.
            State::Open => Some(a.due.as_second() + 1),
            _ => None,
        })
        .min();
    let latest = now.as_second() + MAX_SUMMARY_AGE_SECS;
    clock.map_or(latest, |at| at.min(latest))
}

/// Remakes one episode's summary from its document, at `now`, and writes to the outbox,
/// in the same transaction, the alerts its urgent actions call for (`alerts`).
pub fn summarize(tx: &mut dyn Tx, stored: &mut Stored, now: Timestamp, alerts: &Alerts) -> Result<(), AppError> {
    let (id, seq) = (stored.id(), stored.seq());
    let team = stored.team().to_owned();
    let episode = stored.view(tx)?;
    let evaluation = evaluate(episode, now);
    crate::alerts::raise(tx, alerts, &team, episode, &evaluation, now)?;
    // An urgent action's "due soon" is a moment the clock alone brings too.
    let lead = alerts.teams.get(&team).map(|t| t.lead);
    let next_due = match lead.and_then(|lead| crate::alerts::next_moment(&evaluation, now, lead)) {
        Some(soon) => next_due(&evaluation, now).min(soon),
        None => next_due(&evaluation, now),
    };
    let open: Vec<&Action> = evaluation.actions.iter().filter(|a| is_open(a)).collect();
    let overdue = open.iter().filter(|a| a.state == State::Overdue).count();
    let pathway = serde_json::to_value(episode.facts.pathway.safest())
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default();
    let actions = open
        .iter()
        .map(|action| ActionRecord {
            action: action.id.to_string(),
            code: action.code.as_str(),
            owner: action.owner.to_string(),
            priority: enum_name(&action.priority),
            state: enum_name(&action.state),
            due: action.due.as_second(),
        })
        .collect();
    let mut appointments = Vec::new();
    for event in &episode.events {
        let outcome = match &event.body {
            EventBody::AppointmentAttended(_) => "attended".to_owned(),
            EventBody::AppointmentMissed(missed) => enum_name(&missed.reason),
            _ => continue,
        };
        // A record entered in error is no appointment.
        let in_error =
            episode.events.iter().any(|e| matches!(&e.body, EventBody::EnteredInError(eie) if eie.record == event.id));
        if !in_error {
            appointments.push(AppointmentRecord { event: event.id.to_string(), at: event.at.as_second(), outcome });
        }
    }
    let record = SummaryRecord {
        episode: id,
        seq,
        pathway: &pathway,
        patient_ref: episode.patient_ref.as_str(),
        open_actions: open.len() as i64,
        overdue_actions: overdue as i64,
        conflicts: episode.facts.conflicts().len() as i64,
        duplicates: duplicates(episode).len() as i64,
        unfiled: unfiled(&evaluation).len() as i64,
        next_due,
        evaluated_at: now.as_second(),
        actions,
        appointments,
    };
    tx.put_summary(&record)?;
    Ok(())
}

/// A team's appointments over a window, and how many were missed for each reason.
#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct Rates {
    pub team: String,
    pub days: i64,
    pub appointments: i64,
    pub not_brought: i64,
    pub did_not_attend: i64,
}

impl Rates {
    /// A count as a share of the appointments, if there were any.
    pub fn share(&self, count: i64) -> Option<f64> {
        (self.appointments > 0).then(|| count as f64 / self.appointments as f64)
    }
}

/// The team's appointments in the `days` before `now`: attended and missed, and the
/// misses where a child was not brought or an adult did not attend.
pub fn rates(tx: &mut dyn Tx, team: &TeamId, now: Timestamp, days: i64) -> Result<Rates, StoreError> {
    let since = now.as_second() - days * 24 * 60 * 60;
    Ok(Rates { days, ..tx.rates(team, since, now.as_second())? })
}

fn enum_name<T: Serialize>(value: &T) -> String {
    serde_json::to_value(value).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default()
}

/// The episodes (of `teams`, or of every team) whose summary is missing, older than the
/// episode, or due to change by the clock at `now`; at most `limit`.
fn stale(
    tx: &mut dyn Tx,
    teams: Option<&[TeamId]>,
    now: Timestamp,
    limit: usize,
) -> Result<Vec<EpisodeId>, StoreError> {
    tx.stale_summaries(now.as_second(), teams, limit)
}

/// Remakes up to `limit` stale summaries (of `teams`, or of every team) in one
/// transaction, through the document cache. Returns how many it remade.
pub fn refresh(
    conn: &mut dyn Conn,
    cache: &std::sync::Mutex<Cache>,
    alerts: &Alerts,
    teams: Option<&[TeamId]>,
    now: Timestamp,
    limit: usize,
) -> Result<usize, AppError> {
    let ids = stale(conn, teams, now, limit)?;
    if ids.is_empty() {
        return Ok(0);
    }
    let mut cache = Working::new(cache);
    let mut tx = conn.transaction()?;
    remake(&mut *tx, &mut cache, alerts, &ids, now)?;
    tx.commit()?;
    cache.commit();
    Ok(ids.len())
}

/// The scheduled re-evaluation's batch: [`refresh`] of every team under the job's lock,
/// so that of several replicas one at a time remakes summaries. `None` if another
/// replica holds the lock (it is doing the work).
pub fn refresh_scheduled(
    conn: &mut dyn Conn,
    cache: &std::sync::Mutex<Cache>,
    alerts: &Alerts,
    now: Timestamp,
    limit: usize,
) -> Result<Option<usize>, AppError> {
    let mut cache = Working::new(cache);
    let mut tx = conn.transaction()?;
    if !tx.try_job_lock(crate::store::Job::Reevaluation)? {
        return Ok(None);
    }
    let ids = stale(&mut *tx, None, now, limit)?;
    remake(&mut *tx, &mut cache, alerts, &ids, now)?;
    tx.commit()?;
    cache.commit();
    Ok(Some(ids.len()))
}

/// Remakes the summaries of `ids` in `tx`, keeping the documents used in `cache` (put
/// back in the cache once the transaction has committed: the cache never holds what the
/// disk does not).
fn remake(
    tx: &mut dyn Tx,
    cache: &mut Working<'_>,
    alerts: &Alerts,
    ids: &[EpisodeId],
    now: Timestamp,
) -> Result<(), AppError> {
    let actor = episodes::server_actor(tx)?;
    // Each episode's team, `seq` and receipts, read in one go where that saves round
    // trips (PostgreSQL); the device is the server's own, which holds no sync states.
    let server = episodes::server_device(tx)?;
    tx.prefetch(ids, &server)?;
    for id in ids {
        let Some(mut stored) = cache.take(tx, *id, &actor)? else { continue };
        let made = summarize(tx, &mut stored, now, alerts);
        cache.put(stored);
        made?;
    }
    Ok(())
}

/// Remakes every stale summary of `teams`, a batch at a time.
pub fn refresh_all(
    conn: &mut dyn Conn,
    cache: &std::sync::Mutex<Cache>,
    alerts: &Alerts,
    teams: Option<&[TeamId]>,
    now: Timestamp,
) -> Result<usize, AppError> {
    let mut total = 0;
    loop {
        let made = refresh(conn, cache, alerts, teams, now, REFRESH_BATCH)?;
        total += made;
        if made < REFRESH_BATCH {
            return Ok(total);
        }
    }
}

/// The summaries of `teams`' episodes: the most overdue first, then the most open.
pub fn summaries(tx: &mut dyn Tx, teams: &[TeamId]) -> Result<Vec<Summary>, StoreError> {
    let mut out = Vec::new();
    for team in teams {
        out.extend(tx.summaries(team)?);
    }
    out.sort_by(|a, b| {
        (b.overdue_actions, b.open_actions, b.conflicts, b.unfiled)
            .cmp(&(a.overdue_actions, a.open_actions, a.conflicts, a.unfiled))
            .then(a.id.cmp(&b.id))
    });
    Ok(out)
}

/// The open and overdue actions of `teams`' episodes: overdue first, then by owner, then
/// by due time.
pub fn open_actions(tx: &mut dyn Tx, teams: &[TeamId]) -> Result<Vec<OpenAction>, StoreError> {
    let mut out = Vec::new();
    for team in teams {
        out.extend(tx.open_actions(team)?);
    }
    out.sort_by(|a, b| {
        b.overdue
            .cmp(&a.overdue)
            .then_with(|| a.owner.cmp(&b.owner))
            .then(a.due.cmp(&b.due))
            .then(a.action.cmp(&b.action))
    });
    Ok(out)
}

/// Open and overdue actions per team, for the metrics.
pub fn counts_by_team(tx: &mut dyn Tx) -> Result<Vec<(String, i64, i64)>, StoreError> {
    tx.counts_by_team()
}

/// Loads an episode the caller may see: one of their teams'. Any other answers exactly as
/// one that does not exist.
pub fn visible(
    tx: &mut dyn Tx,
    cache: &mut Working<'_>,
    actor: &ActorId,
    teams: &[TeamId],
    id: EpisodeId,
) -> Result<Stored, AppError> {
    match cache.take(tx, id, actor)? {
        Some(stored) if teams.iter().any(|t| t == stored.team()) => Ok(stored),
        Some(stored) => {
            cache.put(stored);
            Err(AppError::EpisodeNotFound(id))
        }
        None => Err(AppError::EpisodeNotFound(id)),
    }
}
