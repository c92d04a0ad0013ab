"""The police query service and its front doors (CLI, local HTTP API, MQTT request/response).

Import the modules themselves: this package re-exports nothing, so importing one light module
never loads the heavy ones beside it.
"""
