-- Schema 6: the failed sign-in throttle counts per (username, client address) and per
-- client address, so that one client can neither lock a user out everywhere nor try one
-- password across many usernames.

-- Consecutive failed sign-ins per username from one client address (whether or not such
-- a user exists, so that the throttle says nothing about who has an account). Rows not
-- touched for a day are pruned as new failures come.
DROP TABLE login_failures;
CREATE TABLE login_failures (
    username     TEXT NOT NULL,
    client       TEXT NOT NULL,    -- the address, or an IPv6 /64 (`client::ClientAddr`)
    failures     INTEGER NOT NULL,
    locked_until INTEGER NOT NULL, -- Unix seconds
    updated_at   INTEGER NOT NULL, -- Unix seconds
    PRIMARY KEY (username, client)
) STRICT, WITHOUT ROWID;
CREATE INDEX login_failures_by_age ON login_failures (updated_at);

-- Failed sign-ins per client address, whatever the username, in a fixed window: past
-- the allowance the address waits for the window to end. A success does not clear it
-- (else one account's password would let a client try others' freely).
CREATE TABLE client_failures (
    client       TEXT PRIMARY KEY NOT NULL,
    window_start INTEGER NOT NULL, -- Unix seconds
    failures     INTEGER NOT NULL
) STRICT, WITHOUT ROWID;
CREATE INDEX client_failures_by_age ON client_failures (window_start);

-- The audit log becomes a hash chain: each entry carries the hash of the one before and
-- its own, over a canonical encoding of every column (`audit::entry_hash`), so that an
-- entry edited, deleted or inserted in a copy of the database — triggers dropped — is
-- found by `tether audit verify`. `audit_head` holds the last entry's number and hash:
-- an append reads it (under a row lock, on PostgreSQL) and moves it in the same
-- transaction, so that appends from several server replicas form one chain. The
-- migration chains the entries already there (in Rust, after this file), then puts the
-- update trigger back.
DROP TRIGGER audit_no_update;
ALTER TABLE audit ADD COLUMN prev_hash BLOB NOT NULL DEFAULT x'';
ALTER TABLE audit ADD COLUMN hash BLOB NOT NULL DEFAULT x'';
CREATE TABLE audit_head (
    id   INTEGER PRIMARY KEY CHECK (id = 1),
    n    INTEGER NOT NULL, -- the last entry's `n` (0: none yet)
    hash BLOB NOT NULL     -- its hash (32 zero bytes: none yet)
) STRICT;
INSERT INTO audit_head (id, n, hash) VALUES (1, 0, zeroblob(32));

-- The head only moves on, and is never deleted.
CREATE TRIGGER audit_head_forward BEFORE UPDATE ON audit_head
WHEN NEW.n <= OLD.n OR NEW.id != OLD.id
BEGIN
    SELECT RAISE(ABORT, 'the audit head only moves on');
END;
CREATE TRIGGER audit_head_no_delete BEFORE DELETE ON audit_head
BEGIN
    SELECT RAISE(ABORT, 'the audit head is never deleted');
END;
