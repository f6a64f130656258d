-- Schema 4: the dashboard's sign-in sessions (a cookie in a browser, not a device).

-- One row per dashboard sign-in. The cookie's token is kept only as its SHA-256, so that
-- a copy of the database signs no one in; the CSRF token is not a credential on its own
-- and is kept as given, to be put in every form. A session ends at `expires_at`, at
-- sign-out (the row is deleted), or when its user is disabled (checked on each request).
CREATE TABLE dashboard_sessions (
    hash       TEXT PRIMARY KEY NOT NULL, -- SHA-256 of the cookie's token, in hex
    user_id    TEXT NOT NULL REFERENCES users (id),
    csrf       TEXT NOT NULL,
    created_at INTEGER NOT NULL,          -- Unix seconds
    expires_at INTEGER NOT NULL           -- Unix seconds
) STRICT, WITHOUT ROWID;
CREATE INDEX dashboard_sessions_by_expiry ON dashboard_sessions (expires_at);
