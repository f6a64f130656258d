//! `tether serve --tls-cert FILE --tls-key FILE`: HTTPS with rustls and its ring provider.
//!
//! The certificate is behind a resolver that a background task swaps: every
//! `--tls-reload-secs` it looks at both files' modification times and sizes, and when
//! either changed it reads them again. A new pair that does not load (a half-written
//! file, a key that does not match) is logged and the old one kept, so a renewal never
//! takes the server off the air; connections already open keep their session.
//! Polling, rather than SIGHUP, suits tools (certbot, a Kubernetes secret) that only
//! replace files.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use anyhow::{Context, ensure};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

/// The certificate and key files.
#[derive(Debug, Clone)]
pub struct Files {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// The certificate in force, swapped when the files change.
#[derive(Debug)]
struct Current(RwLock<Arc<CertifiedKey>>);

impl ResolvesServerCert for Current {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(Arc::clone(&self.0.read().unwrap_or_else(std::sync::PoisonError::into_inner)))
    }
}

/// A TLS acceptor over reloadable files.
#[derive(Debug, Clone)]
pub struct Tls {
    config: Arc<rustls::ServerConfig>,
    current: Arc<Current>,
    files: Files,
}

impl Tls {
    /// Loads the files (a failure here stops the server from starting).
    pub fn load(files: Files) -> anyhow::Result<Self> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let key = load(&files, &provider)?;
        let current = Arc::new(Current(RwLock::new(Arc::new(key))));
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .context("TLS versions")?
            .with_no_client_auth()
            .with_cert_resolver(Arc::clone(&current) as Arc<dyn ResolvesServerCert>);
        // The server speaks HTTP/1.1 only.
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Self { config: Arc::new(config), current, files })
    }

    pub fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        tokio_rustls::TlsAcceptor::from(Arc::clone(&self.config))
    }

    /// Reloads the files whenever they change, looking every `every`, until dropped.
    pub fn watch(&self, every: Duration) -> crate::serve::AbortOnDrop {
        let tls = self.clone();
        crate::serve::AbortOnDrop::spawn(async move {
            let mut seen = stamp(&tls.files);
            let mut ticks = tokio::time::interval(every);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticks.tick().await;
                let now = stamp(&tls.files);
                if now == seen {
                    continue;
                }
                seen = now;
                let provider = Arc::clone(tls.config.crypto_provider());
                match load(&tls.files, &provider) {
                    Ok(key) => {
                        *tls.current.0.write().unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(key);
                        tracing::info!(cert = %tls.files.cert.display(), "TLS certificate reloaded");
                    }
                    Err(e) => {
                        tracing::warn!(error = format!("{e:#}"), "TLS certificate not reloaded; the old one stays")
                    }
                }
            }
        })
    }
}

/// The files' modification times and sizes: a change in either means a new pair.
fn stamp(files: &Files) -> [Option<(SystemTime, u64)>; 2] {
    let one = |path: &Path| std::fs::metadata(path).ok().and_then(|m| Some((m.modified().ok()?, m.len())));
    [one(&files.cert), one(&files.key)]
}

/// Reads a PEM certificate chain and its private key, and checks that they match.
fn load(files: &Files, provider: &Arc<CryptoProvider>) -> anyhow::Result<CertifiedKey> {
    let cert_pem =
        std::fs::read(&files.cert).with_context(|| format!("cannot read the certificate {}", files.cert.display()))?;
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<_, _>>()
        .with_context(|| format!("{} is not a PEM certificate chain", files.cert.display()))?;
    ensure!(!certs.is_empty(), "{} holds no certificate", files.cert.display());
    // Never quote the key file's contents in an error.
    let key_pem = std::fs::read(&files.key).with_context(|| format!("cannot read the key {}", files.key.display()))?;
    let key = PrivateKeyDer::from_pem_slice(&key_pem)
        .map_err(|_| anyhow::anyhow!("{} is not a PEM private key", files.key.display()))?;
    let signing = provider
        .key_provider
        .load_private_key(key)
        .map_err(|e| anyhow::anyhow!("{}: not a usable private key: {e}", files.key.display()))?;
    let certified = CertifiedKey::new(certs, signing);
    certified.keys_match().map_err(|e| {
        anyhow::anyhow!("{} and {} do not belong together: {e}", files.cert.display(), files.key.display())
    })?;
    Ok(certified)
}
