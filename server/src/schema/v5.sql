-- Schema 5: the failed sign-in throttle counts per (username, client address) and per
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
