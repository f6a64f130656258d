-- Schema 8: the change sequence number each receipt was noted at, so that a sync answer
-- carries the receipt times a device lacks: those noted after its cursor (or all of an
-- episode's, when the document crosses whole). A receipt is noted in the transaction
-- that gives its episode a new `seq`, and takes that `seq`.
--
-- Receipts noted before this schema take their episode's current `seq`: a device whose
-- cursor is past it already holds the episode, and its store (client schema 5) asks for
-- everything again from cursor 0, so it receives them too. A receipt inserted without a
-- `seq` (0, as `serve --demo` seeds them) reaches a device with the whole document or in
-- a sync from cursor 0.
ALTER TABLE receipts ADD COLUMN seq INTEGER NOT NULL DEFAULT 0;
UPDATE receipts SET seq = (SELECT e.seq FROM episodes e WHERE e.id = receipts.episode);
