"""The installer's console: a small web app on the gateway (FastAPI + Jinja2 + vendored htmx)."""
