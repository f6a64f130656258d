//! The blocking HTTP transport (ureq, rustls) for the command line and the tests: a
//! [`Transport`] to one server, and sign-in and whole sync sessions through the one loop
//! in `remote`. Phones carry the same bytes with their own HTTP stack instead.

use std::time::Duration;

use jiff::Timestamp;

use crate::error::{Error, Result};
use crate::identity;
use crate::remote::{self, Reply, Transport};
use crate::{Core, SyncSummary};

const SERVER: &str = "sync.server";

/// The largest response the transport reads.
const MAX_RESPONSE_BYTES: u64 = 256 * 1024 * 1024;

/// A server to talk to.
#[derive(Debug, Clone)]
pub struct Http {
    agent: ureq::Agent,
    base: String,
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

    /// Signs in as `username` on this device, and keeps the server and the tokens in the
    /// store.
    pub fn login(&self, core: &mut Core, username: &str, password: &str, now: Timestamp) -> Result<()> {
        remote::sign_in(core, self, username, password, now)?;
        core.set_setting(SERVER, &self.base)
    }

    /// Starts a sign-in with the trust's identity provider (see [`identity::begin`]):
    /// what to open in a browser.
    pub fn begin_identity_sign_in(
        &self,
        core: &mut Core,
        provider: Option<&str>,
        redirect_uri: Option<&str>,
        now: Timestamp,
    ) -> Result<identity::Authorization> {
        identity::begin(core, self, provider, redirect_uri, now)
    }

    /// Finishes it with the redirect the browser was sent to (see [`identity::finish`]),
    /// and keeps the server in the store; returns the signed-in username.
    pub fn finish_identity_sign_in(&self, core: &mut Core, redirect: &str, now: Timestamp) -> Result<String> {
        let username = identity::finish(core, self, redirect, now)?;
        core.set_setting(SERVER, &self.base)?;
        Ok(username)
    }

    /// Runs a whole sync session (see [`remote::sync`]). A failure part-way loses
    /// nothing; a revoked device gets `Error::DeviceRevoked` and must wipe its store.
    pub fn sync(&self, core: &mut Core, now: impl Fn() -> Timestamp) -> Result<SyncSummary> {
        remote::sync(core, self, now)
    }
}

impl Transport for Http {
    fn post(&self, path: &str, content_type: &str, body: Vec<u8>, bearer: Option<&str>) -> Result<Reply> {
        let mut request = self.agent.post(format!("{}{path}", self.base)).content_type(content_type);
        if let Some(token) = bearer {
            request = request.header("Authorization", format!("Bearer {token}"));
        }
        let mut response = request.send(&body[..]).map_err(|e| Error::Network(e.to_string()))?;
        let body = response
            .body_mut()
            .with_config()
            .limit(MAX_RESPONSE_BYTES)
            .read_to_vec()
            .map_err(|e| Error::Network(e.to_string()))?;
        Ok(Reply { status: response.status().as_u16(), body })
    }
}
