-- Schema 8 on PostgreSQL: the change sequence number each receipt was noted at, as
-- SQLite's `schema/v8.sql` (the comments there say why). The `seq` is taken from the one
-- counter, `change_seq`, in the transaction that gives the episode its new `seq`.

ALTER TABLE receipts ADD COLUMN seq bigint NOT NULL DEFAULT 0;
UPDATE receipts SET seq = e.seq FROM episodes e WHERE e.id = receipts.episode;
