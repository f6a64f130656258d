//! `tether serve`: logging, the database, the listener, and a graceful shutdown on
//! ctrl-c or SIGTERM (requests in flight are answered; the database closes cleanly).

use std::io::IsTerminal;

use anyhow::Context;
use tokio::net::TcpListener;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::prelude::*;

use crate::config::ServeConfig;
use crate::{AppState, Clock, app, db};

/// Logs go to stderr as text, filtered by `filter` (`info`, `warn,server=debug`, …).
pub fn init_logging(filter: &str) -> anyhow::Result<()> {
    let targets: Targets = filter.parse().with_context(|| "TETHER_LOG / --log is not a valid log filter")?;
    let layer =
        tracing_subscriber::fmt::layer().with_writer(std::io::stderr).with_ansi(std::io::stderr().is_terminal());
    // A second call (tests) keeps the first subscriber.
    let _ = tracing_subscriber::registry().with(layer.with_filter(targets)).try_init();
    Ok(())
}

/// Runs the server until ctrl-c or SIGTERM.
pub async fn run(config: ServeConfig) -> anyhow::Result<()> {
    let path = config.db.clone();
    let conn = tokio::task::spawn_blocking(move || db::open(&path))
        .await?
        .with_context(|| format!("cannot open the database {}", config.db.display()))?;
    let state = AppState::new(conn, config.jwt_secret.as_ref(), Clock::system())?;
    let listener = TcpListener::bind(config.addr).await.with_context(|| format!("cannot listen on {}", config.addr))?;
    let addr = listener.local_addr()?;
    tracing::info!(%addr, db = %config.db.display(), "listening");
    // One stable line on stdout for scripts and tests that start the server on port 0.
    {
        use std::io::Write;
        let mut stdout = std::io::stdout().lock();
        // Nobody reading stdout is no reason to stop serving.
        let _ = writeln!(stdout, "tether: listening on http://{addr}").and_then(|()| stdout.flush());
    }
    axum::serve(listener, app(state)).with_graceful_shutdown(shutdown_signal()).await?;
    tracing::info!("stopped");
    Ok(())
}

/// Resolves at the first ctrl-c or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for ctrl-c");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => tracing::info!("ctrl-c: shutting down"),
        () = terminate => tracing::info!("SIGTERM: shutting down"),
    }
}
