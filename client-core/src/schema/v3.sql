-- Schema 3: each episode's typed view, kept beside its document so that opening the
-- store need not build it again from every document.
--
-- A view is only a cache: it is read back only when `heads` (the document's heads,
-- sorted, 32 bytes each) are exactly those of the document loaded from `episodes` and
-- `changes`; otherwise the view is built from the document and written here again. No
-- row, or a stale one, costs time and never a record. Stores upgraded from schema 2
-- start with none.
CREATE TABLE views (
    episode TEXT PRIMARY KEY REFERENCES episodes (id),
    heads   BLOB NOT NULL,
    view    BLOB NOT NULL -- deflated {"format": 1, "episode": episode JSON}
) STRICT;
