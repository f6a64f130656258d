-- Schema 9 on PostgreSQL: the outbox, as SQLite's `schema/v9.sql` (the comments there
-- say why). Several replicas claim from it at once: a claim takes its rows with
-- `FOR UPDATE SKIP LOCKED`, so two never take the same row.

CREATE TABLE outbox (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    kind            text NOT NULL,
    dedupe_key      text NOT NULL UNIQUE,
    team            text,
    episode         text,
    payload         text NOT NULL,
    state           text NOT NULL DEFAULT 'pending'
                    CHECK (state IN ('pending', 'sending', 'sent', 'retrying', 'failed')),
    attempts        bigint NOT NULL DEFAULT 0,
    next_attempt_at bigint NOT NULL,
    claimed_until   bigint,
    last_error      text,
    created_at      bigint NOT NULL,
    sent_at         bigint
);

CREATE INDEX outbox_due ON outbox (kind, next_attempt_at) WHERE state IN ('pending', 'retrying');
CREATE INDEX outbox_claimed ON outbox (kind, claimed_until) WHERE state = 'sending';
CREATE INDEX outbox_unsent ON outbox (episode) WHERE state != 'sent';

-- The audit log names a fourth channel, `server`: what the server's own workers do.
ALTER TABLE audit DROP CONSTRAINT audit_via_check;
ALTER TABLE audit ADD CONSTRAINT audit_via_check CHECK (via IN ('api', 'dashboard', 'sync', 'server'));
