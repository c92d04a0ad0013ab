"""The police query service and its front doors (CLI, local HTTP API, MQTT request/response)."""

from edge.query.model import (
    Channel,
    Hit,
    MemberView,
    Principal,
    QueryKind,
    QueryRefusedError,
    QueryRequest,
    QueryResult,
    RefusalReason,
    Role,
    View,
)
from edge.query.service import QueryService

__all__ = ["Channel", "Hit", "MemberView", "Principal", "QueryKind", "QueryRefusedError", "QueryRequest",
           "QueryResult", "QueryService", "RefusalReason", "Role", "View"]
