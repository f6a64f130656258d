//! Several `tether serve` processes on one PostgreSQL database, as real processes on
//! loopback: devices alternating between them converge, two devices writing one episode
//! through different replicas at the same moment lose nothing, a token or a revocation
//! made on one holds on the other, and PostgreSQL restarted under load is recovered from
//! without restarting the replicas. (The crash loop on PostgreSQL, with a replica killed
//! while another serves, is in `faults.rs`.)
//!
//! All of it needs PostgreSQL (`TETHER_TEST_POSTGRES`), so it lives in `needs_postgres`,
//! which `scripts/test` skips, saying so, when there is none.

#[test]
#[ignore = "the server process of the end-to-end tests, started by them"]
fn server_child() {
    tests::server_child();
}

mod needs_postgres {
    use std::collections::{BTreeMap, BTreeSet};
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::{Arc, Barrier, Mutex, MutexGuard, PoisonError};
    use std::time::{Duration, Instant};

    use client_core::http::Http;
    use client_core::{Error, NewEpisode};
    use episode::{EpisodeId, EventId, FactField, FactValue, Pathway, PatientRef};
    use jiff::Timestamp;
    use serde_json::{Map, Value, json};
    use server::accounts::Role;
    use tests::{Device, PgScratch, Server, User, assert_converged, call_json, create_accounts, sign_in};

    const USERS: &[User] = &[
        User { username: "alice", role: Role::Practitioner, teams: &["north"] },
        User { username: "bob", role: Role::Practitioner, teams: &["north"] },
        User { username: "dave", role: Role::Practitioner, teams: &["north"] },
        User { username: "maria", role: Role::TeamManager, teams: &["north"] },
    ];

    /// The tests here one at a time: one of them restarts PostgreSQL, which the others
    /// would see as failures.
    static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

    /// A scratch database with `USERS`, and two replicas on it; holds the others off.
    fn two_replicas() -> (MutexGuard<'static, ()>, PgScratch, [Server; 2]) {
        let turn = ONE_AT_A_TIME.lock().unwrap_or_else(PoisonError::into_inner);
        let db = PgScratch::new();
        create_accounts(&db.url, USERS);
        let env = [("TETHER_METRICS_TOKEN", METRICS_TOKEN)];
        let replicas = [
            Server::start_at(&db.url, tests::free_addr(), None, &env),
            Server::start_at(&db.url, tests::free_addr(), None, &env),
        ];
        (turn, db, replicas)
    }

    /// The replicas' `/metrics` token.
    const METRICS_TOKEN: &str = "the replicas' metrics token, 16+ bytes";

    /// A counter or gauge of the replica's `/metrics`, by its whole name and labels.
    fn metric(server: &Server, name: &str) -> u64 {
        let mut response = tests::agent()
            .get(format!("{}/metrics", server.url()))
            .header("Authorization", format!("Bearer {METRICS_TOKEN}"))
            .call()
            .expect("the replica answers /metrics");
        assert_eq!(response.status().as_u16(), 200, "/metrics with its token");
        let text = response.body_mut().read_to_string().expect("a body");
        text.lines()
            .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in /metrics:\n{text}"))
    }

    const NOTIFIED: &str = "tether_cache_evictions_total{reason=\"notified\"}";

    /// Waits (up to `within`) for the replica's notified evictions to reach `at_least`.
    fn notified_reaches(server: &Server, at_least: u64, within: Duration) -> bool {
        let began = Instant::now();
        while began.elapsed() < within {
            if metric(server, NOTIFIED) >= at_least {
                return true;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        false
    }

    /// Ends the connections the replicas listen on (as a restart of PostgreSQL or a
    /// network cut would); how many.
    fn cut_listeners(db: &PgScratch) -> u64 {
        let url = db.url.to_str().expect("a URL");
        let mut client = postgres::Client::connect(url, postgres::NoTls).expect("connect to the scratch database");
        let row = client
            .query_one(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
                 WHERE application_name = $1 AND datname = current_database()",
                &[&server::store::LISTENER_APPLICATION],
            )
            .expect("end the listeners' connections");
        u64::try_from(row.get::<_, i64>(0)).expect("a count")
    }

    /// Sends `signal` (`STOP`, `CONT`) to the replica's process.
    fn signal(server: &Server, signal: &str) {
        let pid = server.pid().expect("the replica runs").to_string();
        let status = std::process::Command::new("kill").args([&format!("-{signal}"), &pid]).status().expect("kill");
        assert!(status.success(), "kill -{signal} {pid}");
    }

    fn open(device: &mut Device) -> EpisodeId {
        let new = NewEpisode {
            patient_ref: PatientRef::new("RX-REPLICA-1").expect("a reference"),
            pathway: Pathway::UrgentReferral,
            team: "north".into(),
            facts: vec![(FactField::Children, FactValue::Flag(false))],
            plan: "Visit on Monday.".into(),
        };
        device.core.open_episode(new, Timestamp::now()).expect("open")
    }

    fn no_answer(device: &mut Device, episode: EpisodeId) -> EventId {
        let visit: Map<String, Value> = match json!({"announced": false, "outcome": "no_answer"}) {
            Value::Object(map) => map,
            _ => unreachable!("an object"),
        };
        device.core.record(episode, "home_visit", visit, Timestamp::now()).expect("record a visit")
    }

    /// Points the device at `server` (its tokens stay: one replica's are good on all).
    fn through(device: &mut Device, server: &Server) {
        device.http = Http::new(&server.url());
    }

    /// Syncs until a sync says it finished.
    fn sync_complete(device: &mut Device) {
        for _ in 0..10 {
            if device.sync().expect("a sync succeeds").complete {
                return;
            }
        }
        panic!("ten syncs in a row stopped early");
    }

    #[test]
    fn devices_alternating_between_two_replicas_converge() {
        let (_turn, db, replicas) = two_replicas();
        let names = ["alice", "bob", "dave"];
        // Each signs in on a different replica than the one it syncs with first.
        let mut devices: Vec<Device> =
            names.iter().enumerate().map(|(i, name)| Device::new(&replicas[i % 2], name)).collect();
        let mut expected: BTreeMap<EpisodeId, BTreeSet<EventId>> = BTreeMap::new();
        for (i, device) in devices.iter_mut().enumerate() {
            through(device, &replicas[(i + 1) % 2]);
            expected.insert(open(device), BTreeSet::new());
            sync_complete(device);
        }
        let episodes: Vec<EpisodeId> = expected.keys().copied().collect();
        for round in 0..6 {
            for (i, device) in devices.iter_mut().enumerate() {
                through(device, &replicas[(round + i) % 2]);
                // Learn the others' episodes first, then record on one of them.
                sync_complete(device);
                let episode = episodes[(round + i) % episodes.len()];
                expected.get_mut(&episode).expect("made above").insert(no_answer(device, episode));
                sync_complete(device);
            }
        }
        // Twice round, so that each hears of what the last ones sent.
        for _ in 0..2 {
            for (i, device) in devices.iter_mut().enumerate() {
                through(device, &replicas[i % 2]);
                sync_complete(device);
            }
        }
        let mut cores: Vec<(String, &mut client_core::Core)> =
            names.iter().zip(devices.iter_mut()).map(|(name, d)| ((*name).to_owned(), &mut d.core)).collect();
        assert_converged(&db.url, &mut cores, &expected);
    }

    #[test]
    fn two_devices_writing_one_episode_through_different_replicas_at_once_lose_nothing() {
        let (_turn, db, replicas) = two_replicas();
        let mut a = Device::new(&replicas[0], "alice");
        let mut b = Device::new(&replicas[1], "bob");
        let episode = open(&mut a);
        sync_complete(&mut a);
        sync_complete(&mut b);
        assert!(b.core.episode(episode).is_ok(), "bob has the episode through the other replica");

        let rounds = 25;
        let start = Arc::new(Barrier::new(2));
        let writer = |mut device: Device, start: Arc<Barrier>| {
            std::thread::spawn(move || {
                let mut made = BTreeSet::new();
                for _ in 0..rounds {
                    // Two records offline, then both devices sync at the same moment.
                    made.insert(no_answer(&mut device, episode));
                    made.insert(no_answer(&mut device, episode));
                    start.wait();
                    sync_complete(&mut device);
                }
                (device, made)
            })
        };
        let (wa, wb) = (writer(a, Arc::clone(&start)), writer(b, start));
        let (mut a, made_a) = wa.join().expect("alice's thread");
        let (mut b, made_b) = wb.join().expect("bob's thread");
        for _ in 0..2 {
            sync_complete(&mut a);
            sync_complete(&mut b);
        }
        let records: BTreeSet<EventId> = made_a.union(&made_b).copied().collect();
        assert_eq!(records.len(), 4 * rounds, "every record made has its own id");
        let expected = BTreeMap::from([(episode, records)]);
        assert_converged(&db.url, &mut [("alice".into(), &mut a.core), ("bob".into(), &mut b.core)], &expected);
    }

    #[test]
    fn a_token_or_a_revocation_made_on_one_replica_holds_on_the_other() {
        let (_turn, _db, replicas) = two_replicas();
        let token = sign_in(&replicas[0], "alice");
        let (status, body) = call_json(&replicas[1], "GET", "/v1/me", Some(&token), None);
        assert_eq!(status, 200, "a token signed by one replica is good on the other: {body}");

        // A device signed in on one replica and revoked by a manager on the other is
        // refused on both at its next request.
        let mut b = Device::new(&replicas[0], "bob");
        sync_complete(&mut b);
        let manager = sign_in(&replicas[1], "maria");
        let path = format!("/v1/devices/{}/revoke", b.core.device());
        let (status, body) = call_json(&replicas[1], "POST", &path, Some(&manager), Some(json!({})));
        assert_eq!(status, 204, "{body}");
        for replica in &replicas {
            through(&mut b, replica);
            match b.sync() {
                Err(Error::DeviceRevoked) => {}
                other => panic!("a device revoked on one replica still syncs on another: {other:?}"),
            }
        }
    }

    /// Alice opens an episode through replica `a` and bob receives it through `b`.
    fn alice_and_bob_share_an_episode(a: &Server, b: &Server) -> (Device, Device, EpisodeId) {
        let mut alice = Device::new(a, "alice");
        let mut bob = Device::new(b, "bob");
        let episode = open(&mut alice);
        sync_complete(&mut alice);
        sync_complete(&mut bob);
        assert!(bob.core.episode(episode).is_ok(), "bob has the episode through B");
        (alice, bob, episode)
    }

    /// A write through one replica drops the episode's document from the other's cache,
    /// which the other counts on /metrics; the writer's own cache keeps its copy.
    #[test]
    fn a_write_through_one_replica_evicts_the_document_from_the_others_cache() {
        let (_turn, _db, [a, b]) = two_replicas();
        // Bob learns of the episode through B, which keeps its document.
        let (mut alice, mut bob, episode) = alice_and_bob_share_an_episode(&a, &b);
        assert!(metric(&b, "tether_cache_documents") >= 1, "B keeps the document it sent");
        assert_eq!(metric(&b, NOTIFIED), 0, "nothing changed yet");

        let visit = no_answer(&mut alice, episode);
        sync_complete(&mut alice);
        assert!(
            notified_reaches(&b, 1, Duration::from_secs(20)),
            "B dropped its stale copy when A's write was announced"
        );
        assert_eq!(metric(&a, NOTIFIED), 0, "A does not drop its own copy for its own write");
        // And B answers from the stored document.
        sync_complete(&mut bob);
        assert!(tests::event_ids(&bob.core, episode).contains(&visit), "bob has alice's visit through B");
    }

    /// Notifications lost (B's listener cut off while A writes) cost nothing: B finds the
    /// change by the `seq` it checks on every request. B's listener then connects again
    /// by itself and hears the next write.
    #[test]
    fn a_replica_that_misses_a_notification_still_answers_from_the_stored_document() {
        let (_turn, db, [a, b]) = two_replicas();
        let (mut alice, mut bob, episode) = alice_and_bob_share_an_episode(&a, &b);

        // B frozen, its listener's connection ended: A's announcement reaches nobody at B
        // (a listener hears only what is sent after its LISTEN).
        signal(&b, "STOP");
        let cut = cut_listeners(&db);
        let visit = no_answer(&mut alice, episode);
        sync_complete(&mut alice);
        signal(&b, "CONT");
        assert!(cut >= 1, "a listener's connection was ended");

        sync_complete(&mut bob);
        assert!(tests::event_ids(&bob.core, episode).contains(&visit), "bob has alice's visit through B");
        assert_eq!(metric(&b, NOTIFIED), 0, "B never heard of the write it answered from");

        // B listens again without a restart: a later write is heard (each try re-caches
        // the document at B first, in case B was not yet listening again).
        let heard = (0..20).any(|_| {
            sync_complete(&mut bob);
            no_answer(&mut alice, episode);
            sync_complete(&mut alice);
            notified_reaches(&b, 1, Duration::from_secs(2))
        });
        assert!(heard, "B's listener connected again and heard A's write");
    }

    /// Whether this process may restart the PostgreSQL the tests use: as root, with
    /// Debian's `pg_ctlcluster`, on a server on this machine.
    fn can_restart_postgres() -> Result<(), String> {
        let url = std::env::var(tests::POSTGRES_VAR).unwrap_or_else(|_| tests::POSTGRES_DEFAULT.to_owned());
        if !(url.contains("@127.0.0.1") || url.contains("@localhost") || url.contains("@[::1]")) {
            return Err(format!("{} names a server on another machine", tests::POSTGRES_VAR));
        }
        let root = std::process::Command::new("id")
            .arg("-u")
            .output()
            .is_ok_and(|out| String::from_utf8_lossy(&out.stdout).trim() == "0");
        if !root {
            return Err("it must run as root to restart PostgreSQL".into());
        }
        let ctl = std::process::Command::new("pg_ctlcluster").args(["15", "main", "status"]).output();
        match ctl {
            Ok(out) if out.status.success() => Ok(()),
            _ => Err("`pg_ctlcluster 15 main status` finds no running cluster (apt-get install postgresql-15)".into()),
        }
    }

    /// PostgreSQL restarted while devices sync through two replicas: syncs fail while it
    /// is down, and once it is back the same replica processes answer again (the pool
    /// opens new connections in place of the broken ones), and nothing is lost.
    #[test]
    fn the_replicas_recover_when_postgresql_restarts_under_load() {
        if let Err(why) = can_restart_postgres() {
            assert!(std::env::var_os("CI").is_none(), "under CI this test must run, but {why}");
            eprintln!("skipped: the_replicas_recover_when_postgresql_restarts_under_load: {why}");
            return;
        }
        let (_turn, db, replicas) = two_replicas();
        let pids: Vec<Option<u32>> = replicas.iter().map(Server::pid).collect();
        let names = ["alice", "bob", "dave"];
        let mut devices: Vec<Device> =
            names.iter().enumerate().map(|(i, name)| Device::new(&replicas[i % 2], name)).collect();
        let shared = open(&mut devices[0]);
        for device in &mut devices {
            sync_complete(device);
        }

        let stop = Arc::new(AtomicBool::new(false));
        let succeeded = Arc::new(AtomicUsize::new(0));
        let workers: Vec<_> = devices
            .into_iter()
            .map(|mut device| {
                let (stop, succeeded) = (Arc::clone(&stop), Arc::clone(&succeeded));
                std::thread::spawn(move || {
                    let (mut made, mut failed) = (BTreeSet::new(), 0);
                    while !stop.load(Ordering::Relaxed) {
                        made.insert(no_answer(&mut device, shared));
                        match device.sync() {
                            Ok(_) => {
                                succeeded.fetch_add(1, Ordering::Relaxed);
                            }
                            // While PostgreSQL is down the replicas answer errors; the
                            // records stay on the device for the next sync.
                            Err(_) => failed += 1,
                        }
                        std::thread::sleep(Duration::from_millis(20));
                    }
                    (device, made, failed)
                })
            })
            .collect();
        let wait_for = |more: usize, within: Duration| {
            let (from, began) = (succeeded.load(Ordering::Relaxed), Instant::now());
            while succeeded.load(Ordering::Relaxed) < from + more {
                assert!(began.elapsed() < within, "syncs did not succeed again within {within:?}");
                std::thread::sleep(Duration::from_millis(50));
            }
        };
        wait_for(10, Duration::from_secs(60));
        let restarted = std::process::Command::new("pg_ctlcluster")
            .args(["15", "main", "restart"])
            .status()
            .expect("run pg_ctlcluster");
        assert!(restarted.success(), "pg_ctlcluster 15 main restart failed");
        // The same processes answer again.
        wait_for(20, Duration::from_secs(60));
        stop.store(true, Ordering::Relaxed);
        let mut finished: Vec<(Device, BTreeSet<EventId>, usize)> =
            workers.into_iter().map(|w| w.join().expect("a device thread")).collect();
        assert_eq!(replicas.iter().map(Server::pid).collect::<Vec<_>>(), pids, "no replica was restarted");
        let failed: usize = finished.iter().map(|f| f.2).sum();
        eprintln!("restart: {failed} syncs failed while PostgreSQL restarted");
        let records: BTreeSet<EventId> = finished.iter().flat_map(|f| f.1.iter().copied()).collect();
        for _ in 0..2 {
            for (device, _, _) in &mut finished {
                sync_complete(device);
            }
        }
        let expected = BTreeMap::from([(shared, records)]);
        let mut cores: Vec<(String, &mut client_core::Core)> =
            names.iter().zip(finished.iter_mut()).map(|(name, f)| ((*name).to_owned(), &mut f.0.core)).collect();
        assert_converged(&db.url, &mut cores, &expected);
    }
}
