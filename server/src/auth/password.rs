//! Password hashes: argon2id with OWASP's parameters (19 MiB, 2 passes, 1 lane), as PHC
//! strings (`$argon2id$v=19$m=19456,t=2,p=1$…`).
//!
//! Hashing costs tens of milliseconds of CPU, so callers run it on the blocking pool.

use std::sync::LazyLock;

use argon2::password_hash::{Error, PasswordHasher, PasswordVerifier};
use argon2::{Algorithm, Argon2, Params, Version};

use crate::accounts::Password;

/// OWASP's argon2id minimum: m=19456 KiB, t=2, p=1.
const M_COST_KIB: u32 = 19 * 1024;
const T_COST: u32 = 2;
const P_COST: u32 = 1;

fn hasher() -> Result<Argon2<'static>, Error> {
    let params = Params::new(M_COST_KIB, T_COST, P_COST, None)?;
    Ok(Argon2::new(Algorithm::Argon2id, Version::V0x13, params))
}

/// A new PHC string for `password`, with a random salt.
pub fn hash(password: &Password) -> Result<String, Error> {
    Ok(hasher()?.hash_password(password.as_bytes())?.to_string())
}

/// Whether `password` matches the PHC string `hash`. A damaged hash is an error, not a
/// mismatch.
pub fn verify(password: &[u8], hash: &str) -> Result<bool, Error> {
    match hasher()?.verify_password(password, hash) {
        Ok(()) => Ok(true),
        Err(Error::PasswordInvalid) => Ok(false),
        Err(e) => Err(e),
    }
}

/// A hash that no password matches, checked when the username is unknown so that a
/// sign-in takes as long whether or not the user exists.
static DECOY: LazyLock<Option<String>> = LazyLock::new(|| {
    let mut random = [0u8; 32];
    getrandom::fill(&mut random).ok()?;
    let password = Password::new(random.iter().map(|b| format!("{b:02x}")).collect()).ok()?;
    hash(&password).ok()
});

/// Spends the time of a verification, and fails.
pub fn verify_decoy(password: &[u8]) {
    if let Some(decoy) = DECOY.as_deref() {
        let _ = verify(password, decoy);
    }
}
