//! The client core against a real encrypted SQLite file: durability across reopening,
//! refusals that store nothing, two devices exchanging documents, wrong keys and
//! damaged files, and a writer killed with SIGKILL at random moments.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use client_core::{Core, Error, NewEpisode, STORE_FILE, StoreKey};
use episode::{FactField, FactValue, Pathway, PatientRef, Risk};
use jiff::Timestamp;
use serde_json::{Map, Value, json};

/// Opens a store, naming who records on it if no one is named yet (these stores never
/// sign in; a signed-in store records as its user).
fn open(dir: &Path, key: &StoreKey) -> client_core::Result<Core> {
    let mut core = Core::open(dir, key)?;
    if core.user()?.is_none() {
        core.set_offline_user("u-asha")?;
    }
    Ok(core)
}

fn key(n: u8) -> StoreKey {
    StoreKey::from_bytes([n; 32])
}

fn t(text: &str) -> Timestamp {
    text.parse().unwrap()
}

fn fields(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        _ => panic!("fields are an object"),
    }
}

fn new_episode() -> NewEpisode {
    NewEpisode {
        patient_ref: PatientRef::new("RX-CORE-1").unwrap(),
        pathway: Pathway::UrgentReferral,
        team: "north".into(),
        facts: vec![(FactField::Children, FactValue::Flag(true))],
        plan: "Visit on Monday.".into(),
    }
}

fn missed() -> Map<String, Value> {
    fields(json!({"appointment": "initial"}))
}

#[test]
fn records_survive_closing_and_reopening_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let (id, event) = {
        let mut core = open(dir.path(), &key(1)).unwrap();
        let id = core.open_episode(new_episode(), t("2026-03-02T08:00:00Z")).unwrap();
        let event = core.record(id, "appointment_missed", missed(), t("2026-03-02T10:00:00Z")).unwrap();
        core.set_fact(id, FactField::Risk, &json!("high"), t("2026-03-02T10:01:00Z")).unwrap();
        core.set_plan(id, "Visit on Monday with the named contact.", t("2026-03-02T10:02:00Z")).unwrap();
        (id, event)
    };
    let core = open(dir.path(), &key(1)).unwrap();
    let episode = core.episode(id).unwrap();
    assert!(episode.events.iter().any(|e| e.id == event));
    assert_eq!(episode.events.len(), 2);
    assert_eq!(episode.facts.risk.values(), [Risk::High]);
    assert_eq!(episode.plan, "Visit on Monday with the named contact.");
    assert_eq!(episode.events[0].device, core.device());
    // Provisional actions at the device's clock, and the caseload's next actions.
    let actions = core.actions(id, t("2026-03-02T12:00:00Z")).unwrap();
    assert!(actions.provisional);
    assert!(actions.evaluation.actions.iter().any(|a| a.code.as_str() == "contact_patient"));
    let next = core.next_actions(t("2026-03-02T12:00:00Z"));
    assert!(!next.is_empty());
    assert!(next.windows(2).all(|w| w[0].action.due <= w[1].action.due));
}

#[test]
fn the_file_holds_no_plaintext() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut core = open(dir.path(), &key(1)).unwrap();
        let id = core.open_episode(new_episode(), t("2026-03-02T08:00:00Z")).unwrap();
        core.record(id, "appointment_missed", missed(), t("2026-03-02T10:00:00Z")).unwrap();
    }
    for file in std::fs::read_dir(dir.path()).unwrap() {
        let bytes = std::fs::read(file.unwrap().path()).unwrap();
        let text = String::from_utf8_lossy(&bytes);
        for secret in ["RX-CORE-1", "appointment_missed", "SQLite format", "north"] {
            assert!(!text.contains(secret), "{secret} is readable on disk");
        }
    }
}

#[test]
fn bad_input_is_refused_with_a_message_and_nothing_is_stored() {
    let dir = tempfile::tempdir().unwrap();
    let mut core = open(dir.path(), &key(1)).unwrap();
    let id = core.open_episode(new_episode(), t("2026-03-02T08:00:00Z")).unwrap();
    let at = t("2026-03-02T10:00:00Z");
    let cases: Vec<(&str, Value, &str)> = vec![
        ("phone_call", json!({}), "kind"),
        ("contact_attempt", json!({"method": "pigeon", "target": "patient", "outcome": "no_answer"}), "method"),
        ("decision", json!({"topic": "cold_call", "outcome": "yes"}), "rationale"),
        ("decision", json!({"topic": "cold_call", "outcome": "yes", "rationale": "  "}), "rationale"),
        ("appointment_booked", json!({"for": "2026-03-05T10:00:00"}), "for"),
        ("entered_in_error", json!({"record": "01a20934-7bf6-72ed-a417-242a3442e1f8", "reason": "typo"}), "record"),
        ("appointment_missed", json!({"appointment": "initial", "id": "x"}), "id"),
    ];
    for (kind, body, field) in cases {
        let err = core.record(id, kind, fields(body), at).unwrap_err();
        assert!(err.to_string().contains(field), "{kind}: {err}");
    }
    let unknown = "01a20934-7bf6-72ed-a417-242a3442e1f9".parse().unwrap();
    assert!(matches!(core.record(unknown, "appointment_missed", missed(), at), Err(Error::NotFound(_))));
    assert!(core.set_fact(id, FactField::Risk, &json!("severe"), at).is_err());
    assert!(core.episode(id).unwrap().events.is_empty());
    drop(core);
    assert!(open(dir.path(), &key(1)).unwrap().episode(id).unwrap().events.is_empty());
}

#[test]
fn a_wrong_key_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    drop(open(dir.path(), &key(1)).unwrap());
    assert!(matches!(open(dir.path(), &key(2)), Err(Error::WrongKey)));
}

#[test]
fn a_sign_in_answer_that_does_not_read_is_its_own_error_with_its_cause() {
    let dir = tempfile::tempdir().unwrap();
    let mut core = Core::open(dir.path(), &key(1)).unwrap();
    let reply = client_core::remote::Reply { status: 200, body: b"{\"access_token\": 7".to_vec() };
    let error = client_core::remote::signed_in(&mut core, "asha", reply, t("2026-03-02T08:00:00Z")).unwrap_err();
    // Not a sync failure: the user is told to sign in again, and the parser's word is kept.
    assert!(matches!(error, Error::SignInAnswer(_)), "{error:?}");
    assert!(error.to_string().contains("sign in again"), "{error}");
    let cause = std::error::Error::source(&error).expect("a cause");
    assert!(cause.downcast_ref::<serde_json::Error>().is_some(), "{cause:?}");
    assert_eq!(client_core::remote::signed_in_user(&core).unwrap(), None, "nobody signed in by it");
}

#[test]
fn a_damaged_store_file_is_an_error_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut core = open(dir.path(), &key(1)).unwrap();
        let id = core.open_episode(new_episode(), t("2026-03-02T08:00:00Z")).unwrap();
        for minute in 0..20 {
            let at = t("2026-03-02T10:00:00Z").checked_add(jiff::SignedDuration::from_mins(minute)).unwrap();
            core.record(id, "appointment_missed", missed(), at).unwrap();
        }
    }
    let path = dir.path().join(STORE_FILE);
    let whole = std::fs::read(&path).unwrap();
    // Truncated.
    std::fs::write(&path, &whole[..whole.len() / 2]).unwrap();
    let _ = std::fs::remove_file(dir.path().join(format!("{STORE_FILE}-wal")));
    assert!(open(dir.path(), &key(1)).is_err());
    // Overwritten in the middle.
    let mut damaged = whole.clone();
    for byte in &mut damaged[whole.len() / 3..whole.len() / 3 + 4096] {
        *byte ^= 0xff;
    }
    std::fs::write(&path, &damaged).unwrap();
    assert!(open(dir.path(), &key(1)).is_err());
    // Not a store at all.
    std::fs::write(&path, b"hello").unwrap();
    assert!(open(dir.path(), &key(1)).is_err());
}

#[test]
fn two_devices_exchanging_documents_converge_whatever_the_order() {
    let (a_dir, b_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut a = open(a_dir.path(), &key(1)).unwrap();
    let mut b = open(b_dir.path(), &key(2)).unwrap();
    b.set_offline_user("u-ben").unwrap();
    let id = a.open_episode(new_episode(), t("2026-03-02T08:00:00Z")).unwrap();
    b.merge_episode(&a.export_episode(id).unwrap()).unwrap();
    // Offline on both.
    a.record(id, "appointment_missed", missed(), t("2026-03-02T10:00:00Z")).unwrap();
    b.record(id, "home_visit", fields(json!({"announced": false, "outcome": "no_answer"})), t("2026-03-02T14:00:00Z"))
        .unwrap();
    a.set_fact(id, FactField::Risk, &json!("low"), t("2026-03-02T15:00:00Z")).unwrap();
    b.set_fact(id, FactField::Risk, &json!("high"), t("2026-03-02T15:01:00Z")).unwrap();
    a.set_plan(id, "Visit on Monday. Sister is the named contact.", t("2026-03-02T15:02:00Z")).unwrap();
    b.set_plan(id, "Urgent: visit on Monday.", t("2026-03-02T15:03:00Z")).unwrap();
    // Exchange in both directions, b's copy first into a, then a's merged copy back.
    a.merge_episode(&b.export_episode(id).unwrap()).unwrap();
    b.merge_episode(&a.export_episode(id).unwrap()).unwrap();
    let (ea, eb) = (a.episode(id).unwrap().clone(), b.episode(id).unwrap().clone());
    assert_eq!(ea, eb);
    assert_eq!(ea.events.len(), 4);
    assert_eq!(ea.facts.risk.values(), [Risk::Low, Risk::High]);
    assert!(ea.plan.contains("Urgent") && ea.plan.contains("named contact"), "{}", ea.plan);
    let now = t("2026-03-02T16:00:00Z");
    assert_eq!(a.actions(id, now).unwrap().evaluation, b.actions(id, now).unwrap().evaluation);
    assert_eq!(a.episodes(now)[0].conflicts, 1);
    assert_eq!(a.episode(id).unwrap().facts.conflicts()[0].0, FactField::Risk);
    // And it all survives reopening.
    drop(a);
    assert_eq!(open(a_dir.path(), &key(1)).unwrap().episode(id).unwrap(), &ea);
}

#[test]
fn many_records_compact_without_losing_one() {
    let dir = tempfile::tempdir().unwrap();
    let mut ids = Vec::new();
    let episode = {
        let mut core = open(dir.path(), &key(1)).unwrap();
        let episode = core.open_episode(new_episode(), t("2026-03-02T08:00:00Z")).unwrap();
        for minute in 0..150 {
            let at = t("2026-03-02T10:00:00Z").checked_add(jiff::SignedDuration::from_mins(minute)).unwrap();
            let body = fields(json!({"method": "phone", "target": "patient", "outcome": "no_answer"}));
            ids.push(core.record(episode, "contact_attempt", body, at).unwrap());
        }
        episode
    };
    let core = open(dir.path(), &key(1)).unwrap();
    let stored: Vec<_> = core.timeline(episode).unwrap().iter().map(|e| e.id).collect();
    assert_eq!(stored, ids);
}

/// Not a test of its own: the crash test runs this binary again with `--ignored` to make
/// it the child that records events in a loop, printing each id once `record` has
/// returned (so once it is durable), until it is killed.
#[test]
#[ignore = "the child process of a_writer_killed_at_random_moments_loses_nothing_it_reported"]
fn crash_child() {
    let dir = std::env::var("TETHER_CRASH_STORE").expect("run by the crash test, which sets TETHER_CRASH_STORE");
    let episode =
        std::env::var("TETHER_CRASH_EPISODE").expect("run by the crash test, which sets TETHER_CRASH_EPISODE");
    let mut core = open(Path::new(&dir), &key(7)).unwrap();
    let episode = episode.parse().unwrap();
    let mut out = std::io::stdout().lock();
    for n in 0.. {
        let at = t("2026-03-02T10:00:00Z").checked_add(jiff::SignedDuration::from_secs(n)).unwrap();
        let body = fields(json!({"method": "phone", "target": "patient", "outcome": "no_answer"}));
        let id = core.record(episode, "contact_attempt", body, at).unwrap();
        writeln!(out, "recorded {id}").unwrap();
        out.flush().unwrap();
    }
}

#[test]
fn a_writer_killed_at_random_moments_loses_nothing_it_reported() {
    let kills: u64 = std::env::var("TETHER_CRASH_KILLS").ok().and_then(|k| k.parse().ok()).unwrap_or(25);
    let dir = tempfile::tempdir().unwrap();
    let episode = open(dir.path(), &key(7)).unwrap().open_episode(new_episode(), t("2026-03-02T08:00:00Z")).unwrap();
    let mut seed = 0x9e37_79b9_7f4a_7c15_u64 ^ u64::from(std::process::id());
    let mut reported = Vec::new();
    for _ in 0..kills {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args(["crash_child", "--exact", "--ignored", "--nocapture", "--test-threads=1"])
            .env("TETHER_CRASH_STORE", dir.path())
            .env("TETHER_CRASH_EPISODE", episode.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        let wait = Duration::from_millis(20 + (seed >> 33) % 300);
        // Read what the child reports until the moment comes, then kill it mid-stride.
        let stdout = child.stdout.take().unwrap();
        let reader = std::thread::spawn(move || {
            BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
                .filter_map(|l| l.strip_prefix("recorded ").map(str::to_string))
                .collect::<Vec<_>>()
        });
        let start = Instant::now();
        while start.elapsed() < wait {
            std::thread::sleep(Duration::from_millis(5));
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        reported.extend(reader.join().unwrap());

        // After each kill the store opens, and every reported record is there.
        let core = open(dir.path(), &key(7)).unwrap();
        let stored: std::collections::HashSet<String> =
            core.timeline(episode).unwrap().iter().map(|e| e.id.to_string()).collect();
        let lost: Vec<_> = reported.iter().filter(|id| !stored.contains(*id)).collect();
        assert!(lost.is_empty(), "lost {} of {} reported records: {lost:?}", lost.len(), reported.len());
    }
    assert!(!reported.is_empty(), "the child never recorded anything");
    eprintln!("{kills} kills, {} records reported, none lost", reported.len());
}

#[test]
fn a_store_from_a_newer_app_is_refused_and_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    drop(open(dir.path(), &key(1)).unwrap());
    {
        let conn = rusqlite::Connection::open(dir.path().join(STORE_FILE)).unwrap();
        conn.execute_batch(&format!("PRAGMA key = \"x'{}'\";", key(1).to_hex())).unwrap();
        conn.pragma_update(None, "user_version", 99).unwrap();
    }
    assert!(matches!(open(dir.path(), &key(1)), Err(Error::NewerStore(99))));
}

/// Opens the store file directly (for tests that look at, or damage, what is stored).
fn raw(dir: &Path, key: &StoreKey) -> rusqlite::Connection {
    let conn = rusqlite::Connection::open(dir.join(STORE_FILE)).unwrap();
    conn.execute_batch(&format!("PRAGMA key = \"x'{}'\";", key.to_hex())).unwrap();
    conn
}

/// What the document itself gives for an episode (the team is the store's).
fn from_document(core: &mut Core, id: episode::EpisodeId) -> episode::Episode {
    let bytes = core.export_episode(id).unwrap();
    let doc = episode::document::EpisodeDoc::load(&bytes, automerge::ActorId::random()).unwrap();
    let mut episode = doc.episode().unwrap();
    episode.team.clone_from(&core.episode(id).unwrap().team);
    episode
}

/// An episode's document heads, sorted and concatenated (as its view is stored).
fn heads(core: &mut Core, id: episode::EpisodeId) -> Vec<u8> {
    let bytes = core.export_episode(id).unwrap();
    let mut doc = episode::document::EpisodeDoc::load(&bytes, automerge::ActorId::random()).unwrap();
    let mut heads = doc.heads();
    heads.sort();
    heads.iter().flat_map(|h| h.0).collect()
}

/// A device's episode with records, a fact both devices set concurrently (a conflict)
/// and an edited plan, in the store at `dir`.
fn episode_with_a_conflict(dir: &Path) -> episode::EpisodeId {
    let other = tempfile::tempdir().unwrap();
    let mut a = open(dir, &key(1)).unwrap();
    let mut b = open(other.path(), &key(2)).unwrap();
    b.set_offline_user("u-ben").unwrap();
    let id = a.open_episode(new_episode(), t("2026-03-02T08:00:00Z")).unwrap();
    b.merge_episode(&a.export_episode(id).unwrap()).unwrap();
    a.record(id, "appointment_missed", missed(), t("2026-03-02T10:00:00Z")).unwrap();
    let visit = fields(json!({"announced": false, "outcome": "no_answer"}));
    b.record(id, "home_visit", visit, t("2026-03-02T14:00:00Z")).unwrap();
    a.set_fact(id, FactField::Risk, &json!("low"), t("2026-03-02T15:00:00Z")).unwrap();
    b.set_fact(id, FactField::Risk, &json!("high"), t("2026-03-02T15:01:00Z")).unwrap();
    a.set_plan(id, "Visit on Monday. Sister is the named contact.", t("2026-03-02T15:02:00Z")).unwrap();
    a.merge_episode(&b.export_episode(id).unwrap()).unwrap();
    id
}

#[test]
fn the_typed_view_after_reopening_is_what_the_document_gives() {
    let dir = tempfile::tempdir().unwrap();
    let id = episode_with_a_conflict(dir.path());
    // The first opening builds the views from the documents (the changes since the
    // episode was stored made its view stale) and keeps them; the second reads them.
    for _ in 0..2 {
        let mut core = open(dir.path(), &key(1)).unwrap();
        let episode = core.episode(id).unwrap().clone();
        assert_eq!(episode.events.len(), 4);
        assert_eq!(episode.facts.risk.values(), [Risk::Low, Risk::High]);
        assert!(episode.plan.contains("named contact"));
        assert_eq!(episode, from_document(&mut core, id));
    }
    // The view kept is the one built at the document's heads (so the second opening read it).
    let stored: Vec<u8> = raw(dir.path(), &key(1)).query_row("SELECT heads FROM views", [], |r| r.get(0)).unwrap();
    assert_eq!(stored, heads(&mut open(dir.path(), &key(1)).unwrap(), id));
    // A record made after the view was kept is not lost: the view is stale, not trusted.
    let event = {
        let mut core = open(dir.path(), &key(1)).unwrap();
        core.record(id, "appointment_missed", missed(), t("2026-03-03T10:00:00Z")).unwrap()
    };
    let mut core = open(dir.path(), &key(1)).unwrap();
    assert!(core.episode(id).unwrap().events.iter().any(|e| e.id == event));
    assert_eq!(core.episode(id).unwrap().clone(), from_document(&mut core, id));
}

#[test]
fn a_view_that_does_not_read_is_built_again_from_the_document() {
    let dir = tempfile::tempdir().unwrap();
    let id = episode_with_a_conflict(dir.path());
    drop(open(dir.path(), &key(1)).unwrap());
    raw(dir.path(), &key(1)).execute("UPDATE views SET view = X'00DEADBEEF'", []).unwrap();
    let mut core = open(dir.path(), &key(1)).unwrap();
    assert_eq!(core.episode(id).unwrap().clone(), from_document(&mut core, id));
}

#[test]
fn a_store_of_schema_2_upgrades_and_keeps_everything() {
    let dir = tempfile::tempdir().unwrap();
    let id = episode_with_a_conflict(dir.path());
    let before = open(dir.path(), &key(1)).unwrap().episode(id).unwrap().clone();
    {
        // Schema 2 as it was: no views table, no `owed`, no receipts.
        let conn = raw(dir.path(), &key(1));
        conn.execute_batch(
            "DROP TABLE views; ALTER TABLE sync_states DROP COLUMN owed; DROP TABLE receipts;
             PRAGMA user_version = 2;",
        )
        .unwrap();
    }
    for _ in 0..2 {
        let mut core = open(dir.path(), &key(1)).unwrap();
        assert_eq!(core.episode(id).unwrap(), &before);
        assert_eq!(before, from_document(&mut core, id));
    }
    let conn = raw(dir.path(), &key(1));
    let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0)).unwrap();
    assert_eq!(version, 5);
    let views: i64 = conn.query_row("SELECT count(*) FROM views", [], |r| r.get(0)).unwrap();
    assert_eq!(views, 1);
}

#[test]
fn a_store_of_schema_3_upgrades_and_keeps_its_sync_states_owing_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let id = episode_with_a_conflict(dir.path());
    let before = open(dir.path(), &key(1)).unwrap().episode(id).unwrap().clone();
    {
        // Schema 3 as it was: sync states without `owed`, one of them kept; no receipts.
        let conn = raw(dir.path(), &key(1));
        conn.execute_batch("ALTER TABLE sync_states DROP COLUMN owed; DROP TABLE receipts; PRAGMA user_version = 3;")
            .unwrap();
        conn.execute("INSERT INTO sync_states (episode, state) VALUES (?1, X'0042')", [id.to_string()]).unwrap();
    }
    let core = open(dir.path(), &key(1)).unwrap();
    assert_eq!(core.episode(id).unwrap(), &before);
    drop(core);
    let conn = raw(dir.path(), &key(1));
    let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0)).unwrap();
    assert_eq!(version, 5);
    let (state, owed): (Vec<u8>, i64) = conn
        .query_row("SELECT state, owed FROM sync_states WHERE episode = ?1", [id.to_string()], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .unwrap();
    assert_eq!((state, owed), (vec![0x00, 0x42], 0));
}

/// Text of `len` letters that deflate barely at all (so that stored bytes grow with it).
fn incompressible(len: usize, seed: &mut u64) -> String {
    (0..len)
        .map(|_| {
            *seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            char::from(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"[(*seed >> 58) as usize % 62])
        })
        .collect()
}

#[test]
fn a_record_past_the_limits_or_the_budget_is_refused_before_it_is_stored() {
    use episode::document::DocumentError;
    use episode::limits::{EPISODE_BUDGET_BYTES, MAX_TEXT_BYTES};
    let dir = tempfile::tempdir().unwrap();
    let mut core = open(dir.path(), &key(1)).unwrap();
    let id = core.open_episode(new_episode(), t("2026-03-02T08:00:00Z")).unwrap();
    let at = t("2026-03-02T10:00:00Z");

    // A note past its limit names the field, not the text.
    let long = fields(json!({"note": "SECRET ".repeat(MAX_TEXT_BYTES / 7 + 1)}));
    let error = core.record(id, "reengaged", long, at).unwrap_err();
    assert!(matches!(error, Error::Document(DocumentError::TooLong(_))), "{error}");
    assert!(error.to_string().contains("`note`") && !error.to_string().contains("SECRET"), "{error}");

    // Records of nearly the largest size until the budget refuses one.
    let mut seed = 3;
    let mut stored = 0;
    let refused = loop {
        let body = json!({"topic": "cold_call", "outcome": "yes", "rationale": incompressible(MAX_TEXT_BYTES - 200, &mut seed),
                          "note": incompressible(MAX_TEXT_BYTES - 400, &mut seed)});
        match core.record(id, "decision", fields(body), at) {
            Ok(_) => stored += 1,
            Err(error) => break error,
        }
        assert!(stored < EPISODE_BUDGET_BYTES / MAX_TEXT_BYTES, "the budget never refused");
    };
    assert!(matches!(refused, Error::Document(DocumentError::Full { .. })), "{refused}");
    assert!(refused.to_string().contains("new episode"), "{refused}");
    assert!(stored > EPISODE_BUDGET_BYTES / (2 * MAX_TEXT_BYTES) * 9 / 10, "{stored} records stored");
    // Nothing of the refused record is in memory or on disk; everything before it is.
    assert_eq!(core.episode(id).unwrap().events.len(), stored);
    drop(core);
    let core = open(dir.path(), &key(1)).unwrap();
    assert_eq!(core.episode(id).unwrap().events.len(), stored);
}

#[test]
fn who_records_is_named_only_until_someone_signs_in() {
    let dir = tempfile::tempdir().unwrap();
    let mut core = Core::open(dir.path(), &key(1)).unwrap();
    assert!(matches!(core.open_episode(new_episode(), t("2026-03-02T08:00:00Z")), Err(Error::NotSignedIn)));
    core.set_offline_user("u-asha").unwrap();
    let id = core.open_episode(new_episode(), t("2026-03-02T08:00:00Z")).unwrap();
    let event = core.record(id, "reengaged", Map::new(), t("2026-03-02T09:00:00Z")).unwrap();
    let recorded = core.episode(id).unwrap().events.iter().find(|e| e.id == event).unwrap().clone();
    assert_eq!((recorded.by.as_str(), recorded.device.as_str()), ("u-asha", core.device()));
    assert_eq!(core.episode(id).unwrap().opened_by, "u-asha");
    // Once someone has signed in (as `remote::sign_in` leaves the store), records are theirs.
    core.set_setting("sync.username", "ben").unwrap();
    assert!(matches!(core.set_offline_user("u-asha"), Err(Error::SignedIn(ref user)) if user == "ben"));
    let event = core.record(id, "reengaged", Map::new(), t("2026-03-02T09:05:00Z")).unwrap();
    let recorded = core.episode(id).unwrap().events.iter().find(|e| e.id == event).unwrap().clone();
    assert_eq!(recorded.by, "ben");
}

#[test]
fn a_store_of_schema_4_upgrades_and_asks_the_server_for_everything_again() {
    let dir = tempfile::tempdir().unwrap();
    let id = episode_with_a_conflict(dir.path());
    let before = Core::open(dir.path(), &key(1)).unwrap().episode(id).unwrap().clone();
    {
        // Schema 4 as it was: no receipts, and a cursor from its last sync.
        let conn = raw(dir.path(), &key(1));
        conn.execute_batch(
            "DROP TABLE receipts; INSERT INTO meta (key, value) VALUES ('sync.cursor', '41');
             PRAGMA user_version = 4;",
        )
        .unwrap();
    }
    let core = Core::open(dir.path(), &key(1)).unwrap();
    assert_eq!(core.episode(id).unwrap(), &before);
    // Cursor 0: the next sync brings every episode's receipt times.
    assert_eq!(core.cursor().unwrap(), 0);
    drop(core);
    let conn = raw(dir.path(), &key(1));
    let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0)).unwrap();
    assert_eq!(version, 5);
    let receipts: i64 = conn.query_row("SELECT count(*) FROM receipts", [], |r| r.get(0)).unwrap();
    assert_eq!(receipts, 0);
}

/// A `received_at` written into a document (a forged record: no client writes one) is not
/// the server's word: the device shows and evaluates only the receipt times its syncs
/// bring, so a forged one can neither raise nor hide `clock_skew`.
#[test]
fn a_receipt_time_written_into_a_document_is_not_believed() {
    let dir = tempfile::tempdir().unwrap();
    let mut core = Core::open(dir.path(), &key(1)).unwrap();
    let opening = episode::document::Opening {
        id: uuid::Uuid::now_v7().into(),
        patient_ref: PatientRef::new("RX-FORGED").unwrap(),
        team: "north".into(),
        opened_at: t("2026-03-02T08:00:00Z"),
        opened_by: "u-mal".into(),
        pathway: Pathway::InService,
        facts: Vec::new(),
        plan: String::new(),
    };
    let mut doc = episode::document::EpisodeDoc::open(&opening, automerge::ActorId::random()).unwrap();
    let forged = episode::Event::from_value(
        &json!({"id": uuid::Uuid::now_v7().to_string(), "kind": "home_visit", "announced": false,
                "outcome": "no_answer", "at": "2026-03-02T12:00:00Z", "by": "u-mal", "device": "phone-mal",
                "received_at": "2026-03-02T09:00:00Z"}),
        0,
    )
    .unwrap();
    doc.record(&forged).unwrap();
    let id = core.merge_episode(&doc.save()).unwrap();
    assert_eq!(core.episode(id).unwrap().events[0].received_at, None);
    let warnings = core.actions(id, t("2026-03-02T13:00:00Z")).unwrap().evaluation.warnings;
    assert!(warnings.iter().all(|w| w.code != episode::pathway::WarningCode::ClockSkew), "{warnings:?}");
    drop(core);
    let core = Core::open(dir.path(), &key(1)).unwrap();
    assert_eq!(core.episode(id).unwrap().events[0].received_at, None, "nor after reopening");
}
