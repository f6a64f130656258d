//! The storage boundary itself (docs/adr/0004-storage.md): `seq` becomes visible in commit
//! order so a device's cursor never passes a slower writer's change; two writers of one
//! episode through two handles (as two replicas would) lose nothing; damaged state is an
//! error that names what is damaged; old schemas upgrade with their rows; and a
//! `postgres://` URL's password never appears in what the `tether` command prints.
//!
//! Tests on both backends go through `common::backends!`; the ones only PostgreSQL can
//! show (concurrent transactions) are in `postgres_only`, run as `needs_postgres::…`.

mod common;

use std::process::{Command, Stdio};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use automerge::ActorId;
use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use common::*;
use episode::EpisodeId;
use episode::document::{EpisodeDoc, Opening};
use episode::sync::{self as protocol, Response};
use episode::{Event, Pathway, PatientRef};
use jiff::Timestamp;
use server::outbox;
use server::store::{Db, OutboxItem, StoreError};
use server::{AppState, Clock, episodes};

const START: &str = "2026-03-02T09:00:00Z";

fn start() -> Timestamp {
    START.parse().expect("a time")
}

/// A transaction on a connection of its own that does `first`, says so on the first
/// channel, waits for word on the second, does `then` and commits.
fn paused_transaction(
    db: Db,
    first: impl FnOnce(&mut dyn server::store::Tx) -> Result<(), StoreError> + Send + 'static,
    then: impl FnOnce(&mut dyn server::store::Tx) -> Result<(), StoreError> + Send + 'static,
) -> (mpsc::Receiver<()>, mpsc::Sender<()>, std::thread::JoinHandle<Result<(), StoreError>>) {
    let (holding, held) = mpsc::channel();
    let (go, wait) = mpsc::channel::<()>();
    let running = std::thread::spawn(move || {
        db.call_blocking(move |conn| {
            let mut tx = conn.transaction()?;
            first(&mut *tx)?;
            let _ = holding.send(());
            let _ = wait.recv();
            then(&mut *tx)?;
            tx.commit()
        })
    });
    (held, go, running)
}

/// Waits (up to 30 s) until a session of the test's database waits for a lock: whether
/// one did.
fn one_waits_for_a_lock(db: &Db) -> bool {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        let waiting = db
            .call_blocking(|conn| {
                conn.inspect(
                    "SELECT COUNT(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND datname = current_database()",
                )
            })
            .expect("pg_stat_activity");
        if number(&waiting) > 0 {
            return true;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    false
}

/// A new episode of `team` opened at the tests' start.
fn open_episode(db: &Db, team: &str, patient: &str) -> EpisodeId {
    store_new_episode(db, team, patient, start())
}

/// Sends one sync request of `documents` from `cursor`; the status and the body.
async fn post_sync(
    server: &Server,
    token: &str,
    cursor: u64,
    documents: Vec<protocol::Document>,
) -> (StatusCode, Vec<u8>) {
    let request =
        protocol::Request { protocol: protocol::PROTOCOL, cursor, device_time_ms: start().as_millisecond(), documents };
    let http = Request::builder()
        .method(Method::POST)
        .uri("/v1/sync")
        .header(header::AUTHORIZATION, format!("Bearer {token}"))
        .header(header::CONTENT_TYPE, protocol::CONTENT_TYPE)
        .body(Body::from(request.encode()))
        .expect("a request");
    let (status, _, bytes) = server.send_raw(http).await;
    (status, bytes)
}

/// One sync request carrying nothing but the cursor; the answer.
async fn sync(server: &Server, token: &str, cursor: u64) -> Response {
    let (status, bytes) = post_sync(server, token, cursor, Vec::new()).await;
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&bytes));
    Response::decode(&bytes).expect("a sync response")
}

fn answered(response: &Response) -> Vec<EpisodeId> {
    let mut ids: Vec<EpisodeId> = response.actions.iter().map(|a| a.episode).collect();
    ids.sort();
    ids
}

/// A change to an episode in a transaction of its own: loads, records, stores (taking its
/// `seq`), then tells `taken` and waits for `go` before it commits.
fn slow_write(db: Db, id: EpisodeId, taken: mpsc::Sender<i64>, go: mpsc::Receiver<()>) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        db.call_blocking(move |conn| {
            let mut tx = conn.transaction()?;
            let mut stored = episodes::load(&mut *tx, id, &ActorId::from(vec![2; 16]))?.expect("the episode");
            stored.with_doc(|doc| doc.set_plan("a plan written slowly", start())).expect("a change");
            save(&mut *tx, &mut stored)?;
            let _ = taken.send(stored.seq());
            let _ = go.recv();
            tx.commit()
        })
        .expect("the slow write");
    })
}

/// Stores what was changed in `stored` (within its budget) with a new `seq`.
fn save(tx: &mut dyn server::store::Tx, stored: &mut episodes::Stored) -> Result<(), StoreError> {
    let bytes = episodes::pending_changes(stored).expect("within the budget");
    episodes::save_changes(tx, stored, &bytes)
}

/// The tests only PostgreSQL can run: transactions at once on several connections.
mod postgres_only {
    use super::*;

    /// Writer A takes `seq` n and stalls before committing; writer B wants n + 1; a
    /// device syncs between them. Had B's change become visible first, the device's
    /// cursor would pass n and A's change would never reach it.
    pub(super) async fn a_slow_writer_never_loses_its_change_to_a_faster_one() {
        let server = Server::new();
        let (x, y) =
            (open_episode(&server.state.db, "team-north", "P-1"), open_episode(&server.state.db, "team-north", "P-2"));
        let (token, _) = server.alice("phone-reader").await;
        let first = sync(&server, &token, 0).await;
        assert_eq!(answered(&first), {
            let mut both = vec![x, y];
            both.sort();
            both
        });

        // A takes its seq and holds it.
        let (a_taken, a_seq) = mpsc::channel();
        let (a_go, a_wait) = mpsc::channel();
        let a = slow_write(server.dir.open(), x, a_taken, a_wait);
        let a_seq = a_seq.recv_timeout(Duration::from_secs(30)).expect("A took its seq");
        assert!(a_seq > i64::try_from(first.cursor).expect("a cursor"));
        // B tries to take the next and must wait for A.
        let (b_taken, b_seq) = mpsc::channel();
        let (b_go, b_wait) = mpsc::channel();
        b_go.send(()).expect("B may commit at once");
        let b = slow_write(server.dir.open(), y, b_taken, b_wait);
        let waited = Instant::now();
        while server.number("SELECT COUNT(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'") == 0 {
            assert!(waited.elapsed() < Duration::from_secs(30), "B never waited for A's seq");
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(b_seq.try_recv().is_err(), "B took a seq while A held the counter");

        // The device syncs now: nothing is committed, and its cursor must not move past A.
        let between = sync(&server, &token, first.cursor).await;
        assert!(answered(&between).is_empty(), "nothing is committed yet");
        assert!(between.cursor < u64::try_from(a_seq).expect("a seq"), "the cursor passed an uncommitted seq");

        a_go.send(()).expect("A commits");
        a.join().expect("writer A");
        let b_seq = b_seq.recv_timeout(Duration::from_secs(30)).expect("B took its seq after A");
        b.join().expect("writer B");
        assert_eq!(b_seq, a_seq + 1);

        let after = sync(&server, &token, between.cursor).await;
        let mut both = vec![x, y];
        both.sort();
        assert_eq!(answered(&after), both, "both changes reach the device");
        assert_eq!(after.cursor, u64::try_from(b_seq).expect("a seq"));
    }

    /// Two writers that number at commit, as the sync writers of two replicas do: A
    /// stores its change and stalls before committing; B stores and commits meanwhile
    /// without waiting for A (neither holds the counter until it commits); a device
    /// syncs between them. B's change is numbered first, and A's, numbered when A
    /// commits, comes after the device's cursor: it reaches the device at its next sync.
    pub(super) async fn writers_that_number_at_commit_neither_wait_nor_skip() {
        let server = Server::new();
        let (x, y) =
            (open_episode(&server.state.db, "team-north", "P-1"), open_episode(&server.state.db, "team-north", "P-2"));
        let (token, _) = server.alice("phone-reader").await;
        let first = sync(&server, &token, 0).await;
        assert_eq!(answered(&first).len(), 2);

        let stored_and_committed = |db: Db, id: EpisodeId, stored: mpsc::Sender<i64>, go: mpsc::Receiver<()>| {
            std::thread::spawn(move || {
                db.call_blocking(move |conn| {
                    let mut tx = conn.transaction()?;
                    tx.number_at_commit();
                    let mut doc = episodes::load(&mut *tx, id, &ActorId::from(vec![2; 16]))?.expect("the episode");
                    doc.with_doc(|doc| doc.set_plan("a plan numbered at commit", start())).expect("a change");
                    save(&mut *tx, &mut doc)?;
                    let _ = stored.send(doc.seq());
                    let _ = go.recv();
                    let numbered = tx.commit_numbered()?;
                    Ok::<_, StoreError>(numbered.final_of(doc.seq()).expect("its change was numbered"))
                })
                .expect("the write")
            })
        };
        let (a_stored, a_provisional) = mpsc::channel();
        let (a_go, a_wait) = mpsc::channel();
        let a = stored_and_committed(server.dir.open(), x, a_stored, a_wait);
        let provisional = a_provisional.recv_timeout(Duration::from_secs(30)).expect("A stored its change");
        assert!(provisional >= server::store::PROVISIONAL_SEQ, "A's seq is provisional until it commits");

        let (b_stored, _b_provisional) = mpsc::channel();
        let (b_go, b_wait) = mpsc::channel();
        b_go.send(()).expect("B may commit at once");
        let b = stored_and_committed(server.dir.open(), y, b_stored, b_wait);
        let b_seq = b.join().expect("B committed while A was still open");
        assert_eq!(b_seq, i64::try_from(first.cursor).expect("a cursor") + 1, "B's change is numbered next");

        let between = sync(&server, &token, first.cursor).await;
        assert_eq!(answered(&between), [y], "B's change is committed, A's is not");
        assert_eq!(between.cursor, u64::try_from(b_seq).expect("a seq"));

        a_go.send(()).expect("A commits");
        let a_seq = a.join().expect("writer A");
        assert_eq!(a_seq, b_seq + 1, "A's change is numbered when A commits, after B's");
        let after = sync(&server, &token, between.cursor).await;
        assert_eq!(answered(&after), [x], "A's change reaches the device");
        assert_eq!(after.cursor, u64::try_from(a_seq).expect("a seq"));
        assert_eq!(server.number("SELECT COUNT(*) FROM episodes WHERE seq >= 4611686018427387904"), 0);
    }

    /// A sync batch holds an episode's row and, at commit, waits for the counter; a
    /// writer that took the counter before the row (as the office's did before it
    /// locked the row first; built here by hand) waits for that row. PostgreSQL breaks
    /// the deadlock by failing the batch, which began waiting first. Nothing of the batch was stored, and it is written again: the
    /// device is answered, not told 500, and its record is stored once beside the
    /// other writer's change.
    pub(super) async fn a_sync_batch_failed_to_break_a_deadlock_is_written_again() {
        let server = Server::new();
        let id = open_episode(&server.state.db, "team-north", "P-1");
        let (token, _) = server.alice("phone-x").await;
        let actor = ActorId::from(vec![6; 16]);
        // The phone's copy of the episode, with a record of alice's made on it.
        let stored = server.db(|conn| {
            let mut stored = episodes::load(conn, id, &actor).expect("a load").expect("the episode");
            stored.with_doc(|doc| doc.save_copy())
        });
        let mut doc = EpisodeDoc::load(&stored, ActorId::from(vec![7; 16])).expect("the phone's copy");
        let record = uuid::Uuid::now_v7();
        let event = Event::from_value(
            &serde_json::json!({"kind": "appointment_missed", "appointment": "initial", "id": record.to_string(),
                "at": start().to_string(), "by": "alice", "device": "phone-x"}),
            0,
        )
        .expect("a record");
        doc.record(&event).expect("recorded on the phone");

        // The other writer takes the counter, then waits to be told to write the episode.
        let (held, go, other) = paused_transaction(
            server.dir.open(),
            |tx| tx.lock_seq(),
            move |tx| {
                let mut stored = episodes::load(&mut *tx, id, &ActorId::from(vec![8; 16]))?.expect("the episode");
                stored.with_doc(|doc| doc.set_plan("the office's plan", start())).expect("a change");
                save(&mut *tx, &mut stored)
            },
        );
        held.recv_timeout(Duration::from_secs(30)).expect("the other writer holds the counter");
        // Once the batch waits at commit for the counter, the other writer goes for the
        // episode's row.
        let watcher = server.dir.open();
        let watch = std::thread::spawn(move || {
            let waited = one_waits_for_a_lock(&watcher);
            let _ = go.send(());
            waited
        });

        let whole = protocol::Document { episode: id, body: protocol::Body::Whole(doc.save()) };
        let (status, bytes) = post_sync(&server, &token, 0, vec![whole]).await;
        assert!(watch.join().expect("the watcher"), "the batch waited for the counter");
        other.join().expect("the other writer").expect("the other writer's change stands: the batch gave way");
        assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&bytes));
        assert!(Response::decode(&bytes).expect("a sync response").refused.is_empty());

        let (plan, events) = server.db(|conn| {
            let stored = episodes::load(conn, id, &actor).expect("a load").expect("the episode");
            let episode = stored.doc().episode().expect("an episode");
            (
                stored.doc().plan_text().expect("the plan"),
                episode.events.iter().map(|e| e.id.to_string()).collect::<Vec<_>>(),
            )
        });
        assert_eq!(plan, "the office's plan");
        assert_eq!(events, [record.to_string()], "the phone's record is stored once");
        assert_eq!(server.number("SELECT COUNT(*) FROM receipts"), 1);
    }

    /// A sync batch holds the rows of the episodes it wrote and takes the counter only
    /// when it commits. Every other writer of an episode — the office's record, a
    /// transfer — takes the episode's row before the counter, so while it waits for a
    /// batch's row it holds nothing the batch will want: the batch commits, then the
    /// writer, and PostgreSQL has no deadlock to break. (Taking the counter first, as
    /// these writers once did, left each batch failed and written again while the
    /// office wrote, three times over in one CI run, and then answered 500.)
    pub(super) async fn writers_outside_the_sync_batch_wait_for_its_row_holding_no_counter() {
        let server = Server::new();
        let (north, south) =
            (open_episode(&server.state.db, "team-north", "P-1"), open_episode(&server.state.db, "team-south", "P-2"));
        let sol = server.access("sol", "desk-sol").await;
        let office = {
            let state = server.state.clone();
            move || common::record_on(&state, north, 0).map(drop).map_err(|e| format!("{e:?}"))
        };
        let transfer = {
            let app = server.app.clone();
            let runtime = tokio::runtime::Handle::current();
            let request = Request::builder()
                .method(Method::POST)
                .uri(format!("/v1/episodes/{south}/transfer"))
                .header(header::AUTHORIZATION, format!("Bearer {sol}"))
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(serde_json::json!({"team": "team-north"}).to_string()))
                .expect("a request");
            move || {
                use tower::ServiceExt;
                let response = runtime.block_on(app.oneshot(request)).map_err(|e| format!("{e:?}"))?;
                match response.status() {
                    StatusCode::NO_CONTENT => Ok(()),
                    status => Err(format!("answered {status}")),
                }
            }
        };
        // A send whose success is kept as a change of its episode, as the EPR's filing is.
        let filed = open_episode(&server.state.db, "team-north", "P-3");
        server
            .db(|conn| {
                let mut tx = conn.transaction()?;
                outbox::enqueue(
                    &mut *tx,
                    "filing",
                    "k1",
                    Some("team-north"),
                    Some(filed),
                    &serde_json::json!({}),
                    start(),
                )?;
                tx.commit()
            })
            .expect("a message owed");
        let worker = outbox::Worker::new(
            server.dir.open(),
            server.state.clock.clone(),
            vec![Arc::new(Filing)],
            outbox::Policy {
                base: Duration::from_secs(10),
                max: Duration::from_secs(60),
                max_attempts: 3,
                lease: Duration::from_secs(300),
                poll: Duration::from_millis(20),
                claim: 10,
            },
        );
        let outbox = move || match worker.pass() {
            Ok(pass) if pass.sent == 1 => Ok(()),
            Ok(pass) => Err(format!("{pass:?}")),
            Err(e) => Err(format!("{e:?}")),
        };
        type Write = Box<dyn FnOnce() -> Result<(), String> + Send>;
        let writers: [(&str, EpisodeId, Write); 3] = [
            ("the office's record", north, Box::new(office)),
            ("a transfer", south, Box::new(transfer)),
            ("the outbox's record of a send", filed, Box::new(outbox)),
        ];
        for (name, id, write) in writers {
            // What a sync batch holds while it works, the episode's row, and what it
            // takes when it commits, the counter.
            let (held, go, batch) =
                paused_transaction(server.dir.open(), move |tx| tx.lock_episode(id), |tx| tx.lock_seq());
            held.recv_timeout(Duration::from_secs(30)).expect("the batch holds the episode");
            let writer = std::thread::spawn(write);
            assert!(one_waits_for_a_lock(&server.dir.open()), "{name} waits for the episode");
            let counter = server
                .dir
                .open()
                .call_blocking(|conn| conn.inspect("SELECT seq FROM change_seq FOR UPDATE NOWAIT"))
                .map(|_| ())
                .map_err(|e| e.to_string());
            assert_eq!(counter, Ok(()), "{name} holds no counter while it waits for the episode's row");
            go.send(()).expect("the batch commits");
            batch.join().expect("the batch").expect("the batch commits: nothing deadlocked");
            writer.join().expect("the writer").unwrap_or_else(|e| panic!("{name} is stored after the batch: {e}"));
        }
        assert_eq!(server.number("SELECT COUNT(*) FROM receipts"), 1, "the office's record, once");
        assert_eq!(
            server.rows(&format!("SELECT team FROM episodes WHERE id = '{south}'")),
            [[Some("team-north".into())]]
        );
        let plan = server.db(|conn| {
            let stored =
                episodes::load(conn, filed, &ActorId::from(vec![4; 16])).expect("a load").expect("the episode");
            stored.doc().plan_text().expect("the plan")
        });
        assert_eq!(plan, "filed", "the send is kept");
    }

    /// A sender that keeps its success as a change of the message's episode.
    struct Filing;

    impl outbox::Sender for Filing {
        fn kind(&self) -> &'static str {
            "filing"
        }

        fn send(&self, _: &[OutboxItem]) -> Result<outbox::Sent, outbox::SendError> {
            Ok(outbox::Sent(serde_json::json!(null)))
        }

        fn delivered(
            &self,
            tx: &mut dyn server::store::Tx,
            items: &[OutboxItem],
            _: &outbox::Sent,
            _: Timestamp,
        ) -> Result<(), server::AppError> {
            for id in items.iter().filter_map(|item| item.episode) {
                let mut stored = episodes::load(&mut *tx, id, &ActorId::from(vec![9; 16]))?.expect("the episode");
                stored.with_doc(|doc| doc.set_plan("filed", start())).expect("a change");
                save(&mut *tx, &mut stored)?;
            }
            Ok(())
        }
    }

    /// A write that loaded an episode before another writer changed it is refused as a
    /// conflict, not stored over the other's change.
    pub(super) async fn a_write_from_a_stale_load_is_a_conflict() {
        let server = Server::new();
        let id = open_episode(&server.state.db, "team-north", "P-1");
        let (first, second) = (server.dir.open(), server.dir.open());
        let actor = ActorId::from(vec![3; 16]);
        let outcome = first.call_blocking(|conn| {
            let mut tx = conn.transaction()?;
            let mut stale = episodes::load(&mut *tx, id, &actor)?.expect("the episode");
            // Meanwhile another handle changes it and commits.
            second.call_blocking(|other| {
                let mut tx = other.transaction()?;
                let mut fresh = episodes::load(&mut *tx, id, &actor)?.expect("the episode");
                fresh.with_doc(|doc| doc.set_plan("theirs", start())).expect("a change");
                save(&mut *tx, &mut fresh)?;
                tx.commit()
            })?;
            stale.with_doc(|doc| doc.set_plan("mine", start())).expect("a change");
            Ok::<_, StoreError>(save(&mut *tx, &mut stale))
        });
        let refused = outcome.expect("the transaction ran");
        assert!(matches!(refused, Err(StoreError::Conflict(c)) if c == id), "{refused:?}");
        let plan = server.db(|conn| {
            let stored = episodes::load(conn, id, &actor).expect("a load").expect("the episode");
            stored.doc().plan_text().expect("the plan")
        });
        assert_eq!(plan, "theirs", "the other writer's change stands");
    }

    /// Two handles on one database (as two replicas), each with its own document cache,
    /// record on one episode at once: every record of both is kept.
    pub(super) async fn two_writers_of_one_episode_lose_nothing() {
        let server = Server::new();
        let id = open_episode(&server.state.db, "team-north", "P-1");
        let clock = server.state.clock.clone();
        let replicas: Vec<AppState> = (0..2)
            .map(|_| {
                AppState::new(server.dir.open(), server.dir.jwt_secret().as_ref(), clock.clone()).expect("a replica")
            })
            .collect();
        const EACH: usize = 12;
        std::thread::scope(|scope| {
            for (n, replica) in replicas.iter().enumerate() {
                scope.spawn(move || {
                    for _ in 0..EACH {
                        record_on(replica, id, n).map(drop).expect("recorded, retried if need be");
                    }
                });
            }
        });
        let records = server.db(|conn| {
            let stored = episodes::load(conn, id, &ActorId::from(vec![4; 16])).expect("a load").expect("the episode");
            stored.doc().episode().expect("an episode").events.len()
        });
        assert_eq!(records, 2 * EACH);
        assert_eq!(server.number("SELECT COUNT(*) FROM receipts"), i64::try_from(2 * EACH).expect("a count"));
    }
}

mod needs_postgres {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_slow_writer_never_loses_its_change_to_a_faster_one() {
        crate::common::set_backend(crate::common::Backend::Postgres);
        super::postgres_only::a_slow_writer_never_loses_its_change_to_a_faster_one().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn writers_that_number_at_commit_neither_wait_nor_skip() {
        crate::common::set_backend(crate::common::Backend::Postgres);
        super::postgres_only::writers_that_number_at_commit_neither_wait_nor_skip().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_sync_batch_failed_to_break_a_deadlock_is_written_again() {
        crate::common::set_backend(crate::common::Backend::Postgres);
        super::postgres_only::a_sync_batch_failed_to_break_a_deadlock_is_written_again().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn writers_outside_the_sync_batch_wait_for_its_row_holding_no_counter() {
        crate::common::set_backend(crate::common::Backend::Postgres);
        super::postgres_only::writers_outside_the_sync_batch_wait_for_its_row_holding_no_counter().await;
    }

    #[tokio::test]
    async fn a_write_from_a_stale_load_is_a_conflict() {
        crate::common::set_backend(crate::common::Backend::Postgres);
        super::postgres_only::a_write_from_a_stale_load_is_a_conflict().await;
    }

    #[tokio::test]
    async fn two_writers_of_one_episode_lose_nothing() {
        crate::common::set_backend(crate::common::Backend::Postgres);
        super::postgres_only::two_writers_of_one_episode_lose_nothing().await;
    }

    #[test]
    fn a_urls_password_never_appears_when_it_is_wrong_or_the_database_is_missing() {
        crate::common::set_backend(crate::common::Backend::Postgres);
        super::a_urls_password_never_appears_when_it_is_wrong_or_the_database_is_missing();
    }

    #[test]
    fn serve_on_a_url_never_logs_its_password() {
        crate::common::set_backend(crate::common::Backend::Postgres);
        super::serve_on_a_url_never_logs_its_password();
    }
}

mod both {
    crate::common::backends!(
        a_damaged_seq_is_an_error_not_zero,
        a_damaged_server_actor_is_an_error_not_the_nil_uuid,
        an_unreadable_episode_id_is_an_error_not_skipped,
        every_old_schema_upgrades_with_its_rows,
    );

    use super::*;

    async fn a_damaged_seq_is_an_error_not_zero() {
        let server = Server::new();
        open_episode(&server.state.db, "team-north", "P-1");
        let (token, _) = server.alice("phone-1").await;
        let damage = match common::backend() {
            Backend::Sqlite => "UPDATE meta SET value = 'twelve' WHERE key = 'seq'",
            Backend::Postgres => "DELETE FROM change_seq",
        };
        server.db(|conn| conn.inspect_execute(damage).expect("damage"));
        let error = server.db(|conn| conn.current_seq()).expect_err("damaged");
        let message = error.to_string();
        let expected = match common::backend() {
            Backend::Sqlite => "meta.seq",
            Backend::Postgres => "change_seq.seq",
        };
        assert!(message.contains("damaged") && message.contains(expected), "{message}");
        // A sync is refused with the generic error, never answered from seq 0.
        let request =
            protocol::Request { protocol: protocol::PROTOCOL, cursor: 0, device_time_ms: 0, documents: Vec::new() };
        let http = Request::builder()
            .method(Method::POST)
            .uri("/v1/sync")
            .header(header::AUTHORIZATION, format!("Bearer {token}"))
            .body(Body::from(request.encode()))
            .expect("a request");
        let (status, _, body) = server.send(http).await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR, "{body}");
        assert_eq!(error_of(&body), "internal");
    }

    async fn a_damaged_server_actor_is_an_error_not_the_nil_uuid() {
        let server = Server::new();
        server.db(|conn| conn.set_meta("actor", "not a uuid").expect("damage"));
        let error = server.db(|conn| server::store::server_actor(conn)).expect_err("damaged");
        assert!(error.to_string().contains("meta.actor"), "{error}");
    }

    async fn an_unreadable_episode_id_is_an_error_not_skipped() {
        let server = Server::new();
        let id = open_episode(&server.state.db, "team-north", "P-1");
        server.db(|conn| {
            conn.inspect_execute(&format!("UPDATE episodes SET id = 'not-an-id' WHERE id = '{id}'")).expect("damage")
        });
        let error = server
            .db(|conn| conn.changed_since(&["team-north".parse().expect("a team")], 0, i64::MAX, 10))
            .expect_err("an id that is no UUID");
        let message = error.to_string();
        assert!(message.contains("episodes.id") && !message.contains("not-an-id"), "{message}");
    }

    /// A database built at each old schema from that schema's own SQL, with rows as a
    /// server of that version wrote them, is upgraded by opening it; the rows are read
    /// back through the server as it is now.
    async fn every_old_schema_upgrades_with_its_rows() {
        let schema = usize::try_from(server::db::SCHEMA).expect("a version");
        assert_eq!(server::store::POSTGRES_SCHEMA.len(), schema, "one PostgreSQL file for each SQLite schema");
        for version in 1..schema {
            let test_db = TestDb::new();
            Db::create_at_version(&test_db.target, version).expect("an old database");
            let old = old_rows(test_db.backend(), version);
            // The old database has no tables of later schemas: write with its own handle.
            test_db.write_raw(&old);
            let db = test_db.open();
            let schema_now = db.call_blocking(|conn| conn.schema_version()).expect("a version");
            assert_eq!(schema_now, server::db::SCHEMA, "from {version}");
            check_rows(&db, version);
            // And it serves: the old user signs in with the old password.
            let clock = Clock::from_fn(start);
            let state = AppState::new(db, test_db.jwt_secret().as_ref(), clock).expect("a state");
            let app = server::app(state);
            let request = Request::builder()
                .method(Method::POST)
                .uri("/v1/auth/login")
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(
                    serde_json::json!({"username": "olive", "password": PASSWORD, "device_id": "phone-new"})
                        .to_string(),
                ))
                .expect("a request");
            let response = tower::ServiceExt::oneshot(app, request).await.expect("a response");
            assert_eq!(response.status(), StatusCode::OK, "schema {version}: the old user signs in");
        }
    }
}

fn error_of(body: &serde_json::Value) -> String {
    body["error"]["code"].as_str().unwrap_or_default().to_owned()
}

/// The old episode: a real document, its snapshot and one change after it.
struct OldEpisode {
    id: EpisodeId,
    snapshot: Vec<u8>,
    change: Vec<u8>,
    event: String,
}

fn old_episode() -> OldEpisode {
    let id: EpisodeId = "01900000-0000-7000-8000-000000000001".parse().expect("an id");
    let opening = Opening {
        id,
        patient_ref: PatientRef::new("OLD-1").expect("a reference"),
        team: "team-old".into(),
        opened_at: start(),
        opened_by: "olive".into(),
        pathway: Pathway::RoutineReferral,
        facts: Vec::new(),
        plan: String::new(),
    };
    let mut doc = EpisodeDoc::open(&opening, ActorId::from(vec![5; 16])).expect("a document");
    let snapshot = doc.save();
    let Ok(serde_json::Value::Object(fields)) =
        serde_json::from_str(r#"{"method": "phone", "target": "patient", "outcome": "no_answer"}"#)
    else {
        panic!("fields")
    };
    let event_id = episode::EventId::from_uuid(uuid::Uuid::now_v7());
    let event =
        Event::new_record(event_id, "contact_attempt", start(), "olive", "phone-old", fields).expect("an event");
    doc.record(&event).expect("recorded");
    let change = doc.save_incremental();
    OldEpisode { id, snapshot, change, event: event_id.to_string() }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// What a server at `version` had written: a team, a user (with a real password hash), a
/// session and refresh token, a failed sign-in (from 6, per client, and a client's
/// count); from 2, an episode as a snapshot and a change, its sync state, receipt and a
/// drop, a revoked device; from 3, a summary and an audit entry (from 6, chained); from
/// 7, the device's registration.
fn old_rows(backend: Backend, version: usize) -> Vec<String> {
    let blob = |bytes: &[u8]| match backend {
        Backend::Sqlite => format!("X'{}'", hex(bytes)),
        Backend::Postgres => format!("'\\x{}'::bytea", hex(bytes)),
    };
    let no = match backend {
        Backend::Sqlite => "0",
        Backend::Postgres => "false",
    };
    let hash = server::auth::password::hash(&server::accounts::Password::new(PASSWORD.into()).expect("a password"))
        .expect("a hash");
    let mut rows = vec![
        "INSERT INTO teams (id, name, created_at) VALUES ('team-old', 'Old Team', '2026-01-01T00:00:00Z')".to_owned(),
        format!(
            "INSERT INTO users (id, username, password_hash, role, disabled, created_at) VALUES \
             ('user-olive', 'olive', '{hash}', 'practitioner', {no}, '2026-01-01T00:00:00Z')"
        ),
        "INSERT INTO user_teams (user_id, team_id) VALUES ('user-olive', 'team-old')".to_owned(),
        "INSERT INTO sessions (id, user_id, device_id, created_at) VALUES ('session-old', 'user-olive', 'phone-old', 1767225600)"
            .to_owned(),
        format!(
            "INSERT INTO refresh_tokens (hash, session_id, issued_at, expires_at) VALUES ({}, 'session-old', 1767225600, 1769817600)",
            blob(&[7; 32])
        ),
    ];
    // Schema 6 counts failures per client too; before it, they are not kept across it.
    if version >= 6 {
        rows.push(
            "INSERT INTO login_failures (username, client, failures, locked_until, updated_at) \
             VALUES ('someone', '192.0.2.1', 2, 0, 1767225600)"
                .to_owned(),
        );
        rows.push(
            "INSERT INTO client_failures (client, window_start, failures) VALUES ('192.0.2.1', 1767225600, 2)"
                .to_owned(),
        );
    } else {
        rows.push("INSERT INTO login_failures (username, failures, locked_until) VALUES ('someone', 2, 0)".to_owned());
    }
    // Schema 7 registers devices; before it, the upgrade registers each to its first user.
    if version >= 7 {
        rows.push(
            "INSERT INTO devices (id, user_id, key_hash, registered_at) VALUES ('phone-old', 'user-olive', NULL, 1767225600)"
                .to_owned(),
        );
    }
    if version >= 2 {
        let episode = old_episode();
        let id = episode.id;
        // Schema 2's SQLite server kept its counter in meta; PostgreSQL's in change_seq.
        rows.push(match backend {
            Backend::Sqlite => "INSERT INTO meta (key, value) VALUES ('seq', '3')".to_owned(),
            Backend::Postgres => "UPDATE change_seq SET seq = 3".to_owned(),
        });
        rows.push(format!(
            "INSERT INTO episodes (id, team, seq, snapshot, created_at) VALUES ('{id}', 'team-old', 2, {}, 1767225600)",
            blob(&episode.snapshot)
        ));
        rows.push(format!("INSERT INTO episode_changes (episode, bytes) VALUES ('{id}', {})", blob(&episode.change)));
        rows.push(format!(
            "INSERT INTO sync_states (episode, device, state) VALUES ('{id}', 'phone-old', {})",
            blob(&automerge::sync::State::new().encode())
        ));
        rows.push(if version >= 8 {
            format!(
                "INSERT INTO receipts (episode, event, received_at, device, seq) \
                 VALUES ('{id}', '{}', 1767225600000, 'phone-old', 2)",
                episode.event
            )
        } else {
            format!(
                "INSERT INTO receipts (episode, event, received_at, device) \
                 VALUES ('{id}', '{}', 1767225600000, 'phone-old')",
                episode.event
            )
        });
        rows.push(format!("INSERT INTO drops (episode, device, seq) VALUES ('{id}', 'phone-gone', 3)"));
        rows.push(
            "INSERT INTO revoked_devices (device, revoked_at, revoked_by) VALUES ('phone-lost', 1767225600, 'user-olive')"
                .to_owned(),
        );
    }
    if version >= 3 {
        let id = old_episode().id;
        rows.push(format!(
            "INSERT INTO summaries (episode, seq, pathway, patient_ref, open_actions, overdue_actions, conflicts, \
             duplicates, unfiled, next_due, evaluated_at) VALUES ('{id}', 2, 'routine_referral', 'OLD-1', 1, 0, 0, 0, 1, \
             1767312000, 1767225600)"
        ));
        if version >= 6 {
            // A chained entry, and the head at it.
            let row = server::audit::Row {
                n: 1,
                at: 1767225600000,
                user_id: "user-olive".into(),
                username: "olive".into(),
                device: "phone-old".into(),
                via: "sync".into(),
                action: "sync_open".into(),
                episode: Some(id.to_string()),
                detail: None,
            };
            let hash = server::audit::entry_hash(&server::audit::GENESIS, &row);
            rows.push(format!(
                "INSERT INTO audit (n, at, user_id, username, device, via, action, episode, detail, prev_hash, hash) \
                 VALUES (1, 1767225600000, 'user-olive', 'olive', 'phone-old', 'sync', 'sync_open', '{id}', NULL, {}, {})",
                blob(&server::audit::GENESIS),
                blob(&hash)
            ));
            rows.push(format!("UPDATE audit_head SET n = 1, hash = {} WHERE id = 1", blob(&hash)));
        } else {
            rows.push(format!(
                "INSERT INTO audit (at, user_id, username, device, via, action, episode, detail) VALUES \
                 (1767225600000, 'user-olive', 'olive', 'phone-old', 'sync', 'sync_open', '{id}', NULL)"
            ));
        }
    }
    rows
}

/// Reads back through the server what [`old_rows`] wrote at `version`.
fn check_rows(db: &Db, version: usize) {
    db.call_blocking(|conn| {
        let olive = server::accounts::UserId::new("user-olive");
        let user = server::accounts::active_user(conn, &olive)?.expect("the old user");
        assert_eq!(
            (user.username.as_str(), user.teams.as_slice()),
            ("olive", &["team-old".parse().expect("a team")][..])
        );
        assert!(conn.session_is_live("session-old", &olive)?);
        assert!(conn.presented_token(&[7; 32])?.is_some(), "the refresh token, by its hash");
        if version >= 6 {
            assert_eq!(conn.login_failures("someone", "192.0.2.1")?, Some((2, 0)));
            assert_eq!(conn.client_failures("192.0.2.1")?, Some((1767225600, 2)));
        }
        // Registered to the user of its first session, without a key (by the upgrade to
        // schema 7, or as written).
        let device = conn.device_registration(&"phone-old".parse().expect("a device id"))?.expect("the old device");
        assert_eq!((device.user_id.as_str(), device.key_hash), ("user-olive", None));
        if version >= 2 {
            let episode = old_episode();
            let mut stored = episodes::load(conn, episode.id, &ActorId::from(vec![6; 16]))?.expect("the old episode");
            assert_eq!((stored.team(), stored.seq()), ("team-old", 2));
            let view = stored.view(conn)?;
            assert_eq!(view.events.len(), 1, "the change after the snapshot");
            assert!(view.events[0].received_at.is_some(), "its receipt");
            // Noted before schema 8: it takes its episode's `seq`, so a device past that
            // has it and one before it is sent it.
            assert_eq!(episodes::receipts_since(conn, episode.id, Some(1))?.len(), 1);
            assert!(episodes::receipts_since(conn, episode.id, Some(2))?.is_empty());
            assert_eq!(conn.current_seq()?, 3);
            let device = |id: &str| server::accounts::DeviceId::try_from(id.to_owned()).expect("a device id");
            assert!(conn.sync_state(episode.id, &device("phone-old"))?.is_some());
            assert!(conn.dropped(episode.id, &device("phone-gone"))?);
            assert!(conn.device_revoked(&device("phone-lost"))?);
        }
        if version >= 3 {
            let episode = old_episode();
            let summaries = conn.summaries(&"team-old".parse().expect("a team"))?;
            assert_eq!(summaries.len(), 1);
            assert_eq!((summaries[0].id, summaries[0].unfiled), (episode.id, 1));
            let audit = conn.audit_entries(episode.id)?;
            assert_eq!(audit.len(), 1);
            assert_eq!(audit[0].action, "sync_open");
            // Chained by the upgrade to schema 6, or as written.
            let chain = server::audit::verify(conn)?.expect("the chain holds");
            assert_eq!(chain.entries, 1);
            // Still append-only after schema 9 made the table again, and it takes the
            // server's own entries.
            assert!(conn.inspect_execute("UPDATE audit SET detail = 'edited'").is_err(), "no update");
            assert!(conn.inspect_execute("DELETE FROM audit").is_err(), "no delete");
            let who = server::audit::Who::server(conn)?;
            server::audit::log(
                conn,
                &who,
                1767225600000,
                server::audit::AuditAction::OutboxSent,
                Some(episode.id),
                Some("epr x"),
            )?;
            assert_eq!(server::audit::verify(conn)?.expect("the chain holds").entries, 2);
        }
        Ok::<_, StoreError>(())
    })
    .expect("the old rows");
}

/// Runs `tether` with `args`; its exit status and everything it printed.
fn tether(args: &[&str]) -> (bool, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_tether"))
        .args(args)
        .env("TETHER_PASSWORD", "a user's password")
        .env_remove("TETHER_DB")
        .output()
        .expect("run tether");
    let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    (output.status.success(), text)
}

/// A host that refuses connections at once (nothing listens on port 1), so no PostgreSQL
/// is needed to see the message.
#[test]
fn an_unreachable_hosts_error_names_it_and_not_the_password() {
    let url = "postgres://tether:Sup3r-S3cret-pw@127.0.0.1:1/tetherdb";
    for args in [
        vec!["team", "add", "--db", url, "--id", "t", "--name", "T"],
        vec!["user", "add", "--db", url, "--username", "u", "--role", "admin", "--team", "t"],
        vec!["user", "disable", "--db", url, "--username", "u"],
        vec!["serve", "--db", url, "--addr", "127.0.0.1:0"],
    ] {
        let (ok, text) = tether(&args);
        assert!(!ok, "{args:?}: {text}");
        assert!(!text.contains("Sup3r-S3cret-pw"), "{args:?} printed the password: {text}");
        assert!(text.contains("127.0.0.1:1/tetherdb"), "{args:?} names the host and database: {text}");
    }
    // A URL clap cannot parse is still never quoted.
    let (ok, text) =
        tether(&["team", "add", "--db", "postgres://u:Sup3r-S3cret-pw@host:port/db", "--id", "t", "--name", "T"]);
    assert!(!ok && !text.contains("Sup3r-S3cret-pw"), "{text}");
}

fn a_urls_password_never_appears_when_it_is_wrong_or_the_database_is_missing() {
    let test_db = TestDb::new();
    let url = &test_db.arg;
    let Some((userinfo, rest)) = url.split_once("://").and_then(|(_, r)| r.split_once('@')) else {
        panic!("a URL with a user: {url}")
    };
    let user = userinfo.split_once(':').map_or(userinfo, |(u, _)| u);
    let wrong = format!("postgres://{user}:Wr0ng-Pa55word@{rest}");
    let (ok, text) = tether(&["team", "add", "--db", &wrong, "--id", "t", "--name", "T"]);
    assert!(!ok, "{text}");
    assert!(!text.contains("Wr0ng-Pa55word"), "the wrong password was printed: {text}");
    assert!(text.contains("password authentication failed") || text.contains("authentication"), "{text}");

    let real_password = userinfo.split_once(':').map(|(_, p)| p.to_owned()).unwrap_or_default();
    let missing = common::with_database(url, "no_such_tether_database");
    let (ok, text) = tether(&["team", "add", "--db", &missing, "--id", "t", "--name", "T"]);
    assert!(!ok, "{text}");
    assert!(text.contains("no_such_tether_database"), "the database is named: {text}");
    assert!(real_password.is_empty() || !text.contains(&real_password), "the password was printed: {text}");
}

fn serve_on_a_url_never_logs_its_password() {
    let test_db = TestDb::new();
    let url = test_db.arg.clone();
    let password = url.split_once("://").and_then(|(_, r)| r.split_once('@')).and_then(|(u, _)| u.split_once(':'));
    let Some((_, password)) = password else { panic!("the test URL carries a password") };
    let mut child = Command::new(env!("CARGO_BIN_EXE_tether"))
        .args(["serve", "--db", &url, "--addr", "127.0.0.1:0"])
        .env("TETHER_LOG", "debug")
        .env("TETHER_JWT_SECRET", common::POSTGRES_JWT_SECRET)
        .env_remove("TETHER_DB")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start tether serve");
    let mut line = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(child.stdout.take().expect("stdout is piped")), &mut line)
        .expect("the listening line");
    let _ = child.kill();
    let output = child.wait_with_output().expect("the server's output");
    let logs = String::from_utf8_lossy(&output.stderr);
    assert!(line.contains("listening"), "{line} {logs}");
    assert!(!logs.contains(password) && !line.contains(password), "the password was logged: {logs}");
    let database = url.rsplit('/').next().unwrap_or_default();
    assert!(logs.contains(&format!("/{database}")), "the log names the database: {logs}");
}
