//! Signing in, refreshing tokens and whole sync sessions, over any transport that can
//! POST bytes to the server: [`Transport`]. The command line's ureq transport (`http`)
//! and a phone's own HTTP stack (through `ffi`) both drive this one loop, so that they
//! refresh, hold back refused episodes and stop on revocation in the same way.
//!
//! [`Syncing`] is the same session as steps, so that a phone can let go of the core while
//! a request is in flight.
//!
//! Tokens are kept in the store (encrypted with it): the refresh token, the access token
//! and when it expires. A sync refreshes the access token when it is near its end or
//! refused once; a refresh that is refused means signing in again.

use episode::EpisodeId;
use jiff::Timestamp;
use serde::Deserialize;
use serde_json::json;

use crate::error::{Error, Result};
use crate::{Core, SyncSession, SyncSummary};

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

    /// Sends a [`Request`] made by one of the sans-IO steps.
    fn send(&self, request: Request) -> Result<Reply> {
        self.post(request.path, request.content_type, request.body, request.bearer.as_deref())
    }
}

/// The server's answer: its status and its body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply {
    pub status: u16,
    pub body: Vec<u8>,
}

#[derive(Deserialize)]
pub(crate) struct Tokens {
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
    /// One episode refused with an error status (servers before per-episode refusals).
    Episode(EpisodeId, episode::sync::Refusal),
    Other(Error),
}

/// Signs in as `username` on this device, and keeps the tokens in the store. From then on
/// every record made here is by `username` (a shift change on a shared device is another
/// sign-in), and episodes held back are offered to the server again.
///
/// The request names the device and carries its key: the server registers the device id
/// with the key at its first sign-in and takes no other sign-in under that id without it.
pub fn sign_in(
    core: &mut Core,
    transport: &dyn Transport,
    username: &str,
    password: &str,
    now: Timestamp,
) -> Result<()> {
    let request = sign_in_request(core, username, password)?;
    let reply = transport.send(request)?;
    signed_in(core, username, reply, now)
}

/// [`sign_in`]'s request, for a host that sends it itself (and lets go of the core
/// meanwhile); give the reply to [`signed_in`].
pub fn sign_in_request(core: &Core, username: &str, password: &str) -> Result<Request> {
    let body = json!({"username": username, "password": password, "device_id": core.device(),
                      "device_key": core.device_key()?});
    Ok(Request { path: "/v1/auth/login", content_type: JSON, body: body.to_string().into_bytes(), bearer: None })
}

/// Takes the server's reply to [`sign_in_request`]: keeps the tokens, and every record
/// from now on is by `username`.
pub fn signed_in(core: &mut Core, username: &str, reply: Reply, now: Timestamp) -> Result<()> {
    let tokens: Tokens = match reply.status {
        200 => serde_json::from_slice(&reply.body).map_err(Error::SignInAnswer)?,
        status => return Err(refusal_error(status, &reply.body)),
    };
    core.signed_in_as(username)?;
    keep(core, &tokens, now)
}

/// The user signed in on this device, if any.
pub fn signed_in_user(core: &Core) -> Result<Option<String>> {
    core.setting(crate::SIGNED_IN)
}

/// Runs a whole sync session. A failure part-way loses nothing: what was applied is
/// stored, and the next sync goes on from there. A revoked device gets
/// [`Error::DeviceRevoked`], and its host must wipe the store ([`Core::wipe`]).
pub fn sync(core: &mut Core, transport: &dyn Transport, now: impl Fn() -> Timestamp) -> Result<SyncSummary> {
    let mut syncing = Syncing::new(core);
    loop {
        match syncing.next(core, now())? {
            Next::Done(summary) => return Ok(summary),
            Next::Send(request) => {
                let reply = transport.send(request)?;
                syncing.answer(core, reply, now())?;
            }
        }
    }
}

/// A whole sync session as steps, for a host that must let go of the core while a
/// request is in flight (the phone's UI reads the caseload meanwhile): [`Syncing::next`]
/// gives the next request to send (a token refresh or a sync round) or the summary, and
/// [`Syncing::answer`] takes the server's reply to it. [`sync`] is this loop with the core
/// held throughout. Records made between two steps are sent in a later round or session.
#[derive(Debug)]
pub struct Syncing {
    session: SyncSession,
    token: Option<String>,
    /// The next token must be a new one: the server refused the last.
    force_refresh: bool,
    refreshed: bool,
    pending: Pending,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pending {
    Nothing,
    Refresh,
    Sync,
}

/// What a sync session needs next.
#[derive(Debug)]
pub enum Next {
    /// Send this request and give the reply to [`Syncing::answer`].
    Send(Request),
    /// The session is over.
    Done(SyncSummary),
}

/// A request for the transport to carry: a sync round, a token refresh or a sign-in.
#[derive(Debug)]
pub struct Request {
    pub path: &'static str,
    pub content_type: &'static str,
    pub body: Vec<u8>,
    pub bearer: Option<String>,
}

impl Syncing {
    /// Starts a session.
    pub fn new(core: &Core) -> Self {
        Self {
            session: core.begin_sync(),
            token: None,
            force_refresh: false,
            refreshed: false,
            pending: Pending::Nothing,
        }
    }

    /// The next request, or the summary when there is nothing left to say. A fresh access
    /// token comes first: the kept one if it has more than a minute left, else a new one
    /// from the refresh token (which rotates).
    pub fn next(&mut self, core: &mut Core, now: Timestamp) -> Result<Next> {
        if self.token.is_none() {
            let expires: i64 = core.setting(ACCESS_EXPIRES)?.and_then(|s| s.parse().ok()).unwrap_or(0);
            match core.setting(ACCESS)? {
                Some(token) if !self.force_refresh && expires > now.as_second() + 60 => self.token = Some(token),
                _ => {
                    let refresh = core.setting(REFRESH)?.ok_or(Error::NotSignedIn)?;
                    let body = json!({"refresh_token": refresh, "device_id": core.device()});
                    self.pending = Pending::Refresh;
                    return Ok(Next::Send(Request {
                        path: "/v1/auth/refresh",
                        content_type: JSON,
                        body: body.to_string().into_bytes(),
                        bearer: None,
                    }));
                }
            }
        }
        match core.sync_request(&mut self.session, now)? {
            Some(body) => {
                self.pending = Pending::Sync;
                Ok(Next::Send(Request {
                    path: "/v1/sync",
                    content_type: episode::sync::CONTENT_TYPE,
                    body,
                    bearer: self.token.clone(),
                }))
            }
            None => {
                self.pending = Pending::Nothing;
                Ok(Next::Done(std::mem::take(&mut self.session.summary)))
            }
        }
    }

    /// Takes the server's reply to the request [`Syncing::next`] gave.
    pub fn answer(&mut self, core: &mut Core, reply: Reply, now: Timestamp) -> Result<()> {
        match std::mem::replace(&mut self.pending, Pending::Nothing) {
            Pending::Nothing => Err(Error::sync("a reply came with no request pending")),
            Pending::Refresh => match reply.status {
                200 => {
                    let tokens: Tokens = serde_json::from_slice(&reply.body).map_err(Error::SignInAnswer)?;
                    keep(core, &tokens, now)?;
                    self.token = Some(tokens.access_token);
                    self.force_refresh = false;
                    Ok(())
                }
                status => Err(refusal_error(status, &reply.body)),
            },
            Pending::Sync => match sync_refusal(reply) {
                Ok(response) => core.apply_sync_response(&mut self.session, &response, now),
                Err(Refusal::Unauthenticated) if !self.refreshed => {
                    self.token = None;
                    self.force_refresh = true;
                    self.refreshed = true;
                    self.session.retry();
                    Ok(())
                }
                Err(Refusal::Unauthenticated) => Err(Error::NotSignedIn),
                Err(Refusal::Revoked) => Err(Error::DeviceRevoked),
                Err(Refusal::Episode(episode, reason)) => {
                    core.hold_back(&mut self.session, episode, reason)?;
                    self.session.retry();
                    Ok(())
                }
                Err(Refusal::Other(error)) => Err(error),
            },
        }
    }
}

/// A sync reply's body, or what the refusal means.
fn sync_refusal(reply: Reply) -> Result<Vec<u8>, Refusal> {
    if reply.status == 200 {
        return Ok(reply.body);
    }
    let detail = serde_json::from_slice::<ErrorBody>(&reply.body).ok().map(|b| b.error);
    Err(match (reply.status, detail) {
        (401, _) => Refusal::Unauthenticated,
        (403, Some(d)) if d.code == "device_revoked" => Refusal::Revoked,
        (404, Some(ErrorDetail { episode: Some(episode), .. })) => {
            Refusal::Episode(episode, episode::sync::Refusal::NotFound)
        }
        (422, Some(ErrorDetail { episode: Some(episode), message, .. })) => {
            Refusal::Episode(episode, episode::sync::Refusal::Invalid { message })
        }
        (status, detail) => Refusal::Other(match detail {
            Some(d) => Error::Server { status, code: d.code, message: d.message },
            None => Error::Server { status, code: "unknown".into(), message: "no error body".into() },
        }),
    })
}

pub(crate) fn keep(core: &mut Core, tokens: &Tokens, now: Timestamp) -> Result<()> {
    core.set_setting(ACCESS, &tokens.access_token)?;
    core.set_setting(ACCESS_EXPIRES, &(now.as_second() + tokens.expires_in).to_string())?;
    core.set_setting(REFRESH, &tokens.refresh_token)
}

pub(crate) fn refusal_error(status: u16, body: &[u8]) -> Error {
    match serde_json::from_slice::<ErrorBody>(body) {
        Ok(ErrorBody { error }) if error.code == "device_revoked" => Error::DeviceRevoked,
        Ok(ErrorBody { error }) => Error::Server { status, code: error.code, message: error.message },
        Err(_) => Error::Server { status, code: "unknown".into(), message: "no error body".into() },
    }
}
