-- Schema 5: when the server first stored each record (its `received_at`), as sync
-- answers tell it. Kept beside the documents, never in them: a document holds only what
-- devices recorded. The device's own evaluation reads them, so that it gives the same
-- `clock_skew` warnings as the server.
--
-- A receipt may name a record the document does not hold yet (the server's changes that
-- bring it were refused here, say): it is used once the record arrives.
CREATE TABLE receipts (
    episode     TEXT NOT NULL REFERENCES episodes (id),
    event       TEXT NOT NULL,
    received_at INTEGER NOT NULL, -- the server's clock, Unix milliseconds
    PRIMARY KEY (episode, event)
) STRICT, WITHOUT ROWID;

-- A store upgraded from schema 4 has no receipts: it asks the server for everything of
-- its teams again from the start (the server sends each episode's receipts with it,
-- beside sync messages that carry only what the store lacks).
DELETE FROM meta WHERE key = 'sync.cursor';
