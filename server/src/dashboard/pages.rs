//! The dashboard's markup: maud templates, checked at compile time and HTML-escaped
//! throughout. No JavaScript: every change is a plain form that posts and is redirected
//! back. The style sheet is inline and small, and lays the pages out for a tablet as well
//! as a desk.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use episode::pathway::{Action, Evaluation, Role, State, Warning, WarningCode};
use std::collections::HashMap;

use episode::{EpisodeId, Event, EventBody, EventId};
use jiff::Timestamp;
use jiff::tz::TimeZone;
use maud::{DOCTYPE, Markup, PreEscaped, html};
use serde_json::Value;

use super::session::{CSRF_FIELD, DashUser};
use super::{Caseload, Filters, TEAM_BASE, TeamRates};
use crate::caseload::Rates;
use crate::error::AppError;
use crate::office::{AuditRead, Read, json_time};
use crate::owners::{Basis, Owner};
use crate::store::OutboxRow;

/// The share of appointments to which children were not brought across eight health
/// providers (pathway.md, WNB): 1 in 10.
pub(crate) const NOT_BROUGHT_REFERENCE: (i64, i64) = (1, 10);

static LONDON: TimeZone = jiff::tz::get!("Europe/London");

const CSS: &str = r#"
:root { --ink: #1d2330; --muted: #5a6272; --line: #d7dbe3; --bg: #f6f7f9; --accent: #1f5aa6;
        --late: #a4161a; --late-bg: #fde8e8; --warn-bg: #fff4d6; --ok: #2b6a3a; }
* { box-sizing: border-box; }
body { margin: 0; font: 17px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif;
       color: var(--ink); background: var(--bg); }
header.top { display: flex; flex-wrap: wrap; gap: .5rem 1rem; align-items: center;
             padding: .6rem 1rem; background: #fff; border-bottom: 1px solid var(--line); }
header.top .brand { font-weight: 700; font-size: 1.2rem; color: var(--accent); text-decoration: none; }
header.top .who { margin-left: auto; color: var(--muted); }
header.top nav { display: flex; gap: 1rem; }
main { max-width: 72rem; margin: 0 auto; padding: 1rem; }
h1 { font-size: 1.6rem; margin: .4rem 0 1rem; }
h2 { font-size: 1.25rem; margin: 1.6rem 0 .6rem; }
section { background: #fff; border: 1px solid var(--line); border-radius: 8px; padding: .4rem 1rem 1rem;
          margin-bottom: 1rem; }
a { color: var(--accent); }
/* A word too long for its line breaks rather than widen a page. In a table a cell still
   asks for its longest word (`break-word`, not `anywhere`), so that a tight table does not
   squeeze names into a letter a line; device names, which can be long ids, may break
   anywhere (but keep room for "dashboard:"), and on a phone (below) every cell may. */
td, dd, p, li, .who { overflow-wrap: break-word; }
td.device, dd, p, li, .who { overflow-wrap: anywhere; }
td.device { min-width: 11ch; }
.muted, .utc { color: var(--muted); }
.utc { font-size: .85em; white-space: nowrap; }
.scroll { overflow-x: auto; }
table { border-collapse: collapse; width: 100%; }
th, td { text-align: left; padding: .5rem .6rem; border-bottom: 1px solid var(--line); vertical-align: top; }
th { font-size: .85rem; text-transform: uppercase; letter-spacing: .03em; color: var(--muted); }
td.patient { white-space: nowrap; }
td.n { text-align: right; font-variant-numeric: tabular-nums; }
.badge { display: inline-block; padding: .05rem .5rem; border-radius: 999px; font-size: .85rem;
         font-weight: 600; background: #e8ecf3; white-space: nowrap; }
.badge.overdue { background: var(--late-bg); color: var(--late); }
.badge.done { color: var(--ok); }
tr[data-state="overdue"] td:first-child { border-left: 4px solid var(--late); }
.rate { font-size: 1.05rem; margin: .3rem 0; }
.rate.above { color: var(--late); font-weight: 600; }
.notice { background: var(--warn-bg); border-radius: 6px; padding: .6rem .8rem; margin: .5rem 0; }
ol.timeline { list-style: none; padding: 0; margin: 0; }
ol.timeline li { border-left: 3px solid var(--line); padding: .4rem 0 .8rem 1rem; margin-left: .3rem; }
ol.timeline li:target, tr:target { background: #eef4ff; }
.kind { font-weight: 600; }
dl.fields { display: grid; grid-template-columns: max-content minmax(0, 1fr); gap: .1rem 1rem; margin: .3rem 0; }
dl.fields dt { color: var(--muted); }
dl.fields dd { margin: 0; }
form.inline { display: inline; }
form.row, div.row { display: flex; flex-wrap: wrap; gap: .5rem; align-items: center; margin-top: .4rem; }
div.unfiled { padding: .3rem 0; }
input[type=checkbox] { width: 1.3rem; height: 1.3rem; vertical-align: middle; }
button, input[type=text], input[type=password] { font: inherit; padding: .55rem .8rem; border-radius: 6px;
       border: 1px solid var(--line); min-height: 44px; }
button { background: var(--accent); color: #fff; border-color: var(--accent); cursor: pointer; }
button.quiet { background: #fff; color: var(--accent); }
a.button { display: block; text-align: center; padding: .65rem .8rem; border-radius: 6px; min-height: 44px;
           background: var(--accent); color: #fff; text-decoration: none; font-weight: 600; }
.login { max-width: 24rem; margin: 3rem auto; }
.login label { display: block; margin: .8rem 0 .2rem; font-weight: 600; }
.login input { width: 100%; }
.login button { margin-top: 1rem; width: 100%; }
.error { color: var(--late); font-weight: 600; }
.role { color: var(--muted); font-size: .85em; }
.done { background: #e6f4ea; border: 1px solid #b7dfc2; border-radius: 6px; padding: .6rem .8rem; margin: .5rem 0 1rem; }
form.filters { display: flex; flex-wrap: wrap; gap: .5rem 1rem; align-items: center; margin: .2rem 0 .6rem; }
form.filters label { display: inline-flex; gap: .4rem; align-items: center; }
select { font: inherit; padding: .5rem; border-radius: 6px; border: 1px solid var(--line); min-height: 44px;
         max-width: 100%; background: #fff; }
p.pages { display: flex; gap: 1rem; flex-wrap: wrap; }
@media (max-width: 700px) {
  body { font-size: 16px; }
  main { padding: .5rem; }
  section { padding: .3rem .6rem .8rem; }
  th, td { padding: .4rem; }
  td { overflow-wrap: anywhere; }
  dl.fields { grid-template-columns: minmax(0, 1fr); }
  dl.fields dd { margin-bottom: .3rem; }
  /* A row becomes a card: each cell on its own line under its column's name. */
  table.stack thead { display: none; }
  table.stack, table.stack tbody, table.stack tr, table.stack td { display: block; width: 100%; }
  table.stack tr { border: 1px solid var(--line); border-radius: 8px; margin: .6rem 0; padding: .2rem .6rem; }
  table.stack td { border: 0; padding: .3rem 0; display: grid; grid-template-columns: 6.5rem minmax(0, 1fr);
                   gap: .6rem; text-align: left; }
  table.stack td::before { content: attr(data-label); color: var(--muted); font-size: .8rem; font-weight: 600;
                           text-transform: uppercase; letter-spacing: .03em; padding-top: .15rem; }
  table.stack td.n { text-align: left; }
  tr[data-state="overdue"] td:first-child { border-left: 0; }
  table.stack tr[data-state="overdue"] { border-left: 4px solid var(--late); }
}
"#;

/// A whole page: the header (with sign-out when someone is signed in) and `body`.
pub(crate) fn layout(title: &str, user: Option<&DashUser>, body: Markup) -> Markup {
    layout_moving_to(title, None, user, body)
}

/// A whole page that moves on to `to` by itself (a meta refresh) when given.
fn layout_moving_to(title: &str, to: Option<&str>, user: Option<&DashUser>, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en-GB" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                @if let Some(to) = to {
                    meta http-equiv="refresh" content=(format!("0; url={to}"));
                }
                title { (title) " — Tether" }
                style { (PreEscaped(CSS)) }
            }
            body {
                header.top {
                    a.brand href="/dashboard" { "Tether" }
                    @if let Some(user) = user {
                        nav {
                            a href="/dashboard" { "Caseload" }
                            @if crate::audit::may_read(user.user.role) { a href="/dashboard/audit" { "Audit log" } }
                        }
                        span.who {
                            "Signed in as " strong { (user.user.username) }
                            " (" (words(user.user.role.as_str())) ", " (user.user.teams.iter().map(crate::accounts::TeamId::as_str).collect::<Vec<_>>().join(", ")) ")"
                        }
                        form.inline method="post" action="/dashboard/logout" {
                            input type="hidden" name=(CSRF_FIELD) value=(user.csrf);
                            button.quiet type="submit" { "Sign out" }
                        }
                    }
                }
                main { (body) }
            }
        }
    }
}

/// A "Sign in with …" button: the provider's id and name.
#[derive(Debug)]
pub(crate) struct ProviderButton {
    pub(crate) id: String,
    pub(crate) name: String,
}

/// The sign-in page: a "Sign in with …" button for each identity provider, the password
/// form (with its CSRF token) unless passwords are switched off, and a message after a
/// failed attempt.
pub(crate) fn login(
    message: Option<&str>,
    username: &str,
    csrf: &str,
    providers: &[ProviderButton],
    passwords: bool,
) -> Markup {
    layout(
        "Sign in",
        None,
        html! {
            section.login {
                h1 { "Sign in" }
                p.muted { "The team's caseload, overdue actions and episode timelines." }
                @if let Some(message) = message {
                    p.error role="alert" { (message) }
                }
                @for provider in providers {
                    p { a.button href=(format!("/dashboard/oidc/{}/start", provider.id)) data-provider=(provider.id) {
                        "Sign in with " (provider.name)
                    } }
                }
                @if passwords {
                    @if !providers.is_empty() {
                        p.muted { "Or with a Tether username and password:" }
                    }
                    form method="post" action="/dashboard/login" {
                        input type="hidden" name=(CSRF_FIELD) value=(csrf);
                        label for="username" { "Username" }
                        input #username type="text" name="username" value=(username) autocomplete="username"
                            autocapitalize="none" required autofocus;
                        label for="password" { "Password" }
                        input #password type="password" name="password" autocomplete="current-password" required;
                        button type="submit" { "Sign in" }
                    }
                }
            }
        },
    )
}

/// A sign-in with an identity provider that did not happen: why, and what to do.
pub(crate) fn sign_in_refused(message: &str, advice: &str) -> Markup {
    layout(
        "Not signed in",
        None,
        html! {
            section.login #refused {
                h1 { "Not signed in" }
                p.error role="alert" { (message) }
                p { (advice) }
                p { a href="/dashboard/login" { "Back to the sign-in page" } }
            }
        },
    )
}

/// After a sign-in with an identity provider: moves on to the caseload by itself.
pub(crate) fn signed_in(username: &str) -> Markup {
    layout_moving_to(
        "Signed in",
        Some("/dashboard"),
        None,
        html! {
            section.login #signed-in {
                h1 { "Signed in" }
                p { "Signed in as " strong { (username) } "." }
                p { a href="/dashboard" { "Continue to the caseload" } }
            }
        },
    )
}

/// A page for a request that failed: not found (another team's episode answers exactly
/// as one that does not exist), refused, or broken (logged, never shown).
pub(crate) fn error_page(error: AppError) -> Response {
    let (title, message) = match &error {
        AppError::EpisodeNotFound(_) | AppError::NotFound => {
            ("Not found", "There is no such episode among your teams' episodes.".to_owned())
        }
        AppError::InvalidBody(m) => ("Not saved", format!("That could not be saved: {m}.")),
        AppError::InvalidQuery(m) => ("Not understood", format!("That address could not be read: {m}.")),
        AppError::Forbidden(m) => ("Not allowed", format!("{m}.")),
        _ => ("Something went wrong", "Something went wrong on the server; it has been logged.".to_owned()),
    };
    // The JSON answer's status, and its logging of an internal error's cause.
    let status = error.into_response().status();
    (status, message_page(title, &message)).into_response()
}

/// A page that says one thing, with the way back.
pub(crate) fn message_page(title: &str, message: &str) -> Markup {
    layout(
        title,
        None,
        html! {
            section {
                h1 { (title) }
                p { (message) }
                p { a href="/dashboard" { "Back to the caseload" } }
            }
        },
    )
}

/// The answer to a form whose CSRF token is missing or not the session's.
pub(crate) fn forbidden_form() -> Response {
    (
        StatusCode::FORBIDDEN,
        message_page(
            "Form refused",
            "This form did not come from your current dashboard session, so nothing was changed. \
             Reload the page and try again.",
        ),
    )
        .into_response()
}

/// `GET /dashboard`: open actions (overdue first, then by owner), the episodes with their
/// counts, and each team's appointment rates; the filters' form above them.
pub(crate) fn caseload(user: &DashUser, data: &Caseload, filters: &Filters, now: Timestamp) -> Markup {
    let overdue = data.actions.iter().filter(|a| a.overdue).count();
    layout(
        "Caseload",
        Some(user),
        html! {
            h1 { "Caseload" }
            p.muted { "As of " (when(now)) "." }
            (filter_form(data, filters))
            section #actions {
                h2 { "Open actions" }
                @if data.actions.is_empty() {
                    p { @if filters.any() { "No open action matches the filters." } @else { "No open actions." } }
                } @else {
                    p {
                        (data.actions.len()) " open"
                        @if filters.any() { " of " (data.totals.actions) " (filtered)" }
                        ", of which " strong { (overdue) " overdue" } ". Overdue first, then by owner."
                        @if !data.filing.is_empty() { " Records to file in the EPR are listed below, an episode a line." }
                    }
                    table.stack {
                        thead { tr { th { "Status" } th { "Action" } th { "Owner" } th { "Due" } th { "Patient" } } }
                        tbody {
                            @for action in &data.actions {
                                tr data-state=(if action.overdue { "overdue" } else { "open" }) {
                                    td data-label="Status" {
                                        @if action.overdue { span.badge.overdue { "Overdue" } }
                                        @else { span.badge { "Open" } }
                                    }
                                    td data-label="Action" {
                                        span {
                                            a href={ "/dashboard/episodes/" (action.episode) "#action-" (action.action) } {
                                                (code_title(&action.code))
                                            }
                                            @if action.priority != "routine" {
                                                " " span.badge data-priority=(action.priority) { (words(&action.priority)) }
                                            }
                                        }
                                    }
                                    td.owner data-label="Owner" { (owner_cell(data.owner(action), &action.owner)) }
                                    td data-label="Due" { span { (when(action.due)) } }
                                    td.patient data-label="Patient" { a href={ "/dashboard/episodes/" (action.episode) } { (action.patient_ref) } }
                                }
                            }
                        }
                    }
                }
            }
            section #filing {
                h2 { "Records to file in the EPR" }
                @if data.filing.is_empty() {
                    p { "Nothing to file." }
                } @else {
                    @let records: usize = data.filing.iter().map(|f| f.records).sum();
                    p {
                        (plural(records, "record")) " to file across " (plural(data.filing.len(), "episode"))
                        @if filters.any() { " (" (data.totals.filing) " episodes before the filters)" }
                        ". The team base files them; each episode's page has the form."
                    }
                    table.stack {
                        thead { tr { th { "Status" } th { "To file" } th { "First due" } th { "Automatic filing" } th { "Patient" } } }
                        tbody {
                            @for filing in &data.filing {
                                tr data-state=(if filing.overdue > 0 { "overdue" } else { "open" }) data-episode=(filing.episode) {
                                    td data-label="Status" {
                                        @if filing.overdue > 0 { span.badge.overdue { (filing.overdue) " overdue" } }
                                        @else { span.badge { "Open" } }
                                    }
                                    td data-label="To file" {
                                        a href={ "/dashboard/episodes/" (filing.episode) "#unfiled" } {
                                            (plural(filing.records, "record")) " to file"
                                        }
                                    }
                                    td data-label="First due" { span { (when(filing.due)) } }
                                    td.epr data-label="Automatic filing" {
                                        @if filing.failed > 0 || filing.retrying > 0 {
                                            span.badge.overdue { "filing failed: " (filing.reason.as_deref().unwrap_or("no reason given")) }
                                            " " (filing.retrying) " retrying, " (filing.failed) " failed"
                                        } @else if filing.queued > 0 {
                                            (filing.queued) " being filed"
                                        }
                                    }
                                    td.patient data-label="Patient" { a href={ "/dashboard/episodes/" (filing.episode) } { (filing.patient_ref) } }
                                }
                            }
                        }
                    }
                }
            }
            section #episodes {
                h2 { "Episodes" }
                @if data.summaries.is_empty() {
                    p { @if filters.any() { "No episode matches the filters." } @else { "Your teams have no episodes." } }
                } @else {
                    @if filters.any() { p { (data.summaries.len()) " of " (data.totals.episodes) " episodes (filtered)." } }
                    table.stack {
                        thead { tr {
                            th { "Patient" } th { "Team" } th { "Pathway" } th { "Open" } th { "Overdue" }
                            th { "Conflicts" } th { "To file" } th { "Likely duplicates" }
                        } }
                        tbody {
                            @for s in &data.summaries {
                                tr data-state=(if s.overdue_actions > 0 { "overdue" } else { "open" }) {
                                    td.patient data-label="Patient" { a href={ "/dashboard/episodes/" (s.id) } { (s.patient_ref) } }
                                    td data-label="Team" { (s.team) }
                                    td data-label="Pathway" { (words(&s.pathway)) }
                                    td.n data-label="Open" { (s.open_actions) }
                                    td.n data-label="Overdue" { @if s.overdue_actions > 0 { span { span.badge.overdue { (s.overdue_actions) } } } @else { "0" } }
                                    td.n data-label="Conflicts" { (s.conflicts) }
                                    td.n data-label="To file" { (s.unfiled) }
                                    td.n data-label="Duplicates" { (s.duplicates) }
                                }
                            }
                        }
                    }
                }
            }
            section #rates {
                h2 { "Appointments in the last " (super::RATE_DAYS) " days" }
                @for team in &data.rates {
                    (rates(team))
                }
            }
        },
    )
}

/// The caseload's filters as a plain GET form: a page anyone can bookmark, and nothing
/// for a script to do.
fn filter_form(data: &Caseload, filters: &Filters) -> Markup {
    const PATHWAYS: [&str; 5] =
        ["urgent_referral", "routine_referral", "in_service", "home_treatment", "child_not_brought"];
    let chosen_pathway =
        filters.pathway.and_then(|p| serde_json::to_value(p).ok()).and_then(|v| v.as_str().map(str::to_owned));
    // The person asked for stays in the list even when nothing of theirs is open now.
    let mut people = data.people.clone();
    if let Some(owner) = filters.owner.as_ref().filter(|o| o.as_str() != TEAM_BASE && !people.contains(o)) {
        people.push(owner.clone());
        people.sort();
    }
    html! {
        form.filters #filters method="get" action="/dashboard" role="search" aria-label="Filter the caseload" {
            label { input type="checkbox" name="overdue" value="1" checked[filters.overdue]; "Overdue only" }
            label { input type="checkbox" name="urgent" value="1" checked[filters.urgent]; "Urgent only" }
            label {
                "Owner "
                select name="owner" {
                    option value="" { "Anyone" }
                    @for person in &people {
                        option value=(person) selected[filters.owner.as_deref() == Some(person.as_str())] { (person) }
                    }
                    option value=(TEAM_BASE) selected[filters.owner.as_deref() == Some(TEAM_BASE)] { "Team base" }
                }
            }
            label {
                "Pathway "
                select name="pathway" {
                    option value="" { "Any" }
                    @for pathway in PATHWAYS {
                        option value=(pathway) selected[chosen_pathway.as_deref() == Some(pathway)] { (capitalise(&words(pathway))) }
                    }
                }
            }
            button type="submit" { "Filter" }
            @if filters.any() { a href="/dashboard" { "Clear the filters" } }
        }
    }
}

/// Who answers for an action: the people by name, with the role beside them (and why
/// those people, when it is not plain).
fn owner_cell(owner: Option<&Owner>, role: &str) -> Markup {
    let role_text = words(role);
    let Some(owner) = owner else {
        return html! { span.role { (role_text) } };
    };
    html! {
        span {
            @if owner.people.is_empty() {
                @match owner.basis {
                    Basis::Team => strong { "Team base" },
                    _ => strong { "No one named" },
                }
            } @else {
                strong { (owner.people.join(", ")) }
            }
            " " span.role {
                "(" (role_text)
                @match (owner.basis, owner.role) {
                    (Basis::OpenedBy, _) => { "; no care coordinator set: opened the episode" }
                    (Basis::Recorded, _) => { "; made the visit" }
                    (Basis::TeamManagers, Role::OnCallManager) => { "; out of hours, the trust's on-call rota" }
                    (Basis::TeamManagers, _) if owner.people.is_empty() => { "; the team has no manager in Tether" }
                    _ => {}
                }
                ")"
            }
        }
    }
}

/// "1 record", "4 records".
fn plural(count: usize, noun: &str) -> String {
    if count == 1 { format!("1 {noun}") } else { format!("{count} {noun}s") }
}

fn rates(team: &TeamRates) -> Markup {
    let r = &team.rates;
    let (one, ten) = NOT_BROUGHT_REFERENCE;
    // Above the reference: not_brought / appointments > 1 / 10.
    let above = r.appointments > 0 && r.not_brought * ten > one * r.appointments;
    html! {
        div.team data-team=(r.team) {
            h3 { (team.name) }
            @if r.appointments == 0 {
                p { "No appointments recorded in the last " (r.days) " days." }
            } @else {
                p.rate.above[above] data-rate="not_brought" {
                    "Not brought: " (share(r, r.not_brought))
                    " — reference: " (one) " in " (ten) " (" (percent(one, ten)) ")"
                    @if above { " — above the reference" }
                }
                p.rate data-rate="did_not_attend" { "Did not attend: " (share(r, r.did_not_attend)) }
            }
        }
    }
}

/// "3 of 25 appointments (12%)".
fn share(rates: &Rates, count: i64) -> String {
    format!("{count} of {} appointments ({})", rates.appointments, percent(count, rates.appointments))
}

/// A whole percentage, rounded half up.
fn percent(count: i64, total: i64) -> String {
    if total <= 0 {
        return "–".into();
    }
    format!("{}%", (count * 200 + total) / (total * 2))
}

/// `GET /dashboard/episodes/{id}`: everything about one episode, with its alerts; what
/// the change just made did, when `done` names its record.
pub(crate) fn episode(
    user: &DashUser,
    read: &Read,
    owners: &HashMap<uuid::Uuid, Owner>,
    alerts: &[OutboxRow],
    done: Option<EventId>,
    now: Timestamp,
) -> Markup {
    let episode = &read.episode;
    let id = episode.id;
    let timeline = read.timeline();
    let (current, past): (Vec<&Action>, Vec<&Action>) =
        read.evaluation.actions.iter().partition(|a| matches!(a.state, State::Open | State::Overdue | State::Upcoming));
    let mut current = current;
    // Overdue first, then open, then what comes next; each by due time.
    current.sort_by_key(|a| {
        let rank = match a.state {
            State::Overdue => 0,
            State::Open => 1,
            _ => 2,
        };
        (rank, a.due)
    });
    let title = format!("Episode {}", episode.patient_ref.as_str());
    layout(
        &title,
        Some(user),
        html! {
            p { a href="/dashboard" { "← Caseload" } }
            @if let Some(done) = done.and_then(|id| timeline.iter().find(|e| e.id == id && e.by == user.user.username)) {
                (done_notice(done, &timeline))
            }
            h1 { "Episode " (episode.patient_ref.as_str()) }
            p.muted {
                (capitalise(&fact_text(&episode.to_json(), "pathway"))) " · team " (episode.team)
                " · opened " (when(episode.opened_at)) " by " (episode.opened_by)
                " · as of " (when(now))
                @if crate::audit::may_read(user.user.role) {
                    " · " a href={ "/dashboard/audit?episode=" (id) } { "its audit log" }
                }
            }
            @if !read.evaluation.warnings.is_empty() {
                section #warnings {
                    h2 { "Warnings" }
                    @for warning in &read.evaluation.warnings {
                        (warning_item(warning, &timeline))
                    }
                }
            }
            section #conflicts {
                h2 { "Conflicts" }
                @if read.conflicts.is_empty() {
                    p { "No conflicts." }
                } @else {
                    p.muted { "Devices recorded different values at the same time. Until someone chooses, the rules use the safer one." }
                    @for conflict in &read.conflicts {
                        div.conflict data-field=(conflict.field) {
                            p {
                                strong { (words(conflict.field)) } ": "
                                (conflict.values.iter().map(value_text).collect::<Vec<_>>().join(" or "))
                            }
                            form.row method="post" action={ "/dashboard/episodes/" (id) "/facts" } {
                                input type="hidden" name=(CSRF_FIELD) value=(user.csrf);
                                input type="hidden" name="field" value=(conflict.field);
                                span { "Keep:" }
                                @for value in &conflict.values {
                                    button type="submit" name="value" value=(value.to_string()) { (value_text(value)) }
                                }
                            }
                        }
                    }
                }
            }
            section #actions {
                h2 { "Actions" }
                @if current.is_empty() {
                    p { "Nothing is due." }
                } @else {
                    (action_table(&current, episode.id, &timeline, owners))
                }
                @if !past.is_empty() {
                    details {
                        summary { "Done or cancelled (" (past.len()) ")" }
                        (action_table(&past, episode.id, &timeline, owners))
                    }
                }
            }
            @if !alerts.is_empty() {
                section #alerts {
                    h2 { "Alerts" }
                    p.muted { "Alerts to the owners of urgent actions, by webhook and email, and whether each was delivered." }
                    (alert_table(alerts, &read.evaluation))
                }
            }
            section #unfiled {
                h2 { "Records to file in the EPR" }
                @if read.unfiled.is_empty() {
                    p { "Nothing to file." }
                } @else {
                    p.muted { "Tick the records filed under one EPR reference; all are ticked to start with." }
                    form method="post" action={ "/dashboard/episodes/" (id) "/filed" } {
                        input type="hidden" name=(CSRF_FIELD) value=(user.csrf);
                        @for unfiled in &read.unfiled {
                            @let event = timeline.iter().find(|e| e.id == unfiled.record);
                            div.unfiled data-record=(unfiled.record) {
                                label {
                                    input type="checkbox" name="record" value=(unfiled.record) checked;
                                    " "
                                    @if let Some(event) = event {
                                        (kind_text(event)) " by " (event.by) ", " (when(event.at))
                                    } @else {
                                        "Record " (unfiled.record)
                                    }
                                    " — file by " (when(unfiled.due))
                                    @if unfiled.overdue { " " span.badge.overdue { "Overdue" } }
                                }
                                @if let Some(event) = event {
                                    " " a href={ "#record-" (event.id) } { "see the record" }
                                }
                            }
                        }
                        div.row {
                            label { "EPR reference " input type="text" name="epr_ref" required maxlength="200"; }
                            button type="submit" { "Mark as filed" }
                        }
                    }
                }
            }
            @if !read.duplicates.is_empty() {
                section #duplicates {
                    h2 { "Likely duplicates" }
                    @for duplicate in &read.duplicates {
                        p {
                            (capitalise(&words(duplicate.kind)))
                            @if let (Some(field), Some(target)) = (duplicate.target_field, &duplicate.target) {
                                " (" (words(field)) ": " (field_value(&Value::String(target.clone()), &timeline)) ")"
                            }
                            " recorded " (duplicate.records.len()) " times from different devices: "
                            @for (i, record) in duplicate.records.iter().enumerate() {
                                @if i > 0 { ", " }
                                (record_link(*record, &timeline))
                            }
                        }
                    }
                }
            }
            section #facts {
                h2 { "Facts" }
                (facts(&episode.to_json()))
                @if !episode.plan.is_empty() {
                    h3 { "Joint plan" }
                    p { (episode.plan) }
                }
            }
            section #timeline {
                h2 { "Timeline" }
                p.muted { "Every record, in the order it happened, from every device." }
                ol.timeline {
                    @for event in &timeline {
                        (timeline_item(event, &read.evaluation.warnings, &timeline))
                    }
                }
            }
        },
    )
}

fn action_table(
    actions: &[&Action],
    episode: EpisodeId,
    timeline: &[&Event],
    owners: &HashMap<uuid::Uuid, Owner>,
) -> Markup {
    html! {
        table.stack {
            thead { tr { th { "Action" } th { "Status" } th { "Due" } th { "Owner" } th { "Why" } } }
            tbody {
                @for action in actions {
                    tr #{ "action-" (action.id) } data-state=(state_name(action.state)) {
                        td data-label="Action" { span { (action.title) br; span.muted { (action.code.as_str()) } } }
                        td data-label="Status" {
                            span {
                                span.badge.overdue[action.state == State::Overdue].done[action.state == State::Done] {
                                    (capitalise(state_name(action.state)))
                                }
                                @if action.late { " " span.badge { "late" } }
                                @if let Some(by) = action.resolved_by { br; "by " (record_link(by, timeline)) }
                            }
                        }
                        td data-label="Due" {
                            span {
                                (when(action.due))
                                @if action.state == State::Upcoming { br; span.muted { "from " (when(action.active_from)) } }
                            }
                        }
                        td.owner data-label="Owner" { (owner_cell(owners.get(&action.id), &action.owner.to_string())) }
                        td data-label="Why" {
                            span {
                                "Policy section " (action.cites) ", after "
                                @if action.trigger == *episode.as_uuid() { "the episode was opened" }
                                @else { (record_link(action.trigger.into(), timeline)) }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// What the change that made `record` did, in words: the confirmation a change lands on.
fn done_notice(record: &Event, timeline: &[&Event]) -> Markup {
    html! {
        div.done #done role="status" data-done=(record.body.kind()) {
            strong { "Saved. " }
            @match &record.body {
                EventBody::FactChanged(changed) => {
                    (capitalise(&words(changed.field.as_str()))) " is now " strong { (value_text(&changed.value.to_json())) } "."
                }
                EventBody::FiledToEpr(filed) => {
                    (capitalise(&plural(filed.records.len(), "record"))) " filed under EPR reference " strong { (filed.epr_ref) } ": "
                    @for (i, filed) in filed.records.iter().enumerate() {
                        @if i > 0 { ", " }
                        (record_link(*filed, timeline))
                    }
                    "."
                }
                _ => { (kind_text(record)) " recorded." }
            }
            " Recorded by " (record.by) " at " (local(record.at))
            "; the phones receive it at their next sync. " a href={ "#record-" (record.id) } { "See it in the timeline" }
        }
    }
}

/// `GET /dashboard/audit`: a page of the audit log, newest first, with the way to older
/// entries.
pub(crate) fn audit(user: &DashUser, read: &AuditRead, episode: Option<EpisodeId>, before: Option<i64>) -> Markup {
    let older = if read.more { read.entries.last().map(|e| e.n) } else { None };
    let query = |before: i64| match episode {
        Some(id) => format!("/dashboard/audit?episode={id}&before={before}"),
        None => format!("/dashboard/audit?before={before}"),
    };
    layout(
        "Audit log",
        Some(user),
        html! {
            p { a href="/dashboard" { "← Caseload" } }
            h1 { "Audit log" }
            p.muted {
                @match episode {
                    Some(id) => { "Every read and write of " a href={ "/dashboard/episodes/" (id) } { "this episode" } ", newest first. " a href="/dashboard/audit" { "The whole team's" } "." }
                    None => { "Every read and write of your teams' episodes, newest first." }
                }
                " Reading this page is itself in the log."
            }
            section #audit {
                @if read.entries.is_empty() {
                    p { @if before.is_some() { "No older entries." } @else { "Nothing in the log yet." } }
                } @else {
                    table.stack {
                        thead { tr { th { "Entry" } th { "When" } th { "Who" } th { "Device" } th { "Via" } th { "What" } th { "Episode" } } }
                        tbody {
                            @for entry in &read.entries {
                                tr data-n=(entry.n) data-action=(entry.action) {
                                    td.n data-label="Entry" { (entry.n) }
                                    td data-label="When" { span { (when(entry.at)) } }
                                    td data-label="Who" { (entry.username) }
                                    td.device data-label="Device" { (entry.device) }
                                    td data-label="Via" { (enum_text(&entry.via)) }
                                    td data-label="What" {
                                        span {
                                            (capitalise(&words(&entry.action)))
                                            @if let Some(detail) = &entry.detail { " " span.muted { (words(detail)) } }
                                        }
                                    }
                                    td data-label="Episode" {
                                        @match entry.episode.as_deref() {
                                            Some(e) => a href={ "/dashboard/episodes/" (e) } title=(e) { (e.get(..8).unwrap_or(e)) "…" },
                                            None => "—",
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
                p.pages {
                    @if before.is_some() {
                        a href=(match episode { Some(id) => format!("/dashboard/audit?episode={id}"), None => "/dashboard/audit".to_owned() }) { "Newest entries" }
                    }
                    @if let Some(n) = older { a rel="next" href=(query(n)) { "Older entries" } }
                }
            }
        },
    )
}

fn warning_item(warning: &Warning, timeline: &[&Event]) -> Markup {
    let record = warning.record.as_deref().and_then(|r| r.parse::<uuid::Uuid>().ok());
    html! {
        div.notice data-warning=(enum_text(&warning.code)) {
            strong { (words(&enum_text(&warning.code))) } ": " (warning.message)
            @if let Some(field) = warning.field { " (" (words(field.as_str())) ")" }
            @if let Some(record) = record { " — " (record_link(record.into(), timeline)) }
        }
    }
}

fn timeline_item(event: &Event, warnings: &[Warning], timeline: &[&Event]) -> Markup {
    let skewed = warnings
        .iter()
        .any(|w| w.code == WarningCode::ClockSkew && w.record.as_deref() == Some(event.id.to_string().as_str()));
    let body = serde_json::to_value(&event.body).unwrap_or(Value::Null);
    let fields: Vec<(&String, &Value)> =
        body.as_object().map(|o| o.iter().filter(|(k, _)| k.as_str() != "kind").collect()).unwrap_or_default();
    html! {
        li #{ "record-" (event.id) } data-kind=(event.body.kind()) {
            div { span.kind { (kind_text(event)) } " — " (when(event.at)) }
            dl.fields {
                @for (key, value) in &fields {
                    @if key.as_str() == "location" {
                        dt { "Location" } dd { (location(value)) }
                    } @else {
                        dt { (capitalise(&words(key))) } dd { (field_value(value, timeline)) }
                    }
                }
                @if let Some(note) = &event.note { dt { "Note" } dd { (note) } }
                dt { "Recorded by" } dd { (event.by) " on " (event.device) }
                dt { "Received" } dd {
                    @match event.received_at {
                        Some(at) => (when(at)),
                        None => "not yet",
                    }
                }
            }
            @if skewed {
                p.notice data-warning="clock_skew" {
                    "Clock skew: this record's time is more than 5 minutes after the server received it. "
                    "Check the clock of " (event.device) "."
                }
            }
        }
    }
}

fn location(value: &Value) -> Markup {
    let get = |k: &str| value.get(k).and_then(Value::as_f64);
    match (get("lat"), get("lon")) {
        (Some(lat), Some(lon)) => html! {
            (format!("{lat:.5}, {lon:.5}"))
            @if let Some(accuracy) = get("accuracy") { " (within " (format!("{accuracy:.0}")) " m)" }
        },
        _ => html! { (value_text(value)) },
    }
}

/// A field's value in words; a record id becomes a link to the record.
fn field_value(value: &Value, timeline: &[&Event]) -> Markup {
    match value {
        Value::String(s) => match s.parse::<episode::EventId>() {
            Ok(id) if timeline.iter().any(|e| e.id == id) => record_link(id, timeline),
            _ => html! { (value_text(value)) },
        },
        Value::Array(items) => html! {
            @for (i, item) in items.iter().enumerate() {
                @if i > 0 { ", " }
                (field_value(item, timeline))
            }
        },
        _ => html! { (value_text(value)) },
    }
}

/// A link to a record in the timeline, named by its kind and time.
fn record_link(id: episode::EventId, timeline: &[&Event]) -> Markup {
    match timeline.iter().find(|e| e.id == id) {
        Some(event) => html! {
            a href={ "#record-" (id) } { (kind_text(event).to_lowercase()) " on " (local(event.at)) }
        },
        None => html! { "record " (id) },
    }
}

fn facts(json: &Value) -> Markup {
    const SHOWN_ELSEWHERE: [&str; 8] =
        ["id", "patient_ref", "team", "opened_at", "opened_by", "plan", "events", "pathway"];
    let Some(object) = json.as_object() else { return html! {} };
    html! {
        dl.fields {
            @for (key, value) in object.iter().filter(|(k, _)| !SHOWN_ELSEWHERE.contains(&k.as_str())) {
                dt { (capitalise(&words(key))) }
                dd {
                    @if let Value::Array(values) = value {
                        span.badge.overdue { "conflict" } " "
                        (values.iter().map(value_text).collect::<Vec<_>>().join(" or "))
                    } @else {
                        (value_text(value))
                    }
                }
            }
        }
    }
}

fn fact_text(json: &Value, field: &str) -> String {
    json.get(field).map(value_text).unwrap_or_default()
}

/// A JSON value in words: `true` is "yes", `not_brought` is "not brought"; free text is
/// left as written.
fn value_text(value: &Value) -> String {
    match value {
        Value::Null => "not set".into(),
        Value::Bool(true) => "yes".into(),
        Value::Bool(false) => "no".into(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => words(s),
        Value::Array(items) => items.iter().map(value_text).collect::<Vec<_>>().join(", "),
        Value::Object(map) => {
            map.iter().map(|(k, v)| format!("{}: {}", words(k), value_text(v))).collect::<Vec<_>>().join("; ")
        }
    }
}

/// A snake_case name in words (`did_not_attend` -> "did not attend"); anything else (free
/// text, references) is left as it is. Names are ASCII identifiers, so the possessive
/// of `childrens_services` (a fact, a party) is put back: "children's services".
pub(crate) fn words(name: &str) -> String {
    if !name.is_empty() && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_') {
        name.split('_').map(|word| if word == "childrens" { "children's" } else { word }).collect::<Vec<_>>().join(" ")
    } else {
        name.to_owned()
    }
}

fn kind_text(event: &Event) -> String {
    capitalise(&words(event.body.kind()))
}

fn capitalise(text: &str) -> String {
    let mut chars = text.chars();
    chars.next().map_or_else(String::new, |first| first.to_uppercase().chain(chars).collect())
}

fn code_title(code: &str) -> String {
    episode::pathway::Code::ALL
        .iter()
        .find(|c| c.as_str() == code)
        .map_or_else(|| capitalise(&words(code)), |c| c.title().to_owned())
}

fn state_name(state: State) -> &'static str {
    match state {
        State::Upcoming => "upcoming",
        State::Open => "open",
        State::Overdue => "overdue",
        State::Done => "done",
        State::Cancelled => "cancelled",
    }
}

fn enum_text<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_value(value).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default()
}

/// A moment in Europe/London time (as the team lives it), with UTC beside it.
fn when(at: Timestamp) -> Markup {
    html! {
        time datetime=(json_time(at)) { (local(at)) }
        " " span.utc { "(" (at.strftime("%Y-%m-%d %H:%M UTC")) ")" }
    }
}

fn local(at: Timestamp) -> String {
    at.to_zoned_datetime(LONDON.clone()).strftime("%a %-d %b %Y, %H:%M %Z").to_string()
}

/// The episode's alerts: which action and moment, how, and where each stands.
fn alert_table(alerts: &[OutboxRow], evaluation: &Evaluation) -> Markup {
    let ms = |at: i64| Timestamp::from_millisecond(at).ok();
    html! {
        table.stack {
            thead { tr { th { "Action" } th { "Alert" } th { "By" } th { "State" } th { "Attempts" } th { "When" } } }
            tbody {
                @for alert in alerts {
                    // `<kind>:<action id>:<moment>` (`alerts::dedupe_key`).
                    @let mut parts = alert.dedupe_key.splitn(3, ':').skip(1);
                    @let (action, moment) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
                    @let title = evaluation.actions.iter().find(|a| a.id.to_string() == action).map(|a| a.title.to_string());
                    tr.alert data-state=(alert.state) data-key=(alert.dedupe_key) {
                        td data-label="Action" { (title.unwrap_or_else(|| action.to_owned())) }
                        td data-label="Alert" { (words(moment)) }
                        td data-label="By" { (if alert.kind == crate::alerts::KIND_EMAIL { "email" } else { "webhook" }) }
                        td data-label="State" {
                            span.badge.(alert_badge(&alert.state)) { (words(&alert.state)) }
                            @if let Some(error) = &alert.last_error { @if alert.state != "sent" { " " span.muted { (error) } } }
                        }
                        td data-label="Attempts" { (alert.attempts) }
                        td data-label="When" {
                            @match (alert.state.as_str(), alert.sent_at.and_then(ms), ms(alert.next_attempt_at)) {
                                ("sent", Some(at), _) => { "sent " (when(at)) }
                                ("retrying", _, Some(next)) => { "next try " (when(next)) }
                                _ => { @if let Some(at) = ms(alert.created_at) { "raised " (when(at)) } }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// The style of an alert's state: delivered, still trying, or given up.
fn alert_badge(state: &str) -> &'static str {
    match state {
        "sent" => "done",
        "failed" => "overdue",
        _ => "open",
    }
}

#[cfg(test)]
mod tests {
    use super::{capitalise, words};

    #[test]
    fn names_read_as_words_and_the_possessive_keeps_its_apostrophe() {
        assert_eq!(capitalise(&words("childrens_services_involved")), "Children's services involved");
        assert_eq!(words("childrens_services"), "children's services");
        assert_eq!(words("did_not_attend"), "did not attend");
        // Free text and references are left as written.
        assert_eq!(words("childrens"), "children's");
        assert_eq!(words("Childrens_x"), "Childrens_x");
        assert_eq!(words("EPR-1"), "EPR-1");
    }
}
