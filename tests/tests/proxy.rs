//! Devices syncing through a proxy that drops, duplicates, delays, reorders and truncates
//! sync requests and responses (`tests::proxy`), recording offline between syncs. Once
//! the proxy is clean again and everyone has synced, every device holds every episode and
//! every record exactly once, with the same heads as the server's documents and the
//! server's actions for them.
//!
//! `TETHER_PROXY_DEVICES` and `TETHER_PROXY_ROUNDS` make the run larger;
//! `TETHER_E2E_SEED` replays one.

use std::collections::{BTreeMap, BTreeSet};

use client_core::http::Http;
use client_core::{Core, Error, NewEpisode, SyncSummary};
use episode::{EpisodeId, EventId, FactField, FactValue, Pathway, PatientRef};
use jiff::Timestamp;
use serde_json::{Map, Value, json};
use server::accounts::Role;
use tests::proxy::{Faults, Proxy, Rng};
use tests::{Device, Server, User, assert_converged, create_accounts};

const NAMES: [&str; 8] = ["alice", "bob", "dave", "erin", "fay", "gus", "hal", "ivy"];

fn env(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|s| s.parse().ok()).unwrap_or(default)
}

fn fields(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        _ => panic!("fields are an object"),
    }
}

/// Syncs until a sync says it finished.
fn sync_complete(device: &mut Device) -> SyncSummary {
    for _ in 0..10 {
        let summary = device.sync().expect("a sync through a clean proxy succeeds");
        if summary.complete {
            return summary;
        }
    }
    panic!("ten syncs in a row stopped early");
}

/// What one device made, and how its syncs went.
#[derive(Debug, Default)]
struct Made {
    episodes: Vec<EpisodeId>,
    records: Vec<(EpisodeId, EventId)>,
    synced: usize,
    failed: usize,
    unexpected: Vec<String>,
}

#[test]
fn devices_converge_through_a_proxy_that_drops_duplicates_delays_reorders_and_truncates() {
    let count = env("TETHER_PROXY_DEVICES", 4).clamp(2, NAMES.len());
    let rounds = env("TETHER_PROXY_ROUNDS", 15);
    let names = &NAMES[..count];
    let dir = tempfile::tempdir().expect("a directory");
    let db = dir.path().join("tether.db");
    let mut users: Vec<User> =
        names.iter().map(|&username| User { username, role: Role::Practitioner, teams: &["north"] }).collect();
    users.push(User { username: "olive", role: Role::Practitioner, teams: &["north"] });
    create_accounts(&db, &users);
    let server = Server::start(&db);
    let mut rng = Rng::from_env("proxy");
    let proxy = Proxy::start(server.addr, Faults::each(5), Rng::new(rng.next_u64()));

    let workers: Vec<_> = names
        .iter()
        .map(|&name| {
            // Signed in directly; every sync goes through the proxy.
            let mut device = Device::new(&server, name);
            device.http = Http::new(&proxy.url());
            let mut rng = Rng::new(rng.next_u64());
            std::thread::spawn(move || {
                let mut made = Made::default();
                for round in 0..rounds {
                    let held: Vec<EpisodeId> = device.core.episodes(Timestamp::now()).iter().map(|e| e.id).collect();
                    if round == 0 || (made.episodes.len() < 3 && rng.below(8) == 0) {
                        let new = NewEpisode {
                            patient_ref: PatientRef::new("RX-PROXY-1").expect("a reference"),
                            pathway: Pathway::UrgentReferral,
                            team: "north".into(),
                            facts: vec![(FactField::Children, FactValue::Flag(false))],
                            plan: "Visit on Monday.".into(),
                        };
                        made.episodes.push(device.core.open_episode(new, Timestamp::now()).expect("open"));
                    }
                    // Offline: a record or two on episodes it holds, now and then a fact.
                    let held = if held.is_empty() { made.episodes.clone() } else { held };
                    for _ in 0..=rng.below(2) {
                        let episode = held[rng.below(held.len() as u64) as usize];
                        let visit = fields(json!({"announced": false, "outcome": "no_answer"}));
                        let id = device.core.record(episode, "home_visit", visit, Timestamp::now()).expect("record");
                        made.records.push((episode, id));
                    }
                    if rng.below(5) == 0 {
                        let episode = held[rng.below(held.len() as u64) as usize];
                        let risk = if rng.below(2) == 0 { "high" } else { "low" };
                        let id = device.core.set_fact(episode, FactField::Risk, &json!(risk), Timestamp::now());
                        made.records.push((episode, id.expect("set a fact")));
                    }
                    match device.sync() {
                        Ok(_) => made.synced += 1,
                        Err(Error::Network(_)) => made.failed += 1,
                        Err(other) => made.unexpected.push(other.to_string()),
                    }
                }
                (device, made)
            })
        })
        .collect();
    let (mut devices, made): (Vec<Device>, Vec<Made>) =
        workers.into_iter().map(|w| w.join().expect("a device thread")).unzip();

    let stats = proxy.stats();
    eprintln!("proxy: {stats:?}");
    for (name, made) in names.iter().zip(&made) {
        eprintln!(
            "proxy: {name} opened {}, recorded {}, {} syncs finished, {} cut off",
            made.episodes.len(),
            made.records.len(),
            made.synced,
            made.failed
        );
        assert!(
            made.unexpected.is_empty(),
            "{name}'s syncs failed otherwise than by the network: {:?}",
            made.unexpected
        );
    }
    for (kind, n) in [
        ("dropped requests", stats.dropped_requests),
        ("dropped responses", stats.dropped_responses),
        ("duplicates", stats.duplicated),
        ("delays", stats.delayed),
        ("reorders", stats.reordered),
        ("truncated requests", stats.truncated_requests),
        ("truncated responses", stats.truncated_responses),
    ] {
        assert!(n > 0, "the run had no {kind}: {stats:?}");
    }

    // Clean from here: the request still held back for reordering arrives, stale, and
    // then everyone syncs twice (everyone sends, then everyone receives).
    proxy.set_faulty(false);
    proxy.flush();
    for _ in 0..2 {
        for device in &mut devices {
            sync_complete(device);
        }
    }
    // A lost response never stalls a later sync: now nothing is left to say.
    for (device, name) in devices.iter_mut().zip(names) {
        let summary = sync_complete(device);
        assert_eq!((summary.round_trips, summary.sent, summary.received), (1, 0, 0), "{name}: {summary:?}");
    }
    let mut observer = Device::new(&server, "olive");
    sync_complete(&mut observer);
    devices.push(observer);

    let mut expected: BTreeMap<EpisodeId, BTreeSet<EventId>> = BTreeMap::new();
    for made in &made {
        for &id in &made.episodes {
            expected.entry(id).or_default();
        }
        for &(episode, event) in &made.records {
            assert!(expected.entry(episode).or_default().insert(event), "an event id was given twice");
        }
    }
    let mut cores: Vec<(String, &mut Core)> = devices
        .iter_mut()
        .zip(names.iter().chain(&["olive (observer)"]))
        .map(|(device, name)| (name.to_string(), &mut device.core))
        .collect();
    assert_converged(server.db(), &mut cores, &expected);
}
