-- advance_marks, set-based: one statement computes every key's new mark ("gaps and islands" over the
-- arrived runs), stores it and deletes the runs it covers. 0004's per-key loop cost ~30 ms for a batch
-- touching 800 sources; this is a few milliseconds. Same signature and result as 0004.
CREATE OR REPLACE FUNCTION advance_marks(d text[], c text[], g text[], s text[], b bigint[])
RETURNS TABLE (o_district text, o_community text, o_gateway text, o_source text, o_boot bigint,
               o_seq bigint, o_changed boolean)
LANGUAGE plpgsql AS $$
BEGIN
    RETURN QUERY
    WITH k AS (
        SELECT DISTINCT u.ud AS kd, u.uc AS kc, u.ug AS kg, u.us AS ks, u.ub AS kb FROM unnest(d, c, g, s, b) AS u(ud, uc, ug, us, ub)
    ), cur AS (
        SELECT k.kd, k.kc, k.kg, k.ks, k.kb, coalesce(m.seq, 0) AS mark, m.reported_last AS rep
        FROM k LEFT JOIN marks m ON m.district = k.kd AND m.community = k.kc AND m.gateway = k.kg
                                AND m.source = k.ks AND m.boot = k.kb
    ), r AS (
        SELECT cur.kd, cur.kc, cur.kg, cur.ks, cur.kb, cur.mark, sr.lo, sr.hi,
               max(sr.hi) OVER (PARTITION BY cur.kd, cur.kc, cur.kg, cur.ks, cur.kb ORDER BY sr.lo
                                ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING) AS prev_hi
        FROM cur JOIN seq_runs sr ON sr.district = cur.kd AND sr.community = cur.kc AND sr.gateway = cur.kg
                                 AND sr.source = cur.ks AND sr.boot = cur.kb
    ), brk AS (
        -- A run breaks the chain if it starts past everything before it (the mark and earlier runs) + 1.
        SELECT r.*, r.lo > greatest(r.mark, coalesce(r.prev_hi, 0)) + 1 AS is_break FROM r
    ), first_break AS (
        SELECT brk.kd, brk.kc, brk.kg, brk.ks, brk.kb, min(brk.lo) FILTER (WHERE brk.is_break) AS break_lo
        FROM brk GROUP BY 1, 2, 3, 4, 5
    ), newm AS (
        SELECT cur.kd, cur.kc, cur.kg, cur.ks, cur.kb, cur.mark,
               greatest(cur.mark, coalesce(max(brk.hi) FILTER (WHERE fb.break_lo IS NULL OR brk.lo < fb.break_lo),
                                           0)) AS seq,
               bool_or(fb.break_lo IS NOT NULL) AS pending, cur.rep
        FROM cur LEFT JOIN first_break fb USING (kd, kc, kg, ks, kb)
                 LEFT JOIN brk USING (kd, kc, kg, ks, kb)
        GROUP BY cur.kd, cur.kc, cur.kg, cur.ks, cur.kb, cur.mark, cur.rep
    ), up AS (
        INSERT INTO marks AS m (district, community, gateway, source, boot, seq, gap_since, updated_at)
        SELECT newm.kd, newm.kc, newm.kg, newm.ks, newm.kb, newm.seq,
               CASE WHEN coalesce(newm.pending, false) OR coalesce(newm.rep, 0) > newm.seq THEN now() END, now()
        FROM newm ORDER BY newm.kd, newm.kc, newm.kg, newm.ks, newm.kb
        ON CONFLICT (district, community, gateway, source, boot) DO UPDATE
            SET seq = greatest(m.seq, excluded.seq), updated_at = now(),
                gap_since = CASE WHEN excluded.gap_since IS NOT NULL THEN coalesce(m.gap_since, now()) END,
                replays = CASE WHEN excluded.gap_since IS NOT NULL THEN m.replays ELSE 0 END
        RETURNING m.district, m.community, m.gateway, m.source, m.boot, m.seq
    ), del AS (
        -- Runs at or below the new mark are folded in; newm.seq never exceeds the stored mark.
        DELETE FROM seq_runs sr USING newm
        WHERE sr.district = newm.kd AND sr.community = newm.kc AND sr.gateway = newm.kg AND sr.source = newm.ks
          AND sr.boot = newm.kb AND sr.hi <= newm.seq
    )
    SELECT up.district, up.community, up.gateway, up.source, up.boot, up.seq, up.seq <> newm.mark
    FROM up JOIN newm ON up.district = newm.kd AND up.community = newm.kc AND up.gateway = newm.kg
                     AND up.source = newm.ks AND up.boot = newm.kb;

END
$$;
