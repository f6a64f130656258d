//! Errors: one internal type with the detail, never holding patient data.

use episode::ValidationError;
use episode::document::DocumentError;

/// What went wrong in the client core.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The key does not open this store (or the file is not a Tether store).
    #[error("the store key is wrong, or the file is not a Tether store")]
    WrongKey,
    /// The store file is damaged (truncated, overwritten).
    #[error("the store is damaged: {0}")]
    Corrupt(String),
    /// The store was written by a newer version of this app.
    #[error("the store has schema {0}, newer than this app reads: update the app")]
    NewerStore(i64),
    /// No episode with that id on this device.
    #[error("no episode {0} on this device")]
    NotFound(String),
    /// The input was refused; nothing was stored.
    #[error(transparent)]
    Invalid(#[from] ValidationError),
    /// The document refused the change, or could not be read; nothing was stored.
    #[error(transparent)]
    Document(#[from] DocumentError),
    /// The server's answer could not be used; nothing on the device was lost.
    #[error("the server's answer could not be used: {0}; nothing was lost, sync again")]
    Sync(String),
    /// The server could not be reached; nothing on the device was lost.
    #[error("the server could not be reached: {0}; nothing was lost, sync again later")]
    Network(String),
    /// The server refused the request, and said why.
    #[error("the server refused ({status} {code}): {message}")]
    Server { status: u16, code: String, message: String },
    /// A manager revoked this device: the host must wipe the store.
    #[error("this device has been revoked by a manager: its store must be wiped")]
    DeviceRevoked,
    /// A sign-in with the trust's identity provider could not be finished (none started,
    /// expired, or the provider said no); start it again.
    #[error("the sign-in did not complete: {0}")]
    SignIn(String),
    /// Recording and sync need a signed-in user on this device.
    #[error("no user is signed in on this device: sign in first")]
    NotSignedIn,
    /// Someone has signed in on this device: records are theirs, not a name given.
    #[error(
        "{0} is signed in on this device: records are by the signed-in user; sign in as someone else to record as them"
    )]
    SignedIn(String),
    /// The store could not be read or written.
    #[error("the store could not be used: {0}")]
    Storage(String),
}

impl From<rusqlite::Error> for Error {
    fn from(error: rusqlite::Error) -> Self {
        use rusqlite::ErrorCode;
        match error.sqlite_error_code() {
            Some(ErrorCode::NotADatabase) => Error::WrongKey,
            Some(ErrorCode::DatabaseCorrupt) => Error::Corrupt(error.to_string()),
            _ => Error::Storage(error.to_string()),
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
