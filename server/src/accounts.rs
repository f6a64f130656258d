//! Teams and users: the typed names they go by, and their rows in the database.
//!
//! Functions that write take a `&Transaction`, readers a `&Connection`.

use std::fmt;
use std::str::FromStr;

use rusqlite::{Connection, ErrorCode, OptionalExtension, Transaction, params};
use serde::{Deserialize, Serialize};

/// What a user may do. Everyone sees only their own teams' episodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
#[value(rename_all = "snake_case")]
pub enum Role {
    Practitioner,
    TeamManager,
    SafeguardingLead,
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Practitioner => "practitioner",
            Self::TeamManager => "team_manager",
            Self::SafeguardingLead => "safeguarding_lead",
            Self::Admin => "admin",
        }
    }
}

impl FromStr for Role {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "practitioner" => Ok(Self::Practitioner),
            "team_manager" => Ok(Self::TeamManager),
            "safeguarding_lead" => Ok(Self::SafeguardingLead),
            "admin" => Ok(Self::Admin),
            _ => Err("unknown role, expected practitioner, team_manager, safeguarding_lead or admin".into()),
        }
    }
}

/// Checks a name given at the edge: 1 to `max` characters, no spaces or control characters.
fn check_name(what: &str, text: &str, max: usize) -> Result<(), String> {
    if text.is_empty() {
        return Err(format!("must not be empty ({what})"));
    }
    if text.chars().count() > max {
        return Err(format!("must be at most {max} characters ({what})"));
    }
    if text.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!("must not contain spaces or control characters ({what})"));
    }
    Ok(())
}

macro_rules! name_type {
    ($(#[$doc:meta])* $name:ident, $what:literal, $max:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            pub const MAX_CHARS: usize = $max;

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = String;

            fn try_from(text: String) -> Result<Self, String> {
                check_name($what, &text, $max)?;
                Ok(Self(text))
            }
        }

        impl FromStr for $name {
            type Err = String;

            fn from_str(text: &str) -> Result<Self, String> {
                Self::try_from(text.to_string())
            }
        }

        impl From<$name> for String {
            fn from(name: $name) -> String {
                name.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

name_type!(
    /// A team's id, such as `team-north`.
    TeamId, "a team id", 64
);
name_type!(
    /// A user's sign-in name.
    Username, "a username", 64
);
/// The id a phone (or the field CLI) gives itself, registered to it at its first sign-in;
/// refresh tokens are bound to it, and its records carry it. 1 to 128 of the letters
/// `A–Z a–z`, the digits and `- _ .`: a device id is shown on every record of the
/// timeline, so it holds nothing that could pass for another (no spaces, no look-alike
/// letters, no bidirectional controls) and no `:`, which the server keeps for its own
/// devices (`server:…`, `dashboard:…`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct DeviceId(String);

impl DeviceId {
    pub const MAX_CHARS: usize = 128;

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for DeviceId {
    type Error = String;

    fn try_from(text: String) -> Result<Self, String> {
        if text.is_empty() {
            return Err("must not be empty (a device id)".into());
        }
        if text.len() > Self::MAX_CHARS {
            return Err(format!("must be at most {} characters (a device id)", Self::MAX_CHARS));
        }
        if !text.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.')) {
            return Err("must hold only the letters A-Z and a-z, the digits and - _ . (a device id)".into());
        }
        Ok(Self(text))
    }
}

impl FromStr for DeviceId {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        Self::try_from(text.to_string())
    }
}

impl From<DeviceId> for String {
    fn from(id: DeviceId) -> String {
        id.0
    }
}

impl fmt::Display for DeviceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The secret a device proves it is itself with, when it signs in under its id: made by
/// the device, sent at every sign-in, and kept by the server only as its SHA-256. Device
/// ids are not secret (every record carries one); this is. 32 to 256 printable ASCII
/// characters (the core sends 64 hexadecimal digits).
#[derive(Clone, Deserialize)]
#[serde(try_from = "String")]
pub struct DeviceKey(String);

impl DeviceKey {
    pub fn as_bytes(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

impl TryFrom<String> for DeviceKey {
    type Error = String;

    fn try_from(text: String) -> Result<Self, String> {
        if !(32..=256).contains(&text.len()) || !text.bytes().all(|b| b.is_ascii_graphic()) {
            return Err("must be 32 to 256 printable ASCII characters (a device key)".into());
        }
        Ok(Self(text))
    }
}

impl fmt::Debug for DeviceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DeviceKey(<secret>)")
    }
}

/// A password as typed: never empty, never printed.
#[derive(Clone)]
pub struct Password(String);

impl Password {
    pub fn new(text: String) -> Result<Self, String> {
        if text.is_empty() {
            return Err("the password is empty".into());
        }
        Ok(Self(text))
    }

    pub fn as_bytes(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password(<secret>)")
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AccountError {
    #[error("a team with id `{0}` already exists")]
    DuplicateTeam(TeamId),
    #[error("no team with id `{0}`; add it first with `tether team add`")]
    UnknownTeam(TeamId),
    #[error("a user named `{0}` already exists")]
    DuplicateUser(Username),
    #[error("no user named `{0}`")]
    UnknownUser(Username),
    #[error("the team's name must not be empty")]
    EmptyTeamName,
    #[error(transparent)]
    Sqlite(#[from] rusqlite::Error),
}

fn is_unique_violation(error: &rusqlite::Error) -> bool {
    matches!(error, rusqlite::Error::SqliteFailure(e, _) if e.code == ErrorCode::ConstraintViolation)
}

pub fn add_team(tx: &Transaction<'_>, id: &TeamId, name: &str, now: jiff::Timestamp) -> Result<(), AccountError> {
    let name = name.trim();
    if name.is_empty() {
        return Err(AccountError::EmptyTeamName);
    }
    tx.execute(
        "INSERT INTO teams (id, name, created_at) VALUES (?1, ?2, ?3)",
        params![id.as_str(), name, now.to_string()],
    )
    .map_err(|e| if is_unique_violation(&e) { AccountError::DuplicateTeam(id.clone()) } else { e.into() })?;
    Ok(())
}

/// Adds a user with an already hashed password; returns the new user's id.
pub fn add_user(
    tx: &Transaction<'_>,
    username: &Username,
    password_hash: &str,
    role: Role,
    teams: &[TeamId],
    now: jiff::Timestamp,
) -> Result<String, AccountError> {
    for team in teams {
        let known: Option<i64> =
            tx.query_row("SELECT 1 FROM teams WHERE id = ?1", [team.as_str()], |r| r.get(0)).optional()?;
        if known.is_none() {
            return Err(AccountError::UnknownTeam(team.clone()));
        }
    }
    let id = uuid::Uuid::now_v7().to_string();
    tx.execute(
        "INSERT INTO users (id, username, password_hash, role, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
        params![id, username.as_str(), password_hash, role.as_str(), now.to_string()],
    )
    .map_err(|e| if is_unique_violation(&e) { AccountError::DuplicateUser(username.clone()) } else { e.into() })?;
    for team in teams {
        tx.execute("INSERT OR IGNORE INTO user_teams (user_id, team_id) VALUES (?1, ?2)", [&id, team.as_str()])?;
    }
    Ok(id)
}

/// Disables (or enables again) a user. A disabled user cannot sign in, and every token
/// they hold stops working at once.
pub fn set_disabled(tx: &Transaction<'_>, username: &Username, disabled: bool) -> Result<(), AccountError> {
    let changed =
        tx.execute("UPDATE users SET disabled = ?1 WHERE username = ?2", params![disabled, username.as_str()])?;
    if changed == 0 {
        return Err(AccountError::UnknownUser(username.clone()));
    }
    Ok(())
}

/// What a sign-in needs to know about a username.
#[derive(Debug)]
pub struct Login {
    pub user_id: String,
    pub password_hash: String,
    pub disabled: bool,
}

pub fn login(conn: &Connection, username: &str) -> rusqlite::Result<Option<Login>> {
    conn.query_row("SELECT id, password_hash, disabled FROM users WHERE username = ?1", [username], |row| {
        Ok(Login { user_id: row.get(0)?, password_hash: row.get(1)?, disabled: row.get(2)? })
    })
    .optional()
}

/// A user who may act: present and not disabled.
#[derive(Debug, Clone)]
pub struct User {
    pub id: String,
    pub username: String,
    pub role: Role,
    pub teams: Vec<String>,
}

/// The user with this id if they exist and are not disabled.
pub fn active_user(conn: &Connection, user_id: &str) -> rusqlite::Result<Option<User>> {
    let row: Option<(String, String)> = conn
        .query_row("SELECT username, role FROM users WHERE id = ?1 AND disabled = 0", [user_id], |row| {
            Ok((row.get(0)?, row.get(1)?))
        })
        .optional()?;
    let Some((username, role)) = row else { return Ok(None) };
    // The schema's CHECK keeps roles to the four known ones.
    let role = Role::from_str(&role)
        .map_err(|e| rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, e.into()))?;
    let mut stmt = conn.prepare_cached("SELECT team_id FROM user_teams WHERE user_id = ?1 ORDER BY team_id")?;
    let teams = stmt.query_map([user_id], |row| row.get(0))?.collect::<rusqlite::Result<Vec<String>>>()?;
    Ok(Some(User { id: user_id.to_string(), username, role, teams }))
}
