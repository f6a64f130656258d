//! A loopback HTTP proxy that damages sync traffic on purpose: between the devices and
//! the server, it drops, duplicates, delays, reorders and truncates `POST /v1/sync`
//! requests and responses, at random from a seed, so that a test can show that nothing
//! is lost or applied twice and that every device still converges.
//!
//! It speaks just enough HTTP/1.1 for the client core's transport: one request per
//! connection, bodies sized by `Content-Length`. It answers every request with
//! `Connection: close` (so the client never reuses a connection the proxy is about to
//! break) and asks the same of the server. Requests other than sync (sign-in, refresh)
//! pass untouched, as do all requests while the proxy is clean.
//!
//! The faults, per sync request:
//! - **drop request**: the server never sees it; the client's connection is closed;
//! - **drop response**: the server handles it (and commits), the client hears nothing;
//! - **duplicate**: the server receives it twice; the client gets the second answer;
//! - **delay**: held for a while before it goes on, so other devices' requests pass;
//! - **reorder**: the client hears nothing, and the request reaches the server only
//!   after the next sync request (of any device) has passed: a stale request arriving
//!   after a newer one;
//! - **truncate request**: the server gets the head and part of the body, then the end
//!   of the stream; the client's connection is closed;
//! - **truncate response**: the client gets the head and part of the body, then the end
//!   of the stream.

use std::io::{self, BufRead, BufReader, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

/// How often each fault happens, in percent of sync requests (the rest pass untouched).
#[derive(Debug, Clone, Copy)]
pub struct Faults {
    pub drop_request: u64,
    pub drop_response: u64,
    pub duplicate: u64,
    pub delay: u64,
    pub reorder: u64,
    pub truncate_request: u64,
    pub truncate_response: u64,
}

impl Faults {
    /// Each fault at `percent`: seven faults at 5% leave 65% of requests untouched.
    pub fn each(percent: u64) -> Self {
        Self {
            drop_request: percent,
            drop_response: percent,
            duplicate: percent,
            delay: percent,
            reorder: percent,
            truncate_request: percent,
            truncate_response: percent,
        }
    }
}

/// What the proxy did, counted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    pub passed: u64,
    pub dropped_requests: u64,
    pub dropped_responses: u64,
    pub duplicated: u64,
    pub delayed: u64,
    pub reordered: u64,
    pub truncated_requests: u64,
    pub truncated_responses: u64,
}

/// A small deterministic random source (xorshift64*).
#[derive(Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed | 1)
    }

    /// Seeded from `TETHER_E2E_SEED` if set, else from the clock; the seed is printed so
    /// that a failing run can be replayed.
    pub fn from_env(what: &str) -> Self {
        let seed = std::env::var("TETHER_E2E_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
            let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
            nanos.as_nanos() as u64
        });
        eprintln!("{what}: TETHER_E2E_SEED={seed}");
        Self::new(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    /// A duration from `from` up to (not including) `to` milliseconds.
    pub fn millis(&mut self, from: u64, to: u64) -> Duration {
        Duration::from_millis(from + self.below(to.saturating_sub(from)))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    None,
    DropRequest,
    DropResponse,
    Duplicate,
    Delay,
    Reorder,
    TruncateRequest,
    TruncateResponse,
}

#[derive(Debug)]
struct Shared {
    upstream: SocketAddr,
    faults: Faults,
    faulty: AtomicBool,
    stop: AtomicBool,
    rng: Mutex<Rng>,
    stats: Mutex<Stats>,
    /// A reordered request, waiting for the next one to pass first.
    held: Mutex<Option<Vec<u8>>>,
    /// Sync requests seen while faulty: the first seven get each fault once, in turn, so
    /// that even a short run meets every kind.
    seen: Mutex<u64>,
}

/// The proxy, on a loopback port of its own; stopped when dropped.
#[derive(Debug)]
pub struct Proxy {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    acceptor: Option<JoinHandle<()>>,
}

impl Proxy {
    /// A proxy to `upstream` that damages sync traffic as `faults` says, from `rng`.
    pub fn start(upstream: SocketAddr, faults: Faults, rng: Rng) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("a loopback port for the proxy");
        let addr = listener.local_addr().expect("the proxy's address");
        let shared = Arc::new(Shared {
            upstream,
            faults,
            faulty: AtomicBool::new(true),
            stop: AtomicBool::new(false),
            rng: Mutex::new(rng),
            stats: Mutex::new(Stats::default()),
            held: Mutex::new(None),
            seen: Mutex::new(0),
        });
        let accepting = Arc::clone(&shared);
        let acceptor = std::thread::spawn(move || {
            for client in listener.incoming() {
                if accepting.stop.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(client) = client else { continue };
                let shared = Arc::clone(&accepting);
                std::thread::spawn(move || {
                    // A connection the client gave up on is no failure of the proxy's.
                    let _ = handle(&shared, client);
                });
            }
        });
        Self { addr, shared, acceptor: Some(acceptor) }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// From now on, pass everything untouched (or damage it again).
    pub fn set_faulty(&self, faulty: bool) {
        self.shared.faulty.store(faulty, Ordering::SeqCst);
    }

    /// Sends a reordered request still waiting for a later one, now.
    pub fn flush(&self) {
        let held = self.shared.held.lock().unwrap_or_else(PoisonError::into_inner).take();
        if let Some(request) = held {
            let _ = exchange(self.shared.upstream, &request);
        }
    }

    pub fn stats(&self) -> Stats {
        *self.shared.stats.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        // Wake the acceptor so that it sees the flag.
        let _ = TcpStream::connect(self.addr);
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
    }
}

/// One HTTP message: its head (start line and headers, without the blank line) and body.
struct Message {
    head: Vec<String>,
    body: Vec<u8>,
}

impl Message {
    /// The message with `Connection: close` in place of any connection header.
    fn closing(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.body.len() + 256);
        for line in &self.head {
            if !line.to_ascii_lowercase().starts_with("connection:") {
                out.extend_from_slice(line.as_bytes());
                out.extend_from_slice(b"\r\n");
            }
        }
        out.extend_from_slice(b"connection: close\r\n\r\n");
        let head = out.len();
        out.extend_from_slice(&self.body);
        debug_assert_eq!(out.len() - head, self.body.len());
        out
    }

    /// Where the body starts in `closing()`.
    fn head_len(&self) -> usize {
        self.closing().len() - self.body.len()
    }
}

/// Reads one message: the head, then exactly `Content-Length` bytes (or, with none and
/// `to_eof`, everything up to the end of the stream).
fn read_message(stream: &mut impl BufRead, to_eof: bool) -> io::Result<Message> {
    let mut head = Vec::new();
    loop {
        let mut line = String::new();
        if stream.read_line(&mut line)? == 0 {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "the stream ended inside a head"));
        }
        let line = line.trim_end_matches(['\r', '\n']).to_owned();
        if line.is_empty() {
            break;
        }
        head.push(line);
    }
    let length = head.iter().find_map(|line| {
        let (name, value) = line.split_once(':')?;
        name.trim().eq_ignore_ascii_case("content-length").then(|| value.trim().parse::<usize>().ok()).flatten()
    });
    if head.iter().any(|l| l.to_ascii_lowercase().starts_with("transfer-encoding:")) {
        return Err(io::Error::other("chunked bodies are not supported by this proxy"));
    }
    let mut body = Vec::new();
    match length {
        Some(n) => {
            body.resize(n, 0);
            stream.read_exact(&mut body)?;
        }
        None if to_eof => {
            stream.read_to_end(&mut body)?;
        }
        None => {}
    }
    Ok(Message { head, body })
}

/// Sends `request` (bytes with `Connection: close`) to the server and reads its answer.
fn exchange(upstream: SocketAddr, request: &[u8]) -> io::Result<Message> {
    let mut server = TcpStream::connect(upstream)?;
    server.set_read_timeout(Some(Duration::from_secs(60)))?;
    server.write_all(request)?;
    read_message(&mut BufReader::new(server), true)
}

fn choose(shared: &Shared) -> Fault {
    let f = shared.faults;
    let table = [
        (f.drop_request, Fault::DropRequest),
        (f.drop_response, Fault::DropResponse),
        (f.duplicate, Fault::Duplicate),
        (f.delay, Fault::Delay),
        (f.reorder, Fault::Reorder),
        (f.truncate_request, Fault::TruncateRequest),
        (f.truncate_response, Fault::TruncateResponse),
    ];
    let seen = {
        let mut seen = shared.seen.lock().unwrap_or_else(PoisonError::into_inner);
        *seen += 1;
        *seen - 1
    };
    if let Some(&(percent, fault)) = table.get(seen as usize)
        && percent > 0
    {
        return fault;
    }
    let roll = shared.rng.lock().unwrap_or_else(PoisonError::into_inner).below(100);
    let mut upto = 0;
    for (percent, fault) in table {
        upto += percent;
        if roll < upto {
            return fault;
        }
    }
    Fault::None
}

fn count(shared: &Shared, fault: Fault) {
    let mut stats = shared.stats.lock().unwrap_or_else(PoisonError::into_inner);
    let counter = match fault {
        Fault::None => &mut stats.passed,
        Fault::DropRequest => &mut stats.dropped_requests,
        Fault::DropResponse => &mut stats.dropped_responses,
        Fault::Duplicate => &mut stats.duplicated,
        Fault::Delay => &mut stats.delayed,
        Fault::Reorder => &mut stats.reordered,
        Fault::TruncateRequest => &mut stats.truncated_requests,
        Fault::TruncateResponse => &mut stats.truncated_responses,
    };
    *counter += 1;
}

fn handle(shared: &Shared, mut client: TcpStream) -> io::Result<()> {
    client.set_read_timeout(Some(Duration::from_secs(60)))?;
    let request = read_message(&mut BufReader::new(client.try_clone()?), false)?;
    let is_sync = request.head.first().is_some_and(|line| line.starts_with("POST /v1/sync "));
    let fault = if is_sync && shared.faulty.load(Ordering::SeqCst) { choose(shared) } else { Fault::None };
    if is_sync {
        count(shared, fault);
    }
    let bytes = request.closing();
    let upstream = shared.upstream;
    let response = match fault {
        Fault::DropRequest => return client.shutdown(Shutdown::Both),
        Fault::Reorder => {
            // Whatever was waiting goes now, and this one waits instead.
            let earlier = shared.held.lock().unwrap_or_else(PoisonError::into_inner).replace(bytes);
            if let Some(earlier) = earlier {
                let _ = exchange(upstream, &earlier);
            }
            return client.shutdown(Shutdown::Both);
        }
        Fault::TruncateRequest => {
            let cut = request.head_len() + request.body.len() / 2;
            let mut server = TcpStream::connect(upstream)?;
            server.write_all(&bytes[..cut])?;
            server.shutdown(Shutdown::Write)?;
            // Whatever the server makes of it, the client hears nothing.
            let _ = read_message(&mut BufReader::new(server), true);
            return client.shutdown(Shutdown::Both);
        }
        Fault::Delay => {
            let millis = 20 + shared.rng.lock().unwrap_or_else(PoisonError::into_inner).below(180);
            std::thread::sleep(Duration::from_millis(millis));
            exchange(upstream, &bytes)?
        }
        Fault::Duplicate => {
            let _ = exchange(upstream, &bytes)?;
            exchange(upstream, &bytes)?
        }
        Fault::None | Fault::DropResponse | Fault::TruncateResponse => exchange(upstream, &bytes)?,
    };
    if is_sync {
        // A sync request went through: one held back for reordering may follow it now.
        let held = shared.held.lock().unwrap_or_else(PoisonError::into_inner).take();
        if let Some(held) = held {
            let _ = exchange(upstream, &held);
        }
    }
    match fault {
        Fault::DropResponse => client.shutdown(Shutdown::Both),
        Fault::TruncateResponse => {
            let answer = response.closing();
            let cut = response.head_len() + response.body.len() / 2;
            client.write_all(&answer[..cut])?;
            client.shutdown(Shutdown::Both)
        }
        _ => {
            client.write_all(&response.closing())?;
            client.shutdown(Shutdown::Write)
        }
    }
}
