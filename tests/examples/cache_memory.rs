//! What the server's document cache costs in memory, against what it reckons:
//! `cargo run --release -p tests --example cache_memory -- [DOCS] [RECORDS]` (2,000 and 5,
//! the load bench's caseload). Run with `MALLOC_ARENA_MAX=1` for steadier figures.
//!
//! Stores DOCS episodes of RECORDS records each in a fresh SQLite database, then takes
//! each through an unbounded `episodes::Cache` as a sync does (loaded, its typed view
//! read, evaluated and encoded for the wire) and puts it back, reading the process's
//! resident memory (`/proc/self/statm`) before and after. Then drops the cache and reads
//! it again (what the allocator gives back), and prints the cache's own estimate.
use automerge::ActorId;
use episode::document::{EpisodeDoc, Opening};
use episode::{Pathway, PatientRef};
use jiff::Timestamp;
use server::episodes::{self, Cache, Evaluated};

/// Resident memory in KiB, from `/proc/self/statm` (its second field, in pages).
fn rss_kib() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm.split_whitespace().nth(1).and_then(|v| v.parse().ok()).unwrap_or(0);
    pages * 4
}

fn visit() -> episode::Event {
    let event = serde_json::json!({"id": uuid::Uuid::now_v7().to_string(), "kind": "home_visit", "at": Timestamp::now().to_string(), "by": "u", "device": "d", "announced": false, "outcome": "no_answer"});
    episode::Event::from_value(&event, 0).expect("a valid visit")
}

fn main() {
    let n: usize = std::env::args().nth(1).and_then(|v| v.parse().ok()).unwrap_or(2000);
    let records: usize = std::env::args().nth(2).and_then(|v| v.parse().ok()).unwrap_or(5);
    let dir = tempfile::tempdir().expect("a directory");
    let path = dir.path().join("tether.db");
    let db = tests::open_db(&path);
    let now = Timestamp::now();
    let ids: Vec<episode::EpisodeId> = db
        .call_blocking(|conn| {
            let mut tx = conn.transaction()?;
            server::accounts::add_team(&mut *tx, &"north".parse().expect("a team id"), "North", now)
                .expect("add a team");
            let mut ids = Vec::with_capacity(n);
            for i in 0..n {
                let opening = Opening {
                    id: uuid::Uuid::now_v7().into(),
                    patient_ref: PatientRef::new(format!("RX-{i}")).expect("a reference"),
                    team: "north".into(),
                    opened_at: now,
                    opened_by: "u".into(),
                    pathway: Pathway::RoutineReferral,
                    facts: Vec::new(),
                    plan: String::new(),
                };
                let mut doc = EpisodeDoc::open(&opening, ActorId::random()).expect("open");
                for _ in 0..records {
                    doc.record(&visit()).expect("record");
                }
                let id = opening.id;
                episodes::insert(&mut *tx, id, &"north".parse().expect("a team"), &mut doc, now.as_millisecond())?;
                ids.push(id);
            }
            tx.commit()?;
            Ok::<_, server::store::StoreError>(ids)
        })
        .expect("store the episodes");

    // A third argument bounds the cache (in bytes), to compare with one holding nothing.
    let budget = std::env::args().nth(3).and_then(|v| v.parse().ok()).unwrap_or(usize::MAX);
    let mut cache = Cache::with_budget(budget);
    let before = rss_kib();
    let stored_bytes = db
        .call_blocking(|conn| {
            let mut tx = conn.transaction()?;
            let actor = episodes::server_actor(&mut *tx)?;
            let mut stored_bytes = 0;
            for &id in &ids {
                let Some(mut stored) = episodes::load(&mut *tx, id, &actor)? else { continue };
                stored_bytes += stored.doc().stored_bytes();
                if std::env::var_os("PROBE_DOC_ONLY").is_none() {
                    let evaluation = server::caseload::evaluate(stored.view(&mut *tx)?, now);
                    let wire = if std::env::var_os("PROBE_NO_WIRE").is_some() {
                        Vec::new()
                    } else {
                        episode::sync::Authoritative::new(id, &evaluation).evaluation
                    };
                    stored.set_evaluated(Evaluated { second: now.as_second(), evaluation, wire });
                }
                cache.put(stored);
            }
            tx.commit()?;
            Ok::<_, server::store::StoreError>(stored_bytes)
        })
        .expect("load through the cache");
    let after = rss_kib();
    let stats = cache.stats();
    drop(cache);
    let dropped = rss_kib();
    let per = |kib: u64| kib as f64 * 1024.0 / n as f64;
    println!("{n} episodes of {records} records: {} bytes stored each", stored_bytes / n);
    println!("resident growth with all cached: {:.0} bytes each", per(after.saturating_sub(before)));
    println!("the cache's estimate: {:.0} bytes each", stats.bytes as f64 / n as f64);
    println!("given back when the cache was dropped: {:.0} bytes each", per(after.saturating_sub(dropped)));
    println!("resident KiB: before {before}, all cached {after}, cache dropped {dropped}");
}
