-- Schema 6 on PostgreSQL: the failed sign-in throttle per (username, client address) and
-- per client address, and the audit log as a hash chain, as SQLite's `schema/v6.sql`
-- (the comments there say what each is for).

DROP TABLE login_failures;
CREATE TABLE login_failures (
    username     text NOT NULL,
    client       text NOT NULL,           -- the address, or an IPv6 /64 (`client::ClientAddr`)
    failures     bigint NOT NULL,
    locked_until bigint NOT NULL,         -- Unix seconds
    updated_at   bigint NOT NULL,         -- Unix seconds
    PRIMARY KEY (username, client)
);
CREATE INDEX login_failures_by_age ON login_failures (updated_at);

CREATE TABLE client_failures (
    client       text PRIMARY KEY,
    window_start bigint NOT NULL,         -- Unix seconds
    failures     bigint NOT NULL
);
CREATE INDEX client_failures_by_age ON client_failures (window_start);

-- Entries are numbered from the head now (`audit::log` appends entry head + 1 under the
-- head's row lock), not by the identity, so that the numbers are the chain's and leave
-- no gap when a transaction rolls back. The upgrade chains the entries already there (in
-- Rust, after this file), then puts the trigger against updates and deletes back.
DROP TRIGGER audit_no_change ON audit;
ALTER TABLE audit ALTER COLUMN n DROP IDENTITY;
ALTER TABLE audit ADD COLUMN prev_hash bytea NOT NULL DEFAULT '\x'::bytea;
ALTER TABLE audit ADD COLUMN hash bytea NOT NULL DEFAULT '\x'::bytea;

CREATE TABLE audit_head (
    id   integer PRIMARY KEY CHECK (id = 1),
    n    bigint NOT NULL,                 -- the last entry's `n` (0: none yet)
    hash bytea NOT NULL                   -- its hash (32 zero bytes: none yet)
);
INSERT INTO audit_head (id, n, hash) VALUES (1, 0, decode(repeat('00', 32), 'hex'));

-- The head only moves on, and is never deleted nor emptied.
CREATE FUNCTION audit_head_forward() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.n <= OLD.n OR NEW.id <> OLD.id THEN
        RAISE EXCEPTION 'the audit head only moves on';
    END IF;
    RETURN NEW;
END
$$;
CREATE FUNCTION audit_head_kept() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'the audit head is never deleted';
END
$$;
CREATE TRIGGER audit_head_forward BEFORE UPDATE ON audit_head
    FOR EACH ROW EXECUTE FUNCTION audit_head_forward();
CREATE TRIGGER audit_head_no_delete BEFORE DELETE ON audit_head
    FOR EACH ROW EXECUTE FUNCTION audit_head_kept();
CREATE TRIGGER audit_head_no_truncate BEFORE TRUNCATE ON audit_head
    FOR EACH STATEMENT EXECUTE FUNCTION audit_head_kept();
