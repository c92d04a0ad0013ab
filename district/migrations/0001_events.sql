-- Events, partitioned by day on RANGE(event_id): a UUIDv7 starts with its millisecond timestamp, so
-- day bounds on the id are day bounds in time and the primary key stays the plain event_id.
CREATE TABLE events (
    event_id          uuid        NOT NULL,
    ts                timestamptz NOT NULL,
    district          text        NOT NULL,
    community         text        NOT NULL,
    gateway           text        NOT NULL,
    source            text        NOT NULL,
    boot              bigint      NOT NULL,
    seq               bigint      NOT NULL,
    kind              text        NOT NULL,
    subject_type      text,
    subject_pseudonym text,
    key_id            text,
    payload           jsonb       NOT NULL,
    received_at       timestamptz NOT NULL,
    PRIMARY KEY (event_id)
) PARTITION BY RANGE (event_id);

CREATE INDEX events_subject_ts ON events (subject_pseudonym, ts) WHERE subject_pseudonym IS NOT NULL;
CREATE INDEX events_gateway_ts ON events (gateway, ts);
CREATE INDEX events_kind_ts ON events (kind, ts);

-- Per-source sequence runs that arrived and are not yet folded into a watermark: tiny (one row per
-- source and batch until the next advance), so watermarks need no index on the events themselves.
CREATE TABLE seq_runs (
    district  text   NOT NULL,
    community text   NOT NULL,
    gateway   text   NOT NULL,
    source    text   NOT NULL,
    boot      bigint NOT NULL,
    lo        bigint NOT NULL,
    hi        bigint NOT NULL,
    CHECK (lo <= hi)
);
CREATE INDEX seq_runs_key ON seq_runs (district, community, gateway, source, boot, lo);

-- The committed watermark per source and boot: the highest seq with nothing missing at or below it.
CREATE TABLE marks (
    district       text        NOT NULL,
    community      text        NOT NULL,
    gateway        text        NOT NULL,
    source         text        NOT NULL,
    boot           bigint      NOT NULL,
    seq            bigint      NOT NULL DEFAULT 0,
    reported_last  bigint,
    gap_since      timestamptz,
    last_replay_at timestamptz,
    replays        integer     NOT NULL DEFAULT 0,
    updated_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (district, community, gateway, source, boot)
);

-- Seqs the gateway says it no longer holds (its status floor passed them: quota drop or expiry).
CREATE TABLE gaps (
    district  text        NOT NULL,
    community text        NOT NULL,
    gateway   text        NOT NULL,
    source    text        NOT NULL,
    boot      bigint      NOT NULL,
    seq_from  bigint      NOT NULL,
    seq_to    bigint      NOT NULL,
    closed_at timestamptz NOT NULL DEFAULT now()
);

-- Messages that failed validation: the reason, never the payload (it may carry what must not be kept).
CREATE TABLE rejects (
    id             bigserial   PRIMARY KEY,
    received_at    timestamptz NOT NULL DEFAULT now(),
    topic          text        NOT NULL,
    reason         text        NOT NULL,
    size           integer     NOT NULL,
    payload_sha256 text        NOT NULL
);
CREATE INDEX rejects_received ON rejects (received_at);
