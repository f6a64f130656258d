//! Episode documents in the server's database: each kept as a compacted snapshot plus the
//! changes since, with the server-wide change sequence number (`seq`) that devices' sync
//! cursors count in, the sync state per (episode, device), and the receipt time of every
//! record; and the in-memory document cache.
//!
//! Functions that write take the request's transaction, so a sync request's writes commit
//! together or not at all. Every write of an episode names the `seq` it loaded
//! (compare-and-set): another writer's change in between is `StoreError::Conflict`, and
//! the caller retries from a fresh load.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, PoisonError};

use automerge::ActorId;
use episode::document::{DocumentError, EpisodeDoc};
use episode::{Episode, EpisodeId};

use crate::accounts::{DeviceId, TeamId};
pub use crate::store::server_actor;
use crate::store::{Db, Listener, StoreError, Tx};

/// After this many stored changes an episode is compacted into a new snapshot.
const COMPACT_AFTER: i64 = 64;

/// An episode as stored: its current team, its `seq`, and its document, with the typed
/// view and the evaluation made from it.
///
/// The invariant the cache relies on: the document is exactly the one stored at `seq`,
/// unless `unsaved` says it has changed since; the view and the evaluation are always
/// those of the document as it is. Every change of the document goes through
/// [`Stored::with_doc`], which keeps both halves.
#[derive(Debug)]
pub struct Stored {
    id: EpisodeId,
    team: TeamId,
    seq: i64,
    doc: EpisodeDoc,
    /// Changes stored since the snapshot.
    changes: i64,
    /// The typed view with each record's receipt, once read; `None` after a change.
    view: Option<Episode>,
    /// The evaluation last sent; `None` after a change.
    evaluated: Option<Evaluated>,
    /// The document has changed since it was stored at `seq`.
    unsaved: bool,
}

/// An evaluation as sent: every device asking within the second it was made at gets the
/// same bytes, and a later one equal to it (no deadline passed) is not encoded again.
#[derive(Debug)]
pub struct Evaluated {
    pub second: i64,
    pub evaluation: episode::pathway::Evaluation,
    /// Its bytes on the wire (`episode::sync::Authoritative::evaluation`).
    pub wire: Vec<u8>,
}

impl Stored {
    /// An episode just stored whole at `seq`.
    pub fn new(id: EpisodeId, team: TeamId, seq: i64, doc: EpisodeDoc) -> Self {
        Self { id, team, seq, doc, changes: 0, view: None, evaluated: None, unsaved: false }
    }

    pub fn id(&self) -> EpisodeId {
        self.id
    }

    pub fn team(&self) -> &str {
        &self.team
    }

    pub fn seq(&self) -> i64 {
        self.seq
    }

    /// The document, to read.
    pub fn doc(&self) -> &EpisodeDoc {
        &self.doc
    }

    /// The document alone, leaving the cache behind.
    pub fn into_doc(self) -> EpisodeDoc {
        self.doc
    }

    /// The one way to reach the document mutably (to merge, receive, record, or only to
    /// save or generate a message, which need `&mut`). If its heads move, the view and
    /// the evaluation are forgotten and the document is unsaved until
    /// [`save_changes`] stores it.
    pub fn with_doc<T>(&mut self, f: impl FnOnce(&mut EpisodeDoc) -> T) -> T {
        let before = self.doc.heads();
        let out = f(&mut self.doc);
        if self.doc.heads() != before {
            self.forget_view();
            self.unsaved = true;
        }
        out
    }

    /// The typed view, receipts included (read once per change).
    pub fn view(&mut self, tx: &mut dyn Tx) -> Result<&Episode, StoreError> {
        if self.view.is_none() {
            let mut episode = self.doc.episode().map_err(|error| StoreError::Document { id: self.id, error })?;
            episode.team = self.team.to_string();
            self.view = Some(with_receipts(tx, episode)?);
        }
        self.view.as_ref().ok_or_else(|| StoreError::Damaged("a view was made and is missing".into()))
    }

    /// The evaluation last sent, if the document has not changed since.
    pub fn evaluated(&self) -> Option<&Evaluated> {
        self.evaluated.as_ref()
    }

    pub fn take_evaluated(&mut self) -> Option<Evaluated> {
        self.evaluated.take()
    }

    /// Keeps the evaluation just made of the document as it is.
    pub fn set_evaluated(&mut self, evaluated: Evaluated) {
        self.evaluated = Some(evaluated);
    }

    fn forget_view(&mut self) {
        self.view = None;
        self.evaluated = None;
    }
}

/// The memory the document cache may hold unless `tether serve --cache-mib` says
/// otherwise, in MiB. Chosen so that a server with 10,000 episodes stays under 256 MiB
/// resident (BENCHMARKS.md, "Server memory").
pub const DEFAULT_CACHE_MIB: u64 = 32;

/// What a cached document is reckoned to cost in memory for each byte it takes stored:
/// an Automerge document in memory (its op set, its changes, their index) is many times
/// its compressed save. With [`VIEW_BYTES_PER_RECORD`] and [`ENTRY_BYTES`], a little
/// above what `cargo run -p tests --example cache_memory` measures (about 27 KB for an
/// episode of 5 records, 51 KB for one of 30: BENCHMARKS.md, "Server memory").
const BYTES_PER_STORED_BYTE: usize = 28;
/// What the typed view and the evaluation are reckoned to cost for each record.
const VIEW_BYTES_PER_RECORD: usize = 256;
/// What an entry costs besides: an Automerge document's fixed part, the map's slot, the
/// order's node, the `Stored` itself.
const ENTRY_BYTES: usize = 9 * 1024;

/// Episode documents kept in memory between requests, each at the `seq` it was stored
/// with and with its typed view once read. A transaction takes what it uses out of the
/// cache through its [`Working`] set (checking the stored `seq` first, so that a change
/// by anyone else is never missed), which puts it back only after the transaction has
/// committed, so the cache never holds what the disk does not.
///
/// The cache is bounded by an estimate of the memory its documents take (`budget`,
/// `tether serve --cache-mib`), not by their number: documents differ a hundredfold in
/// size. When a document put back would pass the bound, the least recently used go first.
#[derive(Debug)]
pub struct Cache {
    docs: HashMap<EpisodeId, Entry>,
    /// The entries by when they were last put back: the first is the least recently used.
    order: BTreeMap<u64, EpisodeId>,
    /// The clock of `order`: one tick for each document put back.
    tick: u64,
    /// The estimated bytes of every entry, against `budget`.
    bytes: usize,
    budget: usize,
    stats: CacheStats,
}

#[derive(Debug)]
struct Entry {
    stored: Stored,
    /// Its key in `order`.
    tick: u64,
    /// Its estimated memory, counted in `Cache::bytes`.
    bytes: usize,
}

/// What the cache has done since the server started, and holds now (for `/metrics`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Documents held, and their estimated bytes.
    pub documents: usize,
    pub bytes: usize,
    /// The bound on `bytes`.
    pub budget: usize,
    /// Documents asked for and found current in the cache, or loaded from the database.
    pub hits: u64,
    pub misses: u64,
    /// Documents dropped to make room for others.
    pub evicted_for_room: u64,
    /// Documents dropped because another replica said it had changed them.
    pub evicted_notified: u64,
}

impl Default for Cache {
    fn default() -> Self {
        Self::with_budget(DEFAULT_CACHE_MIB as usize * 1024 * 1024)
    }
}

impl Cache {
    /// An empty cache holding documents of at most `budget` estimated bytes in all (0
    /// caches nothing).
    pub fn with_budget(budget: usize) -> Self {
        Self { docs: HashMap::new(), order: BTreeMap::new(), tick: 0, bytes: 0, budget, stats: CacheStats::default() }
    }

    /// Bounds the cache at `budget` estimated bytes from now on, dropping the least
    /// recently used documents until it fits.
    pub fn set_budget(&mut self, budget: usize) {
        self.budget = budget;
        self.make_room(0);
    }

    /// Forgets one document if the copy held is older than `seq`, the episode's `seq`
    /// after another replica's write; true if one was forgotten. A copy at `seq` or
    /// later (loaded since, or this replica's own) stays.
    pub fn forget_older(&mut self, id: EpisodeId, seq: i64) -> bool {
        match self.docs.get(&id) {
            Some(entry) if entry.stored.seq < seq => {
                self.remove(id);
                self.stats.evicted_notified += 1;
                true
            }
            _ => false,
        }
    }

    /// Puts back an episode whose state is committed, as the most recently used,
    /// making room by dropping the least recently used. One changed and not stored is
    /// refused: it is not what the database holds at its `seq`. One larger than the whole
    /// budget is not kept.
    pub fn put(&mut self, stored: Stored) {
        if stored.unsaved {
            tracing::debug!("an unsaved document was not cached");
            return;
        }
        self.remove(stored.id);
        let bytes = stored.estimated_bytes();
        if bytes > self.budget {
            return;
        }
        self.make_room(bytes);
        self.tick += 1;
        self.order.insert(self.tick, stored.id);
        self.bytes += bytes;
        self.docs.insert(stored.id, Entry { stored, tick: self.tick, bytes });
    }

    /// What the cache holds and has done.
    pub fn stats(&self) -> CacheStats {
        CacheStats { documents: self.docs.len(), bytes: self.bytes, budget: self.budget, ..self.stats }
    }

    /// Drops the least recently used documents until `bytes` more fit in the budget.
    fn make_room(&mut self, bytes: usize) {
        while self.bytes + bytes > self.budget {
            let Some((_, oldest)) = self.order.pop_first() else { break };
            if let Some(entry) = self.docs.remove(&oldest) {
                self.bytes -= entry.bytes;
                self.stats.evicted_for_room += 1;
            }
        }
    }

    fn remove(&mut self, id: EpisodeId) -> Option<Stored> {
        let entry = self.docs.remove(&id)?;
        self.order.remove(&entry.tick);
        self.bytes -= entry.bytes;
        Some(entry.stored)
    }
}

/// What [`current`] found of an episode.
enum Found {
    /// The copy held is current.
    Hit(Stored),
    /// Read from the database (`None`: it has none).
    Loaded(Option<Stored>),
    /// The episode does not exist.
    Gone,
}

impl Found {
    fn into_stored(self) -> Option<Stored> {
        match self {
            Self::Hit(stored) => Some(stored),
            Self::Loaded(stored) => stored,
            Self::Gone => None,
        }
    }
}

impl CacheStats {
    fn count(&mut self, found: &Found) {
        match found {
            Found::Hit(_) => self.hits += 1,
            Found::Loaded(_) => self.misses += 1,
            Found::Gone => {}
        }
    }
}

/// The episode as it is stored now: the copy held, if it is at the stored `seq`, else
/// read from the database.
fn current(tx: &mut dyn Tx, id: EpisodeId, actor: &ActorId, cached: Option<Stored>) -> Result<Found, StoreError> {
    let Some((team, seq)) = tx.team_of(id)? else { return Ok(Found::Gone) };
    match cached {
        Some(mut cached) if cached.seq == seq => {
            if cached.team != team {
                cached.team = team;
                cached.forget_view();
            }
            Ok(Found::Hit(cached))
        }
        _ => Ok(Found::Loaded(load(tx, id, actor)?)),
    }
}

/// The documents one transaction has taken from the cache, loaded or changed, kept
/// apart from the cache until it commits: so that the cache never holds what the
/// database lacks, and the cache's lock is held only a moment at a time, never across
/// a transaction's round trips. Several sync writers (PostgreSQL) work side by side
/// this way; one that takes a document another has taken meanwhile loads it, and the
/// episode's compare-and-set orders their writes (docs/adr/0004-storage.md). Dropped
/// without [`Working::commit`] (the transaction failed), its documents are forgotten.
#[derive(Debug)]
pub struct Working<'a> {
    shared: &'a Mutex<Cache>,
    docs: HashMap<EpisodeId, Stored>,
    stats: CacheStats,
}

impl<'a> Working<'a> {
    pub fn new(shared: &'a Mutex<Cache>) -> Self {
        Self { shared, docs: HashMap::new(), stats: CacheStats::default() }
    }

    /// Takes an episode out of this working set or, failing that, out of the cache, if
    /// it is current; else loads it.
    pub fn take(&mut self, tx: &mut dyn Tx, id: EpisodeId, actor: &ActorId) -> Result<Option<Stored>, StoreError> {
        let cached = match self.docs.remove(&id) {
            Some(stored) => Some(stored),
            None => self.shared.lock().unwrap_or_else(PoisonError::into_inner).remove(id),
        };
        let found = current(tx, id, actor, cached)?;
        self.stats.count(&found);
        Ok(found.into_stored())
    }

    /// Keeps an episode for the rest of the transaction; one changed and not stored is
    /// refused, as [`Cache::put`] refuses it.
    pub fn put(&mut self, stored: Stored) {
        if stored.unsaved {
            tracing::debug!("an unsaved document was not kept");
            return;
        }
        self.docs.insert(stored.id, stored);
    }

    /// Forgets one document (another writer changed it).
    pub fn forget(&mut self, id: EpisodeId) {
        self.docs.remove(&id);
    }

    /// Gives a document stored with a provisional `seq` its final one, once the
    /// transaction that stored it has committed and numbered its changes
    /// (`store::Transaction::commit_numbered`): it goes back to the cache at the `seq`
    /// the database holds.
    pub fn renumber(&mut self, id: EpisodeId, provisional: i64, final_seq: i64) {
        if let Some(stored) = self.docs.get_mut(&id)
            && stored.seq == provisional
        {
            stored.seq = final_seq;
        }
    }

    /// Puts every document back in the cache, once the transaction has committed.
    pub fn commit(mut self) {
        let docs = std::mem::take(&mut self.docs);
        let mut shared = self.shared.lock().unwrap_or_else(PoisonError::into_inner);
        for stored in docs.into_values() {
            shared.put(stored);
        }
    }
}

impl Drop for Working<'_> {
    fn drop(&mut self) {
        let mut shared = self.shared.lock().unwrap_or_else(PoisonError::into_inner);
        shared.stats.hits += self.stats.hits;
        shared.stats.misses += self.stats.misses;
    }
}

impl Stored {
    /// What this episode is reckoned to take in memory, as the cache counts it: a
    /// multiple of its stored bytes for the document, a share per record for the typed
    /// view and evaluation, and the bytes of the evaluation as sent.
    fn estimated_bytes(&self) -> usize {
        let records = self.view.as_ref().map_or(0, |view| view.events.len());
        let wire = self.evaluated.as_ref().map_or(0, |evaluated| evaluated.wire.len());
        self.doc.stored_bytes().saturating_mul(BYTES_PER_STORED_BYTE)
            + records.saturating_mul(VIEW_BYTES_PER_RECORD)
            + wire
            + ENTRY_BYTES
    }
}

/// Starts hearing of other replicas' writes (on PostgreSQL; `None` on SQLite): each
/// episode another replica moves on is dropped from `cache` if the copy held is older
/// (`Cache::forget_older`). The listener holds the cache weakly, and stops when its
/// handle is dropped.
pub fn listen(db: &Db, cache: &Arc<Mutex<Cache>>) -> std::io::Result<Option<Listener>> {
    let cache = Arc::downgrade(cache);
    db.listen(move |changed| {
        let Some(cache) = cache.upgrade() else { return };
        let mut cache = cache.lock().unwrap_or_else(PoisonError::into_inner);
        let evicted = changed.iter().filter(|&&(id, seq)| cache.forget_older(id, seq)).count();
        if evicted > 0 {
            tracing::debug!(evicted, "documents another replica changed left the cache");
        }
    })
}

/// The server's own device name, which the records the team base makes on the server
/// carry (`server:` and the end of its actor's id). The `:` keeps it apart from every
/// device's id, which may not hold one (`accounts::DeviceId`), so no device can sign in
/// as the server.
pub fn server_device(tx: &mut dyn Tx) -> Result<DeviceId, StoreError> {
    // The end of the id: its start is a time, shared by servers made the same moment.
    let id = crate::store::server_id(tx)?.simple().to_string();
    Ok(DeviceId::server_made(format!("server:{}", &id[id.len() - 8..])))
}

/// Loads an episode's document.
pub fn load(tx: &mut dyn Tx, id: EpisodeId, actor: &ActorId) -> Result<Option<Stored>, StoreError> {
    let Some(row) = tx.load_episode(id)? else { return Ok(None) };
    let doc = EpisodeDoc::load_with_changes(&row.snapshot, row.changes.iter().map(Vec::as_slice), actor.clone())
        .map_err(|error| StoreError::Document { id, error })?;
    let mut stored = Stored::new(id, row.team, row.seq, doc);
    stored.changes = row.changes.len() as i64;
    Ok(Some(stored))
}

/// Stores a new episode; returns its `seq`.
pub fn insert(
    tx: &mut dyn Tx,
    id: EpisodeId,
    team: &TeamId,
    doc: &mut EpisodeDoc,
    now: i64,
) -> Result<i64, StoreError> {
    let seq = tx.next_seq()?;
    tx.insert_episode(id, team, seq, &doc.save(), now)?;
    Ok(seq)
}

/// The changes made to a loaded episode since it was stored, if storing them keeps it
/// within its budget (`episode::limits::EPISODE_BUDGET_BYTES`); else
/// `DocumentError::Full`, and the caller discards this copy (it is not stored, and must
/// not go back to the cache: it stays unsaved, which `Cache::put` refuses). An episode
/// already past its budget (stored before there was one) takes no more changes, and
/// still reads.
pub fn pending_changes(stored: &mut Stored) -> Result<Vec<u8>, DocumentError> {
    stored.doc.save_incremental_within_budget()
}

/// Stores `bytes`, the changes made to a loaded episode since it was stored (from
/// [`pending_changes`]), and gives it a new `seq`, if it is still at the `seq` it was
/// loaded at. Compacts it when enough changes have gathered.
pub fn save_changes(tx: &mut dyn Tx, stored: &mut Stored, bytes: &[u8]) -> Result<(), StoreError> {
    let seq = tx.next_seq()?;
    if stored.changes + 1 >= COMPACT_AFTER {
        tx.replace_snapshot(stored.id, stored.seq, seq, &stored.doc.save())?;
        stored.changes = 0;
    } else {
        tx.append_change(stored.id, stored.seq, seq, bytes)?;
        stored.changes += 1;
    }
    stored.seq = seq;
    stored.unsaved = false;
    stored.forget_view();
    Ok(())
}

/// Stores what was changed in a loaded episode (by a device's sync or the server's own
/// change), `bytes` from [`pending_changes`], with the receipt of each new record as made
/// by `device` at `now_ms`.
pub fn store_changes(
    tx: &mut dyn Tx,
    stored: &mut Stored,
    bytes: &[u8],
    device: &DeviceId,
    now_ms: i64,
) -> Result<(), StoreError> {
    save_changes(tx, stored, bytes)?;
    note_receipts(tx, stored, device, now_ms)
}

/// Notes the receipt of every record of a stored episode not yet noted, at the `seq`
/// the episode was just given (so that devices past it are not sent them again).
///
/// With filing on (`epr`), every record not owed to the EPR before is owed now, in the
/// same transaction.
pub fn note_receipts(tx: &mut dyn Tx, stored: &mut Stored, device: &DeviceId, now_ms: i64) -> Result<(), StoreError> {
    let episode = stored.doc.episode().map_err(|error| StoreError::Document { id: stored.id, error })?;
    record_receipts(tx, &episode, device, now_ms, stored.seq)?;
    crate::epr::owe(tx, &episode, &stored.team, now_ms)?;
    stored.forget_view();
    Ok(())
}

/// Moves an episode at `loaded` to another team (a transfer), with a new `seq` so that
/// the new team's devices learn of it.
pub fn set_team(tx: &mut dyn Tx, id: EpisodeId, loaded: i64, team: &TeamId) -> Result<(), StoreError> {
    let seq = tx.next_seq()?;
    tx.set_team(id, loaded, seq, team)
}

/// Episodes the device holds that are no longer in any of `teams` (transferred away).
pub fn leaving(tx: &mut dyn Tx, device: &DeviceId, teams: &[TeamId]) -> Result<Vec<EpisodeId>, StoreError> {
    tx.held_outside(device, teams)
}

/// The device has handed over everything it held of a leaving episode: it may drop it.
pub fn record_drop(tx: &mut dyn Tx, id: EpisodeId, device: &DeviceId) -> Result<(), StoreError> {
    let seq = tx.next_seq()?;
    tx.record_drop(id, device, seq)
}

/// Notes when the server first received each of the episode's records, in the
/// transaction that gave the episode `seq` (from the one ordered counter, so that a
/// receipt is visible exactly when its episode's change is).
pub fn record_receipts(
    tx: &mut dyn Tx,
    episode: &Episode,
    device: &DeviceId,
    now_ms: i64,
    seq: i64,
) -> Result<(), StoreError> {
    let events: Vec<String> = episode.events.iter().map(|e| e.id.to_string()).collect();
    tx.record_receipts(episode.id, &events, device, now_ms, seq)
}

/// The receipts of an episode's records noted after `cursor` (all of them with `None`),
/// for a device to keep: a device whose cursor is past a receipt's `seq` has it.
pub fn receipts_since(
    tx: &mut dyn Tx,
    id: EpisodeId,
    cursor: Option<i64>,
) -> Result<Vec<episode::sync::Receipt>, StoreError> {
    tx.receipts_since(id, cursor.unwrap_or(-1))?
        .into_iter()
        .map(|(event, received_at_ms)| {
            // Every receipt is noted from a record's id, which is a UUID.
            let event = event.parse().map_err(|_| StoreError::damaged("receipts", "event", "no record id"))?;
            Ok(episode::sync::Receipt { event, received_at_ms })
        })
        .collect()
}

/// The episode with each record's `received_at` filled in from the receipts.
pub fn with_receipts(tx: &mut dyn Tx, mut episode: Episode) -> Result<Episode, StoreError> {
    let receipts: HashMap<String, i64> = tx.receipts(episode.id)?.into_iter().collect();
    // Only the receipts count: a `received_at` written into a document (no client of
    // ours writes one; a forged record might) is not the server's word.
    for event in &mut episode.events {
        event.received_at = match receipts.get(&event.id.to_string()) {
            Some(&ms) => Some(
                jiff::Timestamp::from_millisecond(ms)
                    .map_err(|_| StoreError::damaged("receipts", "received_at", "no time"))?,
            ),
            None => None,
        };
    }
    Ok(episode)
}

#[cfg(test)]
mod tests {
    use automerge::ActorId;
    use episode::document::{EpisodeDoc, Opening};
    use episode::{EpisodeId, Pathway, PatientRef};

    use super::{Cache, Stored};

    fn stored(seq: i64) -> Stored {
        let opening = Opening {
            id: uuid::Uuid::now_v7().into(),
            patient_ref: PatientRef::new("RX-CACHE").expect("a reference"),
            team: "north".into(),
            opened_at: jiff::Timestamp::now(),
            opened_by: "u".into(),
            pathway: Pathway::RoutineReferral,
            facts: Vec::new(),
            plan: String::new(),
        };
        let mut doc = EpisodeDoc::open(&opening, ActorId::random()).expect("open");
        // As stored: its bytes are what the cache reckons by.
        let _ = doc.save();
        Stored::new(opening.id, "north".parse().expect("a team"), seq, doc)
    }

    fn holds(cache: &Cache, id: EpisodeId) -> bool {
        cache.docs.contains_key(&id)
    }

    #[test]
    fn the_least_recently_used_go_first_to_keep_within_the_budget() {
        let (a, b, c, d) = (stored(1), stored(2), stored(3), stored(4));
        // The largest of the four: their bytes differ a little (each its own time and
        // actor), and a budget of one must hold whichever is kept.
        let one = [&a, &b, &c, &d].iter().map(|s| s.estimated_bytes()).max().unwrap_or_default();
        assert!(one > super::ENTRY_BYTES, "a document is reckoned at more than its entry: {one}");
        let (ia, ib, ic, id) = (a.id(), b.id(), c.id(), d.id());
        let mut cache = Cache::with_budget(one * 5 / 2);
        cache.put(a);
        cache.put(b);
        cache.put(c);
        assert!(!holds(&cache, ia) && holds(&cache, ib) && holds(&cache, ic), "a, the oldest, made room for c");
        // b used again (taken and put back) is the most recent: d pushes out c.
        let b = cache.remove(ib).expect("b is held");
        cache.put(b);
        cache.put(d);
        assert!(holds(&cache, ib) && holds(&cache, id) && !holds(&cache, ic), "c, now the oldest, made room");
        let stats = cache.stats();
        assert_eq!((stats.documents, stats.evicted_for_room), (2, 2));
        assert!(stats.bytes <= stats.budget, "{stats:?}");

        cache.set_budget(one);
        assert_eq!(cache.stats().documents, 1, "a smaller budget drops the oldest at once");
        assert!(holds(&cache, id));
        cache.set_budget(0);
        cache.put(stored(5));
        assert_eq!(cache.stats().documents, 0, "a budget of 0 caches nothing");
    }

    #[test]
    fn a_notification_drops_only_an_older_copy() {
        let mut cache = Cache::with_budget(usize::MAX);
        let doc = stored(7);
        let id = doc.id();
        cache.put(doc);
        assert!(!cache.forget_older(id, 7), "a copy at the announced seq (this replica's own) stays");
        assert!(!cache.forget_older(id, 6), "an announcement older than the copy is stale news");
        assert!(holds(&cache, id));
        assert!(cache.forget_older(id, 8), "a copy older than the announced seq goes");
        assert!(!holds(&cache, id));
        assert!(!cache.forget_older(id, 9), "nothing held, nothing dropped");
        let stats = cache.stats();
        assert_eq!((stats.documents, stats.bytes, stats.evicted_notified), (0, 0, 1));
    }
}
