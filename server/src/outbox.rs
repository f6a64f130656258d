//! The outbox: messages the server owes to systems outside it (a record to file in the
//! EPR, an alert to send), and the worker that sends them.
//!
//! A message is owed ([`enqueue`]) in the same transaction as the change that causes it,
//! so it exists exactly when its cause is stored, and once only: its `dedupe_key` (for
//! the EPR, the record's id) is unique. The worker claims due messages of each kind it
//! has a [`Sender`] for, sends them, and marks them sent — with whatever the sender keeps
//! of the send ([`Sender::delivered`]) and an audit entry, in one transaction — or
//! schedules another attempt after an exponential backoff with jitter, up to
//! [`Policy::max_attempts`]; then the message is `failed`, until a person makes it due
//! again ([`retry`], `tether outbox retry`).
//!
//! A claim is a lease (`claimed_until`): on PostgreSQL several replicas claim at once
//! (`FOR UPDATE SKIP LOCKED`) and never take the same message, and a message claimed by a
//! process that died is claimed again once its lease lapses. So a message may be sent
//! twice (sent, then the process died before marking it): every sender must make a
//! repeat harmless, as the EPR's conditional creates do. A claim is finished only at the
//! attempt count it was made with, so a lapsed claim never marks a message its successor
//! holds. See `docs/adr/0012-outbox.md`.

use std::sync::Arc;
use std::sync::mpsc;
use std::time::Duration;

use episode::EpisodeId;
use jiff::Timestamp;
use serde_json::Value;

use crate::Clock;
use crate::audit::{self, Who};
use crate::error::AppError;
use crate::store::{Conn, Db, NewOutboxItem, OutboxItem, StoreError, Tx};

/// The most characters of a failure's reason kept (`last_error`) and shown.
const MAX_ERROR_CHARS: usize = 300;

/// How often a completion whose episode another writer changed meanwhile is made again.
const CONFLICT_TRIES: usize = 8;

/// Owes a message of `kind` in the caller's transaction, unless one with `dedupe_key` is
/// owed or sent already; returns whether it is new. `dedupe_key` and `payload` are kept
/// in the database and named in the audit log (`dedupe_key`): neither may hold a
/// patient's identifier in a form a log would show, and `dedupe_key` never.
pub fn enqueue(
    tx: &mut dyn Tx,
    kind: &str,
    dedupe_key: &str,
    team: Option<&str>,
    episode: Option<EpisodeId>,
    payload: &Value,
    now: Timestamp,
) -> Result<bool, StoreError> {
    let payload = payload.to_string();
    tx.enqueue(&NewOutboxItem { kind, dedupe_key, team, episode, payload: &payload, now_ms: now.as_millisecond() })
}

/// Makes the failed messages of `kind` (of one episode, or all) due again now; returns
/// how many.
pub fn retry(tx: &mut dyn Tx, kind: &str, episode: Option<EpisodeId>, now: Timestamp) -> Result<u64, StoreError> {
    tx.retry_outbox(kind, episode, now.as_millisecond())
}

/// What a sender did, for its [`Sender::delivered`] to keep (`Value::Null`: nothing).
#[derive(Debug, Clone, PartialEq)]
pub struct Sent(pub Value);

/// Why a send failed: a reason shown on the dashboard and kept with the message, which
/// must never hold a patient's identifier (so never the receiver's own words, which may
/// echo one back), and whether trying again may help.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}")]
pub struct SendError {
    pub reason: String,
    /// `false`: the message is `failed` at once (a person must look at it).
    pub retry: bool,
}

impl SendError {
    /// A failure worth trying again (the receiver was down, slow or busy).
    pub fn transient(reason: impl Into<String>) -> Self {
        Self { reason: reason.into(), retry: true }
    }

    /// A failure that trying again will not mend (the receiver refused the message).
    pub fn permanent(reason: impl Into<String>) -> Self {
        Self { reason: reason.into(), retry: false }
    }
}

/// Sends the messages of one kind. Called on the worker's thread: it may block, and must
/// give up by a timeout of its own, well within [`Policy::lease`].
pub trait Sender: Send + Sync {
    /// The kind of message it sends (the outbox's `kind`).
    fn kind(&self) -> &'static str;

    /// How many due messages of one episode it takes in one send (1: each alone). A
    /// batch succeeds or fails whole.
    fn batch(&self) -> usize {
        1
    }

    /// Sends `items`: all of one kind and one episode (or of none), at most
    /// [`Sender::batch`]. A repeat of a send that succeeded must be harmless.
    fn send(&self, items: &[OutboxItem]) -> Result<Sent, SendError>;

    /// Keeps what the server keeps of a send that succeeded, in the transaction that
    /// marks `items` sent (those whose claim this worker still held). An error, or a
    /// `Conflict` after every try, leaves them claimed: they are sent again when the
    /// lease lapses.
    fn delivered(&self, tx: &mut dyn Tx, items: &[OutboxItem], sent: &Sent, now: Timestamp) -> Result<(), AppError> {
        let _ = (tx, items, sent, now);
        Ok(())
    }
}

/// How the worker claims, retries and waits.
#[derive(Debug, Clone, Copy)]
pub struct Policy {
    /// The backoff after the first failed attempt; it doubles with each further one.
    pub base: Duration,
    /// The longest backoff.
    pub max: Duration,
    /// The attempts after which a message is `failed`.
    pub max_attempts: i64,
    /// How long a claim lasts before another worker may claim the message again.
    pub lease: Duration,
    /// How long the worker waits between looks at the outbox when it found nothing due.
    pub poll: Duration,
    /// The most messages of a kind claimed at a time. They are sent one send after
    /// another, so `claim` sends at a sender's timeout must fit in the lease.
    pub claim: usize,
}

impl Default for Policy {
    /// Backoffs of 30 s, 1 min, 2 min, … up to 1 h; `failed` after 12 attempts (about 6
    /// hours); 20 messages claimed at a time for 15 min (20 sends at the EPR's 30 s
    /// timeout take 10 min at worst).
    fn default() -> Self {
        Self {
            base: Duration::from_secs(30),
            max: Duration::from_secs(3600),
            max_attempts: 12,
            lease: Duration::from_secs(900),
            poll: Duration::from_secs(2),
            claim: 20,
        }
    }
}

impl Policy {
    /// The wait before the attempt after `attempts` failed ones: `base · 2^(attempts-1)`
    /// up to `max`, of which a random part (up to half) is left out, so that messages
    /// that failed together are not all tried again together. `unit` is a random
    /// fraction in `[0, 1)`.
    pub fn backoff(&self, attempts: i64, unit: f64) -> Duration {
        let doublings = u32::try_from(attempts.saturating_sub(1).clamp(0, 30)).unwrap_or(30);
        let full = self.base.saturating_mul(1u32 << doublings).min(self.max);
        full.mul_f64(1.0 - unit.clamp(0.0, 1.0) / 2.0)
    }
}

/// A random fraction in `[0, 1)` for the jitter; 0.5 if the system has no randomness.
fn unit_random() -> f64 {
    getrandom::u64().map_or(0.5, |n| (n >> 11) as f64 / (1u64 << 53) as f64)
}

/// The outbox's worker: senders by kind over a database.
pub struct Worker {
    db: Db,
    clock: Clock,
    senders: Vec<Arc<dyn Sender>>,
    policy: Policy,
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kinds: Vec<_> = self.senders.iter().map(|s| s.kind()).collect();
        f.debug_struct("Worker").field("kinds", &kinds).field("policy", &self.policy).finish()
    }
}

/// The handle on a running worker: it stops once every handle is dropped (after the
/// send under way, if any).
#[derive(Clone, Debug)]
pub struct Running {
    wake: mpsc::Sender<()>,
}

impl Running {
    /// Looks at the outbox now rather than at the next poll (a message was just owed).
    pub fn nudge(&self) {
        let _ = self.wake.send(());
    }
}

/// What one pass of the worker did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Pass {
    pub claimed: usize,
    pub sent: usize,
    pub failed: usize,
}

impl Worker {
    pub fn new(db: Db, clock: Clock, senders: Vec<Arc<dyn Sender>>, policy: Policy) -> Self {
        Self { db, clock, senders, policy }
    }

    /// Runs the worker on a thread of its own until every handle is dropped.
    pub fn start(self) -> anyhow::Result<Running> {
        let (wake, woken) = mpsc::channel();
        std::thread::Builder::new().name("tether-outbox".into()).spawn(move || {
            loop {
                let busy = match self.pass() {
                    Ok(pass) => pass.claimed > 0,
                    Err(error) => {
                        tracing::error!(error = ?error, "the outbox could not be read");
                        false
                    }
                };
                if busy {
                    continue;
                }
                match woken.recv_timeout(self.policy.poll) {
                    Ok(()) | Err(mpsc::RecvTimeoutError::Timeout) => {}
                    Err(mpsc::RecvTimeoutError::Disconnected) => return,
                }
            }
        })?;
        Ok(Running { wake })
    }

    /// Claims what is due of each kind, sends it and records the outcome: one pass.
    pub fn pass(&self) -> Result<Pass, AppError> {
        let mut pass = Pass::default();
        for sender in &self.senders {
            let now = self.clock.now().as_millisecond();
            let lease = now.saturating_add(i64::try_from(self.policy.lease.as_millis()).unwrap_or(i64::MAX));
            let kind = sender.kind();
            let claim = self.policy.claim;
            let items = self.db.call_blocking(|conn| conn.claim_outbox(kind, now, lease, claim))?;
            pass.claimed += items.len();
            for group in groups(items, sender.batch()) {
                // An outcome that cannot be recorded leaves its messages claimed: they are
                // sent again when the lease lapses, and the rest of the pass goes on.
                match sender.send(&group) {
                    Ok(sent) => match self.sent(&**sender, &group, &sent) {
                        Ok(()) => pass.sent += group.len(),
                        Err(error) => tracing::error!(kind, error = ?error, "a send could not be recorded"),
                    },
                    Err(error) => {
                        tracing::warn!(kind, reason = %error.reason, messages = group.len(), "a send failed");
                        match self.failed(&group, &error) {
                            Ok(()) => pass.failed += group.len(),
                            Err(error) => tracing::error!(kind, error = ?error, "a failure could not be recorded"),
                        }
                    }
                }
            }
        }
        Ok(pass)
    }

    /// Marks `items` sent, with what the sender keeps and an audit entry each, in one
    /// transaction; made again if another writer changed the episode meanwhile.
    fn sent(&self, sender: &dyn Sender, items: &[OutboxItem], sent: &Sent) -> Result<(), AppError> {
        let now = self.clock.now();
        self.db.call_blocking(|conn: &mut dyn Conn| {
            let mut tries = 0;
            loop {
                tries += 1;
                let done = (|| {
                    let mut tx = conn.transaction()?;
                    // The episode's row first (the items are of one episode or none):
                    // `delivered` may store a change, and a sync writer holding the row
                    // takes the counter only when it commits (`office::write`).
                    if let Some(id) = items.first().and_then(|item| item.episode) {
                        tx.lock_episode(id)?;
                    }
                    let mut held = Vec::with_capacity(items.len());
                    for item in items {
                        if tx.outbox_sent(item.id, item.attempts, now.as_millisecond())? {
                            held.push(item.clone());
                        }
                    }
                    if held.is_empty() {
                        // Every claim lapsed and was taken again: the next holder records
                        // the send (its own repeat is harmless).
                        return Ok(());
                    }
                    sender.delivered(&mut *tx, &held, sent, now)?;
                    let who = Who::server(&mut *tx)?;
                    for item in &held {
                        let detail = format!("{} {}", item.kind, item.dedupe_key);
                        audit::log(
                            &mut *tx,
                            &who,
                            now.as_millisecond(),
                            audit::AuditAction::OutboxSent,
                            item.episode,
                            Some(&detail),
                        )?;
                    }
                    tx.commit()?;
                    Ok::<_, AppError>(())
                })();
                match done {
                    Err(AppError::Store(StoreError::Conflict(_))) if tries < CONFLICT_TRIES => {}
                    other => return other,
                }
            }
        })
    }

    /// Schedules another attempt of each of `items`, or marks it failed, with an audit
    /// entry each (a failed send may still have reached the receiver).
    fn failed(&self, items: &[OutboxItem], error: &SendError) -> Result<(), AppError> {
        let now = self.clock.now().as_millisecond();
        let reason: String = error.reason.chars().take(MAX_ERROR_CHARS).collect();
        let policy = self.policy;
        self.db.call_blocking(|conn| {
            let mut tx = conn.transaction()?;
            let who = Who::server(&mut *tx)?;
            for item in items {
                let retry_at = (error.retry && item.attempts < policy.max_attempts).then(|| {
                    let wait = policy.backoff(item.attempts, unit_random());
                    now.saturating_add(i64::try_from(wait.as_millis()).unwrap_or(i64::MAX))
                });
                if tx.outbox_failed(item.id, item.attempts, retry_at, &reason)? {
                    let action = if retry_at.is_some() {
                        audit::AuditAction::OutboxRetry
                    } else {
                        audit::AuditAction::OutboxFailed
                    };
                    let detail = format!("{} {}", item.kind, item.dedupe_key);
                    audit::log(&mut *tx, &who, now, action, item.episode, Some(&detail))?;
                }
            }
            tx.commit()?;
            Ok::<_, AppError>(())
        })
    }
}

/// The claimed items as sends: by episode, at most `batch` in each, in the order claimed.
fn groups(items: Vec<OutboxItem>, batch: usize) -> Vec<Vec<OutboxItem>> {
    let batch = batch.max(1);
    let mut out: Vec<Vec<OutboxItem>> = Vec::new();
    for item in items {
        match out.iter_mut().find(|g| g.len() < batch && g.first().is_some_and(|f| f.episode == item.episode)) {
            Some(group) => group.push(item),
            None => out.push(vec![item]),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_backoff_doubles_up_to_its_cap_and_jitter_takes_at_most_half() {
        let policy = Policy { base: Duration::from_secs(10), max: Duration::from_secs(100), ..Policy::default() };
        assert_eq!(policy.backoff(1, 0.0), Duration::from_secs(10));
        assert_eq!(policy.backoff(2, 0.0), Duration::from_secs(20));
        assert_eq!(policy.backoff(3, 0.0), Duration::from_secs(40));
        assert_eq!(policy.backoff(5, 0.0), Duration::from_secs(100));
        assert_eq!(policy.backoff(500, 0.0), Duration::from_secs(100));
        assert_eq!(policy.backoff(2, 0.999_999), Duration::from_secs(20).mul_f64(1.0 - 0.999_999 / 2.0));
        let jittered = policy.backoff(2, unit_random());
        assert!(jittered > Duration::from_secs(10) && jittered <= Duration::from_secs(20), "{jittered:?}");
    }

    #[test]
    fn groups_keep_one_episode_each_and_the_batch_size() {
        let a: EpisodeId = "01900000-0000-7000-8000-00000000000a".parse().expect("an id");
        let b: EpisodeId = "01900000-0000-7000-8000-00000000000b".parse().expect("an id");
        let item = |id: i64, episode| OutboxItem {
            id,
            kind: "epr".into(),
            dedupe_key: format!("k{id}"),
            team: None,
            episode: Some(episode),
            payload: "{}".into(),
            attempts: 1,
        };
        let made = groups(vec![item(1, a), item(2, b), item(3, a), item(4, a)], 2);
        let ids: Vec<Vec<i64>> = made.iter().map(|g| g.iter().map(|i| i.id).collect()).collect();
        assert_eq!(ids, vec![vec![1, 3], vec![2], vec![4]]);
    }
}
