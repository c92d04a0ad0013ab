"""The uplink wing: drains the outbox to the district broker (session, in-flight window, status).

Nothing here imports the capture side (pipeline, vision, plates, models, drivers): a broken OpenCV
or camera driver install never stops the backlog from draining. Import `edge.uplink.uplink.Uplink`.
"""
