-- The platform's own hash-chained audit log (same record hash as the gateway's edge.audit chain).
CREATE TABLE audit_log (
    seq       bigint PRIMARY KEY,
    ts_ms     bigint NOT NULL,
    actor     text   NOT NULL,
    action    text   NOT NULL,
    details   text   NOT NULL,
    prev_hash text   NOT NULL,
    hash      text   NOT NULL UNIQUE
);

-- Search grants for the sliding-window rate limit, shared by every API process and the CLI.
CREATE TABLE search_grants (
    principal text        NOT NULL,
    officer   text        NOT NULL,
    ts        timestamptz NOT NULL
);
CREATE INDEX search_grants_who ON search_grants (principal, officer, ts);
