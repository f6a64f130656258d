//! `tether serve`'s configuration: one typed struct from flags and the environment.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;

/// How to run the server.
#[derive(Debug, Clone, clap::Args)]
pub struct ServeConfig {
    /// The database: a SQLite file (created if need be), or a PostgreSQL URL,
    /// `postgres://USER[:PASSWORD]@HOST[:PORT]/DB` (better in TETHER_DB than on the
    /// command line, where other users of the machine may see it); migrated if need be.
    #[arg(long, env = "TETHER_DB", default_value = "tether.db", hide_env_values = true)]
    pub db: crate::Target,
    /// The address to listen on (port 0 picks a free port).
    #[arg(long, env = "TETHER_ADDR", default_value = "127.0.0.1:8080")]
    pub addr: SocketAddr,
    /// The access tokens' signing secret, at least 32 bytes. Give it in the environment,
    /// not as a flag. Without it the server generates one at first start and keeps it in
    /// the database.
    #[arg(long, env = "TETHER_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<Secret>,
    /// How often, in seconds, the server re-evaluates the episodes whose actions the clock
    /// has moved on (started, or fallen overdue), so that counts are right without a sync.
    #[arg(long, env = "TETHER_REEVALUATE_SECS", default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..))]
    pub reevaluate_secs: u64,
    /// The most sync requests written in one transaction (group commit); 1 writes each
    /// alone.
    #[arg(long, env = "TETHER_SYNC_BATCH", default_value_t = crate::commit::DEFAULT_BATCH, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=1024))]
    pub sync_batch: usize,
    /// The sign-in settings (TOML): the trust's OpenID providers, the claims mapping's
    /// file, and whether passwords may still be used. Without it, people sign in with
    /// Tether's own usernames and passwords.
    #[arg(long, env = "TETHER_OIDC_CONFIG")]
    pub oidc_config: Option<PathBuf>,
    /// Seed two teams, users of every role (their passwords printed once) and episodes on
    /// every pathway, if the database has no teams yet.
    #[arg(long)]
    pub demo: bool,
    /// The base of the URIs this deployment's FHIR resources use for Tether's own
    /// identifiers, code systems and extensions (e.g. `https://fhir.example-trust.nhs.uk/tether`).
    #[arg(long, env = "TETHER_FHIR_BASE")]
    pub fhir_base: Option<String>,
    /// The identifier system of the trust's local patient identifier, used for a
    /// `patient_ref` that is not an NHS number (default: `<fhir-base>/Id/patient-ref`).
    #[arg(long, env = "TETHER_FHIR_PATIENT_SYSTEM")]
    pub fhir_patient_system: Option<String>,
    /// What to log, as `LEVEL` or `TARGET=LEVEL,…` (e.g. `info` or `warn,server=debug`).
    #[arg(long, env = "TETHER_LOG", default_value = "info")]
    pub log: String,
}

/// A secret from the environment: its `Debug` never shows it.
#[derive(Clone)]
pub struct Secret(String);

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

// Never fallible: clap would quote a refused value in its error message.
impl From<String> for Secret {
    fn from(text: String) -> Self {
        Self(text)
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}
