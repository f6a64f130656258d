//! Faults end to end, against the real server on loopback: tokens that expire, leak or
//! are revoked, a device revoked by a manager, an episode transferred while a device
//! holds offline records of it, requests replayed and responses lost, and the server
//! killed with SIGKILL between and during syncs.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use client_core::{Core, Error, NewEpisode, STORE_FILE, SyncSession, SyncSummary};
use episode::{EpisodeId, EventId, FactField, FactValue, Pathway, PatientRef};
use jiff::Timestamp;
use serde_json::{Map, Value, json};
use server::accounts::Role;
use tests::proxy::Rng;
use tests::{Device, PASSWORD, Server, User, agent, create_accounts, event_ids, sign_in};

const USERS: &[User] = &[
    User { username: "alice", role: Role::Practitioner, teams: &["north"] },
    User { username: "bob", role: Role::Practitioner, teams: &["north"] },
    User { username: "dave", role: Role::Practitioner, teams: &["north"] },
    User { username: "erin", role: Role::Practitioner, teams: &["north"] },
    User { username: "olive", role: Role::Practitioner, teams: &["north"] },
    User { username: "carol", role: Role::Practitioner, teams: &["south"] },
    User { username: "maria", role: Role::TeamManager, teams: &["north"] },
];

const ACCESS: &str = "sync.access_token";
const ACCESS_EXPIRES: &str = "sync.access_expires";
const REFRESH: &str = "sync.refresh_token";

fn fields(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        _ => panic!("fields are an object"),
    }
}

fn open(device: &mut Device, team: &str) -> EpisodeId {
    let new = NewEpisode {
        patient_ref: PatientRef::new("RX-E2E-1").expect("a reference"),
        pathway: Pathway::UrgentReferral,
        team: team.into(),
        facts: vec![(FactField::Children, FactValue::Flag(false))],
        plan: "Visit on Monday.".into(),
    };
    device.core.open_episode(new, Timestamp::now()).expect("open")
}

fn no_answer(device: &mut Device, episode: EpisodeId) -> EventId {
    let visit = fields(json!({"announced": false, "outcome": "no_answer"}));
    device.core.record(episode, "home_visit", visit, Timestamp::now()).expect("record a visit")
}

fn setting(device: &Device, key: &str) -> String {
    device.core.setting(key).expect("read a setting").unwrap_or_else(|| panic!("{key} is kept"))
}

/// Syncs until a sync says it finished.
fn sync_complete(device: &mut Device) -> SyncSummary {
    for _ in 0..10 {
        let summary = device.sync().expect("a sync with the server up succeeds");
        if summary.complete {
            return summary;
        }
    }
    panic!("ten syncs in a row stopped early");
}

/// POSTs JSON (with a bearer token if given); the status and the JSON answer.
fn post_json(server: &Server, path: &str, token: Option<&str>, body: Value) -> (u16, Value) {
    tests::call_json(server, "POST", path, token, Some(body))
}

/// One `POST /v1/sync` with the device's access token; the response's body.
fn post_sync(server: &Server, device: &Device, body: &[u8]) -> Vec<u8> {
    let token = setting(device, ACCESS);
    let mut response = agent()
        .post(format!("{}/v1/sync", server.url()))
        .header("Authorization", format!("Bearer {token}"))
        .content_type(episode::sync::CONTENT_TYPE)
        .send(body)
        .expect("the server answers");
    let status = response.status().as_u16();
    let bytes = response.body_mut().read_to_vec().expect("a body");
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&bytes));
    bytes
}

/// Carries the rest of a session over ureq, as a phone's host would.
fn finish(server: &Server, device: &mut Device, session: &mut SyncSession) {
    while let Some(body) = device.core.sync_request(session, Timestamp::now()).expect("a request") {
        let response = post_sync(server, device, &body);
        device.core.apply_sync_response(session, &response, Timestamp::now()).expect("apply");
    }
    assert!(session.summary.complete, "{:?}", session.summary);
}

#[test]
fn a_refused_access_token_is_refreshed_and_the_refresh_token_rotates() {
    let (_dir, server) = tests::start(USERS);
    let mut a = Device::new(&server, "alice");
    let mut b = Device::new(&server, "bob");
    let episode = open(&mut a, "north");
    sync_complete(&mut a);

    let refresh = setting(&a, REFRESH);
    a.core.set_setting(ACCESS, "garbage.not.a-token").expect("overwrite the access token");
    let visit = no_answer(&mut a, episode);
    let summary = a.sync().expect("a refused access token is refreshed, and the sync goes on");
    assert!(summary.complete, "{summary:?}");
    assert_ne!(setting(&a, REFRESH), refresh, "the refresh token rotated");
    assert_ne!(setting(&a, ACCESS), "garbage.not.a-token", "a new access token is kept");

    // The sync really reached the server.
    sync_complete(&mut b);
    assert!(event_ids(&b.core, episode).contains(&visit));
}

#[test]
fn a_reused_refresh_token_revokes_the_session_and_offline_records_survive_a_new_sign_in() {
    let (_dir, server) = tests::start(USERS);
    let mut a = Device::new(&server, "alice");
    let mut b = Device::new(&server, "bob");
    let episode = open(&mut a, "north");
    no_answer(&mut a, episode);
    sync_complete(&mut a);

    // An expired access token: the sync refreshes first, which rotates the refresh token.
    let old = setting(&a, REFRESH);
    a.core.set_setting(ACCESS_EXPIRES, "0").expect("expire the access token");
    sync_complete(&mut a);
    let rotated = setting(&a, REFRESH);
    assert_ne!(rotated, old, "the refresh token rotated");

    // Someone presents the old one (it leaked): refused, and the whole family revoked.
    let (status, body) =
        post_json(&server, "/v1/auth/refresh", None, json!({"refresh_token": old, "device_id": a.core.device()}));
    assert_eq!(status, 401, "{body}");

    // The device records offline meanwhile; its next sync is refused.
    let offline = [no_answer(&mut a, episode), no_answer(&mut a, episode)];
    match a.sync() {
        Err(Error::NotSignedIn | Error::Server { status: 401, .. }) => {}
        other => panic!("a revoked session still syncs: {other:?}"),
    }
    // Even its latest refresh token is refused now.
    let (status, body) =
        post_json(&server, "/v1/auth/refresh", None, json!({"refresh_token": rotated, "device_id": a.core.device()}));
    assert_eq!(status, 401, "{body}");

    // The offline records are still in the store, read again from disk.
    a.core = Core::open(a.dir.path(), &a.key).expect("open the store again");
    let held = event_ids(&a.core, episode);
    assert!(offline.iter().all(|id| held.contains(id)), "the offline records are kept");

    // Signed in again, the device delivers them.
    a.http.login(&mut a.core, "alice", PASSWORD, Timestamp::now()).expect("sign in again");
    sync_complete(&mut a);
    sync_complete(&mut b);
    let on_b = event_ids(&b.core, episode);
    assert!(offline.iter().all(|id| on_b.contains(id)), "the offline records reached the team");
    assert_eq!(on_b, event_ids(&a.core, episode));
}

#[test]
fn a_revoked_device_is_told_to_wipe_and_wipes_its_store() {
    let (_dir, server) = tests::start(USERS);
    let mut a = Device::new(&server, "alice");
    let mut b = Device::new(&server, "bob");
    let c = Device::new(&server, "carol");
    let episode = open(&mut b, "north");
    sync_complete(&mut b);
    let manager = sign_in(&server, "maria");

    // A device outside the manager's teams is not theirs to revoke.
    let (status, body) =
        post_json(&server, &format!("/v1/devices/{}/revoke", c.core.device()), Some(&manager), json!({}));
    assert_eq!(status, 404, "{body}");

    let (status, body) =
        post_json(&server, &format!("/v1/devices/{}/revoke", b.core.device()), Some(&manager), json!({}));
    assert_eq!(status, 204, "{body}");
    match b.sync() {
        Err(Error::DeviceRevoked) => {}
        other => panic!("a revoked device still syncs: {other:?}"),
    }
    // Signing in again on the revoked device is refused too.
    match b.http.login(&mut b.core, "bob", PASSWORD, Timestamp::now()) {
        Err(Error::DeviceRevoked) => {}
        other => panic!("a revoked device signs in again: {other:?}"),
    }

    let Device { core, dir, .. } = b;
    let store = dir.path().join(STORE_FILE);
    assert!(store.exists(), "the store is there before the wipe");
    core.wipe().expect("wipe");
    for suffix in ["", "-wal", "-shm"] {
        let path = dir.path().join(format!("{STORE_FILE}{suffix}"));
        assert!(!path.exists(), "{} survived the wipe", path.display());
    }

    // The other devices of the team go on.
    sync_complete(&mut a);
    assert!(a.core.episode(episode).is_ok());
}

/// Two north devices hold an episode, both record offline, and the manager moves it
/// south: the two devices, the episode, and the two offline records.
fn transferred(server: &Server) -> (Device, Device, EpisodeId, [EventId; 2]) {
    let mut a = Device::new(server, "alice");
    let mut b = Device::new(server, "bob");
    let episode = open(&mut a, "north");
    no_answer(&mut a, episode);
    sync_complete(&mut a);
    sync_complete(&mut b);
    assert!(b.core.episode(episode).is_ok());

    let by_a = no_answer(&mut a, episode);
    let by_b = no_answer(&mut b, episode);
    let manager = sign_in(server, "maria");
    let (status, body) =
        post_json(server, &format!("/v1/episodes/{episode}/transfer"), Some(&manager), json!({"team": "south"}));
    assert_eq!(status, 204, "{body}");
    (a, b, episode, [by_a, by_b])
}

/// Syncs until a sync finishes; how many episodes the syncs dropped in all.
fn dropped_until_complete(device: &mut Device) -> usize {
    let mut dropped = 0;
    for _ in 0..10 {
        let summary = device.sync().expect("a sync with the server up succeeds");
        dropped += summary.dropped;
        if summary.complete {
            return dropped;
        }
    }
    panic!("ten syncs in a row stopped early");
}

#[test]
fn a_transferred_episode_is_handed_over_with_offline_records_and_dropped() {
    let (_dir, server) = tests::start(USERS);
    let (mut a, mut b, episode, offline) = transferred(&server);
    let mut c = Device::new(&server, "carol");

    assert_eq!(dropped_until_complete(&mut a), 1);
    assert!(matches!(a.core.episode(episode), Err(Error::NotFound(_))), "a still holds the episode");
    assert_eq!(dropped_until_complete(&mut b), 1);
    assert!(matches!(b.core.episode(episode), Err(Error::NotFound(_))), "b still holds the episode");

    let summary = sync_complete(&mut c);
    assert_eq!(summary.new_episodes, 1, "{summary:?}");
    let held = c.core.episode(episode).expect("the south device receives it");
    assert_eq!(held.events.len(), 3, "{:?}", held.events);
    let ids = event_ids(&c.core, episode);
    assert!(offline.iter().all(|id| ids.contains(id)), "the offline records were handed over");

    // The hand-over is final: syncing again brings nothing back, and a south device that
    // records on it is heard by no north device.
    no_answer(&mut c, episode);
    sync_complete(&mut c);
    for device in [&mut a, &mut b] {
        let summary = sync_complete(device);
        assert_eq!((summary.new_episodes, summary.received), (0, 0), "{summary:?}");
        assert!(device.core.episode(episode).is_err());
    }
}

#[test]
fn a_hand_over_finishes_in_one_sync() {
    let (_dir, server) = tests::start(USERS);
    let (mut a, _b, episode, _) = transferred(&server);
    let summary = a.sync().expect("a syncs");
    assert_eq!(summary.dropped, 1, "{summary:?}");
    assert!(a.core.episode(episode).is_err());
    // A message (refused as leaving), the whole copy (confirmed, dropped), and a last
    // exchange at most.
    assert!(summary.complete && summary.round_trips <= 3, "{summary:?}");
}

#[test]
fn a_transferred_episode_is_listed_under_its_new_team() {
    let (_dir, server) = tests::start(USERS);
    let (mut a, _b, episode, _) = transferred(&server);
    dropped_until_complete(&mut a);
    let mut c = Device::new(&server, "carol");
    sync_complete(&mut c);
    assert_eq!(c.core.episode(episode).expect("on the south device").team, "south");
    let listed = c.core.episodes(Timestamp::now());
    assert_eq!(listed.iter().map(|e| e.team.as_str()).collect::<Vec<_>>(), ["south"]);
}

#[test]
fn a_replayed_request_changes_nothing_twice_and_a_lost_response_costs_a_repeat() {
    let (_dir, server) = tests::start(USERS);
    let mut a = Device::new(&server, "alice");
    let episode = open(&mut a, "north");
    no_answer(&mut a, episode);

    // The first request (the episode whole) arrives twice; only the second answer lands.
    let mut session = a.core.begin_sync();
    let first = a.core.sync_request(&mut session, Timestamp::now()).expect("a request").expect("something to say");
    post_sync(&server, &a, &first);
    let second = post_sync(&server, &a, &first);
    a.core.apply_sync_response(&mut session, &second, Timestamp::now()).expect("apply");
    finish(&server, &mut a, &mut session);

    // Offline records on the known episode go as a sync message: replayed as well.
    no_answer(&mut a, episode);
    no_answer(&mut a, episode);
    let mut session = a.core.begin_sync();
    let message = a.core.sync_request(&mut session, Timestamp::now()).expect("a request").expect("something to say");
    post_sync(&server, &a, &message);
    let second = post_sync(&server, &a, &message);
    a.core.apply_sync_response(&mut session, &second, Timestamp::now()).expect("apply");
    finish(&server, &mut a, &mut session);

    // A device that never held it gets what the server holds: each record once.
    let mut b = Device::new(&server, "bob");
    sync_complete(&mut b);
    assert_eq!(b.core.episode(episode).expect("on b").events.len(), 3);
    assert_eq!(event_ids(&b.core, episode), event_ids(&a.core, episode));

    // A stale request arriving late (the first one, again) changes nothing.
    post_sync(&server, &a, &first);
    post_sync(&server, &a, &message);
    let summary = sync_complete(&mut b);
    assert_eq!((summary.received, summary.new_episodes), (0, 0), "{summary:?}");
    assert_eq!(b.core.episode(episode).expect("on b").events.len(), 3);

    // A response lost: the server has the record, the device never hears so.
    let lost = no_answer(&mut a, episode);
    let mut session = a.core.begin_sync();
    let body = a.core.sync_request(&mut session, Timestamp::now()).expect("a request").expect("something to say");
    drop(post_sync(&server, &a, &body));
    drop(session);
    let after = no_answer(&mut a, episode);
    // The next sync starts from the persisted state, not the lost session's in-flight one:
    // it sends the unconfirmed record again with the new one and finishes at once, and
    // nothing is left to say after it.
    let summary = sync_complete(&mut a);
    assert_eq!((summary.round_trips, summary.sent), (1, 1), "{summary:?}");
    let summary = sync_complete(&mut a);
    assert_eq!((summary.round_trips, summary.sent, summary.received), (1, 0, 0), "{summary:?}");
    let by_b = no_answer(&mut b, episode);
    sync_complete(&mut b);
    sync_complete(&mut a);

    let (ea, eb) = (a.core.episode(episode).expect("on a"), b.core.episode(episode).expect("on b"));
    assert_eq!(ea.events.len(), 6, "{:?}", ea.events);
    assert_eq!(ea.to_json(), eb.to_json(), "both devices hold the same episode");
    let ids = event_ids(&a.core, episode);
    assert!([lost, after, by_b].iter().all(|id| ids.contains(id)));

    // And a fresh device, reading what the server holds, agrees.
    let mut observer = Device::new(&server, "olive");
    sync_complete(&mut observer);
    assert_eq!(observer.core.episode(episode).expect("on the observer").to_json(), ea.to_json());
}

/// What one device made while the server was being killed.
#[derive(Debug, Default)]
struct Made {
    episodes: Vec<EpisodeId>,
    records: Vec<(EpisodeId, EventId)>,
    synced: usize,
    failed: usize,
    unexpected: Vec<String>,
}

fn env(name: &str) -> Option<usize> {
    std::env::var(name).ok().and_then(|s| s.parse().ok())
}

/// What the server has acknowledged: a complete sync answered after these were made.
#[derive(Debug, Default)]
struct Acknowledged {
    episodes: BTreeSet<EpisodeId>,
    records: BTreeMap<EpisodeId, BTreeSet<EventId>>,
}

/// Asserts that the server's database holds every acknowledged episode, and every
/// acknowledged record exactly once. Run with the server killed, before its restart.
fn assert_durable(db: &std::path::Path, acknowledged: &Acknowledged, kill: usize) {
    let episodes: Vec<EpisodeId> = acknowledged.episodes.iter().copied().collect();
    let docs = tests::server_documents(db, &episodes);
    for (&episode, doc) in episodes.iter().zip(docs) {
        let doc = doc.unwrap_or_else(|| panic!("kill {kill}: an acknowledged episode {episode} is gone"));
        let events = doc.episode().expect("a stored episode reads").events;
        let ids: BTreeSet<EventId> = events.iter().map(|e| e.id).collect();
        assert_eq!(ids.len(), events.len(), "kill {kill}: a record of {episode} is stored twice");
        let missing: Vec<_> =
            acknowledged.records.get(&episode).into_iter().flatten().filter(|id| !ids.contains(id)).collect();
        assert!(missing.is_empty(), "kill {kill}: acknowledged records of {episode} are gone: {missing:?}");
    }
}

/// The crash loop (issue 7): devices record offline and sync while the server is killed
/// with SIGKILL at random moments and restarted. After every kill, before the restart,
/// everything the server acknowledged is in its database, each record exactly once; at the
/// end every device holds every record once, with the server's heads and actions.
///
/// Small by default. The full size is `TETHER_CRASH_DEVICES=50 TETHER_CRASH_RECORDS=200
/// TETHER_CRASH_KILLS=1000`, best in a release build (it passed in 1,458 s on this 2-core
/// machine, 9,979 records acknowledged during the kills); `TETHER_E2E_KILLS` is the kills'
/// older name, and `TETHER_E2E_SEED` replays a run.
#[test]
fn nothing_is_lost_or_duplicated_when_the_server_is_killed_during_syncs() {
    let dir = tempfile::tempdir().expect("a directory");
    crash_loop(&dir.path().join("tether.db"), 1, 15);
}

/// The crash loop on PostgreSQL, with two replicas: the devices sync half through one,
/// half through the other, and the first is killed with SIGKILL and restarted while the
/// second serves on. Shorter by default than on SQLite (a run of `tether serve` on
/// PostgreSQL takes longer to start); `TETHER_CRASH_KILLS` and the rest as there.
mod needs_postgres {
    #[test]
    fn nothing_is_lost_or_duplicated_when_a_replica_is_killed_during_syncs() {
        let db = tests::PgScratch::new();
        super::crash_loop(&db.url, 2, 8);
    }
}

/// The crash loop's body, on the database `db` (a file, or a `postgres://` URL as a
/// path) with `replicas` servers on it, of which the first is the one killed.
fn crash_loop(db: &std::path::Path, replicas: usize, default_kills: usize) {
    let count = env("TETHER_CRASH_DEVICES").unwrap_or(4).max(1);
    let records = env("TETHER_CRASH_RECORDS").unwrap_or(40);
    let kills = env("TETHER_CRASH_KILLS").or_else(|| env("TETHER_E2E_KILLS")).unwrap_or(default_kills);
    let mut rng = Rng::from_env("faults");
    // Leaked: `User` takes static names, and a test process ends soon.
    let names: Vec<&'static str> = (0..count).map(|i| &*Box::leak(format!("crash-{i}").into_boxed_str())).collect();
    let mut users: Vec<User> =
        names.iter().map(|&username| User { username, role: Role::Practitioner, teams: &["north"] }).collect();
    users.push(User { username: "olive", role: Role::Practitioner, teams: &["north"] });
    create_accounts(db, &users);
    let mut servers: Vec<Server> = (0..replicas.max(1)).map(|_| Server::start(db)).collect();
    let mut devices: Vec<Device> =
        names.iter().enumerate().map(|(i, name)| Device::new(&servers[i % servers.len()], name)).collect();

    // Two episodes every device holds before the faults begin.
    let shared = [open(&mut devices[0], "north"), open(&mut devices[0], "north")];
    for device in &mut devices {
        sync_complete(device);
    }

    let stop = Arc::new(AtomicBool::new(false));
    let kills_done = Arc::new(AtomicUsize::new(0));
    let acknowledged = Arc::new(Mutex::new(Acknowledged::default()));
    let workers: Vec<_> = devices
        .into_iter()
        .map(|mut device| {
            let (stop, kills_done, acknowledged) =
                (Arc::clone(&stop), Arc::clone(&kills_done), Arc::clone(&acknowledged));
            let mut rng = Rng::new(rng.next_u64());
            std::thread::spawn(move || {
                let mut made = Made::default();
                let record = |device: &mut Device, made: &mut Made, rng: &mut Rng| {
                    if made.episodes.len() < 2 && rng.below(20) == 0 {
                        made.episodes.push(open(device, "north"));
                    }
                    let held: Vec<EpisodeId> = device.core.episodes(Timestamp::now()).iter().map(|e| e.id).collect();
                    let episode = held[rng.below(held.len() as u64) as usize];
                    made.records.push((episode, no_answer(device, episode)));
                };
                while !stop.load(Ordering::Relaxed) {
                    // Records spread over the run: by the k-th kill, about k/kills of them.
                    let quota = records * (kills_done.load(Ordering::Relaxed) + 1) / kills.max(1);
                    for _ in 0..=rng.below(3) {
                        if made.records.len() < quota.min(records) {
                            record(&mut device, &mut made, &mut rng);
                        }
                    }
                    let (episodes, recorded) = (made.episodes.len(), made.records.len());
                    match device.sync() {
                        Ok(summary) => {
                            made.synced += 1;
                            if summary.complete {
                                let mut acknowledged = acknowledged.lock().unwrap_or_else(PoisonError::into_inner);
                                acknowledged.episodes.extend(&made.episodes[..episodes]);
                                for &(episode, event) in &made.records[..recorded] {
                                    acknowledged.episodes.insert(episode);
                                    acknowledged.records.entry(episode).or_default().insert(event);
                                }
                            }
                        }
                        // The server went away mid-sync: nothing is lost, the next one goes on,
                        // after a pause as a phone's would be (and so that building requests
                        // no one answers does not starve the kills and checks of the CPU).
                        Err(Error::Network(_)) => {
                            made.failed += 1;
                            std::thread::sleep(rng.millis(100, 400));
                        }
                        Err(other) => made.unexpected.push(other.to_string()),
                    }
                    std::thread::sleep(rng.millis(10, 60));
                }
                // Whatever the quota left unmade is recorded offline now.
                while made.records.len() < records {
                    record(&mut device, &mut made, &mut rng);
                }
                (device, made)
            })
        })
        .collect();

    let began = std::time::Instant::now();
    for kill in 0..kills {
        std::thread::sleep(rng.millis(200, 1500));
        servers[0].kill();
        let snapshot = {
            let acknowledged = acknowledged.lock().unwrap_or_else(PoisonError::into_inner);
            Acknowledged { episodes: acknowledged.episodes.clone(), records: acknowledged.records.clone() }
        };
        assert_durable(db, &snapshot, kill);
        std::thread::sleep(rng.millis(0, 60));
        servers[0].restart();
        kills_done.fetch_add(1, Ordering::Relaxed);
        if (kill + 1) % 100 == 0 {
            let records: usize = snapshot.records.values().map(BTreeSet::len).sum();
            eprintln!("faults: {} kills in {:.0?}, {records} records acknowledged so far", kill + 1, began.elapsed());
        }
    }
    std::thread::sleep(Duration::from_millis(100));
    stop.store(true, Ordering::Relaxed);
    let (mut devices, made): (Vec<Device>, Vec<Made>) =
        workers.into_iter().map(|w| w.join().expect("a device thread")).unzip();
    let acknowledged: usize =
        acknowledged.lock().unwrap_or_else(PoisonError::into_inner).records.values().map(BTreeSet::len).sum();
    eprintln!("faults: {kills} kills, {acknowledged} records acknowledged during them, checked after every kill");
    for (name, made) in names.iter().zip(&made) {
        eprintln!(
            "faults: {name} opened {}, recorded {}, synced {} times, {} syncs cut off",
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
    assert!(made.iter().map(|m| m.failed).sum::<usize>() > 0 || kills == 0, "no sync was ever cut off");
    assert!(acknowledged > 0 || kills == 0, "nothing was acknowledged while the server was being killed");

    // Everything anyone made: the episodes, and each one's records.
    let mut expected: BTreeMap<EpisodeId, BTreeSet<EventId>> = shared.iter().map(|&id| (id, BTreeSet::new())).collect();
    for made in &made {
        for &id in &made.episodes {
            expected.entry(id).or_default();
        }
        for &(episode, event) in &made.records {
            assert!(expected.entry(episode).or_default().insert(event), "an event id was given twice");
        }
    }

    // With the server up, two rounds: everyone sends, then everyone receives.
    for _ in 0..2 {
        for device in &mut devices {
            sync_complete(device);
        }
    }
    let mut observer = Device::new(servers.last().expect("a server"), "olive");
    sync_complete(&mut observer);
    devices.push(observer);
    let mut cores: Vec<(String, &mut Core)> = devices
        .iter_mut()
        .zip(names.iter().chain(&["olive (observer)"]))
        .map(|(device, name)| (name.to_string(), &mut device.core))
        .collect();
    tests::assert_converged(db, &mut cores, &expected);
}
