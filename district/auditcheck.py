"""`edgegw district audit-check`: verify the gateways' audit heads, as stored over time, for tamper evidence.

The gateway publishes its audit chain head in every status, signed with its Ed25519 identity key
(`edge.privacy.identity.sign_audit_head`: seq, hash, signing time, the gateway id); the platform
keeps each status in `gateway_status` and each gateway's public keys in `gateway_keys`
(`edgegw district gateway register`). For one gateway:
- a head that is unsigned, or whose signature does not verify under the gateway's registered key, is
  not the gateway's (any broker client can publish a status); one signed by *another* registered
  gateway is a head replayed onto this gateway's topic. Such heads are reported and left out of
  the checks below, so a forger cannot make an honest gateway look rewritten;
- a head whose seq is lower than an earlier one means records were cut off (or an old copy
  restored) — unless it was signed before that earlier one, then it is an old head republished;
- two heads with the same seq but different hashes mean the chain was rewritten from there;
- given the gateway's audit database itself (`--gateway-db`), every stored head must be a record
  of that chain with the same hash, i.e. today's chain must extend every head stored before; one
  that is not shows a consistent rewrite the gateway's own verification cannot see.
A gateway without a registered key is reported (its heads cannot be authenticated), and its heads
still go through the history checks.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg

from district.gateways import GatewayKeys, load_keys
from edge.audit import AuditLog
from edge.privacy.identity import verify_audit_head

Conn = psycopg.Connection[tuple[object, ...]]


@dataclass(frozen=True, slots=True)
class Finding:
    """One inconsistency, with the gateway and the time the platform saw the head."""

    gateway: str
    seen_at: str
    problem: str


@dataclass(frozen=True, slots=True)
class StoredHead:
    """One head as the platform stored it: whose topic, when, seq, hash and the signed form (if any)."""

    gateway: str
    seen_at: str
    seq: int
    digest: str
    signed: dict[str, Any] | None


@dataclass(frozen=True, slots=True)
class Report:
    """Per gateway: heads checked, heads whose signature verified, findings."""

    heads: dict[str, int]
    verified: dict[str, int]
    findings: list[Finding]

    @property
    def ok(self) -> bool:
        """No finding at all."""
        return not self.findings


def stored_heads(conn: Conn, gateway: str | None = None) -> list[StoredHead]:
    """Every stored head (of one gateway `D/C/G`, or all), per gateway in arrival order."""
    sql = ("SELECT district || '/' || community || '/' || gateway, received_at::text, audit_seq, audit_hash, "
           "body -> 'audit_head', body -> 'components' -> 'capture' -> 'audit_head' "
           "FROM gateway_status WHERE audit_seq IS NOT NULL AND audit_hash IS NOT NULL")
    params: tuple[str, ...] = ()
    if gateway:
        sql += " AND district || '/' || community || '/' || gateway = %s"
        params = (gateway,)
    rows = conn.execute((sql + " ORDER BY 1, received_at, id").encode(), params).fetchall()
    conn.rollback()
    out = []
    for g, t, s, h, top, nested in rows:
        head = top if isinstance(top, dict) else nested if isinstance(nested, dict) else None
        out.append(StoredHead(str(g), str(t), int(str(s)), str(h), head))
    return out


def _authenticate(head: StoredHead, keys: Mapping[str, GatewayKeys]) -> str | None:
    """None if the head is the gateway's own, else what is wrong with it."""
    own = keys.get(head.gateway)
    if own is None:
        return None  # reported once per gateway; nothing to check the signature against
    signed = head.signed
    if signed is None or "sig" not in signed:
        return f"head {head.seq} is unsigned: not the gateway's (any broker client can publish a status)"
    short = head.gateway.rsplit("/", 1)[-1]
    if signed.get("seq") != head.seq or signed.get("hash") != head.digest:
        return f"head {head.seq} was stored with a seq or hash other than the ones signed"
    if verify_audit_head(own.identity, short, signed):
        return None
    for other in keys.values():
        if other.name != own.name and verify_audit_head(other.identity, other.name.gateway, signed):
            return (f"head {head.seq} is signed by gateway {other.name}, not this one: "
                    "another gateway's head replayed onto this gateway's topic")
    return f"head {head.seq} has a bad signature (not made with this gateway's registered key)"


def check_history(conn: Conn, gateway: str | None = None) -> tuple[int, list[Finding]]:
    """(heads checked, findings) over every stored head, per gateway in arrival order."""
    report = check_report(conn, gateway)
    return sum(report.heads.values()), report.findings


def check_report(conn: Conn, gateway: str | None = None) -> Report:
    """The full per-gateway report: signatures, then seq regressions and rewrites among authentic heads."""
    heads = stored_heads(conn, gateway)
    keys = load_keys(conn)
    findings: list[Finding] = []
    count: dict[str, int] = {}
    verified: dict[str, int] = {}
    best: dict[str, tuple[int, str, float]] = {}
    by_seq: dict[tuple[str, int], str] = {}
    for gw in sorted({h.gateway for h in heads} - set(keys)):
        findings.append(Finding(gw, "-", "no identity key registered (`edgegw district gateway register`): "
                                         "its heads cannot be authenticated"))
    for h in heads:
        count[h.gateway] = count.get(h.gateway, 0) + 1
        problem = _authenticate(h, keys)
        if problem is not None:
            findings.append(Finding(h.gateway, h.seen_at, problem))
            continue
        if h.gateway in keys:
            verified[h.gateway] = verified.get(h.gateway, 0) + 1
        signed_at = _signed_at(h)
        known = by_seq.setdefault((h.gateway, h.seq), h.digest)
        if known != h.digest:
            findings.append(Finding(h.gateway, h.seen_at, f"record {h.seq} now has hash {h.digest[:12]}…, earlier "
                                                          f"{known[:12]}…: the chain was rewritten"))
        top = best.get(h.gateway)
        if top is not None and h.seq < top[0]:
            if signed_at < top[2]:
                findings.append(Finding(h.gateway, h.seen_at, f"an old head (record {h.seq}, signed before record "
                                                              f"{top[0]}'s) was published again"))
            else:
                findings.append(Finding(h.gateway, h.seen_at, f"head went back from record {top[0]} to {h.seq}: "
                                                              "records were removed or an older copy was restored"))
        if top is None or h.seq > top[0]:
            best[h.gateway] = (h.seq, h.digest, signed_at)
    return Report(count, verified, findings)


def _signed_at(head: StoredHead) -> float:
    ts = head.signed.get("ts") if head.signed is not None else None
    return float(ts) if isinstance(ts, int | float) and not isinstance(ts, bool) else float("inf")


def check_against_chain(conn: Conn, gateway: str, audit_db: Path) -> tuple[int, list[Finding]]:
    """Every authentic head stored for `gateway` must be a record of the chain in `audit_db`, same hash."""
    heads = stored_heads(conn, gateway)
    keys = load_keys(conn, [gateway])
    log = AuditLog(audit_db, create=False)
    try:
        chain = {r.seq: r.hash for r in log.records()}
        base = log.base()
        own = log.verify(use_anchor_file=False)
    finally:
        log.close()
    findings = []
    if not own.ok:
        findings.append(Finding(gateway, "-", f"the gateway's chain does not verify: {own.message}"))
    for h in heads:
        if h.seq == 0 or _authenticate(h, keys) is not None:
            continue  # forged heads are check_report's findings; they say nothing of this chain
        if h.seq < base.seq or (h.seq == base.seq and base.hash == h.digest):
            continue  # pruned by retention (`audit_prune`): the chain verifies from its base on
        have = chain.get(h.seq)
        if have is None:
            findings.append(Finding(h.gateway, h.seen_at, f"record {h.seq}, published as the head then, is not in "
                                                          "the chain: the chain does not extend that head"))
        elif have != h.digest:
            findings.append(Finding(h.gateway, h.seen_at, f"record {h.seq} differs from the head published then: "
                                                          "rewritten"))
    return len(heads), findings
