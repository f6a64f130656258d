//! What team managers (and admins) do to devices and episodes:
//! `POST /v1/devices/{id}/revoke` and `POST /v1/episodes/{id}/transfer`.
//!
//! A revoked device is refused from then on and told, at its next request, to wipe its
//! store. A manager reaches only the devices registered by a user of their teams. A
//! transfer moves an episode to another team: the new team's devices receive it at their
//! next sync, and the old team's devices hand over everything they hold of it before
//! they drop it (`sync`).

use axum::extract::{Path, State};
use serde::Deserialize;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::AppState;
use crate::accounts::{DeviceId, Role, TeamId};
use crate::audit::{self, AuditAction, Via, Who};
use crate::auth::{AuthUser, store};
use crate::episodes;
use crate::error::AppError;
use crate::json::Json;
use crate::office::EpisodePath;

pub(crate) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(revoke_device)).routes(routes!(transfer))
}

fn may_manage(user: &AuthUser) -> Result<(), AppError> {
    match user.role {
        Role::TeamManager | Role::Admin => Ok(()),
        _ => Err(AppError::Forbidden("only a team manager or an admin may do this")),
    }
}

/// Revokes a device registered by a user of the caller's teams: its tokens stop working
/// and it must wipe its store.
#[utoipa::path(
    post,
    path = "/v1/devices/{id}/revoke",
    tag = "devices",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "The device's id")),
    responses(
        (status = 204, description = "Revoked"),
        crate::error::responses::Unauthorized,
        (status = 403, description = "Only a team manager or an admin may do this", body = crate::error::ErrorBody),
        (status = 404, description = "No such device within the caller's reach", body = crate::error::ErrorBody),
    )
)]
async fn revoke_device(
    State(state): State<AppState>,
    user: AuthUser,
    Path(device): Path<String>,
) -> Result<axum::http::StatusCode, AppError> {
    may_manage(&user)?;
    // An id no phone may take was never registered: not found, as any other unknown.
    let Ok(device) = DeviceId::try_from(device) else { return Err(AppError::NotFound) };
    let now = state.clock.unix();
    let found = state
        .db
        .call(move |conn| {
            // Registered by a user of one of the manager's teams: not merely signed in on
            // by one, which anyone who read the device's id off a record could arrange.
            if !store::device_in_reach(conn, &device, &user.user_id, user.role == Role::Admin)? {
                return Ok(false);
            }
            let mut tx = conn.transaction()?;
            store::revoke_device(&mut *tx, &device, &user.user_id, now)?;
            tx.commit()?;
            tracing::warn!(by = %user.user_id, "device revoked");
            Ok(true)
        })
        .await?;
    if found { Ok(axum::http::StatusCode::NO_CONTENT) } else { Err(AppError::NotFound) }
}

/// The team to move an episode to.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct Transfer {
    #[schema(value_type = String)]
    team: TeamId,
}

/// Moves an episode of the caller's teams to another team.
#[utoipa::path(
    post,
    path = "/v1/episodes/{id}/transfer",
    tag = "episodes",
    security(("bearer" = [])),
    params(("id" = String, Path, format = "uuid", description = "The episode's id")),
    request_body = Transfer,
    responses(
        (status = 204, description = "Transferred"),
        crate::error::responses::NotJson,
        crate::error::responses::Unauthorized,
        (status = 403, description = "Only a team manager or an admin may do this", body = crate::error::ErrorBody),
        crate::error::responses::EpisodeNotFound,
        crate::error::responses::NotDeclaredJson,
        (status = 422, description = "No such team, or not a transfer", body = crate::error::ErrorBody),
    )
)]
async fn transfer(
    State(state): State<AppState>,
    user: AuthUser,
    EpisodePath(id): EpisodePath,
    Json(request): Json<Transfer>,
) -> Result<axum::http::StatusCode, AppError> {
    may_manage(&user)?;
    let now_ms = state.clock.now().as_millisecond();
    state
        .db
        .call(move |conn| {
            let mut tx = conn.transaction()?;
            // The row before the counter, as every writer of an episode takes them.
            tx.lock_episode(id)?;
            let Some((team, seq)) = tx.team_of(id)? else { return Err(AppError::EpisodeNotFound(id)) };
            if user.role != Role::Admin && !user.teams.contains(&team) {
                return Err(AppError::EpisodeNotFound(id));
            }
            if !tx.team_exists(&request.team)? {
                return Err(AppError::InvalidBody("team: no such team".into()));
            }
            if team != request.team {
                episodes::set_team(&mut *tx, id, seq, &request.team)?;
            }
            let who = Who::new(&user, Via::Api);
            audit::log(&mut *tx, &who, now_ms, AuditAction::Transfer, Some(id), Some(request.team.as_str()))?;
            tx.commit()?;
            tracing::info!(by = %user.user_id, "episode transferred");
            Ok(())
        })
        .await?;
    Ok(axum::http::StatusCode::NO_CONTENT)
}
