"""Keep camera credentials out of logs, status and error text."""

from __future__ import annotations

import re
from collections.abc import Iterable
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

_USERINFO = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)[^/@\s]*@")
_SECRET_QUERY_KEYS = frozenset(
    {"user", "username", "usr", "password", "passwd", "pass", "pwd", "token", "auth", "key", "apikey", "secret"}
)
_SECRET_QUERY = re.compile(r"(?i)([?&](?:" + "|".join(sorted(_SECRET_QUERY_KEYS)) + r")=)[^&\s#]*")
MASK = "***"


def redact_url(url: str) -> str:
    """The URL with its user-info and secret-looking query values replaced by ***."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return redact_text(url)
    netloc = parts.netloc
    if "@" in netloc:
        netloc = MASK + "@" + netloc.rsplit("@", 1)[1]
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        query = urlencode([(k, MASK if k.lower() in _SECRET_QUERY_KEYS else v) for k, v in pairs], safe="*")
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def redact_text(text: str, secrets: Iterable[str] = ()) -> str:
    """Any text (an exception message, a log line) with URL credentials and known secrets masked."""
    out = _USERINFO.sub(lambda m: m.group("scheme") + MASK + "@", text)
    out = _SECRET_QUERY.sub(lambda m: m.group(1) + MASK, out)
    # Longest first, so a password that contains the user name is masked whole.
    for secret in sorted({s for s in secrets if s}, key=len, reverse=True):
        out = out.replace(secret, MASK)
    return out
