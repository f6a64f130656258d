//! Group commit for sync requests: the requests that arrive while one batch is being
//! written are written together, in one transaction and so with one fsync, each inside
//! its own savepoint — a refused request rolls back to its savepoint and stores nothing,
//! without disturbing the others. Every request is answered only after the transaction
//! holding it has committed, so a device is never told the server has what it has not.
//!
//! One writer thread owns the batching; the database's lock still orders it with every
//! other route. The fsync is most of a small sync's cost on a disk (about 3 ms here, see
//! `docs/adr/0002-sync.md`): sharing it is what lets the server take many devices at once.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Arc, Mutex, PoisonError, mpsc};

use episode::sync as protocol;
use jiff::Timestamp;
use rusqlite::Connection;
use tokio::sync::oneshot;

use crate::auth::AuthUser;
use crate::db::Db;
use crate::episodes::Cache;
use crate::error::AppError;
use crate::sync::handle;

/// The most requests written in one transaction.
const MAX_BATCH: usize = 64;

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
    pub fn start(db: Db, docs: Arc<Mutex<Cache>>) -> anyhow::Result<Self> {
        let (jobs, queue) = mpsc::channel();
        std::thread::Builder::new().name("tether-sync-writer".into()).spawn(move || run(&db, &docs, &queue))?;
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

fn run(db: &Db, docs: &Mutex<Cache>, queue: &mpsc::Receiver<Job>) {
    while let Ok(first) = queue.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match queue.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let answers = db.call_blocking(|conn| write(conn, docs, &mut batch));
        for (job, answer) in batch.into_iter().zip(answers) {
            // A client that has gone away no longer wants its answer; what it sent is stored.
            let _ = job.reply.send(answer);
        }
    }
}

/// Writes a batch in one transaction; one answer per job, in order.
fn write(conn: &mut Connection, docs: &Mutex<Cache>, batch: &mut [Job]) -> Vec<Result<protocol::Response, AppError>> {
    // Under the database's lock: nobody else uses the cache while the batch runs.
    let mut cache = docs.lock().unwrap_or_else(PoisonError::into_inner);
    // Every record, hand-over or new episode is synced to disk before the answer. A batch
    // that can store none of those (only messages without changes) moves only sync states
    // and holdings, whose loss in a power cut costs a repeated message, never a record:
    // it commits without the fsync (WAL, `synchronous = NORMAL`; the next full commit
    // syncs it too). A process that dies loses nothing either way: the WAL is written.
    let light = batch.iter().all(|job| job.light);
    let result = (|| {
        if light {
            conn.pragma_update(None, "synchronous", "NORMAL")?;
        }
        let tx = conn.transaction()?;
        let mut answers = Vec::with_capacity(batch.len());
        for job in batch.iter_mut() {
            let _entered = job.span.enter();
            let Some(request) = job.request.take() else {
                answers.push(Err(AppError::internal(anyhow::anyhow!("a sync request was handled twice"))));
                continue;
            };
            tx.execute_batch("SAVEPOINT request")?;
            let handled = catch_unwind(AssertUnwindSafe(|| handle(&tx, &mut cache, &job.user, request, job.now)));
            match handled {
                Ok(Ok((response, used))) => {
                    tx.execute_batch("RELEASE request")?;
                    // Current within this transaction; if it fails to commit, the whole
                    // cache is dropped below, so memory never keeps what the disk lacks.
                    for stored in used {
                        cache.put(stored);
                    }
                    answers.push(Ok(response));
                }
                Ok(Err(refused)) => {
                    tx.execute_batch("ROLLBACK TO request; RELEASE request")?;
                    answers.push(Err(refused));
                }
                Err(_) => {
                    tx.execute_batch("ROLLBACK TO request; RELEASE request")?;
                    tracing::error!("a sync request panicked; nothing of it was stored");
                    answers.push(Err(AppError::internal(anyhow::anyhow!("the sync request could not be handled"))));
                }
            }
        }
        tx.commit()?;
        Ok::<_, rusqlite::Error>(answers)
    })();
    if light && let Err(e) = conn.pragma_update(None, "synchronous", "FULL") {
        tracing::error!(error = %e, "cannot restore synchronous = FULL");
    }
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
