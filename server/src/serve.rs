//! `tether serve`: logging, the database, the listener (`listen`: capped connections,
//! timeouts, metered bodies), and a graceful shutdown on ctrl-c or SIGTERM (requests in
//! flight are answered; the database closes cleanly).

use std::io::IsTerminal;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::prelude::*;

use crate::alerts::Alerts;
use crate::alerts::send::AlertSender;
use crate::config::ServeConfig;
use crate::{AppState, Clock, Db, app, auth, caseload, demo, epr, listen, metrics, outbox};

/// Logs go to stderr, filtered by `filter` (`info`, `warn,server=debug`, …): as text, or
/// as one JSON object a line (for a log collector), each line of a request carrying its
/// span's `request_id`.
pub fn init_logging(filter: &str, format: LogFormat) -> anyhow::Result<()> {
    let targets: Targets = filter.parse().with_context(|| "TETHER_LOG / --log is not a valid log filter")?;
    let layer = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    // A second call (tests) keeps the first subscriber.
    let _ = match format {
        LogFormat::Text => tracing_subscriber::registry()
            .with(layer.with_ansi(std::io::stderr().is_terminal()).with_filter(targets))
            .try_init(),
        LogFormat::Json => tracing_subscriber::registry()
            .with(layer.json().with_current_span(false).with_span_list(true).with_filter(targets))
            .try_init(),
    };
    Ok(())
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Text for a person at a terminal.
    #[default]
    Text,
    /// One JSON object a line.
    Json,
}

/// Runs the server until ctrl-c or SIGTERM.
pub async fn run(config: ServeConfig) -> anyhow::Result<()> {
    let sign_in = match &config.oidc_config {
        Some(path) => crate::oidc::SignIn::load(path)?,
        None => crate::oidc::SignIn::default(),
    };
    for provider in &sign_in.providers {
        tracing::info!(provider = %provider.settings.id, issuer = %provider.settings.issuer, "identity provider configured");
    }
    let fhir = crate::fhir::Settings::new(config.fhir_base.as_deref(), config.fhir_patient_system.as_deref())
        .map_err(anyhow::Error::msg)?;
    let target = config.db.clone();
    let db = tokio::task::spawn_blocking(move || Db::open(&target))
        .await?
        .with_context(|| format!("cannot open the database {}", config.db))?;
    if config.demo {
        let seeding = db.clone();
        let seeded =
            tokio::task::spawn_blocking(move || seeding.call_blocking(|conn| demo::seed(conn, jiff::Timestamp::now())))
                .await??;
        print_demo(seeded, &config.db);
    }
    let (secret, previous) = (config.jwt_secret.clone(), config.jwt_previous_secrets.clone());
    let (db, keys, head) = tokio::task::spawn_blocking(move || {
        let keys = auth::keys::load(&db, secret.as_ref(), previous.as_ref())?;
        let head = db.call_blocking(|conn| crate::audit::head(conn))?;
        anyhow::Ok((db, keys, head))
    })
    .await??;
    // The audit chain's head, in a log kept apart from the database: whoever rewrites
    // the chain from some entry on cannot make the heads logged before agree with it.
    tracing::info!(entries = head.entries, head = %auth::token::to_hex(&head.head), "audit chain");
    let mut state = AppState::with_keys(db, keys, Clock::system(), config.sync_batch)?.with_sign_in(sign_in);
    state
        .docs
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .set_budget(usize::try_from(config.cache_mib.saturating_mul(1024 * 1024)).unwrap_or(usize::MAX));
    state.fhir = std::sync::Arc::new(fhir);
    state.options = std::sync::Arc::new(config.options()?);
    let tls = match (&config.tls_cert, &config.tls_key) {
        (Some(cert), Some(key)) => {
            Some(crate::tls::Tls::load(crate::tls::Files { cert: cert.clone(), key: key.clone() })?)
        }
        _ => None,
    };
    let _tls_watch = tls.as_ref().map(|tls| tls.watch(Duration::from_secs(config.tls_reload_secs)));
    if let Some(path) = &config.alerts {
        let alerts = Alerts::load(path)?;
        tracing::info!(teams = alerts.teams.len(), "alerts configured");
        state.alerts = std::sync::Arc::new(alerts);
    }
    // Before listening: a refused flag stops the start, and nothing is stored meanwhile
    // that filing should have owed.
    let mut senders = AlertSender::both(&state.alerts);
    senders.extend(filing_sender(&config, &state).await?);
    // One worker per process sends what is owed, records to file and alerts alike; it
    // stops when `_outbox` is dropped, as `run` returns.
    let _outbox = crate::outbox::Worker::new(
        state.db.clone(),
        state.clock.clone(),
        senders,
        crate::outbox::Policy { lease: Duration::from_secs(config.outbox_lease_secs), ..Default::default() },
    )
    .start()?;
    let listener = TcpListener::bind(config.addr).await.with_context(|| format!("cannot listen on {}", config.addr))?;
    let addr = listener.local_addr()?;
    let metrics_listener = match config.metrics_addr {
        Some(at) => Some(TcpListener::bind(at).await.with_context(|| format!("cannot listen on {at} for metrics"))?),
        None => None,
    };
    let scheme = if tls.is_some() { "https" } else { "http" };
    tracing::info!(%addr, scheme, db = %config.db, "listening");
    // Stable lines on stdout for scripts and tests that start the server on port 0: the
    // main address first, then the metrics address if there is one.
    say(&format!("tether: listening on {scheme}://{addr}"));
    if let Some(metrics) = &metrics_listener {
        let at = metrics.local_addr()?;
        tracing::info!(%at, "metrics listening");
        say(&format!("tether: metrics on http://{at}/metrics"));
    }
    // On PostgreSQL, other replicas' writes drop the copies they make stale from this
    // one's cache; it stops when `_listener` is dropped, as `run` returns.
    let _listener = crate::episodes::listen(&state.db, &state.docs)?;
    let _reevaluation = spawn_reevaluation(state.clone(), Duration::from_secs(config.reevaluate_secs));
    let limits = config.limits();
    tracing::info!(max_connections = limits.max_connections, "limits");
    // One shutdown signal stops both listeners.
    let (stop, stopping) = tokio::sync::watch::channel(false);
    let stopped = |mut stopping: tokio::sync::watch::Receiver<bool>| async move {
        let _ = stopping.wait_for(|stop| *stop).await;
    };
    let _signal = AbortOnDrop(tokio::spawn(async move {
        shutdown_signal().await;
        let _ = stop.send(true);
    }));
    let metrics = metrics_listener.map(|listener| {
        // Prometheus and a health check: a few connections are plenty.
        let limits = listen::Limits { max_connections: 16, ..limits.clone() };
        tokio::spawn(listen::serve(
            listener,
            metrics::metrics_app(state.clone()),
            limits,
            None,
            stopped(stopping.clone()),
        ))
    });
    listen::serve(listener, app(state), limits, tls.map(|tls| tls.acceptor()), stopped(stopping)).await?;
    if let Some(metrics) = metrics {
        metrics.await??;
    }
    tracing::info!("stopped");
    Ok(())
}

/// One line on stdout, flushed. Nobody reading stdout is no reason to stop serving.
fn say(line: &str) {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    let _ = writeln!(stdout, "{line}").and_then(|()| stdout.flush());
}

/// Prints the demo's accounts, once, for the newcomer at the terminal.
fn print_demo(seeded: demo::Seeded, db: &crate::Target) {
    use std::io::Write;
    let mut out = String::new();
    match seeded {
        demo::Seeded::NotTheDemo => {
            out.push_str("tether: --demo: this database already has teams of its own; nothing was seeded\n");
        }
        demo::Seeded::Before => out.push_str(&format!(
            "tether: --demo: this database was seeded before; its accounts kept their passwords \
             (`tether user reset-password --db {db} --username NAME` gives one a new one)\n"
        )),
        demo::Seeded::Now(accounts) => {
            out.push_str("tether: demo accounts (the passwords are shown only now)\n");
            for account in accounts {
                out.push_str(&format!(
                    "  {:<6} {:<18} {:<12} {}\n",
                    account.username,
                    account.role.as_str(),
                    account.teams.join(","),
                    account.password
                ));
            }
        }
    }
    let mut stdout = std::io::stdout().lock();
    let _ = stdout.write_all(out.as_bytes()).and_then(|()| stdout.flush());
}

/// A background task that stops when this is dropped (when `run` returns).
#[derive(Debug)]
pub struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl AbortOnDrop {
    /// Spawns `task`, aborted when the result is dropped.
    pub fn spawn(task: impl std::future::Future<Output = ()> + Send + 'static) -> Self {
        Self(tokio::spawn(task))
    }
}

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Every `every`, remakes the summaries whose episodes changed or whose actions the clock
/// has moved on, so that the caseload, the dashboard and the metrics are right without
/// waiting for a sync or a read. Of several replicas on one database, one at a time
/// runs each batch (`caseload::refresh_scheduled` takes the job's advisory lock); the
/// others skip the tick.
pub fn spawn_reevaluation(state: AppState, every: Duration) -> AbortOnDrop {
    AbortOnDrop(tokio::spawn(async move {
        let mut ticks = tokio::time::interval(every);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            match reevaluate(&state).await {
                Ok(0) => {}
                Ok(made) => tracing::debug!(made, "re-evaluated"),
                Err(error) => tracing::error!(error = ?error, "re-evaluation failed"),
            }
        }
    }))
}

/// Turns filing in the EPR on (`--epr-fhir`) or off for this database, and with it on,
/// gives the EPR's sender for the outbox's worker.
async fn filing_sender(
    config: &ServeConfig,
    state: &AppState,
) -> anyhow::Result<Option<std::sync::Arc<dyn outbox::Sender>>> {
    let token = config.epr_token()?;
    let filing = match &config.epr_fhir {
        Some(url) => Some(epr::Filing::new(url, token, state)?),
        None => None,
    };
    let on = filing.is_some();
    state.db.call(move |conn| Ok(epr::set_filing(conn, on)?)).await.map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let Some(filing) = filing else { return Ok(None) };
    // The URL is the trust's endpoint, not a secret; the token is never logged.
    tracing::info!("filing records in the EPR");
    Ok(Some(std::sync::Arc::new(filing)))
}

/// One round of the scheduled re-evaluation at the clock's moment: every summary whose
/// episode changed or whose actions the clock has moved on is remade, and the alerts its
/// evaluation calls for are written to the outbox in the same transaction. Returns how
/// many summaries were remade. Each batch runs under the job's lock, so that of several
/// replicas one at a time does the work; a replica that finds the lock held leaves the
/// round to the one holding it (each alert is owed once by its key in any case).
pub async fn reevaluate(state: &AppState) -> Result<usize, crate::AppError> {
    let now = state.clock.now();
    let mut total = 0;
    // A batch at a time, so that syncs wait at most one batch for the database.
    loop {
        let docs = std::sync::Arc::clone(&state.docs);
        let alerts = std::sync::Arc::clone(&state.alerts);
        let made = state
            .db
            .call(move |conn| caseload::refresh_scheduled(conn, &docs, &alerts, now, caseload::REFRESH_BATCH))
            .await?;
        let Some(made) = made else {
            tracing::debug!("another replica is re-evaluating");
            return Ok(total);
        };
        total += made;
        if made < caseload::REFRESH_BATCH {
            return Ok(total);
        }
    }
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
