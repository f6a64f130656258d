//! Tether's side of the side-by-side with automerge-repo (`bench/peer/run.sh` runs both;
//! BENCHMARKS.md has the figures): a caseload of episodes with small records, recorded
//! offline on a real device (encrypted store, the blocking HTTP transport), synced to a
//! real server in a child process, then synced again with nothing new.
//!
//! Bytes on the wire are counted by a TCP proxy in front of the server (HTTP request and
//! response, headers included; sign-in not counted); round trips are HTTP requests; time
//! is the device's whole sync, applying the answer included.
//!
//! Writes `caseload.json` (every episode's opening and records, exactly as stored, for
//! the automerge-repo side to build the same documents) and `tether.json` (the figures)
//! into `TETHER_PEER_OUT` (default: a new temporary directory, printed).
//! `TETHER_PEER_EPISODES=200` and `TETHER_PEER_RECORDS=10` change the caseload.

mod common;

use std::path::PathBuf;
use std::time::Instant;

use client_core::http::Http;
use client_core::{Core, NewEpisode, StoreKey, SyncSummary};
use common::{CountingProxy, Sim, fields};
use episode::pathway::{self, Calendar};
use episode::sync::Authoritative;
use episode::{Pathway, PatientRef};
use jiff::Timestamp;
use serde_json::{Value, json};
use server::accounts::Role;
use tests::{Server, User, create_accounts};

fn main() {
    let number = |name: &str, default: usize| -> usize {
        std::env::var(name).ok().and_then(|v| v.trim().parse().ok()).unwrap_or(default)
    };
    let episodes = number("TETHER_PEER_EPISODES", 200);
    let records = number("TETHER_PEER_RECORDS", 10);
    let scratch = tempfile::tempdir().expect("a directory");
    let out = std::env::var_os("TETHER_PEER_OUT").map(PathBuf::from).unwrap_or_else(|| scratch.path().to_path_buf());
    std::fs::create_dir_all(&out).expect("the output directory");

    let db = scratch.path().join("tether.db");
    create_accounts(
        &db,
        &[
            User { username: "alice", role: Role::Practitioner, teams: &["north"] },
            User { username: "bob", role: Role::Practitioner, teams: &["south"] },
        ],
    );
    let server = Server::start(&db);
    let proxy = CountingProxy::start(server.addr);

    let store = tempfile::tempdir().expect("a store directory");
    let key = StoreKey::generate().expect("a key");
    let mut core = Core::open(store.path(), &key).expect("open the store");
    let http = Http::new(&format!("http://{}", proxy.addr));
    http.login(&mut core, "alice", tests::PASSWORD, Timestamp::now()).expect("sign in");

    // The caseload, recorded offline.
    let mut caseload = Vec::new();
    for n in 0..episodes {
        let opened_at = Timestamp::now();
        let new = NewEpisode {
            patient_ref: PatientRef::new(format!("RX-PEER-{n:04}")).expect("a reference"),
            pathway: Pathway::RoutineReferral,
            team: "north".into(),
            facts: Vec::new(),
            plan: String::new(),
        };
        let id = core.open_episode(new, opened_at).expect("open");
        for r in 0..records {
            let (kind, body) = if r % 2 == 0 {
                ("contact_attempt", json!({"method": "phone", "target": "patient", "outcome": "no_answer"}))
            } else {
                ("home_visit", json!({"announced": false, "outcome": "no_answer"}))
            };
            core.record(id, kind, fields(body), Timestamp::now()).expect("record");
        }
        let events: Vec<Value> = core
            .timeline(id)
            .expect("its records")
            .iter()
            .map(|e| serde_json::to_value(e).expect("a record as JSON"))
            .collect();
        caseload.push(json!({
            "id": id.to_string(), "patient_ref": format!("RX-PEER-{n:04}"), "team": "north",
            "opened_at": opened_at.to_string(), "opened_by": "alice", "pathway": "routine_referral",
            "events": events,
        }));
    }
    let caseload_path = out.join("caseload.json");
    std::fs::write(&caseload_path, serde_json::to_vec(&caseload).expect("JSON")).expect("write the caseload");

    proxy.take();
    let first = measure(&proxy, || http.sync(&mut core, Timestamp::now).expect("the first sync"));
    // What the first answer spends on the server's evaluations (which automerge-repo has
    // no counterpart of): each episode's, as the server sends it.
    let now = Timestamp::now();
    let calendar = Calendar::england_and_wales();
    let evaluations: usize = core
        .episodes(now)
        .iter()
        .map(|summary| {
            let episode = core.episode(summary.id).expect("an episode");
            Authoritative::new(summary.id, &pathway::evaluate(episode, now, &calendar)).evaluation.len()
        })
        .sum();
    let again = measure(&proxy, || http.sync(&mut core, Timestamp::now).expect("an up-to-date sync"));
    assert_eq!(first.summary.sent, episodes, "every episode sent");
    assert_eq!(again.summary.sent + again.summary.received, 0, "nothing new");

    let figures = json!({
        "episodes": episodes, "records": records,
        "first": first.json(), "resync": again.json(), "evaluation_bytes": evaluations,
    });
    std::fs::write(out.join("tether.json"), serde_json::to_vec_pretty(&figures).expect("JSON")).expect("write");
    for (what, m) in [("first sync", &first), ("up-to-date resync", &again)] {
        println!(
            "tether, {what}: {episodes} episodes x {records} records: {} bytes on the wire ({} up, {} down; bodies {}), \
             {} round trip(s), {} new connection(s) (kept alive from sign-in), {:.1} ms",
            m.up + m.down,
            m.up,
            m.down,
            m.summary.bytes_sent + m.summary.bytes_received,
            m.summary.round_trips,
            m.connections,
            m.ms,
        );
    }
    println!(
        "of the first sync's answer, the server's evaluations of the {episodes} episodes (deflated JSON) are \
         {evaluations} bytes"
    );
    breakdown(&server, episodes, records);
    println!("wrote {} and tether.json", caseload_path.display());
}

struct Measured {
    summary: SyncSummary,
    up: u64,
    down: u64,
    connections: u64,
    ms: f64,
}

impl Measured {
    fn json(&self) -> Value {
        json!({
            "wire_bytes": self.up + self.down, "up": self.up, "down": self.down,
            "body_bytes": self.summary.bytes_sent + self.summary.bytes_received,
            "round_trips": self.summary.round_trips, "connections": self.connections, "ms": self.ms,
        })
    }
}

fn measure(proxy: &CountingProxy, sync: impl FnOnce() -> SyncSummary) -> Measured {
    let t = Instant::now();
    let summary = sync();
    let ms = t.elapsed().as_secs_f64() * 1000.0;
    // The proxy counts each chunk before forwarding it: all is counted once it is read.
    let (up, down, connections) = proxy.take();
    Measured { summary, up, down, connections, ms }
}

/// Where the first sync's bytes go, request by request: the same caseload's shape synced
/// by a simulated device (documents in memory, the protocol spoken directly; in the
/// other team, so that it starts with nothing), bodies only.
fn breakdown(server: &Server, episodes: usize, records: usize) {
    let (sim, _) = Sim::new(&server.url(), "bob", "south", 1, episodes, records);
    for (n, trip) in sim.log.iter().enumerate() {
        println!(
            "  simulated first sync, request {}: {} bytes up (whole documents {}, sync messages {}), {} bytes down \
             (sync messages {}, whole documents {}, evaluations {}, the rest {})",
            n + 1,
            trip.request,
            trip.sent_whole,
            trip.sent_messages,
            trip.response,
            trip.received_messages,
            trip.received_whole,
            trip.evaluations,
            trip.response - trip.received_messages - trip.received_whole - trip.evaluations,
        );
    }
}
