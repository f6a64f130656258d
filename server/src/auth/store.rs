//! Sessions, refresh tokens and the sign-in throttle, over the storage boundary.
//!
//! A session is one sign-in on one device: the family of every refresh token that
//! descends from it. Each refresh rotates the token; presenting a token that was already
//! rotated means two parties hold it, so the whole session is revoked.

use super::token::{REFRESH_TTL_SECS, new_refresh_token, refresh_token_hash};
use crate::accounts::DeviceId;
use crate::error::AppError;
use crate::store::{PresentedToken, StoreError, Tx};

/// Failed sign-ins allowed before the first lockout.
pub const FREE_FAILURES: i64 = 5;
/// The first lockout; each further failure doubles it, up to `MAX_LOCK_SECS`.
pub const BASE_LOCK_SECS: i64 = 30;
pub const MAX_LOCK_SECS: i64 = 15 * 60;

/// Starts a session for a user on a device; returns its id and first refresh token.
pub fn start_session(
    tx: &mut dyn Tx,
    user_id: &str,
    device: &DeviceId,
    now: i64,
) -> Result<(String, String), AppError> {
    let session = uuid::Uuid::now_v7().to_string();
    tx.insert_session(&session, user_id, device.as_str(), now)?;
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
    Rotated { user_id: String, session: String, refresh_token: String },
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
pub fn session_is_live(tx: &mut dyn Tx, session: &str, user_id: &str) -> Result<bool, StoreError> {
    tx.session_is_live(session, user_id)
}

/// Whether a manager has revoked this device.
pub fn device_revoked(tx: &mut dyn Tx, device: &str) -> Result<bool, StoreError> {
    tx.device_revoked(device)
}

/// Revokes a device: its sessions end, and it is told to wipe its store.
pub fn revoke_device(tx: &mut dyn Tx, device: &str, by: &str, now: i64) -> Result<(), StoreError> {
    tx.revoke_device(device, by, now)
}

/// The seconds a username must still wait before trying again, if it is locked out.
pub fn locked_for(tx: &mut dyn Tx, username: &str, now: i64) -> Result<Option<i64>, StoreError> {
    let until = tx.login_failures(username)?.map(|(_, until)| until);
    Ok(until.filter(|&until| until > now).map(|until| until - now))
}

/// Counts a failed sign-in; from the `FREE_FAILURES`th on, each locks the username out
/// for twice as long as the one before.
pub fn record_failure(tx: &mut dyn Tx, username: &str, now: i64) -> Result<(), StoreError> {
    let failures = tx.login_failures(username)?.map_or(0, |(failures, _)| failures) + 1;
    let locked_until = if failures >= FREE_FAILURES {
        let doublings = u32::try_from(failures - FREE_FAILURES).unwrap_or(u32::MAX).min(16);
        now + (BASE_LOCK_SECS << doublings).min(MAX_LOCK_SECS)
    } else {
        0
    };
    tx.put_login_failures(username, failures, locked_until)
}

pub fn clear_failures(tx: &mut dyn Tx, username: &str) -> Result<(), StoreError> {
    tx.clear_login_failures(username)
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
