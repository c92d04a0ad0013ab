"""Chinese licence plates: detection (clp_det), rectification, PP-OCRv4 recognition, grammar, vote.

Import the modules themselves: this package re-exports nothing, so importing one light module
never loads the heavy ones beside it.
"""
