//! One configured provider at run time: its settings, its discovery document and keys
//! (fetched when first needed and kept), the authorization URL of a sign-in, and the
//! exchange of a code for a checked identity.

use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::{Map, Value};

use super::config::{ProviderSettings, transport_allowed};
use super::fetch::{Answer, Http};
use super::id_token::{self, Expect, IdTokenError};
use super::keys::{KeyCache, parse_jwks};
use super::mapping::{self, Seen};

/// How long a discovery document is kept before it is fetched again.
pub const METADATA_MAX_AGE: Duration = Duration::from_secs(60 * 60);
/// The longest text of a provider's own error kept for a page or a log line.
const MAX_PROVIDER_TEXT: usize = 200;

/// The endpoints of a provider's discovery document that Tether uses.
#[derive(Debug, Clone, Deserialize)]
pub struct Metadata {
    pub issuer: String,
    pub authorization_endpoint: String,
    pub token_endpoint: String,
    pub jwks_uri: String,
    #[serde(default)]
    pub userinfo_endpoint: Option<String>,
}

/// Why a sign-in with a provider failed.
#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    /// The provider could not be reached, or answered nonsense (502).
    #[error("{0}")]
    Unavailable(String),
    /// The provider refused to exchange the code (an old or used code, or it did not
    /// accept Tether's client credentials).
    #[error("the identity provider refused the sign-in: {0}")]
    Refused(String),
    #[error(transparent)]
    IdToken(#[from] IdTokenError),
    #[error("the identity provider's userinfo answer is for another person (`sub`)")]
    UserinfoSubject,
}

/// Who signed in, as the provider vouches.
#[derive(Debug, Clone)]
pub struct Identity {
    pub subject: String,
    /// A name to derive the username from: `preferred_username`, `email`, `uid`, or none.
    pub login_name: Option<String>,
    pub acr: Option<String>,
    pub seen: Seen,
}

/// A code to exchange, with what the sign-in that got it kept.
#[derive(Debug)]
pub struct Exchange<'a> {
    pub code: &'a str,
    pub verifier: &'a str,
    pub redirect_uri: &'a str,
    pub nonce: &'a str,
}

/// A provider, configured and in use.
#[derive(Debug)]
pub struct Provider {
    pub settings: ProviderSettings,
    http: Http,
    metadata: Mutex<Option<(Metadata, Instant)>>,
    keys: KeyCache,
}

/// Printable text of at most `MAX_PROVIDER_TEXT` characters.
fn tidy(text: &str) -> String {
    text.chars().filter(|c| !c.is_control()).take(MAX_PROVIDER_TEXT).collect()
}

fn json_of<T: serde::de::DeserializeOwned>(answer: &Answer, what: &str) -> Result<T, ProviderError> {
    serde_json::from_slice(&answer.body).map_err(|e| {
        ProviderError::Unavailable(format!("the identity provider's {what} is not what OpenID Connect says: {e}"))
    })
}

impl Provider {
    pub fn new(settings: ProviderSettings, http: Http) -> Self {
        Self { settings, http, metadata: Mutex::new(None), keys: KeyCache::default() }
    }

    /// The discovery document, fetched when first needed and again after an hour. Its
    /// `issuer` must be the configured one exactly, and each endpoint HTTPS (or loopback).
    pub fn metadata(&self) -> Result<Metadata, ProviderError> {
        if let Some((metadata, at)) = self.metadata.lock().unwrap_or_else(PoisonError::into_inner).as_ref()
            && at.elapsed() < METADATA_MAX_AGE
        {
            return Ok(metadata.clone());
        }
        let url = format!("{}/.well-known/openid-configuration", self.settings.issuer.trim_end_matches('/'));
        let unavailable =
            |e: String| ProviderError::Unavailable(format!("the identity provider's discovery document: {e}"));
        let answer = self.http.get(&url, None).map_err(|e| unavailable(e.to_string()))?;
        if answer.status != 200 {
            return Err(unavailable(format!("{url} answered {}", answer.status)));
        }
        let metadata: Metadata = json_of(&answer, "discovery document")?;
        if metadata.issuer != self.settings.issuer {
            return Err(unavailable(format!(
                "it names the issuer `{}`, not the configured one",
                tidy(&metadata.issuer)
            )));
        }
        let endpoints = [&metadata.authorization_endpoint, &metadata.token_endpoint, &metadata.jwks_uri];
        if !endpoints.into_iter().chain(metadata.userinfo_endpoint.as_ref()).all(|url| transport_allowed(url)) {
            return Err(unavailable("an endpoint is neither https:// nor on this machine".into()));
        }
        if self.settings.userinfo && metadata.userinfo_endpoint.is_none() {
            return Err(unavailable("it names no userinfo endpoint, and the settings ask for one".into()));
        }
        *self.metadata.lock().unwrap_or_else(PoisonError::into_inner) = Some((metadata.clone(), Instant::now()));
        Ok(metadata)
    }

    /// Where to send the person: the authorization endpoint with this sign-in's values.
    pub fn authorization_url(
        &self,
        metadata: &Metadata,
        redirect_uri: &str,
        state: &str,
        nonce: &str,
        challenge: &str,
    ) -> String {
        let mut query = form_urlencoded::Serializer::new(String::new());
        query
            .append_pair("response_type", "code")
            .append_pair("client_id", &self.settings.client_id)
            .append_pair("redirect_uri", redirect_uri)
            .append_pair("scope", &self.settings.scopes.join(" "))
            .append_pair("state", state)
            .append_pair("nonce", nonce)
            .append_pair("code_challenge", challenge)
            .append_pair("code_challenge_method", "S256");
        if let Some(acr) = &self.settings.acr {
            query.append_pair("acr_values", &acr.accepted().join(" "));
        }
        let endpoint = &metadata.authorization_endpoint;
        let joiner = if endpoint.contains('?') { '&' } else { '?' };
        format!("{endpoint}{joiner}{}", query.finish())
    }

    /// Exchanges a code at the token endpoint (the client authenticating as configured),
    /// checks the ID token, reads userinfo if configured, and says who signed in.
    pub fn exchange(&self, exchange: &Exchange<'_>, now: i64) -> Result<Identity, ProviderError> {
        let metadata = self.metadata()?;
        let settings = &self.settings;
        let credentials = settings
            .auth
            .credentials(&settings.client_id, &metadata.token_endpoint, now)
            .map_err(ProviderError::Unavailable)?;
        let mut form = vec![
            ("grant_type", "authorization_code".to_owned()),
            ("code", exchange.code.to_owned()),
            ("redirect_uri", exchange.redirect_uri.to_owned()),
            ("code_verifier", exchange.verifier.to_owned()),
        ];
        form.extend(credentials.form);
        let answer = self
            .http
            .post_form(&metadata.token_endpoint, &form, credentials.authorization.as_deref())
            .map_err(|e| ProviderError::Unavailable(format!("the identity provider's token endpoint: {e}")))?;
        if answer.status != 200 {
            #[derive(Deserialize)]
            struct Refusal {
                error: String,
                #[serde(default)]
                error_description: Option<String>,
            }
            return Err(match serde_json::from_slice::<Refusal>(&answer.body) {
                Ok(refusal) => ProviderError::Refused(match refusal.error_description {
                    Some(description) => format!("{} ({})", tidy(&refusal.error), tidy(&description)),
                    None => tidy(&refusal.error),
                }),
                Err(_) => ProviderError::Unavailable(format!(
                    "the identity provider's token endpoint answered {}",
                    answer.status
                )),
            });
        }
        #[derive(Deserialize)]
        struct Tokens {
            id_token: Option<String>,
            access_token: Option<String>,
        }
        let tokens: Tokens = json_of(&answer, "token response")?;
        let id_token = tokens.id_token.ok_or(IdTokenError::Missing("id_token"))?;
        let fetch = || {
            let answer = self.http.get(&metadata.jwks_uri, None).map_err(|e| e.to_string())?;
            if answer.status != 200 {
                return Err(format!("{} answered {}", metadata.jwks_uri, answer.status));
            }
            parse_jwks(&answer.body)
        };
        let expect = Expect {
            issuer: &settings.issuer,
            client_id: &settings.client_id,
            nonce: exchange.nonce,
            now,
            leeway_secs: settings.leeway_secs,
            algs: &settings.id_token_algs,
            acr: settings.acr.as_ref(),
        };
        let claims = id_token::validate(&id_token, &self.keys, fetch, &expect)?;
        let mut other = claims.other;
        if settings.userinfo {
            let access = tokens.access_token.ok_or(IdTokenError::Missing("access_token"))?;
            let userinfo = self.userinfo(&metadata, &access)?;
            if userinfo.get("sub").and_then(Value::as_str) != Some(claims.sub.as_str()) {
                return Err(ProviderError::UserinfoSubject);
            }
            // The ID token's claims stand; userinfo adds what it lacks (CIS2's roles).
            for (name, value) in userinfo {
                other.entry(name).or_insert(value);
            }
        }
        let login_name = ["preferred_username", "email", "uid"]
            .iter()
            .find_map(|name| other.get(*name).and_then(Value::as_str).filter(|s| !s.is_empty()).map(str::to_owned));
        Ok(Identity { subject: claims.sub, login_name, acr: claims.acr, seen: mapping::seen(&other) })
    }

    fn userinfo(&self, metadata: &Metadata, access_token: &str) -> Result<Map<String, Value>, ProviderError> {
        let url = metadata.userinfo_endpoint.as_deref().unwrap_or_default();
        let answer = self
            .http
            .get(url, Some(access_token))
            .map_err(|e| ProviderError::Unavailable(format!("the identity provider's userinfo endpoint: {e}")))?;
        if answer.status != 200 {
            return Err(ProviderError::Unavailable(format!(
                "the identity provider's userinfo endpoint answered {}",
                answer.status
            )));
        }
        json_of(&answer, "userinfo answer")
    }

    /// How many times this provider's keys have been fetched (for tests and logs).
    pub fn key_fetches(&self) -> u64 {
        self.keys.fetches()
    }
}
