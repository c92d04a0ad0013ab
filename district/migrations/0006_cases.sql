-- Cases (发现 → 上报 → 受理 → 分拨 → 处置 → 反馈 → 归档): one per ingested alarm or watch_hit, opened in
-- the same transaction as the event, keyed by the opening event's id (a replay opens nothing new).
CREATE TABLE cases (
    case_id          uuid        PRIMARY KEY,             -- the event_id of the alarm that opened it
    opened_at        timestamptz NOT NULL,                -- the alarm's own time (the gateway's clock)
    received_at      timestamptz NOT NULL,
    district         text        NOT NULL,
    community        text        NOT NULL,
    gateway          text        NOT NULL,
    source           text        NOT NULL,
    code             text        NOT NULL,                -- attrs.code: obstruction, alarm_column, watch_hit, ...
    severity         text,
    target           text        NOT NULL,                -- zone, input or source: what a clearing alarm names
    state            text        NOT NULL CHECK (state IN ('discovered', 'reported', 'accepted', 'dispatched',
                                                           'handling', 'feedback', 'archived')),
    message          text        NOT NULL DEFAULT '',
    subject_pseudonym text,                               -- a pseudonym only (an obstructing plate's)
    key_id           text,
    links            uuid[]      NOT NULL DEFAULT '{}',   -- the events a watch_hit matched
    list_id          text,                                -- watch_hit: the list, its version and police case
    list_version     integer,
    police_case      text,
    id_kind          text,
    officer          text,                                -- who claimed it
    unit             text,                                -- where it was dispatched
    cleared_event_id uuid        UNIQUE,                  -- the gateway's clearing alarm, once seen
    cleared_at       timestamptz,
    duration_s       double precision,
    closed_at        timestamptz,
    closed_by        text,
    updated_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX cases_state ON cases (state, opened_at);
CREATE INDEX cases_open_target ON cases (district, community, gateway, source, code, target, opened_at)
    WHERE cleared_event_id IS NULL;
CREATE INDEX cases_police_case ON cases (police_case) WHERE police_case IS NOT NULL;

-- Every move of every case: who, from which state to which, when, and why. `txid` is the writing
-- transaction's id: the export's cursor, which (unlike a sequence) never skips a row that commits late.
CREATE TABLE case_history (
    id         bigserial   PRIMARY KEY,
    case_id    uuid        NOT NULL REFERENCES cases (case_id) ON DELETE CASCADE,
    at         timestamptz NOT NULL DEFAULT now(),
    actor      text        NOT NULL,
    from_state text,
    to_state   text        NOT NULL,
    note       text        NOT NULL DEFAULT '',
    unit       text,
    txid       xid8        NOT NULL DEFAULT pg_current_xact_id()
);
CREATE INDEX case_history_case ON case_history (case_id, id);
CREATE INDEX case_history_txid ON case_history (txid);

-- Watch-lists the platform built and pushed: pseudonyms only (the raw values are never stored), the
-- signed payload of the newest version, and what became of it.
CREATE TABLE watchlists (
    list_id     text        PRIMARY KEY,
    version     integer     NOT NULL CHECK (version >= 1),
    district    text        NOT NULL,
    police_case text        NOT NULL,
    approver    text        NOT NULL,
    issued_at   bigint      NOT NULL,
    expires_at  bigint      NOT NULL,
    entries     jsonb       NOT NULL,                     -- [{kind, key_id, pseudonym}]
    counts      jsonb       NOT NULL,                     -- {kind: values watched}
    epochs      text[]      NOT NULL,
    payload     text        NOT NULL,                     -- the signed list of `version`, as published
    state       text        NOT NULL CHECK (state IN ('built', 'pushed', 'revoked')),
    pushed_at   timestamptz,
    created_by  text        NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now()
);
