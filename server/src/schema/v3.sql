-- Schema 3: what the team base and the manager read without opening every document (the
-- caseload's summaries and open actions), and the audit log.

-- One row per episode: its counts at `evaluated_at`, made from the document at `seq`. A
-- summary is remade when the episode changes (its `seq` moves on) and when the clock
-- alone changes what is due (`next_due`: an action starts or falls overdue).
CREATE TABLE summaries (
    episode         TEXT PRIMARY KEY NOT NULL REFERENCES episodes (id),
    seq             INTEGER NOT NULL,
    pathway         TEXT NOT NULL,
    patient_ref     TEXT NOT NULL,
    open_actions    INTEGER NOT NULL,
    overdue_actions INTEGER NOT NULL,
    conflicts       INTEGER NOT NULL,
    duplicates      INTEGER NOT NULL,
    unfiled         INTEGER NOT NULL,
    next_due        INTEGER,          -- Unix seconds; NULL: nothing changes by the clock
    evaluated_at    INTEGER NOT NULL  -- Unix seconds
) STRICT, WITHOUT ROWID;

-- The open and overdue actions of each summary, for the caseload (overdue first, by
-- owner) and the metrics.
CREATE TABLE summary_actions (
    episode  TEXT NOT NULL REFERENCES summaries (episode) ON DELETE CASCADE,
    action   TEXT NOT NULL,    -- the action's stable id
    code     TEXT NOT NULL,
    owner    TEXT NOT NULL,
    priority TEXT NOT NULL,
    state    TEXT NOT NULL CHECK (state IN ('open', 'overdue')),
    due      INTEGER NOT NULL, -- Unix seconds
    PRIMARY KEY (episode, action)
) STRICT, WITHOUT ROWID;

-- The appointments of each summary (attended or missed, and why), for the team's "not
-- brought" and "did not attend" rates.
CREATE TABLE summary_appointments (
    episode TEXT NOT NULL REFERENCES summaries (episode) ON DELETE CASCADE,
    event   TEXT NOT NULL,
    at      INTEGER NOT NULL, -- Unix seconds
    outcome TEXT NOT NULL,    -- attended, or the miss reason (did_not_attend, not_brought, ...)
    PRIMARY KEY (episode, event)
) STRICT, WITHOUT ROWID;

-- Every read and write of an episode, by the API, the dashboard or a device's sync: who,
-- on which device, when, and what (an action name and, where useful, a record id or a
-- fact's name; never a patient identifier). Append-only: the triggers refuse to change or
-- delete a row.
CREATE TABLE audit (
    n        INTEGER PRIMARY KEY AUTOINCREMENT,
    at       INTEGER NOT NULL, -- Unix milliseconds
    user_id  TEXT NOT NULL,
    username TEXT NOT NULL,
    device   TEXT NOT NULL,
    via      TEXT NOT NULL CHECK (via IN ('api', 'dashboard', 'sync')),
    action   TEXT NOT NULL,
    episode  TEXT,
    detail   TEXT
) STRICT;
CREATE INDEX audit_by_episode ON audit (episode, n);

CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit
BEGIN
    SELECT RAISE(ABORT, 'the audit log is append-only');
END;

CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit
BEGIN
    SELECT RAISE(ABORT, 'the audit log is append-only');
END;
