-- Schema 9: the outbox, one row for each message the server owes to a system outside it
-- (a record to file in the EPR, an alert to send by webhook or email). A row is written
-- in the same transaction as the change that owes it, so a message is owed exactly when
-- its cause is stored; a worker (`outbox`) sends it later, and retries until it is sent.
--
-- `dedupe_key` makes owing idempotent: for the EPR it is the record's id, so storing the
-- same record twice (a sync repeated, a change stored again) owes one filing. `state`
-- moves pending -> sending -> sent, or -> retrying (with `next_attempt_at` after a
-- backoff) -> ... -> failed, which only a person moves back to pending. `sending` is a
-- claim that lapses at `claimed_until`: a worker that dies mid-send leaves the row to be
-- claimed again then. `attempts` counts claims, and a worker finishes only a row still
-- at the count it claimed it with, so a claim that lapsed cannot be finished twice.
-- `last_error` says why the last attempt failed, never with a patient's identifier.
-- Times are Unix milliseconds.
CREATE TABLE outbox (
    id              INTEGER PRIMARY KEY,
    kind            TEXT NOT NULL,
    dedupe_key      TEXT NOT NULL UNIQUE,
    team            TEXT,
    episode         TEXT,
    payload         TEXT NOT NULL,
    state           TEXT NOT NULL DEFAULT 'pending'
                    CHECK (state IN ('pending', 'sending', 'sent', 'retrying', 'failed')),
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER NOT NULL,
    claimed_until   INTEGER,
    last_error      TEXT,
    created_at      INTEGER NOT NULL,
    sent_at         INTEGER
);

-- What a worker claims: the due rows of a kind, and the claims that lapsed.
CREATE INDEX outbox_due ON outbox (kind, next_attempt_at) WHERE state IN ('pending', 'retrying');
CREATE INDEX outbox_claimed ON outbox (kind, claimed_until) WHERE state = 'sending';
-- What the dashboard shows: each episode's messages not yet sent.
CREATE INDEX outbox_unsent ON outbox (episode) WHERE state != 'sent';

-- The audit log names a fourth channel, `server`: what the server's own workers do (the
-- outbox's sends), for no one signed in. SQLite cannot change a CHECK constraint in
-- place, so the table is made again with every entry as it was (the hash chain covers
-- the entries' values, not where they are kept), and its index and triggers with it.
DROP TRIGGER audit_no_update;
DROP TRIGGER audit_no_delete;
CREATE TABLE audit_v9 (
    n         INTEGER PRIMARY KEY AUTOINCREMENT,
    at        INTEGER NOT NULL, -- Unix milliseconds
    user_id   TEXT NOT NULL,
    username  TEXT NOT NULL,
    device    TEXT NOT NULL,
    via       TEXT NOT NULL CHECK (via IN ('api', 'dashboard', 'sync', 'server')),
    action    TEXT NOT NULL,
    episode   TEXT,
    detail    TEXT,
    prev_hash BLOB NOT NULL DEFAULT x'',
    hash      BLOB NOT NULL DEFAULT x''
) STRICT;
INSERT INTO audit_v9 (n, at, user_id, username, device, via, action, episode, detail, prev_hash, hash)
SELECT n, at, user_id, username, device, via, action, episode, detail, prev_hash, hash FROM audit;
DROP TABLE audit;
ALTER TABLE audit_v9 RENAME TO audit;
CREATE INDEX audit_by_episode ON audit (episode, n);
CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit
BEGIN
    SELECT RAISE(ABORT, 'the audit log is append-only');
END;
CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit
BEGIN
    SELECT RAISE(ABORT, 'the audit log is append-only');
END;
