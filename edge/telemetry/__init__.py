"""Telemetry: Prometheus exposition, liveness and readiness for each daemon (loopback only)."""
