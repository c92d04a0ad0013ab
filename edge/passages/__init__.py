"""Passage fusion and the local encrypted passage store (with retention and crypto-shredding).

Import the modules themselves: this package re-exports nothing, so importing one light module
never loads the heavy ones beside it.
"""
