//! The signing key and the files around the database: the key is never in the database
//! (a key file beside it, 0600, or `TETHER_JWT_SECRET`); an earlier database's stored
//! secret moves out; keys rotate by `kid`; the database, WAL, shared-memory and key files
//! are the owner's only.
//!
//! These are about SQLite's files and the key file beside them, so they run on SQLite
//! only, except the last module's: a PostgreSQL database has no file to be beside, and
//! there `TETHER_JWT_SECRET` is required.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use common::*;
use server::auth::keys::{self, key_file_for};
use server::auth::token::{Claims, Keys, to_hex};
use server::{AppState, Clock, Db, Secret, Target};

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())).permissions().mode() & 0o777
}

fn beside(db: &Path, suffix: &str) -> PathBuf {
    let mut name = db.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

/// Every byte of the database's files, to search for a secret.
fn database_bytes(db: &Path) -> Vec<u8> {
    let mut bytes = Vec::new();
    for suffix in ["", "-wal", "-shm"] {
        if let Ok(more) = std::fs::read(beside(db, suffix)) {
            bytes.extend(more);
        }
    }
    bytes
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

fn clock() -> Clock {
    let now: jiff::Timestamp = "2026-03-02T09:00:00Z".parse().expect("a time");
    Clock::from_fn(move || now)
}

/// Claims for a token that `Keys::verify` accepts at `clock()`.
fn claims() -> Claims {
    let now = clock().unix();
    Claims {
        iss: "tether".into(),
        aud: "tether-api".into(),
        sub: "user".into(),
        iat: now,
        nbf: now,
        exp: now + 600,
        role: server::accounts::Role::Practitioner,
        teams: vec!["team-north".into()],
        device: "phone-1".into(),
        sid: "session".into(),
    }
}

#[tokio::test]
async fn a_new_database_gets_a_private_key_file_and_holds_no_secret() {
    // Under the usual umask (022) SQLite would make these 0644.
    let server = Server::new();
    let db = server.dir.path().join("tether.db");
    // A sign-in writes, so the WAL and shared-memory files exist.
    server.alice("phone-1").await;
    let key_file = key_file_for(&db);
    assert_eq!(key_file.file_name().and_then(|n| n.to_str()), Some("tether.db.keys"));
    for file in [db.clone(), beside(&db, "-wal"), beside(&db, "-shm"), key_file.clone()] {
        assert_eq!(mode(&file), 0o600, "{}", file.display());
    }
    let secret = server.secret();
    assert_eq!(secret.len(), 32);
    let bytes = database_bytes(&db);
    assert!(!contains(&bytes, to_hex(&secret).as_bytes()) && !contains(&bytes, &secret), "the key is in the database");
    let stored = server.state.db.call(|conn| Ok(conn.meta("jwt_secret")?)).await.expect("meta");
    assert_eq!(stored, None);
}

/// The handle on the SQLite database at `path`, opened (and migrated) as `serve` opens it.
fn open(path: &Path) -> Db {
    Db::open(&Target::path(path.to_path_buf())).expect("open the database")
}

#[test]
fn an_earlier_databases_stored_secret_moves_to_the_key_file_and_leaves_the_database() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let path = dir.path().join("tether.db");
    // As an earlier version left it: the secret in `meta`, the files readable by all.
    let secret = [7u8; 32];
    {
        let db = open(&path);
        db.call_blocking(|conn| conn.set_meta("jwt_secret", &to_hex(&secret))).expect("the old secret");
        for suffix in ["", "-wal", "-shm"] {
            std::fs::set_permissions(beside(&path, suffix), std::fs::Permissions::from_mode(0o644)).expect("chmod");
        }
        assert!(contains(&database_bytes(&path), to_hex(&secret).as_bytes()));
    }
    // A token the earlier version signed with it.
    let old_token = Keys::from_secret(&secret).sign(&claims()).expect("sign");

    let state = AppState::new(open(&path), None, clock()).expect("the state");
    assert_eq!(keys::read(&key_file_for(&path)).expect("the key file"), vec![secret.to_vec()]);
    assert!(state.keys.verify(&old_token, clock().unix()).is_ok(), "tokens signed before the move still verify");
    let stored = state.db.call_blocking(|conn| conn.meta("jwt_secret")).expect("meta");
    assert_eq!(stored, None);
    // Not in a free page or the WAL either.
    assert!(!contains(&database_bytes(&path), to_hex(&secret).as_bytes()), "the secret is still in the file");
    for file in [path.clone(), beside(&path, "-wal"), beside(&path, "-shm"), key_file_for(&path)] {
        if file.exists() {
            assert_eq!(mode(&file), 0o600, "{}", file.display());
        }
    }
}

#[test]
fn keys_rotate_by_kid_one_signing_and_several_verifying() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let path = dir.path().join("tether.db");
    let (old, new) = ([1u8; 32], [2u8; 32]);
    keys::create(&key_file_for(&path), &[old.to_vec()]).expect("a key file");
    let first = AppState::new(open(&path), None, clock()).expect("state");
    let signed_before = first.keys.sign(&claims()).expect("sign");
    assert_eq!(first.keys.kid(), Keys::from_secret(&old).kid());
    drop(first);

    // Rotation: the new key goes first; the old one stays to verify.
    std::fs::remove_file(key_file_for(&path)).expect("remove");
    keys::create(&key_file_for(&path), &[new.to_vec(), old.to_vec()]).expect("a key file");
    let rotated = AppState::new(open(&path), None, clock()).expect("state");
    let signed_after = rotated.keys.sign(&claims()).expect("sign");
    let kid = |token: &str| jsonwebtoken::decode_header(token).expect("a header").kid.expect("a kid");
    assert_eq!(kid(&signed_after), Keys::from_secret(&new).kid());
    assert_ne!(kid(&signed_before), kid(&signed_after));
    for token in [&signed_before, &signed_after] {
        assert!(rotated.keys.verify(token, clock().unix()).is_ok());
    }
    drop(rotated);

    // The old key removed: what it signed no longer verifies.
    std::fs::remove_file(key_file_for(&path)).expect("remove");
    keys::create(&key_file_for(&path), &[new.to_vec()]).expect("a key file");
    let done = AppState::new(open(&path), None, clock()).expect("state");
    assert!(done.keys.verify(&signed_after, clock().unix()).is_ok());
    let refused = done.keys.verify(&signed_before, clock().unix()).expect_err("the old key is gone");
    assert!(format!("{refused:?}").contains("not by a key this server holds"), "{refused:?}");

    // From the environment: TETHER_JWT_SECRET signs, TETHER_JWT_PREVIOUS_SECRETS verify.
    let env_new = Secret::from("a new secret from the environment, 32+ bytes".to_string());
    let env_old = Secret::from(
        "an old secret from the environment, 32+ bytes\nanother old one, also 32 bytes or more".to_string(),
    );
    let db = open(&path);
    let from_env = keys::load(&db, Some(&env_new), Some(&env_old)).expect("keys");
    let old_env_token =
        Keys::from_secret(b"another old one, also 32 bytes or more").sign(&claims()).expect("sign with an old secret");
    assert!(from_env.verify(&old_env_token, clock().unix()).is_ok());
    assert_eq!(from_env.kid(), Keys::from_secret(env_new.expose().as_bytes()).kid());
    let short = Secret::from("short".to_string());
    let error = keys::load(&db, Some(&env_new), Some(&short)).expect_err("too short");
    assert!(!error.to_string().contains("short\n") && error.to_string().contains("32 bytes"), "{error}");
}

#[test]
fn a_damaged_key_file_is_refused_without_printing_it() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let path = dir.path().join("tether.db");
    let key_file = key_file_for(&path);
    std::fs::write(&key_file, "# keys\nabcdef0123456789zz\n").expect("write");
    std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let error = AppState::new(open(&path), None, clock()).expect_err("a damaged key");
    let message = format!("{error:#}");
    assert!(message.contains("line 2 of the key file"), "{message}");
    assert!(!message.contains("abcdef"), "the line is not printed: {message}");
    // Read at all, it was made private first.
    assert_eq!(mode(&key_file), 0o600);
}

/// A PostgreSQL database: no key file, so no server starts on it without
/// `TETHER_JWT_SECRET`; and a secret an earlier build kept in its `meta` is deleted.
async fn without_a_file_the_secret_comes_from_the_environment_and_never_the_database() {
    let test_db = TestDb::on(Backend::Postgres);
    let error = AppState::new(test_db.open(), None, clock()).expect_err("no secret");
    assert!(format!("{error:#}").contains("needs TETHER_JWT_SECRET"), "{error:#}");
    let db = test_db.open();
    db.call_blocking(|conn| conn.set_meta("jwt_secret", &to_hex(&[9u8; 32]))).expect("an old secret");
    let given = Secret::from(POSTGRES_JWT_SECRET.to_owned());
    let state = AppState::new(db, Some(&given), clock()).expect("the state");
    assert_eq!(state.keys.kid(), Keys::from_secret(POSTGRES_JWT_SECRET.as_bytes()).kid());
    assert_eq!(state.db.call_blocking(|conn| conn.meta("jwt_secret")).expect("meta"), None, "deleted");
    assert!(!test_db.path().join("tether.db.keys").exists());
}

mod needs_postgres {
    #[tokio::test]
    async fn without_a_file_the_secret_comes_from_the_environment_and_never_the_database() {
        super::without_a_file_the_secret_comes_from_the_environment_and_never_the_database().await
    }
}
