"""`edgegw district audit-check`: compare the gateways' audit heads, as stored over time, for tamper evidence.

The gateway publishes its audit chain head (seq, hash) in every status; the platform keeps each one
in `gateway_status`. A chain only grows, so for one gateway:
- a head whose seq is lower than an earlier one means records were cut off (or an old copy restored);
- two heads with the same seq but different hashes mean the chain was rewritten from there;
- given the gateway's audit database itself (`--gateway-db`), every stored head must be a record
  of that chain with the same hash; one that is not shows a consistent rewrite the gateway's own
  verification cannot see.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import psycopg

from edge.audit import AuditLog

Conn = psycopg.Connection[tuple[object, ...]]


@dataclass(frozen=True, slots=True)
class Finding:
    """One inconsistency, with the gateway and the time the platform saw the head."""

    gateway: str
    seen_at: str
    problem: str


def _heads(conn: Conn, gateway: str | None) -> list[tuple[str, str, int, str]]:
    sql = ("SELECT district || '/' || community || '/' || gateway, received_at::text, audit_seq, audit_hash "
           "FROM gateway_status WHERE audit_seq IS NOT NULL AND audit_hash IS NOT NULL")
    params: tuple[str, ...] = ()
    if gateway:
        sql += " AND district || '/' || community || '/' || gateway = %s"
        params = (gateway,)
    rows = conn.execute((sql + " ORDER BY 1, received_at, id").encode(), params).fetchall()
    conn.rollback()
    return [(str(g), str(t), int(str(s)), str(h)) for g, t, s, h in rows]


def check_history(conn: Conn, gateway: str | None = None) -> tuple[int, list[Finding]]:
    """(heads checked, findings) over every stored head, per gateway in arrival order."""
    heads = _heads(conn, gateway)
    findings: list[Finding] = []
    best: dict[str, tuple[int, str]] = {}
    by_seq: dict[tuple[str, int], str] = {}
    for gw, seen, seq, digest in heads:
        known = by_seq.setdefault((gw, seq), digest)
        if known != digest:
            findings.append(Finding(gw, seen, f"record {seq} now has hash {digest[:12]}…, earlier {known[:12]}…: "
                                              "the chain was rewritten"))
        top = best.get(gw)
        if top is not None and seq < top[0]:
            findings.append(Finding(gw, seen, f"head went back from record {top[0]} to {seq}: records were "
                                              "removed or an older copy was restored"))
        if top is None or seq > top[0]:
            best[gw] = (seq, digest)
    return len(heads), findings


def check_against_chain(conn: Conn, gateway: str, audit_db: Path) -> tuple[int, list[Finding]]:
    """Every head stored for `gateway` must be a record of the chain in `audit_db`, with the same hash."""
    heads = _heads(conn, gateway)
    log = AuditLog(audit_db, create=False)
    try:
        chain = {r.seq: r.hash for r in log.records()}
        own = log.verify(use_anchor_file=False)
    finally:
        log.close()
    findings = []
    if not own.ok:
        findings.append(Finding(gateway, "-", f"the gateway's chain does not verify: {own.message}"))
    for gw, seen, seq, digest in heads:
        if seq == 0:
            continue
        have = chain.get(seq)
        if have is None:
            findings.append(Finding(gw, seen, f"record {seq}, published as the head then, is not in the chain"))
        elif have != digest:
            findings.append(Finding(gw, seen, f"record {seq} differs from the head published then: rewritten"))
    return len(heads), findings
