//! The bodies of Tether's fuzz targets, shared with the regression tests that replay every
//! input the fuzzer ever found (`episode/tests/fuzz_regressions.rs` and
//! `server/tests/fuzz_regressions.rs` include these files by path).
//!
//! - `checks`: the document loader and the sync protocol's decoders (pure).
//! - `handler`: the whole `POST /v1/sync` through `server::app` on a temporary database.
//!
//! No `unsafe` here, as in every crate but `ffi`. Forbidden in the bodies rather than in
//! `Cargo.toml`: `fuzz_target!` exports its entry point with `#[no_mangle]`, which the
//! lint refuses in the targets themselves.

#![forbid(unsafe_code)]

pub mod checks;
#[cfg(feature = "handler")]
pub mod handler;
