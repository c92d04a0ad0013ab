"""Camera drivers (file, RTSP, USB/V4L2, fake), their configs, registry and supervisor.

Import the modules themselves: this package re-exports nothing, so importing one light module
never loads the heavy ones beside it.
"""
