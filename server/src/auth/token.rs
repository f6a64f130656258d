//! Access tokens: 15-minute JWTs signed with HS256, the algorithm pinned, the issuer and
//! audience set and checked, and `exp`, `nbf` and `iat` checked against the server's own
//! (injectable) clock. Refresh tokens: 32 random bytes, kept only as a SHA-256.

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

/// The keys that sign and check access tokens.
pub struct Keys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
}

impl Keys {
    pub fn from_secret(secret: &[u8]) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_issuer(&[ISSUER]);
        validation.set_audience(&[AUDIENCE]);
        validation.set_required_spec_claims(&["exp", "nbf", "iss", "aud", "sub"]);
        // Expiry and "not before" are checked against the server's own (injectable) clock
        // in `verify`, not the library's reading of the system clock.
        validation.validate_exp = false;
        validation.validate_nbf = false;
        Self { encoding: EncodingKey::from_secret(secret), decoding: DecodingKey::from_secret(secret), validation }
    }

    pub fn sign(&self, claims: &Claims) -> Result<String, AppError> {
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), claims, &self.encoding).map_err(AppError::internal)
    }

    /// The claims of a genuine, unexpired access token that is already valid: one whose
    /// `nbf` or `iat` lies more than `CLOCK_LEEWAY_SECS` ahead of `now` was not issued by
    /// this server's clocks, and is refused.
    pub fn verify(&self, token: &str, now: i64) -> Result<Claims, AppError> {
        let data =
            jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation).map_err(|e| match e.kind() {
                ErrorKind::InvalidSignature => AppError::Unauthenticated("the access token's signature is not valid"),
                ErrorKind::InvalidAlgorithm => {
                    AppError::Unauthenticated("the access token's algorithm is not accepted")
                }
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
        Ok(data.claims)
    }
}

impl fmt::Debug for Keys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Keys(<secret>)")
    }
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
