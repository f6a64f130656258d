//! End-to-end tests of Tether: a real server on loopback and several offline devices.
//!
//! The harness: [`Server`] runs `tether serve`'s own code in a child process (this
//! crate's `tether-e2e-server` binary, [`server_child`]), so that a test can kill it with
//! SIGKILL and start it again on the same database and port; [`Device`] is a client core
//! in its own encrypted store, syncing over HTTP with the blocking transport; [`proxy`]
//! stands between them and damages sync traffic on purpose; [`oidc`] runs the test OpenID
//! provider and walks a browser and a phone through signing in with it.
//! [`create_accounts`] and [`seed_demo`] make the database the server is started on.
//!
//! Cargo builds the binary for this crate's own tests and benches; a test of another
//! crate that uses the harness (`ffi`'s) needs it built first: `cargo build -p tests
//! --bin tether-e2e-server`, or test the whole workspace. `TETHER_E2E_SERVER` names
//! another copy.

pub mod oidc;
pub mod proxy;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use automerge::ActorId;
use client_core::http::Http;
use client_core::{Core, Error, StoreKey, SyncSummary};
use episode::document::EpisodeDoc;
use episode::{EpisodeId, EventId};
use jiff::Timestamp;
use server::accounts::{self, Password, Role, TeamId, Username};

/// Every test user's password.
pub const PASSWORD: &str = "correct horse battery staple";

const DB_VAR: &str = "TETHER_E2E_DB";
const ADDR_VAR: &str = "TETHER_E2E_ADDR";
const OIDC_VAR: &str = "TETHER_E2E_OIDC_CONFIG";
/// A file for the server's stderr (its log), in `Server::start_at`'s `env`.
pub const STDERR_VAR: &str = "TETHER_E2E_STDERR";

/// The server process's body (the `tether-e2e-server` binary): serves the database named
/// in the environment until killed. False, serving nothing, when run without the harness.
pub fn server_child() -> bool {
    let (Ok(db), Ok(addr)) = (std::env::var(DB_VAR), std::env::var(ADDR_VAR)) else {
        return false;
    };
    let addr: SocketAddr = addr.parse().expect("the harness gives an address");
    let db = server::Target::from(db);
    // A PostgreSQL database has no file to keep a key file beside: it needs a secret.
    let jwt_secret = matches!(db, server::Target::Postgres(_))
        .then(|| server::Secret::from("the end-to-end servers' signing secret, 32+ bytes".to_owned()));
    let log_format = match std::env::var("TETHER_LOG_FORMAT").as_deref() {
        Ok("json") => server::serve::LogFormat::Json,
        _ => server::serve::LogFormat::Text,
    };
    let config = server::config::ServeConfig {
        db,
        addr,
        jwt_secret,
        jwt_previous_secrets: None,
        log: "warn".into(),
        reevaluate_secs: 60,
        // The group commit's batch, from the environment for the benchmarks' comparison.
        sync_batch: std::env::var("TETHER_SYNC_BATCH")
            .ok()
            .and_then(|n| n.parse().ok())
            .unwrap_or(server::commit::DEFAULT_BATCH),
        demo: false,
        // The document cache's bound, from the environment for the benchmarks.
        cache_mib: std::env::var("TETHER_CACHE_MIB")
            .ok()
            .and_then(|n| n.parse().ok())
            .unwrap_or(server::episodes::DEFAULT_CACHE_MIB),
        oidc_config: std::env::var_os(OIDC_VAR).map(PathBuf::from),
        fhir_base: None,
        fhir_patient_system: None,
        max_connections: None,
        header_timeout_secs: 10,
        idle_timeout_secs: 60,
        slow_body_secs: 10,
        body_bytes_in_flight: 64 * 1024 * 1024,
        trusted_proxies: Vec::new(),
        metrics_addr: None,
        // `/metrics` on the main port, for the tests that read a replica's counters.
        metrics_token: std::env::var("TETHER_METRICS_TOKEN").ok().map(server::Secret::from),
        config: None,
        print_config: false,
        log_format,
        tls_cert: None,
        tls_key: None,
        tls_reload_secs: 60,
        epr_fhir: None,
        epr_token_file: None,
        epr_token: None,
        // The alerts end-to-end test names its alerts file and a short outbox lease.
        alerts: std::env::var_os("TETHER_E2E_ALERTS").map(PathBuf::from),
        outbox_lease_secs: std::env::var("TETHER_OUTBOX_LEASE_SECS").ok().and_then(|n| n.parse().ok()).unwrap_or(300),
    };
    let _ = server::serve::init_logging(&std::env::var("TETHER_LOG").unwrap_or_else(|_| "warn".into()), log_format);
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("a runtime");
    if let Err(e) = runtime.block_on(server::serve::run(config)) {
        eprintln!("server child: {e:#}");
        std::process::exit(1);
    }
    true
}

/// The `tether-e2e-server` binary: `TETHER_E2E_SERVER`, or the one cargo built beside the
/// running test or bench (`target/<profile>/`, one directory up from `deps/`).
fn server_exe() -> PathBuf {
    if let Some(exe) = std::env::var_os("TETHER_E2E_SERVER") {
        return PathBuf::from(exe);
    }
    let test = std::env::current_exe().expect("the test binary");
    let name = format!("tether-e2e-server{}", std::env::consts::EXE_SUFFIX);
    let exe = test.parent().and_then(Path::parent).map(|profile| profile.join(&name));
    match exe {
        Some(exe) if exe.exists() => exe,
        _ => {
            panic!("no {name} beside {}: build it with `cargo build -p tests --bin tether-e2e-server`", test.display())
        }
    }
}

/// The variable naming the PostgreSQL server the tests and benchmarks make their
/// databases on, as the URL of a role that may create databases, and its default: the
/// role `.ci/run` creates on a local `pg_ctlcluster 15 main start`.
pub const POSTGRES_VAR: &str = "TETHER_TEST_POSTGRES";
pub const POSTGRES_DEFAULT: &str = "postgres://tether_test:tether-test-password@127.0.0.1:5432/postgres";

/// A PostgreSQL database made for one test or benchmark run and dropped after it.
#[derive(Debug)]
pub struct PgScratch {
    /// The database's URL, which [`Server`] and the helpers here take as a path.
    pub url: PathBuf,
    admin: String,
    name: String,
}

impl PgScratch {
    /// A new empty database; panics naming what to install if there is no PostgreSQL.
    pub fn new() -> Self {
        let admin = std::env::var(POSTGRES_VAR).unwrap_or_else(|_| POSTGRES_DEFAULT.to_owned());
        let name = format!("tether_e2e_{}_{}", std::process::id(), SCRATCH.fetch_add(1, Ordering::Relaxed));
        let url = with_database(&admin, &name);
        let created = postgres::Client::connect(&admin, postgres::NoTls)
            .and_then(|mut client| client.batch_execute(&format!("CREATE DATABASE \"{name}\"")));
        if let Err(error) = created {
            panic!(
                "this test needs PostgreSQL: none usable at {} ({error}). Install and start it \
                 (`apt-get install postgresql-15 && pg_ctlcluster 15 main start`), create a role that may \
                 create databases (see README, \"Tests on PostgreSQL\"), and name it in {POSTGRES_VAR} \
                 (default {POSTGRES_DEFAULT}); or skip these tests with `-- --skip needs_postgres`",
                server::Target::from(admin.as_str())
            );
        }
        Self { url: PathBuf::from(url), admin, name }
    }
}

impl Default for PgScratch {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for PgScratch {
    fn drop(&mut self) {
        if let Ok(mut client) = postgres::Client::connect(&self.admin, postgres::NoTls) {
            let _ = client.batch_execute(&format!("DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)", self.name));
        }
    }
}

/// The size on disk of the PostgreSQL database at `url` (`pg_database_size`).
pub fn pg_database_bytes(url: &Path) -> u64 {
    let url = url.to_str().expect("a URL");
    let mut client = postgres::Client::connect(url, postgres::NoTls).expect("the database");
    let row = client.query_one("SELECT pg_database_size(current_database())", &[]).expect("its size");
    u64::try_from(row.get::<_, i64>(0)).unwrap_or(0)
}

static SCRATCH: AtomicUsize = AtomicUsize::new(0);

/// The URL `admin` with its database replaced by `name`.
fn with_database(admin: &str, name: &str) -> String {
    let (base, query) = admin.split_once('?').map_or((admin, None), |(b, q)| (b, Some(q)));
    let rest = base.split_once("://").map_or(base, |(_, rest)| rest);
    let base = if rest.contains('/') { base.rsplit_once('/').map_or(base, |(b, _)| b) } else { base };
    match query {
        Some(query) => format!("{base}/{name}?{query}"),
        None => format!("{base}/{name}"),
    }
}

/// A user to create.
#[derive(Debug, Clone, Copy)]
pub struct User {
    pub username: &'static str,
    pub role: Role,
    pub teams: &'static [&'static str],
}

/// Opens (creating and migrating) the server's database at `db`: a file, or a
/// `postgres://` URL given as a path (as the benchmarks take `TETHER_BENCH_DB`).
pub fn open_db(db: &Path) -> server::Db {
    let target = match db.to_str() {
        Some(text) => server::Target::from(text),
        None => server::Target::path(db),
    };
    server::Db::open(&target).expect("open the database")
}

/// Runs `f` in one transaction on the database at `db`, and commits it.
pub fn in_transaction<T: Send>(db: &Path, f: impl FnOnce(&mut dyn server::store::Tx) -> T + Send) -> T {
    open_db(db)
        .call_blocking(|conn| {
            let mut tx = conn.transaction()?;
            let out = f(&mut *tx);
            tx.commit()?;
            Ok::<_, server::store::StoreError>(out)
        })
        .expect("a transaction")
}

/// Teams `north` and `south`, and the given users, in a new database at `db`.
pub fn create_accounts(db: &Path, users: &[User]) {
    let now = Timestamp::now();
    let hash = server::auth::password::hash(&Password::new(PASSWORD.into()).expect("a password")).expect("hash");
    in_transaction(db, |tx| {
        for (id, name) in [("north", "North"), ("south", "South")] {
            accounts::add_team(tx, &id.parse().expect("a team id"), name, now).expect("add a team");
        }
        for user in users {
            let teams: Vec<TeamId> = user.teams.iter().map(|t| t.parse().expect("a team id")).collect();
            let username: Username = user.username.parse().expect("a username");
            accounts::add_user(tx, &username, &hash, user.role, &teams, now).expect("add a user");
        }
    });
}

/// A new database at `db` seeded as `tether serve --demo` seeds it (teams north and south,
/// the demo users, episodes DEMO-1001…2003, some overdue); returns each demo user's
/// password by username.
pub fn seed_demo(db: &Path) -> std::collections::HashMap<&'static str, String> {
    let accounts = open_db(db)
        .call_blocking(|conn| server::demo::seed(conn, Timestamp::now()))
        .expect("seed the demo")
        .new_accounts()
        .expect("a new database");
    accounts.into_iter().map(|account| (account.username, account.password)).collect()
}

/// The server, in a child process.
#[derive(Debug)]
pub struct Server {
    child: Option<Child>,
    db: PathBuf,
    pub addr: SocketAddr,
    /// The sign-in settings (`--oidc-config`), if any.
    oidc: Option<PathBuf>,
    /// More environment for the server process (a client secret the settings name).
    env: Vec<(String, String)>,
}

/// A free loopback address for a server (to name it in settings before it starts).
pub fn free_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0").expect("a free port").local_addr().expect("an address")
}

impl Server {
    /// Starts a server on `db` on a free loopback port.
    pub fn start(db: &Path) -> Self {
        Self::start_at(db, free_addr(), None, &[])
    }

    /// Starts a server on `db` at `addr`, with the sign-in settings `oidc` if given and
    /// `env` in its environment.
    pub fn start_at(db: &Path, addr: SocketAddr, oidc: Option<&Path>, env: &[(&str, &str)]) -> Self {
        let env = env.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        let mut server = Self { child: None, db: db.to_path_buf(), addr, oidc: oidc.map(Path::to_path_buf), env };
        server.restart();
        server
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The server process's id while it runs (for its memory in `/proc/<pid>/status`).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The database file the server runs on.
    pub fn db(&self) -> &Path {
        &self.db
    }

    /// Starts the server again (after a kill) on the same database and port.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "the server is running");
        let exe = server_exe();
        // A port just freed by a killed server may take a moment to be free again.
        for _ in 0..50 {
            let mut command = Command::new(&exe);
            command.env(DB_VAR, &self.db).env(ADDR_VAR, self.addr.to_string()).env_remove(OIDC_VAR);
            if let Some(oidc) = &self.oidc {
                command.env(OIDC_VAR, oidc);
            }
            command.envs(self.env.iter().map(|(k, v)| (k, v)));
            // The server's log to a file when the test asks (to read it), else to the test's.
            let stderr = match self.env.iter().find(|(k, _)| k == STDERR_VAR) {
                Some((_, path)) => Stdio::from(
                    std::fs::OpenOptions::new().create(true).append(true).open(path).expect("open the log file"),
                ),
                None => Stdio::inherit(),
            };
            let mut child = command.stdout(Stdio::piped()).stderr(stderr).spawn().expect("start the server child");
            let stdout = child.stdout.take().expect("the child's stdout");
            let mut lines = BufReader::new(stdout).lines();
            let listening = lines.by_ref().map_while(Result::ok).any(|line| line.contains("tether: listening on"));
            if listening {
                // Keep draining stdout so the child never blocks on a full pipe.
                std::thread::spawn(move || lines.for_each(drop));
                self.child = Some(child);
                return;
            }
            let _ = child.kill();
            let _ = child.wait();
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("the server did not start");
    }

    /// Kills the server with SIGKILL: no shutdown, no flush.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().expect("SIGKILL the server");
            child.wait().expect("reap the server");
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A practitioner's device: a client core in its own store.
#[derive(Debug)]
pub struct Device {
    pub core: Core,
    pub dir: tempfile::TempDir,
    pub key: StoreKey,
    pub http: Http,
}

impl Device {
    /// A new device, signed in as `username` to `server`.
    pub fn new(server: &Server, username: &str) -> Self {
        let dir = tempfile::tempdir().expect("a store directory");
        let key = StoreKey::generate().expect("a key");
        let mut core = Core::open(dir.path(), &key).expect("open the store");
        let http = Http::new(&server.url());
        http.login(&mut core, username, PASSWORD, Timestamp::now()).expect("sign in");
        Self { core, dir, key, http }
    }

    /// Syncs until there is nothing left to say.
    pub fn sync(&mut self) -> Result<SyncSummary, Error> {
        self.http.sync(&mut self.core, Timestamp::now)
    }
}

/// A blocking HTTP client that hands back every status rather than failing on 4xx/5xx.
pub fn agent() -> ureq::Agent {
    ureq::Agent::config_builder().http_status_as_error(false).build().into()
}

/// Sends JSON (or nothing) with `method` (and a bearer token if given); the status and
/// the JSON answer (`Null` if there is no body).
pub fn call_json(
    server: &Server,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<serde_json::Value>,
) -> (u16, serde_json::Value) {
    let url = format!("{}{path}", server.url());
    let auth = token.map(|t| format!("Bearer {t}"));
    let response = match (method, body) {
        ("GET", _) => {
            let mut request = agent().get(url);
            if let Some(auth) = &auth {
                request = request.header("Authorization", auth);
            }
            request.call()
        }
        (method, body) => {
            let mut request = match method {
                "PUT" => agent().put(url),
                _ => agent().post(url),
            };
            if let Some(auth) = &auth {
                request = request.header("Authorization", auth);
            }
            request.send_json(body.unwrap_or(serde_json::Value::Null))
        }
    };
    let mut response = response.expect("the server answers");
    let status = response.status().as_u16();
    // Episodes as large as any the server holds (more than ureq's default of 10 MB).
    let text = response.body_mut().with_config().limit(256 << 20).read_to_string().expect("a body");
    let value =
        if text.is_empty() { serde_json::Value::Null } else { serde_json::from_str(&text).expect("a JSON answer") };
    (status, value)
}

/// An access token of `username`, signed in on a console of their own.
pub fn sign_in(server: &Server, username: &str) -> String {
    let device = format!("{username}-console");
    let body = serde_json::json!({"username": username, "password": PASSWORD, "device_id": device});
    let (status, body) = call_json(server, "POST", "/v1/auth/login", None, Some(body));
    assert_eq!(status, 200, "{body}");
    body["access_token"].as_str().expect("an access token").to_string()
}

fn sorted_heads(doc: &mut EpisodeDoc) -> Vec<String> {
    let mut heads: Vec<String> = doc.heads().iter().map(ToString::to_string).collect();
    heads.sort();
    heads
}

/// The server's document of `episode`, read from its database file (with the server
/// running, or killed: opening it recovers the WAL as a restart would).
/// A new database in a new directory with `users`, and the server on it. The directory
/// holds the database: keep it as long as the server.
pub fn start(users: &[User]) -> (tempfile::TempDir, Server) {
    let dir = tempfile::tempdir().expect("a directory");
    let db = dir.path().join("tether.db");
    create_accounts(&db, users);
    let server = Server::start(&db);
    (dir, server)
}

pub fn server_document(db: &Path, episode: EpisodeId) -> Option<EpisodeDoc> {
    server_documents(db, &[episode]).pop().flatten()
}

/// The server's documents of `episodes`, in order, read with one connection (opening the
/// database checks the whole file, so it is opened once).
pub fn server_documents(db: &Path, episodes: &[EpisodeId]) -> Vec<Option<EpisodeDoc>> {
    let actor = ActorId::from(vec![0xaa; 16]);
    open_db(db)
        .call_blocking(|conn| {
            episodes
                .iter()
                .map(|&episode| {
                    Ok(server::episodes::load(conn, episode, &actor)?.map(server::episodes::Stored::into_doc))
                })
                .collect::<Result<Vec<_>, server::store::StoreError>>()
        })
        .expect("load the episodes")
}

/// The heads of the server's document of `episode`, as sorted hex strings.
pub fn server_heads(db: &Path, episode: EpisodeId) -> Vec<String> {
    sorted_heads(&mut server_document(db, episode).expect("the server holds the episode"))
}

/// The heads of a device's document of `episode`, as sorted hex strings.
pub fn device_heads(core: &mut Core, episode: EpisodeId) -> Vec<String> {
    let bytes = core.export_episode(episode).expect("export the episode");
    sorted_heads(&mut EpisodeDoc::load(&bytes, ActorId::from(vec![0xbb; 16])).expect("a document"))
}

/// The ids of an episode's records on a device, checking that none is there twice.
pub fn event_ids(core: &Core, episode: EpisodeId) -> BTreeSet<EventId> {
    let events = &core.episode(episode).expect("the device holds the episode").events;
    let ids: BTreeSet<EventId> = events.iter().map(|e| e.id).collect();
    assert_eq!(ids.len(), events.len(), "a record is on the device twice");
    ids
}

/// Asserts that every device holds exactly the `expected` episodes, each with exactly the
/// expected records (none twice), with the same heads as the server's document, nothing
/// held back, and the server's actions as last received equal to what the device itself
/// computes from the same document at the server's moment.
pub fn assert_converged(
    db: &Path,
    devices: &mut [(String, &mut Core)],
    expected: &BTreeMap<EpisodeId, BTreeSet<EventId>>,
) {
    let heads: BTreeMap<EpisodeId, Vec<String>> = expected.keys().map(|&id| (id, server_heads(db, id))).collect();
    for (name, core) in devices.iter_mut() {
        let held: BTreeSet<EpisodeId> = core.episodes(Timestamp::now()).iter().map(|e| e.id).collect();
        assert_eq!(held, expected.keys().copied().collect(), "{name} holds other episodes than were made");
        assert!(core.held_back().expect("read").is_empty(), "{name} had episodes refused");
        for (&episode, events) in expected {
            assert_eq!(&event_ids(core, episode), events, "{name}'s records of {episode}");
            assert_eq!(device_heads(core, episode), heads[&episode], "{name}: the heads of {episode}");
            let theirs = core.server_actions(episode).expect("read").expect("the server's actions");
            let ours = core.actions(episode, theirs.evaluated_at).expect("local actions");
            assert_eq!(ours.evaluation.actions, theirs.evaluation.actions, "{name}: the actions of {episode}");
        }
    }
}
