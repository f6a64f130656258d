//! The load benchmark (`cargo bench -p tests --bench load`): N simulated devices, each
//! with M episodes of its own, against a real server in a child process on loopback.
//!
//! For each N, on a fresh database and a fresh server: every device signs in, opens its
//! M episodes with R records each offline and syncs them whole; every device then syncs
//! once to learn its teammates' episodes (teams of `TETHER_LOAD_TEAM_SIZE` devices). The
//! clock then starts: each device in turn records one visit on one of its episodes and
//! syncs, on `TETHER_LOAD_THREADS` client threads, for `TETHER_LOAD_SECS` seconds.
//!
//! Prints one Markdown table row per N: syncs per second, p50/p99 latency of a sync,
//! bytes per sync (request and response bodies; HTTP headers not counted), the server's
//! memory (`VmRSS` after the setup and at the end, `VmHWM` its peak, from
//! `/proc/<pid>/status`), and the
//! database file plus its WAL per record stored (all records, and those the run added).
//!
//! `TETHER_LOAD_DEVICES=50,200,1000`, `TETHER_LOAD_EPISODES=10`, `TETHER_LOAD_RECORDS=5`,
//! `TETHER_LOAD_SECS=10`, `TETHER_LOAD_TEAM_SIZE=10`, `TETHER_LOAD_THREADS=8`;
//! `TETHER_LOAD_KEEP=DIR` keeps each SQLite run's database there as `load-N.db`.
//!
//! `TETHER_LOAD_BACKENDS=sqlite,postgres,postgres2` (default `sqlite`) runs each N on each
//! backend in turn: SQLite; PostgreSQL (a scratch database on `TETHER_TEST_POSTGRES`)
//! with one `tether serve`; and with two, the devices split between them (device n
//! syncs through replica n mod 2). With two, the memory columns are the larger
//! replica's, and the database's size is `pg_database_size` (no WAL column).

mod common;

use std::time::{Duration, Instant};

use common::{Exchange, Sim, add_load_teams, db_bytes, load_team, memory_kib, quantile_ms};
use tests::Server;

fn main() {
    let number = |name: &str, default: usize| -> usize {
        std::env::var(name).ok().and_then(|v| v.trim().parse().ok()).unwrap_or(default)
    };
    let devices: Vec<usize> = std::env::var("TETHER_LOAD_DEVICES")
        .ok()
        .map(|v| v.split(',').filter_map(|n| n.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![50, 200, 1000]);
    let config = Config {
        episodes: number("TETHER_LOAD_EPISODES", 10).max(1),
        records: number("TETHER_LOAD_RECORDS", 5),
        length: Duration::from_secs(number("TETHER_LOAD_SECS", 10) as u64),
        team_size: number("TETHER_LOAD_TEAM_SIZE", 10).max(1),
        threads: number("TETHER_LOAD_THREADS", 8).max(1),
    };
    println!(
        "load: M = {} episodes a device with {} records each, teams of {} devices, {} client threads, {} s a run",
        config.episodes,
        config.records,
        config.team_size,
        config.threads,
        config.length.as_secs()
    );
    let backends: Vec<String> = std::env::var("TETHER_LOAD_BACKENDS")
        .unwrap_or_else(|_| "sqlite".into())
        .split(',')
        .map(|b| b.trim().to_owned())
        .filter(|b| !b.is_empty())
        .collect();
    println!(
        "\n| backend | devices | episodes | syncs | syncs/s | requests/sync | p50 ms | p99 ms | bytes/sync | server RSS after setup / end / peak MiB \
         | db + WAL MiB | records | db bytes/record | added bytes/record | setup s |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for n in devices {
        for backend in &backends {
            let replicas = match backend.as_str() {
                "sqlite" => 0,
                "postgres" => 1,
                "postgres2" => 2,
                other => panic!("TETHER_LOAD_BACKENDS: {other} is not sqlite, postgres or postgres2"),
            };
            run(n, replicas, backend, &config);
        }
    }
}

struct Config {
    episodes: usize,
    records: usize,
    length: Duration,
    team_size: usize,
    threads: usize,
}

/// One run of `devices` devices: on SQLite (`replicas` 0), or on a scratch PostgreSQL
/// database with that many replicas.
fn run(devices: usize, replicas: usize, backend: &str, config: &Config) {
    let dir = tempfile::tempdir().expect("a directory");
    let scratch = (replicas > 0).then(tests::PgScratch::new);
    let db = scratch.as_ref().map_or_else(|| dir.path().join("tether.db"), |s| s.url.clone());
    let teams = devices.div_ceil(config.team_size);
    add_load_teams(&db, teams);
    let servers: Vec<Server> = (0..replicas.max(1)).map(|_| Server::start(&db)).collect();
    let pids: Vec<u32> = servers.iter().map(|s| s.pid().expect("the server runs")).collect();
    let urls: Vec<String> = servers.iter().map(Server::url).collect();
    let memory =
        || pids.iter().map(|&pid| memory_kib(pid)).fold((0, 0), |(rss, peak), (r, p)| (rss.max(r), peak.max(p)));
    let size = || match &scratch {
        Some(scratch) => (tests::pg_database_bytes(&scratch.url), 0),
        None => db_bytes(&db),
    };
    let threads = config.threads.min(devices.max(1));

    // Setup, in parallel: sign in, open the caseload offline, sync it whole.
    let setup = Instant::now();
    let mut fleet: Vec<Sim> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|t| {
                let urls = &urls;
                scope.spawn(move || {
                    (t..devices)
                        .step_by(threads)
                        .map(|n| {
                            let (team, user) = load_team(n / config.team_size);
                            let url = &urls[n % urls.len()];
                            Sim::new(url, &user, &team, n, config.episodes, config.records).0
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        workers.into_iter().flat_map(|w| w.join().expect("a worker")).collect()
    });
    // Everyone learns their teammates' episodes once.
    let chunk = devices.div_ceil(threads);
    std::thread::scope(|scope| {
        for part in fleet.chunks_mut(chunk) {
            scope.spawn(move || {
                part.iter_mut().for_each(|sim| {
                    sim.settle();
                })
            });
        }
    });
    let setup = setup.elapsed();
    let (rss_setup, _) = memory();
    let (db_before, wal_before) = size();
    let bytes_before = db_before + wal_before;
    let records_before = devices * config.episodes * config.records;

    let started = Instant::now();
    let results: Vec<(Duration, Exchange)> = std::thread::scope(|scope| {
        let workers: Vec<_> = fleet
            .chunks_mut(chunk)
            .map(|part| {
                scope.spawn(move || {
                    let mut results = Vec::new();
                    'run: loop {
                        for sim in part.iter_mut() {
                            if started.elapsed() >= config.length {
                                break 'run;
                            }
                            let t = Instant::now();
                            let exchange = sim.record_and_sync();
                            results.push((t.elapsed(), exchange));
                        }
                    }
                    results
                })
            })
            .collect();
        workers.into_iter().flat_map(|w| w.join().expect("a worker")).collect()
    });
    let elapsed = started.elapsed();
    let (rss, peak) = memory();
    drop(servers);
    let (db_after, wal_after) = size();
    let bytes_after = db_after + wal_after;
    if let Some(keep) = std::env::var_os("TETHER_LOAD_KEEP").filter(|_| scratch.is_none()) {
        // For a look inside afterwards (`sqlite3 load-N.db`, e.g. its `dbstat` table).
        let keep = std::path::PathBuf::from(keep);
        std::fs::create_dir_all(&keep).expect("the directory to keep databases in");
        for suffix in ["", "-wal"] {
            let from = dir.path().join(format!("tether.db{suffix}"));
            if from.exists() {
                std::fs::copy(&from, keep.join(format!("load-{devices}.db{suffix}"))).expect("keep the database");
            }
        }
    }

    let syncs = results.len();
    let requests: usize = results.iter().map(|r| r.1.round_trips).sum();
    let bytes: usize = results.iter().map(|r| r.1.bytes).sum();
    let mut latencies: Vec<Duration> = results.iter().map(|r| r.0).collect();
    latencies.sort();
    let records = records_before + syncs;
    let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
    println!(
        "| {backend} | {devices} | {} | {syncs} | {:.0} | {:.2} | {:.1} | {:.1} | {:.0} | {:.0} / {:.0} / {:.0} | {:.1} + {:.1} | {records} | {:.0} | {:.0} | {:.0} |",
        devices * config.episodes,
        syncs as f64 / elapsed.as_secs_f64(),
        requests as f64 / syncs.max(1) as f64,
        quantile_ms(&latencies, 0.50),
        quantile_ms(&latencies, 0.99),
        bytes as f64 / syncs.max(1) as f64,
        rss_setup as f64 / 1024.0,
        rss as f64 / 1024.0,
        peak as f64 / 1024.0,
        mib(db_after),
        mib(wal_after),
        bytes_after as f64 / records.max(1) as f64,
        bytes_after.saturating_sub(bytes_before) as f64 / syncs.max(1) as f64,
        setup.as_secs_f64(),
    );
}
