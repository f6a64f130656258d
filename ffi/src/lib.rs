//! The client core for Kotlin, Swift and Python, through UniFFI: a typed API over
//! `client-core` for a phone app.
//!
//! [`Tether`] is the entry point: the host gives it the store's directory and the 32-byte
//! key (from the Android Keystore or the iOS Keychain), records what the practitioner
//! did, reads what is due next, and syncs through its own HTTP stack, a [`Transport`].
//! Staff sign in with a password, or with the trust's identity provider through the
//! system browser (`begin_identity_sign_in`, `finish_identity_sign_in`).
//!
//! The calls that talk to the server (`sign_in`, `sync`, the identity provider's sign-in)
//! are `async`: a Kotlin `suspend fun`, a Swift `async` function, a Python coroutine.
//! They await the host's async [`Transport`] holding neither the core nor any thread of
//! the host's, and run each step of their own (SQLite, Automerge) on a thread of the
//! library's, so a host may await them from its main thread. Every other call is local
//! and blocking (a record is on disk when `record` returns): call those off the main
//! thread. The object is `Send + Sync`; its calls take turns on one lock.
//!
//! Every call that changes an episode takes the episode first, then what changes, then
//! when: `open_episode(episode, at)`, `record(episode_id, body, note, at)`,
//! `set_fact(episode_id, fact, at)`, `set_plan(episode_id, text, at)`.
//!
//! - `model`: the episode's records, facts, actions and summaries as UniFFI types.
//! - `error`: [`TetherError`], one case for each failure a host acts on, each with its
//!   sentence.
//! - `transport`: the host's HTTP stack as an async foreign trait.
//! - `uniffi-bindgen.rs` (feature `cli`): generates the bindings (`generate.sh`).

use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;

use client_core::remote;
use client_core::{Core, StoreKey, identity};
use episode::{EpisodeId, PatientRef};
use jiff::Timestamp;

mod error;
mod model;
mod transport;

pub use error::TetherError;
pub use model::*;
pub use transport::{HttpRequest, HttpResponse, Transport, TransportError};

uniffi::setup_scaffolding!("tether");

type Result<T, E = TetherError> = std::result::Result<T, E>;

/// The store behind a [`Tether`]: open, wiped (after revocation or `wipe`), or closed.
#[derive(Debug)]
enum Store {
    Open(Box<Core>),
    Wiped,
    Closed,
}

/// A practitioner's device: its encrypted store and its episodes.
#[derive(Debug, uniffi::Object)]
pub struct Tether {
    dir: PathBuf,
    store: Mutex<Store>,
}

fn time(at: SystemTime, field: &str) -> Result<Timestamp> {
    Timestamp::try_from(at).map_err(|_| TetherError::invalid(field, "a time out of range"))
}

fn episode_id(id: &str) -> Result<EpisodeId> {
    id.parse().map_err(|_| TetherError::invalid("episode_id", "not an episode id (a UUID)"))
}

#[uniffi::export]
impl Tether {
    /// Opens the device's store in `store_dir` (creating it if need be) with the host's
    /// 32-byte key, and loads its episodes.
    #[uniffi::constructor]
    pub fn open(store_dir: String, key: Vec<u8>) -> Result<Arc<Self>> {
        let key: [u8; 32] =
            key.try_into().map_err(|_| TetherError::invalid("key", "a store key is exactly 32 bytes"))?;
        let dir = PathBuf::from(store_dir);
        let core = Core::open(&dir, &StoreKey::from_bytes(key))?;
        Ok(Arc::new(Self { dir, store: Mutex::new(Store::Open(Box::new(core))) }))
    }

    /// This device's id (it is in every record made here).
    pub fn device_id(&self) -> Result<String> {
        self.read(|core| Ok(core.device().to_string()))
    }

    /// Opens an episode, offline, as the user signed in on this device, at `at`; returns
    /// its id. Before any sign-in: `SignInNeeded`.
    pub fn open_episode(&self, episode: NewEpisode, at: SystemTime) -> Result<String> {
        let patient_ref = PatientRef::new(episode.patient_ref)
            .ok_or_else(|| TetherError::invalid("patient_ref", "a patient reference is required"))?;
        if episode.team.trim().is_empty() {
            return Err(TetherError::invalid("team", "a team is required"));
        }
        if episode.facts.iter().any(|fact| matches!(fact, FactValue::Pathway { .. })) {
            return Err(TetherError::invalid("facts", "the pathway is given once, as the episode's own"));
        }
        let facts = episode
            .facts
            .iter()
            .map(|fact| {
                let (field, json) = fact.to_json()?;
                let value = episode::FactValue::from_json(field, &json)
                    .map_err(|reason| TetherError::invalid(field.as_str(), reason))?;
                Ok((field, value))
            })
            .collect::<Result<Vec<_>>>()?;
        let new = client_core::NewEpisode {
            patient_ref,
            pathway: model::mirror(&episode.pathway)?,
            team: episode.team,
            facts,
            plan: episode.plan,
        };
        let at = time(at, "at")?;
        Ok(self.with(|core| core.open_episode(new, at))?.to_string())
    }

    /// Records what happened on an episode (`body`, with an optional `note`) at `at`;
    /// returns the record's id. The record is by the user signed in on this device, on
    /// this device: the core stamps both (a shift change is another `sign_in`). Validated
    /// first: a bad record is refused (`InvalidInput` naming the field, `EpisodeFull`
    /// past the episode's budget) and nothing is stored. On disk when this returns.
    /// Before any sign-in: `SignInNeeded`.
    pub fn record(&self, episode_id: String, body: EventBody, note: Option<String>, at: SystemTime) -> Result<String> {
        let id = self::episode_id(&episode_id)?;
        let (kind, mut fields) = body.to_json()?;
        if let Some(note) = note {
            fields.insert("note".into(), note.into());
        }
        let at = time(at, "at")?;
        Ok(self.with(|core| core.record(id, &kind, fields, at))?.to_string())
    }

    /// Sets a fact at `at`, recording the change for the timeline (by the signed-in user);
    /// returns the record's id.
    pub fn set_fact(&self, episode_id: String, fact: FactValue, at: SystemTime) -> Result<String> {
        let id = self::episode_id(&episode_id)?;
        let (field, value) = fact.to_json()?;
        let at = time(at, "at")?;
        Ok(self.with(|core| core.set_fact(id, field, &value, at))?.to_string())
    }

    /// Replaces the joint plan's text at `at` (stored as edits, so concurrent edits merge).
    pub fn set_plan(&self, episode_id: String, text: String, at: SystemTime) -> Result<()> {
        let id = self::episode_id(&episode_id)?;
        let at = time(at, "at")?;
        self.with(|core| core.set_plan(id, &text, at))
    }

    /// The device's caseload, with each episode's open and overdue actions at `now`.
    pub fn episodes(&self, now: SystemTime) -> Result<Vec<EpisodeSummary>> {
        let now = time(now, "now")?;
        self.read(|core| core.episodes(now).iter().map(EpisodeSummary::from_core).collect())
    }

    /// One episode: its facts, plan and records.
    pub fn episode(&self, episode_id: String) -> Result<Episode> {
        let id = self::episode_id(&episode_id)?;
        self.read(|core| Episode::from_core(core.episode(id)?))
    }

    /// An episode's records in the order they happened.
    pub fn timeline(&self, episode_id: String) -> Result<Vec<Event>> {
        let id = self::episode_id(&episode_id)?;
        self.read(|core| core.timeline(id)?.iter().map(Event::from_core).collect())
    }

    /// An episode's actions at `now`, computed on the device: provisional.
    pub fn actions(&self, episode_id: String, now: SystemTime) -> Result<Evaluation> {
        let id = self::episode_id(&episode_id)?;
        let now = time(now, "now")?;
        self.read(|core| {
            let provisional = core.actions(id, now)?;
            Evaluation::from_core(true, provisional.evaluated_at, &provisional.evaluation)
        })
    }

    /// The server's actions for an episode as of the last sync (`None` before any).
    pub fn server_actions(&self, episode_id: String) -> Result<Option<Evaluation>> {
        let id = self::episode_id(&episode_id)?;
        self.read(|core| {
            core.server_actions(id)?.map(|s| Evaluation::from_core(false, s.evaluated_at, &s.evaluation)).transpose()
        })
    }

    /// Every open and overdue action across the caseload at `now`, soonest due first:
    /// the home screen.
    pub fn next_actions(&self, now: SystemTime) -> Result<Vec<NextAction>> {
        let now = time(now, "now")?;
        self.read(|core| {
            core.next_actions(now)
                .iter()
                .map(|next| {
                    Ok(NextAction {
                        episode_id: next.episode.to_string(),
                        patient_ref: next.patient_ref.as_str().to_string(),
                        action: Action::from_core(&next.action)?,
                    })
                })
                .collect()
        })
    }

    /// The episodes the server has refused, with its typed reasons; kept on the device and
    /// offered again when they could succeed (they change, a user signs in, or the
    /// server's copy changes).
    pub fn held_back(&self) -> Result<Vec<HeldBack>> {
        self.read(|core| Ok(core.held_back()?.iter().map(HeldBack::from).collect()))
    }

    /// The user signed in on this device, if any.
    pub fn signed_in_user(&self) -> Result<Option<String>> {
        self.read(|core| Ok(remote::signed_in_user(core)?))
    }

    /// Signs in on this device through the host's transport; the tokens are kept in the
    /// encrypted store, and every record from now on is by `username`. A wrong password
    /// is `SignInNeeded`.
    pub async fn sign_in(
        self: Arc<Self>,
        transport: Arc<dyn Transport>,
        username: String,
        password: String,
    ) -> Result<()> {
        let user = username.clone();
        let request = self.step(move |core| remote::sign_in_request(core, &user, &password)).await?;
        let reply = transport::send(&transport, request).await?;
        self.step(move |core| remote::signed_in(core, &username, reply, Timestamp::now())).await
    }

    /// Starts a sign-in with the trust's identity provider (RFC 8252): `provider` when the
    /// server has several, `redirect_uri` the app's own (one the server has registered for
    /// phones; the server's first when `None`). Returns the address to open in the system
    /// browser. The one-time values stay in the encrypted store, so the app may be stopped
    /// while the browser is open; a new call replaces an unfinished sign-in.
    pub async fn begin_identity_sign_in(
        self: Arc<Self>,
        transport: Arc<dyn Transport>,
        provider: Option<String>,
        redirect_uri: Option<String>,
    ) -> Result<IdentitySignIn> {
        // The one-time values need no store until the server has answered.
        let (request, secrets) = identity::begin_request(provider.as_deref(), redirect_uri.as_deref())?;
        let reply = transport::send(&transport, request).await?;
        let authorization = self.step(move |core| identity::begun(core, secrets, reply, Timestamp::now())).await?;
        Ok(IdentitySignIn {
            provider: authorization.provider,
            authorization_url: authorization.authorization_url,
            redirect_uri: authorization.redirect_uri,
        })
    }

    /// Finishes the sign-in with the address the browser was sent back to: the server
    /// exchanges the code and the device is signed in (tokens kept as a password sign-in
    /// keeps them). Returns the username. `SignInNeeded` says why when it cannot finish
    /// (none pending, expired, refused by the provider or by Tether's mapping);
    /// `TransportFailed` leaves it pending, to try again.
    pub async fn finish_identity_sign_in(
        self: Arc<Self>,
        transport: Arc<dyn Transport>,
        redirect_url: String,
    ) -> Result<String> {
        let request = self.step(move |core| identity::finish_request(core, &redirect_url, Timestamp::now())).await?;
        let reply = transport::send(&transport, request).await?;
        self.step(move |core| identity::finished(core, reply, Timestamp::now())).await
    }

    /// The sign-in with the identity provider under way, if any: what an app shows after
    /// a restart ("finish signing in with …").
    pub fn pending_identity_sign_in(&self) -> Result<Option<PendingIdentitySignIn>> {
        self.read(|core| {
            Ok(identity::pending(core)?.map(|pending| PendingIdentitySignIn {
                provider: pending.provider,
                redirect_uri: pending.redirect_uri,
                started_at: SystemTime::UNIX_EPOCH
                    + std::time::Duration::from_secs(u64::try_from(pending.started_at).unwrap_or(0)),
            }))
        })
    }

    /// Syncs through the host's transport until there is nothing left to say (the same
    /// session as the command line's: token refresh, refused episodes held back). The
    /// core is free for other calls while a request is in flight. A failure part-way, or
    /// the call cancelled, loses nothing. A revoked device's store is wiped here, and the
    /// call answers `WipeRequired`.
    pub async fn sync(self: Arc<Self>, transport: Arc<dyn Transport>) -> Result<SyncSummary> {
        let mut syncing = self.step(|core| Ok(remote::Syncing::new(core))).await?;
        loop {
            let (next, back) = self.syncing(syncing, |core, syncing| syncing.next(core, Timestamp::now())).await?;
            syncing = back;
            let request = match next {
                remote::Next::Done(summary) => return Ok(SyncSummary::from(&summary)),
                remote::Next::Send(request) => request,
            };
            // Neither the lock nor a thread is held here: the network may take seconds.
            let reply = transport::send(&transport, request).await?;
            let ((), back) =
                self.syncing(syncing, move |core, syncing| syncing.answer(core, reply, Timestamp::now())).await?;
            syncing = back;
        }
    }

    /// Closes the store now: waits for a call in flight, closes the database, and from
    /// then on every call answers `Closed` (a sync under way stops at its next step,
    /// losing nothing). Calling it again does no harm. In Kotlin this is `closeStore()`:
    /// `close()` is `AutoCloseable`'s, which frees the object once no call is using it.
    pub fn close(&self) -> Result<()> {
        let mut guard = self.lock()?;
        if let Store::Open(_) = *guard {
            // Dropping the core closes its connection.
            *guard = Store::Closed;
        }
        Ok(())
    }

    /// Deletes the store (signing out for good, or after `WipeRequired`). Every later call
    /// answers `WipeRequired`. Calling it again does no harm, and so does calling it
    /// after `close`.
    pub fn wipe(&self) -> Result<()> {
        let mut guard = self.lock()?;
        if let Store::Open(_) = *guard
            && let Store::Open(core) = std::mem::replace(&mut *guard, Store::Wiped)
        {
            (*core).wipe()?;
            return Ok(());
        }
        *guard = Store::Wiped;
        for suffix in ["", "-wal", "-shm"] {
            let path = self.dir.join(format!("{}{suffix}", client_core::STORE_FILE));
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(TetherError::other(format!("cannot wipe the store: {e}"))),
            }
        }
        Ok(())
    }
}

impl Tether {
    fn lock(&self) -> Result<MutexGuard<'_, Store>> {
        // A panic inside a call may have left the core half-changed in memory (the disk is
        // consistent): refuse to go on rather than guess.
        self.store
            .lock()
            .map_err(|_| TetherError::other("an earlier call failed inside the core: open the store again"))
    }

    /// The open core, or why there is none.
    fn open_core(store: &mut Store) -> Result<&mut Core> {
        match store {
            Store::Open(core) => Ok(core),
            Store::Wiped => Err(TetherError::wipe_required()),
            Store::Closed => Err(TetherError::closed()),
        }
    }

    /// Runs a change on the core.
    fn with<T>(&self, change: impl FnOnce(&mut Core) -> client_core::Result<T>) -> Result<T> {
        let mut guard = self.lock()?;
        Ok(change(Self::open_core(&mut guard)?)?)
    }

    /// Reads from the core.
    fn read<T>(&self, read: impl FnOnce(&Core) -> Result<T>) -> Result<T> {
        let mut guard = self.lock()?;
        read(Self::open_core(&mut guard)?)
    }

    /// Runs one step of an async call on the core, on a thread of the library's own: the
    /// host's thread that polls the call (its main thread, perhaps) never waits on the
    /// lock, the disk or Automerge. A revoked device's store is wiped at once.
    async fn step<T: Send + 'static>(
        self: &Arc<Self>,
        step: impl FnOnce(&mut Core) -> client_core::Result<T> + Send + 'static,
    ) -> Result<T> {
        let this = Arc::clone(self);
        let (sender, answer) = futures_channel::oneshot::channel();
        std::thread::Builder::new()
            .name("tether-core".into())
            .spawn(move || {
                // The caller may have been cancelled meanwhile: the step is done and
                // stored all the same, and its answer goes nowhere.
                let _ = sender.send(this.revocable(step));
            })
            .map_err(|e| TetherError::other(format!("cannot start a thread for the core: {e}")))?;
        answer.await.map_err(|_| TetherError::other("an earlier call failed inside the core: open the store again"))?
    }

    /// [`Tether::step`] for a sync session's steps, which owns the session between them.
    async fn syncing<T: Send + 'static>(
        self: &Arc<Self>,
        mut syncing: remote::Syncing,
        step: impl FnOnce(&mut Core, &mut remote::Syncing) -> client_core::Result<T> + Send + 'static,
    ) -> Result<(T, remote::Syncing)> {
        self.step(move |core| step(core, &mut syncing).map(|value| (value, syncing))).await
    }

    /// Runs a step; a revocation the server reports wipes the store there and then.
    fn revocable<T>(&self, step: impl FnOnce(&mut Core) -> client_core::Result<T>) -> Result<T> {
        let mut guard = self.lock()?;
        match step(Self::open_core(&mut guard)?) {
            Ok(value) => Ok(value),
            Err(client_core::Error::DeviceRevoked) => {
                if let Store::Open(core) = std::mem::replace(&mut *guard, Store::Wiped) {
                    // Wiped now if it can be; otherwise `wipe` deletes the files later.
                    let _ = (*core).wipe();
                }
                Err(TetherError::wipe_required())
            }
            Err(error) => Err(error.into()),
        }
    }
}
