//! Group commit for sync requests: the requests that arrive while one batch is being
//! written are written together, in one transaction and so with one fsync, each inside
//! its own savepoint — a refused request rolls back to its savepoint and stores nothing,
//! without disturbing the others. Every request is answered only after the transaction
//! holding it has committed, so a device is never told the server has what it has not.
//!
//! One writer thread owns the batching; the document cache's lock orders it with every
//! other route that changes episodes (and, on SQLite, the connection's lock too). The fsync is most of a small sync's cost on a disk (about 3 ms here, see
//! `docs/adr/0002-sync.md`): sharing it is what lets the server take many devices at once.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Arc, Mutex, PoisonError, mpsc};

use episode::sync as protocol;
use jiff::Timestamp;
use tokio::sync::oneshot;

use crate::auth::AuthUser;
use crate::episodes::Cache;
use crate::error::AppError;
use crate::store::{Conn, Db, StoreError};
use crate::sync::handle;

/// The most requests written in one transaction, unless `tether serve --sync-batch` says
/// otherwise (1 writes each request alone, as before group commit: for comparison).
pub const DEFAULT_BATCH: usize = 64;

/// A sync request waiting for the writer.
struct Job {
    user: AuthUser,
    request: Option<protocol::Request>,
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
    /// Starts the writer over the database and the document cache.
    pub fn start(db: Db, docs: Arc<Mutex<Cache>>, max_batch: usize) -> anyhow::Result<Self> {
        let (jobs, queue) = mpsc::channel();
        let max_batch = max_batch.max(1);
        std::thread::Builder::new()
            .name("tether-sync-writer".into())
            .spawn(move || run(&db, &docs, &queue, max_batch))?;
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
        let job = Job { user, request: Some(request), now, light, span: tracing::Span::current(), reply };
        self.jobs.send(job).map_err(|_| AppError::internal(anyhow::anyhow!("the sync writer has stopped")))?;
        answer.await.map_err(|_| AppError::internal(anyhow::anyhow!("the sync writer dropped a request")))?
    }
}

fn run(db: &Db, docs: &Mutex<Cache>, queue: &mpsc::Receiver<Job>, max_batch: usize) {
    while let Ok(first) = queue.recv() {
        let mut batch = vec![first];
        while batch.len() < max_batch {
            match queue.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let answers =
            db.call_blocking(|conn| Ok::<_, StoreError>(write(conn, docs, &mut batch))).unwrap_or_else(|error| {
                let message = format!("{error:#}");
                batch
                    .iter()
                    .map(|_| Err(AppError::internal(anyhow::anyhow!("the sync could not be stored: {message}"))))
                    .collect()
            });
        for (job, answer) in batch.into_iter().zip(answers) {
            // A client that has gone away no longer wants its answer; what it sent is stored.
            let _ = job.reply.send(answer);
        }
    }
}

/// How often a request whose episode another writer changed meanwhile is handled again.
const CONFLICT_TRIES: usize = 8;

/// Writes a batch in one transaction; one answer per job, in order.
fn write(conn: &mut dyn Conn, docs: &Mutex<Cache>, batch: &mut [Job]) -> Vec<Result<protocol::Response, AppError>> {
    // Nobody else changes the cache while the batch runs.
    let mut cache = docs.lock().unwrap_or_else(PoisonError::into_inner);
    // Every record, hand-over or new episode is synced to disk before the answer. A batch
    // that can store none of those (only messages without changes) moves only sync states
    // and holdings, whose loss in a power cut costs a repeated message, never a record:
    // it commits without waiting for the disk (the next full commit syncs it too). A
    // process that dies loses nothing either way.
    let light = batch.iter().all(|job| job.light);
    let result = (|| {
        let mut tx = if light { conn.light_transaction()? } else { conn.transaction()? };
        let mut answers = Vec::with_capacity(batch.len());
        for job in batch.iter_mut() {
            let _entered = job.span.enter();
            let Some(request) = job.request.take() else {
                answers.push(Err(AppError::internal(anyhow::anyhow!("a sync request was handled twice"))));
                continue;
            };
            let mut tries = 0;
            let answer = loop {
                tries += 1;
                tx.savepoint()?;
                if tries > 1 {
                    // Lost a race: this time nobody else stores a change until this commits.
                    tx.lock_seq()?;
                }
                let handled =
                    catch_unwind(AssertUnwindSafe(|| handle(&mut *tx, &mut cache, &job.user, &request, job.now)));
                match handled {
                    Ok(Ok((response, used))) => {
                        tx.release_savepoint()?;
                        // Current within this transaction; if it fails to commit, the whole
                        // cache is dropped below, so memory never keeps what the disk lacks.
                        for stored in used {
                            cache.put(stored);
                        }
                        break Ok(response);
                    }
                    Ok(Err(AppError::Store(StoreError::Conflict(id)))) if tries < CONFLICT_TRIES => {
                        // Another writer changed the episode since it was read: again, from
                        // what is stored now.
                        tx.rollback_to_savepoint()?;
                        cache.forget(id);
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
        }
        tx.commit()?;
        Ok::<_, StoreError>(answers)
    })();
    match result {
        Ok(answers) => answers,
        Err(error) => {
            // Nothing of the batch is stored: neither may the cache keep any of it.
            cache.clear();
            let message = format!("{error:#}");
            batch
                .iter()
                .map(|_| Err(AppError::internal(anyhow::anyhow!("the sync could not be stored: {message}"))))
                .collect()
        }
    }
}
