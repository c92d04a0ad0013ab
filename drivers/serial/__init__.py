"""Serial sensors: pure decoders (card readers, MAC sniffers), their registry and the port transport.

Import the modules themselves: this package re-exports nothing, so importing one light module
never loads the heavy ones beside it.
"""
