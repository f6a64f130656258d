//! Signing in with the trust's OpenID provider (NHS CIS2, Entra ID): Tether is the
//! confidential client of the authorization code flow, for the dashboard (a browser
//! sent to the provider and back) and for the phones (RFC 8252: the phone opens the
//! system browser, keeps the PKCE verifier, and has Tether exchange the code).
//!
//! - `config`: the settings file (`--oidc-config`): providers, passwords on or off.
//! - `mapping`: the claims mapping from a person's roles at the trust to Tether's.
//! - `pkce`: `state`, `nonce` and the PKCE verifier and its S256 challenge.
//! - `client_auth`: `private_key_jwt` (RFC 7523) or a client secret at the token endpoint.
//! - `fetch`: HTTP to the provider (ureq, rustls), HTTPS or loopback only.
//! - `keys`: the provider's JWKS, cached, fetched again for an unknown `kid`.
//! - `id_token`: the ID token's checks.
//! - `provider`: a provider at run time: discovery, the authorization URL, the exchange.
//! - `routes`: the phones' routes under `/v1/auth/oidc/`.
//!
//! A person is known by (provider, subject): the first sign-in makes their user, named
//! `provider:login-name` (a local username never contains `:`), and every sign-in sets
//! their role and teams from the mapping. The audit log records each sign-in and each
//! refusal with the provider and the subject.

pub mod client_auth;
pub mod config;
pub mod fetch;
pub mod id_token;
pub mod keys;
pub mod mapping;
pub mod pkce;
pub mod provider;
pub(crate) mod routes;

use std::path::Path;

use crate::store::{StoreError, Tx};
use axum::http::StatusCode;

use crate::accounts::{self, AccountError, TeamId, User, Username};
use crate::audit::{self, AuditAction, Via, Who};
use crate::error::AppError;
pub use config::{ProviderId, Settings};
use id_token::IdTokenError;
use mapping::{Mapping, NotPlaced};
pub use provider::{Exchange, Identity, Provider, ProviderError};

/// How long a sign-in may stay at the provider before its answer is no longer taken.
pub const PENDING_TTL_SECS: i64 = 10 * 60;

/// How people sign in here: with passwords or not, and with which providers.
#[derive(Debug)]
pub struct SignIn {
    pub passwords: bool,
    pub providers: Vec<Provider>,
    pub mapping: Mapping,
}

impl Default for SignIn {
    /// Local passwords only: the embedded default.
    fn default() -> Self {
        Self { passwords: true, providers: Vec::new(), mapping: Mapping::default() }
    }
}

impl SignIn {
    pub fn from_settings(settings: Settings) -> Self {
        let http = fetch::Http::default();
        Self {
            passwords: settings.passwords,
            providers: settings.providers.into_iter().map(|p| Provider::new(p, http.clone())).collect(),
            mapping: settings.mapping,
        }
    }

    /// Reads the settings file (`--oidc-config`).
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        Ok(Self::from_settings(Settings::load(path)?))
    }

    pub fn provider(&self, id: &str) -> Option<&Provider> {
        self.providers.iter().find(|p| p.settings.id.as_str() == id)
    }
}

/// Why a sign-in with a provider did not make a signed-in user.
#[derive(Debug, thiserror::Error)]
pub enum SignInError {
    #[error(transparent)]
    Provider(#[from] ProviderError),
    #[error("{0}")]
    NotPlaced(NotPlaced),
    #[error("the claims mapping places this person only in teams that do not exist here: {0}")]
    NoSuchTeams(String),
    #[error("this account has been disabled in Tether")]
    Disabled,
}

impl SignInError {
    /// A short code for logs, the audit log and the JSON error.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Provider(ProviderError::Unavailable(_)) => "provider_unavailable",
            Self::Provider(ProviderError::Refused(_)) => "provider_refused",
            Self::Provider(ProviderError::IdToken(IdTokenError::AcrTooLow { .. })) => "assurance_too_low",
            Self::Provider(_) => "invalid_id_token",
            Self::NotPlaced(_) | Self::NoSuchTeams(_) => "not_placed",
            Self::Disabled => "user_disabled",
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            Self::Provider(ProviderError::Unavailable(_)) => StatusCode::BAD_GATEWAY,
            Self::Provider(ProviderError::IdToken(IdTokenError::AcrTooLow { .. }))
            | Self::NotPlaced(_)
            | Self::NoSuchTeams(_)
            | Self::Disabled => StatusCode::FORBIDDEN,
            Self::Provider(_) => StatusCode::UNAUTHORIZED,
        }
    }
}

impl From<SignInError> for AppError {
    fn from(error: SignInError) -> Self {
        AppError::SignInFailed { status: error.status(), code: error.code(), message: error.to_string() }
    }
}

/// The username a person from `provider` gets at their first sign-in:
/// `provider:login-name`, the login name (or, without one, the subject) kept to letters,
/// digits and `.`, `_`, `-`, `@`, and cut to fit.
pub fn username_base(provider: &ProviderId, identity: &Identity) -> String {
    let name = identity.login_name.as_deref().unwrap_or(&identity.subject);
    let cleaned: String = name
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '@') { c } else { '_' })
        .collect();
    let prefix = format!("{provider}:");
    // Room for a `~N` suffix, should the name be taken.
    let room = Username::MAX_CHARS - prefix.len() - 4;
    let cleaned = if cleaned.is_empty() { "user".to_owned() } else { cleaned.chars().take(room).collect() };
    format!("{prefix}{cleaned}")
}

/// Makes (or updates) the user a checked identity is, in `tx`: the mapping places them,
/// a first sign-in makes their user, later ones set their role and teams again. A
/// disabled user stays out; a known person the mapping no longer places loses their
/// teams. The caller commits either way (a refusal is audited).
pub fn enrol(
    tx: &mut dyn Tx,
    sign_in: &SignIn,
    provider: &ProviderId,
    identity: &Identity,
    now: jiff::Timestamp,
) -> Result<Result<User, SignInError>, AppError> {
    let known = accounts::identity_user(tx, provider.as_str(), &identity.subject)?;
    // A person the trust no longer places in any team here loses the teams they had, so
    // that sessions they already hold see nothing from now on.
    let unplace = |tx: &mut dyn Tx, error: SignInError| -> Result<Result<User, SignInError>, AppError> {
        if let Some((user_id, _)) = &known {
            accounts::clear_teams(tx, user_id)?;
        }
        Ok(Err(error))
    };
    let placement = match sign_in.mapping.place(provider, &identity.seen) {
        Ok(placement) => placement,
        Err(not_placed) => return unplace(tx, SignInError::NotPlaced(not_placed)),
    };
    let teams = accounts::existing_teams(tx, &placement.teams)?;
    if teams.is_empty() {
        let names: Vec<&str> = placement.teams.iter().map(TeamId::as_str).collect();
        return unplace(tx, SignInError::NoSuchTeams(names.join(", ")));
    }
    let user_id = match known {
        Some((_, true)) => return Ok(Err(SignInError::Disabled)),
        Some((user_id, false)) => {
            accounts::update_identity_user(
                tx,
                provider.as_str(),
                &identity.subject,
                &user_id,
                placement.role,
                &teams,
                now,
            )?;
            user_id
        }
        None => {
            let base = username_base(provider, identity);
            accounts::add_identity_user(tx, provider.as_str(), &identity.subject, &base, placement.role, &teams, now)
                .map_err(|e| match e {
                    AccountError::Store(e) => AppError::from(e),
                    other => AppError::internal(other),
                })?
        }
    };
    Ok(accounts::active_user(tx, &user_id)?.ok_or(SignInError::Disabled))
}

/// The audit log's detail of a sign-in: the provider and the subject.
fn detail(provider: &ProviderId, subject: &str) -> String {
    format!("provider={provider} subject={subject}")
}

/// Notes a sign-in in the audit log.
pub fn audit_sign_in(
    tx: &mut dyn Tx,
    user: &User,
    device: &str,
    via: Via,
    provider: &ProviderId,
    subject: &str,
    now_ms: i64,
) -> Result<(), StoreError> {
    let who = Who { user_id: user.id.to_string(), username: user.username.clone(), device: device.to_owned(), via };
    audit::log(tx, &who, now_ms, AuditAction::OidcSignIn, None, Some(&detail(provider, subject)))
}

/// Notes a refused sign-in in the audit log, for a person the provider vouched for but
/// Tether turned away (no user is named: there may be none).
pub fn audit_refusal(
    tx: &mut dyn Tx,
    device: &str,
    via: Via,
    provider: &ProviderId,
    identity: &Identity,
    error: &SignInError,
    now_ms: i64,
) -> Result<(), StoreError> {
    let who =
        Who { user_id: String::new(), username: username_base(provider, identity), device: device.to_owned(), via };
    let detail = format!("{} refused={}", detail(provider, &identity.subject), error.code());
    audit::log(tx, &who, now_ms, AuditAction::OidcSignInRefused, None, Some(&detail))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usernames_are_prefixed_cleaned_and_short() {
        let provider: ProviderId = "cis2".parse().expect("an id");
        let identity = |login: Option<&str>, subject: &str| Identity {
            subject: subject.into(),
            login_name: login.map(str::to_owned),
            acr: None,
            seen: mapping::Seen::default(),
        };
        assert_eq!(username_base(&provider, &identity(Some("jo.bloggs@nhs.net"), "s")), "cis2:jo.bloggs@nhs.net");
        assert_eq!(username_base(&provider, &identity(Some("jo bloggs:1"), "s")), "cis2:jo_bloggs_1");
        assert_eq!(username_base(&provider, &identity(None, "555-21")), "cis2:555-21");
        let long = username_base(&provider, &identity(Some(&"x".repeat(200)), "s"));
        assert_eq!(long.chars().count(), Username::MAX_CHARS - 4);
        assert!(Username::try_from(long).is_ok());
    }
}
