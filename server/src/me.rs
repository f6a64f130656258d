//! `GET /v1/me`: who the access token says the caller is.

use axum::Router;
use axum::routing::get;
use serde::Serialize;

use crate::AppState;
use crate::accounts::Role;
use crate::auth::AuthUser;

pub(crate) fn router() -> Router<AppState> {
    Router::new().route("/v1/me", get(me))
}

#[derive(Serialize)]
struct Me {
    user_id: String,
    username: String,
    role: Role,
    teams: Vec<String>,
    device_id: String,
}

async fn me(user: AuthUser) -> axum::Json<Me> {
    axum::Json(Me {
        user_id: user.user_id,
        username: user.username,
        role: user.role,
        teams: user.teams,
        device_id: user.device_id,
    })
}
