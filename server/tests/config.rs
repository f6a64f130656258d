//! `tether serve --config FILE` and `--print-config`, as a real process: the precedence
//! flag > environment > file > default, unknown keys refused by name, secrets never
//! printed, and a server that takes its address and database from the file.

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};

const SECRET: &str = "a-signing-secret-that-is-long-enough-0123456789";
const DB_PASSWORD: &str = "hunter2-db-password";
const METRICS: &str = "a-metrics-token-0123456789";

/// `tether ARGS` with none of the settings' variables from the caller's environment.
fn tether(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_tether"));
    for (key, _) in std::env::vars() {
        if key.starts_with("TETHER_") {
            command.env_remove(key);
        }
    }
    command.args(args).envs(env.iter().copied()).output().expect("run tether")
}

fn write_config(dir: &Path, text: &str) -> String {
    let path = dir.join("tether.toml");
    std::fs::write(&path, text).expect("write the file");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    path.to_str().expect("a UTF-8 path").to_string()
}

fn line<'a>(printed: &'a str, key: &str) -> &'a str {
    printed.lines().find(|l| l.starts_with(&format!("{key} = "))).unwrap_or_else(|| panic!("no {key} in {printed}"))
}

#[test]
fn a_flag_beats_the_environment_which_beats_the_file_which_beats_the_default() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let config = write_config(
        dir.path(),
        "addr = \"127.0.0.1:7001\"\nheader_timeout_secs = 21\nidle_timeout_secs = 31\n\
         tls_cert = \"/etc/tether/cert.pem\"\ntls_key = \"/etc/tether/key.pem\"\nlog_format = \"json\"\n\
         trusted_proxies = [\"10.0.0.1\", \"10.0.0.2\"]\ndemo = true\n",
    );
    let out = tether(
        &["serve", "--config", &config, "--print-config", "--header-timeout-secs", "22"],
        &[("TETHER_HEADER_TIMEOUT_SECS", "23"), ("TETHER_IDLE_TIMEOUT_SECS", "32")],
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let printed = String::from_utf8(out.stdout).expect("UTF-8");
    assert_eq!(line(&printed, "header_timeout_secs"), "header_timeout_secs = 22  # flag");
    assert_eq!(line(&printed, "idle_timeout_secs"), "idle_timeout_secs = 32  # environment (TETHER_IDLE_TIMEOUT_SECS)");
    assert_eq!(line(&printed, "addr"), "addr = \"127.0.0.1:7001\"  # file");
    assert_eq!(line(&printed, "trusted_proxies"), "trusted_proxies = [\"10.0.0.1\", \"10.0.0.2\"]  # file");
    assert_eq!(line(&printed, "demo"), "demo = true  # file");
    assert_eq!(line(&printed, "slow_body_secs"), "slow_body_secs = 10  # default");
    assert_eq!(line(&printed, "tls_key"), "tls_key = \"/etc/tether/key.pem\"  # file");
    assert_eq!(line(&printed, "log_format"), "log_format = \"json\"  # file");

    // What it prints is a file it reads back to the same settings.
    let again = write_config(dir.path(), &printed);
    let out = tether(&["serve", "--config", &again, "--print-config"], &[]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let reprinted = String::from_utf8(out.stdout).expect("UTF-8");
    let values = |text: &str| text.lines().map(|l| l.split("  #").next().unwrap_or("").to_string()).collect::<Vec<_>>();
    assert_eq!(values(&reprinted), values(&printed));
}

#[test]
fn print_config_masks_every_secret_wherever_it_came_from() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let config = write_config(
        dir.path(),
        &format!("db = \"postgres://tether:{DB_PASSWORD}@db.example/tether\"\njwt_secret = \"{SECRET}\"\n"),
    );
    let out = tether(
        &["serve", "--config", &config, "--print-config", "--metrics-token", METRICS],
        &[("TETHER_JWT_PREVIOUS_SECRETS", "an-old-secret-0123456789-0123456789")],
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let printed = String::from_utf8(out.stdout).expect("UTF-8");
    for secret in [SECRET, DB_PASSWORD, METRICS, "an-old-secret"] {
        assert!(!printed.contains(secret), "a secret printed: {printed}");
    }
    assert_eq!(line(&printed, "jwt_secret"), "jwt_secret = \"<redacted>\"  # file");
    assert_eq!(line(&printed, "metrics_token"), "metrics_token = \"<redacted>\"  # flag");
    assert!(line(&printed, "db").contains("db.example"), "{printed}");
}

#[test]
fn a_bad_file_is_refused_naming_the_key_and_never_a_secret() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    for (text, expected) in [
        ("adress = \"127.0.0.1:1\"\n", "unknown key `adress`"),
        ("config = \"other.toml\"\n", "unknown key `config`"),
        ("header_timeout_secs = 0\n", "`header_timeout_secs`: not a valid value"),
        ("addr = \"nowhere\"\n", "`addr`: not a valid value"),
        ("demo = \"yes\"\n", "`demo` must be true or false"),
        ("trusted_proxies = \"10.0.0.1\"\n", "`trusted_proxies` must be an array"),
        ("[serve]\naddr = 1\n", "unknown key `serve`"),
        ("addr = \n", "not valid TOML"),
        ("log_format = \"xml\"\n", "`log_format`: not a valid value"),
    ] {
        let config = write_config(dir.path(), text);
        let out = tether(&["serve", "--config", &config, "--print-config"], &[]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{text}: {stderr}");
        assert!(stderr.contains(expected), "{text}: {stderr}");
    }
}

#[test]
fn a_server_takes_its_address_and_database_from_the_file() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let db = dir.path().join("from-file.db");
    let config = write_config(
        dir.path(),
        &format!("db = {:?}\naddr = \"127.0.0.1:0\"\nlog = \"warn\"\n", db.to_str().expect("UTF-8")),
    );
    let mut child = Command::new(env!("CARGO_BIN_EXE_tether"))
        .args(["serve", "--config", &config])
        .env_remove("TETHER_DB")
        .env_remove("TETHER_ADDR")
        .env_remove("TETHER_JWT_SECRET")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start tether serve");
    let mut first = String::new();
    let read = BufReader::new(child.stdout.take().expect("stdout")).read_line(&mut first);
    let _ = child.kill();
    let _ = child.wait();
    read.expect("a line");
    assert!(first.starts_with("tether: listening on http://127.0.0.1:"), "{first}");
    assert!(db.exists(), "the file's database was made");
}
