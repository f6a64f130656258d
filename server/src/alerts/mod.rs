//! Alerts to the owner of an urgent action when it becomes active, when it is about to
//! fall due, and when it falls overdue undone (docs/adr/0013-alerts.md).
//!
//! The evaluation that finds an alert due writes it to the outbox (`outbox`) in
//! its own transaction, under the key `<action id>:<moment>`, so that each alert is
//! written once however often the episode is evaluated, and none is lost if the server
//! stops before sending it. The outbox's worker sends it later, with retries and backoff.
//!
//! - `config.rs`: the alerts file (`--alerts`): contacts, working hours, the SMTP relay.
//! - `message.rs`: what an alert says (JSON for a webhook, text for an email), with a
//!   link to the episode and no patient reference unless the team allows it.
//! - `send.rs`: the two senders, a signed webhook POST and an email over SMTP.

pub mod config;
pub mod message;
pub mod send;

use episode::Episode;
use episode::pathway::{Action, Calendar, Evaluation, Priority, State};
use jiff::{SignedDuration, Timestamp};

pub use config::{Alerts, Contact, TeamAlerts, Whom};
pub use message::Alert;

use crate::outbox;
use crate::store::{StoreError, Tx};

/// The outbox kinds alerts are sent as.
pub const KIND_WEBHOOK: &str = "alert_webhook";
pub const KIND_EMAIL: &str = "alert_email";
/// What every alert kind starts with.
pub const KIND_PREFIX: &str = "alert_";

/// Which moment of an urgent action an alert is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Moment {
    /// It became active: the clock is running.
    Active,
    /// Its deadline is within the team's lead.
    DueSoon,
    /// Its deadline passed and it is not done.
    Overdue,
}

impl Moment {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::DueSoon => "due_soon",
            Self::Overdue => "overdue",
        }
    }
}

/// The moment an action is at, if it is one that is alerted: only urgent actions, and only
/// while they are open or overdue. A moment the server did not see in time (it was
/// stopped, or the episode arrived late) is not alerted afterwards: only the latest.
pub fn moment(action: &Action, now: Timestamp, lead: SignedDuration) -> Option<Moment> {
    if action.priority != Priority::Urgent {
        return None;
    }
    match action.state {
        State::Overdue => Some(Moment::Overdue),
        State::Open if now >= action.due.saturating_sub(lead).unwrap_or(Timestamp::MIN) => Some(Moment::DueSoon),
        State::Open => Some(Moment::Active),
        _ => None,
    }
}

/// The next moment the clock alone brings an alert that `next_due` in the caseload does
/// not already cover: an open urgent action's "due soon".
pub fn next_moment(evaluation: &Evaluation, now: Timestamp, lead: SignedDuration) -> Option<i64> {
    evaluation
        .actions
        .iter()
        .filter(|a| a.priority == Priority::Urgent && a.state == State::Open)
        .filter_map(|a| a.due.saturating_sub(lead).ok())
        .filter(|at| *at > now)
        .map(|at| at.as_second())
        .min()
}

/// Whether `at` falls in the team's working hours: its hours on a working day (Monday to
/// Friday less the bank holidays of England and Wales), Europe/London time.
pub fn in_hours(team: &TeamAlerts, at: Timestamp) -> bool {
    let calendar = Calendar::england_and_wales();
    let local = calendar.local(at);
    let minute = i32::from(local.hour()) * 60 + i32::from(local.minute());
    calendar.is_working_day(local.date()) && (i32::from(team.hours.start)..i32::from(team.hours.end)).contains(&minute)
}

/// Writes to the outbox, in the caller's transaction, every alert `evaluation` calls for
/// at `now` that has not been written before. Returns how many were new.
pub fn raise(
    tx: &mut dyn Tx,
    alerts: &Alerts,
    team: &str,
    episode: &Episode,
    evaluation: &Evaluation,
    now: Timestamp,
) -> Result<usize, StoreError> {
    let Some(settings) = alerts.teams.get(team) else { return Ok(0) };
    let in_hours = in_hours(settings, now);
    let mut written = 0;
    for action in &evaluation.actions {
        let Some(moment) = moment(action, now, settings.lead) else { continue };
        let (whom, contact) = settings.contact(&action.owner.to_string(), in_hours);
        let alert = Alert::new(alerts, settings, team, episode, action, moment, whom, now);
        let payload = serde_json::to_value(&alert).unwrap_or_default();
        for (kind, wanted) in [(KIND_WEBHOOK, contact.webhook.is_some()), (KIND_EMAIL, contact.email.is_some())] {
            if wanted
                && outbox::enqueue(
                    tx,
                    kind,
                    &dedupe_key(kind, &alert.key),
                    Some(team),
                    Some(episode.id),
                    &payload,
                    now,
                )?
            {
                written += 1;
            }
        }
    }
    Ok(written)
}

/// The outbox's key of one delivery: its kind and the alert's key, so that an alert sent
/// by webhook and by email is two messages, each owed once.
pub fn dedupe_key(kind: &str, key: &str) -> String {
    format!("{kind}:{key}")
}
