//! Every input the fuzzer ever found a failure with in the `sync_handler` target stays a
//! test: `fuzz/regressions/sync_handler/*` and the seed corpus `fuzz/seeds/sync_handler/*`
//! go through the whole `POST /v1/sync` exactly as in the fuzz target
//! (`fuzz/src/handler.rs`, included here by path): never a 5xx.

#[allow(dead_code, unreachable_pub)]
#[path = "../../fuzz/src/checks.rs"]
mod checks;
#[allow(dead_code, unreachable_pub)]
#[path = "../../fuzz/src/handler.rs"]
mod handler;

use std::path::Path;
use std::sync::Once;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Panics seen in this test binary, caught or not. The code under test catches panics
/// from Automerge as a last defence; the fuzzer counts every panic as a failure (its
/// hook aborts), and so do these tests, so that a regression cannot hide behind a guard.
static PANICS: AtomicUsize = AtomicUsize::new(0);

fn count_panics() {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            PANICS.fetch_add(1, Ordering::SeqCst);
            default(info);
        }));
    });
}

fn inputs(kind: &str) -> Vec<(String, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz").join(kind).join("sync_handler");
    let Ok(entries) = std::fs::read_dir(&dir) else { return Vec::new() };
    let mut files: Vec<_> = entries
        .map(|e| e.expect("a directory entry").path())
        .filter(|p| p.is_file() && p.file_name().is_some_and(|n| !n.to_string_lossy().starts_with('.')))
        .map(|p| (p.display().to_string(), std::fs::read(&p).expect("read an input")))
        .collect();
    files.sort();
    files
}

#[test]
fn sync_handler_regressions() {
    let seeds = inputs("seeds");
    assert!(!seeds.is_empty(), "the seed corpus is missing");
    count_panics();
    for (name, bytes) in seeds.iter().chain(&inputs("regressions")) {
        let before = PANICS.load(Ordering::SeqCst);
        handler::sync_handler(bytes);
        assert_eq!(PANICS.load(Ordering::SeqCst), before, "sync_handler: {name} panicked (perhaps caught)");
    }
}
