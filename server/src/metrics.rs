//! `GET /metrics`: Prometheus text — requests by route pattern, method and status, the
//! sync latency histogram, the open and overdue actions per team, and the document
//! cache (its size against its bound, hits and misses, evictions by reason).
//!
//! Counts per team are not for the internet: `/metrics` is served on its own listener
//! (`--metrics-addr`, loopback unless said otherwise; [`metrics_app`]), and on the main
//! port only to a bearer token (`--metrics-token`). Without a token, `/metrics` on the
//! main port answers 404 like any route that is not there.
//!
//! The format is a few lines of text; a metrics crate would add more than it saves.
//! Labels are route patterns and team ids, never a concrete path or a patient's anything.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::AppState;
use crate::caseload;
use crate::episodes::CacheStats;
use crate::error::AppError;

/// `/metrics` on the main port: behind `--metrics-token`, or not there.
pub(crate) fn router() -> Router<AppState> {
    Router::new().route("/metrics", get(guarded))
}

/// The metrics listener's whole service: `/metrics` (no token: whoever reaches this
/// address is meant to) and `/healthz`, nothing else.
pub fn metrics_app(state: AppState) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .merge(crate::health::router())
        .fallback(|| async { AppError::NotFound })
        .with_state(state)
}

async fn guarded(State(state): State<AppState>, headers: axum::http::HeaderMap) -> Result<Response, AppError> {
    let Some(token) = state.options.metrics_token.as_ref() else { return Err(AppError::NotFound) };
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    match presented {
        Some(presented) if crate::dashboard::session::same_secret(presented, token.expose()) => {
            metrics(State(state)).await
        }
        _ => Err(AppError::Unauthenticated("/metrics needs the metrics bearer token")),
    }
}

/// The upper bounds of the sync latency histogram's buckets, in seconds.
const BUCKETS: [f64; 11] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

/// The counters a running server keeps.
#[derive(Debug, Default)]
pub struct Metrics {
    requests: Mutex<BTreeMap<(String, String, u16), u64>>,
    sync: Histogram,
}

#[derive(Debug, Default)]
struct Histogram {
    /// One count per bucket of [`BUCKETS`], each counting only its own range (made
    /// cumulative when written out), then the ones above the last bound.
    counts: [AtomicU64; BUCKETS.len() + 1],
    sum_micros: AtomicU64,
}

impl Metrics {
    pub fn shared() -> Arc<Self> {
        Arc::default()
    }

    /// Counts one answered request, and its latency if it was a sync.
    pub fn observe(&self, route: &str, method: &str, status: u16, elapsed: Duration) {
        let mut requests = self.requests.lock().unwrap_or_else(PoisonError::into_inner);
        *requests.entry((route.to_owned(), method.to_owned(), status)).or_default() += 1;
        drop(requests);
        if route == "/v1/sync" {
            let seconds = elapsed.as_secs_f64();
            let bucket = BUCKETS.iter().position(|&bound| seconds <= bound).unwrap_or(BUCKETS.len());
            self.sync.counts[bucket].fetch_add(1, Ordering::Relaxed);
            self.sync.sum_micros.fetch_add(elapsed.as_micros() as u64, Ordering::Relaxed);
        }
    }

    /// The counters as Prometheus text, with the per-team gauges and the document
    /// cache's figures given.
    pub fn render(&self, teams: &[(String, i64, i64)], cache: &CacheStats) -> String {
        let mut out = String::new();
        out.push_str(
            "# HELP tether_http_requests_total HTTP requests answered, by route pattern, method and status.\n",
        );
        out.push_str("# TYPE tether_http_requests_total counter\n");
        let requests = self.requests.lock().unwrap_or_else(PoisonError::into_inner);
        for ((route, method, status), count) in requests.iter() {
            let _ = writeln!(
                out,
                "tether_http_requests_total{{route=\"{}\",method=\"{}\",status=\"{status}\"}} {count}",
                escape(route),
                escape(method)
            );
        }
        drop(requests);
        out.push_str("# HELP tether_sync_duration_seconds Time to answer POST /v1/sync.\n");
        out.push_str("# TYPE tether_sync_duration_seconds histogram\n");
        let mut cumulative = 0;
        for (i, bound) in BUCKETS.iter().enumerate() {
            cumulative += self.sync.counts[i].load(Ordering::Relaxed);
            let _ = writeln!(out, "tether_sync_duration_seconds_bucket{{le=\"{bound}\"}} {cumulative}");
        }
        cumulative += self.sync.counts[BUCKETS.len()].load(Ordering::Relaxed);
        let _ = writeln!(out, "tether_sync_duration_seconds_bucket{{le=\"+Inf\"}} {cumulative}");
        let sum = self.sync.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(out, "tether_sync_duration_seconds_sum {sum}");
        let _ = writeln!(out, "tether_sync_duration_seconds_count {cumulative}");
        out.push_str("# HELP tether_open_actions Actions active and not done, per team.\n");
        out.push_str("# TYPE tether_open_actions gauge\n");
        for (team, open, _) in teams {
            let _ = writeln!(out, "tether_open_actions{{team=\"{}\"}} {open}", escape(team));
        }
        out.push_str("# HELP tether_overdue_actions Actions past their deadline and not done, per team.\n");
        out.push_str("# TYPE tether_overdue_actions gauge\n");
        for (team, _, overdue) in teams {
            let _ = writeln!(out, "tether_overdue_actions{{team=\"{}\"}} {overdue}", escape(team));
        }
        render_cache(&mut out, cache);
        out
    }
}

/// The document cache: what it holds against its bound, how often a request found its
/// document there, and why documents left it.
fn render_cache(out: &mut String, cache: &CacheStats) {
    let gauges = [
        ("tether_cache_documents", "Episode documents in the cache.", cache.documents),
        ("tether_cache_bytes", "Estimated memory of the documents in the cache.", cache.bytes),
        ("tether_cache_budget_bytes", "The bound on the cache's estimated memory (--cache-mib).", cache.budget),
    ];
    for (name, help, value) in gauges {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}");
    }
    out.push_str("# HELP tether_cache_lookups_total Documents asked of the cache: found current, or loaded.\n");
    out.push_str("# TYPE tether_cache_lookups_total counter\n");
    let _ = writeln!(out, "tether_cache_lookups_total{{result=\"hit\"}} {}", cache.hits);
    let _ = writeln!(out, "tether_cache_lookups_total{{result=\"miss\"}} {}", cache.misses);
    out.push_str(
        "# HELP tether_cache_evictions_total Documents dropped from the cache: to make room, or because \
         another replica changed them.\n",
    );
    out.push_str("# TYPE tether_cache_evictions_total counter\n");
    let _ = writeln!(out, "tether_cache_evictions_total{{reason=\"room\"}} {}", cache.evicted_for_room);
    let _ = writeln!(out, "tether_cache_evictions_total{{reason=\"notified\"}} {}", cache.evicted_notified);
}

/// A label value as the text format wants it.
fn escape(value: &str) -> String {
    value.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

async fn metrics(State(state): State<AppState>) -> Result<Response, AppError> {
    let now = state.clock.now();
    let docs = Arc::clone(&state.docs);
    let alerts = Arc::clone(&state.alerts);
    let teams = state
        .db
        .call(move |conn| {
            caseload::refresh_all(conn, &docs, &alerts, None, now)?;
            let teams = caseload::counts_by_team(conn)?;
            // Read here, off the runtime: the sync writer holds the cache through a batch.
            let cache = docs.lock().unwrap_or_else(PoisonError::into_inner).stats();
            Ok((teams, cache))
        })
        .await?;
    let (teams, cache) = teams;
    let mut response = state.metrics.render(&teams, &cache).into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"));
    Ok(response)
}
