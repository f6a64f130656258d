//! A provider's signing keys (its JWKS), cached, and fetched again when an ID token names
//! a key the cache does not hold: providers rotate keys by publishing the new one and
//! signing with it, and then dropping the old one.
//!
//! ID tokens reach Tether only in the provider's own answer from its token endpoint, so
//! an unknown `kid` is the provider's word, not a caller's: each sign-in costs at most
//! one fetch, and concurrent sign-ins that need one share it. A key set is also fetched
//! again after [`MAX_AGE`], so that a key the provider withdrew stops being trusted even
//! if no token names an unknown one.

use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use jsonwebtoken::Algorithm;
use jsonwebtoken::jwk::{Jwk, PublicKeyUse};
use serde::Deserialize;
use serde_json::Value;

/// How long a fetched key set is trusted without asking again.
pub const MAX_AGE: Duration = Duration::from_secs(60 * 60);

/// Why no key was found for a token.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KeyError {
    #[error("the provider publishes no key `{0}` (not even after fetching its keys again)")]
    UnknownKid(String),
    #[error("the ID token names no key, and the provider publishes {0} keys for its algorithm")]
    Ambiguous(usize),
    #[error("the provider's key `{0}` is for another algorithm, or not for signatures")]
    WrongUse(String),
    #[error("the provider's keys could not be fetched: {0}")]
    Fetch(String),
}

#[derive(Debug)]
struct Cached {
    keys: Vec<Jwk>,
    fetched: Instant,
    generation: u64,
}

/// One provider's keys.
#[derive(Debug, Default)]
pub struct KeyCache {
    cached: Mutex<Option<Cached>>,
    /// Held while fetching, so that concurrent misses share one fetch.
    fetching: Mutex<()>,
}

/// Parses a JWKS, keeping the keys this build can use and skipping the rest (a key set
/// may hold encryption keys, or keys of a type jsonwebtoken does not read).
pub fn parse_jwks(body: &[u8]) -> Result<Vec<Jwk>, String> {
    #[derive(Deserialize)]
    struct Set {
        keys: Vec<Value>,
    }
    let set: Set = serde_json::from_slice(body).map_err(|e| format!("not a JWK set: {e}"))?;
    Ok(set
        .keys
        .into_iter()
        .filter_map(|key| serde_json::from_value::<Jwk>(key).ok())
        .filter(|key| jsonwebtoken::DecodingKey::from_jwk(key).is_ok())
        .collect())
}

impl KeyCache {
    /// The key that verifies a token signed with `alg` under `kid`, fetching the key set
    /// (with `fetch`) when the cache is empty, stale, or lacks the key.
    pub fn key(
        &self,
        kid: Option<&str>,
        alg: Algorithm,
        fetch: impl FnOnce() -> Result<Vec<Jwk>, String>,
    ) -> Result<Jwk, KeyError> {
        let seen = {
            let cached = self.cached.lock().unwrap_or_else(PoisonError::into_inner);
            match cached.as_ref() {
                Some(c) if c.fetched.elapsed() < MAX_AGE => match find(&c.keys, kid, alg) {
                    Ok(key) => return Ok(key),
                    Err(KeyError::UnknownKid(_)) => Some(c.generation),
                    Err(other) => return Err(other),
                },
                Some(c) => Some(c.generation),
                None => None,
            }
        };
        let _fetching = self.fetching.lock().unwrap_or_else(PoisonError::into_inner);
        {
            // Another caller may have fetched while this one waited: use its keys.
            let cached = self.cached.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(c) = cached.as_ref().filter(|c| Some(c.generation) != seen && c.fetched.elapsed() < MAX_AGE) {
                return find(&c.keys, kid, alg);
            }
        }
        let keys = fetch().map_err(KeyError::Fetch)?;
        let found = find(&keys, kid, alg);
        let mut cached = self.cached.lock().unwrap_or_else(PoisonError::into_inner);
        let generation = cached.as_ref().map_or(1, |c| c.generation + 1);
        *cached = Some(Cached { keys, fetched: Instant::now(), generation });
        found
    }

    /// How many times the key set has been fetched.
    pub fn fetches(&self) -> u64 {
        self.cached.lock().unwrap_or_else(PoisonError::into_inner).as_ref().map_or(0, |c| c.generation)
    }
}

/// The key for `kid` (or, without one, the only key for `alg`'s family).
fn find(keys: &[Jwk], kid: Option<&str>, alg: Algorithm) -> Result<Jwk, KeyError> {
    let signing =
        |key: &&Jwk| !matches!(key.common.public_key_use, Some(PublicKeyUse::Encryption | PublicKeyUse::Other(_)));
    // jsonwebtoken's `KeyAlgorithm` and `Algorithm` name the same algorithms alike.
    let for_alg = |key: &Jwk| key.common.key_algorithm.is_none_or(|a| format!("{a:?}") == format!("{alg:?}"));
    match kid {
        Some(kid) => {
            let key = keys
                .iter()
                .find(|key| key.common.key_id.as_deref() == Some(kid))
                .ok_or_else(|| KeyError::UnknownKid(kid.to_owned()))?;
            if signing(&key) && for_alg(key) { Ok(key.clone()) } else { Err(KeyError::WrongUse(kid.to_owned())) }
        }
        None => {
            let family = alg.family();
            let candidates: Vec<&Jwk> = keys
                .iter()
                .filter(signing)
                .filter(|key| for_alg(key))
                .filter(|key| jsonwebtoken::DecodingKey::from_jwk(key).is_ok_and(|k| k.family() == family))
                .collect();
            match candidates.as_slice() {
                [key] => Ok((*key).clone()),
                others => Err(KeyError::Ambiguous(others.len())),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use serde_json::json;

    use super::*;

    fn jwk(kid: &str) -> Jwk {
        serde_json::from_value(
            json!({"kty": "RSA", "kid": kid, "alg": "RS256", "use": "sig", "n": "sXch", "e": "AQAB"}),
        )
        .expect("a JWK")
    }

    #[test]
    fn an_unknown_kid_fetches_the_keys_again_once() {
        let cache = KeyCache::default();
        let calls = AtomicUsize::new(0);
        let fetch = |keys: Vec<Jwk>| {
            let calls = &calls;
            move || {
                calls.fetch_add(1, Ordering::SeqCst);
                Ok(keys)
            }
        };
        assert_eq!(
            cache.key(Some("a"), Algorithm::RS256, fetch(vec![jwk("a")])).map(|k| k.common.key_id),
            Ok(Some("a".into()))
        );
        // Cached: no fetch.
        assert!(cache.key(Some("a"), Algorithm::RS256, fetch(vec![])).is_ok());
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        // Rotated: "b" is new, so the keys are fetched again, and "a" is gone with them.
        assert!(cache.key(Some("b"), Algorithm::RS256, fetch(vec![jwk("b")])).is_ok());
        assert_eq!(
            cache.key(Some("a"), Algorithm::RS256, fetch(vec![jwk("b")])),
            Err(KeyError::UnknownKid("a".into()))
        );
        assert_eq!((calls.load(Ordering::SeqCst), cache.fetches()), (3, 3));
    }

    #[test]
    fn keys_for_encryption_or_another_algorithm_never_verify() {
        let mut enc = jwk("e");
        enc.common.public_key_use = Some(PublicKeyUse::Encryption);
        let cache = KeyCache::default();
        assert_eq!(cache.key(Some("e"), Algorithm::RS256, || Ok(vec![enc])), Err(KeyError::WrongUse("e".into())));
        assert_eq!(cache.key(Some("a"), Algorithm::PS256, || Ok(vec![jwk("a")])), Err(KeyError::WrongUse("a".into())));
    }

    #[test]
    fn without_a_kid_only_a_single_candidate_is_used() {
        let cache = KeyCache::default();
        assert_eq!(cache.key(None, Algorithm::RS256, || Ok(vec![jwk("a"), jwk("b")])), Err(KeyError::Ambiguous(2)));
    }

    #[test]
    fn a_key_set_keeps_the_keys_it_can_read() {
        let body = json!({"keys": [{"kty": "weird"}, {"kty": "RSA", "n": 5}, {"kty": "RSA", "kid": "a", "n": "sXch", "e": "AQAB"}]});
        let keys = parse_jwks(body.to_string().as_bytes()).expect("a set");
        assert_eq!(keys.len(), 1);
        assert!(parse_jwks(b"[]").is_err());
    }
}
