//! The dashboard's sessions: a random token in a `tether_session` cookie, kept in the
//! database only as its SHA-256, with a CSRF token that every form carries back.
//!
//! A session lasts [`SESSION_TTL_SECS`] from sign-in, ends at sign-out, and stops working
//! at once when its user is disabled: the user is read again on every request, as
//! `AuthUser` does for the API.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Redirect, Response};
use sha2::{Digest, Sha256};

use crate::AppState;
use crate::accounts::{self, User};
use crate::audit::{Via, Who};
use crate::auth::token::{Keys, hmac, random_bytes, to_hex};
use crate::error::AppError;
use crate::store::{StoreError, Tx};

/// The cookie's name.
pub const COOKIE: &str = "tether_session";
/// A dashboard sign-in lasts a working day.
pub const SESSION_TTL_SECS: i64 = 8 * 60 * 60;
/// The form field that carries the CSRF token.
pub const CSRF_FIELD: &str = "csrf";
/// The sign-in form's cookie: before there is a session, it carries a random value (the
/// pre-session), and the form's CSRF token is an HMAC, under a key only the server holds
/// (`Keys::form_key`), of that value and the time the form was made. A token that merely
/// equals a cookie proves nothing (whoever can plant a cookie can write the same value
/// in a form); this one only the server makes, for this browser's value, and only for
/// `LOGIN_TTL_SECS`. The cookie is `SameSite=Strict` as well, and a form a browser says
/// came from another site (`Sec-Fetch-Site: cross-site`) is refused.
pub const LOGIN_COOKIE: &str = "tether_login";
/// How long the sign-in form may stay open.
pub const LOGIN_TTL_SECS: i64 = 60 * 60;

/// A new session's secrets: the cookie's token and the forms' CSRF token.
#[derive(Debug)]
pub struct NewSession {
    pub token: String,
    pub csrf: String,
}

pub(crate) fn hash(token: &str) -> String {
    to_hex(&Sha256::digest(token.as_bytes()))
}

/// Starts a dashboard session for `user` (and clears every expired one, so that the
/// table holds only live sessions).
pub fn start(tx: &mut dyn Tx, user: &User, now: i64) -> Result<NewSession, AppError> {
    let token = to_hex(&random_bytes::<32>()?);
    let csrf = to_hex(&random_bytes::<32>()?);
    tx.start_dashboard_session(&hash(&token), &user.id, &csrf, now, now + SESSION_TTL_SECS)?;
    Ok(NewSession { token, csrf })
}

/// Ends a session: its row is deleted, so the cookie signs no one in any more.
pub fn end(tx: &mut dyn Tx, session_hash: &str) -> Result<(), StoreError> {
    tx.end_dashboard_session(session_hash)
}

/// The `Set-Cookie` value for a new session.
///
/// `Secure` is set only when the request came over HTTPS (through a TLS-terminating proxy
/// that says so). `tether serve` itself speaks plain HTTP on loopback, and a browser
/// drops a `Secure` cookie set over plain HTTP (Chromium does, even on 127.0.0.1), so
/// always setting it would make the dashboard unusable there and in the browser test. A
/// client that forges `X-Forwarded-Proto` only makes its own cookie stricter.
pub fn cookie(token: &str, secure: bool) -> String {
    let secure = if secure { "; Secure" } else { "" };
    format!("{COOKIE}={token}; HttpOnly; SameSite=Strict; Path=/dashboard; Max-Age={SESSION_TTL_SECS}{secure}")
}

/// The `Set-Cookie` value that makes the browser forget the session.
pub fn cleared_cookie(secure: bool) -> String {
    let secure = if secure { "; Secure" } else { "" };
    format!("{COOKIE}=; HttpOnly; SameSite=Strict; Path=/dashboard; Max-Age=0{secure}")
}

/// A new sign-in form's token, and the `Set-Cookie` value that carries its pre-session
/// value.
pub fn login_token(keys: &Keys, now: i64, secure: bool) -> Result<(String, String), AppError> {
    let nonce = to_hex(&random_bytes::<32>()?);
    let token = form_token(keys, &nonce, now);
    let secure = if secure { "; Secure" } else { "" };
    let cookie = format!(
        "{LOGIN_COOKIE}={nonce}; HttpOnly; SameSite=Strict; Path=/dashboard/login; Max-Age={LOGIN_TTL_SECS}{secure}"
    );
    Ok((token, cookie))
}

/// `ISSUED.HMAC(form key, "login" NUL nonce NUL ISSUED)`, in hex.
fn form_token(keys: &Keys, nonce: &str, issued: i64) -> String {
    let message = format!("tether-login\0{nonce}\0{issued}");
    format!("{issued}.{}", to_hex(&hmac(keys.form_key(), message.as_bytes())))
}

/// The `Set-Cookie` value that makes the browser forget the sign-in form's token.
pub fn cleared_login_cookie(secure: bool) -> String {
    let secure = if secure { "; Secure" } else { "" };
    format!("{LOGIN_COOKIE}=; HttpOnly; SameSite=Strict; Path=/dashboard/login; Max-Age=0{secure}")
}

/// Whether a sign-in form's token is one this server made, within `LOGIN_TTL_SECS`, for
/// the pre-session value this browser's cookie carries, and the form did not come from
/// another site.
pub fn login_token_valid(keys: &Keys, headers: &HeaderMap, presented: Option<&str>, now: i64) -> bool {
    let cross_site = headers.get("sec-fetch-site").is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"cross-site"));
    let (Some(nonce), Some(presented)) = (cookie_value(headers, LOGIN_COOKIE), presented) else { return false };
    let Some(issued) = presented.split_once('.').and_then(|(issued, _)| issued.parse::<i64>().ok()) else {
        return false;
    };
    // A little leeway for another replica's clock, none for a form older than its time.
    let fresh = issued <= now + 60 && now - issued <= LOGIN_TTL_SECS;
    !cross_site && fresh && same_secret(presented, &form_token(keys, &nonce, issued))
}

/// Whether the request came over HTTPS, as a proxy in front of the server reports it.
pub fn over_https(headers: &HeaderMap) -> bool {
    let forwarded_proto = headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("https"));
    let forwarded = headers
        .get(header::FORWARDED)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split([';', ',']).any(|part| part.trim().eq_ignore_ascii_case("proto=https")));
    forwarded_proto || forwarded
}

/// The value of the cookie `name` a request carries, if any.
pub(crate) fn cookie_value(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(cookie, _)| *cookie == name)
        .map(|(_, value)| value.trim().to_owned())
        .filter(|value| !value.is_empty())
}

/// Compares two secrets in time that depends only on their lengths.
pub fn same_secret(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The signed-in dashboard user: who they are (read again from the database), and their
/// session's CSRF token.
#[derive(Debug, Clone)]
pub struct DashUser {
    pub user: User,
    pub csrf: String,
    /// The SHA-256 of the cookie's token, in hex: the session's id.
    pub session: String,
}

impl DashUser {
    /// The user as the audit log names them: the dashboard is their device, with the
    /// start of the session's hash (never the token) to tell two sign-ins apart.
    pub fn who(&self) -> Who {
        Who {
            user_id: self.user.id.to_string(),
            username: self.user.username.clone(),
            device: format!("dashboard:{}", &self.session[..8.min(self.session.len())]),
            via: Via::Dashboard,
        }
    }

    /// Whether a form's CSRF token is this session's.
    pub fn csrf_matches(&self, presented: Option<&str>) -> bool {
        presented.is_some_and(|presented| same_secret(presented, &self.csrf))
    }
}

/// A request without a live session: the browser is sent to the sign-in form.
#[derive(Debug)]
pub enum NoSession {
    SignIn,
    Failed(AppError),
}

impl IntoResponse for NoSession {
    fn into_response(self) -> Response {
        match self {
            Self::SignIn => {
                let mut response = Redirect::to("/dashboard/login").into_response();
                response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
                response
            }
            Self::Failed(error) => super::pages::error_page(error),
        }
    }
}

impl FromRequestParts<AppState> for DashUser {
    type Rejection = NoSession;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let Some(token) = cookie_value(&parts.headers, COOKIE) else { return Err(NoSession::SignIn) };
        let session = hash(&token);
        let now = state.clock.unix();
        let found = state
            .db
            .call(move |conn| {
                let Some((user_id, csrf)) = conn.dashboard_session(&session, now)? else { return Ok(None) };
                Ok(accounts::active_user(conn, &user_id)?.map(|user| Self { user, csrf, session }))
            })
            .await
            .map_err(NoSession::Failed)?;
        found.ok_or(NoSession::SignIn)
    }
}
