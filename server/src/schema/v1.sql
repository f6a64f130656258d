-- Schema 1: teams, users and authentication. Times are Unix seconds (UTC) unless the
-- column says otherwise.

-- Server-wide settings, such as the access tokens' signing secret.
CREATE TABLE meta (
    key   TEXT PRIMARY KEY NOT NULL,
    value TEXT NOT NULL
) STRICT;

CREATE TABLE teams (
    id         TEXT PRIMARY KEY NOT NULL,
    name       TEXT NOT NULL,
    created_at TEXT NOT NULL -- RFC 3339
) STRICT;

CREATE TABLE users (
    id            TEXT PRIMARY KEY NOT NULL, -- UUID
    username      TEXT NOT NULL UNIQUE,
    password_hash TEXT NOT NULL,             -- argon2id PHC string
    role          TEXT NOT NULL CHECK (role IN ('practitioner', 'team_manager', 'safeguarding_lead', 'admin')),
    disabled      INTEGER NOT NULL DEFAULT 0 CHECK (disabled IN (0, 1)),
    created_at    TEXT NOT NULL              -- RFC 3339
) STRICT;

CREATE TABLE user_teams (
    user_id TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    team_id TEXT NOT NULL REFERENCES teams (id) ON DELETE CASCADE,
    PRIMARY KEY (user_id, team_id)
) STRICT, WITHOUT ROWID;

-- One row per sign-in on a device: the family of every refresh token descending from
-- that login. Revoking the session stops its refresh tokens and its access tokens.
CREATE TABLE sessions (
    id         TEXT PRIMARY KEY NOT NULL, -- UUID, the access token's `sid`
    user_id    TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    device_id  TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    revoked_at INTEGER,
    revoked_because TEXT
) STRICT;
CREATE INDEX sessions_by_user ON sessions (user_id);
CREATE INDEX sessions_by_device ON sessions (device_id);

-- Refresh tokens, stored only as the SHA-256 of the token. A token is rotated when it
-- is used: `rotated_at` is set and a new one takes its place in the same session.
CREATE TABLE refresh_tokens (
    hash       BLOB PRIMARY KEY NOT NULL,
    session_id TEXT NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    issued_at  INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    rotated_at INTEGER
) STRICT, WITHOUT ROWID;
CREATE INDEX refresh_tokens_by_session ON refresh_tokens (session_id);

-- Consecutive failed sign-ins per username (whether or not such a user exists, so that
-- the throttle says nothing about who has an account).
CREATE TABLE login_failures (
    username     TEXT PRIMARY KEY NOT NULL,
    failures     INTEGER NOT NULL,
    locked_until INTEGER NOT NULL
) STRICT, WITHOUT ROWID;
