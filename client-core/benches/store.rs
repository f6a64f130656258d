//! The phone's store, measured: recording one event durably (p50, p99), opening a store
//! of 500 episodes of 50 records, the caseload's next actions over them, and the size
//! on disk per record. Prints figures; run with `cargo bench -p client-core --bench store`.

use std::time::{Duration, Instant};

use automerge::ActorId;
use client_core::{Core, NewEpisode, StoreKey};
use episode::document::{EpisodeDoc, Opening};
use episode::{Event, FactField, FactValue, Pathway, PatientRef};
use jiff::{SignedDuration, Timestamp};
use serde_json::{Map, Value, json};

const EPISODES: usize = 500;
const RECORDS: usize = 50;

fn main() {
    let key = StoreKey::from_bytes([9; 32]);
    let base: Timestamp = "2026-03-02T08:00:00Z".parse().expect("a time");

    // Recording one event durably: each call commits (and syncs) before it returns.
    let dir = tempfile::tempdir().expect("a temporary directory");
    let mut core = Core::open(dir.path(), &key).expect("a store");
    core.set_offline_user("u-bench").expect("who records");
    let episode = core.open_episode(new_episode(0), base).expect("an episode");
    let mut times = Vec::new();
    for n in 0..500 {
        let body = fields(json!({"method": "phone", "target": "patient", "outcome": "no_answer"}));
        let started = Instant::now();
        core.record(episode, "contact_attempt", body, at(base, n)).expect("a record");
        times.push(started.elapsed());
    }
    times.sort();
    println!(
        "record one event durably: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms ({} records)",
        ms(times[times.len() / 2]),
        ms(times[times.len() * 99 / 100]),
        ms(times[times.len() - 1]),
        times.len()
    );
    drop(core);

    // A caseload of 500 episodes of 50 records, made as documents on another device
    // and taken into the store (how a synced caseload arrives).
    let dir = tempfile::tempdir().expect("a temporary directory");
    {
        let mut core = Core::open(dir.path(), &key).expect("a store");
        for e in 0..EPISODES {
            let mut doc = EpisodeDoc::open(&opening(e, base), ActorId::from(vec![7u8; 16])).expect("a document");
            for r in 0..RECORDS {
                doc.record(&record(e, r, base)).expect("a record");
            }
            core.merge_episode(&doc.save()).expect("merged");
        }
    }
    let mut opens = Vec::new();
    let mut core = None;
    for _ in 0..5 {
        let started = Instant::now();
        core = Some(Core::open(dir.path(), &key).expect("the store opens"));
        opens.push(started.elapsed());
    }
    opens.sort();
    let core = core.expect("opened");
    println!(
        "open a store of {EPISODES} episodes x {RECORDS} records: median {:.1} ms (5 runs, min {:.1} ms)",
        ms(opens[2]),
        ms(opens[0])
    );

    let now = at(base, 60 * 24 * 10);
    let mut nexts = Vec::new();
    let mut count = 0;
    for _ in 0..10 {
        let started = Instant::now();
        count = std::hint::black_box(core.next_actions(now)).len();
        nexts.push(started.elapsed());
    }
    nexts.sort();
    println!(
        "the caseload's next actions over {EPISODES} episodes: median {:.1} ms ({count} actions, 10 runs)",
        ms(nexts[5])
    );

    let size = core.store_size().expect("a size");
    let wal =
        std::fs::metadata(dir.path().join(format!("{}-wal", client_core::STORE_FILE))).map(|m| m.len()).unwrap_or(0);
    println!(
        "store size: {} bytes in the database (+{} in the WAL) for {} records: {:.0} bytes a record",
        size,
        wal,
        EPISODES * RECORDS,
        size as f64 / (EPISODES * RECORDS) as f64
    );
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn at(base: Timestamp, minutes: i64) -> Timestamp {
    base.checked_add(SignedDuration::from_mins(minutes)).expect("in range")
}

fn fields(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        _ => Map::new(),
    }
}

fn new_episode(n: usize) -> NewEpisode {
    NewEpisode {
        patient_ref: PatientRef::new(format!("RX-BENCH-{n}")).expect("a reference"),
        pathway: Pathway::InService,
        team: "north".into(),
        facts: vec![(FactField::Risk, FactValue::Risk(episode::Risk::High))],
        plan: String::new(),
    }
}

fn opening(n: usize, base: Timestamp) -> Opening {
    let pathway = [
        Pathway::UrgentReferral,
        Pathway::RoutineReferral,
        Pathway::InService,
        Pathway::HomeTreatment,
        Pathway::ChildNotBrought,
    ][n % 5];
    Opening {
        id: uuid::Uuid::from_u128(0x0195_0000_0000_7000_8000_0000_0000_0000 + n as u128).into(),
        patient_ref: PatientRef::new(format!("RX-BENCH-{n}")).expect("a reference"),
        team: "north".into(),
        opened_at: base,
        opened_by: "u-bench".into(),
        pathway,
        facts: vec![],
        plan: "Visit weekly; sister is the named contact.".into(),
    }
}

/// A realistic mix of the records a practitioner makes.
fn record(e: usize, r: usize, base: Timestamp) -> Event {
    let body = match r % 10 {
        0 => json!({"kind": "appointment_missed", "appointment": if r == 0 { "initial" } else { "follow_up" }}),
        1 | 5 => json!({"kind": "contact_attempt", "method": "phone", "target": "patient", "outcome": "no_answer"}),
        2 => {
            json!({"kind": "contact_attempt", "method": "letter", "target": "patient", "outcome": "sent", "letter": "request_contact"})
        }
        3 => json!({"kind": "home_visit", "announced": false, "outcome": "no_answer"}),
        4 => json!({"kind": "communication", "party": "team_manager", "channel": "phone"}),
        6 => json!({"kind": "contact_attempt", "method": "phone", "target": "family_carer", "outcome": "message_left"}),
        7 => {
            json!({"kind": "decision", "topic": "cold_call", "outcome": "yes", "rationale": "no answer by phone twice"})
        }
        8 => json!({"kind": "communication", "party": "gp", "channel": "writing"}),
        _ => json!({"kind": "appointment_booked", "for": at(base, (r as i64 + 10) * 60 * 24).to_string()}),
    };
    let mut value = body;
    value["id"] =
        json!(uuid::Uuid::from_u128(0x0196_0000_0000_7000_8000_0000_0000_0000 + (e * RECORDS + r) as u128).to_string());
    value["at"] = json!(at(base, (r as i64) * 60 * 5).to_string());
    value["by"] = json!("u-bench");
    value["device"] = json!("d-bench");
    Event::from_value(&value, r).expect("a valid record")
}
