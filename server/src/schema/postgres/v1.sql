-- Schema 1 on PostgreSQL: teams, users and authentication. The same tables as SQLite's
-- `schema/v1.sql`, in PostgreSQL's types; the comments there say what each is for.
-- Times are Unix seconds (UTC) unless the column says otherwise.

CREATE TABLE meta (
    key   text PRIMARY KEY,
    value text NOT NULL
);

CREATE TABLE teams (
    id         text PRIMARY KEY,
    name       text NOT NULL,
    created_at text NOT NULL -- RFC 3339
);

CREATE TABLE users (
    id            text PRIMARY KEY,       -- UUID
    username      text NOT NULL UNIQUE,
    password_hash text NOT NULL,          -- argon2id PHC string
    role          text NOT NULL CHECK (role IN ('practitioner', 'team_manager', 'safeguarding_lead', 'admin')),
    disabled      boolean NOT NULL DEFAULT false,
    created_at    text NOT NULL           -- RFC 3339
);

CREATE TABLE user_teams (
    user_id text NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    team_id text NOT NULL REFERENCES teams (id) ON DELETE CASCADE,
    PRIMARY KEY (user_id, team_id)
);

CREATE TABLE sessions (
    id              text PRIMARY KEY,     -- UUID, the access token's `sid`
    user_id         text NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    device_id       text NOT NULL,
    created_at      bigint NOT NULL,
    revoked_at      bigint,
    revoked_because text
);
CREATE INDEX sessions_by_user ON sessions (user_id);
CREATE INDEX sessions_by_device ON sessions (device_id);

CREATE TABLE refresh_tokens (
    hash       bytea PRIMARY KEY,         -- SHA-256 of the token
    session_id text NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    issued_at  bigint NOT NULL,
    expires_at bigint NOT NULL,
    rotated_at bigint
);
CREATE INDEX refresh_tokens_by_session ON refresh_tokens (session_id);

CREATE TABLE login_failures (
    username     text PRIMARY KEY,
    failures     bigint NOT NULL,
    locked_until bigint NOT NULL
);
