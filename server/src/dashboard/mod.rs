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
//!   the records to file in the EPR as one line an episode ("4 records to file"), the
//!   episodes with their counts, and the "not brought" and "did not attend" rates.
//! - `GET /dashboard/episodes/{id}`: facts, conflicts, actions and why each is due, the
//!   merged timeline, records to file, likely duplicates and warnings.
//! - `POST /dashboard/episodes/{id}/facts`: resolves a conflict (`office::set_fact`).
//! - `POST /dashboard/episodes/{id}/filed`: files the records ticked under one EPR
//!   reference (`office::record` of one `filed_to_epr`).
//!
//! Every read and write goes through `office`, so each writes its audit entry, marked
//! `via: dashboard` on the device `dashboard:<session>`. Every form carries the session's
//! CSRF token; a form without it, or with another, answers 403 and changes nothing.
//! `session` keeps the cookies, `pages` the markup.

pub mod oidc;
mod pages;
pub mod session;

use axum::Router;
use axum::extract::rejection::FormRejection;
use axum::extract::{Form, Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::map_response;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use episode::EpisodeId;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::AppState;
use crate::auth::{self, store::Throttled};
use crate::caseload::{self, OpenAction, Rates, Summary};
use crate::client::ClientAddr;
use crate::error::AppError;
use crate::office::{self, Desk, NewRecord};
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

fn team_name(tx: &mut dyn Tx, team: &str) -> Result<String, StoreError> {
    Ok(tx.team_name(team)?.unwrap_or_else(|| team.to_owned()))
}

async fn caseload_page(State(state): State<AppState>, user: DashUser) -> Response {
    let now = state.clock.now();
    let data = office::at_desk(&state, user.who(), user.user.teams.clone(), move |desk| {
        // `list` brings the summaries up to date (and notes each episode shown in the
        // audit log); the open actions and rates are read from those summaries.
        let summaries = office::list(desk)?;
        let (actions, filing) = split_filing(caseload::open_actions(desk.conn, desk.teams)?);
        let mut rates = Vec::with_capacity(desk.teams.len());
        for team in desk.teams {
            rates.push(TeamRates {
                name: team_name(desk.conn, team)?,
                rates: caseload::rates(desk.conn, team, desk.now, RATE_DAYS)?,
            });
        }
        Ok(Caseload { summaries, actions, filing, rates })
    })
    .await;
    match data {
        Ok(data) => pages::caseload(&user, &data, now).into_response(),
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

async fn episode_page(State(state): State<AppState>, user: DashUser, Path(id): Path<String>) -> Response {
    let Some(id) = episode_id(&id) else { return pages::error_page(AppError::NotFound) };
    let now = state.clock.now();
    let read = office::at_desk(&state, user.who(), user.user.teams.clone(), move |desk| {
        office::read(desk, id, crate::audit::AuditAction::ReadEpisode)
    })
    .await;
    match read {
        Ok(read) => pages::episode(&user, &read, now).into_response(),
        Err(error) => pages::error_page(error),
    }
}

/// Makes one change to an episode from a checked form, then sends the browser back to
/// the episode's page (303 See Other).
async fn change(
    state: AppState,
    user: DashUser,
    id: String,
    form: Result<Form<Fields>, FormRejection>,
    make: impl FnOnce(&mut Desk<'_>, EpisodeId, &Fields) -> Result<(), AppError> + Send + 'static,
) -> Response {
    let Some(fields) = checked(&user, form) else { return pages::forbidden_form() };
    let Some(id) = episode_id(&id) else { return pages::error_page(AppError::NotFound) };
    let made = office::at_desk(&state, user.who(), user.user.teams.clone(), move |desk| make(desk, id, &fields)).await;
    match made {
        Ok(()) => Redirect::to(&format!("/dashboard/episodes/{id}")).into_response(),
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
        office::set_fact(desk, id, name, value).map(drop)
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
        office::record(desk, id, NewRecord { kind: "filed_to_epr".into(), at: None, fields: record_fields }).map(drop)
    })
    .await
}
