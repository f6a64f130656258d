//! `tether serve --tls-cert --tls-key`, as a real process on loopback: a client that
//! trusts the certificate gets its answer over HTTPS; the certificate's files replaced,
//! the new one is served without a restart; a half-written replacement keeps the old one;
//! a client that opens a connection and never handshakes is closed at the header timeout.

mod common;

use std::io::Read;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ureq::tls::{Certificate, RootCerts, TlsConfig};

const HERE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/tls");

fn pem(name: &str) -> Vec<u8> {
    std::fs::read(Path::new(HERE).join(name)).expect("a test certificate")
}

/// A client that trusts only the certificate `name`.
fn trusting(name: &str) -> ureq::Agent {
    let cert = Certificate::from_pem(&pem(name)).expect("a PEM certificate");
    let tls = TlsConfig::builder().root_certs(RootCerts::Specific(Arc::new(vec![cert]))).build();
    ureq::Agent::config_builder().tls_config(tls).timeout_global(Some(Duration::from_secs(5))).build().into()
}

/// Whether a new connection from a client trusting only `name` is answered (a new
/// agent each time: a pooled connection would keep the certificate it began with).
fn healthy(name: &str, url: &str) -> bool {
    trusting(name).get(format!("{url}/healthz")).call().is_ok_and(|r| r.status() == 200)
}

/// Waits up to ten seconds for `test` to hold.
fn eventually(mut test: impl FnMut() -> bool) -> bool {
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(10) {
        if test() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    false
}

#[test]
fn https_is_served_and_a_replaced_certificate_is_reloaded() {
    let dir = tempfile::tempdir().expect("a directory");
    let (cert, key) = (dir.path().join("server.crt"), dir.path().join("server.key"));
    std::fs::write(&cert, pem("a.crt")).expect("write");
    std::fs::write(&key, pem("a.key")).expect("write");
    let db = dir.path().join("tether.db");
    let (_running, _, url) = common::serve(
        Command::new(env!("CARGO_BIN_EXE_tether"))
            .args(["serve", "--addr", "127.0.0.1:0", "--tls-reload-secs", "1", "--header-timeout-secs", "1"])
            .args(["--db", db.to_str().expect("UTF-8")])
            .arg("--tls-cert")
            .arg(&cert)
            .arg("--tls-key")
            .arg(&key)
            .env_remove("TETHER_DB")
            .env_remove("TETHER_JWT_SECRET")
            .env("TETHER_LOG", "warn"),
    );
    assert!(url.starts_with("https://127.0.0.1:"), "{url}");

    let (a, b) = ("a.crt", "b.crt");
    assert!(healthy(a, &url), "a client trusting the certificate is answered");
    assert!(!healthy(b, &url), "a client trusting another is refused");
    // Plain HTTP to the HTTPS port gets no answer.
    let plain = ureq::Agent::config_builder().timeout_global(Some(Duration::from_secs(3))).build();
    let plain: ureq::Agent = plain.into();
    assert!(plain.get(format!("{}/healthz", url.replace("https", "http"))).call().is_err());

    // A half-written replacement (the key only) is not taken: the old pair stays.
    std::fs::write(&key, pem("b.key")).expect("write");
    std::thread::sleep(Duration::from_millis(2500));
    assert!(healthy(a, &url), "a mismatched pair keeps the old certificate");
    // The certificate completes the pair: the new one is served, without a restart.
    std::fs::write(&cert, pem("b.crt")).expect("write");
    assert!(eventually(|| healthy(b, &url)), "the new certificate is served");
    assert!(!healthy(a, &url), "the old one is not");

    // A connection that never handshakes is closed at the header timeout (1 s).
    let port = url.rsplit(':').next().expect("a port");
    let mut idle = std::net::TcpStream::connect(format!("127.0.0.1:{port}")).expect("connect");
    idle.set_read_timeout(Some(Duration::from_secs(10))).expect("a timeout");
    let started = Instant::now();
    let read = idle.read(&mut [0u8; 16]);
    assert!(matches!(read, Ok(0)) || read.is_err(), "{read:?}");
    assert!(started.elapsed() < Duration::from_secs(5), "closed after {:?}", started.elapsed());
}
