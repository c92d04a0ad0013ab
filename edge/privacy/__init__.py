"""Pseudonymisation and the privacy boundary (Observation → Event).

Import the modules themselves: this package re-exports nothing, so importing one light module
never loads the heavy ones beside it.
"""
