"""The composition root: the root config, the wiring that builds shared objects from it, and one
module per daemon or command that needs more than one wing (capture, uplink, query, residents,
commissioning, the demo). Only this package and edge.cli import the root config.
"""
