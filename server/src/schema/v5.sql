-- Schema 5: people who sign in with the trust's OpenID provider, and the dashboard's
-- sign-ins under way.

-- Who a provider says a user is: the provider's id (from the sign-in settings) and the
-- subject (`sub`) it gives them, which never changes and is never reused. A user made
-- at a first sign-in has one identity and no password (`users.password_hash` is empty).
CREATE TABLE identities (
    provider     TEXT NOT NULL,
    subject      TEXT NOT NULL,
    user_id      TEXT NOT NULL UNIQUE REFERENCES users (id),
    created_at   INTEGER NOT NULL, -- Unix seconds
    last_sign_in INTEGER NOT NULL, -- Unix seconds
    PRIMARY KEY (provider, subject)
) STRICT, WITHOUT ROWID;

-- A dashboard sign-in sent to a provider and not yet back: found by its `state` (kept as
-- a SHA-256), bound to the browser that started it (the SHA-256 of a cookie), with the
-- nonce and PKCE verifier the answer must match. Used once; gone after `expires_at`.
CREATE TABLE oidc_pending (
    state_hash   TEXT PRIMARY KEY NOT NULL,
    browser_hash TEXT NOT NULL,
    provider     TEXT NOT NULL,
    nonce        TEXT NOT NULL,
    verifier     TEXT NOT NULL,
    expires_at   INTEGER NOT NULL  -- Unix seconds
) STRICT, WITHOUT ROWID;
CREATE INDEX oidc_pending_by_expiry ON oidc_pending (expires_at);
