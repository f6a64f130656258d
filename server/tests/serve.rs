//! `tether serve` as a real process on a free loopback port: a user added with the CLI
//! signs in over HTTP, calls `/v1/me`, refreshes, and the server stops cleanly on SIGTERM;
//! on a SQLite file and (in `needs_postgres`) a `postgres://` URL.

mod common;

use std::io::BufRead;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};

fn tether(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_tether"))
        .args(args)
        .env("TETHER_PASSWORD", "a long enough password")
        .env_remove("TETHER_DB")
        .output()
        .expect("run tether")
}

/// The signing secret `tether serve` is given: none on SQLite (it makes its key file), the
/// test's on PostgreSQL (which requires one).
fn signing<'c>(command: &'c mut Command, test_db: &common::TestDb) -> &'c mut Command {
    match test_db.jwt_secret() {
        Some(secret) => command.env("TETHER_JWT_SECRET", secret.expose()),
        None => command.env_remove("TETHER_JWT_SECRET"),
    }
}

fn serve_signs_in_over_http_and_stops_on_sigterm() {
    let test_db = common::TestDb::new();
    let db = test_db.arg.as_str();
    assert!(tether(&["team", "add", "--db", db, "--id", "team-north", "--name", "North"]).status.success());
    let added =
        tether(&["user", "add", "--db", db, "--username", "alice", "--role", "practitioner", "--team", "team-north"]);
    assert!(added.status.success(), "{}", String::from_utf8_lossy(&added.stderr));

    let (mut server, _, base) = common::serve(
        signing(
            Command::new(env!("CARGO_BIN_EXE_tether")).args(["serve", "--db", db, "--addr", "127.0.0.1:0"]),
            &test_db,
        )
        .env("TETHER_LOG", "warn"),
    );
    assert!(base.starts_with("http://127.0.0.1:"), "{base}");

    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(30)))
        .build()
        .into();

    let mut response = agent.get(format!("{base}/healthz")).call().expect("healthz");
    assert_eq!(response.status(), 200);
    assert_eq!(response.body_mut().read_json::<Value>().expect("JSON")["status"], "ok");

    let mut response = agent
        .post(format!("{base}/v1/auth/login"))
        .send_json(json!({"username": "alice", "password": "a long enough password", "device_id": "phone-1"}))
        .expect("login");
    assert_eq!(response.status(), 200);
    let tokens: Value = response.body_mut().read_json().expect("JSON");
    let access = tokens["access_token"].as_str().expect("an access token");

    let mut response =
        agent.get(format!("{base}/v1/me")).header("Authorization", format!("Bearer {access}")).call().expect("me");
    assert_eq!(response.status(), 200);
    let me: Value = response.body_mut().read_json().expect("JSON");
    assert_eq!(me["username"], "alice");
    assert_eq!(me["role"], "practitioner");
    assert_eq!(me["teams"], json!(["team-north"]));
    assert_eq!(me["device_id"], "phone-1");

    let mut response = agent
        .post(format!("{base}/v1/auth/refresh"))
        .send_json(json!({"refresh_token": tokens["refresh_token"], "device_id": "phone-1"}))
        .expect("refresh");
    assert_eq!(response.status(), 200);
    assert!(response.body_mut().read_json::<Value>().expect("JSON")["access_token"].is_string());

    let mut response = agent.get(format!("{base}/v1/me")).call().expect("me without a token");
    assert_eq!(response.status(), 401);
    assert_eq!(response.body_mut().read_json::<Value>().expect("JSON")["error"]["code"], "unauthenticated");

    // SIGTERM, to the server this test started, by its id: a graceful stop exits 0.
    let pid = server.0.id().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().expect("kill").success());
    let status = server.0.wait().expect("wait for the server");
    assert!(status.success(), "the server did not stop cleanly: {status}");
}

fn metrics_are_served_on_their_own_address_and_not_on_the_main_port() {
    let test_db = common::TestDb::new();
    let db = test_db.arg.as_str();
    let (_server, mut stdout, base) = common::serve(signing(
        Command::new(env!("CARGO_BIN_EXE_tether"))
            .args(["serve", "--db", db, "--addr", "127.0.0.1:0", "--metrics-addr", "127.0.0.1:0"])
            .env("TETHER_LOG", "warn")
            .env_remove("TETHER_METRICS_TOKEN"),
        &test_db,
    ));
    let mut line = String::new();
    stdout.read_line(&mut line).expect("the metrics line");
    let metrics =
        line.trim().strip_prefix("tether: metrics on ").unwrap_or_else(|| panic!("unexpected: {line:?}")).to_owned();
    assert!(metrics.starts_with("http://127.0.0.1:") && metrics.ends_with("/metrics"), "{metrics}");

    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(30)))
        .build()
        .into();
    assert_eq!(agent.get(format!("{base}/healthz")).call().expect("healthz").status(), 200);
    let mut answer = agent.get(&metrics).call().expect("metrics");
    assert_eq!(answer.status(), 200);
    let text = answer.body_mut().read_to_string().expect("text");
    assert!(text.contains("tether_http_requests_total"), "{text}");
    assert!(text.contains(r#"route="/healthz""#), "the main port's requests are counted: {text}");
    let mut answer = agent.get(format!("{base}/metrics")).call().expect("metrics on the main port");
    assert_eq!(answer.status(), 404);
    assert_eq!(answer.body_mut().read_json::<Value>().expect("JSON")["error"]["code"], "not_found");
    // The metrics listener serves nothing else of the API.
    let elsewhere = metrics.replace("/metrics", "/v1/episodes");
    assert_eq!(agent.get(elsewhere).call().expect("an answer").status(), 404);
}

/// `--epr-fhir` with its token: refused when the URL would send the token in the clear,
/// when the token file is empty, or when a token has nowhere to go, each error free of
/// the token; accepted on loopback, where it turns filing on for the database, and a
/// server started without it turns filing off. The token is never logged.
fn serve_takes_the_epr_and_its_token_and_never_shows_the_token() {
    let test_db = common::TestDb::new();
    let db = test_db.arg.as_str();
    let token = "epr-token-that-must-never-be-shown";
    let token_file = test_db.path().join("epr-token");
    std::fs::write(&token_file, format!("{token}\n")).expect("the token file");
    let empty_file = test_db.path().join("empty-token");
    std::fs::write(&empty_file, "\n").expect("an empty file");
    let token_path = token_file.to_str().expect("a UTF-8 path");
    let empty_path = empty_file.to_str().expect("a UTF-8 path");

    let refused = |args: &[&str], env_token: Option<&str>, says: &str| {
        let mut command = Command::new(env!("CARGO_BIN_EXE_tether"));
        command.args(["serve", "--db", db, "--addr", "127.0.0.1:0"]).args(args).env("TETHER_LOG", "info");
        command.env_remove("TETHER_EPR_TOKEN").env_remove("TETHER_EPR_FHIR").env_remove("TETHER_EPR_TOKEN_FILE");
        if let Some(value) = env_token {
            command.env("TETHER_EPR_TOKEN", value);
        }
        let output = signing(&mut command, &test_db).stdin(Stdio::null()).output().expect("run tether serve");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{args:?} was accepted");
        assert!(stderr.contains(says), "{args:?}: {stderr}");
        assert!(!stderr.contains(token), "the token was shown: {stderr}");
    };
    refused(&["--epr-fhir", "http://epr.example.org/fhir", "--epr-token-file", token_path], None, "--epr-fhir");
    refused(&["--epr-fhir", "http://127.0.0.1:9/fhir", "--epr-token-file", empty_path], None, "holds no token");
    refused(&[], Some(token), "without --epr-fhir");
    refused(
        &["--epr-fhir", "http://127.0.0.1:9/fhir", "--epr-token-file", token_path],
        Some(token),
        "cannot be used with",
    );

    let start = |args: &[&str]| {
        let mut command = Command::new(env!("CARGO_BIN_EXE_tether"));
        command.args(["serve", "--db", db, "--addr", "127.0.0.1:0"]).args(args).env("TETHER_LOG", "info");
        command.env_remove("TETHER_EPR_TOKEN").env_remove("TETHER_EPR_FHIR").env_remove("TETHER_EPR_TOKEN_FILE");
        let (mut server, _, _) = common::serve(signing(&mut command, &test_db).stderr(Stdio::piped()));
        // Filing is set before the server listens: it may stop at once (a graceful stop
        // is the other test's; a signal this early may come before its handler).
        server.0.kill().expect("stop the server");
        server.0.wait().expect("wait");
        let mut stderr = String::new();
        std::io::Read::read_to_string(&mut server.0.stderr.take().expect("stderr is piped"), &mut stderr)
            .expect("the log");
        assert!(!stderr.contains(token), "the token was logged: {stderr}");
        stderr
    };
    let filing = || {
        let db = test_db.open();
        db.call_blocking(|conn| server::epr::filing(conn)).expect("the setting")
    };
    let log = start(&["--epr-fhir", "http://127.0.0.1:9/fhir", "--epr-token-file", token_path]);
    assert!(log.contains("filing records in the EPR"), "{log}");
    assert!(filing(), "filing on");
    start(&[]);
    assert!(!filing(), "filing off without --epr-fhir");
}

common::backends_blocking!(
    serve_takes_the_epr_and_its_token_and_never_shows_the_token,
    serve_signs_in_over_http_and_stops_on_sigterm,
    metrics_are_served_on_their_own_address_and_not_on_the_main_port,
);
