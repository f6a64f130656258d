//! Sessions, refresh tokens and the failed sign-in throttle in the database.
//!
//! A session is one sign-in on one device: the family of every refresh token that
//! descends from it. Each refresh rotates the token; presenting a token that was already
//! rotated means two parties hold it, so the whole session is revoked.

use rusqlite::{Connection, OptionalExtension, Transaction, params};

use sha2::{Digest, Sha256};

use super::token::{REFRESH_TTL_SECS, new_refresh_token, refresh_token_hash};
use crate::accounts::{DeviceId, DeviceKey};
use crate::error::AppError;

/// Failed sign-ins for one username from one client allowed before the first lockout.
pub const FREE_FAILURES: i64 = 5;
/// The first lockout; each further failure doubles it, up to `MAX_LOCK_SECS`.
pub const BASE_LOCK_SECS: i64 = 30;
pub const MAX_LOCK_SECS: i64 = 15 * 60;
/// Failed sign-ins one client address may make, whatever the usernames, in a window of
/// `CLIENT_WINDOW_SECS`: enough for a team sharing an address to mistype, too few to try
/// a password across a trust's usernames.
pub const CLIENT_FREE_FAILURES: i64 = 20;
pub const CLIENT_WINDOW_SECS: i64 = 15 * 60;
/// Throttle rows untouched for this long are forgotten.
const PRUNE_AFTER_SECS: i64 = 24 * 60 * 60;

/// Starts a session for a user on a device; returns its id and first refresh token.
pub fn start_session(
    tx: &Transaction<'_>,
    user_id: &str,
    device: &DeviceId,
    now: i64,
) -> Result<(String, String), AppError> {
    let session = uuid::Uuid::now_v7().to_string();
    tx.prepare_cached("INSERT INTO sessions (id, user_id, device_id, created_at) VALUES (?1, ?2, ?3, ?4)")?
        .execute(params![session, user_id, device.as_str(), now])?;
    let refresh = issue_refresh_token(tx, &session, now)?;
    Ok((session, refresh))
}

fn issue_refresh_token(tx: &Transaction<'_>, session: &str, now: i64) -> Result<String, AppError> {
    let token = new_refresh_token()?;
    tx.prepare_cached("INSERT INTO refresh_tokens (hash, session_id, issued_at, expires_at) VALUES (?1, ?2, ?3, ?4)")?
        .execute(params![refresh_token_hash(&token), session, now, now + REFRESH_TTL_SECS])?;
    Ok(token)
}

pub fn revoke_session(tx: &Transaction<'_>, session: &str, because: &str, now: i64) -> rusqlite::Result<()> {
    tx.prepare_cached(
        "UPDATE sessions SET revoked_at = ?1, revoked_because = ?2 WHERE id = ?3 AND revoked_at IS NULL",
    )?
    .execute(params![now, because, session])?;
    Ok(())
}

/// What became of a refresh token presented for rotation.
#[derive(Debug)]
pub enum Rotation {
    /// A new refresh token in the same session; the presented one is spent.
    Rotated { user_id: String, session: String, refresh_token: String },
    /// Refused, and nothing else happened (unknown, expired, or an ended session).
    Refused,
    /// Refused, and the session was revoked because of what was presented (a reused
    /// token, or another device's). The caller must commit.
    RevokedSession { session: String, because: &'static str },
}

/// A presented refresh token's row, with its session's and user's.
struct Presented {
    session: String,
    expires_at: i64,
    rotated_at: Option<i64>,
    user_id: String,
    session_device: String,
    revoked_at: Option<i64>,
    disabled: bool,
}

/// Rotates a refresh token presented by `device`.
pub fn rotate(tx: &Transaction<'_>, presented: &str, device: &DeviceId, now: i64) -> Result<Rotation, AppError> {
    let row = tx
        .prepare_cached(
            "SELECT t.session_id, t.expires_at, t.rotated_at, s.user_id, s.device_id, s.revoked_at, u.disabled
             FROM refresh_tokens t JOIN sessions s ON s.id = t.session_id JOIN users u ON u.id = s.user_id
             WHERE t.hash = ?1",
        )?
        .query_row([refresh_token_hash(presented)], |r| {
            Ok(Presented {
                session: r.get(0)?,
                expires_at: r.get(1)?,
                rotated_at: r.get(2)?,
                user_id: r.get(3)?,
                session_device: r.get(4)?,
                revoked_at: r.get(5)?,
                disabled: r.get(6)?,
            })
        })
        .optional()?;
    let Some(Presented { session, expires_at, rotated_at, user_id, session_device, revoked_at, disabled }) = row else {
        return Ok(Rotation::Refused);
    };
    if revoked_at.is_some() || disabled {
        return Ok(Rotation::Refused);
    }
    if rotated_at.is_some() {
        revoke_session(tx, &session, "refresh_token_reused", now)?;
        return Ok(Rotation::RevokedSession { session, because: "refresh_token_reused" });
    }
    if session_device != device.as_str() {
        // Device ids are not secret, but a token presented under another device's name
        // has left the device it was given to.
        revoke_session(tx, &session, "refresh_token_other_device", now)?;
        return Ok(Rotation::RevokedSession { session, because: "refresh_token_other_device" });
    }
    if expires_at <= now {
        return Ok(Rotation::Refused);
    }
    tx.prepare_cached("UPDATE refresh_tokens SET rotated_at = ?1 WHERE hash = ?2")?
        .execute(params![now, refresh_token_hash(presented)])?;
    let refresh_token = issue_refresh_token(tx, &session, now)?;
    Ok(Rotation::Rotated { user_id, session, refresh_token })
}

/// Whether a session is live: not revoked.
pub fn session_is_live(conn: &Connection, session: &str, user_id: &str) -> rusqlite::Result<bool> {
    conn.prepare_cached("SELECT revoked_at IS NULL FROM sessions WHERE id = ?1 AND user_id = ?2")?
        .query_row(params![session, user_id], |r| r.get(0))
        .optional()
        .map(|live| live.unwrap_or(false))
}

/// Lets `user_id` sign in under `device`, registering the device to them if it is new
/// (with the key it presents, if any). A registered device takes the sign-in only if the
/// key presented is its key; one registered without a key, only from a user who shares a
/// team with the user who registered it (and the key presented then becomes its key).
/// Anything else is [`AppError::DeviceTaken`]: a device id read off a record does not let
/// anyone else sign in as that device, nor revoke it.
pub fn claim_device(
    tx: &Transaction<'_>,
    device: &DeviceId,
    key: Option<&DeviceKey>,
    user_id: &str,
    now: i64,
) -> Result<(), AppError> {
    let presented = key.map(|k| Sha256::digest(k.as_bytes()).to_vec());
    let registered: Option<(String, Option<Vec<u8>>)> = tx
        .prepare_cached("SELECT user_id, key_hash FROM devices WHERE id = ?1")?
        .query_row([device.as_str()], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    match registered {
        None => {
            tx.prepare_cached("INSERT INTO devices (id, user_id, key_hash, registered_at) VALUES (?1, ?2, ?3, ?4)")?
                .execute(params![device.as_str(), user_id, presented, now])?;
            Ok(())
        }
        Some((_, Some(hash))) => match presented {
            Some(presented) if presented == hash => Ok(()),
            _ => Err(AppError::DeviceTaken),
        },
        Some((registrant, None)) => {
            let shares_team = registrant == user_id
                || tx
                    .prepare_cached(
                        "SELECT EXISTS (SELECT 1 FROM user_teams a JOIN user_teams b ON a.team_id = b.team_id
                         WHERE a.user_id = ?1 AND b.user_id = ?2)",
                    )?
                    .query_row(params![registrant, user_id], |r| r.get::<_, bool>(0))?;
            if !shares_team {
                return Err(AppError::DeviceTaken);
            }
            if let Some(presented) = presented {
                tx.prepare_cached("UPDATE devices SET key_hash = ?1 WHERE id = ?2 AND key_hash IS NULL")?
                    .execute(params![presented, device.as_str()])?;
            }
            Ok(())
        }
    }
}

/// Whether a manager (`user_id`; any team if `admin`) may reach `device`: it is
/// registered, by a user of one of the manager's teams.
pub fn device_in_reach(conn: &Connection, device: &str, user_id: &str, admin: bool) -> rusqlite::Result<bool> {
    conn.prepare_cached(
        "SELECT EXISTS (SELECT 1 FROM devices d
         WHERE d.id = ?1 AND (?2 OR EXISTS (SELECT 1 FROM user_teams a JOIN user_teams b ON a.team_id = b.team_id
                                            WHERE a.user_id = d.user_id AND b.user_id = ?3)))",
    )?
    .query_row(params![device, admin, user_id], |r| r.get(0))
}

/// The usernames of everyone who has ever signed in on `device`: the authors its records
/// may name.
pub fn device_users(conn: &Connection, device: &str) -> rusqlite::Result<Vec<String>> {
    let mut statement = conn.prepare_cached(
        "SELECT DISTINCT u.username FROM sessions s JOIN users u ON u.id = s.user_id WHERE s.device_id = ?1",
    )?;
    let rows = statement.query_map([device], |r| r.get(0))?;
    rows.collect()
}

/// Whether a manager has revoked this device.
pub fn device_revoked(conn: &Connection, device: &str) -> rusqlite::Result<bool> {
    conn.prepare_cached("SELECT 1 FROM revoked_devices WHERE device = ?1")?
        .query_row([device], |_| Ok(()))
        .optional()
        .map(|r| r.is_some())
}

/// Revokes a device: its sessions end, and it is told to wipe its store.
pub fn revoke_device(tx: &Transaction<'_>, device: &str, by: &str, now: i64) -> rusqlite::Result<()> {
    tx.prepare_cached(
        "INSERT INTO revoked_devices (device, revoked_at, revoked_by) VALUES (?1, ?2, ?3) ON CONFLICT DO NOTHING",
    )?
    .execute(params![device, now, by])?;
    tx.prepare_cached("UPDATE sessions SET revoked_at = ?1, revoked_because = 'device_revoked' WHERE device_id = ?2 AND revoked_at IS NULL")?.execute(
        params![now, device],
    )?;
    Ok(())
}

/// Which throttle holds a sign-in back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Throttled {
    /// This username, from this client address.
    Username { retry_after_secs: i64 },
    /// This client address, whatever the username.
    Client { retry_after_secs: i64 },
}

impl Throttled {
    /// Seconds to wait, at least one (for `Retry-After`).
    pub fn retry_after_secs(self) -> i64 {
        match self {
            Self::Username { retry_after_secs } | Self::Client { retry_after_secs } => retry_after_secs.max(1),
        }
    }
}

/// Whether a sign-in for `username` from `client` must wait, and how long: the client's
/// own throttle first, then the username's from that client.
pub fn throttled(conn: &Connection, username: &str, client: &str, now: i64) -> rusqlite::Result<Option<Throttled>> {
    let window: Option<(i64, i64)> = conn
        .prepare_cached("SELECT window_start, failures FROM client_failures WHERE client = ?1")?
        .query_row([client], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    if let Some((start, failures)) = window
        && failures >= CLIENT_FREE_FAILURES
        && start + CLIENT_WINDOW_SECS > now
    {
        return Ok(Some(Throttled::Client { retry_after_secs: start + CLIENT_WINDOW_SECS - now }));
    }
    let until: Option<i64> = conn
        .prepare_cached("SELECT locked_until FROM login_failures WHERE username = ?1 AND client = ?2")?
        .query_row([username, client], |r| r.get(0))
        .optional()?;
    Ok(until.filter(|&until| until > now).map(|until| Throttled::Username { retry_after_secs: until - now }))
}

/// Counts a failed sign-in against `client`, and against `username` from `client` when
/// the name is one a user could have (`None`: a name no user can have, which would only
/// fill the table). From the `FREE_FAILURES`th on, each locks the username out from that
/// client for twice as long as the one before; a client's `CLIENT_FREE_FAILURES`th in a
/// window locks the client out until the window ends.
pub fn record_failure(tx: &Transaction<'_>, username: Option<&str>, client: &str, now: i64) -> rusqlite::Result<()> {
    tx.prepare_cached(
        "INSERT INTO client_failures (client, window_start, failures) VALUES (?1, ?2, 1)
         ON CONFLICT (client) DO UPDATE SET
             failures = CASE WHEN window_start + ?3 <= ?2 THEN 1 ELSE failures + 1 END,
             window_start = CASE WHEN window_start + ?3 <= ?2 THEN ?2 ELSE window_start END",
    )?
    .execute(params![client, now, CLIENT_WINDOW_SECS])?;
    if let Some(username) = username {
        let failures: i64 = tx
            .prepare_cached("SELECT failures FROM login_failures WHERE username = ?1 AND client = ?2")?
            .query_row([username, client], |r| r.get(0))
            .optional()?
            .unwrap_or(0)
            + 1;
        let locked_until = if failures >= FREE_FAILURES {
            let doublings = u32::try_from(failures - FREE_FAILURES).unwrap_or(u32::MAX).min(16);
            now + (BASE_LOCK_SECS << doublings).min(MAX_LOCK_SECS)
        } else {
            0
        };
        tx.prepare_cached(
            "INSERT INTO login_failures (username, client, failures, locked_until, updated_at) VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT (username, client) DO UPDATE SET failures = ?3, locked_until = ?4, updated_at = ?5",
        )?
        .execute(params![username, client, failures, locked_until, now])?;
    }
    // Forget what is a day old, a few rows at a time, so that the tables stay small
    // however many addresses fail.
    let old = now - PRUNE_AFTER_SECS;
    tx.prepare_cached(
        "DELETE FROM login_failures WHERE (username, client) IN
             (SELECT username, client FROM login_failures WHERE updated_at < ?1 LIMIT 64)",
    )?
    .execute([old])?;
    tx.prepare_cached(
        "DELETE FROM client_failures WHERE client IN
             (SELECT client FROM client_failures WHERE window_start < ?1 LIMIT 64)",
    )?
    .execute([old])?;
    Ok(())
}

/// A successful sign-in clears its username's failures from that client (not the
/// client's own count: one account's password must not reset the spraying check).
pub fn clear_failures(tx: &Transaction<'_>, username: &str, client: &str) -> rusqlite::Result<()> {
    tx.prepare_cached("DELETE FROM login_failures WHERE username = ?1 AND client = ?2")?.execute([username, client])?;
    Ok(())
}

/// An administrator's new password clears the username's failed sign-ins from every
/// client (the clients' own counts stay: they watch for spraying, not for this user).
pub fn clear_username_failures(tx: &Transaction<'_>, username: &str) -> rusqlite::Result<()> {
    tx.prepare_cached("DELETE FROM login_failures WHERE username = ?1")?.execute([username])?;
    Ok(())
}

/// A dashboard sign-in sent to an identity provider and not yet back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingSignIn {
    pub provider: String,
    /// The SHA-256 (hex) of the cookie of the browser that started it.
    pub browser_hash: String,
    pub nonce: String,
    pub verifier: String,
    pub expires_at: i64,
}

/// The most dashboard sign-ins that may be at a provider at once. Starting one needs no
/// account, so without a bound anyone could fill the table.
pub const MAX_PENDING_SIGN_INS: i64 = 10_000;

/// Keeps a pending sign-in under its `state`'s SHA-256, and forgets the expired ones.
/// Refused (`false`, nothing kept) when [`MAX_PENDING_SIGN_INS`] are under way.
pub fn put_pending_sign_in(
    tx: &Transaction<'_>,
    state_hash: &str,
    pending: &PendingSignIn,
    now: i64,
) -> rusqlite::Result<bool> {
    tx.prepare_cached("DELETE FROM oidc_pending WHERE expires_at <= ?1")?.execute([now])?;
    let live: i64 = tx.prepare_cached("SELECT COUNT(*) FROM oidc_pending")?.query_row([], |r| r.get(0))?;
    if live >= MAX_PENDING_SIGN_INS {
        return Ok(false);
    }
    tx.prepare_cached(
        "INSERT INTO oidc_pending (state_hash, browser_hash, provider, nonce, verifier, expires_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?
    .execute(params![
        state_hash,
        pending.browser_hash,
        pending.provider,
        pending.nonce,
        pending.verifier,
        pending.expires_at
    ])?;
    Ok(true)
}

/// Takes the pending sign-in of a `state` (each is taken once), if there is one.
pub fn take_pending_sign_in(tx: &Transaction<'_>, state_hash: &str) -> rusqlite::Result<Option<PendingSignIn>> {
    tx.prepare_cached(
        "DELETE FROM oidc_pending WHERE state_hash = ?1
         RETURNING provider, browser_hash, nonce, verifier, expires_at",
    )?
    .query_row([state_hash], |r| {
        Ok(PendingSignIn {
            provider: r.get(0)?,
            browser_hash: r.get(1)?,
            nonce: r.get(2)?,
            verifier: r.get(3)?,
            expires_at: r.get(4)?,
        })
    })
    .optional()
}

/// Ends every session of a user, for good: the refresh families stop, the access tokens
/// stop at their next request (each checks its session), and dashboard sign-ins end.
/// Enabling the user again revives none of them.
pub fn end_all_sessions(tx: &Transaction<'_>, user_id: &str, because: &str, now: i64) -> rusqlite::Result<usize> {
    let ended = tx
        .prepare_cached(
            "UPDATE sessions SET revoked_at = ?1, revoked_because = ?2 WHERE user_id = ?3 AND revoked_at IS NULL",
        )?
        .execute(params![now, because, user_id])?;
    tx.prepare_cached("DELETE FROM dashboard_sessions WHERE user_id = ?1")?.execute([user_id])?;
    Ok(ended)
}
