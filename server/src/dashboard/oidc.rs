//! The dashboard's sign-in with the trust's identity provider:
//!
//! - `GET /dashboard/oidc/{provider}/start`: keeps a pending sign-in (the SHA-256 of its
//!   `state`, its nonce and PKCE verifier, for ten minutes) bound to this browser by the
//!   `tether_oidc` cookie, and sends the browser to the provider.
//! - `GET /dashboard/oidc/callback`: takes the pending sign-in of the `state` once, checks
//!   that this browser started it, has Tether exchange the code, places the person with
//!   the claims mapping, and starts a dashboard session; or shows a page that says why
//!   not.
//!
//! The `tether_oidc` cookie is `SameSite=Lax`: the provider's redirect back is a
//! cross-site navigation, which would not carry a `Strict` cookie. The session cookie is
//! `Strict`, so the callback answers with a page that moves on to `/dashboard` by itself
//! (a meta refresh, no script): a redirect would carry on the cross-site navigation, and
//! the new session cookie would not go with it.

use std::sync::Arc;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;

use super::{pages, session};
use crate::AppState;
use crate::audit::Via;
use crate::auth::store::{self, PendingSignIn};
use crate::auth::token::{random_bytes, to_hex};
use crate::error::AppError;
use crate::oidc::{self, Exchange, PENDING_TTL_SECS, SignInError, pkce};

/// The cookie that binds a sign-in at the provider to the browser that started it.
pub const COOKIE: &str = "tether_oidc";
/// The dashboard's callback path, registered with each provider (`redirect_uri`).
pub const CALLBACK: &str = "/dashboard/oidc/callback";

fn cookie(token: &str, secure: bool) -> String {
    let secure = if secure { "; Secure" } else { "" };
    format!("{COOKIE}={token}; HttpOnly; SameSite=Lax; Path=/dashboard/oidc; Max-Age={PENDING_TTL_SECS}{secure}")
}

fn cleared_cookie(secure: bool) -> String {
    let secure = if secure { "; Secure" } else { "" };
    format!("{COOKIE}=; HttpOnly; SameSite=Lax; Path=/dashboard/oidc; Max-Age=0{secure}")
}

fn with_cookies(mut response: Response, cookies: &[String]) -> Response {
    for cookie in cookies {
        match HeaderValue::from_str(cookie) {
            Ok(value) => {
                response.headers_mut().append(header::SET_COOKIE, value);
            }
            Err(e) => return pages::error_page(AppError::internal(e)),
        }
    }
    response
}

/// `GET /dashboard/oidc/{provider}/start`.
pub(super) async fn start(State(state): State<AppState>, headers: HeaderMap, Path(id): Path<String>) -> Response {
    let sign_in = Arc::clone(&state.sign_in);
    let Some(provider) = sign_in.provider(&id) else { return pages::error_page(AppError::NotFound) };
    let name = provider.settings.name.clone();
    let task = Arc::clone(&sign_in);
    let metadata = match tokio::task::spawn_blocking(move || task.provider(&id).map(oidc::Provider::metadata)).await {
        Ok(Some(Ok(metadata))) => metadata,
        Ok(Some(Err(error))) => {
            tracing::warn!(error = %error, "identity provider unavailable");
            return refused(&name, &SignInError::Provider(error));
        }
        Ok(None) => return pages::error_page(AppError::NotFound),
        Err(e) => return pages::error_page(e.into()),
    };
    let values = (|| {
        Ok::<_, AppError>((
            pkce::random_token()?,
            pkce::random_token()?,
            pkce::random_token()?,
            to_hex(&random_bytes::<32>()?),
        ))
    })();
    let Ok((state_value, nonce, verifier, browser)) = values else {
        return pages::error_page(AppError::internal(anyhow::anyhow!("no random numbers")));
    };
    let url = provider.authorization_url(
        &metadata,
        &provider.settings.redirect_uri,
        &state_value,
        &nonce,
        &pkce::challenge(&verifier),
    );
    let now = state.clock.unix();
    let pending = PendingSignIn {
        provider: provider.settings.id.to_string(),
        browser_hash: session::hash(&browser),
        nonce,
        verifier,
        expires_at: now + PENDING_TTL_SECS,
    };
    let state_hash = session::hash(&state_value);
    let kept = state
        .db
        .call(move |conn| {
            let mut tx = conn.transaction()?;
            let kept = store::put_pending_sign_in(&mut *tx, &state_hash, &pending, now)?;
            tx.commit()?;
            Ok(kept)
        })
        .await;
    match kept {
        Ok(true) => {}
        Ok(false) => {
            tracing::warn!(limit = store::MAX_PENDING_SIGN_INS, "dashboard sign-in refused: too many under way");
            let page =
                pages::sign_in_refused("Too many sign-ins are under way at the moment.", "Try again in a few minutes.");
            return (StatusCode::SERVICE_UNAVAILABLE, page).into_response();
        }
        Err(error) => return pages::error_page(error),
    }
    with_cookies(Redirect::to(&url).into_response(), &[cookie(&browser, session::over_https(&headers))])
}

#[derive(Deserialize)]
pub(super) struct Callback {
    code: Option<String>,
    state: Option<String>,
    error: Option<String>,
    error_description: Option<String>,
}

/// A page that says why a sign-in did not happen, with the way back.
fn refused(provider: &str, error: &SignInError) -> Response {
    let advice = match error {
        SignInError::NotPlaced(_) | SignInError::NoSuchTeams(_) => {
            "Ask your Tether administrator to add your role to Tether's claims mapping."
        }
        SignInError::Disabled => "Ask your Tether administrator to enable your account.",
        SignInError::Provider(oidc::ProviderError::IdToken(oidc::id_token::IdTokenError::AcrTooLow { .. })) => {
            "Sign in again with a stronger method (such as your smartcard)."
        }
        SignInError::Provider(oidc::ProviderError::Unavailable(_)) => "Try again in a few minutes.",
        SignInError::Provider(_) => "Start the sign-in again; if this happens again, tell your Tether administrator.",
    };
    let message = format!("{provider}: {error}.");
    (error.status(), pages::sign_in_refused(&message, advice)).into_response()
}

/// A sign-in that went wrong before reaching the provider's answer.
fn stale(status: StatusCode, message: &str, secure: bool) -> Response {
    with_cookies(
        (status, pages::sign_in_refused(message, "Start the sign-in again from the sign-in page.")).into_response(),
        &[cleared_cookie(secure)],
    )
}

/// `GET /dashboard/oidc/callback`.
pub(super) async fn callback(
    State(state): State<AppState>,
    headers: HeaderMap,
    query: Result<Query<Callback>, QueryRejection>,
) -> Response {
    let secure = session::over_https(&headers);
    let Ok(Query(callback)) = query else {
        return stale(StatusCode::BAD_REQUEST, "The identity provider's answer could not be read.", secure);
    };
    let Some(state_value) = callback.state.filter(|s| !s.is_empty() && s.len() <= 512) else {
        return stale(
            StatusCode::BAD_REQUEST,
            "The identity provider's answer is not for a sign-in started here.",
            secure,
        );
    };
    let state_hash = session::hash(&state_value);
    let now = state.clock.unix();
    let pending = state
        .db
        .call(move |conn| {
            let mut tx = conn.transaction()?;
            let pending = store::take_pending_sign_in(&mut *tx, &state_hash)?;
            tx.commit()?;
            Ok(pending)
        })
        .await;
    let pending = match pending {
        Ok(Some(pending)) if pending.expires_at > now => pending,
        Ok(_) => {
            return stale(StatusCode::BAD_REQUEST, "This sign-in has expired or was already used.", secure);
        }
        Err(error) => return pages::error_page(error),
    };
    let browser_matches = session::cookie_value(&headers, COOKIE)
        .is_some_and(|token| session::same_secret(&session::hash(&token), &pending.browser_hash));
    if !browser_matches {
        tracing::warn!("dashboard sign-in refused: the answer came to another browser than the one that started it");
        return stale(StatusCode::BAD_REQUEST, "This sign-in was started in another browser.", secure);
    }
    let sign_in = Arc::clone(&state.sign_in);
    let Some(provider) = sign_in.provider(&pending.provider) else {
        return stale(StatusCode::BAD_REQUEST, "This sign-in's identity provider is no longer configured.", secure);
    };
    let name = provider.settings.name.clone();
    if let Some(error) = callback.error {
        // The provider's own words (escaped on the page), shortened.
        let description: String =
            callback.error_description.unwrap_or_default().chars().filter(|c| !c.is_control()).take(200).collect();
        let error: String = error.chars().filter(|c| !c.is_control()).take(64).collect();
        tracing::info!(provider = %pending.provider, error = %error, "the identity provider refused the sign-in");
        let message = format!("{name} did not sign you in: {error} {description}");
        return with_cookies(
            (StatusCode::UNAUTHORIZED, pages::sign_in_refused(message.trim(), "Start the sign-in again if you wish."))
                .into_response(),
            &[cleared_cookie(secure)],
        );
    }
    let Some(code) = callback.code.filter(|c| !c.is_empty() && c.len() <= 2048) else {
        return stale(StatusCode::BAD_REQUEST, "The identity provider's answer has no code.", secure);
    };
    let task = Arc::clone(&sign_in);
    let provider_id = provider.settings.id.clone();
    let redirect_uri = provider.settings.redirect_uri.clone();
    let id = provider_id.clone();
    let (nonce, verifier) = (pending.nonce, pending.verifier);
    let identity = tokio::task::spawn_blocking(move || {
        let provider = task.provider(id.as_str())?;
        let exchange = Exchange { code: &code, verifier: &verifier, redirect_uri: &redirect_uri, nonce: &nonce };
        Some(provider.exchange(&exchange, now))
    })
    .await;
    let identity = match identity {
        Ok(Some(Ok(identity))) => identity,
        Ok(Some(Err(error))) => {
            let error = SignInError::Provider(error);
            tracing::warn!(provider = %provider_id, code = error.code(), error = %error, "dashboard sign-in refused");
            return with_cookies(refused(&name, &error), &[cleared_cookie(secure)]);
        }
        Ok(None) => return pages::error_page(AppError::NotFound),
        Err(e) => return pages::error_page(e.into()),
    };
    let at = state.clock.now();
    let outcome = state
        .db
        .call(move |conn| {
            let mut tx = conn.transaction()?;
            let user = match oidc::enrol(&mut *tx, &sign_in, &provider_id, &identity, at)? {
                Ok(user) => user,
                Err(error) => {
                    oidc::audit_refusal(
                        &mut *tx,
                        "dashboard",
                        Via::Dashboard,
                        &provider_id,
                        &identity,
                        &error,
                        at.as_millisecond(),
                    )?;
                    tx.commit()?;
                    return Ok(Err((error, provider_id)));
                }
            };
            let new = session::start(&mut *tx, &user, now)?;
            let device = format!("dashboard:{}", &session::hash(&new.token)[..8]);
            oidc::audit_sign_in(
                &mut *tx,
                &user,
                &device,
                Via::Dashboard,
                &provider_id,
                &identity.subject,
                at.as_millisecond(),
            )?;
            tx.commit()?;
            Ok(Ok((user, new)))
        })
        .await;
    match outcome {
        Ok(Ok((user, new))) => {
            tracing::info!(user = %user.id, "signed in to the dashboard with an identity provider");
            with_cookies(
                (StatusCode::OK, pages::signed_in(&user.username)).into_response(),
                &[session::cookie(&new.token, secure), cleared_cookie(secure)],
            )
        }
        Ok(Err((error, provider))) => {
            tracing::warn!(provider = %provider, code = error.code(), "dashboard sign-in refused");
            with_cookies(refused(&name, &error), &[cleared_cookie(secure)])
        }
        Err(error) => pages::error_page(error),
    }
}
