//! The one error the host sees: a case for each failure a host app acts on, and
//! `Other` for the rest. No case carries patient data: the core's messages name fields,
//! record ids and episode ids, never a value that was given.
//!
//! Every case carries `reason`, the whole sentence to show or log, first, then the data
//! a host acts on. UniFFI renders an error's message from its fields (Python's `str(e)`
//! is `reason='…', field='…'`, Kotlin's `e.message` `reason=…, field=…`), so a case
//! without fields printed nothing at all; and `Display` is exported too, which Kotlin's
//! `toString()` and Swift's `description` and `localizedDescription` use: the sentence
//! alone.

use client_core::Error;
use episode::ValidationError;
use episode::document::DocumentError;

/// What went wrong, for the host app to act on. `reason` is the sentence to show.
#[derive(Debug, thiserror::Error, uniffi::Error)]
#[uniffi::export(Display)]
pub enum TetherError {
    /// The key does not open the store (or the file is not a Tether store). Nothing was
    /// changed: try the right key, or wipe the store and sign in again.
    #[error("{reason}")]
    WrongKey { reason: String },
    /// The input was refused and nothing was stored. `field` names what was wrong
    /// (`patient_ref`, `key`, `episode_id`, a record's field such as `visit`); `reason`
    /// says why, without repeating the value.
    #[error("{reason}")]
    InvalidInput { reason: String, field: String },
    /// No episode with this id on the device.
    #[error("{reason}")]
    NotFound { reason: String, episode_id: String },
    /// The server refused a sign-in or sync request as a whole, and said why (`code`, and
    /// its message in `reason`); episodes it refuses one by one are held back instead
    /// (see `SyncSummary.held_back`). Nothing on the device was lost.
    #[error("{reason}")]
    SyncRefused { reason: String, status: u16, code: String },
    /// A manager revoked this device. The store has been wiped (if it could not be,
    /// call `wipe`); forget its key and sign in again.
    #[error("{reason}")]
    WipeRequired { reason: String },
    /// No user is signed in, the password was wrong, the session ended, or a sign-in with
    /// the identity provider could not be finished (`reason` says why): sign in.
    #[error("{reason}")]
    SignInNeeded { reason: String },
    /// The change would take the episode past its budget (`bytes` of `budget`): nothing
    /// was stored. Record it in a new episode.
    #[error("{reason}")]
    EpisodeFull { reason: String, bytes: u64, budget: u64 },
    /// The server could not be reached (the host's `Transport` failed). Nothing was lost:
    /// sync again later.
    #[error("{reason}")]
    TransportFailed { reason: String },
    /// `close` was called: the store is closed, and this object does nothing more. Open
    /// the store again for a new one.
    #[error("{reason}")]
    Closed { reason: String },
    /// Anything else: a damaged store, a store from a newer app, an answer that could not
    /// be used.
    #[error("{reason}")]
    Other { reason: String },
}

impl TetherError {
    pub(crate) fn other(reason: impl Into<String>) -> Self {
        Self::Other { reason: reason.into() }
    }

    pub(crate) fn invalid(field: &str, reason: impl std::fmt::Display) -> Self {
        let reason = if field.is_empty() { reason.to_string() } else { format!("`{field}`: {reason}") };
        Self::InvalidInput { reason, field: field.into() }
    }

    pub(crate) fn wipe_required() -> Self {
        Self::WipeRequired {
            reason: "this device has been revoked or its store wiped: wipe the store, forget its key and sign in again"
                .into(),
        }
    }

    pub(crate) fn closed() -> Self {
        Self::Closed { reason: "this Tether has been closed: open the store again to go on".into() }
    }

    fn sign_in_needed(reason: impl std::fmt::Display) -> Self {
        Self::SignInNeeded { reason: format!("sign in needed: {reason}") }
    }
}

impl From<ValidationError> for TetherError {
    fn from(error: ValidationError) -> Self {
        match error {
            ValidationError::Syntax(reason) => Self::invalid("", reason),
            ValidationError::Episode { field, message } | ValidationError::Event { field, message, .. } => {
                Self::invalid(&field, message)
            }
        }
    }
}

impl From<Error> for TetherError {
    fn from(error: Error) -> Self {
        match error {
            Error::WrongKey => Self::WrongKey { reason: "the key does not open this store".into() },
            Error::NotFound(episode_id) => {
                Self::NotFound { reason: format!("no episode {episode_id} on this device"), episode_id }
            }
            Error::Invalid(invalid) | Error::Document(DocumentError::Invalid(invalid)) => invalid.into(),
            Error::Document(DocumentError::TooLong(too_long)) => {
                let field = if too_long.field.is_empty() { "record".to_owned() } else { too_long.field.clone() };
                Self::invalid(&field, too_long)
            }
            Error::Document(DocumentError::Full { bytes }) => {
                let budget = episode::limits::EPISODE_BUDGET_BYTES as u64;
                Self::EpisodeFull {
                    reason: format!(
                        "the episode would take {bytes} bytes, past its budget of {budget}: record this in a new episode"
                    ),
                    bytes: bytes as u64,
                    budget,
                }
            }
            Error::SignedIn(user) => Self::invalid("by", format!("{user} is signed in")),
            error @ Error::Network(_) => Self::TransportFailed { reason: error.to_string() },
            Error::Server { status: 401, message, .. } => Self::sign_in_needed(message),
            Error::Server { status, code, message } => {
                Self::SyncRefused { reason: format!("the server refused ({status} {code}): {message}"), status, code }
            }
            Error::DeviceRevoked => Self::wipe_required(),
            Error::NotSignedIn => Self::sign_in_needed(error),
            Error::SignIn(reason) => Self::sign_in_needed(reason),
            error @ Error::SignInAnswer(_) => Self::sign_in_needed(error),
            other @ (Error::Corrupt { .. }
            | Error::NewerStore(_)
            | Error::Document(_)
            | Error::Sync { .. }
            | Error::Storage(_)
            | Error::Setup(_)
            | Error::Io { .. }
            | Error::Random(_)
            | Error::Encode(_)) => Self::Other { reason: other.to_string() },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every case says what happened, in its `reason` and as its `Display`.
    #[test]
    fn every_error_has_a_sentence() {
        let errors: Vec<TetherError> = vec![
            Error::WrongKey.into(),
            Error::NotFound("e1".into()).into(),
            Error::Network("refused".into()).into(),
            Error::Server { status: 403, code: "not_placed".into(), message: "no team".into() }.into(),
            Error::Server { status: 401, code: "unauthenticated".into(), message: "bad password".into() }.into(),
            Error::DeviceRevoked.into(),
            Error::NotSignedIn.into(),
            Error::Document(DocumentError::Full { bytes: 9 }).into(),
            Error::Setup("WAL, but the journal mode is delete".into()).into(),
            TetherError::closed(),
            TetherError::invalid("visit", "must be a record id"),
        ];
        for error in errors {
            let shown = error.to_string();
            assert!(shown.len() > 12, "{error:?} says {shown:?}");
        }
        let refused: TetherError =
            Error::Server { status: 403, code: "not_placed".into(), message: "no team".into() }.into();
        assert!(matches!(&refused, TetherError::SyncRefused { status: 403, code, .. } if code == "not_placed"));
        assert!(refused.to_string().contains("no team"), "{refused}");
        let invalid = TetherError::invalid("visit", "must be a record id");
        assert_eq!(invalid.to_string(), "`visit`: must be a record id");
    }
}
