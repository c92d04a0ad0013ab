-- One integer per sequence space (gateway, source, boot): the watermark bookkeeping on the hot path
-- keys on it instead of five text columns. Measured before this (bench/bench_district.py, 1000-event
-- batches touching 800 sources): the advance cost ~70-95 ms a batch, more than the events' COPY,
-- mostly joins, sorts and an ON CONFLICT upsert over the five text columns; seq_runs' five-column
-- text index doubled the cost of recording the runs.
--
-- The id lives on `marks` itself: a source's marks row is created (seq 0: nothing covered) when the
-- source is first seen, so the advance is a plain UPDATE by integer key and readers of `marks`
-- (marks_of, due_replays, the tests) keep their text columns.
ALTER TABLE marks ADD COLUMN src bigint GENERATED ALWAYS AS IDENTITY;
ALTER TABLE marks ADD CONSTRAINT marks_src_key UNIQUE (src);
-- Every active source's row is updated each mark interval: room on the page keeps those updates
-- HOT (no new entries in marks' two indexes).
ALTER TABLE marks SET (fillfactor = 50);

-- seq_runs keyed by the id; runs already recorded are carried over.
INSERT INTO marks (district, community, gateway, source, boot)
SELECT DISTINCT district, community, gateway, source, boot FROM seq_runs
ON CONFLICT DO NOTHING;
CREATE TABLE seq_runs_by_src (
    src bigint NOT NULL,
    lo  bigint NOT NULL,
    hi  bigint NOT NULL,
    CHECK (lo <= hi)
);
INSERT INTO seq_runs_by_src (src, lo, hi)
SELECT m.src, r.lo, r.hi FROM seq_runs r
JOIN marks m USING (district, community, gateway, source, boot);
DROP TABLE seq_runs;
ALTER TABLE seq_runs_by_src RENAME TO seq_runs;
CREATE INDEX seq_runs_src_lo ON seq_runs (src, lo);

-- The text-keyed versions read the dropped table's columns.
DROP FUNCTION advance_marks(text[], text[], text[], text[], bigint[]);
DROP FUNCTION apply_status_seqs(text[], text[], text[], text[], bigint[], bigint[], bigint[]);

-- The id of each (district, community, gateway, source, boot), creating the marks rows it lacks.
-- Called in its own committed transaction before a batch that names new sources, so an id a worker
-- caches always exists.
CREATE FUNCTION source_ids(d text[], c text[], g text[], s text[], b bigint[])
RETURNS TABLE (o_district text, o_community text, o_gateway text, o_source text, o_boot bigint, o_src bigint)
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO marks (district, community, gateway, source, boot)
    SELECT DISTINCT u.ud, u.uc, u.ug, u.us, u.ub FROM unnest(d, c, g, s, b) AS u(ud, uc, ug, us, ub)
    ORDER BY 1, 2, 3, 4, 5
    ON CONFLICT DO NOTHING;
    RETURN QUERY
    SELECT m.district, m.community, m.gateway, m.source, m.boot, m.src
    FROM marks m JOIN (SELECT DISTINCT * FROM unnest(d, c, g, s, b)) AS u(ud, uc, ug, us, ub)
      ON m.district = u.ud AND m.community = u.uc AND m.gateway = u.ug AND m.source = u.us AND m.boot = u.ub;
END
$$;

-- Fold the arrived runs of each source into its mark ("gaps and islands" over the runs, one
-- statement), delete the runs it covers; return every source with its new mark and whether it
-- moved. Marks are locked in src order first, so two workers never deadlock on each other.
CREATE FUNCTION advance_sources(srcs bigint[])
RETURNS TABLE (o_district text, o_community text, o_gateway text, o_src bigint, o_changed boolean)
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM 1 FROM marks m WHERE m.src = ANY(srcs) ORDER BY m.src FOR UPDATE;
    RETURN QUERY
    WITH r AS (
        -- Every given source, with its runs if it has any (none: only the gap state is re-derived).
        SELECT m.src, m.seq AS mark, sr.lo, sr.hi,
               max(sr.hi) OVER (PARTITION BY m.src ORDER BY sr.lo
                                ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING) AS prev_hi
        FROM marks m LEFT JOIN seq_runs sr ON sr.src = m.src WHERE m.src = ANY(srcs)
    ), brk AS (
        -- A run breaks the chain if it starts past everything before it (the mark, earlier runs) + 1.
        SELECT r.*, r.lo > greatest(r.mark, coalesce(r.prev_hi, 0)) + 1 AS is_break FROM r
    ), fb AS (
        SELECT brk.src, min(brk.lo) FILTER (WHERE brk.is_break) AS break_lo FROM brk GROUP BY brk.src
    ), newm AS (
        SELECT brk.src, brk.mark,
               greatest(brk.mark, coalesce(max(brk.hi) FILTER (WHERE fb.break_lo IS NULL OR brk.lo < fb.break_lo),
                                           0)) AS seq,
               bool_or(fb.break_lo IS NOT NULL) AS pending
        FROM brk JOIN fb USING (src)
        GROUP BY brk.src, brk.mark
    ), up AS (
        UPDATE marks m SET seq = newm.seq, updated_at = now(),
               gap_since = CASE WHEN newm.pending OR coalesce(m.reported_last, 0) > newm.seq
                                THEN coalesce(m.gap_since, now()) END,
               replays = CASE WHEN newm.pending OR coalesce(m.reported_last, 0) > newm.seq THEN m.replays ELSE 0 END
        FROM newm WHERE m.src = newm.src
        RETURNING m.district, m.community, m.gateway, m.src, newm.seq <> newm.mark AS changed
    ), del AS (
        DELETE FROM seq_runs sr USING newm WHERE sr.src = newm.src AND sr.hi <= newm.seq
    )
    SELECT up.district, up.community, up.gateway, up.src, up.changed FROM up;
END
$$;

-- Apply what a status says: `last` (the newest seq the gateway committed: a tail gap is visible only
-- from it) and `floor` (the lowest seq it still holds: anything missing below it will never come,
-- so record the gap and move the mark to floor - 1). Same rules as 0004's, keyed by src; returns
-- the src of every key it was given, so the caller advances them.
CREATE FUNCTION apply_status_seqs(d text[], c text[], g text[], s text[], b bigint[], f bigint[], l bigint[])
RETURNS TABLE (o_src bigint)
LANGUAGE plpgsql AS $$
DECLARE
    k record;
    r record;
    mark bigint;
    id bigint;
    nxt bigint;
BEGIN
    -- Create the missing rows, then lock in src order like advance_sources (no deadlock between them).
    INSERT INTO marks (district, community, gateway, source, boot)
    SELECT DISTINCT u.ud, u.uc, u.ug, u.us, u.ub FROM unnest(d, c, g, s, b) AS u(ud, uc, ug, us, ub)
    ORDER BY 1, 2, 3, 4, 5
    ON CONFLICT DO NOTHING;
    PERFORM 1 FROM marks m JOIN unnest(d, c, g, s, b) AS u(ud, uc, ug, us, ub)
        ON m.district = u.ud AND m.community = u.uc AND m.gateway = u.ug AND m.source = u.us AND m.boot = u.ub
        ORDER BY m.src FOR UPDATE OF m;
    FOR k IN SELECT u.d, u.c, u.g, u.s, u.b, max(u.f) AS f, max(u.l) AS l
             FROM unnest(d, c, g, s, b, f, l) AS u(d, c, g, s, b, f, l)
             GROUP BY 1, 2, 3, 4, 5 ORDER BY 1, 2, 3, 4, 5 LOOP
        SELECT m.seq, m.src INTO mark, id FROM marks m
            WHERE m.district = k.d AND m.community = k.c AND m.gateway = k.g AND m.source = k.s AND m.boot = k.b;
        UPDATE marks m SET reported_last = greatest(m.reported_last, k.l) WHERE m.src = id;
        IF k.f IS NOT NULL AND k.f - 1 > mark THEN
            -- Every seq in (mark, floor) not covered by an arrived run is lost: record each hole.
            nxt := mark + 1;
            FOR r IN SELECT sr.lo, sr.hi FROM seq_runs sr WHERE sr.src = id AND sr.lo < k.f ORDER BY sr.lo LOOP
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
            UPDATE marks m SET seq = k.f - 1, updated_at = now() WHERE m.src = id;
        END IF;
        o_src := id;
        RETURN NEXT;
    END LOOP;
END
$$;

-- The events' indexed text columns compare bytewise. Under the database's default collation (C.UTF-8
-- here, a libc locale) every comparison in a B-tree insert goes through strcoll; with "C" it is a
-- memcmp. Measured (COPY of 20k events, PK + the three secondary indexes): +20-40 % rows/s. Equality
-- (all the search and the dashboards ask of these columns) is the same under both; the change
-- rebuilds the indexes, not the table.
ALTER TABLE events ALTER COLUMN subject_pseudonym TYPE text COLLATE "C",
                   ALTER COLUMN gateway TYPE text COLLATE "C",
                   ALTER COLUMN kind TYPE text COLLATE "C";
