-- The public keys the platform knows for each gateway, registered at provisioning
-- (`edgegw district gateway register`): its identity (X25519 + Ed25519, `edgegw keys init` prints it;
-- the Ed25519 half checks the audit heads it signs) and its query door's X25519 key
-- (`edgegw query door-key` prints it; district search details are sealed to it). Public keys only.
CREATE TABLE gateway_keys (
    district        text        NOT NULL,
    community       text        NOT NULL,
    gateway         text        NOT NULL,
    identity_public text        NOT NULL,  -- edgegw-gw1:<x25519 hex>:<ed25519 hex>
    door_public     text,                  -- 64 hex digits (X25519), NULL until the door is registered
    registered_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (district, community, gateway)
);
