//! Sessions, refresh tokens, devices and the failed sign-in throttle, over the storage
//! boundary.
//!
//! A session is one sign-in on one device: the family of every refresh token that
//! descends from it. Each refresh rotates the token; presenting a token that was already
//! rotated means two parties hold it, so the whole session is revoked.

use sha2::{Digest, Sha256};

use super::token::{REFRESH_TTL_SECS, new_refresh_token, refresh_token_hash};
use crate::accounts::{DeviceId, DeviceKey, UserId};
use crate::error::AppError;
use crate::store::{PresentedToken, Registration, StoreError, Tx};

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
    tx: &mut dyn Tx,
    user_id: &UserId,
    device: &DeviceId,
    now: i64,
) -> Result<(String, String), AppError> {
    let session = uuid::Uuid::now_v7().to_string();
    tx.insert_session(&session, user_id, device, now)?;
    let refresh = issue_refresh_token(tx, &session, now)?;
    Ok((session, refresh))
}

fn issue_refresh_token(tx: &mut dyn Tx, session: &str, now: i64) -> Result<String, AppError> {
    let token = new_refresh_token()?;
    tx.insert_refresh_token(&refresh_token_hash(&token), session, now, now + REFRESH_TTL_SECS)?;
    Ok(token)
}

pub fn revoke_session(tx: &mut dyn Tx, session: &str, because: &str, now: i64) -> Result<(), StoreError> {
    tx.revoke_session(session, because, now)
}

/// What became of a refresh token presented for rotation.
#[derive(Debug)]
pub enum Rotation {
    /// A new refresh token in the same session; the presented one is spent.
    Rotated { user_id: UserId, session: String, refresh_token: String },
    /// Refused, and nothing else happened (unknown, expired, or an ended session).
    Refused,
    /// Refused, and the session was revoked because of what was presented (a reused
    /// token, or another device's). The caller must commit.
    RevokedSession { session: String, because: &'static str },
}

/// Rotates a refresh token presented by `device`.
pub fn rotate(tx: &mut dyn Tx, presented: &str, device: &DeviceId, now: i64) -> Result<Rotation, AppError> {
    let hash = refresh_token_hash(presented);
    let Some(PresentedToken { session, expires_at, rotated_at, user_id, session_device, revoked_at, disabled }) =
        tx.presented_token(&hash)?
    else {
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
    tx.mark_rotated(&hash, now)?;
    let refresh_token = issue_refresh_token(tx, &session, now)?;
    Ok(Rotation::Rotated { user_id, session, refresh_token })
}

/// Whether a session is live: not revoked.
pub fn session_is_live(tx: &mut dyn Tx, session: &str, user_id: &UserId) -> Result<bool, StoreError> {
    tx.session_is_live(session, user_id)
}

/// Lets `user_id` sign in under `device`, registering the device to them if it is new
/// (with the key it presents, if any). A registered device takes the sign-in only if the
/// key presented is its key; one registered without a key, only from a user who shares a
/// team with the user who registered it (and the key presented then becomes its key).
/// Anything else is [`AppError::DeviceTaken`]: a device id read off a record does not let
/// anyone else sign in as that device, nor revoke it.
pub fn claim_device(
    tx: &mut dyn Tx,
    device: &DeviceId,
    key: Option<&DeviceKey>,
    user_id: &UserId,
    now: i64,
) -> Result<(), AppError> {
    let presented = key.map(|k| Sha256::digest(k.as_bytes()).to_vec());
    let registered = match tx.device_registration(device)? {
        Some(registered) => registered,
        None => {
            if tx.register_device(device, user_id, presented.as_deref(), now)? {
                return Ok(());
            }
            // Registered meanwhile by another sign-in (another replica's): judged as
            // any registered device is.
            tx.device_registration(device)?
                .ok_or_else(|| StoreError::Damaged("a device registered meanwhile is not there".into()))?
        }
    };
    match registered {
        Registration { key_hash: Some(hash), .. } => match presented {
            Some(presented) if presented == hash => Ok(()),
            _ => Err(AppError::DeviceTaken),
        },
        Registration { user_id: registrant, key_hash: None } => {
            let shares_team = registrant == *user_id || tx.share_a_team(&registrant, user_id)?;
            if !shares_team {
                return Err(AppError::DeviceTaken);
            }
            if let Some(presented) = presented {
                tx.set_device_key(device, &presented)?;
            }
            Ok(())
        }
    }
}

/// Whether a manager (`user_id`; any team if `admin`) may reach `device`: it is
/// registered, by a user of one of the manager's teams.
pub fn device_in_reach(tx: &mut dyn Tx, device: &DeviceId, user_id: &UserId, admin: bool) -> Result<bool, StoreError> {
    tx.device_in_reach(device, user_id, admin)
}

/// The usernames of everyone who has ever signed in on `device`: the authors its records
/// may name.
pub fn device_users(tx: &mut dyn Tx, device: &DeviceId) -> Result<Vec<String>, StoreError> {
    tx.device_users(device)
}

/// Whether a manager has revoked this device.
pub fn device_revoked(tx: &mut dyn Tx, device: &DeviceId) -> Result<bool, StoreError> {
    tx.device_revoked(device)
}

/// Revokes a device: its sessions end, and it is told to wipe its store.
pub fn revoke_device(tx: &mut dyn Tx, device: &DeviceId, by: &UserId, now: i64) -> Result<(), StoreError> {
    tx.revoke_device(device, by, now)
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
pub fn throttled(tx: &mut dyn Tx, username: &str, client: &str, now: i64) -> Result<Option<Throttled>, StoreError> {
    if let Some((start, failures)) = tx.client_failures(client)?
        && failures >= CLIENT_FREE_FAILURES
        && start + CLIENT_WINDOW_SECS > now
    {
        return Ok(Some(Throttled::Client { retry_after_secs: start + CLIENT_WINDOW_SECS - now }));
    }
    let until = tx.login_failures(username, client)?.map(|(_, until)| until);
    Ok(until.filter(|&until| until > now).map(|until| Throttled::Username { retry_after_secs: until - now }))
}

/// Counts a failed sign-in against `client`, and against `username` from `client` when
/// the name is one a user could have (`None`: a name no user can have, which would only
/// fill the table). From the `FREE_FAILURES`th on, each locks the username out from that
/// client for twice as long as the one before; a client's `CLIENT_FREE_FAILURES`th in a
/// window locks the client out until the window ends.
pub fn record_failure(tx: &mut dyn Tx, username: Option<&str>, client: &str, now: i64) -> Result<(), StoreError> {
    tx.count_client_failure(client, now, CLIENT_WINDOW_SECS)?;
    if let Some(username) = username {
        let failures = tx.login_failures(username, client)?.map_or(0, |(failures, _)| failures) + 1;
        let locked_until = if failures >= FREE_FAILURES {
            let doublings = u32::try_from(failures - FREE_FAILURES).unwrap_or(u32::MAX).min(16);
            now + (BASE_LOCK_SECS << doublings).min(MAX_LOCK_SECS)
        } else {
            0
        };
        tx.put_login_failures(username, client, failures, locked_until, now)?;
    }
    // Forget what is a day old, a few rows at a time, so that the tables stay small
    // however many addresses fail.
    tx.prune_failures(now - PRUNE_AFTER_SECS, 64)
}

/// A successful sign-in clears its username's failures from that client (not the
/// client's own count: one account's password must not reset the spraying check).
pub fn clear_failures(tx: &mut dyn Tx, username: &str, client: &str) -> Result<(), StoreError> {
    tx.clear_login_failures(username, client)
}

/// An administrator's new password clears the username's failed sign-ins from every
/// client (the clients' own counts stay: they watch for spraying, not for this user).
pub fn clear_username_failures(tx: &mut dyn Tx, username: &str) -> Result<(), StoreError> {
    tx.clear_username_failures(username)
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
    tx: &mut dyn Tx,
    state_hash: &str,
    pending: &PendingSignIn,
    now: i64,
) -> Result<bool, StoreError> {
    if tx.prune_pending_sign_ins(now)? >= MAX_PENDING_SIGN_INS {
        return Ok(false);
    }
    tx.put_pending_sign_in(state_hash, pending)?;
    Ok(true)
}

/// Takes the pending sign-in of a `state` (each is taken once), if there is one.
pub fn take_pending_sign_in(tx: &mut dyn Tx, state_hash: &str) -> Result<Option<PendingSignIn>, StoreError> {
    tx.take_pending_sign_in(state_hash)
}

/// Ends every session of a user, for good: the refresh families stop, the access tokens
/// stop at their next request (each checks its session), and dashboard sign-ins end.
/// Enabling the user again revives none of them.
pub fn end_all_sessions(tx: &mut dyn Tx, user_id: &UserId, because: &str, now: i64) -> Result<u64, StoreError> {
    tx.end_all_sessions(user_id, because, now)
}
