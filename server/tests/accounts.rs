//! `tether team add` and `tether user add`, through the real binary, with `--db` a SQLite
//! file and (in `needs_postgres`) a `postgres://` URL.

mod common;

use std::io::Write;
use std::process::{Command, Output, Stdio};

fn tether(args: &[&str], password_env: Option<&str>, stdin: &str) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_tether"));
    command.args(args).env_remove("TETHER_DB").env_remove("TETHER_PASSWORD");
    if let Some(password) = password_env {
        command.env("TETHER_PASSWORD", password);
    }
    let mut child =
        command.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("run tether");
    let mut pipe = child.stdin.take().expect("stdin is piped");
    // The binary may exit before reading stdin: ignore a broken pipe.
    let _ = pipe.write_all(stdin.as_bytes());
    drop(pipe);
    child.wait_with_output().expect("wait for tether")
}

fn ok(output: &Output) -> String {
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "tether failed: {stderr}");
    String::from_utf8_lossy(&output.stdout).trim().to_string()
}

/// Asserts a refusal with a message, and returns the message.
fn refused(output: &Output) -> String {
    assert!(!output.status.success(), "expected a refusal; stdout: {}", String::from_utf8_lossy(&output.stdout));
    assert!(output.stdout.is_empty());
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn teams_and_users_are_added_and_refused_clearly() {
    let test_db = common::TestDb::new();
    let db = test_db.arg.clone();

    assert_eq!(
        ok(&tether(&["team", "add", "--db", &db, "--id", "team-north", "--name", "North"], None, "")),
        "team-north"
    );
    ok(&tether(&["team", "add", "--db", &db, "--id", "team-south", "--name", "South CMHT"], None, ""));
    let err = refused(&tether(&["team", "add", "--db", &db, "--id", "team-north", "--name", "Again"], None, ""));
    assert!(err.contains("a team with id `team-north` already exists"), "{err}");

    // Password from stdin (one line), then from TETHER_PASSWORD.
    let add = |username: &str, teams: &[&str], env: Option<&str>, stdin: &str| {
        let mut args = vec!["user", "add", "--db", &db, "--username", username, "--role", "team_manager"];
        for team in teams {
            args.extend(["--team", team]);
        }
        tether(&args, env, stdin)
    };
    let alice = ok(&add("alice", &["team-north", "team-south"], None, "from stdin\n"));
    assert!(uuid::Uuid::parse_str(&alice).is_ok(), "prints the new user's id: {alice}");
    ok(&add("bob", &["team-north"], Some("from the environment"), "ignored\n"));

    let err = refused(&add("carol", &["team-west"], Some("pw"), ""));
    assert!(err.contains("no team with id `team-west`"), "{err}");
    let err = refused(&add("alice", &["team-north"], Some("pw"), ""));
    assert!(err.contains("a user named `alice` already exists"), "{err}");
    let err = refused(&add("dave", &["team-north"], None, "\n"));
    assert!(err.contains("password is empty"), "{err}");
    let err = refused(&add("dave", &["team-north"], Some(""), ""));
    assert!(err.contains("password is empty"), "{err}");
    let err = refused(&add("erin", &[], Some("pw"), ""));
    assert!(err.contains("--team"), "a user needs a team: {err}");
    let err = refused(&tether(
        &["user", "add", "--db", &db, "--username", "erin", "--role", "boss", "--team", "team-north"],
        Some("pw"),
        "",
    ));
    assert!(err.contains("--role") && err.contains("safeguarding_lead"), "{err}");
    let err = refused(&add("has space", &["team-north"], Some("pw"), ""));
    assert!(err.contains("--username"), "{err}");
    // Only a small, safe set: no direction overrides that reorder a timeline's "by",
    // no look-alike letters, no control characters. The error says what is allowed.
    for bad in ["ana\u{202e}nimda", "\u{2066}maya", "mаya", "zoë", "tab\tname", "_lead", ".hidden", ""] {
        let err = refused(&add(bad, &["team-north"], Some("pw"), ""));
        assert!(err.contains("letters A-Z or a-z, digits and . _ - @"), "{bad:?}: {err}");
    }
    ok(&add("maya.o-brien_2@north", &["team-north"], Some("pw"), ""));

    // What was stored: hashes only, memberships, and nothing for the refusals.
    let inspect = |sql: &'static str| -> Vec<Vec<String>> {
        let rows = test_db.open().call_blocking(|conn| conn.inspect(sql)).expect("a query");
        rows.into_iter().map(|row| row.into_iter().map(|v| v.unwrap_or_default()).collect()).collect()
    };
    let rows = inspect("SELECT username, role, password_hash FROM users ORDER BY username");
    assert_eq!(rows.len(), 3, "{rows:?}");
    assert_eq!((rows[0][0].as_str(), rows[0][1].as_str()), ("alice", "team_manager"));
    assert_eq!(rows[1][0], "bob");
    assert_eq!(rows[2][0], "maya.o-brien_2@north");
    let alice_teams = inspect(
        "SELECT t.team_id FROM users u JOIN user_teams t ON t.user_id = u.id WHERE u.username = 'alice' ORDER BY t.team_id",
    );
    assert_eq!(alice_teams, [["team-north"], ["team-south"]]);
    for row in &rows {
        assert!(row[2].starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{}", row[2]);
    }
    let stdin_ok = server::auth::password::verify(b"from stdin", &rows[0][2]).expect("verify");
    let env_ok = server::auth::password::verify(b"from the environment", &rows[1][2]).expect("verify");
    assert!(stdin_ok && env_ok);
}

fn a_user_can_be_disabled_and_enabled() {
    let test_db = common::TestDb::new();
    let db = test_db.arg.clone();
    ok(&tether(&["team", "add", "--db", &db, "--id", "t", "--name", "T"], None, ""));
    ok(&tether(&["user", "add", "--db", &db, "--username", "u", "--role", "admin", "--team", "t"], Some("pw"), ""));
    ok(&tether(&["user", "disable", "--db", &db, "--username", "u"], None, ""));
    let disabled = || -> bool {
        let rows = test_db.open().call_blocking(|conn| conn.inspect("SELECT disabled FROM users WHERE username = 'u'"));
        common::number(&rows.expect("a row")) == 1
    };
    assert!(disabled());
    ok(&tether(&["user", "enable", "--db", &db, "--username", "u"], None, ""));
    assert!(!disabled());
    let err = refused(&tether(&["user", "disable", "--db", &db, "--username", "nobody"], None, ""));
    assert!(err.contains("no user named `nobody`"), "{err}");
}

fn users_are_listed_and_a_local_password_is_reset() {
    let test_db = common::TestDb::new();
    let db = test_db.arg.clone();
    ok(&tether(&["team", "add", "--db", &db, "--id", "north", "--name", "North"], None, ""));
    ok(&tether(&["team", "add", "--db", &db, "--id", "south", "--name", "South"], None, ""));
    ok(&tether(
        &[
            "user",
            "add",
            "--db",
            &db,
            "--username",
            "jo",
            "--role",
            "practitioner",
            "--team",
            "north",
            "--team",
            "south",
        ],
        Some("old password"),
        "",
    ));
    // A person from an identity provider, as a first sign-in makes them.
    test_db
        .open()
        .call_blocking(|conn| {
            let mut tx = conn.transaction()?;
            server::accounts::add_identity_user(
                &mut *tx,
                "cis2",
                "5550001",
                "cis2:sam",
                server::accounts::Role::TeamManager,
                &["north".parse().expect("a team")],
                jiff::Timestamp::now(),
            )
            .expect("an identity user");
            tx.commit()
        })
        .expect("committed");
    ok(&tether(&["user", "disable", "--db", &db, "--username", "cis2:sam"], None, ""));
    let list = ok(&tether(&["user", "list", "--db", &db], None, ""));
    assert_eq!(
        list,
        "username\trole\tteams\tsigns_in_with\tdisabled\n\
         cis2:sam\tteam_manager\tnorth\tcis2\tyes\n\
         jo\tpractitioner\tnorth,south\tpassword\tno"
    );

    // From stdin, then from TETHER_PASSWORD.
    ok(&tether(&["user", "reset-password", "--db", &db, "--username", "jo"], None, "from stdin\n"));
    let hash = || -> String {
        let rows = test_db
            .open()
            .call_blocking(|conn| conn.inspect("SELECT password_hash FROM users WHERE username = 'jo'"))
            .expect("a hash");
        rows.first().and_then(|row| row[0].clone()).expect("a hash")
    };
    assert!(server::auth::password::verify(b"from stdin", &hash()).expect("verify"));
    assert!(!server::auth::password::verify(b"old password", &hash()).expect("verify"));
    ok(&tether(&["user", "reset-password", "--db", &db, "--username", "jo"], Some("from the environment"), ""));
    assert!(server::auth::password::verify(b"from the environment", &hash()).expect("verify"));

    let err = refused(&tether(&["user", "reset-password", "--db", &db, "--username", "nobody"], Some("pw"), ""));
    assert!(err.contains("no user named `nobody`"), "{err}");
    let err = refused(&tether(&["user", "reset-password", "--db", &db, "--username", "cis2:sam"], Some("pw"), ""));
    assert!(err.contains("signs in with an identity provider"), "{err}");
    let err = refused(&tether(&["user", "reset-password", "--db", &db, "--username", "jo"], None, "\n"));
    assert!(err.contains("password is empty"), "{err}");
    // A local username never looks like a provider's.
    let err = refused(&tether(
        &["user", "add", "--db", &db, "--username", "cis2:eve", "--role", "admin", "--team", "north"],
        Some("pw"),
        "",
    ));
    assert!(err.contains("may not contain `:`"), "{err}");
}

common::backends_blocking!(
    teams_and_users_are_added_and_refused_clearly,
    a_user_can_be_disabled_and_enabled,
    users_are_listed_and_a_local_password_is_reset,
);
