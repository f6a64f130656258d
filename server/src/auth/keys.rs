//! Where the access tokens' signing keys come from. Never the database: a copy of the
//! database (a backup, a support bundle) must not let anyone sign a token.
//!
//! - `TETHER_JWT_SECRET`, if set, signs; `TETHER_JWT_PREVIOUS_SECRETS` (one a line) only
//!   verify. The key file is then not read.
//! - Otherwise the key file beside the database (`tether.db.keys`), made with one new
//!   random key, mode 0600, at first start: one key a line as hex digits, `#` comments;
//!   the first line signs, every line verifies. A PostgreSQL database has no file to be
//!   beside, and its replicas must share one key: there `TETHER_JWT_SECRET` is required.
//!
//! A database written by an earlier version kept its secret in `meta`: at start the
//! secret moves to the key file (written and synced first), then leaves the database,
//! its page overwritten (`secure_delete`) and the WAL checkpointed, so that it is not
//! left in a free page either.
//!
//! Rotation (see README, "Secrets"): put a new key first, restart every replica, and
//! remove the old one once the longest access token signed with it has expired
//! (`ACCESS_TTL_SECS`, 15 minutes). Refresh tokens are not signed and are unaffected.

use std::io::Write;
use std::path::{Path, PathBuf};

use super::token::{Keys, MIN_SECRET_BYTES, from_hex, random_bytes, to_hex};
use crate::config::Secret;
use crate::files;
use crate::store::{Conn, Db};
use anyhow::{Context, bail};

/// The `meta` key under which an earlier version kept the signing secret.
const LEGACY_META_KEY: &str = "jwt_secret";

const HEADER: &str = "\
# Tether's access-token signing keys: one a line, as hex digits (32 bytes or more).
# The first key signs; every key verifies. Keep this file 0600 and out of backups of
# the database. To rotate: add a new key as the first line (`openssl rand -hex 32`),
# restart, and delete the old line 15 minutes later.
";

/// The key file of the database at `db`: beside it, named after it.
pub fn key_file_for(db: &Path) -> PathBuf {
    let mut name = db.as_os_str().to_owned();
    name.push(".keys");
    PathBuf::from(name)
}

/// The keys a server on `db` uses, moving a secret an earlier version kept in the
/// database to the key file first. `secret` and `previous` are `TETHER_JWT_SECRET` and
/// `TETHER_JWT_PREVIOUS_SECRETS`.
pub fn load(db: &Db, secret: Option<&Secret>, previous: Option<&Secret>) -> anyhow::Result<Keys> {
    let key_file = db.file().map(|path| key_file_for(&path));
    if secret.is_none() && key_file.is_none() {
        bail!(
            "a database without a file (PostgreSQL, or one in memory) needs TETHER_JWT_SECRET, the same for every \
             server on it: there is nowhere to keep a key file"
        );
    }
    db.call_blocking(|conn| move_legacy_secret(conn, key_file.as_deref()))?;
    if let Some(secret) = secret {
        let signing = checked_secret(secret.expose().as_bytes(), "TETHER_JWT_SECRET")?;
        let others = previous
            .map(Secret::expose)
            .unwrap_or_default()
            .lines()
            .map(str::trim)
            .filter(|line| !line.is_empty())
            .map(|line| checked_secret(line.as_bytes(), "each of TETHER_JWT_PREVIOUS_SECRETS"))
            .collect::<anyhow::Result<Vec<_>>>()?;
        return Ok(Keys::from_secrets(&signing, &others));
    }
    let Some(key_file) = key_file else { bail!("a database without a file needs TETHER_JWT_SECRET") };
    if !key_file.exists() {
        let secret = random_bytes::<32>().map_err(|_| anyhow::anyhow!("no random numbers for the signing key"))?;
        create(&key_file, &[secret.to_vec()])?;
        tracing::info!(key_file = %key_file.display(), "made a new signing key");
    }
    let secrets = read(&key_file)?;
    let (signing, others) = secrets.split_first().context("the key file holds no key")?;
    Ok(Keys::from_secrets(signing, others))
}

fn checked_secret(bytes: &[u8], what: &str) -> anyhow::Result<Vec<u8>> {
    // The message never shows the secret, nor its length.
    anyhow::ensure!(bytes.len() >= MIN_SECRET_BYTES, "{what} must be at least {MIN_SECRET_BYTES} bytes long");
    Ok(bytes.to_vec())
}

/// Reads a key file's keys, first (signing) first. A file others may read is made 0600
/// again, and said so in the log.
pub fn read(path: &Path) -> anyhow::Result<Vec<Vec<u8>>> {
    files::restrict(path)?;
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read the key file {}", path.display()))?;
    let mut keys = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        // The line is never printed: it may be a key with one digit wrong.
        let key = from_hex(line).filter(|k| k.len() >= MIN_SECRET_BYTES).with_context(|| {
            format!(
                "line {} of the key file {} is not a key ({} or more bytes as hex digits)",
                i + 1,
                path.display(),
                MIN_SECRET_BYTES
            )
        })?;
        keys.push(key);
    }
    anyhow::ensure!(!keys.is_empty(), "the key file {} holds no key", path.display());
    Ok(keys)
}

/// Moves a secret kept in `meta` by an earlier version to the key file (appended as a
/// verifying key if the file exists already), then deletes it from the database. A
/// database without a file (PostgreSQL) signs with `TETHER_JWT_SECRET` only: a secret an
/// earlier build of the storage boundary kept there is deleted, and the access tokens it
/// signed (15 minutes at most) ask their devices to refresh.
fn move_legacy_secret(conn: &mut dyn Conn, key_file: Option<&Path>) -> anyhow::Result<()> {
    let Some(hex) = conn.meta(LEGACY_META_KEY)? else { return Ok(()) };
    let Some(key_file) = key_file else {
        conn.forget_meta(LEGACY_META_KEY)?;
        tracing::warn!("deleted a signing secret kept in the database: TETHER_JWT_SECRET signs from now on");
        return Ok(());
    };
    let secret = from_hex(&hex).context("the signing secret kept in the database is damaged")?;
    if key_file.exists() {
        let kept = read(key_file)?;
        if !kept.contains(&secret) {
            let mut file = std::fs::OpenOptions::new()
                .append(true)
                .open(key_file)
                .with_context(|| format!("cannot add to the key file {}", key_file.display()))?;
            writeln!(file, "{}", to_hex(&secret))?;
            file.sync_all()?;
        }
    } else {
        create(key_file, &[secret])?;
    }
    conn.forget_meta(LEGACY_META_KEY)?;
    tracing::info!(key_file = %key_file.display(), "moved the signing secret out of the database");
    Ok(())
}

/// Writes a new key file, mode 0600 from its creation, and syncs it and its directory.
pub fn create(path: &Path, secrets: &[Vec<u8>]) -> anyhow::Result<()> {
    let mut file =
        files::create_private(path).with_context(|| format!("cannot create the key file {}", path.display()))?;
    let mut text = HEADER.to_string();
    for secret in secrets {
        text.push_str(&to_hex(secret));
        text.push('\n');
    }
    file.write_all(text.as_bytes())?;
    file.sync_all()?;
    files::sync_dir(path);
    Ok(())
}
