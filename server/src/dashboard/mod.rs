//! The manager's dashboard: server-rendered HTML under `/dashboard`, for a desk or a
//! tablet, with no JavaScript.
//!
//! - `GET /dashboard/login`, `POST /dashboard/login`: sign-in with the same password check
//!   and failed sign-in throttle as `POST /v1/auth/login` (`auth::sign_in`); as there is
//!   no session yet, the form's CSRF token is an HMAC (a server key) of the time and a
//!   pre-session value the `tether_login` cookie carries.
//! - `GET /dashboard/oidc/{provider}/start`, `GET /dashboard/oidc/callback`: sign-in with
//!   the trust's identity provider (`oidc`). With passwords switched off, the sign-in page
//!   offers only the providers and `POST /dashboard/login` refuses.
//! - `POST /dashboard/logout`: ends the session.
//! - `GET /dashboard`: the teams' open clinical actions (overdue first, then by owner),
//!   each owner named as the people the role means (`owners`), the records to file in the
//!   EPR as one line an episode ("4 records to file"), the episodes with their counts,
//!   and the "not brought" and "did not attend" rates. `?overdue=1&urgent=1&owner=NAME&
//!   pathway=P` filters them (a plain GET form).
//! - `GET /dashboard/episodes/{id}`: facts, conflicts, actions and why each is due (and
//!   who answers for it), the merged timeline, records to file, likely duplicates and
//!   warnings. `?done=RECORD` says what the change that made that record did.
//! - `POST /dashboard/episodes/{id}/facts`: resolves a conflict (`office::set_fact`).
//! - `POST /dashboard/episodes/{id}/filed`: files the records ticked under one EPR
//!   reference (`office::record` of one `filed_to_epr`).
//! - `GET /dashboard/audit`: the audit log of the teams' episodes, newest first, 50 to a
//!   page (`?before=N`), or one episode's (`?episode=ID`): team managers and admins.
//!
//! Each change answers `303 See Other` to the episode's page with `?done=` naming the
//! record it made, and the page says what was done, in words, from that record (a link
//! naming another episode's record, or someone else's, says nothing).
//!
//! Every read and write goes through `office`, so each writes its audit entry, marked
//! `via: dashboard` on the device `dashboard:<session>`. Every form carries the session's
//! CSRF token; a form without it, or with another, answers 403 and changes nothing.
//! `session` keeps the cookies, `pages` the markup.

pub mod oidc;
mod pages;
pub mod session;

use axum::Router;
use axum::extract::rejection::{FormRejection, QueryRejection};
use axum::extract::{Form, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::map_response;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use std::collections::HashMap;

use episode::{EpisodeId, EventId};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::AppState;
use crate::accounts::TeamId;
use crate::audit;
use crate::auth::{self, store::Throttled};
use crate::caseload::{self, OpenAction, Rates, Summary};
use crate::client::ClientAddr;
use crate::error::AppError;
use crate::office::{self, Desk, NewRecord};
use crate::owners::Owner;
use crate::store::{StoreError, Tx};
use session::{CSRF_FIELD, DashUser};

/// The window of the caseload's appointment rates.
pub const RATE_DAYS: i64 = 90;

pub(crate) fn router() -> Router<AppState> {
    Router::new()
        .route("/dashboard", get(caseload_page))
        .route("/dashboard/login", get(login_page).post(login))
        .route("/dashboard/logout", post(logout))
        .route("/dashboard/oidc/{provider}/start", get(oidc::start))
        .route(oidc::CALLBACK, get(oidc::callback))
        .route("/dashboard/episodes/{id}", get(episode_page))
        .route("/dashboard/episodes/{id}/facts", post(resolve))
        .route("/dashboard/episodes/{id}/filed", post(filed))
        .route("/dashboard/audit", get(audit_page))
        .layer(map_response(protect))
}

/// Headers on every dashboard answer: pages hold patient data, so nothing is cached or
/// framed, no referrer leaves with an episode's address, and the content security policy
/// allows no script at all (the pages have none) and forms only to the dashboard itself.
async fn protect(mut response: Response) -> Response {
    let headers = response.headers_mut();
    for (name, value) in [
        (header::CACHE_CONTROL, "no-store"),
        (
            header::CONTENT_SECURITY_POLICY,
            "default-src 'none'; style-src 'unsafe-inline'; img-src 'self'; form-action 'self'; \
             frame-ancestors 'none'; base-uri 'none'",
        ),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "no-referrer"),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
    response
}

/// What the caseload page shows.
#[derive(Debug)]
pub(crate) struct Caseload {
    pub(crate) summaries: Vec<Summary>,
    /// The open clinical actions: every open action but filing.
    pub(crate) actions: Vec<OpenAction>,
    /// The records to file in the EPR, one line an episode.
    pub(crate) filing: Vec<Filing>,
    pub(crate) rates: Vec<TeamRates>,
    /// Who answers for each open action, by episode and action id.
    pub(crate) owners: HashMap<EpisodeId, HashMap<uuid::Uuid, Owner>>,
    /// Everyone the open actions name, for the owner filter.
    pub(crate) people: Vec<String>,
    /// How many of each list there are before filtering.
    pub(crate) totals: Totals,
}

/// The caseload's lists' lengths before the filters.
#[derive(Debug, Default)]
pub(crate) struct Totals {
    pub(crate) actions: usize,
    pub(crate) filing: usize,
    pub(crate) episodes: usize,
}

impl Caseload {
    /// The owner of an open action, if the rule could name one.
    pub(crate) fn owner(&self, action: &OpenAction) -> Option<&Owner> {
        let id = action.action.parse::<uuid::Uuid>().ok()?;
        self.owners.get(&action.episode)?.get(&id)
    }
}

/// The owner filter's value for the team base, which no username can be (usernames have
/// no spaces).
pub(crate) const TEAM_BASE: &str = "team base";

/// The caseload's filters, from the query of its GET form.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Filters {
    pub(crate) overdue: bool,
    pub(crate) urgent: bool,
    /// A username, or [`TEAM_BASE`].
    pub(crate) owner: Option<String>,
    pub(crate) pathway: Option<episode::Pathway>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FilterQuery {
    overdue: Option<String>,
    urgent: Option<String>,
    owner: Option<String>,
    pathway: Option<String>,
}

impl Filters {
    /// Reads the form's query: a box is ticked when present with any value but empty (a
    /// form sends `on`, a link `1`); an empty owner or pathway is any. An unknown pathway
    /// or field is refused, naming it.
    fn parse(query: Result<Query<FilterQuery>, QueryRejection>) -> Result<Self, AppError> {
        let Query(query) = query.map_err(|_| {
            AppError::InvalidQuery("the caseload filters are overdue, urgent, owner and pathway".into())
        })?;
        let ticked = |value: Option<String>| value.is_some_and(|v| !v.is_empty());
        let pathway = match query.pathway.filter(|p| !p.is_empty()) {
            None => None,
            Some(name) => Some(serde_json::from_value(Value::String(name)).map_err(|_| {
                AppError::InvalidQuery(
                    "pathway: not a pathway (urgent_referral, routine_referral, in_service, home_treatment, \
                     child_not_brought)"
                        .into(),
                )
            })?),
        };
        let owner = query.owner.map(|o| o.trim().to_owned()).filter(|o| !o.is_empty());
        if owner.as_ref().is_some_and(|o| o.chars().count() > 200) {
            return Err(AppError::InvalidQuery("owner: a name is at most 200 characters".into()));
        }
        Ok(Self { overdue: ticked(query.overdue), urgent: ticked(query.urgent), owner, pathway })
    }

    pub(crate) fn any(&self) -> bool {
        *self != Self::default()
    }

    /// Whether an owner is the one the filter asks for.
    fn owned_by(&self, owner: Option<&Owner>) -> bool {
        match (&self.owner, owner) {
            (None, _) => true,
            (Some(wanted), Some(owner)) if wanted == TEAM_BASE => owner.role == episode::pathway::Role::TeamBase,
            (Some(wanted), Some(owner)) => owner.includes(wanted),
            (Some(_), None) => false,
        }
    }
}

/// Applies the filters to the caseload's lists (their lengths before are kept in
/// `totals`). An episode stays when it has an open action that passes them all (or,
/// filtering only by pathway, when it is on that pathway).
fn filter(data: &mut Caseload, filters: &Filters) {
    data.totals = Totals { actions: data.actions.len(), filing: data.filing.len(), episodes: data.summaries.len() };
    if !filters.any() {
        return;
    }
    let pathway_of: HashMap<EpisodeId, String> = data.summaries.iter().map(|s| (s.id, s.pathway.clone())).collect();
    let on_pathway = |episode: &EpisodeId| match filters.pathway {
        None => true,
        Some(pathway) => pathway_of
            .get(episode)
            .is_some_and(|p| serde_json::to_value(pathway).ok() == Some(Value::String(p.clone()))),
    };
    let actions: Vec<OpenAction> = std::mem::take(&mut data.actions)
        .into_iter()
        .filter(|a| {
            (!filters.overdue || a.overdue)
                && (!filters.urgent || a.priority == "urgent")
                && on_pathway(&a.episode)
                && filters.owned_by(data.owner(a))
        })
        .collect();
    // Filing is the team base's, routine, one line an episode.
    let filing_owned = filters.owner.as_deref().is_none_or(|o| o == TEAM_BASE);
    data.filing
        .retain(|f| filing_owned && !filters.urgent && (!filters.overdue || f.overdue > 0) && on_pathway(&f.episode));
    let with_actions: std::collections::HashSet<EpisodeId> =
        actions.iter().map(|a| a.episode).chain(data.filing.iter().map(|f| f.episode)).collect();
    let only_pathway = !filters.overdue && !filters.urgent && filters.owner.is_none();
    data.summaries.retain(|s| on_pathway(&s.id) && (only_pathway || with_actions.contains(&s.id)));
    data.actions = actions;
}

/// An episode's open `file_to_epr` actions, as one line of the caseload: a record each.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Filing {
    pub(crate) episode: EpisodeId,
    pub(crate) patient_ref: String,
    pub(crate) records: usize,
    pub(crate) overdue: usize,
    /// The earliest of their deadlines.
    pub(crate) due: jiff::Timestamp,
    /// Of its records owed to the EPR by automatic filing (`--epr-fhir`): those waiting
    /// for their first attempt or being sent, those to be tried again, those failed for
    /// good (until `tether outbox retry`), and why the last attempt failed.
    pub(crate) queued: i64,
    pub(crate) retrying: i64,
    pub(crate) failed: i64,
    pub(crate) reason: Option<String>,
}

/// Puts what automatic filing says of each episode's records (`epr`, the outbox) on its
/// line.
fn add_filing_state(tx: &mut dyn Tx, teams: &[TeamId], lines: &mut [Filing]) -> Result<(), StoreError> {
    for team in teams {
        for count in crate::epr::status(tx, team)? {
            let Some(line) = lines.iter_mut().find(|l| l.episode == count.episode) else { continue };
            match count.state.as_str() {
                "retrying" => line.retrying += count.count,
                "failed" => line.failed += count.count,
                _ => line.queued += count.count,
            }
            if count.state != "pending" && count.last_error.is_some() {
                line.reason = count.last_error;
            }
        }
    }
    Ok(())
}

/// Splits the caseload's open actions into the clinical ones, in their order, and the
/// records to file, grouped per episode (overdue first, then by the earliest deadline).
/// Filing is one action per record: in the demo most of the open actions (23 of north's
/// 38 at the tests' clock), which would bury the clinical ones a person must act on.
pub(crate) fn split_filing(actions: Vec<OpenAction>) -> (Vec<OpenAction>, Vec<Filing>) {
    let (filing, clinical): (Vec<OpenAction>, Vec<OpenAction>) =
        actions.into_iter().partition(|a| a.code == episode::pathway::Code::FileToEpr.as_str());
    let mut groups: Vec<Filing> = Vec::new();
    for action in filing {
        match groups.iter_mut().find(|g| g.episode == action.episode) {
            Some(group) => {
                group.records += 1;
                group.overdue += usize::from(action.overdue);
                group.due = group.due.min(action.due);
            }
            None => groups.push(Filing {
                episode: action.episode,
                patient_ref: action.patient_ref,
                records: 1,
                overdue: usize::from(action.overdue),
                due: action.due,
                queued: 0,
                retrying: 0,
                failed: 0,
                reason: None,
            }),
        }
    }
    groups
        .sort_by(|a, b| (b.overdue > 0).cmp(&(a.overdue > 0)).then(a.due.cmp(&b.due)).then(a.episode.cmp(&b.episode)));
    (clinical, groups)
}

/// A team's appointment rates, with the team's name.
#[derive(Debug)]
pub(crate) struct TeamRates {
    pub(crate) name: String,
    pub(crate) rates: Rates,
}

fn team_name(tx: &mut dyn Tx, team: &TeamId) -> Result<String, StoreError> {
    Ok(tx.team_name(team)?.unwrap_or_else(|| team.to_string()))
}

async fn caseload_page(
    State(state): State<AppState>,
    user: DashUser,
    query: Result<Query<FilterQuery>, QueryRejection>,
) -> Response {
    let filters = match Filters::parse(query) {
        Ok(filters) => filters,
        Err(error) => return pages::error_page(error),
    };
    let now = state.clock.now();
    let data = office::at_desk(&state, user.who(), user.user.teams.clone(), move |desk| {
        // `list` brings the summaries up to date (and notes each episode shown in the
        // audit log); the open actions and rates are read from those summaries.
        let summaries = office::list(desk)?;
        let (actions, mut filing) = split_filing(caseload::open_actions(desk.conn, desk.teams)?);
        add_filing_state(desk.conn, desk.teams, &mut filing)?;
        let mut rates = Vec::with_capacity(desk.teams.len());
        for team in desk.teams {
            rates.push(TeamRates {
                name: team_name(desk.conn, team)?,
                rates: caseload::rates(desk.conn, team, desk.now, RATE_DAYS)?,
            });
        }
        let mut with_actions: Vec<EpisodeId> = actions.iter().map(|a| a.episode).collect();
        with_actions.sort();
        with_actions.dedup();
        let owners = office::owners(desk, &with_actions)?;
        let mut people: Vec<String> = actions
            .iter()
            .filter_map(|a| owners.get(&a.episode)?.get(&a.action.parse().ok()?))
            .flat_map(|o| o.people.iter().cloned())
            .collect();
        people.sort();
        people.dedup();
        Ok(Caseload { summaries, actions, filing, rates, owners, people, totals: Totals::default() })
    })
    .await;
    match data {
        Ok(mut data) => {
            filter(&mut data, &filters);
            pages::caseload(&user, &data, &filters, now).into_response()
        }
        Err(error) => pages::error_page(error),
    }
}

async fn login_page(
    State(state): State<AppState>,
    headers: HeaderMap,
    user: Result<DashUser, session::NoSession>,
) -> Response {
    if user.is_ok() {
        return Redirect::to("/dashboard").into_response();
    }
    login_form(&state, StatusCode::OK, None, "", &headers)
}

/// The sign-in form with a new CSRF token, and the cookie that carries its pre-session
/// value.
fn login_form(
    state: &AppState,
    status: StatusCode,
    message: Option<&str>,
    username: &str,
    headers: &HeaderMap,
) -> Response {
    let (token, cookie) = match session::login_token(&state.keys, state.clock.unix(), session::over_https(headers)) {
        Ok(made) => made,
        Err(error) => return pages::error_page(error),
    };
    let providers: Vec<pages::ProviderButton> = state
        .sign_in
        .providers
        .iter()
        .map(|p| pages::ProviderButton { id: p.settings.id.to_string(), name: p.settings.name.clone() })
        .collect();
    let page = pages::login(message, username, &token, &providers, state.sign_in.passwords);
    let mut response = (status, page).into_response();
    if let Ok(value) = HeaderValue::from_str(&cookie) {
        response.headers_mut().append(header::SET_COOKIE, value);
    }
    response
}

#[derive(Deserialize)]
struct LoginForm {
    username: String,
    password: String,
    csrf: Option<String>,
}

async fn login(
    State(state): State<AppState>,
    client: ClientAddr,
    headers: HeaderMap,
    form: Result<Form<LoginForm>, FormRejection>,
) -> Response {
    if !state.sign_in.passwords {
        let message = Some("Password sign-in is switched off here: sign in with your organisation's account.");
        return login_form(&state, StatusCode::FORBIDDEN, message, "", &headers);
    }
    let Ok(Form(LoginForm { username, password, csrf })) = form else {
        let message = Some("Enter your username and password.");
        return login_form(&state, StatusCode::BAD_REQUEST, message, "", &headers);
    };
    let now = state.clock.unix();
    // Checked before the password, so a form from elsewhere never counts as a failure.
    if !session::login_token_valid(&state.keys, &headers, csrf.as_deref(), now) {
        tracing::warn!("dashboard sign-in refused: the form's CSRF token is missing or wrong");
        let message = Some("The sign-in form had expired or did not come from this page. Sign in again.");
        return login_form(&state, StatusCode::FORBIDDEN, message, "", &headers);
    }
    let secure = session::over_https(&headers);
    let typed = username.clone();
    match auth::sign_in(&state, &client, username, password, move |tx, user| session::start(tx, user, now)).await {
        Ok((user, new)) => {
            tracing::info!(user = %user.id, "signed in to the dashboard");
            let mut response = Redirect::to("/dashboard").into_response();
            for cookie in [session::cookie(&new.token, secure), session::cleared_login_cookie(secure)] {
                match HeaderValue::from_str(&cookie) {
                    Ok(value) => response.headers_mut().append(header::SET_COOKIE, value),
                    Err(e) => return pages::error_page(AppError::internal(e)),
                };
            }
            response
        }
        Err(AppError::InvalidCredentials) => login_form(
            &state,
            StatusCode::UNAUTHORIZED,
            Some("The username or the password is wrong."),
            &typed,
            &headers,
        ),
        Err(AppError::TooManyAttempts(throttled)) => {
            let retry_after_secs = throttled.retry_after_secs();
            let minutes = (retry_after_secs + 59) / 60;
            let whose = match throttled {
                Throttled::Username { .. } => "for this username from here",
                Throttled::Client { .. } => "from here",
            };
            let message = format!(
                "Too many failed sign-ins {whose}. Try again in {minutes} minute{}.",
                if minutes == 1 { "" } else { "s" }
            );
            let mut response = login_form(&state, StatusCode::TOO_MANY_REQUESTS, Some(&message), &typed, &headers);
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(retry_after_secs));
            response
        }
        Err(other) => pages::error_page(other),
    }
}

/// A posted form's fields, as sent.
type Fields = Vec<(String, String)>;

fn field<'a>(fields: &'a Fields, name: &str) -> Option<&'a str> {
    fields.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

/// A form's fields if it carries this session's CSRF token (else the caller answers
/// [`pages::forbidden_form`]).
fn checked(user: &DashUser, form: Result<Form<Fields>, FormRejection>) -> Option<Fields> {
    let fields = form.map(|Form(fields)| fields).unwrap_or_default();
    if user.csrf_matches(field(&fields, CSRF_FIELD)) {
        Some(fields)
    } else {
        tracing::warn!("dashboard form refused: CSRF token missing or wrong");
        None
    }
}

async fn logout(
    State(state): State<AppState>,
    headers: HeaderMap,
    user: DashUser,
    form: Result<Form<Fields>, FormRejection>,
) -> Response {
    if checked(&user, form).is_none() {
        return pages::forbidden_form();
    }
    let hash = user.session.clone();
    if let Err(error) = state.db.call(move |conn| Ok(session::end(conn, &hash)?)).await {
        return pages::error_page(error);
    }
    let mut response = Redirect::to("/dashboard/login").into_response();
    if let Ok(value) = HeaderValue::from_str(&session::cleared_cookie(session::over_https(&headers))) {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    response
}

/// The `{id}` of an episode's page: anything that is not an episode id names no episode
/// (and answers as an unknown one does).
fn episode_id(id: &str) -> Option<EpisodeId> {
    id.parse().ok()
}

#[derive(Deserialize)]
struct EpisodeQuery {
    /// The record the change just made.
    done: Option<String>,
}

async fn episode_page(
    State(state): State<AppState>,
    user: DashUser,
    Path(id): Path<String>,
    query: Result<Query<EpisodeQuery>, QueryRejection>,
) -> Response {
    let Some(id) = episode_id(&id) else { return pages::error_page(AppError::NotFound) };
    // A `done` that is no record id (or a query that is not ours) only means no
    // confirmation: the page itself is what was asked for.
    let done = query.ok().and_then(|Query(q)| q.done).and_then(|d| d.parse::<EventId>().ok());
    let now = state.clock.now();
    let read = office::at_desk(&state, user.who(), user.user.teams.clone(), move |desk| {
        let read = office::read(desk, id, crate::audit::AuditAction::ReadEpisode)?;
        let directory = crate::owners::Directory::load(desk.conn, &read.episode)?;
        let owners = crate::owners::owners(&read.episode, &read.evaluation, &directory);
        // Read only once the episode is known to be the user's.
        let alerts = desk.conn.outbox_of(id, crate::alerts::KIND_PREFIX)?;
        Ok((read, owners, alerts))
    })
    .await;
    match read {
        Ok((read, owners, alerts)) => pages::episode(&user, &read, &owners, &alerts, done, now).into_response(),
        Err(error) => pages::error_page(error),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AuditPageQuery {
    episode: Option<String>,
    before: Option<String>,
}

/// The entries a page of the audit log shows.
pub(crate) const AUDIT_PAGE: usize = 50;

/// The audit log's page: for team managers and admins (anyone else gets a page saying
/// so), through `office`, so that reading it is itself an entry.
async fn audit_page(
    State(state): State<AppState>,
    user: DashUser,
    query: Result<Query<AuditPageQuery>, QueryRejection>,
) -> Response {
    if !audit::may_read(user.user.role) {
        return pages::error_page(AppError::Forbidden(audit::MAY_READ));
    }
    let Ok(Query(query)) = query else {
        return pages::error_page(AppError::InvalidQuery("the audit log's page takes episode and before".into()));
    };
    let episode = match query.episode.as_deref().filter(|e| !e.is_empty()) {
        None => None,
        Some(text) => match episode_id(text) {
            Some(id) => Some(id),
            None => return pages::error_page(AppError::NotFound),
        },
    };
    let before = match query.before.as_deref().filter(|b| !b.is_empty()) {
        None => None,
        Some(text) => match text.parse::<i64>() {
            Ok(n) if n > 0 => Some(n),
            _ => {
                return pages::error_page(AppError::InvalidQuery(
                    "before: must be an entry's number (1 or more)".into(),
                ));
            }
        },
    };
    let request = office::AuditRequest { episode, cursor: audit::Cursor::Before(before), limit: AUDIT_PAGE };
    match office::audit(&state, user.who(), user.user.role, user.user.teams.clone(), request).await {
        Ok(read) => pages::audit(&user, &read, episode, before).into_response(),
        Err(error) => pages::error_page(error),
    }
}

/// Makes one change to an episode from a checked form, then sends the browser back to
/// the episode's page (303 See Other), whose `?done=` names the record the change made,
/// so that the page says what was done.
async fn change(
    state: AppState,
    user: DashUser,
    id: String,
    form: Result<Form<Fields>, FormRejection>,
    make: impl FnOnce(&mut Desk<'_>, EpisodeId, &Fields) -> Result<EventId, AppError> + Send + 'static,
) -> Response {
    let Some(fields) = checked(&user, form) else { return pages::forbidden_form() };
    let Some(id) = episode_id(&id) else { return pages::error_page(AppError::NotFound) };
    let made = office::at_desk(&state, user.who(), user.user.teams.clone(), move |desk| make(desk, id, &fields)).await;
    match made {
        Ok(record) => Redirect::to(&format!("/dashboard/episodes/{id}?done={record}#done")).into_response(),
        Err(error) => pages::error_page(error),
    }
}

async fn resolve(
    State(state): State<AppState>,
    user: DashUser,
    Path(id): Path<String>,
    form: Result<Form<Fields>, FormRejection>,
) -> Response {
    change(state, user, id, form, |desk, id, fields| {
        let name = field(fields, "field").ok_or_else(|| AppError::InvalidBody("no fact was named".into()))?;
        // Each button carries its value as JSON, as the episode's conflict holds it.
        let value: Value = field(fields, "value")
            .and_then(|v| serde_json::from_str(v).ok())
            .ok_or_else(|| AppError::InvalidBody("no value was chosen".into()))?;
        office::set_fact(desk, id, name, value)
    })
    .await
}

async fn filed(
    State(state): State<AppState>,
    user: DashUser,
    Path(id): Path<String>,
    form: Result<Form<Fields>, FormRejection>,
) -> Response {
    change(state, user, id, form, |desk, id, fields| {
        // One reference for every record ticked: the team base files an episode's
        // records together, and one `filed_to_epr` lists them all.
        let mut records = Vec::new();
        for (_, value) in fields.iter().filter(|(k, _)| k == "record") {
            let record = value
                .parse::<uuid::Uuid>()
                .map_err(|_| AppError::InvalidBody("a record to file is not a record id".into()))?;
            if !records.contains(&record) {
                records.push(record);
            }
        }
        if records.is_empty() {
            return Err(AppError::InvalidBody("no record to file was chosen".into()));
        }
        let epr_ref = field(fields, "epr_ref").map(str::trim).unwrap_or_default();
        if epr_ref.is_empty() {
            return Err(AppError::InvalidBody("enter the record's reference in the EPR".into()));
        }
        let mut record_fields = Map::new();
        record_fields.insert("records".into(), json!(records));
        record_fields.insert("epr_ref".into(), json!(epr_ref));
        office::record(desk, id, NewRecord { kind: "filed_to_epr".into(), at: None, fields: record_fields })
    })
    .await
}
