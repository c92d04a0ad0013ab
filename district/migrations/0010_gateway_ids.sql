-- One integer per gateway (district, community, gateway): the events' gateway + time index keys on
-- it instead of the gateway's name. Every event pays an insert into that index; an int compares in
-- one instruction where the text (even under COLLATE "C") is detoasted, length-checked and memcmp'd,
-- and the index no longer needs district and community to tell two same-named gateways apart.
--
-- The text columns stay on `events` (every reader, the search's results and the APIs are unchanged);
-- `gateway_id` is what the index and the queries that filter by gateway use. No foreign key: it
-- would fire a trigger per copied row. The loader takes ids from `gateway_ids()` in a committed
-- transaction of its own before any batch names them (like `source_ids`, migration 0008), so every
-- id in `events` names a row here.
CREATE TABLE gateways (
    id        integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    district  text    NOT NULL,
    community text    NOT NULL,
    gateway   text    NOT NULL,
    UNIQUE (district, community, gateway)
);

-- Existing events (a deployment upgrading): their gateways get ids, then the events carry them.
-- This rewrites the stored events once; on a large database run it in a maintenance window.
INSERT INTO gateways (district, community, gateway)
SELECT DISTINCT district, community, gateway FROM events ORDER BY 1, 2, 3;
ALTER TABLE events ADD COLUMN gateway_id integer;
UPDATE events e SET gateway_id = g.id FROM gateways g
WHERE g.district = e.district AND g.community = e.community AND g.gateway = e.gateway;
ALTER TABLE events ALTER COLUMN gateway_id SET NOT NULL;

DROP INDEX events_gateway_ts;
CREATE INDEX events_gateway_ts ON events (gateway_id, ts);

-- The id of each (district, community, gateway), creating the rows it lacks (sorted, so two
-- workers inserting the same new gateways never deadlock).
CREATE FUNCTION gateway_ids(d text[], c text[], g text[])
RETURNS TABLE (o_district text, o_community text, o_gateway text, o_id integer)
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO gateways (district, community, gateway)
    SELECT DISTINCT u.ud, u.uc, u.ug FROM unnest(d, c, g) AS u(ud, uc, ug)
    ORDER BY 1, 2, 3
    ON CONFLICT DO NOTHING;
    RETURN QUERY
    SELECT gw.district, gw.community, gw.gateway, gw.id
    FROM gateways gw JOIN (SELECT DISTINCT * FROM unnest(d, c, g)) AS u(ud, uc, ug)
      ON gw.district = u.ud AND gw.community = u.uc AND gw.gateway = u.ug;
END
$$;
