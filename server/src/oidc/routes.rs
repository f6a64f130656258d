//! The phones' sign-in with the trust's provider (RFC 8252), under `/v1/auth/oidc/`:
//!
//! - `POST /v1/auth/oidc/authorize` `{"provider"?, "redirect_uri"?, "code_challenge",
//!   "state", "nonce"}` → `{"provider", "authorization_url", "redirect_uri"}`: the URL
//!   for the system browser, made from the settings and the phone's own one-time values
//!   (the PKCE verifier never leaves the phone until the exchange).
//! - `POST /v1/auth/oidc/token` `{"provider", "code", "code_verifier", "redirect_uri",
//!   "nonce", "device_id", "device_key"}` → Tether's own device-bound tokens, as
//!   `POST /v1/auth/login` gives them (the device id claimed as there), with the
//!   `username`: Tether (the confidential client) exchanges the code, checks the ID token
//!   against the phone's nonce, and places the person.
//! - `GET /v1/auth/oidc/jwks`: the public keys of Tether's `private_key_jwt` clients,
//!   for registering Tether with a provider.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::client_auth::ClientAuth;
use super::{Exchange, SignIn, SignInError, pkce};
use crate::AppState;
use crate::accounts::{DeviceId, DeviceKey};
use crate::audit::Via;
use crate::auth::{self, Tokens, store};
use crate::error::AppError;
use crate::json::Json;

pub(crate) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(authorize)).routes(routes!(token)).routes(routes!(jwks))
}

/// A phone's request to start signing in with an identity provider (PKCE, S256).
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct AuthorizeRequest {
    #[serde(default)]
    provider: Option<String>,
    #[serde(default)]
    redirect_uri: Option<String>,
    code_challenge: String,
    state: String,
    nonce: String,
}

/// Where the phone sends the person to sign in.
#[derive(Serialize, utoipa::ToSchema)]
struct AuthorizeAnswer {
    provider: String,
    authorization_url: String,
    redirect_uri: String,
}

/// A `state` or `nonce` from a phone: 16 to 128 URL-safe characters.
fn one_time_value(text: &str) -> bool {
    (16..=128).contains(&text.len())
        && text.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~'))
}

/// The provider a phone names, or the only one when it names none.
fn chosen<'a>(sign_in: &'a SignIn, id: Option<&str>) -> Result<&'a super::Provider, AppError> {
    match id {
        Some(id) => sign_in
            .provider(id)
            .ok_or_else(|| AppError::InvalidBody(format!("`provider`: no such provider; {}", offered(sign_in)))),
        None if sign_in.providers.len() == 1 => Ok(&sign_in.providers[0]),
        None => Err(AppError::InvalidBody(format!("`provider`: name one; {}", offered(sign_in)))),
    }
}

fn offered(sign_in: &SignIn) -> String {
    if sign_in.providers.is_empty() {
        return "this server has no identity provider configured".into();
    }
    let ids: Vec<&str> = sign_in.providers.iter().map(|p| p.settings.id.as_str()).collect();
    format!("this server offers {}", ids.join(", "))
}

/// Starts a phone's sign-in with the trust's identity provider.
#[utoipa::path(
    post,
    path = "/v1/auth/oidc/authorize",
    tag = "auth",
    request_body = AuthorizeRequest,
    responses(
        (status = 200, description = "The provider's authorization URL", body = AuthorizeAnswer),
        crate::error::responses::NotJson,
        (status = 404, description = "No such provider", body = crate::error::ErrorBody),
        crate::error::responses::NotDeclaredJson,
        (status = 422, description = "Not an authorization request, or no provider configured", body = crate::error::ErrorBody),
        (status = 502, description = "The provider is out of reach", body = crate::error::ErrorBody),
    )
)]
async fn authorize(
    State(state): State<AppState>,
    Json(request): Json<AuthorizeRequest>,
) -> Result<axum::Json<AuthorizeAnswer>, AppError> {
    if request.code_challenge.len() != 43 || !pkce::is_verifier(&request.code_challenge) {
        return Err(AppError::InvalidBody("`code_challenge`: an S256 challenge is 43 base64url characters".into()));
    }
    if !one_time_value(&request.state) || !one_time_value(&request.nonce) {
        return Err(AppError::InvalidBody("`state` and `nonce` are 16 to 128 URL-safe characters each".into()));
    }
    let sign_in = Arc::clone(&state.sign_in);
    let provider = chosen(&sign_in, request.provider.as_deref())?;
    let redirect_uri = match request.redirect_uri {
        Some(uri) if provider.settings.phone_redirect_uris.contains(&uri) => uri,
        Some(_) => return Err(AppError::InvalidBody("`redirect_uri`: not one registered for the phones".into())),
        None => provider.settings.phone_redirect_uris.first().cloned().ok_or_else(|| {
            AppError::InvalidBody(
                "`provider`: no redirect URI is configured for the phones (`phone_redirect_uris`)".into(),
            )
        })?,
    };
    let id = provider.settings.id.clone();
    let sign_in_for_task = Arc::clone(&sign_in);
    let metadata =
        tokio::task::spawn_blocking(move || sign_in_for_task.provider(id.as_str()).map(super::Provider::metadata))
            .await?
            .ok_or(AppError::NotFound)?
            .map_err(|e| AppError::from(SignInError::Provider(e)))?;
    let url =
        provider.authorization_url(&metadata, &redirect_uri, &request.state, &request.nonce, &request.code_challenge);
    Ok(axum::Json(AuthorizeAnswer { provider: provider.settings.id.to_string(), authorization_url: url, redirect_uri }))
}

/// The code from the provider's redirect, to exchange for Tether's tokens.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct TokenRequest {
    provider: String,
    code: String,
    code_verifier: String,
    redirect_uri: String,
    nonce: String,
    #[schema(value_type = String, pattern = "^[A-Za-z0-9._-]{1,128}$")]
    device_id: DeviceId,
    /// The device's own secret, as `POST /v1/auth/login` takes it: the device id is
    /// registered with it at its first sign-in (`store::claim_device`).
    #[serde(default)]
    #[schema(value_type = Option<String>, pattern = "^[!-~]{32,256}$")]
    device_key: Option<DeviceKey>,
}

/// Tether's tokens, and whom they are for.
#[derive(Serialize, utoipa::ToSchema)]
struct SignedIn {
    #[serde(flatten)]
    tokens: Tokens,
    username: String,
}

/// The longest authorization code taken: codes are opaque, but not megabytes.
const MAX_CODE_CHARS: usize = 2048;

/// Completes a phone's sign-in: the provider's code for Tether's tokens.
#[utoipa::path(
    post,
    path = "/v1/auth/oidc/token",
    tag = "auth",
    request_body = TokenRequest,
    responses(
        (status = 200, description = "Signed in", body = SignedIn),
        crate::error::responses::NotJson,
        (status = 401, description = "The provider's answer could not be trusted", body = crate::error::ErrorBody),
        (status = 403, description = "The person or the device is refused", body = crate::error::ErrorBody),
        (status = 404, description = "No such provider", body = crate::error::ErrorBody),
        crate::error::responses::NotDeclaredJson,
        (status = 422, description = "Not a token request", body = crate::error::ErrorBody),
        (status = 502, description = "The provider is out of reach", body = crate::error::ErrorBody),
    )
)]
async fn token(
    State(state): State<AppState>,
    Json(request): Json<TokenRequest>,
) -> Result<axum::Json<SignedIn>, AppError> {
    let sign_in = Arc::clone(&state.sign_in);
    let provider = sign_in
        .provider(&request.provider)
        .ok_or_else(|| AppError::InvalidBody(format!("`provider`: no such provider; {}", offered(&sign_in))))?;
    if !provider.settings.phone_redirect_uris.contains(&request.redirect_uri) {
        return Err(AppError::InvalidBody("`redirect_uri`: not one registered for the phones".into()));
    }
    if request.code.is_empty() || request.code.len() > MAX_CODE_CHARS {
        return Err(AppError::InvalidBody("`code`: the authorization code from the redirect is needed".into()));
    }
    if !pkce::is_verifier(&request.code_verifier) {
        return Err(AppError::InvalidBody("`code_verifier`: 43 to 128 unreserved characters (RFC 7636)".into()));
    }
    if !one_time_value(&request.nonce) {
        return Err(AppError::InvalidBody("`nonce`: 16 to 128 URL-safe characters".into()));
    }
    let device = request.device_id;
    let device_key = request.device_key;
    let name = device.clone();
    if state.db.call(move |conn| Ok(store::device_revoked(conn, &name)?)).await? {
        return Err(AppError::DeviceRevoked);
    }
    let now = state.clock.unix();
    let provider_id = provider.settings.id.clone();
    let task_sign_in = Arc::clone(&sign_in);
    let (id, code, verifier, redirect_uri, nonce) =
        (provider_id.clone(), request.code, request.code_verifier, request.redirect_uri, request.nonce);
    let identity = tokio::task::spawn_blocking(move || {
        let provider = task_sign_in.provider(id.as_str()).ok_or(AppError::NotFound)?;
        let exchange = Exchange { code: &code, verifier: &verifier, redirect_uri: &redirect_uri, nonce: &nonce };
        Ok::<_, AppError>(provider.exchange(&exchange, now))
    })
    .await??;
    let identity = match identity {
        Ok(identity) => identity,
        Err(error) => {
            let error = SignInError::Provider(error);
            tracing::warn!(provider = %provider_id, code = error.code(), error = %error, "phone sign-in refused");
            return Err(error.into());
        }
    };
    let at = state.clock.now();
    let outcome = state
        .db
        .call(move |conn| {
            let mut tx = conn.transaction()?;
            let user = match super::enrol(&mut *tx, &sign_in, &provider_id, &identity, at)? {
                Ok(user) => user,
                Err(error) => {
                    super::audit_refusal(
                        &mut *tx,
                        device.as_str(),
                        Via::Api,
                        &provider_id,
                        &identity,
                        &error,
                        at.as_millisecond(),
                    )?;
                    tx.commit()?;
                    return Ok(Err((error, provider_id)));
                }
            };
            // As at a password sign-in: the device id must be this person's to use.
            store::claim_device(&mut *tx, &device, device_key.as_ref(), &user.id, now)?;
            let (session, refresh_token) = store::start_session(&mut *tx, &user.id, &device, now)?;
            super::audit_sign_in(
                &mut *tx,
                &user,
                device.as_str(),
                Via::Api,
                &provider_id,
                &identity.subject,
                at.as_millisecond(),
            )?;
            tx.commit()?;
            Ok(Ok((user, session, refresh_token, device)))
        })
        .await?;
    match outcome {
        Ok((user, session, refresh_token, device)) => {
            tracing::info!(user = %user.id, session = %session, "signed in with an identity provider");
            let tokens = auth::tokens(&state, &user, &device, session, refresh_token, now)?;
            Ok(axum::Json(SignedIn { tokens, username: user.username }))
        }
        Err((error, provider)) => {
            tracing::warn!(provider = %provider, code = error.code(), "phone sign-in refused");
            Err(error.into())
        }
    }
}

/// A JSON Web Key Set: the public keys as JWKs.
#[derive(Serialize, utoipa::ToSchema)]
struct Jwks {
    #[schema(value_type = Vec<Object>)]
    keys: Vec<Value>,
}

/// `GET /v1/auth/oidc/jwks`: the public halves of the `private_key_jwt` keys.
#[utoipa::path(
    get,
    path = "/v1/auth/oidc/jwks",
    tag = "auth",
    responses((status = 200, description = "A JSON Web Key Set (RFC 7517)", body = Jwks))
)]
async fn jwks(State(state): State<AppState>) -> (StatusCode, axum::Json<Jwks>) {
    let keys: Vec<Value> = state
        .sign_in
        .providers
        .iter()
        .filter_map(|p| match &p.settings.auth {
            ClientAuth::PrivateKeyJwt(key) => Some(key.public_jwk().clone()),
            _ => None,
        })
        .collect();
    (StatusCode::OK, axum::Json(Jwks { keys }))
}
