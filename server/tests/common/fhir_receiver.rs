//! A FHIR server on loopback that takes transaction Bundles as an EPR would, with
//! conditional creates: a `POST` with `ifNoneExist` creates its resource only if none of
//! that type matches the search (the same search names the same resource), and a
//! conditional `PUT` creates or updates the one its search names. It answers a
//! `transaction-response`, and can be told how to treat each transaction in turn: fail it
//! untouched, take it and then fail (the answer lost), or take it and answer too late.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{Value, json};

/// How the receiver treats one transaction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Turn {
    /// Takes it and answers.
    Take,
    /// Answers 500 without taking anything.
    Fail,
    /// Takes it, then answers 500: the sender cannot know it was taken.
    TakeThenFail,
    /// Takes it, then answers after `late` (past the sender's timeout).
    TakeThenStall,
}

/// What the receiver holds and has seen.
#[derive(Debug, Default)]
pub struct Held {
    /// Each resource by (type, the search that names it; an unconditional create gets a
    /// search of its own, so a record sent that way twice is held twice).
    pub resources: BTreeMap<(String, String), Value>,
    /// Conditional creates that found their resource there already.
    pub matched: usize,
    /// Every transaction received, in order, with the turn it was given.
    pub transactions: Vec<(Value, Turn)>,
    /// Requests refused for want of the right bearer token.
    pub unauthorized: usize,
    script: VecDeque<Turn>,
    next_id: usize,
}

#[derive(Clone)]
struct Shared {
    held: Arc<Mutex<Held>>,
    token: String,
    late: Duration,
}

/// The receiver's handle: its URL, and what it holds.
pub struct Receiver {
    pub url: String,
    pub held: Arc<Mutex<Held>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Receiver {
    /// Starts on a free loopback port, expecting `Bearer token`; the transactions are
    /// treated as `script` says in turn, then taken. A stalled answer comes after `late`.
    pub async fn start(token: &str, script: &[Turn], late: Duration) -> Self {
        let held = Arc::new(Mutex::new(Held { script: script.iter().copied().collect(), ..Held::default() }));
        let shared = Shared { held: Arc::clone(&held), token: token.to_owned(), late };
        let app = Router::new().route("/fhir", post(transaction)).with_state(shared);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("a loopback port");
        let url = format!("http://{}/fhir", listener.local_addr().expect("an address"));
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { url, held, task }
    }

    pub fn held(&self) -> std::sync::MutexGuard<'_, Held> {
        self.held.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

async fn transaction(State(shared): State<Shared>, headers: HeaderMap, body: String) -> Response {
    let authorized = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok())
        == Some(format!("Bearer {}", shared.token).as_str());
    let turn = {
        let mut held = shared.held.lock().unwrap_or_else(PoisonError::into_inner);
        if !authorized {
            held.unauthorized += 1;
            return (StatusCode::UNAUTHORIZED, "a bearer token is needed").into_response();
        }
        held.script.pop_front().unwrap_or(Turn::Take)
    };
    let Ok(bundle) = serde_json::from_str::<Value>(&body) else {
        return (StatusCode::BAD_REQUEST, "not JSON").into_response();
    };
    if bundle["resourceType"] != "Bundle" || bundle["type"] != "transaction" {
        return (StatusCode::BAD_REQUEST, "not a transaction Bundle").into_response();
    }
    let answer = {
        let mut held = shared.held.lock().unwrap_or_else(PoisonError::into_inner);
        held.transactions.push((bundle.clone(), turn));
        if turn == Turn::Fail { None } else { Some(take(&mut held, &bundle)) }
    };
    match (turn, answer) {
        (Turn::Take, Some(answer)) => {
            (StatusCode::OK, [(header::CONTENT_TYPE, "application/fhir+json")], answer.to_string()).into_response()
        }
        (Turn::TakeThenStall, Some(answer)) => {
            tokio::time::sleep(shared.late).await;
            (StatusCode::OK, [(header::CONTENT_TYPE, "application/fhir+json")], answer.to_string()).into_response()
        }
        _ => {
            (StatusCode::INTERNAL_SERVER_ERROR, json!({"resourceType": "OperationOutcome"}).to_string()).into_response()
        }
    }
}

/// Applies a transaction's entries; the `transaction-response`.
fn take(held: &mut Held, bundle: &Value) -> Value {
    let mut responses = Vec::new();
    for entry in bundle["entry"].as_array().map(Vec::as_slice).unwrap_or_default() {
        let request = &entry["request"];
        let resource = entry["resource"].clone();
        let kind = resource["resourceType"].as_str().unwrap_or_default().to_owned();
        let (search, conditional_create) = match (request["method"].as_str(), request["ifNoneExist"].as_str()) {
            (Some("POST"), Some(search)) => (search.to_owned(), true),
            (Some("PUT"), _) => {
                let url = request["url"].as_str().unwrap_or_default();
                (url.split_once('?').map_or("", |(_, q)| q).to_owned(), false)
            }
            // An unconditional create: a new resource each time it is sent.
            _ => {
                held.next_id += 1;
                (format!("unconditional/{}", held.next_id), true)
            }
        };
        let key = (kind.clone(), search);
        let status = match held.resources.get_mut(&key) {
            Some(_) if conditional_create => {
                held.matched += 1;
                "200 OK"
            }
            Some(stored) => {
                *stored = resource;
                "200 OK"
            }
            None => {
                held.resources.insert(key.clone(), resource);
                "201 Created"
            }
        };
        let position = held.resources.keys().position(|k| *k == key).unwrap_or_default();
        responses.push(json!({"response": {"status": status, "location": format!("{kind}/{position}/_history/1")}}));
    }
    json!({"resourceType": "Bundle", "type": "transaction-response", "entry": responses})
}
