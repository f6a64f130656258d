//! Signing in, refreshing tokens and whole sync sessions, over any transport that can
//! POST bytes to the server: [`Transport`]. The command line's ureq transport (`http`)
//! and a phone's own HTTP stack (through `ffi`) both drive this one loop, so that they
//! refresh, hold back refused episodes and stop on revocation in the same way.
//!
//! Tokens are kept in the store (encrypted with it): the refresh token, the access token
//! and when it expires. A sync refreshes the access token when it is near its end or
//! refused once; a refresh that is refused means signing in again.

use episode::EpisodeId;
use jiff::Timestamp;
use serde::Deserialize;
use serde_json::json;

use crate::error::{Error, Result};
use crate::{Core, SyncSummary};

pub(crate) const USERNAME: &str = "sync.username";
const ACCESS: &str = "sync.access_token";
const ACCESS_EXPIRES: &str = "sync.access_expires";
const REFRESH: &str = "sync.refresh_token";

/// The content type of the sign-in and refresh bodies.
pub const JSON: &str = "application/json";

/// Carries one request to the server and brings back its answer.
///
/// `path` is the server's route (`/v1/auth/login`, `/v1/auth/refresh`, `/v1/sync`); the
/// transport knows the server's address. It answers every status the server gave,
/// refusals included; it fails (with [`Error::Network`]) only when no answer came.
pub trait Transport {
    fn post(&self, path: &str, content_type: &str, body: Vec<u8>, bearer: Option<&str>) -> Result<Reply>;
}

/// The server's answer: its status and its body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply {
    pub status: u16,
    pub body: Vec<u8>,
}

#[derive(Deserialize)]
struct Tokens {
    access_token: String,
    refresh_token: String,
    expires_in: i64,
}

#[derive(Deserialize)]
struct ErrorBody {
    error: ErrorDetail,
}

#[derive(Deserialize)]
struct ErrorDetail {
    code: String,
    message: String,
    #[serde(default)]
    episode: Option<EpisodeId>,
}

/// What the server answered a sync request when it did not say yes.
enum Refusal {
    Unauthenticated,
    Revoked,
    Episode(EpisodeId, String),
    Other(Error),
}

/// Signs in as `username` on this device, and keeps the tokens in the store.
pub fn sign_in(
    core: &mut Core,
    transport: &dyn Transport,
    username: &str,
    password: &str,
    now: Timestamp,
) -> Result<()> {
    let body = json!({"username": username, "password": password, "device_id": core.device()});
    let reply = transport.post("/v1/auth/login", JSON, body.to_string().into_bytes(), None)?;
    let tokens: Tokens = match reply.status {
        200 => serde_json::from_slice(&reply.body).map_err(|e| Error::Sync(e.to_string()))?,
        status => return Err(refusal_error(status, &reply.body)),
    };
    core.set_setting(USERNAME, username)?;
    keep(core, &tokens, now)
}

/// The user signed in on this device, if any.
pub fn signed_in_user(core: &Core) -> Result<Option<String>> {
    core.setting(USERNAME)
}

/// Runs a whole sync session. A failure part-way loses nothing: what was applied is
/// stored, and the next sync goes on from there. A revoked device gets
/// [`Error::DeviceRevoked`], and its host must wipe the store ([`Core::wipe`]).
pub fn sync(core: &mut Core, transport: &dyn Transport, now: impl Fn() -> Timestamp) -> Result<SyncSummary> {
    let mut session = core.begin_sync();
    let mut token = access_token(core, transport, now(), false)?;
    let mut refreshed = false;
    while let Some(body) = core.sync_request(&mut session, now())? {
        match post_sync(transport, &token, body) {
            Ok(response) => core.apply_sync_response(&mut session, &response, now())?,
            Err(Refusal::Unauthenticated) if !refreshed => {
                token = access_token(core, transport, now(), true)?;
                refreshed = true;
                session.retry();
            }
            Err(Refusal::Unauthenticated) => return Err(Error::NotSignedIn),
            Err(Refusal::Revoked) => return Err(Error::DeviceRevoked),
            Err(Refusal::Episode(episode, reason)) => {
                core.hold_back(&mut session, episode, &reason)?;
                session.retry();
            }
            Err(Refusal::Other(error)) => return Err(error),
        }
    }
    Ok(session.summary)
}

/// A fresh access token: the kept one if it has more than a minute left, else a new one
/// from the refresh token (which rotates).
fn access_token(core: &mut Core, transport: &dyn Transport, now: Timestamp, force: bool) -> Result<String> {
    let expires: i64 = core.setting(ACCESS_EXPIRES)?.and_then(|s| s.parse().ok()).unwrap_or(0);
    if !force
        && expires > now.as_second() + 60
        && let Some(token) = core.setting(ACCESS)?
    {
        return Ok(token);
    }
    let refresh = core.setting(REFRESH)?.ok_or(Error::NotSignedIn)?;
    let body = json!({"refresh_token": refresh, "device_id": core.device()});
    let reply = transport.post("/v1/auth/refresh", JSON, body.to_string().into_bytes(), None)?;
    match reply.status {
        200 => {
            let tokens: Tokens = serde_json::from_slice(&reply.body).map_err(|e| Error::Sync(e.to_string()))?;
            keep(core, &tokens, now)?;
            Ok(tokens.access_token)
        }
        status => Err(refusal_error(status, &reply.body)),
    }
}

fn post_sync(transport: &dyn Transport, token: &str, body: Vec<u8>) -> Result<Vec<u8>, Refusal> {
    let reply = transport.post("/v1/sync", episode::sync::CONTENT_TYPE, body, Some(token)).map_err(Refusal::Other)?;
    if reply.status == 200 {
        return Ok(reply.body);
    }
    let detail = serde_json::from_slice::<ErrorBody>(&reply.body).ok().map(|b| b.error);
    Err(match (reply.status, detail) {
        (401, _) => Refusal::Unauthenticated,
        (403, Some(d)) if d.code == "device_revoked" => Refusal::Revoked,
        (404 | 422, Some(ErrorDetail { episode: Some(episode), message, .. })) => Refusal::Episode(episode, message),
        (status, detail) => Refusal::Other(match detail {
            Some(d) => Error::Server { status, code: d.code, message: d.message },
            None => Error::Server { status, code: "unknown".into(), message: "no error body".into() },
        }),
    })
}

fn keep(core: &mut Core, tokens: &Tokens, now: Timestamp) -> Result<()> {
    core.set_setting(ACCESS, &tokens.access_token)?;
    core.set_setting(ACCESS_EXPIRES, &(now.as_second() + tokens.expires_in).to_string())?;
    core.set_setting(REFRESH, &tokens.refresh_token)
}

fn refusal_error(status: u16, body: &[u8]) -> Error {
    match serde_json::from_slice::<ErrorBody>(body) {
        Ok(ErrorBody { error }) if error.code == "device_revoked" => Error::DeviceRevoked,
        Ok(ErrorBody { error }) => Error::Server { status, code: error.code, message: error.message },
        Err(_) => Error::Server { status, code: "unknown".into(), message: "no error body".into() },
    }
}
