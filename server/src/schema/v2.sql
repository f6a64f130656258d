-- Schema 2: episode documents and the sync protocol's state.

-- One row per episode: its document as a compacted snapshot plus the changes since
-- (`episode_changes`), the team that holds it now (a transfer changes this, never the
-- document's own opening team), and `seq`, the server-wide change sequence number of
-- its last change: a device's cursor is the highest `seq` it has seen.
CREATE TABLE episodes (
    id         TEXT PRIMARY KEY NOT NULL,  -- UUID
    team       TEXT NOT NULL REFERENCES teams (id),
    seq        INTEGER NOT NULL,
    snapshot   BLOB NOT NULL,
    created_at INTEGER NOT NULL
) STRICT;
CREATE INDEX episodes_by_team_seq ON episodes (team, seq);

CREATE TABLE episode_changes (
    n       INTEGER PRIMARY KEY AUTOINCREMENT,
    episode TEXT NOT NULL REFERENCES episodes (id),
    bytes   BLOB NOT NULL
) STRICT;
CREATE INDEX episode_changes_by_episode ON episode_changes (episode, n);

-- The Automerge sync state per (episode, device): only the heads both are known to
-- share. A row means the device holds the episode.
CREATE TABLE sync_states (
    episode TEXT NOT NULL REFERENCES episodes (id),
    device  TEXT NOT NULL,
    state   BLOB NOT NULL,
    PRIMARY KEY (episode, device)
) STRICT, WITHOUT ROWID;
CREATE INDEX sync_states_by_device ON sync_states (device);

-- When the server first received each record, and from which device (for `clock_skew`
-- and the merged timeline).
CREATE TABLE receipts (
    episode     TEXT NOT NULL REFERENCES episodes (id),
    event       TEXT NOT NULL,
    received_at INTEGER NOT NULL, -- Unix milliseconds
    device      TEXT NOT NULL,
    PRIMARY KEY (episode, event)
) STRICT, WITHOUT ROWID;

-- Episodes a device has handed over whole after they left its user's teams: reported
-- as dropped to that device until its cursor passes `seq`.
CREATE TABLE drops (
    episode TEXT NOT NULL,
    device  TEXT NOT NULL,
    seq     INTEGER NOT NULL,
    PRIMARY KEY (episode, device)
) STRICT, WITHOUT ROWID;

-- Devices a manager has revoked: told to wipe their store, and never let in again.
CREATE TABLE revoked_devices (
    device     TEXT PRIMARY KEY NOT NULL,
    revoked_at INTEGER NOT NULL,
    revoked_by TEXT NOT NULL
) STRICT, WITHOUT ROWID;
