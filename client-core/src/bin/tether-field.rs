//! `tether-field`: the client core on the command line, a phone without the phone.
//!
//! Everything but `login` and `sync` works with no network at all; `sync` is
//! offline-first: a failed sync loses nothing. The store key comes from `TETHER_STORE_KEY` (64 hexadecimal digits);
//! without it, a key is made on first use and kept beside the store in `store.key`
//! (a phone keeps it in the Android Keystore or the iOS Keychain instead).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use client_core::http::Http;
use client_core::{Core, NewEpisode, StoreKey};
use episode::{FactField, FactValue, Pathway, PatientRef};
use jiff::Timestamp;
use serde_json::{Map, Value};

#[derive(Debug, Parser)]
#[command(name = "tether-field", version, about = "Tether on a practitioner's device, offline first")]
struct Cli {
    /// The store directory.
    #[arg(long, env = "TETHER_STORE")]
    store: PathBuf,
    /// Who records, on a store that has never signed in (remembered once given). Once
    /// someone has signed in (`login`), every record is by the signed-in user and this
    /// may only name them.
    #[arg(long, env = "TETHER_USER")]
    user: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Open an episode; prints its id.
    Open {
        #[arg(long)]
        patient: String,
        #[arg(long)]
        pathway: String,
        #[arg(long)]
        team: String,
        /// Other facts, as FIELD=VALUE (e.g. risk=high, children=true).
        #[arg(long = "fact")]
        facts: Vec<String>,
        #[arg(long, default_value = "")]
        plan: String,
    },
    /// Record an event; prints its id.
    Record {
        episode: String,
        kind: String,
        /// When it happened (RFC 3339 with an offset); now if not given.
        #[arg(long)]
        at: Option<String>,
        /// The kind's own fields as a JSON object, e.g. '{"method": "phone", …}'.
        #[arg(long)]
        json: Option<String>,
    },
    /// Set a fact (recorded on the timeline too).
    Set { episode: String, field: String, value: String },
    /// Replace the joint plan's text.
    Plan { episode: String, text: String },
    /// The device's episodes, as JSON.
    Episodes {
        #[arg(long)]
        now: Option<String>,
    },
    /// One episode, as episode JSON.
    Show { episode: String },
    /// An episode's actions at the device's clock (provisional), as evaluation JSON.
    Actions {
        episode: String,
        #[arg(long)]
        now: Option<String>,
        /// The server's actions as of the last sync instead (authoritative).
        #[arg(long, conflicts_with = "now")]
        server: bool,
    },
    /// Sign in to a server on this device: with a username (password: TETHER_PASSWORD or
    /// stdin), or with `--oidc` through the trust's identity provider (prints the address
    /// to open in a browser, then reads the address the browser was sent back to).
    Login {
        #[arg(long)]
        server: String,
        #[arg(long, required_unless_present = "oidc", conflicts_with = "oidc")]
        username: Option<String>,
        /// Sign in with the trust's identity provider.
        #[arg(long)]
        oidc: bool,
        /// The provider, when the server has several.
        #[arg(long, requires = "oidc")]
        provider: Option<String>,
        /// The redirect URI to come back to (one the server has for phones); the server's
        /// first if not given.
        #[arg(long, requires = "oidc")]
        redirect_uri: Option<String>,
    },
    /// Sync with the server; prints a JSON summary. A failed sync loses nothing.
    Sync,
    /// The caseload's next actions, soonest first: what the phone's home screen shows.
    Next {
        #[arg(long)]
        now: Option<String>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(output) => {
            use std::io::Write;
            // A closed pipe (`| head`) is not an error worth a panic.
            let _ = writeln!(std::io::stdout().lock(), "{output}");
            ExitCode::SUCCESS
        }
        Err(message) => {
            eprintln!("tether-field: {message}");
            ExitCode::from(2)
        }
    }
}

fn run(cli: Cli) -> Result<String, String> {
    // Only a first episode or a first sign-in makes a store: any other command on a
    // directory without one (a typo in --store, say) would otherwise answer from a new,
    // empty store and a new device as if nothing had been recorded.
    let makes_a_store = matches!(cli.command, Command::Open { .. } | Command::Login { .. });
    if !makes_a_store && !cli.store.join(client_core::STORE_FILE).is_file() {
        return Err(format!(
            "there is no store in {}: `open` an episode or `login` to make one there (or check --store)",
            cli.store.display()
        ));
    }
    let key = store_key(&cli.store)?;
    let mut core = Core::open(&cli.store, &key).map_err(|e| e.to_string())?;
    if matches!(cli.command, Command::Open { .. } | Command::Record { .. } | Command::Set { .. }) {
        recording_user(&mut core, cli.user.as_deref())?;
    }
    match cli.command {
        Command::Open { patient, pathway, team, facts, plan } => {
            let patient_ref = PatientRef::new(patient).ok_or("--patient: the patient's identifier may not be empty")?;
            let pathway: Pathway = serde_json::from_value(Value::String(pathway.clone()))
                .map_err(|_| format!("--pathway: `{pathway}` is not a pathway (urgent_referral, routine_referral, in_service, home_treatment, child_not_brought)"))?;
            let facts = facts.iter().map(|f| parse_fact(f)).collect::<Result<Vec<_>, _>>()?;
            let id = core
                .open_episode(NewEpisode { patient_ref, pathway, team, facts, plan }, now())
                .map_err(|e| e.to_string())?;
            Ok(id.to_string())
        }
        Command::Record { episode, kind, at, json: fields } => {
            let id = episode_id(&episode)?;
            let at = time(at.as_deref(), "--at")?;
            let fields = match fields {
                None => Map::new(),
                // A key given twice is refused, not left to serde_json's "the last wins".
                Some(text) => match episode::json::parse_value(text.as_bytes()) {
                    Ok(Value::Object(map)) => map,
                    Err(message) if message.contains("twice") => return Err(format!("--json: {message}")),
                    _ => return Err("--json: give the event's fields as a JSON object".into()),
                },
            };
            let event = core.record(id, &kind, fields, at).map_err(|e| e.to_string())?;
            Ok(event.to_string())
        }
        Command::Set { episode, field, value } => {
            let id = episode_id(&episode)?;
            let field = FactField::from_name(&field).ok_or_else(|| format!("`{field}` is not a fact"))?;
            let value = serde_json::from_str(&value).unwrap_or(Value::String(value));
            let event = core.set_fact(id, field, &value, now()).map_err(|e| e.to_string())?;
            Ok(event.to_string())
        }
        Command::Plan { episode, text } => {
            core.set_plan(episode_id(&episode)?, &text, now()).map_err(|e| e.to_string())?;
            Ok(String::new())
        }
        Command::Episodes { now } => {
            let now = evaluation_time(&core, now.as_deref())?;
            Ok(json(&core.episodes(now)))
        }
        Command::Show { episode } => {
            Ok(json(&core.episode(episode_id(&episode)?).map_err(|e| e.to_string())?.to_json()))
        }
        Command::Actions { episode, server: true, .. } => {
            match core.server_actions(episode_id(&episode)?).map_err(|e| e.to_string())? {
                Some(actions) => Ok(json(&actions)),
                None => Err("the server's actions are not here yet: sync first".into()),
            }
        }
        Command::Actions { episode, now, server: false } => {
            let now = evaluation_time(&core, now.as_deref())?;
            Ok(json(&core.actions(episode_id(&episode)?, now).map_err(|e| e.to_string())?))
        }
        Command::Login { server, username: Some(username), .. } => {
            let password = password()?;
            let http = Http::new(&server);
            http.login(&mut core, &username, &password, now()).map_err(|e| e.to_string())?;
            Ok(json(&serde_json::json!({"signed_in": username, "device": core.device()})))
        }
        Command::Login { server, username: None, provider, redirect_uri, .. } => {
            let http = Http::new(&server);
            let authorization = http
                .begin_identity_sign_in(&mut core, provider.as_deref(), redirect_uri.as_deref(), now())
                .map_err(|e| e.to_string())?;
            {
                use std::io::Write;
                eprintln!(
                    "tether-field: open this address in a browser and sign in; then paste the address the browser \
                     was sent to ({}…) here:",
                    authorization.redirect_uri
                );
                let mut stdout = std::io::stdout().lock();
                writeln!(stdout, "{}", authorization.authorization_url)
                    .and_then(|()| stdout.flush())
                    .map_err(|e| format!("cannot print the address: {e}"))?;
            }
            let mut redirect = String::new();
            std::io::stdin()
                .read_line(&mut redirect)
                .map_err(|e| format!("cannot read the redirect from stdin: {e}"))?;
            if redirect.trim().is_empty() {
                return Err(
                    "no redirect was given: the sign-in stays pending; run `login --oidc` again to restart".into()
                );
            }
            let username = http.finish_identity_sign_in(&mut core, &redirect, now()).map_err(|e| e.to_string())?;
            core.set_setting("user", &username).map_err(|e| e.to_string())?;
            Ok(json(&serde_json::json!({"signed_in": username, "device": core.device()})))
        }
        Command::Sync => {
            let http = Http::for_core(&core).map_err(|e| e.to_string())?;
            match http.sync(&mut core, Timestamp::now) {
                Ok(summary) => Ok(json(&summary)),
                Err(client_core::Error::DeviceRevoked) => {
                    core.wipe().map_err(|e| e.to_string())?;
                    Err("this device has been revoked by a manager: its store has been wiped".into())
                }
                Err(e) => Err(e.to_string()),
            }
        }
        Command::Next { now } => {
            let now = evaluation_time(&core, now.as_deref())?;
            Ok(json(&core.next_actions(now)))
        }
    }
}

/// Makes sure the core knows who records: the signed-in user (then `--user` may only name
/// them), or, on a store that has never signed in, the name `--user` gives (kept).
fn recording_user(core: &mut Core, given: Option<&str>) -> Result<(), String> {
    let signed_in = client_core::remote::signed_in_user(core).map_err(|e| e.to_string())?;
    match (signed_in, given) {
        (Some(user), Some(given)) if given != user => Err(format!(
            "{user} is signed in on this store, and records are by the signed-in user: sign in as {given} to \
             record as them (--user and TETHER_USER are only for a store that has never signed in)"
        )),
        (Some(_), _) => Ok(()),
        (None, Some(given)) => core.set_offline_user(given).map_err(|e| e.to_string()),
        (None, None) => {
            // Stores of earlier versions kept the name given under this setting.
            if core.user().map_err(|e| e.to_string())?.is_none()
                && let Some(before) = core.setting("user").map_err(|e| e.to_string())?
            {
                core.set_offline_user(&before).map_err(|e| e.to_string())?;
            }
            match core.user().map_err(|e| e.to_string())? {
                Some(_) => Ok(()),
                None => Err("who is recording? sign in with `login`, or on a store that has never signed in \
                             give --user (or TETHER_USER)"
                    .into()),
            }
        }
    }
}

/// The password from TETHER_PASSWORD, or the first line of standard input.
fn password() -> Result<String, String> {
    if let Ok(password) = std::env::var("TETHER_PASSWORD") {
        return Ok(password);
    }
    let mut line = String::new();
    std::io::stdin().read_line(&mut line).map_err(|e| format!("cannot read the password: {e}"))?;
    let password = line.trim_end_matches(['\n', '\r']).to_string();
    if password.is_empty() {
        return Err("give the password in TETHER_PASSWORD or on standard input".into());
    }
    Ok(password)
}

/// The core's answers as pretty JSON.
fn json<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_string_pretty(value).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
}

fn store_key(store: &Path) -> Result<StoreKey, String> {
    if let Ok(hex) = std::env::var("TETHER_STORE_KEY") {
        return StoreKey::from_hex(&hex)
            .ok_or_else(|| "TETHER_STORE_KEY must be 64 hexadecimal digits (32 bytes)".into());
    }
    let path = store.join("store.key");
    match std::fs::read_to_string(&path) {
        Ok(hex) => StoreKey::from_hex(&hex).ok_or_else(|| format!("{} does not hold a key", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir_all(store).map_err(|e| format!("cannot create {}: {e}", store.display()))?;
            let key = StoreKey::generate().map_err(|e| e.to_string())?;
            write_private(&path, &key.to_hex())
                .map_err(|e| format!("cannot keep the key in {}: {e}", path.display()))?;
            eprintln!(
                "tether-field: made a store key and kept it in {} (set TETHER_STORE_KEY to use your own)",
                path.display()
            );
            Ok(key)
        }
        Err(e) => Err(format!("cannot read {}: {e}", path.display())),
    }
}

/// Writes a file only its owner can read.
fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path)?;
    file.write_all(text.as_bytes())?;
    file.sync_all()
}

fn episode_id(text: &str) -> Result<episode::EpisodeId, String> {
    text.parse().map_err(|_| "the episode id is not a UUID".to_string())
}

/// The device's clock, to the second (records need no finer time).
fn now() -> Timestamp {
    let now = Timestamp::now();
    Timestamp::from_second(now.as_second()).unwrap_or(now)
}

/// The moment to evaluate at: `--now` if given, else the device's clock corrected by the
/// server's offset at the last sync (a phone whose clock is wrong still shows what is
/// overdue).
fn evaluation_time(core: &Core, now: Option<&str>) -> Result<Timestamp, String> {
    match now {
        Some(text) => time(Some(text), "--now"),
        None => core.corrected_now(self::now()).map_err(|e| e.to_string()),
    }
}

fn time(text: Option<&str>, flag: &str) -> Result<Timestamp, String> {
    match text {
        None => Ok(now()),
        Some(text) => episode::json::time::parse(text).map_err(|m| format!("{flag}: {m}")),
    }
}

fn parse_fact(text: &str) -> Result<(FactField, FactValue), String> {
    let (name, value) = text.split_once('=').ok_or("--fact: write FIELD=VALUE, e.g. risk=high")?;
    let field = FactField::from_name(name).ok_or_else(|| format!("--fact: `{name}` is not a fact"))?;
    let value = serde_json::from_str(value).unwrap_or(Value::String(value.into()));
    let value = FactValue::from_json(field, &value).map_err(|m| format!("--fact {name}: {m}"))?;
    Ok((field, value))
}
