-- Schema 1 of the phone's store. Each episode document is kept as its compacted bytes
-- plus the incremental changes made since; loading one applies the changes in order.
CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
) STRICT;

CREATE TABLE episodes (
    id       TEXT PRIMARY KEY,
    team     TEXT NOT NULL,
    snapshot BLOB NOT NULL
) STRICT;

CREATE TABLE changes (
    seq     INTEGER PRIMARY KEY AUTOINCREMENT,
    episode TEXT NOT NULL REFERENCES episodes (id),
    bytes   BLOB NOT NULL
) STRICT;

CREATE INDEX changes_by_episode ON changes (episode, seq);
