//! `GET /healthz`: the server is up and its database answers.

use axum::Router;
use axum::extract::State;
use axum::routing::get;
use serde_json::{Value, json};

use crate::AppState;
use crate::error::AppError;

pub(crate) fn router() -> Router<AppState> {
    Router::new().route("/healthz", get(healthz))
}

async fn healthz(State(state): State<AppState>) -> Result<axum::Json<Value>, AppError> {
    let schema: i64 = state.db.call(|conn| Ok(conn.schema_version()?)).await?;
    Ok(axum::Json(json!({"status": "ok", "schema": schema})))
}
