//! Checking an ID token (OpenID Connect Core 3.1.3.7): its signature with the provider's
//! key (found by `kid`, the key set fetched again on an unknown one), the algorithm from
//! the provider's allowed list (never `none` or HMAC), `iss`, `aud` (and `azp` when there
//! are several audiences), `exp`, `iat` and `nbf` against the server's own clock with the
//! provider's leeway, the `nonce` of this sign-in, and the assurance (`acr`) the settings
//! ask for.

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{DecodingKey, Validation};
use serde::Deserialize;
use serde_json::{Map, Value};

use super::config::AcrPolicy;
use super::keys::{KeyCache, KeyError};

/// The oldest an ID token's `iat` may be: it was issued for a code exchanged a moment ago.
pub const MAX_AGE_SECS: i64 = 10 * 60;

/// What the token must say.
#[derive(Debug)]
pub struct Expect<'a> {
    pub issuer: &'a str,
    pub client_id: &'a str,
    pub nonce: &'a str,
    pub now: i64,
    pub leeway_secs: i64,
    pub algs: &'a [jsonwebtoken::Algorithm],
    pub acr: Option<&'a AcrPolicy>,
}

/// Why an ID token was not accepted. Messages name the claim, never its value (except
/// the `acr`, which is the provider's own word for how the person signed in).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum IdTokenError {
    #[error("the ID token is not a signed JWT")]
    Malformed,
    #[error("the ID token is signed with an algorithm this provider is not allowed to use")]
    Algorithm,
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error("the ID token's signature does not verify with the provider's key")]
    Signature,
    #[error("the ID token was issued by someone else (`iss`)")]
    Issuer,
    #[error("the ID token is for another client (`aud`/`azp`)")]
    Audience,
    #[error("the ID token has expired (`exp`)")]
    Expired,
    #[error("the ID token was issued in the future, or too long ago (`iat`/`nbf`)")]
    IssuedAt,
    #[error("the ID token does not carry this sign-in's nonce")]
    Nonce,
    #[error("the ID token lacks the claim `{0}`")]
    Missing(&'static str),
    #[error("the sign-in's assurance `{found}` is below the `{needed}` Tether requires")]
    AcrTooLow { found: String, needed: String },
}

/// The claims of an accepted ID token.
#[derive(Debug, Clone, Deserialize)]
pub struct IdClaims {
    pub iss: String,
    pub sub: String,
    pub exp: i64,
    pub iat: i64,
    #[serde(default)]
    pub nbf: Option<i64>,
    #[serde(default)]
    pub nonce: Option<String>,
    #[serde(default)]
    pub acr: Option<String>,
    #[serde(default)]
    pub azp: Option<String>,
    #[serde(default)]
    pub aud: Audience,
    /// Everything else (names, roles, groups), for the claims mapping.
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

/// `aud`: one audience or several.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(untagged)]
pub enum Audience {
    #[default]
    None,
    One(String),
    Many(Vec<String>),
}

impl Audience {
    fn list(&self) -> Vec<&str> {
        match self {
            Self::None => Vec::new(),
            Self::One(aud) => vec![aud.as_str()],
            Self::Many(auds) => auds.iter().map(String::as_str).collect(),
        }
    }
}

/// Checks `token` as `expect` says; `fetch` brings the provider's key set when the cache
/// needs it.
pub fn validate(
    token: &str,
    keys: &KeyCache,
    fetch: impl FnOnce() -> Result<Vec<Jwk>, String>,
    expect: &Expect<'_>,
) -> Result<IdClaims, IdTokenError> {
    // An unsigned (`alg: none`) token has no algorithm jsonwebtoken knows: malformed.
    let header = jsonwebtoken::decode_header(token).map_err(|_| IdTokenError::Malformed)?;
    if !expect.algs.contains(&header.alg) {
        return Err(IdTokenError::Algorithm);
    }
    let jwk = keys.key(header.kid.as_deref(), header.alg, fetch)?;
    let key = DecodingKey::from_jwk(&jwk).map_err(|_| KeyError::WrongUse(header.kid.clone().unwrap_or_default()))?;
    let mut validation = Validation::new(header.alg);
    validation.set_issuer(&[expect.issuer]);
    validation.set_audience(&[expect.client_id]);
    validation.set_required_spec_claims(&["iss", "aud", "sub", "exp"]);
    // Times are checked below against the server's own (injectable) clock.
    validation.validate_exp = false;
    validation.validate_nbf = false;
    let data = jsonwebtoken::decode::<IdClaims>(token, &key, &validation).map_err(|e| match e.kind() {
        ErrorKind::InvalidSignature => IdTokenError::Signature,
        ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName => IdTokenError::Algorithm,
        ErrorKind::InvalidIssuer => IdTokenError::Issuer,
        ErrorKind::InvalidAudience => IdTokenError::Audience,
        ErrorKind::MissingRequiredClaim(claim) => match claim.as_str() {
            "iss" => IdTokenError::Missing("iss"),
            "aud" => IdTokenError::Missing("aud"),
            "sub" => IdTokenError::Missing("sub"),
            _ => IdTokenError::Missing("exp"),
        },
        // A claim of the wrong type (`iat` missing or not a number, `sub` not a string).
        ErrorKind::Json(_) => IdTokenError::Missing("iat"),
        _ => IdTokenError::Malformed,
    })?;
    let claims = data.claims;
    let (now, leeway) = (expect.now, expect.leeway_secs);
    if claims.exp + leeway <= now {
        return Err(IdTokenError::Expired);
    }
    if claims.iat > now + leeway
        || claims.iat < now - MAX_AGE_SECS - leeway
        || claims.nbf.is_some_and(|nbf| nbf > now + leeway)
    {
        return Err(IdTokenError::IssuedAt);
    }
    let audiences = claims.aud.list();
    if !audiences.contains(&expect.client_id)
        || (audiences.len() > 1 && claims.azp.is_none())
        || claims.azp.as_deref().is_some_and(|azp| azp != expect.client_id)
    {
        return Err(IdTokenError::Audience);
    }
    if claims.sub.is_empty() {
        return Err(IdTokenError::Missing("sub"));
    }
    match &claims.nonce {
        Some(nonce) if crate::dashboard::session::same_secret(nonce, expect.nonce) => {}
        _ => return Err(IdTokenError::Nonce),
    }
    if let Some(policy) = expect.acr {
        let found = claims.acr.clone().unwrap_or_default();
        if !policy.meets(&found) {
            return Err(IdTokenError::AcrTooLow {
                found: if found.is_empty() { "(none)".into() } else { found },
                needed: policy.minimum().to_owned(),
            });
        }
    }
    Ok(claims)
}

#[cfg(test)]
pub(crate) mod tests {
    use jsonwebtoken::{Algorithm, EncodingKey, Header};
    use rsa::pkcs1::EncodeRsaPrivateKey;
    use rsa::pkcs8::DecodePrivateKey;
    use rsa::traits::PublicKeyParts;
    use serde_json::json;

    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;

    use super::*;

    const PROVIDER_KEY: &str = include_str!("testdata/provider-key.pem");
    const OTHER_KEY: &str = include_str!("testdata/other-key.pem");
    const NOW: i64 = 1_800_000_000;

    /// A key's private half (for signing) and public JWK under `kid`.
    pub(crate) fn key(pem: &str, kid: &str) -> (EncodingKey, Jwk) {
        let key = rsa::RsaPrivateKey::from_pkcs8_pem(pem).expect("a test key");
        let encoding = EncodingKey::from_rsa_der(key.to_pkcs1_der().expect("DER").as_bytes());
        let jwk = serde_json::from_value(json!({
            "kty": "RSA", "kid": kid, "alg": "RS256", "use": "sig",
            "n": URL_SAFE_NO_PAD.encode(key.n().to_bytes_be()),
            "e": URL_SAFE_NO_PAD.encode(key.e().to_bytes_be()),
        }))
        .expect("a JWK");
        (encoding, jwk)
    }

    fn claims() -> Value {
        json!({"iss": "https://idp.example.org", "aud": "tether", "sub": "user-1", "exp": NOW + 300,
               "iat": NOW - 5, "nonce": "n-1", "acr": "AAL3", "preferred_username": "jo@example.org"})
    }

    fn sign(key: &EncodingKey, kid: Option<&str>, claims: &Value) -> String {
        let mut header = Header::new(Algorithm::RS256);
        header.kid = kid.map(str::to_owned);
        jsonwebtoken::encode(&header, claims, key).expect("a token")
    }

    fn policy() -> AcrPolicy {
        AcrPolicy { levels: vec!["AAL1".into(), "AAL2".into(), "AAL3".into()], min: 2 }
    }

    fn check(token: &str) -> Result<IdClaims, IdTokenError> {
        let (_, jwk) = key(PROVIDER_KEY, "k1");
        let policy = policy();
        let expect = Expect {
            issuer: "https://idp.example.org",
            client_id: "tether",
            nonce: "n-1",
            now: NOW,
            leeway_secs: 60,
            algs: &[Algorithm::RS256, Algorithm::ES256],
            acr: Some(&policy),
        };
        validate(token, &KeyCache::default(), || Ok(vec![jwk]), &expect)
    }

    fn with(change: impl FnOnce(&mut Value)) -> String {
        let (signing, _) = key(PROVIDER_KEY, "k1");
        let mut claims = claims();
        change(&mut claims);
        sign(&signing, Some("k1"), &claims)
    }

    #[test]
    fn a_genuine_token_gives_its_claims() {
        let claims = check(&with(|_| {})).expect("accepted");
        assert_eq!(claims.sub, "user-1");
        assert_eq!(claims.other["preferred_username"], "jo@example.org");
    }

    #[test]
    fn every_check_refuses_what_it_should() {
        type Change = Box<dyn FnOnce(&mut Value)>;
        let cases: [(&str, Change, IdTokenError); 12] = [
            ("issuer", Box::new(|c| c["iss"] = json!("https://evil.example.org")), IdTokenError::Issuer),
            ("audience", Box::new(|c| c["aud"] = json!("someone-else")), IdTokenError::Audience),
            ("several audiences, no azp", Box::new(|c| c["aud"] = json!(["tether", "x"])), IdTokenError::Audience),
            ("azp of another", Box::new(|c| c["azp"] = json!("x")), IdTokenError::Audience),
            ("expired", Box::new(|c| c["exp"] = json!(NOW - 61)), IdTokenError::Expired),
            ("issued in the future", Box::new(|c| c["iat"] = json!(NOW + 61)), IdTokenError::IssuedAt),
            ("issued long ago", Box::new(|c| c["iat"] = json!(NOW - MAX_AGE_SECS - 61)), IdTokenError::IssuedAt),
            ("not yet valid", Box::new(|c| c["nbf"] = json!(NOW + 61)), IdTokenError::IssuedAt),
            ("another nonce", Box::new(|c| c["nonce"] = json!("n-2")), IdTokenError::Nonce),
            ("no nonce", Box::new(|c| drop(c.as_object_mut().map(|o| o.remove("nonce")))), IdTokenError::Nonce),
            (
                "weak acr",
                Box::new(|c| c["acr"] = json!("AAL2")),
                IdTokenError::AcrTooLow { found: "AAL2".into(), needed: "AAL3".into() },
            ),
            (
                "no acr",
                Box::new(|c| drop(c.as_object_mut().map(|o| o.remove("acr")))),
                IdTokenError::AcrTooLow { found: "(none)".into(), needed: "AAL3".into() },
            ),
        ];
        for (what, change, expected) in cases {
            assert_eq!(check(&with(change)).map(|c| c.sub), Err(expected), "{what}");
        }
    }

    #[test]
    fn times_within_the_leeway_are_accepted() {
        assert!(check(&with(|c| c["exp"] = json!(NOW - 59))).is_ok());
        assert!(check(&with(|c| c["iat"] = json!(NOW + 59))).is_ok());
        assert!(
            check(&with(|c| {
                c["aud"] = json!(["tether", "x"]);
                c["azp"] = json!("tether");
            }))
            .is_ok()
        );
    }

    #[test]
    fn forged_and_unsigned_tokens_are_refused() {
        let (other, _) = key(OTHER_KEY, "k1");
        assert_eq!(check(&sign(&other, Some("k1"), &claims())).map(|c| c.sub), Err(IdTokenError::Signature));
        let (other, _) = key(OTHER_KEY, "k2");
        assert_eq!(
            check(&sign(&other, Some("k2"), &claims())).map(|c| c.sub),
            Err(IdTokenError::Key(KeyError::UnknownKid("k2".into())))
        );
        // alg "none": the header and payload, and an empty signature.
        let none = format!(
            "{}.{}.",
            URL_SAFE_NO_PAD.encode(r#"{"alg":"none","kid":"k1"}"#),
            URL_SAFE_NO_PAD.encode(claims().to_string())
        );
        assert_eq!(check(&none).map(|c| c.sub), Err(IdTokenError::Malformed));
        // HS256 keyed with the public key's bytes (the classic confusion): not allowed.
        let hs = jsonwebtoken::encode(
            &Header { kid: Some("k1".into()), ..Header::new(Algorithm::HS256) },
            &claims(),
            &EncodingKey::from_secret(b"anything"),
        )
        .expect("a token");
        assert_eq!(check(&hs).map(|c| c.sub), Err(IdTokenError::Algorithm));
        // A tampered payload.
        let genuine = with(|_| {});
        let mut parts: Vec<&str> = genuine.split('.').collect();
        let forged = URL_SAFE_NO_PAD.encode(json!({"sub": "admin"}).to_string());
        parts[1] = &forged;
        assert_eq!(check(&parts.join(".")).map(|c| c.sub), Err(IdTokenError::Signature));
        assert_eq!(check("garbage").map(|c| c.sub), Err(IdTokenError::Malformed));
    }
}
