"""The GA/T 1400 (视图库, /VIID) bridge: the district platform as a lower-level system of an upper platform.

`ids` (device codes, object ids, local times), `protocol` (the JSON objects and their parsing),
`client` (register, keepalive, time, posts, over httpx with digest auth), `guard` (what may never
leave), `outbox` (the notification queue, the watch-hit cursor and subscriptions in PostgreSQL),
`server` (the /VIID/Subscribes endpoint the upper platform calls), `bridge` (the loop that ties them).
"""
