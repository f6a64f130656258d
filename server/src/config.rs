//! `tether serve`'s configuration: one typed struct from flags and the environment.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
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
    /// not as a flag. Required on PostgreSQL. Without it the server uses the key file
    /// beside the SQLite database (`DB.keys`), made with a new random key, 0600, at first
    /// start.
    #[arg(long, env = "TETHER_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<Secret>,
    /// Earlier signing secrets, one a line, that still verify (with TETHER_JWT_SECRET,
    /// during a rotation). Give them in the environment.
    #[arg(long, env = "TETHER_JWT_PREVIOUS_SECRETS", hide_env_values = true)]
    pub jwt_previous_secrets: Option<Secret>,
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
    /// The alerts file (TOML): per team, whom an urgent action's owner is reached by
    /// (webhook, email), the working hours and the on-call contact, and the SMTP relay.
    /// See docs/examples/alerts.toml. Without it no alerts are sent.
    #[arg(long, env = "TETHER_ALERTS")]
    pub alerts: Option<PathBuf>,
    /// Seconds a claim on an outbox message (an alert) lasts: a server that dies while
    /// sending leaves the message to be sent again this long after it claimed it. Longer
    /// than a send's own timeout (15 seconds).
    #[arg(long, env = "TETHER_OUTBOX_LEASE_SECS", default_value_t = 300, value_parser = clap::value_parser!(u64).range(20..))]
    pub outbox_lease_secs: u64,
    /// The most connections open at once; at the cap the idlest is closed to make room.
    /// By default the open-file limit (`ulimit -n`) less 64, at most 4096.
    #[arg(long, env = "TETHER_MAX_CONNECTIONS", value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    pub max_connections: Option<usize>,
    /// Seconds a request's headers may take to arrive (from their first byte, or from the
    /// connection's opening).
    #[arg(long, env = "TETHER_HEADER_TIMEOUT_SECS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    pub header_timeout_secs: u64,
    /// Seconds a connection may stay open with no request in progress.
    #[arg(long, env = "TETHER_IDLE_TIMEOUT_SECS", default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..))]
    pub idle_timeout_secs: u64,
    /// Seconds a request body may take before it must average at least 1 KiB a second.
    #[arg(long, env = "TETHER_SLOW_BODY_SECS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    pub slow_body_secs: u64,
    /// Request body bytes held at once across all requests; a body waits (at most 30
    /// seconds, then 503) for room. At least the largest body a route takes (32 MiB).
    #[arg(long, env = "TETHER_BODY_BYTES_IN_FLIGHT", default_value_t = 64 * 1024 * 1024,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(crate::bodies::MAX_DECLARED_BYTES..))]
    pub body_bytes_in_flight: usize,
    /// A reverse proxy in front of the server (repeat, or comma-separated in the
    /// environment): for requests from it, the client's address (for the failed sign-in
    /// throttle) is the last untrusted hop in `X-Forwarded-For`. Without it that header is
    /// ignored and the socket's peer is the client.
    #[arg(long = "trusted-proxy", env = "TETHER_TRUSTED_PROXIES", value_delimiter = ',')]
    pub trusted_proxies: Vec<IpAddr>,
    /// Serve `/metrics` (and `/healthz`) on this second address, `HOST:PORT`, or `PORT`
    /// alone for 127.0.0.1: keep it on loopback or a private network for Prometheus.
    #[arg(long, env = "TETHER_METRICS_ADDR", value_parser = metrics_addr)]
    pub metrics_addr: Option<SocketAddr>,
    /// A bearer token that opens `/metrics` on the main port too (at least 16 bytes). Give
    /// it in the environment. Without it `/metrics` on the main port answers 404.
    #[arg(long, env = "TETHER_METRICS_TOKEN", hide_env_values = true)]
    pub metrics_token: Option<Secret>,
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

/// `--metrics-addr`: `HOST:PORT`, or a port alone on loopback.
fn metrics_addr(text: &str) -> Result<SocketAddr, String> {
    if let Ok(port) = text.parse::<u16>() {
        return Ok(SocketAddr::from(([127, 0, 0, 1], port)));
    }
    text.parse().map_err(|_| "give HOST:PORT (e.g. 127.0.0.1:9464), or a port alone for loopback".to_string())
}

/// What the routes need of the configuration, in `AppState`.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// See `ServeConfig::trusted_proxies`.
    pub trusted_proxies: Vec<IpAddr>,
    /// See `ServeConfig::metrics_token`.
    pub metrics_token: Option<Secret>,
}

/// The shortest metrics token accepted.
pub const MIN_METRICS_TOKEN_BYTES: usize = 16;

impl ServeConfig {
    /// The options the routes read; refuses a metrics token too short to be one.
    pub fn options(&self) -> anyhow::Result<Options> {
        if let Some(token) = &self.metrics_token {
            anyhow::ensure!(
                token.expose().len() >= MIN_METRICS_TOKEN_BYTES,
                "TETHER_METRICS_TOKEN must be at least {MIN_METRICS_TOKEN_BYTES} bytes long"
            );
        }
        Ok(Options { trusted_proxies: self.trusted_proxies.clone(), metrics_token: self.metrics_token.clone() })
    }

    /// The edges' limits (`listen`, `bodies`) these flags set.
    pub fn limits(&self) -> crate::listen::Limits {
        let secs = std::time::Duration::from_secs;
        crate::listen::Limits {
            max_connections: self.max_connections.unwrap_or_else(crate::listen::default_max_connections),
            header_timeout: secs(self.header_timeout_secs),
            idle_timeout: secs(self.idle_timeout_secs),
            bodies: crate::bodies::Limits {
                bytes_in_flight: self.body_bytes_in_flight,
                slow_after: secs(self.slow_body_secs),
                ..crate::bodies::Limits::default()
            },
        }
    }
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

#[cfg(test)]
mod tests {
    use super::metrics_addr;

    #[test]
    fn a_metrics_port_alone_is_on_loopback() {
        assert_eq!(metrics_addr("9464").expect("a port").to_string(), "127.0.0.1:9464");
        assert_eq!(metrics_addr("10.0.0.5:9464").expect("an address").to_string(), "10.0.0.5:9464");
        assert!(metrics_addr("metrics.example").is_err());
    }
}
