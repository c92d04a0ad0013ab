"""A sliding-window rate limit per (token principal, officer) kept in PostgreSQL, shared by every API
process and the CLI."""

from __future__ import annotations

import psycopg

Conn = psycopg.Connection[tuple[object, ...]]


def acquire(conn: Conn, principal: str, officer: str, max_grants: int, window_s: float) -> float | None:
    """Take one grant; None if granted, else the seconds until one is free. Commits."""
    with conn.transaction():
        # Serialise grants of one principal and officer, so two processes cannot both take the last one.
        conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"{principal}\x1f{officer}",))
        conn.execute("DELETE FROM search_grants WHERE ts < now() - make_interval(secs => %s)", (window_s,))
        rows = conn.execute("SELECT extract(epoch FROM (ts + make_interval(secs => %s) - now())) FROM search_grants "
                            "WHERE principal = %s AND officer = %s ORDER BY ts",
                            (window_s, principal, officer)).fetchall()
        if len(rows) >= max_grants:
            return max(float(str(rows[len(rows) - max_grants][0])), 0.001)
        conn.execute("INSERT INTO search_grants (principal, officer, ts) VALUES (%s, %s, now())", (principal, officer))
    return None
