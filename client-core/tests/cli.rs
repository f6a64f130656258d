//! `tether-field`, the real binary: offline commands, refusals with a message and
//! nothing stored, and the store key.

use std::path::Path;
use std::process::{Command, Output};

const KEY: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";

fn field(store: &Path, key: &str, args: &[&str]) -> Output {
    field_as(store, key, Some("u-asha"), args)
}

/// `tether-field` with `TETHER_USER` set to `user`, or unset.
fn field_as(store: &Path, key: &str, user: Option<&str>, args: &[&str]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_tether-field"));
    command.arg("--store").arg(store).args(args).env("TETHER_STORE_KEY", key).env_remove("TETHER_USER");
    if let Some(user) = user {
        command.env("TETHER_USER", user);
    }
    command.output().unwrap()
}

fn ok(output: Output) -> String {
    assert!(output.status.success(), "failed: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout).unwrap().trim().to_string()
}

fn refused(output: Output) -> String {
    assert!(!output.status.success(), "should have failed: {}", String::from_utf8_lossy(&output.stdout));
    assert!(output.stdout.is_empty());
    String::from_utf8(output.stderr).unwrap()
}

#[test]
fn a_home_visit_recorded_offline_shows_in_the_next_actions() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path();
    let episode = ok(field(
        store,
        KEY,
        &[
            "open",
            "--patient",
            "RX-CLI-1",
            "--pathway",
            "urgent_referral",
            "--team",
            "north",
            "--fact",
            "children=true",
        ],
    ));
    let missed = ok(field(
        store,
        KEY,
        &[
            "record",
            &episode,
            "appointment_missed",
            "--at",
            "2026-03-02T10:00:00Z",
            "--json",
            r#"{"appointment": "initial"}"#,
        ],
    ));
    let visit = ok(field(
        store,
        KEY,
        &[
            "record",
            &episode,
            "home_visit",
            "--at",
            "2026-03-02T14:00:00Z",
            "--json",
            r#"{"announced": false, "outcome": "no_answer"}"#,
        ],
    ));
    assert_ne!(missed, visit);
    ok(field(store, KEY, &["set", &episode, "risk", "high"]));

    let shown: serde_json::Value = serde_json::from_str(&ok(field(store, KEY, &["show", &episode]))).unwrap();
    assert_eq!(shown["risk"], "high");
    assert_eq!(shown["children"], true);
    assert_eq!(shown["events"].as_array().unwrap().len(), 3);

    let actions: serde_json::Value =
        serde_json::from_str(&ok(field(store, KEY, &["actions", &episode, "--now", "2026-03-02T14:30:00Z"]))).unwrap();
    assert_eq!(actions["provisional"], true);
    let next: serde_json::Value =
        serde_json::from_str(&ok(field(store, KEY, &["next", "--now", "2026-03-02T14:30:00Z"]))).unwrap();
    let first = &next.as_array().unwrap()[0];
    assert_eq!(first["code"], "leave_calling_card");
    assert_eq!(first["due"], "2026-03-02T15:00:00Z");
    assert_eq!(first["episode"], episode.as_str());
    let episodes: serde_json::Value =
        serde_json::from_str(&ok(field(store, KEY, &["episodes", "--now", "2026-03-02T14:30:00Z"]))).unwrap();
    assert_eq!(episodes.as_array().unwrap().len(), 1);
    // The line of `GET /v1/episodes`: one pathway, every action still to be done counted
    // as open (the overdue among them), conflicts as a count. The next day some are
    // overdue.
    let later = ["--now", "2026-03-03T12:00:00Z"];
    let next: serde_json::Value =
        serde_json::from_str(&ok(field(store, KEY, &[&["next"], &later[..]].concat()))).unwrap();
    let episodes: serde_json::Value =
        serde_json::from_str(&ok(field(store, KEY, &[&["episodes"], &later[..]].concat()))).unwrap();
    let line = &episodes[0];
    assert_eq!(line["pathway"], "urgent_referral");
    let due = next.as_array().unwrap().iter().filter(|a| a["episode"] == episode.as_str()).count();
    assert_eq!(line["open_actions"].as_u64(), Some(due as u64));
    let overdue = next.as_array().unwrap().iter().filter(|a| a["state"] == "overdue").count();
    assert!(overdue > 0, "{next}");
    assert_eq!(line["overdue_actions"].as_u64(), Some(overdue as u64));
    assert_eq!(line["conflicts"], 0);
    // Nothing synced: no receipt times.
    assert!(shown["events"].as_array().unwrap().iter().all(|e| e.get("received_at").is_none()));
}

#[test]
fn bad_input_is_refused_with_a_message_and_nothing_is_stored() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path();
    let episode =
        ok(field(store, KEY, &["open", "--patient", "RX-CLI-2", "--pathway", "in_service", "--team", "north"]));
    let cases: [(&[&str], &str); 8] = [
        (&["record", &episode, "phone_call"], "kind"),
        (
            &[
                "record",
                &episode,
                "contact_attempt",
                "--json",
                r#"{"method": "pigeon", "target": "patient", "outcome": "no_answer"}"#,
            ],
            "method",
        ),
        (&["record", &episode, "decision", "--json", r#"{"topic": "cold_call", "outcome": "yes"}"#], "rationale"),
        (
            &[
                "record",
                &episode,
                "appointment_missed",
                "--at",
                "2026-03-02T10:00:00",
                "--json",
                r#"{"appointment": "initial"}"#,
            ],
            "offset",
        ),
        (
            &[
                "record",
                &episode,
                "appointment_missed",
                "--at",
                "2206-03-02T10:00:00Z",
                "--json",
                r#"{"appointment": "initial"}"#,
            ],
            "outside the years 2000 to 2100",
        ),
        (
            &[
                "record",
                &episode,
                "appointment_missed",
                "--json",
                r#"{"appointment": "initial", "appointment": "follow_up"}"#,
            ],
            "the key `appointment` appears twice",
        ),
        (&["record", "01a20934-7bf6-72ed-a417-242a3442e1f8", "appointment_attended"], "no episode"),
        (&["set", &episode, "risk", "severe"], "risk"),
    ];
    for (args, expected) in cases {
        let message = refused(field(store, KEY, args));
        assert!(message.contains(expected), "{args:?}: {message}");
        assert!(!message.contains("RX-CLI-2"));
    }
    let shown: serde_json::Value = serde_json::from_str(&ok(field(store, KEY, &["show", &episode]))).unwrap();
    assert!(shown["events"].as_array().unwrap().is_empty());
    let message =
        refused(field(store, KEY, &["open", "--patient", "RX-3", "--pathway", "sometimes", "--team", "north"]));
    assert!(message.contains("--pathway"), "{message}");
}

#[test]
fn a_wrong_key_is_refused_and_a_missing_one_is_made_and_kept() {
    let dir = tempfile::tempdir().unwrap();
    ok(field(dir.path(), KEY, &["open", "--patient", "RX-CLI-K", "--pathway", "in_service", "--team", "north"]));
    let other = "ff".repeat(32);
    let message = refused(field(dir.path(), &other, &["episodes"]));
    assert!(message.contains("key is wrong"), "{message}");
    assert!(refused(field(dir.path(), "not hex", &["episodes"])).contains("TETHER_STORE_KEY"));

    // Without TETHER_STORE_KEY, a key is made on first use, kept beside the store, reused.
    let fresh = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_tether-field"))
            .arg("--store")
            .arg(fresh.path())
            .args(args)
            .env_remove("TETHER_STORE_KEY")
            .env("TETHER_USER", "u-asha")
            .output()
            .unwrap()
    };
    let first = run(&["open", "--patient", "RX-CLI-K", "--pathway", "in_service", "--team", "north"]);
    assert!(first.status.success(), "{}", String::from_utf8_lossy(&first.stderr));
    assert!(String::from_utf8_lossy(&first.stderr).contains("store.key"));
    assert!(fresh.path().join("store.key").exists());
    assert!(run(&["episodes"]).status.success());
}

#[test]
fn only_open_and_login_make_a_store_and_nothing_else_does() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("typo");
    let episode = "0190f5a4-0000-7000-8000-000000000001";
    for args in [
        &["episodes"][..],
        &["next"],
        &["sync"],
        &["show", episode],
        &["actions", episode],
        &["record", episode, "reengaged"],
        &["set", episode, "risk", "high"],
        &["plan", episode, "a plan"],
    ] {
        let message = refused(field(&store, KEY, args));
        assert!(message.contains("there is no store in") && message.contains("typo"), "{args:?}: {message}");
        assert!(!store.exists(), "{args:?} made {}", store.display());
    }
    // Without TETHER_STORE_KEY no key file is made either.
    let output = Command::new(env!("CARGO_BIN_EXE_tether-field"))
        .arg("--store")
        .arg(&store)
        .arg("next")
        .env_remove("TETHER_STORE_KEY")
        .output()
        .unwrap();
    assert!(refused(output).contains("there is no store in"));
    assert!(!store.exists());
    ok(field(&store, KEY, &["open", "--patient", "RX-CLI-N", "--pathway", "in_service", "--team", "north"]));
    assert_eq!(ok(field(&store, KEY, &["next"])).chars().next(), Some('['));
}

#[test]
fn sync_with_no_server_fails_clearly_and_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path();
    let episode =
        ok(field(store, KEY, &["open", "--patient", "RX-CLI-3", "--pathway", "routine_referral", "--team", "north"]));
    let visit = ok(field(
        store,
        KEY,
        &["record", &episode, "home_visit", "--json", r#"{"announced": false, "outcome": "no_answer"}"#],
    ));

    // Not signed in: sync says so.
    let message = refused(field(store, KEY, &["sync"]));
    assert!(message.contains("no user is signed in"), "{message}");

    // A server that cannot be reached: sign-in says so, and nothing is lost.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let mut login = Command::new(env!("CARGO_BIN_EXE_tether-field"));
    login
        .arg("--store")
        .arg(store)
        .args(["login", "--server", &format!("http://{closed}"), "--username", "asha"])
        .env("TETHER_STORE_KEY", KEY)
        .env("TETHER_PASSWORD", "correct horse battery staple");
    let message = refused(login.output().unwrap());
    assert!(message.contains("could not be reached") && message.contains("nothing was lost"), "{message}");
    let shown = ok(field(store, KEY, &["show", &episode]));
    assert!(shown.contains(&visit), "the visit is still recorded");
}

#[test]
fn once_signed_in_records_are_by_the_signed_in_user_and_no_one_named() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path();
    // Before any sign-in, nobody named: who is recording?
    let message = refused(field_as(
        store,
        KEY,
        None,
        &["open", "--patient", "RX-CLI-4", "--pathway", "in_service", "--team", "north"],
    ));
    assert!(message.contains("who is recording") && message.contains("login"), "{message}");
    // The store signs in as asha (as `login` leaves it; the server's answer is not what
    // this test is about).
    {
        let key = client_core::StoreKey::from_hex(KEY).unwrap();
        let mut core = client_core::Core::open(store, &key).unwrap();
        core.set_setting("sync.username", "asha").unwrap();
    }
    let open = ["open", "--patient", "RX-CLI-4", "--pathway", "in_service", "--team", "north"];
    let message = refused(field_as(store, KEY, Some("maya"), &open));
    assert!(message.contains("asha is signed in") && message.contains("sign in as maya"), "{message}");
    let episode = ok(field_as(store, KEY, None, &open));
    ok(field_as(store, KEY, Some("asha"), &["record", &episode, "reengaged"]));
    let shown: serde_json::Value = serde_json::from_str(&ok(field_as(store, KEY, None, &["show", &episode]))).unwrap();
    assert_eq!(shown["opened_by"], "asha");
    let event = &shown["events"][0];
    assert_eq!(event["by"], "asha");
    let device = event["device"].as_str().unwrap();
    assert_eq!(device.len(), 36, "the device's own id: {device}");
}
