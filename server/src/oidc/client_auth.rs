//! How Tether, the confidential client, proves itself at a provider's token endpoint:
//! `private_key_jwt` (OpenID Connect Core 9, RFC 7523: a short-lived JWT signed with
//! Tether's RSA key, which the provider knows by its public half), or a client secret
//! sent with HTTP Basic (`client_secret_basic`, RFC 6749 2.3.1) or in the form
//! (`client_secret_post`).

use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use rsa::pkcs1::{DecodeRsaPrivateKey, EncodeRsaPrivateKey};
use rsa::pkcs8::DecodePrivateKey;
use rsa::traits::PublicKeyParts;
use serde::Serialize;
use serde_json::{Value, json};

use super::pkce::random_token;
use crate::config::Secret;

/// The `client_assertion_type` of RFC 7523.
pub const ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
/// How long a client assertion is valid: NHS CIS2 takes at most five minutes.
pub const ASSERTION_TTL_SECS: i64 = 60;
/// The smallest RSA key accepted.
pub const MIN_RSA_BITS: usize = 2048;

/// Tether's private key for `private_key_jwt`.
pub struct PrivateKey {
    encoding: EncodingKey,
    kid: Option<String>,
    alg: Algorithm,
    /// The public half as a JWK, for the provider's registration.
    public: Value,
}

impl fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PrivateKey").field("kid", &self.kid).field("alg", &self.alg).finish_non_exhaustive()
    }
}

impl PrivateKey {
    /// Reads an RSA private key in PEM (PKCS#8 `PRIVATE KEY` or PKCS#1 `RSA PRIVATE KEY`).
    pub fn from_pem(pem: &str, kid: Option<String>, alg: Algorithm) -> Result<Self, String> {
        let key = rsa::RsaPrivateKey::from_pkcs8_pem(pem)
            .or_else(|_| rsa::RsaPrivateKey::from_pkcs1_pem(pem))
            .map_err(|_| "not an unencrypted RSA private key in PEM (PKCS#8 or PKCS#1)".to_owned())?;
        let bits = key.size() * 8;
        if bits < MIN_RSA_BITS {
            return Err(format!("the key has {bits} bits; at least {MIN_RSA_BITS} are needed"));
        }
        let der = key.to_pkcs1_der().map_err(|e| format!("cannot encode the key: {e}"))?;
        let encoding = EncodingKey::from_rsa_der(der.as_bytes());
        let mut public = json!({
            "kty": "RSA",
            "use": "sig",
            "alg": alg_name(alg),
            "n": URL_SAFE_NO_PAD.encode(key.n().to_bytes_be()),
            "e": URL_SAFE_NO_PAD.encode(key.e().to_bytes_be()),
        });
        if let Some(kid) = &kid {
            public["kid"] = json!(kid);
        }
        Ok(Self { encoding, kid, alg, public })
    }

    /// The public key as a JWK (`kty`, `n`, `e`, `kid`, `alg`, `use`).
    pub fn public_jwk(&self) -> &Value {
        &self.public
    }

    /// A client assertion for `client_id` at `token_endpoint`, valid from `now` for
    /// [`ASSERTION_TTL_SECS`], with a random `jti` so that the provider can refuse a
    /// replay.
    pub fn assertion(&self, client_id: &str, token_endpoint: &str, now: i64) -> Result<String, String> {
        #[derive(Serialize)]
        struct Claims<'a> {
            iss: &'a str,
            sub: &'a str,
            aud: &'a str,
            jti: String,
            iat: i64,
            exp: i64,
        }
        let mut header = Header::new(self.alg);
        header.kid.clone_from(&self.kid);
        let claims = Claims {
            iss: client_id,
            sub: client_id,
            aud: token_endpoint,
            jti: random_token().map_err(|_| "no random numbers for the assertion's jti".to_owned())?,
            iat: now,
            exp: now + ASSERTION_TTL_SECS,
        };
        jsonwebtoken::encode(&header, &claims, &self.encoding).map_err(|e| format!("cannot sign the assertion: {e}"))
    }
}

fn alg_name(alg: Algorithm) -> &'static str {
    match alg {
        Algorithm::RS384 => "RS384",
        Algorithm::RS512 => "RS512",
        Algorithm::PS256 => "PS256",
        Algorithm::PS384 => "PS384",
        Algorithm::PS512 => "PS512",
        _ => "RS256",
    }
}

/// How the client authenticates at the token endpoint.
#[derive(Debug)]
pub enum ClientAuth {
    PrivateKeyJwt(PrivateKey),
    SecretBasic(Secret),
    SecretPost(Secret),
}

/// What a token request carries to authenticate the client: form fields, and perhaps an
/// `Authorization` header.
#[derive(Debug, Default)]
pub struct Credentials {
    pub form: Vec<(&'static str, String)>,
    pub authorization: Option<String>,
}

impl ClientAuth {
    pub fn method(&self) -> &'static str {
        match self {
            Self::PrivateKeyJwt(_) => "private_key_jwt",
            Self::SecretBasic(_) => "client_secret_basic",
            Self::SecretPost(_) => "client_secret_post",
        }
    }

    /// The credentials of one token request to `token_endpoint` at `now`.
    pub fn credentials(&self, client_id: &str, token_endpoint: &str, now: i64) -> Result<Credentials, String> {
        Ok(match self {
            Self::PrivateKeyJwt(key) => Credentials {
                form: vec![
                    ("client_id", client_id.to_owned()),
                    ("client_assertion_type", ASSERTION_TYPE.to_owned()),
                    ("client_assertion", key.assertion(client_id, token_endpoint, now)?),
                ],
                authorization: None,
            },
            Self::SecretBasic(secret) => {
                // RFC 6749 2.3.1: each part is form-encoded before the Basic encoding.
                let encode = |s: &str| form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
                let pair = format!("{}:{}", encode(client_id), encode(secret.expose()));
                Credentials { form: Vec::new(), authorization: Some(format!("Basic {}", STANDARD.encode(pair))) }
            }
            Self::SecretPost(secret) => Credentials {
                form: vec![("client_id", client_id.to_owned()), ("client_secret", secret.expose().to_owned())],
                authorization: None,
            },
        })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use jsonwebtoken::{DecodingKey, Validation};

    use super::*;

    /// A 2048-bit RSA key made for these tests only (`openssl genpkey -algorithm RSA`).
    pub(crate) const TEST_KEY: &str = include_str!("testdata/client-key.pem");

    #[test]
    fn an_assertion_is_signed_for_the_token_endpoint_and_verifies_with_the_public_jwk() {
        let key = PrivateKey::from_pem(TEST_KEY, Some("k1".into()), Algorithm::RS512).expect("a key");
        let token = key.assertion("tether", "https://idp.example.org/token", 1_000).expect("an assertion");
        let header = jsonwebtoken::decode_header(&token).expect("a header");
        assert_eq!((header.alg, header.kid.as_deref()), (Algorithm::RS512, Some("k1")));
        let jwk: jsonwebtoken::jwk::Jwk = serde_json::from_value(key.public_jwk().clone()).expect("a JWK");
        let mut validation = Validation::new(Algorithm::RS512);
        validation.set_audience(&["https://idp.example.org/token"]);
        validation.set_issuer(&["tether"]);
        validation.validate_exp = false;
        let data = jsonwebtoken::decode::<Value>(&token, &DecodingKey::from_jwk(&jwk).expect("a key"), &validation)
            .expect("the assertion verifies");
        assert_eq!(data.claims["sub"], "tether");
        assert_eq!(data.claims["exp"], 1_000 + ASSERTION_TTL_SECS);
        let again = key.assertion("tether", "https://idp.example.org/token", 1_000).expect("an assertion");
        let jti = |t: &str| jsonwebtoken::dangerous::insecure_decode::<Value>(t).expect("claims").claims["jti"].clone();
        assert_ne!(jti(&token), jti(&again), "each assertion has its own jti");
    }

    #[test]
    fn keys_that_are_not_rsa_pem_are_refused() {
        assert!(
            PrivateKey::from_pem(
                "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
                None,
                Algorithm::RS256
            )
            .is_err()
        );
        assert!(PrivateKey::from_pem("not a key", None, Algorithm::RS256).is_err());
    }

    #[test]
    fn a_secret_goes_in_basic_form_encoded_first() {
        let auth = ClientAuth::SecretBasic(Secret::from("a:b c".to_owned()));
        let credentials = auth.credentials("id/1", "https://x/token", 0).expect("credentials");
        let basic = credentials.authorization.expect("a header");
        let decoded = STANDARD.decode(basic.strip_prefix("Basic ").expect("Basic")).expect("base64");
        assert_eq!(String::from_utf8(decoded).expect("UTF-8"), "id%2F1:a%3Ab+c");
        assert!(credentials.form.is_empty());
    }
}
