//! Memory per episode document, as the server's cache holds them:
//! `cargo run --release -p tests --example doc_memory -- [DOCS] [RECORDS]` (2,000 and 10).
//!
//! Makes the documents, saves them, then loads them all and reads the process's `VmRSS`
//! before and after each step. Run with `MALLOC_ARENA_MAX=1` for steadier figures.
use automerge::ActorId;
use episode::document::{EpisodeDoc, Opening};
use episode::{Pathway, PatientRef};
use jiff::Timestamp;

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn visit() -> episode::Event {
    let event = serde_json::json!({"id": uuid::Uuid::now_v7().to_string(), "kind": "home_visit", "at": Timestamp::now().to_string(), "by": "u", "device": "d", "announced": false, "outcome": "no_answer"});
    episode::Event::from_value(&event, 0).unwrap()
}

fn main() {
    let n: usize = std::env::args().nth(1).and_then(|v| v.parse().ok()).unwrap_or(1000);
    let records: usize = std::env::args().nth(2).and_then(|v| v.parse().ok()).unwrap_or(10);
    let mut saved = Vec::new();
    for i in 0..n {
        let opening = Opening {
            id: uuid::Uuid::now_v7().into(),
            patient_ref: PatientRef::new(format!("RX-{i}")).unwrap(),
            team: "north".into(),
            opened_at: Timestamp::now(),
            opened_by: "u".into(),
            pathway: Pathway::RoutineReferral,
            facts: Vec::new(),
            plan: String::new(),
        };
        let mut doc = EpisodeDoc::open(&opening, ActorId::random()).unwrap();
        for _ in 0..records {
            doc.record(&visit()).unwrap();
        }
        saved.push(doc.save());
    }
    let bytes: usize = saved.iter().map(Vec::len).sum();
    let r0 = rss_kib();
    let mut docs: Vec<EpisodeDoc> = saved.iter().map(|b| EpisodeDoc::load(b, ActorId::random()).unwrap()).collect();
    let r1 = rss_kib();
    let mut automerges: Vec<automerge::AutoCommit> =
        saved.iter().map(|b| automerge::AutoCommit::load(b).unwrap()).collect();
    let r2 = rss_kib();
    let views: Vec<_> = docs.iter().map(|d| d.episode().unwrap()).collect();
    let r3 = rss_kib();
    for doc in &mut docs {
        let mut other = EpisodeDoc::load(&doc.save(), ActorId::random()).unwrap();
        other.record(&visit()).unwrap();
        doc.merge(&mut other).unwrap();
    }
    let r4 = rss_kib();
    for doc in &mut docs {
        for _ in 0..9 {
            let _ = doc.save();
            let mut state = automerge::sync::State::new();
            let _ = doc.generate_sync_message(&mut state);
        }
    }
    let r5 = rss_kib();
    for doc in &mut docs {
        let mut other = EpisodeDoc::load(&doc.save(), ActorId::random()).unwrap();
        let mut state = automerge::sync::State::new();
        let mut theirs = automerge::sync::State::new();
        other.record(&visit()).unwrap();
        for _ in 0..3 {
            if let Some(m) = other.generate_sync_message(&mut theirs) {
                let _ = doc.receive_sync_message(&mut state, &m);
            }
            if let Some(m) = doc.generate_sync_message(&mut state) {
                let _ = other.receive_sync_message(&mut theirs, &m);
            }
        }
        let _ = doc.save_incremental();
    }
    let r6 = rss_kib();
    println!("after 9 saves and sync messages each: +{} KiB each", r5.saturating_sub(r4) / n as u64);
    println!("after a received sync message each: +{} KiB each", r6.saturating_sub(r5) / n as u64);
    println!("{n} docs of {records} records, {} bytes saved each", bytes / n);
    println!("EpisodeDoc loaded: {} KiB each", r1.saturating_sub(r0) / n as u64);
    println!("bare AutoCommit loaded: {} KiB each", r2.saturating_sub(r1) / n as u64);
    println!("typed views: {} KiB each", r3.saturating_sub(r2) / n as u64);
    println!("after a merge each: +{} KiB each", r4.saturating_sub(r3) / n as u64);
    println!("(kept: {} documents, {} views)", automerges.len(), views.len());
    automerges.clear();
}
