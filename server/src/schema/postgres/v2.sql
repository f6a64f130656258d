-- Schema 2 on PostgreSQL: episode documents and the sync protocol's state, as SQLite's
-- `schema/v2.sql`. One difference: `seq` is counted in `change_seq`, a single row that
-- every writing transaction updates and holds locked until it commits, so that `seq`
-- values become visible in the order they were taken (docs/adr/0004-storage.md).
-- SQLite, with its single writer, keeps the counter in `meta`.

CREATE TABLE change_seq (
    only_row boolean PRIMARY KEY DEFAULT true CHECK (only_row),
    seq      bigint NOT NULL
);
INSERT INTO change_seq (only_row, seq) VALUES (true, 0);

CREATE TABLE episodes (
    id         text PRIMARY KEY,          -- UUID
    team       text NOT NULL REFERENCES teams (id),
    seq        bigint NOT NULL,
    snapshot   bytea NOT NULL,
    created_at bigint NOT NULL
);
CREATE INDEX episodes_by_team_seq ON episodes (team, seq);
CREATE INDEX episodes_by_seq ON episodes (seq);

CREATE TABLE episode_changes (
    n       bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    episode text NOT NULL REFERENCES episodes (id),
    bytes   bytea NOT NULL
);
CREATE INDEX episode_changes_by_episode ON episode_changes (episode, n);

CREATE TABLE sync_states (
    episode text NOT NULL REFERENCES episodes (id),
    device  text NOT NULL,
    state   bytea NOT NULL,
    PRIMARY KEY (episode, device)
);
CREATE INDEX sync_states_by_device ON sync_states (device);

CREATE TABLE receipts (
    episode     text NOT NULL REFERENCES episodes (id),
    event       text NOT NULL,
    received_at bigint NOT NULL,          -- Unix milliseconds
    device      text NOT NULL,
    PRIMARY KEY (episode, event)
);

CREATE TABLE drops (
    episode text NOT NULL,
    device  text NOT NULL,
    seq     bigint NOT NULL,
    PRIMARY KEY (episode, device)
);

CREATE TABLE revoked_devices (
    device     text PRIMARY KEY,
    revoked_at bigint NOT NULL,
    revoked_by text NOT NULL
);
