//! Filing records in the trust's EPR without re-typing (`tether serve --epr-fhir URL`):
//! each record is owed to the EPR (`outbox`, kind [`KIND`]) in the transaction that
//! stores it, and [`Filing`], the outbox's sender for that kind, sends an episode's owed
//! records as one FHIR transaction of conditional creates (`fhir::transaction`), then
//! records the server's own `filed_to_epr` listing them.
//!
//! - **Owed once per record**, by its id (`epr:<record id>`), whichever way it arrives (a
//!   device's sync, the team base's office write), and only while filing is on
//!   ([`set_filing`]: `serve` turns it on with `--epr-fhir`, off without).
//! - **Filed once.** Every resource is created only if none has the record's identifier
//!   (`ifNoneExist`), so a transaction sent again — its answer lost, the process killed
//!   before it noted the answer, a lease lapsed — creates nothing the second time.
//! - **Only what is still to file.** At send time the episode is evaluated, and only the
//!   records with an open `file_to_epr` action are sent: one filed by hand meanwhile (the
//!   dashboard's "Filed"), or an `entered_in_error` of a record never filed, is passed
//!   over and its message marked sent with nothing filed.
//! - **Recorded as the server's own change.** On success, one `filed_to_epr` (by
//!   `audit::SERVER`, on the server's own device) lists the records and the EPR's
//!   reference, stored in the transaction that marks the messages sent: it closes the
//!   `file_to_epr` actions and reaches devices at their next sync.
//! - **Failures** keep the EPR's status, never its body (which may echo an identifier
//!   back); the dashboard shows them per episode (`outbox_counts`).
//!
//! The bearer token (`--epr-token-file`, `TETHER_EPR_TOKEN`) is sent only to the EPR's
//! URL, which must be HTTPS (or loopback, for tests), and never logged.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use episode::{Episode, EpisodeId, Event, EventBody, EventId};
use jiff::Timestamp;
use serde_json::{Map, Value, json};

use crate::accounts::TeamId;
use crate::audit::{self, Who};
use crate::config::Secret;
use crate::episodes::{self, Cache, Working};
use crate::error::AppError;
use crate::outbox::{SendError, Sender, Sent};
use crate::store::{Db, NewOutboxItem, OutboxCount, OutboxItem, StoreError, Tx};
use crate::{Clock, caseload, fhir};

/// The outbox's kind for a record to file.
pub const KIND: &str = "epr";

/// The most records of one episode filed in one transaction.
pub const BATCH: usize = 50;

/// How long one transaction to the EPR may take, well within the outbox's lease.
pub const TIMEOUT: Duration = Duration::from_secs(30);

/// The most of the EPR's answer that is read.
const MAX_ANSWER_BYTES: u64 = 8 * 1024 * 1024;

/// The most characters of the EPR's reference kept in a `filed_to_epr`.
const MAX_REF_CHARS: usize = 256;

/// The `meta` key that says filing is on: records are owed to the EPR as they are stored.
const FILING: &str = "epr_filing";

/// Turns filing on or off for every replica on this database.
pub fn set_filing(tx: &mut dyn Tx, on: bool) -> Result<(), StoreError> {
    tx.set_meta(FILING, if on { "on" } else { "off" })
}

/// Whether records are owed to the EPR as they are stored.
pub fn filing(tx: &mut dyn Tx) -> Result<bool, StoreError> {
    Ok(tx.meta(FILING)?.as_deref() == Some("on"))
}

/// The filings not yet sent of `team`'s episodes, by episode and state.
pub fn status(tx: &mut dyn Tx, team: &TeamId) -> Result<Vec<OutboxCount>, StoreError> {
    let mut counts = tx.outbox_counts(team)?;
    counts.retain(|c| c.kind == KIND);
    Ok(counts)
}

/// The dedupe key of a record's filing.
pub fn dedupe_key(record: EventId) -> String {
    format!("{KIND}:{record}")
}

/// Owes the EPR every record of `episode` not owed before, if filing is on: in the
/// caller's transaction, the one that stores them. A `filed_to_epr`, and a record one
/// lists (filed by hand already), is not owed.
pub fn owe(tx: &mut dyn Tx, episode: &Episode, team: &TeamId, now_ms: i64) -> Result<(), StoreError> {
    if !filing(tx)? {
        return Ok(());
    }
    let filed: HashSet<EventId> = episode
        .events
        .iter()
        .filter_map(|e| match &e.body {
            EventBody::FiledToEpr(filed) => Some(filed.records.iter().copied()),
            _ => None,
        })
        .flatten()
        .collect();
    for event in &episode.events {
        if matches!(event.body, EventBody::FiledToEpr(_)) || filed.contains(&event.id) {
            continue;
        }
        let key = dedupe_key(event.id);
        let payload = json!({"record": event.id}).to_string();
        tx.enqueue(&NewOutboxItem {
            kind: KIND,
            dedupe_key: &key,
            team: Some(team),
            episode: Some(episode.id),
            payload: &payload,
            now_ms,
        })?;
    }
    Ok(())
}

/// The outbox's sender of records to the EPR.
pub struct Filing {
    url: String,
    token: Option<Secret>,
    db: Db,
    docs: Arc<Mutex<Cache>>,
    settings: Arc<fhir::Settings>,
    /// The alerts the episode's evaluation may owe once the filing is recorded.
    alerts: Arc<crate::alerts::Alerts>,
    clock: Clock,
    agent: ureq::Agent,
}

impl std::fmt::Debug for Filing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Filing").field("url", &self.url).field("token", &self.token).finish()
    }
}

impl Filing {
    /// Files to the FHIR endpoint `url` (where a transaction Bundle is POSTed: the EPR's
    /// FHIR base), with `token` as a bearer token if given, for the server `state`.
    pub fn new(url: &str, token: Option<Secret>, state: &crate::AppState) -> anyhow::Result<Self> {
        anyhow::ensure!(
            crate::oidc::config::transport_allowed(url),
            "--epr-fhir must be an https:// URL (or http:// to this machine)"
        );
        let agent = agent(TIMEOUT);
        Ok(Self {
            url: url.trim_end_matches('/').to_owned(),
            token,
            db: state.db.clone(),
            docs: Arc::clone(&state.docs),
            settings: Arc::clone(&state.fhir),
            alerts: Arc::clone(&state.alerts),
            clock: state.clock.clone(),
            agent,
        })
    }

    /// The same, giving up on a transaction after `timeout` (the default is [`TIMEOUT`]).
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.agent = agent(timeout);
        self
    }

    /// The episode as it is now, with its records still to file.
    fn still_to_file(&self, id: EpisodeId) -> Result<Option<(Episode, HashSet<EventId>)>, AppError> {
        let now = self.clock.now();
        let docs = Arc::clone(&self.docs);
        self.db.call_blocking(|conn| {
            let mut cache = Working::new(&docs);
            let mut tx = conn.transaction()?;
            let actor = episodes::server_actor(&mut *tx)?;
            let Some(mut stored) = cache.take(&mut *tx, id, &actor)? else { return Ok(None) };
            let read = stored.view(&mut *tx).map(|episode| {
                let episode = episode.clone();
                let evaluation = caseload::evaluate(&episode, now);
                let unfiled = caseload::unfiled(&evaluation).into_iter().map(|u| u.record).collect();
                (episode, unfiled)
            });
            // Nothing was changed: the document goes back whatever happened.
            cache.put(stored);
            cache.commit();
            let read = read?;
            tx.commit()?;
            Ok(Some(read))
        })
    }

    /// POSTs the transaction; the EPR's reference for it, or why it failed.
    fn post(&self, bundle: &Value) -> Result<String, SendError> {
        let mut request =
            self.agent.post(&self.url).header("Accept", "application/fhir+json").content_type("application/fhir+json");
        if let Some(token) = &self.token {
            request = request.header("Authorization", format!("Bearer {}", token.expose()));
        }
        let mut response = request.send(bundle.to_string()).map_err(|error| match error {
            ureq::Error::Timeout(_) => SendError::transient("the EPR did not answer in time"),
            other => SendError::transient(format!("the EPR could not be reached: {}", transport(&other))),
        })?;
        let status = response.status().as_u16();
        match status {
            200..=299 => {}
            408 | 429 | 500..=599 => return Err(SendError::transient(format!("the EPR answered HTTP {status}"))),
            401 | 403 => {
                // Credentials are mended by their owner, and then the next attempt works.
                return Err(SendError::transient(format!("the EPR refused the credentials (HTTP {status})")));
            }
            _ => return Err(SendError::permanent(format!("the EPR refused the transaction (HTTP {status})"))),
        }
        let body = response
            .body_mut()
            .with_config()
            .limit(MAX_ANSWER_BYTES)
            .read_to_vec()
            .map_err(|_| SendError::transient(format!("the EPR's answer (HTTP {status}) could not be read")))?;
        let answer: Value = serde_json::from_slice(&body)
            .map_err(|_| SendError::transient(format!("the EPR's answer (HTTP {status}) is not JSON")))?;
        if answer["resourceType"] != "Bundle" || answer["type"] != "transaction-response" {
            return Err(SendError::transient(format!(
                "the EPR's answer (HTTP {status}) is not a transaction-response Bundle"
            )));
        }
        Ok(reference(&answer))
    }
}

/// The HTTP client: no redirects (an answer from elsewhere could be plain HTTP, and the
/// token would follow it), statuses as answers, one timeout for the whole exchange.
fn agent(timeout: Duration) -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .max_redirects(0)
        .timeout_global(Some(timeout))
        .user_agent("tether")
        .build()
        .into()
}

/// A transport error without anything but its kind (never a URL's query, never a body).
fn transport(error: &ureq::Error) -> &'static str {
    match error {
        ureq::Error::Io(_) => "the connection failed",
        ureq::Error::HostNotFound => "its host was not found",
        ureq::Error::ConnectionFailed => "the connection was refused",
        ureq::Error::Tls(_) => "TLS failed",
        _ => "the request failed",
    }
}

/// The EPR's reference for a transaction: the location of the first resource after the
/// patient and the episode of care (the first record's), else the answer's id, else a
/// fixed text. Cut to [`MAX_REF_CHARS`].
fn reference(answer: &Value) -> String {
    let entries = answer["entry"].as_array().map(Vec::as_slice).unwrap_or_default();
    let location = entries
        .iter()
        .skip(2)
        .chain(entries.iter())
        .find_map(|e| e["response"]["location"].as_str().filter(|l| !l.trim().is_empty()));
    let text = location
        .or_else(|| answer["id"].as_str().filter(|id| !id.trim().is_empty()))
        .unwrap_or("FHIR transaction-response");
    text.chars().filter(|c| !c.is_control()).take(MAX_REF_CHARS).collect()
}

/// The record a message owes.
fn record_of(item: &OutboxItem) -> Result<EventId, SendError> {
    serde_json::from_str::<Value>(&item.payload)
        .ok()
        .and_then(|payload| payload["record"].as_str().and_then(|r| r.parse().ok()))
        .ok_or_else(|| SendError::permanent("the message names no record (the outbox row is damaged)"))
}

impl Sender for Filing {
    fn kind(&self) -> &'static str {
        KIND
    }

    fn batch(&self) -> usize {
        BATCH
    }

    fn send(&self, items: &[OutboxItem]) -> Result<Sent, SendError> {
        let Some(id) = items.first().and_then(|item| item.episode) else {
            return Err(SendError::permanent("the message names no episode (the outbox row is damaged)"));
        };
        let records = items.iter().map(record_of).collect::<Result<Vec<_>, _>>()?;
        let Some((episode, unfiled)) = self.still_to_file(id).map_err(|error| {
            tracing::error!(error = ?error, "the episode to file could not be read");
            SendError::transient("the episode could not be read from the database")
        })?
        else {
            return Err(SendError::permanent("the episode is no longer stored"));
        };
        let due: Vec<EventId> = records.into_iter().filter(|r| unfiled.contains(r)).collect();
        if due.is_empty() {
            // Filed by hand meanwhile, or nothing the EPR keeps: nothing to send.
            return Ok(Sent(json!({"episode": id, "records": []})));
        }
        let bundle = fhir::transaction(&episode, &due, &self.settings)
            .map_err(|error| SendError::permanent(format!("no transaction could be made: {error}")))?;
        let epr_ref = self.post(&bundle)?;
        Ok(Sent(json!({"episode": id, "records": due, "epr_ref": epr_ref})))
    }

    fn delivered(&self, tx: &mut dyn Tx, _items: &[OutboxItem], sent: &Sent, now: Timestamp) -> Result<(), AppError> {
        let records = sent.0["records"].as_array().map(Vec::as_slice).unwrap_or_default();
        if records.is_empty() {
            return Ok(());
        }
        let id: EpisodeId = serde_json::from_value(sent.0["episode"].clone())
            .map_err(|_| AppError::internal(anyhow::anyhow!("a filing without its episode")))?;
        let mut fields = Map::new();
        fields.insert("records".into(), Value::Array(records.to_vec()));
        fields.insert("epr_ref".into(), sent.0["epr_ref"].clone());
        let mut cache = Working::new(&self.docs);
        let actor = episodes::server_actor(tx)?;
        let device = episodes::server_device(tx)?;
        let Some(mut stored) = cache.take(tx, id, &actor)? else {
            return Err(AppError::EpisodeNotFound(id));
        };
        let event_id = EventId::from_uuid(uuid::Uuid::now_v7());
        let event = Event::new_record(event_id, "filed_to_epr", now, audit::SERVER, &device, fields)
            .map_err(|e| AppError::internal(anyhow::anyhow!("the filing record is invalid: {e}")))?;
        stored
            .with_doc(|doc| doc.record(&event))
            .map_err(|e| AppError::internal(anyhow::anyhow!("the filing could not be recorded: {e}")))?;
        let bytes = episodes::pending_changes(&mut stored)
            .map_err(|e| AppError::internal(anyhow::anyhow!("the filing could not be stored: {e}")))?;
        episodes::store_changes(tx, &mut stored, &bytes, &device, now.as_millisecond())?;
        caseload::summarize(tx, &mut stored, now, &self.alerts)?;
        let who = Who::server(tx)?;
        audit::log(
            tx,
            &who,
            now.as_millisecond(),
            audit::AuditAction::RecordEvent,
            Some(id),
            Some(&event_id.to_string()),
        )?;
        // The document is not put back: the transaction commits after this returns, and
        // the cache holds only what is committed. The next reader loads it.
        drop(stored);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reference_is_the_first_records_location() {
        let answer = json!({"resourceType": "Bundle", "type": "transaction-response", "entry": [
            {"response": {"status": "200 OK", "location": "Patient/p1"}},
            {"response": {"status": "200 OK", "location": "EpisodeOfCare/e1"}},
            {"response": {"status": "201 Created", "location": "Encounter/42/_history/1"}},
        ]});
        assert_eq!(reference(&answer), "Encounter/42/_history/1");
        let bare = json!({"resourceType": "Bundle", "id": "tx-9", "type": "transaction-response", "entry": []});
        assert_eq!(reference(&bare), "tx-9");
        let nothing = json!({"resourceType": "Bundle", "type": "transaction-response"});
        assert_eq!(reference(&nothing), "FHIR transaction-response");
    }
}
