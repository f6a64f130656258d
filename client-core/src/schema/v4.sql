-- Schema 4: whether the server is owed word that this device holds the changes it last
-- sent of an episode. A session that has applied the server's changes and has nothing
-- else to say ends there; the next session's first request says it (see `sync.rs`).
-- Stores upgraded from schema 3 owe nothing: they said it at the time.
ALTER TABLE sync_states ADD COLUMN owed INTEGER NOT NULL DEFAULT 0 CHECK (owed IN (0, 1));
