-- Watermark maintenance as two set-based functions, so a batch touching hundreds of sources costs
-- one round trip. Keys are locked in sorted order, so two workers never deadlock on each other.

-- Fold the arrived runs of each key into its mark; report every key with its (new) mark.
CREATE FUNCTION advance_marks(d text[], c text[], g text[], s text[], b bigint[])
RETURNS TABLE (o_district text, o_community text, o_gateway text, o_source text, o_boot bigint,
               o_seq bigint, o_changed boolean)
LANGUAGE plpgsql AS $$
DECLARE
    k record;
    r record;
    old_mark bigint;
    mark bigint;
    rep_last bigint;
    pending boolean;
BEGIN
    FOR k IN SELECT DISTINCT u.d, u.c, u.g, u.s, u.b FROM unnest(d, c, g, s, b) AS u(d, c, g, s, b)
             ORDER BY 1, 2, 3, 4, 5 LOOP
        INSERT INTO marks (district, community, gateway, source, boot) VALUES (k.d, k.c, k.g, k.s, k.b)
            ON CONFLICT DO NOTHING;
        SELECT m.seq, m.reported_last INTO old_mark, rep_last FROM marks m
            WHERE m.district = k.d AND m.community = k.c AND m.gateway = k.g AND m.source = k.s AND m.boot = k.b
            FOR UPDATE;
        mark := old_mark;
        pending := false;
        FOR r IN SELECT sr.lo, sr.hi FROM seq_runs sr
                 WHERE sr.district = k.d AND sr.community = k.c AND sr.gateway = k.g AND sr.source = k.s
                   AND sr.boot = k.b ORDER BY sr.lo LOOP
            IF r.lo <= mark + 1 THEN
                mark := greatest(mark, r.hi);
            ELSE
                pending := true;
                EXIT;
            END IF;
        END LOOP;
        DELETE FROM seq_runs sr WHERE sr.district = k.d AND sr.community = k.c AND sr.gateway = k.g
            AND sr.source = k.s AND sr.boot = k.b AND sr.hi <= mark;
        UPDATE marks m SET seq = mark, updated_at = now(),
               gap_since = CASE WHEN pending OR coalesce(rep_last, 0) > mark THEN coalesce(m.gap_since, now()) END,
               replays = CASE WHEN pending OR coalesce(rep_last, 0) > mark THEN m.replays ELSE 0 END
            WHERE m.district = k.d AND m.community = k.c AND m.gateway = k.g AND m.source = k.s AND m.boot = k.b;
        o_district := k.d; o_community := k.c; o_gateway := k.g; o_source := k.s; o_boot := k.b;
        o_seq := mark; o_changed := mark <> old_mark;
        RETURN NEXT;
    END LOOP;
END
$$;

-- Apply what a status says: `last` (the newest seq the gateway committed: a tail gap is visible only
-- from it) and `floor` (the lowest seq it still holds: anything missing below it will never come,
-- so record the gap and move the mark to floor - 1). Returns the keys whose mark moved.
CREATE FUNCTION apply_status_seqs(d text[], c text[], g text[], s text[], b bigint[], f bigint[], l bigint[])
RETURNS TABLE (o_district text, o_community text, o_gateway text, o_source text, o_boot bigint, o_seq bigint)
LANGUAGE plpgsql AS $$
DECLARE
    k record;
    r record;
    mark bigint;
    nxt bigint;
BEGIN
    FOR k IN SELECT u.d, u.c, u.g, u.s, u.b, max(u.f) AS f, max(u.l) AS l
             FROM unnest(d, c, g, s, b, f, l) AS u(d, c, g, s, b, f, l)
             GROUP BY 1, 2, 3, 4, 5 ORDER BY 1, 2, 3, 4, 5 LOOP
        INSERT INTO marks (district, community, gateway, source, boot) VALUES (k.d, k.c, k.g, k.s, k.b)
            ON CONFLICT DO NOTHING;
        SELECT m.seq INTO mark FROM marks m
            WHERE m.district = k.d AND m.community = k.c AND m.gateway = k.g AND m.source = k.s AND m.boot = k.b
            FOR UPDATE;
        UPDATE marks m SET reported_last = greatest(m.reported_last, k.l)
            WHERE m.district = k.d AND m.community = k.c AND m.gateway = k.g AND m.source = k.s AND m.boot = k.b;
        IF k.f IS NOT NULL AND k.f - 1 > mark THEN
            -- Every seq in (mark, floor) not covered by an arrived run is lost: record each hole.
            nxt := mark + 1;
            FOR r IN SELECT sr.lo, sr.hi FROM seq_runs sr
                     WHERE sr.district = k.d AND sr.community = k.c AND sr.gateway = k.g AND sr.source = k.s
                       AND sr.boot = k.b AND sr.lo < k.f ORDER BY sr.lo LOOP
                IF r.lo > nxt THEN
                    INSERT INTO gaps (district, community, gateway, source, boot, seq_from, seq_to)
                        VALUES (k.d, k.c, k.g, k.s, k.b, nxt, r.lo - 1);
                END IF;
                nxt := greatest(nxt, r.hi + 1);
            END LOOP;
            IF nxt <= k.f - 1 THEN
                INSERT INTO gaps (district, community, gateway, source, boot, seq_from, seq_to)
                    VALUES (k.d, k.c, k.g, k.s, k.b, nxt, k.f - 1);
            END IF;
            UPDATE marks m SET seq = k.f - 1, updated_at = now()
                WHERE m.district = k.d AND m.community = k.c AND m.gateway = k.g AND m.source = k.s
                  AND m.boot = k.b;
            o_district := k.d; o_community := k.c; o_gateway := k.g; o_source := k.s; o_boot := k.b;
            o_seq := k.f - 1;
            RETURN NEXT;
        END IF;
    END LOOP;
END
$$;
