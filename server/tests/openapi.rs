//! `GET /openapi.json` from `tether serve` on a free loopback port: an OpenAPI 3.1
//! document, open without a token, that describes exactly the JSON routes the server
//! answers, each with the method it is served on, and says truly which need a token.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

/// Every JSON route the server serves, as `METHOD path`. A route added to the code
/// without a `#[utoipa::path]` cannot be registered (`routes!` needs one); this list
/// catches a route dropped from the document, or one documented that is not meant to be.
const ROUTES: &[&str] = &[
    "GET /healthz",
    "POST /v1/auth/login",
    "POST /v1/auth/refresh",
    "POST /v1/auth/oidc/authorize",
    "POST /v1/auth/oidc/token",
    "GET /v1/auth/oidc/jwks",
    "GET /v1/me",
    "POST /v1/sync",
    "POST /v1/devices/{id}/revoke",
    "POST /v1/episodes/{id}/transfer",
    "GET /v1/episodes",
    "GET /v1/episodes/{id}",
    "GET /v1/episodes/{id}/timeline",
    "GET /v1/episodes/{id}/fhir",
    "POST /v1/episodes/{id}/events",
    "POST /v1/episodes/{id}/facts",
    "PUT /v1/episodes/{id}/plan",
    "GET /v1/audit",
    "GET /v1/reconcile",
];

#[test]
fn openapi_document_describes_every_json_route_the_server_answers() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let db = dir.path().join("tether.db");
    let (_server, _, base) = common::serve(
        Command::new(env!("CARGO_BIN_EXE_tether"))
            .args(["serve", "--db", db.to_str().expect("a UTF-8 path"), "--addr", "127.0.0.1:0"])
            .env("TETHER_LOG", "warn")
            .env_remove("TETHER_DB")
            .env_remove("TETHER_JWT_SECRET")
            .env_remove("TETHER_CONFIG"),
    );

    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(30)))
        .build()
        .into();

    // The document needs no token.
    let mut response = agent.get(format!("{base}/openapi.json")).call().expect("the document");
    assert_eq!(response.status(), 200);
    let content_type = response.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("");
    assert!(content_type.starts_with("application/json"), "{content_type}");
    let document: Value = response.body_mut().read_json().expect("JSON");
    let version = document["openapi"].as_str().expect("an `openapi` version");
    assert!(version.starts_with("3.1."), "OpenAPI {version}");
    assert_eq!(document["components"]["securitySchemes"]["bearer"]["scheme"], "bearer");
    assert!(document["components"]["schemas"]["ErrorBody"].is_object(), "the error body is described");

    // Exactly the JSON routes: nothing missing, nothing extra (no dashboard page, no
    // metrics).
    let paths = document["paths"].as_object().expect("paths");
    let mut documented = BTreeMap::new();
    for (path, item) in paths {
        for (method, operation) in item.as_object().expect("a path item") {
            if !["get", "put", "post", "delete", "patch"].contains(&method.as_str()) {
                continue;
            }
            documented.insert(format!("{} {path}", method.to_uppercase()), operation.clone());
        }
    }
    let names: BTreeSet<&str> = documented.keys().map(String::as_str).collect();
    let expected: BTreeSet<&str> = ROUTES.iter().copied().collect();
    assert_eq!(names, expected, "the document's routes are not the server's JSON routes");

    // Each documented route is served on its method, and answers 401 without a token
    // exactly when the document says it needs one.
    let id = "0190f3c4-5b6a-7c8d-9e0f-112233445566";
    for (name, operation) in &documented {
        let (method, path) = name.split_once(' ').expect("METHOD path");
        let url = format!("{base}{}", path.replace("{id}", id));
        let request = ureq::http::Request::builder().method(method).uri(&url).body(()).expect("a request");
        let response = agent.run(request).expect("an answer");
        let status = response.status().as_u16();
        assert!(status != 404 && status != 405, "{name} answered {status}: not served as documented");
        let secured = operation.get("security").is_some_and(|s| s.as_array().is_some_and(|a| !a.is_empty()));
        assert_eq!(status == 401, secured, "{name} answered {status} without a token; documented security: {secured}");
        // Every error the route may give is described with the one error body.
        for (code, answer) in operation["responses"].as_object().expect("responses") {
            if code.starts_with('4') || code.starts_with('5') {
                let schema = &answer["content"]["application/json"]["schema"]["$ref"];
                assert_eq!(schema, "#/components/schemas/ErrorBody", "{name} {code}");
            }
        }
    }
}
