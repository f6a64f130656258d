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
//! `TETHER_BENCH_DEVICES` and `TETHER_BENCH_SECS` change the load's size and length;
//! `TETHER_BENCH_DB`, a `postgres://` URL of an empty database, runs it on PostgreSQL.

mod common;

use std::time::{Duration, Instant};

use automerge::ActorId;
use client_core::NewEpisode;
use common::{Sim, add_load_teams, fields, load_team};
use episode::document::{EpisodeDoc, Opening};
use episode::{Event, FactField, FactValue, Pathway, PatientRef};
use jiff::Timestamp;
use serde_json::{Map, Value, json};
use server::accounts::Role;
use tests::{Device, Server, User, create_accounts};

/// Teams of ten under load: `load-000` … `load-019`, each with its practitioner.
const LOAD_TEAMS: usize = 20;

fn main() {
    // `cargo bench` passes `--bench`; nothing else to parse.
    let devices: usize = std::env::var("TETHER_BENCH_DEVICES").ok().and_then(|v| v.parse().ok()).unwrap_or(200);
    let secs: u64 = std::env::var("TETHER_BENCH_SECS").ok().and_then(|v| v.parse().ok()).unwrap_or(10);
    let dir = tempfile::tempdir().expect("a directory");
    let db = std::env::var("TETHER_BENCH_DB").map_or_else(|_| dir.path().join("tether.db"), std::path::PathBuf::from);
    let users: Vec<User> = vec![
        User { username: "alice", role: Role::Practitioner, teams: &["north"] },
        User { username: "bob", role: Role::Practitioner, teams: &["south"] },
    ];
    create_accounts(&db, &users);
    add_load_teams(&db, LOAD_TEAMS);
    let server = Server::start(&db);

    up_to_date(&server);
    one_event(&server);
    load_simulated(&server, devices, Duration::from_secs(secs));
    load(&server, devices.min(40), Duration::from_secs(secs));
}

fn load_simulated(server: &Server, devices: usize, length: Duration) {
    let mut fleet: Vec<Sim> = (0..devices)
        .map(|n| {
            let (team, user) = load_team(n % LOAD_TEAMS);
            Sim::new(&server.url(), &user, &team, n, 1, 0).0
        })
        .collect();
    // Settle: everyone learns of their teammates' episodes once.
    for sim in &mut fleet {
        sim.settle();
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
                            let round_trips = sim.record_and_sync().round_trips;
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
    device.core.open_episode(new, Timestamp::now()).expect("open")
}

fn up_to_date(server: &Server) {
    let mut device = Device::new(server, "bob");
    for n in 0..200 {
        let id = open(&mut device, n);
        for _ in 0..5 {
            device.core.record(id, "home_visit", visit(), Timestamp::now()).expect("record");
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
    device.core.record(id, "home_visit", visit(), Timestamp::now()).expect("record");
    device.sync().expect("sync");
    device.sync().expect("sync again");
    device.core.record(id, "home_visit", visit(), Timestamp::now()).expect("record");
    let summary = device.sync().expect("sync the new event");

    // The same record's Automerge change, on a document of its own.
    let opening = Opening {
        id: uuid::Uuid::now_v7().into(),
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
            let (team, user) = load_team(n % LOAD_TEAMS);
            let mut device = Device::new(server, &user);
            let id = open_in(&mut device, 10_000 + n, &team);
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
                            device.core.record(*id, "home_visit", visit(), Timestamp::now()).expect("record");
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
