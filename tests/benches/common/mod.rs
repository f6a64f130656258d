//! What the sync, load and peer benchmarks share: simulated devices that speak the sync
//! protocol directly (documents and sync states in memory, no store, no checks), so that
//! the load is the server's; the load teams; percentiles; a byte-counting TCP proxy.
//!
//! Each bench binary includes this module (`mod common;`) and uses only part of it.
#![allow(dead_code)]

use std::collections::{HashMap, HashSet};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use automerge::ActorId;
use automerge::sync::SyncDoc;
use episode::EpisodeId;
use episode::document::{EpisodeDoc, Opening};
use episode::sync::{Body, Document, MAX_DOCUMENTS_PER_REQUEST, PROTOCOL, Request, Response};
use episode::{Event, Pathway, PatientRef};
use jiff::Timestamp;
use serde_json::{Map, Value, json};
use server::accounts::{self, Password, Role, TeamId, Username};
use uuid::Uuid;

/// What one sync session cost on the wire.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Exchange {
    /// HTTP requests (each one round trip).
    pub(crate) round_trips: usize,
    /// Request and response bodies, HTTP headers not counted.
    pub(crate) bytes: usize,
}

impl std::ops::AddAssign for Exchange {
    fn add_assign(&mut self, other: Self) {
        self.round_trips += other.round_trips;
        self.bytes += other.bytes;
    }
}

/// A simulated device: its own episodes and its teammates', with their sync states, in
/// memory; the protocol spoken directly over HTTP.
pub(crate) struct Sim {
    agent: ureq::Agent,
    url: String,
    token: String,
    actor: ActorId,
    /// Who records, on which device: the sign-in's (the server refuses any other).
    username: String,
    device: String,
    /// The episodes this device opened, in the order it records on them.
    pub(crate) own: Vec<EpisodeId>,
    next: usize,
    docs: HashMap<EpisodeId, (EpisodeDoc, automerge::sync::State)>,
    /// Episodes whose latest changes from the server the server does not know we hold:
    /// said in the next session's first request, as the client core does.
    owed: HashSet<EpisodeId>,
    cursor: u64,
    /// Every request this device made: what its bodies held.
    pub(crate) log: Vec<Trip>,
}

/// One request and its answer, in body bytes.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Trip {
    pub(crate) request: usize,
    pub(crate) response: usize,
    /// Documents sent whole, and sync messages, in the request.
    pub(crate) sent_whole: usize,
    pub(crate) sent_messages: usize,
    /// The response's sync messages and whole documents.
    pub(crate) received_messages: usize,
    pub(crate) received_whole: usize,
    /// The response's evaluations.
    pub(crate) evaluations: usize,
}

impl Sim {
    /// Signs in as `username` on a new device, opens `episodes` episodes in `team` with
    /// `records` records each (offline), and syncs them whole.
    pub(crate) fn new(
        url: &str,
        username: &str,
        team: &str,
        n: usize,
        episodes: usize,
        records: usize,
    ) -> (Self, Exchange) {
        let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
        let device = Uuid::now_v7();
        let tokens: Value = agent
            .post(format!("{url}/v1/auth/login"))
            .send_json(json!({"username": username, "password": tests::PASSWORD, "device_id": device.to_string()}))
            .expect("sign in")
            .body_mut()
            .read_json()
            .expect("tokens");
        let token = tokens["access_token"].as_str().expect("an access token").to_string();
        let actor = ActorId::from(device.as_bytes().as_slice());
        let mut sim = Self {
            agent,
            url: url.to_string(),
            token,
            actor,
            username: username.to_string(),
            device: device.to_string(),
            own: Vec::new(),
            next: 0,
            docs: HashMap::new(),
            owed: HashSet::new(),
            cursor: 0,
            log: Vec::new(),
        };
        let mut whole = Vec::new();
        for e in 0..episodes {
            let id = EpisodeId::from_uuid(Uuid::now_v7());
            let opening = Opening {
                id,
                patient_ref: PatientRef::new(format!("RX-SIM-{n}-{e}")).expect("a reference"),
                team: team.to_string(),
                opened_at: Timestamp::now(),
                opened_by: username.to_string(),
                pathway: Pathway::RoutineReferral,
                facts: Vec::new(),
                plan: String::new(),
            };
            let mut doc = EpisodeDoc::open(&opening, sim.actor.clone()).expect("a document");
            for _ in 0..records {
                doc.record(&visit_event(username, &sim.device)).expect("record");
            }
            let bytes = doc.save();
            let mut state = automerge::sync::State::new();
            state.shared_heads = doc.heads();
            sim.docs.insert(id, (doc, state));
            sim.own.push(id);
            whole.push(Document { episode: id, body: Body::Whole(bytes) });
        }
        let mut exchange = Exchange::default();
        while !whole.is_empty() {
            let rest = whole.split_off(whole.len().min(MAX_DOCUMENTS_PER_REQUEST));
            exchange += sim.session(whole);
            whole = rest;
        }
        (sim, exchange)
    }

    /// Records a visit on the next of its own episodes and syncs.
    pub(crate) fn record_and_sync(&mut self) -> Exchange {
        let id = self.own[self.next % self.own.len()];
        self.next += 1;
        let event = visit_event(&self.username, &self.device);
        let (doc, _) = self.docs.get_mut(&id).expect("its own episode");
        doc.record(&event).expect("record");
        let mut opening: Vec<EpisodeId> = self.owed.iter().copied().filter(|&owed| owed != id).collect();
        opening.push(id);
        let documents = self.opening_messages(&opening);
        self.session(documents)
    }

    /// Syncs with nothing new of its own: says what it owes and learns what changed.
    pub(crate) fn settle(&mut self) -> Exchange {
        let owed: Vec<EpisodeId> = self.owed.iter().copied().collect();
        let documents = self.opening_messages(&owed);
        self.session(documents)
    }

    /// A session's first messages for `episodes`, each from its persisted state (shared
    /// heads), primed.
    fn opening_messages(&mut self, episodes: &[EpisodeId]) -> Vec<Document> {
        let mut documents = Vec::new();
        for id in episodes {
            let Some((doc, state)) = self.docs.get_mut(id) else { continue };
            *state = episode::sync::decode_state(Some(&state.encode()));
            episode::sync::prime(state);
            if let Some(message) = doc.generate_sync_message(state) {
                documents.push(Document { episode: *id, body: Body::Message(message) });
            }
        }
        documents
    }

    /// Sends `documents` and goes on until neither side has anything left to say.
    pub(crate) fn session(&mut self, mut documents: Vec<Document>) -> Exchange {
        let mut exchange = Exchange::default();
        loop {
            let body_len = |documents: &[Document], whole: bool| -> usize {
                documents
                    .iter()
                    .map(|d| match &d.body {
                        Body::Whole(b) if whole => b.len(),
                        Body::Message(b) if !whole => b.len(),
                        _ => 0,
                    })
                    .sum()
            };
            let mut trip = Trip {
                sent_whole: body_len(&documents, true),
                sent_messages: body_len(&documents, false),
                ..Trip::default()
            };
            // The server will have what this request says.
            for document in &documents {
                self.owed.remove(&document.episode);
            }
            let request = Request { protocol: PROTOCOL, cursor: self.cursor, device_time_ms: 0, documents }.encode();
            let mut answer = self
                .agent
                .post(format!("{}/v1/sync", self.url))
                .header("Authorization", format!("Bearer {}", self.token))
                .content_type(episode::sync::CONTENT_TYPE)
                .send(&request[..])
                .expect("a sync");
            assert_eq!(answer.status().as_u16(), 200, "a sync under load");
            let bytes = answer.body_mut().with_config().limit(1 << 30).read_to_vec().expect("the answer");
            exchange += Exchange { round_trips: 1, bytes: request.len() + bytes.len() };
            let response = Response::decode(&bytes).expect("a response");
            assert!(response.refused.is_empty(), "the server refused: {:?}", response.refused);
            trip.request = request.len();
            trip.response = bytes.len();
            trip.received_whole = body_len(&response.documents, true);
            trip.received_messages = body_len(&response.documents, false);
            trip.evaluations = response.actions.iter().map(|a| a.evaluation.len()).sum();
            self.log.push(trip);
            self.cursor = response.cursor;
            documents = Vec::new();
            for Document { episode, body } in response.documents {
                let replied = match body {
                    Body::Whole(bytes) => {
                        let doc = EpisodeDoc::load(&bytes, ActorId::random()).expect("a document");
                        self.docs.insert(episode, (doc, automerge::sync::State::new()));
                        true
                    }
                    Body::Message(bytes) => match self.docs.get_mut(&episode) {
                        Some((doc, state)) => {
                            let message = automerge::sync::Message::decode(&bytes).expect("a message");
                            let changes = !message.changes.is_empty();
                            doc.automerge().sync().receive_sync_message(state, message).expect("applied");
                            // Nothing to say but that it holds them: said next session.
                            if changes && episode::sync::in_step(doc, state) {
                                self.owed.insert(episode);
                                false
                            } else {
                                true
                            }
                        }
                        None => false,
                    },
                };
                if replied
                    && let Some((doc, state)) = self.docs.get_mut(&episode)
                    && let Some(message) = doc.generate_sync_message(state)
                {
                    documents.push(Document { episode, body: Body::Message(message) });
                }
            }
            if documents.is_empty() && !response.more {
                return exchange;
            }
        }
    }
}

/// A home visit with no answer, now, by `by` on `device`, as the simulated devices record
/// it.
pub(crate) fn visit_event(by: &str, device: &str) -> Event {
    let event = fields(json!({
        "id": Uuid::now_v7().to_string(), "kind": "home_visit", "at": Timestamp::now().to_string(),
        "by": by, "device": device, "announced": false, "outcome": "no_answer"
    }));
    Event::from_value(&Value::Object(event), 0).expect("an event")
}

pub(crate) fn fields(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        _ => Map::new(),
    }
}

/// The load team `n` and its practitioner (a device per practitioner's phone, several
/// phones a user): `load-000` and `load-user-000`.
pub(crate) fn load_team(n: usize) -> (String, String) {
    (format!("load-{n:03}"), format!("load-user-{n:03}"))
}

/// Adds `teams` load teams, each with its practitioner, to the database at `db`.
pub(crate) fn add_load_teams(db: &Path, teams: usize) {
    let hash = server::auth::password::hash(&Password::new(tests::PASSWORD.into()).expect("a password")).expect("hash");
    tests::in_transaction(db, |tx| {
        for n in 0..teams {
            let (team, user) = load_team(n);
            let team: TeamId = team.parse().expect("a team id");
            accounts::add_team(tx, &team, "Load", Timestamp::now()).expect("a team");
            let user: Username = user.parse().expect("a username");
            accounts::add_user(tx, &user, &hash, Role::Practitioner, &[team], Timestamp::now()).expect("a user");
        }
    });
}

/// The `q` quantile of sorted durations, in milliseconds.
pub(crate) fn quantile_ms(sorted: &[Duration], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let at = ((sorted.len() as f64 * q) as usize).min(sorted.len() - 1);
    sorted[at].as_secs_f64() * 1000.0
}

/// A TCP proxy on a free loopback port that forwards every connection to `target` and
/// counts the bytes each way (everything on the wire above TCP: HTTP headers included).
pub(crate) struct CountingProxy {
    pub(crate) addr: SocketAddr,
    /// Client to server.
    pub(crate) up: Arc<AtomicU64>,
    /// Server to client.
    pub(crate) down: Arc<AtomicU64>,
    /// Connections accepted.
    pub(crate) connections: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
}

impl CountingProxy {
    pub(crate) fn start(target: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("a free port");
        let addr = listener.local_addr().expect("an address");
        let (up, down) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let connections = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (up2, down2, connections2, stop2) = (up.clone(), down.clone(), connections.clone(), stop.clone());
        std::thread::spawn(move || {
            for client in listener.incoming() {
                if stop2.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(client) = client else { continue };
                let Ok(server) = TcpStream::connect(target) else { continue };
                connections2.fetch_add(1, Ordering::SeqCst);
                let _ = client.set_nodelay(true);
                let _ = server.set_nodelay(true);
                pipe(&client, &server, up2.clone());
                pipe(&server, &client, down2.clone());
            }
        });
        Self { addr, up, down, connections, stop }
    }

    /// Bytes up and down since the last reset, and connections opened.
    pub(crate) fn take(&self) -> (u64, u64, u64) {
        (
            self.up.swap(0, Ordering::SeqCst),
            self.down.swap(0, Ordering::SeqCst),
            self.connections.swap(0, Ordering::SeqCst),
        )
    }
}

impl Drop for CountingProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wakes the accept loop so that it sees the flag.
        let _ = TcpStream::connect(self.addr);
    }
}

fn pipe(from: &TcpStream, to: &TcpStream, counter: Arc<AtomicU64>) {
    let (mut from, mut to) = (from.try_clone().expect("a stream"), to.try_clone().expect("a stream"));
    std::thread::spawn(move || {
        let mut buffer = vec![0u8; 64 * 1024];
        loop {
            match from.read(&mut buffer) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    counter.fetch_add(n as u64, Ordering::SeqCst);
                    if to.write_all(&buffer[..n]).is_err() {
                        break;
                    }
                }
            }
        }
        let _ = to.shutdown(std::net::Shutdown::Write);
    });
}

/// `VmRSS` and `VmHWM` of process `pid`, in KiB.
pub(crate) fn memory_kib(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// The sizes of the database file and of its WAL, in bytes.
pub(crate) fn db_bytes(db: &Path) -> (u64, u64) {
    let size = |p: &Path| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
    let mut wal = db.as_os_str().to_owned();
    wal.push("-wal");
    (size(db), size(Path::new(&wal)))
}
