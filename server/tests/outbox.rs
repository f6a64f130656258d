//! The outbox (`server::outbox`, docs/adr/0012-outbox.md) on both backends: a message is
//! owed once whatever repeats it; a claim is a lease that lapses for a process that died,
//! and a lapsed claim cannot finish what its successor holds; failures back off and end
//! `failed`, which a person makes due again; every outcome is audited; and on PostgreSQL
//! claims made at once from several connections never take the same message.

mod common;

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use episode::EpisodeId;
use jiff::Timestamp;
use serde_json::json;
use server::outbox::{self, Policy, SendError, Sender, Sent, Worker};
use server::store::{Db, OutboxItem};

fn start() -> Timestamp {
    "2026-03-02T09:00:00Z".parse().expect("a time")
}

fn open_episode(db: &Db, team: &str) -> EpisodeId {
    store_new_episode(db, team, "P-OUTBOX-1", start())
}

fn owe(server: &Server, episode: EpisodeId, key: &str) -> bool {
    server.db(|conn| {
        let mut tx = conn.transaction().expect("a transaction");
        let new =
            outbox::enqueue(&mut *tx, "test", key, Some("team-north"), Some(episode), &json!({"n": key}), start())
                .expect("owed");
        tx.commit().expect("committed");
        new
    })
}

/// Owing a message twice (a sync repeated) owes it once; a message rolled back with its
/// cause is never owed.
async fn a_message_is_owed_once_and_only_with_its_cause() {
    let server = Server::new();
    let episode = open_episode(&server.state.db, "team-north");
    assert!(owe(&server, episode, "k1"));
    assert!(!owe(&server, episode, "k1"), "the same key is owed once");
    server.db(|conn| {
        let mut tx = conn.transaction().expect("a transaction");
        outbox::enqueue(&mut *tx, "test", "k2", None, Some(episode), &json!({}), start()).expect("owed");
        drop(tx);
    });
    assert_eq!(server.number("SELECT COUNT(*) FROM outbox"), 1, "the rolled-back message is not owed");
}

/// A claim takes due messages and leases them; a second claim meanwhile takes nothing; a
/// lapsed lease lets the message be claimed again, and then the first claim can neither
/// mark it sent nor failed.
async fn a_claim_is_a_lease_and_a_lapsed_claim_finishes_nothing() {
    let server = Server::new();
    let episode = open_episode(&server.state.db, "team-north");
    owe(&server, episode, "k1");
    let t = start().as_millisecond();
    let first = server.db(|conn| conn.claim_outbox("test", t, t + 1000, 10)).expect("claimed");
    assert_eq!(first.len(), 1);
    assert_eq!(first[0].attempts, 1);
    assert_eq!(first[0].episode, Some(episode));
    assert!(server.db(|conn| conn.claim_outbox("test", t + 999, t + 2000, 10)).expect("a claim").is_empty());
    assert!(server.db(|conn| conn.claim_outbox("other", t + 5000, t + 6000, 10)).expect("a claim").is_empty());
    // The first claimer died: its lease lapses and the message is claimed again.
    let second = server.db(|conn| conn.claim_outbox("test", t + 1000, t + 2000, 10)).expect("claimed");
    assert_eq!(second.len(), 1);
    assert_eq!(second[0].attempts, 2);
    assert!(!server.db(|conn| conn.outbox_sent(first[0].id, first[0].attempts, t)).expect("a write"));
    assert!(!server.db(|conn| conn.outbox_failed(first[0].id, first[0].attempts, None, "late")).expect("a write"));
    assert!(server.db(|conn| conn.outbox_sent(second[0].id, second[0].attempts, t + 1500)).expect("a write"));
    let rows = server.rows("SELECT state, sent_at, claimed_until, last_error FROM outbox");
    assert_eq!(rows, vec![vec![Some("sent".into()), Some((t + 1500).to_string()), None, None]]);
    // A sent message is never claimed again, nor owed again.
    assert!(server.db(|conn| conn.claim_outbox("test", t + 99_000, t + 100_000, 10)).expect("a claim").is_empty());
    assert!(!owe(&server, episode, "k1"));
}

/// A sender that fails the first `failures` sends, and counts every send.
struct Flaky {
    failures: usize,
    permanent: bool,
    sends: AtomicUsize,
    seen: Mutex<Vec<String>>,
}

impl Sender for Flaky {
    fn kind(&self) -> &'static str {
        "test"
    }

    fn batch(&self) -> usize {
        10
    }

    fn send(&self, items: &[OutboxItem]) -> Result<Sent, SendError> {
        let n = self.sends.fetch_add(1, Ordering::SeqCst);
        self.seen.lock().expect("a lock").extend(items.iter().map(|i| i.dedupe_key.clone()));
        if n < self.failures {
            return Err(if self.permanent {
                SendError::permanent("the receiver refused it (HTTP 422)")
            } else {
                SendError::transient("the receiver answered HTTP 503")
            });
        }
        Ok(Sent(json!(null)))
    }
}

fn policy() -> Policy {
    Policy {
        base: Duration::from_secs(10),
        max: Duration::from_secs(60),
        max_attempts: 3,
        lease: Duration::from_secs(300),
        poll: Duration::from_millis(20),
        claim: 100,
    }
}

async fn pass(worker: &Arc<Worker>) -> outbox::Pass {
    let worker = Arc::clone(worker);
    tokio::task::spawn_blocking(move || worker.pass()).await.expect("no panic").expect("a pass")
}

/// Failed sends back off (nothing is tried again before its time), each attempt is
/// audited, and after `max_attempts` the message is `failed` until a person retries it;
/// then it is sent.
async fn failures_back_off_then_fail_until_retried_by_hand() {
    let server = Server::new();
    let episode = open_episode(&server.state.db, "team-north");
    owe(&server, episode, "k1");
    owe(&server, episode, "k2");
    let flaky = Arc::new(Flaky { failures: 3, permanent: false, sends: AtomicUsize::new(0), seen: Mutex::default() });
    let worker = Arc::new(Worker::new(
        server.state.db.clone(),
        server.state.clock.clone(),
        vec![Arc::clone(&flaky) as Arc<dyn Sender>],
        policy(),
    ));
    let first = pass(&worker).await;
    assert_eq!((first.claimed, first.sent, first.failed), (2, 0, 2), "one send of both, failed");
    assert_eq!(flaky.sends.load(Ordering::SeqCst), 1);
    let rows = server.rows("SELECT state, attempts, last_error FROM outbox ORDER BY id");
    assert_eq!(rows[0], vec![Some("retrying".into()), Some("1".into()), Some("the receiver answered HTTP 503".into())]);
    // Not before its backoff (at least half of 10 s).
    server.advance(4);
    assert_eq!(pass(&worker).await.claimed, 0);
    server.advance(7);
    assert_eq!(pass(&worker).await.failed, 2);
    server.advance(21);
    assert_eq!(pass(&worker).await.failed, 2);
    assert_eq!(server.rows("SELECT DISTINCT state FROM outbox"), vec![vec![Some("failed".into())]]);
    server.advance(3600);
    assert_eq!(pass(&worker).await.claimed, 0, "a failed message waits for a person");
    let counts = server.db(|conn| conn.outbox_counts(&"team-north".parse().expect("a team"))).expect("counts");
    assert_eq!(counts.len(), 1);
    assert_eq!((counts[0].state.as_str(), counts[0].count), ("failed", 2));
    assert_eq!(counts[0].last_error.as_deref(), Some("the receiver answered HTTP 503"));
    assert!(server.db(|conn| conn.outbox_counts(&"team-south".parse().expect("a team"))).expect("counts").is_empty());

    let retried = server.db(|conn| outbox::retry(conn, "test", Some(episode), server.state.clock.now())).expect("ok");
    assert_eq!(retried, 2);
    assert_eq!(pass(&worker).await.sent, 2);
    assert_eq!(server.rows("SELECT DISTINCT state FROM outbox"), vec![vec![Some("sent".into())]]);
    assert!(server.db(|conn| conn.outbox_counts(&"team-north".parse().expect("a team"))).expect("counts").is_empty());
    // Every outcome is in the audit log, as the server's own, naming the message.
    let actions =
        server.rows(&format!("SELECT action, user_id, via, detail FROM audit WHERE episode = '{episode}' ORDER BY n"));
    let of = |action: &str| actions.iter().filter(|r| r[0].as_deref() == Some(action)).count();
    assert_eq!((of("outbox_retry"), of("outbox_failed"), of("outbox_sent")), (4, 2, 2), "{actions:?}");
    assert!(
        actions.iter().all(|r| r[1].as_deref() == Some(server::audit::SERVER) && r[2].as_deref() == Some("server"))
    );
    assert!(actions.iter().any(|r| r[3].as_deref() == Some("test k1")));
    let verified = server.db(|conn| server::audit::verify(conn)).expect("a chain");
    assert!(verified.is_ok(), "the audit chain holds");
}

/// A refusal that trying again cannot mend fails the message at once.
async fn a_permanent_failure_is_not_retried() {
    let server = Server::new();
    let episode = open_episode(&server.state.db, "team-north");
    owe(&server, episode, "k1");
    let flaky = Arc::new(Flaky { failures: 1, permanent: true, sends: AtomicUsize::new(0), seen: Mutex::default() });
    let worker = Arc::new(Worker::new(
        server.state.db.clone(),
        server.state.clock.clone(),
        vec![Arc::clone(&flaky) as Arc<dyn Sender>],
        policy(),
    ));
    assert_eq!(pass(&worker).await.failed, 1);
    assert_eq!(server.rows("SELECT state FROM outbox"), vec![vec![Some("failed".into())]]);
}

/// The running worker sends what is owed without being asked, and stops when its last
/// handle is dropped.
async fn the_running_worker_sends_what_is_owed() {
    let server = Server::new();
    let episode = open_episode(&server.state.db, "team-north");
    let flaky = Arc::new(Flaky { failures: 0, permanent: false, sends: AtomicUsize::new(0), seen: Mutex::default() });
    let running = Worker::new(
        server.state.db.clone(),
        server.state.clock.clone(),
        vec![Arc::clone(&flaky) as Arc<dyn Sender>],
        policy(),
    )
    .start()
    .expect("started");
    owe(&server, episode, "k1");
    running.nudge();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while server.number("SELECT COUNT(*) FROM outbox WHERE state = 'sent'") < 1 {
        assert!(std::time::Instant::now() < deadline, "the worker sent nothing");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop(running);
    assert_eq!(*flaky.seen.lock().expect("a lock"), vec!["k1".to_owned()]);
}

/// `tether outbox retry` makes an episode's failed messages due again, and no other's.
async fn failed_messages_are_retried_by_hand_from_the_command_line() {
    let server = Server::new();
    let episode = open_episode(&server.state.db, "team-north");
    let other = open_episode(&server.state.db, "team-north");
    owe(&server, episode, "k1");
    owe(&server, other, "k2");
    server.db(|conn| conn.inspect_execute("UPDATE outbox SET state = 'failed', attempts = 12")).expect("failed");
    let run = |args: &[&str]| {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_tether"))
            .args(args)
            .env("TETHER_DB", &server.dir.arg)
            .output()
            .expect("run tether");
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
        String::from_utf8_lossy(&output.stdout).into_owned()
    };
    let episode_arg = episode.to_string();
    let said = run(&["outbox", "retry", "--kind", "test", "--episode", &episode_arg]);
    assert!(said.contains("1 failed test message(s) due again"), "{said}");
    let rows = server.rows("SELECT dedupe_key, state, attempts FROM outbox ORDER BY dedupe_key");
    assert_eq!(
        rows,
        vec![
            vec![Some("k1".into()), Some("pending".into()), Some("0".into())],
            vec![Some("k2".into()), Some("failed".into()), Some("12".into())],
        ]
    );
    assert!(run(&["outbox", "retry", "--kind", "test"]).contains("1 failed"));
    assert!(run(&["outbox", "retry", "--kind", "test"]).contains("0 failed"));
}

common::backends!(
    failed_messages_are_retried_by_hand_from_the_command_line,
    a_message_is_owed_once_and_only_with_its_cause,
    a_claim_is_a_lease_and_a_lapsed_claim_finishes_nothing,
    failures_back_off_then_fail_until_retried_by_hand,
    a_permanent_failure_is_not_retried,
    the_running_worker_sends_what_is_owed,
);

/// On PostgreSQL, eight connections claiming at once (as replicas would) never take the
/// same message, and between them take them all.
#[test]
fn needs_postgres_concurrent_claims_never_overlap() {
    set_backend(Backend::Postgres);
    let server = Server::new();
    let episode = open_episode(&server.state.db, "team-north");
    for n in 0..400 {
        owe(&server, episode, &format!("k{n}"));
    }
    let t = start().as_millisecond();
    let together = std::sync::Barrier::new(8);
    let claimed: Vec<Vec<i64>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..8)
            .map(|_| {
                let db = server.state.db.clone();
                let together = &together;
                scope.spawn(move || {
                    // The pool has opened a connection for each before any claims.
                    db.call_blocking(|conn| conn.current_seq()).expect("a connection");
                    together.wait();
                    let mut mine = Vec::new();
                    loop {
                        let items =
                            db.call_blocking(|conn| conn.claim_outbox("test", t, t + 60_000, 7)).expect("a claim");
                        if items.is_empty() {
                            return mine;
                        }
                        mine.extend(items.iter().map(|i| i.id));
                    }
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().expect("no panic")).collect()
    });
    let all: Vec<i64> = claimed.iter().flatten().copied().collect();
    let distinct: HashSet<i64> = all.iter().copied().collect();
    assert_eq!(all.len(), 400, "every message claimed once");
    assert_eq!(distinct.len(), 400, "no message claimed twice");
}
