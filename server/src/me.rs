//! `GET /v1/me`: who the access token says the caller is.

use serde::Serialize;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::AppState;
use crate::accounts::Role;
use crate::auth::AuthUser;

pub(crate) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(me))
}

/// Who the caller is.
#[derive(Serialize, utoipa::ToSchema)]
struct Me {
    user_id: String,
    username: String,
    role: Role,
    teams: Vec<String>,
    device_id: String,
}

/// Who the access token says the caller is.
#[utoipa::path(
    get,
    path = "/v1/me",
    tag = "auth",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The caller", body = Me),
        crate::error::responses::Unauthorized,
    )
)]
async fn me(user: AuthUser) -> axum::Json<Me> {
    axum::Json(Me {
        user_id: user.user_id.into(),
        username: user.username,
        role: user.role,
        teams: user.teams.into_iter().map(String::from).collect(),
        device_id: user.device_id.into(),
    })
}
