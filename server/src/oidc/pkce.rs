//! The one-time values of an authorization request: `state` (binds the answer to the
//! request), `nonce` (binds the ID token to it) and the PKCE code verifier with its
//! S256 challenge (RFC 7636: binds the code to whoever started the request).

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};

use crate::auth::token::random_bytes;
use crate::error::AppError;

/// 32 random bytes, base64url without padding (43 characters): a `state`, a `nonce`, a
/// `jti`, or a PKCE code verifier (RFC 7636 4.1 asks for 43 to 128 unreserved
/// characters, and 32 bytes of entropy).
pub fn random_token() -> Result<String, AppError> {
    Ok(URL_SAFE_NO_PAD.encode(random_bytes::<32>()?))
}

/// The S256 code challenge of a verifier: base64url(SHA-256(verifier)).
pub fn challenge(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

/// Whether `text` may be a PKCE code verifier (RFC 7636 4.1): 43 to 128 characters of
/// `[A-Za-z0-9-._~]`.
pub fn is_verifier(text: &str) -> bool {
    (43..=128).contains(&text.len())
        && text.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_challenge_is_rfc_7636s_example() {
        // RFC 7636, appendix B.
        assert_eq!(
            challenge("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
    }

    #[test]
    fn tokens_are_fresh_verifiers() {
        let (a, b) = (random_token().expect("random"), random_token().expect("random"));
        assert_ne!(a, b);
        assert!(is_verifier(&a) && a.len() == 43, "{a}");
        assert!(
            !is_verifier("short") && !is_verifier(&"a".repeat(129)) && !is_verifier(&format!("{}+", "a".repeat(43)))
        );
    }
}
