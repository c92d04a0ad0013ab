"""Pseudonymisation and the privacy boundary (Observation → Event)."""

from edge.privacy.boundary import PrivacyBoundary
from edge.privacy.normalise import normalise
from edge.privacy.pseudonym import EpochPolicy, Pseudonymiser, epoch_label, epochs_between

__all__ = ["EpochPolicy", "PrivacyBoundary", "Pseudonymiser", "epoch_label", "epochs_between", "normalise"]
