//! `tether backup` under load: devices sync to a real server on loopback while the
//! database is copied a page at a time; the copy, restored into a fresh file and served,
//! holds every record acknowledged before the backup began, and its audit chain holds.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use client_core::NewEpisode;
use episode::{EpisodeId, EventId, FactField, FactValue, Pathway, PatientRef};
use jiff::Timestamp;
use serde_json::json;
use server::accounts::Role;
use tests::{Device, Server, User};

#[test]
#[ignore = "the server process of the end-to-end tests, started by them"]
fn server_child() {
    tests::server_child();
}

const USERS: &[User] = &[
    User { username: "alice", role: Role::Practitioner, teams: &["north"] },
    User { username: "bob", role: Role::Practitioner, teams: &["north"] },
    User { username: "carol", role: Role::Practitioner, teams: &["north"] },
];

type Acked = Arc<Mutex<BTreeSet<(EpisodeId, EventId)>>>;

/// A device that opens an episode and records visits, syncing after each, until told to
/// stop; every record of a complete sync goes into `acked`.
fn worker(server: &Server, username: &'static str, acked: Acked, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<()> {
    let mut device = Device::new(server, username);
    std::thread::spawn(move || {
        let mut round = 0;
        while !stop.load(Ordering::SeqCst) && round < 400 {
            let new = NewEpisode {
                patient_ref: PatientRef::new(format!("RX-BACKUP-{username}-{round}")).expect("a reference"),
                pathway: Pathway::UrgentReferral,
                team: "north".into(),
                facts: vec![(FactField::Children, FactValue::Flag(false))],
                plan: "Visit on Monday.".into(),
            };
            let episode = device.core.open_episode(new, Timestamp::now()).expect("open");
            let mut records = Vec::new();
            for _ in 0..3 {
                let visit = json!({"announced": false, "outcome": "no_answer"});
                let visit = visit.as_object().expect("an object").clone();
                records.push(device.core.record(episode, "home_visit", visit, Timestamp::now()).expect("record"));
            }
            let summary = device.sync().expect("sync");
            assert!(summary.complete, "{summary:?}");
            acked.lock().expect("the set").extend(records.into_iter().map(|r| (episode, r)));
            round += 1;
        }
    })
}

#[test]
fn a_backup_taken_during_syncs_restores_every_acknowledged_record() {
    let (dir, server) = tests::start(USERS);
    let acked: Acked = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let workers: Vec<_> = ["alice", "bob", "carol"]
        .into_iter()
        .map(|u| worker(&server, u, Arc::clone(&acked), Arc::clone(&stop)))
        .collect();

    // Some history first, so that the copy takes many steps.
    while acked.lock().expect("the set").len() < 60 {
        std::thread::sleep(Duration::from_millis(20));
    }
    let before: BTreeSet<_> = acked.lock().expect("the set").clone();
    let backup = dir.path().join("backup.db");
    let target = server::Target::path(server.db());
    // A page a step with a pause: the copy spans many syncs.
    let pace = server::backup::Pace { pages_per_step: 1, pause: Duration::from_millis(2) };
    let copied = server::backup::backup(&target, &backup, false, pace).expect("the backup");
    let during = acked.lock().expect("the set").len() - before.len();
    stop.store(true, Ordering::SeqCst);
    for worker in workers {
        worker.join().expect("a worker");
    }
    assert!(copied.pages > 20, "{copied:?}");
    assert!(during > 0, "syncs were acknowledged while the backup ran");

    // A second backup to the same file is refused without --force.
    let again = server::backup::backup(&target, &backup, false, server::backup::Pace::default());
    assert!(again.expect_err("refused").to_string().contains("--force"));

    // Restored into a fresh file and served on its own.
    let fresh = tempfile::tempdir().expect("a directory");
    let restored = fresh.path().join("restored.db");
    server::backup::restore(&backup, &server::Target::path(&restored), false).expect("restore");
    let db = tests::open_db(&restored);
    let chain = db.call_blocking(|tx| server::audit::verify(tx)).expect("read the chain");
    assert!(chain.is_ok(), "the audit chain holds in the copy");
    drop(db);
    let copy = Server::start(&restored);
    let mut reader = Device::new(&copy, "alice");
    reader.sync().expect("sync from the restored server");
    let episodes: BTreeSet<EpisodeId> = before.iter().map(|(e, _)| *e).collect();
    for episode in episodes {
        let held = tests::event_ids(&reader.core, episode);
        for (_, record) in before.iter().filter(|(e, _)| *e == episode) {
            assert!(held.contains(record), "record {record} of {episode} was acknowledged before the backup");
        }
    }

    // A running server's database is never overwritten, even with --force.
    let refused = server::backup::restore(&backup, &server::Target::path(&restored), true);
    assert!(refused.expect_err("in use").to_string().contains("in use"));
}
