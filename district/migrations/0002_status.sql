-- Each gateway's retained status over time. The audit head stored here, outside the gateway, is what
-- makes a rewrite of the gateway's audit history detectable (`edgegw district audit-check`).
CREATE TABLE gateway_status (
    id                   bigserial   PRIMARY KEY,
    district             text        NOT NULL,
    community            text        NOT NULL,
    gateway              text        NOT NULL,
    received_at          timestamptz NOT NULL,
    online               boolean     NOT NULL,
    boot                 bigint,
    outbox_depth         bigint,
    oldest_pending_age_s double precision,
    alarms               text[]      NOT NULL DEFAULT '{}',
    models               jsonb,
    audit_seq            bigint,
    audit_hash           text,
    body                 jsonb       NOT NULL
);
CREATE INDEX gateway_status_gw_time ON gateway_status (district, community, gateway, received_at);

-- The latest status of each gateway, for dashboards and alerting.
CREATE VIEW gateway_latest AS
SELECT DISTINCT ON (district, community, gateway) *
FROM gateway_status ORDER BY district, community, gateway, received_at DESC, id DESC;
