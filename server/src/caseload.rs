//! The caseload as the team base and the manager see it: each episode's summary (open and
//! overdue actions, conflicts, likely duplicates, records to file), kept current, and the
//! reconciliation lists made from an episode's document.
//!
//! Overdue depends on the clock, not only on what was recorded, so a summary is remade
//! when its episode changes (its `seq` moves on) **and** when the clock passes the first
//! moment at which an action starts or falls overdue (`next_due`). The server does this on
//! a schedule ([`refresh_due`], from `serve`), and every route that shows counts refreshes
//! its teams' due summaries first, so counts are right at any moment.

use std::collections::BTreeMap;
use std::sync::PoisonError;

use automerge::ActorId;
use episode::pathway::{self, Action, Calendar, Code, Evaluation, State};
use episode::{Episode, EpisodeId, Event, EventBody};
use jiff::Timestamp;
use rusqlite::{Connection, Transaction, params};
use serde::Serialize;

use crate::episodes::{self, Cache, Stored};
use crate::error::AppError;

/// Two records of the same kind and target from two devices within this long are a
/// likely duplicate.
pub const DUPLICATE_WINDOW_SECS: i64 = 10 * 60;

/// A summary is remade at least this often, whatever its actions say.
const MAX_SUMMARY_AGE_SECS: i64 = 6 * 60 * 60;

/// At most this many summaries are remade under one hold of the database, so that a
/// large caseload coming due never stalls syncs for long.
pub const REFRESH_BATCH: usize = 64;

/// One episode as the caseload lists it.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Summary {
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
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Duplicate {
    pub kind: &'static str,
    /// The field the records share (`target`, `party`, `visit`, …), if the kind has one.
    pub target_field: Option<&'static str>,
    /// That field's value (`patient`, `gp`, a visit's record id).
    pub target: Option<String>,
    pub records: Vec<episode::EventId>,
}

/// A field record not yet filed in the electronic patient record.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Unfiled {
    pub record: uuid::Uuid,
    /// The `file_to_epr` action that asks for it.
    pub action: uuid::Uuid,
    #[serde(with = "episode::json::time")]
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
        .map(|a| Unfiled { record: a.trigger, action: a.id, due: a.due, overdue: a.state == State::Overdue })
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

/// Remakes one episode's summary from its document, at `now`.
pub fn summarize(tx: &Transaction<'_>, stored: &mut Stored, now: Timestamp) -> Result<(), AppError> {
    let key = stored.id.to_string();
    let seq = stored.seq;
    let episode = stored.view(tx)?;
    let evaluation = evaluate(episode, now);
    let open: Vec<&Action> = evaluation.actions.iter().filter(|a| is_open(a)).collect();
    let overdue = open.iter().filter(|a| a.state == State::Overdue).count();
    let pathway = serde_json::to_value(episode.facts.pathway.safest())
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default();
    tx.prepare_cached(
        "INSERT INTO summaries (episode, seq, pathway, patient_ref, open_actions, overdue_actions, conflicts,
                                duplicates, unfiled, next_due, evaluated_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)
         ON CONFLICT (episode) DO UPDATE SET seq = excluded.seq, pathway = excluded.pathway,
            patient_ref = excluded.patient_ref, open_actions = excluded.open_actions,
            overdue_actions = excluded.overdue_actions, conflicts = excluded.conflicts,
            duplicates = excluded.duplicates, unfiled = excluded.unfiled, next_due = excluded.next_due,
            evaluated_at = excluded.evaluated_at",
    )?
    .execute(params![
        key,
        seq,
        pathway,
        episode.patient_ref.as_str(),
        open.len() as i64,
        overdue as i64,
        episode.facts.conflicts().len() as i64,
        duplicates(episode).len() as i64,
        unfiled(&evaluation).len() as i64,
        next_due(&evaluation, now),
        now.as_second(),
    ])?;
    tx.prepare_cached("DELETE FROM summary_actions WHERE episode = ?1")?.execute([&key])?;
    let mut insert = tx.prepare_cached(
        "INSERT INTO summary_actions (episode, action, code, owner, priority, state, due)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )?;
    for action in open {
        insert.execute(params![
            key,
            action.id.to_string(),
            action.code.as_str(),
            action.owner.to_string(),
            enum_name(&action.priority),
            enum_name(&action.state),
            action.due.as_second(),
        ])?;
    }
    tx.prepare_cached("DELETE FROM summary_appointments WHERE episode = ?1")?.execute([&key])?;
    let mut insert =
        tx.prepare_cached("INSERT INTO summary_appointments (episode, event, at, outcome) VALUES (?1, ?2, ?3, ?4)")?;
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
            insert.execute(params![key, event.id.to_string(), event.at.as_second(), outcome])?;
        }
    }
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
pub fn rates(conn: &Connection, team: &str, now: Timestamp, days: i64) -> rusqlite::Result<Rates> {
    let since = now.as_second() - days * 24 * 60 * 60;
    conn.prepare_cached(
        "SELECT COUNT(*), COALESCE(SUM(a.outcome = 'not_brought'), 0), COALESCE(SUM(a.outcome = 'did_not_attend'), 0)
         FROM summary_appointments a JOIN episodes e ON e.id = a.episode
         WHERE e.team = ?1 AND a.at > ?2 AND a.at <= ?3",
    )?
    .query_row(params![team, since, now.as_second()], |r| {
        Ok(Rates {
            team: team.to_owned(),
            days,
            appointments: r.get(0)?,
            not_brought: r.get(1)?,
            did_not_attend: r.get(2)?,
        })
    })
}

fn enum_name<T: Serialize>(value: &T) -> String {
    serde_json::to_value(value).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default()
}

/// The episodes (of `teams`, or of every team) whose summary is missing, older than the
/// episode, or due to change by the clock at `now`; at most `limit`.
fn stale(
    conn: &Connection,
    teams: Option<&[String]>,
    now: Timestamp,
    limit: usize,
) -> rusqlite::Result<Vec<EpisodeId>> {
    let mut statement = conn.prepare_cached(
        "SELECT e.id, e.team FROM episodes e LEFT JOIN summaries s ON s.episode = e.id
         WHERE s.episode IS NULL OR s.seq != e.seq OR s.next_due <= ?1
         ORDER BY e.seq",
    )?;
    let rows = statement.query_map([now.as_second()], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?;
    let mut out = Vec::new();
    for row in rows {
        let (id, team) = row?;
        if teams.is_some_and(|teams| !teams.contains(&team)) {
            continue;
        }
        if let Ok(id) = id.parse() {
            out.push(id);
        }
        if out.len() >= limit {
            break;
        }
    }
    Ok(out)
}

/// Remakes up to `limit` stale summaries (of `teams`, or of every team) in one
/// transaction, through the document cache. Returns how many it remade.
pub fn refresh(
    conn: &mut Connection,
    cache: &std::sync::Mutex<Cache>,
    teams: Option<&[String]>,
    now: Timestamp,
    limit: usize,
) -> Result<usize, AppError> {
    let ids = stale(conn, teams, now, limit)?;
    if ids.is_empty() {
        return Ok(0);
    }
    let mut cache = cache.lock().unwrap_or_else(PoisonError::into_inner);
    let tx = conn.transaction()?;
    let actor = episodes::server_actor(&tx)?;
    let mut used = Vec::with_capacity(ids.len());
    for id in &ids {
        let Some(mut stored) = cache.take(&tx, *id, &actor)? else { continue };
        let made = summarize(&tx, &mut stored, now);
        used.push(stored);
        made?;
    }
    tx.commit()?;
    for stored in used {
        cache.put(stored);
    }
    Ok(ids.len())
}

/// Remakes every stale summary of `teams`, a batch at a time.
pub fn refresh_all(
    conn: &mut Connection,
    cache: &std::sync::Mutex<Cache>,
    teams: Option<&[String]>,
    now: Timestamp,
) -> Result<usize, AppError> {
    let mut total = 0;
    loop {
        let made = refresh(conn, cache, teams, now, REFRESH_BATCH)?;
        total += made;
        if made < REFRESH_BATCH {
            return Ok(total);
        }
    }
}

/// The summaries of `teams`' episodes: the most overdue first, then the most open.
pub fn summaries(conn: &Connection, teams: &[String]) -> rusqlite::Result<Vec<Summary>> {
    let mut statement = conn.prepare_cached(
        "SELECT s.episode, e.team, s.pathway, s.patient_ref, s.open_actions, s.overdue_actions, s.conflicts,
                s.duplicates, s.unfiled
         FROM summaries s JOIN episodes e ON e.id = s.episode WHERE e.team = ?1",
    )?;
    let mut out = Vec::new();
    for team in teams {
        let rows = statement.query_map([team], |r| {
            Ok((
                r.get::<_, String>(0)?,
                Summary {
                    id: EpisodeId::nil(),
                    team: r.get(1)?,
                    pathway: r.get(2)?,
                    patient_ref: r.get(3)?,
                    open_actions: r.get(4)?,
                    overdue_actions: r.get(5)?,
                    conflicts: r.get(6)?,
                    duplicates: r.get(7)?,
                    unfiled: r.get(8)?,
                },
            ))
        })?;
        for row in rows {
            let (id, mut summary) = row?;
            if let Ok(id) = id.parse() {
                summary.id = id;
                out.push(summary);
            }
        }
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
pub fn open_actions(conn: &Connection, teams: &[String]) -> rusqlite::Result<Vec<OpenAction>> {
    let mut statement = conn.prepare_cached(
        "SELECT a.episode, s.patient_ref, a.action, a.code, a.owner, a.priority, a.state, a.due
         FROM summary_actions a JOIN summaries s ON s.episode = a.episode JOIN episodes e ON e.id = a.episode
         WHERE e.team = ?1",
    )?;
    let mut out = Vec::new();
    for team in teams {
        let rows = statement.query_map([team], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, String>(3)?,
                r.get::<_, String>(4)?,
                r.get::<_, String>(5)?,
                r.get::<_, String>(6)?,
                r.get::<_, i64>(7)?,
            ))
        })?;
        for row in rows {
            let (episode, patient_ref, action, code, owner, priority, state, due) = row?;
            let (Ok(episode), Ok(due)) = (episode.parse(), Timestamp::from_second(due)) else { continue };
            out.push(OpenAction {
                episode,
                patient_ref,
                action,
                code,
                owner,
                priority,
                overdue: state == "overdue",
                due,
            });
        }
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
pub fn counts_by_team(conn: &Connection) -> rusqlite::Result<Vec<(String, i64, i64)>> {
    let mut statement = conn.prepare_cached(
        "SELECT t.id, COALESCE(SUM(s.open_actions), 0), COALESCE(SUM(s.overdue_actions), 0)
         FROM teams t LEFT JOIN episodes e ON e.team = t.id LEFT JOIN summaries s ON s.episode = e.id
         GROUP BY t.id ORDER BY t.id",
    )?;
    let rows = statement.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
    rows.collect()
}

/// Loads an episode the caller may see: one of their teams'. Any other answers exactly as
/// one that does not exist.
pub fn visible(
    tx: &Transaction<'_>,
    cache: &mut Cache,
    actor: &ActorId,
    teams: &[String],
    id: EpisodeId,
) -> Result<Stored, AppError> {
    match cache.take(tx, id, actor)? {
        Some(stored) if teams.contains(&stored.team) => Ok(stored),
        Some(stored) => {
            cache.put(stored);
            Err(AppError::EpisodeNotFound(id))
        }
        None => Err(AppError::EpisodeNotFound(id)),
    }
}
