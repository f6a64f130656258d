//! `AuthUser`: the caller of a `/v1` route, from `Authorization: Bearer <access token>`.

use axum::extract::FromRequestParts;
use axum::http::header;
use axum::http::request::Parts;

use super::store;
use crate::AppState;
use crate::accounts::{self, DeviceId, Role, TeamId, UserId};
use crate::error::AppError;

/// The signed-in caller. Role and teams are read from the database on every request,
/// not from the token, so that a change (or a disabled user, or a revoked session)
/// takes effect at once rather than when the token expires.
#[derive(Debug, Clone)]
pub struct AuthUser {
    pub user_id: UserId,
    pub username: String,
    pub role: Role,
    pub teams: Vec<TeamId>,
    /// The device the token was signed for, checked when it signed in.
    pub device_id: DeviceId,
    pub session_id: String,
}

impl FromRequestParts<AppState> for AuthUser {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let token = bearer(parts)?;
        let claims = state.keys.verify(token, state.clock.unix())?;
        // The token is the server's own, signed: its subject is a user's id.
        let (user_id, session) = (UserId::new(claims.sub.clone()), claims.sid.clone());
        // The device was checked at sign-in, before the server signed it into the token.
        let device = DeviceId::server_made(claims.device.clone());
        let device_id = device.clone();
        let user = state
            .db
            .call(move |conn| {
                if !store::session_is_live(conn, &session, &user_id)? {
                    if store::device_revoked(conn, &device)? {
                        return Err(AppError::DeviceRevoked);
                    }
                    return Ok(None);
                }
                Ok(accounts::active_user(conn, &user_id)?)
            })
            .await?
            .ok_or(AppError::Unauthenticated("the access token is no longer valid; sign in again"))?;
        Ok(Self {
            user_id: user.id,
            username: user.username,
            role: user.role,
            teams: user.teams,
            device_id,
            session_id: claims.sid,
        })
    }
}

fn bearer(parts: &Parts) -> Result<&str, AppError> {
    let value = parts
        .headers
        .get(header::AUTHORIZATION)
        .ok_or(AppError::Unauthenticated("this route needs `Authorization: Bearer <access token>`"))?;
    let value = value.to_str().map_err(|_| AppError::Unauthenticated("the Authorization header is not readable"))?;
    let (scheme, token) = value
        .split_once(' ')
        .ok_or(AppError::Unauthenticated("the Authorization header must be `Bearer <access token>`"))?;
    if !scheme.eq_ignore_ascii_case("bearer") || token.trim().is_empty() {
        return Err(AppError::Unauthenticated("the Authorization header must be `Bearer <access token>`"));
    }
    Ok(token.trim())
}
