//! `tether`: the server's command line.
//!
//! - `tether pathway evaluate --now TIME`: episode JSON on stdin, evaluation JSON on
//!   stdout; bad input is a non-zero exit and a message on stderr.
//! - `tether pathway rules`: the rule table with every local default.
//!
//! `serve`, `team` and `user` come with the sync issue.

use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use episode::pathway::{self, Calendar, Defaults};

#[derive(Debug, Parser)]
#[command(name = "tether", version, about = "Tether: the disengagement pathway, for teams that visit without signal")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// The disengagement pathway's rules.
    #[command(subcommand)]
    Pathway(PathwayCommand),
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
    /// Print the rule table and the value of every local default.
    Rules {
        /// A JSON file of local defaults to override.
        #[arg(long, env = "TETHER_PATHWAY_DEFAULTS")]
        defaults: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
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
