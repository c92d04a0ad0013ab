"""The district platform: lossless ingest into PostgreSQL, district-wide police search, city-scale brokers.

It shares the event schema (`edge.events`), the pseudonym derivation (`edge.privacy.pseudonym`) and
the ground floor of `edge` with the gateway, and nothing of the capture side.
"""
