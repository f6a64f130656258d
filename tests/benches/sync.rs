//! The sync benchmark (`cargo bench -p tests --bench sync`): a real server in a child
//! process on loopback, real devices (encrypted stores, the blocking HTTP transport).
//!
//! Prints:
//! 1. an up-to-date device with 200 episodes: round trips and body bytes of one sync
//!    (goal: one round trip, under 2 KB);
//! 2. one new event: body bytes of its sync against the size of its Automerge change
//!    (goal: within 2x plus a fixed 300 bytes);
//! 3. the server under load from 200 devices, each recording and syncing in turn: syncs
//!    per second and p50/p99 latency (goal: at least 500 syncs/s, p99 under 50 ms).
//!
//! Sizes are HTTP bodies; each request also carries about 250 bytes of HTTP headers
//! (the bearer token is most of them), not counted here.
//!
//! `TETHER_BENCH_DEVICES` and `TETHER_BENCH_SECS` change the load's size and length.

use std::time::{Duration, Instant};

use automerge::ActorId;
use automerge::sync::SyncDoc;
use client_core::NewEpisode;
use episode::document::{EpisodeDoc, Opening};
use episode::sync::{Body, Document, PROTOCOL, Request, Response};
use episode::{Event, FactField, FactValue, Pathway, PatientRef};
use jiff::Timestamp;
use serde_json::{Map, Value, json};
use server::accounts::{self, Password, Role, TeamId, Username};
use tests::{Device, Server, User, create_accounts};

fn main() {
    if std::env::var_os("TETHER_E2E_DB").is_some() {
        tests::server_child();
        return;
    }
    // `cargo bench` passes `--bench`; nothing else to parse.
    let devices: usize = std::env::var("TETHER_BENCH_DEVICES").ok().and_then(|v| v.parse().ok()).unwrap_or(200);
    let secs: u64 = std::env::var("TETHER_BENCH_SECS").ok().and_then(|v| v.parse().ok()).unwrap_or(10);
    let dir = tempfile::tempdir().expect("a directory");
    let db = dir.path().join("tether.db");
    let users: Vec<User> = vec![
        User { username: "alice", role: Role::Practitioner, teams: &["north"] },
        User { username: "bob", role: Role::Practitioner, teams: &["south"] },
    ];
    create_accounts(&db, &users);
    add_load_teams(&db);
    let server = Server::start(&db);

    up_to_date(&server);
    one_event(&server);
    load_simulated(&server, devices, Duration::from_secs(secs));
    load(&server, devices.min(40), Duration::from_secs(secs));
}

/// A simulated device: its documents and sync states in memory, the protocol spoken
/// directly (no store, no checks), so that the load is the server's.
struct Sim {
    agent: ureq::Agent,
    url: String,
    token: String,
    own: uuid::Uuid,
    docs: std::collections::HashMap<uuid::Uuid, (EpisodeDoc, automerge::sync::State)>,
    cursor: u64,
}

impl Sim {
    fn new(server: &Server, n: usize) -> Self {
        let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
        let team = n % LOAD_TEAMS;
        let device = uuid::Uuid::now_v7();
        let tokens: Value = agent
            .post(format!("{}/v1/auth/login", server.url()))
            .send_json(json!({"username": format!("load-user-{team:02}"), "password": tests::PASSWORD, "device_id": device.to_string()}))
            .expect("sign in")
            .body_mut()
            .read_json()
            .expect("tokens");
        let token = tokens["access_token"].as_str().expect("an access token").to_string();
        let own = uuid::Uuid::now_v7();
        let opening = Opening {
            id: own,
            patient_ref: PatientRef::new(format!("RX-SIM-{n}")).expect("a reference"),
            team: format!("load-{team:02}"),
            opened_at: Timestamp::now(),
            opened_by: "load".into(),
            pathway: Pathway::RoutineReferral,
            facts: Vec::new(),
            plan: String::new(),
        };
        let actor = ActorId::from(device.as_bytes().as_slice());
        let doc = EpisodeDoc::open(&opening, actor).expect("a document");
        let mut sim = Self { agent, url: server.url(), token, own, docs: Default::default(), cursor: 0 };
        let whole = Document { episode: own, body: Body::Whole(sim.docs_insert(doc)) };
        sim.session(vec![whole]);
        sim
    }

    fn docs_insert(&mut self, mut doc: EpisodeDoc) -> Vec<u8> {
        let bytes = doc.save();
        let mut state = automerge::sync::State::new();
        state.shared_heads = doc.heads();
        self.docs.insert(self.own, (doc, state));
        bytes
    }

    /// Records a visit on its own episode and syncs; returns the round trips.
    fn record_and_sync(&mut self) -> usize {
        let (doc, state) = self.docs.get_mut(&self.own).expect("its own episode");
        let event = visit_event();
        doc.record(&event).expect("record");
        // Each session starts from the persisted state (shared heads), primed.
        *state = episode::sync::decode_state(Some(&state.encode()));
        episode::sync::prime(state);
        let message = doc.generate_sync_message(state).expect("a message");
        self.session(vec![Document { episode: self.own, body: Body::Message(message) }])
    }

    fn session(&mut self, mut documents: Vec<Document>) -> usize {
        let mut round_trips = 0;
        loop {
            let request = Request { protocol: PROTOCOL, cursor: self.cursor, device_time_ms: 0, documents };
            let mut answer = self
                .agent
                .post(format!("{}/v1/sync", self.url))
                .header("Authorization", format!("Bearer {}", self.token))
                .content_type(episode::sync::CONTENT_TYPE)
                .send(&request.encode()[..])
                .expect("a sync");
            assert_eq!(answer.status().as_u16(), 200, "a sync under load");
            let bytes = answer.body_mut().with_config().limit(1 << 30).read_to_vec().expect("the answer");
            let response = Response::decode(&bytes).expect("a response");
            round_trips += 1;
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
                            doc.automerge().sync().receive_sync_message(state, message).expect("applied");
                            true
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
                return round_trips;
            }
        }
    }
}

fn visit_event() -> Event {
    let event = fields(json!({
        "id": uuid::Uuid::now_v7().to_string(), "kind": "home_visit", "at": Timestamp::now().to_string(),
        "by": "load", "device": uuid::Uuid::now_v7().to_string(), "announced": false, "outcome": "no_answer"
    }));
    Event::from_value(&Value::Object(event), 0).expect("an event")
}

fn load_simulated(server: &Server, devices: usize, length: Duration) {
    let mut fleet: Vec<Sim> = (0..devices).map(|n| Sim::new(server, n)).collect();
    // Settle: everyone learns of their teammates' episodes once.
    for sim in &mut fleet {
        sim.session(Vec::new());
    }
    let threads = 8.min(devices.max(1));
    let chunk = devices.div_ceil(threads);
    let started = Instant::now();
    let results: Vec<(Duration, usize)> = std::thread::scope(|scope| {
        let workers: Vec<_> = fleet
            .chunks_mut(chunk)
            .map(|part| {
                scope.spawn(move || {
                    let mut results = Vec::new();
                    while started.elapsed() < length {
                        for sim in part.iter_mut() {
                            let t = Instant::now();
                            let round_trips = sim.record_and_sync();
                            results.push((t.elapsed(), round_trips));
                        }
                    }
                    results
                })
            })
            .collect();
        workers.into_iter().flat_map(|w| w.join().expect("a worker")).collect()
    });
    let elapsed = started.elapsed();
    let requests: usize = results.iter().map(|r| r.1).sum();
    let mut latencies: Vec<Duration> = results.iter().map(|r| r.0).collect();
    latencies.sort();
    let at = |q: f64| latencies[((latencies.len() as f64 * q) as usize).min(latencies.len() - 1)];
    println!(
        "load, simulated devices: {devices} devices in {LOAD_TEAMS} teams on {threads} client threads, each \
         recording one event and syncing in turn, {:.1} s: {} syncs ({requests} requests), {:.0} syncs/s, \
         p50 {:.1} ms, p99 {:.1} ms per sync",
        elapsed.as_secs_f64(),
        latencies.len(),
        latencies.len() as f64 / elapsed.as_secs_f64(),
        at(0.50).as_secs_f64() * 1000.0,
        at(0.99).as_secs_f64() * 1000.0,
    );
}

/// Teams of ten under load: `load-00` … `load-19`, each with its practitioner
/// `load-user-NN` (a device per practitioner's phone, several phones a user).
const LOAD_TEAMS: usize = 20;

fn add_load_teams(db: &std::path::Path) {
    let mut conn = server::db::open(db).expect("the database");
    let tx = conn.transaction().expect("a transaction");
    let hash = server::auth::password::hash(&Password::new(tests::PASSWORD.into()).expect("a password")).expect("hash");
    for n in 0..LOAD_TEAMS {
        let team: TeamId = format!("load-{n:02}").parse().expect("a team id");
        accounts::add_team(&tx, &team, "Load", Timestamp::now()).expect("a team");
        let user: Username = format!("load-user-{n:02}").parse().expect("a username");
        accounts::add_user(&tx, &user, &hash, Role::Practitioner, &[team], Timestamp::now()).expect("a user");
    }
    tx.commit().expect("commit");
}

fn fields(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        _ => Map::new(),
    }
}

fn visit() -> Map<String, Value> {
    fields(json!({"announced": false, "outcome": "no_answer"}))
}

fn open(device: &mut Device, n: usize) -> episode::EpisodeId {
    open_in(device, n, "south")
}

fn open_in(device: &mut Device, n: usize, team: &str) -> episode::EpisodeId {
    let new = NewEpisode {
        patient_ref: PatientRef::new(format!("RX-BENCH-{n}")).expect("a reference"),
        pathway: Pathway::RoutineReferral,
        team: team.into(),
        facts: vec![(FactField::Children, FactValue::Flag(false))],
        plan: String::new(),
    };
    device.core.open_episode(new, "bob", Timestamp::now()).expect("open")
}

fn up_to_date(server: &Server) {
    let mut device = Device::new(server, "bob");
    for n in 0..200 {
        let id = open(&mut device, n);
        for _ in 0..5 {
            device.core.record(id, "home_visit", Timestamp::now(), visit(), "bob").expect("record");
        }
    }
    let first = device.sync().expect("the first sync");
    let again = device.sync().expect("an up-to-date sync");
    println!(
        "up-to-date device, 200 episodes: {} round trip(s), {} bytes sent + {} bytes received = {} bytes \
         (the first sync of the 200: {} round trips, {} bytes)",
        again.round_trips,
        again.bytes_sent,
        again.bytes_received,
        again.bytes_sent + again.bytes_received,
        first.round_trips,
        first.bytes_sent + first.bytes_received,
    );
}

fn one_event(server: &Server) {
    let mut device = Device::new(server, "bob");
    let id = open(&mut device, 1000);
    device.core.record(id, "home_visit", Timestamp::now(), visit(), "bob").expect("record");
    device.sync().expect("sync");
    device.sync().expect("sync again");
    device.core.record(id, "home_visit", Timestamp::now(), visit(), "bob").expect("record");
    let summary = device.sync().expect("sync the new event");

    // The same record's Automerge change, on a document of its own.
    let opening = Opening {
        id: uuid::Uuid::now_v7(),
        patient_ref: PatientRef::new("RX-BENCH-CHANGE").expect("a reference"),
        team: "south".into(),
        opened_at: Timestamp::now(),
        opened_by: "bob".into(),
        pathway: Pathway::RoutineReferral,
        facts: Vec::new(),
        plan: String::new(),
    };
    let mut doc = EpisodeDoc::open(&opening, ActorId::random()).expect("a document");
    doc.save();
    let mut event = fields(json!({
        "id": uuid::Uuid::now_v7().to_string(), "kind": "home_visit", "at": Timestamp::now().to_string(),
        "by": "bob", "device": uuid::Uuid::now_v7().to_string(), "announced": false, "outcome": "no_answer"
    }));
    event.retain(|_, v| !v.is_null());
    let event = Event::from_value(&Value::Object(event), 0).expect("an event");
    doc.record(&event).expect("record");
    let change = doc.save_incremental().len();
    let wire = summary.bytes_sent + summary.bytes_received;
    println!(
        "one new event: {} round trip(s), {} bytes sent + {} bytes received = {wire} bytes; its Automerge change is \
         {change} bytes; goal 2 x {change} + 300 = {} bytes",
        summary.round_trips,
        summary.bytes_sent,
        summary.bytes_received,
        2 * change + 300,
    );
}

fn load(server: &Server, devices: usize, length: Duration) {
    // Each device has one episode of its own, synced, before the clock starts.
    let mut fleet: Vec<(Device, episode::EpisodeId)> = (0..devices)
        .map(|n| {
            let team = n % LOAD_TEAMS;
            let mut device = Device::new(server, &format!("load-user-{team:02}"));
            let id = open_in(&mut device, 10_000 + n, &format!("load-{team:02}"));
            device.sync().expect("the first sync");
            (device, id)
        })
        .collect();
    // Settle: everyone learns of everyone else's episodes once.
    for (device, _) in &mut fleet {
        device.sync().expect("settle");
    }
    let threads = 8.min(devices.max(1));
    let chunk = devices.div_ceil(threads);
    let started = Instant::now();
    let mut latencies: Vec<Duration> = std::thread::scope(|scope| {
        let workers: Vec<_> = fleet
            .chunks_mut(chunk)
            .map(|part| {
                scope.spawn(move || {
                    let mut latencies = Vec::new();
                    while started.elapsed() < length {
                        for (device, id) in part.iter_mut() {
                            device.core.record(*id, "home_visit", Timestamp::now(), visit(), "bob").expect("record");
                            let t = Instant::now();
                            device.sync().expect("sync under load");
                            latencies.push(t.elapsed());
                        }
                    }
                    latencies
                })
            })
            .collect();
        workers.into_iter().flat_map(|w| w.join().expect("a worker")).collect()
    });
    let elapsed = started.elapsed();
    latencies.sort();
    let at = |q: f64| latencies[((latencies.len() as f64 * q) as usize).min(latencies.len() - 1)];
    println!(
        "load, real devices (encrypted stores, checked merges): {devices} devices in {LOAD_TEAMS} teams on {threads} client threads, each recording one event and \
         syncing in turn, \
         {:.1} s: {} syncs, {:.0} syncs/s, p50 {:.1} ms, p99 {:.1} ms (client and server share this machine's cores)",
        elapsed.as_secs_f64(),
        latencies.len(),
        latencies.len() as f64 / elapsed.as_secs_f64(),
        at(0.50).as_secs_f64() * 1000.0,
        at(0.99).as_secs_f64() * 1000.0,
    );
}
