//! Teams and users: the typed names they go by, and their rows in the database.
//!
//! The rows are behind the storage boundary (`store::Tx`).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::store::{StoreError, Tx};

/// What a user may do. Everyone sees only their own teams' episodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum, utoipa::ToSchema)]
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

/// Checks a username: 1 to `max` characters of a small, safe set. A username is shown
/// in timelines, the dashboard and the audit log, so none may carry control or direction
/// (bidi) characters that reorder what is shown around it, nor letters that only look
/// like another user's (a Cyrillic `а` for a Latin `a`).
///
/// A person from an identity provider is `provider:name`, with `~N` after the name when
/// it was taken (`oidc::username_base`); a local username never holds `:` (`add_user`),
/// so the two never collide.
fn check_username(what: &str, text: &str, max: usize) -> Result<(), String> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '@');
    let local_part =
        |part: &str| part.chars().next().is_some_and(|c| c.is_ascii_alphanumeric()) && part.chars().all(allowed);
    let from_provider = |text: &str| {
        let Some((provider, rest)) = text.split_once(':') else { return false };
        let provider_ok =
            !provider.is_empty() && provider.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        let (name, suffix) = rest.split_once('~').unwrap_or((rest, "1"));
        provider_ok
            && !name.is_empty()
            && name.chars().all(allowed)
            && !suffix.is_empty()
            && suffix.bytes().all(|b| b.is_ascii_digit())
    };
    if text.is_empty() || text.len() > max || !(local_part(text) || from_provider(text)) {
        return Err(format!(
            "must be 1 to {max} characters of letters A-Z or a-z, digits and . _ - @, starting with a letter \
             or a digit: no spaces, accents, control or direction characters ({what})"
        ));
    }
    Ok(())
}

macro_rules! name_type {
    ($(#[$doc:meta])* $name:ident, $what:literal, $max:literal) => {
        name_type!($(#[$doc])* $name, $what, $max, check_name);
    };
    ($(#[$doc:meta])* $name:ident, $what:literal, $max:literal, $check:ident) => {
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
                $check($what, &text, $max)?;
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

        impl std::ops::Deref for $name {
            type Target = str;

            fn deref(&self) -> &str {
                &self.0
            }
        }

        impl PartialEq<str> for $name {
            fn eq(&self, other: &str) -> bool {
                self.0 == other
            }
        }
    };
}

name_type!(
    /// A team's id, such as `team-north`.
    TeamId, "a team id", 64
);
name_type!(
    /// A user's sign-in name: ASCII letters, digits and `.`, `_`, `-`, `@`.
    Username, "a username", 64, check_username
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

    /// The prefixes of the devices the server makes for itself: its own
    /// (`episodes::server_device`) and a dashboard sign-in's.
    const SERVER_MADE: [&'static str; 2] = ["server:", "dashboard:"];

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// A device id the server made itself (`server:…`, `dashboard:…`) or signed into a
    /// token after checking it: taken as it is. Such ids fail the phone's check on
    /// purpose (a `:`), so no phone can sign in as the server; crate-private so that
    /// nothing outside the server can make one. One type for both, rather than an enum
    /// of "phone or server", because every place that holds a device (sync states,
    /// drops, receipts, revocations) treats the two alike.
    pub(crate) fn server_made(text: String) -> Self {
        Self(text)
    }

    /// Reads a stored device id: a phone's, or one the server made for itself (with a
    /// phone-valid rest after its prefix).
    fn read_stored(text: String) -> Result<Self, String> {
        match Self::SERVER_MADE.iter().find_map(|prefix| text.strip_prefix(prefix)) {
            Some(rest) => Self::try_from(rest.to_string()).map(|_| Self(text)),
            None => Self::try_from(text),
        }
    }
}

impl std::ops::Deref for DeviceId {
    type Target = str;

    fn deref(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for DeviceId {
    type Error = String;

    /// The check at the edge: what a phone may call itself.
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

/// A user's id: the key of their row, which sessions, tokens, devices and the audit log
/// name them by (a UUID for a user made here). Its own type so that a device's id or a
/// username cannot be passed where a user's id is meant; it reads as a `&str` (`Deref`)
/// wherever text is all that is wanted. Not checked: the server makes every one.
///
/// A device's id where a user's is meant does not compile:
///
/// ```compile_fail
/// # use server::accounts::{DeviceId, UserId};
/// # fn register(tx: &mut dyn server::store::Tx, user: &UserId, device: &DeviceId) {
/// tx.register_device(user, device, None, 0).unwrap();
/// # }
/// ```
///
/// nor does a team's where a device's is meant:
///
/// ```compile_fail
/// # use server::accounts::TeamId;
/// # fn revoked(tx: &mut dyn server::store::Tx, team: &TeamId) {
/// tx.device_revoked(team).unwrap();
/// # }
/// ```
///
/// while the same calls with each id in its place do:
///
/// ```
/// # use server::accounts::{DeviceId, UserId};
/// # fn register(tx: &mut dyn server::store::Tx, user: &UserId, device: &DeviceId) {
/// tx.register_device(device, user, None, 0).unwrap();
/// tx.device_revoked(device).unwrap();
/// # }
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct UserId(String);

impl UserId {
    /// The id a user row holds or a token the server signed names.
    pub fn new(id: impl Into<String>) -> Self {
        Self(id.into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::ops::Deref for UserId {
    type Target = str;

    fn deref(&self) -> &str {
        &self.0
    }
}

impl From<UserId> for String {
    fn from(id: UserId) -> String {
        id.0
    }
}

impl fmt::Display for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl PartialEq<str> for UserId {
    fn eq(&self, other: &str) -> bool {
        self.0 == other
    }
}

/// The ids' SQL conversions, for both of the server's databases: each is stored as its
/// text, as the columns always held it, so no statement changes. Reading a device checks
/// what the edge checks, but also accepts the server's own devices (`server:…`,
/// `dashboard:…`, `DeviceId::server_made`): a stored value that fails is damage, not
/// skipped. A team reads back unchecked (`TeamId::stored`).
macro_rules! text_sql {
    ($name:ident, $read:expr) => {
        impl rusqlite::types::ToSql for $name {
            fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
                Ok(rusqlite::types::ToSqlOutput::from(self.as_str()))
            }
        }

        impl rusqlite::types::FromSql for $name {
            fn column_result(value: rusqlite::types::ValueRef<'_>) -> rusqlite::types::FromSqlResult<Self> {
                let read: fn(String) -> Result<$name, String> = $read;
                read(value.as_str()?.to_string()).map_err(|e| rusqlite::types::FromSqlError::Other(e.into()))
            }
        }

        impl postgres::types::ToSql for $name {
            fn to_sql(
                &self,
                ty: &postgres::types::Type,
                out: &mut bytes::BytesMut,
            ) -> Result<postgres::types::IsNull, Box<dyn std::error::Error + Sync + Send>> {
                self.as_str().to_sql(ty, out)
            }

            fn accepts(ty: &postgres::types::Type) -> bool {
                <&str as postgres::types::ToSql>::accepts(ty)
            }

            postgres::types::to_sql_checked!();
        }

        impl<'a> postgres::types::FromSql<'a> for $name {
            fn from_sql(
                ty: &postgres::types::Type,
                raw: &'a [u8],
            ) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
                let read: fn(String) -> Result<$name, String> = $read;
                Ok(read(<&str as postgres::types::FromSql>::from_sql(ty, raw)?.to_string())?)
            }

            fn accepts(ty: &postgres::types::Type) -> bool {
                <&str as postgres::types::FromSql>::accepts(ty)
            }
        }
    };
}

text_sql!(UserId, |text| Ok(UserId(text)));
// A team is read back as it was stored, unchecked: an episode's row holds the team its
// document named when it was stored, which may predate today's check, and an old
// database must still load. Teams are only compared and shown, never parsed.
text_sql!(TeamId, |text| Ok(TeamId::stored(text)));

impl TeamId {
    /// A team the server stored, read back as it was (see its SQL conversion): an
    /// episode's team, which its typed view (`episode::Episode`) holds as text.
    pub(crate) fn stored(text: String) -> Self {
        Self(text)
    }
}
text_sql!(DeviceId, DeviceId::read_stored);

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
    #[error("a local username may not contain `:`, which marks the people of an identity provider (`cis2:…`)")]
    ReservedUsername,
    #[error("`{0}` signs in with an identity provider and has no password to reset")]
    NoPassword(Username),
    #[error("cannot make a username from the identity provider's claims: {0}")]
    BadUsername(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

pub fn add_team(tx: &mut dyn Tx, id: &TeamId, name: &str, now: jiff::Timestamp) -> Result<(), AccountError> {
    let name = name.trim();
    if name.is_empty() {
        return Err(AccountError::EmptyTeamName);
    }
    tx.add_team(id, name, &now.to_string()).map_err(|e| match e {
        StoreError::Duplicate => AccountError::DuplicateTeam(id.clone()),
        other => other.into(),
    })
}

/// Adds a local user with an already hashed password; returns the new user's id. A local
/// username never contains `:`, so that it never collides with the username of a person
/// from an identity provider (`cis2:jo`).
pub fn add_user(
    tx: &mut dyn Tx,
    username: &Username,
    password_hash: &str,
    role: Role,
    teams: &[TeamId],
    now: jiff::Timestamp,
) -> Result<UserId, AccountError> {
    if username.as_str().contains(':') {
        return Err(AccountError::ReservedUsername);
    }
    insert_user(tx, username, password_hash, role, teams, now)
}

fn insert_user(
    tx: &mut dyn Tx,
    username: &Username,
    password_hash: &str,
    role: Role,
    teams: &[TeamId],
    now: jiff::Timestamp,
) -> Result<UserId, AccountError> {
    for team in teams {
        if !tx.team_exists(team)? {
            return Err(AccountError::UnknownTeam(team.clone()));
        }
    }
    let id = UserId::new(uuid::Uuid::now_v7().to_string());
    tx.add_user(&id, username.as_str(), password_hash, role.as_str(), &now.to_string()).map_err(|e| match e {
        StoreError::Duplicate => AccountError::DuplicateUser(username.clone()),
        other => other.into(),
    })?;
    for team in teams {
        tx.add_user_team(&id, team)?;
    }
    Ok(id)
}

/// Disables (or enables again) a user. A disabled user cannot sign in, and every session
/// they have ends for good: access tokens stop at once, refresh tokens never work again,
/// dashboard sign-ins end. Enabling them again lets them sign in anew; it revives no
/// session (whoever held a token while the user was disabled must not get it back).
pub fn set_disabled(tx: &mut dyn Tx, username: &Username, disabled: bool, now: i64) -> Result<(), AccountError> {
    let Some(user_id) = tx.set_disabled(username.as_str(), disabled)? else {
        return Err(AccountError::UnknownUser(username.clone()));
    };
    if disabled {
        crate::auth::store::end_all_sessions(tx, &user_id, "user_disabled", now)?;
    }
    Ok(())
}

pub use crate::store::Login;

/// What a sign-in needs to know about a username.
pub fn login(tx: &mut dyn Tx, username: &str) -> Result<Option<Login>, StoreError> {
    tx.login(username)
}

/// A user who may act: present and not disabled.
#[derive(Debug, Clone)]
pub struct User {
    pub id: UserId,
    pub username: String,
    pub role: Role,
    pub teams: Vec<TeamId>,
}

/// The user with this id if they exist and are not disabled.
pub fn active_user(tx: &mut dyn Tx, user_id: &UserId) -> Result<Option<User>, StoreError> {
    let Some((username, role)) = tx.active_user(user_id)? else { return Ok(None) };
    // The schema's CHECK keeps roles to the four known ones.
    let role = Role::from_str(&role).map_err(|_| StoreError::damaged("users", "role", "an unknown role"))?;
    let teams = tx.user_teams(user_id)?;
    Ok(Some(User { id: user_id.clone(), username, role, teams }))
}

/// Gives a local user a new (already hashed) password. A person from an identity
/// provider has none to reset.
pub fn set_password(tx: &mut dyn Tx, username: &Username, password_hash: &str) -> Result<(), AccountError> {
    match tx.login(username.as_str())? {
        None => Err(AccountError::UnknownUser(username.clone())),
        Some(login) if login.password_hash.is_empty() => Err(AccountError::NoPassword(username.clone())),
        Some(_) => Ok(tx.set_password_hash(username.as_str(), password_hash)?),
    }
}

/// A user as `tether user list` shows them.
#[derive(Debug, Clone, Serialize)]
pub struct Listed {
    pub username: String,
    pub role: Role,
    pub teams: Vec<TeamId>,
    pub disabled: bool,
    /// `password`, or the id of the identity provider they sign in with.
    pub signs_in_with: String,
}

/// Every user, by username.
pub fn list_users(tx: &mut dyn Tx) -> Result<Vec<Listed>, StoreError> {
    tx.list_users()?
        .into_iter()
        .map(|(id, username, role, disabled, provider)| {
            let role = Role::from_str(&role).map_err(|_| StoreError::damaged("users", "role", "an unknown role"))?;
            let teams = tx.user_teams(&id)?;
            Ok(Listed { username, role, teams, disabled, signs_in_with: provider.unwrap_or_else(|| "password".into()) })
        })
        .collect()
}

/// The user a provider's subject is, and whether they are disabled.
pub fn identity_user(tx: &mut dyn Tx, provider: &str, subject: &str) -> Result<Option<(UserId, bool)>, StoreError> {
    tx.identity_user(provider, subject)
}

/// Of `teams`, those that exist.
pub fn existing_teams(tx: &mut dyn Tx, teams: &[TeamId]) -> Result<Vec<TeamId>, StoreError> {
    let mut found = Vec::with_capacity(teams.len());
    for team in teams {
        if tx.team_exists(team)? {
            found.push(team.clone());
        }
    }
    Ok(found)
}

/// Makes the user for a provider's subject at their first sign-in, with no password,
/// under the first free username of `base`, `base~2`, `base~3`…; returns their id.
pub fn add_identity_user(
    tx: &mut dyn Tx,
    provider: &str,
    subject: &str,
    base: &str,
    role: Role,
    teams: &[TeamId],
    now: jiff::Timestamp,
) -> Result<UserId, AccountError> {
    let mut username = base.to_owned();
    let mut n = 1;
    while tx.login(&username)?.is_some() {
        n += 1;
        let suffix = format!("~{n}");
        let keep = base.chars().count().min(Username::MAX_CHARS - suffix.len());
        username = format!("{}{suffix}", base.chars().take(keep).collect::<String>());
    }
    let username = Username::try_from(username).map_err(AccountError::BadUsername)?;
    let id = insert_user(tx, &username, "", role, teams, now)?;
    tx.add_identity(provider, subject, &id, now.as_second())?;
    Ok(id)
}

/// Sets a user's role and teams to what the claims mapping gives at a sign-in, and
/// notes the sign-in.
pub fn update_identity_user(
    tx: &mut dyn Tx,
    provider: &str,
    subject: &str,
    user_id: &UserId,
    role: Role,
    teams: &[TeamId],
    now: jiff::Timestamp,
) -> Result<(), StoreError> {
    tx.set_role(user_id, role.as_str())?;
    tx.clear_user_teams(user_id)?;
    for team in teams {
        tx.add_user_team(user_id, team)?;
    }
    tx.touch_identity(provider, subject, now.as_second())
}

/// The usernames of the team's managers who may act (not disabled), sorted: whom
/// `team_manager` and `on_call_manager` actions name (`owners`).
pub fn team_managers(tx: &mut dyn Tx, team: &TeamId) -> Result<Vec<String>, StoreError> {
    tx.team_managers(team)
}

/// The username of the user with this id, or with this username: an episode's
/// `care_coordinator` names a user by either.
pub fn username_of(tx: &mut dyn Tx, id_or_username: &str) -> Result<Option<String>, StoreError> {
    tx.username_of(id_or_username)
}

/// Takes a user out of every team (a person their identity provider no longer places).
pub fn clear_teams(tx: &mut dyn Tx, user_id: &UserId) -> Result<(), StoreError> {
    tx.clear_user_teams(user_id)
}

#[cfg(test)]
mod tests {
    use super::{DeviceId, TeamId, UserId, Username};

    #[test]
    fn ids_are_stored_as_their_text_and_checked_when_read_back() {
        let conn = rusqlite::Connection::open_in_memory().unwrap();
        let (user, team, device) = (
            UserId::new("u-1"),
            TeamId::try_from("north".to_owned()).unwrap(),
            DeviceId::try_from("phone-1".to_owned()).unwrap(),
        );
        let read: (String, UserId, TeamId, DeviceId) = conn
            .query_row("SELECT ?1 || ?2 || ?3, ?1, ?2, ?3", rusqlite::params![user, team, device], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
            })
            .unwrap();
        assert_eq!(read, ("u-1northphone-1".to_owned(), user, team, device));
        // The server's own devices read back, though no phone may take their ids.
        for made in ["server:0a1b2c3d", "dashboard:0a1b2c3d"] {
            let read = conn.query_row("SELECT ?1", [made], |r| r.get::<_, DeviceId>(0)).unwrap();
            assert_eq!(read, DeviceId::server_made(made.to_owned()));
            assert!(DeviceId::try_from(made.to_owned()).is_err(), "{made} is no phone's");
        }
        // A team stored before today's check (an episode's, from an old database) still
        // reads back, as it was.
        let old: TeamId = conn.query_row("SELECT 'Team North'", [], |r| r.get(0)).unwrap();
        assert_eq!(old.as_str(), "Team North");
        assert!(TeamId::try_from("Team North".to_owned()).is_err(), "refused at the edge");
        // A device the edge refuses is damage when read back, never a value of the type.
        for sql in ["SELECT 'phone 1'", "SELECT 'server:'", "SELECT 'elsewhere:1'"] {
            let result = conn.query_row(sql, [], |r| r.get::<_, DeviceId>(0));
            assert!(matches!(result, Err(rusqlite::Error::FromSqlConversionFailure(..))), "{sql}: {result:?}");
        }
    }

    #[test]
    fn a_username_is_local_or_a_providers_and_nothing_else() {
        for good in ["asha", "jo.bloggs@nhs.net", "a-1_b", "cis2:jo.bloggs@nhs.net", "entra:jo~2", "cis2:555-21"] {
            assert!(Username::try_from(good.to_owned()).is_ok(), "{good} should be a username");
        }
        for bad in [
            "",
            ".asha",
            "as ha",
            "asha\u{202e}",
            "аsha",
            "cis2:",
            ":jo",
            "Cis2:jo",
            "cis2:jo:x",
            "cis2:jo~",
            "cis2:jo~x",
            "jo~2",
            "cis2:jo bloggs",
        ] {
            assert!(Username::try_from(bad.to_owned()).is_err(), "{bad:?} should be refused");
        }
    }
}
