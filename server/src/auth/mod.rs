//! Sign-in and tokens: `POST /v1/auth/login`, `POST /v1/auth/refresh`, and the
//! `AuthUser` extractor that every other `/v1` route takes.

mod extract;
pub mod keys;
pub mod password;
pub mod store;
pub mod token;

use axum::extract::State;
use serde::{Deserialize, Serialize};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub use extract::AuthUser;
use store::Rotation;
use token::{ACCESS_TTL_SECS, AUDIENCE, Claims, ISSUER};

use crate::AppState;
use crate::accounts::{self, DeviceId, DeviceKey, User, Username};
use crate::client::ClientAddr;
use crate::error::AppError;
use crate::json::Json;
use crate::store::Tx;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(login)).routes(routes!(refresh))
}

/// A sign-in with a username and password, from a device.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct LoginRequest {
    username: String,
    password: String,
    #[schema(value_type = String, pattern = "^[A-Za-z0-9._-]{1,128}$")]
    device_id: DeviceId,
    /// The device's own secret, which the device id is registered with (see
    /// `store::claim_device`). Optional, for clients older than device keys.
    #[serde(default)]
    #[schema(value_type = Option<String>, pattern = "^[!-~]{32,256}$")]
    device_key: Option<DeviceKey>,
}

/// A refresh token to exchange for new tokens, from the device it was given to.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct RefreshRequest {
    refresh_token: String,
    #[schema(value_type = String, pattern = "^[A-Za-z0-9._-]{1,128}$")]
    device_id: DeviceId,
}

/// An access token and the refresh token that renews it.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Tokens {
    pub access_token: String,
    pub refresh_token: String,
    /// The access token's lifetime in seconds.
    pub expires_in: i64,
}

/// Signs in with a username and password.
#[utoipa::path(
    post,
    path = "/v1/auth/login",
    tag = "auth",
    request_body = LoginRequest,
    responses(
        (status = 200, description = "Signed in", body = Tokens),
        crate::error::responses::NotJson,
        (status = 401, description = "Wrong username or password", body = crate::error::ErrorBody),
        (status = 403, description = "Device revoked or taken, or passwords switched off", body = crate::error::ErrorBody),
        crate::error::responses::NotDeclaredJson,
        (status = 422, description = "The body is not a sign-in", body = crate::error::ErrorBody),
        (status = 429, description = "Too many failed sign-ins", body = crate::error::ErrorBody),
    )
)]
async fn login(
    State(state): State<AppState>,
    client: ClientAddr,
    Json(request): Json<LoginRequest>,
) -> Result<axum::Json<Tokens>, AppError> {
    let now = state.clock.unix();
    let device = request.device_id;
    let name = device.clone();
    if state.db.call(move |conn| Ok(store::device_revoked(conn, &name)?)).await? {
        return Err(AppError::DeviceRevoked);
    }
    let key = request.device_key;
    let (user, (session, refresh_token, device)) =
        sign_in(&state, &client, request.username, request.password, move |tx, user| {
            // Only after the password: a wrong one learns nothing of the device.
            store::claim_device(tx, &device, key.as_ref(), &user.id, now)?;
            let (session, refresh_token) = store::start_session(tx, &user.id, &device, now)?;
            Ok((session, refresh_token, device))
        })
        .await?;
    tracing::info!(user = %user.id, session = %session, "signed in");
    Ok(axum::Json(tokens(&state, &user, &device, session, refresh_token, now)?))
}

/// Checks a username and password, behind the failed sign-in throttle, for every way of
/// signing in (the JSON route and the dashboard's form). On success `start` runs in the
/// same transaction that clears the username's failures from this client, to begin the
/// caller's kind of session. A wrong username, a wrong password and a disabled user all
/// answer `InvalidCredentials` after the same work; a client or a username locked out
/// from this client answers `TooManyAttempts` before any password is checked.
///
/// The throttle counts per (username, client address) and per client address
/// (`store::record_failure`): a client far away cannot lock a user out where she is,
/// and one client cannot try a password across many usernames.
pub(crate) async fn sign_in<T: Send + 'static>(
    state: &AppState,
    client: &ClientAddr,
    username: String,
    password: String,
    start: impl FnOnce(&mut dyn Tx, &User) -> Result<T, AppError> + Send + 'static,
) -> Result<(User, T), AppError> {
    if !state.sign_in.passwords {
        return Err(AppError::PasswordsOff);
    }
    let now = state.clock.unix();
    let client = client.0.clone();
    // A name that no user can have is a wrong username like any other: it counts against
    // the client, but is not kept as a username (the table only holds plausible names).
    let username = match Username::try_from(username) {
        Ok(username) => username,
        Err(_) => {
            let name = String::new();
            let locked = {
                let client = client.clone();
                state.db.call(move |conn| Ok(store::throttled(conn, &name, &client, now)?)).await?
            };
            if let Some(throttled) = locked {
                return Err(AppError::TooManyAttempts(throttled));
            }
            tokio::task::spawn_blocking(move || password::verify_decoy(password.as_bytes())).await?;
            state
                .db
                .call(move |conn| {
                    let mut tx = conn.transaction()?;
                    store::record_failure(&mut *tx, None, &client, now)?;
                    Ok(tx.commit()?)
                })
                .await?;
            return Err(AppError::InvalidCredentials);
        }
    };
    let name = username.as_str().to_owned();
    let from = client.clone();
    let (locked, login) = state
        .db
        .call(move |conn| Ok((store::throttled(conn, &name, &from, now)?, accounts::login(conn, &name)?)))
        .await?;
    if let Some(throttled) = locked {
        tracing::info!(?throttled, "sign-in refused: locked out");
        return Err(AppError::TooManyAttempts(throttled));
    }
    let verified = tokio::task::spawn_blocking(move || match login {
        // A person from an identity provider has no password (an empty hash): refused
        // after the same work as a wrong one.
        Some(login) if login.password_hash.is_empty() => {
            password::verify_decoy(password.as_bytes());
            Ok(None)
        }
        Some(login) => {
            let ok = password::verify(password.as_bytes(), &login.password_hash).map_err(AppError::internal)?;
            Ok::<_, AppError>((ok && !login.disabled).then_some(login.user_id))
        }
        None => {
            password::verify_decoy(password.as_bytes());
            Ok(None)
        }
    })
    .await??;
    let outcome = state
        .db
        .call(move |conn| {
            let mut tx = conn.transaction()?;
            let Some(user_id) = verified else {
                store::record_failure(&mut *tx, Some(username.as_str()), &client, now)?;
                tx.commit()?;
                return Ok(None);
            };
            store::clear_failures(&mut *tx, username.as_str(), &client)?;
            let user = accounts::active_user(&mut *tx, &user_id)?;
            let Some(user) = user else { return Ok(None) };
            let started = start(&mut *tx, &user)?;
            tx.commit()?;
            Ok(Some((user, started)))
        })
        .await?;
    outcome.ok_or_else(|| {
        tracing::info!("sign-in refused: wrong username or password");
        AppError::InvalidCredentials
    })
}

/// Exchanges a refresh token for new tokens (the old refresh token is spent).
#[utoipa::path(
    post,
    path = "/v1/auth/refresh",
    tag = "auth",
    request_body = RefreshRequest,
    responses(
        (status = 200, description = "New tokens", body = Tokens),
        crate::error::responses::NotJson,
        (status = 401, description = "The refresh token is not valid for this device", body = crate::error::ErrorBody),
        (status = 403, description = "The device has been revoked", body = crate::error::ErrorBody),
        crate::error::responses::NotDeclaredJson,
        (status = 422, description = "The body is not a refresh request", body = crate::error::ErrorBody),
    )
)]
async fn refresh(
    State(state): State<AppState>,
    Json(request): Json<RefreshRequest>,
) -> Result<axum::Json<Tokens>, AppError> {
    let now = state.clock.unix();
    let device = request.device_id;
    let presented = request.refresh_token;
    let outcome = state
        .db
        .call(move |conn| {
            if store::device_revoked(conn, &device)? {
                return Err(AppError::DeviceRevoked);
            }
            let mut tx = conn.transaction()?;
            let rotation = store::rotate(&mut *tx, &presented, &device, now)?;
            let user = match &rotation {
                Rotation::Rotated { user_id, .. } => accounts::active_user(&mut *tx, user_id)?,
                Rotation::Refused | Rotation::RevokedSession { .. } => None,
            };
            tx.commit()?;
            Ok((rotation, user, device))
        })
        .await?;
    match outcome {
        (Rotation::Rotated { session, refresh_token, .. }, Some(user), device) => {
            tracing::debug!(user = %user.id, session = %session, "refresh token rotated");
            Ok(axum::Json(tokens(&state, &user, &device, session, refresh_token, now)?))
        }
        (Rotation::RevokedSession { session, because }, _, _) => {
            tracing::warn!(session = %session, because, "session revoked");
            Err(AppError::InvalidRefreshToken)
        }
        _ => Err(AppError::InvalidRefreshToken),
    }
}

pub(crate) fn tokens(
    state: &AppState,
    user: &User,
    device: &DeviceId,
    session: String,
    refresh_token: String,
    now: i64,
) -> Result<Tokens, AppError> {
    let claims = Claims {
        iss: ISSUER.into(),
        aud: AUDIENCE.into(),
        sub: user.id.to_string(),
        iat: now,
        nbf: now,
        exp: now + ACCESS_TTL_SECS,
        role: user.role,
        teams: user.teams.iter().map(ToString::to_string).collect(),
        device: device.as_str().into(),
        sid: session,
    };
    Ok(Tokens { access_token: state.keys.sign(&claims)?, refresh_token, expires_in: ACCESS_TTL_SECS })
}
