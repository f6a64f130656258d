-- Schema 4 on PostgreSQL: the dashboard's sign-in sessions, as SQLite's `schema/v4.sql`.

CREATE TABLE dashboard_sessions (
    hash       text PRIMARY KEY,          -- SHA-256 of the cookie's token, in hex
    user_id    text NOT NULL REFERENCES users (id),
    csrf       text NOT NULL,
    created_at bigint NOT NULL,           -- Unix seconds
    expires_at bigint NOT NULL            -- Unix seconds
);
CREATE INDEX dashboard_sessions_by_expiry ON dashboard_sessions (expires_at);
