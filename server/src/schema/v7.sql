-- Schema 7: devices belong to their registration.

-- One row per device id ever signed in under: registered to the user of its first
-- sign-in, with the SHA-256 of the key the device proves itself with. A later sign-in
-- naming the id must present that key; a device registered without one (by an older
-- client, or before schema 5) takes sign-ins only from users who share a team with the
-- user who registered it, and the first key presented then becomes its key. A manager
-- reaches (revokes) only the devices registered by a user of their teams.
CREATE TABLE devices (
    id            TEXT PRIMARY KEY NOT NULL,
    user_id       TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    key_hash      BLOB,             -- SHA-256 of the device's key; NULL: registered without one
    registered_at INTEGER NOT NULL  -- Unix seconds
) STRICT, WITHOUT ROWID;

-- The devices signed in on before this schema, each registered to the user of its first
-- session, without a key.
INSERT INTO devices (id, user_id, key_hash, registered_at)
SELECT s.device_id, s.user_id, NULL, s.created_at
FROM sessions s
WHERE s.rowid = (SELECT f.rowid FROM sessions f WHERE f.device_id = s.device_id ORDER BY f.created_at, f.rowid LIMIT 1);
