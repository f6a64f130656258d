//! `tether serve`'s configuration: one typed struct from flags, the environment and a
//! TOML file, in that order of precedence (a flag over its `TETHER_…` variable over the
//! file's key over the default).
//!
//! The file's keys are the struct's field names (`addr`, `header_timeout_secs`,
//! `trusted_proxies`, …). Rather than a second, hand-kept parser, each key the flags and
//! the environment left unset becomes its flag, and clap parses the whole again: every
//! value is checked by the one parser, with the one set of ranges.

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use clap::parser::ValueSource;

/// How to run the server.
#[derive(Debug, Clone, clap::Args)]
pub struct ServeConfig {
    /// A TOML file of settings: any of these flags' long names with `_` for `-`
    /// (`addr = "0.0.0.0:8443"`, `trusted_proxies = ["10.0.0.2"]`). A flag or its
    /// environment variable overrides the file. Keep it 0600 if it holds a secret.
    #[arg(long, env = "TETHER_CONFIG")]
    pub config: Option<PathBuf>,
    /// Print the settings in force (from flags, environment, file and defaults; secrets
    /// masked) as TOML, and exit.
    #[arg(long)]
    pub print_config: bool,
    /// The database: a SQLite file (created if need be), or a PostgreSQL URL,
    /// `postgres://USER[:PASSWORD]@HOST[:PORT]/DB` (better in TETHER_DB than on the
    /// command line, where other users of the machine may see it); migrated if need be.
    #[arg(long, env = "TETHER_DB", default_value = "tether.db", hide_env_values = true)]
    pub db: crate::Target,
    /// The address to listen on (port 0 picks a free port).
    #[arg(long, env = "TETHER_ADDR", default_value = "127.0.0.1:8080")]
    pub addr: SocketAddr,
    /// Serve HTTPS with this PEM certificate chain (with --tls-key). Reloaded when the
    /// file changes (see --tls-reload-secs).
    #[arg(long, env = "TETHER_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The PEM private key of --tls-cert (0600, the server's user's only).
    #[arg(long, env = "TETHER_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// How often, in seconds, the certificate and key files are checked for a change.
    #[arg(long, env = "TETHER_TLS_RELOAD_SECS", default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..))]
    pub tls_reload_secs: u64,
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
    /// The memory, in MiB, the episode document cache may hold (an estimate: documents
    /// in memory take many times their stored size); the least recently used documents
    /// are dropped to stay within it. 0 caches nothing (every request loads what it uses).
    #[arg(long, env = "TETHER_CACHE_MIB", default_value_t = crate::episodes::DEFAULT_CACHE_MIB, value_parser = clap::value_parser!(u64).range(0..=1024 * 1024))]
    pub cache_mib: u64,
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
    #[arg(long, env = "TETHER_DEMO")]
    pub demo: bool,
    /// The base of the URIs this deployment's FHIR resources use for Tether's own
    /// identifiers, code systems and extensions (e.g. `https://fhir.example-trust.nhs.uk/tether`).
    #[arg(long, env = "TETHER_FHIR_BASE")]
    pub fhir_base: Option<String>,
    /// The identifier system of the trust's local patient identifier, used for a
    /// `patient_ref` that is not an NHS number (default: `<fhir-base>/Id/patient-ref`).
    #[arg(long, env = "TETHER_FHIR_PATIENT_SYSTEM")]
    pub fhir_patient_system: Option<String>,
    /// File every record in the trust's EPR: the FHIR R4 endpoint a transaction Bundle is
    /// POSTed to (its base URL), https:// (or http:// to this machine). Each record is
    /// owed to it as the server stores it, and filed once, with retries; the server then
    /// records `filed_to_epr` itself. Give every replica the same value: a server started
    /// without it stops owing new records. Filing by hand stays.
    #[arg(long, env = "TETHER_EPR_FHIR")]
    pub epr_fhir: Option<String>,
    /// A file holding the bearer token sent to the EPR (its first line; the file should
    /// be readable by the server's user alone).
    #[arg(long, env = "TETHER_EPR_TOKEN_FILE", conflicts_with = "epr_token")]
    pub epr_token_file: Option<PathBuf>,
    /// The bearer token sent to the EPR. Give it in the environment, not as a flag.
    #[arg(long, env = "TETHER_EPR_TOKEN", hide_env_values = true)]
    pub epr_token: Option<Secret>,
    /// What to log, as `LEVEL` or `TARGET=LEVEL,…` (e.g. `info` or `warn,server=debug`).
    #[arg(long, env = "TETHER_LOG", default_value = "info")]
    pub log: String,
    /// How log lines are written: `text`, or `json` (one object a line, each line of a
    /// request with its `request_id`, which the answer's `x-request-id` also gives).
    #[arg(long, env = "TETHER_LOG_FORMAT", value_enum, default_value_t = crate::serve::LogFormat::Text)]
    pub log_format: crate::serve::LogFormat,
}

/// The settings whose values `--print-config` masks.
const SECRETS: &[&str] = &["jwt_secret", "jwt_previous_secrets", "metrics_token"];

/// The arguments that are not settings, and so not keys of the file.
const NOT_SETTINGS: &[&str] = &["config", "print_config", "help"];

/// The flags for the settings in the file at `path` that `matches` (serve's own, from
/// the command line and environment) left at their defaults, and the keys they came from.
///
/// An unknown key, a table or a value of the wrong kind is an error naming the key (a
/// secret's value is never quoted).
pub fn file_flags(
    serve: &clap::Command,
    matches: &clap::ArgMatches,
    path: &Path,
) -> anyhow::Result<(Vec<OsString>, BTreeSet<String>)> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| anyhow::anyhow!("cannot read the configuration file {}: {e}", path.display()))?;
    warn_if_readable(path, &text);
    let table: toml::Table =
        toml::from_str(&text).map_err(|e| anyhow::anyhow!("{}: not valid TOML: {e}", path.display()))?;
    let mut flags = Vec::new();
    let mut keys = BTreeSet::new();
    for (key, value) in &table {
        let arg = serve
            .get_arguments()
            .find(|arg| arg.get_id().as_str() == key && !NOT_SETTINGS.contains(&key.as_str()))
            .ok_or_else(|| anyhow::anyhow!("{}: unknown key `{key}`", path.display()))?;
        let given = matches!(matches.value_source(key), Some(ValueSource::CommandLine | ValueSource::EnvVariable));
        let long = arg.get_long().ok_or_else(|| anyhow::anyhow!("{}: `{key}` is not a setting", path.display()))?;
        let flag = OsString::from(format!("--{long}"));
        let bad = |want: &str| anyhow::anyhow!("{}: `{key}` must be {want}", path.display());
        let scalar = |value: &toml::Value| match value {
            toml::Value::String(text) => Ok(text.clone()),
            toml::Value::Integer(n) => Ok(n.to_string()),
            _ => Err(bad("a string or an integer")),
        };
        let mut values = Vec::new();
        if !arg.get_action().takes_values() {
            match value {
                toml::Value::Boolean(true) => flags_push(&mut values, &flag, None),
                toml::Value::Boolean(false) => {}
                _ => return Err(bad("true or false")),
            }
        } else if matches!(arg.get_action(), clap::ArgAction::Append) {
            let toml::Value::Array(items) = value else { return Err(bad("an array")) };
            for item in items {
                flags_push(&mut values, &flag, Some(scalar(item)?));
            }
        } else {
            flags_push(&mut values, &flag, Some(scalar(value)?));
        }
        // The values through the flag's own parser now, so that an error names the key
        // and the file rather than a flag nobody typed.
        // (Alone: without its environment variable or the other arguments it requires.)
        let alone = clap::Command::new("file")
            .no_binary_name(true)
            .arg(arg.clone().env(None::<&str>).requires(clap::builder::Resettable::<clap::Id>::Reset).required(false));
        if let Err(e) = alone.try_get_matches_from(&values) {
            let secret = SECRETS.contains(&key.as_str()) || key == "db";
            let why = match std::error::Error::source(&e) {
                Some(source) if !secret => format!(": {source}"),
                _ => String::new(),
            };
            anyhow::bail!("{}: `{key}`: not a valid value{why}", path.display());
        }
        if !given {
            flags.extend(values);
            keys.insert(key.clone());
        }
    }
    Ok((flags, keys))
}

fn flags_push(values: &mut Vec<OsString>, flag: &OsString, value: Option<String>) {
    values.push(flag.clone());
    if let Some(value) = value {
        values.push(value.into());
    }
}

/// A secret in a file others can read is worth a word before it is used.
fn warn_if_readable(path: &Path, text: &str) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let holds_secret = SECRETS.iter().any(|key| text.contains(key)) || text.contains("postgres");
        if let Ok(meta) = std::fs::metadata(path)
            && holds_secret
            && meta.permissions().mode() & 0o077 != 0
        {
            eprintln!("tether: warning: {} may hold a secret and others can read it (chmod 600 it)", path.display());
        }
    }
    #[cfg(not(unix))]
    let _ = (path, text);
}

/// The settings in force, as TOML that `--config` reads back, each with where it came
/// from; secrets are masked, and a PostgreSQL URL shows no password.
pub fn render(serve: &clap::Command, matches: &clap::ArgMatches, from_file: &BTreeSet<String>) -> String {
    let mut out = String::from("# tether serve: the settings in force (secrets masked)\n");
    for arg in serve.get_arguments() {
        let id = arg.get_id().as_str();
        if NOT_SETTINGS.contains(&id) {
            continue;
        }
        let source = if from_file.contains(id) {
            "file".to_string()
        } else {
            match matches.value_source(id) {
                Some(ValueSource::CommandLine) => "flag".to_string(),
                Some(ValueSource::EnvVariable) => {
                    format!(
                        "environment ({})",
                        arg.get_env().map(|e| e.to_string_lossy().into_owned()).unwrap_or_default()
                    )
                }
                Some(ValueSource::DefaultValue) => "default".to_string(),
                _ => {
                    out.push_str(&format!("# {id}: not set\n"));
                    continue;
                }
            }
        };
        let raw: Vec<String> = matches
            .get_raw(id)
            .map(|values| values.map(|v| v.to_string_lossy().into_owned()).collect())
            .unwrap_or_default();
        let shown = |text: &str| -> String {
            if SECRETS.contains(&id) {
                quote("<redacted>")
            } else if id == "db" {
                quote(&crate::Target::from(text).to_string())
            } else if !arg.get_action().takes_values() || text.parse::<i64>().is_ok() {
                text.to_string()
            } else {
                quote(text)
            }
        };
        let value = if matches!(arg.get_action(), clap::ArgAction::Append) {
            format!("[{}]", raw.iter().map(|v| shown(v)).collect::<Vec<_>>().join(", "))
        } else {
            raw.first().map(|v| shown(v)).unwrap_or_default()
        };
        out.push_str(&format!("{id} = {value}  # {source}\n"));
    }
    out
}

/// A TOML basic string (JSON's escapes are TOML's).
fn quote(text: &str) -> String {
    serde_json::Value::String(text.to_string()).to_string()
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

    /// The EPR's bearer token, from `--epr-token-file` or `TETHER_EPR_TOKEN`; refuses
    /// an empty one, and one without `--epr-fhir` to send it to. An error never quotes
    /// the file's contents.
    pub fn epr_token(&self) -> anyhow::Result<Option<Secret>> {
        let token = match (&self.epr_token_file, &self.epr_token) {
            (Some(path), _) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| anyhow::anyhow!("cannot read --epr-token-file {}: {}", path.display(), e.kind()))?;
                let first = text.lines().next().unwrap_or_default().trim().to_owned();
                anyhow::ensure!(!first.is_empty(), "--epr-token-file {} holds no token", path.display());
                Some(Secret::from(first))
            }
            (None, Some(token)) => {
                anyhow::ensure!(!token.expose().trim().is_empty(), "TETHER_EPR_TOKEN is empty");
                Some(Secret::from(token.expose().trim().to_owned()))
            }
            (None, None) => None,
        };
        anyhow::ensure!(
            token.is_none() || self.epr_fhir.is_some(),
            "an EPR token was given without --epr-fhir to send it to"
        );
        Ok(token)
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
