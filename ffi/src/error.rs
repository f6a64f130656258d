//! The one error the host sees: a case for each failure a host app acts on, and
//! `Other` for the rest. No case carries patient data: the core's messages name fields,
//! record ids and episode ids, never a value that was given.

use client_core::Error;
use episode::ValidationError;
use episode::document::DocumentError;

/// What went wrong, for the host app to act on.
#[derive(Debug, thiserror::Error, uniffi::Error)]
pub enum TetherError {
    /// The key does not open the store (or the file is not a Tether store). Nothing was
    /// changed: try the right key, or wipe the store and sign in again.
    #[error("the key does not open this store")]
    WrongKey,
    /// The input was refused and nothing was stored. `field` names what was wrong
    /// (`patient_ref`, `key`, `episode_id`, a record's field such as `visit`); `reason`
    /// says why, without repeating the value.
    #[error("`{field}`: {reason}")]
    InvalidInput { field: String, reason: String },
    /// No episode with this id on the device.
    #[error("no episode {episode_id} on this device")]
    NotFound { episode_id: String },
    /// The server refused a sign-in or sync request as a whole, and said why (episodes
    /// it refuses one by one are held back instead: see `SyncSummary.held_back`).
    /// Nothing on the device was lost.
    #[error("the server refused ({status} {code}): {reason}")]
    SyncRefused { status: u16, code: String, reason: String },
    /// A manager revoked this device. The store has been wiped (if it could not be,
    /// call `wipe`); forget its key and sign in again.
    #[error("this device has been revoked: its store must be wiped")]
    WipeRequired,
    /// No user is signed in, the password was wrong, the session ended, or a sign-in with
    /// the identity provider could not be finished (`reason` says why): sign in.
    #[error("sign in needed: {reason}")]
    SignInNeeded { reason: String },
    /// The change would take the episode past its budget (`bytes` of `budget`): nothing
    /// was stored. Record it in a new episode.
    #[error("the episode would take {bytes} bytes, past its budget of {budget}: record this in a new episode")]
    EpisodeFull { bytes: u64, budget: u64 },
    /// The server could not be reached (the host's `Transport` failed). Nothing was lost:
    /// sync again later.
    #[error("the server could not be reached: {reason}")]
    TransportFailed { reason: String },
    /// Anything else: a damaged store, a store from a newer app, an answer that could not
    /// be used.
    #[error("{reason}")]
    Other { reason: String },
}

impl TetherError {
    pub(crate) fn other(reason: impl Into<String>) -> Self {
        Self::Other { reason: reason.into() }
    }

    pub(crate) fn invalid(field: &str, reason: impl Into<String>) -> Self {
        Self::InvalidInput { field: field.into(), reason: reason.into() }
    }
}

impl From<ValidationError> for TetherError {
    fn from(error: ValidationError) -> Self {
        match error {
            ValidationError::Syntax(reason) => Self::InvalidInput { field: String::new(), reason },
            ValidationError::Episode { field, message } | ValidationError::Event { field, message, .. } => {
                Self::InvalidInput { field, reason: message }
            }
        }
    }
}

impl From<Error> for TetherError {
    fn from(error: Error) -> Self {
        match error {
            Error::WrongKey => Self::WrongKey,
            Error::NotFound(episode_id) => Self::NotFound { episode_id },
            Error::Invalid(invalid) | Error::Document(DocumentError::Invalid(invalid)) => invalid.into(),
            Error::Document(DocumentError::TooLong(too_long)) => {
                let reason = too_long.to_string();
                Self::InvalidInput {
                    field: if too_long.field.is_empty() { "record".into() } else { too_long.field },
                    reason,
                }
            }
            Error::Document(DocumentError::Full { bytes }) => {
                Self::EpisodeFull { bytes: bytes as u64, budget: episode::limits::EPISODE_BUDGET_BYTES as u64 }
            }
            Error::SignedIn(user) => Self::InvalidInput { field: "by".into(), reason: format!("{user} is signed in") },
            Error::Network(reason) => Self::TransportFailed { reason },
            Error::Server { status: 401, message, .. } => Self::SignInNeeded { reason: message },
            Error::Server { status, code, message } => Self::SyncRefused { status, code, reason: message },
            Error::DeviceRevoked => Self::WipeRequired,
            Error::NotSignedIn => Self::SignInNeeded { reason: error.to_string() },
            Error::SignIn(reason) => Self::SignInNeeded { reason },
            other @ (Error::Corrupt(_)
            | Error::NewerStore(_)
            | Error::Document(_)
            | Error::Sync(_)
            | Error::Storage(_)) => Self::Other { reason: other.to_string() },
        }
    }
}
