//! `--db`: a SQLite file's path, or a `postgres://` (or `postgresql://`) URL.
//!
//! A URL may carry a password. It is kept only in the URL itself, which nothing prints:
//! `Display` and `Debug` show `postgres://USER@HOST:PORT/DB`, and every error from
//! opening has the password replaced (`Target::redact`). Parsing never fails here,
//! because clap quotes a refused value in its error; a bad URL is refused when opened,
//! in words that do not repeat it.

use std::fmt;
use std::path::{Path, PathBuf};

/// Where the server's database is.
#[derive(Clone)]
pub enum Target {
    Sqlite(PathBuf),
    Postgres(PgUrl),
}

/// A PostgreSQL connection URL, as given.
#[derive(Clone)]
pub struct PgUrl {
    url: String,
}

impl PgUrl {
    /// The parsed configuration, or why the URL is refused (without repeating it).
    pub(crate) fn config(&self) -> Result<::postgres::Config, String> {
        self.url.parse::<::postgres::Config>().map_err(|e| {
            format!(
                "--db is not a usable PostgreSQL URL ({}): expected postgres://USER[:PASSWORD]@HOST[:PORT]/DB",
                self.redact(&e.to_string())
            )
        })
    }

    /// The password the URL carries, if any, as given in the URL and as decoded.
    fn passwords(&self) -> Vec<String> {
        let mut out = Vec::new();
        if let Some(rest) = self.url.split_once("://").map(|(_, rest)| rest)
            && let Some((userinfo, _)) = rest.split_once('@')
            && let Some((_, password)) = userinfo.split_once(':')
            && !password.is_empty()
        {
            out.push(password.to_owned());
        }
        if let Ok(config) = self.url.parse::<::postgres::Config>()
            && let Some(password) = config.get_password()
            && !password.is_empty()
        {
            out.push(String::from_utf8_lossy(password).into_owned());
        }
        if let Some((_, query)) = self.url.split_once('?') {
            for pair in query.split('&') {
                if let Some(("password", password)) = pair.split_once('=')
                    && !password.is_empty()
                {
                    out.push(password.to_owned());
                }
            }
        }
        out
    }

    /// `text` with every form of the password replaced.
    pub(crate) fn redact(&self, text: &str) -> String {
        let mut text = text.to_owned();
        for password in self.passwords() {
            text = text.replace(&password, "<password>");
        }
        text
    }
}

impl fmt::Display for PgUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Ok(config) = self.url.parse::<::postgres::Config>() else {
            return f.write_str("postgres://<unreadable URL>");
        };
        let user = config.get_user().unwrap_or("");
        let hosts: Vec<String> = config
            .get_hosts()
            .iter()
            .zip(config.get_ports().iter().copied().chain(std::iter::repeat(5432)))
            .map(|(host, port)| match host {
                ::postgres::config::Host::Tcp(name) => format!("{name}:{port}"),
                #[cfg(unix)]
                ::postgres::config::Host::Unix(path) => format!("{}:{port}", path.display()),
            })
            .collect();
        let db = config.get_dbname().unwrap_or(user);
        let at = if user.is_empty() { String::new() } else { format!("{user}@") };
        let url = format!("postgres://{at}{}/{db}", hosts.join(","));
        f.write_str(&self.redact(&url))
    }
}

impl fmt::Debug for PgUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PgUrl({self})")
    }
}

impl Target {
    /// A SQLite file.
    pub fn path(path: impl Into<PathBuf>) -> Self {
        Self::Sqlite(path.into())
    }

    /// The SQLite file's path, if this is one.
    pub fn as_path(&self) -> Option<&Path> {
        match self {
            Self::Sqlite(path) => Some(path),
            Self::Postgres(_) => None,
        }
    }
}

// Never fallible: clap would quote a refused value (and its password) in its error.
impl From<String> for Target {
    fn from(text: String) -> Self {
        // Any case of the scheme is a URL (never a file name that would carry a password
        // into an error message); the client library reads only the lower case.
        match text.split_once("://") {
            Some((scheme, rest))
                if scheme.eq_ignore_ascii_case("postgres") || scheme.eq_ignore_ascii_case("postgresql") =>
            {
                Self::Postgres(PgUrl { url: format!("{}://{rest}", scheme.to_ascii_lowercase()) })
            }
            _ => Self::Sqlite(PathBuf::from(text)),
        }
    }
}

impl From<&str> for Target {
    fn from(text: &str) -> Self {
        Self::from(text.to_owned())
    }
}

impl std::str::FromStr for Target {
    type Err = std::convert::Infallible;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Ok(Self::from(text))
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Sqlite(path) => write!(f, "{}", path.display()),
            Self::Postgres(url) => write!(f, "{url}"),
        }
    }
}

impl fmt::Debug for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Sqlite(path) => f.debug_tuple("Sqlite").field(path).finish(),
            Self::Postgres(url) => f.debug_tuple("Postgres").field(url).finish(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_url_shows_everything_but_its_password() {
        for given in [
            "postgres://tether:s3cret-Pa55@db.example:5433/tether",
            "postgresql://tether:s3cret-Pa55@db.example:5433/tether?sslmode=disable",
            "postgres://tether@db.example:5433/tether?password=s3cret-Pa55",
            "POSTGRES://tether:s3cret%2DPa55@db.example:5433/tether",
        ] {
            let target = Target::from(given);
            assert!(matches!(target, Target::Postgres(_)), "{given} is a URL");
            let shown = format!("{target} {target:?}");
            assert!(!shown.contains("s3cret"), "{shown}");
            assert!(shown.contains("tether@db.example:5433/tether"), "{shown}");
        }
    }

    #[test]
    fn anything_else_is_a_path() {
        assert_eq!(Target::from("tether.db").as_path(), Some(Path::new("tether.db")));
        assert_eq!(Target::from("./postgres://x").as_path(), Some(Path::new("./postgres://x")));
    }

    #[test]
    fn an_unusable_url_is_refused_without_its_password() {
        let Target::Postgres(url) = Target::from("postgres://u:s3cret@host:notaport/db") else { panic!("a URL") };
        let message = url.config().expect_err("a bad port");
        assert!(!message.contains("s3cret"), "{message}");
        assert!(message.contains("not a usable PostgreSQL URL"), "{message}");
        assert!(!url.to_string().contains("s3cret"));
    }
}
