//! Signing in with the trust's identity provider on a phone (RFC 8252, OAuth 2.0 for
//! native apps): the core makes the PKCE verifier, `state` and `nonce` and keeps them in
//! its encrypted store; the Tether server gives the authorization URL for them (it knows
//! the provider's settings; it sees only the S256 challenge); the host opens the URL in
//! the system browser, and hands back the redirect it receives; the core checks its
//! `state` and has the server (the confidential client) exchange the code for Tether's
//! own device-bound tokens.
//!
//! The pending sign-in is in the store, so that the app may be stopped while the browser
//! is open and still finish; one older than [`PENDING_TTL_SECS`], or one already
//! finished, fails with [`Error::SignIn`] saying to start again.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::Core;
use crate::error::{Error, Result};
use crate::remote::{self, JSON, Reply, Request, Tokens, Transport};

/// Where the pending sign-in is kept (a setting, so in the encrypted store).
const PENDING: &str = "oidc.pending";
/// How long a sign-in may stay in the browser: the server keeps the same limit.
pub const PENDING_TTL_SECS: i64 = 10 * 60;

/// A sign-in under way in the browser.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pending {
    pub provider: String,
    pub redirect_uri: String,
    pub started_at: i64,
    state: String,
    nonce: String,
    verifier: String,
}

/// What the host opens in the system browser.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Authorization {
    pub provider: String,
    pub authorization_url: String,
    /// The redirect the browser will be sent to (the app's own), which the host hands back.
    pub redirect_uri: String,
}

/// 32 random bytes, base64url without padding.
fn random_value() -> Result<String> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(Error::Random)?;
    Ok(URL_SAFE_NO_PAD.encode(bytes))
}

/// The sign-in under way on this device, if any (whether or not it has expired).
pub fn pending(core: &Core) -> Result<Option<Pending>> {
    Ok(core.setting(PENDING)?.and_then(|text| serde_json::from_str(&text).ok()))
}

/// Starts a sign-in with `provider` (or the server's only one), to come back to
/// `redirect_uri` (or the first the server has for phones): keeps the one-time values in
/// the store (replacing any earlier sign-in) and returns what to open in the browser.
pub fn begin(
    core: &mut Core,
    transport: &dyn Transport,
    provider: Option<&str>,
    redirect_uri: Option<&str>,
    now: Timestamp,
) -> Result<Authorization> {
    let (request, secrets) = begin_request(provider, redirect_uri)?;
    let reply = transport.send(request)?;
    begun(core, secrets, reply, now)
}

/// The one-time values of a sign-in being started, between [`begin_request`] and
/// [`begun`]: nothing is kept until the server has answered.
#[derive(Debug)]
pub struct Secrets {
    state: String,
    nonce: String,
    verifier: String,
}

/// [`begin`]'s request (it needs no store), for a host that sends it itself; give the
/// reply and the secrets to [`begun`].
pub fn begin_request(provider: Option<&str>, redirect_uri: Option<&str>) -> Result<(Request, Secrets)> {
    let (state, nonce, verifier) = (random_value()?, random_value()?, random_value()?);
    let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
    let mut body = json!({"code_challenge": challenge, "state": state, "nonce": nonce});
    if let Some(provider) = provider {
        body["provider"] = json!(provider);
    }
    if let Some(uri) = redirect_uri {
        body["redirect_uri"] = json!(uri);
    }
    let request = Request {
        path: "/v1/auth/oidc/authorize",
        content_type: JSON,
        body: body.to_string().into_bytes(),
        bearer: None,
    };
    Ok((request, Secrets { state, nonce, verifier }))
}

/// Takes the server's reply to [`begin_request`]: keeps the pending sign-in (replacing
/// any earlier one) and returns what to open in the browser.
pub fn begun(core: &mut Core, secrets: Secrets, reply: Reply, now: Timestamp) -> Result<Authorization> {
    if reply.status != 200 {
        return Err(remote::refusal_error(reply.status, &reply.body));
    }
    let authorization: Authorization = serde_json::from_slice(&reply.body).map_err(Error::SignInAnswer)?;
    let Secrets { state, nonce, verifier } = secrets;
    let pending = Pending {
        provider: authorization.provider.clone(),
        redirect_uri: authorization.redirect_uri.clone(),
        started_at: now.as_second(),
        state,
        nonce,
        verifier,
    };
    let text = serde_json::to_string(&pending).map_err(Error::Encode)?;
    core.set_setting(PENDING, &text)?;
    Ok(authorization)
}

/// The query of a redirect to `expected` (`scheme:/path?query`), as name-value pairs, or
/// `None` if the redirect goes elsewhere.
fn redirect_query(redirect: &str, expected: &str) -> Option<Vec<(String, String)>> {
    let without_fragment = redirect.split('#').next().unwrap_or(redirect);
    let (target, query) = without_fragment.split_once('?').unwrap_or((without_fragment, ""));
    let expected = expected.split('?').next().unwrap_or(expected);
    (target == expected).then(|| form_urlencoded::parse(query.as_bytes()).into_owned().collect())
}

/// Finishes the sign-in with the redirect the browser was sent to: checks that it is the
/// answer to the pending sign-in (its `state`), and has the server exchange the code.
/// Returns the signed-in username; the tokens are kept in the store as a password
/// sign-in keeps them.
pub fn finish(core: &mut Core, transport: &dyn Transport, redirect: &str, now: Timestamp) -> Result<String> {
    let request = finish_request(core, redirect, now)?;
    // No answer: the code may still be good, so the sign-in stays pending for a retry.
    let reply = transport.send(request)?;
    finished(core, reply, now)
}

/// [`finish`]'s checks of the redirect and its request, for a host that sends it itself;
/// give the reply to [`finished`]. A redirect that cannot be used ends the sign-in here
/// (an error from the provider, no code, expired) or leaves it pending (another sign-in's
/// redirect, an address that is not the redirect).
pub fn finish_request(core: &mut Core, redirect: &str, now: Timestamp) -> Result<Request> {
    let Some(pending) = pending(core)? else {
        return Err(Error::SignIn(
            "no sign-in was started on this device, or it has already finished: start again".into(),
        ));
    };
    if now.as_second() > pending.started_at + PENDING_TTL_SECS {
        core.clear_setting(PENDING)?;
        return Err(Error::SignIn("the sign-in took longer than ten minutes and has expired: start again".into()));
    }
    let Some(query) = redirect_query(redirect.trim(), &pending.redirect_uri) else {
        return Err(Error::SignIn(format!(
            "that is not the redirect to {}: hand back the address the browser was sent to",
            pending.redirect_uri
        )));
    };
    let value = |name: &str| query.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
    // A redirect from another sign-in (an old tab, say) leaves this one pending.
    if value("state") != Some(pending.state.as_str()) {
        return Err(Error::SignIn("the redirect belongs to another sign-in (its state differs)".into()));
    }
    if let Some(error) = value("error") {
        core.clear_setting(PENDING)?;
        let description = value("error_description").unwrap_or_default();
        return Err(Error::SignIn(format!("the identity provider said {error} {description}").trim().to_owned()));
    }
    let Some(code) = value("code").filter(|c| !c.is_empty()) else {
        core.clear_setting(PENDING)?;
        return Err(Error::SignIn("the redirect carries no code".into()));
    };
    let body = json!({
        "provider": pending.provider,
        "code": code,
        "code_verifier": pending.verifier,
        "redirect_uri": pending.redirect_uri,
        "nonce": pending.nonce,
        "device_id": core.device(),
        "device_key": core.device_key()?,
    });
    Ok(Request { path: "/v1/auth/oidc/token", content_type: JSON, body: body.to_string().into_bytes(), bearer: None })
}

/// Takes the server's reply to [`finish_request`]: the code is spent either way, so the
/// pending sign-in ends; on success the device is signed in (tokens kept as a password
/// sign-in keeps them) and the username returned.
pub fn finished(core: &mut Core, reply: Reply, now: Timestamp) -> Result<String> {
    core.clear_setting(PENDING)?;
    if reply.status != 200 {
        return Err(remote::refusal_error(reply.status, &reply.body));
    }
    #[derive(Deserialize)]
    struct SignedIn {
        #[serde(flatten)]
        tokens: Tokens,
        username: String,
    }
    let signed_in: SignedIn = serde_json::from_slice(&reply.body).map_err(Error::SignInAnswer)?;
    core.signed_in_as(&signed_in.username)?;
    remote::keep(core, &signed_in.tokens, now)?;
    Ok(signed_in.username)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_redirect_to_the_expected_uri_is_read() {
        let query = redirect_query("uk.nhs.x.tether:/oidc?code=a%2Bb&state=s1#frag", "uk.nhs.x.tether:/oidc")
            .expect("the expected redirect");
        assert_eq!(query, [("code".to_owned(), "a+b".to_owned()), ("state".to_owned(), "s1".to_owned())]);
        assert!(redirect_query("https://evil.example/oidc?code=a&state=s1", "uk.nhs.x.tether:/oidc").is_none());
        assert!(redirect_query("uk.nhs.x.tether:/oidc/more?code=a", "uk.nhs.x.tether:/oidc").is_none());
    }
}
