//! Every input the fuzzer ever found a failure with stays a test (automerge's
//! `tests/fuzz-crashers`): `fuzz/regressions/<target>/*` and the seed corpora
//! `fuzz/seeds/<target>/*` run through the same checks as the fuzz targets
//! (`fuzz/src/checks.rs`, included here by path).

#[allow(dead_code, unreachable_pub)]
#[path = "../../fuzz/src/checks.rs"]
mod checks;

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

/// The files of `fuzz/<kind>/<target>/`, sorted (none if it does not exist).
fn inputs(kind: &str, target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz").join(kind).join(target);
    let Ok(entries) = std::fs::read_dir(&dir) else { return Vec::new() };
    let mut files: Vec<_> = entries
        .map(|e| e.expect("a directory entry").path())
        .filter(|p| p.is_file() && p.file_name().is_some_and(|n| !n.to_string_lossy().starts_with('.')))
        .map(|p| (p.display().to_string(), std::fs::read(&p).expect("read an input")))
        .collect();
    files.sort();
    files
}

fn replay(target: &str, check: fn(&[u8])) {
    let seeds = inputs("seeds", target);
    assert!(!seeds.is_empty(), "the seed corpus of {target} is missing");
    count_panics();
    for (name, bytes) in seeds.iter().chain(&inputs("regressions", target)) {
        let before = PANICS.load(Ordering::SeqCst);
        check(bytes);
        assert_eq!(PANICS.load(Ordering::SeqCst), before, "{target}: {name} panicked (perhaps caught)");
    }
}

#[test]
fn document_load_regressions() {
    replay("document_load", checks::document_load);
}

#[test]
fn sync_decode_regressions() {
    replay("sync_decode", checks::sync_decode);
}

/// Writes the seed corpora, `fuzz/seeds/<target>/`, from real documents and messages:
/// `cargo test -p episode --test fuzz_regressions -- --ignored write_seeds`. The fuzzer
/// starts from these rather than from nothing.
#[test]
#[ignore = "writes the seed corpora; run by hand when the formats change"]
fn write_seeds() {
    use automerge::ActorId;
    use automerge::sync::State;
    use episode::document::{EpisodeDoc, Opening};
    use episode::sync::{self as protocol, Body as SyncBody, Document};

    let write = |target: &str, name: &str, bytes: &[u8]| {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/seeds").join(target);
        std::fs::create_dir_all(&dir).expect("the seeds directory");
        std::fs::write(dir.join(name), bytes).expect("write a seed");
    };
    let with_mode = |mode: u8, bytes: &[u8]| [&[mode][..], bytes].concat();

    let mut doc = checks::fixture();
    let whole = doc.save();
    // The same episode on a device: one more record.
    let mut device = EpisodeDoc::load(&whole, ActorId::from(vec![7; 16])).expect("a copy");
    let record = serde_json::json!({
        "id": "0196a000-0000-7000-8000-000000000004", "kind": "contact_attempt", "method": "phone",
        "target": "patient", "outcome": "no_answer", "at": "2026-03-02T11:00:00Z", "by": "u-fuzz",
        "device": "phone-fuzz",
    });
    device.save_incremental();
    device.record(&episode::Event::from_value(&record, 0).expect("a valid record")).expect("record");
    let changes = device.save_incremental();
    let first = device.generate_sync_message(&mut State::new()).expect("a first message");
    let mut primed = State::new();
    primed.shared_heads = doc.heads();
    protocol::prime(&mut primed);
    let with_changes = device.generate_sync_message(&mut primed).expect("a message with changes");
    let mut state = State::new();
    state.shared_heads = doc.heads();

    let opening = Opening {
        id: checks::NEW,
        patient_ref: episode::PatientRef::new("RX-FUZZ-2").expect("a patient reference"),
        team: "team-north".into(),
        opened_at: "2026-03-02T08:00:00Z".parse().expect("a time"),
        opened_by: "u-fuzz".into(),
        pathway: episode::Pathway::UrgentReferral,
        facts: Vec::new(),
        plan: String::new(),
    };
    let new = EpisodeDoc::open(&opening, ActorId::from(vec![8; 16])).expect("open").save();
    let request = protocol::Request {
        protocol: protocol::PROTOCOL,
        cursor: 3,
        device_time_ms: 1_772_442_000_000,
        documents: vec![Document { episode: checks::STORED, body: SyncBody::Message(with_changes.clone()) }],
    };
    let evaluation = episode::pathway::evaluate(
        &doc.episode().expect("an episode"),
        "2026-03-03T12:00:00Z".parse().expect("a time"),
        &episode::pathway::Calendar::default(),
    );
    let mut authoritative = protocol::Authoritative::new(checks::STORED, &evaluation);
    let received = protocol::Receipt {
        event: "0196a000-0000-7000-8000-000000000004".parse().expect("a record id"),
        received_at_ms: 1_772_442_000_000,
    };
    authoritative.received.push(received);
    let response = protocol::Response {
        protocol: protocol::PROTOCOL,
        cursor: 4,
        server_time_ms: 1_772_442_000_000,
        documents: vec![Document { episode: checks::NEW, body: SyncBody::Whole(new.clone()) }],
        actions: vec![authoritative],
        teams: vec![protocol::EpisodeTeam { episode: checks::STORED, team: "team-north".into() }],
        leaving: vec![checks::NEW],
        dropped: Vec::new(),
        more: true,
        refused: Vec::new(),
    };

    write("document_load", "document", &whole);
    write("document_load", "device-document", &device.save());
    write("document_load", "changes", &changes);
    write("document_load", "new-document", &new);
    write("sync_decode", "request", &request.encode());
    write("sync_decode", "response", &response.encode());
    write("sync_decode", "first-message", &first);
    write("sync_decode", "message-with-changes", &with_changes);
    write("sync_decode", "state", &state.encode());
    write("sync_handler", "raw-request", &with_mode(0, &request.encode()));
    write("sync_handler", "message", &with_mode(1, &with_changes));
    write("sync_handler", "first-message", &with_mode(1, &first));
    write("sync_handler", "whole-copy", &with_mode(2, &device.save()));
    write("sync_handler", "whole-new", &with_mode(3, &new));
}
