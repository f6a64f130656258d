//! Access tokens: 15-minute JWTs signed with HS256, the algorithm pinned, the issuer and
//! audience set and checked, and `exp`, `nbf` and `iat` checked against the server's own
//! (injectable) clock. Each token names its key (`kid`): one key signs, several verify,
//! so keys rotate without signing anyone out (`auth::keys` says where keys come from).
//! Refresh tokens: 32 random bytes, kept only as a SHA-256.

use std::collections::HashMap;
use std::fmt;

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::accounts::Role;
use crate::error::AppError;

pub const ISSUER: &str = "tether";
pub const AUDIENCE: &str = "tether-api";
/// How long an access token lives.
pub const ACCESS_TTL_SECS: i64 = 15 * 60;
/// How long a refresh token lives if it is not used; each use gives a new one.
pub const REFRESH_TTL_SECS: i64 = 30 * 24 * 60 * 60;
/// The shortest signing secret accepted (from `TETHER_JWT_SECRET`).
pub const MIN_SECRET_BYTES: usize = 32;
/// How far ahead of this server's clock a token's `nbf` or `iat` may be: the clock of
/// another replica that issued it may run a little fast. Expiry has no such leeway.
pub const CLOCK_LEEWAY_SECS: i64 = 60;

/// What an access token says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    pub iss: String,
    pub aud: String,
    /// The user's id.
    pub sub: String,
    pub iat: i64,
    /// Not valid before (the time it was issued).
    pub nbf: i64,
    pub exp: i64,
    pub role: Role,
    pub teams: Vec<String>,
    /// The device the token was issued to.
    pub device: String,
    /// The session (sign-in) the token belongs to; revoking it stops the token.
    pub sid: String,
}

/// A key's id: the start of a hash of the secret, so that every replica given the same
/// secret names it alike, and the id says nothing about the secret.
pub fn key_id(secret: &[u8]) -> String {
    let mut hasher = Sha256::new();
    hasher.update(b"tether access-token key id\0");
    hasher.update(secret);
    to_hex(&hasher.finalize()[..8])
}

/// The keys that sign and check access tokens: the first signs, every one verifies.
#[derive(Clone)]
pub struct Keys {
    kid: String,
    encoding: EncodingKey,
    decoding: HashMap<String, DecodingKey>,
    /// A key for the dashboard's sign-in form tokens, derived from the signing secret.
    form_key: [u8; 32],
    validation: Validation,
}

impl Keys {
    /// One key that signs and verifies.
    pub fn from_secret(secret: &[u8]) -> Self {
        Self::from_secrets(secret, &[])
    }

    /// `signing` signs (and verifies); each of `others` only verifies: tokens signed
    /// before a rotation stay good until they expire.
    pub fn from_secrets(signing: &[u8], others: &[Vec<u8>]) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_issuer(&[ISSUER]);
        validation.set_audience(&[AUDIENCE]);
        validation.set_required_spec_claims(&["exp", "nbf", "iss", "aud", "sub"]);
        // Expiry and "not before" are checked against the server's own (injectable) clock
        // in `verify`, not the library's reading of the system clock.
        validation.validate_exp = false;
        validation.validate_nbf = false;
        let decoding = std::iter::once(signing)
            .chain(others.iter().map(Vec::as_slice))
            .map(|secret| (key_id(secret), DecodingKey::from_secret(secret)))
            .collect();
        Self {
            kid: key_id(signing),
            encoding: EncodingKey::from_secret(signing),
            decoding,
            form_key: derive(signing, b"tether dashboard sign-in form v1"),
            validation,
        }
    }

    /// The id of the key that signs.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The key the dashboard's sign-in form tokens are made with (see
    /// `dashboard::session`). Derived from the signing secret, so every replica has it and
    /// a rotation renews it.
    pub fn form_key(&self) -> &[u8; 32] {
        &self.form_key
    }

    pub fn sign(&self, claims: &Claims) -> Result<String, AppError> {
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, claims, &self.encoding).map_err(AppError::internal)
    }

    /// The claims of a genuine, unexpired access token that is already valid: one whose
    /// `nbf` or `iat` lies more than `CLOCK_LEEWAY_SECS` ahead of `now` was not issued by
    /// this server's clocks, and is refused; so is one that would live longer than
    /// `ACCESS_TTL_SECS`, which this server never issues (whoever signed it has a key and
    /// wants a token that outlives a revocation's reach).
    pub fn verify(&self, token: &str, now: i64) -> Result<Claims, AppError> {
        let header = jsonwebtoken::decode_header(token)
            .map_err(|_| AppError::Unauthenticated("the access token is not valid"))?;
        if header.alg != Algorithm::HS256 {
            return Err(AppError::Unauthenticated("the access token's algorithm is not accepted"));
        }
        let key = header.kid.as_deref().and_then(|kid| self.decoding.get(kid)).ok_or(AppError::Unauthenticated(
            "the access token's signature is not by a key this server holds; sign in again",
        ))?;
        let data = jsonwebtoken::decode::<Claims>(token, key, &self.validation).map_err(|e| match e.kind() {
            ErrorKind::InvalidSignature => AppError::Unauthenticated("the access token's signature is not valid"),
            ErrorKind::InvalidAlgorithm => AppError::Unauthenticated("the access token's algorithm is not accepted"),
            ErrorKind::InvalidIssuer | ErrorKind::InvalidAudience => {
                AppError::Unauthenticated("the access token was not issued for this server")
            }
            _ => AppError::Unauthenticated("the access token is not valid"),
        })?;
        if data.claims.exp <= now {
            return Err(AppError::Unauthenticated("the access token has expired; refresh it"));
        }
        if data.claims.nbf > now + CLOCK_LEEWAY_SECS || data.claims.iat > now + CLOCK_LEEWAY_SECS {
            return Err(AppError::Unauthenticated("the access token is not valid yet"));
        }
        let lifetime = data.claims.exp - data.claims.iat.min(data.claims.nbf);
        if lifetime > ACCESS_TTL_SECS {
            return Err(AppError::Unauthenticated("the access token's lifetime is longer than this server gives"));
        }
        Ok(data.claims)
    }
}

impl fmt::Debug for Keys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Keys(signing {}, {} verifying, <secret>)", self.kid, self.decoding.len())
    }
}

/// HMAC-SHA-256 of `message` under `key`.
pub fn hmac(key: &[u8], message: &[u8]) -> [u8; 32] {
    use hmac::{KeyInit, Mac};
    // HMAC takes a key of any length; `new_from_slice` cannot fail for it.
    let mut mac = <hmac::Hmac<Sha256> as KeyInit>::new_from_slice(key).unwrap_or_else(|_| unreachable!());
    mac.update(message);
    mac.finalize().into_bytes().into()
}

/// A key for another use, derived from a secret: never the secret itself.
fn derive(secret: &[u8], purpose: &[u8]) -> [u8; 32] {
    hmac(secret, purpose)
}

/// `n` random bytes from the operating system.
pub fn random_bytes<const N: usize>() -> Result<[u8; N], AppError> {
    let mut bytes = [0u8; N];
    getrandom::fill(&mut bytes).map_err(|e| AppError::internal(anyhow::anyhow!("no random numbers: {e}")))?;
    Ok(bytes)
}

pub fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub fn from_hex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) || !text.is_ascii() {
        return None;
    }
    (0..text.len()).step_by(2).map(|i| u8::from_str_radix(&text[i..i + 2], 16).ok()).collect()
}

/// A new refresh token, as given to the device: 32 random bytes in hexadecimal.
pub fn new_refresh_token() -> Result<String, AppError> {
    Ok(to_hex(&random_bytes::<32>()?))
}

/// What the database keeps of a refresh token.
pub fn refresh_token_hash(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}
