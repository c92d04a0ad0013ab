"""The district platform: the receiving end of every gateway's events (shares only the event schema)."""
