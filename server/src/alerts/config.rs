//! The alerts file (`tether serve --alerts FILE`, TOML): per team, whom to alert for each
//! owner role, the working hours, the on-call contact, how long before a deadline to warn,
//! and whether a message may carry the patient reference; and the SMTP relay.
//!
//! Secrets are never in the file: a webhook's HMAC key and the SMTP password are named by
//! the environment variable that holds them (`secret_env`, `password_env`), read at start.
//! A mistake anywhere refuses the whole file, naming the team and the field, so that a
//! server never runs believing it alerts someone it does not.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use anyhow::{Context, bail, ensure};
use episode::pathway::Role;
use jiff::SignedDuration;
use serde::Deserialize;

use crate::Secret;
use crate::oidc::config::transport_allowed;

/// The warning before a deadline when a team's file gives none.
pub const DEFAULT_LEAD_MINUTES: u32 = 15;
/// The longest warning a team may ask for: beyond a day it is no longer "about to".
pub const MAX_LEAD_MINUTES: u32 = 24 * 60;
/// The shortest HMAC key accepted.
pub const MIN_SECRET_BYTES: usize = 32;

/// The whole file as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    /// Where the dashboard is reached (`https://tether.example-trust.nhs.uk`): each alert
    /// links to `<base>/dashboard/episodes/<id>`.
    dashboard_url: String,
    smtp: Option<SmtpFile>,
    #[serde(default)]
    teams: BTreeMap<String, TeamFile>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SmtpFile {
    host: String,
    port: Option<u16>,
    /// `starttls` (the default), `tls` (implicit, port 465), or `none` (loopback only).
    security: Option<String>,
    from: String,
    username: Option<String>,
    password_env: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TeamFile {
    #[serde(default)]
    include_patient_ref: bool,
    lead_minutes: Option<u32>,
    /// `HH:MM-HH:MM`, on working days (Monday to Friday less the bank holidays of England
    /// and Wales), Europe/London time.
    working_hours: Option<String>,
    on_call: ContactFile,
    #[serde(default)]
    contacts: BTreeMap<String, ContactFile>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ContactFile {
    webhook: Option<String>,
    secret_env: Option<String>,
    email: Option<String>,
}

/// How the SMTP connection is protected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Security {
    StartTls,
    Tls,
    /// Plain SMTP: only to a relay on loopback.
    None,
}

/// The SMTP relay alerts go through.
#[derive(Clone, Debug)]
pub struct Smtp {
    pub host: String,
    pub port: u16,
    pub security: Security,
    pub from: lettre::message::Mailbox,
    pub credentials: Option<(String, Secret)>,
}

/// A webhook: where to POST, and the key its body is signed with.
#[derive(Clone)]
pub struct Webhook {
    pub url: String,
    pub secret: Secret,
}

impl fmt::Debug for Webhook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Webhook").field("url", &self.url).finish_non_exhaustive()
    }
}

/// Whom one alert goes to: a webhook, an address, or both.
#[derive(Clone, Debug)]
pub struct Contact {
    pub webhook: Option<Webhook>,
    pub email: Option<lettre::Address>,
}

/// Who is reached: the owner role's contact, or the on-call contact.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Whom {
    Role(String),
    OnCall,
}

impl Whom {
    pub fn as_str(&self) -> &str {
        match self {
            Self::Role(role) => role,
            Self::OnCall => "on_call",
        }
    }

    pub fn parse(text: &str) -> Self {
        if text == "on_call" { Self::OnCall } else { Self::Role(text.to_owned()) }
    }
}

/// Working hours: from `start` to `end` (minutes past local midnight) on working days.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Hours {
    pub start: u16,
    pub end: u16,
}

impl Default for Hours {
    /// 09:00 to 17:00, the office hours of Appendix A.
    fn default() -> Self {
        Self { start: 9 * 60, end: 17 * 60 }
    }
}

/// One team's alerting.
#[derive(Clone, Debug)]
pub struct TeamAlerts {
    pub include_patient_ref: bool,
    pub lead: SignedDuration,
    pub hours: Hours,
    pub on_call: Contact,
    /// By owner role (`care_coordinator`, `team_manager`, …).
    pub contacts: BTreeMap<String, Contact>,
}

impl TeamAlerts {
    /// The contact for an alert to `owner` at a moment in (`in_hours`) or out of working
    /// hours: out of hours always the on-call contact; in hours the owner's, or the
    /// on-call contact if the team names none for that role (an urgent alert never goes
    /// nowhere).
    pub fn contact(&self, owner: &str, in_hours: bool) -> (Whom, &Contact) {
        match self.contacts.get(owner) {
            Some(contact) if in_hours => (Whom::Role(owner.to_owned()), contact),
            _ => (Whom::OnCall, &self.on_call),
        }
    }

    /// The contact an alert already raised names.
    pub fn by_whom(&self, whom: &Whom) -> Option<&Contact> {
        match whom {
            Whom::OnCall => Some(&self.on_call),
            Whom::Role(role) => self.contacts.get(role),
        }
    }
}

/// Every team's alerting, checked. Teams absent from the file are not alerted.
#[derive(Clone, Debug, Default)]
pub struct Alerts {
    pub dashboard_url: String,
    pub smtp: Option<Smtp>,
    pub teams: BTreeMap<String, TeamAlerts>,
}

impl Alerts {
    /// Reads and checks the file at `path`, its secrets from the environment.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("cannot read the alerts file {}", path.display()))?;
        Self::parse(&text, &|name| std::env::var(name).ok())
            .with_context(|| format!("the alerts file {} is not valid", path.display()))
    }

    /// Checks the file's text; `env` looks up a secret's variable.
    pub fn parse(text: &str, env: &dyn Fn(&str) -> Option<String>) -> anyhow::Result<Self> {
        let file: File = toml::from_str(text).map_err(|e| anyhow::anyhow!("{}", e.message()))?;
        let base = file.dashboard_url.trim_end_matches('/').to_owned();
        ensure!(base.starts_with("https://") || base.starts_with("http://"), "`dashboard_url` must be an http(s) URL");
        let smtp = file.smtp.map(|smtp| smtp_settings(smtp, env)).transpose().context("[smtp]")?;
        let mut teams = BTreeMap::new();
        for (id, team) in file.teams {
            ensure!(id.parse::<crate::accounts::TeamId>().is_ok(), "[teams.{id}]: not a team id");
            let checked = team_settings(team, env).with_context(|| format!("[teams.{id}]"))?;
            let emails = std::iter::once(&checked.on_call).chain(checked.contacts.values()).any(|c| c.email.is_some());
            ensure!(!emails || smtp.is_some(), "[teams.{id}] has email contacts: give [smtp]");
            teams.insert(id, checked);
        }
        Ok(Self { dashboard_url: base, smtp, teams })
    }

    /// The link an alert gives instead of the patient.
    pub fn episode_url(&self, episode: episode::EpisodeId) -> String {
        format!("{}/dashboard/episodes/{episode}", self.dashboard_url)
    }
}

fn smtp_settings(smtp: SmtpFile, env: &dyn Fn(&str) -> Option<String>) -> anyhow::Result<Smtp> {
    let security = match smtp.security.as_deref() {
        None | Some("starttls") => Security::StartTls,
        Some("tls") => Security::Tls,
        Some("none") => Security::None,
        Some(_) => bail!("`security` must be `starttls`, `tls` or `none`"),
    };
    if security == Security::None {
        ensure!(
            transport_allowed(&format!("http://{}", smtp.host)),
            "`security = \"none\"` only to a relay on loopback: use `starttls` or `tls`"
        );
    }
    let port = smtp.port.unwrap_or(match security {
        Security::StartTls => 587,
        Security::Tls => 465,
        Security::None => 25,
    });
    let from = smtp.from.parse().map_err(|_| anyhow::anyhow!("`from` is not an email address"))?;
    let credentials = match (smtp.username, smtp.password_env) {
        (Some(user), Some(var)) => {
            let password = env(&var).ok_or_else(|| anyhow::anyhow!("`password_env`: {var} is not set"))?;
            Some((user, Secret::from(password)))
        }
        (None, None) => None,
        _ => bail!("`username` and `password_env` go together"),
    };
    Ok(Smtp { host: smtp.host, port, security, from, credentials })
}

fn team_settings(team: TeamFile, env: &dyn Fn(&str) -> Option<String>) -> anyhow::Result<TeamAlerts> {
    let minutes = team.lead_minutes.unwrap_or(DEFAULT_LEAD_MINUTES);
    ensure!(minutes <= MAX_LEAD_MINUTES, "`lead_minutes` is at most {MAX_LEAD_MINUTES}");
    let hours = team.working_hours.as_deref().map(parse_hours).transpose()?.unwrap_or_default();
    let on_call = contact(team.on_call, env).context("on_call")?;
    let mut contacts = BTreeMap::new();
    for (role, given) in team.contacts {
        ensure!(
            owner_role(&role),
            "contacts.{role}: not an owner role ({})",
            OWNER_ROLES.map(|r| r.to_string()).join(", ")
        );
        contacts.insert(role.clone(), contact(given, env).with_context(|| format!("contacts.{role}"))?);
    }
    Ok(TeamAlerts {
        include_patient_ref: team.include_patient_ref,
        lead: SignedDuration::from_mins(i64::from(minutes)),
        hours,
        on_call,
        contacts,
    })
}

/// The roles an action may be owned by, as the rules name them.
const OWNER_ROLES: [Role; 7] = [
    Role::Assessor,
    Role::Visitor,
    Role::CareCoordinator,
    Role::TeamManager,
    Role::OnCallManager,
    Role::ResponsibleClinician,
    Role::TeamBase,
];

fn owner_role(name: &str) -> bool {
    OWNER_ROLES.iter().any(|role| role.to_string() == name)
}

fn contact(given: ContactFile, env: &dyn Fn(&str) -> Option<String>) -> anyhow::Result<Contact> {
    let webhook = match (given.webhook, given.secret_env) {
        (Some(url), Some(var)) => {
            ensure!(transport_allowed(&url), "`webhook` must be https:// (or http:// on loopback)");
            let secret = env(&var).ok_or_else(|| anyhow::anyhow!("`secret_env`: {var} is not set"))?;
            ensure!(secret.len() >= MIN_SECRET_BYTES, "`secret_env`: {var} must be at least {MIN_SECRET_BYTES} bytes");
            Some(Webhook { url, secret: Secret::from(secret) })
        }
        (None, None) => None,
        _ => bail!("`webhook` and `secret_env` go together"),
    };
    let email = given
        .email
        .map(|address| address.parse::<lettre::Address>().map_err(|_| anyhow::anyhow!("`email` is not an address")))
        .transpose()?;
    ensure!(webhook.is_some() || email.is_some(), "give a `webhook` (with `secret_env`), an `email`, or both");
    Ok(Contact { webhook, email })
}

/// `HH:MM-HH:MM`, the start before the end.
fn parse_hours(text: &str) -> anyhow::Result<Hours> {
    let minutes = |part: &str| -> Option<u16> {
        let (h, m) = part.trim().split_once(':')?;
        let (h, m): (u16, u16) = (h.parse().ok()?, m.parse().ok()?);
        (h <= 24 && m < 60 && h * 60 + m <= 24 * 60).then_some(h * 60 + m)
    };
    let parsed =
        text.split_once('-').and_then(|(start, end)| Some(Hours { start: minutes(start)?, end: minutes(end)? }));
    match parsed {
        Some(hours) if hours.start < hours.end => Ok(hours),
        _ => bail!("`working_hours` must be `HH:MM-HH:MM`, the start before the end (e.g. `09:00-17:00`)"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "a-webhook-secret-of-at-least-32-bytes!";

    fn env(name: &str) -> Option<String> {
        (name == "SECRET").then(|| SECRET.to_owned())
    }

    const GOOD: &str = r#"
dashboard_url = "https://tether.example/"
[smtp]
host = "127.0.0.1"
port = 2525
security = "none"
from = "Tether <tether@example.org>"
[teams.team-south]
working_hours = "08:30-18:00"
lead_minutes = 20
on_call = { email = "on-call@example.org" }
[teams.team-south.contacts.care_coordinator]
webhook = "https://hooks.example/cc"
secret_env = "SECRET"
email = "cc@example.org"
"#;

    #[test]
    fn a_good_file_reads() {
        let alerts = Alerts::parse(GOOD, &env).expect("a good file");
        let south = &alerts.teams["team-south"];
        assert_eq!(south.hours, Hours { start: 8 * 60 + 30, end: 18 * 60 });
        assert_eq!(south.lead, SignedDuration::from_mins(20));
        assert!(!south.include_patient_ref);
        let (whom, contact) = south.contact("care_coordinator", true);
        assert_eq!(whom, Whom::Role("care_coordinator".into()));
        assert!(contact.webhook.is_some());
        assert_eq!(south.contact("care_coordinator", false).0, Whom::OnCall);
        assert_eq!(south.contact("team_manager", true).0, Whom::OnCall);
        assert_eq!(
            alerts.episode_url(episode::EpisodeId::from_uuid(uuid::Uuid::nil())),
            format!("https://tether.example/dashboard/episodes/{}", episode::EpisodeId::from_uuid(uuid::Uuid::nil()))
        );
        // The secret is never shown.
        assert!(!format!("{alerts:?}").contains(SECRET));
    }

    #[test]
    fn the_example_file_reads() {
        let text = include_str!("../../../docs/examples/alerts.toml");
        let env = |name: &str| Some(format!("{name}-is-a-long-enough-secret-for-the-example"));
        let alerts = Alerts::parse(text, &env).expect("the example file");
        assert_eq!(alerts.teams["south"].contact("team_manager", true).0, Whom::Role("team_manager".into()));
    }

    #[test]
    fn mistakes_are_refused_naming_the_field() {
        let cases = [
            (GOOD.replace("08:30-18:00", "18:00-08:30"), "working_hours"),
            (GOOD.replace("lead_minutes = 20", "lead_minutes = 5000"), "lead_minutes"),
            (GOOD.replace("secret_env = \"SECRET\"", "secret_env = \"MISSING\""), "MISSING is not set"),
            (GOOD.replace("https://hooks.example/cc", "http://hooks.example/cc"), "https://"),
            (GOOD.replace("contacts.care_coordinator", "contacts.janitor"), "not an owner role"),
            (GOOD.replace("cc@example.org", "not an address"), "`email`"),
            (GOOD.replace("host = \"127.0.0.1\"", "host = \"smtp.example\""), "loopback"),
            (GOOD.replace("teams.team-south", "teams.\"Team South\""), "not a team id"),
            (GOOD.replace("[smtp]", "[smtp]\nextra = 1"), "extra"),
        ];
        for (text, expected) in cases {
            let error = format!("{:#}", Alerts::parse(&text, &env).expect_err(expected));
            assert!(error.contains(expected), "{expected}: {error}");
            assert!(!error.contains(SECRET));
        }
    }
}
