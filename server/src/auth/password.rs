//! Password hashes: argon2id with OWASP's parameters (19 MiB, 2 passes, 1 lane), as PHC
//! strings (`$argon2id$v=19$m=19456,t=2,p=1$…`).
//!
//! Hashing costs tens of milliseconds of CPU, so callers run it on the blocking pool.
//!
//! Verifying (every sign-in) reuses its 19 MiB of working memory: allocated afresh for
//! each and freed, it was mostly kept by the process, not returned (glibc's allocator
//! serves the next block of that size from its heaps): 180 sign-ins took a demo server
//! from 112 MB to 1.6 GB resident. Hashing is CPU-bound, so at most as many verifications
//! as the machine has cores run at once, each with a buffer kept for the next; the rest
//! wait their turn.

use std::num::NonZero;
use std::sync::{Condvar, LazyLock, Mutex, PoisonError};

use argon2::password_hash::phc::{Output, PasswordHash};
use argon2::password_hash::{Error, PasswordHasher};
use argon2::{Algorithm, Argon2, Block, Params, Version};

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
///
/// What `argon2`'s own `verify_password` does, with working memory from [`MEMORY`].
pub fn verify(password: &[u8], hash: &str) -> Result<bool, Error> {
    let parsed = PasswordHash::new(hash)?;
    let (Some(salt), Some(expected)) = (&parsed.salt, &parsed.hash) else { return Ok(false) };
    let algorithm = Algorithm::try_from(parsed.algorithm.as_str())?;
    let version = parsed.version.map(Version::try_from).transpose()?.unwrap_or_default();
    let params = Params::try_from(&parsed)?;
    let blocks = params.block_count();
    let argon2 = Argon2::new(algorithm, version, params);
    let mut buffer = [0u8; Output::MAX_LENGTH];
    let out = buffer.get_mut(..expected.len()).ok_or(Error::OutputSize)?;
    MEMORY.with(blocks, |memory| argon2.hash_password_into_with_memory(password, salt, out, memory))?;
    // `Output` compares in constant time.
    Ok(Output::new(out)? == *expected)
}

/// Working memory for verifications, kept between them.
static MEMORY: LazyLock<Lanes> = LazyLock::new(|| Lanes {
    max: std::thread::available_parallelism().map_or(2, NonZero::get),
    state: Mutex::new(LanesState::default()),
    returned: Condvar::new(),
});

struct Lanes {
    /// The most buffers, and so verifications at once.
    max: usize,
    state: Mutex<LanesState>,
    returned: Condvar,
}

#[derive(Default)]
struct LanesState {
    free: Vec<Vec<Block>>,
    made: usize,
}

impl Lanes {
    /// Runs `f` with `blocks` blocks of working memory, waiting for a buffer if every one
    /// is in use. The buffer goes back even if `f` panics.
    fn with<T>(&self, blocks: usize, f: impl FnOnce(&mut [Block]) -> T) -> T {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let buffer = loop {
            if let Some(buffer) = state.free.pop() {
                break buffer;
            }
            if state.made < self.max {
                state.made += 1;
                break Vec::new();
            }
            state = self.returned.wait(state).unwrap_or_else(PoisonError::into_inner);
        };
        drop(state);
        let mut lane = Lane { lanes: self, buffer };
        // A hash stored with other parameters sizes the buffer to them (kept for next time).
        lane.buffer.resize(blocks, Block::new());
        f(&mut lane.buffer[..blocks])
    }
}

/// A buffer in use; handed back when dropped.
struct Lane<'a> {
    lanes: &'a Lanes,
    buffer: Vec<Block>,
}

impl Drop for Lane<'_> {
    fn drop(&mut self) {
        let buffer = std::mem::take(&mut self.buffer);
        self.lanes.state.lock().unwrap_or_else(PoisonError::into_inner).free.push(buffer);
        self.lanes.returned.notify_one();
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

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    fn lanes(max: usize) -> Lanes {
        Lanes { max, state: Mutex::new(LanesState::default()), returned: Condvar::new() }
    }

    #[test]
    fn no_more_verifications_run_at_once_than_there_are_lanes_and_buffers_are_reused() {
        let lanes = lanes(2);
        let (inside, most) = (AtomicUsize::new(0), AtomicUsize::new(0));
        // Each verification waits inside its lane for a second one to join it: so two
        // are surely inside at once (no sleep hoping they overlap), and a third getting
        // in would show in `most`. Six threads make three pairs, so none waits for ever.
        let pair = std::sync::Barrier::new(2);
        std::thread::scope(|scope| {
            for _ in 0..6 {
                scope.spawn(|| {
                    lanes.with(8, |memory| {
                        assert_eq!(memory.len(), 8);
                        let now = inside.fetch_add(1, Ordering::SeqCst) + 1;
                        most.fetch_max(now, Ordering::SeqCst);
                        pair.wait();
                        inside.fetch_sub(1, Ordering::SeqCst);
                    });
                });
            }
        });
        assert_eq!(most.load(Ordering::SeqCst), 2, "two lanes, two at once");
        let state = lanes.state.lock().unwrap_or_else(PoisonError::into_inner);
        assert_eq!((state.made, state.free.len()), (2, 2), "two buffers made, both kept");
    }

    #[test]
    fn a_buffer_comes_back_even_when_the_work_panics() {
        let lanes = lanes(1);
        let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| lanes.with(4, |_| panic!("boom"))));
        assert!(panicked.is_err());
        // With one lane, this would wait for ever had the buffer been lost.
        assert_eq!(lanes.with(4, |memory| memory.len()), 4);
    }

    #[test]
    fn a_hash_verifies_against_its_password_only() {
        let password = Password::new("correct horse battery".into()).expect("a password");
        let hash = hash(&password).expect("a hash");
        assert_eq!(verify(b"correct horse battery", &hash).ok(), Some(true));
        assert_eq!(verify(b"correct horse battery!", &hash).ok(), Some(false));
        assert!(verify(b"correct horse battery", "$argon2id$v=19$m=19456,t=2,p=1$damaged").is_err());
    }
}
