-- Schema 7 on PostgreSQL: devices belong to their registration, as SQLite's
-- `schema/v7.sql` (the comments there say how).

CREATE TABLE devices (
    id            text PRIMARY KEY,
    user_id       text NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    key_hash      bytea,                  -- SHA-256 of the device's key; NULL: registered without one
    registered_at bigint NOT NULL         -- Unix seconds
);

-- The devices signed in on before this schema, each registered to the user of its first
-- session (by time, then by id), without a key.
INSERT INTO devices (id, user_id, key_hash, registered_at)
SELECT DISTINCT ON (device_id) device_id, user_id, NULL::bytea, created_at
FROM sessions
ORDER BY device_id, created_at, id;
