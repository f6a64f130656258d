//! `tether`: the server's command line.
//!
//! - `tether pathway evaluate --now TIME`: episode JSON on stdin, evaluation JSON on
//!   stdout; bad input is a non-zero exit and a message on stderr.
//! - `tether pathway rules`: the rule table the rules are evaluated from, the warnings
//!   and every local default, as Markdown (with the defaults, `docs/rules.md`).
//!
//! - `tether serve [--config FILE] [--db PATH|URL] [--addr HOST:PORT] [--print-config]`: the
//!   HTTP server (see `server::serve`; its settings, `server::config`).
//!   Every command's `--db` is a SQLite file's path or a `postgres://` URL.
//! - `tether team add --db PATH --id ID --name NAME`: adds a team.
//! - `tether user add --db PATH --username NAME --role ROLE --team ID [--team ID …]`: adds
//!   a user; the password comes from `TETHER_PASSWORD`, or else the first line of stdin.
//! - `tether user disable|enable --db PATH --username NAME`: stops a user's sign-ins and
//!   ends every session they have, for good (or lets them sign in anew).
//! - `tether user list --db PATH`: every user, their role, teams, whether disabled, and
//!   how they sign in (a password, or an identity provider).
//! - `tether user reset-password --db PATH --username NAME`: a local user's new password,
//!   from `TETHER_PASSWORD` or the first line of stdin.
//! - `tether backup --db PATH --to FILE [--force]`: a consistent copy of a SQLite database
//!   while a server runs on it (`server::backup`).
//! - `tether restore --from FILE --db PATH [--force]`: puts a backup in place, with no
//!   server running on it.
//! - `tether audit verify --db PATH`: checks the audit log's hash chain; exit 0 when it
//!   holds, 1 naming the first broken entry.

use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use episode::pathway::{self, Calendar, Defaults};
use server::accounts::{self, AccountError, Password, Role, TeamId, Username};
use server::config::ServeConfig;
use server::store::{Db, StoreError, Target};

#[derive(Debug, Parser)]
#[command(name = "tether", version, about = "Tether: the disengagement pathway, for teams that visit without signal")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the HTTP server.
    Serve(Box<ServeConfig>),
    /// Manage teams.
    #[command(subcommand)]
    Team(TeamCommand),
    /// Manage users.
    #[command(subcommand)]
    User(UserCommand),
    /// The disengagement pathway's rules.
    #[command(subcommand)]
    Pathway(PathwayCommand),
    /// The audit log.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Copy a SQLite database, consistently, while a server runs on it.
    Backup {
        #[command(flatten)]
        db: DbArg,
        /// The backup file to write (0600; refused if it exists, unless --force).
        #[arg(long)]
        to: PathBuf,
        /// Replace an existing backup file.
        #[arg(long)]
        force: bool,
    },
    /// Put a backup in place as a database (with no server running on it).
    Restore {
        /// The backup file (from `tether backup`).
        #[arg(long)]
        from: PathBuf,
        #[command(flatten)]
        db: DbArg,
        /// Replace an existing database.
        #[arg(long)]
        force: bool,
    },
    /// Messages owed to systems outside the server (records to file in the EPR, alerts).
    #[command(subcommand)]
    Outbox(OutboxCommand),
}

#[derive(Debug, Subcommand)]
enum OutboxCommand {
    /// Make the messages that failed for good due again, their attempts counted afresh:
    /// once the receiver is mended, or its refusal understood. The next worker pass of a
    /// running server sends them.
    Retry {
        #[command(flatten)]
        db: DbArg,
        /// The kind of message: `epr`, or an alert's kind.
        #[arg(long, default_value = "epr")]
        kind: String,
        /// Only this episode's.
        #[arg(long)]
        episode: Option<episode::EpisodeId>,
    },
}

#[derive(Debug, Subcommand)]
enum AuditCommand {
    /// Check the audit log's hash chain: exit 0 when it holds, else name the first entry
    /// that was edited, deleted or inserted (exit 1).
    Verify {
        #[command(flatten)]
        db: DbArg,
    },
}

#[derive(Debug, Clone, clap::Args)]
struct DbArg {
    /// The server's database: a SQLite file (created if need be) or a
    /// `postgres://USER[:PASSWORD]@HOST[:PORT]/DB` URL; migrated if need be.
    #[arg(long, env = "TETHER_DB", default_value = "tether.db", hide_env_values = true)]
    db: Target,
}

#[derive(Debug, Subcommand)]
enum TeamCommand {
    /// Add a team.
    Add {
        #[command(flatten)]
        db: DbArg,
        /// The team's id, such as `team-north`.
        #[arg(long)]
        id: TeamId,
        /// The team's name, as people call it.
        #[arg(long)]
        name: String,
    },
}

#[derive(Debug, Subcommand)]
enum UserCommand {
    /// Add a user. The password comes from TETHER_PASSWORD, or else the first line of stdin.
    Add {
        #[command(flatten)]
        db: DbArg,
        #[arg(long)]
        username: Username,
        #[arg(long, value_enum)]
        role: Role,
        /// A team the user belongs to (repeat for several).
        #[arg(long = "team", required = true)]
        teams: Vec<TeamId>,
    },
    /// Stop a user's sign-ins and every token they hold.
    Disable {
        #[command(flatten)]
        db: DbArg,
        #[arg(long)]
        username: Username,
    },
    /// Let a disabled user sign in again.
    Enable {
        #[command(flatten)]
        db: DbArg,
        #[arg(long)]
        username: Username,
    },
    /// List every user: role, teams, disabled or not, and how they sign in.
    List {
        #[command(flatten)]
        db: DbArg,
    },
    /// Give a local user a new password (TETHER_PASSWORD, or else the first line of stdin).
    /// Their sessions on devices and dashboards carry on; disable and enable them to end
    /// those too.
    ResetPassword {
        #[command(flatten)]
        db: DbArg,
        #[arg(long)]
        username: Username,
    },
}

#[derive(Debug, Subcommand)]
enum PathwayCommand {
    /// Evaluate an episode: episode JSON on stdin, evaluation JSON on stdout.
    Evaluate {
        /// The moment to evaluate at, RFC 3339 with an offset (e.g. 2026-03-02T09:30:00Z).
        #[arg(long)]
        now: String,
        /// A JSON file of local defaults to override (see `tether pathway rules`).
        #[arg(long, env = "TETHER_PATHWAY_DEFAULTS")]
        defaults: Option<PathBuf>,
    },
    /// Print the rule table (the one the rules are evaluated from), the warnings and the
    /// value of every local default, as Markdown.
    Rules {
        /// A JSON file of local defaults to override.
        #[arg(long, env = "TETHER_PATHWAY_DEFAULTS")]
        defaults: Option<PathBuf>,
    },
}

/// The command line, with `tether serve`'s settings file read in below its flags and
/// environment; `--print-config` prints them and exits here.
fn parse() -> Result<Cli, String> {
    let command = Cli::command();
    let mut matches = command.clone().get_matches();
    let mut from_file = std::collections::BTreeSet::new();
    if let Some(("serve", serve)) = matches.subcommand() {
        let spec = command.find_subcommand("serve").ok_or("the serve command is missing")?;
        if let Some(path) = serve.get_one::<PathBuf>("config") {
            let (flags, keys) = server::config::file_flags(spec, serve, path).map_err(|e| format!("{e:#}"))?;
            from_file = keys;
            let argv: Vec<std::ffi::OsString> = std::env::args_os().chain(flags).collect();
            matches = command.clone().try_get_matches_from(argv).unwrap_or_else(|e| e.exit());
        }
        if let Some(("serve", serve)) = matches.subcommand()
            && serve.get_flag("print_config")
        {
            print!("{}", server::config::render(spec, serve, &from_file));
            std::process::exit(0);
        }
    }
    Cli::from_arg_matches(&matches).map_err(|e| e.to_string())
}

fn main() -> ExitCode {
    let cli = match parse() {
        Ok(cli) => cli,
        Err(message) => {
            eprintln!("tether: {message}");
            return ExitCode::from(2);
        }
    };
    let result = match cli.command {
        Command::Audit(AuditCommand::Verify { db }) => return audit_verify(&db.db),
        Command::Serve(config) => serve(*config),
        Command::Backup { db, to, force } => server::backup::backup(&db.db, &to, force, Default::default())
            .map(|c| println!("tether: backed up {} pages (schema {}) to {}", c.pages, c.schema, to.display()))
            .map_err(|e| format!("{e:#}")),
        Command::Restore { from, db, force } => server::backup::restore(&from, &db.db, force)
            .map(|c| {
                println!(
                    "tether: restored {} (schema {}) as {}; the server upgrades it at start",
                    from.display(),
                    c.schema,
                    db.db
                )
            })
            .map_err(|e| format!("{e:#}")),
        Command::Outbox(OutboxCommand::Retry { db, kind, episode }) => outbox_retry(&db.db, &kind, episode),
        Command::Team(TeamCommand::Add { db, id, name }) => team_add(&db.db, &id, &name),
        Command::User(UserCommand::Add { db, username, role, teams }) => user_add(&db.db, &username, role, &teams),
        Command::User(UserCommand::Disable { db, username }) => user_disable(&db.db, &username, true),
        Command::User(UserCommand::Enable { db, username }) => user_disable(&db.db, &username, false),
        Command::User(UserCommand::List { db }) => user_list(&db.db),
        Command::User(UserCommand::ResetPassword { db, username }) => reset_password(&db.db, &username),
        Command::Pathway(PathwayCommand::Evaluate { now, defaults }) => evaluate(&now, defaults.as_deref()),
        Command::Pathway(PathwayCommand::Rules { defaults }) => rules(defaults.as_deref()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("tether: {message}");
            ExitCode::from(2)
        }
    }
}

fn load_defaults(path: Option<&std::path::Path>) -> Result<Defaults, String> {
    let Some(path) = path else { return Ok(Defaults::default()) };
    let text =
        std::fs::read_to_string(path).map_err(|e| format!("cannot read local defaults {}: {e}", path.display()))?;
    Defaults::from_json(&text)
}

fn evaluate(now: &str, defaults: Option<&std::path::Path>) -> Result<(), String> {
    let now = episode::json::time::parse(now).map_err(|m| format!("--now: {m}"))?;
    let defaults = load_defaults(defaults)?;
    let mut input = String::new();
    std::io::stdin().read_to_string(&mut input).map_err(|e| format!("cannot read the episode from stdin: {e}"))?;
    let episode = episode::Episode::from_json(&input).map_err(|e| e.to_string())?;
    let evaluation = pathway::evaluate_with(&episode, now, &Calendar::england_and_wales(), &defaults);
    let json = serde_json::to_string_pretty(&evaluation).map_err(|e| format!("cannot write the evaluation: {e}"))?;
    println!("{json}");
    Ok(())
}

fn rules(defaults: Option<&std::path::Path>) -> Result<(), String> {
    let defaults = load_defaults(defaults)?;
    print!("{}", pathway::table::render(&defaults));
    Ok(())
}

fn serve(config: ServeConfig) -> Result<(), String> {
    server::serve::init_logging(&config.log, config.log_format).map_err(|e| format!("{e:#}"))?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))?;
    runtime.block_on(server::serve::run(config)).map_err(|e| format!("{e:#}"))
}

fn outbox_retry(target: &Target, kind: &str, episode: Option<episode::EpisodeId>) -> Result<(), String> {
    let now = jiff::Timestamp::now();
    let made = in_transaction(target, |tx| server::outbox::retry(tx, kind, episode, now).map_err(store_error))?;
    println!("{made} failed {kind} message(s) due again");
    Ok(())
}

fn open_db(target: &Target) -> Result<Db, String> {
    Db::open(target).map_err(|e| format!("cannot open the database {target}: {e}"))
}

fn account_error(e: AccountError) -> String {
    match e {
        AccountError::Store(e) => format!("database error: {e}"),
        other => other.to_string(),
    }
}

fn store_error(e: StoreError) -> String {
    format!("database error: {e}")
}

/// Runs `f` in one transaction on the database `target` names, committed if it succeeds.
fn in_transaction<T: Send>(
    target: &Target,
    f: impl FnOnce(&mut dyn server::store::Tx) -> Result<T, String> + Send,
) -> Result<T, String> {
    open_db(target)?
        .call_blocking(|conn| {
            let mut tx = conn.transaction()?;
            let out = f(&mut *tx);
            if out.is_ok() {
                tx.commit()?;
            }
            Ok::<_, StoreError>(out)
        })
        .map_err(store_error)?
}

fn team_add(target: &Target, id: &TeamId, name: &str) -> Result<(), String> {
    in_transaction(target, |tx| accounts::add_team(tx, id, name, jiff::Timestamp::now()).map_err(account_error))?;
    println!("{id}");
    Ok(())
}

/// The new user's password: `TETHER_PASSWORD`, or else the first line of stdin.
fn read_password() -> Result<Password, String> {
    let text = match std::env::var("TETHER_PASSWORD") {
        Ok(text) => text,
        Err(std::env::VarError::NotUnicode(_)) => return Err("TETHER_PASSWORD is not valid UTF-8".into()),
        Err(std::env::VarError::NotPresent) => {
            let mut line = String::new();
            std::io::stdin().read_line(&mut line).map_err(|e| format!("cannot read the password from stdin: {e}"))?;
            let line = line.strip_suffix('\n').unwrap_or(&line);
            line.strip_suffix('\r').unwrap_or(line).to_string()
        }
    };
    Password::new(text).map_err(|e| format!("{e}: give it in TETHER_PASSWORD or on stdin"))
}

fn user_add(target: &Target, username: &Username, role: Role, teams: &[TeamId]) -> Result<(), String> {
    let password = read_password()?;
    let hash = server::auth::password::hash(&password).map_err(|e| format!("cannot hash the password: {e}"))?;
    let id = in_transaction(target, |tx| {
        accounts::add_user(tx, username, &hash, role, teams, jiff::Timestamp::now()).map_err(account_error)
    })?;
    println!("{id}");
    Ok(())
}

fn user_disable(target: &Target, username: &Username, disabled: bool) -> Result<(), String> {
    let now = jiff::Timestamp::now().as_second();
    in_transaction(target, |tx| accounts::set_disabled(tx, username, disabled, now).map_err(account_error))
}

/// Exit 0 and the chain's length and head when it holds; exit 1 naming the first broken
/// entry when it does not; exit 2 when the database cannot be read.
fn audit_verify(target: &Target) -> ExitCode {
    let checked = open_db(target).and_then(|db| {
        db.call_blocking(|conn| server::audit::verify(conn)).map_err(|e| format!("cannot read the audit log: {e}"))
    });
    match checked {
        Ok(Ok(chain)) => {
            println!(
                "the audit log holds: {} entries, chained; head {}",
                chain.entries,
                server::auth::token::to_hex(&chain.head)
            );
            ExitCode::SUCCESS
        }
        Ok(Err(broken)) => {
            eprintln!("tether: {broken}");
            ExitCode::from(1)
        }
        Err(message) => {
            eprintln!("tether: {message}");
            ExitCode::from(2)
        }
    }
}

fn user_list(target: &Target) -> Result<(), String> {
    let users = in_transaction(target, |tx| accounts::list_users(tx).map_err(store_error))?;
    let mut out = String::from("username\trole\tteams\tsigns_in_with\tdisabled\n");
    for user in users {
        out.push_str(&format!(
            "{}\t{}\t{}\t{}\t{}\n",
            user.username,
            user.role.as_str(),
            user.teams.iter().map(|team| team.as_str()).collect::<Vec<_>>().join(","),
            user.signs_in_with,
            if user.disabled { "yes" } else { "no" }
        ));
    }
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(out.as_bytes()).and_then(|()| stdout.flush()).map_err(|e| format!("cannot write the list: {e}"))
}

fn reset_password(target: &Target, username: &Username) -> Result<(), String> {
    let password = read_password()?;
    let hash = server::auth::password::hash(&password).map_err(|e| format!("cannot hash the password: {e}"))?;
    in_transaction(target, |tx| {
        accounts::set_password(tx, username, &hash).map_err(account_error)?;
        // A new password clears the username's failed sign-ins from every client.
        server::auth::store::clear_username_failures(tx, username.as_str()).map_err(store_error)
    })
}
