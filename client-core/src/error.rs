//! Errors: one internal type with the detail, never holding patient data. Each keeps its
//! cause (`source()`), a library's own error where there is one; they become strings only
//! at the FFI boundary (`ffi::TetherError`), which shows the sentence. A distinct failure
//! is a distinct case, so that callers (and the FFI's mapping) can tell them apart.

use episode::ValidationError;
use episode::document::DocumentError;

/// A cause kept behind an error, whatever its type.
pub type Cause = Box<dyn std::error::Error + Send + Sync + 'static>;

/// What went wrong in the client core.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The key does not open this store (or the file is not a Tether store).
    #[error("the store key is wrong, or the file is not a Tether store")]
    WrongKey,
    /// The store file is damaged (truncated, overwritten): `what` says where, `cause` is
    /// what found it, if anything did.
    #[error("the store is damaged: {what}")]
    Corrupt {
        what: String,
        #[source]
        cause: Option<Cause>,
    },
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
    /// The server's answer to a sync could not be used (`what` says how, `cause` is the
    /// decoder's word); nothing on the device was lost.
    #[error("the server's answer could not be used: {what}; nothing was lost, sync again")]
    Sync {
        what: String,
        #[source]
        cause: Option<Cause>,
    },
    /// The server's answer to a sign-in or a token refresh could not be read: the device
    /// is not signed in by it, and nothing on it was lost. Not a sync failure: syncing
    /// again would not help, signing in again may.
    #[error("the server's answer to a sign-in could not be read ({0}); nothing was lost, sign in again")]
    SignInAnswer(#[source] serde_json::Error),
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
    Storage(#[source] rusqlite::Error),
    /// The store refused a setting it needs (`0` says which).
    #[error("the store could not be set up: {0}")]
    Setup(String),
    /// A file of the store could not be made or deleted (`doing` says which).
    #[error("the store could not be used: cannot {doing}: {source}")]
    Io {
        doing: &'static str,
        #[source]
        source: std::io::Error,
    },
    /// The system gave no random numbers (for a key, or a sign-in's secrets).
    #[error("no random numbers: {0}")]
    Random(#[source] getrandom::Error),
    /// A value of the core's own could not be written as JSON (a bug, not bad input).
    #[error("could not write JSON: {0}")]
    Encode(#[source] serde_json::Error),
}

impl Error {
    /// The store is damaged, as `what` says.
    pub(crate) fn corrupt(what: impl Into<String>) -> Self {
        Self::Corrupt { what: what.into(), cause: None }
    }

    /// The store is damaged, as `what` says and `cause` found.
    pub(crate) fn corrupt_by(what: impl Into<String>, cause: impl Into<Cause>) -> Self {
        Self::Corrupt { what: what.into(), cause: Some(cause.into()) }
    }

    /// The server's answer could not be used, as `what` says.
    pub(crate) fn sync(what: impl Into<String>) -> Self {
        Self::Sync { what: what.into(), cause: None }
    }

    /// The server's answer could not be used, as `what` says and `cause` found.
    pub(crate) fn sync_by(what: impl Into<String>, cause: impl Into<Cause>) -> Self {
        Self::Sync { what: what.into(), cause: Some(cause.into()) }
    }
}

impl From<rusqlite::Error> for Error {
    fn from(error: rusqlite::Error) -> Self {
        use rusqlite::ErrorCode;
        match error.sqlite_error_code() {
            Some(ErrorCode::NotADatabase) => Error::WrongKey,
            Some(ErrorCode::DatabaseCorrupt) => Error::corrupt_by("SQLite found it damaged", error),
            _ => Error::Storage(error),
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
