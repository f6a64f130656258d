//! What an alert says. The same JSON is the outbox's payload and the webhook's body; the
//! email is its plain-text rendering. Neither carries the patient reference unless the
//! team's settings say `include_patient_ref = true`: by default the reader follows the
//! link to the episode on the dashboard, where signing in and the audit log apply.

use episode::pathway::Action;
use episode::{Episode, EpisodeId};
use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use super::{Alerts, Moment, TeamAlerts, Whom};

/// One alert: an urgent action at one moment, to one contact.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Alert {
    /// `<action id>:<moment>`: the outbox's key and the webhook's `Idempotency-Key`.
    pub key: String,
    /// `active`, `due_soon` or `overdue`.
    pub alert: String,
    pub team: String,
    /// The contact reached: the owner role's, or `on_call`.
    pub contact: String,
    pub episode: EpisodeId,
    pub episode_url: String,
    pub action: AlertAction,
    #[serde(with = "episode::json::time")]
    pub raised_at: Timestamp,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub patient_ref: Option<String>,
}

/// The action an alert is about, as the rules name it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct AlertAction {
    pub id: uuid::Uuid,
    pub code: String,
    pub title: String,
    pub owner: String,
    #[serde(with = "episode::json::time")]
    pub active_from: Timestamp,
    #[serde(with = "episode::json::time")]
    pub due: Timestamp,
}

impl Alert {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        alerts: &Alerts,
        settings: &TeamAlerts,
        team: &str,
        episode: &Episode,
        action: &Action,
        moment: Moment,
        whom: Whom,
        now: Timestamp,
    ) -> Self {
        Self {
            key: format!("{}:{}", action.id, moment.as_str()),
            alert: moment.as_str().to_owned(),
            team: team.to_owned(),
            contact: whom.as_str().to_owned(),
            episode: episode.id,
            episode_url: alerts.episode_url(episode.id),
            action: AlertAction {
                id: action.id,
                code: action.code.as_str().to_owned(),
                title: action.title.to_string(),
                owner: action.owner.to_string(),
                active_from: action.active_from,
                due: action.due,
            },
            raised_at: now,
            patient_ref: settings.include_patient_ref.then(|| episode.patient_ref.as_str().to_owned()),
        }
    }

    pub fn to_json(&self) -> String {
        // An `Alert` is strings, ids and times: it always serialises.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// The email's subject line.
    pub fn subject(&self) -> String {
        let what = match self.alert.as_str() {
            "active" => "now active",
            "due_soon" => "due soon",
            "overdue" => "OVERDUE",
            other => other,
        };
        format!("[Tether] Urgent action {what}: {}", self.action.title)
    }

    /// The email's body, plain text.
    pub fn text(&self) -> String {
        let mut text = format!(
            "An urgent action on an episode of {team} is {what}.\n\n\
             Action:  {title} ({code})\n\
             Owner:   {owner}\n\
             Active:  {active}\n\
             Due:     {due}\n",
            team = self.team,
            what = match self.alert.as_str() {
                "active" => "now active",
                "due_soon" => "about to fall due",
                _ => "overdue and not done",
            },
            title = self.action.title,
            code = self.action.code,
            owner = self.action.owner,
            active = self.action.active_from,
            due = self.action.due,
        );
        if let Some(patient) = &self.patient_ref {
            text.push_str(&format!("Patient: {patient}\n"));
        }
        text.push_str(&format!("\nOpen the episode: {}\n", self.episode_url));
        if self.contact == "on_call" {
            text.push_str("\nYou are receiving this as the team's on-call contact.\n");
        }
        text.push_str(&format!("\nAlert {}\n", self.key));
        text
    }
}
