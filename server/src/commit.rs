//! Group commit for sync requests: the requests that arrive while one batch is being
//! written are written together, in one transaction and so with one fsync, each inside
//! its own savepoint — a refused request rolls back to its savepoint and stores nothing,
//! without disturbing the others. Every request is answered only after the transaction
//! holding it has committed, so a device is never told the server has what it has not.
//!
//! A writer thread takes whatever requests are waiting as its batch; on SQLite one
//! writer, on PostgreSQL [`POSTGRES_WRITERS`], each on a connection of its own, so that
//! one computes while another waits for the database. A batch works on its own
//! documents (`episodes::Working`), put back in the shared cache once it has committed;
//! writers of one episode are ordered by its compare-and-set, as replicas are
//! (docs/adr/0004-storage.md). The fsync is most of a small sync's cost on a disk
//! (about 3 ms here, see `docs/adr/0002-sync.md`): sharing it is what lets the server
//! take many devices at once.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Arc, Mutex, PoisonError, mpsc};

use episode::EpisodeId;
use episode::sync as protocol;
use jiff::Timestamp;
use tokio::sync::oneshot;

use crate::auth::AuthUser;
use crate::episodes::{Cache, Working};
use crate::error::AppError;
use crate::store::{Conn, Db, Numbered, PROVISIONAL_SEQ, StoreError};
use crate::sync::handle;

/// The most requests written in one transaction, unless `tether serve --sync-batch` says
/// otherwise (1 writes each request alone, as before group commit: for comparison).
pub const DEFAULT_BATCH: usize = 64;

/// The sync writers on PostgreSQL. Each writer alternates between its own work
/// (Automerge, the pathway) and waiting on the database; two keep both busy on two
/// cores (BENCHMARKS.md). SQLite has one connection, so one writer.
pub const POSTGRES_WRITERS: usize = 2;

/// A sync request waiting for the writer.
struct Job {
    user: AuthUser,
    request: protocol::Request,
    now: Timestamp,
    /// Carries no change of any document (only acknowledgements and "anything new?").
    light: bool,
    /// The request's span, entered while it is handled, so that its logs stay its own.
    span: tracing::Span,
    reply: oneshot::Sender<Result<protocol::Response, AppError>>,
}

/// The handle on the sync writer thread; it stops when the last handle is dropped.
#[derive(Clone, Debug)]
pub struct Committer {
    jobs: mpsc::Sender<Job>,
}

impl Committer {
    /// Starts the writers over the database and the document cache.
    pub fn start(db: Db, docs: Arc<Mutex<Cache>>, max_batch: usize) -> anyhow::Result<Self> {
        let (jobs, queue) = mpsc::channel();
        let queue = Arc::new(Mutex::new(queue));
        let max_batch = max_batch.max(1);
        let writers = if db.writes_concurrently() { POSTGRES_WRITERS } else { 1 };
        for n in 0..writers {
            let (db, docs, queue) = (db.clone(), Arc::clone(&docs), Arc::clone(&queue));
            std::thread::Builder::new()
                .name(format!("tether-sync-writer-{n}"))
                .spawn(move || run(&db, &docs, &queue, max_batch))?;
        }
        Ok(Self { jobs })
    }

    /// Hands a request to the writer and waits for its answer, given once its
    /// transaction has committed.
    pub(crate) async fn submit(
        &self,
        user: AuthUser,
        request: protocol::Request,
        now: Timestamp,
        light: bool,
    ) -> Result<protocol::Response, AppError> {
        let (reply, answer) = oneshot::channel();
        let job = Job { user, request, now, light, span: tracing::Span::current(), reply };
        self.jobs.send(job).map_err(|_| AppError::internal(anyhow::anyhow!("the sync writer has stopped")))?;
        answer.await.map_err(|_| AppError::internal(anyhow::anyhow!("the sync writer dropped a request")))?
    }
}

fn run(db: &Db, docs: &Mutex<Cache>, queue: &Mutex<mpsc::Receiver<Job>>, max_batch: usize) {
    while let Some(batch) = next_batch(queue, max_batch) {
        let mut tries = 0;
        let answers = loop {
            tries += 1;
            match db.call_blocking(|conn| write(conn, docs, &batch)) {
                Ok(answers) => break answers,
                // PostgreSQL broke a deadlock by failing the batch at commit: nothing of
                // it was stored, and it is written again rather than answered with an
                // error. The server's own writers lock an episode's row before the
                // counter, so none should close such a cycle (docs/adr/0004-storage.md,
                // "Lock order"); this is the defence if one ever does.
                Err(error) if error.is_transient() && tries < BATCH_TRIES => {
                    tracing::warn!(error = %error, tries, "a sync batch was written again after a transient failure");
                }
                Err(error) => {
                    let message = format!("{error:#}");
                    break batch
                        .iter()
                        .map(|_| Err(AppError::internal(anyhow::anyhow!("the sync could not be stored: {message}"))))
                        .collect();
                }
            }
        };
        for (job, answer) in batch.into_iter().zip(answers) {
            // A client that has gone away no longer wants its answer; what it sent is stored.
            let _ = job.reply.send(answer);
        }
    }
}

/// The requests waiting, up to `max_batch`, once there is one; `None` once the last
/// handle is dropped. The queue is held while waiting, so writers take turns.
fn next_batch(queue: &Mutex<mpsc::Receiver<Job>>, max_batch: usize) -> Option<Vec<Job>> {
    let queue = queue.lock().unwrap_or_else(PoisonError::into_inner);
    let mut batch = vec![queue.recv().ok()?];
    while batch.len() < max_batch {
        match queue.try_recv() {
            Ok(job) => batch.push(job),
            Err(_) => break,
        }
    }
    Some(batch)
}

/// How often a request whose episode another writer changed meanwhile is handled again.
const CONFLICT_TRIES: usize = 8;

/// How often a batch whose transaction failed for a reason that passes
/// (`StoreError::is_transient`) is written.
const BATCH_TRIES: usize = 3;

/// Writes a batch in one transaction; one answer per job, in order. An error: the
/// transaction failed, and nothing of the batch is stored.
fn write(
    conn: &mut dyn Conn,
    docs: &Mutex<Cache>,
    batch: &[Job],
) -> Result<Vec<Result<protocol::Response, AppError>>, StoreError> {
    // The batch's documents, kept apart from the cache until it commits.
    let mut cache = Working::new(docs);
    // Every record, hand-over or new episode is synced to disk before the answer. A batch
    // that can store none of those (only messages without changes) moves only sync states
    // and holdings, whose loss in a power cut costs a repeated message, never a record:
    // it commits without waiting for the disk (the next full commit syncs it too). A
    // process that dies loses nothing either way.
    let light = batch.iter().all(|job| job.light);
    let result = (|| {
        let mut tx = if light { conn.light_transaction()? } else { conn.transaction()? };
        // The counter and the audit head are taken only at commit (PostgreSQL): another
        // replica's batch is held up for the commit, not for this whole batch's work.
        tx.number_at_commit();
        let mut answers = Vec::with_capacity(batch.len());
        // Each request's provisional numbers, and the episodes it answered at one, with
        // their teams.
        let mut provisional: Vec<Provisional> = Vec::with_capacity(batch.len());
        for job in batch {
            let _entered = job.span.enter();
            let request = &job.request;
            let mut tries = 0;
            let mut lost: Vec<EpisodeId> = Vec::new();
            let mut own = Provisional::default();
            let answer = loop {
                tries += 1;
                tx.savepoint()?;
                own.taken = tx.provisional_mark()..tx.provisional_mark();
                // Lost a race: this time nobody else changes those episodes until this
                // commits. A lock on an episode can deadlock with another writer's, which
                // PostgreSQL breaks by failing one: that request is tried again too.
                match lost.iter().try_for_each(|&id| tx.lock_episode(id)) {
                    Ok(()) => {}
                    Err(StoreError::Conflict(id)) if tries < CONFLICT_TRIES => {
                        tx.rollback_to_savepoint()?;
                        cache.forget(id);
                        continue;
                    }
                    Err(error) => return Err(error),
                }
                let handled =
                    catch_unwind(AssertUnwindSafe(|| handle(&mut *tx, &mut cache, &job.user, request, job.now)));
                match handled {
                    Ok(Ok((response, used))) => {
                        tx.release_savepoint()?;
                        own.taken.end = tx.provisional_mark();
                        // Current within this transaction; if it fails to commit, the working
                        // set is dropped below, so memory never keeps what the disk lacks.
                        for stored in used {
                            if stored.seq() >= PROVISIONAL_SEQ {
                                own.answered.push((stored.id(), stored.seq(), stored.team().to_owned()));
                            }
                            cache.put(stored);
                        }
                        break Ok(response);
                    }
                    Ok(Err(AppError::Store(StoreError::Conflict(id)))) if tries < CONFLICT_TRIES => {
                        // Another writer changed the episode since it was read: again, from
                        // what is stored now.
                        tx.rollback_to_savepoint()?;
                        cache.forget(id);
                        if !lost.contains(&id) {
                            lost.push(id);
                        }
                        tracing::debug!(episode = %id, tries, "sync request retried after a concurrent write");
                    }
                    Ok(Err(refused)) => {
                        tx.rollback_to_savepoint()?;
                        break Err(refused);
                    }
                    Err(_) => {
                        tx.rollback_to_savepoint()?;
                        tracing::error!("a sync request panicked; nothing of it was stored");
                        break Err(AppError::internal(anyhow::anyhow!("the sync request could not be handled")));
                    }
                }
            };
            answers.push(answer);
            provisional.push(own);
        }
        let numbered = tx.commit_numbered()?;
        Ok::<_, StoreError>((answers, provisional, numbered))
    })();
    match result {
        Ok((mut answers, provisional, numbered)) => {
            if !numbered.seqs.is_empty() {
                for (id, seq, _) in provisional.iter().flat_map(|p| &p.answered) {
                    if let Some(final_seq) = numbered.final_of(*seq) {
                        cache.renumber(*id, *seq, final_seq);
                    }
                }
                advance_cursors(batch, &mut answers, &provisional, &numbered);
            }
            cache.commit();
            Ok(answers)
        }
        // Nothing of the batch is stored: neither may the cache keep any of it (the
        // working set is dropped unused).
        Err(error) => Err(error),
    }
}

/// What one request of a batch numbered provisionally (`Transaction::number_at_commit`).
#[derive(Debug, Default)]
struct Provisional {
    /// The provisional numbers it took (its changes, receipts, drops).
    taken: std::ops::Range<i64>,
    /// The episodes it answered at a provisional number (its own changes, or a
    /// batch-mate's it sent on), with their teams.
    answered: Vec<(EpisodeId, i64, String)>,
}

/// Moves a request's cursor past its own changes where that skips nothing: numbered at
/// commit, they come after the horizon the request answered up to, and a cursor left at
/// the horizon would bring them back to the device at its next sync. The cursor may
/// move to the request's last own `seq` only if its answer was not cut short, no other
/// transaction committed a change between its horizon and this commit, and every other
/// number this batch gave below it is one the device would not be answered: a change of
/// an episode of another team, or another device's drop. docs/adr/0004-storage.md,
/// "Numbering at commit".
fn advance_cursors(
    batch: &[Job],
    answers: &mut [Result<protocol::Response, AppError>],
    provisional: &[Provisional],
    numbered: &Numbered,
) {
    // The team of each episode the batch answered at a final number.
    let mut teams: std::collections::HashMap<i64, &str> = std::collections::HashMap::new();
    for (_, seq, team) in provisional.iter().flat_map(|p| &p.answered) {
        if let Some(final_seq) = numbered.final_of(*seq) {
            teams.insert(final_seq, team.as_str());
        }
    }
    // Which request took each final number.
    let mut takers: std::collections::HashMap<i64, usize> = std::collections::HashMap::new();
    for (n, p) in provisional.iter().enumerate() {
        for seq in p.taken.clone() {
            if let Some(final_seq) = numbered.final_of(seq) {
                takers.insert(final_seq, n);
            }
        }
    }
    for ((job, answer), p) in batch.iter().zip(answers.iter_mut()).zip(provisional) {
        let Ok(response) = answer else { continue };
        let mut own: Vec<i64> = p.taken.clone().filter_map(|seq| numbered.final_of(seq)).collect();
        own.extend(p.answered.iter().filter_map(|(_, seq, _)| numbered.final_of(*seq)));
        let Some(&last) = own.iter().max() else { continue };
        if response.more || i64::try_from(response.cursor).ok() != Some(numbered.before) {
            continue;
        }
        let device = &job.user.device_id;
        let skips_nothing = (numbered.before + 1..=last).all(|seq| {
            own.contains(&seq)
                || match (teams.get(&seq), takers.get(&seq)) {
                    (Some(team), _) => !job.user.teams.iter().any(|t| t.as_str() == *team),
                    // Not an episode's change: a drop, which only its device is answered.
                    (None, Some(&taker)) => batch.get(taker).is_some_and(|other| other.user.device_id != *device),
                    (None, None) => false,
                }
        });
        if skips_nothing && let Ok(cursor) = u64::try_from(last) {
            response.cursor = cursor;
        }
    }
}
