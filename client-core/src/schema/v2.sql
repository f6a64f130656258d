-- Schema 2: the sync engine's state.

-- The Automerge sync state with the server per episode: only the heads both are known
-- to share. No row: the server has never confirmed holding the episode, so it goes whole.
CREATE TABLE sync_states (
    episode TEXT PRIMARY KEY REFERENCES episodes (id),
    state   BLOB NOT NULL
) STRICT;

-- The server's evaluation of each episode, as of its last sync: the authoritative
-- actions, shown beside the device's provisional ones.
CREATE TABLE server_actions (
    episode      TEXT PRIMARY KEY REFERENCES episodes (id),
    evaluated_at INTEGER NOT NULL, -- the server's clock, Unix milliseconds
    evaluation   TEXT NOT NULL     -- evaluation JSON
) STRICT;

-- Episodes the server refused, with its reason: kept here (nothing is lost), and not
-- sent again until they change.
CREATE TABLE held_back (
    episode TEXT PRIMARY KEY REFERENCES episodes (id),
    heads   BLOB NOT NULL,
    reason  TEXT NOT NULL
) STRICT;
