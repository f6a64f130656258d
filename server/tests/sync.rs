//! `POST /v1/sync` through `app(state)` and `oneshot`, on a real database in a temporary
//! directory and a clock the tests move, with real Automerge documents as devices: each
//! device keeps an `EpisodeDoc` per episode and the sync state it persisted per episode,
//! and starts every request from that decoded state, as a phone does.
//!
//! Covered: a new episode stored and answered with its actions, the cursor's "nothing
//! new", one device's records reaching another, team scoping, refusals that store
//! nothing, replayed requests, revoked devices, transfers, `clock_skew`, and a caseload
//! larger than one response's page.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, PoisonError};

use automerge::sync::State;
use automerge::transaction::Transactable;
use automerge::{ActorId, ChangeHash, ROOT, ReadDoc, Value as AmValue};
use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, StatusCode, header};
use episode::document::{EpisodeDoc, Opening};
use episode::sync::{self as protocol, Body as SyncBody, Document, Refusal, Response};
use episode::{EpisodeId, Event, EventId, Pathway, PatientRef};
use jiff::{SignedDuration, Timestamp};
use serde_json::{Value, json};
use server::accounts::{self, Password, Role, TeamId, Username};
use server::episodes;
use server::{AppState, Clock, app};
use tower::ServiceExt;
use uuid::Uuid;

mod common;

const PASSWORD: &str = "correct horse battery staple";
const NORTH: &str = "team-north";
const SOUTH: &str = "team-south";

/// A server on a fresh database with teams `team-north` and `team-south`; `asha` and
/// `ben`, practitioners in north; `cai`, a practitioner in south; `mia`, north's team
/// manager; `sol`, south's team manager.
struct Server {
    app: Router,
    state: AppState,
    now: Arc<Mutex<Timestamp>>,
    /// Last: the database outlives the state that uses it.
    _dir: common::TestDb,
}

/// One request and its answer, as sent and received.
struct Exchange {
    request: protocol::Request,
    response: Response,
    request_bytes: usize,
    response_bytes: usize,
}

/// What the database holds of episodes and sync, to show that a refused request stored
/// nothing.
#[derive(Debug, PartialEq)]
struct Fingerprint {
    seq: i64,
    episodes: Rows,
    changes: Rows,
    receipts: Rows,
    sync_states: Rows,
    drops: Rows,
}

type Rows = Vec<Vec<Option<String>>>;

impl Server {
    fn new() -> Self {
        let dir = common::TestDb::new();
        let db = dir.open();
        let start: Timestamp = "2026-03-02T09:00:00Z".parse().expect("a time");
        let password = Password::new(PASSWORD.into()).expect("a password");
        let hash = server::auth::password::hash(&password).expect("hash");
        db.call_blocking(|conn| {
            let mut tx = conn.transaction()?;
            for (id, name) in [(NORTH, "North"), (SOUTH, "South")] {
                accounts::add_team(&mut *tx, &id.parse().expect("a team id"), name, start).expect("add a team");
            }
            for (name, role, team) in [
                ("asha", Role::Practitioner, NORTH),
                ("ben", Role::Practitioner, NORTH),
                ("cai", Role::Practitioner, SOUTH),
                ("mia", Role::TeamManager, NORTH),
                ("sol", Role::TeamManager, SOUTH),
            ] {
                let username: Username = name.parse().expect("a username");
                let teams: Vec<TeamId> = vec![team.parse().expect("a team id")];
                accounts::add_user(&mut *tx, &username, &hash, role, &teams, start).expect("add a user");
            }
            tx.commit()
        })
        .expect("the accounts");
        let now = Arc::new(Mutex::new(start));
        let clock_now = Arc::clone(&now);
        let clock = Clock::from_fn(move || *clock_now.lock().unwrap_or_else(PoisonError::into_inner));
        let state = AppState::new(db, dir.jwt_secret().as_ref(), clock).expect("the state");
        Self { app: app(state.clone()), state, now, _dir: dir }
    }

    fn now(&self) -> Timestamp {
        *self.now.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn advance(&self, seconds: i64) {
        let mut now = self.now.lock().unwrap_or_else(PoisonError::into_inner);
        *now = now.checked_add(SignedDuration::from_secs(seconds)).expect("a time");
    }

    async fn send(&self, request: Request<Body>) -> (StatusCode, HeaderMap, Vec<u8>) {
        let response = self.app.clone().oneshot(request).await.expect("a response");
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX).await.expect("the body");
        (status, headers, bytes.to_vec())
    }

    async fn post_json(&self, path: &str, token: Option<&str>, body: Option<Value>) -> (StatusCode, Value) {
        let mut request = Request::builder().method(Method::POST).uri(path);
        if let Some(token) = token {
            request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        let request = match body {
            Some(body) => request
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(body.to_string()))
                .expect("a request"),
            None => request.body(Body::empty()).expect("a request"),
        };
        let (status, _, bytes) = self.send(request).await;
        let body = if bytes.is_empty() { Value::Null } else { serde_json::from_slice(&bytes).expect("a JSON body") };
        (status, body)
    }

    async fn get_json(&self, path: &str, token: &str) -> (StatusCode, Value) {
        let request = Request::builder()
            .uri(path)
            .header(header::AUTHORIZATION, format!("Bearer {token}"))
            .body(Body::empty())
            .expect("a request");
        let (status, _, bytes) = self.send(request).await;
        (status, serde_json::from_slice(&bytes).expect("a JSON body"))
    }

    async fn login(&self, username: &str, device: &str) -> (StatusCode, Value) {
        self.post_json(
            "/v1/auth/login",
            None,
            Some(json!({"username": username, "password": PASSWORD, "device_id": device})),
        )
        .await
    }

    /// Signs `username` in on a new device, written by actor `n`.
    async fn device(&self, username: &str, device: &str, n: u8) -> Device {
        let (status, body) = self.login(username, device).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        Device {
            id: device.into(),
            user: username.into(),
            token: text(&body["access_token"]),
            refresh: text(&body["refresh_token"]),
            actor: ActorId::from(vec![n; 16]),
            cursor: 0,
            docs: BTreeMap::new(),
            states: BTreeMap::new(),
            reply: BTreeSet::new(),
            leaving: BTreeSet::new(),
        }
    }

    /// Posts a sync body as `token`; returns the status, the headers and the raw answer.
    async fn post_sync(&self, token: &str, body: Vec<u8>) -> (StatusCode, HeaderMap, Vec<u8>) {
        let request = Request::builder()
            .method(Method::POST)
            .uri("/v1/sync")
            .header(header::AUTHORIZATION, format!("Bearer {token}"))
            .header(header::CONTENT_TYPE, protocol::CONTENT_TYPE)
            .body(Body::from(body))
            .expect("a request");
        self.send(request).await
    }

    /// A sync request the server answers, refusing some of its episodes: the refusals.
    async fn refusals(&self, token: &str, body: Vec<u8>) -> Vec<protocol::Refused> {
        let (status, _, bytes) = self.post_sync(token, body).await;
        assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&bytes));
        Response::decode(&bytes).expect("a sync response").refused
    }

    /// A sync request the server must refuse as a whole: its status and JSON error body.
    async fn refused(&self, token: &str, body: Vec<u8>) -> (StatusCode, Value) {
        let (status, headers, bytes) = self.post_sync(token, body).await;
        assert!(status.is_client_error(), "expected a refusal, got {status}");
        assert_eq!(headers.get(header::CONTENT_TYPE).map(|v| v.as_bytes()), Some(&b"application/json"[..]));
        (status, serde_json::from_slice(&bytes).expect("a JSON error body"))
    }

    /// One round trip of `device`: builds its request, sends it, applies the answer.
    async fn exchange(&self, device: &mut Device) -> Exchange {
        let (request, session) = device.request(self.now());
        let body = request.encode();
        let request_bytes = body.len();
        let (status, headers, bytes) = self.post_sync(&device.token, body).await;
        assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&bytes));
        assert_eq!(headers.get(header::CONTENT_TYPE).map(|v| v.as_bytes()), Some(protocol::CONTENT_TYPE.as_bytes()));
        let response = Response::decode(&bytes).expect("a sync response");
        device.apply(&response, session);
        Exchange { request, response, request_bytes, response_bytes: bytes.len() }
    }

    async fn sync(&self, device: &mut Device) -> Response {
        self.exchange(device).await.response
    }

    /// What a device without any state of its own is sent from cursor 0, as each
    /// episode's heads. Such a device holds nothing, so the request writes nothing.
    async fn seen_from_zero(&self, token: &str) -> BTreeMap<EpisodeId, Vec<ChangeHash>> {
        let request = protocol::Request {
            protocol: protocol::PROTOCOL,
            cursor: 0,
            device_time_ms: self.now().as_millisecond(),
            documents: Vec::new(),
        };
        let (status, _, bytes) = self.post_sync(token, request.encode()).await;
        assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&bytes));
        let response = Response::decode(&bytes).expect("a sync response");
        let mut seen = BTreeMap::new();
        for Document { episode, body } in response.documents {
            let SyncBody::Whole(bytes) = body else { panic!("a device holding nothing gets documents whole") };
            let mut doc = EpisodeDoc::load(&bytes, ActorId::from(vec![0xee; 16])).expect("a document");
            seen.insert(episode, sorted(doc.heads()));
        }
        seen
    }

    async fn fingerprint(&self) -> Fingerprint {
        self.state
            .db
            .call(|conn| {
                let seq = conn.current_seq()?;
                let episodes = conn.inspect("SELECT id, team, seq, snapshot FROM episodes ORDER BY id")?;
                let changes = conn.inspect("SELECT episode, bytes FROM episode_changes ORDER BY n")?;
                let receipts = conn
                    .inspect("SELECT episode, event, received_at, device, seq FROM receipts ORDER BY episode, event")?;
                let sync_states =
                    conn.inspect("SELECT episode, device, state FROM sync_states ORDER BY episode, device")?;
                let drops = conn.inspect("SELECT episode, device, seq FROM drops ORDER BY episode, device")?;
                Ok(Fingerprint { seq, episodes, changes, receipts, sync_states, drops })
            })
            .await
            .expect("the fingerprint")
    }

    async fn count(&self, sql: &'static str) -> i64 {
        let rows = self.state.db.call(move |conn| Ok(conn.inspect(sql)?)).await.expect("a count");
        common::number(&rows)
    }
}

/// A phone: its documents, the sync state it persisted per episode once the server
/// confirmed it, and its cursor.
struct Device {
    id: String,
    user: String,
    token: String,
    refresh: String,
    actor: ActorId,
    cursor: u64,
    docs: BTreeMap<EpisodeId, EpisodeDoc>,
    states: BTreeMap<EpisodeId, Vec<u8>>,
    /// Episodes received whole: the device answers with a message, so that the server
    /// knows it holds them.
    reply: BTreeSet<EpisodeId>,
    /// Episodes the server said have left the user's teams: sent whole next time.
    leaving: BTreeSet<EpisodeId>,
}

impl Device {
    /// Opens a routine referral in `team`, an hour before `now`.
    fn open(&mut self, team: &str, now: Timestamp) -> EpisodeId {
        let id = EpisodeId::from_uuid(Uuid::now_v7());
        let opening = Opening {
            id,
            patient_ref: PatientRef::new("RX-SYNC-1").expect("a patient reference"),
            team: team.into(),
            opened_at: now - SignedDuration::from_hours(1),
            opened_by: self.user.clone(),
            pathway: Pathway::RoutineReferral,
            facts: Vec::new(),
            plan: String::new(),
        };
        self.docs.insert(id, EpisodeDoc::open(&opening, self.actor.clone()).expect("open an episode"));
        id
    }

    /// Opens a routine referral in `team` as `opened_by`, whoever is signed in.
    fn open_as(&mut self, team: &str, now: Timestamp, opened_by: &str) -> EpisodeId {
        let user = std::mem::replace(&mut self.user, opened_by.into());
        let id = self.open(team, now);
        self.user = user;
        id
    }

    /// Records an event of `body` at `at` in `episode`; returns its id.
    fn record(&mut self, episode: EpisodeId, at: Timestamp, body: Value) -> EventId {
        let (by, device) = (self.user.clone(), self.id.clone());
        self.record_as(episode, at, body, &by, &device)
    }

    /// Records an event claiming to be `by`, on `device`: what a forged record says.
    fn record_as(&mut self, episode: EpisodeId, at: Timestamp, body: Value, by: &str, device: &str) -> EventId {
        let id = EventId::from_uuid(Uuid::now_v7());
        let mut value = body;
        value["id"] = json!(id.to_string());
        value["at"] = json!(at.to_string());
        value["by"] = json!(by);
        value["device"] = json!(device);
        let event = Event::from_value(&value, 0).expect("a valid record");
        self.docs.get_mut(&episode).expect("the episode on this device").record(&event).expect("record");
        id
    }

    fn doc(&mut self, episode: EpisodeId) -> &mut EpisodeDoc {
        self.docs.get_mut(&episode).expect("the episode on this device")
    }

    fn heads(&mut self, episode: EpisodeId) -> Vec<ChangeHash> {
        sorted(self.doc(episode).heads())
    }

    fn events(&mut self, episode: EpisodeId) -> BTreeSet<EventId> {
        self.doc(episode).episode().expect("an episode").events.iter().map(|e| e.id).collect()
    }

    /// The persisted state of `episode`, decoded and primed, as a device starts a sync.
    fn primed(&self, episode: EpisodeId) -> State {
        let mut state = protocol::decode_state(self.states.get(&episode).map(Vec::as_slice));
        protocol::prime(&mut state);
        state
    }

    /// The next request: episodes the server has never confirmed (or that are leaving)
    /// whole, and a message for every episode with unconfirmed changes, each from the
    /// persisted state. Returns the states of this session, to apply the answer with.
    fn request(&mut self, now: Timestamp) -> (protocol::Request, BTreeMap<EpisodeId, State>) {
        let mut documents = Vec::new();
        let mut session = BTreeMap::new();
        for (&id, doc) in &mut self.docs {
            if self.leaving.contains(&id) || !self.states.contains_key(&id) {
                documents.push(Document { episode: id, body: SyncBody::Whole(doc.save()) });
                continue;
            }
            let mut state = protocol::decode_state(self.states.get(&id).map(Vec::as_slice));
            if !protocol::has_unconfirmed(doc, &state) && !self.reply.contains(&id) {
                continue;
            }
            protocol::prime(&mut state);
            if let Some(message) = doc.generate_sync_message(&mut state) {
                documents.push(Document { episode: id, body: SyncBody::Message(message) });
                session.insert(id, state);
            }
        }
        let request = protocol::Request {
            protocol: protocol::PROTOCOL,
            cursor: self.cursor,
            device_time_ms: now.as_millisecond(),
            documents,
        };
        (request, session)
    }

    fn apply(&mut self, response: &Response, mut session: BTreeMap<EpisodeId, State>) {
        assert_eq!(response.protocol, protocol::PROTOCOL);
        for Document { episode, body } in &response.documents {
            match body {
                SyncBody::Whole(bytes) => {
                    let mut doc = EpisodeDoc::load(bytes, self.actor.clone()).expect("a whole document");
                    if let Some(mine) = self.docs.get_mut(episode) {
                        mine.merge(&mut doc).expect("merge");
                    } else {
                        self.docs.insert(*episode, doc);
                    }
                    let mut state = State::new();
                    state.shared_heads = self.doc(*episode).heads();
                    self.states.insert(*episode, state.encode());
                    self.reply.insert(*episode);
                }
                SyncBody::Message(bytes) => {
                    let mut state = session
                        .remove(episode)
                        .unwrap_or_else(|| protocol::decode_state(self.states.get(episode).map(Vec::as_slice)));
                    let doc = self.docs.get_mut(episode).expect("a message for an episode the device holds");
                    doc.receive_sync_message(&mut state, bytes).expect("the server's message applies");
                    self.states.insert(*episode, state.encode());
                    self.reply.remove(episode);
                }
            }
        }
        self.leaving.extend(response.leaving.iter().copied());
        for episode in &response.dropped {
            self.docs.remove(episode);
            self.states.remove(episode);
            self.reply.remove(episode);
            self.leaving.remove(episode);
        }
        self.cursor = response.cursor;
    }
}

fn sorted(mut heads: Vec<ChangeHash>) -> Vec<ChangeHash> {
    heads.sort();
    heads
}

fn text(value: &Value) -> String {
    value.as_str().unwrap_or_else(|| panic!("expected a string, got {value}")).to_string()
}

/// Asserts the shared error body and returns its code and message.
fn error(body: &Value) -> (String, String) {
    let error = &body["error"];
    assert!(error.is_object(), "not an error body: {body}");
    (text(&error["code"]), text(&error["message"]))
}

fn request_of(documents: Vec<Document>) -> protocol::Request {
    protocol::Request { protocol: protocol::PROTOCOL, cursor: 0, device_time_ms: 0, documents }
}

fn whole(episode: EpisodeId, doc: &mut EpisodeDoc) -> Document {
    Document { episode, body: SyncBody::Whole(doc.save()) }
}

fn message(episode: EpisodeId, bytes: Vec<u8>) -> Document {
    Document { episode, body: SyncBody::Message(bytes) }
}

fn missed() -> Value {
    json!({"kind": "appointment_missed", "appointment": "initial"})
}

fn phoned() -> Value {
    json!({"kind": "contact_attempt", "method": "phone", "target": "patient", "outcome": "no_answer"})
}

/// The evaluation JSON the response carries for `episode` (exactly one).
fn evaluation_of(response: &Response, episode: EpisodeId) -> Value {
    let found: Vec<_> = response.actions.iter().filter(|a| a.episode == episode).collect();
    assert_eq!(found.len(), 1, "one evaluation of {episode} in {:?}", response.actions);
    serde_json::to_value(found[0].evaluation().expect("an evaluation")).expect("evaluation JSON")
}

fn action_codes(evaluation: &Value) -> Vec<String> {
    evaluation["actions"].as_array().expect("actions").iter().map(|a| text(&a["code"])).collect()
}

fn bodies(response: &Response) -> Vec<(EpisodeId, &'static str)> {
    response
        .documents
        .iter()
        .map(|d| {
            let kind = match d.body {
                SyncBody::Whole(_) => "whole",
                SyncBody::Message(_) => "message",
            };
            (d.episode, kind)
        })
        .collect()
}

async fn a_new_episode_is_stored_and_then_the_cursor_says_nothing_new_in_a_few_bytes() {
    let server = Server::new();
    let mut asha = server.device("asha", "phone-asha", 1).await;
    let id = asha.open(NORTH, server.now());
    asha.record(id, server.now() - SignedDuration::from_mins(30), missed());

    let first = server.exchange(&mut asha).await;
    assert!(matches!(first.request.documents[..], [Document { body: SyncBody::Whole(_), .. }]));
    let response = &first.response;
    assert_eq!(response.server_time_ms, server.now().as_millisecond());
    assert_eq!(bodies(response), [(id, "message")], "the server confirms what it stored");
    let evaluation = evaluation_of(response, id);
    assert!(action_codes(&evaluation).contains(&"phone_patient".to_string()), "{evaluation}");
    assert!(response.cursor > 0, "the cursor advances");
    assert!(response.leaving.is_empty() && response.dropped.is_empty() && !response.more);
    assert_eq!(server.count("SELECT count(*) FROM episodes").await, 1);
    assert_eq!(server.count("SELECT count(*) FROM receipts").await, 1);
    assert_eq!(server.count("SELECT count(*) FROM sync_states WHERE device = 'phone-asha'").await, 1);
    let cursor = response.cursor;

    server.advance(60);
    let second = server.exchange(&mut asha).await;
    assert!(second.request.documents.is_empty(), "everything was confirmed");
    assert_eq!(second.request.cursor, cursor);
    assert!(second.response.documents.is_empty(), "{:?}", second.response.documents);
    assert!(second.response.actions.is_empty(), "{:?}", second.response.actions);
    assert_eq!(second.response.cursor, cursor);
    assert!(second.request_bytes < 100, "the request is {} bytes", second.request_bytes);
    assert!(second.response_bytes < 200, "the response is {} bytes", second.response_bytes);
}

async fn a_record_made_on_one_device_reaches_another_by_whole_then_by_message() {
    let server = Server::new();
    let mut asha = server.device("asha", "phone-asha", 1).await;
    let id = asha.open(NORTH, server.now());
    let missed_at = asha.record(id, server.now() - SignedDuration::from_mins(30), missed());
    server.sync(&mut asha).await;

    // Asha phones the patient: a message from the state persisted after the first sync.
    server.advance(60);
    let phoned_at = asha.record(id, server.now(), phoned());
    let persisted = asha.states[&id].clone();
    let mut state = asha.primed(id);
    let expected = asha.doc(id).generate_sync_message(&mut state).expect("a message");
    let exchange = server.exchange(&mut asha).await;
    let [Document { episode, body: SyncBody::Message(sent) }] = &exchange.request.documents[..] else {
        panic!("a message, not {:?}", bodies_of(&exchange.request.documents));
    };
    assert_eq!((*episode, sent), (id, &expected), "the message comes from the persisted state, primed");
    assert_ne!(asha.states[&id], persisted, "the answer moves the shared heads");
    let evaluation = evaluation_of(&exchange.response, id);
    assert!(action_codes(&evaluation).contains(&"write_to_patient".to_string()), "the call is merged: {evaluation}");
    assert_eq!(server.count("SELECT count(*) FROM receipts").await, 2);

    // Ben, in the same team, on his own phone: the episode comes whole.
    let mut ben = server.device("ben", "phone-ben", 2).await;
    let response = server.sync(&mut ben).await;
    assert_eq!(bodies(&response), [(id, "whole")]);
    evaluation_of(&response, id);
    assert_eq!(ben.events(id), BTreeSet::from([missed_at, phoned_at]));
    assert_eq!(ben.heads(id), asha.heads(id));
    // Sent whole, he counts as holding it (a transfer must ask him for what he records
    // before he confirms), with no shared heads yet.
    assert_eq!(server.count("SELECT count(*) FROM sync_states WHERE device = 'phone-ben'").await, 1);

    // He answers with a message for it: the server now knows what he holds.
    let exchange = server.exchange(&mut ben).await;
    assert_eq!(bodies_of(&exchange.request.documents), [(id, "message")]);
    assert_eq!(server.count("SELECT count(*) FROM sync_states WHERE device = 'phone-ben'").await, 1);
    let response = server.sync(&mut ben).await;
    assert!(response.documents.is_empty() && response.actions.is_empty(), "{response:?}");

    // Asha's next record reaches him as a message, through his cursor.
    server.advance(60);
    let again = asha.record(id, server.now(), phoned());
    server.sync(&mut asha).await;
    let response = server.sync(&mut ben).await;
    assert_eq!(bodies(&response), [(id, "message")]);
    evaluation_of(&response, id);
    assert_eq!(ben.events(id), BTreeSet::from([missed_at, phoned_at, again]));
    assert_eq!(ben.heads(id), asha.heads(id));
    let response = server.sync(&mut ben).await;
    assert!(response.documents.is_empty() && response.actions.is_empty(), "{response:?}");
}

fn bodies_of(documents: &[Document]) -> Vec<(EpisodeId, &'static str)> {
    documents
        .iter()
        .map(|d| (d.episode, if matches!(d.body, SyncBody::Whole(_)) { "whole" } else { "message" }))
        .collect()
}

async fn another_teams_episode_is_not_found_and_never_sent() {
    let server = Server::new();
    let mut asha = server.device("asha", "phone-asha", 1).await;
    let id = asha.open(NORTH, server.now());
    asha.record(id, server.now(), missed());
    server.sync(&mut asha).await;
    let before = server.fingerprint().await;

    // Cai, in south, somehow holds a copy of north's episode.
    let mut cai = server.device("cai", "phone-cai", 3).await;
    let mut copy = EpisodeDoc::load(&asha.doc(id).save(), cai.actor.clone()).expect("a copy");
    let mut state = State::new();
    let sync_message = copy.generate_sync_message(&mut state).expect("a message");
    let unknown = EpisodeId::from_uuid(Uuid::now_v7());
    for (episode, document) in [
        (id, message(id, sync_message.clone())),
        (id, whole(id, &mut copy)),
        (unknown, message(unknown, sync_message.clone())),
    ] {
        let refused = server.refusals(&cai.token, request_of(vec![document]).encode()).await;
        assert_eq!(refused, [protocol::Refused { episode, reason: Refusal::NotFound }]);
    }

    // Nor may cai open an episode in north.
    let mut rogue = server.device("cai", "phone-cai-2", 4).await;
    let new = rogue.open(NORTH, server.now());
    let request = request_of(vec![whole(new, rogue.doc(new))]);
    let refused = server.refusals(&rogue.token, request.encode()).await;
    assert_eq!(refused.len(), 1);
    assert_eq!(refused[0].episode, new);
    assert!(matches!(&refused[0].reason, Refusal::Invalid { message } if message.contains("team")), "{refused:?}");

    assert_eq!(server.fingerprint().await, before, "nothing was stored");
    assert!(server.seen_from_zero(&cai.token).await.is_empty(), "south never sees north's episode");
    let response = server.sync(&mut cai).await;
    assert!(response.documents.is_empty() && response.actions.is_empty(), "{response:?}");
    let north = server.device("ben", "phone-ben", 2).await;
    assert_eq!(server.seen_from_zero(&north.token).await.keys().copied().collect::<Vec<_>>(), [id]);
}

/// A copy of `device`'s `episode` by another actor, with `tamper` applied to its records
/// map and committed: the message it sends from the device's persisted state.
fn rogue_message(
    device: &mut Device,
    episode: EpisodeId,
    tamper: impl FnOnce(&mut automerge::AutoCommit, &automerge::ObjId, &str),
) -> Vec<u8> {
    let mut rogue = EpisodeDoc::load(&device.doc(episode).save(), ActorId::from(vec![0x99; 16])).expect("a fork");
    let am = rogue.automerge();
    let events = events_of(am);
    let key = am.keys(&events).next().expect("a record");
    tamper(am, &events, &key);
    am.commit();
    let mut state = device.primed(episode);
    rogue.generate_sync_message(&mut state).expect("a message")
}

async fn refused_requests_name_the_episode_and_store_nothing() {
    let server = Server::new();
    let mut asha = server.device("asha", "phone-asha", 1).await;
    let id = asha.open(NORTH, server.now());
    asha.record(id, server.now(), missed());
    server.sync(&mut asha).await;
    let observer = server.device("ben", "phone-observer", 2).await;
    let seen = server.seen_from_zero(&observer.token).await;
    assert_eq!(seen.keys().copied().collect::<Vec<_>>(), [id]);
    let of = |fingerprint: Fingerprint, episode: EpisodeId| {
        let key = episode.to_string();
        let of_it =
            |rows: Rows| -> Rows { rows.into_iter().filter(|r| r[0].as_deref() == Some(key.as_str())).collect() };
        let (rows, changes, receipts) =
            (of_it(fingerprint.episodes), of_it(fingerprint.changes), of_it(fingerprint.receipts));
        (rows, changes, receipts)
    };
    let before = of(server.fingerprint().await, id);

    // A valid new episode rides along with each bad document: it is stored, the bad one
    // is refused by name with its reason, and nothing of the bad one is stored.
    let other = asha.open(NORTH, server.now());
    let mut other_doc = EpisodeDoc::load(&asha.doc(other).save(), asha.actor.clone()).expect("a copy");
    let tampered = rogue_message(&mut asha, id, |am, events, key| {
        am.put(events, key, r#"{"tampered": true}"#).expect("put");
    });
    let deleted = rogue_message(&mut asha, id, |am, events, key| am.delete(events, key).expect("delete"));
    let garbage = EpisodeId::from_uuid(Uuid::now_v7());
    let renamed = EpisodeId::from_uuid(Uuid::now_v7());
    let cases: Vec<(&str, Document, &str)> = vec![
        ("another episode's document", whole(id, &mut other_doc), "another episode"),
        ("garbage as a message", message(id, b"not an automerge sync message".to_vec()), "not"),
        ("a message altering a record", message(id, tampered), "alter"),
        ("a message deleting a record", message(id, deleted), "delete"),
        ("garbage as a whole document", Document { episode: garbage, body: SyncBody::Whole(vec![0x85; 64]) }, ""),
        ("another episode's document under a new id", whole(renamed, &mut other_doc), "another episode"),
    ];
    for (what, bad, says) in cases {
        let episode = bad.episode;
        let rider = asha.open(NORTH, server.now());
        let request = request_of(vec![whole(rider, asha.doc(rider)), bad]);
        let (status, _, bytes) = server.post_sync(&asha.token, request.encode()).await;
        assert_eq!(status, StatusCode::OK, "{what}: {}", String::from_utf8_lossy(&bytes));
        let response = Response::decode(&bytes).expect("a response");
        let [protocol::Refused { episode: named, reason: Refusal::Invalid { message } }] = &response.refused[..] else {
            panic!("{what}: one episode refused as invalid, not {:?}", response.refused);
        };
        assert_eq!(*named, episode, "{what}");
        assert!(message.contains(says), "{what}: {message}");
        assert!(response.actions.iter().any(|a| a.episode == rider), "{what}: the rider is answered");
        assert_eq!(of(server.fingerprint().await, id), before, "{what}: nothing of it stored");
        for unknown in [garbage, renamed] {
            assert!(of(server.fingerprint().await, unknown).0.is_empty(), "{what}: no episode {unknown}");
        }
        let seen_now = server.seen_from_zero(&observer.token).await;
        assert_eq!(seen_now[&id], seen[&id], "{what}: the same heads");
        assert!(seen_now.contains_key(&rider), "{what}: the rider is stored");
    }

    // The same episode twice is a malformed request: refused whole, nothing stored.
    let stored = server.fingerprint().await;
    let twice = request_of(vec![whole(other, asha.doc(other)), whole(other, asha.doc(other))]);
    let (status, body) = server.refused(&asha.token, twice.encode()).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    let (code, text) = error(&body);
    assert_eq!((code.as_str(), body["error"]["episode"].clone()), ("sync_refused", json!(other.to_string())));
    assert!(text.contains("twice"), "{text}");
    assert_eq!(server.fingerprint().await, stored, "nothing stored");

    // Bodies that are not a sync request of this protocol.
    let wrong_protocol = protocol::Request { protocol: protocol::PROTOCOL + 1, ..request_of(Vec::new()) };
    let versions = format!("speaks protocol {}; this build speaks {}", protocol::PROTOCOL + 1, protocol::PROTOCOL);
    let malformed: Vec<(&str, Vec<u8>, &str)> = vec![
        ("empty", Vec::new(), "not a sync message"),
        ("not postcard", vec![0xff; 16], "not a sync message"),
        ("JSON", br#"{"protocol": 1, "cursor": 0}"#.to_vec(), ""),
        ("another protocol", wrong_protocol.encode(), &versions),
    ];
    for (what, bytes, says) in malformed {
        let (status, body) = server.refused(&asha.token, bytes).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{what}: {body}");
        let (code, text) = error(&body);
        assert_eq!(code, "malformed_sync", "{what}");
        assert!(text.contains(says), "{what}: {text}");
        assert!(body["error"].get("episode").is_none(), "{what}: {body}");
        assert_eq!(server.fingerprint().await, stored, "{what}: nothing stored");
    }

    // The device's honest sync still works: the refusals left its sync state alone.
    asha.docs.remove(&other);
    let phoned_at = asha.record(id, server.now(), phoned());
    let response = server.sync(&mut asha).await;
    assert!(bodies(&response).contains(&(id, "message")), "{:?}", bodies(&response));
    let mut ben = server.device("ben", "phone-ben", 3).await;
    server.sync(&mut ben).await;
    assert!(ben.events(id).contains(&phoned_at));
    assert_eq!(ben.heads(id), asha.heads(id));
}

fn events_of(am: &automerge::AutoCommit) -> automerge::ObjId {
    match am.get(ROOT, "events").expect("the records") {
        Some((AmValue::Object(_), events)) => events,
        _ => panic!("the records map"),
    }
}

async fn a_request_sent_twice_changes_nothing_twice() {
    let server = Server::new();
    let mut asha = server.device("asha", "phone-asha", 1).await;
    let id = asha.open(NORTH, server.now());
    let first_event = asha.record(id, server.now(), missed());

    // A new episode, whole, twice (the first answer lost on the way).
    let (request, session) = asha.request(server.now());
    let token = asha.token.clone();
    let post = |bytes: Vec<u8>| {
        let token = token.clone();
        let server = &server;
        async move {
            let (status, _, bytes) = server.post_sync(&token, bytes).await;
            assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&bytes));
            Response::decode(&bytes).expect("a response")
        }
    };
    let once = post(request.encode()).await;
    let stored = server.fingerprint().await;
    let twice = post(request.encode()).await;
    let after = server.fingerprint().await;
    assert_eq!(after.seq, stored.seq, "no new change");
    assert_eq!(
        (&after.episodes, &after.changes, &after.receipts),
        (&stored.episodes, &stored.changes, &stored.receipts)
    );
    assert_eq!(twice.cursor, once.cursor);
    assert_eq!(bodies(&twice), [(id, "message")]);
    assert_eq!(evaluation_of(&twice, id), evaluation_of(&once, id));
    asha.apply(&twice, session);

    // A message with a new record, twice.
    server.advance(60);
    let second_event = asha.record(id, server.now(), phoned());
    let (request, session) = asha.request(server.now());
    assert_eq!(bodies_of(&request.documents), [(id, "message")]);
    let once = post(request.encode()).await;
    let stored = server.fingerprint().await;
    let twice = post(request.encode()).await;
    let after = server.fingerprint().await;
    assert_eq!(after.seq, stored.seq, "no new change");
    assert_eq!(
        (&after.episodes, &after.changes, &after.receipts),
        (&stored.episodes, &stored.changes, &stored.receipts)
    );
    assert_eq!(after.receipts.len(), 2, "one receipt per record");
    assert_eq!(twice.cursor, once.cursor);
    assert_eq!(evaluation_of(&twice, id), evaluation_of(&once, id));
    assert!(action_codes(&evaluation_of(&twice, id)).contains(&"write_to_patient".to_string()));
    asha.apply(&twice, session);

    let observer = server.device("ben", "phone-observer", 2).await;
    let seen = server.seen_from_zero(&observer.token).await;
    assert_eq!(seen, BTreeMap::from([(id, asha.heads(id))]), "the same heads on both sides");
    let mut ben = server.device("ben", "phone-ben", 3).await;
    server.sync(&mut ben).await;
    let episode = ben.doc(id).episode().expect("an episode");
    let ids: Vec<EventId> = episode.events.iter().map(|e| e.id).collect();
    assert_eq!(ids.len(), 2, "one copy of each record");
    assert_eq!(ids.iter().copied().collect::<BTreeSet<_>>(), BTreeSet::from([first_event, second_event]));

    // The device applied the second answer: it is up to date.
    let exchange = server.exchange(&mut asha).await;
    assert!(exchange.request.documents.is_empty());
    assert!(exchange.response.documents.is_empty() && exchange.response.actions.is_empty());
}

async fn a_revoked_device_is_refused_everywhere() {
    let server = Server::new();
    let mut ben = server.device("ben", "phone-ben", 2).await;
    let id = ben.open(NORTH, server.now());
    server.sync(&mut ben).await;
    let mia = server.device("mia", "tablet-mia", 5).await;
    let cai = server.device("cai", "phone-cai", 3).await;
    let sol = server.device("sol", "tablet-sol", 6).await;

    // Only a manager of one of the device's teams may revoke it.
    let (status, body) = server.post_json("/v1/devices/phone-ben/revoke", Some(&cai.token), None).await;
    assert_eq!((status, error(&body).0.as_str()), (StatusCode::FORBIDDEN, "forbidden"));
    let (status, body) = server.post_json("/v1/devices/phone-ben/revoke", Some(&sol.token), None).await;
    assert_eq!((status, error(&body).0.as_str()), (StatusCode::NOT_FOUND, "not_found"));
    let (status, body) = server.post_json("/v1/devices/no-such-phone/revoke", Some(&mia.token), None).await;
    assert_eq!((status, error(&body).0.as_str()), (StatusCode::NOT_FOUND, "not_found"));
    let response = server.sync(&mut ben).await;
    assert!(response.documents.is_empty(), "not revoked yet");

    let (status, body) = server.post_json("/v1/devices/phone-ben/revoke", Some(&mia.token), None).await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");

    let (request, _) = ben.request(server.now());
    let (status, body) = server.refused(&ben.token, request.encode()).await;
    assert_eq!((status, error(&body).0.as_str()), (StatusCode::FORBIDDEN, "device_revoked"), "{body}");
    let (status, body) = server.login("ben", "phone-ben").await;
    assert_eq!((status, error(&body).0.as_str()), (StatusCode::FORBIDDEN, "device_revoked"), "{body}");
    let refresh = json!({"refresh_token": ben.refresh, "device_id": "phone-ben"});
    let (status, body) = server.post_json("/v1/auth/refresh", None, Some(refresh)).await;
    assert_eq!((status, error(&body).0.as_str()), (StatusCode::FORBIDDEN, "device_revoked"), "{body}");

    // Ben himself may sign in on another phone, and gets the episode there.
    let mut new_phone = server.device("ben", "phone-ben-2", 7).await;
    let response = server.sync(&mut new_phone).await;
    assert_eq!(bodies(&response), [(id, "whole")]);
}

async fn a_transferred_episode_is_handed_over_then_dropped_and_reaches_the_new_team() {
    let server = Server::new();
    let mut asha = server.device("asha", "phone-asha", 1).await;
    let id = asha.open(NORTH, server.now());
    let missed_at = asha.record(id, server.now(), missed());
    server.sync(&mut asha).await;
    let mut cai = server.device("cai", "phone-cai", 3).await;
    assert!(server.sync(&mut cai).await.documents.is_empty());

    let transfer = |token: String| {
        let server = &server;
        async move {
            server.post_json(&format!("/v1/episodes/{id}/transfer"), Some(&token), Some(json!({"team": SOUTH}))).await
        }
    };
    let (status, body) = transfer(asha.token.clone()).await;
    assert_eq!((status, error(&body).0.as_str()), (StatusCode::FORBIDDEN, "forbidden"));
    let mia = server.device("mia", "tablet-mia", 5).await;
    let (status, body) = transfer(mia.token.clone()).await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");

    // Asha's phone held it: it is told the episode is leaving.
    server.advance(60);
    let response = server.sync(&mut asha).await;
    assert_eq!(response.leaving, [id]);
    assert!(response.documents.is_empty() && response.dropped.is_empty(), "{response:?}");
    assert!(asha.docs.contains_key(&id), "kept until handed over");

    // It records one more thing offline, then hands the episode over whole.
    let late = asha.record(id, server.now(), phoned());
    let exchange = server.exchange(&mut asha).await;
    assert_eq!(bodies_of(&exchange.request.documents), [(id, "whole")]);
    assert_eq!(exchange.response.dropped, [id]);
    assert!(exchange.response.documents.is_empty(), "{:?}", exchange.response.documents);
    assert!(!asha.docs.contains_key(&id));
    let response = server.sync(&mut asha).await;
    assert!(response.leaving.is_empty() && response.dropped.is_empty(), "{response:?}");

    // A south device receives it, with the record made after the transfer.
    let response = server.sync(&mut cai).await;
    assert_eq!(bodies(&response), [(id, "whole")]);
    evaluation_of(&response, id);
    assert_eq!(cai.events(id), BTreeSet::from([missed_at, late]));

    // North no longer sees it.
    let ben = server.device("ben", "phone-ben", 2).await;
    assert!(server.seen_from_zero(&ben.token).await.is_empty());
    let mut copy = EpisodeDoc::load(&cai.doc(id).save(), ben.actor.clone()).expect("a copy");
    let refused = server.refusals(&ben.token, request_of(vec![whole(id, &mut copy)]).encode()).await;
    assert_eq!(refused, [protocol::Refused { episode: id, reason: Refusal::NotFound }]);
}

async fn a_record_from_the_future_gets_a_clock_skew_warning() {
    let server = Server::new();
    let mut asha = server.device("asha", "phone-asha", 1).await;
    let id = asha.open(NORTH, server.now());
    let honest = asha.record(id, server.now() - SignedDuration::from_mins(2), missed());
    let skewed = asha.record(id, server.now() + SignedDuration::from_mins(10), phoned());
    let response = server.sync(&mut asha).await;
    let evaluation = evaluation_of(&response, id);
    let skews: Vec<&Value> =
        evaluation["warnings"].as_array().expect("warnings").iter().filter(|w| w["code"] == "clock_skew").collect();
    assert_eq!(skews.len(), 1, "{evaluation}");
    assert_eq!(skews[0]["record"], json!(skewed.to_string()));
    assert_ne!(skews[0]["record"], json!(honest.to_string()));
}

async fn a_replayed_hand_over_is_answered_again() {
    let server = Server::new();
    let mut asha = server.device("asha", "phone-asha", 1).await;
    let id = asha.open(NORTH, server.now());
    asha.record(id, server.now(), missed());
    server.sync(&mut asha).await;
    let mia = server.device("mia", "tablet-mia", 5).await;
    let (status, body) =
        server.post_json(&format!("/v1/episodes/{id}/transfer"), Some(&mia.token), Some(json!({"team": SOUTH}))).await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    assert_eq!(server.sync(&mut asha).await.leaving, [id]);

    // The hand-over's answer is lost on the way: the device sends the same request again.
    let (request, _) = asha.request(server.now());
    assert_eq!(bodies_of(&request.documents), [(id, "whole")]);
    let (status, _, bytes) = server.post_sync(&asha.token, request.encode()).await;
    assert_eq!(status, StatusCode::OK);
    let once = Response::decode(&bytes).expect("a response");
    assert_eq!(once.dropped, [id]);
    let stored = server.fingerprint().await;
    let (status, _, bytes) = server.post_sync(&asha.token, request.encode()).await;
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&bytes));
    let twice = Response::decode(&bytes).expect("a response");
    assert_eq!(twice.dropped, [id], "the device is told again that it may drop the episode");
    assert_eq!(server.fingerprint().await.episodes, stored.episodes);
}

async fn a_record_made_after_receiving_an_episode_whole_survives_a_transfer() {
    let server = Server::new();
    let mut asha = server.device("asha", "phone-asha", 1).await;
    let id = asha.open(NORTH, server.now());
    asha.record(id, server.now(), missed());
    server.sync(&mut asha).await;

    // Ben receives the episode whole in the morning, then goes out of signal and records
    // a visit's call; at noon the episode is transferred to south.
    let mut ben = server.device("ben", "phone-ben", 2).await;
    assert_eq!(bodies(&server.sync(&mut ben).await), [(id, "whole")]);
    server.advance(300);
    let offline = ben.record(id, server.now(), phoned());
    let mia = server.device("mia", "tablet-mia", 5).await;
    let (status, body) =
        server.post_json(&format!("/v1/episodes/{id}/transfer"), Some(&mia.token), Some(json!({"team": SOUTH}))).await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");

    // In the evening ben syncs: his record must reach the server (and the new team), or
    // at least he must be told to hand the episode over; a 404 loses it.
    server.advance(300);
    let (request, session) = ben.request(server.now());
    assert_eq!(bodies_of(&request.documents), [(id, "message")]);
    let (status, _, bytes) = server.post_sync(&ben.token, request.encode()).await;
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&bytes));
    let response = Response::decode(&bytes).expect("a response");
    ben.apply(&response, session);
    if !response.leaving.is_empty() {
        assert_eq!(response.leaving, [id]);
        let response = server.sync(&mut ben).await;
        assert_eq!(response.dropped, [id]);
    }
    let mut cai = server.device("cai", "phone-cai", 3).await;
    server.sync(&mut cai).await;
    assert!(cai.events(id).contains(&offline), "ben's offline record reached south");
}

async fn a_large_caseload_comes_in_pages() {
    let server = Server::new();
    let mut asha = server.device("asha", "phone-asha", 1).await;
    let ids: BTreeSet<EpisodeId> = (0..130).map(|_| asha.open(NORTH, server.now())).collect();
    let response = server.sync(&mut asha).await;
    assert_eq!(response.actions.len(), 130);
    // What asha brought is answered in full at once: no page, and nothing again after.
    assert!(!response.more);
    let again = server.exchange(&mut asha).await;
    assert!(again.response.actions.is_empty(), "{} evaluations sent twice", again.response.actions.len());

    let mut ben = server.device("ben", "phone-ben", 2).await;
    let first = server.sync(&mut ben).await;
    assert!(first.more);
    assert_eq!(first.documents.len(), 100);
    let second = server.sync(&mut ben).await;
    assert!(!second.more);
    let received: BTreeSet<EpisodeId> = first.documents.iter().chain(&second.documents).map(|d| d.episode).collect();
    assert_eq!(received, ids, "every episode once, none lost between the pages");
    assert_eq!(ben.docs.keys().copied().collect::<BTreeSet<_>>(), ids);
    // Ben's answers for the second page's episodes, then nothing new.
    server.sync(&mut ben).await;
    let exchange = server.exchange(&mut ben).await;
    assert!(exchange.request.documents.is_empty(), "{:?}", bodies_of(&exchange.request.documents));
    assert!(exchange.response.documents.is_empty() && !exchange.response.more);
    assert_eq!(server.count("SELECT count(*) FROM sync_states WHERE device = 'phone-ben'").await, 130);
}

async fn concurrent_requests_commit_together_and_a_refused_one_stores_nothing_of_its_own() {
    // Sent at once, these are written in shared transactions (group commit), each in its
    // own savepoint: every good request is stored and answered, the bad one is refused
    // and leaves no trace, whatever batch it fell into.
    let server = Arc::new(Server::new());
    let mut devices = Vec::new();
    for n in 0..12u8 {
        let mut device = server.device("asha", &format!("phone-{n}"), n + 10).await;
        let id = device.open(NORTH, server.now());
        device.record(id, server.now(), missed());
        devices.push((device, id));
    }
    let (mut rogue, _) = devices.pop().expect("a device");
    let rogue_episode = rogue.open(NORTH, server.now());
    let mut good = Vec::new();
    for (mut device, id) in devices {
        let server = Arc::clone(&server);
        good.push(tokio::spawn(async move {
            let (request, _) = device.request(server.now());
            let (status, _, bytes) = server.post_sync(&device.token, request.encode()).await;
            assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&bytes));
            id
        }));
    }
    let bad = {
        let server = Arc::clone(&server);
        // Malformed (the same episode twice): refused whole.
        let body = request_of(vec![
            whole(rogue_episode, rogue.doc(rogue_episode)),
            whole(rogue_episode, rogue.doc(rogue_episode)),
        ])
        .encode();
        let token = rogue.token.clone();
        tokio::spawn(async move { server.refused(&token, body).await })
    };
    let mut stored = Vec::new();
    for task in good {
        stored.push(task.await.expect("a good request"));
    }
    let (status, _) = bad.await.expect("the bad request");
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(server.count("SELECT count(*) FROM episodes").await, 11);
    assert_eq!(server.count("SELECT count(*) FROM receipts").await, 11);
    let ids: BTreeSet<String> = server
        .state
        .db
        .call_blocking(|conn| conn.inspect("SELECT id FROM episodes"))
        .expect("ids")
        .into_iter()
        .flatten()
        .flatten()
        .collect();
    assert_eq!(ids, stored.iter().map(ToString::to_string).collect());
    assert!(!ids.contains(&rogue_episode.to_string()), "the refused request's new episode is not kept");
}

/// Devices recording in one episode and syncing all at once, over and over, while the
/// office records in it too: on PostgreSQL two sync writers take the requests side by
/// side, each with its own documents, and the episode's compare-and-set orders every
/// write. Nothing waits forever (no writer holds the document cache's lock while it
/// waits on the database), every record is stored once, and every device ends with
/// every record.
async fn devices_writing_one_episode_at_once_lose_nothing() {
    const DEVICES: u8 = 6;
    const ROUNDS: usize = 5;
    let server = Arc::new(Server::new());
    let mut first = server.device("asha", "phone-0", 10).await;
    let id = first.open(NORTH, server.now());
    server.sync(&mut first).await;
    let mut devices = vec![first];
    for n in 1..DEVICES {
        let mut device = server.device("asha", &format!("phone-{n}"), n + 10).await;
        server.sync(&mut device).await;
        assert!(device.docs.contains_key(&id), "phone-{n} has the episode");
        devices.push(device);
    }
    let office = {
        let state = server.state.clone();
        tokio::task::spawn_blocking(move || {
            (0..ROUNDS)
                .map(|_| common::record_on(&state, id, 0).expect("the office's record"))
                .collect::<Vec<EventId>>()
        })
    };
    let tasks: Vec<_> = devices
        .into_iter()
        .map(|mut device| {
            let server = Arc::clone(&server);
            tokio::spawn(async move {
                let mut made = Vec::new();
                for _ in 0..ROUNDS {
                    made.push(device.record(id, server.now(), missed()));
                    server.sync(&mut device).await;
                }
                (device, made)
            })
        })
        .collect();
    let mut devices = Vec::new();
    let mut made = BTreeSet::new();
    let all_done = async {
        for task in tasks {
            let (device, records) = task.await.expect("a device's syncs");
            made.extend(records);
            devices.push(device);
        }
        made.extend(office.await.expect("the office's writes"));
    };
    tokio::time::timeout(std::time::Duration::from_secs(120), all_done).await.expect("no writer waits forever");
    assert_eq!(made.len(), (usize::from(DEVICES) + 1) * ROUNDS);
    // Each device brings the rest home. Like the client core, one not yet in step with
    // the server (its last answer named heads it lacks: a change it was not sent, as
    // a sync message's Bloom filter may say) keeps talking until it is.
    for _ in 0..4 {
        for device in &mut devices {
            let state = protocol::decode_state(device.states.get(&id).map(Vec::as_slice));
            if !protocol::in_step(device.doc(id), &state) {
                device.reply.insert(id);
            }
            server.sync(device).await;
        }
    }
    for device in &mut devices {
        assert_eq!(device.events(id), made, "{} holds every record, each once", device.id);
    }
    let receipts = server.count("SELECT count(*) FROM receipts").await;
    assert_eq!(receipts, i64::try_from(made.len()).expect("a count"), "each record received once");
}

/// The server's evaluation follows its clock, not only the episode: sent again days later,
/// unchanged, the episode's actions are overdue; sent to two devices within one moment,
/// it is the same bytes. (The evaluation's encoding is kept while it does not change.)
async fn an_unchanged_episodes_evaluation_follows_the_clock() {
    let server = Server::new();
    let mut asha = server.device("asha", "phone-asha", 1).await;
    let id = asha.open(NORTH, server.now());
    asha.record(id, server.now(), missed());
    let response = server.sync(&mut asha).await;
    let states = |evaluation: &Value| -> Vec<String> {
        evaluation["actions"].as_array().expect("actions").iter().map(|a| text(&a["state"])).collect()
    };
    let before = states(&evaluation_of(&response, id));
    assert!(!before.is_empty() && !before.contains(&"overdue".to_string()), "{before:?}");

    server.advance(3 * 24 * 3600);
    let mut ben = server.device("ben", "phone-ben", 2).await;
    let mut cara = server.device("asha", "phone-asha-2", 3).await;
    let to_ben = server.sync(&mut ben).await;
    let to_cara = server.sync(&mut cara).await;
    let after = states(&evaluation_of(&to_ben, id));
    assert!(after.contains(&"overdue".to_string()), "three days on, something is overdue: {after:?}");
    let wire = |response: &Response| response.actions.iter().find(|a| a.episode == id).map(|a| a.evaluation.clone());
    assert_eq!(wire(&to_ben), wire(&to_cara), "one moment, one evaluation");
}

/// The refusals of a response, by episode.
fn refusals_of(response: &Response) -> BTreeMap<EpisodeId, Refusal> {
    response.refused.iter().map(|r| (r.episode, r.reason.clone())).collect()
}

async fn a_new_record_not_made_here_by_someone_signed_in_here_is_refused_for_its_episode_alone() {
    let server = Server::new();
    let mut asha = server.device("asha", "phone-asha", 1).await;
    let now = server.now();
    let good = asha.open(NORTH, now);
    asha.record(good, now, missed());
    // A record claiming mia (who never signed in here), one claiming ben's phone, and an
    // episode claiming to be opened by ben.
    let as_mia = asha.open(NORTH, now);
    let forged = asha.record_as(as_mia, now, phoned(), "mia", "phone-asha");
    let as_bens_phone = asha.open(NORTH, now);
    let relayed = asha.record_as(as_bens_phone, now, phoned(), "asha", "phone-ben");
    let opened_by_ben = asha.open_as(NORTH, now, "ben");

    let response = server.sync(&mut asha).await;
    assert_eq!(
        refusals_of(&response),
        BTreeMap::from([
            (as_mia, Refusal::NotSignedInHere { record: Some(forged), by: "mia".into() }),
            (as_bens_phone, Refusal::OtherDevice { record: relayed }),
            (opened_by_ben, Refusal::NotSignedInHere { record: None, by: "ben".into() }),
        ])
    );
    // Everything else in the request is stored and answered.
    assert_eq!(response.actions.iter().map(|a| a.episode).collect::<Vec<_>>(), [good]);
    assert_eq!(server.count("SELECT count(*) FROM episodes").await, 1);
    assert_eq!(server.count("SELECT count(*) FROM receipts").await, 1);
    assert_eq!(server.count("SELECT count(*) FROM audit WHERE action = 'sync_open'").await, 1);

    // A shift change: ben signs in on asha's phone. The episode he opened there goes
    // through; mia's and the other phone's records still do not.
    let (status, body) = server.login("ben", "phone-asha").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let response = server.sync(&mut asha).await;
    assert_eq!(refusals_of(&response).keys().copied().collect::<Vec<_>>(), [as_mia, as_bens_phone]);
    assert!(response.actions.iter().any(|a| a.episode == opened_by_ben));
    assert_eq!(server.count("SELECT count(*) FROM episodes").await, 2);

    // A record added to an episode the server has is checked the same way. (A phone
    // holds the refused episodes back; this one just leaves them out.)
    asha.docs.remove(&as_mia);
    asha.docs.remove(&as_bens_phone);
    server.sync(&mut asha).await;
    let second = asha.record_as(good, now, phoned(), "sol", "phone-asha");
    let exchange = server.exchange(&mut asha).await;
    assert_eq!(bodies_of(&exchange.request.documents), [(good, "message")]);
    assert_eq!(
        refusals_of(&exchange.response),
        BTreeMap::from([(good, Refusal::NotSignedInHere { record: Some(second), by: "sol".into() })])
    );
    let stored = server_events(&server, good).await;
    assert!(!stored.contains(&second), "the forged record is not stored");
}

/// The ids of the records the server holds of `episode`.
async fn server_events(server: &Server, episode: EpisodeId) -> BTreeSet<EventId> {
    server
        .state
        .db
        .call(move |conn| {
            let actor = ActorId::from(vec![0xcc; 16]);
            let stored = episodes::load(conn, episode, &actor)?.expect("the episode");
            Ok(stored.doc().episode().expect("an episode").events.iter().map(|e| e.id).collect())
        })
        .await
        .expect("the server's records")
}

async fn records_the_server_has_are_not_new_and_another_devices_new_ones_wait_for_it() {
    let server = Server::new();
    let mut asha = server.device("asha", "phone-asha", 1).await;
    let mut ben = server.device("ben", "phone-ben", 2).await;
    let now = server.now();
    let id = asha.open(NORTH, now);
    let first = asha.record(id, now, missed());
    server.sync(&mut asha).await;
    // Ben receives it whole, records a call, and asha takes his copy from phone to phone
    // (peer exchange) before he has synced; she records a visit's call of her own.
    server.sync(&mut ben).await;
    let bens = ben.record(id, now, phoned());
    let mut copy = EpisodeDoc::load(&ben.doc(id).save(), ActorId::from(vec![0x77; 16])).expect("ben's copy");
    asha.doc(id).merge(&mut copy).expect("merge ben's copy");
    let hers = asha.record(id, now, phoned());

    // Asha's copy carries ben's record, new to the server: only ben's phone may bring it.
    let response = server.sync(&mut asha).await;
    assert_eq!(refusals_of(&response), BTreeMap::from([(id, Refusal::OtherDevice { record: bens })]));
    assert_eq!(server_events(&server, id).await, BTreeSet::from([first]));

    // Ben syncs his own record (his copy holds asha's first one, which is not new).
    let response = server.sync(&mut ben).await;
    assert!(response.refused.is_empty(), "{:?}", response.refused);
    // Now asha's copy holds nothing new but her own: it goes through.
    let response = server.sync(&mut asha).await;
    assert!(response.refused.is_empty(), "{:?}", response.refused);
    assert_eq!(server_events(&server, id).await, BTreeSet::from([first, bens, hers]));
}

/// Puts `records` of `bytes` each into the server's stored `episode` directly, as a
/// server before the budget existed could have accepted them (incompressible notes by
/// `by` on `device`); returns the stored size.
async fn grow_past_the_budget(server: &Server, episode: EpisodeId, records: usize, bytes: usize) -> usize {
    server
        .state
        .db
        .call(move |conn| {
            let mut tx = conn.transaction()?;
            let actor = episodes::server_actor(&mut *tx)?;
            let mut stored = episodes::load(&mut *tx, episode, &actor)?.expect("the episode");
            let bytes = stored.with_doc(|doc| {
            let am = doc.automerge();
            let events = events_of(am);
            let mut seed = 7u64;
            for n in 0..records {
                let note: String = (0..bytes)
                    .map(|_| {
                        seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                        char::from(b'!' + (seed >> 57) as u8 % 90)
                    })
                    .collect();
                let id = Uuid::now_v7();
                let record = json!({"id": id.to_string(), "kind": "home_visit", "at": format!("2026-03-02T0{}:00:00Z", n % 9),
                                    "by": "asha", "device": "phone-asha", "announced": false, "outcome": "no_answer",
                                    "note": note});
                am.put(&events, id.to_string(), record.to_string()).expect("put");
                am.commit();
            }
            doc.save_incremental()
            });
            episodes::store_changes(&mut *tx, &mut stored, &bytes, &"phone-asha".parse().expect("a device id"), 0)?;
            tx.commit()?;
            let stored = episodes::load(conn, episode, &actor)?.expect("the episode");
            Ok(stored.doc().stored_bytes())
        })
        .await
        .expect("grow the episode")
}

async fn an_episode_past_its_budget_reads_and_refuses_every_change_alone() {
    let server = Server::new();
    let mut asha = server.device("asha", "phone-asha", 1).await;
    let now = server.now();
    let id = asha.open(NORTH, now);
    asha.record(id, now, missed());
    server.sync(&mut asha).await;
    let size = grow_past_the_budget(&server, id, 5, 1 << 20).await;
    assert!(size > episode::limits::EPISODE_BUDGET_BYTES, "stored {size}");
    server.sync(&mut asha).await;
    assert_eq!(asha.doc(id).episode().expect("the episode").events.len(), 6, "it reached the device whole");

    // One more record, and a new episode beside it: the episode is refused, typed, and
    // the new one is stored.
    let more = asha.record(id, now, phoned());
    let other = asha.open(NORTH, now);
    let response = server.sync(&mut asha).await;
    match refusals_of(&response).get(&id) {
        Some(Refusal::EpisodeFull { bytes, budget }) => {
            assert_eq!(*budget, episode::limits::EPISODE_BUDGET_BYTES as u64);
            assert!(*bytes > *budget);
        }
        other => panic!("expected the episode full, got {other:?}"),
    }
    assert_eq!(response.refused.len(), 1);
    assert!(response.actions.iter().any(|a| a.episode == other), "the new episode is stored");
    assert!(!server_events(&server, id).await.contains(&more));
    let second = server.device("ben", "phone-ben", 2).await;
    assert!(server.seen_from_zero(&second.token).await.contains_key(&id), "it still syncs to a new device");

    // Through the API: it reads, and a record is refused with a clear error.
    let mia = server.device("mia", "desk-mia", 5).await;
    let (status, body) = server.get_json(&format!("/v1/episodes/{id}"), &mia.token).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = server.get_json("/v1/reconcile", &mia.token).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = server
        .post_json(&format!("/v1/episodes/{id}/events"), Some(&mia.token), Some(json!({"kind": "reengaged"})))
        .await;
    assert_eq!((status, error(&body).0.as_str()), (StatusCode::UNPROCESSABLE_ENTITY, "episode_full"), "{body}");
    assert!(error(&body).1.contains("new episode"), "{body}");
}

/// The receipt times an answer carries for `episode`, by record.
fn receipts_of(response: &Response, episode: EpisodeId) -> BTreeMap<EventId, i64> {
    response
        .actions
        .iter()
        .filter(|a| a.episode == episode)
        .flat_map(|a| a.received.iter().map(|r| (r.event, r.received_at_ms)))
        .collect()
}

/// Each device is sent each receipt time once: the ones noted after its cursor, or all
/// of an episode's when its document crosses whole; a repeat of a request whose answer
/// was lost gets them again, as first noted.
async fn receipt_times_cross_with_the_answer_once_for_each_device() {
    let server = Server::new();
    let mut asha = server.device("asha", "phone-asha", 1).await;
    let mut ben = server.device("ben", "phone-ben", 2).await;
    let id = asha.open(NORTH, server.now());
    let first = asha.record(id, server.now() - SignedDuration::from_mins(30), missed());
    let second = asha.record(id, server.now() - SignedDuration::from_mins(20), phoned());
    let t0 = server.now().as_millisecond();
    let response = server.sync(&mut asha).await;
    assert_eq!(receipts_of(&response, id), BTreeMap::from([(first, t0), (second, t0)]));

    // Nothing new: no evaluation, no receipts.
    server.advance(60);
    let response = server.sync(&mut asha).await;
    assert!(response.actions.is_empty(), "{:?}", response.actions);

    // Ben's phone gets the episode whole, and every receipt with it.
    let response = server.sync(&mut ben).await;
    assert_eq!(bodies(&response), [(id, "whole")]);
    assert_eq!(receipts_of(&response, id), BTreeMap::from([(first, t0), (second, t0)]));
    server.sync(&mut ben).await;

    // A third record: its receipt alone reaches both phones.
    server.advance(60);
    let third = asha.record(id, server.now(), phoned());
    let t1 = server.now().as_millisecond();
    let response = server.sync(&mut asha).await;
    assert_eq!(receipts_of(&response, id), BTreeMap::from([(third, t1)]));
    server.advance(60);
    let response = server.sync(&mut ben).await;
    assert_eq!(bodies(&response), [(id, "message")]);
    assert_eq!(receipts_of(&response, id), BTreeMap::from([(third, t1)]));

    // Asha's answer is lost: the repeat is answered with the receipt as first noted.
    let fourth = asha.record(id, server.now(), phoned());
    let t2 = server.now().as_millisecond();
    let (request, _) = asha.request(server.now());
    let (status, _, _) = server.post_sync(&asha.token, request.encode()).await;
    assert_eq!(status, StatusCode::OK);
    server.advance(60);
    let response = server.sync(&mut asha).await;
    assert_eq!(receipts_of(&response, id), BTreeMap::from([(fourth, t2)]));
}

/// Filing in the EPR (`tether serve --epr-fhir`) against a FHIR receiver on loopback that
/// fails a transaction untouched, takes one and then fails (its answer lost), and takes
/// one but answers past the sender's timeout: records that reach the server by a
/// device's sync and by an office write are each filed exactly once (the receiver holds
/// one Provenance per record, however many times a transaction came, and a transaction
/// replayed by the test creates nothing), a record filed by hand first is not sent, the
/// server records `filed_to_epr` itself, and it reaches the device at its next sync.
async fn records_are_filed_in_the_epr_once_and_the_filing_reaches_devices() {
    use common::fhir_receiver::{Receiver, Turn};
    use server::outbox::{Policy, Sender, Worker};
    use std::time::Duration;

    let server = Server::new();
    server.state.db.call(|conn| Ok(server::epr::set_filing(conn, true)?)).await.expect("filing on");
    let token = "the EPR's bearer token for this test";
    let receiver =
        Receiver::start(token, &[Turn::Fail, Turn::TakeThenFail, Turn::TakeThenStall], Duration::from_secs(3)).await;
    let filing = server::epr::Filing::new(&receiver.url, Some(server::Secret::from(token.to_owned())), &server.state)
        .expect("a filing")
        .with_timeout(Duration::from_millis(700));
    // Two messages claimed a pass: several transactions, so that each turn of the
    // receiver's falls on different records.
    let policy = Policy {
        base: Duration::from_secs(10),
        max: Duration::from_secs(60),
        max_attempts: 20,
        lease: Duration::from_secs(300),
        poll: Duration::from_millis(50),
        claim: 2,
    };
    let worker = Arc::new(Worker::new(
        server.state.db.clone(),
        server.state.clock.clone(),
        vec![Arc::new(filing) as Arc<dyn Sender>],
        policy,
    ));
    let pass = || {
        let worker = Arc::clone(&worker);
        async move { tokio::task::spawn_blocking(move || worker.pass()).await.expect("no panic").expect("a pass") }
    };

    // Records from a device's sync, and one from the office.
    let mut asha = server.device("asha", "phone-asha", 1).await;
    let first = asha.open(NORTH, server.now());
    let missed_at = asha.record(first, server.now() - SignedDuration::from_mins(30), missed());
    asha.record(first, server.now(), phoned());
    let second = asha.open(NORTH, server.now());
    asha.record(second, server.now(), phoned());
    server.sync(&mut asha).await;
    let (_, mia) = server.login("mia", "desk-mia").await;
    let mia = text(&mia["access_token"]);
    let (status, body) = server
        .post_json(
            &format!("/v1/episodes/{second}/events"),
            Some(&mia),
            Some(json!({"kind": "contact_attempt", "method": "phone", "target": "family_carer", "outcome": "contact_made"})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    // Filed by hand before the worker came to it: it is not sent.
    let (status, body) = server
        .post_json(
            &format!("/v1/episodes/{first}/events"),
            Some(&mia),
            Some(json!({"kind": "filed_to_epr", "records": [missed_at], "epr_ref": "EPR-BY-HAND"})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let owed = server.count("SELECT COUNT(*) FROM outbox WHERE kind = 'epr'").await;
    assert_eq!(owed, 4, "each record owed once; never a filing");

    let mut passes = 0;
    loop {
        passes += 1;
        assert!(passes < 60, "filing never finished");
        pass().await;
        if passes == 2 {
            // A record arriving while filing is under way is owed and filed too.
            server.advance(1);
            asha.record(second, server.now(), phoned());
            server.sync(&mut asha).await;
        }
        if passes > 2 && server.count("SELECT COUNT(*) FROM outbox WHERE state != 'sent'").await == 0 {
            break;
        }
        server.advance(61);
    }

    // Every record but the one filed by hand and the filings themselves, once each.
    let records = |id: EpisodeId| {
        let server = &server;
        let mia = mia.clone();
        async move {
            let (status, body) = server.get_json(&format!("/v1/episodes/{id}"), &mia).await;
            assert_eq!(status, StatusCode::OK, "{body}");
            body["events"].as_array().expect("events").clone()
        }
    };
    let mut expected = BTreeSet::new();
    let mut by_server: Vec<EventId> = Vec::new();
    for id in [first, second] {
        for event in records(id).await {
            let event_id: EventId = text(&event["id"]).parse().expect("an id");
            if event["kind"] == "filed_to_epr" {
                if event["by"] == server::audit::SERVER {
                    assert!(event["device"].as_str().is_some_and(|d| d.starts_with("server:")), "{event}");
                    assert!(event["epr_ref"].as_str().is_some_and(|r| !r.is_empty()), "{event}");
                    by_server.extend(
                        event["records"]
                            .as_array()
                            .expect("records")
                            .iter()
                            .map(|r| text(r).parse::<EventId>().expect("a record id")),
                    );
                }
            } else if event_id != missed_at {
                expected.insert(event_id);
            }
        }
    }
    assert_eq!(expected.len(), 4);
    let filed_once: BTreeSet<EventId> = by_server.iter().copied().collect();
    assert_eq!(by_server.len(), filed_once.len(), "no record in two of the server's filings");
    assert_eq!(filed_once, expected);

    let held_provenance = |receiver: &Receiver| -> Vec<EventId> {
        receiver
            .held()
            .resources
            .iter()
            .filter(|((kind, _), _)| kind == "Provenance")
            .map(|(_, resource)| {
                text(&resource["entity"][0]["what"]["identifier"]["value"]).parse().expect("a record id")
            })
            .collect()
    };
    let held = held_provenance(&receiver);
    assert_eq!(held.len(), expected.len(), "one Provenance a record: {held:?}");
    assert_eq!(held.iter().copied().collect::<BTreeSet<_>>(), expected);
    let (transactions, matched, resources) = {
        let held = receiver.held();
        assert_eq!(held.unauthorized, 0, "every transaction carried the token");
        (held.transactions.clone(), held.matched, held.resources.len())
    };
    assert!(transactions.len() >= 6, "the failed transactions were sent again: {}", transactions.len());
    assert!(matched > 0, "a transaction taken before was sent again and created nothing");

    // A transaction the receiver answered, sent again: nothing new.
    let (answered, _) = transactions.iter().find(|(_, turn)| *turn == Turn::Take).expect("one answered").clone();
    let (url, bearer) = (receiver.url.clone(), format!("Bearer {token}"));
    let status = tokio::task::spawn_blocking(move || {
        let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
        agent
            .post(&url)
            .header("Authorization", &bearer)
            .content_type("application/fhir+json")
            .send(answered.to_string())
            .expect("an answer")
            .status()
            .as_u16()
    })
    .await
    .expect("no panic");
    assert_eq!(status, 200);
    assert_eq!(receiver.held().resources.len(), resources, "a replay creates nothing");
    assert!(receiver.held().matched > matched);

    // Nothing left to file, on the server and, at its next sync, on the device.
    let (_, list) = server.get_json("/v1/episodes", &mia).await;
    for line in list.as_array().expect("a caseload") {
        assert_eq!(line["unfiled"], 0, "{line}");
    }
    let response = server.sync(&mut asha).await;
    for id in [first, second] {
        let filings: Vec<_> = asha
            .doc(id)
            .episode()
            .expect("an episode")
            .events
            .into_iter()
            .filter(|e| e.by == server::audit::SERVER && e.body.kind() == "filed_to_epr")
            .collect();
        assert!(!filings.is_empty(), "the server's filing reached the device");
        let evaluation = evaluation_of(&response, id);
        for action in evaluation["actions"].as_array().expect("actions") {
            if action["code"] == "file_to_epr" {
                assert!(action["state"] == "done", "{action}");
            }
        }
    }
    // Each send is in the audit log, as the server's own.
    assert_eq!(
        server.count("SELECT COUNT(*) FROM audit WHERE via = 'server' AND action = 'outbox_sent'").await,
        4 + 1,
        "the four filed and the one found filed by hand"
    );
}

common::backends!(
    a_new_episode_is_stored_and_then_the_cursor_says_nothing_new_in_a_few_bytes,
    a_record_made_on_one_device_reaches_another_by_whole_then_by_message,
    another_teams_episode_is_not_found_and_never_sent,
    refused_requests_name_the_episode_and_store_nothing,
    a_request_sent_twice_changes_nothing_twice,
    a_revoked_device_is_refused_everywhere,
    a_transferred_episode_is_handed_over_then_dropped_and_reaches_the_new_team,
    a_record_from_the_future_gets_a_clock_skew_warning,
    a_replayed_hand_over_is_answered_again,
    a_record_made_after_receiving_an_episode_whole_survives_a_transfer,
    a_large_caseload_comes_in_pages,
    an_unchanged_episodes_evaluation_follows_the_clock,
    a_new_record_not_made_here_by_someone_signed_in_here_is_refused_for_its_episode_alone,
    records_the_server_has_are_not_new_and_another_devices_new_ones_wait_for_it,
    an_episode_past_its_budget_reads_and_refuses_every_change_alone,
    receipt_times_cross_with_the_answer_once_for_each_device;
    multi_thread: concurrent_requests_commit_together_and_a_refused_one_stores_nothing_of_its_own,
    devices_writing_one_episode_at_once_lose_nothing,
    records_are_filed_in_the_epr_once_and_the_filing_reaches_devices
);
