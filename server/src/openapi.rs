//! The OpenAPI 3.1 document of the JSON API, served at `GET /openapi.json`.
//!
//! It is generated from the code: every JSON route's handler carries a
//! `#[utoipa::path]` attribute and is registered with `utoipa_axum::routes!`, which adds
//! the handler to the router and its description to the document in one step, so a
//! route cannot be served without being described. The dashboard's HTML pages and
//! `/metrics` (Prometheus text) are plain axum routes and are left out.

use std::sync::Arc;

use axum::Router;
use axum::routing::get;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_axum::router::OpenApiRouter;

use crate::AppState;
use crate::error::ErrorBody;

/// The document's fixed parts: its title, the bearer scheme, the error body.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "Tether",
        description = "The Tether server's JSON API: sign-in, sync, the team base's episodes, the audit log. \
                       Every error answers `{\"error\": {\"code\", \"message\"}}`."
    ),
    components(schemas(ErrorBody)),
    modifiers(&Bearer)
)]
struct Document;

/// The access token from `POST /v1/auth/login`, as `Authorization: Bearer …`.
struct Bearer;

impl Modify for Bearer {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).bearer_format("JWT").build()),
        );
    }
}

/// Every JSON route, each with its description.
pub(crate) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(Document::openapi())
        .merge(crate::health::router())
        .merge(crate::auth::router())
        .merge(crate::oidc::routes::router())
        .merge(crate::me::router())
        .merge(crate::sync::router())
        .merge(crate::manage::router())
        .merge(crate::office::router())
        .merge(crate::audit::router())
}

/// The OpenAPI document of every JSON route.
pub fn document() -> utoipa::openapi::OpenApi {
    routes().into_openapi()
}

/// `GET /openapi.json`: the document, open to anyone (it holds no data).
pub(crate) fn router(document: utoipa::openapi::OpenApi) -> Router<AppState> {
    let document = Arc::new(document);
    Router::new().route(
        "/openapi.json",
        get(move || {
            let document = Arc::clone(&document);
            async move { axum::Json(document.as_ref().clone()) }
        }),
    )
}
