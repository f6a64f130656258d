//! `GET /healthz`: the server is up and its database answers.

use axum::extract::State;
use serde::Serialize;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::AppState;
use crate::error::AppError;

pub(crate) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(healthz))
}

/// The server is up, on this version of the database's schema.
#[derive(Serialize, utoipa::ToSchema)]
struct Health {
    /// Always `ok`.
    status: &'static str,
    /// The database's schema version.
    schema: i64,
}

/// The server is up and its database answers.
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "health",
    responses(
        (status = 200, description = "Up", body = Health),
        (status = 500, description = "The database does not answer", body = crate::error::ErrorBody),
    )
)]
async fn healthz(State(state): State<AppState>) -> Result<axum::Json<Health>, AppError> {
    let schema: i64 = state.db.call(|conn| Ok(conn.schema_version()?)).await?;
    Ok(axum::Json(Health { status: "ok", schema }))
}
