//! The blocking HTTP transport (ureq, rustls) for the command line and the tests: sign-in,
//! token refresh, and a whole sync session over `POST /v1/sync`. Phones carry the same
//! bytes with their own HTTP stack instead.
//!
//! Tokens are kept in the store (encrypted with it): the refresh token, the access token
//! and when it expires. A sync refreshes the access token when it is near its end or
//! refused, and wipes the store when the server says the device has been revoked.

use std::time::Duration;

use episode::EpisodeId;
use jiff::Timestamp;
use serde::Deserialize;
use serde_json::json;

use crate::error::{Error, Result};
use crate::{Core, SyncSummary};

const SERVER: &str = "sync.server";
const USERNAME: &str = "sync.username";
const ACCESS: &str = "sync.access_token";
const ACCESS_EXPIRES: &str = "sync.access_expires";
const REFRESH: &str = "sync.refresh_token";

/// The largest response the transport reads.
const MAX_RESPONSE_BYTES: u64 = 256 * 1024 * 1024;

/// A server to talk to.
#[derive(Debug, Clone)]
pub struct Http {
    agent: ureq::Agent,
    base: String,
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

/// What the server answered when it did not say yes.
enum Refusal {
    Unauthenticated,
    Revoked,
    Episode(EpisodeId, String),
    Other(Error),
}

impl Http {
    /// A transport to the server at `base` (such as `http://127.0.0.1:8080`).
    pub fn new(base: &str) -> Self {
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(120)))
            .build()
            .into();
        Self { agent, base: base.trim_end_matches('/').to_string() }
    }

    /// The transport to the server this device signed in to.
    pub fn for_core(core: &Core) -> Result<Self> {
        let base = core.setting(SERVER)?.ok_or(Error::NotSignedIn)?;
        Ok(Self::new(&base))
    }

    fn post_json(&self, path: &str, body: serde_json::Value) -> Result<(u16, Vec<u8>)> {
        let mut response = self
            .agent
            .post(format!("{}{path}", self.base))
            .send_json(body)
            .map_err(|e| Error::Network(e.to_string()))?;
        read(&mut response)
    }

    /// Signs in as `username` on this device, and keeps the tokens in the store.
    pub fn login(&self, core: &mut Core, username: &str, password: &str, now: Timestamp) -> Result<()> {
        let (status, body) = self.post_json(
            "/v1/auth/login",
            json!({"username": username, "password": password, "device_id": core.device()}),
        )?;
        let tokens: Tokens = match status {
            200 => serde_json::from_slice(&body).map_err(|e| Error::Sync(e.to_string()))?,
            _ => return Err(refusal_error(status, &body)),
        };
        core.set_setting(SERVER, &self.base)?;
        core.set_setting(USERNAME, username)?;
        keep(core, &tokens, now)
    }

    /// A fresh access token: the kept one if it has more than a minute left, else a new
    /// one from the refresh token (which rotates).
    fn access_token(&self, core: &mut Core, now: Timestamp, force: bool) -> Result<String> {
        let expires: i64 = core.setting(ACCESS_EXPIRES)?.and_then(|s| s.parse().ok()).unwrap_or(0);
        if !force
            && expires > now.as_second() + 60
            && let Some(token) = core.setting(ACCESS)?
        {
            return Ok(token);
        }
        let refresh = core.setting(REFRESH)?.ok_or(Error::NotSignedIn)?;
        let (status, body) =
            self.post_json("/v1/auth/refresh", json!({"refresh_token": refresh, "device_id": core.device()}))?;
        match status {
            200 => {
                let tokens: Tokens = serde_json::from_slice(&body).map_err(|e| Error::Sync(e.to_string()))?;
                keep(core, &tokens, now)?;
                Ok(tokens.access_token)
            }
            _ => Err(refusal_error(status, &body)),
        }
    }

    /// Runs a whole sync session. A failure part-way loses nothing: what was applied is
    /// stored, and the next sync goes on from there. A revoked device's store is wiped
    /// (the core is consumed: `Error::DeviceRevoked`).
    pub fn sync(&self, core: &mut Core, now: impl Fn() -> Timestamp) -> Result<SyncSummary> {
        let mut session = core.begin_sync();
        let mut token = self.access_token(core, now(), false)?;
        let mut refreshed = false;
        while let Some(body) = core.sync_request(&mut session, now())? {
            match self.post_sync(&token, body) {
                Ok(response) => core.apply_sync_response(&mut session, &response, now())?,
                Err(Refusal::Unauthenticated) if !refreshed => {
                    token = self.access_token(core, now(), true)?;
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

    fn post_sync(&self, token: &str, body: Vec<u8>) -> Result<Vec<u8>, Refusal> {
        let mut response = self
            .agent
            .post(format!("{}/v1/sync", self.base))
            .header("Authorization", format!("Bearer {token}"))
            .content_type(episode::sync::CONTENT_TYPE)
            .send(&body[..])
            .map_err(|e| Refusal::Other(Error::Network(e.to_string())))?;
        let (status, bytes) = read(&mut response).map_err(Refusal::Other)?;
        if status == 200 {
            return Ok(bytes);
        }
        let detail = serde_json::from_slice::<ErrorBody>(&bytes).ok().map(|b| b.error);
        Err(match (status, detail) {
            (401, _) => Refusal::Unauthenticated,
            (403, Some(d)) if d.code == "device_revoked" => Refusal::Revoked,
            (404 | 422, Some(ErrorDetail { episode: Some(episode), message, .. })) => {
                Refusal::Episode(episode, message)
            }
            (status, detail) => Refusal::Other(match detail {
                Some(d) => Error::Server { status, code: d.code, message: d.message },
                None => Error::Server { status, code: "unknown".into(), message: "no error body".into() },
            }),
        })
    }
}

/// A response's status and body (at most `MAX_RESPONSE_BYTES`).
fn read(response: &mut ureq::http::Response<ureq::Body>) -> Result<(u16, Vec<u8>)> {
    let bytes = response
        .body_mut()
        .with_config()
        .limit(MAX_RESPONSE_BYTES)
        .read_to_vec()
        .map_err(|e| Error::Network(e.to_string()))?;
    Ok((response.status().as_u16(), bytes))
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
