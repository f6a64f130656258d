//! Telling other replicas which episodes changed, on PostgreSQL: every transaction that
//! moves an episode to a new `seq` sends `pg_notify` on [`CHANNEL`] in the transaction
//! (PostgreSQL delivers it at commit, and never for a transaction rolled back), and each
//! replica runs a listener on a connection of its own that hands other replicas' changes
//! to the document cache, which drops the copies they made stale.
//!
//! A notification is only news: it arrives after the commit, and may not arrive at all
//! (the listener was reconnecting, PostgreSQL restarted). Every request still checks the
//! stored `seq` before it trusts a cached document (`episodes::Working::take`); the
//! notification frees the stale copy's memory early, and nothing depends on it.
//! `docs/adr/0004-storage.md` says more.
//!
//! A payload is `REPLICA ID:SEQ ID:SEQ …`: the sending pool's random name, so that a
//! replica skips its own, then each episode and its new `seq`, split so that none passes
//! PostgreSQL's 8,000 bytes. Nothing in it identifies a patient.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use ::postgres::NoTls;
use ::postgres::fallible_iterator::FallibleIterator;
use episode::EpisodeId;

use super::target::PgUrl;

/// The channel episodes' changes are announced on.
pub(super) const CHANNEL: &str = "tether_episodes";

/// The most bytes a payload is given (PostgreSQL refuses one of 8,000 or more).
const PAYLOAD_BYTES: usize = 7_000;

/// The listener's connection, as `pg_stat_activity` names it.
pub const LISTENER_APPLICATION: &str = "tether-listen";

/// How long the listener waits for a notification before it looks whether it should
/// stop, and how long without one before it checks that its connection still answers.
const POLL: Duration = Duration::from_secs(1);
const CHECK_AFTER: Duration = Duration::from_secs(30);

/// The longest wait between two attempts to connect again.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// A new random name for a pool's notifications.
pub(super) fn replica_name() -> String {
    uuid::Uuid::now_v7().simple().to_string()
}

/// The payloads that announce `changed` from `replica`.
pub(super) fn payloads(replica: &str, changed: &[(EpisodeId, i64)]) -> Vec<String> {
    let mut out = Vec::new();
    let mut payload = String::from(replica);
    for (id, seq) in changed {
        let item = format!(" {id}:{seq}");
        if payload.len() + item.len() > PAYLOAD_BYTES && payload.len() > replica.len() {
            out.push(std::mem::replace(&mut payload, String::from(replica)));
        }
        payload.push_str(&item);
    }
    if payload.len() > replica.len() {
        out.push(payload);
    }
    out
}

/// The changes a payload announces, unless this replica (`own`) sent it. A part that
/// does not parse is left out (no build sends one).
fn parse(payload: &str, own: &str) -> Vec<(EpisodeId, i64)> {
    let mut parts = payload.split(' ');
    match parts.next() {
        Some(sender) if sender != own => {}
        _ => return Vec::new(),
    }
    parts
        .filter_map(|part| {
            let (id, seq) = part.split_once(':')?;
            Some((id.parse().ok()?, seq.parse().ok()?))
        })
        .collect()
}

/// The running listener; it stops within a second of being dropped.
#[derive(Debug)]
pub struct Listener {
    stop: Arc<AtomicBool>,
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Starts the listener: `changed` is called with the episodes each notification of
/// another replica names. It reconnects, with a growing wait, whenever its connection
/// fails, and never stops the server: at worst the cache learns of nothing and every
/// request finds the change by its `seq` check.
pub(super) fn listen(
    mut config: ::postgres::Config,
    url: PgUrl,
    own: String,
    changed: impl FnMut(&[(EpisodeId, i64)]) + Send + 'static,
) -> std::io::Result<Listener> {
    config.application_name(LISTENER_APPLICATION);
    let stop = Arc::new(AtomicBool::new(false));
    let stopping = Arc::clone(&stop);
    std::thread::Builder::new()
        .name("tether-listen".into())
        .spawn(move || run(&config, &url, &own, &stopping, changed))?;
    Ok(Listener { stop })
}

fn run(
    config: &::postgres::Config,
    url: &PgUrl,
    own: &str,
    stop: &AtomicBool,
    mut changed: impl FnMut(&[(EpisodeId, i64)]),
) {
    let mut backoff = Duration::from_secs(1);
    let mut lost = false;
    while !stop.load(Ordering::Relaxed) {
        match config.connect(NoTls) {
            Ok(mut client) => match client.batch_execute(&format!("LISTEN {CHANNEL}")) {
                Ok(()) => {
                    if lost {
                        tracing::info!("listening again for other replicas' changes");
                    }
                    backoff = Duration::from_secs(1);
                    let why = receive(&mut client, own, stop, &mut changed);
                    if let Some(why) = why {
                        tracing::warn!(error = %url.redact(&why), "the listener for other replicas' changes lost its connection; reconnecting");
                        lost = true;
                    }
                    continue;
                }
                Err(error) => {
                    tracing::warn!(error = %url.redact(&super::postgres::chain(&error)), "cannot listen for other replicas' changes");
                }
            },
            Err(error) => {
                if !lost {
                    tracing::warn!(error = %url.redact(&super::postgres::chain(&error)), "cannot connect to listen for other replicas' changes; retrying");
                }
            }
        }
        lost = true;
        sleep_unless_stopped(backoff, stop);
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// Hands on notifications until told to stop (`None`) or the connection fails (why).
fn receive(
    client: &mut ::postgres::Client,
    own: &str,
    stop: &AtomicBool,
    changed: &mut impl FnMut(&[(EpisodeId, i64)]),
) -> Option<String> {
    let mut heard = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        {
            let mut notifications = client.notifications();
            let mut iter = notifications.timeout_iter(POLL);
            loop {
                match iter.next() {
                    Ok(Some(notification)) => {
                        heard = Instant::now();
                        let news = parse(notification.payload(), own);
                        if !news.is_empty() {
                            changed(&news);
                        }
                    }
                    Ok(None) => break,
                    Err(error) => return Some(super::postgres::chain(&error)),
                }
            }
        }
        if client.is_closed() {
            return Some("the connection closed".into());
        }
        // A connection that went quiet may be dead without a word (a network cut).
        if heard.elapsed() >= CHECK_AFTER {
            if let Err(error) = client.is_valid(Duration::from_secs(10)) {
                return Some(super::postgres::chain(&error));
            }
            heard = Instant::now();
        }
    }
    None
}

fn sleep_unless_stopped(wait: Duration, stop: &AtomicBool) {
    let until = Instant::now() + wait;
    while !stop.load(Ordering::Relaxed) && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(100).min(until - Instant::now()));
    }
}

#[cfg(test)]
mod tests {
    use super::{parse, payloads};

    #[test]
    fn payloads_stay_under_postgresql_limit_and_read_back() {
        let changed: Vec<_> =
            (0..500).map(|i| (episode::EpisodeId::from(uuid::Uuid::now_v7()), i64::from(i))).collect();
        let sent = payloads("a1", &changed);
        assert!(sent.len() > 1, "500 changes take more than one payload");
        assert!(sent.iter().all(|p| p.len() < 8000), "every payload under 8,000 bytes");
        let read: Vec<_> = sent.iter().flat_map(|p| parse(p, "b2")).collect();
        assert_eq!(read, changed, "another replica reads every change, in order");
        assert!(sent.iter().all(|p| parse(p, "a1").is_empty()), "the sender skips its own");
        assert!(payloads("a1", &[]).is_empty(), "nothing changed, nothing sent");
        assert_eq!(parse("b2 not-an-id:1 x", "a1"), Vec::new(), "what does not parse is left out");
    }
}
