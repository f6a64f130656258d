-- Schema 5 on PostgreSQL: people who sign in with the trust's OpenID provider, and the
-- dashboard's sign-ins under way, as SQLite's `schema/v5.sql` (the comments there say
-- what each is for).

CREATE TABLE identities (
    provider     text NOT NULL,
    subject      text NOT NULL,
    user_id      text NOT NULL UNIQUE REFERENCES users (id),
    created_at   bigint NOT NULL,         -- Unix seconds
    last_sign_in bigint NOT NULL,         -- Unix seconds
    PRIMARY KEY (provider, subject)
);

CREATE TABLE oidc_pending (
    state_hash   text PRIMARY KEY,
    browser_hash text NOT NULL,
    provider     text NOT NULL,
    nonce        text NOT NULL,
    verifier     text NOT NULL,
    expires_at   bigint NOT NULL          -- Unix seconds
);
CREATE INDEX oidc_pending_by_expiry ON oidc_pending (expires_at);
