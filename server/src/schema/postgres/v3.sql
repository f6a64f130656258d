-- Schema 3 on PostgreSQL: the caseload's summaries and the audit log, as SQLite's
-- `schema/v3.sql`. The audit log is append-only here too: a trigger refuses every
-- update, delete and truncate.

CREATE TABLE summaries (
    episode         text PRIMARY KEY REFERENCES episodes (id),
    seq             bigint NOT NULL,
    pathway         text NOT NULL,
    patient_ref     text NOT NULL,
    open_actions    bigint NOT NULL,
    overdue_actions bigint NOT NULL,
    conflicts       bigint NOT NULL,
    duplicates      bigint NOT NULL,
    unfiled         bigint NOT NULL,
    next_due        bigint,               -- Unix seconds; NULL: nothing changes by the clock
    evaluated_at    bigint NOT NULL       -- Unix seconds
);
CREATE INDEX summaries_by_next_due ON summaries (next_due);

CREATE TABLE summary_actions (
    episode  text NOT NULL REFERENCES summaries (episode) ON DELETE CASCADE,
    action   text NOT NULL,
    code     text NOT NULL,
    owner    text NOT NULL,
    priority text NOT NULL,
    state    text NOT NULL CHECK (state IN ('open', 'overdue')),
    due      bigint NOT NULL,             -- Unix seconds
    PRIMARY KEY (episode, action)
);

CREATE TABLE summary_appointments (
    episode text NOT NULL REFERENCES summaries (episode) ON DELETE CASCADE,
    event   text NOT NULL,
    at      bigint NOT NULL,              -- Unix seconds
    outcome text NOT NULL,
    PRIMARY KEY (episode, event)
);

CREATE TABLE audit (
    n        bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at       bigint NOT NULL,             -- Unix milliseconds
    user_id  text NOT NULL,
    username text NOT NULL,
    device   text NOT NULL,
    via      text NOT NULL CHECK (via IN ('api', 'dashboard', 'sync')),
    action   text NOT NULL,
    episode  text,
    detail   text
);
CREATE INDEX audit_by_episode ON audit (episode, n);

CREATE FUNCTION audit_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'the audit log is append-only';
END
$$;

CREATE TRIGGER audit_no_change BEFORE UPDATE OR DELETE ON audit
    FOR EACH ROW EXECUTE FUNCTION audit_append_only();
CREATE TRIGGER audit_no_truncate BEFORE TRUNCATE ON audit
    FOR EACH STATEMENT EXECUTE FUNCTION audit_append_only();
