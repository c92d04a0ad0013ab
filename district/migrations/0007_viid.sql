-- The GA/T 1400 bridge (district/viid): subscriptions the upper platform placed with us, the
-- notifications queued for it, the cursor over watch_hit events and the bridge's own state.

-- Subscriptions from the upper platform (POST/PUT/DELETE /VIID/Subscribes on our side).
CREATE TABLE viid_subscriptions (
    subscribe_id      text        PRIMARY KEY,
    details           text[]      NOT NULL,            -- SubscribeDetail codes answered (3, 4, 7)
    resource_uri      text        NOT NULL DEFAULT '',
    receive_addr      text        NOT NULL,
    title             text        NOT NULL DEFAULT '',
    applicant         text        NOT NULL DEFAULT '',
    begin_at          timestamptz,
    end_at            timestamptz,
    report_interval_s double precision,
    status            smallint    NOT NULL DEFAULT 0,  -- 0 active, 1 cancelled, 2 expired
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now(),
    last_report_at    timestamptz
);

-- Notifications waiting for (or given) the upper platform's acknowledgement. notification_id is
-- fixed when the row is made and reused by every retry; event_id makes a watch_hit enqueue once.
CREATE TABLE viid_outbox (
    id              bigserial   PRIMARY KEY,
    kind            text        NOT NULL CHECK (kind IN ('subscribe', 'disposition')),
    notification_id text        NOT NULL UNIQUE,
    subscribe_id    text,
    event_id        uuid        UNIQUE,
    url             text        NOT NULL,
    body            jsonb       NOT NULL,
    state           text        NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'delivered', 'refused', 'dead')),
    attempts        integer     NOT NULL DEFAULT 0,
    next_at         timestamptz NOT NULL DEFAULT now(),
    last_error      text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    delivered_at    timestamptz
);
CREATE INDEX viid_outbox_due ON viid_outbox (next_at, id) WHERE state = 'pending';

-- How far the bridge has read watch_hit events (by received_at, with a look-back: see viid/outbox.py).
CREATE TABLE viid_cursor (
    name        text        PRIMARY KEY,
    received_at timestamptz NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now()
);

-- The bridge's state for `edgegw district viid status`: registration, keepalive, clock offset.
CREATE TABLE viid_state (
    key        text        PRIMARY KEY,
    value      jsonb       NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- watch_hit alarms by arrival, for the cursor's scan (a partial index: a few rows among millions).
CREATE INDEX events_watch_hit_received ON events (received_at)
    WHERE kind = 'alarm' AND (payload -> 'attrs' ->> 'code') = 'watch_hit';
